//! Passkeys, the second factor and the step-up (docs/PROTOCOL.md, "Passkeys"), over real HTTP
//! on SQLite or PostgreSQL (`TW_TEST_BACKEND`), with a software authenticator
//! (tests/common/authenticator.rs) that can also lie about the origin, the RP ID and its
//! counter.

mod common;

use common::authenticator::{Page, SoftPasskey};
use common::smtp::SmtpSink;
use common::*;
use serde_json::{Value, json};
use tokenwarden_server::Settings;
use tokenwarden_server::config::WebauthnSettings;

const ORIGIN: &str = "http://localhost:8080";
const PAGE: Page<'static> = Page {
    origin: ORIGIN,
    rp_id: "localhost",
};

async fn server() -> TestServer {
    TestServer::with(|c| {
        c.webauthn = Some(WebauthnSettings {
            rp_id: "localhost".into(),
            rp_name: "tokenwarden tests".into(),
            origins: vec![ORIGIN.into()],
        });
    })
    .await
}

/// A server with passkeys that mails its codes (and its notices) to `sink`, its per-client and
/// per-address send limits out of the way.
async fn mail_server(sink: &SmtpSink) -> TestServer {
    TestServer::with(mailing(sink, true)).await
}

/// The settings of [`mail_server`]; without `passkeys`, the same server with its passkeys
/// switched off.
fn mailing(sink: &SmtpSink, passkeys: bool) -> impl FnOnce(&mut Settings) {
    let url = sink.url();
    move |c| {
        if passkeys {
            c.webauthn = Some(WebauthnSettings {
                rp_id: "localhost".into(),
                rp_name: "tokenwarden tests".into(),
                origins: vec![ORIGIN.into()],
            });
        }
        c.otp.smtp_url = Some(url);
        c.otp.ip_per_minute = 10_000;
        c.otp.sends_per_email = 100;
    }
}

/// A server, Alice signed in on a bound tab, and a passkey she just registered.
async fn alice_with_a_passkey() -> (TestServer, Client, SoftPasskey) {
    let s = server().await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    let passkey = register(&mut tab).await;
    (s, tab, passkey)
}

/// Turns the second factor of `tab`'s account on.
async fn require_second_factor(tab: &mut Client) {
    set_second_factor(tab, true).await;
}

/// Sets whether `tab`'s account needs a second factor, which must be taken (204).
async fn set_second_factor(tab: &mut Client, required: bool) {
    let body = json!({ "required": required });
    let a = tab.send("PUT", "/auth/second-factor", Some(&body)).await;
    assert_eq!(a.status, 204, "{}", a.body);
}

/// Registers a passkey for the signed-in `tab`: the authenticator's passkey.
/// `path` (a ceremony's finish) answered with `credential`, for the ceremony `start` began.
async fn finish(tab: &mut Client, path: &str, start: &Answer, credential: &Value) -> Answer {
    let body = json!({ "ceremony": start.body["ceremony"], "credential": credential });
    tab.post(path, &body).await
}

async fn register(tab: &mut Client) -> SoftPasskey {
    let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
    assert_eq!(start.status, 200, "{}", start.body);
    // A discoverable credential: sign-in here is usernameless.
    let selection = &start.body["options"]["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required", "{selection}");
    assert_eq!(selection["requireResidentKey"], true, "{selection}");
    let (passkey, credential) = SoftPasskey::create(&start.body["options"], &PAGE);
    let done = tab
        .post(
            "/auth/passkeys/register/finish",
            &json!({ "ceremony": start.body["ceremony"], "credential": credential, "name": "Laptop" }),
        )
        .await;
    assert_eq!(done.status, 201, "{}", done.body);
    passkey
}

/// A passkey sign-in of a new bound tab with `passkey` on `page`: the answer.
async fn passkey_login(
    s: &TestServer,
    passkey: &mut SoftPasskey,
    page: &Page<'_>,
) -> (Client, Answer) {
    let mut tab = Client::bound(s);
    let start = tab.post("/auth/passkeys/login/start", &json!({})).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let credential = passkey.get(&start.body["options"], page);
    let a = finish(&mut tab, "/auth/passkeys/login/finish", &start, &credential).await;
    (tab, a)
}

fn claims(t: &Tokens) -> Value {
    jwt_parts(&t.access).1
}

#[tokio::test]
async fn a_passkey_registered_signs_in_without_a_username_bound_and_with_amr() {
    let s = server().await;
    let mut tab = Client::bound(&s);
    let t = tab.sign_in(ALICE).await;
    assert_eq!(claims(&t)["amr"], json!(["pwd"]));
    assert!(claims(&t)["auth_time"].as_i64().unwrap() <= s.state.now());
    let mut passkey = register(&mut tab).await;
    let list = tab.get("/auth/passkeys").await;
    assert_eq!(list.body["passkeys"][0]["name"], "Laptop");

    let before = s.state.now();
    let (login_tab, a) = passkey_login(&s, &mut passkey, &PAGE).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t2 = login_tab.tokens_of(&a);
    let c = claims(&t2);
    assert_eq!(c["sub"], claims(&t)["sub"]);
    assert_eq!(c["amr"], json!(["hwk", "mfa"]));
    // The sign-in's own time: the clock may tick to the next second during it.
    let auth_time = c["auth_time"].as_i64().unwrap_or_default();
    assert!((before..=s.state.now()).contains(&auth_time), "{c}");
    // A session like any other: its refresh keeps auth_time and amr.
    let mut login_tab = login_tab;
    let r = login_tab.refresh().await;
    assert_eq!(
        claims(&login_tab.tokens_of(&r))["amr"],
        json!(["hwk", "mfa"])
    );
    s.stop().await;
}

