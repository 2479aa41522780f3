//! Many callers at once: one refresh for all of them.
use super::*;

#[test]
fn a_thousand_callers_at_expiry_share_one_refresh_and_all_get_the_new_token() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let callers: Vec<Id> = (0..1000).map(|_| s.call(Call::Fetch)).collect();
    let req = s.request(Endpoint::Refresh);
    assert!(s.requests(Endpoint::Refresh).is_empty());
    assert!(callers.iter().all(|c| s.answer(*c).is_none()), "all wait");
    s.reply(req, ok("t2"));
    for c in &callers {
        assert_eq!(s.sent_with(*c), Some(Some("t2".into())));
    }
    assert_eq!(
        s.emitted(),
        vec![Emit::Refresh {
            expires_in_secs: LIFETIME
        }]
    );
}

#[test]
fn a_thousand_callers_across_tabs_take_the_lock_once() {
    let mut s = Scenario::builder().cross_tab().build().logged_in("t1");
    s.at(DUE_MS);
    let callers: Vec<Id> = (0..1000).map(|_| s.call(Call::Fetch)).collect();
    let locks = s
        .take()
        .into_iter()
        .filter(|c| matches!(c, Command::Lock { .. }))
        .count();
    assert_eq!(locks, 1, "one lock request for all callers");
    s.lock(true);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    // The token is posted before the lock is released, so waiting tabs find it at once; the
    // lock is kept a moment longer, so a tab that needs a refresh before the message reaches
    // it finds the lock taken and waits for the token instead of refreshing again.
    assert!(
        s.posted()
            .iter()
            .any(|m| matches!(m, Message::Token { .. }))
    );
    assert!(!s.has(&Command::Unlock));
    assert!(
        callers
            .iter()
            .all(|c| s.sent_with(*c) == Some(Some("t2".into())))
    );
    let hold = s.timer_of(LOCK_HOLD_MS);
    s.take();
    s.fire(hold);
    assert_eq!(s.take(), vec![Command::Unlock]);
}

#[test]
fn callers_who_arrive_while_in_flight_join_it() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    s.at(DUE_MS + 50.0);
    let b = s.call(Call::Token);
    let c = s.call(Call::Refresh { force: false });
    assert!(s.requests(Endpoint::Refresh).is_empty());
    s.reply(req, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
    assert_eq!(
        s.answer(b),
        Some(&Command::Resolve {
            caller: b,
            value: Value::Token("t2".into())
        })
    );
    assert_eq!(
        s.answer(c),
        Some(&Command::Resolve {
            caller: c,
            value: Value::Unit
        })
    );
}

#[test]
fn a_fresh_token_is_sent_at_once_without_any_refresh() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    let a = s.call(Call::Fetch);
    assert_eq!(
        s.take(),
        vec![Command::Send {
            caller: a,
            token: Some("t1".into()),
            key: None
        }]
    );
    s.fetch_status(a, 200);
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
}

#[test]
fn an_anonymous_visitor_sends_untouched_and_never_refreshes() {
    let mut s = Scenario::new();
    let a = s.call(Call::Fetch);
    assert_eq!(
        s.take(),
        vec![Command::Send {
            caller: a,
            token: None,
            key: None
        }]
    );
}

#[test]
fn a_forced_refresh_refreshes_even_a_fresh_token() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    let a = s.call(Call::Refresh { force: true });
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Unit
        })
    );
    assert_eq!(s.m.session().token(), Some("t2"));
}
