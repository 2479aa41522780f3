//! Three instances on one PostgreSQL database, each with its own pool, memory and listener,
//! behind its own loopback port: what a load balancer in front of a fleet gives a client (one
//! `Client`, each request sent `via` the instance the test chooses). Always on PostgreSQL (a
//! cluster of its own, or `TW_TEST_PG_URL`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use sqlx::Row;
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

/// `n` copies of `tab` (its jar, key and nonce), spread over the instances in turn, each
/// sending `request` at the same moment; the answers in that order.
async fn at_once(
    tab: &Client,
    instances: [&TestServer; 3],
    n: usize,
    request: impl AsyncFn(&mut Client) -> Answer,
) -> Vec<Answer> {
    let mut tabs = tab.tabs(n);
    for (i, t) in tabs.iter_mut().enumerate() {
        t.via(instances[i % 3]);
    }
    futures::future::join_all(tabs.iter_mut().map(|t| request(t))).await
}

/// A logout on `s` by the client holding `t` (its cookie and its token).
async fn logout(s: &TestServer, t: &Tokens) {
    assert_eq!(Client::new(s).holding(t).logout().await.status, 204);
}

fn session_of(t: &Tokens) -> String {
    let (_, claims) = jwt_parts(&t.access);
    claims["sid"].as_str().expect("sid").to_owned()
}

