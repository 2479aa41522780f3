//! DPoP (docs/PROTOCOL.md, "DPoP: sender-constrained sessions") against a real server and a
//! real database: every proof rule, bound refresh and logout, stolen tokens, the nonce flow.
//! Requests go straight into the router (`Client::oneshot`) except where the socket is the
//! point.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{Value, json};
use tokenwarden_dpop::ProofSigner;

/// A 401 with `code` in the body and in a `DPoP` challenge.
fn assert_dpop_401(res: &Answer, code: &str, what: &str) {
    assert_eq!(res.status, 401, "{what}");
    let c = res.challenges();
    assert!(
        c.contains(&format!(
            r#"DPoP realm="tokenwarden", algs="ES256 EdDSA Ed25519", error="{code}""#
        )),
        "{what}: {c}"
    );
    assert!(res.headers.contains_key("dpop-nonce"), "{what}");
    assert_eq!(res.error(), code, "{what}");
}

// ---- the nonce flow and binding -----------------------------------------------------------

#[tokio::test]
async fn a_login_with_a_proof_binds_the_session_after_one_nonce_retry() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    // First contact: no nonce yet -> 400 use_dpop_nonce with the nonce; no session, no failure.
    let res = c.login_with(ALICE, &[]).await;
    assert_eq!(res.status, 400);
    assert!(res.set_cookies().is_empty());
    let nonce = res.header("dpop-nonce").unwrap();
    assert_eq!(nonce.len(), 43);
    assert_eq!(c.nonce.as_deref(), Some(nonce));
    assert_eq!(res.error(), "use_dpop_nonce");
    assert_eq!(s.stats().await["logins"], 0);
    // The retry with that nonce is bound.
    let res = c.login_with(ALICE, &[]).await;
    assert_eq!(res.status, 200);
    assert!(res.headers.contains_key("dpop-nonce"));
    let t = c.tokens_of(&res);

    // A resource: first without a nonce (a client that lost it) -> 401 use_dpop_nonce, retry.
    c.nonce = None;
    let res = c.send_once("GET", "/api/me", None, &[]).await;
    assert_dpop_401(&res, "use_dpop_nonce", "resource without nonce");
    assert_eq!(c.nonce.as_deref(), res.header("dpop-nonce"));
    let lower_case = format!("dpop {}", t.access);
    let res = c
        .send_once("GET", "/api/me", None, &[("authorization", &lower_case)])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["email"], ALICE.0);

    // The other protected endpoints take the same credentials.
    c.fetch_nonce().await;
    assert_eq!(
        c.send_once("GET", "/auth/sessions", None, &[]).await.status,
        200
    );
    s.stop().await;
}

#[tokio::test]
async fn a_session_bound_to_an_ed25519_key_signs_in_refreshes_and_reads_with_eddsa_proofs() {
    let s = TestServer::start().await;
    let discovery = Client::new(&s)
        .send_once("GET", "/.well-known/oauth-authorization-server", None, &[])
        .await;
    assert_eq!(
        discovery.body["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA", "Ed25519"])
    );
    let mut c = Client::bound(&s).oneshot();
    c.key = Some(std::sync::Arc::new(ProofSigner::generate_ed25519()));
    // Bound to its thumbprint (tokens_of checks cnf.jkt), at sign-in and at each refresh.
    c.sign_in(ALICE).await;
    let res = c.refresh().await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    c.tokens_of(&res);
    c.fetch_nonce().await;
    let res = c.send_once("GET", "/api/me", None, &[]).await;
    assert_eq!(res.status, 200, "{:?}", res.body);
    // The same session with an ES256 proof: another key, refused.
    c.key = Some(std::sync::Arc::new(ProofSigner::generate()));
    c.fetch_nonce().await;
    let res = c.send_once("GET", "/api/me", None, &[]).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "another key");
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_proof_at_login_is_refused_not_ignored() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    c.fetch_nonce().await;
    for (what, p) in [
        ("wrong htu", c.proof("POST", "/auth/refresh", None).unwrap()),
        ("wrong htm", c.proof("PUT", "/auth/login", None).unwrap()),
        ("garbage", "not.a.proof".to_owned()),
    ] {
        let res = c.login_with(ALICE, &[("dpop", &p)]).await;
        assert!(res.set_cookies().is_empty(), "{what}");
        assert_dpop_401(&res, "invalid_dpop_proof", what);
    }
    assert_eq!(s.stats().await["logins"], 0);
    // Wrong password with a valid proof: the usual answer.
    let res = c.login_with((ALICE.0, "wrong-password"), &[]).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_credentials");
    s.stop().await;
}

