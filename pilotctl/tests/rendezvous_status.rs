//! `pilotctl rendezvous status`: what a running rendezvous says of
//! itself (read from the status file it rewrites in its home).

mod common;

use common::{pilotctl, Net};
use serde_json::Value;

fn rv_status(net: &Net) -> common::Run {
    let home = net.rv_home.to_str().unwrap().to_string();
    pilotctl(&["rendezvous", "status", "--home", &home, "--json"], &[])
}

#[test]
fn status_shows_key_agents_pairs_and_relay_counters() {
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    let mut last = Value::Null;
    let both = net.wait(10, || {
        last = rv_status(&net).data();
        last["agents"]["registered"] == 2
            && last["agents"]["online"] == 2
            && last["trust_pairs"] == 1
    });
    assert!(both, "{last}");
    assert_eq!(last["running"], true);
    assert_eq!(last["public_key"], net.rv_key.as_str());
    assert_eq!(last["address"], net.rv_addr.as_str());
    assert_eq!(last["pid"], net.rv_pid);
    assert!(last["uptime_secs"].is_u64());
    assert!(last["relay"]["forwarded_packets"].is_u64(), "{last}");
    assert!(last["udp"]["datagrams_in"].as_u64().unwrap() > 0, "{last}");
    // Both agents' tunnel peers; no load, so no cookie was needed.
    assert!(
        last["handshakes"]["tunnel_peers"].as_u64() >= Some(2),
        "{last}"
    );
    assert_eq!(last["handshakes"]["cookie_replies"], 0, "{last}");

    let home = net.rv_home.to_str().unwrap().to_string();
    let text = pilotctl(&["rendezvous", "status", "--home", &home], &[]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    let key_line = format!("Public key:  {}", net.rv_key);
    assert!(text.stdout.contains(&key_line), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("Agents:      2 registered, 2 online; 1 trust pairs"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("Relay:"), "{}", text.stdout);
    assert!(text.stdout.contains("Handshakes:"), "{}", text.stdout);

    // Stopped: not running, and the status file is gone with it.
    let stopped = pilotctl(&["rendezvous", "stop", "--home", &home, "--json"], &[]);
    assert_eq!(stopped.code, 0, "{}", stopped.stdout);
    assert_eq!(rv_status(&net).error_code(), "not_running");
    assert!(!net
        .rv_home
        .join(driver_mio::rendezvous::STATUS_FILE)
        .exists());
}

#[test]
fn status_of_a_home_without_a_rendezvous_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    let r = pilotctl(&["rendezvous", "status", "--home", home, "--json"], &[]);
    assert_eq!(r.error_code(), "not_running");
    let v = r.json();
    assert!(v["message"].as_str().unwrap().contains(home), "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("rendezvous start"),
        "{v}"
    );
    // Nothing was created there.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
