//! A 401 from the API: one refresh, one replay, never a loop.
use super::*;

#[test]
fn a_401_the_token_cannot_fix_is_replayed_exactly_once_then_returned() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    let a = s.call(Call::Fetch);
    s.take();
    s.fetch_status(a, 401);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
    s.take();
    s.fetch_status(a, 401);
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
}

#[test]
fn concurrent_401s_share_one_refresh_and_a_late_401_uses_the_newer_token() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    let callers: Vec<Id> = (0..5).map(|_| s.call(Call::Fetch)).collect();
    s.take();
    for c in &callers[..4] {
        s.fetch_status(*c, 401);
    }
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    for c in &callers[..4] {
        assert_eq!(s.sent_with(*c), Some(Some("t2".into())));
    }
    s.take();
    // The 5th was sent with t1 and comes back after t2 arrived: no second refresh.
    s.fetch_status(callers[4], 401);
    assert!(s.requests(Endpoint::Refresh).is_empty());
    assert_eq!(s.sent_with(callers[4]), Some(Some("t2".into())));
}

#[test]
fn a_streamed_body_is_never_replayed() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    let a = s.call(Call::Fetch);
    s.take();
    s.m.fetch_status(a, 401, false, None, s.now);
    assert_eq!(s.m.poll(), Some(Command::Return { caller: a }));
}

#[test]
fn other_statuses_are_returned_as_they_are() {
    let mut s = Scenario::new().logged_in("t1");
    for code in [200, 204, 403, 404, 500] {
        let a = s.call(Call::Fetch);
        s.take();
        s.fetch_status(a, code);
        assert_eq!(s.take(), vec![Command::Return { caller: a }]);
    }
}

#[test]
fn a_401_after_the_session_ended_is_returned_as_is() {
    let mut s = Scenario::new().logged_in("t1");
    let a = s.call(Call::Fetch);
    let out = s.call(Call::Logout);
    s.take();
    s.fetch_status(a, 401);
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
    let _ = out;
}

#[test]
fn a_caller_that_went_away_is_forgotten() {
    let mut s = Scenario::new().logged_in("t1");
    let a = s.call(Call::Fetch);
    s.m.forget(a);
    s.take();
    s.fetch_status(a, 401);
    assert!(s.take().is_empty());
}
