//! Passwords: [`Passwords::check`], the password sign-in's rules (throttles, the hash formats of
//! crate::hashes, the upgrade of a foreign hash to argon2id, the lazy migration from a legacy
//! backend, a verified address when one is required), and the rules a new password must meet
//! ([`check_new`], NIST SP 800-63B).
//!
//! New hashes are argon2id with OWASP's minimum parameters (m = 19 MiB, t = 2, p = 1: the
//! crate's defaults). Every hash and verification runs on the blocking pool behind [`Hasher`]:
//! at most `concurrency` at once (each may hold many MiB) and at most `queue` waiting; a
//! sign-in beyond that is told the server is busy instead of joining an unbounded queue.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use tokio::sync::Semaphore;

use crate::clock::Clock;
use crate::error::ApiError;
use crate::legacy::{Legacy, LegacyAnswer, Profile};
use crate::store::{CounterScope, NewUser, Store, User};
use crate::throttle::Throttle;

/// A browser known to an account: whoever signed in there holds a cookie (`__Host-tw_device`,
/// [`KnownBrowsers::cookie`]) that is HMAC-SHA256(key, account id ‖ password version ‖ nonce)
/// beside its nonce (the id, not the address: an address deleted and taken again is another
/// account), under a key sealed in the database like the codes' (every instance agrees; a dump
/// alone does not give it). A password change or reset counts a new version: every cookie made
/// before it (a thief's included, however many) is no cookie any more. OWASP's "device cookies": a known browser's
/// password attempts count against that browser, everyone else's against the account as well,
/// so that many addresses buy a guesser no more than the account's ceiling, and the guesser's
/// lockout does not lock the owner's browser out.
pub struct KnownBrowsers {
    key: [u8; 32],
}

/// The sealed key's name in `server_secrets` (and its seal's associated data).
const KNOWN_BROWSER_KEY: &str = "known_browser_key";

/// How long a browser stays known after its last password sign-in (400 days is the longest
/// `Max-Age` browsers keep).
pub const KNOWN_BROWSER_MAX_AGE: i64 = 400 * 86_400;

impl KnownBrowsers {
    /// The key, sealed in the database (the same for every instance).
    pub async fn load(store: &Store, kek: &crate::kek::KeyEncryption) -> Result<Arc<Self>, String> {
        let key = store
            .sealed_key(kek, KNOWN_BROWSER_KEY)
            .await
            .map_err(|e| format!("known browsers: {e}"))?;
        Ok(Arc::new(KnownBrowsers { key }))
    }

    /// The `Set-Cookie` that makes this browser known to account `user` while its password is
    /// at `version`, for the answer to a sign-in (any way of signing in: whoever did is not
    /// guessing the password).
    pub fn cookie(&self, user: &str, version: i64) -> String {
        crate::cookies::known_browser_cookie(&self.issue(user, version), KNOWN_BROWSER_MAX_AGE)
    }

    fn mac(&self, user: &str, version: i64, nonce: &str) -> [u8; 32] {
        let version = version.to_string();
        crate::tokens::keyed_hash(&self.key, &["known-browser", user, &version, nonce])
    }

    /// A new cookie value for a browser that just signed in to account `user`.
    fn issue(&self, user: &str, version: i64) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let nonce = B64.encode(rand::random::<[u8; 16]>());
        let mac = B64.encode(self.mac(user, version, &nonce));
        format!("{nonce}.{mac}")
    }

    /// The nonce of `cookie` if it is a cookie this server issued for account `user` at password
    /// `version` (compared in constant time); `None` for any other value, another account's
    /// cookie or one from before a password change included.
    fn known(&self, cookie: Option<&str>, user: &str, version: i64) -> Option<String> {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use subtle::ConstantTimeEq;
        let (nonce, mac) = cookie?.split_once('.')?;
        if nonce.len() != 22
            || !nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        let given = B64.decode(mac).ok()?;
        bool::from(given.ct_eq(&self.mac(user, version, nonce))).then(|| nonce.to_owned())
    }
}

