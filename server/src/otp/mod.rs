//! Sign-in with an emailed one-time code: `POST /auth/otp/start` and `POST /auth/otp/verify`.
//! The rules and their reasons are in docs/PROTOCOL.md, "Sign-in with an emailed code".
//!
//! - a code is `digits` decimal digits from the OS CSPRNG; only HMAC-SHA256(key, id ‖ email ‖
//!   code) is stored, under a key sealed by the key-encryption key (a database dump alone does
//!   not give it);
//! - every guess is counted against every live code of the email *before* it is compared, in
//!   one statement; a code is compared at most [`MAX_ATTEMPTS`] times, and the guess that
//!   uses up a code's last attempt sends a fresh one;
//! - an email holds at most [`MAX_LIVE`] live codes; a success revokes all of them;
//! - `start` answers the same 202 for every address; whether a message goes out is decided
//!   in a task after the answer. Unknown emails get a code that is never mailed and never
//!   signs in (unless sign-up is on), so `verify` answers them like known ones.

pub mod mail;

use std::sync::Arc;

use crate::extract::QueryParams;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::config::{MAX_CODE_TTL_SECS, OtpSettings};
use crate::error::ApiError;
use crate::extract::{Csrf, JsonBody};
use crate::kek::KeyEncryption;
use crate::net::ClientIp;
use crate::password::normalize_email;
use crate::store::{
    CodePurpose, CounterScope, NewUser, SealedKeyError, Store, StoreError, StoreResult, User,
};
use crate::throttle::Throttle;
use mail::Mailer;
pub use mail::Notice;

/// Notices mailed to one account in an hour at most ([`Codes::notify`]); those that are
/// [`Notice::always`], [`ALWAYS_NOTICES_PER_HOUR`].
pub const NOTICES_PER_HOUR: i64 = 10;
pub const ALWAYS_NOTICES_PER_HOUR: i64 = 30;

/// Comparisons one code allows; the one that uses up the last revokes it and sends a new code.
pub const MAX_ATTEMPTS: i64 = 3;
/// Live codes an email may hold; a new one revokes the oldest beyond this.
pub const MAX_LIVE: i64 = 3;
/// The path of the verification (a DPoP proof's `htu`).
pub const VERIFY_PATH: &str = "/auth/otp/verify";

/// Name of the sealed HMAC key in `server_secrets`, and the associated data of its seal.
const KEY_NAME: &str = "otp_hmac_key";

/// Sign-in with an emailed code; `None` inside when codes cannot be delivered (no
/// `--smtp-url`, no `--demo`): the endpoints then answer 404.
#[derive(Clone)]
pub struct Codes(Option<Arc<Otp>>);

/// The code machinery, present when codes can be delivered.
pub struct Otp {
    store: Store,
    clock: Clock,
    settings: OtpSettings,
    demo: bool,
    pub mailer: Mailer,
    key: [u8; 32],
    /// Starts and verifications per client address bucket (for the fleet, on PostgreSQL).
    pub ip_limiter: Throttle,
}

/// Why codes could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CodesError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("sign-in codes: {0}")]
    Setup(String),
}

impl Codes {
    /// Codes are off (no way to deliver them).
    pub fn off() -> Self {
        Codes(None)
    }

    pub async fn new(
        settings: &OtpSettings,
        demo: bool,
        kek: &KeyEncryption,
        store: Store,
        clock: Clock,
    ) -> Result<Self, CodesError> {
        let setup = CodesError::Setup;
        let mailer = match &settings.smtp_url {
            Some(url) => Mailer::smtp(url, &settings.smtp_from).map_err(setup)?,
            None if demo => Mailer::demo(),
            None => return Ok(Codes(None)),
        };
        let key = store.sealed_key(kek, KEY_NAME).await.map_err(|e| match e {
            SealedKeyError::Store(e) => CodesError::Store(e),
            SealedKeyError::Setup(why) => setup(why),
        })?;
        Ok(Codes(Some(Arc::new(Otp {
            ip_limiter: Throttle::new("otp-ip", settings.ip_per_minute),
            store,
            clock,
            settings: settings.clone(),
            demo,
            mailer,
            key,
        }))))
    }

    /// The machinery, or 404 when codes are off.
    pub fn enabled(&self) -> Result<&Arc<Otp>, ApiError> {
        self.0.as_ref().ok_or(ApiError::NotFound)
    }

