//! A real server on a loopback port and a real database; the suites drive it with the test
//! client of `client.rs`, which holds (and can replay) any token it was given.
//!
//! The database is SQLite in memory, or with `TW_TEST_BACKEND=postgres` a fresh PostgreSQL
//! database per server (see `pg`): `make test-server` runs the suites both ways.
#![allow(dead_code)]

pub mod authenticator;
pub mod client;
pub mod oidc;
pub mod pg;
pub mod smtp;

#[allow(unused_imports)]
pub use client::{Answer, CSRF_HEADER, Client};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};
use tokenwarden_server::api::{JWKS_PATH, METADATA_PATH};
use tokenwarden_server::kek::{KeyEncryption, LocalKek};
use tokenwarden_server::serve::DropConnection;
use tokenwarden_server::sessions::{Event, Observer};
use tokenwarden_server::store::RevokeReason;
use tokenwarden_server::{AppState, Settings, Store};
use tokio::sync::oneshot;

/// `Command::output` with a deadline: every command the tests run this way exits at once (a
/// refusal, a CLI command), and a server that took what it should refuse would serve for good, so it fails
/// the test after 30 s instead of hanging it.
pub trait Finished {
    fn finished(&mut self) -> std::process::Output;
}

impl Finished for std::process::Command {
    fn finished(&mut self) -> std::process::Output {
        use std::io::Read;
        let mut child = self
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the binary");
        let read = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{self:?} was still running after 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        std::process::Output {
            status,
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }
}

/// The server binary the tests run: `TW_SERVER_BINARY` (scripts/test-bins.mjs gives each build
/// its own copy: the released one and the `test-hooks` one share one path), else cargo's.
pub fn server_binary() -> String {
    std::env::var("TW_SERVER_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_tokenwarden-server").to_owned())
}

pub const ALICE: (&str, &str) = ("alice@example.com", "alice-password-1");
pub const BOB: (&str, &str) = ("bob@example.com", "bob-password-22");
pub const REFRESH_COOKIE: &str = "__Host-tw_refresh";
pub const SIGNUP_COOKIE: &str = "__Host-tw_signup";
pub const KNOWN_BROWSER_COOKIE: &str = "__Host-tw_device";
/// The key-encryption key of every test server (base64 of 32 bytes of 0x42), so that a
/// database file can be reopened by another server or by the CLI (`TW_KEY_ENCRYPTION_KEY`).
pub const TEST_KEK: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";

/// What the server's sessions did, counted by an observer (crate::sessions::Event).
#[derive(Default)]
pub struct Counts {
    pub logins: AtomicU64,
    pub refresh_calls: AtomicU64,
    pub refresh_rotated: AtomicU64,
    pub reuse_detections: AtomicU64,
    pub revocations: AtomicU64,
    pub logouts: AtomicU64,
    /// JWKS requests, and those that asked for no cached copy (`Cache-Control: no-cache`).
    pub jwks_fetches: AtomicU64,
    pub jwks_fetches_no_cache: AtomicU64,
    /// A fault, not a count: while set, the JWKS answers 503 (its cache or CDN failing).
    pub jwks_down: std::sync::atomic::AtomicBool,
    /// A fault: while not 0, the JWKS answers this many milliseconds late (something on the
    /// way slowing it alone).
    pub jwks_latency_ms: AtomicU64,
    /// A fault: while not 0, the metadata and the JWKS answer with this many spaces after their
    /// JSON (still valid JSON; something in front of the server gone wrong, or hostile).
    pub documents_padding: AtomicU64,
    /// Requests for the revocation feed (each a subscriber's connection).
    pub feed_connections: AtomicU64,
    /// A fault: a JWKS document answered instead of the server's until the instant set, at most
    /// the number of times set, as another instance behind the same load balancer would that
    /// has not yet heard a change to the key ring. Each such answer is counted in
    /// `jwks_lagging_answers`.
    pub jwks_lagging: std::sync::Mutex<Option<(std::time::Instant, u64, String)>>,
    pub jwks_lagging_answers: AtomicU64,
}

