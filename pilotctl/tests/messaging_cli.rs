//! The messaging commands as a user types them, against real daemons on
//! loopback: text and `--json`, exit codes, and their errors.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Net, Run, PILOTCTL};
use serde_json::Value;

/// pilotctl as agent `name`, not yet started.
fn command(net: &Net, name: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(PILOTCTL);
    common::clean_env(&mut cmd)
        .args(args)
        .env("PILOT_HOME", net.home(name));
    cmd
}

/// A pilotctl running in the background (recv, listen, subscribe).
struct Bg {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: std::thread::JoinHandle<String>,
    seen: Vec<String>,
}

fn spawn(net: &Net, name: &str, args: &[&str]) -> Bg {
    let mut child = command(net, name, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pilotctl");
    let (tx, stderr) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    Bg {
        child,
        stderr,
        stdout,
        seen: Vec::new(),
    }
}

impl Bg {
    /// Waits until it says (on stderr) that it is ready.
    fn ready(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match self.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.child.kill();
        panic!("never ready ({needle}); stderr: {:?}", self.seen);
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits for it to end (each has its own --timeout).
    fn finish(mut self) -> Run {
        let status = self.child.wait().expect("wait");
        let stdout = self.stdout.join().unwrap();
        let mut stderr = self.seen.join("\n");
        for line in self.stderr.try_iter() {
            stderr.push('\n');
            stderr.push_str(&line);
        }
        Run {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

/// The JSON objects of a streaming command's output, one per line.
fn lines(run: &Run) -> Vec<Value> {
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Deterministic bytes of every value.
fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Runs `connect` with `input` on stdin.
fn connect_piped(net: &Net, name: &str, args: &[&str], input: Vec<u8>) -> (Vec<u8>, Run) {
    let mut child = command(net, name, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&input).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::new(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (out.stdout, run)
}

#[test]
fn errors_before_any_daemon() {
    let net_dir = tempfile::tempdir().unwrap();
    let home = net_dir.path().join("nobody");
    let ctl = |args: &[&str]| common::pilotctl(args, &[("PILOT_HOME", home.to_str().unwrap())]);
    let file = net_dir.path().join("small.txt");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();

    for args in [
        &["connect", "bob", "7", "--message", "hi"][..],
        &["connect", "bob"],
        &["send", "bob", "5000", "--data", "x"],
        &["send", "bob", "5000", "--data", "x", "--datagram"],
        &["recv", "5000"],
        &["listen", "5000"],
        &["send-message", "bob", "--data", "x"],
        &["send-file", "bob", file],
        &["subscribe", "bob", "a.*"],
        &["publish", "bob", "a.b", "--data", "x"],
    ] {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let run = ctl(&with_json);
        assert_eq!(run.error_code(), "not_running", "{args:?}");
        assert_eq!(run.code, 3);
        let text = ctl(args);
        assert_eq!(text.code, 3);
        assert!(text.stderr.contains("not running"), "{}", text.stderr);
    }

    // Arguments are checked before the daemon is asked.
    for (args, code) in [
        (
            &["send-message", "bob", "--data", "x", "--type", "xml"][..],
            "invalid_argument",
        ),
        (
            &["send-message", "bob", "--data", "{\"a\":", "--type", "json"],
            "invalid_argument",
        ),
        (
            &["send-message", "bob", "--data", "!!", "--type", "binary"],
            "invalid_argument",
        ),
        (&["send-file", "bob", "/no/such/file"], "not_found"),
        (&["send-file", "bob", "/tmp"], "invalid_argument"),
        (&["subscribe", "bob", "a..b"], "invalid_argument"),
        (
            &["publish", "bob", "a.*", "--data", "x"],
            "invalid_argument",
        ),
        (&["recv", "5000", "--count", "0"], "invalid_argument"),
        (&["listen", "5000", "--count", "0"], "invalid_argument"),
    ] {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        assert_eq!(ctl(&with_json).error_code(), code, "{args:?}");
    }
    let bad_type = ctl(&["send-message", "bob", "--data", "x", "--type", "xml"]);
    assert_eq!(bad_type.code, 2);
    assert!(bad_type.stderr.contains("xml") && bad_type.stderr.contains("text, json or binary"));

    // Over the data exchange limit: refused before reading or sending.
    let big = net_dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    let run = ctl(&["send-file", "bob", big.to_str().unwrap(), "--json"]);
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(run.json()["message"].as_str().unwrap().contains("16777216"));

    // inbox and received read the home directly.
    let empty = ctl(&["inbox", "--json"]).data();
    assert_eq!(empty["messages"].as_array().unwrap().len(), 0);
    assert_eq!(ctl(&["inbox"]).stdout.trim(), "The inbox is empty");
    assert_eq!(
        ctl(&["received", "--json"]).data()["files"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    std::fs::create_dir_all(home.join("inbox")).unwrap();
    std::fs::write(home.join("inbox/1-x-1.json"), "{not json").unwrap();
    let corrupt = ctl(&["inbox", "--json"]).data();
    assert_eq!(corrupt["corrupt"].as_array().unwrap().len(), 1);
    let text = ctl(&["inbox"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("unreadable") && text.stdout.contains("1-x-1.json"));
    assert_eq!(ctl(&["inbox", "--clear", "--json"]).data()["cleared"], 1);
}

#[test]
fn messaging_between_agents() {
    let mut net = Net::new();
    let alice = net.start("alice", &[]);
    let bob = net.start("bob", &[]);
    let carol = net.start("carol", &[]);
    let alice_addr = alice["address"].as_str().unwrap().to_string();
    let bob_addr = bob["address"].as_str().unwrap().to_string();
    let carol_addr = carol["address"].as_str().unwrap().to_string();
    net.trust("alice", "bob");
    net.trust("carol", "alice");

    // --- connect --------------------------------------------------------------
    let echo = net.ctl("alice", &["connect", "bob", "7", "--message", "hello echo"]);
    assert_eq!(echo.code, 0, "{}", echo.stderr);
    assert_eq!(echo.stdout, "hello echo");
    let echo = net
        .ctl(
            "alice",
            &["connect", &bob_addr, "7", "--message", "hi", "--json"],
        )
        .data();
    assert_eq!(echo["reply"]["data"], "hi");
    assert_eq!(echo["sent"], 2);
    assert_eq!(echo["closed"], true);

    let payload = noise(300 * 1024, 0x9e37_79b9_7f4a_7c15);
    let (out, run) = connect_piped(&net, "alice", &["connect", "bob", "7"], payload.clone());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(out.len(), payload.len());
    assert!(out == payload, "echoed bytes differ");
    let (out, run) = connect_piped(
        &net,
        "alice",
        &["connect", "bob", "7", "--json"],
        b"piped".to_vec(),
    );
    assert_eq!(out, b"piped", "stdout carries the stream only");
    let summary: Value = serde_json::from_str(run.stderr.trim()).unwrap();
    assert_eq!(summary["data"]["received"], 5);

    // Errors: closed port, unknown hostname, bad address, untrusted peer.
    let closed = net.ctl(
        "alice",
        &["connect", "bob", "4444", "--message", "x", "--json"],
    );
    assert_eq!(closed.error_code(), "connection_failed");
    assert_eq!(closed.code, 7);
    assert_eq!(
        net.ctl(
            "alice",
            &["connect", "nosuch", "7", "--message", "x", "--json"]
        )
        .error_code(),
        "not_found"
    );
    assert_eq!(
        net.ctl(
            "alice",
            &[
                "connect",
                "0:0000.00G0.0001",
                "7",
                "--message",
                "x",
                "--json"
            ]
        )
        .error_code(),
        "invalid_argument"
    );
    let untrusted = net.ctl(
        "bob",
        &["connect", &carol_addr, "7", "--message", "x", "--json"],
    );
    assert_eq!(untrusted.error_code(), "not_trusted");
    assert_eq!(untrusted.code, 6);

    // --- send -> recv -----------------------------------------------------------
    let mut recv = spawn(&net, "bob", &["recv", "5000", "--json", "--timeout", "20"]);
    recv.ready("Receiving");
    let sent = net
        .ctl(
            "alice",
            &["send", "bob", "5000", "--data", "hello recv", "--json"],
        )
        .data();
    assert_eq!(sent["sent"], 10);
    assert_eq!(sent["closed"], true);
    assert_eq!(sent["reply"]["bytes"], 0);
    let got = lines(&recv.finish());
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["from"].as_str(), Some(alice_addr.as_str()));
    assert_eq!(got[0]["hostname"], "alice");
    assert_eq!(got[0]["port"], 5000);
    assert_eq!(got[0]["data"], "hello recv");

    let mut recv = spawn(
        &net,
        "bob",
        &["recv", "5000", "--count", "2", "--timeout", "20"],
    );
    recv.ready("Receiving");
    let text = net.ctl("alice", &["send", "bob", "5000", "--data", "one"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("Sent 3 bytes"), "{}", text.stdout);
    net.ctl("alice", &["send", "bob", "5000", "--data", "two\nlines"]);
    let run = recv.finish();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let shown: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(shown.len(), 2, "{}", run.stdout);
    assert!(shown[0].starts_with(&alice_addr) && shown[0].ends_with(": one"));
    assert!(shown[1].ends_with(": two\\nlines"));

    let quiet = net.ctl("bob", &["recv", "5001", "--timeout", "1", "--json"]);
    assert_eq!(quiet.error_code(), "timeout");
    assert_eq!(quiet.code, 8);
    // Fractions of a second, as every --timeout takes them.
    for args in [
        &["recv", "5001", "--timeout", "0.3"][..],
        &["listen", "5001", "--timeout", "0.3"],
        &["subscribe", "alice", "nothing.*", "--timeout", "0.3"],
    ] {
        let quiet = net.ctl("bob", args);
        assert_eq!(quiet.code, 8, "{args:?}: {}", quiet.stderr);
        assert!(
            quiet.stderr.contains("within 0.3 s"),
            "{args:?}: {}",
            quiet.stderr
        );
    }
    assert_eq!(
        net.ctl("alice", &["send", "bob", "5002", "--data", "x", "--json"])
            .error_code(),
        "connection_failed"
    );

    // --- send --datagram -> listen -----------------------------------------------
    for json in [true, false] {
        let mut args = vec!["listen", "6000", "--count", "1", "--timeout", "20"];
        if json {
            args.push("--json");
        }
        let mut listen = spawn(&net, "bob", &args);
        listen.ready("Listening");
        // Datagrams may be lost: send until one arrived.
        let deadline = Instant::now() + Duration::from_secs(15);
        while !listen.exited() && Instant::now() < deadline {
            let sent = net
                .ctl(
                    "alice",
                    &[
                        "send",
                        "bob",
                        "6000",
                        "--data",
                        "dgram",
                        "--datagram",
                        "--json",
                    ],
                )
                .data();
            assert_eq!(sent["datagram"], true);
            std::thread::sleep(Duration::from_millis(100));
        }
        let run = listen.finish();
        if json {
            let got = lines(&run);
            assert_eq!(got.len(), 1);
            assert_eq!(got[0]["data"], "dgram");
            assert_eq!(got[0]["from"].as_str(), Some(alice_addr.as_str()));
            assert_eq!(got[0]["hostname"], "alice");
            assert_eq!(got[0]["port"], 6000);
        } else {
            assert_eq!(run.code, 0, "{}", run.stderr);
            assert!(
                run.stdout.trim().ends_with("(alice) -> port 6000: dgram"),
                "{}",
                run.stdout
            );
        }
    }
    let quiet = net.ctl("bob", &["listen", "6001", "--timeout", "1", "--json"]);
    assert_eq!(quiet.error_code(), "timeout");
    let text = net.ctl("bob", &["listen", "6001", "--timeout", "1"]);
    assert_eq!(text.code, 8);
    assert!(text.stderr.contains("no datagram"), "{}", text.stderr);

    // --- send-message -> inbox ---------------------------------------------------------
    let m = net
        .ctl(
            "alice",
            &["send-message", "bob", "--data", "hello inbox", "--json"],
        )
        .data();
    // One "status" (the answer's), and `kind` as `inbox` says it.
    assert_eq!(m["acknowledged"], true);
    assert!(m.get("status").is_none(), "{m}");
    assert_eq!(m["kind"], "text");
    assert_eq!(m["bytes"], 11);
    net.ctl(
        "alice",
        &[
            "send-message",
            "bob",
            "--data",
            r#"{"task":"x"}"#,
            "--type",
            "json",
            "--json",
        ],
    )
    .data();
    let text = net.ctl(
        "alice",
        &[
            "send-message",
            &bob_addr,
            "--data",
            "AAEC/w==",
            "--type",
            "binary",
        ],
    );
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(
        text.stdout.contains("binary message of 4 bytes"),
        "{}",
        text.stdout
    );
    assert_eq!(
        net.ctl(
            "bob",
            &["send-message", &carol_addr, "--data", "x", "--json"]
        )
        .error_code(),
        "not_trusted"
    );
    // The ack each send-message waited for leaves bob's daemon only after
    // the message is on disk: the inbox holds all three at once.
    let inbox = net.ctl("bob", &["inbox", "--json"]).data();
    let msgs = inbox["messages"].as_array().unwrap();
    let kinds: Vec<&str> = msgs.iter().map(|m| m["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "json", "binary"]);
    assert_eq!(msgs[0]["data"], "hello inbox");
    assert_eq!(msgs[1]["data"], r#"{"task":"x"}"#);
    assert_eq!(msgs[2]["data"], "AAEC/w==");
    assert!(msgs.iter().all(|m| m["from"] == alice_addr.as_str()));
    // With the sender's hostname, which bob's daemon knows from trust.
    assert!(msgs.iter().all(|m| m["hostname"] == "alice"), "{inbox}");
    let text = net.ctl("bob", &["inbox"]);
    assert!(
        text.stdout.contains("hello inbox")
            && text.stdout.contains(&format!("{alice_addr} (alice)")),
        "{}",
        text.stdout
    );
    let cleared = net.ctl("bob", &["inbox", "--clear"]);
    assert!(
        cleared.stdout.contains("Removed 3 messages"),
        "{}",
        cleared.stdout
    );
    assert_eq!(
        net.ctl("bob", &["inbox", "--json"]).data()["messages"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // --- send-file -> received -------------------------------------------------------
    let path = net.dir.path().join("report.bin");
    let contents = noise(200 * 1024, 42);
    std::fs::write(&path, &contents).unwrap();
    let sent = net
        .ctl(
            "alice",
            &["send-file", "bob", path.to_str().unwrap(), "--json"],
        )
        .data();
    assert_eq!(sent["name"], "report.bin");
    assert_eq!(sent["bytes"], contents.len());
    // Acknowledged means stored: no waiting.
    let files = net.ctl("bob", &["received", "--json"]).data();
    let f = &files["files"][0];
    assert_eq!(f["name"], "report.bin");
    assert_eq!(f["size"], contents.len());
    assert!(std::fs::read(Path::new(f["path"].as_str().unwrap())).unwrap() == contents);
    // Who sent it and when.
    assert_eq!(f["from"], alice_addr.as_str(), "{f}");
    assert_eq!(f["hostname"], "alice", "{f}");
    assert!(f["received_at"].as_u64().is_some(), "{f}");
    let text = net.ctl("bob", &["received"]).stdout;
    assert!(
        text.contains("report.bin") && text.contains(&format!("{alice_addr} (alice)")),
        "{text}"
    );
    assert_eq!(
        net.ctl("bob", &["received", "--clear", "--json"]).data()["cleared"],
        1
    );
    let text = net.ctl("alice", &["send-file", "bob", path.to_str().unwrap()]);
    assert!(
        text.stdout.contains("Delivered report.bin"),
        "{}",
        text.stdout
    );
    assert_eq!(
        net.ctl("alice", &["send-file", "bob", "/no/such/file", "--json"])
            .error_code(),
        "not_found"
    );
    let big = net.dir.path().join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    assert_eq!(
        net.ctl(
            "alice",
            &["send-file", "bob", big.to_str().unwrap(), "--json"]
        )
        .error_code(),
        "invalid_argument"
    );

    // --- subscribe on alice's broker (carol), publish there (bob) ----------------------
    let mut sub = spawn(
        &net,
        "carol",
        &[
            "subscribe",
            "alice",
            "tasks.*",
            "--count",
            "2",
            "--json",
            "--timeout",
            "20",
        ],
    );
    sub.ready("Subscribed");
    let p = net
        .ctl(
            "bob",
            &[
                "publish",
                "alice",
                "tasks.new",
                "--data",
                "build it",
                "--json",
            ],
        )
        .data();
    assert_eq!(p["accepted"], true);
    assert_eq!(p["topic"], "tasks.new");
    assert!(p["subscribers"].is_null(), "a peer's broker does not say");
    let text = net.ctl("bob", &["publish", "alice", "other.topic", "--data", "x"]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("Published 1 bytes on `other.topic`"));
    net.ctl(
        "bob",
        &[
            "publish",
            &alice_addr,
            "tasks.a.done",
            "--data",
            "done",
            "--json",
        ],
    )
    .data();
    let events = lines(&sub.finish());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["topic"], "tasks.new");
    assert_eq!(events[0]["data"], "build it");
    assert_eq!(events[1]["topic"], "tasks.a.done");
    assert_eq!(events[1]["data"], "done");

    let mut sub = spawn(&net, "carol", &["subscribe", "alice", "*", "--count", "2"]);
    sub.ready("Subscribed");
    // alice publishes on her own broker: she learns how many it reached.
    let text = net.ctl("alice", &["publish", "alice", "x", "--data", "text mode"]);
    assert!(text.stdout.contains("(1 subscriber)"), "{}", text.stdout);
    let local = net
        .ctl(
            "alice",
            &["publish", "alice", "x", "--data", "text mode", "--json"],
        )
        .data();
    assert_eq!(local["subscribers"], 1);
    let run = sub.finish();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.trim(), "x: text mode\nx: text mode");

    let quiet = net.ctl(
        "carol",
        &[
            "subscribe",
            "alice",
            "nothing.here",
            "--timeout",
            "1",
            "--json",
        ],
    );
    assert_eq!(quiet.error_code(), "timeout");
    assert_eq!(
        net.ctl(
            "bob",
            &["publish", &carol_addr, "a", "--data", "x", "--json"]
        )
        .error_code(),
        "not_trusted"
    );
    let too_big = "x".repeat(70 * 1024);
    assert_eq!(
        net.ctl(
            "bob",
            &["publish", "alice", "a", "--data", &too_big, "--json"]
        )
        .error_code(),
        "invalid_argument"
    );
}

/// Issue 10, item 15: Ctrl-C under `--json` ends `listen` and `recv`
/// with the usual error object (`interrupted`, exit 130): it printed no
/// object at all, so a program reading the lines could not tell a stop
/// from a crash.
#[test]
fn ctrl_c_under_json_ends_a_stream_with_an_error_object() {
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    for (args, ready) in [
        (
            &["listen", "6001", "--timeout", "0", "--json"][..],
            Some("Listening"),
        ),
        (
            &["recv", "6002", "--timeout", "0", "--json"],
            Some("Receiving"),
        ),
        (
            &["subscribe", "bob", "news", "--timeout", "0", "--json"],
            Some("Subscribed"),
        ),
        // Prints nothing until it ends; a gigabyte takes longer than the
        // moment given here.
        (&["bench", "bob", "1G", "--json"], None),
    ] {
        let mut bg = spawn(&net, "alice", args);
        match ready {
            Some(ready) => bg.ready(ready),
            None => {
                std::thread::sleep(Duration::from_millis(500));
                assert!(!bg.exited(), "{args:?} ended by itself");
            }
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(bg.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let run = bg.finish();
        assert_eq!(run.code, 130, "{args:?}: {}{}", run.stdout, run.stderr);
        let last: Value = serde_json::from_str(run.stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {:?}", run.stdout));
        assert_eq!(last["status"], "error");
        assert_eq!(last["code"], "interrupted");
    }
}

/// The README's `tar c dir | pilotctl connect agent-alpha 1000` needs a
/// receiver that writes a stream's raw bytes to stdout, as `nc -l` does
/// (`recv` prints one escaped line per stream): `recv --raw`.
#[test]
fn recv_raw_writes_a_streams_bytes_unchanged_to_stdout() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("bob", "alice");
    let alice = a["address"].as_str().unwrap().to_string();
    let mut recv = command(&net, "alice", &["recv", "1000", "--raw", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn recv");
    let mut err = BufReader::new(recv.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("Receiving"), "{line}");
    let mut out = recv.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        out.read_to_end(&mut bytes).unwrap();
        bytes
    });
    let sent = noise(300_000, 7);
    let (_, run) = connect_piped(&net, "bob", &["connect", &alice, "1000"], sent.clone());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let status = recv.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    let got = reader.join().unwrap();
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the bytes differ");
    let summary: Value = serde_json::from_str(rest.trim()).expect("summary on stderr");
    assert_eq!(summary["data"]["bytes"], 300_000);
}

/// `--data @FILE` and `--data -` on send, send-message and publish.
#[test]
fn data_from_files_and_stdin() {
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let dir = net.dir.path().to_path_buf();
    let text_file = dir.join("note.txt");
    std::fs::write(&text_file, "a note from a file\nwith two lines").unwrap();
    let at_text = format!("@{}", text_file.display());
    let bin_file = dir.join("blob.bin");
    let blob: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    std::fs::write(&bin_file, &blob).unwrap();
    let at_bin = format!("@{}", bin_file.display());

    // send over a stream to the echo service: the file's bytes come back.
    let sent = net
        .ctl("alice", &["send", "bob", "7", "--data", &at_text, "--json"])
        .data();
    assert_eq!(sent["reply"]["data"], "a note from a file\nwith two lines");
    // From stdin.
    let (out, run) = connect_piped(
        &net,
        "alice",
        &["send", "bob", "7", "--data", "-", "--json"],
        b"piped in".to_vec(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["data"]["reply"]["data"], "piped in", "{v}");
    // @@ is text that starts with @.
    let sent = net
        .ctl("alice", &["send", "bob", "7", "--data", "@@home", "--json"])
        .data();
    assert_eq!(sent["reply"]["data"], "@home");

    // send-message: text from a file, binary bytes as they are, stdin.
    net.ctl(
        "alice",
        &["send-message", "bob", "--data", &at_text, "--json"],
    )
    .data();
    net.ctl(
        "alice",
        &[
            "send-message",
            "bob",
            "--type",
            "binary",
            "--data",
            &at_bin,
            "--json",
        ],
    )
    .data();
    let (_, run) = connect_piped(
        &net,
        "alice",
        &[
            "send-message",
            "bob",
            "--type",
            "json",
            "--data",
            "-",
            "--json",
        ],
        br#"{"from":"stdin"}"#.to_vec(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let inbox = net.ctl("bob", &["inbox", "--json"]).data();
    let messages = inbox["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3, "{inbox}");
    assert_eq!(messages[0]["data"], "a note from a file\nwith two lines");
    use base64::Engine as _;
    assert_eq!(
        messages[1]["data"],
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    assert_eq!(messages[2]["kind"], "json");
    // A file that is not text, as text, is refused with the way out.
    let run = net.ctl(
        "alice",
        &["send-message", "bob", "--data", &at_bin, "--json"],
    );
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(run.json()["hint"]
        .as_str()
        .unwrap()
        .contains("--type binary"));

    // publish from a file, on this agent's own broker.
    let published = net
        .ctl(
            "alice",
            &["publish", "alice", "notes", "--data", &at_text, "--json"],
        )
        .data();
    assert_eq!(published["bytes"], 33);

    // A missing file; files larger than the command sends, with the limit.
    let missing = format!("@{}", dir.join("nope.txt").display());
    let run = net.ctl("alice", &["send", "bob", "7", "--data", &missing, "--json"]);
    assert_eq!(run.error_code(), "not_found");
    assert!(run.json()["message"].as_str().unwrap().contains("no file"));
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![b'x'; 70 * 1024]).unwrap();
    let at_big = format!("@{}", big.display());
    let run = net.ctl(
        "alice",
        &["publish", "alice", "notes", "--data", &at_big, "--json"],
    );
    assert_eq!(run.error_code(), "invalid_argument");
    let message = run.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("65536 bytes (64 KiB)"), "{message}");
    let run = net.ctl(
        "alice",
        &[
            "send",
            "bob",
            "7",
            "--datagram",
            "--data",
            &at_big,
            "--json",
        ],
    );
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(
        run.json()["hint"]
            .as_str()
            .unwrap()
            .contains("without --datagram"),
        "{}",
        run.stdout
    );
}

/// `send-file` of a path that does not exist: the hint is about the
/// path, not about peers (it was the generic "check the name or
/// address" of an unknown node).
#[test]
fn a_missing_file_to_send_gets_a_hint_about_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let missing = dir.path().join("report.pdf");
    let run = common::pilotctl(
        &["send-file", "bob", missing.to_str().unwrap(), "--json"],
        &[("PILOT_HOME", home.to_str().unwrap())],
    );
    assert_eq!(run.error_code(), "not_found", "{}", run.stdout);
    let v = run.json();
    assert!(v["message"].as_str().unwrap().contains("no file"), "{v}");
    let hint = v["hint"].as_str().unwrap();
    assert!(hint.contains("path"), "{hint}");
    assert!(!hint.contains("address"), "{hint}");
}
