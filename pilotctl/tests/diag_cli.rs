//! The diagnostics commands as a user types them: `peers`, `connections`,
//! `disconnect`, `bench`, text and `--json`, including their errors.

mod common;

use std::time::Duration;

use common::Net;
use driver_mio::ipc::api::Event;

#[test]
fn peers_connections_disconnect_bench() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let b = net.start("bob", &[]);
    let c = net.start("carol", &[]);
    let bob_addr = b["address"].as_str().unwrap().to_string();
    let carol_addr = c["address"].as_str().unwrap().to_string();
    assert_eq!(
        net.ctl("alice", &["peers", "--json"]).data(),
        serde_json::json!([])
    );
    net.trust("alice", "bob");

    // peers: after a ping, bob is there with traffic and a direct path.
    // Echoes are datagrams a loaded machine may drop: ping until one is back.
    assert!(net.wait(30, || net
        .ctl("alice", &["ping", "bob", "--count", "2", "--json"])
        .json()["status"]
        == "ok"));
    let peers = net.ctl("alice", &["peers", "--json"]).data();
    let rows = peers.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{peers}");
    let p = &rows[0];
    assert_eq!(p["node"].as_str(), Some(bob_addr.as_str()));
    assert_eq!(p["hostname"], "bob");
    assert_eq!(p["trusted"], true);
    assert_eq!(p["path"], "direct");
    assert!(p["endpoint"]
        .as_str()
        .is_some_and(|e| e.starts_with("127.0.0.1:")));
    assert_eq!(p["state"], "established");
    assert!(p["rtt_ms"].as_f64().is_some_and(|r| r > 0.0));
    assert!(p["last_handshake_secs"].as_f64().is_some());
    for k in ["bytes_in", "bytes_out", "packets_in", "packets_out"] {
        assert!(p[k].as_u64().is_some_and(|n| n > 0), "{k}: {p}");
    }
    let text = net.ctl("alice", &["peers"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("bob") && text.stdout.contains("established"));
    // The path as the README and `status` name it, then the endpoint.
    assert!(text.stdout.contains("direct 127.0.0.1:"), "{}", text.stdout);

    // connections: a stream a client holds open, and bob's echo side.
    let mut client = net.client("alice");
    let id = client.open_stream("bob", 7).expect("stream to echo");
    client.write_stream(id, b"hello").unwrap();
    let echoed = client
        .read_stream(id, Duration::from_secs(10))
        .unwrap()
        .unwrap();
    assert_eq!(echoed, b"hello");
    let conns = net.ctl("alice", &["connections", "--json"]).data();
    let mine = conns
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("stream {id} not listed: {conns}"))
        .clone();
    assert_eq!(mine["peer"].as_str(), Some(bob_addr.as_str()));
    assert_eq!(mine["peer_hostname"], "bob");
    assert_eq!(mine["remote_port"], 7);
    assert_eq!(mine["state"], "ESTABLISHED");
    assert_eq!(mine["owner"], "client");
    assert_eq!(mine["bytes_sent"], 5);
    assert_eq!(mine["bytes_received"], 5);
    assert!(mine["age_secs"].as_f64().is_some());
    let theirs = net.ctl("bob", &["connections", "--json"]).data();
    let theirs = theirs.as_array().unwrap();
    assert!(
        theirs.iter().any(|s| s["local_port"] == 7
            && s["owner"] == "service"
            && s["kind"] == "stream"
            && s["id"].is_u64()
            && s["peer_hostname"] == "alice"),
        "{theirs:?}"
    );
    // Bound ports too: bob's echo service listens on 7, and a port a
    // client listens on is listed until it stops.
    assert!(
        theirs.iter().any(|s| s["local_port"] == 7
            && s["state"] == "LISTEN"
            && s["service"] == "echo"
            && s["id"].is_null()),
        "{theirs:?}"
    );
    let mut listener = net.client("alice");
    listener.listen(4242).expect("listen on 4242");
    let conns = net.ctl("alice", &["connections", "--json"]).data();
    assert!(
        conns
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["local_port"] == 4242 && s["state"] == "LISTEN" && s["owner"] == "client"),
        "{conns}"
    );
    let text = net.ctl("alice", &["connections"]);
    assert!(text.stdout.contains("ESTABLISHED"), "{}", text.stdout);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("4242") && l.contains("LISTEN")),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains(&format!("{bob_addr} (bob)")),
        "{}",
        text.stdout
    );
    drop(listener);

    // disconnect: the owner sees its stream closed.
    let done = net
        .ctl("alice", &["disconnect", &id.to_string(), "--json"])
        .data();
    assert_eq!(done["closed"], true);
    let closed = loop {
        match client.next_event(Duration::from_secs(10)).unwrap() {
            Some(Event::Closed { stream, .. }) if stream == id => break true,
            Some(_) => {}
            None => break false,
        }
    };
    assert!(closed, "the owner was not told");
    assert_eq!(
        client.read_stream(id, Duration::from_secs(1)).unwrap(),
        None
    );
    for unknown in [id.to_string(), "99999".to_string()] {
        assert_eq!(
            net.ctl("alice", &["disconnect", &unknown, "--json"])
                .error_code(),
            "not_found"
        );
    }

    // bench: 256 KiB to bob and back.
    let run = net.ctl("alice", &["bench", "bob", "256K", "--json"]);
    let bench = run.data();
    assert_eq!(bench["bytes"], 256 * 1024);
    assert!(bench["rate_mib_s"].as_f64().is_some_and(|r| r > 0.0));
    assert!(bench["seconds"].as_f64().is_some_and(|s| s > 0.0));
    let text = net.ctl("alice", &["bench", &bob_addr, "64K"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("MiB/s"));
    assert!(text.stderr.is_empty(), "no progress on a pipe");
    assert_eq!(
        net.ctl("alice", &["bench", &carol_addr, "--json"])
            .error_code(),
        "not_trusted"
    );
    for bad in ["lots", "0", "1.5M"] {
        assert_eq!(
            net.ctl("alice", &["bench", "bob", bad, "--json"])
                .error_code(),
            "invalid_argument"
        );
    }

    // A peer without services refuses the echo stream.
    net.start("dave", &["--no-services"]);
    net.trust("alice", "dave");
    assert_eq!(
        net.ctl("alice", &["bench", "dave", "64K", "--json"])
            .error_code(),
        "connection_failed"
    );
}

