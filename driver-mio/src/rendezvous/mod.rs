//! The rendezvous server: the core's [`Rendezvous`] on a real UDP socket,
//! with its registry kept in a redb store.
//!
//! One mio loop, one thread. Each turn reads at most
//! [`ServerConfig::max_datagrams_per_turn`] datagrams, runs due timers,
//! writes the turn's registry changes in one transaction, and only then
//! releases the turn's datagrams: an agent is never told about a
//! registration or a trust pair that a crash could still lose.
//!
//! Files in the home directory (mode 0700):
//!
//! | file | what |
//! |---|---|
//! | `rendezvous.key` | the Ed25519 seed, 64 hex digits, mode 0600 (see [`key`]) |
//! | `registry.redb` | registrations, trust pairs, waiting requests (see [`store`]) |
//! | `rendezvous.pid` | the running server's pid |
//! | `rendezvous.status.json` | what `pilotctl rendezvous status` shows, rewritten while it runs (see [`STATUS_FILE`]) |
//! | `rendezvous.YYYY-MM-DD.log` | the log, one file per day (written by the binary) |
//!
//! There is no per-source-address budget here: the core already limits
//! requests per agent, and its tunnel layer answers handshake floods with
//! cookies before doing any expensive work. The driver's own guard is the
//! bounded work per turn and the bounded send queue.

pub mod key;
pub mod store;

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use pilot_proto::rendezvous::{Change, Rendezvous, RendezvousConfig, RendezvousEvent};
use pilot_proto::{PublicKey, Transmit};

use crate::clock::Clock;
use crate::compat::server::{CarrierLimits, CarrierServer, CarrierStats};
use crate::compat::tls::CertSource;
use crate::fsutil::{self, FileError};
use crate::seed::os_seed;
use crate::signals::{Signal, Signals};
use crate::udp::UdpEndpoint;
use store::Store;

/// The key file's name in the home directory.
pub const KEY_FILE: &str = "rendezvous.key";
/// The store's name in the home directory.
pub const STORE_FILE: &str = "registry.redb";
/// The pid file's name in the home directory.
pub const PID_FILE: &str = "rendezvous.pid";
/// The status file's name in the home directory: address, key, agents,
/// uptime and relay counters as JSON, rewritten atomically every
/// [`STATUS_EVERY`] (sooner when agents come or go) while the server runs,
/// and removed when it stops. A file rather than a socket: nothing more
/// is exposed, and it can be read whatever the server is doing.
pub const STATUS_FILE: &str = "rendezvous.status.json";
/// How often the status file is rewritten at most while nothing changes.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// Where the server listens unless told otherwise (`pilotctl rendezvous
/// start` and `pilot-rendezvous` alike).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4000";

/// The rendezvous's home unless told otherwise: `rendezvous` in the
/// agent's home (`$PILOT_HOME`, else `~/.pilot`).
pub fn default_home() -> std::path::PathBuf {
    crate::fsutil::pilot_home().join("rendezvous")
}

/// The reflect port a `--reflect-port` value asks for, for a rendezvous
/// listening on `listen`: `auto` is the listen port + 1 when that port is
/// free (none for port 0, or when it is taken: classification is then
/// off, with a warning), `off` or `0` none, else the port given. The
/// error is a message and a hint.
pub fn reflect_port(spec: &str, listen: SocketAddr) -> Result<Option<u16>, (String, &'static str)> {
    match spec {
        "off" | "0" => Ok(None),
        "auto" => {
            let Some(port) = listen.port().checked_add(1).filter(|_| listen.port() != 0) else {
                return Ok(None);
            };
            // The default must not stop a rendezvous that ran before:
            // a taken port leaves classification off (agents then relay
            // through symmetric NATs, as without it).
            let free = std::net::UdpSocket::bind(SocketAddr::new(listen.ip(), port)).is_ok();
            if !free {
                tracing::warn!(port, "the default reflect port is taken: NAT classification is off (choose one with --reflect-port)");
            }
            Ok(free.then_some(port))
        }
        text => match text.parse::<u16>() {
            Ok(port) if port == listen.port() => Err((
                format!("--reflect-port {port} is the listen port"),
                "the reflect port must be a second port",
            )),
            Ok(port) => Ok(Some(port)),
            Err(_) => Err((
                format!("--reflect-port {text:?} is not a port"),
                "use a UDP port number, auto (the listen port + 1) or off",
            )),
        },
    }
}

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);
const REFLECT: Token = Token(3);
const CARRIER_LISTENER: Token = Token(4);
/// Carrier connections take tokens from here up.
const CARRIER_FIRST: usize = 16;

