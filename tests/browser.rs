//! The client in real headless Chromium and Firefox against the real reference server (started
//! by `tests/browser/runner.sh` with 4-second access tokens and test hooks). The package under
//! test is the built npm package (`pkg/`, served by that server), imported as an app would.
#![cfg(target_arch = "wasm32")]

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;
use web_sys::{Request, RequestInit, Response};

wasm_bindgen_test_configure!(run_in_browser);

const SERVER: &str = match option_env!("TW_TEST_SERVER") {
    Some(s) => s,
    None => "http://127.0.0.1:18181",
};
/// The same server under another origin: not allowed, so it must never see the token.
const OTHER_ORIGIN: &str = match option_env!("TW_TEST_OTHER_ORIGIN") {
    Some(s) => s,
    None => "http://localhost:18181",
};
/// What the test server requires in `X-Test-Hooks-Secret` on every `/test/*` request.
const HOOKS_SECRET: &str = match option_env!("TW_TEST_HOOKS_SECRET") {
    Some(s) => s,
    None => "tokenwarden-test-hooks-secret",
};
/// Half the 4-second token lifetime (the leeway is capped at half) plus a margin.
const UNTIL_REFRESH_DUE_MS: i32 = 2_200;

// ---- the package ----------------------------------------------------------------------------

#[wasm_bindgen(inline_js = "let m; export async function pkg(url) { \
    if (!m) { m = await import(url); await m.default(); } return m; }")]
extern "C" {
    fn pkg(url: &str) -> Promise;
}

/// A `TokenManager` of the package, driven through its JavaScript API.
struct TokenManager(JsValue);

impl TokenManager {
    async fn new(options: Option<JsValue>) -> Result<TokenManager, JsValue> {
        let url = format!("{SERVER}/pkg/tokenwarden.js");
        let module = JsFuture::from(pkg(&url)).await.expect("import the package");
        let class: Function = get(&module, "TokenManager").into();
        let args: Array = options.into_iter().collect();
        Reflect::construct(&class, &args).map(TokenManager)
    }

    fn invoke(&self, name: &str, args: &[JsValue]) -> Result<JsValue, JsValue> {
        let f: Function = get(&self.0, name).into();
        f.apply(&self.0, &args.iter().collect())
    }

    fn promise(&self, name: &str, args: &[JsValue]) -> Promise {
        self.invoke(name, args).expect(name).into()
    }

    fn login(&self, credentials: JsValue) -> Promise {
        self.promise("login", &[credentials])
    }
    fn fetch(&self, input: JsValue, init: Option<JsValue>) -> Promise {
        let mut args = vec![input];
        args.extend(init);
        self.promise("fetch", &args)
    }
    fn get_access_token(&self) -> Promise {
        self.promise("getAccessToken", &[])
    }
    fn restore(&self) -> Promise {
        self.promise("restore", &[])
    }
    fn refresh(&self, options: Option<JsValue>) -> Promise {
        self.promise("refresh", &options.into_iter().collect::<Vec<_>>())
    }
    fn logout(&self) -> Promise {
        self.promise("logout", &[])
    }
    fn claims(&self) -> JsValue {
        self.invoke("claims", &[]).expect("claims")
    }
    fn is_authenticated(&self) -> bool {
        get(&self.0, "isAuthenticated")
            .as_bool()
            .expect("a boolean")
    }
    fn on(&self, event: &str, handler: Function) -> Result<JsValue, JsValue> {
        self.invoke("on", &[event.into(), handler.into()])
    }
    fn install(&self) {
        self.invoke("install", &[]).expect("install");
    }
    fn uninstall(&self) {
        self.invoke("uninstall", &[]).expect("uninstall");
    }
}

// ---- helpers --------------------------------------------------------------------------------

fn window() -> web_sys::Window {
    web_sys::window().expect("a window")
}

async fn sleep(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("setTimeout");
    });
    JsFuture::from(p).await.expect("sleep");
}

fn get(v: &JsValue, key: &str) -> JsValue {
    Reflect::get(v, &key.into()).expect("property")
}

fn obj(pairs: &[(&str, JsValue)]) -> JsValue {
    let o = Object::new();
    for (k, v) in pairs {
        Reflect::set(&o, &(*k).into(), v).expect("set");
    }
    o.into()
}

fn json(v: &JsValue) -> String {
    js_sys::JSON::stringify(v).expect("stringify").into()
}

/// A plain `fetch` (not through tokenwarden) to the server's test hooks.
async fn server(method: &str, path: &str, body: Option<JsValue>) -> JsValue {
    let init = RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().unwrap();
    headers.set("x-test-hooks-secret", HOOKS_SECRET).unwrap();
    if let Some(b) = body {
        init.set_body(&JsValue::from_str(&json(&b)));
        headers.set("content-type", "application/json").unwrap();
    }
    init.set_headers(&headers);
    let url = format!("{SERVER}{path}");
    let res: Response = JsFuture::from(window().fetch_with_str_and_init(&url, &init))
        .await
        .expect("fetch to the test server")
        .into();
    assert!(
        res.ok() || res.status() == 204,
        "{method} {path}: {}",
        res.status()
    );
    if res.status() == 204 {
        return JsValue::NULL;
    }
    JsFuture::from(res.json().unwrap()).await.unwrap()
}

async fn stats() -> JsValue {
    server("GET", "/test/stats", None).await
}

async fn count(name: &str) -> f64 {
    get(&stats().await, name).as_f64().unwrap()
}

async fn reset() {
    server("POST", "/test/reset", None).await;
}

async fn faults(f: JsValue) {
    server("POST", "/test/faults", Some(f)).await;
}

/// A fresh user, so tests do not share accounts.
async fn new_user() -> (String, String) {
    let email = format!("u{}@example.com", (js_sys::Math::random() * 1e12) as u64);
    let password = "browser-test-password".to_owned();
    server(
        "POST",
        "/test/users",
        Some(obj(&[
            ("email", email.as_str().into()),
            ("password", password.as_str().into()),
            ("name", "Browser Test".into()),
        ])),
    )
    .await;
    (email, password)
}

/// A manager for this page alone: the managers of earlier tests live on in the same page and,
/// as cross-tab peers, would hand their tokens over (tests/e2e covers cross-tab behaviour).
async fn manager(extra: &[(&str, JsValue)]) -> TokenManager {
    let mut opts = vec![
        ("baseUrl", JsValue::from_str(SERVER)),
        ("crossTab", false.into()),
    ];
    opts.extend(extra.iter().cloned());
    TokenManager::new(Some(obj(&opts)))
        .await
        .expect("construct")
}

