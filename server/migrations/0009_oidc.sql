-- Sign-in with OpenID Connect providers (docs/PROTOCOL.md, "Federated sign-in").

-- A sign-in under way: created by /auth/oidc/{name}/start, taken (deleted) once by its
-- callback. Only hashes of the `state` and of the browser's binding cookie are kept.
CREATE TABLE oidc_flows (
    state_hash    TEXT PRIMARY KEY,
    provider      TEXT NOT NULL,
    binding_hash  TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    return_to     TEXT NOT NULL,
    redirect_uri  TEXT NOT NULL,
    dpop_jkt      TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);

-- Who a provider says a user is: (issuer, sub), never the email alone.
CREATE TABLE user_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- The sessions a provider's sign-in opened, with the provider's session id (`sid`): what a
-- back-channel logout names.
CREATE TABLE federated_sessions (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    idp_sid    TEXT
);
CREATE INDEX federated_sessions_sid ON federated_sessions (issuer, idp_sid);
CREATE INDEX federated_sessions_subject ON federated_sessions (issuer, subject);

-- Back-channel logout tokens seen (their `jti`, once each) until they could no longer pass.
CREATE TABLE oidc_logout_tokens (
    issuer     TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, jti)
);
