//! Delivering a code (for signing in, signing up, verifying an address or resetting a
//! password) or a notice: over SMTP (`--smtp-url`), or with `--demo` and no SMTP server into a
//! demo-only mailbox in memory that the demo page reads (and that the server prints).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

use crate::store::CodePurpose;

/// Messages the demo mailbox keeps (newest last).
const DEMO_KEEP: usize = 100;

pub enum Mailer {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        /// Turns at the relay.
        gate: std::sync::Arc<Gate>,
    },
    Demo(DemoMailbox),
}

/// Connections to the relay at once. Each send opens its own and may wait 15 s at each step: a
/// flood of sign-ups to addresses at a domain that stalls the relay's checks held a connection
/// each, without bound, until the relay's own per-client cap refused everyone's mail.
const SENDING_AT_ONCE: usize = 8;
/// Messages waiting for a connection at most; beyond, a message is dropped (and logged), not
/// held: a code waiting that long would expire before it arrives anyway.
const WAITING_AT_MOST: usize = 1_000;

/// Free places below which a notice no budget may silence ([`Notice::always`]) is dropped: a
/// quarter of them stay for codes ([`Mailer::send`]).
const NOTICES_BELOW: usize = (SENDING_AT_ONCE + WAITING_AT_MOST) / 4;
/// Free places below which the other notices, and the sign-up's "you already have an
/// account", are dropped: half of them.
const YIELDING_BELOW: usize = (SENDING_AT_ONCE + WAITING_AT_MOST) / 2;

/// At most [`SENDING_AT_ONCE`] messages sent at once, and [`WAITING_AT_MOST`] more waiting.
pub struct Gate {
    /// A place for each message sent or waiting.
    places: tokio::sync::Semaphore,
    /// A turn for each message sent.
    turns: tokio::sync::Semaphore,
}

/// One delivered demo message.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMessage {
    pub to: String,
    pub subject: String,
    /// "" for a message without a code.
    pub code: String,
    pub at: i64,
}

#[derive(Default)]
pub struct DemoMailbox {
    messages: Mutex<VecDeque<DemoMessage>>,
}

impl DemoMailbox {
    fn push(&self, m: DemoMessage) {
        let mut q = match self.messages.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        if q.len() == DEMO_KEEP {
            q.pop_front();
        }
        q.push_back(m);
    }

    /// The messages to `email`, newest first.
    pub fn to(&self, email: &str) -> Vec<DemoMessage> {
        let q = match self.messages.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        q.iter().rev().filter(|m| m.to == email).cloned().collect()
    }
}

/// Why `url` would send codes, or the relay's password, readable on the network, if it would.
/// A relay off this machine is reached over TLS: `smtps://`, or `smtp://` with
/// `?tls=required` (STARTTLS; either verifies the certificate against the public roots).
/// Without TLS only when the URL says so and holds no password: `?tls=none` (ours: plain, for
/// a relay on a private network, a self-signed certificate's say), or `?tls=opportunistic`
/// (lettre's: STARTTLS when the relay offers it, which a man in the middle can hide, its
/// certificate verified). Plain `smtp://` is for a relay on this machine. (lettre, which
/// parses the URL, sends in the clear by default.)
fn in_the_clear(url: &str) -> Option<String> {
    // A URL that does not parse is refused by lettre, with its own message.
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str().unwrap_or_default();
    let tls: Vec<_> = parsed
        .query_pairs()
        .filter(|(k, _)| k == "tls")
        .map(|(_, v)| v)
        .collect();
    // One reading for both: lettre takes the first.
    if tls.len() > 1 {
        return Some("?tls= is given more than once".into());
    }
    // Not ignored: `smtps://` is TLS from the start, its certificate verified, whatever follows.
    if parsed.scheme() == "smtps" && !tls.is_empty() {
        return Some("smtps:// is TLS from the start (its certificate verified): no ?tls=".into());
    }
    if parsed.scheme() != "smtp" || tokenwarden_dpop::is_loopback_host(host) {
        return None;
    }
    match tls.first().map(|t| t.as_ref()) {
        Some("required") => None,
        Some("opportunistic" | "none") if parsed.password().is_none() => None,
        Some(weak @ ("opportunistic" | "none")) => Some(format!(
            "a password for {host} over ?tls={weak} could be sent in the clear: use \
             ?tls=required or smtps://"
        )),
        _ => Some(format!(
            "{host} is off this machine, and smtp:// without TLS sends every code readable on \
             the network: use smtps://{host} (TLS from the start) or add ?tls=required \
             (STARTTLS); for a relay without TLS on a private network, say so with ?tls=none \
             (no password; the port is 25 unless given)"
        )),
    }
}

