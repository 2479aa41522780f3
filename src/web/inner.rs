//! The state behind one `TokenManager`, and everything it does over the network. Decisions are
//! the core's; this file performs them. No `RefCell` borrow is held across an `.await`.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, future_to_promise};
use web_sys::{
    AbortController, Headers, ReadableStream, Request, RequestCredentials, RequestInit, Response,
};

use super::js::{self, ErrorName, cat, error, get, object};
use super::options::{Config, location_href};
use super::tabs::Tabs;
use crate::core::{
    Begin, Check, EndReason, Handoff, Phase, RefreshOutcome, RefreshReply, Replay, Session,
    Settled, Transient, backoff_ms, decode_payload,
};

/// How long a new tab waits for a peer to hand it a live token before refreshing itself.
const ASK_WAIT_MS: f64 = 150.0;
/// How long a tab that waited for the lock waits for the holder's token before refreshing
/// itself (the holder may have failed or been closed).
const HANDOFF_WAIT_MS: f64 = 300.0;

/// Largest login/refresh response body we read.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// What `install()` puts in place of `globalThis.fetch`.
type Interceptor = Closure<dyn FnMut(JsValue, JsValue) -> Promise>;

pub struct Inner {
    pub config: Config,
    pub session: RefCell<Session>,
    /// The refresh in flight: every caller that needs it awaits this one promise.
    in_flight: RefCell<Option<Promise>>,
    listeners: RefCell<Vec<(u32, &'static str, Function)>>,
    next_listener: Cell<u32>,
    /// `globalThis.fetch` as it was at construction: our own requests never go through
    /// `install()`'s interceptor.
    fetch_fn: Function,
    installed: RefCell<Option<Interceptor>>,
    /// `None` with `crossTab: false` or where BroadcastChannel is missing.
    tabs: Option<Tabs>,
}

pub const EVENTS: [&str; 5] = [
    "login",
    "refresh",
    "sessionExpired",
    "tokenReused",
    "logout",
];

fn session_expired(reason: &str) -> JsValue {
    error(
        ErrorName::SessionExpired,
        reason,
        "the session is over; log in again",
        &[],
    )
}

fn network_error(t: Transient) -> JsValue {
    match t {
        Transient::Network => error(
            ErrorName::Network,
            "network",
            "the server could not be reached",
            &[],
        ),
        Transient::Timeout => error(
            ErrorName::Network,
            "timeout",
            "the server did not answer in time",
            &[],
        ),
        Transient::Status(s) => error(
            ErrorName::Network,
            "server_error",
            "the server is having trouble; try again",
            &[("status", JsValue::from(s))],
        ),
    }
}

/// A state the library should never reach (a bug here, not the server's fault).
fn internal_error() -> JsValue {
    error(
        ErrorName::Refresh,
        "internal",
        "tokenwarden reached a state it should not; please report it",
        &[],
    )
}

fn refresh_error(status: u16) -> JsValue {
    error(
        ErrorName::Refresh,
        "unexpected_response",
        "the refresh endpoint answered outside the protocol",
        &[("status", JsValue::from(status))],
    )
}

impl Inner {
    pub fn new(config: Config) -> Result<Rc<Inner>, JsValue> {
        let fetch_fn = get(&js::global().into(), "fetch")
            .dyn_into::<Function>()
            .map_err(|_| js::config_error("this environment has no fetch"))?;
        let maybe = match &config.hint_cookie {
            None => true,
            Some(name) => hint_present(name),
        };
        Ok(Rc::new_cyclic(|weak: &Weak<Inner>| {
            let tabs = config.cross_tab.then(|| {
                let weak = weak.clone();
                let name = cat(&["tokenwarden ", &config.refresh_url]);
                Tabs::new(&name, move |message| {
                    if let Some(inner) = weak.upgrade() {
                        inner.on_peer_message(&message);
                    }
                })
            });
            Inner {
                session: RefCell::new(Session::new(config.policy, maybe)),
                config,
                in_flight: RefCell::new(None),
                listeners: RefCell::new(Vec::new()),
                next_listener: Cell::new(0),
                fetch_fn,
                installed: RefCell::new(None),
                tabs: tabs.flatten(),
            }
        }))
    }