/// Lower-cased, trimmed; the key of the per-account throttle whether the account exists or not.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Whether `email` (normalized) is an address this server takes: at most 254 bytes, an address
/// by RFC 5321's rules, and one spelling per mailbox: no quoted local part and no backslash
/// (`"v\ictim"@example.com` reaches victim@example.com at most mail servers, and would be
/// another account and another count of codes sent), no control character and no invisible
/// one (zero-width, bidirectional overrides) that would make two spellings look alike.
/// Every address given to this server goes through it; a new account's, through
/// [`new_address`] too.
pub fn acceptable_email(email: &str) -> bool {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{00AD}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
    };
    email.len() <= 254
        && !email.contains(['"', '\\'])
        && !email.chars().any(invisible)
        && email.parse::<lettre::Address>().is_ok()
}

/// Whether `email` (normalized) may be a new account's: [`acceptable_email`], and outside ASCII
/// the one spelling of the others that reach the same mailbox ([`unicode_spelled_once`]). Only
/// for new accounts: one opened before this rule keeps its address, and signs in by it.
pub fn new_address(email: &str) -> bool {
    acceptable_email(email)
        && unicode_spelled_once(email)
        && !email.chars().any(shows_nothing)
        && mailable_domain(email)
}

/// What a new account's address that fails [`new_address`] beyond [`acceptable_email`] is told.
pub const NEW_ADDRESS_RULE: &str = "the address has another spelling for the same mailbox, or \
    none the mailer can address: write its domain as people read it (bücher.de, not \
    xn--bcher-kva.de, a full-width letter or a combining accent, and a name, not [an address \
    literal] nor one under .invalid), its local part in NFC, and no invisible character or \
    space";

/// A character that shows as nothing, or as a space, beside the ones [`acceptable_email`]
/// refuses in every address: the rest of Unicode's default-ignorable code points (a variation
/// selector, a Hangul filler, a tag character: `ann\u{3164}@example.com` looks like
/// `ann@example.com`) and every space and line or paragraph separator. Only in a new account's
/// address: one opened before this rule keeps its address.
fn shows_nothing(c: char) -> bool {
    matches!(c, '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}' | '\u{2028}' | '\u{2029}')
        || c.is_whitespace()
}

/// Whether a new account's domain is a name: not an address literal (`[192.0.2.1]`: the mailer
/// has no form for one, so each of its codes was stored and counted and never sent), nor a bare
/// IP address (which relays do not deliver to), nor one under `invalid` (RFC 6761: never a
/// mailbox). The last includes the addresses this server makes up for a provider's accounts
/// (crate::oidc::NO_MAILBOX): an import, a sign-up or the old backend's word opening an account
/// under one would take the address of the account it stands for, whose provider sign-in then
/// finds it another's. A name on the relay's own network (`localhost`, `intranet`) is taken: an
/// internal deployment's addresses may be such, and its relay delivers them.
fn mailable_domain(email: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(_, domain)| {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        !domain.starts_with('[')
            && domain.parse::<std::net::IpAddr>().is_err()
            && domain != "invalid"
            && !domain.ends_with(".invalid")
    })
}

/// Whether an address outside ASCII is written as its mailbox's one spelling: the domain as
/// IDNA writes it for people (UTS #46: `ｅxample.com` with a full-width letter, `bücher.de` with
/// a combining umlaut and `xn--bcher-kva.de` all name the one domain `bücher.de` or
/// `example.com` resolves), and a local part in NFC (RFC 6532). Each other spelling would be
/// another account, and another count of codes sent, for the same mailbox.
fn unicode_spelled_once(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_lowercase();
    let (for_people, errors) = idna::domain_to_unicode(&domain);
    // Lower-cased as the address is (IDNA writes a few scripts' capitals, Cherokee's).
    errors.is_ok() && for_people.to_lowercase() == domain && unicode_normalization::is_nfc(local)
}

/// Shortest new password, in characters (NIST SP 800-63B: at least 8).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest new password, in characters (NIST: allow at least 64).
pub const MAX_PASSWORD_CHARS: usize = 256;

/// The common passwords a new one may not be (server/data/common-passwords.txt).
fn common() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        include_str!("../data/common-passwords.txt")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .collect()
    })
}

/// Why a new password is refused: the `weak_password` answer's description.
pub fn check_new(password: &str, email: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    let weak = |why: String| Err(ApiError::WeakPassword(why));
    if chars < MIN_PASSWORD_CHARS {
        return weak(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        ));
    }
    if chars > MAX_PASSWORD_CHARS {
        return weak(format!(
            "the password may have at most {MAX_PASSWORD_CHARS} characters"
        ));
    }
    let lower = password.to_lowercase();
    if common().contains(lower.as_str()) {
        return weak("the password is one of the most common passwords".into());
    }
    if lower == normalize_email(email) || lower == email.split('@').next().unwrap_or("") {
        return weak("the password must not be the email address".into());
    }
    Ok(())
}

