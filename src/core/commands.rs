//! What the machine takes and gives: the calls of the app, the answers and messages it is told,
//! and the commands it returns for the driver to carry out ([`Command`]), with the failures it
//! words. The flow that turns one into the other is in `machine.rs`.

#[cfg(doc)]
use super::Machine;
use super::reply::Transient;
use super::session::Policy;
use crate::proto::{ClientCode, EndReason, ErrorCode, ErrorName};

/// Ids of callers (chosen by the driver), requests, timers and key slots (chosen by the
/// machine).
pub type Id = u32;

/// A DPoP key's number: the driver holds the key under it until [`KeyOp::Free`].
pub type Slot = Id;

/// What the driver does with the DPoP keys and the key store (a [`Command::Key`] with its
/// slot and a number `with`):
/// - `Load`: `slot` holds the stored key, or a new one, stored, if there is none;
/// - `New`: `slot` holds a new key, stored before the sign-in it signs;
/// - `Given`: `slot` holds the key caller `with` brought, stored when the server takes the
///   sign-in it signs (before that answer is reported);
/// - `PutBack`: the sign-in signed by `slot` was refused: the key of slot `with` back in the
///   store, if the stored key is still `slot`'s;
/// - `Delete`: the session ended here at `with` (ms): the stored key deleted, unless it was
///   stored after;
/// - `Free`: `slot` signs nothing any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOp {
    Load,
    New,
    Given,
    PutBack,
    Delete,
    Free,
}

/// What a caller asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `auth.fetch` to an allowed origin, without an `Authorization` of the caller's own.
    Fetch,
    /// `getAccessToken()`.
    Token,
    /// `refresh({force})`.
    Refresh { force: bool },
    /// `restore()`; `hint`: the session hint cookie is there (or none is configured).
    Restore { hint: bool },
    /// `login(...)`: the driver keeps the credentials and sends them when told. With DPoP,
    /// signed by a new key.
    Login,
    /// A sign-in signed by the DPoP key the caller brings (a redirect sign-in's return, a
    /// second factor's completion by the key that sent the password).
    LoginWithKey,
    /// `logout()`.
    Logout,
    /// A request to the auth server beside the sign-in (requestCode, signup, a password's
    /// reset or change, passkeys): the driver keeps its path, method and body and sends them
    /// when told; `signed`: with the session's token and proof (one refresh and replay after
    /// a 401), else plain. Resolves for any 2xx; otherwise rejected as [`Failure::refusal`]
    /// words it.
    Post { signed: bool },
}

/// An auth endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Login,
    Refresh,
    Logout,
    /// The path of the caller's [`Call::Post`].
    Post,
}

/// What a caller's promise resolves to.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Unit,
    Bool(bool),
    Token(String),
}

/// What a caller's promise rejects with.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Failure {
    /// Not logged in (`no_session`) or the session ended (an [`EndReason`]).
    SessionExpired(&'static str),
    /// The server could not be reached, timed out, or answered 408/429/5xx; the session is kept.
    Network(Transient),
    /// The refresh endpoint answered outside the protocol (status); the session is kept.
    Refresh(u16),
    /// The login was refused.
    Login {
        code: String,
        status: u16,
        retry_after: Option<f64>,
    },
}

impl Failure {
    pub fn name(&self) -> ErrorName {
        match self {
            Failure::SessionExpired(_) => ErrorName::SessionExpired,
            Failure::Network(_) => ErrorName::Network,
            Failure::Refresh(_) => ErrorName::Refresh,
            Failure::Login { .. } => ErrorName::Login,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            Failure::SessionExpired(c) => c,
            Failure::Network(Transient::Network) => ClientCode::Network.as_str(),
            Failure::Network(Transient::Timeout) => ClientCode::Timeout.as_str(),
            Failure::Network(Transient::Status(_)) => ErrorCode::ServerError.as_str(),
            Failure::Refresh(_) => ClientCode::UnexpectedResponse.as_str(),
            Failure::Login { code, .. } => code,
        }
    }

    /// A refresh that failed with `status` (0: no answer) without ending the session, as it is
    /// told again: to the callers who need a refresh before the wait is over, and by another
    /// tab (a timeout is told as `network`).
    pub fn of_status(status: u16) -> Failure {
        match status {
            0 => Failure::Network(Transient::Network),
            408 | 429 | 500..=599 => Failure::Network(Transient::Status(status)),
            s => Failure::Refresh(s),
        }
    }

