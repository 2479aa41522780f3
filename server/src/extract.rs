//! Request extractors: a verified access token (with its DPoP proof), a strict JSON body, the
//! CSRF header, path and query parameters whose refusals are JSON.

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use crate::access::Access;
use crate::dpop::Dpop;
use crate::error::ApiError;
use crate::tokens::AccessClaims;

/// `X-Tokenwarden` (`tokenwarden::proto::CSRF_HEADER`, shared with the client).
pub const CSRF_HEADER: &str = tokenwarden::proto::CSRF_HEADER;

/// Cookie-authenticated endpoints require `X-Tokenwarden: 1`. A cross-site page cannot set a
/// custom header without a CORS preflight, which only allow-listed origins pass.
pub struct Csrf;

impl<S: Send + Sync> FromRequestParts<S> for Csrf {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.headers.get(CSRF_HEADER) {
            Some(v) if v.as_bytes() == b"1" => Ok(Csrf),
            _ => Err(ApiError::CsrfHeaderMissing),
        }
    }
}

/// The access token of `Authorization`, sent as `Bearer` or `DPoP`.
pub fn access_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    tokenwarden_dpop::authorization(value).map(|(_, token)| token)
}

/// The `User-Agent`, or "" (a session's description in its user's list).
pub fn user_agent(headers: &HeaderMap) -> &str {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A request carrying a valid, unrevoked access token: `Authorization: Bearer` for an unbound
/// session, `Authorization: DPoP` and a proof by the token's key for a bound one (crate::dpop).
pub struct Authed(pub AccessClaims);

impl<S> FromRequestParts<S> for Authed
where
    Access: FromRef<S>,
    Dpop: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let (scheme, token) = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(tokenwarden_dpop::authorization)
            .ok_or(ApiError::MissingToken)?;
        let claims = Access::from_ref(state)
            .authenticate(token)
            .map_err(|why| match scheme {
                tokenwarden_dpop::Scheme::Dpop => ApiError::InvalidDpopToken(why),
                tokenwarden_dpop::Scheme::Bearer => ApiError::InvalidToken(why),
            })?;
        Dpop::from_ref(state)
            .check_resource(
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

/// `Json<T>` whose rejections are our JSON errors: 415 for a non-JSON content type (so text/plain
/// and form posts are refused), 413 past the body limit, 400 for anything malformed.
pub struct JsonBody<T>(pub T);

/// Whether JSON text `b` escapes U+0000 (`\u0000` after an odd number of backslashes; a raw
/// NUL byte is no valid JSON anyway).
fn escapes_nul(b: &[u8]) -> bool {
    b.windows(6).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"\\u0000")
            && b[..i].iter().rev().take_while(|&&c| c == b'\\').count() % 2 == 0
    })
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Read here first: a string holding U+0000 (`\u0000`) is refused for every body, once
        // (PostgreSQL cannot store one: it would be a 500 wherever the string reaches a query).
        let (parts, body) = req.into_parts();
        let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), state).await
        {
            Ok(b) => b,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge);
            }
            Err(e) => return Err(ApiError::InvalidRequest(e.body_text())),
        };
        let nul = escapes_nul(&bytes);
        let req = Request::from_parts(parts, Body::from(bytes));
        match axum::Json::<T>::from_request(req, state).await {
            Ok(_) if nul => Err(ApiError::InvalidRequest("no string may hold U+0000".into())),
            Ok(axum::Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}

/// `Path<T>` whose refusal is our JSON 400 `invalid_request` (axum's is plain text): a segment
/// that is no UTF-8 once decoded (`%FF`) or not of the type.
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(PathParam(v)),
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}

/// `Query<T>` whose refusal is our JSON 400 `invalid_request`: a missing or malformed parameter.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(QueryParams(v)),
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}
