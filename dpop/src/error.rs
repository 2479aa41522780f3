//! Why a proof was refused.

/// A refused proof. [`ProofError::code`] is the RFC 9449 error code to answer with;
/// `Display` is the `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("a DPoP proof is required")]
    Missing,
    #[error("more than one DPoP header")]
    Multiple,
    #[error("the DPoP proof is malformed")]
    Malformed,
    #[error("the DPoP proof's typ must be dpop+jwt")]
    Type,
    #[error("the DPoP proof's algorithm is not accepted (ES256, EdDSA or Ed25519)")]
    Algorithm,
    #[error("the DPoP proof's crit header is not supported")]
    Critical,
    #[error(
        "the DPoP proof's jwk is not a public key of its algorithm (P-256 for ES256, Ed25519 for EdDSA and Ed25519)"
    )]
    Key,
    #[error("the DPoP proof's signature is invalid")]
    Signature,
    #[error("the DPoP proof's claims are missing or malformed")]
    Claims,
    #[error("the DPoP proof's htm does not match the request method")]
    Method,
    #[error("the DPoP proof's htu does not match the request URL")]
    Url,
    #[error("the DPoP proof is too old")]
    Stale,
    #[error("the DPoP proof is issued in the future")]
    Future,
    #[error("the DPoP proof's ath does not match the access token")]
    AccessTokenHash,
    #[error("a fresh DPoP nonce is required")]
    Nonce,
    #[error("the DPoP proof's key is not the key the session is bound to")]
    KeyMismatch,
    /// A login whose proof's key is already bound to a session: each login brings a new key
    /// (else a script that can sign with a page's stored key could log into its own account
    /// with it and hand that session to the page's tabs, which sign with that key).
    #[error("the DPoP proof's key is already bound to a session; use a new key for each login")]
    KeyInUse,
    #[error("the DPoP proof was already used")]
    Replayed,
    #[error("the DPoP replay cache is full; retry later")]
    ReplayCacheFull,
}

impl ProofError {
    /// `use_dpop_nonce` for [`ProofError::Nonce`], `invalid_dpop_proof` otherwise.
    pub fn code(self) -> &'static str {
        match self {
            ProofError::Nonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }

    /// Whether the answer is "retry with the nonce of this response".
    pub fn is_nonce(self) -> bool {
        self == ProofError::Nonce
    }
}
