//! The test client every suite drives the server with, as a browser tab does: it holds the
//! refresh cookie and the access token it was given, sends the CSRF header to the cookie
//! endpoints, and, given a DPoP key, signs a proof for every request with the newest
//! `DPoP-Nonce` it has seen, retrying once on `use_dpop_nonce` as the real client does.
//!
//! Requests go over a real socket to a [`TestServer`], or with [`Client::oneshot`] straight
//! into its router (`tower::ServiceExt::oneshot`) where a socket is not the point.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokenwarden_dpop::ProofSigner;
use tower::ServiceExt;

use super::{REFRESH_COOKIE, TestServer, cookie};

/// An answer: status, headers and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The `error` code of a refusal.
    pub fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How requests reach the server.
enum Transport {
    Socket,
    Oneshot(axum::Router),
}

pub struct Client<'s> {
    server: &'s TestServer,
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
}

/// The endpoints that read the refresh cookie (and need the CSRF header).
fn is_cookie_endpoint(path: &str) -> bool {
    path.starts_with("/auth/") && !path.starts_with("/auth/login") && path != "/auth/sessions"
}

impl<'s> Client<'s> {
    /// A client over a socket, without a DPoP key (Bearer sessions).
    pub fn new(server: &'s TestServer) -> Self {
        Client {
            server,
            transport: Transport::Socket,
            refresh: None,
            access: None,
            key: None,
            nonce: None,
            forwarded_for: None,
        }
    }

    /// A client that signs with a fresh DPoP key.
    pub fn bound(server: &'s TestServer) -> Self {
        Client {
            key: Some(Arc::new(ProofSigner::generate())),
            ..Client::new(server)
        }
    }

    /// Requests go into the router without a socket.
    pub fn oneshot(mut self) -> Self {
        self.transport = Transport::Oneshot(tokenwarden_server::router(&self.server.state));
        self
    }

    /// A proof for `method path` by this client's key, with its newest nonce and, if given,
    /// bound to `token`.
    pub fn proof(&self, method: &str, path: &str, token: Option<&str>) -> Option<String> {
        let key = self.key.as_ref()?;
        Some(key.proof(
            method,
            &self.server.url(path),
            self.server.state.now(),
            token,
            self.nonce.as_deref(),
        ))
    }

    /// Sends one request as the browser would, with `extra` headers; `Authorization` with the
    /// access token for the API and the sessions list. No retry.
    pub async fn send_once(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let mut headers = HeaderMap::new();
        let mut put = |name: &str, value: &str| {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        };
        let authorized = path.starts_with("/api/") || path.starts_with("/auth/sessions");
        let token = self.access.clone().filter(|_| authorized);
        if let Some(t) = &token {
            let scheme = if self.key.is_some() { "DPoP" } else { "Bearer" };
            put("authorization", &format!("{scheme} {t}"));
        }
        let proof_path = path.split('?').next().unwrap_or(path);
        if let Some(p) = self.proof(method, proof_path, token.as_deref()) {
            put("dpop", &p);
        }
        if is_cookie_endpoint(path) {
            put("x-tokenwarden", "1");
            if let Some(r) = &self.refresh {
                put("cookie", &format!("{REFRESH_COOKIE}={r}"));
            }
        }
        if let Some(ip) = &self.forwarded_for {
            put("x-forwarded-for", ip);
        }
        if body.is_some() {
            put("content-type", "application/json");
        }
        for (name, value) in extra {
            put(name, value);
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let answer = match &self.transport {
            Transport::Socket => {
                let res = self
                    .server
                    .http
                    .request(method, self.server.url(path))
                    .headers(headers)
                    .body(bytes)
                    .send()
                    .await
                    .expect("request");
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let body = res.json().await.unwrap_or(Value::Null);
                Answer {
                    status,
                    headers,
                    body,
                }
            }
            Transport::Oneshot(router) => {
                let mut req = axum::http::Request::builder()
                    .method(method.as_str())
                    .uri(path)
                    .body(Body::from(bytes))
                    .expect("request");
                *req.headers_mut() = headers;
                let host = self.server.base.trim_start_matches("http://");
                req.headers_mut()
                    .insert("host", HeaderValue::from_str(host).expect("host"));
                let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
                req.extensions_mut().insert(ConnectInfo(peer));
                let res = router.clone().oneshot(req).await.expect("infallible");
                let status = res.status().as_u16();
                let headers = res.headers().clone();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .expect("body");
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Answer {
                    status,
                    headers,
                    body,
                }
            }
        };
        self.learn(&answer);
        answer
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
        if let Some(t) = a.body["access_token"].as_str() {
            self.access = Some(t.to_owned());
        }
    }

    /// [`Self::send_once`], retried once with the new nonce on `use_dpop_nonce`.
    pub async fn send(&mut self, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let first = self.send_once(method, path, body, &[]).await;
        if self.key.is_some() && first.error() == "use_dpop_nonce" {
            return self.send_once(method, path, body, &[]).await;
        }
        first
    }

    pub async fn login(&mut self, (email, password): (&str, &str)) -> Answer {
        let body = serde_json::json!({ "email": email, "password": password });
        self.send("POST", "/auth/login", Some(&body)).await
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

    /// A nonce from any answer of the server (its health check), as a page's first request
    /// would learn it.
    pub async fn fetch_nonce(&mut self) {
        self.send_once("GET", "/healthz", None, &[]).await;
    }
}
