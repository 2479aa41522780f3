-- Rotation that catches parallel use (docs/PROTOCOL.md, "Rotation rules"): a token claims its
-- generation when first presented; the claimer may be presented again within a short window;
-- after it, only while none of its children was used, which revokes those unused children.
ALTER TABLE refresh_tokens RENAME COLUMN used_at TO claimed_at;
-- Children issued since claimed_at (capped per window).
ALTER TABLE refresh_tokens ADD COLUMN children BIGINT NOT NULL DEFAULT 0;
-- Set on the unused children of a token that was reissued; presenting one is reuse.
ALTER TABLE refresh_tokens ADD COLUMN revoked_at BIGINT;
CREATE INDEX refresh_tokens_generation ON refresh_tokens(session_id, generation);

-- Login attempts per (account, client address bucket), counted before the password is
-- verified; a success deletes the row. Replaces the per-account count, which let anyone lock
-- anyone out. Rows older than the window are purged.
DROP TABLE login_failures;
CREATE TABLE login_attempts (
    email        TEXT NOT NULL,
    client       TEXT NOT NULL,
    attempts     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    PRIMARY KEY (email, client)
);
CREATE INDEX login_attempts_window ON login_attempts(window_start);
