//! Emailed codes, for signing in and for the account flows (sign-up, verifying an address,
//! resetting a password): only an HMAC of each code is stored (crate::otp computes it). A code
//! does the work of its purpose only. The rules (how many attempts, which answer) are
//! crate::otp's; here loads and saves, each counting step one statement. And the sign-ups that
//! wait for their code.

use super::dialect::{self, Dialect};
use super::{Store, StoreResult};

/// What a code is for (`otp_codes.purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePurpose {
    SignIn,
    SignUp,
    VerifyEmail,
    ResetPassword,
    /// The second factor of a password sign-in (crate::passkeys).
    SecondFactor,
}

impl CodePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            CodePurpose::SignIn => "sign_in",
            CodePurpose::SignUp => "sign_up",
            CodePurpose::VerifyEmail => "verify_email",
            CodePurpose::ResetPassword => "reset_password",
            CodePurpose::SecondFactor => "second_factor",
        }
    }
}

row! {
    /// A sign-up waiting for its code.
    #[derive(Debug, Clone)]
    pub struct PendingSignup {
        pub password_hash: String,
        pub name: String,
    }
}

row! {
    /// A live code as a verification counted it: its id, its stored hash and the attempts made
    /// against it, this one included.
    #[derive(Debug, Clone)]
    pub struct Counted {
        pub id: String,
        pub code_hash: String,
        pub attempts: i64,
    }
}

/// The condition of a live code: of the email `$1` and the purpose `$4`, not used, not
/// revoked, not expired (`$2`: now), fewer attempts than the limit (`$3`).
macro_rules! live {
    () => {
        "email = $1 AND purpose = $4 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2
         AND attempts < $3"
    };
}