// ---- every rule of a proof, on a resource -----------------------------------------------------

#[tokio::test]
async fn every_proof_rule_is_enforced_with_the_rfc_error() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    let key = c.key.clone().unwrap();
    let other = ProofSigner::generate();
    let t = c.sign_in(ALICE).await;
    // The proofs below are signed at `now` and sent one after the other: a second passing
    // meanwhile would let "future iat" (now + 11) through the 10 s allowance.
    s.state.clock.freeze();
    let n = c.fetch_nonce().await;
    let now = s.state.now();
    let at = Some(t.access.as_str());
    let me_url = s.url("/api/me");
    let port = s.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let other_port = me_url.replace(&format!(":{port}/"), &format!(":{}/", port ^ 1));

    let bad_signature = {
        let p = key.proof("GET", &me_url, now, at, Some(&n));
        let (signed, _) = p.rsplit_once('.').unwrap();
        let (_, other_sig) = other
            .proof("GET", &me_url, now, at, Some(&n))
            .rsplit_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        format!("{signed}.{other_sig}")
    };
    let replayed = key.proof("GET", &me_url, now, at, Some(&n));
    let first = c
        .send_once("GET", "/api/me", None, &[("dpop", &replayed)])
        .await;
    assert_eq!(first.status, 200, "the proof works once");

    let claims = |f: &dyn Fn(&mut Value)| {
        let mut c = json!({
            "jti": format!("j{}", rand_suffix()), "htm": "GET", "htu": me_url, "iat": now,
            "ath": tokenwarden_dpop::ath(&t.access), "nonce": n,
        });
        f(&mut c);
        key.sign_claims(&c)
    };
    let header = |f: &dyn Fn(&mut Value)| {
        let mut h = key.header();
        f(&mut h);
        let c = json!({
            "jti": format!("h{}", rand_suffix()), "htm": "GET", "htu": me_url, "iat": now,
            "ath": tokenwarden_dpop::ath(&t.access), "nonce": n,
        });
        key.sign_with_header(&h, &c)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("bad signature", bad_signature, "invalid_dpop_proof"),
        (
            "wrong htm",
            key.proof("POST", &me_url, now, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu path",
            key.proof("GET", &s.url("/api/other"), now, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu host",
            key.proof("GET", "http://evil.example/api/me", now, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "wrong htu port",
            key.proof("GET", &other_port, now, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "stale iat",
            key.proof("GET", &me_url, now - 61, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "future iat",
            key.proof("GET", &me_url, now + 11, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        ("replayed jti", replayed, "invalid_dpop_proof"),
        (
            "wrong ath",
            key.proof("GET", &me_url, now, Some("another-token"), Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "no ath",
            key.proof("GET", &me_url, now, None, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "other key",
            other.proof("GET", &me_url, now, at, Some(&n)),
            "invalid_dpop_proof",
        ),
        (
            "missing nonce",
            key.proof("GET", &me_url, now, at, None),
            "use_dpop_nonce",
        ),
        (
            "unknown nonce",
            key.proof("GET", &me_url, now, at, Some("AAAA")),
            "use_dpop_nonce",
        ),
        (
            "alg none",
            header(&|h| h["alg"] = json!("none")),
            "invalid_dpop_proof",
        ),
        (
            "alg HS256",
            header(&|h| h["alg"] = json!("HS256")),
            "invalid_dpop_proof",
        ),
        (
            "typ JWT",
            header(&|h| h["typ"] = json!("JWT")),
            "invalid_dpop_proof",
        ),
        (
            "private jwk",
            header(&|h| h["jwk"]["d"] = json!("AAAA")),
            "invalid_dpop_proof",
        ),
        (
            "no jti",
            claims(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            "invalid_dpop_proof",
        ),
        (
            "string iat",
            claims(&|c| c["iat"] = json!(now.to_string())),
            "invalid_dpop_proof",
        ),
        ("garbage", "x".repeat(100), "invalid_dpop_proof"),
        ("oversized", "a".repeat(5000), "invalid_dpop_proof"),
    ];
    for (what, p, code) in cases {
        let res = c.send_once("GET", "/api/me", None, &[("dpop", &p)]).await;
        assert_dpop_401(&res, code, what);
    }
    // Missing proof, and two proofs.
    let auth = format!("DPoP {}", t.access);
    let mut bare = Client::new(&s).oneshot();
    let res = bare
        .send_once("GET", "/api/me", None, &[("authorization", &auth)])
        .await;
    assert_dpop_401(&res, "invalid_dpop_proof", "no proof");
    let a = key.proof("GET", &me_url, now, at, Some(&n));
    let b = key.proof("GET", &me_url, now, at, Some(&n));
    let res = c
        .send_once("GET", "/api/me", None, &[("dpop", &a), ("dpop", &b)])
        .await;
    assert_dpop_401(&res, "invalid_dpop_proof", "two proofs");

    // An expired nonce: the server's clock moves 61 s (the token is still valid, the proof's
    // iat is fresh): only the nonce is wrong.
    s.state.clock.advance(61);
    let p = key.proof("GET", &me_url, s.state.now(), at, Some(&n));
    let res = c.send_once("GET", "/api/me", None, &[("dpop", &p)]).await;
    let renewed = res.header("dpop-nonce").unwrap();
    assert_ne!(renewed, n);
    assert_dpop_401(&res, "use_dpop_nonce", "expired nonce");
    // None of this harmed the session: the rightful client goes on.
    assert_eq!(c.get("/api/me").await.status, 200);
    s.stop().await;
}

fn rand_suffix() -> String {
    let p = ProofSigner::generate();
    p.thumbprint()[..12].to_owned()
}

// ---- stolen tokens --------------------------------------------------------------------------

#[tokio::test]
async fn a_stolen_bound_access_token_is_useless_without_the_key() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    let key = c.key.clone().unwrap();
    let t = c.sign_in(ALICE).await;
    let n = c.fetch_nonce().await;

    // As Bearer.
    let mut thief = Client::new(&s).oneshot();
    let res = thief.me(&t.access).await;
    assert_eq!(res.status, 401);
    let challenge = res.challenges();
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(res.error(), "invalid_token");
    // With a proof from the thief's own key (right nonce, right ath, right htu).
    thief.key = Some(Arc::new(ProofSigner::generate()));
    thief.nonce = Some(n.clone());
    let res = thief.send_once("GET", "/api/me", None, &[]).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "thief's key");
    // A proof captured from the page, replayed.
    let captured = key.proof(
        "GET",
        &s.url("/api/me"),
        s.state.now(),
        Some(&t.access),
        Some(&n),
    );
    let ok = c
        .send_once("GET", "/api/me", None, &[("dpop", &captured)])
        .await;
    assert_eq!(ok.status, 200);
    let res = thief
        .send_once("GET", "/api/me", None, &[("dpop", &captured)])
        .await;
    assert_dpop_401(&res, "invalid_dpop_proof", "captured proof");
    // Proofs pre-signed in the page for later (with the page's key and nonce), used 65 s on.
    let later = s.state.now() + 65;
    let presigned_future = key.proof("GET", &s.url("/api/me"), later, Some(&t.access), Some(&n));
    let presigned_now = key.proof(
        "GET",
        &s.url("/api/me"),
        s.state.now(),
        Some(&t.access),
        Some(&n),
    );
    s.state.clock.advance(65);
    for (what, p) in [
        ("iat at use", presigned_future),
        ("iat at signing", presigned_now),
    ] {
        let res = c.send_once("GET", "/api/me", None, &[("dpop", &p)]).await;
        assert_eq!(res.status, 401, "{what}");
        let code = res.error();
        assert!(
            code == "use_dpop_nonce" || code == "invalid_dpop_proof",
            "{what}: {code}"
        );
    }
    // The rightful client is fine.
    assert_eq!(c.get("/api/me").await.status, 200);
    s.stop().await;
}

// ---- refresh and logout of a bound session ---------------------------------------------------

#[tokio::test]
async fn a_bound_refresh_without_the_right_proof_rotates_nothing_and_revokes_nothing() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    let key = c.key.clone().unwrap();
    let thief = ProofSigner::generate();
    let t = c.sign_in(ALICE).await;
    let n = c.fetch_nonce().await;

    let refresh_url = s.url("/auth/refresh");
    let attempts: Vec<(&str, Option<String>)> = vec![
        ("no proof", None),
        (
            "thief's key",
            Some(thief.proof("POST", &refresh_url, s.state.now(), None, Some(&n))),
        ),
        (
            "wrong htu",
            Some(key.proof("POST", &s.url("/auth/login"), s.state.now(), None, Some(&n))),
        ),
        (
            "stale",
            Some(key.proof("POST", &refresh_url, s.state.now() - 61, None, Some(&n))),
        ),
    ];
    // The cookie, without the key.
    let mut stolen = Client::new(&s).oneshot().holding(&t);
    for (what, p) in attempts {
        let extra: Vec<_> = p.iter().map(|p| ("dpop", p.as_str())).collect();
        let res = stolen
            .send_once("POST", "/auth/refresh", None, &extra)
            .await;
        assert!(res.set_cookies().is_empty(), "{what}: no cookie change");
        assert_dpop_401(&res, "invalid_dpop_proof", what);
    }
    // A missing nonce at the token endpoint: the RFC's 400.
    c.nonce = None;
    let res = c.send_once("POST", "/auth/refresh", None, &[]).await;
    assert_eq!(res.status, 400);
    assert!(res.headers.contains_key("dpop-nonce"));
    assert_eq!(res.error(), "use_dpop_nonce");
    let stats = s.stats().await;
    assert_eq!(stats["refresh_rotated"], 0);
    assert_eq!(stats["revocations"], 0);
    // The session lives: the rightful refresh rotates and stays bound.
    let t1 = c.rotate(&t.refresh).await;
    assert_eq!(c.me(&t1.access).await.status, 200);
    let t2 = c.rotate(&t1.refresh).await;

    // A thief holding the first (now superseded) cookie but not the key cannot even trip
    // reuse detection, which would log the user out.
    let res = stolen.present(&t.refresh).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "old cookie");
    assert_eq!(s.stats().await["reuse_detections"], 0);
    assert_eq!(c.me(&t2.access).await.status, 200);
    s.stop().await;
}

/// Tabs without a shared lock share one cookie jar, which keeps the `Set-Cookie` that arrived
/// last: a slow answer can put a sibling back after the other sibling was used. With the key's
/// proof that is the browser itself, and the session lives; the same story with Bearer tokens
/// is reuse (protocol.rs, `a_sibling_presented_after_another_claimed_the_generation_is_reuse`),
/// since there a copied cookie is all a thief needs.
#[tokio::test]
async fn a_late_sibling_from_the_browsers_own_jar_is_accepted_in_a_bound_session() {
    let s = TestServer::start().await;
    s.state.clock.freeze();
    let mut c = Client::bound(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    // Tabs A and B refresh with the same cookie: two children of generation 1.
    let a = c.rotate(&t.refresh).await;
    let b = c.rotate(&t.refresh).await;
    // A's child lands in the jar first and is used...
    let a2 = c.rotate(&a.refresh).await;
    // ...then B's slow answer overwrites the jar, and the next refresh presents it.
    let res = c.present(&b.refresh).await;
    assert_eq!(res.status, 200, "a late sibling of a bound session");
    let b2 = c.tokens_of(&res);
    assert_eq!(c.me(&b2.access).await.status, 200);
    // Whichever cookie the jar ends with works on.
    assert_eq!(c.present(&a2.refresh).await.status, 200);
    assert_eq!(c.present(&b2.refresh).await.status, 200);
    let stats = s.stats().await;
    assert_eq!(stats["reuse_detections"], 0);
    assert_eq!(stats["refresh_rotated"], 6);

    // Without the key's proof it is refused before any rule, and revokes nothing.
    let res = Client::new(&s).oneshot().present(&b.refresh).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "late sibling without a proof");
    assert_eq!(s.stats().await["reuse_detections"], 0);

    // The usual case: the jar presents the late sibling at the next expiry, minutes later.
    let c1 = c.rotate(&b2.refresh).await;
    let d = c.rotate(&b2.refresh).await;
    assert_eq!(c.present(&c1.refresh).await.status, 200);
    s.state.clock.advance(600);
    let res = c.present(&d.refresh).await;
    assert_eq!(res.status, 200, "a late sibling ten minutes on");
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.stop().await;
}

#[tokio::test]
async fn a_bound_logout_needs_the_key_and_then_ends_everything() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let n = c.fetch_nonce().await;
    let thief_key = Arc::new(ProofSigner::generate());
    // What a thief may send: the token, the cookie, a proof by a key of its own.
    let thief = |token: bool, cookie: bool, key: bool| {
        let mut thief = Client::new(&s).oneshot();
        thief.access = Some(t.access.clone()).filter(|_| token);
        thief.refresh = Some(t.refresh.clone()).filter(|_| cookie);
        thief.key = Some(thief_key.clone()).filter(|_| key);
        thief.nonce = Some(n.clone());
        thief
    };
    let cases = [
        ("cookie, no proof", thief(false, true, false)),
        ("token as Bearer", thief(true, false, false)),
        ("token, thief's proof", thief(true, false, true)),
        ("cookie, thief's proof", thief(false, true, true)),
    ];
    for (what, mut thief) in cases {
        let res = thief.send_once("POST", "/auth/logout", None, &[]).await;
        assert!(res.set_cookies().is_empty(), "{what}");
        assert_dpop_401(&res, "invalid_dpop_proof", what);
    }
    assert_eq!(s.stats().await["revocations"], 0);
    assert_eq!(c.me(&t.access).await.status, 200);

    // The rightful logout: token and cookie, proof with ath.
    assert_eq!(
        (c.access.as_ref(), c.refresh.as_ref()),
        (Some(&t.access), Some(&t.refresh))
    );
    let res = c.send_once("POST", "/auth/logout", None, &[]).await;
    assert_eq!(res.status, 204);
    assert_eq!(s.stats().await["logouts"], 1);
    let res = c.present(&t.refresh).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_grant");
    let res = c.me(&t.access).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_token");
    s.stop().await;
}

// ---- unbound sessions and --dpop required ------------------------------------------------------

#[tokio::test]
async fn unbound_sessions_keep_working_as_bearer() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    let t = c.sign_in(ALICE).await; // no proof: token_type Bearer (checked by tokens_of)
    let (_, claims) = jwt_parts(&t.access);
    assert!(claims.get("cnf").is_none());
    assert_eq!(c.me(&t.access).await.status, 200);
    // A DPoP header beside a Bearer token changes nothing; a refresh with a proof stays Bearer.
    let mut signer = Client::bound(&s).oneshot();
    signer.fetch_nonce().await;
    let p = signer.proof("GET", "/api/me", Some(&t.access)).unwrap();
    let res = c.send_once("GET", "/api/me", None, &[("dpop", &p)]).await;
    assert_eq!(res.status, 200);
    let p = signer.proof("POST", "/auth/refresh", None).unwrap();
    let res = c
        .send_once("POST", "/auth/refresh", None, &[("dpop", &p)])
        .await;
    let t1 = c.tokens_of(&res);
    // An unbound token cannot be passed off as a DPoP one.
    signer.access = Some(t1.access.clone());
    let res = signer.send_once("GET", "/api/me", None, &[]).await;
    assert_dpop_401(&res, "invalid_token", "unbound token as DPoP");
    // No credentials at all: both challenges.
    let res = Client::new(&s).oneshot().get("/api/me").await;
    assert_eq!(
        res.challenges(),
        r#"Bearer realm="tokenwarden" | DPoP realm="tokenwarden", algs="ES256 EdDSA Ed25519""#
    );
    s.stop().await;
}

#[tokio::test]
async fn dpop_required_refuses_bearer_sessions_old_and_new() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tw.db").display());
    // A Bearer session from before the switch.
    let s = TestServer::on(&url, |_| {}).await;
    let mut before = Client::new(&s).oneshot();
    let old = before.sign_in(ALICE).await;
    let nonce_before = before.fetch_nonce().await;
    s.stop().await;

    let s = TestServer::on(&url, |c| c.dpop_required = true).await;
    // One instance keeps its replay cache in memory: a nonce handed out before the restart is
    // refused, with a fresh one to retry with.
    let mut c = Client::bound(&s).oneshot();
    c.nonce = Some(nonce_before);
    let res = c.login_with(BOB, &[]).await;
    assert_eq!(res.status, 400);
    let nonce_after = res.header("dpop-nonce").unwrap();
    assert_eq!(c.nonce.as_deref(), Some(nonce_after));
    assert_eq!(res.error(), "use_dpop_nonce");
    assert_eq!(c.login_with(BOB, &[]).await.status, 200);
    let mut bearer = Client::new(&s).oneshot();
    let res = bearer.login(ALICE).await;
    assert!(res.set_cookies().is_empty());
    assert_dpop_401(&res, "invalid_dpop_proof", "login without proof");
    let res = bearer.me(&old.access).await;
    assert_dpop_401(&res, "invalid_token", "old Bearer token");
    let res = bearer.present(&old.refresh).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.error(), "invalid_grant");
    // Bound sessions work.
    let mut bound = Client::bound(&s).oneshot();
    bound.sign_in(ALICE).await;
    assert_eq!(bound.get("/api/me").await.status, 200);
    s.stop().await;
}

// ---- headers and CORS ----------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_the_nonce_and_cors_lets_the_client_use_it() {
    let s = TestServer::start().await;
    let mut c = Client::new(&s).oneshot();
    for path in ["/healthz", "/api/me", "/nothing", "/.well-known/jwks.json"] {
        let res = c.get(path).await;
        assert!(res.headers.contains_key("dpop-nonce"), "{path}");
        // The server's time, which a client with a wrong clock stamps its proofs with.
        assert!(res.headers.contains_key("date"), "{path}");
    }
    let preflight = [
        ("origin", "http://app.test:3000"),
        ("access-control-request-method", "GET"),
        ("access-control-request-headers", "authorization, dpop"),
    ];
    let res = c.send_once("OPTIONS", "/api/me", None, &preflight).await;
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("dpop"), "{allowed}");
    let res = c
        .send_once(
            "GET",
            "/healthz",
            None,
            &[("origin", "http://app.test:3000")],
        )
        .await;
    let exposed = res
        .header("access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for h in ["dpop-nonce", "www-authenticate", "date"] {
        assert!(exposed.contains(h), "{h} not in {exposed}");
    }
    s.stop().await;
}

