//! DPoP (RFC 9449) for Rust backends, as profiled by tokenwarden (`docs/PROTOCOL.md`).
//!
//! - [`Verifier`] checks a proof against a request: `typ`, the pinned algorithms (ES256 with a
//!   P-256 `jwk`, EdDSA with an Ed25519 one), the signature, `htm`, `htu`, the `iat` window, `ath`, the nonce, the
//!   key binding (`cnf.jkt`) and, last, that its `jti` is new ([`ReplayCache`]).
//! - [`Nonces`]: stateless nonces, an HMAC of a 30-second window under a shared secret, so any
//!   instance holding the secret checks any other's; valid 30 to 60 seconds.
//! - [`thumbprint`]: the RFC 7638 thumbprint of a P-256 key, the `jkt` of `cnf.jkt`
//!   ([`PublicKey::thumbprint`] for either kind).
//! - [`access`]: EdDSA access tokens (RFC 9068 profile) verified against a JWKS, with `cnf`.
//! - [`resource`] (feature `axum`, default): an extractor that does both for a resource server,
//!   and the RFC 9449 error responses.
//! - [`feed`] (feature `feed`): follow the auth server's keys and revocation feed, so that a
//!   revoked token is refused within a second.
//! - [`ProofSigner`]: makes proofs (tests, load generators, Rust clients).
//!
//! Every function that reads untrusted input returns a typed error; none panics.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod access;
mod error;
#[cfg(feature = "feed")]
pub mod feed;
mod htu;
mod jwk;
mod nonce;
mod proof;
mod replay;
#[cfg(feature = "axum")]
pub mod resource;
mod signer;

pub use error::ProofError;
pub use htu::{NormalizedUrl, is_loopback_host, normalize_origin, normalize_url};
pub use jwk::{PublicKey, ed25519_thumbprint, thumbprint};
pub use nonce::{NONCE_LIFETIME_SECS, NONCE_WINDOW_SECS, Nonces};
pub use proof::{Expected, Origins, Policy, Proof, Verifier, ath};
pub use replay::{PruneHorizon, ReplayCache};
pub use signer::{ProofSigner, SignError};

/// A JWS part's JSON as `T`, if it is a JSON object: serde's derived structs take a JSON
/// array too (the members in order), which RFC 7515 and the Node verifier do not. And if it is
/// [`plain_json`].
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    if !bytes.trim_ascii_start().starts_with(b"{") || !plain_json(bytes) {
        return None;
    }
    serde_json::from_slice(bytes).ok()
}

/// How deep a JWS part's arrays and objects may nest, its own object counted.
pub const MAX_JSON_DEPTH: usize = 32;

/// Whether a JWS part's JSON text is one every reader takes alike: UTF-8 throughout (serde
/// does not check a string it skips), arrays and objects nested at most [`MAX_JSON_DEPTH`]
/// deep, and no `\u` escape of a surrogate outside a pair, in any member, one named twice too
/// (`JSON.parse` keeps only the last of those). serde_json and `JSON.parse` disagree on each
/// (serde refuses a lone surrogate it reads into a string, not one in a member it skips; it
/// nests 128 deep into a value it keeps, without limit into one it skips), so both verifiers
/// refuse them first (the Node verifier's `plainJson`; cases
/// in tests/conformance/corpus.json). A byte order mark is refused by [`json_object`]'s `{`.
pub fn plain_json(bytes: &[u8]) -> bool {
    let unit = |at: usize| {
        let hex = bytes.get(at..at + 4)?;
        u16::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
    };
    if std::str::from_utf8(bytes).is_err() {
        return false;
    }
    let (mut depth, mut i, mut in_string) = (0usize, 0usize, false);
    while let Some(&b) = bytes.get(i) {
        match (in_string, b) {
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                if bytes.get(i + 1) == Some(&b'u') {
                    match unit(i + 2) {
                        Some(0xD800..=0xDBFF) => {
                            let low = bytes.get(i + 6..i + 8) == Some(&b"\\u"[..])
                                && matches!(unit(i + 8), Some(0xDC00..=0xDFFF));
                            if !low {
                                return false;
                            }
                            i += 12;
                        }
                        Some(0xDC00..=0xDFFF) => return false,
                        _ => i += 6,
                    }
                    continue;
                }
                i += 2;
                continue;
            }
            (false, b'"') => in_string = true,
            (false, b'{' | b'[') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return false;
                }
            }
            (false, b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    true
}

