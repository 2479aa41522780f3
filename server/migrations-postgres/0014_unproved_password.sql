-- A password set on an account whose address nobody had proved, by someone other than the
-- operator: a legacy backend's word or an import line without email_verified. Whoever
-- registered the address in the old app chose it. The first code that comes back from the
-- address (the mailbox's owner) ends it and every session opened before (account
-- pre-hijacking). Accounts already unverified with a password are counted as such: nothing
-- says who chose it. Not those with a passkey or a second factor: the owner's first sign-in by
-- the address would end them with the password, and the mailbox alone would pass a second
-- factor its owner set up (a passkey a stranger registered before the upgrade stays, as before).
ALTER TABLE users ADD COLUMN password_unproved BIGINT NOT NULL DEFAULT 0;
UPDATE users SET password_unproved = 1
 WHERE email_verified_at IS NULL AND password_hash <> '' AND second_factor = 0
   AND NOT EXISTS (SELECT 1 FROM passkeys WHERE passkeys.user_id = users.id);
