//! Revocations: the access-token deny-list and the events that tell every instance (and, in
//! time, every subscribed service) that a token, a session or the key ring changed. Each event
//! is a row of `revocation_events`, written in the transaction of the change; on PostgreSQL a
//! `NOTIFY` carrying its id is delivered at commit (crate::fleet).

use sqlx::AnyConnection;
use sqlx::postgres::PgListener;

use super::dialect::{self, CHANNEL, Dialect};
use super::{Store, StoreError, StoreResult};

/// What a revocation event revokes.
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

row! {
    struct EventRow {
        id: i64,
        kind: String,
        subject: String,
        at: i64,
    }
}

impl TryFrom<EventRow> for RevocationEvent {
    type Error = StoreError;
    fn try_from(r: EventRow) -> StoreResult<Self> {
        Ok(RevocationEvent {
            id: r.id,
            kind: EventKind::parse(&r.kind).ok_or_else(|| {
                StoreError::Corrupt(format!("revocation event kind {:?}", r.kind))
            })?,
            subject: r.subject,
            at: r.at,
        })
    }
}

/// Records a revocation inside the caller's transaction and, on PostgreSQL, notifies every
/// instance (delivered at commit, never for a rolled-back change). The notification carries the
/// event's id alone: any role that can connect to the database can `NOTIFY` (and `LISTEN`), so
/// an instance reads what the table holds for that id and applies nothing else (crate::fleet).
pub(super) async fn record_event(
    conn: &mut AnyConnection,
    dialect: Dialect,
    kind: EventKind,
    subject: &str,
    at: i64,
) -> StoreResult<()> {
    // A session's revocation counts from its last rotation if that is later: the rotation may
    // have committed, on another instance, while this write waited (its `now` taken before),
    // and its token lives `--access-ttl-secs` from then. Every instance and the feed keep the
    // revocation that long from `at` (the row is held by the revocation's write: no rotation
    // comes after it).
    let at = match kind {
        EventKind::Session => {
            let sql = "SELECT last_used_at FROM sessions WHERE id = $1";
            let last: Option<i64> = q_scalar!(sql, subject).fetch_optional(&mut *conn).await?;
            last.map_or(at, |last| last.max(at))
        }
        _ => at,
    };
    let sql = "INSERT INTO revocation_events (kind, subject, at) VALUES ($1, $2, $3) RETURNING id";
    let id: i64 = q_scalar!(sql, kind.as_str(), subject, at)
        .fetch_one(&mut *conn)
        .await?;
    if dialect == Dialect::Postgres {
        q!(dialect::NOTIFY_PG, CHANNEL, id.to_string())
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// One event by its id.
const EVENT_BY_ID: &str = "SELECT id, kind, subject, at FROM revocation_events WHERE id = $1";

/// What an instance hears on the revocation channel.
#[derive(Debug)]
pub enum Heard {
    /// The id of an event said to be recorded: what the table holds for it is the event.
    Notified(i64),
    /// A payload that does not parse: the catch-up read will deliver the event.
    Garbled,
    /// The connection was lost and re-established: notifications may have been missed.
    Reconnected,
}

impl Heard {
    /// A notification's payload: the event's id (an instance before this one sent
    /// `id kind at subject`: the id first there too).
    fn of(payload: &str) -> Heard {
        match payload.split(' ').next().map(str::parse) {
            Some(Ok(id)) if id > 0 => Heard::Notified(id),
            _ => Heard::Garbled,
        }
    }
}

/// The revocation channel of a PostgreSQL store (`LISTEN` on a connection of its own).
pub struct Listener(PgListener);

impl Listener {
    /// Waits for the next notification.
    pub async fn recv(&mut self) -> StoreResult<Heard> {
        // `try_recv` reports a lost connection (`None`) instead of silently reconnecting, so the
        // caller knows to catch up with a read.
        match self.0.try_recv().await? {
            Some(n) => Ok(Heard::of(n.payload())),
            None => Ok(Heard::Reconnected),
        }
    }

    /// The event with this id, read on the listening connection: a notification is applied
    /// without waiting for one of the pool's connections, which a busy instance may all be
    /// using.
    pub async fn event(&mut self, id: i64) -> StoreResult<Option<RevocationEvent>> {
        let row: Option<EventRow> = sqlx::query_as(EVENT_BY_ID)
            .bind(id)
            .fetch_optional(&mut self.0)
            .await?;
        row.map(TryInto::try_into).transpose()
    }
}

impl Store {
    /// Runs `change` (a write of at most one row) and, if it wrote one, records the event, in
    /// one transaction. Returns whether it wrote.
    pub(super) async fn change_with_event(
        &self,
        change: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        kind: EventKind,
        subject: &str,
        at: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let changed = change.execute(&mut *tx).await?.rows_affected() == 1;
        if changed {
            record_event(&mut tx, self.dialect, kind, subject, at).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    /// Deny-lists a logged-out access token until its `exp`, and records the event.
    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        let sql =
            "INSERT INTO denied_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        let change = q!(sql, jti, expires_at);
        self.change_with_event(change, EventKind::Token, jti, expires_at)
            .await?;
        Ok(())
    }

    pub async fn denied_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let sql = "SELECT jti, expires_at FROM denied_tokens WHERE expires_at >= $1";
        Ok(q_as!(sql, now).fetch_all(&self.read).await?)
    }

    /// The newest event id (0 if none).
    pub async fn revocation_cursor(&self) -> StoreResult<i64> {
        let sql = "SELECT COALESCE(MAX(id), 0) FROM revocation_events";
        Ok(q_scalar!(sql).fetch_one(&self.read).await?)
    }

    /// The event with this id, while it is kept.
    pub async fn revocation_event(&self, id: i64) -> StoreResult<Option<RevocationEvent>> {
        let row: Option<EventRow> = q_as!(EVENT_BY_ID, id).fetch_optional(&self.read).await?;
        row.map(TryInto::try_into).transpose()
    }

    /// A new feed subscriber's snapshot: every revocation that may still be in force, those
    /// `at` or after `since` (a session's `at` is when it was revoked, a token's its `exp`: the
    /// caller passes now less the longest time either is kept), by the index on `at`. No
    /// `keys` event. The table keeps revocations a day past that; reading them all cost a read
    /// of the whole table per connection.
    pub async fn revocation_snapshot(&self, since: i64) -> StoreResult<Vec<RevocationEvent>> {
        let sql = "SELECT id, kind, subject, at FROM revocation_events
                   WHERE at >= $1 AND kind <> 'keys' ORDER BY id";
        let rows: Vec<EventRow> = q_as!(sql, since).fetch_all(&self.read).await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// Events after `cursor`, and on PostgreSQL every event of the last `recent_secs` seconds
    /// whatever its id (an event whose transaction committed after a later id was read;
    /// SQLite's one writer commits in id order).
    pub async fn revocations_since(
        &self,
        cursor: i64,
        recent_secs: i64,
        resumed: bool,
    ) -> StoreResult<Vec<RevocationEvent>> {
        let query = match self.dialect {
            Dialect::Postgres if resumed => {
                q_as!(dialect::RESUMED_EVENTS_PG, cursor, recent_secs as f64)
            }
            Dialect::Postgres => q_as!(dialect::RECENT_EVENTS_PG, cursor, recent_secs as f64),
            Dialect::Sqlite => q_as!(
                "SELECT id, kind, subject, at FROM revocation_events WHERE id > $1 ORDER BY id",
                cursor
            ),
        };
        let rows: Vec<EventRow> = query.fetch_all(&self.read).await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    /// The revocation channel; `None` on SQLite (one instance: nothing to hear).
    pub async fn listen(&self) -> StoreResult<Option<Listener>> {
        if self.dialect != Dialect::Postgres {
            return Ok(None);
        }
        let mut listener = PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        Ok(Some(Listener(listener)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session's revocation whose time was taken before a rotation that committed first (on
    /// another instance, by a clock ahead) counts from that rotation: the event's `at`, and the
    /// revoked sessions read at start, so that every instance and the feed keep it as long as
    /// the rotation's token lives.
    #[tokio::test]
    async fn a_session_s_revocation_counts_from_its_last_rotation_if_later() {
        let s = super::super::tests::memory().await;
        super::super::tests::ada(&s).await;
        let session = super::super::tests::ada_session("s1", 1_030);
        s.create_session(&session).await.unwrap();
        let reason = crate::store::RevokeReason::RevokedByUser;
        assert!(s.revoke_session("s1", None, reason, 1_000).await.unwrap());
        let id = s.revocation_cursor().await.unwrap();
        let event = s.revocation_event(id).await.unwrap().unwrap();
        assert_eq!((event.subject.as_str(), event.at), ("s1", 1_030));
        assert_eq!(
            s.recently_revoked_sessions(1_010).await.unwrap(),
            [("s1".to_owned(), 1_030)]
        );
    }

    /// A deleted user's sessions stay refused after a restart: the rows went with the account,
    /// the events stay (an instance started within a token's lifetime of the deletion read the
    /// revoked sessions from the rows, and took the user's tokens again).
    #[tokio::test]
    async fn a_deleted_user_s_sessions_are_still_read_as_revoked() {
        let s = super::super::tests::memory().await;
        super::super::tests::ada(&s).await;
        for id in ["s1", "s2"] {
            let session = super::super::tests::ada_session(id, 1_000);
            s.create_session(&session).await.unwrap();
        }
        assert!(
            s.delete_user_by_email("ada@example.com", 1_050)
                .await
                .unwrap()
        );
        let mut revoked = s.recently_revoked_sessions(1_000).await.unwrap();
        revoked.sort();
        assert_eq!(
            revoked,
            [("s1".to_owned(), 1_050), ("s2".to_owned(), 1_050)]
        );
        assert!(
            !s.delete_user_by_email("ada@example.com", 1_060)
                .await
                .unwrap()
        );
    }

    #[test]
    fn a_notification_is_an_id_and_nothing_else_is_taken_from_it() {
        let id = |p: &str| match Heard::of(p) {
            Heard::Notified(id) => Some(id),
            _ => None,
        };
        assert_eq!(id("42"), Some(42));
        // An older instance's payload: its id, and not a word of the rest.
        assert_eq!(id("42 session 9000000000000000000 victim"), Some(42));
        for bad in ["", "x", "0", "-1", " 42", "42x", "99999999999999999999"] {
            assert_eq!(id(bad), None, "{bad:?}");
        }
    }
}