/// How a server starts.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The UDP address to bind (port 0: any free port).
    pub listen: SocketAddr,
    /// The directory holding the key, the store and the pid file.
    pub home: PathBuf,
    /// The network whose addresses it hands out.
    pub network: u16,
    /// How often agents should refresh (the core's default if `None`).
    pub refresh_interval: Option<Duration>,
    /// How long a registration lasts without refresh (the core's default
    /// if `None`).
    pub registration_ttl: Option<Duration>,
    /// Stop on SIGTERM and SIGINT. Off for servers embedded in tests,
    /// which use a [`StopHandle`].
    pub catch_signals: bool,
    /// The most datagrams read per loop turn before timers and writes get
    /// their turn.
    pub max_datagrams_per_turn: usize,
    /// A second UDP port on the listen address answering Reflect
    /// requests (NAT classification); off when `None`.
    pub reflect_port: Option<u16>,
    /// Also listen for the compat carrier (TLS + WebSocket) on this TCP
    /// address.
    pub tls_listen: Option<SocketAddr>,
    /// The carrier's certificate chain and key (PEM files, reloaded on
    /// SIGHUP); without them, a self-signed pair kept in the home.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// The carrier listener's limits.
    pub carrier_limits: CarrierLimits,
}

impl ServerConfig {
    /// Defaults for a server on `listen` keeping its files in `home`.
    pub fn new(listen: SocketAddr, home: PathBuf) -> Self {
        ServerConfig {
            listen,
            home,
            network: 0,
            refresh_interval: None,
            registration_ttl: None,
            catch_signals: true,
            max_datagrams_per_turn: 256,
            reflect_port: None,
            tls_listen: None,
            tls_cert: None,
            carrier_limits: CarrierLimits::default(),
        }
    }
}

/// Why the server could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A file in the home directory (key, store, pid file, the directory).
    #[error(transparent)]
    File(#[from] FileError),
    /// The socket or the event loop.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS's error.
        source: io::Error,
    },
    /// The carrier's certificate or key could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// Another server runs with the same home directory.
    #[error("another pilot-rendezvous (pid {pid}) is running with home {}", home.display())]
    AlreadyRunning {
        /// Its pid.
        pid: u32,
        /// The home directory.
        home: PathBuf,
    },
}

impl ServerError {
    fn io(what: impl Into<String>, source: io::Error) -> Self {
        ServerError::Io {
            what: what.into(),
            source,
        }
    }

    /// A stable code for `--json` output: one of the codes pilotctl
    /// documents (a port in use or a second server: `already_exists`; a
    /// file, named in the message, or the OS: `internal`).
    pub fn code(&self) -> &'static str {
        use crate::ipc::api::codes;
        match self {
            ServerError::AlreadyRunning { .. } => codes::ALREADY_EXISTS,
            ServerError::Io { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                codes::ALREADY_EXISTS
            }
            ServerError::Tls(_) => codes::INVALID_ARGUMENT,
            ServerError::File(_) | ServerError::Io { .. } => codes::INTERNAL,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            ServerError::File(FileError::Corrupt { path, .. }) => Some(format!(
                "the file is not overwritten; restore {} from a backup, or move it away to \
                 start with an empty registry (agents then get new addresses)",
                path.display()
            )),
            ServerError::AlreadyRunning { pid, .. } => {
                Some(format!("stop it first (kill {pid}) or use another --home"))
            }
            ServerError::Io { source, .. } if source.kind() == io::ErrorKind::AddrInUse => {
                Some("another process uses this port; choose another --listen".into())
            }
            _ => None,
        }
    }
}

