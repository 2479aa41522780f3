//! Sign-in with OpenID Connect providers (crate::oidc): the flows under way, the identities
//! providers vouch for, the sessions they opened, the logout tokens seen.

use sqlx::AnyConnection;

use super::dialect::{self, Dialect};
use super::sessions::revoke_each;
use super::users::insert_user;
use super::{NewUser, RevokeReason, Store, StoreResult, User};

/// A session opened by a provider's sign-in, as a logout token may name it.
#[derive(Debug, Clone, Copy)]
pub struct Federated<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    /// The provider's session (`sid`), if it said.
    pub idp_sid: Option<&'a str>,
}

/// `$1` issuer, `$2` subject, `$3` user id, `$4` provider name, `$5` now: a link, unless the
/// identity has one, or the user has another identity at that issuer through the same
/// provider (a registration gives a person one `sub` for good: another with the account's
/// address is someone else, who was given the address since). Through another provider of the
/// same issuer it may be the same person: Microsoft Entra ID gives each app registration its
/// own `sub`, so a new registration, under a new `--oidc` name, links its users again.
const LINK_IDENTITY: &str = "INSERT INTO user_identities
    (issuer, subject, user_id, provider, created_at)
    SELECT $1, $2, $3, $4, $5
    WHERE NOT EXISTS (SELECT 1 FROM user_identities
                      WHERE issuer = $1 AND user_id = $3 AND provider = $4)
    ON CONFLICT (issuer, subject) DO NOTHING";

/// What [`Store::create_linked_user`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    Created,
    /// Nothing: the address is another account's.
    AddressTaken,
    /// Nothing: another sign-in linked the identity first.
    IdentityTaken,
}

row! {
    /// A sign-in under way, as its start left it.
    #[derive(Debug, Clone)]
    pub struct Flow {
        pub provider: String,
        pub nonce: String,
        pub pkce_verifier: String,
        pub return_to: String,
        /// The callback URL the provider was given (the code exchange names it again).
        pub redirect_uri: String,
        pub dpop_jkt: Option<String>,
        pub expires_at: i64,
    }
}

/// A flow about to be stored.
pub struct NewFlow<'a> {
    pub state_hash: &'a str,
    pub binding_hash: &'a str,
    pub flow: &'a Flow,
    pub now: i64,
}

impl Store {
    pub async fn put_oidc_flow(&self, f: &NewFlow<'_>) -> StoreResult<()> {
        let sql =
            "INSERT INTO oidc_flows (state_hash, provider, binding_hash, nonce, pkce_verifier,
                                           return_to, redirect_uri, dpop_jkt, created_at,
                                           expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
        q!(
            sql,
            f.state_hash,
            &f.flow.provider,
            f.binding_hash,
            &f.flow.nonce,
            &f.flow.pkce_verifier,
            &f.flow.return_to,
            &f.flow.redirect_uri,
            f.flow.dpop_jkt.as_deref(),
            f.now,
            f.flow.expires_at
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Takes (deletes) the flow of `state_hash` if this browser (`binding_hash`) started it
    /// with `provider` and it is still live: a callback gets it once.
    pub async fn take_oidc_flow(
        &self,
        state_hash: &str,
        binding_hash: &str,
        provider: &str,
        now: i64,
    ) -> StoreResult<Option<Flow>> {
        // A state no flow has (anyone can send one, as often as they like, no limit applying)
        // is answered from the read pool: it never waits for SQLite's one writer, which a flood
        // of them would have kept from every sign-in and refresh.
        let sql = "SELECT count(*) FROM oidc_flows
                   WHERE state_hash = $1 AND binding_hash = $2 AND provider = $3";
        let known: i64 = q_scalar!(sql, state_hash, binding_hash, provider)
            .fetch_one(&self.read)
            .await?;
        if known == 0 {
            return Ok(None);
        }
        let sql = "DELETE FROM oidc_flows
                   WHERE state_hash = $1 AND binding_hash = $2 AND provider = $3
                   RETURNING provider, nonce, pkce_verifier, return_to, redirect_uri, dpop_jkt,
                             expires_at";
        let flow: Option<Flow> = q_as!(sql, state_hash, binding_hash, provider)
            .fetch_optional(&self.write)
            .await?;
        Ok(flow.filter(|f| f.expires_at > now))
    }

    /// The user a provider's (issuer, sub) is, if it is one's.
    pub async fn user_of_identity(&self, issuer: &str, subject: &str) -> StoreResult<Option<User>> {
        let sql = "SELECT user_id FROM user_identities WHERE issuer = $1 AND subject = $2";
        let id: Option<String> = q_scalar!(sql, issuer, subject)
            .fetch_optional(&self.read)
            .await?;
        match id {
            Some(id) => self.user_by_id(&id).await,
            None => Ok(None),
        }
    }

    /// Records that (issuer, sub) is `user`; `false` if that identity is already someone's, or
    /// `user` is another identity's at that issuer through `provider`.
    pub async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        user: &str,
        provider: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let res = q!(LINK_IDENTITY, issuer, subject, user, provider, now)
            .execute(&self.write)
            .await?;
        Ok(res.rows_affected() == 1)
    }

    /// A new account for a provider's identity, linked to it, in one transaction: a failure
    /// halfway leaves neither (an account left unlinked would hold the address the next
    /// sign-in of the identity needs, and refuse it for good).
    pub async fn create_linked_user(
        &self,
        u: &NewUser<'_>,
        issuer: &str,
        subject: &str,
        provider: &str,
    ) -> StoreResult<Linked> {
        let mut tx = self.write.begin().await?;
        if !insert_user(&mut tx, u).await? {
            // Two first sign-ins of one identity side by side give the same address: the one
            // that lost finds the other's link (its transaction committed, the insert waited).
            let sql = "SELECT count(*) FROM user_identities WHERE issuer = $1 AND subject = $2";
            let linked: i64 = q_scalar!(sql, issuer, subject).fetch_one(&mut *tx).await?;
            tx.rollback().await?;
            return Ok(if linked == 0 {
                Linked::AddressTaken
            } else {
                Linked::IdentityTaken
            });
        }
        let linked = q!(LINK_IDENTITY, issuer, subject, u.id, provider, u.now)
            .execute(&mut *tx)
            .await?;
        if linked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(Linked::IdentityTaken);
        }
        tx.commit().await?;
        Ok(Linked::Created)
    }

