//! `GET /auth/revocations`: the revocation feed, Server-Sent Events for the services that verify
//! tokenwarden's tokens themselves (the Node verifier `tokenwarden/verify`, the Rust crate's
//! `tokenwarden_dpop::feed`), so that they refuse a logged-out or revoked token within a
//! second instead of at its `exp`.
//!
//! - Authenticated by a service token (`--revocation-feed-token-file`), compared in constant
//!   time; without one configured the feed does not exist (404).
//! - A new subscriber gets every revocation whose tokens may still be presented (each with its
//!   event id), then `event: ready` with the cursor (its `id:`), then every revocation as it
//!   happens. A subscriber that comes back with `Last-Event-ID` gets the events after it
//!   instead (an id that is not one of this database's gets everything again).
//! - An event's id is `<n>.<tag>`: its number and a tag of what it says ([`event_id`]), so that
//!   a number given again to another event (a database restored from a backup) is not taken
//!   for the one the subscriber saw.
//! - Events: `event: revoked`, `id: <n>.<tag>`, `data: {"kind":"session"|"token","id":"...",
//!   "until":<unix secs>}` (a token is refused while `until` is ahead); `event: keys`,
//!   `data: {"kid":"..."}` (the key ring changed: refetch the JWKS); `: keepalive <unix s>`
//!   every 15 s (`ready`'s data holds the time too, `now`).
//! - Every instance serves it (on PostgreSQL from the shared events, heard by crate::fleet).
//!   Its keepalives say "this instance is in step": an instance that has not read the events
//!   table for [`IN_STEP`] (its database unreachable) hears no revocation made elsewhere, so it
//!   ends its subscribers' streams instead of keeping them fresh; they reconnect, maybe to
//!   another instance, and a verifier that gets no `ready` goes stale.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use tokenwarden::proto::ErrorCode;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::store::{EventKind, RevocationEvent, Store};

pub const PATH: &str = "/auth/revocations";

/// Events re-read on a resume even below the cursor (a transaction may commit an older id
/// after a newer one was sent), as crate::fleet does.
const RECENT_SECS: i64 = 5;

/// A new or returning subscriber's first read (its snapshot or what it missed) at most this many
/// at once on one instance: they share the database's read connections with sign-ins and
/// refreshes, and anyone with the service token may ask for one in each request.
const FIRST_READS_AT_ONCE: usize = 4;

/// A keepalive comment every 15 s.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Not having read the events table for this long ends the subscribers' streams (the table is
/// read every 100 ms by one instance, every 500 ms by each of a fleet's); checked every second.
pub const IN_STEP: Duration = Duration::from_secs(5);

/// Why a subscriber is let go ([`IN_STEP`]), for the log.
const NOT_IN_STEP: &str = "this instance has not read and applied the revocation events lately, \
                           or could not re-read its key ring (is its database reachable?): its \
                           feed's subscribers are let go";

#[derive(Clone)]
pub struct Feed(Arc<Inner>);

struct Inner {
    store: Store,
    clock: Clock,
    /// `--revocation-feed-token-file`'s token; `None`: no feed.
    token: Option<String>,
    /// How long a revoked session's tokens may still be presented.
    window: i64,
    leeway: i64,
    events: broadcast::Sender<RevocationEvent>,
    /// The newest event this instance has applied (crate::fleet's cursor).
    applied: Arc<AtomicI64>,
    in_step: crate::fleet::InStep,
    /// Turns for a subscriber's first read ([`FIRST_READS_AT_ONCE`]).
    first_reads: tokio::sync::Semaphore,
}

