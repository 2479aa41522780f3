//! Logout or a new login while a refresh is in flight: the late result never wins.
use super::*;

#[test]
fn a_logout_while_a_refresh_is_in_flight_is_not_undone_by_its_result() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    let out = s.call(Call::Logout);
    let logout = s.request(Endpoint::Logout);
    assert_eq!(s.emitted(), vec![Emit::Logout]);
    s.reply(req, ok("t2"));
    assert_eq!(s.m.session().token(), None, "the late token is discarded");
    assert_eq!(
        s.sent_with(a),
        Some(None),
        "the waiter goes out without a token"
    );
    s.reply(logout, status(204, None));
    assert_eq!(
        s.answer(out),
        Some(&Command::Resolve {
            caller: out,
            value: Value::Unit
        })
    );
}

#[test]
fn a_new_login_while_an_old_refresh_is_in_flight_wins() {
    let mut s = Scenario::new().logged_in("old");
    s.at(DUE_MS);
    let a = s.call(Call::Fetch);
    let req = s.request(Endpoint::Refresh);
    let l = s.call(Call::Login);
    let login = s.request(Endpoint::Login);
    s.reply(login, ok("new"));
    assert!(s.answer(l).is_some());
    s.reply(req, status(401, Some("invalid_grant")));
    assert_eq!(s.m.session().token(), Some("new"));
    assert_eq!(s.sent_with(a), Some(Some("new".into())));
    assert!(
        !s.emitted()
            .contains(&Emit::SessionExpired(EndReason::InvalidGrant)),
        "the old session's end is not announced"
    );
}

#[test]
fn a_logout_the_server_could_not_hear_still_logs_out_here() {
    let mut s = Scenario::new().logged_in("t1");
    let out = s.call(Call::Logout);
    let req = s.request(Endpoint::Logout);
    s.reply(req, Err(Transient::Network));
    assert_eq!(
        s.answer(out),
        Some(&Command::Reject {
            caller: out,
            failure: Failure::Network(Transient::Network)
        })
    );
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
}