#[test]
fn diagnostics_without_a_daemon_are_not_running() {
    let net = Net::new();
    for args in [
        &["peers", "--json"][..],
        &["connections", "--json"],
        &["disconnect", "1", "--json"],
        &["bench", "0:0000.0000.0010", "--json"],
    ] {
        assert_eq!(net.ctl("nobody", args).error_code(), "not_running");
    }
}

/// `--timeout 0` is no limit for ping and bench as for every other
/// command (it made every ping fail at once, and bench blame the
/// daemon); a bench to a peer that went offline names the peer.
#[test]
fn timeout_zero_is_no_limit_and_an_offline_peer_is_named() {
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let ping = net
        .ctl(
            "alice",
            &["ping", "bob", "--count", "1", "--timeout", "0", "--json"],
        )
        .data();
    assert_eq!(ping["received"], 1, "{ping}");
    let bench = net
        .ctl(
            "alice",
            &["bench", "bob", "64K", "--timeout", "0", "--json"],
        )
        .data();
    assert_eq!(bench["bytes"], 64 * 1024);

    net.stop("bob");
    let run = net.ctl(
        "alice",
        &["bench", "bob", "64K", "--timeout", "1", "--json"],
    );
    assert_eq!(run.error_code(), "timeout");
    let message = run.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("bob") && !message.contains("daemon"),
        "{message}"
    );
}

/// `ping --count 0` runs until Ctrl-C and then prints the summary, as
/// ping(8) does; `--interval` and `--timeout` take fractions.
#[test]
fn ping_until_ctrl_c_with_an_interval_and_fractional_timeouts() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let ping = net
        .ctl(
            "alice",
            &[
                "ping",
                "bob",
                "--count",
                "2",
                "--interval",
                "0.05",
                "--timeout",
                "2.5",
                "--json",
            ],
        )
        .data();
    assert_eq!(ping["sent"], 2, "{ping}");
    assert!(ping["loss_percent"].is_number(), "{ping}");
    let sent = net
        .ctl(
            "alice",
            &[
                "send",
                "bob",
                "7",
                "--data",
                "x",
                "--timeout",
                "1.5",
                "--json",
            ],
        )
        .data();
    assert_eq!(sent["reply"]["data"], "x");
    let bad = net.ctl("alice", &["ping", "bob", "--timeout", "soon", "--json"]);
    assert_eq!(bad.error_code(), "invalid_argument");
    assert!(bad.json()["message"].as_str().unwrap().contains("`soon`"));
    let bad = net.ctl("alice", &["ping", "bob", "--interval", "0", "--json"]);
    assert_eq!(bad.error_code(), "invalid_argument");

    let mut child = common::clean_env(&mut Command::new(common::PILOTCTL))
        .env("PILOT_HOME", net.home("alice"))
        .args(["ping", "bob", "--count", "0", "--interval", "0.05"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Three echoes (more than the default count would allow with 0: it
    // was refused), then Ctrl-C.
    let mut echoes = 0;
    while echoes < 3 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("echo from bob") => echoes += 1,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("no echoes from ping --count 0");
            }
        }
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.iter().collect();
    let summary = rest.join("\n");
    assert!(summary.contains("--- bob ping statistics ---"), "{summary}");
    assert!(
        summary.contains("% loss, rtt min/median/avg/max"),
        "{summary}"
    );
}
