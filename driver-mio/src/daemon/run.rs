//! The daemon's event loop: one mio `Poll` for the UDP socket, the IPC
//! socket and signals; the node's `poll_timeout` is the poll timeout.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Registry, Token, Waker};
use pilot_proto::addr::Hostname;
use pilot_proto::identity::PublicKey;
use pilot_proto::node::{Node, NodeConfig, ServiceConfig};
use tracing::{debug, info, warn};

use super::agent::{Agent, Out};
use super::bridge::{Bridge, BridgePolicy};
use super::gateway::Gateway;
use super::home::Home;
use crate::clock::Clock;
use crate::compat::client::{CarrierClient, ClientEvent, ClientOptions};
use crate::compat::proxy::Proxy;
use crate::compat::tls::Trust;
use crate::compat::{CarrierUrl, Transport};
use crate::fsutil::FileError;
use crate::ipc::server::{BindError, ClientId, IpcConfig, IpcServer, SendError, ServerEvent};
use crate::resolve::{HostPort, Lookup};
use crate::signals::Signals;
use crate::tokens::Tokens;
use crate::udp::UdpEndpoint;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// `PILOT_HOME`.
    pub home: PathBuf,
    /// The identity key file (default: in the home).
    pub identity: Option<PathBuf>,
    /// The IPC socket.
    pub socket: PathBuf,
    /// The rendezvous's UDP address (its name looked up at start).
    pub rendezvous: SocketAddr,
    /// The rendezvous's DNS name, if it was given by one: looked up again
    /// whenever the node reports the rendezvous silent.
    pub rendezvous_name: Option<HostPort>,
    /// The rendezvous's public key.
    pub rendezvous_key: PublicKey,
    /// Our hostname.
    pub hostname: Option<Hostname>,
    /// Where to listen (port 0: any).
    pub listen: SocketAddr,
    /// Findable by anyone.
    pub public: bool,
    /// Approve every trust request.
    pub auto_approve: bool,
    /// Services offered.
    pub services: ServiceConfig,
    /// Which incoming streams may reach local TCP services.
    pub bridge: BridgePolicy,
    /// The rendezvous's reflect port, if it has one: the daemon then
    /// classifies its NAT and may open extra sockets to punch through
    /// symmetric NATs.
    pub reflect: Option<SocketAddr>,
    /// UDP, the compat carrier, or UDP falling back to it.
    pub transport: Transport,
    /// Where the carrier connects (compat and auto).
    pub compat_url: CarrierUrl,
    /// How the carrier's certificate is trusted.
    pub tls_trust: Trust,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file under `PILOT_HOME` is unreadable or corrupt.
    #[error(transparent)]
    File(#[from] FileError),
    /// The IPC socket could not be opened.
    #[error(transparent)]
    Ipc(#[from] BindError),
    /// Another daemon runs with this home.
    #[error("a daemon (pid {pid}) is already running with this PILOT_HOME")]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
    },
    /// The compat carrier's settings are unusable (a proxy URL, a CA
    /// file); the message says which, never with credentials.
    #[error("{0}")]
    Compat(String),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

impl DaemonError {
    /// A stable code for `--json` output, one of those pilotctl documents:
    /// another daemon, or a UDP port or socket in use, is
    /// `already_exists`; a missing socket directory or an unusable socket
    /// path `invalid_argument`; a file (named in the message) or the OS
    /// `internal`.
    pub fn code(&self) -> &'static str {
        use crate::ipc::api::codes;
        match self {
            DaemonError::AlreadyRunning { .. }
            | DaemonError::Ipc(BindError::AlreadyRunning { .. }) => codes::ALREADY_EXISTS,
            DaemonError::Io { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                codes::ALREADY_EXISTS
            }
            DaemonError::Ipc(
                BindError::MissingDirectory { .. }
                | BindError::NotASocket { .. }
                | BindError::PathTooLong { .. },
            ) => codes::INVALID_ARGUMENT,
            DaemonError::Compat(_) => codes::INVALID_ARGUMENT,
            _ => codes::INTERNAL,
        }
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// The IPC server's tokens: its listener and up to 256 clients.
const IPC_TOKENS: usize = 257;

/// Datagrams read per wakeup before timers and writes get their turn.
const READ_BUDGET: usize = 256;

/// How long a request to the rendezvous may go unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// `auto`: how long UDP has to reach the rendezvous before the carrier
/// takes over.
const AUTO_FALLBACK: Duration = Duration::from_secs(4);
/// `auto` on the carrier: how often UDP is tried again.
const AUTO_RETRY_UDP: Duration = Duration::from_secs(300);

/// [`AUTO_RETRY_UDP`], or `PILOT_AUTO_RETRY_UDP_SECS` (1 to 3600) for
/// tests that watch an agent move back to UDP without waiting 5 minutes.
fn auto_retry_udp() -> Duration {
    std::env::var("PILOT_AUTO_RETRY_UDP_SECS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .map_or(AUTO_RETRY_UDP, Duration::from_secs)
}

/// The daemon's ways out: the UDP socket (absent in compat mode, so that
/// nothing but the one TCP connection leaves) and the carrier (absent in
/// udp mode).
struct Links {
    udp: Option<UdpEndpoint>,
    carrier: Option<CarrierClient>,
    registry: Registry,
    /// Datagrams for a link that is not there (a UDP probe while on the
    /// carrier, say).
    no_link: u64,
}

impl Links {
    /// True while the node's output must wait (UDP's queue is full; the
    /// carrier drops instead of waiting).
    fn is_full(&self) -> bool {
        self.udp.as_ref().is_some_and(|u| u.is_full())
    }

    fn send(&mut self, t: pilot_proto::Transmit) -> Option<ClientEvent> {
        if t.socket.is_carrier() {
            match self.carrier.as_mut() {
                Some(c) => c.send(&self.registry, &t.payload).err(),
                None => {
                    self.no_link += 1;
                    None
                }
            }
        } else {
            match self.udp.as_mut() {
                Some(u) => {
                    u.send(t);
                }
                None => self.no_link += 1,
            }
            None
        }
    }
}

/// Where `auto` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Auto {
    /// Not in auto mode.
    Off,
    /// On UDP; if nothing came from the rendezvous by then, fall back.
    TryingUdp { until: Instant },
    /// UDP works.
    Udp,
    /// On the carrier; try UDP again at `retry_at`.
    Carrier { retry_at: Instant },
}

/// Called with the agent's address and hostname once it registers.
pub type OnRegistered = Box<dyn FnMut(&str, Option<&str>)>;

/// What the caller of [`run_with`] wants to hear about as it happens.
#[derive(Default)]
pub struct Hooks {
    /// Called when the agent registers (and again if its address
    /// changes), with its address and hostname: `pilot-daemon` in the
    /// foreground prints it.
    pub on_registered: Option<OnRegistered>,
}

/// Runs the daemon until SIGTERM/SIGINT or a `Stop` request.
pub fn run(opts: Options) -> Result<(), DaemonError> {
    run_with(opts, Hooks::default())
}

/// [`run`], telling `hooks` what happens.
pub fn run_with(opts: Options, mut hooks: Hooks) -> Result<(), DaemonError> {
    let home = Home::open(&opts.home)?;
    let identity = home.identity(opts.identity.as_deref())?;
    let trust = home.trust()?;
    let pid_path = home.path("daemon.pid");
    if let Ok(Some(pid)) = crate::fsutil::running_pid(&pid_path) {
        if pid != std::process::id() {
            return Err(DaemonError::AlreadyRunning { pid });
        }
    }
    crate::fsutil::write_pid(&pid_path, std::process::id())?;
    // From here on, however the run ends (a port in use, say), the pid
    // file goes with it: a stale one later named a dead daemon.
    let _pid_file = RemoveOnDrop(pid_path.clone());
    // Writes a crash cut short before their rename.
    let stale: usize = ["", "inbox", "received"]
        .iter()
        .map(|d| crate::fsutil::remove_stale_temps(&home.path(d)))
        .sum();
    if stale > 0 {
        info!(files = stale, "removed temporary files left by a crash");
    }
    let mut poll = Poll::new().map_err(io_err("creating the event loop"))?;
    let mut tokens = Tokens::new();
    let udp_token = tokens.take();
    let signals_token = tokens.take();
    let waker_token = tokens.take();
    let carrier_token = tokens.take();
    // In compat mode no UDP socket exists at all: nothing can leave but
    // the carrier's one TCP connection.
    let udp = if opts.transport == Transport::Compat {
        None
    } else {
        Some(
            UdpEndpoint::bind(opts.listen, poll.registry(), udp_token)
                .map_err(io_err(format!("binding UDP {}", opts.listen)))?,
        )
    };
    let waker = Arc::new(
        Waker::new(poll.registry(), waker_token).map_err(io_err("creating the loop's waker"))?,
    );
    let carrier = if opts.transport == Transport::Udp {
        None
    } else {
        // Read once, here: credentials stay in this process's memory.
        let proxy = Proxy::from_env(&opts.compat_url.host).map_err(DaemonError::Compat)?;
        let copts = ClientOptions {
            url: opts.compat_url.clone(),
            trust: opts.tls_trust.clone(),
            proxy,
            step_timeout: Duration::from_secs(10),
        };
        Some(CarrierClient::new(copts, carrier_token, waker.clone()).map_err(DaemonError::Compat)?)
    };
    // A rendezvous known by name is looked up again whenever the node
    // reports it silent (compat has no UDP: the carrier looks the name up
    // itself on every connect).
    let mut lookup = opts
        .rendezvous_name
        .clone()
        .filter(|_| opts.transport != Transport::Compat)
        .map(|n| Relookup::new(Lookup::new(n, waker.clone())));
    let mut links = Links {
        udp,
        carrier,
        registry: poll
            .registry()
            .try_clone()
            .map_err(io_err("cloning the event loop's registry"))?,
        no_link: 0,
    };
    let mut ipc = IpcServer::bind(
        &opts.socket,
        poll.registry(),
        tokens.range(IPC_TOKENS),
        IpcConfig::default(),
    )?;
    // A socket outside the home (PILOT_SOCKET, --socket) is written down
    // in it, so that `pilotctl daemon status` and the rest find the
    // daemon by its home alone.
    let socket_note = home.path(SOCKET_NOTE);
    let _socket_note = if opts.socket != home.path("pilot.sock") {
        let path = opts.socket.as_os_str().as_encoded_bytes();
        crate::fsutil::atomic_write(&socket_note, path, 0o600)?;
        Some(RemoveOnDrop(socket_note))
    } else {
        let _ = std::fs::remove_file(&socket_note);
        None
    };
    let mut signals = Signals::register(poll.registry(), signals_token)
        .map_err(io_err("installing signal handlers"))?;
    let registry = || {
        poll.registry()
            .try_clone()
            .map_err(io_err("cloning the event loop's registry"))
    };
    let mut tcp = Tcp {
        bridge: Bridge::new(registry()?),
        gateway: Gateway::new(registry()?, home.path("gateway-aliases")),
        tokens,
        // Extra sockets bind where the primary one does (compat has none
        // and never asks for any).
        extra: crate::extra::ExtraSockets::new(
            links
                .udp
                .as_ref()
                .map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |u| {
                    u.local_addr().ip()
                }),
            registry()?,
        ),
    };
    let clock = Clock::new();
    let seed = crate::seed::os_seed().map_err(io_err("reading OS randomness"))?;
    let high_water = IpcConfig::default().high_water;

    let mut config = NodeConfig::new(identity, opts.rendezvous_key, opts.rendezvous);
    config.hostname = opts.hostname.clone();
    config.public = opts.public;
    config.auto_approve = opts.auto_approve;
    config.services = opts.services.clone();
    config.streams.accept_any = opts.bridge.accepts_any_port();
    config.trust = trust;
    config.wall_origin_micros = clock.wall_origin_micros();
    if let Some(udp) = &links.udp {
        config.lan_endpoints = crate::netif::lan_endpoints(udp.local_addr(), opts.rendezvous);
    }
    config.relay_only = opts.transport == Transport::Compat;
    // A request the rendezvous leaves unanswered (it is down) is answered
    // well within the 15 s a client waits: a trust request as `timeout`,
    // a hostname change as saved and pending; never as a stuck daemon.
    config.request_timeout = REQUEST_TIMEOUT;
    // A compat agent has no UDP to classify.
    config.reflect_addr = opts.reflect.filter(|_| opts.transport != Transport::Compat);
    let now = clock.now();
    let node = Node::new(config, &seed, now);
    let mut agent = Agent::new(node, now)
        .with_services(&opts.services)
        .with_bridge_policy(opts.bridge.clone());
    info!(
        listen = %links.udp.as_ref().map_or("none (compat)".into(), |u| u.local_addr().to_string()),
        socket = %opts.socket.display(),
        key = %agent.node.public_key(),
        transport = %opts.transport,
        "daemon started"
    );
    // A socket reaches one family only unless it is dual-stack on [::]
    // (an IPv4 socket, or one on a given IPv6 address such as ::1): a
    // rendezvous of the other family would fail registration forever with
    // nothing but per-datagram send errors to show for it.
    if let Some(udp) = &links.udp {
        let local = udp.local_addr();
        if !crate::resolve::reaches(local, &opts.rendezvous) {
            let (theirs, ours) = if opts.rendezvous.is_ipv6() {
                ("IPv6", "IPv4")
            } else {
                ("IPv4", "IPv6")
            };
            warn!(
                listen = %local,
                rendezvous = %opts.rendezvous,
                "registration cannot work: the rendezvous is an {theirs} address but the UDP \
                 socket reaches only {ours}; {}",
                crate::resolve::family_hint(local)
            );
        }
    }
    let mut announced = None;
    agent.rendezvous_name = opts.rendezvous_name.as_ref().map(|n| n.to_string());
    if let Some(name) = &opts.rendezvous_name {
        info!(rendezvous = %name, address = %opts.rendezvous, "rendezvous looked up");
    }
    let mut auto = match opts.transport {
        Transport::Auto => Auto::TryingUdp {
            until: Instant::now() + AUTO_FALLBACK,
        },
        _ => Auto::Off,
    };
    if opts.transport == Transport::Compat {
        if let Some(c) = links.carrier.as_mut() {
            info!(url = %c.url(), proxy = ?c.proxy(), "connecting the compat carrier");
            c.start();
        }
    }
    // Set when a datagram from the rendezvous arrives over UDP.
    let mut udp_heard_rv = false;
    let mut last_carrier_stats = None;
    agent.transport = transport_info(&opts, &links, auto);

    let mut events = Events::with_capacity(256);
    let mut extra_readable = Vec::new();
    let mut extra_more = Vec::new();
    let mut stop = false;
    while !stop {
        let core_deadline = agent.node.poll_timeout().map(|(t, _)| t);
        let idle_deadline = ipc.idle_deadline().map(|i| clock.at(i));
        let deadline = match (core_deadline, idle_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let udp_more = links.udp.as_ref().is_some_and(|u| u.may_have_more());
        let timeout = if ipc.has_backlog() || udp_more || !extra_more.is_empty() {
            Some(Duration::ZERO)
        } else {
            let carrier_at = links.carrier.as_ref().and_then(|c| c.deadline());
            let auto_at = match auto {
                Auto::TryingUdp { until } => Some(until),
                Auto::Carrier { retry_at } => Some(retry_at),
                _ => None,
            };
            let wall = [carrier_at, auto_at]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()));
            match (clock.timeout_until(deadline), wall) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        };
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DaemonError::Io {
                what: "waiting for events".into(),
                source: e,
            });
        }
        let mut readable = udp_more;
        let mut carrier_ready = false;
        for event in events.iter() {
            if ipc.handle_event(event) {
                continue;
            }
            match event.token() {
                t if t == udp_token => {
                    if event.is_writable() {
                        if let Some(udp) = links.udp.as_mut() {
                            udp.flush();
                        }
                    }
                    readable |= event.is_readable();
                }
                t if t == carrier_token || t == waker_token => carrier_ready = true,
                t if t == signals_token => {
                    if signals.pending().iter().any(|s| s.is_stop()) {
                        info!("signal received, shutting down");
                        stop = true;
                    }
                }
                t => match tcp.extra.owner(t) {
                    Some(id) => {
                        if event.is_writable() {
                            tcp.extra.flush(id);
                        }
                        if event.is_readable() || event.is_error() {
                            extra_readable.push(id);
                        }
                    }
                    None => tcp.handle_event(&mut agent, clock.now(), t),
                },
            }
        }
        // Sockets that stopped at the read budget are read again (mio is
        // edge-triggered); the loop then polls without waiting.
        extra_readable.append(&mut extra_more);
        extra_readable.sort_unstable();
        extra_readable.dedup();
        for id in extra_readable.drain(..) {
            let now = clock.now();
            let node = &mut agent.node;
            if tcp.extra.recv(id, READ_BUDGET, |from, bytes| {
                node.handle_datagram(now, id, from, bytes)
            }) {
                extra_more.push(id);
            }
        }
        if readable {
            let now = clock.now();
            let node = &mut agent.node;
            let rv = node.rendezvous_addr();
            let heard = &mut udp_heard_rv;
            if let Some(udp) = links.udp.as_mut() {
                if let Err(e) = udp.recv_batch(READ_BUDGET, |from, bytes| {
                    *heard |= from == rv;
                    node.handle_datagram(now, pilot_proto::SocketId::PRIMARY, from, bytes)
                }) {
                    warn!(error = %e, "reading UDP");
                }
            }
        }
        let mut carrier_events = Vec::new();
        if let Some(c) = links.carrier.as_mut() {
            let now = clock.now();
            let node = &mut agent.node;
            let rv = node.rendezvous_addr();
            if carrier_ready {
                carrier_events.extend(c.handle_event(&links.registry, &mut |bytes| {
                    node.handle_datagram(now, pilot_proto::SocketId::CARRIER, rv, bytes)
                }));
            }
            carrier_events.extend(c.tick(&links.registry, Instant::now()));
        }
        for e in carrier_events {
            on_carrier_event(&mut agent, &links, clock.now(), e);
        }
        let before = auto;
        auto = step_auto(
            auto,
            &mut agent.node,
            &mut links,
            &mut udp_heard_rv,
            clock.now(),
        );
        if auto != before {
            agent.transport = transport_info(&opts, &links, auto);
        }
        if let (Some(l), Some(udp)) = (lookup.as_mut(), links.udp.as_ref()) {
            l.step(&mut agent.node, udp.local_addr(), clock.now());
        }
        let now = clock.now();
        if agent.node.poll_timeout().is_some_and(|(t, _)| t <= now) {
            agent.node.handle_timeout(now);
        }
        // Their `Disconnected` comes out of the drain below.
        ipc.expire_idle(std::time::Instant::now(), |c| agent.holds(c));
        while let Some(e) = ipc.poll_event() {
            match e {
                ServerEvent::Connected { client } => agent.client_connected(client),
                ServerEvent::Request { client, id, req } => {
                    agent.handle_request(now, client, id, req)
                }
                ServerEvent::Data {
                    client,
                    stream,
                    bytes,
                } => {
                    let more = agent.client_data(now, client, stream, &bytes);
                    if !more {
                        ipc.pause_reading(client, true);
                    }
                }
                ServerEvent::Disconnected { client, .. } => agent.client_gone(now, client),
                ServerEvent::Writable { client } => {
                    agent.client_writable(now, client, |c| room(&ipc, c, high_water));
                }
                _ => {}
            }
        }
        // Resume clients whose streams drained.
        let paused: Vec<_> = ipc.clients().filter(|c| ipc.is_paused(*c)).collect();
        for c in paused {
            if agent.client_may_send(c) {
                ipc.pause_reading(c, false);
            }
        }
        pump(
            &mut agent, &mut links, &mut ipc, &mut tcp, &home, &clock, now, high_water,
        );
        // The carrier's counters in `pilotctl info` (dropped datagrams
        // are how a slow carrier shows).
        if let Some(c) = links.carrier.as_ref() {
            let st = c.stats();
            if Some(st) != last_carrier_stats {
                last_carrier_stats = Some(st);
                if let Some(t) = agent.transport.as_object_mut() {
                    t.insert("carrier_datagrams_in".into(), st.datagrams_in.into());
                    t.insert("carrier_datagrams_out".into(), st.datagrams_out.into());
                    t.insert("carrier_dropped".into(), st.dropped_out.into());
                    t.insert("carrier_connects".into(), st.connects.into());
                }
            }
        }
        let address = agent.node.address();
        if address != announced {
            announced = address;
            if let (Some(a), Some(f)) = (address, hooks.on_registered.as_mut()) {
                f(&a.to_string(), agent.node.hostname().map(|h| h.as_str()));
            }
        }
        let effects = agent.take_effects();
        if effects.trust_changed {
            if let Err(e) = home.save_trust(&agent.node.trust_state()) {
                warn!(error = %e, "saving trust state");
            }
        }
        stop |= effects.stop;
    }
    // Peers and the rendezvous are told; answers (to Stop, say) go out; no
    // stale files stay behind.
    let now = clock.now();
    tcp.shutdown(&mut agent, now);
    agent.node.shutdown(now);
    pump(
        &mut agent, &mut links, &mut ipc, &mut tcp, &home, &clock, now, high_water,
    );
    if let Some(udp) = links.udp.as_mut() {
        udp.flush();
    }
    if let Some(c) = links.carrier.as_mut() {
        c.stop(&links.registry);
    }
    home.save_trust(&agent.node.trust_state())?;
    drop(ipc);
    info!("daemon stopped");
    Ok(())
}

