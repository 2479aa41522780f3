//! Every SQL statement the server runs. The rest of the server never sees SQL, so a Postgres
//! backend is this one module over a `PgPool` (the statements are portable; only the pool
//! set-up below is SQLite-specific).
//!
//! SQLite allows one writer at a time. Instead of letting connections race for the write lock
//! (and sleep in the busy handler), all writes go through a pool of exactly one connection and
//! reads through a separate pool of readers (WAL mode lets them run beside the writer).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

pub type DbResult<T> = Result<T, sqlx::Error>;

#[derive(Clone)]
pub struct Store {
    read: SqlitePool,
    write: SqlitePool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
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
    /// A token older than the family's newest used generation: theft or a replay. The session
    /// has been revoked.
    Reused {
        session_id: String,
        user_id: String,
    },
    /// Unknown token, revoked or expired session.
    Invalid,
}

fn user_from_row(row: &sqlx::sqlite::SqliteRow) -> DbResult<User> {
    let roles: String = row.try_get("roles")?;
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        name: row.try_get("name")?,
        phone: row.try_get("phone")?,
        roles: roles
            .split(',')
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl Store {
    /// Opens (creating if needed) the database and runs the migrations.
    /// `url` is `sqlite://path/to/file.db` or `sqlite::memory:`.
    pub async fn connect(url: &str) -> DbResult<Self> {
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
            if let Some(parent) = opts.get_filename().parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
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
            return Ok(Store { read, write });
        };
        sqlx::migrate!("./migrations").run(&write).await?;
        Ok(Store { read, write })
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
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
    ) -> DbResult<bool> {
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

    /// The user and their password hash.
    pub async fn user_by_email(&self, email: &str) -> DbResult<Option<(User, String)>> {
        let row = sqlx::query("SELECT * FROM users WHERE email = ?")
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((user_from_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> DbResult<Option<User>> {
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
    ) -> DbResult<Option<User>> {
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

    /// Failures recorded for this account within the window that starts at `since`.
    pub async fn login_failures(&self, email: &str, since: i64) -> DbResult<(i64, i64)> {
        let row = sqlx::query(
            "SELECT failures, window_start FROM login_failures WHERE email = ? AND window_start > ?",
        )
        .bind(email)
        .bind(since)
        .fetch_optional(&self.read)
        .await?;
        match row {
            Some(r) => Ok((r.try_get("failures")?, r.try_get("window_start")?)),
            None => Ok((0, 0)),
        }
    }

    /// Counts a failure; a window older than `window_secs` starts over.
    pub async fn record_login_failure(
        &self,
        email: &str,
        now: i64,
        window_secs: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO login_failures (email, failures, window_start) VALUES (?1, 1, ?2)
             ON CONFLICT (email) DO UPDATE SET
               failures = CASE WHEN login_failures.window_start > ?2 - ?3
                               THEN login_failures.failures + 1 ELSE 1 END,
               window_start = CASE WHEN login_failures.window_start > ?2 - ?3
                               THEN login_failures.window_start ELSE ?2 END",
        )
        .bind(email)
        .bind(now)
        .bind(window_secs)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn clear_login_failures(&self, email: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM login_failures WHERE email = ?")
            .bind(email)
            .execute(&self.write)
            .await?;
        Ok(())
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
    ) -> DbResult<Granted> {
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

    /// Presents the refresh token with hash `presented`; on success its child has hash `child`.
    ///
    /// The rule, decided by one conditional UPDATE so that concurrent refreshes cannot both
    /// slip through: a token of generation `g` is accepted while no token of a later generation
    /// has been used (`g >= max_used_gen`), i.e. until the client has surely received and used
    /// one of its children. A token of an older generation is reuse: the session is revoked.
    pub async fn rotate(
        &self,
        presented: &str,
        child: &str,
        now: i64,
        idle_secs: i64,
    ) -> DbResult<Rotation> {
        let mut tx = self.write.begin().await?;
        let Some(token) =
            sqlx::query("SELECT session_id, generation FROM refresh_tokens WHERE hash = ?")
                .bind(presented)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(Rotation::Invalid);
        };
        let session_id: String = token.try_get("session_id")?;
        let generation: i64 = token.try_get("generation")?;

        let updated = sqlx::query(
            "UPDATE sessions SET max_used_gen = ?1, last_used_at = ?2,
                                 idle_expires_at = MIN(?2 + ?3, absolute_expires_at)
             WHERE id = ?4 AND revoked_at IS NULL AND max_used_gen <= ?1
               AND idle_expires_at > ?2 AND absolute_expires_at > ?2
             RETURNING user_id, idle_expires_at",
        )
        .bind(generation)
        .bind(now)
        .bind(idle_secs)
        .bind(&session_id)
        .fetch_optional(&mut *tx)
        .await?;

        let Some(updated) = updated else {
            let session = sqlx::query(
                "SELECT user_id, max_used_gen, revoked_at, idle_expires_at, absolute_expires_at
                 FROM sessions WHERE id = ?",
            )
            .bind(&session_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(session) = session else {
                return Ok(Rotation::Invalid);
            };
            let revoked: Option<i64> = session.try_get("revoked_at")?;
            let idle: i64 = session.try_get("idle_expires_at")?;
            let absolute: i64 = session.try_get("absolute_expires_at")?;
            let max_used: i64 = session.try_get("max_used_gen")?;
            if revoked.is_some() || idle <= now || absolute <= now || max_used <= generation {
                return Ok(Rotation::Invalid);
            }
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
                user_id: session.try_get("user_id")?,
            });
        };
        let user_id: String = updated.try_get("user_id")?;
        let refresh_expires_at: i64 = updated.try_get("idle_expires_at")?;

        sqlx::query("UPDATE refresh_tokens SET used_at = COALESCE(used_at, ?) WHERE hash = ?")
            .bind(now)
            .bind(presented)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, session_id, generation, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(child)
        .bind(&session_id)
        .bind(generation + 1)
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

    /// The session a refresh token belongs to, if the token is known.
    pub async fn session_of_token(&self, hash: &str) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT session_id FROM refresh_tokens WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| r.try_get("session_id")).transpose()
    }

    /// Revokes a live session; `user_id` restricts it to that user's sessions.
    /// Returns whether a live session was revoked.
    pub async fn revoke_session(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        reason: &str,
        now: i64,
    ) -> DbResult<bool> {
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

    pub async fn live_sessions(&self, user_id: &str, now: i64) -> DbResult<Vec<SessionRow>> {
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
    pub async fn recently_revoked_sessions(&self, since: i64) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at > ?")
            .bind(since)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("revoked_at")?)))
            .collect()
    }

    /// Deletes sessions (and their tokens) that ended before `before`.
    pub async fn purge(&self, before: i64) -> DbResult<()> {
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

    // ---- access-token deny-list -----------------------------------------------------------

    pub async fn deny_token(&self, jti: &str, expires_at: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO denied_tokens (jti, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn denied_tokens(&self, now: i64) -> DbResult<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT jti, expires_at FROM denied_tokens WHERE expires_at >= ?")
            .bind(now)
            .fetch_all(&self.read)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti")?, r.try_get("expires_at")?)))
            .collect()
    }

    // ---- signing keys ---------------------------------------------------------------------

    pub async fn keys(&self) -> DbResult<Vec<KeyRow>> {
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
    pub async fn add_signing_key(&self, key: &KeyRow, now: i64) -> DbResult<()> {
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
        tx.commit().await
    }

    pub async fn revoke_key(&self, kid: &str, now: i64) -> DbResult<bool> {
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
