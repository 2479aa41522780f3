//! The hooks themselves (feature `test-hooks`), mounted under `/test` behind the secret.

use std::sync::atomic::Ordering;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::SECRET_HEADER;
use crate::cookies::REFRESH_COOKIE;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::{AppState, Hooks};

/// The routes, to be nested at `/test`. Every request, matched or not, first shows the secret.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .route("/faults", post(faults))
        .route("/clock", post(clock))
        .route("/keys/rotate", post(rotate_key))
        .route("/keys/revoke", post(revoke_key))
        .route("/users", post(create_user))
        .route("/echo", get(echo).post(echo))
        .route("/redirect", get(redirect))
        .fallback(super::not_found)
        .method_not_allowed_fallback(super::not_found)
        .layer(middleware::from_fn_with_state(state, require_secret))
}

async fn require_secret(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let expected = state.settings.test_hooks_secret.as_bytes();
    let shown = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    if state.hooks.is_none() || !shown.is_some_and(|s| bool::from(s.ct_eq(expected))) {
        tracing::warn!(path = %format!("/test{}", req.uri().path()), "a /test request without the right X-Test-Hooks-Secret");
        return ApiError::NotFound.into_response();
    }
    next.run(req).await
}

/// Faults for `/auth/refresh`: a delay, a 503, or (the `true` returned) a response to drop.
pub async fn before_refresh(state: &AppState) -> Result<bool, Response> {
    let Some(h) = &state.hooks else {
        return Ok(false);
    };
    let latency = h.refresh_latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if Hooks::take(&h.refresh_fail_next) {
        return Err(ApiError::Unavailable.into_response());
    }
    if Hooks::take(&h.refresh_gateway_401_next) {
        // What a proxy in front of the server may answer: its own page, not the protocol's JSON.
        let page = "<html><head><title>401 Authorization Required</title></head>\n\
                    <body><center><h1>401 Authorization Required</h1></center></body></html>\n";
        return Err((
            StatusCode::UNAUTHORIZED,
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response());
    }
    Ok(Hooks::take(&h.refresh_drop_next))
}

/// The `Cookie` header with the refresh token's value blanked: echoing it would hand an
/// `HttpOnly` cookie to the page's script.
fn redact_refresh(cookie: &str) -> String {
    cookie
        .split(';')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if name.trim() == REFRESH_COOKIE => format!("{name}=<redacted>"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

#[derive(Deserialize)]
struct EchoQuery {
    status: Option<u16>,
}

#[derive(Deserialize)]
struct RedirectQuery {
    to: String,
}

/// `307` to `?to=` (an http(s) URL): lets a browser test follow a redirect to another origin.
async fn redirect(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<RedirectQuery>,
) -> Result<Response, ApiError> {
    hooks(&state)?;
    if !(q.to.starts_with("http://") || q.to.starts_with("https://")) {
        return Err(ApiError::InvalidRequest("to must be an http(s) URL".into()));
    }
    let location = axum::http::HeaderValue::from_str(&q.to)
        .map_err(|_| ApiError::InvalidRequest("to is not a valid header value".into()))?;
    Ok((
        StatusCode::TEMPORARY_REDIRECT,
        [(axum::http::header::LOCATION, location)],
    )
        .into_response())
}

/// Which credentials reached the server: lets a browser test prove what a request carried.
/// `?status=401` answers with that status (an API that refuses whatever the token).
async fn echo(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<EchoQuery>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    hooks(&state)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = q
        .status
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok((
        status,
        Json(json!({
            "authorization": header("authorization"),
            "cookie": header("cookie").map(|c| redact_refresh(&c)),
            "x-tokenwarden": header("x-tokenwarden"),
        })),
    )
        .into_response())
}

fn hooks(state: &AppState) -> Result<&Hooks, ApiError> {
    state.hooks.as_ref().ok_or(ApiError::NotFound)
}

async fn stats(State(state): State<AppState>) -> Result<Response, ApiError> {
    let h = hooks(&state)?;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::SeqCst);
    Ok(Json(json!({
        "refresh_calls": n(&h.refresh_calls),
        "refresh_rotated": n(&h.refresh_rotated),
        "reuse_detections": n(&h.reuse_detections),
        "revocations": n(&h.revocations),
        "logins": n(&h.logins),
        "logouts": n(&h.logouts),
        "password_verifications": state.hasher.verifications(),
        "argon2_peak": state.hasher.peak(),
    }))
    .into_response())
}

async fn reset(State(state): State<AppState>) -> Result<Response, ApiError> {
    let h = hooks(&state)?;
    for c in [
        &h.refresh_calls,
        &h.refresh_rotated,
        &h.reuse_detections,
        &h.revocations,
        &h.logins,
        &h.logouts,
        &h.refresh_latency_ms,
        &h.refresh_fail_next,
        &h.refresh_drop_next,
        &h.refresh_gateway_401_next,
    ] {
        c.store(0, Ordering::SeqCst);
    }
    state.ip_limiter.reset(&state.store).await?;
    state.refresh_ip_limiter.reset(&state.store).await?;
    state.refresh_session_limiter.reset(&state.store).await?;
    state.clock.reset();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    /// Delay every /auth/refresh by this much.
    refresh_latency_ms: Option<u64>,
    /// Answer the next N refreshes with 503.
    refresh_fail_next: Option<u64>,
    /// Commit the next N rotations, then close the connection without answering.
    refresh_drop_next: Option<u64>,
    /// Answer the next N refreshes with a proxy's HTML 401 page.
    refresh_gateway_401_next: Option<u64>,
}

async fn faults(
    State(state): State<AppState>,
    JsonBody(f): JsonBody<Faults>,
) -> Result<Response, ApiError> {
    let h = hooks(&state)?;
    if let Some(v) = f.refresh_latency_ms {
        h.refresh_latency_ms.store(v.min(60_000), Ordering::SeqCst);
    }
    if let Some(v) = f.refresh_fail_next {
        h.refresh_fail_next.store(v, Ordering::SeqCst);
    }
    if let Some(v) = f.refresh_drop_next {
        h.refresh_drop_next.store(v, Ordering::SeqCst);
    }
    if let Some(v) = f.refresh_gateway_401_next {
        h.refresh_gateway_401_next.store(v, Ordering::SeqCst);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Clock {
    advance_secs: i64,
}

/// Moves the server's clock forward (session expiry, token exp) without sleeping.
async fn clock(
    State(state): State<AppState>,
    JsonBody(c): JsonBody<Clock>,
) -> Result<Response, ApiError> {
    hooks(&state)?;
    state.clock.advance(c.advance_secs);
    Ok(Json(json!({ "now": state.now() })).into_response())
}

async fn rotate_key(State(state): State<AppState>) -> Result<Response, ApiError> {
    hooks(&state)?;
    let kid = state.keys.rotate(&state.store, state.now()).await?;
    Ok(Json(json!({ "kid": kid })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Revoke {
    /// Defaults to the current signing key.
    kid: Option<String>,
}

async fn revoke_key(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    hooks(&state)?;
    let req: Revoke = if body.is_empty() {
        Revoke::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?
    };
    let kid = match req.kid {
        Some(kid) => kid,
        None => state
            .keys
            .current()
            .signing
            .as_ref()
            .map(|(kid, _)| kid.clone())
            .ok_or(ApiError::NotFound)?,
    };
    if !state.keys.revoke(&state.store, &kid, state.now()).await? {
        return Err(ApiError::NotFound);
    }
    Ok(Json(json!({ "revoked": kid })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn create_user(
    State(state): State<AppState>,
    JsonBody(u): JsonBody<NewUser>,
) -> Result<Response, ApiError> {
    hooks(&state)?;
    let id = crate::create_user(
        &state.store,
        &u.email,
        &u.password,
        &u.name,
        &u.roles,
        state.now(),
    )
    .await
    .map_err(ApiError::Internal)?
    .ok_or_else(|| ApiError::InvalidRequest("a user with this email exists".into()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}
