//! DPoP (docs/PROTOCOL.md, "DPoP: sender-constrained sessions") over real HTTP against real
//! SQLite: every proof rule, bound refresh and logout, stolen tokens, the nonce flow.

mod common;

use std::sync::Arc;

use common::*;
use reqwest::{RequestBuilder, Response};
use serde_json::{Value, json};
use tokenwarden_dpop::ProofSigner;

/// The `DPoP-Nonce` of a response of the server (any response carries one).
async fn fresh_nonce(s: &TestServer) -> String {
    let res = s.http.get(s.url("/healthz")).send().await.unwrap();
    nonce_of(&res)
}

fn nonce_of(res: &Response) -> String {
    res.headers()["dpop-nonce"].to_str().unwrap().to_owned()
}

/// Every `WWW-Authenticate` value, joined.
fn challenges(res: &Response) -> String {
    res.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// A proof by `key` for `method path`, stamped with the server's clock.
fn proof(
    s: &TestServer,
    key: &ProofSigner,
    method: &str,
    path: &str,
    token: Option<&str>,
    nonce: Option<&str>,
) -> String {
    key.proof(method, &s.url(path), s.state.now(), token, nonce)
}

async fn login_with(s: &TestServer, who: (&str, &str), dpop: Option<String>) -> Response {
    let mut req = s
        .http
        .post(s.url("/auth/login"))
        .json(&json!({ "email": who.0, "password": who.1 }));
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    req.send().await.unwrap()
}

/// A login bound to `key`: the access token and the refresh cookie.
async fn login_bound(s: &TestServer, key: &ProofSigner) -> Tokens {
    let n = fresh_nonce(s).await;
    let res = login_with(
        s,
        ALICE,
        Some(proof(s, key, "POST", "/auth/login", None, Some(&n))),
    )
    .await;
    assert_eq!(res.status(), 200);
    bound_tokens_of(res, key).await
}

async fn bound_tokens_of(res: Response, key: &ProofSigner) -> Tokens {
    let refresh = cookie(res.headers(), REFRESH_COOKIE).expect("refresh cookie");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let (_, claims) = jwt_parts(&access);
    assert_eq!(claims["cnf"]["jkt"], key.thumbprint());
    Tokens { access, refresh }
}

fn get_me(s: &TestServer, authorization: &str, dpop: Option<&str>) -> RequestBuilder {
    let mut req = s
        .http
        .get(s.url("/api/me"))
        .header("authorization", authorization);
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    req
}

/// `GET /api/me` as the rightful client: a fresh proof with the current nonce.
async fn me_dpop(s: &TestServer, key: &ProofSigner, access: &str) -> Response {
    let n = fresh_nonce(s).await;
    let p = proof(s, key, "GET", "/api/me", Some(access), Some(&n));
    get_me(s, &format!("DPoP {access}"), Some(&p))
        .send()
        .await
        .unwrap()
}

fn refresh_req(s: &TestServer, refresh: &str, dpop: Option<&str>) -> RequestBuilder {
    let mut req = s
        .http
        .post(s.url("/auth/refresh"))
        .header("x-tokenwarden", "1")
        .header("cookie", format!("{REFRESH_COOKIE}={refresh}"));
    if let Some(p) = dpop {
        req = req.header("dpop", p);
    }
    req
}

async fn refresh_dpop(s: &TestServer, key: &ProofSigner, refresh: &str) -> Response {
    let n = fresh_nonce(s).await;
    let p = proof(s, key, "POST", "/auth/refresh", None, Some(&n));
    refresh_req(s, refresh, Some(&p)).send().await.unwrap()
}

/// A 401 with `code` in the body and in a `DPoP` challenge.
async fn assert_dpop_401(res: Response, code: &str, what: &str) {
    assert_eq!(res.status(), 401, "{what}");
    let c = challenges(&res);
    assert!(
        c.contains(&format!(
            r#"DPoP realm="tokenwarden", algs="ES256", error="{code}""#
        )),
        "{what}: {c}"
    );
    assert!(res.headers().contains_key("dpop-nonce"), "{what}");
    assert_eq!(error_code(res).await, code, "{what}");
}

// ---- the nonce flow and binding -----------------------------------------------------------

#[tokio::test]
async fn a_login_with_a_proof_binds_the_session_after_one_nonce_retry() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    // First contact: no nonce yet -> 400 use_dpop_nonce with the nonce; no session, no failure.
    let res = login_with(
        &s,
        ALICE,
        Some(proof(&s, &key, "POST", "/auth/login", None, None)),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(set_cookies(res.headers()).is_empty());
    let nonce = nonce_of(&res);
    assert_eq!(nonce.len(), 43);
    assert_eq!(error_code(res).await, "use_dpop_nonce");
    assert_eq!(s.stats().await["logins"], 0);
    // The retry with that nonce is bound.
    let res = login_with(
        &s,
        ALICE,
        Some(proof(&s, &key, "POST", "/auth/login", None, Some(&nonce))),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("dpop-nonce"));
    let t = bound_tokens_of(res, &key).await;

    // A resource: first without a nonce (a client that lost it) -> 401 use_dpop_nonce, retry.
    let p = proof(&s, &key, "GET", "/api/me", Some(&t.access), None);
    let res = get_me(&s, &format!("DPoP {}", t.access), Some(&p))
        .send()
        .await
        .unwrap();
    let nonce = nonce_of(&res);
    assert_dpop_401(res, "use_dpop_nonce", "resource without nonce").await;
    let p = proof(&s, &key, "GET", "/api/me", Some(&t.access), Some(&nonce));
    let res = get_me(&s, &format!("dpop {}", t.access), Some(&p))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["email"], ALICE.0);

    // The other protected endpoints take the same credentials.
    let n = fresh_nonce(&s).await;
    let p = proof(&s, &key, "GET", "/auth/sessions", Some(&t.access), Some(&n));
    let res = s
        .http
        .get(s.url("/auth/sessions"))
        .header("authorization", format!("DPoP {}", t.access))
        .header("dpop", p)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_proof_at_login_is_refused_not_ignored() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let n = fresh_nonce(&s).await;
    for (what, p) in [
        (
            "wrong htu",
            proof(&s, &key, "POST", "/auth/refresh", None, Some(&n)),
        ),
        (
            "wrong htm",
            proof(&s, &key, "PUT", "/auth/login", None, Some(&n)),
        ),
        ("garbage", "not.a.proof".to_owned()),
    ] {
        let res = login_with(&s, ALICE, Some(p)).await;
        assert!(set_cookies(res.headers()).is_empty(), "{what}");
        assert_dpop_401(res, "invalid_dpop_proof", what).await;
    }
    assert_eq!(s.stats().await["logins"], 0);
    // Wrong password with a valid proof: the usual answer.
    let res = login_with(
        &s,
        (ALICE.0, "wrong-password"),
        Some(proof(&s, &key, "POST", "/auth/login", None, Some(&n))),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_credentials");
    s.stop().await;
}

// ---- every rule of a proof, on a resource -----------------------------------------------------

#[tokio::test]
async fn every_proof_rule_is_enforced_with_the_rfc_error() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let other = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    // The proofs below are signed at `now` and sent one after the other: a second passing
    // meanwhile would let "future iat" (now + 11) through the 10 s allowance.
    s.state.clock.freeze();
    let n = fresh_nonce(&s).await;
    let now = s.state.now();
    let auth = format!("DPoP {}", t.access);
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
    let first = get_me(&s, &auth, Some(&replayed)).send().await.unwrap();
    assert_eq!(first.status(), 200, "the proof works once");

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
            proof(&s, &key, "GET", "/api/other", at, Some(&n)),
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
        let res = get_me(&s, &auth, Some(&p)).send().await.unwrap();
        assert_dpop_401(res, code, what).await;
    }
    // Missing proof, and two proofs.
    let res = get_me(&s, &auth, None).send().await.unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "no proof").await;
    let a = key.proof("GET", &me_url, now, at, Some(&n));
    let b = key.proof("GET", &me_url, now, at, Some(&n));
    let res = get_me(&s, &auth, Some(&a))
        .header("dpop", b)
        .send()
        .await
        .unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "two proofs").await;

    // An expired nonce: the server's clock moves 61 s (the token is still valid, the proof's
    // iat is fresh): only the nonce is wrong.
    s.state.clock.advance(61);
    let p = proof(&s, &key, "GET", "/api/me", at, Some(&n));
    let res = get_me(&s, &auth, Some(&p)).send().await.unwrap();
    let renewed = nonce_of(&res);
    assert_ne!(renewed, n);
    assert_dpop_401(res, "use_dpop_nonce", "expired nonce").await;
    // None of this harmed the session: the rightful client goes on.
    assert_eq!(me_dpop(&s, &key, &t.access).await.status(), 200);
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
    let key = ProofSigner::generate();
    let thief = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    let n = fresh_nonce(&s).await;

    // As Bearer.
    let res = s.me(&t.access).await;
    assert_eq!(res.status(), 401);
    let c = challenges(&res);
    assert!(c.starts_with("DPoP "), "{c}");
    assert!(c.contains(r#"error="invalid_token""#), "{c}");
    assert_eq!(error_code(res).await, "invalid_token");
    // With a proof from the thief's own key (right nonce, right ath, right htu).
    let p = proof(&s, &thief, "GET", "/api/me", Some(&t.access), Some(&n));
    let res = get_me(&s, &format!("DPoP {}", t.access), Some(&p))
        .send()
        .await
        .unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "thief's key").await;
    // A proof captured from the page, replayed.
    let captured = proof(&s, &key, "GET", "/api/me", Some(&t.access), Some(&n));
    let ok = get_me(&s, &format!("DPoP {}", t.access), Some(&captured))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let res = get_me(&s, &format!("DPoP {}", t.access), Some(&captured))
        .send()
        .await
        .unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "captured proof").await;
    // Proofs pre-signed in the page for later (with the page's key and nonce), used 65 s on.
    let later = s.state.now() + 65;
    let presigned_future = key.proof("GET", &s.url("/api/me"), later, Some(&t.access), Some(&n));
    let presigned_now = proof(&s, &key, "GET", "/api/me", Some(&t.access), Some(&n));
    s.state.clock.advance(65);
    for (what, p) in [
        ("iat at use", presigned_future),
        ("iat at signing", presigned_now),
    ] {
        let res = get_me(&s, &format!("DPoP {}", t.access), Some(&p))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{what}");
        let code = error_code(res).await;
        assert!(
            code == "use_dpop_nonce" || code == "invalid_dpop_proof",
            "{what}: {code}"
        );
    }
    // The rightful client is fine.
    assert_eq!(me_dpop(&s, &key, &t.access).await.status(), 200);
    s.stop().await;
}

