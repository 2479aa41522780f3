//! Sign-in with OpenID Connect providers (`--oidc`): this server is the provider's client
//! (authorization code flow with PKCE, `client_secret_basic`), and the session it opens is an
//! ordinary tokenwarden session, bound to the page's DPoP key when the page sent its
//! thumbprint (`dpop_jkt`, RFC 9449 §10). docs/PROTOCOL.md, "Federated sign-in".
//!
//! - `GET /auth/oidc/providers`: the configured providers' names (the demo's buttons).
//! - `GET /auth/oidc/{name}/start?return_to=PATH&dpop_jkt=JKT`: 302 to the provider, with
//!   `state`, `nonce` and a PKCE challenge; the flow is stored (hashed state, single use, ten
//!   minutes) and bound to this browser by the `__Host-tw_oidc` cookie (`SameSite=Lax`).
//! - `GET /auth/oidc/{name}/callback`: takes the flow (this browser's, once), exchanges the
//!   code, verifies the ID token, finds or creates the user by (issuer, `sub`), opens the
//!   session and answers 303 to `return_to` with the refresh cookie, or with
//!   `tw_error=<FederationError>` when it did not sign in. Without a flow to take (no state,
//!   another browser's, used, expired) there is no `return_to` to trust: a plain error page.
//! - `POST /auth/oidc/{name}/backchannel-logout`: OpenID Connect Back-Channel Logout 1.0.
//! - `GET /auth/oidc/{name}/end-session`: 303 to the provider's `end_session_endpoint`
//!   (RP-initiated logout), offered after a logout with us.

pub mod jwt;
pub mod provider;

use std::collections::HashMap;
use std::sync::Arc;

use crate::extract::PathParam;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokenwarden::proto::{CookieName, FEDERATION_ERROR_PARAM, FederationError};

use crate::clock::Clock;
use crate::config::OidcProvider;
use crate::cookies;
use crate::error::ApiError;
use crate::extract::user_agent;
use crate::net::ClientIp;
use crate::sessions::Sessions;
use crate::store::oidc::{Federated, Linked};
use crate::store::oidc::{Flow, NewFlow};
use crate::store::{NewUser, Store, User};
use crate::throttle::Throttle;
use crate::tokens;
use provider::{Provider, ProviderError};

/// How long a sign-in may take at the provider.
const FLOW_SECS: i64 = 600;
/// Leeway on the provider's `iat`, `exp`, `nbf` (its clock is not ours).
const LEEWAY: i64 = 60;
/// An ID token or logout token issued longer ago than this is refused.
const MAX_AGE: i64 = 600;
/// The `events` member of a logout token (Back-Channel Logout 1.0 §2.4).
const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// Sign-ins started per client address per minute (each writes a row).
const STARTS_PER_MINUTE: u32 = 30;
/// How the address of an account a provider opened without a verified one ends
/// (`<hash>@<provider>.oidc.invalid`): an address no one else can claim, and no mailbox.
pub const NO_MAILBOX: &str = ".oidc.invalid";

#[derive(Clone)]
pub struct Oidc(Arc<Inner>);

struct Inner {
    providers: HashMap<String, Arc<Provider>>,
    store: Store,
    sessions: Sessions,
    clock: Clock,
    /// The first `--public-origin`: where the provider sends the browser back.
    public_origin: Option<String>,
    /// This server serves TLS itself (its loopback origin is `https://`).
    https: bool,
    dpop_required: bool,
    starts: Throttle,
    /// For the notice of a provider linked to an existing account.
    codes: crate::otp::Codes,
}

impl Oidc {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        providers: &[OidcProvider],
        store: Store,
        sessions: Sessions,
        clock: Clock,
        public_origin: Option<String>,
        https: bool,
        dpop_required: bool,
        codes: crate::otp::Codes,
    ) -> Self {
        Oidc(Arc::new(Inner {
            providers: providers
                .iter()
                .map(|p| {
                    let provider = Provider::new(p.clone(), clock.clone());
                    (p.name.clone(), Arc::new(provider))
                })
                .collect(),
            store,
            sessions,
            clock,
            public_origin,
            https,
            dpop_required,
            starts: Throttle::new("oidc_start", STARTS_PER_MINUTE),
            codes,
        }))
    }

    /// Discovers every provider once, in the background: one that does not answer is
    /// reported in the log and tried again at its first sign-in (crate::oidc::provider).
    pub fn discover_all(&self) {
        for p in self.0.providers.values() {
            let p = p.clone();
            tokio::spawn(async move {
                let _ = p.metadata().await;
            });
        }
    }

    fn provider(&self, name: &str) -> Result<&Arc<Provider>, ApiError> {
        self.0.providers.get(name).ok_or(ApiError::NotFound)
    }
}

fn sha256_hex(s: &str) -> String {
    tokens::hash_refresh_token(s)
}

/// The page a failed callback shows when there is no `return_to` to send the browser to.
fn error_page(status: StatusCode, message: &'static str) -> Response {
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Sign-in failed</title>\
         <h1>Sign-in failed</h1><p>{message}</p><p><a href=\"/\">Back to the start page</a></p>"
    );
    let mut res = (status, body).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    res
}

