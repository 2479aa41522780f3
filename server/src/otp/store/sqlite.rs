//! The SQLite statements of emailed sign-in codes (tables of `migrations/0004_otp.sql`), on the
//! store's pools (SQLite's one writer serialises the counting statements below).

use sqlx::{Row, SqlitePool};

use super::{Counted, Counter};
use crate::store::StoreResult;

/// The OTP queries over the SQLite store's pools.
#[derive(Clone)]
pub struct SqliteOtp {
    read: SqlitePool,
    write: SqlitePool,
}

/// The condition of a live code: not used, not revoked, not expired (`?`: now), fewer attempts
/// than the limit (`?`: the limit).
macro_rules! live {
    () => {
        "used_at IS NULL AND revoked_at IS NULL AND expires_at > ? AND attempts < ?"
    };
}

impl SqliteOtp {
    pub fn new(read: &SqlitePool, write: &SqlitePool) -> Self {
        SqliteOtp {
            read: read.clone(),
            write: write.clone(),
        }
    }

    /// Counts one event of `counter` for `email` in one statement; a window older than
    /// `window_secs` starts over. Returns the count (this one included) and the window start.
    pub async fn count(
        &self,
        counter: Counter,
        email: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "INSERT INTO otp_counters (kind, email, n, window_start) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (kind, email) DO UPDATE SET
               n = CASE WHEN otp_counters.window_start > ?3 - ?4 THEN otp_counters.n + 1 ELSE 1 END,
               window_start = CASE WHEN otp_counters.window_start > ?3 - ?4
                                   THEN otp_counters.window_start ELSE ?3 END
             RETURNING n, window_start",
        )
        .bind(counter.as_str())
        .bind(email)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.write)
        .await?;
        Ok((row.try_get("n")?, row.try_get("window_start")?))
    }

    /// Forgets a counter (a successful sign-in clears the email's verification count).
    pub async fn clear(&self, counter: Counter, email: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM otp_counters WHERE kind = ? AND email = ?")
            .bind(counter.as_str())
            .bind(email)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stores a new code and revokes the oldest live codes of the email beyond `max_live`
    /// (the new one always stays).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        id: &str,
        email: &str,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        max_attempts: i64,
        max_live: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(email)
        .bind(code_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE otp_codes SET revoked_at = ?1
             WHERE email = ?2 AND id <> ?3 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > ?1 AND attempts < ?4
               AND id NOT IN (SELECT id FROM otp_codes
                              WHERE email = ?2 AND id <> ?3 AND used_at IS NULL
                                AND revoked_at IS NULL AND expires_at > ?1 AND attempts < ?4
                              ORDER BY created_at DESC LIMIT ?5)",
        )
        .bind(now)
        .bind(email)
        .bind(id)
        .bind(max_attempts)
        .bind((max_live - 1).max(0))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts one attempt against every live code of the email, *before* any comparison and in
    /// one statement: concurrent guesses each take their own attempt, and a code that has had
    /// `max_attempts` is no longer live, so it is never compared again.
    pub async fn count_attempt(
        &self,
        email: &str,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<Counted>> {
        let rows = sqlx::query(concat!(
            "UPDATE otp_codes SET attempts = attempts + 1 WHERE email = ? AND ",
            live!(),
            " RETURNING id, code_hash, attempts"
        ))
        .bind(email)
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&self.write)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Counted {
                    id: r.try_get("id")?,
                    code_hash: r.try_get("code_hash")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Uses the code `id` (false if another request used or revoked it first) and revokes every
    /// other outstanding code of the email.
    pub async fn consume(&self, id: &str, email: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let used = sqlx::query(
            "UPDATE otp_codes SET used_at = ? WHERE id = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE otp_codes SET revoked_at = ? WHERE email = ? AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether the email has a code that ran out of time (since `since`) without being used,
    /// revoked or guessed out, and no live one.
    pub async fn expired_since(
        &self,
        email: &str,
        now: i64,
        since: i64,
        max_attempts: i64,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM otp_codes
             WHERE email = ? AND used_at IS NULL AND revoked_at IS NULL AND attempts < ?
               AND expires_at <= ? AND expires_at > ?",
        )
        .bind(email)
        .bind(max_attempts)
        .bind(now)
        .bind(since)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Live codes of an email (operators and tests).
    pub async fn live_codes(&self, email: &str, now: i64, max_attempts: i64) -> StoreResult<i64> {
        let row = sqlx::query(concat!(
            "SELECT COUNT(*) AS n FROM otp_codes WHERE email = ? AND ",
            live!()
        ))
        .bind(email)
        .bind(now)
        .bind(max_attempts)
        .fetch_one(&self.read)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Deletes codes that expired and counters whose window started before `before`.
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM otp_codes WHERE expires_at < ?")
            .bind(before)
            .execute(&self.write)
            .await?;
        sqlx::query("DELETE FROM otp_counters WHERE window_start < ?")
            .bind(before)
            .execute(&self.write)
            .await?;
        Ok(())
    }
}
