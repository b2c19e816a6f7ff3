//! Hard NATs: learning our own NAT's mapping behaviour, and crossing
//! symmetric NATs when a punch is coordinated.
//!
//! Classification: once registered (and again whenever our public
//! endpoint changes), if the rendezvous has a second reflect port, we ask
//! it which address it sees from our primary socket towards that port,
//! and from a fresh socket towards both ports (see `crate::nat`). The
//! result goes to the rendezvous in a `NatInfo` message, which it hands to
//! the peers we punch with.
//!
//! Punching: both sides get each other's classification in `PunchGo` and
//! pick their part from the pair:
//!
//! * endpoint-independent with sequential: the easy side probes a window
//!   of the ports the sequential NAT allocates next;
//! * sequential with sequential: both probe predicted ports in an order
//!   that makes some pair of mappings match (see [`Node::predict`]);
//! * endpoint-independent with random: birthday probing. The hard side
//!   asks the driver for [`BIRTHDAY_SOCKETS`] extra sockets and sends from
//!   each to the easy side's endpoint; the easy side probes random ports
//!   of the hard side's address. Both within a stated budget, then the
//!   extra sockets are closed and the relay stays.
//! * anything with random on the other side of a non-easy NAT: the relay.

use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::addr::Address;
use crate::io::{SocketId, SocketOp, Timer, Transmit};
use crate::msg::Message;
use crate::nat::{classify, Filtering, NatInfo, NatKind, Observations};
use crate::stats::DropReason;
use crate::time::Timestamp;
use crate::tunnel::{PeerKey, Spray, SprayPlan};
use crate::wire;

use super::Node;

/// Extra sockets the hard side of birthday probing opens.
pub const BIRTHDAY_SOCKETS: u32 = 256;
/// Birthday attempts (as the hard side) under way at once, at most: each
/// holds [`BIRTHDAY_SOCKETS`] sockets.
pub const MAX_BIRTHDAYS: usize = 4;
/// Rounds the hard side sends from every extra socket, one per second.
pub const BIRTHDAY_ROUNDS: u32 = 3;
/// Random ports the easy side probes at most ...
pub const BIRTHDAY_PROBES: u32 = 2048;
/// ... this many at a time ...
const BIRTHDAY_BURST: u32 = 2;
/// ... this often.
const BIRTHDAY_INTERVAL: Duration = Duration::from_micros(2500);
/// The easy side starts this long after the hard side, so the hard side's
/// mappings exist when its probes arrive.
const BIRTHDAY_HEADSTART: Duration = Duration::from_millis(50);
/// A hard-NAT attempt ends this long after it started, whatever is left.
pub const HARD_ATTEMPT: Duration = Duration::from_secs(3);
/// Predicted ports per round (prediction).
pub const PREDICT_WINDOW: u16 = 32;
/// Rounds of predicted ports, and the time between them.
const PREDICT_ROUNDS: u32 = 20;
const PREDICT_INTERVAL: Duration = Duration::from_millis(100);
/// Reflect requests are resent this often, this many times.
const REFLECT_RETRY: Duration = Duration::from_secs(1);
const REFLECT_TRIES: u32 = 3;
/// The classification report is resent until acknowledged, this many times.
const REPORT_TRIES: u32 = 5;

/// Our NAT, as far as we know it, and the sockets we hold for it.
#[derive(Clone, Debug, Default)]
pub(super) struct HardNat {
    /// Our classification.
    pub(super) info: NatInfo,
    probe: Option<ReflectProbe>,
    /// Classification report waiting for the rendezvous's Ack.
    report: Option<(u32, u32, Timestamp)>,
    /// Extra sockets open for birthday probing, by peer, and when the
    /// attempt ends.
    birthday: alloc::collections::BTreeMap<Address, (Timestamp, Vec<SocketId>)>,
    next_socket: u16,
    /// Extra sockets a finished attempt left open for a validated path;
    /// closed once no path uses them.
    kept: alloc::collections::BTreeSet<SocketId>,
    pub(super) socket_ops: alloc::collections::VecDeque<SocketOp>,
    pub(super) out: alloc::collections::VecDeque<Transmit>,
    /// The reflect address the rendezvous announced (`ReflectPort`), used
    /// when none is configured.
    learned_reflect: Option<SocketAddr>,
    /// What the last classification saw.
    last: Option<NatReport>,
}

