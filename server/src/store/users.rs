//! Users: accounts, their password hashes and profiles.

use super::revocations::record_event;
use super::{EventKind, Store, StoreResult, USER_BY_ID, User, UserRow};

/// A user about to be created.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub roles: &'a [String],
    pub name: &'a str,
    /// A PHC string (argon2id for users made here).
    pub password_hash: &'a str,
    pub now: i64,
}

/// `users` with the password hash.
#[derive(sqlx::FromRow)]
struct WithHash {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl Store {
    /// Creates a user; `false` if the email is taken.
    pub async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<bool> {
        let res = q!(
            "INSERT INTO users (id, email, password_hash, name, roles, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING",
            u.id,
            u.email,
            u.password_hash,
            u.name,
            u.roles.join(","),
            u.now
        )
        .execute(&self.write)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Deletes the user with this email and, by cascade, their sessions and tokens. Their live
    /// sessions are recorded as revoked, so that every instance stops honouring their tokens.
    pub async fn delete_user_by_email(&self, email: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        let sessions: Vec<String> = q_scalar!(
            "SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE u.email = $1 AND s.revoked_at IS NULL",
            email
        )
        .fetch_all(&mut *tx)
        .await?;
        for sid in &sessions {
            record_event(&mut tx, self.dialect, EventKind::Session, sid, now).await?;
        }
        let res = q!("DELETE FROM users WHERE email = $1", email)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// The user and their password hash.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let sql = "SELECT id, email, name, phone, roles, password_hash FROM users WHERE email = $1";
        let row: Option<WithHash> = q_as!(sql, email).fetch_optional(&self.read).await?;
        Ok(row.map(|r| (r.user.into(), r.password_hash)))
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        self.find::<UserRow, _>(USER_BY_ID, id).await
    }

    /// `phone: Some(None)` clears the phone number.
    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = q_as!(
            "UPDATE users SET name = COALESCE(CAST($1 AS TEXT), name),
                              phone = CASE WHEN $2 THEN CAST($3 AS TEXT) ELSE phone END
             WHERE id = $4 RETURNING id, email, name, phone, roles",
            name,
            phone.is_some(),
            phone.flatten(),
            id
        )
        .fetch_optional(&self.write)
        .await?;
        Ok(row.map(Into::into))
    }
}
