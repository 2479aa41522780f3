//! The composition root: [`AppState::new`] builds every service once from the settings and the
//! store; [`router`] is the whole HTTP surface. Handlers and extractors take only the services
//! they use (`State<Sessions>`, `State<Dpop>`, `ClientIp` from `Proxies`, ...): each is a
//! field of [`Services`], behind [`AppState`]'s one `Arc`, which implements `FromRef` for it.
//! Nothing but `main` and the tests imports this module, so no module depends on the whole app.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use axum::routing::{any, delete, get, post};
use tower::Layer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::access::Access;
use crate::clock::Clock;
use crate::config::{Proxies, Settings};
use crate::dpop::{Dpop, DpopError, DpopSettings};
use crate::error::ApiError;
use crate::fleet::Fleet;
use crate::keys::{KeyError, Keys};
use crate::otp::{Codes, CodesError};
use crate::password::{PasswordPolicy, Passwords};
use crate::revoked::Revoked;
use crate::sessions::{Observer, SessionPolicy, Sessions};
use crate::store::{Store, StoreError};
use crate::tokens::Audience;
use crate::{accounts, api, auth, extract, otp};

/// Largest request body accepted by any endpoint.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The policy of the pages served from `www/`: scripts and wasm from this origin only, no
/// inline script, no framing. `wasm-unsafe-eval` is what compiling the `.wasm` needs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("DPoP: {0}")]
    Dpop(#[from] DpopError),
    #[error("hashing the dummy password: {0}")]
    Password(String),
    #[error(transparent)]
    Codes(#[from] CodesError),
    #[error(transparent)]
    Passkeys(#[from] crate::passkeys::PasskeysError),
}

/// Every service, built once, behind one `Arc`: axum hands each request its own copy of the
/// state, which costs one count here, not one per service (a CPU profile of `GET /api/me` put
/// the copies and their drops at about 4 % of the server's time).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What handlers and extractors take from the state: each service, cloned from the one.
macro_rules! services {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(impl FromRef<AppState> for $ty {
            fn from_ref(state: &AppState) -> Self {
                state.0.$field.clone()
            }
        })*
    };
}

services! {
    settings: Arc<Settings>,
    clock: Clock,
    store: Store,
    keys: Keys,
    access: Access,
    dpop: Dpop,
    sessions: Sessions,
    passwords: Passwords,
    codes: Codes,
    signup: crate::accounts::Signup,
    proxies: Proxies,
    fleet: Fleet,
    feed: crate::feed::Feed,
    discovery: crate::api::Discovery,
    oidc: crate::oidc::Oidc,
    passkeys: crate::passkeys::Passkeys,
}

/// The services of [`AppState`].
pub struct Services {
    pub settings: Arc<Settings>,
    pub clock: Clock,
    pub store: Store,
    pub keys: Keys,
    pub access: Access,
    pub dpop: Dpop,
    pub sessions: Sessions,
    pub passwords: Passwords,
    pub codes: Codes,
    pub signup: crate::accounts::Signup,
    pub proxies: Proxies,
    pub fleet: Fleet,
    pub feed: crate::feed::Feed,
    pub discovery: crate::api::Discovery,
    pub oidc: crate::oidc::Oidc,
    pub passkeys: crate::passkeys::Passkeys,
    /// The `/test/*` hooks (a `test-hooks` build run with `--test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub hooks: Option<Arc<crate::hooks::Hooks>>,
}

impl AppState {
    pub async fn new(settings: Settings, store: Store) -> Result<Self, StartError> {
        Self::with_observers(settings, store, Vec::new()).await
    }

    /// [`AppState::new`], with `observers` told about every session event
    /// (crate::sessions::Event) besides the audit log.
    pub async fn with_observers(
        settings: Settings,
        store: Store,
        mut observers: Vec<Observer>,
    ) -> Result<Self, StartError> {
        let clock = Clock::default();
        let keys = Keys::new(settings.key_grace, settings.key_encryption.clone());
        keys.reload(&store, clock.now()).await?;
        let revoked = Arc::new(Revoked::new(&clock));
        let fleet = Fleet {
            store: store.clone(),
            keys: keys.clone(),
            clock: clock.clone(),
            revoked: revoked.clone(),
            access_ttl: settings.access_ttl,
            leeway: settings.leeway,
            notifications: settings.revocation_notifications,
            cursor: Arc::new(AtomicI64::new(0)),
            feed: tokio::sync::broadcast::channel(4096).0,
            in_step: crate::fleet::InStep::new(keys.clone()),
        };
        fleet.load().await?;
        let dpop = Dpop::new(
            DpopSettings {
                required: settings.dpop_required,
                nonce_secret: settings.dpop_nonce_secret.clone(),
                public_origins: settings.public_origins.clone(),
                replay_capacity: settings.dpop_replay_capacity,
            },
            store.clone(),
            clock.clone(),
            &settings.key_encryption,
        )
        .await?;
        let codes = Codes::new(
            &settings.otp,
            settings.demo,
            &settings.key_encryption,
            store.clone(),
            clock.clone(),
        )
        .await?;
        let known = crate::password::KnownBrowsers::load(&store, &settings.key_encryption)
            .await
            .map_err(StartError::Password)?;
        let passwords = Passwords::new(
            store.clone(),
            clock.clone(),
            PasswordPolicy {
                max_failures: settings.login_max_failures,
                account_max_failures: settings.login_account_max_failures,
                window: settings.login_window,
                ip_per_minute: settings.login_ip_per_minute,
                argon2_concurrency: settings.argon2_concurrency,
                argon2_queue: settings.argon2_queue,
                require_verified_email: settings.require_verified_email,
            },
            settings
                .legacy
                .clone()
                .map(crate::legacy::Legacy::new)
                .transpose()
                .map_err(StartError::Password)?,
            known.clone(),
        )
        .await
        .map_err(StartError::Password)?;
        #[cfg(feature = "test-hooks")]
        let counters = Arc::new(crate::hooks::Counters::default());
        #[cfg(feature = "test-hooks")]
        if settings.test_hooks {
            observers.push(counters.observe());
        }
        #[cfg(not(feature = "test-hooks"))]
        let _ = &mut observers;
        let audience = Audience {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway_secs: settings.leeway,
        };
        let sessions = Sessions::new(
            store.clone(),
            keys.clone(),
            clock.clone(),
            audience.clone(),
            revoked.clone(),
            SessionPolicy {
                access_ttl: settings.access_ttl,
                idle_ttl: settings.idle_ttl,
                absolute_ttl: settings.absolute_ttl,
                leeway: settings.leeway,
                rotation: settings.rotation,
                refresh_ip_per_minute: settings.refresh_ip_per_minute,
                refresh_session_per_minute: settings.refresh_session_per_minute,
            },
            observers,
            known,
        );
        let access = Access::new(keys.clone(), audience, clock.clone(), revoked);
        #[cfg(feature = "test-hooks")]
        let hooks = settings.test_hooks.then(|| {
            crate::hooks::Hooks::new(
                settings.test_hooks_secret.clone(),
                clock.clone(),
                store.clone(),
                keys.clone(),
                passwords.clone(),
                sessions.clone(),
                counters,
            )
        });
        let feed = crate::feed::Feed::new(&fleet, settings.revocation_feed_token.clone());
        let discovery = crate::api::Discovery {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            public_origin: settings.public_origins.first().cloned(),
            https: settings.https,
            jwks_max_age: settings.jwks_max_age,
            feed: feed.enabled(),
            in_step: fleet.in_step.clone(),
        };
        let oidc = crate::oidc::Oidc::new(
            &settings.oidc,
            store.clone(),
            sessions.clone(),
            clock.clone(),
            settings.public_origins.first().cloned(),
            settings.https,
            settings.dpop_required,
            codes.clone(),
        );
        let passkeys = crate::passkeys::Passkeys::new(
            settings.webauthn.as_ref(),
            store.clone(),
            sessions.clone(),
            clock.clone(),
            codes.clone(),
            settings.step_up_max_age,
        )?;
        Ok(AppState(Arc::new(Services {
            oidc,
            passkeys,
            proxies: settings.proxies.clone(),
            feed,
            discovery,
            signup: crate::accounts::Signup(settings.signup_password),
            settings: Arc::new(settings),
            clock,
            store,
            keys,
            access,
            dpop,
            sessions,
            passwords,
            codes,
            fleet,
            #[cfg(feature = "test-hooks")]
            hooks,
        })))
    }

    /// The server's clock, unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
}

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
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let not_found = || async { ApiError::NotFound };
    // A path the file system refuses otherwise than "not there" (a name over 255 bytes, ...)
    // is not found either: ServeDir would answer an empty 500. A method other than GET or
    // HEAD (a POST to a path no route has) is not found too: ServeDir would answer an empty 405.
    let dir = ServeDir::new(dir)
        .call_fallback_on_method_not_allowed(true)
        .not_found_service(axum::routing::any(not_found));
    let service = ServiceExt::<axum::extract::Request>::map_response(
        dir,
        |res: axum::response::Response<tower_http::services::fs::ServeFileSystemResponseBody>| {
            if res.status().is_server_error() {
                // A name too long (anyone can send one: debug), but also a file system that
                // fails: said in the log.
                tracing::debug!(status = %res.status(), "a static file could not be read: 404");
                ApiError::NotFound.into_response()
            } else {
                res.map(axum::body::Body::new)
            }
        },
    );
    // A name starting with a dot (`.env`, `.git/`, `%2Eenv` as ServeDir decodes it) is never
    // served: whatever a deployment left in the directory, it is not the site. RFC 8615's
    // `/.well-known/` is (security.txt, app-association files), its own names with a dot not.
    let service = tower::service_fn(move |req: axum::extract::Request| {
        let service = service.clone();
        async move {
            // (`%2F` is a separator to ServeDir, which decodes it.)
            let raw = req.uri().path();
            let path = raw.replace("%2F", "/").replace("%2f", "/");
            let path = path.strip_prefix("/.well-known/").unwrap_or(&path);
            let hidden = path.split('/').any(|name| {
                name.starts_with('.')
                    || name.get(..3).is_some_and(|h| h.eq_ignore_ascii_case("%2e"))
            });
            // Nor a backslash (a separator on Windows, where `assets\.env` is a dot name), nor
            // a path that starts `//`: ServeDir's redirect of a directory's name to its slash
            // copies the path, and `//assets` went to `//assets/`, another host.
            let odd = raw.contains('\\')
                || raw.to_ascii_lowercase().contains("%5c")
                || raw.starts_with("//");
            if hidden || odd {
                return Ok(ApiError::NotFound.into_response());
            }
            service.oneshot(req).await
        }
    });
    let headers = [
        (header::CONTENT_SECURITY_POLICY, csp),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // A page of another site that opened this one keeps no handle on its window (to send
        // it elsewhere later, or read its frame count).
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    // `nosniff` is on every response (`every_response`).
    let [a, b, c, d, e] =
        headers.map(|(name, value)| SetResponseHeaderLayer::if_not_present(name, value));
    a.layer(b.layer(c.layer(d.layer(e.layer(service)))))
}

/// A request's body must arrive within the time its headers had (--header-read-timeout-secs,
/// counted from when the handler starts reading it): the connection timers bound the headers and
/// a connection on which nothing moves, but a body sent one byte a minute would hold a
/// connection slot for hours. Read here, whole (at most [`BODY_LIMIT`]: 413 past it), for every
/// route; the handlers then read it from memory.
async fn body_within(
    State(deadline): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::body::HttpBody;
    use axum::response::IntoResponse;
    // No body (a GET, a refresh): nothing to wait for, nor to copy (the hot paths).
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > BODY_LIMIT as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    let bytes = match tokio::time::timeout(deadline, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            let over = e.is::<http_body_util::LengthLimitError>();
            return if over {
                ApiError::PayloadTooLarge.into_response()
            } else {
                ApiError::InvalidRequest(format!("the request body could not be read: {e}"))
                    .into_response()
            };
        }
        Err(_) => {
            let why = format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            );
            return ApiError::InvalidRequest(why).into_response();
        }
    };
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    next.run(req).await
}

