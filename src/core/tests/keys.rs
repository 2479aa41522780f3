//! The DPoP key's lifecycle (`src/core/keys.rs`): a new key per sign-in, the live key kept
//! when a sign-in fails, the stored key deleted by the tab that ends the session and only
//! forgotten by the others, a peer's new key loaded at once. The driver holds the keys by slot;
//! these stories read which slot each request is signed by and what is done to the store.
use super::dpop::dpop_ok;
use super::*;

/// The key operations among the commands not yet looked at, in order, as (op, slot, with).
fn key_ops(s: &Scenario) -> Vec<(KeyOp, Slot, f64)> {
    s.out
        .iter()
        .filter_map(|c| match c {
            Command::Key { op, slot, with } => Some((*op, *slot, *with)),
            _ => None,
        })
        .collect()
}

/// The slot the request to `endpoint` among the commands is signed by (exactly one request).
fn signed_by(s: &Scenario, endpoint: Endpoint) -> Option<Slot> {
    let keys: Vec<_> = s
        .out
        .iter()
        .filter_map(|c| match c {
            Command::Request {
                endpoint: e, key, ..
            } if *e == endpoint => Some(*key),
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 1, "one {endpoint:?} request");
    keys[0]
}

/// The slot caller `id`'s fetch was sent with.
fn sent_by(s: &Scenario, id: Id) -> Option<Slot> {
    s.out.iter().find_map(|c| match c {
        Command::Send { caller, key, .. } if *caller == id => *key,
        _ => None,
    })
}

fn builder() -> Builder {
    Scenario::builder().dpop().cross_tab()
}

/// Signed in with a new key: returns its slot.
fn sign_in(s: &mut Scenario, token: &str) -> Slot {
    let caller = s.call(Call::Login);
    let ops = key_ops(s);
    let [(KeyOp::New, slot, _)] = ops[..] else {
        panic!("a sign-in makes one new key: {ops:?}")
    };
    assert_eq!(signed_by(s, Endpoint::Login), Some(slot));
    let req = s.request(Endpoint::Login);
    // A cross-tab sign-in needs no lock: the answer is all.
    s.reply(req, dpop_ok(token));
    assert!(matches!(s.answer(caller), Some(Command::Resolve { .. })));
    s.take();
    slot
}

#[test]
fn each_sign_in_is_signed_by_a_new_key_that_then_signs_the_session() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    let a = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, a), Some(k1), "the session's requests: its key");
    assert!(key_ops(&s).is_empty(), "nothing loaded: the key is here");
    s.take();
    // Due: the refresh is signed by it too.
    s.at(DUE_MS);
    s.call(Call::Refresh { force: false });
    s.lock(true);
    assert_eq!(signed_by(&s, Endpoint::Refresh), Some(k1));
    s.take();
    // Signing in again: another new key, and the first one is freed once the server takes it.
    let k2 = sign_in(&mut s, "t2");
    assert_ne!(k2, k1);
    let b = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, b), Some(k2));
}

#[test]
fn a_refused_sign_in_puts_the_live_key_back_in_the_store() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    let caller = s.call(Call::Login);
    let [(KeyOp::New, k2, _)] = key_ops(&s)[..] else {
        panic!("a new key")
    };
    let req = s.request(Endpoint::Login);
    s.take();
    s.reply(req, status(401, Some("invalid_credentials")));
    assert!(matches!(s.answer(caller), Some(Command::Reject { .. })));
    // The new key was stored before it signed: the live one goes back, and the new one is
    // dropped; the session (of this tab and the others) goes on with its key.
    assert_eq!(
        key_ops(&s),
        vec![(KeyOp::PutBack, k2, f64::from(k1)), (KeyOp::Free, k2, 0.0)]
    );
    s.take();
    let a = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, a), Some(k1));
}

#[test]
fn a_sign_in_that_never_got_an_answer_puts_the_live_key_back_too() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    s.call(Call::Login);
    let [(KeyOp::New, k2, _)] = key_ops(&s)[..] else {
        panic!("a new key")
    };
    let req = s.request(Endpoint::Login);
    s.take();
    s.reply(req, Err(Transient::Network));
    assert!(key_ops(&s).contains(&(KeyOp::PutBack, k2, f64::from(k1))));
}