#[tokio::test]
async fn another_origin_another_rp_id_a_replayed_or_foreign_challenge_are_refused() {
    let s = server().await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;

    // Registration from a page of another origin, or for another RP ID.
    for page in [
        Page {
            origin: "https://evil.example",
            rp_id: "localhost",
        },
        Page {
            origin: ORIGIN,
            rp_id: "evil.example",
        },
    ] {
        let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
        let (_, credential) = SoftPasskey::create(&start.body["options"], &page);
        let a = finish(
            &mut tab,
            "/auth/passkeys/register/finish",
            &start,
            &credential,
        )
        .await;
        // 403, not 401: the signed-in user's token is fine (a 401 would have the client
        // refresh and replay the used-up ceremony).
        assert_eq!(a.status, 403, "{} {}", page.origin, a.body);
        assert_eq!(a.error(), "invalid_credentials");
    }
    // A registration started in one session and finished in another of the same account (a
    // thief's older session, after the one that proved a recent sign-in was revoked): refused.
    let mut other = Client::bound(&s);
    other.sign_in(ALICE).await;
    let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
    let (_, credential) = SoftPasskey::create(&start.body["options"], &PAGE);
    let a = finish(
        &mut other,
        "/auth/passkeys/register/finish",
        &start,
        &credential,
    )
    .await;
    assert_eq!(
        (a.status, a.error()),
        (403, "invalid_credentials"),
        "{}",
        a.body
    );
    let mut passkey = register(&mut tab).await;

    // Sign-in assertions from another origin or for another RP ID.
    for page in [
        Page {
            origin: "https://evil.example",
            rp_id: "localhost",
        },
        Page {
            origin: ORIGIN,
            rp_id: "evil.example",
        },
    ] {
        let (_, a) = passkey_login(&s, &mut passkey, &page).await;
        assert_eq!(a.status, 401, "{}", page.origin);
        assert_eq!(a.error(), "invalid_credentials");
    }

    // One assertion, sent twice: its ceremony is used up.
    let mut thief = Client::bound(&s);
    let start = thief.post("/auth/passkeys/login/start", &json!({})).await;
    let credential = passkey.get(&start.body["options"], &PAGE);
    let body = json!({ "ceremony": start.body["ceremony"], "credential": credential });
    assert_eq!(
        thief
            .post("/auth/passkeys/login/finish", &body)
            .await
            .status,
        200
    );
    let mut again = Client::bound(&s);
    assert_eq!(
        again
            .post("/auth/passkeys/login/finish", &body)
            .await
            .status,
        401
    );
    // An assertion of one challenge with another ceremony.
    let other = again.post("/auth/passkeys/login/start", &json!({})).await;
    let replay = json!({ "ceremony": other.body["ceremony"], "credential": credential });
    let a = again.post("/auth/passkeys/login/finish", &replay).await;
    assert_eq!(a.status, 401, "{}", a.body);
    s.stop().await;
}

#[tokio::test]
async fn a_counter_that_goes_backwards_is_refused_and_a_removed_passkey_signs_nothing() {
    let (s, mut tab, mut passkey) = alice_with_a_passkey().await;
    for _ in 0..3 {
        assert_eq!(passkey_login(&s, &mut passkey, &PAGE).await.1.status, 200);
    }
    // A copy of the authenticator, behind the original: its counter went backwards.
    passkey.counter = 1;
    let (_, a) = passkey_login(&s, &mut passkey, &PAGE).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.error(), "invalid_credentials");
    passkey.counter = 10;
    assert_eq!(passkey_login(&s, &mut passkey, &PAGE).await.1.status, 200);

    // Removed (the sign-in is recent): it signs in no more.
    let id = tab.get("/auth/passkeys").await.body["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tab.delete(&format!("/auth/passkeys/{id}")).await.status,
        204
    );
    let (_, a) = passkey_login(&s, &mut passkey, &PAGE).await;
    assert_eq!(a.status, 401);
    s.stop().await;
}

/// An authenticator makes credential ids of at most 1023 bytes; webauthn-rs takes up to 4096,
/// written by anyone who answers a registration by hand. A longer one was a 500 on PostgreSQL
/// (its index cannot hold the id) and, on both backends, a passkey its owner could not remove
/// (the removal refused an id that long as not found), which signed in after a reset.
#[tokio::test]
async fn a_credential_id_longer_than_webauthn_allows_is_refused_and_the_longest_is_removable() {
    let s = server().await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    // A registration answered with a credential id of `len` bytes.
    async fn register_id_of(tab: &mut Client, len: usize) -> Answer {
        let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
        assert_eq!(start.status, 200, "{}", start.body);
        let (_, credential) = SoftPasskey::create_with_id_of(len, &start.body["options"], &PAGE);
        finish(tab, "/auth/passkeys/register/finish", &start, &credential).await
    }
    for len in [3000, 1100, 1024] {
        let a = register_id_of(&mut tab, len).await;
        assert_eq!(
            (a.status, a.error()),
            (400, "invalid_request"),
            "{len}: {}",
            a.body
        );
    }
    assert_eq!(tab.get("/auth/passkeys").await.body["passkeys"], json!([]));
    let a = register_id_of(&mut tab, 1023).await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 1364);
    assert_eq!(
        tab.delete(&format!("/auth/passkeys/{id}")).await.status,
        204
    );
    assert_eq!(tab.get("/auth/passkeys").await.body["passkeys"], json!([]));
    s.stop().await;
}

/// Each start stores a ceremony for five minutes: a signed-in user looping on step-up or
/// registration starts is limited per client address as passkey sign-ins are (60 a minute).
#[tokio::test]
async fn step_up_and_registration_starts_are_limited_per_client() {
    let s = server().await;
    // One minute for all of them, the registration's start too (the windows are the clock's
    // minutes).
    s.state.clock.freeze();
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    register(&mut tab).await;
    let mut answered = Vec::new();
    for _ in 0..61 {
        answered.push(tab.post("/auth/step-up/start", &json!({})).await.status);
    }
    // One start went to the registration.
    assert!(answered[..59].iter().all(|s| *s == 200), "{answered:?}");
    assert_eq!(answered[59..], [429, 429], "{answered:?}");
    let a = tab.post("/auth/passkeys/register/start", &json!({})).await;
    assert_eq!(
        (a.status, a.error()),
        (429, "too_many_attempts"),
        "{}",
        a.body
    );
    s.stop().await;
}