/// `url` as lettre reads it: `?tls=none` (ours) is its default, plain, and a word it refuses.
fn for_lettre(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_owned();
    };
    let ours =
        |(k, v): &(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)| k == "tls" && v == "none";
    if !parsed.query_pairs().any(|p| ours(&p)) {
        return url.to_owned();
    }
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|p| !ours(p))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    parsed.into()
}

/// `to` with its domain's ASCII name (IDNA: `bücher.de` is `xn--bcher-kva.de`), the name every
/// relay takes: under the Unicode one, a relay without SMTPUTF8 (many) refused the mail, and an
/// account at such a domain (the spelling new accounts take) never got a code. A local part that
/// is not ASCII stays as it is: it needs SMTPUTF8 whatever its domain.
fn ascii_domain(to: &str) -> std::borrow::Cow<'_, str> {
    if let Some((local, domain)) = to.rsplit_once('@')
        && !domain.is_ascii()
        && let Ok(url::Host::Domain(ascii)) = url::Host::parse(domain)
    {
        return format!("{local}@{ascii}").into();
    }
    to.into()
}

impl Mailer {
    /// An SMTP mailer for `url`: `smtp://host:port` (plain: a relay on this machine only),
    /// `smtp://host?tls=required` (STARTTLS), `smtps://host` (implicit TLS); credentials as
    /// `smtp://user:password@host`. See [`in_the_clear`] for what is refused.
    pub fn smtp(url: &str, from: &str) -> Result<Self, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("--smtp-from {from:?}: {e}"))?;
        if let Some(refusal) = in_the_clear(url) {
            return Err(format!("--smtp-url: {refusal}"));
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&for_lettre(url))
            .map_err(|e| format!("--smtp-url: {e}"))?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        let gate = std::sync::Arc::new(Gate {
            places: tokio::sync::Semaphore::new(SENDING_AT_ONCE + WAITING_AT_MOST),
            turns: tokio::sync::Semaphore::new(SENDING_AT_ONCE),
        });
        Ok(Mailer::Smtp {
            transport: Box::new(transport),
            from,
            gate,
        })
    }

    pub fn demo() -> Self {
        Mailer::Demo(DemoMailbox::default())
    }

    pub fn demo_mailbox(&self) -> Option<&DemoMailbox> {
        match self {
            Mailer::Demo(m) => Some(m),
            Mailer::Smtp { .. } => None,
        }
    }

    /// Sends `code` for `purpose` to `to`. Errors say what failed, never the code.
    pub async fn send_code(
        &self,
        purpose: CodePurpose,
        to: &str,
        code: &str,
        ttl_secs: i64,
        now: i64,
    ) -> Result<(), String> {
        let letter = Letter::code(purpose, code, ttl_secs);
        self.send(to, Some(code), &letter, 0, now).await
    }

    /// Tells `to` that someone tried to sign up with an address that has an account (no code:
    /// the answer to the sign-up was the same as for a new address).
    pub async fn send_account_exists(&self, to: &str, now: i64) -> Result<(), String> {
        let letter = Letter {
            subject: "You already have an account",
            lines: vec![
                "Someone (maybe you) tried to sign up with this address, which already has an \
                 account."
                    .into(),
                "If it was you, sign in, or reset your password if you forgot it. Otherwise, \
                 ignore this message: nothing changed."
                    .into(),
            ],
            code: None,
        };
        self.send(to, None, &letter, YIELDING_BELOW, now).await
    }

    /// Tells `to` of `notice`, a change to how the account signs in, at `now`.
    pub async fn send_notice(&self, notice: &Notice, to: &str, now: i64) -> Result<(), String> {
        let when = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(now).unwrap_or(0)),
        );
        let keep_free = if notice.always() {
            NOTICES_BELOW
        } else {
            YIELDING_BELOW
        };
        self.send(to, None, &notice.letter(&when), keep_free, now)
            .await
    }

    /// `keep_free`: the message is dropped while fewer places than that are free (a code: 0;
    /// see [`NOTICES_BELOW`] and [`YIELDING_BELOW`]): codes go first.
    async fn send(
        &self,
        to: &str,
        code: Option<&str>,
        letter: &Letter,
        keep_free: usize,
        now: i64,
    ) -> Result<(), String> {
        match self {
            Mailer::Demo(mailbox) => {
                // The demo's stand-in for an inbox: printed on purpose (stdout, not the log).
                match code {
                    Some(code) => println!("demo mailbox: {} {code} for {to}", letter.subject),
                    None => println!("demo mailbox: {} (to {to})", letter.subject),
                }
                mailbox.push(DemoMessage {
                    to: to.to_owned(),
                    subject: letter.subject.to_owned(),
                    code: code.unwrap_or("").to_owned(),
                    at: now,
                });
                Ok(())
            }
            Mailer::Smtp {
                transport,
                from,
                gate,
            } => {
                let to: Mailbox = ascii_domain(to)
                    .parse()
                    .map_err(|_| "the address does not parse as a mailbox".to_owned())?;
                let message = letter.message(from.clone(), to)?;
                // A flood of notices (accounts a script opened, each switching a setting back
                // and forth) would otherwise hold the places everyone's codes wait for.
                if gate.places.available_permits() < keep_free {
                    return Err(
                        "the SMTP queue is filling up: a notice is dropped, codes go first".into(),
                    );
                }
                let Ok(_place) = gate.places.try_acquire() else {
                    return Err("too many messages waiting for the SMTP server: dropped".into());
                };
                let _turn = gate
                    .turns
                    .acquire()
                    .await
                    .map_err(|e| format!("smtp: {e}"))?;
                transport
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| format!("smtp: {e}"))
            }
        }
    }
}