    // ---- other tabs -----------------------------------------------------------------------

    /// A message from another tab. Anything malformed is ignored.
    fn on_peer_message(&self, m: &JsValue) {
        let now = js::now_ms();
        let at = js::get_f64(m, "at")
            .filter(|t| t.is_finite())
            .unwrap_or(now);
        match js::get_string(m, "t").as_deref() {
            Some("ask") => {
                let h = self.session.borrow().handoff(now);
                if let (Some(h), Some(tabs)) = (h, &self.tabs) {
                    tabs.post_token("refresh", &h);
                }
            }
            Some("token") => {
                let (Some(token), Some(lifetime)) =
                    (js::get_string(m, "token"), js::get_f64(m, "lifetime"))
                else {
                    return;
                };
                let h = Handoff {
                    token,
                    lifetime_secs: lifetime,
                    received_at_ms: at,
                };
                if self.session.borrow_mut().adopt(h).is_some() {
                    if js::get_string(m, "kind").as_deref() == Some("login") {
                        self.emit("login", object(&[]));
                    } else {
                        self.emit_refresh();
                    }
                }
            }
            Some("logout") if self.session.borrow_mut().end_if_older(at) => {
                self.emit("logout", object(&[]));
            }
            Some("ended") => {
                let reason = match js::get_string(m, "reason").as_deref() {
                    Some("token_reused") => EndReason::TokenReused,
                    Some("expired") => EndReason::Expired,
                    _ => EndReason::InvalidGrant,
                };
                if self.session.borrow_mut().end_if_older(at) {
                    self.announce_end(reason);
                }
            }
            _ => {}
        }
    }

    /// Waits until a token newer than `generation` arrives (from a peer) or `max_ms` passes.
    async fn await_newer(&self, generation: u64, max_ms: f64) {
        let deadline = js::now_ms() + max_ms;
        while js::now_ms() < deadline {
            {
                let s = self.session.borrow();
                if s.generation() > generation || s.phase() == Phase::Anonymous {
                    return;
                }
            }
            js::sleep(10.0).await;
        }
    }

    fn broadcast_token(&self, kind: &str) {
        let h = self.session.borrow().handoff(js::now_ms());
        if let (Some(tabs), Some(h)) = (&self.tabs, h) {
            tabs.post_token(kind, &h);
        }
    }

    fn broadcast_end(&self, kind: &str, reason: Option<EndReason>) {
        if let Some(tabs) = &self.tabs {
            tabs.post_end(kind, reason.map(EndReason::as_str), js::now_ms());
        }
    }

    // ---- events ---------------------------------------------------------------------------

    pub fn on(self: &Rc<Self>, event: &str, handler: Function) -> Result<JsValue, JsValue> {
        let Some(&name) = EVENTS.iter().find(|e| **e == event) else {
            return Err(js::config_error(&cat(&["unknown event: ", event])));
        };
        let id = self.next_listener.get();
        self.next_listener.set(id + 1);
        self.listeners.borrow_mut().push((id, name, handler));
        let weak: Weak<Inner> = Rc::downgrade(self);
        let off = Closure::once_into_js(move || {
            if let Some(inner) = weak.upgrade() {
                inner.listeners.borrow_mut().retain(|(i, _, _)| *i != id);
            }
        });
        Ok(off)
    }

    pub fn emit(&self, event: &str, detail: JsValue) {
        // Copy first: a handler may call on() or off().
        let handlers: Vec<Function> = self
            .listeners
            .borrow()
            .iter()
            .filter(|(_, e, _)| *e == event)
            .map(|(_, _, f)| f.clone())
            .collect();
        for h in handlers {
            if let Err(e) = h.call1(&JsValue::NULL, &detail) {
                js::report(&e);
            }
        }
    }

