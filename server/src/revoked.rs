//! Access tokens refused before their `exp`: logged-out `jti`s and revoked sessions. A mirror
//! of the database (reloaded at start; on PostgreSQL kept in step with the other instances by
//! crate::fleet) so that verifying an access token never touches it. Bounded by time: an entry
//! is pruned once the last token it could refuse has expired, by the server's clock, and no
//! further than the time passed since the mirror was made allows (`PruneHorizon`, the
//! replay cache's rule). Pruned on the clock alone while it was set forward (an
//! NTP step, a virtual machine resumed), an entry would be gone when it is set back, and its
//! tokens would pass again until their `exp`.

use std::collections::HashMap;
use std::sync::RwLock;

use tokenwarden_dpop::PruneHorizon;

use crate::clock::Clock;

pub struct Revoked {
    inner: RwLock<Sets>,
    /// How far a prune may go: no further than the time passed since this was made.
    horizon: PruneHorizon,
}

#[derive(Default)]
struct Sets {
    /// jti -> forget after
    tokens: HashMap<String, i64>,
    /// session id -> forget after
    sessions: HashMap<String, i64>,
}

impl Revoked {
    /// A mirror pruned on `clock` (the server's), from its reading now on.
    pub fn new(clock: &Clock) -> Self {
        Revoked {
            inner: RwLock::default(),
            horizon: PruneHorizon::new(clock.now()),
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

    pub fn deny_token(&self, jti: String, until: i64) {
        keep(&mut self.write().tokens, jti, until);
    }

    pub fn revoke_session(&self, sid: String, until: i64) {
        keep(&mut self.write().sessions, sid, until);
    }

    /// Forgets what has ended at `now` on the server's clock, no further than the time passed.
    pub fn prune(&self, now: i64) {
        let upto = self.horizon.upto(now);
        let mut sets = self.write();
        sets.tokens.retain(|_, until| *until >= upto);
        sets.sessions.retain(|_, until| *until >= upto);
    }
}

/// The later of the two: a second revocation of the same session never shortens the first.
fn keep(map: &mut HashMap<String, i64>, id: String, until: i64) {
    let kept = map.entry(id).or_insert(until);
    *kept = (*kept).max(until);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_outlives_a_clock_set_forward_and_back() {
        let clock = Clock::default();
        let revoked = Revoked::new(&clock);
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
        let ended = Revoked::new(&clock);
        ended.revoke_session("s".into(), now - 1);
        ended.prune(now);
        assert!(!ended.is_revoked("t", "s"));
    }

    #[test]
    fn a_second_revocation_never_shortens_the_first() {
        let clock = Clock::default();
        let revoked = Revoked::new(&clock);
        let now = clock.now();
        revoked.revoke_session("s".into(), now + 600);
        revoked.revoke_session("s".into(), now - 10);
        revoked.prune(now);
        assert!(revoked.is_revoked("t", "s"));
    }
}
