//! The attacks of issue 10, each performed against the real server and a real database: a
//! thief in lockstep with the user, lost responses, duplicate cookies, floods, password
//! guessing from one and from many addresses, slow and idle connections. Requests go straight
//! into the router (`Client::oneshot`) except where the socket is the point.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn trusting_localhost(c: &mut tokenwarden_server::Settings) {
    c.proxies.trusted = vec!["127.0.0.1/32".parse().expect("cidr")];
}

// ---- rotation: one refresh token in two hands ----------------------------------------------

/// The issue's attack: log in, copy the refresh cookie, then rounds of "the thief refreshes
/// with their copy, the user with theirs" (or the other way round), `gap` seconds apart.
/// Returns the round in which a presentation was refused, and its error code.
async fn lockstep(thief_first: bool, gap: i64) -> (usize, String) {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut user = Client::new(&s).oneshot();
    user.sign_in(ALICE).await;
    let mut thief = user.clone();
    for round in 1..=10 {
        for turn in 0..2 {
            let thief_turn = (turn == 0) == thief_first;
            s.state.clock.advance(gap);
            let holder = if thief_turn { &mut thief } else { &mut user };
            let held = holder.refresh.clone();
            let res = holder.refresh().await;
            if res.status != 200 {
                assert_eq!(res.status, 401);
                // The refusal cleared this jar: it presents what it held once more.
                holder.refresh = held;
                // Both chains are dead now, and so is the user's access token.
                for tab in [&mut user, &mut thief] {
                    let again = tab.refresh().await;
                    assert_eq!((again.status, again.error()), (401, "invalid_grant"));
                }
                assert_eq!(s.stats().await["reuse_detections"], 1);
                s.stop().await;
                return (round, res.error().to_owned());
            }
            holder.tokens_of(&res);
        }
    }
    s.stop().await;
    panic!("20 refreshes in lockstep, no reuse detected");
}

#[tokio::test]
async fn a_thief_in_lockstep_is_caught_by_round_two_when_the_thief_goes_first() {
    for gap in [0, 5, 29, 45, 600] {
        assert_eq!(
            lockstep(true, gap).await,
            (2, "token_reused".to_owned()),
            "gap {gap} s"
        );
    }
}

#[tokio::test]
async fn a_thief_in_lockstep_is_caught_by_round_two_when_the_user_goes_first() {
    for gap in [0, 5, 29, 45, 600] {
        assert_eq!(
            lockstep(false, gap).await,
            (2, "token_reused".to_owned()),
            "gap {gap} s"
        );
    }
}

#[tokio::test]
async fn a_lost_response_retried_after_ten_minutes_is_still_accepted() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    // Over the socket: the server drops the connection.
    let mut c = Client::new(&s);
    let t0 = c.sign_in(ALICE).await;
    let before = s.stats().await["refresh_rotated"].as_u64().unwrap();
    s.drop_next_refreshes.store(1, Ordering::SeqCst);
    let lost = c.try_refresh().await;
    assert!(lost.is_err(), "the response must be lost: {lost:?}");
    assert_eq!(
        s.stats().await["refresh_rotated"].as_u64().unwrap(),
        before + 1,
        "the rotation was committed"
    );

    // Ten minutes later (the laptop slept), the client tries again with what it holds.
    s.state.clock.advance(600);
    let t1 = c.rotate(&t0.refresh).await;
    assert_eq!(c.me(&t1.access).await.status, 200);
    // Lost again, and retried an hour later: still accepted.
    s.drop_next_refreshes.store(1, Ordering::SeqCst);
    assert!(c.try_refresh().await.is_err());
    s.state.clock.advance(3600);
    let t2 = c.rotate(&t1.refresh).await;
    let t3 = c.rotate(&t2.refresh).await;
    assert_eq!(c.me(&t3.access).await.status, 200);
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.stop().await;
}

#[tokio::test]
async fn twenty_simultaneous_presentations_are_all_accepted_even_long_after_the_token_was_used() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    c.rotate(&t0.refresh).await; // its response "lost"
    s.state.clock.advance(600);
    // Twenty tabs without a shared lock wake up and present it at once.
    c.refresh = Some(t0.refresh.clone());
    let mut tabs = c.tabs(20);
    let mut children = Vec::new();
    for res in join_all(tabs.iter_mut().map(|t| t.refresh())).await {
        assert_eq!(res.status, 200);
        children.push(c.tokens_of(&res));
    }
    let distinct: BTreeSet<_> = children.iter().map(|t| t.refresh.clone()).collect();
    assert_eq!(distinct.len(), 20);
    // The browser keeps one of them (the last Set-Cookie it processed): it works.
    let next = c.rotate(&children[7].refresh).await;
    assert_eq!(c.me(&next.access).await.status, 200);
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.stop().await;
}

// ---- one refresh cookie or none -------------------------------------------------------------

