//! Sign-in with an emailed code (docs/PROTOCOL.md, "Sign-in with an emailed code") against a
//! real server, a real database and a real SMTP server in its own process (aiosmtpd): every
//! code a test uses is read from the message the server delivered. Requests go straight into
//! the router (`Client::oneshot`).

mod common;

use std::time::{Duration, Instant};

use common::smtp::SmtpSink;
use common::*;
use serde_json::{Value, json};
use tokenwarden_server::Settings;

const UNKNOWN: &str = "nobody@example.com";

/// A server that delivers codes to `sink`; `configure` adjusts the settings further.
async fn server(sink: &SmtpSink, configure: impl FnOnce(&mut Settings)) -> TestServer {
    let url = sink.url();
    TestServer::with(move |s| {
        s.otp.smtp_url = Some(url);
        s.otp.ip_per_minute = 10_000;
        configure(s);
    })
    .await
}

/// Asks for a code and reads it from the `n`th message to `email`.
async fn code_for(c: &mut Client, sink: &SmtpSink, email: &str, n: usize) -> String {
    assert_eq!(c.request_code(email).await.status, 202);
    sink.wait_for(email, n).await.code()
}

/// A code that is not `code` (same length).
fn wrong(code: &str) -> String {
    let n: u64 = code.parse().expect("digits");
    let m = 10u64.pow(code.len() as u32);
    format!("{:0w$}", (n + 1) % m, w = code.len())
}

/// An account opened before the rule of one spelling per mailbox (crate::password::new_address)
/// under an address it refuses now keeps it: its codes are sent, and sign it in.
#[tokio::test]
async fn an_account_under_an_address_new_accounts_may_no_longer_have_still_signs_in_by_code() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    s.account_under_an_old_spelling().await;
    let email = OLD_SPELLING;
    let mut c = Client::new(&s).oneshot();
    let code = code_for(&mut c, &sink, email, 1).await;
    let res = c.verify_code(email, &code).await;
    assert_eq!(res.status, 200, "{}", res.body);
    s.stop().await;
}

#[tokio::test]
async fn a_mailed_code_signs_in_like_a_password_login_and_works_once() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let mut c = Client::new(&s).oneshot();
    let code = code_for(&mut c, &sink, ALICE.0, 1).await;
    assert_eq!(code.len(), 6);

    // A real message: plain text and HTML, the code in both.
    let mail = sink.to(ALICE.0).remove(0);
    assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
    assert!(mail.raw.contains("text/plain") && mail.raw.contains("text/html"));
    assert!(mail.raw.contains(&format!("<strong>{code}</strong>")));
    assert!(mail.raw.contains("Subject: Your sign-in code"));

    let res = c.verify_code(ALICE.0, &code).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["cache-control"], "no-store");
    let cookies = res.set_cookies();
    assert!(cookies.iter().any(|c| c.starts_with("tw_session=1;")));
    // Any sign-in makes the browser known to the account (docs/PROTOCOL.md, "Cookies").
    assert!(c.known.is_some(), "{cookies:?}");
    let t = c.tokens_of(&res);
    let (_, claims) = jwt_parts(&t.access);
    assert_eq!(claims["email"], ALICE.0);

    // The session works, is listed, and rotates like any other.
    assert_eq!(c.me(&t.access).await.status, 200);
    let sessions = c.get("/auth/sessions").await.body;
    let list = sessions["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], claims["sid"]);
    assert_eq!(list[0]["current"], true);
    let rotated = c.rotate(&t.refresh).await;
    assert_ne!(rotated.refresh, t.refresh);
    assert_eq!(s.stats().await["logins"], 1);

    // Used: refused, and no other code is live.
    let res = c.code_refused(ALICE.0, &code).await;
    assert_eq!((res.status, res.error()), (401, "invalid_code"));
    assert_eq!(res.body["attempts_left"], 0);
    s.stop().await;
}