/// What the node's last NAT classification saw (`pilotctl netcheck`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatReport {
    /// The reflect address it asked (the rendezvous's second port).
    pub reflect: SocketAddr,
    /// The result.
    pub info: NatInfo,
    /// The ports behind it.
    pub observations: Observations,
    /// The public endpoints the rendezvous reflected, in the order of
    /// [`Observations`]: primary → main port (the registration), primary
    /// → reflect port, fresh socket → main port, fresh socket → reflect
    /// port; `None` where no answer came.
    pub seen: [Option<SocketAddr>; 4],
    /// Whether the NAT lets in a port never sent to (measured only by a
    /// full check, [`Node::reclassify`]).
    pub filtering: Filtering,
    /// Whether a datagram sent from behind the NAT to our own public
    /// endpoint came back to us (full check only; `None` when not measured).
    pub hairpinning: Option<bool>,
}

/// The extra requests of a full check (`pilotctl netcheck`): filtering
/// and hairpinning. They cost a second extra socket and, on a NAT that
/// filters or does not hairpin, the full 3 s of tries, so a
/// classification for punching does without them.
#[derive(Clone, Debug)]
struct FullCheck {
    /// A socket that sends only to the main port, so the NAT has no
    /// reason to let the reflect port in.
    socket: SocketId,
    /// Primary socket → main port, answer from the reflect port: proves
    /// the rendezvous can (the primary socket also sent to that port, so
    /// any NAT lets the answer in).
    control: [u8; 8],
    /// The check's socket → main port, answer from the reflect port.
    filter: [u8; 8],
    /// Primary socket → its own public endpoint.
    hairpin: [u8; 8],
    /// `Some(true)` once the control came back from the reflect port,
    /// `Some(false)` if it came back from the port asked (a rendezvous
    /// that cannot answer from the other port).
    control_seen: Option<bool>,
    filter_seen: bool,
    hairpin_seen: bool,
}

#[derive(Clone, Debug)]
struct ReflectProbe {
    obs: Observations,
    /// Tokens of the three requests: primary → second port, fresh →
    /// main port, fresh → second port.
    tokens: [[u8; 8]; 3],
    socket: SocketId,
    tries: u32,
    next_at: Timestamp,
    reflect: SocketAddr,
    seen: [Option<SocketAddr>; 4],
    full: Option<FullCheck>,
}

impl ReflectProbe {
    /// True when every request has its answer.
    fn complete(&self) -> bool {
        let o = self.obs;
        o.p2.is_some()
            && o.q1.is_some()
            && o.q2.is_some()
            && self
                .full
                .as_ref()
                .is_none_or(|f| f.control_seen.is_some() && f.filter_seen && f.hairpin_seen)
    }

    /// The extra sockets it holds.
    fn sockets(&self) -> impl Iterator<Item = SocketId> + '_ {
        core::iter::once(self.socket).chain(self.full.as_ref().map(|f| f.socket))
    }
}

impl HardNat {
    /// A socket id not in use (ids wrap after 65 535; the few still open
    /// are skipped).
    fn fresh_socket(&mut self) -> SocketId {
        // Bounded: attempts are capped, so most ids are always free.
        for _ in 0..u16::MAX {
            self.next_socket = self.next_socket.wrapping_add(1).max(1);
            let id = SocketId(self.next_socket);
            let busy = self.kept.contains(&id)
                || self
                    .probe
                    .as_ref()
                    .is_some_and(|p| p.sockets().any(|s| s == id))
                || self.birthday.values().any(|(_, s)| s.contains(&id));
            if !busy {
                return id;
            }
        }
        SocketId(self.next_socket)
    }
}

impl Node {
    /// Where we send reflects: the configured reflect address, else the
    /// one the rendezvous announced; `None` when neither is known.
    pub fn reflect_addr(&self) -> Option<SocketAddr> {
        self.config.reflect_addr.or(self.hardnat.learned_reflect)
    }

    /// What our last NAT classification saw, if one finished.
    pub fn nat_report(&self) -> Option<NatReport> {
        self.hardnat.last
    }