    /// Mails the address of the account `user_id` `notice` of a change to how it signs in, when
    /// this server mails codes at all: in the background (the answer does not wait for the SMTP
    /// server; a failure is logged). Counted apart from the codes' budget, which a script
    /// could otherwise spend so that the owner's reset code is not sent: past
    /// [`NOTICES_PER_HOUR`] an hour per account only the notices that are
    /// [`Notice::always`] go out (a script with a fresh session toggling the second factor
    /// would flood the owner's inbox), so that spending the budget silences no passkey added;
    /// those up to [`ALWAYS_NOTICES_PER_HOUR`] (a passkey added and removed again and again
    /// would flood it too). Past that, the first [`NOTICES_PER_HOUR`] notices of the hour at
    /// least went out (unless the SMTP queue was filling up).
    pub fn notify(&self, user_id: &str, notice: Notice) {
        let Some(otp) = self.0.clone() else {
            return;
        };
        let (user_id, now) = (user_id.to_owned(), otp.clock.now());
        tokio::spawn(async move {
            if let Err(e) = otp.notice(&user_id, &notice, now).await {
                tracing::warn!(target: "audit", event = "notice_not_sent", user = %user_id, notice = ?notice, error = %e);
            }
        });
    }

    /// The demo mailbox exists (`--demo` and no SMTP server).
    pub fn has_demo_mailbox(&self) -> bool {
        self.0
            .as_ref()
            .is_some_and(|o| o.demo && o.mailer.demo_mailbox().is_some())
    }
}

/// A code that matched, not yet used, and the live codes this verification counted a try on.
#[derive(Debug)]
pub struct Hit {
    id: String,
    counted: Vec<String>,
}

impl Otp {
    fn mac(&self, id: &str, email: &str, code: &str) -> [u8; 32] {
        crate::tokens::keyed_hash(&self.key, &[id, email, code])
    }

    /// What is stored for a code.
    pub fn hash(&self, id: &str, email: &str, code: &str) -> String {
        B64.encode(self.mac(id, email, code))
    }

