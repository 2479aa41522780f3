//! tokenwarden: in-memory access tokens, single-flight refresh and safe 401 replay for
//! single-page apps.
//!
//! - [`core`]: the decisions, pure Rust, tested natively.
//! - `web` (wasm32 only): the `TokenManager` JavaScript class over web-sys.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod core;

#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(target_arch = "wasm32")]
pub use web::TokenManager;
