//! Passkeys (WebAuthn Level 3 through `webauthn-rs`), a second factor an account can require,
//! and the step-up (docs/PROTOCOL.md, "Passkeys").
//!
//! - Register (`/auth/passkeys/register/start|finish`), list (`GET /auth/passkeys`) and remove
//!   (`DELETE /auth/passkeys/{id}`) the signed-in account's passkeys. Adding or removing one
//!   needs a recent sign-in or step-up (`--step-up-max-age-secs`), else 403
//!   `step_up_required`.
//! - Sign in with a discoverable credential (`/auth/passkeys/login/start|finish`; usernameless,
//!   conditional mediation): a session like a password sign-in's (refresh cookie, DPoP binding).
//! - Step-up (`/auth/step-up/start|finish`): a passkey again in the current session; its
//!   `auth_time` and `amr` (in the next access token) say so.
//! - Second factor (`PUT /auth/second-factor`): a password sign-in of an account that requires
//!   one answers 401 `second_factor_required` with a ceremony, completed by a passkey or the
//!   emailed code at `/auth/login/second-factor`.
//!
//! Every ceremony is stored between its two requests (any instance may answer the second),
//! single use, for [`CEREMONY_SECS`]. A signature counter that goes backwards is refused and
//! reported as a possibly cloned authenticator.

use std::sync::Arc;

use crate::extract::PathParam;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
    WebauthnError,
};

use crate::clock::Clock;
use crate::config::WebauthnSettings;
use crate::dpop::Dpop;
use crate::error::ApiError;
use crate::extract::{Authed, Csrf, JsonBody, user_agent};
use crate::net::ClientIp;
use crate::otp::{Codes, Notice};
use crate::sessions::{Issued, Sessions, SignIn};
use crate::store::passkeys::{
    Ceremony, Change, MAX_CREDENTIAL_ID_BYTES, MAX_ID_CHARS, MAX_PASSKEYS, PasskeyRow,
};
use crate::store::{CodePurpose, RevokeReason, Store, User};
use crate::throttle::Throttle;
use crate::tokens::{self, AccessClaims};

/// How long a ceremony (or a sign-in waiting for its second factor) may take.
pub const CEREMONY_SECS: i64 = 300;
/// Passkey ceremonies (sign-ins, registrations, step-ups) and second-factor answers started per
/// client address per minute: each start stores a ceremony for [`CEREMONY_SECS`].
const STARTS_PER_MINUTE: u32 = 60;

pub const LOGIN_FINISH_PATH: &str = "/auth/passkeys/login/finish";
pub const SECOND_FACTOR_PATH: &str = "/auth/login/second-factor";

/// Ceremony kinds (`webauthn_ceremonies.kind`).
const REGISTER: &str = "register";
const LOGIN: &str = "login";
const STEP_UP: &str = "step_up";
use crate::store::passkeys::SECOND_FACTOR;
/// A sign-in by an emailed code (`/auth/otp/verify`, a reset) waiting for its passkey.
const SECOND_FACTOR_AFTER_CODE: &str = "second_factor_after_code";

/// What a sign-in waiting for its second factor proved first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstFactor {
    /// A password, of this version (`password::Proved`): the sign-in completes only while it
    /// is still the account's.
    Password(i64),
    /// An emailed code: the mailbox. Its second factor is a passkey (a code mailed again
    /// proves the same mailbox); an account without one signs in on the code alone.
    Code,
}

#[derive(Clone)]
pub struct Passkeys(Arc<Inner>);

struct Inner {
    webauthn: Option<Webauthn>,
    store: Store,
    sessions: Sessions,
    clock: Clock,
    codes: Codes,
    step_up_max_age: i64,
    starts: Throttle,
}

/// Why passkeys could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("passkeys: {0}")]
pub struct PasskeysError(String);

impl Passkeys {
    pub fn new(
        settings: Option<&WebauthnSettings>,
        store: Store,
        sessions: Sessions,
        clock: Clock,
        codes: Codes,
        step_up_max_age: i64,
    ) -> Result<Self, PasskeysError> {
        let webauthn = match settings {
            None => None,
            Some(s) => {
                let bad = |e: &dyn std::fmt::Display| PasskeysError(e.to_string());
                let first = s
                    .origins
                    .first()
                    .ok_or_else(|| PasskeysError("no origin".into()))?;
                let first = Url::parse(first).map_err(|e| bad(&e))?;
                let mut b = WebauthnBuilder::new(&s.rp_id, &first)
                    .map_err(|e| bad(&e))?
                    .rp_name(&s.rp_name);
                for o in &s.origins[1..] {
                    b = b.append_allowed_origin(&Url::parse(o).map_err(|e| bad(&e))?);
                }
                Some(b.build().map_err(|e| bad(&e))?)
            }
        };
        Ok(Passkeys(Arc::new(Inner {
            webauthn,
            store,
            sessions,
            clock,
            codes,
            step_up_max_age,
            starts: Throttle::new("passkey_start", STARTS_PER_MINUTE),
        })))
    }

