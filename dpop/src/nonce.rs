//! Stateless nonces that name when they were issued:
//! `base64url(t ‖ HMAC-SHA256(secret, "tokenwarden-dpop-nonce:" ‖ t)[..24])`, `t` the issue
//! time in milliseconds as 8 big-endian bytes (43 characters in all). A verifier hands out the
//! nonce of the current 30-second window (`t` = the window's start) and accepts any nonce whose
//! MAC is right and whose `t` is less than 60 seconds old, so a nonce lives 30 to 60 seconds
//! and any instance holding the same secret agrees without talking to the others.
//!
//! A verifier can also refuse every nonce issued before a moment ([`Nonces::not_before_ms`]):
//! a server whose replay cache lives in memory sets it to the millisecond it started, so that
//! no proof accepted before a restart (its nonce was issued before) passes again after it. Its
//! own nonces are then issued at `max(window start, start)`.

use std::sync::RwLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a nonce window in seconds. Nonces are valid for one to two windows.
pub const NONCE_WINDOW_SECS: i64 = 30;

/// How long after its issue time a nonce is accepted.
pub const NONCE_LIFETIME_SECS: i64 = 2 * NONCE_WINDOW_SECS;

/// How far in the future an issue time may be (another instance's clock running ahead).
pub const NONCE_MAX_FUTURE_SECS: i64 = 10;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

const LABEL: &[u8] = b"tokenwarden-dpop-nonce:";
const MAC_LEN: usize = 24;

/// Issues and checks nonces. Share it behind an `Arc`.
pub struct Nonces {
    mac: Hmac<Sha256>,
    /// Nonces issued before this time (milliseconds) are refused (0: none).
    not_before: i64,
    /// (issue time, nonce) of the last nonce handed out.
    cache: RwLock<Option<(i64, std::sync::Arc<str>)>>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("not_before", &self.not_before)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// `secret` must be at least 32 bytes; `None` otherwise.
    pub fn new(secret: &[u8]) -> Option<Self> {
        if secret.len() < MIN_SECRET_LEN {
            return None;
        }
        let mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(Nonces {
            mac,
            not_before: 0,
            cache: RwLock::new(None),
        })
    }

    /// Refuses every nonce issued before `t_ms` (unix milliseconds), this verifier's or
    /// another's.
    pub fn not_before_ms(mut self, t_ms: i64) -> Self {
        self.not_before = t_ms;
        self
    }

    /// [`Nonces::not_before_ms`] on a verifier already built.
    pub fn refuse_before_ms(&mut self, t_ms: i64) {
        self.not_before = t_ms;
    }

