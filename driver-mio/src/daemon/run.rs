//! The daemon's event loop: one mio `Poll` for the UDP socket, the IPC
//! socket and signals; the node's `poll_timeout` is the poll timeout.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use pilot_proto::addr::Hostname;
use pilot_proto::identity::PublicKey;
use pilot_proto::node::{Node, NodeConfig, ServiceConfig};
use tracing::{info, warn};

use super::agent::{Agent, Out};
use super::home::Home;
use crate::clock::Clock;
use crate::fsutil::FileError;
use crate::ipc::server::{IpcServer, ServerEvent};
use crate::signals::Signals;
use crate::udp::UdpEndpoint;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// `PILOT_HOME`.
    pub home: PathBuf,
    /// The IPC socket.
    pub socket: PathBuf,
    /// The rendezvous's UDP address.
    pub rendezvous: SocketAddr,
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
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A file under `PILOT_HOME` is unreadable or corrupt.
    #[error(transparent)]
    File(#[from] FileError),
    /// A socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

const UDP: Token = Token(0);
const SIGNALS: Token = Token(1);
/// Tokens from here on belong to the IPC server.
const IPC_BASE: usize = 16;

/// Datagrams read per wakeup before timers and writes get their turn.
const READ_BUDGET: usize = 256;

/// Runs the daemon until SIGTERM/SIGINT or a `Stop` request.
pub fn run(opts: Options) -> Result<(), DaemonError> {
    let home = Home::open(&opts.home)?;
    let identity = home.identity()?;
    let trust = home.trust()?;
    let mut poll = Poll::new().map_err(io_err("creating the event loop"))?;
    let mut udp = UdpEndpoint::bind(opts.listen, poll.registry(), UDP)
        .map_err(io_err(format!("binding UDP {}", opts.listen)))?;
    let mut ipc = IpcServer::bind(&opts.socket, poll.registry(), IPC_BASE)
        .map_err(io_err(format!("opening the IPC socket {}", opts.socket.display())))?;
    let mut signals = Signals::register(poll.registry(), SIGNALS).map_err(io_err("installing signal handlers"))?;
    let clock = Clock::new();
    let seed = crate::seed::os_seed().map_err(io_err("reading OS randomness"))?;

    let mut config = NodeConfig::new(identity, opts.rendezvous_key, opts.rendezvous);
    config.hostname = opts.hostname.clone();
    config.public = opts.public;
    config.auto_approve = opts.auto_approve;
    config.services = opts.services.clone();
    config.trust = trust;
    config.wall_origin_micros = clock.wall_origin_micros();
    let now = clock.now();
    let node = Node::new(config, &seed, now);
    let mut agent = Agent::new(node, now);
    crate::fsutil::write_pid(&home.path("daemon.pid"))?;
    info!(
        listen = %udp.local_addr(),
        socket = %opts.socket.display(),
        key = %agent.node.public_key(),
        "daemon started"
    );

    let mut events = Events::with_capacity(256);
    let mut buf_events = Vec::new();
    let mut stop = false;
    while !stop {
        let deadline = agent.node.poll_timeout().map(|(t, _)| t);
        let timeout = clock.timeout_until(deadline);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(DaemonError::Io {
                what: "waiting for events".into(),
                source: e,
            });
        }
        for event in events.iter() {
            match event.token() {
                UDP => {
                    if event.is_writable() {
                        let _ = udp.flush();
                    }
                    if event.is_readable() {
                        let now = clock.now();
                        let node = &mut agent.node;
                        let r = udp.recv_batch(READ_BUDGET, |from, bytes| node.handle_datagram(now, from, bytes));
                        if let Err(e) = r {
                            warn!(error = %e, "reading UDP");
                        }
                    }
                }
                SIGNALS => {
                    if !signals.pending().is_empty() {
                        info!("signal received, shutting down");
                        stop = true;
                    }
                }
                _ => {
                    ipc.handle_event(event);
                }
            }
        }
        let now = clock.now();
        if agent.node.poll_timeout().is_some_and(|(t, _)| t <= now) {
            agent.node.handle_timeout(now);
        }
        buf_events.clear();
        while let Some(e) = ipc.poll_event() {
            buf_events.push(e);
        }
        for e in buf_events.drain(..) {
            match e {
                ServerEvent::Connected { client } => agent.client_connected(client),
                ServerEvent::Request { client, id, request } => agent.handle_request(now, client, id, request),
                ServerEvent::Data { client, stream, bytes } => {
                    let more = agent.client_data(now, client, stream, &bytes);
                    ipc.pause_reading(client, !more);
                }
                ServerEvent::Disconnected { client } => agent.client_gone(now, client),
                ServerEvent::Writable { client } => {
                    agent.client_writable(now, client, |c| ipc.room(c));
                    if agent.client_may_send(client) {
                        ipc.pause_reading(client, false);
                    }
                }
                _ => {}
            }
        }
        pump(&mut agent, &mut udp, &mut ipc, now);
        let effects = agent.take_effects();
        if effects.trust_changed {
            if let Err(e) = home.save_trust(&agent.node.trust_state()) {
                warn!(error = %e, "saving trust state");
            }
        }
        for m in &effects.delivered {
            let wall = clock.wall_origin_micros().saturating_add(now.as_micros()) / 1_000_000;
            match home.deliver(m, wall) {
                Ok(path) => info!(path = %path.display(), from = %m.from, "received"),
                Err(e) => warn!(error = %e, "storing a received message"),
            }
        }
        stop |= effects.stop;
    }
    // Flush what is queued (answers to Stop, a last refresh) and leave no
    // stale files behind.
    let now = clock.now();
    pump(&mut agent, &mut udp, &mut ipc, now);
    let _ = udp.flush();
    ipc.flush_all(Duration::from_millis(200));
    home.save_trust(&agent.node.trust_state())?;
    let _ = std::fs::remove_file(home.path("daemon.pid"));
    drop(ipc);
    info!("daemon stopped");
    Ok(())
}

/// Moves the node's output to the sockets and the agent's to clients.
fn pump(agent: &mut Agent, udp: &mut UdpEndpoint, ipc: &mut IpcServer, now: pilot_proto::Timestamp) {
    loop {
        agent.drain_node(now, |c| ipc.room(c));
        let mut moved = false;
        while udp.queued() < 4096 {
            let Some(t) = agent.node.poll_transmit() else {
                break;
            };
            udp.send(t);
            moved = true;
        }
        while let Some(out) = agent.poll_out() {
            moved = true;
            match out {
                Out::Response { client, id, response } => ipc.send_response(client, id, &response),
                Out::Event { client, event } => ipc.send_event(client, &event),
                Out::Data { client, stream, bytes } => ipc.send_data(client, stream, &bytes),
            }
        }
        if !moved {
            return;
        }
    }
}

#[allow(dead_code)]
fn interest() -> Interest {
    Interest::READABLE
}