/// Hashes a password into an argon2id PHC string with a random salt (blocking).
pub fn hash_blocking(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// [`hash_blocking`] on the blocking pool.
pub async fn hash(password: &str) -> Result<String, String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| e.to_string())?
}

/// The limits of password sign-in.
#[derive(Debug, Clone)]
pub struct PasswordPolicy {
    /// Attempts per (account, client) within `window` before 429.
    pub max_failures: i64,
    /// Attempts per account within `window` from every client but the browsers known to it.
    pub account_max_failures: i64,
    pub window: i64,
    /// Attempts per client per minute.
    pub ip_per_minute: u32,
    pub argon2_concurrency: usize,
    pub argon2_queue: usize,
    /// Refuse sign-in with a password until the address is verified (`email_not_verified`).
    pub require_verified_email: bool,
}

/// Password sign-in: throttles, the bounded hasher, a dummy hash that makes unknown emails
/// cost what known ones do, and the legacy backend of a lazy migration.
#[derive(Clone)]
pub struct Passwords(Arc<PasswordsInner>);

pub struct PasswordsInner {
    store: Store,
    clock: Clock,
    policy: PasswordPolicy,
    legacy: Option<Legacy>,
    known: Arc<KnownBrowsers>,
    /// Attempts per client address bucket.
    pub ip_limiter: Throttle,
    /// argon2id behind a bounded semaphore.
    pub hasher: Hasher,
    /// A hash of a random password, verified against for unknown emails so that they take as
    /// long as known ones.
    dummy_hash: String,
    /// The longest a refused password took so far, in µs (at most [`REFUSAL_FLOOR_CAP`]):
    /// every refusal lasts at least this long. An imported hash (bcrypt, PBKDF2, scrypt) or a
    /// legacy backend's answer takes another time than the argon2id dummy of an unknown
    /// address: without the floor, how long `invalid_credentials` took told which addresses
    /// have such an account.
    refusal_floor_us: std::sync::atomic::AtomicU64,
}

/// The floor never grows past this: one slow moment (a loaded machine) must not slow every
/// later refusal down for good.
const REFUSAL_FLOOR_CAP: std::time::Duration = std::time::Duration::from_secs(1);

impl std::ops::Deref for Passwords {
    type Target = PasswordsInner;
    fn deref(&self) -> &PasswordsInner {
        &self.0
    }
}

impl Passwords {
    pub async fn new(
        store: Store,
        clock: Clock,
        policy: PasswordPolicy,
        legacy: Option<Legacy>,
        known: Arc<KnownBrowsers>,
    ) -> Result<Self, String> {
        let dummy_hash = hash(&crate::tokens::random_token()).await?;
        Ok(Passwords(Arc::new(PasswordsInner {
            known,
            ip_limiter: Throttle::new("login-ip", policy.ip_per_minute),
            hasher: Hasher::new(policy.argon2_concurrency, policy.argon2_queue),
            store,
            clock,
            policy,
            legacy,
            dummy_hash,
            refusal_floor_us: std::sync::atomic::AtomicU64::new(0),
        })))
    }

    /// Counts a request of `client` before anything else of a sign-in: 429 once it is over
    /// its per-minute limit.
    pub async fn admit(&self, client: &str) -> Result<(), ApiError> {
        let now = self.clock.now();
        match self.ip_limiter.check(&self.store, client, now).await? {
            Some(retry_after) => Err(ApiError::TooManyAttempts { retry_after }),
            None => Ok(()),
        }
    }

    /// The account of `email` if `password` is its password. Unknown emails verify against a
    /// dummy hash: same work, same time, same answer (`invalid_credentials`). The attempt is
    /// counted before the password is checked and in one statement, so concurrent guesses
    /// cannot all read a count under the limit: from a browser known to the account (its
    /// `browser` cookie, [`KnownBrowsers`]), per (account, browser); from anyone else, per
    /// (account, client) *and* per account. A stranger's guesses lock out neither the owner's
    /// known browser nor, until the account's ceiling, the owner's other addresses; many
    /// addresses buy the stranger no more than that ceiling.
    ///
    /// A hash of another format that verifies is replaced by an argon2id one. An address
    /// unknown here, or known without a password, is asked of the legacy backend when there
    /// is one; a user it vouches for is imported with this password.
    ///
    /// With `--require-verified-email`, a right password of an unverified address is
    /// `email_not_verified`.
    pub async fn check(
        &self,
        email: &str,
        password: &str,
        client: &str,
        browser: Option<&str>,
    ) -> Result<Proved, ApiError> {
        let proved = self.check_current(email, password, client, browser).await?;
        if self.policy.require_verified_email && !proved.user.email_verified {
            return Err(ApiError::EmailNotVerified);
        }
        Ok(proved)
    }

