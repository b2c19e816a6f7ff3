//! The `pilot-rendezvous` binary as a user runs it, on 127.0.0.1 only:
//! agents (the real `Node`, driven over real UDP sockets by a tiny loop)
//! register, the server stops on SIGTERM and comes back with its registry,
//! a corrupt store is refused loudly.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driver_mio::clock::Clock;
use driver_mio::fsutil;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pilot_proto::addr::Hostname;
use pilot_proto::identity::parse_public_key;
use pilot_proto::msg::Query;
use pilot_proto::node::{Event, Node, NodeConfig, PeerInfo};
use pilot_proto::{Address, Identity, PublicKey};

/// A running `pilot-rendezvous`, killed if the test fails first.
struct Server {
    child: Child,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr: joined once the process is gone, so
    /// everything it wrote is in `stderr`.
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn spawn(home: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pilot-rendezvous"))
            .args(["--listen", listen, "--home"])
            .arg(home)
            // Agents learn the refresh interval from the rendezvous: a
            // short one lets them notice a restart within seconds.
            .args(["--refresh-secs", "1", "--log-level", "info"])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pilot-rendezvous");
        let (tx, stdout) = channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    return;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Server {
            child,
            stdout,
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    fn line(&self) -> String {
        self.stdout
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("no output; stderr:\n{}", self.stderr()))
    }

    /// The plain startup lines: address and public key.
    fn started(&self) -> (SocketAddr, PublicKey) {
        let first = self.line();
        let addr = first
            .strip_prefix("Rendezvous listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .unwrap();
        let second = self.line();
        let key = second
            .trim()
            .strip_prefix("Public key: ")
            .and_then(parse_public_key)
            .unwrap_or_else(|| panic!("unexpected second line {second:?}"));
        assert!(self.line().trim().starts_with("Home: "));
        (addr, key)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pilot-rendezvous did not exit; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let status = self.wait();
        assert!(status.success(), "{status}; stderr:\n{}", self.stderr());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent: the real `Node` on a real socket.
struct Agent {
    node: Node,
    socket: UdpSocket,
    /// The extra sockets the node asked for (non-blocking).
    extra: std::collections::BTreeMap<pilot_proto::SocketId, UdpSocket>,
    clock: Clock,
    events: Vec<Event>,
}

impl Agent {
    fn new(seed: u8, hostname: &str, rv: SocketAddr, rv_key: PublicKey) -> Agent {
        Agent::with(seed, hostname, rv, rv_key, |_| {})
    }

    fn with(
        seed: u8,
        hostname: &str,
        rv: SocketAddr,
        rv_key: PublicKey,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> Agent {
        let clock = Clock::new();
        let mut config = NodeConfig::new(Identity::from_seed(&[seed; 32]), rv_key, rv);
        config.hostname = Hostname::new(hostname).ok();
        config.public = true;
        config.wall_origin_micros = clock.wall_origin_micros();
        // Notice a lost session quickly: unanswered data for
        // keepalive + rekey timeout means the peer restarted.
        config.tunnel.keepalive_timeout = Duration::from_millis(500);
        config.tunnel.rekey_timeout = Duration::from_millis(500);
        config.register_timeout = Duration::from_secs(1);
        config.max_backoff = Duration::from_secs(2);
        config.resolve_timeout = Duration::from_secs(20);
        configure(&mut config);
        let node = Node::new(config, &[seed.wrapping_add(100); 32], clock.now());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        Agent {
            node,
            socket,
            extra: Default::default(),
            clock,
            events: Vec::new(),
        }
    }

    /// One step: wait for a datagram (at most until the node's deadline
    /// or `max`), feed it, run due timers, drain.
    fn step(&mut self, max: Duration) {
        let now = self.clock.now();
        let wait = match self.node.poll_timeout() {
            Some((at, _)) => at.saturating_since(now).min(max),
            None => max,
        };
        // A zero read timeout is an error: wait at least a little.
        let wait = wait.max(Duration::from_micros(200));
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 2048];
        if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
            self.node.handle_datagram(
                self.clock.now(),
                pilot_proto::SocketId::PRIMARY,
                from,
                &buf[..n],
            );
            self.drain();
        }
        let ids: Vec<_> = self.extra.keys().copied().collect();
        for id in ids {
            while let Some(Ok((n, from))) = self.extra.get(&id).map(|s| s.recv_from(&mut buf)) {
                self.node
                    .handle_datagram(self.clock.now(), id, from, &buf[..n]);
                self.drain();
            }
        }
        let now = self.clock.now();
        if self.node.poll_timeout().is_some_and(|(at, _)| at <= now) {
            self.node.handle_timeout(now);
            self.drain();
        }
    }

    fn drain(&mut self) {
        while let Some(op) = self.node.poll_socket_op() {
            match op {
                pilot_proto::SocketOp::Open { id, .. } => {
                    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                    s.set_nonblocking(true).unwrap();
                    self.extra.insert(id, s);
                }
                pilot_proto::SocketOp::Close(id) => {
                    self.extra.remove(&id);
                }
                _ => {}
            }
        }
        while let Some(t) = self.node.poll_transmit() {
            // The server may be down between runs: the send may fail.
            let socket = self.extra.get(&t.socket).unwrap_or(&self.socket);
            let _ = socket.send_to(&t.payload, t.destination);
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
    }

    fn resolve(&mut self, hostname: &str) -> u32 {
        let q = Query::Hostname(Hostname::new(hostname).unwrap());
        let id = self.node.resolve(self.clock.now(), q);
        self.drain();
        id
    }

    fn resolved(&self, id: u32) -> Option<&PeerInfo> {
        self.events.iter().find_map(|e| match e {
            Event::Resolved {
                id: i,
                result: Ok(info),
            } if *i == id => Some(info),
            Event::Resolved { id: i, result } if *i == id => panic!("resolve failed: {result:?}"),
            _ => None,
        })
    }
}

/// Steps every agent in `agents` until `done` or `max` elapses.
fn run_until(
    agents: &mut [&mut Agent],
    max: Duration,
    what: &str,
    mut done: impl FnMut(&[&mut Agent]) -> bool,
) {
    let deadline = Instant::now() + max;
    while !done(agents) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        for a in agents.iter_mut() {
            a.step(Duration::from_millis(5));
        }
    }
}

fn address(a: &Agent) -> Address {
    a.node.address().expect("registered")
}

#[test]
fn registrations_survive_a_restart_and_agents_come_back_by_themselves() {
    let home = tempfile::tempdir().unwrap();
    let home = home.path().join("rv");
    let server = Server::spawn(&home, "127.0.0.1:0", &[]);
    let (rv_addr, rv_key) = server.started();
    assert_eq!(rv_addr.ip().to_string(), "127.0.0.1");
    assert_ne!(rv_addr.port(), 0, "the actual port is printed");
    let key_file = home.join("rendezvous.key");
    assert_eq!(fsutil::mode_of(&key_file).unwrap(), 0o600);
    assert_eq!(fsutil::mode_of(&home).unwrap(), 0o700);

    let mut alice = Agent::new(1, "alice", rv_addr, rv_key);
    let mut bob = Agent::new(2, "bob", rv_addr, rv_key);
    run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_secs(10),
        "both agents to register",
        |a| a.iter().all(|a| a.node.is_registered()),
    );
    let (alice_addr, bob_addr) = (address(&alice), address(&bob));
    assert_ne!(alice_addr, bob_addr);
    let id = alice.resolve("bob");
    run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_secs(10),
        "a lookup",
        |a| a[0].resolved(id).is_some(),
    );
    assert_eq!(alice.resolved(id).unwrap().address, bob_addr);

    server.stop();
    assert!(!home.join("rendezvous.pid").exists(), "pid file removed");

    // Same port, same home: same key, same registry.
    let server = Server::spawn(&home, &rv_addr.to_string(), &[]);
    let (again_addr, again_key) = server.started();
    assert_eq!((again_addr, again_key), (rv_addr, rv_key));

    // Only alice runs: she notices the lost session, registers again, and
    // finds bob's registration, which only the store can have kept
    // (offline: bob has not come back yet).
    let restarted = Instant::now();
    let id = alice.resolve("bob");
    run_until(
        &mut [&mut alice],
        Duration::from_secs(15),
        "alice's lookup after the restart",
        |a| a[0].resolved(id).is_some(),
    );
    let info = alice.resolved(id).unwrap().clone();
    assert_eq!(info.address, bob_addr);
    assert!(!info.online, "bob has not re-registered yet: {info:?}");
    assert_eq!(address(&alice), alice_addr);

    // Bob comes back by himself, with the same address.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let id = alice.resolve("bob");
        run_until(
            &mut [&mut alice, &mut bob],
            Duration::from_secs(10),
            "a lookup",
            |a| a[0].resolved(id).is_some(),
        );
        let info = alice.resolved(id).unwrap();
        assert_eq!(info.address, bob_addr);
        if info.online {
            break;
        }
        assert!(Instant::now() < deadline, "bob did not come back online");
        let pause = Instant::now() + Duration::from_millis(200);
        run_until(
            &mut [&mut alice, &mut bob],
            Duration::from_secs(1),
            "a pause",
            |_| Instant::now() >= pause,
        );
    }
    assert_eq!(address(&bob), bob_addr);
    eprintln!(
        "both agents registered again {:?} after the restart",
        restarted.elapsed()
    );
    for a in [&alice, &bob] {
        assert!(
            !a.events
                .iter()
                .any(|e| matches!(e, Event::RegistrationFailed { .. })),
            "{:?}",
            a.events
        );
    }

