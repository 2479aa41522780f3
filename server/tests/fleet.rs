//! Three instances on one PostgreSQL database, each with its own pool, memory and listener,
//! behind its own loopback port: what a load balancer in front of a fleet gives a client.
//! Always on PostgreSQL (a cluster of its own, or `TW_TEST_PG_URL`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sqlx::Row;
use tokenwarden_dpop::ProofSigner;
use tokenwarden_server::Settings;

/// Three instances of one fleet; `configure` applies to each.
async fn fleet(configure: impl Fn(&mut Settings) + Copy) -> (String, [TestServer; 3]) {
    let url = pg::fresh_database().await;
    let a = TestServer::on(&url, configure).await;
    let b = TestServer::on(&url, configure).await;
    let c = TestServer::on(&url, configure).await;
    for s in [&a, &b, &c] {
        assert_eq!(s.state.store.backend(), "postgres");
    }
    (url, [a, b, c])
}

async fn stop_all(servers: [TestServer; 3]) {
    for s in servers {
        s.stop().await;
    }
}

async fn logout(s: &TestServer, t: &Tokens) {
    let res = s
        .http
        .post(s.url("/auth/logout"))
        .header("x-tokenwarden", "1")
        .header("cookie", format!("{REFRESH_COOKIE}={}", t.refresh))
        .bearer_auth(&t.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}

fn session_of(t: &Tokens) -> String {
    let (_, claims) = jwt_parts(&t.access);
    claims["sid"].as_str().expect("sid").to_owned()
}

/// Polls `GET /api/me` with each token until every one is refused; the time that took.
async fn until_refused(s: &TestServer, tokens: &[&str], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(10);
    loop {
        let mut all = true;
        for t in tokens {
            let status = s.me(t).await.status();
            assert!(status == 200 || status == 401, "unexpected {status}");
            all &= status == 401;
        }
        if all {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "a revoked token still accepted after 10 s on {}",
            s.base
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Revocation {
    Logout,
    RevokedByUser,
    ReuseDetected,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_revocation_made_on_one_instance_is_honoured_by_the_others_within_a_second() {
    let (_, [a, b, c]) = fleet(|_| {}).await;
    let kinds = [
        Revocation::Logout,
        Revocation::RevokedByUser,
        Revocation::ReuseDetected,
    ];
    let rounds = 60;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let kind = kinds[round % kinds.len()];
        // Log in on A, refresh on B: both access tokens work everywhere.
        let t0 = a.login(ALICE).await;
        let t1 = b.refresh(&t0.refresh).await;
        for s in [&a, &b, &c] {
            assert_eq!(s.me(&t0.access).await.status(), 200);
            assert_eq!(s.me(&t1.access).await.status(), 200);
        }
        // Revoke on C; the clock starts when the revoking request is sent.
        let since = match kind {
            Revocation::Logout => {
                let since = Instant::now();
                logout(&c, &t1).await;
                since
            }
            Revocation::RevokedByUser => {
                // From another session of the same user (a lost device revoked from a laptop).
                let other = c.login(ALICE).await;
                let since = Instant::now();
                let res = c
                    .http
                    .delete(c.url(&format!("/auth/sessions/{}", session_of(&t0))))
                    .bearer_auth(&other.access)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 204);
                since
            }
            Revocation::ReuseDetected => {
                // A copy of t0 gets a sibling of t1 (a repeat within the window); t1 is then
                // used, and the sibling presented after it is reuse: the family is revoked.
                let sibling = c.refresh(&t0.refresh).await;
                let _t2 = c.refresh(&t1.refresh).await;
                let since = Instant::now();
                assert_eq!(c.refresh_error(&sibling.refresh).await, "token_reused");
                since
            }
        };
        let tokens = [t0.access.as_str(), t1.access.as_str()];
        for s in [&a, &b] {
            samples.push(until_refused(s, &tokens, since).await);
        }
        assert_eq!(
            c.me(&t1.access).await.status(),
            401,
            "round {round}: {kind:?}"
        );
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).saturating_sub(1)];
    let (p50, p99, max) = (pct(0.50), pct(0.99), samples[samples.len() - 1]);
    println!(
        "revocation propagation over {rounds} revocations ({} samples, A and B after a \
         revocation on C; logout, session revoked by its user, reuse detected): \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    assert!(samples.len() >= 100);
    assert!(
        p99 <= Duration::from_secs(1),
        "p99 of revocation propagation is {p99:?} (> 1 s)"
    );
    stop_all([a, b, c]).await;
}

/// The state of a session's token rows, read from the database.
async fn token_rows(url: &str, session: &str) -> Vec<(i64, Option<i64>, i64, bool)> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let rows = sqlx::query(
        "SELECT generation, claimed_at, children, revoked_at IS NOT NULL AS revoked
         FROM refresh_tokens WHERE session_id = $1 ORDER BY generation, created_at",
    )
    .bind(session)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| {
            (
                r.get("generation"),
                r.get("claimed_at"),
                r.get("children"),
                r.get("revoked"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_token_presented_on_three_instances_at_once_gives_the_single_instance_outcome()
{
    let (url, servers) = fleet(|_| {}).await;
    let [a, b, c] = &servers;
    for round in 0..5 {
        let t0 = a.login(BOB).await;
        let sid = session_of(&t0);
        // Four presentations per instance, all at once.
        let requests = (0..12).map(|i| [a, b, c][i % 3].refresh_response(&t0.refresh));
        let responses = futures::future::join_all(requests).await;
        let mut children = Vec::new();
        for res in responses {
            assert_eq!(res.status(), 200, "round {round}: no false reuse detection");
            children.push(tokens_of(res).await);
        }
        // Exactly what one instance records for 12 presentations of a fresh token: one claim
        // and 11 repeats, 12 children of generation 1, nothing revoked.
        let rows = token_rows(&url, &sid).await;
        assert_eq!(rows.len(), 13, "round {round}: {rows:?}");
        assert_eq!(rows[0].0, 0);
        assert!(rows[0].1.is_some(), "claimed");
        assert_eq!(
            rows[0].2, 12,
            "round {round}: every child counted once: {rows:?}"
        );
        assert!(rows[1..].iter().all(|r| r.0 == 1 && r.1.is_none() && !r.3));
        // Whichever child the browser kept works, on any instance; a sibling after it is reuse.
        let kept = &children[round % 12];
        let next = [b, c, a][round % 3].refresh(&kept.refresh).await;
        assert_eq!(c.me(&next.access).await.status(), 200);
        let sibling = &children[(round + 1) % 12];
        assert_eq!(a.refresh_error(&sibling.refresh).await, "token_reused");
    }
    for s in [a, b, c] {
        assert_eq!(
            s.stats().await["reuse_detections"],
            if std::ptr::eq(s, a) { 5 } else { 0 }
        );
    }
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_children_cap_holds_across_instances() {
    // At most 3 children per token: of 12 presentations at once on three instances, exactly 3
    // are answered with a token, as on one instance; a lost update would let more through.
    let (url, servers) = fleet(|s| s.rotation.max_children = 3).await;
    let [a, b, c] = &servers;
    let t0 = a.login(ALICE).await;
    let requests = (0..12).map(|i| [a, b, c][i % 3].refresh_response(&t0.refresh));
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        9,
        "{statuses:?}"
    );
    let rows = token_rows(&url, &session_of(&t0)).await;
    assert_eq!(rows.len(), 4, "{rows:?}");
    assert_eq!(rows[0].2, 3);
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttles_count_for_the_whole_fleet_not_per_instance() {
    let (_, servers) = fleet(|s| {
        s.refresh_session_per_minute = 5;
        s.login_ip_per_minute = 4;
    })
    .await;
    let [a, b, c] = &servers;
    // One fixed-window minute for the whole test, on every instance.
    for s in [a, b, c] {
        s.state.clock.freeze();
    }
    if a.state.now().rem_euclid(60) > 40 {
        for s in [a, b, c] {
            s.state.clock.advance(30);
        }
    }
    let minute = |s: &TestServer| s.state.now().div_euclid(60);
    assert!(minute(a) == minute(b) && minute(b) == minute(c));
    // Logins per client address: 4 a minute for the fleet, not 4 per instance.
    let mut login_statuses = Vec::new();
    for i in 0..9 {
        let s = [a, b, c][i % 3];
        let res = s.login_response(BOB.0, BOB.1).await;
        login_statuses.push(res.status().as_u16());
    }
    assert_eq!(
        login_statuses,
        [200, 200, 200, 200, 429, 429, 429, 429, 429]
    );
    // Refreshes per session: 5 a minute for the fleet. (One login, its chain of children.)
    for s in [a, b, c] {
        s.state
            .passwords
            .ip_limiter
            .reset(&s.state.store)
            .await
            .unwrap();
    }
    let mut t = a.login(ALICE).await;
    let mut statuses = Vec::new();
    for i in 0..9 {
        let s = [b, c, a][i % 3];
        let res = s.refresh_response(&t.refresh).await;
        statuses.push(res.status().as_u16());
        if res.status() == 200 {
            t = tokens_of(res).await;
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429]);
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_was_down_during_a_revocation_refuses_the_token_when_it_is_back() {
    let (url, [a, b, c]) = fleet(|_| {}).await;
    let t = a.login(ALICE).await;
    let u = a.login(BOB).await;
    assert_eq!(b.me(&t.access).await.status(), 200);
    b.stop().await;
    logout(&c, &t).await;
    // Bob's session is revoked from another of his sessions, and a key is revoked.
    let other = c.login(BOB).await;
    let res = c
        .http
        .delete(c.url(&format!("/auth/sessions/{}", session_of(&u))))
        .bearer_auth(&other.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let b = TestServer::on(&url, |_| {}).await;
    assert_eq!(
        b.me(&t.access).await.status(),
        401,
        "deny-list read at start"
    );
    assert_eq!(
        b.me(&u.access).await.status(),
        401,
        "revoked session read at start"
    );
    assert_eq!(b.me(&other.access).await.status(), 200);
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_hears_no_notification_catches_up_by_reading_within_a_second() {
    let url = pg::fresh_database().await;
    let a = TestServer::on(&url, |_| {}).await;
    // Deaf: as if its listening connection had dropped for good.
    let b = TestServer::on(&url, |s| s.revocation_notifications = false).await;
    for _ in 0..5 {
        let t = a.login(ALICE).await;
        assert_eq!(b.me(&t.access).await.status(), 200);
        let since = Instant::now();
        logout(&a, &t).await;
        let took = until_refused(&b, &[&t.access], since).await;
        assert!(took <= Duration::from_secs(1), "catch-up took {took:?}");
    }
    // A key revoked on A stops verifying on B too, and B stops signing with it.
    let t = a.login(ALICE).await;
    let (header, _) = jwt_parts(&t.access);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let since = Instant::now();
    assert!(
        a.state
            .keys
            .revoke(&a.state.store, &kid, a.state.now())
            .await
            .unwrap()
    );
    let took = until_refused(&b, &[&t.access], since).await;
    assert!(
        took <= Duration::from_secs(1),
        "key revocation took {took:?}"
    );
    let fresh = b.login(ALICE).await;
    let (header, _) = jwt_parts(&fresh.access);
    assert_ne!(header["kid"], Value::String(kid));
    assert_eq!(
        a.me(&fresh.access).await.status(),
        200,
        "A verifies B's new key"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_key_rotation_on_one_instance_logs_nobody_out_anywhere() {
    let (_, [a, b, c]) = fleet(|_| {}).await;
    let before = a.login(ALICE).await;
    let kid = a
        .state
        .keys
        .rotate(&a.state.store, a.state.now())
        .await
        .unwrap();
    let since = Instant::now();
    // Within a second every instance signs with the new key and still accepts the old one.
    for s in [&b, &c] {
        loop {
            let t = s.login(BOB).await;
            let (header, _) = jwt_parts(&t.access);
            if header["kid"] == Value::String(kid.clone()) {
                assert_eq!(a.me(&t.access).await.status(), 200);
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "new key not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            s.me(&before.access).await.status(),
            200,
            "old key still verifies"
        );
    }
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dpop_proof_accepted_by_one_instance_is_refused_by_the_others() {
    // One public origin for the fleet (the proxy's), so that a proof names the same `htu`
    // whichever instance receives it, and the nonce secret is shared through the database.
    let (_, [a, b, c]) = fleet(|s| s.public_origins = vec!["https://api.example".into()]).await;
    let key = ProofSigner::generate();
    let nonce = |s: &TestServer| s.state.dpop.nonces().current(s.state.now());
    assert_eq!(nonce(&a), nonce(&b), "one nonce secret for the fleet");
    let login_proof = key.proof(
        "POST",
        "https://api.example/auth/login",
        a.state.now(),
        None,
        Some(&nonce(&a)),
    );
    let res = a
        .http
        .post(a.url("/auth/login"))
        .header("dpop", &login_proof)
        .json(&serde_json::json!({ "email": ALICE.0, "password": ALICE.1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let proof = key.proof(
        "GET",
        "https://api.example/api/me",
        a.state.now(),
        Some(&access),
        Some(&nonce(&a)),
    );
    let me = |s: &TestServer| {
        s.http
            .get(s.url("/api/me"))
            .header("authorization", format!("DPoP {access}"))
            .header("dpop", &proof)
            .send()
    };
    assert_eq!(me(&a).await.unwrap().status(), 200);
    for s in [&b, &c, &a] {
        let res = me(s).await.unwrap();
        assert_eq!(res.status(), 401, "a replayed proof on {}", s.base);
        assert_eq!(error_code(res).await, "invalid_dpop_proof");
    }
    // One fresh proof sent to all three at once, twice each: exactly one answer is 200.
    for round in 0..5 {
        let proof = key.proof(
            "GET",
            "https://api.example/api/me",
            a.state.now(),
            Some(&access),
            Some(&nonce(&a)),
        );
        let sends = [&a, &b, &c, &a, &b, &c].map(|s| {
            s.http
                .get(s.url("/api/me"))
                .header("authorization", format!("DPoP {access}"))
                .header("dpop", &proof)
                .send()
        });
        let statuses: Vec<u16> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.unwrap().status().as_u16())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5);
    }
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_cli_run_anywhere_reaches_every_instance_within_a_second() {
    let (url, [a, b, c]) = fleet(|_| {}).await;
    let t = a.login(ALICE).await;
    let (header, _) = jwt_parts(&t.access);
    let old_kid = header["kid"].as_str().unwrap().to_owned();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden-server"))
        .args(["keys", "revoke", &old_kid])
        .env("TW_DATABASE_URL", &url)
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let since = Instant::now();
    for s in [&a, &b, &c] {
        let took = until_refused(s, &[&t.access], since).await;
        assert!(took <= Duration::from_secs(1), "{took:?} on {}", s.base);
    }
    stop_all([a, b, c]).await;
}