impl Counts {
    fn observer(self: &Arc<Self>) -> Observer {
        let c = self.clone();
        let bump = |a: &AtomicU64| {
            a.fetch_add(1, Ordering::SeqCst);
        };
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

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub counts: Arc<Counts>,
    pub http: reqwest::Client,
    /// Faults the harness injects around the real app (no test hooks needed): commit the next
    /// N successful refreshes, then close the connection without answering; delay refreshes.
    pub drop_next_refreshes: Arc<AtomicU64>,
    pub refresh_latency_ms: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The task that keeps this instance in step (crate::fleet: on PostgreSQL with the others,
    /// on SQLite its own events to the feed).
    fleet: Option<tokio::task::JoinHandle<()>>,
}

/// The refresh faults, as a layer around the app.
async fn faults(
    counts: Arc<Counts>,
    drop_next: Arc<AtomicU64>,
    latency_ms: Arc<AtomicU64>,
    req: Request,
    next: Next,
) -> axum::response::Response {
    if req.uri().path() == tokenwarden_server::feed::PATH {
        counts.feed_connections.fetch_add(1, Ordering::SeqCst);
    }
    if req.uri().path() == JWKS_PATH {
        counts.jwks_fetches.fetch_add(1, Ordering::SeqCst);
        if req
            .headers()
            .get("cache-control")
            .is_some_and(|v| v == "no-cache")
        {
            counts.jwks_fetches_no_cache.fetch_add(1, Ordering::SeqCst);
        }
        let late = counts.jwks_latency_ms.load(Ordering::SeqCst);
        if late > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(late)).await;
        }
        if counts.jwks_down.load(Ordering::SeqCst) {
            return axum::response::IntoResponse::into_response(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
            );
        }
        let lagging = counts.jwks_lagging.lock().unwrap().clone();
        if let Some((until, times, jwks)) = lagging
            && std::time::Instant::now() < until
            && counts.jwks_lagging_answers.load(Ordering::SeqCst) < times
        {
            counts.jwks_lagging_answers.fetch_add(1, Ordering::SeqCst);
            return axum::response::IntoResponse::into_response((
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                jwks,
            ));
        }
    }
    let padding = counts.documents_padding.load(Ordering::SeqCst);
    if padding > 0 && [METADATA_PATH, JWKS_PATH].contains(&req.uri().path()) {
        let (mut parts, body) = next.run(req).await.into_parts();
        let json = axum::body::to_bytes(body, 1 << 20)
            .await
            .expect("the server's own document");
        // Streamed, with no Content-Length: a reader learns the length only by reading.
        let chunks = [json, vec![b' '; padding as usize].into()].map(Ok::<_, std::io::Error>);
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
        return axum::response::Response::from_parts(parts, body);
    }
    let refresh = req.uri().path() == "/auth/refresh";
    if refresh {
        counts.refresh_calls.fetch_add(1, Ordering::SeqCst);
        let ms = latency_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
    let mut res = next.run(req).await;
    if refresh
        && res.status() == 200
        && drop_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        res.extensions_mut().insert(DropConnection);
    }
    res
}

