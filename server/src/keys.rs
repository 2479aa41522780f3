//! Ed25519 signing keys: generated on first start, stored in the database, rotated without
//! logging anyone out. The ring in memory is rebuilt from the database (on start, after every
//! change made here, and by a poller that picks up changes made by the `keys` CLI).
//!
//! - a **pending** key is published (in the JWKS, and verifying) before it signs anything: a
//!   rotation gives every verifier's cached JWKS the time to see it (`--key-publish-secs`, at
//!   least the JWKS's `max-age`), so that no API refuses the first tokens it signs;
//! - the **signing** key is the newest key whose time to sign has come and that is not
//!   revoked;
//! - a **retired** key (superseded by a newer one) keeps verifying, and stays in the JWKS, for
//!   the grace period, at least one access-token lifetime, so tokens it signed run out naturally;
//! - a **revoked** key verifies nothing from the moment the ring is reloaded (and a new signing
//!   key is made at once if it was the signing one).
//!
//! Which state a key is in is [`key_states`], a pure function of the rows, the time and the
//! grace period.
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
    /// The published key that signs next, from its start on (seconds): every instance switches
    /// at that second by itself, without waiting for its next read of the keys.
    pub next: Option<(i64, String, SigningKey)>,
    /// What verifies: the keys the published verifier (`tokenwarden_dpop::access`) takes.
    pub verifying: KeySet,
    /// The JWKS document, serialised once per reload.
    pub jwks: String,
}

impl Ring {
    /// The key that signs at `now`: the published next one once it has started, else the
    /// current one.
    pub fn signer(&self, now: i64) -> Option<(&str, &SigningKey)> {
        match &self.next {
            Some((from, kid, key)) if now >= *from => Some((kid, key)),
            _ => self.signing.as_ref().map(|(kid, key)| (kid.as_str(), key)),
        }
    }
}

#[derive(Clone)]
pub struct Keys {
    ring: Arc<RwLock<Arc<Ring>>>,
    grace_secs: i64,
    encryption: KeyEncryption,
    /// One reload at a time: two at once (a revocation here and its event heard back) could
    /// each find no signing key and each make one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// The last reload failed: the ring may lack a change of the table's (a revoked key still
    /// in it). The instance is then out of step (crate::fleet::InStep) until one succeeds.
    behind: Arc<std::sync::atomic::AtomicBool>,
}

/// RFC 7638 thumbprint of an Ed25519 public key: a stable, content-derived `kid`.
pub fn thumbprint(public: &[u8]) -> String {
    tokenwarden_dpop::ed25519_thumbprint(&B64.encode(public))
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published; signs from `signs_from` on.
    Pending {
        signs_from: i64,
    },
    Signing,
    /// Superseded at `since`; verifies until `since + grace`.
    Retired {
        since: i64,
    },
    /// Superseded longer ago than the grace period: verifies nothing.
    Expired,
    Revoked,
}

impl KeyState {
    /// Whether tokens it signed are accepted (and it is in the JWKS).
    pub fn verifies(self) -> bool {
        matches!(
            self,
            KeyState::Pending { .. } | KeyState::Signing | KeyState::Retired { .. }
        )
    }
}

