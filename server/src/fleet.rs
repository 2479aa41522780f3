//! Keeping every instance that shares a PostgreSQL database in step with the others.
//!
//! Each instance verifies access tokens from memory (crate::revoked, the key ring).
//! A revocation made anywhere is a row in `revocation_events` and a `NOTIFY` carrying its id:
//!
//! - **hearing** a notification reads the event it names by id (one lookup) and applies what the
//!   table holds: any role that can connect to the database can `NOTIFY` on the channel, so a
//!   notification only says where to look (a forged one revoked anyone's session everywhere,
//!   and pushed the cursor past every real event);
//! - a **catch-up read** every [`CATCH_UP`] applies every event after the newest one applied,
//!   plus every event of the last [`RECENT_SECS`] seconds whatever its id (ids are handed out
//!   at insert, so a transaction may commit an older id after a newer one was read), and the
//!   notified events whose read failed. An instance whose listening connection dropped, or
//!   that was slow, heals by itself, but for an event committed more than [`RECENT_SECS`]
//!   after its id was handed out, which only its notification brings;
//! - an instance that **starts** reads the deny-list and the recently revoked sessions from
//!   their tables ([`Fleet::load`]), so being down during a revocation loses nothing.
//!
//! Applying an event twice is harmless: the mirrors are maps, the key ring is re-read.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::keys::Keys;
use crate::revoked::Revoked;
use crate::store::{EventKind, Heard, Listener, RevocationEvent, Store};

/// How often the events table is re-read whatever was heard.
pub const CATCH_UP: Duration = Duration::from_millis(500);

/// Events this recent are re-read on every catch-up even below the cursor.
pub const RECENT_SECS: i64 = 5;

/// What keeps this instance in step: its memory (the revocation mirror, the key ring) and the
/// store it shares with the others.
#[derive(Clone)]
pub struct Fleet {
    pub store: Store,
    pub keys: Keys,
    pub clock: Clock,
    pub revoked: Arc<Revoked>,
    pub access_ttl: i64,
    pub leeway: i64,
    /// Hear revocations by `LISTEN` as well as by the periodic read. Always on in the server;
    /// tests turn it off to prove the read alone heals.
    pub notifications: bool,
    /// The newest revocation event applied.
    pub cursor: Arc<AtomicI64>,
    /// Every event heard, for the revocation feed's subscribers (crate::feed).
    pub feed: tokio::sync::broadcast::Sender<RevocationEvent>,
    /// When the events table was last read: the feed tells its subscribers it is alive only
    /// while that is recent.
    pub in_step: InStep,
}

/// When this instance last read the revocation events table (a catch-up, or one instance's
/// tail) with every event applied, and whether its key ring is as the table says. An instance
/// that cannot read it (its database unreachable) hears no revocation made elsewhere, and one
/// whose ring could not be re-read may still hold a revoked key: its feed must not go on
/// telling subscribers that it is alive (crate::feed), nor its JWKS serve (crate::api::jwks).
#[derive(Clone)]
pub struct InStep {
    read_at: Arc<std::sync::Mutex<tokio::time::Instant>>,
    keys: Keys,
}

impl std::fmt::Debug for InStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InStep")
    }
}

impl InStep {
    /// In step as of now, with `keys`' ring.
    pub fn new(keys: Keys) -> Self {
        InStep {
            read_at: Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())),
            keys,
        }
    }

    /// The table was read, with every event applied, by a read that began `at`.
    pub fn mark(&self, at: tokio::time::Instant) {
        let mut read_at = self.read_at.lock().unwrap_or_else(|p| p.into_inner());
        *read_at = (*read_at).max(at);
    }

    /// Whether a read that began within `d` applied every event, and the ring's last reload
    /// succeeded.
    pub fn within(&self, d: Duration) -> bool {
        let read_at = *self.read_at.lock().unwrap_or_else(|p| p.into_inner());
        read_at.elapsed() <= d && !self.keys.behind()
    }
}

