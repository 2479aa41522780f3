-- tokenwarden reference schema. Portable SQL: integer unix seconds for time, text ids,
-- no engine-specific types, so a Postgres backend runs the same statements.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    name          TEXT NOT NULL,
    phone         TEXT,
    roles         TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL
);

-- A session is one refresh-token family.
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    user_agent          TEXT NOT NULL DEFAULT '',
    -- highest generation of a refresh token presented successfully (-1: none yet)
    max_used_gen        BIGINT NOT NULL DEFAULT -1,
    revoked_at          BIGINT,
    revoke_reason       TEXT
);
CREATE INDEX sessions_user ON sessions(user_id);

-- Only the SHA-256 of a refresh token is stored.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    generation BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    private_key BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    revoked_at  BIGINT
);

-- Access tokens logged out before their exp.
CREATE TABLE denied_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Failed logins per account (keyed by normalised email, known or not).
CREATE TABLE login_failures (
    email        TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL
);
