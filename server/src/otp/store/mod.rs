//! Storage of emailed sign-in codes: one interface, the SQLite and PostgreSQL statements in
//! their own modules (tables of `migrations/0004_otp.sql` and `migrations-postgres/0004_otp.sql`).
//!
//! The rules (how many attempts, which answer) are `super`'s; here only loads and saves, each
//! counting step one statement so that concurrent requests, on one instance or several sharing
//! PostgreSQL, cannot read the same count.

mod postgres;
mod sqlite;

use crate::store::{Store, StoreResult};
use postgres::PgOtp;
use sqlite::SqliteOtp;

/// A live code as the verification counted it: its id, its stored hash and the attempts made
/// against it, this one included.
#[derive(Debug, Clone)]
pub struct Counted {
    pub id: String,
    pub code_hash: String,
    pub attempts: i64,
}

/// What the counters of `otp_counters` count.
#[derive(Debug, Clone, Copy)]
pub enum Counter {
    /// Codes created for an email (asked for, or sent after a third wrong try).
    Sends,
    /// Verification attempts for an email.
    Verifies,
}

impl Counter {
    fn as_str(self) -> &'static str {
        match self {
            Counter::Sends => "send",
            Counter::Verifies => "verify",
        }
    }
}

/// The OTP queries over the server's store.
#[derive(Clone)]
pub enum OtpStore {
    Sqlite(SqliteOtp),
    Postgres(PgOtp),
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            OtpStore::Sqlite($s) => $e,
            OtpStore::Postgres($s) => $e,
        }
    };
}

impl OtpStore {
    pub fn new(store: &Store) -> Self {
        match store {
            Store::Sqlite(s) => {
                let (read, write) = s.pools();
                OtpStore::Sqlite(SqliteOtp::new(read, write))
            }
            Store::Postgres(s) => OtpStore::Postgres(PgOtp::new(s.pool())),
        }
    }

    /// Counts one event of `counter` for `email` in one statement; a window older than
    /// `window_secs` starts over. Returns the count (this one included) and the window start.
    pub async fn count(
        &self,
        counter: Counter,
        email: &str,
        now: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        each!(self, s => s.count(counter, email, now, window_secs).await)
    }

    /// Forgets a counter (a successful sign-in clears the email's verification count).
    pub async fn clear(&self, counter: Counter, email: &str) -> StoreResult<()> {
        each!(self, s => s.clear(counter, email).await)
    }

    /// Stores a new code and revokes the oldest live codes of the email beyond `max_live`
    /// (the new one always stays).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        id: &str,
        email: &str,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        max_attempts: i64,
        max_live: i64,
    ) -> StoreResult<()> {
        each!(self, s => s.insert(id, email, code_hash, now, expires_at, max_attempts, max_live).await)
    }

    /// Counts one attempt against every live code of the email, *before* any comparison and in
    /// one statement: concurrent guesses each take their own attempt, and a code that has had
    /// `max_attempts` is no longer live, so it is never compared again.
    pub async fn count_attempt(
        &self,
        email: &str,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<Counted>> {
        each!(self, s => s.count_attempt(email, now, max_attempts).await)
    }

    /// Uses the code `id` (false if another request used or revoked it first) and revokes every
    /// other outstanding code of the email.
    pub async fn consume(&self, id: &str, email: &str, now: i64) -> StoreResult<bool> {
        each!(self, s => s.consume(id, email, now).await)
    }

    /// Whether the email has a code that ran out of time (since `since`) without being used,
    /// revoked or guessed out, and no live one.
    pub async fn expired_since(
        &self,
        email: &str,
        now: i64,
        since: i64,
        max_attempts: i64,
    ) -> StoreResult<bool> {
        each!(self, s => s.expired_since(email, now, since, max_attempts).await)
    }

    /// Live codes of an email (operators and tests).
    pub async fn live_codes(&self, email: &str, now: i64, max_attempts: i64) -> StoreResult<i64> {
        each!(self, s => s.live_codes(email, now, max_attempts).await)
    }

    /// Deletes codes that expired and counters whose window started before `before`.
    pub async fn purge(&self, before: i64) -> StoreResult<()> {
        each!(self, s => s.purge(before).await)
    }
}
