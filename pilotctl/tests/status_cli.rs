//! `pilotctl status`: this agent, its trusted peers, and trust requests
//! pending, outgoing and rejected, text and `--json`.

mod common;

use common::Net;
use serde_json::Value;

fn status(net: &Net, name: &str) -> Value {
    net.ctl(name, &["status", "--json"]).data()
}

#[test]
fn status_shows_self_peers_and_requests_both_ways() {
    let mut net = Net::new();
    let alice = net.start("alice", &[])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = net.start("bob", &["--public"])["address"]
        .as_str()
        .unwrap()
        .to_string();
    let carol = net.start("carol", &["--auto-approve", "--no-services"])["address"]
        .as_str()
        .unwrap()
        .to_string();

    let s = status(&net, "alice");
    let me = &s["agent"];
    assert_eq!(me["address"], alice.as_str());
    assert_eq!(me["hostname"], "alice");
    assert_eq!(me["public"], false);
    assert_eq!(me["registered"], true);
    assert_eq!(me["rendezvous"], net.rv_addr.as_str());
    assert_eq!(me["transport"], "udp");
    assert_eq!(me["auto_approve"], false);
    assert_eq!(me["services"]["echo"], true);
    assert_eq!(s["peers"], serde_json::json!([]));
    let c = status(&net, "carol");
    assert_eq!(c["agent"]["auto_approve"], true);
    assert_eq!(c["agent"]["services"]["echo"], false);
    assert_eq!(status(&net, "bob")["agent"]["public"], true);

    // alice asks bob: outgoing on her side, pending on his.
    net.ctl("alice", &["handshake", "bob", "work together?", "--json"])
        .data();
    assert!(net.wait(10, || status(&net, "bob")["pending"]
        .as_array()
        .is_some_and(|p| !p.is_empty())));
    let out = status(&net, "alice")["outgoing"].clone();
    assert_eq!(out.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(out[0]["to"], "bob");
    assert_eq!(out[0]["reason"], "work together?");
    assert!(out[0]["since"].as_u64().is_some_and(|t| t > 1_600_000_000));
    let pending = status(&net, "bob")["pending"].clone();
    assert_eq!(pending[0]["node"], alice.as_str());
    assert_eq!(pending[0]["hostname"], "alice");
    assert_eq!(pending[0]["reason"], "work together?");
    let text = net.ctl("alice", &["status"]);
    assert_eq!(text.code, 0);
    assert!(
        text.stdout.contains("Outgoing") && text.stdout.contains("\"work together?\""),
        "{}",
        text.stdout
    );
    let text = net.ctl("bob", &["status"]).stdout;
    assert!(
        text.contains("Pending") && text.contains("alice") && text.contains("pilotctl approve 16"),
        "{text}"
    );

    // bob rejects: rejected with the reason on both sides, outgoing gone.
    net.ctl("bob", &["reject", "alice", "not now", "--json"])
        .data();
    assert!(net.wait(10, || status(&net, "alice")["rejected"]
        .as_array()
        .is_some_and(|r| !r.is_empty())));
    let s = status(&net, "alice");
    assert_eq!(s["outgoing"], serde_json::json!([]));
    let r = &s["rejected"][0];
    assert_eq!(r["node"], bob.as_str());
    assert_eq!(r["hostname"], "bob");
    assert_eq!(r["by"], "peer");
    assert_eq!(r["reason"], "not now");
    let s = status(&net, "bob");
    assert_eq!(s["pending"], serde_json::json!([]));
    let r = &s["rejected"][0];
    assert_eq!(r["node"], alice.as_str());
    assert_eq!(r["hostname"], "alice");
    assert_eq!(r["by"], "us");
    assert_eq!(r["reason"], "not now");
    let text = net.ctl("alice", &["status"]).stdout;
    assert!(
        text.contains("Rejected") && text.contains("rejected your request: \"not now\""),
        "{text}"
    );

    // A restart keeps the rejection (it is in trust.state).
    net.stop("alice");
    net.restart("alice");
    let r = status(&net, "alice")["rejected"].clone();
    assert_eq!(r[0]["reason"], "not now", "{r}");

    // alice asks carol, who approves everyone at once: carol becomes a
    // peer, and once a datagram from her arrives, shows traffic, path,
    // RTT and when she was last heard from.
    net.ctl("alice", &["handshake", &carol, "--json"]).data();
    assert!(net.wait(10, || status(&net, "alice")["peers"]
        .as_array()
        .is_some_and(|p| !p.is_empty())));
    let sent = net.ctl(
        "carol",
        &[
            "send",
            &alice,
            "6000",
            "--data",
            "x",
            "--datagram",
            "--json",
        ],
    );
    assert_eq!(sent.code, 0, "{}", sent.stdout);
    assert!(
        net.wait(10, || status(&net, "alice")["peers"][0]["bytes_in"]
            .as_u64()
            .is_some_and(|b| b > 0))
    );
    let p = status(&net, "alice")["peers"][0].clone();
    assert_eq!(p["node"], carol.as_str());
    assert_eq!(p["hostname"], "carol");
    assert!(
        ["direct", "relay"].contains(&p["path"].as_str().unwrap()),
        "{p}"
    );
    assert!(p["rtt_ms"].is_number(), "{p}");
    assert!(p["last_seen_secs"].is_number(), "{p}");
    let text = net.ctl("alice", &["status"]).stdout;
    assert!(text.contains("Peers:") && text.contains("carol"), "{text}");
}

#[test]
fn status_without_a_daemon_is_not_running() {
    let net = Net::new();
    assert_eq!(
        net.ctl("nobody", &["status", "--json"]).error_code(),
        "not_running"
    );
}