    /// As [`Self::check`], whether the address is verified or not (a signed-in user proving
    /// their password again, to change it).
    pub async fn check_current(
        &self,
        email: &str,
        password: &str,
        client: &str,
        browser: Option<&str>,
    ) -> Result<Proved, ApiError> {
        // From the hashing turn on (not the wait for it: a queue that was long once must not
        // slow every later refusal down).
        let mut started = None;
        let result = self
            .check_now(email, password, client, browser, &mut started)
            .await;
        // A refusal, and the old backend's unavailability (for an unknown address's password or
        // a known one's wrong one), take as long as each other.
        if let (Err(ApiError::InvalidCredentials | ApiError::LegacyUnavailable), Some(t)) =
            (&result, started)
        {
            self.refuse_no_sooner_than_before(t).await;
        }
        result
    }

    /// A refusal that started at `started` ends no sooner than the slowest one before it took
    /// (up to the cap), which it raises if it was slower.
    async fn refuse_no_sooner_than_before(&self, started: std::time::Instant) {
        use std::sync::atomic::Ordering;
        let took = started.elapsed().min(REFUSAL_FLOOR_CAP);
        let took_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let floor = self.refusal_floor_us.fetch_max(took_us, Ordering::Relaxed);
        if floor > took_us {
            tokio::time::sleep(std::time::Duration::from_micros(floor - took_us)).await;
        }
    }

    async fn check_now(
        &self,
        email: &str,
        password: &str,
        client: &str,
        browser: Option<&str>,
        started: &mut Option<std::time::Instant>,
    ) -> Result<Proved, ApiError> {
        let now = self.clock.now();
        // At most a bounded number of hash runs at once, a bounded queue, then 503.
        let turn = self
            .hasher
            .turn()
            .await
            .map_err(|_| ApiError::Busy { retry_after: 1 })?;
        *started = Some(std::time::Instant::now());
        // The account first (only read: every address is counted alike below, and the answer
        // waits for the hash either way), for the id and version its known browsers' cookies
        // name (an address without an account has none).
        let found = self.store.user_with_password(email).await?;
        let version = found.as_ref().map_or(0, |(_, _, v)| *v);
        let known_browser = found
            .as_ref()
            .and_then(|(user, _, v)| self.known.known(browser, &user.id, *v));
        // What this attempt counts against, each with its limit.
        let counts = match known_browser {
            Some(nonce) => vec![(
                CounterScope::LoginDeviceAttempts,
                format!("{nonce}|{email}"),
                self.policy.max_failures,
            )],
            None => vec![
                (
                    CounterScope::LoginAttempts,
                    format!("{client}|{email}"),
                    self.policy.max_failures,
                ),
                (
                    CounterScope::LoginAccountAttempts,
                    email.to_owned(),
                    self.policy.account_max_failures,
                ),
            ],
        };
        for (scope, subject, max) in &counts {
            let (attempts, window_start) = self
                .store
                .count(*scope, subject, now, self.policy.window)
                .await?;
            if attempts > *max {
                return Err(ApiError::TooManyAttempts {
                    retry_after: window_start + self.policy.window - now,
                });
            }
        }
        let stored = found
            .as_ref()
            .map(|(_, h, _)| h.as_str())
            .filter(|h| !h.is_empty());
        let known = found.as_ref().map(|(user, _, _)| user);
        let user = match (known, stored) {
            (Some(user), Some(stored)) => {
                if !turn.verify(password, stored).await {
                    // With an old backend, an unknown address's wrong password is answered as
                    // the old backend answers it (401, or 503 while it fails or for a password
                    // it cannot answer): a known one's is asked of it too, and answered the
                    // same way (never a sign-in), or the two answers would tell which addresses
                    // have an account here.
                    drop(turn);
                    return Err(match &self.legacy {
                        Some(legacy) => match self.ask(legacy, email, password).await {
                            Ok(_) => ApiError::InvalidCredentials,
                            Err(e) => e,
                        },
                        None => ApiError::InvalidCredentials,
                    });
                }
                if crate::hashes::needs_rehash(stored) {
                    self.rehash(&turn, user, password, stored).await;
                }
                drop(turn);
                user.clone()
            }
            (user, None) if self.legacy.is_some() => {
                self.migrate(turn, email, password, user, now).await?
            }
            _ => {
                // Unknown, or no password: the same work as a wrong password.
                turn.verify(password, &self.dummy_hash).await;
                return Err(ApiError::InvalidCredentials);
            }
        };
        // A success clears this client's (or browser's) count; the account's forgets this one
        // attempt only: an owner signing in from a new browser must not hand a guesser a fresh
        // ceiling.
        for (scope, subject, _) in &counts {
            match scope {
                CounterScope::LoginAccountAttempts => self.store.uncount(*scope, subject).await?,
                _ => self.store.clear_count(*scope, subject).await?,
            }
        }
        // A user the legacy backend vouched for just now: a first password, version 0 (new) or
        // the known account's, which setting it did not change.
        Ok(Proved { user, version })
    }