/// A same-origin path to send the browser back to: `/` followed by no second `/` or `\`,
/// no backslash, fragment or control character anywhere (no open redirect).
pub fn safe_return_to(p: &str) -> bool {
    p.len() <= 512
        && p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.contains('\\')
        && !p.contains('#')
        && p.bytes().all(|b| b.is_ascii_graphic())
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut res = status.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    no_store(res)
}

/// `return_to` with `tw_error=code` in its query.
fn with_error(return_to: &str, error: FederationError) -> String {
    let sep = if return_to.contains('?') { '&' } else { '?' };
    format!(
        "{return_to}{sep}{FEDERATION_ERROR_PARAM}={}",
        error.as_str()
    )
}

fn flow_cookie(value: &str, max_age: i64) -> String {
    format!(
        "{}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax",
        CookieName::OidcFlow.as_str()
    )
}

fn append_cookie(mut res: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// The flow cookie, as every cookie is read (crate::cookies::one): none when absent or named
/// twice (a planted one beside the browser's must not pick the flow).
fn flow_binding(headers: &HeaderMap) -> Option<&str> {
    crate::cookies::one(headers, CookieName::OidcFlow.as_str())
        .ok()
        .flatten()
}

/// Where the provider sends the browser back: on the first `--public-origin`, or on the
/// request's own host when it is a loopback one (a development server); elsewhere a client
/// picks its `Host`, so without `--public-origin` there is none.
fn redirect_uri(oidc: &Oidc, headers: &HeaderMap, name: &str) -> Option<String> {
    let origin = match &oidc.0.public_origin {
        Some(o) => o.clone(),
        None => crate::net::loopback_origin(headers, oidc.0.https)?,
    };
    Some(format!(
        "{origin}{}/{name}/callback",
        tokenwarden::proto::OIDC_PATH
    ))
}

/// `GET /auth/oidc/providers`.
pub async fn providers(State(oidc): State<Oidc>) -> Response {
    let mut names: Vec<&String> = oidc.0.providers.keys().collect();
    names.sort();
    let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    no_store(axum::Json(json!({ "providers": list })).into_response())
}

#[derive(Deserialize)]
pub struct StartQuery {
    return_to: Option<String>,
    dpop_jkt: Option<String>,
    /// Passed on to the provider (OpenID Connect Core §3.1.2.1): `0` asks it to have the user
    /// sign in again, for a session recent enough for a step-up's actions.
    max_age: Option<String>,
}

/// The longest `max_age` passed on to a provider: a day.
const MAX_MAX_AGE: u32 = 86_400;

fn is_thumbprint(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `GET /auth/oidc/{name}/start`.
pub async fn start(
    State(oidc): State<Oidc>,
    PathParam(name): PathParam<String>,
    client: ClientIp,
    headers: HeaderMap,
    query: Result<Query<StartQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let provider = oidc.provider(&name)?.clone();
    // Started by another site's page (a link, a form, a script navigating the top window):
    // refused. That page would choose `dpop_jkt`, and the provider, signing a user in without
    // asking, would bring back a session of the user's own account bound to the other site's
    // key, in place of the user's. The app's pages are same-origin or same-site (the refresh
    // cookie is `SameSite=Strict`: an app on another site cannot use this server), and a
    // browser too old to send `Sec-Fetch-Site` is let through.
    if from_another_site(&headers) {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            "A sign-in must start from this site's pages.",
        ));
    }
    let Ok(Query(q)) = query else {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "The sign-in link is malformed.",
        ));
    };
    let return_to = q.return_to.unwrap_or_else(|| "/".into());
    if !safe_return_to(&return_to) {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "The page to return to must be a path on this site.",
        ));
    }
    // Digits only (no sign, no fraction), as the provider reads it.
    let max_age = match q.max_age.as_deref() {
        None => None,
        Some(m) => match m.parse::<u32>() {
            Ok(n) if n <= MAX_MAX_AGE && m.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => {
                return Ok(error_page(
                    StatusCode::BAD_REQUEST,
                    "max_age must be a whole number of seconds, at most 86400.",
                ));
            }
        },
    };
    let jkt = q.dpop_jkt.filter(|j| !j.is_empty());
    if jkt.as_deref().is_some_and(|j| !is_thumbprint(j)) {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "The key thumbprint (dpop_jkt) is malformed.",
        ));
    }
    if jkt.is_none() && oidc.0.dpop_required {
        return Ok(error_page(
            StatusCode::BAD_REQUEST,
            "This server requires DPoP: the sign-in must name the page's key (dpop_jkt).",
        ));
    }
    let now = oidc.0.clock.now();
    if let Some(retry_after) = oidc
        .0
        .starts
        .check(&oidc.0.store, &client.key(), now)
        .await?
    {
        return Err(ApiError::TooManyRequests { retry_after });
    }
    let Some(redirect_uri) = redirect_uri(&oidc, &headers, &name) else {
        tracing::error!(provider = %name, "federated sign-in needs --public-origin on a server not reached through a loopback address");
        return Ok(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "This server is not configured for sign-in with a provider (no public origin).",
        ));
    };
    let meta = match provider.metadata().await {
        Ok(m) => m,
        Err(_) => {
            return Ok(redirect(
                StatusCode::SEE_OTHER,
                &with_error(&return_to, FederationError::ProviderUnavailable),
            ));
        }
    };
    let (state, nonce, verifier, binding) = (
        tokens::random_token(),
        tokens::random_token(),
        tokens::random_token(),
        tokens::random_token(),
    );
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let flow = Flow {
        provider: name.clone(),
        nonce: nonce.clone(),
        pkce_verifier: verifier,
        return_to,
        redirect_uri: redirect_uri.clone(),
        dpop_jkt: jkt,
        expires_at: now + FLOW_SECS,
    };
    oidc.0
        .store
        .put_oidc_flow(&NewFlow {
            state_hash: &sha256_hex(&state),
            binding_hash: &sha256_hex(&binding),
            flow: &flow,
            now,
        })
        .await?;
    let Ok(mut url) = url::Url::parse(&meta.authorization_endpoint) else {
        return Ok(redirect(
            StatusCode::SEE_OTHER,
            &with_error(&flow.return_to, FederationError::ProviderUnavailable),
        ));
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &provider.config.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", &provider.config.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    if let Some(prompt) = &provider.config.prompt {
        url.query_pairs_mut().append_pair("prompt", prompt);
    }
    if let Some(max_age) = max_age {
        url.query_pairs_mut()
            .append_pair("max_age", &max_age.to_string());
    }
    let res = redirect(StatusCode::FOUND, url.as_str());
    Ok(append_cookie(res, &flow_cookie(&binding, FLOW_SECS)))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