    /// Whether `code` is the code stored as `stored`, in constant time.
    fn matches(&self, id: &str, email: &str, code: &str, stored: &str) -> bool {
        let Ok(stored) = B64.decode(stored) else {
            return false;
        };
        bool::from(self.mac(id, email, code).as_slice().ct_eq(&stored))
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    pub fn settings(&self) -> &OtpSettings {
        &self.settings
    }

    /// Live sign-in codes of an email (operators and tests).
    pub async fn live_codes(&self, email: &str) -> StoreResult<i64> {
        self.live_codes_for(CodePurpose::SignIn, email).await
    }

    /// Live codes of one purpose for an email (operators and tests).
    pub async fn live_codes_for(&self, purpose: CodePurpose, email: &str) -> StoreResult<i64> {
        self.store
            .live_codes(purpose, email, self.clock.now(), MAX_ATTEMPTS)
            .await
    }

    /// Per client address: 429 past the limit.
    pub async fn admit(&self, client: ClientIp) -> Result<(), ApiError> {
        let now = self.clock.now();
        match self
            .ip_limiter
            .check(&self.store, &client.key(), now)
            .await?
        {
            Some(retry_after) => Err(ApiError::TooManyAttempts { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a message about to be made for `email`, whatever its purpose; 429 past the
    /// per-mailbox limit (one budget: no flow can be used to flood an inbox).
    pub async fn count_send(&self, email: &str, now: i64) -> Result<(), ApiError> {
        let s = &self.settings;
        let (sends, window_start) = self
            .store
            .count(
                CounterScope::CodeSends,
                &mailbox(email),
                now,
                s.send_window_secs,
            )
            .await?;
        if sends > s.sends_per_email {
            return Err(ApiError::TooManyAttempts {
                retry_after: window_start + s.send_window_secs - now,
            });
        }
        Ok(())
    }

    /// [`Codes::notify`]'s work.
    async fn notice(&self, user_id: &str, notice: &Notice, now: i64) -> Result<(), String> {
        let db = |e: StoreError| format!("database: {e}");
        let Some(user) = self.store.user_by_id(user_id).await.map_err(db)? else {
            return Ok(());
        };
        // An account a provider opened without an address has no mailbox.
        if user.email.ends_with(crate::oidc::NO_MAILBOX) {
            return Ok(());
        }
        let (sent, _) = self
            .store
            .count(CounterScope::Notices, user_id, now, 3600)
            .await
            .map_err(db)?;
        let cap = if notice.always() {
            ALWAYS_NOTICES_PER_HOUR
        } else {
            NOTICES_PER_HOUR
        };
        if sent > cap {
            return Err(format!("past {cap} notices this hour"));
        }
        self.mailer.send_notice(notice, &user.email, now).await
    }

    /// Makes a code of `purpose` for `email` after the answer went out: stored always, mailed
    /// only if the address may use it (an account for signing in, none for signing up, ...),
    /// so that every answer is the same. A failure is logged (never with the code).
    pub fn issue_later(self: &Arc<Self>, purpose: CodePurpose, email: String, now: i64) {
        let otp = self.clone();
        tokio::spawn(async move {
            if let Err(e) = otp.issue(purpose, &email, now).await {
                tracing::error!(error = %e, purpose = purpose.as_str(), "issuing a code failed");
            }
        });
    }

    /// [`Self::issue_later`], now.
    pub async fn issue(&self, purpose: CodePurpose, email: &str, now: i64) -> Result<(), String> {
        let code = self.store_code(purpose, email, now).await?;
        self.deliver(purpose, email, &code, now).await
    }

    /// The first half of [`Self::issue`]: a new code of `purpose` for `email`, stored (hashed)
    /// whatever the address; the code itself, to [`Self::deliver`].
    pub async fn store_code(
        &self,
        purpose: CodePurpose,
        email: &str,
        now: i64,
    ) -> Result<String, String> {
        let s = &self.settings;
        let code = generate_code(s.digits);
        let id = crate::tokens::random_id();
        self.store
            .insert_code(
                purpose,
                &id,
                email,
                &self.hash(&id, email, &code),
                now,
                now + s.ttl_secs,
                MAX_ATTEMPTS,
                MAX_LIVE,
            )
            .await
            .map_err(|e| format!("database: {e}"))?;
        Ok(code)
    }

    /// The second half of [`Self::issue`]: `code` mailed if the address may use it.
    pub async fn deliver(
        &self,
        purpose: CodePurpose,
        email: &str,
        code: &str,
        now: i64,
    ) -> Result<(), String> {
        let s = &self.settings;
        let db = |e: StoreError| format!("database: {e}");
        let user = self.store.user_by_email(email).await.map_err(db)?;
        let deliver = match purpose {
            // A sign-up by code only under the one spelling of a mailbox that may open an
            // account (`account` opens none under another): another spelling's code would open
            // nothing, and each spelling would have a budget of sends of its own to that inbox.
            CodePurpose::SignIn => {
                user.is_some() || (s.signup && crate::password::new_address(email))
            }
            CodePurpose::SignUp => user.is_none(),
            CodePurpose::VerifyEmail => match &user {
                Some((u, _)) => self.store.address_verifiable(u).await.map_err(db)?,
                None => false,
            },
            CodePurpose::ResetPassword | CodePurpose::SecondFactor => user.is_some(),
        };
        if deliver {
            self.mailer
                .send_code(purpose, email, code, s.ttl_secs, now)
                .await?;
            tracing::info!(target: "audit", event = "otp_sent", purpose = purpose.as_str());
        }
        Ok(())
    }

    /// Checks a code of `purpose` for `email`: the per-email verification limit, then one
    /// attempt counted against every live code *before* any comparison, every live code
    /// compared (no early exit), each in constant time. A match is not used yet
    /// ([`Self::accept`]). A guess that uses up a code's last attempt sends a fresh one.
    ///
    /// `usable`: whether a right code may do its work for this address (looked up for every
    /// request alike); a right code that may not answers exactly as a wrong one.
    pub async fn check(
        self: &Arc<Self>,
        purpose: CodePurpose,
        email: &str,
        code: &str,
        usable: bool,
    ) -> Result<Hit, ApiError> {
        let s = &self.settings;
        let now = self.clock.now();
        if code.len() != s.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::InvalidRequest(format!(
                "code must be {} digits",
                s.digits
            )));
        }
        // Per email, whatever the client: many addresses do not buy more guesses.
        let scope = CounterScope::CodeVerifies(purpose);
        let (tries, window_start) = self
            .store
            .count(scope, email, now, s.verify_window_secs)
            .await?;
        if tries > s.verifies_per_email {
            return Err(ApiError::TooManyAttempts {
                retry_after: window_start + s.verify_window_secs - now,
            });
        }
        let counted = self
            .store
            .count_code_attempt(purpose, email, now, MAX_ATTEMPTS)
            .await?;
        let hit = counted.iter().fold(None, |hit, c| {
            let m = self.matches(&c.id, email, code, &c.code_hash);
            if m && hit.is_none() { Some(c) } else { hit }
        });
        if let Some(hit) = hit
            && usable
        {
            let counted = counted.iter().map(|c| c.id.clone()).collect();
            return Ok(Hit {
                id: hit.id.clone(),
                counted,
            });
        }
        if counted.is_empty() {
            let expired = self
                .store
                .code_expired_since(purpose, email, now, now - MAX_CODE_TTL_SECS, MAX_ATTEMPTS)
                .await?;
            return Err(if expired {
                ApiError::CodeExpired
            } else {
                ApiError::InvalidCode { attempts_left: 0 }
            });
        }
        // This guess used up a code: it is dead, and a fresh one goes out (within the limit).
        if counted.iter().any(|c| c.attempts >= MAX_ATTEMPTS)
            && self.count_send(email, now).await.is_ok()
        {
            self.issue_later(purpose, email.to_owned(), now);
        }
        let attempts_left = counted
            .iter()
            .map(|c| MAX_ATTEMPTS - c.attempts)
            .max()
            .unwrap_or(0)
            .max(0);
        tracing::info!(target: "audit", event = "otp_wrong_code", purpose = purpose.as_str(), attempts_left);
        Err(ApiError::InvalidCode { attempts_left })
    }

    /// Uses a matching code: every other outstanding code of the purpose is revoked, and this
    /// attempt taken back from the email's verification count (the others stay: the owner
    /// signing in must not hand a guesser a fresh count, as a password's success gives none).
    /// `invalid_code` if another request used it first.
    pub async fn accept(
        &self,
        purpose: CodePurpose,
        hit: Hit,
        email: &str,
    ) -> Result<(), ApiError> {
        let now = self.clock.now();
        if !self
            .store
            .consume_code(purpose, &hit.id, email, now)
            .await?
        {
            return Err(ApiError::InvalidCode { attempts_left: 0 });
        }
        self.store
            .uncount(CounterScope::CodeVerifies(purpose), email)
            .await?;
        Ok(())
    }

    /// A right code this request could not use for a reason of the server's (a busy hasher,
    /// answered 503 to retry): its attempt is taken back from the email's count, as a used
    /// code's is, and the try it counted on each live code, so that retries spend none of the
    /// day's guesses nor the code's three tries.
    pub async fn unused(
        &self,
        purpose: CodePurpose,
        hit: &Hit,
        email: &str,
    ) -> Result<(), ApiError> {
        self.store
            .uncount(CounterScope::CodeVerifies(purpose), email)
            .await?;
        self.store.uncount_code_tries(&hit.counted).await?;
        Ok(())
    }

    /// Whether a right sign-in code signs `email` in: it has an account, or codes sign up.
    pub(crate) async fn may_sign_in(&self, email: &str) -> Result<bool, ApiError> {
        Ok(self.settings.signup || self.store.user_by_email(email).await?.is_some())
    }

    /// The account a right sign-in code signs in to: the existing one, or with sign-up by code
    /// on a new one (its address verified). The caller marks an existing account's address
    /// verified once the sign-in completes (after the passkey, if it needs one).
    pub(crate) async fn account(&self, email: &str, now: i64) -> Result<Option<User>, ApiError> {
        if let Some((user, _)) = self.store.user_by_email(email).await? {
            return Ok(Some(user));
        }
        // Nor under another spelling of a mailbox (crate::password::new_address).
        if !self.settings.signup || !crate::password::new_address(email) {
            return Ok(None);
        }
        let name = &crate::store::name_from_address(email);
        self.store
            .create_user(&NewUser {
                id: &crate::tokens::random_id(),
                email,
                roles: &["user".to_owned()],
                name,
                // No password: they sign in with codes (or reset one).
                password_hash: "",
                email_verified_at: Some(now),
                password_unproved: false,
                claims: "{}",
                now,
            })
            .await?;
        Ok(self.store.user_by_email(email).await?.map(|(u, _)| u))
    }

    /// Deletes expired codes and sign-ups (the maintenance task; counters expire on their own).
    pub async fn purge(&self) -> StoreResult<()> {
        let s = &self.settings;
        let longest = s
            .send_window_secs
            .max(s.verify_window_secs)
            .max(MAX_CODE_TTL_SECS);
        self.store.purge_codes(self.clock.now() - longest).await
    }
}

/// `digits` decimal digits, uniform, from the OS CSPRNG.
pub fn generate_code(digits: u32) -> String {
    let n = rand::rngs::OsRng.gen_range(0..10u64.pow(digits));
    format!("{n:0width$}", width = digits as usize)
}

#[derive(Deserialize)]
pub struct StartRequest {
    email: String,
}

/// The mailbox `email` (normalised) is delivered to, as far as its spelling tells: without a
/// `+tag` after the local part, which most mail services ignore (`ann+1@…`, `ann+2@…`, … are
/// all Ann's inbox, and each had a budget of its own); and at Gmail, whose two domains are one
/// and which ignores dots in the local part, without its dots (`a.nn@gmail.com`,
/// `an.n@googlemail.com`, … were a budget each, about 1,200 mails an hour to one inbox). Only
/// for counting what is sent.
fn mailbox(email: &str) -> String {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return email.to_owned();
    };
    let local = match local.split_once('+') {
        Some((base, _)) if !base.is_empty() => base,
        _ => local,
    };
    if domain == "gmail.com" || domain == "googlemail.com" {
        let undotted = local.replace('.', "");
        if !undotted.is_empty() {
            return format!("{undotted}@gmail.com");
        }
    }
    format!("{local}@{domain}")
}

/// A normalised email that is an address, or `invalid_request`. The same check for every
/// address, known or not.
pub fn valid_email(raw: &str) -> Result<String, ApiError> {
    let email = normalize_email(raw);
    if !crate::password::acceptable_email(&email) {
        return Err(ApiError::InvalidRequest(
            "email must be an address of at most 254 bytes, without quotes or backslashes".into(),
        ));
    }
    Ok(email)
}

/// The answer every "mail me a code" endpoint gives, for every address.
pub fn accepted(otp: &Otp) -> Response {
    let mut res = (
        StatusCode::ACCEPTED,
        Json(json!({ "expires_in": otp.settings.ttl_secs })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// `POST /auth/otp/start`: the same 202 for every address; the code is made and sent after.
pub async fn start(
    _: Csrf,
    State(codes): State<Codes>,
    client: ClientIp,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<Response, ApiError> {
    let otp = codes.enabled()?;
    otp.admit(client).await?;
    let email = valid_email(&req.email)?;
    let now = otp.now();
    // Counted for every address, in one statement: the limit answers the same for all.
    otp.count_send(&email, now).await?;
    otp.issue_later(CodePurpose::SignIn, email, now);
    Ok(accepted(otp))
}

#[derive(Deserialize)]
pub struct MailboxQuery {
    email: String,
}

/// `GET /demo/mailbox?email=`: the demo mailbox (only with `--demo` and no SMTP server, and
/// only to loopback clients that asked for this machine by name, not through a proxy): the
/// codes "mailed" to that address, newest first.
pub async fn demo_mailbox(
    State(codes): State<Codes>,
    State(proxies): State<crate::net::Proxies>,
    client: ClientIp,
    extensions: axum::http::Extensions,
    headers: axum::http::HeaderMap,
    QueryParams(q): QueryParams<MailboxQuery>,
) -> Result<Response, ApiError> {
    // Both the client a trusted proxy reports and the connection's own peer: a proxy on another
    // machine relaying a forged `X-Forwarded-For: 127.0.0.1` gets nobody's codes.
    let peer = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>();
    // And a loopback `Host`, no forwarding header and no trusted proxy configured: a reverse
    // proxy on this machine (the demo left on behind it) makes every client's connection a
    // loopback one, and a page of another site that rebinds its name to 127.0.0.1 sends its own
    // name. (A proxy that forwards as a plain client would, with this machine's name and no such
    // header, is not caught: the demo must never run behind one.)
    let direct = proxies.trusted.is_empty()
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(tokenwarden_dpop::is_loopback_host)
        && !crate::net::says_forwarded(&headers);
    let loopback = direct
        && client.0.is_loopback()
        && peer.is_some_and(|p| crate::net::canonical(p.0.ip()).is_loopback());
    let mailbox = codes
        .0
        .as_ref()
        .filter(|o| o.demo && loopback)
        .and_then(|o| o.mailer.demo_mailbox())
        .ok_or(ApiError::NotFound)?;
    let messages = mailbox.to(&normalize_email(&q.email));
    let mut res = Json(json!({ "messages": messages })).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::mailbox;

    #[test]
    fn a_tag_after_the_local_part_is_the_same_mailbox() {
        for (given, counted) in [
            ("ann+1@example.com", "ann@example.com"),
            ("ann+a+b@example.com", "ann@example.com"),
            ("ann@example.com", "ann@example.com"),
            // Nothing before the tag: the address as it is.
            ("+ann@example.com", "+ann@example.com"),
            ("a+b@c+d.example", "a@c+d.example"),
            // Gmail: its two domains one, dots ignored (elsewhere a dot is a letter).
            ("a.nn@gmail.com", "ann@gmail.com"),
            ("an.n+x@googlemail.com", "ann@gmail.com"),
            ("a.nn@example.com", "a.nn@example.com"),
        ] {
            assert_eq!(mailbox(given), counted, "{given}");
        }
    }
}
