//! The gateway with real TCP clients: curl and headless Chromium on bob's
//! side reach `python3 -m http.server` on alice's, through both daemons.
//! Everything runs on loopback in the rootless mode (a subnet inside
//! 127.0.0.0/8, ports from 1024: no alias, no root). Tests whose tool is
//! missing say so and pass.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{in_netns, Net};
use sha2::Digest as _;

/// The rootless subnet the tests map agents into.
const SUBNET: &str = "127.77.0.0/16";

fn have(tool: &str, arg: &str) -> bool {
    Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3 -m http.server` on 127.0.0.1 (a port of the kernel's choice),
/// serving `dir`; its request log goes next to `dir`. Killed on drop.
struct HttpServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl HttpServer {
    fn start(dir: &Path) -> HttpServer {
        HttpServer::start_in(None, dir)
    }

    fn start_in(netns: Option<&str>, dir: &Path) -> HttpServer {
        HttpServer::start_on(netns, "127.0.0.1", dir)
    }

    /// The server bound to `bind` only (`::1`: IPv6 loopback, say); its
    /// log is `dir/../http-BIND.log`.
    fn start_on(netns: Option<&str>, bind: &str, dir: &Path) -> HttpServer {
        let log = dir.with_file_name(format!("http-{bind}.log"));
        let mut child = in_netns(netns, "python3")
            .args(["-u", "-m", "http.server", "--bind", bind, "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("python's first line");
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpServer { child, port, log }
    }

    /// The request lines the server logged.
    fn requests(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// alice and bob trust each other; alice serves `www` (made by `fill`);
/// bob's gateway maps alice in the rootless subnet on the server's port.
struct Lab {
    net: Net,
    server: HttpServer,
    base: String,
}

/// alice and bob, trusting each other, if curl and python3 are here.
fn pair() -> Option<Net> {
    if !have("python3", "--version") || !have("curl", "--version") {
        eprintln!("skipped: needs python3 and curl (installed by .ci/run)");
        return None;
    }
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("bob", "alice");
    Some(net)
}

/// Starts bob's gateway on `ports`, mapping alice to the subnet's first
/// address; answers that address.
fn map_alice(net: &Net, ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    let ports = ports.join(",");
    let v = net
        .ctl(
            "bob",
            &[
                "gateway", "start", "--subnet", SUBNET, "--ports", &ports, "alice", "--json",
            ],
        )
        .data();
    let ip = v["mappings"][0]["local_ip"].as_str().unwrap().to_string();
    assert_eq!(ip, "127.77.0.1", "the first address of the subnet: {v}");
    ip
}

fn lab(fill: impl FnOnce(&Path)) -> Option<Lab> {
    let net = pair()?;
    let www = net.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    fill(&www);
    let server = HttpServer::start(&www);
    let ip = map_alice(&net, &[server.port]);
    Some(Lab {
        base: format!("http://{ip}:{}", server.port),
        net,
        server,
    })
}

/// curl's exit code and output.
fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .output()
        .expect("curl");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fetches `url` with curl inside network namespace `ns`; the body, or a
/// failed test naming the URL and curl's complaint.
fn curl_in(ns: &str, url: &str) -> Vec<u8> {
    let out = in_netns(Some(ns), "curl")
        .args(["-sS", "--max-time", "60", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Pseudo-random bytes (no compression or pattern can flatter a transfer).
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn curl_gets_a_page_and_100_mib_intact_through_the_rootless_gateway() {
    let big = noise(100 << 20);
    let want = sha256(&big);
    let Some(lab) = lab(|www| {
        std::fs::write(www.join("index.html"), "<h1>hello from alice</h1>\n").unwrap();
        std::fs::write(www.join("big.bin"), &big).unwrap();
    }) else {
        return;
    };
    drop(big);
    let (code, page, err) = curl(&[&format!("{}/index.html", lab.base)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(page, b"<h1>hello from alice</h1>\n");

    let (code, body, err) = curl(&[&format!("{}/big.bin", lab.base)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(body.len(), 100 << 20);
    assert_eq!(sha256(&body), want);

    // Both daemons show the bridged streams while they last, and list
    // shows the mapping as start answered it.
    let list = lab.net.ctl("bob", &["gateway", "list", "--json"]).data();
    assert_eq!(list["subnet"], SUBNET);
    assert_eq!(list["mappings"][0]["local_ip"], "127.77.0.1");
    let info = lab.net.ctl("alice", &["info", "--json"]).data();
    assert_eq!(info["bridge"]["ports"], "all");
    assert_eq!(info["bridge"]["peers"], "all");
}

#[test]
fn a_hundred_concurrent_curls_all_get_their_page() {
    let Some(lab) = lab(|www| {
        for i in 0..100 {
            std::fs::write(
                www.join(format!("p{i}.txt")),
                format!("page {i}\n").repeat(50),
            )
            .unwrap();
        }
    }) else {
        return;
    };
    let children: Vec<(usize, Child)> = (0..100)
        .map(|i| {
            let child = Command::new("curl")
                .args(["-sS", "--max-time", "120"])
                .arg(format!("{}/p{i}.txt", lab.base))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl");
            (i, child)
        })
        .collect();
    for (i, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, format!("page {i}\n").repeat(50).into_bytes());
    }
}

#[test]
fn a_remote_port_with_nothing_listening_fails_at_once_and_untrusted_agents_are_refused() {
    let Some(lab) = lab(|_| {}) else {
        return;
    };
    // A port nothing listens on at alice's: the stream is reset and curl
    // fails (reset rather than refused: the local kernel accepted the
    // connection before the gateway could know), never times out (28).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let ip = "127.77.0.9";
    lab.net.ctl("bob", &["gateway", "stop", "--json"]).data();
    let p = port.to_string();
    let v = lab
        .net
        .ctl(
            "bob",
            &[
                "gateway", "start", "--subnet", SUBNET, "--ports", &p, "--json",
            ],
        )
        .data();
    assert_eq!(v["mappings"].as_array().unwrap().len(), 0);
    lab.net
        .ctl("bob", &["gateway", "map", "alice", ip, "--json"])
        .data();
    let (code, _, err) = curl(&[&format!("http://{ip}:{port}/")]);
    assert!(
        [7, 52, 56].contains(&code),
        "curl should see the connection refused or reset, got {code}: {err}"
    );

    // An agent bob does not trust: a clear error at map time.
    let mut net = lab.net;
    net.start("carol", &[]);
    let carol = net.ctl("carol", &["info", "--json"]).data()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let run = net.ctl("bob", &["gateway", "map", &carol, "--json"]);
    assert_eq!(run.error_code(), "not_trusted");
    assert!(run.json()["hint"].as_str().unwrap().contains("handshake"));
    // bob himself is no peer to map, as for every other command (it was
    // `not_trusted` with a hint to ask himself for trust).
    let run = net.ctl("bob", &["gateway", "map", "bob", "--json"]);
    assert_eq!(run.error_code(), "invalid_argument", "{}", run.stdout);
    assert!(run.json()["message"].as_str().unwrap().contains("itself"));
    // And `extras gateway` is the same command.
    let list = net
        .ctl("bob", &["extras", "gateway", "list", "--json"])
        .data();
    assert_eq!(list["mappings"].as_array().unwrap().len(), 1);
    assert_eq!(
        net.ctl("bob", &["gateway", "unmap", "127.77.0.200", "--json"])
            .error_code(),
        "not_found"
    );
    let stop = net
        .ctl("bob", &["extras", "gateway", "stop", "--json"])
        .data();
    assert_eq!(stop["removed"][0], ip);
    assert_eq!(
        net.ctl("bob", &["gateway", "list", "--json"]).error_code(),
        "not_found"
    );
}

#[test]
fn untrust_mid_transfer_ends_the_download_with_an_error_not_a_hang() {
    let Some(lab) = lab(|www| {
        std::fs::write(www.join("big.bin"), noise(64 << 20)).unwrap();
    }) else {
        return;
    };
    let out = lab.net.dir.path().join("partial.bin");
    // Slowed down so that the untrust lands mid-transfer.
    let child = Command::new("curl")
        .args(["-sS", "--max-time", "120", "--limit-rate", "2M", "-o"])
        .arg(&out)
        .arg(format!("{}/big.bin", lab.base))
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl");
    assert!(
        lab.net
            .wait(30, || std::fs::metadata(&out).is_ok_and(|m| m.len() > 0)),
        "the download started"
    );
    lab.net.ctl("alice", &["untrust", "bob", "--json"]).data();
    let result = child.wait_with_output().unwrap();
    let code = result.status.code().unwrap_or(-1);
    assert!(
        code != 0 && code != 28,
        "curl must fail (not finish, not time out): {code} {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(std::fs::metadata(&out).unwrap().len() < 64 << 20);
    // Afterwards connections are refused at once.
    let (code, _, err) = curl(&[&format!("{}/big.bin", lab.base)]);
    assert!([7, 52, 56].contains(&code), "{code}: {err}");
}

/// A 1x1 PNG.
const PIXEL: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x56, 0xc7, 0x2f, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

const PAGE: &str = r#"<!doctype html>
<html><head><title>alice</title><link rel="stylesheet" href="style.css"></head>
<body><h1 id="h">hello from alice</h1><img id="img" src="pixel.png">
<p id="result">pending</p>
<script>
window.addEventListener("load", function () {
  var img = document.getElementById("img");
  var color = getComputedStyle(document.getElementById("h")).color;
  document.getElementById("result").textContent =
    "color=" + color + " image=" + img.naturalWidth + "x" + img.naturalHeight;
});
</script></body></html>
"#;

#[test]
fn headless_chromium_renders_a_page_with_its_stylesheet_and_image() {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| have(b, "--version"));
    let Some(browser) = browser else {
        eprintln!("skipped: no chromium (.ci/run installs Debian's `chromium`)");
        return;
    };
    let Some(lab) = lab(|www| {
        std::fs::write(www.join("index.html"), PAGE).unwrap();
        std::fs::write(www.join("style.css"), "h1 { color: rgb(1, 2, 3); }\n").unwrap();
        std::fs::write(www.join("pixel.png"), PIXEL).unwrap();
    }) else {
        return;
    };
    let profile = lab.net.dir.path().join("chromium");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("{}/index.html", lab.base))
        .output()
        .expect("chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && dom.trim().is_empty() {
        eprintln!(
            "skipped: chromium cannot run here: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        dom.contains("color=rgb(1, 2, 3) image=1x1"),
        "the stylesheet and the image arrived and applied: {dom}"
    );
    let log = lab.server.requests();
    for path in ["/index.html", "/style.css", "/pixel.png"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("\"GET {path} HTTP/1.1\" 200"))),
            "{path} served through the gateway: {log}"
        );
    }
}

/// A network namespace made by the test, deleted on drop (after the
/// daemons in it, which `Net` stops first when declared after it).
struct Netns(String);

impl Netns {
    /// A fresh namespace with its loopback up, or why there is none.
    fn new() -> Result<Netns, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root".into());
        }
        // One per test of this process: the tests run in parallel.
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pgw{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("cannot run ip: {e}"))
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
                    }
                })
        };
        ip(&["netns", "add", &name])?;
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The IPv4 addresses on the namespace's loopback.
    fn lo_addrs(&self) -> String {
        lo_addrs(Some(&self.0))
    }
}

fn lo_addrs(netns: Option<&str>) -> String {
    let mut c = Command::new("ip");
    if let Some(ns) = netns {
        c.args(["-n", ns]);
    }
    let out = c
        .args(["-4", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The default subnet, 10.4.0.0/16, with its loopback aliases: only in a
/// namespace this test makes, never in the host's own.
#[test]
fn default_subnet_with_aliases_in_a_network_namespace() {
    if !have("python3", "--version") || !have("curl", "--version") || !have("ip", "-V") {
        eprintln!("skipped: needs python3, curl and ip");
        return;
    }
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: no network namespace ({why})");
            return;
        }
    };
    let host_before = lo_addrs(None);
    // 10.4.0.2 is taken by another interface of the namespace: the gateway
    // must skip it (its listeners would be open to that network).
    for args in [
        // A veth pair with both ends inside (no dummy module everywhere).
        &["link", "add", "d0", "type", "veth", "peer", "name", "d1"][..],
        &["addr", "add", "10.4.0.2/32", "dev", "d0"],
        &["link", "set", "d0", "up"],
    ] {
        let ok = Command::new("ip")
            .args(["-n", &ns.0])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip {args:?}");
    }
    let mut net = Net::new_in(Some(&ns.0));
    for name in ["alice", "carol", "bob"] {
        net.start(name, &[]);
    }
    net.trust("bob", "alice");
    net.trust("bob", "carol");
    let www = net.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from the namespace\n").unwrap();
    let one = HttpServer::start_in(Some(&ns.0), &www);
    let two = HttpServer::start_in(Some(&ns.0), &www);
    let ports = format!("{},{}", one.port, two.port);
    let v = net
        .ctl(
            "bob",
            &[
                "gateway", "start", "--ports", &ports, "alice", "carol", "--json",
            ],
        )
        .data();
    assert_eq!(v["subnet"], "10.4.0.0/16");
    assert_eq!(v["mappings"][0]["local_ip"], "10.4.0.1");
    assert_eq!(v["mappings"][1]["local_ip"], "10.4.0.3", "10.4.0.2 skipped");
    let addrs = ns.lo_addrs();
    assert!(
        addrs.contains("10.4.0.1/32") && addrs.contains("10.4.0.3/32"),
        "{addrs}"
    );
    let fetch = |ip: &str, port: u16| {
        let page = curl_in(&ns.0, &format!("http://{ip}:{port}/index.html"));
        assert_eq!(page, b"hello from the namespace\n");
    };
    for ip in ["10.4.0.1", "10.4.0.3"] {
        for port in [one.port, two.port] {
            fetch(ip, port);
        }
    }
    // Unmap and map while running; never onto another interface's address.
    net.ctl("bob", &["gateway", "unmap", "10.4.0.3", "--json"])
        .data();
    assert!(!ns.lo_addrs().contains("10.4.0.3/"), "{}", ns.lo_addrs());
    let run = net.ctl("bob", &["gateway", "map", "carol", "10.4.0.2", "--json"]);
    assert_eq!(run.error_code(), "already_exists");
    assert!(run.json()["message"]
        .as_str()
        .unwrap()
        .contains("interface"));
    net.ctl("bob", &["gateway", "map", "carol", "10.4.0.7", "--json"])
        .data();
    assert!(ns.lo_addrs().contains("10.4.0.7/32"));
    fetch("10.4.0.7", two.port);
    // Stop: no alias left, and the host's own loopback never changed.
    let stop = net.ctl("bob", &["gateway", "stop", "--json"]).data();
    assert_eq!(stop["removed"].as_array().unwrap().len(), 2);
    assert!(!ns.lo_addrs().contains("10.4."), "{}", ns.lo_addrs());
    assert_eq!(lo_addrs(None), host_before);

    // A crash leaves its alias behind; the next start removes it.
    net.ctl(
        "bob",
        &["gateway", "start", "--ports", &ports, "alice", "--json"],
    )
    .data();
    assert!(ns.lo_addrs().contains("10.4.0.1/32"));
    assert!(common::kill_pidfile(&net.home("bob").join("daemon.pid")).is_some());
    assert!(net.wait(10, || net.ctl("bob", &["info", "--json"]).code != 0));
    assert!(ns.lo_addrs().contains("10.4.0.1/32"), "the crash left it");
    net.restart("bob");
    assert!(!ns.lo_addrs().contains("10.4."), "{}", ns.lo_addrs());
    drop(net);
}

/// A TCP service on alice's side (127.0.0.1, a port of the kernel's
/// choice) that hands its first connection to `serve` on a thread.
fn service(serve: impl FnOnce(TcpStream) + Send + 'static) -> (u16, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let th = std::thread::spawn(move || {
        let (c, _) = l.accept().unwrap();
        serve(c)
    });
    (port, th)
}

/// A client of bob's gateway, with a bound on how long a read may block
/// (so that a bug fails the test instead of hanging it).
fn client(ip: &str, port: u16) -> TcpStream {
    let c = TcpStream::connect((ip, port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    c
}

#[test]
fn half_close_works_both_ways_through_both_daemons() {
    let Some(net) = pair() else {
        return;
    };
    // The client half-closes first: the service reads to the end, then
    // sends back everything it got, over the direction still open.
    let (first, echo) = service(|mut c| {
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(&got).unwrap();
    });
    // The service half-closes first: it says its piece, then reads what
    // the client sends until the client is done too.
    let greeting = noise(1 << 20);
    let said = greeting.clone();
    let (heard_tx, heard_rx) = std::sync::mpsc::channel();
    let (second, talker) = service(move |mut c| {
        c.write_all(&said).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        heard_tx.send(got).unwrap();
    });
    let ip = map_alice(&net, &[first, second]);

    let data = noise(8 << 20);
    let mut c = client(&ip, first);
    c.write_all(&data).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data), "the echo after a half-close");
    echo.join().unwrap();

    let mut c = client(&ip, second);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(
        sha256(&got),
        sha256(&greeting),
        "all of the greeting, then its end"
    );
    let reply = noise(4 << 20);
    c.write_all(&reply).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let heard = heard_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(
        sha256(&heard),
        sha256(&reply),
        "the reply after the service's half-close"
    );
    talker.join().unwrap();
}

/// Waits until `n` stops growing (unchanged for a second; at most a
/// minute) and answers it.
fn settled(n: &AtomicUsize) -> usize {
    let mut last = n.load(Ordering::SeqCst);
    let mut still = 0;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
        let now = n.load(Ordering::SeqCst);
        if now == last {
            still += 1;
            if still == 10 {
                break;
            }
        } else {
            (last, still) = (now, 0);
        }
    }
    last
}

/// Backpressure: a reader that stops reading holds the writer at the far
/// end back, across both daemons, in either direction; nothing is lost
/// once it reads again.
#[test]
fn a_reader_that_stops_holds_the_writer_back_both_ways() {
    const TOTAL: usize = 128 << 20;
    let Some(net) = pair() else {
        return;
    };
    let chunk = noise(64 << 10);
    let want: usize = chunk.iter().map(|b| *b as usize).sum::<usize>() * (TOTAL / chunk.len());
    // Service -> client: the service writes, the client does not read yet.
    let sent = Arc::new(AtomicUsize::new(0));
    let (out_port, writer) = {
        let (sent, chunk) = (sent.clone(), chunk.clone());
        service(move |mut c| {
            while sent.load(Ordering::SeqCst) < TOTAL {
                c.write_all(&chunk).unwrap();
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        })
    };
    // Client -> service: the service does not read until told.
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (sum_tx, sum_rx) = std::sync::mpsc::channel();
    let (in_port, reader) = service(move |mut c| {
        go_rx.recv().unwrap();
        let mut buf = vec![0u8; 256 << 10];
        let (mut n, mut sum) = (0, 0usize);
        loop {
            match c.read(&mut buf).unwrap() {
                0 => break,
                k => {
                    n += k;
                    sum += buf[..k].iter().map(|b| *b as usize).sum::<usize>();
                }
            }
        }
        sum_tx.send((n, sum)).unwrap();
    });
    let ip = map_alice(&net, &[out_port, in_port]);

    let mut down = client(&ip, out_port);
    let held = settled(&sent);
    assert!(
        held < TOTAL,
        "the service wrote all {TOTAL} bytes to a client that read nothing"
    );
    eprintln!("service -> client: held back after {} MiB", held >> 20);
    let (mut n, mut sum) = (0, 0usize);
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match down.read(&mut buf).unwrap() {
            0 => break,
            k => {
                n += k;
                sum += buf[..k].iter().map(|b| *b as usize).sum::<usize>();
            }
        }
    }
    assert_eq!((n, sum), (TOTAL, want), "everything arrived once read");
    writer.join().unwrap();

    let written = Arc::new(AtomicUsize::new(0));
    let up = {
        let (written, chunk) = (written.clone(), chunk.clone());
        let mut c = client(&ip, in_port);
        std::thread::spawn(move || {
            while written.load(Ordering::SeqCst) < TOTAL {
                c.write_all(&chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let held = settled(&written);
    assert!(
        held < TOTAL,
        "the client wrote all {TOTAL} bytes to a service that read nothing"
    );
    eprintln!("client -> service: held back after {} MiB", held >> 20);
    go_tx.send(()).unwrap();
    up.join().unwrap();
    let got = sum_rx.recv_timeout(Duration::from_secs(120)).unwrap();
    assert_eq!(got, (TOTAL, want), "everything arrived once read");
    reader.join().unwrap();
}

/// `bridge_ports` and `bridge_peers` (set with `config --set`, shown by
/// `info`, applied at once and kept for the next start) decide what
/// alice's daemon bridges; a service on `[::1]` only is reached too.
#[test]
fn the_bridge_settings_choose_what_alice_serves_and_ipv6_loopback_is_tried() {
    let Some(mut net) = pair() else {
        return;
    };
    let www = net.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "alice\n").unwrap();
    let v4 = HttpServer::start(&www);
    let v6 = HttpServer::start_on(None, "::1", &www);
    let ip = map_alice(&net, &[v4.port, v6.port]);
    let fetch = |port: u16| curl(&[&format!("http://{ip}:{port}/index.html")]);
    let served = |port: u16| {
        let (code, body, err) = fetch(port);
        assert_eq!(code, 0, "port {port}: {err}");
        assert_eq!(body, b"alice\n");
    };
    let refused = |port: u16| {
        let (code, _, err) = fetch(port);
        assert!(
            [7, 52, 56].contains(&code),
            "port {port}: curl should see the connection refused or reset, got {code}: {err}"
        );
    };
    served(v4.port);
    served(v6.port);
    assert!(v6.requests().contains("\"GET /index.html HTTP/1.1\" 200"));

    // An overlay application listening on the port comes first: the
    // stream goes to it, not to the local TCP service on the same port.
    let mut app = net.client("alice");
    app.listen(v4.port).unwrap();
    let fetching = {
        let url = format!("http://{ip}:{}/index.html", v4.port);
        std::thread::spawn(move || curl(&[&url]))
    };
    let stream = loop {
        match app.next_event(Duration::from_secs(30)).unwrap() {
            Some(driver_mio::ipc::api::Event::Incoming { stream, port, .. }) => {
                assert_eq!(port, v4.port);
                break stream;
            }
            Some(_) => continue,
            None => panic!("no stream reached the listening application"),
        }
    };
    app.write_stream(stream, b"HTTP/1.0 200 OK\r\n\r\nfrom the app\n")
        .unwrap();
    app.close_stream(stream).unwrap();
    let (code, body, err) = fetching.join().unwrap();
    assert_eq!(
        (code, body.as_slice()),
        (0, &b"from the app\n"[..]),
        "{err}"
    );
    app.unlisten(v4.port).unwrap();
    drop(app);
    served(v4.port);

    let policy = |net: &mut Net, set: &[&str]| -> serde_json::Value {
        let mut args = vec!["config"];
        for s in set {
            args.extend(["--set", s]);
        }
        args.push("--json");
        let v = net.ctl("alice", &args).data();
        assert_eq!(
            v["applied_live"].as_array().unwrap().len(),
            set.len(),
            "{v}"
        );
        net.ctl("alice", &["info", "--json"]).data()["bridge"].clone()
    };
    let only_v4 = format!("bridge_ports={}", v4.port);
    let b = policy(&mut net, &[&only_v4]);
    assert_eq!(b["ports"], v4.port.to_string());
    assert_eq!(b["peers"], "all");
    // The README sends the serving side to `pilotctl info` for these two.
    let shown = net.ctl("alice", &["info"]).stdout;
    let line = format!("Bridge:      ports {}, peers all", v4.port);
    assert!(shown.contains(&line), "{shown}");
    served(v4.port);
    refused(v6.port);

    let b = policy(&mut net, &["bridge_ports=all", "bridge_peers=carol"]);
    assert_eq!(
        (b["ports"].as_str(), b["peers"].as_str()),
        (Some("all"), Some("carol"))
    );
    refused(v4.port);

    let b = policy(&mut net, &["bridge_peers=bob"]);
    assert_eq!(b["peers"], "bob");
    served(v4.port);
    served(v6.port);

    let b = policy(&mut net, &["bridge_ports=none", "bridge_peers="]);
    assert_eq!(
        (b["ports"].as_str(), b["peers"].as_str()),
        (Some("none"), Some("all"))
    );
    refused(v4.port);

    // What the daemon is sent is checked there too; nothing changes.
    let mut c = net.client("alice");
    for (ports, peers) in [(Some("90-80"), None), (None, Some("Not A Peer"))] {
        let req = driver_mio::ipc::api::Request::SetBridge {
            ports: ports.map(str::to_string),
            peers: peers.map(str::to_string),
        };
        match c.request(req, Duration::from_secs(10)) {
            Err(driver_mio::client::ClientError::Remote { code, .. }) => {
                assert_eq!(code, "invalid_argument")
            }
            other => panic!("{ports:?} {peers:?}: {other:?}"),
        }
    }
    assert_eq!(
        net.ctl("alice", &["info", "--json"]).data()["bridge"]["ports"],
        "none"
    );

    // Saved too: the next start applies them. Started with none, the core
    // accepts no port at all; a live change opens the ports again.
    net.stop("alice");
    net.restart("alice");
    let b = net.ctl("alice", &["info", "--json"]).data()["bridge"].clone();
    assert_eq!(b["ports"], "none");
    assert_eq!(b["peers"], "all");
    refused(v4.port);
    policy(&mut net, &[&only_v4]);
    served(v4.port);
    refused(v6.port);
}

/// The daemon as an ordinary user (no CAP_NET_ADMIN, `setpriv` drops
/// root), in a namespace the test makes: an alias or a port below 1024
/// fails with the hint to use sudo or a 127.0.0.0/8 subnet, and the
/// rootless mode works. The answer of `gateway start` in text, too.
#[test]
fn without_root_the_gateway_says_to_use_sudo_or_127_and_the_rootless_mode_works() {
    if !have("python3", "--version")
        || !have("curl", "--version")
        || !have("ip", "-V")
        || !have("setpriv", "--version")
    {
        eprintln!("skipped: needs python3, curl, ip and setpriv");
        return;
    }
    let ns = match Netns::new() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("skipped: no network namespace ({why})");
            return;
        }
    };
    let mut net = Net::new_in(Some(&ns.0));
    net.start("alice", &[]);
    // bob's home belongs to nobody, who must be able to reach it.
    std::fs::set_permissions(net.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let home = net.home("bob");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    let as_nobody = |args: &[&str]| -> common::Run {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.0, "setpriv"])
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", common::PILOTCTL]);
        common::clean_env(&mut c)
            .args(args)
            .env("PILOT_HOME", &home);
        let out = c.output().expect("setpriv");
        common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let (rv, key) = (net.rv_addr.clone(), net.rv_key.clone());
    net.track("bob");
    as_nobody(&[
        "daemon",
        "start",
        "--rendezvous",
        &rv,
        "--rendezvous-key",
        &key,
        "--hostname",
        "bob",
        "--listen",
        "127.0.0.1:0",
        "--json",
    ])
    .data();
    let pid: u32 = std::fs::read_to_string(home.join("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "bob's daemon runs as nobody: {status}"
    );
    net.trust("bob", "alice");
    let www = net.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "served to nobody\n").unwrap();
    let server = HttpServer::start_in(Some(&ns.0), &www);
    let port = server.port.to_string();
    let root_hint = |run: &common::Run, what: &str| {
        assert_eq!(run.error_code(), "internal", "{}", run.stdout);
        let v = run.json();
        let (message, hint) = (v["message"].as_str().unwrap(), v["hint"].as_str().unwrap());
        assert!(message.contains(what), "{message}");
        assert!(
            hint.contains("sudo") && hint.contains("127.0.0.0/8"),
            "{hint}"
        );
    };

    // The default subnet needs an alias: refused, and none added.
    let run = as_nobody(&["gateway", "start", "--ports", &port, "alice", "--json"]);
    root_hint(&run, "cannot add the loopback alias 10.4.0.1");
    assert!(!ns.lo_addrs().contains("10.4."), "{}", ns.lo_addrs());
    // A port below 1024, even in 127.0.0.0/8.
    let run = as_nobody(&[
        "gateway", "start", "--subnet", SUBNET, "--ports", "80", "alice", "--json",
    ]);
    root_hint(&run, "permission denied");
    // In text, the error says the same.
    let run = as_nobody(&["gateway", "start", "--ports", &port, "alice"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("sudo") || run.stdout.contains("sudo"),
        "{} {}",
        run.stdout,
        run.stderr
    );
    // Nothing is left running after those failures.
    assert_eq!(
        as_nobody(&["gateway", "list", "--json"]).error_code(),
        "not_found"
    );

    // The rootless mode: 127.0.0.0/8, a port from 1024. The answer in text
    // names the daemon's pid, the subnet and the mapping.
    let alice = net.ctl("alice", &["info", "--json"]).data()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let run = as_nobody(&[
        "gateway", "start", "--subnet", SUBNET, "--ports", &port, "alice",
    ]);
    assert_eq!(run.code, 0, "{} {}", run.stdout, run.stderr);
    for want in [
        format!("(pid {pid})"),
        format!("Subnet: {SUBNET}"),
        format!("127.77.0.1 -> {alice}"),
    ] {
        assert!(run.stdout.contains(&want), "{want} in {}", run.stdout);
    }
    let page = curl_in(&ns.0, &format!("http://127.77.0.1:{port}/index.html"));
    assert_eq!(page, b"served to nobody\n");
    let list = as_nobody(&["gateway", "list", "--json"]).data();
    assert_eq!(list["pid"], pid);
    assert_eq!(list["mappings"][0]["pilot_addr"], alice.as_str());
    as_nobody(&["gateway", "stop", "--json"]).data();
    drop(net);
}

const NOBODY: u32 = 65534;