#[tokio::test]
async fn sensitive_actions_need_a_recent_sign_in_and_a_step_up_gives_one() {
    let (s, mut tab, mut passkey) = alice_with_a_passkey().await;

    // Six minutes later: adding or removing a passkey, or the second-factor setting, asks for
    // a step-up (403, not a 401 that would end the session).
    s.state.clock.advance(360);
    let a = tab.refresh().await;
    let t = tab.tokens_of(&a);
    let old_auth_time = claims(&t)["auth_time"].as_i64().unwrap();
    for (method, path) in [
        ("POST", "/auth/passkeys/register/start"),
        ("PUT", "/auth/second-factor"),
        ("DELETE", "/auth/passkeys/x"),
    ] {
        let a = tab
            .send(method, path, Some(&json!({ "required": true })))
            .await;
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert_eq!(a.error(), "step_up_required");
        assert_eq!(a.body["max_age"], 300);
    }

    // A step-up started, then three sign-ins with the passkey, then the step-up answered by
    // a copy of the authenticator behind those (but ahead of the counter stored when the
    // step-up started): refused, as a counter that went backwards.
    let start = tab.post("/auth/step-up/start", &json!({})).await;
    let behind = passkey.counter;
    for _ in 0..3 {
        let (_, a) = passkey_login(&s, &mut passkey, &PAGE).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let ahead = passkey.counter;
    passkey.counter = behind + 1;
    let credential = passkey.get(&start.body["options"], &PAGE);
    let done = finish(&mut tab, "/auth/step-up/finish", &start, &credential).await;
    assert_eq!(
        (done.status, done.error()),
        (403, "invalid_credentials"),
        "{}",
        done.body
    );
    passkey.counter = ahead;

    // The step-up: a passkey again in this session (a malformed answer first spends nothing).
    let start = tab.post("/auth/step-up/start", &json!({})).await;
    assert_eq!(start.status, 200, "{}", start.body);
    let a = finish(&mut tab, "/auth/step-up/finish", &start, &json!({})).await;
    assert_eq!(
        (a.status, a.error()),
        (400, "invalid_request"),
        "{}",
        a.body
    );
    let credential = passkey.get(&start.body["options"], &PAGE);
    let done = finish(&mut tab, "/auth/step-up/finish", &start, &credential).await;
    assert_eq!(done.status, 204, "{}", done.body);
    let a = tab.refresh().await;
    let t = tab.tokens_of(&a);
    assert!(claims(&t)["auth_time"].as_i64().unwrap() > old_auth_time);
    assert_eq!(claims(&t)["amr"], json!(["pwd", "hwk", "mfa"]));
    require_second_factor(&mut tab).await;

    // From now on the password alone opens nothing.
    let a = Client::bound(&s).login(ALICE).await;
    assert_eq!(a.error(), "second_factor_required");
    // A step-up ceremony is its session's: another session of the user cannot finish it.
    let start = tab.post("/auth/step-up/start", &json!({})).await;
    let credential = passkey.get(&start.body["options"], &PAGE);
    let (mut other, a) = passkey_login(&s, &mut passkey, &PAGE).await;
    let _ = other.tokens_of(&a);
    let a = finish(&mut other, "/auth/step-up/finish", &start, &credential).await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(a.error(), "invalid_credentials");
    s.stop().await;
}

#[tokio::test]
async fn a_required_second_factor_completes_a_password_sign_in_only_with_the_same_key() {
    let (s, mut tab, mut passkey) = alice_with_a_passkey().await;
    require_second_factor(&mut tab).await;

    // The password alone: 401 second_factor_required, no cookie, no token.
    let mut next = Client::bound(&s);
    let a = next.login(ALICE).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.error(), "second_factor_required");
    assert!(a.set_cookies().is_empty());
    assert!(a.body["access_token"].is_null());
    let ceremony = a.body["ceremony"].clone();
    let credential = passkey.get(&a.body["passkey"], &PAGE);

    // Another key (someone who saw the answer) cannot complete it; the ceremony is then used.
    let mut thief = Client::bound(&s);
    let body = json!({ "ceremony": ceremony, "credential": credential });
    assert_eq!(
        thief.post("/auth/login/second-factor", &body).await.status,
        401
    );
    let a = next.post("/auth/login/second-factor", &body).await;
    assert_eq!(a.status, 401, "used up by the refused attempt");

    // Again, completed by the key that sent the password; a malformed answer before it (no
    // WebAuthn credential, both or neither of credential and code), or a code on this server
    // that mails none, is refused and spends nothing.
    let a = next.login(ALICE).await;
    for bad in [
        json!({ "ceremony": a.body["ceremony"], "credential": { "id": 7 } }),
        json!({ "ceremony": a.body["ceremony"], "credential": {}, "code": "123456" }),
        json!({ "ceremony": a.body["ceremony"] }),
        json!({ "ceremony": a.body["ceremony"], "code": "123456" }),
    ] {
        let refused = next.post("/auth/login/second-factor", &bad).await;
        assert_eq!(
            (refused.status, refused.error()),
            (400, "invalid_request"),
            "{}",
            refused.body
        );
    }
    let credential = passkey.get(&a.body["passkey"], &PAGE);
    let a = finish(&mut next, "/auth/login/second-factor", &a, &credential).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let t = next.tokens_of(&a);
    assert_eq!(claims(&t)["amr"], json!(["pwd", "hwk", "mfa"]));
    // A wrong password still answers as before (nothing about the second factor).
    let a = Client::bound(&s).login((ALICE.0, "wrong password!!")).await;
    assert_eq!(a.error(), "invalid_credentials");
    s.stop().await;
}

/// A password sign-in waiting for its second factor proved the password of then: a password
/// change (the owner who learned the old one leaked) ends it with the other sessions. Before,
/// whoever had the old password and a second factor (a passkey, or the mailbox's code) could
/// complete it for up to five minutes after the change.
#[tokio::test]
async fn a_password_change_ends_the_sign_ins_waiting_for_their_second_factor() {
    let (s, mut tab, mut passkey) = alice_with_a_passkey().await;
    require_second_factor(&mut tab).await;
    let mut thief = Client::bound(&s);
    let waiting = thief.login(ALICE).await;
    assert_eq!(
        waiting.error(),
        "second_factor_required",
        "{}",
        waiting.body
    );
    let change = json!({ "current_password": ALICE.1, "new_password": "another good phrase" });
    let a = tab.post("/auth/password/change", &change).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let credential = passkey.get(&waiting.body["passkey"], &PAGE);
    let body = json!({ "ceremony": waiting.body["ceremony"], "credential": credential });
    let a = thief.post("/auth/login/second-factor", &body).await;
    assert_eq!(
        (a.status, a.error()),
        (401, "invalid_credentials"),
        "{}",
        a.body
    );
    assert_eq!(
        tab.get("/api/me").await.status,
        200,
        "the change's session goes on"
    );
    s.stop().await;
}