    fn announce_end(&self, reason: EndReason) {
        if reason == EndReason::TokenReused {
            self.emit("tokenReused", object(&[]));
        }
        self.emit(
            "sessionExpired",
            object(&[("reason", JsValue::from_str(reason.as_str()))]),
        );
    }

    // ---- raw requests ---------------------------------------------------------------------

    async fn send(&self, request: &Request) -> Result<Response, JsValue> {
        self.send_raw(request, &JsValue::UNDEFINED)
            .await?
            .dyn_into::<Response>()
    }

    /// POST to an auth endpoint with cookies, the CSRF header, an optional bearer token and an
    /// optional JSON body; aborted after the refresh timeout.
    async fn post_auth(
        &self,
        url: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> Result<Response, Transient> {
        let headers = Headers::new().map_err(|_| Transient::Network)?;
        let _ = headers.set(&self.config.csrf_name, &self.config.csrf_value);
        if let Some(t) = bearer {
            let _ = headers.set("Authorization", &cat(&["Bearer ", t]));
        }
        let init = RequestInit::new();
        init.set_method("POST");
        init.set_credentials(RequestCredentials::Include);
        if let Some(b) = body {
            let _ = headers.set("Content-Type", "application/json");
            init.set_body(&JsValue::from_str(b));
        }
        init.set_headers(&headers);
        let controller = AbortController::new().map_err(|_| Transient::Network)?;
        init.set_signal(Some(&controller.signal()));
        let request = Request::new_with_str_and_init(url, &init).map_err(|_| Transient::Network)?;

        let timed_out = Rc::new(Cell::new(false));
        let abort = {
            let timed_out = timed_out.clone();
            let controller = controller.clone();
            Closure::once_into_js(move || {
                timed_out.set(true);
                controller.abort();
            })
        };
        let timer = js::after(self.config.refresh_timeout_ms, abort.unchecked_ref());
        let result = self.send(&request).await;
        js::clear_timeout(&timer);
        result.map_err(|_| {
            if timed_out.get() {
                Transient::Timeout
            } else {
                Transient::Network
            }
        })
    }

    /// A login or refresh response, read as far as the core needs it. A body that is huge,
    /// unreadable or not JSON just leaves the fields empty.
    async fn read_reply(response: &Response) -> Result<RefreshReply, Transient> {
        let mut reply = RefreshReply {
            status: response.status(),
            ..RefreshReply::default()
        };
        let too_big = response
            .headers()
            .get("content-length")
            .ok()
            .flatten()
            .is_some_and(|l| js_sys::parse_float(&l) > MAX_REPLY_BYTES as f64);
        if too_big {
            return Ok(reply);
        }
        let text = match response.text() {
            Ok(p) => JsFuture::from(p).await.map_err(|_| Transient::Network)?,
            Err(_) => return Ok(reply),
        };
        let Some(body) = text
            .as_string()
            .filter(|t| t.len() <= MAX_REPLY_BYTES)
            .and_then(|t| js::parse_json(&t))
        else {
            return Ok(reply);
        };
        reply.access_token = js::get_string(&body, "access_token");
        reply.token_type = js::get_string(&body, "token_type");
        reply.expires_in = js::get_f64(&body, "expires_in");
        reply.error = js::get_string(&body, "error");
        reply.claims_lifetime = reply.access_token.as_deref().and_then(|t| {
            let claims = js::parse_json(&decode_payload(t).ok()?)?;
            Some(js::get_f64(&claims, "exp")? - js::get_f64(&claims, "iat")?)
        });
        Ok(reply)
    }

    // ---- refresh --------------------------------------------------------------------------

    /// One refresh request, as the core classifies it.
    async fn refresh_request(&self) -> RefreshOutcome {
        let response = match self.post_auth(&self.config.refresh_url, None, None).await {
            Ok(r) => r,
            Err(t) => return RefreshOutcome::Transient(t),
        };
        match Self::read_reply(&response).await {
            Ok(reply) => reply.classify(),
            Err(t) => RefreshOutcome::Transient(t),
        }
    }

    /// One refresh, retried with backoff on transient failures.
    async fn refresh_with_retries(&self) -> RefreshOutcome {
        let mut attempt = 0;
        loop {
            match self.refresh_request().await {
                RefreshOutcome::Transient(t) => {
                    attempt += 1;
                    match backoff_ms(attempt, js_sys::Math::random()) {
                        Some(delay) => js::sleep(delay).await,
                        None => return RefreshOutcome::Transient(t),
                    }
                }
                other => return other,
            }
        }
    }

    /// Records a refresh's outcome and tells the other tabs (before the lock is released, so
    /// that the tabs waiting for it find the token already there).
    fn settle(&self, epoch: u64, outcome: RefreshOutcome) -> Settled {
        let settled = self
            .session
            .borrow_mut()
            .finish_refresh(epoch, outcome, js::now_ms());
        match settled {
            Settled::Refreshed { .. } => self.broadcast_token("refresh"),
            Settled::Ended {
                reason,
                was_active: true,
            } => self.broadcast_end("ended", Some(reason)),
            _ => {}
        }
        settled
    }

    /// The refresh this caller started. Across tabs: ask the peers first if this tab has no
    /// token yet; take the lock; check again (a peer may have refreshed while we waited);
    /// only then refresh.
    async fn run_refresh(self: Rc<Self>, epoch: u64) -> Result<JsValue, JsValue> {
        let start = self.session.borrow().generation();
        let settled = match &self.tabs {
            None => {
                let outcome = self.refresh_with_retries().await;
                self.settle(epoch, outcome)
            }
            Some(tabs) => {
                if self.session.borrow().phase() == Phase::Maybe {
                    tabs.post_ask();
                    self.await_newer(start, ASK_WAIT_MS).await;
                }
                if self.session.borrow().generation() > start {
                    self.session.borrow_mut().finish_by_peer(epoch)
                } else {
                    let me = self.clone();
                    let locked = tabs
                        .locked(move |contended| async move {
                            if contended {
                                me.await_newer(start, HANDOFF_WAIT_MS).await;
                            }
                            if me.session.borrow().generation() > start {
                                return me.session.borrow_mut().finish_by_peer(epoch);
                            }
                            let outcome = me.refresh_with_retries().await;
                            me.settle(epoch, outcome)
                        })
                        .await;
                    match locked {
                        Some(settled) => settled,
                        None => self.settle(epoch, RefreshOutcome::Transient(Transient::Network)),
                    }
                }
            }
        };
        *self.in_flight.borrow_mut() = None;
        match settled {
            Settled::Refreshed { .. } => {
                self.emit_refresh();
                Ok(JsValue::UNDEFINED)
            }
            Settled::Ended { reason, was_active } => {
                if was_active {
                    self.announce_end(reason);
                    Err(session_expired(reason.as_str()))
                } else {
                    // A page-load guess that was wrong: just anonymous.
                    Ok(JsValue::UNDEFINED)
                }
            }
            Settled::Failed(t) => Err(network_error(t)),
            Settled::Unexpected(status) => Err(refresh_error(status)),
            Settled::Stale => Ok(JsValue::UNDEFINED),
        }
    }

    fn emit_refresh(&self) {
        let expires_in = self
            .session
            .borrow()
            .expires_in_ms(js::now_ms())
            .unwrap_or(0.0);
        self.emit(
            "refresh",
            object(&[("expiresIn", JsValue::from(expires_in / 1000.0))]),
        );
    }

    /// Starts a refresh or joins the one in flight, and waits for it.
    async fn refresh_once(self: &Rc<Self>) -> Result<(), JsValue> {
        let begin = self.session.borrow_mut().begin_refresh();
        let promise = match begin {
            Begin::Join => {
                let joined = self.in_flight.borrow().clone();
                joined.ok_or_else(internal_error)?
            }
            Begin::Start { epoch } => {
                let p = future_to_promise(self.clone().run_refresh(epoch));
                *self.in_flight.borrow_mut() = Some(p.clone());
                p
            }
        };
        JsFuture::from(promise).await.map(|_| ())
    }

    /// The token to send now, refreshing first if needed; `None` when there is no session.
    pub async fn token_for_request(self: &Rc<Self>) -> Result<Option<(String, u64)>, JsValue> {
        for _ in 0..3 {
            let check = self.session.borrow().check(js::now_ms());
            match check {
                Check::Fresh { token, generation } => return Ok(Some((token, generation))),
                Check::Anonymous => return Ok(None),
                Check::Expired => {
                    self.expire();
                    return Err(session_expired(EndReason::Expired.as_str()));
                }
                Check::Refresh => self.refresh_once().await?,
            }
        }
        // Refreshed, yet the new token is already due: the server's lifetimes are off.
        Err(refresh_error(200))
    }

    /// A token newer than `generation`: refreshes unless another caller already did.
    pub async fn token_newer_than(
        self: &Rc<Self>,
        generation: u64,
    ) -> Result<(String, u64), JsValue> {
        for _ in 0..2 {
            {
                let session = self.session.borrow();
                if session.generation() > generation
                    && let Some(t) = session.token()
                {
                    return Ok((t.to_owned(), session.generation()));
                }
                if session.phase() == Phase::Anonymous {
                    return Err(session_expired("no_session"));
                }
            }
            self.refresh_once().await?;
        }
        Err(session_expired("no_session"))
    }

    /// `autoRefresh: false` and the token ran out: end the session here and on the server.
    fn expire(self: &Rc<Self>) {
        let token = self.session.borrow().token().map(str::to_owned);
        self.session.borrow_mut().end(js::now_ms());
        self.announce_end(EndReason::Expired);
        self.broadcast_end("ended", Some(EndReason::Expired));
        let me = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = me
                .post_auth(&me.config.logout_url, token.as_deref(), None)
                .await;
        });
    }

