//! Secrets every instance sharing the database must agree on (the DPoP nonce secret, the
//! sealed HMAC key of sign-in codes).

use super::{Store, StoreResult};

impl Store {
    /// The secret `name`, created from `fresh` by whichever instance asks first.
    pub async fn shared_secret(&self, name: &str, fresh: &str) -> StoreResult<String> {
        let insert =
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING";
        q!(insert, name, fresh).execute(&self.write).await?;
        let read = "SELECT value FROM server_secrets WHERE name = $1";
        Ok(q_scalar!(read, name).fetch_one(&self.write).await?)
    }
}
