//! `pilotctl demo`: Pilot end to end on one machine, with nothing
//! configured. A rendezvous and two agents (alice, bob) start on
//! 127.0.0.1 under a temporary directory; they find each other, shake
//! hands, approve, ping, exchange a message, a file and an event, and bob
//! fetches a small web page that alice serves on port 80 of the overlay,
//! then again from her plain local web server through the gateway, with
//! curl.
//! Every step is the `pilotctl` command a user would type, run as a child
//! process, and is printed with what it answered and how long it took
//! (only alice's little web server runs inside the demo itself, on her
//! daemon's IPC, as an application would).
//! Everything is stopped and removed at the end, on failure, and on
//! Ctrl-C.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use driver_mio::client::Client;
use driver_mio::ipc::api::Event;
use serde_json::{json, Value};

use super::CommandDoc;
use crate::output::{Failure, Success};

/// Prints a line of the story. A reader that went away (`demo | head`)
/// does not stop the demo halfway: it still cleans up.
macro_rules! out {
    ($($t:tt)*) => {
        let _ = crate::output::print_line(format_args!($($t)*));
    };
}

/// What `context` says of `demo`.
pub const DOCS: &[CommandDoc] = &[CommandDoc {
    name: "demo",
    returns: r#"{"dir":"string","steps":[{"step":"number","title":"string","agent":"string|null","command":"string","ok":"bool","ms":"number","result":"string"}],"total_ms":"number","kept":"bool"}"#,
    errors: &["interrupted", "timeout", "connection_failed"],
}];

/// How to run the demo.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Leave the rendezvous and agents running at the end (prints how to
    /// reach them and how to stop them) instead of cleaning up.
    #[arg(long)]
    pub keep: bool,
    /// Seconds any one step may take.
    #[arg(long, default_value_t = 20)]
    pub step_timeout: u64,
}

/// The page alice serves.
const PAGE: &str = "<!doctype html>\n<title>Pilot</title>\n<h1>Hello from alice, over Pilot</h1>\n";

/// A demo in progress: what to clean up, what happened so far.
struct Demo {
    exe: PathBuf,
    dir: PathBuf,
    rv_home: PathBuf,
    /// Homes of the agents whose daemon may be running.
    agents: Vec<PathBuf>,
    rv_started: bool,
    json: bool,
    keep: bool,
    step_timeout: Duration,
    steps: Vec<Value>,
    started: Instant,
    interrupted: Arc<AtomicBool>,
    /// Without --keep: the pipe whose read end every child inherits, so
    /// that the rendezvous and daemons stop by themselves if the demo is
    /// killed before it can stop them (kill -9).
    parent_pipe: Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
}