#[tokio::test]
async fn three_wrong_tries_kill_the_code_and_a_new_one_arrives() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let mut c = Client::new(&s).oneshot();
    let first = code_for(&mut c, &sink, ALICE.0, 1).await;
    let bad = wrong(&first);
    for left in [2, 1, 0] {
        let res = c.code_refused(ALICE.0, &bad).await;
        assert_eq!(res.status, 401);
        assert_eq!(res.error(), "invalid_code");
        assert_eq!(res.body["attempts_left"], left);
    }
    // The third wrong try sent a fresh code.
    let second = sink.wait_for(ALICE.0, 2).await.code();
    // The first code is dead even though it is right: to the server it is a wrong guess at
    // the second one.
    if first != second {
        let res = c.code_refused(ALICE.0, &first).await;
        assert_eq!(res.error(), "invalid_code");
        assert_eq!(res.body["attempts_left"], 2);
    }
    assert_eq!(c.verify_code(ALICE.0, &second).await.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn after_a_resend_the_old_and_the_new_code_both_work_until_one_signs_in() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let mut c = Client::new(&s).oneshot();
    // Alice signs in with the old code, Bob with the new one.
    for (who, use_old) in [(ALICE.0, true), (BOB.0, false)] {
        let old = code_for(&mut c, &sink, who, 1).await;
        let new = code_for(&mut c, &sink, who, 2).await;
        assert_ne!(old, new, "a resend sends a different code");
        let (used, other) = if use_old { (&old, &new) } else { (&new, &old) };
        assert_eq!(c.verify_code(who, used).await.status, 200, "{who}");
        for code in [other, used] {
            let res = c.code_refused(who, code).await;
            assert_eq!(res.error(), "invalid_code", "{who}");
            assert_eq!(res.body["attempts_left"], 0);
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn a_code_past_its_lifetime_is_refused() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.ttl_secs = 120).await;
    let mut c = Client::new(&s).oneshot();
    let code = code_for(&mut c, &sink, ALICE.0, 1).await;
    assert!(sink.to(ALICE.0)[0].raw.contains("works for 2 minutes"));
    s.state.clock.advance(121);
    let res = c.code_refused(ALICE.0, &code).await;
    assert_eq!((res.status, res.error()), (401, "code_expired"));
    // A new code works again.
    let fresh = code_for(&mut c, &sink, ALICE.0, 2).await;
    assert_eq!(c.verify_code(ALICE.0, &fresh).await.status, 200);
    s.stop().await;
}

/// Status, the headers that are not about time, and the body's bytes.
fn answer(res: &Answer) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<(String, String)> = res
        .headers
        .iter()
        .filter(|(k, _)| !["date", "dpop-nonce"].contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    (res.status, headers, res.bytes.clone())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test]
async fn known_and_unknown_emails_get_byte_identical_answers() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let mut c = Client::new(&s).oneshot();
    let known = answer(&c.request_code(ALICE.0).await);
    let unknown = answer(&c.request_code(UNKNOWN).await);
    assert_eq!(known.0, 202);
    assert_eq!(known, unknown);
    assert_eq!(known.2, br#"{"expires_in":600}"#);

    // Only the account gets a message.
    sink.wait_for(ALICE.0, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.all().len(),
        1,
        "nothing is mailed to an address without an account"
    );

    // Verify cannot tell them apart either: the unknown address has codes, just never mailed.
    let code = sink.wait_for(ALICE.0, 1).await.code();
    let bad = wrong(&code);
    let k = c.code_refused(ALICE.0, &bad).await;
    let u = c.code_refused(UNKNOWN, &bad).await;
    assert_eq!(
        (k.status, &k.body),
        (u.status, &u.body),
        "invalid_code, same attempts_left"
    );
    assert_eq!(k.error(), "invalid_code");
    s.stop().await;
}

#[tokio::test]
async fn the_answer_does_not_wait_for_the_account_lookup_or_the_mail() {
    // An SMTP server that accepts connections and never says a word: a server that mailed
    // before answering would hang on it (lettre gives up after 15 s) for known addresses only.
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", tarpit.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = tarpit.accept().await {
            open.push(conn);
        }
    });
    let s = TestServer::with(move |s| {
        s.otp.smtp_url = Some(url);
        s.otp.ip_per_minute = 10_000;
        s.otp.sends_per_email = 100;
    })
    .await;
    let mut c = Client::new(&s).oneshot();
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for i in 0..15 {
        for (email, times) in [(ALICE.0, &mut k), (UNKNOWN, &mut u)] {
            let t = Instant::now();
            assert_eq!(c.request_code(email).await.status, 202, "round {i}");
            times.push(t.elapsed());
        }
    }
    let (k, u) = (median(k), median(u));
    assert!(
        k < Duration::from_secs(1),
        "known {k:?}: the answer waited for the mail"
    );
    assert!(
        k.abs_diff(u) < Duration::from_millis(20),
        "known {k:?}, unknown {u:?}"
    );
    held.abort();
    s.stop().await;
}

