//! EdDSA access tokens (RFC 9068 profile, as tokenwarden-server issues them) verified against
//! a JWKS, with their DPoP binding `cnf.jkt`.
//!
//! Pinned: `alg` is exactly `EdDSA`, `typ` is `at+jwt`, `kid` names a key of the set, `iss`
//! and `aud` are the configured ones, `exp`/`nbf` with a leeway of seconds.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Why an access token was refused (the `error_description` of `invalid_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.description())]
pub enum TokenError {
    Malformed,
    Algorithm,
    Type,
    UnknownKey,
    Signature,
    Claims,
    Expired,
    NotYetValid,
}

impl TokenError {
    /// The text of `error_description`.
    pub fn description(self) -> &'static str {
        match self {
            TokenError::Malformed => "the token is malformed",
            TokenError::Algorithm => "the token's algorithm is not accepted",
            TokenError::Type => "the token is not an access token (typ must be at+jwt)",
            TokenError::UnknownKey => "the token's signing key is unknown or revoked",
            TokenError::Signature => "the token's signature is invalid",
            TokenError::Claims => "the token's issuer, audience or claims are invalid",
            TokenError::Expired => "the token has expired",
            TokenError::NotYetValid => "the token is not valid yet",
        }
    }
}

/// A JWKS could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("the JWKS is not a JSON object with a keys array")]
    Malformed,
    #[error("the JWKS has no usable Ed25519 key")]
    NoKeys,
}

/// A token's time: a whole number of at most 2^53 − 1 in magnitude, however it is written
/// (`1800000000`, `1800000000.0`, `1.8e9`), as the Node verifier reads one
/// (`Number.isSafeInteger` after `JSON.parse`, which cannot tell those apart).
fn whole(v: &Value) -> Option<i64> {
    const SAFE: i64 = (1 << 53) - 1;
    match v.as_i64() {
        Some(n) => (-SAFE..=SAFE).contains(&n).then_some(n),
        None => {
            let f = v.as_f64()?;
            // Whole, and within ±SAFE: the cast is exact.
            (f.fract() == 0.0 && f.abs() <= SAFE as f64).then_some(f as i64)
        }
    }
}

/// Ed25519 verification keys by `kid`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

impl KeySet {
    /// Keeps the JWKS's keys that are `kty` `OKP`, `crv` `Ed25519`, with a `kid`, whose `alg`
    /// (if any) is `EdDSA` and `use` (if any) `sig`, and without a private member; others are
    /// skipped.
    pub fn from_jwks(json: &str) -> Result<Self, JwksError> {
        let doc: Value = serde_json::from_str(json).map_err(|_| JwksError::Malformed)?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::Malformed)?;
        let mut keys = HashMap::new();
        for k in list {
            let s = |name: &str| k.get(name).and_then(Value::as_str);
            // `alg` and `use` are optional, but one that is there must say ours (`null` or a
            // number is not "absent"); a key with a private member is published by mistake,
            // so anyone may sign with it. As the Node verifier reads a JWKS.
            let other_than = |name: &str, ours: &str| k.get(name).is_some_and(|v| *v != *ours);
            if s("kty") != Some("OKP")
                || s("crv") != Some("Ed25519")
                || other_than("alg", "EdDSA")
                || other_than("use", "sig")
                || crate::jwk::PRIVATE_MEMBERS
                    .iter()
                    .any(|m| k.get(*m).is_some())
            {
                continue;
            }
            let (Some(kid), Some(x)) = (s("kid"), s("x")) else {
                continue;
            };
            let Ok(bytes) = B64.decode(x) else { continue };
            let Ok(bytes) = <[u8; 32]>::try_from(bytes) else {
                continue;
            };
            // A key of small order, or not encoded canonically, is no key (every token under it
            // is refused by verify_strict anyway), as in the Node verifier: a JWKS of such keys
            // alone is `NoKeys` in both.
            if let Some(key) = crate::jwk::ed25519_point(&bytes) {
                keys.insert(kid.to_owned(), key);
            }
        }
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(KeySet { keys })
    }

    /// A set of raw Ed25519 public keys by `kid` (a server's own ring); keys that are not
    /// valid points are skipped.
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let keys = keys
            .into_iter()
            .filter_map(|(kid, bytes)| {
                let bytes = <[u8; 32]>::try_from(bytes).ok()?;
                Some((kid.to_owned(), crate::jwk::ed25519_point(&bytes)?))
            })
            .collect();
        KeySet { keys }
    }

    /// Whether `kid` names a key of the set.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The most leeway for `exp`/`nbf` a verifier takes, seconds: the auth server's `--leeway-secs`