async fn logged_in(extra: &[(&str, JsValue)]) -> TokenManager {
    let (email, password) = new_user().await;
    let auth = manager(extra).await;
    await_ok(auth.login(obj(&[
        ("email", email.into()),
        ("password", password.into()),
    ])))
    .await;
    reset().await;
    auth
}

async fn await_ok(p: Promise) -> JsValue {
    match JsFuture::from(p).await {
        Ok(v) => v,
        Err(e) => panic!(
            "rejected: {} {}",
            get(&e, "name").as_string().unwrap_or_default(),
            get(&e, "message").as_string().unwrap_or_default()
        ),
    }
}

/// The rejection's `name` (e.g. `NetworkError`); panics if the promise resolved.
async fn rejection(p: Promise) -> (String, String) {
    match JsFuture::from(p).await {
        Ok(v) => panic!("expected a rejection, got {v:?}"),
        Err(e) => (
            get(&e, "name").as_string().unwrap_or_default(),
            get(&e, "code").as_string().unwrap_or_default(),
        ),
    }
}

/// A fetch init that shows the test server the hooks' secret (for `/test/echo`).
fn hooks_init() -> JsValue {
    obj(&[(
        "headers",
        obj(&[("X-Test-Hooks-Secret", HOOKS_SECRET.into())]),
    )])
}

async fn auth_fetch(auth: &TokenManager, path: &str, init: JsValue) -> Response {
    let url = if path.starts_with("http") {
        path.to_owned()
    } else {
        format!("{SERVER}{path}")
    };
    await_ok(auth.fetch(url.into(), Some(init).filter(|i| !i.is_undefined())))
        .await
        .into()
}

async fn me_status(auth: &TokenManager) -> u16 {
    auth_fetch(auth, "/api/me", JsValue::UNDEFINED)
        .await
        .status()
}

async fn body(res: Response) -> JsValue {
    JsFuture::from(res.json().unwrap()).await.unwrap()
}

/// Records the events a manager emits, in order.
fn record(auth: &TokenManager) -> Array {
    let log = Array::new();
    for event in [
        "login",
        "refresh",
        "sessionExpired",
        "tokenReused",
        "logout",
    ] {
        let log = log.clone();
        let handler = Closure::<dyn Fn(JsValue)>::new(move |detail: JsValue| {
            let reason = get(&detail, "reason").as_string().unwrap_or_default();
            log.push(&JsValue::from_str(&format!(
                "{event}{}",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(":{reason}")
                }
            )));
        });
        auth.on(event, handler.as_ref().unchecked_ref::<Function>().clone())
            .unwrap();
        handler.forget();
    }
    log
}

fn events(log: &Array) -> Vec<String> {
    log.iter().map(|v| v.as_string().unwrap()).collect()
}

// ---- the tests ------------------------------------------------------------------------------

#[wasm_bindgen_test]
async fn login_then_fetch_carries_the_token() {
    let (email, password) = new_user().await;
    let auth = manager(&[]).await;
    assert!(!auth.is_authenticated());
    await_ok(auth.login(obj(&[
        ("email", email.clone().into()),
        ("password", password.into()),
    ])))
    .await;
    assert!(auth.is_authenticated());
    assert_eq!(get(&auth.claims(), "email").as_string().unwrap(), email);

    let res = auth_fetch(&auth, "/api/me", JsValue::UNDEFINED).await;
    assert_eq!(res.status(), 200);
    assert_eq!(get(&body(res).await, "email").as_string().unwrap(), email);
    let echo = body(auth_fetch(&auth, "/test/echo", hooks_init()).await).await;
    assert!(
        get(&echo, "authorization")
            .as_string()
            .unwrap()
            .starts_with("DPoP ey"),
        "a bound token, with a proof: {}",
        json(&echo)
    );
    assert!(get(&auth.claims(), "cnf").is_object(), "bound: cnf.jkt");
}

#[wasm_bindgen_test]
async fn with_dpop_off_the_token_is_a_plain_bearer_token() {
    let auth = logged_in(&[("dpop", false.into())]).await;
    let echo = body(auth_fetch(&auth, "/test/echo", hooks_init()).await).await;
    assert!(
        get(&echo, "authorization")
            .as_string()
            .unwrap()
            .starts_with("Bearer ey"),
        "{}",
        json(&echo)
    );
    assert!(get(&auth.claims(), "cnf").is_undefined());
    assert_eq!(me_status(&auth).await, 200);
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(me_status(&auth).await, 200);
    await_ok(auth.logout()).await;
    assert_eq!(count("logouts").await, 1.0);
}

#[wasm_bindgen_test]
async fn a_wrong_password_is_a_typed_login_error() {
    let (email, _) = new_user().await;
    let auth = manager(&[]).await;
    let (name, code) = rejection(auth.login(obj(&[
        ("email", email.into()),
        ("password", "nope-nope".into()),
    ])))
    .await;
    assert_eq!(
        (name.as_str(), code.as_str()),
        ("LoginError", "invalid_credentials")
    );
    assert!(!auth.is_authenticated());
}

#[wasm_bindgen_test]
async fn expiry_triggers_exactly_one_refresh() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(
        count("refresh_calls").await,
        0.0,
        "a fresh token needs no refresh"
    );
    sleep(UNTIL_REFRESH_DUE_MS).await;
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(count("refresh_calls").await, 1.0);
    assert_eq!(events(&log), ["refresh"]);
}

#[wasm_bindgen_test]
async fn a_hundred_concurrent_fetches_at_expiry_share_one_refresh() {
    let auth = logged_in(&[]).await;
    sleep(UNTIL_REFRESH_DUE_MS).await;
    let url = JsValue::from_str(&format!("{SERVER}/api/me"));
    let all = Array::new();
    for _ in 0..100 {
        all.push(&auth.fetch(url.clone(), None));
    }
    let responses: Array = await_ok(Promise::all(&all)).await.into();
    assert_eq!(responses.length(), 100);
    for r in responses.iter() {
        assert_eq!(r.unchecked_into::<Response>().status(), 200);
    }
    assert_eq!(count("refresh_calls").await, 1.0);
    assert_eq!(count("reuse_detections").await, 0.0);
}

