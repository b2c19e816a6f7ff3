//! Paths: the ways a peer can be reached, and which one carries data.
//!
//! A peer has a set of direct candidates (its LAN addresses, its public
//! endpoint as the rendezvous reflects it, addresses it was heard from)
//! and, when the rendezvous relays for us, the relay. A direct candidate
//! carries data only once validated: a challenge we sent on it was
//! answered inside the session, or a handshake round trip completed on it.
//! An authenticated packet from an address we do not know starts that
//! validation; it never moves the path by itself, so a host that replays
//! or forwards a peer's packets cannot redirect its traffic.
//!
//! The relay needs no validation: it is the floor, usable from the first
//! packet. A validated direct path is preferred over it; when the direct
//! path stops answering, data falls back to the relay.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use crate::io::SocketId;
use crate::time::Timestamp;

/// The tag the relay knows an agent by: its 48-bit pilot address.
pub type RelayTag = [u8; 6];

/// Most direct candidates remembered per peer: an attacker who makes us
/// hear a peer from many addresses must not make the set grow.
pub const MAX_CANDIDATES: usize = 16;

/// A silent active path is challenged again this often until it answers
/// or is declared failed: one lost answer must not fail a working path.
const RECHECK: Duration = Duration::from_millis(500);

/// Challenges remembered per candidate.
const OUTSTANDING: usize = 16;

/// Where a tunnel packet goes or came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// Straight over UDP, through one of our sockets.
    Direct {
        /// Our socket.
        socket: SocketId,
        /// The peer's address.
        addr: SocketAddr,
    },
    /// Through the rendezvous's relay, which knows the peer by this tag.
    Relay(RelayTag),
}

impl Route {
    /// A direct route through our primary socket.
    pub fn direct(addr: SocketAddr) -> Self {
        Route::Direct {
            socket: SocketId::PRIMARY,
            addr,
        }
    }

    /// The peer's address, for a direct route.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            Route::Direct { addr, .. } => Some(*addr),
            Route::Relay(_) => None,
        }
    }

    /// The bucket this route's handshakes count against under load: the
    /// sender's host for a direct route, the relayed agent for a relayed
    /// one (never the rendezvous's address, which every relayed agent
    /// shares).
    pub fn limit_source(&self) -> crate::cookie::LimitSource {
        match self {
            Route::Direct { addr, .. } => crate::cookie::LimitSource::of(*addr),
            Route::Relay(tag) => crate::cookie::LimitSource::Relayed(*tag),
        }
    }

    /// What a cookie binds to: the address for a direct route, the relayed
    /// agent for a relayed one (so cookies and handshake limits never lump
    /// every relayed agent together under the rendezvous's address).
    pub fn cookie_source(&self) -> Vec<u8> {
        match self {
            Route::Direct { addr, .. } => crate::cookie::source_bytes(*addr),
            Route::Relay(tag) => {
                let mut v = Vec::with_capacity(11);
                v.extend_from_slice(b"relay");
                v.extend_from_slice(tag);
                v
            }
        }
    }
}

impl core::fmt::Display for Route {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Route::Direct { socket, addr } if *socket == SocketId::PRIMARY => {
                write!(f, "direct {addr}")
            }
            Route::Direct { socket, addr } => write!(f, "direct {addr} from {socket}"),
            Route::Relay(tag) => write!(f, "relay {}", crate::addr::Address::from_bytes(*tag)),
        }
    }
}

/// Where a direct candidate stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PathState {
    /// Known, not tried yet.
    #[default]
    Unknown,
    /// Challenges are going out.
    Probing,
    /// Answered a challenge or a handshake: may carry data.
    Validated,
    /// Probing ran out without an answer, or a validated path went silent.
    Failed,
}

impl core::fmt::Display for PathState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PathState::Unknown => "unknown",
            PathState::Probing => "probing",
            PathState::Validated => "validated",
            PathState::Failed => "failed",
        })
    }
}

