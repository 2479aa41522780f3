//! Keeping a [`ResourceServer`] in step with the auth server (feature `feed`): its keys from the
//! discovery document's JWKS (refetched when the feed says the ring changed, when a token names
//! an unknown `kid` (at most every 10 s), and every minute), and the revocation feed (`GET /auth/revocations`, Server-Sent Events), so that a
//! logged-out or revoked token is refused within a second instead of at its `exp`.
//!
//! ```no_run
//! # async fn run() -> Result<(), tokenwarden_dpop::feed::DiscoverError> {
//! use tokenwarden_dpop::feed::{Options, discover};
//! let rs = discover("https://auth.example.com", Options {
//!     public_origins: vec!["https://api.example.com".into()],
//!     nonce_secret: std::env::var("NONCE_SECRET").ok(),         // the auth server's --dpop-nonce-secret
//!     revocation_token: std::env::var("REVOCATION_TOKEN").ok(), // its --revocation-feed-token-file's
//!     ..Options::default()
//! }).await?;
//! // rs: Arc<ResourceServer>, the state of `resource::Authenticated` and `resource::add_nonce`;
//! // it follows the auth server until the last clone of it is dropped.
//! # Ok(()) }
//! ```
//!
//! While the feed cannot be reached, the resource server's staleness policy decides
//! ([`ResourceServer::with_stale_policy`]): refuse (503) once the view is older than the
//! allowed staleness, or accept.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::access::Audience;
use crate::resource::{ConfigError, ResourceServer};

/// What a [`ResourceServer`] does while it cannot hear the feed (the auth server down, a
/// proxy cutting the stream): its view of revocations grows stale, and a token revoked in the
/// meantime would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalePolicy {
    /// How long since the feed was last heard from (its `ready` or the 15-second keepalive, as of
    /// when the auth server sent it) before the view counts as stale. Before the first snapshot
    /// the view is stale.
    pub max_staleness: Duration,
    /// While stale: refuse every token (`true`, the default: 503 `temporarily_unavailable`,
    /// `Retry-After: 5`; a logout is never missed, an auth-server outage is an API outage), or
    /// accept tokens on their signature and expiry alone (`false`: the API stays up, a token
    /// revoked meanwhile passes until its `exp`).
    pub refuse: bool,
}

impl Default for StalePolicy {
    fn default() -> Self {
        StalePolicy {
            max_staleness: Duration::from_secs(30),
            refuse: true,
        }
    }
}

impl StalePolicy {
    /// Whether tokens may be judged on this view (always, when no feed is followed).
    pub fn allows(&self, view: &Revocations) -> bool {
        if !view.followed.load(Ordering::Relaxed) || !self.refuse {
            return true;
        }
        view.staleness().is_some_and(|s| s <= self.max_staleness)
    }
}

/// Revoked sessions and tokens, as the feed told them, until they no longer matter.
#[derive(Debug)]
pub struct Revocations {
    sets: RwLock<Sets>,
    /// When the feed was last heard from after its first `ready`.
    heard_at: Mutex<Option<Instant>>,
    /// Whether a feed is followed (crate::feed::follow with a service token).
    followed: AtomicBool,
    /// [`Options::allow_insecure_http`], as [`discover`] was given it: what the JWKS the
    /// metadata names may be when it is read again.
    insecure_http: AtomicBool,
    /// A token named a `kid` not in the keys: the JWKS is fetched again (at most every
    /// [`KID_REFETCH`]).
    pub(crate) unknown_kid: tokio::sync::Notify,
    /// [`MAX_ENTRIES`] revocations still in force and another arrived, which was not kept: the
    /// view counts as stale until it no longer matters (its `until`, and the most leeway a
    /// verifier allows), whatever room there is meanwhile (no resumption sends it again).
    dropped_until: Mutex<Option<Instant>>,
    /// The JWKS fetches begun, and the number of the one whose keys are held: a fetch made
    /// beside the feed's reading that ends after one begun later keeps its older keys to
    /// itself (they may still list a key the later one saw retired).
    keys_begun: std::sync::atomic::AtomicU64,
    keys_held: Mutex<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Revocations {
            sets: RwLock::default(),
            heard_at: Mutex::default(),
            dropped_until: Mutex::new(None),
            keys_begun: std::sync::atomic::AtomicU64::new(0),
            keys_held: Mutex::new(0),
            followed: AtomicBool::new(false),
            insecure_http: AtomicBool::new(false),
            unknown_kid: tokio::sync::Notify::new(),
        }
    }
}

#[derive(Debug, Default)]
struct Sets {
    /// session id -> until (unix seconds)
    sessions: HashMap<String, i64>,
    /// jti -> until
    tokens: HashMap<String, i64>,
    /// The second of the last prune made because the sets were full: each walks every entry,
    /// so one a second at most (before, each revocation arriving while full walked them all).
    pruned: i64,
}

/// Entries kept at most (a bound on memory against a feed gone wrong); expired ones go first,
/// and while all are in force, the view is stale (fail closed, as [`StalePolicy`] says) rather
/// than a revocation forgotten.
#[cfg(not(test))]
const MAX_ENTRIES: usize = 1_000_000;
#[cfg(test)]
const MAX_ENTRIES: usize = 1_000;

/// How long past its `until` a revocation that could not be kept leaves the view stale
/// (seconds): the most leeway a verifier allows on `exp` and one for the whole seconds.
const DROPPED_MARGIN_SECS: i64 = crate::access::MAX_LEEWAY_SECS + 1;

impl Revocations {
    /// Whether a token of session `sid` with id `jti` is revoked at `now`: the feed's `until`
    /// (which counts the auth server's leeway; the resource server passes `now` less its own)
    /// is not behind `now`.
    pub fn is_revoked(&self, sid: &str, jti: &str, now: i64) -> bool {
        let sets = match self.sets.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let live = |m: &HashMap<String, i64>, k: &str| m.get(k).is_some_and(|until| *until >= now);
        live(&sets.sessions, sid) || live(&sets.tokens, jti)
    }

