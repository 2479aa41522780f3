//! Sessions: the one place a session begins, rotates and ends, whatever signed the user in
//! (a password, an emailed code, and the sign-in methods to come).
//!
//! - [`Sessions::open`] makes the refresh token, stores the session bound to its DPoP key in
//!   one statement (a key already bound refuses the second sign-in, whatever the timing),
//!   issues the access token and tells the observers.
//! - [`Sessions::present`] and [`Sessions::rotate`] are a refresh: the presented token is read
//!   without a lock, the caller checks its DPoP proof, then the rotation is planned once
//!   (`rotation::plan`, pure) and the store executes the plan on the version it read; a lost
//!   race reads and plans again, and repeated losses take the session's lock.
//! - [`Sessions::revoke`], [`Sessions::logout`]: revocations, mirrored in memory at once so
//!   that this instance refuses the session's access tokens (other instances hear the event).
//!
//! Every change is an [`Event`] for the observers: the audit log, and in test builds counters.

use std::sync::Arc;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::clock::Clock;
use crate::cookies;
use crate::error::ApiError;
use crate::keys::Keys;
use crate::revoked::Revoked;
use crate::rotation::{self, Plan, Policy};
use crate::store::oidc::Federated;
use crate::store::{
    Applied, Authentication, Created, NewPassword, NewSession, Presentation, PresentedToken,
    Replaced, RevokeReason, SessionRow, Store, User,
};
use crate::throttle::Throttle;
use crate::tokens::{self, AccessClaims, Audience, hash_refresh_token, random_token};

/// Optimistic rotations tried before taking the session's lock.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// How a user signed in (the audit log's `event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    Password,
    EmailCode,
    /// The code of a sign-up came back: the account was just created.
    SignUp,
    /// The code of a password reset came back, with the new password.
    PasswordReset,
    /// An OpenID Connect provider vouched for the user (crate::oidc).
    Provider,
    /// A passkey (crate::passkeys), with user verification.
    Passkey,
    /// The password, then a passkey as the second factor.
    PasswordAndPasskey,
    /// The password, then an emailed code as the second factor.
    PasswordAndCode,
    /// An emailed code (a code sign-in or a reset), then a passkey as the second factor.
    CodeAndPasskey,
}

impl SignIn {
    pub fn as_str(self) -> &'static str {
        match self {
            SignIn::Password => "login",
            SignIn::EmailCode => "otp_login",
            SignIn::SignUp => "signup",
            SignIn::PasswordReset => "password_reset",
            SignIn::Provider => "oidc_login",
            SignIn::Passkey => "passkey_login",
            SignIn::PasswordAndPasskey => "login_passkey_2fa",
            SignIn::PasswordAndCode => "login_code_2fa",
            SignIn::CodeAndPasskey => "otp_passkey_2fa",
        }
    }

    /// How the user proved who they are, as RFC 8176 `amr` values (space-separated).
    pub fn amr(self) -> &'static str {
        match self {
            SignIn::Password => "pwd",
            SignIn::EmailCode | SignIn::SignUp | SignIn::PasswordReset => "otp",
            SignIn::Provider => "fed",
            SignIn::Passkey => "hwk mfa",
            SignIn::PasswordAndPasskey => "pwd hwk mfa",
            SignIn::PasswordAndCode => "pwd otp mfa",
            SignIn::CodeAndPasskey => "otp hwk mfa",
        }
    }
}

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    Opened {
        user: &'a str,
        session: &'a str,
        how: SignIn,
    },
    Rotated {
        session: &'a str,
    },
    /// A refresh token was reused: the session was revoked.
    Reused {
        user: &'a str,
        session: &'a str,
    },
    /// Revoked by a logout or by its user.
    Revoked {
        session: &'a str,
        reason: RevokeReason,
    },
}

