//! The daemon and the rendezvous as a user runs them: real processes on
//! loopback, each agent with its own temporary PILOT_HOME.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use base64::Engine as _;
use common::{pilotctl, Net};
use driver_mio::ipc::api::{Event, Request};

const T: Duration = Duration::from_secs(10);

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn two_daemons_register_trust_and_exchange_a_stream_and_a_datagram() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    let b = net.start("bob", &[]);
    assert_ne!(a["address"], b["address"]);
    assert!(a["pid"].as_u64().is_some());
    net.trust("alice", "bob");

    let mut alice = net.client("alice");
    let mut bob = net.client("bob");
    // A datagram; a loaded machine may drop one, so it goes again until
    // bob has one.
    bob.request(
        Request::Bind {
            port: 6000,
            force: false,
        },
        T,
    )
    .unwrap();
    let (mut got, mut sent) = (None, None);
    let arrived = net.wait(10, || {
        sent = Some(alice.request(
            Request::SendDatagram {
                peer: "bob".into(),
                port: 6000,
                src_port: 6001,
                data_b64: b64(b"hello bob"),
            },
            T,
        ));
        if let Ok(Some(Event::Datagram { data_b64, from, .. })) =
            bob.next_event(Duration::from_millis(100))
        {
            got = Some((from, data_b64));
        }
        got.is_some()
    });
    assert!(arrived, "no datagram arrived; last send: {sent:?}");
    let (from, data) = got.unwrap();
    assert_eq!(from, format!("{}:6001", a["address"].as_str().unwrap()));
    assert_eq!(data, b64(b"hello bob"));

    // A stream, 1 MiB each way through bob's echo service.
    let v = alice
        .request(
            Request::Connect {
                peer: "bob".into(),
                port: 7,
            },
            T,
        )
        .unwrap();
    let stream = v["stream"].as_u64().unwrap() as u32;
    let payload: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    alice.write_stream(stream, &payload).unwrap();
    alice.request(Request::Shutdown { stream }, T).unwrap();
    let mut back = Vec::new();
    while let Some(chunk) = alice.read_stream(stream, T).unwrap() {
        back.extend_from_slice(&chunk);
    }
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");
}

#[test]
fn restart_and_sigkill_keep_address_hostname_and_trust() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let stop = net.ctl("alice", &["daemon", "stop", "--json"]);
    stop.data();
    // Started again without flags: the saved settings are used.
    let again = net.ctl("alice", &["daemon", "start", "--json"]).data();
    assert_eq!(again["address"], a["address"]);
    assert_eq!(again["hostname"], "alice");
    let trusted = net.client("alice").request(Request::Trusted, T).unwrap();
    assert_eq!(trusted[0]["hostname"], "bob");
    // Now without a chance to clean up.
    let pid = common::kill_pidfile(&net.home("alice").join("daemon.pid")).expect("pid file");
    // SIGKILL is not instant: until the process is gone its socket still
    // accepts, and `daemon start` would find a daemon running.
    assert!(
        net.wait(10, || !driver_mio::fsutil::pid_alive(pid)),
        "pid {pid} survived SIGKILL"
    );
    let third = net.ctl("alice", &["daemon", "start", "--json"]).data();
    assert_eq!(third["address"], a["address"]);
    let trusted = net.client("alice").request(Request::Trusted, T).unwrap();
    assert_eq!(trusted.as_array().map(|a| a.len()), Some(1));
}

#[test]
fn rendezvous_restart_keeps_registrations_and_daemons_recover() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    let home = net.rv_home.to_str().unwrap().to_string();
    pilotctl(&["rendezvous", "stop", "--home", &home, "--json"], &[]).data();
    let again = common::rendezvous_start(&net.rv_addr, &net.rv_home, &["--json"]).data();
    assert_eq!(again["public_key"].as_str(), Some(net.rv_key.as_str()));
    // Bob registers with the restarted rendezvous and can find alice.
    let b = net.start("bob", &[]);
    assert_ne!(
        a["address"], b["address"],
        "alice's address was not handed out again"
    );
    let mut alice = net.client("alice");
    assert!(
        net.wait(40, || {
            alice
                .request(
                    Request::Handshake {
                        // bob is private: by address.
                        peer: b["address"].as_str().unwrap().into(),
                        reason: "after restart".into(),
                    },
                    T,
                )
                .is_ok()
        }),
        "alice's daemon reconnected to the rendezvous by itself"
    );
}

