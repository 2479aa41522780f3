//! Verifying a provider's JWTs (ID tokens, back-channel logout tokens) against its JWKS: the
//! algorithm pinned to the ones the provider advertises and this server supports (RSA PKCS#1
//! and PSS, ECDSA P-256 and P-384, Ed25519); `none` and HMAC never, whatever the provider says.
//! The claims are checked by the caller (crate::oidc).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{Map, Value};

/// Why a JWT was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm {0:?} is not allowed")]
    Algorithm(String),
    #[error("no key of the provider's JWKS matches (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("the signature does not verify")]
    Signature,
    #[error("unsupported critical header")]
    Critical,
}

/// The signature algorithms this server verifies. `none` and `HS*` are not among them.
pub const SUPPORTED: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Largest token accepted.
const MAX_LEN: usize = 16 * 1024;
/// Most keys one token is tried against. A token without a `kid` is tried against every key
/// that fits its algorithm, and a provider's JWKS may hold up to 1 MiB of keys: without a bound,
/// one forged back-channel logout token (anyone can post one) would cost as many signature
/// checks. Providers publish a handful (Microsoft Entra ID about ten).
const MAX_TRIED: usize = 16;

/// A verified JWT: its header and claims.
#[derive(Debug, Clone)]
pub struct Verified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

fn b64_json(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed),
    }
}

fn b64_field(jwk: &Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    B64.decode(jwk.get(name)?.as_str()?).ok()
}

/// A provider's public key, ready for one algorithm.
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        params: &'static signature::RsaParameters,
    },
    /// An EC point (uncompressed) or an Ed25519 key.
    Other {
        bytes: Vec<u8>,
        algorithm: &'static dyn VerificationAlgorithm,
    },
}

impl Key {
    fn verifies(&self, signed: &[u8], sig: &[u8]) -> bool {
        match self {
            Key::Rsa { n, e, params } => signature::RsaPublicKeyComponents { n, e }
                .verify(params, signed, sig)
                .is_ok(),
            Key::Other { bytes, algorithm } => UnparsedPublicKey::new(*algorithm, bytes)
                .verify(signed, sig)
                .is_ok(),
        }
    }
}

