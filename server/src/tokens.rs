//! Access tokens (EdDSA JWTs, RFC 9068 profile) and opaque refresh tokens.
//!
//! Verification is `tokenwarden_dpop::access::verify`, the code published for other services:
//! the rules (EdDSA only, so `none` and HS256-with-the-public-key fail; `typ` = `at+jwt`; a
//! known `kid`; `iss`, `aud`; `exp`/`nbf` against the server's clock with a small leeway) are
//! written once. Here: issuing, the server's claims, and the server's reasons for a refusal.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::Signer;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokenwarden_dpop::access::{self, TokenError};

use crate::keys::Ring;
use crate::store::User;

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub jti: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Whether the address was shown to be the user's.
    #[serde(default)]
    pub email_verified: bool,
    /// RFC 9449 §6.1: the key a bound session's tokens are bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
    /// When the user last proved who they are in this session (sign-in, step-up): OpenID
    /// Connect's `auth_time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// How (RFC 8176: `pwd`, `otp`, `hwk`, `mfa`; `fed` for a provider's sign-in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The claims the app owns (`users import`, `users set-claims`), none of them reserved.
    #[serde(flatten)]
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// Claim names the server writes itself, or that JWT, OpenID Connect, DPoP or OAuth define: a
/// custom claim may not take one (it would shadow or forge it).
pub const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "sub",
    "sid",
    "jti",
    "iat",
    "nbf",
    "exp",
    "email",
    "name",
    "roles",
    "email_verified",
    "cnf",
    "typ",
    "amr",
    "acr",
    "auth_time",
    "azp",
    "scope",
    "scp",
    "client_id",
    "nonce",
    "at_hash",
    "c_hash",
    "act",
    "may_act",
    "htm",
    "htu",
    "ath",
    "events",
    "kid",
    "alg",
];

/// Most bytes the custom claims of a user may take (serialised JSON).
pub const MAX_CUSTOM_CLAIMS_BYTES: usize = 4096;

/// Why a set of custom claims is refused.
pub fn check_custom_claims(
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    if let Some(name) = claims
        .keys()
        .find(|k| RESERVED_CLAIMS.contains(&k.as_str()))
    {
        return Err(format!("claim {name:?} is reserved"));
    }
    if let Some(name) = claims.keys().find(|k| k.is_empty() || k.len() > 64) {
        return Err(format!("claim name {name:?} must be 1 to 64 bytes"));
    }
    let json = serde_json::to_vec(claims).map_err(|e| format!("claims: {e}"))?;
    if json.len() > MAX_CUSTOM_CLAIMS_BYTES {
        return Err(format!(
            "claims take {} bytes as JSON; at most {MAX_CUSTOM_CLAIMS_BYTES}",
            json.len()
        ));
    }
    // The verifiers' rule for a token's JSON, on the claims as the payload holds them (at its
    // depth): deeper ones made every token of the user refused, everywhere.
    if !tokenwarden_dpop::plain_json(&json) {
        return Err(format!(
            "claims nest deeper than {} levels (the token's own included)",
            tokenwarden_dpop::MAX_JSON_DEPTH
        ));
    }
    Ok(())
}

/// `cnf`: `{"jkt": <RFC 7638 thumbprint>}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

pub use tokenwarden_dpop::access::Audience;

/// HMAC-SHA256 under a 32-byte server key of `parts`, each length-prefixed, so that no two
/// lists of parts give the same input (sign-in codes, known browsers).
pub fn keyed_hash(key: &[u8; 32], parts: &[&str]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // The key is 32 bytes, which HMAC always accepts.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// 32 random bytes, base64url: `len` characters.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// 16 random bytes, base64url: ids for sessions, users and `jti`s.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// Refresh tokens are 43 base64url characters; anything else is not one of ours.
pub fn is_well_formed_refresh_token(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What the database stores instead of the refresh token.
pub fn hash_refresh_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("no signing key is available")]
    NoSigningKey,
    #[error("encoding the token: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Whom an access token is for.
pub struct Subject<'a> {
    pub user: &'a User,
    pub session_id: &'a str,
    /// The DPoP key the session is bound to (`cnf.jkt`), if any.
    pub jkt: Option<&'a str>,
    /// When and how the user last proved who they are (`auth_time`, `amr`).
    pub auth: Option<&'a crate::store::Authentication>,
}

/// A signed access token for `s`, valid `ttl_secs` from `now`.
pub fn issue(
    ring: &Ring,
    aud: &Audience,
    s: &Subject<'_>,
    now: i64,
    ttl_secs: i64,
) -> Result<(String, AccessClaims), IssueError> {
    let (user, session_id, jkt, auth) = (s.user, s.session_id, s.jkt, s.auth);
    let (kid, key) = ring.signer(now).ok_or(IssueError::NoSigningKey)?;
    let claims = AccessClaims {
        iss: aud.issuer.clone(),
        aud: aud.audience.clone(),
        sub: user.id.clone(),
        sid: session_id.to_owned(),
        jti: random_id(),
        iat: now,
        nbf: now,
        exp: now + ttl_secs,
        email: user.email.clone(),
        name: user.name.clone(),
        roles: user.roles.clone(),
        email_verified: user.email_verified,
        cnf: jkt.map(|jkt| Confirmation {
            jkt: jkt.to_owned(),
        }),
        // 0: a provider's sign-in whose provider did not say when (not recent); none then.
        auth_time: auth.map(|a| a.time).filter(|t| *t > 0),
        amr: auth.map(|a| a.amr.clone()).unwrap_or_default(),
        // Checked when they were stored; a reserved name is dropped here all the same, so that
        // nothing stored can shadow a claim the server writes.
        custom: user
            .claims
            .iter()
            .filter(|(k, _)| !RESERVED_CLAIMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let header = serde_json::json!({ "alg": "EdDSA", "typ": ACCESS_TOKEN_TYPE, "kid": kid });
    let mut jwt = B64.encode(serde_json::to_vec(&header)?);
    jwt.push('.');
    jwt.push_str(&B64.encode(serde_json::to_vec(&claims)?));
    let signature = key.sign(jwt.as_bytes());
    jwt.push('.');
    jwt.push_str(&B64.encode(signature.to_bytes()));
    Ok((jwt, claims))
}

/// Why an access token was refused; the text goes into `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The published verifier's reasons (`tokenwarden_dpop::access::TokenError`).
    Token(TokenError),
    Revoked,
    /// A DPoP-bound token sent as `Bearer`.
    Bound,
    /// An unbound token sent as `DPoP`.
    NotBound,
    /// An unbound token while the server runs with `--dpop required`.
    DpopRequired,
}

impl From<TokenError> for Invalid {
    fn from(e: TokenError) -> Self {
        Invalid::Token(e)
    }
}

impl Invalid {
    pub fn description(self) -> &'static str {
        match self {
            Invalid::Token(e) => e.description(),
            Invalid::Revoked => "the token has been revoked",
            Invalid::Bound => {
                "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof"
            }
            Invalid::NotBound => "the token is not DPoP-bound: send it as Authorization: Bearer",
            Invalid::DpopRequired => "a DPoP-bound token is required",
        }
    }
}

/// Checks signature and claims with the published verifier, then reads the server's claims
/// (every one of them required). Revocation (deny-list, revoked sessions) is the caller's.
pub fn verify(ring: &Ring, aud: &Audience, token: &str, now: i64) -> Result<AccessClaims, Invalid> {
    let verified = access::verify(&ring.verifying, aud, token, now)?;
    serde_json::from_value(serde_json::Value::Object(verified.claims))
        .map_err(|_| Invalid::Token(TokenError::Claims))
}
