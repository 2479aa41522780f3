//! The decisions of tokenwarden, without a browser: this module knows nothing about web-sys,
//! JavaScript or time sources. The driver (`src/web/`) feeds [`Machine`] facts (a caller's
//! call, what the server answered, a lock granted, a peer's message, a timer, what time it is)
//! and carries out the [`Command`]s it returns.
//!
//! In scope: the whole client flow — the single refresh in flight and its waiters, ask → lock
//! → check again across tabs, retries with backoff and the waits after a failed refresh, the
//! one-replay rule after a 401, what to adopt from other tabs, the events — plus token
//! lifetime and leeway policy, classifying every answer of the auth server (sign-ins,
//! refreshes, logouts and the other requests: one timeout, one wording of a refusal), the DPoP
//! nonce and clock of each server, and the DPoP key's lifecycle (which key signs what, what is
//! done to the stored one). Out of scope: I/O of any kind, parsing (the driver reads JSON bodies
//! with the browser's `JSON`, a JWT's payload and a `WWW-Authenticate` challenge), storage (the
//! token lives in this memory only; the driver stores the key as it is told), cryptography.
//!
//! Files: `commands.rs` what goes in and out (calls, answers, messages, [`Command`]s,
//! failures); `machine.rs` the flow; `keys.rs` the DPoP key's lifecycle; `nonces.rs` the DPoP
//! nonce and clock book; `session.rs` the session's phases and token; `reply.rs` how an answer
//! is classified, and the back-off.
//! The flow is drawn in [`machine`]; the session's phases:
//!
//! ```text
//!                    login / refresh ok
//!        ┌────────────────────────────────────────────┐
//!        ▼                                            │
//!   ┌─────────┐  token within leeway  ┌────────────┐  │
//!   │ Active  │ ────────────────────▶ │ refreshing │ ─┤   network error / 5xx / timeout:
//!   └─────────┘  (one Flight, all     └────────────┘  │   token kept, callers get
//!        ▲        callers wait on it)      │   │      │   NetworkError, the next call
//!        │                                 │   └──────┘   starts a new flight
//!        │                   invalid_grant │
//!        │                   token_reused  ▼
//!   ┌─────────┐   login    ┌───────────────────┐
//!   │ Maybe   │ ─────────▶ │ Anonymous (ended) │◀── logout
//!   │ (hint)  │ ─ refresh  └───────────────────┘
//!   └─────────┘   rejected
//! ```
//!
//! `Maybe` is a page load with the `tw_session` hint cookie: a session may exist, the first
//! request that needs a token refreshes to find out.

mod commands;
pub mod machine;
mod reply;
mod session;

#[cfg(test)]
mod tests;

pub use machine::{
    Call, Command, Config, Emit, Endpoint, Failure, Id, KeyOp, Machine, Message, Slot, Value,
};
pub use reply::{
    RefreshOutcome, RefreshReply, Transient, backoff_ms, is_token_shaped, lifetime_secs,
    peer_lifetime_secs,
};
pub use session::{Check, EndReason, Handoff, Phase, Policy, Replay, Session, Settled};
