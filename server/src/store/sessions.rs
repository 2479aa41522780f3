//! Sessions and their refresh tokens: open one (bound to its DPoP key in the same statement),
//! load a presented token with its session, execute a rotation plan, revoke.

use sqlx::AnyConnection;

use super::dialect::{self, Dialect};
use super::revocations::record_event;
use super::{EventKind, SessionRow, Store, StoreResult, USER_BY_ID, User, UserRow};
use crate::rotation::{FamilyState, Plan, Rotate, TokenState};

/// Why a session ended (`sessions.revoke_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The user logged out.
    Logout,
    /// The user revoked it from the sessions list.
    RevokedByUser,
    /// A refresh token was reused: theft or a replay.
    TokenReused,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::RevokedByUser => "revoked_by_user",
            RevokeReason::TokenReused => "token_reused",
        }
    }
}

/// A session about to be opened.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    /// The hash of its first refresh token (generation 0).
    pub token_hash: &'a str,
    pub user_agent: &'a str,
    pub now: i64,
    pub idle_expires_at: i64,
    pub absolute_expires_at: i64,
    /// The DPoP key it is bound to, if any.
    pub dpop_jkt: Option<&'a str>,
}

/// A refresh token and its session as stored, read before any write.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub session_id: String,
    pub user_id: String,
    pub token: TokenState,
    pub family: FamilyState,
    /// The DPoP key the session is bound to, if any.
    pub dpop_jkt: Option<String>,
    /// Bumped by every write to the session: a plan made on this read applies only if it is
    /// unchanged.
    pub version: i64,
}

#[derive(sqlx::FromRow)]
struct PresentedRow {
    session_id: String,
    generation: i64,
    claimed_at: Option<i64>,
    revoked_at: Option<i64>,
    children: i64,
    user_id: String,
    session_revoked_at: Option<i64>,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    max_used_gen: i64,
    dpop_jkt: Option<String>,
    version: i64,
}

impl From<PresentedRow> for PresentedToken {
    fn from(r: PresentedRow) -> Self {
        PresentedToken {
            session_id: r.session_id,
            user_id: r.user_id,
            token: TokenState {
                generation: r.generation,
                claimed_at: r.claimed_at,
                revoked: r.revoked_at.is_some(),
                children: r.children,
            },
            family: FamilyState {
                revoked: r.session_revoked_at.is_some(),
                idle_expires_at: r.idle_expires_at,
                absolute_expires_at: r.absolute_expires_at,
                head: r.max_used_gen,
                bound: r.dpop_jkt.is_some(),
            },
            dpop_jkt: r.dpop_jkt,
            version: r.version,
        }
    }
}

const PRESENTED: &str = "SELECT t.session_id, t.generation, t.claimed_at, t.revoked_at, t.children,
            s.user_id, s.revoked_at AS session_revoked_at, s.idle_expires_at,
            s.absolute_expires_at, s.max_used_gen, s.dpop_jkt, s.version
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.hash = $1";

/// What executing a plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The child was stored; the session's user, for its access token.
    Rotated(User),
    /// The session was revoked (reuse).
    Revoked,
    /// The plan wrote nothing (`Invalid`, `Throttled`).
    Refused,
    /// The session changed since it was read: nothing was written; read and plan again.
    Conflict,
}

