-- The passkey that signed a session in (a passkey sign-in, or a passkey as the second factor):
-- removing that passkey ends the sessions it opened. NULL for every other session, and for
-- every session opened before this migration.
ALTER TABLE sessions ADD COLUMN passkey_id TEXT;
