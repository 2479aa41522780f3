//! DPoP (RFC 9449) in the reference server: the glue between `tokenwarden-dpop` and the
//! endpoints. The rules are in docs/PROTOCOL.md, "DPoP: sender-constrained sessions".
//!
//! - a sign-in with a proof binds the new session to the proof's key (crate::sessions);
//! - the bound session's refresh and logout need a proof by that key, checked before anything
//!   changes;
//! - its access tokens carry `cnf.jkt` and are accepted only as `Authorization: DPoP` with a
//!   proof by that key;
//! - every response carries the current `DPoP-Nonce`.
//!
//! No proof is accepted twice, restart or not: a single instance keeps the proofs it accepted
//! in memory and refuses nonces issued before it started; a fleet (PostgreSQL) also records
//! every proof in the shared database (crate::store's `claim_proof`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tokenwarden_dpop::{
    DPOP_HEADER, Expected, NONCE_HEADER, Nonces, Origins, Proof, ProofError, Scheme, Verifier,
};

use crate::clock::Clock;
use crate::error::ApiError;
use crate::store::{Store, StoreError};
use crate::tokens::{AccessClaims, Invalid};

/// Name of the nonce key in `server_secrets`, sealed by the key-encryption key. (A database
/// dump gave the one before, `dpop_nonce`, stored in the clear: whoever held it could make the
/// nonce of any time to come, so a script's proofs signed ahead for then would pass.)
const NONCE_KEY: &str = "dpop_nonce_key";

/// The nonce secret of the versions before, in the clear: sealed as it is at the first start of
/// this one (the same nonces across a rolling upgrade), then deleted.
const NONCE_SECRET_IN_THE_CLEAR: &str = "dpop_nonce";

/// How DPoP is configured.
#[derive(Debug, Clone, Default)]
pub struct DpopSettings {
    /// `--dpop required`: only bound sessions.
    pub required: bool,
    /// `--dpop-nonce-secret`; default: one generated once and kept in the database.
    pub nonce_secret: Option<String>,
    /// Normalised origins a proof's `htu` may name; empty: the request's Host, for loopback
    /// hosts only.
    pub public_origins: Vec<String>,
    /// Most proofs each in-memory replay cache keeps (`None`: the crate's default, 2^20; tests
    /// make it small).
    pub replay_capacity: Option<usize>,
}

/// The DPoP verifier of this server.
#[derive(Clone)]
pub struct Dpop(Arc<Inner>);

struct Inner {
    verifier: Verifier,
    /// The proofs of sign-ins, with a replay cache of their own: they need no session, and
    /// anyone with enough addresses could otherwise fill the one every session's refreshes
    /// and requests are checked against, and have them all refused (`ReplayCacheFull`). Full,
    /// it refuses sign-ins only.
    sign_ins: Verifier,
    settings: DpopSettings,
    store: Store,
    clock: Clock,
}

/// Why DPoP could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DpopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the DPoP nonce secret must be at least 32 bytes")]
    Secret,
    #[error("the DPoP nonce key: {0}")]
    Sealed(String),
}

/// Whether the request carries a `DPoP` header at all.
pub fn has_proof(headers: &HeaderMap) -> bool {
    headers.contains_key(DPOP_HEADER)
}

impl Dpop {
    /// The verifier, with the configured secret or the one the database holds. On a store of
    /// one instance, nonces issued before now are refused: the replay cache starts empty.
    pub async fn new(
        settings: DpopSettings,
        store: Store,
        clock: Clock,
        kek: &crate::kek::KeyEncryption,
    ) -> Result<Self, DpopError> {
        use base64::Engine;
        let secret = match &settings.nonce_secret {
            Some(s) => s.clone(),
            None => {
                let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
                let clear = store.secret(NONCE_SECRET_IN_THE_CLEAR).await?;
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                // (It was 32 random bytes in base64url, as this key's text is.)
                let before = clear.as_deref().and_then(|c| b64.decode(c).ok());
                let seed = before.and_then(|b| <[u8; 32]>::try_from(b).ok());
                let key = store
                    .sealed_key_or(kek, NONCE_KEY, seed.unwrap_or(fresh))
                    .await
                    .map_err(|e| match e {
                        crate::store::SealedKeyError::Store(e) => DpopError::Store(e),
                        crate::store::SealedKeyError::Setup(why) => DpopError::Sealed(why),
                    })?;
                if clear.is_some() {
                    store.delete_secret(NONCE_SECRET_IN_THE_CLEAR).await?;
                }
                b64.encode(key)
            }
        };
        let since = clock.now_ms();
        let verifier = || -> Result<Verifier, DpopError> {
            let mut nonces = Nonces::new(secret.as_bytes()).ok_or(DpopError::Secret)?;
            if !store.is_shared() {
                nonces = nonces.not_before_ms(since);
            }
            let mut v = Verifier::new(nonces);
            if let Some(n) = settings.replay_capacity {
                v.replay = tokenwarden_dpop::ReplayCache::new(n);
            }
            Ok(v)
        };
        Ok(Dpop(Arc::new(Inner {
            verifier: verifier()?,
            sign_ins: verifier()?,
            settings,
            store,
            clock,
        })))
    }

    pub fn required(&self) -> bool {
        self.0.settings.required
    }

    /// The nonces (the current one, and the tests' view of them).
    pub fn nonces(&self) -> &Nonces {
        &self.0.verifier.nonces
    }