/// Why a callback did not sign in: what the page is told, and what the log says.
struct Failed(FederationError, String);

impl From<ProviderError> for Failed {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Unavailable(why) => Failed(FederationError::ProviderUnavailable, why),
            e => Failed(FederationError::FederationFailed, e.to_string()),
        }
    }
}

fn failed(why: impl Into<String>) -> Failed {
    Failed(FederationError::FederationFailed, why.into())
}

/// `GET /auth/oidc/{name}/callback`.
pub async fn callback(
    State(oidc): State<Oidc>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
    query: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let provider = oidc.provider(&name)?.clone();
    // The flow cookie is cleared only once its flow is taken: a refusal clears nothing, or any
    // site could end a sign-in under way by sending the browser here (a top-level navigation
    // carries and obeys the Lax cookie) before the provider sends it back.
    let refused = |message| error_page(StatusCode::BAD_REQUEST, message);
    const NO_FLOW: &str = "This sign-in cannot be completed: it was already used, it took too \
                           long, or it was started in another browser. Please start again.";
    let Ok(Query(q)) = query else {
        return Ok(refused("The provider's answer is malformed."));
    };
    let (Some(state), Some(binding)) = (q.state.as_deref(), flow_binding(&headers)) else {
        return Ok(refused(NO_FLOW));
    };
    let now = oidc.0.clock.now();
    let Some(flow) = oidc
        .0
        .store
        .take_oidc_flow(&sha256_hex(state), &sha256_hex(binding), &name, now)
        .await?
    else {
        tracing::info!(target: "audit", event = "oidc_refused", provider = %name, reason = "no live flow for this state and browser");
        return Ok(refused(NO_FLOW));
    };
    let res = match finish(&oidc, &provider, &flow, &q, &headers, now).await {
        Ok(issued) => {
            let res = redirect(StatusCode::SEE_OTHER, &flow.return_to);
            cookies::set(res, &issued.refresh_token, issued.refresh_max_age)
        }
        Err(Failed(code, why)) => {
            tracing::warn!(target: "audit", event = "oidc_refused", provider = %name, code = code.as_str(), reason = %why);
            redirect(StatusCode::SEE_OTHER, &with_error(&flow.return_to, code))
        }
    };
    Ok(append_cookie(res, &flow_cookie("", 0)))
}

/// The rest of a callback once its flow is taken: the session, or why not.
async fn finish(
    oidc: &Oidc,
    provider: &Provider,
    flow: &Flow,
    q: &CallbackQuery,
    headers: &HeaderMap,
    now: i64,
) -> Result<crate::sessions::Issued, Failed> {
    let meta = provider.metadata().await?;
    // RFC 9207: an `iss` in the answer names the provider that sent it (mix-up attacks).
    match q.iss.as_deref() {
        Some(iss) if iss != meta.issuer => {
            return Err(failed("the answer's iss is another provider's"));
        }
        None if meta.iss_parameter => {
            return Err(failed(
                "the provider sends iss with its answers (RFC 9207) and this one had none",
            ));
        }
        _ => {}
    }
    if let Some(error) = q.error.as_deref() {
        let code = match error {
            "access_denied"
            | "login_required"
            | "consent_required"
            | "interaction_required"
            | "account_selection_required" => FederationError::AccessDenied,
            "temporarily_unavailable" | "server_error" => FederationError::ProviderUnavailable,
            _ => FederationError::FederationFailed,
        };
        return Err(Failed(code, format!("the provider answered {error:?}")));
    }
    let code = q.code.as_deref().ok_or_else(|| failed("no code"))?;
    let (id_token, access_token) = provider
        .exchange(code, &flow.pkce_verifier, &flow.redirect_uri)
        .await?;
    let verified = provider.verify(&id_token).await?;
    let claims = id_token_claims(
        &verified.claims,
        &meta.issuer,
        &provider.config.client_id,
        &flow.nonce,
        now,
    )
    .map_err(failed)?;
    // Providers that keep the profile out of the ID token (Core §5.4) give it at UserInfo,
    // whose `sub` must be the ID token's (§5.3.2).
    let mut claims = claims;
    if claims.email.is_none()
        && let Some(token) = access_token
        && let Some(info) = provider.userinfo(&token).await
        && string(&info, "sub") == Some(claims.sub.as_str())
    {
        claims.email = provider_email(&info);
        claims.email_verified = info.get("email_verified").and_then(Value::as_bool) == Some(true);
        if claims.name.is_none() {
            claims.name = display_name(&info);
        }
    }
    let user = user_for(oidc, provider, &meta.issuer, &claims, now).await?;
    let auth_time = recent_auth_time(&claims, flow.expires_at - FLOW_SECS, now);
    let federated = Federated {
        issuer: &meta.issuer,
        subject: &claims.sub,
        idp_sid: claims.sid.as_deref(),
    };
    oidc.0
        .sessions
        .open_federated(
            &user,
            user_agent(headers),
            flow.dpop_jkt.as_deref(),
            federated,
            auth_time,
        )
        .await
        .map_err(|e| {
            // This server's database failing (or busy) is not the provider's answer failing
            // to verify: the page says to try again, as for a failure while linking the user.
            let code = match e {
                ApiError::Internal(_) | ApiError::Busy { .. } | ApiError::Unavailable => {
                    FederationError::ProviderUnavailable
                }
                _ => FederationError::FederationFailed,
            };
            Failed(code, format!("opening the session: {e:?}"))
        })
}

