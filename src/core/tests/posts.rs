//! The auth server's other endpoints (`Call::Post`: requestCode, signup, a password's reset or
//! change, passkeys) through the machine: the same timeout, the same wording of a refusal as a
//! sign-in's, and for a signed one the same token, key and one replay after a 401 as a fetch.
use super::dpop::dpop_ok;
use super::*;

fn plain() -> Call {
    Call::Post { signed: false }
}

fn signed() -> Call {
    Call::Post { signed: true }
}

/// The request of `endpoint` among the commands, with its bearer and key.
fn sent(s: &Scenario) -> Vec<(Option<String>, Option<Slot>)> {
    s.out
        .iter()
        .filter_map(|c| match c {
            Command::Request {
                endpoint: Endpoint::Post,
                bearer,
                key,
                ..
            } => Some((bearer.clone(), *key)),
            _ => None,
        })
        .collect()
}

fn rejected(s: &Scenario, caller: Id) -> Failure {
    match s.answer(caller) {
        Some(Command::Reject { failure, .. }) => failure.clone(),
        other => panic!("rejected, not {other:?}"),
    }
}

#[test]
fn a_plain_request_goes_out_without_token_or_key_and_any_2xx_resolves_it() {
    let mut s = Scenario::builder().dpop().build();
    let caller = s.call(plain());
    assert_eq!(sent(&s), vec![(None, None)]);
    let req = s.request(Endpoint::Post);
    s.take();
    s.reply(req, status(202, None));
    assert_eq!(
        s.answer(caller),
        Some(&Command::Resolve {
            caller,
            value: Value::Unit
        })
    );
}

#[test]
fn a_request_that_takes_too_long_is_aborted_and_told_as_a_timeout() {
    let mut s = Scenario::new();
    let caller = s.call(plain());
    let req = s.request(Endpoint::Post);
    let timeout = s.timer_of(10_000.0);
    s.fire(timeout);
    assert!(s.has(&Command::Abort { req }));
    assert_eq!(
        rejected(&s, caller),
        Failure::Network(Transient::Timeout),
        "the machine's timer is the one timeout"
    );
    // A late answer changes nothing.
    s.take();
    s.reply(req, status(202, None));
    assert!(s.take().is_empty());
}

#[test]
fn a_refusal_is_worded_as_a_sign_ins_is() {
    let cases: [(Result<RefreshReply, Transient>, Failure); 6] = [
        (
            Err(Transient::Network),
            Failure::Network(Transient::Network),
        ),
        (status(408, None), Failure::Network(Transient::Status(408))),
        (
            status(503, Some("temporarily_unavailable")),
            Failure::Network(Transient::Status(503)),
        ),
        (
            status(400, Some("weak_password")),
            Failure::Login {
                code: "weak_password".into(),
                status: 400,
                retry_after: None,
            },
        ),
        // A proxy's page, or words that are not a plain code: never shown as the server's.
        (
            status(403, Some("<html>")),
            Failure::Login {
                code: "unexpected_response".into(),
                status: 403,
                retry_after: None,
            },
        ),
        (
            status(429, None),
            Failure::Login {
                code: "too_many_attempts".into(),
                status: 429,
                retry_after: Some(30.0),
            },
        ),
    ];
    for (reply, want) in cases {
        let mut s = Scenario::new();
        let caller = s.call(plain());
        let req = s.request(Endpoint::Post);
        s.m.reply(req, reply, Some(30.0), s.now);
        s.pump_out();
        assert_eq!(rejected(&s, caller), want);
    }
}

#[test]
fn a_signed_request_carries_the_sessions_token_and_key() {
    let mut s = Scenario::builder().dpop().build();
    let login = s.call(Call::Login);
    let r = s.request(Endpoint::Login);
    s.reply(r, dpop_ok("t1"));
    assert!(matches!(s.answer(login), Some(Command::Resolve { .. })));
    s.take();
    let caller = s.call(signed());
    let [(Some(token), Some(_key))] = &sent(&s)[..] else {
        panic!("one request with the token and a key: {:?}", s.out)
    };
    assert_eq!(token, "t1");
    let req = s.request(Endpoint::Post);
    s.reply(req, status(204, None));
    assert!(matches!(s.answer(caller), Some(Command::Resolve { .. })));
}

#[test]
fn a_signed_request_gets_one_refresh_and_one_replay_after_a_401_never_two() {
    let mut s = Scenario::new().logged_in("t1");
    let caller = s.call(signed());
    let req = s.request(Endpoint::Post);
    s.take();
    s.reply(req, status(401, Some("invalid_token")));
    let refresh = s.request(Endpoint::Refresh);
    s.reply(refresh, ok("t2"));
    assert_eq!(
        sent(&s),
        vec![(Some("t2".into()), None)],
        "replayed with the new token"
    );
    let again = s.request(Endpoint::Post);
    s.take();
    s.reply(again, status(401, Some("invalid_token")));
    assert!(s.requests(Endpoint::Refresh).is_empty(), "never a loop");
    assert_eq!(
        rejected(&s, caller),
        Failure::Login {
            code: "invalid_token".into(),
            status: 401,
            retry_after: None
        }
    );
}

#[test]
fn a_signed_request_when_due_refreshes_first_and_without_a_session_is_refused() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    s.call(signed());
    assert!(
        sent(&s).is_empty(),
        "no request with a token about to expire"
    );
    let refresh = s.request(Endpoint::Refresh);
    s.reply(refresh, ok("t2"));
    assert_eq!(sent(&s), vec![(Some("t2".into()), None)]);

    let mut anonymous = Scenario::new();
    let caller = anonymous.call(signed());
    assert_eq!(
        rejected(&anonymous, caller),
        Failure::SessionExpired("no_session")
    );
}

#[test]
fn a_refused_proof_sends_a_signed_request_once_more_with_the_same_token() {
    let mut s = Scenario::builder().dpop().build();
    let login = s.call(Call::Login);
    let r = s.request(Endpoint::Login);
    s.reply(r, dpop_ok("t1"));
    assert!(matches!(s.answer(login), Some(Command::Resolve { .. })));
    s.take();
    let caller = s.call(signed());
    let req = s.request(Endpoint::Post);
    s.take();
    s.reply(req, status(401, Some("use_dpop_nonce")));
    assert!(
        s.requests(Endpoint::Refresh).is_empty(),
        "not the token's fault"
    );
    let first = sent(&s);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0.as_deref(), Some("t1"));
    let again = s.request(Endpoint::Post);
    s.reply(again, status(204, None));
    assert!(matches!(s.answer(caller), Some(Command::Resolve { .. })));
}