// ---- refresh and logout of a bound session ---------------------------------------------------

#[tokio::test]
async fn a_bound_refresh_without_the_right_proof_rotates_nothing_and_revokes_nothing() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let thief = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    let n = fresh_nonce(&s).await;

    let attempts: Vec<(&str, Option<String>)> = vec![
        ("no proof", None),
        (
            "thief's key",
            Some(proof(&s, &thief, "POST", "/auth/refresh", None, Some(&n))),
        ),
        (
            "wrong htu",
            Some(proof(&s, &key, "POST", "/auth/login", None, Some(&n))),
        ),
        (
            "stale",
            Some(key.proof(
                "POST",
                &s.url("/auth/refresh"),
                s.state.now() - 61,
                None,
                Some(&n),
            )),
        ),
    ];
    for (what, p) in attempts {
        let res = refresh_req(&s, &t.refresh, p.as_deref())
            .send()
            .await
            .unwrap();
        assert!(
            set_cookies(res.headers()).is_empty(),
            "{what}: no cookie change"
        );
        assert_dpop_401(res, "invalid_dpop_proof", what).await;
    }
    // A missing nonce at the token endpoint: the RFC's 400.
    let p = proof(&s, &key, "POST", "/auth/refresh", None, None);
    let res = refresh_req(&s, &t.refresh, Some(&p)).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().contains_key("dpop-nonce"));
    assert_eq!(error_code(res).await, "use_dpop_nonce");
    let stats = s.stats().await;
    assert_eq!(stats["refresh_rotated"], 0);
    assert_eq!(stats["revocations"], 0);
    // The session lives: the rightful refresh rotates and stays bound.
    let res = refresh_dpop(&s, &key, &t.refresh).await;
    assert_eq!(res.status(), 200);
    let t1 = bound_tokens_of(res, &key).await;
    assert_eq!(me_dpop(&s, &key, &t1.access).await.status(), 200);
    let t2 = bound_tokens_of(refresh_dpop(&s, &key, &t1.refresh).await, &key).await;

    // A thief holding the first (now superseded) cookie but not the key cannot even trip
    // reuse detection, which would log the user out.
    let res = refresh_req(&s, &t.refresh, None).send().await.unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "old cookie").await;
    assert_eq!(s.stats().await["reuse_detections"], 0);
    assert_eq!(me_dpop(&s, &key, &t2.access).await.status(), 200);
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
    let key = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    // Tabs A and B refresh with the same cookie: two children of generation 1.
    let a = bound_tokens_of(refresh_dpop(&s, &key, &t.refresh).await, &key).await;
    let b = bound_tokens_of(refresh_dpop(&s, &key, &t.refresh).await, &key).await;
    // A's child lands in the jar first and is used...
    let a2 = bound_tokens_of(refresh_dpop(&s, &key, &a.refresh).await, &key).await;
    // ...then B's slow answer overwrites the jar, and the next refresh presents it.
    let res = refresh_dpop(&s, &key, &b.refresh).await;
    assert_eq!(res.status(), 200, "a late sibling of a bound session");
    let b2 = bound_tokens_of(res, &key).await;
    assert_eq!(me_dpop(&s, &key, &b2.access).await.status(), 200);
    // Whichever cookie the jar ends with works on.
    assert_eq!(refresh_dpop(&s, &key, &a2.refresh).await.status(), 200);
    assert_eq!(refresh_dpop(&s, &key, &b2.refresh).await.status(), 200);
    let stats = s.stats().await;
    assert_eq!(stats["reuse_detections"], 0);
    assert_eq!(stats["refresh_rotated"], 6);

    // Without the key's proof it is refused before any rule, and revokes nothing.
    let res = refresh_req(&s, &b.refresh, None).send().await.unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "late sibling without a proof").await;
    assert_eq!(s.stats().await["reuse_detections"], 0);

    // The usual case: the jar presents the late sibling at the next expiry, minutes later.
    let c = bound_tokens_of(refresh_dpop(&s, &key, &b2.refresh).await, &key).await;
    let d = bound_tokens_of(refresh_dpop(&s, &key, &b2.refresh).await, &key).await;
    assert_eq!(refresh_dpop(&s, &key, &c.refresh).await.status(), 200);
    s.state.clock.advance(600);
    let res = refresh_dpop(&s, &key, &d.refresh).await;
    assert_eq!(res.status(), 200, "a late sibling ten minutes on");
    assert_eq!(s.stats().await["reuse_detections"], 0);
    s.stop().await;
}