/// What the server keeps of a verified ID token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdClaims {
    /// When the user signed in at the provider (`auth_time`), if it says, by the provider's
    /// clock: what makes the session recent for a step-up's actions (`--step-up-max-age-secs`)
    /// when it falls within the flow ([`recent_auth_time`]), never the callback's time (a
    /// provider that signs the user in without asking would make any sign-in a script starts
    /// "recent").
    pub auth_time: Option<i64>,
    /// When the provider issued the ID token (`iat`), by its clock.
    pub iat: i64,
    pub sub: String,
    pub sid: Option<String>,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// Claim `name` as a time in unix seconds (a fraction dropped: RFC 7519's NumericDate may have
/// one); none unless within [0, 2^40] (a provider's `i64::MAX` would overflow every comparison
/// that adds a leeway to it). A claim that is there and is not such a time is refused by the
/// callers, never taken for an absent one.
fn int(c: &Map<String, Value>, name: &str) -> Option<i64> {
    let v = c.get(name)?;
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f.floor() as i64))
        .filter(|t| (0..=1 << 40).contains(t))
}

/// Claim `name` as a string; one holding U+0000 counts as absent (the database refuses it).
fn string<'a>(c: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    c.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.contains('\0'))
}

/// The `email` of an ID token or a UserInfo answer, as an address typed here must be
/// ([`crate::password::acceptable_email`]; a new account's, [`crate::password::new_address`]
/// too, where one is made): one that is not (a zero-width or text-direction character that
/// makes it look like another's, a control character, a quoted local part) is left out, as if
/// the provider had sent none: the account gets an address no one can claim.
/// So is one of those addresses ([`NO_MAILBOX`]): another provider naming one, marked verified,
/// would be linked by it into the account it stands for. So is one with a character past ASCII
/// that lower-cases to ASCII: lower-casing, as every address here is, would make another
/// mailbox's address of it, which the provider never verified (`\u{212A}im@corp.com`, with the
/// Kelvin sign, is `kim@corp.com`; `\u{130}` is `i` and a combining dot).
fn provider_email(c: &Map<String, Value>) -> Option<String> {
    let to_ascii = |c: char| !c.is_ascii() && c.to_lowercase().any(|l| l.is_ascii());
    string(c, "email")
        .filter(|raw| !raw.chars().any(to_ascii))
        .map(crate::password::normalize_email)
        .filter(|e| crate::password::acceptable_email(e) && !e.ends_with(NO_MAILBOX))
}

/// `aud` names `client_id` (a string, or an array holding it).
fn audience_ok(c: &Map<String, Value>, client_id: &str) -> bool {
    match c.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    }
}

/// The checks of OpenID Connect Core §3.1.3.7 on an ID token whose signature verified.
pub fn id_token_claims(
    c: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: i64,
) -> Result<IdClaims, &'static str> {
    if string(c, "iss") != Some(issuer) {
        return Err("the ID token's iss is not the provider's");
    }
    if !audience_ok(c, client_id) {
        return Err("the ID token's aud does not name this client");
    }
    let several = matches!(c.get("aud"), Some(Value::Array(l)) if l.len() > 1);
    match string(c, "azp") {
        Some(azp) if azp != client_id => return Err("the ID token's azp is another client"),
        None if several => return Err("the ID token names several audiences and no azp"),
        _ => {}
    }
    let (Some(exp), Some(iat)) = (int(c, "exp"), int(c, "iat")) else {
        return Err("the ID token has no exp or iat");
    };
    if exp + LEEWAY <= now {
        return Err("the ID token has expired");
    }
    // An nbf that is there must be a time, and not ahead.
    let nbf_ahead = c.contains_key("nbf") && int(c, "nbf").is_none_or(|nbf| nbf - LEEWAY > now);
    if iat - LEEWAY > now || nbf_ahead {
        return Err("the ID token is from the future");
    }
    if iat + MAX_AGE < now {
        return Err("the ID token was issued too long ago");
    }
    let auth_time = match c.get("auth_time") {
        None | Some(Value::Null) => None,
        Some(_) => match int(c, "auth_time") {
            Some(t) if t - LEEWAY <= now => Some(t),
            Some(_) => return Err("the ID token's auth_time is in the future"),
            None => return Err("the ID token's auth_time is not a time"),
        },
    };
    if string(c, "nonce") != Some(nonce) {
        return Err("the ID token's nonce is not this sign-in's");
    }
    let sub = string(c, "sub")
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or("the ID token has no usable sub")?;
    Ok(IdClaims {
        auth_time,
        iat,
        sub: sub.to_owned(),
        sid: string(c, "sid")
            .filter(|s| s.len() <= 255)
            .map(str::to_owned),
        email: provider_email(c),
        email_verified: c.get("email_verified").and_then(Value::as_bool) == Some(true),
        name: display_name(c),
    })
}

