//! The tunnel's timer table: every deadline of one peer, computed in one
//! place, so that what `poll_timeout` promises and what `handle_timeout`
//! does cannot drift apart.

use crate::io::{earliest, Timer};
use crate::time::Timestamp;

use super::{Peer, TunnelConfig};

/// One peer's deadlines, each named.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct PeerTimers {
    /// Retransmit or give up our handshake.
    pub(super) handshake: Option<Timestamp>,
    /// A session reaches its reject time.
    pub(super) session_expiry: Option<Timestamp>,
    /// Data we sent went unanswered so long that the peer probably lost
    /// the session: start a new handshake.
    pub(super) dead_peer: Option<Timestamp>,
    /// Answer received data, or keep a persistent keepalive.
    pub(super) keepalive: Option<Timestamp>,
    /// Path probes, liveness checks and path keepalives.
    pub(super) path: Option<Timestamp>,
}

/// Which of a peer's timers are due.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Due {
    pub(super) handshake: bool,
    pub(super) session_expiry: bool,
    pub(super) dead_peer: bool,
    pub(super) keepalive: bool,
    pub(super) path: bool,
}

fn min(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl PeerTimers {
    pub(super) fn of(p: &Peer, config: &TunnelConfig) -> Self {
        let mut t = PeerTimers::default();
        if let Some(h) = &p.pending {
            let give_up = h.started + config.rekey_attempt_time;
            t.handshake = Some(h.retry_at.min(give_up));
        }
        for s in [&p.current, &p.previous, &p.next].into_iter().flatten() {
            t.session_expiry = min(t.session_expiry, Some(s.expires_at()));
        }
        let watch = p.pending.is_none() && !config.responder_only;
        if let Some(u) = p.unanswered_since.filter(|_| watch) {
            t.dead_peer = Some(u + config.keepalive_timeout + config.rekey_timeout);
        }
        if p.current.is_some() {
            if let Some(rx) = p.last_data_received.filter(|rx| *rx >= p.last_sent) {
                t.keepalive = Some(rx + config.keepalive_timeout);
            }
            if let Some(k) = p.persistent_keepalive {
                t.keepalive = min(t.keepalive, Some(p.last_sent + k));
            }
        }
        // Path keepalives only while the peer is active: its last data
        // either way is younger than `idle_after` when the keepalive falls
        // due.
        let keepalive_at = p.last_sent + config.paths.keepalive;
        let active = [p.last_data_sent, p.last_data_received]
            .into_iter()
            .flatten()
            .any(|d| d + config.paths.idle_after > keepalive_at);
        t.path = p
            .paths
            .deadline(p.current.is_some(), &config.paths, p.last_sent, active);
        t
    }

    /// The earliest deadline and the timer it belongs to.
    pub(super) fn earliest(&self) -> Option<(Timestamp, Timer)> {
        let mut next = None;
        next = earliest(next, self.handshake.map(|t| (t, Timer::Handshake)));
        next = earliest(next, self.session_expiry.map(|t| (t, Timer::SessionExpiry)));
        next = earliest(next, self.dead_peer.map(|t| (t, Timer::Handshake)));
        next = earliest(next, self.keepalive.map(|t| (t, Timer::Keepalive)));
        next = earliest(next, self.path.map(|t| (t, Timer::Path)));
        next
    }

    /// The timers due at `now`.
    pub(super) fn due(&self, now: Timestamp) -> Due {
        let due = |t: Option<Timestamp>| t.is_some_and(|t| now >= t);
        Due {
            handshake: due(self.handshake),
            session_expiry: due(self.session_expiry),
            dead_peer: due(self.dead_peer),
            keepalive: due(self.keepalive),
            path: due(self.path),
        }
    }
}