#[tokio::test]
async fn a_bound_logout_needs_the_key_and_then_ends_everything() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let thief = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    let logout = |auth: Option<String>, cookie: bool, p: Option<String>| {
        let mut req = s
            .http
            .post(s.url("/auth/logout"))
            .header("x-tokenwarden", "1");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if cookie {
            req = req.header("cookie", format!("{REFRESH_COOKIE}={}", t.refresh));
        }
        if let Some(p) = p {
            req = req.header("dpop", p);
        }
        req.send()
    };
    let n = fresh_nonce(&s).await;
    let cases = [
        ("cookie, no proof", None, true, None),
        (
            "token as Bearer",
            Some(format!("Bearer {}", t.access)),
            false,
            None,
        ),
        (
            "token, thief's proof",
            Some(format!("DPoP {}", t.access)),
            false,
            Some(proof(
                &s,
                &thief,
                "POST",
                "/auth/logout",
                Some(&t.access),
                Some(&n),
            )),
        ),
        (
            "cookie, thief's proof",
            None,
            true,
            Some(proof(&s, &thief, "POST", "/auth/logout", None, Some(&n))),
        ),
    ];
    for (what, auth, cookie, p) in cases {
        let res = logout(auth, cookie, p).await.unwrap();
        assert!(set_cookies(res.headers()).is_empty(), "{what}");
        assert_dpop_401(res, "invalid_dpop_proof", what).await;
    }
    assert_eq!(s.stats().await["revocations"], 0);
    assert_eq!(me_dpop(&s, &key, &t.access).await.status(), 200);

    // The rightful logout: token and cookie, proof with ath.
    let p = proof(&s, &key, "POST", "/auth/logout", Some(&t.access), Some(&n));
    let res = logout(Some(format!("DPoP {}", t.access)), true, Some(p))
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(s.stats().await["logouts"], 1);
    let res = refresh_dpop(&s, &key, &t.refresh).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_grant");
    let res = me_dpop(&s, &key, &t.access).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_token");
    s.stop().await;
}

