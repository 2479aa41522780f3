//! Access tokens refused before their `exp`: logged-out `jti`s and revoked sessions. A mirror
//! of the database (reloaded at start; on PostgreSQL kept in step with the other instances by
//! crate::fleet) so that verifying an access token never touches it. Bounded by time: an entry
//! is pruned once the last token it could refuse has expired.

use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Default)]
pub struct Revoked {
    inner: RwLock<Sets>,
}

#[derive(Default)]
struct Sets {
    /// jti -> forget after
    tokens: HashMap<String, i64>,
    /// session id -> forget after
    sessions: HashMap<String, i64>,
}

impl Revoked {
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
        self.write().tokens.insert(jti, until);
    }

    pub fn revoke_session(&self, sid: String, until: i64) {
        self.write().sessions.insert(sid, until);
    }

    pub fn prune(&self, now: i64) {
        let mut sets = self.write();
        sets.tokens.retain(|_, until| *until >= now);
        sets.sessions.retain(|_, until| *until >= now);
    }
}
