-- A sign-in that proved a password opens its session only while that password is the
-- account's: a change or a reset committed while the sign-in was verifying the password (or
-- waiting for its second factor) would otherwise leave a session the reset never saw. Every
-- change and reset counts one more version; a sign-in carries the version it proved (a
-- pending second factor, in its ceremony: NULL for every other kind).
ALTER TABLE users ADD COLUMN password_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE webauthn_ceremonies ADD COLUMN password_version BIGINT;