/// A relay that holds every connection it is given: the server opens at most 8 to it whatever
/// the number of codes asked for (it opened one per code: a flood of sign-ups, each held 15 s a
/// step by a slow relay, until the relay's own cap refused everyone's mail).
#[tokio::test]
async fn at_most_eight_messages_are_sent_at_once_the_others_wait_their_turn() {
    let tarpit = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", tarpit.local_addr().unwrap());
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = opened.clone();
    // Told to, it closes the connections it holds: their sends fail, and end.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let told = release.clone();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            tokio::select! {
                accepted = tarpit.accept() => {
                    let Ok((conn, _)) = accepted else { return };
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    open.push(conn);
                }
                () = told.notified() => open.clear(),
            }
        }
    });
    let reaches = async |n: usize| {
        let since = Instant::now();
        while opened.load(std::sync::atomic::Ordering::SeqCst) < n && since.elapsed().as_secs() < 10
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let s = TestServer::with(move |s| {
        s.otp.smtp_url = Some(url);
        s.otp.ip_per_minute = 10_000;
        s.otp.sends_per_email = 100;
    })
    .await;
    let mut c = Client::new(&s).oneshot();
    for i in 0..20 {
        assert_eq!(c.request_code(ALICE.0).await.status, 202, "code {i}");
    }
    // Every send has started by now; the ones past eight wait for a connection to end.
    reaches(8).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), 8);
    // They waited, not dropped: as the relay lets the first eight go, the next ones connect,
    // all twenty in the end.
    for after in [16, 20] {
        release.notify_one();
        reaches(after).await;
        assert_eq!(opened.load(std::sync::atomic::Ordering::SeqCst), after);
    }
    held.abort();
    s.stop().await;
}

#[tokio::test]
async fn send_limits_answer_429_with_retry_after_for_known_and_unknown_alike() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let mut c = Client::new(&s).oneshot();
    let mut last = Vec::new();
    for email in [ALICE.0, UNKNOWN] {
        for i in 0..5 {
            assert_eq!(c.request_code(email).await.status, 202, "{email} send {i}");
        }
        let res = c.request_code(email).await;
        assert_eq!(res.status, 429);
        let retry = res.retry_after();
        assert!((1..=3600).contains(&retry), "{retry}");
        let (status, mut headers, body) = answer(&res);
        headers.retain(|(k, _)| k != "retry-after");
        last.push((status, headers, body));
    }
    assert_eq!(last[0], last[1]);
    assert_eq!(
        serde_json::from_slice::<Value>(&last[0].2).unwrap()["error"],
        "too_many_attempts"
    );
    // Per client address too, for any emails.
    let sink2 = SmtpSink::start();
    let s2 = server(&sink2, |s| s.otp.ip_per_minute = 3).await;
    s2.state.clock.freeze(); // one wall-clock minute for the four requests
    let mut c2 = Client::new(&s2).oneshot();
    for i in 0..3 {
        let email = format!("user{i}@example.com");
        assert_eq!(c2.request_code(&email).await.status, 202);
    }
    let res = c2.request_code("user9@example.com").await;
    assert_eq!(res.status, 429);
    assert!(res.headers.contains_key("retry-after"));
    s.stop().await;
    s2.stop().await;
}

