//! The protocol of docs/PROTOCOL.md, against a real server and a real database: requests go
//! straight into the router (`Client::oneshot`) except where the socket is the point.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokenwarden_server::tokens::{self, Audience};

// ---- login ----------------------------------------------------------------------------------

/// A profile, the sessions and the passkeys listed are stored by no cache, the browser's own
/// included (they had no `Cache-Control`: a shared computer's disk kept them after the logout);
/// the JWKS keeps its own.
#[tokio::test]
async fn answers_with_a_user_s_data_are_stored_by_no_cache() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    c.sign_in(ALICE).await;
    let name = json!({ "name": "Alice A" });
    for (method, path, body) in [
        ("GET", "/api/me", None),
        ("PATCH", "/api/me", Some(&name)),
        ("GET", "/auth/sessions", None),
        ("GET", "/auth/passkeys", None),
    ] {
        let res = c.send(method, path, body).await;
        assert_eq!(res.status, 200, "{method} {path}: {}", res.body);
        assert_eq!(res.headers["cache-control"], "no-store", "{method} {path}");
    }
    let jwks = c.get(tokenwarden_server::api::JWKS_PATH).await;
    let cached = jwks.headers["cache-control"].to_str().unwrap();
    assert!(cached.contains("max-age"), "{cached}");
    s.stop().await;
}

#[tokio::test]
async fn login_returns_a_bearer_token_and_sets_exactly_the_documented_cookies() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let res = c.login(ALICE).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["cache-control"], "no-store");
    let cookies = res.set_cookies();
    assert_eq!(cookies.len(), 3, "{cookies:?}");
    // This browser proved the password: it is known to the account (docs/PROTOCOL.md, 429).
    let known = cookie(&res.headers, KNOWN_BROWSER_COOKIE).expect("known-browser cookie");
    assert_eq!(
        cookies[0],
        format!(
            "{KNOWN_BROWSER_COOKIE}={known}; Path=/; Max-Age=34560000; HttpOnly; Secure; SameSite=Strict"
        )
    );
    // The refresh cookie last (some clients keep only the last `Set-Cookie`).
    let refresh = &cookies[2];
    let value = cookie(&res.headers, REFRESH_COOKIE).expect("refresh cookie");
    assert_eq!(value.len(), 43, "256-bit token, base64url");
    assert_eq!(
        refresh,
        &format!(
            "{REFRESH_COOKIE}={value}; Path=/; Max-Age=1209600; HttpOnly; Secure; SameSite=Strict"
        )
    );
    assert_eq!(
        cookies[1],
        "tw_session=1; Path=/; Max-Age=1209600; Secure; SameSite=Strict"
    );
    assert!(!refresh.contains("Domain"));

    let body = &res.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    let (header, claims) = jwt_parts(body["access_token"].as_str().expect("token"));
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    for claim in [
        "iss", "aud", "sub", "sid", "jti", "iat", "exp", "email", "name", "roles",
    ] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["email"], ALICE.0);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );

    // The token works.
    assert_eq!(c.get("/api/me").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let wrong = c.login((ALICE.0, "not-the-password")).await;
    let unknown = c.login(("nobody@example.com", "not-the-password")).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(unknown.status, 401);
    assert!(wrong.set_cookies().is_empty());
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.error(), "invalid_credentials");
    s.stop().await;
}

