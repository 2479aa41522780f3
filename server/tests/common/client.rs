//! The test client every suite drives the server with, as a browser tab does: it holds the
//! refresh cookie and the access token it was given, sends the CSRF header to the cookie
//! endpoints, and, given a DPoP key, signs a proof for every request with the newest
//! `DPoP-Nonce` it has seen, retrying once on `use_dpop_nonce` as the real client does.
//!
//! Requests go over a real socket to a [`TestServer`] (or to a server in another process,
//! [`Client::to`]), or with [`Client::oneshot`] straight into its router
//! (`tower::ServiceExt::oneshot`) where a socket is not the point.
//!
//! A test that forges a request says only what it forges: `extra` headers replace the ones the
//! client would send under the same names (two `Cookie` lines, a proof of its own), `csrf` sets
//! or leaves out the CSRF header, `refresh`/`access` hold any token, old or stolen. Cloning a
//! client copies its jar: another tab of the same browser, or a thief with a copy.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use tokenwarden_dpop::ProofSigner;
use tokenwarden_server::AppState;
use tokenwarden_server::clock::Clock;
use tower::ServiceExt;

use super::{
    KNOWN_BROWSER_COOKIE, REFRESH_COOKIE, SIGNUP_COOKIE, TestServer, Tokens, cookie, jwt_parts,
    set_cookies,
};

/// The CSRF header the cookie endpoints require (docs/PROTOCOL.md), and its value.
pub const CSRF_HEADER: &str = "x-tokenwarden";
pub const CSRF_VALUE: &str = "1";

/// An answer: status, headers and the body, as bytes and as JSON (`Value::Null` when it is
/// not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub bytes: Vec<u8>,
}

impl Answer {
    /// The `error` code of a refusal.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After`, in seconds.
    pub fn retry_after(&self) -> i64 {
        let value = self.header("retry-after").expect("Retry-After");
        value.parse().expect("seconds")
    }

