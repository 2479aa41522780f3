-- A password change or reset drops the account's ceremonies under way (the sign-ins waiting
-- for their second factor, its resets waiting for their passkey) by their user_id, inside the
-- change's write transaction: without an index, that was a scan of every ceremony stored,
-- the usernameless sign-ins' too (one per start, any client's).
CREATE INDEX webauthn_ceremonies_user ON webauthn_ceremonies (user_id);
