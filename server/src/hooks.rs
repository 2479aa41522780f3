//! `/test/*`: counters, fault injection, the clock, keys and users, for the browser tests and
//! benchmarks.
//!
//! Compiled only with the `test-hooks` Cargo feature (never a default: `cargo build --release`,
//! `cargo install` and `make demo` leave it out, and with it the counters and faults), mounted
//! only with `--test-hooks` on a loopback address, and even then answered only to requests
//! carrying the per-start secret in `X-Test-Hooks-Secret` (anything else gets the same 404 as
//! a binary without the feature). The faults are a layer around the app: no handler knows them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::api::{JWKS_PATH, METADATA_PATH};
use crate::clock::Clock;
use crate::cookies::REFRESH_COOKIE;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::keys::Keys;
use crate::password::Passwords;
use crate::serve::DropConnection;
use crate::sessions::{Event, Observer, Sessions};
use crate::store::{RevokeReason, Store};

/// The header that carries the secret.
pub const SECRET_HEADER: &str = "x-test-hooks-secret";

/// What the hooks reach.
pub struct Hooks {
    pub secret: String,
    pub clock: Clock,
    pub store: Store,
    pub keys: Keys,
    pub passwords: Passwords,
    pub sessions: Sessions,
    pub counters: Arc<Counters>,
    faults: Faults,
}

/// What the counters count (`/test/stats`).
#[derive(Default)]
pub struct Counters {
    pub refresh_calls: AtomicU64,
    pub refresh_rotated: AtomicU64,
    pub reuse_detections: AtomicU64,
    pub revocations: AtomicU64,
    pub logins: AtomicU64,
    pub logouts: AtomicU64,
}

#[derive(Default)]
struct Faults {
    refresh_latency_ms: AtomicU64,
    refresh_fail_next: AtomicU64,
    refresh_drop_next: AtomicU64,
    refresh_gateway_401_next: AtomicU64,
    documents_padding_bytes: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::SeqCst);
}

/// Decrements `counter` if positive; true if it was.
fn take(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Counters {
    /// Counts the sessions' events.
    pub fn observe(self: &Arc<Self>) -> Observer {
        let c = self.clone();
        Arc::new(move |e: &Event<'_>| match e {
            Event::Opened { .. } => bump(&c.logins),
            Event::Rotated { .. } => bump(&c.refresh_rotated),
            Event::Reused { .. } => {
                bump(&c.reuse_detections);
                bump(&c.revocations);
            }
            Event::Revoked { reason, .. } => {
                bump(&c.revocations);
                if *reason == RevokeReason::Logout {
                    bump(&c.logouts);
                }
            }
        })
    }
}

impl Hooks {
    pub fn new(
        secret: String,
        clock: Clock,
        store: Store,
        keys: Keys,
        passwords: Passwords,
        sessions: Sessions,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        Arc::new(Hooks {
            secret,
            clock,
            store,
            keys,
            passwords,
            sessions,
            counters,
            faults: Faults::default(),
        })
    }
}

/// The routes, to be nested at `/test`. Every request, matched or not, first shows the secret.
pub fn routes(hooks: Arc<Hooks>) -> Router {
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
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(
            hooks.clone(),
            require_secret,
        ))
        .with_state(hooks)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn require_secret(State(hooks): State<Arc<Hooks>>, req: Request, next: Next) -> Response {
    let expected = hooks.secret.as_bytes();
    let shown = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    if !shown.is_some_and(|s| bool::from(s.ct_eq(expected))) {
        tracing::warn!(path = %format!("/test{}", req.uri().path()), "a /test request without the right X-Test-Hooks-Secret");
        return ApiError::NotFound.into_response();
    }
    next.run(req).await
}

/// The faults of `/auth/refresh`, as a layer around the whole app: a delay, a 503, a proxy's
/// HTML 401, or (after a successful rotation) a connection closed without an answer.
pub async fn refresh_faults(State(hooks): State<Arc<Hooks>>, req: Request, next: Next) -> Response {
    if req.uri().path() != "/auth/refresh" || req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    bump(&hooks.counters.refresh_calls);
    let f = &hooks.faults;
    let latency = f.refresh_latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
    }
    if take(&f.refresh_fail_next) {
        return ApiError::Unavailable.into_response();
    }
    if take(&f.refresh_gateway_401_next) {
        // What a proxy in front of the server may answer: its own page, not the protocol's JSON.
        let page = "<html><head><title>401 Authorization Required</title></head>\n\
                    <body><center><h1>401 Authorization Required</h1></center></body></html>\n";
        return (
            StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "text/html")],
            page,
        )
            .into_response();
    }
    let mut res = next.run(req).await;
    if res.status() == StatusCode::OK && take(&f.refresh_drop_next) {
        res.extensions_mut().insert(DropConnection);
    }
    res
}

/// The fault of the metadata and the JWKS, as a layer around the whole app: their JSON followed
/// by that many spaces, streamed with no `Content-Length` (a verifier learns the length only by
/// reading it).
pub async fn document_faults(
    State(hooks): State<Arc<Hooks>>,
    req: Request,
    next: Next,
) -> Response {
    let padding = hooks.faults.documents_padding_bytes.load(Ordering::SeqCst);
    if padding == 0 || ![METADATA_PATH, JWKS_PATH].contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let (mut parts, body) = next.run(req).await.into_parts();
    let Ok(json) = axum::body::to_bytes(body, 1 << 20).await else {
        return ApiError::Unavailable.into_response();
    };
    let chunks = [json, vec![b' '; padding as usize].into()].map(Ok::<_, std::io::Error>);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from_stream(tokio_stream::iter(chunks)))
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
async fn redirect(Query(q): Query<RedirectQuery>) -> Result<Response, ApiError> {
    if !(q.to.starts_with("http://") || q.to.starts_with("https://")) {
        return Err(ApiError::InvalidRequest("to must be an http(s) URL".into()));
    }
    let location = HeaderValue::from_str(&q.to)
        .map_err(|_| ApiError::InvalidRequest("to is not a valid header value".into()))?;
    Ok((
        StatusCode::TEMPORARY_REDIRECT,
        [(header::LOCATION, location)],
    )
        .into_response())
}