    /// Replaces a verified hash of another format by argon2id (unless the password changed
    /// meanwhile). A failure is logged: the sign-in itself stands.
    async fn rehash(&self, turn: &Turn<'_>, user: &User, password: &str, stored: &str) {
        let result = match turn.hash(password).await {
            Ok(fresh) => self
                .store
                .set_password_hash(&user.id, &fresh, Some(stored))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(true) => {
                tracing::info!(target: "audit", event = "password_rehashed", user = %user.id,
                                    from = crate::hashes::kind_of(stored).map_or("?", |k| k.as_str()))
            }
            // Another instance's rehash, a change or a reset came first: the hash is theirs.
            Ok(false) => {
                tracing::info!(user = %user.id, "rehash skipped: the hash changed meanwhile")
            }
            Err(e) => tracing::error!(error = %e, user = %user.id, "rehashing a password failed"),
        }
    }

    /// Asks the legacy backend; imports (or completes) the user it vouches for. The hashing
    /// turn is given back while the backend answers (up to its timeout: logins of unknown
    /// addresses would otherwise hold every turn and refuse everyone), and taken again to hash.
    async fn migrate(
        &self,
        turn: Turn<'_>,
        email: &str,
        password: &str,
        known: Option<&User>,
        now: i64,
    ) -> Result<User, ApiError> {
        drop(turn);
        let Some(legacy) = &self.legacy else {
            return Err(ApiError::InvalidCredentials);
        };
        // Asked whatever the address: an unknown one answered at once while a known one waits
        // for the old backend (a 503 while it fails) would tell which addresses have an
        // account here.
        let profile = self.ask(legacy, email, password).await?;
        // An address no other way in takes (a quoted or invisible spelling of another mailbox,
        // which an old app that never checked addresses may hold): never an account made here
        // on the old backend's word.
        if known.is_none() && !new_address(email) {
            return Err(ApiError::InvalidCredentials);
        }
        // Nor a password for a provider's account under the address this server made up for it
        // (crate::oidc::NO_MAILBOX): the address is in the account's tokens, and an old app
        // that vouches for every address it holds would hand whoever registered it there the
        // provider's user's account.
        if email.ends_with(crate::oidc::NO_MAILBOX) {
            if let Some(user) = known {
                tracing::warn!(target: "audit", event = "legacy_refused_unverified", user = %user.id);
            }
            return Err(ApiError::InvalidCredentials);
        }
        if let Some(user) = known {
            // An account here without a password (a code sign-up, a provider's, an import
            // without a hash): the old backend's word sets its password only if it vouches for
            // the address too, or names this very account (an import that kept its ids). An old
            // backend that never checked addresses would otherwise hand whoever registered the
            // address there the account here.
            // Nor, without its word for the address, one whose owner proved the address and
            // so ended a password a stranger had chosen (the stranger's own old account would
            // otherwise set it again).
            // Nor, without its word for the address, once a code proved the address here (the
            // owner has the account, and need not have had a password here to lose).
            let disowned = || async { self.store.password_mark(&user.id).await.map(|m| m == 2) };
            if !profile.email_verified
                && (profile.id.as_deref() != Some(user.id.as_str()) || disowned().await?)
            {
                tracing::warn!(target: "audit", event = "legacy_refused_unverified", user = %user.id);
                return Err(ApiError::InvalidCredentials);
            }
        }
        let turn = self
            .hasher
            .turn()
            .await
            .map_err(|_| ApiError::Busy { retry_after: 1 })?;
        let hash = turn.hash(password).await.map_err(ApiError::Internal)?;
        drop(turn);
        if let Some(user) = known {
            // The rule again, in the write: a reset, a code proving the address or a password
            // set meanwhile wins, and this sign-in opens nothing.
            if !self
                .store
                .set_legacy_password(&user.id, &hash, profile.email_verified)
                .await?
            {
                tracing::warn!(target: "audit", event = "legacy_refused_unverified", user = %user.id);
                return Err(ApiError::InvalidCredentials);
            }
            tracing::info!(target: "audit", event = "legacy_password_set", user = %user.id);
            return Ok(user.clone());
        }
        let id = profile.id.unwrap_or_else(crate::tokens::random_id);
        let name = profile
            .name
            .unwrap_or_else(|| crate::store::name_from_address(email));
        let claims = serde_json::Value::Object(profile.claims).to_string();
        let created = self
            .store
            .create_user(&NewUser {
                id: &id,
                email,
                roles: &profile.roles,
                name: &name,
                password_hash: &hash,
                email_verified_at: profile.email_verified.then_some(now),
                // Whoever registered the address at the old backend chose it.
                password_unproved: !profile.email_verified,
                claims: &claims,
                now,
            })
            .await?;
        if !created {
            // The address (or the id) was taken meanwhile: whoever took it, this sign-in does
            // not open their account (the next goes through the known account's rule).
            return Err(ApiError::InvalidCredentials);
        }
        tracing::info!(target: "audit", event = "legacy_imported", user = %id);
        self.store
            .user_by_email(email)
            .await?
            .map(|(u, _)| u)
            .ok_or(ApiError::InvalidCredentials)
    }

