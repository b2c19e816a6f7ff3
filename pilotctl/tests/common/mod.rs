//! Real processes on loopback: a rendezvous and daemons started with the
//! built `pilotctl`, each with its own temporary home. Everything is
//! stopped when the test's `Net` is dropped, also on failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub mod carrier;

use driver_mio::client::Client;
use driver_mio::ipc::api::Request;
use serde_json::Value;

pub const PILOTCTL: &str = env!("CARGO_BIN_EXE_pilotctl");

/// The result of one pilotctl run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON answer (with `--json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("not JSON ({e}): {:?}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    /// The `data` of a successful JSON answer.
    pub fn data(&self) -> Value {
        let v = self.json();
        assert_eq!(
            v["status"], "ok",
            "expected success: {v}\nstderr: {}",
            self.stderr
        );
        v["data"].clone()
    }

    /// The error code of a failed JSON answer.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["status"], "error", "expected an error: {v}");
        assert_ne!(self.code, 0, "errors exit non-zero");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(v["hint"].is_string());
        v["code"].as_str().unwrap_or_default().to_string()
    }
}

fn finish(out: Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A rendezvous and some agents, all under one temporary directory.
pub struct Net {
    pub dir: tempfile::TempDir,
    pub rv_addr: String,
    pub rv_key: String,
    pub rv_home: PathBuf,
    pub rv_pid: u64,
    /// The compat carrier's TCP address and certificate fingerprint, when
    /// the rendezvous was started with `--tls-listen`.
    pub rv_tls: Option<(String, String)>,
    agents: Vec<PathBuf>,
    /// The network namespace every process runs in (`ip netns exec`), or
    /// the host's own.
    netns: Option<String>,
}

impl Net {
    /// Starts a rendezvous on 127.0.0.1 (any port).
    pub fn new() -> Net {
        Net::new_in(None)
    }

    /// The same inside network namespace `netns` (which the test made):
    /// the rendezvous and every daemon run there; their IPC sockets are
    /// files, so they are driven from anywhere.
    pub fn new_in(netns: Option<&str>) -> Net {
        Net::with_rendezvous(netns, "127.0.0.1:0", &[])
    }

    /// A rendezvous on `listen` with extra flags (`--tls-listen`, say).
    pub fn with_rendezvous(netns: Option<&str>, listen: &str, extra: &[&str]) -> Net {
        let dir = tempfile::Builder::new()
            .prefix("pt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let rv_home = dir.path().join("rv");
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let data = rendezvous_start_in(netns, listen, &rv_home, &args).data();
        let rv_tls = data["tls_address"].as_str().map(|a| {
            (
                a.to_string(),
                data["tls_fingerprint"]
                    .as_str()
                    .expect("fingerprint")
                    .to_string(),
            )
        });
        Net {
            rv_tls,
            rv_addr: data["address"].as_str().expect("address").to_string(),
            rv_key: data["public_key"].as_str().expect("key").to_string(),
            rv_pid: data["pid"].as_u64().unwrap_or(0),
            rv_home,
            dir,
            agents: Vec::new(),
            netns: netns.map(str::to_string),
        }
    }

    /// The home of agent `name`.
    pub fn home(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// pilotctl as agent `name` (PILOT_HOME set).
    pub fn ctl(&self, name: &str, args: &[&str]) -> Run {
        let home = self.home(name);
        pilotctl_in(
            self.netns.as_deref(),
            args,
            &[("PILOT_HOME", home.to_str().unwrap())],
        )
    }

    /// Starts agent `name` (hostname `name`) and waits for registration.
    pub fn start(&mut self, name: &str, extra: &[&str]) -> Value {
        let mut args = vec!["--hostname", name, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        self.daemon_start(name, &args).data()
    }

    /// `daemon start --rendezvous … --rendezvous-key … EXTRA --json` as
    /// agent `name`, answered as it is; whatever it starts is stopped
    /// with the rest.
    pub fn daemon_start(&mut self, name: &str, extra: &[&str]) -> Run {
        let rv_addr = self.rv_addr.clone();
        self.daemon_start_at(name, &rv_addr, extra)
    }

    /// [`Net::daemon_start`] with another rendezvous address (one that
    /// does not answer, say).
    pub fn daemon_start_at(&mut self, name: &str, rv_addr: &str, extra: &[&str]) -> Run {
        let rv_key = self.rv_key.clone();
        let mut args = vec![
            "daemon",
            "start",
            "--rendezvous",
            rv_addr,
            "--rendezvous-key",
            &rv_key,
        ];
        args.extend_from_slice(extra);
        args.push("--json");
        self.track(name);
        self.ctl(name, &args)
    }

    /// Stops agent `name`'s daemon.
    pub fn stop(&mut self, name: &str) {
        let home = self.home(name);
        let _ = pilotctl(
            &["daemon", "stop", "--json"],
            &[("PILOT_HOME", home.to_str().unwrap())],
        );
        self.agents.retain(|h| *h != home);
    }

    /// Starts agent `name` again from its saved settings (`daemon start`
    /// without flags) and waits for registration.
    pub fn restart(&mut self, name: &str) -> Value {
        self.restart_with(name, &[])
    }

    /// [`Net::restart`] with flags that change the saved settings.
    pub fn restart_with(&mut self, name: &str, flags: &[&str]) -> Value {
        let mut args = vec!["daemon", "start"];
        args.extend_from_slice(flags);
        args.push("--json");
        self.track(name);
        self.ctl(name, &args).data()
    }

    /// Agent `name`'s daemon, if one runs, is stopped when the `Net` goes
    /// (also when the test fails before it says so).
    pub fn track(&mut self, name: &str) {
        if !self.agents.contains(&self.home(name)) {
            self.agents.push(self.home(name));
        }
    }

    /// A client connected to agent `name`'s daemon.
    pub fn client(&self, name: &str) -> Client {
        Client::connect(self.home(name).join("pilot.sock")).expect("daemon socket")
    }

    /// Waits until `f` holds or `secs` pass.
    pub fn wait(&self, secs: u64, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Has `a` ask `b` for trust and `b` approve; waits for both.
    pub fn trust(&self, a: &str, b: &str) {
        let mut ca = self.client(a);
        let mut cb = self.client(b);
        let t = Duration::from_secs(10);
        // By address: a private agent's hostname names nobody to others.
        let b_addr = cb.request(Request::Info, t).expect("info")["address"]
            .as_str()
            .expect("registered")
            .to_string();
        ca.request(
            Request::Handshake {
                peer: b_addr,
                reason: "test".into(),
            },
            t,
        )
        .expect("handshake");
        assert!(self.wait(10, || {
            cb.request(Request::Pending, t)
                .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false)
        }));
        cb.request(Request::Approve { node: a.into() }, t)
            .expect("approve");
        assert!(self.wait(10, || {
            ca.request(Request::Trusted, t)
                .map(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                .unwrap_or(false)
        }));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for home in &self.agents {
            let _ = pilotctl(
                &["daemon", "stop", "--json"],
                &[("PILOT_HOME", home.to_str().unwrap())],
            );
            kill_pidfile(&home.join("daemon.pid"));
        }
        let _ = pilotctl(
            &[
                "rendezvous",
                "stop",
                "--home",
                self.rv_home.to_str().unwrap(),
                "--json",
            ],
            &[],
        );
        kill_pidfile(&self.rv_home.join("rendezvous.pid"));
    }
}

/// `rendezvous start --listen LISTEN --home HOME EXTRA`, answered as it is.
pub fn rendezvous_start(listen: &str, home: &Path, extra: &[&str]) -> Run {
    rendezvous_start_in(None, listen, home, extra)
}

/// `rendezvous start` like [`rendezvous_start`], inside network namespace
/// `netns` if any.
pub fn rendezvous_start_in(netns: Option<&str>, listen: &str, home: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "rendezvous",
        "start",
        "--listen",
        listen,
        "--home",
        home.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    pilotctl_in(netns, &args, &[])
}

/// SIGKILLs whatever a pid file names (cleanup of last resort); returns
/// the pid signalled.
pub fn kill_pidfile(path: &Path) -> Option<u32> {
    let pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|pid| *pid > 0 && i32::try_from(*pid).is_ok())?;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    Some(pid)
}

/// Keeps the agent settings of whoever runs the tests (PILOT_HOME,
/// PILOT_SOCKET, PILOT_RENDEZVOUS, PILOT_RENDEZVOUS_KEY) away from a
/// child pilotctl: each test says what its children use.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for k in [
        "PILOT_HOME",
        "PILOT_SOCKET",
        "PILOT_RENDEZVOUS",
        "PILOT_RENDEZVOUS_KEY",
        "PILOT_TRANSPORT",
        "PILOT_AUTO_RETRY_UDP_SECS",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        cmd.env_remove(k);
    }
    cmd
}

/// Runs pilotctl with `args` and extra environment.
pub fn pilotctl(args: &[&str], env: &[(&str, &str)]) -> Run {
    pilotctl_in(None, args, env)
}

/// `command` as run inside network namespace `netns`, if any.
pub fn in_netns(netns: Option<&str>, program: &str) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// Runs pilotctl inside network namespace `netns` (if any).
pub fn pilotctl_in(netns: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = in_netns(netns, PILOTCTL);
    clean_env(&mut cmd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(cmd.output().expect("run pilotctl"))
}
