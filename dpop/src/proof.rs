//! Verifying a proof against the request it came with (RFC 9449 §4.3, in the order of
//! docs/PROTOCOL.md).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::htu::{normalize_path, normalize_url, origin_of_host};
use crate::jwk::PublicKey;
use crate::nonce::Nonces;
use crate::replay::{Insert, ReplayCache};
use crate::{ALGORITHMS, PROOF_TYPE, ProofError};

/// `ath`: base64url(SHA-256(access token)).
pub fn ath(access_token: &str) -> String {
    B64.encode(Sha256::digest(access_token.as_bytes()))
}

/// Limits of the verifier.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Oldest accepted `iat`, in seconds before now (60).
    pub max_age_secs: i64,
    /// Furthest accepted `iat`, in seconds after now: clock skew (10).
    pub max_future_secs: i64,
    /// Longest accepted proof in bytes (4096).
    pub max_len: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_age_secs: 60,
            max_future_secs: 10,
            max_len: 4096,
        }
    }
}

/// Where the server is reachable: what the origin of `htu` may be.
#[derive(Debug, Clone, Copy)]
pub enum Origins<'a> {
    /// Configured public origins, normalised with [`crate::normalize_origin`].
    List(&'a [String]),
    /// None configured: `http://` or `https://` plus the request's `Host` header, if it is a
    /// loopback host (a development server); any other is refused, however this is built.
    Host(&'a str),
}

impl<'a> Origins<'a> {
    /// What `htu` may name for a request with this `Host`: the configured origins; without
    /// any, the request's Host, but only a loopback one (a development server). Elsewhere a
    /// client picks its Host, and a proof made for another server (the same token sent to a
    /// second API) would pass.
    pub fn of_request(configured: &'a [String], host: &'a str) -> Self {
        if !configured.is_empty() {
            Origins::List(configured)
        } else if crate::is_loopback_host(host) {
            Origins::Host(host)
        } else {
            Origins::List(&[])
        }
    }
}

/// What the proof must match: the request as the server received it.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request's path (no query).
    pub path: &'a str,
    pub origins: Origins<'a>,
    /// The access token sent with the request (`Authorization: DPoP`), if any: `ath` must match.
    pub access_token: Option<&'a str>,
    /// The thumbprint the token or session is bound to, if any: the proof's key must have it.
    pub jkt: Option<&'a str>,
    /// The server's clock, unix seconds.
    pub now: i64,
}

/// An accepted proof.
#[derive(Debug, Clone)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's key.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Value>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<serde_json::Number>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// A proof's `iat`: any number of magnitude under 1e15 (fractions truncated), however written,
/// as the Node verifier reads one (`JSON.parse` cannot tell `1e16` from `10000000000000000`).
fn numeric_date(n: &serde_json::Number) -> Option<i64> {
    const BOUND: i64 = 1_000_000_000_000_000;
    if let Some(i) = n.as_i64() {
        return (-BOUND < i && i < BOUND).then_some(i);
    }
    let f = n.as_f64()?;
    (f.is_finite() && f.abs() < 1e15).then(|| f.trunc() as i64)
}

/// Verifies proofs: holds the nonce secret and the replay cache. One per server (share it).
#[derive(Debug)]
pub struct Verifier {
    pub policy: Policy,
    pub nonces: Nonces,
    pub replay: ReplayCache,
}

impl Verifier {
    pub fn new(nonces: Nonces) -> Self {
        Verifier {
            policy: Policy::default(),
            nonces,
            replay: ReplayCache::default(),
        }
    }

