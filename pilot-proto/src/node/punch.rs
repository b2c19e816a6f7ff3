//! Coordinated hole punching: when to ask the rendezvous, and what to do
//! when it says go.
//!
//! Data to a trusted peer that has no direct path goes through the relay
//! at once; beside it, the node asks the rendezvous to punch
//! ([`Message::Punch`]). The rendezvous sends both sides each other's
//! candidates and a delay ([`Message::PunchGo`]), and both probe every
//! candidate inside their session (see `tunnel::paths`). A failed attempt
//! is retried after 5, 10, 20, 40 and then every 60 s while data flows,
//! and at once when our own public endpoint changes.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::addr::Address;
use crate::msg::Message;
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::tunnel::Route;

use super::Node;

/// Waits between punching attempts to one peer, in seconds.
const BACKOFF_SECS: [u64; 5] = [5, 10, 20, 40, 60];
/// A Punch the rendezvous has not answered with PunchGo is sent again
/// after this long, at most this many times (a lost Punch otherwise costs
/// a whole backoff step).
const PUNCH_RESEND: Duration = Duration::from_secs(1);
const PUNCH_RESENDS: u32 = 3;

/// Punching state for one peer.
#[derive(Clone, Debug, Default)]
pub(super) struct PunchState {
    /// Attempts since the last direct path.
    attempts: u32,
    /// No new request before this.
    next_at: Timestamp,
    /// The candidates the rendezvous last gave us.
    candidates: Vec<SocketAddr>,
    /// A Punch waits for its PunchGo: when to send it again, and how many
    /// times it was resent.
    resend: Option<(Timestamp, u32)>,
    /// When the last PunchGo for this peer arrived.
    last_go: Option<Timestamp>,
}

impl Node {
    /// Asks the rendezvous to coordinate punching with `peer` if it has
    /// no direct path, none is being probed, and backoff allows.
    pub(super) fn maybe_punch(&mut self, now: Timestamp, peer: Address) {
        if self.config.relay_only
            || !self.trusted.contains_key(&peer)
            || !self.rendezvous_connected()
        {
            return;
        }
        let Some(x) = self.peers.get(&peer).map(|k| k.x25519) else {
            return;
        };
        if self.tunnels.is_direct(&x) || self.tunnels.is_probing(&x) {
            return;
        }
        let state = self.punches.entry(peer).or_default();
        if now < state.next_at {
            return;
        }
        let wait = BACKOFF_SECS[(state.attempts as usize).min(BACKOFF_SECS.len() - 1)];
        state.attempts += 1;
        state.next_at = now + Duration::from_secs(wait);
        state.resend = Some((now + PUNCH_RESEND, 0));
        let rv = self.rv;
        let _ = self
            .tunnels
            .send(now, &rv, &Message::Punch { peer }.to_vec());
    }

    /// The rendezvous says: probe `peer`'s candidates `delay_ms` from now.
    pub(super) fn on_punch_go(
        &mut self,
        now: Timestamp,
        peer: Address,
        delay_ms: u16,
        endpoints: &[SocketAddr],
        nat: crate::nat::NatInfo,
    ) {
        if self.config.relay_only {
            // Nothing to probe with: no UDP socket.
            return self.tunnels.stats_mut().drop(DropReason::NotAllowed);
        }
        let Some(x) = self
            .peers
            .get(&peer)
            .filter(|_| self.trusted.contains_key(&peer))
            .map(|k| k.x25519)
        else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        // The rendezvous sends each PunchGo twice; one attempt per copy
        // pair (a new attempt needs a new Punch, seconds later).
        let state = self.punches.entry(peer).or_default();
        if state.last_go.is_some_and(|t| now < t + PUNCH_RESEND) {
            return;
        }
        state.last_go = Some(now);
        // Our own endpoints are no candidates (a peer behind the same NAT
        // reports our shared public address only when it is its own).
        let mine: Vec<SocketAddr> = self
            .public_endpoint
            .into_iter()
            .chain(self.config.lan_endpoints.iter().copied())
            .collect();
        let fresh: Vec<SocketAddr> = endpoints
            .iter()
            .copied()
            .filter(|e| !mine.contains(e))
            .collect();
        self.tunnels.add_candidates(x, &fresh);
        let start = now + Duration::from_millis(u64::from(delay_ms));
        self.tunnels.schedule_punch(&x, start);
        if let Some(&public) = endpoints.first() {
            self.hard_punch(start, peer, x, nat, public);
        }
        let state = self.punches.entry(peer).or_default();
        state.candidates = fresh;
        state.resend = None;
        // The peer asked, or we did: either way nobody asks again before
        // this attempt had its chance.
        state.next_at = state
            .next_at
            .max(now + Duration::from_secs(BACKOFF_SECS[0]));
    }

    /// The path to `peer` changed: a direct path resets the backoff; a
    /// fall back to the relay lets the next packet ask for punching again.
    pub(super) fn path_changed(&mut self, now: Timestamp, peer: Address, route: Option<Route>) {
        let state = self.punches.entry(peer).or_default();
        match route {
            Some(Route::Direct { .. }) => state.attempts = 0,
            _ => state.next_at = now,
        }
    }

    /// Resends Punch requests still unanswered.
    pub(super) fn punch_timers(&mut self, now: Timestamp) {
        let rv = self.rv;
        let mut resend = Vec::new();
        for (peer, state) in &mut self.punches {
            let Some((at, n)) = state.resend else {
                continue;
            };
            if now < at {
                continue;
            }
            state.resend = (n + 1 < PUNCH_RESENDS).then(|| (now + PUNCH_RESEND, n + 1));
            resend.push(*peer);
        }
        if !self.rendezvous_connected() {
            return;
        }
        for peer in resend {
            let _ = self
                .tunnels
                .send(now, &rv, &Message::Punch { peer }.to_vec());
        }
    }

    /// When an unanswered Punch is sent again.
    pub(super) fn punch_deadline(&self) -> Option<(Timestamp, crate::io::Timer)> {
        self.punches
            .values()
            .filter_map(|s| s.resend.map(|r| r.0))
            .min()
            .map(|t| (t, crate::io::Timer::Punch))
    }

    /// Our public endpoint changed: every peer's punching may go again.
    pub(super) fn endpoints_changed(&mut self, now: Timestamp) {
        for state in self.punches.values_mut() {
            state.attempts = 0;
            state.next_at = now;
        }
    }
}