#[tokio::test]
async fn parallel_wrong_guesses_compare_a_code_at_most_three_times() {
    let sink = SmtpSink::start();
    // One send allowed: the third wrong try cannot send a new code, so every later guess
    // meets no live code at all.
    let s = server(&sink, |s| {
        s.otp.sends_per_email = 1;
        s.otp.verifies_per_email = 1_000;
    })
    .await;
    let mut c = Client::new(&s).oneshot();
    let code = code_for(&mut c, &sink, ALICE.0, 1).await;
    let bad = wrong(&code);
    let mut guessers = c.tabs(40);
    let guesses = guessers.iter_mut().map(|g| g.code_refused(ALICE.0, &bad));
    let answers = futures::future::join_all(guesses).await;
    let mut left: Vec<i64> = answers
        .iter()
        .map(|res| {
            assert_eq!(res.status, 401);
            assert_eq!(res.error(), "invalid_code");
            res.body["attempts_left"].as_i64().unwrap()
        })
        .collect();
    left.sort();
    // Exactly one guess saw 2 tries left and one saw 1: three comparisons, then none.
    assert_eq!(left.iter().filter(|n| **n == 2).count(), 1, "{left:?}");
    assert_eq!(left.iter().filter(|n| **n == 1).count(), 1, "{left:?}");
    // The right code is dead now.
    assert_eq!(c.code_refused(ALICE.0, &code).await.error(), "invalid_code");
    // And no new code was sent (over the send limit).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.to(ALICE.0).len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn verifications_are_capped_per_email_whoever_sends_them() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| {
        s.otp.verifies_per_email = 4;
        s.proxies.trusted = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let c = Client::new(&s).oneshot();
    let code = code_for(&mut c.clone(), &sink, ALICE.0, 1).await;
    let bad = wrong(&code);
    // Four clients, one wrong guess each, two of them at a reset code (which opens the account
    // as well: one count for both).
    for i in 0..4 {
        let mut guesser = c.clone().at(&format!("198.51.100.{i}"));
        let res = if i % 2 == 0 {
            guesser.verify_code(ALICE.0, &bad).await
        } else {
            let reset =
                json!({ "email": ALICE.0, "code": bad, "new_password": "a brand new phrase 1" });
            guesser.post("/auth/password/reset", &reset).await
        };
        assert_eq!(res.status, 401, "guess {i}: {}", res.body);
    }
    // A fifth client, even with the right code (one try left): 429 until the window ends.
    let res = c
        .clone()
        .at("203.0.113.7")
        .verify_code(ALICE.0, &code)
        .await;
    assert_eq!(res.status, 429);
    let retry = res.retry_after();
    assert!(retry > 3600, "the window is a day: {retry}");
    assert_eq!(res.error(), "too_many_attempts");
    s.stop().await;
}

#[tokio::test]
async fn both_endpoints_require_the_csrf_header_and_refuse_bad_input_with_400() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    // A cross-site form: no CSRF header.
    let mut forged = Client::new(&s).oneshot();
    forged.csrf = None;
    for (path, body) in [
        ("/auth/otp/start", json!({ "email": ALICE.0 })),
        (
            "/auth/otp/verify",
            json!({ "email": ALICE.0, "code": "123456" }),
        ),
    ] {
        let res = forged.post(path, &body).await;
        assert_eq!(res.status, 403, "{path}");
        assert_eq!(res.error(), "csrf_header_missing");
    }
    let mut c = Client::new(&s).oneshot();
    let bad = [
        ("/auth/otp/start", json!({ "email": "not an address" })),
        // Another spelling of Alice's mailbox (a quoted local part), one with an invisible
        // character: another account, another count of codes, the same inbox.
        (
            "/auth/otp/start",
            json!({ "email": "\"alice\"@example.com" }),
        ),
        (
            "/auth/otp/start",
            json!({ "email": "ali\u{200b}ce@example.com" }),
        ),
        ("/auth/otp/start", json!({ "email": 5 })),
        ("/auth/otp/start", json!({})),
        (
            "/auth/otp/start",
            json!({ "email": format!("{}@example.com", "a".repeat(300)) }),
        ),
        (
            "/auth/otp/verify",
            json!({ "email": ALICE.0, "code": "12345" }),
        ),
        (
            "/auth/otp/verify",
            json!({ "email": ALICE.0, "code": "12345a" }),
        ),
        (
            "/auth/otp/verify",
            json!({ "email": ALICE.0, "code": "１２３４５６" }),
        ),
        ("/auth/otp/verify", json!({ "email": ALICE.0 })),
    ];
    for (path, body) in bad {
        let res = c.post(path, &body).await;
        assert_eq!(res.status, 400, "{path} {body}");
        assert_eq!(res.error(), "invalid_request");
    }
    s.stop().await;
    // Without a way to deliver codes, the endpoints do not exist.
    let plain = TestServer::start().await;
    let res = Client::new(&plain).oneshot().request_code(ALICE.0).await;
    assert_eq!(res.status, 404);
    plain.stop().await;
}

#[tokio::test]
async fn sign_up_by_code_is_off_by_default_and_creates_the_account_when_on() {
    let sink = SmtpSink::start();
    let off = server(&sink, |_| {}).await;
    let res = Client::new(&off).oneshot().request_code(UNKNOWN).await;
    assert_eq!(res.status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.to(UNKNOWN).is_empty());
    off.stop().await;

    let on = server(&sink, |s| s.otp.signup = true).await;
    let mut c = Client::new(&on).oneshot();
    let code = code_for(&mut c, &sink, UNKNOWN, 1).await;
    let res = c.verify_code(UNKNOWN, &code).await;
    assert_eq!(res.status, 200);
    let t = c.tokens_of(&res);
    assert_eq!(c.me(&t.access).await.body["email"], UNKNOWN);
    on.stop().await;
}