    // ---- login / logout / restore ---------------------------------------------------------

    pub async fn login(self: Rc<Self>, credentials: JsValue) -> Result<JsValue, JsValue> {
        let (Some(email), Some(password)) = (
            js::get_string(&credentials, "email"),
            js::get_string(&credentials, "password"),
        ) else {
            return Err(js::config_error("login takes {email, password} strings"));
        };
        let body = object(&[
            ("email", JsValue::from_str(&email)),
            ("password", JsValue::from_str(&password)),
        ]);
        let body = js::stringify(&body).unwrap_or_default();
        let response = self
            .post_auth(&self.config.login_url, None, Some(&body))
            .await
            .map_err(network_error)?;
        let retry_after = response
            .headers()
            .get("retry-after")
            .ok()
            .flatten()
            .map(|v| js_sys::parse_float(&v))
            .filter(|v| v.is_finite());
        let reply = Self::read_reply(&response).await.map_err(network_error)?;
        let status = reply.status;
        let code = reply.error.clone();
        match reply.classify() {
            RefreshOutcome::Token {
                access_token,
                lifetime_secs,
            } => {
                self.session
                    .borrow_mut()
                    .login(access_token, lifetime_secs, js::now_ms());
                self.broadcast_token("login");
                self.emit("login", object(&[]));
                Ok(JsValue::UNDEFINED)
            }
            RefreshOutcome::Transient(Transient::Status(429)) => Err(error(
                ErrorName::Login,
                "too_many_attempts",
                "too many login attempts; retry later",
                &[
                    ("status", JsValue::from(429)),
                    (
                        "retryAfter",
                        retry_after.map_or(JsValue::UNDEFINED, JsValue::from),
                    ),
                ],
            )),
            RefreshOutcome::Transient(t) => Err(network_error(t)),
            _ if status == 200 => Err(refresh_error(200)),
            _ => {
                let code = code.unwrap_or_else(|| "invalid_credentials".to_owned());
                let message = if code == "invalid_credentials" {
                    "the email or password is wrong"
                } else {
                    "the login was refused"
                };
                Err(error(
                    ErrorName::Login,
                    &code,
                    message,
                    &[("status", JsValue::from(status))],
                ))
            }
        }
    }

