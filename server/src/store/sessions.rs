//! Sessions and their refresh tokens: open one (bound to its DPoP key in the same statement),
//! load a presented token with its session, execute a rotation plan, revoke.

use sqlx::AnyConnection;

use super::dialect::{self, Dialect};
use super::oidc::{Federated, record_federated_session};
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
    /// The user changed their password (every other session ends).
    PasswordChanged,
    /// The password was reset by an emailed code (every session ends).
    PasswordReset,
    /// The OpenID provider the session signed in with said the user logged out there
    /// (back-channel logout).
    ProviderLogout,
    /// The user was deleted (their sessions go with them; the event stays).
    UserDeleted,
    /// The passkey that signed it in was removed from the account.
    PasskeyRemoved,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::RevokedByUser => "revoked_by_user",
            RevokeReason::TokenReused => "token_reused",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::PasswordReset => "password_reset",
            RevokeReason::ProviderLogout => "provider_logout",
            RevokeReason::UserDeleted => "user_deleted",
            RevokeReason::PasskeyRemoved => "passkey_removed",
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
    /// How the user proved who they are (RFC 8176 `amr` values, space-separated).
    pub amr: &'a str,
    /// When (unix seconds): `now`, or a provider's `auth_time` (0: it did not say).
    pub auth_time: i64,
    /// A sign-in that proved a password: its version, which must still be the account's
    /// (a change or reset committed meanwhile ended every session; this one would outlive it).
    pub password_version: Option<i64>,
    /// A provider's sign-in: recorded with the session, for its logout tokens.
    pub federated: Option<Federated<'a>>,
    /// The passkey that signed it in (by itself or as the second factor), which must still be
    /// the account's: removing it ends the session.
    pub passkey: Option<&'a str>,
}

/// What [`Store::create_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Opened,
    /// The DPoP key is bound to another session.
    KeyInUse,
    /// The password the sign-in proved is no longer the account's.
    PasswordChanged,
    /// The passkey that signed in was removed meanwhile.
    PasskeyRemoved,
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
    /// When and how the user last proved who they are in this session (sign-in, step-up).
    pub auth: Authentication,
}

/// When and how a session's user last proved who they are.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authentication {
    /// Unix seconds.
    pub time: i64,
    /// RFC 8176 values (`pwd`, `otp`, `hwk`, `mfa`, ...).
    pub amr: Vec<String>,
}

impl Authentication {
    pub fn from_row(auth_time: Option<i64>, created_at: i64, amr: &str) -> Self {
        Authentication {
            time: auth_time.unwrap_or(created_at),
            amr: amr.split_whitespace().map(str::to_owned).collect(),
        }
    }
}

row! {
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
        auth_time: Option<i64>,
        created_at: i64,
        amr: String,
    }
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
            auth: Authentication::from_row(r.auth_time, r.created_at, &r.amr),
            dpop_jkt: r.dpop_jkt,
            version: r.version,
        }
    }
}

const PRESENTED: &str = "SELECT t.session_id, t.generation, t.claimed_at, t.revoked_at, t.children,
            s.user_id, s.revoked_at AS session_revoked_at, s.idle_expires_at,
            s.absolute_expires_at, s.max_used_gen, s.dpop_jkt, s.version, s.auth_time,
            s.created_at, s.amr
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.hash = $1";

/// One presentation of a refresh token: what was read, the hashes of the presented token and
/// of the child a rotation would issue, and when.
#[derive(Debug, Clone, Copy)]
pub struct Presentation<'a> {
    pub found: &'a PresentedToken,
    pub presented: &'a str,
    pub child: &'a str,
    pub now: i64,
}

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