/// What a client holds after a sign-in or a refresh.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// A server on a database of its own: SQLite in memory, or a new PostgreSQL database
    /// when `TW_TEST_BACKEND=postgres`.
    pub async fn with(configure: impl FnOnce(&mut Settings)) -> Self {
        let url = match pg::backend() {
            pg::Backend::Sqlite => "sqlite::memory:".to_owned(),
            pg::Backend::Postgres => pg::fresh_database().await,
        };
        let s = Self::on(&url, configure).await;
        let want = match pg::backend() {
            pg::Backend::Sqlite => "sqlite",
            pg::Backend::Postgres => "postgres",
        };
        assert_eq!(
            s.state.store.backend(),
            want,
            "the server runs on the chosen backend"
        );
        s
    }

    /// A database that outlives a server, for restarts: a SQLite file in a directory that lives
    /// as long as the returned guard, or a new PostgreSQL database.
    pub async fn durable_database() -> (String, Option<tempfile::TempDir>) {
        match pg::backend() {
            pg::Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("tw.db").display());
                (url, Some(dir))
            }
            pg::Backend::Postgres => (pg::fresh_database().await, None),
        }
    }

    /// A server over the database at `url` (a file survives the server; memory does not).
    pub async fn on(url: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::defaults();
        // The /test routes exist only in a build with the `test-hooks` feature (tested in
        // tests/test_hooks.rs); counters come from an observer of the sessions (`counts`).
        settings.test_hooks = cfg!(feature = "test-hooks");
        settings.login_ip_per_minute = 10_000;
        settings.refresh_ip_per_minute = 100_000;
        settings.refresh_session_per_minute = 10_000;
        settings.allowed_origins = vec!["http://app.test:3000".into()];
        settings.key_encryption =
            KeyEncryption::local(LocalKek::parse(TEST_KEK).expect("test KEK"));
        configure(&mut settings);
        let store = Store::connect(url).await.expect("open store");
        let counts = Arc::new(Counts::default());
        let state = AppState::with_observers(settings, store, vec![counts.observer()])
            .await
            .expect("state");
        for (email, password) in [ALICE, BOB] {
            tokenwarden_server::create_user(
                &state.store,
                email,
                password,
                email.split('@').next().unwrap_or("user"),
                &["user".into()],
                state.now(),
            )
            .await
            .expect("create user");
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let drop_next_refreshes = Arc::new(AtomicU64::new(0));
        let refresh_latency_ms = Arc::new(AtomicU64::new(0));
        let (c, d, l) = (
            counts.clone(),
            drop_next_refreshes.clone(),
            refresh_latency_ms.clone(),
        );
        let app = tokenwarden_server::router(&state).layer(axum::middleware::from_fn(
            move |req: Request, next: Next| faults(c.clone(), d.clone(), l.clone(), req, next),
        ));
        let (limits, proxies) = (state.settings.connections, state.settings.proxies.clone());
        let fleet = tokenwarden_server::fleet::spawn(state.fleet.clone());
        let task = tokio::spawn(async move {
            tokenwarden_server::serve::serve(listener, app, limits, proxies, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestServer {
            base,
            state,
            counts,
            http: reqwest::Client::new(),
            drop_next_refreshes,
            refresh_latency_ms,
            stop: Some(stop),
            task: Some(task),
            fleet,
        }
    }

    /// Graceful shutdown; waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(fleet) = self.fleet.take() {
            fleet.abort();
            let _ = fleet.await;
        }
        self.state.store.close().await;
    }

    /// Stops the task that keeps this instance in step: it applies no event, and passes none
    /// to the feed, until [`Self::resume_fleet`] (the feed lets its subscribers go after
    /// `feed::IN_STEP` of it).
    pub async fn pause_fleet(&mut self) {
        if let Some(fleet) = self.fleet.take() {
            fleet.abort();
            let _ = fleet.await;
        }
    }

    /// Starts the task again, from the newest event this instance applied.
    pub fn resume_fleet(&mut self) {
        if self.fleet.is_none() {
            self.fleet = tokenwarden_server::fleet::spawn(self.state.fleet.clone());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Ann's account (`u-ann`, verified, no password), opened before the rule of one spelling
    /// per mailbox under the address it refuses now ([`OLD_SPELLING`]).
    pub async fn account_under_an_old_spelling(&self) {
        let user = tokenwarden_server::store::NewUser {
            id: "u-ann",
            email: OLD_SPELLING,
            roles: &[],
            name: "Ann",
            password_hash: "",
            email_verified_at: Some(1),
            password_unproved: false,
            claims: "{}",
            now: 1,
        };
        assert!(self.state.store.create_user(&user).await.unwrap());
    }

    /// The server's counters, read in memory.
    pub async fn stats(&self) -> Value {
        let h = &self.counts;
        let n = |c: &AtomicU64| c.load(Ordering::SeqCst);
        json!({
            "refresh_calls": n(&h.refresh_calls),
            "refresh_rotated": n(&h.refresh_rotated),
            "reuse_detections": n(&h.reuse_detections),
            "revocations": n(&h.revocations),
            "logins": n(&h.logins),
            "logouts": n(&h.logouts),
            "password_verifications": self.state.passwords.hasher.verifications(),
        })
    }
}

/// All `Set-Cookie` header values.
/// An address new accounts may no longer have (its domain in punycode; `bücher.de` is the
/// spelling they take).
pub const OLD_SPELLING: &str = "ann@xn--bcher-kva.de";

pub fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// The value a `Set-Cookie` header gives cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    set_cookies(headers).into_iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((&c, ""));
        let (n, v) = pair.split_once('=')?;
        (n == name).then(|| v.to_owned())
    })
}

/// The JWT's decoded header and payload (not verified).
pub fn jwt_parts(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut next = || {
        let part = parts.next().expect("jwt part");
        serde_json::from_slice(&B64.decode(part).expect("base64url")).expect("json")
    };
    (next(), next())
}

/// The process's log, captured: a `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
pub struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the capture as the process's subscriber, every level, as the server's plain
    /// text log (once per test binary). The process's, not a scoped one: with a thread-local
    /// subscriber, a test running at the same time on another thread could hit a callsite
    /// first, with no subscriber, and have it cached as uninteresting, so that the test lost the
    /// event (seen: `otp_sent` missing). The other tests' events land here too, which does no
    /// harm.
    pub fn install() -> Self {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        log
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