    /// Every `WWW-Authenticate` value, joined with ` | `.
    pub fn challenges(&self) -> String {
        self.headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    pub fn set_cookies(&self) -> Vec<String> {
        set_cookies(&self.headers)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The tokens of a sign-in or a refresh: the access token and the refresh cookie.
    pub fn tokens(&self) -> Tokens {
        let refresh = cookie(&self.headers, REFRESH_COOKIE).expect("refresh cookie set");
        let access = self.body["access_token"].as_str().expect("access_token");
        Tokens {
            access: access.to_owned(),
            refresh,
        }
    }
}

/// How requests reach the server.
#[derive(Clone)]
enum Transport {
    Socket,
    Oneshot(axum::Router),
}

#[derive(Clone)]
pub struct Client {
    /// Where requests go over a socket (`http://host:port`).
    base: String,
    /// The public origin of a proxy in front of the server, which proofs name in `htu`
    /// instead of `base`.
    public: Option<String>,
    http: reqwest::Client,
    /// The server's clock, which proofs are stamped with.
    clock: Clock,
    /// The server in this process, when it is one (for [`Client::oneshot`]).
    state: Option<AppState>,
    transport: Transport,
    /// The refresh cookie, as the browser's jar keeps it (the last `Set-Cookie` wins).
    pub refresh: Option<String>,
    /// The access token of the last sign-in or refresh.
    pub access: Option<String>,
    /// Signs a proof for every request when set (shared: two clients may hold one key).
    pub key: Option<Arc<ProofSigner>>,
    /// The newest `DPoP-Nonce` seen.
    pub nonce: Option<String>,
    /// Sent as `X-Forwarded-For` (a client behind a trusted proxy).
    pub forwarded_for: Option<String>,
    /// The CSRF header's value on the cookie endpoints; `None` leaves it out.
    pub csrf: Option<&'static str>,
    /// The sign-up cookie (a sign-up under way from this browser), kept as the refresh one.
    pub signup: Option<String>,
    /// The known-browser cookie (this browser proved an account's password before), sent to
    /// every `/auth/` path as a browser sends a `Path=/` cookie.
    pub known: Option<String>,
}

/// The endpoints that read the refresh cookie (and need the CSRF header).
fn is_cookie_endpoint(path: &str) -> bool {
    path.starts_with("/auth/")
        && !path.starts_with("/auth/login")
        && !path.starts_with("/auth/sessions")
}

/// The requests that carry the access token: the API, the sessions list, logout.
fn is_authorized(path: &str) -> bool {
    path.starts_with("/api/")
        || path.starts_with("/auth/sessions")
        || path == "/auth/logout"
        || path == "/auth/password/change"
        || (path.starts_with("/auth/passkeys") && !path.starts_with("/auth/passkeys/login"))
        || path.starts_with("/auth/step-up")
        || path == "/auth/second-factor"
        // Optional there: a code sent in a session of the account (crate::accounts::email_verify).
        || path == "/auth/email/verify"
}

fn put(headers: &mut HeaderMap, name: &str, value: &str) {
    headers.append(
        HeaderName::from_bytes(name.as_bytes()).expect("header name"),
        HeaderValue::from_bytes(value.as_bytes()).expect("header value"),
    );
}

impl Client {
    /// A client of `server` over a socket, without a DPoP key (Bearer sessions).
    pub fn new(server: &TestServer) -> Self {
        Client {
            clock: server.state.clock.clone(),
            state: Some(server.state.clone()),
            http: server.http.clone(),
            ..Client::to(&server.base)
        }
    }

    /// A client of the server at `base` in another process (the binary), on the wall clock.
    pub fn to(base: &str) -> Self {
        Client {
            base: base.to_owned(),
            public: None,
            http: reqwest::Client::new(),
            clock: Clock::default(),
            state: None,
            transport: Transport::Socket,
            refresh: None,
            access: None,
            key: None,
            nonce: None,
            forwarded_for: None,
            csrf: Some(CSRF_VALUE),
            signup: None,
            known: None,
        }
    }

    /// A client that signs with a fresh DPoP key.
    pub fn bound(server: &TestServer) -> Self {
        Client {
            key: Some(Arc::new(ProofSigner::generate())),
            ..Client::new(server)
        }
    }

    /// Requests go into the router without a socket.
    pub fn oneshot(mut self) -> Self {
        let state = self.state.as_ref().expect("a server in this process");
        self.transport = Transport::Oneshot(tokenwarden_server::router(state));
        self
    }

    /// Proofs name `origin` (the public origin of a fleet behind a proxy) in `htu`.
    pub fn public(mut self, origin: &str) -> Self {
        self.public = Some(origin.to_owned());
        self
    }

    /// The next requests of this client (its jar, key and nonce) go to `server`: another
    /// instance of a fleet, as a load balancer may choose.
    pub fn via(&mut self, server: &TestServer) -> &mut Self {
        self.base = server.base.clone();
        self.http = server.http.clone();
        self.clock = server.state.clock.clone();
        self.state = Some(server.state.clone());
        if let Transport::Oneshot(_) = self.transport {
            self.transport = Transport::Oneshot(tokenwarden_server::router(&server.state));
        }
        self
    }

    /// The client is at `ip`, as a trusted proxy in front of the server reports it.
    pub fn at(mut self, ip: &str) -> Self {
        self.forwarded_for = Some(ip.to_owned());
        self
    }

    /// `n` copies of this client: tabs of one browser sharing its jar, or clients at one
    /// address, to send requests at the same time.
    pub fn tabs(&self, n: usize) -> Vec<Client> {
        vec![self.clone(); n]
    }

    /// The client holds these tokens (a copy, a stolen pair, a session from before a restart).
    pub fn holding(mut self, t: &Tokens) -> Self {
        self.access = Some(t.access.clone());
        self.refresh = Some(t.refresh.clone());
        self
    }

    /// The URL a proof names for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.public.as_deref().unwrap_or(&self.base), path)
    }

    /// A proof for `method path` by this client's key, with its newest nonce and, if given,
    /// bound to `token`.
    pub fn proof(&self, method: &str, path: &str, token: Option<&str>) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(key.proof(
            method,
            &self.url(path),
            self.clock.now(),
            token,
            self.nonce.as_deref(),
        ))
    }

