//! The test hooks of a binary built with `--features test-hooks`: served only to requests that
//! carry the per-start secret. (Without the feature: tests/binary.rs.)
//!
//! `cargo test -p tokenwarden-server --features test-hooks --test test_hooks`
#![cfg(feature = "test-hooks")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_tokenwarden-server");
const SECRET_HEADER: &str = "x-test-hooks-secret";

#[tokio::test]
async fn every_hook_answers_404_without_the_secret_and_works_with_it() {
    let s = TestServer::start().await;
    let secret = s.state.settings.test_hooks_secret.clone();
    let hooks: [(&str, &str, Option<Value>); 7] = [
        ("GET", "/test/stats", None),
        ("POST", "/test/reset", None),
        (
            "POST",
            "/test/faults",
            Some(json!({ "refresh_latency_ms": 0 })),
        ),
        ("POST", "/test/clock", Some(json!({ "advance_secs": 3600 }))),
        ("POST", "/test/keys/rotate", None),
        (
            "POST",
            "/test/users",
            Some(
                json!({ "email": "mallory@example.com", "password": "mallory-pass", "name": "M", "roles": ["admin"] }),
            ),
        ),
        ("GET", "/test/echo", None),
    ];
    let send = |method: &str, path: &str, body: &Option<Value>, secret: Option<&str>| {
        let mut req = s.http.request(method.parse().unwrap(), s.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(v) = secret {
            req = req.header(SECRET_HEADER, v);
        }
        req.send()
    };
    let now = s.state.now();
    for (method, path, body) in &hooks {
        for wrong in [None, Some("wrong-secret-wrong-secret"), Some("")] {
            let res = send(method, path, body, wrong).await.unwrap();
            assert_eq!(res.status(), 404, "{method} {path} with {wrong:?}");
            assert_eq!(error_code(res).await, "not_found");
        }
    }
    // Nothing happened: no clock move, no admin user.
    assert!(s.state.now() - now < 5);
    assert!(
        s.state
            .store
            .user_by_email("mallory@example.com")
            .await
            .unwrap()
            .is_none()
    );
    // Unknown paths and wrong methods under /test look the same.
    let res = send("DELETE", "/test/stats", &None, None).await.unwrap();
    assert_eq!(res.status(), 404);
    let res = send("GET", "/test/nothing", &None, Some(&secret))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    for (method, path, body) in &hooks {
        let res = send(method, path, body, Some(&secret)).await.unwrap();
        assert!(
            res.status().is_success(),
            "{method} {path}: {}",
            res.status()
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_echo_hook_never_reflects_the_http_only_refresh_cookie() {
    let s = TestServer::start().await;
    let t = s.login(ALICE).await;
    let echo: Value = s
        .http
        .get(s.url("/test/echo"))
        .header(SECRET_HEADER, &s.state.settings.test_hooks_secret)
        .header(
            "cookie",
            format!("tw_session=1; {REFRESH_COOKIE}={}", t.refresh),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cookie = echo["cookie"].as_str().unwrap();
    assert!(!cookie.contains(&t.refresh), "{cookie}");
    assert!(cookie.contains("tw_session=1"), "{cookie}");
    s.stop().await;
}

#[tokio::test]
async fn cors_allows_the_secret_header_only_where_hooks_are_mounted() {
    let s = TestServer::start().await;
    let res = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/test/stats"))
        .header("origin", "http://app.test:3000")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", SECRET_HEADER)
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains(SECRET_HEADER)
    );
    s.stop().await;
    let s = TestServer::with(|c| c.test_hooks = false).await;
    let res = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/auth/refresh"))
        .header("origin", "http://app.test:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-tokenwarden")
        .send()
        .await
        .unwrap();
    assert!(
        !res.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains(SECRET_HEADER)
    );
    let res = s.http.get(s.url("/test/stats")).send().await.unwrap();
    assert_eq!(res.status(), 404, "not mounted without --test-hooks");
    s.stop().await;
}

/// Starts the binary; returns it, its address and the secret it printed.
fn start(args: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(BIN)
        .args(["--bind", "127.0.0.1:0", "--database-url", "sqlite::memory:"])
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("TW_TEST_HOOKS_SECRET")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base, mut secret) = (None, None);
    for line in lines.by_ref().take(5) {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("tokenwarden-server listening on ") {
            base = Some(url.to_owned());
        }
        if let Some(rest) =
            line.strip_prefix("test hooks enabled at /test/* (header X-Test-Hooks-Secret: ")
        {
            secret = Some(rest.trim_end_matches(')').to_owned());
            break;
        }
    }
    (
        child,
        base.expect("address"),
        secret.expect("secret printed"),
    )
}

#[tokio::test]
async fn the_binary_prints_a_random_secret_or_takes_the_one_given() {
    let http = reqwest::Client::new();
    let (mut a, base_a, secret_a) = start(&["--test-hooks"]);
    let (mut b, _, secret_b) = start(&["--test-hooks"]);
    assert_ne!(secret_a, secret_b, "random per start");
    assert!(secret_a.len() >= 32);
    let stats = |secret: Option<String>| {
        let mut req = http.get(format!("{base_a}/test/stats"));
        if let Some(s) = secret {
            req = req.header(SECRET_HEADER, s);
        }
        req.send()
    };
    assert_eq!(stats(None).await.unwrap().status(), 404);
    assert_eq!(stats(Some(secret_b.clone())).await.unwrap().status(), 404);
    assert_eq!(stats(Some(secret_a.clone())).await.unwrap().status(), 200);
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }

    let given = "a-secret-the-tests-chose";
    let (mut c, base, secret) = start(&["--test-hooks", "--test-hooks-secret", given]);
    assert_eq!(secret, given);
    let res = http
        .get(format!("{base}/test/stats"))
        .header(SECRET_HEADER, given)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn test_hooks_are_refused_on_a_non_loopback_address_or_with_a_short_secret() {
    for (args, message) in [
        (
            vec!["--bind", "0.0.0.0:0", "--test-hooks"],
            "--test-hooks is refused on a non-loopback address",
        ),
        (
            vec![
                "--bind",
                "127.0.0.1:0",
                "--test-hooks",
                "--test-hooks-secret",
                "short",
            ],
            "--test-hooks-secret must be at least 16 characters",
        ),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .args(["--database-url", "sqlite::memory:"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{stderr}");
    }
}

/// A DPoP client stamps its proofs with the server's time, learnt from `Date`: a clock moved by
/// `/test/clock` must show there too, or proofs made after the move are refused as too old.
#[tokio::test]
async fn the_moved_clock_is_the_date_every_response_carries() {
    let s = TestServer::start().await;
    let secret = s.state.settings.test_hooks_secret.clone();
    let moved: Value = s
        .http
        .post(s.url("/test/clock"))
        .header(SECRET_HEADER, &secret)
        .json(&json!({ "advance_secs": 86_400 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let now = moved["now"].as_i64().unwrap();
    for path in ["/healthz", "/nothing", "/.well-known/jwks.json"] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        let date = res.headers()["date"].to_str().unwrap();
        let at = httpdate::parse_http_date(date).unwrap();
        let at = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        assert!(
            (at - now).abs() <= 2,
            "{path}: Date {date} is not the moved clock"
        );
    }
    // And a bound client that learns it from there signs proofs the server accepts.
    let mut c = Client::bound(&s);
    assert_eq!(c.login(ALICE).await.status, 200);
    assert_eq!(c.get("/api/me").await.status, 200);
    s.stop().await;
}