/// The JSON answer of a child `pilotctl`, or its failure.
fn answer(out: &std::process::Output) -> Result<Value, Failure> {
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(text.trim()).map_err(|_| {
        Failure::new(
            "internal",
            format!(
                "pilotctl answered something that is not JSON: {}{}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            "",
        )
    })?;
    if v["status"] == "ok" {
        return Ok(v["data"].clone());
    }
    Err(failure_of(&v))
}

/// A child's JSON error object as a failure.
fn failure_of(v: &Value) -> Failure {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    Failure::new(
        v["code"].as_str().unwrap_or("internal"),
        match s("message") {
            m if m.is_empty() => "the command failed".to_string(),
            m => m,
        },
        s("hint"),
    )
}

/// Shell-style display of arguments (quoted where needed; `$'..'` with
/// escapes for control characters, as bash reads them).
fn shown(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars().any(char::is_control) {
                let inner: String = a
                    .chars()
                    .map(|c| match c {
                        '\r' => "\\r".to_string(),
                        '\n' => "\\n".to_string(),
                        '\t' => "\\t".to_string(),
                        '\'' => "\\'".to_string(),
                        '\\' => "\\\\".to_string(),
                        c if c.is_control() => format!("\\x{:02x}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                format!("$'{inner}'")
            } else if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:/=@".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn short_key(k: &str) -> String {
    if k.len() > 16 {
        format!("{}…", &k[..16])
    } else {
        k.to_string()
    }
}

impl Demo {
    fn home(&self, agent: &str) -> PathBuf {
        self.dir.join(agent)
    }

    fn check_interrupt(&self) -> Result<(), Failure> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Failure::new(
                "interrupted",
                "the demo was interrupted",
                "everything it started has been stopped and removed",
            ));
        }
        Ok(())
    }

    /// `pilotctl <args> --json` for the agent whose home is `home` (None:
    /// none), untouched by the caller's PILOT_* environment.
    fn command(&self, home: Option<&Path>, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args).arg("--json").stdin(Stdio::null());
        for k in [
            "PILOT_HOME",
            "PILOT_SOCKET",
            "PILOT_RENDEZVOUS",
            "PILOT_RENDEZVOUS_KEY",
        ] {
            cmd.env_remove(k);
        }
        if let Some(h) = home {
            cmd.env("PILOT_HOME", h);
        }
        if let Some((read, _)) = &self.parent_pipe {
            use std::os::fd::AsRawFd;
            cmd.env(super::detach::PARENT_PIPE, read.as_raw_fd().to_string());
        }
        cmd
    }

    /// Runs `pilotctl <args> --json` as `agent` (None: no agent home).
    fn ctl(&self, agent: Option<&str>, args: &[&str]) -> Result<Value, Failure> {
        let home = agent.map(|a| self.home(a));
        let out = self.command(home.as_deref(), args).output().map_err(|e| {
            Failure::new(
                "internal",
                format!("cannot run {}: {e}", self.exe.display()),
                "",
            )
        })?;
        self.check_interrupt()?;
        answer(&out)
    }

    /// Repeats `ctl` until `done` accepts its answer or the step's time is up.
    fn ctl_until(
        &self,
        agent: Option<&str>,
        args: &[&str],
        what: &str,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Result<Value, Failure> {
        let deadline = Instant::now() + self.step_timeout;
        loop {
            let v = self.ctl(agent, args)?;
            if done(&v) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    "timeout",
                    format!("{what} did not happen within {:?}", self.step_timeout),
                    "see the agents' logs (pilot.log in their homes, kept with --keep)",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs one step: prints its command, times it, prints its outcome.
    fn step(
        &mut self,
        title: &str,
        agent: Option<&str>,
        args: &[&str],
        run: impl FnOnce(&mut Self) -> Result<String, Failure>,
    ) -> Result<(), Failure> {
        self.step_after(title, &[], agent, args, run)
    }

    /// A step whose command follows others started in the background
    /// (`before`: agent and command line, shown with a trailing `&`).
    fn step_after(
        &mut self,
        title: &str,
        before: &[(&str, &[&str])],
        agent: Option<&str>,
        args: &[&str],
        run: impl FnOnce(&mut Self) -> Result<String, Failure>,
    ) -> Result<(), Failure> {
        self.check_interrupt()?;
        let n = self.steps.len() + 1;
        let command = format!("pilotctl {}", shown(args));
        let prompt = agent.unwrap_or("you");
        if !self.json {
            out!("\n{n:>2}. {title}");
            for (who, cmd) in before {
                out!("    {who}$ pilotctl {} &", shown(cmd));
            }
            out!("    {prompt}$ {command}");
            let _ = std::io::stdout().flush();
        }
        let t = Instant::now();
        let outcome = run(self);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (ok, result) = match &outcome {
            Ok(r) => (true, r.clone()),
            Err(f) if f.hint.is_empty() => (false, format!("{}: {}", f.code, f.message)),
            Err(f) => (
                false,
                format!("{}: {}\nhint: {}", f.code, f.message, f.hint),
            ),
        };
        if !self.json {
            for line in result.lines() {
                out!("    {line}");
            }
            out!("    {} {ms:.0} ms", if ok { "ok" } else { "FAILED" });
        }
        self.steps.push(json!({
            "step": n, "title": title, "agent": agent, "command": command,
            "ok": ok, "ms": (ms * 10.0).round() / 10.0, "result": result,
        }));
        outcome.map(|_| ()).map_err(|f| {
            Failure::new(
                &f.code,
                format!("step {n} ({title}) failed: {}", f.message),
                f.hint,
            )
        })
    }

    fn start_agent(&mut self, name: &str, rv: &str, key: &str) -> Result<(), Failure> {
        let args = [
            "daemon",
            "start",
            "--rendezvous",
            rv,
            "--rendezvous-key",
            key,
            "--hostname",
            name,
            "--public",
            "--listen",
            "127.0.0.1:0",
        ];
        let home = self.home(name);
        self.step(&format!("start agent {name}"), Some(name), &args, |d| {
            d.agents.push(home);
            let v = d.ctl(Some(name), &args)?;
            Ok(format!(
                "address {}, hostname {name}, public (findable by anyone)",
                v["address"].as_str().unwrap_or("?")
            ))
        })
    }

    fn run(&mut self) -> Result<(), Failure> {
        let rv_home = self.rv_home.to_string_lossy().into_owned();
        let rv_args = [
            "rendezvous",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--home",
            &rv_home,
        ];
        let mut rv = (String::new(), String::new());
        self.step(
            "start a rendezvous (registry + beacon)",
            None,
            &rv_args,
            |d| {
                d.rv_started = true;
                let v = d.ctl(None, &rv_args)?;
                rv = (
                    v["address"].as_str().unwrap_or_default().to_string(),
                    v["public_key"].as_str().unwrap_or_default().to_string(),
                );
                Ok(format!(
                    "listening on {}, public key {}",
                    rv.0,
                    short_key(&rv.1)
                ))
            },
        )?;
        let (rv_addr, rv_key) = rv;
        self.start_agent("alice", &rv_addr, &rv_key)?;
        self.start_agent("bob", &rv_addr, &rv_key)?;

        let mut alice_addr = String::new();
        self.step(
            "bob finds alice by hostname",
            Some("bob"),
            &["find", "alice"],
            |d| {
                let v = d.ctl(Some("bob"), &["find", "alice"])?;
                alice_addr = v["address"].as_str().unwrap_or_default().to_string();
                Ok(format!(
                    "alice is {alice_addr}, key fingerprint {}",
                    v["fingerprint"].as_str().unwrap_or("?")
                ))
            },
        )?;

        let hs = ["handshake", "alice", "pilot demo: may I talk to you?"];
        self.step("bob asks alice for trust", Some("bob"), &hs, |d| {
            d.ctl(Some("bob"), &hs)?;
            Ok("request signed by bob's key, relayed by the rendezvous".into())
        })?;

        self.step("alice sees the request", Some("alice"), &["pending"], |d| {
            let v = d.ctl_until(Some("alice"), &["pending"], "bob's request", |v| {
                v.as_array().is_some_and(|a| !a.is_empty())
            })?;
            let r = &v[0];
            Ok(format!(
                "from {} ({}), fingerprint {}: \"{}\"",
                r["node"].as_str().unwrap_or("?"),
                r["hostname"].as_str().unwrap_or("-"),
                r["fingerprint"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("")
            ))
        })?;

        self.step(
            "alice approves bob",
            Some("alice"),
            &["approve", "bob"],
            |d| {
                d.ctl(Some("alice"), &["approve", "bob"])?;
                Ok("approved; both signatures are now on record".into())
            },
        )?;

        self.step("bob now trusts alice", Some("bob"), &["trust"], |d| {
            let v = d.ctl_until(Some("bob"), &["trust"], "bob trusting alice", |v| {
                v.as_array()
                    .is_some_and(|a| a.iter().any(|p| p["hostname"] == "alice"))
            })?;
            let p = v
                .as_array()
                .and_then(|a| a.iter().find(|p| p["hostname"] == "alice"))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(format!(
                "trusted: {} (alice), fingerprint {}",
                p["node"].as_str().unwrap_or("?"),
                p["fingerprint"].as_str().unwrap_or("?")
            ))
        })?;

        let ping = ["ping", "alice", "--count", "3"];
        self.step(
            "bob pings alice through her echo service",
            Some("bob"),
            &ping,
            |d| {
                let v = d.ctl(Some("bob"), &ping)?;
                Ok(format!(
                    "{}/{} echoes, median round trip {:.2} ms",
                    v["received"],
                    v["sent"],
                    v["rtt_ms"]["median"].as_f64().unwrap_or(0.0)
                ))
            },
        )?;

        self.message_steps()?;
        self.event_step()?;
        self.http_step()?;
        self.gateway_step()?;
        Ok(())
    }

    /// A message and a file through alice's data exchange service.
    fn message_steps(&mut self) -> Result<(), Failure> {
        let note = "hello alice, this is bob";
        let send = ["send-message", "alice", "--data", note];
        self.step("bob sends alice a message", Some("bob"), &send, |d| {
            let v = d.ctl(Some("bob"), &send)?;
            Ok(format!(
                "{} bytes delivered and acknowledged (message {})",
                v["bytes"], v["id"]
            ))
        })?;
        self.step("alice reads her inbox", Some("alice"), &["inbox"], |d| {
            let v = d.ctl_until(Some("alice"), &["inbox"], "the message", |v| {
                v["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|m| m["data"] == note))
            })?;
            let m = v["messages"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["data"] == note))
                .cloned()
                .unwrap_or(Value::Null);
            Ok(format!(
                "from {} ({}): \"{}\"",
                m["from"].as_str().unwrap_or("?"),
                m["kind"].as_str().unwrap_or("?"),
                note
            ))
        })?;

        let file = self.dir.join("report.txt");
        let content: String = (1..=200)
            .map(|i| format!("line {i}: findings of the pilot demo\n"))
            .collect();
        std::fs::write(&file, &content)
            .map_err(|e| Failure::new("internal", format!("{}: {e}", file.display()), ""))?;
        let file_arg = file.to_string_lossy().into_owned();
        let send = ["send-file", "alice", &file_arg];
        self.step("bob sends alice a file", Some("bob"), &send, |d| {
            let v = d.ctl(Some("bob"), &send)?;
            Ok(format!(
                "{} ({} bytes) delivered and acknowledged",
                v["name"].as_str().unwrap_or("?"),
                v["bytes"]
            ))
        })?;
        self.step(
            "alice finds it among her received files",
            Some("alice"),
            &["received"],
            |d| {
                let v = d.ctl_until(Some("alice"), &["received"], "the file", |v| {
                    v["files"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["name"] == "report.txt"))
                })?;
                let f = v["files"]
                    .as_array()
                    .and_then(|f| f.iter().find(|f| f["name"] == "report.txt"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let path = f["path"].as_str().unwrap_or_default();
                let got = std::fs::read(path).unwrap_or_default();
                if got != content.as_bytes() {
                    return Err(Failure::new(
                        "internal",
                        format!("{path} differs from what bob sent"),
                        "",
                    ));
                }
                Ok(format!("{path}: {} bytes, identical to bob's", got.len()))
            },
        )
    }

    /// Bob subscribes to alice's event stream; alice publishes an event.
    fn event_step(&mut self) -> Result<(), Failure> {
        let publish = [
            "publish",
            "alice",
            "demo.status",
            "--data",
            "alice: all systems go",
        ];
        let timeout = self.step_timeout.as_secs().to_string();
        let subscribe = [
            "subscribe",
            "alice",
            "demo.*",
            "--count",
            "1",
            "--timeout",
            &timeout,
        ];
        self.step_after(
            "bob subscribes to alice's events; alice publishes one",
            &[("bob", &subscribe)],
            Some("alice"),
            &publish,
            |d| {
                let mut sub = Background::spawn(d, "bob", &subscribe)?;
                sub.wait_for_stderr("Subscribed", d.step_timeout)?;
                let v = d.ctl(Some("alice"), &publish)?;
                let line = sub.finish(d.step_timeout)?;
                let event: Value = serde_json::from_str(line.trim()).map_err(|_| {
                    Failure::new("internal", format!("bob's subscriber printed {line:?}"), "")
                })?;
                Ok(format!(
                    "alice's broker had {} subscriber; bob got `{}`: \"{}\"",
                    v["subscribers"],
                    event["topic"].as_str().unwrap_or("?"),
                    event["data"].as_str().unwrap_or("?")
                ))
            },
        )
    }

    /// Alice serves a page on overlay port 80; bob fetches it with
    /// `pilotctl connect`.
    fn http_step(&mut self) -> Result<(), Failure> {
        let alice_sock = self.home("alice").join("pilot.sock");
        let timeout = self.step_timeout;
        let get = "GET / HTTP/1.0\r\nHost: alice\r\n\r\n";
        let fetch = ["connect", "alice", "80", "--message", get];
        self.step(
            "alice serves a web page on port 80; bob fetches it through the tunnel",
            Some("bob"),
            &fetch,
            |d| {
                let server = serve_page(&alice_sock, timeout)?;
                let v = d.ctl(Some("bob"), &fetch)?;
                let served = server
                    .join()
                    .map_err(|_| Failure::new("internal", "the page server panicked", ""))??;
                let answer = v["reply"]["data"].as_str().unwrap_or_default();
                let status = answer.lines().next().unwrap_or_default().trim().to_string();
                if !answer.ends_with(PAGE) {
                    return Err(Failure::new(
                        "connection_failed",
                        format!("bob got something else than the page: {status}"),
                        "",
                    ));
                }
                Ok(format!(
                    "alice served {} bytes to {served}; bob got \"{status}\" and the page:\n  {}",
                    answer.len(),
                    PAGE.lines().nth(2).unwrap_or_default()
                ))
            },
        )
    }

    /// Alice serves the page from a plain local TCP server (as any web
    /// server would); bob maps her through the gateway in the rootless
    /// mode (a 127.x subnet, a high port) and fetches it with curl. Alice's
    /// daemon bridges the stream to her local port: no setup on her side.
    fn gateway_step(&mut self) -> Result<(), Failure> {
        let timeout = self.step_timeout;
        let server = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| {
            Failure::new(
                "internal",
                format!("cannot open a local web server: {e}"),
                "",
            )
        })?;
        let port = server
            .local_addr()
            .map_err(|e| Failure::new("internal", e.to_string(), ""))?
            .port();
        let ports = port.to_string();
        let args = [
            "gateway",
            "start",
            "--subnet",
            GATEWAY_SUBNET,
            "--ports",
            &ports,
            "alice",
        ];
        self.step(
            "bob maps alice through the gateway (rootless) and fetches her local web server's page with curl",
            Some("bob"),
            &args,
            |d| {
                let served = std::thread::spawn(move || serve_local_page(&server, timeout));
                let v = d.ctl(Some("bob"), &args)?;
                let ip = v["mappings"][0]["local_ip"].as_str().unwrap_or_default();
                let url = format!("http://{ip}:{port}/");
                let (client, answer) = http_get(&url, ip, port, timeout)?;
                served
                    .join()
                    .map_err(|_| Failure::new("internal", "the local web server panicked", ""))??;
                if !answer.ends_with(PAGE) {
                    return Err(Failure::new(
                        "connection_failed",
                        format!("{client} got something else than the page through the gateway: {answer:?}"),
                        "",
                    ));
                }
                Ok(format!(
                    "alice's web server listens on 127.0.0.1:{port} only; bob's gateway maps alice to {ip}\n\
                     bob$ {client} {url}\n  {}",
                    PAGE.lines().nth(2).unwrap_or_default()
                ))
            },
        )
    }

    /// Stops everything started and removes the directory (unless kept).
    fn cleanup(&mut self) {
        if self.keep {
            return;
        }
        for home in std::mem::take(&mut self.agents) {
            let _ = self.command(Some(&home), &["daemon", "stop"]).output();
            kill_pidfile(&home.join("daemon.pid"));
        }
        if std::mem::take(&mut self.rv_started) {
            let _ = self
                .command(None, &["rendezvous", "stop", "--home"])
                .arg(&self.rv_home)
                .output();
            kill_pidfile(&self.rv_home.join(driver_mio::rendezvous::PID_FILE));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A `pilotctl` child that runs while other steps go on (a subscriber).
struct Background {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn spawn(d: &Demo, agent: &str, args: &[&str]) -> Result<Background, Failure> {
        let mut child = d
            .command(Some(&d.home(agent)), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new("internal", format!("cannot run pilotctl: {e}"), ""))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take();
        std::thread::spawn(move || {
            use std::io::BufRead;
            if let Some(err) = err {
                for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Background {
            child,
            stderr: rx,
            seen: Vec::new(),
        })
    }

    /// Waits for a line on its stderr containing `marker`.
    fn wait_for_stderr(&mut self, marker: &str, timeout: Duration) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(marker) => return Ok(()),
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    return Err(Failure::new(
                        "timeout",
                        format!("no `{marker}` from the background command: {:?}", self.seen),
                        "",
                    ))
                }
            }
        }
    }

    /// Waits for it to exit; its stdout.
    fn finish(mut self, timeout: Duration) -> Result<String, Failure> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    return Err(Failure::new(
                        "timeout",
                        "the background command did not finish",
                        "",
                    ))
                }
            }
        };
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        if !status.success() {
            // Its last line is the error object.
            let last = out.lines().last().unwrap_or_default();
            return Err(failure_of(
                &serde_json::from_str(last).unwrap_or(Value::Null),
            ));
        }
        Ok(out)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// SIGKILLs what a pid file names, if it still runs (last resort).
fn kill_pidfile(path: &Path) {
    if let Some(pid) = super::client::read_pid(path) {
        if driver_mio::fsutil::pid_alive(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Listens on alice's port 80 and answers one HTTP request with `PAGE`
/// in a thread; the thread returns who was served.
fn serve_page(
    socket: &Path,
    timeout: Duration,
) -> Result<std::thread::JoinHandle<Result<String, Failure>>, Failure> {
    let mut c = Client::connect(socket).map_err(super::client::failure)?;
    c.set_timeout(timeout);
    c.listen(80).map_err(super::client::failure)?;
    Ok(std::thread::spawn(move || {
        let f = super::client::failure;
        let deadline = Instant::now() + timeout;
        let (stream, from) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.next_event(left).map_err(f)? {
                Some(Event::Incoming { stream, from, .. }) => break (stream, from),
                Some(_) => continue,
                None => {
                    return Err(Failure::new(
                        "timeout",
                        "no request reached alice's port 80",
                        "",
                    ))
                }
            }
        };
        let mut request = Vec::new();
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match c.read_stream(stream, timeout).map_err(f)? {
                Some(bytes) => request.extend_from_slice(&bytes),
                None => break,
            }
        }
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
            PAGE.len()
        );
        c.write_stream(stream, response.as_bytes()).map_err(f)?;
        c.shutdown_stream(stream).map_err(f)?;
        // Wait for bob's end so the bytes are delivered before we close.
        while let Ok(Some(_)) = c.read_stream(stream, timeout) {}
        let _ = c.close_stream(stream);
        Ok(from)
    }))
}

/// The gateway's subnet in the demo: inside 127.0.0.0/8, so Linux needs
/// no alias and no root.
const GATEWAY_SUBNET: &str = "127.77.0.0/16";

/// Alice's local web server: answers one request with the page.
fn serve_local_page(server: &std::net::TcpListener, timeout: Duration) -> Result<(), Failure> {
    use std::io::Read as _;
    let fail = |e: std::io::Error| {
        Failure::new("connection_failed", format!("alice's web server: {e}"), "")
    };
    server.set_nonblocking(true).map_err(fail)?;
    let deadline = Instant::now() + timeout;
    let mut conn = loop {
        match server.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => return Err(fail(e)),
        }
    };
    conn.set_nonblocking(false).map_err(fail)?;
    conn.set_read_timeout(Some(timeout)).map_err(fail)?;
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).map_err(fail)? {
            0 => break,
            n => request.extend_from_slice(&buf[..n]),
        }
    }
    let response = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
        PAGE.len()
    );
    conn.write_all(response.as_bytes()).map_err(fail)
}

