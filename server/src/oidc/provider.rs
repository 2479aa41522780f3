//! One OpenID Connect provider as the server talks to it: its discovery document (fetched at
//! start, and again until it answers), its JWKS (cached; fetched again, at most every
//! [`JWKS_REFETCH`], when a token names an unknown `kid`), and the code exchange.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::sync::Mutex;

use super::jwt::{self, JwtError, Verified};
use crate::config::{OidcProvider, provider_url_ok};

/// How long a request to a provider may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a provider.
const MAX_BODY: usize = 1024 * 1024;
/// The JWKS is fetched again on an unknown `kid` at most this often.
const JWKS_REFETCH: Duration = Duration::from_secs(10);
/// Discovery is tried again at most this often while the provider does not answer.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Why the provider could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// It could not be reached, or answered with an error or something unreadable.
    #[error("{0}")]
    Unavailable(String),
    /// It refused the code (`invalid_grant`: used, expired, PKCE verifier wrong, ...).
    #[error("the provider refused the code: {0}")]
    Refused(String),
    /// Its answer does not verify.
    #[error(transparent)]
    Token(#[from] JwtError),
}

/// What discovery said (OpenID Connect Discovery 1.0).
#[derive(Debug, Clone)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    /// It names itself in every authorization answer (RFC 9207): an answer without `iss` is
    /// then refused.
    pub iss_parameter: bool,
    /// The provider's ID token algorithms that this server also supports.
    pub algorithms: Vec<String>,
}

struct State {
    metadata: Option<Arc<Metadata>>,
    tried_at: Option<Instant>,
    last_error: String,
    jwks: Vec<Value>,
    jwks_at: Option<Instant>,
}

pub struct Provider {
    pub config: OidcProvider,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// Reads at most [`MAX_BODY`] of a JSON answer.
async fn json(res: reqwest::Response, what: &str) -> Result<Value, ProviderError> {
    let mut res = res;
    let mut body = Vec::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .map_err(|e| ProviderError::Unavailable(format!("{what}: {e}")))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ProviderError::Unavailable(format!("{what}: over 1 MiB")));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|_| ProviderError::Unavailable(format!("{what}: not JSON")))
}

fn endpoint(doc: &Value, name: &str) -> Result<String, ProviderError> {
    let url = doc[name]
        .as_str()
        .ok_or_else(|| ProviderError::Unavailable(format!("discovery: no {name}")))?;
    if !provider_url_ok(url) {
        return Err(ProviderError::Unavailable(format!(
            "discovery: {name} {url:?} is not https (http only on a loopback host)"
        )));
    }
    Ok(url.to_owned())
}

