//! Across tabs: ask, lock, check again, hand-off; and what a peer's message may change.
use super::*;

fn tab() -> Scenario {
    Scenario::builder().cross_tab().build()
}

fn peer_token(token: &str, at_ms: f64) -> Message {
    Message::Token {
        login: false,
        token: token.into(),
        lifetime_secs: LIFETIME,
        at_ms,
        nonce: None,
    }
}

#[test]
fn a_new_tab_asks_its_peers_and_a_peer_hands_the_token_over_with_no_request() {
    let mut s = Scenario::builder().cross_tab().hint(true).build();
    let a = s.call(Call::Restore { hint: true });
    assert_eq!(s.posted(), vec![Message::Ask]);
    let ask_timer = s.timer_of(ASK_WAIT_MS);
    s.take();
    s.at(20.0);
    s.peer(peer_token("peer", 10.0));
    assert!(s.has(&Command::CancelTimer { id: ask_timer }));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Bool(true)
        })
    );
    assert!(s.requests(Endpoint::Refresh).is_empty());
    assert!(!s.out.iter().any(|c| matches!(c, Command::Lock { .. })));
    // Adopted with the peer's deadline: due at 10 ms + 570 s.
    assert!(matches!(
        s.m.session().check(570_009.0),
        Check::Fresh { .. }
    ));
    assert_eq!(s.m.session().check(570_010.0), Check::Refresh);
}

#[test]
fn with_no_answer_to_ask_the_tab_takes_the_lock_and_refreshes() {
    let mut s = Scenario::builder().cross_tab().hint(true).build();
    let a = s.call(Call::Fetch);
    let ask_timer = s.timer_of(ASK_WAIT_MS);
    s.take();
    s.at(ASK_WAIT_MS);
    s.fire(ask_timer);
    assert!(s.has(&Command::Lock { wait: false }));
    s.lock(true);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t1"));
    assert_eq!(s.sent_with(a), Some(Some("t1".into())));
    let hold = s.timer_of(LOCK_HOLD_MS);
    s.fire(hold);
    assert!(s.has(&Command::Unlock));
}

#[test]
fn a_tab_that_waited_for_the_lock_checks_again_and_uses_the_holders_token() {
    let mut s = tab().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    s.take();
    s.lock(false); // another tab is refreshing
    assert!(s.has(&Command::Lock { wait: true }));
    s.take();
    s.peer(peer_token("from-holder", DUE_MS + 5.0));
    s.lock(true);
    assert!(s.has(&Command::Unlock), "released at once");
    assert!(
        s.requests(Endpoint::Refresh).is_empty(),
        "no second refresh"
    );
    assert_eq!(s.sent_with(a), Some(Some("from-holder".into())));
}

#[test]
fn when_the_lock_holder_vanishes_the_waiter_refreshes_itself_after_the_hand_off_wait() {
    let mut s = tab().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    s.lock(false);
    s.take();
    s.lock(true); // the browser released a closed tab's lock; no token came
    let wait = s.timer_of(HANDOFF_WAIT_MS);
    assert!(s.requests(Endpoint::Refresh).is_empty());
    s.fire(wait);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
}

/// The lock's timer `t` fires: the ask is given up, caller `a` gets a NetworkError `timeout`
/// and the session is kept.
fn lock_times_out(s: &mut Scenario, t: Id, a: Id) {
    s.at(DUE_MS + 10_000.0);
    s.fire(t);
    assert!(s.has(&Command::CancelLock));
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Network(Transient::Timeout)
        })
    );
    assert_eq!(s.m.session().phase(), Phase::Active);
}

#[test]
fn a_lock_held_forever_gives_a_network_error_after_the_timeout_and_keeps_the_session() {
    let mut s = tab().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    // One timer bounds the whole wait for the lock, from the first ask.
    let t = s.timer_of(10_000.0);
    s.take();
    s.lock(false);
    assert_eq!(s.take(), vec![Command::Lock { wait: true }]);
    lock_times_out(&mut s, t, a);
    // A lock granted after we gave up is released at once.
    s.take();
    s.lock(true);
    assert_eq!(s.take(), vec![Command::Unlock]);
}