#[test]
fn malformed_and_oversized_frames_and_a_stuck_client_leave_the_daemon_healthy() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let sock = net.home("alice").join("pilot.sock");
    // Garbage: an unknown kind.
    let mut raw = UnixStream::connect(&sock).unwrap();
    raw.write_all(&[0, 0, 0, 5, 99, 0, 0, 0, 1]).unwrap();
    let mut buf = [0u8; 256];
    raw.set_read_timeout(Some(T)).unwrap();
    let _ = raw.read(&mut buf);
    // An oversized length prefix.
    let mut big = UnixStream::connect(&sock).unwrap();
    big.write_all(&[0xff, 0xff, 0xff, 0xff, 1]).unwrap();
    // Bad JSON in a request.
    let mut bad = UnixStream::connect(&sock).unwrap();
    let body = b"{not json";
    let mut frame = ((5 + body.len()) as u32).to_be_bytes().to_vec();
    frame.push(1);
    frame.extend_from_slice(&7u32.to_be_bytes());
    frame.extend_from_slice(body);
    bad.write_all(&frame).unwrap();
    // A client that asks for things and never reads the answers.
    let mut stuck = UnixStream::connect(&sock).unwrap();
    let info = br#"{"op":"info"}"#;
    for i in 1..2000u32 {
        let mut f = ((5 + info.len()) as u32).to_be_bytes().to_vec();
        f.push(1);
        f.extend_from_slice(&i.to_be_bytes());
        f.extend_from_slice(info);
        if stuck.write_all(&f).is_err() {
            break;
        }
    }
    // Everyone else is served.
    let mut good = net.client("alice");
    let v = good.request(Request::Info, T).unwrap();
    assert!(v["address"].is_string());
    let run = net.ctl("alice", &["info", "--json"]);
    assert!(run.data()["address"].is_string());
}

#[test]
fn clear_errors_for_double_start_stop_without_daemon_and_missing_socket_dir() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let twice = net.daemon_start("alice", &[]);
    assert_eq!(twice.error_code(), "already_exists");
    let nobody = net.ctl("carol", &["daemon", "stop", "--json"]);
    assert_eq!(nobody.error_code(), "not_running");
    let nobody = net.ctl("carol", &["info", "--json"]);
    assert_eq!(nobody.error_code(), "not_running");
    // Nothing saved for carol: the hint spells the flags out, and asking
    // created no home.
    assert!(nobody.json()["hint"]
        .as_str()
        .unwrap()
        .contains("--rendezvous HOST:PORT"));
    assert!(!net.home("carol").exists());
    let missing = net.dir.path().join("no/such/dir/pilot.sock");
    let run = net.daemon_start("dave", &["--socket", missing.to_str().unwrap()]);
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(run.json()["message"]
        .as_str()
        .unwrap()
        .contains("no/such/dir"));
    // Plain text errors go to stderr with a hint.
    let plain = net.ctl("carol", &["info"]);
    assert_ne!(plain.code, 0);
    assert!(plain.stderr.contains("error:") && plain.stderr.contains("hint:"));
}

#[test]
fn a_bad_log_level_and_an_overlong_reason_are_refused_not_mangled() {
    let mut net = Net::new();
    net.start("alice", &[]);
    // Before: the daemon started, logging nothing ("verbose" read as a target).
    let run = net.daemon_start("bob", &["--log-level", "verbose"]);
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(!net.home("bob").join("daemon.pid").exists());
    // Before: accepted and cut to 255 bytes.
    let reason = "x".repeat(256);
    let run = net.ctl(
        "alice",
        &["handshake", "0:0000.0000.0099", &reason, "--json"],
    );
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(run.json()["message"]
        .as_str()
        .unwrap()
        .contains("256 bytes"));
}

#[test]
fn every_start_flag_is_kept_and_a_one_off_rendezvous_in_the_environment_is_not() {
    let mut net = Net::new();
    net.start(
        "alice",
        &["--no-services", "--auto-approve", "--log-format", "json"],
    );
    net.stop("alice");
    net.restart("alice");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.home("alice").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["auto_approve"], true);
    assert_eq!(saved["no_services"], true);
    assert_eq!(saved["log_format"], "json");
    // And the daemon started without flags runs by them, not just saves
    // them: services off, auto-approve on.
    let status = net.ctl("alice", &["status", "--json"]).data();
    assert_eq!(status["agent"]["services"]["echo"], false, "{status}");
    assert_eq!(status["agent"]["auto_approve"], true, "{status}");
    // --services undoes a saved --no-services.
    net.stop("alice");
    // (Restarted through the `Net`, which then stops it: a bare `daemon
    // start` here left this daemon running after the tests.)
    net.restart_with("alice", &["--services"]);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.home("alice").join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["no_services"], false);
    assert_eq!(saved["auto_approve"], true);

    // bob starts with the rendezvous only in the environment: it is used,
    // not saved.
    let bob = net.home("bob");
    net.track("bob");
    let run = pilotctl(
        &["daemon", "start", "--listen", "127.0.0.1:0", "--json"],
        &[
            ("PILOT_HOME", bob.to_str().unwrap()),
            ("PILOT_RENDEZVOUS", &net.rv_addr.clone()),
            ("PILOT_RENDEZVOUS_KEY", &net.rv_key.clone()),
        ],
    );
    assert!(run.data()["address"].is_string());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bob.join("config.json")).unwrap()).unwrap();
    let _ = pilotctl(
        &["daemon", "stop", "--json"],
        &[("PILOT_HOME", bob.to_str().unwrap())],
    );
    assert!(saved["rendezvous"].is_null(), "{saved}");
    assert!(saved["rendezvous_key"].is_null(), "{saved}");
}

