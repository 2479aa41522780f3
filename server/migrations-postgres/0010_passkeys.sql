-- (Numbered as its SQLite twin, migrations/0010_passkeys.sql.)
-- Passkeys, a second factor, and how each session signed in (docs/PROTOCOL.md, "Passkeys").

-- The WebAuthn user handle of an account (a random UUID: account ids may be anything an
-- import gave them), made at its first passkey.
CREATE TABLE passkey_users (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    handle  TEXT NOT NULL UNIQUE
);

-- A passkey: its credential id (base64url), its public key and signature counter (the
-- serialised `webauthn_rs::Passkey`).
CREATE TABLE passkeys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    passkey      TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX passkeys_user ON passkeys (user_id);

-- A WebAuthn ceremony (or a password sign-in waiting for its second factor) between its two
-- requests: single use, short-lived, by the SHA-256 of its id.
CREATE TABLE webauthn_ceremonies (
    id_hash    TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    user_id    TEXT,
    session_id TEXT,
    dpop_jkt   TEXT,
    state      TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- The account requires a second factor after its password (1) or not (0).
ALTER TABLE users ADD COLUMN second_factor BIGINT NOT NULL DEFAULT 0;

-- When the session's user last proved who they are (sign-in, step-up), and how (RFC 8176
-- `amr` values, space-separated). Sessions from before: auth_time NULL (their creation).
ALTER TABLE sessions ADD COLUMN auth_time BIGINT;
ALTER TABLE sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '';
