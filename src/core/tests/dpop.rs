//! DPoP (RFC 9449): the nonce and clock each proof carries, one retry on `use_dpop_nonce`
//! (never a loop), and a refused proof that never ends a session.
use super::*;

/// The app's origin, first in the driver's list of servers.
const APP: usize = 0;
/// The page's clock is 3 hours behind the server's.
const SKEW_MS: f64 = 3.0 * 3_600_000.0;

pub fn dpop_ok(token: &str) -> Result<RefreshReply, Transient> {
    Ok(RefreshReply {
        status: 200,
        access_token: Some(token.into()),
        token_type: Some("DPoP".into()),
        expires_in: Some(LIFETIME),
        ..RefreshReply::default()
    })
}

fn dpop_logged_in() -> Scenario {
    let mut s = Scenario::builder().dpop().build();
    let caller = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, dpop_ok("t1"));
    assert!(matches!(s.answer(caller), Some(Command::Resolve { .. })));
    s.take();
    s
}

/// The `error` of `WWW-Authenticate: DPoP realm="tokenwarden", algs="ES256 EdDSA Ed25519",
/// error="use_dpop_nonce", error_description="a fresh DPoP nonce is required"`, as the driver
/// reads it.
const NONCE_CHALLENGE: &str = "use_dpop_nonce";

#[test]
fn a_proof_is_stamped_with_the_servers_clock_and_its_newest_nonce() {
    let mut s = Scenario::builder().dpop().build();
    s.at(1_000_000.0);
    // Nothing known yet: the page's clock, no nonce.
    assert_eq!(s.m.proof(APP, s.now), (1_000.0, None));
    s.m.seen(APP, Some("n1".into()), Some(s.now + SKEW_MS), s.now);
    assert_eq!(
        s.m.proof(APP, s.now + 2_500.0),
        (1_000.0 + 10_802.0, Some("n1"))
    );
    // A later answer's nonce wins; an older answer arriving late does not overwrite it.
    s.m.seen(
        APP,
        Some("n2".into()),
        Some(s.now + SKEW_MS + 30_000.0),
        s.now + 30_000.0,
    );
    s.m.seen(
        APP,
        Some("n-old".into()),
        Some(s.now + SKEW_MS + 1_000.0),
        s.now + 31_000.0,
    );
    assert_eq!(s.m.proof(APP, s.now + 31_000.0).1, Some("n2"));
    // Nonces are per origin; junk is not kept.
    assert_eq!(s.m.proof(1, s.now).1, None);
    s.m.seen(APP, Some("bad nonce".into()), None, s.now + 32_000.0);
    s.m.seen(APP, Some(String::new()), None, s.now + 32_000.0);
    assert_eq!(s.m.proof(APP, s.now).1, Some("n2"));
}

#[test]
fn a_date_far_ahead_does_not_freeze_the_servers_clock_or_nonce() {
    let mut s = Scenario::builder().dpop().build();
    s.at(1_000_000.0);
    // One answer claims the year 2099 (a hostile or broken server): taken for now...
    s.m.seen(
        APP,
        Some("n-bogus".into()),
        Some(4_070_908_800_000.0),
        s.now,
    );
    // ...but the next real answers, minutes "older" than it, still count.
    s.m.seen(
        APP,
        Some("n1".into()),
        Some(s.now + SKEW_MS),
        s.now + 1_000.0,
    );
    assert_eq!(
        s.m.proof(APP, s.now + 1_000.0),
        ((s.now + SKEW_MS) / 1000.0, Some("n1"))
    );
}

#[test]
fn use_dpop_nonce_from_the_refresh_endpoint_is_retried_exactly_once() {
    let mut s = dpop_logged_in();
    s.at(DUE_MS);
    let a = s.call(Call::Token);
    let r1 = s.request(Endpoint::Refresh);
    s.m.seen(APP, Some("n1".into()), None, s.now);
    s.reply(r1, status(400, Some("use_dpop_nonce")));
    let r2 = s.request(Endpoint::Refresh);
    assert!(s.answer(a).is_none(), "still waiting for the retry");
    // The retry is refused the same way: no third request, the caller gets RefreshError and
    // the session is kept.
    s.reply(r2, status(400, Some("use_dpop_nonce")));
    assert!(s.requests(Endpoint::Refresh).is_empty());
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Refresh(400)
        })
    );
    assert!(s.emitted().is_empty());
    assert_eq!(s.m.session().token(), Some("t1"));
    // The next call after the wait (10 to 15 s) tries again (a new request, with its own one
    // retry).
    s.take();
    s.at(DUE_MS + 15_000.0);
    s.call(Call::Token);
    let r3 = s.request(Endpoint::Refresh);
    s.reply(r3, status(400, Some("use_dpop_nonce")));
    let r4 = s.request(Endpoint::Refresh);
    s.reply(r4, dpop_ok("t2"));
    assert_eq!(s.m.session().token(), Some("t2"));
}