/// How long a provider may take between the callback's start here and issuing the ID token (the
/// code exchange): the flow's start, as the provider's clock would have read it, is estimated
/// from its `iat` at most this much late.
const EXCHANGE_SLACK: i64 = 10;

/// When the user proved who they are for this session, by this server's clock: the provider's
/// `auth_time` if it falls within the flow that `started` here (the callback began at `now`),
/// else `None` (not recent). Compared on the provider's clock, with its `iat` for "now" there: a
/// provider whose clock runs a minute ahead would otherwise count a sign-in made a minute before
/// the flow (through another of its clients, say: a script in the page that started this flow
/// without asking would get a session recent enough for a step-up's actions), and one whose clock
/// runs behind would never count the fresh sign-in `maxAge: 0` asked for. Then moved to this
/// clock, never later than `now`.
fn recent_auth_time(claims: &IdClaims, started: i64, now: i64) -> Option<i64> {
    let at = claims.auth_time?;
    let started_there = claims.iat - (now - started).max(0);
    (at >= started_there - EXCHANGE_SLACK).then(|| (at + (now - claims.iat)).min(now))
}

/// The `name` of an ID token or a UserInfo answer, trimmed to 100 characters. One that cannot
/// be shown here (control or text-direction characters, or nothing) is left out: the account is
/// named by the address's local part, as without one.
fn display_name(c: &serde_json::Map<String, Value>) -> Option<String> {
    string(c, "name")
        .map(|n| n.trim().chars().take(100).collect::<String>())
        .filter(|n| crate::store::valid_name(n))
}

/// The user of (issuer, sub): known, linked by a verified email (`link=verified-email`), or
/// new.
async fn user_for(
    oidc: &Oidc,
    provider: &Provider,
    issuer: &str,
    claims: &IdClaims,
    now: i64,
) -> Result<User, Failed> {
    let store = &oidc.0.store;
    let db =
        |e: crate::store::StoreError| Failed(FederationError::ProviderUnavailable, e.to_string());
    if let Some(user) = store
        .user_of_identity(issuer, &claims.sub)
        .await
        .map_err(db)?
    {
        return Ok(user);
    }
    let name = &provider.config.name;
    let made_up = || {
        format!(
            "{}@{name}{NO_MAILBOX}",
            &sha256_hex(&format!("{issuer}\n{}", claims.sub))[..32]
        )
    };
    // No address, or one the provider does not say it verified: the account gets one that no
    // one else can claim. (An unverified address would let its real owner, signing in later
    // by code or resetting the password, into the account the provider's user opened.)
    let verified = claims.email.as_ref().filter(|_| claims.email_verified);
    let email = verified.cloned().unwrap_or_else(made_up);
    let user = match store.user_by_email(&email).await.map_err(db)? {
        // Linked by its address, an account whose sign-ins need a second factor would be
        // signed into on the mailbox alone (what a provider's verified address proves): not
        // that one. Nor one whose address was never shown to be its owner's: whoever opened it
        // (an import, a legacy backend that checks no address) may hold its password, and the
        // provider's user would work in an account someone else signs into; nor, for the same
        // reason, one verified since whose password such a stranger may have chosen (the
        // owner's first sign-in by a code ends it). (Once linked, a provider's sign-in is the
        // provider's to protect.)
        Some((user, _))
            if provider.config.link_verified_email
                && verified.is_some()
                && user.email_verified
                && !store.second_factor_required(&user.id).await.map_err(db)?
                && store.password_mark(&user.id).await.map_err(db)? != 1 =>
        {
            user
        }
        Some(_) => {
            return Err(Failed(
                FederationError::AccountNotLinked,
                "the provider's address is another account's".into(),
            ));
        }
        None => {
            // A new account holds the provider's address only if the provider is trusted with
            // addresses (`link=verified-email`). One that is not could otherwise open an account
            // under someone else's address, marked verified, before its owner has one here: the
            // owner, signing in later by a code or through a trusted provider, would then work
            // in an account the provider's user also signs into.
            // (And one a new account may have: an existing account is linked by the address it
            // has, whatever rule new ones follow since.)
            let trusted = verified
                .filter(|e| provider.config.link_verified_email && crate::password::new_address(e));
            let email = trusted.cloned().unwrap_or_else(made_up);
            let id = tokens::random_id();
            let display = claims
                .name
                .clone()
                // (The provider's address, trusted or not, names it better than a made-up one.)
                .unwrap_or_else(|| crate::store::name_from_address(verified.unwrap_or(&email)));
            let new = NewUser {
                id: &id,
                email: &email,
                roles: &["user".to_owned()],
                name: &display,
                password_hash: "",
                // Only the provider's own address is verified: never the one made up here.
                email_verified_at: trusted.is_some().then_some(now),
                password_unproved: false,
                claims: "{}",
                now,
            };
            // The account and its link in one transaction.
            let linked = store
                .create_linked_user(&new, issuer, &claims.sub, name)
                .await
                .map_err(db)?;
            match linked {
                Linked::Created => {}
                Linked::AddressTaken => {
                    return Err(Failed(
                        FederationError::AccountNotLinked,
                        "the address was taken meanwhile".into(),
                    ));
                }
                // Another callback linked it first: that one's user.
                Linked::IdentityTaken => {
                    return store
                        .user_of_identity(issuer, &claims.sub)
                        .await
                        .map_err(db)?
                        .ok_or_else(|| failed("the identity vanished"));
                }
            }
            tracing::info!(target: "audit", event = "oidc_linked", provider = %name, user = %id);
            return store
                .user_by_id(&id)
                .await
                .map_err(db)?
                .ok_or_else(|| failed("the new user vanished"));
        }
    };
    if !store
        .link_identity(issuer, &claims.sub, &user.id, name, now)
        .await
        .map_err(db)?
    {
        // Another callback linked it first: that one's user. Or the account is another
        // identity's at this provider: the address was given to someone else since (a
        // colleague's former address), who must not sign into the account it opened.
        return match store
            .user_of_identity(issuer, &claims.sub)
            .await
            .map_err(db)?
        {
            Some(user) => Ok(user),
            None => Err(Failed(
                FederationError::AccountNotLinked,
                "the account is another identity's at this provider".into(),
            )),
        };
    }
    tracing::info!(target: "audit", event = "oidc_linked", provider = %name, user = %user.id);
    // An account that signed in otherwise until now: its owner hears of it (a provider that
    // vouched for an address its user does not hold would be caught here).
    oidc.0
        .codes
        .notify(&user.id, crate::otp::Notice::ProviderLinked(name.clone()));
    Ok(user)
}

