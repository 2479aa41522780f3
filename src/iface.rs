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
    /// What a `Key` command does (`core::KeyOp`).
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
    use core::mem::offset_of;

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