/// Pacing and limits of path probing and liveness, stated in
/// `docs/PROTOCOL.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathConfig {
    /// Time between two probes of one candidate while punching.
    pub probe_interval: Duration,
    /// Probes per candidate in one punching attempt.
    pub probes_per_attempt: u32,
    /// A validated direct path that carried data and heard nothing back
    /// for this long is challenged.
    pub check_after: Duration,
    /// ... and declared failed (data falls back to the relay) this long
    /// after it last answered.
    pub dead_after: Duration,
    /// Keepalive on an active direct path below common NAT timeouts
    /// (Linux conntrack keeps an unanswered UDP flow 30 s).
    pub keepalive: Duration,
    /// Keep paths alive only this long after the last data either way.
    pub idle_after: Duration,
}

impl Default for PathConfig {
    fn default() -> Self {
        PathConfig {
            probe_interval: Duration::from_millis(50),
            probes_per_attempt: 40,
            check_after: Duration::from_millis(800),
            dead_after: Duration::from_millis(2500),
            keepalive: Duration::from_secs(20),
            idle_after: Duration::from_secs(180),
        }
    }
}

/// One direct candidate.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) route: Route,
    pub(crate) state: PathState,
    /// Smoothed round trip (RFC 6298's 1/8 gain).
    pub(crate) srtt: Option<Duration>,
    pub(crate) last_heard: Option<Timestamp>,
    /// The latest challenges and when each went out: probes go out every
    /// few tens of milliseconds, so an answer may be to any of the last
    /// few when the round trip is longer than the pacing.
    pub(crate) challenges: [Option<(u64, Timestamp)>; OUTSTANDING],
    /// Probes left in this attempt, and when the next one is due.
    pub(crate) probes_left: u32,
    pub(crate) next_probe: Option<Timestamp>,
    /// Data went out on this path and nothing came back since then.
    pub(crate) unanswered_since: Option<Timestamp>,
    /// Probes sent to this candidate, ever.
    pub(crate) probes_sent: u64,
}

impl Candidate {
    fn new(route: Route) -> Self {
        Candidate {
            route,
            state: PathState::Unknown,
            srtt: None,
            last_heard: None,
            challenges: [None; OUTSTANDING],
            probes_left: 0,
            next_probe: None,
            unanswered_since: None,
            probes_sent: 0,
        }
    }

    /// Remembers a challenge sent at `now`, forgetting the oldest.
    fn challenge(&mut self, token: u64, now: Timestamp) {
        self.challenges.rotate_right(1);
        self.challenges[0] = Some((token, now));
    }

    /// When the challenge `token` went out, if it is one of ours.
    fn take_challenge(&mut self, token: u64) -> Option<Timestamp> {
        let sent = self
            .challenges
            .iter()
            .flatten()
            .find(|(t, _)| *t == token)
            .map(|(_, at)| *at)?;
        self.challenges = [None; OUTSTANDING];
        Some(sent)
    }

    fn sample_rtt(&mut self, rtt: Duration) {
        self.srtt = Some(match self.srtt {
            None => rtt,
            Some(s) => (s * 7 + rtt) / 8,
        });
    }
}

/// A peer's paths, for diagnostics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The candidate.
    pub route: Route,
    /// Where it stands.
    pub state: PathState,
    /// Smoothed round trip, once measured.
    pub rtt: Option<Duration>,
    /// When the peer was last heard on it.
    pub last_heard: Option<Timestamp>,
    /// Probes sent on it.
    pub probes_sent: u64,
}

/// Where a spray's probes go (see [`Spray`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SprayPlan {
    /// Distinct random ports of `ip` (1024-65535), from our primary
    /// socket: the easy side of birthday probing.
    RandomPorts {
        /// The hard side's public address.
        ip: IpAddr,
    },
    /// These destinations in this order, round after round, from our
    /// primary socket: port prediction. The first round's order matters
    /// (a sequential NAT allocates in the order destinations are new).
    Targets(Vec<SocketAddr>),
    /// From each of these sockets to `addr`, round after round: the hard
    /// side of birthday probing (each socket opens one mapping).
    FromSockets {
        /// Our extra sockets.
        sockets: Vec<SocketId>,
        /// The easy side's public endpoint.
        addr: SocketAddr,
    },
}

/// Path challenges aimed at many routes at once, all with one token: an
/// answer on any route validates that route. Bounded by a probe budget and
/// a deadline; it also ends as soon as a direct path is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spray {
    /// Where the probes go.
    pub plan: SprayPlan,
    /// The first probes go out then.
    pub start: Timestamp,
    /// Probes sent together ...
    pub burst: u32,
    /// ... every this long.
    pub interval: Duration,
    /// Probes at most.
    pub budget: u32,
    /// No probe after this.
    pub deadline: Timestamp,
}