#[test]
fn a_sign_in_by_a_key_the_caller_brings_touches_the_store_only_when_taken() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    // A second factor completed by the key that sent the password, refused.
    let caller = s.call(Call::LoginWithKey);
    let [(KeyOp::Given, g, with)] = key_ops(&s)[..] else {
        panic!("the caller's key in a slot")
    };
    assert_eq!(with, f64::from(caller));
    assert_eq!(signed_by(&s, Endpoint::Login), Some(g));
    let req = s.request(Endpoint::Login);
    s.take();
    s.reply(req, status(401, Some("invalid_code")));
    // Never stored (the driver stores a given key on a 200 only): nothing to put back.
    assert_eq!(key_ops(&s), vec![(KeyOp::Free, g, 0.0)]);
    s.take();
    let a = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, a), Some(k1));
    s.take();
    // Taken: the session's key from then on.
    s.call(Call::LoginWithKey);
    let [(KeyOp::Given, g2, _)] = key_ops(&s)[..] else {
        panic!("the caller's key in a slot")
    };
    let req = s.request(Endpoint::Login);
    s.reply(req, dpop_ok("t2"));
    assert!(key_ops(&s).contains(&(KeyOp::Free, k1, 0.0)));
    s.take();
    let b = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, b), Some(g2));
}

#[test]
fn the_tab_that_logs_out_deletes_the_stored_key_after_its_logout_request_took_it() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    s.at(5_000.0);
    s.call(Call::Logout);
    assert_eq!(signed_by(&s, Endpoint::Logout), Some(k1));
    // In this order: the request has its key before the store forgets it.
    let request_at = s
        .out
        .iter()
        .position(|c| matches!(c, Command::Request { .. }));
    let delete_at = s.out.iter().position(|c| {
        matches!(
            c,
            Command::Key {
                op: KeyOp::Delete,
                ..
            }
        )
    });
    assert!(request_at < delete_at, "{:?}", s.out);
    assert_eq!(key_ops(&s), vec![(KeyOp::Delete, 0, 5_000.0)]);
    s.take();
    // Called again (the first one's answer lost): signed by the ended session's key, which the
    // server still binds the cookie to.
    s.call(Call::Logout);
    assert_eq!(signed_by(&s, Endpoint::Logout), Some(k1));
    assert!(
        !key_ops(&s).iter().any(|(op, ..)| *op == KeyOp::Load),
        "no key read from a store this tab just cleared"
    );
}

#[test]
fn a_peers_logout_forgets_the_key_and_deletes_nothing() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    s.at(5_000.0);
    s.peer(Message::Logout { at_ms: 4_000.0 });
    assert_eq!(s.emitted(), vec![Emit::Logout]);
    // The tab that logs out may still be reading the stored key to sign its request.
    assert_eq!(key_ops(&s), vec![(KeyOp::Free, k1, 0.0)]);
    s.take();
    s.peer(Message::Ended {
        reason: EndReason::InvalidGrant,
        at_ms: 4_500.0,
    });
    assert!(key_ops(&s).is_empty());
}

#[test]
fn a_peers_sign_in_loads_its_key_at_once_and_signs_with_it() {
    let mut s = builder().build();
    let k1 = sign_in(&mut s, "t1");
    s.at(5_000.0);
    s.peer(Message::Token {
        login: true,
        token: "t2".into(),
        lifetime_secs: LIFETIME,
        at_ms: 4_000.0,
        nonce: None,
    });
    let ops = key_ops(&s);
    let [(KeyOp::Free, f, _), (KeyOp::Load, k2, _)] = ops[..] else {
        panic!("the old key freed, the new one read: {ops:?}")
    };
    assert_eq!(f, k1);
    s.take();
    let a = s.call(Call::Fetch);
    assert_eq!(sent_by(&s, a), Some(k2));
    // A peer's refresh is the same session: the same key.
    s.take();
    s.peer(Message::Token {
        login: false,
        token: "t3".into(),
        lifetime_secs: LIFETIME,
        at_ms: 5_000.0,
        nonce: None,
    });
    assert!(key_ops(&s).is_empty());
}

#[test]
fn a_reload_signs_its_first_refresh_with_the_stored_key() {
    let mut s = builder().hint(true).build();
    s.call(Call::Restore { hint: true });
    let ask = s.timer_of(ASK_WAIT_MS);
    s.fire(ask);
    s.lock(true);
    let ops = key_ops(&s);
    let [(KeyOp::Load, k, _)] = ops[..] else {
        panic!("the stored key read: {ops:?}")
    };
    assert_eq!(signed_by(&s, Endpoint::Refresh), Some(k));
}

#[test]
fn a_session_refused_at_refresh_deletes_the_stored_key_here() {
    let mut s = builder().build();
    sign_in(&mut s, "t1");
    s.at(DUE_MS);
    s.call(Call::Refresh { force: false });
    s.lock(true);
    let req = s.request(Endpoint::Refresh);
    s.take();
    s.reply(req, status(401, Some("invalid_grant")));
    assert!(key_ops(&s).contains(&(KeyOp::Delete, 0, DUE_MS)));
}

#[test]
fn without_dpop_there_are_no_keys() {
    let mut s = Scenario::builder().cross_tab().build();
    s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, ok("t1"));
    let a = s.call(Call::Fetch);
    s.call(Call::Logout);
    assert!(key_ops(&s).is_empty());
    assert_eq!(sent_by(&s, a), None);
}
