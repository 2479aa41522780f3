-- A sign-up waiting for its code belongs to the browser that sent it (the hash of its
-- `__Host-tw_signup` cookie), not to the address alone: before, a second sign-up of the address
-- replaced the password the first one's code would create the account with. Each sign-up is
-- its own row. Sign-ups still waiting for their code at the upgrade are started again.
DROP TABLE pending_signups;
CREATE TABLE pending_signups (
    binding_hash  TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    name          TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX pending_signups_expiry ON pending_signups (expires_at);
