//! The proof's `jwk`: an EC P-256 public key, and its RFC 7638 thumbprint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::ProofError;

/// Members that only a private (or symmetric) key has. A proof's `jwk` carrying any of them is
/// refused: the client leaked its private key, or someone is probing the parser.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A P-256 public key from a proof: well-formed coordinates; ring checks that the point is on
/// the curve (and not the identity) when it verifies a signature with it.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// SEC1 uncompressed: 0x04 || x || y.
    sec1: [u8; 65],
    x: String,
    y: String,
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

impl PublicKey {
    /// Parses a JWK object: `kty` `EC`, `crv` `P-256`, 32-byte `x` and `y` forming a point on
    /// the curve, no private member. Other members are ignored.
    pub fn from_jwk(jwk: &Value) -> Result<Self, ProofError> {
        let jwk = jwk.as_object().ok_or(ProofError::Key)?;
        if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
            return Err(ProofError::Key);
        }
        if jwk.get("kty").and_then(Value::as_str) != Some("EC")
            || jwk.get("crv").and_then(Value::as_str) != Some("P-256")
        {
            return Err(ProofError::Key);
        }
        let (x, xb) = coordinate(jwk, "x")?;
        let (y, yb) = coordinate(jwk, "y")?;
        let mut sec1 = [4u8; 65];
        sec1[1..33].copy_from_slice(&xb);
        sec1[33..].copy_from_slice(&yb);
        Ok(PublicKey { sec1, x, y })
    }

    /// Verifies an ES256 signature (`r || s`, 64 bytes) over `message`. A point off the curve
    /// fails here.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.sec1[..])
            .verify(message, signature)
            .is_ok()
    }

    /// From SEC1 uncompressed bytes (`0x04 || x || y`), e.g. ring's public key.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let sec1: [u8; 65] = bytes.try_into().ok()?;
        (sec1[0] == 4).then(|| PublicKey {
            x: B64.encode(&sec1[1..33]),
            y: B64.encode(&sec1[33..]),
            sec1,
        })
    }

    /// SEC1 uncompressed bytes.
    pub fn sec1(&self) -> &[u8; 65] {
        &self.sec1
    }

    /// The RFC 7638 thumbprint: base64url(SHA-256 of the canonical JWK).
    pub fn thumbprint(&self) -> String {
        thumbprint(&self.x, &self.y)
    }

    /// The public JWK, members in RFC 7638 order.
    pub fn to_jwk(&self) -> Value {
        serde_json::json!({ "crv": "P-256", "kty": "EC", "x": self.x, "y": self.y })
    }
}

/// RFC 7638 thumbprint of the P-256 key with base64url coordinates `x` and `y`:
/// `base64url(SHA-256({"crv":"P-256","kty":"EC","x":"…","y":"…"}))`.
pub fn thumbprint(x: &str, y: &str) -> String {
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
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
        let key = PublicKey::from_jwk(&jwk).unwrap();
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
        let key = PublicKey::from_jwk(&jwk).unwrap();
        assert_eq!(
            key.thumbprint(),
            "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
        );
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
                PublicKey::from_jwk(case).map(|_| ()),
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
        let off = PublicKey::from_jwk(&k).unwrap();
        assert!(p256::ecdsa::VerifyingKey::from_sec1_bytes(off.sec1()).is_err());
        assert!(!off.verify(signed.as_bytes(), &sig));
        // The identity / all zeros.
        let zero = json!({"kty": "EC", "crv": "P-256", "x": B64.encode([0u8; 32]), "y": B64.encode([0u8; 32])});
        let zero = PublicKey::from_jwk(&zero).unwrap();
        assert!(p256::ecdsa::VerifyingKey::from_sec1_bytes(zero.sec1()).is_err());
        assert!(!zero.verify(signed.as_bytes(), &sig));
    }
}