#[wasm_bindgen_test]
async fn a_401_is_answered_by_one_refresh_and_a_replay_of_the_post_body() {
    let auth = logged_in(&[]).await;
    // Emergency key revocation: the token in memory is refused from now on.
    server("POST", "/test/keys/revoke", None).await;
    let headers = web_sys::Headers::new().unwrap();
    headers.set("content-type", "application/json").unwrap();
    let init = obj(&[
        ("method", "PATCH".into()),
        ("headers", headers.into()),
        ("body", r#"{"name":"Replayed Name"}"#.into()),
    ]);
    let res = auth_fetch(&auth, "/api/me", init).await;
    assert_eq!(res.status(), 200, "replayed with a fresh token");
    assert_eq!(
        get(&body(res).await, "name").as_string().unwrap(),
        "Replayed Name"
    );
    assert_eq!(count("refresh_calls").await, 1.0);
    // Later requests simply use the new token.
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(count("refresh_calls").await, 1.0);
}

#[wasm_bindgen_test]
async fn concurrent_401s_share_one_refresh() {
    let auth = logged_in(&[]).await;
    server("POST", "/test/keys/revoke", None).await;
    let all = Array::new();
    for _ in 0..5 {
        all.push(&auth.fetch(format!("{SERVER}/api/me").into(), None));
    }
    let responses: Array = await_ok(Promise::all(&all)).await.into();
    for r in responses.iter() {
        assert_eq!(r.unchecked_into::<Response>().status(), 200);
    }
    assert_eq!(count("refresh_calls").await, 1.0, "five 401s, one refresh");
}

#[wasm_bindgen_test]
async fn a_401_the_token_cannot_fix_is_replayed_once_then_returned() {
    let auth = logged_in(&[]).await;
    let res = auth_fetch(&auth, "/test/echo?status=401", hooks_init()).await;
    assert_eq!(res.status(), 401, "the caller gets the API's answer");
    assert_eq!(
        count("refresh_calls").await,
        1.0,
        "one refresh, one replay, no loop"
    );
    assert!(
        auth.is_authenticated(),
        "an API's 401 does not end the session"
    );
}

#[wasm_bindgen_test]
async fn a_refresh_answered_401_ends_the_session_with_an_event() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    // The user revokes this session from another device.
    let sid = get(&auth.claims(), "sid").as_string().unwrap();
    let res = auth_fetch(
        &auth,
        &format!("/auth/sessions/{sid}"),
        obj(&[("method", "DELETE".into())]),
    )
    .await;
    assert_eq!(res.status(), 204);

    let (name, code) = rejection(auth.fetch(format!("{SERVER}/api/me").into(), None)).await;
    assert_eq!(
        (name.as_str(), code.as_str()),
        ("SessionExpiredError", "invalid_grant")
    );
    assert!(!auth.is_authenticated());
    assert!(auth.claims().is_null());
    assert_eq!(events(&log), ["sessionExpired:invalid_grant"]);
    assert_eq!(count("refresh_calls").await, 1.0);
}

#[wasm_bindgen_test]
async fn a_refresh_answered_503_is_a_network_error_and_the_session_survives() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    // Every attempt of one refresh (3, with backoff) fails.
    faults(obj(&[("refresh_fail_next", 3.into())])).await;
    let (name, code) = rejection(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(
        (name.as_str(), code.as_str()),
        ("NetworkError", "server_error")
    );
    assert!(
        auth.is_authenticated(),
        "a flaky server never logs the user out"
    );
    assert_eq!(count("refresh_calls").await, 3.0);
    // The server recovers: the next call succeeds.
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(events(&log), ["refresh"]);
}

#[wasm_bindgen_test]
async fn a_server_refusing_every_refresh_is_asked_a_few_times_not_once_per_request() {
    let auth = logged_in(&[]).await;
    faults(obj(&[("refresh_fail_next", 1000.into())])).await;
    sleep(UNTIL_REFRESH_DUE_MS).await;
    // 50 requests at once share one refresh (its two quick retries: 3 requests) and its failure.
    let url = JsValue::from_str(&format!("{SERVER}/api/me"));
    let all = Array::new();
    for _ in 0..50 {
        all.push(&auth.fetch(url.clone(), None));
    }
    let settled: Array = await_ok(Promise::all_settled(&all)).await.into();
    for r in settled.iter() {
        assert_eq!(
            get(&get(&r, "reason"), "name").as_string().unwrap(),
            "NetworkError"
        );
    }
    assert_eq!(count("refresh_calls").await, 3.0);
    // For the next 3 s, a request every 100 ms: no refresh starts before the wait (10-15 s) is
    // over. The token, due, is used while it is valid; then the failure is told at once.
    let (mut sent, mut told) = (0, 0);
    for _ in 0..30 {
        match JsFuture::from(auth.fetch(url.clone(), None)).await {
            Ok(res) => {
                assert_eq!(res.unchecked_into::<Response>().status(), 200);
                sent += 1;
            }
            Err(e) => {
                assert_eq!(get(&e, "name").as_string().unwrap(), "NetworkError");
                told += 1;
            }
        }
        sleep(100).await;
    }
    assert_eq!(
        count("refresh_calls").await,
        3.0,
        "{sent} sent, {told} told"
    );
    assert!(told > 0, "the token expired meanwhile: {sent} sent");
    assert!(auth.is_authenticated(), "never a logout");
    // A forced refresh goes ahead at once, with one attempt (no quick retries any more).
    let (name, _) = rejection(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(name, "NetworkError");
    assert_eq!(count("refresh_calls").await, 4.0);
    // The server recovers: forcing works, and so does everything else.
    faults(obj(&[("refresh_fail_next", 0.into())])).await;
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(me_status(&auth).await, 200);
}

#[wasm_bindgen(
    inline_js = "export function drop_keys() { return new Promise((ok, no) => { \
    const r = indexedDB.deleteDatabase('tokenwarden'); r.onsuccess = () => ok(true); \
    r.onerror = () => no(r.error); }); }"
)]
extern "C" {
    /// The key store deleted, as Safari's eviction or "clear site data" would: the cookies stay.
    fn drop_keys() -> Promise;
}

#[wasm_bindgen_test]
async fn a_stored_key_that_is_not_the_sessions_restores_nothing_once_and_never_again() {
    logged_in(&[]).await;
    // The key store goes; then, on another page, a mistyped sign-in stores a new key of its
    // own (its session never came). The cookies are the first session's, bound to the key
    // that went.
    await_ok(drop_keys()).await;
    let other = manager(&[]).await;
    let (name, _) = rejection(other.login(obj(&[
        ("email", "nobody@example.com".into()),
        ("password", "wrong password".into()),
    ])))
    .await;
    assert_eq!(name, "LoginError");
    reset().await;
    // The next page: one attempt (refused as signed by another key, sent once more, refused
    // again), then not logged in, quietly; the hint cookie goes with it.
    let page = manager(&[]).await;
    let log = record(&page);
    assert_eq!(await_ok(page.restore()).await, false);
    assert_eq!(count("refresh_calls").await, 2.0);
    assert!(events(&log).is_empty(), "nobody was logged in here");
    // The page after: no attempt at all.
    let next = manager(&[]).await;
    assert_eq!(await_ok(next.restore()).await, false);
    assert_eq!(count("refresh_calls").await, 2.0, "never again");
    // A new sign-in works at once.
    let (email, password) = new_user().await;
    await_ok(next.login(obj(&[
        ("email", email.into()),
        ("password", password.into()),
    ])))
    .await;
    assert_eq!(me_status(&next).await, 200);
}

