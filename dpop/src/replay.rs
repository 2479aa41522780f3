//! The replay cache: `jti`s of accepted proofs, per key, until the proof could no longer pass
//! the `iat` check. Bounded: when full of live entries it refuses new proofs instead of
//! forgetting one that could then be replayed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    /// 128-bit hash of (thumbprint, jti) -> forget after (unix seconds).
    seen: HashMap<u128, i64>,
    next_prune: i64,
    /// The second of the last prune: entries expire at whole seconds, so a second prune within
    /// it frees nothing, and a shard kept full is walked at most once a second (not at every
    /// insert, under its lock).
    pruned: i64,
    #[cfg(test)]
    prunes: usize,
}

/// Outcome of [`ReplayCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    New,
    Replayed,
    Full,
}

/// Seen `(thumbprint, jti)` pairs, sharded to keep lock contention low.
pub struct ReplayCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    /// A secret of this cache in every entry's hash: which shard a proof lands in cannot be
    /// worked out by the client that chooses its `jti`. Otherwise one account could choose jtis
    /// that all fill one shard (a sixteenth of the capacity, at a sixteenth of the rate) and
    /// have the proofs of every client whose entries land there refused.
    salt: [u8; 16],
    /// How far a routine prune may go, from the first insert on.
    horizon: std::sync::OnceLock<PruneHorizon>,
}

/// How far a routine prune of entries kept until a clock reading may go: to the clock's reading
/// now, but no further than its reading when this was made plus the time passed since
/// (monotonic). Pruned on the clock alone while it was set forward (an NTP step, a virtual
/// machine resumed), an entry would be forgotten, and what it refuses (a replayed proof, a
/// revoked token) would pass again once the clock is set back. The Node verifier's
/// `pruneHorizon` is the same rule.
#[derive(Debug, Clone, Copy)]
pub struct PruneHorizon {
    at: i64,
    since: Instant,
}

impl PruneHorizon {
    /// Anchored at `now`, the clock's reading (unix seconds).
    pub fn new(now: i64) -> Self {
        PruneHorizon {
            at: now,
            since: Instant::now(),
        }
    }

    /// The latest `until` a routine prune at clock reading `now` may forget.
    pub fn upto(&self, now: i64) -> i64 {
        let passed = i64::try_from(self.since.elapsed().as_secs()).unwrap_or(i64::MAX);
        now.min(self.at.saturating_add(passed))
    }
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplayCache {{ len: {} }}", self.len())
    }
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(1 << 20)
    }
}

