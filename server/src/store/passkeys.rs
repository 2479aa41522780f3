//! Passkeys (crate::passkeys): each account's WebAuthn user handle and passkeys, the
//! ceremonies between their two requests, the second-factor setting, and a session's proof of
//! who its user is (a step-up).

use super::dialect::{self, Dialect};
use super::{CodePurpose, RevokeReason, Store, StoreResult, User};

/// `$1`: a user's id. How many passkeys the account has (read under its row lock).
const COUNT_PASSKEYS: &str = "SELECT count(*) FROM passkeys WHERE user_id = $1";

/// What [`Store::add_passkey`], [`Store::delete_passkey`] or [`Store::set_second_factor`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Done,
    /// Nothing: the session asking has ended (a reset or a revocation came first).
    SessionEnded,
    /// Nothing: no such passkey of this account (a removal).
    NotFound,
    /// Nothing: the account's last passkey, and its second factor is required (a removal).
    LastFactor,
    /// Nothing: this credential is registered already (an addition).
    Registered,
    /// Nothing: the account holds the most passkeys it may (an addition).
    Full,
    /// Nothing: a second factor needs a passkey here, and the account has none.
    NoPasskey,
    /// Nothing: the setting was that already.
    Same,
}

/// The longest credential id an authenticator makes (WebAuthn L3 §6.5.1, `credentialIdLength`):
/// webauthn-rs takes up to 4096 bytes, which PostgreSQL's index on the id cannot hold (a 500),
/// and a removal's DPoP proof cannot name (its `htu` is at most 2048 bytes).
pub const MAX_CREDENTIAL_ID_BYTES: usize = 1023;
/// [`MAX_CREDENTIAL_ID_BYTES`] as an id is stored and named: base64url without padding. The
/// longer ones earlier versions stored are removed by migration 0016 (a test below ties the two).
pub const MAX_ID_CHARS: usize = (MAX_CREDENTIAL_ID_BYTES * 4).div_ceil(3);

/// The most passkeys an account holds.
pub const MAX_PASSKEYS: usize = 20;

/// `$1`: a session's id, `$2` its user's. Written (to nothing new) to hold the session's row: a
/// revocation side by side (a reset) waits for the transaction, or the transaction sees the
/// session ended.
const HOLD_LIVE_SESSION: &str = "UPDATE sessions SET version = version
     WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";

row! {
    /// A stored passkey.
    #[derive(Debug, Clone)]
    pub struct PasskeyRow {
        /// The credential id, base64url.
        pub id: String,
        pub user_id: String,
        pub name: String,
        /// `webauthn_rs::Passkey` as JSON.
        pub passkey: String,
        pub created_at: i64,
        pub last_used_at: Option<i64>,
    }
}

row! {
    /// A ceremony (or a password sign-in waiting for its second factor) as its first request left
    /// it.
    #[derive(Debug, Clone)]
    pub struct Ceremony {
        pub kind: String,
        pub user_id: Option<String>,
        pub session_id: Option<String>,
        pub dpop_jkt: Option<String>,
        /// The WebAuthn state (JSON), or "" when there is none (a second factor by code only).
        pub state: String,
        pub expires_at: i64,
        /// A password reset waiting for its passkey: the new password's hash, stored only once the
        /// passkey answers (the reset's code proved the mailbox alone).
        pub password_hash: Option<String>,
        /// A password sign-in waiting for its second factor: the version of the password it proved
        /// (it completes only while that is still the account's password).
        pub password_version: Option<i64>,
    }
}

/// The ceremony kind of a password sign-in waiting for its second factor.
pub const SECOND_FACTOR: &str = "second_factor";

/// A new password for [`Store::replace_password`], and what it ends.
pub struct NewPassword<'a> {
    pub user_id: &'a str,
    pub hash: &'a str,
    /// A change: the version of the password the caller proved, which must still be the
    /// account's; a reset replaces whichever.
    pub proved: Option<i64>,
    /// The session that goes on (a change, in the session it was made in; it must still be
    /// live); a reset keeps none.
    pub keep: Option<&'a str>,
    pub reason: RevokeReason,
    pub now: i64,
    /// The password ends as a stranger's (crate::sessions::Sessions::address_proved): marked
    /// so ([`Store::password_mark`] 2), and the passkeys and the second factor it may have set
    /// up go with it.
    pub disown: bool,
}