    pub async fn restore(self: Rc<Self>) -> Result<JsValue, JsValue> {
        if self.session.borrow().phase() == Phase::Anonymous {
            let maybe = match &self.config.hint_cookie {
                None => true,
                Some(name) => hint_present(name),
            };
            if !maybe {
                return Ok(JsValue::FALSE);
            }
            self.session.borrow_mut().suspect();
        }
        match self.token_for_request().await {
            Ok(t) => Ok(JsValue::from(t.is_some())),
            Err(e) if get(&e, "name").as_string().as_deref() == Some("SessionExpiredError") => {
                Ok(JsValue::FALSE)
            }
            Err(e) => Err(e),
        }
    }

    pub async fn logout(self: Rc<Self>) -> Result<JsValue, JsValue> {
        let token = self.session.borrow().token().map(str::to_owned);
        let was_active = self.session.borrow().phase() == Phase::Active;
        self.session.borrow_mut().end(js::now_ms());
        self.broadcast_end("logout", None);
        if was_active {
            self.emit("logout", object(&[]));
        }
        // The server must forget the session too, or the next page load would restore it.
        match self
            .post_auth(&self.config.logout_url, token.as_deref(), None)
            .await
        {
            Ok(r) if r.ok() => Ok(JsValue::UNDEFINED),
            Ok(r) => Err(network_error(Transient::Status(r.status()))),
            Err(t) => Err(network_error(t)),
        }
    }