    // A newcomer gets an address nobody held before the restart.
    let mut carol = Agent::new(3, "carol", rv_addr, rv_key);
    run_until(
        &mut [&mut carol],
        Duration::from_secs(10),
        "carol to register",
        |a| a[0].node.is_registered(),
    );
    assert!(![alice_addr, bob_addr].contains(&address(&carol)));
    let log = server.stderr();
    assert!(
        log.contains("registry loaded") && log.contains("records=2"),
        "{log}"
    );
    server.stop();
}

#[test]
fn json_startup_line_and_one_server_per_home() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::spawn(home.path(), "127.0.0.1:0", &["--json"]);
    let line = server.line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "ok", "{line}");
    let addr: SocketAddr = v["data"]["address"].as_str().unwrap().parse().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(v["data"]["pid"], server.child.id());
    let key = parse_public_key(v["data"]["public_key"].as_str().unwrap()).unwrap();
    let stored = std::fs::read_to_string(home.path().join("rendezvous.key")).unwrap();
    assert_eq!(stored.trim().len(), 64);
    assert_eq!(
        fsutil::read_pid(&home.path().join("rendezvous.pid")).unwrap(),
        Some(server.child.id())
    );

    // A second server on the same home is refused, and says why.
    let mut second = Server::spawn(home.path(), "127.0.0.1:0", &["--json"]);
    let line = second.line();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "error", "{line}");
    assert_eq!(v["code"], "already_exists", "{line}");
    assert!(!second.wait().success());

    // SIGINT stops it as cleanly as SIGTERM; the key stays.
    server.signal(Signal::SIGINT);
    let mut server = server;
    assert!(server.wait().success(), "{}", server.stderr());
    let again = Server::spawn(home.path(), "127.0.0.1:0", &[]);
    assert_eq!(again.started().1, key);
    again.stop();
}

