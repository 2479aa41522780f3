//! Keeping every instance that shares a PostgreSQL database in step with the others.
//!
//! Each instance verifies access tokens from memory (crate::state::Revocations, the key ring).
//! A revocation made anywhere is a row in `revocation_events` and a `NOTIFY` carrying it:
//!
//! - **hearing** a notification applies it at once (no query);
//! - a **catch-up read** every [`CATCH_UP`] applies every event after the newest one applied,
//!   plus every event of the last [`RECENT_SECS`] seconds whatever its id (ids are handed out
//!   at insert, so a transaction may commit an older id after a newer one was read). An
//!   instance whose listening connection dropped, or that was slow, heals by itself;
//! - an instance that **starts** reads the deny-list and the recently revoked sessions from
//!   their tables (crate::state::AppState::new), so being down during a revocation loses
//!   nothing.
//!
//! Applying an event twice is harmless: the mirrors are maps, the key ring is re-read.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::state::AppState;
use crate::store::{EventKind, Heard, RevocationEvent};

/// How often the events table is re-read whatever was heard.
pub const CATCH_UP: Duration = Duration::from_millis(500);

/// Events this recent are re-read on every catch-up even below the cursor.
pub const RECENT_SECS: i64 = 5;

/// Applies one event to this instance's memory. Returns whether the key ring must be re-read.
pub fn apply(state: &AppState, event: &RevocationEvent) -> bool {
    let leeway = state.settings.leeway;
    match event.kind {
        EventKind::Token => {
            state
                .revocations
                .deny_token(event.subject.clone(), event.at.saturating_add(leeway));
        }
        EventKind::Session => {
            let until = event
                .at
                .saturating_add(state.settings.access_ttl)
                .saturating_add(leeway);
            // A session revoked longer ago than a token lives has no token left to refuse.
            if until >= state.now() {
                state
                    .revocations
                    .revoke_session(event.subject.clone(), until);
            }
        }
        EventKind::Keys => return true,
    }
    state
        .revocation_cursor
        .fetch_max(event.id, Ordering::SeqCst);
    false
}

/// The task that listens and catches up; `None` on SQLite (one instance, nothing to hear).
pub fn spawn(state: AppState) -> Option<tokio::task::JoinHandle<()>> {
    if !state.store.is_shared() {
        return None;
    }
    Some(tokio::spawn(run(state)))
}

struct Sync {
    state: AppState,
    /// Key events already acted on (re-read ones must not reload the ring every time).
    keys_seen: HashSet<i64>,
}

impl Sync {
    async fn on_event(&mut self, event: &RevocationEvent) {
        if apply(&self.state, event) && self.keys_seen.insert(event.id) {
            if self.keys_seen.len() > 10_000 {
                self.keys_seen.clear();
                self.keys_seen.insert(event.id);
            }
            if let Err(e) = self
                .state
                .keys
                .reload(&self.state.store, self.state.now())
                .await
            {
                tracing::error!(error = %e, "re-reading the key ring after a key event failed");
            }
            self.state
                .revocation_cursor
                .fetch_max(event.id, Ordering::SeqCst);
        }
    }

    async fn catch_up(&mut self) {
        let cursor = self.state.revocation_cursor.load(Ordering::SeqCst);
        match self
            .state
            .store
            .revocations_since(cursor, RECENT_SECS)
            .await
        {
            Ok(events) => {
                for e in &events {
                    self.on_event(e).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "revocation catch-up read failed"),
        }
    }
}

async fn run(state: AppState) {
    let listen = state.settings.revocation_notifications;
    let mut sync = Sync {
        state,
        keys_seen: HashSet::new(),
    };
    let mut tick = tokio::time::interval(CATCH_UP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener = None;
    loop {
        if sync.state.store.is_closed() {
            return;
        }
        if listen && listener.is_none() {
            match sync.state.store.listen().await {
                Ok(l) => listener = l,
                Err(e) => tracing::warn!(error = %e, "LISTEN failed; catching up by reading"),
            }
            // Whatever happened while not listening.
            sync.catch_up().await;
        }
        let heard = async {
            match listener.as_mut() {
                Some(l) => l.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            heard = heard => match heard {
                Ok(Heard::Event(e)) => sync.on_event(&e).await,
                Ok(Heard::Garbled | Heard::Reconnected) => sync.catch_up().await,
                Err(e) => {
                    tracing::warn!(error = %e, "the revocation channel failed; reconnecting");
                    listener = None;
                    tokio::time::sleep(CATCH_UP).await;
                }
            },
            _ = tick.tick() => sync.catch_up().await,
        }
    }
}
