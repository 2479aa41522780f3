//! Counters of events per key in a window: password attempts per account and client, codes
//! sent and tried per email, and (on a shared store) the per-minute throttles of the fleet.
//! One table, one counting statement: concurrent requests, on one instance or several, never
//! read the same count.

use super::{CodePurpose, Store, StoreResult};

/// What a counter counts. Its key in `counters` is the scope's prefix and the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterScope {
    /// Password attempts per (account, client address bucket), counted before the password is
    /// checked.
    LoginAttempts,
    /// Password attempts per account from every client that is not a browser known to it
    /// (crate::password, "known browsers"), counted before the password is checked.
    LoginAccountAttempts,
    /// Password attempts per (account, known browser), counted before the password is checked.
    LoginDeviceAttempts,
    /// Sign-in codes made for an email (asked for, or sent after a third wrong try).
    CodeSends,
    /// Verifications of codes of one purpose for an email.
    CodeVerifies(CodePurpose),
    /// Notices of changes to how an account signs in, mailed to it (crate::otp::mail::Notice),
    /// per account.
    Notices,
    /// A per-minute throttle shared by the fleet (crate::throttle), by name.
    Throttle(&'static str),
}

impl CounterScope {
    fn prefix(self) -> &'static str {
        match self {
            CounterScope::LoginAttempts => "login",
            CounterScope::LoginAccountAttempts => "login-account",
            CounterScope::LoginDeviceAttempts => "login-device",
            CounterScope::CodeSends => "otp-send",
            CounterScope::Notices => "notice",
            // Sign-in, reset and sign-up codes share one count: each opens the account (a
            // sign-up's, before its owner: with both sign-ups on), so counts of their own would
            // multiply a guesser's odds.
            CounterScope::CodeVerifies(
                CodePurpose::SignIn | CodePurpose::ResetPassword | CodePurpose::SignUp,
            ) => "otp-verify",
            // A count of their own: shared, anyone who knows the address could spend it with
            // wrong sign-in codes and stop the owner's password-and-code sign-ins for a day.
            // The price: one who has the password guesses twice as many codes a day.
            CounterScope::CodeVerifies(CodePurpose::SecondFactor) => "2fa-verify",
            CounterScope::CodeVerifies(CodePurpose::VerifyEmail) => "email-verify",
            CounterScope::Throttle(name) => name,
        }
    }

    /// The keys of the scope's rows start with this (and its length, for `substr`).
    fn prefix_len(self) -> (String, i64) {
        let prefix = self.key("");
        let len = prefix.len() as i64;
        (prefix, len)
    }

    /// The row's key. Subjects that combine parts put the client bucket (which never holds a
    /// `|`) first, so no two (prefix, subject) pairs share a key.
    pub fn key(self, subject: &str) -> String {
        format!("{}|{subject}", self.prefix())
    }
}

impl Store {
    /// Counts one event for `subject` at `start` in one statement. The stored window, if it is
    /// still open at `start` (it began less than `window_secs` before), counts one more;
    /// otherwise the count starts over at 1 with a window beginning at `start`. Returns the
    /// count (this event included) and when its window began.
    ///
    /// Password attempts pass `start = now`: a window opens with the first attempt. Per-minute
    /// throttles pass the minute's start and 60: a hit stamped with an older minute (an
    /// instance whose clock lags) counts into the newer window rather than resetting it.
    pub async fn count(
        &self,
        scope: CounterScope,
        subject: &str,
        start: i64,
        window_secs: i64,
    ) -> StoreResult<(i64, i64)> {
        let sql = "INSERT INTO counters (key, n, window_start, expires_at)
                   VALUES ($1, 1, $2, $2 + $3)
                   ON CONFLICT (key) DO UPDATE SET
                     n = CASE WHEN counters.window_start + $3 > $2
                              THEN counters.n + 1 ELSE 1 END,
                     window_start = CASE WHEN counters.window_start + $3 > $2
                                         THEN counters.window_start ELSE $2 END,
                     expires_at = CASE WHEN counters.window_start + $3 > $2
                                       THEN counters.expires_at ELSE $2 + $3 END
                   RETURNING n, window_start";
        Ok(q_as!(sql, scope.key(subject), start, window_secs)
            .fetch_one(&self.write)
            .await?)
    }

    /// Forgets one counter (a successful sign-in clears its attempts).
    pub async fn clear_count(&self, scope: CounterScope, subject: &str) -> StoreResult<()> {
        let sql = "DELETE FROM counters WHERE key = $1";
        q!(sql, scope.key(subject)).execute(&self.write).await?;
        Ok(())
    }

    /// Takes back one event of `subject` (a success that was counted as an attempt).
    pub async fn uncount(&self, scope: CounterScope, subject: &str) -> StoreResult<()> {
        let sql = "UPDATE counters SET n = n - 1 WHERE key = $1 AND n > 0";
        q!(sql, scope.key(subject)).execute(&self.write).await?;
        Ok(())
    }

    /// How many counters of `scope` are stored (operators and tests).
    pub async fn counter_rows(&self, scope: CounterScope) -> StoreResult<i64> {
        let (prefix, len) = scope.prefix_len();
        let sql = "SELECT COUNT(*) FROM counters WHERE substr(key, 1, CAST($2 AS INTEGER)) = $1";
        Ok(q_scalar!(sql, prefix, len).fetch_one(&self.read).await?)
    }

    /// Forgets every counter of `scope` (the test hooks' reset).
    pub async fn reset_counters(&self, scope: CounterScope) -> StoreResult<()> {
        let (prefix, len) = scope.prefix_len();
        let sql = "DELETE FROM counters WHERE substr(key, 1, CAST($2 AS INTEGER)) = $1";
        q!(sql, prefix, len).execute(&self.write).await?;
        Ok(())
    }

    /// Deletes the counters whose window has closed.
    pub(super) async fn purge_counters(&self, now: i64) -> StoreResult<u64> {
        let sql = "DELETE FROM counters WHERE expires_at < $1";
        Ok(q!(sql, now).execute(&self.write).await?.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::memory;

    #[tokio::test]
    async fn a_window_counts_until_it_closes_then_starts_over() {
        let s = memory().await;
        let a = CounterScope::LoginAttempts;
        assert_eq!(s.count(a, "1.2.3.4|x@y", 100, 60).await.unwrap(), (1, 100));
        assert_eq!(s.count(a, "1.2.3.4|x@y", 159, 60).await.unwrap(), (2, 100));
        assert_eq!(s.count(a, "1.2.3.4|x@y", 160, 60).await.unwrap(), (1, 160));
        // Another subject, another scope: other counters.
        assert_eq!(s.count(a, "1.2.3.5|x@y", 160, 60).await.unwrap(), (1, 160));
        let t = CounterScope::Throttle("refresh-ip");
        assert_eq!(s.count(t, "1.2.3.4|x@y", 160, 60).await.unwrap(), (1, 160));
        assert_eq!(s.counter_rows(a).await.unwrap(), 2);
        // A lagging instance's older minute counts into the newer window.
        assert_eq!(s.count(t, "1.2.3.4|x@y", 100, 60).await.unwrap(), (2, 160));
        s.clear_count(a, "1.2.3.4|x@y").await.unwrap();
        assert_eq!(s.counter_rows(a).await.unwrap(), 1);
        s.reset_counters(a).await.unwrap();
        assert_eq!(s.counter_rows(a).await.unwrap(), 0);
        assert_eq!(s.counter_rows(t).await.unwrap(), 1);
        assert_eq!(s.purge_counters(221).await.unwrap(), 1);
    }
}