    fn webauthn(&self) -> Result<&Webauthn, ApiError> {
        self.0
            .webauthn
            .as_ref()
            .ok_or(ApiError::PasskeysUnavailable(
                "passkeys are not configured on this server (--webauthn-rp-id)",
            ))
    }

    fn now(&self) -> i64 {
        self.0.clock.now()
    }

    async fn admit(&self, client: &ClientIp) -> Result<(), ApiError> {
        match self
            .0
            .starts
            .check(&self.0.store, &client.key(), self.now())
            .await?
        {
            Some(retry_after) => Err(ApiError::TooManyAttempts { retry_after }),
            None => Ok(()),
        }
    }

    /// The session of `claims` proved who its user is within `--step-up-max-age-secs`.
    async fn require_recent(&self, claims: &AccessClaims) -> Result<(), ApiError> {
        let max_age = self.0.step_up_max_age;
        let (auth_time, created, _) = self
            .0
            .store
            .session_auth(&claims.sid)
            .await?
            .ok_or(ApiError::InvalidToken(tokens::Invalid::Revoked))?;
        if auth_time.unwrap_or(created) + max_age < self.now() {
            return Err(ApiError::StepUpRequired { max_age });
        }
        Ok(())
    }

    /// Not while the account's password may be a stranger's (an import or a legacy backend
    /// that did not vouch for the address: [`crate::store::Store::password_mark`] 1): a passkey
    /// or a second factor set up with it would stand between the address's owner and the
    /// account, so the owner's first sign-in by the address ends them, and a mailbox alone
    /// would then pass an owner's second factor. The remedy: the address verified in a session
    /// of the account (`email_not_verified` says where). A server that mails no codes has no
    /// such sign-in, nothing to end them, and no remedy to offer: there it does not apply.
    async fn require_owned(&self, user_id: &str) -> Result<(), ApiError> {
        if self.0.codes.enabled().is_ok() && self.0.store.password_mark(user_id).await? == 1 {
            return Err(ApiError::EmailNotVerified);
        }
        Ok(())
    }

    /// Stores a ceremony of `kind` for `who` with its WebAuthn `state` ("" for none); its id
    /// (what the client sends back).
    async fn put(&self, kind: &str, who: Who<'_>, state: String) -> Result<String, ApiError> {
        self.put_with(kind, who, state, None, None).await
    }

    /// As `put`, with the new password's hash of a reset waiting for its passkey, or the
    /// version of the password a sign-in waiting for its second factor proved.
    async fn put_with(
        &self,
        kind: &str,
        who: Who<'_>,
        state: String,
        password_hash: Option<String>,
        password_version: Option<i64>,
    ) -> Result<String, ApiError> {
        let id = tokens::random_token();
        let c = Ceremony {
            kind: kind.into(),
            user_id: who.user.map(str::to_owned),
            session_id: who.session.map(str::to_owned),
            dpop_jkt: who.jkt.map(str::to_owned),
            state,
            expires_at: self.now() + CEREMONY_SECS,
            password_hash,
            password_version,
        };
        self.0
            .store
            .put_ceremony(&tokens::hash_refresh_token(&id), &c)
            .await?;
        Ok(id)
    }

    /// A ceremony of the signed-in session of `claims`, and its challenge answer.
    async fn put_for_session(
        &self,
        kind: &str,
        claims: &AccessClaims,
        state: String,
    ) -> Result<String, ApiError> {
        let who = Who {
            user: Some(&claims.sub),
            session: Some(&claims.sid),
            jkt: None,
        };
        self.put(kind, who, state).await
    }

    /// Takes a live ceremony of `kind` (once).
    async fn take(&self, kind: &str, id: &str) -> Result<Ceremony, ApiError> {
        if id.len() > 64 {
            return Err(ApiError::InvalidCredentials);
        }
        self.0
            .store
            .take_ceremony(&tokens::hash_refresh_token(id), kind, self.now())
            .await?
            .ok_or(ApiError::InvalidCredentials)
    }

