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
pub mod store;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::normalize_email;
use crate::config::OtpSettings;
use crate::error::ApiError;
use crate::extract::{JsonBody, require_csrf};
use crate::net::{ClientIp, bucket_key};
use crate::state::{AppState, StartError, Throttle};
use crate::store::{Store, StoreResult, User};
use mail::Mailer;
use store::{Counter, OtpStore};

/// Comparisons one code allows; the one that uses up the last revokes it and sends a new code.
pub const MAX_ATTEMPTS: i64 = 3;
/// Live codes an email may hold; a new one revokes the oldest beyond this.
pub const MAX_LIVE: i64 = 3;
/// The longest lifetime a code may be given.
pub const MAX_TTL_SECS: i64 = 3600;
/// The path of the verification (a DPoP proof's `htu`).
pub const VERIFY_PATH: &str = "/auth/otp/verify";

/// Name of the sealed HMAC key in `server_secrets`, and the associated data of its seal.
const KEY_NAME: &str = "otp_hmac_key";

/// The code machinery, present when codes can be delivered (`--smtp-url`, or `--demo`).
pub struct Otp {
    pub store: OtpStore,
    pub mailer: Mailer,
    key: [u8; 32],
    /// Starts and verifications per client address bucket (for the fleet, on PostgreSQL).
    pub ip_limiter: Throttle,
}

impl Otp {
    /// `None` when there is no way to deliver a code (no `--smtp-url`, no `--demo`).
    pub async fn new(
        settings: &OtpSettings,
        demo: bool,
        kek: &crate::kek::KeyEncryption,
        store: &Store,
    ) -> Result<Option<Otp>, StartError> {
        let protocol = StartError::Otp;
        let mailer = match &settings.smtp_url {
            Some(url) => Mailer::smtp(url, &settings.smtp_from).map_err(protocol)?,
            None if demo => Mailer::demo(),
            None => return Ok(None),
        };
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill(&mut fresh);
        let sealed = kek.seal(KEY_NAME, &fresh).map_err(protocol)?;
        let stored = store.shared_secret(KEY_NAME, &B64.encode(sealed)).await?;
        let sealed = B64
            .decode(stored)
            .map_err(|_| protocol(format!("{KEY_NAME} is not base64")))?;
        let key = kek.open(KEY_NAME, &sealed).map_err(protocol)?;
        let key = <[u8; 32]>::try_from(key.as_slice())
            .map_err(|_| protocol(format!("{KEY_NAME} is not 32 bytes")))?;
        Ok(Some(Otp {
            store: OtpStore::new(store),
            mailer,
            key,
            ip_limiter: Throttle::new("otp-ip", settings.ip_per_minute),
        }))
    }

    fn mac(&self, id: &str, email: &str, code: &str) -> [u8; 32] {
        // The key is 32 bytes, which HMAC always accepts.
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(m) => m,
            Err(_) => return [0; 32],
        };
        // Length-prefixed, so that no two (id, email, code) triples give the same input.
        for part in [id, email, code] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac.finalize().into_bytes().into()
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
}

/// `digits` decimal digits, uniform, from the OS CSPRNG.
pub fn generate_code(digits: u32) -> String {
    let n = rand::rngs::OsRng.gen_range(0..10u64.pow(digits));
    format!("{n:0width$}", width = digits as usize)
}

/// A normalised email that is an address, or `invalid_request`. The same check for every
/// address, known or not.
fn valid_email(raw: &str) -> Result<String, ApiError> {
    let email = normalize_email(raw);
    if email.len() > 254 || email.parse::<lettre::Address>().is_err() {
        return Err(ApiError::InvalidRequest(
            "email must be an address of at most 254 bytes".into(),
        ));
    }
    Ok(email)
}

fn enabled(state: &AppState) -> Result<&Otp, ApiError> {
    state.otp.as_ref().ok_or(ApiError::NotFound)
}

#[derive(Deserialize)]
pub struct StartRequest {
    email: String,
}

#[derive(Deserialize)]
pub struct VerifyRequest {
    email: String,
    code: String,
}

