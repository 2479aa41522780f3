//! The machine's WebAssembly interface, for the driver `src/web/tokenwarden.js`: plain exported
//! functions over numbers, and strings in linear memory (read as ASCII). No wasm-bindgen, no
//! imports, no async: the module cannot call out, so nothing can re-enter it while an export
//! runs.
//! Every decision and the token stay here; the driver only carries out the commands.
//! (docs/SIZE.md has the measurements behind this shape.)
//!
//! Strings in: the driver writes them back to back into the inbox (`tw_inbox(len)` returns
//! where) and passes their lengths (-1: absent). Commands out: `tw_next(h)` returns an opcode
//! and fills the [`Out`] record whose address `tw_out()` gives:
//!
//! | op | command | fields |
//! |---|---|---|
//! | 1 | Send | id caller, a 1 if token, s token |
//! | 2 | Return | id caller |
//! | 3 | Resolve | id caller, a 0 unit / 1 bool (b 0/1) / 2 token (s) |
//! | 4 | Reject | id caller, s error name, t code, a status (0 none), b retryAfter (NaN none) |
//! | 5 | Request | id req, a 0 login / 1 refresh / 2 logout, s bearer (empty: none), b caller (-1 none) |
//! | 6 | Abort | id req |
//! | 7 | Post | s kind, t token or reason, a lifetime, b at, id 1 if login |
//! | 8 | Lock | a 1 to wait, 0 if available only |
//! | 9 | Unlock | |
//! | 10 | CancelLock | |
//! | 11 | Timer | id, a ms |
//! | 12 | CancelTimer | id |
//! | 13 | Emit | s event, a expiresIn, t reason |
//!
//! DPoP (`tw_seen`, `tw_proof`) are queries, not commands: before signing a proof the driver
//! asks the core for its `iat` and nonce; each response's `DPoP-Nonce` and `Date` are
//! reported before its status, so the core decides whether to send it once more.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;

use crate::heap::Heap;

use crate::core::{
    Call, Command, Config, Emit, Endpoint, Failure, Machine, Message, Phase, Policy, RefreshReply,
    Transient, Value, decode_payload_bytes,
};
use crate::proto::{EndReason, Event, PeerKind};

/// The allocator: size classes with a free list each (`heap.rs`: why a long-lived tab does not
/// fragment, and its tests); new memory from `memory.grow`.
struct Alloc(UnsafeCell<Heap>);

// SAFETY: one thread (see `Global`), and the heap calls nothing that allocates.
unsafe impl Sync for Alloc {}

#[global_allocator]
static ALLOC: Alloc = Alloc(UnsafeCell::new(Heap::new()));

// `realloc` is the trait's: a new block, a copy, the old one freed.
unsafe impl GlobalAlloc for Alloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: one thread, and no allocation runs inside another.
        let heap = unsafe { &mut *self.0.get() };
        // SAFETY: the heap's lists hold only its own blocks; grown memory is ours for good.
        unsafe {
            heap.alloc(layout, |bytes| {
                let pages = bytes.div_ceil(65536);
                let before = core::arch::wasm32::memory_grow(0, pages);
                (before != usize::MAX).then(|| (before * 65536, pages * 65536))
            })
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as in `alloc`; `ptr` came from it with `layout` (GlobalAlloc's contract).
        unsafe { (*self.0.get()).dealloc(ptr, layout) }
    }
}

/// The current command's fields, read by the driver straight from memory.
#[repr(C)]
pub struct Out {
    a: f64,
    b: f64,
    id: u32,
    s_ptr: u32,
    s_len: u32,
    t_ptr: u32,
    t_len: u32,
}

struct State {
    machines: Vec<Option<Machine>>,
    inbox: Vec<u8>,
    out: Out,
    s: String,
    t: String,
    payload: Vec<u8>,
}

struct Global(UnsafeCell<State>);

// SAFETY: wasm32-unknown-unknown without the atomics feature has one thread, and this module
// imports no function, so no export can run while another one is running.
unsafe impl Sync for Global {}

static STATE: Global = Global(UnsafeCell::new(State {
    machines: Vec::new(),
    inbox: Vec::new(),
    out: Out {
        a: 0.0,
        b: 0.0,
        id: 0,
        s_ptr: 0,
        s_len: 0,
        t_ptr: 0,
        t_len: 0,
    },
    s: String::new(),
    t: String::new(),
    payload: Vec::new(),
}));

fn state() -> &'static mut State {
    // SAFETY: see `Global`; every export takes this reference once and drops it on return.
    unsafe { &mut *STATE.0.get() }
}

fn machine(h: u32) -> Option<&'static mut Machine> {
    state().machines.get_mut(h as usize)?.as_mut()
}

