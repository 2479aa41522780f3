-- One store for SQLite and PostgreSQL (server/src/store): the statements are shared, so the
-- schemas converge. (Numbered as its SQLite twin, migrations/0006_one_store.sql.)

-- One key per login, kept by the database: a DPoP key is bound to one session, ever, and the
-- insert that opens a session is the one that binds its key. Sessions that share a key (the
-- check-then-bind race this replaces) are revoked, and keep a thumbprint no proof can match.
UPDATE sessions
SET revoked_at = COALESCE(revoked_at, CAST(EXTRACT(EPOCH FROM now()) AS BIGINT)),
    revoke_reason = COALESCE(revoke_reason, 'key_shared'),
    dpop_jkt = 'shared:' || id,
    version = version + 1
WHERE dpop_jkt IN (SELECT dpop_jkt FROM sessions WHERE dpop_jkt IS NOT NULL
                   GROUP BY dpop_jkt HAVING COUNT(*) > 1);
DROP INDEX IF EXISTS sessions_dpop_jkt;
CREATE UNIQUE INDEX sessions_dpop_jkt ON sessions (dpop_jkt);

-- Events are purged by when they happened, as on SQLite.
CREATE INDEX revocation_events_at ON revocation_events (at);

-- Counters of events per key in a window: password attempts per (account, client), codes sent
-- and tried per email, the fleet's per-minute throttles. Replaces login_attempts, otp_counters
-- and throttle_counters (their counts start over).
CREATE TABLE counters (
    key          TEXT PRIMARY KEY,
    n            BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX counters_expires ON counters (expires_at);
DROP TABLE login_attempts;
DROP TABLE otp_counters;
DROP TABLE throttle_counters;