    // ---- fetch ----------------------------------------------------------------------------

    pub async fn fetch(self: Rc<Self>, input: JsValue, init: JsValue) -> Result<JsValue, JsValue> {
        let url = match input.dyn_ref::<Request>() {
            Some(r) => r.url(),
            None => js::global_string(&input),
        };
        if !origin_of(&url).is_some_and(|o| self.config.is_allowed(&o)) {
            // Another origin: not ours to touch, and it costs nothing.
            return self.send_raw(&input, &init).await;
        }
        let mut out = Outgoing::new(input, init, url)?;
        if out.headers.has("authorization").unwrap_or(false) {
            // The caller's own Authorization wins.
            return self.send_raw(&out.input, &out.init).await;
        }
        let Some((token, generation)) = self.token_for_request().await? else {
            return self.send_raw(&out.input, &out.init).await;
        };
        let response = self.send_as(&mut out, &token).await?;
        if response.status() != 401 {
            return Ok(response.into());
        }
        let decision =
            self.session
                .borrow()
                .after_unauthorized(generation, false, out.replayable());
        if decision == Replay::No {
            return Ok(response.into());
        }
        // WithCurrent or AfterRefresh: either way, the newest token (refreshing if needed).
        let (token, _) = self.token_newer_than(generation).await?;
        // The replay's answer, whatever it is, goes to the caller: one replay, never a loop.
        self.send_as(&mut out, &token).await.map(Into::into)
    }

    /// `fetch(input, init)` with the original arguments.
    async fn send_raw(&self, input: &JsValue, init: &JsValue) -> Result<JsValue, JsValue> {
        let p = self
            .fetch_fn
            .call2(&js::global().into(), input, init)?
            .dyn_into::<Promise>()?;
        JsFuture::from(p).await
    }

    /// Sends `out` with `Authorization: Bearer token`.
    async fn send_as(&self, out: &mut Outgoing, token: &str) -> Result<Response, JsValue> {
        let (input, init) = out.next(&cat(&["Bearer ", token]))?;
        self.send_raw(&input, &init).await?.dyn_into::<Response>()
    }

    // ---- install --------------------------------------------------------------------------

    pub fn install(self: &Rc<Self>) {
        if self.installed.borrow().is_some() {
            return;
        }
        let me = self.clone();
        let interceptor =
            Closure::<dyn FnMut(JsValue, JsValue) -> Promise>::new(move |input, init| {
                future_to_promise(me.clone().fetch(input, init))
            });
        js::set(&js::global().into(), "fetch", interceptor.as_ref());
        *self.installed.borrow_mut() = Some(interceptor);
    }

