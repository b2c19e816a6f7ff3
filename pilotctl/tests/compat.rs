//! The compat carrier on loopback, with real processes: a rendezvous
//! with `--tls-listen`, agents with `--transport compat` talking to UDP
//! agents and to each other through the relay, a rendezvous restart under
//! a compat agent, and the TLS listener under abuse.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::carrier::{compat_flags, rss_kib, tls_connect};
use common::{rendezvous_start, Net};
use serde_json::Value;

const WS_PATH: &str = driver_mio::compat::WS_PATH;

fn net() -> Net {
    Net::with_rendezvous(None, "127.0.0.1:0", &["--tls-listen", "127.0.0.1:0"])
}

fn start_compat(net: &mut Net, name: &str) -> Value {
    let flags = compat_flags(net);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    net.start(name, &flags)
}

fn ok(net: &Net, name: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    net.ctl(name, &a).data()
}

fn peer<'a>(peers: &'a Value, hostname: &str) -> &'a Value {
    peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["hostname"] == hostname))
        .unwrap_or_else(|| panic!("{hostname} is not among the peers: {peers}"))
}

/// Echo over a stream, a message into the inbox, and a stream of 1 MiB.
fn exchange(net: &Net, from: &str, to: &str) {
    let text = format!("{from} to {to} over the carrier");
    let echo = ok(net, from, &["connect", to, "7", "--message", &text]);
    assert_eq!(echo["reply"]["data"], text.as_str(), "echo: {echo}");
    ok(net, from, &["send-message", to, "--data", &text]);
    assert!(
        net.wait(15, || {
            let inbox = ok(net, to, &["inbox"]);
            inbox["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["data"] == text.as_str()))
        }),
        "the message never reached {to}"
    );
    let bench = ok(net, from, &["bench", to, "1M"]);
    assert_eq!(bench["bytes"].as_u64(), Some(1 << 20), "bench: {bench}");
}

#[test]
fn compat_agents_reach_udp_and_compat_peers_through_the_relay() {
    let mut net = net();
    net.start("alice", &[]);
    start_compat(&mut net, "carol");
    start_compat(&mut net, "dave");

    let info = ok(&net, "carol", &["info"]);
    assert_eq!(info["registered"], true, "{info}");
    assert_eq!(info["transport"]["mode"], "compat", "{info}");
    assert_eq!(info["transport"]["active"], "compat", "{info}");
    assert_eq!(info["transport"]["carrier_connected"], true, "{info}");
    let alice = ok(&net, "alice", &["info"]);
    assert_eq!(alice["transport"]["active"], "udp", "{alice}");
    // The text answer shows the transport too (the README sends users to
    // `pilotctl info` for it), not only --json.
    for (name, line) in [
        ("carol", "Transport:   compat, carrier connected"),
        ("alice", "Transport:   udp\n"),
    ] {
        let shown = net.ctl(name, &["info"]).stdout;
        assert!(shown.contains(line), "{name}: {shown}");
    }

    // Compat <-> UDP.
    net.trust("carol", "alice");
    exchange(&net, "carol", "alice");
    exchange(&net, "alice", "carol");
    // Compat <-> compat.
    net.trust("dave", "carol");
    exchange(&net, "dave", "carol");

    let peers = ok(&net, "carol", &["peers"]);
    let a = peer(&peers, "alice");
    assert_eq!(a["path"], "relay", "{a}");
    assert_eq!(a["transport"], "compat", "{a}");
    // The text shows both too, as the README's compat section says.
    let shown = net.ctl("carol", &["peers"]).stdout;
    let row = shown
        .lines()
        .find(|l| l.contains("alice"))
        .unwrap_or_default();
    assert!(row.contains("relay") && row.contains("(compat)"), "{shown}");
    // Nobody was offered a UDP candidate for a compat agent.
    let peers = ok(&net, "alice", &["peers"]);
    let c = peer(&peers, "carol");
    assert_eq!(c["path"], "relay", "{c}");
    assert_eq!(c["candidates"].as_array().map(Vec::len), Some(0), "{c}");
}

fn free_ports() -> (u16, u16) {
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        u.local_addr().unwrap().port(),
        t.local_addr().unwrap().port(),
    )
}

/// True while `/proc` shows `pid` and it is not a zombie.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.split_whitespace().next()?.to_string();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}