/// Stops a running [`Server`] from another thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the server to stop: it finishes its turn, writes its changes,
    /// flushes its datagrams and returns from [`Server::run`].
    pub fn stop(&self) {
        self.flag.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            tracing::warn!(error = %e, "cannot wake the rendezvous loop");
        }
    }
}

/// A running rendezvous.
pub struct Server {
    rv: Rendezvous,
    udp: UdpEndpoint,
    poll: Poll,
    events: Events,
    store: Store,
    signals: Option<Signals>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    /// Datagrams waiting to go out: those of the current turn wait for
    /// its changes to be written; older ones wait for the socket.
    held: VecDeque<Transmit>,
    /// Relayed packets: they depend on no registry change, so they go out
    /// before the turn's changes are written, never behind a store write.
    relayed: VecDeque<Transmit>,
    /// How many of `held` are from turns whose changes are written.
    releasable: usize,
    changes: Vec<Change>,
    home: PathBuf,
    pid_file: PathBuf,
    key: PublicKey,
    batch: usize,
    /// The socket the core asked for to answer reflects on, and its
    /// answers waiting to go out from it.
    reflect: Option<(pilot_proto::SocketId, mio::net::UdpSocket)>,
    reflected: VecDeque<Transmit>,
    /// The last read of the reflect socket stopped at the batch limit.
    reflect_more: bool,
    /// The compat carrier's listener, and where its certificate comes
    /// from (for SIGHUP).
    carrier: Option<(CarrierServer, CertSource)>,
    carrier_fingerprint: Option<String>,
    /// Sources whose handshakes were not for our key, already logged.
    bad_key: BadKeyLog,
    /// When the status file was last written, what its agent counts
    /// were, and when the server started (wall clock, Unix seconds).
    status_at: Option<Instant>,
    status_agents: (usize, usize),
    started: Instant,
    started_unix: u64,
}

/// Logs, once per source IP (up to a bound, so a flood cannot fill the
/// log or memory), handshakes whose mac1 is not for this rendezvous's key:
/// almost always an agent started with the wrong `--rendezvous-key`.
#[derive(Default)]
struct BadKeyLog {
    seen: BTreeSet<std::net::IpAddr>,
}

impl BadKeyLog {
    const MAX: usize = 256;