#[tokio::test]
async fn a_duplicated_refresh_cookie_is_refused_and_rotates_or_revokes_nothing() {
    let s = TestServer::start().await;
    let mut tab = Client::new(&s).oneshot();
    let victim = tab.sign_in(ALICE).await;
    let planted = tab.sign_in(BOB).await; // the attacker's own session, tossed into the victim's jar
    let (v, a) = (&victim.refresh, &planted.refresh);
    let c = REFRESH_COOKIE;
    let cases = [
        vec![format!("{c}={a}; {c}={v}")],
        vec![format!("{c}={v}; {c}={a}")],
        vec![format!("tw_session=1; {c}={v}"), format!("{c}={a}")],
        vec![format!("{c}={v}; {c}={v}")],
    ];
    // The cookies alone (this browser holds no access token).
    let mut bare = Client::new(&s).oneshot();
    for lines in &cases {
        let cookies: Vec<_> = lines.iter().map(|l| ("cookie", l.as_str())).collect();
        for path in ["/auth/refresh", "/auth/logout"] {
            let res = bare.send_once("POST", path, None, &cookies).await;
            assert_eq!(res.status, 400, "{path} {lines:?}");
            assert!(res.set_cookies().is_empty(), "no cookie changes");
            assert_eq!(res.error(), "duplicate_cookie");
        }
    }
    let stats = s.stats().await;
    assert_eq!(stats["refresh_rotated"], 0);
    assert_eq!(stats["revocations"], 0);
    // Nothing was spent: each token still claims its first generation.
    let v1 = tab.rotate(v).await;
    let a1 = tab.rotate(a).await;
    assert_eq!(tab.me(&v1.access).await.status, 200);
    assert_eq!(tab.me(&a1.access).await.status, 200);
    // A logout with the access token too: the token's session ends (the 400 still says the
    // cookies' did not); the cookies' sessions stay.
    let third = Client::new(&s).oneshot().sign_in(ALICE).await;
    let both = format!("{c}={}; {c}={}", v1.refresh, a1.refresh);
    let bearer = format!("Bearer {}", third.access);
    let extra = [
        ("cookie", both.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let res = tab.send_once("POST", "/auth/logout", None, &extra).await;
    assert_eq!((res.status, res.error()), (400, "duplicate_cookie"));
    assert!(res.set_cookies().is_empty());
    assert_eq!(
        tab.me(&third.access).await.status,
        401,
        "the token's session ended"
    );
    assert_eq!(tab.me(&v1.access).await.status, 200);
    assert_eq!(tab.me(&a1.access).await.status, 200);
    s.stop().await;
}

/// U+0000 in any string a client sends (a JSON `\u0000`, a path's `%00`): PostgreSQL cannot
/// store or even compare one, which made each of these a 500 there. A 400 (or a 404 for an id)
/// on every backend, and nothing changed.
#[tokio::test]
async fn a_nul_in_any_string_is_a_clear_refusal_never_a_500() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let res = c
        .post(
            "/auth/login",
            &serde_json::json!({ "email": "a\u{0}@example.com", "password": "x" }),
        )
        .await;
    assert_eq!(
        (res.status, res.error()),
        (400, "invalid_request"),
        "{:?}",
        res.body
    );
    c.sign_in(ALICE).await;
    let res = c
        .patch("/api/me", &serde_json::json!({ "name": "A\u{0}" }))
        .await;
    assert_eq!(
        (res.status, res.error()),
        (400, "invalid_request"),
        "{:?}",
        res.body
    );
    assert_eq!(c.get("/api/me").await.body["name"], "alice", "unchanged");
    // An escaped backslash before `u0000` is no NUL: the name is those six characters.
    let json = [("content-type", "application/json")];
    let res = c
        .send_raw("PATCH", "/api/me", r#"{"name":"A\\u0000"}"#, &json)
        .await;
    assert_eq!(
        (res.status, &res.body["name"]),
        (200, &serde_json::json!("A\\u0000"))
    );
    assert_eq!(c.delete("/auth/sessions/%00").await.status, 404);
    s.stop().await;
}

/// A path segment that is no UTF-8 once decoded, or a query without its parameter: a JSON
/// `invalid_request` like every other refusal (axum's own is a plain-text 400).
#[tokio::test]
async fn a_malformed_path_or_query_parameter_is_a_json_400() {
    let s = TestServer::with(|c| c.demo = true).await;
    let mut c = Client::new(&s).oneshot();
    c.sign_in(ALICE).await;
    for (method, path) in [
        ("DELETE", "/auth/sessions/%FF"),
        ("DELETE", "/auth/passkeys/%C0%AF"),
        ("GET", "/auth/oidc/%FF/start"),
        ("GET", "/auth/oidc/%FF/callback?code=x&state=y"),
        ("GET", "/auth/oidc/%FF/end-session"),
        ("POST", "/auth/oidc/%FF/backchannel-logout"),
        ("GET", "/demo/mailbox"),
    ] {
        let res = c.send_once(method, path, None, &[]).await;
        assert_eq!(
            (res.status, res.error(), res.header("content-type")),
            (400, "invalid_request", Some("application/json")),
            "{method} {path}: {}",
            res.text()
        );
    }
    s.stop().await;
}

// ---- limits on /auth/refresh ------------------------------------------------------------------

#[tokio::test]
async fn a_refresh_flood_on_one_session_gets_429_and_stores_a_bounded_number_of_tokens() {
    let s = TestServer::with(|c| c.refresh_session_per_minute = 30).await;
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let sid = jwt_parts(&t.access).1["sid"].as_str().unwrap().to_owned();
    let (mut ok, mut throttled) = (0, 0);
    for _ in 0..2000 {
        let res = c.present(&t.refresh).await;
        match res.status {
            200 => ok += 1,
            429 => {
                throttled += 1;
                let wait = res.retry_after();
                assert!((1..=60).contains(&wait), "Retry-After {wait}");
                assert_eq!(res.error(), "too_many_requests");
            }
            other => panic!("status {other}"),
        }
    }
    assert!(ok <= 30, "{ok} rotations");
    assert_eq!(ok + throttled, 2000);
    let rows = s.state.store.session_token_rows(&sid).await.unwrap();
    assert!(rows <= 31, "{rows} tokens stored for the session");
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.stop().await;
}

#[tokio::test]
async fn one_token_has_a_bounded_number_of_children_then_429_until_its_window_ends() {
    let s = TestServer::start().await; // per-session limit out of the way
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let mut last = None;
    for i in 0..40 {
        let res = c.present(&t.refresh).await;
        if i < 32 {
            assert_eq!(res.status, 200, "child {i}");
            last = Some(c.tokens_of(&res));
        } else {
            assert_eq!(res.status, 429, "child {i}");
            let wait = res.retry_after();
            assert!((1..=30).contains(&wait), "Retry-After {wait}");
            assert_eq!(res.error(), "too_many_requests");
        }
    }
    // After the window, none of its children used: a fresh child, the others revoked.
    s.state.clock.advance(31);
    let fresh = c.rotate(&t.refresh).await;
    assert_eq!(c.me(&fresh.access).await.status, 200);
    assert_eq!(
        c.refresh_error(&last.unwrap().refresh).await,
        "token_reused",
        "an unused child of a reissued token is dead"
    );
    s.stop().await;
}

#[tokio::test]
async fn refreshes_are_limited_per_client_address_and_per_ipv6_64() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.refresh_ip_per_minute = 5;
    })
    .await;
    s.state.clock.freeze();
    let mut signer = Client::new(&s).oneshot();
    // Each client presents each child once, as a real one does.
    let mut proxied = Client::new(&s).oneshot();
    let mut refresh_from = async |ip: &str, token: &str| {
        proxied.forwarded_for = Some(ip.to_owned());
        proxied.present(token).await
    };
    let mut token = signer.sign_in(ALICE).await.refresh;
    for _ in 0..5 {
        let res = refresh_from("203.0.113.9", &token).await;
        assert_eq!(res.status, 200);
        token = signer.tokens_of(&res).refresh;
    }
    let res = refresh_from("203.0.113.9", &token).await;
    assert_eq!(res.status, 429);
    assert!((1..=60).contains(&res.retry_after()));
    assert_eq!(res.error(), "too_many_requests");
    // Another client is not affected, and the throttled token was not spent.
    let res = refresh_from("198.51.100.7", &token).await;
    assert_eq!(res.status, 200);

    // IPv6: every address of one /64 is one client; the next /64 is another.
    let mut token = signer.sign_in(BOB).await.refresh;
    for ip in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:aaaa::3",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
        "2001:db8:1:2::5",
    ] {
        let res = refresh_from(ip, &token).await;
        assert_eq!(res.status, 200, "{ip}");
        token = signer.tokens_of(&res).refresh;
    }
    assert_eq!(refresh_from("2001:db8:1:2::6", &token).await.status, 429);
    assert_eq!(refresh_from("2001:db8:1:3::1", &token).await.status, 200);
    s.stop().await;
}

