//! The cookies of the protocol (the federated sign-in's flow cookie is `oidc`'s).
//!
//! - `__Host-tw_refresh`: the refresh token. `HttpOnly; Secure; SameSite=Strict; Path=/`, no
//!   `Domain`. The `__Host-` prefix makes browsers refuse the name from any other host (a
//!   sibling subdomain cannot plant or shadow it: "cookie tossing") and from plain HTTP; it
//!   requires `Path=/` (docs/PROTOCOL.md, "Cookies", weighs this against `__Secure-` with
//!   `Path=/auth`).
//! - `tw_session=1`: not a secret, readable by JS, same lifetime: tells the client at page
//!   load that a session may exist, so anonymous visitors cost no refresh request.
//! - `__Host-tw_device`: a browser known to an account (crate::password::KnownBrowsers), set
//!   by a sign-in that proved its password; outlives sessions.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use tokenwarden::proto::CookieName;

/// The names are the protocol's (`tokenwarden::proto`), shared with the client.
pub const REFRESH_COOKIE: &str = CookieName::Refresh.as_str();
pub const HINT_COOKIE: &str = CookieName::SessionHint.as_str();
pub const SIGNUP_COOKIE: &str = CookieName::SignUp.as_str();
pub const KNOWN_BROWSER_COOKIE: &str = CookieName::KnownBrowser.as_str();

/// A sign-up's binding to the browser that sent it, for the code's lifetime.
pub fn signup_cookie(binding: &str, max_age: i64) -> String {
    format!(
        "{SIGNUP_COOKIE}={binding}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// A browser known to the account whose password it just proved (crate::password): kept
/// across sign-outs, never cleared by the server.
pub fn known_browser_cookie(value: &str, max_age: i64) -> String {
    format!(
        "{KNOWN_BROWSER_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

/// The known-browser cookie of the request; none when absent or named more than once.
pub fn known_browser(headers: &HeaderMap) -> Option<&str> {
    one(headers, KNOWN_BROWSER_COOKIE).ok().flatten()
}

pub fn refresh_cookie(token: &str, max_age: i64) -> String {
    format!(
        "{REFRESH_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    )
}

pub fn hint_cookie(max_age: i64) -> String {
    format!("{HINT_COOKIE}=1; Path=/; Max-Age={max_age}; Secure; SameSite=Strict")
}

pub fn append(res: &mut Response, cookie: &str) {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// Sets both cookies on a response. The refresh cookie comes last: some clients keep only the
/// last header of a name (wrk's Lua `response` callback, which bench/run.mjs relies on).
pub fn set(mut res: Response, token: &str, max_age: i64) -> Response {
    append(&mut res, &hint_cookie(max_age));
    append(&mut res, &refresh_cookie(token, max_age));
    res
}

/// Expires both cookies.
pub fn clear(mut res: Response) -> Response {
    append(
        &mut res,
        &format!("{REFRESH_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
    );
    append(
        &mut res,
        &format!("{HINT_COOKIE}=; Path=/; Max-Age=0; Secure; SameSite=Strict"),
    );
    res
}

/// The refresh cookie appears more than once in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// The refresh token from the request's `Cookie` headers: `Ok(None)` if absent, `Err` if the
/// name appears more than once (whatever the values): the server cannot know which one the
/// browser meant, and picking one lets a planted cookie win.
pub fn refresh_token(headers: &HeaderMap) -> Result<Option<&str>, Duplicate> {
    one(headers, REFRESH_COOKIE)
}

/// Cookie `wanted` from the request's `Cookie` headers, as [`refresh_token`] reads it.
pub fn one<'h>(headers: &'h HeaderMap, wanted: &str) -> Result<Option<&'h str>, Duplicate> {
    let mut found = None;
    // Pair by pair: a cookie of another name with a byte that is not ASCII (which a sibling
    // subdomain can set on the whole site) costs that cookie only, never the line it is on
    // (the refresh cookie with it: a logout anyone on the site could cause).
    for (name, value) in headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter(|pair| pair.is_ascii())
        .filter_map(|pair| pair.trim().split_once('='))
    {
        if name.trim() != wanted {
            continue;
        }
        if found.is_some() {
            return Err(Duplicate);
        }
        found = Some(value.trim().trim_matches('"'));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn one_refresh_cookie_or_none() {
        let t = "__Host-tw_refresh";
        assert_eq!(refresh_token(&cookies(&[])), Ok(None));
        assert_eq!(
            refresh_token(&cookies(&[&format!("a=1; {t}=V; tw_session=1")])),
            Ok(Some("V"))
        );
        assert_eq!(
            refresh_token(&cookies(&[&format!("{t}=A; {t}=V")])),
            Err(Duplicate)
        );
        assert_eq!(
            refresh_token(&cookies(&[&format!("{t}=A"), &format!("{t}=A")])),
            Err(Duplicate),
            "even the same value twice"
        );
        // A cookie of another name that is not ASCII (set by a sibling subdomain) hides nothing.
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_bytes(format!("x=\u{e9}t\u{e9}; {t}=V; y=\u{ff}").as_bytes())
                .unwrap(),
        );
        assert_eq!(refresh_token(&h), Ok(Some("V")));
        // Other prefixes are other cookies.
        assert_eq!(
            refresh_token(&cookies(&[&format!("__Secure-tw_refresh=A; {t}=V")])),
            Ok(Some("V"))
        );
    }
}
