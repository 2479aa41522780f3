//! The whole client flow as one sans-IO state machine (after ureq-proto's client): the driver
//! (`src/web/`) feeds it inputs — a caller's call, a response, a lock granted, a peer's
//! message, a timer — and carries out the [`Command`]s it returns. It never waits, never
//! reads a clock (time is an argument) and never touches JavaScript.
//!
//! ```text
//!  call(Fetch | Token | Refresh | Restore)          call(Login)        call(Logout)
//!        │                                              │                   │ forget token,
//!        ▼  session.check(now)                          ▼                   │ Post logout,
//!  ┌───────────┐ fresh / anonymous ─▶ Send/Resolve   Request(login) ─▶     │ Emit logout,
//!  │  waiting  │                                     reply: token → Post   ▼ Request(logout)
//!  └───────────┘ due ──▶ join the one Flight                 token, Emit login, Resolve
//!        ▲                   │ (start it if none)
//!        │                   ▼
//!        │   ┌─────────────────────────────────────────────────────────────────────────┐
//!        │   │ Flight (one per tab; with crossTab one per browser via the lock)        │
//!        │   │  phase Maybe: Post ask ─▶ Asking ──timer 150 ms──┐                      │
//!        │   │                            │ peer token          ▼                      │
//!        │   │                            │          Lock{ifAvailable} + timer         │
//!        │   │                            │            granted │   │ taken            │
//!        │   │                            │                    │   ▼                  │
//!        │   │                            │                    │ Lock{wait} ──timer──▶ timeout:
//!        │   │                            │                    │   │ granted         NetworkError
//!        │   │                            │         check again│   ▼                  │
//!        │   │                            │◀── newer token ────┤ Handoff ─timer 300 ms┐│
//!        │   │                            │                    ▼                     ▼│
//!        │   │                            │            Sending(Request refresh + timeout)
//!        │   │                            │          5xx/network/timeout ─▶ Backoff 250 ms,
//!        │   │                            │                  1 s ─▶ Sending; then give up
//!        │   │                            ▼                    │ reply
//!        │   │                 settled by peer        settle: token → Post token, Emit refresh
//!        │   │                            │                 ended → Post ended, Emit
//!        │   │                            └──── Unlock ◀─────┘  sessionExpired (tokenReused)
//!        │   └─────────────────────────────────────────────────────────────────────────┘
//!        └── every waiter is served again: token → Send/Resolve; ended → Reject
//!
//!  fetch_status(caller, 401): session.after_unauthorized → a newer token (joining a refresh
//!  if needed) and exactly one replay; the replay's answer is returned, whatever it is.
//!  peer(Token | Logout | Ended): adopted only if newer than what this tab holds and than its
//!  last end (`Session::adopt`, `Session::end_if_older`); `Ask` answered with a fresh token.
//!  wake (visible, online, pageshow): a due token is refreshed once, before anyone asks.
//! ```

use super::reply::{
    COOLDOWN_CAP_MS, RefreshOutcome, RefreshReply, Transient, backoff_ms, cooldown_ms,
    is_token_shaped,
};
use super::session::{Check, Handoff, Phase, Replay, Session, Settled};
use crate::proto::{ClientCode, EndReason, ErrorCode};

#[path = "keys.rs"]
mod keys;
#[path = "nonces.rs"]
mod nonces;
use nonces::Server;

pub use super::commands::{
    Call, Command, Config, Emit, Endpoint, Failure, Id, KeyOp, Message, Slot, Value,
};