/// Told about every [`Event`].
pub type Observer = Arc<dyn Fn(&Event<'_>) + Send + Sync>;

/// Lifetimes and limits of sessions.
#[derive(Debug, Clone)]
pub struct SessionPolicy {
    pub access_ttl: i64,
    pub idle_ttl: i64,
    pub absolute_ttl: i64,
    pub leeway: i64,
    pub rotation: Policy,
    pub refresh_ip_per_minute: u32,
    pub refresh_session_per_minute: u32,
}

#[derive(Clone)]
pub struct Sessions(Arc<Inner>);

struct Inner {
    store: Store,
    keys: Keys,
    clock: Clock,
    audience: Audience,
    revoked: Arc<Revoked>,
    policy: SessionPolicy,
    ip_limiter: Throttle,
    session_limiter: Throttle,
    observers: Vec<Observer>,
    known: Arc<crate::password::KnownBrowsers>,
}

/// Tokens for the client: the body of a sign-in or refresh and its cookies.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    /// Bound to a DPoP key (`token_type: "DPoP"`).
    pub bound: bool,
    pub expires_in: i64,
    pub refresh_token: String,
    /// The refresh cookie's `Max-Age`.
    pub refresh_max_age: i64,
    pub session_id: String,
    /// A sign-in's `Set-Cookie` that makes the browser known to the account
    /// (crate::password::KnownBrowsers); none for a refresh.
    pub known_browser: Option<String>,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
}

impl IntoResponse for Issued {
    fn into_response(self) -> Response {
        let mut res = Json(TokenResponse {
            access_token: &self.access_token,
            token_type: if self.bound { "DPoP" } else { "Bearer" },
            expires_in: self.expires_in,
        })
        .into_response();
        let headers = res.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if let Some(known) = &self.known_browser {
            cookies::append(&mut res, known);
        }
        cookies::set(res, &self.refresh_token, self.refresh_max_age)
    }
}

/// A refresh token as presented: its hash and what the store holds for it.
pub struct Presented {
    hash: String,
    found: PresentedToken,
}

