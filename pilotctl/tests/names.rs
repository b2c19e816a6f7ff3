//! The rendezvous named by DNS name: `localhost` on the host, and names
//! from a hosts file of a network namespace each test makes
//! (`ip netns exec` bind-mounts `/etc/netns/<ns>/hosts` over
//! `/etc/hosts`, and `/etc/netns/<ns>/resolv.conf` points the resolver at
//! the namespace's own loopback, so no lookup leaves the machine).
//!
//! The namespace tests need root and `ip`; without them they say why they
//! skipped and pass. Run: `sudo -E cargo test -p pilotctl --test names`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::Net;

mod common;

#[test]
fn localhost_names_the_rendezvous() {
    let mut net = Net::new();
    let port = net.rv_addr.rsplit_once(':').unwrap().1.to_string();
    let name = format!("localhost:{port}");
    let run = net.daemon_start_at("a", &name, &["--hostname", "a", "--listen", "127.0.0.1:0"]);
    let data = run.data();
    assert!(data["address"].is_string(), "{data}");
    let info = net.ctl("a", &["info", "--json"]).data();
    assert_eq!(info["rendezvous"]["name"], name.as_str(), "{info}");
    assert_eq!(
        info["rendezvous"]["address"],
        format!("127.0.0.1:{port}"),
        "{info}"
    );
    let text = net.ctl("a", &["info"]);
    assert!(
        text.stdout
            .contains(&format!("Rendezvous:  {name} (127.0.0.1:{port})")),
        "{}",
        text.stdout
    );
    // The name is what is saved, not the address it had today.
    let config = net.ctl("a", &["config", "--json"]).data();
    assert_eq!(config["settings"]["rendezvous"], name.as_str(), "{config}");
    // And the daemon's log says both.
    let log = std::fs::read_to_string(net.home("a").join("pilot.log")).unwrap_or_default();
    assert!(
        log.contains("rendezvous looked up") && log.contains(&name),
        "{log}"
    );
}

#[test]
fn an_address_rendezvous_shows_no_name() {
    let mut net = Net::new();
    net.start("a", &[]);
    let info = net.ctl("a", &["info", "--json"]).data();
    assert!(info["rendezvous"]["name"].is_null(), "{info}");
    assert_eq!(info["rendezvous"]["address"], net.rv_addr.as_str());
}

#[test]
fn malformed_rendezvous_addresses_are_refused_with_a_hint() {
    let mut net = Net::new();
    for bad in [
        "nowhere",
        "::1:4000",
        "bad name:4000",
        "host:0",
        "host:99999",
    ] {
        let run = net.daemon_start_at("a", bad, &["--listen", "127.0.0.1:0"]);
        assert_eq!(run.error_code(), "invalid_argument", "{bad}");
        let v = run.json();
        assert!(
            v["hint"].as_str().unwrap().contains("DNS name"),
            "{bad}: {v}"
        );
    }
    let long = "r".repeat(300) + ":4000";
    let run = net.daemon_start_at("a", &long, &["--listen", "127.0.0.1:0"]);
    assert_eq!(run.error_code(), "invalid_argument");
    let message = run.json()["message"].as_str().unwrap().to_string();
    assert!(message.len() < 200, "shortened: {message}");
}