    /// Classifies our NAT again now, with the filtering and hairpinning
    /// checks too (`pilotctl netcheck`); false when it cannot: relay-only,
    /// no reflect address known, or not registered yet. Answers come as
    /// `NatClassified`, within about 3 s.
    pub fn reclassify(&mut self, now: Timestamp) -> bool {
        if self.config.relay_only || self.reflect_addr().is_none() || self.public_endpoint.is_none()
        {
            return false;
        }
        self.start_reflect_with(now, true);
        true
    }

    /// True while a classification is under way.
    pub fn nat_classifying(&self) -> bool {
        self.hardnat.probe.is_some()
    }

    /// The rendezvous announced its reflect port (`ReflectPort`, after
    /// `Registered`). A configured `reflect_addr` wins; a new port starts
    /// classification once we know our public endpoint.
    pub(super) fn on_reflect_port(&mut self, now: Timestamp, port: u16) {
        if self.config.reflect_addr.is_some() {
            return;
        }
        let addr = SocketAddr::new(self.config.rendezvous_addr.ip(), port);
        if self.hardnat.learned_reflect == Some(addr) {
            return;
        }
        self.hardnat.learned_reflect = Some(addr);
        // Nothing yet without a public endpoint: `Registered` starts it.
        self.start_reflect(now);
    }

    /// Ends a classification under way and closes its socket: the node
    /// became relay-only.
    pub(super) fn stop_reflect(&mut self) {
        if let Some(old) = self.hardnat.probe.take() {
            for s in old.sockets() {
                self.hardnat.socket_ops.push_back(SocketOp::Close(s));
            }
        }
    }

    /// Starts classifying our NAT, if the rendezvous has a reflect port.
    pub(super) fn start_reflect(&mut self, now: Timestamp) {
        self.start_reflect_with(now, false)
    }

    /// Starts classifying our NAT, and if `full` checking filtering and
    /// hairpinning too.
    fn start_reflect_with(&mut self, now: Timestamp, full: bool) {
        // A relay-only (compat) agent sends no UDP at all.
        if self.config.relay_only {
            return;
        }
        let (Some(reflect), Some(public)) = (self.reflect_addr(), self.public_endpoint) else {
            return;
        };
        self.stop_reflect();
        let socket = self.hardnat.fresh_socket();
        self.hardnat.socket_ops.push_back(SocketOp::Open {
            id: socket,
            port: None,
        });
        let mut tokens = [[0u8; 8]; 3];
        for t in &mut tokens {
            *t = self.rng.next_u64().to_le_bytes();
        }
        let full = full.then(|| {
            // `fresh_socket` skips the probe's socket only once the probe
            // is in place: take the next id by hand.
            let mut check = self.hardnat.fresh_socket();
            if check == socket {
                check = self.hardnat.fresh_socket();
            }
            self.hardnat.socket_ops.push_back(SocketOp::Open {
                id: check,
                port: None,
            });
            FullCheck {
                socket: check,
                control: self.rng.next_u64().to_le_bytes(),
                filter: self.rng.next_u64().to_le_bytes(),
                hairpin: self.rng.next_u64().to_le_bytes(),
                control_seen: None,
                filter_seen: false,
                hairpin_seen: false,
            }
        });
        self.hardnat.probe = Some(ReflectProbe {
            obs: Observations {
                p1: Some(public.port()),
                ..Observations::default()
            },
            tokens,
            socket,
            tries: 0,
            next_at: now,
            reflect,
            seen: [Some(public), None, None, None],
            full,
        });
        self.reflect_timer(now);
    }

    fn send_reflects(&mut self) {
        let Some(p) = &self.hardnat.probe else {
            return;
        };
        let alt = p.reflect;
        let main = self.config.rendezvous_addr;
        let o = p.obs;
        // In this order: a sequential NAT allocates in it.
        let wanted = [
            (o.p2, SocketId::PRIMARY, alt, p.tokens[0]),
            (o.q1, p.socket, main, p.tokens[1]),
            (o.q2, p.socket, alt, p.tokens[2]),
        ];
        for (seen, socket, to, token) in wanted {
            if seen.is_none() {
                self.hardnat
                    .out
                    .push_back(Transmit::new(socket, to, wire::reflect(token, false)));
            }
        }
        // After those (a sequential NAT's ports stay in the order
        // classification expects): the full check's requests.
        let Some(f) = &p.full else {
            return;
        };
        let public = p.seen[0];
        let mut extra = Vec::new();
        if f.control_seen.is_none() {
            extra.push((SocketId::PRIMARY, main, wire::reflect(f.control, true)));
        }
        if !f.filter_seen {
            extra.push((f.socket, main, wire::reflect(f.filter, true)));
        }
        if let (false, Some(public)) = (f.hairpin_seen, public) {
            // A Reflect from the primary socket to its own public
            // endpoint: nobody answers it, we only look for it arriving
            // back. From the same socket, so that a filtering NAT lets it
            // in as an answer to what that socket just sent.
            extra.push((SocketId::PRIMARY, public, wire::reflect(f.hairpin, false)));
        }
        for (socket, to, payload) in extra {
            self.hardnat
                .out
                .push_back(Transmit::new(socket, to, payload));
        }
    }

