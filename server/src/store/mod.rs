//! Storage: one interface, two backends. The rest of the server never sees SQL or a pool.
//!
//! - **SQLite** (`sqlite://file.db`, `sqlite::memory:`, or a bare file path; the default): one
//!   instance, nothing to install. Its writes go through one connection.
//! - **PostgreSQL** (`postgres://…`, `postgresql://…`): any number of instances sharing one
//!   database. Rotations swap the session's version (or lock its row); revocations are written as events that every
//!   instance hears (`LISTEN`/`NOTIFY`) and re-reads (crate::fleet); throttle counters and the
//!   DPoP `jti`s live in the database so that N instances do not multiply limits.
//!
//! Each backend only loads and saves: the rotation rule is `rotation::decide`, a pure function,
//! and both backends ask it. The SQL of each dialect lives in its own module.

mod postgres;
mod sqlite;

use crate::rotation::{FamilyState, Policy, TokenState};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Failures of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `--database-url` names neither SQLite nor PostgreSQL.
    #[error(
        "unsupported database URL {0:?}: use sqlite://FILE, sqlite::memory:, a file path, or \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    UnsupportedUrl(String),
    /// The database refused or failed a statement, or the connection broke.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Creating the SQLite file or its directory failed.
    #[error("database file: {0}")]
    File(#[from] std::io::Error),
    /// A statement run on behalf of several requests at once failed (its message).
    #[error("database: {0}")]
    Batch(String),
    /// A stored value the server cannot have written (a corrupted or foreign row).
    #[error("unexpected value in the database: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// `url` without the password of its user-info part (`scheme://user:…@host`), for messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.rsplit_once('@')
    {
        let user = userinfo.split(':').next().unwrap_or("");
        return format!("{scheme}://{user}:…@{host}");
    }
    url.to_owned()
}

/// Which backend a `--database-url` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A `sqlite:` URL (a bare path is turned into one).
    Sqlite(String),
    Postgres(String),
}

impl DatabaseUrl {
    /// `sqlite:…`, `postgres://…`, `postgresql://…`, or a file path (no `scheme:` in front).
    /// Any other scheme is refused rather than taken for a file name.
    pub fn parse(url: &str) -> StoreResult<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_owned()));
        }
        if url.starts_with("sqlite:") {
            return Ok(DatabaseUrl::Sqlite(url.to_owned()));
        }
        // `scheme:` per RFC 3986: a letter, then letters, digits, `+`, `-`, `.`.
        let scheme = url.split_once(':').map(|(s, _)| s).filter(|s| {
            s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        });
        match scheme {
            Some(_) => Err(StoreError::UnsupportedUrl(redact(url))),
            None => Ok(DatabaseUrl::Sqlite(format!("sqlite://{url}"))),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            DatabaseUrl::Sqlite(u) | DatabaseUrl::Postgres(u) => u,
        }
    }

    /// Whether nothing outlives the process (`sqlite::memory:`).
    pub fn in_memory(&self) -> bool {
        matches!(self, DatabaseUrl::Sqlite(u) if u.contains(":memory:") || u.contains("mode=memory"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
}

/// Roles are stored as one comma-separated column.
pub(crate) fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    pub user_agent: String,
}

#[derive(Debug, Clone)]
pub struct KeyRow {
    pub kid: String,
    pub private_key: Vec<u8>,
    pub public_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A new session or a rotation: what the caller needs to answer the client.
#[derive(Debug, Clone)]
pub struct Granted {
    pub session_id: String,
    pub user: User,
    /// When the new refresh token stops being accepted (idle expiry capped by absolute).
    pub refresh_expires_at: i64,
}

/// Outcome of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    Rotated(Granted),
    /// Reuse (see `rotation::decide`): theft or a replay. The session has been revoked.
    Reused {
        session_id: String,
        user_id: String,
    },
    /// Unknown token, revoked or expired session.
    Invalid,
    /// The token has had its quota of children within its window.
    Throttled {
        retry_after: i64,
    },
}

/// A refresh token and its session as stored, read before any write.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub session_id: String,
    pub user_id: String,
    pub token: TokenState,
    pub family: FamilyState,
    /// The DPoP key the session is bound to (crate::dpop), if any.
    pub dpop_jkt: Option<String>,
    /// The session row's version (PostgreSQL: bumped by every rotation, the compare-and-swap
    /// of an optimistic rotation; always 0 on SQLite).
    pub version: i64,
}