/// A change to how an account signs in, which its address hears of (OWASP ASVS 2.2.3, "secure
/// notifications after updates to authentication details"): a script in the page (XSS) holding
/// a fresh session, or a thief who knows the password, can make each of these, and the owner
/// should hear of it through a channel neither can read. Each notice says only what the server
/// knows: never a name the page chose (a passkey's: "added by your bank's security team").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    PasskeyAdded,
    PasskeyRemoved,
    /// By the account's current password, in a session (`POST /auth/password/change`).
    PasswordChanged,
    /// By a code mailed to the address (`POST /auth/password/reset`).
    PasswordReset,
    /// Password sign-ins ask for a second factor from now on (`true`), or no longer (`false`).
    SecondFactor(bool),
    /// Signing in through the `--oidc` provider of this name (the operator's word, never the
    /// provider's) now opens the account, which signed in otherwise until now
    /// (`link=verified-email`).
    ProviderLinked(String),
}

/// What to do when a change was not the owner's: the sessions, the passkeys, the password.
const NOT_YOU: &str = "If it was not you, someone has a session of your account: sign in, \
                       sign out the sessions you do not know, remove any passkey you did not \
                       add, and change your password.";

impl Notice {
    /// Whether the notice is one an intruder would most want unheard of (a way in of their
    /// own, the password, the mailbox's reset, the second factor gone): it goes out past the
    /// hourly budget of the others (a second factor switched on, a passkey removed), up to a
    /// higher one of its own ([`crate::otp::Codes::notify`]), and while the SMTP queue is
    /// filling up it is dropped later than they are ([`NOTICES_BELOW`]).
    pub fn always(&self) -> bool {
        !matches!(self, Notice::SecondFactor(true) | Notice::PasskeyRemoved)
    }

    fn letter(&self, when: &str) -> Letter {
        let provider_linked;
        let (subject, what, otherwise) = match self {
            Notice::PasskeyAdded => (
                "A passkey was added to your account",
                "A passkey was added to your account",
                "If it was not you, remove it from your account's passkeys now (the newest one) \
                 and change your password: whoever added it can sign in with it.",
            ),
            Notice::PasskeyRemoved => (
                "A passkey was removed from your account",
                "A passkey was removed from your account",
                NOT_YOU,
            ),
            Notice::PasswordChanged => (
                "Your password was changed",
                "Your account's password was changed, and its other sessions signed out",
                "If it was not you, whoever did it knew your password: reset it now with a code \
                 mailed to this address, which signs out every session, and remove any passkey \
                 you did not add.",
            ),
            Notice::PasswordReset => (
                "Your password was reset",
                "Your account's password was reset with a code mailed to this address, and \
                 every session signed out",
                "If it was not you, someone can read this mailbox: secure it (its password, \
                 where it forwards), then reset your password again.",
            ),
            Notice::SecondFactor(true) => (
                "Your sign-ins now ask for a second factor",
                "Password sign-ins of your account now ask for a second factor",
                NOT_YOU,
            ),
            Notice::SecondFactor(false) => (
                "Your sign-ins no longer ask for a second factor",
                "Password sign-ins of your account no longer ask for a second factor",
                "If it was not you, someone has a session of your account: sign in, switch the \
                 second factor back on, sign out the sessions you do not know, remove any \
                 passkey you did not add, and change your password.",
            ),
            Notice::ProviderLinked(name) => {
                provider_linked = (
                    format!("Signing in through {name} now opens your account"),
                    format!(
                        "If it was not you, whoever signs in through {name} under this address \
                         can sign in here: sign in, sign out the sessions you do not know, and \
                         tell this site's support."
                    ),
                );
                (
                    "A sign-in was linked to your account",
                    provider_linked.0.as_str(),
                    provider_linked.1.as_str(),
                )
            }
        };
        Letter {
            subject,
            lines: vec![format!("{what} ({when})."), otherwise.into()],
            code: None,
        }
    }
}

