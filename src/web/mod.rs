//! The machine's WebAssembly interface, for the driver `src/web/tokenwarden.js`: plain exported
//! functions over numbers, and strings in linear memory (read as ASCII). No wasm-bindgen, no
//! imports, no async: the module cannot call out, so nothing can re-enter it while an export
//! runs.
//! Every decision and the token stay here; the driver only carries out the commands.
//! (docs/SIZE.md has the measurements behind this shape.)
//!
//! The numbers, the `Out` record's layout and the exports' names are in `src/iface.rs`, the
//! one table both sides follow. DPoP (`seen`, `proof`) are queries, not commands: before
//! signing a proof the driver asks the core for its `iat` and nonce; each response's
//! `DPoP-Nonce` and `Date` are reported before its status, so the core decides whether to
//! send it once more.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;

use crate::heap::Heap;

use crate::core::{Command, Config, Machine, Policy};
use crate::iface::{self, Fact, Input, Out, opt};

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

struct State {
    /// This instance's machine: the driver instantiates the module once per `TokenManager`.
    machine: Option<Machine>,
    inbox: Vec<u8>,
    out: Out,
    /// The command whose fields are in `out` (its strings are read from here).
    cur: Command,
}

struct Global(UnsafeCell<State>);

// SAFETY: wasm32-unknown-unknown without the atomics feature has one thread, and this module
// imports no function, so no export can run while another one is running.
unsafe impl Sync for Global {}

static STATE: Global = Global(UnsafeCell::new(State {
    machine: None,
    inbox: Vec::new(),
    out: Out {
        a: 0.0,
        b: 0.0,
        id: 0,
        c: 0,
        s_ptr: 0,
        s_len: 0,
        t_ptr: 0,
        t_len: 0,
    },
    cur: Command::Unlock,
}));

fn state() -> &'static mut State {
    // SAFETY: see `Global`; every export takes this reference once and drops it on return.
    unsafe { &mut *STATE.0.get() }
}

fn machine() -> Option<&'static mut Machine> {
    state().machine.as_mut()
}

/// The inbox's next string of `len` bytes from `*at` (-1: absent), as ASCII: every byte
/// outside ASCII becomes `?` where it is. Everything the core reads is ASCII when it is well
/// formed (tokens, nonces, protocol words), and a `?` never matches one of them. This spares
/// the `.wasm` the UTF-8 validator (~750 bytes). Valid until the driver writes the inbox again.
fn text(at: &mut usize, len: i32) -> Option<&'static str> {
    let len = usize::try_from(len).ok()?;
    let bytes = state().inbox.get_mut(*at..*at + len)?;
    *at += len;
    for b in bytes.iter_mut() {
        if *b >= 0x80 {
            *b = b'?';
        }
    }
    // SAFETY: every byte is below 0x80: ASCII, and therefore UTF-8.
    Some(unsafe { core::str::from_utf8_unchecked(bytes) })
}

fn string(at: &mut usize, len: i32) -> Option<String> {
    text(at, len).map(str::to_owned)
}

/// Room for `len` bytes of strings; the driver writes them at the returned address.
#[unsafe(export_name = "i")]
pub extern "C" fn tw_inbox(len: usize) -> *mut u8 {
    let inbox = &mut state().inbox;
    inbox.clear();
    inbox.resize(len, 0);
    inbox.as_mut_ptr()
}

/// Where the current command's fields are.
#[unsafe(export_name = "o")]
pub extern "C" fn tw_out() -> *const Out {
    &state().out
}

/// The machine, made once (later calls change nothing).
#[unsafe(export_name = "m")]
pub extern "C" fn tw_new(
    leeway: f64,
    auto_refresh: u32,
    cross_tab: u32,
    timeout_ms: f64,
    hint: u32,
    seed: u32,
    dpop: u32,
    auth_server: u32,
) {
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
        auth_server: auth_server as usize,
    };
    state().machine.get_or_insert_with(|| Machine::new(config));
}

/// The next command's [`Op`] (0: none left); its fields are then in [`Out`] (`src/iface.rs`).
/// Its strings are pointed at where they are: the command is kept until the next one.
#[unsafe(export_name = "n")]
pub extern "C" fn tw_next() -> u32 {
    let Some(c) = machine().and_then(Machine::poll) else {
        return 0;
    };
    let State { cur, out, .. } = state();
    *cur = c;
    let f = iface::fields(cur);
    *out = Out {
        a: f.a,
        b: f.b,
        id: f.id,
        c: f.c,
        s_ptr: f.s.as_ptr() as u32,
        s_len: f.s.len() as u32,
        t_ptr: f.t.as_ptr() as u32,
        t_len: f.t.len() as u32,
    };
    f.op as u32
}