    /// Verifies the value of the request's `DPoP` header(s). Pass every value the request
    /// carried: more than one is refused.
    pub fn verify_headers<'h>(
        &self,
        mut values: impl Iterator<Item = &'h [u8]>,
        expected: &Expected<'_>,
    ) -> Result<Proof, ProofError> {
        let first = values.next().ok_or(ProofError::Missing)?;
        if values.next().is_some() {
            return Err(ProofError::Multiple);
        }
        let proof = std::str::from_utf8(first).map_err(|_| ProofError::Malformed)?;
        self.verify(proof, expected)
    }

    /// Verifies one proof. On success its `jti` is recorded: it will never pass again.
    pub fn verify(&self, proof: &str, expected: &Expected<'_>) -> Result<Proof, ProofError> {
        // 1. shape
        if proof.is_empty() || proof.len() > self.policy.max_len {
            return Err(ProofError::Malformed);
        }
        let mut parts = proof.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed);
        };
        let header_bytes = B64.decode(h64).map_err(|_| ProofError::Malformed)?;
        let payload_bytes = B64.decode(p64).map_err(|_| ProofError::Malformed)?;
        let signature = B64.decode(s64).map_err(|_| ProofError::Malformed)?;
        let header: Header = crate::json_object(&header_bytes).ok_or(ProofError::Malformed)?;
        // 2. typ, 3. alg, crit
        if header.typ.as_deref() != Some(PROOF_TYPE) {
            return Err(ProofError::Type);
        }
        let alg = match header.alg.as_deref() {
            Some(alg) if ALGORITHMS.contains(&alg) => alg,
            _ => return Err(ProofError::Algorithm),
        };
        if header.crit.is_some() {
            return Err(ProofError::Critical);
        }
        // 4. jwk, of the kind the alg names
        let key = PublicKey::from_jwk(header.jwk.as_ref().ok_or(ProofError::Key)?, alg)?;
        // 5. signature (64 bytes: ES256's r || s, or Ed25519's)
        let signed_len = h64.len() + 1 + p64.len();
        let signed = proof.get(..signed_len).ok_or(ProofError::Malformed)?;
        if signature.len() != 64 || !key.verify(signed.as_bytes(), &signature) {
            return Err(ProofError::Signature);
        }
        // 6. claims
        let claims: Claims = crate::json_object(&payload_bytes).ok_or(ProofError::Claims)?;
        let (Some(jti), Some(htm), Some(htu), Some(iat)) =
            (claims.jti, claims.htm, claims.htu, claims.iat)
        else {
            return Err(ProofError::Claims);
        };
        if jti.is_empty() || jti.chars().count() > 128 {
            return Err(ProofError::Claims);
        }
        let iat = numeric_date(&iat).ok_or(ProofError::Claims)?;
        // 7. htm
        if htm != expected.method {
            return Err(ProofError::Method);
        }
        // 8. htu
        let url = normalize_url(&htu).ok_or(ProofError::Url)?;
        let origin_ok = match expected.origins {
            Origins::List(list) => list.contains(&url.origin),
            // Checked here too, not only by `of_request`: a caller building `Host` itself from
            // a client's Host header would take a proof made for another server.
            Origins::Host(host) => {
                crate::is_loopback_host(host)
                    && ["http", "https"]
                        .iter()
                        .any(|scheme| origin_of_host(scheme, host).as_deref() == Some(&url.origin))
            }
        };
        if !origin_ok {
            return Err(ProofError::Url);
        }
        if url.path != expected.path
            && normalize_path(expected.path).as_deref() != Some(url.path.as_str())
        {
            return Err(ProofError::Url);
        }
        // 9. iat
        // Saturating: the policy is public, and a limit near i64::MAX must not wrap.
        if iat < expected.now.saturating_sub(self.policy.max_age_secs) {
            return Err(ProofError::Stale);
        }
        if iat > expected.now.saturating_add(self.policy.max_future_secs) {
            return Err(ProofError::Future);
        }
        // 10. ath
        if let Some(token) = expected.access_token
            && claims.ath.as_deref() != Some(ath(token).as_str())
        {
            return Err(ProofError::AccessTokenHash);
        }
        // 11. nonce
        match claims.nonce.as_deref() {
            Some(n) if self.nonces.accepts(n, expected.now) => {}
            _ => return Err(ProofError::Nonce),
        }
        // 12. binding
        let jkt = key.thumbprint();
        if let Some(bound) = expected.jkt
            && bound != jkt
        {
            return Err(ProofError::KeyMismatch);
        }
        // 13. jti, recorded until the proof could no longer pass the iat check
        let until = iat
            .saturating_add(self.policy.max_age_secs)
            .saturating_add(1);
        match self.replay.insert(&jkt, &jti, until, expected.now) {
            Insert::New => Ok(Proof { jkt, jti, iat }),
            Insert::Replayed => Err(ProofError::Replayed),
            Insert::Full => Err(ProofError::ReplayCacheFull),
        }
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use crate::ProofSigner;
    use p256::ecdsa::Signature;
    use serde_json::json;

    const NOW: i64 = 1_800_000_015;
    const HTU: &str = "https://api.example.com/api/me";
    const TOKEN: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln";

    fn verifier() -> Verifier {
        Verifier::new(Nonces::new(&[42u8; 32]).unwrap())
    }

    fn origins() -> Vec<String> {
        vec!["https://api.example.com".to_owned()]
    }

    fn expected<'a>(origins: &'a [String], jkt: Option<&'a str>) -> Expected<'a> {
        Expected {
            method: "GET",
            path: "/api/me",
            origins: Origins::List(origins),
            access_token: Some(TOKEN),
            jkt,
            now: NOW,
        }
    }

    /// A valid proof's claims, to be altered.
    fn claims(v: &Verifier) -> Value {
        json!({
            "jti": crate::signer::random_jti(), "htm": "GET", "htu": HTU, "iat": NOW,
            "ath": ath(TOKEN), "nonce": &*v.nonces.current(NOW),
        })
    }

    #[test]
    fn a_valid_proof_passes_once() {
        let v = verifier();
        let s = ProofSigner::generate();
        let o = origins();
        let proof = s.sign_claims(&claims(&v));
        let ok = v
            .verify(&proof, &expected(&o, Some(s.thumbprint())))
            .unwrap();
        assert_eq!(ok.jkt, s.thumbprint());
        assert_eq!(ok.iat, NOW);
        assert_eq!(
            v.verify(&proof, &expected(&o, Some(s.thumbprint())))
                .unwrap_err(),
            ProofError::Replayed
        );
        // The same jti from another key is another proof.
        let mut c = claims(&v);
        c["jti"] = json!(ok.jti);
        let other = ProofSigner::generate();
        assert!(
            v.verify(&other.sign_claims(&c), &expected(&o, None))
                .is_ok()
        );
    }

    #[test]
    fn a_policy_of_extreme_limits_neither_wraps_nor_panics() {
        // The policy is public: a limit near i64::MAX wrapped the replay entry's `until`
        // (release builds: already expired, the replay passed) or panicked (debug builds).
        let mut v = verifier();
        v.policy.max_age_secs = i64::MAX;
        v.policy.max_future_secs = i64::MAX;
        let s = ProofSigner::generate();
        let o = origins();
        let proof = s.sign_claims(&claims(&v));
        assert!(v.verify(&proof, &expected(&o, None)).is_ok());
        assert_eq!(
            v.verify(&proof, &expected(&o, None)).unwrap_err(),
            ProofError::Replayed
        );
    }

    #[test]
    fn an_eddsa_proof_passes_and_its_alg_is_bound_to_its_key_kind() {
        let v = verifier();
        let ed = ProofSigner::generate_ed25519();
        let es = ProofSigner::generate();
        let o = origins();
        let proof = ed.sign_claims(&claims(&v));
        let ok = v
            .verify(&proof, &expected(&o, Some(ed.thumbprint())))
            .unwrap();
        assert_eq!(ok.jkt, ed.thumbprint());
        // The other key's thumbprint: not the key this session is bound to.
        let proof = ed.sign_claims(&claims(&v));
        assert_eq!(
            v.verify(&proof, &expected(&o, Some(es.thumbprint())))
                .unwrap_err(),
            ProofError::KeyMismatch
        );
        // Each alg takes its own kind of key only, whoever signed.
        let e = expected(&o, None);
        for (alg, key, signer) in [
            ("ES256", ed.public_key().to_jwk(), &ed),
            ("EdDSA", es.public_key().to_jwk(), &es),
            ("EdDSA", es.public_key().to_jwk(), &ed),
            ("ES256", ed.public_key().to_jwk(), &es),
        ] {
            let h = json!({ "typ": "dpop+jwt", "alg": alg, "jwk": key });
            let proof = signer.sign_with_header(&h, &claims(&v));
            assert_eq!(v.verify(&proof, &e).unwrap_err(), ProofError::Key, "{alg}");
        }
        // An Ed25519 signature with S + L (the group order): the same signature to a lax
        // verifier, refused here.
        let proof = ed.sign_claims(&claims(&v));
        let (signed, sig) = proof.rsplit_once('.').unwrap();
        let mut sig = B64.decode(sig).unwrap();
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (b, l) in sig[32..].iter_mut().zip(L) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        let malleated = format!("{signed}.{}", B64.encode(&sig));
        assert_eq!(v.verify(&malleated, &e).unwrap_err(), ProofError::Signature);
    }

    #[test]
    fn every_claim_rule_has_its_error() {
        let v = verifier();
        let s = ProofSigner::generate();
        let o = origins();
        let e = expected(&o, Some(s.thumbprint()));
        let old_nonce = v.nonces.nonce_for_window(NOW / 30 - 2);
        let cases: Vec<(&str, Box<dyn Fn(&mut Value)>, ProofError)> = vec![
            (
                "no jti",
                Box::new(|c| c["jti"] = Value::Null),
                ProofError::Claims,
            ),
            (
                "empty jti",
                Box::new(|c| c["jti"] = json!("")),
                ProofError::Claims,
            ),
            (
                "long jti",
                Box::new(|c| c["jti"] = json!("j".repeat(129))),
                ProofError::Claims,
            ),
            (
                "numeric jti",
                Box::new(|c| c["jti"] = json!(5)),
                ProofError::Claims,
            ),
            (
                "no htm",
                Box::new(|c| c["htm"] = Value::Null),
                ProofError::Claims,
            ),
            (
                "no htu",
                Box::new(|c| c["htu"] = Value::Null),
                ProofError::Claims,
            ),
            (
                "no iat",
                Box::new(|c| c["iat"] = Value::Null),
                ProofError::Claims,
            ),
            (
                "string iat",
                Box::new(|c| c["iat"] = json!("1800000015")),
                ProofError::Claims,
            ),
            (
                "huge iat",
                Box::new(|c| c["iat"] = json!(1e300)),
                ProofError::Claims,
            ),
            (
                "htm POST",
                Box::new(|c| c["htm"] = json!("POST")),
                ProofError::Method,
            ),
            (
                "htm get",
                Box::new(|c| c["htm"] = json!("get")),
                ProofError::Method,
            ),
            (
                "htu path",
                Box::new(|c| c["htu"] = json!("https://api.example.com/api/you")),
                ProofError::Url,
            ),
            (
                "htu host",
                Box::new(|c| c["htu"] = json!("https://evil.example.com/api/me")),
                ProofError::Url,
            ),
            (
                "htu scheme",
                Box::new(|c| c["htu"] = json!("http://api.example.com/api/me")),
                ProofError::Url,
            ),
            (
                "htu port",
                Box::new(|c| c["htu"] = json!("https://api.example.com:8443/api/me")),
                ProofError::Url,
            ),
            (
                "htu relative",
                Box::new(|c| c["htu"] = json!("/api/me")),
                ProofError::Url,
            ),
            (
                "htu garbage",
                Box::new(|c| c["htu"] = json!("ht!tp:::")),
                ProofError::Url,
            ),
            (
                "stale",
                Box::new(|c| c["iat"] = json!(NOW - 61)),
                ProofError::Stale,
            ),
            (
                "future",
                Box::new(|c| c["iat"] = json!(NOW + 11)),
                ProofError::Future,
            ),
            (
                "no ath",
                Box::new(|c| c["ath"] = Value::Null),
                ProofError::AccessTokenHash,
            ),
            (
                "wrong ath",
                Box::new(|c| c["ath"] = json!(ath("another token"))),
                ProofError::AccessTokenHash,
            ),
            (
                "no nonce",
                Box::new(|c| c["nonce"] = Value::Null),
                ProofError::Nonce,
            ),
            (
                "wrong nonce",
                Box::new(|c| c["nonce"] = json!("nonce")),
                ProofError::Nonce,
            ),
            (
                "expired nonce",
                Box::new(move |c| c["nonce"] = json!(old_nonce)),
                ProofError::Nonce,
            ),
        ];
        for (what, alter, want) in cases {
            let mut c = claims(&v);
            alter(&mut c);
            if let Some(m) = c.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            assert_eq!(
                v.verify(&s.sign_claims(&c), &e).map(|_| ()),
                Err(want),
                "{what}"
            );
        }
        // Boundaries that pass, and what htu ignores.
        let passing: Vec<Box<dyn Fn(&mut Value)>> = vec![
            Box::new(|c| c["iat"] = json!(NOW - 60)),
            Box::new(|c| c["iat"] = json!(NOW + 10)),
            Box::new(|c| c["iat"] = json!(NOW as f64 + 0.75)),
            Box::new(|c| c["htu"] = json!("https://API.example.com:443/api/me?x=1#frag")),
            Box::new(|c| c["htu"] = json!("https://api.example.com/api/./me")),
            Box::new(|c| c["nonce"] = json!(v.nonces.nonce_for_window(NOW / 30 - 1))),
            Box::new(|c| c["extra"] = json!({"any": "thing"})),
        ];
        for (i, alter) in passing.iter().enumerate() {
            let mut c = claims(&v);
            alter(&mut c);
            assert!(
                v.verify(&s.sign_claims(&c), &e).is_ok(),
                "passing case {i}: {c}"
            );
        }
        // Another key than the bound one.
        let other = ProofSigner::generate();
        assert_eq!(
            v.verify(&other.sign_claims(&claims(&v)), &e).unwrap_err(),
            ProofError::KeyMismatch
        );
        // No access token: ath is not required.
        let mut c = claims(&v);
        c.as_object_mut().unwrap().remove("ath");
        let no_token = Expected {
            access_token: None,
            ..e
        };
        assert!(v.verify(&s.sign_claims(&c), &no_token).is_ok());
    }

    #[test]
    fn header_rules() {
        let v = verifier();
        let s = ProofSigner::generate();
        let o = origins();
        let e = expected(&o, None);
        let alter = |f: &dyn Fn(&mut Value)| {
            let mut h = s.header();
            f(&mut h);
            s.sign_with_header(&h, &claims(&v))
        };
        let cases: Vec<(&str, String, ProofError)> = vec![
            (
                "typ JWT",
                alter(&|h| h["typ"] = json!("JWT")),
                ProofError::Type,
            ),
            (
                "typ missing",
                alter(&|h| {
                    h.as_object_mut().unwrap().remove("typ");
                }),
                ProofError::Type,
            ),
            (
                "typ upper",
                alter(&|h| h["typ"] = json!("DPOP+JWT")),
                ProofError::Type,
            ),
            (
                "alg none",
                alter(&|h| h["alg"] = json!("none")),
                ProofError::Algorithm,
            ),
            (
                "alg HS256",
                alter(&|h| h["alg"] = json!("HS256")),
                ProofError::Algorithm,
            ),
            (
                "alg ES384",
                alter(&|h| h["alg"] = json!("ES384")),
                ProofError::Algorithm,
            ),
            (
                "alg RS256",
                alter(&|h| h["alg"] = json!("RS256")),
                ProofError::Algorithm,
            ),
            (
                "alg missing",
                alter(&|h| {
                    h.as_object_mut().unwrap().remove("alg");
                }),
                ProofError::Algorithm,
            ),
            (
                "crit",
                alter(&|h| h["crit"] = json!(["exp"])),
                ProofError::Critical,
            ),
            (
                "jwk missing",
                alter(&|h| {
                    h.as_object_mut().unwrap().remove("jwk");
                }),
                ProofError::Key,
            ),
            (
                "jwk private",
                alter(&|h| h["jwk"]["d"] = json!("AAAA")),
                ProofError::Key,
            ),
            (
                "jwk symmetric",
                alter(&|h| h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"})),
                ProofError::Key,
            ),
            (
                "header not object",
                s.sign_with_header(&json!([1]), &claims(&v)),
                ProofError::Malformed,
            ),
            (
                "duplicate typ",
                {
                    let h = format!(
                        r#"{{"typ":"dpop+jwt","typ":"JWT","alg":"ES256","jwk":{}}}"#,
                        s.public_key().to_jwk()
                    );
                    format!(
                        "{}.x.y",
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h)
                    )
                },
                ProofError::Malformed,
            ),
        ];
        for (what, proof, want) in cases {
            assert_eq!(v.verify(&proof, &e).map(|_| ()), Err(want), "{what}");
        }
        // The header names one key, another key signed.
        let other = ProofSigner::generate();
        let forged = other.sign_with_header(&s.header(), &claims(&v));
        assert_eq!(v.verify(&forged, &e).unwrap_err(), ProofError::Signature);
        // alg none with an empty signature.
        let good = s.sign_claims(&claims(&v));
        let (signed, _) = good.rsplit_once('.').unwrap();
        assert!(v.verify(&format!("{signed}."), &e).is_err());
        // DER-encoded or truncated signatures.
        assert_eq!(
            v.verify(&format!("{signed}.AAAA"), &e).unwrap_err(),
            ProofError::Signature
        );
        let zero = B64.encode([0u8; 64]);
        assert_eq!(
            v.verify(&format!("{signed}.{zero}"), &e).unwrap_err(),
            ProofError::Signature
        );
    }

    #[test]
    fn a_high_s_signature_from_webcrypto_is_accepted() {
        // WebCrypto does not normalise s; (r, n - s) is the same signature.
        let v = verifier();
        let s = ProofSigner::generate();
        let o = origins();
        let proof = s.sign_claims(&claims(&v));
        let (signed, sig64) = proof.rsplit_once('.').unwrap();
        let sig = Signature::from_slice(&B64.decode(sig64).unwrap()).unwrap();
        let (r, s_) = sig.split_scalars();
        let flipped = Signature::from_scalars(r, -*s_).unwrap();
        assert_ne!(flipped, sig);
        let proof = format!("{signed}.{}", B64.encode(flipped.to_bytes()));
        assert!(v.verify(&proof, &expected(&o, None)).is_ok());
    }

    #[test]
    fn the_rfc_9449_example_proof_verifies_up_to_its_missing_nonce() {
        // RFC 9449 figure 2: signature, typ, jwk and claims are right; it has no nonce.
        let proof = "eyJ0eXAiOiJkcG9wK2p3dCIsImFsZyI6IkVTMjU2IiwiandrIjp7Imt0eSI6IkVDIiwieCI6Imw4dEZyaHgtMzR0VjNoUklDUkRZOXpDa0RscEJoRjQyVVFVZldWQVdCRnMiLCJ5IjoiOVZFNGpmX09rX282NHpiVFRsY3VOSmFqSG10NnY5VERWclUwQ2R2R1JEQSIsImNydiI6IlAtMjU2In19.eyJqdGkiOiItQndDM0VTYzZhY2MybFRjIiwiaHRtIjoiUE9TVCIsImh0dSI6Imh0dHBzOi8vc2VydmVyLmV4YW1wbGUuY29tL3Rva2VuIiwiaWF0IjoxNTYyMjYyNjE2fQ.2-GxA6T8lP4vfrg8v-FdWP0A0zdrj8igiMLvqRMUvwnQg4PtFLbdLXiOSsX0x7NVY-FNyJK70nfbV37xRZT3Lg";
        let v = verifier();
        let o = vec!["https://server.example.com".to_owned()];
        let e = Expected {
            method: "POST",
            path: "/token",
            origins: Origins::List(&o),
            access_token: None,
            jkt: Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"),
            now: 1_562_262_616,
        };
        assert_eq!(v.verify(proof, &e).unwrap_err(), ProofError::Nonce);
        // One bit off in the signature and it is the signature that fails.
        let mut bad = proof.to_owned();
        bad.replace_range(bad.len() - 3..bad.len() - 2, "A");
        assert_eq!(v.verify(&bad, &e).unwrap_err(), ProofError::Signature);
    }

    #[test]
    fn mutated_and_random_inputs_never_pass_and_never_panic() {
        let v = verifier();
        let s = ProofSigner::generate();
        let o = origins();
        let e = expected(&o, None);
        let proof = s.sign_claims(&claims(&v));
        // Every single-character substitution.
        for i in 0..proof.len() {
            for c in ['A', 'z', '0', '-', '_', '.', '=', '+', '/', ' ', 'é'] {
                let mut m = proof.clone();
                if m.is_char_boundary(i)
                    && m.is_char_boundary(i + 1)
                    && m[i..i + 1] != c.to_string()
                {
                    m.replace_range(i..i + 1, &c.to_string());
                    assert!(v.verify(&m, &e).is_err(), "mutation at {i} to {c:?} passed");
                }
            }
        }
        // Truncations and extensions.
        for i in 0..proof.len() {
            assert!(v.verify(&proof[..i], &e).is_err());
        }
        assert!(v.verify(&format!("{proof}."), &e).is_err());
        assert!(v.verify(&format!("{proof}A"), &e).is_err());
        assert!(v.verify(&"a".repeat(5000), &e).is_err());
        // Pseudo-random byte strings (xorshift, deterministic).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2000 {
            let len = (x % 300) as usize;
            let mut bytes = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(b"ABCxyz019-_.={}\":,"[(x % 18) as usize]);
            }
            let text = String::from_utf8(bytes).unwrap();
            assert!(v.verify(&text, &e).is_err());
        }
        // Valid base64 around JSON of every wrong shape.
        for json in [
            "null",
            "1",
            "\"s\"",
            "[]",
            "{}",
            "{\"typ\":1}",
            "{\"typ\":\"dpop+jwt\",\"alg\":\"ES256\",\"jwk\":1}",
        ] {
            let p = format!(
                "{}.{}.{}",
                B64.encode(json),
                B64.encode(json),
                B64.encode([1u8; 64])
            );
            assert!(v.verify(&p, &e).is_err(), "{json}");
        }
        // The original still passes: no mutation consumed its jti.
        assert!(v.verify(&proof, &e).is_ok());
        // Header plumbing.
        let one = [proof.as_bytes()];
        assert_eq!(
            v.verify_headers(one.into_iter(), &e).unwrap_err(),
            ProofError::Replayed
        );
        let two = [b"a".as_slice(), b"b".as_slice()];
        assert_eq!(
            v.verify_headers(two.into_iter(), &e).unwrap_err(),
            ProofError::Multiple
        );
        assert_eq!(
            v.verify_headers(std::iter::empty(), &e).unwrap_err(),
            ProofError::Missing
        );
        let invalid_utf8 = [b"\xff\xfe".as_slice()];
        assert_eq!(
            v.verify_headers(invalid_utf8.into_iter(), &e).unwrap_err(),
            ProofError::Malformed
        );
    }

    #[test]
    fn host_origins_accept_either_scheme_with_the_host_header() {
        let v = verifier();
        let s = ProofSigner::generate();
        let mut e = expected(&[], None);
        // A loopback Host only: any other is a client's choice, and a proof made for another
        // server would pass (it did when a caller built `Host` from the request itself).
        e.origins = Origins::Host("API.example.com:443");
        assert_eq!(
            v.verify(&s.sign_claims(&claims(&v)), &e).unwrap_err(),
            ProofError::Url
        );
        for (host, htu) in [
            ("localhost:8080", "http://localhost:8080/api/me"),
            ("LOCALHOST:8080", "https://localhost:8080/api/me"),
            ("127.0.0.1:8443", "https://127.0.0.1:8443/api/me"),
        ] {
            let mut c = claims(&v);
            c["htu"] = json!(htu);
            e.origins = Origins::Host(host);
            assert!(v.verify(&s.sign_claims(&c), &e).is_ok(), "{host} {htu}");
        }
        e.origins = Origins::Host("other.example.com");
        assert_eq!(
            v.verify(&s.sign_claims(&claims(&v)), &e).unwrap_err(),
            ProofError::Url
        );
        e.origins = Origins::Host("");
        assert_eq!(
            v.verify(&s.sign_claims(&claims(&v)), &e).unwrap_err(),
            ProofError::Url
        );
    }
}