#[derive(Clone, Debug)]
struct SprayState {
    spray: Spray,
    token: u64,
    sent: u32,
    next_at: Timestamp,
    cursor: usize,
    /// When each route was last probed (for the first RTT sample), and
    /// how many probes had gone out by then.
    sent_at: BTreeMap<Route, (Timestamp, u32)>,
    tried: BTreeSet<u16>,
}

/// What a [`PathSet`] asks its owner to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PathAction {
    /// A challenge with this token on this route.
    Challenge(Route, u64),
}

/// Every path to one peer and the one in use.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathSet {
    pub(crate) candidates: Vec<Candidate>,
    pub(crate) relay: Option<RelayTag>,
    pub(crate) relay_heard: Option<Timestamp>,
    active: Option<Route>,
    /// Follow the peer to wherever its authenticated packets come from
    /// (the rendezvous's policy: it only answers) instead of validating.
    pub(crate) follow: bool,
    /// Punching starts at this time (once a session can carry probes).
    pub(crate) punch_at: Option<Timestamp>,
    spray: Option<SprayState>,
    spray_probes: u64,
    /// The probe (counted from 1) of the last spray that found a path,
    /// or the probes it had sent when a path was found another way.
    pub(crate) spray_hit: Option<u32>,
}

impl PathSet {
    pub(crate) fn new(follow: bool) -> Self {
        PathSet {
            follow,
            ..PathSet::default()
        }
    }

    /// The route data takes now.
    pub(crate) fn active(&self) -> Option<Route> {
        self.active
    }

    /// True if some route can carry a handshake or data.
    pub(crate) fn routable(&self) -> bool {
        self.active.is_some() || self.fallback().is_some()
    }

    /// Where a handshake goes when no path is validated: the relay if we
    /// have one (it always works), else the first candidate (nothing
    /// better to try; a LAN or open peer answers there).
    pub(crate) fn fallback(&self) -> Option<Route> {
        if let Some(tag) = self.relay {
            return Some(Route::Relay(tag));
        }
        self.candidates
            .iter()
            .find(|c| c.state != PathState::Failed)
            .or(self.candidates.first())
            .map(|c| c.route)
    }

    /// Where a handshake initiation goes: the active path if there is
    /// one; else the relay and the first two direct candidates not known
    /// to fail, raced (the peer answers whichever copy arrives first).
    pub(crate) fn handshake_routes(&self) -> Vec<Route> {
        if let Some(a @ Route::Direct { .. }) = self.active {
            return alloc::vec![a];
        }
        let mut routes: Vec<Route> = self.relay.map(Route::Relay).into_iter().collect();
        routes.extend(
            self.candidates
                .iter()
                .filter(|c| c.state != PathState::Failed)
                .take(2)
                .map(|c| c.route),
        );
        if routes.is_empty() {
            routes.extend(self.fallback());
        }
        routes
    }

    /// The route for the next packet: the active path, else the fallback.
    pub(crate) fn route(&self) -> Option<Route> {
        self.active.or_else(|| self.fallback())
    }

    fn find(&mut self, route: &Route) -> Option<&mut Candidate> {
        self.candidates.iter_mut().find(|c| c.route == *route)
    }

    /// Adds a candidate if it is new and there is room. Returns whether
    /// it is (now) known.
    pub(crate) fn add(&mut self, route: Route) -> bool {
        if matches!(route, Route::Relay(_)) {
            return false;
        }
        if self.candidates.iter().any(|c| c.route == route) {
            return true;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // Make room by forgetting a failed or untried candidate, else
            // the one probed longest (a peer birthday-probing from many
            // sockets is heard from more addresses than we keep, and the
            // one it keeps is among the last), never a validated one.
            let Some(i) = self
                .candidates
                .iter()
                .position(|c| matches!(c.state, PathState::Failed | PathState::Unknown))
                .or_else(|| {
                    self.candidates
                        .iter()
                        .position(|c| c.state == PathState::Probing)
                })
            else {
                return false;
            };
            self.candidates.remove(i);
        }
        self.candidates.push(Candidate::new(route));
        true
    }