/// The rotation's writes as separate statements, inside the caller's transaction (SQLite; see
/// `dialect::ROTATE_PG` for PostgreSQL's one statement).
async fn rotate_in(
    conn: &mut AnyConnection,
    found: &PresentedToken,
    r: &Rotate,
    presented: &str,
    child: &str,
    now: i64,
) -> StoreResult<Applied> {
    let swapped = sqlx::query(
        "UPDATE sessions SET max_used_gen = $1, last_used_at = $2, idle_expires_at = $3,
                             version = version + 1
         WHERE id = $4 AND version = $5 AND revoked_at IS NULL",
    )
    .bind(r.head)
    .bind(now)
    .bind(r.idle_expires_at)
    .bind(&found.session_id)
    .bind(found.version)
    .execute(&mut *conn)
    .await?;
    if swapped.rows_affected() != 1 {
        return Ok(Applied::Conflict);
    }
    if let Some(generation) = r.revoke_generation {
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1
             WHERE session_id = $2 AND generation = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&found.session_id)
        .bind(generation)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "UPDATE refresh_tokens
         SET claimed_at = CASE WHEN $1 THEN $2 ELSE claimed_at END,
             children = CASE WHEN $1 THEN 1 ELSE children + 1 END
         WHERE hash = $3",
    )
    .bind(r.claim)
    .bind(now)
    .bind(presented)
    .execute(&mut *conn)
    .await?;
    insert_token(conn, child, &found.session_id, r.child_generation, now).await?;
    let user: UserRow = sqlx::query_as(USER_BY_ID)
        .bind(&found.user_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Applied::Rotated(user.into()))
}

async fn rotate_pg(
    conn: &mut AnyConnection,
    found: &PresentedToken,
    r: &Rotate,
    presented: &str,
    child: &str,
    now: i64,
) -> StoreResult<Applied> {
    let user: Option<UserRow> = sqlx::query_as(dialect::ROTATE_PG)
        .bind(r.head)
        .bind(now)
        .bind(r.idle_expires_at)
        .bind(&found.session_id)
        .bind(found.version)
        .bind(r.child_generation)
        .bind(presented)
        .bind(r.claim)
        .bind(r.revoke_generation.is_some())
        .bind(child)
        .bind(r.revoke_generation.unwrap_or(-1))
        .fetch_optional(conn)
        .await?;
    Ok(user.map_or(Applied::Conflict, |u| Applied::Rotated(u.into())))
}

async fn insert_token(
    conn: &mut AnyConnection,
    hash: &str,
    session_id: &str,
    generation: i64,
    now: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, generation, created_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash)
    .bind(session_id)
    .bind(generation)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the session read as `found`, if it is still at that version, and records the event.
