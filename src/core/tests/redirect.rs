//! The page a redirect sign-in (`loginWithRedirect`) came back to. The server opened the
//! session before the page loaded; `restore()` takes it up with a login sent to the refresh
//! path (the driver's choice of path, as for a code sign-in), signed with the sign-in's key.
//! What that relies on, told as the stories it serves.
use super::dpop::dpop_ok;
use super::*;

/// A tab of a browser whose other tabs may hold the session the sign-in replaces.
fn back_from_the_provider() -> Scenario {
    Scenario::builder().cross_tab().dpop().hint(true).build()
}

#[test]
fn the_new_session_is_taken_up_as_a_login_and_the_other_tabs_are_told() {
    let mut s = back_from_the_provider();
    s.at(1_000.0);
    let a = s.call(Call::Login);
    // Straight to the server: asking the peers would bring back the session it replaces.
    assert!(s.posted().is_empty(), "no ask");
    assert!(!s.out.iter().any(|c| matches!(c, Command::Lock { .. })));
    let req = s.request(Endpoint::Login);
    s.take();
    s.reply(req, dpop_ok("new"));
    assert_eq!(
        s.posted(),
        vec![Message::Token {
            login: true,
            token: "new".into(),
            lifetime_secs: LIFETIME,
            at_ms: 1_000.0,
            nonce: None,
        }]
    );
    assert_eq!(s.emitted(), vec![Emit::Login]);
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Unit
        })
    );
    assert_eq!(s.m.session().token(), Some("new"));
}

#[test]
fn a_token_of_the_old_session_from_another_tab_is_replaced_by_the_new_one() {
    let mut s = back_from_the_provider();
    s.at(1_000.0);
    s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.at(1_010.0);
    s.peer(Message::Token {
        login: false,
        token: "old".into(),
        lifetime_secs: LIFETIME,
        at_ms: 1_005.0,
        nonce: None,
    });
    assert_eq!(s.m.session().token(), Some("old"));
    s.at(1_020.0);
    s.reply(req, dpop_ok("new"));
    assert_eq!(s.m.session().token(), Some("new"));
}

#[test]
fn a_refused_proof_is_sent_once_more_then_is_a_login_error_that_changes_nothing() {
    // The sign-in was given up at the provider and the cookie is the old session's, bound to
    // another key: the driver then restores that session as usual.
    let mut s = back_from_the_provider();
    let a = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, status(400, Some("invalid_dpop_proof")));
    let again = s.request(Endpoint::Login);
    s.take();
    s.reply(again, status(400, Some("invalid_dpop_proof")));
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Login {
                code: "invalid_dpop_proof".into(),
                status: 400,
                retry_after: None,
            }
        })
    );
    assert!(s.emitted().is_empty() && s.posted().is_empty());
    assert_eq!(s.m.session().phase(), Phase::Maybe);
}

#[test]
fn no_session_behind_the_cookie_is_a_login_error_too() {
    let mut s = back_from_the_provider();
    let a = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, status(401, Some("invalid_grant")));
    assert!(matches!(
        s.answer(a),
        Some(Command::Reject { failure: Failure::Login { code, .. }, .. }) if code == "invalid_grant"
    ));
    assert!(s.emitted().is_empty(), "nobody was signed in: no event");
}

#[test]
fn a_throttled_refresh_keeps_its_status_so_the_sign_in_waits_for_the_next_restore() {
    let mut s = back_from_the_provider();
    let a = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.m.reply(
        req,
        status(429, Some("too_many_requests")),
        Some(5.0),
        s.now,
    );
    s.pump_out();
    assert!(matches!(
        s.answer(a),
        Some(Command::Reject { failure, .. }) if failure.status() == Some(429)
    ));
    // And a server in trouble is no refusal either.
    let b = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, status(503, None));
    assert_eq!(
        s.answer(b),
        Some(&Command::Reject {
            caller: b,
            failure: Failure::Network(Transient::Status(503))
        })
    );
}