    /// A path we were told to use without validating it (the rendezvous's
    /// configured address, or a test's).
    pub(crate) fn configure(&mut self, route: Route) {
        self.add(route);
        if let Some(c) = self.find(&route) {
            c.state = PathState::Validated;
        }
        self.active = Some(route);
    }

    /// Starts a probing attempt on every candidate not validated.
    pub(crate) fn start_probing(&mut self, now: Timestamp, config: &PathConfig) {
        self.punch_at = None;
        for c in &mut self.candidates {
            if c.state != PathState::Validated {
                c.state = PathState::Probing;
                c.probes_left = config.probes_per_attempt;
                c.next_probe = Some(now);
            }
        }
    }

    /// Starts probing one candidate (a peer heard from a new address).
    fn probe_one(&mut self, now: Timestamp, route: Route, config: &PathConfig) {
        if let Some(c) = self.find(&route) {
            if c.state != PathState::Validated && c.next_probe.is_none() {
                c.state = PathState::Probing;
                c.probes_left = config.probes_per_attempt.min(10);
                c.next_probe = Some(now);
            }
        }
    }

    /// An authenticated packet arrived on `route`. Returns true if the
    /// active path changed (follow policy).
    pub(crate) fn heard(&mut self, now: Timestamp, route: Route, config: &PathConfig) -> bool {
        if let Route::Relay(_) = route {
            self.relay_heard = Some(now);
            return false;
        }
        if self.follow {
            self.add(route);
            if let Some(c) = self.find(&route) {
                c.state = PathState::Validated;
                c.last_heard = Some(now);
            }
            let changed = self.active != Some(route);
            self.active = Some(route);
            return changed;
        }
        if !self.add(route) {
            return false;
        }
        let validated = match self.find(&route) {
            Some(c) => {
                c.last_heard = Some(now);
                c.unanswered_since = None;
                c.state == PathState::Validated
            }
            None => false,
        };
        if !validated {
            self.probe_one(now, route, config);
        }
        false
    }

    /// Starts `spray` with `token` (replacing one under way).
    pub(crate) fn start_spray(&mut self, spray: Spray, token: u64) {
        self.spray = Some(SprayState {
            next_at: spray.start,
            spray,
            token,
            sent: 0,
            cursor: 0,
            sent_at: BTreeMap::new(),
            tried: BTreeSet::new(),
        });
    }

    /// True while a spray is under way.
    pub(crate) fn spraying(&self) -> bool {
        self.spray.is_some()
    }

    /// The spray's probes due at `now`, if any; ends it when its budget or
    /// time is spent or a direct path is in use.
    fn spray_timer(
        &mut self,
        now: Timestamp,
        rng: &mut impl FnMut() -> u64,
        out: &mut Vec<PathAction>,
    ) {
        let direct = self.is_direct();
        let Some(s) = &mut self.spray else {
            return;
        };
        if direct || now >= s.spray.deadline || s.sent >= s.spray.budget {
            if direct {
                // A path was found another way (the peer's probe through
                // a mapping one of ours opened): this spray took this many.
                self.spray_hit = Some(s.sent);
            }
            self.spray = None;
            return;
        }
        if now < s.next_at {
            return;
        }
        for _ in 0..s.spray.burst.max(1) {
            if s.sent >= s.spray.budget {
                break;
            }
            let route = match &s.spray.plan {
                SprayPlan::RandomPorts { ip } => {
                    // Distinct ports while there are many left to draw.
                    let mut port = 0;
                    for _ in 0..8 {
                        port = 1024 + (rng() % 64512) as u16;
                        if s.tried.insert(port) {
                            break;
                        }
                    }
                    Route::direct(SocketAddr::new(*ip, port))
                }
                SprayPlan::Targets(t) if !t.is_empty() => {
                    let r = Route::direct(t[s.cursor % t.len()]);
                    s.cursor += 1;
                    r
                }
                SprayPlan::FromSockets { sockets, addr } if !sockets.is_empty() => {
                    let r = Route::Direct {
                        socket: sockets[s.cursor % sockets.len()],
                        addr: *addr,
                    };
                    s.cursor += 1;
                    r
                }
                _ => break,
            };
            s.sent += 1;
            s.sent_at.insert(route, (now, s.sent));
            self.spray_probes += 1;
            out.push(PathAction::Challenge(route, s.token));
        }
        s.next_at = now + s.spray.interval;
    }