// ---- password guessing --------------------------------------------------------------------

/// A wrong password for Alice from each address in turn, as `X-Forwarded-For` gives it: the
/// statuses.
async fn wrong_passwords_from(client: &Client, ips: impl Iterator<Item = String>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for ip in ips {
        let mut guesser = client.clone().at(&ip);
        statuses.push(guesser.login((ALICE.0, "wrong-password")).await.status);
    }
    statuses
}

#[tokio::test]
async fn fifty_concurrent_wrong_passwords_verify_at_most_the_limit_and_the_owner_still_logs_in() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.login_max_failures = 10;
        c.argon2_queue = 100;
    })
    .await;
    let client = Client::new(&s).oneshot();
    let stranger = client.clone().at("203.0.113.66");
    for email in [ALICE.0, "nobody@example.com"] {
        let before = s.state.passwords.hasher.verifications();
        let mut guessers = stranger.tabs(50);
        let guesses = guessers
            .iter_mut()
            .map(|c| c.login((email, "wrong-password")));
        let mut statuses = Vec::new();
        for res in join_all(guesses).await {
            statuses.push(res.status);
            if res.status == 429 {
                assert!(res.retry_after() >= 1);
            }
        }
        let verified = s.state.passwords.hasher.verifications() - before;
        let wrong = statuses.iter().filter(|&&c| c == 401).count();
        let throttled = statuses.iter().filter(|&&c| c == 429).count();
        assert_eq!((wrong, throttled), (10, 40), "{email}: {statuses:?}");
        assert_eq!(verified, 10, "{email}: passwords actually checked");
    }
    // The stranger's address stays locked, even with the right password...
    assert_eq!(stranger.clone().login(ALICE).await.status, 429);
    // ...but the owner, from their own address, is not locked out.
    assert_eq!(
        client.clone().at("198.51.100.23").login(ALICE).await.status,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn a_guesser_rotating_addresses_within_one_ipv6_64_is_one_client() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.login_max_failures = 10;
    })
    .await;
    let client = Client::new(&s).oneshot();
    let ips = (1..=20).map(|i| format!("2001:db8:aa:bb::{i:x}"));
    let statuses = wrong_passwords_from(&client, ips).await;
    assert_eq!(statuses.iter().filter(|&&c| c == 401).count(), 10);
    assert_eq!(statuses.iter().filter(|&&c| c == 429).count(), 10);
    // The owner, in the next /64, is another client.
    assert_eq!(
        client
            .clone()
            .at("2001:db8:aa:bc::1")
            .login(ALICE)
            .await
            .status,
        200
    );
    s.stop().await;
}

