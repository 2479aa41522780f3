//! Request extractors: a verified bearer token, a strict JSON body, the CSRF header.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;
use crate::tokens::{AccessClaims, Invalid};

/// `X-Tokenwarden` (`tokenwarden::proto::CSRF_HEADER`, shared with the client).
pub const CSRF_HEADER: &str = tokenwarden::proto::CSRF_HEADER;

/// Cookie-authenticated endpoints require `X-Tokenwarden: 1`. A cross-site page cannot set a
/// custom header without a CORS preflight, which only allow-listed origins pass.
pub fn require_csrf(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get(CSRF_HEADER) {
        Some(v) if v.as_bytes() == b"1" => Ok(()),
        _ => Err(ApiError::CsrfHeaderMissing),
    }
}

/// The bearer token of `Authorization`, if the header is a Bearer one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The access token of `Authorization`, sent as `Bearer` or `DPoP`.
pub fn access_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    tokenwarden_dpop::authorization(value).map(|(_, token)| token)
}

/// A request carrying a valid, unrevoked access token: `Authorization: Bearer` for an unbound
/// session, `Authorization: DPoP` and a proof by the token's key for a bound one (crate::dpop).
pub struct Authed(pub AccessClaims);

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let (scheme, token) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(tokenwarden_dpop::authorization)
            .ok_or(ApiError::MissingToken)?;
        let claims = authenticate(state, token).map_err(|e| match (scheme, e) {
            (tokenwarden_dpop::Scheme::Dpop, ApiError::InvalidToken(why)) => {
                ApiError::InvalidDpopToken(why)
            }
            (_, e) => e,
        })?;
        crate::dpop::check_resource(
            state,
            &parts.headers,
            parts.method.as_str(),
            parts.uri.path(),
            scheme,
            token,
            &claims,
        )
        .await?;
        Ok(Authed(claims))
    }
}

pub fn authenticate(state: &AppState, token: &str) -> Result<AccessClaims, ApiError> {
    let ring = state.keys.current();
    let claims = state
        .verified
        .verify(&ring, &state.audience, token, state.now())
        .map_err(ApiError::InvalidToken)?;
    if state.revocations.is_revoked(&claims.jti, &claims.sid) {
        return Err(ApiError::InvalidToken(Invalid::Revoked));
    }
    Ok(claims)
}

/// `Json<T>` whose rejections are our JSON errors: 415 for a non-JSON content type (so text/plain
/// and form posts are refused), 413 past the body limit, 400 for anything malformed.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}
