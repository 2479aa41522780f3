//! `autoRefresh: false`: the token is used to its end, then the session ends.
use super::*;

#[test]
fn banking_mode_uses_the_token_to_its_end_then_ends_the_session_here_and_on_the_server() {
    let mut s = Scenario::builder()
        .banking()
        .cross_tab()
        .build()
        .logged_in("t1");
    s.at(599_999.0);
    let a = s.call(Call::Fetch);
    assert_eq!(s.sent_with(a), Some(Some("t1".into())));
    s.take();
    s.at(600_000.0);
    let b = s.call(Call::Fetch);
    assert_eq!(
        s.answer(b),
        Some(&Command::Reject {
            caller: b,
            failure: Failure::SessionExpired("expired")
        })
    );
    assert_eq!(s.emitted(), vec![Emit::SessionExpired(EndReason::Expired)]);
    assert!(s.posted().contains(&Message::Ended {
        reason: EndReason::Expired,
        at_ms: 600_000.0
    }));
    let logout = s.out.iter().find_map(|c| match c {
        Command::Request {
            endpoint: Endpoint::Logout,
            bearer,
            ..
        } => Some(bearer.clone()),
        _ => None,
    });
    assert_eq!(logout, Some(Some("t1".into())), "the server is told");
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
}

#[test]
fn banking_mode_never_refreshes_on_a_401() {
    let mut s = Scenario::builder().banking().build().logged_in("t1");
    let a = s.call(Call::Fetch);
    s.take();
    s.fetch_status(a, 401);
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
}