/// The state of each of `rows` at `now`. A key's start is its `signs_from` (its creation for
/// keys made before that column). Newest start first: the first started key that is not
/// revoked signs; every started key supersedes the started keys older than it (a revoked one
/// too, so that revoking the signing key never brings an older key back).
pub fn key_states(rows: &[KeyRow], now: i64, grace_secs: i64) -> Vec<KeyState> {
    let start = |k: &KeyRow| k.signs_from.unwrap_or(k.created_at);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| {
        start(&rows[b])
            .cmp(&start(&rows[a]))
            .then_with(|| rows[b].created_at.cmp(&rows[a].created_at))
            // In one second a revoked key and a new one: the new one replaced it.
            .then_with(|| {
                let revoked = |k: &KeyRow| k.revoked_at.is_some();
                revoked(&rows[a]).cmp(&revoked(&rows[b]))
            })
            .then_with(|| rows[a].kid.cmp(&rows[b].kid))
    });
    let mut states = vec![KeyState::Expired; rows.len()];
    let mut superseded_at: Option<i64> = None;
    for i in order {
        let k = &rows[i];
        let begins = start(k);
        // Keys from before publishing first (no `signs_from`) have always been started.
        if let Some(signs_from) = k.signs_from.filter(|t| *t > now)
            && k.revoked_at.is_none()
        {
            states[i] = KeyState::Pending { signs_from };
            continue;
        }
        let since = match (k.retired_at, superseded_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        states[i] = match (k.revoked_at, since) {
            (Some(_), _) => KeyState::Revoked,
            (None, None) => KeyState::Signing,
            (None, Some(t)) if t + grace_secs > now => KeyState::Retired { since: t },
            (None, Some(_)) => KeyState::Expired,
        };
        // A key revoked before it began to sign (a rotation called off) never began: the key it
        // was to replace goes on signing. (It retired that key when its time came: no key
        // signed, and every instance made one of its own, unpublished.)
        if k.signs_from.is_none_or(|t| t <= now) && k.revoked_at.is_none_or(|r| r >= begins) {
            let begins = begins.min(now);
            superseded_at = Some(superseded_at.map_or(begins, |s| s.min(begins)));
        }
    }
    states
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
        signs_from: None,
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
                next: None,
                verifying: KeySet::default(),
                jwks: r#"{"keys":[]}"#.to_owned(),
            }))),
            grace_secs,
            reloading: Arc::default(),
            behind: Arc::default(),
        }
    }

    /// Whether the last reload failed (see `behind`).
    pub fn behind(&self) -> bool {
        self.behind.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn current(&self) -> Arc<Ring> {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Keys that verify with `jwks` and sign nothing: the conformance corpus's
    /// (crate::conformance).
    #[cfg(test)]
    pub(crate) fn verifying_only(jwks: &str) -> Self {
        let keys = Keys::new(0, KeyEncryption::local(crate::kek::LocalKek::ephemeral()));
        let ring = Ring {
            signing: None,
            next: None,
            verifying: KeySet::from_jwks(jwks).unwrap(),
            jwks: jwks.to_owned(),
        };
        *keys.ring.write().unwrap() = Arc::new(ring);
        keys
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

    /// Rebuilds the ring from the database; creates a signing key (signing at once) if there
    /// is none.
    pub async fn reload(&self, store: &Store, now: i64) -> KeyResult<()> {
        let _one = self.reloading.lock().await;
        let read = self.read_ring(store, now).await;
        self.behind
            .store(read.is_err(), std::sync::atomic::Ordering::SeqCst);
        read
    }

    async fn read_ring(&self, store: &Store, now: i64) -> KeyResult<()> {
        let mut rows = store.keys().await?;
        if !key_states(&rows, now, self.grace_secs).contains(&KeyState::Signing) {
            store
                .add_signing_key(&self.generate_sealed()?, now, now)
                .await?;
            rows = store.keys().await?;
        }
        for k in rows.iter_mut().filter(|k| !kek::is_sealed(&k.private_key)) {
            let sealed = self.seal(&k.kid, &k.private_key)?;
            store.set_private_key(&k.kid, &sealed).await?;
            tracing::info!(kid = %k.kid, "sealed a signing key stored in the clear");
            k.private_key = sealed;
        }
        let states = key_states(&rows, now, self.grace_secs);
        let open = |k: &KeyRow| -> KeyResult<SigningKey> {
            let der = self
                .encryption
                .open(&k.kid, &k.private_key)
                .map_err(KeyError::Sealing)?;
            SigningKey::from_pkcs8_der(&der)
                .map_err(|e| KeyError::Sealing(format!("signing key {}: {e}", k.kid)))
        };
        let mut signing = None;
        let mut next: Option<(i64, String, SigningKey)> = None;
        let mut verifying = Vec::new();
        let mut jwks = Vec::new();
        for (k, state) in rows.iter().zip(&states) {
            if *state == KeyState::Signing {
                signing = Some((k.kid.clone(), open(k)?));
            }
            // The first pending key to start signs next (a later one, at the read after).
            if let KeyState::Pending { signs_from } = *state
                && next.as_ref().is_none_or(|(t, ..)| signs_from < *t)
            {
                next = Some((signs_from, k.kid.clone(), open(k)?));
            }
            if state.verifies() {
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
            next,
            verifying,
            jwks: json!({ "keys": jwks }).to_string(),
        });
        match self.ring.write() {
            Ok(mut slot) => *slot = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }

    /// Graceful rotation: a new key is published now and signs from `now + publish_secs` on
    /// (every cached JWKS has seen it by then); the old one keeps verifying through the grace
    /// period after that. This instance's ring is re-read after it.
    pub async fn rotate(&self, store: &Store, now: i64, publish_secs: i64) -> KeyResult<String> {
        let kid = self.add_next(store, now, publish_secs).await?;
        self.reload(store, now).await?;
        Ok(kid)
    }

    /// [`Keys::rotate`]'s change alone, committed: the new key's `kid`. Nothing re-read (the
    /// CLI, where a failed re-read after it must not say the rotation failed: every instance
    /// re-reads the ring on its own).
    pub async fn add_next(&self, store: &Store, now: i64, publish_secs: i64) -> KeyResult<String> {
        let key = self.generate_sealed()?;
        // Later than every key's start, so that the new key is the newest even when the last
        // one started in this very second (key_states orders by start; a tie would fall to
        // the kids' order, a coin flip).
        let latest = store
            .keys()
            .await?
            .iter()
            .map(|k| k.signs_from.unwrap_or(k.created_at))
            .max();
        let signs_from = (now + publish_secs.max(0)).max(latest.map_or(now, |t| t + 1));
        store.add_signing_key(&key, now, signs_from).await?;
        Ok(key.kid)
    }

    /// Emergency revocation: tokens signed by `kid` are rejected at once. If it was the signing
    /// key, a new one is generated (by the re-read of the ring after it). Returns whether the
    /// key existed and was live.
    pub async fn revoke(&self, store: &Store, kid: &str, now: i64) -> KeyResult<bool> {
        let revoked = store.revoke_key(kid, now).await?;
        self.reload(store, now).await?;
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_key_signs_from_its_start_without_a_reload() {
        let key = |b| SigningKey::from_bytes(&[b; 32]);
        let ring = Ring {
            signing: Some(("old".into(), key(1))),
            next: Some((200, "new".into(), key(2))),
            verifying: KeySet::default(),
            jwks: String::new(),
        };
        assert_eq!(ring.signer(199).map(|(kid, _)| kid), Some("old"));
        assert_eq!(ring.signer(200).map(|(kid, _)| kid), Some("new"));
    }

    fn row(kid: &str, created: i64, signs_from: Option<i64>) -> KeyRow {
        KeyRow {
            kid: kid.into(),
            private_key: vec![],
            public_key: vec![],
            created_at: created,
            signs_from,
            retired_at: None,
            revoked_at: None,
        }
    }

    const GRACE: i64 = 1000;

    #[test]
    fn a_key_made_in_the_second_its_predecessor_was_revoked_signs_whatever_the_kids() {
        for (revoked, fresh) in [("a", "b"), ("b", "a")] {
            let mut old = row(revoked, 100, Some(100));
            old.revoked_at = Some(100);
            let rows = [old, row(fresh, 100, Some(100))];
            assert_eq!(
                key_states(&rows, 100, GRACE),
                [KeyState::Revoked, KeyState::Signing],
                "revoked {revoked}, new {fresh}"
            );
        }
    }

    #[test]
    fn a_rotation_publishes_first_then_signs_and_the_old_key_verifies_through_the_grace() {
        let rows = [row("old", 0, Some(0)), row("new", 100, Some(220))];
        // Published at 100, not signing yet: the old key signs, both verify.
        assert_eq!(
            key_states(&rows, 150, GRACE),
            [KeyState::Signing, KeyState::Pending { signs_from: 220 }]
        );
        // At 220 the new key signs; the old one is retired from then on.
        assert_eq!(
            key_states(&rows, 220, GRACE),
            [KeyState::Retired { since: 220 }, KeyState::Signing]
        );
        assert_eq!(
            key_states(&rows, 220 + GRACE, GRACE),
            [KeyState::Expired, KeyState::Signing]
        );
    }

    #[test]
    fn revoking_the_signing_key_brings_no_older_key_back() {
        let mut rows = [row("a", 0, Some(0)), row("b", 10, Some(10))];
        rows[1].revoked_at = Some(20);
        let states = key_states(&rows, 30, GRACE);
        assert_eq!(states, [KeyState::Retired { since: 10 }, KeyState::Revoked]);
        assert!(
            !states.contains(&KeyState::Signing),
            "reload makes a new one"
        );
        // A revoked pending key is simply revoked, before its time and after it.
        let mut rows = [row("a", 0, Some(0)), row("p", 10, Some(500))];
        rows[1].revoked_at = Some(20);
        for now in [30, 500, 600, 500 + GRACE] {
            assert_eq!(
                key_states(&rows, now, GRACE),
                [KeyState::Signing, KeyState::Revoked],
                "at {now}"
            );
        }
    }

    #[test]
    fn keys_from_before_publishing_first_keep_their_stored_retirement() {
        let mut old = row("old", 0, None);
        old.retired_at = Some(50);
        let rows = [old, row("cur", 50, None)];
        assert_eq!(
            key_states(&rows, 60, GRACE),
            [KeyState::Retired { since: 50 }, KeyState::Signing]
        );
    }
}
