//! Compat mode where only TCP to port 443 may leave: network namespaces
//! this test creates (unique names per run), joined by a veth pair. The
//! rendezvous and a UDP agent live in one; compat and auto agents live in
//! others, one of them behind nftables that let out only TCP/443. Root
//! only (with iproute2 and nftables); otherwise skipped with a message.
//! Everything is torn down also when the test fails.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{pilotctl_in, Net};
use serde_json::Value;

static NEXT: AtomicU32 = AtomicU32::new(0);

fn sh(program: &str, args: &[&str]) -> (bool, String, String) {
    match Command::new(program).args(args).output() {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), e.to_string()),
    }
}

fn must(program: &str, args: &[&str]) -> String {
    let (ok, out, err) = sh(program, args);
    assert!(ok, "{program} {}: {err}", args.join(" "));
    out
}

/// Namespaces deleted (with everything in them) when dropped.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, ns: &str) {
        must("ip", &["netns", "add", ns]);
        self.0.push(ns.to_string());
        must("ip", &["-n", ns, "link", "set", "lo", "up"]);
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let (_, pids, _) = sh("ip", &["netns", "pids", ns]);
            for p in pids.split_whitespace() {
                let _ = sh("kill", &["-9", p]);
            }
            let _ = sh("ip", &["netns", "del", ns]);
        }
    }
}

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !sh("ip", &["-V"]).0 {
        return Some("`ip` (iproute2) is missing");
    }
    if !sh("nft", &["--version"]).0 {
        return Some("`nft` (nftables) is missing");
    }
    None
}

/// Links `ns` to the rendezvous's namespace with a veth pair:
/// 10.77.N.1 on the rendezvous's side, 10.77.N.2 in `ns`.
fn link(rv_ns: &str, ns: &str, tag: &str, n: u8) {
    let (a, b) = (format!("pc{tag}a"), format!("pc{tag}b"));
    must(
        "ip",
        &[
            "link", "add", &a, "netns", rv_ns, "type", "veth", "peer", "name", &b, "netns", ns,
        ],
    );
    must(
        "ip",
        &[
            "-n",
            rv_ns,
            "addr",
            "add",
            &format!("10.77.{n}.1/24"),
            "dev",
            &a,
        ],
    );
    must(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.77.{n}.2/24"),
            "dev",
            &b,
        ],
    );
    must("ip", &["-n", rv_ns, "link", "set", &a, "up"]);
    must("ip", &["-n", ns, "link", "set", &b, "up"]);
}

/// The namespaces of one test: the rendezvous's (`pcrv…`, answering at
/// 10.77.0.1 too) and one per `(prefix, n)`, named `pc{prefix}…` and
/// linked to it as 10.77.n.0/24 with a route to the rendezvous. Names are
/// unique to the run; everything goes when the `Namespaces` drops.
fn lab(agents: &[(&str, u8)]) -> (Namespaces, String, Vec<String>) {
    let run = format!(
        "{}{}",
        std::process::id() % 10_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let rv_ns = format!("pcrv{run}");
    let mut spaces = Namespaces(Vec::new());
    spaces.add(&rv_ns);
    let mut names = Vec::new();
    for &(prefix, n) in agents {
        let ns = format!("pc{prefix}{run}");
        spaces.add(&ns);
        link(&rv_ns, &ns, &format!("{}{run}", &prefix[..1]), n);
        must(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "10.77.0.0/16",
                "via",
                &format!("10.77.{n}.1"),
            ],
        );
        names.push(ns);
    }
    must(
        "ip",
        &["-n", &rv_ns, "addr", "add", "10.77.0.1/32", "dev", "lo"],
    );
    (spaces, rv_ns, names)
}

/// The lab's rendezvous in `rv_ns`: UDP on 10.77.0.1:4000, the carrier
/// on TCP 10.77.0.1:443.
fn carrier_rendezvous(rv_ns: &str) -> Net {
    Net::with_rendezvous(
        Some(rv_ns),
        "10.77.0.1:4000",
        &["--tls-listen", "10.77.0.1:443"],
    )
}

/// Loads nftables `rules` into network namespace `ns`.
fn nft(ns: &str, rules: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "nft in {ns}");
}

/// Lets out of `ns` only TCP to port 443 (and answers to it); counts the
/// UDP packets that tried to leave.
fn only_tcp_443(ns: &str) {
    let rules = "table inet pcfw {\n\
        chain out {\n\
          type filter hook output priority 0; policy drop;\n\
          oif lo accept\n\
          ct state established,related accept\n\
          tcp dport 443 accept\n\
          meta l4proto udp counter name udp_out drop\n\
        }\n\
        counter udp_out { }\n\
      }\n";
    nft(ns, rules);
}