    /// The passkeys of `user` as webauthn-rs keeps them. A stored one that does not read (a
    /// damaged row, a format a later webauthn-rs changed) is an error, not left out: left out,
    /// an account whose passkeys all failed to read counted as having none, and its second
    /// factor was then done by the mailbox alone.
    async fn passkeys_of(&self, user: &str) -> Result<Vec<(PasskeyRow, Passkey)>, ApiError> {
        let rows = self.0.store.passkeys_of(user).await?;
        rows.into_iter()
            .map(|r| match serde_json::from_str::<Passkey>(&r.passkey) {
                Ok(p) => Ok((r, p)),
                Err(e) => Err(ApiError::Internal(format!(
                    "the stored passkey {} of user {user} does not read: {e}",
                    r.id
                ))),
            })
            .collect()
    }

    /// After an assertion verified: the stored counter moves on; a counter that went
    /// backwards was refused before this (webauthn-rs: `CredentialPossibleCompromise`). Written
    /// over the state the assertion was checked against only: if another use was saved
    /// meanwhile (two sign-ins at once), it is read again, and moved on only while this
    /// assertion's counter is the higher: the stored counter never goes back (a clone behind
    /// the later of two would otherwise pass).
    async fn used(
        &self,
        row: &PasskeyRow,
        mut passkey: Passkey,
        result: &webauthn_rs::prelude::AuthenticationResult,
    ) -> Result<(), ApiError> {
        let internal = |e: serde_json::Error| ApiError::Internal(e.to_string());
        let mut before = row.passkey.clone();
        for _ in 0..3 {
            passkey.update_credential(result);
            let json = serde_json::to_string(&passkey).map_err(internal)?;
            let store = &self.0.store;
            if store
                .passkey_used(&row.id, &before, &json, self.now())
                .await?
            {
                return Ok(());
            }
            // Removed meanwhile, or moved on as far already: nothing to save.
            let Some(current) = store.passkey(&row.id).await? else {
                return Ok(());
            };
            if stored_counter(&current.passkey) >= u64::from(result.counter()) {
                return Ok(());
            }
            passkey = serde_json::from_str(&current.passkey).map_err(internal)?;
            before = current.passkey;
        }
        Ok(())
    }
}

/// Whom a ceremony is for: an account and its session, a DPoP key, or nobody yet (a sign-in).
#[derive(Default)]
struct Who<'a> {
    user: Option<&'a str>,
    session: Option<&'a str>,
    jkt: Option<&'a str>,
}

/// A refused assertion or registration: logged (a possibly cloned authenticator loudly), and
/// the one answer a guesser gets.
fn refused(what: &str, user: Option<&str>, e: WebauthnError) -> ApiError {
    if matches!(e, WebauthnError::CredentialPossibleCompromise) {
        tracing::warn!(target: "audit", event = "passkey_counter_went_backwards", user = user.unwrap_or("?"), what, "a passkey's signature counter went backwards: possibly a cloned authenticator; refused");
    } else {
        tracing::info!(target: "audit", event = "passkey_refused", what, user = user.unwrap_or("?"), error = %e);
    }
    ApiError::InvalidCredentials
}

fn state_json<T: serde::Serialize>(state: &T) -> Result<String, ApiError> {
    serde_json::to_string(state).map_err(|e| ApiError::Internal(e.to_string()))
}

fn state_of<T: serde::de::DeserializeOwned>(c: &Ceremony) -> Result<T, ApiError> {
    serde_json::from_str(&c.state).map_err(|_| ApiError::InvalidCredentials)
}

fn options(ceremony: &str, options: &impl serde::Serialize) -> Response {
    let mut res = axum::Json(json!({ "ceremony": ceremony, "options": options })).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}

/// A credential as the browser's `PublicKeyCredential.toJSON()` gives it.
fn credential<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|_| ApiError::InvalidRequest("credential is not a WebAuthn credential".into()))
}