    /// Checks the request's proof by `verifier` (its replay cache: the sessions', or the
    /// sign-ins'). `token_endpoint` selects the nonce answer (400 vs 401).
    ///
    /// The `jti` is checked in this instance's replay cache (memory, first), then, on a shared
    /// store (PostgreSQL), by a unique insert in the database, so that a proof replayed to
    /// another instance of the fleet is refused too (docs/DEPLOYMENT.md).
    #[allow(clippy::too_many_arguments)]
    async fn check(
        &self,
        verifier: &Verifier,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        access_token: Option<&str>,
        jkt: Option<&str>,
        token_endpoint: bool,
    ) -> Result<Proof, ApiError> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let origins = Origins::of_request(&self.0.settings.public_origins, host);
        let expected = Expected {
            method,
            path,
            origins,
            access_token,
            jkt,
            now: self.0.clock.now(),
        };
        let proof = verifier
            .verify_headers(
                headers.get_all(DPOP_HEADER).iter().map(|v| v.as_bytes()),
                &expected,
            )
            .map_err(|e| match e {
                ProofError::Nonce => ApiError::UseDpopNonce { token_endpoint },
                e => ApiError::DpopProof(e),
            })?;
        // As long as the in-memory cache keeps it: until the proof fails the iat check.
        let until = proof
            .iat
            .saturating_add(verifier.policy.max_age_secs)
            .saturating_add(1);
        if !self
            .0
            .store
            .claim_proof(&proof.jkt, &proof.jti, until)
            .await?
        {
            return Err(ApiError::DpopProof(ProofError::Replayed));
        }
        Ok(proof)
    }

    /// At sign-in (`path`: the endpoint's): the thumbprint to bind the new session to, if the
    /// request carries a proof. A present but invalid proof is refused, never ignored.
    pub async fn sign_in_binding(
        &self,
        headers: &HeaderMap,
        path: &str,
    ) -> Result<Option<String>, ApiError> {
        if !has_proof(headers) {
            if self.required() {
                return Err(ApiError::DpopProof(ProofError::Missing));
            }
            return Ok(None);
        }
        let v = &self.0.sign_ins;
        let jkt = self
            .check(v, headers, "POST", path, None, None, true)
            .await?
            .jkt;
        // A key some session was bound to already opens none (`Sessions::open` refuses it too):
        // refused here, before the flow spends a code, changes a password or revokes anything.
        if self.0.store.dpop_key_taken(&jkt).await? {
            return Err(ApiError::DpopProof(ProofError::KeyInUse));
        }
        Ok(Some(jkt))
    }

    /// At refresh, before the rotation decision: `bound` is the key the presented token's
    /// session is bound to; its proof is checked. `None` back for an unbound session.
    pub async fn refresh_binding(
        &self,
        headers: &HeaderMap,
        path: &str,
        bound: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        match bound {
            Some(jkt) => {
                self.check(
                    &self.0.verifier,
                    headers,
                    "POST",
                    path,
                    None,
                    Some(jkt),
                    true,
                )
                .await?;
                Ok(Some(jkt.to_owned()))
            }
            None if self.required() => Err(ApiError::InvalidGrant),
            None => Ok(None),
        }
    }

    /// At logout: the sessions to revoke are bound to `jkts`; a proof by that key is required
    /// (one key: a cookie and a token of different keys cannot both be proven).
    pub async fn check_logout(
        &self,
        headers: &HeaderMap,
        path: &str,
        access_token: Option<&str>,
        jkts: &[&str],
    ) -> Result<(), ApiError> {
        let Some(first) = jkts.first() else {
            return Ok(());
        };
        if jkts.iter().any(|j| j != first) {
            return Err(ApiError::DpopProof(ProofError::KeyMismatch));
        }
        self.check(
            &self.0.verifier,
            headers,
            "POST",
            path,
            access_token,
            Some(first),
            true,
        )
        .await
        .map(|_| ())
    }

    /// For protected resources: a verified token (`claims`) sent with `scheme` must be bound
    /// and proven (`DPoP`), or unbound (`Bearer`, unless DPoP is required).
    #[allow(clippy::too_many_arguments)]
    pub async fn check_resource(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: &str,
        scheme: Scheme,
        token: &str,
        claims: &AccessClaims,
    ) -> Result<(), ApiError> {
        match (scheme, &claims.cnf) {
            (Scheme::Bearer, Some(_)) => Err(ApiError::InvalidDpopToken(Invalid::Bound)),
            (Scheme::Bearer, None) if self.required() => {
                Err(ApiError::InvalidDpopToken(Invalid::DpopRequired))
            }
            (Scheme::Bearer, None) => Ok(()),
            (Scheme::Dpop, None) => Err(ApiError::InvalidDpopToken(Invalid::NotBound)),
            (Scheme::Dpop, Some(cnf)) => self
                .check(
                    &self.0.verifier,
                    headers,
                    method,
                    path,
                    Some(token),
                    Some(&cnf.jkt),
                    false,
                )
                .await
                .map(|_| ()),
        }
    }
}

/// Middleware: every response carries the current nonce.
pub async fn add_nonce(State(dpop): State<Dpop>, mut res: Response) -> Response {
    let now = dpop.0.clock.now();
    if let Ok(v) = HeaderValue::from_str(&dpop.nonces().current(now)) {
        res.headers_mut().insert(NONCE_HEADER, v);
    }
    res
}
