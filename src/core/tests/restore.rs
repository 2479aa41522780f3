//! Page load: `restore()` with and without the hint cookie.
use super::*;

#[test]
fn without_the_hint_restore_is_false_with_no_request() {
    let mut s = Scenario::new();
    let a = s.call(Call::Restore { hint: false });
    assert_eq!(
        s.take(),
        vec![Command::Resolve {
            caller: a,
            value: Value::Bool(false)
        }]
    );
}

#[test]
fn with_the_hint_one_silent_refresh_restores_the_session() {
    let mut s = Scenario::builder().hint(true).build();
    let a = s.call(Call::Restore { hint: true });
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t1"));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Bool(true)
        })
    );
    assert_eq!(s.m.session().phase(), Phase::Active);
}

#[test]
fn a_wrong_hint_ends_quietly_as_not_logged_in() {
    let mut s = Scenario::builder().hint(true).build();
    let a = s.call(Call::Restore { hint: true });
    let b = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(401, Some("invalid_grant")));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Bool(false)
        })
    );
    assert_eq!(s.sent_with(b), Some(None), "sent without a token");
    assert!(s.emitted().is_empty(), "nobody was logged in: no event");
}

#[test]
fn restore_rejects_only_with_a_network_error() {
    let mut s = Scenario::builder().hint(true).build();
    let a = s.call(Call::Restore { hint: true });
    for _ in 0..3 {
        let req = s.request(Endpoint::Refresh);
        s.timers(); // the request's timeout
        s.reply(req, status(503, None));
        if let Some((t, _)) = s.timers().first().copied() {
            s.fire(t);
        }
    }
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Network(Transient::Status(503))
        })
    );
}

#[test]
fn a_hint_that_appeared_later_makes_restore_try() {
    let mut s = Scenario::new();
    s.call(Call::Restore { hint: true });
    assert_eq!(s.requests(Endpoint::Refresh).len(), 1);
}

/// Safari's eviction, "clear site data", a key store replaced: the refresh cookie lives on, but
/// the session it holds is bound to a DPoP key this page does not have.
#[test]
fn a_page_load_whose_cookie_needs_a_key_it_does_not_have_is_not_logged_in_quietly() {
    let mut s = Scenario::builder().dpop().hint(true).build();
    let a = s.call(Call::Restore { hint: true });
    let b = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    // Refused as signed by another key; once more with a new proof (its time may have been the
    // page's clock): refused again.
    s.reply(req, status(401, Some("invalid_dpop_proof")));
    let again = s.request(Endpoint::Refresh);
    s.reply(again, status(401, Some("invalid_dpop_proof")));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Bool(false)
        }),
        "restore() resolves false, never rejects with RefreshError"
    );
    assert_eq!(
        s.answer(b),
        Some(&Command::Send {
            caller: b,
            token: None,
            key: None
        })
    );
    assert!(
        s.emitted().is_empty(),
        "nobody was logged in here: no event"
    );
    assert!(s.requests(Endpoint::Refresh).is_empty(), "one attempt");
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
    // Nothing more is tried; a new sign-in works at once.
    s.take();
    let c = s.call(Call::Token);
    assert!(matches!(s.answer(c), Some(Command::Reject { .. })));
    assert!(s.requests(Endpoint::Refresh).is_empty());
    let login = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, super::dpop::dpop_ok("t1"));
    assert_eq!(
        s.answer(login),
        Some(&Command::Resolve {
            caller: login,
            value: Value::Unit
        })
    );
}

/// The same refusal for a live session is not a logout (an injected script's proof could cause
/// it): the refresh fails with `RefreshError` and the session goes on.
#[test]
fn a_refused_proof_for_a_live_session_keeps_it() {
    let mut s = Scenario::builder().dpop().build();
    let login = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, super::dpop::dpop_ok("t1"));
    assert!(matches!(s.answer(login), Some(Command::Resolve { .. })));
    s.take();
    s.at(DUE_MS);
    let a = s.call(Call::Token);
    for _ in 0..2 {
        let req = s.request(Endpoint::Refresh);
        s.reply(req, status(401, Some("invalid_dpop_proof")));
    }
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Refresh(401)
        })
    );
    assert_eq!(s.m.session().phase(), Phase::Active);
}

/// The hint seen at construction no longer holds when `restore()` is called: the cookie went,
/// or (DPoP) the key its session is bound to is gone. No request.
#[test]
fn a_guess_that_no_longer_holds_at_restore_is_false_with_no_request() {
    let mut s = Scenario::builder().dpop().hint(true).build();
    let a = s.call(Call::Restore { hint: false });
    assert_eq!(
        s.take(),
        vec![Command::Resolve {
            caller: a,
            value: Value::Bool(false)
        }]
    );
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
    // Nothing later tries either, until a sign-in.
    let b = s.call(Call::Fetch);
    assert_eq!(
        s.take(),
        vec![Command::Send {
            caller: b,
            token: None,
            key: None
        }]
    );
}
