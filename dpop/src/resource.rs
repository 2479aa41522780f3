//! For axum resource servers: verify tokenwarden access tokens (EdDSA, from the auth server's
//! JWKS) and their DPoP binding in one extractor, and answer with RFC 9449 errors.
//!
//! With the `feed` feature, build it with `crate::feed::discover` (keys kept current, revoked
//! tokens refused within a second, DPoP required): what a service should run. By hand, as below,
//! the keys are those given until `set_jwks` is called again and no revocation reaches it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use axum::{Router, routing::get, middleware};
//! use tokenwarden_dpop::access::Audience;
//! use tokenwarden_dpop::resource::{Authenticated, ResourceServer, add_nonce};
//!
//! # fn jwks_from_the_auth_server() -> String { String::new() }
//! // The auth server's --dpop-nonce-secret, from the environment or a file: never in the code.
//! let secret = std::env::var("NONCE_SECRET").expect("NONCE_SECRET");
//! let rs = Arc::new(
//!     ResourceServer::new(
//!         Audience { issuer: "tokenwarden".into(), audience: "tokenwarden-api".into(), leeway_secs: 5 },
//!         secret.as_bytes(),
//!         &jwks_from_the_auth_server(), // GET /.well-known/jwks.json; set_jwks again to refresh
//!     )
//!     .unwrap()
//!     .with_origins(&["https://api.example.com"]) // what a proof's htu may name
//!     .unwrap(),
//! );
//! let app: Router = Router::new()
//!     .route("/orders", get(|Authenticated(token): Authenticated| async move { token.sub }))
//!     .layer(middleware::map_response_with_state(rs.clone(), add_nonce))
//!     .with_state(rs);
//! ```
//!
//! Share the auth server's nonce secret (`--dpop-nonce-secret`) so that the nonce a client got
//! from either server works on both. Every route that takes no `Authenticated` is public: add
//! it to each handler that needs a user.

use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts, OriginalUri, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::access::{self, AccessToken, Audience, JwksError, KeySet, TokenError};
use crate::proof::{Expected, Origins, Verifier};
use crate::{DPOP_HEADER, NONCE_HEADER, Nonces, ProofError, Scheme, authorization, dpop_challenge};

/// A resource server's verifier: keys, audience, nonces, replay cache, and the revocations the
/// auth server's feed reported (feature `feed`: crate::feed::follow).
pub struct ResourceServer {
    keys: RwLock<Arc<KeySet>>,
    /// Private: its leeway is checked once, by [`Self::new`].
    audience: Audience,
    pub verifier: Verifier,
    origins: Vec<String>,
    require_dpop: bool,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    #[cfg(feature = "feed")]
    revocations: crate::feed::Revocations,
    #[cfg(feature = "feed")]
    stale: crate::feed::StalePolicy,
}

impl std::fmt::Debug for ResourceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceServer")
            .field("audience", &self.audience)
            .field("origins", &self.origins)
            .field("require_dpop", &self.require_dpop)
            .finish_non_exhaustive()
    }
}

/// Why a [`ResourceServer`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the nonce secret must be at least 32 bytes")]
    Secret,
    #[error(transparent)]
    Jwks(#[from] JwksError),
    #[error("{0:?} is not an http(s) origin")]
    Origin(String),
    #[error("the leeway must be from 0 to {} seconds", access::MAX_LEEWAY_SECS)]
    Leeway,
}

