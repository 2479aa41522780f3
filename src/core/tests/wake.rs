//! A tab that slept through its token's expiry refreshes once when it wakes.
use super::*;

#[test]
fn waking_after_the_token_fell_due_refreshes_once_before_anyone_asks() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(30.0 * 60_000.0);
    s.wake();
    let req = s.request(Endpoint::Refresh);
    s.wake();
    s.wake();
    assert!(
        s.requests(Endpoint::Refresh).is_empty(),
        "one refresh for many wake events"
    );
    // A request made meanwhile joins it and fails nothing.
    let a = s.call(Call::Fetch);
    s.reply(req, ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
}

#[test]
fn waking_with_a_fresh_token_or_no_session_does_nothing() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(1_000.0);
    s.wake();
    assert!(s.take().is_empty());
    let mut s = Scenario::new();
    s.wake();
    assert!(s.take().is_empty());
}

#[test]
fn waking_in_banking_mode_after_expiry_ends_the_session() {
    let mut s = Scenario::builder().banking().build().logged_in("t1");
    s.at(LIFETIME * 1000.0 + 1.0);
    s.wake();
    assert_eq!(s.emitted(), vec![Emit::SessionExpired(EndReason::Expired)]);
}