#[test]
fn a_corrupt_store_is_an_error_naming_the_file_and_is_left_alone() {
    let home = tempfile::tempdir().unwrap();
    let store = home.path().join("registry.redb");
    let garbage = vec![0x5a_u8; 16384];
    std::fs::write(&store, &garbage).unwrap();
    let mut server = Server::spawn(home.path(), "127.0.0.1:0", &["--json"]);
    let line = server.line();
    let status = server.wait();
    assert!(!status.success());
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], "error", "{line}");
    assert_eq!(v["code"], "internal", "{line}");
    let message = v["message"].as_str().unwrap();
    assert!(message.contains(&store.display().to_string()), "{message}");
    assert!(v["hint"].as_str().unwrap().contains("backup"), "{line}");
    let stderr = server.stderr();
    assert!(
        stderr.contains("registry.redb") && stderr.contains("corrupt"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&store).unwrap(),
        garbage,
        "never a silent reset"
    );
}

#[test]
fn trust_pairs_survive_a_restart() {
    let home = tempfile::tempdir().unwrap();
    let server = Server::spawn(home.path(), "127.0.0.1:0", &[]);
    let (rv_addr, rv_key) = server.started();
    let mut alice = Agent::new(1, "alice", rv_addr, rv_key);
    // Bob is private: only a peer he trusts can look him up.
    let mut bob = Agent::with(2, "bob", rv_addr, rv_key, |c| {
        c.public = false;
        c.auto_approve = true;
    });
    run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_secs(10),
        "both agents to register",
        |a| a.iter().all(|a| a.node.is_registered()),
    );
    let bob_addr = address(&bob);
    let now = alice.clock.now();
    alice
        .node
        .handshake(now, Query::Address(bob_addr), "test")
        .unwrap();
    alice.drain();
    run_until(
        &mut [&mut alice, &mut bob],
        Duration::from_secs(10),
        "trust",
        |a| {
            a[0].events
                .iter()
                .any(|e| matches!(e, Event::Trusted { peer, .. } if *peer == bob_addr))
        },
    );
    server.stop();

    let server = Server::spawn(home.path(), &rv_addr.to_string(), &[]);
    server.started();
    // Bob stays away; alice may still find him, through the stored pair.
    let id = alice.resolve("bob");
    run_until(
        &mut [&mut alice],
        Duration::from_secs(15),
        "the lookup",
        |a| a[0].resolved(id).is_some(),
    );
    assert_eq!(alice.resolved(id).unwrap().address, bob_addr);
    // A stranger may not.
    let mut carol = Agent::new(3, "carol", rv_addr, rv_key);
    let id = carol.resolve("bob");
    run_until(
        &mut [&mut carol],
        Duration::from_secs(15),
        "carol's lookup",
        |a| {
            a[0].events
                .iter()
                .any(|e| matches!(e, Event::Resolved { id: i, .. } if *i == id))
        },
    );
    assert!(carol.events.iter().any(|e| matches!(
        e,
        Event::Resolved { id: i, result: Err(_) } if *i == id
    )));
    server.stop();
}