/// Runs a compare-and-swap on a session's version: whether it wrote (`false`: the session
/// moved since it was read, or ended).
async fn swapped(
    conn: &mut AnyConnection,
    swap: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> StoreResult<bool> {
    Ok(swap.execute(conn).await?.rows_affected() == 1)
}

/// The rotation's writes as separate statements, inside the caller's transaction (SQLite; see
/// `dialect::ROTATE_PG` for PostgreSQL's one statement).
async fn rotate_in(
    conn: &mut AnyConnection,
    p: Presentation<'_>,
    r: &Rotate,
) -> StoreResult<Applied> {
    let Presentation {
        found,
        presented,
        child,
        now,
    } = p;
    let swap = q!(
        "UPDATE sessions SET max_used_gen = $1,
             last_used_at = CASE WHEN last_used_at > $2 THEN last_used_at ELSE $2 END,
             idle_expires_at = CASE WHEN idle_expires_at > $3 THEN idle_expires_at ELSE $3 END,
             version = version + 1
         WHERE id = $4 AND version = $5 AND revoked_at IS NULL",
        r.head,
        now,
        r.idle_expires_at,
        &found.session_id,
        found.version
    );
    if !swapped(conn, swap).await? {
        return Ok(Applied::Conflict);
    }
    if let Some(generation) = r.revoke_generation {
        q!(
            "UPDATE refresh_tokens SET revoked_at = $1
             WHERE session_id = $2 AND generation = $3 AND revoked_at IS NULL",
            now,
            &found.session_id,
            generation
        )
        .execute(&mut *conn)
        .await?;
    }
    q!(
        "UPDATE refresh_tokens
         SET claimed_at = CASE WHEN $1 THEN $2 ELSE claimed_at END,
             children = CASE WHEN $1 THEN 1 ELSE children + 1 END
         WHERE hash = $3",
        r.claim,
        now,
        presented
    )
    .execute(&mut *conn)
    .await?;
    insert_token(conn, child, &found.session_id, r.child_generation, now).await?;
    let user: UserRow = q_as!(USER_BY_ID, &found.user_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Applied::Rotated(user.into()))
}

async fn rotate_pg(
    conn: &mut AnyConnection,
    p: Presentation<'_>,
    r: &Rotate,
) -> StoreResult<Applied> {
    let user: Option<UserRow> = q_as!(
        dialect::ROTATE_PG,
        r.head,
        p.now,
        r.idle_expires_at,
        &p.found.session_id,
        p.found.version,
        r.child_generation,
        p.presented,
        r.claim,
        r.revoke_generation.is_some(),
        p.child,
        r.revoke_generation.unwrap_or(-1)
    )
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
    q!(
        "INSERT INTO refresh_tokens (hash, session_id, generation, created_at)
         VALUES ($1, $2, $3, $4)",
        hash,
        session_id,
        generation,
        now
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes the session read as `found`, if it is still at that version, and records the event.
async fn revoke_in(
    conn: &mut AnyConnection,
    dialect: Dialect,
    p: Presentation<'_>,
) -> StoreResult<Applied> {
    let Presentation { found, now, .. } = p;
    let swap = q!(
        "UPDATE sessions SET revoked_at = $1, revoke_reason = $2, version = version + 1
         WHERE id = $3 AND version = $4 AND revoked_at IS NULL",
        now,
        RevokeReason::TokenReused.as_str(),
        &found.session_id,
        found.version
    );
    if !swapped(conn, swap).await? {
        return Ok(Applied::Conflict);
    }
    record_event(conn, dialect, EventKind::Session, &found.session_id, now).await?;
    Ok(Applied::Revoked)
}

/// `$1` now, `$2` why, `$3` a session, `$4` its user (NULL: whichever): the session revoked if
/// it is live.
const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = $1, revoke_reason = $2,
                                  version = version + 1
    WHERE id = $3 AND revoked_at IS NULL AND (CAST($4 AS TEXT) IS NULL OR user_id = $4)";

/// Revokes each of `ids` still live, in their order (the order they were locked in), each with
/// its event; the ones it revoked.
pub(super) async fn revoke_each(
    conn: &mut AnyConnection,
    dialect: Dialect,
    ids: Vec<String>,
    reason: RevokeReason,
    now: i64,
) -> StoreResult<Vec<String>> {
    let mut revoked = Vec::with_capacity(ids.len());
    for id in ids {
        let change = q!(REVOKE_SESSION, now, reason.as_str(), &id, None::<&str>);
        if change.execute(&mut *conn).await?.rows_affected() == 1 {
            record_event(conn, dialect, EventKind::Session, &id, now).await?;
            revoked.push(id);
        }
    }
    Ok(revoked)
}

impl Store {
    /// Whether a session (live or not) was ever bound to the DPoP key `jkt`: no other can be
    /// (the unique index [`Self::create_session`] meets).
    pub async fn dpop_key_taken(&self, jkt: &str) -> StoreResult<bool> {
        let sql = "SELECT count(*) FROM sessions WHERE dpop_jkt = $1";
        let n: i64 = q_scalar!(sql, jkt).fetch_one(&self.write).await?;
        Ok(n > 0)
    }

    /// Opens a session and its first refresh token in one transaction. The session is bound to
    /// its DPoP key in the same insert, and `sessions.dpop_jkt` is unique: `false` (nothing
    /// written) when the key is bound to a session already, whatever the timing.
    pub async fn create_session(&self, s: &NewSession<'_>) -> StoreResult<Created> {
        let mut tx = self.write.begin().await?;
        // On PostgreSQL under the account's row lock, which a password change or reset, and a
        // passkey's removal, take first: it waits for this session to exist (and ends it), or
        // this sees its new version, or the passkey gone. SQLite's one writer runs the two one
        // after the other anyway.
        if self.dialect == Dialect::Postgres
            && (s.password_version.is_some() || s.passkey.is_some())
        {
            q!(dialect::HOLD_USER_PG, s.user_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(passkey) = s.passkey {
            let sql = "SELECT count(*) FROM passkeys WHERE id = $1 AND user_id = $2";
            let there: i64 = q_scalar!(sql, passkey, s.user_id)
                .fetch_one(&mut *tx)
                .await?;
            if there != 1 {
                tx.rollback().await?;
                return Ok(Created::PasskeyRemoved);
            }
        }
        if let Some(version) = s.password_version {
            let sql = "SELECT count(*) FROM users WHERE id = $1 AND password_version = $2";
            let same: i64 = q_scalar!(sql, s.user_id, version)
                .fetch_one(&mut *tx)
                .await?;
            if same != 1 {
                tx.rollback().await?;
                return Ok(Created::PasswordChanged);
            }
        }
        let inserted = q!(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, idle_expires_at,
                                   absolute_expires_at, user_agent, dpop_jkt, auth_time, amr,
                                   passkey_id)
             VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $10, $8, $9)
             ON CONFLICT DO NOTHING",
            s.id,
            s.user_id,
            s.now,
            s.idle_expires_at,
            s.absolute_expires_at,
            s.user_agent,
            s.dpop_jkt,
            s.amr,
            s.passkey,
            s.auth_time
        )
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Created::KeyInUse);
        }
        insert_token(&mut tx, s.token_hash, s.id, 0, s.now).await?;
        if let Some(f) = &s.federated {
            record_federated_session(&mut tx, s.id, f).await?;
        }
        tx.commit().await?;
        Ok(Created::Opened)
    }

    /// The token with hash `hash` and its session, from the read pool: a refresh answers
    /// unknown tokens and dead sessions without taking the writer (or a lock).
    pub async fn presented_token(&self, hash: &str) -> StoreResult<Option<PresentedToken>> {
        self.find::<PresentedRow, _>(PRESENTED, hash).await
    }

    /// Executes `plan`, made on what `p` read. Writes nothing and answers
    /// [`Applied::Conflict`] if the session moved since.
    pub async fn apply(&self, p: Presentation<'_>, plan: &Plan) -> StoreResult<Applied> {
        if let (Plan::Rotate(r), Dialect::Postgres) = (plan, self.dialect) {
            // One statement: no transaction to hold open.
            let mut conn = self.write.acquire().await?;
            return rotate_pg(&mut conn, p, r).await;
        }
        let mut tx = self.write.begin().await?;
        let applied = self.apply_in(&mut tx, p, plan).await?;
        if applied == Applied::Conflict {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(applied)
    }

    async fn apply_in(
        &self,
        conn: &mut AnyConnection,
        p: Presentation<'_>,
        plan: &Plan,
    ) -> StoreResult<Applied> {
        match (plan, self.dialect) {
            (Plan::Invalid | Plan::Throttled { .. }, _) => Ok(Applied::Refused),
            (Plan::Revoke, dialect) => revoke_in(conn, dialect, p).await,
            (Plan::Rotate(r), Dialect::Postgres) => rotate_pg(conn, p, r).await,
            (Plan::Rotate(r), Dialect::Sqlite) => rotate_in(conn, p, r).await,
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
            let locked = q!(dialect::LOCK_SESSION_PG, presented)
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                return Ok(None);
            }
        }
        let row: Option<PresentedRow> =
            q_as!(PRESENTED, presented).fetch_optional(&mut *tx).await?;
        let Some(found) = row.map(PresentedToken::from) else {
            return Ok(None);
        };
        let plan = plan_for(&found);
        let p = Presentation {
            found: &found,
            presented,
            child,
            now,
        };
        let applied = self.apply_in(&mut tx, p, &plan).await?;
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
        let sql = "SELECT COUNT(*) FROM refresh_tokens WHERE session_id = $1";
        Ok(q_scalar!(sql, session_id).fetch_one(&self.read).await?)
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
        let change = q!(REVOKE_SESSION, now, reason.as_str(), session_id, user_id);
        self.change_with_event(change, EventKind::Session, session_id, now)
            .await
    }

    /// Revokes every live session of a user but `except`, each with its event, in one
    /// transaction. Returns the sessions revoked.
    pub async fn revoke_user_sessions(
        &self,
        user_id: &str,
        except: Option<&str>,
        reason: RevokeReason,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let mut tx = self.write.begin().await?;
        let revoked = self
            .revoke_user_sessions_in(&mut tx, user_id, except, reason, now)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    pub(super) async fn revoke_user_sessions_in(
        &self,
        conn: &mut AnyConnection,
        user_id: &str,
        except: Option<&str>,
        reason: RevokeReason,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let sql = match self.dialect {
            Dialect::Postgres => dialect::LOCK_USER_SESSIONS_PG,
            Dialect::Sqlite => dialect::USER_SESSIONS,
        };
        let ids: Vec<String> = q_scalar!(sql, user_id, except)
            .fetch_all(&mut *conn)
            .await?;
        revoke_each(conn, self.dialect, ids, reason, now).await
    }

    /// Ends the live sessions of `user_id` that the passkey `passkey` signed in, in the
    /// caller's transaction; the ones it ended.
    pub(super) async fn revoke_passkey_sessions_in(
        &self,
        conn: &mut AnyConnection,
        user_id: &str,
        passkey: &str,
        now: i64,
    ) -> StoreResult<Vec<String>> {
        let sql = match self.dialect {
            Dialect::Postgres => dialect::LOCK_PASSKEY_SESSIONS_PG,
            Dialect::Sqlite => dialect::PASSKEY_SESSIONS,
        };
        let ids: Vec<String> = q_scalar!(sql, user_id, passkey)
            .fetch_all(&mut *conn)
            .await?;
        revoke_each(conn, self.dialect, ids, RevokeReason::PasskeyRemoved, now).await
    }

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<SessionRow>> {
        let sql = "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at,
                          user_agent
                   FROM sessions
                   WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
                         AND absolute_expires_at > $2
                   ORDER BY last_used_at DESC";
        Ok(q_as!(sql, user_id, now).fetch_all(&self.read).await?)
    }

    /// Sessions revoked since `since`, whose access tokens may still be in circulation, each
    /// with the time its revocation counts from (crate::store::revocations). Read from the
    /// revocation events, which outlive the rows: a deleted user's sessions are gone, and a
    /// revoked session's row is purged a day before its event.
    pub async fn recently_revoked_sessions(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let sql = "SELECT subject, MAX(at) FROM revocation_events
                   WHERE kind = $1 AND at > $2 GROUP BY subject";
        let kind = super::EventKind::Session.as_str();
        Ok(q_as!(sql, kind, since).fetch_all(&self.read).await?)
    }

    /// The session of a refresh token and the key it is bound to, if the token is known.
    pub async fn session_binding(
        &self,
        hash: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        let sql = "SELECT s.id, s.dpop_jkt FROM refresh_tokens t
                   JOIN sessions s ON s.id = t.session_id WHERE t.hash = $1";
        Ok(q_as!(sql, hash).fetch_optional(&self.read).await?)
    }
}
