//! Verifying access tokens on this server: the published verifier (crate::tokens), a cache of
//! tokens whose signature was already checked, and the revocation mirror (crate::revoked).
//!
//! The cache remembers only the signature (and `alg`, `typ`, `iss`, `aud`): a token presented
//! again (every API call of a session, for minutes) costs a hash lookup instead of an Ed25519
//! verification. Every presentation still checks, against the current clock and key ring, that
//! the token's `kid` still verifies (an emergency revocation takes effect at once), `exp` and
//! `nbf`, then the deny-list and the session.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokenwarden_dpop::access::TokenError;

use crate::clock::Clock;
use crate::keys::Keys;
use crate::revoked::Revoked;
use crate::tokens::{self, AccessClaims, Audience, Invalid};

/// Most tokens remembered; past it the cache starts over.
const CAPACITY: usize = 10_000;

/// token -> (its `kid`, its claims)
type Remembered = HashMap<Box<str>, (Box<str>, AccessClaims)>;

#[derive(Clone)]
pub struct Access(Arc<Inner>);

struct Inner {
    keys: Keys,
    audience: Audience,
    clock: Clock,
    revoked: Arc<Revoked>,
    verified: RwLock<Remembered>,
}

/// The `kid` of a JWT's header, if it has one.
fn kid_of(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("kid")?.as_str().map(str::to_owned)
}

impl Access {
    pub fn new(keys: Keys, audience: Audience, clock: Clock, revoked: Arc<Revoked>) -> Self {
        Access(Arc::new(Inner {
            keys,
            audience,
            clock,
            revoked,
            verified: RwLock::new(HashMap::new()),
        }))
    }

    pub fn audience(&self) -> &Audience {
        &self.0.audience
    }

    /// A valid, unrevoked access token's claims.
    pub fn authenticate(&self, token: &str) -> Result<AccessClaims, Invalid> {
        let claims = self.verify(token)?;
        if self.0.revoked.is_revoked(&claims.jti, &claims.sid) {
            return Err(Invalid::Revoked);
        }
        Ok(claims)
    }

    /// `tokens::verify`, remembering tokens that pass.
    fn verify(&self, token: &str) -> Result<AccessClaims, Invalid> {
        let ring = self.0.keys.current();
        let now = self.0.clock.now();
        let leeway = self.0.audience.leeway_secs;
        let hit = {
            let map = match self.0.verified.read() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.get(token)
                .filter(|(kid, _)| ring.verifying.contains(kid))
                .map(|(_, claims)| claims.clone())
        };
        if let Some(claims) = hit {
            if claims.exp + leeway <= now {
                return Err(TokenError::Expired.into());
            }
            if claims.nbf - leeway > now {
                return Err(TokenError::NotYetValid.into());
            }
            return Ok(claims);
        }
        let claims = tokens::verify(&ring, &self.0.audience, token, now)?;
        if let Some(kid) = kid_of(token) {
            let mut map = match self.0.verified.write() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            if map.len() >= CAPACITY {
                map.clear();
            }
            map.insert(token.into(), (kid.into(), claims.clone()));
        }
        Ok(claims)
    }
}