/// A message: a subject, lines of text, and the code on a line of its own.
struct Letter {
    subject: &'static str,
    lines: Vec<String>,
    code: Option<String>,
}

impl Letter {
    fn code(purpose: CodePurpose, code: &str, ttl_secs: i64) -> Self {
        let minutes = (ttl_secs + 59) / 60;
        let (subject, what, otherwise) = match purpose {
            CodePurpose::SignIn => (
                "Your sign-in code",
                "Your sign-in code:",
                "If you did not ask to sign in, ignore this message: nobody can sign in \
                 without the code.",
            ),
            CodePurpose::SignUp => (
                "Confirm your address",
                "The code that creates your account:",
                "If you did not sign up, ignore this message: no account is created without \
                 the code.",
            ),
            CodePurpose::VerifyEmail => (
                "Verify your address",
                "The code that verifies this address:",
                "If you did not ask for it, ignore this message.",
            ),
            CodePurpose::SecondFactor => (
                "Your second-factor code",
                "Someone signed in with your password. The code that completes the sign-in:",
                "If it was not you, change your password now: your password is known, but \
                 nobody can sign in without this code.",
            ),
            CodePurpose::ResetPassword => (
                "Reset your password",
                "The code that lets you choose a new password:",
                "If you did not ask to reset your password, ignore this message: your \
                 password stays as it is.",
            ),
        };
        Letter {
            subject,
            lines: vec![
                what.into(),
                format!("It works for {minutes} minutes, and three wrong tries end it."),
                otherwise.into(),
            ],
            code: Some(code.to_owned()),
        }
    }

    /// Plain text and HTML (every line escaped, whatever it holds), the code on a line of its own
    /// in both.
    fn message(&self, from: Mailbox, to: Mailbox) -> Result<Message, String> {
        let (first, rest) = self.lines.split_first().ok_or("an empty message")?;
        let mut text = format!("{first}\r\n\r\n");
        let mut html = format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><p>{}</p>\r\n",
            escape_html(first)
        );
        if let Some(code) = &self.code {
            text.push_str(&format!("    {code}\r\n\r\n"));
            html.push_str(&format!(
                "<p style=\"font-size:28px;letter-spacing:4px\"><strong>{code}</strong></p>\r\n"
            ));
        }
        for line in rest {
            text.push_str(line);
            text.push_str("\r\n");
            html.push_str(&format!("<p>{}</p>\r\n", escape_html(line)));
        }
        html.push_str("</body></html>\r\n");
        Message::builder()
            .from(from)
            .to(to)
            .subject(self.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| format!("building the message: {e}"))
    }
}

