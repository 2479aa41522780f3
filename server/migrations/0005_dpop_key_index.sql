-- A login must bring a key no session was ever bound to: looked up by thumbprint.
CREATE INDEX IF NOT EXISTS sessions_dpop_jkt ON sessions (dpop_jkt);