#[test]
fn a_built_in_service_port_is_refused_alike_for_datagrams_and_streams() {
    let mut net = Net::new();
    net.start("alice", &[]);
    // Before: the datagram bind silently took port 7 from echo.
    let dgram = net.ctl("alice", &["listen", "7", "--timeout", "1", "--json"]);
    let stream = net.ctl("alice", &["recv", "7", "--timeout", "1", "--json"]);
    assert_eq!(dgram.error_code(), "already_exists");
    assert_eq!(stream.error_code(), "already_exists");
    assert_eq!(dgram.json()["message"], stream.json()["message"]);
    // --force takes it for datagrams (waiting, then timing out: no sender).
    let forced = net.ctl(
        "alice",
        &["listen", "7", "--timeout", "1", "--force", "--json"],
    );
    assert_eq!(forced.error_code(), "timeout");
}

/// Issue 10, item 14: a port in use is `already_exists` (exit 5), as the
/// README's table says, for the rendezvous (was `io_error`, exit 1) and
/// the daemon (was `internal`).
#[test]
fn a_busy_port_is_already_exists_for_the_rendezvous_and_the_daemon() {
    let mut net = Net::new();
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let rv_home = net.dir.path().join("rv2");
    let rv = common::rendezvous_start(&busy, &rv_home, &["--json"]);
    assert_eq!(rv.error_code(), "already_exists", "{}", rv.stdout);
    assert_eq!(rv.code, 5);
    let daemon = net.daemon_start("alice", &["--listen", &busy]);
    assert_eq!(daemon.error_code(), "already_exists", "{}", daemon.stdout);
    assert_eq!(daemon.code, 5);
}

/// Issue 10, item 15: a daemon started with PILOT_SOCKET elsewhere is
/// found by its home alone (`daemon status` said not running), and a
/// start that fails (a busy port) leaves no `daemon.pid` naming a dead
/// process.
#[test]
fn a_socket_elsewhere_is_found_by_the_home_and_a_failed_start_leaves_no_pid_file() {
    let mut net = Net::new();
    let socket = net.dir.path().join("elsewhere.sock");
    let home = net.home("alice");
    net.track("alice");
    let started = pilotctl(
        &[
            "daemon",
            "start",
            "--rendezvous",
            &net.rv_addr.clone(),
            "--rendezvous-key",
            &net.rv_key.clone(),
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
        &[
            ("PILOT_HOME", home.to_str().unwrap()),
            ("PILOT_SOCKET", socket.to_str().unwrap()),
        ],
    );
    assert_eq!(
        started.data()["socket"].as_str(),
        Some(socket.to_str().unwrap())
    );
    let status = net.ctl("alice", &["daemon", "status", "--json"]).data();
    assert_eq!(status["running"], true);
    assert_eq!(status["socket"].as_str(), Some(socket.to_str().unwrap()));
    net.ctl("alice", &["info", "--json"]).data();
    net.ctl("alice", &["daemon", "stop", "--json"]).data();
    assert_eq!(
        net.ctl("alice", &["daemon", "status", "--json"])
            .error_code(),
        "not_running"
    );
    assert!(!home.join("daemon.socket").exists());

    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let failed = net.daemon_start("bob", &["--listen", &busy]);
    assert_eq!(failed.error_code(), "already_exists");
    assert!(!net.home("bob").join("daemon.pid").exists());
}

/// Issue 10, item 15: no ANSI colour codes in log files; the background
/// daemon's and rendezvous's stderr is a file, not a terminal.
#[test]
fn log_files_have_no_colour_codes() {
    let mut net = Net::new();
    net.start("alice", &[]);
    net.stop("alice");
    let files = [
        net.home("alice").join("daemon.out"),
        net.home("alice").join("pilot.log"),
        net.rv_home.join("rendezvous.out"),
    ];
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert!(!text.is_empty(), "{} is empty", f.display());
        assert!(!text.contains('\u{1b}'), "{}: {text:?}", f.display());
    }
}