    /// Our challenge `token` came back on `route`. Returns true if the
    /// active path changed.
    pub(crate) fn answered(&mut self, now: Timestamp, route: Route, token: u64) -> bool {
        let found = self.find(&route).and_then(|c| c.take_challenge(token));
        let sent_at = match found {
            Some(t) => t,
            None => {
                // An answer to a spray: the route it came on is a path.
                let Some(s) = self.spray.as_ref().filter(|s| s.token == token) else {
                    return false;
                };
                let Some(&(t, n)) = s.sent_at.get(&route) else {
                    return false;
                };
                if !self.add(route) {
                    return false;
                }
                self.spray = None;
                self.spray_hit = Some(n);
                t
            }
        };
        let Some(c) = self.find(&route) else {
            return false;
        };
        c.sample_rtt(now.saturating_since(sent_at));
        c.state = PathState::Validated;
        c.last_heard = Some(now);
        c.unanswered_since = None;
        c.next_probe = None;
        c.probes_left = 0;
        self.reselect()
    }

    /// A handshake round trip completed on `route` in `rtt`: it works both
    /// ways. Returns true if the active path changed.
    pub(crate) fn handshake_done(&mut self, now: Timestamp, route: Route, rtt: Duration) -> bool {
        if let Route::Relay(_) = route {
            self.relay_heard = Some(now);
            return self.reselect();
        }
        self.add(route);
        if let Some(c) = self.find(&route) {
            c.sample_rtt(rtt);
            c.state = PathState::Validated;
            c.last_heard = Some(now);
            c.unanswered_since = None;
            c.next_probe = None;
        }
        self.reselect()
    }

    /// We sent data (not a probe) on `route`: liveness is watched from now.
    pub(crate) fn sent_data(&mut self, now: Timestamp, route: Route) {
        if let Some(c) = self.find(&route) {
            if c.unanswered_since.is_none() {
                c.unanswered_since = Some(now);
            }
        }
    }

    /// Picks the best validated direct path (lowest smoothed RTT), else
    /// the relay. Returns true if that changed the active path.
    pub(crate) fn reselect(&mut self) -> bool {
        if self.follow {
            return false;
        }
        let best = self
            .candidates
            .iter()
            .filter(|c| c.state == PathState::Validated)
            .min_by_key(|c| c.srtt.unwrap_or(Duration::MAX))
            .map(|c| c.route);
        // Keep a validated path unless another is clearly faster, so two
        // near-equal paths do not flap.
        let keep = self.active.and_then(|a| {
            let cur = self
                .candidates
                .iter()
                .find(|c| c.route == a && c.state == PathState::Validated)?;
            let b = self.candidates.iter().find(|c| Some(c.route) == best)?;
            let (cs, bs) = (cur.srtt?, b.srtt?);
            (bs + bs / 4 >= cs).then_some(a)
        });
        let next = keep.or(best).or(self.relay.map(Route::Relay));
        let changed = next != self.active;
        self.active = next;
        changed
    }

    /// The earliest time this set needs attention, if a session can carry
    /// probes (`session`) and the peer is active.
    pub(crate) fn deadline(
        &self,
        session: bool,
        config: &PathConfig,
        last_sent: Timestamp,
        active_peer: bool,
    ) -> Option<Timestamp> {
        if !session {
            return None;
        }
        let mut next: Option<Timestamp> = self.punch_at;
        let mut fold = |t: Timestamp| next = Some(next.map_or(t, |n: Timestamp| n.min(t)));
        if let Some(s) = &self.spray {
            fold(s.next_at.min(s.spray.deadline));
        }
        for c in &self.candidates {
            if let Some(t) = c.next_probe {
                fold(t);
            }
            if Some(c.route) == self.active && c.state == PathState::Validated && !self.follow {
                if let Some(u) = c.unanswered_since {
                    fold(match c.challenges[0] {
                        None => u + config.check_after,
                        Some((_, t)) => {
                            (u + config.dead_after).min((t + RECHECK).max(u + config.check_after))
                        }
                    });
                }
                if active_peer {
                    fold(last_sent + config.keepalive);
                }
            }
        }
        next
    }