#[tokio::test]
async fn a_code_with_a_dpop_proof_binds_the_session_to_its_key() {
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    // The code is asked for without a proof.
    let code = code_for(&mut Client::new(&s).oneshot(), &sink, ALICE.0, 1).await;
    let mut c = Client::bound(&s).oneshot();
    let body = json!({ "email": ALICE.0, "code": code });
    // Without the nonce: 400 use_dpop_nonce, and no attempt used.
    let res = c
        .send_once("POST", "/auth/otp/verify", Some(&body), &[])
        .await;
    assert_eq!(res.status, 400);
    assert!(res.headers.contains_key("dpop-nonce"));
    assert_eq!(res.error(), "use_dpop_nonce");
    // A proof for the login path is not one for this path.
    let wrong_htu = c.proof("POST", "/auth/login", None).unwrap();
    let res = c
        .send_once(
            "POST",
            "/auth/otp/verify",
            Some(&body),
            &[("dpop", &wrong_htu)],
        )
        .await;
    assert_eq!(res.error(), "invalid_dpop_proof");
    let res = c
        .send_once("POST", "/auth/otp/verify", Some(&body), &[])
        .await;
    assert_eq!(res.status, 200);
    // DPoP, bound to the client's key (`tokens_of` checks both).
    c.tokens_of(&res);
    s.stop().await;
}

#[tokio::test]
async fn codes_never_reach_the_log() {
    let log = Captured::install();
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.digits = 8).await;
    let mut c = Client::new(&s).oneshot();
    let first = code_for(&mut c, &sink, ALICE.0, 1).await;
    let bad = wrong(&first);
    for _ in 0..3 {
        c.code_refused(ALICE.0, &bad).await;
    }
    let second = sink.wait_for(ALICE.0, 2).await.code();
    assert_eq!(c.verify_code(ALICE.0, &second).await.status, 200);
    // The task that mails a code logs `otp_sent` when its SMTP conversation has ended, which
    // can be after the sink handed the mail over: give both tasks the time to finish.
    let logged = || log.text().matches("otp_sent").count();
    for _ in 0..100 {
        if logged() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.stop().await;
    let text = log.text();
    assert!(text.contains("otp_sent"), "the log is captured: {text}");
    assert!(text.contains("otp_wrong_code"));
    for code in [&first, &second] {
        assert!(!text.contains(code.as_str()), "code {code} in the log");
    }
}