/// A network namespace with only loopback, and its own hosts file and
/// resolver configuration; removed when dropped, also on failure.
struct Ns {
    name: String,
    etc: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Ns {
    /// None (after saying why) when namespaces cannot be made here.
    fn new(hosts: &str) -> Option<Ns> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: namespace tests need root");
            return None;
        }
        let name = format!(
            "pnames{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let added = Command::new("ip").args(["netns", "add", &name]).status();
        if !added.is_ok_and(|s| s.success()) {
            eprintln!("skipped: `ip netns add` failed here");
            return None;
        }
        let etc = PathBuf::from("/etc/netns").join(&name);
        let ns = Ns { name, etc };
        std::fs::create_dir_all(&ns.etc).expect("/etc/netns/<ns>");
        ns.set_hosts(hosts);
        // Names missing from the hosts file go to a resolver on the
        // namespace's loopback, where none listens: refused at once.
        std::fs::write(
            ns.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .expect("resolv.conf");
        let up = Command::new("ip")
            .args(["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"])
            .status();
        assert!(up.is_ok_and(|s| s.success()), "lo up in {}", ns.name);
        Some(ns)
    }

    /// Rewrites the hosts file in place: `ip netns exec` bind-mounted this
    /// very file, so running processes see the change.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(
            self.etc.join("hosts"),
            format!("127.0.0.1 localhost\n::1 localhost\n{hosts}"),
        )
        .expect("hosts file");
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn port_of(addr: &str) -> String {
    addr.rsplit_once(':').unwrap().1.to_string()
}

#[test]
fn names_from_a_hosts_file_ipv4_and_ipv6() {
    let Some(ns) = Ns::new("127.0.0.1 rv.pilot.test\n::1 rv6.pilot.test\n") else {
        return;
    };
    // Dual stack: reachable as 127.0.0.1 and as ::1. (Net is declared
    // after Ns, so its processes stop before the namespace goes.)
    let mut net = Net::with_rendezvous(Some(&ns.name), "[::]:0", &[]);
    let port = port_of(&net.rv_addr);

    let v4 = format!("rv.pilot.test:{port}");
    net.daemon_start_at("a", &v4, &["--hostname", "a", "--listen", "127.0.0.1:0"])
        .data();
    let info = net.ctl("a", &["info", "--json"]).data();
    assert_eq!(info["rendezvous"]["name"], v4.as_str());
    assert_eq!(info["rendezvous"]["address"], format!("127.0.0.1:{port}"));

    let v6 = format!("rv6.pilot.test:{port}");
    net.daemon_start_at("b", &v6, &["--hostname", "b", "--listen", "[::1]:0"])
        .data();
    let info = net.ctl("b", &["info", "--json"]).data();
    assert_eq!(info["rendezvous"]["address"], format!("[::1]:{port}"));
    assert_eq!(info["registered"], true);

    // An IPv4 socket cannot reach an IPv6-only name: said at start.
    let run = net.daemon_start_at("c", &v6, &["--listen", "127.0.0.1:0"]);
    assert_eq!(run.error_code(), "invalid_argument");
    let v = run.json();
    assert!(v["message"].as_str().unwrap().contains("only IPv6"), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("[::]:0"), "{v}");

    // A name nobody knows.
    let run = net.daemon_start_at("d", &format!("nosuch.pilot.test:{port}"), &[]);
    assert_eq!(run.error_code(), "invalid_argument");
    let v = run.json();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("cannot resolve the rendezvous `nosuch.pilot.test`"),
        "{v}"
    );
    assert!(v["hint"].as_str().unwrap().contains("IP address"), "{v}");
}

#[test]
fn a_rendezvous_that_moves_is_found_again_by_name() {
    // First the name points where nothing answers (127.0.0.2: loopback,
    // but the rendezvous listens on 127.0.0.1 only).
    let Some(ns) = Ns::new("127.0.0.2 rv.pilot.test\n") else {
        return;
    };
    let mut net = Net::with_rendezvous(Some(&ns.name), "127.0.0.1:0", &[]);
    let port = port_of(&net.rv_addr);
    let name = format!("rv.pilot.test:{port}");
    let run = net.daemon_start_at(
        "a",
        &name,
        &["--hostname", "a", "--listen", "127.0.0.1:0", "--wait", "1"],
    );
    assert_eq!(run.error_code(), "timeout", "nothing answers at 127.0.0.2");
    let info = net.ctl("a", &["info", "--json"]).data();
    assert_eq!(info["rendezvous"]["address"], format!("127.0.0.2:{port}"));
    assert_eq!(info["registered"], false);

    // The name moves to the real rendezvous; the daemon, still running,
    // finds it once the rendezvous has been silent long enough.
    ns.set_hosts("127.0.0.1 rv.pilot.test\n");
    let registered = net.wait(90, || {
        let info = net.ctl("a", &["info", "--json"]);
        info.code == 0 && info.data()["registered"] == true
    });
    let info = net.ctl("a", &["info", "--json"]).data();
    assert!(registered, "not registered after the move: {info}");
    assert_eq!(info["rendezvous"]["name"], name.as_str());
    assert_eq!(info["rendezvous"]["address"], format!("127.0.0.1:{port}"));
    let log = std::fs::read_to_string(net.home("a").join("pilot.log")).unwrap_or_default();
    assert!(log.contains("resolves to a new address"), "{log}");
}
