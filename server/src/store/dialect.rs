//! The statements SQLite and PostgreSQL cannot share, named in one place. Everything else in
//! `store` is written once.
//!
//! - [`ROTATE_PG`]: a rotation as one PostgreSQL statement (a data-modifying CTE: one round
//!   trip instead of six). SQLite has no data-modifying CTEs; it runs the same writes as
//!   separate statements in one transaction on its one writer (`sessions::rotate_in`), which
//!   costs nothing there.
//! - [`NOTIFY_PG`]: tells every instance listening on [`CHANNEL`] about a revocation.
//! - [`LOCK_SESSION_PG`]: the session row's lock, taken after repeated lost races. SQLite's one
//!   writer connection is already exclusive.
//! - [`LOCK_KEYS_PG`]: serialises instances adding a signing key at the same start.
//! - [`HOLD_USER_PG`]: an account's row against a password change, while a sign-in opens a
//!   session of the password it proved, or while the account's passkeys or second factor
//!   change.
//! - [`LOCK_USER_SESSIONS_PG`], [`LOCK_PROVIDER_SESSIONS_PG`]: the live sessions a revocation
//!   of several is about to end, locked in the order of their ids (two such revocations side
//!   by side would otherwise lock in orders of their own, and one fail as a deadlock); on
//!   SQLite, the same statements without the lock ([`USER_SESSIONS`], [`PROVIDER_SESSIONS`]);
//!   [`LOCK_PASSKEY_SESSIONS_PG`] and [`PASSKEY_SESSIONS`] too.
//! - [`RECENT_EVENTS_PG`]: the fleet's catch-up read, by PostgreSQL's own clock.

/// The two backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }
}

/// The channel every PostgreSQL instance listens on.
pub const CHANNEL: &str = "tw_revocations";

/// `$1`: channel, `$2`: payload.
pub const NOTIFY_PG: &str = "SELECT pg_notify($1, $2)";

/// `$1`: a refresh token's hash. Locks its session's row until the transaction ends.
pub const LOCK_SESSION_PG: &str = "SELECT id FROM sessions
     WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $1)
     FOR UPDATE";

/// `$1`: a user's id. Held until the transaction ends against a write of the account's row (a
/// password change or reset) and another holder (a sign-in opening a session of the password
/// it proved; a change of the account's passkeys or second factor, `passkeys::change_of`,
/// which therefore happen one at a time), but not against the key-share lock a new session's
/// foreign key takes (with `FOR UPDATE`, two sign-ins of one account and one DPoP key
/// deadlocked, and a passkey being added held up every sign-in of the account).
pub const HOLD_USER_PG: &str = "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE";

/// `$1`: a user's id, `$2`: a session kept (NULL: none). Their live sessions, by id.
macro_rules! user_sessions {
    ($lock:literal) => {
        concat!(
            "SELECT id FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND (CAST($2 AS TEXT) IS NULL OR id <> $2)
             ORDER BY id",
            $lock
        )
    };
}
pub const USER_SESSIONS: &str = user_sessions!("");
pub const LOCK_USER_SESSIONS_PG: &str = user_sessions!(" FOR UPDATE");

/// `$1`: a user's id, `$2`: a passkey's id. The live sessions that passkey signed in, by id.
macro_rules! passkey_sessions {
    ($lock:literal) => {
        concat!(
            "SELECT id FROM sessions
             WHERE user_id = $1 AND passkey_id = $2 AND revoked_at IS NULL
             ORDER BY id",
            $lock
        )
    };
}
pub const PASSKEY_SESSIONS: &str = passkey_sessions!("");
pub const LOCK_PASSKEY_SESSIONS_PG: &str = passkey_sessions!(" FOR UPDATE");