    fn tag(&self, t: i64) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(LABEL);
        mac.update(&t.to_be_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The nonce issued at `t` (unix milliseconds).
    pub fn issued_at(&self, t: i64) -> String {
        let mut bytes = [0u8; 8 + MAC_LEN];
        bytes[..8].copy_from_slice(&t.to_be_bytes());
        bytes[8..].copy_from_slice(&self.tag(t)[..MAC_LEN]);
        B64.encode(bytes)
    }

    /// The nonce handed out during window `n` when nothing is refused (tests).
    pub fn nonce_for_window(&self, n: i64) -> String {
        self.issued_at(n * NONCE_WINDOW_SECS * 1000)
    }

    /// When (milliseconds) the nonce to hand out at `now` (seconds) is issued: the window's
    /// start, or the moment of [`Self::not_before_ms`] if that is later.
    fn issue_time(&self, now: i64) -> i64 {
        let start = (now - now.rem_euclid(NONCE_WINDOW_SECS)).saturating_mul(1000);
        start.max(self.not_before)
    }

    /// The nonce to hand out at `now` (unix seconds).
    pub fn current(&self, now: i64) -> std::sync::Arc<str> {
        let t = self.issue_time(now);
        let cached = match self.cache.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some((at, nonce)) = cached
            && at == t
        {
            return nonce;
        }
        let nonce: std::sync::Arc<str> = self.issued_at(t).into();
        match self.cache.write() {
            Ok(mut c) => *c = Some((t, nonce.clone())),
            Err(p) => *p.into_inner() = Some((t, nonce.clone())),
        }
        nonce
    }

    /// When `nonce` was issued (unix milliseconds), if it is one of this secret's.
    pub fn issue_time_of(&self, nonce: &str) -> Option<i64> {
        if nonce.len() != 43 {
            return None;
        }
        let bytes = B64.decode(nonce).ok()?;
        let (t, tag) = bytes.split_at_checked(8)?;
        let t = i64::from_be_bytes(t.try_into().ok()?);
        let want = self.tag(t);
        // Constant time: a guesser learns nothing from how long a refusal takes.
        let diff = tag
            .iter()
            .zip(&want[..MAC_LEN])
            .fold(tag.len() ^ MAC_LEN, |d, (a, b)| d | usize::from(a ^ b));
        (diff == 0).then_some(t)
    }

    /// Whether `nonce` is accepted at `now` (unix seconds): issued with this secret less than
    /// 60 seconds ago (and at most 10 seconds ahead), not before [`Self::not_before_ms`].
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let now = now.saturating_mul(1000);
        self.issue_time_of(nonce).is_some_and(|t| {
            t >= self.not_before
                && t <= now.saturating_add(NONCE_MAX_FUTURE_SECS * 1000)
                && now.saturating_sub(t) < NONCE_LIFETIME_SECS * 1000
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_lives_30_to_60_seconds_and_instances_with_one_secret_agree() {
        let a = Nonces::new(&[7u8; 32]).unwrap();
        let b = Nonces::new(&[7u8; 32]).unwrap();
        let other = Nonces::new(&[8u8; 32]).unwrap();
        let t0 = 1_800_000_010 - 1_800_000_010 % 30; // start of a window
        let n = a.current(t0);
        assert_eq!(n.len(), 43);
        assert_eq!(b.current(t0 + 29), n);
        assert!(b.accepts(&n, t0));
        assert!(b.accepts(&n, t0 + 59));
        assert!(!b.accepts(&n, t0 + 60), "never longer than 60 s");
        assert!(
            b.accepts(&n, t0 - 10),
            "another instance's clock may lag 10 s"
        );
        assert!(!b.accepts(&n, t0 - 11));
        // Handed out at the end of its window, it still lives 30 s.
        let late = a.current(t0 + 29);
        assert!(a.accepts(&late, t0 + 59));
        assert!(!other.accepts(&n, t0));
        let mut forged = B64.decode(&*n).unwrap();
        forged[..8].copy_from_slice(&((t0 + 30) * 1000).to_be_bytes());
        for junk in ["", "x", &"A".repeat(43), &n[..42], &B64.encode(&forged)] {
            assert!(!a.accepts(junk, t0), "{junk}");
        }
        assert!(Nonces::new(&[1u8; 31]).is_none());
    }

    #[test]
    fn nonces_issued_before_a_restart_are_refused_after_it() {
        let t0 = 1_800_000_010 - 1_800_000_010 % 30;
        let first = Nonces::new(&[7u8; 32])
            .unwrap()
            .not_before_ms(t0 * 1000 + 12_345);
        let n = first.current(t0 + 12);
        assert_eq!(first.issue_time_of(&n), Some(t0 * 1000 + 12_345));
        // Restarted 2 ms later, within the same second.
        let after = Nonces::new(&[7u8; 32])
            .unwrap()
            .not_before_ms(t0 * 1000 + 12_347);
        assert!(!after.accepts(&n, t0 + 12), "issued before the restart");
        // Its own nonce is issued after the start, and works.
        let fresh = after.current(t0 + 12);
        assert_ne!(fresh, n);
        assert!(after.accepts(&fresh, t0 + 12));
        assert!(after.accepts(&fresh, t0 + 72));
        assert!(!after.accepts(&fresh, t0 + 73));
        // The next window's nonce is the window's again.
        let next = after.current(t0 + 30);
        assert_eq!(after.issue_time_of(&next), Some((t0 + 30) * 1000));
        let before = Nonces::new(&[7u8; 32]).unwrap();
        // Another verifier with the secret, started earlier, takes both.
        assert!(before.accepts(&fresh, t0 + 20) && before.accepts(&n, t0 + 20));
    }

    #[test]
    fn nonce_matches_the_documented_formula() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let a = Nonces::new(secret).unwrap();
        let t: i64 = 60_000_000 * 30 * 1000;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(b"tokenwarden-dpop-nonce:");
        mac.update(&t.to_be_bytes());
        let mut want = t.to_be_bytes().to_vec();
        want.extend_from_slice(&mac.finalize().into_bytes()[..24]);
        assert_eq!(&*a.current(t / 1000 + 5), B64.encode(want).as_str());
    }
}
