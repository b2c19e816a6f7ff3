//! What the daemon's and the rendezvous's logs say about registration,
//! trust, sessions, messages and a failed registration: each event once,
//! with the peer's address and hostname, and never a secret.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{clean_env, Net, PILOTCTL};

/// Every log file of the rendezvous's home, joined (`pilot.log` under
/// `pilotctl rendezvous start`, `rendezvous.DATE.log` standalone).
fn rendezvous_log(home: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(home).expect("rendezvous home").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

fn daemon_log(home: &Path) -> String {
    std::fs::read_to_string(home.join("pilot.log")).unwrap_or_default()
}

/// The address in `daemon start`'s answer.
fn address(started: serde_json::Value) -> String {
    started["address"].as_str().expect("registered").to_string()
}

/// The lines of `log` holding every one of `parts`.
fn lines_with<'a>(log: &'a str, parts: &[&str]) -> Vec<&'a str> {
    log.lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect()
}

/// Waits until `log()` has exactly one line with every one of `parts`
/// (and says what it has if not).
fn once(net: &Net, what: &str, mut log: impl FnMut() -> String, parts: &[&str]) {
    let found = net.wait(10, || !lines_with(&log(), parts).is_empty());
    let text = log();
    assert!(found, "{what}: no line with {parts:?} in:\n{text}");
    let n = lines_with(&text, parts).len();
    assert_eq!(n, 1, "{what}: {n} lines with {parts:?} in:\n{text}");
}

