//! `/api/*`: the protected resources of the demo, and `/.well-known/jwks.json`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::error::ApiError;
use crate::extract::{Authed, JsonBody};
use crate::keys::Keys;
use crate::store::{Store, User};
use crate::tokens::Invalid;

fn profile(user: &User) -> Response {
    Json(json!({
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "phone": user.phone,
        "roles": user.roles,
    }))
    .into_response()
}

pub async fn me(State(store): State<Store>, Authed(claims): Authed) -> Result<Response, ApiError> {
    match store.user_by_id(&claims.sub).await? {
        Some(user) => Ok(profile(&user)),
        None => Err(ApiError::InvalidToken(Invalid::Revoked)),
    }
}

/// `null` and absent differ: `{"phone": null}` clears the phone, `{}` leaves it.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilePatch {
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    phone: Option<Option<String>>,
}

pub async fn update_me(
    State(store): State<Store>,
    Authed(claims): Authed,
    JsonBody(patch): JsonBody<ProfilePatch>,
) -> Result<Response, ApiError> {
    let name = patch.name.as_deref().map(str::trim);
    if name.is_some_and(|n| !crate::store::valid_name(n)) {
        return Err(ApiError::InvalidRequest(crate::store::NAME_RULE.into()));
    }
    let phone = patch.phone.as_ref().map(|p| p.as_deref().map(str::trim));
    if let Some(Some(p)) = phone {
        let ok = (3..=32).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
        if !ok {
            return Err(ApiError::InvalidRequest(
                "phone must be 3 to 32 characters of digits, spaces and + - ( ) .".into(),
            ));
        }
    }
    match store.update_profile(&claims.sub, name, phone).await? {
        Some(user) => Ok(profile(&user)),
        None => Err(ApiError::InvalidToken(Invalid::Revoked)),
    }
}

/// What the discovery document says (RFC 8414).
#[derive(Clone, Debug)]
pub struct Discovery {
    pub issuer: String,
    pub audience: String,
    /// The first `--public-origin`: the origin the document's URLs name.
    pub public_origin: Option<String>,
    /// The server serves TLS itself (`--tls-cert`).
    pub https: bool,
    pub jwks_max_age: i64,
    /// The revocation feed exists.
    pub feed: bool,
    /// When this instance last read the revocation events with all of them applied.
    pub in_step: crate::fleet::InStep,
}

pub const METADATA_PATH: &str = "/.well-known/oauth-authorization-server";
/// Where the signing keys are published (the metadata's `jwks_uri`).
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

fn cached_json(body: String, max_age: i64) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    res
}

/// `GET /.well-known/jwks.json`: the keys that verify (the next key is published before it
/// signs: crate::keys), cacheable for `--jwks-max-age-secs`. 503 from an instance out of step
/// (`crate::fleet::InStep`: it has not read and applied the revocation events for
/// `feed::IN_STEP`, or its key ring's last reload failed): its list may still hold a revoked
/// key, and a verifier keeps what it gets. The verifiers fetch it again a while after a `keys`
/// event (the crate's `KEYS_AGAIN`, longer than `IN_STEP`), so that the instance answering then
/// has either applied the event or answers this.
pub async fn jwks(State(keys): State<Keys>, State(d): State<Discovery>) -> Response {
    if !d.in_step.within(crate::feed::IN_STEP) {
        return ApiError::Unavailable.into_response();
    }
    cached_json(keys.current().jwks.clone(), d.jwks_max_age)
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414): where the keys and the revocation
/// feed are, and what a proof may be signed with. Its URLs name the first `--public-origin`,
/// or else the request's own host (`http://` for a loopback host, `https://` otherwise).
pub async fn metadata(State(d): State<Discovery>, headers: axum::http::HeaderMap) -> Response {
    let configured = d.public_origin.is_some();
    let origin = d
        .public_origin
        .clone()
        .or_else(|| crate::net::loopback_origin(&headers, d.https))
        .unwrap_or_else(|| {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("https://{host}")
        });
    let mut doc = json!({
        "issuer": d.issuer,
        "jwks_uri": format!("{origin}{JWKS_PATH}"),
        "dpop_signing_alg_values_supported": tokenwarden_dpop::ALGORITHMS,
        "tokenwarden_audience": d.audience,
    });
    if d.feed {
        doc["tokenwarden_revocations_endpoint"] = json!(format!("{origin}{}", crate::feed::PATH));
    }
    let mut res = cached_json(doc.to_string(), d.jwks_max_age);
    // URLs from the request's Host: a shared cache that keys on something else must not hand
    // them to another client (a Host of an attacker's: a JWKS of its own).
    if !configured {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}
