//! One OpenID Connect provider as the server talks to it: its discovery document (fetched at
//! start, and again until it answers), its JWKS (cached for [`JWKS_MAX_AGE`]; fetched again
//! sooner when a token names an unknown `kid`; at most one fetch every [`JWKS_REFETCH`],
//! whether it worked or not), and the code exchange. Nothing waits on a JWKS fetch but the
//! verifications that need it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use tokio::sync::Mutex;

use super::jwt::{self, JwtError, Verified};
use crate::clock::Clock;
use crate::config::{OidcProvider, provider_url_ok};

/// How long a request to a provider may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from a provider.
const MAX_BODY: usize = 1024 * 1024;
/// The JWKS is fetched at most this often (seconds), whatever the last fetch's outcome: a flood
/// of tokens naming unknown keys makes one request to the provider per period.
const JWKS_REFETCH: i64 = 10;
/// Keys are fetched again after this long (seconds): a key the provider withdrew (leaked,
/// rotated out) stops verifying here within it. While the provider does not answer, the keys
/// held go on verifying.
pub const JWKS_MAX_AGE: i64 = 600;
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

struct Discovery {
    metadata: Option<Arc<Metadata>>,
    tried_at: Option<Instant>,
    last_error: String,
}

/// The provider's keys as last fetched, and when (the server's clock, seconds).
#[derive(Clone, Default)]
struct Keys {
    keys: Arc<Vec<Value>>,
    fetched_at: Option<i64>,
}

/// The last JWKS fetch tried: when, and why it failed if it did.
#[derive(Default)]
struct Refetch {
    tried_at: Option<i64>,
    last_error: String,
}

pub struct Provider {
    pub config: OidcProvider,
    http: reqwest::Client,
    clock: Clock,
    discovery: Mutex<Discovery>,
    keys: std::sync::RwLock<Keys>,
    /// Held across a JWKS fetch, by the verifications that need one only.
    refetch: Mutex<Refetch>,
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

/// An endpoint the discovery document names: https, as the issuer is; plain http only on a
/// loopback host, and only for an issuer on plain http itself (a provider on this machine). An
/// https provider's document cannot send the server's requests (its keys, the code exchange
/// with the client secret) over plain http, even to this machine.
fn endpoint(doc: &Value, name: &str, issuer: &str) -> Result<String, ProviderError> {
    let url = doc[name]
        .as_str()
        .ok_or_else(|| ProviderError::Unavailable(format!("discovery: no {name}")))?;
    let https = |u: &str| {
        u.get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    };
    if !provider_url_ok(url) || (https(issuer) && !https(url)) {
        return Err(ProviderError::Unavailable(format!(
            "discovery: {name} {url:?} is not https (http only on a loopback host, for an \
             issuer on http)"
        )));
    }
    // Nor an address of a network of the server's own (loopback, private, link-local) the
    // issuer is not on: a provider's document could otherwise send the server's requests (the
    // code exchange with the client secret among them) to a service inside it.
    let host = |u: &str| {
        url::Url::parse(u)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()))
    };
    let target = host(url);
    if target.as_ref().is_some_and(inner_address) && target != host(issuer) {
        return Err(ProviderError::Unavailable(format!(
            "discovery: {name} {url:?} is an address of an inner network the issuer is not on"
        )));
    }
    Ok(url.to_owned())
}

/// An IP address that is not the internet's: an IPv4 one not global (crate::net::global_v4:
/// loopback, private, link-local, ...), an IPv6 one loopback, unspecified, unique local,
/// link-local, or a mapped IPv4 one not global. (A name is not looked up.)
fn inner_address(host: &url::Host) -> bool {
    match host {
        url::Host::Ipv4(v4) => !crate::net::global_v4(*v4),
        url::Host::Ipv6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| !crate::net::global_v4(v4))
        }
        url::Host::Domain(_) => false,
    }
}

