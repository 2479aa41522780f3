//! `/auth/*`: password login, refresh, logout, the user's sessions. Each handler takes only the
//! services it uses; the rules live in them (crate::sessions, crate::password, crate::dpop).

use crate::extract::PathParam;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::access::Access;
use crate::cookies;
use crate::dpop::Dpop;
use crate::error::ApiError;
use crate::extract::{Authed, Csrf, JsonBody, access_token, user_agent};
use crate::net::ClientIp;
use crate::password::{Passwords, normalize_email};
use crate::sessions::{Issued, Sessions, SignIn};
use crate::store::RevokeReason;

pub const LOGIN_PATH: &str = "/auth/login";
pub const REFRESH_PATH: &str = "/auth/refresh";
pub const LOGOUT_PATH: &str = "/auth/logout";

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

pub async fn login(
    State(passwords): State<Passwords>,
    State(sessions): State<Sessions>,
    State(dpop): State<Dpop>,
    State(passkeys): State<crate::passkeys::Passkeys>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Issued, ApiError> {
    passwords.admit(&client.key()).await?;
    let email = normalize_email(&req.email);
    if email.is_empty() || email.len() > 254 || req.password.is_empty() || req.password.len() > 1024
    {
        return Err(ApiError::InvalidRequest(
            "email and password are required (email at most 254, password at most 1024 bytes)"
                .into(),
        ));
    }
    // DPoP before the password: a nonce retry costs no verification and counts no failure.
    let jkt = dpop.sign_in_binding(&headers, LOGIN_PATH).await?;
    // A browser known to the account counts its own attempts (crate::password::KnownBrowsers).
    let browser = cookies::known_browser(&headers);
    let proved = passwords
        .check(&email, &req.password, &client.key(), browser)
        .await?;
    // An account that requires a second factor: the password alone opens nothing.
    crate::passkeys::require_second_factor(
        &passkeys,
        &proved.user,
        jkt.as_deref(),
        crate::passkeys::FirstFactor::Password(proved.version),
        None,
    )
    .await?;
    // Opened only if the password is still the account's: a reset committed while it was
    // being verified ended every session, and would not see this one.
    sessions
        .open_proved(
            &proved.user,
            user_agent(&headers),
            jkt.as_deref(),
            SignIn::Password,
            Some(proved.version),
        )
        .await
}

pub async fn refresh(
    _: Csrf,
    State(sessions): State<Sessions>,
    State(dpop): State<Dpop>,
    client: ClientIp,
    headers: HeaderMap,
) -> Result<Issued, ApiError> {
    let token = cookies::refresh_token(&headers)
        .map_err(|_| ApiError::DuplicateCookie)?
        .ok_or(ApiError::InvalidGrant)?;
    let presented = sessions.present(token, &client.key()).await?;
    // A bound session's proof is checked before anything is decided or written.
    dpop.refresh_binding(&headers, REFRESH_PATH, presented.bound_to())
        .await?;
    sessions.rotate(presented).await
}

pub async fn logout(
    _: Csrf,
    State(sessions): State<Sessions>,
    State(access): State<Access>,
    State(dpop): State<Dpop>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut bound_to = Vec::new();
    let mut cookie_session = None;
    // Two refresh cookies: which session the user meant is unknown, so neither is ended nor
    // cleared; the access token's session still is, and the caller is told (a 204 would leave
    // the cookie's session alive, unseen).
    let cookie = cookies::refresh_token(&headers);
    if let Ok(Some(token)) = cookie
        && let Some((sid, jkt)) = sessions.of_cookie(token).await?
    {
        cookie_session = Some(sid);
        bound_to.extend(jkt);
    }
    // A token that no longer verifies is simply ignored: logout is idempotent.
    let token = access_token(&headers);
    let claims = token.and_then(|t| access.authenticate(t).ok());
    if let Some(cnf) = claims.as_ref().and_then(|c| c.cnf.as_ref()) {
        bound_to.push(cnf.jkt.clone());
    }
    // Bound sessions: nothing is revoked without a proof by their key.
    let jkts: Vec<&str> = bound_to.iter().map(String::as_str).collect();
    dpop.check_logout(
        &headers,
        LOGOUT_PATH,
        token.filter(|_| claims.is_some()),
        &jkts,
    )
    .await?;
    sessions.logout(cookie_session, claims).await?;
    if cookie.is_err() {
        return Err(ApiError::DuplicateCookie);
    }
    Ok(cookies::clear(StatusCode::NO_CONTENT.into_response()))
}

pub async fn list_sessions(
    State(sessions): State<Sessions>,
    Authed(claims): Authed,
) -> Result<Response, ApiError> {
    let list: Vec<_> = sessions
        .list(&claims.sub)
        .await?
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "created_at": s.created_at,
                "last_used_at": s.last_used_at,
                "expires_at": s.idle_expires_at.min(s.absolute_expires_at),
                "user_agent": s.user_agent,
                "current": s.id == claims.sid,
            })
        })
        .collect();
    Ok(Json(json!({ "sessions": list })).into_response())
}

pub async fn revoke_session(
    State(sessions): State<Sessions>,
    Authed(claims): Authed,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    // No id holds U+0000 (`%00`), which PostgreSQL cannot even compare: not found.
    if id.contains('\0')
        || !sessions
            .revoke(&id, Some(&claims.sub), RevokeReason::RevokedByUser)
            .await?
    {
        return Err(ApiError::NotFound);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
