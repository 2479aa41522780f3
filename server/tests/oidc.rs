//! Sign-in with an OpenID Connect provider (docs/PROTOCOL.md, "Federated sign-in"), over real
//! HTTP on SQLite or PostgreSQL (`TW_TEST_BACKEND`):
//!
//! - against a real, certified provider: panva's `oidc-provider` (tests/oidc/provider.mjs, run
//!   by Node; `npm ci` first), driven through its own login and consent forms as a browser
//!   would post them;
//! - against a hostile provider written here (the attacker of the threat model): it answers
//!   the code exchange with forged ID tokens and sends forged logout tokens, which the real
//!   provider never would.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::oidc::*;
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokenwarden_dpop::ProofSigner;

/// A server whose users may sign in with the provider at `issuer` (named `idp`).
async fn server_with(issuer: &str) -> TestServer {
    let p = provider("idp", issuer);
    TestServer::with(move |c| c.oidc = vec![p]).await
}

/// Signs in through the real provider as `login`: the browser (with the provider's session)
/// and our server's answer to the callback.
async fn sign_in(
    s: &TestServer,
    idp: &Idp,
    tab: &Client,
    login: &str,
) -> (Browser, reqwest::Response) {
    let mut b = Browser::new();
    let jkt = tab.key.as_ref().unwrap().thumbprint().to_owned();
    let res = b
        .start(s, &format!("return_to=/app%3Fx%3D1&dpop_jkt={jkt}"))
        .await;
    assert_eq!(res.status(), 302);
    let authorize = location(&res);
    assert!(
        authorize.starts_with(&format!("{}/auth?", idp.issuer)),
        "{authorize}"
    );
    assert!(
        authorize.contains("code_challenge_method=S256"),
        "{authorize}"
    );
    assert!(authorize.contains("code_challenge="), "{authorize}");
    let back = b.through_provider(authorize, &s.base, login, false).await;
    let res = b.callback(&back).await;
    (b, res)
}

#[tokio::test]
async fn a_sign_in_through_a_real_provider_opens_a_session_bound_to_the_page_key() {
    let port = free_port();
    // Trusted with addresses (link=verified-email): the account holds the provider's.
    let mut p = provider("idp", &format!("http://127.0.0.1:{port}"));
    p.link_verified_email = true;
    let s = TestServer::with(move |c| c.oidc = vec![p]).await;
    let idp = Idp::start(port, &s.base).await;
    let mut tab = Client::bound(&s);
    let (_, res) = sign_in(&s, &idp, &tab, "carol").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/app?x=1");
    let cleared = set_cookies(res.headers())
        .into_iter()
        .any(|c| c.starts_with(&format!("{FLOW_COOKIE}=;")) && c.contains("Max-Age=0"));
    assert!(cleared, "the flow cookie is cleared");
    let refresh = refresh_cookie_of(&res).expect("the refresh cookie");

    // The copied cookie alone refreshes nothing: no proof, or another key's.
    let mut thief = Client::new(&s);
    thief.refresh = Some(refresh.clone());
    assert_eq!(thief.refresh().await.status, 401);
    let mut other_key = Client::bound(&s);
    other_key.refresh = Some(refresh.clone());
    assert_eq!(other_key.refresh().await.status, 401);

    // The page's key: a bound session, as after a password sign-in.
    tab.refresh = Some(refresh);
    let a = tab.refresh().await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t = tab.tokens_of(&a);
    let me = tab.me(&t.access).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["email"], "carol@idp.test");
    assert_eq!(jwt_parts(&t.access).1["email_verified"], true);

    // The same person again: the same account (by issuer and sub).
    let mut tab2 = Client::bound(&s);
    let (_, res) = sign_in(&s, &idp, &tab2, "carol").await;
    let t2 = take_up(&mut tab2, &res).await;
    assert_eq!(
        jwt_parts(&t2.access).1["sub"],
        jwt_parts(&t.access).1["sub"]
    );
    drop(idp);
    s.stop().await;
}

#[tokio::test]
async fn the_callback_refuses_a_missing_unknown_or_other_browser_state_and_a_reused_code() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let idp = Idp::start(port, &s.base).await;
    let tab = Client::bound(&s);
    let jkt = tab.key.as_ref().unwrap().thumbprint().to_owned();
    let mut victim = Browser::new();
    let res = victim.start(&s, &format!("dpop_jkt={jkt}")).await;
    let back = victim
        .through_provider(location(&res), &s.base, "dave", false)
        .await;

    let page = |res: reqwest::Response| async move {
        assert_eq!(res.status(), 400);
        assert!(res.headers().get("location").is_none());
        assert!(refresh_cookie_of(&res).is_none());
        res.text().await.unwrap()
    };
    // No state; a state nobody issued; the victim's callback in another browser (login CSRF:
    // the attacker's own code and state planted in the victim's browser is the same case).
    let no_state = back.split("state=").next().unwrap().to_owned();
    assert!(
        page(victim.callback(&no_state).await)
            .await
            .contains("start again")
    );
    let forged = back.replace("state=", "state=x");
    page(victim.callback(&forged).await).await;
    let mut attacker = Browser::new();
    attacker.start(&s, &format!("dpop_jkt={jkt}")).await;
    page(attacker.callback(&back).await).await;

    // The victim's own browser still completes: nothing above used the flow up, and no refusal
    // cleared the flow cookie (the first two are what a page of any site can cause, by sending
    // the browser to the callback while the user is at the provider).
    let ok = victim.callback(&back).await;
    assert_eq!(ok.status(), 303);
    assert!(refresh_cookie_of(&ok).is_some());
    // Once: the same callback again has no flow.
    page(victim.callback(&back).await).await;

    // The used code with a new flow's state: the provider refuses it, nothing opens.
    let mut again = Browser::new();
    let res = again
        .start(&s, &format!("return_to=/home&dpop_jkt={jkt}"))
        .await;
    let state = reqwest::Url::parse(&location(&res))
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let code = reqwest::Url::parse(&back)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let replay = format!(
        "{}/auth/oidc/idp/callback?code={code}&state={state}&iss={}",
        s.base,
        url_escape(&idp.issuer)
    );
    let res = again.callback(&replay).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/home?tw_error=federation_failed");
    assert!(refresh_cookie_of(&res).is_none());
    s.stop().await;
}

#[tokio::test]
async fn a_user_who_declines_at_the_provider_comes_back_with_access_denied() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let idp = Idp::start(port, &s.base).await;
    let mut b = Browser::new();
    let res = b.start(&s, "return_to=/signin").await;
    let back = b
        .through_provider(location(&res), &s.base, "erin", true)
        .await;
    let res = b.callback(&back).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/signin?tw_error=access_denied");
    assert!(refresh_cookie_of(&res).is_none());
    drop(idp);
    s.stop().await;
}