/// A server that mails no codes, an account whose password sign-ins need a second factor, and
/// its one passkey: removing it is refused (the owner would be locked out for good) until the
/// second factor is turned off.
#[tokio::test]
async fn the_last_passkey_that_is_the_second_factor_cannot_be_removed() {
    let (s, mut tab, _passkey) = alice_with_a_passkey().await;
    let required = |on: bool| json!({ "required": on });
    let a = tab
        .send("PUT", "/auth/second-factor", Some(&required(true)))
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let id = tab.get("/auth/passkeys").await.body["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = tab.delete(&format!("/auth/passkeys/{id}")).await;
    assert_eq!(a.error(), "passkeys_unavailable", "{}", a.body);
    assert_eq!(
        tab.get("/auth/passkeys").await.body["passkeys"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let a = tab
        .send("PUT", "/auth/second-factor", Some(&required(false)))
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(
        tab.delete(&format!("/auth/passkeys/{id}")).await.status,
        204
    );
    s.stop().await;
}

/// An account whose sign-ins need a second factor, and a passkey: an emailed code (a code
/// sign-in, a password reset) proves the mailbox only, and the passkey is asked for too. Before,
/// the mailbox alone signed in, recently enough to turn the second factor off.
#[tokio::test]
async fn a_code_sign_in_or_a_reset_needs_the_passkey_that_is_the_second_factor() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink).await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    let mut passkey = register(&mut tab).await;
    // Adding it mailed Alice a notice: a passkey a script in the page added in the minutes after
    // a sign-in would be heard of where the script cannot read.
    let notice = sink.wait_for(ALICE.0, 1).await.raw;
    assert!(
        notice.contains("Subject: A passkey was added to your account"),
        "{notice}"
    );
    // Not the name the page gave it: a script chooses that, and would write the notice's
    // reassurance itself ("added by your bank's security team").
    assert!(!notice.contains("Laptop"), "{notice}");
    require_second_factor(&mut tab).await;
    // So did switching the second factor on.
    let notice = sink.wait_for(ALICE.0, 2).await.subject();
    assert_eq!(notice, "Your sign-ins now ask for a second factor");

    // Every message to Alice after it, in order: a code asked for, or one a password sign-in
    // mailed as its second factor.
    let mails = std::cell::Cell::new(2);
    let mailed = async || {
        mails.set(mails.get() + 1);
        sink.wait_for(ALICE.0, mails.get()).await.code()
    };
    let code_of = async |c: &mut Client, start: &str| {
        let a = c.post(start, &json!({ "email": ALICE.0 })).await;
        assert_eq!(a.status, 202, "{}", a.body);
        mailed().await
    };
    // A code sign-in: asked for the passkey (no code mailed again), no session yet.
    let mut next = Client::bound(&s);
    let code = code_of(&mut next, "/auth/otp/start").await;
    let a = next
        .post(
            "/auth/otp/verify",
            &json!({ "email": ALICE.0, "code": code }),
        )
        .await;
    assert_eq!(
        (a.status, a.error()),
        (401, "second_factor_required"),
        "{}",
        a.body
    );
    assert_eq!(a.body["email_code"], false);
    assert!(a.set_cookies().is_empty() && a.body["access_token"].is_null());
    // Nor is the address verified yet: only the passkey makes the account the mailbox's (one
    // made under someone else's address stayed unverified before the code did it).
    let verified = async || {
        let found = s.state.store.user_by_email(ALICE.0).await.unwrap();
        found.map(|(user, _)| user.email_verified)
    };
    assert_eq!(verified().await, Some(false));
    // A code as the answer (the wrong kind after a code): refused, and the sign-in stays
    // pending for its passkey.
    let wrong_kind = next
        .post(
            "/auth/login/second-factor",
            &json!({ "ceremony": a.body["ceremony"], "code": "123456" }),
        )
        .await;
    assert_eq!(wrong_kind.status, 400, "{}", wrong_kind.body);
    let credential = passkey.get(&a.body["passkey"], &PAGE);
    let done = finish(&mut next, "/auth/login/second-factor", &a, &credential).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(verified().await, Some(true));
    assert_eq!(
        claims(&next.tokens_of(&done))["amr"],
        json!(["otp", "hwk", "mfa"])
    );

    // A code does not complete a code sign-in.
    let mut other = Client::bound(&s);
    let code = code_of(&mut other, "/auth/otp/start").await;
    let a = other
        .post(
            "/auth/otp/verify",
            &json!({ "email": ALICE.0, "code": code }),
        )
        .await;
    let by_code = json!({ "ceremony": a.body["ceremony"], "code": "123456" });
    let refused = other.post("/auth/login/second-factor", &by_code).await;
    assert_eq!(refused.error(), "invalid_request", "{}", refused.body);

    // A reset: the sign-in needs the passkey, and nothing changes before it answers.
    const NEW: &str = "brand new secret phrase";
    let mut reset = Client::bound(&s);
    let code = code_of(&mut reset, "/auth/password/reset/start").await;
    let body = json!({ "email": ALICE.0, "code": code, "new_password": NEW });
    let a = reset.post("/auth/password/reset", &body).await;
    assert_eq!(
        (a.status, a.error()),
        (401, "second_factor_required"),
        "{}",
        a.body
    );
    assert!(a.set_cookies().is_empty());
    let pending = a;
    // The attack this stops: the mailbox resets the password, then signs in with it and a
    // code mailed again as the second factor, recently enough to turn the second factor off.
    // The new password is nobody's yet; the old one still is, and Alice's session lives on.
    let mut thief = Client::bound(&s);
    let a = thief.login((ALICE.0, NEW)).await;
    assert_eq!(a.error(), "invalid_credentials", "{}", a.body);
    let a = thief.login(ALICE).await;
    mailed().await;
    assert_eq!(
        a.error(),
        "second_factor_required",
        "the old password: {}",
        a.body
    );
    assert_eq!(tab.get("/api/me").await.status, 200, "not revoked yet");
    // The passkey answers: the new password, and every other session ends.
    let credential = passkey.get(&pending.body["passkey"], &PAGE);
    let done = finish(
        &mut reset,
        "/auth/login/second-factor",
        &pending,
        &credential,
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    // Then, not before: Alice hears of the reset.
    mails.set(mails.get() + 1);
    let notice = sink.wait_for(ALICE.0, mails.get()).await.subject();
    assert_eq!(notice, "Your password was reset");
    let mut again = Client::bound(&s);
    let a = again.login((ALICE.0, NEW)).await;
    mailed().await;
    assert_eq!(
        a.error(),
        "second_factor_required",
        "the new password: {}",
        a.body
    );
    let a = again.login(ALICE).await;
    assert_eq!(a.error(), "invalid_credentials", "the old one: {}", a.body);
    let refused = tab.get("/api/me").await;
    assert_eq!(
        refused.status, 401,
        "revoked by the reset: {}",
        refused.body
    );

    // Two resets left pending: the one the passkey completes first drops the other (completed
    // later, it would put back an older password).
    let mut pending = Vec::new();
    for (n, password) in ["the first pending reset", "the second pending reset"]
        .into_iter()
        .enumerate()
    {
        let mut r = Client::bound(&s);
        let code = code_of(&mut r, "/auth/password/reset/start").await;
        let body = json!({ "email": ALICE.0, "code": code, "new_password": password });
        let a = r.post("/auth/password/reset", &body).await;
        assert_eq!(a.error(), "second_factor_required", "reset {n}: {}", a.body);
        pending.push((r, a));
    }
    let mut answer = async |i: usize| {
        let (r, a) = &mut pending[i];
        let credential = passkey.get(&a.body["passkey"], &PAGE);
        let body = json!({ "ceremony": a.body["ceremony"], "credential": credential });
        r.post("/auth/login/second-factor", &body).await
    };
    assert_eq!(answer(1).await.status, 200);
    let late = answer(0).await;
    assert_eq!(late.error(), "invalid_credentials", "{}", late.body);
    let a = Client::bound(&s)
        .login((ALICE.0, "the second pending reset"))
        .await;
    assert_eq!(
        a.error(),
        "second_factor_required",
        "the later reset stands: {}",
        a.body
    );
    s.stop().await;
}

/// The guard above against removals side by side: six passkeys, the second factor on, all six
/// removed at once. Each removal saw others left, and all six went (the owner locked out for
/// good); the last one is kept now.
#[tokio::test]
async fn removals_side_by_side_keep_the_last_passkey_that_is_the_second_factor() {
    let (s, mut tab, _passkey) = alice_with_a_passkey().await;
    for _ in 0..5 {
        register(&mut tab).await;
    }
    require_second_factor(&mut tab).await;
    let listed = tab.get("/auth/passkeys").await.body["passkeys"].clone();
    let ids: Vec<String> = listed
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 6);
    let removals = ids.into_iter().map(|id| {
        let mut c = tab.clone();
        tokio::spawn(async move { c.delete(&format!("/auth/passkeys/{id}")).await.status })
    });
    let mut statuses = Vec::new();
    for r in removals.collect::<Vec<_>>() {
        statuses.push(r.await.expect("a removal's task"));
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 204, 204, 204, 204, 400], "{statuses:?}");
    let left = tab.get("/auth/passkeys").await.body["passkeys"].clone();
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    s.stop().await;
}