// ---- another service verifying tokenwarden tokens with the library ----------------------------

#[tokio::test]
async fn a_separate_resource_server_verifies_bound_tokens_with_the_jwks_and_the_shared_secret() {
    use axum::Router;
    use axum::routing::get;
    use tokenwarden_dpop::access::Audience;
    use tokenwarden_dpop::resource::{Authenticated, ResourceServer, add_nonce};

    let secret = "a shared nonce secret of 32+ chars!";
    let s = TestServer::with(|c| c.dpop_nonce_secret = Some(secret.into())).await;
    let mut c = Client::bound(&s).oneshot();
    let jwks = c.get("/.well-known/jwks.json").await.text();
    let rs = Arc::new(
        ResourceServer::new(
            Audience {
                issuer: "tokenwarden".into(),
                audience: "tokenwarden-api".into(),
                leeway_secs: 5,
            },
            secret.as_bytes(),
            &jwks,
        )
        .unwrap()
        // Built just now, it would refuse the auth server's nonce of this window (issued
        // before it started) once, as after any restart; this test is about the shared secret.
        .refuse_nonces_before_ms(0),
    );
    let app = Router::new()
        .route(
            "/orders",
            get(|Authenticated(t): Authenticated| async move { t.sub }),
        )
        .layer(axum::middleware::map_response_with_state(
            rs.clone(),
            add_nonce,
        ))
        .with_state(rs);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let key = c.key.clone().unwrap();
    let t = c.sign_in(ALICE).await;
    // The auth server's nonce works at the other service (same secret, same window).
    let n = c.fetch_nonce().await;
    let now = s.state.now();
    let orders = format!("{api}/orders");
    // The other service, over its own socket.
    let mut shop = Client::to(&api);
    let mut call = async |auth: String, p: Option<String>| {
        let mut extra = vec![("authorization", auth.as_str())];
        extra.extend(p.as_deref().map(|p| ("dpop", p)));
        shop.send_once("GET", "/orders", None, &extra).await
    };
    let ok = call(
        format!("DPoP {}", t.access),
        Some(key.proof("GET", &orders, now, Some(&t.access), Some(&n))),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert!(ok.headers.contains_key("dpop-nonce"));
    let (_, claims) = jwt_parts(&t.access);
    assert_eq!(ok.text(), claims["sub"].as_str().unwrap());
    // Bearer, another key, a proof for the auth server's URL, no nonce.
    let thief = ProofSigner::generate();
    let cases = [
        (
            "bearer",
            format!("Bearer {}", t.access),
            None,
            "invalid_token",
        ),
        (
            "other key",
            format!("DPoP {}", t.access),
            Some(thief.proof("GET", &orders, now, Some(&t.access), Some(&n))),
            "invalid_dpop_proof",
        ),
        (
            "auth server's htu",
            format!("DPoP {}", t.access),
            Some(key.proof("GET", &s.url("/orders"), now, Some(&t.access), Some(&n))),
            "invalid_dpop_proof",
        ),
        (
            "no nonce",
            format!("DPoP {}", t.access),
            Some(key.proof("GET", &orders, now, Some(&t.access), None)),
            "use_dpop_nonce",
        ),
    ];
    for (what, auth, p, code) in cases {
        let res = call(auth, p).await;
        assert_eq!(res.status, 401, "{what}");
        assert!(
            res.challenges().contains(&format!(r#"error="{code}""#)),
            "{what}"
        );
        assert_eq!(res.error(), code, "{what}");
    }
    // Unbound tokens are refused there by default, as by the Node verifier (`allowBearer:
    // false`): they accepted them, whoever had copied one.
    let plain = Client::new(&s).oneshot().sign_in(BOB).await;
    let res = call(format!("Bearer {}", plain.access), None).await;
    assert_eq!((res.status, res.error()), (401, "invalid_token"));
    server.abort();
    s.stop().await;
}

/// The session swap: a script that can sign with a page's stored (non-extractable) key logs
/// into its own account with that key and hands the session to the page's tabs, which sign
/// with it. Each login must bring a key no session was ever bound to.
#[tokio::test]
async fn a_login_with_a_key_already_bound_to_a_session_is_refused() {
    let s = TestServer::start().await;
    let mut victim = Client::bound(&s).oneshot();
    victim.sign_in(ALICE).await;
    // The attacker's own account, the victim's key.
    let mut attacker = Client::new(&s).oneshot();
    attacker.key = victim.key.clone();
    attacker.fetch_nonce().await;
    let res = attacker.login_with(BOB, &[]).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "a key already bound");
    // The same key for the same account again: refused too (a client makes a new key per login).
    attacker.fetch_nonce().await;
    let res = attacker.login_with(ALICE, &[]).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "a key already bound");
    // The victim's session is untouched, and a new key logs in.
    assert_eq!(victim.get("/api/me").await.status, 200);
    let mut fresh = Client::bound(&s).oneshot();
    fresh.fetch_nonce().await;
    assert_eq!(fresh.login_with(BOB, &[]).await.status, 200);
}

/// Without `--public-origin` the request's `Host` names the origin only for a loopback host:
/// a proof made for another server (the same token sent to a second API) does not pass here
/// by naming that server in `Host`.
#[tokio::test]
async fn without_a_public_origin_only_a_loopback_host_names_the_htu() {
    let s = TestServer::start().await;
    let mut c = Client::bound(&s).oneshot();
    let t = c.sign_in(ALICE).await;
    let n = c.fetch_nonce().await;
    let elsewhere = "https://api.partner.example/api/me";
    let key = c.key.clone().unwrap();
    let p = key.proof("GET", elsewhere, s.state.now(), Some(&t.access), Some(&n));
    let partner = [("dpop", p.as_str()), ("host", "api.partner.example")];
    let res = c.send_once("GET", "/api/me", None, &partner).await;
    assert_dpop_401(&res, "invalid_dpop_proof", "a partner's proof");
    // The loopback host the test talks to works.
    assert_eq!(c.get("/api/me").await.status, 200);
}

// ---- attacks on the binding, raced and across a restart ------------------------------------

/// The swap attack of "One key per login" (docs/PROTOCOL.md), raced: sign-ins to two accounts
/// with one key at the same moment. When the key was checked unused by one statement and bound
/// by another, about one trial in fifteen opened both, and a script in the page could hand the
/// victim's tabs a session of its own account. The session and its binding are now one insert
/// into a unique column.
#[tokio::test]
async fn concurrent_sign_ins_with_one_key_open_one_session_at_most() {
    let s = TestServer::start().await;
    let mut opened = 0;
    for trial in 0..60 {
        let mut alice = Client::bound(&s).oneshot();
        let mut mallory = Client::new(&s).oneshot();
        mallory.key = alice.key.clone();
        alice.fetch_nonce().await;
        mallory.nonce = alice.nonce.clone();
        let (a, m) = tokio::join!(alice.login(ALICE), mallory.login(BOB));
        let both = [&a, &m];
        let won = both.iter().filter(|r| r.status == 200).count();
        assert!(
            won <= 1,
            "trial {trial}: one key opened two sessions ({} and {})",
            a.status,
            m.status
        );
        for lost in both.iter().filter(|r| r.status != 200) {
            assert_eq!(lost.status, 401, "trial {trial}: {:?}", lost.body);
            assert_eq!(lost.error(), "invalid_dpop_proof", "trial {trial}");
        }
        opened += won;
    }
    assert!(opened > 0, "the sign-ins themselves work");
    s.stop().await;
}

/// A proof captured in flight and replayed after the server restarted, within the proof's
/// minute. On one instance the replay cache lives in memory: it used to come back empty while
/// the nonce in the proof was still current, and the replay was accepted. Nonces issued before
/// a restart are now refused (a fleet keeps its proofs in the shared database).
#[tokio::test]
async fn a_proof_replayed_across_a_restart_is_refused() {
    let (url, _dir) = TestServer::durable_database().await;
    let s = TestServer::on(&url, |_| {}).await;
    let mut c = Client::bound(&s);
    assert_eq!(c.login(ALICE).await.status, 200);
    let token = c.access.clone().unwrap();
    c.fetch_nonce().await;
    let proof = c.proof("GET", "/api/me", Some(&token)).unwrap();
    let captured = [("dpop", proof.as_str())];
    let res = c.send_once("GET", "/api/me", None, &captured).await;
    assert_eq!(res.status, 200, "the original");
    let res = c.send_once("GET", "/api/me", None, &captured).await;
    assert_eq!(res.status, 401, "replayed to the same server");
    let base = s.base.clone();
    s.stop().await;

    let s = TestServer::on(&url, |_| {}).await;
    assert_ne!(s.base, base, "a new server on the same database");
    // The proof names the old origin: sent to the new one it must fail on htu anyway, so
    // replay it as the new origin would receive it from a proxy keeping the Host.
    let authorization = format!("DPoP {token}");
    let replay = [
        ("host", base.trim_start_matches("http://")),
        ("authorization", &authorization),
        ("dpop", &proof),
    ];
    let res = Client::new(&s)
        .send_once("GET", "/api/me", None, &replay)
        .await;
    assert_eq!(res.status, 401, "replayed after the restart");
    let challenge = res.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("use_dpop_nonce") || challenge.contains("already used"),
        "{challenge}"
    );
    // The client itself goes on at once: one nonce retry, as after any restart.
    let mut c2 = Client::bound(&s);
    assert_eq!(c2.login(BOB).await.status, 200);
    assert_eq!(c2.get("/api/me").await.status, 200);
    s.stop().await;
}