/// Looking the rendezvous's name up again when the node reports it
/// silent, and moving the node to the address found.
struct Relookup {
    lookup: Lookup,
    /// The node's silence count when last looked at.
    silent_seen: u32,
    /// The last failed lookup's message: a failure repeated every period
    /// is logged once.
    last_error: Option<String>,
}

impl Relookup {
    fn new(lookup: Lookup) -> Self {
        Relookup {
            lookup,
            silent_seen: 0,
            last_error: None,
        }
    }

    /// Starts a lookup when the silence count went up; applies a finished
    /// one's answer.
    fn step(&mut self, node: &mut Node, local: SocketAddr, now: pilot_proto::Timestamp) {
        let silent = node.rendezvous_silent();
        if silent > self.silent_seen {
            let name = self.lookup.target();
            if silent == 1 {
                info!(rendezvous = %name, address = %node.rendezvous_addr(), "the rendezvous does not answer; looking its name up again");
            } else {
                debug!(rendezvous = %name, periods = silent, "the rendezvous is still silent; looking its name up again");
            }
            self.lookup.start();
        }
        self.silent_seen = silent;
        let Some(answer) = self.lookup.poll(local) else {
            return;
        };
        let name = self.lookup.target().to_string();
        match answer {
            Ok(addr) if addr != node.rendezvous_addr() => {
                self.last_error = None;
                info!(rendezvous = %name, old = %node.rendezvous_addr(), address = %addr, "the rendezvous's name resolves to a new address; registering there");
                node.set_rendezvous_addr(now, addr);
            }
            Ok(addr) => {
                self.last_error = None;
                debug!(rendezvous = %name, address = %addr, "the rendezvous's name resolves to the address in use");
            }
            Err(e) => {
                let text = e.to_string();
                if self.last_error.as_ref() != Some(&text) {
                    warn!(error = %text, hint = %e.hint(), "looking the rendezvous up again; keeping {}", node.rendezvous_addr());
                }
                self.last_error = Some(text);
            }
        }
    }
}