impl Fleet {
    /// Fills the mirror from the tables at start. The cursor is read first: an event recorded
    /// while the tables load is applied again by the first catch-up, never missed.
    pub async fn load(&self) -> Result<(), crate::store::StoreError> {
        let now = self.clock.now();
        self.cursor
            .store(self.store.revocation_cursor().await?, Ordering::SeqCst);
        let window = self.access_ttl + self.leeway;
        for (jti, exp) in self.store.denied_tokens(now - self.leeway).await? {
            self.revoked.deny_token(jti, exp + self.leeway);
        }
        for (sid, at) in self.store.recently_revoked_sessions(now - window).await? {
            self.revoked.revoke_session(sid, at + window);
        }
        Ok(())
    }

    /// Applies one event to this instance's memory. Returns whether the key ring must be
    /// re-read.
    pub fn apply(&self, event: &RevocationEvent) -> bool {
        match event.kind {
            EventKind::Token => {
                self.revoked
                    .deny_token(event.subject.clone(), event.at.saturating_add(self.leeway));
            }
            EventKind::Session => {
                let until = event
                    .at
                    .saturating_add(self.access_ttl)
                    .saturating_add(self.leeway);
                // Kept even when it looks ended (the prune forgets it if it is): on a clock set
                // forward, a session revoked a moment ago would never be refused once it is set
                // back (crate::revoked).
                self.revoked.revoke_session(event.subject.clone(), until);
            }
            EventKind::Keys => return true,
        }
        self.cursor.fetch_max(event.id, Ordering::SeqCst);
        false
    }
}

/// How often one instance (SQLite) reads its own new events for the feed.
pub const TAIL: Duration = Duration::from_millis(100);

/// The task that keeps this instance in step: on PostgreSQL it listens and catches up; on
/// SQLite (one instance: its memory is already in step) it only reads the new events for the
/// revocation feed. `Option` for the callers that stop it.
pub fn spawn(fleet: Fleet) -> Option<tokio::task::JoinHandle<()>> {
    if !fleet.store.is_shared() {
        return Some(tokio::spawn(tail(fleet)));
    }
    Some(tokio::spawn(run(fleet)))
}

/// One instance: its new events, every [`TAIL`], to the feed.
async fn tail(fleet: Fleet) {
    let mut tick = tokio::time::interval(TAIL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if fleet.store.is_closed() {
            return;
        }
        let cursor = fleet.cursor.load(Ordering::SeqCst);
        let began = tokio::time::Instant::now();
        match fleet.store.revocations_since(cursor, 0, false).await {
            Ok(events) => {
                let mut applied = true;
                for e in events {
                    // A `keys` event of the CLI (another process): this instance's ring first,
                    // then the feed, whose subscribers fetch the JWKS on it and keep what they
                    // get (the key poll alone could be a second later). A ring not re-read
                    // passes nothing on: the next read tries again from this event.
                    if e.kind == EventKind::Keys && !reload_keys(&fleet).await {
                        applied = false;
                        break;
                    }
                    fleet.cursor.fetch_max(e.id, Ordering::SeqCst);
                    // No subscriber is no error.
                    let _ = fleet.feed.send(e);
                }
                // In step only with every event applied: a ring that could not be re-read
                // still holds a revoked key, which its JWKS must not serve (crate::api::jwks).
                if applied {
                    fleet.in_step.mark(began);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading revocation events failed"),
        }
    }
}

/// Re-reads the key ring after a `keys` event; whether it could.
async fn reload_keys(f: &Fleet) -> bool {
    match f.keys.reload(&f.store, f.clock.now()).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(error = %e, "re-reading the key ring after a key event failed");
            false
        }
    }
}

struct Sync {
    fleet: Fleet,
    /// Key events already acted on (re-read ones must not reload the ring every time).
    keys_seen: HashSet<i64>,
    /// Notified events whose read failed, read again by the next catch-up.
    missed: HashSet<i64>,
}

/// Most notified events kept to read again.
const MISSED: usize = 10_000;

