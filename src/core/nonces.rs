//! The DPoP nonce and clock book (RFC 9449): per server, the newest `DPoP-Nonce` and how far
//! its clock is from ours, learnt from each answer's `Date`; what a proof says from them; and
//! which refused proofs are worth one more try. Servers are numbered by the driver (the place
//! of their origin in its list).

use super::super::reply::{is_proof_refusal, is_token_shaped};
use super::Machine;

/// How much older than the newest seen a response's `Date` may be and still count as a
/// response that was merely overtaken (its nonce and clock then are not taken).
const MAX_REORDER_MS: f64 = 300_000.0;
/// Servers whose nonce and clock are remembered (the allowed origins and the auth endpoints').
const MAX_SERVERS: usize = 64;

/// What one server (origin) told us: its newest DPoP nonce and its clock.
#[derive(Debug, Clone)]
pub(super) struct Server {
    nonce: Option<String>,
    /// The `Date` of the response the nonce came with (NaN: none yet).
    date_ms: f64,
    /// Its clock minus ours.
    offset_ms: f64,
}

/// A DPoP nonce worth keeping: visible ASCII, not absurdly long (it goes into every proof).
fn nonce_shaped(n: &str) -> bool {
    !n.is_empty() && n.len() <= 512 && is_token_shaped(n)
}

impl Machine {
    /// DPoP: a response from server `i` arrived with this `DPoP-Nonce` and this `Date` (ms).
    /// A server is the place of its origin in the driver's list (the allowed origins, then
    /// the auth endpoints'; at most `MAX_SERVERS`). Report it before its status or reply. The
    /// nonce is kept unless a response with a later `Date` gave one already; the server's
    /// clock is learnt from `Date`, so `iat` is right however far off the page's clock is.
    pub fn seen(&mut self, i: usize, nonce: Option<String>, date_ms: Option<f64>, now: f64) {
        if i >= MAX_SERVERS {
            return;
        }
        if self.servers.len() <= i {
            self.servers.resize_with(i + 1, || Server {
                nonce: None,
                date_ms: f64::NAN,
                offset_ms: 0.0,
            });
        }
        let s = &mut self.servers[i];
        match date_ms.filter(|d| d.is_finite()) {
            // An older response, overtaken (responses cross by seconds, not minutes: a Date far
            // ahead of the others, e.g. a hostile server's, does not freeze the clock).
            Some(d) if d < s.date_ms && s.date_ms - d < MAX_REORDER_MS => return,
            Some(d) => {
                s.offset_ms = d - now;
                s.date_ms = d;
            }
            None => {}
        }
        if let Some(n) = nonce.filter(|n| nonce_shaped(n)) {
            s.nonce = Some(n);
        }
    }

    /// DPoP: what a proof for server `i` says now: `iat` (seconds, on the server's clock as
    /// far as known) and the newest nonce.
    pub fn proof(&self, i: usize, now: f64) -> (f64, Option<&str>) {
        let s = self.servers.get(i);
        let offset = s.map_or(0.0, |s| s.offset_ms);
        (
            ((now + offset) / 1000.0).floor(),
            s.and_then(|s| s.nonce.as_deref()),
        )
    }

    /// DPoP: whether a proof refused with `error` is worth exactly one more try, with a new
    /// proof: the server wants a newer nonce (`use_dpop_nonce`), or refused the proof
    /// (`invalid_dpop_proof`: stamped with the page's clock before the server's was known, or
    /// sent twice because the browser resent a request whose connection closed). A second
    /// refusal goes to the caller: never a loop.
    pub(super) fn proof_retry(&self, error: Option<&str>) -> bool {
        self.config.dpop && error.is_some_and(is_proof_refusal)
    }
}
