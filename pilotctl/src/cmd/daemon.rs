//! `pilotctl daemon start|stop|status`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use driver_mio::compat::tls::Trust;
use driver_mio::compat::{CarrierUrl, Transport};
use driver_mio::daemon::home::{Home, Settings};
use driver_mio::daemon::run::Options;
use driver_mio::ipc::api::Request;
use driver_mio::resolve::HostPort;
use pilot_proto::node::ServiceConfig;
use serde_json::{json, Value};

use super::client::{connect, request};
use super::settings::{self, file_failure, invalid};
use super::CommandDoc;
use crate::output::{Failure, Success};
use crate::paths;

/// Daemon lifecycle.
#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Start the daemon (in the background unless --foreground).
    Start(Box<StartArgs>),
    /// Stop the running daemon.
    Stop(HomeArgs),
    /// Is the daemon running? (--check: only the exit code)
    Status {
        #[command(flatten)]
        home: HomeArgs,
        /// Print nothing; exit 0 if running, 3 if not.
        #[arg(long)]
        check: bool,
    },
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "daemon start",
        returns: r#"{"pid":"number","address":"string","hostname":"string|null","socket":"string","logs":"string","public_key":"string"}"#,
        errors: &[
            "invalid_argument",
            "already_exists",
            "connection_failed",
            "timeout",
        ],
    },
    CommandDoc {
        name: "daemon stop",
        returns: r#"{"stopped":"bool","pid":"number|null"}"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "daemon status",
        returns: r#"{"running":"bool","pid":"number|null","socket":"string","info":"object"}"#,
        errors: &["not_running", "timeout"],
    },
];

/// Where the daemon's files and socket are.
#[derive(Args, Debug, Clone)]
pub struct HomeArgs {
    /// The agent's home (default: $PILOT_HOME or ~/.pilot).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// The IPC socket (default: $PILOT_SOCKET or <home>/pilot.sock).
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// How to start.
#[derive(Args, Debug, Clone)]
pub struct StartArgs {
    #[command(flatten)]
    pub home: HomeArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// UDP address to listen on (default 0.0.0.0:0: any port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Approve every trust request (service agents; saved for later starts).
    #[arg(long, conflicts_with = "no_auto_approve")]
    pub auto_approve: bool,
    /// Approve nothing by yourself (the default; undoes a saved --auto-approve).
    #[arg(long)]
    pub no_auto_approve: bool,
    /// Turn the built-in services (echo, data exchange, event stream) off
    /// (saved for later starts).
    #[arg(long, conflicts_with = "services")]
    pub no_services: bool,
    /// Turn the built-in services on (the default; undoes a saved --no-services).
    #[arg(long)]
    pub services: bool,
    /// The identity key file (default: <home>/identity.key; created if
    /// missing, mode 0600).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    /// (default: the saved one, else $PILOT_LOG, else info).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format in the file and on stderr (default: the saved one, else text).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Run in this process, logging to stderr too.
    #[arg(long)]
    pub foreground: bool,
    /// Seconds to wait for registration when starting in the background.
    #[arg(long, default_value_t = 15)]
    pub wait: u64,
    /// How to reach the rendezvous: udp, compat (everything over one
    /// TLS + WebSocket connection, also through HTTPS_PROXY) or auto (UDP,
    /// falling back to compat). Default: $PILOT_TRANSPORT, else the saved
    /// one, else udp. Saved for later starts.
    #[arg(long)]
    pub transport: Option<String>,
    /// The compat carrier's URL, wss://HOST:PORT/PATH (default: the
    /// rendezvous host on port 443). Saved.
    #[arg(long)]
    pub compat_url: Option<String>,
    /// Trust the carrier's certificate if it chains to a CA in this PEM
    /// file (default: the system's roots). Saved.
    #[arg(long, conflicts_with = "tls_pin")]
    pub tls_ca: Option<PathBuf>,
    /// Trust exactly the carrier certificate with this SHA-256 (printed by
    /// the rendezvous). Saved.
    #[arg(long)]
    pub tls_pin: Option<String>,
}

/// The agent's own settings as flags: what `daemon start` uses and
/// `init` saves.
#[derive(Args, Debug, Clone)]
pub struct AgentArgs {
    /// The rendezvous's address, HOST:PORT: a DNS name (looked up at
    /// start, and again when the rendezvous stops answering), an IPv4
    /// address or [IPv6]:PORT (or $PILOT_RENDEZVOUS).
    #[arg(long)]
    pub rendezvous: Option<String>,
    /// The rendezvous's public key, 64 hex digits (or $PILOT_RENDEZVOUS_KEY).
    #[arg(long)]
    pub rendezvous_key: Option<String>,
    /// The hostname to register.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Be findable by anyone (default: private; saved for later starts).
    #[arg(long, conflicts_with = "private")]
    pub public: bool,
    /// Be findable only by trusted peers (the default; undoes a saved --public).
    #[arg(long)]
    pub private: bool,
    /// The owner's email, kept with the settings.
    #[arg(long)]
    pub email: Option<String>,
}

impl AgentArgs {
    /// The rendezvous address given: the flag, else the environment
    /// (used for this start, but saved only when given as a flag).
    pub fn rendezvous(&self) -> Option<String> {
        self.rendezvous.clone().or_else(|| env("PILOT_RENDEZVOUS"))
    }

