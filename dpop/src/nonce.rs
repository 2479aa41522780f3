//! Stateless nonces: `base64url(HMAC-SHA256(secret, "tokenwarden-dpop-nonce:" + n))` for the
//! 30-second window `n = floor(t / 30)`. A verifier accepts the current and the previous
//! window's nonce, so a nonce lives 30 to 60 seconds, and any instance holding the same secret
//! agrees without talking to the others.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a nonce window in seconds. Nonces are valid for one to two windows.
pub const NONCE_WINDOW_SECS: i64 = 30;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// (window, nonce of the window, nonce of the window before)
type Cached = (i64, Arc<str>, Arc<str>);

/// Issues and checks nonces. Cheap to clone? No: share it behind an `Arc`.
pub struct Nonces {
    mac: Hmac<Sha256>,
    /// (window, nonce of window, nonce of window - 1)
    cache: RwLock<Option<Cached>>,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces { .. }")
    }
}

fn window(now: i64) -> i64 {
    now.div_euclid(NONCE_WINDOW_SECS)
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
            cache: RwLock::new(None),
        })
    }

    /// The nonce of window `n`.
    pub fn nonce_for_window(&self, n: i64) -> String {
        let mut mac = self.mac.clone();
        mac.update(b"tokenwarden-dpop-nonce:");
        mac.update(n.to_string().as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    fn pair(&self, now: i64) -> (Arc<str>, Arc<str>) {
        let n = window(now);
        let cached = match self.cache.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        };
        if let Some((w, cur, prev)) = cached
            && w == n
        {
            return (cur, prev);
        }
        let cur: Arc<str> = self.nonce_for_window(n).into();
        let prev: Arc<str> = self.nonce_for_window(n - 1).into();
        let entry = Some((n, cur.clone(), prev.clone()));
        match self.cache.write() {
            Ok(mut c) => *c = entry,
            Err(p) => *p.into_inner() = entry,
        }
        (cur, prev)
    }

    /// The nonce to hand out at `now` (unix seconds).
    pub fn current(&self, now: i64) -> Arc<str> {
        self.pair(now).0
    }

    /// Whether `nonce` is accepted at `now`: the current or the previous window's.
    pub fn accepts(&self, nonce: &str, now: i64) -> bool {
        let (cur, prev) = self.pair(now);
        nonce.len() == cur.len() && (nonce == &*cur || nonce == &*prev)
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
        assert!(!b.accepts(&n, t0 - 1), "not before its window");
        // Handed out at the end of its window, it still lives 30 s.
        let late = a.current(t0 + 29);
        assert!(a.accepts(&late, t0 + 59));
        assert!(!other.accepts(&n, t0));
        for junk in ["", "x", &"A".repeat(43), &n[..42]] {
            assert!(!a.accepts(junk, t0));
        }
        assert!(Nonces::new(&[1u8; 31]).is_none());
    }

    #[test]
    fn nonce_matches_the_documented_formula() {
        let a = Nonces::new(b"0123456789abcdef0123456789abcdef").unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"tokenwarden-dpop-nonce:60000000");
        let want = B64.encode(mac.finalize().into_bytes());
        assert_eq!(&*a.current(60_000_000 * 30 + 5), want.as_str());
    }
}