impl Presented {
    /// The DPoP key the token's session is bound to, if any.
    pub fn bound_to(&self) -> Option<&str> {
        self.found.dpop_jkt.as_deref()
    }
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        keys: Keys,
        clock: Clock,
        audience: Audience,
        revoked: Arc<Revoked>,
        policy: SessionPolicy,
        observers: Vec<Observer>,
        known: Arc<crate::password::KnownBrowsers>,
    ) -> Self {
        Sessions(Arc::new(Inner {
            known,
            ip_limiter: Throttle::narrow("refresh-ip", policy.refresh_ip_per_minute),
            session_limiter: Throttle::narrow("refresh-session", policy.refresh_session_per_minute),
            store,
            keys,
            clock,
            audience,
            revoked,
            policy,
            observers,
        }))
    }

    fn tell(&self, event: Event<'_>) {
        for o in &self.0.observers {
            o(&event);
        }
    }

    /// How long this instance refuses a revoked session's access tokens: until they expire.
    fn refuse_tokens_of(&self, session_id: &str) {
        let p = &self.0.policy;
        self.0.revoked.revoke_session(
            session_id.to_owned(),
            self.0.clock.now() + p.access_ttl + p.leeway,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        user: &User,
        session_id: &str,
        refresh_token: String,
        refresh_expires_at: i64,
        jkt: Option<&str>,
        now: i64,
        auth: &Authentication,
    ) -> Result<Issued, ApiError> {
        let ring = self.0.keys.current();
        // No longer than the session: a token issued a moment before the absolute end (or an
        // idle end nearer than the TTL) outlived it by up to the TTL, out of the user's list
        // of sessions and so out of reach of its revoke.
        let ttl = self
            .0
            .policy
            .access_ttl
            .min(refresh_expires_at - now)
            .max(1);
        let subject = tokens::Subject {
            user,
            session_id,
            jkt,
            auth: Some(auth),
        };
        let (access_token, _) = tokens::issue(&ring, &self.0.audience, &subject, now, ttl)?;
        Ok(Issued {
            access_token,
            bound: jkt.is_some(),
            expires_in: ttl,
            refresh_token,
            refresh_max_age: (refresh_expires_at - now).max(0),
            session_id: session_id.to_owned(),
            known_browser: None,
        })
    }

    /// Starts a session for `user`, bound to the DPoP key `jkt` when the sign-in carried a
    /// proof. A key already bound to a session is refused (the swap attack in
    /// docs/PROTOCOL.md, "One key per login"), atomically: two sign-ins with one key at the
    /// same moment open one session at most.
    pub async fn open(
        &self,
        user: &User,
        user_agent: &str,
        jkt: Option<&str>,
        how: SignIn,
    ) -> Result<Issued, ApiError> {
        self.open_proved(user, user_agent, jkt, how, None).await
    }

    /// As [`Self::open`], for a sign-in that proved the password of version `password` (or set
    /// it): refused (`invalid_credentials`) if a change or reset replaced it meanwhile, which
    /// ended every session and would not have seen this one.
    pub async fn open_proved(
        &self,
        user: &User,
        user_agent: &str,
        jkt: Option<&str>,
        how: SignIn,
        password: Option<i64>,
    ) -> Result<Issued, ApiError> {
        self.open_as(user, user_agent, jkt, how, password, None, None)
            .await
    }

    /// As [`Self::open_proved`], for a sign-in a passkey may have completed (by itself or as
    /// the second factor): the session is recorded as that passkey's, and ends when it is
    /// removed. 401 `invalid_credentials` if it was removed meanwhile.
    pub async fn open_by_passkey(
        &self,
        user: &User,
        user_agent: &str,
        jkt: Option<&str>,
        how: SignIn,
        password: Option<i64>,
        passkey: Option<&str>,
    ) -> Result<Issued, ApiError> {
        self.open_as(user, user_agent, jkt, how, password, None, passkey)
            .await
    }

    /// As [`Self::open`], for a provider's sign-in: the session is recorded as the provider's
    /// with it, for the provider's logout tokens. The user proved who they are when the
    /// provider's `auth_time` says; if it does not say, not recently (the session's `auth_time`
    /// is 0, and its tokens carry none): a provider that signs its user in without asking would
    /// otherwise give a script in the page, which can start a sign-in of its own, a session
    /// recent enough to add its own passkey.
    pub async fn open_federated(
        &self,
        user: &User,
        user_agent: &str,
        jkt: Option<&str>,
        federated: Federated<'_>,
        auth_time: Option<i64>,
    ) -> Result<Issued, ApiError> {
        self.open_as(
            user,
            user_agent,
            jkt,
            SignIn::Provider,
            None,
            Some((federated, auth_time.unwrap_or(0))),
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_as(
        &self,
        user: &User,
        user_agent: &str,
        jkt: Option<&str>,
        how: SignIn,
        password: Option<i64>,
        federated: Option<(Federated<'_>, i64)>,
        passkey: Option<&str>,
    ) -> Result<Issued, ApiError> {
        let now = self.0.clock.now();
        // When the user proved who they are: now, or when the provider says.
        let (federated, auth_time) = match federated {
            Some((f, at)) => (Some(f), at.min(now)),
            None => (None, now),
        };
        let p = &self.0.policy;
        let refresh = random_token();
        let id = tokens::random_id();
        let absolute_expires_at = now + p.absolute_ttl;
        let idle_expires_at = (now + p.idle_ttl).min(absolute_expires_at);
        let user_agent: String = user_agent.chars().take(256).collect();
        let opened = self
            .0
            .store
            .create_session(&NewSession {
                id: &id,
                user_id: &user.id,
                token_hash: &hash_refresh_token(&refresh),
                user_agent: &user_agent,
                now,
                idle_expires_at,
                absolute_expires_at,
                dpop_jkt: jkt,
                amr: how.amr(),
                auth_time,
                password_version: password,
                federated,
                passkey,
            })
            .await?;
        match opened {
            Created::Opened => {}
            Created::KeyInUse => {
                return Err(ApiError::DpopProof(tokenwarden_dpop::ProofError::KeyInUse));
            }
            Created::PasswordChanged | Created::PasskeyRemoved => {
                return Err(ApiError::InvalidCredentials);
            }
        }
        tracing::info!(target: "audit", event = how.as_str(), user = %user.id, session = %id);
        self.tell(Event::Opened {
            user: &user.id,
            session: &id,
            how,
        });
        let auth = Authentication::from_row(Some(auth_time), now, how.amr());
        let issued = self.issue(user, &id, refresh, idle_expires_at, jkt, now, &auth)?;
        // Whoever signed in, by any way, is not guessing the password: this browser is known
        // to the account from now on, until its password changes.
        let version = match password {
            Some(v) => v,
            None => self
                .0
                .store
                .user_with_password(&user.email)
                .await?
                .map_or(0, |(_, _, v)| v),
        };
        Ok(Issued {
            known_browser: Some(self.0.known.cookie(&user.id, version)),
            ..issued
        })
    }

    /// The `Set-Cookie` that makes this browser known to account `user` at password
    /// `version` (crate::password::KnownBrowsers).
    pub fn known_browser(&self, user: &str, version: i64) -> String {
        self.0.known.cookie(user, version)
    }

    /// Reads the refresh token of a refresh request (after the per-client throttle): an
    /// unknown or malformed token is `invalid_grant`.
    pub async fn present(&self, token: &str, client: &str) -> Result<Presented, ApiError> {
        if !tokens::is_well_formed_refresh_token(token) {
            return Err(ApiError::InvalidGrant);
        }
        let now = self.0.clock.now();
        if let Some(retry_after) = self.0.ip_limiter.check(&self.0.store, client, now).await? {
            return Err(ApiError::TooManyRequests { retry_after });
        }
        let hash = hash_refresh_token(token);
        // The read pool answers unknown tokens, dead sessions and capped tokens: a flood of
        // those never takes the one writer.
        let found = self
            .0
            .store
            .presented_token(&hash)
            .await?
            .ok_or(ApiError::InvalidGrant)?;
        Ok(Presented { hash, found })
    }

    fn plan(&self, found: &PresentedToken, now: i64) -> Plan {
        let p = &self.0.policy;
        rotation::plan(found.token, found.family, now, p.rotation, p.idle_ttl)
    }

    /// Rotates the presented token (its DPoP proof, if bound, already checked by the caller).
    pub async fn rotate(&self, presented: Presented) -> Result<Issued, ApiError> {
        let now = self.0.clock.now();
        let Presented { hash, mut found } = presented;
        let child = random_token();
        let child_hash = hash_refresh_token(&child);
        let mut counted = false;
        for _ in 0..OPTIMISTIC_ATTEMPTS {
            let plan = self.plan(&found, now);
            match plan {
                Plan::Invalid => return Err(ApiError::InvalidGrant),
                Plan::Throttled { retry_after } => {
                    return Err(ApiError::TooManyRequests { retry_after });
                }
                // Detection is never throttled.
                Plan::Revoke => {}
                Plan::Rotate(_) if !counted => {
                    counted = true;
                    let limiter = &self.0.session_limiter;
                    if let Some(retry_after) =
                        limiter.check(&self.0.store, &found.session_id, now).await?
                    {
                        return Err(ApiError::TooManyRequests { retry_after });
                    }
                }
                Plan::Rotate(_) => {}
            }
            let presentation = Presentation {
                found: &found,
                presented: &hash,
                child: &child_hash,
                now,
            };
            let applied = self.0.store.apply(presentation, &plan).await?;
            if applied != Applied::Conflict {
                return self.outcome(&found, &plan, applied, child, now);
            }
            // Another rotation of the session committed since the read: read and plan again.
            found = self
                .0
                .store
                .presented_token(&hash)
                .await?
                .ok_or(ApiError::InvalidGrant)?;
        }
        let (found, plan, applied) = self
            .0
            .store
            .apply_locked(&hash, &child_hash, now, |f| self.plan(f, now))
            .await?
            .ok_or(ApiError::InvalidGrant)?;
        self.outcome(&found, &plan, applied, child, now)
    }

    fn outcome(
        &self,
        found: &PresentedToken,
        plan: &Plan,
        applied: Applied,
        child: String,
        now: i64,
    ) -> Result<Issued, ApiError> {
        match (plan, applied) {
            (Plan::Rotate(r), Applied::Rotated(user)) => {
                self.tell(Event::Rotated {
                    session: &found.session_id,
                });
                self.issue(
                    &user,
                    &found.session_id,
                    child,
                    r.idle_expires_at,
                    found.dpop_jkt.as_deref(),
                    now,
                    &found.auth,
                )
            }
            (_, Applied::Revoked) => {
                self.refuse_tokens_of(&found.session_id);
                tracing::warn!(
                    target: "audit",
                    event = "token_reused",
                    user = %found.user_id,
                    session = %found.session_id,
                    "refresh token reused: session revoked"
                );
                self.tell(Event::Reused {
                    user: &found.user_id,
                    session: &found.session_id,
                });
                Err(ApiError::TokenReused)
            }
            (Plan::Throttled { retry_after }, _) => Err(ApiError::TooManyRequests {
                retry_after: *retry_after,
            }),
            _ => Err(ApiError::InvalidGrant),
        }
    }

    /// The session of a refresh cookie and the key it is bound to, if the token is known.
    pub async fn of_cookie(
        &self,
        token: &str,
    ) -> Result<Option<(String, Option<String>)>, ApiError> {
        if !tokens::is_well_formed_refresh_token(token) {
            return Ok(None);
        }
        Ok(self
            .0
            .store
            .session_binding(&hash_refresh_token(token))
            .await?)
    }

    /// Revokes a live session (`user`: only one of theirs). Returns whether one was revoked.
    pub async fn revoke(
        &self,
        session_id: &str,
        user: Option<&str>,
        reason: RevokeReason,
    ) -> Result<bool, ApiError> {
        if session_id.len() > 64 {
            return Ok(false);
        }
        let now = self.0.clock.now();
        if !self
            .0
            .store
            .revoke_session(session_id, user, reason, now)
            .await?
        {
            return Ok(false);
        }
        self.refuse_tokens_of(session_id);
        tracing::info!(target: "audit", event = reason.as_str(), session = %session_id);
        self.tell(Event::Revoked {
            session: session_id,
            reason,
        });
        Ok(true)
    }

    /// Revokes every live session of `user_id` but `except` (a password change keeps the
    /// session it was made in; a reset keeps none). Every instance hears of each.
    pub async fn revoke_all(
        &self,
        user_id: &str,
        except: Option<&str>,
        reason: RevokeReason,
    ) -> Result<usize, ApiError> {
        let now = self.0.clock.now();
        let revoked = self
            .0
            .store
            .revoke_user_sessions(user_id, except, reason, now)
            .await?;
        Ok(self.revoked_all(user_id, &revoked, reason))
    }

    /// A new password (its hash) for `user_id`, with the sessions it ends (a change goes on in
    /// `keep`; a reset keeps none) and the sign-ins still waiting for a second factor after
    /// the old one, in one transaction; every instance hears of each session. A change passes
    /// the version of the password it `proved`: if another change or a reset replaced it
    /// meanwhile, or `keep` ended, nothing changes (`None`). Returns the new password's
    /// version.
    pub async fn replace_password(
        &self,
        user_id: &str,
        hash: &str,
        proved: Option<i64>,
        keep: Option<&str>,
        reason: RevokeReason,
    ) -> Result<Option<i64>, ApiError> {
        self.replace(&NewPassword {
            user_id,
            hash,
            proved,
            keep,
            reason,
            now: self.0.clock.now(),
            disown: false,
        })
        .await
    }

    async fn replace(&self, new: &NewPassword<'_>) -> Result<Option<i64>, ApiError> {
        match self.0.store.replace_password(new).await? {
            Replaced::Done { version, revoked } => {
                self.revoked_all(new.user_id, &revoked, new.reason);
                Ok(Some(version))
            }
            Replaced::Stale => Ok(None),
        }
    }

    /// The owner of `user`'s address signs in by it (a code mailed there came back): the
    /// address is theirs. A password the account held that someone chose without proving the
    /// address (a legacy backend's word, an import line without `email_verified`: whoever
    /// registered the address in the old app) stops working, and with it every session opened
    /// before and the passkeys and second factor that may have been set up with it, as at a
    /// reset to no password: the mailbox's owner does not share the account with a stranger
    /// (account pre-hijacking). Runs before the owner's own session is opened.
    pub async fn address_proved(&self, user: &User) -> Result<(), ApiError> {
        // Proved first, whether or not the address was verified already (an import may say it
        // was): from then on the old backend's word sets no unvouched password (the write
        // checks it), and one it set before is ended next.
        self.0
            .store
            .set_email_verified(&user.email, self.0.clock.now())
            .await?;
        self.end_unproved_password(user).await
    }

    /// [`Self::address_proved`]'s first half, before a second factor is asked for: one a
    /// stranger set up with their password (their passkey) goes with it, or it would stand
    /// between the address's owner and the account for good.
    pub async fn end_unproved_password(&self, user: &User) -> Result<(), ApiError> {
        if self.0.store.password_mark(&user.id).await? == 1 {
            self.replace(&NewPassword {
                user_id: &user.id,
                hash: "",
                proved: None,
                keep: None,
                reason: RevokeReason::PasswordReset,
                now: self.0.clock.now(),
                disown: true,
            })
            .await?;
            tracing::warn!(target: "audit", event = "unproved_password_ended", user = %user.id);
        }
        Ok(())
    }

    /// An identity provider's logout (its logout token's `jti`, valid until `until`, naming
    /// `subject` and/or its session `idp_sid`): the sessions it opened end, on every instance.
    /// `None`: the token was used already. Returns how many sessions ended.
    pub async fn provider_logout(
        &self,
        issuer: &str,
        jti: &str,
        until: i64,
        subject: Option<&str>,
        idp_sid: Option<&str>,
    ) -> Result<Option<usize>, ApiError> {
        let now = self.0.clock.now();
        let ended = self
            .0
            .store
            .provider_logout(issuer, jti, until, subject, idp_sid, now)
            .await?;
        Ok(ended.map(|revoked| self.revoked_all(issuer, &revoked, RevokeReason::ProviderLogout)))
    }

    /// After `revoked` ended (of `who`: a user, or the provider that ended them): every
    /// instance hears of each, and their tokens are refused here at once.
    pub fn revoked_all(&self, who: &str, revoked: &[String], reason: RevokeReason) -> usize {
        for sid in revoked {
            self.refuse_tokens_of(sid);
            self.tell(Event::Revoked {
                session: sid,
                reason,
            });
        }
        tracing::info!(target: "audit", event = reason.as_str(), by = %who, sessions = revoked.len());
        revoked.len()
    }

    /// Logout (idempotent): the access token `claims` (if it verified) is deny-listed until it
    /// expires; its session and the cookie's session are revoked.
    pub async fn logout(
        &self,
        cookie_session: Option<String>,
        claims: Option<AccessClaims>,
    ) -> Result<(), ApiError> {
        let mut sessions: Vec<String> = cookie_session.into_iter().collect();
        if let Some(claims) = claims {
            self.0.store.deny_token(&claims.jti, claims.exp).await?;
            self.0
                .revoked
                .deny_token(claims.jti.clone(), claims.exp + self.0.policy.leeway);
            sessions.push(claims.sid);
        }
        sessions.dedup();
        for sid in sessions {
            self.revoke(&sid, None, RevokeReason::Logout).await?;
        }
        Ok(())
    }

    /// The user's live sessions, most recently used first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<SessionRow>, ApiError> {
        Ok(self
            .0
            .store
            .live_sessions(user_id, self.0.clock.now())
            .await?)
    }

    /// Forgets every refresh count of the limits (the test hooks' reset).
    pub async fn reset_limits(&self) -> Result<(), ApiError> {
        self.0.ip_limiter.reset(&self.0.store).await?;
        self.0.session_limiter.reset(&self.0.store).await?;
        Ok(())
    }
}