/// What a revocation event revokes (PostgreSQL; see crate::fleet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An access token's `jti` (logout); `at` is the token's `exp`.
    Token,
    /// A session (logout, revoked by its user, reuse detected); `at` is when.
    Session,
    /// The key ring changed (rotation, revocation); `at` is when.
    Keys,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Token => "token",
            EventKind::Session => "session",
            EventKind::Keys => "keys",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "token" => Some(EventKind::Token),
            "session" => Some(EventKind::Session),
            "keys" => Some(EventKind::Keys),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationEvent {
    /// Increasing with insertion (not strictly with commit: see crate::fleet).
    pub id: i64,
    pub kind: EventKind,
    pub subject: String,
    pub at: i64,
}

impl RevocationEvent {
    /// The `NOTIFY` payload: `id kind at subject` (subjects hold no spaces).
    pub fn payload(&self) -> String {
        format!(
            "{} {} {} {}",
            self.id,
            self.kind.as_str(),
            self.at,
            self.subject
        )
    }

    /// Parses a payload; `None` for anything else.
    pub fn from_payload(payload: &str) -> Option<Self> {
        let mut parts = payload.splitn(4, ' ');
        let id = parts.next()?.parse().ok()?;
        let kind = EventKind::parse(parts.next()?)?;
        let at = parts.next()?.parse().ok()?;
        let subject = parts.next()?;
        if subject.is_empty() || subject.len() > 256 || subject.contains(' ') {
            return None;
        }
        Some(RevocationEvent {
            id,
            kind,
            subject: subject.to_owned(),
            at,
        })
    }
}

/// What an instance hears on the revocation channel.
#[derive(Debug)]
pub enum Heard {
    Event(RevocationEvent),
    /// A payload that does not parse: the catch-up read will deliver the event.
    Garbled,
    /// The connection was lost and re-established: notifications may have been missed.
    Reconnected,
}

/// The revocation channel of a PostgreSQL store.
pub struct Listener(postgres::PgRevocationListener);

impl Listener {
    /// Waits for the next notification.
    pub async fn recv(&mut self) -> StoreResult<Heard> {
        self.0.recv().await
    }
}

/// The storage interface: SQLite or PostgreSQL behind the same methods.
#[derive(Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Store::Sqlite($s) => $e,
            Store::Postgres($s) => $e,
        }
    };
}