/// Per-client sign-in limits count an IPv6 /56 too, at 16 times a /64's: one subscriber's
/// prefix (a home connection's 256 /64s) no longer multiplies them by its /64s. Another /56 is
/// another client.
#[tokio::test]
async fn a_client_with_a_whole_ipv6_56_gets_sixteen_64s_worth() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.login_ip_per_minute = 2;
    })
    .await;
    s.state.clock.freeze();
    let client = Client::new(&s).oneshot();
    let mut statuses = Vec::new();
    for i in 0..17 {
        for _ in 0..2 {
            let mut c = client.clone().at(&format!("2001:db8:aa:{i:x}::1"));
            statuses.push(c.login(ALICE).await.status);
        }
    }
    assert!(statuses[..32].iter().all(|&c| c == 200), "{statuses:?}");
    assert_eq!(statuses[32..], [429, 429]);
    let mut elsewhere = client.clone().at("2001:db8:aa:100::1");
    assert_eq!(elsewhere.login(ALICE).await.status, 200);
    s.stop().await;
}

/// Refreshes of sessions already open count the /64 alone: neighbours in a /56 (a carrier's
/// devices) do not share one count of them.
#[tokio::test]
async fn refreshes_count_an_ipv6_64_alone() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.refresh_ip_per_minute = 1;
    })
    .await;
    s.state.clock.freeze();
    let client = Client::new(&s).oneshot();
    let mut statuses = Vec::new();
    for i in 0..17 {
        let mut c = client.clone().at(&format!("2001:db8:aa:{i:x}::1"));
        c.sign_in(ALICE).await;
        statuses.push(c.refresh().await.status);
    }
    assert!(statuses.iter().all(|&c| c == 200), "{statuses:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_guesser_with_many_addresses_gets_the_accounts_ceiling_and_the_owners_browser_still_signs_in()
 {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.login_max_failures = 3;
        c.login_account_max_failures = 5;
    })
    .await;
    let client = Client::new(&s).oneshot();
    // The owner signed in from this browser before: it is known to the account.
    let mut owner = client.clone().at("198.51.100.23");
    assert_eq!(owner.login(ALICE).await.status, 200);
    let known = owner.known.clone().expect("a known-browser cookie");
    owner.logout().await;
    // A guesser with twenty addresses, one guess from each: five are checked, for the
    // account, whatever the number of addresses...
    let statuses = wrong_passwords_from(&client, (1..=4).map(|i| format!("203.0.113.{i}"))).await;
    assert_eq!(statuses, [401; 4]);
    // ...even when the owner signs in meanwhile from a browser not yet known (that takes back
    // its own attempt only, not the guesser's)...
    let mut new_browser = client.clone().at("192.0.2.50");
    assert_eq!(new_browser.login(ALICE).await.status, 200);
    let statuses = wrong_passwords_from(&client, (5..=20).map(|i| format!("203.0.113.{i}"))).await;
    assert_eq!(statuses[..1], [401], "{statuses:?}");
    assert_eq!(statuses[1..], [429; 15], "{statuses:?}");
    // Even the right password, from an address never seen, is not checked now...
    assert_eq!(
        client.clone().at("192.0.2.77").login(ALICE).await.status,
        429
    );
    // ...nor with the cookie of a browser known to another account, or a forged one.
    let mut bob = client.clone().at("192.0.2.78");
    assert_eq!(bob.login(BOB).await.status, 200);
    let bobs = bob.known.clone().expect("bob's known-browser cookie");
    let (nonce, _) = known.split_once('.').expect("nonce.mac");
    for cookie in [
        bobs.as_str(),
        &format!("{nonce}.{}", "A".repeat(43)),
        "garbage",
    ] {
        let mut thief = client.clone().at("192.0.2.79");
        thief.known = Some(cookie.to_owned());
        assert_eq!(thief.login(ALICE).await.status, 429, "{cookie}");
    }
    // The owner's browser signs in, from any address.
    let mut owner = client.clone().at("203.0.113.1");
    owner.known = Some(known.clone());
    assert_eq!(owner.login(ALICE).await.status, 200);
    // A known browser's own wrong guesses count against it, from any address.
    let mut copied = client.clone();
    copied.known = Some(known.clone());
    let mut statuses = Vec::new();
    for i in 1..=5 {
        let mut c = copied.clone().at(&format!("198.18.0.{i}"));
        statuses.push(c.login((ALICE.0, "wrong-password")).await.status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    // A password change ends every known-browser cookie made before it (a thief's copies, however
    // many): the browser that changed it gets a new one.
    let new_password = "a brand new phrase 1";
    let body = serde_json::json!({ "current_password": ALICE.1, "new_password": new_password });
    assert_eq!(owner.post("/auth/password/change", &body).await.status, 204);
    let renewed = owner.known.clone().expect("a new known-browser cookie");
    assert_ne!(renewed, known);
    let mut thief = client.clone().at("192.0.2.80");
    thief.known = Some(known.clone());
    assert_eq!(thief.login((ALICE.0, new_password)).await.status, 429);
    let mut owner = client.clone().at("192.0.2.81");
    owner.known = Some(renewed.clone());
    assert_eq!(owner.login((ALICE.0, new_password)).await.status, 200);
    // A wrong password makes no browser known (and an unknown address answers alike).
    for email in [BOB.0, "nobody@example.com"] {
        let mut guesser = client.clone().at("198.18.1.1");
        let wrong = guesser.login((email, "wrong-password")).await;
        assert_eq!(
            (wrong.status, wrong.set_cookies().len()),
            (401, 0),
            "{email}"
        );
    }
    // An address deleted and taken again is another account: the old one's browsers (here
    // Bob's, at the same password version 0) are not known to it.
    let (store, now) = (&s.state.store, s.state.now());
    assert!(store.delete_user_by_email(BOB.0, now).await.unwrap());
    let roles = ["user".to_owned()];
    let created = tokenwarden_server::users::create(store, BOB.0, BOB.1, "B", &roles, now);
    assert!(created.await.unwrap().is_some());
    // Its ceiling reached by a guesser...
    let mut statuses = Vec::new();
    for i in 1..=6 {
        let mut guesser = client.clone().at(&format!("203.0.114.{i}"));
        statuses.push(guesser.login((BOB.0, "wrong-password")).await.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // ...the browser known to the old account is not known to this one.
    let mut before = client.clone().at("192.0.2.82");
    before.known = Some(bobs.clone());
    assert_eq!(before.login(BOB).await.status, 429);
    s.stop().await;
}

#[tokio::test]
async fn without_a_trusted_proxy_forwarding_headers_are_ignored() {
    let s = TestServer::with(|c| c.login_max_failures = 3).await;
    let client = Client::new(&s).oneshot();
    // A client inventing a new address for every guess gains nothing.
    let ips = (0..6).map(|i| format!("198.51.100.{i}"));
    let statuses = wrong_passwords_from(&client, ips).await;
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    s.stop().await;
}

#[tokio::test]
async fn behind_a_trusted_proxy_only_the_entry_it_appended_counts() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.login_max_failures = 3;
    })
    .await;
    let client = Client::new(&s).oneshot();
    // The client forges entries; the proxy appends the address it saw.
    let ips = (0..6).map(|i| format!("10.0.0.{i}, 192.0.2.{i}, 203.0.113.200"));
    let statuses = wrong_passwords_from(&client, ips).await;
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429]);
    // The owner, whom the proxy reports at another address, logs in.
    let mut owner = client.clone().at("203.0.113.200, 198.51.100.1");
    assert_eq!(owner.login(ALICE).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn with_the_forwarded_header_configured_it_is_read_and_x_forwarded_for_is_not() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.proxies.header = tokenwarden_server::net::ForwardedHeader::Forwarded;
        c.login_max_failures = 2;
    })
    .await;
    let client = Client::new(&s).oneshot();
    let login = async |forwarded: &str, xff: &str| {
        let mut guesser = client.clone().at(xff);
        let wrong = (ALICE.0, "wrong-password");
        guesser
            .login_with(wrong, &[("forwarded", forwarded)])
            .await
            .status
    };
    let a = r#"for="[2001:db8:cafe::17]:4711";proto=https"#;
    // Three guesses from one client, whatever X-Forwarded-For says.
    let mut statuses = Vec::new();
    for xff in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        statuses.push(login(a, xff).await);
    }
    assert_eq!(statuses, [401, 401, 429]);
    // Another client (another /64) is counted apart.
    let b = r#"for="[2001:db8:beef::1]""#;
    assert_eq!(login(b, "192.0.2.1").await, 401);
    s.stop().await;
}

