//! A real server on a loopback port, real SQLite, and an HTTP client that handles cookies
//! explicitly so a test can hold (and replay) any refresh token it was given.
#![allow(dead_code)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::Value;
use tokenwarden_server::{AppState, Settings, Store};
use tokio::sync::oneshot;

pub const ALICE: (&str, &str) = ("alice@example.com", "alice-password-1");
pub const BOB: (&str, &str) = ("bob@example.com", "bob-password-22");
pub const REFRESH_COOKIE: &str = "__Secure-tw_refresh";

pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// What a client holds after login or refresh.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    pub async fn with(configure: impl FnOnce(&mut Settings)) -> Self {
        Self::on("sqlite::memory:", configure).await
    }

    /// A server over the database at `url` (a file survives the server; memory does not).
    pub async fn on(url: &str, configure: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::defaults();
        settings.test_hooks = true;
        settings.login_ip_per_minute = 10_000;
        settings.allowed_origins = vec!["http://app.test:3000".into()];
        configure(&mut settings);
        let store = Store::connect(url).await.expect("open store");
        let state = AppState::new(settings, store).await.expect("state");
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
        let app = tokenwarden_server::app(state.clone());
        let task = tokio::spawn(async move {
            tokenwarden_server::serve::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestServer {
            base,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
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
        self.state.store.close().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn login_response(&self, email: &str, password: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/login"))
            .json(&serde_json::json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login request")
    }

    pub async fn login(&self, (email, password): (&str, &str)) -> Tokens {
        let res = self.login_response(email, password).await;
        assert_eq!(res.status(), 200, "login of {email}");
        tokens_of(res).await
    }

    pub async fn refresh_response(&self, refresh: &str) -> reqwest::Response {
        self.http
            .post(self.url("/auth/refresh"))
            .header("x-tokenwarden", "1")
            .header("cookie", format!("{REFRESH_COOKIE}={refresh}"))
            .send()
            .await
            .expect("refresh request")
    }

    /// A refresh that must succeed.
    pub async fn refresh(&self, refresh: &str) -> Tokens {
        let res = self.refresh_response(refresh).await;
        assert_eq!(res.status(), 200, "refresh");
        tokens_of(res).await
    }

    /// A refresh that must fail: its error code.
    pub async fn refresh_error(&self, refresh: &str) -> String {
        let res = self.refresh_response(refresh).await;
        assert_eq!(res.status(), 401, "refresh should be refused");
        error_code(res).await
    }

    pub async fn me(&self, access: &str) -> reqwest::Response {
        self.http
            .get(self.url("/api/me"))
            .bearer_auth(access)
            .send()
            .await
            .expect("me request")
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.url("/test/stats"))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("post")
    }
}

/// All `Set-Cookie` header values.
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

pub async fn tokens_of(res: reqwest::Response) -> Tokens {
    let refresh = cookie(res.headers(), REFRESH_COOKIE).expect("refresh cookie set");
    let body: Value = res.json().await.expect("token json");
    assert_eq!(body["token_type"], "Bearer");
    Tokens {
        access: body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        refresh,
    }
}

pub async fn error_code(res: reqwest::Response) -> String {
    let body: Value = res.json().await.expect("error body is JSON");
    body["error"].as_str().expect("error code").to_owned()
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
