//! Signing keys (crate::keys seals the private halves before they get here).

use super::dialect::{self, Dialect};
use super::revocations::record_event;
use super::{EventKind, KeyRow, Store, StoreResult};

impl Store {
    /// Every key, newest first.
    pub async fn keys(&self) -> StoreResult<Vec<KeyRow>> {
        let sql = "SELECT kid, private_key, public_key, created_at, signs_from, retired_at,
                          revoked_at
                   FROM signing_keys ORDER BY created_at DESC, kid";
        Ok(q_as!(sql).fetch_all(&self.write).await?)
    }

    /// Adds a key, published now, that becomes the signing key at `signs_from` (which retires
    /// the previous one: crate::keys::key_states). Instances that start together may each find
    /// no signing key: on PostgreSQL an advisory lock makes them add one after the other (the
    /// second's supersedes the first's; harmless: both verify through the grace period).
    pub async fn add_signing_key(
        &self,
        key: &KeyRow,
        now: i64,
        signs_from: i64,
    ) -> StoreResult<()> {
        let mut tx = self.write.begin().await?;
        if self.dialect == Dialect::Postgres {
            q!(dialect::LOCK_KEYS_PG).execute(&mut *tx).await?;
        }
        q!(
            "INSERT INTO signing_keys (kid, private_key, public_key, created_at, signs_from)
             VALUES ($1, $2, $3, $4, $5)",
            &key.kid,
            &key.private_key,
            &key.public_key,
            now,
            signs_from
        )
        .execute(&mut *tx)
        .await?;
        record_event(&mut tx, self.dialect, EventKind::Keys, &key.kid, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a key's stored private key (sealing a key stored before encryption at rest).
    pub async fn set_private_key(&self, kid: &str, private_key: &[u8]) -> StoreResult<()> {
        let sql = "UPDATE signing_keys SET private_key = $1 WHERE kid = $2";
        q!(sql, private_key, kid).execute(&self.write).await?;
        Ok(())
    }

    /// Revokes a key at once; `false` if there is no such live key.
    pub async fn revoke_key(&self, kid: &str, now: i64) -> StoreResult<bool> {
        let change = q!(
            "UPDATE signing_keys SET revoked_at = $1, retired_at = COALESCE(retired_at, $1)
             WHERE kid = $2 AND revoked_at IS NULL",
            now,
            kid
        );
        self.change_with_event(change, EventKind::Keys, kid, now)
            .await
    }
}