/// Every response says the time of the server's clock (`Date`), which a DPoP client learns
/// its proofs' `iat` from: in a test build whose clock was moved, the moved time. And none is
/// sniffed (`X-Content-Type-Options: nosniff`): a JSON answer that echoes input (an error
/// naming a field) is never read as HTML or script.
async fn every_response(State(clock): State<Clock>, mut res: Response) -> Response {
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&clock.http_date()) {
        h.insert(header::DATE, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// `Strict-Transport-Security` when this server serves TLS itself (`--tls-cert`): a year, for
/// this host only (a company's other subdomains are not ours to pin). Not to a loopback or IP
/// host: browsers ignore it for an IP (RFC 6797, 8.1.1), and pinning `localhost` would turn a
/// developer's other plain-http apps on it into errors. Behind a proxy that ends TLS, the
/// proxy sends it (docs/DEPLOYMENT.md).
const HSTS: &str = "max-age=31536000";

async fn strict_transport(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let pinned = request_host(&req).is_some_and(|host| {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        !(host == "localhost"
            || host.ends_with(".localhost")
            || host.starts_with('[')
            || host.parse::<std::net::IpAddr>().is_ok())
    });
    let mut res = next.run(req).await;
    if pinned {
        res.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    res
}

/// The host a request names, without its port: `Host`, or an HTTP/2 request's authority
/// (`[::1]` keeps its brackets).
fn request_host(req: &axum::extract::Request) -> Option<String> {
    let authority = match req.headers().get(header::HOST) {
        Some(v) => v
            .to_str()
            .ok()?
            .parse::<axum::http::uri::Authority>()
            .ok()?,
        None => req.uri().authority()?.clone(),
    };
    Some(authority.host().to_owned())
}

/// `HEAD` on a route whose `GET` stores something (a federated sign-in's start and callback): a
/// link checker or a prefetch would otherwise start a flow, or spend one, for a response it
/// throws away. Refused, nothing stored.
async fn head_refused() -> Response {
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET"));
    res
}

/// The whole HTTP surface.
pub fn router(state: &AppState) -> Router {
    let settings = &state.settings;
    let mut router = Router::new()
        .route(auth::LOGIN_PATH, post(auth::login))
        .route(auth::REFRESH_PATH, post(auth::refresh))
        .route(auth::LOGOUT_PATH, post(auth::logout))
        .route("/auth/otp/start", post(otp::start))
        .route(otp::VERIFY_PATH, post(accounts::code_sign_in))
        .route(accounts::SIGNUP_PATH, post(accounts::signup))
        .route(accounts::SIGNUP_VERIFY_PATH, post(accounts::signup_verify))
        .route(
            accounts::EMAIL_VERIFY_START_PATH,
            post(accounts::email_verify_start),
        )
        .route(accounts::EMAIL_VERIFY_PATH, post(accounts::email_verify))
        .route(accounts::RESET_START_PATH, post(accounts::reset_start))
        .route(accounts::RESET_PATH, post(accounts::reset))
        .route(accounts::CHANGE_PATH, post(accounts::change))
        .route("/auth/sessions", get(auth::list_sessions))
        .route("/auth/sessions/{id}", delete(auth::revoke_session))
        .route("/api/me", get(api::me).patch(api::update_me))
        .route(api::JWKS_PATH, get(api::jwks))
        .route(api::METADATA_PATH, get(api::metadata))
        .route(crate::feed::PATH, get(crate::feed::revocations))
        .route("/auth/oidc/providers", get(crate::oidc::providers))
        .route(
            "/auth/oidc/{name}/start",
            get(crate::oidc::start).head(head_refused),
        )
        .route(
            "/auth/oidc/{name}/callback",
            get(crate::oidc::callback).head(head_refused),
        )
        .route(
            "/auth/oidc/{name}/backchannel-logout",
            post(crate::oidc::backchannel_logout),
        )
        .route(
            "/auth/oidc/{name}/end-session",
            get(crate::oidc::end_session),
        )
        .route("/auth/passkeys", get(crate::passkeys::list))
        .route("/auth/passkeys/{id}", delete(crate::passkeys::remove))
        .route(
            "/auth/passkeys/register/start",
            post(crate::passkeys::register_start),
        )
        .route(
            "/auth/passkeys/register/finish",
            post(crate::passkeys::register_finish),
        )
        .route(
            "/auth/passkeys/login/start",
            post(crate::passkeys::login_start),
        )
        .route(
            crate::passkeys::LOGIN_FINISH_PATH,
            post(crate::passkeys::login_finish),
        )
        .route("/auth/step-up/start", post(crate::passkeys::step_up_start))
        .route(
            "/auth/step-up/finish",
            post(crate::passkeys::step_up_finish),
        )
        .route(
            "/auth/second-factor",
            axum::routing::put(crate::passkeys::set_second_factor),
        )
        .route(
            crate::passkeys::SECOND_FACTOR_PATH,
            post(crate::passkeys::second_factor),
        )
        .route("/healthz", get(|| async { "ok" }));
    // Demo only: exists with --demo and no SMTP server (and answers loopback clients only).
    if settings.demo && state.codes.has_demo_mailbox() {
        router = router.route("/demo/mailbox", get(otp::demo_mailbox));
    }
    // No answer of a route is stored by a cache, the browser's own included (a profile, the
    // sessions and passkeys listed, left on a shared computer's disk after the logout), unless
    // it says otherwise (the JWKS and the metadata document). Static files are not routes.
    router = router.route_layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    #[cfg(feature = "test-hooks")]
    let hooks = state.hooks.clone();
    #[cfg(not(feature = "test-hooks"))]
    let hooks: Option<()> = None;
    if hooks.is_none() {
        let not_found = || async { ApiError::NotFound };
        router = router
            .route("/test", any(not_found))
            .route("/test/{*rest}", any(not_found));
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
    let mut router: Router = router
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            settings.connections.header_read_timeout,
            body_within,
        ))
        .with_state(state.clone());
    #[cfg(feature = "test-hooks")]
    if let Some(h) = &hooks {
        router = router
            .nest_service("/test", crate::hooks::routes(h.clone()))
            .layer(axum::middleware::from_fn_with_state(
                h.clone(),
                crate::hooks::refresh_faults,
            ))
            .layer(axum::middleware::from_fn_with_state(
                h.clone(),
                crate::hooks::document_faults,
            ));
    }
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
        #[cfg(feature = "test-hooks")]
        if hooks.is_some() {
            allow_headers.push(HeaderName::from_static(crate::hooks::SECRET_HEADER));
        }
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_credentials(true)
                .allow_methods(tokenwarden_dpop::resource::CORS_ALLOW_METHODS)
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
    // Outermost: every response, preflights included, carries the current DPoP nonce and the
    // server clock's date.
    router = router
        .layer(axum::middleware::map_response_with_state(
            state.dpop.clone(),
            crate::dpop::add_nonce,
        ))
        .layer(axum::middleware::map_response_with_state(
            state.clock.clone(),
            every_response,
        ));
    if settings.https {
        router = router.layer(axum::middleware::from_fn(strict_transport));
    }
    router
}

/// Re-reads signing keys every `key_poll_secs` (picks up the `keys` CLI), prunes the
/// revocation mirror, and purges what has ended: proofs and counters every minute, sessions,
/// events and codes every hour.
pub fn spawn_maintenance(state: AppState) -> tokio::task::JoinHandle<()> {
    state.oidc.discover_all();
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
            state.fleet.revoked.prune(now);
            if now - last_short_purge >= 60 {
                last_short_purge = now;
                if let Err(e) = state.store.purge_short_lived(now).await {
                    tracing::error!(error = %e, "purging DPoP proofs and counters failed");
                }
            }
            if now - last_purge > 3600 {
                last_purge = now;
                // By the database's clock too: no instance ahead of it purges early for all.
                let store = &state.store;
                let purged = async { store.purge(store.shared_now(now).await? - 86_400).await };
                if let Err(e) = purged.await {
                    tracing::error!(error = %e, "purging old sessions failed");
                }
                if let Ok(otp) = state.codes.enabled()
                    && let Err(e) = otp.purge().await
                {
                    tracing::error!(error = %e, "purging sign-in codes failed");
                }
            }
        }
    })
}
