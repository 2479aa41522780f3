//! Users: accounts, their password hashes, profiles and the claims the app owns.

use sqlx::AnyConnection;

use super::dialect::Dialect;
use super::{RevokeReason, Store, StoreResult, USER_BY_ID, User, UserRow};

/// What a display name may be, wherever one comes from (a sign-up, the profile, an import,
/// `users add`, a legacy backend): 1 to 100 characters once trimmed, no control character.
pub fn valid_name(trimmed: &str) -> bool {
    // The bidirectional embeddings, overrides and isolates reorder the text around them where
    // the name is shown ("Mallory\u{202E}nimda" shows as "Malloryadmin"); the marks
    // (U+200E, U+200F) and the joiners some scripts write names with are kept.
    let reorders = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    !trimmed.is_empty()
        && trimmed.chars().count() <= 100
        && !trimmed.chars().any(|c| c.is_control() || reorders(c))
}

/// The name an account gets when it is given none: its address's local part, cut to 100
/// characters, or `user` if that is no name by [`valid_name`] (a text-direction isolate). One
/// rule for every account made without a name (a sign-up, an import, a provider's, an old
/// backend's); each wrote the local part as it came, up to 254 bytes.
pub fn name_from_address(email: &str) -> String {
    let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
    let name: String = local.trim().chars().take(100).collect();
    let name = name.trim();
    if valid_name(name) {
        name.to_owned()
    } else {
        "user".to_owned()
    }
}

/// [`valid_name`] in words, for a refusal.
pub const NAME_RULE: &str =
    "name must be 1 to 100 characters, without control or text-direction characters";

/// A user about to be created.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub roles: &'a [String],
    pub name: &'a str,
    /// A hash in a format `crate::hashes` understands, or "" (no password).
    pub password_hash: &'a str,
    /// When the address was shown to be the user's, if it was.
    pub email_verified_at: Option<i64>,
    /// The password was chosen by someone who had not proved the address, and not by the
    /// operator (a legacy backend's word, an import line without `email_verified`): the first
    /// code that comes back from the address ends it ([`Store::password_unproved`]).
    pub password_unproved: bool,
    /// A JSON object (checked by the caller).
    pub claims: &'a str,
    pub now: i64,
}

/// `users` with the password hash.
struct WithHash {
    user: UserRow,
    password_hash: String,
    password_version: i64,
}

impl<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> for WithHash {
    fn from_row(row: &'r sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        use sqlx::Row as _;
        Ok(Self {
            user: UserRow::from_row(row)?,
            password_hash: row.try_get("password_hash")?,
            password_version: row.try_get("password_version")?,
        })
    }
}

const INSERT_USER: &str = "INSERT INTO users (id, email, password_hash, name, roles, created_at,
                                              email_verified_at, claims, password_unproved)
                           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING";

