//! Making proofs: for tests, load generators and Rust clients.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use rand_core::{OsRng, RngCore};
use serde_json::{Map, Value, json};

use crate::jwk::PublicKey;
use crate::proof::ath;
use crate::{ALGORITHM, PROOF_TYPE};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("serialising the proof: {0}")]
    Json(#[from] serde_json::Error),
}

/// An ES256 key pair that signs proofs.
pub struct ProofSigner {
    key: SigningKey,
    public: PublicKey,
    thumbprint: String,
    header64: String,
}

impl std::fmt::Debug for ProofSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProofSigner {{ jkt: {} }}", self.thumbprint)
    }
}

/// 16 random bytes, base64url.
pub fn random_jti() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    B64.encode(b)
}

impl ProofSigner {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_key(SigningKey::random(&mut OsRng))
    }

    pub fn from_key(key: SigningKey) -> Self {
        let public = PublicKey::from_verifying_key(*key.verifying_key());
        let thumbprint = public.thumbprint();
        let header = json!({ "typ": PROOF_TYPE, "alg": ALGORITHM, "jwk": public.to_jwk() });
        ProofSigner {
            key,
            header64: B64.encode(header.to_string()),
            public,
            thumbprint,
        }
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
        let sig: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig.to_bytes()))
    }

    /// The standard header of this key, as JSON (to derive malformed variants in tests).
    pub fn header(&self) -> Value {
        json!({ "typ": PROOF_TYPE, "alg": ALGORITHM, "jwk": self.public.to_jwk() })
    }
}