#[tokio::test]
async fn email_is_matched_case_insensitively() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let res = c.login(("  ALICE@Example.com ", ALICE.1)).await;
    assert_eq!(res.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn an_account_is_throttled_for_a_client_after_repeated_failures_even_for_the_right_password()
{
    let s = TestServer::with(|c| {
        c.login_max_failures = 3;
        c.login_window = 600;
    })
    .await;
    let mut c = Client::new(&s).oneshot();
    for _ in 0..3 {
        assert_eq!(c.login((ALICE.0, "wrong-password")).await.status, 401);
    }
    let res = c.login(ALICE).await;
    assert_eq!(res.status, 429);
    let retry = res.retry_after();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert_eq!(res.error(), "too_many_attempts");
    // Another account is not affected.
    assert_eq!(c.login(BOB).await.status, 200);
    // Unknown accounts are throttled the same way (no enumeration through 429s).
    let ghost = ("ghost@example.com", "x-password");
    for _ in 0..3 {
        c.login(ghost).await;
    }
    assert_eq!(c.login(ghost).await.status, 429);
    // After the window, the right password works again and clears the count.
    s.state.clock.advance(601);
    assert_eq!(c.login(ALICE).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn logins_are_limited_per_client_ip() {
    let s = TestServer::with(|c| c.login_ip_per_minute = 2).await;
    // The limit counts per wall-clock minute: frozen, no minute ends between the logins (a
    // loaded machine crossed one now and then, and the third login got in).
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    assert_eq!(c.login(ALICE).await.status, 200);
    assert_eq!(c.login(BOB).await.status, 200);
    let res = c.login(BOB).await;
    assert_eq!(res.status, 429);
    assert!(res.headers.contains_key("retry-after"));
    s.stop().await;
}

// ---- rotation -------------------------------------------------------------------------------

#[tokio::test]
async fn refresh_rotates_the_cookie_and_issues_a_new_access_token() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    let t1 = c.rotate(&t0.refresh).await;
    assert_ne!(t1.refresh, t0.refresh);
    assert_ne!(t1.access, t0.access);
    let (_, c0) = jwt_parts(&t0.access);
    let (_, c1) = jwt_parts(&t1.access);
    assert_eq!(c0["sid"], c1["sid"], "same session");
    assert_ne!(c0["jti"], c1["jti"]);
    assert_eq!(c.me(&t1.access).await.status, 200);
    let t2 = c.rotate(&t1.refresh).await;
    assert_eq!(c.me(&t2.access).await.status, 200);
    assert_eq!(s.stats().await["refresh_rotated"], 2);
    s.stop().await;
}

#[tokio::test]
async fn reuse_of_a_used_token_revokes_the_session_for_attacker_and_user() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut user = Client::new(&s).oneshot();
    let stolen = user.sign_in(ALICE).await;
    let mut thief = user.clone();
    // The user refreshes twice: the stolen token's child has been used.
    let t1 = user.rotate(&stolen.refresh).await;
    let t2 = user.rotate(&t1.refresh).await;
    // Past the window in which the token could still be presented again.
    s.state.clock.advance(31);

    let res = thief.refresh().await;
    assert_eq!(res.status, 401);
    let cleared = res.set_cookies();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with(&format!("{REFRESH_COOKIE}=;")) && c.contains("Max-Age=0"))
    );
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("tw_session=;") && c.contains("Max-Age=0"))
    );
    assert_eq!(res.error(), "token_reused");

    // The user's newest refresh token and access token are dead too.
    let res = user.refresh().await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_grant");
    let res = user.me(&t2.access).await;
    assert_eq!(res.status, 401);
    assert!(
        res.header("www-authenticate")
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );

    let stats = s.stats().await;
    assert_eq!(stats["reuse_detections"], 1);
    // Other sessions of the same user are untouched.
    let mut other = Client::new(&s).oneshot();
    other.sign_in(ALICE).await;
    assert_eq!(other.get("/api/me").await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn a_sibling_presented_after_another_claimed_the_generation_is_reuse() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    let a = c.rotate(&t0.refresh).await; // first child of t0
    let b = c.rotate(&t0.refresh).await; // t0 again, within its window: a sibling
    c.rotate(&b.refresh).await; // b claims the generation: a is dead
    assert_eq!(c.present(&a.refresh).await.error(), "token_reused");
    s.stop().await;
}

#[tokio::test]
async fn a_lost_refresh_response_is_recovered_by_presenting_the_old_token_again() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    // Over the socket: the server drops the connection.
    let mut c = Client::new(&s);
    let t0 = c.sign_in(ALICE).await;
    // The server commits the rotation, then closes the connection without answering.
    s.drop_next_refreshes.store(1, Ordering::SeqCst);
    let lost = c.try_refresh().await;
    assert!(lost.is_err(), "the response must be lost: {lost:?}");
    assert_eq!(
        s.stats().await["refresh_rotated"],
        1,
        "the rotation was committed"
    );

    // The client still holds t0 and tries again: a sibling child, no logout.
    assert_eq!(c.refresh.as_deref(), Some(t0.refresh.as_str()));
    let t1 = c.rotate(&t0.refresh).await;
    assert_eq!(c.me(&t1.access).await.status, 200);
    let t2 = c.rotate(&t1.refresh).await;
    assert_eq!(c.me(&t2.access).await.status, 200);
    assert_eq!(s.stats().await["reuse_detections"], 0);

    // Now that a child of t0 has been used, t0 itself is reuse once its window is over.
    s.state.clock.advance(31);
    assert_eq!(c.refresh_error(&t0.refresh).await, "token_reused");
    s.stop().await;
}

