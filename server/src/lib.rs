//! tokenwarden-server: the reference auth server of tokenwarden.
//!
//! `app(state)` is the whole HTTP surface as one axum `Router`; `serve::serve` runs it.
//! The protocol is specified in `docs/PROTOCOL.md`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod api;
pub mod auth;
pub mod config;
pub mod cookies;
pub mod dpop;
pub mod error;
pub mod extract;
pub mod fleet;
pub mod hooks;
pub mod kek;
pub mod keys;
pub mod net;
pub mod otp;
pub mod password;
pub mod rotation;
pub mod serve;
pub mod state;
pub mod store;
pub mod tokens;
pub mod verified;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{any, delete, get, post};
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

pub use config::Settings;
pub use state::AppState;
pub use store::Store;

use error::ApiError;

/// Largest request body accepted by any endpoint.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The policy of the pages served from `www/`: scripts and wasm from this origin only, no
/// inline script, no framing. `wasm-unsafe-eval` is what compiling the `.wasm` needs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// [`CONTENT_SECURITY_POLICY`] with `connect_src` (checked origins) added to `connect-src`.
pub fn content_security_policy(connect_src: &[String]) -> String {
    let mut extra = String::new();
    for origin in connect_src {
        extra.push(' ');
        extra.push_str(origin);
    }
    CONTENT_SECURITY_POLICY.replace("connect-src 'self'", &format!("connect-src 'self'{extra}"))
}

/// `ServeDir` with the security headers every static page gets.
fn static_files(
    dir: std::path::PathBuf,
    csp: HeaderValue,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response<tower_http::services::fs::ServeFileSystemResponseBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    let not_found = || async { ApiError::NotFound };
    let service = ServeDir::new(dir).not_found_service(axum::routing::any(not_found));
    let headers = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    let [a, b, c, d, e] =
        headers.map(|(name, value)| SetResponseHeaderLayer::if_not_present(name, value));
    a.layer(b.layer(c.layer(d.layer(e.layer(service)))))
}

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let mut router = Router::new()
        .route("/auth/login", post(auth::login))
        .route("/auth/refresh", post(auth::refresh))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/otp/start", post(otp::start))
        .route("/auth/otp/verify", post(otp::verify))
        .route("/auth/sessions", get(auth::list_sessions))
        .route("/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/api/me", get(api::me).patch(api::update_me))
        .route("/.well-known/jwks.json", get(api::jwks))
        .route("/healthz", get(|| async { "ok" }));
    // Demo only: exists with --demo and no SMTP server (and answers loopback clients only).
    if state
        .otp
        .as_ref()
        .is_some_and(|o| o.mailer.demo_mailbox().is_some())
        && settings.demo
    {
        router = router.route("/demo/mailbox", get(otp::demo_mailbox));
    }
    #[cfg(feature = "test-hooks")]
    let hooks_mounted = settings.test_hooks;
    #[cfg(not(feature = "test-hooks"))]
    let hooks_mounted = false;
    #[cfg(feature = "test-hooks")]
    if hooks_mounted {
        router = router.nest("/test", hooks::routes(state.clone()));
    }
    if !hooks_mounted {
        router = router
            .route("/test", any(hooks::not_found))
            .route("/test/{*rest}", any(hooks::not_found));
    }
    // The origins were checked at start (config.rs): the policy is a valid header value.
    let csp = HeaderValue::from_str(&content_security_policy(&settings.connect_src))
        .unwrap_or(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    if let Some(pkg) = &settings.pkg_dir {
        router = router.nest_service("/pkg", static_files(pkg.clone(), csp.clone()));
    }
    router = match &settings.www_dir {
        Some(www) => router.fallback_service(static_files(www.clone(), csp)),
        None => router.fallback(|| async { ApiError::NotFound }),
    };
    let nonce = axum::middleware::map_response_with_state(state.clone(), dpop::add_nonce);
    let mut router = router
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state);
    if !settings.allowed_origins.is_empty() {
        let origins: Vec<HeaderValue> = settings
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        let mut allow_headers = vec![header::AUTHORIZATION, header::CONTENT_TYPE];
        // A valid header name (a test in `tokenwarden::proto` keeps it one); lower-cased here.
        allow_headers.extend(HeaderName::from_bytes(extract::CSRF_HEADER.as_bytes()).ok());
        allow_headers.push(HeaderName::from_static(tokenwarden_dpop::DPOP_HEADER));
        if hooks_mounted {
            allow_headers.push(HeaderName::from_static(hooks::SECRET_HEADER));
        }
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_credentials(true)
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers(allow_headers)
                .expose_headers([
                    header::WWW_AUTHENTICATE,
                    header::RETRY_AFTER,
                    HeaderName::from_static(tokenwarden_dpop::NONCE_HEADER),
                    header::DATE,
                ])
                .max_age(Duration::from_secs(600)),
        );
    }
    // Outermost: every response, preflights included, carries the current DPoP nonce.
    router.layer(nonce)
}

/// Creates a user; `Ok(None)` if the email is taken.
pub async fn create_user(
    store: &Store,
    email: &str,
    password: &str,
    name: &str,
    roles: &[String],
    now: i64,
) -> Result<Option<String>, String> {
    let email = auth::normalize_email(email);
    if email.is_empty() || !email.contains('@') || password.len() < 8 || name.trim().is_empty() {
        return Err("a user needs an email, a name and a password of at least 8 characters".into());
    }
    let hash = password::hash(password).await?;
    let id = tokens::random_id();
    let created = store
        .create_user(&id, &email, &hash, name.trim(), roles, now)
        .await
        .map_err(|e| e.to_string())?;
    Ok(created.then_some(id))
}

/// Re-reads signing keys every `key_poll_secs` (picks up the `keys` CLI) and prunes expired
/// revocations, sessions and login-attempt counters.
pub fn spawn_maintenance(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(state.settings.key_poll_secs));
        let mut last_purge = 0;
        let mut last_short_purge = 0;
        loop {
            tick.tick().await;
            let now = state.now();
            if let Err(e) = state.keys.reload(&state.store, now).await {
                tracing::error!(error = %e, "reloading signing keys failed");
            }
            state.revocations.prune(now);
            if now - last_short_purge >= 60 {
                last_short_purge = now;
                if let Err(e) = state.store.purge_short_lived(now).await {
                    tracing::error!(error = %e, "purging DPoP proofs and throttle windows failed");
                }
            }
            if now - last_purge > 3600 {
                last_purge = now;
                if let Err(e) = state.store.purge(now - 86_400).await {
                    tracing::error!(error = %e, "purging old sessions failed");
                }
                if let Err(e) = purge_login_attempts(&state).await {
                    tracing::error!(error = %e, "purging login-attempt counters failed");
                }
                if let Err(e) = otp::purge(&state).await {
                    tracing::error!(error = %e, "purging sign-in codes failed");
                }
            }
        }
    })
}

/// Deletes the login-attempt counters whose window has closed.
pub async fn purge_login_attempts(state: &AppState) -> Result<u64, store::StoreError> {
    state
        .store
        .purge_login_attempts(state.now() - state.settings.login_window)
        .await
}
