//! The gateway with real TCP clients: curl and headless Chromium on bob's
//! side reach `python3 -m http.server` on alice's, through both daemons.
//! Everything runs on loopback in the rootless mode (a subnet inside
//! 127.0.0.0/8, ports from 1024: no alias, no root). Tests whose tool is
//! missing say so and pass.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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
/// serving `dir`; its request log goes to `dir/../http.log`. Killed on drop.
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
        let log = dir.with_file_name("http.log");
        let mut child = in_netns(netns, "python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
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

fn lab(fill: impl FnOnce(&Path)) -> Option<Lab> {
    if !have("python3", "--version") || !have("curl", "--version") {
        eprintln!("skipped: needs python3 and curl (installed by .ci/run)");
        return None;
    }
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("bob", "alice");
    let www = net.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    fill(&www);
    let server = HttpServer::start(&www);
    let port = server.port.to_string();
    let v = net
        .ctl(
            "bob",
            &[
                "gateway", "start", "--subnet", SUBNET, "--ports", &port, "alice", "--json",
            ],
        )
        .data();
    let ip = v["mappings"][0]["local_ip"].as_str().unwrap().to_string();
    assert_eq!(ip, "127.77.0.1", "the first address of the subnet: {v}");
    Some(Lab {
        base: format!("http://{ip}:{port}"),
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
        let name = format!("pgw{}", std::process::id());
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
    assert_eq!(v["mappings"][1]["local_ip"], "10.4.0.2");
    let addrs = ns.lo_addrs();
    assert!(
        addrs.contains("10.4.0.1/32") && addrs.contains("10.4.0.2/32"),
        "{addrs}"
    );
    let fetch = |ip: &str, port: u16| {
        let out = in_netns(Some(&ns.0), "curl")
            .args(["-sS", "--max-time", "60"])
            .arg(format!("http://{ip}:{port}/index.html"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{ip}:{port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"hello from the namespace\n");
    };
    for ip in ["10.4.0.1", "10.4.0.2"] {
        for port in [one.port, two.port] {
            fetch(ip, port);
        }
    }
    // Unmap and map while running.
    net.ctl("bob", &["gateway", "unmap", "10.4.0.2", "--json"])
        .data();
    assert!(!ns.lo_addrs().contains("10.4.0.2/"), "{}", ns.lo_addrs());
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