/// Every accepted refresh adds a token row, kept until a day after the session ends: the
/// periodic purge keeps each DPoP-bound session's last `KEPT_GENERATIONS` only (here 2). A
/// token older than those presented again is unknown, no longer reuse: it opens nothing (the
/// key is the defence), and the session goes on; one within them is still reuse. A Bearer
/// session keeps every token: reuse is its only defence, and a thief who refreshed past the
/// user's token must still have the session ended when the user comes back.
#[tokio::test]
async fn a_bound_session_keeps_its_recent_tokens_and_a_bearer_one_every_token() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut bound = Client::bound(&s);
    let mut bearer = Client::new(&s).oneshot();
    let mut tb = vec![bound.sign_in(ALICE).await];
    let mut tp = vec![bearer.sign_in(BOB).await];
    for _ in 0..5 {
        s.state.clock.advance(60);
        let next = bound.rotate(&tb[tb.len() - 1].refresh).await;
        tb.push(next);
        let next = bearer.rotate(&tp[tp.len() - 1].refresh).await;
        tp.push(next);
    }
    s.state.store.purge_superseded(2).await.unwrap();
    s.state.clock.advance(60);
    assert_eq!(bound.refresh_error(&tb[0].refresh).await, "invalid_grant");
    let live = bound.rotate(&tb[5].refresh).await;
    assert_eq!(bound.me(&live.access).await.status, 200);
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.state.clock.advance(60);
    assert_eq!(bound.refresh_error(&tb[4].refresh).await, "token_reused");
    // The Bearer session's oldest token is still reuse: the session ends.
    assert_eq!(bearer.refresh_error(&tp[0].refresh).await, "token_reused");
    assert_eq!(tokenwarden_server::store::KEPT_GENERATIONS, 1_000);
    s.stop().await;
}

#[tokio::test]
async fn twenty_concurrent_refreshes_with_the_same_cookie_leave_the_session_alive() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    c.sign_in(ALICE).await;
    // Twenty tabs, one cookie jar.
    let mut tabs = c.tabs(20);
    let mut children = Vec::new();
    for res in futures::future::join_all(tabs.iter_mut().map(|t| t.refresh())).await {
        assert_eq!(res.status, 200);
        children.push(c.tokens_of(&res));
    }
    let distinct: BTreeSet<_> = children.iter().map(|t| t.refresh.clone()).collect();
    assert_eq!(distinct.len(), 20);
    // Whichever child the browser kept (the last Set-Cookie wins), it works.
    let kept = &children[13];
    let next = c.rotate(&kept.refresh).await;
    assert_eq!(c.me(&next.access).await.status, 200);
    let stats = s.stats().await;
    assert_eq!(stats["reuse_detections"], 0);
    assert_eq!(stats["revocations"], 0);
    s.stop().await;
}

#[tokio::test]
async fn refresh_without_the_csrf_header_is_forbidden_and_spends_nothing() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    // A cross-site form: the cookie goes along, the header does not.
    let mut forged = Client::new(&s).oneshot();
    forged.refresh = Some(t0.refresh.clone());
    forged.csrf = None;
    for path in ["/auth/refresh", "/auth/logout"] {
        let res = forged.send("POST", path, None).await;
        assert_eq!(res.status, 403, "{path}");
        assert_eq!(res.error(), "csrf_header_missing");
    }
    // The wrong value is refused too.
    forged.csrf = Some("yes");
    assert_eq!(forged.refresh().await.status, 403);
    // Nothing was revoked or rotated.
    c.rotate(&t0.refresh).await;
    s.stop().await;
}

