//! `pilotctl demo` as a user runs it: every step passes, and nothing is
//! left behind, also when interrupted.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::PILOTCTL;

fn demo() -> Command {
    let mut c = Command::new(PILOTCTL);
    common::clean_env(&mut c).arg("demo");
    c
}

fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Waits (bounded) until the process is gone.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !driver_mio::fsutil::pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn demo_runs_every_step_and_cleans_up() {
    let out = demo().arg("--json").output().expect("run demo");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["status"], "ok", "{v}");
    assert_eq!(out.status.code(), Some(0));
    let data = &v["data"];
    let steps = data["steps"].as_array().expect("steps");
    for s in steps {
        assert_eq!(s["ok"], true, "step failed: {s}");
        assert!(s["command"].as_str().unwrap().starts_with("pilotctl "));
        assert!(s["ms"].as_f64().unwrap() >= 0.0);
    }
    let titles: Vec<&str> = steps.iter().map(|s| s["title"].as_str().unwrap()).collect();
    for want in [
        "rendezvous",
        "alice",
        "bob",
        "finds",
        "trust",
        "approves",
        "pings",
        "message",
        "inbox",
        "file",
        "received",
        "events",
        "web page",
        "gateway",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no step about {want}: {titles:?}"
        );
    }
    let result = |title: &str| {
        steps
            .iter()
            .find(|s| s["title"].as_str().unwrap().contains(title))
            .map(|s| s["result"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(result("inbox").contains("hello alice"));
    assert!(result("received").contains("identical"));
    assert!(result("events").contains("all systems go"));
    let page = result("web page on port 80");
    assert!(
        page.contains("200 OK") && page.contains("Hello from alice"),
        "{page}"
    );
    let gateway = steps.last().unwrap()["result"].as_str().unwrap();
    assert!(
        gateway.contains("127.77.0.1") && gateway.contains("Hello from alice"),
        "{gateway}"
    );
    let dir = PathBuf::from(data["dir"].as_str().unwrap());
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// A demo started in the background, stopped once both agents run: the
/// child, the rest of its output, its directory and the pids of the
/// rendezvous and both daemons.
struct Midway {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    dir: PathBuf,
    pids: Vec<u32>,
}

fn demo_midway() -> Midway {
    let mut child = demo()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn demo");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // The first line names the directory; wait until both agents run.
    let mut dir = None;
    let mut seen = Vec::new();
    let mut bob_started = false;
    for line in lines.by_ref() {
        let line = line.expect("read demo output");
        if dir.is_none() {
            if let Some(p) = line.split_whitespace().find(|w| w.contains("pilot-demo-")) {
                dir = Some(PathBuf::from(p));
            }
        }
        let done = line.trim_start().starts_with("ok ");
        seen.push(line);
        if done && seen.iter().any(|l| l.contains("start agent bob")) {
            bob_started = true;
            break;
        }
    }
    assert!(bob_started, "demo output: {seen:#?}");
    let dir = dir.expect("the demo names its directory");
    let pids: Vec<u32> = [
        "alice/daemon.pid",
        "bob/daemon.pid",
        "rendezvous/rendezvous.pid",
    ]
    .iter()
    .filter_map(|p| pid_in(&dir.join(p)))
    .collect();
    assert_eq!(pids.len(), 3, "pid files in {}", dir.display());
    Midway {
        child,
        lines,
        dir,
        pids,
    }
}

/// Issue 10, item 15: `kill -9` of the demo, which then cannot clean up:
/// its rendezvous and daemons see the demo's pipe close and stop by
/// themselves (they ran on, forever).
#[test]
fn demo_killed_leaves_nothing_running() {
    let Midway {
        mut child,
        dir,
        pids,
        ..
    } = demo_midway();
    child.kill().expect("SIGKILL the demo");
    child.wait().expect("demo reaped");
    let alive: Vec<u32> = pids.iter().copied().filter(|p| !gone(*p)).collect();
    for pid in &alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        alive.is_empty(),
        "still running after kill -9 of the demo: {alive:?}"
    );
}

/// Ctrl-C in the middle: the demo stops what it started, removes its
/// directory and says it was interrupted.
#[test]
fn demo_interrupted_cleans_up() {
    let Midway {
        mut child,
        lines,
        dir,
        pids,
    } = demo_midway();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("signal demo");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("demo exits");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "stdout after: {rest:#?}\nstderr: {err}"
    );
    assert!(err.contains("interrupted"), "{err}");
    for pid in pids {
        assert!(
            gone(pid),
            "process {pid} still runs after the interrupted demo"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