fn key(salt: &[u8; 16], jkt: &str, jti: &str) -> u128 {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(jkt.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    let d = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    u128::from_le_bytes(k)
}

impl ReplayCache {
    /// A cache of at most `capacity` live entries (at least 16).
    pub fn new(capacity: usize) -> Self {
        // From the operating system's generator (ring's); where it fails, the standard
        // library's randomly keyed hasher.
        let mut salt = [0u8; 16];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt).is_err() {
            use std::hash::{BuildHasher, Hasher};
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            salt[..8].copy_from_slice(&random.to_le_bytes());
        }
        ReplayCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            salt,
            horizon: std::sync::OnceLock::new(),
        }
    }

    /// Records `jti` for key `jkt` until `until`; `Replayed` if it is already recorded and
    /// live, `Full` if there is no room for it.
    pub fn insert(&self, jkt: &str, jti: &str, until: i64, now: i64) -> Insert {
        let k = key(&self.salt, jkt, jti);
        let shard = &self.shards[(k as usize) % SHARDS];
        let mut s = match shard.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let full = s.seen.len() >= self.per_shard;
        if now >= s.next_prune || (full && now > s.pruned) {
            // Full, the clock decides alone (room for new proofs over a clock step).
            let horizon = self.horizon.get_or_init(|| PruneHorizon::new(now));
            let upto = if full { now } else { horizon.upto(now) };
            s.seen.retain(|_, t| *t >= upto);
            s.next_prune = now + 5;
            s.pruned = now;
            #[cfg(test)]
            {
                s.prunes += 1;
            }
        }
        match s.seen.get(&k) {
            Some(t) if *t >= now => return Insert::Replayed,
            _ => {}
        }
        if s.seen.len() >= self.per_shard {
            return Insert::Full;
        }
        s.seen.insert(k, until);
        Insert::New
    }

    /// Live and expired-but-not-yet-pruned entries.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(s) => s.seen.len(),
                Err(p) => p.into_inner().seen.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_caught_per_key_until_expiry_and_the_cache_is_bounded() {
        let c = ReplayCache::new(32);
        assert_eq!(c.insert("k1", "a", 100, 10), Insert::New);
        assert_eq!(c.insert("k1", "a", 100, 50), Insert::Replayed);
        assert_eq!(c.insert("k2", "a", 100, 50), Insert::New, "another key");
        assert_eq!(c.insert("k1", "a", 200, 101), Insert::New, "expired");
        // Fill it: some shard reaches its share and refuses.
        let mut full = false;
        for i in 0..1000 {
            if c.insert("k", &i.to_string(), 1000, 200) == Insert::Full {
                full = true;
                break;
            }
        }
        assert!(full);
        assert!(c.len() <= 32 + 16);
        // Once the entries expire there is room again.
        assert_eq!(c.insert("k", "fresh", 2000, 1001), Insert::New);
    }

    /// A cache kept full by one client: each shard is walked at most once a second, not at
    /// every insert it refuses (a million entries scanned per proof, under the shard's lock).
    #[test]
    fn a_full_cache_is_not_walked_for_every_refused_proof() {
        let c = ReplayCache::new(16 * 100);
        let mut i = 0;
        while c.len() < 16 * 100 {
            c.insert("k", &i.to_string(), 1000, 0);
            i += 1;
        }
        let prunes = |c: &ReplayCache| -> usize {
            c.shards
                .iter()
                .map(|s| s.lock().map(|s| s.prunes).unwrap_or(usize::MAX))
                .sum()
        };
        let before = prunes(&c);
        for now in [1, 2] {
            for j in 0..1000 {
                assert_eq!(
                    c.insert("k", &format!("{now}.{j}"), 1000, now),
                    Insert::Full
                );
            }
        }
        assert!(prunes(&c) - before <= 2 * SHARDS, "{}", prunes(&c) - before);
        // Once the entries expire, room again.
        assert_eq!(c.insert("k", "fresh", 2000, 1001), Insert::New);
    }

    /// A clock set forward past a proof's `until`, a routine prune there, then set back: the
    /// proof is still a replay (pruned on the clock alone, it passed again).
    #[test]
    fn a_proof_is_kept_through_a_clock_set_forward_and_back() {
        let c = ReplayCache::new(16 * 1024);
        assert_eq!(c.insert("k", "a", 1061, 1000), Insert::New);
        // Enough proofs at 1200 that every shard is pruned there (each misses one of 256 with a
        // chance of 1 in 15 million).
        for i in 0..256 {
            assert_eq!(c.insert("k", &format!("b{i}"), 1300, 1200), Insert::New);
        }
        assert_eq!(c.insert("k", "a", 1061, 1005), Insert::Replayed);
    }

    /// One account choosing jtis (offline) that all land in one shard, as an unsalted hash
    /// would place them: a sixteenth of the capacity would refuse every other client's proofs
    /// landing there. With the cache's secret in the hash they spread over the shards.
    #[test]
    fn jtis_chosen_for_one_shard_do_not_fill_it() {
        let c = ReplayCache::new(16 * 100);
        // A salt of each cache's own: a fixed one spreads these jtis too, but can be known.
        assert_ne!(c.salt, ReplayCache::new(16).salt);
        let unsalted = |jti: &str| {
            let d = Sha256::new()
                .chain_update(b"k")
                .chain_update([0])
                .chain_update(jti.as_bytes())
                .finalize();
            let mut k = [0u8; 16];
            k.copy_from_slice(&d[..16]);
            u128::from_le_bytes(k) as usize % SHARDS
        };
        let chosen: Vec<String> = (0..)
            .map(|i: u32| i.to_string())
            .filter(|jti| unsalted(jti) == 0)
            .take(150)
            .collect();
        for jti in &chosen {
            assert_eq!(c.insert("k", jti, 1000, 0), Insert::New, "{jti}");
        }
        for i in 0..16 {
            assert_eq!(
                c.insert("another key", &i.to_string(), 1000, 0),
                Insert::New
            );
        }
    }
}