#[tokio::test]
async fn return_to_must_be_a_path_of_this_site_and_another_site_cannot_start_a_sign_in() {
    let s = server_with("http://127.0.0.1:9").await;
    let mut b = Browser::new();
    for bad in [
        "//evil.example/",
        "https://evil.example/",
        "/%5Cevil.example",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
        "/ok%23fragment",
        "evil",
    ] {
        let res = b.start(&s, &format!("return_to={bad}")).await;
        assert_eq!(res.status(), 400, "{bad}");
        assert!(res.headers().get("location").is_none(), "{bad}");
    }
    // Started by another site's page (a navigation it caused, with a key of its choosing):
    // refused, no flow; from this site's pages, or typed in (`none`), it starts.
    let jkt = "dpop_jkt=0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I&return_to=/";
    for (site, status) in [
        ("cross-site", 403),
        ("same-site", 302),
        ("same-origin", 302),
        ("none", 302),
        ("CROSS-SITE", 403),
    ] {
        let res = b
            .http
            .get(s.url(&format!("/auth/oidc/idp/start?{jkt}")))
            .header("sec-fetch-site", site)
            .send()
            .await
            .unwrap();
        // (No provider answers here: a started flow is a 303 back to the page with the reason.)
        let started = res.status() == 303;
        // Nor does another site's page send the user to the provider's sign-out (and through
        // its back-channel logout out of every app): here 503, the provider unreachable.
        let end = b.http.get(s.url("/auth/oidc/idp/end-session"));
        let end = end.header("sec-fetch-site", site).send().await.unwrap();
        assert_eq!(
            end.status(),
            if status == 302 { 503 } else { 403 },
            "{site}"
        );
        assert_eq!(started, status == 302, "{site}: {}", res.status());
        if !started {
            assert_eq!(res.status(), 403);
            assert!(res.headers().get("location").is_none());
            assert!(set_cookies(res.headers()).is_empty());
        }
    }
    // A `HEAD` (a link checker, a prefetch) starts nothing and spends nothing.
    for path in [
        format!("/auth/oidc/idp/start?{jkt}"),
        "/auth/oidc/idp/callback?state=x&code=y".to_owned(),
    ] {
        let res = b.http.head(s.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 405, "{path}");
        assert_eq!(res.headers()["allow"], "GET", "{path}");
        assert!(res.headers().get("location").is_none(), "{path}");
        assert!(set_cookies(res.headers()).is_empty(), "{path}");
    }
    // An unknown provider is a 404, not a redirect.
    let res = b
        .http
        .get(s.url("/auth/oidc/nope/start?return_to=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    s.stop().await;
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_is_an_error_for_the_page_and_nothing_else_stops() {
    // Nothing listens there.
    let s = server_with(&format!("http://127.0.0.1:{}", free_port())).await;
    let mut b = Browser::new();
    let res = b.start(&s, "return_to=/login").await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/login?tw_error=provider_unavailable");
    // The other sign-in methods go on.
    let mut tab = Client::new(&s);
    tab.sign_in(ALICE).await;
    let list: Value = b
        .http
        .get(s.url("/auth/oidc/providers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({ "providers": [{ "name": "idp" }] }));
    s.stop().await;
}

/// Each start stores a flow for ten minutes: a client looping on starts (a page reloading
/// itself, a script) is limited per address to 30 a minute, told when to come back (no flow
/// cookie, no flow stored); the next minute it starts again.
#[tokio::test]
async fn sign_in_starts_are_limited_per_client_address() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let _h = hostile(port, s.state.clock.clone()).await;
    // One minute for all of them (the windows are the clock's minutes).
    s.state.clock.freeze();
    let mut b = Browser::new();
    let mut statuses = Vec::new();
    for _ in 0..32 {
        statuses.push(b.start(&s, "return_to=/").await.status().as_u16());
    }
    assert_eq!(statuses[..30], [302; 30], "{statuses:?}");
    assert_eq!(statuses[30..], [429; 2], "{statuses:?}");
    let res = b.start(&s, "return_to=/").await;
    assert_eq!(res.status(), 429);
    let retry: i64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(set_cookies(res.headers()).is_empty());
    s.state.clock.advance(retry);
    assert_eq!(b.start(&s, "return_to=/").await.status(), 302);
    s.stop().await;
}

#[tokio::test]
async fn the_provider_s_logout_ends_the_session_through_back_channel_logout() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let idp = Idp::start(port, &s.base).await;
    let mut tab = Client::bound(&s);
    let (b, res) = sign_in(&s, &idp, &tab, "frank").await;
    let t = take_up(&mut tab, &res).await;
    assert_eq!(tab.me(&t.access).await.status, 200);

    // The user logs out at the provider (RP-initiated: our end-session sends them there).
    let res = b
        .http
        .get(s.url("/auth/oidc/idp/end-session"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let end = location(&res);
    assert!(
        end.starts_with(&format!("{}/session/end?", idp.issuer)),
        "{end}"
    );
    let html = b.http.get(&end).send().await.unwrap().text().await.unwrap();
    let form_at = html.find("<form").unwrap();
    let form = &html[form_at..];
    let action = absolute(&end, attr(form, "action").unwrap());
    let xsrf = attr(&form[form.find("name=\"xsrf\"").unwrap() - 40..], "value")
        .map(str::to_owned)
        .unwrap_or_default();
    let since = Instant::now();
    let res = b
        .http
        .post(action)
        .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
        .send()
        .await
        .unwrap();
    assert!(res.status().is_redirection() || res.status().is_success());
    loop {
        if tab.me(&t.access).await.status == 401 {
            break;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "still signed in; provider said {:?}",
            idp.lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        idp.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.starts_with("backchannel ok"))
    );
    let a = tab.refresh().await;
    assert_eq!(a.status, 401);
    assert_eq!(a.error(), "invalid_grant");
    drop(idp);
    s.stop().await;
}

// ---- a hostile provider ---------------------------------------------------------------------

/// What the hostile provider puts in the next ID token.
#[derive(Clone)]
enum Forge {
    /// A token as a real provider would make it (the control case).
    Honest,
    /// Changes to the claims.
    Claims(fn(&mut Value)),
    /// `alg: none`, no signature.
    AlgNone,
    /// HS256 keyed with the provider's public JWKS (algorithm confusion).
    Hs256WithPublicKey,
    /// Signed by a key the provider never published, under the published `kid`.
    OtherKey,
    /// The nonce of the previous sign-in (a replayed ID token).
    PreviousNonce,
    /// No ID token: the code exchange refused with this `error`.
    TokenError(&'static str),
}

/// A code the hostile provider issued: its sign-in's nonce and PKCE challenge.
struct Pending {
    nonce: String,
    challenge: String,
}

#[derive(Clone)]
struct Hostile {
    issuer: String,
    key: Arc<ProofSigner>,
    forge: Arc<Mutex<Forge>>,
    /// code -> its sign-in
    codes: Arc<Mutex<HashMap<String, Pending>>>,
    nonces: Arc<Mutex<Vec<String>>>,
    /// What the last code exchange sent: (Authorization, code_verifier).
    exchange: Arc<Mutex<Option<(String, String)>>>,
    /// Requests for its JWKS, and how it answers them (`JWKS_*`).
    jwks_fetches: Arc<AtomicUsize>,
    jwks_mode: Arc<AtomicU8>,
    /// With `JWKS_HELD`, each answer waits for a permit of this.
    jwks_gate: Arc<tokio::sync::Notify>,
    /// What its UserInfo endpoint answers (404 while `None`).
    userinfo: Arc<Mutex<Option<Value>>>,
    /// The `token_type` its token endpoint gives its access token (`Bearer` while `None`).
    token_type: Arc<Mutex<Option<&'static str>>>,
}

// Otherwise (0, the default): the JWKS with its key.
/// A 500.
const JWKS_FAILING: u8 = 1;
/// The JWKS, once the test lets it go (`jwks_gate`).
const JWKS_HELD: u8 = 2;
/// A JWKS without its key (withdrawn, as after a leak).
const JWKS_WITHDRAWN: u8 = 3;

impl Hostile {
    fn jwks(&self) -> Value {
        let mut k = self.key.public_key().to_jwk();
        k["kid"] = json!("k1");
        k["alg"] = json!("ES256");
        k["use"] = json!("sig");
        json!({ "keys": [k] })
    }

    fn claims(&self, nonce: &str, now: i64) -> Value {
        json!({
            "iss": self.issuer, "aud": CLIENT_ID, "sub": "mallory-sub", "iat": now, "exp": now + 300,
            "nonce": nonce, "email": "mallory@hostile.test", "email_verified": true, "sid": "idp-session-1",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        self.key.sign_with_header(
            &json!({ "alg": "ES256", "kid": "k1", "typ": "JWT" }),
            claims,
        )
    }

    fn id_token(&self, nonce: &str, now: i64) -> String {
        let forge = self.forge.lock().unwrap().clone();
        let mut claims = self.claims(nonce, now);
        match forge {
            Forge::Honest => self.sign(&claims),
            Forge::Claims(f) => {
                f(&mut claims);
                self.sign(&claims)
            }
            Forge::AlgNone => format!(
                "{}.{}.",
                B64.encode(json!({ "alg": "none", "kid": "k1" }).to_string()),
                B64.encode(claims.to_string())
            ),
            Forge::Hs256WithPublicKey => hs256(&self.jwks().to_string(), &claims),
            Forge::OtherKey => ProofSigner::generate()
                .sign_with_header(&json!({ "alg": "ES256", "kid": "k1" }), &claims),
            Forge::PreviousNonce => {
                let nonces = self.nonces.lock().unwrap();
                claims["nonce"] = json!(nonces[nonces.len() - 2]);
                self.sign(&claims)
            }
            Forge::TokenError(_) => unreachable!("the token endpoint refuses first"),
        }
    }
}

fn hs256(secret: &str, claims: &Value) -> String {
    use hmac::{Hmac, Mac};
    let input = format!(
        "{}.{}",
        B64.encode(json!({ "alg": "HS256", "kid": "k1" }).to_string()),
        B64.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

async fn hostile(port: u16, now: tokenwarden_server::clock::Clock) -> Hostile {
    let h = Hostile {
        issuer: format!("http://127.0.0.1:{port}"),
        key: Arc::new(ProofSigner::generate()),
        forge: Arc::new(Mutex::new(Forge::Honest)),
        codes: Arc::default(),
        nonces: Arc::default(),
        exchange: Arc::default(),
        jwks_fetches: Arc::default(),
        jwks_mode: Arc::default(),
        jwks_gate: Arc::default(),
        userinfo: Arc::default(),
        token_type: Arc::default(),
    };
    let discovery = |State(h): State<Hostile>| async move {
        axum::Json(json!({
            "issuer": h.issuer,
            "authorization_endpoint": format!("{}/authorize", h.issuer),
            "token_endpoint": format!("{}/token", h.issuer),
            "jwks_uri": format!("{}/jwks", h.issuer),
            "userinfo_endpoint": format!("{}/userinfo", h.issuer),
            "id_token_signing_alg_values_supported": ["ES256", "HS256", "none"],
        }))
    };
    let jwks = |State(h): State<Hostile>| async move {
        h.jwks_fetches.fetch_add(1, SeqCst);
        match h.jwks_mode.load(SeqCst) {
            JWKS_FAILING => axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            JWKS_WITHDRAWN => axum::Json(json!({ "keys": [] })).into_response(),
            mode => {
                if mode == JWKS_HELD {
                    h.jwks_gate.notified().await;
                }
                axum::Json(h.jwks()).into_response()
            }
        }
    };
    // Signs the user in at once and sends them back with a code.
    let authorize = |State(h): State<Hostile>, Query(q): Query<HashMap<String, String>>| async move {
        let code = tokenwarden_server::tokens::random_id();
        h.nonces.lock().unwrap().push(q["nonce"].clone());
        let pending = Pending {
            nonce: q["nonce"].clone(),
            challenge: q["code_challenge"].clone(),
        };
        h.codes.lock().unwrap().insert(code.clone(), pending);
        Redirect::to(&format!(
            "{}?code={code}&state={}",
            q["redirect_uri"],
            url_escape(&q["state"])
        ))
    };
    let token = move |State(h): State<Hostile>,
                      headers: axum::http::HeaderMap,
                      axum::Form(f): axum::Form<HashMap<String, String>>| {
        let now = now.clone();
        async move {
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            *h.exchange.lock().unwrap() = Some((auth, f["code_verifier"].clone()));
            if let Forge::TokenError(error) = *h.forge.lock().unwrap() {
                let refusal = axum::Json(json!({ "error": error }));
                return (axum::http::StatusCode::BAD_REQUEST, refusal).into_response();
            }
            let pending = h.codes.lock().unwrap().remove(&f["code"]);
            // PKCE (RFC 7636): the verifier must be the challenge's.
            let Some(Pending { nonce, .. }) = pending.filter(|p| {
                let verifier = f.get("code_verifier").map_or("", String::as_str);
                B64.encode(Sha256::digest(verifier.as_bytes())) == p.challenge
            }) else {
                return (
                    axum::http::StatusCode::BAD_REQUEST,
                    axum::Json(json!({ "error": "invalid_grant" })),
                )
                    .into_response();
            };
            let token_type = h.token_type.lock().unwrap().unwrap_or("Bearer");
            axum::Json(json!({
                "access_token": "unused", "token_type": token_type,
                "id_token": h.id_token(&nonce, now.now()),
            }))
            .into_response()
        }
    };
    // For the access token the token endpoint gave ("unused").
    let userinfo = |State(h): State<Hostile>, headers: axum::http::HeaderMap| async move {
        let bearer = headers.get("authorization").and_then(|v| v.to_str().ok());
        match h.userinfo.lock().unwrap().clone() {
            Some(info) if bearer == Some("Bearer unused") => axum::Json(info).into_response(),
            _ => axum::http::StatusCode::NOT_FOUND.into_response(),
        }
    };
    let app = Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/userinfo", get(userinfo))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/token", post(token))
        .with_state(h.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    h
}

/// One sign-in through the hostile provider with the next ID token forged as `forge`: our
/// server's answer to the callback.
/// The `sub` of `who`'s account (a password sign-in).
async fn sub_of(s: &TestServer, who: (&str, &str)) -> Value {
    jwt_parts(&Client::new(s).sign_in(who).await.access).1["sub"].clone()
}

/// A session the hostile provider's sign-in (its ID token forged as `forge`) opened, taken up
/// by a new tab: the tab, its tokens and the access token's claims.
async fn hostile_session(s: &TestServer, h: &Hostile, forge: Forge) -> (Client, Tokens, Value) {
    let res = hostile_sign_in(s, h, forge).await;
    assert_eq!(location(&res), "/r", "not signed in");
    let mut tab = Client::new(s);
    let t = take_up(&mut tab, &res).await;
    let claims = jwt_parts(&t.access).1;
    (tab, t, claims)
}

async fn hostile_sign_in(s: &TestServer, h: &Hostile, forge: Forge) -> reqwest::Response {
    *h.forge.lock().unwrap() = forge;
    let mut b = Browser::new();
    let res = b.start(s, "return_to=/r").await;
    assert_eq!(res.status(), 302);
    let back = location(&b.http.get(location(&res)).send().await.unwrap());
    b.callback(&back).await
}

#[tokio::test]
async fn forged_id_tokens_are_refused_and_open_no_session() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    // The control: an honest token signs in (so each refusal below is the forgery's doing).
    let res = hostile_sign_in(&s, &h, Forge::Honest).await;
    assert_eq!(location(&res), "/r");
    assert!(refresh_cookie_of(&res).is_some());
    // The code exchange named the PKCE verifier of the challenge, with client_secret_basic.
    let (auth, verifier) = h.exchange.lock().unwrap().clone().unwrap();
    assert_eq!(
        auth,
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
        )
    );
    assert_eq!(verifier.len(), 43);

    let forgeries: Vec<(&str, Forge)> = vec![
        (
            "another issuer",
            Forge::Claims(|c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "another audience",
            Forge::Claims(|c| c["aud"] = json!("someone-else")),
        ),
        (
            "several audiences, no azp",
            Forge::Claims(|c| c["aud"] = json!([CLIENT_ID, "x"])),
        ),
        (
            "another azp",
            Forge::Claims(|c| c["azp"] = json!("someone-else")),
        ),
        (
            "expired",
            Forge::Claims(|c| {
                c["exp"] = json!(c["iat"].as_i64().unwrap() - 120);
            }),
        ),
        (
            "issued in the future",
            Forge::Claims(|c| {
                c["iat"] = json!(c["iat"].as_i64().unwrap() + 600);
            }),
        ),
        (
            "issued long ago",
            Forge::Claims(|c| {
                c["iat"] = json!(c["iat"].as_i64().unwrap() - 3600);
            }),
        ),
        (
            "no nonce",
            Forge::Claims(|c| {
                c.as_object_mut().unwrap().remove("nonce");
            }),
        ),
        (
            "no sub",
            Forge::Claims(|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "signed in at the provider in the future",
            Forge::Claims(|c| {
                c["auth_time"] = json!(c["iat"].as_i64().unwrap() + 600);
            }),
        ),
        (
            "an auth_time that is no time",
            Forge::Claims(|c| c["auth_time"] = json!("just now")),
        ),
        ("alg none", Forge::AlgNone),
        ("HS256 keyed with the public key", Forge::Hs256WithPublicKey),
        ("another key under the published kid", Forge::OtherKey),
        ("the previous sign-in's nonce", Forge::PreviousNonce),
    ];
    for (what, forge) in forgeries {
        let res = hostile_sign_in(&s, &h, forge).await;
        assert_eq!(res.status(), 303, "{what}");
        assert_eq!(location(&res), "/r?tw_error=federation_failed", "{what}");
        assert!(refresh_cookie_of(&res).is_none(), "{what}");
    }
    s.stop().await;
}

/// A name the provider sends that cannot be shown here is left out, as every other way in
/// refuses it: control characters (a terminal's escapes, a line break in a log) and
/// text-direction ones ("Mallory\u{202E}nimda" shows as "Malloryadmin"). The account is then
/// named by its address's local part, as without a name.
#[tokio::test]
async fn a_provider_s_name_that_cannot_be_shown_here_is_left_out() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    type Case = (fn(&mut Value), &'static str);
    let cases: [Case; 3] = [
        (
            |c| {
                c["sub"] = json!("direction");
                c["email"] = json!("one@hostile.test");
                c["name"] = json!("Mallory\u{202E}nimda");
            },
            "one",
        ),
        (
            |c| {
                c["sub"] = json!("escape");
                c["email"] = json!("two@hostile.test");
                c["name"] = json!("Mallory\u{1b}[2J");
            },
            "two",
        ),
        // The control: a name that can be shown is kept (trimmed).
        (
            |c| {
                c["sub"] = json!("plain");
                c["email"] = json!("three@hostile.test");
                c["name"] = json!("  Mallory Lee ");
            },
            "Mallory Lee",
        ),
    ];
    for (forge, name) in cases {
        let res = hostile_sign_in(&s, &h, Forge::Claims(forge)).await;
        let mut tab = Client::new(&s);
        tab.refresh = Some(refresh_cookie_of(&res).expect(name));
        let a = tab.refresh().await;
        assert_eq!(a.status, 200, "{}", a.body);
        let t = tab.tokens_of(&a);
        assert_eq!(tab.me(&t.access).await.body["name"], name);
    }
    // The same name from UserInfo (an ID token without the address or a name): the same rule
    // (it was only trimmed there).
    *h.userinfo.lock().unwrap() = Some(json!({
        "sub": "direction-at-userinfo", "email": "four@hostile.test", "email_verified": true,
        "name": "Mallory\u{202E}nimda",
    }));
    let (_, _, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("direction-at-userinfo");
            for gone in ["email", "email_verified", "name"] {
                c.as_object_mut().unwrap().remove(gone);
            }
        }),
    )
    .await;
    assert_eq!(claims["name"], "four", "{claims}");
    s.stop().await;
}

/// A provider's refusal of the code exchange reaches the audit log (`oidc_refused`), its
/// `error` without what a provider could forge a log line with.
#[tokio::test]
async fn a_provider_s_refusal_cannot_forge_a_log_line() {
    let log = Captured::install();
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    // A line break, then what would pass for a line of the server's own log (all within the
    // 64 characters kept).
    let forged = "2026-12-06T00:00:00.000000Z  WARN audit: x=\"y\"";
    let error = "invalid_grant\n2026-12-06T00:00:00.000000Z  WARN audit: x=\"y\"";
    let res = hostile_sign_in(&s, &h, Forge::TokenError(error)).await;
    assert_eq!(location(&res), "/r?tw_error=federation_failed");
    assert!(refresh_cookie_of(&res).is_none());
    s.stop().await;
    let text = log.text();
    let refused = text
        .lines()
        .find(|l| l.contains("oidc_refused") && l.contains("invalid_grant"))
        .unwrap_or_else(|| panic!("the refusal is logged: {text}"));
    // One line: no line break, no quote.
    assert!(
        refused.contains("invalid_grant2026-12-06T00:00:00.000000Z  WARN audit: x=y"),
        "{refused}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with(forged)),
        "a forged line: {text}"
    );
}

/// A logout token of the hostile provider, with `change` applied to its claims.
fn logout_token(h: &Hostile, now: i64, change: impl Fn(&mut Value)) -> String {
    let mut claims = json!({
        "iss": h.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
        "jti": tokenwarden_server::tokens::random_id(), "sid": "idp-session-1",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    change(&mut claims);
    h.key.sign_with_header(
        &json!({ "alg": "ES256", "kid": "k1", "typ": "logout+jwt" }),
        &claims,
    )
}

async fn post_logout(s: &TestServer, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(s.url("/auth/oidc/idp/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn back_channel_logout_tokens_forged_replayed_or_for_another_audience_are_refused() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    let res = hostile_sign_in(&s, &h, Forge::Honest).await;
    let mut tab = Client::new(&s);
    let t = take_up(&mut tab, &res).await;
    let now = s.state.now();

    let bad: Vec<(&str, String)> = vec![
        (
            "another audience",
            logout_token(&h, now, |c| c["aud"] = json!("someone-else")),
        ),
        (
            "another issuer",
            logout_token(&h, now, |c| c["iss"] = json!("https://evil.example")),
        ),
        (
            "no event",
            logout_token(&h, now, |c| c["events"] = json!({})),
        ),
        (
            "a nonce",
            logout_token(&h, now, |c| c["nonce"] = json!("n")),
        ),
        (
            "no jti",
            logout_token(&h, now, |c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "neither sid nor sub",
            logout_token(&h, now, |c| {
                c.as_object_mut().unwrap().remove("sid");
            }),
        ),
        (
            "issued long ago",
            logout_token(&h, now, |c| c["iat"] = json!(now - 3600)),
        ),
        (
            "HS256 keyed with the public key",
            hs256(
                &h.jwks().to_string(),
                &json!({
                    "iss": h.issuer, "aud": CLIENT_ID, "iat": now, "jti": "j-hs", "sid": "idp-session-1",
                    "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
                }),
            ),
        ),
        ("an ID token", h.sign(&h.claims("n", now))),
    ];
    for (what, token) in bad {
        let res = post_logout(&s, &token).await;
        assert_eq!(res.status(), 400, "{what}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request", "{what}");
    }
    assert_eq!(tab.me(&t.access).await.status, 200, "still signed in");

    let good = logout_token(&h, now, |_| {});
    assert_eq!(post_logout(&s, &good).await.status(), 200);
    assert_eq!(tab.me(&t.access).await.status, 401, "the session ended");
    // The same token again: refused (its jti was seen).
    let res = post_logout(&s, &good).await;
    assert_eq!(res.status(), 400);
    s.stop().await;
}

/// A logout token naming a key the provider never had.
fn unknown_key_logout_token(h: &Hostile, now: i64) -> String {
    let claims = json!({
        "iss": h.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
        "jti": tokenwarden_server::tokens::random_id(), "sid": "idp-session-1",
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
    });
    h.key.sign_with_header(
        &json!({ "alg": "ES256", "kid": "never-had", "typ": "logout+jwt" }),
        &claims,
    )
}

/// Twenty logout tokens naming an unknown key at once (anyone can post them): their statuses.
async fn flood(s: &TestServer, h: &Hostile) -> Vec<u16> {
    let now = s.state.now();
    let posts = (0..20).map(|_| flood_one(s.url(""), unknown_key_logout_token(h, now)));
    futures::future::join_all(posts).await
}

#[tokio::test]
async fn the_providers_keys_are_fetched_at_most_every_10_s_whatever_the_outcome_and_again_after_10_minutes()
 {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    let fetches = || h.jwks_fetches.load(SeqCst);
    let res = hostile_sign_in(&s, &h, Forge::Honest).await;
    assert_eq!(location(&res), "/r");
    assert_eq!(fetches(), 1);
    // Tokens naming a key the provider does not have: refused, one fetch per 10 s at most.
    assert!(flood(&s, &h).await.iter().all(|&st| st == 400));
    assert_eq!(fetches(), 1, "fetched a moment ago");
    s.state.clock.advance(11);
    assert!(flood(&s, &h).await.iter().all(|&st| st == 400));
    assert_eq!(fetches(), 2, "one fetch for the twenty");
    // A provider whose JWKS fails: tried once, not once per token; the keys held still verify.
    h.jwks_mode.store(JWKS_FAILING, SeqCst);
    s.state.clock.advance(11);
    assert!(flood(&s, &h).await.iter().all(|&st| st == 400));
    assert!(flood(&s, &h).await.iter().all(|&st| st == 400));
    assert_eq!(fetches(), 3, "a failed fetch counts too");
    assert_eq!(
        location(&hostile_sign_in(&s, &h, Forge::Honest).await),
        "/r"
    );
    // A fetch in flight (the provider slow) holds up nothing but the tokens that need it: a
    // sign-in starts, and one whose token names a known key completes, meanwhile.
    h.jwks_mode.store(JWKS_HELD, SeqCst);
    s.state.clock.advance(11);
    let waiting = tokio::spawn(flood_one(
        s.url(""),
        unknown_key_logout_token(&h, s.state.now()),
    ));
    let asked = Instant::now();
    while fetches() < 4 {
        assert!(
            asked.elapsed() < Duration::from_secs(5),
            "the fetch never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Within 4 s: the server gives up on a fetch after 5 s, so a sign-in held up by it could
    // not finish sooner.
    let meanwhile = tokio::time::timeout(
        Duration::from_secs(4),
        hostile_sign_in(&s, &h, Forge::Honest),
    );
    assert_eq!(location(&meanwhile.await.expect("not held up")), "/r");
    assert!(!waiting.is_finished());
    h.jwks_gate.notify_one();
    assert_eq!(waiting.await.unwrap(), 400);
    assert_eq!(fetches(), 4);
    // Ten minutes on, the keys are fetched again: a key the provider withdrew (leaked, rotated
    // out) no longer verifies its logout tokens, nor its ID tokens.
    h.jwks_mode.store(JWKS_WITHDRAWN, SeqCst);
    s.state.clock.advance(600);
    let token = logout_token(&h, s.state.now(), |_| {});
    assert_eq!(post_logout(&s, &token).await.status(), 400);
    assert_eq!(fetches(), 5);
    let res = hostile_sign_in(&s, &h, Forge::Honest).await;
    assert_eq!(location(&res), "/r?tw_error=federation_failed");
    s.stop().await;
}

/// One logout token posted to the server at `base`: its status.
async fn flood_one(base: String, token: String) -> u16 {
    let res = reqwest::Client::new()
        .post(format!("{base}/auth/oidc/idp/backchannel-logout"))
        .form(&[("logout_token", token)])
        .send()
        .await
        .unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn the_provider_s_iss_in_the_answer_must_be_its_own_and_present_when_it_sends_one() {
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let idp = Idp::start(port, &s.base).await;
    for (what, change) in [
        ("another provider's iss", "iss=http%3A%2F%2Fevil.example"),
        ("no iss", ""),
    ] {
        let mut b = Browser::new();
        let res = b.start(&s, "return_to=/x").await;
        let back = b
            .through_provider(location(&res), &s.base, "ivan", false)
            .await;
        let mut url = reqwest::Url::parse(&back).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "iss")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        let mut forged = url.to_string();
        if !change.is_empty() {
            forged.push('&');
            forged.push_str(change);
        }
        let res = b.callback(&forged).await;
        assert_eq!(location(&res), "/x?tw_error=federation_failed", "{what}");
        assert!(refresh_cookie_of(&res).is_none(), "{what}");
    }
    drop(idp);
    s.stop().await;
}

/// A server with the hostile provider `idp`, `link=verified-email`.
async fn linking_server() -> (TestServer, Hostile) {
    let port = free_port();
    let mut p = provider("idp", &format!("http://127.0.0.1:{port}"));
    p.link_verified_email = true;
    let s = TestServer::with(move |c| c.oidc = vec![p]).await;
    let h = hostile(port, s.state.clock.clone()).await;
    (s, h)
}

/// The claims of a provider whose clock runs `ahead` seconds ahead of this server's (behind if
/// negative), its user signed in `signed_in` seconds from the token's issue by that clock.
fn skewed(c: &mut Value, ahead: i64, signed_in: i64) {
    let iat = c["iat"].as_i64().unwrap() + ahead;
    c["iat"] = json!(iat);
    c["auth_time"] = json!(iat + signed_in);
}

/// A provider's sign-in is recent (a passkey added or removed, the second factor switched) only
/// as its `auth_time` says, and only for a sign-in at the provider made during this flow: a
/// provider that signs its user in without asking would otherwise give a script in the page,
/// which can start a sign-in of its own (with its own key), a session recent enough to add its
/// own passkey, whenever the user had signed in there lately (a second review found that case).
/// Otherwise not recent, and its tokens carry no `auth_time`. `max_age` is passed on to the provider, digits only, at most a day: `max_age=0` is how
/// a page asks for a sign-in recent enough.
#[tokio::test]
async fn a_provider_s_sign_in_is_recent_only_as_its_auth_time_says() {
    let port = free_port();
    let p = provider("idp", &format!("http://127.0.0.1:{port}"));
    let s = TestServer::with(move |c| {
        c.oidc = vec![p];
        c.webauthn = Some(tokenwarden_server::config::WebauthnSettings {
            rp_id: "localhost".into(),
            rp_name: "tokenwarden tests".into(),
            origins: vec!["http://localhost:8080".into()],
        });
    })
    .await;
    let h = hostile(port, s.state.clock.clone()).await;
    let cases: [(&str, Forge, bool); 9] = [
        ("no auth_time", Forge::Honest, false),
        (
            "a null auth_time",
            Forge::Claims(|c| c["auth_time"] = json!(null)),
            false,
        ),
        (
            "signed in at the provider an hour ago",
            Forge::Claims(|c| c["auth_time"] = json!(c["iat"].as_i64().unwrap() - 3600)),
            false,
        ),
        // Within the step-up window (300 s), but before this sign-in started: through another
        // of the provider's clients, say. Not this flow's sign-in: not recent.
        (
            "signed in at the provider two minutes before this sign-in started",
            Forge::Claims(|c| c["auth_time"] = json!(c["iat"].as_i64().unwrap() - 120)),
            false,
        ),
        (
            "signed in at the provider just now",
            Forge::Claims(|c| c["auth_time"] = c["iat"].clone()),
            true,
        ),
        (
            "signed in at the provider 30 s ahead of this clock (taken as now)",
            Forge::Claims(|c| c["auth_time"] = json!(c["iat"].as_i64().unwrap() + 30)),
            true,
        ),
        // The provider's clock 50 s ahead: what counts is its own reading of the flow's start.
        (
            "a provider 50 s ahead, its user signed in 40 s before the flow by its clock",
            Forge::Claims(|c| skewed(c, 50, -40)),
            false,
        ),
        (
            "a provider 50 s ahead, its user signed in just now by its clock",
            Forge::Claims(|c| skewed(c, 50, 0)),
            true,
        ),
        (
            "a provider 100 s behind, its user signed in just now by its clock",
            Forge::Claims(|c| skewed(c, -100, 0)),
            true,
        ),
    ];
    for (what, forge, recent) in cases {
        let (mut tab, _, claims) = hostile_session(&s, &h, forge).await;
        let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
        if recent {
            assert_eq!(start.status, 200, "{what}: {}", start.body);
            assert!(claims["auth_time"].is_i64(), "{what}: {claims}");
        } else {
            assert_eq!(start.status, 403, "{what}: {}", start.body);
            assert_eq!(start.body["error"], "step_up_required", "{what}");
        }
        if !recent {
            assert!(claims.get("auth_time").is_none(), "{what}: {claims}");
        } else {
            // On this clock, never later than now (the access token's iat, a moment after).
            let (auth_time, iat) = (claims["auth_time"].as_i64(), claims["iat"].as_i64());
            let (Some(auth_time), Some(iat)) = (auth_time, iat) else {
                panic!("{what}: {claims}");
            };
            assert!(auth_time <= iat && auth_time >= iat - 5, "{what}: {claims}");
        }
    }
    // max_age, passed on as given; anything but 0-86400 in digits refused before the provider.
    let mut b = Browser::new();
    let res = b.start(&s, "return_to=/r&max_age=0").await;
    assert_eq!(res.status(), 302);
    assert!(location(&res).contains("&max_age=0"), "{}", location(&res));
    let res = b.start(&s, "return_to=/r").await;
    assert!(!location(&res).contains("max_age"), "{}", location(&res));
    for bad in ["-1", "%2B5", "86401", "1.5", "", "4294967296"] {
        let res = b.start(&s, &format!("return_to=/r&max_age={bad}")).await;
        assert_eq!(res.status(), 400, "max_age={bad}");
    }
    s.stop().await;
}

/// The real provider (oidc-provider) says when its user signed in only when asked (`max_age`):
/// its sign-in is not recent without it, and is with `max_age=0`, which has it ask its user
/// again though they are signed in there.
#[tokio::test]
async fn a_real_provider_s_sign_in_is_recent_when_asked_with_max_age_0() {
    let port = free_port();
    let p = provider("idp", &format!("http://127.0.0.1:{port}"));
    let s = TestServer::with(move |c| {
        c.oidc = vec![p];
        c.webauthn = Some(tokenwarden_server::config::WebauthnSettings {
            rp_id: "localhost".into(),
            rp_name: "tokenwarden tests".into(),
            origins: vec!["http://localhost:8080".into()],
        });
    })
    .await;
    let idp = Idp::start(port, &s.base).await;
    let mut b = Browser::new();
    for (max_age, recent) in [("", false), ("&max_age=0", true)] {
        let mut tab = Client::bound(&s);
        let jkt = tab.key.as_ref().unwrap().thumbprint().to_owned();
        let query = format!("return_to=/r&dpop_jkt={jkt}{max_age}");
        let res = b.start(&s, &query).await;
        assert_eq!(res.status(), 302);
        let authorize = location(&res);
        assert!(authorize.starts_with(&idp.issuer), "{authorize}");
        let back = b.through_provider(authorize, &s.base, "dora", false).await;
        let res = b.callback(&back).await;
        assert_eq!(location(&res), "/r", "{max_age}");
        let t = take_up(&mut tab, &res).await;
        let claims = jwt_parts(&t.access).1;
        assert_eq!(claims["auth_time"].is_i64(), recent, "{max_age}: {claims}");
        let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
        let want = if recent { 200 } else { 403 };
        assert_eq!(start.status, want, "{max_age}: {}", start.body);
    }
    drop(idp);
    s.stop().await;
}

/// With `prompt=login`, every sign-in the server starts asks the user at the provider: a script
/// in the page that starts one (with a key of its choosing) gets no session silently from a
/// provider where the user is already signed in. Without it, no `prompt`: the provider decides.
#[tokio::test]
async fn a_provider_with_prompt_asks_the_user_at_every_sign_in() {
    for prompt in [Some("login"), None] {
        let port = free_port();
        let mut p = provider("idp", &format!("http://127.0.0.1:{port}"));
        p.prompt = prompt.map(str::to_owned);
        let s = TestServer::with(move |c| c.oidc = vec![p]).await;
        let _h = hostile(port, s.state.clock.clone()).await;
        let res = Browser::new().start(&s, "return_to=/").await;
        assert_eq!(res.status(), 302);
        let to = location(&res);
        assert_eq!(to.contains("&prompt=login"), prompt.is_some(), "{to}");
        assert_eq!(to.contains("prompt="), prompt.is_some(), "{to}");
        s.stop().await;
    }
}

/// An access token of a type this client does not understand (`DPoP`, `mac`) is not used
/// (RFC 6749 §7.1): no UserInfo with it, so its address is not the account's.
#[tokio::test]
async fn an_access_token_that_is_not_a_bearer_one_is_not_used() {
    let (s, h) = linking_server().await;
    *h.userinfo.lock().unwrap() = Some(json!({
        "sub": "not-bearer", "email": "nb@example.com", "email_verified": true,
    }));
    *h.token_type.lock().unwrap() = Some("DPoP");
    let forge = Forge::Claims(|c| {
        c["sub"] = json!("not-bearer");
        c.as_object_mut().unwrap().remove("email");
        c.as_object_mut().unwrap().remove("email_verified");
    });
    let (_, _, claims) = hostile_session(&s, &h, forge).await;
    let email = claims["email"].as_str().unwrap();
    assert!(email.ends_with("@idp.oidc.invalid"), "{claims}");
    s.stop().await;
}

/// A UserInfo answer about another `sub` counts for nothing (Core §5.3.2): its verified
/// address, Alice's, does not link the provider's other user into her account.
#[tokio::test]
async fn a_userinfo_answer_about_another_sub_counts_for_nothing() {
    let (s, h) = linking_server().await;
    let alice_sub = sub_of(&s, ALICE).await;
    address_verified(&s, "alice@example.com").await;
    *h.userinfo.lock().unwrap() = Some(json!({
        "sub": "alice-at-the-provider", "email": "alice@example.com", "email_verified": true,
    }));
    let forge = Forge::Claims(|c| {
        c["sub"] = json!("someone-else");
        c.as_object_mut().unwrap().remove("email");
        c.as_object_mut().unwrap().remove("email_verified");
    });
    let (_, _, claims) = hostile_session(&s, &h, forge).await;
    assert_ne!(claims["sub"], alice_sub);
    let email = claims["email"].as_str().unwrap();
    assert!(email.ends_with("@idp.oidc.invalid"), "{claims}");
    s.stop().await;
}

/// `email`'s account's address marked as shown to be its owner's (the code flow).
async fn address_verified(s: &TestServer, email: &str) {
    let now = s.state.now();
    s.state.store.set_email_verified(email, now).await.unwrap();
}

#[tokio::test]
async fn an_address_from_userinfo_goes_through_the_same_rule() {
    let (s, h) = linking_server().await;
    let alice_sub = sub_of(&s, ALICE).await;
    address_verified(&s, "alice@example.com").await;
    // An ID token without the address (Core §5.4): the server asks UserInfo, whose answer
    // counts only for the same `sub`. Alice's address with a zero-width space, "verified":
    // none at all, so neither her account nor a verified look-alike one.
    *h.userinfo.lock().unwrap() = Some(json!({
        "sub": "look-alike", "email": "alice\u{200B}@example.com", "email_verified": true,
    }));
    let (_, _, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("look-alike");
            c.as_object_mut().unwrap().remove("email");
            c.as_object_mut().unwrap().remove("email_verified");
        }),
    )
    .await;
    assert_ne!(claims["sub"], alice_sub);
    assert_eq!(claims["email_verified"], json!(false), "{claims}");
    assert!(
        claims["email"]
            .as_str()
            .unwrap()
            .ends_with("@idp.oidc.invalid"),
        "{claims}"
    );
    // The control: Alice's own address from UserInfo, verified, links into her account.
    *h.userinfo.lock().unwrap() = Some(json!({
        "sub": "alice-at-the-provider", "email": "Alice@Example.com", "email_verified": true,
    }));
    let (_, _, linked) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("alice-at-the-provider");
            c.as_object_mut().unwrap().remove("email");
            c.as_object_mut().unwrap().remove("email_verified");
        }),
    )
    .await;
    assert_eq!(linked["sub"], alice_sub);
    s.stop().await;
}

/// An account opened before the rule of one spelling per mailbox, under a spelling new accounts
/// may no longer have: a trusted provider's verified sign-in under that address links into it,
/// as a code sent to it signs into it. (The provider's address was dropped for failing the
/// new-account rule, and the sign-in opened a second, empty account.)
#[tokio::test]
async fn a_provider_s_address_links_an_account_opened_before_the_new_account_rules() {
    let (s, h) = linking_server().await;
    s.account_under_an_old_spelling().await;
    let (_, _, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("ann-at-the-provider");
            c["email"] = json!(OLD_SPELLING);
        }),
    )
    .await;
    assert_eq!(claims["sub"], "u-ann", "{claims}");
    // A new account under that spelling is still not made: a made-up address instead.
    let (_, _, other) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("someone-new");
            c["email"] = json!("bob@xn--bcher-kva.de");
        }),
    )
    .await;
    assert!(
        other["email"]
            .as_str()
            .unwrap()
            .ends_with("@idp.oidc.invalid"),
        "{other}"
    );
    s.stop().await;
}

/// A provider gives a person one `sub` for good: another `sub` with the address of an account
/// already linked to one of its identities is someone the address was given to since (a former
/// colleague's), and is not signed into that account, nor linked to it.
#[tokio::test]
async fn an_address_given_to_someone_else_at_the_provider_does_not_open_its_former_owner_s_account()
{
    let (s, h) = linking_server().await;
    address_verified(&s, ALICE.0).await;
    let alice = sub_of(&s, ALICE).await;
    let (_, _, first) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("alice-at-the-provider");
            c["email"] = json!(ALICE.0);
        }),
    )
    .await;
    assert_eq!(first["sub"], alice, "linked by the verified address");
    let res = hostile_sign_in(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("the-address-s-next-holder");
            c["email"] = json!(ALICE.0);
        }),
    )
    .await;
    assert_eq!(location(&res), "/r?tw_error=account_not_linked");
    assert!(refresh_cookie_of(&res).is_none());
    let store = &s.state.store;
    let issuer = &h.issuer;
    let next = store.user_of_identity(issuer, "the-address-s-next-holder");
    assert!(next.await.unwrap().is_none());
    // The first identity still signs in.
    let (_, _, again) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("alice-at-the-provider");
            c["email"] = json!(ALICE.0);
        }),
    )
    .await;
    assert_eq!(again["sub"], alice);
    s.stop().await;
}

