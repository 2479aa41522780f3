//! Making proofs: for tests, load generators and Rust clients.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::{Map, Value, json};

use crate::PROOF_TYPE;
use crate::jwk::PublicKey;
use crate::proof::ath;

/// The system's random generator failed, or a PKCS#8 document was not a key of its kind.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the system random generator failed")]
    Random,
    #[error("not a PKCS#8 key of the kind asked for (P-256 or Ed25519)")]
    Key,
}

/// A key pair that signs proofs: ES256 (P-256, [`ProofSigner::generate`]) or EdDSA (Ed25519,
/// [`ProofSigner::generate_ed25519`]).
pub struct ProofSigner {
    key: Pair,
    rng: SystemRandom,
    public: PublicKey,
    thumbprint: String,
    header64: String,
}

enum Pair {
    P256(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for ProofSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofSigner {{ jkt: {} }}", self.thumbprint)
    }
}

/// 16 random bytes, base64url (all zeros in the unheard-of case that the system generator
/// fails; `ProofSigner::generate` would have failed first).
pub fn random_jti() -> String {
    let mut b = [0u8; 16];
    let _ = SystemRandom::new().fill(&mut b);
    B64.encode(b)
}

impl ProofSigner {
    /// A new random key.
    ///
    /// # Panics
    /// If the system random generator fails (use [`ProofSigner::try_generate`] to handle it).
    #[allow(clippy::expect_used)]
    pub fn generate() -> Self {
        Self::try_generate().expect("the system random generator failed")
    }

    pub fn try_generate() -> Result<Self, SignError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| SignError::Random)?;
        Self::from_pkcs8(pkcs8.as_ref())
    }

    /// A new random Ed25519 key (EdDSA proofs).
    ///
    /// # Panics
    /// If the system random generator fails (use [`ProofSigner::try_generate_ed25519`]).
    #[allow(clippy::expect_used)]
    pub fn generate_ed25519() -> Self {
        Self::try_generate_ed25519().expect("the system random generator failed")
    }

    pub fn try_generate_ed25519() -> Result<Self, SignError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| SignError::Random)?;
        Self::from_ed25519_pkcs8(pkcs8.as_ref())
    }

    /// From a PKCS#8 P-256 private key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SignError> {
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| SignError::Key)?;
        let public = PublicKey::from_sec1(key.public_key().as_ref()).ok_or(SignError::Key)?;
        Ok(Self::with(Pair::P256(key), public, rng))
    }

    /// From a PKCS#8 (v1 or v2) Ed25519 private key.
    pub fn from_ed25519_pkcs8(pkcs8: &[u8]) -> Result<Self, SignError> {
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(|_| SignError::Key)?;
        let bytes: [u8; 32] = key
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| SignError::Key)?;
        let public = PublicKey::from_ed25519(&bytes).ok_or(SignError::Key)?;
        Ok(Self::with(Pair::Ed25519(key), public, SystemRandom::new()))
    }

    fn with(key: Pair, public: PublicKey, rng: SystemRandom) -> Self {
        ProofSigner {
            key,
            rng,
            thumbprint: public.thumbprint(),
            header64: B64.encode(Self::header_of(&public).to_string()),
            public,
        }
    }

    fn header_of(public: &PublicKey) -> Value {
        json!({ "typ": PROOF_TYPE, "alg": public.algorithm(), "jwk": public.to_jwk() })
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// RFC 7638 thumbprint: what `cnf.jkt` of a token bound to this key says.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// A proof for `htm` `htu` at `iat`, with a random `jti`, `ath` of `access_token` if given,
    /// and `nonce` if given.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        iat: i64,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> String {
        let mut claims = Map::new();
        claims.insert("jti".into(), random_jti().into());
        claims.insert("htm".into(), htm.into());
        claims.insert("htu".into(), htu.into());
        claims.insert("iat".into(), iat.into());
        if let Some(t) = access_token {
            claims.insert("ath".into(), ath(t).into());
        }
        if let Some(n) = nonce {
            claims.insert("nonce".into(), n.into());
        }
        self.sign_claims(&Value::Object(claims))
    }

    /// Signs any payload with this key and the standard header.
    pub fn sign_claims(&self, claims: &Value) -> String {
        self.sign_raw(&self.header64, &B64.encode(claims.to_string()))
    }

    /// Signs `header` (any JSON, for tests of malformed headers) and `claims`.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(
            &B64.encode(header.to_string()),
            &B64.encode(claims.to_string()),
        )
    }

    fn sign_raw(&self, header64: &str, payload64: &str) -> String {
        let input = format!("{header64}.{payload64}");
        // Signing fails only if the random generator does; the proof is then unsigned and
        // refused by any verifier.
        let sig = match &self.key {
            Pair::P256(key) => key
                .sign(&self.rng, input.as_bytes())
                .map(|s| B64.encode(s.as_ref()))
                .unwrap_or_default(),
            Pair::Ed25519(key) => B64.encode(key.sign(input.as_bytes()).as_ref()),
        };
        format!("{input}.{sig}")
    }

    /// The standard header of this key, as JSON (to derive malformed variants in tests).
    pub fn header(&self) -> Value {
        Self::header_of(&self.public)
    }
}
