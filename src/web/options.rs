//! `TokenManagerOptions` from a plain JS object, validated once at construction: a typo or a
//! wrong type is a `ConfigError` now rather than a surprise later.

use wasm_bindgen::prelude::*;
use web_sys::Url;

use super::js::{cat, config_error, get, keys};
use crate::core::Policy;

pub struct Config {
    pub login_url: String,
    pub refresh_url: String,
    pub logout_url: String,
    /// Serialized origins (`https://api.example.com`) that get the bearer token.
    pub allowed_origins: Vec<String>,
    pub policy: Policy,
    pub csrf_name: String,
    pub csrf_value: String,
    /// `None`: no hint cookie, always try a refresh on `restore()`.
    pub hint_cookie: Option<String>,
    pub refresh_timeout_ms: f64,
    pub cross_tab: bool,
}

const KNOWN: [&str; 11] = [
    "crossTab",
    "baseUrl",
    "loginPath",
    "refreshPath",
    "logoutPath",
    "allowedOrigins",
    "refreshLeewaySeconds",
    "csrfHeader",
    "autoRefresh",
    "sessionHintCookie",
    "refreshTimeoutMs",
];

/// The page's own URL, if there is one (a window or a worker).
pub fn location_href() -> Option<String> {
    super::js::get_string(&get(&super::js::global().into(), "location"), "href")
}

fn string_opt(o: &JsValue, key: &str) -> Result<Option<String>, JsValue> {
    let v = get(o, key);
    if v.is_undefined() {
        return Ok(None);
    }
    v.as_string()
        .map(Some)
        .ok_or_else(|| config_error(&cat(&["option ", key, " must be a string"])))
}

fn url(path: &str, base: &str, what: &str) -> Result<Url, JsValue> {
    Url::new_with_base(path, base)
        .map_err(|_| config_error(&cat(&[what, " is not a valid URL: ", path])))
}

/// `true` for an HTTP header name token.
fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Config {
    pub fn from_js(options: &JsValue) -> Result<Config, JsValue> {
        let o = if options.is_undefined() || options.is_null() {
            JsValue::from(js_sys::Object::new())
        } else if options.is_object() {
            options.clone()
        } else {
            return Err(config_error("options must be an object"));
        };
        for k in keys(&o).iter() {
            let k = k.as_string().unwrap_or_default();
            if !KNOWN.contains(&k.as_str()) {
                return Err(config_error(&cat(&["unknown option: ", &k])));
            }
        }

        let page = location_href();
        let base = match (string_opt(&o, "baseUrl")?, &page) {
            (Some(b), Some(p)) => url(&b, p, "baseUrl")?,
            (Some(b), None) => url(&b, &b, "baseUrl")?,
            (None, Some(p)) => url("/", p, "location")?,
            (None, None) => return Err(config_error("baseUrl is required outside a page")),
        };
        if !base.protocol().starts_with("http") {
            return Err(config_error("baseUrl must be an http(s) URL"));
        }
        let base_href = base.href();
        let path = |key: &str, default: &str| -> Result<String, JsValue> {
            let p = string_opt(&o, key)?.unwrap_or_else(|| default.to_owned());
            Ok(url(&p, &base_href, key)?.href())
        };

        let allowed_origins = match get(&o, "allowedOrigins") {
            v if v.is_undefined() => vec![base.origin()],
            v => {
                let Some(list) = v.dyn_ref::<js_sys::Array>() else {
                    return Err(config_error("allowedOrigins must be an array of origins"));
                };
                let mut origins = Vec::new();
                for item in list.iter() {
                    let Some(s) = item.as_string() else {
                        return Err(config_error("allowedOrigins must be an array of origins"));
                    };
                    if s == "*" {
                        return Err(config_error("allowedOrigins cannot be *: list each origin"));
                    }
                    let origin = url(&s, &s, "allowedOrigins entry")?.origin();
                    if origin == "null" {
                        return Err(config_error(&cat(&["not an origin: ", &s])));
                    }
                    origins.push(origin);
                }
                origins
            }
        };

        let leeway = match get(&o, "refreshLeewaySeconds") {
            v if v.is_undefined() => 30.0,
            v => match v.as_f64() {
                Some(n) if n.is_finite() && n >= 0.0 => n,
                _ => return Err(config_error("refreshLeewaySeconds must be a number >= 0")),
            },
        };
        let auto_refresh = match get(&o, "autoRefresh") {
            v if v.is_undefined() => true,
            v => v
                .as_bool()
                .ok_or_else(|| config_error("autoRefresh must be a boolean"))?,
        };
        let refresh_timeout_ms = match get(&o, "refreshTimeoutMs") {
            v if v.is_undefined() => 10_000.0,
            v => match v.as_f64() {
                Some(n) if n.is_finite() && n > 0.0 => n,
                _ => return Err(config_error("refreshTimeoutMs must be a number > 0")),
            },
        };
        let (csrf_name, csrf_value) = match get(&o, "csrfHeader") {
            v if v.is_undefined() => ("X-Tokenwarden".to_owned(), "1".to_owned()),
            v => match (string_opt(&v, "name"), string_opt(&v, "value")) {
                (Ok(Some(n)), Ok(Some(val))) if is_header_name(&n) => (n, val),
                _ => {
                    return Err(config_error(
                        "csrfHeader must be {name, value} with a valid header name",
                    ));
                }
            },
        };
        let hint_cookie = match get(&o, "sessionHintCookie") {
            v if v.is_undefined() => Some("tw_session".to_owned()),
            v if v.is_null() => None,
            v => Some(
                v.as_string()
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| config_error("sessionHintCookie must be a string or null"))?,
            ),
        };

        let cross_tab = match get(&o, "crossTab") {
            v if v.is_undefined() => true,
            v => v
                .as_bool()
                .ok_or_else(|| config_error("crossTab must be a boolean"))?,
        };

        Ok(Config {
            cross_tab,
            login_url: path("loginPath", "/auth/login")?,
            refresh_url: path("refreshPath", "/auth/refresh")?,
            logout_url: path("logoutPath", "/auth/logout")?,
            allowed_origins,
            policy: Policy {
                leeway_secs: leeway,
                auto_refresh,
            },
            csrf_name,
            csrf_value,
            hint_cookie,
            refresh_timeout_ms,
        })
    }

    pub fn is_allowed(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == origin)
    }
}
