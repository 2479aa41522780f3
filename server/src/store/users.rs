//! Users: accounts, their password hashes and profiles.

use super::{EventKind, Store, StoreResult, USER_BY_ID, User, UserRow};
use crate::store::revocations::record_event;

/// A user about to be created.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    pub name: &'a str,
    pub roles: &'a [String],
    pub now: i64,
}

impl Store {
    /// Creates a user; `false` if the email is taken.
    pub async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<bool> {
        let res = sqlx::query(
            "INSERT INTO users (id, email, password_hash, name, roles, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
        )
        .bind(u.id)
        .bind(u.email)
        .bind(u.password_hash)
        .bind(u.name)
        .bind(u.roles.join(","))
        .bind(u.now)
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes the user with this email and, by cascade, their sessions and tokens. Their live
    /// sessions are recorded as revoked, so that every instance stops honouring their tokens.
    pub async fn delete_user_by_email(&self, email: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let sessions: Vec<String> = sqlx::query_scalar(
            "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.email = $1 AND s.revoked_at IS NULL",
        )
        .bind(email)
        .fetch_all(&mut *tx)
        .await?;
        for sid in &sessions {
            record_event(&mut tx, self.dialect, EventKind::Session, sid, now).await?;
        }
        let res = sqlx::query("DELETE FROM users WHERE email = $1")
            .bind(email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// The user and their password hash.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        #[derive(sqlx::FromRow)]
        struct WithHash {
            #[sqlx(flatten)]
            user: UserRow,
            password_hash: String,
        }
        let row: Option<WithHash> = sqlx::query_as(
            "SELECT id, email, name, phone, roles, password_hash FROM users WHERE email = $1",
        )
        .bind(email)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| (r.user.into(), r.password_hash)))
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(USER_BY_ID)
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(Into::into))
    }

    /// `phone: Some(None)` clears the phone number.
    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET name = COALESCE(CAST($1 AS TEXT), name),
                              phone = CASE WHEN $2 THEN CAST($3 AS TEXT) ELSE phone END
             WHERE id = $4 RETURNING id, email, name, phone, roles",
        )
        .bind(name)
        .bind(phone.is_some())
        .bind(phone.flatten())
        .bind(id)
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(Into::into))
    }
}
