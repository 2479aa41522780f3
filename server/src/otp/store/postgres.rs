//! The PostgreSQL statements of emailed sign-in codes (`migrations-postgres/0004_otp.sql`),
//! for instances sharing one database. Each counting step is one statement: concurrent
//! requests on any instance take row locks in turn and each sees the previous one's count
//! (an `UPDATE` re-checks its condition on the newest row version after waiting).

use sqlx::{PgPool, Row};

use super::{Counted, Counter};
use crate::store::StoreResult;

#[derive(Clone)]
pub struct PgOtp {
    pool: PgPool,
}

impl PgOtp {
    pub fn new(pool: &PgPool) -> Self {
        PgOtp { pool: pool.clone() }
    }

    pub async fn count(
        &self,
        counter: Counter,
        email: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        let row = sqlx::query(
            "INSERT INTO otp_counters (kind, email, n, window_start) VALUES ($1, $2, 1, $3)
             ON CONFLICT (kind, email) DO UPDATE SET
               n = CASE WHEN otp_counters.window_start > $3 - $4 THEN otp_counters.n + 1 ELSE 1 END,
               window_start = CASE WHEN otp_counters.window_start > $3 - $4
                                   THEN otp_counters.window_start ELSE $3 END
             RETURNING n, window_start",
        )
        .bind(counter.as_str())
        .bind(email)
        .bind(now)
        .bind(window_secs)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("n")?, row.try_get("window_start")?))
    }

    pub async fn clear(&self, counter: Counter, email: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM otp_counters WHERE kind = $1 AND email = $2")
            .bind(counter.as_str())
            .bind(email)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

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
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(email)
        .bind(code_hash)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE otp_codes SET revoked_at = $1
             WHERE email = $2 AND id <> $3 AND used_at IS NULL AND revoked_at IS NULL
               AND expires_at > $1 AND attempts < $4
               AND id NOT IN (SELECT id FROM otp_codes
                              WHERE email = $2 AND id <> $3 AND used_at IS NULL
                                AND revoked_at IS NULL AND expires_at > $1 AND attempts < $4
                              ORDER BY created_at DESC LIMIT $5)",
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

    pub async fn count_attempt(
        &self,
        email: &str,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<Counted>> {
        let rows = sqlx::query(
            "UPDATE otp_codes SET attempts = attempts + 1
             WHERE email = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
               AND attempts < $3
             RETURNING id, code_hash, attempts",
        )
        .bind(email)
        .bind(now)
        .bind(max_attempts)
        .fetch_all(&self.pool)
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

    pub async fn consume(&self, id: &str, email: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query(
            "UPDATE otp_codes SET used_at = $1
             WHERE id = $2 AND used_at IS NULL AND revoked_at IS NULL",
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
            "UPDATE otp_codes SET revoked_at = $1
             WHERE email = $2 AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(email)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn expired_since(
        &self,
        email: &str,
        now: i64,
        since: i64,
        max_attempts: i64,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM otp_codes
             WHERE email = $1 AND used_at IS NULL AND revoked_at IS NULL AND attempts < $2
               AND expires_at <= $3 AND expires_at > $4",
        )
        .bind(email)
        .bind(max_attempts)
        .bind(now)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    pub async fn live_codes(&self, email: &str, now: i64, max_attempts: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM otp_codes
             WHERE email = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
               AND attempts < $3",
        )
        .bind(email)
        .bind(now)
        .bind(max_attempts)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM otp_codes WHERE expires_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        sqlx::query("DELETE FROM otp_counters WHERE window_start < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