/// `text` as HTML text: `&`, `<`, `>`, `"` and `'` escaped.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_relay_off_this_machine_is_reached_over_tls_and_a_password_never_in_the_clear() {
        let from = "tw <no-reply@example.com>";
        for ok in [
            "smtp://127.0.0.1:2525",
            "smtp://localhost",
            "smtp://[::1]:25",
            "smtp://user:pw@127.0.0.1:587",
            "smtps://user:pw@smtp.example.com",
            "smtp://user:pw@smtp.example.com:587?tls=required",
            "smtp://relay.internal:25?tls=opportunistic",
            "smtp://relay.internal?tls=none",
            "smtp://127.0.0.1:2525?tls=none",
        ] {
            assert!(Mailer::smtp(ok, from).is_ok(), "{ok}");
        }
        // What lettre reads is what was checked: only our own `tls=none` is taken out.
        for kept in [
            "smtps://user:pw@smtp.example.com",
            "smtp://user:pw@smtp.example.com:587?tls=required",
            "smtp://relay.internal:25?tls=opportunistic",
        ] {
            assert_eq!(for_lettre(kept), kept);
        }
        // Ours, said on purpose, is lettre's plain default: left out of what it reads.
        assert_eq!(
            for_lettre("smtp://relay.internal?tls=none"),
            "smtp://relay.internal"
        );
        assert_eq!(
            for_lettre("smtp://relay.internal:25/ehlo.example?x=1&tls=none"),
            "smtp://relay.internal:25/ehlo.example?x=1"
        );
        for (refused, says) in [
            ("smtp://smtp.example.com:587", "smtps://smtp.example.com"),
            ("smtp://user:secret@smtp.example.com:587", "?tls=required"),
            ("smtp://10.0.0.5", "off this machine"),
            ("smtp://smtp.example.com?tls=plain", "off this machine"),
            (
                "smtp://user:secret@smtp.example.com?tls=opportunistic",
                "a password",
            ),
            ("smtp://user:secret@relay.internal?tls=none", "a password"),
            ("smtps://relay.internal?tls=none", "no ?tls="),
            (
                "smtp://relay.internal?tls=none&tls=opportunistic",
                "more than once",
            ),
        ] {
            let Err(e) = Mailer::smtp(refused, from) else {
                panic!("{refused} was taken");
            };
            assert!(
                e.starts_with("--smtp-url: ") && e.contains(says),
                "{refused}: {e}"
            );
            assert!(!e.contains("secret"), "{e}");
        }
    }

    /// While the SMTP queue is more than half full, a notice that may be silenced is dropped and
    /// a code still takes its place (a flood of notices never holds the places codes wait for);
    /// a notice no budget may silence goes until three quarters are taken, and a code after.
    #[tokio::test]
    async fn a_notice_gives_way_to_codes_when_the_queue_is_filling_up() {
        let mailer = Mailer::smtp("smtp://127.0.0.1:1", "a@example.com").unwrap();
        let Mailer::Smtp { gate, .. } = &mailer else {
            unreachable!()
        };
        let all = SENDING_AT_ONCE + WAITING_AT_MOST;
        let sent = async |notice: Option<Notice>| {
            let e = match notice {
                Some(n) => mailer.send_notice(&n, "b@example.com", 0).await,
                None => {
                    let code = CodePurpose::SignIn;
                    mailer
                        .send_code(code, "b@example.com", "123456", 600, 0)
                        .await
                }
            };
            // No SMTP server there: sent is an SMTP error, dropped is ours.
            let e = e.unwrap_err();
            assert!(e.starts_with("smtp: ") || e.contains("filling up"), "{e}");
            e.starts_with("smtp: ")
        };
        let quiet = || Some(Notice::SecondFactor(true));
        let always = || Some(Notice::PasskeyAdded);
        for (free, quiet_goes, always_goes) in [
            (all, true, true),
            (YIELDING_BELOW, true, true),
            (YIELDING_BELOW - 1, false, true),
            (NOTICES_BELOW, false, true),
            (NOTICES_BELOW - 1, false, false),
            (1, false, false),
        ] {
            let held = gate.places.try_acquire_many((all - free) as u32).unwrap();
            assert_eq!(sent(quiet()).await, quiet_goes, "{free} free");
            assert_eq!(sent(always()).await, always_goes, "{free} free");
            assert!(sent(None).await, "a code, {free} free");
            // The sign-up's "you already have an account" yields as the quiet notices do.
            let e = mailer.send_account_exists("b@example.com", 0).await;
            assert_eq!(
                e.unwrap_err().starts_with("smtp: "),
                quiet_goes,
                "{free} free"
            );
            drop(held);
        }
    }

    #[test]
    fn a_name_someone_chose_is_text_in_the_html_part_never_markup() {
        let letter = Letter {
            subject: "A passkey was added to your account",
            lines: vec![
                "fixed".into(),
                format!(
                    "The name it was given: {:?}",
                    "<a href=//evil.example>Remove it</a> & co"
                ),
            ],
            code: None,
        };
        let (from, to) = (
            "a@example.com".parse().unwrap(),
            "b@example.com".parse().unwrap(),
        );
        let raw = String::from_utf8(letter.message(from, to).unwrap().formatted()).unwrap();
        let (_, html) = raw.split_once("Content-Type: text/html").unwrap();
        assert!(!html.contains("<a href"), "{html}");
        assert!(html.contains("&lt;a href"), "{html}");
        assert!(html.contains("&amp; co"), "{html}");
    }
}
