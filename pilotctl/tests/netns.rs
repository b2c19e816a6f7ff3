//! Pilot across real Linux NATs. Each test builds its own network
//! namespaces: a "wan" namespace with a bridge (the public internet, where
//! the rendezvous listens on 198.18.0.1), and per agent either a direct
//! link to that bridge or a router namespace doing NAT with nftables in
//! front of a private LAN. The real daemon and rendezvous run inside those
//! namespaces (started by `pilotctl` under `ip netns exec`), and the test
//! drives them with `pilotctl` from here: the IPC socket is a file, and
//! files are not network-namespaced.
//!
//! Nothing is configured in the host's own namespace. Without root, `ip`,
//! or (for the NAT cases) `nft`, or when namespaces cannot be created, a
//! test says why it skipped and passes.
//!
//! Run: `sudo -E cargo test -p pilotctl --test netns -- --nocapture`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use common::PILOTCTL;
use serde_json::Value;

mod common;

/// The most any one step may take: polling stops here.
const STEP: Duration = Duration::from_secs(20);
/// A single command that runs longer than this is killed (pilotctl's own
/// waits are shorter; this only guards against a hang).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
const RV_IP: &str = "198.18.0.1";
const RV_PORT: u16 = 4000;
/// The rendezvous's second port, which agents learn from it and classify
/// their NAT through.
const RV_REFLECT_PORT: u16 = 4001;
/// The sequential NAT's ports: SEQ_BASE, SEQ_BASE + 1, ... then around.
const SEQ_BASE: u16 = 20000;
const SEQ_PORTS: u16 = 2048;
/// Prefix of every namespace this test binary creates: `pn<pid>-<n>-<role>`.
const PREFIX: &str = "pn";

/// What stands between an agent and the wan.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Nat {
    /// The agent sits on the wan bridge itself.
    None,
    /// `masquerade`: Linux keeps the source port when it is free, so the
    /// mapping is endpoint-independent; filtering is by tracked flow.
    Eim,
    /// `masquerade random`: the port depends on the destination, so every
    /// peer sees another mapping (symmetric, random ports).
    Symmetric,
    /// UDP `snat to <router> : numgen inc mod N map { i : BASE + i }`:
    /// every new flow takes the next port of a counter (symmetric,
    /// sequential with stride 1). SNAT to a port range without `random` is not this:
    /// Linux keeps the source port when free, which is endpoint-independent.
    Sequential,
}

impl Nat {
    /// What the agent behind it must classify its NAT as (`info`'s
    /// `nat.mapping`).
    fn mapping(self) -> &'static str {
        match self {
            Nat::None | Nat::Eim => "endpoint-independent",
            Nat::Symmetric => "symmetric-random",
            Nat::Sequential => "symmetric-sequential",
        }
    }

    /// What a fresh `netcheck` must find out about its filtering:
    /// conntrack lets in only the exact remote a flow was opened to.
    fn filtering(self) -> &'static str {
        match self {
            Nat::None => "address-dependent-or-none",
            _ => "port-dependent",
        }
    }

    /// Whether a datagram to one's own public endpoint comes back: not
    /// through masquerading alone (the simulator's presets agree).
    fn hairpinning(self) -> bool {
        self == Nat::None
    }

    /// The simulator's name for the same behaviour (Linux filters by
    /// tracked flow: a masquerading router is a port-restricted cone).
    fn sim_name(self) -> &'static str {
        match self {
            Nat::None => "open",
            Nat::Eim => "port-restricted",
            Nat::Symmetric => "symmetric-random",
            Nat::Sequential => "symmetric-seq",
        }
    }
}

/// Temporary directories of labs alive in this process, for the Ctrl-C
/// handler (Drop does not run when the process ends on a signal). Their
/// namespaces it finds by name, which also catches one half made.
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Set on Ctrl-C: no namespace is created from then on, so the handler's
/// sweep cannot miss one made just after it.
static STOPPING: AtomicBool = AtomicBool::new(false);
static COUNTER: AtomicU32 = AtomicU32::new(0);
static ONCE: Once = Once::new();

