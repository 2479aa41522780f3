//! Delivering a code: over SMTP (`--smtp-url`), or with `--demo` and no SMTP server into a
//! demo-only mailbox in memory that the demo page reads (and that the server prints).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;

/// Messages the demo mailbox keeps (newest last).
const DEMO_KEEP: usize = 20;

pub enum Mailer {
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
    Demo(DemoMailbox),
}

/// One delivered demo message.
#[derive(Debug, Clone, Serialize)]
pub struct DemoMessage {
    pub to: String,
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

impl Mailer {
    /// An SMTP mailer for `url`: `smtp://host:port` (plain, for a local relay),
    /// `smtp://host?tls=required` (STARTTLS), `smtps://host` (implicit TLS); credentials as
    /// `smtp://user:password@host`.
    pub fn smtp(url: &str, from: &str) -> Result<Self, String> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| format!("--smtp-from {from:?}: {e}"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("--smtp-url: {e}"))?
            .timeout(Some(Duration::from_secs(15)))
            .build();
        Ok(Mailer::Smtp { transport, from })
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

    /// Sends `code` to `to`. Errors say what failed, never the code.
    pub async fn send_code(
        &self,
        to: &str,
        code: &str,
        ttl_secs: i64,
        now: i64,
    ) -> Result<(), String> {
        match self {
            Mailer::Demo(mailbox) => {
                // The demo's stand-in for an inbox: printed on purpose (stdout, not the log).
                println!("demo mailbox: sign-in code {code} for {to}");
                mailbox.push(DemoMessage {
                    to: to.to_owned(),
                    code: code.to_owned(),
                    at: now,
                });
                Ok(())
            }
            Mailer::Smtp { transport, from } => {
                let to: Mailbox = to
                    .parse()
                    .map_err(|_| "the address does not parse as a mailbox".to_owned())?;
                let message = message(from.clone(), to, code, ttl_secs)?;
                transport
                    .send(message)
                    .await
                    .map(drop)
                    .map_err(|e| format!("smtp: {e}"))
            }
        }
    }
}

/// The message: plain text and HTML, the code on a line of its own in both.
fn message(from: Mailbox, to: Mailbox, code: &str, ttl_secs: i64) -> Result<Message, String> {
    let minutes = (ttl_secs + 59) / 60;
    let text = format!(
        "Your sign-in code:\r\n\r\n    {code}\r\n\r\nIt works for {minutes} minutes, \
         and three wrong tries end it.\r\nIf you did not ask to sign in, ignore this message: \
         nobody can sign in without the code.\r\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\">\
         <p>Your sign-in code:</p>\r\n\
         <p style=\"font-size:28px;letter-spacing:4px\"><strong>{code}</strong></p>\r\n\
         <p>It works for {minutes} minutes, and three wrong tries end it.<br>\r\n\
         If you did not ask to sign in, ignore this message.</p></body></html>\r\n"
    );
    Message::builder()
        .from(from)
        .to(to)
        .subject("Your sign-in code")
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