/// The address a hostile provider names next (a test's own, set before the sign-in).
static NAMED: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

#[tokio::test]
async fn an_address_that_cannot_be_typed_here_or_is_made_up_here_links_nothing() {
    let (s, h) = linking_server().await;
    let alice_sub = sub_of(&s, ALICE).await;
    address_verified(&s, "alice@example.com").await;
    // Alice's address with a zero-width space, "verified": no address at all, so neither her
    // account nor a look-alike one; and the made-up address is not marked verified.
    let (mut tab, t, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("look-alike");
            c["email"] = json!("alice\u{200B}@example.com");
        }),
    )
    .await;
    assert_ne!(claims["sub"], alice_sub);
    assert_eq!(claims["email_verified"], json!(false), "{claims}");
    let made_up = tab.me(&t.access).await.body["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(made_up.ends_with("@idp.oidc.invalid"), "{made_up}");
    // Another identity naming that made-up address as its verified one: not linked into the
    // account it stands for (its hash is of the issuer and the sub, which are no secret).
    *NAMED.lock().unwrap() = made_up;
    let (_, _, taken) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("taker");
            c["email"] = json!(NAMED.lock().unwrap().clone());
        }),
    )
    .await;
    assert_ne!(
        taken["sub"], claims["sub"],
        "linked into the made-up address's account"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_provider_not_trusted_with_addresses_opens_no_account_under_one() {
    // Without link=verified-email, the provider's user names Dave's address as verified before
    // Dave has an account here (account pre-hijacking). The account it opens holds an address
    // of its own, unverified: Dave's stays free, so his sign-up, a code sent to it or a trusted
    // provider's sign-in later reaches no account the provider's user also signs into.
    let port = free_port();
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    let (mut tab, t, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("mallory");
            c["email"] = json!("dave@example.com");
            c.as_object_mut().unwrap().remove("name");
        }),
    )
    .await;
    assert_eq!(claims["email_verified"], json!(false), "{claims}");
    let me = tab.me(&t.access).await.body;
    assert!(
        me["email"].as_str().unwrap().ends_with("@idp.oidc.invalid"),
        "{me}"
    );
    // Named after the provider's address all the same.
    assert_eq!(me["name"], "dave", "{me}");
    assert!(
        s.state
            .store
            .user_by_email("dave@example.com")
            .await
            .unwrap()
            .is_none(),
        "Dave's address is held by the provider's user's account"
    );
    // The same identity again: the same account.
    let (_, _, same) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("mallory");
            c["email"] = json!("dave@example.com");
        }),
    )
    .await;
    assert_eq!(same["sub"], claims["sub"]);
    s.stop().await;

    // The control: a provider trusted with addresses opens the account under its address,
    // verified.
    let (s, h) = linking_server().await;
    let (mut tab, t, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("dave-at-the-provider");
            c["email"] = json!("dave@example.com");
        }),
    )
    .await;
    assert_eq!(claims["email_verified"], json!(true));
    assert_eq!(tab.me(&t.access).await.body["email"], "dave@example.com");
    s.stop().await;
}