/// The outcome of one command.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` (stdin: `input`), killing it after COMMAND_LIMIT.
fn run(mut cmd: Command, input: Option<&str>) -> Out {
    let shown = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Out {
                ok: false,
                stdout: String::new(),
                stderr: format!("cannot run {shown}: {e}"),
            }
        }
    };
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    // Read the pipes in threads so a chatty child cannot block on them
    // while we wait for it.
    let pipe = |p: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = p {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = pipe(child.stdout.take().map(|p| Box::new(p) as _));
    let err = pipe(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let mut stderr = err.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n{shown} killed after {COMMAND_LIMIT:?}"));
    }
    Out {
        ok: status.is_some_and(|s| s.success()),
        stdout: out.join().unwrap_or_default(),
        stderr,
    }
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// `ip -n NS args...` (or plain `ip` when `ns` is empty); panics on failure,
/// since a half-built topology would only give confusing results later.
fn ip(ns: &str, args: &[&str]) {
    let mut full = Vec::new();
    if !ns.is_empty() {
        full.extend(["-n", ns]);
    }
    full.extend_from_slice(args);
    let o = run(cmd("ip", &full), None);
    assert!(o.ok, "ip {}: {}", full.join(" "), o.stderr.trim());
}

/// `ip netns exec NS program args...`.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut c = cmd("ip", &["netns", "exec", ns, program]);
    c.args(args);
    c
}

/// `ip netns add NS`, unless Ctrl-C is cleaning up: then this thread
/// waits for the process to exit.
fn create_ns(ns: &str) -> Out {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    run(cmd("ip", &["netns", "add", ns]), None)
}

/// Kills every process inside `ns` and deletes it (its veths go with it).
fn destroy_ns(ns: &str) {
    let pids = |ns: &str| -> Vec<i32> {
        run(cmd("ip", &["netns", "pids", ns]), None)
            .stdout
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = pids(ns);
        if left.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = run(cmd("ip", &["netns", "del", ns]), None);
}

/// Once per process: a Ctrl-C/SIGTERM handler that removes what the live
/// labs created, and removal of namespaces left by earlier runs of this
/// test that were SIGKILLed (their pid, in the name, no longer runs).
fn init_once() {
    ONCE.call_once(|| {
        for (name, pid) in our_namespaces() {
            let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if !alive {
                eprintln!("removing namespace {name} left by an earlier run (pid {pid})");
                destroy_ns(&name);
            }
        }
        let signals = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
        if let Ok(mut s) = signal_hook::iterator::Signals::new(signals) {
            std::thread::spawn(move || {
                if s.forever().next().is_some() {
                    STOPPING.store(true, Ordering::SeqCst);
                    // Let an `ip netns add` already running finish, so the
                    // sweep sees its namespace.
                    std::thread::sleep(Duration::from_millis(300));
                    let me = std::process::id() as i32;
                    for (name, _) in our_namespaces().into_iter().filter(|n| n.1 == me) {
                        destroy_ns(&name);
                    }
                    for dir in LIVE_DIRS.lock().map(|l| l.clone()).unwrap_or_default() {
                        let _ = std::fs::remove_dir_all(dir);
                    }
                    std::process::exit(130);
                }
            });
        }
    });
}

/// Namespaces named by this test (in any process), with the pid in
/// their name.
fn our_namespaces() -> Vec<(String, i32)> {
    run(cmd("ip", &["netns", "list"]), None)
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let pid = name
                .strip_prefix(PREFIX)?
                .split('-')
                .next()?
                .parse::<i32>()
                .ok()?;
            Some((name.to_string(), pid))
        })
        .collect()
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite(needs_nft: bool) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root".into());
    }
    if !run(cmd("ip", &["-V"]), None).ok {
        return Some("`ip` (iproute2) is missing".into());
    }
    if needs_nft && !run(cmd("nft", &["--version"]), None).ok {
        return Some("`nft` (nftables) is missing".into());
    }
    None
}

fn skip(why: &str) {
    eprintln!(
        "netns NAT test skipped: {why} (needs root, iproute2 and nftables: \
         apt-get install nftables iproute2)"
    );
}

/// One test's world: namespaces, a rendezvous, agents.
struct Lab {
    tag: String,
    dir: tempfile::TempDir,
    /// Every namespace created, wan first.
    namespaces: Vec<String>,
    routers: Vec<String>,
    /// Agent name -> its namespace and its address as the wan sees it.
    agents: Vec<(String, String, String)>,
    rv_key: String,
    rv_started: bool,
    started: Vec<String>,
}