async fn revoke_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    found: &PresentedToken,
    now: i64,
) -> StoreResult<Applied> {
    let res = sqlx::query(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2, version = version + 1
         WHERE id = $3 AND version = $4 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(RevokeReason::TokenReused.as_str())
    .bind(&found.session_id)
    .bind(found.version)
    .execute(&mut *conn)
    .await?;
    if res.rows_affected() != 1 {
        return Ok(Applied::Conflict);
    }
    record_event(conn, dialect, EventKind::Session, &found.session_id, now).await?;
    Ok(Applied::Revoked)
}

impl Store {
    /// Opens a session and its first refresh token in one transaction. The session is bound to
    /// its DPoP key in the same insert, and `sessions.dpop_jkt` is unique: `false` (nothing
    /// written) when the key is bound to a session already, whatever the timing.
    pub async fn create_session(&self, s: &NewSession<'_>) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, idle_expires_at,
                                   absolute_expires_at, user_agent, dpop_jkt)
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
        )
        .bind(s.id)
        .bind(s.user_id)
        .bind(s.now)
        .bind(s.idle_expires_at)
        .bind(s.absolute_expires_at)
        .bind(s.user_agent)
        .bind(s.dpop_jkt)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_token(&mut tx, s.token_hash, s.id, 0, s.now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The token with hash `hash` and its session, from the read pool: a refresh answers
    /// unknown tokens and dead sessions without taking the writer (or a lock).
    pub async fn presented_token(&self, hash: &str) -> StoreResult<Option<PresentedToken>> {
        let row: Option<PresentedRow> = sqlx::query_as(PRESENTED)
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(Into::into))
    }

    /// Executes `plan`, made on `found`, for the presented token `presented`; a new child gets
    /// hash `child`. Writes nothing and answers [`Applied::Conflict`] if the session moved
    /// since `found` was read.
    pub async fn apply(
        &self,
        found: &PresentedToken,
        plan: &Plan,
        presented: &str,
        child: &str,
        now: i64,
    ) -> StoreResult<Applied> {
        match (plan, self.dialect) {
            (Plan::Invalid | Plan::Throttled { .. }, _) => Ok(Applied::Refused),
            (Plan::Rotate(r), Dialect::Postgres) => {
                let mut conn = self.write.acquire().await?;
                rotate_pg(&mut conn, found, r, presented, child, now).await
            }
            _ => {
                let mut tx = self.write.begin().await?;
                let applied = self
                    .apply_in(&mut tx, found, plan, presented, child, now)
                    .await?;
                if applied == Applied::Conflict {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                }
                Ok(applied)
            }
        }
    }

    async fn apply_in(
        &self,
        conn: &mut AnyConnection,
        found: &PresentedToken,
        plan: &Plan,
        presented: &str,
        child: &str,
        now: i64,
    ) -> StoreResult<Applied> {
        match (plan, self.dialect) {
            (Plan::Invalid | Plan::Throttled { .. }, _) => Ok(Applied::Refused),
            (Plan::Revoke, dialect) => revoke_in(conn, dialect, found, now).await,
            (Plan::Rotate(r), Dialect::Postgres) => {
                rotate_pg(conn, found, r, presented, child, now).await
            }
            (Plan::Rotate(r), Dialect::Sqlite) => {
                rotate_in(conn, found, r, presented, child, now).await
            }
        }
    }

    /// Reads the presented token under its session's lock (PostgreSQL: the row's `FOR
    /// UPDATE`; SQLite: its one writer), plans with `plan_for` and executes the plan in the
    /// same transaction: no other rotation of the session can interleave. For a session whose
    /// optimistic rotations keep losing races. `None`: the token is unknown.
    pub async fn apply_locked(
        &self,
        presented: &str,
        child: &str,
        now: i64,
        plan_for: impl Fn(&PresentedToken) -> Plan,
    ) -> StoreResult<Option<(PresentedToken, Plan, Applied)>> {
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            let locked = sqlx::query(dialect::LOCK_SESSION_PG)
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                return Ok(None);
            }
        }
        let row: Option<PresentedRow> = sqlx::query_as(PRESENTED)
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(found) = row.map(PresentedToken::from) else {
            return Ok(None);
        };
        let plan = plan_for(&found);
        let applied = self
            .apply_in(&mut tx, &found, &plan, presented, child, now)
            .await?;
        if applied == Applied::Conflict {
            return Err(super::StoreError::Corrupt(
                "a locked session changed under its lock".into(),
            ));
        }
        tx.commit().await?;
        Ok(Some((found, plan, applied)))
    }

    /// How many refresh tokens a session has stored (operators and tests).
    pub async fn session_token_rows(&self, session_id: &str) -> StoreResult<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1")
                .bind(session_id)
                .fetch_one(&self.read)
                .await?,
        )
    }

    /// Revokes a live session and records the event; `user_id` restricts it to that user's
    /// sessions. Returns whether a live session was revoked.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        reason: RevokeReason,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let res = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2, version = version + 1
             WHERE id = $3 AND revoked_at IS NULL AND (CAST($4 AS TEXT) IS NULL OR user_id = $4)",
        )
        .bind(now)
        .bind(reason.as_str())
        .bind(session_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let revoked = res.rows_affected() == 1;
        if revoked {
            record_event(&mut tx, self.dialect, EventKind::Session, session_id, now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<SessionRow>> {
        Ok(sqlx::query_as(
            "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent
             FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
                   AND absolute_expires_at > $2
             ORDER BY last_used_at DESC",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.read)
        .await?)
    }

    /// Sessions revoked since `since`, whose access tokens may still be in circulation.
    pub async fn recently_revoked_sessions(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
                .bind(since)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The session of a refresh token and the key it is bound to, if the token is known.
    pub async fn session_binding(
        &self,
        hash: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT s.id, s.dpop_jkt FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?)
    }
}