/// Lets out of `ns` only TCP to the proxy at `proxy` port 3128.
fn only_the_proxy(ns: &str, proxy: &str) {
    let rules = format!(
        "table inet pcfw {{\n\
        chain out {{\n\
          type filter hook output priority 0; policy drop;\n\
          oif lo accept\n\
          ct state established,related accept\n\
          ip daddr {proxy} tcp dport 3128 accept\n\
          meta l4proto udp counter name udp_out drop\n\
        }}\n\
        counter udp_out {{ }}\n\
      }}\n"
    );
    nft(ns, &rules);
}

fn udp_out_packets(ns: &str) -> u64 {
    let out = must(
        "ip",
        &[
            "netns", "exec", ns, "nft", "list", "counter", "inet", "pcfw", "udp_out",
        ],
    );
    out.split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

fn ctl(net: &Net, name: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    net.ctl(name, &a).data()
}

/// `daemon start` for agent `name` inside `ns`.
fn start_in(net: &mut Net, ns: &str, name: &str, extra: &[&str]) -> Value {
    start_in_env(net, ns, name, extra, &[]).data()
}

/// [`start_in`] with extra environment, answered as it is.
fn start_in_env(
    net: &mut Net,
    ns: &str,
    name: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> common::Run {
    let home = net.home(name);
    let (rv, key) = (net.rv_addr.clone(), net.rv_key.clone());
    let mut args = vec![
        "daemon",
        "start",
        "--rendezvous",
        &rv,
        "--rendezvous-key",
        &key,
        "--hostname",
        name,
        "--json",
    ];
    if !extra.contains(&"--wait") {
        args.extend(["--wait", "20"]);
    }
    args.extend_from_slice(extra);
    net.track(name);
    let mut all = vec![("PILOT_HOME", home.to_str().unwrap())];
    all.extend_from_slice(env);
    pilotctl_in(Some(ns), &args, &all)
}

#[test]
fn compat_and_auto_where_only_tcp_443_leaves() {
    if let Some(why) = skip_reason() {
        eprintln!("netns compat test skipped: {why} (needs root, iproute2 and nftables)");
        return;
    }
    let (spaces, rv_ns, agents) = lab(&[("lk", 1), ("op", 2)]);
    let (locked, open) = (agents[0].clone(), agents[1].clone());
    only_tcp_443(&locked);

    let mut net = carrier_rendezvous(&rv_ns);
    let (tls, fingerprint) = net.rv_tls.clone().expect("carrier");
    assert_eq!(tls, "10.77.0.1:443");
    // A UDP agent beside the rendezvous.
    net.start("alice", &[]);

    let url = format!("wss://10.77.0.1:443{}", driver_mio::compat::WS_PATH);
    let compat = [
        "--transport",
        "compat",
        "--compat-url",
        &url,
        "--tls-pin",
        &fingerprint,
    ];
    // Compat behind the firewall: registers, trusts, talks to the UDP
    // agent and to another compat agent.
    start_in(&mut net, &locked, "carol", &compat);
    start_in(&mut net, &locked, "dave", &compat);
    net.trust("carol", "alice");
    net.trust("dave", "carol");
    for (from, to) in [("carol", "alice"), ("dave", "carol")] {
        let text = format!("{from} to {to} through TCP/443 only");
        let echo = ctl(&net, from, &["connect", to, "7", "--message", &text]);
        assert_eq!(echo["reply"]["data"], text.as_str(), "{echo}");
        let bench = ctl(&net, from, &["bench", to, "1M"]);
        assert_eq!(bench["bytes"].as_u64(), Some(1 << 20), "{bench}");
    }

    // Each compat daemon holds exactly one TCP connection, to port 443,
    // and no UDP socket; no UDP tried to leave the namespace.
    for name in ["carol", "dave"] {
        let pid = std::fs::read_to_string(net.home(name).join("daemon.pid")).unwrap();
        let pid = pid.trim();
        let tcp = must(
            "ip",
            &[
                "netns",
                "exec",
                &locked,
                "ss",
                "-Htnp",
                "state",
                "established",
            ],
        );
        let mine: Vec<&str> = tcp
            .lines()
            .filter(|l| l.contains(&format!("pid={pid},")))
            .collect();
        assert_eq!(mine.len(), 1, "{name}: {tcp}");
        assert!(mine[0].contains("10.77.0.1:443"), "{name}: {}", mine[0]);
        let udp = must("ip", &["netns", "exec", &locked, "ss", "-Hunap"]);
        assert!(
            !udp.lines().any(|l| l.contains(&format!("pid={pid},"))),
            "{name} has a UDP socket: {udp}"
        );
    }
    assert_eq!(udp_out_packets(&locked), 0, "UDP tried to leave");

    // auto behind the firewall picks compat by itself.
    let auto = [
        "--transport",
        "auto",
        "--compat-url",
        &url,
        "--tls-pin",
        &fingerprint,
    ];
    start_in(&mut net, &locked, "erin", &auto);
    let info = ctl(&net, "erin", &["info"]);
    assert_eq!(info["transport"]["active"], "compat", "{info}");
    net.trust("erin", "alice");
    let echo = ctl(
        &net,
        "erin",
        &["connect", "alice", "7", "--message", "auto"],
    );
    assert_eq!(echo["reply"]["data"], "auto", "{echo}");

    // auto where UDP may leave stays on UDP.
    start_in(&mut net, &open, "fred", &auto);
    let info = ctl(&net, "fred", &["info"]);
    assert_eq!(info["transport"]["active"], "udp", "{info}");
    assert_eq!(info["transport"]["carrier_connected"], false, "{info}");
    drop(net);
    drop(spaces);
}

/// Kills the child when dropped.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn compat_where_only_an_http_proxy_is_reachable() {
    if let Some(why) = skip_reason() {
        eprintln!("netns proxy test skipped: {why} (needs root, iproute2 and nftables)");
        return;
    }
    if !sh("tinyproxy", &["-v"]).0 {
        eprintln!("netns proxy test skipped: tinyproxy is missing (apt-get install tinyproxy)");
        return;
    }
    let (spaces, rv_ns, agents) = lab(&[("px", 3)]);
    let boxed = agents[0].clone();
    only_the_proxy(&boxed, "10.77.3.1");

    let mut net = carrier_rendezvous(&rv_ns);
    let conf = net.dir.path().join("tinyproxy.conf");
    std::fs::write(
        &conf,
        "Port 3128\nListen 10.77.3.1\nTimeout 60\nMaxClients 20\nAllow 10.77.3.0/24\n\
         BasicAuth pilot pr0xypass\nLogLevel Info\n",
    )
    .unwrap();
    let _proxy = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &rv_ns, "tinyproxy", "-d", "-c"])
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tinyproxy"),
    );
    let listening = net.wait(10, || {
        sh(
            "ip",
            &["netns", "exec", &rv_ns, "ss", "-Htln", "sport", "= :3128"],
        )
        .1
        .contains("3128")
    });
    assert!(listening, "tinyproxy did not listen");
    let (_, fingerprint) = net.rv_tls.clone().expect("carrier");
    net.start("alice", &[]);
    let url = format!("wss://10.77.0.1:443{}", driver_mio::compat::WS_PATH);
    let flags = [
        "--transport",
        "compat",
        "--compat-url",
        &url,
        "--tls-pin",
        &fingerprint,
    ];
    let started = start_in_env(
        &mut net,
        &boxed,
        "gina",
        &flags,
        &[("HTTPS_PROXY", "http://pilot:pr0xypass@10.77.3.1:3128")],
    );
    started.data();
    net.trust("gina", "alice");
    let echo = ctl(
        &net,
        "gina",
        &["connect", "alice", "7", "--message", "via the proxy"],
    );
    assert_eq!(echo["reply"]["data"], "via the proxy", "{echo}");
    let info = ctl(&net, "gina", &["info"]);
    assert_eq!(
        info["transport"]["proxy"], "http://10.77.3.1:3128",
        "{info}"
    );
    assert!(!info.to_string().contains("pr0xypass"));
    assert_eq!(udp_out_packets(&boxed), 0, "UDP tried to leave");

    // A wrong password: a clear error naming the proxy, not the password.
    let failed = start_in_env(
        &mut net,
        &boxed,
        "hank",
        &[&flags[..], &["--wait", "4"]].concat(),
        &[("HTTPS_PROXY", "http://pilot:wr0ng@10.77.3.1:3128")],
    );
    let v = failed.json();
    assert_eq!(v["status"], "error", "{v}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("http://10.77.3.1:3128"), "{message}");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("wr0ng"), "{message}");
    drop(net);
    drop(spaces);
}

