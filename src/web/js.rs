//! Small bindings and helpers over js-sys: timers, property access, typed errors.
//! No `format!` here or anywhere in the web layer: `core::fmt` costs ~10 KB of wasm.

use js_sys::{Array, Function, JSON, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_name = clearTimeout)]
    pub fn clear_timeout(id: &JsValue);
    /// Reports an exception thrown by an event handler without breaking the emitter.
    #[wasm_bindgen(js_name = reportError, catch)]
    fn report_error(e: &JsValue) -> Result<(), JsValue>;
}

pub fn now_ms() -> f64 {
    js_sys::Date::now()
}

pub fn global() -> Object {
    js_sys::global()
}

/// Runs `f` after `ms`; returns the timer id for `clear_timeout`.
pub fn after(ms: f64, f: &Function) -> JsValue {
    set_timeout(f, ms)
}

pub async fn sleep(ms: f64) {
    let p = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

pub fn report(e: &JsValue) {
    let _ = report_error(e);
}

pub fn get(obj: &JsValue, key: &str) -> JsValue {
    if !obj.is_object() && !obj.is_function() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(obj, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

pub fn set(obj: &JsValue, key: &str, value: &JsValue) {
    let _ = Reflect::set(obj, &JsValue::from_str(key), value);
}

pub fn get_string(obj: &JsValue, key: &str) -> Option<String> {
    get(obj, key).as_string()
}

pub fn get_f64(obj: &JsValue, key: &str) -> Option<f64> {
    get(obj, key).as_f64()
}

/// `{}` with the given fields.
pub fn object(fields: &[(&str, JsValue)]) -> JsValue {
    let o: JsValue = Object::new().into();
    for (k, v) in fields {
        set(&o, k, v);
    }
    o
}

/// `String(v)`: the URL of a string or a `URL` object.
pub fn global_string(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| v.dyn_ref::<Object>().map(|o| String::from(o.to_string())))
        .unwrap_or_default()
}

/// `JSON.parse`, with any failure as `None`.
pub fn parse_json(text: &str) -> Option<JsValue> {
    JSON::parse(text).ok()
}

pub fn stringify(v: &JsValue) -> Option<String> {
    JSON::stringify(v).ok().and_then(|s| s.as_string())
}

pub fn keys(obj: &JsValue) -> Array {
    match obj.dyn_ref::<Object>() {
        Some(o) => Object::keys(o),
        None => Array::new(),
    }
}

/// The error names of the JavaScript API (also in the `.d.ts`).
#[derive(Clone, Copy)]
pub enum ErrorName {
    Config,
    Login,
    SessionExpired,
    Network,
    Refresh,
}

impl ErrorName {
    fn as_str(self) -> &'static str {
        match self {
            ErrorName::Config => "ConfigError",
            ErrorName::Login => "LoginError",
            ErrorName::SessionExpired => "SessionExpiredError",
            ErrorName::Network => "NetworkError",
            ErrorName::Refresh => "RefreshError",
        }
    }
}

/// A JS `Error` with a stable `name`, a machine-readable `code`, and extra fields.
pub fn error(name: ErrorName, code: &str, message: &str, extra: &[(&str, JsValue)]) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name(name.as_str());
    let e: JsValue = e.into();
    set(&e, "code", &JsValue::from_str(code));
    for (k, v) in extra {
        set(&e, k, v);
    }
    e
}

pub fn config_error(message: &str) -> JsValue {
    error(ErrorName::Config, "invalid_option", message, &[])
}

/// Concatenation without `format!`.
pub fn cat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}
