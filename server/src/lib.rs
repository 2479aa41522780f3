//! tokenwarden-server: the reference auth server of tokenwarden. The protocol is specified in
//! `docs/PROTOCOL.md`.
//!
//! `app` is the composition root: `AppState::new` builds every service, `router` is the whole
//! HTTP surface, `serve::serve` runs it. The modules below depend on each other in layers,
//! without a cycle (`make lint` checks it): plain data and rules (`config`, `clock`,
//! `rotation`, `tokens`, `cookies`), storage (`store`), services (`keys`, `access`, `dpop`,
//! `sessions`, `password`, `otp`, `fleet`), the HTTP layer (`error`, `extract`, `net`, the
//! handlers in `auth` and `api`), and `app` on top.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod access;
pub mod accounts;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
#[cfg(test)]
mod conformance;
pub mod cookies;
pub mod dpop;
pub mod error;
pub mod extract;
pub mod feed;
pub mod fleet;
pub mod hashes;
#[cfg(feature = "test-hooks")]
pub mod hooks;
pub mod kek;
pub mod keys;
pub mod legacy;
pub mod net;
pub mod oidc;
pub mod otp;
pub mod passkeys;
pub mod password;
pub mod revoked;
pub mod rotation;
pub mod serve;
pub mod sessions;
pub mod store;
pub mod throttle;
pub mod tokens;
pub mod users;

pub use app::{AppState, router, spawn_maintenance};
pub use config::Settings;
pub use store::Store;
pub use users::create as create_user;