/// What [`Store::replace_password`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replaced {
    /// The new password's version, and the sessions ended.
    Done { version: i64, revoked: Vec<String> },
    /// Nothing: the password changed since the caller proved it, or its session ended.
    Stale,
}

impl Store {
    /// The account's WebAuthn user handle, made now (`new`) if it has none.
    pub async fn passkey_handle(&self, user_id: &str, new: &str) -> StoreResult<String> {
        let sql = "INSERT INTO passkey_users (user_id, handle) VALUES ($1, $2)
                   ON CONFLICT (user_id) DO NOTHING";
        q!(sql, user_id, new).execute(&self.write).await?;
        let sql = "SELECT handle FROM passkey_users WHERE user_id = $1";
        Ok(q_scalar!(sql, user_id).fetch_one(&self.write).await?)
    }

    /// The account of a WebAuthn user handle.
    pub async fn user_of_handle(&self, handle: &str) -> StoreResult<Option<User>> {
        let sql = "SELECT user_id FROM passkey_users WHERE handle = $1";
        let id: Option<String> = q_scalar!(sql, handle).fetch_optional(&self.read).await?;
        match id {
            Some(id) => self.user_by_id(&id).await,
            None => Ok(None),
        }
    }

    /// Begins a change of an account's passkeys or second factor asked for in `session`:
    /// under the account's row lock (SQLite's one writer; PostgreSQL's [`dialect::HOLD_USER_PG`],
    /// taken first, as [`Self::replace_password`] writes the account's row first), so that changes
    /// side by side each see the others; and only while `session` is live (held: a reset or a
    /// revocation that ends it waits for the change, or the change sees it ended, whatever an
    /// instance's view of revocations says). `None`: the session has ended.
    async fn change_of(
        &self,
        user_id: &str,
        session: &str,
    ) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Any>>> {
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            q!(dialect::HOLD_USER_PG, user_id).execute(&mut *tx).await?;
        }
        if q!(HOLD_LIVE_SESSION, session, user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            != 1
        {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }

    /// Adds a passkey registered in `session`, if that session is still live (a reset that
    /// ended it while the registration was under way would otherwise leave the passkey of
    /// whoever it ended), the credential is not registered already, and the account holds
    /// fewer than [`MAX_PASSKEYS`] (counted under its lock: registrations finished side by
    /// side cannot each see room).
    pub async fn add_passkey(&self, p: &PasskeyRow, session: &str) -> StoreResult<Change> {
        let Some(mut tx) = self.change_of(&p.user_id, session).await? else {
            return Ok(Change::SessionEnded);
        };
        let n: i64 = q_scalar!(COUNT_PASSKEYS, &p.user_id)
            .fetch_one(&mut *tx)
            .await?;
        if n >= MAX_PASSKEYS as i64 {
            tx.rollback().await?;
            return Ok(Change::Full);
        }
        let sql = "INSERT INTO passkeys (id, user_id, name, passkey, created_at)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
        let res = q!(sql, &p.id, &p.user_id, &p.name, &p.passkey, p.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(match res.rows_affected() {
            1 => Change::Done,
            _ => Change::Registered,
        })
    }

    pub async fn passkeys_of(&self, user_id: &str) -> StoreResult<Vec<PasskeyRow>> {
        let sql = "SELECT id, user_id, name, passkey, created_at, last_used_at FROM passkeys
                   WHERE user_id = $1 ORDER BY created_at, id";
        Ok(q_as!(sql, user_id).fetch_all(&self.write).await?)
    }

    pub async fn passkey(&self, id: &str) -> StoreResult<Option<PasskeyRow>> {
        let sql = "SELECT id, user_id, name, passkey, created_at, last_used_at FROM passkeys
                   WHERE id = $1";
        Ok(q_as!(sql, id).fetch_optional(&self.write).await?)
    }

    /// Saves a passkey after a use (its counter) if it is still stored as `before`, the state
    /// the use was checked against; whether it was. Not if another use was saved meanwhile
    /// (two sign-ins at once: the later write could store the lower counter, and a clone
    /// behind it would then pass), nor if it was removed.
    pub async fn passkey_used(
        &self,
        id: &str,
        before: &str,
        after: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let sql =
            "UPDATE passkeys SET passkey = $1, last_used_at = $2 WHERE id = $3 AND passkey = $4";
        let done = q!(sql, after, now, id, before).execute(&self.write).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes one of the user's passkeys, asked for in `session`, unless `keep_factor` and it
    /// is the last passkey of an account whose second factor is required. Checked and done as
    /// [`Self::change_of`] says: removals side by side, or a removal beside
    /// [`Self::set_second_factor`], cannot each see another passkey left. With it end the live
    /// sessions it signed in, `session` too if it is one (a session of an intruder's passkey
    /// that removes it would otherwise belong to no passkey, and live on): the ones it ended,
    /// or why nothing changed.
    pub async fn delete_passkey(
        &self,
        id: &str,
        user_id: &str,
        session: &str,
        keep_factor: bool,
        now: i64,
    ) -> StoreResult<Result<Vec<String>, Change>> {
        let Some(mut tx) = self.change_of(user_id, session).await? else {
            return Ok(Err(Change::SessionEnded));
        };
        let left: i64 = q_scalar!(COUNT_PASSKEYS, user_id)
            .fetch_one(&mut *tx)
            .await?;
        let sql = "SELECT second_factor FROM users WHERE id = $1";
        let required: Option<i64> = q_scalar!(sql, user_id).fetch_optional(&mut *tx).await?;
        let sql = "SELECT count(*) FROM passkeys WHERE id = $1 AND user_id = $2";
        let exists: i64 = q_scalar!(sql, id, user_id).fetch_one(&mut *tx).await?;
        if exists == 0 {
            tx.rollback().await?;
            return Ok(Err(Change::NotFound));
        }
        if keep_factor && required == Some(1) && left <= 1 {
            tx.rollback().await?;
            return Ok(Err(Change::LastFactor));
        }
        let sql = "DELETE FROM passkeys WHERE id = $1 AND user_id = $2";
        q!(sql, id, user_id).execute(&mut *tx).await?;
        let ended = self
            .revoke_passkey_sessions_in(&mut tx, user_id, id, now)
            .await?;
        tx.commit().await?;
        Ok(Ok(ended))
    }

    pub async fn put_ceremony(&self, id_hash: &str, c: &Ceremony) -> StoreResult<()> {
        let sql = "INSERT INTO webauthn_ceremonies
                     (id_hash, kind, user_id, session_id, dpop_jkt, state, expires_at,
                      password_hash, password_version)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        q!(
            sql,
            id_hash,
            &c.kind,
            c.user_id.as_deref(),
            c.session_id.as_deref(),
            c.dpop_jkt.as_deref(),
            &c.state,
            c.expires_at,
            c.password_hash.as_deref(),
            c.password_version
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Takes (deletes) a live ceremony of `kind`: its second request gets it once.
    pub async fn take_ceremony(
        &self,
        id_hash: &str,
        kind: &str,
        now: i64,
    ) -> StoreResult<Option<Ceremony>> {
        let sql = "DELETE FROM webauthn_ceremonies WHERE id_hash = $1 AND kind = $2
                   RETURNING kind, user_id, session_id, dpop_jkt, state, expires_at,
                             password_hash, password_version";
        let c: Option<Ceremony> = q_as!(sql, id_hash, kind)
            .fetch_optional(&self.write)
            .await?;
        Ok(c.filter(|c| c.expires_at > now))
    }

    pub async fn second_factor_required(&self, user_id: &str) -> StoreResult<bool> {
        let sql = "SELECT second_factor FROM users WHERE id = $1";
        let v: Option<i64> = q_scalar!(sql, user_id).fetch_optional(&self.read).await?;
        Ok(v == Some(1))
    }

    /// Sets whether the account's password sign-ins need a second factor, asked for in
    /// `session`; with `needs_passkey`, turning it on needs a passkey of the account. As
    /// [`Self::change_of`] says, as [`Self::delete_passkey`].
    pub async fn set_second_factor(
        &self,
        user_id: &str,
        session: &str,
        required: bool,
        needs_passkey: bool,
    ) -> StoreResult<Change> {
        let Some(mut tx) = self.change_of(user_id, session).await? else {
            return Ok(Change::SessionEnded);
        };
        if required && needs_passkey {
            let n: i64 = q_scalar!(COUNT_PASSKEYS, user_id)
                .fetch_one(&mut *tx)
                .await?;
            if n == 0 {
                tx.rollback().await?;
                return Ok(Change::NoPasskey);
            }
        }
        let sql = "UPDATE users SET second_factor = $1 WHERE id = $2 AND second_factor <> $1";
        let changed = q!(sql, i64::from(required), user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(if changed == 0 {
            Change::Same
        } else {
            Change::Done
        })
    }

    /// Records a step-up in a live session: its user proved who they are at `now`, with
    /// `amr` (space-separated). Whether the session is live.
    pub async fn set_session_auth(
        &self,
        session_id: &str,
        now: i64,
        amr: &str,
    ) -> StoreResult<bool> {
        let sql = "UPDATE sessions SET auth_time = $1, amr = $2, version = version + 1
                   WHERE id = $3 AND revoked_at IS NULL";
        Ok(q!(sql, now, amr, session_id)
            .execute(&self.write)
            .await?
            .rows_affected()
            == 1)
    }

    /// How a live session's user last proved who they are: (auth_time or creation, amr);
    /// `None` once it has ended.
    pub async fn session_auth(
        &self,
        session_id: &str,
    ) -> StoreResult<Option<(Option<i64>, i64, String)>> {
        let sql = "SELECT auth_time, created_at, amr FROM sessions
                   WHERE id = $1 AND revoked_at IS NULL";
        Ok(q_as!(sql, session_id).fetch_optional(&self.read).await?)
    }

    /// A new password (its version one more), in one transaction with what it ends (a
    /// failure halfway leaves the old password and everything it opened, never a new password
    /// beside the old sessions): the account's sign-ins still waiting for a second factor
    /// after a password (the password they proved is no longer the account's), its live
    /// sessions but `keep`, each with its event, and for a reset its other resets still
    /// waiting for their passkey (completed later, one would put back an older password). A
    /// change drops no reset: whoever holds the password and the mailbox (a sign-in with an
    /// emailed second factor) could otherwise cancel the owner's reset by the passkey again
    /// and again. The account's row is written first: on PostgreSQL a sign-in opening a
    /// session of the old password holds it ([`Store::create_session`]), so one of the two
    /// sees the other.
    pub async fn replace_password(&self, new: &NewPassword<'_>) -> StoreResult<Replaced> {
        let mut tx = self.write.begin().await?;
        // A reset (nothing kept: the mailbox proved) ends an unproved password's mark; a change
        // keeps it (the stranger who chose one cannot launder it by changing it).
        let sql = "UPDATE users SET password_hash = $1, password_version = password_version + 1,
                                    password_unproved = CASE WHEN $5 THEN 2 WHEN $4 THEN 0
                                                             ELSE password_unproved END,
                                    second_factor = CASE WHEN $5 THEN 0 ELSE second_factor END
                   WHERE id = $2 AND (CAST($3 AS BIGINT) IS NULL OR password_version = $3)
                   RETURNING password_version";
        let version: Option<i64> = q_scalar!(
            sql,
            new.hash,
            new.user_id,
            new.proved,
            new.keep.is_none(),
            new.disown
        )
        .fetch_optional(&mut *tx)
        .await?;
        let live = match (new.keep, self.dialect) {
            (None, _) => true,
            // Every live session of the account held, the kept one with them, in the order of
            // their ids (as every revocation of several takes them: no lock cycle), then the
            // kept one checked: a revocation of it side by side waits for this, or this sees it
            // ended.
            (Some(keep), Dialect::Postgres) => {
                let held: Vec<String> =
                    q_scalar!(dialect::LOCK_USER_SESSIONS_PG, new.user_id, None::<&str>)
                        .fetch_all(&mut *tx)
                        .await?;
                held.iter().any(|id| id == keep)
            }
            // SQLite's one writer: nothing runs beside this.
            (Some(keep), Dialect::Sqlite) => {
                let sql = "SELECT count(*) FROM sessions WHERE id = $1 AND revoked_at IS NULL";
                let n: i64 = q_scalar!(sql, keep).fetch_one(&mut *tx).await?;
                n == 1
            }
        };
        let (Some(version), true) = (version, live) else {
            tx.rollback().await?;
            return Ok(Replaced::Stale);
        };
        let resets = new.reason == RevokeReason::PasswordReset;
        let sql = "DELETE FROM webauthn_ceremonies
                   WHERE user_id = $1 AND (kind = $2 OR ($3 = 1 AND password_hash IS NOT NULL)
                                           OR $4 = 1)";
        q!(
            sql,
            new.user_id,
            SECOND_FACTOR,
            i64::from(resets),
            i64::from(new.disown)
        )
        .execute(&mut *tx)
        .await?;
        let revoked = self
            .revoke_user_sessions_in(&mut tx, new.user_id, new.keep, new.reason, new.now)
            .await?;
        // A change keeps the reset codes, as it keeps the resets waiting for their passkey.
        let but = new.keep.map(|_| CodePurpose::ResetPassword);
        Store::revoke_user_codes_in(&mut tx, new.user_id, but, new.now).await?;
        // After the sessions are ended: a registration that held one of them (PostgreSQL) has
        // committed its passkey by now, and this sees it; one after sees its session ended.
        if new.disown {
            q!("DELETE FROM passkeys WHERE user_id = $1", new.user_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Replaced::Done { version, revoked })
    }

    pub async fn purge_ceremonies(&self, now: i64) -> StoreResult<()> {
        let sql = "DELETE FROM webauthn_ceremonies WHERE expires_at < $1";
        q!(sql, now).execute(&self.write).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::memory;
    use super::*;
    use crate::store::Created;

    /// Migration 0016 removes the passkeys whose credential id no authenticator makes (longer
    /// than [`MAX_ID_CHARS`], the bound registrations now keep), which earlier
    /// versions stored and their owners could not remove; the longest an authenticator makes
    /// stays. Both backends' files say the same bound.
    #[tokio::test]
    async fn migration_0016_removes_the_credential_ids_no_authenticator_makes() {
        let bound = MAX_ID_CHARS;
        let sql = include_str!("../../migrations/0016_passkey_id_bound.sql");
        assert!(
            sql.contains(&format!("WHERE length(id) > {bound};")),
            "{sql}"
        );
        // PostgreSQL's is the same file (a link, as for other migrations both run as written).
        let twin = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/migrations-postgres/0016_passkey_id_bound.sql"
        );
        assert_eq!(
            std::fs::read_link(twin).unwrap(),
            std::path::Path::new("../migrations/0016_passkey_id_bound.sql")
        );
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tw.db").display());
        let s = Store::connect(&url).await.unwrap();
        super::super::tests::ada(&s).await;
        for id in ["A".repeat(bound), "B".repeat(bound + 1), "C".repeat(5462)] {
            sqlx::query(
                "INSERT INTO passkeys (id, user_id, name, passkey, created_at) \
                 VALUES ($1, 'u1', 'p', '{}', 1000)",
            )
            .bind(id)
            .execute(&s.write)
            .await
            .unwrap();
        }
        // As a database of a version before 0016: the migration runs at the next start.
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 16")
            .execute(&s.write)
            .await
            .unwrap();
        s.close().await;
        let s = Store::connect(&url).await.unwrap();
        let left: Vec<String> = s
            .passkeys_of("u1")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(left, ["A".repeat(bound)]);
        s.close().await;
    }

    #[tokio::test]
    async fn a_ceremony_is_taken_once_while_live_and_only_as_its_kind() {
        let s = memory().await;
        let c = Ceremony {
            kind: "login".into(),
            user_id: None,
            session_id: None,
            dpop_jkt: None,
            state: "{}".into(),
            expires_at: 200,
            password_hash: None,
            password_version: None,
        };
        s.put_ceremony("a", &c).await.unwrap();
        assert!(
            s.take_ceremony("a", "register", 100)
                .await
                .unwrap()
                .is_none()
        );
        assert!(s.take_ceremony("a", "login", 100).await.unwrap().is_some());
        assert!(
            s.take_ceremony("a", "login", 100).await.unwrap().is_none(),
            "once"
        );
        s.put_ceremony("b", &c).await.unwrap();
        assert!(
            s.take_ceremony("b", "login", 200).await.unwrap().is_none(),
            "expired"
        );
    }

    /// A new password and what it ends are one transaction: a failure halfway (here a
    /// trigger refusing the sessions' update) leaves the old password, the sessions and the
    /// pending sign-ins; then a change ends the sign-ins waiting after the old password and
    /// the other sessions, and a reset ends the waiting resets and every session too.
    #[tokio::test]
    async fn a_new_password_ends_sessions_and_pending_sign_ins_all_or_nothing() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        let pending = |kind: &str, reset: Option<&str>| Ceremony {
            kind: kind.into(),
            user_id: Some("u".into()),
            session_id: None,
            dpop_jkt: None,
            state: String::new(),
            expires_at: 1_000,
            password_hash: reset.map(Into::into),
            password_version: None,
        };
        let put = async |id: &str, c: &Ceremony| s.put_ceremony(id, c).await.unwrap();
        put("sign-in", &pending(SECOND_FACTOR, None)).await;
        put("reset", &pending("second_factor_after_code", Some("reset"))).await;
        put("code sign-in", &pending("second_factor_after_code", None)).await;
        let left = async || {
            let sql = "SELECT id_hash FROM webauthn_ceremonies ORDER BY id_hash";
            let ceremonies: Vec<String> = q_scalar!(sql).fetch_all(&s.read).await.unwrap();
            (password_of(&s).await, live(&s).await, ceremonies)
        };
        let before = left().await;
        let refuse = "CREATE TRIGGER refuse BEFORE UPDATE ON sessions
                      BEGIN SELECT RAISE(ABORT, 'refused'); END";
        q!(refuse).execute(&s.write).await.unwrap();
        let new = change("new", Some(0), Some("here"));
        assert!(s.replace_password(&new).await.is_err());
        assert_eq!(left().await, before, "nothing done");
        q!("DROP TRIGGER refuse").execute(&s.write).await.unwrap();

        assert_eq!(s.replace_password(&new).await.unwrap(), done(1, &["there"]));
        let (password, sessions, ceremonies) = left().await;
        assert_eq!(
            (password, &sessions[..]),
            (("new".into(), 1), &["here".to_owned()][..])
        );
        assert_eq!(
            ceremonies,
            ["code sign-in", "reset"],
            "a change drops no reset"
        );

        let mut reset = change("newer", None, None);
        reset.reason = RevokeReason::PasswordReset;
        assert_eq!(
            s.replace_password(&reset).await.unwrap(),
            done(2, &["here"])
        );
        let (password, sessions, ceremonies) = left().await;
        assert_eq!(password, ("newer".into(), 2));
        assert!(sessions.is_empty());
        assert_eq!(ceremonies, ["code sign-in"]);
    }

    /// The races of a password against a reset, performed in the order that lost before: a
    /// change that proved the old password, committed after a reset, undid it (the thief's
    /// password back, the owner's new session ended); a sign-in that proved the old password
    /// and opened its session after the reset committed kept a session the reset never saw.
    #[tokio::test]
    async fn a_change_or_a_sign_in_of_a_replaced_password_changes_and_opens_nothing() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        // Both prove version 0; then the owner's reset commits.
        let mut reset = change("owner's", None, None);
        reset.reason = RevokeReason::PasswordReset;
        assert_eq!(
            s.replace_password(&reset).await.unwrap(),
            done(1, &["here", "there"])
        );
        let owner = session("owner", Some(1));
        assert_eq!(s.create_session(&owner).await.unwrap(), Created::Opened);
        // The thief's change of version 0, from a session the reset ended: nothing.
        let theirs = change("thief's", Some(0), Some("here"));
        assert_eq!(s.replace_password(&theirs).await.unwrap(), Replaced::Stale);
        // Of the right version but from an ended session: nothing either.
        let theirs = change("thief's", Some(1), Some("here"));
        assert_eq!(s.replace_password(&theirs).await.unwrap(), Replaced::Stale);
        assert_eq!(password_of(&s).await, ("owner's".into(), 1));
        assert_eq!(live(&s).await, ["owner"]);
        // The thief's sign-in of version 0: no session.
        let late = session("late", Some(0));
        assert_eq!(
            s.create_session(&late).await.unwrap(),
            Created::PasswordChanged
        );
        assert_eq!(live(&s).await, ["owner"]);
        // A sign-in that proved no password (a code, a passkey) opens as before.
        let by_code = session("by code", None);
        assert_eq!(s.create_session(&by_code).await.unwrap(), Created::Opened);
    }

    /// A stranger's password ended by the address's owner (crate::sessions::Sessions::
    /// address_proved) takes with it what the stranger set up with it: the passkeys, the
    /// second factor, the sign-ins under way; and it is marked so.
    #[tokio::test]
    async fn a_disowned_password_takes_its_passkeys_and_second_factor() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        let added = s.add_passkey(&row("strangers", "{}"), "here").await;
        assert_eq!(added.unwrap(), Change::Done);
        let set = s.set_second_factor("u", "here", true, true).await;
        assert_eq!(set.unwrap(), Change::Done);
        let disown = NewPassword {
            reason: RevokeReason::PasswordReset,
            disown: true,
            ..change("", None, None)
        };
        assert_eq!(
            s.replace_password(&disown).await.unwrap(),
            done(1, &["here", "there"])
        );
        assert!(s.passkeys_of("u").await.unwrap().is_empty());
        assert!(!s.second_factor_required("u").await.unwrap());
        assert_eq!(s.password_mark("u").await.unwrap(), 2);
        assert_eq!(password_of(&s).await, (String::new(), 1));
    }

    #[tokio::test]
    async fn a_use_is_saved_only_over_the_state_it_was_checked_against() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        let (at5, at7, at6) = (
            r#"{"cred":{"counter":5}}"#,
            r#"{"cred":{"counter":7}}"#,
            r#"{"cred":{"counter":6}}"#,
        );
        let added = s.add_passkey(&row("a", at5), "here").await;
        assert_eq!(added.unwrap(), Change::Done);
        // Two uses checked against 5: the one saved first wins, the other changes nothing.
        assert!(s.passkey_used("a", at5, at7, 10).await.unwrap());
        assert!(!s.passkey_used("a", at5, at6, 11).await.unwrap());
        let stored = s.passkey("a").await.unwrap().unwrap();
        assert_eq!(
            (stored.passkey.as_str(), stored.last_used_at),
            (at7, Some(10))
        );
        assert!(!s.passkey_used("gone", at7, at6, 12).await.unwrap());
    }

    /// A registration that finishes after its session ended (a reset side by side) adds no
    /// passkey: the thief's registration under way would otherwise outlive the reset. Nor does
    /// an ended session remove one or change the second factor, whatever an instance's view of
    /// revocations says; nor a session of another account.
    #[tokio::test]
    async fn a_passkey_is_added_only_in_a_live_session() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        let added = s.add_passkey(&row("a", "{}"), "here").await;
        assert_eq!(added.unwrap(), Change::Done);
        let again = s.add_passkey(&row("a", "{}"), "here").await;
        assert_eq!(again.unwrap(), Change::Registered);
        let elsewhere = s
            .set_second_factor("someone else", "there", true, false)
            .await;
        assert_eq!(elsewhere.unwrap(), Change::SessionEnded);
        let reset = NewPassword {
            reason: RevokeReason::PasswordReset,
            ..change("new", None, None)
        };
        assert!(matches!(
            s.replace_password(&reset).await.unwrap(),
            Replaced::Done { .. }
        ));
        let late = s.add_passkey(&row("b", "{}"), "here").await;
        assert_eq!(late.unwrap(), Change::SessionEnded);
        let removal = s.delete_passkey("a", "u", "here", false, 2).await;
        assert_eq!(removal.unwrap(), Err(Change::SessionEnded));
        let setting = s.set_second_factor("u", "here", true, false).await;
        assert_eq!(setting.unwrap(), Change::SessionEnded);
        assert!(!s.second_factor_required("u").await.unwrap());
        assert_eq!(s.passkeys_of("u").await.unwrap().len(), 1);
        assert!(s.passkey("b").await.unwrap().is_none());
    }

    /// A sign-in by a passkey removed meanwhile opens no session: it would be nobody's to end.
    #[tokio::test]
    async fn a_session_of_a_passkey_removed_meanwhile_is_not_opened() {
        let s = memory().await;
        alice_and_two_sessions(&s).await;
        assert_eq!(
            s.add_passkey(&row("a", "{}"), "here").await.unwrap(),
            Change::Done
        );
        let removed = s.delete_passkey("a", "u", "here", false, 2).await.unwrap();
        assert_eq!(removed, Ok(vec![]));
        let late = crate::store::NewSession {
            passkey: Some("a"),
            ..session("late", None)
        };
        assert_eq!(
            s.create_session(&late).await.unwrap(),
            Created::PasskeyRemoved
        );
    }

    fn change<'a>(hash: &'a str, proved: Option<i64>, keep: Option<&'a str>) -> NewPassword<'a> {
        NewPassword {
            user_id: "u",
            hash,
            proved,
            keep,
            reason: RevokeReason::PasswordChanged,
            now: 2,
            disown: false,
        }
    }

    /// Alice's passkey `id`, stored as `passkey`.
    fn row(id: &str, passkey: &str) -> PasskeyRow {
        PasskeyRow {
            id: id.into(),
            user_id: "u".into(),
            name: "n".into(),
            passkey: passkey.into(),
            created_at: 1,
            last_used_at: None,
        }
    }

    fn done(version: i64, revoked: &[&str]) -> Replaced {
        let revoked = revoked.iter().map(|s| (*s).to_owned()).collect();
        Replaced::Done { version, revoked }
    }

    fn session(id: &str, password_version: Option<i64>) -> crate::store::NewSession<'_> {
        crate::store::NewSession {
            id,
            user_id: "u",
            token_hash: id,
            user_agent: "",
            now: 1,
            idle_expires_at: 1_000,
            absolute_expires_at: 1_000,
            dpop_jkt: None,
            amr: "pwd",
            auth_time: 1,
            password_version,
            federated: None,
            passkey: None,
        }
    }

    async fn alice_and_two_sessions(s: &Store) {
        let user = crate::store::NewUser {
            id: "u",
            email: "u@example.com",
            roles: &[],
            name: "u",
            password_hash: "old",
            email_verified_at: Some(1),
            password_unproved: false,
            claims: "{}",
            now: 1,
        };
        s.create_user(&user).await.unwrap();
        for id in ["here", "there"] {
            let opened = s.create_session(&session(id, Some(0))).await.unwrap();
            assert_eq!(opened, Created::Opened);
        }
    }

    async fn password_of(s: &Store) -> (String, i64) {
        let found = s.user_with_password("u@example.com").await.unwrap();
        found.map(|(_, hash, version)| (hash, version)).unwrap()
    }

    async fn live(s: &Store) -> Vec<String> {
        let mut ids: Vec<String> = s
            .live_sessions("u", 2)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        ids.sort();
        ids
    }
}
