//! The PostgreSQL backend: the same interface as SQLite, for any number of instances sharing
//! one database.
//!
//! - **Rotation** decides on what it read and writes the decision in one statement that
//!   applies only if the session's `version` is unchanged (every rotation bumps it): a
//!   rotation of the family committed meanwhile, on any instance, makes the write a no-op and
//!   the presentation is decided again on fresh state. After three lost races it takes the
//!   session row's lock (`SELECT … FOR UPDATE`) and reads under it: in READ COMMITTED each
//!   statement sees what was committed before it began. Either way concurrent presentations on
//!   any number of instances get exactly the single-instance outcome. Only the session row is
//!   ever locked first, which rules out deadlocks (a reissue updates sibling token rows).
//! - **Revocations** (deny-listed `jti`, revoked session, key-ring change) insert a row in
//!   `revocation_events` and `NOTIFY tw_revocations` in the same transaction; the payload is
//!   the event itself, so hearing it costs no query (crate::fleet).
//! - **Throttle counters** live in a table, one atomic statement per check; **DPoP proofs** in
//!   another, a unique insert batched across concurrent requests.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Row};

use super::{
    EventKind, Granted, Heard, KeyRow, PresentedToken, RevocationEvent, Rotation, SessionRow,
    StoreError, StoreResult, User, split_roles,
};
use crate::rotation::{self, Decision, FamilyState, Policy, TokenState};

/// The channel every instance listens on.
pub const CHANNEL: &str = "tw_revocations";

/// Connections per instance (the listener takes one more).
const POOL_SIZE: u32 = 16;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// DPoP proofs waiting for the next batched insert (see `claim_proof`).
    proofs: tokio::sync::mpsc::Sender<ProofClaim>,
}

/// One proof to record, and where to answer whether it was new.
struct ProofClaim {
    key: String,
    until: i64,
    now: i64,
    answer: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

/// Most proofs in one insert.
const PROOF_BATCH: usize = 512;

/// Records proofs in batches: whatever arrived while the previous insert ran goes into the
/// next one (group commit), so a busy instance pays one round trip for many proofs instead of
/// one each. Ends when every `PgStore` is gone.
async fn record_proofs(pool: PgPool, mut queue: tokio::sync::mpsc::Receiver<ProofClaim>) {
    let mut batch = Vec::with_capacity(PROOF_BATCH);
    while queue.recv_many(&mut batch, PROOF_BATCH).await > 0 {
        // A proof twice in one batch: the first is the one recorded, the others are replays
        // (one statement cannot insert a key twice).
        let mut keys = Vec::with_capacity(batch.len());
        let mut untils = Vec::with_capacity(batch.len());
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let mut now = i64::MIN;
        for c in &batch {
            if seen.insert(c.key.as_str()) {
                keys.push(c.key.clone());
                untils.push(c.until);
            }
            now = now.max(c.now);
        }
        // An expired row of the same proof is taken over (the iat check refuses it anyway).
        let inserted = sqlx::query(
            "INSERT INTO dpop_proofs (proof, until)
             SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (proof) DO UPDATE SET until = EXCLUDED.until
             WHERE dpop_proofs.until < $3
             RETURNING proof",
        )
        .bind(&keys)
        .bind(&untils)
        .bind(now)
        .fetch_all(&pool)
        .await
        .and_then(|rows| {
            rows.iter()
                .map(|r| r.try_get::<String, _>("proof"))
                .collect::<Result<std::collections::HashSet<_>, _>>()
        });
        let mut answered = std::collections::HashSet::with_capacity(batch.len());
        for c in batch.drain(..) {
            let answer = match &inserted {
                Ok(new) => Ok(new.contains(&c.key) && answered.insert(c.key.clone())),
                Err(e) => Err(e.to_string()),
            };
            let _ = c.answer.send(answer);
        }
    }
}

const PRESENTED_TOKEN: &str = "SELECT t.session_id, t.generation, t.claimed_at, t.revoked_at,
            t.children, s.user_id, s.revoked_at AS session_revoked_at, s.idle_expires_at,
            s.absolute_expires_at, s.max_used_gen, s.dpop_jkt, s.version
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.hash = $1";

fn presented_from_row(row: &PgRow) -> StoreResult<PresentedToken> {
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    let session_revoked: Option<i64> = row.try_get("session_revoked_at")?;
    let dpop_jkt: Option<String> = row.try_get("dpop_jkt")?;
    Ok(PresentedToken {
        session_id: row.try_get("session_id")?,
        user_id: row.try_get("user_id")?,
        token: TokenState {
            generation: row.try_get("generation")?,
            claimed_at: row.try_get("claimed_at")?,
            revoked: revoked.is_some(),
            children: row.try_get("children")?,
        },
        family: FamilyState {
            revoked: session_revoked.is_some(),
            idle_expires_at: row.try_get("idle_expires_at")?,
            absolute_expires_at: row.try_get("absolute_expires_at")?,
            head: row.try_get("max_used_gen")?,
            bound: dpop_jkt.is_some(),
        },
        dpop_jkt,
        version: row.try_get("version")?,
    })
}

fn user_from_row(row: &PgRow) -> StoreResult<User> {
    let roles: String = row.try_get("roles")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        roles: split_roles(&roles),
    })
}

