-- Bring your users (docs/PROTOCOL.md, "Accounts"): verified emails, claims the app owns, codes
-- for more than signing in, sign-ups waiting for their code.

-- When the address was shown to be the user's (a code mailed there came back); NULL: not yet.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
-- A JSON object copied into every access token (`users import`, `users set-claims`).
ALTER TABLE users ADD COLUMN claims TEXT NOT NULL DEFAULT '{}';
-- An imported user may have no password (''): they sign in another way, or through the legacy
-- backend of a lazy migration, which then stores one.

-- What a code is for: 'sign_in', 'sign_up', 'verify_email', 'reset_password'. A code of one
-- purpose never does another's work.
ALTER TABLE otp_codes ADD COLUMN purpose TEXT NOT NULL DEFAULT 'sign_in';
DROP INDEX otp_codes_email;
CREATE INDEX otp_codes_email ON otp_codes (email, purpose, expires_at);

-- A sign-up waiting for the code mailed to its address: the account is created only when the
-- code comes back. Only the password's hash is kept.
CREATE TABLE pending_signups (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