/// An [`Input`]: a caller's call (`id` the caller's, `flag` as the table says) or what
/// happened. Returns 0, changing nothing, for a kind in no row of the table.
#[unsafe(export_name = "c")]
pub extern "C" fn tw_input(kind: u32, id: u32, flag: u32, now: f64) -> u32 {
    let (Some(m), Some(kind)) = (machine(), Input::from_u32(kind)) else {
        return 0;
    };
    match kind.fact(flag != 0) {
        Fact::Call(call) => m.call(id, call, now),
        Fact::Forget => m.forget(id),
        Fact::Lock { granted } => m.lock(granted, now),
        Fact::Timer => m.timer(id, now),
        Fact::Wake => m.wake(now),
    }
    1
}

/// The status of a Send's response; the `error` of its `WWW-Authenticate: DPoP` challenge in
/// the inbox (-1: none). Report its `DPoP-Nonce` and `Date` with `seen` first.
#[unsafe(export_name = "s")]
pub extern "C" fn tw_status(id: u32, status: u32, replayable: u32, error_len: i32, now: f64) {
    let error = text(&mut 0, error_len);
    if let Some(m) = machine() {
        m.fetch_status(id, status as u16, replayable != 0, error, now);
    }
}

/// DPoP: a response from server `i` (the place of its origin in the driver's list) with its
/// `DPoP-Nonce` in the inbox (-1: none) and its `Date` in ms (NaN: none).
#[unsafe(export_name = "d")]
pub extern "C" fn tw_seen(i: u32, nonce_len: i32, date: f64, now: f64) {
    let nonce = string(&mut 0, nonce_len);
    if let Some(m) = machine() {
        m.seen(i as usize, nonce, opt(date), now);
    }
}

/// DPoP: the `iat` for a proof to server `i`; its nonce (if any) in `s` of Out.
#[unsafe(export_name = "p")]
pub extern "C" fn tw_proof(i: u32, now: f64) -> f64 {
    let State { machine, out, .. } = state();
    let m = machine.as_ref();
    let (iat, nonce) = m.map_or((f64::NAN, None), |m| m.proof(i as usize, now));
    // Pointed at in the machine: the driver reads it before its next call.
    let nonce = nonce.unwrap_or_default();
    out.s_ptr = nonce.as_ptr() as u32;
    out.s_len = nonce.len() as u32;
    iat
}

/// The answer to a Request; `status` 0: `fetch` rejected. Strings in the inbox: access_token,
/// token_type, error. Numbers: NaN when absent.
#[unsafe(export_name = "r")]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn tw_reply(
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
    let at = &mut 0;
    let (token, token_type) = (string(at, token_len), string(at, type_len));
    let reply = iface::reply(
        status,
        token,
        token_type,
        string(at, error_len),
        expires_in,
        claims_lifetime,
    );
    if let Some(m) = machine() {
        m.reply(req, reply, opt(retry_after), now);
    }
}

/// A message from another tab, its fields as found: `kind` and `reason` their places in
/// `PEER_KINDS` and `END_REASONS` (-1: none), its token and DPoP nonce in the inbox, the
/// token's own `exp - iat` (NaN: none), its number (a token's
/// lifetime, a failure's status). Anything malformed is dropped here or by the machine.
#[unsafe(export_name = "e")]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn tw_peer(
    kind: i32,
    token_len: i32,
    nonce_len: i32,
    reason: i32,
    login: u32,
    number: f64,
    claims_lifetime: f64,
    at: f64,
    now: f64,
) {
    let at_inbox = &mut 0;
    let token = string(at_inbox, token_len);
    let nonce = string(at_inbox, nonce_len);
    let login = login != 0;
    let Some(message) = iface::peer_message(
        kind,
        token,
        nonce,
        reason,
        login,
        number,
        claims_lifetime,
        at,
    ) else {
        return;
    };
    if let Some(m) = machine() {
        m.peer(message, now);
    }
}

/// Milliseconds until the token expires; NaN without one (not logged in).
#[unsafe(export_name = "x")]
pub extern "C" fn tw_expires_in(now: f64) -> f64 {
    machine()
        .and_then(|m| m.session().expires_in_ms(now))
        .unwrap_or(f64::NAN)
}

/// The token held, pointed at in `s` of Out (the driver decodes its payload for `claims()`);
/// returns 1 if there is one.
#[unsafe(export_name = "t")]
pub extern "C" fn tw_token() -> u32 {
    let State { machine, out, .. } = state();
    let token = machine.as_ref().and_then(|m| m.session().token());
    let t = token.unwrap_or_default();
    out.s_ptr = t.as_ptr() as u32;
    out.s_len = t.len() as u32;
    u32::from(token.is_some())
}