/// Drops every UDP packet from `ns` to `rv` (table `pcudp`, removed by
/// [`allow_udp`]); TCP still goes.
fn block_udp_to(ns: &str, rv: &str) {
    let rules = format!(
        "table inet pcudp {{\n\
        chain out {{\n\
          type filter hook output priority 0; policy accept;\n\
          ip daddr {rv} meta l4proto udp counter drop\n\
        }}\n\
      }}\n"
    );
    nft(ns, &rules);
}

fn allow_udp(ns: &str) {
    must(
        "ip",
        &[
            "netns", "exec", ns, "nft", "delete", "table", "inet", "pcudp",
        ],
    );
}

/// `auto` falls back to the carrier while UDP to the rendezvous is
/// dropped, and moves back to UDP once it is let through again: at the
/// next UDP trial (every 5 minutes by default; every 3 s here, through
/// `PILOT_AUTO_RETRY_UDP_SECS`) plus the 4 s the trial takes.
#[test]
fn auto_moves_back_to_udp_when_udp_comes_back() {
    if let Some(why) = skip_reason() {
        eprintln!("netns auto-return test skipped: {why} (needs root, iproute2 and nftables)");
        return;
    }
    let (spaces, rv_ns, agents) = lab(&[("au", 4)]);
    let agent_ns = agents[0].clone();
    block_udp_to(&agent_ns, "10.77.0.1");

    let mut net = carrier_rendezvous(&rv_ns);
    let (_, fingerprint) = net.rv_tls.clone().expect("carrier");
    net.start("alice", &[]);
    let url = format!("wss://10.77.0.1:443{}", driver_mio::compat::WS_PATH);
    let auto = [
        "--transport",
        "auto",
        "--compat-url",
        &url,
        "--tls-pin",
        &fingerprint,
    ];
    start_in_env(
        &mut net,
        &agent_ns,
        "gus",
        &auto,
        &[("PILOT_AUTO_RETRY_UDP_SECS", "3")],
    )
    .data();
    let info = ctl(&net, "gus", &["info"]);
    assert_eq!(info["transport"]["mode"], "auto", "{info}");
    assert_eq!(info["transport"]["active"], "compat", "{info}");
    let address = info["address"].clone();
    net.trust("gus", "alice");
    let echo = ctl(
        &net,
        "gus",
        &["connect", "alice", "7", "--message", "on the carrier"],
    );
    assert_eq!(echo["reply"]["data"], "on the carrier", "{echo}");
    // Trials while UDP is still dropped ("udp (trying)", 4 s each) fail,
    // and it goes back to the carrier each time, never to UDP.
    let mut seen = Vec::new();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(12);
    while std::time::Instant::now() < until {
        let active = ctl(&net, "gus", &["info"])["transport"]["active"].clone();
        assert!(
            active == "compat" || active == "udp (trying)",
            "{active} while UDP is dropped"
        );
        if seen.last() != Some(&active) {
            seen.push(active);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let trial_then_back = seen
        .windows(2)
        .any(|w| w[0] == "udp (trying)" && w[1] == "compat");
    assert!(trial_then_back, "no failed trial seen: {seen:?}");

    // UDP is let through: back to UDP within retry + trial (3 + 4 s),
    // with slack for a loaded machine.
    allow_udp(&agent_ns);
    let back = std::time::Instant::now();
    let mut last = Value::Null;
    let moved = net.wait(30, || {
        last = ctl(&net, "gus", &["info"]);
        last["transport"]["active"] == "udp"
    });
    assert!(moved, "still not on UDP after 30 s: {last}");
    eprintln!(
        "auto moved back to UDP {:.1} s after UDP came back",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(last["address"], address, "{last}");
    assert_eq!(last["registered"], true, "{last}");
    assert!(
        net.wait(10, || ctl(&net, "gus", &["info"])["transport"]
            ["carrier_connected"]
            == false),
        "the carrier stayed open after the move"
    );
    // And the peer is reached over UDP now.
    let echo = ctl(
        &net,
        "gus",
        &["connect", "alice", "7", "--message", "over UDP again"],
    );
    assert_eq!(echo["reply"]["data"], "over UDP again", "{echo}");
    let peers = ctl(&net, "gus", &["peers"]);
    let alice = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["hostname"] == "alice"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(alice["transport"], "udp", "{peers}");
    drop(net);
    drop(spaces);
}