#[tokio::test]
async fn refresh_with_no_unknown_or_garbage_cookie_is_invalid_grant() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let bare = c.refresh().await;
    assert_eq!(bare.status, 401);
    assert_eq!(bare.error(), "invalid_grant");
    for junk in [
        "A".repeat(43),
        "short".into(),
        "ä".repeat(30),
        "x".repeat(5000),
        "\"quoted\"".into(),
    ] {
        let res = c.present(&junk).await;
        assert_eq!(res.status, 401, "{junk}");
        assert_eq!(res.error(), "invalid_grant");
    }
    s.stop().await;
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_absolute_lifetime() {
    let s = TestServer::with(|c| {
        c.idle_ttl = 100;
        c.absolute_ttl = 250;
    })
    .await;
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    s.state.clock.advance(90);
    let t1 = c.rotate(&t0.refresh).await; // idle renewed to now + 100
    s.state.clock.advance(90);
    let t2 = c.rotate(&t1.refresh).await;
    s.state.clock.advance(60); // 240 s after login: idle would allow 100 s more, absolute 10 s
    let res = c.present(&t2.refresh).await;
    assert_eq!(res.status, 200);
    let cookies = res.set_cookies();
    assert!(cookies[1].contains("Max-Age=10;"), "{cookies:?}");
    let t3 = c.tokens_of(&res);
    // Its access token ends with the session, not a TTL later (out of the user's list of
    // sessions, so out of reach of its revoke).
    let end = jwt_parts(&t0.access).1["iat"].as_i64().unwrap() + 250;
    assert_eq!(jwt_parts(&t3.access).1["exp"], end);
    assert_eq!(res.body["expires_in"], 10);
    s.state.clock.advance(11);
    assert_eq!(c.refresh_error(&t3.refresh).await, "invalid_grant");

    // Idle expiry alone.
    s.state.clock.reset();
    s.state.clock.freeze();
    let u0 = c.sign_in(BOB).await;
    s.state.clock.advance(101);
    assert_eq!(c.refresh_error(&u0.refresh).await, "invalid_grant");
    s.stop().await;
}

/// A rotation whose time was read before another's committed (a slow request on an instance of
/// a fleet; here the clock set back 8 s) moves the session's last use and idle end no earlier:
/// a revocation counts from the last use, so that every token issued before it stays refused
/// for its whole life on every instance and in the feed.
#[tokio::test]
async fn a_rotation_with_an_earlier_time_moves_the_session_s_last_use_no_earlier() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut c = Client::new(&s).oneshot();
    let t0 = c.sign_in(ALICE).await;
    let user = jwt_parts(&t0.access).1["sub"].as_str().unwrap().to_owned();
    let session = async || {
        let rows = s.state.store.live_sessions(&user, s.state.now()).await;
        let row = rows.unwrap().into_iter().next().unwrap();
        (row.last_used_at, row.idle_expires_at)
    };
    s.state.clock.advance(8);
    c.rotate(&t0.refresh).await;
    let later = session().await;
    // The same token again within the grace window (the first answer lost): a repeat, at a
    // time 8 s earlier.
    s.state.clock.advance(-8);
    assert_eq!(c.present(&t0.refresh).await.status, 200);
    assert_eq!(session().await, later);
    s.stop().await;
}

// ---- logout and sessions --------------------------------------------------------------------

#[tokio::test]
async fn logout_revokes_the_session_denylists_the_token_and_is_idempotent() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let res = c.logout().await;
    assert_eq!(res.status, 204);
    let cleared = res.set_cookies();
    assert_eq!(cleared.len(), 2);
    assert!(cleared.iter().all(|c| c.contains("Max-Age=0")));

    let res = c.me(&t.access).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_token");
    assert_eq!(c.refresh_error(&t.refresh).await, "invalid_grant");
    let mut again = Client::new(&s).oneshot().holding(&t);
    assert_eq!(again.logout().await.status, 204, "idempotent");
    assert_eq!(s.stats().await["logouts"], 1);

    // With only the bearer token (e.g. the cookie was lost), the session is revoked too.
    let u = c.sign_in(ALICE).await;
    c.refresh = None;
    assert_eq!(c.logout().await.status, 204);
    assert_eq!(c.refresh_error(&u.refresh).await, "invalid_grant");
    s.stop().await;
}