    /// Call after handing `from`'s datagram to the core, with the core's
    /// bad-mac counter before and after.
    fn check(&mut self, from: SocketAddr, before: u64, after: u64) {
        if after == before || self.seen.len() >= Self::MAX || !self.seen.insert(from.ip()) {
            return;
        }
        tracing::warn!(
            %from,
            "registration refused: a handshake not made for this rendezvous's key (an agent \
             with the wrong --rendezvous-key?); logged once per address"
        );
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.udp.local_addr())
            .field("home", &self.home)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Prepares the home directory, loads (or creates) the key and the
    /// store, restores the registry and binds the socket.
    pub fn open(config: ServerConfig) -> Result<Server, ServerError> {
        let home = config.home.clone();
        fsutil::ensure_private_dir(&home)?;
        let pid_file = home.join(PID_FILE);
        if let Some(pid) = fsutil::running_pid(&pid_file)? {
            if pid != std::process::id() {
                return Err(ServerError::AlreadyRunning { pid, home });
            }
        }
        // The store's lock also keeps a second server away from the key.
        let store = Store::open(&home.join(STORE_FILE), config.network)?;
        let snapshot = store.load()?;
        let (identity, created) = key::load_or_create(&home.join(KEY_FILE))?;
        if created {
            tracing::info!(file = %home.join(KEY_FILE).display(), "new rendezvous key created");
        }
        let key = identity.public();

        let clock = Clock::new();
        let mut rv_config = RendezvousConfig::new(identity);
        rv_config.network = config.network;
        rv_config.wall_origin_micros = clock.wall_origin_micros();
        if let Some(d) = config.refresh_interval {
            rv_config.refresh_interval = d;
        }
        if let Some(d) = config.registration_ttl {
            rv_config.registration_ttl = d;
        }
        rv_config.reflect_port = config.reflect_port;
        let seed = os_seed().map_err(|e| ServerError::io("cannot seed the rendezvous", e))?;
        let mut rv = Rendezvous::new(rv_config, &seed, clock.now());
        let (records, pairs) = (snapshot.records.len(), snapshot.pairs.len());
        snapshot.restore_into(&mut rv);
        tracing::info!(
            store = %store.path().display(),
            records,
            pairs,
            "registry loaded"
        );

        let poll = Poll::new().map_err(|e| ServerError::io("cannot create the event loop", e))?;
        let udp = UdpEndpoint::bind(config.listen, poll.registry(), UDP)
            .map_err(|e| ServerError::io(format!("cannot listen on {}", config.listen), e))?;
        let signals = if config.catch_signals {
            Some(
                Signals::register(poll.registry(), SIGNALS)
                    .map_err(|e| ServerError::io("cannot catch signals", e))?,
            )
        } else {
            None
        };
        let waker = Waker::new(poll.registry(), WAKER)
            .map_err(|e| ServerError::io("cannot create the loop's waker", e))?;
        // The core asks for its reflect socket (if configured) at once.
        let mut reflect = None;
        while let Some(op) = rv.poll_socket_op() {
            if let pilot_proto::SocketOp::Open { id, port } = op {
                let addr = SocketAddr::new(config.listen.ip(), port.unwrap_or(0));
                let mut socket = mio::net::UdpSocket::bind(addr)
                    .map_err(|e| ServerError::io(format!("cannot listen on {addr}"), e))?;
                poll.registry()
                    .register(&mut socket, REFLECT, mio::Interest::READABLE)
                    .map_err(|e| ServerError::io("cannot watch the reflect socket", e))?;
                reflect = Some((id, socket));
            }
        }
        let (carrier, carrier_fingerprint) = match config.tls_listen {
            None => (None, None),
            Some(addr) => {
                let source = match &config.tls_cert {
                    Some((cert, key)) => CertSource::Files {
                        cert: cert.clone(),
                        key: key.clone(),
                    },
                    None => CertSource::SelfSigned(home.clone()),
                };
                let tls = source.load().map_err(ServerError::Tls)?;
                let server = CarrierServer::bind(
                    addr,
                    tls.config.clone(),
                    config.carrier_limits.clone(),
                    poll.registry(),
                    CARRIER_LISTENER,
                    CARRIER_FIRST,
                )
                .map_err(|e| ServerError::io(format!("cannot listen on TCP {addr}"), e))?;
                tracing::info!(
                    address = %server.local_addr(),
                    fingerprint = %tls.fingerprint,
                    certificate = %tls.source,
                    path = crate::compat::WS_PATH,
                    "carrier listening"
                );
                (Some((server, source)), Some(tls.fingerprint))
            }
        };
        fsutil::write_pid(&pid_file, std::process::id())?;
        Ok(Server {
            rv,
            udp,
            poll,
            events: Events::with_capacity(64),
            store,
            signals,
            clock,
            stop: Arc::new(AtomicBool::new(false)),
            waker: Arc::new(waker),
            held: VecDeque::new(),
            relayed: VecDeque::new(),
            releasable: 0,
            changes: Vec::new(),
            home,
            pid_file,
            key,
            batch: config.max_datagrams_per_turn.max(1),
            reflect,
            reflected: VecDeque::new(),
            reflect_more: false,
            carrier,
            carrier_fingerprint,
            bad_key: BadKeyLog::default(),
            status_at: None,
            status_agents: (0, 0),
            started: Instant::now(),
            started_unix: unix_now(),
        })
    }