impl Lab {
    /// Builds the wan, or None (after saying why) when this machine cannot.
    fn new(needs_nft: bool) -> Option<Lab> {
        if let Some(why) = missing_prerequisite(needs_nft) {
            skip(&why);
            return None;
        }
        init_once();
        let tag = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        // Short: the IPC socket path must fit in a sockaddr_un.
        let dir = tempfile::Builder::new()
            .prefix("pn")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if let Ok(mut live) = LIVE_DIRS.lock() {
            live.push(dir.path().to_path_buf());
        }
        let mut lab = Lab {
            tag,
            dir,
            namespaces: Vec::new(),
            routers: Vec::new(),
            agents: Vec::new(),
            rv_key: String::new(),
            rv_started: false,
            started: Vec::new(),
        };
        let wan = lab.ns_name("wan");
        let made = create_ns(&wan);
        if !made.ok {
            skip(&format!(
                "cannot create a namespace: {}",
                made.stderr.trim()
            ));
            return None;
        }
        lab.track(&wan);
        ip(&wan, &["link", "set", "lo", "up"]);
        ip(&wan, &["link", "add", "br0", "type", "bridge"]);
        ip(&wan, &["link", "set", "br0", "up"]);
        ip(&wan, &["addr", "add", &format!("{RV_IP}/24"), "dev", "br0"]);
        Some(lab)
    }

    fn ns_name(&self, role: &str) -> String {
        format!("{}-{role}", self.tag)
    }

    fn wan(&self) -> String {
        self.ns_name("wan")
    }

    /// Records a namespace for Drop.
    fn track(&mut self, ns: &str) {
        self.namespaces.push(ns.to_string());
    }

    /// A new namespace with loopback up.
    fn add_ns(&mut self, role: &str) -> String {
        let ns = self.ns_name(role);
        let made = create_ns(&ns);
        assert!(made.ok, "ip netns add {ns}: {}", made.stderr.trim());
        self.track(&ns);
        ip(&ns, &["link", "set", "lo", "up"]);
        ns
    }

    /// Plugs `ns` into the wan bridge: its interface `wan` gets `addr`/24;
    /// `port` names the other end, inside the wan namespace only.
    fn plug_into_wan(&self, ns: &str, port: &str, addr: &str) {
        let wan = self.wan();
        ip(
            ns,
            &[
                "link", "add", "wan", "type", "veth", "peer", "name", port, "netns", &wan,
            ],
        );
        ip(&wan, &["link", "set", port, "master", "br0", "up"]);
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", "wan"]);
        ip(ns, &["link", "set", "wan", "up"]);
    }

    /// An agent's namespace: on the wan itself (index 1 → 198.18.0.21),
    /// or on LAN 10.<index>.0.0/24 behind a router at 198.18.0.1<index>.
    fn add_agent(&mut self, name: &str, index: u8, nat: Nat) {
        let ns = self.add_ns(name);
        if nat == Nat::None {
            let addr = format!("198.18.0.2{index}");
            self.plug_into_wan(&ns, &format!("to-{name}"), &addr);
            self.agents.push((name.into(), ns, addr));
            return;
        }
        let router = self.add_ns(&format!("r{index}"));
        let public = format!("198.18.0.1{index}");
        self.plug_into_wan(&router, &format!("to-r{index}"), &public);
        ip(
            &router,
            &[
                "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ],
        );
        let gw = format!("10.{index}.0.1");
        ip(&router, &["addr", "add", &format!("{gw}/24"), "dev", "lan"]);
        ip(&router, &["link", "set", "lan", "up"]);
        ip(
            &ns,
            &["addr", "add", &format!("10.{index}.0.2/24"), "dev", "eth0"],
        );
        ip(&ns, &["link", "set", "eth0", "up"]);
        ip(&ns, &["route", "add", "default", "via", &gw]);
        let o = run(
            in_ns(&router, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]),
            None,
        );
        assert!(o.ok, "ip_forward in {router}: {}", o.stderr);
        let o = run(
            in_ns(&router, "nft", &["-f", "-"]),
            Some(&ruleset(nat, &public)),
        );
        assert!(o.ok, "nft in {router}: {}", o.stderr);
        self.routers.push(router);
        self.agents.push((name.into(), ns, public));
    }

    fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn rv_home(&self) -> PathBuf {
        self.dir.path().join("rv")
    }

