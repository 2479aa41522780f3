//! Secrets every instance sharing the database must agree on (the DPoP nonce secret, the
//! sealed HMAC keys of sign-in codes and of known browsers).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::Rng;

use super::{Store, StoreError, StoreResult};
use crate::kek::KeyEncryption;

/// Why a sealed key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SealedKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Setup(String),
}

impl Store {
    /// The secret `name`, created from `fresh` by whichever instance asks first.
    pub async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        let insert =
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        q!(insert, name, fresh).execute(&self.write).await?;
        let read = "SELECT value FROM server_secrets WHERE name = $1";
        Ok(q_scalar!(read, name).fetch_one(&self.write).await?)
    }

    /// The 32-byte key `name`, stored sealed by the key-encryption key (a database dump alone
    /// does not give it; `name` is the seal's associated data), made by whichever instance asks
    /// first.
    pub async fn sealed_key(
        &self,
        kek: &KeyEncryption,
        name: &str,
    ) -> Result<[u8; 32], SealedKeyError> {
        let setup = SealedKeyError::Setup;
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill(&mut fresh);
        let sealed = kek.seal(name, &fresh).map_err(setup)?;
        let stored = self.shared_secret(name, &B64.encode(sealed)).await?;
        let sealed = B64
            .decode(stored)
            .map_err(|_| setup(format!("{name} is not base64")))?;
        let key = kek.open(name, &sealed).map_err(setup)?;
        <[u8; 32]>::try_from(key.as_slice()).map_err(|_| setup(format!("{name} is not 32 bytes")))
    }
}
