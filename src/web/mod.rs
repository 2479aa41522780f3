//! The JavaScript API: the `TokenManager` class. Each method is a thin wrapper that clones the
//! `Rc<Inner>` into a promise, so concurrent calls from JS never borrow the exported object
//! across an `.await` (wasm-bindgen #4440).

mod inner;
mod js;
mod options;
mod tabs;

use std::rc::Rc;

use js_sys::{Function, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::core::{Phase, decode_payload};
use inner::Inner;
use options::Config;

#[wasm_bindgen(typescript_custom_section)]
const TS: &'static str = r#"
/** Options of `new TokenManager(options)`. Every field is optional. */
export interface TokenManagerOptions {
  /** Where the auth endpoints live. Default: `location.origin`. */
  baseUrl?: string;
  /** Default `/auth/login`, resolved against `baseUrl`. */
  loginPath?: string;
  /** Default `/auth/refresh`. */
  refreshPath?: string;
  /** Default `/auth/logout`. */
  logoutPath?: string;
  /** Origins whose requests get `Authorization: Bearer`. Default: `baseUrl`'s origin only. */
  allowedOrigins?: string[];
  /** Refresh when this little lifetime is left (capped at half the lifetime). Default 30. */
  refreshLeewaySeconds?: number;
  /** Sent on refresh and logout. Default `{ name: "X-Tokenwarden", value: "1" }`. */
  csrfHeader?: { name: string; value: string };
  /** `false` = "banking mode": the session ends when the access token expires. Default true. */
  autoRefresh?: boolean;
  /** JS-readable cookie saying a session may exist; `null` = always try on `restore()`. Default `"tw_session"`. */
  sessionHintCookie?: string | null;
  /** Give up on one refresh attempt after this long. Default 10000. */
  refreshTimeoutMs?: number;
  /** Share refreshes, tokens and logout with the other tabs of this origin (Web Locks +
   * BroadcastChannel). Default true. */
  crossTab?: boolean;
}

export interface LoginCredentials {
  email: string;
  password: string;
}

/** The access token's payload, decoded but not verified (the server verifies). */
export interface AccessTokenClaims {
  sub?: string;
  sid?: string;
  exp?: number;
  iat?: number;
  email?: string;
  name?: string;
  roles?: string[];
  [claim: string]: unknown;
}

export interface TokenManagerEventMap {
  login: {};
  /** `expiresIn`: seconds the new access token lives. */
  refresh: { expiresIn: number };
  sessionExpired: { reason: "invalid_grant" | "token_reused" | "expired" };
  /** The server saw the refresh token used twice (theft, or a bug) and revoked the session. */
  tokenReused: {};
  logout: {};
}
export type TokenManagerEvent = keyof TokenManagerEventMap;

export type TokenwardenErrorName =
  | "ConfigError"
  | "LoginError"
  | "SessionExpiredError"
  | "NetworkError"
  | "RefreshError";

/** Every promise of a TokenManager rejects with one of these (or with what `fetch` itself throws, e.g. an AbortError). */
export interface TokenwardenError extends Error {
  name: TokenwardenErrorName;
  /** Machine-readable: `invalid_credentials`, `too_many_attempts`, `invalid_grant`, `token_reused`, `expired`, `network`, `timeout`, `server_error`, ... */
  code: string;
  /** HTTP status, when there was one. */
  status?: number;
  /** Seconds, for `too_many_attempts`. */
  retryAfter?: number;
}

export interface TokenManager {
  /** Subscribes to an event; returns a function that unsubscribes. */
  on<K extends TokenManagerEvent>(event: K, handler: (detail: TokenManagerEventMap[K]) => void): () => void;
}
"#;

/// Keeps the access token in memory, refreshes it once for all callers, and attaches it to
/// requests for allowed origins.
#[wasm_bindgen]
pub struct TokenManager {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl TokenManager {
    /// Throws a `ConfigError` for unknown options or wrong types.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_optional_param_type = "TokenManagerOptions")] options: Option<
            JsValue,
        >,
    ) -> Result<TokenManager, JsValue> {
        let config = Config::from_js(&options.unwrap_or(JsValue::UNDEFINED))?;
        Ok(TokenManager {
            inner: Inner::new(config)?,
        })
    }

    /// POSTs the credentials to `loginPath`; rejects with `LoginError` (`code`
    /// `invalid_credentials` or `too_many_attempts` with `retryAfter`) or `NetworkError`.
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn login(
        &self,
        #[wasm_bindgen(unchecked_param_type = "LoginCredentials")] credentials: JsValue,
    ) -> Promise {
        future_to_promise(self.inner.clone().login(credentials))
    }

    /// At page load: a silent refresh if a session may exist. Resolves `true` if logged in.
    /// Rejects only with `NetworkError` (the session may still exist).
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn restore(&self) -> Promise {
        future_to_promise(self.inner.clone().restore())
    }

    /// Same contract as `window.fetch`. Requests to allowed origins carry a fresh token; a 401
    /// is answered by one refresh and one replay.
    #[wasm_bindgen(unchecked_return_type = "Promise<Response>")]
    pub fn fetch(
        &self,
        #[wasm_bindgen(unchecked_param_type = "RequestInfo | URL")] input: JsValue,
        #[wasm_bindgen(unchecked_optional_param_type = "RequestInit")] init: Option<JsValue>,
    ) -> Promise {
        let init = init.unwrap_or(JsValue::UNDEFINED);
        future_to_promise(self.inner.clone().fetch(input, init))
    }

    /// A fresh access token (refreshing if needed), e.g. for a WebSocket handshake. Rejects
    /// with `SessionExpiredError` when not logged in.
    #[wasm_bindgen(js_name = getAccessToken, unchecked_return_type = "Promise<string>")]
    pub fn get_access_token(&self) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            match inner.token_for_request().await? {
                Some((token, _)) => Ok(JsValue::from_str(&token)),
                None => Err(js::error(
                    js::ErrorName::SessionExpired,
                    "no_session",
                    "not logged in",
                    &[],
                )),
            }
        })
    }

    /// The access token's payload (decoded, not verified), or `null`.
    #[wasm_bindgen(unchecked_return_type = "AccessTokenClaims | null")]
    pub fn claims(&self) -> JsValue {
        let session = self.inner.session.borrow();
        session
            .token()
            .and_then(|t| decode_payload(t).ok())
            .and_then(|json| js::parse_json(&json))
            .filter(JsValue::is_object)
            .unwrap_or(JsValue::NULL)
    }

    #[wasm_bindgen(getter, js_name = isAuthenticated)]
    pub fn is_authenticated(&self) -> bool {
        self.inner.session.borrow().phase() == Phase::Active
    }

    /// When the access token expires, in `Date.now()` milliseconds, or `null`.
    #[wasm_bindgen(getter, js_name = expiresAt, unchecked_return_type = "number | null")]
    pub fn expires_at(&self) -> JsValue {
        let now = js::now_ms();
        self.inner
            .session
            .borrow()
            .expires_in_ms(now)
            .map_or(JsValue::NULL, |ms| JsValue::from(now + ms))
    }

    /// Refreshes if the token needs it, or always with `{ force: true }` (e.g. to get new
    /// claims after a profile change).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn refresh(
        &self,
        #[wasm_bindgen(unchecked_optional_param_type = "{ force?: boolean }")] options: Option<
            JsValue,
        >,
    ) -> Promise {
        let inner = self.inner.clone();
        let force = options
            .map(|o| js::get(&o, "force"))
            .and_then(|f| f.as_bool())
            .unwrap_or(false);
        future_to_promise(async move {
            if force {
                let generation = inner.session.borrow().generation();
                inner.token_newer_than(generation).await?;
            } else if inner.token_for_request().await?.is_none() {
                return Err(js::error(
                    js::ErrorName::SessionExpired,
                    "no_session",
                    "not logged in",
                    &[],
                ));
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Forgets the token at once, then revokes the session on the server. Rejects with
    /// `NetworkError` if the server could not be told (the local logout stands).
    #[wasm_bindgen(unchecked_return_type = "Promise<void>")]
    pub fn logout(&self) -> Promise {
        future_to_promise(self.inner.clone().logout())
    }

    #[wasm_bindgen(skip_typescript)]
    pub fn on(&self, event: &str, handler: Function) -> Result<JsValue, JsValue> {
        self.inner.on(event, handler)
    }

    /// Replaces `globalThis.fetch` with `auth.fetch` (for axios's fetch adapter, ky, ...).
    pub fn install(&self) {
        self.inner.install();
    }

    /// Puts the original `globalThis.fetch` back.
    pub fn uninstall(&self) {
        self.inner.uninstall();
    }
}