// ---- unbound sessions and --dpop required ------------------------------------------------------

#[tokio::test]
async fn unbound_sessions_keep_working_as_bearer() {
    let s = TestServer::start().await;
    let t = s.login(ALICE).await; // no proof: token_type Bearer (checked by tokens_of)
    let (_, claims) = jwt_parts(&t.access);
    assert!(claims.get("cnf").is_none());
    assert_eq!(s.me(&t.access).await.status(), 200);
    // A DPoP header beside a Bearer token changes nothing; a refresh with a proof stays Bearer.
    let key = ProofSigner::generate();
    let n = fresh_nonce(&s).await;
    let p = proof(&s, &key, "GET", "/api/me", Some(&t.access), Some(&n));
    let res = get_me(&s, &format!("Bearer {}", t.access), Some(&p))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let p = proof(&s, &key, "POST", "/auth/refresh", None, Some(&n));
    let t1 = tokens_of(refresh_req(&s, &t.refresh, Some(&p)).send().await.unwrap()).await;
    // An unbound token cannot be passed off as a DPoP one.
    let p = proof(&s, &key, "GET", "/api/me", Some(&t1.access), Some(&n));
    let res = get_me(&s, &format!("DPoP {}", t1.access), Some(&p))
        .send()
        .await
        .unwrap();
    assert_dpop_401(res, "invalid_token", "unbound token as DPoP").await;
    // No credentials at all: both challenges.
    let res = s.http.get(s.url("/api/me")).send().await.unwrap();
    assert_eq!(
        challenges(&res),
        r#"Bearer realm="tokenwarden" | DPoP realm="tokenwarden", algs="ES256""#
    );
    s.stop().await;
}