    /// Resends reflect requests, classifies when done or out of tries, and
    /// resends an unacknowledged report.
    pub(super) fn reflect_timer(&mut self, now: Timestamp) {
        if let Some(p) = &mut self.hardnat.probe {
            if now >= p.next_at {
                if p.tries >= REFLECT_TRIES {
                    self.finish_reflect(now);
                } else {
                    p.tries += 1;
                    p.next_at = now + REFLECT_RETRY;
                    self.send_reflects();
                }
            }
        }
        if let Some((req, tries, at)) = self.hardnat.report {
            if now >= at {
                if tries >= REPORT_TRIES {
                    self.hardnat.report = None;
                } else {
                    self.hardnat.report = Some((req, tries + 1, now + REFLECT_RETRY));
                    let msg = Message::NatInfo {
                        req,
                        info: self.hardnat.info,
                    };
                    let rv = self.rv;
                    // The first time twice: a peer may punch with us any
                    // moment, and without our report it cannot know its
                    // part. The rendezvous acknowledges both; it is idempotent.
                    for _ in 0..if tries == 0 { 2 } else { 1 } {
                        let _ = self.tunnels.send(now, &rv, &msg.to_vec());
                    }
                }
            }
        }
    }

    /// When the reflect or report timers want us.
    pub(super) fn reflect_deadline(&self) -> Option<(Timestamp, Timer)> {
        let a = self.hardnat.probe.as_ref().map(|p| p.next_at);
        let b = self.hardnat.report.map(|r| r.2);
        let at = match (a, b) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some((at, Timer::Reflect))
    }

    /// A Reflected packet arrived on `socket` from `from`.
    pub(super) fn on_reflected(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        token: [u8; 8],
        observed: SocketAddr,
    ) {
        let main = self.config.rendezvous_addr;
        let Some(p) = self
            .hardnat
            .probe
            .as_mut()
            .filter(|p| from == main || from == p.reflect)
        else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        let port = Some(observed.port());
        if let Some(f) = p.full.as_mut() {
            if token == f.control && socket == SocketId::PRIMARY {
                f.control_seen = Some(from == p.reflect);
                return self.finish_if_complete(now);
            }
            if token == f.filter && socket == f.socket {
                // From the port asked, it proves nothing about filtering:
                // the control says then that the rendezvous cannot.
                f.filter_seen = from == p.reflect;
                return self.finish_if_complete(now);
            }
        }
        match p.tokens.iter().position(|t| *t == token) {
            Some(0) if socket == SocketId::PRIMARY => p.obs.p2 = port,
            Some(1) if socket == p.socket => p.obs.q1 = port,
            Some(2) if socket == p.socket => p.obs.q2 = port,
            _ => return self.tunnels.stats_mut().drop(DropReason::Unexpected),
        }
        if let Some(i) = p.tokens.iter().position(|t| *t == token) {
            p.seen[i + 1] = Some(observed);
        }
        self.finish_if_complete(now);
    }

    /// A Reflect request reached us: our own hairpin check's, if it came
    /// in on the primary socket with its token; anything else is dropped.
    pub(super) fn on_reflect_to_us(&mut self, now: Timestamp, socket: SocketId, token: [u8; 8]) {
        let Some(f) = self
            .hardnat
            .probe
            .as_mut()
            .and_then(|p| p.full.as_mut())
            .filter(|f| f.hairpin == token && socket == SocketId::PRIMARY)
        else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        f.hairpin_seen = true;
        self.finish_if_complete(now);
    }