    /// Runs the path timers: probes due, liveness of the active path.
    /// Returns the challenges to send and whether the active path changed.
    pub(crate) fn on_timer(
        &mut self,
        now: Timestamp,
        config: &PathConfig,
        mut token: impl FnMut() -> u64,
        out: &mut Vec<PathAction>,
    ) -> bool {
        if self.punch_at.is_some_and(|t| now >= t) {
            self.start_probing(now, config);
        }
        self.spray_timer(now, &mut token, out);
        let mut changed = false;
        let active = self.active;
        let follow = self.follow;
        for c in &mut self.candidates {
            if c.next_probe.is_some_and(|t| now >= t) {
                if c.probes_left == 0 {
                    c.next_probe = None;
                    if c.state == PathState::Probing {
                        c.state = PathState::Failed;
                    }
                    continue;
                }
                c.probes_left -= 1;
                c.probes_sent += 1;
                let t = token();
                c.challenge(t, now);
                out.push(PathAction::Challenge(c.route, t));
                c.next_probe = Some(now + config.probe_interval);
            }
            if follow || Some(c.route) != active || c.state != PathState::Validated {
                continue;
            }
            let Some(u) = c.unanswered_since else {
                continue;
            };
            let recheck = c.challenges[0].is_none_or(|(_, t)| now >= t + RECHECK);
            if now >= u + config.dead_after {
                c.state = PathState::Failed;
                c.unanswered_since = None;
                c.challenges = [None; OUTSTANDING];
                changed = true;
            } else if now >= u + config.check_after && recheck {
                let t = token();
                c.challenge(t, now);
                c.probes_sent += 1;
                out.push(PathAction::Challenge(c.route, t));
            }
        }
        if changed {
            return self.reselect() || changed;
        }
        false
    }

    /// Schedules punching: probes start at `at` (or when a session can
    /// carry them, if later).
    pub(crate) fn schedule_punch(&mut self, at: Timestamp) {
        self.punch_at = Some(self.punch_at.map_or(at, |t| t.min(at)));
    }

    /// True if a validated direct path carries data.
    pub(crate) fn is_direct(&self) -> bool {
        matches!(self.active, Some(Route::Direct { .. }))
    }

    /// True while probes are scheduled or going out.
    pub(crate) fn probing(&self) -> bool {
        self.punch_at.is_some()
            || self.spray.is_some()
            || self.candidates.iter().any(|c| c.next_probe.is_some())
    }

    pub(crate) fn info(&self) -> Vec<PathInfo> {
        self.candidates
            .iter()
            .map(|c| PathInfo {
                route: c.route,
                state: c.state,
                rtt: c.srtt,
                last_heard: c.last_heard,
                probes_sent: c.probes_sent,
            })
            .collect()
    }

    /// Smoothed RTT of the active direct path.
    pub(crate) fn active_rtt(&self) -> Option<Duration> {
        let a = self.active?;
        self.candidates
            .iter()
            .find(|c| c.route == a)
            .and_then(|c| c.srtt)
    }