impl Store {
    /// Stores a new code and revokes the oldest live codes of the email beyond `max_live`
    /// (the new one always stays).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_code(
        &self,
        purpose: CodePurpose,
        id: &str,
        email: &str,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        max_attempts: i64,
        max_live: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        // SQLite's one writer runs one insert at a time; PostgreSQL, one per address.
        if self.dialect == Dialect::Postgres {
            q!(dialect::LOCK_CODES_PG, email).execute(&mut *tx).await?;
        }
        q!(
            "INSERT INTO otp_codes (id, email, code_hash, created_at, expires_at, purpose)
             VALUES ($1, $2, $3, $4, $5, $6)",
            id,
            email,
            code_hash,
            now,
            expires_at,
            purpose.as_str()
        )
        .execute(&mut *tx)
        .await?;
        let oldest = concat!(
            "UPDATE otp_codes SET revoked_at = $2 WHERE ",
            live!(),
            " AND id <> $5 AND id NOT IN (SELECT id FROM otp_codes WHERE ",
            live!(),
            " AND id <> $5 ORDER BY created_at DESC LIMIT $6)"
        );
        let keep = (max_live - 1).max(0);
        q!(oldest, email, now, max_attempts, purpose.as_str(), id, keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts one attempt against every live code of the email, *before* any comparison and in
    /// one statement: concurrent guesses each take their own attempt, and a code that has had
    /// `max_attempts` is no longer live, so it is never compared again.
    pub async fn count_code_attempt(
        &self,
        purpose: CodePurpose,
        email: &str,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<Counted>> {
        let sql = concat!(
            "UPDATE otp_codes SET attempts = attempts + 1 WHERE ",
            live!(),
            " RETURNING id, code_hash, attempts"
        );
        Ok(q_as!(sql, email, now, max_attempts, purpose.as_str())
            .fetch_all(&self.write)
            .await?)
    }

    /// Takes back one try of each code of `ids` (a verification that matched but could not be
    /// completed for a reason of the server's).
    pub async fn uncount_code_tries(&self, ids: &[String]) -> StoreResult<()> {
        let sql = "UPDATE otp_codes SET attempts = attempts - 1 WHERE id = $1 AND attempts > 0";
        for id in ids {
            q!(sql, id).execute(&self.write).await?;
        }
        Ok(())
    }

    /// Uses the code `id` (false if another request used or revoked it first) and revokes every
    /// other outstanding code of the email for that purpose, in one transaction.
    pub async fn consume_code(
        &self,
        purpose: CodePurpose,
        id: &str,
        email: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let outstanding = "used_at IS NULL AND revoked_at IS NULL";
        let mut tx = self.write.begin().await?;
        let used = format!("UPDATE otp_codes SET used_at = $1 WHERE id = $2 AND {outstanding}");
        let used = q!(sqlx::AssertSqlSafe(used), now, id)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let rest = format!(
            "UPDATE otp_codes SET revoked_at = $1 WHERE email = $2 AND purpose = $3
             AND {outstanding}"
        );
        q!(sqlx::AssertSqlSafe(rest), now, email, purpose.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes every outstanding code of `user_id`'s address inside the caller's transaction
    /// (a reset's or a password change's): no code mailed before it (one a stranger read off
    /// a lock screen, say) signs in after it. `but` (a change's: reset codes) is kept: whoever
    /// holds the password could otherwise cancel the owner's reset by changing it again and
    /// again.
    pub(super) async fn revoke_user_codes_in(
        conn: &mut sqlx::AnyConnection,
        user_id: &str,
        but: Option<CodePurpose>,
        now: i64,
    ) -> StoreResult<()> {
        let sql = "UPDATE otp_codes SET revoked_at = $2
                   WHERE email = (SELECT email FROM users WHERE id = $1) AND purpose <> $3
                     AND used_at IS NULL AND revoked_at IS NULL";
        let but = but.map_or("", CodePurpose::as_str);
        q!(sql, user_id, now, but).execute(conn).await?;
        Ok(())
    }

    /// Whether the email has a code that ran out of time (since `since`) without being used,
    /// revoked or guessed out.
    pub async fn code_expired_since(
        &self,
        purpose: CodePurpose,
        email: &str,
        now: i64,
        since: i64,
        max_attempts: i64,
    ) -> StoreResult<bool> {
        let sql = "SELECT COUNT(*) FROM otp_codes
                   WHERE email = $1 AND purpose = $5 AND used_at IS NULL AND revoked_at IS NULL
                     AND attempts < $2 AND expires_at <= $3 AND expires_at > $4";
        let n: i64 = q_scalar!(sql, email, max_attempts, now, since, purpose.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    /// Live codes of an email (operators and tests).
    pub async fn live_codes(
        &self,
        purpose: CodePurpose,
        email: &str,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<i64> {
        let sql = concat!("SELECT COUNT(*) FROM otp_codes WHERE ", live!());
        Ok(q_scalar!(sql, email, now, max_attempts, purpose.as_str())
            .fetch_one(&self.read)
            .await?)
    }

    /// Deletes codes and sign-ups that expired before `before`.
    pub async fn purge_codes(&self, before: i64) -> StoreResult<()> {
        for sql in [
            "DELETE FROM otp_codes WHERE expires_at < $1",
            "DELETE FROM pending_signups WHERE expires_at < $1",
        ] {
            q!(sql, before).execute(&self.write).await?;
        }
        Ok(())
    }

    /// Keeps a sign-up until a code of its address comes back from the browser that sent it
    /// (`binding_hash`: the hash of that browser's sign-up cookie). Each sign-up is its own
    /// row: a later one of the address replaces nothing.
    pub async fn put_pending_signup(
        &self,
        binding_hash: &str,
        email: &str,
        password_hash: &str,
        name: &str,
        now: i64,
        expires_at: i64,
    ) -> StoreResult<()> {
        let sql = "INSERT INTO pending_signups
                     (binding_hash, email, password_hash, name, created_at, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6)";
        q!(
            sql,
            binding_hash,
            email,
            password_hash,
            name,
            now,
            expires_at
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Takes the live sign-up of `email` that the browser with `binding_hash` sent (it is
    /// deleted: one account from it at most).
    pub async fn take_pending_signup(
        &self,
        binding_hash: &str,
        email: &str,
        now: i64,
    ) -> StoreResult<Option<PendingSignup>> {
        let sql = "DELETE FROM pending_signups
                   WHERE binding_hash = $1 AND email = $2 AND expires_at > $3
                   RETURNING password_hash, name";
        Ok(q_as!(sql, binding_hash, email, now)
            .fetch_optional(&self.write)
            .await?)
    }
}