    /// A provider's logout: its logout token's `jti` recorded (until `until`) and the live
    /// sessions it names (by `subject` and/or `idp_sid`) revoked, each with its event, in one
    /// transaction: a failure halfway leaves the token unused, for the provider to send again
    /// (before, the retry was refused as a replay and the sessions left outlived the logout).
    /// `None`: the token was used already (a replay), nothing revoked.
    pub async fn provider_logout(
        &self,
        issuer: &str,
        jti: &str,
        until: i64,
        subject: Option<&str>,
        idp_sid: Option<&str>,
        now: i64,
    ) -> StoreResult<Option<Vec<String>>> {
        let mut tx = self.write.begin().await?;
        let sql = "INSERT INTO oidc_logout_tokens (issuer, jti, expires_at) VALUES ($1, $2, $3)
                   ON CONFLICT (issuer, jti) DO NOTHING";
        if q!(sql, issuer, jti, until)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            != 1
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let sql = match self.dialect {
            Dialect::Postgres => dialect::LOCK_PROVIDER_SESSIONS_PG,
            Dialect::Sqlite => dialect::PROVIDER_SESSIONS,
        };
        let ids: Vec<String> = q_scalar!(sql, issuer, subject, idp_sid)
            .fetch_all(&mut *tx)
            .await?;
        let reason = RevokeReason::ProviderLogout;
        let revoked = revoke_each(&mut tx, self.dialect, ids, reason, now).await?;
        tx.commit().await?;
        Ok(Some(revoked))
    }

    /// Ended sign-ins by the instance's clock `now` (gone early, one only fails); the logout
    /// tokens seen, a replay cache every instance relies on, up to `shared` (what
    /// [`Store::shared_now`] gives).
    pub(super) async fn purge_oidc(&self, now: i64, shared: i64) -> StoreResult<()> {
        q!("DELETE FROM oidc_flows WHERE expires_at < $1", now)
            .execute(&self.write)
            .await?;
        q!(
            "DELETE FROM oidc_logout_tokens WHERE expires_at < $1",
            shared
        )
        .execute(&self.write)
        .await?;
        Ok(())
    }
}