/// A script that patched the lock manager so that it never answers, not even "held": the
/// first ask is bounded too (the same NetworkError after refreshTimeoutMs; the session kept).
#[test]
fn a_lock_manager_that_never_answers_gives_a_network_error_after_the_timeout() {
    let mut s = tab().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    assert!(s.has(&Command::Lock { wait: false }));
    let t = s.timer_of(10_000.0);
    lock_times_out(&mut s, t, a);
    // The next call asks again.
    s.take();
    s.call(Call::Fetch);
    assert!(s.has(&Command::Lock { wait: false }));
}

#[test]
fn a_tab_answers_ask_with_a_fresh_token_only() {
    let mut s = tab().logged_in("t1");
    s.at(1_000.0);
    s.peer(Message::Ask);
    assert_eq!(s.posted(), vec![peer_token("t1", 0.0)]);
    s.take();
    s.at(DUE_MS);
    s.peer(Message::Ask);
    assert!(
        s.posted().is_empty(),
        "within the leeway: the asker should refresh"
    );
}

#[test]
fn a_peers_logout_ends_the_session_unless_this_tab_logged_in_since() {
    let mut s = tab().logged_in("t1");
    s.at(5_000.0);
    s.peer(Message::Logout { at_ms: 4_000.0 });
    assert_eq!(s.emitted(), vec![Emit::Logout]);
    assert_eq!(s.m.session().phase(), Phase::Anonymous);

    let mut s = tab();
    s.at(7_000.0);
    let s2 = &mut s;
    s2.call(Call::Login);
    let req = s2.request(Endpoint::Login);
    s2.reply(req, ok("fresh"));
    s2.take();
    s2.peer(Message::Logout { at_ms: 5_000.0 });
    assert_eq!(s2.m.session().token(), Some("fresh"));
}

#[test]
fn a_peers_refused_refresh_is_announced_here_too() {
    let mut s = tab().logged_in("t1");
    s.at(10.0);
    s.peer(Message::Ended {
        reason: EndReason::TokenReused,
        at_ms: 5.0,
    });
    assert_eq!(
        s.emitted(),
        vec![
            Emit::TokenReused,
            Emit::SessionExpired(EndReason::TokenReused)
        ]
    );
}

#[test]
fn injected_messages_that_are_malformed_eternal_or_from_the_future_are_dropped() {
    let mut s = tab().logged_in("t1");
    s.at(1_000.0);
    let bad = [
        // from the future (pinned across any later logout)
        peer_token("evil", 1_000.0 + 1e12),
        // a token that would make every fetch throw
        peer_token("a\nb", 999.0),
        peer_token("", 999.0),
        Message::Token {
            login: true,
            token: "evil".into(),
            lifetime_secs: f64::NAN,
            at_ms: 999.0,
            nonce: None,
        },
        Message::Token {
            login: true,
            token: "evil".into(),
            lifetime_secs: -1.0,
            at_ms: 999.0,
            nonce: None,
        },
        Message::Logout {
            at_ms: f64::INFINITY,
        },
        Message::Logout { at_ms: 1e15 },
    ];
    for m in bad {
        s.peer(m);
    }
    assert!(s.take().is_empty());
    assert_eq!(s.m.session().token(), Some("t1"));
    // An eternal lifetime is capped at a year.
    s.peer(Message::Token {
        login: false,
        token: "capped".into(),
        lifetime_secs: 1e12,
        at_ms: 999.0,
        nonce: None,
    });
    let left = s.m.session().expires_in_ms(1_000.0).unwrap_or(0.0);
    assert!(left <= 365.0 * 86_400_000.0);
}

#[test]
fn without_cross_tab_peer_messages_are_ignored_and_nothing_is_posted() {
    let mut s = Scenario::new().logged_in("t1");
    s.peer(Message::Logout { at_ms: 0.0 });
    assert_eq!(s.m.session().token(), Some("t1"));
    s.call(Call::Logout);
    assert!(s.posted().is_empty());
}
