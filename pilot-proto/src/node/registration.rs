//! Changing what the node registers while it runs: its hostname and its
//! visibility. A change re-registers at once (a Register carries the whole
//! state) and is reported as [`Event::RegistrationChanged`] once the
//! rendezvous accepted or refused it; a refused change is undone, so the
//! node keeps the registration the rendezvous holds.

use alloc::string::String;
use alloc::vec::Vec;

use super::{Event, Node, RegState, RequestError};
use crate::addr::Hostname;
use crate::io::{earliest, Timer};
use crate::msg::ErrorCode;
use crate::time::Timestamp;

/// What a node registers besides its key: hostname and visibility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Profile {
    pub(super) hostname: Option<Hostname>,
    pub(super) public: bool,
}

/// A change waiting for the rendezvous's answer.
pub(super) struct Change {
    id: u32,
    /// The state before it, to return to if the rendezvous refuses and
    /// never accepted anything in this run.
    previous: Profile,
    started: Timestamp,
}

impl Node {
    /// Whether we register as findable by anyone.
    pub fn is_public(&self) -> bool {
        self.config.public
    }

    /// Whether every trust request is approved at once.
    pub fn auto_approves(&self) -> bool {
        self.config.auto_approve
    }

    /// Registers under `hostname` from now on (`None`: no hostname),
    /// releasing the old one. Returns the ID that
    /// [`Event::RegistrationChanged`] reports on: `Ok` once the rendezvous
    /// accepted it, `Refused(HostnameTaken, ..)` if another identity holds
    /// the name (the node then keeps its previous hostname), `Timeout` if
    /// the rendezvous did not answer within the request timeout (the node
    /// keeps trying with the new hostname).
    pub fn set_hostname(&mut self, now: Timestamp, hostname: Option<Hostname>) -> u32 {
        let public = self.config.public;
        self.change_profile(now, Profile { hostname, public })
    }

    /// Becomes findable by anyone (`true`) or only by trusted peers
    /// (`false`). Reported like [`Node::set_hostname`].
    pub fn set_public(&mut self, now: Timestamp, public: bool) -> u32 {
        let hostname = self.config.hostname.clone();
        self.change_profile(now, Profile { hostname, public })
    }

    fn profile(&self) -> Profile {
        Profile {
            hostname: self.config.hostname.clone(),
            public: self.config.public,
        }
    }

    fn set_profile(&mut self, p: Profile) {
        self.config.hostname = p.hostname;
        self.config.public = p.public;
    }

    fn change_profile(&mut self, now: Timestamp, to: Profile) -> u32 {
        self.now = now;
        let id = self.fresh_req();
        let previous = self.profile();
        self.reg_changes.push(Change {
            id,
            previous,
            started: now,
        });
        self.set_profile(to);
        // A fresh Register (new `req`): the answer to one sent before the
        // change no longer counts as confirming it.
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now,
            req: None,
        };
        self.registration_step(now);
        self.drain_tunnel_events(now);
        id
    }

    /// The rendezvous accepted our latest Register: it holds the current
    /// state, and every change made so far is done.
    pub(super) fn registration_accepted(&mut self) {
        self.confirmed = Some(self.profile());
        for c in core::mem::take(&mut self.reg_changes) {
            self.events.push_back(Event::RegistrationChanged {
                id: c.id,
                result: Ok(()),
            });
        }
    }

    /// The rendezvous refused our latest Register. If it carried a change,
    /// the change is undone and the state the rendezvous holds is
    /// registered again at once. Returns false if there was nothing to
    /// undo (the refusal is about the state we started with).
    pub(super) fn registration_refused(
        &mut self,
        now: Timestamp,
        code: ErrorCode,
        message: &str,
    ) -> bool {
        let changes = core::mem::take(&mut self.reg_changes);
        for c in &changes {
            self.events.push_back(Event::RegistrationChanged {
                id: c.id,
                result: Err(RequestError::Refused(code, String::from(message))),
            });
        }
        let back = self
            .confirmed
            .clone()
            .or_else(|| changes.first().map(|c| c.previous.clone()))
            .filter(|p| *p != self.profile());
        let Some(back) = back else {
            return false;
        };
        if changes.is_empty() {
            // A change that timed out was refused after all: say so, so
            // that whoever saved it learns it did not stick.
            self.events.push_back(Event::RegistrationFailed {
                code,
                message: String::from(message),
            });
        }
        self.set_profile(back);
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now,
            req: None,
        };
        self.registration_step(now);
        true
    }

    /// Changes not answered within the request timeout are reported as
    /// timed out; the node keeps registering the changed state.
    pub(super) fn registration_change_timers(&mut self, now: Timestamp) {
        let timeout = self.config.request_timeout;
        let (expired, waiting): (Vec<Change>, Vec<Change>) = core::mem::take(&mut self.reg_changes)
            .into_iter()
            .partition(|c| now >= c.started + timeout);
        self.reg_changes = waiting;
        for c in expired {
            self.events.push_back(Event::RegistrationChanged {
                id: c.id,
                result: Err(RequestError::Timeout),
            });
        }
    }

    pub(super) fn registration_change_deadline(&self) -> Option<(Timestamp, Timer)> {
        let timeout = self.config.request_timeout;
        self.reg_changes.iter().fold(None, |next, c| {
            earliest(next, Some((c.started + timeout, Timer::Register)))
        })
    }
}