    /// A request the server answered with `status` and no token: the one wording of every
    /// refusal. The server's trouble (408, 5xx) is a network error; 429 is `too_many_attempts`
    /// with its `Retry-After`; anything else is refused with the server's `error` if it is a
    /// plain code (never arbitrary text), else `default`.
    pub fn refusal(
        status: u16,
        error: Option<String>,
        retry_after: Option<f64>,
        default: &str,
    ) -> Failure {
        let (code, retry_after) = match status {
            408 | 500..=599 => return Failure::Network(Transient::Status(status)),
            429 => (
                ErrorCode::TooManyAttempts.as_str().into(),
                retry_after.filter(|s| s.is_finite() && *s >= 0.0),
            ),
            _ => (
                error
                    .filter(|c| {
                        !c.is_empty()
                            && c.len() <= 64
                            && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                    .unwrap_or_else(|| default.into()),
                None,
            ),
        };
        Failure::Login {
            code,
            status,
            retry_after,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Network(Transient::Status(s)) | Failure::Refresh(s) => Some(*s),
            Failure::Login { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A message between tabs, already parsed by the driver (and checked again here).
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Ask,
    Token {
        login: bool,
        token: String,
        lifetime_secs: f64,
        at_ms: f64,
        /// DPoP: the auth server's newest nonce, as the sending tab knows it.
        nonce: Option<String>,
    },
    Logout {
        at_ms: f64,
    },
    Ended {
        reason: EndReason,
        at_ms: f64,
    },
    /// A refresh failed without ending the session, with `status` (0: no answer; see
    /// [`Failure::of_status`]).
    Failed {
        status: u16,
        at_ms: f64,
    },
}

/// An event for the app's `on(...)` handlers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Emit {
    Login,
    Refresh { expires_in_secs: f64 },
    SessionExpired(EndReason),
    TokenReused,
    Logout,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Send the fetch of `caller` with `Authorization: Bearer <token>`, then report its status
    /// with [`Machine::fetch_status`]. `None`: send it untouched and return its response.
    Send {
        caller: Id,
        token: Option<String>,
        /// DPoP: the key that signs its proof.
        key: Option<Slot>,
    },
    /// Return the response the caller's request got, as it is.
    Return {
        caller: Id,
    },
    Resolve {
        caller: Id,
        value: Value,
    },
    Reject {
        caller: Id,
        failure: Failure,
    },
    /// POST to an auth endpoint with cookies and the CSRF header (and the login credentials of
    /// `caller`, for `Login`); report with [`Machine::reply`].
    Request {
        req: Id,
        endpoint: Endpoint,
        bearer: Option<String>,
        caller: Option<Id>,
        /// DPoP: the key that signs its proof.
        key: Option<Slot>,
    },
    /// Abort request `req` (it timed out); a late reply is ignored anyway.
    Abort {
        req: Id,
    },
    /// Post to the other tabs.
    Post(Message),
    /// Ask for the cross-tab lock: `wait: false` = only if free. Report with [`Machine::lock`].
    Lock {
        wait: bool,
    },
    /// Release the lock held.
    Unlock,
    /// Stop waiting for the lock (and release it at once if it is granted after all).
    CancelLock,
    /// Call [`Machine::timer`] with `id` after `ms`.
    Timer {
        id: Id,
        ms: f64,
    },
    CancelTimer {
        id: Id,
    },
    Emit(Emit),
    /// DPoP: what to do with the keys and their store ([`KeyOp`]).
    Key {
        op: KeyOp,
        slot: Slot,
        with: f64,
    },
}

/// The machine's settings (validated by the driver).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub policy: Policy,
    /// Share refreshes, tokens and logouts with the other tabs.
    pub cross_tab: bool,
    /// How long a request to an auth endpoint, or a wait for the lock, may take.
    pub timeout_ms: f64,
    /// The session hint cookie was there at construction (or none is configured).
    pub hint: bool,
    /// Seeds the retry jitter.
    pub seed: u32,
    /// Sender-constrained tokens (RFC 9449): every auth and resource request carries a proof,
    /// tokens go out as `Authorization: DPoP`, and only `token_type: DPoP` is accepted.
    pub dpop: bool,
    /// DPoP: the auth server's place in the driver's list of servers (see [`Machine::seen`]).
    pub auth_server: usize,
}
