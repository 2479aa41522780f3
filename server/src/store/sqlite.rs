//! The SQLite backend: every statement of the default, single-instance store.
//!
//! SQLite allows one writer at a time. Instead of letting connections race for the write lock
//! (and sleep in the busy handler), all writes go through a pool of exactly one connection and
//! reads through a separate pool of readers (WAL mode lets them run beside the writer). The
//! one writer also serialises rotations: `rotate` loads, asks `rotation::decide`, and saves in
//! one write transaction that no other can interleave with.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};

use super::{
    Granted, KeyRow, PresentedToken, Rotation, SessionRow, StoreResult, User, split_roles,
};
use crate::rotation::{self, Decision, FamilyState, Policy, TokenState};

#[derive(Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

const PRESENTED_TOKEN: &str = "SELECT t.session_id, t.generation, t.claimed_at, t.revoked_at,
            t.children, s.user_id, s.revoked_at AS session_revoked_at, s.idle_expires_at,
            s.absolute_expires_at, s.max_used_gen, s.dpop_jkt
     FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
     WHERE t.hash = ?";

fn presented_from_row(row: &SqliteRow) -> StoreResult<PresentedToken> {
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
        version: 0,
    })
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    let roles: String = row.try_get("roles")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        roles: split_roles(&roles),
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database and runs the migrations.
    /// `url` is `sqlite://path/to/file.db` or `sqlite::memory:`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let (read, write) = if in_memory {
            // Every connection to `:memory:` is its own database: use one connection for all.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts)
                .await?;
            (pool.clone(), pool)
        } else {
            private_file(opts.get_filename())?;
            let opts = opts
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            sqlx::migrate!("./migrations").run(&write).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts.read_only(true))
                .await?;
            return Ok(SqliteStore { read, write });
        };
        sqlx::migrate!("./migrations").run(&write).await?;
        Ok(SqliteStore { read, write })
    }

    /// The read pool and the one-writer pool, for the queries that live in their own modules
    /// (`crate::otp::store`).
    pub(crate) fn pools(&self) -> (&SqlitePool, &SqlitePool) {
        (&self.read, &self.write)
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }

    pub fn is_closed(&self) -> bool {
        self.write.is_closed()
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
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (email) DO NOTHING",
        )
        .bind(id)
        .bind(email)
        .bind(password_hash)
        .bind(name)
        .bind(roles.join(","))
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes the user with this email and, by cascade, their sessions and tokens.
    pub async fn delete_user_by_email(&self, email: &str) -> StoreResult<bool> {
        let res = sqlx::query("DELETE FROM users WHERE email = ?")
            .bind(email)
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The user and their password hash.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row = sqlx::query("SELECT id, email, name, phone, roles FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    /// `phone: Some(None)` clears the phone number.
    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        let row = sqlx::query(
            "UPDATE users SET name = COALESCE(?, name),
                              phone = CASE WHEN ? THEN ? ELSE phone END
             WHERE id = ? RETURNING id, email, name, phone, roles",
        )
        .bind(name)
        .bind(phone.is_some())
        .bind(phone.flatten())
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    // ---- login throttling -----------------------------------------------------------------

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
        let row = sqlx::query(
            "INSERT INTO login_attempts (email, client, attempts, window_start)
             VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (email, client) DO UPDATE SET
               attempts = CASE WHEN login_attempts.window_start > ?3 - ?4
                               THEN login_attempts.attempts + 1 ELSE 1 END,
               window_start = CASE WHEN login_attempts.window_start > ?3 - ?4
                                   THEN login_attempts.window_start ELSE ?3 END
             RETURNING attempts, window_start",
        )
        .bind(email)
        .bind(client)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.write)
        .await?;
        Ok((row.try_get("attempts")?, row.try_get("window_start")?))
    }

    /// A successful login forgets the attempts of that (account, client).
    pub async fn clear_login_attempts(&self, email: &str, client: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM login_attempts WHERE email = ? AND client = ?")
            .bind(email)
            .bind(client)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// How many (account, client) counters are stored (operators and tests).
    pub async fn login_attempt_rows(&self) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM login_attempts")
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("n")?)
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
        let absolute = now + absolute_secs;
        let idle = (now + idle_secs).min(absolute);
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, created_at, last_used_at, idle_expires_at,
                                   absolute_expires_at, user_agent)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(session_id)
        .bind(&user.id)
        .bind(now)
        .bind(now)
        .bind(idle)
        .bind(absolute)
        .bind(user_agent)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, generation, created_at) VALUES (?, ?, 0, ?)",
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

    /// The token with hash `hash` and its session, from the read pool: refresh answers unknown
    /// tokens and dead sessions without taking the writer.
    pub async fn presented_token(&self, hash: &str) -> StoreResult<Option<PresentedToken>> {
        let row = sqlx::query(PRESENTED_TOKEN)
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| presented_from_row(&r)).transpose()
    }

    /// Presents the refresh token with hash `presented`; a new child gets hash `child`.
    /// Loads the token and its session, lets `rotation::decide` rule, and saves the decision,
    /// all in one write transaction.
    pub async fn rotate(
        &self,
        presented: &str,
        child: &str,
        now: i64,
        idle_secs: i64,
        policy: Policy,
    ) -> StoreResult<Rotation> {
        let mut tx = self.write.begin().await?;
        let Some(row) = sqlx::query(PRESENTED_TOKEN)
            .bind(presented)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(Rotation::Invalid);
        };
        let PresentedToken {
            session_id,
            user_id,
            token,
            family,
            ..
        } = presented_from_row(&row)?;

        let (child_generation, head) = match rotation::decide(token, family, now, policy) {
            Decision::Invalid => return Ok(Rotation::Invalid),
            Decision::Throttled { retry_after } => return Ok(Rotation::Throttled { retry_after }),
            Decision::Reuse => {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = ?, revoke_reason = 'token_reused' WHERE id = ?",
                )
                .bind(now)
                .bind(&session_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(Rotation::Reused {
                    session_id,
                    user_id,
                });
            }
            Decision::Claim { child_generation } => {
                sqlx::query(
                    "UPDATE refresh_tokens SET claimed_at = ?, children = 1 WHERE hash = ?",
                )
                .bind(now)
                .bind(presented)
                .execute(&mut *tx)
                .await?;
                (child_generation, token.generation.max(family.head))
            }
            Decision::Repeat { child_generation } => {
                sqlx::query("UPDATE refresh_tokens SET children = children + 1 WHERE hash = ?")
                    .bind(presented)
                    .execute(&mut *tx)
                    .await?;
                (child_generation, family.head)
            }
            Decision::Reissue { child_generation } => {
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = ?
                     WHERE session_id = ? AND generation = ? AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(&session_id)
                .bind(child_generation)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE refresh_tokens SET claimed_at = ?, children = 1 WHERE hash = ?",
                )
                .bind(now)
                .bind(presented)
                .execute(&mut *tx)
                .await?;
                (child_generation, family.head)
            }
        };

        let refresh_expires_at = now
            .saturating_add(idle_secs)
            .min(family.absolute_expires_at);
        sqlx::query(
            "UPDATE sessions SET max_used_gen = ?, last_used_at = ?, idle_expires_at = ? WHERE id = ?",
        )
        .bind(head)
        .bind(now)
        .bind(refresh_expires_at)
        .bind(&session_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, generation, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(child)
        .bind(&session_id)
        .bind(child_generation)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let user = sqlx::query("SELECT id, email, name, phone, roles FROM users WHERE id = ?")
            .bind(&user_id)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&user)?;
        tx.commit().await?;
        Ok(Rotation::Rotated(Granted {
            session_id,
            user,
            refresh_expires_at,
        }))
    }

    /// How many refresh tokens a session has stored (operators and tests).
    pub async fn session_token_rows(&self, session_id: &str) -> StoreResult<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM refresh_tokens WHERE session_id = ?")
            .bind(session_id)
            .fetch_one(&self.read)
            .await?;
        Ok(row.try_get("n")?)
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
        let res = sqlx::query(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ?
             WHERE id = ? AND revoked_at IS NULL AND (? IS NULL OR user_id = ?)",
        )
        .bind(now)
        .bind(reason)
        .bind(session_id)
        .bind(user_id)
        .bind(user_id)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> StoreResult<Vec<SessionRow>> {
        let rows = sqlx::query(
            "SELECT id, created_at, last_used_at, idle_expires_at, absolute_expires_at, user_agent
             FROM sessions
             WHERE user_id = ? AND revoked_at IS NULL AND idle_expires_at > ? AND absolute_expires_at > ?
             ORDER BY last_used_at DESC",
        )
        .bind(user_id)
        .bind(now)
        .bind(now)
        .fetch_all(&self.read)
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

    /// Sessions revoked since `since`, whose access tokens may still be in circulation.
    pub async fn recently_revoked_sessions(&self, since: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at > ?")
            .bind(since)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revoked_at")?)))
            .collect()
    }

    /// Deletes sessions (and their tokens) that ended before `before`.
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM sessions WHERE absolute_expires_at < ?1 OR idle_expires_at < ?1
                                     OR revoked_at < ?1",
        )
        .bind(before)
        .execute(&self.write)
        .await?;
        sqlx::query("DELETE FROM denied_tokens WHERE expires_at < ?")
            .bind(before)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Deletes login-attempt counters whose window started before `before`.
    pub async fn purge_login_attempts(&self, before: i64) -> StoreResult<u64> {
        let res = sqlx::query("DELETE FROM login_attempts WHERE window_start < ?")
            .bind(before)
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected())
    }

    // ---- access-token deny-list -----------------------------------------------------------

    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn denied_tokens(&self, now: i64) -> StoreResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT jti, expires_at FROM denied_tokens WHERE expires_at >= ?")
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    // ---- signing keys ---------------------------------------------------------------------

    pub async fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
            .fetch_all(&self.write)
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

    /// Adds a key that becomes the signing key; the previous signing key is retired (it keeps
    /// verifying for the grace period).
    pub async fn add_signing_key(&self, key: &KeyRow, now: i64) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.private_key)
        .bind(&key.public_key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a key's stored private key (sealing a key stored before encryption at rest).
    pub async fn set_private_key(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        sqlx::query("UPDATE signing_keys SET private_key = ? WHERE kid = ?")
            .bind(private_key)
            .bind(kid)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn revoke_key(&self, kid: &str, now: i64) -> StoreResult<bool> {
        let res = sqlx::query(
            "UPDATE signing_keys SET revoked_at = ?1, retired_at = COALESCE(retired_at, ?1)
             WHERE kid = ?2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(kid)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }
}

/// Creates the database file readable and writable by its owner only (0600), in a directory
/// created 0700, before SQLite opens it; SQLite gives its `-wal` and `-shm` files the same mode.
/// A file that exists with wider permissions is narrowed.
fn private_file(path: &std::path::Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
        && !parent.exists()
    {
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
        dir.create(parent)?;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    drop(open.open(path)?);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = std::path::Path::new(&name);
            if let Ok(meta) = std::fs::metadata(file)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %file.display(), "narrowing the database file's permissions to 0600");
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

// ---- DPoP binding (see crate::dpop) ---------------------------------------------------------

impl SqliteStore {
    /// The session of a refresh token and the thumbprint it is bound to, if the token is known.
    pub async fn session_binding(
        &self,
        hash: &str,
    ) -> StoreResult<Option<(String, Option<String>)>> {
        let row = sqlx::query(
            "SELECT s.id, s.dpop_jkt FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
             WHERE t.hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get("id")?, r.try_get("dpop_jkt")?)))
            .transpose()
    }

    /// Binds a new session to a key; done before its first token leaves the server.
    /// Whether any session, live or ended, was ever bound to the key with thumbprint `jkt`.
    pub async fn key_bound(&self, jkt: &str) -> StoreResult<bool> {
        let row = sqlx::query("SELECT 1 FROM sessions WHERE dpop_jkt = ? LIMIT 1")
            .bind(jkt)
            .fetch_optional(&self.write)
            .await?;
        Ok(row.is_some())
    }

    pub async fn bind_session(&self, session_id: &str, jkt: &str) -> StoreResult<()> {
        sqlx::query("UPDATE sessions SET dpop_jkt = ? WHERE id = ? AND dpop_jkt IS NULL")
            .bind(jkt)
            .bind(session_id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// The secret `name`, created from `fresh` by whichever instance asks first.
    pub async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(fresh)
        .execute(&self.write)
        .await?;
        let row = sqlx::query("SELECT value FROM server_secrets WHERE name = ?")
            .bind(name)
            .fetch_one(&self.write)
            .await?;
        Ok(row.try_get("value")?)
    }
}
