//! Passwords: argon2id with OWASP's minimum parameters (m = 19 MiB, t = 2, p = 1: the crate's
//! defaults), run on the blocking pool so a login never stalls the async workers, and
//! [`Passwords::check`], the password sign-in's rules.
//!
//! Checks go through [`Hasher`]: at most `concurrency` verifications run at once (each holds
//! 19 MiB) and at most `queue` wait for a turn; a login beyond that is told the server is busy
//! instead of joining an unbounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::store::{CounterScope, Store, User};
use crate::throttle::Throttle;

/// Lower-cased, trimmed; the key of the per-account throttle whether the account exists or not.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The limits of password sign-in.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    /// Attempts per (account, client) within `window` before 429.
    pub max_failures: i64,
    pub window: i64,
    /// Attempts per client per minute.
    pub ip_per_minute: u32,
    pub argon2_concurrency: usize,
    pub argon2_queue: usize,
}

/// Password sign-in: throttles, the bounded hasher, and a dummy hash that makes unknown emails
/// cost what known ones do.
#[derive(Clone)]
pub struct Passwords(Arc<PasswordsInner>);

pub struct PasswordsInner {
    store: Store,
    clock: Clock,
    policy: PasswordPolicy,
    /// Attempts per client address bucket.
    pub ip_limiter: Throttle,
    /// argon2id behind a bounded semaphore.
    pub hasher: Hasher,
    /// A hash of a random password, verified against for unknown emails so that they take as
    /// long as known ones.
    dummy_hash: String,
}

impl std::ops::Deref for Passwords {
    type Target = PasswordsInner;
    fn deref(&self) -> &PasswordsInner {
        &self.0
    }
}

impl Passwords {
    pub async fn new(store: Store, clock: Clock, policy: PasswordPolicy) -> Result<Self, String> {
        let dummy_hash = hash(&crate::tokens::random_token()).await?;
        Ok(Passwords(Arc::new(PasswordsInner {
            ip_limiter: Throttle::new("login-ip", policy.ip_per_minute),
            hasher: Hasher::new(policy.argon2_concurrency, policy.argon2_queue),
            store,
            clock,
            policy,
            dummy_hash,
        })))
    }

    /// Counts a guess before the client sends one: 429 once `client` is over its per-minute
    /// limit. Called before anything else of a sign-in.
    pub async fn admit(&self, client: &str) -> Result<(), ApiError> {
        let now = self.clock.now();
        match self.ip_limiter.check(&self.store, client, now).await? {
            Some(retry_after) => Err(ApiError::TooManyAttempts { retry_after }),
            None => Ok(()),
        }
    }

    /// The account of `email` if `password` is its password. Unknown emails verify against a
    /// dummy hash: same work, same time, same answer (`invalid_credentials`). The attempt is
    /// counted before the password is checked and in one statement, so concurrent guesses
    /// cannot all read a count under the limit; per account *and* client, so a stranger's
    /// guesses cannot lock the owner out.
    pub async fn check(&self, email: &str, password: &str, client: &str) -> Result<User, ApiError> {
        let now = self.clock.now();
        // At most a bounded number of argon2 runs at once, a bounded queue, then 503.
        let turn = self
            .hasher
            .turn()
            .await
            .map_err(|_| ApiError::Busy { retry_after: 1 })?;
        let subject = format!("{client}|{email}");
        let (attempts, window_start) = self
            .store
            .count(
                CounterScope::LoginAttempts,
                &subject,
                now,
                self.policy.window,
            )
            .await?;
        if attempts > self.policy.max_failures {
            return Err(ApiError::TooManyAttempts {
                retry_after: window_start + self.policy.window - now,
            });
        }
        let found = self.store.user_by_email(email).await?;
        let phc = found.as_ref().map_or(self.dummy_hash.as_str(), |(_, h)| h);
        let matches = turn.verify(password, phc).await;
        drop(turn);
        let Some((user, _)) = found.filter(|_| matches) else {
            return Err(ApiError::InvalidCredentials);
        };
        self.store
            .clear_count(CounterScope::LoginAttempts, &subject)
            .await?;
        Ok(user)
    }
}

/// Hashes a password into a PHC string with a random salt.
pub async fn hash(password: &str) -> Result<String, String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Whether `password` matches the PHC string `phc`. A malformed hash never matches.
pub async fn verify(password: &str, phc: &str) -> bool {
    let password = password.to_owned();
    let phc = phc.to_owned();
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok()
    })
    .await
    .unwrap_or(false)
}

/// The server is verifying as many passwords as it allows, with a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A bounded gate around argon2 verification.
pub struct Hasher {
    permits: Semaphore,
    /// Requests admitted: running plus waiting.
    admitted: AtomicUsize,
    limit: usize,
    running: AtomicUsize,
    peak: AtomicUsize,
    verifications: AtomicU64,
}

/// A place in the gate; leaving (drop) frees it.
pub struct Turn<'a> {
    hasher: &'a Hasher,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.hasher.running.fetch_sub(1, Ordering::SeqCst);
        self.hasher.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Turn<'_> {
    /// Verifies within this turn.
    pub async fn verify(&self, password: &str, phc: &str) -> bool {
        self.hasher.verifications.fetch_add(1, Ordering::SeqCst);
        verify(password, phc).await
    }
}

struct Admission<'a>(&'a Hasher);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    /// `concurrency` verifications at once (at least 1), `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Hasher {
            permits: Semaphore::new(concurrency),
            admitted: AtomicUsize::new(0),
            limit: concurrency + queue,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            verifications: AtomicU64::new(0),
        }
    }

    /// Waits for a turn, or `Err(Busy)` at once if the queue is full.
    pub async fn turn(&self) -> Result<Turn<'_>, Busy> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Busy);
        }
        let admission = Admission(self);
        let permit = self.permits.acquire().await.map_err(|_| Busy)?;
        // From here the turn releases the admission (in its Drop).
        std::mem::forget(admission);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(running, Ordering::SeqCst);
        Ok(Turn {
            hasher: self,
            _permit: permit,
        })
    }

    /// The most verifications that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Passwords verified since start.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_gate_admits_concurrency_plus_queue_and_refuses_the_rest() {
        let h = Hasher::new(1, 1);
        let first = h.turn().await.expect("running");
        let second = h.turn();
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "the second caller waits for the permit"
        );
        // The queue (1) holds the second caller: a third is refused at once.
        assert_eq!(h.turn().await.err(), Some(Busy));
        drop(first);
        let second = second.await.expect("admitted after the first left");
        drop(second);
        assert_eq!(h.peak(), 1);
        assert!(h.turn().await.is_ok());
    }
}
