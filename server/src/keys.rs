//! Ed25519 signing keys: generated on first start, stored in the database, rotated without
//! logging anyone out. The ring in memory is rebuilt from the database (on start, after every
//! change made here, and by a poller that picks up changes made by the `keys` CLI).
//!
//! - the **signing** key is the newest key that is neither retired nor revoked;
//! - a **retired** key keeps verifying (and stays in the JWKS) for the grace period, which is
//!   at least one access-token lifetime, so tokens it signed run out naturally;
//! - a **revoked** key verifies nothing from the moment the ring is reloaded.
//!
//! Private keys are sealed at rest (`kek`): the database holds them encrypted with a
//! key-encryption key it never sees. Keys stored in the clear by an older version are sealed
//! at the first reload.

use std::sync::{Arc, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokenwarden_dpop::access::KeySet;

use crate::kek::{self, KeyEncryption};
use crate::store::{KeyRow, Store, StoreError};

/// Failures of the key ring.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A new key could not be encoded as PKCS#8.
    #[error("encoding a new signing key: {0}")]
    Encode(String),
    /// Sealing or opening a private key with the key-encryption key failed.
    #[error("{0}")]
    Sealing(String),
}

pub type KeyResult<T> = Result<T, KeyError>;

pub struct Ring {
    pub signing: Option<(String, SigningKey)>,
    /// What verifies: the keys the published verifier (`tokenwarden_dpop::access`) takes.
    pub verifying: KeySet,
    /// The JWKS document, serialised once per reload.
    pub jwks: String,
}

#[derive(Clone)]
pub struct Keys {
    ring: Arc<RwLock<Arc<Ring>>>,
    grace_secs: i64,
    encryption: KeyEncryption,
}

/// RFC 7638 thumbprint of an Ed25519 public key: a stable, content-derived `kid`.
pub fn thumbprint(public: &[u8]) -> String {
    let jwk = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64.encode(public)
    );
    B64.encode(Sha256::digest(jwk.as_bytes()))
}

/// A fresh key pair: private key as PKCS#8 DER (in the clear: `Keys` seals it before storing
/// it), public key as 32 raw bytes.
pub fn generate() -> KeyResult<KeyRow> {
    let signing = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let public = signing.verifying_key().to_bytes().to_vec();
    let private_key = signing
        .to_pkcs8_der()
        .map(|doc| doc.as_bytes().to_vec())
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    Ok(KeyRow {
        kid: thumbprint(&public),
        private_key,
        public_key: public,
        created_at: 0,
        retired_at: None,
        revoked_at: None,
    })
}

impl Keys {
    pub fn new(grace_secs: i64, encryption: KeyEncryption) -> Self {
        Keys {
            encryption,
            ring: Arc::new(RwLock::new(Arc::new(Ring {
                signing: None,
                verifying: KeySet::default(),
                jwks: r#"{"keys":[]}"#.to_owned(),
            }))),
            grace_secs,
        }
    }

    pub fn current(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A new key, sealed for storage.
    fn generate_sealed(&self) -> KeyResult<KeyRow> {
        let mut key = generate()?;
        key.private_key = self.seal(&key.kid, &key.private_key)?;
        Ok(key)
    }

    fn seal(&self, kid: &str, private_key: &[u8]) -> KeyResult<Vec<u8>> {
        self.encryption
            .seal(kid, private_key)
            .map_err(KeyError::Sealing)
    }

    /// Rebuilds the ring from the database; creates a signing key if there is none.
    pub async fn reload(&self, store: &Store, now: i64) -> KeyResult<()> {
        let mut rows = store.keys().await?;
        if !rows
            .iter()
            .any(|k| k.retired_at.is_none() && k.revoked_at.is_none())
        {
            store.add_signing_key(&self.generate_sealed()?, now).await?;
            rows = store.keys().await?;
        }
        for k in rows.iter_mut().filter(|k| !kek::is_sealed(&k.private_key)) {
            let sealed = self.seal(&k.kid, &k.private_key)?;
            store.set_private_key(&k.kid, &sealed).await?;
            tracing::info!(kid = %k.kid, "sealed a signing key stored in the clear");
            k.private_key = sealed;
        }
        let mut signing = None;
        let mut verifying = Vec::new();
        let mut jwks = Vec::new();
        for k in &rows {
            if k.revoked_at.is_some() {
                continue;
            }
            if k.retired_at.is_none() && signing.is_none() {
                let der = self
                    .encryption
                    .open(&k.kid, &k.private_key)
                    .map_err(KeyError::Sealing)?;
                let key = SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| KeyError::Sealing(format!("signing key {}: {e}", k.kid)))?;
                signing = Some((k.kid.clone(), key));
            }
            if k.retired_at.is_none_or(|t| t + self.grace_secs > now) {
                verifying.push((k.kid.as_str(), k.public_key.as_slice()));
                jwks.push(json!({
                    "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                    "kid": k.kid, "x": B64.encode(&k.public_key),
                }));
            }
        }
        let verifying = KeySet::from_keys(verifying);
        let ring = Arc::new(Ring {
            signing,
            verifying,
            jwks: json!({ "keys": jwks }).to_string(),
        });
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }

    /// Graceful rotation: a new key signs from now on; the old one keeps verifying.
    pub async fn rotate(&self, store: &Store, now: i64) -> KeyResult<String> {
        let key = self.generate_sealed()?;
        store.add_signing_key(&key, now).await?;
        self.reload(store, now).await?;
        Ok(key.kid)
    }

    /// Emergency revocation: tokens signed by `kid` are rejected at once. If it was the signing
    /// key, a new one is generated. Returns whether the key existed and was live.
    pub async fn revoke(&self, store: &Store, kid: &str, now: i64) -> KeyResult<bool> {
        let revoked = store.revoke_key(kid, now).await?;
        self.reload(store, now).await?;
        Ok(revoked)
    }
}