/// Two registrations started side by side with room for one more passkey: the first finished
/// is kept, the second refused (each start saw room for it).
#[tokio::test]
async fn registrations_started_side_by_side_stop_at_the_limit() {
    let (s, mut tab, _passkey) = alice_with_a_passkey().await;
    for _ in 1..19 {
        register(&mut tab).await;
    }
    // Nineteen: eight registrations started (each saw room for one more), finished at once
    // (each checked the count before any was added).
    let mut finishes = Vec::new();
    for _ in 0..8 {
        let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
        assert_eq!(start.status, 200, "{}", start.body);
        let (_, credential) = SoftPasskey::create(&start.body["options"], &PAGE);
        let mut tab = tab.clone();
        finishes.push(async move {
            let body = json!({ "ceremony": start.body["ceremony"], "credential": credential });
            tab.post("/auth/passkeys/register/finish", &body).await
        });
    }
    let mut answers: Vec<(u16, String)> = futures::future::join_all(finishes)
        .await
        .iter()
        .map(|a| (a.status, a.error().to_owned()))
        .collect();
    answers.sort();
    let refused = (400, "invalid_request".to_owned());
    assert_eq!(answers[0].0, 201, "{answers:?}");
    assert!(answers[1..].iter().all(|a| *a == refused), "{answers:?}");
    let listed = tab.get("/auth/passkeys").await.body["passkeys"].clone();
    assert_eq!(listed.as_array().map(Vec::len), Some(20));
    s.stop().await;
}

