//! The account flows every app needs, each through an emailed code and the sessions module:
//! sign-up with a password (`--signup password`), verifying an address, resetting a forgotten
//! password, changing one. The rules and their reasons are in docs/PROTOCOL.md, "Accounts".
//!
//! - Every "mail me a code" endpoint answers the same 202 for every address, at once; what
//!   happens to the address (a code, a notice, nothing) is decided after the answer, so that
//!   neither the body nor the time tells whether an account exists.
//! - A sign-up's password is hashed after the answer too, and kept only as a hash until the
//!   code comes back: then the account is created and signed in, exactly as `/auth/login`.
//! - A reset revokes every session of the account (on every instance) and signs the caller in
//!   with a new one; a change revokes every session but the one it was made in.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::dpop::Dpop;
use crate::error::ApiError;
use crate::extract::{Authed, Csrf, JsonBody, user_agent};
use crate::net::ClientIp;
use crate::otp::{Codes, accepted, valid_email};
use crate::password::{Passwords, check_new};
use crate::sessions::{Issued, Sessions, SignIn};
use crate::store::{CodePurpose, NewUser, RevokeReason, Store};

pub const SIGNUP_PATH: &str = "/auth/signup";
pub const SIGNUP_VERIFY_PATH: &str = "/auth/signup/verify";
pub const EMAIL_VERIFY_START_PATH: &str = "/auth/email/verify/start";
pub const EMAIL_VERIFY_PATH: &str = "/auth/email/verify";
pub const RESET_START_PATH: &str = "/auth/password/reset/start";
pub const RESET_PATH: &str = "/auth/password/reset";
pub const CHANGE_PATH: &str = "/auth/password/change";

/// Whether `--signup password` is on (the sign-up endpoints answer 404 otherwise).
#[derive(Clone, Copy, Debug)]
pub struct Signup(pub bool);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    email: String,
    password: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    email: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    email: String,
    code: String,
    new_password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeRequest {
    current_password: String,
    new_password: String,
}

/// `POST /auth/signup`: the same 202 for known and unknown addresses. After the answer: a
/// known address is told it has an account (a code is stored, never mailed); an unknown one
/// gets the code, and the password's hash waits for it.
#[allow(clippy::too_many_arguments)]
pub async fn signup(
    _: Csrf,
    State(Signup(on)): State<Signup>,
    State(codes): State<Codes>,
    State(store): State<Store>,
    State(passwords): State<Passwords>,
    client: ClientIp,
    JsonBody(req): JsonBody<SignupRequest>,
) -> Result<Response, ApiError> {
    let otp = codes
        .enabled()
        .ok()
        .filter(|_| on)
        .ok_or(ApiError::NotFound)?;
    otp.admit(client).await?;
    let email = valid_email(&req.email)?;
    // A rule of the address's form, the same for every address: it tells nobody whether one is
    // an account's.
    if !crate::password::new_address(&email) {
        return Err(ApiError::InvalidRequest(
            crate::password::NEW_ADDRESS_RULE.into(),
        ));
    }
    check_new(&req.password, &email)?;
    let name = match req.name.as_deref().map(str::trim) {
        Some(n) if !crate::store::valid_name(n) => {
            return Err(ApiError::InvalidRequest(crate::store::NAME_RULE.into()));
        }
        Some(n) => n.to_owned(),
        None => crate::store::name_from_address(&email),
    };
    let now = otp.now();
    otp.count_send(&email, now).await?;
    // This browser's binding, set for every address alike (no enumeration): only it can
    // complete this sign-up (signup_verify).
    let binding = crate::tokens::random_token();
    let mut answer = accepted(otp);
    crate::cookies::append(
        &mut answer,
        &crate::cookies::signup_cookie(&binding, otp.settings().ttl_secs),
    );
    let binding_hash = crate::tokens::hash_refresh_token(&binding);
    // The code is stored now, before the answer and the same way for every address (mailed
    // later, only to an address without an account): a guess at /auth/signup/verify is
    // answered alike for all, right after this answer as later, and whether or not the
    // hashing below is dropped.
    let code = otp
        .store_code(CodePurpose::SignUp, &email, now)
        .await
        .map_err(ApiError::Internal)?;
    let otp = otp.clone();
    let password = req.password;
    tokio::spawn(async move {
        let result: Result<(), String> = async {
            let db = |e: crate::store::StoreError| format!("database: {e}");
            // Within the hashing gate, as every argon2 run (each holds many MiB): a flood of
            // sign-ups waits its turn or is dropped, never hashes all at once. For every address
            // alike, before the lookup: the sign-ins wait in the same gate, and a hash only for
            // an address without an account would slow them only then, telling whoever times
            // them whether it has one.
            let turn = passwords
                .hasher
                .turn()
                .await
                .map_err(|_| "too many hashes at once: sign-up dropped".to_owned())?;
            let hash = turn.hash(&password).await?;
            drop(turn);
            if store.user_by_email(&email).await.map_err(db)?.is_some() {
                return otp.mailer.send_account_exists(&email, now).await;
            }
            let expires = now + otp.settings().ttl_secs;
            store
                .put_pending_signup(&binding_hash, &email, &hash, &name, now, expires)
                .await
                .map_err(db)?;
            otp.deliver(CodePurpose::SignUp, &email, &code, now).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "handling a sign-up failed");
        }
    });
    Ok(answer)
}

