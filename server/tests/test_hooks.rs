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
    let mut c = Client::new(&s).oneshot();
    let mut send = async |method: &str, path: &str, body: &Option<Value>, secret: Option<&str>| {
        let extra: Vec<_> = secret.map(|v| (SECRET_HEADER, v)).into_iter().collect();
        c.send_once(method, path, body.as_ref(), &extra).await
    };
    let now = s.state.now();
    for (method, path, body) in &hooks {
        for wrong in [None, Some("wrong-secret-wrong-secret"), Some("")] {
            let res = send(method, path, body, wrong).await;
            assert_eq!(res.status, 404, "{method} {path} with {wrong:?}");
            assert_eq!(res.error(), "not_found");
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
    let res = send("DELETE", "/test/stats", &None, None).await;
    assert_eq!(res.status, 404);
    let res = send("GET", "/test/nothing", &None, Some(&secret)).await;
    assert_eq!(res.status, 404);

    for (method, path, body) in &hooks {
        let res = send(method, path, body, Some(&secret)).await;
        assert!(
            (200..300).contains(&res.status),
            "{method} {path}: {}",
            res.status
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_echo_hook_never_reflects_the_http_only_refresh_cookie() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    // What the browser sends to any path: both cookies.
    let cookies = format!("tw_session=1; {REFRESH_COOKIE}={}", t.refresh);
    let hook = [
        (SECRET_HEADER, s.state.settings.test_hooks_secret.as_str()),
        ("cookie", &cookies),
    ];
    let echo = c.send_once("GET", "/test/echo", None, &hook).await.body;
    let cookie = echo["cookie"].as_str().unwrap();
    assert!(!cookie.contains(&t.refresh), "{cookie}");
    assert!(cookie.contains("tw_session=1"), "{cookie}");
    s.stop().await;
}

#[tokio::test]
async fn cors_allows_the_secret_header_only_where_hooks_are_mounted() {
    let preflight = async |s: &TestServer, method: &str, path: &str, header: &str| {
        let asks = [
            ("origin", "http://app.test:3000"),
            ("access-control-request-method", method),
            ("access-control-request-headers", header),
        ];
        let mut c = Client::new(s).oneshot();
        let res = c.send_once("OPTIONS", path, None, &asks).await;
        res.header("access-control-allow-headers")
            .unwrap()
            .to_owned()
    };
    let s = TestServer::start().await;
    let allowed = preflight(&s, "GET", "/test/stats", SECRET_HEADER).await;
    assert!(allowed.contains(SECRET_HEADER));
    s.stop().await;
    let s = TestServer::with(|c| c.test_hooks = false).await;
    let allowed = preflight(&s, "POST", "/auth/refresh", CSRF_HEADER).await;
    assert!(!allowed.contains(SECRET_HEADER));
    let res = Client::new(&s).oneshot().get("/test/stats").await;
    assert_eq!(res.status, 404, "not mounted without --test-hooks");
    s.stop().await;
}

/// Starts the binary; returns it, its address and the secret it printed.
fn start(args: &[&str]) -> (std::process::Child, String, String) {
    let mut child = Command::new(server_binary())
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
    let (mut a, base_a, secret_a) = start(&["--test-hooks"]);
    let (mut b, _, secret_b) = start(&["--test-hooks"]);
    assert_ne!(secret_a, secret_b, "random per start");
    assert!(secret_a.len() >= 32);
    let stats = async |base: &str, secret: Option<&str>| {
        let extra: Vec<_> = secret.map(|v| (SECRET_HEADER, v)).into_iter().collect();
        let mut c = Client::to(base);
        c.send_once("GET", "/test/stats", None, &extra).await.status
    };
    assert_eq!(stats(&base_a, None).await, 404);
    assert_eq!(stats(&base_a, Some(&secret_b)).await, 404);
    assert_eq!(stats(&base_a, Some(&secret_a)).await, 200);
    for c in [&mut a, &mut b] {
        let _ = c.kill();
        let _ = c.wait();
    }

    let given = "a-secret-the-tests-chose";
    let (mut c, base, secret) = start(&["--test-hooks", "--test-hooks-secret", given]);
    assert_eq!(secret, given);
    assert_eq!(stats(&base, Some(given)).await, 200);
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
        let out = Command::new(server_binary())
            .args(&args)
            .args(["--database-url", "sqlite::memory:"])
            .finished();
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
    // Over the socket: the Date the browser sees, whatever the HTTP layer adds.
    let mut c = Client::new(&s);
    let secret = s.state.settings.test_hooks_secret.clone();
    let advance = json!({ "advance_secs": 86_400 });
    let hook = [(SECRET_HEADER, secret.as_str())];
    let moved = c
        .send_once("POST", "/test/clock", Some(&advance), &hook)
        .await;
    let now = moved.body["now"].as_i64().unwrap();
    for path in ["/healthz", "/nothing", "/.well-known/jwks.json"] {
        let res = c.get(path).await;
        let date = res.header("date").unwrap();
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
