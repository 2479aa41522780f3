-- One store for SQLite and PostgreSQL (server/src/store): the statements are shared, so the
-- schemas converge.

-- Every write to a session bumps its version: a rotation planned on what it read writes only
-- if the version is unchanged (as on PostgreSQL).
ALTER TABLE sessions ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

-- One key per login, kept by the database: a DPoP key is bound to one session, ever, and the
-- insert that opens a session is the one that binds its key. Sessions that share a key (the
-- check-then-bind race this replaces) are revoked, and keep a thumbprint no proof can match.
UPDATE sessions
SET revoked_at = COALESCE(revoked_at, CAST(strftime('%s', 'now') AS INTEGER)),
    revoke_reason = COALESCE(revoke_reason, 'key_shared'),
    dpop_jkt = 'shared:' || id
WHERE dpop_jkt IN (SELECT dpop_jkt FROM sessions WHERE dpop_jkt IS NOT NULL
                   GROUP BY dpop_jkt HAVING COUNT(*) > 1);
DROP INDEX IF EXISTS sessions_dpop_jkt;
CREATE UNIQUE INDEX sessions_dpop_jkt ON sessions (dpop_jkt);

-- Every revocation, in order (PostgreSQL also notifies the other instances of each).
-- kind: 'token' (subject: jti, at: its exp), 'session' (subject: id, at: revoked_at),
-- 'keys' (subject: kid, at: when).
CREATE TABLE revocation_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX revocation_events_at ON revocation_events (at);

-- Counters of events per key in a window: password attempts per (account, client), codes sent
-- and tried per email. Replaces login_attempts and otp_counters (their counts start over).
CREATE TABLE counters (
    key          TEXT PRIMARY KEY,
    n            BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX counters_expires ON counters (expires_at);
DROP TABLE login_attempts;
DROP TABLE otp_counters;