/// Records that `session` was opened by a provider's sign-in (in the transaction that opens it:
/// a logout token arriving a moment later finds it).
pub(super) async fn record_federated_session(
    conn: &mut AnyConnection,
    session: &str,
    f: &Federated<'_>,
) -> StoreResult<()> {
    let sql = "INSERT INTO federated_sessions (session_id, issuer, subject, idp_sid)
               VALUES ($1, $2, $3, $4)";
    q!(sql, session, f.issuer, f.subject, f.idp_sid)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::memory;
    use super::*;

    fn flow(expires_at: i64) -> Flow {
        Flow {
            provider: "idp".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            return_to: "/".into(),
            redirect_uri: "http://127.0.0.1/auth/oidc/idp/callback".into(),
            dpop_jkt: None,
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_flow_is_taken_once_by_the_browser_that_started_it_while_live() {
        let s = memory().await;
        let f = flow(200);
        let new = |state: &'static str| NewFlow {
            state_hash: state,
            binding_hash: "b",
            flow: &f,
            now: 100,
        };
        s.put_oidc_flow(&new("s1")).await.unwrap();
        assert!(
            s.take_oidc_flow("s1", "other", "idp", 100)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.take_oidc_flow("s1", "b", "other", 100)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            s.take_oidc_flow("s1", "b", "idp", 100)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            s.take_oidc_flow("s1", "b", "idp", 100)
                .await
                .unwrap()
                .is_none(),
            "once"
        );
        s.put_oidc_flow(&new("s2")).await.unwrap();
        assert!(
            s.take_oidc_flow("s2", "b", "idp", 200)
                .await
                .unwrap()
                .is_none(),
            "expired"
        );
    }

    #[tokio::test]
    async fn a_state_no_flow_has_never_waits_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("tw.db").display());
        let s = Store::connect(&url).await.unwrap();
        // SQLite's one writer, busy (a long write, or a flood of them queued).
        let held = s.write.acquire().await.unwrap();
        let take = s.take_oidc_flow("no-such-state", "b", "idp", 100);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(2), take).await;
        assert!(
            matches!(answer, Ok(Ok(None))),
            "waited for the writer, or failed"
        );
        drop(held);
        s.close().await;
    }

    #[tokio::test]
    async fn a_logout_token_counts_once() {
        let s = memory().await;
        let logout = async |issuer: &str| {
            let ended = s.provider_logout(issuer, "j", 10, Some("sub"), None, 1);
            ended.await.unwrap()
        };
        assert_eq!(logout("iss").await, Some(vec![]));
        assert_eq!(logout("iss").await, None, "a replay");
        assert_eq!(logout("other").await, Some(vec![]));
    }

    /// An account for a provider's identity is created with its link or not at all; a session
    /// the provider opened is the provider's from the moment it exists.
    #[tokio::test]
    async fn an_identity_gets_its_account_and_link_and_its_sessions_together() {
        let s = memory().await;
        let user = |id: &'static str, email: &'static str| NewUser {
            id,
            email,
            roles: &[],
            name: "n",
            password_hash: "",
            email_verified_at: None,
            password_unproved: false,
            claims: "{}",
            now: 1,
        };
        let create = async |u: NewUser<'_>, subject: &str| {
            s.create_linked_user(&u, "iss", subject, "idp")
                .await
                .unwrap()
        };
        assert_eq!(
            create(user("a", "a@x.test"), "sub-a").await,
            Linked::Created
        );
        assert_eq!(
            s.user_of_identity("iss", "sub-a")
                .await
                .unwrap()
                .unwrap()
                .id,
            "a"
        );
        // The address is another account's: nothing linked.
        assert_eq!(
            create(user("b", "a@x.test"), "sub-b").await,
            Linked::AddressTaken
        );
        assert!(s.user_of_identity("iss", "sub-b").await.unwrap().is_none());
        // The identity was linked meanwhile: no second account left behind without its link.
        assert_eq!(
            create(user("c", "c@x.test"), "sub-a").await,
            Linked::IdentityTaken
        );
        assert!(s.user_by_email("c@x.test").await.unwrap().is_none());
        // Two first sign-ins of one identity give one address: the second finds the link.
        let again = create(user("d", "a@x.test"), "sub-a").await;
        assert_eq!(again, Linked::IdentityTaken);

        let f = Federated {
            issuer: "iss",
            subject: "sub-a",
            idp_sid: Some("idp-session"),
        };
        let session = crate::store::NewSession {
            id: "s",
            user_id: "a",
            token_hash: "t",
            user_agent: "",
            now: 1,
            idle_expires_at: 1_000,
            absolute_expires_at: 1_000,
            dpop_jkt: None,
            amr: "fed",
            auth_time: 1,
            password_version: None,
            federated: Some(f),
            passkey: None,
        };
        let opened = s.create_session(&session).await.unwrap();
        assert_eq!(opened, crate::store::Created::Opened);
        let ended = s.provider_logout("iss", "j2", 10, None, Some("idp-session"), 2);
        assert_eq!(ended.await.unwrap(), Some(vec!["s".to_owned()]));
    }
}