#[tokio::test]
async fn the_demo_mailbox_exists_only_in_demo_mode_without_smtp() {
    // --demo, no SMTP server: the code goes to the demo mailbox, which the page can read.
    let demo = TestServer::with(|s| s.demo = true).await;
    let mut c = Client::new(&demo).oneshot();
    assert_eq!(c.request_code(ALICE.0).await.status, 202);
    let mut messages = Value::Null;
    for _ in 0..100 {
        let res = c.get("/demo/mailbox?email=Alice@Example.com").await;
        assert_eq!(res.status, 200);
        messages = res.body["messages"].clone();
        if messages.as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = messages[0]["code"].as_str().expect("a code").to_owned();
    assert_eq!(messages[0]["to"], ALICE.0);
    // Unknown addresses get nothing there either.
    assert_eq!(c.request_code(UNKNOWN).await.status, 202);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = c.get(&format!("/demo/mailbox?email={UNKNOWN}")).await;
    assert_eq!(res.body["messages"], json!([]));
    // Only to a page that asked for this machine by name, not through a proxy: a reverse proxy
    // on this machine makes every client a loopback one, and a page of another site that
    // rebinds its name to 127.0.0.1 sends its own name.
    let mailbox = "/demo/mailbox?email=alice@example.com";
    for via in [
        ("host", "evil.example"),
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        let res = c.send_once("GET", mailbox, None, &[via]).await;
        assert_eq!(res.status, 404, "{via:?}");
    }
    let res = c
        .send_once("GET", mailbox, None, &[("host", "localhost:8080")])
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(c.verify_code(ALICE.0, &code).await.status, 200);
    demo.stop().await;

    // Not in demo mode, and not when a real SMTP server delivers.
    let sink = SmtpSink::start();
    for s in [
        TestServer::start().await,
        server(&sink, |s| s.demo = true).await,
    ] {
        let mut c = Client::new(&s).oneshot();
        let res = c.get(&format!("/demo/mailbox?email={}", ALICE.0)).await;
        assert_eq!(res.status, 404);
        s.stop().await;
    }
}

/// Account pre-hijacking: a stranger registered the victim's address in the old app (which
/// never checked addresses) with a password of their own, and the account came here by an
/// import line without `email_verified` (or a legacy backend's word). When the address's owner
/// signs in by it (a code), the stranger's password stops working and their sessions end. A
/// code that only verifies the address, sent outside the account's sessions, ends nothing (it
/// may be the password's own holder, not signed in yet) and the owner's first code sign-in
/// still does; sent in a session the password opened, it shows that whoever holds the password
/// holds the mailbox, and the password is theirs for good. A password the operator set
/// (`users add`) stays.
#[tokio::test]
async fn a_code_from_the_address_ends_a_password_a_stranger_chose_and_their_sessions() {
    const PASSWORD: &str = "strangers-password-1";
    let sink = SmtpSink::start();
    let s = server(&sink, |_| {}).await;
    let hash = tokenwarden_server::password::hash_blocking(PASSWORD).unwrap();
    let lines: String = [
        "victim@example.com",
        "other@example.com",
        "mine@example.com",
    ]
    .iter()
    .map(|e| format!("{}\n", json!({ "email": e, "password_hash": hash })))
    .collect();
    let report =
        tokenwarden_server::users::import(&s.state.store, lines.as_bytes(), false, s.state.now())
            .await
            .unwrap();
    assert_eq!(report.imported, 3);
    let code_sign_in = |email: &'static str, n: usize| {
        let (s, sink) = (&s, &sink);
        async move {
            let mut owner = Client::new(s).oneshot();
            let code = code_for(&mut owner, sink, email, n).await;
            let res = owner.verify_code(email, &code).await;
            assert_eq!(res.status, 200, "{}", res.body);
            let mine = owner.tokens_of(&res);
            // The owner's own session lives on.
            assert_eq!(owner.me(&mine.access).await.status, 200);
            owner.rotate(&mine.refresh).await;
        }
    };
    let shut_out = |email: &'static str, theirs: Tokens| {
        let s = &s;
        async move {
            let mut stranger = Client::new(s).oneshot();
            let login = stranger.login((email, PASSWORD)).await;
            assert_eq!(
                (login.status, login.error()),
                (401, "invalid_credentials"),
                "{email}"
            );
            assert_eq!(
                stranger.refresh_error(&theirs.refresh).await,
                "invalid_grant"
            );
            assert_eq!(stranger.me(&theirs.access).await.status, 401, "{email}");
        }
    };
    let verify = |c: &mut Client, email: &'static str, n: usize| {
        let sink = &sink;
        let mut c = c.clone();
        async move {
            let start = json!({ "email": email });
            assert_eq!(c.post("/auth/email/verify/start", &start).await.status, 202);
            let code = sink.wait_for(email, n).await.code();
            let res = c
                .post(
                    "/auth/email/verify",
                    &json!({ "email": email, "code": code }),
                )
                .await;
            assert_eq!(res.status, 204, "{}", res.body);
        }
    };

    // The owner signs in by a code: the stranger is out.
    let mut stranger = Client::new(&s).oneshot();
    let theirs = stranger.sign_in(("victim@example.com", PASSWORD)).await;
    code_sign_in("victim@example.com", 1).await;
    shut_out("victim@example.com", theirs).await;

    // The address verified outside any session: the password goes on (its holder may be the
    // owner, about to sign in with it)... until the owner's first code sign-in.
    let mut stranger = Client::new(&s).oneshot();
    let theirs = stranger.sign_in(("other@example.com", PASSWORD)).await;
    verify(&mut Client::new(&s).oneshot(), "other@example.com", 1).await;
    assert_eq!(
        Client::new(&s)
            .oneshot()
            .login(("other@example.com", PASSWORD))
            .await
            .status,
        200
    );
    code_sign_in("other@example.com", 2).await;
    shut_out("other@example.com", theirs).await;

    // Verified in a session the password opened: the password and the mailbox are one
    // person's, and a code sign-in later ends nothing.
    let mut holder = Client::new(&s).oneshot();
    holder.sign_in(("mine@example.com", PASSWORD)).await;
    verify(&mut holder, "mine@example.com", 1).await;
    code_sign_in("mine@example.com", 2).await;
    assert_eq!(
        Client::new(&s)
            .oneshot()
            .login(("mine@example.com", PASSWORD))
            .await
            .status,
        200
    );

    // Alice's password was set by the operator (`users add`): her first code keeps it.
    let mut alice = Client::new(&s).oneshot();
    let code = code_for(&mut alice, &sink, ALICE.0, 1).await;
    assert_eq!(alice.verify_code(ALICE.0, &code).await.status, 200);
    assert_eq!(Client::new(&s).oneshot().login(ALICE).await.status, 200);
    s.stop().await;
}