/// A sign-in's proof needs no session: anyone with enough addresses could send proofs by fresh
/// keys, with wrong passwords, until the replay cache every session's refreshes and requests
/// are checked against was full, and have them all refused. Sign-ins have a cache of their own.
#[tokio::test]
async fn sign_in_proofs_cannot_fill_the_replay_cache_that_sessions_use() {
    let s = TestServer::with(|c| {
        c.dpop_replay_capacity = Some(64);
        c.proxies.trusted = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut tab = Client::bound(&s).oneshot();
    tab.sign_in(ALICE).await;
    let mut full = 0;
    for i in 0..80 {
        let mut stranger = Client::bound(&s)
            .oneshot()
            .at(&format!("2001:db8:{i:x}::1"));
        let res = stranger
            .login((&format!("nobody{i}@example.com"), "wrong password"))
            .await;
        assert_ne!(res.status, 200);
        full += usize::from(res.body.to_string().contains("replay cache is full"));
    }
    // The strangers' proofs did fill the sign-ins' cache (80 proofs, room for 64): later
    // sign-ins are refused.
    assert!(
        full > 0,
        "the sign-in cache never filled: the test tests nothing"
    );
    let refreshed = tab.refresh().await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    for _ in 0..3 {
        assert_eq!(tab.get("/api/me").await.status, 200);
    }
    s.stop().await;
}
