-- tokenwarden on PostgreSQL: the SQLite schema (migrations/0001..0003) as it stands, plus what
-- several instances sharing one database need: revocation events, shared throttle counters and
-- the shared DPoP jti store. Time is integer unix seconds, as on SQLite.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    name          TEXT NOT NULL,
    phone         TEXT,
    roles         TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL
);

-- A session is one refresh-token family. Its row is the lock every rotation of the family takes.
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    user_agent          TEXT NOT NULL DEFAULT '',
    -- highest claimed generation (-1: none yet)
    max_used_gen        BIGINT NOT NULL DEFAULT -1,
    revoked_at          BIGINT,
    revoke_reason       TEXT,
    dpop_jkt            TEXT,
    -- bumped by every rotation: an optimistic rotation writes only if it is unchanged
    version             BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;

-- Only the SHA-256 of a refresh token is stored.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    claimed_at BIGINT,
    children   BIGINT NOT NULL DEFAULT 0,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_generation ON refresh_tokens(session_id, generation);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BYTEA NOT NULL,
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    revoked_at  BIGINT
);

-- Access tokens logged out before their exp.
CREATE TABLE denied_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Login attempts per (account, client address bucket), counted before the password is verified.
CREATE TABLE login_attempts (
    email        TEXT NOT NULL,
    client       TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    PRIMARY KEY (email, client)
);
CREATE INDEX login_attempts_window ON login_attempts(window_start);

-- Secrets every instance sharing the database must agree on (the DPoP nonce secret).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Every revocation, in order: each instance applies the NOTIFY that carries it at once and
-- re-reads the table every half second (crate::fleet), so a missed notification heals.
-- kind: 'token' (subject: jti, at: its exp), 'session' (subject: id, at: revoked_at),
-- 'keys' (subject: kid, at: when).
CREATE TABLE revocation_events (
    id       BIGSERIAL PRIMARY KEY,
    kind     TEXT NOT NULL,
    subject  TEXT NOT NULL,
    at       BIGINT NOT NULL,
    recorded TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX revocation_events_recorded ON revocation_events(recorded);

-- Fixed-window throttle counters shared by every instance (per client address, per session).
CREATE TABLE throttle_counters (
    key          TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits         BIGINT NOT NULL
);
CREATE INDEX throttle_counters_window ON throttle_counters(window_start);

-- DPoP proofs accepted by any instance, until they are too old to pass the iat check.
-- proof: base64url(SHA-256(thumbprint, 0, jti)), so that a long jti costs no index space.
CREATE TABLE dpop_proofs (
    proof TEXT PRIMARY KEY,
    until BIGINT NOT NULL
);
CREATE INDEX dpop_proofs_until ON dpop_proofs(until);
