//! Every tab natively: N machines in one simulated browser — one Web Lock, one
//! BroadcastChannel, one cookie jar that keeps the `Set-Cookie` that *arrived* last — and a
//! server that rotates refresh tokens with reuse detection. The stories tests/engines runs in
//! real engines, here in milliseconds, with every interleaving under the test's control.
//! With DPoP, one key store too (IndexedDB's one entry under the session's name) and a server
//! that binds the session to the key that signed its sign-in.
use std::collections::{HashMap, VecDeque};

use super::*;

/// One tab: its machine and what it told its callers and its app.
struct Tab {
    m: Machine,
    /// Frozen (a background tab the browser suspended): no timers, no messages, no work.
    frozen: bool,
    out: Vec<Command>,
    /// DPoP: the keys this tab's driver holds, by the core's slot (key ids).
    keys: HashMap<Slot, u32>,
    /// DPoP: the key each fetch caller's request was signed by.
    signed: Vec<(Id, Option<u32>)>,
}

/// A refresh or logout on the wire: the cookie the jar held when it left.
struct Flight {
    tab: usize,
    req: Id,
    endpoint: Endpoint,
    cookie: Option<u32>,
    /// DPoP: the key that signed it.
    key: Option<u32>,
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
    /// DPoP: the key the session is bound to, and requests signed by any other.
    bound: Option<u32>,
    wrong_key: usize,
    /// Sign-ins are refused (wrong password).
    refuse_logins: bool,
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
    dpop: bool,
    /// DPoP: the key stored under the session's name (key id, stored at), and keys made.
    store: Option<(u32, f64)>,
    keys_made: u32,
}

impl World {
    /// `n` tabs of one browser, the first logged in at time 0 (the others told by the channel).
    fn logged_in(n: usize) -> World {
        World::signed_in(n, false)
    }

    /// As [`World::logged_in`], with DPoP.
    fn logged_in_dpop(n: usize) -> World {
        World::signed_in(n, true)
    }

    fn tab(dpop: bool) -> Tab {
        let b = Scenario::builder().cross_tab();
        Tab {
            m: if dpop { b.dpop() } else { b }.build().m,
            frozen: false,
            out: Vec::new(),
            keys: HashMap::new(),
            signed: Vec::new(),
        }
    }

    fn signed_in(n: usize, dpop: bool) -> World {
        let tabs = (0..n).map(|_| World::tab(dpop)).collect();
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
            dpop,
            store: None,
            keys_made: 0,
        };
        let caller = w.call(0, Call::Login);
        w.answer(false);
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

    /// The key in slot `key` of tab `i`'s driver (a slot it does not hold: the core signed
    /// with a key it freed or never named).
    fn key_of(&self, i: usize, key: Option<Slot>) -> Option<u32> {
        key.map(|slot| {
            *self.tabs[i]
                .keys
                .get(&slot)
                .unwrap_or_else(|| panic!("tab {i} signs with slot {slot}, which it does not hold"))
        })
    }

    fn new_key(&mut self) -> u32 {
        self.keys_made += 1;
        self.keys_made
    }