/// How long a tab with no token waits for a peer's answer to `ask` before refreshing itself.
pub const ASK_WAIT_MS: f64 = 150.0;
/// How long a tab that waited for the lock waits for the holder's token before refreshing
/// itself (the holder may have failed or been closed).
pub const HANDOFF_WAIT_MS: f64 = 300.0;
/// How long a tab that refreshed keeps the lock after posting its token. A tab that needs a
/// refresh a moment later, before the message reached it, then finds the lock taken, waits,
/// and finds the token on arrival instead of refreshing again.
pub const LOCK_HOLD_MS: f64 = 100.0;
/// A peer's message may claim a time at most this far ahead of ours (clock granularity).
pub const PEER_CLOCK_SLACK_MS: f64 = 1_000.0;
#[derive(Debug, Clone, Copy, PartialEq)]
enum Need {
    /// A token fresh enough to send (any generation).
    Fresh,
    /// A token newer than this generation: after a 401, or `refresh({force: true})`.
    NewerThan(u64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Waits for a token (joining the flight if one is needed). `tries`: refreshes awaited.
    Waiting {
        need: Need,
        tries: u8,
        replayed: bool,
    },
    /// Its request went out with the token of `generation`.
    Sent { generation: u64, replayed: bool },
    /// Its login or logout request is out.
    Requesting,
}

#[derive(Debug, Clone, Copy)]
struct Caller {
    id: Id,
    call: Call,
    state: State,
    /// Sent again once already after a refused DPoP proof.
    proof_retried: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Asked the peers for a token; `timer` ends the wait.
    Asking { timer: Id },
    /// Asked for the lock, at once if it is free or (`waiting`) once its holder lets it go;
    /// `timer` ends both (a lock manager that never answers, a holder that never lets go).
    Locking { timer: Id, waiting: bool },
    /// Got the lock after another tab held it; waiting for its token.
    Handoff { timer: Id },
    /// The refresh request is out; `failures` so far.
    Sending { req: Id, failures: u32 },
    /// Waiting to retry after `failures` transient failures.
    Backoff { timer: Id, failures: u32 },
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    epoch: u64,
    start_generation: u64,
    stage: Stage,
    locked: bool,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Refresh,
    /// A sign-in of `caller`, signed by `key`, a key it brought (`given`) or a new one.
    Login {
        caller: Id,
        key: Option<Slot>,
        given: bool,
    },
    /// `None`: a banking-mode expiry telling the server, nobody waiting.
    Logout(Option<Id>),
    Post(Id),
}

#[derive(Debug, Clone)]
struct Pending {
    req: Id,
    timer: Id,
    purpose: Purpose,
    endpoint: Endpoint,
    bearer: Option<String>,
    caller: Option<Id>,
    key: Option<Slot>,
    /// Already sent again after a refused DPoP proof.
    retried: bool,
}

/// After the server answered a refresh with a failure that does not end the session (here or
/// in another tab): no refresh starts before `until_ms` unless forced or the tab comes back,
/// and callers who need one meanwhile are told the same failure. Kept, with its count, until a
/// refresh succeeds.
#[derive(Debug, Clone, Copy)]
struct Cooldown {
    until_ms: f64,
    /// Refreshes failed in a row: while it is not zero, a flight makes one attempt (no quick
    /// retries at 250 ms and 1 s) and each failure doubles the wait ([`cooldown_ms`]).
    failures: u32,
    /// The last one's status (0: no answer), told again ([`Failure::of_status`]).
    status: u16,
    /// The session it is about: a login or an end forgets it.
    epoch: u64,
}

/// Refreshes a caller may await before giving up (the server's lifetimes must be off).
const MAX_TRIES_FRESH: u8 = 3;
const MAX_TRIES_NEWER: u8 = 2;

#[derive(Debug)]
pub struct Machine {
    config: Config,
    session: Session,
    callers: Vec<Caller>,
    flight: Option<Flight>,
    requests: Vec<Pending>,
    next_id: Id,
    rng: u32,
    /// The timer that releases the lock held after a refresh (`LOCK_HOLD_MS`).
    hold: Option<Id>,
    /// Commands not yet polled, from `head` on (a plain Vec: smaller wasm than a VecDeque).
    out: Vec<Command>,
    head: usize,
    /// DPoP: per server, the newest nonce and the clock offset.
    servers: Vec<Server>,
    cooldown: Option<Cooldown>,
    /// DPoP: the key the session signs with (`None`: not known yet, the stored one is loaded
    /// when needed), and the key of the session that ended here (its logout signs with it).
    key: Option<Slot>,
    ended_key: Option<Slot>,
}

impl Machine {
    pub fn new(config: Config) -> Machine {
        Machine {
            session: Session::new(config.policy, config.hint),
            rng: config.seed | 1,
            config,
            callers: Vec::new(),
            flight: None,
            hold: None,
            requests: Vec::new(),
            next_id: 1,
            out: Vec::new(),
            head: 0,
            servers: Vec::new(),
            cooldown: None,
            key: None,
            ended_key: None,
        }
    }