#[tokio::test]
async fn an_unverified_address_is_never_the_account_s_and_linking_takes_a_verified_one() {
    let port = free_port();
    // Without link=verified-email: the provider's user with Alice's address (verified or not)
    // never gets into Alice's account.
    let s = server_with(&format!("http://127.0.0.1:{port}")).await;
    let h = hostile(port, s.state.clock.clone()).await;
    let alice_sub = sub_of(&s, ALICE).await;
    let res = hostile_sign_in(
        &s,
        &h,
        Forge::Claims(|c| {
            c["email"] = json!("alice@example.com");
            c["email_verified"] = json!(false);
        }),
    )
    .await;
    assert_eq!(
        location(&res),
        "/r",
        "a new account, under an address of its own"
    );
    let mut tab = Client::new(&s);
    let t = take_up(&mut tab, &res).await;
    let me = tab.me(&t.access).await.body;
    assert_ne!(jwt_parts(&t.access).1["sub"], alice_sub);
    assert!(
        me["email"].as_str().unwrap().ends_with("@idp.oidc.invalid"),
        "{me}"
    );
    // Verified, but linking is off: refused, and said so.
    let res = hostile_sign_in(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("another-sub");
            c["email"] = json!("alice@example.com");
        }),
    )
    .await;
    assert_eq!(location(&res), "/r?tw_error=account_not_linked");
    s.stop().await;

    // With link=verified-email: a verified address signs into its account; an unverified one
    // does not.
    let (s, h) = linking_server().await;
    let alice_sub = sub_of(&s, ALICE).await;
    let (_, _, claims) = hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["email"] = json!("alice@example.com");
            c["email_verified"] = json!(false);
        }),
    )
    .await;
    assert_ne!(claims["sub"], alice_sub);
    // A verified address of the provider's, but Alice's account was opened by `users add`:
    // its own address was never shown to be hers. Whoever opened it (an import, a legacy
    // backend that checks no address) may hold its password, so the provider's user is not
    // let into it.
    let verified = Forge::Claims(|c| {
        c["sub"] = json!("verified-sub");
        c["email"] = json!("alice@example.com");
    });
    let res = hostile_sign_in(&s, &h, verified.clone()).await;
    assert_eq!(location(&res), "/r?tw_error=account_not_linked");
    assert!(refresh_cookie_of(&res).is_none());
    // Once she verified it (the code flow): linked.
    address_verified(&s, "alice@example.com").await;
    let (_, _, claims) = hostile_session(&s, &h, verified).await;
    assert_eq!(claims["sub"], alice_sub);
    // An account whose sign-ins need a second factor is not linked by its address: the
    // provider's verified address proves the mailbox only, which alone never signs into it.
    let bob = jwt_parts(&Client::new(&s).sign_in(BOB).await.access).1;
    let (bob_sub, bob_sid) = (bob["sub"].as_str().unwrap(), bob["sid"].as_str().unwrap());
    assert_eq!(
        s.state
            .store
            .set_second_factor(bob_sub, bob_sid, true, false)
            .await
            .unwrap(),
        tokenwarden_server::store::passkeys::Change::Done
    );
    let res = hostile_sign_in(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("bob-at-the-provider");
            c["email"] = json!("bob@example.com");
        }),
    )
    .await;
    assert_eq!(location(&res), "/r?tw_error=account_not_linked");
    assert!(refresh_cookie_of(&res).is_none());
    // Nor an account whose password a stranger may have chosen (an import line without
    // `email_verified`), verified since without its owner signing in by the address: the
    // stranger would share the provider's user's account.
    let hash = tokenwarden_server::password::hash_blocking("strangers-password-1").unwrap();
    let line = format!(
        "{}\n",
        json!({ "email": "carol@example.com", "password_hash": hash })
    );
    let now = s.state.now();
    tokenwarden_server::users::import(&s.state.store, line.as_bytes(), false, now)
        .await
        .unwrap();
    address_verified(&s, "carol@example.com").await;
    let res = hostile_sign_in(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("carol-at-the-provider");
            c["email"] = json!("carol@example.com");
        }),
    )
    .await;
    assert_eq!(location(&res), "/r?tw_error=account_not_linked");
    assert!(refresh_cookie_of(&res).is_none());
    s.stop().await;
}