/// The file in the home naming a socket kept elsewhere, while the daemon
/// runs.
pub const SOCKET_NOTE: &str = "daemon.socket";

/// Removes a file when dropped: files that live exactly as long as the
/// daemon runs.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the hostname and visibility the node registers into the
/// settings, so that `daemon start` without flags keeps them.
fn save_registration(home: &Home, node: &Node) {
    let hostname = node.hostname().map(|h| h.to_string());
    let public = node.is_public();
    // A refusal that changed nothing (asked again, refused the same way)
    // has nothing to save or log.
    if home
        .settings()
        .is_ok_and(|s| s.hostname == hostname && s.public == public)
    {
        return;
    }
    let saved = home.update_settings(|s| {
        s.hostname = hostname;
        s.public = public;
    });
    match saved {
        Ok(s) => info!(hostname = ?s.hostname, public = s.public, "registration settings saved"),
        Err(e) => warn!(error = %e, "saving the registration settings"),
    }
}

/// Bytes a client's queue takes before the high-water mark.
fn room(ipc: &IpcServer, client: ClientId, high_water: usize) -> usize {
    ipc.queued(client)
        .map_or(0, |q| high_water.saturating_sub(q))
}

/// The daemon's TCP side: the gateway's listeners, the bridged
/// connections, and the token allocator they draw from.
struct Tcp {
    bridge: Bridge,
    gateway: Gateway,
    tokens: Tokens,
    /// The extra UDP sockets the node asked for.
    extra: crate::extra::ExtraSockets,
}