#[derive(Deserialize)]
pub struct Finish {
    ceremony: String,
    credential: Value,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /auth/passkeys/register/start`.
pub async fn register_start(
    State(p): State<Passkeys>,
    client: ClientIp,
    Authed(claims): Authed,
) -> Result<Response, ApiError> {
    p.admit(&client).await?;
    let webauthn = p.webauthn()?;
    p.require_owned(&claims.sub).await?;
    p.require_recent(&claims).await?;
    let existing = p.passkeys_of(&claims.sub).await?;
    if existing.len() >= MAX_PASSKEYS {
        return Err(full());
    }
    let mut fresh = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
    let handle =
        p.0.store
            .passkey_handle(&claims.sub, &Uuid::from_bytes(fresh).to_string())
            .await?;
    let handle = Uuid::parse_str(&handle).map_err(|e| ApiError::Internal(e.to_string()))?;
    let exclude = existing.iter().map(|(_, k)| k.cred_id().clone()).collect();
    let (mut ccr, state) = webauthn
        .start_passkey_registration(handle, &claims.email, &claims.name, Some(exclude))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    // Sign-in here is usernameless (a discoverable credential): webauthn-rs's passkey
    // registration asks authenticators not to make one, and those that honour it (security
    // keys) would register a passkey that can never sign in.
    let selection = ccr
        .public_key
        .authenticator_selection
        .get_or_insert_with(Default::default);
    selection.resident_key = Some(webauthn_rs_proto::ResidentKeyRequirement::Required);
    selection.require_resident_key = true;
    let id = p
        .put_for_session(REGISTER, &claims, state_json(&state)?)
        .await?;
    Ok(options(&id, &ccr))
}

/// `POST /auth/passkeys/register/finish`.
pub async fn register_finish(
    State(p): State<Passkeys>,
    Authed(claims): Authed,
    JsonBody(req): JsonBody<Finish>,
) -> Result<Response, ApiError> {
    register(p, claims, req).await.map_err(signed_in)
}

/// A signed-in user's refused ceremony is a 403: the token is fine (a 401 would have the client
/// refresh and send the used-up ceremony again).
fn signed_in(e: ApiError) -> ApiError {
    match e {
        ApiError::InvalidCredentials => ApiError::PasskeyRefused,
        e => e,
    }
}

async fn register(
    p: Passkeys,
    claims: crate::tokens::AccessClaims,
    req: Finish,
) -> Result<Response, ApiError> {
    let webauthn = p.webauthn()?;
    // Read before the ceremony is taken: a malformed one spends nothing.
    let reg: RegisterPublicKeyCredential = credential(req.credential)?;
    let c = p.take(REGISTER, &req.ceremony).await?;
    // Finished by the session that started it, which proved a recent sign-in then (and whose
    // end, checked when the passkey is added, ends the registration): not by another session
    // of the account, an older one, after that one was revoked.
    if c.user_id.as_deref() != Some(claims.sub.as_str())
        || c.session_id.as_deref() != Some(claims.sid.as_str())
    {
        return Err(ApiError::InvalidCredentials);
    }
    p.require_owned(&claims.sub).await?;
    let state: PasskeyRegistration = state_of(&c)?;
    let passkey = webauthn
        .finish_passkey_registration(&reg, &state)
        .map_err(|e| refused("registration", Some(&claims.sub), e))?;
    let id: &[u8] = passkey.cred_id().as_ref();
    if id.len() > MAX_CREDENTIAL_ID_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "a credential id has at most {MAX_CREDENTIAL_ID_BYTES} bytes"
        )));
    }
    let now = p.now();
    let name = req
        .name
        .map(|n| n.trim().chars().take(64).collect::<String>())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "Passkey".into());
    let row = PasskeyRow {
        id: B64.encode(id),
        user_id: claims.sub.clone(),
        name,
        passkey: state_json(&passkey)?,
        created_at: now,
        last_used_at: None,
    };
    match p.0.store.add_passkey(&row, &claims.sid).await? {
        Change::Done => {}
        Change::Full => return Err(full()),
        Change::Registered => {
            return Err(ApiError::InvalidRequest(
                "this passkey is registered already".into(),
            ));
        }
        other => return Err(unchanged(other)),
    }
    tracing::info!(target: "audit", event = "passkey_registered", user = %claims.sub);
    p.0.codes.notify(&claims.sub, Notice::PasskeyAdded);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({ "id": row.id, "name": row.name, "created_at": now })),
    )
        .into_response())
}

/// The refusal of a change the store did not make, for a reason the caller does not handle
/// itself: the session has ended (401, as a revoked token), or a reason it never gives for that
/// change.
fn unchanged(why: Change) -> ApiError {
    match why {
        Change::SessionEnded => ApiError::InvalidToken(tokens::Invalid::Revoked),
        other => ApiError::Internal(format!("unexpected {other:?}")),
    }
}

/// The refusal of a passkey beyond [`MAX_PASSKEYS`].
fn full() -> ApiError {
    ApiError::InvalidRequest(format!("an account holds at most {MAX_PASSKEYS} passkeys"))
}

/// `GET /auth/passkeys`.
pub async fn list(State(p): State<Passkeys>, Authed(claims): Authed) -> Result<Response, ApiError> {
    let rows = p.0.store.passkeys_of(&claims.sub).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| json!({ "id": r.id, "name": r.name, "created_at": r.created_at, "last_used_at": r.last_used_at }))
        .collect();
    Ok(axum::Json(json!({ "passkeys": list })).into_response())
}

/// `DELETE /auth/passkeys/{id}`.
pub async fn remove(
    State(p): State<Passkeys>,
    Authed(claims): Authed,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    p.require_recent(&claims).await?;
    // No id holds U+0000 (`%00`), which PostgreSQL cannot even compare.
    if id.len() > MAX_ID_CHARS || id.contains('\0') {
        return Err(ApiError::NotFound);
    }
    // The last passkey of an account whose password sign-ins need a second factor, on a server
    // that mails no codes, is that factor: without it the owner could sign in no more.
    let keep_factor = p.0.codes.enabled().is_err();
    let removed =
        p.0.store
            .delete_passkey(&id, &claims.sub, &claims.sid, keep_factor, p.now())
            .await?;
    let ended = match removed {
        Ok(ended) => ended,
        Err(Change::NotFound) => return Err(ApiError::NotFound),
        Err(Change::LastFactor) => {
            return Err(ApiError::PasskeysUnavailable(
                "this passkey is the account's second factor: turn the second factor off first",
            ));
        }
        Err(other) => return Err(unchanged(other)),
    };
    tracing::info!(target: "audit", event = "passkey_removed", user = %claims.sub);
    // The sessions it signed in end with it, on every instance (this one too, if it is one of
    // them): an intruder's passkey's sessions elsewhere end when the owner removes it.
    p.0.sessions
        .revoked_all(&claims.sub, &ended, RevokeReason::PasskeyRemoved);
    p.0.codes.notify(&claims.sub, Notice::PasskeyRemoved);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/passkeys/login/start`: a challenge for any of this site's passkeys. With the CSRF
/// header, as every cookie endpoint: without a body it would be a simple request any site can
/// send, and each one spends the client's budget of starts, which the sign-in's finish and a
/// second factor share.
pub async fn login_start(
    _: Csrf,
    State(p): State<Passkeys>,
    client: ClientIp,
) -> Result<Response, ApiError> {
    let webauthn = p.webauthn()?;
    p.admit(&client).await?;
    let (rcr, state) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = p.put(LOGIN, Who::default(), state_json(&state)?).await?;
    Ok(options(&id, &rcr))
}

/// The account of a discoverable assertion, verified by its passkey, the account's password
/// version read before the passkey (a reset or a stranger's password ended meanwhile, which
/// takes the passkeys registered with it, counts one more, and the session is not opened), and
/// the passkey's id.
async fn verify_discoverable(
    p: &Passkeys,
    webauthn: &Webauthn,
    c: &Ceremony,
    cred: &PublicKeyCredential,
) -> Result<(User, i64, String), ApiError> {
    let state: DiscoverableAuthentication = state_of(c)?;
    let (handle, cred_id) = webauthn
        .identify_discoverable_authentication(cred)
        .map_err(|e| refused("sign-in", None, e))?;
    let user =
        p.0.store
            .user_of_handle(&handle.to_string())
            .await?
            .ok_or(ApiError::InvalidCredentials)?;
    let (_, _, version) =
        p.0.store
            .user_with_password(&user.email)
            .await?
            .ok_or(ApiError::InvalidCredentials)?;
    let row =
        p.0.store
            .passkey(&B64.encode(cred_id))
            .await?
            .filter(|r| r.user_id == user.id)
            .ok_or(ApiError::InvalidCredentials)?;
    let passkey: Passkey =
        serde_json::from_str(&row.passkey).map_err(|e| ApiError::Internal(e.to_string()))?;
    let result = webauthn
        .finish_discoverable_authentication_v2(cred, state, &passkey)
        .map_err(|e| refused("sign-in", Some(&user.id), e))?;
    p.used(&row, passkey, &result).await?;
    Ok((user, version, row.id))
}

/// `POST /auth/passkeys/login/finish`: a session like a password sign-in's.
pub async fn login_finish(
    State(p): State<Passkeys>,
    State(dpop): State<Dpop>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<Finish>,
) -> Result<Issued, ApiError> {
    let webauthn = p.webauthn()?;
    p.admit(&client).await?;
    // DPoP first: a nonce retry uses up no ceremony.
    let jkt = dpop.sign_in_binding(&headers, LOGIN_FINISH_PATH).await?;
    let cred: PublicKeyCredential = credential(req.credential)?;
    let c = p.take(LOGIN, &req.ceremony).await?;
    let (user, version, passkey) = verify_discoverable(&p, webauthn, &c, &cred).await?;
    p.0.sessions
        .open_by_passkey(
            &user,
            user_agent(&headers),
            jkt.as_deref(),
            SignIn::Passkey,
            Some(version),
            Some(&passkey),
        )
        .await
}

/// `POST /auth/step-up/start`: a challenge for the signed-in account's passkeys.
pub async fn step_up_start(
    State(p): State<Passkeys>,
    client: ClientIp,
    Authed(claims): Authed,
) -> Result<Response, ApiError> {
    p.admit(&client).await?;
    let webauthn = p.webauthn()?;
    let keys: Vec<Passkey> = p
        .passkeys_of(&claims.sub)
        .await?
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::PasskeysUnavailable("the account has no passkey"));
    }
    let (rcr, state) = webauthn
        .start_passkey_authentication(&keys)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let id = p
        .put_for_session(STEP_UP, &claims, state_json(&state)?)
        .await?;
    Ok(options(&id, &rcr))
}