/// `jwk` as a key for `alg`, if it is of the right type (and, for RSA, of 2048 bits or more:
/// ring refuses smaller moduli).
fn key_for(alg: &str, jwk: &Map<String, Value>) -> Option<Key> {
    let s = |name: &str| jwk.get(name).and_then(Value::as_str);
    let rsa: Option<&'static signature::RsaParameters> = match alg {
        "RS256" => Some(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => Some(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => Some(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => Some(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => Some(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => Some(&signature::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    if let Some(params) = rsa {
        return (s("kty") == Some("RSA")).then_some(Key::Rsa {
            n: b64_field(jwk, "n")?,
            e: b64_field(jwk, "e")?,
            params,
        });
    }
    let (kty, crv, algorithm, len): (&str, &str, &'static dyn VerificationAlgorithm, usize) =
        match alg {
            "ES256" => ("EC", "P-256", &signature::ECDSA_P256_SHA256_FIXED, 32),
            "ES384" => ("EC", "P-384", &signature::ECDSA_P384_SHA384_FIXED, 48),
            "EdDSA" => ("OKP", "Ed25519", &signature::ED25519, 32),
            _ => return None,
        };
    if s("kty") != Some(kty) || s("crv") != Some(crv) {
        return None;
    }
    let x = b64_field(jwk, "x")?;
    if x.len() != len {
        return None;
    }
    if kty == "OKP" {
        return Some(Key::Other {
            bytes: x,
            algorithm,
        });
    }
    let y = b64_field(jwk, "y")?;
    if y.len() != len {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    Some(Key::Other {
        bytes: point,
        algorithm,
    })
}

/// Verifies `token`'s signature with one of `keys` (a JWKS's `keys`) under an algorithm of
/// `allowed` (already intersected with [`SUPPORTED`]).
pub fn verify(token: &str, keys: &[Value], allowed: &[String]) -> Result<Verified, JwtError> {
    if token.len() > MAX_LEN {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = b64_json(h64)?;
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?;
    if !SUPPORTED.contains(&alg) || !allowed.iter().any(|a| a == alg) {
        return Err(JwtError::Algorithm(logged(alg)));
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let sig = B64.decode(s64).map_err(|_| JwtError::Malformed)?;
    let signed = token
        .get(..h64.len() + 1 + p64.len())
        .ok_or(JwtError::Malformed)?
        .as_bytes();
    let candidates = keys.iter().filter_map(Value::as_object).filter(|k| {
        let s = |name: &str| k.get(name).and_then(Value::as_str);
        (kid.is_none() || s("kid") == kid)
            && s("use").is_none_or(|u| u == "sig")
            && s("alg").is_none_or(|a| a == alg)
    });
    let mut matched = false;
    for key in candidates
        .filter_map(|jwk| key_for(alg, jwk))
        .take(MAX_TRIED)
    {
        matched = true;
        if key.verifies(signed, &sig) {
            return Ok(Verified {
                header,
                claims: b64_json(p64)?,
            });
        }
    }
    if matched {
        Err(JwtError::Signature)
    } else {
        Err(JwtError::UnknownKey(kid.map(logged)))
    }
}

/// A value the token's sender chose, as the log may show it: its first 64 characters. Anyone
/// can post a logout token (up to 16 KiB): its `alg` or `kid` whole, in every refusal's log
/// line, would let a sender fill the log at will.
fn logged(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
    use serde_json::json;

    fn sign(header: Value, claims: Value, signer: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        format!("{input}.{}", B64.encode(signer(input.as_bytes())))
    }

    /// What a refusal logs of the sender's `alg` and `kid` is bounded: anyone may post a 16 KiB
    /// logout token, and its log line would otherwise be as long (a review found it).
    #[test]
    fn a_refusal_logs_at_most_64_characters_of_the_sender_s_alg_or_kid() {
        let long = "A".repeat(10_000);
        let all: Vec<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
        let token = sign(json!({ "alg": long }), json!({}), |_| vec![0; 64]);
        let e = verify(&token, &[], &all).err().unwrap();
        assert_eq!(e, JwtError::Algorithm("A".repeat(64)));
        let token = sign(json!({ "alg": "ES256", "kid": long }), json!({}), |_| {
            vec![0; 64]
        });
        let e = verify(&token, &[], &all).err().unwrap();
        assert_eq!(e, JwtError::UnknownKey(Some("A".repeat(64))));
        assert!(e.to_string().len() < 200, "{e}");
    }

    #[test]
    fn the_algorithm_is_pinned_and_the_key_must_fit_it() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = ec.public_key().as_ref();
        let ec_jwk = json!({ "kty": "EC", "crv": "P-256", "kid": "e",
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]) });
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let ed_jwk = json!({ "kty": "OKP", "crv": "Ed25519", "kid": "d",
            "x": B64.encode(ed.public_key().as_ref()) });
        let keys = vec![ec_jwk.clone(), ed_jwk];
        let all: Vec<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
        let es = |h: Value| {
            sign(h, json!({ "sub": "s" }), |m| {
                ec.sign(&rng, m).unwrap().as_ref().to_vec()
            })
        };
        let eddsa = |h: Value| sign(h, json!({ "sub": "s" }), |m| ed.sign(m).as_ref().to_vec());

        assert!(verify(&es(json!({ "alg": "ES256", "kid": "e" })), &keys, &all).is_ok());
        assert!(
            verify(&es(json!({ "alg": "ES256" })), &keys, &all).is_ok(),
            "no kid: any fitting key"
        );
        assert!(verify(&eddsa(json!({ "alg": "EdDSA", "kid": "d" })), &keys, &all).is_ok());
        // Only what the provider advertises.
        let es_only = vec!["ES256".to_owned()];
        assert_eq!(
            verify(
                &eddsa(json!({ "alg": "EdDSA", "kid": "d" })),
                &keys,
                &es_only
            )
            .unwrap_err(),
            JwtError::Algorithm("EdDSA".into())
        );
        // A key of another type under the token's kid does not verify it.
        assert!(matches!(
            verify(&es(json!({ "alg": "ES256", "kid": "d" })), &keys, &all),
            Err(JwtError::UnknownKey(_))
        ));
        // none and HMAC never, even when advertised.
        let with_bad = vec!["none".to_owned(), "HS256".to_owned(), "ES256".to_owned()];
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none"}"#),
            B64.encode(r#"{"sub":"s"}"#)
        );
        assert!(matches!(
            verify(&none, &keys, &with_bad),
            Err(JwtError::Algorithm(_))
        ));
        let hs = sign(
            json!({ "alg": "HS256", "kid": "e" }),
            json!({ "sub": "s" }),
            |_| vec![0; 32],
        );
        assert!(matches!(
            verify(&hs, &keys, &with_bad),
            Err(JwtError::Algorithm(_))
        ));
        // A tampered payload; crit; garbage.
        let good = es(json!({ "alg": "ES256", "kid": "e" }));
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = B64.encode(r#"{"sub":"t"}"#);
        parts[1] = &other;
        assert_eq!(
            verify(&parts.join("."), &keys, &all).unwrap_err(),
            JwtError::Signature
        );
        let crit = es(json!({ "alg": "ES256", "kid": "e", "crit": ["x"] }));
        assert_eq!(verify(&crit, &keys, &all).unwrap_err(), JwtError::Critical);
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(verify(junk, &keys, &all).is_err(), "{junk}");
        }
        // A key restricted to another use or algorithm is not a candidate.
        let mut enc = ec_jwk;
        enc["use"] = json!("enc");
        assert!(verify(&good, &[enc], &all).is_err());
    }

    #[test]
    fn a_token_is_tried_against_sixteen_keys_at_most() {
        let pairs: Vec<Ed25519KeyPair> = (0..=MAX_TRIED)
            .map(|_| {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
                Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
            })
            .collect();
        let jwks: Vec<Value> = pairs
            .iter()
            .map(|k| json!({ "kty": "OKP", "crv": "Ed25519", "x": B64.encode(k.public_key().as_ref()) }))
            .collect();
        let all = vec!["EdDSA".to_owned()];
        let by = |k: &Ed25519KeyPair| {
            sign(json!({ "alg": "EdDSA" }), json!({ "sub": "s" }), |m| {
                k.sign(m).as_ref().to_vec()
            })
        };
        // No kid: the sixteenth fitting key is tried, the seventeenth never.
        assert!(verify(&by(&pairs[MAX_TRIED - 1]), &jwks, &all).is_ok());
        assert_eq!(
            verify(&by(&pairs[MAX_TRIED]), &jwks, &all).unwrap_err(),
            JwtError::Signature
        );
    }
}