    /// The address of the reflect socket, if there is one.
    pub fn reflect_addr(&self) -> Option<SocketAddr> {
        self.reflect.as_ref().and_then(|(_, s)| s.local_addr().ok())
    }

    /// The address the socket is bound to (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr()
    }

    /// The carrier's TCP address, if it listens.
    pub fn carrier_addr(&self) -> Option<SocketAddr> {
        self.carrier.as_ref().map(|(c, _)| c.local_addr())
    }

    /// The SHA-256 of the carrier's certificate, for `--tls-pin`.
    pub fn carrier_fingerprint(&self) -> Option<&str> {
        self.carrier_fingerprint.as_deref()
    }

    /// The carrier's counters and (handshaking, open) connections.
    pub fn carrier_stats(&self) -> Option<(CarrierStats, (usize, usize))> {
        self.carrier
            .as_ref()
            .map(|(c, _)| (c.stats(), c.connections()))
    }

    /// What `pilotctl rendezvous status` shows (the status file's
    /// content).
    pub fn status(&self) -> serde_json::Value {
        let relay = self.rv.relay_stats();
        let udp = self.udp.stats();
        let hs = self.rv.stats();
        let mut v = serde_json::json!({
            "pid": std::process::id(),
            "address": self.local_addr().to_string(),
            "public_key": self.key.to_string(),
            "home": self.home.display().to_string(),
            "reflect_port": self.reflect_addr().map(|a| a.port()),
            "started_at": self.started_unix,
            "updated_at": unix_now(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "agents": {
                "registered": self.rv.record_count(),
                "online": self.rv.online(),
            },
            "trust_pairs": self.rv.pairs().count(),
            "relay": {
                "forwarded_packets": relay.forwarded_packets,
                "forwarded_bytes": relay.forwarded_bytes,
                "refused_malformed": relay.malformed,
                "refused_unknown_sender": relay.unknown_sender,
                "refused_offline": relay.offline,
                "refused_not_paired": relay.not_paired,
                "refused_limited": relay.limited,
            },
            "udp": {
                "datagrams_in": udp.datagrams_in,
                "datagrams_out": udp.datagrams_out,
            },
            // What a handshake flood meets: cookies under load, the
            // per-source limit, and tunnel peers nobody kept forgotten.
            "handshakes": {
                "tunnel_peers": self.rv.state_size().0,
                "cookie_replies": hs.cookie_replies,
                "source_limited": hs.handshakes_source_limited,
                "peers_forgotten": hs.peers_forgotten,
            },
            "tls_address": self.carrier_addr().map(|a| a.to_string()),
            "tls_fingerprint": self.carrier_fingerprint(),
        });
        if let Some((c, (handshaking, open))) = self.carrier_stats() {
            v["carrier"] = serde_json::json!({
                "open": open,
                "handshaking": handshaking,
                "accepted": c.accepted,
                "datagrams_in": c.datagrams_in,
                "datagrams_out": c.datagrams_out,
            });
        }
        v
    }

    /// Rewrites the status file when it is due: every [`STATUS_EVERY`],
    /// or soon after agents came or went. A failed write is logged, never
    /// fatal: the registry matters, the status file does not.
    fn write_status(&mut self) {
        let agents = (self.rv.record_count(), self.rv.online());
        let since = self.status_at.map(|t| t.elapsed());
        let due = match since {
            None => true,
            Some(d) => d >= STATUS_EVERY || (agents != self.status_agents && d >= STATUS_SOON),
        };
        if !due {
            return;
        }
        self.status_at = Some(Instant::now());
        self.status_agents = agents;
        let mut text = self.status().to_string();
        text.push('\n');
        if let Err(e) = fsutil::atomic_write(&self.home.join(STATUS_FILE), text.as_bytes(), 0o600) {
            tracing::warn!(error = %e, "cannot write the status file");
        }
    }

    /// When the status file is due next (for the loop's timeout).
    fn status_deadline(&self) -> Duration {
        let every = match self.status_at {
            None => Duration::ZERO,
            Some(t) => STATUS_EVERY.saturating_sub(t.elapsed()),
        };
        let agents = (self.rv.record_count(), self.rv.online());
        match self.status_at {
            Some(t) if agents != self.status_agents => {
                every.min(STATUS_SOON.saturating_sub(t.elapsed()))
            }
            _ => every,
        }
    }

    /// The public key agents pin.
    pub fn public_key(&self) -> PublicKey {
        self.key
    }

    /// The home directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The registry state machine (for inspection).
    pub fn rendezvous(&self) -> &Rendezvous {
        &self.rv
    }

    /// A handle that stops [`Server::run`] from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            flag: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Serves until SIGTERM or SIGINT (if caught) or a [`StopHandle`]
    /// asks it to stop; then writes what changed, flushes the datagrams
    /// queued for agents (for at most a second) and returns. An error
    /// writing the store stops the server: answering agents about state
    /// that is not kept would break the promise that addresses last.
    pub fn run(&mut self) -> Result<(), ServerError> {
        tracing::info!(
            address = %self.local_addr(),
            public_key = %self.key,
            home = %self.home.display(),
            "rendezvous listening"
        );
        while !self.stop.load(Ordering::SeqCst) {
            self.write_status();
            self.turn()?;
        }
        let _ = std::fs::remove_file(self.home.join(STATUS_FILE));
        self.persist()?;
        self.finish_flush();
        let udp = self.udp.stats();
        tracing::info!(
            registrations = self.rv.record_count(),
            online = self.rv.online(),
            datagrams_in = udp.datagrams_in,
            datagrams_out = udp.datagrams_out,
            relayed_packets = self.rv.relay_stats().forwarded_packets,
            relayed_bytes = self.rv.relay_stats().forwarded_bytes,
            relay_refused = {
                let r = self.rv.relay_stats();
                r.malformed + r.unknown_sender + r.offline + r.not_paired + r.limited
            },
            "rendezvous stopped"
        );
        Ok(())
    }

    /// One loop turn: wait for I/O or the core's deadline, read a bounded
    /// batch, run timers, write changes, release datagrams.
    fn turn(&mut self) -> Result<(), ServerError> {
        let can_read = self.held.is_empty() && !self.udp.is_full();
        let timeout = if self.reflect_more || (can_read && self.udp.may_have_more()) {
            Some(Duration::ZERO)
        } else {
            let core = self
                .clock
                .timeout_until(self.rv.poll_timeout().map(|(at, _)| at));
            let sweep = self
                .carrier
                .as_ref()
                .and_then(|(c, _)| c.deadline())
                .map(|at| at.saturating_duration_since(Instant::now()));
            let status = Some(self.status_deadline());
            [core, sweep, status].into_iter().flatten().min()
        };
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(ServerError::io("the event loop failed", e)),
        }
        let (mut readable, mut writable, mut signalled) = (false, false, false);
        let mut reflect_readable = false;
        let now = self.clock.now();
        for event in self.events.iter() {
            match event.token() {
                UDP => {
                    readable |= event.is_readable();
                    writable |= event.is_writable();
                }
                SIGNALS => signalled = true,
                REFLECT => reflect_readable = true,
                WAKER => {}
                t => {
                    // The carrier's datagrams go to the core like UDP
                    // ones, named by the connection's peer address.
                    let Some((carrier, _)) = self.carrier.as_mut() else {
                        continue;
                    };
                    let (rv, held, relayed) = (&mut self.rv, &mut self.held, &mut self.relayed);
                    let bad_key = &mut self.bad_key;
                    carrier.handle_event(self.poll.registry(), t, &mut |from, bytes| {
                        let before = rv.stats().dropped_bad_mac;
                        rv.handle_datagram(now, pilot_proto::SocketId::CARRIER, from, bytes);
                        bad_key.check(from, before, rv.stats().dropped_bad_mac);
                        drain(rv, held, relayed);
                    });
                }
            }
        }
        if let Some((carrier, _)) = self.carrier.as_mut() {
            carrier.sweep(self.poll.registry(), Instant::now());
        }
        if reflect_readable || self.reflect_more {
            self.read_reflects();
        }
        if signalled {
            self.on_signals();
        }
        if writable {
            self.udp.flush();
        }
        self.release();

        if (readable || self.udp.may_have_more()) && self.held.is_empty() && !self.udp.is_full() {
            let now = self.clock.now();
            let (rv, held, relayed) = (&mut self.rv, &mut self.held, &mut self.relayed);
            let bad_key = &mut self.bad_key;
            let read = self.udp.recv_batch(self.batch, |from, bytes| {
                let before = rv.stats().dropped_bad_mac;
                rv.handle_datagram(now, pilot_proto::SocketId::PRIMARY, from, bytes);
                bad_key.check(from, before, rv.stats().dropped_bad_mac);
                drain(rv, held, relayed);
            });
            if let Err(e) = read {
                tracing::warn!(error = %e, "UDP receive failed; retrying next turn");
            }
        }
        let now = self.clock.now();
        if self.rv.poll_timeout().is_some_and(|(at, _)| at <= now) {
            self.rv.handle_timeout(now);
            drain(&mut self.rv, &mut self.held, &mut self.relayed);
        }
        self.send_relayed();
        self.persist()?;
        self.releasable = self.held.len();
        self.release();
        Ok(())
    }

    fn on_signals(&mut self) {
        let Some(signals) = self.signals.as_mut() else {
            return;
        };
        for signal in signals.pending() {
            if signal.is_stop() {
                tracing::info!(?signal, "stopping");
                self.stop.store(true, Ordering::SeqCst);
            } else if signal == Signal::Hangup {
                // Logs rotate daily by themselves; the carrier's
                // certificate is reloaded (renewed certificates).
                match self.carrier.as_mut() {
                    Some((carrier, source)) => match source.load() {
                        Ok(tls) => {
                            carrier.set_tls(tls.config);
                            tracing::info!(fingerprint = %tls.fingerprint, "carrier certificate reloaded");
                            self.carrier_fingerprint = Some(tls.fingerprint);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "carrier certificate not reloaded; keeping the old one")
                        }
                    },
                    None => tracing::info!("SIGHUP: nothing to reload"),
                }
            }
        }
    }

    /// Writes the registry changes made since the last call, in one
    /// transaction.
    fn persist(&mut self) -> Result<(), ServerError> {
        self.changes.clear();
        while let Some(c) = self.rv.poll_change() {
            self.changes.push(c);
        }
        if self.changes.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.store.apply(&self.changes)?;
        tracing::debug!(
            changes = self.changes.len(),
            micros = started.elapsed().as_micros() as u64,
            "registry written"
        );
        Ok(())
    }

    /// Reads what the reflect socket got (a bounded batch; mio is
    /// edge-triggered, so after a full batch the next turn polls with a
    /// zero timeout and reads again) and sends the answers from it. Answers are dropped
    /// when the socket's buffer is full: a reflect is retried by its agent.
    fn read_reflects(&mut self) {
        let Some((id, socket)) = &self.reflect else {
            return;
        };
        let id = *id;
        let now = self.clock.now();
        let mut buf = [0u8; 2048];
        self.reflect_more = true;
        for _ in 0..self.batch {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    self.rv.handle_datagram(now, id, from, &buf[..n]);
                    while let Some(t) = self.rv.poll_transmit() {
                        if t.socket == id {
                            self.reflected.push_back(t);
                        } else if t.payload.first() == Some(&pilot_proto::wire::TYPE_RELAY) {
                            self.relayed.push_back(t);
                        } else {
                            self.held.push_back(t);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reflect_more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "reflect socket receive failed");
                    break;
                }
            }
        }
        drain(&mut self.rv, &mut self.held, &mut self.relayed);
        while let Some(t) = self.reflected.pop_front() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
    }

    /// Hands relayed packets to the socket at once. The read loop stops
    /// while the socket's queue is full, so these are bounded by a batch.
    fn send_relayed(&mut self) {
        while let Some(t) = self.relayed.pop_front() {
            self.send(t);
        }
    }

    /// One datagram out: over UDP, or over the carrier connection its
    /// destination names (dropped and counted if that is gone or full).
    fn send(&mut self, t: Transmit) {
        if t.socket.is_carrier() {
            if let Some((carrier, _)) = self.carrier.as_mut() {
                carrier.send(self.poll.registry(), t.destination, &t.payload);
            }
        } else if let Some((_, socket)) = self.reflect.as_ref().filter(|(id, _)| *id == t.socket) {
            // An answer from the other port (a Reflect that asked for it).
            let _ = socket.send_to(&t.payload, t.destination);
        } else {
            self.udp.send(t);
        }
    }

    /// Hands released datagrams to the socket while it takes them.
    fn release(&mut self) {
        while self.releasable > 0 && !self.udp.is_full() {
            let Some(t) = self.held.pop_front() else {
                break;
            };
            self.releasable -= 1;
            self.send(t);
        }
    }

    /// At shutdown: everything written, send what is left for at most a
    /// second.
    fn finish_flush(&mut self) {
        self.releasable = self.held.len();
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            self.udp.flush();
            self.release();
            if self.held.is_empty() && self.udp.queued() == 0 {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    dropped = self.held.len() + self.udp.queued(),
                    "stopped with datagrams unsent"
                );
                return;
            }
            let _ = self.poll.poll(&mut self.events, Some(left));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.home.join(STATUS_FILE));
        if let Ok(Some(pid)) = fsutil::read_pid(&self.pid_file) {
            if pid == std::process::id() {
                let _ = std::fs::remove_file(&self.pid_file);
            }
        }
    }
}

