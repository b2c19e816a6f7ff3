//! `pilot-rendezvous` is `pilotctl rendezvous run` as a program of its
//! own: the same defaults, home, log file and environment, under its own
//! name.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_pilot-rendezvous");

fn command() -> Command {
    let mut c = Command::new(BIN);
    for k in ["PILOT_HOME", "PILOT_LOG", "RUST_LOG"] {
        c.env_remove(k);
    }
    c
}

#[test]
fn help_and_version_name_pilot_rendezvous_and_its_defaults() {
    let out = command().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: pilot-rendezvous"), "{help}");
    assert!(help.contains("[default: 0.0.0.0:4000]"), "{help}");
    assert_eq!(driver_mio::rendezvous::DEFAULT_LISTEN, "0.0.0.0:4000");
    assert!(help.contains("$PILOT_HOME/rendezvous"), "{help}");
    assert!(help.contains("$PILOT_LOG"), "{help}");
    assert!(!help.contains("RUST_LOG"), "{help}");
    let out = command().arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pilot-rendezvous {}", env!("CARGO_PKG_VERSION"))
    );
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
fn its_home_is_pilot_home_rendezvous_with_pilot_log() {
    let dir = tempfile::tempdir().unwrap();
    let child = command()
        .env("PILOT_HOME", dir.path())
        .env("PILOT_LOG", "debug")
        .args(["--listen", "127.0.0.1:0", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    let home = dir.path().join("rendezvous");
    assert_eq!(v["data"]["home"], home.display().to_string(), "{v}");
    assert!(home.join(driver_mio::rendezvous::KEY_FILE).exists());
    // The log file `pilotctl rendezvous run` writes, at PILOT_LOG's level.
    let log = std::fs::read_to_string(home.join("pilot.log")).unwrap_or_default();
    assert!(log.contains("DEBUG") || log.contains("INFO"), "{log}");
}

#[test]
fn a_bad_reflect_port_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--reflect-port",
            "lots",
            "--json",
        ])
        .arg("--home")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON error object");
    assert_eq!(v["code"], "invalid_argument", "{v}");
    assert!(v["hint"].as_str().unwrap().contains("auto"), "{v}");
}