/// Polls `GET /api/me` with each token until every one is refused; the time that took.
async fn until_refused(s: &TestServer, tokens: &[&str], since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(10);
    let mut c = Client::new(s);
    loop {
        let mut all = true;
        for t in tokens {
            let status = c.me(t).await.status;
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
    let mut tab = Client::new(&a);
    for round in 0..rounds {
        let kind = kinds[round % kinds.len()];
        // Log in on A, refresh on B: both access tokens work everywhere.
        let t0 = tab.via(&a).sign_in(ALICE).await;
        let t1 = tab.via(&b).rotate(&t0.refresh).await;
        for s in [&a, &b, &c] {
            assert_eq!(tab.via(s).me(&t0.access).await.status, 200);
            assert_eq!(tab.via(s).me(&t1.access).await.status, 200);
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
                let mut laptop = Client::new(&c);
                laptop.sign_in(ALICE).await;
                let since = Instant::now();
                let path = format!("/auth/sessions/{}", session_of(&t0));
                assert_eq!(laptop.delete(&path).await.status, 204);
                since
            }
            Revocation::ReuseDetected => {
                // A copy of t0 gets a sibling of t1 (a repeat within the window); t1 is then
                // used, and the sibling presented after it is reuse: the family is revoked.
                let sibling = tab.via(&c).rotate(&t0.refresh).await;
                let _t2 = tab.via(&c).rotate(&t1.refresh).await;
                let since = Instant::now();
                let code = tab.via(&c).refresh_error(&sibling.refresh).await;
                assert_eq!(code, "token_reused");
                since
            }
        };
        let tokens = [t0.access.as_str(), t1.access.as_str()];
        for s in [&a, &b] {
            samples.push(until_refused(s, &tokens, since).await);
        }
        assert_eq!(
            tab.via(&c).me(&t1.access).await.status,
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
    let mut tab = Client::new(a);
    for round in 0..5 {
        let t0 = tab.via(a).sign_in(BOB).await;
        let sid = session_of(&t0);
        // Four presentations per instance, all at once.
        let responses = at_once(&tab, [a, b, c], 12, async |t| t.refresh().await).await;
        let mut children = Vec::new();
        for res in responses {
            assert_eq!(res.status, 200, "round {round}: no false reuse detection");
            children.push(tab.tokens_of(&res));
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
        let next = tab.via([b, c, a][round % 3]).rotate(&kept.refresh).await;
        assert_eq!(tab.via(c).me(&next.access).await.status, 200);
        let sibling = &children[(round + 1) % 12];
        let code = tab.via(a).refresh_error(&sibling.refresh).await;
        assert_eq!(code, "token_reused");
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
    let mut tab = Client::new(a);
    let t0 = tab.sign_in(ALICE).await;
    let answers = at_once(&tab, [a, b, c], 12, async |t| t.refresh().await).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
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
    let mut tab = Client::new(a);
    let mut login_statuses = Vec::new();
    for i in 0..9 {
        let s = [a, b, c][i % 3];
        login_statuses.push(tab.via(s).login(BOB).await.status);
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
    let mut t = tab.via(a).sign_in(ALICE).await;
    let mut statuses = Vec::new();
    for i in 0..9 {
        let s = [b, c, a][i % 3];
        let res = tab.via(s).present(&t.refresh).await;
        statuses.push(res.status);
        if res.status == 200 {
            t = tab.tokens_of(&res);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429, 429]);
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_was_down_during_a_revocation_refuses_the_token_when_it_is_back() {
    let (url, [a, b, c]) = fleet(|_| {}).await;
    let mut tab = Client::new(&a);
    let t = tab.sign_in(ALICE).await;
    let u = tab.sign_in(BOB).await;
    assert_eq!(tab.via(&b).me(&t.access).await.status, 200);
    b.stop().await;
    logout(&c, &t).await;
    // Bob's session is revoked from another of his sessions, and a key is revoked.
    let mut laptop = Client::new(&c);
    let other = laptop.sign_in(BOB).await;
    let path = format!("/auth/sessions/{}", session_of(&u));
    assert_eq!(laptop.delete(&path).await.status, 204);
    let b = TestServer::on(&url, |_| {}).await;
    assert_eq!(
        tab.via(&b).me(&t.access).await.status,
        401,
        "deny-list read at start"
    );
    assert_eq!(
        tab.via(&b).me(&u.access).await.status,
        401,
        "revoked session read at start"
    );
    assert_eq!(tab.via(&b).me(&other.access).await.status, 200);
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_hears_no_notification_catches_up_by_reading_within_a_second() {
    let url = pg::fresh_database().await;
    let a = TestServer::on(&url, |_| {}).await;
    // Deaf: as if its listening connection had dropped for good.
    let b = TestServer::on(&url, |s| s.revocation_notifications = false).await;
    let mut tab = Client::new(&a);
    for _ in 0..5 {
        let t = tab.via(&a).sign_in(ALICE).await;
        assert_eq!(tab.via(&b).me(&t.access).await.status, 200);
        // From A's answer on (the logout's own time on a loaded machine is not B's).
        logout(&a, &t).await;
        let since = Instant::now();
        let took = until_refused(&b, &[&t.access], since).await;
        assert!(took <= Duration::from_secs(1), "catch-up took {took:?}");
    }
    // A key revoked on A stops verifying on B too, and B stops signing with it.
    let t = tab.via(&a).sign_in(ALICE).await;
    let (header, _) = jwt_parts(&t.access);
    let kid = header["kid"].as_str().unwrap().to_owned();
    assert!(
        a.state
            .keys
            .revoke(&a.state.store, &kid, a.state.now())
            .await
            .unwrap()
    );
    let since = Instant::now();
    let took = until_refused(&b, &[&t.access], since).await;
    assert!(
        took <= Duration::from_secs(1),
        "key revocation took {took:?}"
    );
    let fresh = tab.via(&b).sign_in(ALICE).await;
    let (header, _) = jwt_parts(&fresh.access);
    assert_ne!(header["kid"], Value::String(kid));
    assert_eq!(
        tab.via(&a).me(&fresh.access).await.status,
        200,
        "A verifies B's new key"
    );
    a.stop().await;
    b.stop().await;
}

/// Any role that can connect to the database can `NOTIFY` on the revocation channel (PostgreSQL
/// checks no privilege for it): a notification is only an id to read, never the event. Before,
/// one forged payload revoked the victim's session on every instance (and its feed), and an
/// id of i64::MAX pushed every cursor past all real events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_notification_revokes_nothing_and_moves_no_cursor() {
    let (url, [a, b, c]) = fleet(|_| {}).await;
    let mut tab = Client::new(&a);
    let t = tab.sign_in(ALICE).await;
    let sid = session_of(&t);
    // Not the server's connection: any other login to the database.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    for payload in [
        format!("{} session 9000000000000000000 {sid}", i64::MAX),
        format!("1 session 9000000000000000000 {sid}"),
        format!(
            "{} token 9000000000000000000 {}",
            i64::MAX - 1,
            jwt_parts(&t.access).1["jti"].as_str().unwrap()
        ),
        format!("{} keys 0 x", i64::MAX - 2),
    ] {
        sqlx::query("SELECT pg_notify('tw_revocations', $1)")
            .bind(&payload)
            .execute(&pool)
            .await
            .unwrap();
    }
    // A real revocation after them: each instance hears its notifications in order, so once
    // Bob's logout is refused everywhere, the forged ones were handled (a fixed wait passed
    // whether or not they had been, on a slow machine).
    let mut bob = Client::new(&a);
    let tb = bob.sign_in(BOB).await;
    let since = Instant::now();
    logout(&b, &tb).await;
    for s in [&a, &b, &c] {
        until_refused(s, &[&tb.access], since).await;
    }
    // No cursor moved past the newest event recorded.
    let newest = a.state.store.revocation_cursor().await.unwrap();
    for s in [&a, &b, &c] {
        let cursor = s
            .state
            .fleet
            .cursor
            .load(std::sync::atomic::Ordering::SeqCst);
        assert!(cursor <= newest, "cursor {cursor}, newest event {newest}");
    }
    for s in [&a, &b, &c] {
        assert_eq!(
            tab.via(s).me(&t.access).await.status,
            200,
            "a forged revocation was applied"
        );
    }
    // A real revocation after them still reaches every instance within a second.
    let since = Instant::now();
    logout(&b, &t).await;
    for s in [&a, &c] {
        let took = until_refused(s, &[&t.access], since).await;
        assert!(took <= Duration::from_secs(1), "took {took:?}");
    }
    pool.close().await;
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_key_rotation_on_one_instance_logs_nobody_out_anywhere() {
    let (_, [a, b, c]) = fleet(|_| {}).await;
    let mut tab = Client::new(&a);
    let before = tab.sign_in(ALICE).await;
    let kid = a
        .state
        .keys
        .rotate(&a.state.store, a.state.now(), 0)
        .await
        .unwrap();
    // Within a second of the new key's start every instance signs with it and still accepts the
    // old one. (It starts now, or at the next second when the first key started in this very
    // second: the newest key is told by its start, keys.rs.)
    let starts = a
        .state
        .store
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == kid)
        .and_then(|k| k.signs_from)
        .unwrap();
    let wait = (starts * 1000 - a.state.clock.now_ms()).max(0);
    let since = Instant::now() + Duration::from_millis(wait.unsigned_abs());
    for s in [&b, &c] {
        loop {
            let t = tab.via(s).sign_in(BOB).await;
            let (header, _) = jwt_parts(&t.access);
            if header["kid"] == Value::String(kid.clone()) {
                assert_eq!(tab.via(&a).me(&t.access).await.status, 200);
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(1),
                "new key not picked up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            tab.via(s).me(&before.access).await.status,
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
    let mut tab = Client::bound(&a).public("https://api.example");
    let nonce = |s: &TestServer| s.state.dpop.nonces().current(s.state.now()).to_string();
    // At one instant (the nonce changes every 30 s: two readings could straddle a change).
    let at = a.state.now();
    assert_eq!(
        a.state.dpop.nonces().current(at),
        b.state.dpop.nonces().current(at),
        "one nonce secret for the fleet"
    );
    let (access, proof) = a_proof_accepted_at(&a, &mut tab).await;
    let replay = [("dpop", proof.as_str())];
    for s in [&b, &c, &a] {
        let res = tab.via(s).send_once("GET", "/api/me", None, &replay).await;
        assert_eq!(res.status, 401, "a replayed proof on {}", s.base);
        assert_eq!(res.error(), "invalid_dpop_proof");
    }
    // One fresh proof sent to all three at once, twice each: exactly one answer is 200.
    for round in 0..5 {
        tab.nonce = Some(nonce(&a));
        let proof = tab.proof("GET", "/api/me", Some(&access)).unwrap();
        let replay = [("dpop", proof.as_str())];
        let sends = at_once(&tab, [&a, &b, &c], 6, async |t| {
            t.send_once("GET", "/api/me", None, &replay).await
        });
        let statuses: Vec<u16> = sends.await.iter().map(|r| r.status).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "round {round}: {statuses:?}"
        );
        assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 5);
    }
    stop_all([a, b, c]).await;
}

/// `keys reseal` on PostgreSQL (its tables locked while it runs): every key and sealed secret
/// of a fleet moves to the new key-encryption key, and an instance starts with that one alone.
#[tokio::test]
async fn keys_reseal_on_postgresql_moves_every_sealed_key() {
    use tokenwarden_server::kek::{KeyEncryption, LocalKek};
    let (url, servers) = fleet(|_| {}).await;
    stop_all(servers).await;
    let store = tokenwarden_server::store::Store::connect(&url)
        .await
        .unwrap();
    let old = KeyEncryption::local(LocalKek::parse(TEST_KEK).unwrap());
    let new_key = "TlROTlROTlROTlROTlROTlROTlROTlROTlROTlROTlI=";
    let new = KeyEncryption::local(LocalKek::parse(new_key).unwrap());
    let (keys, secrets) = store.reseal(&old, &new).await.unwrap();
    assert!(keys >= 1 && secrets >= 2, "{keys} keys, {secrets} secrets");
    store.close().await;
    let s = TestServer::on(&url, move |c| c.key_encryption = new).await;
    assert_eq!(Client::new(&s).login(ALICE).await.status, 200);
    s.stop().await;
}

/// A proof's row in the fleet's table is never taken over, and is kept ten minutes past the time
/// it can pass by. Taken over once expired by the time of the insert's batch (the latest of its
/// claims), a replay batched beside a claim stamped seconds later passed; purged at once, a
/// replay to an instance whose clock lags passed there.
#[tokio::test]
async fn a_proof_s_row_is_never_taken_over_and_outlives_a_lagging_clock() {
    let (_, [a, b, c]) = fleet(|_| {}).await;
    let now = a.state.now();
    let (sa, sb, sc) = (&a.state.store, &b.state.store, &c.state.store);
    assert!(sa.claim_proof("jkt", "jti-1", now - 5).await.unwrap());
    assert!(!sb.claim_proof("jkt", "jti-1", now + 61).await.unwrap());
    // A minute past its time, kept; past the ten minutes, gone.
    let kept = tokenwarden_server::store::PROOF_ROWS_KEPT_PAST;
    assert!(sa.claim_proof("jkt", "jti-2", now - 60).await.unwrap());
    assert!(
        sa.claim_proof("jkt", "jti-3", now - kept - 60)
            .await
            .unwrap()
    );
    sa.purge_short_lived(now).await.unwrap();
    assert!(!sc.claim_proof("jkt", "jti-2", now + 1).await.unwrap());
    assert!(sc.claim_proof("jkt", "jti-3", now + 1).await.unwrap());
    stop_all([a, b, c]).await;
}

/// Alice signed in through `a` by `tab`, and a proof of `GET /api/me` with her token that `a`
/// accepted: (the token, the proof).
async fn a_proof_accepted_at(a: &TestServer, tab: &mut Client) -> (String, String) {
    let nonce = || a.state.dpop.nonces().current(a.state.now()).to_string();
    tab.nonce = Some(nonce());
    let res = tab.via(a).login_with(ALICE, &[]).await;
    assert_eq!(res.status, 200);
    let access = tab.tokens_of(&res).access;
    tab.nonce = Some(nonce());
    let proof = tab.proof("GET", "/api/me", Some(&access)).unwrap();
    let res = tab
        .via(a)
        .send_once("GET", "/api/me", None, &[("dpop", &proof)])
        .await;
    assert_eq!(res.status, 200);
    (access, proof)
}

/// `s`'s clock a minute and a half ahead, and its minute's purge.
async fn purge_with_its_clock_ahead(s: &TestServer) {
    s.state.clock.advance(90);
    s.state
        .store
        .purge_short_lived(s.state.now())
        .await
        .unwrap();
}

/// Purges of the shared tables go by the database's clock too: one instance whose clock ran a
/// minute and a half ahead deleted every proof's row, and a captured proof then passed once at
/// each instance that had not seen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_is_ahead_purges_no_proof_early() {
    let (_, [a, b, c]) = fleet(|s| s.public_origins = vec!["https://api.example".into()]).await;
    let mut tab = Client::bound(&a).public("https://api.example");
    let (_, proof) = a_proof_accepted_at(&a, &mut tab).await;
    let replay = [("dpop", proof.as_str())];
    purge_with_its_clock_ahead(&b).await;
    let res = tab.via(&c).send_once("GET", "/api/me", None, &replay).await;
    assert_eq!(
        (res.status, res.error()),
        (401, "invalid_dpop_proof"),
        "replayed at C"
    );
    stop_all([a, b, c]).await;
}

/// The throttles' counter windows too: an instance whose clock ran ahead deleted the windows
/// still open, and every limit's count started again (twice the budget, across the fleet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_clock_is_ahead_resets_no_throttle_early() {
    let (_, [a, b, c]) = fleet(|s| s.login_ip_per_minute = 3).await;
    // The window is the clock's minute: not its last seconds, which the database's clock
    // could leave behind meanwhile.
    while a.state.now() % 60 > 45 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    a.state.clock.freeze();
    let mut tab = Client::new(&a);
    let mut answered = Vec::new();
    for _ in 0..4 {
        answered.push(tab.via(&a).login(ALICE).await.status);
    }
    assert_eq!(answered, [200, 200, 200, 429]);
    purge_with_its_clock_ahead(&b).await;
    assert_eq!(tab.via(&a).login(ALICE).await.status, 429);
    stop_all([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_cli_run_anywhere_reaches_every_instance_within_a_second() {
    let (url, [a, b, c]) = fleet(|_| {}).await;
    let t = Client::new(&a).sign_in(ALICE).await;
    let (header, _) = jwt_parts(&t.access);
    let old_kid = header["kid"].as_str().unwrap().to_owned();
    let out = std::process::Command::new(server_binary())
        .args(["keys", "revoke", &old_kid])
        .env("TW_DATABASE_URL", &url)
        .env("TW_KEY_ENCRYPTION_KEY", TEST_KEK)
        .env("RUST_LOG", "warn")
        .finished();
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

/// A password reset made on one instance ends every session of the account on every instance
/// (the same revocation events as a logout), and a password change made on another ends every
/// session but its own, within a second each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_or_change_on_one_instance_ends_the_sessions_on_all_of_them() {
    let sink = common::smtp::SmtpSink::start();
    let smtp = sink.url();
    let url = pg::fresh_database().await;
    let configure = |s: &mut Settings| {
        s.otp.smtp_url = Some(smtp.clone());
        s.otp.ip_per_minute = 10_000;
    };
    let a = TestServer::on(&url, configure).await;
    let b = TestServer::on(&url, configure).await;
    let c = TestServer::on(&url, configure).await;
    // Two devices signed in through A and B.
    let phone = Client::new(&a).sign_in(ALICE).await;
    let laptop = Client::new(&b).sign_in(ALICE).await;
    // A reset through C.
    let mut tab = Client::new(&c);
    let res = tab
        .post(
            "/auth/password/reset/start",
            &serde_json::json!({ "email": ALICE.0 }),
        )
        .await;
    assert_eq!(res.status, 202);
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let res = tab
        .post(
            "/auth/password/reset",
            &serde_json::json!({ "email": ALICE.0, "code": code,
                                  "new_password": "a brand new passphrase" }),
        )
        .await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    // From the answer: the revocation is committed before it is sent, and the password hashing
    // before that (slow on a busy test machine) is not the fleet's latency.
    let since = Instant::now();
    let tokens = [phone.access.as_str(), laptop.access.as_str()];
    for s in [&a, &b] {
        let took = until_refused(s, &tokens, since).await;
        assert!(took <= Duration::from_secs(1), "{took:?} on {}", s.base);
    }
    for (s, t) in [(&a, &phone), (&b, &laptop)] {
        let code = Client::new(s).holding(t).refresh().await;
        assert_eq!(code.error(), "invalid_grant");
    }
    // The reset's own session works everywhere.
    let own = tab.access.clone().unwrap();
    for s in [&a, &b, &c] {
        assert_eq!(Client::new(s).me(&own).await.status, 200);
    }
    // A change through A, from a new session there: ends the reset's session on B and C.
    let mut here = Client::new(&a);
    here.sign_in((ALICE.0, "a brand new passphrase")).await;
    let res = here
        .post(
            "/auth/password/change",
            &serde_json::json!({ "current_password": "a brand new passphrase",
                                  "new_password": "yet another passphrase" }),
        )
        .await;
    assert_eq!(res.status, 204, "{:?}", res.body);
    let since = Instant::now();
    for s in [&b, &c] {
        let took = until_refused(s, &[own.as_str()], since).await;
        assert!(took <= Duration::from_secs(1), "{took:?} on {}", s.base);
    }
    let mine = here.access.clone().unwrap();
    for s in [&a, &b, &c] {
        assert_eq!(
            Client::new(s).me(&mine).await.status,
            200,
            "the changing session goes on"
        );
    }
    stop_all([a, b, c]).await;
}

/// Removing a passkey through one instance ends the sessions it signed in on the others within
/// a second: the revocation events a reset's travel by.
#[tokio::test]
async fn removing_a_passkey_on_one_instance_ends_its_sessions_on_all_of_them() {
    use common::authenticator::{Page, SoftPasskey};
    use serde_json::json;
    const ORIGIN: &str = "http://localhost:8080";
    let page = Page {
        origin: ORIGIN,
        rp_id: "localhost",
    };
    let (_, [a, b, c]) = fleet(|s| {
        s.webauthn = Some(tokenwarden_server::config::WebauthnSettings {
            rp_id: "localhost".into(),
            rp_name: "tokenwarden tests".into(),
            origins: vec![ORIGIN.into()],
        });
    })
    .await;
    let mut owner = Client::new(&a);
    owner.sign_in(ALICE).await;
    let start = owner
        .post("/auth/passkeys/register/start", &json!({}))
        .await;
    assert_eq!(start.status, 200, "{}", start.body);
    let (mut passkey, credential) = SoftPasskey::create(&start.body["options"], &page);
    let body = json!({ "ceremony": start.body["ceremony"], "credential": credential });
    let done = owner.post("/auth/passkeys/register/finish", &body).await;
    assert_eq!(done.status, 201, "{}", done.body);
    let id = done.body["id"].as_str().unwrap().to_owned();
    // Its sign-ins through B and C (Bearer: a refusal is the revocation, not a missing proof).
    let mut signed_in = Vec::new();
    for s in [&b, &c] {
        let mut tab = Client::new(s);
        let start = tab.post("/auth/passkeys/login/start", &json!({})).await;
        assert_eq!(start.status, 200, "{}", start.body);
        let credential = passkey.get(&start.body["options"], &page);
        let body = json!({ "ceremony": start.body["ceremony"], "credential": credential });
        let done = tab.post("/auth/passkeys/login/finish", &body).await;
        assert_eq!(done.status, 200, "{}", done.body);
        let access = done.tokens().access;
        assert_eq!(Client::new(s).me(&access).await.status, 200);
        signed_in.push(access);
    }
    let res = owner
        .send("DELETE", &format!("/auth/passkeys/{id}"), None)
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    let since = Instant::now();
    let tokens: Vec<&str> = signed_in.iter().map(String::as_str).collect();
    for s in [&a, &b, &c] {
        let took = until_refused(s, &tokens, since).await;
        assert!(took <= Duration::from_secs(1), "{took:?} on {}", s.base);
    }
    let mine = owner.access.clone().unwrap();
    for s in [&a, &b, &c] {
        assert_eq!(
            Client::new(s).me(&mine).await.status,
            200,
            "the owner's goes on"
        );
    }
    stop_all([a, b, c]).await;
}

/// The server's transactions are READ COMMITTED whatever the database's default: its locks
/// (the account's row before a sign-in's checks, a passkey's removal) order transactions only
/// then. Under REPEATABLE READ a sign-in waiting for a passkey's removal still saw the passkey.
#[tokio::test]
async fn the_server_s_transactions_are_read_committed_whatever_the_database_s_default() {
    let url = pg::fresh_database().await;
    let name = url.rsplit_once('/').unwrap().1.to_owned();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(level, "repeatable read", "the database's default");
    pool.close().await;
    // Connections of the server's pool, several at once (a one-off SET would leave the
    // others at the database's default).
    let s = TestServer::on(&url, |_| {}).await;
    let store = &s.state.store;
    let levels = futures::future::join_all((0..8).map(|_| store.transaction_isolation())).await;
    for level in levels {
        assert_eq!(level.unwrap().as_deref(), Some("read committed"));
    }
    Client::new(&s).sign_in(ALICE).await;
    s.stop().await;
}

#[tokio::test]
async fn a_provider_logout_ends_the_session_on_every_instance_within_a_second() {
    use common::oidc::*;
    let port = free_port();
    let p: &'static tokenwarden_server::config::OidcProvider = Box::leak(Box::new(provider(
        "idp",
        &format!("http://127.0.0.1:{port}"),
    )));
    let (_, [a, b, c]) = fleet(move |s| s.oidc = vec![p.clone()]).await;
    // The provider knows every instance's callback; its logout tokens go to the first.
    let idp = Idp::start(port, &format!("{},{},{}", a.base, b.base, c.base)).await;

    // Signed in through instance B, refreshed through C.
    let mut tab = Client::bound(&b);
    let mut browser = Browser::new();
    let jkt = tab.key.as_ref().unwrap().thumbprint().to_owned();
    let res = browser.start(&b, &format!("dpop_jkt={jkt}")).await;
    let back = browser
        .through_provider(location(&res), &b.base, "gina", false)
        .await;
    let res = browser.callback(&back).await;
    assert_eq!(res.status(), 303);
    tab.refresh = refresh_cookie_of(&res);
    tab.via(&c);
    let a1 = tab.refresh().await;
    let t = tab.tokens_of(&a1);

    // The user logs out at the provider: its logout token reaches instance A.
    let html = browser
        .http
        .get(format!("{}/session/end", idp.issuer))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let form = &html[html.find("<form").unwrap()..];
    let xsrf_at = form.find("name=\"xsrf\"").unwrap();
    let xsrf = attr(&form[xsrf_at.saturating_sub(80)..], "value").unwrap_or_default();
    // The provider answers once its back-channel logout was answered (oidc-provider awaits
    // it): from then on, every instance refuses within a second.
    browser
        .http
        .post(absolute(&idp.issuer, attr(form, "action").unwrap()))
        .form(&[("xsrf", xsrf), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    let since = Instant::now();
    // The token is bound: the tab's own proofs ask (a proof-less request is refused anyway).
    for s in [&a, &b, &c] {
        tab.via(s);
        loop {
            let status = tab.me(&t.access).await.status;
            if status != 200 {
                assert_eq!(status, 401, "on {}", s.base);
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "still accepted on {}: {:?}",
                s.base,
                idp.lines.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = since.elapsed();
        assert!(took < Duration::from_secs(1), "{took:?} on {}", s.base);
    }
    tab.via(&a);
    assert_eq!(tab.refresh().await.status, 401);
    drop(idp);
    stop_all([a, b, c]).await;
}

/// Ids are handed out at insert, so an event (A) may commit after a later one (B) was read and
/// sent. A feed subscriber that comes back with B's id a minute later still gets A: the events
/// recorded just before B are read again, however long it was away (before, only those of the
/// last 5 s by the clock: A was lost for good).
#[tokio::test]
async fn a_catch_up_long_after_keeps_an_event_that_committed_out_of_order() {
    let url = pg::fresh_database().await;
    let s = TestServer::on(&url, |_| {}).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let insert = async |id: i64, subject: &str, secs_ago: f64| {
        sqlx::query(
            "INSERT INTO revocation_events (id, kind, subject, at, recorded)
             VALUES ($1, 'session', $2, 0, clock_timestamp() - make_interval(secs => $3))",
        )
        .bind(id)
        .bind(subject)
        .bind(secs_ago)
        .execute(&pool)
        .await
        .unwrap();
    };
    // What a subscriber back with B's id reads.
    let resumed = async || {
        let events = s.state.store.revocations_since(1001, 5, true).await;
        let events = events.unwrap().into_iter();
        events.map(|e| e.subject).collect::<Vec<String>>()
    };
    // A: id 1000, recorded 60 s ago; B: id 1001, 59.9 s ago (and read before A committed).
    insert(1000, "a", 60.0).await;
    insert(1001, "b", 59.9).await;
    let subjects = resumed().await;
    assert!(subjects.contains(&"a".to_owned()), "{subjects:?}");
    // An event long before B is not read again.
    insert(999, "old", 3600.0).await;
    assert!(!resumed().await.contains(&"old".to_owned()));
    pool.close().await;
    s.stop().await;
}

/// PostgreSQL over TLS (sqlx was built without it: `prefer`, its default, connected in the
/// clear, and `require` could not connect at all). The test cluster speaks TLS with a
/// certificate for localhost from a throwaway authority (scripts/pg.sh): a URL on loopback
/// takes it as the driver's default does, one asking for a verified certificate connects with
/// that authority as its root, and without it is refused saying what to do.
#[tokio::test]
async fn postgresql_is_reached_over_tls_verified_when_asked_and_a_failure_says_what_to_do() {
    use sqlx::Connection;
    use tokenwarden_server::store::{Store, StoreError};
    let url = pg::fresh_database().await;
    let database = url.rsplit_once('/').unwrap().1.to_owned();
    let mut admin = sqlx::PgConnection::connect(pg::cluster_url())
        .await
        .unwrap();
    let cert: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let ca = cert.replace("/server.crt", "/ca.crt");
    // The store's connections to `database`: (encrypted, in the clear).
    let mut connections = async || -> (i64, i64) {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.datname = $1 AND a.application_name = 'tokenwarden'",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        (row.get(0), row.get(1))
    };
    let named = url.replacen("@127.0.0.1:", "@localhost:", 1);
    for (url, how) in [
        (url.clone(), "the default on loopback"),
        (
            format!("{named}?sslmode=verify-full&sslrootcert={ca}"),
            "verified",
        ),
    ] {
        let store = Store::connect(&url).await.expect(how);
        let (encrypted, clear) = connections().await;
        assert!(encrypted >= 1 && clear == 0, "{how}: {encrypted} {clear}");
        store.close().await;
    }
    match Store::connect(&format!("{named}?sslmode=verify-full")).await {
        Err(e @ StoreError::Tls(_)) => {
            let said = e.to_string();
            for option in [
                "sslrootcert=FILE",
                "sslmode=verify-ca",
                "sslmode=require",
                "sslmode=disable",
            ] {
                assert!(said.contains(option), "{option}: {said}");
            }
        }
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a self-signed certificate was taken as verified"),
    }
}