impl Provider {
    pub fn new(config: OidcProvider, clock: Clock) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("tokenwarden-server")
            .build()
            .unwrap_or_default();
        Provider {
            config,
            http,
            clock,
            discovery: Mutex::new(Discovery {
                metadata: None,
                tried_at: None,
                last_error: String::new(),
            }),
            keys: std::sync::RwLock::default(),
            refetch: Mutex::default(),
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
            authorization_endpoint: endpoint(&doc, "authorization_endpoint", issuer)?,
            token_endpoint: endpoint(&doc, "token_endpoint", issuer)?,
            jwks_uri: endpoint(&doc, "jwks_uri", issuer)?,
            end_session_endpoint: endpoint(&doc, "end_session_endpoint", issuer).ok(),
            userinfo_endpoint: endpoint(&doc, "userinfo_endpoint", issuer).ok(),
            iss_parameter: doc["authorization_response_iss_parameter_supported"] == true,
            algorithms,
        })
    }

    /// The provider's metadata: discovered once, then kept. While it does not answer, each
    /// call after [`DISCOVERY_RETRY`] tries again (the server's other sign-in methods go on).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, ProviderError> {
        let mut state = self.discovery.lock().await;
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

    /// Verifies `token` against the provider's keys: those held, or fetched when there are none,
    /// when they are older than [`JWKS_MAX_AGE`], or when the token names an unknown `kid`.
    pub async fn verify(&self, token: &str) -> Result<Verified, ProviderError> {
        let meta = self.metadata().await?;
        let held = self.held_keys();
        let fresh = held
            .fetched_at
            .is_some_and(|t| self.clock.now() - t < JWKS_MAX_AGE);
        if fresh {
            match jwt::verify(token, &held.keys, &meta.algorithms) {
                Err(JwtError::UnknownKey(_)) => {}
                other => return Ok(other?),
            }
        }
        let keys = self.refetch_keys(&meta, held.fetched_at).await?;
        Ok(jwt::verify(token, &keys, &meta.algorithms)?)
    }

    fn held_keys(&self) -> Keys {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The keys after one fetch at most: none if another caller fetched since `seen` (its keys)
    /// or if one was tried within [`JWKS_REFETCH`] (the keys held, or why there are none). A
    /// failed fetch leaves the keys held as they were.
    async fn refetch_keys(
        &self,
        meta: &Metadata,
        seen: Option<i64>,
    ) -> Result<Arc<Vec<Value>>, ProviderError> {
        let mut refetch = self.refetch.lock().await;
        let held = self.held_keys();
        let now = self.clock.now();
        if held.fetched_at != seen || refetch.tried_at.is_some_and(|t| now - t < JWKS_REFETCH) {
            return match held.fetched_at {
                Some(_) => Ok(held.keys),
                None => Err(ProviderError::Unavailable(refetch.last_error.clone())),
            };
        }
        refetch.tried_at = Some(now);
        match self.fetch_jwks(meta).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let fetched = Keys {
                    keys: keys.clone(),
                    fetched_at: Some(now),
                };
                match self.keys.write() {
                    Ok(mut k) => *k = fetched,
                    Err(p) => *p.into_inner() = fetched,
                }
                Ok(keys)
            }
            Err(e) => {
                tracing::warn!(provider = %self.config.name, error = %e, "the provider's keys could not be fetched; the keys held (if any) go on verifying");
                refetch.last_error = e.to_string();
                match held.fetched_at {
                    Some(_) => Ok(held.keys),
                    None => Err(e),
                }
            }
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
            // Into the log: RFC 6749's characters of an `error` only (no line break a provider
            // could forge a log line with), at most 64.
            let error = doc["error"].as_str().unwrap_or("?");
            let printable = |c: &char| matches!(c, ' '..='~') && !matches!(c, '"' | '\\');
            return Err(ProviderError::Refused(
                error.chars().filter(printable).take(64).collect(),
            ));
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
        // The access token only for UserInfo, and only a Bearer one: a client must not use a
        // token type it does not understand (RFC 6749 §7.1).
        let bearer = doc["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer"));
        let access = doc["access_token"].as_str().filter(|_| bearer);
        Ok((id_token, access.map(str::to_owned)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_https_providers_endpoints_are_https_and_plain_http_stays_on_this_machine() {
        let doc = serde_json::json!({
            "a": "https://idp.example/token",
            "b": "http://127.0.0.1:9000/jwks",
            "c": "http://idp.example/jwks",
            "d": "https://user:pw@idp.example/x",
            // URL parsing drops these, the log would not: a forged line of the log.
            "e": "https://idp.example/jwks\n2026-12-07T00:00:00Z  WARN audit: x=y",
            "f": "https://idp.example/jw\tks",
            "g": " https://idp.example/jwks",
        });
        let ok = |name: &str, issuer: &str| endpoint(&doc, name, issuer).is_ok();
        assert!(ok("a", "https://idp.example"));
        assert!(ok("a", "http://127.0.0.1:9000"));
        // A compromised https provider cannot point the server at plain http, even on loopback.
        assert!(!ok("b", "https://idp.example"));
        assert!(!ok("b", "HTTPS://idp.example"));
        assert!(ok("b", "http://127.0.0.1:9000"));
        assert!(!ok("c", "http://127.0.0.1:9000"));
        assert!(!ok("d", "https://idp.example"));
        for forged in ["e", "f", "g"] {
            assert!(!ok(forged, "https://idp.example"), "{forged}");
        }
        // An address inside the server's own networks, which the issuer is not on.
        let inner = serde_json::json!({
            "p": "https://10.0.0.5/token",
            "q": "https://169.254.169.254/latest",
            "r": "https://[fd00::1]/jwks",
            "s": "https://192.168.1.2:8443/jwks",
            "t": "https://93.184.215.14/jwks",
        });
        let at = |name: &str, issuer: &str| endpoint(&inner, name, issuer).is_ok();
        for name in ["p", "q", "r", "s"] {
            assert!(!at(name, "https://idp.example"), "{name}");
        }
        assert!(at("t", "https://idp.example"), "a public address");
        assert!(at("p", "https://10.0.0.5"), "the issuer's own host");
        assert!(!ok("missing", "https://idp.example"));
    }
}