fn event_from_row(row: &PgRow) -> StoreResult<RevocationEvent> {
    let kind: String = row.try_get("kind")?;
    Ok(RevocationEvent {
        id: row.try_get("id")?,
        kind: EventKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("revocation event kind {kind:?}")))?,
        subject: row.try_get("subject")?,
        at: row.try_get("at")?,
    })
}

/// Optimistic rotations tried before taking the session's lock.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// Saves `decision` about the token `presented` as `found` read it, in one statement that
/// writes nothing if the session's version moved since (`None` back: decide again).
async fn write_rotation(
    conn: &mut PgConnection,
    found: &PresentedToken,
    decision: Decision,
    presented: &str,
    child: &str,
    now: i64,
    idle_secs: i64,
) -> StoreResult<Option<Rotation>> {
    let (child_generation, head, repeat, reissue) = match decision {
        Decision::Invalid => return Ok(Some(Rotation::Invalid)),
        Decision::Throttled { retry_after } => {
            return Ok(Some(Rotation::Throttled { retry_after }));
        }
        Decision::Reuse => {
            // Revoke the family and tell every instance, if nobody rotated it meanwhile.
            let row = sqlx::query(
                "WITH s AS (UPDATE sessions SET revoked_at = $1, revoke_reason = 'token_reused',
                                                version = version + 1
                            WHERE id = $2 AND version = $3 AND revoked_at IS NULL
                            RETURNING id),
                      e AS (INSERT INTO revocation_events (kind, subject, at)
                            SELECT $4, id, $1 FROM s RETURNING id)
                 SELECT pg_notify($5, e.id::text || ' ' || $4 || ' ' || $1::text || ' ' || $2)
                 FROM e",
            )
            .bind(now)
            .bind(&found.session_id)
            .bind(found.version)
            .bind(EventKind::Session.as_str())
            .bind(CHANNEL)
            .fetch_optional(conn)
            .await?;
            return Ok(row.map(|_| Rotation::Reused {
                session_id: found.session_id.clone(),
                user_id: found.user_id.clone(),
            }));
        }
        Decision::Claim { child_generation } => {
            let head = found.token.generation.max(found.family.head);
            (child_generation, head, false, false)
        }
        Decision::Repeat { child_generation } => (child_generation, found.family.head, true, false),
        Decision::Reissue { child_generation } => {
            (child_generation, found.family.head, false, true)
        }
    };
    let refresh_expires_at = now
        .saturating_add(idle_secs)
        .min(found.family.absolute_expires_at);
    // s: the swap; r: a reissue revokes the unused children (not the new one: same snapshot);
    // t: the presented token claims (again) or counts one more child; c: the child.
    let row = sqlx::query(
        "WITH s AS (UPDATE sessions SET max_used_gen = $1, last_used_at = $2,
                                        idle_expires_at = $3, version = version + 1
                    WHERE id = $4 AND version = $5 AND revoked_at IS NULL
                    RETURNING user_id),
              r AS (UPDATE refresh_tokens SET revoked_at = $2
                    WHERE $9 AND session_id = $4 AND generation = $6 AND revoked_at IS NULL
                          AND EXISTS (SELECT 1 FROM s)),
              t AS (UPDATE refresh_tokens
                    SET claimed_at = CASE WHEN $8 THEN claimed_at ELSE $2 END,
                        children = CASE WHEN $8 THEN children + 1 ELSE 1 END
                    WHERE hash = $7 AND EXISTS (SELECT 1 FROM s)),
              c AS (INSERT INTO refresh_tokens (hash, session_id, generation, created_at)
                    SELECT $10, $4, $6, $2 FROM s)
         SELECT u.id, u.email, u.name, u.phone, u.roles FROM users u JOIN s ON u.id = s.user_id",
    )
    .bind(head)
    .bind(now)
    .bind(refresh_expires_at)
    .bind(&found.session_id)
    .bind(found.version)
    .bind(child_generation)
    .bind(presented)
    .bind(repeat)
    .bind(reissue)
    .bind(child)
    .fetch_optional(conn)
    .await?;
    row.map(|r| {
        Ok(Rotation::Rotated(Granted {
            session_id: found.session_id.clone(),
            user: user_from_row(&r)?,
            refresh_expires_at,
        }))
    })
    .transpose()
}

