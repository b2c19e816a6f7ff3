//! `pilot-daemon` is `pilotctl daemon start --foreground` under its own
//! name, and takes the original's Go-style flags; `pilotctl rendezvous`
//! has the defaults `pilot-rendezvous` has (its own tests check that
//! side).

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use common::{clean_env, Net};

mod common;

const PILOT_DAEMON: &str = env!("CARGO_BIN_EXE_pilot-daemon");

fn output(program: &str, args: &[&str]) -> String {
    let out = clean_env(&mut Command::new(program))
        .args(args)
        .output()
        .expect("run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The long options a help text lists, with their defaults.
fn options(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("--"))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap_or_default();
            let default = l
                .split_once("[default: ")
                .map(|(_, d)| d.trim_end_matches(']'))
                .unwrap_or("");
            format!("{name} {default}")
        })
        .collect()
}

#[test]
fn pilot_daemon_speaks_as_itself() {
    let help = output(PILOT_DAEMON, &["--help"]);
    assert!(help.contains("Usage: pilot-daemon [OPTIONS]"), "{help}");
    assert!(!help.contains("pilotctl daemon start ["), "{help}");
    let version = output(PILOT_DAEMON, &["--version"]);
    assert_eq!(
        version.trim(),
        format!("pilot-daemon {}", env!("CARGO_PKG_VERSION"))
    );
    // Go style.
    assert_eq!(output(PILOT_DAEMON, &["-version"]).trim(), version.trim());
}

#[test]
fn pilot_daemon_takes_the_flags_of_daemon_start() {
    let standalone = options(&output(PILOT_DAEMON, &["-h"]));
    let pilotctl = options(&output(common::PILOTCTL, &["daemon", "start", "-h"]));
    let only_pilotctl: Vec<_> = pilotctl.difference(&standalone).collect();
    // In the foreground already; nothing to wait for.
    assert!(
        only_pilotctl
            .iter()
            .all(|o| o.starts_with("--foreground") || o.starts_with("--wait")),
        "{only_pilotctl:?}"
    );
    assert!(standalone.contains("--rendezvous "), "{standalone:?}");
}

/// Kills the child if the test fails before it stops.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pilot_daemon_runs_with_go_style_flags() {
    let mut net = Net::new();
    let home = net.home("g");
    std::fs::create_dir_all(&home).unwrap();
    let socket = net.dir.path().join("shared.sock");
    net.track("g");
    let child = clean_env(&mut Command::new(PILOT_DAEMON))
        .env("PILOT_HOME", &home)
        .args([
            &format!("-rendezvous={}", net.rv_addr),
            "-rendezvous-key",
            &net.rv_key,
            "-listen=127.0.0.1:0",
            "-hostname",
            "gopher",
            "-public",
            "-socket",
            socket.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pilot-daemon");
    let mut child = Running(child);
    let mut info = serde_json::Value::Null;
    let registered = net.wait(20, || {
        // Found through the socket given with -socket.
        let run = common::pilotctl(
            &["info", "--json"],
            &[("PILOT_SOCKET", socket.to_str().unwrap())],
        );
        if run.code != 0 {
            return false;
        }
        info = run.data();
        info["registered"] == true
    });
    assert!(registered, "{info}");
    assert_eq!(info["hostname"], "gopher");
    // -public and the rest were saved like `daemon start` saves them.
    let config = net.ctl("g", &["config", "--json"]).data();
    assert_eq!(config["settings"]["public"], true, "{config}");
    assert_eq!(config["settings"]["hostname"], "gopher", "{config}");
    // Stopped like any daemon.
    net.ctl("g", &["daemon", "stop", "--json"]).data();
    let status = child.0.wait().expect("exit");
    assert!(status.success(), "{status}");
}

#[test]
fn rendezvous_defaults_are_pilot_rendezvous_defaults() {
    let help = output(common::PILOTCTL, &["rendezvous", "run", "--help"]);
    assert!(
        help.contains(&format!(
            "[default: {}]",
            driver_mio::rendezvous::DEFAULT_LISTEN
        )),
        "{help}"
    );
    assert!(help.contains("$PILOT_HOME/rendezvous"), "{help}");
    for flag in ["--network", "--refresh-secs", "--ttl-secs", "--log-level"] {
        assert!(help.contains(flag), "{flag}: {help}");
    }
}
