//! DPoP (RFC 9449) in the reference server: the glue between `tokenwarden-dpop` and the
//! endpoints. The rules are in docs/PROTOCOL.md, "DPoP: sender-constrained sessions".
//!
//! - a login with a proof binds the new session to the proof's key (`sessions.dpop_jkt`);
//! - the bound session's refresh and logout need a proof by that key, checked before anything
//!   changes;
//! - its access tokens carry `cnf.jkt` and are accepted only as `Authorization: DPoP` with a
//!   proof by that key;
//! - every response carries the current `DPoP-Nonce`.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tokenwarden_dpop::{
    DPOP_HEADER, Expected, NONCE_HEADER, Nonces, Origins, Proof, ProofError, Verifier,
};

use crate::error::ApiError;
use crate::state::AppState;
use crate::state::StartError;
use crate::store::Store;
use crate::tokens::{self, AccessClaims};

/// Name of the nonce secret in `server_secrets`.
const NONCE_SECRET: &str = "dpop_nonce";

/// The verifier, with the configured secret or the one the database holds.
pub async fn verifier(secret: Option<&str>, store: &Store) -> Result<Verifier, StartError> {
    let secret = match secret {
        Some(s) => s.to_owned(),
        None => {
            store
                .shared_secret(NONCE_SECRET, &tokens::random_token())
                .await?
        }
    };
    let nonces = Nonces::new(secret.as_bytes())
        .ok_or_else(|| StartError::Dpop("the nonce secret must be at least 32 bytes".into()))?;
    Ok(Verifier::new(nonces))
}

/// `localhost` or a loopback address (`127.x.x.x`, `[::1]`), with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request carries a `DPoP` header at all.
pub fn has_proof(headers: &HeaderMap) -> bool {
    headers.contains_key(DPOP_HEADER)
}

/// Checks the request's proof. `token_endpoint` selects the nonce answer (400 vs 401).
///
/// The `jti` is checked twice: in this instance's replay cache (memory, first), then, on a
/// shared store (PostgreSQL), by a unique insert in the database, so that a proof replayed to
/// another instance of the fleet is refused too (docs/DEPLOYMENT.md).
pub async fn check(
    state: &AppState,
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
    // Without --public-origin, the request's own Host names the origin only for a loopback
    // host (a development server): elsewhere a client picks its Host, and a proof made for
    // another server (the same token sent to a second API) would pass here.
    let origins = if !state.settings.public_origins.is_empty() {
        Origins::List(&state.settings.public_origins)
    } else if is_loopback_host(host) {
        Origins::Host(host)
    } else {
        Origins::List(&[])
    };
    let expected = Expected {
        method,
        path,
        origins,
        access_token,
        jkt,
        now: state.now(),
    };
    let proof = state
        .dpop
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
        .saturating_add(state.dpop.policy.max_age_secs)
        .saturating_add(1);
    if !state
        .store
        .claim_proof(&proof.jkt, &proof.jti, until, expected.now)
        .await?
    {
        return Err(ApiError::DpopProof(ProofError::Replayed));
    }
    Ok(proof)
}

/// At login (`path`: `/auth/login` or `/auth/otp/verify`): the thumbprint to bind the new
/// session to, if the request carries a proof. A present but invalid proof is refused, never
/// ignored.
pub async fn login_binding(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Option<String>, ApiError> {
    if !has_proof(headers) {
        if state.settings.dpop_required {
            return Err(ApiError::DpopProof(ProofError::Missing));
        }
        return Ok(None);
    }
    check(state, headers, "POST", path, None, None, true)
        .await
        .map(|p| Some(p.jkt))
}

/// At refresh, before the rotation decision: `bound` is the key the presented token's session
/// is bound to; its proof is checked. `None` back for an unbound session.
pub async fn refresh_binding(
    state: &AppState,
    headers: &HeaderMap,
    bound: Option<&str>,
) -> Result<Option<String>, ApiError> {
    match bound {
        Some(jkt) => {
            check(
                state,
                headers,
                "POST",
                "/auth/refresh",
                None,
                Some(jkt),
                true,
            )
            .await?;
            Ok(Some(jkt.to_owned()))
        }
        None if state.settings.dpop_required => Err(ApiError::InvalidGrant),
        None => Ok(None),
    }
}

/// At logout: the sessions to revoke are bound to `jkts`; a proof by that key is required
/// (one key: a cookie and a token of different keys cannot both be proven).
pub async fn check_logout(
    state: &AppState,
    headers: &HeaderMap,
    access_token: Option<&str>,
    jkts: &[&str],
) -> Result<(), ApiError> {
    let Some(first) = jkts.first() else {
        return Ok(());
    };
    if jkts.iter().any(|j| j != first) {
        return Err(ApiError::DpopProof(ProofError::KeyMismatch));
    }
    check(
        state,
        headers,
        "POST",
        "/auth/logout",
        access_token,
        Some(first),
        true,
    )
    .await
    .map(|_| ())
}

/// For protected resources: a verified token (`claims`) sent with `scheme` must be bound and
/// proven (`DPoP`), or unbound (`Bearer`, unless DPoP is required).
pub async fn check_resource(
    state: &AppState,
    headers: &HeaderMap,
    method: &str,
    path: &str,
    scheme: tokenwarden_dpop::Scheme,
    token: &str,
    claims: &AccessClaims,
) -> Result<(), ApiError> {
    use crate::tokens::Invalid;
    use tokenwarden_dpop::Scheme;
    match (scheme, &claims.cnf) {
        (Scheme::Bearer, Some(_)) => Err(ApiError::InvalidDpopToken(Invalid::Bound)),
        (Scheme::Bearer, None) if state.settings.dpop_required => {
            Err(ApiError::InvalidDpopToken(Invalid::DpopRequired))
        }
        (Scheme::Bearer, None) => Ok(()),
        (Scheme::Dpop, None) => Err(ApiError::InvalidDpopToken(Invalid::NotBound)),
        (Scheme::Dpop, Some(cnf)) => check(
            state,
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

/// Middleware: every response carries the current nonce.
pub async fn add_nonce(State(state): State<AppState>, mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&state.dpop.nonces.current(state.now())) {
        res.headers_mut().insert(NONCE_HEADER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_hosts_are_told_apart() {
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.1.2.3:443",
            "[::1]",
            "[::1]:80",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "api.example",
            "api.example:443",
            "10.0.0.1",
            "[::2]:80",
            "127.0.0.1.evil",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