impl Feed {
    /// The feed of `fleet`'s events; `token`: `--revocation-feed-token-file`'s (`None`: no feed).
    pub fn new(fleet: &crate::fleet::Fleet, token: Option<String>) -> Self {
        Feed(Arc::new(Inner {
            store: fleet.store.clone(),
            clock: fleet.clock.clone(),
            token,
            window: fleet.access_ttl + fleet.leeway,
            leeway: fleet.leeway,
            events: fleet.feed.clone(),
            applied: fleet.cursor.clone(),
            in_step: fleet.in_step.clone(),
            first_reads: tokio::sync::Semaphore::new(FIRST_READS_AT_ONCE),
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.token.is_some()
    }

    /// Where a subscriber that comes back with `Last-Event-ID` resumes: after that event if
    /// this database still holds it, it says what it said then, and it is within the
    /// snapshot's window; else from the start (the snapshot, which is never wrong). A number
    /// alone is not enough: a database restored from a backup gives the numbers after the
    /// backup's to new events, and a subscriber that saw the lost ones would skip those. And an
    /// older event would have every event since read, up to the two days the table keeps them,
    /// for each request naming it: the snapshot reads a token's lifetime of them.
    async fn resume_after(
        &self,
        last: Option<&str>,
        now: i64,
    ) -> Result<i64, crate::store::StoreError> {
        let Some(n) = last
            .and_then(|l| l.split_once('.'))
            .and_then(|(n, _)| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
        else {
            return Ok(0);
        };
        Ok(match self.0.store.revocation_event(n).await? {
            Some(e) if last == Some(event_id(&e).as_str()) && e.at >= now - self.0.window => n,
            _ => 0,
        })
    }

    /// The SSE event of a revocation, or `None` once nothing it revokes can be presented.
    fn event(&self, e: &RevocationEvent, now: i64) -> Option<Event> {
        let (kind, until) = match e.kind {
            EventKind::Token => ("token", e.at.saturating_add(self.0.leeway)),
            EventKind::Session => ("session", e.at.saturating_add(self.0.window)),
            EventKind::Keys => {
                let data = json!({ "kid": e.subject }).to_string();
                return Some(Event::default().event("keys").id(event_id(e)).data(data));
            }
        };
        if until < now {
            return None;
        }
        let data = json!({ "kind": kind, "id": e.subject, "until": until }).to_string();
        Some(Event::default().event("revoked").id(event_id(e)).data(data))
    }

    /// Whether an event read from the table may go out: not a `keys` event this instance has
    /// yet to apply (one the CLI, or on PostgreSQL another instance, recorded a moment ago).
    /// A subscriber fetches the JWKS on a `keys` event and keeps what it gets; before the ring
    /// is re-read, this instance's JWKS still lists the key the event revokes. Such an event
    /// is left to crate::fleet, which passes it on once applied (the subscriber listens from
    /// before its read). On PostgreSQL an event committed late, below the newest applied id,
    /// goes out as read: the verifier's second fetch, 6 s after, gets the new list.
    fn applied(&self, e: &RevocationEvent) -> bool {
        e.kind != EventKind::Keys || e.id <= self.0.applied.load(Ordering::SeqCst)
    }

    /// Feeds one subscriber until it goes away.
    async fn serve(self, resume: Option<String>, tx: mpsc::Sender<Event>) -> Result<(), String> {
        // Nothing read for a subscriber that would get no `ready` (below): an instance out of
        // step, which its subscribers leave and come back to within seconds, would read and
        // send the snapshot again each time.
        if !self.0.in_step.within(IN_STEP) {
            return Err(NOT_IN_STEP.into());
        }
        // Subscribed before anything is read: nothing recorded meanwhile is missed (what is
        // heard twice is sent once: by id).
        let mut live = self.0.events.subscribe();
        let store = &self.0.store;
        let db = |e: crate::store::StoreError| e.to_string();
        let turn = self
            .0
            .first_reads
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let now = self.0.clock.now();
        let cursor = store.revocation_cursor().await.map_err(db)?;
        let ready_id = match store.revocation_event(cursor).await.map_err(db)? {
            Some(e) => event_id(&e),
            None => "0".to_owned(),
        };
        // The events are kept a day past what they revoke, so they are the snapshot too: a new
        // subscriber gets every one whose tokens may still be presented; one that comes back
        // gets those after its `Last-Event-ID`.
        let after = self
            .resume_after(resume.as_deref(), now)
            .await
            .map_err(db)?;
        let mut sent = Sent::default();
        let first = match after {
            0 => store.revocation_snapshot(now - self.0.window).await,
            _ => store.revocations_since(after, RECENT_SECS, true).await,
        };
        drop(turn);
        // A new subscriber fetches the keys at `ready`: the `keys` events up to its cursor are
        // not sent (a catch-up's re-read would bring those of the last seconds; one committed
        // late, below the cursor, is caught by the second fetch 6 s after `ready`).
        // (Those this instance has applied: one it has not, its JWKS at `ready` still lists
        // what the event revokes, so the event goes out once crate::fleet has applied it.)
        let applied = self.0.applied.load(Ordering::SeqCst);
        let keys_known = if after == 0 { cursor.min(applied) } else { 0 };
        for e in first.map_err(db)? {
            if !self.applied(&e) {
                continue;
            }
            if sent.first_time(e.id, tokio::time::Instant::now())
                && let Some(ev) = self.event(&e, now)
            {
                tx.send(ev).await.map_err(|_| "gone")?;
            }
        }
        // No `ready` from an instance out of step: the subscriber would count as current.
        if !self.0.in_step.within(IN_STEP) {
            return Err(NOT_IN_STEP.into());
        }
        // With this instance's time, as each keepalive: a subscriber whose stream something on
        // the way holds back (a relay that forwards every byte late) tells by the lag, and its
        // view is stale by that much, instead of current whatever it is shown late.
        let ready = json!({ "cursor": cursor, "now": self.0.clock.now() }).to_string();
        tx.send(Event::default().event("ready").id(ready_id).data(ready))
            .await
            .map_err(|_| "gone")?;
        let mut last = cursor;
        let second = Duration::from_secs(1);
        let mut check = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
        let mut keepalive = tokio::time::Instant::now() + KEEPALIVE;
        loop {
            let heard = tokio::select! {
                heard = live.recv() => heard,
                _ = check.tick() => {
                    if !self.0.in_step.within(IN_STEP) {
                        return Err(NOT_IN_STEP.into());
                    }
                    sent.forget_before(tokio::time::Instant::now());
                    if tokio::time::Instant::now() >= keepalive {
                        keepalive += KEEPALIVE;
                        let alive = format!("keepalive {}", self.0.clock.now());
                        tx.send(Event::default().comment(alive)).await.map_err(|_| "gone")?;
                    }
                    continue;
                }
                () = tx.closed() => return Ok(()),
            };
            let (events, read) = match heard {
                // Passed on by crate::fleet once applied.
                Ok(e) => (vec![e], false),
                // Too slow to keep up: read what was missed from the table.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let missed = store.revocations_since(last, RECENT_SECS, false);
                    (missed.await.map_err(db)?, true)
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            let now = self.0.clock.now();
            for e in events {
                if read && !self.applied(&e) {
                    continue;
                }
                let first_time = sent.first_time(e.id, tokio::time::Instant::now());
                if !first_time || (e.kind == EventKind::Keys && e.id <= keys_known) {
                    continue;
                }
                last = last.max(e.id);
                if let Some(ev) = self.event(&e, now) {
                    tx.send(ev).await.map_err(|_| "gone")?;
                }
            }
        }
    }
}

/// The ids sent to one subscriber lately, each kept [`Sent::KEEP`]: an event comes twice only
/// from reads that overlap (what was heard while the first read ran; a re-read's last
/// [`RECENT_SECS`]), within seconds. (Every id, for good, grew to a million per subscriber,
/// about 19 MB, from logouts anyone can make.) One sent twice anyway is harmless: a verifier
/// keeps the later `until`.
#[derive(Default)]
struct Sent {
    ids: HashSet<i64>,
    order: VecDeque<(tokio::time::Instant, i64)>,
}

impl Sent {
    const KEEP: Duration = Duration::from_secs(60);

    /// Whether `id` was not sent within [`Self::KEEP`] of `at`; it counts as sent from now.
    fn first_time(&mut self, id: i64, at: tokio::time::Instant) -> bool {
        self.forget_before(at);
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back((at, id));
        true
    }

    /// Forgets the ids sent [`Self::KEEP`] or more before `now` (each second too, so that a
    /// quiet feed does not hold a snapshot's ids for good).
    fn forget_before(&mut self, now: tokio::time::Instant) {
        while let Some(&(when, old)) = self.order.front() {
            if now.saturating_duration_since(when) < Self::KEEP {
                break;
            }
            self.order.pop_front();
            self.ids.remove(&old);
        }
    }
}

/// An event's SSE id, `<n>.<tag>`: its number, then 72 bits of a SHA-256 of the event (number,
/// kind, subject, time) in base64url.
pub fn event_id(e: &RevocationEvent) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!(
        "{}\n{}\n{}\n{}",
        e.id,
        e.kind.as_str(),
        e.at,
        e.subject
    ));
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..9]);
    format!("{}.{tag}", e.id)
}

/// `GET /auth/revocations`.
pub async fn revocations(State(feed): State<Feed>, headers: HeaderMap) -> Response {
    let Some(token) = feed.0.token.as_deref() else {
        return ApiError::NotFound.into_response();
    };
    let shown = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        })
        .unwrap_or("");
    if !bool::from(shown.as_bytes().ct_eq(token.as_bytes())) {
        let challenge = if shown.is_empty() {
            r#"Bearer realm="tokenwarden-feed""#
        } else {
            r#"Bearer realm="tokenwarden-feed", error="invalid_token""#
        };
        let (code, description) = if shown.is_empty() {
            (
                ErrorCode::MissingToken,
                "the feed's service token is required (Authorization: Bearer)",
            )
        } else {
            (ErrorCode::InvalidToken, "the feed's service token is wrong")
        };
        return (
            axum::http::StatusCode::UNAUTHORIZED,
            [
                (header::WWW_AUTHENTICATE, challenge),
                (header::CACHE_CONTROL, "no-store"),
            ],
            axum::Json(json!({ "error": code.as_str(), "error_description": description })),
        )
            .into_response();
    }
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| v.len() <= 64);
    let (tx, rx) = mpsc::channel(256);
    // The subscriber gone, its reads stop too (they were left running, each request's).
    let gone = tx.clone();
    tokio::spawn(async move {
        let served = tokio::select! {
            served = feed.serve(resume, tx) => served,
            () = gone.closed() => Ok(()),
        };
        match served {
            Err(e) if e == NOT_IN_STEP => tracing::warn!("{e}"),
            Err(e) => tracing::debug!(error = %e, "a revocation feed subscriber ended"),
            Ok(()) => {}
        }
    });
    let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    // Its keepalives are the feed's own (`serve`): sent only while this instance is in step.
    let mut res = Sse::new(stream).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_sent_is_known_for_a_minute_and_forgotten_after() {
        let t0 = tokio::time::Instant::now();
        let mut sent = Sent::default();
        assert!(sent.first_time(1, t0));
        assert!(!sent.first_time(1, t0 + Duration::from_secs(59)));
        // A minute later it is forgotten, and so is everything older: the set stays small
        // however long the subscriber stays.
        for i in 2..1_000 {
            assert!(sent.first_time(i, t0 + Duration::from_secs(30)));
        }
        assert!(sent.first_time(1_000, t0 + Duration::from_secs(91)));
        assert_eq!(sent.ids.len(), 1);
        assert!(sent.first_time(1, t0 + Duration::from_secs(92)));
        // And with nothing sent: each second's tick forgets too.
        sent.forget_before(t0 + Duration::from_secs(200));
        assert!(sent.ids.is_empty() && sent.order.is_empty());
    }
}
