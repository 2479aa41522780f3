//! The two cookies of the protocol.
//!
//! - `__Secure-tw_refresh`: the refresh token. `HttpOnly; Secure; SameSite=Strict; Path=/auth`,
//!   no `Domain`. Scoped to `/auth`, so it cannot use the `__Host-` prefix (which needs `Path=/`).
//! - `tw_session=1`: not a secret, readable by JS, same lifetime: tells the client at page
//!   load that a session may exist, so anonymous visitors cost no refresh request.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;

pub const REFRESH_COOKIE: &str = "__Secure-tw_refresh";
pub const HINT_COOKIE: &str = "tw_session";

pub fn refresh_cookie(token: &str, max_age: i64) -> String {
    format!(
        "{REFRESH_COOKIE}={token}; Path=/auth; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

pub fn hint_cookie(max_age: i64) -> String {
    format!("{HINT_COOKIE}=1; Path=/; Max-Age={max_age}; Secure; SameSite=Strict")
}

fn append(res: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets both cookies on a response.
pub fn set(mut res: Response, token: &str, max_age: i64) -> Response {
    append(&mut res, &refresh_cookie(token, max_age));
    append(&mut res, &hint_cookie(max_age));
    res
}

/// Expires both cookies.
pub fn clear(mut res: Response) -> Response {
    append(
        &mut res,
        &format!("{REFRESH_COOKIE}=; Path=/auth; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    );
    append(
        &mut res,
        &format!("{HINT_COOKIE}=; Path=/; Max-Age=0; Secure; SameSite=Strict"),
    );
    res
}

/// The refresh token from the request's `Cookie` headers, if present.
pub fn refresh_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == REFRESH_COOKIE)
        .map(|(_, value)| value.trim_matches('"'))
}