#[test]
fn registration_trust_messages_and_a_wrong_key_are_logged_once() {
    let mut net = Net::new();
    let debug = ["--log-level", "debug"];
    let alice = address(net.start("alice", &debug));
    let bob = address(net.start("bob", &debug));
    let carol = address(net.start("carol", &debug));
    let rv_home = net.rv_home.clone();
    let rv_log = || rendezvous_log(&rv_home);

    // Registration: the address assigned, the hostname, the rendezvous.
    let (alice_home, bob_home, carol_home) =
        (net.home("alice"), net.home("bob"), net.home("carol"));
    let alice_log = || daemon_log(&alice_home);
    let bob_log = || daemon_log(&bob_home);
    let carol_log = || daemon_log(&carol_home);
    let registered = format!("address={alice}");
    once(
        &net,
        "alice registered",
        alice_log,
        &[" INFO ", "registered", &registered, "hostname=alice"],
    );
    once(
        &net,
        "rendezvous: alice registered",
        rv_log,
        &[" INFO ", "registered", &registered, "hostname=alice"],
    );

    // Trust: alice asks bob, bob approves.
    net.ctl("alice", &["handshake", &bob, "work together?", "--json"])
        .data();
    let from_alice = format!("peer={alice}");
    once(
        &net,
        "bob got alice's request",
        bob_log,
        &[
            " INFO ",
            "trust request received",
            &from_alice,
            "hostname=alice",
        ],
    );
    once(
        &net,
        "rendezvous relayed it",
        rv_log,
        &[
            "trust request relayed",
            &format!("from={alice}"),
            "from_hostname=alice",
            &format!("to={bob}"),
            "to_hostname=bob",
        ],
    );
    once(
        &net,
        "alice sent it",
        alice_log,
        &[" INFO ", "trust request sent", &format!("peer={bob}")],
    );
    // A name the rendezvous does not know: pilotctl says not_found, and
    // the log must not claim the request went out.
    let run = net.ctl("alice", &["handshake", "nobody-here", "--json"]);
    assert_eq!(run.error_code(), "not_found", "{}", run.stdout);
    once(
        &net,
        "alice's request to nobody",
        alice_log,
        &["trust request not sent", "peer=nobody-here"],
    );
    let text = alice_log();
    let sent = lines_with(&text, &["trust request sent", "peer=nobody-here"]);
    assert!(sent.is_empty(), "{sent:?}");
    net.ctl("bob", &["approve", "alice", "--json"]).data();
    once(
        &net,
        "bob trusts alice",
        bob_log,
        &[" INFO ", "peer trusted", &from_alice, "hostname=alice"],
    );
    once(
        &net,
        "alice trusts bob",
        alice_log,
        &[
            " INFO ",
            "peer trusted",
            &format!("peer={bob}"),
            "hostname=bob",
        ],
    );
    once(
        &net,
        "rendezvous recorded the pair",
        rv_log,
        &[
            "pair recorded",
            "requester_hostname=alice",
            "approver_hostname=bob",
        ],
    );

    // A message: a session comes up, bob logs what arrived, never what
    // it says.
    let secret_text = "the launch code is 0000";
    net.ctl(
        "alice",
        &["send-message", "bob", "--data", secret_text, "--json"],
    )
    .data();
    once(
        &net,
        "bob received a message",
        bob_log,
        &[
            " INFO ",
            "received",
            &format!("from={alice}"),
            "hostname=alice",
        ],
    );
    once(
        &net,
        "alice's session with bob",
        alice_log,
        &[
            " INFO ",
            "session up",
            &format!("peer={bob}"),
            "hostname=bob",
        ],
    );

    // A rejection, on both sides, with its reason.
    net.ctl("carol", &["handshake", &bob, "let me in", "--json"])
        .data();
    assert!(net.wait(10, || net
        .ctl("bob", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    net.ctl("bob", &["reject", &carol, "not now", "--json"])
        .data();
    once(
        &net,
        "bob rejected carol",
        bob_log,
        &[
            " INFO ",
            "trust request rejected",
            &format!("peer={carol}"),
            "hostname=carol",
            "not now",
        ],
    );
    once(
        &net,
        "carol was rejected",
        carol_log,
        &[
            " INFO ",
            "rejected by the peer",
            &format!("peer={bob}"),
            "not now",
        ],
    );
    once(
        &net,
        "rendezvous saw the rejection",
        rv_log,
        &[
            "trust request rejected",
            "requester_hostname=carol",
            "rejecter_hostname=bob",
        ],
    );

    // A wrong rendezvous key (alice's, a valid key that is not the
    // rendezvous's): the agent warns that registration fails, the
    // rendezvous that a handshake was not for its key.
    let alice_key = net.ctl("alice", &["info", "--json"]).data()["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let home = net.home("mallory");
    let rv_addr = net.rv_addr.clone();
    net.track("mallory");
    let started = net.ctl(
        "mallory",
        &[
            "daemon",
            "start",
            "--rendezvous",
            &rv_addr,
            "--rendezvous-key",
            &alice_key,
            "--hostname",
            "mallory",
            "--listen",
            "127.0.0.1:0",
            "--wait",
            "1",
            "--json",
        ],
    );
    assert_eq!(started.error_code(), "timeout");
    once(
        &net,
        "mallory's failed registration",
        || daemon_log(&home),
        &[
            " WARN ",
            "registration failing",
            &format!("rendezvous={rv_addr}"),
            "rendezvous-key",
        ],
    );
    once(
        &net,
        "rendezvous: a handshake for another key",
        rv_log,
        &[
            " WARN ",
            "not made for this rendezvous's key",
            "from=127.0.0.1:",
        ],
    );

    // Never a secret: no identity seed, no message content.
    for (name, log) in [
        ("alice", alice_log()),
        ("bob", bob_log()),
        ("carol", carol_log()),
    ] {
        let seed = std::fs::read_to_string(net.home(name).join("identity.key")).unwrap();
        assert!(!log.contains(seed.trim()), "{name}'s log holds its key");
        assert!(!log.contains(secret_text), "{name}'s log holds a message");
    }
    assert!(!rv_log().contains(secret_text));
    let rv_seed = std::fs::read_to_string(rv_home.join("rendezvous.key")).unwrap();
    assert!(!rv_log().contains(rv_seed.trim()));
}

#[test]
fn foreground_daemon_prints_its_address_once_registered() {
    let mut net = Net::new();
    let home = net.home("dave");
    net.track("dave");
    let mut cmd = Command::new(PILOTCTL);
    clean_env(&mut cmd);
    let mut child = cmd
        .args([
            "daemon",
            "start",
            "--foreground",
            "--rendezvous",
            &net.rv_addr,
            "--rendezvous-key",
            &net.rv_key,
            "--hostname",
            "dave",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("PILOT_HOME", &home)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("pilotctl");
    // Read on a thread: a daemon that never printed must fail the test,
    // not hang it.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let first = rx.recv_timeout(std::time::Duration::from_secs(20));
    let info = net.ctl("dave", &["info", "--json"]).data();
    net.stop("dave");
    let _ = child.wait();
    let first = first.expect("the daemon printed nothing in 20 s");
    let address = info["address"].as_str().unwrap();
    assert_eq!(
        first.trim(),
        format!("Registered: address {address} (dave)")
    );
}

/// Starts agent `name` on `listen` against the rendezvous at `rendezvous`
/// where registration is bound to fail, and waits until the agent warns
/// that it keeps failing: by then it has retried, so a line promised once
/// had its chance to repeat.
fn start_failing(net: &mut Net, name: &str, rendezvous: &str, listen: &str) {
    let args = ["--hostname", name, "--listen", listen, "--wait", "1"];
    let started = net.daemon_start_at(name, rendezvous, &args);
    assert_eq!(started.error_code(), "timeout");
    let home = net.home(name);
    once(
        net,
        &format!("{name}'s failing registration"),
        || daemon_log(&home),
        &[" WARN ", "registration failing"],
    );
}

#[test]
fn a_socket_that_cannot_reach_the_rendezvous_family_is_warned_once() {
    let mut net = Net::new();
    let port = net.rv_addr.rsplit_once(':').unwrap().1.to_string();
    let (v4_rv, v6_rv) = (net.rv_addr.clone(), format!("[::1]:{port}"));
    // An IPv4 socket and an IPv6 rendezvous; an IPv6 socket that is not
    // dual-stack (on ::1) and an IPv4 rendezvous.
    for (name, rendezvous, listen, theirs) in [
        ("four", &v6_rv, "127.0.0.1:", "IPv6"),
        ("six", &v4_rv, "[::1]:", "IPv4"),
    ] {
        start_failing(&mut net, name, rendezvous, &format!("{listen}0"));
        let home = net.home(name);
        once(
            &net,
            &format!("{name}: the rendezvous's family"),
            || daemon_log(&home),
            &[
                " WARN ",
                "registration cannot work",
                &format!("the rendezvous is an {theirs} address"),
                &format!("listen={listen}"),
                &format!("rendezvous={rendezvous}"),
            ],
        );
    }
}

#[test]
fn a_hostname_taken_by_another_key_is_refused_and_logged_once() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let rv_addr = net.rv_addr.clone();
    let args = [
        "--hostname",
        "alice",
        "--listen",
        "127.0.0.1:0",
        "--wait",
        "30",
    ];
    assert_eq!(
        net.daemon_start("imposter", &args).error_code(),
        "already_exists"
    );
    let home = net.home("imposter");
    once(
        &net,
        "the imposter was refused",
        || daemon_log(&home),
        &[
            " WARN ",
            "registration refused by the rendezvous",
            &format!("rendezvous={rv_addr}"),
            "hostname=alice",
            "code=hostname taken",
            "detail=hostname `alice` belongs to another identity",
        ],
    );
    // The imposter asks again by itself every half minute or more, and at
    // once when its registration changes: it is refused again (its
    // settings are saved for the change, then for the rollback the
    // refusal brings; a refusal that changes nothing saves nothing), and
    // the refusal is still logged once.
    let saved = |public: bool| {
        let log = daemon_log(&home);
        lines_with(
            &log,
            &["registration settings saved", &format!("public={public}")],
        )
        .len()
    };
    assert_eq!((saved(true), saved(false)), (0, 0), "{}", daemon_log(&home));
    net.ctl("imposter", &["set-public", "--json"]).data();
    assert!(
        net.wait(10, || saved(false) == 1),
        "no second refusal:\n{}",
        daemon_log(&home)
    );
    assert_eq!(saved(true), 1, "{}", daemon_log(&home));
    let refused = ["registration refused by the rendezvous"];
    let n = lines_with(&daemon_log(&home), &refused).len();
    assert_eq!(n, 1, "{n} refusals logged:\n{}", daemon_log(&home));
    // The rendezvous registered the name's owner, never the imposter.
    let rv_home = net.rv_home.clone();
    once(
        &net,
        "rendezvous: alice registered",
        || rendezvous_log(&rv_home),
        &[" INFO ", "registered", "hostname=alice"],
    );
}

/// A peer whose daemon stops says goodbye, and the session ends with that
/// reason. (A peer that vanishes without a word ends as `expired` once
/// the session passes its 180 s lifetime, which no setting shortens: too
/// long for this test.)
#[test]
fn a_peer_that_stops_ends_the_session_once() {
    let mut net = Net::new();
    let bob = address(net.start("bob", &[]));
    net.start("alice", &[]);
    net.trust("alice", "bob");
    net.ctl("alice", &["send-message", "bob", "--data", "hi", "--json"])
        .data();
    let alice_home = net.home("alice");
    let alice_log = || daemon_log(&alice_home);
    let peer = format!("peer={bob}");
    once(
        &net,
        "alice's session with bob",
        alice_log,
        &[" INFO ", "session up", &peer],
    );
    net.stop("bob");
    once(
        &net,
        "bob left",
        alice_log,
        &[
            " INFO ",
            "session down",
            &peer,
            "hostname=bob",
            "reason=peer left",
        ],
    );
}