    fn agent_ns(&self, name: &str) -> String {
        self.agents
            .iter()
            .find(|a| a.0 == name)
            .map(|a| a.1.clone())
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    fn wan_addr(&self, name: &str) -> String {
        self.agents
            .iter()
            .find(|a| a.0 == name)
            .map(|a| a.2.clone())
            .unwrap_or_else(|| panic!("no agent {name}"))
    }

    /// `pilotctl args --json` in namespace `ns` (None: here), as agent
    /// `home` (None: no PILOT_HOME), untouched by our PILOT_* environment.
    fn pilotctl(&self, ns: Option<&str>, home: Option<&Path>, args: &[&str]) -> Out {
        let mut c = match ns {
            Some(ns) => in_ns(ns, PILOTCTL, args),
            None => cmd(PILOTCTL, args),
        };
        common::clean_env(&mut c).arg("--json");
        if let Some(h) = home {
            c.env("PILOT_HOME", h);
        }
        run(c, None)
    }

    /// pilotctl as agent `name`, from the root namespace (over its socket).
    fn ctl(&self, name: &str, args: &[&str]) -> Result<Value, String> {
        answer(&self.pilotctl(None, Some(&self.home(name)), args))
    }

    /// Repeats `ctl` until `done` holds for its answer, for at most STEP.
    fn ctl_until(
        &self,
        name: &str,
        args: &[&str],
        mut done: impl FnMut(&Value) -> bool,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + STEP;
        loop {
            let last = self.ctl(name, args);
            if last.as_ref().is_ok_and(&mut done) {
                return last;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "`pilotctl {}` as {name}: not there within {STEP:?}; last answer: {last:?}",
                    args.join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the rendezvous inside the wan namespace.
    fn start_rendezvous(&mut self) {
        let home = self.rv_home();
        let listen = format!("{RV_IP}:{RV_PORT}");
        self.rv_started = true;
        let o = self.pilotctl(
            Some(&self.wan()),
            None,
            &[
                "rendezvous",
                "start",
                "--listen",
                &listen,
                "--home",
                home.to_str().expect("utf-8 path"),
                "--reflect-port",
                &RV_REFLECT_PORT.to_string(),
            ],
        );
        let v = answer(&o).unwrap_or_else(|e| panic!("rendezvous start: {e}"));
        self.rv_key = v["public_key"].as_str().expect("public_key").to_string();
        assert_eq!(v["reflect_port"], RV_REFLECT_PORT, "rendezvous start: {v}");
    }

    /// Starts agent `name`'s daemon inside its namespace (public, as in
    /// the demo, so that bob finds alice by hostname); returns how long
    /// `daemon start` took, which returns once registered.
    fn start_daemon(&mut self, name: &str) -> Duration {
        let ns = self.agent_ns(name);
        let rv = format!("{RV_IP}:{RV_PORT}");
        let key = self.rv_key.clone();
        let home = self.home(name);
        self.started.push(name.into());
        let t = Instant::now();
        let o = self.pilotctl(
            Some(&ns),
            Some(&home),
            &[
                "daemon",
                "start",
                "--rendezvous",
                &rv,
                "--rendezvous-key",
                &key,
                "--hostname",
                name,
                "--public",
                "--log-level",
                "debug",
            ],
        );
        let took = t.elapsed();
        answer(&o).unwrap_or_else(|e| panic!("{name}: daemon start: {e}"));
        took
    }

    /// Everything worth reading when a test failed.
    fn dump(&self) {
        eprintln!("==== netns lab {} failed; diagnostics follow", self.tag);
        let mut homes: Vec<(String, PathBuf)> = self
            .started
            .iter()
            .map(|n| (n.clone(), self.home(n)))
            .collect();
        homes.push(("rendezvous".into(), self.rv_home()));
        for (who, home) in homes {
            let Ok(entries) = std::fs::read_dir(&home) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                // `*.out` repeats the log with colours: the log is enough.
                if p.extension().and_then(|x| x.to_str()) != Some("log") {
                    continue;
                }
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                eprintln!("---- {who}: {} (last {} lines)", p.display(), tail.len());
                for l in tail {
                    eprintln!("{l}");
                }
            }
        }
        for r in &self.routers {
            let o = run(in_ns(r, "nft", &["list", "ruleset"]), None);
            eprintln!("---- {r}: nft list ruleset\n{}{}", o.stdout, o.stderr);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        // Politely first, so the daemons leave complete logs behind...
        for name in &self.started {
            let _ = self.pilotctl(None, Some(&self.home(name)), &["daemon", "stop"]);
        }
        if self.rv_started {
            let home = self.rv_home();
            let home = home.to_str().unwrap_or_default();
            let _ = self.pilotctl(None, None, &["rendezvous", "stop", "--home", home]);
        }
        // ...then whatever still runs in our namespaces is killed by pid,
        // and the namespaces go, taking their veths and rules with them.
        for ns in self.namespaces.iter().rev() {
            destroy_ns(ns);
        }
        if let Ok(mut live) = LIVE_DIRS.lock() {
            live.retain(|d| d != self.dir.path());
        }
    }
}

/// A router's rules: NAT out of `wan`, and nothing in from the wan that
/// does not belong to a flow the LAN started. Counters make a dump show
/// what was dropped.
fn ruleset(nat: Nat, public: &str) -> String {
    let masquerade = match nat {
        Nat::Symmetric => "masquerade random".to_string(),
        // The counter goes through a map: a bare `numgen inc offset 20000`
        // as the port lands byte-swapped (20000 = 0x4E20 becomes 0x204E =
        // 8270, the next 8526: a stride of 256, which no agent can call
        // sequential). Far from the agents' own ports, so a mapping that
        // kept its port would not pass for a sequential one.
        Nat::Sequential => {
            let ports: Vec<String> = (0..SEQ_PORTS)
                .map(|i| format!("{i} : {}", SEQ_BASE + i))
                .collect();
            format!(
                "meta l4proto udp counter snat to {public} : numgen inc mod {SEQ_PORTS} map {{ {} }}\n\t\toifname \"wan\" counter masquerade",
                ports.join(", ")
            )
        }
        _ => "masquerade".to_string(),
    };
    format!(
        "table ip pilot_nat {{
	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"wan\" counter {masquerade}
	}}
	chain forward {{
		type filter hook forward priority filter; policy drop;
		ct state established,related counter accept
		iifname \"lan\" oifname \"wan\" counter accept
		counter drop
	}}
	chain input {{
		type filter hook input priority filter; policy accept;
		iifname \"wan\" ct state established,related accept
		iifname \"wan\" counter drop
	}}
}}
"
    )
}

