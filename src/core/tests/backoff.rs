//! A server refusing every refresh: the callers waiting share the outcome, and the next refresh
//! waits (10 s, doubling, at most a minute, jittered) instead of starting at once, so the client
//! never makes a storm of its own against a server already in trouble. Forcing, and a tab
//! coming back, may try sooner; the other tabs share the failure and the wait.
use super::*;

/// A page that needs the token every `every_ms` from `from` to `to` (a fetch each time), with a
/// refresh endpoint that answers every request at once with `answer`; timers fire when due.
/// Returns when each refresh request went out.
fn demand(
    s: &mut Scenario,
    from: f64,
    to: f64,
    every_ms: f64,
    answer: impl Fn() -> Result<RefreshReply, Transient>,
) -> Vec<f64> {
    let mut timers: Vec<(Id, f64)> = Vec::new();
    let mut sent = Vec::new();
    let mut next_call = from;
    loop {
        // What the last input asked for: requests answered at once, timers noted.
        let mut busy = true;
        while busy {
            busy = false;
            for c in s.take() {
                match c {
                    Command::Timer { id, ms } => timers.push((id, s.now + ms)),
                    Command::CancelTimer { id } => timers.retain(|(t, _)| *t != id),
                    Command::Request {
                        req,
                        endpoint: Endpoint::Refresh,
                        ..
                    } => {
                        sent.push(s.now);
                        s.reply(req, answer());
                        busy = true;
                    }
                    _ => {}
                }
            }
        }
        // The next thing to happen: a timer, or the page's next call.
        let first = timers
            .iter()
            .copied()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|(_, due)| *due <= next_call);
        if let Some((id, due)) = first {
            timers.retain(|(t, _)| *t != id);
            s.at(due);
            s.fire(id);
        } else if next_call < to {
            s.at(next_call);
            s.call(Call::Fetch);
            next_call += every_ms;
        } else {
            return sent;
        }
    }
}

fn within(sent: &[f64], from: f64, to: f64) -> usize {
    sent.iter().filter(|t| (from..to).contains(*t)).count()
}

#[test]
fn a_server_refusing_every_refresh_gets_a_handful_of_requests_a_minute() {
    // The token expired while the page slept; it then needs it twice a second for 3 minutes.
    for (answer, first_flight) in [
        (status(503, None), 3), // a server in trouble: the first flight retries twice, quickly
        (status(403, None), 1), // refused outside the protocol: no quick retry
    ] {
        let mut s = Scenario::new().logged_in("t1");
        let start = 700_000.0;
        let sent = demand(&mut s, start, start + 180_000.0, 500.0, || answer.clone());
        let first = within(&sent, start, start + 60_000.0);
        let second = within(&sent, start + 60_000.0, start + 120_000.0);
        let third = within(&sent, start + 120_000.0, start + 180_000.0);
        // Then one a wait of 10-15 s, 20-30 s and 40-60 s: three more in the first minute at
        // most, then one or two a minute.
        assert!(
            first <= first_flight + 3,
            "{answer:?}: {first} in the first minute {sent:?}"
        );
        assert!(
            second <= 2 && third <= 2,
            "{answer:?}: {second}, {third} {sent:?}"
        );
        assert!(third >= 1, "it keeps trying, slowly: {sent:?}");
        assert_eq!(s.m.session().phase(), Phase::Active, "never a logout");
    }
}

#[test]
fn callers_during_the_wait_are_told_the_failure_at_once_and_a_valid_token_is_still_used() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(DUE_MS);
    let a = s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(403, None));
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Refresh(403)
        })
    );
    s.take();
    // Due, but valid for 30 s more: used, with no request.
    s.at(DUE_MS + 1_000.0);
    let b = s.call(Call::Fetch);
    assert_eq!(s.sent_with(b), Some(Some("t1".into())));
    // A 401 on it needs a newer token: no refresh yet, the caller is told why.
    s.take();
    s.fetch_status(b, 401);
    assert_eq!(
        s.answer(b),
        Some(&Command::Reject {
            caller: b,
            failure: Failure::Refresh(403)
        })
    );
    assert!(s.requests(Endpoint::Refresh).is_empty());
    s.take();
    // The wait (10 to 15 s) is over: the next caller refreshes, and waits for it.
    s.at(DUE_MS + 15_000.0);
    let c = s.call(Call::Token);
    assert_eq!(s.requests(Endpoint::Refresh).len(), 1);
    assert!(s.answer(c).is_none());
}

#[test]
fn a_forced_refresh_goes_ahead_during_the_wait_and_others_join_it() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(700_000.0);
    let a = s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(403, None));
    assert!(matches!(s.answer(a), Some(Command::Reject { .. })));
    s.take();
    s.at(701_000.0);
    let f = s.call(Call::Refresh { force: true });
    let req = s.request(Endpoint::Refresh);
    // A caller arriving meanwhile joins the refresh in flight instead of being told the wait.
    let b = s.call(Call::Token);
    assert!(s.answer(b).is_none());
    s.reply(req, ok("t2"));
    assert!(matches!(s.answer(f), Some(Command::Resolve { .. })));
    assert_eq!(
        s.answer(b),
        Some(&Command::Resolve {
            caller: b,
            value: Value::Token("t2".into())
        })
    );
}