    /// How long since the feed was last heard from; `None` before its first `ready`, and from a
    /// revocation that could not be kept (a million in force) until it no longer matters.
    pub fn staleness(&self) -> Option<Duration> {
        let dropped = match self.dropped_until.lock() {
            Ok(d) => *d,
            Err(p) => *p.into_inner(),
        };
        if dropped.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let at = match self.heard_at.lock() {
            Ok(a) => *a,
            Err(p) => *p.into_inner(),
        };
        at.map(|t| t.elapsed())
    }

    /// A `keys` event whose JWKS refetch failed: the keys held may still list the retired one,
    /// so the view is stale until a connection is ready again (each fetches the keys first).
    fn unheard(&self) {
        match self.heard_at.lock() {
            Ok(mut a) => *a = None,
            Err(p) => *p.into_inner() = None,
        }
    }

    /// The feed said it is alive (its `ready` or a keepalive), at the auth server's time `sent`
    /// (unix seconds; `None` from a server that does not say) when this clock reads `now`. A
    /// stream held back on its way counts as heard that much earlier: what it brings is that
    /// late. A second is allowed for the whole seconds; a clock ahead of the auth server's
    /// counts as lag too (keep both in sync, as tokens need).
    /// Returns the lag counted, in seconds.
    fn heard(&self, sent: Option<i64>, now: i64) -> u64 {
        let lag = sent
            .map_or(0, |t| now.saturating_sub(t).saturating_sub(1).max(0))
            .unsigned_abs();
        let at = Instant::now().checked_sub(Duration::from_secs(lag));
        match self.heard_at.lock() {
            Ok(mut a) => *a = at,
            Err(p) => *p.into_inner() = at,
        }
        lag
    }

    /// Records a revocation: `kind` `session` (a `sid`) or `token` (a `jti`), refused while
    /// `until` (unix seconds) is not behind the clock. `false` for another kind or a bad id.
    pub fn add(&self, kind: &str, id: &str, until: i64, now: i64) -> bool {
        if id.is_empty() || id.len() > 256 {
            return false;
        }
        if kind != "session" && kind != "token" {
            return false;
        }
        let mut sets = match self.sets.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let full = |s: &Sets| s.sessions.len() + s.tokens.len() >= MAX_ENTRIES;
        if full(&sets) && sets.pruned < now {
            sets.pruned = now;
            // Kept while any verifier could still refuse by it: `is_revoked` is asked at `now`
            // less the verifier's leeway (up to 30 s), so an entry just past its `until` is
            // still in force there.
            let horizon = now.saturating_sub(DROPPED_MARGIN_SECS);
            sets.sessions.retain(|_, u| *u >= horizon);
            sets.tokens.retain(|_, u| *u >= horizon);
        }
        let overfull = full(&sets);
        let map = if kind == "session" {
            &mut sets.sessions
        } else {
            &mut sets.tokens
        };
        match map.get_mut(id) {
            Some(entry) => *entry = (*entry).max(until),
            None if overfull => {
                let left = until
                    .saturating_add(DROPPED_MARGIN_SECS)
                    .saturating_sub(now);
                if left > 0 {
                    let at = Instant::now().checked_add(Duration::from_secs(left.unsigned_abs()));
                    let mut dropped = match self.dropped_until.lock() {
                        Ok(d) => d,
                        Err(p) => p.into_inner(),
                    };
                    *dropped = (*dropped).max(at);
                }
                return false;
            }
            None => {
                map.insert(id.to_owned(), until);
            }
        }
        true
    }

    /// Applies one `revoked` event's data; `false` if it is not one.
    pub fn apply(&self, data: &Value, now: i64) -> bool {
        match (
            data["kind"].as_str(),
            data["id"].as_str(),
            data["until"].as_i64(),
        ) {
            (Some(kind), Some(id), Some(until)) => self.add(kind, id, until, now),
            _ => false,
        }
    }
}

/// One connection to the feed: it catches up (the revocations since `Last-Event-ID`, or all of
/// them) before its `ready`, and only from there on does what it sends make the view current.
/// Before, after an outage the first event of the catch-up (or a keepalive) did: a token revoked
/// during the outage passed until the catch-up reached its event.
#[derive(Debug, Default)]
struct Catchup {
    ready: bool,
    /// The `ready` said when it was sent (a server that does so puts the time in every
    /// keepalive too).
    timed: bool,
    /// The lag was said once on this connection.
    warned: bool,
}

impl Catchup {
    /// Whether `event` (a keepalive is `comment`), sent at `sent`, keeps the view current: from
    /// the connection's `ready` on, it and the keepalives, which carry the auth server's time.
    /// Other events carry none: one held back on its way must not make a late view current
    /// again; nor a comment without a time from a server that gives one (something on the way
    /// that adds its own).
    fn hears(&mut self, event: &str, sent: Option<i64>) -> bool {
        if event == "ready" {
            self.ready = true;
            self.timed = sent.is_some();
            return true;
        }
        self.ready && event == "comment" && (sent.is_some() || !self.timed)
    }
}

/// The JWKS fetch due [`KEYS_AGAIN`] after a `keys` event (`strict`: its failure leaves the view
/// stale) or a connection's `ready` (its failure changes nothing).
#[derive(Debug, Default)]
struct Again {
    due: Option<tokio::time::Instant>,
    strict: bool,
    /// The last `keys` event.
    last_event: Option<tokio::time::Instant>,
}

impl Again {
    /// Due `KEYS_AGAIN` from now, unless one is due already: the earliest is kept (events that
    /// keep coming do not put it off), a `keys` event's over a `ready`'s.
    fn arm(&mut self, strict: bool) {
        let now = tokio::time::Instant::now();
        if strict {
            self.last_event = Some(now);
        }
        if self.due.is_none() || (strict && !self.strict) {
            self.due = Some(now + KEYS_AGAIN);
            self.strict = strict;
        }
    }

    /// The fetch is being made; whether it is strict. Due again for a `keys` event that came
    /// after this one was armed.
    fn fired(&mut self) -> bool {
        let strict = self.strict;
        self.due = self
            .last_event
            .map(|t| t + KEYS_AGAIN)
            .filter(|due| strict && *due > tokio::time::Instant::now());
        self.strict = self.due.is_some();
        strict
    }
}