/// Which credentials reached the server: lets a browser test prove what a request carried.
/// `?status=401` answers with that status (an API that refuses whatever the token).
async fn echo(Query(q): Query<EchoQuery>, headers: HeaderMap) -> Response {
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
    (
        status,
        Json(json!({
            "authorization": header("authorization"),
            "cookie": header("cookie").map(|c| redact_refresh(&c)),
            "x-tokenwarden": header("x-tokenwarden"),
        })),
    )
        .into_response()
}

async fn stats(State(hooks): State<Arc<Hooks>>) -> Response {
    let c = &hooks.counters;
    let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
    let hasher = &hooks.passwords.hasher;
    Json(json!({
        "refresh_calls": n(&c.refresh_calls),
        "refresh_rotated": n(&c.refresh_rotated),
        "reuse_detections": n(&c.reuse_detections),
        "revocations": n(&c.revocations),
        "logins": n(&c.logins),
        "logouts": n(&c.logouts),
        "password_verifications": hasher.verifications(),
        "argon2_peak": hasher.peak(),
    }))
    .into_response()
}

async fn reset(State(hooks): State<Arc<Hooks>>) -> Result<Response, ApiError> {
    let (c, f) = (&hooks.counters, &hooks.faults);
    for a in [
        &c.refresh_calls,
        &c.refresh_rotated,
        &c.reuse_detections,
        &c.revocations,
        &c.logins,
        &c.logouts,
        &f.refresh_latency_ms,
        &f.refresh_fail_next,
        &f.refresh_drop_next,
        &f.refresh_gateway_401_next,
        &f.documents_padding_bytes,
    ] {
        a.store(0, Ordering::SeqCst);
    }
    hooks.passwords.ip_limiter.reset(&hooks.store).await?;
    hooks.sessions.reset_limits().await?;
    hooks.clock.reset();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsRequest {
    /// Delay every /auth/refresh by this much.
    refresh_latency_ms: Option<u64>,
    /// Answer the next N refreshes with 503.
    refresh_fail_next: Option<u64>,
    /// Commit the next N rotations, then close the connection without answering.
    refresh_drop_next: Option<u64>,
    /// Answer the next N refreshes with a proxy's HTML 401 page.
    refresh_gateway_401_next: Option<u64>,
    /// Follow the metadata's and the JWKS's JSON with this many spaces (at most 16 MiB).
    documents_padding_bytes: Option<u64>,
}

async fn faults(
    State(hooks): State<Arc<Hooks>>,
    JsonBody(req): JsonBody<FaultsRequest>,
) -> Response {
    let f = &hooks.faults;
    if let Some(v) = req.refresh_latency_ms {
        f.refresh_latency_ms.store(v.min(60_000), Ordering::SeqCst);
    }
    if let Some(v) = req.documents_padding_bytes {
        f.documents_padding_bytes
            .store(v.min(16 << 20), Ordering::SeqCst);
    }
    for (value, slot) in [
        (req.refresh_fail_next, &f.refresh_fail_next),
        (req.refresh_drop_next, &f.refresh_drop_next),
        (req.refresh_gateway_401_next, &f.refresh_gateway_401_next),
    ] {
        if let Some(v) = value {
            slot.store(v, Ordering::SeqCst);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    advance_secs: i64,
}

/// Moves the server's clock forward (session expiry, token exp, nonces, `Date`) without
/// sleeping.
async fn clock(State(hooks): State<Arc<Hooks>>, JsonBody(c): JsonBody<ClockRequest>) -> Response {
    hooks.clock.advance(c.advance_secs);
    Json(json!({ "now": hooks.clock.now() })).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the new key is published before it signs (default 0: at once).
    #[serde(default)]
    publish_secs: i64,
}

async fn rotate_key(
    State(hooks): State<Arc<Hooks>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Rotate = if body.is_empty() {
        Rotate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?
    };
    let now = hooks.clock.now();
    let kid = hooks
        .keys
        .rotate(&hooks.store, now, req.publish_secs)
        .await?;
    Ok(Json(json!({ "kid": kid })).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Revoke {
    /// Defaults to the current signing key.
    kid: Option<String>,
}

async fn revoke_key(
    State(hooks): State<Arc<Hooks>>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: Revoke = if body.is_empty() {
        Revoke::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidRequest(e.to_string()))?
    };
    let kid = match req.kid {
        Some(kid) => kid,
        None => hooks
            .keys
            .current()
            .signing
            .as_ref()
            .map(|(kid, _)| kid.clone())
            .ok_or(ApiError::NotFound)?,
    };
    if !hooks
        .keys
        .revoke(&hooks.store, &kid, hooks.clock.now())
        .await?
    {
        return Err(ApiError::NotFound);
    }
    Ok(Json(json!({ "revoked": kid })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserRequest {
    email: String,
    password: String,
    name: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn create_user(
    State(hooks): State<Arc<Hooks>>,
    JsonBody(u): JsonBody<NewUserRequest>,
) -> Result<Response, ApiError> {
    let id = crate::users::create(
        &hooks.store,
        &u.email,
        &u.password,
        &u.name,
        &u.roles,
        hooks.clock.now(),
    )
    .await
    .map_err(ApiError::Internal)?
    .ok_or_else(|| ApiError::InvalidRequest("a user with this email exists".into()))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))).into_response())
}