/// Anyone who knows an address can spend its daily count of sign-in code guesses; the
/// owner's password sign-in completed by an emailed code has a count of its own, so that does
/// not stop it (the price: one who has the password may guess as many codes again).
#[tokio::test]
async fn spent_sign_in_code_guesses_do_not_stop_the_owners_second_factor() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.verifies_per_email = 2).await;
    let mut tab = Client::bound(&s).oneshot();
    assert_eq!(tab.login(ALICE).await.status, 200);
    let on = json!({ "required": true });
    assert_eq!(
        tab.send("PUT", "/auth/second-factor", Some(&on))
            .await
            .status,
        204
    );
    // The owner heard of it.
    let notice = sink.wait_for(ALICE.0, 1).await.subject();
    assert_eq!(notice, "Your sign-ins now ask for a second factor");
    // Two wrong sign-in codes (fewer than the three that end a code and mail a new one): the
    // day's count for the address.
    let mut guesser = Client::new(&s).oneshot();
    let code = code_for(&mut guesser, &sink, ALICE.0, 2).await;
    for _ in 0..2 {
        assert_eq!(
            guesser.verify_code(ALICE.0, &wrong(&code)).await.status,
            401
        );
    }
    assert_eq!(guesser.verify_code(ALICE.0, &code).await.status, 429);
    // The owner: the password, then the second factor's code.
    let mut owner = Client::bound(&s).oneshot();
    let a = owner.login(ALICE).await;
    assert_eq!(
        (a.error(), &a.body["email_code"]),
        ("second_factor_required", &json!(true)),
        "{}",
        a.body
    );
    let second = sink.wait_for(ALICE.0, 3).await.code();
    let body = json!({ "ceremony": a.body["ceremony"], "code": second });
    let res = owner.post("/auth/login/second-factor", &body).await;
    assert_eq!(res.status, 200, "{}", res.body);
    s.stop().await;
}

/// The owner's sign-in by code takes back its own attempt only: a guesser who spent most of
/// the address's count before it has no more after it (it cleared the count: each of the
/// owner's sign-ins gave a guesser the whole count again).
#[tokio::test]
async fn the_owner_s_sign_in_by_code_gives_a_guesser_no_fresh_count() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.verifies_per_email = 4).await;
    let mut guesser = Client::new(&s).oneshot();
    let mut owner = Client::bound(&s).oneshot();
    let code = code_for(&mut owner, &sink, ALICE.0, 1).await;
    for _ in 0..2 {
        let res = guesser.verify_code(ALICE.0, &wrong(&code)).await;
        assert_eq!(res.status, 401, "{}", res.body);
    }
    assert_eq!(owner.verify_code(ALICE.0, &code).await.status, 200);
    // Two of the four are left; the third guess is refused before it is compared.
    let code = code_for(&mut guesser, &sink, ALICE.0, 2).await;
    for _ in 0..2 {
        let res = guesser.verify_code(ALICE.0, &wrong(&code)).await;
        assert_eq!(res.status, 401, "{}", res.body);
    }
    let res = guesser.verify_code(ALICE.0, &code).await;
    assert_eq!((res.status, res.error()), (429, "too_many_attempts"));
    s.stop().await;
}

/// With sign-ups by password and by code both on, a sign-up's code also opens an account its
/// owner does not have yet: its guesses count with the sign-in codes' (they had a count of
/// their own, which doubled a guesser's odds of opening that account first).
#[tokio::test]
async fn sign_up_codes_share_the_address_s_count_with_sign_in_codes() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| {
        s.otp.verifies_per_email = 2;
        s.otp.signup = true;
        s.signup_password = true;
    })
    .await;
    let victim = "not-yet@example.com";
    let mut guesser = Client::bound(&s).oneshot();
    let signup = json!({ "email": victim, "password": "the guesser's own phrase" });
    assert_eq!(guesser.post("/auth/signup", &signup).await.status, 202);
    let code = sink.wait_for(victim, 1).await.code();
    for _ in 0..2 {
        let guess = json!({ "email": victim, "code": wrong(&code) });
        let res = guesser.post("/auth/signup/verify", &guess).await;
        assert_eq!(res.status, 401, "{}", res.body);
    }
    // The address's count is spent: a sign-in code, even the right one, is not compared.
    let code = code_for(&mut guesser, &sink, victim, 2).await;
    let res = guesser.verify_code(victim, &code).await;
    assert_eq!((res.status, res.error()), (429, "too_many_attempts"));
    s.stop().await;
}