impl Tcp {
    /// A readiness event for a gateway listener or a bridged connection.
    fn handle_event(&mut self, agent: &mut Agent, now: pilot_proto::Timestamp, token: Token) {
        if self.gateway.owns(token) {
            self.gateway
                .accept(agent, &mut self.bridge, &mut self.tokens, now, token);
        } else {
            self.bridge
                .handle_event(&mut agent.node, &mut self.tokens, now, token);
        }
    }

    /// Gateway requests answered, bridged streams' events handled, bytes
    /// moved; true if anything happened.
    fn pump(&mut self, agent: &mut Agent, now: pilot_proto::Timestamp) -> bool {
        let mut moved = false;
        while let Some((client, id, req)) = agent.take_gateway_request() {
            let r = self.gateway.request(agent, &mut self.tokens, req);
            agent.answer(client, id, r);
            moved = true;
        }
        while let Some(e) = agent.take_bridge_event() {
            self.bridge
                .on_stream_event(&mut agent.node, &mut self.tokens, now, e);
            moved = true;
        }
        moved | self.bridge.service(&mut agent.node, &mut self.tokens, now)
    }

    /// The daemon stops: connections reset, aliases removed.
    fn shutdown(&mut self, agent: &mut Agent, now: pilot_proto::Timestamp) {
        self.gateway.stop(&mut self.tokens);
        self.bridge
            .close_all(&mut agent.node, &mut self.tokens, now);
    }
}