/// and the Node verifier's `leewaySecs` have the same bound.
pub const MAX_LEEWAY_SECS: i64 = 30;

/// Who may accept a token.
#[derive(Debug, Clone)]
pub struct Audience {
    pub issuer: String,
    pub audience: String,
    /// Leeway for `exp`/`nbf`, seconds: 0 to [`MAX_LEEWAY_SECS`] (`ResourceServer::new` refuses
    /// more).
    pub leeway_secs: i64,
}

/// A verified access token.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub sub: String,
    /// The session the token was issued in (what a logout or a revoked session names).
    pub sid: String,
    /// The token's own id.
    pub jti: String,
    pub exp: i64,
    /// `cnf.jkt`: the thumbprint of the key the token is bound to, if it is bound.
    pub jkt: Option<String>,
    /// Every claim, as sent.
    pub claims: Map<String, Value>,
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    /// Extensions the token says must be understood (RFC 7515 §4.1.11): none is, so a token
    /// naming any is refused (the auth server's never do).
    crit: Option<Value>,
}

/// Verifies `token` at `now` (unix seconds).
pub fn verify(
    keys: &KeySet,
    aud: &Audience,
    token: &str,
    now: i64,
) -> Result<AccessToken, TokenError> {
    if token.len() > 8192 {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: Header = B64
        .decode(h64)
        .ok()
        .and_then(|b| crate::json_object(&b))
        .ok_or(TokenError::Malformed)?;
    if header.crit.is_some() {
        return Err(TokenError::Malformed);
    }
    if header.alg.as_deref() != Some("EdDSA") {
        return Err(TokenError::Algorithm);
    }
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(TokenError::Type);
    }
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| keys.keys.get(kid))
        .ok_or(TokenError::UnknownKey)?;
    let sig = B64.decode(s64).map_err(|_| TokenError::Malformed)?;
    let signed = token
        .get(..h64.len() + 1 + p64.len())
        .ok_or(TokenError::Malformed)?;
    if !crate::jwk::verify_ed25519(key, signed.as_bytes(), &sig) {
        return Err(TokenError::Signature);
    }
    let claims: Map<String, Value> = B64
        .decode(p64)
        .ok()
        .and_then(|b| crate::json_object(&b))
        .ok_or(TokenError::Claims)?;
    let s = |name: &str| claims.get(name).and_then(Value::as_str);
    let i = |name: &str| claims.get(name).and_then(whole);
    if s("iss") != Some(aud.issuer.as_str()) || s("aud") != Some(aud.audience.as_str()) {
        return Err(TokenError::Claims);
    }
    let (Some(sub), Some(exp)) = (s("sub"), i("exp")) else {
        return Err(TokenError::Claims);
    };
    if exp.saturating_add(aud.leeway_secs) <= now {
        return Err(TokenError::Expired);
    }
    if i("nbf").is_some_and(|nbf| nbf.saturating_sub(aud.leeway_secs) > now) {
        return Err(TokenError::NotYetValid);
    }
    let jkt = match claims.get("cnf") {
        None => None,
        Some(cnf) => Some(
            cnf.get("jkt")
                .and_then(Value::as_str)
                .filter(|j| j.len() == 43)
                .ok_or(TokenError::Claims)?
                .to_owned(),
        ),
    };
    // Then every other claim the auth server writes (its `AccessClaims`), each of its type, in
    // the Node verifier's order (its `serverClaims`): a token of another shape is none of its.
    // `sid` and `jti` are what the revocation feed names.
    let (Some(sid), Some(jti), Some(_), Some(_)) = (s("sid"), s("jti"), i("iat"), i("nbf")) else {
        return Err(TokenError::Claims);
    };
    let absent_or = |name: &str, ok: fn(&Value) -> bool| claims.get(name).is_none_or(ok);
    let roles = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
    if s("email").is_none()
        || s("name").is_none()
        || !absent_or("roles", roles)
        || !absent_or("email_verified", Value::is_boolean)
    {
        return Err(TokenError::Claims);
    }
    Ok(AccessToken {
        sub: sub.to_owned(),
        sid: sid.to_owned(),
        jti: jti.to_owned(),
        exp,
        jkt,
        claims,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwks_key_of_small_order_is_no_key() {
        let weak = |x: &str| {
            format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"weak","x":"{x}"}}]}}"#)
        };
        // The identity, and the identity encoded with y + p (not canonical).
        for x in [
            "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "7v_______________________________________38",
        ] {
            assert!(
                matches!(KeySet::from_jwks(&weak(x)), Err(JwksError::NoKeys)),
                "{x}"
            );
        }
        let strong = weak("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo");
        assert!(KeySet::from_jwks(&strong).is_ok());
    }
}
