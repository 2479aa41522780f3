//! Shared state: settings, store, keys, and the small in-memory structures that keep the hot
//! path (bearer verification) off the database.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Settings;
use crate::keys::{KeyError, Keys};
use crate::store::{Store, StoreError, StoreResult};
use crate::tokens::Audience;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    #[error("DPoP: {0}")]
    Dpop(String),
    #[error("hashing the dummy password: {0}")]
    Password(String),
    #[error("sign-in codes: {0}")]
    Otp(String),
}

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    pub settings: Settings,
    pub audience: Audience,
    pub store: Store,
    pub keys: Keys,
    pub revocations: Revocations,
    /// Login attempts per client address bucket.
    pub ip_limiter: Throttle,
    /// Refreshes per client address bucket and per session.
    pub refresh_ip_limiter: Throttle,
    pub refresh_session_limiter: Throttle,
    /// argon2id behind a bounded semaphore.
    pub hasher: crate::password::Hasher,
    pub clock: Clock,
    /// Present only with --test-hooks.
    pub hooks: Option<Hooks>,
    /// A hash of a random password, verified against for unknown emails so that they take as
    /// long as known ones.
    pub dummy_hash: String,
    /// DPoP proofs: nonces and the replay cache (crate::dpop).
    pub dpop: tokenwarden_dpop::Verifier,
    /// Access tokens whose signature was already checked (crate::verified).
    pub verified: crate::verified::VerifiedTokens,
    /// The newest revocation event applied (PostgreSQL; crate::fleet).
    pub revocation_cursor: AtomicI64,
    /// Sign-in with an emailed code; `None` when codes cannot be delivered.
    pub otp: Option<crate::otp::Otp>,
}

impl AppState {
    pub async fn new(settings: Settings, store: Store) -> Result<Self, StartError> {
        let clock = Clock::default();
        let now = clock.now();
        // Read before the tables: an event recorded while they load is applied again by the
        // first catch-up (crate::fleet), never missed.
        let revocation_cursor = store.revocation_cursor().await?;
        let keys = Keys::new(settings.key_grace, settings.key_encryption.clone());
        keys.reload(&store, now).await?;
        let revocations = Revocations::default();
        let window = settings.access_ttl + settings.leeway;
        for (jti, exp) in store.denied_tokens(now - settings.leeway).await? {
            revocations.deny_token(jti, exp + settings.leeway);
        }
        for (sid, at) in store.recently_revoked_sessions(now - window).await? {
            revocations.revoke_session(sid, at + window);
        }
        let dpop = crate::dpop::verifier(settings.dpop_nonce_secret.as_deref(), &store).await?;
        let otp = crate::otp::Otp::new(
            &settings.otp,
            settings.demo,
            &settings.key_encryption,
            &store,
        )
        .await?;
        let dummy_hash = crate::password::hash(&crate::tokens::random_token())
            .await
            .map_err(StartError::Password)?;
        Ok(AppState(Arc::new(Inner {
            audience: Audience {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway_secs: settings.leeway,
            },
            ip_limiter: Throttle::new("login-ip", settings.login_ip_per_minute),
            refresh_ip_limiter: Throttle::new("refresh-ip", settings.refresh_ip_per_minute),
            refresh_session_limiter: Throttle::new(
                "refresh-session",
                settings.refresh_session_per_minute,
            ),
            revocation_cursor: AtomicI64::new(revocation_cursor),
            hasher: crate::password::Hasher::new(
                settings.argon2_concurrency,
                settings.argon2_queue,
            ),
            hooks: settings.test_hooks.then(Hooks::default),
            settings,
            store,
            keys,
            revocations,
            clock,
            dummy_hash,
            dpop,
            verified: Default::default(),
            otp,
        })))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// How long a revoked session's access tokens must be refused: until they expire.
    pub fn revoke_session_tokens(&self, sid: &str) {
        self.revocations.revoke_session(
            sid.to_owned(),
            self.now() + self.settings.access_ttl + self.settings.leeway,
        );
    }

    pub fn hook(&self, f: impl FnOnce(&Hooks)) {
        if let Some(h) = &self.hooks {
            f(h);
        }
    }
}

/// Wall-clock seconds plus an offset that only tests and the test hooks move. Tests that
/// assert exact second counts freeze it.
#[derive(Default)]
pub struct Clock {
    offset: AtomicI64,
    /// 0: running; otherwise the frozen wall-clock second.
    frozen: AtomicI64,
}

impl Clock {
    pub fn now(&self) -> i64 {
        let frozen = self.frozen.load(Ordering::Relaxed);
        let secs = if frozen != 0 {
            frozen
        } else {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        };
        secs + self.offset.load(Ordering::Relaxed)
    }

    /// Stops the clock at the current second; `advance` still moves it.
    pub fn freeze(&self) {
        let now = self.now() - self.offset.load(Ordering::Relaxed);
        self.frozen.store(now, Ordering::Relaxed);
    }

    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::Relaxed);
    }

    pub fn reset(&self) {
        self.offset.store(0, Ordering::Relaxed);
        self.frozen.store(0, Ordering::Relaxed);
    }
}

/// Access tokens refused before their `exp`: logged-out `jti`s and revoked sessions. Mirrors
/// the database (reloaded at start; on PostgreSQL kept in step with the other instances by
/// crate::fleet) so that verifying a bearer token never touches it. Bounded by time: an entry
/// is pruned once the last token it could refuse has expired.
#[derive(Default)]
pub struct Revocations {
    inner: RwLock<RevocationSets>,
}

#[derive(Default)]
struct RevocationSets {
    /// jti -> forget after
    tokens: HashMap<String, i64>,
    /// session id -> forget after
    sessions: HashMap<String, i64>,
}

impl Revocations {
    pub fn is_revoked(&self, jti: &str, sid: &str) -> bool {
        let sets = match self.inner.read() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        sets.tokens.contains_key(jti) || sets.sessions.contains_key(sid)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RevocationSets> {
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

/// A per-minute limit on events per key (a client address bucket, a session), for the whole
/// fleet: on a shared store (PostgreSQL) the counter is a row in the database, counted in one
/// statement, so N instances do not multiply the limit; SQLite has one instance, which counts
/// in memory.
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
        match store
            .count_hit(&format!("{}:{key}", self.scope), minute)
            .await?
        {
            Some(hits) => Ok((hits > i64::from(self.per_minute)).then_some(minute + 60 - now)),
            None => Ok(self.local.check(key.to_owned(), now).err()),
        }
    }

    /// Forgets every count (the test hooks).
    pub async fn reset(&self, store: &Store) -> StoreResult<()> {
        self.local.reset();
        store.reset_hits(&format!("{}:", self.scope)).await
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

/// Counters and faults behind --test-hooks.
#[derive(Default)]
pub struct Hooks {
    pub refresh_calls: AtomicU64,
    pub refresh_rotated: AtomicU64,
    pub reuse_detections: AtomicU64,
    pub revocations: AtomicU64,
    pub logins: AtomicU64,
    pub logouts: AtomicU64,
    pub refresh_latency_ms: AtomicU64,
    pub refresh_fail_next: AtomicU64,
    pub refresh_drop_next: AtomicU64,
    pub refresh_gateway_401_next: AtomicU64,
}

impl Hooks {
    /// Decrements `counter` if positive; true if it was.
    pub fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}
