-- A login must bring a key no session was ever bound to: looked up by thumbprint.
-- (Numbered as its SQLite twin, migrations/0005_dpop_key_index.sql.)
CREATE INDEX IF NOT EXISTS sessions_dpop_jkt ON sessions (dpop_jkt);
