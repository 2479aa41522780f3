//! The proof's `jwk`: an EC P-256 public key (alg `ES256`) or an OKP Ed25519 one (alg `EdDSA`),
//! and its RFC 7638 thumbprint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, VerifyingKey};
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{ED25519, EDDSA, ES256, ProofError};

/// Members that only a private (or symmetric) key has. A proof's `jwk` carrying any of them is
/// refused: the client leaked its private key, or someone is probing the parser.
pub(crate) const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A proof's public key: P-256 with well-formed coordinates (ring checks that the point is on
/// the curve, and not the identity, when it verifies a signature with it), or Ed25519: a
/// canonical encoding of a point that is not of small order (a small-order key verifies a
/// forged signature over any message in a cofactorless verifier), decompressed when a signature
/// is checked with it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: Key,
    /// The thumbprint's members: `x`, and `y` for P-256.
    x: String,
    y: Option<String>,
}

#[derive(Debug, Clone)]
enum Key {
    /// SEC1 uncompressed: 0x04 || x || y.
    P256([u8; 65]),
    /// Bytes a [`strong_point`]; whether they are a point at all, the signature's check finds
    /// out (rule 5, as the Node verifier does). Verified as the access tokens are
    /// ([`verify_ed25519`]).
    Ed25519([u8; 32]),
}

fn coordinate(jwk: &Map<String, Value>, name: &str) -> Result<(String, [u8; 32]), ProofError> {
    let text = jwk
        .get(name)
        .and_then(Value::as_str)
        .ok_or(ProofError::Key)?;
    if text.len() != 43 {
        return Err(ProofError::Key);
    }
    let bytes = B64.decode(text).map_err(|_| ProofError::Key)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| ProofError::Key)?;
    Ok((text.to_owned(), bytes))
}

/// The y of each Ed25519 point of small order, little-endian (the sign bit of x aside): 0, 1,
/// p - 1 and the two of order 8. The same list as pkg/verify.js's `SMALL_ORDER_Y`; the
/// conformance corpus has every encoding of the eight points (14).
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// Whether `b` is a canonical encoding (y below p = 2^255 - 19) of no point of small order.
/// Whether it is a point at all, decompressing it finds out.
pub(crate) fn strong_point(b: &[u8; 32]) -> bool {
    let mut y = *b;
    y[31] &= 0x7f;
    let below_p = y[31] != 0x7f || y[0] < 0xed || y[1..31].iter().any(|v| *v != 0xff);
    below_p && !SMALL_ORDER_Y.contains(&y)
}

/// The Ed25519 key of these 32 bytes: a [`strong_point`] that decompresses (a key of the auth
/// server's JWKS, `access::KeySet`).
pub(crate) fn ed25519_point(b: &[u8; 32]) -> Option<VerifyingKey> {
    strong_point(b)
        .then(|| VerifyingKey::from_bytes(b).ok())
        .flatten()
}

/// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether a signature's `S` (its last 32 bytes, little-endian) is below the group order. Checked
/// here, not left to ed25519-dalek: its `legacy_compatibility` feature, which any crate of an
/// application's build may switch on, lets `S + L` through, and with it a second signature for
/// every message signed.
fn canonical_s(s: &[u8; 32]) -> bool {
    for (a, b) in s.iter().zip(&ORDER).rev() {
        if a != b {
            return a < b;
        }
    }
    false
}

/// The one Ed25519 check, of a proof and of an access token alike: `S` below the group order,
/// `R` a [`strong_point`], then ed25519-dalek's `verify_strict` (cofactorless; `R` compared as
/// it is encoded). The key is a [`strong_point`] already.
pub(crate) fn verify_ed25519(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    well_formed_ed25519(signature).is_some_and(|sig| key.verify_strict(message, &sig).is_ok())
}