/// A lag (seconds) past which the feed says once per connection that its news arrive late.
const LATE_WARNING: u64 = 5;

/// One Server-Sent Event.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
    /// The auth server's time a keepalive (`: keepalive <unix s>`) carries.
    sent: Option<i64>,
}

/// `chunk` of the stream added to `buf`; the events it completes. An error when what is left
/// (one event not yet complete) is over 64 KiB; a chunk of many whole events (a large
/// catch-up) may be larger.
fn take_chunk(buf: &mut String, chunk: &str) -> Result<Vec<SseEvent>, String> {
    buf.push_str(chunk);
    // Over the whole buffer: a CRLF split between two chunks is one line end too.
    if buf.contains("\r\n") {
        *buf = buf.replace("\r\n", "\n");
    }
    let events = take_events(buf);
    if buf.len() > MAX_EVENT_BYTES {
        return Err("an event of the feed is over 64 KiB".into());
    }
    Ok(events)
}

/// `<n>.<tag>` as the auth server writes its event ids (`<n>` from an older one).
fn is_event_id(id: &str) -> bool {
    let (n, tag) = id.split_once('.').unwrap_or((id, "x"));
    (1..=19).contains(&n.len())
        && n.bytes().all(|b| b.is_ascii_digit())
        && (1..=32).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits complete events off the front of `buf`.
fn take_events(buf: &mut String) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(end) = buf.find("\n\n") {
        let block: String = buf.drain(..end + 2).collect();
        let mut e = SseEvent::default();
        // A comment line: a keepalive when the block is nothing else (its time, if it gives
        // one); beside an event's own lines (a proxy may add one), ignored, as the SSE spec and
        // the Node verifier read it (it made the event a comment, dropped for good).
        let mut keepalive = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                e.event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                // Only an id the server could have sent: any other would be sent back as
                // `Last-Event-ID` at every reconnection, and one that is no header value
                // would fail each.
                let v = v.trim();
                if is_event_id(v) {
                    e.id = Some(v.to_owned());
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                e.data.push_str(v.trim());
            } else if let Some(v) = line.strip_prefix(':') {
                // Digits only, as the Node verifier reads them (`parse` would take a `+`). A
                // second comment line (a proxy's) does not take the time away.
                let sent = v
                    .trim()
                    .strip_prefix("keepalive ")
                    .filter(|t| {
                        (1..=15).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|t| t.parse().ok());
                keepalive = Some(keepalive.flatten().or(sent));
            }
        }
        if let Some(sent) = keepalive
            && e.event.is_empty()
            && e.data.is_empty()
        {
            e.event = "comment".into();
            e.sent = sent;
        }
        out.push(e);
    }
    out
}

/// How long a request for the metadata or the keys may take (the feed's stream has no such
/// bound: it is a connection held open, with keepalives).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client whose connections must open within [`REQUEST_TIMEOUT`], and which follows no
/// redirect ([`not_redirected`]).
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(REQUEST_TIMEOUT)
        // An idle connection is not reused after 5 s: the auth server closes one after 10 s
        // (`--header-read-timeout-secs`), and a fetch sent on it as it closes fails (the JWKS
        // fetch for an unknown `kid` comes 10 s after the last fetch).
        .pool_idle_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

/// The longest metadata document or JWKS read: the auth server's are a few KiB. A server, or
/// anything in front of it, that answers with more is refused before the body fills memory.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

async fn metadata(http: &reqwest::Client, auth_server: &str) -> Result<Value, String> {
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        auth_server.trim_end_matches('/')
    );
    let body = get_capped(http.get(&url), &url).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// The JWKS, never from a shared cache (a CDN in front of it): a refetch after a key was
/// revoked would get the copy that still lists it.
async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, String> {
    let req = http
        .get(url)
        .header(reqwest::header::CACHE_CONTROL, "no-cache");
    let body = get_capped(req, url).await?;
    String::from_utf8(body).map_err(|e| format!("{url}: {e}"))
}

/// A redirect is not followed ([`http_client`]), and is no answer: the keys and the feed come
/// from the URLs checked here (`https://`, the service token to the auth server's own origin),
/// never from wherever an answer points.
fn not_redirected(res: &reqwest::Response, url: &str) -> Result<(), String> {
    // The answer's own URL too: a client built without the policy (its builder failed) would
    // have followed it.
    let elsewhere = url::Url::parse(url).map_or(true, |u| &u != res.url());
    if res.status().is_redirection() || elsewhere {
        return Err(format!(
            "{url}: answered {} (a redirect, which is not followed)",
            res.status()
        ));
    }
    Ok(())
}