    /// Probes sent to this peer, all candidates together.
    pub(crate) fn probes_sent(&self) -> u64 {
        self.candidates.iter().map(|c| c.probes_sent).sum::<u64>() + self.spray_probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Route {
        Route::direct(s.parse().unwrap())
    }

    #[test]
    fn a_new_address_is_probed_not_followed() {
        let cfg = PathConfig::default();
        let mut p = PathSet::new(false);
        p.relay = Some([0, 0, 0, 0, 0, 9]);
        assert!(p.reselect());
        assert_eq!(p.active(), Some(Route::Relay([0, 0, 0, 0, 0, 9])));
        let now = Timestamp::from_secs(1);
        assert!(!p.heard(now, r("192.0.2.5:1"), &cfg));
        assert_eq!(p.active(), Some(Route::Relay([0, 0, 0, 0, 0, 9])));
        let mut out = Vec::new();
        let mut n = 0;
        p.on_timer(
            now,
            &cfg,
            || {
                n += 1;
                n
            },
            &mut out,
        );
        assert_eq!(out, [PathAction::Challenge(r("192.0.2.5:1"), 1)]);
        // A wrong token does nothing; the right one validates and switches.
        assert!(!p.answered(now, r("192.0.2.5:1"), 7));
        let later = now + Duration::from_millis(30);
        assert!(p.answered(later, r("192.0.2.5:1"), 1));
        assert_eq!(p.active(), Some(r("192.0.2.5:1")));
        assert_eq!(p.active_rtt(), Some(Duration::from_millis(30)));
    }

    #[test]
    fn a_silent_direct_path_falls_back_to_the_relay() {
        let cfg = PathConfig::default();
        let mut p = PathSet::new(false);
        p.relay = Some([1; 6]);
        let t0 = Timestamp::from_secs(1);
        p.handshake_done(t0, r("192.0.2.5:1"), Duration::from_millis(20));
        assert!(p.is_direct());
        p.sent_data(t0, r("192.0.2.5:1"));
        let mut out = Vec::new();
        let mut tok = || 5;
        assert!(!p.on_timer(t0 + cfg.check_after, &cfg, &mut tok, &mut out));
        assert_eq!(out.len(), 1, "a challenge checks the silent path");
        assert!(p.on_timer(t0 + cfg.dead_after, &cfg, &mut tok, &mut out));
        assert_eq!(p.active(), Some(Route::Relay([1; 6])));
    }

    #[test]
    fn probing_gives_up_after_its_budget() {
        let cfg = PathConfig {
            probes_per_attempt: 3,
            ..PathConfig::default()
        };
        let mut p = PathSet::new(false);
        p.add(r("192.0.2.5:1"));
        let mut t = Timestamp::from_secs(1);
        p.schedule_punch(t);
        let mut out = Vec::new();
        for _ in 0..5 {
            p.on_timer(t, &cfg, || 1, &mut out);
            t = t + cfg.probe_interval;
        }
        assert_eq!(out.len(), 3);
        assert_eq!(p.candidates[0].state, PathState::Failed);
        assert!(!p.probing());
    }

    #[test]
    fn a_spray_keeps_its_budget_and_an_answer_validates_its_route() {
        let cfg = PathConfig::default();
        let mut p = PathSet::new(false);
        p.relay = Some([1; 6]);
        let t0 = Timestamp::from_secs(1);
        let targets: Vec<SocketAddr> = (1..=4u16)
            .map(|i| SocketAddr::from(([198, 51, 100, 2], 20000 + i)))
            .collect();
        p.start_spray(
            Spray {
                plan: SprayPlan::Targets(targets.clone()),
                start: t0,
                burst: 4,
                interval: Duration::from_millis(100),
                budget: 10,
                deadline: t0 + Duration::from_secs(3),
            },
            77,
        );
        let mut out = Vec::new();
        let mut t = t0;
        for _ in 0..5 {
            p.on_timer(t, &cfg, || 1, &mut out);
            t = t + Duration::from_millis(100);
        }
        assert_eq!(out.len(), 10, "the budget caps the probes");
        assert!(out
            .iter()
            .all(|a| matches!(a, PathAction::Challenge(_, 77))));
        assert!(!p.spraying(), "a spent budget ends the spray");

        // An answer with the spray's token on a probed route validates it;
        // one on a route never probed does nothing.
        p.start_spray(
            Spray {
                plan: SprayPlan::Targets(targets.clone()),
                start: t,
                burst: 4,
                interval: Duration::from_millis(100),
                budget: 40,
                deadline: t + Duration::from_secs(3),
            },
            78,
        );
        p.on_timer(t, &cfg, || 1, &mut out);
        let stranger = Route::direct("192.0.2.9:1".parse().unwrap());
        assert!(!p.answered(t, stranger, 78));
        let hit = Route::direct(targets[2]);
        assert!(p.answered(t + Duration::from_millis(40), hit, 78));
        assert_eq!(p.active(), Some(hit));
        assert_eq!(p.spray_hit, Some(3));
        assert!(!p.spraying());
    }

    #[test]
    fn candidates_are_bounded() {
        let mut p = PathSet::new(false);
        for i in 0..100u16 {
            p.add(Route::direct(SocketAddr::from(([192, 0, 2, 1], i))));
        }
        assert_eq!(p.candidates.len(), MAX_CANDIDATES);
    }
}
