//! `/auth/*`: login, refresh (rotation with reuse detection), logout, sessions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cookies;
use crate::error::ApiError;
use crate::extract::{Authed, JsonBody, require_csrf};
use crate::net::{ClientIp, bucket_key};
use crate::rotation::{self, Decision};
use crate::serve::DropConnection;
use crate::state::{AppState, Hooks};
use crate::store::{Granted, Rotation, User};
use crate::tokens::{self, hash_refresh_token, is_well_formed_refresh_token, random_token};

#[derive(Deserialize)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
}

/// Lower-cased, trimmed; the key of the per-account throttle whether the account exists or not.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The token response and both cookies, for a new session or a rotation.
/// `jkt`: the DPoP key the session is bound to (`cnf.jkt`, `token_type: "DPoP"`).
fn grant(
    state: &AppState,
    granted: &Granted,
    refresh: &str,
    now: i64,
    jkt: Option<&str>,
) -> Result<Response, ApiError> {
    let ring = state.keys.current();
    let (jwt, _) = tokens::issue_bound(
        &ring,
        &state.audience,
        &granted.user,
        &granted.session_id,
        now,
        state.settings.access_ttl,
        jkt,
    )?;
    let mut res = Json(TokenResponse {
        access_token: &jwt,
        token_type: if jkt.is_some() { "DPoP" } else { "Bearer" },
        expires_in: state.settings.access_ttl,
    })
    .into_response();
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(cookies::set(
        res,
        refresh,
        (granted.refresh_expires_at - now).max(0),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = state.now();
    if let Some(retry_after) = state
        .ip_limiter
        .check(&state.store, &bucket_key(client.0), now)
        .await?
    {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let email = normalize_email(&req.email);
    if email.is_empty() || email.len() > 254 || req.password.is_empty() || req.password.len() > 1024
    {
        return Err(ApiError::InvalidRequest(
            "email and password are required (email at most 254, password at most 1024 bytes)"
                .into(),
        ));
    }
    // DPoP before the password: a nonce retry costs no verification and counts no failure.
    let jkt = crate::dpop::login_binding(&state, &headers, "/auth/login").await?;
    let settings = &state.settings;
    // At most a bounded number of argon2 runs at once, a bounded queue, then 503.
    let turn = state
        .hasher
        .turn()
        .await
        .map_err(|_| ApiError::Busy { retry_after: 1 })?;
    // Counted before the password is checked and in one statement, so concurrent guesses
    // cannot all read a count under the limit; per account *and* client, so a stranger's
    // guesses cannot lock the owner out.
    let client_key = bucket_key(client.0);
    let (attempts, window_start) = state
        .store
        .count_login_attempt(&email, &client_key, now, settings.login_window)
        .await?;
    if attempts > settings.login_max_failures {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_start + settings.login_window - now,
        });
    }

    let found = state.store.user_by_email(&email).await?;
    // Unknown emails verify against a dummy hash: same work, same time, same answer.
    let phc = found.as_ref().map_or(state.dummy_hash.as_str(), |(_, h)| h);
    let matches = turn.verify(&req.password, phc).await;
    drop(turn);
    let Some((user, _)) = found.filter(|_| matches) else {
        return Err(ApiError::InvalidCredentials);
    };
    state
        .store
        .clear_login_attempts(&email, &client_key)
        .await?;

    open_session(&state, &user, &headers, jkt, now, "login").await
}

/// Starts a session for `user` and answers with its tokens and cookies (bound to `jkt` when
/// the request carried a DPoP proof): the one way a session begins, after a password
/// (`login`) or an emailed code (`crate::otp`).
pub(crate) async fn open_session(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
    jkt: Option<String>,
    now: i64,
    event: &'static str,
) -> Result<Response, ApiError> {
    let settings = &state.settings;
    // A new key for each login: a key already bound to a session is refused (the swap attack
    // in docs/PROTOCOL.md, "One key per login").
    if let Some(jkt) = &jkt
        && state.store.key_bound(jkt).await?
    {
        return Err(ApiError::DpopProof(tokenwarden_dpop::ProofError::KeyInUse));
    }
    let refresh = random_token();
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect();
    let granted = state
        .store
        .create_session(
            &tokens::random_id(),
            user,
            &hash_refresh_token(&refresh),
            &user_agent,
            now,
            settings.idle_ttl,
            settings.absolute_ttl,
        )
        .await?;
    if let Some(jkt) = &jkt {
        state.store.bind_session(&granted.session_id, jkt).await?;
    }
    state.hook(|h| Hooks::bump(&h.logins));
    tracing::info!(target: "audit", event, user = %user.id, session = %granted.session_id);
    grant(state, &granted, &refresh, now, jkt.as_deref())
}

pub async fn refresh(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    state.hook(|h| Hooks::bump(&h.refresh_calls));
    let drop_response = match crate::hooks::before_refresh(&state).await {
        Ok(drop) => drop,
        Err(injected) => return Ok(injected),
    };
    let presented = cookies::refresh_token(&headers)
        .map_err(|_| ApiError::DuplicateCookie)?
        .filter(|t| is_well_formed_refresh_token(t))
        .ok_or(ApiError::InvalidGrant)?;
    let now = state.now();
    let too_many = |retry_after| ApiError::TooManyRequests { retry_after };
    if let Some(retry_after) = state
        .refresh_ip_limiter
        .check(&state.store, &bucket_key(client.0), now)
        .await?
    {
        return Err(too_many(retry_after));
    }
    let presented = hash_refresh_token(presented);
    // The read pool answers unknown tokens, dead sessions and capped tokens: a flood of those
    // never takes the one writer.
    let found = state
        .store
        .presented_token(&presented)
        .await?
        .ok_or(ApiError::InvalidGrant)?;
    // A bound session's proof is checked before anything is decided or written.
    let jkt = crate::dpop::refresh_binding(&state, &headers, found.dpop_jkt.as_deref()).await?;
    match rotation::decide(found.token, found.family, now, state.settings.rotation) {
        Decision::Invalid => return Err(ApiError::InvalidGrant),
        Decision::Throttled { retry_after } => return Err(too_many(retry_after)),
        // Detection is never throttled.
        Decision::Reuse => {}
        Decision::Claim { .. } | Decision::Repeat { .. } | Decision::Reissue { .. } => {
            if let Some(retry_after) = state
                .refresh_session_limiter
                .check(&state.store, &found.session_id, now)
                .await?
            {
                return Err(too_many(retry_after));
            }
        }
    }
    let child = random_token();
    let outcome = state
        .store
        .rotate(
            &presented,
            &hash_refresh_token(&child),
            now,
            state.settings.idle_ttl,
            state.settings.rotation,
            Some(&found),
        )
        .await?;
    match outcome {
        Rotation::Rotated(granted) => {
            state.hook(|h| Hooks::bump(&h.refresh_rotated));
            let mut res = grant(&state, &granted, &child, now, jkt.as_deref())?;
            if drop_response {
                res.extensions_mut().insert(DropConnection);
            }
            Ok(res)
        }
        Rotation::Reused {
            session_id,
            user_id,
        } => {
            state.revoke_session_tokens(&session_id);
            state.hook(|h| {
                Hooks::bump(&h.reuse_detections);
                Hooks::bump(&h.revocations);
            });
            tracing::warn!(
                target: "audit",
                event = "token_reused",
                user = %user_id,
                session = %session_id,
                "refresh token reused: session revoked"
            );
            Err(ApiError::TokenReused)
        }
        Rotation::Invalid => Err(ApiError::InvalidGrant),
        Rotation::Throttled { retry_after } => Err(too_many(retry_after)),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    let now = state.now();
    let mut sessions = Vec::new();
    let mut bound_to = Vec::new();
    if let Some(token) = cookies::refresh_token(&headers)
        .ok()
        .flatten()
        .filter(|t| is_well_formed_refresh_token(t))
        && let Some((sid, jkt)) = state
            .store
            .session_binding(&hash_refresh_token(token))
            .await?
    {
        sessions.push(sid);
        bound_to.extend(jkt);
    }
    // A token that no longer verifies is simply ignored: logout is idempotent.
    let access = crate::extract::access_token(&headers);
    let claims = access.and_then(|t| crate::extract::authenticate(&state, t).ok());
    if let Some(cnf) = claims.as_ref().and_then(|c| c.cnf.as_ref()) {
        bound_to.push(cnf.jkt.clone());
    }
    // Bound sessions: nothing is revoked without a proof by their key.
    let jkts: Vec<&str> = bound_to.iter().map(String::as_str).collect();
    crate::dpop::check_logout(&state, &headers, access.filter(|_| claims.is_some()), &jkts).await?;
    if let Some(claims) = claims {
        state.store.deny_token(&claims.jti, claims.exp).await?;
        state
            .revocations
            .deny_token(claims.jti.clone(), claims.exp + state.settings.leeway);
        sessions.push(claims.sid);
    }
    sessions.dedup();
    for sid in sessions {
        if state
            .store
            .revoke_session(&sid, None, "logout", now)
            .await?
        {
            state.revoke_session_tokens(&sid);
            state.hook(|h| {
                Hooks::bump(&h.revocations);
                Hooks::bump(&h.logouts);
            });
            tracing::info!(target: "audit", event = "logout", session = %sid);
        }
    }
    Ok(cookies::clear(StatusCode::NO_CONTENT.into_response()))
}

pub async fn list_sessions(
    State(state): State<AppState>,
    Authed(claims): Authed,
) -> Result<Response, ApiError> {
    let sessions = state.store.live_sessions(&claims.sub, state.now()).await?;
    let sessions: Vec<_> = sessions
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
    Ok(Json(json!({ "sessions": sessions })).into_response())
}

pub async fn revoke_session(
    State(state): State<AppState>,
    Authed(claims): Authed,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id.len() > 64 {
        return Err(ApiError::NotFound);
    }
    let revoked = state
        .store
        .revoke_session(&id, Some(&claims.sub), "revoked_by_user", state.now())
        .await?;
    if !revoked {
        return Err(ApiError::NotFound);
    }
    state.revoke_session_tokens(&id);
    state.hook(|h| Hooks::bump(&h.revocations));
    tracing::info!(target: "audit", event = "session_revoked", user = %claims.sub, session = %id);
    Ok(StatusCode::NO_CONTENT.into_response())
}
