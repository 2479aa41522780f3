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
    /// The IPv6 /56s' counts ([`crate::net::wide_bucket_key`]), in memory; none for a limit
    /// that counts them not.
    wide: Option<Limiter<String>>,
}

/// How many /64s' worth of a per-client limit an IPv6 /56 gets in all: without it, one
/// subscriber's prefix multiplied every per-client sign-in limit by the /64s it holds (256 for
/// a home connection's /56), and a few of them filled what every client shares (the password
/// hashing slots, the stored codes and ceremonies).
pub const WIDE_FACTOR: u32 = 16;

impl Throttle {
    /// A per-client limit that counts an IPv6 client's /56 too (sign-ins and their starts).
    pub fn new(scope: &'static str, per_minute: u32) -> Self {
        Throttle {
            wide: Some(Limiter::new(per_minute.saturating_mul(WIDE_FACTOR))),
            ..Self::narrow(scope, per_minute)
        }
    }

    /// A limit per key alone: per session, or per client where a /56's neighbours must not
    /// share one count (refreshes of sessions already open, limited per session too).
    pub fn narrow(scope: &'static str, per_minute: u32) -> Self {
        Throttle {
            scope,
            per_minute,
            local: Limiter::new(per_minute),
            wide: None,
        }
    }

    /// Counts an event for `key`, and for a client's IPv6 /64 its /56 too (unless
    /// [`Self::narrow`]); `Some(retry_after)` when over either limit (the /56 is not counted
    /// once the /64 is over its own).
    pub async fn check(&self, store: &Store, key: &str, now: i64) -> StoreResult<Option<i64>> {
        if let Some(retry_after) = self
            .count(store, key, self.per_minute, &self.local, now)
            .await?
        {
            return Ok(Some(retry_after));
        }
        let Some(local) = &self.wide else {
            return Ok(None);
        };
        match crate::net::wide_bucket_key(key) {
            Some(wide) => {
                let limit = self.per_minute.saturating_mul(WIDE_FACTOR);
                self.count(store, &wide, limit, local, now).await
            }
            None => Ok(None),
        }
    }

    async fn count(
        &self,
        store: &Store,
        key: &str,
        limit: u32,
        local: &Limiter<String>,
        now: i64,
    ) -> StoreResult<Option<i64>> {
        let minute = now - now.rem_euclid(60);
        if !store.is_shared() {
            return Ok(local.check(key.to_owned(), now).err());
        }
        let (hits, window_start) = store
            .count(CounterScope::Throttle(self.scope), key, minute, 60)
            .await?;
        Ok((hits > i64::from(limit)).then_some(window_start + 60 - now))
    }

    /// Forgets every count (the test hooks).
    pub async fn reset(&self, store: &Store) -> StoreResult<()> {
        self.local.reset();
        if let Some(wide) = &self.wide {
            wide.reset();
        }
        store
            .reset_counters(CounterScope::Throttle(self.scope))
            .await
    }
}

/// Keys one [`Limiter`] counts in one minute at most: beyond, a new key passes uncounted until
/// the next minute. A flood from more addresses than this in a minute is not stored (memory and
/// time stay bounded), nor does it lock every other client out; per-address limits are moot
/// against that many addresses anyway, and the per-account ones (in the database) still hold.
pub const MAX_KEYS: usize = 100_000;

/// Fixed one-minute windows of events per key, in memory: the counters of one instance.
pub struct Limiter<K> {
    per_minute: u32,
    windows: Mutex<Windows<K>>,
}

struct Windows<K> {
    counts: HashMap<K, (i64, u32)>,
    /// The minute whose counts `counts` holds only, once swept.
    swept: i64,
}

impl<K: Hash + Eq> Limiter<K> {
    pub fn new(per_minute: u32) -> Self {
        Limiter {
            per_minute,
            windows: Mutex::new(Windows {
                counts: HashMap::new(),
                swept: i64::MIN,
            }),
        }
    }

    /// Counts an event; `Err(retry_after)` when over the limit.
    pub fn check(&self, key: K, now: i64) -> Result<(), i64> {
        let mut windows = match self.windows.lock() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        let minute = now - now.rem_euclid(60);
        // Past minutes' counts dropped once a minute, not on every check.
        if windows.swept != minute && windows.counts.len() > MAX_KEYS / 2 {
            windows.counts.retain(|_, (start, _)| *start == minute);
            windows.swept = minute;
        }
        if windows.counts.len() >= MAX_KEYS && !windows.counts.contains_key(&key) {
            return Ok(());
        }
        let entry = windows.counts.entry(key).or_insert((minute, 0));
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
            Ok(mut w) => w.counts.clear(),
            Err(p) => p.into_inner().counts.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_new_keys_is_swept_once_a_minute_and_bounded_within_one() {
        let limiter = Limiter::new(2);
        let t = 6_000;
        for k in 0..MAX_KEYS {
            assert!(limiter.check(k, t).is_ok());
        }
        // Full within the minute: a new key passes, uncounted (not stored); a counted one
        // still counts.
        for _ in 0..3 {
            assert!(limiter.check(MAX_KEYS, t + 1).is_ok());
        }
        assert!(limiter.check(7, t + 1).is_ok());
        assert_eq!(limiter.check(7, t + 2), Err(58));
        assert_eq!(limiter.windows.lock().unwrap().counts.len(), MAX_KEYS);
        // The next minute sweeps the last one's keys, once: new keys are counted again.
        for _ in 0..2 {
            assert!(limiter.check(MAX_KEYS, t + 60).is_ok());
        }
        assert_eq!(limiter.check(MAX_KEYS, t + 61), Err(59));
        let windows = limiter.windows.lock().unwrap();
        assert_eq!((windows.counts.len(), windows.swept), (1, t + 60));
    }
}
