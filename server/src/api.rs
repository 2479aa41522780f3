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
    if name.is_some_and(|n| n.is_empty() || n.chars().count() > 100) {
        return Err(ApiError::InvalidRequest(
            "name must be 1 to 100 characters".into(),
        ));
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

pub async fn jwks(State(keys): State<Keys>) -> Response {
    let ring = keys.current();
    let mut res = ring.jwks.clone().into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    res
}