/// The signature counter of a stored passkey (webauthn-rs's JSON: its type does not expose it).
fn stored_counter(json: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| v["cred"]["counter"].as_u64())
        .unwrap_or(0)
}

/// An assertion of one of `user`'s passkeys against a ceremony's state.
async fn verify_known(
    p: &Passkeys,
    webauthn: &Webauthn,
    user: &str,
    c: &Ceremony,
    cred: &PublicKeyCredential,
) -> Result<String, ApiError> {
    let state: PasskeyAuthentication = state_of(c)?;
    let result = webauthn
        .finish_passkey_authentication(cred, &state)
        .map_err(|e| refused("step-up", Some(user), e))?;
    let id = B64.encode(result.cred_id().as_ref() as &[u8]);
    let row =
        p.0.store
            .passkey(&id)
            .await?
            .filter(|r| r.user_id == user)
            // Removed since the challenge: refused.
            .ok_or(ApiError::InvalidCredentials)?;
    let passkey: Passkey =
        serde_json::from_str(&row.passkey).map_err(|e| ApiError::Internal(e.to_string()))?;
    // The counter is checked above against the one stored when the ceremony started (its
    // state holds the credentials of then): against the one stored now too, which sign-ins
    // since may have moved on. A clone lagging behind them is refused, as one behind the
    // ceremony's.
    let stored = stored_counter(&row.passkey);
    let counter = u64::from(result.counter());
    if (counter > 0 || stored > 0) && counter <= stored {
        return Err(refused(
            "step-up",
            Some(user),
            WebauthnError::CredentialPossibleCompromise,
        ));
    }
    p.used(&row, passkey, &result).await?;
    Ok(row.id)
}