#[tokio::test]
async fn dpop_required_refuses_bearer_sessions_old_and_new() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("tw.db").display());
    // A Bearer session from before the switch.
    let s = TestServer::on(&url, |_| {}).await;
    let old = s.login(ALICE).await;
    let nonce_before = fresh_nonce(&s).await;
    s.stop().await;

    let s = TestServer::on(&url, |c| c.dpop_required = true).await;
    // One instance keeps its replay cache in memory: a nonce handed out before the restart is
    // refused, with a fresh one to retry with.
    let key = ProofSigner::generate();
    let p = proof(&s, &key, "POST", "/auth/login", None, Some(&nonce_before));
    let res = login_with(&s, BOB, Some(p)).await;
    assert_eq!(res.status(), 400);
    let nonce_after = nonce_of(&res);
    assert_eq!(error_code(res).await, "use_dpop_nonce");
    let p = proof(&s, &key, "POST", "/auth/login", None, Some(&nonce_after));
    assert_eq!(login_with(&s, BOB, Some(p)).await.status(), 200);
    let res = login_with(&s, ALICE, None).await;
    assert!(set_cookies(res.headers()).is_empty());
    assert_dpop_401(res, "invalid_dpop_proof", "login without proof").await;
    let res = s.me(&old.access).await;
    assert_dpop_401(res, "invalid_token", "old Bearer token").await;
    let res = s.refresh_response(&old.refresh).await;
    assert_eq!(res.status(), 401);
    assert_eq!(error_code(res).await, "invalid_grant");
    // Bound sessions work.
    let key = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    assert_eq!(me_dpop(&s, &key, &t.access).await.status(), 200);
    s.stop().await;
}

// ---- headers and CORS ----------------------------------------------------------------------------