    fn finish_if_complete(&mut self, now: Timestamp) {
        if self.hardnat.probe.as_ref().is_some_and(|p| p.complete()) {
            self.finish_reflect(now);
        }
    }

    fn finish_reflect(&mut self, now: Timestamp) {
        let Some(p) = self.hardnat.probe.take() else {
            return;
        };
        for s in p.sockets() {
            self.hardnat.socket_ops.push_back(SocketOp::Close(s));
        }
        let o = p.obs;
        let kind = classify(&o);
        let per_destination = matches!(kind, NatKind::Sequential { .. } | NatKind::Random);
        let (filtering, hairpinning) = match &p.full {
            None => (Filtering::Unknown, None),
            Some(f) => (
                match (f.filter_seen, f.control_seen) {
                    (true, _) => Filtering::AddressOrNone,
                    (false, Some(true)) => Filtering::PortDependent,
                    // A NAT that maps per destination keeps the control
                    // out too (no mapping of ours sent to both ports):
                    // the missing answer says port-dependent all the same.
                    (false, None) if per_destination => Filtering::PortDependent,
                    _ => Filtering::Unknown,
                },
                p.seen[0].map(|_| f.hairpin_seen),
            ),
        };
        let last_port = o.q2.or(o.q1).or(o.p2).or(o.p1).unwrap_or(0);
        self.hardnat.info = NatInfo { kind, last_port };
        self.hardnat.last = Some(NatReport {
            reflect: p.reflect,
            info: self.hardnat.info,
            observations: o,
            seen: p.seen,
            filtering,
            hairpinning,
        });
        let req = self.next_req;
        self.next_req = self.next_req.wrapping_add(1);
        self.hardnat.report = Some((req, 0, now));
        self.events.push_back(super::Event::NatClassified { kind });
        self.reflect_timer(now);
    }

    /// The rendezvous acknowledged `req`; true if it was our report.
    pub(super) fn nat_report_acked(&mut self, req: u32) -> bool {
        if self.hardnat.report.is_some_and(|r| r.0 == req) {
            self.hardnat.report = None;
            return true;
        }
        false
    }

    /// Our part in a punch with `peer` (key `x`), whose NAT is `theirs`
    /// and whose public endpoint is `endpoint`, starting at `start`.
    pub(super) fn hard_punch(
        &mut self,
        start: Timestamp,
        peer: Address,
        x: PeerKey,
        theirs: NatInfo,
        endpoint: SocketAddr,
    ) {
        use NatKind::*;
        let mine = self.hardnat.info.kind;
        let deadline = start + HARD_ATTEMPT;
        let spray = match (mine, theirs.kind) {
            (Random, EndpointIndependent) => {
                self.close_birthday(peer);
                if self.hardnat.birthday.len() >= MAX_BIRTHDAYS {
                    // Enough sockets open already: this peer stays on
                    // the relay until a later attempt.
                    return;
                }
                let sockets: Vec<SocketId> = (0..BIRTHDAY_SOCKETS)
                    .map(|_| {
                        let id = self.hardnat.fresh_socket();
                        self.hardnat
                            .socket_ops
                            .push_back(SocketOp::Open { id, port: None });
                        id
                    })
                    .collect();
                self.hardnat
                    .birthday
                    .insert(peer, (deadline, sockets.clone()));
                Spray {
                    plan: SprayPlan::FromSockets {
                        sockets,
                        addr: endpoint,
                    },
                    start,
                    burst: BIRTHDAY_SOCKETS,
                    interval: Duration::from_secs(1),
                    budget: BIRTHDAY_SOCKETS * BIRTHDAY_ROUNDS,
                    deadline,
                }
            }
            (EndpointIndependent, Random) => Spray {
                plan: SprayPlan::RandomPorts { ip: endpoint.ip() },
                start: start + BIRTHDAY_HEADSTART,
                burst: BIRTHDAY_BURST,
                interval: BIRTHDAY_INTERVAL,
                budget: BIRTHDAY_PROBES,
                deadline,
            },
            (EndpointIndependent, Sequential { stride }) => {
                let ports = (1..=PREDICT_WINDOW).map(|k| (k, stride));
                self.predict(start, deadline, endpoint, theirs.last_port, ports)
            }
            (Sequential { .. }, Sequential { stride }) => {
                // The leader walks the follower's next ports one by one;
                // the follower walks the leader's at twice the stride.
                // The leader's k-th new mapping has port a + (d1 + k) s1
                // for some unknown d1 >= 1; the follower's j-th, b + (d2
                // + j) s2. The follower's j-th probe matches the leader's
                // k-th mapping when k = j + d2 - 1 and 2j + 1 = d1 + k,
                // that is j = d1 + d2 - 2: some j in the window always
                // does while the unknown offsets stay small.
                let leader = self.address.is_some_and(|me| me < peer);
                let ports = (0..PREDICT_WINDOW).map(|i| {
                    if leader {
                        (i + 1, stride)
                    } else {
                        (2 * i + 1, stride)
                    }
                });
                self.predict(start, deadline, endpoint, theirs.last_port, ports)
            }
            _ => return,
        };
        self.tunnels.start_spray(&x, spray);
    }