fn system_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ResourceServer {
    /// A resource server that refuses the nonces issued before now (its replay cache starts
    /// empty: a proof accepted before a restart must not pass after it; see
    /// [`Self::refuse_nonces_before_ms`]).
    pub fn new(audience: Audience, nonce_secret: &[u8], jwks: &str) -> Result<Self, ConfigError> {
        // As the Node verifier's `leewaySecs` and the server's `--leeway-secs`: a day of
        // leeway would keep every token a day past its `exp`.
        if !(0..=access::MAX_LEEWAY_SECS).contains(&audience.leeway_secs) {
            return Err(ConfigError::Leeway);
        }
        let nonces = Nonces::new(nonce_secret)
            .ok_or(ConfigError::Secret)?
            .not_before_ms(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            );
        Ok(ResourceServer {
            keys: RwLock::new(Arc::new(KeySet::from_jwks(jwks)?)),
            audience,
            verifier: Verifier::new(nonces),
            origins: Vec::new(),
            require_dpop: true,
            clock: Box::new(system_now),
            #[cfg(feature = "feed")]
            revocations: crate::feed::Revocations::default(),
            #[cfg(feature = "feed")]
            stale: crate::feed::StalePolicy::default(),
        })
    }

    /// What to do while the revocation feed followed by crate::feed::follow cannot be heard
    /// from: by default ([`StalePolicy::default`]) every token is refused (503
    /// `temporarily_unavailable`, `Retry-After: 5`) once the view of revocations is 30 s old.
    ///
    /// [`StalePolicy::default`]: crate::feed::StalePolicy
    #[cfg(feature = "feed")]
    pub fn with_stale_policy(mut self, policy: crate::feed::StalePolicy) -> Self {
        self.stale = policy;
        self
    }

    /// The revocations the feed reported (crate::feed::follow fills them).
    #[cfg(feature = "feed")]
    pub fn revocations(&self) -> &crate::feed::Revocations {
        &self.revocations
    }

    /// The origins this server is reachable at (what `htu` may name). Without any, only a
    /// loopback `Host` (`localhost`, `127.0.0.1`, `[::1]`, a development server) is taken, since
    /// a client chooses its `Host`: set them for a server reached any other way.
    pub fn with_origins(mut self, origins: &[&str]) -> Result<Self, ConfigError> {
        for o in origins {
            let n = crate::normalize_origin(o).ok_or_else(|| ConfigError::Origin((*o).into()))?;
            self.origins.push(n);
        }
        Ok(self)
    }

    /// Refuses nonces issued before `unix_ms`, its own or the auth server's: with a replay
    /// cache in memory (empty at start), a proof accepted just before a restart would pass again
    /// after it. Clients then need one `use_dpop_nonce` round trip after a restart, as with the
    /// reference server on one instance. [`Self::new`] sets it to the time of construction;
    /// `0` accepts every nonce still in its window (a replay store shared across restarts).
    pub fn refuse_nonces_before_ms(mut self, unix_ms: i64) -> Self {
        self.verifier.nonces.refuse_before_ms(unix_ms);
        self
    }

    /// Who may accept a token, as given to [`Self::new`].
    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    /// Refuse unbound (Bearer) tokens: the default, as the Node verifier's (`allowBearer:
    /// false`). `false` accepts them as `Authorization: Bearer`: the auth server's default
    /// `--dpop optional` issues them to sign-ins without a proof, and whoever copies one can
    /// use it anywhere until it expires.
    pub fn require_dpop(mut self, required: bool) -> Self {
        self.require_dpop = required;
        self
    }

    /// Replaces the clock (unix seconds), for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Replaces the keys with a new JWKS document (poll the auth server's
    /// `/.well-known/jwks.json` every minute, or on an unknown `kid`). Returns how many keys.
    pub fn set_jwks(&self, json: &str) -> Result<usize, JwksError> {
        let set = Arc::new(KeySet::from_jwks(json)?);
        let n = set.len();
        match self.keys.write() {
            Ok(mut k) => *k = set,
            Err(p) => *p.into_inner() = set,
        }
        Ok(n)
    }

    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// The nonce to send in `DPoP-Nonce` now.
    pub fn current_nonce(&self) -> Arc<str> {
        self.verifier.nonces.current(self.now())
    }

    /// Verifies the request's access token and, for a bound token, its proof.
    pub fn authenticate(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<AccessToken, AuthError> {
        let (scheme, token) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(authorization)
            .ok_or(AuthError::MissingToken)?;
        let keys = match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let now = self.now();
        let claims = access::verify(&keys, &self.audience, token, now).map_err(|e| {
            // A key this server has not fetched yet: crate::feed::follow fetches the JWKS again.
            #[cfg(feature = "feed")]
            if e == TokenError::UnknownKey {
                self.revocations.unknown_kid.notify_one();
            }
            AuthError::InvalidToken(scheme, e.to_string().into())
        })?;
        #[cfg(feature = "feed")]
        {
            if !self.stale.allows(&self.revocations) {
                return Err(AuthError::Unavailable);
            }
            // `until` counts the auth server's leeway; this verifier's may be larger.
            let horizon = now.saturating_sub(self.audience.leeway_secs);
            if self
                .revocations
                .is_revoked(&claims.sid, &claims.jti, horizon)
            {
                return Err(AuthError::InvalidToken(scheme, REVOKED.into()));
            }
        }
        match (scheme, claims.jkt.as_deref()) {
            (Scheme::Bearer, Some(_)) => Err(AuthError::InvalidToken(Scheme::Dpop, BOUND.into())),
            (Scheme::Bearer, None) if self.require_dpop => {
                Err(AuthError::InvalidToken(Scheme::Dpop, NOT_BOUND.into()))
            }
            (Scheme::Bearer, None) => Ok(claims),
            (Scheme::Dpop, None) => Err(AuthError::InvalidToken(Scheme::Dpop, NOT_BOUND.into())),
            (Scheme::Dpop, Some(jkt)) => {
                let host = headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("");
                let origins = Origins::of_request(&self.origins, host);
                let expected = Expected {
                    method,
                    path,
                    origins,
                    access_token: Some(token),
                    jkt: Some(jkt),
                    now,
                };
                self.verifier
                    .verify_headers(
                        headers.get_all(DPOP_HEADER).iter().map(|v| v.as_bytes()),
                        &expected,
                    )
                    .map_err(AuthError::Proof)?;
                Ok(claims)
            }
        }
    }
}

/// The request headers a browser on another origin must be allowed to send (CORS
/// `Access-Control-Allow-Headers`): the token and its proof.
pub const CORS_ALLOW_HEADERS: [header::HeaderName; 3] = [
    header::AUTHORIZATION,
    header::HeaderName::from_static("dpop"),
    header::CONTENT_TYPE,
];

/// The methods a browser on another origin may send (CORS `Access-Control-Allow-Methods`):
/// every one an API of JSON resources uses.
pub const CORS_ALLOW_METHODS: [axum::http::Method; 5] = [
    axum::http::Method::GET,
    axum::http::Method::POST,
    axum::http::Method::PUT,
    axum::http::Method::PATCH,
    axum::http::Method::DELETE,
];

/// The response headers the client must be able to read across origins (CORS
/// `Access-Control-Expose-Headers`): the nonce to use next, and why a token was refused.
pub const CORS_EXPOSE_HEADERS: [header::HeaderName; 2] = [
    header::HeaderName::from_static("dpop-nonce"),
    header::WWW_AUTHENTICATE,
];

/// Description of a token whose session or id the feed reported revoked.
pub const REVOKED: &str = "the token has been revoked";

/// Description of a bound token sent as Bearer.
pub const BOUND: &str = "the token is DPoP-bound: send it as Authorization: DPoP with a DPoP proof";
/// Description of an unbound token sent as DPoP (or as Bearer when DPoP is required).
pub const NOT_BOUND: &str = "the token is not DPoP-bound";

/// A refused request, answered per RFC 6750 / RFC 9449.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer|DPoP`: both challenges, `missing_token`.
    MissingToken,
    /// The token is refused; the challenge uses the scheme.
    InvalidToken(Scheme, std::borrow::Cow<'static, str>),
    /// The proof is refused: `invalid_dpop_proof` or `use_dpop_nonce`.
    Proof(ProofError),
    /// The view of revocations is too old (the feed unreachable) and the policy fails closed:
    /// 503 `temporarily_unavailable`, `Retry-After: 5`.
    Unavailable,
}

impl From<TokenError> for AuthError {
    fn from(e: TokenError) -> Self {
        AuthError::InvalidToken(Scheme::Bearer, e.to_string().into())
    }
}

fn json_error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut res = (status, axum::Json(body)).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn with_challenge(mut res: Response, challenge: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(challenge) {
        res.headers_mut().append(header::WWW_AUTHENTICATE, v);
    }
    res
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let realm = "tokenwarden";
        match self {
            AuthError::MissingToken => {
                let res = json_error(
                    StatusCode::UNAUTHORIZED,
                    "missing_token",
                    "an Authorization: DPoP or Bearer token is required",
                );
                let res = with_challenge(res, &format!(r#"Bearer realm="{realm}""#));
                with_challenge(res, &dpop_challenge(realm, None))
            }
            AuthError::InvalidToken(scheme, why) => {
                let res = json_error(StatusCode::UNAUTHORIZED, "invalid_token", &why);
                let challenge = match scheme {
                    Scheme::Bearer => format!(
                        r#"Bearer realm="{realm}", error="invalid_token", error_description="{}""#,
                        why.replace(['"', '\\'], "")
                    ),
                    Scheme::Dpop => dpop_challenge(realm, Some(("invalid_token", &why))),
                };
                with_challenge(res, &challenge)
            }
            AuthError::Proof(e) => {
                let description = e.to_string();
                let res = json_error(StatusCode::UNAUTHORIZED, e.code(), &description);
                with_challenge(res, &dpop_challenge(realm, Some((e.code(), &description))))
            }
            AuthError::Unavailable => {
                let mut res = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the revocation status of tokens is unknown for now; retry later",
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
                res
            }
        }
    }
}

/// The extractor: a request with a valid token (and, if bound, a valid proof).
#[derive(Debug, Clone)]
pub struct Authenticated(pub AccessToken);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<ResourceServer>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let rs = Arc::<ResourceServer>::from_ref(state);
        // The path the client sent (and signed as the proof's htu): inside `Router::nest`,
        // `parts.uri` has lost the prefix, and a proof for `/orders` would pass at
        // `/api/orders` while every proof for `/api/orders` failed.
        let path = parts
            .extensions
            .get::<OriginalUri>()
            .map_or(parts.uri.path(), |u| u.0.path());
        rs.authenticate(parts.method.as_str(), path, &parts.headers)
            .map(Authenticated)
    }
}