impl Provider {
    pub fn new(config: OidcProvider) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("tokenwarden-server")
            .build()
            .unwrap_or_default();
        Provider {
            config,
            http,
            state: Mutex::new(State {
                metadata: None,
                tried_at: None,
                last_error: String::new(),
                jwks: Vec::new(),
                jwks_at: None,
            }),
        }
    }

    async fn get(&self, url: &str, what: &str) -> Result<Value, ProviderError> {
        let res = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("{what} {url}: {e}")))?;
        if !res.status().is_success() {
            return Err(ProviderError::Unavailable(format!(
                "{what} {url}: HTTP {}",
                res.status()
            )));
        }
        json(res, what).await
    }

    async fn discover(&self) -> Result<Metadata, ProviderError> {
        let issuer = &self.config.issuer;
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get(&url, "discovery").await?;
        // OpenID Connect Discovery §4.3: the issuer must be exactly the one configured.
        if doc["issuer"].as_str() != Some(issuer.as_str()) {
            return Err(ProviderError::Unavailable(format!(
                "discovery: the document's issuer {:?} is not {issuer:?}",
                doc["issuer"]
            )));
        }
        let algorithms: Vec<String> = doc["id_token_signing_alg_values_supported"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|a| jwt::SUPPORTED.contains(a))
            .map(str::to_owned)
            .collect();
        if algorithms.is_empty() {
            return Err(ProviderError::Unavailable(format!(
                "discovery: none of id_token_signing_alg_values_supported {} is supported ({})",
                doc["id_token_signing_alg_values_supported"],
                jwt::SUPPORTED.join(", ")
            )));
        }
        Ok(Metadata {
            issuer: issuer.clone(),
            authorization_endpoint: endpoint(&doc, "authorization_endpoint")?,
            token_endpoint: endpoint(&doc, "token_endpoint")?,
            jwks_uri: endpoint(&doc, "jwks_uri")?,
            end_session_endpoint: endpoint(&doc, "end_session_endpoint").ok(),
            userinfo_endpoint: endpoint(&doc, "userinfo_endpoint").ok(),
            iss_parameter: doc["authorization_response_iss_parameter_supported"] == true,
            algorithms,
        })
    }

    /// The provider's metadata: discovered once, then kept. While it does not answer, each
    /// call after [`DISCOVERY_RETRY`] tries again (the server's other sign-in methods go on).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, ProviderError> {
        let mut state = self.state.lock().await;
        if let Some(m) = &state.metadata {
            return Ok(m.clone());
        }
        if state
            .tried_at
            .is_some_and(|t| t.elapsed() < DISCOVERY_RETRY)
        {
            return Err(ProviderError::Unavailable(state.last_error.clone()));
        }
        state.tried_at = Some(Instant::now());
        match self.discover().await {
            Ok(m) => {
                tracing::info!(provider = %self.config.name, issuer = %m.issuer, "OpenID provider discovered");
                let m = Arc::new(m);
                state.metadata = Some(m.clone());
                Ok(m)
            }
            Err(e) => {
                tracing::warn!(provider = %self.config.name, error = %e, "OpenID provider unavailable; sign-in with it fails until it answers (other sign-in methods are unaffected)");
                state.last_error = e.to_string();
                Err(e)
            }
        }
    }

    /// Verifies `token` against the provider's keys, fetching them first, or again for an
    /// unknown `kid` (at most every [`JWKS_REFETCH`]).
    pub async fn verify(&self, token: &str) -> Result<Verified, ProviderError> {
        let meta = self.metadata().await?;
        let mut state = self.state.lock().await;
        if state.jwks_at.is_none() {
            state.jwks = self.fetch_jwks(&meta).await?;
            state.jwks_at = Some(Instant::now());
        }
        match jwt::verify(token, &state.jwks, &meta.algorithms) {
            Err(JwtError::UnknownKey(_))
                if state.jwks_at.is_some_and(|t| t.elapsed() >= JWKS_REFETCH) =>
            {
                state.jwks = self.fetch_jwks(&meta).await?;
                state.jwks_at = Some(Instant::now());
                Ok(jwt::verify(token, &state.jwks, &meta.algorithms)?)
            }
            other => Ok(other?),
        }
    }

    async fn fetch_jwks(&self, meta: &Metadata) -> Result<Vec<Value>, ProviderError> {
        let doc = self.get(&meta.jwks_uri, "jwks").await?;
        doc["keys"]
            .as_array()
            .cloned()
            .ok_or_else(|| ProviderError::Unavailable("jwks: no keys".into()))
    }

    /// Exchanges the authorization code (`client_secret_basic`, PKCE): the ID token, and the
    /// access token if any (for the UserInfo endpoint only; it is not kept).
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<(String, Option<String>), ProviderError> {
        let meta = self.metadata().await?;
        // RFC 6749 §2.3.1: both form-urlencoded before the Basic encoding.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            enc(&self.config.client_id),
            enc(&self.config.client_secret)
        ));
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "authorization_code")
            .append_pair("code", code)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_verifier", verifier)
            .finish();
        let res = self
            .http
            .post(&meta.token_endpoint)
            .header("authorization", format!("Basic {basic}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("token endpoint: {e}")))?;
        let status = res.status();
        let doc = json(res, "token endpoint").await?;
        if status.is_client_error() {
            let error = doc["error"].as_str().unwrap_or("?");
            return Err(ProviderError::Refused(error.chars().take(64).collect()));
        }
        if !status.is_success() {
            return Err(ProviderError::Unavailable(format!(
                "token endpoint: HTTP {status}"
            )));
        }
        let id_token = doc["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Refused("no id_token in the answer".into()))?;
        Ok((id_token, doc["access_token"].as_str().map(str::to_owned)))
    }

    /// The UserInfo endpoint's claims (OpenID Connect Core §5.3), when the provider has one and
    /// answers with JSON; `None` otherwise (the ID token's claims then stand alone).
    pub async fn userinfo(&self, access_token: &str) -> Option<serde_json::Map<String, Value>> {
        let meta = self.metadata().await.ok()?;
        let url = meta.userinfo_endpoint.as_deref()?;
        let res = self
            .http
            .get(url)
            .bearer_auth(access_token)
            .header("accept", "application/json")
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        match json(res, "userinfo").await.ok()? {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
}