#[test]
fn a_tab_coming_back_tries_at_once_and_a_success_ends_the_waits() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(700_000.0);
    s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(503, None));
    // The first flight retries twice, quickly (a lost response), then gives up.
    for _ in 0..2 {
        let (t, _) = s
            .timers()
            .into_iter()
            .find(|(_, ms)| *ms < 10_000.0)
            .expect("a retry");
        s.fire(t);
        let req = s.request(Endpoint::Refresh);
        s.reply(req, status(503, None));
    }
    s.take();
    s.at(702_000.0);
    // The page comes back (visible, online): it tries at once.
    s.wake();
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(s.m.session().token(), Some("t2"));
    // The waits are over: the next failure, when the new token falls due, is a first one
    // again, with its quick retries.
    s.take();
    s.at(702_000.0 + DUE_MS);
    s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(503, None));
    let quick = s
        .timers()
        .iter()
        .any(|(_, ms)| (250.0..=375.0).contains(ms));
    assert!(quick, "a quick retry again");
}

#[test]
fn once_a_refresh_failed_the_next_flight_makes_one_attempt() {
    let mut s = Scenario::new().logged_in("t1");
    s.at(700_000.0);
    s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, status(403, None));
    s.take();
    s.at(716_000.0);
    s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.timers();
    s.reply(req, status(503, None));
    assert!(s.timers().is_empty(), "no quick retry");
    assert!(s.requests(Endpoint::Refresh).is_empty());
}

fn failed_peer(at_ms: f64) -> Message {
    Message::Failed { status: 503, at_ms }
}

#[test]
fn a_tab_waiting_on_another_tabs_refresh_shares_its_failure_and_its_wait() {
    let mut s = Scenario::builder().cross_tab().build().logged_in("t1");
    s.at(700_000.0);
    let a = s.call(Call::Token);
    s.lock(false); // another tab holds the lock: it is refreshing
    assert!(s.has(&Command::Lock { wait: true }));
    s.take();
    s.at(701_000.0);
    s.peer(failed_peer(700_900.0));
    assert_eq!(
        s.answer(a),
        Some(&Command::Reject {
            caller: a,
            failure: Failure::Network(Transient::Status(503))
        })
    );
    assert!(s.has(&Command::CancelLock), "no longer waits for the lock");
    assert!(!s.m.is_refreshing());
    s.take();
    // And its wait: no refresh of its own until it is over.
    s.at(705_000.0);
    let b = s.call(Call::Token);
    assert!(matches!(s.answer(b), Some(Command::Reject { .. })));
    assert!(!s.out.iter().any(|c| matches!(c, Command::Lock { .. })));
}

#[test]
fn a_failed_refresh_is_told_to_the_other_tabs_before_the_lock_is_released() {
    let mut s = Scenario::builder().cross_tab().build().logged_in("t1");
    s.at(700_000.0);
    s.call(Call::Token);
    s.lock(true);
    let req = s.request(Endpoint::Refresh);
    s.take();
    s.reply(req, status(403, None));
    let out = s.take();
    let told = out
        .iter()
        .position(|c| matches!(c, Command::Post(Message::Failed { status: 403, .. })));
    let unlocked = out.iter().position(|c| *c == Command::Unlock);
    assert!(told.is_some() && told < unlocked, "{out:?}");
}

#[test]
fn a_failure_message_that_is_old_or_from_the_future_or_about_no_session_changes_nothing() {
    for (message, at) in [
        (failed_peer(800_000.0), 700_000.0), // from the future
        (failed_peer(600_000.0), 700_000.0), // older than the longest wait
        (failed_peer(10_000.0), 20_000.0),   // older than this tab's token (logged in at 15 s)
    ] {
        let mut s = Scenario::builder().cross_tab().build();
        s.at(15_000.0);
        let mut s = s.logged_in("t1");
        s.at(at);
        s.peer(message.clone());
        // A request that needs a refresh (the token expired, or a 401): this tab goes for it.
        let a = s.call(Call::Fetch);
        if let Some(Command::Send { .. }) = s.answer(a) {
            s.take();
            s.fetch_status(a, 401);
        }
        assert!(s.has(&Command::Lock { wait: false }), "{message:?}");
    }
    // No session here: nothing to share; a login works at once.
    let mut s = Scenario::builder().cross_tab().build();
    s.at(700_000.0);
    s.peer(failed_peer(699_000.0));
    let a = s.call(Call::Login);
    let req = s.request(Endpoint::Login);
    s.reply(req, ok("t1"));
    assert!(matches!(s.answer(a), Some(Command::Resolve { .. })));
}

#[test]
fn a_server_that_cannot_be_reached_is_tried_again_at_the_next_need() {
    // No answer at all (restarting, a deploy, offline): it costs the server nothing, and the
    // session must come back with it.
    let mut s = Scenario::new().logged_in("t1");
    s.at(700_000.0);
    let a = s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, Err(Transient::Network));
    for _ in 0..2 {
        let (t, _) = s
            .timers()
            .into_iter()
            .find(|(_, ms)| *ms < 10_000.0)
            .expect("a retry");
        s.fire(t);
        let req = s.request(Endpoint::Refresh);
        s.reply(req, Err(Transient::Network));
    }
    assert!(matches!(s.answer(a), Some(Command::Reject { .. })));
    s.take();
    s.at(701_000.0);
    s.call(Call::Token);
    let req = s.request(Endpoint::Refresh);
    s.reply(req, ok("t2"));
    assert_eq!(s.m.session().token(), Some("t2"));
}