/// `POST /auth/otp/start`: the same 202 for every address; the code is made and sent after.
pub async fn start(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<StartRequest>,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    let otp = enabled(&state)?;
    let now = state.now();
    if let Some(retry_after) = otp
        .ip_limiter
        .check(&state.store, &bucket_key(client.0), now)
        .await?
    {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let email = valid_email(&req.email)?;
    // Counted for every address, in one statement: the limit answers the same for all.
    count_send(&state, otp, &email, now).await?;
    tokio::spawn(issue(state.clone(), email, now));
    let settings = &state.settings.otp;
    let mut res = (
        StatusCode::ACCEPTED,
        Json(json!({ "expires_in": settings.ttl_secs })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Counts a code about to be made for `email`; 429 past the per-email limit.
async fn count_send(state: &AppState, otp: &Otp, email: &str, now: i64) -> Result<(), ApiError> {
    let s = &state.settings.otp;
    let (sends, window_start) = otp
        .store
        .count(Counter::Sends, email, now, s.send_window_secs)
        .await?;
    if sends > s.sends_per_email {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_start + s.send_window_secs - now,
        });
    }
    Ok(())
}

/// Makes a code for `email`, stores its hash, and mails it if the address may sign in. Runs
/// after the answer; a failure is logged (never with the code).
async fn issue(state: AppState, email: String, now: i64) {
    if let Err(e) = try_issue(&state, &email, now).await {
        tracing::error!(error = %e, "issuing a sign-in code failed");
    }
}

async fn try_issue(state: &AppState, email: &str, now: i64) -> Result<(), String> {
    let Some(otp) = &state.otp else {
        return Ok(());
    };
    let s = &state.settings.otp;
    let code = generate_code(s.digits);
    let id = crate::tokens::random_id();
    otp.store
        .insert(
            &id,
            email,
            &otp.hash(&id, email, &code),
            now,
            now + s.ttl_secs,
            MAX_ATTEMPTS,
            MAX_LIVE,
        )
        .await
        .map_err(|e| format!("database: {e}"))?;
    let deliver = s.signup
        || state
            .store
            .user_by_email(email)
            .await
            .map_err(|e| format!("database: {e}"))?
            .is_some();
    if deliver {
        otp.mailer.send_code(email, &code, s.ttl_secs, now).await?;
        tracing::info!(target: "audit", event = "otp_sent");
    }
    Ok(())
}

/// `POST /auth/otp/verify`: a session exactly like a password login, or a typed refusal.
pub async fn verify(
    State(state): State<AppState>,
    client: ClientIp,
    headers: HeaderMap,
    JsonBody(req): JsonBody<VerifyRequest>,
) -> Result<Response, ApiError> {
    require_csrf(&headers)?;
    let otp = enabled(&state)?;
    let s = &state.settings.otp;
    let now = state.now();
    if let Some(retry_after) = otp
        .ip_limiter
        .check(&state.store, &bucket_key(client.0), now)
        .await?
    {
        return Err(ApiError::TooManyAttempts { retry_after });
    }
    let email = valid_email(&req.email)?;
    let code = req.code.trim();
    if code.len() != s.digits as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::InvalidRequest(format!(
            "code must be {} digits",
            s.digits
        )));
    }
    // DPoP before the code: a nonce retry uses no attempt.
    let jkt = crate::dpop::login_binding(&state, &headers, VERIFY_PATH).await?;
    // Per email, whatever the client: many addresses do not buy more guesses.
    let (tries, window_start) = otp
        .store
        .count(Counter::Verifies, &email, now, s.verify_window_secs)
        .await?;
    if tries > s.verifies_per_email {
        return Err(ApiError::TooManyAttempts {
            retry_after: window_start + s.verify_window_secs - now,
        });
    }
    let counted = otp.store.count_attempt(&email, now, MAX_ATTEMPTS).await?;
    // Every live code is compared (no early exit), each in constant time.
    let hit = counted.iter().fold(None, |hit, c| {
        let m = otp.matches(&c.id, &email, code, &c.code_hash);
        if m && hit.is_none() { Some(c) } else { hit }
    });
    if let Some(hit) = hit
        && let Some(user) = account(&state, &email, now).await?
        && otp.store.consume(&hit.id, &email, now).await?
    {
        otp.store.clear(Counter::Verifies, &email).await?;
        return crate::auth::open_session(&state, &user, &headers, jkt, now, "otp_login").await;
    }
    if counted.is_empty() {
        let expired = otp
            .store
            .expired_since(&email, now, now - MAX_TTL_SECS, MAX_ATTEMPTS)
            .await?;
        return Err(if expired {
            ApiError::CodeExpired
        } else {
            ApiError::InvalidCode { attempts_left: 0 }
        });
    }
    // This guess used up a code: it is dead, and a fresh one goes out (within the send limit).
    if counted.iter().any(|c| c.attempts >= MAX_ATTEMPTS)
        && count_send(&state, otp, &email, now).await.is_ok()
    {
        tokio::spawn(issue(state.clone(), email.clone(), now));
    }
    let attempts_left = counted
        .iter()
        .map(|c| MAX_ATTEMPTS - c.attempts)
        .max()
        .unwrap_or(0)
        .max(0);
    tracing::info!(target: "audit", event = "otp_wrong_code", attempts_left);
    Err(ApiError::InvalidCode { attempts_left })
}

/// The account a right code signs in to: the existing one, or with sign-up on a new one.
async fn account(state: &AppState, email: &str, now: i64) -> Result<Option<User>, ApiError> {
    if let Some((user, _)) = state.store.user_by_email(email).await? {
        return Ok(Some(user));
    }
    if !state.settings.otp.signup {
        return Ok(None);
    }
    // No password: an unguessable one, whose hash nobody knows the input of.
    let hash = crate::password::hash(&crate::tokens::random_token())
        .await
        .map_err(ApiError::Internal)?;
    let name = email.split('@').next().unwrap_or(email);
    state
        .store
        .create_user(
            &crate::tokens::random_id(),
            email,
            &hash,
            name,
            &["user".to_owned()],
            now,
        )
        .await?;
    Ok(state.store.user_by_email(email).await?.map(|(u, _)| u))
}

#[derive(Deserialize)]
pub struct MailboxQuery {
    email: String,
}

/// `GET /demo/mailbox?email=`: the demo mailbox (only with `--demo` and no SMTP server, and
/// only to loopback clients): the codes "mailed" to that address, newest first.
pub async fn demo_mailbox(
    State(state): State<AppState>,
    client: ClientIp,
    Query(q): Query<MailboxQuery>,
) -> Result<Response, ApiError> {
    let mailbox = state
        .otp
        .as_ref()
        .and_then(|o| o.mailer.demo_mailbox())
        .filter(|_| state.settings.demo && client.0.is_loopback())
        .ok_or(ApiError::NotFound)?;
    let messages = mailbox.to(&normalize_email(&q.email));
    let mut res = Json(json!({ "messages": messages })).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Deletes expired codes and closed counters (the maintenance task).
pub async fn purge(state: &AppState) -> StoreResult<()> {
    match &state.otp {
        Some(otp) => {
            let s = &state.settings.otp;
            let longest = s
                .send_window_secs
                .max(s.verify_window_secs)
                .max(MAX_TTL_SECS);
            otp.store.purge(state.now() - longest).await
        }
        None => Ok(()),
    }
}