#[derive(Deserialize)]
pub struct BackchannelForm {
    logout_token: String,
}

fn backchannel_error(description: &str) -> Response {
    let mut res = (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "invalid_request", "error_description": description })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// What a logout token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub jti: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
    /// Until when its `jti` must be remembered.
    pub until: i64,
}

/// The checks of Back-Channel Logout 1.0 §2.6 on a logout token whose signature verified.
pub fn logout_token_claims(
    header: &Map<String, Value>,
    c: &Map<String, Value>,
    issuer: &str,
    client_id: &str,
    now: i64,
) -> Result<LogoutClaims, &'static str> {
    // `logout+jwt` (Back-Channel Logout 1.0 §2.4), or `JWT` as providers sent before it
    // (Keycloak < 25): what tells a logout token from an ID token is its `events` and the
    // absence of `nonce`, both checked below.
    if let Some(typ) = string(header, "typ")
        && !["logout+jwt", "application/logout+jwt", "JWT"]
            .iter()
            .any(|t| typ.eq_ignore_ascii_case(t))
    {
        return Err("the logout token's typ is not logout+jwt");
    }
    if string(c, "iss") != Some(issuer) {
        return Err("the logout token's iss is not the provider's");
    }
    if !audience_ok(c, client_id) {
        return Err("the logout token's aud does not name this client");
    }
    let iat = int(c, "iat").ok_or("the logout token has no iat")?;
    if iat - LEEWAY > now || iat + MAX_AGE < now {
        return Err("the logout token's iat is out of range");
    }
    if c.contains_key("exp") && int(c, "exp").is_none_or(|exp| exp + LEEWAY <= now) {
        return Err("the logout token has expired");
    }
    if !c
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
        .is_some_and(Value::is_object)
    {
        return Err("the logout token has no back-channel logout event");
    }
    if c.contains_key("nonce") {
        return Err("a logout token carries no nonce");
    }
    let jti = string(c, "jti")
        .filter(|j| !j.is_empty() && j.len() <= 255)
        .ok_or("the logout token has no jti")?;
    let short = |name| {
        string(c, name)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .map(str::to_owned)
    };
    let (sub, sid) = (short("sub"), short("sid"));
    if sub.is_none() && sid.is_none() {
        return Err("the logout token names neither sid nor sub");
    }
    Ok(LogoutClaims {
        jti: jti.to_owned(),
        sub,
        sid,
        until: int(c, "exp").unwrap_or(iat).max(iat) + MAX_AGE + LEEWAY,
    })
}

