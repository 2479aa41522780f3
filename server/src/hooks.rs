//! `/test/*`: counters and fault injection for the browser tests and benchmarks.
//!
//! Compiled only with the `test-hooks` Cargo feature (never a default: `cargo build --release`,
//! `cargo install` and `make demo` leave it out), mounted only with `--test-hooks` on a
//! loopback address, and even then answered only to requests carrying the per-start secret in
//! `X-Test-Hooks-Secret` (anything else gets the same 404 as a binary without the feature).

use crate::error::ApiError;

/// The header that carries the secret.
pub const SECRET_HEADER: &str = "x-test-hooks-secret";

#[cfg(feature = "test-hooks")]
mod routes;
#[cfg(feature = "test-hooks")]
pub use routes::{before_refresh, routes};

/// Without the feature there are no faults to inject.
#[cfg(not(feature = "test-hooks"))]
pub async fn before_refresh(
    _state: &crate::state::AppState,
) -> Result<bool, axum::response::Response> {
    Ok(false)
}

/// What every `/test/*` path answers when the hooks are not mounted.
pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
