//! Lost responses, server trouble and odd answers: never a logout.
use super::*;

#[test]
fn a_lost_response_times_out_is_retried_and_nobody_is_logged_out() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let timeout = s.timer_of(10_000.0);
    let req = s.request(Endpoint::Refresh);
    s.at(DUE_MS + 10_000.0);
    s.fire(timeout);
    assert!(s.has(&Command::Abort { req }));
    assert!(s.answer(a).is_none(), "still waiting: a retry follows");
    let backoff = s.timers()[0];
    assert!((250.0..=375.0).contains(&backoff.1), "{backoff:?}");
    s.fire(backoff.0);
    let retry = s.request(Endpoint::Refresh);
    // The lost response arrives after all: ignored.
    s.reply(req, ok("late"));
    s.reply(retry, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
    assert_eq!(s.m.session().token(), Some("t2"));
}

#[test]
fn a_503_then_backoff_then_success() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    s.timers();
    s.reply(req, status(503, None));
    let (t, ms) = s.timers()[0];
    assert!((250.0..=375.0).contains(&ms));
    s.fire(t);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
    assert!(
        s.emitted()
            .iter()
            .all(|e| !matches!(e, Emit::SessionExpired(_)))
    );
}

#[test]
fn three_failures_give_callers_a_network_error_and_keep_the_session() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    for expected in [Some((250.0, 375.0)), Some((1000.0, 1500.0)), None] {
        let req = s.request(Endpoint::Refresh);
        s.timers();
        s.reply(req, Err(Transient::Network));
        match expected {
            Some((lo, hi)) => {
                let (t, ms) = s.timers()[0];
                assert!((lo..=hi).contains(&ms), "{ms}");
                s.fire(t);
            }
            None => assert!(s.timers().is_empty()),
        }
    }
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Network(Transient::Network)
        })
    );
    assert_eq!(s.m.session().phase(), Phase::Active, "not logged out");
    assert!(!s.m.is_refreshing());
    // No answer at all is no reason to wait (src/core/tests/backoff.rs): the next caller
    // starts a new flight.
    s.take();
    s.call(Call::Fetch);
    assert_eq!(s.requests(Endpoint::Refresh).len(), 1);
}

#[test]
fn an_answer_outside_the_protocol_is_a_refresh_error_not_a_logout() {
    for (code, err) in [(403, Some("csrf_header_missing")), (404, None), (400, None)] {
        let mut s = Scenario::new().logged_in("t1");
        s.at(DUE_MS);
        let a = s.call(Call::Fetch);
        let req = s.request(Endpoint::Refresh);
        s.reply(req, status(code, err));
        assert_eq!(
            s.answer(a),
            Some(&Command::Reject {
                caller: a,
                failure: Failure::Refresh(code)
            })
        );
        assert_eq!(s.m.session().phase(), Phase::Active);
    }
}

#[test]
fn a_refused_refresh_ends_the_session_loudly_once() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let b = s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(401, Some("token_reused")));
    assert_eq!(
        s.emitted(),
        vec![
            Emit::TokenReused,
            Emit::SessionExpired(EndReason::TokenReused)
        ]
    );
    for c in [a, b] {
        assert_eq!(
            s.answer(c),
            Some(&Command::Reject {
                caller: c,
                failure: Failure::SessionExpired("token_reused")
            })
        );
    }
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
}

#[test]
fn a_login_refused_or_throttled_is_a_typed_error() {
    let mut s = Scenario::new();
    let a = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, status(401, Some("invalid_credentials")));
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Login {
                code: "invalid_credentials".into(),
                status: 401,
                retry_after: None
            }
        })
    );
    s.take();
    let b = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.m.reply(req, status(429, Some("too_many_attempts")), Some(42.0), 0.0);
    s.out
        .extend(std::iter::from_fn(|| s.m.poll()).collect::<Vec<_>>());
    assert_eq!(
        s.answer(b),
        Some(&Command::Reject {
            caller: b,
            failure: Failure::Login {
                code: "too_many_attempts".into(),
                status: 429,
                retry_after: Some(42.0)
            }
        })
    );
    s.take();
    // Arbitrary text from the server is never passed on as a code.
    let c = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, status(400, Some("<script>")));
    assert!(matches!(
        s.answer(c),
        Some(Command::Reject { failure: Failure::Login { code, .. }, .. }) if code == "invalid_credentials"
    ));
}
