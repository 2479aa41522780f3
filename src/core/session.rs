//! The session: the in-memory token, its generations and epochs, when to refresh it, what to
//! adopt from other tabs, and what to do after a 401. The refresh in flight is not here: the
//! machine (`super::machine`) owns it, so there is one owner of "a refresh is running".

pub use crate::proto::EndReason;

use super::reply::{RefreshOutcome, Transient};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Refresh when this little lifetime is left (capped at half the lifetime, so that a short
    /// token is still used before it is refreshed).
    pub leeway_secs: f64,
    /// `false`: "banking mode", the token is used until it expires and then the session ends.
    pub auto_refresh: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            leeway_secs: 30.0,
            auto_refresh: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No session: requests go out without a token.
    Anonymous,
    /// A session may exist (the hint cookie is there) but no token is known yet.
    Maybe,
    /// A token is held.
    Active,
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    generation: u64,
    /// When the token arrived from the server (in this tab or another: tabs share the clock).
    received_at_ms: f64,
    lifetime_secs: f64,
    refresh_at_ms: f64,
    expires_at_ms: f64,
}

/// A token to hand to another tab: its value, lifetime and arrival time.
#[derive(Debug, Clone, PartialEq)]
pub struct Handoff {
    pub token: String,
    pub lifetime_secs: f64,
    pub received_at_ms: f64,
}

/// What a request should do now. The token is copied out, so the caller's borrow of the
/// session ends before it awaits anything.
#[derive(Debug, PartialEq)]
pub enum Check {
    /// Send with this token, recording its generation.
    Fresh { token: String, generation: u64 },
    /// Refresh first (start or join), then check again.
    Refresh,
    /// No session: send without a token.
    Anonymous,
    /// `autoRefresh: false` and the token expired: end the session.
    Expired,
}

/// What a finished refresh did to the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// A new token is held.
    Refreshed,
    /// The session is over. `was_active`: a user was logged in (announce it); otherwise a
    /// page-load guess turned out wrong (stay quiet).
    Ended { reason: EndReason, was_active: bool },
    /// Transient failure; the session is kept.
    Failed(Transient),
    /// The server answered outside the protocol; the session is kept.
    Unexpected(u16),
    /// The session changed while the refresh was in flight (logout, or a new login): its
    /// result was discarded.
    Stale,
}

/// After a 401 on a request sent with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// A newer token already exists: replay with it.
    WithCurrent,
    /// Refresh (unless one made a newer token meanwhile), then replay.
    AfterRefresh,
    /// Return the 401 to the caller.
    No,
}

#[derive(Debug, Clone)]
pub struct Session {
    policy: Policy,
    phase: Phase,
    token: Option<Token>,
    /// Counts tokens received; a request records the generation it was sent with.
    generation: u64,
    /// Counts session changes (login, end); a refresh started in an older epoch is stale.
    epoch: u64,
    /// When the session last ended here (logout, expiry, or a peer's word): tokens that
    /// arrived before it belong to the old session and are never adopted.
    ended_at_ms: f64,
}