/// `POST /auth/signup/verify`: the code of a sign-up creates the account and signs it in,
/// exactly as `/auth/login` does (refresh cookie, DPoP binding).
#[allow(clippy::too_many_arguments)]
pub async fn signup_verify(
    _: Csrf,
    State(Signup(on)): State<Signup>,
    State(codes): State<Codes>,
    State(store): State<Store>,
    State(sessions): State<Sessions>,
    State(dpop): State<Dpop>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Issued, ApiError> {
    let otp = codes
        .enabled()
        .ok()
        .filter(|_| on)
        .ok_or(ApiError::NotFound)?;
    otp.admit(client).await?;
    let email = valid_email(&req.email)?;
    // The sign-up this browser sent (its password is the account's): without it, no code of
    // the address creates anything here (and none is spent trying).
    let binding = match crate::cookies::one(&headers, crate::cookies::SIGNUP_COOKIE) {
        Ok(Some(b)) if !b.is_empty() => crate::tokens::hash_refresh_token(b),
        Ok(_) => return Err(ApiError::CodeExpired),
        Err(crate::cookies::Duplicate) => return Err(ApiError::DuplicateCookie),
    };
    let jkt = dpop.sign_in_binding(&headers, SIGNUP_VERIFY_PATH).await?;
    let now = otp.now();
    let usable = store.user_by_email(&email).await?.is_none();
    let hit = otp
        .check(CodePurpose::SignUp, &email, req.code.trim(), usable)
        .await?;
    otp.accept(CodePurpose::SignUp, hit, &email).await?;
    let pending = store
        .take_pending_signup(&binding, &email, now)
        .await?
        .ok_or(ApiError::CodeExpired)?;
    let id = crate::tokens::random_id();
    let created = store
        .create_user(&NewUser {
            id: &id,
            email: &email,
            roles: &["user".to_owned()],
            name: &pending.name,
            password_hash: &pending.password_hash,
            email_verified_at: Some(now),
            password_unproved: false,
            claims: "{}",
            now,
        })
        .await?;
    // Another sign-up of the address won meanwhile: this code created nothing.
    let user = match (created, store.user_by_id(&id).await?) {
        (true, Some(user)) => user,
        _ => return Err(ApiError::InvalidCode { attempts_left: 0 }),
    };
    tracing::info!(target: "audit", event = "signed_up", user = %user.id);
    sessions
        .open(&user, user_agent(&headers), jkt.as_deref(), SignIn::SignUp)
        .await
}

/// `POST /auth/otp/verify`: a session exactly like a password login, or a typed refusal.
#[allow(clippy::too_many_arguments)]
pub async fn code_sign_in(
    _: Csrf,
    State(codes): State<Codes>,
    State(sessions): State<Sessions>,
    State(passkeys): State<crate::passkeys::Passkeys>,
    State(dpop): State<Dpop>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Issued, ApiError> {
    let otp = codes.enabled()?;
    otp.admit(client).await?;
    let email = valid_email(&req.email)?;
    let code = req.code.trim();
    // DPoP before the code: a nonce retry uses no attempt.
    let jkt = dpop
        .sign_in_binding(&headers, crate::otp::VERIFY_PATH)
        .await?;
    let usable = otp.may_sign_in(&email).await?;
    let hit = otp.check(CodePurpose::SignIn, &email, code, usable).await?;
    otp.accept(CodePurpose::SignIn, hit, &email).await?;
    let user = otp
        .account(&email, otp.now())
        .await?
        .ok_or(ApiError::InvalidCode { attempts_left: 0 })?;
    // A password a stranger chose ends first, with the second factor they may have set up.
    sessions.end_unproved_password(&user).await?;
    // An account whose sign-ins need a second factor: its passkey too (the code proved the
    // mailbox only).
    crate::passkeys::require_second_factor(
        &passkeys,
        &user,
        jkt.as_deref(),
        crate::passkeys::FirstFactor::Code,
        None,
    )
    .await?;
    // The code that came back proved the address (the passkey too, if the account needs one).
    sessions.address_proved(&user).await?;
    sessions
        .open(
            &user,
            user_agent(&headers),
            jkt.as_deref(),
            SignIn::EmailCode,
        )
        .await
}

/// A "mail me a code" endpoint: the same 202 for every address; the code (if the address may
/// use it) after the answer.
async fn code_start(
    codes: &Codes,
    client: ClientIp,
    email: &str,
    purpose: CodePurpose,
) -> Result<Response, ApiError> {
    let otp = codes.enabled()?;
    otp.admit(client).await?;
    let email = valid_email(email)?;
    let now = otp.now();
    otp.count_send(&email, now).await?;
    otp.issue_later(purpose, email, now);
    Ok(accepted(otp))
}

/// `POST /auth/email/verify/start`: a code to an account whose address is not verified yet, or
/// whose password may be a stranger's ([`crate::store::Store::address_verifiable`]).
pub async fn email_verify_start(
    _: Csrf,
    State(codes): State<Codes>,
    client: ClientIp,
    JsonBody(req): JsonBody<EmailRequest>,
) -> Result<Response, ApiError> {
    code_start(&codes, client, &req.email, CodePurpose::VerifyEmail).await
}

/// `POST /auth/email/verify`: the code marks the address verified (204). A password a stranger
/// may have chosen ([`crate::store::Store::password_mark`] 1) is kept, its mark with it (the
/// owner's first sign-in by the address ends it: crate::sessions::Sessions::address_proved),
/// unless the code comes in a session of the account: then whoever holds the password holds
/// the mailbox too, and the mark ends.
pub async fn email_verify(
    _: Csrf,
    State(codes): State<Codes>,
    State(store): State<Store>,
    client: ClientIp,
    headers: HeaderMap,
    signed_in: Result<crate::extract::Authed, ApiError>,
    JsonBody(req): JsonBody<CodeRequest>,
) -> Result<Response, ApiError> {
    let otp = codes.enabled()?;
    otp.admit(client).await?;
    // Sent in a session that does not verify (an expired token, a proof refused): said before
    // the code is spent, rather than spending it on a verification that keeps the mark.
    let signed_in = match signed_in {
        Err(e) if headers.contains_key(axum::http::header::AUTHORIZATION) => return Err(e),
        s => s.ok(),
    };
    let email = valid_email(&req.email)?;
    let user = store.user_by_email(&email).await?.map(|(u, _)| u);
    // The password's mark is read for every address, known or not, verified or not: read only
    // for a verified account's (on the writer, which queues behind every write), the time of
    // the answer told which addresses are verified accounts.
    let mark = store
        .password_mark(user.as_ref().map_or("", |u| u.id.as_str()))
        .await?;
    let usable = user
        .as_ref()
        .is_some_and(|u| crate::store::Store::verifiable(u, mark));
    let hit = otp
        .check(CodePurpose::VerifyEmail, &email, req.code.trim(), usable)
        .await?;
    otp.accept(CodePurpose::VerifyEmail, hit, &email).await?;
    store.set_email_verified(&email, otp.now()).await?;
    if let (Some(user), Some(crate::extract::Authed(claims))) = (&user, &signed_in)
        && claims.sub == user.id
    {
        store.password_owned(&user.id).await?;
    }
    tracing::info!(target: "audit", event = "email_verified");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /auth/password/reset/start`: a code to an account's address.
pub async fn reset_start(
    _: Csrf,
    State(codes): State<Codes>,
    client: ClientIp,
    JsonBody(req): JsonBody<EmailRequest>,
) -> Result<Response, ApiError> {
    code_start(&codes, client, &req.email, CodePurpose::ResetPassword).await
}

/// `POST /auth/password/reset`: the code and a new password. The password is changed, every
/// session of the account revoked (on every instance), and the caller signed in anew; for an
/// account whose sign-ins need its passkey, all three once the passkey answers (401
/// `second_factor_required` first, nothing changed).
#[allow(clippy::too_many_arguments)]
pub async fn reset(
    _: Csrf,
    State(codes): State<Codes>,
    State(store): State<Store>,
    State(passwords): State<Passwords>,
    State(sessions): State<Sessions>,
    State(dpop): State<Dpop>,
    State(passkeys): State<crate::passkeys::Passkeys>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<ResetRequest>,
) -> Result<Issued, ApiError> {
    let otp = codes.enabled()?;
    otp.admit(client).await?;
    let email = valid_email(&req.email)?;
    // The new password is checked before the code: a weak one costs no attempt.
    check_new(&req.new_password, &email)?;
    let jkt = dpop.sign_in_binding(&headers, RESET_PATH).await?;
    let user = store.user_by_email(&email).await?.map(|(u, _)| u);
    let hit = otp
        .check(
            CodePurpose::ResetPassword,
            &email,
            req.code.trim(),
            user.is_some(),
        )
        .await?;
    let user = user.ok_or(ApiError::InvalidCode { attempts_left: 0 })?;
    // Hashed before the code is used up: a busy hasher (503) leaves the code for a retry, and
    // gives its attempt back.
    let hash = match passwords.hash_new(&user, &req.new_password).await {
        Ok(hash) => hash,
        Err(e) => {
            otp.unused(CodePurpose::ResetPassword, &hit, &email).await?;
            return Err(e);
        }
    };
    otp.accept(CodePurpose::ResetPassword, hit, &email).await?;
    // A password a stranger chose ends first, with the second factor they may have set up.
    sessions.end_unproved_password(&user).await?;
    // An account whose sign-ins need its passkey: the code proved the mailbox only, so nothing
    // changes until the passkey answers (the new password waits in the pending sign-in). Set
    // here at once, the mailbox alone would hold the password, and a password sign-in completed
    // by a code mailed again would be the mailbox alone too.
    crate::passkeys::require_second_factor(
        &passkeys,
        &user,
        jkt.as_deref(),
        crate::passkeys::FirstFactor::Code,
        Some(hash.clone()),
    )
    .await?;
    // The code came back: the address is the user's.
    store.set_email_verified(&email, otp.now()).await?;
    // `None` only if the account went away meanwhile: nothing to open then.
    let version = sessions
        .replace_password(&user.id, &hash, None, None, RevokeReason::PasswordReset)
        .await?
        .ok_or(ApiError::InvalidCode { attempts_left: 0 })?;
    codes.notify(&user.id, crate::otp::Notice::PasswordReset);
    // Opened only while the new password is the account's (another reset may follow).
    sessions
        .open_proved(
            &user,
            user_agent(&headers),
            jkt.as_deref(),
            SignIn::PasswordReset,
            Some(version),
        )
        .await
}

/// `POST /auth/password/change` (access token, CSRF header): the current password, then the
/// new one; every other session of the account is revoked, this one goes on (204).
#[allow(clippy::too_many_arguments)]
pub async fn change(
    _: Csrf,
    State(codes): State<Codes>,
    State(passwords): State<Passwords>,
    State(sessions): State<Sessions>,
    State(store): State<Store>,
    client: ClientIp,
    headers: HeaderMap,
    Authed(claims): Authed,
    JsonBody(req): JsonBody<ChangeRequest>,
) -> Result<Response, ApiError> {
    passwords.admit(&client.key()).await?;
    let user = store
        .user_by_id(&claims.sub)
        .await?
        .ok_or(ApiError::InvalidToken(crate::tokens::Invalid::Revoked))?;
    check_new(&req.new_password, &user.email)?;
    if req.current_password.is_empty() || req.current_password.len() > 1024 {
        return Err(ApiError::WrongPassword);
    }
    // The same check as a sign-in (throttled as a sign-in from this browser); an unverified address
    // does not matter here (the password was right).
    // A wrong one is 403, not 401: the caller is authenticated, and a 401 would make the
    // client refresh its token and replay the request (a second guess counted).
    let proved = match passwords
        .check_current(
            &user.email,
            &req.current_password,
            &client.key(),
            crate::cookies::known_browser(&headers),
        )
        .await
    {
        Ok(proved) if proved.user.id == user.id => proved,
        Ok(_) | Err(ApiError::InvalidCredentials) => return Err(ApiError::WrongPassword),
        Err(e) => return Err(e),
    };
    let hash = passwords.hash_new(&user, &req.new_password).await?;
    // Only if the password proved is still the account's, and this session still live: a
    // reset committed meanwhile (the owner ending a thief's sessions) is not undone.
    let replaced = sessions
        .replace_password(
            &user.id,
            &hash,
            Some(proved.version),
            Some(&claims.sid),
            RevokeReason::PasswordChanged,
        )
        .await?;
    let Some(version) = replaced else {
        return Err(ApiError::WrongPassword);
    };
    codes.notify(&user.id, crate::otp::Notice::PasswordChanged);
    // The new version ends every known-browser cookie of the old one: this browser's is made
    // again.
    let mut res = StatusCode::NO_CONTENT.into_response();
    crate::cookies::append(&mut res, &sessions.known_browser(&user.id, version));
    Ok(res)
}
