//! Every tab natively: N machines in one simulated browser — one Web Lock, one
//! BroadcastChannel, one cookie jar that keeps the `Set-Cookie` that *arrived* last — and a
//! server that rotates refresh tokens with reuse detection. The stories tests/engines runs in
//! real engines, here in milliseconds, with every interleaving under the test's control.
use std::collections::VecDeque;

use super::*;

/// One tab: its machine and what it told its callers and its app.
struct Tab {
    m: Machine,
    /// Frozen (a background tab the browser suspended): no timers, no messages, no work.
    frozen: bool,
    out: Vec<Command>,
}

/// A refresh or logout on the wire: the cookie the jar held when it left.
struct Flight {
    tab: usize,
    req: Id,
    endpoint: Endpoint,
    cookie: Option<u32>,
}

/// The server's view of one session: refresh tokens 1, 2, ... of one family.
#[derive(Default)]
struct Server {
    /// The newest refresh token.
    head: u32,
    /// Whether `head` was ever presented (false: its answer may have been lost).
    presented: bool,
    ended: bool,
    refreshes: usize,
    reuse: usize,
}

impl Server {
    /// The answer to a refresh presenting `cookie`, and the cookie it sets. Rotation as the
    /// reference server does it: the newest token gets a child; the parent of a child nobody
    /// ever presented (its answer was lost) gets a sibling; anything else is reuse, and ends
    /// the session.
    fn refresh(&mut self, cookie: Option<u32>) -> (Result<RefreshReply, Transient>, Option<u32>) {
        self.refreshes += 1;
        let Some(c) = cookie else {
            return (status(401, Some("invalid_grant")), None);
        };
        if self.ended {
            return (status(401, Some("invalid_grant")), None);
        }
        if c == self.head || (c + 1 == self.head && !self.presented) {
            self.head += 1;
            self.presented = false;
            return (ok(&format!("at{}", self.head)), Some(self.head));
        }
        self.ended = true;
        self.reuse += 1;
        (status(401, Some("token_reused")), None)
    }
}

pub struct World {
    tabs: Vec<Tab>,
    now: f64,
    lock_holder: Option<usize>,
    lock_queue: VecDeque<usize>,
    jar: Option<u32>,
    server: Server,
    flights: Vec<Flight>,
    timers: Vec<(f64, usize, Id)>,
    next_caller: Id,
}

impl World {
    /// `n` tabs of one browser, the first logged in at time 0 (the others told by the channel).
    fn logged_in(n: usize) -> World {
        let tabs = (0..n)
            .map(|_| Tab {
                m: Scenario::builder().cross_tab().build().m,
                frozen: false,
                out: Vec::new(),
            })
            .collect();
        let mut w = World {
            tabs,
            now: 0.0,
            lock_holder: None,
            lock_queue: VecDeque::new(),
            jar: None,
            server: Server::default(),
            flights: Vec::new(),
            timers: Vec::new(),
            next_caller: 1,
        };
        let caller = w.call(0, Call::Login);
        let f = w
            .flights
            .iter()
            .position(|f| f.endpoint == Endpoint::Login)
            .expect("a login request");
        let Flight { req, .. } = w.flights.remove(f);
        w.server.head = 1;
        w.jar = Some(1);
        w.tabs[0].m.reply(req, ok("at1"), None, w.now);
        w.settle();
        assert!(w.tabs[0].out.contains(&Command::Resolve {
            caller,
            value: Value::Unit
        }));
        for t in &w.tabs {
            assert!(t.m.session().token().is_some(), "every tab holds the token");
        }
        w
    }

    fn call(&mut self, tab: usize, call: Call) -> Id {
        let id = self.next_caller;
        self.next_caller += 1;
        self.tabs[tab].m.call(id, call, self.now);
        self.settle();
        id
    }

