//! Scenario tests of the machine, one file per situation (after ureq-proto's
//! `client/test/scenario.rs`). A [`Scenario`] is a page: it makes calls, advances the clock,
//! answers the requests the machine asks for, and reads back the commands.

mod backoff;
mod banking;
mod dpop;
mod faults;
mod keys;
mod posts;
mod redirect;
mod replay;
mod restore;
mod session_changes;
mod storms;
mod tabs;
mod wake;
mod world;

pub use super::machine::{ASK_WAIT_MS, HANDOFF_WAIT_MS, LOCK_HOLD_MS};
use super::*;

pub const LIFETIME: f64 = 600.0;
/// With a 600 s token and the default 30 s leeway, the refresh is due at 570 s.
pub const DUE_MS: f64 = 570_000.0;

pub struct Scenario {
    pub m: Machine,
    pub now: f64,
    next_caller: Id,
    /// Commands returned and not yet looked at.
    pub out: Vec<Command>,
}

pub struct Builder {
    config: Config,
}

impl Builder {
    pub fn cross_tab(mut self) -> Self {
        self.config.cross_tab = true;
        self
    }
    pub fn banking(mut self) -> Self {
        self.config.policy.auto_refresh = false;
        self
    }
    pub fn dpop(mut self) -> Self {
        self.config.dpop = true;
        self
    }
    pub fn hint(mut self, hint: bool) -> Self {
        self.config.hint = hint;
        self
    }
    pub fn build(self) -> Scenario {
        Scenario {
            m: Machine::new(self.config),
            now: 0.0,
            next_caller: 1000,
            out: Vec::new(),
        }
    }
}

pub fn ok(token: &str) -> Result<RefreshReply, Transient> {
    Ok(RefreshReply {
        status: 200,
        access_token: Some(token.into()),
        token_type: Some("Bearer".into()),
        expires_in: Some(LIFETIME),
        ..RefreshReply::default()
    })
}

pub fn status(status: u16, error: Option<&str>) -> Result<RefreshReply, Transient> {
    Ok(RefreshReply {
        status,
        error: error.map(Into::into),
        ..RefreshReply::default()
    })
}

impl Scenario {
    pub fn builder() -> Builder {
        Builder {
            config: Config {
                policy: Policy::default(),
                cross_tab: false,
                timeout_ms: 10_000.0,
                hint: false,
                seed: 7,
                dpop: false,
                auth_server: 0,
            },
        }
    }

    /// A single tab, not logged in.
    pub fn new() -> Scenario {
        Scenario::builder().build()
    }

    /// Moves the clock to `ms`.
    pub fn at(&mut self, ms: f64) -> &mut Self {
        self.now = ms;
        self
    }

    fn pump(&mut self) {
        while let Some(c) = self.m.poll() {
            self.out.push(c);
        }
    }

    /// Collects the commands after driving the machine directly.
    pub fn pump_out(&mut self) {
        self.pump();
    }

    pub fn call(&mut self, call: Call) -> Id {
        let id = self.next_caller;
        self.next_caller += 1;
        self.m.call(id, call, self.now);
        self.pump();
        id
    }

    pub fn reply(&mut self, req: Id, reply: Result<RefreshReply, Transient>) {
        self.m.reply(req, reply, None, self.now);
        self.pump();
    }

    pub fn fetch_status(&mut self, caller: Id, status: u16) {
        self.m.fetch_status(caller, status, true, None, self.now);
        self.pump();
    }

    pub fn lock(&mut self, granted: bool) {
        self.m.lock(granted, self.now);
        self.pump();
    }

    pub fn peer(&mut self, message: Message) {
        self.m.peer(message, self.now);
        self.pump();
    }

    pub fn wake(&mut self) {
        self.m.wake(self.now);
        self.pump();
    }

    /// Fires timer `id`.
    pub fn fire(&mut self, id: Id) {
        self.m.timer(id, self.now);
        self.pump();
    }

    /// Takes every command returned so far.
    pub fn take(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.out)
    }

    /// The requests to `endpoint` among the commands not yet looked at (taken out).
    pub fn requests(&mut self, endpoint: Endpoint) -> Vec<Id> {
        let mut ids = Vec::new();
        self.out.retain(|c| match c {
            Command::Request {
                req, endpoint: e, ..
            } if *e == endpoint => {
                ids.push(*req);
                false
            }
            _ => true,
        });
        ids
    }

    /// The one request to `endpoint` (panics otherwise: the test's expectation).
    pub fn request(&mut self, endpoint: Endpoint) -> Id {
        let ids = self.requests(endpoint);
        assert_eq!(ids.len(), 1, "expected one {endpoint:?} request");
        ids[0]
    }

    /// The timers started and not yet looked at, as (id, ms), taken out.
    pub fn timers(&mut self) -> Vec<(Id, f64)> {
        let mut t = Vec::new();
        self.out.retain(|c| match c {
            Command::Timer { id, ms } => {
                t.push((*id, *ms));
                false
            }
            _ => true,
        });
        t
    }

    /// The timer of `ms` among those started (taken out with the others).
    pub fn timer_of(&mut self, ms: f64) -> Id {
        let t = self.timers();
        t.iter()
            .find(|(_, m)| *m == ms)
            .map(|(id, _)| *id)
            .unwrap_or_else(|| panic!("no {ms} ms timer among {t:?}"))
    }

    pub fn has(&self, c: &Command) -> bool {
        self.out.contains(c)
    }

    /// What caller `id` was told (Send, Return, Resolve or Reject), if anything.
    pub fn answer(&self, id: Id) -> Option<&Command> {
        self.out.iter().find(|c| match c {
            Command::Send { caller, .. }
            | Command::Return { caller }
            | Command::Resolve { caller, .. }
            | Command::Reject { caller, .. } => *caller == id,
            _ => false,
        })
    }

    pub fn sent_with(&self, id: Id) -> Option<Option<String>> {
        self.out.iter().find_map(|c| match c {
            Command::Send { caller, token, .. } if *caller == id => Some(token.clone()),
            _ => None,
        })
    }

    pub fn emitted(&self) -> Vec<Emit> {
        self.out
            .iter()
            .filter_map(|c| match c {
                Command::Emit(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    pub fn posted(&self) -> Vec<Message> {
        self.out
            .iter()
            .filter_map(|c| match c {
                Command::Post(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// Logs in with `token` (a 600 s token) at the current time; clears the commands.
    pub fn logged_in(mut self, name: &str) -> Scenario {
        let caller = self.call(Call::Login);
        let req = self.request(Endpoint::Login);
        self.reply(req, ok(name));
        assert_eq!(
            self.answer(caller),
            Some(&Command::Resolve {
                caller,
                value: Value::Unit
            })
        );
        self.take();
        self
    }
}