/// The `data` of a pilotctl JSON answer, or what went wrong.
fn answer(o: &Out) -> Result<Value, String> {
    let v: Value = serde_json::from_str(o.stdout.trim()).map_err(|_| {
        format!(
            "not JSON: {:?} (stderr: {})",
            o.stdout.trim(),
            o.stderr.trim()
        )
    })?;
    if o.ok && v["status"] == "ok" {
        return Ok(v["data"].clone());
    }
    Err(format!("{v} (stderr: {})", o.stderr.trim()))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The path the test demands of bob's view of alice.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// `"path":"direct"`, to alice's address as the wan sees it.
    Direct,
    /// The relay: no direct path exists between these NATs.
    Relay,
}

/// The simulator's row for the same pair of NATs, from the snapshot that
/// `cargo run -p driver-sim --example nat_matrix` prints.
fn sim_prediction(a: Nat, b: Nat) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/snapshots/nat_matrix.snap"
    );
    let table = std::fs::read_to_string(path).unwrap_or_default();
    let names = [
        format!("{} x {} ", a.sim_name(), b.sim_name()),
        format!("{} x {} ", b.sim_name(), a.sim_name()),
    ];
    table
        .lines()
        .find(|l| names.iter().any(|n| l.starts_with(n.as_str())))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "no row in the simulator's table".into())
}

impl Lab {
    /// Waits until agent `name` has classified its NAT; checks it found
    /// what `nat` is, and returns `info`'s `nat`.
    fn classified(&self, name: &str, nat: Nat) -> Value {
        let info = self
            .ctl_until(name, &["info"], |v| v["nat"]["state"] == "classified")
            .unwrap_or_else(|e| panic!("{name} never classified its NAT: {e}"));
        let got = &info["nat"];
        assert_eq!(
            got["mapping"],
            nat.mapping(),
            "{name}'s NAT ({nat:?}): {got}"
        );
        if nat == Nat::Sequential {
            assert_eq!(got["stride"], 1, "{name}'s NAT stride: {got}");
        }
        got.clone()
    }