    /// Carries out every command of every awake tab (messages delivered, locks granted) until
    /// nothing is left to do; requests stay on the wire until [`World::answer`].
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..self.tabs.len() {
                if self.tabs[i].frozen {
                    continue;
                }
                while let Some(c) = self.tabs[i].m.poll() {
                    busy = true;
                    self.carry_out(i, c);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn carry_out(&mut self, i: usize, c: Command) {
        let now = self.now;
        match c {
            Command::Request { req, endpoint, .. } => self.flights.push(Flight {
                tab: i,
                req,
                endpoint,
                cookie: self.jar,
            }),
            Command::Abort { req } => self.flights.retain(|f| !(f.tab == i && f.req == req)),
            // A frozen tab misses what is posted meanwhile (as after the back-forward cache).
            Command::Post(m) => {
                for (j, t) in self.tabs.iter_mut().enumerate() {
                    if j != i && !t.frozen {
                        t.m.peer(m.clone(), now);
                    }
                }
            }
            Command::Lock { wait } => {
                if self.lock_holder.is_none() {
                    self.lock_holder = Some(i);
                    self.tabs[i].m.lock(true, now);
                } else if wait {
                    self.lock_queue.push_back(i);
                } else {
                    self.tabs[i].m.lock(false, now);
                }
            }
            Command::Unlock => {
                if self.lock_holder == Some(i) {
                    self.lock_holder = self.lock_queue.pop_front();
                    if let Some(next) = self.lock_holder {
                        self.tabs[next].m.lock(true, now);
                    }
                }
            }
            Command::CancelLock => self.lock_queue.retain(|t| *t != i),
            Command::Timer { id, ms } => self.timers.push((now + ms, i, id)),
            Command::CancelTimer { id } => self.timers.retain(|(_, t, x)| !(*t == i && *x == id)),
            other => self.tabs[i].out.push(other),
        }
    }

    /// The server answers every request on the wire of an awake tab, in order; `lose`: the
    /// answers are lost on the way back (the server did its work; the jar hears nothing).
    fn answer(&mut self, lose: bool) {
        while let Some(at) = self.flights.iter().position(|f| !self.tabs[f.tab].frozen) {
            let f = self.flights.remove(at);
            let reply = match f.endpoint {
                Endpoint::Refresh => {
                    if f.cookie == Some(self.server.head) {
                        self.server.presented = true;
                    }
                    let (reply, cookie) = self.server.refresh(f.cookie);
                    if !lose && cookie.is_some() {
                        self.jar = cookie;
                    }
                    reply
                }
                Endpoint::Logout => {
                    self.server.ended = true;
                    if !lose {
                        self.jar = None;
                    }
                    status(204, None)
                }
                Endpoint::Login | Endpoint::Post => panic!("no sign-in or account request here"),
            };
            let reply = if lose { Err(Transient::Network) } else { reply };
            self.tabs[f.tab].m.reply(f.req, reply, None, self.now);
            self.settle();
        }
    }

    /// Moves the clock to `ms`, firing the timers of awake tabs on the way (each followed by
    /// the server's answers).
    fn advance(&mut self, ms: f64) {
        loop {
            let due = self
                .timers
                .iter()
                .enumerate()
                .filter(|(_, (at, t, _))| *at <= ms && !self.tabs[*t].frozen)
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0))
                .map(|(k, _)| k);
            let Some(k) = due else { break };
            let (at, tab, id) = self.timers.remove(k);
            self.now = self.now.max(at);
            self.tabs[tab].m.timer(id, self.now);
            self.settle();
            self.answer(false);
        }
        self.now = ms;
    }

    /// The token caller `id` of `tab` was sent with (`Some(None)`: sent untouched).
    fn sent(&self, tab: usize, id: Id) -> Option<Option<String>> {
        self.tabs[tab].out.iter().find_map(|c| match c {
            Command::Send { caller, token, .. } if *caller == id => Some(token.clone()),
            _ => None,
        })
    }

