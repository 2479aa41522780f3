//! tokenwarden: in-memory access tokens, single-flight refresh and safe 401 replay for
//! single-page apps.
//!
//! - [`core`]: every decision, as one sans-IO state machine, tested natively.
//! - [`proto`]: the protocol's words (error codes, cookie names, peer messages, events),
//!   shared with the reference server.
//! - [`iface`]: the `.wasm`'s interface (numbers, the `Out` record, the exports), the one
//!   table the glue and the driver follow.
//! - `web` (wasm32 only): the machine's JavaScript bindings; the driver that carries out its
//!   commands is `src/web/tokenwarden.js`.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod core;
pub mod iface;
pub mod proto;

#[cfg(target_arch = "wasm32")]
mod web;
// The `.wasm`'s allocator, tested natively too.
#[cfg(any(target_arch = "wasm32", test))]
#[path = "web/heap.rs"]
mod heap;
