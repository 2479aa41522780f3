//! Access tokens whose signature has been checked, so that a token presented again (every API
//! call of a session, for minutes) costs a hash lookup instead of an Ed25519 verification.
//!
//! Only the signature (and `alg`, `typ`, `iss`, `aud`) is remembered. Every presentation still
//! checks, against the current clock and key ring: that the token's `kid` is still a verifying
//! key (an emergency revocation takes effect at once), `exp` and `nbf`; the caller then checks
//! the deny-list, the session and the DPoP proof as for a fresh token.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::keys::Ring;
use crate::tokens::{self, AccessClaims, Audience, Invalid};

/// Most tokens remembered; past it the cache starts over.
const CAPACITY: usize = 10_000;

/// token -> (its `kid`, its claims)
type Remembered = HashMap<Box<str>, (Box<str>, AccessClaims)>;

#[derive(Default)]
pub struct VerifiedTokens {
    map: RwLock<Remembered>,
}

impl VerifiedTokens {
    /// `tokens::verify`, remembering tokens that pass.
    pub fn verify(
        &self,
        ring: &Ring,
        aud: &Audience,
        token: &str,
        now: i64,
    ) -> Result<AccessClaims, Invalid> {
        let hit = {
            let map = match self.map.read() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.get(token)
                .filter(|(kid, _)| ring.verifying.contains_key(&**kid))
                .map(|(_, claims)| claims.clone())
        };
        if let Some(claims) = hit {
            if claims.exp + aud.leeway_secs <= now {
                return Err(Invalid::Expired);
            }
            if claims.nbf - aud.leeway_secs > now {
                return Err(Invalid::NotYetValid);
            }
            return Ok(claims);
        }
        let claims = tokens::verify(ring, aud, token, now)?;
        if let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) {
            let mut map = match self.map.write() {
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