#[test]
fn a_compat_agent_comes_back_after_the_rendezvous_is_killed() {
    let (udp, tcp) = free_ports();
    let listen = format!("127.0.0.1:{udp}");
    let tls = format!("127.0.0.1:{tcp}");
    let mut net = Net::with_rendezvous(None, &listen, &["--tls-listen", &tls]);
    start_compat(&mut net, "carol");
    start_compat(&mut net, "dave");
    net.trust("carol", "dave");
    let before = ok(&net, "carol", &["info"]);
    let connects = before["transport"]["carrier_connects"]
        .as_u64()
        .unwrap_or(0);

    // SIGKILL: no goodbye, no flush; the carrier connections just drop.
    let pid = net.rv_pid;
    assert!(pid > 0 && alive(pid), "rendezvous pid {pid}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        net.wait(10, || !alive(pid)),
        "the rendezvous survived SIGKILL"
    );
    assert!(
        net.wait(20, || {
            ok(&net, "carol", &["info"])["transport"]["carrier_connected"] == false
        }),
        "carol never saw the carrier go"
    );
    // A message sent while the rendezvous is dead waits in the stream
    // layer and arrives once the carrier is back.
    let text = "sent while the rendezvous was dead";
    let sender = {
        let carol = net.home("carol");
        std::thread::spawn(move || {
            common::pilotctl(
                &[
                    "send-message",
                    "dave",
                    "--data",
                    text,
                    "--timeout",
                    "60",
                    "--json",
                ],
                &[("PILOT_HOME", carol.to_str().unwrap())],
            )
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    // The same ports and home: the same key, registry and certificate.
    let restarted = rendezvous_start(&listen, &net.rv_home, &["--tls-listen", &tls, "--json"]);
    let data = restarted.data();
    assert_eq!(data["public_key"], net.rv_key.as_str(), "{data}");
    net.rv_pid = data["pid"].as_u64().unwrap_or(0);
    let sent = sender.join().unwrap();
    assert_eq!(
        sent.code, 0,
        "send-message: {} {}",
        sent.stdout, sent.stderr
    );
    assert!(net.wait(20, || {
        ok(&net, "dave", &["inbox"])["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["data"] == text))
    }));
    // Exactly once, also after a while (no late retransmitted copy).
    std::thread::sleep(Duration::from_secs(2));
    let inbox = ok(&net, "dave", &["inbox"]);
    let copies = inbox["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["data"] == text)
        .count();
    assert_eq!(copies, 1, "{inbox}");

    // Same address, reconnected, registered, and the trust still holds
    // both ways.
    let after = ok(&net, "carol", &["info"]);
    assert_eq!(after["address"], before["address"], "{after}");
    assert_eq!(after["registered"], true, "{after}");
    assert_eq!(after["transport"]["carrier_connected"], true, "{after}");
    assert!(
        after["transport"]["carrier_connects"].as_u64().unwrap_or(0) > connects,
        "{after}"
    );
    for (name, other) in [("carol", "dave"), ("dave", "carol")] {
        let trusted = ok(&net, name, &["trust"]);
        assert_eq!(
            trusted.as_array().map(Vec::len),
            Some(1),
            "{name}: {trusted}"
        );
        let echo = ok(
            &net,
            name,
            &["connect", other, "7", "--message", "after the kill"],
        );
        assert_eq!(echo["reply"]["data"], "after the kill", "{name}: {echo}");
    }
}

/// Reads until the server closes; returns what it sent.
fn read_to_close(r: &mut impl Read) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the server kept the connection open: {e}")
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                panic!("the server kept the connection open: {e}")
            }
            Err(_) => return all,
        }
    }
}

#[test]
fn the_tls_listener_refuses_abuse_and_keeps_serving() {
    let mut net = net();
    let (addr, _) = net.rv_tls.clone().unwrap();
    // A slow handshake: half a TLS record, then nothing. The server gives
    // up on it (checked at the end, after its 10 s).
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();

    // Plain HTTP instead of TLS: a TLS alert, then the connection closes.
    let mut plain = TcpStream::connect(&addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_to_close(&mut plain);
    assert_eq!(answer.first(), Some(&0x15), "a TLS alert: {answer:?}");

    // TLS, then an upgrade on another path: 404.
    let (ws, _) = {
        let tls = tls_connect(&addr);
        match tungstenite::client::client(format!("wss://{addr}/elsewhere"), tls) {
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                assert_eq!(r.status(), 404);
                (None::<()>, ())
            }
            other => panic!("expected 404, got {:?}", other.map(|_| ())),
        }
    };
    assert!(ws.is_none());

    // A WebSocket upgrade without the path: 404 too.
    match tungstenite::client::client(format!("wss://{addr}/"), tls_connect(&addr)) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            assert_eq!(r.status(), 404);
        }
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }

    // Plain HTTP over TLS: each refusal is an HTTP status line and a
    // one-line body saying where the carrier is, then the close.
    let refused = |request: &[u8]| {
        let mut tls = tls_connect(&addr);
        tls.write_all(request).unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(&mut tls)).into_owned();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.lines().next().unwrap_or_default().to_string();
        assert!(
            body.ends_with('\n') && body.lines().count() == 1,
            "one line: {answer:?}"
        );
        assert!(body.len() < 200, "{answer:?}");
        (status, body.to_string())
    };
    // A request that is no upgrade, on the carrier's path: 400.
    let (status, body) = refused(b"GET /pilot/v1/carrier HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request", "{body}");
    assert!(
        body.contains("WebSocket") && body.contains(WS_PATH),
        "{body}"
    );
    // A POST with upgrade headers is no upgrade either.
    let (status, _) = refused(
        b"POST /pilot/v1/carrier HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n\
          Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // Anything on another path: 404, saying where the carrier is.
    let (status, body) = refused(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found", "{body}");
    assert!(body.contains(WS_PATH), "{body}");
    // Not HTTP at all (inside TLS): 400.
    let (status, _) = refused(b"\x00\x01\x02 hello\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // A head that never ends: cut at 8 KiB with 431, not read forever.
    let mut endless = b"GET /pilot/v1/carrier HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(8192, b'a');
    let (status, _) = refused(&endless);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");

    // An oversized message: the connection is closed.
    let tls = tls_connect(&addr);
    let (mut ws, _) =
        tungstenite::client::client(format!("wss://{addr}{WS_PATH}"), tls).expect("upgrade");
    // The server may close while the message is still being written
    // (broken pipe): that is the refusal too.
    let sent = ws.send(tungstenite::Message::Binary(vec![0u8; 64 * 1024].into()));
    let closed = loop {
        if let Err(e) = &sent {
            break tungstenite::Error::Io(std::io::Error::other(e.to_string()));
        }
        match ws.read() {
            Ok(tungstenite::Message::Close(_)) => continue,
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            closed,
            tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(_)
                | tungstenite::Error::Io(_)
                | tungstenite::Error::Tls(_)
        ),
        "{closed:?}"
    );

    // 1000 idle connections: handshakes past the cap close the oldest,
    // and a UDP agent and a compat agent are still served.
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(idle.len() >= 900, "only {} connections", idle.len());
    let udp = net.start("alice", &[]);
    assert!(udp["address"].is_string(), "{udp}");
    let compat = start_compat(&mut net, "carol");
    assert!(compat["address"].is_string(), "{compat}");
    drop(idle);

    // The slow handshake was closed (or evicted by the idle ones).
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    read_to_close(&mut slow);
}

/// A tinyproxy on 127.0.0.1, stopped when dropped.
struct Tinyproxy {
    child: std::process::Child,
    port: u16,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's tinyproxy (installed by .ci/run), with basic
/// credentials if given; None (and a message) if it is not installed.
fn tinyproxy(dir: &std::path::Path, name: &str, auth: Option<(&str, &str)>) -> Option<Tinyproxy> {
    let found = std::process::Command::new("tinyproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("proxy test skipped: tinyproxy is missing (apt-get install tinyproxy)");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 20\nAllow 127.0.0.1\nLogLevel Info\n"
    );
    if let Some((user, pass)) = auth {
        conf.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    let path = dir.join(format!("{name}.conf"));
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start tinyproxy");
    let proxy = Tinyproxy { child, port };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "tinyproxy did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(proxy)
}

/// `daemon start` as compat agent `name` with `HTTPS_PROXY=proxy`.
fn start_via_proxy(net: &mut Net, name: &str, proxy: &str, wait: &str) -> common::Run {
    let home = net.home(name);
    let (rv, key) = (net.rv_addr.clone(), net.rv_key.clone());
    let mut args = vec![
        "daemon".to_string(),
        "start".into(),
        "--rendezvous".into(),
        rv,
        "--rendezvous-key".into(),
        key,
        "--hostname".into(),
        name.into(),
        "--wait".into(),
        wait.into(),
        "--json".into(),
    ];
    args.extend(compat_flags(net));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    net.track(name);
    common::pilotctl(
        &args,
        &[
            ("PILOT_HOME", home.to_str().unwrap()),
            ("HTTPS_PROXY", proxy),
        ],
    )
}

#[test]
fn compat_through_an_http_connect_proxy_with_and_without_credentials() {
    let mut net = net();
    let dir = net.dir.path().to_path_buf();
    let Some(open) = tinyproxy(&dir, "open", None) else {
        return;
    };
    let Some(locked) = tinyproxy(&dir, "locked", Some(("zed", "s3cretpw"))) else {
        return;
    };

    // Without credentials.
    let open_url = format!("http://127.0.0.1:{}", open.port);
    start_via_proxy(&mut net, "carol", &open_url, "15").data();
    let info = ok(&net, "carol", &["info"]);
    assert_eq!(info["transport"]["proxy"], open_url.as_str(), "{info}");

    // With credentials: online, and the password is nowhere to be seen.
    let locked_url = format!("http://127.0.0.1:{}", locked.port);
    let with_auth = format!("http://zed:s3cretpw@127.0.0.1:{}", locked.port);
    let started = start_via_proxy(&mut net, "dave", &with_auth, "15").data();
    let info = ok(&net, "dave", &["info"]);
    assert_eq!(info["transport"]["proxy"], locked_url.as_str(), "{info}");
    assert!(!info.to_string().contains("s3cretpw"), "{info}");
    let home = net.home("dave");
    for entry in std::fs::read_dir(&home).unwrap().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path()).unwrap()).into_owned();
            assert!(
                !text.contains("s3cretpw"),
                "{} holds the password",
                entry.path().display()
            );
        }
    }
    let pid = started["pid"].as_u64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cretpw"));

    // Both behind proxies, trusted, and talking.
    net.trust("dave", "carol");
    exchange(&net, "dave", "carol");

    // A wrong password: a clear error naming the proxy, not the password.
    let wrong = format!("http://zed:n0tit@127.0.0.1:{}", locked.port);
    let failed = start_via_proxy(&mut net, "erin", &wrong, "4");
    assert_eq!(failed.error_code(), "timeout", "{}", failed.stdout);
    let message = failed.json()["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains(&locked_url), "{message}");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("n0tit"), "{message}");
    let info = ok(&net, "erin", &["info"]);
    assert!(!info.to_string().contains("n0tit"), "{info}");
}

/// Figures, each with its baseline from the same run (printed, not
/// asserted: machines differ): stream throughput and ping RTT over the
/// carrier (through the relay) against UDP direct on loopback; daemon
/// start to registration over the carrier against UDP; the rendezvous's
/// memory per idle carrier connection.
///
/// Its 8 MiB carrier bench used to stall for 30 s in about 2 runs in 10
/// (issue 9: smoltcp ignoring ACKs once the echo's window closed; see
/// `Streams::repair` in pilot-proto).
#[test]
fn figures_compat_against_udp() {
    let mut net = net();
    let t = std::time::Instant::now();
    net.start("alice", &[]);
    let udp_start = t.elapsed();
    net.start("bob", &[]);
    let t = std::time::Instant::now();
    start_compat(&mut net, "carol");
    let compat_start = t.elapsed();
    net.trust("bob", "alice");
    net.trust("carol", "alice");
    let mut line = Vec::new();
    for (from, what) in [("bob", "udp direct"), ("carol", "compat relay")] {
        // Warm up the path first (bob's may start on the relay).
        let _ = ok(&net, from, &["ping", "alice", "--count", "3"]);
        let run = net.ctl(from, &["bench", "alice", "8M", "--json"]);
        if run.json()["status"] != "ok" {
            panic!(
                "{what}: {}\n{from}: {}\nalice: {}",
                run.stdout,
                ok(&net, from, &["info"]),
                ok(&net, "alice", &["peers"])
            );
        }
        let bench = run.data();
        assert_eq!(bench["bytes"].as_u64(), Some(8 << 20), "{bench}");
        let ping = ok(&net, from, &["ping", "alice", "--count", "10"]);
        let peers = ok(&net, from, &["peers"]);
        line.push(format!(
            "{what} (path {}): {:.1} MiB/s, ping median {:.3} ms",
            peer(&peers, "alice")["path"],
            bench["rate_mib_s"].as_f64().unwrap_or(f64::NAN),
            ping["rtt_ms"]["median"].as_f64().unwrap_or(f64::NAN)
        ));
    }
    // Idle carrier connections (upgraded, then silent).
    let (addr, _) = net.rv_tls.clone().unwrap();
    let before = rss_kib(net.rv_pid);
    let idle: Vec<_> = (0..200)
        .map(|_| {
            let tls = tls_connect(&addr);
            tungstenite::client::client(format!("wss://{addr}{WS_PATH}"), tls)
                .expect("upgrade")
                .0
        })
        .collect();
    let after = rss_kib(net.rv_pid);
    eprintln!(
        "[compat figures] {}; start to registered: udp {} ms, compat {} ms (both include \
         pilotctl spawning the daemon); rendezvous memory per idle carrier connection: \
         {:.1} KiB ({} KiB for {})",
        line.join("; "),
        udp_start.as_millis(),
        compat_start.as_millis(),
        after.saturating_sub(before) as f64 / idle.len() as f64,
        after.saturating_sub(before),
        idle.len()
    );
}

/// A self-signed certificate and key (PEM) from openssl, or None (and a
/// message) if it is missing.
fn openssl_pair(
    dir: &std::path::Path,
    name: &str,
) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args([
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=pilot-rendezvous",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .is_ok_and(|o| o.status.success());
    if !made {
        eprintln!("certificate reload test skipped: openssl is missing");
        return None;
    }
    Some((cert, key))
}

/// The fingerprint of the certificate a new TLS connection to `addr` is
/// shown.
fn served_fingerprint(addr: &str) -> String {
    let mut tls = tls_connect(addr);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).expect("TLS handshake");
    }
    let der = tls.conn.peer_certificates().expect("a certificate")[0].clone();
    driver_mio::compat::tls::fingerprint(&der)
}