/// An instance's view of revocations lags the database (another instance revoked the session,
/// or the revocation is being written): a session revoked in the database changes no passkey
/// and no second-factor setting, though its access token still passes that view.
#[tokio::test]
async fn a_session_revoked_elsewhere_changes_no_passkey_or_second_factor() {
    let (s, mut tab, _passkey) = alice_with_a_passkey().await;
    let id = tab.get("/auth/passkeys").await.body["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, mine) = jwt_parts(tab.access.as_deref().unwrap());
    let (sid, sub) = (mine["sid"].as_str().unwrap(), mine["sub"].as_str().unwrap());
    let reason = tokenwarden_server::store::RevokeReason::RevokedByUser;
    assert!(
        s.state
            .store
            .revoke_session(sid, None, reason, s.state.now())
            .await
            .unwrap()
    );
    let off = json!({ "required": false });
    for (method, path, body) in [
        ("PUT", "/auth/second-factor".to_owned(), Some(&off)),
        ("DELETE", format!("/auth/passkeys/{id}"), None),
    ] {
        let a = tab.send(method, &path, body).await;
        assert_eq!((a.status, a.error()), (401, "invalid_token"), "{path}");
    }
    assert_eq!(s.state.store.passkeys_of(sub).await.unwrap().len(), 1);
    s.stop().await;
}

/// An account whose second factor is its passkey, on a server restarted with its passkeys
/// switched off (no `--webauthn-rp-id`): a code sign-in or a reset, which the passkey had to
/// complete, is refused (the mailbox alone completed them); a password sign-in still asks for
/// the emailed code.
#[tokio::test]
async fn with_passkeys_switched_off_a_code_alone_does_not_pass_for_the_passkey() {
    let sink = SmtpSink::start();
    let (url, _dir) = TestServer::durable_database().await;
    let s = TestServer::on(&url, mailing(&sink, true)).await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    register(&mut tab).await;
    require_second_factor(&mut tab).await;
    // The notices of the passkey added and the second factor (mailed after the answer: waited
    // for before the stop).
    sink.wait_for(ALICE.0, 2).await;
    s.stop().await;
    let mailed = std::cell::Cell::new(2);
    let next_code = async || {
        mailed.set(mailed.get() + 1);
        sink.wait_for(ALICE.0, mailed.get()).await.code()
    };

    let s = TestServer::on(&url, mailing(&sink, false)).await;
    let mut c = Client::bound(&s);
    for (start, finish, extra) in [
        ("/auth/otp/start", "/auth/otp/verify", json!({})),
        (
            "/auth/password/reset/start",
            "/auth/password/reset",
            json!({ "new_password": "brand new secret phrase" }),
        ),
    ] {
        let a = c.post(start, &json!({ "email": ALICE.0 })).await;
        assert_eq!(a.status, 202, "{}", a.body);
        let mut body = json!({ "email": ALICE.0, "code": next_code().await });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let a = c.post(finish, &body).await;
        assert_eq!(
            (a.status, a.error()),
            (400, "passkeys_unavailable"),
            "{finish}: {}",
            a.body
        );
        assert!(a.set_cookies().is_empty() && a.body["access_token"].is_null());
    }
    // The password is unchanged, and its sign-in asks for the emailed code.
    let a = c.login(ALICE).await;
    assert_eq!(a.error(), "second_factor_required", "{}", a.body);
    assert_eq!(a.body["email_code"], true);
    // A passkey for it, with passkeys off: refused, and the sign-in stays pending for the code.
    let ceremony = a.body["ceremony"].clone();
    let answer = json!({ "ceremony": ceremony, "credential": {} });
    let refused = c.post("/auth/login/second-factor", &answer).await;
    assert_eq!(
        (refused.status, refused.error()),
        (400, "passkeys_unavailable"),
        "{}",
        refused.body
    );
    let answer = json!({ "ceremony": ceremony, "code": next_code().await });
    let done = c.post("/auth/login/second-factor", &answer).await;
    assert_eq!(done.status, 200, "{}", done.body);
    s.stop().await;
}

/// A stored passkey that does not read (a damaged row, a format a later webauthn-rs changed) is
/// an error, never "no passkey": left out, the account counted as having none, and its second
/// factor was done by the mailbox alone.
#[tokio::test]
async fn a_stored_passkey_that_does_not_read_is_never_taken_for_none() {
    let sink = SmtpSink::start();
    let s = mail_server(&sink).await;
    let mut tab = Client::bound(&s);
    let t = tab.sign_in(ALICE).await;
    register(&mut tab).await;
    require_second_factor(&mut tab).await;
    // Its two notices: the passkey added, the second factor on.
    sink.wait_for(ALICE.0, 2).await;
    let user = claims(&t)["sub"].as_str().unwrap().to_owned();
    let store = &s.state.store;
    for row in store.passkeys_of(&user).await.unwrap() {
        let damaged = store.passkey_used(&row.id, &row.passkey, "{}", s.state.now());
        assert!(damaged.await.unwrap());
    }
    let mut c = Client::bound(&s);
    let a = c
        .post("/auth/otp/start", &json!({ "email": ALICE.0 }))
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    let code = sink.wait_for(ALICE.0, 3).await.code();
    let a = c
        .post(
            "/auth/otp/verify",
            &json!({ "email": ALICE.0, "code": code }),
        )
        .await;
    assert_ne!(a.status, 200, "{}", a.body);
    assert!(a.set_cookies().is_empty() && a.body["access_token"].is_null());
    s.stop().await;
}

/// A server that mails no codes and takes no passkeys now (its `--webauthn-rp-id` gone): the
/// second factor cannot be switched on, though the account has a passkey from before. On, no
/// password sign-in could be completed, and no code could let the account in.
#[tokio::test]
async fn a_second_factor_no_one_could_answer_cannot_be_switched_on() {
    let (url, _dir) = TestServer::durable_database().await;
    let with_passkeys = |c: &mut Settings| {
        c.webauthn = Some(WebauthnSettings {
            rp_id: "localhost".into(),
            rp_name: "tokenwarden tests".into(),
            origins: vec![ORIGIN.into()],
        });
    };
    let s = TestServer::on(&url, with_passkeys).await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    register(&mut tab).await;
    s.stop().await;
    let s = TestServer::on(&url, |_| {}).await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    let on = json!({ "required": true });
    let a = tab.send("PUT", "/auth/second-factor", Some(&on)).await;
    assert_eq!(
        (a.status, a.error()),
        (400, "passkeys_unavailable"),
        "{}",
        a.body
    );
    // Still one factor: a password sign-in goes through.
    assert!(!Client::bound(&s).sign_in(ALICE).await.access.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn without_webauthn_configured_passkeys_are_unavailable() {
    let s = TestServer::start().await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    for path in [
        "/auth/passkeys/register/start",
        "/auth/passkeys/login/start",
    ] {
        let a = tab.post(path, &json!({})).await;
        assert_eq!(a.status, 400, "{path}");
        assert_eq!(a.error(), "passkeys_unavailable");
    }
    s.stop().await;
}

/// Account pre-hijacking with a second factor: the stranger who opened the account under the
/// victim's address (an import without `email_verified`) cannot set up a passkey or a second
/// factor with that password (the owner's first sign-in by the address would have to end them,
/// and the mailbox alone would then pass a second factor the owner set up). The password's
/// holder who verifies the address in a session of the account, and so proves the mailbox
/// too, can: a verification outside a session does not count.
#[tokio::test]
async fn a_password_nobody_proved_sets_up_no_passkey_or_second_factor_until_the_address_is_verified_in_its_session()
 {
    const PASSWORD: &str = "imported-password-1";
    let sink = SmtpSink::start();
    let s = mail_server(&sink).await;
    let email = "imported@example.com";
    let hash = tokenwarden_server::password::hash_blocking(PASSWORD).unwrap();
    let line = format!("{}\n", json!({ "email": email, "password_hash": hash }));
    let now = s.state.now();
    tokenwarden_server::users::import(&s.state.store, line.as_bytes(), false, now)
        .await
        .unwrap();
    let mut tab = Client::bound(&s);
    let t = tab.sign_in((email, PASSWORD)).await;
    let id = claims(&t)["sub"].as_str().unwrap().to_owned();
    let refused = |r: &Answer| (r.status, r.error().to_owned());
    let not_yet = (403, "email_not_verified".to_owned());
    let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
    assert_eq!(refused(&start), not_yet, "{}", start.body);
    let on = json!({ "required": true });
    let set = tab.send("PUT", "/auth/second-factor", Some(&on)).await;
    assert_eq!(refused(&set), not_yet, "{}", set.body);

    // Verified outside a session: the address is, the password may still be a stranger's.
    let mut outside = Client::new(&s);
    assert_eq!(
        outside
            .post("/auth/email/verify/start", &json!({ "email": email }))
            .await
            .status,
        202
    );
    let code = sink.wait_for(email, 1).await.code();
    let done = outside
        .post(
            "/auth/email/verify",
            &json!({ "email": email, "code": code }),
        )
        .await;
    assert_eq!(done.status, 204, "{}", done.body);
    let start = tab.post("/auth/passkeys/register/start", &json!({})).await;
    assert_eq!(refused(&start), not_yet, "{}", start.body);

    // In the session: a code still comes (the address is verified, the password not), and
    // then passkeys and the second factor may be set up.
    assert_eq!(
        tab.post("/auth/email/verify/start", &json!({ "email": email }))
            .await
            .status,
        202
    );
    let code = sink.wait_for(email, 2).await.code();
    // A token that does not verify is said at once (not taken as no session), the code kept.
    let mut spoilt = tab.clone();
    spoilt.access = Some(format!("{}A", spoilt.access.clone().unwrap()));
    let bad = spoilt
        .post(
            "/auth/email/verify",
            &json!({ "email": email, "code": code }),
        )
        .await;
    assert_eq!(
        (bad.status, bad.error()),
        (401, "invalid_token"),
        "{}",
        bad.body
    );
    let done = tab
        .post(
            "/auth/email/verify",
            &json!({ "email": email, "code": code }),
        )
        .await;
    assert_eq!(done.status, 204, "{}", done.body);
    assert_eq!(s.state.store.password_mark(&id).await.unwrap(), 0);
    register(&mut tab).await;
    require_second_factor(&mut tab).await;
    s.stop().await;
}

/// On a server that mails no codes nothing can end a marked password (no sign-in by the
/// address) or clear its mark: the rule above does not apply there, or imported users could
/// never add a passkey.
#[tokio::test]
async fn without_mailed_codes_an_imported_password_adds_a_passkey() {
    const PASSWORD: &str = "imported-password-1";
    let s = server().await;
    let email = "imported@example.com";
    let hash = tokenwarden_server::password::hash_blocking(PASSWORD).unwrap();
    let line = format!("{}\n", json!({ "email": email, "password_hash": hash }));
    tokenwarden_server::users::import(&s.state.store, line.as_bytes(), false, s.state.now())
        .await
        .unwrap();
    let mut tab = Client::bound(&s);
    let t = tab.sign_in((email, PASSWORD)).await;
    let id = claims(&t)["sub"].as_str().unwrap().to_owned();
    assert_eq!(s.state.store.password_mark(&id).await.unwrap(), 1);
    register(&mut tab).await;
    require_second_factor(&mut tab).await;
    s.stop().await;
}

/// A page of another site can POST to `/auth/passkeys/login/start` (no body: a simple request,
/// sent without a preflight) as often as it likes while the user has it open. Refused without
/// the CSRF header, it spends none of the starts the user's address has, which the sign-in's
/// finish and a second factor share.
#[tokio::test]
async fn another_site_cannot_spend_the_passkey_sign_in_starts() {
    let s = server().await;
    s.state.clock.freeze();
    let mut page = Client::new(&s);
    page.csrf = None;
    for _ in 0..61 {
        let a = page.send("POST", "/auth/passkeys/login/start", None).await;
        assert_eq!(
            (a.status, a.error()),
            (403, "csrf_header_missing"),
            "{}",
            a.body
        );
    }
    let mut tab = Client::new(&s);
    let start = tab.post("/auth/passkeys/login/start", &json!({})).await;
    assert_eq!(start.status, 200, "{}", start.body);
    s.stop().await;
}

/// Every change to how an account signs in is mailed to its address (OWASP ASVS 2.2.3): a
/// script in the page holding a fresh session, or a thief who knows the password, can make
/// each of them, and the owner hears of it where neither can read. A setting that does not
/// change mails nothing; past ten notices an hour a second factor switched on or a passkey
/// removed is mailed no more (a script toggling the second factor would flood the inbox), but
/// a second factor switched off, a passkey added, a password changed or reset still is, up to
/// thirty (spending the budget would silence them); and notices never spend the codes'
/// budget: the owner's reset code still arrives.
#[tokio::test]
async fn every_change_to_how_an_account_signs_in_is_mailed_to_it_within_a_budget() {
    let sink = SmtpSink::start();
    let s = TestServer::with(|c| {
        mailing(&sink, true)(c);
        c.otp.sends_per_email = 1;
    })
    .await;
    let mut tab = Client::bound(&s);
    tab.sign_in(ALICE).await;
    let mails = std::cell::Cell::new(0);
    let next = async || {
        mails.set(mails.get() + 1);
        sink.wait_for(ALICE.0, mails.get()).await
    };
    register(&mut tab).await;
    assert_eq!(
        next().await.subject(),
        "A passkey was added to your account"
    );
    for (required, subject) in [
        (true, "Your sign-ins now ask for a second factor"),
        // The same again: nothing to tell (the next message is the one after).
        (true, ""),
        (false, "Your sign-ins no longer ask for a second factor"),
    ] {
        set_second_factor(&mut tab, required).await;
        if !subject.is_empty() {
            assert_eq!(next().await.subject(), subject);
        }
    }
    let id = tab.get("/auth/passkeys").await.body["passkeys"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = tab
        .send("DELETE", &format!("/auth/passkeys/{id}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(
        next().await.subject(),
        "A passkey was removed from your account"
    );
    let change = json!({ "current_password": ALICE.1, "new_password": "another good phrase" });
    let a = tab.post("/auth/password/change", &change).await;
    assert_eq!(a.status, 204, "{}", a.body);
    let notice = next().await;
    assert_eq!(notice.subject(), "Your password was changed");
    assert!(!notice.raw.contains(ALICE.1) && !notice.raw.contains("another good phrase"));

    // Five notices so far: five more of any kind.
    for i in 0..5 {
        set_second_factor(&mut tab, i % 2 == 0).await;
        next().await;
    }
    // Past ten, a second factor switched on is mailed no more, but one switched off still is
    // (the budget spent first would hide it), and so is a passkey added, or the password
    // changed: spending the budget silences no way in.
    for (required, subject) in [
        (false, "Your sign-ins no longer ask for a second factor"),
        (true, ""),
        (false, "Your sign-ins no longer ask for a second factor"),
    ] {
        set_second_factor(&mut tab, required).await;
        if !subject.is_empty() {
            assert_eq!(next().await.subject(), subject);
        }
    }
    register(&mut tab).await;
    assert_eq!(
        next().await.subject(),
        "A passkey was added to your account"
    );
    let change =
        json!({ "current_password": "another good phrase", "new_password": "a third good phrase" });
    let a = tab.post("/auth/password/change", &change).await;
    assert_eq!(a.status, 204, "{}", a.body);
    assert_eq!(next().await.subject(), "Your password was changed");
    // The codes' budget (one message an hour here) is untouched: the reset code arrives, and
    // is the next message; then the reset's notice.
    let mut owner = Client::bound(&s);
    assert_eq!(owner.request_reset(ALICE.0).await.status, 202);
    let code = next().await.code();
    let reset = json!({ "email": ALICE.0, "code": code, "new_password": "the owner's phrase" });
    assert_eq!(owner.post("/auth/password/reset", &reset).await.status, 200);
    assert_eq!(next().await.subject(), "Your password was reset");
    // Those too stop at thirty an hour (a passkey added and removed again and again would
    // flood the inbox). Sixteen notices counted so far (one not mailed); the passkey removed,
    // the seventeenth, is not mailed either; then the second factor switched on and off, off
    // on the odd counts, to the twenty-ninth; then two password changes, the thirtieth mailed
    // and the thirty-first not (each waited for in turn: a count is taken in the background).
    let list = owner.get("/auth/passkeys").await;
    let id = list.body["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let a = owner
        .send("DELETE", &format!("/auth/passkeys/{id}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    let mut sent = 17;
    while sent < 29 {
        for required in [true, false] {
            set_second_factor(&mut owner, required).await;
            sent += 1;
            if !required {
                next().await;
            }
        }
    }
    assert_eq!(sent, 29);
    for (current, new) in [
        ("the owner's phrase", "a fourth good phrase"),
        ("a fourth good phrase", "a fifth good phrase"),
    ] {
        let change = json!({ "current_password": current, "new_password": new });
        let a = owner.post("/auth/password/change", &change).await;
        assert_eq!(a.status, 204, "{}", a.body);
        sent += 1;
        if sent == 30 {
            assert_eq!(next().await.subject(), "Your password was changed");
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        sink.to(ALICE.0).len(),
        mails.get(),
        "no message past the budget"
    );
    s.stop().await;
}

/// Removing a passkey ends the sessions it signed in, by itself or as the second factor, on
/// every instance, and only those: a script in the page adds a passkey of its own through the
/// page's fresh session and signs in with it elsewhere; when the owner removes it, those
/// sessions end (they outlived the removal before), the one removing it too if it is one.
#[tokio::test]
async fn removing_a_passkey_ends_the_sessions_it_signed_in() {
    let s = server().await;
    let mut owner = Client::bound(&s);
    owner.sign_in(ALICE).await;
    let mut intruders = register(&mut owner).await;
    let list = owner.get("/auth/passkeys").await;
    let id = list.body["passkeys"][0]["id"].as_str().unwrap().to_owned();
    let mut owners = register(&mut owner).await;
    // Two sessions by the intruder's passkey alone, one where it was the second factor.
    let (mut one, a) = passkey_login(&s, &mut intruders, &PAGE).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let (mut two, a) = passkey_login(&s, &mut intruders, &PAGE).await;
    assert_eq!(a.status, 200, "{}", a.body);
    require_second_factor(&mut owner).await;
    let mut second = Client::bound(&s);
    let a = second.login(ALICE).await;
    assert_eq!(a.error(), "second_factor_required", "{}", a.body);
    let credential = intruders.get(&a.body["passkey"], &PAGE);
    let done = finish(&mut second, "/auth/login/second-factor", &a, &credential).await;
    assert_eq!(done.status, 200, "{}", done.body);
    // And one by the owner's own passkey.
    let (mut mine, a) = passkey_login(&s, &mut owners, &PAGE).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let a = two
        .send("DELETE", &format!("/auth/passkeys/{id}"), None)
        .await;
    assert_eq!(a.status, 204, "{}", a.body);
    // The intruder's sessions end, the one that removed it too (it would otherwise belong to
    // no passkey, and live on).
    for tab in [&mut one, &mut two, &mut second] {
        assert_eq!(tab.get("/api/me").await.status, 401);
        let r = tab.refresh().await;
        assert_eq!((r.status, r.error()), (401, "invalid_grant"), "{}", r.body);
    }
    for tab in [&mut mine, &mut owner] {
        assert_eq!(tab.get("/api/me").await.status, 200);
    }
    // Nor does it sign in again.
    let (_, a) = passkey_login(&s, &mut intruders, &PAGE).await;
    assert_eq!(a.status, 401, "{}", a.body);
    s.stop().await;
}
