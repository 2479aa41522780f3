//! The `.wasm`'s interface, written once: the numbers that cross it (the commands `next`
//! returns, the inputs `input` takes, the auth endpoints), where the fields of the `Out` record
//! are, the exports' names, and the protocol words the driver turns numbers back into.
//! `src/web/mod.rs` uses these; the driver's copy (the block between the `iface` markers in
//! `src/web/tokenwarden.js`) is generated from this file by the test below, which fails when
//! the two differ (`TW_BLESS=1 cargo test -p tokenwarden iface` rewrites the block).
//!
//! Strings in: the driver writes them back to back into the inbox (`inbox(len)` returns where)
//! and passes their lengths (-1: absent). Commands out: `next(h)` returns an [`Op`] (0: none
//! left) and fills the `Out` record whose address `out()` gives. Its fields per command
//! (`w` = an index into the word list named):
//!
//! | op | fields |
//! |---|---|
//! | Send | id caller, a 1 if a token (s), b key slot (0 none) |
//! | Return | id caller |
//! | Resolve | id caller, a 0 unit / 1 bool (b 0/1) / 2 token (s) |
//! | Reject | id caller, c error name (w `ERROR_NAMES`), s code, a status (0 none), b retryAfter (NaN none) |
//! | Request | id req, c [`Endpoint`], s bearer (empty: none), b caller (-1 none), a key slot (0 none) |
//! | Abort | id req |
//! | Post | c peer kind (w `PEER_KINDS`), b at; token: t token, a lifetime, id 1 if a login, s the auth server's DPoP nonce (empty: none); ended: id reason (w `END_REASONS`); failed: id status |
//! | Lock | a 1 to wait, 0 if available only |
//! | Unlock, CancelLock | |
//! | Timer | id, a ms |
//! | CancelTimer | id |
//! | Emit | c event (w `EVENTS`), a expiresIn, b reason (w `END_REASONS`, -1 none) |
//! | Key | c [`KeyOp`], id slot; given: a caller; putBack: a live slot; delete: a at (ms) |

use crate::core::{self, Call, Command, Emit, Failure, Message, RefreshReply, Transient, Value};
#[cfg(test)]
use crate::proto::{
    CSRF_HEADER, CSRF_VALUE, ClientCode, CookieName, ErrorCode, FEDERATION_ERROR_PARAM,
    FederationError, OIDC_PATH,
};
use crate::proto::{EndReason, ErrorName, Event, PeerKind};