#[wasm_bindgen_test]
async fn a_proxys_401_page_from_the_refresh_endpoint_ends_no_session() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    // A gateway in front of the server answers 401 with its own HTML page: not the protocol's
    // `invalid_grant`, so the refresh fails and the session lives on.
    faults(obj(&[("refresh_gateway_401_next", 1.into())])).await;
    let (name, code) = rejection(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(
        (name.as_str(), code.as_str()),
        ("RefreshError", "unexpected_response")
    );
    assert!(
        auth.is_authenticated(),
        "a proxy's page never logs the user out"
    );
    assert_eq!(me_status(&auth).await, 200);
    // The next refresh reaches the server and works.
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(events(&log), ["refresh"]);
}

#[wasm_bindgen_test]
async fn a_lost_refresh_response_is_recovered_without_logout() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    // The server rotates, then drops the connection: the client never sees the new cookie.
    faults(obj(&[("refresh_drop_next", 1.into())])).await;
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(me_status(&auth).await, 200);
    // The lost one; Chromium resends a request whose reused connection closed without an
    // answer, with the same DPoP proof, which the server refuses as replayed
    // (invalid_dpop_proof, nothing rotated); the client's one retry with a new proof.
    assert_eq!(
        count("refresh_calls").await,
        3.0,
        "the lost one, the browser's resend and the retry"
    );
    assert_eq!(count("reuse_detections").await, 0.0);
    // And the chain goes on.
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(count("reuse_detections").await, 0.0);
    assert_eq!(events(&log), ["refresh", "refresh"]);
}

#[wasm_bindgen_test]
async fn a_request_to_another_origin_carries_no_token() {
    let auth = logged_in(&[]).await;
    let echo =
        body(auth_fetch(&auth, &format!("{OTHER_ORIGIN}/test/echo"), hooks_init()).await).await;
    assert!(get(&echo, "authorization").is_null(), "{}", json(&echo));
    // The allowed origin does get it.
    let echo = body(auth_fetch(&auth, "/test/echo", hooks_init()).await).await;
    assert!(get(&echo, "authorization").as_string().is_some());
}

/// HTML injection, no script: `<base href="https://other/">` makes fetch resolve a relative URL
/// against another origin. The origin is checked on the URL fetch will use, so no token goes.
#[wasm_bindgen_test]
async fn an_injected_base_element_cannot_redirect_the_token() {
    let page = window().location().origin().expect("origin");
    let origins = Array::of2(&SERVER.into(), &page.into());
    let auth = logged_in(&[("allowedOrigins", origins.into())]).await;
    let document = window().document().expect("document");
    let base = document.create_element("base").expect("base");
    base.set_attribute("href", &format!("{OTHER_ORIGIN}/"))
        .expect("href");
    document
        .head()
        .expect("head")
        .append_child(&base)
        .expect("append");
    let init = obj(&[(
        "headers",
        obj(&[("X-Test-Hooks-Secret", HOOKS_SECRET.into())]),
    )]);
    let res: Response = await_ok(auth.fetch("/test/echo".into(), Some(init.clone())))
        .await
        .into();
    // And a script that also makes the page's base URL claim to be the page's own address:
    // `authorize` (for requests that are not fetch, resolved again by their sender) reads the
    // real one, so it gives no headers for a URL that goes to the other origin.
    let node: Object = get(&get(&js_sys::global(), "Node"), "prototype").into();
    let real = Object::get_own_property_descriptor(&node, &"baseURI".into());
    let href = window().location().href().expect("href");
    let getter = Function::new_no_args(&format!("return {href:?};"));
    let fake: Object = obj(&[("get", getter.into()), ("configurable", true.into())]).into();
    Object::define_property(&node, &"baseURI".into(), &fake);
    let granted = await_ok(auth.promise("authorize", &["GET".into(), "test/echo".into()])).await;
    Object::define_property(&node, &"baseURI".into(), &real.into());
    base.remove();
    let headers = get(&granted, "headers");
    assert!(
        get(&headers, "Authorization").is_undefined(),
        "{}",
        json(&headers)
    );
    assert!(get(&granted, "url").is_undefined());
    let echo = body(res).await;
    assert!(get(&echo, "authorization").is_null(), "{}", json(&echo));
    // Without the <base>, an allowed origin still gets it.
    let echo = body(auth_fetch(&auth, "/test/echo", init).await).await;
    assert!(get(&echo, "authorization").as_string().is_some());
}

#[wasm_bindgen_test]
async fn the_callers_own_authorization_header_is_left_alone() {
    let auth = logged_in(&[]).await;
    let init = obj(&[(
        "headers",
        obj(&[
            ("Authorization", "Basic Zm9vOmJhcg==".into()),
            ("X-Test-Hooks-Secret", HOOKS_SECRET.into()),
        ]),
    )]);
    let echo = body(auth_fetch(&auth, "/test/echo", init).await).await;
    assert_eq!(
        get(&echo, "authorization").as_string().unwrap(),
        "Basic Zm9vOmJhcg=="
    );
}

#[wasm_bindgen_test]
async fn a_request_object_and_an_abort_signal_pass_through() {
    let auth = logged_in(&[]).await;
    let req = Request::new_with_str_and_init(
        &format!("{SERVER}/test/echo"),
        &hooks_init().unchecked_into(),
    )
    .unwrap();
    let res: Response = await_ok(auth.fetch(req.into(), None)).await.into();
    assert!(get(&body(res).await, "authorization").as_string().is_some());

    let controller = web_sys::AbortController::new().unwrap();
    controller.abort();
    let init = obj(&[("signal", controller.signal().into())]);
    let (name, _) = rejection(auth.fetch(format!("{SERVER}/api/me").into(), Some(init))).await;
    assert_eq!(name, "AbortError");
}