/// A 64-byte Ed25519 signature whose `R` is a [`strong_point`] and whose `S` is below the group
/// order ([`verify_ed25519`]'s checks before the curve's).
fn well_formed_ed25519(signature: &[u8]) -> Option<Signature> {
    let sig = <&[u8; 64]>::try_from(signature).ok()?;
    let (r, s) = sig.split_at(32);
    (r.try_into().is_ok_and(strong_point) && s.try_into().is_ok_and(canonical_s))
        .then(|| Signature::from_bytes(sig))
}

impl PublicKey {
    /// Parses a JWK object for a proof of algorithm `alg` (one of [`crate::ALGORITHMS`]):
    /// `ES256` takes `kty` `EC`, `crv` `P-256` and 32-byte `x` and `y`; `EdDSA` (or `Ed25519`)
    /// takes `kty` `OKP`, `crv` `Ed25519` and a 32-byte `x`. No private member. Other members are ignored.
    pub fn from_jwk(jwk: &Value, alg: &str) -> Result<Self, ProofError> {
        let jwk = jwk.as_object().ok_or(ProofError::Key)?;
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(ProofError::Key);
        }
        let member = |name| jwk.get(name).and_then(Value::as_str);
        match (alg, member("kty"), member("crv")) {
            (ES256, Some("EC"), Some("P-256")) => {
                let (x, xb) = coordinate(jwk, "x")?;
                let (y, yb) = coordinate(jwk, "y")?;
                let mut sec1 = [4u8; 65];
                sec1[1..33].copy_from_slice(&xb);
                sec1[33..].copy_from_slice(&yb);
                Ok(PublicKey {
                    key: Key::P256(sec1),
                    x,
                    y: Some(y),
                })
            }
            (EDDSA | ED25519, Some("OKP"), Some("Ed25519")) => {
                let (x, xb) = coordinate(jwk, "x")?;
                if !strong_point(&xb) {
                    return Err(ProofError::Key);
                }
                Ok(PublicKey {
                    key: Key::Ed25519(xb),
                    x,
                    y: None,
                })
            }
            _ => Err(ProofError::Key),
        }
    }

    /// Verifies a signature (64 bytes: ES256's `r || s`, or Ed25519's) over `message`. A point
    /// off its curve fails here; Ed25519 as [`verify_ed25519`] says.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.key {
            Key::P256(sec1) => UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &sec1[..])
                .verify(message, signature)
                .is_ok(),
            Key::Ed25519(key) => VerifyingKey::from_bytes(key)
                .is_ok_and(|key| verify_ed25519(&key, message, signature)),
        }
    }

    /// From SEC1 uncompressed bytes (`0x04 || x || y`), e.g. ring's public key.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let sec1: [u8; 65] = bytes.try_into().ok()?;
        (sec1[0] == 4).then(|| PublicKey {
            x: B64.encode(&sec1[1..33]),
            y: Some(B64.encode(&sec1[33..])),
            key: Key::P256(sec1),
        })
    }

    /// From an Ed25519 public key's 32 bytes (`None` for one [`PublicKey::from_jwk`] refuses).
    pub fn from_ed25519(bytes: &[u8; 32]) -> Option<Self> {
        strong_point(bytes).then(|| PublicKey {
            key: Key::Ed25519(*bytes),
            x: B64.encode(bytes),
            y: None,
        })
    }

    /// SEC1 uncompressed bytes of a P-256 key (`None` for Ed25519).
    pub fn sec1(&self) -> Option<&[u8; 65]> {
        match &self.key {
            Key::P256(sec1) => Some(sec1),
            Key::Ed25519(_) => None,
        }
    }

    /// The proof algorithm of this key: `ES256` or `EdDSA`.
    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::P256(_) => ES256,
            Key::Ed25519(_) => EDDSA,
        }
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256 of the canonical JWK).
    pub fn thumbprint(&self) -> String {
        match &self.y {
            Some(y) => thumbprint(&self.x, y),
            None => ed25519_thumbprint(&self.x),
        }
    }

    /// The public JWK, members in RFC 7638 order.
    pub fn to_jwk(&self) -> Value {
        match &self.y {
            Some(y) => serde_json::json!({ "crv": "P-256", "kty": "EC", "x": self.x, "y": y }),
            None => serde_json::json!({ "crv": "Ed25519", "kty": "OKP", "x": self.x }),
        }
    }
}

