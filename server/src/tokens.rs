//! Access tokens (EdDSA JWTs, RFC 9068 profile) and opaque refresh tokens.
//!
//! Verification pins everything an attacker could choose: the algorithm (EdDSA only, so
//! `none` and HS256-with-the-public-key fail), `typ` = `at+jwt`, a known `kid`, `iss`, `aud`,
//! and `exp`/`nbf` against the server's clock with a small leeway.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    /// RFC 9449 §6.1: the key a bound session's tokens are bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// `cnf`: `{"jkt": <RFC 7638 thumbprint>}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Confirmation {
    pub jkt: String,
}

/// What the token says about who may accept it.
#[derive(Debug, Clone)]
pub struct Audience {
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: i64,
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
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

pub fn issue(
    ring: &Ring,
    aud: &Audience,
    user: &User,
    session_id: &str,
    now: i64,
    ttl_secs: i64,
) -> Result<(String, AccessClaims), IssueError> {
    issue_bound(ring, aud, user, session_id, now, ttl_secs, None)
}

/// `issue`, with `cnf.jkt` when the session is bound to a DPoP key.
pub fn issue_bound(
    ring: &Ring,
    aud: &Audience,
    user: &User,
    session_id: &str,
    now: i64,
    ttl_secs: i64,
    jkt: Option<&str>,
) -> Result<(String, AccessClaims), IssueError> {
    let (kid, key) = ring.signing.as_ref().ok_or(IssueError::NoSigningKey)?;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
    header.kid = Some(kid.clone());
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
        cnf: jkt.map(|jkt| Confirmation {
            jkt: jkt.to_owned(),
        }),
    };
    let jwt = jsonwebtoken::encode(&header, &claims, key)?;
    Ok((jwt, claims))
}

/// Why a bearer token was refused; the text goes into `error_description`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Algorithm,
    Type,
    UnknownKey,
    Signature,
    Claims,
    Expired,
    NotYetValid,
    Revoked,
    /// A DPoP-bound token sent as `Bearer`.
    Bound,
    /// An unbound token sent as `DPoP`.
    NotBound,
    /// An unbound token while the server runs with `--dpop required`.
    DpopRequired,
}

impl Invalid {
    pub fn description(self) -> &'static str {
        match self {
            Invalid::Malformed => "the token is malformed",
            Invalid::Algorithm => "the token's algorithm is not accepted",
            Invalid::Type => "the token is not an access token (typ must be at+jwt)",
            Invalid::UnknownKey => "the token's signing key is unknown or revoked",
            Invalid::Signature => "the token's signature is invalid",
            Invalid::Claims => "the token's issuer, audience or claims are invalid",
            Invalid::Expired => "the token has expired",
            Invalid::NotYetValid => "the token is not valid yet",
            Invalid::Revoked => "the token has been revoked",
            Invalid::Bound => {
                "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof"
            }
            Invalid::NotBound => "the token is not DPoP-bound: send it as Authorization: Bearer",
            Invalid::DpopRequired => "a DPoP-bound token is required",
        }
    }
}

/// Checks signature and claims. Revocation (deny-list, revoked sessions) is the caller's.
pub fn verify(ring: &Ring, aud: &Audience, token: &str, now: i64) -> Result<AccessClaims, Invalid> {
    if token.len() > 8192 {
        return Err(Invalid::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Invalid::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(Invalid::Algorithm);
    }
    if header.typ.as_deref() != Some(ACCESS_TOKEN_TYPE) {
        return Err(Invalid::Type);
    }
    let key = header
        .kid
        .as_deref()
        .filter(|kid| kid.len() <= 64)
        .and_then(|kid| ring.verifying.get(kid))
        .ok_or(Invalid::UnknownKey)?;

    let mut validation = Validation::new(Algorithm::EdDSA);
    // Time is checked below against the server's (injectable) clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims = HashSet::new();
    validation.set_issuer(&[&aud.issuer]);
    validation.set_audience(&[&aud.audience]);
    let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::InvalidSignature => Invalid::Signature,
            ErrorKind::InvalidAlgorithm => Invalid::Algorithm,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience | ErrorKind::Json(_) => {
                Invalid::Claims
            }
            _ => Invalid::Malformed,
        }
    })?;
    let claims = data.claims;
    if claims.exp + aud.leeway_secs <= now {
        return Err(Invalid::Expired);
    }
    if claims.nbf - aud.leeway_secs > now {
        return Err(Invalid::NotYetValid);
    }
    Ok(claims)
}