/// A proof signed with ECDSA P-256 and SHA-256; its `jwk` an EC P-256 key.
pub const ES256: &str = "ES256";
/// A proof signed with Ed25519; its `jwk` an OKP Ed25519 key. (The name tokenwarden's client
/// sends, as most verifiers know it.)
pub const EDDSA: &str = "EdDSA";
/// The same, by its RFC 9864 fully-specified name (what oauth4webapi sends for an Ed25519 key).
pub const ED25519: &str = "Ed25519";
/// The algorithms accepted for proofs (`dpop_signing_alg_values_supported`, the challenge's
/// `algs`), each with its one key type: `none`, HMAC, RSA and every other are refused.
pub const ALGORITHMS: [&str; 3] = [ES256, EDDSA, ED25519];
/// The `typ` a proof's header must have.
pub const PROOF_TYPE: &str = "dpop+jwt";
/// Request header carrying the proof.
pub const DPOP_HEADER: &str = "dpop";
/// Response header carrying the current nonce.
pub const NONCE_HEADER: &str = "dpop-nonce";

/// The scheme of an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    Dpop,
}

/// Splits `Authorization: <scheme> <token>` for the schemes `Bearer` and `DPoP` (case-insensitive);
/// `None` for other schemes or an empty token.
pub fn authorization(value: &str) -> Option<(Scheme, &str)> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((Scheme::Bearer, token))
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Some((Scheme::Dpop, token))
    } else {
        None
    }
}

/// A `WWW-Authenticate: DPoP` challenge (RFC 9449 §7.1): `DPoP realm="…", algs="ES256 EdDSA Ed25519"` and,
/// with an error, `error="…", error_description="…"`. Quotes and backslashes in the texts are
/// dropped.
pub fn dpop_challenge(realm: &str, error: Option<(&str, &str)>) -> String {
    let clean = |s: &str| s.replace(['"', '\\', '\r', '\n'], "");
    let algs = ALGORITHMS.join(" ");
    let mut c = format!(r#"DPoP realm="{}", algs="{algs}""#, clean(realm));
    if let Some((code, description)) = error {
        c.push_str(&format!(
            r#", error="{}", error_description="{}""#,
            clean(code),
            clean(description)
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::plain_json;

    #[test]
    fn plain_json_reads_strings_escapes_and_nesting_as_a_parser_does() {
        let nested = |n: usize| format!(r#"{{"d":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        for (text, plain) in [
            (r#"{"a":"\\","b":[[]]}"#, true),
            (r#"{"a":"\"[[[{{{"}"#, true),
            (r#"{"a":"\ud83d\ude00"}"#, true),
            (r#"{"\ud83d\ude00":1}"#, true),
            (r#"{"a":"\\ud800"}"#, true),
            (r#"{"a":"\ud83d"}"#, false),
            (r#"{"a":"\ud83dx"}"#, false),
            (r#"{"a":"\ude00"}"#, false),
            (r#"{"a":"\ud83d\u0041"}"#, false),
            (r#"{"\udc00":1}"#, false),
            (&nested(31), true),
            (&nested(32), false),
            (r#"{"a":"\ud800","a":1}"#, false),
        ] {
            assert_eq!(plain_json(text.as_bytes()), plain, "{text}");
        }
        assert!(!plain_json(b"{\"a\":\"\xff\"}"), "not UTF-8");
    }
}