/// Creates `u` unless its id or email is taken; whether it did.
pub(super) async fn insert_user(conn: &mut AnyConnection, u: &NewUser<'_>) -> StoreResult<bool> {
    let res = q!(
        INSERT_USER,
        u.id,
        u.email,
        u.password_hash,
        u.name,
        u.roles.join(","),
        u.now,
        u.email_verified_at,
        u.claims,
        i64::from(
            u.password_unproved && !u.password_hash.is_empty() && u.email_verified_at.is_none()
        )
    )
    .execute(&mut *conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

impl Store {
    /// Creates a user; `false` if the email (or the id) is taken.
    pub async fn create_user(&self, u: &NewUser<'_>) -> StoreResult<bool> {
        let mut conn = self.write.acquire().await?;
        insert_user(&mut conn, u).await
    }

    /// Imports users in one transaction: all of them or, on any failure, none. The caller
    /// has checked every line and that no id or email is taken; `false` (nothing imported) if
    /// one was taken meanwhile.
    pub async fn import_users(&self, users: &[NewUser<'_>]) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        for u in users {
            if !insert_user(&mut tx, u).await? {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Every (id, email) stored (an import checks its lines against them).
    pub async fn user_keys(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(q_as!("SELECT id, email FROM users")
            .fetch_all(&self.read)
            .await?)
    }

    /// Deletes the user with this email and, by cascade, their sessions and tokens. Their live
    /// sessions are revoked first, as any revocation of several (each row held, each with its
    /// event), so that every instance stops honouring their tokens, even after a restart (the
    /// events outlive the rows: crate::store::Store::recently_revoked_sessions).
    pub async fn delete_user_by_email(&self, email: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write.begin().await?;
        // On PostgreSQL the account's row first, as a deletion would take it: no session of it
        // opens meanwhile (its insert waits, then fails), and no rotation commits unseen.
        let sql = match self.dialect {
            Dialect::Postgres => "SELECT id FROM users WHERE email = $1 FOR UPDATE",
            Dialect::Sqlite => "SELECT id FROM users WHERE email = $1",
        };
        let Some(id): Option<String> = q_scalar!(sql, email).fetch_optional(&mut *tx).await? else {
            tx.rollback().await?;
            return Ok(false);
        };
        self.revoke_user_sessions_in(&mut tx, &id, None, RevokeReason::UserDeleted, now)
            .await?;
        let res = q!("DELETE FROM users WHERE id = $1", &id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(res.rows_affected() == 1)
    }

    /// The user and their password hash ("" when they have none).
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<(User, String)>> {
        let found = self.user_with_password(email).await?;
        Ok(found.map(|(user, hash, _)| (user, hash)))
    }

    /// The user, their password hash ("" when they have none), and its version (one more at
    /// each change or reset: [`Store::replace_password`]).
    pub async fn user_with_password(
        &self,
        email: &str,
    ) -> StoreResult<Option<(User, String, i64)>> {
        let sql = concat!(
            "SELECT ",
            user_columns!(),
            ", password_hash, password_version FROM users WHERE email = $1"
        );
        let row: Option<WithHash> = q_as!(sql, email).fetch_optional(&self.read).await?;
        Ok(row.map(|r| (r.user.into(), r.password_hash, r.password_version)))
    }

    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<User>> {
        // On every authenticated request: on the calling thread where it can be (`inline.rs`).
        if let Some(row) = self
            .inline
            .as_ref()
            .and_then(|i| i.user_row(USER_BY_ID, id))
        {
            return Ok(row.map(User::from));
        }
        self.find::<UserRow, _>(USER_BY_ID, id).await
    }

    /// `phone: Some(None)` clears the phone number.
    pub async fn update_profile(
        &self,
        id: &str,
        name: Option<&str>,
        phone: Option<Option<&str>>,
    ) -> StoreResult<Option<User>> {
        let sql = concat!(
            "UPDATE users SET name = COALESCE(CAST($1 AS TEXT), name),
                              phone = CASE WHEN $2 THEN CAST($3 AS TEXT) ELSE phone END
             WHERE id = $4 RETURNING ",
            user_columns!()
        );
        let row: Option<UserRow> = q_as!(sql, name, phone.is_some(), phone.flatten(), id)
            .fetch_optional(&self.write)
            .await?;
        Ok(row.map(Into::into))
    }

    /// Sets a user's password hash, the same password's in another format (a rehash; a legacy
    /// backend's first one is [`Store::set_legacy_password`]), its version unchanged; with
    /// `replacing`, only if the stored one is
    /// still that (a rehash must not undo a password change that happened meanwhile). Whether
    /// it wrote. A new password is [`Store::replace_password`].
    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: &str,
        replacing: Option<&str>,
    ) -> StoreResult<bool> {
        let sql = "UPDATE users SET password_hash = $1
                   WHERE id = $2 AND (CAST($3 AS TEXT) IS NULL OR password_hash = $3)";
        let res = q!(sql, hash, user_id, replacing)
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// A legacy backend's password for an account here that has none, in one write with its
    /// rule: only onto no password; unless the backend `vouched` for the address, not onto an
    /// account whose address a code proved here (mark 2: [`Store::set_email_verified`], or an
    /// ended stranger's password), and marked 1 (possibly a stranger's) while the address is
    /// unverified. Whether it wrote: a password set, or the address proved, meanwhile wins.
    pub async fn set_legacy_password(
        &self,
        user_id: &str,
        hash: &str,
        vouched: bool,
    ) -> StoreResult<bool> {
        let sql = "UPDATE users SET password_hash = $1,
                                    password_unproved = CASE WHEN $3 = 1 OR email_verified_at
                                                                 IS NOT NULL THEN 0 ELSE 1 END
                   WHERE id = $2 AND password_hash = '' AND ($3 = 1 OR password_unproved <> 2)";
        let res = q!(sql, hash, user_id, i64::from(vouched))
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Marks the address of `email` as the user's (the first time counts), proved by a code
    /// sent there: an account without a password is marked 2, so that an old backend's word
    /// that does not vouch for the address no longer sets one (whoever registered the address
    /// there would otherwise take the account its owner uses). Whether a user has that email.
    pub async fn set_email_verified(&self, email: &str, now: i64) -> StoreResult<bool> {
        let sql = "UPDATE users SET email_verified_at = COALESCE(email_verified_at, $1),
                                    password_unproved = CASE WHEN password_hash = ''
                                                              AND password_unproved = 0 THEN 2
                                                             ELSE password_unproved END
                   WHERE email = $2";
        Ok(q!(sql, now, email)
            .execute(&self.write)
            .await?
            .rows_affected()
            == 1)
    }

    /// Who chose the user's password: 0, its owner or the operator (or there is none); 1,
    /// someone who had not proved the address ([`NewUser::password_unproved`]); 2, such a
    /// password was ended when the address's owner proved it, and the old backend's word alone
    /// does not set one again. 0 for no such user.
    pub async fn password_mark(&self, user_id: &str) -> StoreResult<i64> {
        let sql = "SELECT password_unproved FROM users WHERE id = $1";
        let mark: Option<i64> = q_scalar!(sql, user_id).fetch_optional(&self.write).await?;
        Ok(mark.unwrap_or(0))
    }

    /// Whether a code of `/auth/email/verify` is sent to (and accepted for) the user's address:
    /// while it is unverified, or while the password may be a stranger's (mark 1: verified in
    /// a session of the account, the mark ends).
    pub async fn address_verifiable(&self, user: &User) -> StoreResult<bool> {
        Ok(Self::verifiable(user, self.password_mark(&user.id).await?))
    }

    /// [`Store::address_verifiable`], given the user's [`Store::password_mark`].
    pub fn verifiable(user: &User, mark: i64) -> bool {
        !user.email_verified || mark == 1
    }

    /// The address's owner proved the password is theirs too (a code from the address, sent
    /// in a session the password opened): its mark ends. Whether there was one.
    pub async fn password_owned(&self, user_id: &str) -> StoreResult<bool> {
        let sql = "UPDATE users SET password_unproved = 0 WHERE id = $1 AND password_unproved = 1";
        Ok(q!(sql, user_id).execute(&self.write).await?.rows_affected() == 1)
    }

    /// Replaces the claims (a JSON object, checked by the caller) and, when given, the roles of
    /// the user with this email. Whether there is one.
    pub async fn set_claims(
        &self,
        email: &str,
        claims: Option<&str>,
        roles: Option<&[String]>,
    ) -> StoreResult<bool> {
        let sql = "UPDATE users SET claims = COALESCE(CAST($1 AS TEXT), claims),
                                    roles = COALESCE(CAST($2 AS TEXT), roles)
                   WHERE email = $3";
        let roles = roles.map(|r| r.join(","));
        Ok(q!(sql, claims, roles, email)
            .execute(&self.write)
            .await?
            .rows_affected()
            == 1)
    }
}