#[test]
fn a_refused_proof_at_refresh_is_sent_once_more_then_keeps_the_session() {
    let mut s = dpop_logged_in();
    s.at(DUE_MS);
    let a = s.call(Call::Token);
    let r1 = s.request(Endpoint::Refresh);
    // E.g. the browser resent the request (same proof) after its connection closed.
    s.reply(r1, status(401, Some("invalid_dpop_proof")));
    let r2 = s.request(Endpoint::Refresh);
    assert!(s.answer(a).is_none());
    s.reply(r2, status(401, Some("invalid_dpop_proof")));
    // Refused again: no third request, no logout, no event: RefreshError.
    assert!(s.requests(Endpoint::Refresh).is_empty());
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Refresh(401)
        })
    );
    assert!(s.emitted().is_empty());
    assert!(s.posted().is_empty());
    assert_eq!(s.m.session().phase(), Phase::Active);
    assert_eq!(s.m.session().token(), Some("t1"));
}

#[test]
fn a_page_clock_hours_off_costs_one_retry_at_most() {
    // The first request of a page goes out with the page's clock; the server refuses its
    // iat and its Date teaches the offset: sent once more, and every later proof is right.
    let mut s = Scenario::builder().dpop().hint(true).build();
    s.at(5_000.0);
    let a = s.call(Call::Restore { hint: true });
    let r1 = s.request(Endpoint::Refresh);
    s.m.seen(APP, Some("n1".into()), Some(s.now - SKEW_MS), s.now);
    s.reply(r1, status(401, Some("invalid_dpop_proof")));
    let r2 = s.request(Endpoint::Refresh);
    assert_eq!(
        s.m.proof(APP, s.now).0,
        ((s.now - SKEW_MS) / 1000.0).floor()
    );
    s.m.seen(APP, Some("n2".into()), Some(s.now - SKEW_MS), s.now);
    s.reply(r2, dpop_ok("t1"));
    assert_eq!(
        s.answer(a),
        Some(&Command::Resolve {
            caller: a,
            value: Value::Bool(true)
        })
    );
}

#[test]
fn a_refused_proof_on_an_api_request_is_sent_once_more() {
    let mut s = dpop_logged_in();
    let a = s.call(Call::Fetch);
    s.take();
    s.m.fetch_status(a, 401, true, Some("invalid_dpop_proof"), s.now);
    s.pump_out();
    assert_eq!(s.sent_with(a), Some(Some("t1".into())));
    assert!(s.requests(Endpoint::Refresh).is_empty());
}

#[test]
fn login_and_logout_retry_once_on_use_dpop_nonce() {
    let mut s = Scenario::builder().dpop().build();
    let caller = s.call(Call::Login);
    let r1 = s.request(Endpoint::Login);
    s.reply(r1, status(400, Some("use_dpop_nonce")));
    let r2 = s.take().into_iter().find_map(|c| match c {
        Command::Request {
            req,
            endpoint: Endpoint::Login,
            caller: Some(c),
            ..
        } => Some((req, c)),
        _ => None,
    });
    let (r2, c2) = r2.expect("the login is sent once more");
    assert_eq!(c2, caller, "with the same credentials");
    s.reply(r2, dpop_ok("t1"));
    assert_eq!(s.m.session().token(), Some("t1"));
    s.take();

    let out = s.call(Call::Logout);
    let bearer = |s: &mut Scenario| {
        s.take().into_iter().find_map(|c| match c {
            Command::Request {
                req,
                endpoint: Endpoint::Logout,
                bearer,
                ..
            } => Some((req, bearer)),
            _ => None,
        })
    };
    let (l1, b1) = bearer(&mut s).expect("logout request");
    assert_eq!(b1.as_deref(), Some("t1"));
    s.reply(l1, status(400, Some("use_dpop_nonce")));
    let (l2, b2) = bearer(&mut s).expect("logout sent once more");
    assert_eq!(b2.as_deref(), Some("t1"), "still with the token, for ath");
    s.reply(l2, status(400, Some("use_dpop_nonce")));
    // No third request: the caller is told, and the logout here stands.
    let after = s.take();
    assert!(!after.iter().any(|c| matches!(c, Command::Request { .. })));
    assert!(
        after.contains(&Command::Reject {
            caller: out,
            failure: Failure::Network(Transient::Status(400))
        }),
        "{after:?}"
    );
    assert_eq!(s.m.session().phase(), Phase::Anonymous);
}

