//! The node's side of trust: requests, approvals, rejections, revocations,
//! and the reliable requests to the rendezvous that carry them.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{Event, Known, Node};
use crate::addr::{Address, Hostname};
use crate::io::{earliest, Timer};
use crate::msg::{ErrorCode, Message, Query};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::trust::{
    Pending, Rejected, TrustApproval, TrustRequest, TrustState, Trusted, MAX_OUTGOING, MAX_REJECTED,
};

use super::CommandError;

/// Trust requests waiting for our decision, at most. Throwaway identities
/// must not grow our pending list (and `trust.state`) without bound.
pub const MAX_PENDING: usize = 64;

/// Why a request to the rendezvous failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// The rendezvous refused it.
    Refused(ErrorCode, String),
    /// No answer in time.
    Timeout,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Refused(code, msg) if msg.is_empty() => write!(f, "{code}"),
            RequestError::Refused(code, msg) => write!(f, "{code}: {msg}"),
            RequestError::Timeout => f.write_str("the rendezvous did not answer"),
        }
    }
}

/// A request to the rendezvous, resent until it is acknowledged.
pub(super) struct RvRequest {
    bytes: Vec<u8>,
    /// For a trust request: its `issued_at`, to forget it if it fails.
    outgoing: Option<u64>,
    started: Timestamp,
    retry_at: Timestamp,
}

impl Node {
    /// Peers we trust.
    pub fn trusted(&self) -> impl Iterator<Item = &Trusted> {
        self.trusted.values()
    }