/// At most `max_live` codes of an address are live however many are mailed at once: on
/// PostgreSQL, inserts side by side each revoked only the codes committed before them (3 live
/// codes bound a guess's odds: PROTOCOL.md).
#[tokio::test]
async fn codes_mailed_at_once_leave_no_more_live_than_the_limit() {
    use tokenwarden_server::store::CodePurpose;
    let s = TestServer::start().await;
    let store = &s.state.store;
    let now = s.state.now();
    for round in 0..5 {
        let inserts = (0..8).map(|i| {
            let id = format!("c{round}-{i}");
            async move {
                store
                    .insert_code(CodePurpose::SignIn, &id, ALICE.0, "h", now, now + 600, 3, 3)
                    .await
                    .unwrap()
            }
        });
        futures::future::join_all(inserts).await;
        let live = store
            .live_codes(CodePurpose::SignIn, ALICE.0, now, 3)
            .await
            .unwrap();
        assert!(live <= 3, "round {round}: {live} live codes");
    }
    s.stop().await;
}

/// With sign-ups by code, a code for an address spelled as no new account may be (its domain in
/// punycode: `bücher.de`'s inbox, under a spelling of its own) was mailed, with a send budget of
/// its own, though it could open nothing: a flood of that inbox beside its real spelling's.
#[tokio::test]
async fn a_code_for_another_spelling_of_a_mailbox_is_not_mailed() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.signup = true).await;
    let mut c = Client::new(&s).oneshot();
    let other = "victim@xn--bcher-kva.de";
    assert_eq!(c.request_code(other).await.status, 202);
    // Answered as any address is; then a code that is mailed, after it.
    assert_eq!(c.request_code("newcomer@example.com").await.status, 202);
    sink.wait_for("newcomer@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.to(other).is_empty(), "mailed to {other}");
    s.stop().await;
}

/// An address whose domain is not ASCII (`bücher.de`, the spelling new accounts take) is mailed
/// at its domain's ASCII name: the mail went out under the Unicode one, which a relay without
/// SMTPUTF8 (as this sink, as many) refuses, so such an account never got a code.
#[tokio::test]
async fn a_code_for_an_address_at_a_unicode_domain_is_mailed_to_its_ascii_name() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| s.otp.signup = true).await;
    let mut c = Client::bound(&s).oneshot();
    assert_eq!(c.request_code("newcomer@bücher.de").await.status, 202);
    let code = sink.wait_for("newcomer@xn--bcher-kva.de", 1).await.code();
    let res = c.verify_code("newcomer@bücher.de", &code).await;
    assert_eq!(res.status, 200, "{}", res.body);
    s.stop().await;
}

/// Each spelling of one inbox had a send budget of its own: `victim+1@…`, `victim+2@…`, … (most
/// mail services deliver them all to victim@) flooded one inbox from a few addresses.
#[tokio::test]
async fn tagged_spellings_of_one_inbox_share_its_send_budget() {
    let sink = SmtpSink::start();
    let s = server(&sink, |s| {
        s.otp.signup = true;
        s.proxies.trusted = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let c = Client::new(&s).oneshot();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for i in 0..12 {
        let mut from = c.clone().at(&format!("198.51.100.{i}"));
        let to = format!("victim+{i}@example.com");
        match from.request_code(&to).await.status {
            202 => accepted.push(to),
            429 => refused += 1,
            other => panic!("{to}: {other}"),
        }
    }
    // Each accepted one is mailed (after the answer: waited for, not slept on).
    for to in &accepted {
        sink.wait_for(to, 1).await;
    }
    let mailed = sink
        .all()
        .into_iter()
        .filter(|m| m.to().starts_with("victim+"))
        .count();
    assert_eq!(mailed, 5, "one inbox's budget: 5 an hour");
    assert_eq!(refused, 7);
    s.stop().await;
}