impl Sync {
    /// Applies `event`; whether it could (a `keys` event whose ring re-read failed could not).
    async fn on_event(&mut self, event: &RevocationEvent) -> bool {
        let f = &self.fleet;
        if f.apply(event) && self.keys_seen.insert(event.id) {
            if self.keys_seen.len() > 10_000 {
                self.keys_seen.clear();
                self.keys_seen.insert(event.id);
            }
            // A ring not re-read passes nothing on, and the event is not counted as applied:
            // the next catch-up reads it again and tries again.
            if !reload_keys(f).await {
                self.keys_seen.remove(&event.id);
                return false;
            }
            f.cursor.fetch_max(event.id, Ordering::SeqCst);
        }
        // To the feed once applied: its subscribers fetch the JWKS on a `keys` event and keep
        // what they get, which must by then be the ring without a revoked key. Heard again by a
        // catch-up read: the subscribers drop what they have sent.
        let _ = f.feed.send(event.clone());
        true
    }

    /// A notification of event `id`: the event as the table holds it, if it does (none: forged,
    /// or already purged), read on the listening connection. A read that fails is tried again
    /// by the next catch-up (an event committed more than [`RECENT_SECS`] after its id was
    /// handed out is read no other way); the error is the channel's.
    async fn on_notified(
        &mut self,
        id: i64,
        listener: &mut Listener,
    ) -> Result<(), crate::store::StoreError> {
        match listener.event(id).await {
            Ok(Some(e)) => {
                self.on_event(&e).await;
            }
            Ok(None) => tracing::debug!(id, "a notification of no recorded event"),
            Err(e) => {
                self.missed(id);
                return Err(e);
            }
        }
        Ok(())
    }

    /// An event to read again at the next catch-up (at most [`MISSED`] of them).
    fn missed(&mut self, id: i64) {
        if self.missed.len() < MISSED {
            self.missed.insert(id);
        } else {
            tracing::warn!(id, "too many notified events not read: one dropped");
        }
    }

    async fn catch_up(&mut self) {
        for id in std::mem::take(&mut self.missed) {
            match self.fleet.store.revocation_event(id).await {
                Ok(Some(e)) if !self.on_event(&e).await => self.missed(id),
                Ok(_) => {}
                Err(_) => self.missed(id),
            }
        }
        let cursor = self.fleet.cursor.load(Ordering::SeqCst);
        let began = tokio::time::Instant::now();
        match self
            .fleet
            .store
            .revocations_since(cursor, RECENT_SECS, false)
            .await
        {
            Ok(events) => {
                let mut applied = true;
                for e in &events {
                    applied &= self.on_event(e).await;
                }
                // In step only with every event applied (as in `tail`).
                if applied {
                    self.fleet.in_step.mark(began);
                }
            }
            Err(e) => tracing::warn!(error = %e, "revocation catch-up read failed"),
        }
    }
}

async fn run(fleet: Fleet) {
    let listen = fleet.notifications;
    let mut sync = Sync {
        fleet,
        keys_seen: HashSet::new(),
        missed: HashSet::new(),
    };
    let mut tick = tokio::time::interval(CATCH_UP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listener = None;
    loop {
        if sync.fleet.store.is_closed() {
            return;
        }
        if listen && listener.is_none() {
            match sync.fleet.store.listen().await {
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
        let heard = tokio::select! {
            heard = heard => heard,
            _ = tick.tick() => {
                sync.catch_up().await;
                continue;
            }
        };
        let failed = match (heard, listener.as_mut()) {
            (Ok(Heard::Notified(id)), Some(l)) => sync.on_notified(id, l).await.err(),
            (Ok(_), _) => {
                sync.catch_up().await;
                None
            }
            (Err(e), _) => Some(e),
        };
        if let Some(e) = failed {
            tracing::warn!(error = %e, "the revocation channel failed; reconnecting");
            listener = None;
            tokio::time::sleep(CATCH_UP).await;
        }
    }
}