    /// The next command to carry out, in order.
    pub fn poll(&mut self) -> Option<Command> {
        let Some(c) = self.out.get_mut(self.head) else {
            self.out.clear();
            self.head = 0;
            return None;
        };
        // Leave a cheap placeholder; the slots are dropped together once all are polled.
        let c = std::mem::replace(c, Command::Unlock);
        self.head += 1;
        Some(c)
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// A refresh is in flight (this tab's).
    pub fn is_refreshing(&self) -> bool {
        self.flight.is_some()
    }

    // ---- inputs ---------------------------------------------------------------------------

    /// A caller's call, with an id the driver chose (unique among live callers).
    pub fn call(&mut self, id: Id, call: Call, now: f64) {
        match call {
            Call::Login | Call::LoginWithKey => {
                let given = matches!(call, Call::LoginWithKey);
                let key = self.login_key(id, given);
                let purpose = Purpose::Login {
                    caller: id,
                    key,
                    given,
                };
                self.request(Endpoint::Login, None, purpose, Some(id), key);
                self.add(id, call, State::Requesting);
            }
            Call::Logout => self.logout(id, now),
            Call::Post { signed: false } => {
                self.request(Endpoint::Post, None, Purpose::Post(id), Some(id), None);
                self.add(id, call, State::Requesting);
            }
            Call::Restore { hint } => {
                // The guess made at construction is checked again (no refresh in flight yet).
                if self.flight.is_none() {
                    self.session.suspect(hint);
                }
                if self.session.phase() == Phase::Anonymous {
                    return self.resolve(id, Value::Bool(false));
                }
                self.want(id, call, Need::Fresh, now);
            }
            Call::Refresh { force: true } => {
                let g = self.session.generation();
                self.want(id, call, Need::NewerThan(g), now);
            }
            Call::Fetch | Call::Token | Call::Refresh { force: false } | Call::Post { .. } => {
                self.want(id, call, Need::Fresh, now)
            }
        }
    }

    /// The status of the response a fetch caller got for a [`Command::Send`].
    /// `replayable`: the request can be sent again (its body is not a spent stream).
    /// `challenge`: the `error` of its `WWW-Authenticate: DPoP` challenge, if any (the driver
    /// reads the header, as it reads JSON bodies).
    pub fn fetch_status(
        &mut self,
        id: Id,
        status: u16,
        replayable: bool,
        challenge: Option<&str>,
        now: f64,
    ) {
        let Some(i) = self.find(id) else { return };
        let State::Sent {
            generation,
            replayed,
        } = self.callers[i].state
        else {
            return;
        };
        if status != 401 {
            return self.finish(i, Command::Return { caller: id });
        }
        let c = self.callers[i];
        if replayable && !c.proof_retried && self.proof_retry(challenge) {
            // Not the token's fault: the same request once more, with a new proof.
            self.callers[i].proof_retried = true;
            self.callers[i].state = State::Waiting {
                need: Need::Fresh,
                tries: 0,
                replayed,
            };
            return self.serve(id, now);
        }
        if !self.replay(i, generation, replayed, replayable, now) {
            self.finish(i, Command::Return { caller: id });
        }
    }

    /// Caller `i`'s request, sent with the token of `generation`, got a 401: it waits for a
    /// newer token (one refresh for all callers, unless there is one) and is sent once more,
    /// if that can help; false: the 401 is its answer.
    fn replay(
        &mut self,
        i: usize,
        generation: u64,
        replayed: bool,
        replayable: bool,
        now: f64,
    ) -> bool {
        let again = self
            .session
            .after_unauthorized(generation, replayed, replayable)
            != Replay::No;
        if again {
            self.callers[i].state = State::Waiting {
                need: Need::NewerThan(generation),
                tries: 0,
                replayed: true,
            };
            self.serve(self.callers[i].id, now);
        }
        again
    }

    /// The caller went away (its fetch threw, e.g. aborted): forget it.
    pub fn forget(&mut self, id: Id) {
        if let Some(i) = self.find(id) {
            self.callers.swap_remove(i);
        }
    }

    /// The answer to [`Command::Request`] `req`: `Err` when `fetch` rejected.
    /// `retry_after`: the `Retry-After` header, in seconds.
    pub fn reply(
        &mut self,
        req: Id,
        reply: Result<RefreshReply, Transient>,
        retry_after: Option<f64>,
        now: f64,
    ) {
        let Some(p) = self.requests.iter().position(|p| p.req == req) else {
            return; // timed out already
        };
        let pending = self.requests.swap_remove(p);
        self.out.push(Command::CancelTimer { id: pending.timer });
        if let Ok(r) = &reply
            && !pending.retried
            && matches!(r.status, 400 | 401)
            && self.proof_retry(r.error.as_deref())
        {
            // Once more with a new proof (the nonce or clock of this answer); never a loop.
            let again = self.request_with(
                pending.endpoint,
                pending.bearer,
                pending.purpose,
                pending.caller,
                pending.key,
                true,
            );
            if let (Purpose::Refresh, Some(f)) = (pending.purpose, self.flight)
                && let Stage::Sending { failures, .. } = f.stage
            {
                self.set_stage(Stage::Sending {
                    req: again,
                    failures,
                });
            }
            return;
        }
        self.on_reply(pending.purpose, reply, retry_after, now);
    }

    /// The answer to [`Command::Lock`]: granted, or (for `wait: false`) held by another tab.
    pub fn lock(&mut self, granted: bool, now: f64) {
        let Some(f) = self.flight else {
            if granted {
                self.out.push(Command::Unlock);
            }
            return;
        };
        let Stage::Locking { timer, waiting } = f.stage else {
            if granted {
                self.out.push(Command::Unlock);
            }
            return;
        };
        if !granted {
            if !waiting {
                // Another tab is refreshing: wait for the lock, but not forever (the timer).
                self.out.push(Command::Lock { wait: true });
                self.set_stage(Stage::Locking {
                    timer,
                    waiting: true,
                });
            }
            return;
        }
        self.out.push(Command::CancelTimer { id: timer });
        if let Some(f) = self.flight.as_mut() {
            f.locked = true;
        }
        // Check again: the holder's token may be here already.
        if self.session.generation() > f.start_generation {
            return self.settle_by_peer(None, now);
        }
        if waiting {
            let t = self.start_timer(HANDOFF_WAIT_MS);
            self.set_stage(Stage::Handoff { timer: t });
        } else {
            self.send_refresh(0);
        }
    }

    /// Timer `id` fired.
    pub fn timer(&mut self, id: Id, now: f64) {
        if self.hold == Some(id) {
            self.hold = None;
            return self.out.push(Command::Unlock);
        }
        if let Some(p) = self.requests.iter().position(|p| p.timer == id) {
            let pending = self.requests.swap_remove(p);
            self.out.push(Command::Abort { req: pending.req });
            return self.on_reply(pending.purpose, Err(Transient::Timeout), None, now);
        }
        let Some(f) = self.flight else { return };
        match f.stage {
            Stage::Asking { timer } if timer == id => self.ask_lock(),
            Stage::Locking { timer, .. } if timer == id => {
                // A lock held too long (a stuck or hostile holder), or a lock manager that never
                // answers (a script patched it), never hangs the app.
                self.out.push(Command::CancelLock);
                self.settle(RefreshOutcome::Transient(Transient::Timeout), now);
            }
            Stage::Handoff { timer } if timer == id => self.send_refresh(0),
            Stage::Backoff { timer, failures } if timer == id => self.send_refresh(failures),
            _ => {}
        }
    }

    /// A message from another tab. Checked here again: an injected message must not put a
    /// token in place that is unusable, eternal or from the future.
    pub fn peer(&mut self, message: Message, now: f64) {
        if !self.config.cross_tab {
            return;
        }
        let at_ok = |at: f64| at.is_finite() && at <= now + PEER_CLOCK_SLACK_MS;
        match message {
            Message::Ask => {
                if let Some(h) = self.session.handoff(now) {
                    self.post_token(false, h);
                }
            }
            Message::Token {
                login,
                token,
                lifetime_secs,
                at_ms,
                nonce,
            } => {
                // A nonce is no secret and not trusted: it only fills in for a tab that has
                // none from the auth server itself (a flood of wrong ones must not displace the
                // server's), and costs one retried request at most.
                let auth = self.config.auth_server;
                if self.config.dpop && self.proof(auth, now).1.is_none() {
                    self.seen(auth, nonce, None, now);
                }
                let Some(lifetime_secs) = super::reply::lifetime_secs(Some(lifetime_secs), None)
                else {
                    return;
                };
                if !at_ok(at_ms) || !is_token_shaped(&token) {
                    return;
                }
                let h = Handoff {
                    token,
                    lifetime_secs,
                    received_at_ms: at_ms,
                };
                if self.session.adopt(h).is_none() {
                    return;
                }
                self.cooldown = None;
                if login {
                    // Another tab's sign-in: its key, stored by that tab, read now (a later
                    // logout need not read a store the other tabs may be clearing).
                    self.forget_keys();
                    self.signing_key();
                }
                self.emit(if login {
                    Emit::Login
                } else {
                    Emit::Refresh {
                        expires_in_secs: self.expires_in_secs(now),
                    }
                });
                if let Some(f) = self.flight
                    && matches!(f.stage, Stage::Asking { .. } | Stage::Handoff { .. })
                    && self.session.generation() > f.start_generation
                {
                    self.settle_by_peer(None, now);
                }
            }
            Message::Logout { at_ms } => {
                if at_ok(at_ms) && self.session.end_if_older(at_ms) {
                    self.forget_keys();
                    self.emit(Emit::Logout);
                }
            }
            Message::Ended { reason, at_ms } => {
                if at_ok(at_ms) && self.session.end_if_older(at_ms) {
                    self.forget_keys();
                    self.announce_end(reason);
                }
            }
            Message::Failed { status, at_ms } => {
                // Another tab's refresh failed: this tab shares its outcome and its wait, unless
                // it is old news (older than the longest wait, or than this tab's token). With no
                // session here it changes nothing (a login starts afresh). A forged one costs a
                // wait, never the session.
                if !(now - COOLDOWN_CAP_MS..=now + PEER_CLOCK_SLACK_MS).contains(&at_ms)
                    || self.session.received_at_ms().is_some_and(|t| t > at_ms)
                {
                    return;
                }
                self.cool_down(status, at_ms);
                if let Some(f) = self.flight
                    && !matches!(f.stage, Stage::Sending { .. } | Stage::Backoff { .. })
                {
                    self.settle_by_peer(Some(Failure::of_status(status)), now);
                }
            }
        }
    }

    /// The page became visible, came online, or was restored from the back/forward cache: a
    /// token that fell due while the tab slept is refreshed now, before anyone needs it.
    pub fn wake(&mut self, now: f64) {
        if self.flight.is_some() || self.session.phase() != Phase::Active {
            return;
        }
        match self.session.check(now) {
            Check::Refresh => self.start_flight(),
            Check::Expired => self.expire(now),
            _ => {}
        }
    }

    // ---- callers --------------------------------------------------------------------------

    fn add(&mut self, id: Id, call: Call, state: State) {
        // Ids are unique among live callers; one reused anyway replaces its namesake.
        self.forget(id);
        self.callers.push(Caller {
            id,
            call,
            state,
            proof_retried: false,
        });
    }

    fn find(&self, id: Id) -> Option<usize> {
        self.callers.iter().position(|c| c.id == id)
    }

    fn want(&mut self, id: Id, call: Call, need: Need, now: f64) {
        let state = State::Waiting {
            need,
            tries: 0,
            replayed: false,
        };
        self.add(id, call, state);
        self.serve(id, now);
    }

    /// Gives a waiting caller what it needs, or makes it wait for the flight.
    fn serve(&mut self, id: Id, now: f64) {
        let Some(i) = self.find(id) else { return };
        let State::Waiting {
            need,
            tries,
            replayed,
        } = self.callers[i].state
        else {
            return;
        };
        // A refresh failed a moment ago: none starts before the wait is over (one in flight is
        // joined; a forced one goes ahead). A token that is due but still valid is used
        // meanwhile; otherwise the caller is told that refresh's failure.
        let cooling = match self.flight {
            None if self.callers[i].call != (Call::Refresh { force: true }) => self.cooling(now),
            _ => None,
        };
        let max_tries = match need {
            Need::Fresh => match self.session.check_within(now, cooling.is_some()) {
                Check::Fresh { token, generation } => {
                    return self.grant(i, Some(token), generation, replayed);
                }
                Check::Anonymous => return self.grant(i, None, 0, replayed),
                Check::Expired => {
                    self.expire(now);
                    return self.fail(i, Failure::SessionExpired(EndReason::Expired.as_str()));
                }
                Check::Refresh => MAX_TRIES_FRESH,
            },
            Need::NewerThan(g) => {
                let s = &self.session;
                if s.generation() > g
                    && let Some(t) = s.token()
                {
                    let (t, gen_now) = (t.to_owned(), s.generation());
                    return self.grant(i, Some(t), gen_now, replayed);
                }
                if s.phase() == Phase::Anonymous {
                    return self.fail(i, Failure::SessionExpired(ClientCode::NoSession.as_str()));
                }
                MAX_TRIES_NEWER
            }
        };
        if tries >= max_tries {
            // Refreshed, yet the new token is already due: the server's lifetimes are off.
            let failure = match need {
                Need::Fresh => Failure::Refresh(200),
                Need::NewerThan(_) => Failure::SessionExpired(ClientCode::NoSession.as_str()),
            };
            return self.fail(i, failure);
        }
        if let Some(failure) = cooling {
            return self.fail(i, failure);
        }
        self.callers[i].state = State::Waiting {
            need,
            tries: tries + 1,
            replayed,
        };
        self.start_flight();
    }

    /// Hands the caller its token (`None`: no session).
    fn grant(&mut self, i: usize, token: Option<String>, generation: u64, replayed: bool) {
        let id = self.callers[i].id;
        match (self.callers[i].call, token) {
            (Call::Fetch, Some(token)) => {
                self.callers[i].state = State::Sent {
                    generation,
                    replayed,
                };
                let key = self.signing_key();
                self.out.push(Command::Send {
                    caller: id,
                    token: Some(token),
                    key,
                });
            }
            (Call::Fetch, None) => self.finish(
                i,
                Command::Send {
                    caller: id,
                    token: None,
                    key: None,
                },
            ),
            (Call::Post { .. }, Some(token)) => {
                self.callers[i].state = State::Sent {
                    generation,
                    replayed,
                };
                let key = self.signing_key();
                self.request(
                    Endpoint::Post,
                    Some(token),
                    Purpose::Post(id),
                    Some(id),
                    key,
                );
            }
            (Call::Token, Some(t)) => self.done(i, Value::Token(t)),
            (Call::Restore { .. }, t) => self.done(i, Value::Bool(t.is_some())),
            (Call::Refresh { .. }, Some(_)) => self.done(i, Value::Unit),
            _ => self.fail(i, Failure::SessionExpired(ClientCode::NoSession.as_str())),
        }
    }

    fn done(&mut self, i: usize, value: Value) {
        let caller = self.callers[i].id;
        self.finish(i, Command::Resolve { caller, value });
    }

    fn fail(&mut self, i: usize, failure: Failure) {
        let caller = self.callers[i].id;
        // `restore()` rejects only with NetworkError: a session that turned out to be over
        // is just "not logged in".
        let command = match (self.callers[i].call, &failure) {
            (Call::Restore { .. }, Failure::SessionExpired(_)) => Command::Resolve {
                caller,
                value: Value::Bool(false),
            },
            _ => Command::Reject { caller, failure },
        };
        self.finish(i, command);
    }

    fn finish(&mut self, i: usize, command: Command) {
        self.callers.swap_remove(i);
        self.out.push(command);
    }

    fn resolve(&mut self, caller: Id, value: Value) {
        self.out.push(Command::Resolve { caller, value });
    }

    // ---- the flight -----------------------------------------------------------------------

    fn start_flight(&mut self) {
        if self.flight.is_some() {
            return;
        }
        self.flight = Some(Flight {
            epoch: self.session.epoch(),
            start_generation: self.session.generation(),
            // Replaced below.
            stage: Stage::Sending {
                req: 0,
                failures: 0,
            },
            locked: false,
        });
        if !self.config.cross_tab {
            self.send_refresh(0);
        } else if self.session.phase() == Phase::Maybe {
            // A new tab: a peer may hold a live token; ask before spending the cookie.
            self.out.push(Command::Post(Message::Ask));
            let t = self.start_timer(ASK_WAIT_MS);
            self.set_stage(Stage::Asking { timer: t });
        } else {
            self.ask_lock();
        }
    }

    fn ask_lock(&mut self) {
        self.out.push(Command::Lock { wait: false });
        let timer = self.start_timer(self.config.timeout_ms);
        self.set_stage(Stage::Locking {
            timer,
            waiting: false,
        });
    }

    fn set_stage(&mut self, stage: Stage) {
        if let Some(f) = self.flight.as_mut() {
            f.stage = stage;
        }
    }

    fn send_refresh(&mut self, failures: u32) {
        let key = self.signing_key();
        let req = self.request(Endpoint::Refresh, None, Purpose::Refresh, None, key);
        self.set_stage(Stage::Sending { req, failures });
    }

    fn on_reply(
        &mut self,
        purpose: Purpose,
        reply: Result<RefreshReply, Transient>,
        retry_after: Option<f64>,
        now: f64,
    ) {
        match purpose {
            Purpose::Refresh => {
                let outcome = match reply {
                    Ok(r) => r.classify_for(self.config.dpop),
                    Err(t) => RefreshOutcome::Transient(t),
                };
                let Some(f) = self.flight else { return };
                let Stage::Sending { failures, .. } = f.stage else {
                    return;
                };
                // Quick retries (a lost response) only while no refresh has failed yet.
                if let RefreshOutcome::Transient(_) = outcome
                    && self.backed_off().is_none()
                {
                    let failures = failures + 1;
                    if let Some(ms) = backoff_ms(failures, self.random()) {
                        let t = self.start_timer(ms);
                        return self.set_stage(Stage::Backoff { timer: t, failures });
                    }
                }
                self.settle(outcome, now);
            }
            Purpose::Login { caller, key, given } => {
                self.login_reply(caller, key, given, reply, retry_after, now)
            }
            Purpose::Post(caller) => self.post_reply(caller, reply, retry_after, now),
            Purpose::Logout(caller) => {
                let Some(i) = caller.and_then(|c| self.find(c)) else {
                    return;
                };
                match reply {
                    Ok(r) if (200..300).contains(&r.status) => self.done(i, Value::Unit),
                    Ok(r) => self.fail(i, Failure::Network(Transient::Status(r.status))),
                    Err(t) => self.fail(i, Failure::Network(t)),
                }
            }
        }
    }

    /// Records the flight's outcome, tells the other tabs (before the lock is released, so the
    /// tabs waiting for it find the token there), and serves every waiting caller.
    fn settle(&mut self, outcome: RefreshOutcome, now: f64) {
        let Some(f) = self.flight.take() else { return };
        self.cancel_stage_timer(f.stage);
        let settled = self.session.finish_refresh(f.epoch, outcome, now);
        // The other tabs are told before the lock is released.
        let failure = match settled {
            Settled::Refreshed => {
                self.cooldown = None;
                if let Some(h) = self.session.handoff(now) {
                    self.post_token(false, h);
                }
                None
            }
            Settled::Ended {
                reason,
                was_active: true,
            } => {
                self.end_key(now);
                self.post(Message::Ended { reason, at_ms: now });
                Some(Failure::SessionExpired(reason.as_str()))
            }
            // A page-load guess that was wrong, or a session that changed meanwhile.
            Settled::Ended { .. } | Settled::Stale => None,
            Settled::Failed(t) => {
                let status = if let Transient::Status(s) = t { s } else { 0 };
                Some(self.failed(Failure::Network(t), status, now))
            }
            Settled::Unexpected(s) => Some(self.failed(Failure::Refresh(s), s, now)),
        };
        if f.locked {
            if let Settled::Refreshed = settled {
                self.hold = Some(self.start_timer(LOCK_HOLD_MS));
            } else {
                self.out.push(Command::Unlock);
            }
        }
        match settled {
            Settled::Refreshed => self.emit(Emit::Refresh {
                expires_in_secs: self.expires_in_secs(now),
            }),
            Settled::Ended {
                reason,
                was_active: true,
            } => self.announce_end(reason),
            _ => {}
        }
        self.answer_waiting(failure, now);
    }

    /// A refresh failed without ending the session: the other tabs are told (those waiting on
    /// it share its outcome), and if the server answered, no new one starts here before the
    /// wait is over ([`cooldown_ms`]).
    fn failed(&mut self, failure: Failure, status: u16, now: f64) -> Failure {
        self.post(Message::Failed { status, at_ms: now });
        self.cool_down(status, now);
        failure
    }

    /// One more refresh failed, at `at_ms`, with `status`: the wait doubles from then. Only an
    /// answer counts (status 0: no answer, the server unreachable or restarting, costs it
    /// nothing and is retried at the next need, as it comes back).
    fn cool_down(&mut self, status: u16, at_ms: f64) {
        if status == 0 {
            return;
        }
        let failures = self.backed_off().map_or(0, |c| c.failures) + 1;
        self.cooldown = Some(Cooldown {
            until_ms: at_ms + cooldown_ms(failures, self.random()),
            failures,
            status,
            epoch: self.session.epoch(),
        });
    }

    /// The cooldown of this session, if refreshes have failed since its last success.
    fn backed_off(&self) -> Option<&Cooldown> {
        self.cooldown
            .as_ref()
            .filter(|c| c.epoch == self.session.epoch())
    }

    /// The failure to tell a caller who needs a refresh while the wait is not over.
    fn cooling(&self, now: f64) -> Option<Failure> {
        let c = self.backed_off().filter(|c| now < c.until_ms)?;
        Some(Failure::of_status(c.status))
    }

    /// Another tab ended this tab's flight: its token (after an `ask`, or while this one held
    /// the lock), or its refresh's `failure` while this one waited on it (for its token or its
    /// lock), which is then this flight's outcome.
    fn settle_by_peer(&mut self, failure: Option<Failure>, now: f64) {
        let Some(f) = self.flight.take() else { return };
        self.cancel_stage_timer(f.stage);
        if f.locked {
            self.out.push(Command::Unlock);
        } else if let Stage::Locking { .. } = f.stage {
            self.out.push(Command::CancelLock);
        }
        self.answer_waiting(failure, now);
    }

    fn cancel_stage_timer(&mut self, stage: Stage) {
        match stage {
            Stage::Asking { timer }
            | Stage::Handoff { timer }
            | Stage::Locking { timer, .. }
            | Stage::Backoff { timer, .. } => self.out.push(Command::CancelTimer { id: timer }),
            Stage::Sending { .. } => {}
        }
    }

    /// Every caller waiting for the flight: served again, or failed with `failure`. From the
    /// last to the first: a caller answered is swapped out for the last one, which was
    /// answered already (serving one never adds a caller).
    fn answer_waiting(&mut self, failure: Option<Failure>, now: f64) {
        let mut i = self.callers.len();
        while i > 0 {
            i -= 1;
            let Some(c) = self.callers.get(i) else {
                continue;
            };
            if !matches!(c.state, State::Waiting { .. }) {
                continue;
            }
            match &failure {
                None => self.serve(c.id, now),
                Some(f) => self.fail(i, f.clone()),
            }
        }
    }

    // ---- login / logout / expiry ----------------------------------------------------------

    fn login_reply(
        &mut self,
        caller: Id,
        key: Option<Slot>,
        given: bool,
        reply: Result<RefreshReply, Transient>,
        retry_after: Option<f64>,
        now: f64,
    ) {
        let Some(i) = self.find(caller) else {
            return self.sign_in_failed(key, given);
        };
        let failure = match reply {
            Err(t) => Failure::Network(t),
            Ok(reply) => {
                let (status, code) = (reply.status, reply.error.clone());
                match reply.classify_for(self.config.dpop) {
                    RefreshOutcome::Token {
                        access_token,
                        lifetime_secs,
                    } => {
                        self.session.login(access_token, lifetime_secs, now);
                        self.signed_in_with(key);
                        if let Some(h) = self.session.handoff(now) {
                            self.post_token(true, h);
                        }
                        self.emit(Emit::Login);
                        return self.done(i, Value::Unit);
                    }
                    _ if status == 200 => Failure::Refresh(200),
                    _ => Failure::refusal(
                        status,
                        code,
                        retry_after,
                        ErrorCode::InvalidCredentials.as_str(),
                    ),
                }
            }
        };
        self.sign_in_failed(key, given);
        self.fail(i, failure);
    }

    /// The answer to a [`Call::Post`]: a 401 to a signed one gets one refresh (for all callers)
    /// and one replay, as a fetch does.
    fn post_reply(
        &mut self,
        caller: Id,
        reply: Result<RefreshReply, Transient>,
        retry_after: Option<f64>,
        now: f64,
    ) {
        let Some(i) = self.find(caller) else { return };
        let r = match reply {
            Err(t) => return self.fail(i, Failure::Network(t)),
            Ok(r) if (200..300).contains(&r.status) => return self.done(i, Value::Unit),
            Ok(r) => r,
        };
        if let (
            401,
            State::Sent {
                generation,
                replayed,
            },
        ) = (r.status, self.callers[i].state)
            && self.replay(i, generation, replayed, true, now)
        {
            return;
        }
        let failure = Failure::refusal(
            r.status,
            r.error,
            retry_after,
            ClientCode::UnexpectedResponse.as_str(),
        );
        self.fail(i, failure);
    }

    fn logout(&mut self, id: Id, now: f64) {
        let token = self.session.token().map(str::to_owned);
        let was_active = self.session.phase() == Phase::Active;
        let key = self.logout_key(was_active);
        self.session.end(now);
        self.post(Message::Logout { at_ms: now });
        if was_active {
            self.emit(Emit::Logout);
        }
        // The server must forget the session too, or the next page load would restore it.
        self.request(
            Endpoint::Logout,
            token,
            Purpose::Logout(Some(id)),
            None,
            key,
        );
        self.add(id, Call::Logout, State::Requesting);
        if was_active {
            self.end_key(now);
        }
    }

    /// `autoRefresh: false` and the token ran out: end the session here and on the server.
    fn expire(&mut self, now: f64) {
        let token = self.session.token().map(str::to_owned);
        let key = self.signing_key();
        self.session.end(now);
        self.announce_end(EndReason::Expired);
        self.post(Message::Ended {
            reason: EndReason::Expired,
            at_ms: now,
        });
        self.request(Endpoint::Logout, token, Purpose::Logout(None), None, key);
        self.end_key(now);
    }

    fn announce_end(&mut self, reason: EndReason) {
        if reason == EndReason::TokenReused {
            self.emit(Emit::TokenReused);
        }
        self.emit(Emit::SessionExpired(reason));
    }

    // ---- plumbing -------------------------------------------------------------------------

    fn request(
        &mut self,
        endpoint: Endpoint,
        bearer: Option<String>,
        purpose: Purpose,
        caller: Option<Id>,
        key: Option<Slot>,
    ) -> Id {
        self.request_with(endpoint, bearer, purpose, caller, key, false)
    }

    fn request_with(
        &mut self,
        endpoint: Endpoint,
        bearer: Option<String>,
        purpose: Purpose,
        caller: Option<Id>,
        key: Option<Slot>,
        retried: bool,
    ) -> Id {
        let req = self.id();
        let timer = self.start_timer(self.config.timeout_ms);
        self.out.push(Command::Request {
            req,
            endpoint,
            bearer: bearer.clone(),
            caller,
            key,
        });
        self.requests.push(Pending {
            req,
            timer,
            purpose,
            endpoint,
            bearer,
            caller,
            key,
            retried,
        });
        req
    }

    fn start_timer(&mut self, ms: f64) -> Id {
        let id = self.id();
        self.out.push(Command::Timer { id, ms });
        id
    }

    fn id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn post(&mut self, message: Message) {
        if self.config.cross_tab {
            self.out.push(Command::Post(message));
        }
    }

    fn post_token(&mut self, login: bool, h: Handoff) {
        // The auth server's newest nonce too: a tab that adopts the token has not talked to
        // the server yet, and would otherwise hear use_dpop_nonce on its first request.
        let nonce = self
            .proof(self.config.auth_server, 0.0)
            .1
            .map(str::to_owned);
        self.post(Message::Token {
            login,
            token: h.token,
            lifetime_secs: h.lifetime_secs,
            at_ms: h.received_at_ms,
            nonce,
        });
    }

    fn emit(&mut self, e: Emit) {
        self.out.push(Command::Emit(e));
    }

    fn expires_in_secs(&self, now: f64) -> f64 {
        self.session.expires_in_ms(now).unwrap_or(0.0) / 1000.0
    }

    /// xorshift32 in [0, 1): jitter only, no secret depends on it.
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        f64::from(x) / 4_294_967_296.0
    }
}