/// After agents come or go, the status file is rewritten this soon.
const STATUS_SOON: Duration = Duration::from_millis(100);

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The drain rule: every datagram, then every event (logged).
fn drain(rv: &mut Rendezvous, held: &mut VecDeque<Transmit>, relayed: &mut VecDeque<Transmit>) {
    while let Some(t) = rv.poll_transmit() {
        if t.payload.first() == Some(&pilot_proto::wire::TYPE_RELAY) {
            relayed.push_back(t);
        } else {
            held.push_back(t);
        }
    }
    while let Some(event) = rv.poll_event() {
        // Hostnames for the log: trust events name agents by address.
        let name = |a: &pilot_proto::addr::Address| {
            rv.record(*a)
                .and_then(|r| r.hostname.as_ref())
                .map_or_else(|| "-".to_string(), |h| h.to_string())
        };
        match &event {
            RendezvousEvent::Registered {
                address,
                hostname,
                endpoint,
                new,
            } => tracing::info!(
                %address,
                hostname = %hostname.as_ref().map_or("-", |h| h.as_str()),
                %endpoint,
                new,
                "registered"
            ),
            RendezvousEvent::Expired { address } => {
                tracing::info!(%address, hostname = %name(address), "agent offline")
            }
            RendezvousEvent::TrustRequested { from, to } => tracing::info!(
                %from,
                from_hostname = %name(from),
                %to,
                to_hostname = %name(to),
                "trust request relayed"
            ),
            RendezvousEvent::TrustPaired {
                requester,
                approver,
            } => tracing::info!(
                %requester,
                requester_hostname = %name(requester),
                %approver,
                approver_hostname = %name(approver),
                "trust request approved: pair recorded"
            ),
            RendezvousEvent::TrustRejected {
                requester,
                rejecter,
            } => tracing::info!(
                %requester,
                requester_hostname = %name(requester),
                %rejecter,
                rejecter_hostname = %name(rejecter),
                "trust request rejected"
            ),
            RendezvousEvent::TrustRevoked { by, peer } => tracing::info!(
                %by,
                by_hostname = %name(by),
                %peer,
                peer_hostname = %name(peer),
                "trust revoked"
            ),
            other => tracing::info!(event = %other, "rendezvous event"),
        }
    }
}