    /// What the browser sends with `method path`, then `extra` in place of the headers of the
    /// same names. A preflight (`OPTIONS`) carries only `extra`.
    fn headers(&self, method: &str, path: &str, json: bool, extra: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if method != "OPTIONS" {
            let token = self.access.as_deref().filter(|_| is_authorized(path));
            if let Some(t) = token {
                let scheme = if self.key.is_some() { "DPoP" } else { "Bearer" };
                put(&mut headers, "authorization", &format!("{scheme} {t}"));
            }
            let proof_path = path.split('?').next().unwrap_or(path);
            if let Some(p) = self.proof(method, proof_path, token) {
                put(&mut headers, "dpop", &p);
            }
            if is_cookie_endpoint(path)
                && let Some(v) = self.csrf
            {
                put(&mut headers, CSRF_HEADER, v);
            }
            let jar: Vec<String> = [
                (REFRESH_COOKIE, &self.refresh),
                (SIGNUP_COOKIE, &self.signup),
            ]
            .into_iter()
            .filter(|_| is_cookie_endpoint(path))
            .chain(Some((KNOWN_BROWSER_COOKIE, &self.known)).filter(|_| path.starts_with("/auth/")))
            .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name}={v}")))
            .collect();
            if !jar.is_empty() {
                put(&mut headers, "cookie", &jar.join("; "));
            }
            if let Some(ip) = &self.forwarded_for {
                put(&mut headers, "x-forwarded-for", ip);
            }
            if json {
                put(&mut headers, "content-type", "application/json");
            }
        }
        for (name, _) in extra {
            headers.remove(name.to_ascii_lowercase());
        }
        for (name, value) in extra {
            put(&mut headers, name, value);
        }
        headers
    }

    /// One request with these headers and body; `Err` when no answer came (a dropped
    /// connection).
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = match &self.transport {
            Transport::Socket => {
                let res = self
                    .http
                    .request(method, format!("{}{}", self.base, path))
                    .headers(headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let bytes = res.bytes().await.map_err(|e| format!("{e:?}"))?.to_vec();
                answer(status, headers, bytes)
            }
            Transport::Oneshot(router) => {
                let mut req = axum::http::Request::builder()
                    .method(method.as_str())
                    .uri(path)
                    .body(Body::from(body))
                    .expect("request");
                *req.headers_mut() = headers;
                if !req.headers().contains_key("host") {
                    let host = self.base.trim_start_matches("http://");
                    req.headers_mut()
                        .insert("host", HeaderValue::from_str(host).expect("host"));
                }
                let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
                req.extensions_mut().insert(ConnectInfo(peer));
                let res = router.clone().oneshot(req).await.expect("infallible");
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .expect("body");
                answer(status, headers, bytes.to_vec())
            }
        };
        self.learn(&answer);
        Ok(answer)
    }

    /// What a browser keeps from an answer: the newest nonce, the refresh cookie (set or
    /// cleared) and a new access token.
    fn learn(&mut self, a: &Answer) {
        if let Some(n) = a.header("dpop-nonce") {
            self.nonce = Some(n.to_owned());
        }
        if let Some(value) = cookie(&a.headers, REFRESH_COOKIE) {
            self.refresh = Some(value).filter(|v| !v.is_empty());
        }
        if let Some(value) = cookie(&a.headers, SIGNUP_COOKIE) {
            self.signup = Some(value).filter(|v| !v.is_empty());
        }
        if let Some(value) = cookie(&a.headers, KNOWN_BROWSER_COOKIE) {
            self.known = Some(value).filter(|v| !v.is_empty());
        }
        if let Some(t) = a.body["access_token"].as_str() {
            self.access = Some(t.to_owned());
        }
    }

    /// Sends one request as the browser would (a JSON body), with `extra` headers in place of
    /// its own of the same names. No retry.
    pub async fn send_once(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let headers = self.headers(method, path, body.is_some(), extra);
        let res = self.exchange(method, path, headers, bytes.into_bytes());
        res.await.expect("an answer")
    }

    /// A request with a body of any bytes; its `Content-Type`, if any, comes in `extra`.
    pub async fn send_raw(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
        extra: &[(&str, &str)],
    ) -> Answer {
        let headers = self.headers(method, path, false, extra);
        let res = self
            .exchange(method, path, headers, body.as_bytes().to_vec())
            .await;
        res.expect("an answer")
    }

    /// [`Self::send_once`] without extra headers, retried once with the new nonce on
    /// `use_dpop_nonce`.
    pub async fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let first = self.send_once(method, path, body, &[]).await;
        if self.key.is_some() && first.error() == "use_dpop_nonce" {
            return self.send_once(method, path, body, &[]).await;
        }
        first
    }

    pub async fn login(&mut self, (email, password): (&str, &str)) -> Answer {
        let body = json!({ "email": email, "password": password });
        self.send("POST", "/auth/login", Some(&body)).await
    }

    /// A sign-in with `extra` headers (a `User-Agent`, a proof of the test's own), sent once:
    /// no retry on `use_dpop_nonce`.
    pub async fn login_with(
        &mut self,
        (email, password): (&str, &str),
        extra: &[(&str, &str)],
    ) -> Answer {
        let body = json!({ "email": email, "password": password });
        self.send_once("POST", "/auth/login", Some(&body), extra)
            .await
    }

    pub async fn refresh(&mut self) -> Answer {
        self.send("POST", "/auth/refresh", None).await
    }

    pub async fn logout(&mut self) -> Answer {
        self.send("POST", "/auth/logout", None).await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, body: &Value) -> Answer {
        self.send("POST", path, Some(body)).await
    }

    pub async fn patch(&mut self, path: &str, body: &Value) -> Answer {
        self.send("PATCH", path, Some(body)).await
    }

    pub async fn delete(&mut self, path: &str) -> Answer {
        self.send("DELETE", path, None).await
    }

    /// A refresh whose answer may never come (the server drops the connection).
    pub async fn try_refresh(&mut self) -> Result<Answer, String> {
        let headers = self.headers("POST", "/auth/refresh", false, &[]);
        self.exchange("POST", "/auth/refresh", headers, Vec::new())
            .await
    }

    /// A nonce from any answer of the server (its health check), as a page's first request
    /// would learn it.
    pub async fn fetch_nonce(&mut self) -> String {
        self.send_once("GET", "/healthz", None, &[]).await;
        self.nonce.clone().expect("a DPoP-Nonce")
    }

    /// The tokens of a successful sign-in or refresh: `token_type` is DPoP, bound to this
    /// client's key, when it has one, and Bearer otherwise.
    pub fn tokens_of(&self, a: &Answer) -> Tokens {
        let t = a.tokens();
        match &self.key {
            Some(key) => {
                assert_eq!(a.body["token_type"], "DPoP", "{}", a.body);
                assert_eq!(jwt_parts(&t.access).1["cnf"]["jkt"], key.thumbprint());
            }
            None => assert_eq!(a.body["token_type"], "Bearer", "{}", a.body),
        }
        t
    }

    /// A sign-in that must succeed: its tokens.
    pub async fn sign_in(&mut self, who: (&str, &str)) -> Tokens {
        let a = self.login(who).await;
        assert_eq!(a.status, 200, "login of {}: {}", who.0, a.body);
        self.tokens_of(&a)
    }

    /// Asks for a sign-in code by mail.
    pub async fn request_code(&mut self, email: &str) -> Answer {
        self.post("/auth/otp/start", &json!({ "email": email }))
            .await
    }

    /// Asks for a password-reset code by mail.
    pub async fn request_reset(&mut self, email: &str) -> Answer {
        self.post("/auth/password/reset/start", &json!({ "email": email }))
            .await
    }

    /// Signs in with a mailed code.
    pub async fn verify_code(&mut self, email: &str, code: &str) -> Answer {
        let body = json!({ "email": email, "code": code });
        self.post("/auth/otp/verify", &body).await
    }

    /// A sign-in with a code that must be refused.
    pub async fn code_refused(&mut self, email: &str, code: &str) -> Answer {
        let a = self.verify_code(email, code).await;
        assert_ne!(a.status, 200, "{code} should be refused");
        assert!(a.body.is_object(), "error json: {:?}", a.text());
        a
    }

    /// A refresh presenting `refresh` (what the jar holds from now on).
    pub async fn present(&mut self, refresh: &str) -> Answer {
        self.refresh = Some(refresh.to_owned());
        self.refresh().await
    }

    /// A refresh presenting `refresh` that must succeed: the new tokens.
    pub async fn rotate(&mut self, refresh: &str) -> Tokens {
        let a = self.present(refresh).await;
        assert_eq!(a.status, 200, "refresh: {}", a.body);
        self.tokens_of(&a)
    }

    /// A refresh presenting `refresh` that must be refused: its error code.
    pub async fn refresh_error(&mut self, refresh: &str) -> String {
        let a = self.present(refresh).await;
        assert_eq!(a.status, 401, "refresh should be refused");
        a.error().to_owned()
    }

    /// `GET /api/me` with `access`.
    pub async fn me(&mut self, access: &str) -> Answer {
        self.access = Some(access.to_owned());
        self.get("/api/me").await
    }
}

fn answer(status: u16, headers: HeaderMap, bytes: Vec<u8>) -> Answer {
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        bytes,
    }
}
