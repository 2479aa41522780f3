//! Per-minute limits on events per key (a client address bucket, a session), for the whole
//! fleet: on a shared store (PostgreSQL) the counter is a row in the database, counted in one
//! statement, so N instances do not multiply the limit; SQLite has one instance, which counts
//! in memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::store::{CounterScope, Store, StoreResult};

pub struct Throttle {
    scope: &'static str,
    per_minute: u32,
    local: Limiter<String>,
}

impl Throttle {
    pub fn new(scope: &'static str, per_minute: u32) -> Self {
        Throttle {
            scope,
            per_minute,
            local: Limiter::new(per_minute),
        }
    }

    /// Counts an event for `key`; `Some(retry_after)` when over the limit.
    pub async fn check(&self, store: &Store, key: &str, now: i64) -> StoreResult<Option<i64>> {
        let minute = now - now.rem_euclid(60);
        if !store.is_shared() {
            return Ok(self.local.check(key.to_owned(), now).err());
        }
        let (hits, window_start) = store
            .count(CounterScope::Throttle(self.scope), key, minute, 60)
            .await?;
        Ok((hits > i64::from(self.per_minute)).then_some(window_start + 60 - now))
    }

    /// Forgets every count (the test hooks).
    pub async fn reset(&self, store: &Store) -> StoreResult<()> {
        self.local.reset();
        store
            .reset_counters(CounterScope::Throttle(self.scope))
            .await
    }
}

/// Fixed one-minute windows of events per key, in memory: the counters of one instance.
pub struct Limiter<K> {
    per_minute: u32,
    windows: Mutex<HashMap<K, (i64, u32)>>,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an event; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: K, now: i64) -> Result<(), i64> {
        let mut windows = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let minute = now - now.rem_euclid(60);
        if windows.len() > 100_000 {
            windows.retain(|_, (start, _)| *start == minute);
        }
        let entry = windows.entry(key).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        if entry.1 >= self.per_minute {
            return Err(minute + 60 - now);
        }
        entry.1 += 1;
        Ok(())
    }

    pub fn reset(&self) {
        match self.windows.lock() {
            Ok(mut w) => w.clear(),
            Err(p) => p.into_inner().clear(),
        }
    }
}