/// `POST /auth/oidc/{name}/backchannel-logout`.
pub async fn backchannel_logout(
    State(oidc): State<Oidc>,
    PathParam(name): PathParam<String>,
    form: Result<axum::Form<BackchannelForm>, axum::extract::rejection::FormRejection>,
) -> Result<Response, ApiError> {
    let provider = oidc.provider(&name)?.clone();
    let Ok(axum::Form(form)) = form else {
        return Ok(backchannel_error("a form with logout_token is required"));
    };
    let now = oidc.0.clock.now();
    let verified = match provider.verify(&form.logout_token).await {
        Ok(v) => v,
        Err(ProviderError::Unavailable(why)) => {
            tracing::warn!(provider = %name, error = %why, "back-channel logout: the provider's keys are unavailable");
            return Err(ApiError::Unavailable);
        }
        Err(e) => {
            tracing::warn!(target: "audit", event = "oidc_logout_refused", provider = %name, reason = %e);
            return Ok(backchannel_error("the logout token does not verify"));
        }
    };
    let meta = provider
        .metadata()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let claims = match logout_token_claims(
        &verified.header,
        &verified.claims,
        &meta.issuer,
        &provider.config.client_id,
        now,
    ) {
        Ok(c) => c,
        Err(why) => {
            tracing::warn!(target: "audit", event = "oidc_logout_refused", provider = %name, reason = why);
            return Ok(backchannel_error(why));
        }
    };
    let ended = oidc
        .0
        .sessions
        .provider_logout(
            &meta.issuer,
            &claims.jti,
            claims.until,
            claims.sub.as_deref(),
            claims.sid.as_deref(),
        )
        .await?;
    let Some(sessions) = ended else {
        tracing::warn!(target: "audit", event = "oidc_logout_refused", provider = %name, reason = "replayed jti");
        return Ok(backchannel_error("the logout token was already used"));
    };
    tracing::info!(target: "audit", event = "oidc_logout", provider = %name, sessions);
    Ok(no_store(StatusCode::OK.into_response()))
}

/// A navigation another site's page caused (`Sec-Fetch-Site: cross-site`); a browser too old to
/// send the header is let through.
fn from_another_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
}