    fn carry_out(&mut self, i: usize, c: Command) {
        let now = self.now;
        match c {
            Command::Request {
                req, endpoint, key, ..
            } => self.flights.push(Flight {
                tab: i,
                req,
                endpoint,
                cookie: self.jar,
                key: self.key_of(i, key),
            }),
            Command::Send { caller, key, token } => {
                let key = self.key_of(i, key);
                self.tabs[i].signed.push((caller, key));
                self.tabs[i].out.push(Command::Send {
                    caller,
                    token,
                    key: None,
                });
            }
            // The driver's IndexedDB: one entry, the session's key.
            Command::Key { op, slot, with } => match op {
                KeyOp::Load => {
                    let k = match self.store {
                        Some((k, _)) => k,
                        None => {
                            let k = self.new_key();
                            self.store = Some((k, now));
                            k
                        }
                    };
                    self.tabs[i].keys.insert(slot, k);
                }
                KeyOp::New => {
                    let k = self.new_key();
                    self.store = Some((k, now));
                    self.tabs[i].keys.insert(slot, k);
                }
                KeyOp::Given => panic!("no key brought along here"),
                KeyOp::PutBack => {
                    let (ours, live) = (
                        self.key_of(i, Some(slot)),
                        self.key_of(i, Some(with as Slot)),
                    );
                    if let (Some((k, _)), Some(live)) = (self.store, live)
                        && Some(k) == ours
                    {
                        self.store = Some((live, now));
                    }
                }
                KeyOp::Delete => {
                    if self.store.is_some_and(|(_, at)| at <= with) {
                        self.store = None;
                    }
                }
                KeyOp::Free => {
                    self.tabs[i].keys.remove(&slot);
                }
            },
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
                Endpoint::Login if self.server.refuse_logins => {
                    status(401, Some("invalid_credentials"))
                }
                Endpoint::Login => {
                    // A new session, bound to the key that signed its sign-in.
                    self.server.head += 1;
                    self.server.presented = false;
                    self.server.ended = false;
                    self.server.bound = f.key;
                    if !lose {
                        self.jar = Some(self.server.head);
                    }
                    ok(&format!("at{}", self.server.head))
                }
                Endpoint::Post => panic!("no account request here"),
            };
            // The session's requests must be signed by the key it is bound to.
            let reply = match reply {
                _ if self.dpop && f.endpoint != Endpoint::Login && f.key != self.server.bound => {
                    self.server.wrong_key += 1;
                    status(401, Some("invalid_dpop_proof"))
                }
                Ok(r) if self.dpop && r.status == 200 => Ok(RefreshReply {
                    token_type: Some("DPoP".into()),
                    ..r
                }),
                r => r,
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

impl World {
    /// The key tab `tab`'s fetch caller `id` was signed by.
    fn signed_by(&self, tab: usize, id: Id) -> Option<u32> {
        self.tabs[tab]
            .signed
            .iter()
            .find(|(c, _)| *c == id)
            .and_then(|(_, k)| *k)
    }

    /// A tab opened now (a reload, a new tab): the hint cookie there, it restores the session.
    fn open_tab(&mut self) -> usize {
        let b = Scenario::builder().cross_tab().hint(true);
        self.tabs.push(Tab {
            m: if self.dpop { b.dpop() } else { b }.build().m,
            ..World::tab(false)
        });
        let i = self.tabs.len() - 1;
        self.call(i, Call::Restore { hint: true });
        self.answer(false);
        i
    }
}

#[test]
fn with_dpop_every_tab_signs_with_the_key_the_session_is_bound_to_for_an_hour() {
    let mut w = World::logged_in_dpop(4);
    let bound = w.server.bound;
    assert!(bound.is_some());
    assert_eq!(
        w.store.map(|(k, _)| k),
        bound,
        "stored for the reloads and the others"
    );
    for k in 1..=6 {
        w.advance(k as f64 * 600_000.0);
        let id = w.call(k % 4, Call::Fetch);
        w.answer(false);
        assert_eq!(w.signed_by(k % 4, id), bound, "tab {}", k % 4);
    }
    assert_eq!(w.server.refreshes, 6, "one refresh per expiry");
    assert_eq!(w.server.wrong_key, 0);
    assert_eq!(w.keys_made, 1, "one key for the whole session");
    assert!(w.nobody_logged_out());
}

#[test]
fn a_sign_in_refused_in_one_tab_leaves_the_live_key_for_the_others_and_the_next_reload() {
    let mut w = World::logged_in_dpop(3);
    let bound = w.server.bound;
    w.server.refuse_logins = true;
    w.call(1, Call::Login);
    w.answer(false);
    // The new key was stored before it signed; refused, the live one is back in the store.
    assert_eq!(w.keys_made, 2);
    assert_eq!(w.store.map(|(k, _)| k), bound);
    // So a tab opened now restores with the key the session is bound to.
    let t = w.open_tab();
    assert!(w.tabs[t].m.session().token().is_some());
    w.advance(DUE_MS + 1_000.0);
    let id = w.call(2, Call::Fetch);
    w.answer(false);
    assert_eq!(w.signed_by(2, id), bound);
    assert_eq!(w.server.wrong_key, 0);
    assert!(w.nobody_logged_out());
}

#[test]
fn a_sign_in_in_one_tab_moves_every_tab_to_its_new_key_and_a_logout_deletes_it_once() {
    let mut w = World::logged_in_dpop(3);
    let first = w.server.bound;
    w.advance(60_000.0);
    w.call(2, Call::Login);
    w.answer(false);
    let second = w.server.bound;
    assert_ne!(second, first);
    w.advance(DUE_MS + 60_000.0);
    for t in 0..3 {
        let id = w.call(t, Call::Fetch);
        w.answer(false);
        assert_eq!(w.signed_by(t, id), second, "tab {t}");
    }
    assert_eq!(w.server.wrong_key, 0);
    // The logout is signed by the session's key; then the store is empty, and no tab reads a
    // key again (a Load now would make a new one).
    w.call(0, Call::Logout);
    w.answer(false);
    assert_eq!(w.server.wrong_key, 0, "the logout signed by the bound key");
    assert!(w.server.ended);
    assert_eq!(w.store, None);
    let made = w.keys_made;
    w.advance(2.0 * DUE_MS);
    assert_eq!(w.keys_made, made);
    // The other tabs hold no key of the ended session; the tab that ended it holds that key
    // alone, for a logout called again (its first answer lost), until the next sign-in.
    for t in 1..3 {
        assert!(w.tabs[t].keys.is_empty(), "tab {t}");
    }
    assert_eq!(
        w.tabs[0].keys.values().copied().collect::<Vec<_>>(),
        vec![second.unwrap_or(0)]
    );
}