    pub fn uninstall(&self) {
        let Some(interceptor) = self.installed.borrow_mut().take() else {
            return;
        };
        let global: JsValue = js::global().into();
        // Only put the original back if nobody replaced our interceptor since.
        if get(&global, "fetch") == *interceptor.as_ref() {
            js::set(&global, "fetch", &self.fetch_fn);
        }
    }
}

/// A request as `fetch(input, init)` would make it, which can be sent with our header and,
/// unless its body is a one-shot stream, sent again.
///
/// A URL input is sent as `fetch(url, {...init, headers})`: every body type but a
/// `ReadableStream` can be passed to `fetch` twice, so this costs no `Request` object and no
/// clone. A `Request` input is copied once, and cloned before each send.
struct Outgoing {
    url: String,
    headers: Headers,
    /// The caller's arguments, untouched (for requests that are not ours).
    input: JsValue,
    init: JsValue,
    kind: Kind,
}

enum Kind {
    /// `fetch(url, init)`: `init` is a copy of the caller's with our `headers`.
    Url {
        init: js_sys::Object,
        streamed: bool,
    },
    /// A `Request`: the spare is cloned before each send; `None` once the body is spent.
    Request { spare: Option<Request> },
}

impl Outgoing {
    fn new(input: JsValue, init: JsValue, url: String) -> Result<Outgoing, JsValue> {
        if let Some(r) = input.dyn_ref::<Request>() {
            let copy = if init.is_undefined() {
                Request::new_with_request(r)?
            } else {
                Request::new_with_request_and_init(r, init.unchecked_ref())?
            };
            return Ok(Outgoing {
                url,
                headers: copy.headers(),
                kind: Kind::Request { spare: Some(copy) },
                input,
                init,
            });
        }
        let caller_headers = get(&init, "headers");
        let headers = if caller_headers.is_undefined() {
            Headers::new()?
        } else {
            // `new Headers(x)` accepts a Headers, a record or pairs, like fetch does.
            Headers::new_with_str_sequence_sequence(&caller_headers)?
        };
        let copy = js_sys::Object::new();
        if init.is_object() {
            js_sys::Object::assign(&copy, init.unchecked_ref());
        }
        js::set(&copy, "headers", &headers);
        let streamed = get(&init, "body").is_instance_of::<ReadableStream>();
        Ok(Outgoing {
            url,
            headers,
            kind: Kind::Url {
                init: copy,
                streamed,
            },
            input,
            init,
        })
    }

    fn replayable(&self) -> bool {
        match &self.kind {
            Kind::Url { streamed, .. } => !streamed,
            Kind::Request { spare } => spare.is_some(),
        }
    }

    /// The arguments for the next `fetch` call, carrying `authorization`.
    fn next(&mut self, authorization: &str) -> Result<(JsValue, JsValue), JsValue> {
        match &mut self.kind {
            Kind::Url { init, .. } => {
                self.headers.set("Authorization", authorization)?;
                Ok((JsValue::from_str(&self.url), init.clone().into()))
            }
            Kind::Request { spare } => {
                let current = spare.take().ok_or_else(internal_error)?;
                current.headers().set("Authorization", authorization)?;
                // Keep a clone for a replay, unless the body is a stream already in use.
                *spare = current.clone().ok();
                Ok((current.into(), JsValue::UNDEFINED))
            }
        }
    }
}

/// The serialized origin of `url`, resolved against the page.
fn origin_of(url: &str) -> Option<String> {
    let base = location_href().unwrap_or_default();
    web_sys::Url::new_with_base(url, &base)
        .ok()
        .map(|u| u.origin())
}

/// Whether `document.cookie` has the hint cookie. Without a document (a worker) a session may
/// exist: say yes and let a refresh find out.
fn hint_present(name: &str) -> bool {
    let document = get(&js::global().into(), "document");
    let Some(cookies) = js::get_string(&document, "cookie") else {
        return true;
    };
    cookies
        .split(';')
        .filter_map(|c| c.trim_start_matches(' ').split_once('='))
        .any(|(n, v)| n == name && !v.is_empty())
}