/// Records a revocation and notifies every instance, inside the caller's transaction (the
/// notification is delivered at commit, never for a rolled-back change).
async fn record_event(
    conn: &mut PgConnection,
    kind: EventKind,
    subject: &str,
    at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "WITH e AS (INSERT INTO revocation_events (kind, subject, at) VALUES ($1, $2, $3)
                    RETURNING id)
         SELECT pg_notify($4, e.id::text || ' ' || $1 || ' ' || $3::text || ' ' || $2) FROM e",
    )
    .bind(kind.as_str())
    .bind(subject)
    .bind(at)
    .bind(CHANNEL)
    .execute(conn)
    .await?;
    Ok(())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The key of a DPoP proof in `dpop_proofs`.
fn proof_key(jkt: &str, jti: &str) -> String {
    let mut h = Sha256::new();
    h.update(jkt.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    B64.encode(h.finalize())
}

impl PgStore {
    /// Connects and runs the PostgreSQL migrations (`migrations-postgres/`). Several instances
    /// may start at once: sqlx takes an advisory lock around the migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts = PgConnectOptions::from_str(url)?.application_name("tokenwarden");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations-postgres").run(&pool).await?;
        let (proofs, queue) = tokio::sync::mpsc::channel(4 * PROOF_BATCH);
        tokio::spawn(record_proofs(pool.clone(), queue));
        Ok(PgStore { pool, proofs })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The pool, for the queries that live in their own modules (`crate::otp::store`).
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
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
        let res = sqlx::query(
            "INSERT INTO users (id, email, password_hash, name, roles, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(name)
        .bind(roles.join(","))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn delete_user_by_email(&self, email: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        // Their sessions end with them: every instance must stop honouring their tokens.
        let sessions = sqlx::query(
            "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.email = $1 AND s.revoked_at IS NULL",
        )
        .bind(email)
        .fetch_all(&mut *tx)
        .await?;
        let now = unix_now();
        for row in &sessions {
            let sid: String = row.try_get("id")?;
            record_event(&mut tx, EventKind::Session, &sid, now).await?;
        }
        let res = sqlx::query("DELETE FROM users WHERE email = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, email, name, phone, roles FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "UPDATE users SET name = COALESCE($1, name),
                              phone = CASE WHEN $2 THEN $3 ELSE phone END
             WHERE id = $4 RETURNING id, email, name, phone, roles",
        )
        .bind(name)
        .bind(phone.is_some())
        .bind(phone.flatten())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    // ---- throttling -----------------------------------------------------------------------

    pub async fn count_login_attempt(
        &self,
        email: &str,
        client: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "INSERT INTO login_attempts (email, client, attempts, window_start)
             VALUES ($1, $2, 1, $3)
             ON CONFLICT (email, client) DO UPDATE SET
               attempts = CASE WHEN login_attempts.window_start > $3 - $4
                               THEN login_attempts.attempts + 1 ELSE 1 END,
               window_start = CASE WHEN login_attempts.window_start > $3 - $4
                                   THEN login_attempts.window_start ELSE $3 END
             RETURNING attempts, window_start",
        )
        .bind(email)
        .bind(client)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("attempts")?, row.try_get("window_start")?))
    }

    pub async fn clear_login_attempts(&self, email: &str, client: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_attempts WHERE email = $1 AND client = $2")
            .bind(email)
            .bind(client)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn login_attempt_rows(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM login_attempts")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn purge_login_attempts(&self, before: i64) -> StoreResult<u64> {
        let res = sqlx::query("DELETE FROM login_attempts WHERE window_start < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(res.rows_affected())
    }

    /// One statement, so concurrent hits on any instance all count. A newer window starts the
    /// count over; a hit stamped with an older window (an instance whose clock lags) counts
    /// into the newer one rather than resetting it.
    pub async fn count_hit(&self, key: &str, window_start: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO throttle_counters (key, window_start, hits) VALUES ($1, $2, 1)
             ON CONFLICT (key) DO UPDATE SET
               hits = CASE WHEN $2 > throttle_counters.window_start THEN 1
                           ELSE throttle_counters.hits + 1 END,
               window_start = GREATEST(throttle_counters.window_start, $2)
             RETURNING hits",
        )
        .bind(key)
        .bind(window_start)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("hits")?)
    }

    pub async fn reset_hits(&self, prefix: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM throttle_counters WHERE starts_with(key, $1)")
            .bind(prefix)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sessions and refresh tokens ------------------------------------------------------

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
        let absolute = now + absolute_secs;
        let idle = (now + idle_secs).min(absolute);
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, idle_expires_at,
                                   absolute_expires_at, user_agent)
             VALUES ($1, $2, $3, $3, $4, $5, $6)",
        )
        .bind(session_id)
        .bind(&user.id)
        .bind(now)
        .bind(idle)
        .bind(absolute)
        .bind(user_agent)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, generation, created_at)
             VALUES ($1, $2, 0, $3)",
        )
        .bind(token_hash)
        .bind(session_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Granted {
            session_id: session_id.to_owned(),
            user: user.clone(),
            refresh_expires_at: idle,
        })
    }

    pub async fn presented_token(&self, hash: &str) -> StoreResult<Option<PresentedToken>> {
        let row = sqlx::query(PRESENTED_TOKEN)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| presented_from_row(&r)).transpose()
    }

    /// Optimistic first: decide on what was read (`read`, or a fresh read), then write the
    /// decision in **one statement** that applies only if the session's version is still the
    /// one read (a compare-and-swap: a rotation of the family committed meanwhile, on any
    /// instance, makes it write nothing, and the presentation is decided again on fresh
    /// state). One read and one write, no transaction, for the usual case of one presentation
    /// at a time. After [`OPTIMISTIC_ATTEMPTS`] lost races (many concurrent presentations of
    /// one family), the session row's lock: `SELECT … FOR UPDATE`, then the read under it, then
    /// the same write, in one transaction.
    pub async fn rotate(
        &self,
        presented: &str,
        child: &str,
        now: i64,
        idle_secs: i64,
        policy: Policy,
        read: Option<&PresentedToken>,
    ) -> StoreResult<Rotation> {
        let mut first = read.cloned();
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let found = match first.take() {
                Some(f) => f,
                None => match self.presented_token(presented).await? {
                    Some(f) => f,
                    None => return Ok(Rotation::Invalid),
                },
            };
            let decision = rotation::decide(found.token, found.family, now, policy);
            let mut conn = self.pool.acquire().await?;
            if let Some(outcome) = write_rotation(
                &mut conn, &found, decision, presented, child, now, idle_secs,
            )
            .await?
            {
                return Ok(outcome);
            }
        }
        let mut tx = self.pool.begin().await?;
        // The family's lock: every other rotation of this session waits, or fails its swap.
        let locked = sqlx::query(
            "SELECT id FROM sessions
             WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $1)
             FOR UPDATE",
        )
        .bind(presented)
        .fetch_optional(&mut *tx)
        .await?;
        if locked.is_none() {
            return Ok(Rotation::Invalid);
        }
        // Read under the lock: a new snapshot, which holds whatever earlier holders wrote.
        let Some(row) = sqlx::query(PRESENTED_TOKEN)
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Rotation::Invalid);
        };
        let found = presented_from_row(&row)?;
        let decision = rotation::decide(found.token, found.family, now, policy);
        let outcome = write_rotation(&mut tx, &found, decision, presented, child, now, idle_secs)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a locked session changed under its lock".into()))?;
        tx.commit().await?;
        Ok(outcome)
    }

    pub async fn session_token_rows(&self, session_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM refresh_tokens WHERE session_id = $1")
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn revoke_session(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        reason: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2
             WHERE id = $3 AND revoked_at IS NULL AND ($4::text IS NULL OR user_id = $4)",
        )
        .bind(now)
        .bind(reason)
        .bind(session_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        let revoked = res.rows_affected() == 1;
        if revoked {
            record_event(&mut tx, EventKind::Session, session_id, now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<SessionRow>> {
        let rows = sqlx::query(
            "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent
             FROM sessions
             WHERE user_id = $1 AND revoked_at IS NULL AND idle_expires_at > $2
                   AND absolute_expires_at > $2
             ORDER BY last_used_at DESC",
        )
        .bind(user_id)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionRow {
                    id: r.try_get("id")?,
                    created_at: r.try_get("created_at")?,
                    last_used_at: r.try_get("last_used_at")?,
                    idle_expires_at: r.try_get("idle_expires_at")?,
                    absolute_expires_at: r.try_get("absolute_expires_at")?,
                    user_agent: r.try_get("user_agent")?,
                })
            })
            .collect()
    }

    pub async fn recently_revoked_sessions(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
            .bind(since)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revoked_at")?)))
            .collect()
    }

    /// Also forgets what only lives a short while: throttle windows, accepted DPoP proofs and
    /// revocation events older than an hour (an instance that starts reads the tables, not the
    /// events; a running one re-reads only the last seconds of events).
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM sessions WHERE absolute_expires_at < $1 OR idle_expires_at < $1
                                     OR revoked_at < $1",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM denied_tokens WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "DELETE FROM revocation_events WHERE recorded < clock_timestamp() - interval '1 hour'",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes expired DPoP proofs and throttle windows older than two minutes (every minute:
    /// with DPoP, a row is written per request).
    pub async fn purge_short_lived(&self, now: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM dpop_proofs WHERE until < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM throttle_counters WHERE window_start < $1")
            .bind(now - 120)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- access-token deny-list -----------------------------------------------------------

    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 1 {
            record_event(&mut tx, EventKind::Token, jti, expires_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn denied_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT jti, expires_at FROM denied_tokens WHERE expires_at >= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    // ---- revocation events ----------------------------------------------------------------

    pub async fn revocation_cursor(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS id FROM revocation_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    pub async fn revocations_since(
        &self,
        cursor: i64,
        recent_secs: i64,
    ) -> StoreResult<Vec<RevocationEvent>> {
        let rows = sqlx::query(
            "SELECT id, kind, subject, at FROM revocation_events
             WHERE id > $1 OR recorded > clock_timestamp() - make_interval(secs => $2)
             ORDER BY id",
        )
        .bind(cursor)
        .bind(recent_secs as f64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    pub async fn listen(&self) -> StoreResult<PgRevocationListener> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        Ok(PgRevocationListener { listener })
    }

    // ---- signing keys ---------------------------------------------------------------------

    pub async fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRow {
                    kid: r.try_get("kid")?,
                    private_key: r.try_get("private_key")?,
                    public_key: r.try_get("public_key")?,
                    created_at: r.try_get("created_at")?,
                    retired_at: r.try_get("retired_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Instances that start together may each find no signing key: the transaction-level
    /// advisory lock makes them add one after the other, and the second sees the first's key
    /// retired by its own (harmless: both verify through the grace period).
    pub async fn add_signing_key(&self, key: &KeyRow, now: i64) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7301)")
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        record_event(&mut tx, EventKind::Keys, &key.kid, now).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn set_private_key(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        sqlx::query("UPDATE signing_keys SET private_key = $1 WHERE kid = $2")
            .bind(private_key)
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn revoke_key(&self, kid: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query(
            "UPDATE signing_keys SET revoked_at = $1, retired_at = COALESCE(retired_at, $1)
             WHERE kid = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(kid)
        .execute(&mut *tx)
        .await?;
        let revoked = res.rows_affected() == 1;
        if revoked {
            record_event(&mut tx, EventKind::Keys, kid, now).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    // ---- DPoP ------------------------------------------------------------------------------

    pub async fn session_binding(
        &self,
        hash: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        let row = sqlx::query(
            "SELECT s.id, s.dpop_jkt FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             WHERE t.hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("dpop_jkt")?)))
            .transpose()
    }

    pub async fn key_bound(&self, jkt: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM sessions WHERE dpop_jkt = $1 LIMIT 1")
            .bind(jkt)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    pub async fn bind_session(&self, session_id: &str, jkt: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET dpop_jkt = $1 WHERE id = $2 AND dpop_jkt IS NULL")
            .bind(jkt)
            .bind(session_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    /// A unique insert: of two instances given the same proof, exactly one inserts the row.
    /// Batched with the proofs other requests present meanwhile (`record_proofs`).
    pub async fn claim_proof(
        &self,
        jkt: &str,
        jti: &str,
        until: i64,
        now: i64,
    ) -> StoreResult<bool> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let claim = ProofClaim {
            key: proof_key(jkt, jti),
            until,
            now,
            answer,
        };
        self.proofs
            .send(claim)
            .await
            .map_err(|_| StoreError::Batch("the DPoP proof recorder has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Batch("the DPoP proof recorder has stopped".into()))?
            .map_err(StoreError::Batch)
    }
}

/// `LISTEN tw_revocations` on a connection of its own.
pub struct PgRevocationListener {
    listener: PgListener,
}

impl PgRevocationListener {
    pub async fn recv(&mut self) -> StoreResult<Heard> {
        // `try_recv` reports a lost connection (`None`) instead of silently reconnecting, so the
        // caller knows to catch up with a read.
        match self.listener.try_recv().await? {
            Some(n) => {
                Ok(RevocationEvent::from_payload(n.payload()).map_or(Heard::Garbled, Heard::Event))
            }
            None => Ok(Heard::Reconnected),
        }
    }
}