impl Session {
    /// `maybe`: the hint cookie says a session may exist.
    pub fn new(policy: Policy, maybe: bool) -> Self {
        Session {
            policy,
            phase: if maybe {
                Phase::Maybe
            } else {
                Phase::Anonymous
            },
            token: None,
            generation: 0,
            epoch: 0,
            ended_at_ms: f64::NEG_INFINITY,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counts session changes; a refresh started in an older epoch is stale when it ends.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The token held, fresh or not.
    pub fn token(&self) -> Option<&str> {
        self.token.as_ref().map(|t| t.value.as_str())
    }

    /// When the token held arrived (in this tab or another).
    pub fn received_at_ms(&self) -> Option<f64> {
        self.token.as_ref().map(|t| t.received_at_ms)
    }

    /// Milliseconds until the token expires (negative once it has), if one is held.
    pub fn expires_in_ms(&self, now_ms: f64) -> Option<f64> {
        self.token.as_ref().map(|t| t.expires_at_ms - now_ms)
    }

    pub fn check(&self, now_ms: f64) -> Check {
        self.check_within(now_ms, false)
    }

    /// As [`check`](Self::check); with `to_expiry`, a token that is due but not expired is still
    /// [`Check::Fresh`] (used while refreshes wait after a failure), as every token is until it
    /// expires in banking mode.
    pub fn check_within(&self, now_ms: f64, to_expiry: bool) -> Check {
        let until_expiry = to_expiry || !self.policy.auto_refresh;
        match (&self.phase, &self.token) {
            (Phase::Anonymous, _) => Check::Anonymous,
            (Phase::Active, Some(t))
                if now_ms < t.refresh_at_ms || until_expiry && now_ms < t.expires_at_ms =>
            {
                Check::Fresh {
                    token: t.value.clone(),
                    generation: t.generation,
                }
            }
            (Phase::Active, Some(_)) if !self.policy.auto_refresh => Check::Expired,
            _ => Check::Refresh,
        }
    }

    /// Records the outcome of the refresh started in `epoch`.
    pub fn finish_refresh(&mut self, epoch: u64, outcome: RefreshOutcome, now_ms: f64) -> Settled {
        if epoch != self.epoch {
            return Settled::Stale;
        }
        match outcome {
            RefreshOutcome::Token {
                access_token,
                lifetime_secs,
            } => {
                self.install(access_token, lifetime_secs, now_ms);
                Settled::Refreshed
            }
            RefreshOutcome::Ended(reason) => {
                let was_active = self.phase == Phase::Active;
                self.end(now_ms);
                Settled::Ended { reason, was_active }
            }
            RefreshOutcome::Transient(t) => Settled::Failed(t),
            // At page load the cookie's session is one this page cannot prove (its key is
            // gone): nobody is logged in here. A live session is kept.
            RefreshOutcome::ProofRefused(_) if self.phase == Phase::Maybe => {
                self.end(now_ms);
                Settled::Ended {
                    reason: EndReason::InvalidGrant,
                    was_active: false,
                }
            }
            RefreshOutcome::Unexpected(status) | RefreshOutcome::ProofRefused(status) => {
                Settled::Unexpected(status)
            }
        }
    }

    /// A token from a login: a new session, so any refresh in flight is stale.
    pub fn login(&mut self, access_token: String, lifetime_secs: f64, now_ms: f64) -> u64 {
        self.epoch += 1;
        self.install(access_token, lifetime_secs, now_ms)
    }

    fn install(&mut self, value: String, lifetime_secs: f64, received_at_ms: f64) -> u64 {
        let lifetime_ms = lifetime_secs * 1000.0;
        let leeway_ms = (self.policy.leeway_secs.max(0.0) * 1000.0).min(lifetime_ms / 2.0);
        self.generation += 1;
        self.phase = Phase::Active;
        self.token = Some(Token {
            value,
            generation: self.generation,
            received_at_ms,
            lifetime_secs,
            refresh_at_ms: received_at_ms + lifetime_ms - leeway_ms,
            expires_at_ms: received_at_ms + lifetime_ms,
        });
        self.generation
    }

    /// The token, if it is fresh enough to give to another tab.
    pub fn handoff(&self, now_ms: f64) -> Option<Handoff> {
        match (self.check(now_ms), &self.token) {
            (Check::Fresh { token, .. }, Some(t)) => Some(Handoff {
                token,
                lifetime_secs: t.lifetime_secs,
                received_at_ms: t.received_at_ms,
            }),
            _ => None,
        }
    }

    /// A token another tab received. Adopted only if it is newer than the one held and than
    /// the last end of the session here, so a slow message from an old session can never
    /// overwrite a newer one. Returns the new generation if adopted.
    pub fn adopt(&mut self, h: Handoff) -> Option<u64> {
        let newer = self
            .token
            .as_ref()
            .is_none_or(|t| h.received_at_ms > t.received_at_ms);
        if !newer || h.received_at_ms <= self.ended_at_ms || !h.lifetime_secs.is_finite() {
            return None;
        }
        Some(self.install(h.token, h.lifetime_secs.max(0.0), h.received_at_ms))
    }

    /// Another tab says the session ended at `at_ms` (logout, refresh refused). Ends it here
    /// unless this tab holds a token that arrived after that. Returns whether it ended.
    pub fn end_if_older(&mut self, at_ms: f64) -> bool {
        if self
            .token
            .as_ref()
            .is_some_and(|t| t.received_at_ms > at_ms)
        {
            return false;
        }
        let was = self.phase != Phase::Anonymous;
        self.end(at_ms);
        was
    }

    /// Whether a session may exist, as the hint cookie (and, with DPoP, the stored key) now
    /// say: it appeared (a login in another tab), or a page-load guess no longer holds (the hint
    /// went, or the key the session is bound to is gone). A token held is not touched.
    pub fn suspect(&mut self, maybe: bool) {
        match (self.phase, maybe) {
            (Phase::Anonymous, true) => self.phase = Phase::Maybe,
            (Phase::Maybe, false) => self.phase = Phase::Anonymous,
            _ => {}
        }
    }

    /// Logout, or the session ended: forget the token; a refresh in flight becomes stale.
    pub fn end(&mut self, now_ms: f64) {
        self.epoch += 1;
        self.token = None;
        self.phase = Phase::Anonymous;
        self.ended_at_ms = self.ended_at_ms.max(now_ms);
    }

    /// A request sent with the token of `sent_generation` got a 401.
    pub fn after_unauthorized(
        &self,
        sent_generation: u64,
        replayed: bool,
        replayable: bool,
    ) -> Replay {
        if replayed || !replayable || self.phase == Phase::Anonymous {
            return Replay::No;
        }
        match &self.token {
            Some(t) if t.generation > sent_generation => Replay::WithCurrent,
            _ if self.policy.auto_refresh => Replay::AfterRefresh,
            _ => Replay::No,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Scenarios, each the story of a page.
    use super::*;

    fn token(name: &str, lifetime_secs: f64) -> RefreshOutcome {
        RefreshOutcome::Token {
            access_token: name.into(),
            lifetime_secs,
        }
    }

    fn active(name: &str, lifetime_secs: f64, now_ms: f64) -> Session {
        let mut s = Session::new(Policy::default(), false);
        s.login(name.into(), lifetime_secs, now_ms);
        s
    }

    #[test]
    fn an_anonymous_visitor_sends_no_token_and_never_refreshes() {
        let s = Session::new(Policy::default(), false);
        assert_eq!(s.check(0.0), Check::Anonymous);
        assert_eq!(s.phase(), Phase::Anonymous);
    }

    #[test]
    fn a_page_load_with_the_hint_refreshes_before_the_first_request() {
        let mut s = Session::new(Policy::default(), true);
        assert_eq!(s.check(0.0), Check::Refresh);
        let epoch = s.epoch();
        assert_eq!(
            s.finish_refresh(epoch, token("t1", 600.0), 10.0),
            Settled::Refreshed
        );
        assert_eq!(
            s.check(20.0),
            Check::Fresh {
                token: "t1".into(),
                generation: 1
            }
        );
    }

    #[test]
    fn a_wrong_hint_ends_quietly() {
        let mut s = Session::new(Policy::default(), true);
        let epoch = s.epoch();
        let settled = s.finish_refresh(epoch, RefreshOutcome::Ended(EndReason::InvalidGrant), 0.0);
        assert_eq!(
            settled,
            Settled::Ended {
                reason: EndReason::InvalidGrant,
                was_active: false
            }
        );
        assert_eq!(s.check(0.0), Check::Anonymous);
    }

    #[test]
    fn the_token_is_used_until_the_leeway_then_refreshed() {
        let s = active("t1", 600.0, 0.0);
        assert_eq!(
            s.check(569_999.0),
            Check::Fresh {
                token: "t1".into(),
                generation: 1
            }
        );
        assert_eq!(s.check(570_000.0), Check::Refresh);
        assert_eq!(s.check(9e9), Check::Refresh);
    }

    #[test]
    fn a_short_token_is_used_for_half_its_life_even_with_a_large_leeway() {
        let s = active("t1", 10.0, 0.0);
        assert_eq!(
            s.check(4_999.0),
            Check::Fresh {
                token: "t1".into(),
                generation: 1
            }
        );
        assert_eq!(s.check(5_000.0), Check::Refresh);
    }

    #[test]
    fn a_network_error_keeps_the_session_and_the_next_caller_starts_afresh() {
        let mut s = active("t1", 600.0, 0.0);
        let epoch = s.epoch();
        let settled = s.finish_refresh(epoch, RefreshOutcome::Transient(Transient::Network), 1.0);
        assert_eq!(settled, Settled::Failed(Transient::Network));
        assert_eq!(s.phase(), Phase::Active, "not logged out");
        assert_eq!(s.token(), Some("t1"));
    }

    #[test]
    fn server_trouble_and_protocol_surprises_never_log_out() {
        for outcome in [
            RefreshOutcome::Transient(Transient::Status(503)),
            RefreshOutcome::Transient(Transient::Timeout),
            RefreshOutcome::Unexpected(200),
            RefreshOutcome::Unexpected(403),
        ] {
            let mut s = active("t1", 600.0, 0.0);
            let epoch = s.epoch();
            s.finish_refresh(epoch, outcome.clone(), 1.0);
            assert_eq!(s.phase(), Phase::Active, "{outcome:?}");
        }
    }

    #[test]
    fn a_reused_token_ends_the_session_loudly() {
        let mut s = active("t1", 600.0, 0.0);
        let epoch = s.epoch();
        let settled = s.finish_refresh(epoch, RefreshOutcome::Ended(EndReason::TokenReused), 1.0);
        assert_eq!(
            settled,
            Settled::Ended {
                reason: EndReason::TokenReused,
                was_active: true
            }
        );
        assert_eq!(s.token(), None);
        assert_eq!(s.check(2.0), Check::Anonymous);
    }

    #[test]
    fn a_logout_while_a_refresh_is_in_flight_is_not_undone_by_its_result() {
        let mut s = active("t1", 600.0, 0.0);
        let epoch = s.epoch();
        s.end(0.5);
        assert_eq!(
            s.finish_refresh(epoch, token("t2", 600.0), 1.0),
            Settled::Stale
        );
        assert_eq!(s.token(), None);
        assert_eq!(s.check(2.0), Check::Anonymous);
    }

    #[test]
    fn a_new_login_while_an_old_refresh_is_in_flight_wins() {
        let mut s = active("old", 600.0, 0.0);
        let epoch = s.epoch();
        s.login("new".into(), 600.0, 1.0);
        let late = RefreshOutcome::Ended(EndReason::InvalidGrant);
        assert_eq!(s.finish_refresh(epoch, late, 2.0), Settled::Stale);
        assert_eq!(s.token(), Some("new"));
    }

    #[test]
    fn a_401_replays_once_with_a_newer_token_if_there_is_one() {
        let mut s = active("t1", 600.0, 0.0);
        let sent = s.generation();
        assert_eq!(
            s.after_unauthorized(sent, false, true),
            Replay::AfterRefresh
        );
        let epoch = s.epoch();
        s.finish_refresh(epoch, token("t2", 600.0), 1.0);
        // Another request sent with t1 comes back 401 after t2 arrived: no second refresh.
        assert_eq!(s.after_unauthorized(sent, false, true), Replay::WithCurrent);
        // The replay itself gets a 401: it goes back to the caller. No loop.
        assert_eq!(s.after_unauthorized(s.generation(), true, true), Replay::No);
    }

    #[test]
    fn a_401_on_a_streamed_body_is_returned_as_is() {
        let s = active("t1", 600.0, 0.0);
        assert_eq!(s.after_unauthorized(1, false, false), Replay::No);
    }

    #[test]
    fn a_401_after_the_session_ended_is_returned_as_is() {
        let mut s = active("t1", 600.0, 0.0);
        s.end(1.0);
        assert_eq!(s.after_unauthorized(1, false, true), Replay::No);
    }

    #[test]
    fn banking_mode_uses_the_token_to_its_end_then_ends_the_session() {
        let policy = Policy {
            auto_refresh: false,
            ..Policy::default()
        };
        let mut s = Session::new(policy, false);
        s.login("t1".into(), 600.0, 0.0);
        assert_eq!(
            s.check(599_999.0),
            Check::Fresh {
                token: "t1".into(),
                generation: 1
            }
        );
        assert_eq!(s.check(600_000.0), Check::Expired);
        assert_eq!(
            s.after_unauthorized(1, false, true),
            Replay::No,
            "no refresh on 401 either"
        );
    }

    #[test]
    fn expiry_is_measured_from_receipt_on_the_local_clock() {
        // The page's clock is hours ahead of the server's: irrelevant, only `now` deltas count.
        let hours_ahead = 5.0 * 3600.0 * 1000.0;
        let s = active("t1", 600.0, hours_ahead);
        assert_eq!(
            s.check(hours_ahead + 60_000.0),
            Check::Fresh {
                token: "t1".into(),
                generation: 1
            }
        );
        assert_eq!(s.expires_in_ms(hours_ahead + 60_000.0), Some(540_000.0));
    }

    // ---- across tabs ----------------------------------------------------------------------

    fn handoff(token: &str, received_at_ms: f64) -> Handoff {
        Handoff {
            token: token.into(),
            lifetime_secs: 600.0,
            received_at_ms,
        }
    }

    #[test]
    fn a_new_tab_adopts_a_peers_token_with_the_peers_deadline() {
        let mut s = Session::new(Policy::default(), true);
        assert_eq!(s.adopt(handoff("peer", 1_000.0)), Some(1));
        assert_eq!(s.phase(), Phase::Active);
        // Same deadline as the peer: received at 1 s, 600 s life, 30 s leeway.
        assert_eq!(
            s.check(570_999.0),
            Check::Fresh {
                token: "peer".into(),
                generation: 1
            }
        );
        assert_eq!(s.check(571_000.0), Check::Refresh);
    }

    #[test]
    fn a_tab_gives_only_fresh_tokens_to_its_peers() {
        let s = active("t1", 600.0, 0.0);
        assert_eq!(s.handoff(1.0), Some(handoff("t1", 0.0)));
        assert_eq!(
            s.handoff(580_000.0),
            None,
            "within the leeway: the peer should refresh"
        );
        assert_eq!(Session::new(Policy::default(), true).handoff(0.0), None);
    }

    #[test]
    fn a_slow_message_from_an_old_session_never_overwrites_a_newer_token() {
        let mut s = active("new", 600.0, 5_000.0);
        assert_eq!(s.adopt(handoff("old", 4_000.0)), None);
        assert_eq!(s.token(), Some("new"));
        assert_eq!(s.adopt(handoff("newer", 6_000.0)), Some(2));
    }

    #[test]
    fn a_token_from_before_a_logout_is_never_adopted_but_a_later_login_is() {
        let mut s = active("t1", 600.0, 0.0);
        s.end(10_000.0);
        assert_eq!(s.adopt(handoff("stale", 9_000.0)), None);
        assert_eq!(s.phase(), Phase::Anonymous);
        assert_eq!(s.adopt(handoff("relogin", 11_000.0)), Some(2));
    }

    #[test]
    fn a_peers_logout_ends_the_session_unless_this_tab_logged_in_since() {
        let mut s = active("t1", 600.0, 0.0);
        assert!(s.end_if_older(5_000.0));
        assert_eq!(s.phase(), Phase::Anonymous);
        let mut s = active("fresh-login", 600.0, 7_000.0);
        assert!(
            !s.end_if_older(5_000.0),
            "the logout message is older than our login"
        );
        assert_eq!(s.token(), Some("fresh-login"));
    }
}