    /// The old backend's answer: its profile, 401 (`invalid_credentials`), or 503.
    async fn ask(&self, legacy: &Legacy, email: &str, password: &str) -> Result<Profile, ApiError> {
        match legacy.check(email, password).await {
            LegacyAnswer::Vouched(p) => Ok(p),
            LegacyAnswer::Refused => Err(ApiError::InvalidCredentials),
            LegacyAnswer::Unavailable(why) => {
                tracing::error!(target: "audit", event = "legacy_unavailable", %why);
                Err(ApiError::LegacyUnavailable)
            }
        }
    }

    /// The hash of `password` as a new password of `user` (checked by [`check_new`] first),
    /// for the caller to store with what the change ends (`Sessions::replace_password`).
    pub async fn hash_new(&self, user: &User, password: &str) -> Result<String, ApiError> {
        check_new(password, &user.email)?;
        let turn = self
            .hasher
            .turn()
            .await
            .map_err(|_| ApiError::Busy { retry_after: 1 })?;
        turn.hash(password).await.map_err(ApiError::Internal)
    }
}

/// A password that was right: its account, and the version it is of (one more at each change
/// or reset): a session opened on it, or a change made with it, holds only while it is still
/// the account's (`Sessions::open_proved`, `Sessions::replace_password`).
#[derive(Debug, Clone)]
pub struct Proved {
    pub user: User,
    pub version: i64,
}

/// The server is verifying as many passwords as it allows, with a full queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A bounded gate around password hashing and verification.
pub struct Hasher {
    permits: Semaphore,
    /// Hash runs on the blocking pool: each holds one until it ends, even when the request
    /// that started it went away (a run cannot be stopped; a dropped turn frees its place).
    jobs: std::sync::Arc<Semaphore>,
    /// Requests admitted: running plus waiting.
    admitted: AtomicUsize,
    limit: usize,
    running: AtomicUsize,
    peak: AtomicUsize,
    verifications: AtomicU64,
    hashes: AtomicU64,
}