#[tokio::test]
async fn a_user_lists_their_sessions_and_revokes_a_lost_device() {
    let s = TestServer::start().await;
    let sign_in_on = |ua: &'static str| {
        let mut tab = Client::new(&s).oneshot();
        async move {
            let res = tab.login_with(ALICE, &[("user-agent", ua)]).await;
            let t = tab.tokens_of(&res);
            (tab, t)
        }
    };
    let (mut laptop_tab, laptop) = sign_in_on("Laptop").await;
    let (mut phone_tab, phone) = sign_in_on("Phone").await;
    let mut bob_tab = Client::new(&s).oneshot();
    bob_tab.sign_in(BOB).await;

    let list = laptop_tab.get("/auth/sessions").await.body;
    let sessions = list["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "{list}");
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["user_agent"], "Laptop");
    let phone_session = sessions
        .iter()
        .find(|s| s["user_agent"] == "Phone")
        .expect("phone session");
    for field in ["id", "created_at", "last_used_at", "expires_at"] {
        assert!(!phone_session[field].is_null(), "{field}");
    }
    let phone_path = format!("/auth/sessions/{}", phone_session["id"].as_str().unwrap());

    // Bob cannot revoke Alice's session.
    assert_eq!(bob_tab.delete(&phone_path).await.status, 404);

    assert_eq!(laptop_tab.delete(&phone_path).await.status, 204);
    assert_eq!(
        phone_tab.me(&phone.access).await.status,
        401,
        "phone's access token dies at once"
    );
    assert_eq!(
        phone_tab.refresh_error(&phone.refresh).await,
        "invalid_grant"
    );
    assert_eq!(
        laptop_tab.me(&laptop.access).await.status,
        200,
        "laptop unaffected"
    );

    assert_eq!(
        laptop_tab.delete(&phone_path).await.status,
        404,
        "already revoked"
    );
    s.stop().await;
}

// ---- profile --------------------------------------------------------------------------------

#[tokio::test]
async fn a_profile_change_shows_in_the_claims_of_the_next_refresh() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let res = c
        .patch(
            "/api/me",
            &json!({ "name": "Alice Liddell", "phone": "+44 20 7946 0000" }),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["name"], "Alice Liddell");
    assert_eq!(res.body["phone"], "+44 20 7946 0000");
    let (_, old) = jwt_parts(&t.access);
    assert_eq!(old["name"], "alice");
    let t1 = c.rotate(&t.refresh).await;
    let (_, new) = jwt_parts(&t1.access);
    assert_eq!(new["name"], "Alice Liddell");

    // `null` clears the phone, absent keeps it; bad values are 400 (with the new token).
    let me = c.patch("/api/me", &json!({})).await.body;
    assert_eq!(me["phone"], "+44 20 7946 0000");
    let me = c.patch("/api/me", &json!({ "phone": null })).await.body;
    assert!(me["phone"].is_null());
    for bad in [
        json!({ "name": "" }),
        json!({ "name": "Alice\u{1b}[2J" }),
        json!({ "phone": "call me" }),
        json!({ "email": "x@y" }),
    ] {
        let res = c.patch("/api/me", &bad).await;
        assert_eq!(res.status, 400, "{bad}");
        assert_eq!(res.error(), "invalid_request");
    }
    s.stop().await;
}

// ---- keys -----------------------------------------------------------------------------------