/// A provider linked to an account that signed in otherwise until now (`link=verified-email`)
/// is mailed to the account's address: a provider that vouched for an address its user does not
/// hold would be caught there. Once: the sign-ins after it use the link.
#[tokio::test]
async fn a_provider_linked_to_an_existing_account_is_mailed_to_it_once() {
    let sink = common::smtp::SmtpSink::start();
    let port = free_port();
    let mut p = provider("idp", &format!("http://127.0.0.1:{port}"));
    p.link_verified_email = true;
    let url = sink.url();
    let s = TestServer::with(move |c| {
        c.oidc = vec![p];
        c.otp.smtp_url = Some(url);
    })
    .await;
    let h = hostile(port, s.state.clock.clone()).await;
    let alice_sub = sub_of(&s, ALICE).await;
    address_verified(&s, "alice@example.com").await;
    let verified = Forge::Claims(|c| c["email"] = json!("alice@example.com"));
    let (_, _, claims) = hostile_session(&s, &h, verified.clone()).await;
    assert_eq!(claims["sub"], alice_sub);
    let notice = sink.wait_for(ALICE.0, 1).await;
    assert_eq!(notice.subject(), "A sign-in was linked to your account");
    assert!(notice.raw.contains("idp"), "{}", notice.raw);
    let (_, _, claims) = hostile_session(&s, &h, verified).await;
    assert_eq!(claims["sub"], alice_sub);
    // A new account opened by a provider is nobody else's: nothing to tell.
    hostile_session(
        &s,
        &h,
        Forge::Claims(|c| {
            c["sub"] = json!("newcomer");
            c["email"] = json!("newcomer@example.com");
        }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.to(ALICE.0).len(), 1);
    assert!(sink.to("newcomer@example.com").is_empty());
    s.stop().await;
}