/// A place in the gate; leaving (drop) frees it.
pub struct Turn<'a> {
    hasher: &'a Hasher,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.hasher.running.fetch_sub(1, Ordering::SeqCst);
        self.hasher.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Turn<'_> {
    /// Verifies within this turn.
    pub async fn verify(&self, password: &str, stored: &str) -> bool {
        self.hasher.verifications.fetch_add(1, Ordering::SeqCst);
        let (password, stored) = (password.to_owned(), stored.to_owned());
        self.run(move || crate::hashes::verify_blocking(&password, &stored))
            .await
            .unwrap_or(false)
    }

    /// Hashes within this turn.
    pub async fn hash(&self, password: &str) -> Result<String, String> {
        self.hasher.hashes.fetch_add(1, Ordering::SeqCst);
        let password = password.to_owned();
        self.run(move || hash_blocking(&password))
            .await
            .ok_or("the hashing stopped")?
    }

    /// Runs `f` on the blocking pool holding one of the gate's job places until it returns: a
    /// client that hangs up cannot start more runs than `--argon2-concurrency` at once.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let job = self.hasher.jobs.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(job);
            out
        })
        .await
        .ok()
    }
}

struct Admission<'a>(&'a Hasher);

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Hasher {
    /// `concurrency` verifications at once (at least 1), `queue` more waiting.
    pub fn new(concurrency: usize, queue: usize) -> Self {
        let concurrency = concurrency.max(1);
        Hasher {
            permits: Semaphore::new(concurrency),
            jobs: std::sync::Arc::new(Semaphore::new(concurrency)),
            admitted: AtomicUsize::new(0),
            limit: concurrency + queue,
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            verifications: AtomicU64::new(0),
            hashes: AtomicU64::new(0),
        }
    }

    /// Waits for a turn, or `Err(Busy)` at once if the queue is full.
    pub async fn turn(&self) -> Result<Turn<'_>, Busy> {
        let admitted = self
            .admitted
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Busy);
        }
        let admission = Admission(self);
        let permit = self.permits.acquire().await.map_err(|_| Busy)?;
        // From here the turn releases the admission (in its Drop).
        std::mem::forget(admission);
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(running, Ordering::SeqCst);
        Ok(Turn {
            hasher: self,
            _permit: permit,
        })
    }

    /// The most verifications that ever ran at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Passwords verified since start.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::SeqCst)
    }

    /// Passwords hashed since start.
    pub fn hashes(&self) -> u64 {
        self.hashes.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_has_one_spelling() {
        for ok in [
            "alice@example.com",
            "a.b+tag@sub.example.org",
            "ünïcode@bücher.de",
            "Alice@Example.COM",
        ] {
            assert!(acceptable_email(ok), "{ok}");
        }
        // Other spellings of a mailbox above: a full-width letter, a combining umlaut (NFD) in
        // the domain or the local part, the domain's ASCII (punycode) form.
        // Not a new account's, and still an existing account's (it signs in by it).
        for other in [
            "alice@\u{FF45}xample.com",
            "ann@bu\u{0308}cher.de",
            "u\u{0308}nicode@example.com",
            "ann@xn--bcher-kva.de",
        ] {
            assert!(!new_address(other), "{other:?}");
            assert!(acceptable_email(other), "{other:?}");
        }
        assert!(!new_address("ann@xn--zz.example"));
        // Not a new account's either, still an address: invisible characters beyond the ones
        // every address refuses, spaces that are not ASCII's, domains mail is not sent to.
        for other in [
            "ann\u{3164}@example.com",
            "ann\u{FE0F}@example.com",
            "ann\u{E0041}@example.com",
            "ann@exa\u{034F}mple.com",
            "ann\u{00A0}@example.com",
            "ann@[192.0.2.1]",
            "ann@192.0.2.1",
            "ann@example.invalid",
            "ann@invalid.",
            "0123456789abcdef0123456789abcdef@google.oidc.invalid",
        ] {
            assert!(!new_address(other), "{other:?}");
        }
        // Names a relay delivers on its own network: an internal deployment's addresses.
        for ok in ["ann@intranet", "ann@localhost", "ann@corp.local"] {
            assert!(new_address(ok), "{ok}");
        }
        // A new account's: ASCII, a domain as people read it, Cherokee (whose capitals IDNA
        // writes) lower-cased as every address is.
        for ok in [
            "alice@example.com",
            "ünïcode@bücher.de",
            "ann@\u{13A0}\u{13A1}.example".to_lowercase().as_str(),
        ] {
            assert!(new_address(ok), "{ok}");
        }
        for bad in [
            "\"alice\"@example.com",
            "\"al\\ice\"@example.com",
            "al\\ice@example.com",
            "ali\u{200B}ce@example.com",
            "alice@exa\u{202E}mple.com",
            "ali\u{7}ce@example.com",
            "not-an-address",
            &format!("{}@example.com", "a".repeat(250)),
        ] {
            assert!(!acceptable_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_known_browser_cookie_is_known_only_to_its_account_and_only_as_issued() {
        let known = KnownBrowsers { key: [7; 32] };
        let c = known.issue("u-alice", 3);
        let nonce = known.known(Some(&c), "u-alice", 3);
        assert_eq!(nonce.as_deref(), c.split('.').next());
        assert_eq!(known.known(Some(&c), "u-bob", 3), None);
        assert_eq!(known.known(None, "u-alice", 3), None);
        // A password change or reset (a new version) ends every cookie made before it.
        assert_eq!(known.known(Some(&c), "u-alice", 4), None);
        let other_key = KnownBrowsers { key: [8; 32] };
        assert_eq!(other_key.known(Some(&c), "u-alice", 3), None);
        let (n, mac) = c.split_once('.').unwrap();
        let mut flipped = n.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        for forged in [
            format!("{flipped}.{mac}"),
            format!("{n}.{}", &mac[1..]),
            n.to_owned(),
            format!("{n}x.{mac}"),
            format!("{n}.{mac}="),
            String::new(),
            "....".into(),
        ] {
            assert_eq!(known.known(Some(&forged), "u-alice", 3), None, "{forged}");
        }
        assert_ne!(known.issue("u-alice", 3), c, "a new nonce each time");
    }

    /// A client that hangs up while its password is verified drops its turn, but the run goes
    /// on: its job place is held until the run ends, so the next turn waits for it, and hanging
    /// up again and again never runs more hashes at once than the gate allows.
    #[tokio::test]
    async fn a_run_holds_its_place_after_the_request_that_started_it_is_gone() {
        let h = std::sync::Arc::new(Hasher::new(1, 4));
        // (Bounded waits: a failure ends the run, never hangs the test's runtime.)
        let (started, is_started) = std::sync::mpsc::channel::<()>();
        let (release, is_released) = std::sync::mpsc::channel::<()>();
        let gate = h.clone();
        let request = tokio::spawn(async move {
            let turn = gate.turn().await.unwrap();
            turn.run(move || {
                let _ = started.send(());
                let _ = is_released.recv_timeout(std::time::Duration::from_secs(5));
            })
            .await
        });
        tokio::task::spawn_blocking(move || {
            is_started
                .recv_timeout(std::time::Duration::from_secs(5))
                .unwrap()
        })
        .await
        .unwrap();
        request.abort(); // the client hung up: its turn is dropped, the run goes on
        let _ = request.await;
        assert_eq!(
            h.jobs.available_permits(),
            0,
            "the run still holds its place"
        );
        let turn = h.turn().await.unwrap();
        let next = turn.run(|| 7);
        tokio::pin!(next);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut next)
                .await
                .is_err(),
            "no second run while the first goes on"
        );
        release.send(()).unwrap();
        assert_eq!(next.await, Some(7));
    }

    #[tokio::test]
    async fn the_gate_admits_concurrency_plus_queue_and_refuses_the_rest() {
        let h = Hasher::new(1, 1);
        let first = h.turn().await.expect("running");
        let second = h.turn();
        tokio::pin!(second);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), &mut second)
                .await
                .is_err(),
            "the second caller waits for the permit"
        );
        // The queue (1) holds the second caller: a third is refused at once.
        assert_eq!(h.turn().await.err(), Some(Busy));
        drop(first);
        let second = second.await.expect("admitted after the first left");
        drop(second);
        assert_eq!(h.peak(), 1);
        assert!(h.turn().await.is_ok());
    }

    #[test]
    fn new_passwords_follow_nist() {
        let weak = |p: &str| {
            matches!(
                check_new(p, "ann@example.com"),
                Err(ApiError::WeakPassword(_))
            )
        };
        assert!(weak("short"), "under 8");
        assert!(
            weak("Password1".trim_end_matches('1')) && weak("PASSWORD"),
            "common, any case"
        );
        assert!(weak("football") && weak("iloveyou"));
        assert!(weak("ann@example.com"), "the address");
        assert!(weak(&"x".repeat(257)));
        // No composition rules: a long phrase of lower-case words is fine, and so are 64
        // characters of anything.
        assert!(check_new("correct horse battery staple", "ann@example.com").is_ok());
        assert!(check_new(&"é".repeat(64), "ann@example.com").is_ok());
        assert!(check_new("8charsok", "ann@example.com").is_ok());
    }
}