/// Moves the node's output to the socket and the agent's to clients.
#[allow(clippy::too_many_arguments)]
fn pump(
    agent: &mut Agent,
    links: &mut Links,
    ipc: &mut IpcServer,
    tcp: &mut Tcp,
    home: &Home,
    clock: &Clock,
    now: pilot_proto::Timestamp,
    high_water: usize,
) {
    loop {
        agent.drain_node(now, |c| room(ipc, c, high_water));
        let mut moved = tcp.pump(agent, now);
        // The bridge's reads and writes may have produced node events.
        agent.drain_node(now, |c| room(ipc, c, high_water));
        // On disk before the ack (queued in the node's transmits) is sent.
        for m in agent.take_delivered() {
            let wall = clock.wall_origin_micros().saturating_add(now.as_micros()) / 1_000_000;
            match home.deliver(&m, wall) {
                Ok(path) => info!(
                    from = %m.from,
                    hostname = %agent.hostname_of(m.from),
                    kind = %format!("{:?}", m.kind).to_lowercase(),
                    bytes = m.payload.len(),
                    path = %path.display(),
                    "received"
                ),
                Err(e) => warn!(error = %e, "storing a received message"),
            }
        }
        // Saved before the answers below go out: a client told a hostname
        // change is done can rely on a restart keeping it.
        if agent.take_registration_changed() {
            save_registration(home, &agent.node);
        }
        // Sockets first: this turn's datagrams may already use them.
        while let Some(op) = agent.node.poll_socket_op() {
            if let Err(e) = tcp.extra.apply(op, &mut tcp.tokens) {
                warn!(error = %e, %op, "extra UDP socket");
            }
        }
        // A full socket queue is backpressure: the core keeps the rest.
        while !links.is_full() && !tcp.extra.is_full() {
            let Some(t) = agent.node.poll_transmit() else {
                break;
            };
            if t.socket != pilot_proto::SocketId::PRIMARY && !t.socket.is_carrier() {
                tcp.extra.send(t);
            } else if let Some(e) = links.send(t) {
                on_carrier_event(agent, links, now, e);
            }
            moved = true;
        }
        while let Some(out) = agent.poll_out() {
            moved = true;
            match out {
                Out::Response {
                    client,
                    id,
                    response,
                } => {
                    let _ = ipc.send_response(client, id, &response);
                }
                Out::Event { client, event } => {
                    if let Err(e) = ipc.send_event(client, &event) {
                        warn!(?e, "event not delivered to a client");
                    }
                }
                Out::Data {
                    client,
                    stream,
                    bytes,
                } => match ipc.send_data(client, stream, &bytes) {
                    Ok(n) if n == bytes.len() => {}
                    Ok(n) => agent.unsent(stream, &bytes[n..]),
                    Err(SendError::Full) => agent.unsent(stream, &bytes),
                    Err(_) => {}
                },
            }
        }
        if !moved {
            return;
        }
    }
}

