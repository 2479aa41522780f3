-- The SQLite migration 0004_otp.sql as it is (portable SQL), numbered as its twin.
-- Sign-in with an emailed one-time code (docs/PROTOCOL.md, "Sign-in with an emailed code").
-- Codes are kept per normalised email, whether an account exists or not: an unknown email gets
-- a code that is never mailed and never logs in, so that /auth/otp/verify answers it exactly
-- like a known one. Only HMAC-SHA256(server secret, id, email, code) is stored.
CREATE TABLE otp_codes (
    id         TEXT PRIMARY KEY,
    email      TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    -- comparisons made against this code (counted before comparing; at most 3)
    attempts   BIGINT NOT NULL DEFAULT 0,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX otp_codes_email ON otp_codes(email, expires_at);

-- Codes sent per email within a window (counted whether the account exists or not), and wrong
-- codes per email within a window.
CREATE TABLE otp_counters (
    kind         TEXT NOT NULL,
    email        TEXT NOT NULL,
    n            BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    PRIMARY KEY (kind, email)
);
CREATE INDEX otp_counters_window ON otp_counters(window_start);