async fn jwks_kids(c: &mut Client) -> BTreeSet<String> {
    let jwks = c.get("/.well-known/jwks.json").await.body;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            assert_eq!(k["kty"], "OKP");
            assert_eq!(k["crv"], "Ed25519");
            assert_eq!(k["alg"], "EdDSA");
            k["kid"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn graceful_key_rotation_keeps_tokens_of_the_old_key_valid() {
    let s = TestServer::with(|c| c.key_grace = 900).await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let (h_old, _) = jwt_parts(&t.access);
    let old_kid = h_old["kid"].as_str().unwrap().to_owned();

    // Not in the second the first key started (a rotation then starts a second later).
    s.state.clock.advance(1);
    let new_kid = s
        .state
        .keys
        .rotate(&s.state.store, s.state.now(), 0)
        .await
        .unwrap();
    assert_ne!(new_kid, old_kid);

    assert_eq!(c.me(&t.access).await.status, 200, "old kid still verifies");
    let t1 = c.rotate(&t.refresh).await;
    assert_eq!(jwt_parts(&t1.access).0["kid"], new_kid.as_str());
    assert_eq!(
        jwks_kids(&mut c).await,
        [old_kid.clone(), new_kid.clone()].into()
    );

    // After the grace period the old key leaves the JWKS.
    s.state.clock.advance(901);
    s.state
        .keys
        .reload(&s.state.store, s.state.now())
        .await
        .unwrap();
    assert_eq!(jwks_kids(&mut c).await, [new_kid].into());
    s.stop().await;
}

#[tokio::test]
async fn emergency_key_revocation_rejects_tokens_at_once_and_a_refresh_recovers() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    // Used once first: the server remembers its verified signature (crate::verified), which
    // must not outlive the key.
    assert_eq!(c.me(&t.access).await.status, 200);
    let kid = jwt_parts(&t.access).0["kid"].as_str().unwrap().to_owned();
    let revoked = s
        .state
        .keys
        .revoke(&s.state.store, &kid, s.state.now())
        .await
        .unwrap();
    assert!(revoked);

    let res = c.me(&t.access).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_token");
    assert!(!jwks_kids(&mut c).await.contains(&kid));

    // Nobody is logged out: the refresh token still works and the new token verifies.
    let t1 = c.rotate(&t.refresh).await;
    assert_ne!(jwt_parts(&t1.access).0["kid"], kid.as_str());
    assert_eq!(c.me(&t1.access).await.status, 200);
    s.stop().await;
}

// ---- forged and malformed bearer tokens ----------------------------------------------------

fn b64(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn forged_and_invalid_access_tokens_are_refused_with_rfc6750_challenges() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let (header, claims) = jwt_parts(&t.access);
    let kid = header["kid"].as_str().unwrap().to_owned();
    let ring = s.state.keys.current();

    let alg_none = format!(
        "{}.{}.",
        b64(&json!({ "alg": "none", "typ": "at+jwt", "kid": kid })),
        b64(&claims)
    );
    // HS256 keyed with the public key (the classic algorithm-confusion attack).
    let jwks = c.get("/.well-known/jwks.json").await.body;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut hs = Header::new(Algorithm::HS256);
    hs.typ = Some("at+jwt".into());
    hs.kid = Some(kid.clone());
    let hs256 =
        jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(public_x.as_bytes())).unwrap();

    let user = s
        .state
        .store
        .user_by_id(claims["sub"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let sid = claims["sid"].as_str().unwrap();
    let now = s.state.now();
    let wrong_aud = tokens::issue(
        &ring,
        &Audience {
            issuer: "tokenwarden".into(),
            audience: "someone-else".into(),
            leeway_secs: 5,
        },
        &tokens::Subject {
            user: &user,
            session_id: sid,
            jkt: None,
            auth: None,
        },
        now,
        600,
    )
    .unwrap()
    .0;
    let wrong_iss = tokens::issue(
        &ring,
        &Audience {
            issuer: "evil".into(),
            audience: "tokenwarden-api".into(),
            leeway_secs: 5,
        },
        &tokens::Subject {
            user: &user,
            session_id: sid,
            jkt: None,
            auth: None,
        },
        now,
        600,
    )
    .unwrap()
    .0;
    // Signed by a key the server never had.
    let foreign = {
        let row = tokenwarden_server::keys::generate().unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(row.kid);
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(&row.private_key)).unwrap()
    };
    // Signed with the server's kid but another key (signature mismatch).
    let bad_signature = {
        let row = tokenwarden_server::keys::generate().unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(&row.private_key)).unwrap()
    };
    let wrong_typ = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let (_, key) = ring.signing.as_ref().unwrap();
        let der = key.to_pkcs8_der().unwrap();
        let mut h = Header::new(Algorithm::EdDSA);
        h.typ = Some("JWT".into());
        h.kid = Some(kid.clone());
        jsonwebtoken::encode(&h, &claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
    };
    let tampered = {
        let mut c = claims.clone();
        c["sub"] = json!("someone-else");
        let parts: Vec<_> = t.access.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&c), parts[2])
    };

    let cases = [
        ("alg none", alg_none),
        ("HS256 with the public key", hs256),
        ("wrong aud", wrong_aud),
        ("wrong iss", wrong_iss),
        ("unknown kid", foreign),
        ("bad signature", bad_signature),
        ("typ JWT", wrong_typ),
        ("tampered payload", tampered),
        ("garbage", "not-a-jwt".into()),
        ("huge", "a".repeat(10_000)),
    ];
    for (what, token) in cases {
        let res = c.me(&token).await;
        assert_eq!(res.status, 401, "{what}");
        let challenge = res.header("www-authenticate").unwrap();
        assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
        assert_eq!(res.error(), "invalid_token", "{what}");
    }

    // Expired: the server's clock moves past exp + leeway.
    assert_eq!(c.me(&t.access).await.status, 200);
    s.state.clock.advance(600 + 5);
    let res = c.me(&t.access).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_token");
    assert_eq!(res.body["error_description"], "the token has expired");
    s.stop().await;
}