    /// Requests waiting for our decision.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending_in.values()
    }

    /// Our trust requests the targets have not answered yet, oldest first.
    pub fn outgoing(&self) -> impl Iterator<Item = &TrustRequest> {
        self.outgoing.iter()
    }

    /// Rejected requests, ours and others', oldest first (the newest
    /// [`MAX_REJECTED`]).
    pub fn rejected(&self) -> impl Iterator<Item = &Rejected> {
        self.rejected.iter()
    }

    /// Records a rejection, forgetting the oldest beyond the bound.
    fn note_rejected(&mut self, r: Rejected) {
        self.rejected.push_back(r);
        while self.rejected.len() > MAX_REJECTED {
            self.rejected.pop_front();
        }
    }

    fn wall_secs_now(&self, now: Timestamp) -> u64 {
        self.config
            .wall_origin_micros
            .saturating_add(now.as_micros())
            / 1_000_000
    }

    /// Everything about trust the driver must persist; hand it back in
    /// [`super::NodeConfig::trust`] after a restart.
    pub fn trust_state(&self) -> TrustState {
        TrustState {
            trusted: self.trusted.values().cloned().collect(),
            pending: self.pending_in.values().cloned().collect(),
            outgoing: self
                .outgoing
                .iter()
                .map(|r| crate::trust::Outgoing { request: r.clone() })
                .collect(),
            last_issued_at: self.last_issued_at,
            rejected: self.rejected.iter().cloned().collect(),
        }
    }

    pub(super) fn restore_trust(&mut self, state: TrustState) {
        self.last_issued_at = state.last_issued_at;
        for t in state.trusted {
            self.pin(&t);
            self.trusted.insert(t.address, t);
        }
        for p in state.pending {
            self.note_pending(p.request.from, false);
            self.pending_in.insert(p.request.from, p);
        }
        self.outgoing = state.outgoing.into_iter().map(|o| o.request).collect();
        let extra = self.outgoing.len().saturating_sub(MAX_OUTGOING);
        self.outgoing.drain(..extra);
        for r in state.rejected {
            self.note_rejected(r);
        }
    }

    /// Records the key we pinned for a trusted peer, so its handshakes and
    /// packets are recognised.
    fn pin(&mut self, t: &Trusted) {
        let Ok(x) = t.key.x25519() else {
            return;
        };
        if let Some(old) = self.peers.insert(
            t.address,
            Known {
                key: t.key,
                x25519: x,
            },
        ) {
            if old.x25519 != x {
                self.by_key.remove(&old.x25519);
                self.tunnels.remove_peer(&old.x25519);
            }
        }
        self.by_key.insert(x, t.address);
        // The relay knows the peer by its address: it is reachable from
        // the first packet, direct paths or not.
        self.tunnels.set_relay(x, t.address.to_bytes());
    }

    fn next_issued_at(&mut self, now: Timestamp) -> u64 {
        let wall = self
            .config
            .wall_origin_micros
            .saturating_add(now.as_micros());
        self.last_issued_at = wall.max(self.last_issued_at + 1);
        self.last_issued_at
    }

    fn names_me(&self, q: &Query) -> bool {
        match q {
            Query::Address(a) => Some(*a) == self.address,
            Query::Hostname(h) => self.config.hostname.as_ref() == Some(h),
        }
    }

    /// A command naming this node as its peer is refused as such: no trust
    /// with oneself, no stream or datagram to oneself through a tunnel.
    pub(super) fn not_me(&self, peer: Address) -> Result<(), CommandError> {
        if Some(peer) == self.address {
            return Err(CommandError::IsSelf);
        }
        Ok(())
    }

    fn pending_from(&self, q: &Query) -> Option<Address> {
        self.pending_in
            .values()
            .find(|p| match q {
                Query::Address(a) => p.request.from == *a,
                Query::Hostname(h) => p.hostname.as_ref() == Some(h),
            })
            .map(|p| p.request.from)
    }

    /// Asks `to` for trust, with a reason for whoever decides. The request
    /// travels through the rendezvous, which pushes it to the target at
    /// once. Returns an ID that `Event::RequestDone` reports on; the answer
    /// arrives as `Event::Trusted` or `Event::TrustRejected`. If `to` has
    /// already asked us, this approves its request instead.
    pub fn handshake(
        &mut self,
        now: Timestamp,
        to: Query,
        reason: &str,
    ) -> Result<u32, CommandError> {
        self.now = now;
        let Some(me) = self.address else {
            return Err(CommandError::NotRegistered);
        };
        if self.names_me(&to) {
            return Err(CommandError::IsSelf);
        }
        let already = match &to {
            Query::Address(a) => self.trusted.contains_key(a),
            Query::Hostname(h) => self
                .trusted
                .values()
                .any(|t| t.hostname.as_ref() == Some(h)),
        };
        if already {
            return Err(CommandError::AlreadyTrusted);
        }
        if let Some(from) = self.pending_from(&to) {
            return self.approve(now, from);
        }
        let issued_at = self.next_issued_at(now);
        let request = TrustRequest::new(&self.config.identity, me, to, issued_at, reason);
        self.outgoing.push(request.clone());
        // Requests nobody ever answers must not pile up: the oldest go.
        if self.outgoing.len() > MAX_OUTGOING {
            self.outgoing.remove(0);
        }
        let id = self.fresh_req();
        self.send_rv_request(now, id, Message::TrustRequest { req: id, request });
        Ok(id)
    }

    /// Approves the pending request from `peer`: we trust it from now on.
    pub fn approve(&mut self, now: Timestamp, peer: Address) -> Result<u32, CommandError> {
        self.now = now;
        let Some(me) = self.address else {
            return Err(CommandError::NotRegistered);
        };
        self.not_me(peer)?;
        self.pending_order.remove(&peer);
        let Some(pending) = self.pending_in.remove(&peer) else {
            if self.trusted.contains_key(&peer) {
                return Err(CommandError::AlreadyTrusted);
            }
            return Err(CommandError::NotFound);
        };
        let approval = TrustApproval::new(&self.config.identity, me, &pending.request);
        // Our own request to the same peer is answered by this pair.
        self.outgoing
            .retain(|r| !query_names(&r.to, peer, pending.hostname.as_ref()));
        self.grant(now, peer, pending.request.from_key, pending.hostname);
        let id = self.fresh_req();
        self.send_rv_request(now, id, Message::TrustApprove { req: id, approval });
        Ok(id)
    }

    /// Rejects the pending request from `peer`.
    pub fn reject(
        &mut self,
        now: Timestamp,
        peer: Address,
        reason: &str,
    ) -> Result<u32, CommandError> {
        self.now = now;
        self.not_me(peer)?;
        self.pending_order.remove(&peer);
        let Some(pending) = self.pending_in.remove(&peer) else {
            return Err(CommandError::NotFound);
        };
        let id = self.fresh_req();
        let reason = crate::trust::truncate_reason(reason);
        self.note_rejected(Rejected {
            peer,
            hostname: pending.hostname.clone(),
            by_peer: false,
            reason: reason.clone(),
            at: self.wall_secs_now(now),
        });
        let msg = Message::TrustReject {
            req: id,
            requester: peer,
            issued_at: pending.request.issued_at,
            reason,
        };
        self.send_rv_request(now, id, msg);
        Ok(id)
    }

    /// Revokes trust in `peer`: it is told, sessions with it close on both
    /// sides, the registry drops the pair, and it cannot come back without
    /// a new handshake.
    pub fn untrust(&mut self, now: Timestamp, peer: Address) -> Result<u32, CommandError> {
        self.now = now;
        self.not_me(peer)?;
        if self.trusted.remove(&peer).is_none() {
            return Err(CommandError::NotFound);
        }
        if let Some(k) = self.peers.get(&peer) {
            let x = k.x25519;
            if self.tunnels.has_session(&x, now) {
                // Best effort: the registry tells the peer too.
                let _ = self.tunnels.send(now, &x, &Message::Revoke.to_vec());
            }
        }
        self.forget_peer(peer);
        let id = self.fresh_req();
        self.send_rv_request(now, id, Message::TrustRevoke { req: id, peer });
        Ok(id)
    }

    fn grant(
        &mut self,
        now: Timestamp,
        peer: Address,
        key: crate::PublicKey,
        hostname: Option<Hostname>,
    ) {
        let t = Trusted {
            address: peer,
            key,
            hostname: hostname.clone(),
            since: self.wall_secs_now(now),
        };
        // Trusted now: an earlier rejection between us is history.
        self.rejected.retain(|r| r.peer != peer);
        self.pin(&t);
        self.trusted.insert(peer, t);
        self.events.push_back(Event::Trusted { peer, hostname });
    }

    /// Closes everything with `peer` and forgets its sessions.
    fn forget_peer(&mut self, peer: Address) {
        let now = self.now;
        self.session_closed(peer, super::SessionEnd::TrustEnded);
        self.abort_streams_with(now, peer);
        if let Some(k) = self.peers.remove(&peer) {
            self.by_key.remove(&k.x25519);
            self.tunnels.remove_peer(&k.x25519);
        }
        self.punches.remove(&peer);
        self.release_waiting_with(
            peer,
            super::Unreachable::Resolve(super::ResolveError::NotFound),
        );
    }

    /// Records that a request from `from` arrived now; `known`: its key
    /// was known to us before it.
    fn note_pending(&mut self, from: Address, known: bool) {
        self.pending_seq += 1;
        self.pending_order.insert(from, (self.pending_seq, known));
    }

    /// With the pending list full, drops the oldest request from a key we
    /// did not know, or else the oldest of all.
    fn make_pending_room(&mut self) {
        while self.pending_in.len() >= MAX_PENDING {
            let order = |a: &Address| self.pending_order.get(a).copied().unwrap_or((0, false));
            let age = |a: &Address| order(a).0;
            let oldest_unknown = self
                .pending_in
                .keys()
                .filter(|a| !order(a).1)
                .min_by_key(|a| age(a))
                .copied();
            let victim = oldest_unknown.or_else(|| self.pending_in.keys().copied().min_by_key(age));
            let Some(victim) = victim else {
                return;
            };
            self.pending_in.remove(&victim);
            self.pending_order.remove(&victim);
            self.tunnels.stats_mut().trust_requests_dropped += 1;
        }
    }

    pub(super) fn on_trust_requested(
        &mut self,
        now: Timestamp,
        request: TrustRequest,
        hostname: Option<Hostname>,
    ) {
        if !request.verify() || !self.names_me(&request.to) {
            return self.tunnels.stats_mut().drop(DropReason::AuthFailed);
        }
        let seen = self
            .seen_requests
            .get(&request.from_key)
            .copied()
            .unwrap_or(0);
        if request.issued_at <= seen {
            return self.tunnels.stats_mut().drop(DropReason::Replay);
        }
        // A key we knew before this request: it asked before (and was
        // answered, or timed out), or we had a session with it. Throwaway
        // identities are neither, and make room for it first.
        let known_key = seen != 0
            || self
                .peers
                .get(&request.from)
                .is_some_and(|k| k.key == request.from_key);
        self.seen_requests
            .insert(request.from_key, request.issued_at);
        let from = request.from;
        let fingerprint = request.from_key.fingerprint();
        let reason = request.reason.clone();
        // We asked them too, or already trust this very key (they lost
        // their state), or approve everyone: answer at once.
        let asked = self
            .outgoing
            .iter()
            .any(|r| query_names(&r.to, from, hostname.as_ref()));
        let known = self
            .trusted
            .get(&from)
            .is_some_and(|t| t.key == request.from_key);
        let auto = asked || known || self.config.auto_approve;
        if known {
            self.trusted.remove(&from);
        }
        if !self.pending_in.contains_key(&from) {
            self.make_pending_room();
        }
        self.note_pending(from, known_key);
        self.pending_in.insert(
            from,
            Pending {
                request,
                hostname: hostname.clone(),
            },
        );
        if auto {
            let _ = self.approve(now, from);
            return;
        }
        self.events.push_back(Event::TrustRequested {
            from,
            hostname,
            fingerprint,
            reason,
        });
    }

    pub(super) fn on_trust_approved(
        &mut self,
        now: Timestamp,
        approval: TrustApproval,
        hostname: Option<Hostname>,
        endpoint: Option<core::net::SocketAddr>,
    ) {
        if !approval.verify() {
            return self.tunnels.stats_mut().drop(DropReason::AuthFailed);
        }
        let Some(i) = self.outgoing.iter().position(|r| approval.approves(r)) else {
            // Not an answer to anything we asked: forged or stale.
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        self.outgoing.remove(i);
        self.grant(now, approval.approver, approval.approver_key, hostname);
        // The first packet to the new peer need not wait for a lookup.
        if let (Some(ep), Some(k)) = (endpoint, self.peers.get(&approval.approver)) {
            let x = k.x25519;
            self.tunnels.add_candidates(x, &[ep]);
        }
    }

    pub(super) fn on_trust_rejected(
        &mut self,
        now: Timestamp,
        rejecter: Address,
        issued_at: u64,
        reason: String,
    ) {
        let Some(i) = self.outgoing.iter().position(|r| r.issued_at == issued_at) else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        let request = self.outgoing.remove(i);
        let hostname = match request.to {
            Query::Hostname(h) => Some(h),
            Query::Address(_) => self.trusted.get(&rejecter).and_then(|t| t.hostname.clone()),
        };
        self.note_rejected(Rejected {
            peer: rejecter,
            hostname,
            by_peer: true,
            reason: reason.clone(),
            at: self.wall_secs_now(now),
        });
        self.events.push_back(Event::TrustRejected {
            peer: rejecter,
            reason,
        });
    }

    pub(super) fn on_trust_revoked(&mut self, _now: Timestamp, peer: Address) {
        if self.trusted.remove(&peer).is_none() {
            return;
        }
        self.forget_peer(peer);
        self.events.push_back(Event::TrustRevoked { peer });
    }

    /// Acknowledges a push from the rendezvous (its retransmissions stop).
    pub(super) fn ack_push(&mut self, now: Timestamp, id: u32) {
        let rv = self.rv;
        let _ = self
            .tunnels
            .send(now, &rv, &Message::Ack { req: id }.to_vec());
    }

    pub(super) fn on_rv_ack(&mut self, req: u32) {
        if self.rv_requests.remove(&req).is_none() {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        }
        self.events.push_back(Event::RequestDone {
            id: req,
            result: Ok(()),
        });
    }

    pub(super) fn fail_rv_request(&mut self, req: u32, error: RequestError) {
        // A trust request that never reached its target will not be
        // answered: forget it.
        if let Some(issued_at) = self.rv_requests.remove(&req).and_then(|r| r.outgoing) {
            self.outgoing.retain(|r| r.issued_at != issued_at);
        }
        self.events.push_back(Event::RequestDone {
            id: req,
            result: Err(error),
        });
    }

    fn send_rv_request(&mut self, now: Timestamp, id: u32, msg: Message<'_>) {
        let outgoing = match &msg {
            Message::TrustRequest { request, .. } => Some(request.issued_at),
            _ => None,
        };
        self.rv_requests.insert(
            id,
            RvRequest {
                bytes: msg.to_vec(),
                outgoing,
                started: now,
                retry_at: now,
            },
        );
        self.rv_request_timers(now);
    }

    pub(super) fn rv_request_timers(&mut self, now: Timestamp) {
        let timeout = self.config.request_timeout;
        let expired: Vec<u32> = self
            .rv_requests
            .iter()
            .filter(|(_, r)| now >= r.started + timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.fail_rv_request(id, RequestError::Timeout);
        }
        if self.rv_requests.is_empty() || !self.rendezvous_ready(now) {
            return;
        }
        let rv = self.rv;
        let retry = self.config.request_retry;
        let mut due = Vec::new();
        for r in self.rv_requests.values_mut().filter(|r| r.retry_at <= now) {
            due.push(r.bytes.clone());
            r.retry_at = now + retry;
        }
        for bytes in due {
            let _ = self.tunnels.send(now, &rv, &bytes);
        }
    }

    pub(super) fn rv_request_deadline(&self) -> Option<(Timestamp, Timer)> {
        let connected = self.rendezvous_connected();
        self.rv_requests.values().fold(None, |next, r| {
            let give_up = r.started + self.config.request_timeout;
            let at = if connected {
                r.retry_at.min(give_up)
            } else {
                give_up
            };
            earliest(next, Some((at, Timer::Push)))
        })
    }
}

/// True if `q` names the node at `address` (with `hostname`).
fn query_names(q: &Query, address: Address, hostname: Option<&Hostname>) -> bool {
    match q {
        Query::Address(a) => *a == address,
        Query::Hostname(h) => Some(h) == hostname,
    }
}
