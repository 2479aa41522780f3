-- A password reset of an account whose sign-ins need its passkey waits for the passkey before
-- the new password takes effect: the reset's code proves the mailbox only, and a password set
-- by the mailbox alone, then signed in with beside a code mailed again, was the mailbox alone.
-- The new password's hash waits in the ceremony (NULL for every other kind).
ALTER TABLE webauthn_ceremonies ADD COLUMN password_hash TEXT;