    /// The peers row of `peer` in `name`'s `peers`.
    fn peer_row(&self, name: &str, peer: &str) -> Value {
        let peers = self
            .ctl(name, &["peers"])
            .unwrap_or_else(|e| panic!("{name}: peers: {e}"));
        peers
            .as_array()
            .and_then(|a| a.iter().find(|p| p["hostname"] == peer))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

/// The user's story from start to finish: register, trust, ping, a
/// message, a stream; prints the figures and checks the path.
fn scenario(case: &str, a: Nat, b: Nat, expect: Expect) {
    let Some(mut lab) = Lab::new(a != Nat::None || b != Nat::None) else {
        return;
    };
    lab.add_agent("alice", 1, a);
    lab.add_agent("bob", 2, b);
    lab.start_rendezvous();
    let reg_alice = lab.start_daemon("alice");
    let reg_bob = lab.start_daemon("bob");
    // Neither agent was told about the reflect port: they learn it from
    // the rendezvous and classify their NATs.
    let nat_alice = lab.classified("alice", a);
    let nat_bob = lab.classified("bob", b);
    // `netcheck` measures again and reports what the rendezvous saw.
    let check = lab
        .ctl("bob", &["netcheck"])
        .unwrap_or_else(|e| panic!("bob: netcheck: {e}"));
    assert_eq!(check["mapping"], b.mapping(), "bob's netcheck: {check}");
    assert_eq!(check["filtering"], b.filtering(), "bob's netcheck: {check}");
    assert_eq!(
        check["hairpinning"],
        b.hairpinning(),
        "bob's netcheck: {check}"
    );
    assert_eq!(check["rendezvous"]["udp"], true, "bob's netcheck: {check}");
    assert_eq!(
        check["rendezvous"]["reflect_udp"], true,
        "bob's netcheck: {check}"
    );
    assert_eq!(
        check["public_addresses"],
        serde_json::json!([lab.wan_addr("bob")]),
        "bob's netcheck: {check}"
    );

    let t = Instant::now();
    lab.ctl(
        "bob",
        &["handshake", "alice", "netns test: may I talk to you?"],
    )
    .unwrap_or_else(|e| panic!("handshake: {e}"));
    lab.ctl_until("alice", &["pending"], |v| {
        v.as_array().is_some_and(|a| !a.is_empty())
    })
    .unwrap_or_else(|e| panic!("bob's request never reached alice: {e}"));
    lab.ctl("alice", &["approve", "bob"])
        .unwrap_or_else(|e| panic!("approve: {e}"));
    lab.ctl_until("bob", &["trust"], |v| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|p| p["hostname"] == "alice"))
    })
    .unwrap_or_else(|e| panic!("bob never trusted alice: {e}"));
    let trust = t.elapsed();

    // The first echo may wait for punching (or the relay): try single
    // pings until one comes back or the step's time is up.
    let t = Instant::now();
    let first = lab
        .ctl_until(
            "bob",
            &["ping", "alice", "--count", "1", "--timeout", "2"],
            |_| true,
        )
        .unwrap_or_else(|e| panic!("bob never got an echo from alice: {e}"));
    let first_ping = t.elapsed();
    let first_rtt = first["rtt_ms"]["min"].as_f64().unwrap_or(f64::NAN);
    // Time to direct, counted from the first ping (data to a trusted peer
    // is what starts punching): polled, so within ~50 ms plus a command.
    let mut to_direct = None;
    let watch = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch {
        if lab.peer_row("bob", "alice")["path"] == "direct" {
            to_direct = Some(t.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pings = lab
        .ctl("bob", &["ping", "alice", "--count", "5"])
        .unwrap_or_else(|e| panic!("ping --count 5: {e}"));

    let note = format!("hello alice across {case}");
    lab.ctl("bob", &["send-message", "alice", "--data", &note])
        .unwrap_or_else(|e| panic!("send-message: {e}"));
    lab.ctl_until("alice", &["inbox"], |v| {
        v["messages"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["data"] == note.as_str()))
    })
    .unwrap_or_else(|e| panic!("the message never reached alice's inbox: {e}"));
    let echo = lab
        .ctl(
            "bob",
            &["connect", "alice", "7", "--message", "stream through"],
        )
        .unwrap_or_else(|e| panic!("connect to alice's echo: {e}"));
    assert_eq!(echo["reply"]["data"], "stream through", "stream echo");
    // Stream throughput over a direct path (a figure, not a target). Not
    // over the relay for now: a relayed bulk stream sometimes stalls for
    // 30 s (seen in about one run in four with 4 MiB; issue 9 stays open
    // for it), and CI must not depend on that bug's dice.
    let bench = if expect == Expect::Direct {
        let b = lab
            .ctl("bob", &["bench", "alice", "4M"])
            .unwrap_or_else(|e| panic!("bench 4M: {e}"));
        assert_eq!(b["bytes"].as_u64(), Some(4 << 20), "bench: {b}");
        b
    } else {
        serde_json::Value::Null
    };

    let peers = lab
        .ctl("bob", &["peers"])
        .unwrap_or_else(|e| panic!("peers: {e}"));
    let alice = peers
        .as_array()
        .and_then(|a| a.iter().find(|p| p["hostname"] == "alice"))
        .cloned()
        .unwrap_or_else(|| panic!("alice is not among bob's peers: {peers}"));
    let path = alice["path"].as_str().unwrap_or("?").to_string();
    let endpoint = alice["endpoint"].as_str().unwrap_or("-").to_string();
    let bob_row = lab.peer_row("alice", "bob");
    eprintln!(
        "[{case}] nat alice {} bob {}; to direct {} (from the first ping); \
         probes sent alice {} bob {}; simulator ({} x {}): {}",
        nat_alice["mapping"],
        nat_bob["mapping"],
        to_direct.map_or("never (relay)".to_string(), ms),
        bob_row["probes_sent"],
        alice["probes_sent"],
        a.sim_name(),
        b.sim_name(),
        sim_prediction(a, b),
    );

    eprintln!(
        "[{case}] register alice {} bob {}; trust {}; first echo after {} \
         (rtt {first_rtt:.2} ms); ping x5 rtt ms {} (median {:.2}); \
         path {path} endpoint {endpoint} (alice on the wan: {}); ping paths {}; \
         bench 4M echo {:.1} MiB/s",
        ms(reg_alice),
        ms(reg_bob),
        ms(trust),
        ms(first_ping),
        pings["samples_ms"],
        pings["rtt_ms"]["median"].as_f64().unwrap_or(f64::NAN),
        lab.wan_addr("alice"),
        pings["paths"],
        bench["rate_mib_s"].as_f64().unwrap_or(f64::NAN),
    );

    // Every echo says which path it took; here the path cannot be
    // anything but a working one.
    let ping_paths = pings["paths"].as_array().cloned().unwrap_or_default();
    assert!(
        !ping_paths.is_empty() && ping_paths.iter().all(|p| p == "direct" || p == "relay"),
        "ping paths: {pings}"
    );
    if expect == Expect::Relay {
        assert_eq!(path, "relay", "bob's path to alice: {alice}");
    }
    if expect == Expect::Direct {
        assert_eq!(path, "direct", "bob's path to alice: {alice}");
        // Direct means to alice's public side: her own address without
        // NAT, her router's wan address behind it.
        let ip = endpoint.rsplit_once(':').map_or("", |(ip, _)| ip);
        assert_eq!(ip, lab.wan_addr("alice"), "bob's endpoint for alice");
    }
}

/// Both agents on the wan: proves the harness (and the daemon) work.
#[test]
fn no_nat_baseline() {
    scenario("no_nat_baseline", Nat::None, Nat::None, Expect::Direct);
}

/// Both behind endpoint-independent NATs: hole punching must give a
/// direct path.
#[test]
fn eim_eim() {
    scenario("eim_eim", Nat::Eim, Nat::Eim, Expect::Direct);
}

/// Both behind random symmetric NATs: no direct path can be found (no
/// side's ports can be aimed at), so the relay carries everything.
#[test]
fn symmetric_symmetric() {
    scenario(
        "symmetric_symmetric",
        Nat::Symmetric,
        Nat::Symmetric,
        Expect::Relay,
    );
}

/// An endpoint-independent NAT against a random symmetric one: birthday
/// probing must find a direct path.
#[test]
fn eim_symmetric_random() {
    scenario(
        "eim_symmetric_random",
        Nat::Eim,
        Nat::Symmetric,
        Expect::Direct,
    );
}

/// A sequential symmetric NAT against an endpoint-independent one: port
/// prediction must find a direct path.
#[test]
fn sequential_eim() {
    scenario("sequential_eim", Nat::Sequential, Nat::Eim, Expect::Direct);
}