/// `$1`: an issuer, `$2` a subject and `$3` a provider's session, each NULL for any. The live
/// sessions a logout token names, by id.
macro_rules! provider_sessions {
    ($lock:literal) => {
        concat!(
            "SELECT id FROM sessions
             WHERE revoked_at IS NULL AND id IN (
               SELECT session_id FROM federated_sessions
               WHERE issuer = $1 AND ($2 IS NULL OR subject = $2) AND ($3 IS NULL OR idp_sid = $3))
             ORDER BY id",
            $lock
        )
    };
}
pub const PROVIDER_SESSIONS: &str = provider_sessions!("");
pub const LOCK_PROVIDER_SESSIONS_PG: &str = provider_sessions!(" FOR UPDATE");

/// The database's own clock, whole unix seconds (as the server's clock counts them).
pub const DATABASE_NOW_PG: &str =
    "SELECT CAST(FLOOR(EXTRACT(EPOCH FROM statement_timestamp())) AS BIGINT)";

/// Held until the transaction ends.
pub const LOCK_KEYS_PG: &str = "SELECT pg_advisory_xact_lock(7301)";

/// One address's codes, held until the transaction ends: inserts side by side (READ COMMITTED)
/// each revoked only the codes committed before them, and left more live than the limit.
pub const LOCK_CODES_PG: &str = "SELECT pg_advisory_xact_lock(7302, hashtext($1))";

/// Events after `$1`, and every event recorded in the last `$2` seconds whatever its id (an
/// event whose transaction committed after a later id was read): what an instance that reads
/// every 500 ms (crate::fleet) needs. (`statement_timestamp()`, not `clock_timestamp()`: stable
/// within the statement, so the index on `recorded` serves it.)
pub const RECENT_EVENTS_PG: &str = "SELECT id, kind, subject, at FROM revocation_events
     WHERE id > $1 OR recorded > statement_timestamp() - make_interval(secs => $2)
     ORDER BY id";

/// As [`RECENT_EVENTS_PG`] for a feed subscriber that comes back with `Last-Event-ID: $1`:
/// the window is the `$2` seconds before event `$1` was recorded (or before now, if earlier),
/// not before now alone: back a minute after its last event, it still gets one that committed
/// out of order just then. Read once per connection.
pub const RESUMED_EVENTS_PG: &str = "SELECT id, kind, subject, at FROM revocation_events
     WHERE id > $1
        OR recorded > LEAST(statement_timestamp(),
                            COALESCE((SELECT recorded FROM revocation_events WHERE id = $1),
                                     statement_timestamp()))
                      - make_interval(secs => $2)
     ORDER BY id";

/// A rotation (`rotation::Rotate`) of the session `$4` read at version `$5`, in one statement
/// that writes nothing if the version moved since. s: the swap; r: a reissue revokes the
/// unused tokens of generation `$11` (not the new child: same snapshot); t: the presented token
/// `$7` claims (again, `$8` true) or counts one more child; c: the child `$10`. Returns the
/// session's user.
///
/// `$1` head, `$2` now, `$3` idle expiry, `$6` the child's generation, `$9` whether to revoke
/// generation `$11`.
pub const ROTATE_PG: &str = "WITH s AS (UPDATE sessions SET max_used_gen = $1,
                                last_used_at = GREATEST(last_used_at, $2),
                                idle_expires_at = GREATEST(idle_expires_at, $3),
                                version = version + 1
            WHERE id = $4 AND version = $5 AND revoked_at IS NULL
            RETURNING user_id),
      r AS (UPDATE refresh_tokens SET revoked_at = $2
            WHERE $9 AND session_id = $4 AND generation = $11 AND revoked_at IS NULL
                  AND EXISTS (SELECT 1 FROM s)),
      t AS (UPDATE refresh_tokens
            SET claimed_at = CASE WHEN $8 THEN $2 ELSE claimed_at END,
                children = CASE WHEN $8 THEN 1 ELSE children + 1 END
            WHERE hash = $7 AND EXISTS (SELECT 1 FROM s)),
      c AS (INSERT INTO refresh_tokens (hash, session_id, generation, created_at)
            SELECT $10, $4, $6, $2 FROM s)
 SELECT u.id, u.email, u.name, u.phone, u.roles, u.email_verified_at, u.claims
 FROM users u JOIN s ON u.id = s.user_id";