/// GETs `url` with curl when it is installed (the real HTTP client the
/// demo is about), else with a minimal HTTP/1.0 request; answers the
/// client's name and the body.
fn http_get(
    url: &str,
    ip: &str,
    port: u16,
    timeout: Duration,
) -> Result<(String, String), Failure> {
    let fail = |e: String| Failure::new("connection_failed", e, "");
    let secs = timeout.as_secs().max(1).to_string();
    if let Ok(out) = Command::new("curl")
        .args(["-sS", "--max-time", &secs, url])
        .output()
    {
        if !out.status.success() {
            return Err(fail(format!(
                "curl {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        return Ok((
            "curl".into(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ));
    }
    use std::io::Read as _;
    let mut c =
        std::net::TcpStream::connect((ip, port)).map_err(|e| fail(format!("{url}: {e}")))?;
    c.set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    c.write_all(format!("GET / HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let mut answer = String::new();
    c.read_to_string(&mut answer)
        .map_err(|e| fail(e.to_string()))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(("an HTTP/1.0 GET (curl is not installed)".into(), body))
}

/// A fresh private directory for the demo, under /tmp when it exists
/// (socket paths must stay short).
fn demo_dir() -> Result<PathBuf, Failure> {
    let base = if Path::new("/tmp").is_dir() {
        PathBuf::from("/tmp")
    } else {
        std::env::temp_dir()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!("pilot-demo-{}-{nanos:08x}", std::process::id()));
    driver_mio::fsutil::ensure_private_dir(&dir).map_err(|e| {
        Failure::new(
            "internal",
            format!("cannot create {}: {e}", dir.display()),
            "",
        )
    })?;
    Ok(dir)
}

/// `pilotctl demo`.
pub fn run(args: DemoArgs, json_mode: bool) -> Result<Success, Failure> {
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted))
            .map_err(|e| Failure::new("internal", format!("signal handler: {e}"), ""))?;
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new("internal", format!("cannot find pilotctl: {e}"), ""))?;
    let dir = demo_dir()?;
    let mut demo = Demo {
        exe,
        rv_home: dir.join("rendezvous"),
        dir,
        agents: Vec::new(),
        rv_started: false,
        json: json_mode,
        keep: args.keep,
        step_timeout: Duration::from_secs(args.step_timeout.max(1)),
        steps: Vec::new(),
        started: Instant::now(),
        interrupted,
        parent_pipe: if args.keep {
            None
        } else {
            super::detach::parent_pipe()
        },
    };
    if !json_mode {
        out!(
            "Pilot demo: a rendezvous and two agents, alice and bob, on 127.0.0.1\n\
             under {} (removed at the end; Ctrl-C stops it cleanly).",
            demo.dir.display()
        );
    }
    let outcome = demo.run();
    let total_ms = demo.started.elapsed().as_secs_f64() * 1e3;
    let dir = demo.dir.display().to_string();
    let homes: Vec<OsString> = demo
        .agents
        .iter()
        .map(|h| h.clone().into_os_string())
        .collect();
    let steps = std::mem::take(&mut demo.steps);
    let keep = demo.keep;
    drop(demo);
    outcome?;
    let mut text = format!(
        "\nAll {} steps passed in {:.1} s.",
        steps.len(),
        total_ms / 1e3
    );
    if keep {
        text.push_str("\nStill running (--keep). Explore with:");
        for h in &homes {
            text.push_str(&format!(
                "\n  PILOT_HOME={} pilotctl info",
                Path::new(h).display()
            ));
        }
        text.push_str(&format!(
            "\nStop with `PILOT_HOME=<home> pilotctl daemon stop` for each agent and\n  pilotctl rendezvous stop --home {dir}/rendezvous"
        ));
    } else {
        text.push_str(" Everything it started is stopped and removed.");
    }
    Ok(Success::new(
        json!({ "dir": dir, "steps": steps, "total_ms": total_ms.round(), "kept": keep }),
        text,
    ))
}
