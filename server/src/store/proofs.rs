//! DPoP proofs accepted by any instance of a fleet (PostgreSQL), until they are too old to
//! pass the `iat` check: a proof replayed to another instance is refused there too. Proofs are
//! recorded in batches: whatever arrived while the previous insert ran goes into the next one
//! (group commit), so a busy instance pays one round trip for many proofs.
//!
//! A single instance (SQLite) keeps them in memory only (`tokenwarden_dpop::ReplayCache`) and
//! refuses nonces issued before it started (crate::dpop), so a restart cannot replay one.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, StoreResult};

/// Most proofs in one insert.
pub(super) const BATCH: usize = 512;

/// One proof to record, and where to answer whether it was new.
pub(super) struct ProofClaim {
    key: String,
    until: i64,
    answer: oneshot::Sender<Result<bool, String>>,
}

/// The key of a proof in `dpop_proofs`: base64url(SHA-256(thumbprint, 0, jti)), so that a long
/// `jti` costs no index space.
fn proof_key(jkt: &str, jti: &str) -> String {
    let mut h = Sha256::new();
    h.update(jkt.as_bytes());
    h.update([0]);
    h.update(jti.as_bytes());
    B64.encode(h.finalize())
}

/// `INSERT … VALUES ($1, $2), ($3, $4), …` for `n` proofs; a proof's row is never taken over.
/// (An expired row was, compared with the batch's latest time: a replay of a proof another
/// instance accepted a moment before, batched beside a claim stamped a few seconds later, took
/// its still-live row over and passed. A proof whose row has expired fails the `iat` check
/// anyway.)
fn batch_insert(n: usize) -> String {
    let mut sql = String::from("INSERT INTO dpop_proofs (proof, until) VALUES ");
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!("(${}, ${})", 2 * i + 1, 2 * i + 2));
    }
    sql.push_str(" ON CONFLICT (proof) DO NOTHING RETURNING proof");
    sql
}

/// Records proofs from `queue` until every sender is gone.
pub(super) async fn record(pool: AnyPool, mut queue: mpsc::Receiver<ProofClaim>) {
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        // A proof twice in one batch: the first is the one recorded, the others are replays
        // (one statement cannot insert a key twice).
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        for c in &batch {
            if seen.insert(c.key.as_str()) {
                rows.push((c.key.as_str(), c.until));
            }
        }
        let sql = batch_insert(rows.len());
        let mut query =
            sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.as_str())).persistent(false);
        for (key, until) in &rows {
            query = query.bind(*key).bind(*until);
        }
        let inserted = query
            .fetch_all(&pool)
            .await
            .map(|keys| keys.into_iter().collect::<std::collections::HashSet<_>>());
        let mut answered = std::collections::HashSet::with_capacity(batch.len());
        for c in batch.drain(..) {
            let answer = match &inserted {
                Ok(new) => Ok(new.contains(&c.key) && answered.insert(c.key.clone())),
                Err(e) => Err(e.to_string()),
            };
            let _ = c.answer.send(answer);
        }
    }
}

impl Store {
    /// Shared stores only: records a proof's (`jkt`, `jti`) until `until`; `false` if another
    /// instance (or this one) already accepted it. Always `true` on SQLite, whose one instance
    /// keeps its replay cache in memory.
    pub async fn claim_proof(&self, jkt: &str, jti: &str, until: i64) -> StoreResult<bool> {
        let Some(proofs) = &self.proofs else {
            return Ok(true);
        };
        let stopped = || StoreError::Batch("the DPoP proof recorder has stopped".into());
        let (answer, answered) = oneshot::channel();
        let claim = ProofClaim {
            key: proof_key(jkt, jti),
            until,
            answer,
        };
        proofs.send(claim).await.map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(StoreError::Batch)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_batch_numbers_its_placeholders_in_order() {
        let sql = super::batch_insert(2);
        assert!(
            sql.contains("VALUES ($1, $2), ($3, $4) ON CONFLICT"),
            "{sql}"
        );
        assert!(
            sql.ends_with("ON CONFLICT (proof) DO NOTHING RETURNING proof"),
            "{sql}"
        );
    }
}