impl Store {
    /// Opens the database `url` names (creating a SQLite file if needed) and migrates it.
    /// Anything but SQLite or PostgreSQL is refused.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        match DatabaseUrl::parse(url)? {
            DatabaseUrl::Sqlite(u) => Ok(Store::Sqlite(SqliteStore::connect(&u).await?)),
            DatabaseUrl::Postgres(u) => Ok(Store::Postgres(PgStore::connect(&u).await?)),
        }
    }

    /// Whether several instances may share this database (PostgreSQL): throttle counters and
    /// DPoP `jti`s then live in it, and revocations travel as events.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        each!(self, s => s.close().await)
    }

    pub fn is_closed(&self) -> bool {
        each!(self, s => s.is_closed())
    }

    /// Frequent clean-up (every minute) of rows written per request on a shared store: DPoP
    /// proofs and throttle windows. Nothing to do on SQLite.
    pub async fn purge_short_lived(&self, now: i64) -> StoreResult<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.purge_short_lived(now).await,
        }
    }

    // ---- users ----------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        id: &str,
        email: &str,
        password_hash: &str,
        name: &str,
        roles: &[String],
        now: i64,
    ) -> StoreResult<bool> {
        each!(self, s => s.create_user(id, email, password_hash, name, roles, now).await)
    }

    /// Deletes the user with this email and, by cascade, their sessions and tokens.
    pub async fn delete_user_by_email(&self, email: &str) -> StoreResult<bool> {
        each!(self, s => s.delete_user_by_email(email).await)
    }

    /// The user and their password hash.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        each!(self, s => s.user_by_email(email).await)
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        each!(self, s => s.user_by_id(id).await)
    }

    /// `phone: Some(None)` clears the phone number.
    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        each!(self, s => s.update_profile(id, name, phone).await)
    }

    // ---- throttling -----------------------------------------------------------------------

    /// Counts one login attempt for (`email`, `client`) before the password is checked, in one
    /// statement so that concurrent attempts cannot read the same count. A window older than
    /// `window_secs` starts over. Returns the attempts in the window, this one included, and
    /// when the window started.
    pub async fn count_login_attempt(
        &self,
        email: &str,
        client: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        each!(self, s => s.count_login_attempt(email, client, now, window_secs).await)
    }

    /// A successful login forgets the attempts of that (account, client).
    pub async fn clear_login_attempts(&self, email: &str, client: &str) -> StoreResult<()> {
        each!(self, s => s.clear_login_attempts(email, client).await)
    }

    /// How many (account, client) counters are stored (operators and tests).
    pub async fn login_attempt_rows(&self) -> StoreResult<i64> {
        each!(self, s => s.login_attempt_rows().await)
    }

    /// Deletes login-attempt counters whose window started before `before`.
    pub async fn purge_login_attempts(&self, before: i64) -> StoreResult<u64> {
        each!(self, s => s.purge_login_attempts(before).await)
    }

    /// Shared stores only: counts one event for `key` in the fixed window starting at
    /// `window_start`, in one statement; returns the events in that window, this one included.
    /// `None` from SQLite, whose one instance counts in memory (crate::state::Throttle).
    pub async fn count_hit(&self, key: &str, window_start: i64) -> StoreResult<Option<i64>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.count_hit(key, window_start).await.map(Some),
        }
    }

    /// Forgets the shared counters whose key starts with `prefix` (the test hooks' reset).
    pub async fn reset_hits(&self, prefix: &str) -> StoreResult<()> {
        match self {
            Store::Sqlite(_) => Ok(()),
            Store::Postgres(s) => s.reset_hits(prefix).await,
        }
    }

    // ---- sessions and refresh tokens ------------------------------------------------------

    /// Starts a session whose first refresh token (generation 0) has hash `token_hash`.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_session(
        &self,
        session_id: &str,
        user: &User,
        token_hash: &str,
        user_agent: &str,
        now: i64,
        idle_secs: i64,
        absolute_secs: i64,
    ) -> StoreResult<Granted> {
        each!(self, s => s.create_session(session_id, user, token_hash, user_agent, now, idle_secs, absolute_secs).await)
    }

    /// The token with hash `hash` and its session, without a lock: refresh answers unknown
    /// tokens and dead sessions without taking the writer (or a row lock).
    pub async fn presented_token(&self, hash: &str) -> StoreResult<Option<PresentedToken>> {
        each!(self, s => s.presented_token(hash).await)
    }

    /// Presents the refresh token with hash `presented`; a new child gets hash `child`.
    /// Loads the token and its session, lets `rotation::decide` rule, and saves the decision,
    /// so that no other rotation of the same session can interleave (SQLite: one write
    /// transaction on the one writer; PostgreSQL: a compare-and-swap on the session's version,
    /// retried, then the session row's lock). `read` is what `presented_token` just returned:
    /// PostgreSQL's first attempt starts from it instead of reading again.
    pub async fn rotate(
        &self,
        presented: &str,
        child: &str,
        now: i64,
        idle_secs: i64,
        policy: Policy,
        read: Option<&PresentedToken>,
    ) -> StoreResult<Rotation> {
        match self {
            Store::Sqlite(s) => s.rotate(presented, child, now, idle_secs, policy).await,
            Store::Postgres(s) => {
                s.rotate(presented, child, now, idle_secs, policy, read)
                    .await
            }
        }
    }

    /// How many refresh tokens a session has stored (operators and tests).
    pub async fn session_token_rows(&self, session_id: &str) -> StoreResult<i64> {
        each!(self, s => s.session_token_rows(session_id).await)
    }

    /// Revokes a live session; `user_id` restricts it to that user's sessions.
    /// Returns whether a live session was revoked.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool> {
        each!(self, s => s.revoke_session(session_id, user_id, reason, now).await)
    }

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<SessionRow>> {
        each!(self, s => s.live_sessions(user_id, now).await)
    }

    /// Sessions revoked since `since`, whose access tokens may still be in circulation.
    pub async fn recently_revoked_sessions(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        each!(self, s => s.recently_revoked_sessions(since).await)
    }

    /// Deletes sessions (and their tokens), deny-list entries and other rows that ended
    /// before `before`.
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        each!(self, s => s.purge(before).await)
    }

    // ---- access-token deny-list -----------------------------------------------------------

    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        each!(self, s => s.deny_token(jti, expires_at).await)
    }

    pub async fn denied_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        each!(self, s => s.denied_tokens(now).await)
    }

    // ---- revocation events (PostgreSQL) ---------------------------------------------------

    /// The newest event id (0 if none; always 0 on SQLite).
    pub async fn revocation_cursor(&self) -> StoreResult<i64> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(s) => s.revocation_cursor().await,
        }
    }

    /// Events after `cursor`, and every event of the last `recent_secs` seconds whatever its
    /// id (an event whose transaction committed after a later id was read). Empty on SQLite.
    pub async fn revocations_since(
        &self,
        cursor: i64,
        recent_secs: i64,
    ) -> StoreResult<Vec<RevocationEvent>> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(s) => s.revocations_since(cursor, recent_secs).await,
        }
    }

    /// The revocation channel; `None` on SQLite (one instance: nothing to hear).
    pub async fn listen(&self) -> StoreResult<Option<Listener>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(s) => s.listen().await.map(|l| Some(Listener(l))),
        }
    }

    // ---- signing keys ---------------------------------------------------------------------

    pub async fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        each!(self, s => s.keys().await)
    }

    /// Adds a key that becomes the signing key; the previous signing key is retired (it keeps
    /// verifying for the grace period).
    pub async fn add_signing_key(&self, key: &KeyRow, now: i64) -> StoreResult<()> {
        each!(self, s => s.add_signing_key(key, now).await)
    }

    /// Replaces a key's stored private key (sealing a key stored before encryption at rest).
    pub async fn set_private_key(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        each!(self, s => s.set_private_key(kid, private_key).await)
    }

    pub async fn revoke_key(&self, kid: &str, now: i64) -> StoreResult<bool> {
        each!(self, s => s.revoke_key(kid, now).await)
    }

    // ---- DPoP ------------------------------------------------------------------------------

    /// The session of a refresh token and the thumbprint it is bound to, if the token is known.
    pub async fn session_binding(
        &self,
        hash: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        each!(self, s => s.session_binding(hash).await)
    }

    /// Whether any session, live or ended, was ever bound to the key with thumbprint `jkt`.
    pub async fn key_bound(&self, jkt: &str) -> StoreResult<bool> {
        each!(self, s => s.key_bound(jkt).await)
    }

    /// Binds a new session to a key; done before its first token leaves the server.
    pub async fn bind_session(&self, session_id: &str, jkt: &str) -> StoreResult<()> {
        each!(self, s => s.bind_session(session_id, jkt).await)
    }

    /// The secret `name`, created from `fresh` by whichever instance asks first.
    pub async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        each!(self, s => s.shared_secret(name, fresh).await)
    }

    /// Shared stores only: records a proof's (`jkt`, `jti`) until `until`; `false` if another
    /// instance (or this one) already accepted it. Always `true` on SQLite, whose one instance
    /// has the in-memory replay cache.
    pub async fn claim_proof(
        &self,
        jkt: &str,
        jti: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<bool> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(s) => s.claim_proof(jkt, jti, until, now).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_select_a_backend_and_anything_else_is_refused() {
        assert_eq!(
            DatabaseUrl::parse("postgres://u:p@127.0.0.1:5432/tw").unwrap(),
            DatabaseUrl::Postgres("postgres://u:p@127.0.0.1:5432/tw".into())
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h/db").unwrap(),
            DatabaseUrl::Postgres(_)
        ));
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::Sqlite("sqlite::memory:".into())
        );
        assert_eq!(
            DatabaseUrl::parse("data/tw.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite://data/tw.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("/var/lib/tw.db").unwrap(),
            DatabaseUrl::Sqlite("sqlite:///var/lib/tw.db".into())
        );
        for bad in [
            "mysql://u@h/db",
            "postgre://h/db",
            "pg://h/db",
            "https://example.com/db",
            "",
            "  ",
        ] {
            assert!(
                matches!(DatabaseUrl::parse(bad), Err(StoreError::UnsupportedUrl(_))),
                "{bad:?}"
            );
        }
        match DatabaseUrl::parse("mysql://tw:hunter2@db/tw") {
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("mysql://tw:…@db/tw"), "{text}");
                assert!(!text.contains("hunter2"), "{text}");
            }
            Ok(u) => panic!("accepted {u:?}"),
        }
        assert!(DatabaseUrl::parse("sqlite::memory:").unwrap().in_memory());
        assert!(!DatabaseUrl::parse("postgres://h/db").unwrap().in_memory());
    }

    #[test]
    fn event_payloads_round_trip_and_garbage_is_refused() {
        let e = RevocationEvent {
            id: 42,
            kind: EventKind::Session,
            subject: "abc-DEF_1".into(),
            at: 1_700_000_000,
        };
        assert_eq!(RevocationEvent::from_payload(&e.payload()), Some(e));
        for bad in [
            "",
            "x session 1 s",
            "1 nope 1 s",
            "1 token x s",
            "1 token 1 ",
            "1 token 1 a b",
            "1 token 1",
        ] {
            assert_eq!(RevocationEvent::from_payload(bad), None, "{bad:?}");
        }
    }
}