/// The inbox's next string of `len` bytes from `*at` (-1: absent), as ASCII (`ascii`).
fn string(at: &mut usize, len: i32) -> Option<String> {
    let len = usize::try_from(len).ok()?;
    let bytes = state().inbox.get(*at..*at + len)?;
    *at += len;
    Some(ascii(bytes))
}

/// `bytes` as a string in which every byte outside ASCII became `?`. Everything the core
/// reads is ASCII when it is well formed (tokens, origins, nonces, protocol words), and a `?`
/// never matches one of them. This spares the `.wasm` the UTF-8 validator (~750 bytes).
fn ascii(bytes: &[u8]) -> String {
    let ascii: Vec<u8> = bytes
        .iter()
        .map(|&b| if b < 0x80 { b } else { b'?' })
        .collect();
    // SAFETY: every byte is below 0x80: ASCII, and therefore UTF-8.
    unsafe { String::from_utf8_unchecked(ascii) }
}

fn strings3(lens: [i32; 3]) -> (Option<String>, Option<String>, Option<String>) {
    let at = &mut 0;
    (
        string(at, lens[0]),
        string(at, lens[1]),
        string(at, lens[2]),
    )
}

fn opt(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// Room for `len` bytes of strings; the driver writes them at the returned address.
#[unsafe(no_mangle)]
pub extern "C" fn tw_inbox(len: usize) -> *mut u8 {
    let inbox = &mut state().inbox;
    inbox.clear();
    inbox.resize(len, 0);
    inbox.as_mut_ptr()
}

/// Where the current command's fields are.
#[unsafe(no_mangle)]
pub extern "C" fn tw_out() -> *const Out {
    &state().out
}

/// A new machine (`origins`: the allowed origins in the inbox, one per line); its handle.
#[unsafe(no_mangle)]
pub extern "C" fn tw_new(
    leeway: f64,
    auto_refresh: u32,
    cross_tab: u32,
    timeout_ms: f64,
    hint: u32,
    seed: u32,
    dpop: u32,
    origins_len: i32,
) -> u32 {
    let origins = string(&mut 0, origins_len);
    let config = Config {
        policy: Policy {
            leeway_secs: leeway,
            auto_refresh: auto_refresh != 0,
        },
        cross_tab: cross_tab != 0,
        timeout_ms,
        hint: hint != 0,
        seed,
        dpop: dpop != 0,
        allowed_origins: origins
            .unwrap_or_default()
            .as_bytes()
            .split(|b| *b == b'\n')
            .map(ascii)
            .collect(),
    };
    let machines = &mut state().machines;
    machines.push(Some(Machine::new(config)));
    (machines.len() - 1) as u32
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_free(h: u32) {
    if let Some(slot) = state().machines.get_mut(h as usize) {
        *slot = None;
    }
}

/// A string field of [`Out`]: owned text is kept in `State` until the next command; protocol
/// words are pointed at where they are.
enum Text {
    Owned(String),
    Word(&'static str),
}

impl Text {
    fn place(self, keep: &mut String) -> (u32, u32) {
        let s: &str = match self {
            Text::Owned(s) => {
                *keep = s;
                keep
            }
            Text::Word(w) => w,
        };
        (s.as_ptr() as u32, s.len() as u32)
    }
}

const NONE: Text = Text::Word("");

/// The next command's opcode (0: none left); its fields are then in [`Out`].
#[unsafe(no_mangle)]
pub extern "C" fn tw_next(h: u32) -> u32 {
    let Some(c) = machine(h).and_then(Machine::poll) else {
        return 0;
    };
    let owned = |s: Option<String>| Text::Owned(s.unwrap_or_default());
    let (op, id, a, b, s, t) = match c {
        Command::Send { caller, token } => {
            let has = f64::from(u8::from(token.is_some()));
            (1, caller, has, 0.0, owned(token), NONE)
        }
        Command::Return { caller } => (2, caller, 0.0, 0.0, NONE, NONE),
        Command::Resolve { caller, value } => match value {
            Value::Unit => (3, caller, 0.0, 0.0, NONE, NONE),
            Value::Bool(v) => (3, caller, 1.0, f64::from(u8::from(v)), NONE, NONE),
            Value::Token(token) => (3, caller, 2.0, 0.0, Text::Owned(token), NONE),
        },
        Command::Reject { caller, failure } => {
            let status = failure.status().map_or(0.0, f64::from);
            let name = Text::Word(failure.name().as_str());
            let (retry, code) = match failure {
                Failure::Login {
                    retry_after, code, ..
                } => (retry_after.unwrap_or(f64::NAN), Text::Owned(code)),
                f => (f64::NAN, Text::Owned(f.code().to_owned())),
            };
            (4, caller, status, retry, name, code)
        }
        Command::Request {
            req,
            endpoint,
            bearer,
            caller,
        } => {
            let e = match endpoint {
                Endpoint::Login => 0.0,
                Endpoint::Refresh => 1.0,
                Endpoint::Logout => 2.0,
            };
            (
                5,
                req,
                e,
                caller.map_or(-1.0, f64::from),
                owned(bearer),
                NONE,
            )
        }
        Command::Abort { req } => (6, req, 0.0, 0.0, NONE, NONE),
        Command::Post(m) => {
            let (kind, login, lifetime, at, t) = match m {
                Message::Ask => (PeerKind::Ask, false, 0.0, 0.0, NONE),
                Message::Token {
                    login,
                    token,
                    lifetime_secs,
                    at_ms,
                } => (
                    PeerKind::Token,
                    login,
                    lifetime_secs,
                    at_ms,
                    Text::Owned(token),
                ),
                Message::Logout { at_ms } => (PeerKind::Logout, false, 0.0, at_ms, NONE),
                Message::Ended { reason, at_ms } => {
                    let r = Text::Word(reason.as_str());
                    (PeerKind::Ended, false, 0.0, at_ms, r)
                }
            };
            let kind = Text::Word(kind.as_str());
            (7, u32::from(login), lifetime, at, kind, t)
        }
        Command::Lock { wait } => (8, 0, f64::from(u8::from(wait)), 0.0, NONE, NONE),
        Command::Unlock => (9, 0, 0.0, 0.0, NONE, NONE),
        Command::CancelLock => (10, 0, 0.0, 0.0, NONE, NONE),
        Command::Timer { id, ms } => (11, id, ms, 0.0, NONE, NONE),
        Command::CancelTimer { id } => (12, id, 0.0, 0.0, NONE, NONE),
        Command::Emit(e) => {
            let (event, expires_in, reason) = match e {
                Emit::Login => (Event::Login, 0.0, NONE),
                Emit::Refresh { expires_in_secs } => (Event::Refresh, expires_in_secs, NONE),
                Emit::SessionExpired(r) => (Event::SessionExpired, 0.0, Text::Word(r.as_str())),
                Emit::TokenReused => (Event::TokenReused, 0.0, NONE),
                Emit::Logout => (Event::Logout, 0.0, NONE),
            };
            (13, 0, expires_in, 0.0, Text::Word(event.as_str()), reason)
        }
    };
    let st = state();
    let (s_ptr, s_len) = s.place(&mut st.s);
    let (t_ptr, t_len) = t.place(&mut st.t);
    st.out = Out {
        a,
        b,
        id,
        s_ptr,
        s_len,
        t_ptr,
        t_len,
    };
    op
}

/// A caller's call: 1 fetch, 2 getAccessToken, 3 refresh (`flag`: force), 4 restore (`flag`:
/// hint cookie present), 5 login, 6 logout.
#[unsafe(no_mangle)]
pub extern "C" fn tw_call(h: u32, id: u32, kind: u32, flag: u32, now: f64) {
    let flag = flag != 0;
    let call = match kind {
        1 => Call::Fetch,
        2 => Call::Token,
        3 => Call::Refresh { force: flag },
        4 => Call::Restore { hint: flag },
        5 => Call::Login,
        _ => Call::Logout,
    };
    if let Some(m) = machine(h) {
        m.call(id, call, now);
    }
}

/// The status of a Send's response; its `WWW-Authenticate` in the inbox (-1: none). Report
/// its `DPoP-Nonce` and `Date` with `tw_seen` first.
#[unsafe(no_mangle)]
pub extern "C" fn tw_status(
    h: u32,
    id: u32,
    status: u32,
    replayable: u32,
    challenge_len: i32,
    now: f64,
) {
    let challenge = string(&mut 0, challenge_len);
    if let Some(m) = machine(h) {
        m.fetch_status(
            id,
            status as u16,
            replayable != 0,
            challenge.as_deref(),
            now,
        );
    }
}

/// DPoP: a response from an origin (inbox: origin, `DPoP-Nonce` or absent) with its `Date`
/// in ms (NaN: none).
#[unsafe(no_mangle)]
pub extern "C" fn tw_seen(h: u32, origin_len: i32, nonce_len: i32, date: f64, now: f64) {
    let at = &mut 0;
    let origin = string(at, origin_len);
    let nonce = string(at, nonce_len);
    if let (Some(m), Some(origin)) = (machine(h), origin) {
        m.seen(&origin, nonce, opt(date), now);
    }
}

/// DPoP: the `iat` for a proof to the origin in the inbox; its nonce (if any) in `s` of Out.
#[unsafe(no_mangle)]
pub extern "C" fn tw_proof(h: u32, origin_len: i32, now: f64) -> f64 {
    let origin = string(&mut 0, origin_len).unwrap_or_default();
    let (iat, nonce) = machine(h).map_or((f64::NAN, None), |m| {
        let (iat, nonce) = m.proof(&origin, now);
        (iat, nonce.map(str::to_owned))
    });
    let st = state();
    let (p, l) = Text::Owned(nonce.unwrap_or_default()).place(&mut st.s);
    st.out.s_ptr = p;
    st.out.s_len = l;
    iat
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_forget(h: u32, id: u32) {
    if let Some(m) = machine(h) {
        m.forget(id);
    }
}

/// The answer to a Request; `status` 0: `fetch` rejected. Strings in the inbox: access_token,
/// token_type, error. Numbers: NaN when absent.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn tw_reply(
    h: u32,
    req: u32,
    status: u32,
    token_len: i32,
    type_len: i32,
    error_len: i32,
    expires_in: f64,
    claims_lifetime: f64,
    retry_after: f64,
    now: f64,
) {
    let (access_token, token_type, error) = strings3([token_len, type_len, error_len]);
    let reply = match status {
        0 => Err(Transient::Network),
        s => Ok(RefreshReply {
            status: u16::try_from(s).unwrap_or(0),
            access_token,
            token_type,
            expires_in: opt(expires_in),
            error,
            claims_lifetime: opt(claims_lifetime),
        }),
    };
    if let Some(m) = machine(h) {
        m.reply(req, reply, opt(retry_after), now);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_lock(h: u32, granted: u32, now: f64) {
    if let Some(m) = machine(h) {
        m.lock(granted != 0, now);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_timer(h: u32, id: u32, now: f64) {
    if let Some(m) = machine(h) {
        m.timer(id, now);
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_wake(h: u32, now: f64) {
    if let Some(m) = machine(h) {
        m.wake(now);
    }
}

/// A message from another tab, its fields as found (strings in the inbox: kind, token,
/// reason). Anything malformed is dropped here or by the machine.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn tw_peer(
    h: u32,
    kind_len: i32,
    token_len: i32,
    reason_len: i32,
    login: u32,
    lifetime: f64,
    at: f64,
    now: f64,
) {
    let (kind, token, reason) = strings3([kind_len, token_len, reason_len]);
    let message = match kind.as_deref().and_then(PeerKind::parse) {
        Some(PeerKind::Ask) => Message::Ask,
        Some(PeerKind::Token) => {
            let Some(token) = token else { return };
            Message::Token {
                login: login != 0,
                token,
                lifetime_secs: lifetime,
                at_ms: at,
            }
        }
        Some(PeerKind::Logout) => Message::Logout { at_ms: at },
        Some(PeerKind::Ended) => {
            let Some(reason) = reason.as_deref().and_then(EndReason::parse) else {
                return;
            };
            Message::Ended { reason, at_ms: at }
        }
        None => return,
    };
    if let Some(m) = machine(h) {
        m.peer(message, now);
    }
}

/// Whether the origin in the inbox gets the token.
#[unsafe(no_mangle)]
pub extern "C" fn tw_allows(h: u32, len: i32) -> u32 {
    let origin = string(&mut 0, len);
    u32::from(origin.zip(machine(h)).is_some_and(|(o, m)| m.allows(&o)))
}

#[unsafe(no_mangle)]
pub extern "C" fn tw_authenticated(h: u32) -> u32 {
    u32::from(machine(h).is_some_and(|m| m.session().phase() == Phase::Active))
}

/// Milliseconds until the token expires; NaN without one.
#[unsafe(no_mangle)]
pub extern "C" fn tw_expires_in(h: u32, now: f64) -> f64 {
    machine(h)
        .and_then(|m| m.session().expires_in_ms(now))
        .unwrap_or(f64::NAN)
}

/// The payload of the held token (`h` >= 0) or of the token in the inbox (`h` < 0, with
/// `len`), as bytes in `s`; returns 1 if there is one.
#[unsafe(no_mangle)]
pub extern "C" fn tw_payload(h: i32, len: i32) -> u32 {
    let bytes = match u32::try_from(h) {
        Ok(h) => machine(h)
            .and_then(|m| m.session().token())
            .and_then(|t| decode_payload_bytes(t).ok()),
        Err(_) => string(&mut 0, len).and_then(|t| decode_payload_bytes(&t).ok()),
    };
    let st = state();
    let found = bytes.is_some();
    // The driver decodes these bytes with TextDecoder (which replaces invalid UTF-8).
    st.payload = bytes.unwrap_or_default();
    st.out.s_ptr = st.payload.as_ptr() as u32;
    st.out.s_len = st.payload.len() as u32;
    u32::from(found)
}