    /// The rendezvous key given: the flag, else the environment.
    pub fn rendezvous_key(&self) -> Option<String> {
        self.rendezvous_key
            .clone()
            .or_else(|| env("PILOT_RENDEZVOUS_KEY"))
    }
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Runs a daemon command.
pub fn run(c: DaemonCommand, json: bool) -> Result<Success, Failure> {
    match c {
        DaemonCommand::Start(a) => start(*a, json),
        DaemonCommand::Stop(h) => stop(h),
        DaemonCommand::Status { home, check } => status(home, check, json),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Settings from flags, then the environment, then what was saved last.
fn resolve(a: &StartArgs, saved: &Settings) -> Result<(Options, Settings), Failure> {
    let home = paths::home(a.home.home.clone());
    let socket = paths::socket(a.home.socket.clone(), &home);
    let rendezvous = a
        .agent
        .rendezvous()
        .or_else(|| saved.rendezvous.clone())
        .ok_or_else(|| {
            invalid(
                "no rendezvous address",
                "pass --rendezvous HOST:PORT (or set PILOT_RENDEZVOUS); `pilotctl rendezvous start` prints one",
            )
        })?;
    let key = a
        .agent
        .rendezvous_key()
        .or_else(|| saved.rendezvous_key.clone())
        .ok_or_else(|| {
            invalid(
                "no rendezvous public key",
                "pass --rendezvous-key (64 hex digits, printed by the rendezvous) or set PILOT_RENDEZVOUS_KEY",
            )
        })?;
    let rv_target = settings::rendezvous(&rendezvous)?;
    let rv_key = settings::rendezvous_key(&key)?;
    let hostname_text = a.agent.hostname.clone().or_else(|| saved.hostname.clone());
    let hostname = hostname_text
        .as_deref()
        .map(settings::hostname)
        .transpose()?;
    let listen_text = a
        .listen
        .clone()
        .or_else(|| saved.listen.clone())
        .unwrap_or_else(|| "0.0.0.0:0".into());
    let listen = settings::listen(&listen_text)?;
    let public = if a.agent.private {
        false
    } else {
        a.agent.public || saved.public
    };
    let auto_approve = !a.no_auto_approve && (a.auto_approve || saved.auto_approve);
    let no_services = !a.services && (a.no_services || saved.no_services);
    let mut services = ServiceConfig::default();
    if no_services {
        services.echo = false;
        services.data_exchange = false;
        services.event_stream = false;
    }
    let log_format = a.log_format.or(match saved.log_format.as_deref() {
        Some("json") => Some(LogFormat::Json),
        Some(_) => Some(LogFormat::Text),
        None => None,
    });
    // A one-off PILOT_RENDEZVOUS / PILOT_RENDEZVOUS_KEY in the environment
    // serves this start only; a flag is what the user asks to keep.
    let kept = |flag: &Option<String>, saved: &Option<String>, resolved: String| {
        if flag.is_some() {
            Some(resolved)
        } else {
            saved.clone()
        }
    };
    let settings = Settings {
        rendezvous: kept(
            &a.agent.rendezvous,
            &saved.rendezvous,
            rv_target.to_string(),
        ),
        rendezvous_key: kept(
            &a.agent.rendezvous_key,
            &saved.rendezvous_key,
            rv_key.to_string(),
        ),
        auto_approve,
        no_services,
        log_level: a.log_level.clone().or_else(|| saved.log_level.clone()),
        log_format: log_format.map(|f| match f {
            LogFormat::Json => "json".into(),
            LogFormat::Text => "text".into(),
        }),
        hostname: hostname_text,
        public,
        listen: Some(listen.to_string()),
        email: a.agent.email.clone().or_else(|| saved.email.clone()),
        identity: None,
        bridge_ports: saved.bridge_ports.clone(),
        bridge_peers: saved.bridge_peers.clone(),
        ..Settings::default()
    };
    let identity = a
        .identity
        .clone()
        .or_else(|| saved.identity.as_ref().map(PathBuf::from));
    let settings = Settings {
        identity: identity.as_ref().map(|p| p.display().to_string()),
        ..settings
    };
    let transport_text = a
        .transport
        .clone()
        .or_else(|| env("PILOT_TRANSPORT"))
        .or_else(|| saved.transport.clone())
        .unwrap_or_else(|| "udp".into());
    let transport: Transport = transport_text
        .parse()
        .map_err(|e: String| invalid(&e, "use --transport udp, compat or auto"))?;
    let compat_text = a.compat_url.clone().or_else(|| saved.compat_url.clone());
    let compat_url = match &compat_text {
        Some(u) => u
            .parse::<CarrierUrl>()
            .map_err(|e| invalid(&e, "use --compat-url wss://HOST:PORT/PATH"))?,
        None => CarrierUrl::for_host(&rv_target.host_text()),
    };
    let rv = lookup_rendezvous(&rv_target, listen, transport)?;
    // A new pin or CA replaces the other kind.
    let (tls_ca, tls_pin) = match (&a.tls_ca, &a.tls_pin) {
        (Some(ca), _) => (Some(ca.display().to_string()), None),
        (None, Some(pin)) => (None, Some(pin.clone())),
        (None, None) => (saved.tls_ca.clone(), saved.tls_pin.clone()),
    };
    let tls_trust = match (&tls_ca, &tls_pin) {
        (Some(ca), _) => Trust::CaFile(PathBuf::from(ca)),
        (None, Some(pin)) => Trust::Pin(
            driver_mio::compat::tls::parse_pin(pin)
                .map_err(|e| invalid(&e, "pass the fingerprint the rendezvous printed"))?,
        ),
        (None, None) => Trust::System,
    };
    let settings = Settings {
        transport: Some(transport.as_str().into())
            .filter(|_| a.transport.is_some() || saved.transport.is_some()),
        compat_url: compat_text.clone(),
        tls_ca,
        tls_pin,
        ..settings
    };
    let options = Options {
        transport,
        compat_url,
        tls_trust,
        identity,
        home,
        socket,
        rendezvous: rv,
        rendezvous_name: rv_target.name().map(|_| rv_target.clone()),
        rendezvous_key: rv_key,
        hostname,
        listen,
        public,
        auto_approve,
        services,
        bridge: settings::bridge_policy(&settings)?,
        // Not exposed by pilotctl yet: NAT classification needs a
        // rendezvous started with --reflect-port.
        reflect: None,
    };
    Ok((options, settings))
}

/// The rendezvous's UDP address: its address, or its name looked up now
/// (within a few seconds) for the family the daemon's socket reaches. On
/// the compat carrier alone a name need not resolve here (a proxy may be
/// the only one that can): the carrier looks it up itself, and the
/// address is then only a label.
fn lookup_rendezvous(
    target: &HostPort,
    listen: SocketAddr,
    transport: Transport,
) -> Result<SocketAddr, Failure> {
    use driver_mio::resolve::{lookup, LookupError, LOOKUP_TIMEOUT};
    let local = if transport == Transport::Compat {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        listen
    };
    match lookup(target, local, LOOKUP_TIMEOUT) {
        Ok(a) => Ok(a),
        Err(_) if transport == Transport::Compat => Ok(SocketAddr::from((
            std::net::Ipv4Addr::UNSPECIFIED,
            target.port,
        ))),
        Err(e) => {
            let code = match e {
                LookupError::Timeout { .. } => "timeout",
                _ => "invalid_argument",
            };
            Err(Failure::new(code, e.to_string(), e.hint()))
        }
    }
}

/// Refuses a `--log-level` that would not log what the user meant: every
/// comma-separated part must be a level or `target=level` (a bare word
/// would be taken as a target and silence everything else).
fn check_log_level(level: &str) -> Result<(), Failure> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let part_ok = |p: &str| {
        is_level(p)
            || p.rsplit_once('=')
                .is_some_and(|(target, l)| !target.trim().is_empty() && is_level(l))
    };
    let parts_ok = !level.trim().is_empty() && level.split(',').all(part_ok);
    if parts_ok && tracing_subscriber::EnvFilter::try_new(level).is_ok() {
        return Ok(());
    }
    Err(invalid(
        format!("--log-level {level:?} is not a log filter"),
        "use error, warn, info, debug or trace, or TARGET=LEVEL directives (driver_mio=debug,info)",
    ))
}

fn start(a: StartArgs, json: bool) -> Result<Success, Failure> {
    if let Some(level) = &a.log_level {
        check_log_level(level)?;
    }
    let home_dir = paths::home(a.home.home.clone());
    let home = Home::open(&home_dir).map_err(file_failure)?;
    let saved = home.settings().map_err(file_failure)?;
    let (options, settings) = resolve(&a, &saved)?;
    if let Some(parent) = options.socket.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            return Err(invalid(
                format!("the socket's directory {} does not exist", parent.display()),
                "create it, or choose another --socket / PILOT_SOCKET",
            ));
        }
    }
    if let Ok(mut c) = connect(&options.socket) {
        let info = request(&mut c, Request::Info).unwrap_or(Value::Null);
        let pid = crate::cmd::client::read_pid(&home.path("daemon.pid"));
        return Err(Failure::new(
            "already_exists",
            format!(
                "a daemon is already running (pid {}, address {})",
                pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
                info.get("address")
                    .and_then(Value::as_str)
                    .unwrap_or("not registered yet")
            ),
            "`pilotctl daemon stop` first, or use another PILOT_HOME/PILOT_SOCKET",
        ));
    }
    home.save_settings(&settings).map_err(file_failure)?;
    let log_format = match settings.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        _ => LogFormat::Text,
    };
    if a.foreground {
        init_logging_with(&home_dir, true, settings.log_level.as_deref(), log_format);
        super::detach::stop_with_parent();
        fresh_pages_for_big_buffers();
        // In a terminal or under a service manager (not the background
        // child, whose output is JSON): say where the agent is, once
        // registered.
        let mut hooks = driver_mio::daemon::run::Hooks::default();
        if !json {
            hooks.on_registered = Some(Box::new(|address, hostname| {
                use std::io::Write as _;
                let name = hostname.map(|h| format!(" ({h})")).unwrap_or_default();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "Registered: address {address}{name}");
                let _ = out.flush();
            }));
        }
        return driver_mio::daemon::run::run_with(options, hooks)
            .map(|()| Success::new(json!({ "stopped": true }), "Daemon stopped"))
            .map_err(|e| {
                let hint = match e.code() {
                    "already_exists" => "another daemon or process holds it: stop it, or choose another --listen / PILOT_HOME",
                    _ => "see the message; the daemon's log is pilot.log in its home",
                };
                Failure::new(e.code(), e.to_string(), hint)
            });
    }
    let log = home.path("daemon.out");
    // --json: a failure to start ends the child's output with an error
    // object, whose code is passed on.
    let mut args: Vec<std::ffi::OsString> = vec![
        "daemon".into(),
        "start".into(),
        "--foreground".into(),
        "--json".into(),
    ];
    args.extend(["--home".into(), options.home.clone().into_os_string()]);
    args.extend(["--socket".into(), options.socket.clone().into_os_string()]);
    // The child reads the rest from the settings just saved (and the
    // environment, for a one-off rendezvous).
    let mut child = super::detach::spawn(&args, &log, "daemon")?;
    let pid = child.id();
    if !json {
        eprint!("starting daemon (pid {pid})");
    }
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    // Registration on a reachable rendezvous takes a few milliseconds:
    // look often, so `start` returns when the daemon is ready rather than
    // at the next tick of a coarse poll; a dot every 100 ms shows life.
    let mut polls = 0u32;
    let mut carrier_error: Option<String> = None;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            if !json {
                eprintln!();
            }
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_string();
            if let Ok(v) = serde_json::from_str::<Value>(&last) {
                if v["status"] == "error" {
                    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
                    return Err(Failure::new(
                        v["code"].as_str().unwrap_or("internal"),
                        format!("the daemon exited ({status}): {}", text("message")),
                        text("hint"),
                    ));
                }
            }
            return Err(Failure::new(
                "internal",
                format!("the daemon exited ({status}): {last}"),
                format!("see {}", log.display()),
            ));
        }
        if let Ok(mut c) = connect(&options.socket) {
            if let Ok(info) = request(&mut c, Request::Info) {
                carrier_error = info["transport"]["carrier_error"]
                    .as_str()
                    .map(str::to_string);
                if info.get("address").is_some_and(|a| !a.is_null()) {
                    if !json {
                        eprintln!();
                    }
                    return Ok(started(pid, &info, &options.socket, &home_dir));
                }
                // Refused (a hostname another identity holds, say): the
                // answer is in, waiting longer changes nothing.
                if let Some(r) = info["registration_refused"].as_object() {
                    if !json {
                        eprintln!();
                    }
                    return Err(refused(pid, r));
                }
            }
        }
        if Instant::now() > deadline {
            if !json {
                eprintln!();
            }
            // The carrier's last error names the step that failed (the
            // proxy, TLS, the upgrade), never a credential.
            let why = carrier_error.map(|e| format!(": {e}")).unwrap_or_default();
            return Err(Failure::new(
                "timeout",
                format!(
                    "the daemon (pid {pid}) did not register within {} s{why}",
                    a.wait
                ),
                "is the rendezvous reachable and its key right? the daemon keeps trying; see `pilotctl daemon status`",
            ));
        }
        polls += 1;
        if !json && polls.is_multiple_of(10) {
            eprint!(".");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `daemon start`'s answer when the rendezvous refused the registration:
/// the daemon runs on and keeps asking, so say how to change course.
fn refused(pid: u32, r: &serde_json::Map<String, Value>) -> Failure {
    let text = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
    let code = match text("code") {
        "" => "connection_failed",
        c => c,
    };
    let hint = if code == "already_exists" {
        "choose another name: `pilotctl set-hostname NAME` (the running daemon takes it at once), or `pilotctl daemon stop` and start again with another --hostname"
    } else {
        "the daemon keeps asking; `pilotctl daemon stop` to give up, and see `pilotctl daemon status`"
    };
    Failure::new(
        code,
        format!(
            "the rendezvous refused the daemon's registration (pid {pid}, still running): {}",
            text("message")
        ),
        hint,
    )
}

fn started(pid: u32, info: &Value, socket: &Path, home: &Path) -> Success {
    let address = info
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string();
    let log = home.join("pilot.log");
    Success::new(
        json!({
            "pid": pid,
            "address": address,
            "hostname": info.get("hostname"),
            "socket": socket.display().to_string(),
            "logs": log.display().to_string(),
            "public_key": info.get("public_key"),
        }),
        format!(
            "Daemon running (pid {pid})\n  Address:  {address}\n  Socket:   {}\n  Logs:     {}",
            socket.display(),
            log.display()
        ),
    )
}

fn stop(h: HomeArgs) -> Result<Success, Failure> {
    let home = paths::home(h.home.clone());
    let socket = paths::running_socket(h.socket.clone(), &home);
    let pid = crate::cmd::client::read_pid(&home.join("daemon.pid"));
    let mut c = connect(&socket)?;
    request(&mut c, Request::Stop)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let alive = pid.is_some_and(driver_mio::fsutil::pid_alive);
        if !alive && connect(&socket).is_err() {
            return Ok(Success::new(
                json!({ "stopped": true, "pid": pid }),
                "Daemon stopped",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Failure::new(
        "timeout",
        "the daemon did not stop within 10 s",
        pid.map(|p| format!("kill it with `kill {p}`"))
            .unwrap_or_default(),
    ))
}

fn status(h: HomeArgs, check: bool, json: bool) -> Result<Success, Failure> {
    let home = paths::home(h.home.clone());
    let socket = paths::running_socket(h.socket.clone(), &home);
    let result = connect(&socket).and_then(|mut c| request(&mut c, Request::Info));
    if check {
        return match result {
            Ok(_) => Ok(Success::new(json!({ "running": true }), "")),
            // Only the exit status, as documented: nothing on stderr
            // (under --json the error object still goes to stdout).
            Err(f) if !json => std::process::exit(f.exit_code()),
            Err(f) => Err(f),
        };
    }
    let info = result?;
    let pid = crate::cmd::client::read_pid(&home.join("daemon.pid"));
    let address = info
        .get("address")
        .and_then(Value::as_str)
        .unwrap_or("not registered yet");
    let registered = info
        .get("registered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let registered = match info["registration_refused"]["message"].as_str() {
        _ if registered => "yes".to_string(),
        Some(why) => format!("no, refused by the rendezvous: {why} (retrying)"),
        None => "no (retrying)".to_string(),
    };
    Ok(Success::new(
        json!({ "running": true, "pid": pid, "socket": socket.display().to_string(), "info": info }),
        format!(
            "Daemon running (pid {})\n  Address:    {address}\n  Registered: {registered}\n  Socket:     {}",
            pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
            socket.display()
        ),
    ))
}

/// Logs to `<home>/pilot.log` (rotated at start once over 8 MiB, three
/// old files kept) and, in the foreground, to stderr, with `level` (else
/// $PILOT_LOG, else info) in `format`.
pub fn init_logging_with(home: &Path, stderr: bool, level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::prelude::*;
    rotate(&home.join("pilot.log"), 8 << 20, 3);
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::try_new(l).unwrap_or_else(|e| {
            eprintln!("warning: --log-level {l:?}: {e}; using info");
            tracing_subscriber::EnvFilter::new("info")
        }),
        None => tracing_subscriber::EnvFilter::try_from_env("PILOT_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let json = format == LogFormat::Json;
    let file = || tracing_appender::rolling::never(home, "pilot.log");
    let file_text = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(file())
            .with_ansi(false)
    });
    let file_json = json.then(|| tracing_subscriber::fmt::layer().json().with_writer(file()));
    // Colours only for a terminal: a background daemon's or
    // rendezvous's stderr is a file (daemon.out, rendezvous.out).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let err_text = (stderr && !json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
    });
    let err_json = (stderr && json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(file_text)
        .with(file_json)
        .with(err_text)
        .with(err_json)
        .try_init();
}

/// `log` becomes `log.1` (and `log.1` `log.2`, ...) once it exceeds `max`.
fn rotate(log: &Path, max: u64, keep: u32) {
    if std::fs::metadata(log).map(|m| m.len()).unwrap_or(0) <= max {
        return;
    }
    let name = |i: u32| PathBuf::from(format!("{}.{i}", log.display()));
    for i in (1..keep).rev() {
        let _ = std::fs::rename(name(i), name(i + 1));
    }
    let _ = std::fs::rename(log, name(1));
}

/// Every stream gets 1 MiB receive and send buffers, allocated zeroed, of
/// which an idle stream touches few pages. glibc serves such sizes from
/// mmap at first (fresh pages: no memset, nothing resident until
/// touched), but after the first free it raises its mmap threshold and
/// serves them from the heap, where calloc must memset all 2 MiB: at a few
/// hundred short connections per second (the gateway under load) that
/// memset was 40 % of the serving daemon's time (perf). A fixed threshold
/// keeps the mmap path.
fn fresh_pages_for_big_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator and takes its locks, so it
    // may run while other threads allocate; the arguments are valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::check_log_level;

    #[test]
    fn log_levels_are_levels_or_target_directives() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "driver_mio=debug,info",
            "pilot_proto::node=trace",
        ] {
            assert!(check_log_level(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "", "info,loud", "driver_mio=loud", "=debug"] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }
}
