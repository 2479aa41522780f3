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
    /// The secret `name`, if there is one.
    pub async fn secret(&self, name: &str) -> StoreResult<Option<String>> {
        let read = "SELECT value FROM server_secrets WHERE name = $1";
        Ok(q_scalar!(read, name).fetch_optional(&self.write).await?)
    }

    /// Deletes the secret `name`.
    pub async fn delete_secret(&self, name: &str) -> StoreResult<()> {
        let sql = "DELETE FROM server_secrets WHERE name = $1";
        q!(sql, name).execute(&self.write).await?;
        Ok(())
    }

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
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill(&mut fresh);
        self.sealed_key_or(kek, name, fresh).await
    }

    /// As [`Self::sealed_key`], made from `fresh` if no instance made it first.
    pub async fn sealed_key_or(
        &self,
        kek: &KeyEncryption,
        name: &str,
        fresh: [u8; 32],
    ) -> Result<[u8; 32], SealedKeyError> {
        let setup = SealedKeyError::Setup;
        let sealed = kek.seal(name, &fresh).map_err(setup)?;
        let stored = self.shared_secret(name, &B64.encode(sealed)).await?;
        let sealed = B64
            .decode(stored)
            .map_err(|_| setup(format!("{name} is not base64")))?;
        let key = kek.open(name, &sealed).map_err(setup)?;
        <[u8; 32]>::try_from(key.as_slice()).map_err(|_| setup(format!("{name} is not 32 bytes")))
    }

    /// Seals again, under `new`, every signing key and every sealed secret that `old` sealed
    /// (a key stored in the clear by an old version too), in one transaction: any that does
    /// not open with `old` changes nothing. Each keeps its associated data (its kid, its name).
    /// The fleet must be stopped: an instance running with `old` could no longer re-read its
    /// ring. Returns how many keys and secrets were sealed again.
    pub async fn reseal(
        &self,
        old: &KeyEncryption,
        new: &KeyEncryption,
    ) -> Result<(usize, usize), SealedKeyError> {
        let setup = SealedKeyError::Setup;
        let db = |e: sqlx::Error| SealedKeyError::Store(e.into());
        let mut tx = self.write.begin().await.map_err(db)?;
        // No key added or secret made meanwhile (a `keys rotate`, an instance not stopped),
        // sealed by the key this one replaces. (SQLite: the first write takes the one lock.)
        if self.is_shared() {
            let sql = "LOCK TABLE signing_keys, server_secrets IN SHARE ROW EXCLUSIVE MODE";
            q!(sql).execute(&mut *tx).await.map_err(db)?;
        }
        let sql = "SELECT kid, private_key FROM signing_keys ORDER BY kid";
        let keys: Vec<(String, Vec<u8>)> = q_as!(sql).fetch_all(&mut *tx).await.map_err(db)?;
        for (kid, stored) in &keys {
            let private_key = if crate::kek::is_sealed(stored) {
                old.open(kid, stored).map_err(setup)?
            } else {
                stored.clone()
            };
            let sealed = new.seal(kid, &private_key).map_err(setup)?;
            let sql = "UPDATE signing_keys SET private_key = $1 WHERE kid = $2";
            q!(sql, sealed, kid).execute(&mut *tx).await.map_err(db)?;
        }
        let sql = "SELECT name, value FROM server_secrets ORDER BY name";
        let secrets: Vec<(String, String)> = q_as!(sql).fetch_all(&mut *tx).await.map_err(db)?;
        let mut sealed_secrets = 0;
        for (name, value) in &secrets {
            // Only the sealed ones: another (an older version's DPoP nonce secret, in the
            // clear) is kept as it is.
            let Some(sealed) = B64.decode(value).ok().filter(|b| crate::kek::is_sealed(b)) else {
                continue;
            };
            let key = old.open(name, &sealed).map_err(setup)?;
            let again = B64.encode(new.seal(name, &key).map_err(setup)?);
            let sql = "UPDATE server_secrets SET value = $1 WHERE name = $2";
            q!(sql, again, name).execute(&mut *tx).await.map_err(db)?;
            sealed_secrets += 1;
        }
        tx.commit().await.map_err(db)?;
        Ok((keys.len(), sealed_secrets))
    }
}