/// `GET /auth/oidc/{name}/end-session`: RP-initiated logout at the provider. Not for another
/// site's page: a link there would sign the user out at the provider, and through its
/// back-channel logout here and in every other app.
pub async fn end_session(
    State(oidc): State<Oidc>,
    PathParam(name): PathParam<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let provider = oidc.provider(&name)?.clone();
    if from_another_site(&headers) {
        return Ok(error_page(
            StatusCode::FORBIDDEN,
            "A sign-out at the provider must start from this site's pages.",
        ));
    }
    let meta = provider
        .metadata()
        .await
        .map_err(|_| ApiError::Unavailable)?;
    let Some(end) = meta
        .end_session_endpoint
        .as_deref()
        .and_then(|e| url::Url::parse(e).ok())
    else {
        return Err(ApiError::NotFound);
    };
    let mut end = end;
    end.query_pairs_mut()
        .append_pair("client_id", &provider.config.client_id);
    Ok(redirect(StatusCode::SEE_OTHER, end.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recent only for a sign-in at the provider within the flow, by the provider's clock: in
    /// step, a minute ahead, a hundred seconds behind; a few seconds' slack for the exchange.
    #[test]
    fn a_provider_s_auth_time_counts_only_within_the_flow_by_its_own_clock() {
        let now = 1_800_000_000;
        let started = now - 30;
        let at = |iat: i64, auth_time: Option<i64>| {
            let claims = IdClaims {
                auth_time,
                iat,
                sub: "s".into(),
                sid: None,
                email: None,
                email_verified: false,
                name: None,
            };
            recent_auth_time(&claims, started, now)
        };
        // In step: the flow began at now - 30.
        assert_eq!(at(now, Some(now - 20)), Some(now - 20));
        assert_eq!(
            at(now, Some(started - EXCHANGE_SLACK)),
            Some(started - EXCHANGE_SLACK)
        );
        assert_eq!(at(now, Some(started - EXCHANGE_SLACK - 1)), None);
        assert_eq!(at(now, None), None);
        // A provider 50 s ahead: its flow began at now + 20 by its clock.
        assert_eq!(at(now + 50, Some(now + 30)), Some(now - 20));
        assert_eq!(
            at(now + 50, Some(now - 20)),
            None,
            "40 s before the flow there"
        );
        assert_eq!(
            at(now + 50, Some(now + 60)),
            Some(now),
            "never later than now"
        );
        // A provider 100 s behind: its fresh sign-in counts.
        assert_eq!(at(now - 100, Some(now - 120)), Some(now - 20));
    }

    #[test]
    fn return_to_is_a_path_of_this_site() {
        for ok in ["/", "/app", "/app?x=1&y=%2F", "/a/b/c"] {
            assert!(safe_return_to(ok), "{ok}");
        }
        for bad in [
            "",
            "app",
            "//evil.example",
            "/\\evil.example",
            "/a\\b",
            "https://evil.example/",
            "/a#b",
            "/a b",
            "/a\u{7f}",
            "javascript:alert(1)",
        ] {
            assert!(!safe_return_to(bad), "{bad:?}");
        }
        assert!(!safe_return_to(&format!("/{}", "a".repeat(512))));
    }

    fn id(now: i64) -> Map<String, Value> {
        json!({ "iss": "https://idp", "aud": "c", "sub": "s", "iat": now, "exp": now + 60,
                "nonce": "n", "email": "A@Example.com", "email_verified": true })
        .as_object()
        .cloned()
        .unwrap()
    }

    #[test]
    fn an_id_token_is_checked_as_core_3_1_3_7_says() {
        let now = 1_000_000;
        let ok = id_token_claims(&id(now), "https://idp", "c", "n", now).unwrap();
        assert_eq!(ok.email.as_deref(), Some("a@example.com"));
        assert!(ok.email_verified);
        let with = |k: &str, v: Value| {
            let mut c = id(now);
            c.insert(k.into(), v);
            id_token_claims(&c, "https://idp", "c", "n", now)
        };
        assert!(with("iss", json!("https://other")).is_err());
        assert!(with("aud", json!("other")).is_err());
        assert!(with("aud", json!(["c", "other"])).is_err(), "no azp");
        assert!(with("azp", json!("other")).is_err());
        assert!(with("exp", json!(now - LEEWAY)).is_err());
        assert!(
            with("exp", json!(now - LEEWAY + 1)).is_ok(),
            "within the leeway"
        );
        assert!(with("iat", json!(now + LEEWAY + 1)).is_err());
        assert!(with("iat", json!(now - MAX_AGE - 1)).is_err());
        assert!(with("nbf", json!(now + LEEWAY + 1)).is_err());
        assert!(with("nonce", json!("other")).is_err());
        assert!(with("sub", json!("")).is_err());
        // An address that cannot be typed here is none (the account gets one no one can claim).
        for bad in [
            "admin\u{200B}@example.com",
            "admin\u{202E}@example.com",
            "admin\n@example.com",
            "\"admin\"@example.com",
            "adm\\in@example.com",
            "no-at-sign",
            "0123abcd@idp.oidc.invalid",
            // A character past ASCII that lower-cases to ASCII: the Kelvin sign to `k`, a
            // capital I with a dot above to `i` and a combining dot.
            "\u{212A}im@corp.example",
            "k\u{130}m@corp.example",
        ] {
            assert_eq!(with("email", json!(bad)).unwrap().email, None, "{bad:?}");
        }
        // Another spelling of a mailbox outside ASCII still links the account opened under it
        // before the rule of one spelling (crate::password::new_address).
        assert_eq!(
            with("email", json!("U\u{0308}nicode@Example.com"))
                .unwrap()
                .email
                .as_deref(),
            Some("u\u{0308}nicode@example.com")
        );
        assert_eq!(
            with("email", json!(" Ada@Example.com "))
                .unwrap()
                .email
                .as_deref(),
            Some("ada@example.com")
        );
        assert!(
            !with("email_verified", json!("true"))
                .unwrap()
                .email_verified,
            "a string is not true"
        );
        let mut c = id(now);
        c.insert("aud".into(), json!(["c", "other"]));
        c.insert("azp".into(), json!("c"));
        assert!(id_token_claims(&c, "https://idp", "c", "n", now).is_ok());
        // Times at the ends of i64: refused, never an overflow (a panic in a debug build).
        for t in [i64::MAX, i64::MIN, -1] {
            for k in ["exp", "iat", "nbf"] {
                assert!(with(k, json!(t)).is_err(), "{k} {t}");
            }
        }
    }

    #[test]
    fn a_logout_token_is_checked_as_back_channel_logout_2_6_says() {
        let now = 1_000_000;
        let header = json!({ "alg": "ES256", "typ": "logout+jwt" })
            .as_object()
            .cloned()
            .unwrap();
        let base = || {
            json!({ "iss": "https://idp", "aud": ["c"], "iat": now, "jti": "j", "sid": "x",
                    "events": { BACKCHANNEL_EVENT: {} } })
            .as_object()
            .cloned()
            .unwrap()
        };
        let ok = logout_token_claims(&header, &base(), "https://idp", "c", now).unwrap();
        assert_eq!((ok.sid.as_deref(), ok.sub.as_deref()), (Some("x"), None));
        let check = |change: &dyn Fn(&mut Map<String, Value>)| {
            let mut c = base();
            change(&mut c);
            logout_token_claims(&header, &c, "https://idp", "c", now)
        };
        // Times at the ends of i64, or not times: refused, never an overflow.
        for t in [json!(i64::MAX), json!(i64::MIN), json!(-1), json!("soon")] {
            for k in ["exp", "iat"] {
                let t = t.clone();
                assert!(
                    check(&move |c| {
                        c.insert(k.into(), t.clone());
                    })
                    .is_err(),
                    "{k}"
                );
            }
        }
        // A fraction is a NumericDate too.
        assert!(
            check(&|c| {
                c.insert("iat".into(), json!(now as f64 + 0.5));
            })
            .is_ok()
        );
        assert!(
            check(&|c| {
                c.insert("nonce".into(), json!("n"));
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.remove("jti");
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.remove("sid");
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.remove("sid");
                c.insert("sub".into(), json!("u"));
            })
            .is_ok()
        );
        assert!(
            check(&|c| {
                c.insert("events".into(), json!({ "other": {} }));
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.insert("events".into(), json!({ BACKCHANNEL_EVENT: "x" }));
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.insert("exp".into(), json!(now - LEEWAY));
            })
            .is_err()
        );
        assert!(
            check(&|c| {
                c.insert("aud".into(), json!("other"));
            })
            .is_err()
        );
        let jwt = json!({ "alg": "ES256", "typ": "JWT" })
            .as_object()
            .cloned()
            .unwrap();
        assert!(logout_token_claims(&jwt, &base(), "https://idp", "c", now).is_ok());
        let other = json!({ "alg": "ES256", "typ": "at+jwt" })
            .as_object()
            .cloned()
            .unwrap();
        assert!(logout_token_claims(&other, &base(), "https://idp", "c", now).is_err());
    }
}