macro_rules! numbered {
    ($(#[$doc:meta])* $name:ident as $js:literal { $($(#[$vdoc:meta])* $variant:ident = $n:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(u32)]
        pub enum $name {
            $($(#[$vdoc])* $variant = $n,)+
        }

        impl $name {
            /// The value of a number from the driver; `None` for any other number.
            pub fn from_u32(n: u32) -> Option<$name> {
                match n {
                    $($n => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Each value with its name, for the driver's copy (prefixed with `$js`).
            #[cfg(test)]
            const TABLE: (&'static str, &'static [(&'static str, u32)]) =
                ($js, &[$((stringify!($variant), $n),)+]);
        }
    };
}

numbered! {
    /// What `next(h)` returns: the command the driver carries out next.
    Op as "OP" {
        Send = 1,
        Return = 2,
        Resolve = 3,
        Reject = 4,
        Request = 5,
        Abort = 6,
        Post = 7,
        Lock = 8,
        Unlock = 9,
        CancelLock = 10,
        Timer = 11,
        CancelTimer = 12,
        Emit = 13,
        Key = 14,
    }
}

numbered! {
    /// What a `Key` command does ([`core::KeyOp`]).
    KeyOp as "KEY" {
        Load = 0,
        New = 1,
        Given = 2,
        PutBack = 3,
        Delete = 4,
        Free = 5,
    }
}

numbered! {
    /// The `kind` of `input(h, kind, id, flag, now)`: a caller's call (`id` the caller's) or
    /// what happened.
    Input as "IN" {
        /// `auth.fetch` to an allowed origin.
        Fetch = 1,
        /// `getAccessToken()`.
        Token = 2,
        /// `refresh()`; `flag`: force.
        Refresh = 3,
        /// `restore()`; `flag`: the hint cookie is there.
        Restore = 4,
        /// A sign-in (password, code, a redirect's return); `flag`: signed by the DPoP key the
        /// caller brings.
        Login = 5,
        Logout = 6,
        /// The fetch of caller `id` threw: forget it.
        Forget = 7,
        /// The lock asked for: `flag` granted.
        Lock = 8,
        /// Timer `id` fired.
        Timer = 9,
        /// The page became visible, came online or was restored.
        Wake = 10,
        /// A request to the auth server beside the sign-in (`_post`); `flag`: signed.
        Post = 11,
    }
}

numbered! {
    /// The auth endpoint of a `Request`.
    Endpoint as "TO" {
        Login = 0,
        Refresh = 1,
        Logout = 2,
        /// The path of the caller's `Post`.
        Post = 3,
    }
}

/// Where each field of `Out` is (bytes from its start): two numbers, an id, a small number
/// and two strings as (address, length).
#[repr(C)]
pub struct Out {
    pub a: f64,
    pub b: f64,
    pub id: u32,
    pub c: i32,
    pub s_ptr: u32,
    pub s_len: u32,
    pub t_ptr: u32,
    pub t_len: u32,
}

/// A command as the driver reads it: its [`Op`] and the fields of `Out` as the table above
/// says, its strings borrowed from the command (the glue points `Out` at them).
#[derive(Debug, PartialEq)]
pub struct Fields<'a> {
    pub op: Op,
    pub id: u32,
    pub c: i32,
    pub a: f64,
    pub b: f64,
    pub s: &'a str,
    pub t: &'a str,
}

/// A key slot as the driver reads it (0: none; slots start at 1).
fn slot(key: Option<u32>) -> f64 {
    key.map_or(0.0, f64::from)
}

/// `cmd` in the table's fields.
pub fn fields(cmd: &Command) -> Fields<'_> {
    let (op, id, c, a, b, s, t): (_, _, _, _, _, &str, &str) = match cmd {
        Command::Send { caller, token, key } => {
            let has = f64::from(u8::from(token.is_some()));
            let token = token.as_deref().unwrap_or_default();
            (Op::Send, *caller, 0, has, slot(*key), token, "")
        }
        Command::Return { caller } => (Op::Return, *caller, 0, 0.0, 0.0, "", ""),
        Command::Resolve { caller, value } => {
            let (a, b, s) = match value {
                Value::Unit => (0.0, 0.0, ""),
                Value::Bool(v) => (1.0, f64::from(u8::from(*v)), ""),
                Value::Token(token) => (2.0, 0.0, token.as_str()),
            };
            (Op::Resolve, *caller, 0, a, b, s, "")
        }
        Command::Reject { caller, failure } => {
            let status = failure.status().map_or(0.0, f64::from);
            let retry = match failure {
                Failure::Login { retry_after, .. } => retry_after.unwrap_or(f64::NAN),
                _ => f64::NAN,
            };
            let name = failure.name() as i32;
            (Op::Reject, *caller, name, status, retry, failure.code(), "")
        }
        Command::Request {
            req,
            endpoint,
            bearer,
            caller,
            key,
        } => {
            let e = match endpoint {
                core::Endpoint::Login => Endpoint::Login,
                core::Endpoint::Refresh => Endpoint::Refresh,
                core::Endpoint::Logout => Endpoint::Logout,
                core::Endpoint::Post => Endpoint::Post,
            };
            let caller = caller.map_or(-1.0, f64::from);
            let bearer = bearer.as_deref().unwrap_or_default();
            (Op::Request, *req, e as i32, slot(*key), caller, bearer, "")
        }
        Command::Abort { req } => (Op::Abort, *req, 0, 0.0, 0.0, "", ""),
        Command::Post(m) => {
            let (kind, id, lifetime, at, t, nonce) = match m {
                Message::Ask => (PeerKind::Ask, 0, 0.0, 0.0, "", &None),
                Message::Token {
                    login,
                    token,
                    lifetime_secs,
                    at_ms,
                    nonce,
                } => (
                    PeerKind::Token,
                    u32::from(*login),
                    *lifetime_secs,
                    *at_ms,
                    token.as_str(),
                    nonce,
                ),
                Message::Logout { at_ms } => (PeerKind::Logout, 0, 0.0, *at_ms, "", &None),
                Message::Ended { reason, at_ms } => {
                    (PeerKind::Ended, *reason as u32, 0.0, *at_ms, "", &None)
                }
                Message::Failed { status, at_ms } => {
                    (PeerKind::Failed, u32::from(*status), 0.0, *at_ms, "", &None)
                }
            };
            let nonce = nonce.as_deref().unwrap_or_default();
            (Op::Post, id, kind as i32, lifetime, at, nonce, t)
        }
        Command::Lock { wait } => {
            let wait = f64::from(u8::from(*wait));
            (Op::Lock, 0, 0, wait, 0.0, "", "")
        }
        Command::Unlock => (Op::Unlock, 0, 0, 0.0, 0.0, "", ""),
        Command::CancelLock => (Op::CancelLock, 0, 0, 0.0, 0.0, "", ""),
        Command::Timer { id, ms } => (Op::Timer, *id, 0, *ms, 0.0, "", ""),
        Command::CancelTimer { id } => (Op::CancelTimer, *id, 0, 0.0, 0.0, "", ""),
        Command::Emit(e) => {
            let (event, expires_in, reason) = match e {
                Emit::Login => (Event::Login, 0.0, -1.0),
                Emit::Refresh { expires_in_secs } => (Event::Refresh, *expires_in_secs, -1.0),
                Emit::SessionExpired(r) => (Event::SessionExpired, 0.0, f64::from(*r as u8)),
                Emit::TokenReused => (Event::TokenReused, 0.0, -1.0),
                Emit::Logout => (Event::Logout, 0.0, -1.0),
            };
            (Op::Emit, 0, event as i32, expires_in, reason, "", "")
        }
        Command::Key { op, slot, with } => {
            let op = match op {
                core::KeyOp::Load => KeyOp::Load,
                core::KeyOp::New => KeyOp::New,
                core::KeyOp::Given => KeyOp::Given,
                core::KeyOp::PutBack => KeyOp::PutBack,
                core::KeyOp::Delete => KeyOp::Delete,
                core::KeyOp::Free => KeyOp::Free,
            };
            (Op::Key, *slot, op as i32, *with, 0.0, "", "")
        }
    };
    Fields {
        op,
        id,
        c,
        a,
        b,
        s,
        t,
    }
}

/// What an `input` tells the machine: a caller's call, or what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    Call(Call),
    Forget,
    Lock { granted: bool },
    Timer,
    Wake,
}

impl Input {
    /// This input with its `flag`, as the rows above say.
    pub fn fact(self, flag: bool) -> Fact {
        Fact::Call(match self {
            Input::Fetch => Call::Fetch,
            Input::Token => Call::Token,
            Input::Refresh => Call::Refresh { force: flag },
            Input::Restore => Call::Restore { hint: flag },
            Input::Login if flag => Call::LoginWithKey,
            Input::Login => Call::Login,
            Input::Logout => Call::Logout,
            Input::Post => Call::Post { signed: flag },
            Input::Forget => return Fact::Forget,
            Input::Lock => return Fact::Lock { granted: flag },
            Input::Timer => return Fact::Timer,
            Input::Wake => return Fact::Wake,
        })
    }
}

/// A message from another tab from its fields as found (`kind` and `reason` places in
/// `PEER_KINDS` and `END_REASONS`, -1 none; `number` a token's lifetime or a failure's
/// status; `claims_lifetime` the token's own `exp - iat`, NaN none); `None` for one that is
/// malformed (no such kind or reason, a token message without its token). What the machine
/// then accepts is its own check.
#[allow(clippy::too_many_arguments)]
pub fn peer_message(
    kind: i32,
    token: Option<String>,
    nonce: Option<String>,
    reason: i32,
    login: bool,
    number: f64,
    claims_lifetime: f64,
    at_ms: f64,
) -> Option<Message> {
    Some(match word(PeerKind::ALL, kind)? {
        PeerKind::Ask => Message::Ask,
        PeerKind::Token => Message::Token {
            login,
            token: token?,
            lifetime_secs: core::peer_lifetime_secs(number, opt(claims_lifetime)),
            at_ms,
            nonce,
        },
        PeerKind::Logout => Message::Logout { at_ms },
        PeerKind::Ended => Message::Ended {
            reason: word(EndReason::ALL, reason)?,
            at_ms,
        },
        PeerKind::Failed => Message::Failed {
            status: number as u16,
            at_ms,
        },
    })
}

/// The word at place `i` of `all` (-1 or past the end: none).
fn word<T: Copy>(all: &[T], i: i32) -> Option<T> {
    all.get(usize::try_from(i).ok()?).copied()
}

/// `x`, NaN standing for none.
pub fn opt(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// The answer to a request from its fields as found: `status` 0 when `fetch` rejected;
/// numbers NaN when absent.
pub fn reply(
    status: u32,
    access_token: Option<String>,
    token_type: Option<String>,
    error: Option<String>,
    expires_in: f64,
    claims_lifetime: f64,
) -> Result<RefreshReply, Transient> {
    match status {
        0 => Err(Transient::Network),
        s => Ok(RefreshReply {
            status: u16::try_from(s).unwrap_or(0),
            access_token,
            token_type,
            expires_in: opt(expires_in),
            error,
            claims_lifetime: opt(claims_lifetime),
        }),
    }
}

/// The exports: the name the driver calls (short: each is spelt in the `.wasm` and the
/// driver), and the Rust function in `src/web/mod.rs` behind it.
pub const EXPORTS: &[(&str, &str)] = &[
    ("INBOX", "i"),
    ("OUT", "o"),
    ("NEW", "m"),
    ("NEXT", "n"),
    ("INPUT", "c"),
    ("STATUS", "s"),
    ("SEEN", "d"),
    ("PROOF", "p"),
    ("REPLY", "r"),
    ("PEER", "e"),
    ("EXPIRES_IN", "x"),
    ("TOKEN", "t"),
];

/// The lists the driver turns indexes back into words with.
pub fn word_lists() -> [(&'static str, Vec<&'static str>); 4] {
    [
        ("EVENTS", Event::ALL.iter().map(|w| w.as_str()).collect()),
        (
            "PEER_KINDS",
            PeerKind::ALL.iter().map(|w| w.as_str()).collect(),
        ),
        (
            "END_REASONS",
            EndReason::ALL.iter().map(|w| w.as_str()).collect(),
        ),
        (
            "ERROR_NAMES",
            ErrorName::ALL.iter().map(|w| w.as_str()).collect(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::core::mem::offset_of;

    const BEGIN: &str = "// ---- iface: generated from src/iface.rs (TW_BLESS=1 cargo test -p tokenwarden iface) ----\n";
    const END: &str = "// ---- end of iface ----\n";

    fn screaming(camel: &str) -> String {
        let mut s = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_uppercase());
        }
        s
    }

    /// The driver's copy of this table, as JavaScript.
    fn generated() -> String {
        let mut js = String::from(BEGIN);
        for (prefix, table) in [Op::TABLE, Input::TABLE, Endpoint::TABLE, KeyOp::TABLE] {
            let consts: Vec<String> = table
                .iter()
                .map(|(name, n)| format!("{prefix}_{} = {n}", screaming(name)))
                .collect();
            js += &format!("const {};\n", consts.join(", "));
        }
        let out = [
            ("A", offset_of!(Out, a)),
            ("B", offset_of!(Out, b)),
            ("ID", offset_of!(Out, id)),
            ("C", offset_of!(Out, c)),
            ("S", offset_of!(Out, s_ptr)),
            ("T", offset_of!(Out, t_ptr)),
        ];
        let out: Vec<String> = out.iter().map(|(k, o)| format!("OUT_{k} = {o}")).collect();
        js += &format!("const {};\n", out.join(", "));
        let names: Vec<String> = EXPORTS
            .iter()
            .map(|(k, name)| format!("X_{k} = \"{name}\""))
            .collect();
        js += &format!("const {};\n", names.join(", "));
        for (name, words) in word_lists() {
            let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            js += &format!("const {name} = [{}];\n", quoted.join(", "));
        }
        // The protocol's words (src/proto.rs), for the driver to name instead of spelling.
        let words = [
            ("ERR", ErrorCode::VARIANTS),
            ("CODE", ClientCode::VARIANTS),
            ("NAME", ErrorName::VARIANTS),
            ("EVENT", Event::VARIANTS),
            ("PEER", PeerKind::VARIANTS),
            ("END", EndReason::VARIANTS),
            ("FED", FederationError::VARIANTS),
            ("COOKIE", CookieName::VARIANTS),
        ];
        for (prefix, table) in words {
            let consts: Vec<String> = table
                .iter()
                .map(|(name, text)| format!("{prefix}_{} = \"{text}\"", screaming(name)))
                .collect();
            js += &format!("const {};\n", consts.join(", "));
        }
        js += &format!(
            "const OIDC_PATH = \"{OIDC_PATH}\", FEDERATION_ERROR_PARAM = \"{FEDERATION_ERROR_PARAM}\", CSRF_HEADER = \"{CSRF_HEADER}\", CSRF_VALUE = \"{CSRF_VALUE}\";\n"
        );
        js + END
    }

    #[test]
    fn the_driver_has_this_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/web/tokenwarden.js");
        let driver = std::fs::read_to_string(path).expect("the driver");
        let (Some(begin), Some(end)) = (driver.find(BEGIN), driver.find(END)) else {
            panic!("the driver has no iface block");
        };
        let want = generated();
        let have = &driver[begin..end + END.len()];
        if have != want {
            if std::env::var_os("TW_BLESS").is_some() {
                let fixed = driver[..begin].to_owned() + &want + &driver[end + END.len()..];
                std::fs::write(path, fixed).expect("rewrite the driver");
            } else {
                panic!("src/web/tokenwarden.js's iface block differs from src/iface.rs:\n{want}");
            }
        }
    }

    /// Each export is the function the table names, under the name it gives; each is used by
    /// the driver, and the driver calls no other.
    #[test]
    fn the_exports_are_the_tables() {
        let glue = include_str!("web/mod.rs");
        let driver = include_str!("web/tokenwarden.js");
        let mut seen = 0;
        for line in glue.lines() {
            if let Some(rest) = line.trim().strip_prefix("#[unsafe(export_name = \"") {
                let name = rest.split('"').next().unwrap_or_default();
                assert!(
                    EXPORTS.iter().any(|(_, n)| *n == name),
                    "{name} is in no row"
                );
                seen += 1;
            }
        }
        assert_eq!(seen, EXPORTS.len(), "every row is one export");
        assert!(
            !glue.contains("no_mangle"),
            "every export is named by the table"
        );
        for (k, _) in EXPORTS {
            assert!(
                driver.contains(&format!("x[X_{k}]")),
                "the driver never calls X_{k}"
            );
        }
        // The numbers cross only as the generated names: no `case 3:` or `tw_call(h, 5`.
        assert!(!driver.contains(".tw_") && !driver.contains("case 1"));
    }

    fn f(
        op: Op,
        id: u32,
        c: i32,
        a: f64,
        b: f64,
        s: &'static str,
        t: &'static str,
    ) -> Fields<'static> {
        Fields {
            op,
            id,
            c,
            a,
            b,
            s,
            t,
        }
    }

    /// Each command is written into `Out` where the table at the top of this file says: the
    /// driver reads it there (`#drain`, `#post`, `#keyOp`).
    #[test]
    fn each_command_is_written_as_the_table_says() {
        let token = |t: &str| Some(t.to_owned());
        let at = 1_000.0;
        let cases = [
            (
                Command::Send {
                    caller: 7,
                    token: token("tk"),
                    key: Some(2),
                },
                f(Op::Send, 7, 0, 1.0, 2.0, "tk", ""),
            ),
            (
                Command::Send {
                    caller: 7,
                    token: None,
                    key: None,
                },
                f(Op::Send, 7, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Return { caller: 3 },
                f(Op::Return, 3, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Resolve {
                    caller: 3,
                    value: Value::Unit,
                },
                f(Op::Resolve, 3, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Resolve {
                    caller: 3,
                    value: Value::Bool(true),
                },
                f(Op::Resolve, 3, 0, 1.0, 1.0, "", ""),
            ),
            (
                Command::Resolve {
                    caller: 3,
                    value: Value::Token("tk".into()),
                },
                f(Op::Resolve, 3, 0, 2.0, 0.0, "tk", ""),
            ),
            (
                Command::Reject {
                    caller: 4,
                    failure: Failure::Login {
                        code: "too_many_attempts".into(),
                        status: 429,
                        retry_after: Some(30.0),
                    },
                },
                f(
                    Op::Reject,
                    4,
                    ErrorName::Login as i32,
                    429.0,
                    30.0,
                    "too_many_attempts",
                    "",
                ),
            ),
            (
                Command::Request {
                    req: 9,
                    endpoint: core::Endpoint::Refresh,
                    bearer: None,
                    caller: None,
                    key: Some(1),
                },
                f(Op::Request, 9, Endpoint::Refresh as i32, 1.0, -1.0, "", ""),
            ),
            (
                Command::Request {
                    req: 9,
                    endpoint: core::Endpoint::Post,
                    bearer: token("b"),
                    caller: Some(5),
                    key: None,
                },
                f(Op::Request, 9, Endpoint::Post as i32, 0.0, 5.0, "b", ""),
            ),
            (
                Command::Abort { req: 9 },
                f(Op::Abort, 9, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Post(Message::Ask),
                f(Op::Post, 0, PeerKind::Ask as i32, 0.0, 0.0, "", ""),
            ),
            (
                Command::Post(Message::Token {
                    login: true,
                    token: "tk".into(),
                    lifetime_secs: 300.0,
                    at_ms: at,
                    nonce: token("n"),
                }),
                f(Op::Post, 1, PeerKind::Token as i32, 300.0, at, "n", "tk"),
            ),
            (
                Command::Post(Message::Logout { at_ms: at }),
                f(Op::Post, 0, PeerKind::Logout as i32, 0.0, at, "", ""),
            ),
            (
                Command::Post(Message::Ended {
                    reason: EndReason::TokenReused,
                    at_ms: at,
                }),
                f(
                    Op::Post,
                    EndReason::TokenReused as u32,
                    PeerKind::Ended as i32,
                    0.0,
                    at,
                    "",
                    "",
                ),
            ),
            (
                Command::Post(Message::Failed {
                    status: 503,
                    at_ms: at,
                }),
                f(Op::Post, 503, PeerKind::Failed as i32, 0.0, at, "", ""),
            ),
            (
                Command::Lock { wait: true },
                f(Op::Lock, 0, 0, 1.0, 0.0, "", ""),
            ),
            (Command::Unlock, f(Op::Unlock, 0, 0, 0.0, 0.0, "", "")),
            (
                Command::CancelLock,
                f(Op::CancelLock, 0, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Timer { id: 4, ms: 250.0 },
                f(Op::Timer, 4, 0, 250.0, 0.0, "", ""),
            ),
            (
                Command::CancelTimer { id: 4 },
                f(Op::CancelTimer, 4, 0, 0.0, 0.0, "", ""),
            ),
            (
                Command::Emit(Emit::Refresh {
                    expires_in_secs: 60.0,
                }),
                f(Op::Emit, 0, Event::Refresh as i32, 60.0, -1.0, "", ""),
            ),
            (
                Command::Emit(Emit::SessionExpired(EndReason::Expired)),
                f(
                    Op::Emit,
                    0,
                    Event::SessionExpired as i32,
                    0.0,
                    EndReason::Expired as u8 as f64,
                    "",
                    "",
                ),
            ),
            (
                Command::Key {
                    op: core::KeyOp::PutBack,
                    slot: 3,
                    with: 2.0,
                },
                f(Op::Key, 3, KeyOp::PutBack as i32, 2.0, 0.0, "", ""),
            ),
        ];
        for (command, want) in &cases {
            assert_eq!(&fields(command), want, "{command:?}");
        }
        // Absent numbers are NaN: a refusal without Retry-After.
        let failure = Failure::Login {
            code: "invalid_credentials".into(),
            status: 401,
            retry_after: None,
        };
        assert!(fields(&Command::Reject { caller: 1, failure }).b.is_nan());
        // Each key op crosses as the number of its row.
        let ops = [
            (core::KeyOp::Load, KeyOp::Load),
            (core::KeyOp::New, KeyOp::New),
            (core::KeyOp::Given, KeyOp::Given),
            (core::KeyOp::PutBack, KeyOp::PutBack),
            (core::KeyOp::Delete, KeyOp::Delete),
            (core::KeyOp::Free, KeyOp::Free),
        ];
        for (op, row) in ops {
            assert_eq!(
                fields(&Command::Key {
                    op,
                    slot: 1,
                    with: 0.0
                })
                .c,
                row as i32
            );
        }
    }

    /// Each input's flag means what its row says; Login's picks the key.
    #[test]
    fn each_input_is_the_call_its_row_names() {
        assert_eq!(
            Input::Refresh.fact(true),
            Fact::Call(Call::Refresh { force: true })
        );
        assert_eq!(
            Input::Restore.fact(false),
            Fact::Call(Call::Restore { hint: false })
        );
        assert_eq!(Input::Login.fact(false), Fact::Call(Call::Login));
        assert_eq!(Input::Login.fact(true), Fact::Call(Call::LoginWithKey));
        assert_eq!(
            Input::Post.fact(true),
            Fact::Call(Call::Post { signed: true })
        );
        assert_eq!(Input::Logout.fact(false), Fact::Call(Call::Logout));
        assert_eq!(Input::Lock.fact(true), Fact::Lock { granted: true });
        assert_eq!(Input::Forget.fact(false), Fact::Forget);
    }

    /// A peer's message that is malformed is dropped before the machine sees it.
    #[test]
    fn malformed_messages_from_peers_are_dropped() {
        let tk = || Some("tk".to_owned());
        let token = PeerKind::Token as i32;
        assert_eq!(
            peer_message(token, tk(), None, -1, true, 300.0, f64::NAN, 5.0),
            Some(Message::Token {
                login: true,
                token: "tk".into(),
                lifetime_secs: 300.0,
                at_ms: 5.0,
                nonce: None
            })
        );
        // A year stated for a token whose claims give it ten minutes: ten minutes.
        let Some(Message::Token { lifetime_secs, .. }) =
            peer_message(token, tk(), None, -1, false, 31_536_000.0, 600.0, 5.0)
        else {
            panic!("a token message");
        };
        assert_eq!(lifetime_secs, 600.0);
        // A token message without its token, a kind or reason out of the lists.
        assert_eq!(
            peer_message(token, None, None, -1, false, 300.0, f64::NAN, 5.0),
            None
        );
        assert_eq!(
            peer_message(-1, tk(), None, -1, false, 0.0, f64::NAN, 5.0),
            None
        );
        assert_eq!(
            peer_message(
                PeerKind::ALL.len() as i32,
                tk(),
                None,
                -1,
                false,
                0.0,
                f64::NAN,
                5.0
            ),
            None
        );
        let ended = PeerKind::Ended as i32;
        assert_eq!(
            peer_message(ended, None, None, -1, false, 0.0, f64::NAN, 5.0),
            None
        );
        assert_eq!(
            peer_message(
                ended,
                None,
                None,
                EndReason::ALL.len() as i32,
                false,
                0.0,
                f64::NAN,
                5.0
            ),
            None
        );
        assert_eq!(
            peer_message(
                ended,
                None,
                None,
                EndReason::InvalidGrant as i32,
                false,
                0.0,
                f64::NAN,
                5.0
            ),
            Some(Message::Ended {
                reason: EndReason::InvalidGrant,
                at_ms: 5.0
            })
        );
        assert_eq!(
            peer_message(
                PeerKind::Failed as i32,
                None,
                None,
                -1,
                false,
                503.0,
                f64::NAN,
                5.0
            ),
            Some(Message::Failed {
                status: 503,
                at_ms: 5.0
            })
        );
    }

    #[test]
    fn a_reply_without_status_is_a_network_failure_and_nan_is_none() {
        assert_eq!(
            reply(0, None, None, None, 60.0, 60.0),
            Err(Transient::Network)
        );
        let Ok(r) = reply(200, Some("tk".into()), None, None, f64::NAN, 60.0) else {
            panic!("a reply");
        };
        assert_eq!(
            (r.status, r.expires_in, r.claims_lifetime),
            (200, None, Some(60.0))
        );
        // A status past u16 is no status the machine knows.
        assert_eq!(
            reply(70_000, None, None, None, f64::NAN, f64::NAN).map(|r| r.status),
            Ok(0)
        );
    }

    #[test]
    fn numbers_from_the_driver_that_are_in_no_table_are_refused() {
        assert_eq!(Input::from_u32(0), None);
        assert_eq!(Input::from_u32(12), None);
        assert_eq!(Input::from_u32(6), Some(Input::Logout));
        assert_eq!(Op::from_u32(13), Some(Op::Emit));
        assert_eq!(Endpoint::from_u32(4), None);
        // A word crosses as its place in its list (`as i32`: declaration order).
        for (i, w) in Event::ALL.iter().enumerate() {
            assert_eq!(*w as usize, i);
        }
        for (i, w) in PeerKind::ALL.iter().enumerate() {
            assert_eq!(*w as usize, i);
        }
        for (i, w) in EndReason::ALL.iter().enumerate() {
            assert_eq!(*w as usize, i);
        }
        for (i, w) in ErrorName::ALL.iter().enumerate() {
            assert_eq!(*w as usize, i);
        }
    }
}
