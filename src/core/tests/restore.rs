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