#[test]
fn a_resource_asking_for_a_nonce_gets_the_request_once_more_then_its_answer() {
    let mut s = dpop_logged_in();
    s.at(1_000.0);
    let a = s.call(Call::Fetch);
    s.take();
    s.m.seen(APP, Some("n1".into()), None, s.now);
    s.m.fetch_status(a, 401, true, Some(NONCE_CHALLENGE), s.now);
    s.pump_out();
    assert_eq!(
        s.sent_with(a),
        Some(Some("t1".into())),
        "same token, new proof"
    );
    assert!(
        s.requests(Endpoint::Refresh).is_empty(),
        "not the token's fault"
    );
    s.take();
    // Asked again: the ordinary 401 rule now (one refresh, one replay), never a nonce loop.
    s.m.fetch_status(a, 401, true, Some(NONCE_CHALLENGE), s.now);
    s.pump_out();
    let r = s.request(Endpoint::Refresh);
    s.reply(r, dpop_ok("t2"));
    assert_eq!(s.sent_with(a), Some(Some("t2".into())));
    s.take();
    s.m.fetch_status(a, 401, true, Some(NONCE_CHALLENGE), s.now);
    s.pump_out();
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
}

#[test]
fn a_streamed_body_is_not_sent_again_for_a_nonce() {
    let mut s = dpop_logged_in();
    let a = s.call(Call::Fetch);
    s.take();
    s.m.fetch_status(a, 401, false, Some(NONCE_CHALLENGE), s.now);
    s.pump_out();
    assert_eq!(s.take(), vec![Command::Return { caller: a }]);
}

#[test]
fn a_bearer_client_ignores_dpop_challenges_and_dpop_tokens() {
    let mut s = Scenario::new().logged_in("t1");
    let a = s.call(Call::Fetch);
    s.take();
    s.m.fetch_status(a, 401, true, Some(NONCE_CHALLENGE), s.now);
    s.pump_out();
    // The ordinary rule: a refresh and a replay.
    let r = s.request(Endpoint::Refresh);
    s.reply(r, status(400, Some("use_dpop_nonce")));
    assert!(
        s.requests(Endpoint::Refresh).is_empty(),
        "no nonce retry without DPoP"
    );
}

#[test]
fn a_dpop_client_refuses_an_unbound_token() {
    let mut s = Scenario::builder().dpop().build();
    let caller = s.call(Call::Login);
    let r = s.request(Endpoint::Login);
    s.reply(r, ok("bearer-token"));
    assert_eq!(
        s.answer(caller),
        Some(&Command::Reject {
            caller,
            failure: Failure::Refresh(200)
        })
    );
    assert_eq!(s.m.session().token(), None);
}

/// The auth server is the first server in these scenarios (`Config::auth_server` 0).
const AUTH: usize = 0;

fn token_from_a_peer(nonce: Option<&str>, at_ms: f64) -> Message {
    Message::Token {
        login: false,
        token: "peer-token".into(),
        lifetime_secs: LIFETIME,
        at_ms,
        nonce: nonce.map(Into::into),
    }
}

#[test]
fn a_token_told_to_the_other_tabs_carries_the_auth_servers_newest_nonce() {
    let mut s = Scenario::builder().dpop().cross_tab().build();
    let caller = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.m.seen(AUTH, Some("n-login".into()), None, s.now);
    s.reply(req, dpop_ok("t1"));
    assert!(matches!(s.answer(caller), Some(Command::Resolve { .. })));
    let told: Vec<_> = s
        .posted()
        .into_iter()
        .filter_map(|m| match m {
            Message::Token { nonce, .. } => Some(nonce),
            _ => None,
        })
        .collect();
    // A tab that adopts the token has not talked to the server yet: without the nonce its
    // first request would hear use_dpop_nonce.
    assert_eq!(told, vec![Some("n-login".to_owned())]);
}

#[test]
fn a_peers_nonce_fills_in_only_for_a_tab_that_has_none_from_the_server() {
    let mut s = Scenario::builder().dpop().cross_tab().build();
    s.at(10_000.0);
    s.peer(token_from_a_peer(Some("n-peer"), 9_000.0));
    assert_eq!(s.m.proof(AUTH, s.now).1, Some("n-peer"));
    // The server's own nonce replaces it...
    s.m.seen(AUTH, Some("n-server".into()), None, s.now);
    // ...and a message, forged or late, never displaces the server's.
    s.peer(token_from_a_peer(Some("n-forged"), 9_500.0));
    assert_eq!(s.m.proof(AUTH, s.now).1, Some("n-server"));
    // Junk is not taken even by a tab with no nonce.
    let mut fresh = Scenario::builder().dpop().cross_tab().build();
    fresh.peer(token_from_a_peer(Some("bad nonce"), 0.0));
    assert_eq!(fresh.m.proof(AUTH, 0.0).1, None);
}