#[tokio::test]
async fn password_hashing_is_bounded_and_a_burst_beyond_the_queue_gets_503() {
    let s = TestServer::with(|c| {
        trusting_localhost(c);
        c.argon2_concurrency = 1;
        c.argon2_queue = 2;
    })
    .await;
    let client = Client::new(&s).oneshot();
    // Someone else's login holds the only slot until ten answers are back.
    let mut held = Some(s.state.passwords.hasher.turn().await.expect("a turn"));
    let mut burst: FuturesUnordered<_> = (0..12)
        .map(|i| {
            let mut c = client.clone().at(&format!("198.51.100.{i}"));
            async move {
                let email = format!("user{i}@example.com");
                c.login((&email, "some-password")).await
            }
        })
        .collect();
    let (mut busy, mut refused) = (0, 0);
    while let Some(res) = burst.next().await {
        match res.status {
            503 => {
                busy += 1;
                assert!(res.retry_after() >= 1);
                assert_eq!(res.error(), "temporarily_unavailable");
            }
            401 => refused += 1,
            other => panic!("status {other}"),
        }
        if busy + refused == 10 {
            held = None; // the two queued logins may go on
        }
    }
    assert!(held.is_none());
    drop(held);
    drop(burst);
    assert_eq!((busy, refused), (10, 2), "two queued, ten turned away");
    assert_eq!(s.state.passwords.hasher.peak(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_logged_out_token_stays_refused_through_a_clock_set_forward_and_back() {
    // The maintenance task prunes the revocations every second; the clock is set forward past
    // the token's `exp` for a few of them (an NTP step, a virtual machine resumed), then back.
    let s = TestServer::start().await;
    let mut tab = Client::new(&s);
    let t = tab.sign_in(ALICE).await;
    assert_eq!(tab.me(&t.access).await.status, 200);
    assert_eq!(tab.logout().await.status, 204);
    assert_eq!(tab.me(&t.access).await.status, 401);
    let maintenance = tokenwarden_server::spawn_maintenance(s.state.clone());
    s.state.clock.advance(3600);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    s.state.clock.advance(-3600);
    let me = tab.me(&t.access).await;
    assert_eq!(
        (me.status, me.error()),
        (401, "invalid_token"),
        "{}",
        me.body
    );
    maintenance.abort();
    s.stop().await;
}

#[tokio::test]
async fn login_attempt_counters_are_purged_by_the_maintenance_task() {
    let s = TestServer::with(|c| c.login_window = 60).await;
    let mut c = Client::new(&s).oneshot();
    // Counted two minutes ago (on PostgreSQL the purge goes by the database's clock too, which
    // a test cannot move forward).
    s.state.clock.advance(-120);
    for _ in 0..3 {
        c.login((ALICE.0, "wrong-password")).await;
        c.login(("ghost@example.com", "wrong-password")).await;
    }
    assert_eq!(
        s.state
            .store
            .counter_rows(tokenwarden_server::store::CounterScope::LoginAttempts)
            .await
            .unwrap(),
        2
    );
    s.state.clock.advance(120);
    let maintenance = tokenwarden_server::spawn_maintenance(s.state.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s
        .state
        .store
        .counter_rows(tokenwarden_server::store::CounterScope::LoginAttempts)
        .await
        .unwrap()
        != 0
    {
        assert!(Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    maintenance.abort();
    s.stop().await;
}

#[tokio::test]
async fn a_static_path_the_file_system_refuses_is_not_found_never_a_500() {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::write(dir.path().join("index.html"), "<!doctype html>").expect("index.html");
    let www = dir.path().to_owned();
    let s = TestServer::with(move |c| c.www_dir = Some(www)).await;
    let mut c = Client::new(&s).oneshot();
    assert_eq!(c.get("/").await.status, 200);
    // A name over 255 bytes: "name too long" from the file system, which ServeDir made a 500.
    for path in [
        format!("/{}", "a".repeat(300)),
        format!("/x/{}/y", "b".repeat(4000)),
    ] {
        let res = c.get(&path).await;
        assert_eq!(
            (res.status, res.error()),
            (404, "not_found"),
            "{}",
            &path[..20]
        );
    }
    // A name starting with a dot, however it is spelt, is not served (`.env`, `.git/`).
    std::fs::write(dir.path().join(".env"), "SECRET=1").expect(".env");
    std::fs::create_dir(dir.path().join(".git")).expect(".git");
    std::fs::write(dir.path().join(".git/config"), "[core]").expect(".git/config");
    std::fs::create_dir(dir.path().join(".well-known")).expect(".well-known");
    std::fs::write(dir.path().join(".well-known/.env"), "SECRET=1").expect(".env");
    std::fs::write(dir.path().join(".well-known/security.txt"), "Contact: x").expect("txt");
    std::fs::create_dir(dir.path().join("assets")).expect("assets");
    std::fs::write(dir.path().join("assets/.env"), "SECRET=1").expect("assets/.env");
    for path in [
        "/.env",
        "/%2Eenv",
        "/%2eenv",
        "/.git/config",
        "/x/../.env",
        "/.well-known/.env",
        "/assets%2F.env",
        "/assets%2f.env",
        "/.well-known%2F.env",
        // A backslash: a separator on Windows, where this is `assets`, then `.env`.
        "/assets%5C.env",
        "/assets%5c.env",
        // ServeDir's redirect of a directory to its slash copied the path: `//assets/`, a host.
        "//assets",
    ] {
        let res = c.get(path).await;
        assert_eq!((res.status, res.error()), (404, "not_found"), "{path}");
    }
    assert_eq!(
        c.get("/assets").await.status,
        307,
        "a directory, to its slash"
    );
    // RFC 8615's `/.well-known/` is the site's (security.txt, app-association files).
    let res = c.get("/.well-known/security.txt").await;
    assert_eq!(res.status, 200);
    // A page is framed by no one, and whoever opened it keeps no handle on its window.
    for (name, value) in [
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(res.headers[name], value, "{name}");
    }
    // Another method on a path no route has (ServeDir answered an empty 405), or on a file.
    for (method, path) in [
        ("POST", "/auth/nothing-here"),
        ("DELETE", "/auth/sessions/"),
        ("PUT", "/"),
        ("POST", "/index.html"),
    ] {
        let res = c.send(method, path, Some(&serde_json::json!({}))).await;
        assert_eq!(
            (res.status, res.error()),
            (404, "not_found"),
            "{method} {path}"
        );
    }
    s.stop().await;
}

// ---- connections ----------------------------------------------------------------------------

async fn connect(s: &TestServer) -> TcpStream {
    TcpStream::connect(s.base.trim_start_matches("http://"))
        .await
        .expect("connect")
}

/// Reads until the server closes the connection; how long since `start` (taken before the
/// connection was made, so never after the server's timer began) that took.
async fn closed_after(mut conn: TcpStream, start: Instant, within: Duration) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), conn.read(&mut buf))
            .await
        {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue, // a response (e.g. to the complete request before)
        }
    }
}

/// A server whose connections time out after `header` seconds for a request's headers (and
/// body) and `idle` seconds without a byte.
async fn timing_out(header: u64, idle: u64) -> TestServer {
    TestServer::with(move |c| {
        c.connections.header_read_timeout = Duration::from_secs(header);
        c.connections.idle_timeout = Duration::from_secs(idle);
    })
    .await
}

/// A request's head is held to 64 KiB (hyper's own bound was about 400 KiB a connection: a
/// thousand connections each sending one, and never its end, held 400 MB): 431 past it, and a
/// head of 40 KiB (an app's own cookies beside ours) answered.
#[tokio::test]
async fn a_request_head_over_64_kib_is_refused_and_one_of_40_kib_answered() {
    let s = TestServer::start().await;
    assert_eq!(tokenwarden_server::serve::MAX_HEAD_BYTES, 64 * 1024);
    for (lines, status) in [(40, &b"HTTP/1.1 200"[..]), (80, &b"HTTP/1.1 431"[..])] {
        let mut conn = connect(&s).await;
        let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 0..lines {
            head.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
        }
        head.extend_from_slice(b"Connection: close\r\n\r\n");
        // (Past the bound the server answers and closes before reading the rest.)
        let _ = conn.write_all(&head).await;
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(status),
            "{lines} KiB: {}",
            String::from_utf8_lossy(&answer[..answer.len().min(64)])
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let s = timing_out(1, 30).await;
    let start = Instant::now();
    let mut conn = connect(&s).await;
    // Slowloris: a header line now and then, never the blank line.
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = closed_after(conn, start, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
    s.stop().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_and_a_stalled_upload_are_closed() {
    let s = timing_out(30, 1).await;
    // Keep-alive: one request, then nothing.
    let start = Instant::now();
    let mut conn = connect(&s).await;
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    closed_after(conn, start, Duration::from_secs(5)).await;

    // A body announced but never sent: the header timer does not cover it; the idle one does.
    let start = Instant::now();
    let mut conn = connect(&s).await;
    conn.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\":",
    )
    .await
    .unwrap();
    let took = closed_after(conn, start, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(800), "{took:?}");
    s.stop().await;
}

#[tokio::test]
async fn a_body_trickled_in_gets_no_longer_than_the_headers_had() {
    let s = timing_out(1, 30).await;
    let start = Instant::now();
    let mut conn = connect(&s).await;
    conn.write_all(
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    // A byte every 200 ms: the connection is never idle, the body never done.
    let (mut read, mut write) = conn.into_split();
    let trickle = tokio::spawn(async move {
        while write.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), read.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    trickle.abort();
    s.stop().await;
}

/// The status line and headers of the first answer on a new connection to `request`.
async fn head(s: &TestServer, request: &[u8]) -> String {
    let mut conn = connect(s).await;
    conn.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the headers ended");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status line of the first answer on `conn` to `request`.
async fn status_line(s: &TestServer, request: &[u8]) -> String {
    let answer = head(s, request).await;
    answer.lines().next().unwrap_or("").to_owned()
}

#[tokio::test]
async fn no_answer_is_sniffed_and_a_server_serving_tls_pins_https_for_a_named_host_only() {
    let get =
        |host: &str| format!("GET /api/me HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    // Plain http (or TLS ended by a proxy, which sends its own): no HSTS; nosniff on an error.
    let plain = TestServer::start().await;
    let h = head(&plain, get("auth.example.com").as_bytes())
        .await
        .to_ascii_lowercase();
    assert!(h.starts_with("http/1.1 401"), "{h}");
    assert!(h.contains("\r\nx-content-type-options: nosniff\r\n"), "{h}");
    assert!(!h.contains("strict-transport-security"), "{h}");
    plain.stop().await;
    // Serving TLS itself (--tls-cert): pinned for a named host, never for loopback or an IP.
    let tls = TestServer::with(|c| c.https = true).await;
    for (host, pinned) in [
        ("auth.example.com", true),
        ("auth.example.com:8443", true),
        ("localhost:8080", false),
        ("app.localhost", false),
        ("127.0.0.1:8080", false),
        ("[::1]:8080", false),
    ] {
        let h = head(&tls, get(host).as_bytes()).await.to_ascii_lowercase();
        assert!(h.contains("\r\nx-content-type-options: nosniff\r\n"), "{h}");
        assert_eq!(
            h.contains("\r\nstrict-transport-security: max-age=31536000\r\n"),
            pinned,
            "{host}: {h}"
        );
    }
    tls.stop().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_a_broken_one_400() {
    let s = timing_out(5, 30).await;
    let head = "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    // Over 16 KiB, announced by no Content-Length.
    let big = format!("{head}5000\r\n{}\r\n0\r\n\r\n", " ".repeat(0x5000));
    assert_eq!(
        status_line(&s, big.as_bytes()).await,
        "HTTP/1.1 413 Payload Too Large"
    );
    // A chunk size that is no number: the body is broken, not too large.
    let broken = format!("{head}zz\r\n{{}}\r\n0\r\n\r\n");
    assert_eq!(
        status_line(&s, broken.as_bytes()).await,
        "HTTP/1.1 400 Bad Request"
    );
    s.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let s = TestServer::with(|c| {
        c.connections.max_connections = 2;
        c.connections.header_read_timeout = Duration::from_secs(30);
        c.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let first = connect(&s).await;
    let _second = connect(&s).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = || {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let res = fresh().get(s.url("/healthz")).send().await;
    assert!(res.is_err(), "a third connection was served: {res:?}");
    drop(first);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let res = client.get(s.url("/healthz")).send().await.expect("served");
    assert_eq!(res.status(), 200);
    s.stop().await;
}

/// A request on `conn` (kept open): its status line, or `None` when the server closed it.
async fn ask(conn: &mut TcpStream) -> Option<String> {
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    conn.write_all(request).await.ok()?;
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf));
    match read.await.expect("an answer or a close within 5 s") {
        Ok(n) if n > 0 => Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()?
                .to_owned(),
        ),
        _ => None,
    }
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_of_the_connections() {
    let s = TestServer::with(|c| c.connections.max_per_client = 2).await;
    let mut first = connect(&s).await;
    let mut second = connect(&s).await;
    let ok = Some("HTTP/1.1 200 OK".to_owned());
    assert_eq!(ask(&mut first).await, ok);
    assert_eq!(ask(&mut second).await, ok);
    // A third from the same address, while both stay open: closed at once, unanswered (the
    // server's other slots stay free for everyone else).
    assert_eq!(ask(&mut connect(&s).await).await, None);
    assert_eq!(ask(&mut first).await, ok, "the first two are still served");
    // One closes: the address may open one more.
    drop(first);
    let mut served = None;
    for _ in 0..50 {
        served = ask(&mut connect(&s).await).await;
        if served.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served, ok);
    s.stop().await;

    // A trusted proxy's address is not counted: every user comes through it.
    let s = TestServer::with(|c| {
        c.connections.max_per_client = 1;
        c.proxies.trusted = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(connect(&s).await);
    }
    for conn in &mut conns {
        assert_eq!(ask(conn).await, ok);
    }
    s.stop().await;
}

/// Two transactions that lock two rows in opposite orders: PostgreSQL ends one of them (a lock
/// cycle, SQLSTATE 40P01) and nothing of it stays written, so its request is answered 503 with
/// `Retry-After` (a client retries; nobody is logged out), never a 500. SQLite's one writer has
/// no such cycle: the test runs on PostgreSQL.
#[tokio::test]
async fn a_lock_cycle_on_postgresql_is_a_503_to_retry_never_a_500() {
    use axum::response::IntoResponse;
    use sqlx::{Connection, PgConnection};
    use tokenwarden_server::error::ApiError;
    use tokenwarden_server::store::StoreError;
    if common::pg::backend() != common::pg::Backend::Postgres {
        return;
    }
    let url = common::pg::fresh_database().await;
    let mut one = PgConnection::connect(&url).await.expect("connect");
    let mut two = PgConnection::connect(&url).await.expect("connect");
    for sql in [
        "CREATE TABLE cycle (id INT PRIMARY KEY)",
        "INSERT INTO cycle VALUES (1), (2)",
    ] {
        sqlx::query(sql).execute(&mut one).await.expect(sql);
    }
    let lock = |id: i32| format!("UPDATE cycle SET id = id WHERE id = {id}");
    for (conn, first) in [(&mut one, 1), (&mut two, 2)] {
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
        sqlx::query(sqlx::AssertSqlSafe(lock(first)))
            .execute(&mut *conn)
            .await
            .expect("first lock");
    }
    let (a, b) = tokio::join!(
        sqlx::query(sqlx::AssertSqlSafe(lock(2))).execute(&mut one),
        sqlx::query(sqlx::AssertSqlSafe(lock(1))).execute(&mut two),
    );
    let ended = a.err().or(b.err()).expect("PostgreSQL ends one of the two");
    let answer = ApiError::from(StoreError::Database(ended));
    assert!(
        matches!(answer, ApiError::Busy { retry_after: 1 }),
        "{answer:?}"
    );
    let res = answer.into_response();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
}