#[wasm_bindgen_test]
async fn a_request_object_with_a_body_is_replayed_after_a_401() {
    let auth = logged_in(&[]).await;
    server("POST", "/test/keys/revoke", None).await;
    let init = RequestInit::new();
    init.set_method("PATCH");
    init.set_body(&JsValue::from_str(r#"{"name":"From A Request"}"#));
    let headers = web_sys::Headers::new().unwrap();
    headers.set("content-type", "application/json").unwrap();
    init.set_headers(&headers);
    let req = Request::new_with_str_and_init(&format!("{SERVER}/api/me"), &init).unwrap();
    let res: Response = await_ok(auth.fetch(req.into(), None)).await.into();
    assert_eq!(res.status(), 200);
    assert_eq!(
        get(&body(res).await, "name").as_string().unwrap(),
        "From A Request"
    );
    assert_eq!(count("refresh_calls").await, 1.0);
}

/// Logged out, or with the caller's own Authorization: a Request with a body goes out as the
/// caller made it (copying it to read it must not leave the caller's used up: fetch would
/// throw a TypeError instead).
#[wasm_bindgen_test]
async fn a_request_object_with_a_body_passes_through_without_a_session_or_with_its_own_token() {
    let patch = |authorization: Option<&str>| {
        let init = RequestInit::new();
        init.set_method("PATCH");
        init.set_body(&JsValue::from_str(r#"{"name":"X"}"#));
        let headers = web_sys::Headers::new().unwrap();
        headers.set("content-type", "application/json").unwrap();
        if let Some(a) = authorization {
            headers.set("authorization", a).unwrap();
        }
        init.set_headers(&headers);
        Request::new_with_str_and_init(&format!("{SERVER}/api/me"), &init).unwrap()
    };
    // No token: sent, not a TypeError. The status is 401, or 200 where the refresh cookie an
    // earlier test's sign-in left in this page got a token first (then the copy was signed).
    let auth = manager(&[]).await;
    let res: Response = await_ok(auth.fetch(patch(None).into(), None)).await.into();
    assert!(
        res.status() == 401 || res.status() == 200,
        "{}",
        res.status()
    );
    let auth = logged_in(&[]).await;
    let res: Response = await_ok(auth.fetch(patch(Some("Bearer not-a-token")).into(), None))
        .await
        .into();
    assert_eq!(res.status(), 401, "its own Authorization, sent as is");
}

#[wasm_bindgen_test]
async fn the_callers_headers_are_kept_in_every_form_fetch_accepts() {
    let auth = logged_in(&[]).await;
    // X-Tokenwarden: a header the test server's CORS policy allows and /test/echo reports.
    let as_headers = web_sys::Headers::new().unwrap();
    as_headers.set("x-tokenwarden", "kept").unwrap();
    as_headers.set("x-test-hooks-secret", HOOKS_SECRET).unwrap();
    let as_pairs = Array::of2(
        &Array::of2(&"x-tokenwarden".into(), &"kept".into()),
        &Array::of2(&"x-test-hooks-secret".into(), &HOOKS_SECRET.into()),
    );
    let as_record = obj(&[
        ("X-Tokenwarden", "kept".into()),
        ("X-Test-Hooks-Secret", HOOKS_SECRET.into()),
    ]);
    for headers in [as_headers.into(), as_pairs.into(), as_record] {
        let init = obj(&[("headers", headers)]);
        let echo = body(auth_fetch(&auth, "/test/echo", init).await).await;
        let authorization = get(&echo, "authorization").as_string().unwrap();
        assert!(authorization.starts_with("DPoP "), "{authorization}");
        assert_eq!(get(&echo, "x-tokenwarden").as_string().unwrap(), "kept");
    }
    // The caller's init object itself is never modified.
    let init = obj(&[(
        "headers",
        obj(&[
            ("X-Tokenwarden", "kept".into()),
            ("X-Test-Hooks-Secret", HOOKS_SECRET.into()),
        ]),
    )]);
    auth_fetch(&auth, "/test/echo", init.clone()).await;
    assert_eq!(
        json(&get(&init, "headers")),
        format!(r#"{{"X-Tokenwarden":"kept","X-Test-Hooks-Secret":"{HOOKS_SECRET}"}}"#)
    );
}

#[wasm_bindgen_test]
async fn logout_forgets_the_token_here_and_on_the_server() {
    let auth = logged_in(&[]).await;
    let log = record(&auth);
    await_ok(auth.logout()).await;
    assert!(!auth.is_authenticated());
    assert_eq!(events(&log), ["logout"]);
    let echo = body(auth_fetch(&auth, "/test/echo", hooks_init()).await).await;
    assert!(get(&echo, "authorization").is_null());
    assert_eq!(count("logouts").await, 1.0);
    // A "reload" finds no session: the hint cookie is gone, so not even a request is made.
    let reloaded = manager(&[]).await;
    assert_eq!(await_ok(reloaded.restore()).await, JsValue::FALSE);
    assert_eq!(count("refresh_calls").await, 0.0);
}

#[wasm_bindgen_test]
async fn the_dpop_key_is_new_for_each_login_and_deleted_when_the_session_ends() {
    let stored = || async { Array::from(&await_ok(idb_dump()).await) };
    let auth = logged_in(&[]).await;
    let first = stored().await;
    assert_eq!(first.length(), 1, "{}", json(&first));
    await_ok(auth.logout()).await;
    sleep(100).await;
    assert_eq!(stored().await.length(), 0, "deleted at logout");

    let auth = logged_in(&[]).await;
    let second = stored().await;
    assert_eq!(second.length(), 1);
    assert_ne!(
        json(&get(&first.get(0), "h")),
        json(&get(&second.get(0), "h")),
        "a new key for a new login"
    );
    // The server ends the session (revoked elsewhere): the key goes too.
    let sid = get(&auth.claims(), "sid").as_string().unwrap();
    let res = auth_fetch(
        &auth,
        &format!("/auth/sessions/{sid}"),
        obj(&[("method", "DELETE".into())]),
    )
    .await;
    assert_eq!(res.status(), 204);
    let (name, _) = rejection(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    assert_eq!(name, "SessionExpiredError");
    sleep(100).await;
    assert_eq!(stored().await.length(), 0, "deleted when the session ended");
}

#[wasm_bindgen_test]
async fn a_failed_login_leaves_the_stored_key_of_the_live_session() {
    let stored = || async { json(&await_ok(idb_dump()).await) };
    let auth = logged_in(&[]).await;
    let before = stored().await;
    let (name, _) = rejection(auth.login(obj(&[
        ("email", "nobody@example.com".into()),
        ("password", "wrong-wrong".into()),
    ])))
    .await;
    assert_eq!(name, "LoginError");
    sleep(100).await;
    assert_eq!(stored().await, before);
    // A reload still signs with the session's key.
    drop(auth);
    let reloaded = manager(&[]).await;
    assert_eq!(await_ok(reloaded.restore()).await, JsValue::TRUE);
    assert_eq!(me_status(&reloaded).await, 200);
}

#[wasm_bindgen_test]
async fn a_reload_restores_the_session_with_one_silent_refresh() {
    let auth = logged_in(&[]).await;
    drop(auth); // the page goes away; only the cookies remain
    let reloaded = manager(&[]).await;
    assert!(!reloaded.is_authenticated());
    assert_eq!(await_ok(reloaded.restore()).await, JsValue::TRUE);
    assert!(reloaded.is_authenticated());
    // One rotation. The new page's first proof has no nonce: use_dpop_nonce (nothing rotated),
    // then the same refresh once more with the nonce of that answer.
    assert_eq!(count("refresh_rotated").await, 1.0);
    assert_eq!(count("refresh_calls").await, 2.0);
    assert_eq!(me_status(&reloaded).await, 200);
}

#[wasm_bindgen_test]
async fn install_intercepts_global_fetch_until_uninstall() {
    let auth = logged_in(&[]).await;
    let global: JsValue = js_sys::global().into();
    let original = get(&global, "fetch");
    auth.install();
    let fetch: Function = get(&global, "fetch").unchecked_into();
    let p: Promise = fetch
        .call2(
            &JsValue::NULL,
            &format!("{SERVER}/test/echo").into(),
            &hooks_init(),
        )
        .unwrap()
        .into();
    let res: Response = await_ok(p).await.into();
    assert!(get(&body(res).await, "authorization").as_string().is_some());
    auth.uninstall();
    assert_eq!(get(&global, "fetch"), original);
}

#[wasm_bindgen_test]
async fn banking_mode_ends_the_session_at_expiry() {
    let auth = logged_in(&[("autoRefresh", false.into())]).await;
    let log = record(&auth);
    assert_eq!(me_status(&auth).await, 200);
    sleep(4_100).await;
    let (name, code) = rejection(auth.fetch(format!("{SERVER}/api/me").into(), None)).await;
    assert_eq!(
        (name.as_str(), code.as_str()),
        ("SessionExpiredError", "expired")
    );
    assert_eq!(events(&log), ["sessionExpired:expired"]);
    assert_eq!(count("refresh_calls").await, 0.0);
}

#[wasm_bindgen_test]
async fn bad_options_are_config_errors() {
    for bad in [
        obj(&[("allowedOrigin", JsValue::from_str("x"))]),
        obj(&[("allowedOrigins", JsValue::from_str("https://a.example"))]),
        obj(&[("allowedOrigins", Array::of1(&"*".into()).into())]),
        obj(&[("refreshLeewaySeconds", JsValue::from_str("30"))]),
        obj(&[(
            "csrfHeader",
            obj(&[("name", "bad header".into()), ("value", "1".into())]),
        )]),
        obj(&[("csrfHeader", JsValue::NULL)]),
        obj(&[("refreshTimeoutMs", JsValue::from(4_294_967_296.0))]),
        JsValue::from_str("not an object"),
    ] {
        let err = TokenManager::new(Some(bad.clone()))
            .await
            .err()
            .unwrap_or_else(|| panic!("accepted {}", json(&bad)));
        assert_eq!(get(&err, "name").as_string().unwrap(), "ConfigError");
    }
    let auth = manager(&[]).await;
    assert!(auth.on("nonsense", Function::new_no_args("")).is_err());
}

#[wasm_bindgen_test]
async fn no_token_is_left_in_any_storage() {
    // Run a full flow: login, refresh, fetch.
    let auth = logged_in(&[]).await;
    await_ok(auth.refresh(Some(obj(&[("force", true.into())])))).await;
    let token = await_ok(auth.get_access_token()).await.as_string().unwrap();
    auth_fetch(&auth, "/api/me", JsValue::UNDEFINED).await;

    let w = window();
    let local = w.local_storage().unwrap().unwrap();
    let session = w.session_storage().unwrap().unwrap();
    assert_eq!(local.length().unwrap(), 0);
    assert_eq!(session.length().unwrap(), 0);
    let cookies = w
        .document()
        .unwrap()
        .unchecked_into::<web_sys::HtmlDocument>()
        .cookie()
        .unwrap();
    assert!(
        !cookies.contains(&token) && !cookies.contains("eyJ") && !cookies.contains("tw_refresh"),
        "{cookies}"
    );
    assert!(
        cookies.contains("tw_session=1"),
        "only the hint is visible: {cookies}"
    );
    // IndexedDB holds the DPoP key and nothing else: a CryptoKey that cannot be exported.
    let idb = get(&w.into(), "indexedDB");
    let databases: Function = get(&idb, "databases").unchecked_into();
    let list: Array = await_ok(databases.call0(&idb).unwrap().into()).await.into();
    assert_eq!(list.length(), 1);
    assert_eq!(
        get(&list.get(0), "name").as_string().unwrap(),
        "tokenwarden"
    );
    let dump: JsValue = await_ok(idb_dump()).await;
    let text = json(&dump);
    let payload = token.split('.').nth(1).unwrap();
    assert!(!text.contains(&token) && !text.contains(payload), "{text}");
    assert!(text.contains(r#""extractable":false"#), "{text}");
}

#[wasm_bindgen(
    inline_js = "export function idb_dump() { return new Promise((ok, no) => { \
    const r = indexedDB.open('tokenwarden'); r.onerror = () => no(r.error); \
    r.onsuccess = () => { const db = r.result; const tx = db.transaction(db.objectStoreNames, 'readonly'); \
      const out = []; for (const n of db.objectStoreNames) { const c = tx.objectStore(n).openCursor(); \
        c.onsuccess = () => { const k = c.result; if (!k) return; const v = k.value; \
          out.push({ key: k.key, h: v.h, at: v.at, extractable: v.k.extractable, type: v.k.type, \
            usages: v.k.usages }); k.continue(); }; } \
      tx.oncomplete = () => { db.close(); ok(out); }; }; }); }"
)]
extern "C" {
    fn idb_dump() -> Promise;
}

// ---- sign-in with an OpenID Connect provider ---------------------------------------------------
// The whole redirect through a provider is tests/e2e's; here, each half of it against this
// client: what loginWithRedirect leaves behind and where it sends the page, and what restore()
// makes of the page the provider's answer comes back to.

/// The name the manager keys its state under (its lock, its stored key, this tab's redirect
/// sign-in in sessionStorage).
fn state_name(origin: &str) -> String {
    format!("tokenwarden {origin}/auth/refresh")
}

fn session_storage() -> web_sys::Storage {
    window().session_storage().unwrap().unwrap()
}

fn page_url() -> String {
    window().location().href().unwrap()
}

#[wasm_bindgen(inline_js = "
function db(mode, f) { return new Promise((ok, no) => { const r = indexedDB.open('tokenwarden');
  r.onerror = () => no(r.error); r.onsuccess = () => { const d = r.result; const tx = d.transaction('keys', mode);
    const out = f(tx.objectStore('keys')); tx.oncomplete = () => { d.close(); ok(out?.result); };
    tx.onerror = tx.onabort = () => { d.close(); no(tx.error); }; }; }); }
export async function idb_get(slot) { return db('readonly', (s) => s.get(slot)); }
export async function idb_put(slot, record) { return db('readwrite', (s) => s.put(record, slot)); }
export async function idb_del(slot) { return db('readwrite', (s) => s.delete(slot)); }
const b64u = (b) => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
/** RFC 7638: the thumbprint of the public key in a stored record's proof header. */
export async function thumbprint(record) {
  const h = JSON.parse(atob(record.h.replace(/-/g, '+').replace(/_/g, '/')));
  const { crv, kty, x, y } = h.jwk;
  return b64u(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(JSON.stringify({ crv, kty, x, y }))));
}
/** A key as the client stores one, bound to nothing. */
export async function fresh_key() {
  const p = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  const { crv, kty, x, y } = await crypto.subtle.exportKey('jwk', p.publicKey);
  const h = b64u(new TextEncoder().encode(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { crv, kty, x, y } })));
  return { k: p.privateKey, h, at: Date.now() };
}
export function set_url(u) { history.replaceState(history.state, '', u); }
/** loginWithRedirect(args) by a manager of the package in a frame of this origin: where the
 * frame was sent (or the rejection, as {name, message}). */
export async function redirect_in_frame(pkg, options, args) {
  const f = document.createElement('iframe');
  document.body.append(f);
  try {
    const m = await new f.contentWindow.Function('u', 'return import(u)')(pkg);
    await m.default();
    const auth = new m.TokenManager(options);
    const loaded = new Promise((ok) => f.addEventListener('load', ok, { once: true }));
    const gone = auth.loginWithRedirect(args).then(() => 'resolved', (e) => ({ name: e.name, message: e.message }));
    const r = await Promise.race([loaded, gone, new Promise((ok) => setTimeout(ok, 5000, 'timeout'))]);
    return r?.type === 'load' ? f.contentWindow.location.href : r;
  } finally { f.remove(); }
}
")]
extern "C" {
    fn idb_get(slot: &str) -> Promise;
    fn idb_put(slot: &str, record: &JsValue) -> Promise;
    fn idb_del(slot: &str) -> Promise;
    fn thumbprint(record: &JsValue) -> Promise;
    fn fresh_key() -> Promise;
    fn set_url(url: &str);
    fn redirect_in_frame(pkg: &str, options: &JsValue, args: &JsValue) -> Promise;
}

#[wasm_bindgen_test]
async fn login_with_redirect_rejects_bad_arguments_and_leaves_nothing_behind() {
    let auth = manager(&[]).await;
    let keys_before = json(&await_ok(idb_dump()).await);
    let long = format!("/{}", "a".repeat(512));
    let cases: Vec<JsValue> = vec![
        JsValue::UNDEFINED,
        obj(&[]),
        obj(&[("provider", JsValue::from(42))]),
        obj(&[("provider", "".into())]),
        obj(&[("provider", "Google".into())]),
        obj(&[("provider", "my idp".into())]),
        obj(&[("provider", "a".repeat(33).into())]),
        obj(&[("provider", "idp/../x".into())]),
        obj(&[
            ("provider", "idp".into()),
            ("returnTo", "//evil.example".into()),
        ]),
        obj(&[
            ("provider", "idp".into()),
            ("returnTo", "/\\evil.example".into()),
        ]),
        obj(&[("provider", "idp".into()), ("returnTo", "/a\\b".into())]),
        obj(&[
            ("provider", "idp".into()),
            ("returnTo", "https://evil.example/".into()),
        ]),
        obj(&[("provider", "idp".into()), ("returnTo", "app".into())]),
        obj(&[("provider", "idp".into()), ("returnTo", "/a#b".into())]),
        obj(&[("provider", "idp".into()), ("returnTo", "/a\nb".into())]),
        obj(&[("provider", "idp".into()), ("returnTo", "/a\u{7f}".into())]),
        obj(&[("provider", "idp".into()), ("returnTo", "/a b".into())]),
        obj(&[
            ("provider", "idp".into()),
            ("returnTo", long.as_str().into()),
        ]),
        obj(&[("provider", "idp".into()), ("returnTo", JsValue::NULL)]),
    ];
    for args in cases {
        // A rejected promise, never a throw (as the other account methods).
        let p: Promise = auth
            .invoke("loginWithRedirect", std::slice::from_ref(&args))
            .unwrap_or_else(|e| panic!("threw for {}: {e:?}", json(&args)))
            .into();
        let (name, _) = rejection(p).await;
        assert_eq!(name, "ConfigError", "{}", json(&args));
    }
    assert_eq!(
        json(&await_ok(idb_dump()).await),
        keys_before,
        "no key made"
    );
    assert_eq!(
        session_storage().length().unwrap(),
        0,
        "no sign-in under way"
    );
}

#[wasm_bindgen_test]
async fn login_with_redirect_keeps_a_new_key_aside_and_sends_the_page_to_the_servers_start() {
    let here = window().location().origin().unwrap();
    let pkg_url = format!("{SERVER}/pkg/tokenwarden.js");
    let options = obj(&[
        ("baseUrl", here.as_str().into()),
        ("crossTab", false.into()),
    ]);
    let args = obj(&[
        ("provider", "corp-sso".into()),
        ("returnTo", "/back?tab=2&x=%2F".into()),
    ]);
    let went = await_ok(redirect_in_frame(&pkg_url, &options, &args)).await;
    let went = went
        .as_string()
        .unwrap_or_else(|| panic!("{}", json(&went)));
    let prefix = format!(
        "{here}/auth/oidc/corp-sso/start?return_to=%2Fback%3Ftab%3D2%26x%3D%252F&dpop_jkt="
    );
    assert!(went.starts_with(&prefix), "{went}");
    let jkt = &went[prefix.len()..];
    assert_eq!(jkt.len(), 43, "a SHA-256 thumbprint, base64url: {jkt}");
    // The key is stored under its thumbprint, not where the live session's key is; this tab's
    // sessionStorage names it for the next restore().
    let name = state_name(&here);
    let record = await_ok(idb_get(jkt)).await;
    assert!(record.is_object(), "stored under {jkt}");
    assert_eq!(await_ok(thumbprint(&record)).await, JsValue::from_str(jkt));
    assert_eq!(get(&get(&record, "k"), "extractable"), JsValue::FALSE);
    assert!(
        await_ok(idb_get(&name)).await.is_undefined(),
        "the session's slot untouched"
    );
    assert_eq!(
        session_storage().get_item(&name).unwrap().as_deref(),
        Some(jkt)
    );
    await_ok(idb_del(jkt)).await;
    session_storage().remove_item(&name).unwrap();

    // Without DPoP: no key, no dpop_jkt.
    let options = obj(&[
        ("baseUrl", here.as_str().into()),
        ("crossTab", false.into()),
        ("dpop", false.into()),
    ]);
    let args = obj(&[("provider", "idp".into()), ("returnTo", "/".into())]);
    let went = await_ok(redirect_in_frame(&pkg_url, &options, &args)).await;
    assert_eq!(
        went.as_string().as_deref(),
        Some(format!("{here}/auth/oidc/idp/start?return_to=%2F").as_str())
    );
    assert_eq!(
        session_storage().get_item(&name).unwrap().as_deref(),
        Some("")
    );
    session_storage().remove_item(&name).unwrap();
}

#[wasm_bindgen_test]
async fn restore_after_a_refused_redirect_sign_in_rejects_with_the_code_and_cleans_the_address() {
    let original = page_url();
    let name = state_name(SERVER);
    for (query, code, left) in [
        ("?tw_error=access_denied", "access_denied", ""),
        (
            "?a=1&tw_error=account_not_linked&b=%20",
            "account_not_linked",
            "?a=1&b=%20",
        ),
        (
            "?a=1&tw_error=provider_unavailable",
            "provider_unavailable",
            "?a=1",
        ),
        (
            "?tw_error=from_a_newer_server&a",
            "from_a_newer_server",
            "?a",
        ),
        ("?tw_error=%3Cimg%20src%3Dx%3E", "federation_failed", ""),
    ] {
        // The key this tab's sign-in made, to be discarded.
        let key = await_ok(fresh_key()).await;
        await_ok(idb_put("pending-test-key", &key)).await;
        session_storage()
            .set_item(&name, "pending-test-key")
            .unwrap();
        set_url(&format!("/some/page{query}#frag"));
        let auth = manager(&[]).await;
        let (name_, code_) = rejection(auth.restore()).await;
        assert_eq!(
            (name_.as_str(), code_.as_str()),
            ("LoginError", code),
            "{query}"
        );
        let location = window().location();
        assert_eq!(location.pathname().unwrap(), "/some/page");
        assert_eq!(location.search().unwrap(), left, "{query}");
        assert_eq!(location.hash().unwrap(), "#frag");
        assert_eq!(session_storage().get_item(&name).unwrap(), None);
        sleep(50).await;
        assert!(
            await_ok(idb_get("pending-test-key")).await.is_undefined(),
            "key discarded"
        );
    }
    set_url(&original);
}

/// A link to the app with `tw_error` (another site's, no XSS needed) in a tab that started no
/// redirect sign-in: no refusal to show, and the session restores as on any page load.
#[wasm_bindgen_test]
async fn a_tw_error_this_tab_did_not_ask_for_is_no_refusal() {
    let original = page_url();
    let name = state_name(SERVER);
    let _live = logged_in(&[]).await;
    session_storage().remove_item(&name).unwrap();
    set_url("/some/page?tw_error=account_not_linked");
    let auth = manager(&[]).await;
    assert_eq!(await_ok(auth.restore()).await.as_bool(), Some(true));
    set_url(&original);
}

#[wasm_bindgen_test]
async fn restore_takes_up_the_session_a_redirect_sign_in_opened_as_a_login() {
    let name = state_name(SERVER);
    // Another tab's session, with its key where the client keeps it...
    let _other_tab = logged_in(&[]).await;
    let theirs = await_ok(idb_get(&name)).await;
    // ...and the session the server opened at the end of this tab's sign-in (here: a login),
    // bound to the key kept aside for it.
    let _signing_in = logged_in(&[]).await;
    let ours = await_ok(idb_get(&name)).await;
    await_ok(idb_put("pending-test-key", &ours)).await;
    await_ok(idb_put(&name, &theirs)).await;
    session_storage()
        .set_item(&name, "pending-test-key")
        .unwrap();

    // The page the provider's answer came back to.
    let auth = manager(&[]).await;
    let log = record(&auth);
    assert_eq!(await_ok(auth.restore()).await, JsValue::TRUE);
    assert_eq!(events(&log), ["login"], "a login, as a password login's");
    assert_eq!(me_status(&auth).await, 200);
    // The key is the session's from now on, where a reload (and the other tabs) find it.
    assert_eq!(
        json(&get(&await_ok(idb_get(&name)).await, "h")),
        json(&get(&ours, "h"))
    );
    assert_eq!(session_storage().get_item(&name).unwrap(), None);
    sleep(50).await;
    assert!(await_ok(idb_get("pending-test-key")).await.is_undefined());
    drop(auth);
    let reloaded = manager(&[]).await;
    assert_eq!(await_ok(reloaded.restore()).await, JsValue::TRUE);
    assert_eq!(me_status(&reloaded).await, 200);
}

#[wasm_bindgen_test]
async fn a_redirect_sign_in_given_up_at_the_provider_leaves_the_live_session_alone() {
    let name = state_name(SERVER);
    let _live = logged_in(&[]).await;
    let before = await_ok(idb_get(&name)).await;
    // The sign-in's key, bound to nothing: the user came back without signing in.
    let key = await_ok(fresh_key()).await;
    await_ok(idb_put("pending-test-key", &key)).await;
    session_storage()
        .set_item(&name, "pending-test-key")
        .unwrap();

    let auth = manager(&[]).await;
    let log = record(&auth);
    assert_eq!(
        await_ok(auth.restore()).await,
        JsValue::TRUE,
        "the live session"
    );
    assert_eq!(events(&log), ["refresh"]);
    assert_eq!(me_status(&auth).await, 200);
    assert_eq!(
        json(&get(&await_ok(idb_get(&name)).await, "h")),
        json(&get(&before, "h"))
    );
    assert_eq!(session_storage().get_item(&name).unwrap(), None);
    sleep(50).await;
    assert!(await_ok(idb_get("pending-test-key")).await.is_undefined());
}