/// `POST /auth/step-up/finish`: the session's `auth_time` is now, its `amr` gains `hwk`; the
/// next refresh's token says so.
pub async fn step_up_finish(
    State(p): State<Passkeys>,
    Authed(claims): Authed,
    JsonBody(req): JsonBody<Finish>,
) -> Result<Response, ApiError> {
    step_up(p, claims, req).await.map_err(signed_in)
}

async fn step_up(
    p: Passkeys,
    claims: crate::tokens::AccessClaims,
    req: Finish,
) -> Result<Response, ApiError> {
    let webauthn = p.webauthn()?;
    // Read before the ceremony is taken: a malformed one spends nothing.
    let cred: PublicKeyCredential = credential(req.credential)?;
    let c = p.take(STEP_UP, &req.ceremony).await?;
    if c.user_id.as_deref() != Some(claims.sub.as_str())
        || c.session_id.as_deref() != Some(claims.sid.as_str())
    {
        return Err(ApiError::InvalidCredentials);
    }
    verify_known(&p, webauthn, &claims.sub, &c, &cred).await?;
    let mut amr = claims.amr.clone();
    for m in ["hwk", "mfa"] {
        if !amr.iter().any(|a| a == m) {
            amr.push(m.to_owned());
        }
    }
    if !p
        .0
        .store
        .set_session_auth(&claims.sid, p.now(), &amr.join(" "))
        .await?
    {
        return Err(ApiError::InvalidToken(tokens::Invalid::Revoked));
    }
    tracing::info!(target: "audit", event = "step_up", user = %claims.sub, session = %claims.sid);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub struct SecondFactorSetting {
    required: bool,
}

/// `PUT /auth/second-factor`: whether password sign-ins of the account need a second factor.
pub async fn set_second_factor(
    State(p): State<Passkeys>,
    Authed(claims): Authed,
    JsonBody(req): JsonBody<SecondFactorSetting>,
) -> Result<Response, ApiError> {
    if req.required {
        p.require_owned(&claims.sub).await?;
    }
    p.require_recent(&claims).await?;
    let needs_passkey = p.0.codes.enabled().is_err();
    // Without codes the passkey is the factor: not on a server that takes none now (an account
    // could otherwise be shut out of every password sign-in, and no code could let it in).
    if req.required && needs_passkey {
        p.webauthn()?;
    }
    match p
        .0
        .store
        .set_second_factor(&claims.sub, &claims.sid, req.required, needs_passkey)
        .await?
    {
        Change::Done => {}
        // Nothing to tell the owner of.
        Change::Same => return Ok(StatusCode::NO_CONTENT.into_response()),
        Change::NoPasskey => {
            return Err(ApiError::PasskeysUnavailable(
                "a second factor needs a passkey, or emailed codes on this server",
            ));
        }
        other => return Err(unchanged(other)),
    }
    tracing::info!(target: "audit", event = "second_factor_set", user = %claims.sub, required = req.required);
    p.0.codes
        .notify(&claims.sub, Notice::SecondFactor(req.required));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// After the right password of an account: `Ok` if it requires no second factor; else the
/// refusal that asks for one (401 `second_factor_required`), with a passkey challenge if the
/// account has passkeys and an emailed code if this server sends codes. The pending sign-in is
/// bound to the proof's key (`jkt`). `reset`: the new password's hash of a password reset (a
/// `Code` first factor), which waits in the pending sign-in and is stored only when the passkey
/// answers: the caller changes nothing before this returns `Ok`.
pub async fn require_second_factor(
    p: &Passkeys,
    user: &User,
    jkt: Option<&str>,
    first: FirstFactor,
    reset: Option<String>,
) -> Result<(), ApiError> {
    if !p.0.store.second_factor_required(&user.id).await? {
        return Ok(());
    }
    let keys: Vec<Passkey> = p
        .passkeys_of(&user.id)
        .await?
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    let (passkey, state) = match (p.0.webauthn.as_ref(), keys.is_empty()) {
        (Some(w), false) => {
            let (rcr, state) = w
                .start_passkey_authentication(&keys)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            (Some(rcr), state_json(&state)?)
        }
        // After a code, the passkey is the factor, and this server cannot ask for it now (its
        // passkeys were switched off): refused, never completed by the mailbox alone.
        (None, false) if first == FirstFactor::Code => {
            return Err(ApiError::PasskeysUnavailable(
                "this account's second factor is a passkey, and this server takes none now",
            ));
        }
        _ if first == FirstFactor::Code => return Ok(()),
        _ => (None, String::new()),
    };
    let email_code = match p.0.codes.enabled() {
        Ok(_) if first == FirstFactor::Code => false,
        // True only if a code goes out now: past the address's sends (which anyone can spend
        // by asking codes for it), the passkey is the way, and the answer says so.
        Ok(otp) => {
            let now = p.now();
            let sent = otp.count_send(&user.email, now).await.is_ok();
            if sent {
                otp.issue_later(CodePurpose::SecondFactor, user.email.clone(), now);
            }
            sent
        }
        Err(_) => false,
    };
    let who = Who {
        user: Some(&user.id),
        session: None,
        jkt,
    };
    let (kind, version) = match first {
        FirstFactor::Password(version) => (SECOND_FACTOR, Some(version)),
        FirstFactor::Code => (SECOND_FACTOR_AFTER_CODE, None),
    };
    let id = p.put_with(kind, who, state, reset, version).await?;
    tracing::info!(target: "audit", event = "second_factor_asked", user = %user.id);
    Err(ApiError::SecondFactorRequired {
        ceremony: id,
        passkey: passkey
            .map(|p| serde_json::to_value(p).map_err(|e| ApiError::Internal(e.to_string())))
            .transpose()?,
        email_code,
    })
}

#[derive(Deserialize)]
pub struct SecondFactorAnswer {
    ceremony: String,
    #[serde(default)]
    credential: Option<Value>,
    #[serde(default)]
    code: Option<String>,
}

/// What completes a pending sign-in: a passkey's assertion, or the emailed code.
enum SecondFactor {
    Passkey(Box<PublicKeyCredential>),
    Code(String),
}

/// `POST /auth/login/second-factor`: the pending password sign-in, completed by a passkey or
/// the emailed code, with a proof by the same key as the password's request.
pub async fn second_factor(
    State(p): State<Passkeys>,
    State(dpop): State<Dpop>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<SecondFactorAnswer>,
) -> Result<Issued, ApiError> {
    p.admit(&client).await?;
    let jkt = dpop.sign_in_binding(&headers, SECOND_FACTOR_PATH).await?;
    // The answer's shape, and whether this server takes its kind, before the ceremony is
    // taken: a malformed one, or one this server cannot check, spends nothing (the user would
    // have had to sign in again).
    let answer = match (req.credential, req.code) {
        (Some(cred), None) => {
            p.webauthn()?;
            SecondFactor::Passkey(Box::new(credential(cred)?))
        }
        (None, Some(code)) => {
            if p.0.codes.enabled().is_err() {
                return Err(ApiError::InvalidRequest(
                    "this server mails no codes: the second factor is a passkey".into(),
                ));
            }
            SecondFactor::Code(code)
        }
        _ => {
            return Err(ApiError::InvalidRequest(
                "either credential (a passkey) or code".into(),
            ));
        }
    };
    // A ceremony of either kind (not found is InvalidCredentials; any other error is one).
    let (c, first) = match p.take(SECOND_FACTOR, &req.ceremony).await {
        Ok(c) => {
            // None: a sign-in left pending by a version before password versions; proves none.
            let version = c.password_version.unwrap_or(-1);
            (c, FirstFactor::Password(version))
        }
        Err(ApiError::InvalidCredentials) => (
            p.take(SECOND_FACTOR_AFTER_CODE, &req.ceremony).await?,
            FirstFactor::Code,
        ),
        Err(e) => return Err(e),
    };
    // The pending sign-in belongs to the key that sent the password.
    if c.dpop_jkt != jkt {
        return Err(ApiError::InvalidCredentials);
    }
    let user =
        p.0.store
            .user_by_id(c.user_id.as_deref().unwrap_or(""))
            .await?
            .ok_or(ApiError::InvalidCredentials)?;
    // An answer of the wrong kind, or a wrong code, leaves the sign-in pending: put back.
    let pending = async |c: &Ceremony| {
        p.0.store
            .put_ceremony(&tokens::hash_refresh_token(&req.ceremony), c)
            .await
    };
    // The passkey that answered, if one did.
    let mut by_passkey = None;
    let how = match answer {
        SecondFactor::Passkey(cred) => {
            let webauthn = p.webauthn()?;
            if c.state.is_empty() {
                // No passkey was asked for (an account whose second factor is the code): the
                // wrong kind of answer, which leaves the sign-in pending.
                pending(&c).await?;
                return Err(ApiError::InvalidCredentials);
            }
            by_passkey = Some(verify_known(&p, webauthn, &user.id, &c, &cred).await?);
            match first {
                FirstFactor::Password(_) => SignIn::PasswordAndPasskey,
                FirstFactor::Code => SignIn::CodeAndPasskey,
            }
        }
        SecondFactor::Code(_) if first == FirstFactor::Code => {
            // The wrong kind of answer: the sign-in stays pending.
            pending(&c).await?;
            return Err(ApiError::InvalidRequest(
                "a sign-in by an emailed code is completed by a passkey".into(),
            ));
        }
        SecondFactor::Code(code) => {
            let otp = p.0.codes.enabled()?;
            let result = otp
                .check(CodePurpose::SecondFactor, &user.email, code.trim(), true)
                .await;
            let hit = match result {
                Ok(hit) => hit,
                Err(e) => {
                    // A wrong code leaves the pending sign-in to try again (the code's own
                    // attempts are counted and limited).
                    pending(&c).await?;
                    return Err(e);
                }
            };
            otp.accept(CodePurpose::SecondFactor, hit, &user.email)
                .await?;
            SignIn::PasswordAndCode
        }
    };
    let password = match first {
        FirstFactor::Password(version) => Some(version),
        FirstFactor::Code => {
            // The code that came back proved the address; only now, with the passkey, is it
            // this account's (an account made under someone else's address stays unverified).
            p.0.sessions.address_proved(&user).await?;
            // A reset that waited for this passkey: its new password now, and every other
            // session ends, as a reset without a second factor does at once.
            match c.password_hash.as_deref() {
                // `None` only if the account went away meanwhile: nothing to open then.
                Some(hash) => {
                    let version = p
                        .0
                        .sessions
                        .replace_password(&user.id, hash, None, None, RevokeReason::PasswordReset)
                        .await?
                        .ok_or(ApiError::InvalidCredentials)?;
                    p.0.codes.notify(&user.id, Notice::PasswordReset);
                    Some(version)
                }
                None => None,
            }
        }
    };
    let ua = user_agent(&headers);
    p.0.sessions
        .open_by_passkey(
            &user,
            ua,
            jkt.as_deref(),
            how,
            password,
            by_passkey.as_deref(),
        )
        .await
}