#[tokio::test]
async fn every_response_carries_the_nonce_and_cors_lets_the_client_use_it() {
    let s = TestServer::start().await;
    for path in ["/healthz", "/api/me", "/nothing", "/.well-known/jwks.json"] {
        let res = s.http.get(s.url(path)).send().await.unwrap();
        assert!(res.headers().contains_key("dpop-nonce"), "{path}");
        // The server's time, which a client with a wrong clock stamps its proofs with.
        assert!(res.headers().contains_key("date"), "{path}");
    }
    let res = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/me"))
        .header("origin", "http://app.test:3000")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization, dpop")
        .send()
        .await
        .unwrap();
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("dpop"), "{allowed}");
    let res = s
        .http
        .get(s.url("/healthz"))
        .header("origin", "http://app.test:3000")
        .send()
        .await
        .unwrap();
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
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
    let jwks = s
        .http
        .get(s.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
        .unwrap(),
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

    let key = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    // The auth server's nonce works at the other service (same secret, same window).
    let n = fresh_nonce(&s).await;
    let now = s.state.now();
    let orders = format!("{api}/orders");
    let call = |auth: String, p: Option<String>| {
        let mut req = s.http.get(&orders).header("authorization", auth);
        if let Some(p) = p {
            req = req.header("dpop", p);
        }
        req.send()
    };
    let ok = call(
        format!("DPoP {}", t.access),
        Some(key.proof("GET", &orders, now, Some(&t.access), Some(&n))),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.headers().contains_key("dpop-nonce"));
    let (_, claims) = jwt_parts(&t.access);
    assert_eq!(ok.text().await.unwrap(), claims["sub"].as_str().unwrap());
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
        let res = call(auth, p).await.unwrap();
        assert_eq!(res.status(), 401, "{what}");
        assert!(
            challenges(&res).contains(&format!(r#"error="{code}""#)),
            "{what}"
        );
        assert_eq!(error_code(res).await, code, "{what}");
    }
    // Unbound tokens work there as Bearer.
    let plain = s.login(BOB).await;
    assert_eq!(
        call(format!("Bearer {}", plain.access), None)
            .await
            .unwrap()
            .status(),
        200
    );
    server.abort();
    s.stop().await;
}

/// The session swap: a script that can sign with a page's stored (non-extractable) key logs
/// into its own account with that key and hands the session to the page's tabs, which sign
/// with it. Each login must bring a key no session was ever bound to.
#[tokio::test]
async fn a_login_with_a_key_already_bound_to_a_session_is_refused() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let victim = login_bound(&s, &key).await;
    // The attacker's own account, the victim's key.
    let n = fresh_nonce(&s).await;
    let res = login_with(
        &s,
        BOB,
        Some(proof(&s, &key, "POST", "/auth/login", None, Some(&n))),
    )
    .await;
    assert_dpop_401(res, "invalid_dpop_proof", "a key already bound").await;
    // The same key for the same account again: refused too (a client makes a new key per login).
    let n = fresh_nonce(&s).await;
    let res = login_with(
        &s,
        ALICE,
        Some(proof(&s, &key, "POST", "/auth/login", None, Some(&n))),
    )
    .await;
    assert_dpop_401(res, "invalid_dpop_proof", "a key already bound").await;
    // The victim's session is untouched, and a new key logs in.
    assert_eq!(me_dpop(&s, &key, &victim.access).await.status(), 200);
    let n = fresh_nonce(&s).await;
    let fresh = ProofSigner::generate();
    let res = login_with(
        &s,
        BOB,
        Some(proof(&s, &fresh, "POST", "/auth/login", None, Some(&n))),
    )
    .await;
    assert_eq!(res.status(), 200);
}

/// Without `--public-origin` the request's `Host` names the origin only for a loopback host:
/// a proof made for another server (the same token sent to a second API) does not pass here
/// by naming that server in `Host`.
#[tokio::test]
async fn without_a_public_origin_only_a_loopback_host_names_the_htu() {
    let s = TestServer::start().await;
    let key = ProofSigner::generate();
    let t = login_bound(&s, &key).await;
    let n = fresh_nonce(&s).await;
    let elsewhere = "https://api.partner.example/api/me";
    let p = key.proof("GET", elsewhere, s.state.now(), Some(&t.access), Some(&n));
    let res = get_me(&s, &format!("DPoP {}", t.access), Some(&p))
        .header("host", "api.partner.example")
        .send()
        .await
        .unwrap();
    assert_dpop_401(res, "invalid_dpop_proof", "a partner's proof").await;
    // The loopback host the test talks to works.
    assert_eq!(me_dpop(&s, &key, &t.access).await.status(), 200);
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
    let captured = |s: &TestServer| {
        s.http
            .get(s.url("/api/me"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", proof.clone())
            .send()
    };
    assert_eq!(captured(&s).await.unwrap().status(), 200, "the original");
    assert_eq!(
        captured(&s).await.unwrap().status(),
        401,
        "replayed to the same server"
    );
    let base = s.base.clone();
    s.stop().await;

    let s = TestServer::on(&url, |_| {}).await;
    assert_ne!(s.base, base, "a new server on the same database");
    // The proof names the old origin: sent to the new one it must fail on htu anyway, so
    // replay it as the new origin would receive it from a proxy keeping the Host.
    let res = s
        .http
        .get(s.url("/api/me"))
        .header("host", base.trim_start_matches("http://"))
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", proof.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "replayed after the restart");
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
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