/// Issue 10, the README: `rendezvous start` on 0.0.0.0 told agents to join
/// with `--rendezvous 0.0.0.0:PORT`, which no other host can use; it now
/// says HOST and what HOST is. A specific address is shown as it is.
#[test]
fn rendezvous_start_on_every_address_does_not_tell_agents_to_use_0_0_0_0() {
    let net = Net::new();
    let run_and_stop = |listen: &str, name: &str| {
        let home = net.dir.path().join(name);
        let run = common::rendezvous_start(listen, &home, &[]);
        let _ = pilotctl(
            &["rendezvous", "stop", "--home", home.to_str().unwrap()],
            &[],
        );
        run
    };
    let run = run_and_stop("0.0.0.0:0", "rv-any");
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        !run.stdout.contains("--rendezvous 0.0.0.0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("--rendezvous HOST:"), "{}", run.stdout);
    assert!(run.stdout.contains("public one"), "{}", run.stdout);
    let run = run_and_stop("127.0.0.1:0", "rv-lo");
    assert!(
        run.stdout.contains("--rendezvous 127.0.0.1:"),
        "{}",
        run.stdout
    );
}

/// Issue 10 item 6: a writer SIGKILLed between creating and renaming its
/// temporary file left `.NAME.tmp.PID.N` for ever (13 after 100 kills
/// during state churn). The next start removes those whose writer is
/// dead. Kills while messages arrive (figures printed with
/// `--nocapture`), and leftovers of a dead pid planted in the home and the
/// inbox, so the check never passes for want of a lucky crash.
#[test]
fn a_start_removes_temporary_files_that_killed_writers_left() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let home = net.home("alice");
    let temps = |home: &std::path::Path| -> Vec<std::path::PathBuf> {
        ["", "inbox", "received"]
            .iter()
            .filter_map(|d| std::fs::read_dir(home.join(d)).ok())
            .flat_map(|e| e.flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.') && n.contains(".tmp."))
            })
            .collect()
    };
    let kills = 10;
    let mut left = 0;
    for i in 0..kills {
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let _ = net.ctl(
                        "bob",
                        &[
                            "send-message",
                            "alice",
                            "--data",
                            "churn",
                            "--timeout",
                            "1",
                            "--json",
                        ],
                    );
                }
            });
            std::thread::sleep(Duration::from_millis(100 + 37 * i));
            let pid = common::kill_pidfile(&home.join("daemon.pid")).expect("pid file");
            assert!(
                net.wait(10, || !driver_mio::fsutil::pid_alive(pid)),
                "pid {pid} survived SIGKILL"
            );
            stop.store(true, Ordering::Relaxed);
        });
        left = temps(&home).len();
        if i + 1 < kills {
            net.restart("alice");
        }
    }
    // A pid that is surely gone: a child we waited for.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::create_dir_all(home.join("inbox")).unwrap();
    for planted in [
        home.join(format!(".trust.state.tmp.{dead}.0")),
        home.join(format!(".config.json.tmp.{dead}.3")),
        home.join("inbox").join(format!(".1-0-1.json.tmp.{dead}.1")),
    ] {
        std::fs::write(planted, b"half written").unwrap();
    }
    let before = temps(&home).len();
    net.restart("alice");
    let after = temps(&home);
    println!(
        "{kills} SIGKILLs while messages arrived left {left} temporary files; \
         with 3 planted, {before} before the next start, {} after",
        after.len()
    );
    assert!(after.is_empty(), "left after the start: {after:?}");
}

/// A hostname another identity holds: `daemon start` answers with the
/// rendezvous's refusal as soon as it comes, not `timeout` after its whole
/// `--wait`, and `daemon status` says why the daemon is not registered.
/// Renaming the running daemon then registers it.
#[test]
fn a_taken_hostname_fails_daemon_start_with_the_refusal_not_a_timeout() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let args = [
        "--hostname",
        "alice",
        "--listen",
        "127.0.0.1:0",
        "--wait",
        "60",
    ];
    let run = net.daemon_start("imposter", &args);
    assert_eq!(run.error_code(), "already_exists", "{}", run.stdout);
    let e = run.json();
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("belongs to another identity") && message.contains("still running"),
        "{message}"
    );
    assert!(e["hint"].as_str().unwrap().contains("set-hostname"), "{e}");

    let status = net.ctl("imposter", &["daemon", "status"]);
    assert!(
        status.stdout.contains("no, refused by the rendezvous"),
        "{}",
        status.stdout
    );
    let info = net.ctl("imposter", &["info", "--json"]).data();
    assert_eq!(info["registration_refused"]["code"], "already_exists");
    assert_eq!(info["registration_refused"]["hostname"], "alice");

    net.ctl("imposter", &["set-hostname", "imposter", "--json"])
        .data();
    assert!(
        net.wait(20, || {
            let info = net.ctl("imposter", &["info", "--json"]).data();
            info["registered"] == true && info["registration_refused"].is_null()
        }),
        "not registered under its new name"
    );
}