/// The body of a successful answer to `req`, within [`REQUEST_TIMEOUT`] and
/// [`MAX_DOCUMENT_BYTES`] (a larger `Content-Length` is refused before any of it is read).
async fn get_capped(req: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, String> {
    let too_long = || format!("{url}: an answer over {MAX_DOCUMENT_BYTES} bytes");
    let mut res = req
        .timeout(REQUEST_TIMEOUT)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{url}: {e}"))?;
    not_redirected(&res, url)?;
    if res
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn refresh_keys(
    http: &reqwest::Client,
    rs: &Weak<ResourceServer>,
    jwks_uri: &str,
) -> Result<(), String> {
    let number = {
        let rs = rs.upgrade().ok_or(GONE)?;
        rs.revocations().keys_begun.fetch_add(1, Ordering::SeqCst) + 1
    };
    let text = get_text(http, jwks_uri).await?;
    let rs = rs.upgrade().ok_or(GONE)?;
    let mut held = match rs.revocations().keys_held.lock() {
        Ok(h) => h,
        Err(p) => p.into_inner(),
    };
    if *held > number {
        // A fetch begun after this one has set its keys: these may be older.
        return Ok(());
    }
    rs.set_jwks(&text).map_err(|e| e.to_string())?;
    *held = number;
    Ok(())
}

/// A JWKS fetch made beside the feed's reading (for an unknown `kid`, the minute's, or the
/// second one after a `ready`): no change is known, so its failure changes nothing, and the feed must not wait for it (a slow
/// JWKS, up to its timeout, held the feed unread: what it brought, a logout, that much later).
/// Stopped with the connection.
#[derive(Default)]
struct Beside(Option<tokio::task::JoinHandle<Result<(), String>>>);

impl Beside {
    fn start(&mut self, http: &reqwest::Client, rs: &Weak<ResourceServer>, jwks_uri: &str) {
        let (http, rs, uri) = (http.clone(), rs.clone(), jwks_uri.to_owned());
        self.0 = Some(tokio::spawn(
            async move { refresh_keys(&http, &rs, &uri).await },
        ));
    }

    /// Its outcome, once it ends (pending while there is none).
    async fn ended(&mut self) -> Result<(), String> {
        match self.0.as_mut() {
            Some(fetch) => {
                let outcome = fetch.await;
                self.0 = None;
                outcome.unwrap_or_else(|e| Err(e.to_string()))
            }
            None => std::future::pending().await,
        }
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        if let Some(fetch) = &self.0 {
            fetch.abort();
        }
    }
}

/// How long the feed may go without a byte (its keepalives come every 15 s), its answer's
/// headers included.
const QUIET: Duration = Duration::from_secs(45);

/// The resource server was dropped: following ends.
const GONE: &str = "the resource server is gone";

/// How [`discover`] sets up a [`ResourceServer`]; every member has a default.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The origins this API is reachable at, what a proof's `htu` may name (behind a proxy,
    /// the public one). Empty: the request's `Host`, for a loopback one only.
    pub public_origins: Vec<String>,
    /// The auth server's `--dpop-nonce-secret`, so that its nonces work here and this API's
    /// there (no extra round trip); `None`: a secret of this process (docs/DEPLOYMENT.md).
    /// Trimmed, as the auth server reads it (a file's newline is no part of it).
    pub nonce_secret: Option<String>,
    /// The revocation feed's service token (`--revocation-feed-token-file`), trimmed; `None`:
    /// no feed, a revoked token passes until its `exp`.
    pub revocation_token: Option<String>,
    /// Accept unbound (Bearer) tokens too.
    pub allow_bearer: bool,
    /// While the feed is unheard from; the default refuses after 30 s.
    pub stale: StalePolicy,
    /// The audience to require; `None`: the metadata's `tokenwarden_audience`.
    pub audience: Option<String>,
    /// Accept an `http://` auth server that is not on this machine, and a plain-http `jwks_uri`
    /// its metadata names (a private network where no one can alter their answers). Without
    /// it, `discover` refuses one: its keys verify every token, and over plain HTTP anyone on
    /// the path could hand this API keys of their own.
    pub allow_insecure_http: bool,
}

/// Why [`discover`] could not set up a [`ResourceServer`].
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The auth server's metadata or JWKS could not be fetched or read.
    #[error("{0}")]
    AuthServer(String),
    /// The auth server's URL, or the `jwks_uri` its metadata names, is plain `http://` to
    /// another machine (see [`Options::allow_insecure_http`]).
    #[error(
        "{0}: the keys that verify every token would come over plain http; use https:// \
         (http:// only to localhost, or set Options::allow_insecure_http)"
    )]
    InsecureUrl(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Whether keys may be fetched from `url`: `https://`, or `http://` to a loopback host (a
/// development machine) or when `insecure` allows it.
fn secure_enough(url: &str, insecure: bool) -> bool {
    url::Url::parse(url).is_ok_and(|u| match u.scheme() {
        "https" => true,
        "http" => insecure || u.host_str().is_some_and(crate::is_loopback_host),
        _ => false,
    })
}

/// Whether the JWKS at `jwks_uri` is as trustworthy as the metadata of `auth_server` that names
/// it: `https://` (or plain http where `insecure` allows it), or the auth server's own origin.
fn keys_as_trusted(jwks_uri: &str, auth_server: &str, insecure: bool) -> bool {
    let origin = |u: &str| crate::normalize_url(u).map(|u| u.origin);
    secure_enough(jwks_uri, insecure)
        || (origin(jwks_uri).is_some() && origin(jwks_uri) == origin(auth_server))
}

/// A [`ResourceServer`] for the auth server at `auth_server` (its URL, as the SPA reaches it):
/// its issuer, audience and keys from its metadata (`/.well-known/oauth-authorization-server`),
/// kept current in the background (the JWKS at least every minute and whenever the feed says
/// the key ring changed; the revocation feed with `options.revocation_token`) until the last
/// clone of the returned `Arc` is dropped. Needs a Tokio runtime.
pub async fn discover(
    auth_server: &str,
    options: Options,
) -> Result<Arc<ResourceServer>, DiscoverError> {
    if !secure_enough(auth_server, options.allow_insecure_http) {
        return Err(DiscoverError::InsecureUrl(auth_server.to_owned()));
    }
    let http = http_client();
    let meta = metadata(&http, auth_server)
        .await
        .map_err(DiscoverError::AuthServer)?;
    let (Some(issuer), Some(jwks_uri)) = (meta["issuer"].as_str(), meta["jwks_uri"].as_str())
    else {
        return Err(DiscoverError::AuthServer(format!(
            "{auth_server}: the metadata names no issuer or jwks_uri"
        )));
    };
    if !keys_as_trusted(jwks_uri, auth_server, options.allow_insecure_http) {
        return Err(DiscoverError::InsecureUrl(jwks_uri.to_owned()));
    }
    let audience = match (&options.audience, meta["tokenwarden_audience"].as_str()) {
        (Some(a), _) => a.clone(),
        (None, Some(a)) => a.to_owned(),
        (None, None) => {
            return Err(DiscoverError::AuthServer(format!(
                "{auth_server}: the metadata names no tokenwarden_audience: set Options::audience"
            )));
        }
    };
    let jwks = get_text(&http, jwks_uri)
        .await
        .map_err(DiscoverError::AuthServer)?;
    // The secrets trimmed, as the auth server reads its files: one read with its newline made
    // another nonce key (an extra round trip at each switch), and a feed token no header.
    let secret = match &options.nonce_secret {
        Some(s) => s.trim().as_bytes().to_vec(),
        None => {
            let mut s = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut s)
                .map_err(|_| DiscoverError::AuthServer("no system randomness".into()))?;
            s
        }
    };
    let origins: Vec<&str> = options.public_origins.iter().map(String::as_str).collect();
    let audience = Audience {
        issuer: issuer.to_owned(),
        audience,
        leeway_secs: 5,
    };
    let rs = Arc::new(
        ResourceServer::new(audience, &secret, &jwks)?
            .with_origins(&origins)?
            .require_dpop(!options.allow_bearer)
            .with_stale_policy(options.stale)
            .refuse_nonces_before_ms(unix_ms()),
    );
    rs.revocations()
        .insecure_http
        .store(options.allow_insecure_http, Ordering::Relaxed);
    let token = options.revocation_token.map(|t| t.trim().to_owned());
    follow(&rs, auth_server, token);
    Ok(rs)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Follows the auth server at `auth_server` for `rs`: its JWKS every minute and whenever the
/// ring changes, and, with the feed's service `token`, its revocations. The URL is taken as
/// given ([`discover`] checks it); the JWKS comes over `https://` or from its own origin (or
/// over plain http when [`discover`] was given [`Options::allow_insecure_http`]). Stops once `rs` is
/// dropped (or when the handle is aborted).
pub fn follow(
    rs: &Arc<ResourceServer>,
    auth_server: &str,
    token: Option<String>,
) -> tokio::task::JoinHandle<()> {
    let auth_server = auth_server.to_owned();
    if token.is_some() {
        rs.revocations().followed.store(true, Ordering::Relaxed);
    }
    let weak = Arc::downgrade(rs);
    if token.is_none() {
        // As the Node verifier warns: nothing silently.
        eprintln!(
            "tokenwarden_dpop::feed: no revocation token: the keys are followed, revocations are \
             not (a logged-out or revoked token is accepted until its exp)"
        );
    }
    tokio::spawn(async move {
        let http = http_client();
        let mut backoff = FIRST_BACKOFF;
        let mut last_id: Option<String> = None;
        let mut again = Again::default();
        while weak.strong_count() > 0 {
            let result = follow_once(
                &http,
                &weak,
                &auth_server,
                token.as_deref(),
                &mut last_id,
                &mut backoff,
                &mut again,
            )
            .await;
            if let Err(e) = result {
                // No logging dependency in this crate: stderr, once per failure.
                eprintln!("tokenwarden_dpop::feed: {e}");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

/// The JWKS is fetched again for an unknown `kid` at most this often.
const KID_REFETCH: Duration = Duration::from_secs(10);

/// After a `keys` event (and a connection's `ready`) the JWKS is fetched at once and once more
/// this much later. Behind a load balancer the instance that answers the first fetch may not
/// have heard the change yet (its `NOTIFY` comes a moment after, its catch-up read within half a
/// second) and serve the list that still holds a revoked key, which would then be kept for a
/// minute. An instance that has not read (and applied) the events for 5 s answers the JWKS with
/// 503 (the reference server's `IN_STEP`): 6 s later, the one that answers has applied the
/// change, or says it cannot.
pub const KEYS_AGAIN: Duration = Duration::from_secs(6);

/// Until the keys should be fetched again without a feed: a minute, or sooner (at most every
/// [`KID_REFETCH`]) when a token named an unknown `kid`.
async fn wait_for_keys(rs: &Weak<ResourceServer>) -> Result<(), String> {
    let server = rs.upgrade().ok_or(GONE)?;
    let since = tokio::time::Instant::now();
    tokio::select! {
        () = tokio::time::sleep(Duration::from_secs(60)) => {}
        () = async {
            server.revocations().unknown_kid.notified().await;
            tokio::time::sleep_until(since + KID_REFETCH).await;
        } => {}
    }
    Ok(())
}

/// The longest event accepted (the feed's are under 200 bytes).
const MAX_EVENT_BYTES: usize = 64 * 1024;

/// The first wait before reconnecting; doubled after each failure up to 5 s, reset by `ready`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

async fn follow_once(
    http: &reqwest::Client,
    rs: &Weak<ResourceServer>,
    auth_server: &str,
    token: Option<&str>,
    last_id: &mut Option<String>,
    backoff: &mut Duration,
    keys_again: &mut Again,
) -> Result<(), String> {
    let meta = metadata(http, auth_server).await?;
    let jwks_uri = meta["jwks_uri"].as_str().ok_or("no jwks_uri")?.to_owned();
    let insecure = rs
        .upgrade()
        .ok_or(GONE)?
        .revocations()
        .insecure_http
        .load(Ordering::Relaxed);
    if !keys_as_trusted(&jwks_uri, auth_server, insecure) {
        return Err(DiscoverError::InsecureUrl(jwks_uri).to_string());
    }
    refresh_keys(http, rs, &jwks_uri).await?;
    let (Some(token), Some(feed)) = (token, meta["tokenwarden_revocations_endpoint"].as_str())
    else {
        if token.is_some() {
            return Err(
                "a service token is set but the auth server's metadata names no \
                        tokenwarden_revocations_endpoint (is --revocation-feed-token-file set?)"
                    .into(),
            );
        }
        // No feed: keep the keys fresh.
        loop {
            wait_for_keys(rs).await?;
            refresh_keys(http, rs, &jwks_uri).await?;
        }
    };
    // The service token goes to the auth server's own origin only, whatever the metadata says.
    let origin = |u: &str| crate::normalize_url(u).map(|u| u.origin);
    if origin(feed).is_none() || origin(feed) != origin(auth_server) {
        return Err(format!(
            "the revocation feed {feed} is not on the auth server's origin"
        ));
    }
    let mut req = http
        .get(feed)
        .header("authorization", format!("Bearer {token}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_id.as_deref() {
        req = req.header("last-event-id", id);
    }
    // Its headers within the time the stream may go quiet: a server (or a proxy) that takes the
    // connection and never answers would otherwise hold this task, and the keys with it, for
    // good.
    let mut res = tokio::time::timeout(QUIET, req.send())
        .await
        .map_err(|_| format!("{feed}: no answer within 45 s"))?
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("{feed}: {e}"))?;
    not_redirected(&res, feed)?;
    let mut buf = String::new();
    let mut connection = Catchup::default();
    let mut keys_at = Instant::now();
    let mut last_kid_fetch = tokio::time::Instant::now();
    // A `ready`'s second fetch is the new connection's to make; a `keys` event's stays due
    // (the connection that brought it may have ended before, and no resumption sends it again).
    if !keys_again.strict {
        keys_again.due = None;
    }
    // When the connection is taken for dead: `QUIET` after the last bytes it brought (not after
    // each turn of this loop, which anyone can cause with a token naming an unknown `kid`).
    let mut quiet_at = tokio::time::Instant::now() + QUIET;
    // A token named an unknown `kid`: the fetch for it is due at `last_kid_fetch + KID_REFETCH`.
    // Kept across the loop's turns: an event or a keepalive arriving while it waits must not
    // drop it (the notification that asked for it is spent).
    let mut kid_wanted = false;
    let mut beside = Beside::default();
    let mut again_after = false;
    loop {
        let again = async {
            match keys_again.due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let unknown_kid = async {
            match rs.upgrade() {
                Some(server) => server.revocations().unknown_kid.notified().await,
                None => std::future::pending().await,
            }
        };
        let chunk = tokio::select! {
            chunk = tokio::time::timeout_at(quiet_at, res.chunk()) => chunk,
            () = unknown_kid, if !kid_wanted => {
                kid_wanted = true;
                continue;
            }
            () = tokio::time::sleep_until(last_kid_fetch + KID_REFETCH),
                if kid_wanted && beside.0.is_none() =>
            {
                kid_wanted = false;
                // Any caller can name an unknown `kid`: a fetch for it that fails changes
                // nothing (the keys held go on verifying, the feed goes on), and is made beside
                // the feed's reading. The next one at least 10 s after this one ends.
                beside.start(http, rs, &jwks_uri);
                continue;
            }
            fetched = beside.ended() => {
                last_kid_fetch = tokio::time::Instant::now();
                if let Err(e) = fetched
                    && e == GONE
                {
                    return Err(e);
                }
                if std::mem::take(&mut again_after) {
                    beside.start(http, rs, &jwks_uri);
                }
                continue;
            }
            () = again => {
                // After a `keys` event, a failure leaves the view stale (the keys held may list
                // a retired one); after a `ready`, where no change is known, it changes nothing
                // (a JWKS that fails is not an outage of the API; the minute's refetch goes on),
                // and it is made beside the feed's reading (after the one under way, if any).
                if !keys_again.fired() {
                    if beside.0.is_none() {
                        beside.start(http, rs, &jwks_uri);
                    } else {
                        // The one under way may have begun before: this one as soon as it ends.
                        again_after = true;
                    }
                } else if let Err(e) = refresh_keys(http, rs, &jwks_uri).await {
                    rs.upgrade().ok_or(GONE)?.revocations().unheard();
                    return Err(e);
                }
                continue;
            }
        };
        quiet_at = tokio::time::Instant::now() + QUIET;
        let chunk = chunk
            .map_err(|_| "the feed went quiet for 45 s".to_owned())?
            .map_err(|e| format!("{feed}: {e}"))?
            .ok_or("the feed ended")?;
        let events = take_chunk(&mut buf, &String::from_utf8_lossy(&chunk))?;
        let server = rs.upgrade().ok_or(GONE)?;
        let (now, revocations) = (server.now(), server.revocations());
        for e in events {
            match e.event.as_str() {
                "revoked" => {
                    if let Ok(data) = serde_json::from_str::<Value>(&e.data) {
                        revocations.apply(&data, now);
                    }
                }
                "keys" => {
                    if let Err(e) = refresh_keys(http, rs, &jwks_uri).await {
                        revocations.unheard();
                        return Err(e);
                    }
                    keys_again.arm(true);
                }
                // Every connection's: a `keys` event sent before it (while away, or between the
                // keys fetched before connecting and the snapshot) is not in what it caught up
                // with (a snapshot holds none). Fetched before the view counts as current, and
                // again `KEYS_AGAIN` later, as after a `keys` event.
                "ready" => {
                    if let Err(e) = refresh_keys(http, rs, &jwks_uri).await {
                        revocations.unheard();
                        return Err(e);
                    }
                    keys_again.arm(false);
                }
                _ => {}
            }
            if let Some(id) = e.id {
                *last_id = Some(id);
            }
            if e.event == "ready" {
                *backoff = FIRST_BACKOFF;
            }
            let sent = if e.event == "ready" {
                serde_json::from_str::<Value>(&e.data)
                    .ok()
                    .and_then(|d| d["now"].as_i64())
            } else {
                e.sent
            };
            if connection.hears(&e.event, sent) {
                let late = revocations.heard(sent, server.now());
                if late > LATE_WARNING && !connection.warned {
                    connection.warned = true;
                    eprintln!(
                        "tokenwarden_dpop::feed: the revocation feed's news arrive {late} s after \
                         the auth server sent them (something on the way holds them back, or \
                         this machine's clock is ahead of the auth server's): the view is that \
                         much staler"
                    );
                }
            }
        }
        if keys_at.elapsed() > Duration::from_secs(60) && beside.0.is_none() {
            keys_at = Instant::now();
            // No change is known: made beside the feed's reading, and a fetch that fails
            // changes nothing (the keys held go on verifying, the feed goes on), as after a
            // `ready` or for an unknown `kid`, and as the Node verifier does. It ended the
            // connection, and every reconnection needs the keys: a JWKS failing for a minute
            // was an outage of the API.
            beside.start(http, rs, &jwks_uri);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_come_over_https_or_from_this_machine_unless_plain_http_is_allowed() {
        for url in [
            "https://auth.example",
            "http://localhost:8080",
            "http://127.0.0.1:8080/",
            "http://[::1]",
        ] {
            assert!(secure_enough(url, false), "{url}");
        }
        for url in [
            "http://auth.example",
            "http://10.0.0.5:8080",
            "http://localhost.evil.example",
            "ftp://auth.example",
            "auth.example",
            "",
        ] {
            assert!(!secure_enough(url, false), "{url}");
        }
        assert!(secure_enough("http://auth.internal:8080", true));
        // Refused before anything is fetched: no request leaves for a plain-http auth server.
        let refused = discover("http://auth.example", Options::default()).await;
        assert!(
            matches!(refused, Err(DiscoverError::InsecureUrl(u)) if u == "http://auth.example")
        );
        // The JWKS: https, or the auth server's own origin (as trusted as its metadata).
        assert!(keys_as_trusted(
            "https://cdn.example/jwks.json",
            "http://auth.internal",
            false
        ));
        assert!(keys_as_trusted(
            "http://auth.internal/.well-known/jwks.json",
            "http://auth.internal/",
            false
        ));
        assert!(!keys_as_trusted(
            "http://keys.example/jwks.json",
            "https://auth.example",
            false
        ));
        assert!(!keys_as_trusted(
            "http://auth.example:8080/jwks.json",
            "https://auth.example",
            false
        ));
        // Where plain http is allowed, for the JWKS too (the public origin the metadata names).
        assert!(keys_as_trusted(
            "http://10.0.0.5:8080/jwks.json",
            "http://auth:8080",
            true
        ));
    }

    #[test]
    fn chunks_split_anywhere_and_large_catch_ups_are_events_not_errors() {
        // A CRLF split between two chunks, CRLF line ends throughout.
        let mut buf = String::new();
        let first = take_chunk(&mut buf, "event: revoked\r\nid: 7\r\ndata: {}\r").unwrap();
        assert!(first.is_empty());
        let events = take_chunk(&mut buf, "\n\r\nevent: ready\r\n\r\n").unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["revoked", "ready"]);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        // One chunk of many whole events, over 64 KiB in all: every one of them.
        let one =
            "event: revoked\nid: 1\ndata: {\"kind\":\"session\",\"id\":\"s\",\"until\":1}\n\n";
        let many = one.repeat(MAX_EVENT_BYTES / one.len() + 10);
        let mut buf = String::new();
        assert_eq!(
            take_chunk(&mut buf, &many).unwrap().len(),
            many.len() / one.len()
        );
        // One event not yet complete over 64 KiB: an error (the connection starts over).
        let mut buf = String::new();
        let huge = format!("data: {}", "x".repeat(MAX_EVENT_BYTES));
        assert!(take_chunk(&mut buf, &huge).is_err());
    }

    #[test]
    fn only_ids_the_server_could_have_sent_are_kept() {
        for ok in ["7", "42.Xq2rN5a0cLmP", "1.a", "9223372036854775807.A-_z"] {
            assert!(is_event_id(ok), "{ok}");
        }
        let long_tag = format!("5.{}", "x".repeat(33));
        for bad in [
            "",
            ".",
            "5.",
            ".tag",
            "5 bad",
            "5.a b",
            "5.a\u{1}",
            "x5",
            "5.é",
            &long_tag,
            "12345678901234567890",
        ] {
            assert!(!is_event_id(bad), "{bad:?}");
        }
        let mut buf = String::new();
        let events = take_chunk(&mut buf, "event: revoked\nid: 6 bad\ndata: {}\n\n").unwrap();
        assert_eq!(events[0].id, None);
    }

    #[test]
    fn a_connection_keeps_the_view_current_from_its_ready_on() {
        let mut c = Catchup::default();
        for event in ["revoked", "comment", "keys", "revoked"] {
            assert!(!c.hears(event, Some(1)), "{event} of the catch-up");
        }
        assert!(c.hears("ready", Some(1)));
        assert!(c.hears("comment", Some(2)), "a keepalive after ready");
        // They carry no time of the auth server's: held back on the way, they would make a
        // late view current again.
        for event in ["revoked", "keys"] {
            assert!(!c.hears(event, None), "{event} after ready");
        }
        // Nor a comment without a time from a server that gives one (a proxy's own).
        assert!(!c.hears("comment", None));
        // A server that gives no time: its keepalives count as they arrive.
        let mut older = Catchup::default();
        assert!(older.hears("ready", None));
        assert!(older.hears("comment", None));
        assert!(
            !Catchup::default().hears("comment", Some(1)),
            "a new connection starts over"
        );
    }

    /// A stream something on the way holds back (a relay forwarding every byte 20 s late):
    /// its keepalive says when the auth server sent it, and the view is that much staler.
    #[test]
    fn a_keepalive_held_back_on_its_way_counts_as_heard_when_it_was_sent() {
        let mut buf = String::from(": keepalive 1000\n\n: keepalive\n\n");
        let events = take_events(&mut buf);
        assert_eq!(events[0].sent, Some(1000));
        assert_eq!(events[1].sent, None, "an older server's");
        // A comment line inside an event (a proxy's): the event, not a keepalive.
        let mut buf = String::from(
            "event: revoked\nid: 5.a\ndata: {\"sid\":\"s\"}\n: keepalive 1000\n\n: x\ndata: {}\n\n",
        );
        let events = take_events(&mut buf);
        let seen: Vec<_> = events.iter().map(|e| (e.event.as_str(), e.sent)).collect();
        assert_eq!(seen, [("revoked", None), ("", None)]);
        assert_eq!(events[0].id.as_deref(), Some("5.a"));
        // A proxy's comment after a keepalive's: the time stays.
        let mut buf = String::from(": keepalive 1000\n: x\n\n");
        assert_eq!(take_events(&mut buf)[0].sent, Some(1000));
        let r = Revocations::default();
        r.heard(Some(1000), 1020);
        let stale = r.staleness().unwrap();
        assert!(stale >= Duration::from_secs(19) && stale < Duration::from_secs(21));
        // On time (the second it was sent, or the next), or without a time: heard now.
        for (sent, now) in [(Some(1020), 1020), (Some(1019), 1020), (None, 1020)] {
            r.heard(sent, now);
            assert!(r.staleness().unwrap() < Duration::from_secs(1));
        }
        // A clock behind the auth server's: no lag, not a view fresher than now.
        r.heard(Some(1100), 1020);
        assert!(r.staleness().unwrap() < Duration::from_secs(1));
    }

    /// The second JWKS fetch after `keys` events: the earliest is kept (events that keep coming
    /// do not put it off), then one more for the last event; a `ready`'s gives way to a `keys`
    /// event's, never the reverse.
    #[tokio::test(start_paused = true)]
    async fn a_second_fetch_is_not_put_off_and_covers_the_last_keys_event() {
        let t0 = tokio::time::Instant::now();
        let mut a = Again::default();
        a.arm(false);
        a.arm(true);
        assert_eq!((a.due, a.strict), (Some(t0 + KEYS_AGAIN), true));
        tokio::time::advance(Duration::from_secs(3)).await;
        a.arm(true);
        a.arm(false);
        assert_eq!((a.due, a.strict), (Some(t0 + KEYS_AGAIN), true), "kept");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(a.fired());
        let last = t0 + Duration::from_secs(3) + KEYS_AGAIN;
        assert_eq!((a.due, a.strict), (Some(last), true), "for the last event");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(a.fired());
        assert_eq!(a.due, None);
        a.arm(false);
        assert!(!a.fired());
        assert_eq!(a.due, None);
    }

    #[test]
    fn events_are_split_and_applied_until_they_expire() {
        let mut buf = String::from(
            "event: revoked\nid: 7\ndata: {\"kind\":\"session\",\"id\":\"s1\",\"until\":100}\n\n: keepalive\n\nevent: rea",
        );
        let events = take_events(&mut buf);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[1].event, "comment");
        assert_eq!(buf, "event: rea");
        let r = Revocations::default();
        assert!(r.apply(&serde_json::from_str(&events[0].data).unwrap(), 50));
        assert!(r.is_revoked("s1", "j", 100));
        assert!(!r.is_revoked("s1", "j", 101), "no longer matters");
        assert!(!r.is_revoked("s2", "j", 50));
        assert!(!r.apply(
            &serde_json::json!({"kind": "other", "id": "x", "until": 1}),
            0
        ));
        assert_eq!(r.staleness(), None, "not current before the first ready");
    }

    /// [`MAX_ENTRIES`] (a thousand in tests) is a bound: full of revocations in force, one more
    /// is not kept and the view is stale until it no longer matters (its `until` and
    /// [`DROPPED_MARGIN_SECS`]), whatever room is made (before, it was kept anyway, and each one
    /// arriving walked every entry to prune none). Expired ones go first, one prune a second at
    /// most.
    #[test]
    fn the_bound_on_revocations_holds_and_fails_closed() {
        let r = Revocations::default();
        r.heard(None, 0);
        for i in 0..MAX_ENTRIES {
            let until = if i < 10 { 99 } else { 1_000 };
            assert!(r.add("session", &format!("s{i}"), until, 50));
        }
        let count = || {
            let sets = r.sets.read().unwrap();
            sets.sessions.len() + sets.tokens.len()
        };
        // Full, none expired: the new one is not kept, and the view is stale.
        assert!(!r.add("token", "one more", 1_000, 50));
        assert_eq!(count(), MAX_ENTRIES);
        assert!(!r.is_revoked("x", "one more", 60));
        assert_eq!(r.staleness(), None);
        r.followed.store(true, Ordering::Relaxed);
        assert!(
            !StalePolicy::default().allows(&r),
            "a fail-closed API refuses"
        );
    }

    #[test]
    fn a_full_view_prunes_at_most_once_a_second_and_stays_stale_while_a_dropped_one_matters() {
        let full = || {
            let r = Revocations::default();
            r.heard(None, 0);
            for i in 0..MAX_ENTRIES {
                let until = if i < 10 { 99 } else { 1_000 };
                assert!(r.add("session", &format!("s{i}"), until, 50));
            }
            r
        };
        let r = full();
        assert!(!r.add("token", "dropped", 1_000, 50));
        // A second after ten expired, a verifier with 5 s of leeway still refuses their
        // tokens: a prune keeps them (it dropped them, and those tokens passed again).
        assert!(!r.add("token", "early", 1_000, 100));
        assert!(r.is_revoked("s0", "x", 100 - 5));
        // Later, past any verifier's leeway: pruned once, room for ten. The view stays stale
        // while the one dropped could be presented (no resumption sends it again): until its
        // `until` and the margin, not until there is room.
        let later = 99 + DROPPED_MARGIN_SECS + 1;
        for i in 0..10 {
            assert!(r.add("token", &format!("t{i}"), 1_000, later), "t{i}");
        }
        assert_eq!(r.staleness(), None, "stale while the dropped one matters");
        let left = r.dropped_until.lock().unwrap().unwrap() - Instant::now();
        assert!(left > Duration::from_secs(940) && left <= Duration::from_secs(950 + 31));
        assert!(!r.add("token", "t10", 1_000, later));
        assert_eq!(r.sets.read().unwrap().pruned, later);
        // At most one prune a second: one that ended, put in place of a kept one, stays until
        // the next second's add walks the entries again.
        {
            let mut sets = r.sets.write().unwrap();
            sets.tokens.remove("t0");
            sets.tokens.insert("ended".into(), 0);
        }
        assert!(!r.add("token", "t11", 1_000, later));
        assert!(r.sets.read().unwrap().tokens.contains_key("ended"));
        assert!(r.add("token", "t12", 1_000, later + 1));
        assert!(!r.sets.read().unwrap().tokens.contains_key("ended"));
        // An entry already kept is still updated when full.
        assert!(r.add("token", "t3", 2_000, later));
        assert!(r.is_revoked("x", "t3", 1_500));
        // One dropped when it no longer matters (an old one in a catch-up): still current.
        let r = full();
        assert!(!r.add("token", "old", 99 - DROPPED_MARGIN_SECS, 99));
        assert!(r.staleness().is_some());
    }
}
