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
//! - Events: `event: revoked`, `id: <n>`, `data: {"kind":"session"|"token","id":"...",
//!   "until":<unix secs>}` (a token is refused while `until` is ahead); `event: keys`,
//!   `data: {"kid":"..."}` (the key ring changed: refetch the JWKS); `: keepalive` every 15 s.
//! - Every instance serves it (on PostgreSQL from the shared events, heard by crate::fleet).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
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
}

impl Feed {
    pub fn new(
        store: Store,
        clock: Clock,
        token: Option<String>,
        access_ttl: i64,
        leeway: i64,
        events: broadcast::Sender<RevocationEvent>,
    ) -> Self {
        Feed(Arc::new(Inner {
            store,
            clock,
            token,
            window: access_ttl + leeway,
            leeway,
            events,
        }))
    }

    pub fn enabled(&self) -> bool {
        self.0.token.is_some()
    }

    /// The SSE event of a revocation, or `None` once nothing it revokes can be presented.
    fn event(&self, e: &RevocationEvent, now: i64) -> Option<Event> {
        let (kind, until) = match e.kind {
            EventKind::Token => ("token", e.at.saturating_add(self.0.leeway)),
            EventKind::Session => ("session", e.at.saturating_add(self.0.window)),
            EventKind::Keys => {
                let data = json!({ "kid": e.subject }).to_string();
                return Some(
                    Event::default()
                        .event("keys")
                        .id(e.id.to_string())
                        .data(data),
                );
            }
        };
        if until < now {
            return None;
        }
        let data = json!({ "kind": kind, "id": e.subject, "until": until }).to_string();
        Some(
            Event::default()
                .event("revoked")
                .id(e.id.to_string())
                .data(data),
        )
    }

    /// Feeds one subscriber until it goes away.
    async fn serve(self, resume: Option<i64>, tx: mpsc::Sender<Event>) -> Result<(), String> {
        // Subscribed before anything is read: nothing recorded meanwhile is missed (what is
        // heard twice is sent once: by id).
        let mut live = self.0.events.subscribe();
        let store = &self.0.store;
        let db = |e: crate::store::StoreError| e.to_string();
        let now = self.0.clock.now();
        let cursor = store.revocation_cursor().await.map_err(db)?;
        // The events are kept a day past what they revoke, so they are the snapshot too: a new
        // subscriber gets every one whose tokens may still be presented; one that comes back
        // gets those after its `Last-Event-ID` (an id beyond the cursor is not one of this
        // database's: the snapshot again).
        let after = resume.filter(|l| (0..=cursor).contains(l)).unwrap_or(0);
        let mut sent: HashSet<i64> = HashSet::new();
        for e in store
            .revocations_since(after, RECENT_SECS, true)
            .await
            .map_err(db)?
        {
            if sent.insert(e.id)
                && !(after == 0 && e.kind == EventKind::Keys)
                && let Some(ev) = self.event(&e, now)
            {
                tx.send(ev).await.map_err(|_| "gone")?;
            }
        }
        let ready = json!({ "cursor": cursor }).to_string();
        tx.send(
            Event::default()
                .event("ready")
                .id(cursor.to_string())
                .data(ready),
        )
        .await
        .map_err(|_| "gone")?;
        let mut last = cursor;
        loop {
            let heard = tokio::select! {
                heard = live.recv() => heard,
                () = tx.closed() => return Ok(()),
            };
            let events = match heard {
                Ok(e) => vec![e],
                // Too slow to keep up: read what was missed from the table.
                Err(broadcast::error::RecvError::Lagged(_)) => store
                    .revocations_since(last, RECENT_SECS, false)
                    .await
                    .map_err(db)?,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            };
            let now = self.0.clock.now();
            for e in events {
                if sent.len() > 1_000_000 {
                    sent.clear();
                }
                if !sent.insert(e.id) {
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
        .and_then(|v| v.trim().parse::<i64>().ok());
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = feed.serve(resume, tx).await {
            tracing::debug!(error = %e, "a revocation feed subscriber ended");
        }
    });
    let stream = tokio_stream::StreamExt::map(ReceiverStream::new(rx), Ok::<_, Infallible>);
    let mut res = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keepalive"),
        )
        .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    res
}