    fn emitted(&self, tab: usize) -> Vec<Emit> {
        self.tabs[tab]
            .out
            .iter()
            .filter_map(|c| match c {
                Command::Emit(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    /// No tab was told its session ended.
    fn nobody_logged_out(&self) -> bool {
        (0..self.tabs.len()).all(|t| {
            !self.emitted(t).iter().any(|e| {
                matches!(
                    e,
                    Emit::SessionExpired(_) | Emit::TokenReused | Emit::Logout
                )
            })
        })
    }
}

#[test]
fn four_tabs_of_250_callers_at_expiry_make_one_refresh_and_all_get_its_token() {
    let mut w = World::logged_in(4);
    w.advance(DUE_MS - 1.0);
    w.now = DUE_MS;
    let callers: Vec<(usize, Id)> = (0..1000)
        .map(|k| (k % 4, w.call(k % 4, Call::Fetch)))
        .collect();
    w.answer(false);
    w.advance(DUE_MS + 10_000.0);
    assert_eq!(w.server.refreshes, 1, "one refresh for the whole browser");
    for (tab, id) in callers {
        assert_eq!(w.sent(tab, id), Some(Some("at2".into())), "tab {tab}");
    }
    assert!(w.nobody_logged_out());
}

#[test]
fn a_session_lives_an_hour_in_four_tabs_with_one_refresh_per_expiry() {
    let mut w = World::logged_in(4);
    // Each tab's own timer is due at each expiry; one of them refreshes, the others adopt.
    for k in 1..=6 {
        w.advance(k as f64 * 600_000.0);
        let id = w.call(k % 4, Call::Fetch);
        w.answer(false);
        assert_eq!(w.sent(k % 4, id), Some(Some(format!("at{}", k + 1))));
    }
    assert_eq!(w.server.refreshes, 6);
    assert!(w.nobody_logged_out());
}

#[test]
fn a_logout_in_one_tab_ends_the_session_in_every_tab() {
    let mut w = World::logged_in(3);
    w.advance(60_000.0);
    w.call(2, Call::Logout);
    w.answer(false);
    for t in 0..3 {
        assert!(w.emitted(t).contains(&Emit::Logout), "tab {t}");
        assert!(w.tabs[t].m.session().token().is_none(), "tab {t}");
    }
    // Afterwards a fetch goes out untouched, and nobody refreshes a session that is over.
    let id = w.call(0, Call::Fetch);
    w.answer(false);
    w.advance(DUE_MS + 60_000.0);
    assert_eq!(w.sent(0, id), Some(None));
    assert_eq!(w.server.refreshes, 0);
}

#[test]
fn a_refresh_answer_lost_on_the_way_back_logs_nobody_out_in_any_tab() {
    let mut w = World::logged_in(3);
    w.advance(DUE_MS - 1.0);
    w.now = DUE_MS;
    let first = w.call(0, Call::Fetch);
    // The server rotated (1 -> 2), but the answer and its Set-Cookie never arrived: the jar
    // still holds 1, which is now the parent of a child nobody presented.
    w.answer(true);
    assert_eq!(w.jar, Some(1));
    // The retry (this tab's, or another tab's need) presents 1 again: a sibling, not theft.
    let other = w.call(1, Call::Fetch);
    w.advance(DUE_MS + 2_000.0);
    w.answer(false);
    assert_eq!(w.server.reuse, 0);
    assert!(w.nobody_logged_out());
    let token = w.tabs[0].m.session().token().map(str::to_owned);
    assert_eq!(w.sent(1, other), Some(token.clone()));
    assert!(matches!(w.sent(0, first), Some(Some(_)) | None));
    for t in 0..3 {
        assert_eq!(
            w.tabs[t].m.session().token().map(str::to_owned),
            token,
            "tab {t}"
        );
    }
}

#[test]
fn a_frozen_tab_thawed_an_hour_later_takes_up_the_live_session_without_theft() {
    let mut w = World::logged_in(3);
    w.tabs[2].frozen = true;
    // The other tabs keep the session alive through six expiries while tab 2 sleeps, missing
    // every message (its refresh token, long rotated away, is not its to present: the jar's is).
    for k in 1..=6 {
        w.advance(k as f64 * 600_000.0);
        w.call(0, Call::Fetch);
        w.answer(false);
    }
    assert_eq!(w.server.head, 7);
    w.tabs[2].frozen = false;
    w.now += 1_000.0;
    w.tabs[2].m.wake(w.now);
    w.settle();
    let id = w.call(2, Call::Fetch);
    w.answer(false);
    w.advance(w.now + 5_000.0);
    assert_eq!(w.server.reuse, 0);
    assert!(w.nobody_logged_out());
    let live = w.tabs[0].m.session().token().map(str::to_owned);
    assert_eq!(
        w.sent(2, id),
        Some(live),
        "the thawed tab uses the live token"
    );
    assert!(w.server.refreshes <= 7, "at most one refresh for the thaw");
}