#[test]
fn the_reflect_port_answers_reflects_with_the_address_they_came_from() {
    let home = tempfile::tempdir().unwrap();
    // A port free a moment ago, for the second socket.
    let reflect_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = reflect_port.to_string();
    let server = Server::spawn(home.path(), "127.0.0.1:0", &["--reflect-port", &port]);
    let (rv_addr, _) = server.started();
    let reflect_addr = SocketAddr::new(rv_addr.ip(), reflect_port);
    let me = UdpSocket::bind("127.0.0.1:0").unwrap();
    me.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mine = me.local_addr().unwrap();
    // Each port answers from itself, or, asked to, from the other one
    // (how an agent tells whether its NAT lets in a port it never sent
    // to): (sent to, other port asked for, answered from).
    let cases = [
        (rv_addr, false, rv_addr),
        (reflect_addr, false, reflect_addr),
        (rv_addr, true, reflect_addr),
        (reflect_addr, true, rv_addr),
    ];
    for (i, (to, other_port, from_want)) in cases.into_iter().enumerate() {
        let token = [i as u8 + 1; 8];
        // Retried: the first datagram may beat the socket's registration.
        let answer = (0..25)
            .find_map(|_| {
                me.send_to(&pilot_proto::wire::reflect(token, other_port), to)
                    .unwrap();
                let mut buf = [0u8; 64];
                let (n, from) = me.recv_from(&mut buf).ok()?;
                Some((from, buf[..n].to_vec()))
            })
            .unwrap_or_else(|| {
                panic!("no answer to a reflect sent to {to} (other port: {other_port})")
            });
        assert_eq!(answer.0, from_want, "case {i}: the socket that answered");
        assert_eq!(
            pilot_proto::wire::decode(&answer.1),
            Ok(pilot_proto::wire::Packet::Reflected {
                token,
                observed: mine
            })
        );
    }
    // The reflect port answers nothing else.
    me.send_to(&[4, 0, 0, 0, 1, 2, 3, 4], reflect_addr).unwrap();
    let mut buf = [0u8; 64];
    assert!(me.recv_from(&mut buf).is_err());
    server.stop();
}

#[test]
fn an_agent_classifies_its_nat_through_the_reflect_port() {
    let home = tempfile::tempdir().unwrap();
    let reflect_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let port = reflect_port.to_string();
    let server = Server::spawn(home.path(), "127.0.0.1:0", &["--reflect-port", &port]);
    let (rv_addr, rv_key) = server.started();
    let mut alice = Agent::with(41, "alice", rv_addr, rv_key, |c| {
        c.reflect_addr = Some(SocketAddr::new(rv_addr.ip(), reflect_port));
    });
    run_until(
        &mut [&mut alice],
        Duration::from_secs(20),
        "classification",
        |a| {
            a[0].events
                .iter()
                .any(|e| matches!(e, Event::NatClassified { .. }))
        },
    );
    // Loopback has no NAT: one port whatever the destination.
    let kind = alice.events.iter().find_map(|e| match e {
        Event::NatClassified { kind } => Some(*kind),
        _ => None,
    });
    assert_eq!(kind, Some(pilot_proto::nat::NatKind::EndpointIndependent));
    assert!(
        alice.extra.is_empty(),
        "the classification socket is closed"
    );
    server.stop();
}