fn file_fingerprint(cert: &std::path::Path) -> String {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(cert).expect("PEM certificate");
    driver_mio::compat::tls::fingerprint(&der)
}

#[test]
fn sighup_reloads_the_carrier_certificate() {
    let dir = tempfile::Builder::new()
        .prefix("pt")
        .tempdir_in("/tmp")
        .unwrap();
    let Some((old_cert, old_key)) = openssl_pair(dir.path(), "old") else {
        return;
    };
    let Some((new_cert, new_key)) = openssl_pair(dir.path(), "new") else {
        return;
    };
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let net = Net::with_rendezvous(
        None,
        "127.0.0.1:0",
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let (addr, printed) = net.rv_tls.clone().unwrap();
    let (old, new) = (file_fingerprint(&old_cert), file_fingerprint(&new_cert));
    assert_ne!(old, new);
    assert_eq!(printed, old);
    assert_eq!(served_fingerprint(&addr), old);
    // An open carrier connection from before the reload.
    let (mut before, _) =
        tungstenite::client::client(format!("wss://{addr}{WS_PATH}"), tls_connect(&addr))
            .expect("upgrade");

    let hup = |net: &Net| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(net.rv_pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    };
    // Renewed files, SIGHUP: new connections get the new certificate.
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    hup(&net);
    assert!(
        net.wait(10, || served_fingerprint(&addr) == new),
        "still served the old certificate after SIGHUP"
    );
    // The connection from before stays open (a ping is answered).
    before
        .send(tungstenite::Message::Ping(vec![1].into()))
        .unwrap();
    loop {
        match before.read().expect("the old connection is still open") {
            tungstenite::Message::Pong(_) => break,
            _ => continue,
        }
    }

    // A broken file and SIGHUP: the certificate in use stays.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    hup(&net);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        alive(net.rv_pid),
        "the rendezvous died on a bad certificate"
    );
    assert_eq!(served_fingerprint(&addr), new);
}