/// `axum::middleware::map_response_with_state(rs, add_nonce)`: every response carries the
/// current `DPoP-Nonce`.
pub async fn add_nonce(State(rs): State<Arc<ResourceServer>>, mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&rs.current_nonce()) {
        res.headers_mut().insert(NONCE_HEADER, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unbound_token_sent_as_bearer_is_refused_unless_allowed() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use ed25519_dalek::Signer;
        let key = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32]);
        let x = B64.encode(key.verifying_key().to_bytes());
        let jwks = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k","x":"{x}"}}]}}"#);
        let now = system_now();
        let claims = serde_json::json!({
            "iss": "tokenwarden", "aud": "tokenwarden-api", "sub": "u", "sid": "s", "jti": "j",
            "iat": now, "nbf": now, "exp": now + 600, "email": "u@example.com", "name": "U",
        });
        let input = format!(
            "{}.{}",
            B64.encode(r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k"}"#),
            B64.encode(claims.to_string())
        );
        let token = format!(
            "{input}.{}",
            B64.encode(key.sign(input.as_bytes()).to_bytes())
        );
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {token}");
        headers.insert(
            header::AUTHORIZATION,
            bearer.parse().expect("a header value"),
        );
        let rs = |allow: Option<bool>| {
            let audience = Audience {
                issuer: "tokenwarden".into(),
                audience: "tokenwarden-api".into(),
                leeway_secs: 5,
            };
            let rs = ResourceServer::new(audience, b"a nonce secret of at least 32 bytes!!", &jwks)
                .expect("a resource server");
            match allow {
                Some(allow) => rs.require_dpop(!allow),
                None => rs,
            }
        };
        // The default, as the Node verifier's allowBearer: false.
        assert!(matches!(
            rs(None).authenticate("GET", "/orders", &headers),
            Err(AuthError::InvalidToken(..))
        ));
        assert!(
            rs(Some(true))
                .authenticate("GET", "/orders", &headers)
                .is_ok()
        );
    }

    #[test]
    fn a_leeway_over_thirty_seconds_is_refused() {
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let secret = b"a nonce secret of at least 32 bytes!!";
        for (leeway, ok) in [
            (0, true),
            (30, true),
            (31, false),
            (86_400, false),
            (-1, false),
        ] {
            let audience = Audience {
                issuer: "tokenwarden".into(),
                audience: "tokenwarden-api".into(),
                leeway_secs: leeway,
            };
            let rs = ResourceServer::new(audience, secret, jwks);
            assert_eq!(rs.is_ok(), ok, "{leeway}");
        }
    }

    #[test]
    fn a_new_resource_server_hands_out_no_nonce_from_before_it_started() {
        // Its replay cache starts empty: a nonce of before the start (a proof accepted then,
        // replayed now) must not count, so the first nonce it hands out is of its start.
        let secret = b"a nonce secret of at least 32 bytes!!";
        let started = system_now();
        let audience = Audience {
            issuer: "tokenwarden".into(),
            audience: "tokenwarden-api".into(),
            leeway_secs: 5,
        };
        let jwks = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let rs = ResourceServer::new(audience, secret, jwks).expect("a resource server");
        let issued = Nonces::new(secret)
            .and_then(|n| n.issue_time_of(&rs.current_nonce()))
            .expect("one of the secret's nonces");
        assert!(issued >= started * 1000, "{issued} < {started}000");
    }
}
