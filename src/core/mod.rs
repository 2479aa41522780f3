//! The decisions of tokenwarden, without a browser: this module knows nothing about web-sys,
//! JavaScript or time sources. The web layer (`crate::web`) feeds it facts (what the server
//! answered, what time it is) and carries out what it decides.
//!
//! In scope: JWT payload decoding, token lifetime and leeway policy, classifying refresh
//! responses, the single-flight refresh state machine, the 401 replay decision, retry backoff.
//! Out of scope: I/O of any kind, JSON parsing (the web layer uses the browser's `JSON`),
//! storage (there is none: the token lives in this struct's memory only).
//!
//! ```text
//!                    login / refresh ok
//!        ┌────────────────────────────────────────────┐
//!        ▼                                            │
//!   ┌─────────┐  token within leeway  ┌────────────┐  │   more callers while in flight:
//!   │ Active  │ ────────────────────▶ │ Refreshing │ ─┤   Join (await the same promise)
//!   └─────────┘     (one caller       └────────────┘  │
//!        ▲           gets Start)           │   │      │ network error / 5xx / timeout:
//!        │                                 │   └──────┘ token kept, callers get NetworkError,
//!        │                   invalid_grant │            the next call starts a new refresh
//!        │                   token_reused  ▼
//!   ┌─────────┐   login    ┌───────────────────┐
//!   │ Maybe   │ ─────────▶ │ Anonymous (ended) │◀── logout
//!   │ (hint)  │ ─ refresh  └───────────────────┘
//!   └─────────┘   rejected
//! ```
//!
//! `Maybe` is a page load with the `tw_session` hint cookie: a session may exist, the first
//! request that needs a token refreshes to find out.

mod jwt;
mod refresh;
mod reply;

pub use jwt::{JwtError, decode_payload};
pub use refresh::{Begin, Check, EndReason, Handoff, Phase, Policy, Replay, Session, Settled};
pub use reply::{RefreshOutcome, RefreshReply, Transient, backoff_ms, lifetime_secs};