/// The carrier opened or went down.
fn on_carrier_event(agent: &mut Agent, links: &Links, now: pilot_proto::Timestamp, e: ClientEvent) {
    match e {
        ClientEvent::Connected { setup } => {
            info!(
                setup_ms = setup.as_millis() as u64,
                "compat carrier connected"
            );
            if agent.node.is_relay_only() {
                agent.node.rendezvous_reconnected(now);
            }
        }
        ClientEvent::Down(why) => warn!(error = %why, "compat carrier down; retrying"),
    }
    if let Some(t) = agent.transport.as_object_mut() {
        if let Some(c) = links.carrier.as_ref() {
            t.insert("carrier_connected".into(), c.is_open().into());
            t.insert("carrier_error".into(), c.last_error().into());
            t.insert("carrier_connects".into(), c.stats().connects.into());
        }
    }
}

/// Moves `auto` between UDP and the carrier.
fn step_auto(
    auto: Auto,
    node: &mut Node,
    links: &mut Links,
    udp_heard_rv: &mut bool,
    now: pilot_proto::Timestamp,
) -> Auto {
    let wall = Instant::now();
    match auto {
        Auto::Off | Auto::Udp => auto,
        Auto::TryingUdp { .. } if *udp_heard_rv => {
            if node.is_relay_only() {
                info!("UDP reaches the rendezvous again; leaving the compat carrier");
                node.set_relay_only(now, false);
            } else {
                info!("UDP reaches the rendezvous");
            }
            if let Some(c) = links.carrier.as_mut() {
                c.stop(&links.registry);
            }
            Auto::Udp
        }
        Auto::TryingUdp { until } if wall >= until => {
            info!("the rendezvous does not answer over UDP; using the compat carrier");
            if let Some(c) = links.carrier.as_mut() {
                c.start();
            }
            node.set_relay_only(now, true);
            Auto::Carrier {
                retry_at: wall + auto_retry_udp(),
            }
        }
        Auto::TryingUdp { .. } => auto,
        Auto::Carrier { retry_at } if wall >= retry_at => {
            // A short trial: the node talks UDP again; if the rendezvous
            // answers within the fallback time, UDP stays. The carrier
            // stays connected meanwhile and keeps delivering.
            *udp_heard_rv = false;
            node.set_relay_only(now, false);
            Auto::TryingUdp {
                until: wall + AUTO_FALLBACK,
            }
        }
        Auto::Carrier { .. } => auto,
    }
}

/// The `transport` object of `pilotctl info`: never credentials.
fn transport_info(opts: &Options, links: &Links, auto: Auto) -> serde_json::Value {
    let active = match (opts.transport, auto) {
        (Transport::Udp, _) | (_, Auto::Udp) => "udp",
        (Transport::Compat, _) | (_, Auto::Carrier { .. }) => "compat",
        (_, _) => "udp (trying)",
    };
    let mut v = serde_json::json!({
        "mode": opts.transport.as_str(),
        "active": active,
    });
    if let (Some(c), Some(t)) = (links.carrier.as_ref(), v.as_object_mut()) {
        t.insert("carrier_url".into(), c.url().to_string().into());
        t.insert("proxy".into(), c.proxy().map(|p| p.to_string()).into());
        t.insert("carrier_connected".into(), c.is_open().into());
        t.insert("carrier_error".into(), c.last_error().into());
    }
    v
}