#[tokio::test]
async fn a_request_without_a_token_gets_a_bare_bearer_challenge() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    for auth in [
        None,
        Some("Basic YWxpY2U6eA=="),
        Some("Bearer "),
        Some("Bearer"),
    ] {
        let extra: Vec<_> = auth.iter().map(|a| ("authorization", *a)).collect();
        let res = c.send_once("GET", "/api/me", None, &extra).await;
        assert_eq!(res.status, 401, "{auth:?}");
        assert_eq!(
            res.header("www-authenticate"),
            Some(r#"Bearer realm="tokenwarden""#)
        );
        assert_eq!(res.error(), "missing_token");
    }
    s.stop().await;
}

// ---- malformed requests ---------------------------------------------------------------------

#[tokio::test]
async fn malformed_requests_get_4xx_json_never_5xx() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("application/json", "{bad".into(), 400, "invalid_request"),
        ("application/json", "[]".into(), 400, "invalid_request"),
        (
            "application/json",
            r#"{"email":1,"password":2}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            r#"{"email":"a@b"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            r#"{"email":"","password":""}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "text/plain",
            r#"{"email":"a@b","password":"x"}"#.into(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/x-www-form-urlencoded",
            "email=a%40b&password=x".into(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            format!(r#"{{"email":"a@b","password":"{}"}}"#, "x".repeat(40_000)),
            413,
            "payload_too_large",
        ),
    ];
    for (ct, body, status, code) in cases {
        let res = c
            .send_raw("POST", "/auth/login", &body, &[("content-type", ct)])
            .await;
        assert_eq!(res.status, status, "{ct} {}", &body[..body.len().min(60)]);
        assert_eq!(res.error(), code);
    }
    let res = c.get("/auth/nothing-here").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.error(), "not_found");
    let res = c.get("/auth/refresh").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.error(), "method_not_allowed");
    s.stop().await;
}

// ---- CORS -----------------------------------------------------------------------------------

#[tokio::test]
async fn cors_allows_only_listed_origins_with_credentials() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let mut preflight = async |origin: &str| {
        let asks = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", CSRF_HEADER),
        ];
        c.send_once("OPTIONS", "/auth/refresh", None, &asks).await
    };
    let ok = preflight("http://app.test:3000").await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://app.test:3000")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    assert!(
        ok.header("access-control-allow-headers")
            .unwrap()
            .contains(CSRF_HEADER)
    );
    // Every method an endpoint has, PUT /auth/second-factor's included, for a cross-origin app.
    let methods = ok
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_owned();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{m} in {methods}");
    }
    let evil = preflight("https://evil.example").await;
    assert!(!evil.headers.contains_key("access-control-allow-origin"));
    s.stop().await;
}

// ---- the protocol document ------------------------------------------------------------------

fn protocol_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .expect("docs/PROTOCOL.md")
}

#[test]
fn the_protocol_document_lists_exactly_the_error_codes_the_server_emits() {
    let doc = protocol_doc();
    // Rows of the error table look like: | `code` | status | when |
    let section = doc
        .split("## Errors")
        .nth(1)
        .expect("an '## Errors' section");
    let documented: BTreeSet<String> = section
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect();
    let emitted: BTreeSet<String> = tokenwarden_server::error::ApiError::examples()
        .iter()
        .map(|e| e.code().to_owned())
        .collect();
    assert_eq!(documented, emitted);
}

#[tokio::test]
async fn the_cookies_in_the_protocol_document_are_the_ones_the_server_sets() {
    let doc = protocol_doc();
    let s = TestServer::start().await;
    let mut tab = Client::new(&s).oneshot();
    let res = tab.login(ALICE).await;
    let token = cookie(&res.headers, REFRESH_COOKIE).unwrap();
    let known = cookie(&res.headers, KNOWN_BROWSER_COOKIE).unwrap();
    for c in res.set_cookies() {
        let documented = c
            .replace(&token, "<token>")
            .replace(&known, "<nonce>.<mac>");
        assert!(
            doc.contains(&format!("Set-Cookie: {documented}")),
            "docs/PROTOCOL.md does not show `Set-Cookie: {documented}`"
        );
    }
    tab.tokens_of(&res);
    let res = tab.logout().await;
    for c in res.set_cookies() {
        assert!(
            doc.contains(&format!("Set-Cookie: {c}")),
            "not documented: {c}"
        );
    }
    s.stop().await;
}
