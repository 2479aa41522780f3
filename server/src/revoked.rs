//! Access tokens refused before their `exp`: logged-out `jti`s and revoked sessions. A mirror
//! of the database (reloaded at start; on PostgreSQL kept in step with the other instances by
//! crate::fleet) so that verifying an access token never touches it. Bounded by time: an entry
//! is pruned once the last token it could refuse has expired, by the server's clock and by the
//! time that has passed since it came. Pruned on the clock alone while it was set forward (an
//! NTP step, a virtual machine resumed), an entry would be gone when it is set back, and its
//! tokens would pass again until their `exp`.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::clock::Clock;

#[derive(Default)]
pub struct Revoked {
    inner: RwLock<Sets>,
    clock: Clock,
}

#[derive(Default)]
struct Sets {
    tokens: HashMap<String, Kept>,
    sessions: HashMap<String, Kept>,
}

#[derive(Clone, Copy)]
struct Kept {
    /// Forgotten after this (unix seconds, the server's clock)…
    until: i64,
    /// …and not before this much time has passed since it came, whatever that clock says.
    at_least: Instant,
}

impl Revoked {
    /// A mirror whose entries' times are read on `clock` (the server's).
    pub fn new(clock: Clock) -> Self {
        Revoked {
            inner: RwLock::default(),
            clock,
        }
    }

    pub fn is_revoked(&self, jti: &str, sid: &str) -> bool {
        let sets = match self.inner.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        sets.tokens.contains_key(jti) || sets.sessions.contains_key(sid)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Sets> {
        match self.inner.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    fn kept(&self, until: i64) -> Kept {
        // At most two days: no access token lives longer than one (`--access-ttl-secs`), and
        // no sum with an `Instant` overflows.
        let left = until.saturating_sub(self.clock.now()).clamp(0, 2 * 86_400);
        let now = Instant::now();
        let at_least = now
            .checked_add(Duration::from_secs(left.unsigned_abs()))
            .unwrap_or(now);
        Kept { until, at_least }
    }

    pub fn deny_token(&self, jti: String, until: i64) {
        let kept = self.kept(until);
        keep(&mut self.write().tokens, jti, kept);
    }

    pub fn revoke_session(&self, sid: String, until: i64) {
        let kept = self.kept(until);
        keep(&mut self.write().sessions, sid, kept);
    }

    /// Forgets what has ended at `now` on the server's clock and by the time passed since.
    pub fn prune(&self, now: i64) {
        let at = Instant::now();
        let live = |k: &Kept| k.until >= now || at < k.at_least;
        let mut sets = self.write();
        sets.tokens.retain(|_, k| live(k));
        sets.sessions.retain(|_, k| live(k));
    }
}

/// The later of the two: a second revocation of the same session never shortens the first.
fn keep(map: &mut HashMap<String, Kept>, id: String, kept: Kept) {
    map.entry(id)
        .and_modify(|k| {
            k.until = k.until.max(kept.until);
            k.at_least = k.at_least.max(kept.at_least);
        })
        .or_insert(kept);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_outlives_a_clock_set_forward_and_back() {
        let clock = Clock::default();
        let revoked = Revoked::new(clock.clone());
        let now = clock.now();
        revoked.revoke_session("s".into(), now + 600);
        revoked.deny_token("t".into(), now + 600);
        // Set forward past `until`, a prune there, then set back: still refused.
        clock.advance(700);
        revoked.prune(clock.now());
        clock.advance(-700);
        assert!(revoked.is_revoked("other", "s"));
        assert!(revoked.is_revoked("t", "other"));
        // Once `until` has passed by the clock and the time since: forgotten.
        let ended = Revoked::new(clock.clone());
        ended.revoke_session("s".into(), now - 1);
        ended.prune(now);
        assert!(!ended.is_revoked("t", "s"));
    }

    #[test]
    fn a_second_revocation_never_shortens_the_first() {
        let clock = Clock::default();
        let revoked = Revoked::new(clock.clone());
        let now = clock.now();
        revoked.revoke_session("s".into(), now + 600);
        revoked.revoke_session("s".into(), now - 10);
        revoked.prune(now);
        assert!(revoked.is_revoked("t", "s"));
    }
}
