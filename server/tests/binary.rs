//! The server as its users run it: a database file, restarts, the `keys` CLI, `--demo`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_tokenwarden-server");

fn db_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/tw.db", dir.path().display())
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    let t = s.login(ALICE).await;
    s.stop().await;

    let s = TestServer::on(&url, |_| {}).await;
    assert_eq!(
        s.me(&t.access).await.status(),
        200,
        "same signing key after restart"
    );
    let t1 = s.refresh(&t.refresh).await;
    assert_eq!(s.me(&t1.access).await.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_logout_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |_| {}).await;
    let t = s.login(ALICE).await;
    let res = s
        .http
        .post(s.url("/auth/logout"))
        .header("x-tokenwarden", "1")
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    s.stop().await;
    let s = TestServer::on(&url, |_| {}).await;
    assert_eq!(s.me(&t.access).await.status(), 401, "deny-list reloaded");
    s.stop().await;
}

fn cli(url: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .env("TW_DATABASE_URL", url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_keys_cli_reaches_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = db_url(&dir);
    let s = TestServer::on(&url, |c| c.key_poll_secs = 1).await;
    let _poller = tokenwarden_server::spawn_maintenance(s.state.clone());
    let t = s.login(ALICE).await;
    let kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
    assert!(cli(&url, &["keys", "list"]).contains(&format!("{kid:<44} signing")));

    // Graceful: the old token keeps working; new tokens carry the new kid.
    let out = cli(&url, &["keys", "rotate"]);
    assert!(out.starts_with("new signing key "), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut t = t;
    loop {
        assert_eq!(s.me(&t.access).await.status(), 200);
        t = s.refresh(&t.refresh).await;
        if jwt_parts(&t.access).0["kid"] != kid.as_str() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never picked up the new key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let new_kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();

    // Emergency: the current key's tokens are refused within the poll interval.
    cli(&url, &["keys", "revoke", &new_kid]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.me(&t.access).await.status() == 200 {
        assert!(
            Instant::now() < deadline,
            "revocation never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let t2 = s.refresh(&t.refresh).await;
    assert_eq!(
        s.me(&t2.access).await.status(),
        200,
        "refresh recovers, nobody logged out"
    );
    s.stop().await;
}

#[test]
fn a_kid_starting_with_a_hyphen_is_a_kid_not_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["keys", "revoke", "-UFESxKKOT57uH09yl5mQUbeXF9"])
        .env("TW_DATABASE_URL", db_url(&dir))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no live key with kid -UFESxKKOT57uH09yl5mQUbeXF9"),
        "{stderr}"
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let s = TestServer::start().await;
    let t = s.login(ALICE).await;
    s.post_json("/test/faults", json!({ "refresh_latency_ms": 400 }))
        .await;
    let pending = tokio::spawn({
        let http = s.http.clone();
        let url = s.url("/auth/refresh");
        async move {
            http.post(url)
                .header("x-tokenwarden", "1")
                .header("cookie", format!("{REFRESH_COOKIE}={}", t.refresh))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop().await;
    let res = pending.await.unwrap().expect("response despite shutdown");
    assert_eq!(res.status(), 200);
}

#[test]
fn test_hooks_are_refused_on_a_non_loopback_address() {
    let out = Command::new(BIN)
        .args([
            "--bind",
            "0.0.0.0:0",
            "--test-hooks",
            "--database-url",
            "sqlite::memory:",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--test-hooks is refused on a non-loopback address"),
        "{stderr}"
    );
}

#[test]
fn a_wildcard_cors_origin_is_refused() {
    let out = Command::new(BIN)
        .args([
            "--bind",
            "127.0.0.1:0",
            "--allowed-origin",
            "*",
            "--database-url",
            "sqlite::memory:",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("explicit http(s) origin"));
}

#[tokio::test]
async fn demo_mode_prints_credentials_that_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["--demo", "--bind", "127.0.0.1:0"])
        .env("TW_DATABASE_URL", db_url(&dir))
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut base = None;
    let mut creds = None;
    for line in lines.by_ref().take(5) {
        let line = line.unwrap();
        if let Some(url) = line.strip_prefix("tokenwarden-server listening on ") {
            base = Some(url.to_owned());
        }
        if let Some(c) = line.strip_prefix("demo user: ") {
            let (email, password) = c.split_once(" / ").unwrap();
            creds = Some((email.to_owned(), password.to_owned()));
            break;
        }
    }
    let (base, (email, password)) = (
        base.expect("address printed"),
        creds.expect("credentials printed"),
    );
    let res = reqwest::Client::new()
        .post(format!("{base}/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 30, "short tokens in demo mode");
    let _ = child.kill();
    let _ = child.wait();
}
