//! The trust commands as a user types them, text and `--json`, including
//! their errors.

mod common;

use common::Net;

#[test]
fn handshake_pending_approve_trust_untrust_find() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    let b = net.start("bob", &["--public"]);
    let alice_addr = a["address"].as_str().unwrap().to_string();
    let bob_addr = b["address"].as_str().unwrap().to_string();

    // bob is public: findable by hostname; alice is private.
    let found = net.ctl("alice", &["find", "bob", "--json"]).data();
    assert_eq!(found["address"].as_str(), Some(bob_addr.as_str()));
    assert_eq!(
        net.ctl("bob", &["find", "alice", "--json"]).error_code(),
        "not_found"
    );
    assert_eq!(
        net.ctl("bob", &["find", "0:0000.00G0.0001", "--json"])
            .error_code(),
        "invalid_argument"
    );

    let asked = net
        .ctl(
            "alice",
            &["handshake", "bob", "let's work together", "--json"],
        )
        .data();
    assert_eq!(asked["requested"], true);
    assert!(net.wait(10, || net
        .ctl("bob", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    let pending = net.ctl("bob", &["pending", "--json"]).data();
    assert_eq!(pending[0]["node"].as_str(), Some(alice_addr.as_str()));
    assert_eq!(pending[0]["hostname"], "alice");
    assert_eq!(pending[0]["reason"], "let's work together");
    assert!(pending[0]["fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let text = net.ctl("bob", &["pending"]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("alice") && text.stdout.contains("let's work together"));
    // A header like `peers`, its columns over the row's.
    let mut lines = text.stdout.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("ADDRESS "), "{}", text.stdout);
    let row = lines.next().unwrap();
    assert_eq!(
        header.find("HOSTNAME"),
        row.find("alice"),
        "{}",
        text.stdout
    );
    assert_eq!(header.find("REASON"), row.find("let's"), "{}", text.stdout);

    assert_eq!(
        net.ctl("bob", &["approve", "0:0000.0000.0FFF", "--json"])
            .error_code(),
        "not_found"
    );
    net.ctl("bob", &["approve", &alice_addr, "--json"]).data();
    // Approving again: already trusted, not "no such request".
    assert_eq!(
        net.ctl("bob", &["approve", &alice_addr, "--json"])
            .error_code(),
        "already_exists"
    );
    assert!(net.wait(10, || net
        .ctl("alice", &["trust", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.len() == 1)));
    let trust = net.ctl("alice", &["trust", "--json"]).data();
    assert_eq!(trust[0]["hostname"], "bob");
    let text = net.ctl("alice", &["trust"]).stdout;
    let header = text.lines().next().unwrap();
    assert!(
        header.starts_with("ADDRESS ") && header.ends_with("STATE"),
        "{text}"
    );
    assert_eq!(
        header.find("HOSTNAME"),
        text.lines().nth(1).unwrap().find("bob"),
        "{text}"
    );
    assert_eq!(trust[0]["fingerprint"], found["fingerprint"]);
    assert_eq!(
        net.ctl("alice", &["handshake", "bob", "--json"])
            .error_code(),
        "already_exists"
    );
    // Now bob finds private alice: they trust each other.
    assert_eq!(
        net.ctl("bob", &["find", "alice", "--json"]).data()["address"].as_str(),
        Some(alice_addr.as_str())
    );

    // Diagnostics through bob's echo service. Pings and echoes are
    // datagrams, which a loaded machine may drop: ping again until every
    // echo came back.
    let mut ping = serde_json::Value::Null;
    let all_back = net.wait(30, || {
        ping = net
            .ctl("alice", &["ping", "bob", "--count", "3", "--json"])
            .json();
        ping["data"]["received"] == 3
    });
    assert!(all_back, "{ping}");
    assert!(ping["data"]["rtt_ms"]["median"]
        .as_f64()
        .is_some_and(|m| m > 0.0));
    let mut text = None;
    let echoed = net.wait(30, || {
        let run = net.ctl("alice", &["ping", "bob", "--count", "1"]);
        let ok = run.code == 0 && run.stdout.contains("1 received");
        text = Some(run);
        ok
    });
    let text = text.unwrap();
    assert!(echoed, "{}\n{}", text.stdout, text.stderr);
    assert!(text.stdout.contains("echo from bob"));
    assert_eq!(
        // (--count 0 is until Ctrl-C, as ping(8) does; diag_cli tests it.)
        net.ctl("alice", &["ping", "bob", "--interval", "0", "--json"])
            .error_code(),
        "invalid_argument"
    );

    net.ctl("alice", &["untrust", "bob", "--json"]).data();
    // bob is public: findable, so no longer trusted rather than missing.
    assert_eq!(
        net.ctl("alice", &["ping", "bob", "--count", "1", "--json"])
            .error_code(),
        "not_trusted"
    );
    assert!(net.wait(10, || net
        .ctl("bob", &["trust", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.is_empty())));
    assert_eq!(
        net.ctl("alice", &["untrust", "bob", "--json"]).error_code(),
        "not_found"
    );
}

#[test]
fn reject_reaches_the_requester() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    let b = net.start("bob", &[]);
    let alice_addr = a["address"].as_str().unwrap().to_string();
    // bob is private: asked by address.
    let bob_addr = b["address"].as_str().unwrap();
    net.ctl("alice", &["handshake", bob_addr, "--json"]).data();
    assert!(net.wait(10, || net
        .ctl("bob", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| !a.is_empty())));
    // By node ID, the answer names the requester by address and hostname,
    // not by the number typed.
    let id = net.ctl("bob", &["pending", "--json"]).data()[0]["node_id"].to_string();
    let run = net.ctl("bob", &["reject", &id, "not now"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("{alice_addr} (alice)")),
        "{}",
        run.stdout
    );
    assert!(net
        .ctl("bob", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.is_empty()));
    assert!(net
        .ctl("alice", &["trust", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.is_empty()));
    assert_eq!(
        net.ctl("alice", &["handshake", "nosuchagent", "--json"])
            .error_code(),
        "not_found"
    );
}

/// The agent's own hostname or address as the peer: `invalid_argument`
/// saying so. (It was `not_trusted`, whose hint — run `handshake` — then
/// failed with 'destination is not a node address'.) Finding oneself and
/// publishing on one's own broker still work.
#[test]
fn the_agent_itself_is_not_a_peer() {
    let mut net = Net::new();
    let a = net.start("alice", &[]);
    let me = a["address"].as_str().unwrap().to_string();
    let my_id = net.ctl("alice", &["info", "--json"]).data()["node_id"].to_string();
    for peer in ["alice", me.as_str(), my_id.as_str()] {
        for args in [
            &["handshake", peer][..],
            &["approve", peer],
            &["untrust", peer],
            &["ping", peer, "--count", "1"],
            &["connect", peer, "7", "--message", "x"],
            &["send", peer, "7", "--data", "x", "--datagram"],
            &["send-message", peer, "--data", "x"],
            &["subscribe", peer, "x", "--count", "1"],
        ] {
            let mut args = args.to_vec();
            args.push("--json");
            let run = net.ctl("alice", &args);
            assert_eq!(
                run.error_code(),
                "invalid_argument",
                "{args:?}: {}",
                run.stdout
            );
            let message = run.json()["message"].as_str().unwrap().to_string();
            assert!(message.contains("this agent itself"), "{args:?}: {message}");
        }
        assert_eq!(
            net.ctl("alice", &["find", peer, "--json"]).data()["address"],
            me
        );
        net.ctl("alice", &["publish", peer, "t", "--data", "x", "--json"])
            .data();
    }
}

/// Issue 10, item 8: `handshake HOSTNAME` to a private agent fails exactly
/// as for a name nobody holds; by address the request still reaches it.
#[test]
fn a_private_hostname_is_as_missing_as_an_unknown_one() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let c = net.start("carol", &[]);
    let carol_addr = c["address"].as_str().unwrap().to_string();
    let private = net.ctl("alice", &["handshake", "carol", "--json"]);
    let missing = net.ctl("alice", &["handshake", "nobody", "--json"]);
    assert_eq!(private.error_code(), "not_found");
    assert_eq!(missing.error_code(), "not_found");
    let (p, m) = (private.json(), missing.json());
    assert_eq!(
        p["message"].as_str().unwrap().replace("carol", "NAME"),
        m["message"].as_str().unwrap().replace("nobody", "NAME")
    );
    assert_eq!(p["hint"], m["hint"]);
    // The README's advice, where the user meets the error: ask by address.
    assert!(
        p["hint"].as_str().unwrap().contains("by its address"),
        "{p}"
    );
    assert!(net
        .ctl("carol", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.is_empty()));
    net.ctl("alice", &["handshake", &carol_addr, "--json"])
        .data();
    assert!(net.wait(10, || net
        .ctl("carol", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.len() == 1)));
}

/// Issue 10, item 9: a node ID, as `pending --json` and `trust --json`
/// show it (`node_id`), names a peer wherever an address does.
#[test]
fn a_node_id_names_a_peer_as_its_address_does() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let b = net.start("bob", &[]);
    let bob_addr = b["address"].as_str().unwrap().to_string();
    net.ctl("alice", &["handshake", &bob_addr, "--json"]).data();
    assert!(net.wait(10, || net
        .ctl("bob", &["pending", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.len() == 1)));
    let alice_id = net.ctl("bob", &["pending", "--json"]).data()[0]["node_id"]
        .as_u64()
        .expect("node_id")
        .to_string();
    // Before: "not a valid address".
    net.ctl("bob", &["approve", &alice_id, "--json"]).data();
    assert!(net.wait(10, || net
        .ctl("alice", &["trust", "--json"])
        .data()
        .as_array()
        .is_some_and(|a| a.len() == 1)));
    let bob_id = net.ctl("alice", &["trust", "--json"]).data()[0]["node_id"]
        .as_u64()
        .expect("node_id")
        .to_string();
    let echoed = net.ctl(
        "alice",
        &["connect", &bob_id, "7", "--message", "by id", "--json"],
    );
    assert!(echoed.stdout.contains("by id"), "{}", echoed.stdout);
    net.ctl("alice", &["untrust", &bob_id, "--json"]).data();
    assert_eq!(
        net.ctl("alice", &["untrust", &bob_id, "--json"])
            .error_code(),
        "not_found"
    );
    // A node ID nobody holds is as missing as such an address.
    assert_eq!(
        net.ctl("bob", &["approve", "4095", "--json"]).error_code(),
        "not_found"
    );
    assert_eq!(
        net.ctl("bob", &["approve", "99999999999", "--json"])
            .error_code(),
        "invalid_argument"
    );
}

/// Issue 10, item 10: a findable peer that has not approved us answers
/// `not_trusted` by hostname exactly as by address (it was `not_found`);
/// a private one stays as missing as a name nobody holds.
#[test]
fn an_untrusted_peer_is_not_trusted_by_hostname_as_by_address() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let b = net.start("bob", &["--public"]);
    net.start("carol", &[]);
    let bob_addr = b["address"].as_str().unwrap().to_string();
    let answers = |peer: &str| -> Vec<String> {
        [
            &["ping", peer, "--count", "1"][..],
            &["send-message", peer, "--data", "x"],
            &["subscribe", peer, "x", "--count", "1", "--timeout", "5"],
            &["publish", peer, "t", "--data", "x"],
            &["connect", peer, "7", "--message", "x"],
            &["send", peer, "6000", "--data", "x", "--datagram"],
        ]
        .iter()
        .map(|args| {
            let mut args = args.to_vec();
            args.push("--json");
            net.ctl("alice", &args).error_code()
        })
        .collect()
    };
    let by_address = answers(&bob_addr);
    assert!(
        by_address.iter().all(|c| c == "not_trusted"),
        "{by_address:?}"
    );
    assert_eq!(answers("bob"), by_address);
    let missing = answers("nobody");
    assert!(missing.iter().all(|c| c == "not_found"), "{missing:?}");
    assert_eq!(answers("carol"), missing);
}
