-- A password set on an account whose address nobody had proved, by someone other than the
-- operator: a legacy backend's word or an import line without email_verified. Whoever
-- registered the address in the old app chose it. The first code that comes back from the
-- address (the mailbox's owner) ends it and every session opened before (account
-- pre-hijacking). Accounts already unverified with a password are counted as such: nothing
-- says who chose it.
ALTER TABLE users ADD COLUMN password_unproved INTEGER NOT NULL DEFAULT 0;
UPDATE users SET password_unproved = 1 WHERE email_verified_at IS NULL AND password_hash <> '';