/// RFC 7638 thumbprint of the P-256 key with base64url coordinates `x` and `y`:
/// `base64url(SHA-256({"crv":"P-256","kty":"EC","x":"…","y":"…"}))`.
pub fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of the Ed25519 key with base64url `x`:
/// `base64url(SHA-256({"crv":"Ed25519","kty":"OKP","x":"…"}))` (a proof key's `jkt`, a token
/// key's `kid`).
pub fn ed25519_thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    B64.encode(Sha256::digest(canonical.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7638_style_thumbprint_is_over_the_canonical_members_only() {
        let signer = crate::ProofSigner::generate();
        let mut jwk = signer.public_key().to_jwk();
        let expected = signer.thumbprint().to_owned();
        // Extra public members (what WebCrypto exports) change nothing.
        jwk["ext"] = json!(true);
        jwk["key_ops"] = json!(["verify"]);
        let key = PublicKey::from_jwk(&jwk, "ES256").unwrap();
        assert_eq!(key.thumbprint(), expected);
        // Recompute by hand.
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            jwk["x"].as_str().unwrap(),
            jwk["y"].as_str().unwrap()
        );
        assert_eq!(expected, B64.encode(Sha256::digest(canonical.as_bytes())));
    }

    #[test]
    fn the_rfc_9449_example_key_has_the_rfcs_thumbprint() {
        // RFC 9449 figure 2's key and the jkt of its figures 8 and 9.
        let jwk = json!({"kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA"});
        let key = PublicKey::from_jwk(&jwk, "ES256").unwrap();
        assert_eq!(
            key.thumbprint(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
    }

    #[test]
    fn the_rfc_8037_example_ed25519_key_has_the_rfcs_thumbprint() {
        // RFC 8037 appendix A.2 and A.3.
        let jwk = json!({"kty": "OKP", "crv": "Ed25519",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        let key = PublicKey::from_jwk(&jwk, "EdDSA").unwrap();
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert_eq!(key.algorithm(), "EdDSA");
        assert_eq!(key.to_jwk()["x"], jwk["x"]);
    }

    #[test]
    fn the_small_order_list_is_the_eight_torsion_points() {
        use curve25519_dalek::constants::EIGHT_TORSION;
        let mut ys: Vec<[u8; 32]> = EIGHT_TORSION
            .iter()
            .map(|p| {
                let mut y = p.compress().to_bytes();
                y[31] &= 0x7f;
                y
            })
            .collect();
        ys.sort();
        ys.dedup();
        let mut list = SMALL_ORDER_Y.to_vec();
        list.sort();
        assert_eq!(ys, list);
        // And a point of prime order is no such point.
        let b = curve25519_dalek::constants::ED25519_BASEPOINT_POINT.compress();
        assert!(strong_point(b.as_bytes()));
    }

    #[test]
    fn an_s_not_below_the_group_order_is_refused_by_our_own_check() {
        use curve25519_dalek::scalar::Scalar;
        let below = |s: [u8; 32]| canonical_s(&s);
        let mut l_minus_1 = ORDER;
        l_minus_1[0] -= 1;
        let mut l_plus_1 = ORDER;
        l_plus_1[0] += 1;
        assert!(below([0; 32]) && below(l_minus_1));
        assert!(!below(ORDER) && !below(l_plus_1) && !below([0xff; 32]));
        // The same verdict as curve25519-dalek's, on both sides of the boundary.
        for s in [[0; 32], l_minus_1, ORDER, l_plus_1] {
            assert_eq!(
                below(s),
                bool::from(Scalar::from_canonical_bytes(s).is_some())
            );
        }
        // A real signature, and the same with S + L: only the first verifies.
        let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let sig = ed25519_dalek::Signer::sign(&key, b"m").to_bytes();
        let vk = key.verifying_key();
        assert!(verify_ed25519(&vk, b"m", &sig));
        let mut high = sig;
        let mut carry = 0u16;
        for (b, l) in high[32..].iter_mut().zip(ORDER) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0, "S + L still fits 256 bits");
        assert!(!verify_ed25519(&vk, b"m", &high));
        // Refused by our check itself, before ed25519-dalek's (which a `legacy_compatibility`
        // build would not make).
        assert!(well_formed_ed25519(&sig).is_some());
        assert!(well_formed_ed25519(&high).is_none());
    }

    #[test]
    fn the_byte_rule_is_the_curves_near_every_small_y() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        // Every y below 64 and from p - 64 up to 2^255 - 1, with either sign bit: what the bytes
        // say (strong_point) against what the curve says (a point, canonically encoded, not of
        // small order; an encoding that is no point may pass the bytes: decompressing refuses it).
        let mut ys = Vec::new();
        for k in 0u8..64 {
            let mut low = [0u8; 32];
            low[0] = k;
            ys.push(low);
            let mut high = [0xffu8; 32];
            high[31] = 0x7f;
            high[0] = 0xff - k;
            ys.push(high);
        }
        ys.extend(SMALL_ORDER_Y);
        for y in ys {
            for sign in [0u8, 0x80] {
                let mut b = y;
                b[31] |= sign;
                let point = CompressedEdwardsY(b).decompress();
                let canonical = point.is_some_and(|p| p.compress().to_bytes() == b);
                match point {
                    Some(p) if canonical => {
                        assert_eq!(strong_point(&b), !p.is_small_order(), "{b:02x?}")
                    }
                    Some(p) if p.is_small_order() => assert!(!strong_point(&b), "{b:02x?}"),
                    _ => {}
                }
                // Non-canonical encodings (y >= p) never pass the bytes.
                if b[31] & 0x7f == 0x7f && b[1..31].iter().all(|v| *v == 0xff) && b[0] >= 0xed {
                    assert!(!strong_point(&b), "{b:02x?}");
                }
            }
        }
    }

    #[test]
    fn malformed_and_weak_ed25519_keys_are_refused() {
        let good = crate::ProofSigner::generate_ed25519().public_key().to_jwk();
        assert!(PublicKey::from_jwk(&good, "EdDSA").is_ok());
        let mut cases = Vec::new();
        for member in PRIVATE_MEMBERS {
            let mut k = good.clone();
            k[member] = json!("AAAA");
            cases.push((k, "EdDSA"));
        }
        for crv in ["X25519", "Ed448", "P-256"] {
            let mut k = good.clone();
            k["crv"] = json!(crv);
            cases.push((k, "EdDSA"));
        }
        let mut k = good.clone();
        k["kty"] = json!("EC");
        cases.push((k, "EdDSA"));
        cases.push((good.clone(), "ES256"));
        let p256 = crate::ProofSigner::generate().public_key().to_jwk();
        cases.push((p256, "EdDSA"));
        let mut k = good.clone();
        k["x"] = json!(B64.encode([7u8; 31]));
        cases.push((k, "EdDSA"));
        // The eight points of small order, and two other encodings of the identity (its x = 0
        // with the sign bit; y = p + 1). tests/conformance/corpus.json has every such encoding.
        let mut weak: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| p.compress().to_bytes())
            .collect();
        let mut id = [0u8; 32];
        id[0] = 1;
        id[31] = 0x80;
        weak.push(id);
        let mut p_plus_1 = [0xffu8; 32];
        p_plus_1[0] = 0xee;
        p_plus_1[31] = 0x7f;
        weak.push(p_plus_1);
        for e in &weak {
            cases.push((
                json!({"kty": "OKP", "crv": "Ed25519", "x": B64.encode(e)}),
                "EdDSA",
            ));
            assert!(PublicKey::from_ed25519(e).is_none());
        }
        for (i, (case, alg)) in cases.iter().enumerate() {
            assert_eq!(
                PublicKey::from_jwk(case, alg).map(|_| ()),
                Err(ProofError::Key),
                "case {i}: {alg} {case}"
            );
        }
    }

    #[test]
    fn a_small_order_key_would_verify_a_forged_signature_in_a_lax_verifier() {
        use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
        // R = the identity, S = 0 under the identity key: [S]B = R + [k]A for every message.
        let mut id = [0u8; 32];
        id[0] = 1;
        let sig: Vec<u8> = id.iter().chain([0u8; 32].iter()).copied().collect();
        let lax = VerifyingKey::from_bytes(&id).unwrap();
        let s = Signature::from_slice(&sig).unwrap();
        assert!(
            lax.verify(b"any message", &s).is_ok(),
            "cofactorless, not strict"
        );
        assert!(PublicKey::from_ed25519(&id).is_none());
    }

    #[test]
    fn malformed_keys_are_refused() {
        let good = crate::ProofSigner::generate().public_key().to_jwk();
        let mut cases = Vec::new();
        for member in PRIVATE_MEMBERS {
            let mut k = good.clone();
            k[member] = json!("AAAA");
            cases.push(k);
        }
        let mut k = good.clone();
        k["kty"] = json!("RSA");
        cases.push(k);
        let mut k = good.clone();
        k["crv"] = json!("P-384");
        cases.push(k);
        let mut k = good.clone();
        k["x"] = json!("AAAA");
        cases.push(k);
        let mut k = good.clone();
        k["y"] = json!(12);
        cases.push(k);
        let mut k = good.clone();
        k.as_object_mut().unwrap().remove("y");
        cases.push(k);
        // 43 characters but non-canonical trailing bits.
        let mut k = good.clone();
        let mut x = k["x"].as_str().unwrap().to_owned();
        let last = x.pop().unwrap();
        x.push(if last == 'B' { 'D' } else { 'B' });
        k["x"] = json!(x);
        cases.push(k);
        cases.push(json!("a string"));
        cases.push(json!(null));
        cases.push(json!([1, 2]));
        for (i, case) in cases.iter().enumerate() {
            assert_eq!(
                PublicKey::from_jwk(case, "ES256").map(|_| ()),
                Err(ProofError::Key),
                "case {i}: {case}"
            );
        }
    }

    #[test]
    fn a_point_off_the_curve_verifies_nothing() {
        let signer = crate::ProofSigner::generate();
        let proof = signer.sign_claims(&json!({"a": 1}));
        let (signed, sig) = proof.rsplit_once('.').unwrap();
        let sig = B64.decode(sig).unwrap();
        assert!(signer.public_key().verify(signed.as_bytes(), &sig));
        // x and y swapped: not on the curve.
        let mut k = signer.public_key().to_jwk();
        let x = k["x"].clone();
        k["x"] = k["y"].clone();
        k["y"] = x;
        let off = PublicKey::from_jwk(&k, "ES256").unwrap();
        assert!(p256::ecdsa::VerifyingKey::from_sec1_bytes(off.sec1().unwrap()).is_err());
        assert!(!off.verify(signed.as_bytes(), &sig));
        // The identity / all zeros.
        let zero = json!({"kty": "EC", "crv": "P-256", "x": B64.encode([0u8; 32]), "y": B64.encode([0u8; 32])});
        let zero = PublicKey::from_jwk(&zero, "ES256").unwrap();
        assert!(p256::ecdsa::VerifyingKey::from_sec1_bytes(zero.sec1().unwrap()).is_err());
        assert!(!zero.verify(signed.as_bytes(), &sig));
    }
}