    /// A prediction spray: `(k, stride)` gives the port `last + k·stride`
    /// of `endpoint`'s address.
    fn predict(
        &self,
        start: Timestamp,
        deadline: Timestamp,
        endpoint: SocketAddr,
        last: u16,
        ports: impl Iterator<Item = (u16, u16)>,
    ) -> Spray {
        let targets: Vec<SocketAddr> = ports
            .map(|(k, s)| {
                let port = last.wrapping_add(k.wrapping_mul(s));
                // Ports below 1024 are never allocated; wrap into range.
                let port = if port < 1024 {
                    port.wrapping_add(1024)
                } else {
                    port
                };
                SocketAddr::new(endpoint.ip(), port)
            })
            .collect();
        let window = targets.len() as u32;
        Spray {
            plan: SprayPlan::Targets(targets),
            start,
            burst: window,
            interval: PREDICT_INTERVAL,
            budget: window * PREDICT_ROUNDS,
            deadline,
        }
    }

    /// Closes the extra sockets of a birthday attempt with `peer` that no
    /// validated path uses.
    fn close_birthday(&mut self, peer: Address) {
        let Some((_, sockets)) = self.hardnat.birthday.remove(&peer) else {
            return;
        };
        let in_use = self.tunnels.sockets_in_use();
        for s in sockets {
            if in_use.contains(&s) {
                self.hardnat.kept.insert(s);
            } else {
                self.hardnat.socket_ops.push_back(SocketOp::Close(s));
            }
        }
    }

    /// Ends birthday attempts whose time is up or whose peer went direct.
    pub(super) fn birthday_timers(&mut self, now: Timestamp) {
        let done: Vec<Address> = self
            .hardnat
            .birthday
            .iter()
            .filter(|(peer, (deadline, _))| {
                let direct = self
                    .peers
                    .get(peer)
                    .is_some_and(|k| self.tunnels.is_direct(&k.x25519));
                now >= *deadline || direct
            })
            .map(|(p, _)| *p)
            .collect();
        for peer in done {
            self.close_birthday(peer);
        }
        if !self.hardnat.kept.is_empty() {
            let in_use = self.tunnels.sockets_in_use();
            let idle: Vec<SocketId> = self
                .hardnat
                .kept
                .iter()
                .copied()
                .filter(|s| !in_use.contains(s))
                .collect();
            for s in idle {
                self.hardnat.kept.remove(&s);
                self.hardnat.socket_ops.push_back(SocketOp::Close(s));
            }
        }
    }

    /// When a birthday attempt ends.
    pub(super) fn birthday_deadline(&self) -> Option<(Timestamp, Timer)> {
        self.hardnat
            .birthday
            .values()
            .map(|(d, _)| *d)
            .min()
            .map(|d| (d, Timer::Punch))
    }

    /// The next change to our sockets the driver should make.
    pub fn poll_socket_op(&mut self) -> Option<SocketOp> {
        self.hardnat.socket_ops.pop_front()
    }

    /// Our extra sockets that carry a validated direct path: the only
    /// ones a finished birthday attempt leaves open.
    pub fn sockets_in_use(&self) -> alloc::collections::BTreeSet<SocketId> {
        self.tunnels.sockets_in_use()
    }

    /// What we learned about our NAT.
    pub fn nat_info(&self) -> NatInfo {
        self.hardnat.info
    }
}
