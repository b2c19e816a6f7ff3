//! `pilotctl rendezvous start|run|stop|status`: a rendezvous for a team.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use driver_mio::fsutil;
use driver_mio::rendezvous::{Server, ServerConfig, KEY_FILE, PID_FILE, STATUS_FILE};
use serde_json::{json, Value};

use super::CommandDoc;
use crate::output::{Failure, Success};

/// Rendezvous lifecycle.
#[derive(Subcommand, Debug)]
pub enum RendezvousCommand {
    /// Start a rendezvous in the background; prints its address and key.
    Start(RvArgs),
    /// Run a rendezvous in the foreground (until Ctrl-C / SIGTERM).
    Run(RvArgs),
    /// Stop the rendezvous started with this home.
    Stop {
        /// Its home (default: $PILOT_HOME/rendezvous or ~/.pilot/rendezvous).
        #[arg(long)]
        home: Option<PathBuf>,
    },
    /// The running rendezvous of this home: address, public key, agents
    /// registered and online, uptime, relay counters.
    Status {
        /// Its home (default: $PILOT_HOME/rendezvous or ~/.pilot/rendezvous).
        #[arg(long)]
        home: Option<PathBuf>,
    },
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "rendezvous start",
        returns: r#"{"address":"string","public_key":"string","pid":"number","home":"string","reflect_port":"number|null"}"#,
        errors: &["invalid_argument", "already_exists", "timeout"],
    },
    CommandDoc {
        name: "rendezvous run",
        returns: r#"{"address":"string","public_key":"string","pid":"number","home":"string","reflect_port":"number|null"}"#,
        errors: &["invalid_argument", "already_exists"],
    },
    CommandDoc {
        name: "rendezvous status",
        returns: r#"{"running":"bool","pid":"number","address":"string","public_key":"string","home":"string","reflect_port":"number|null","started_at":"number","updated_at":"number","uptime_secs":"number","agents":{"registered":"number","online":"number"},"trust_pairs":"number","relay":{"forwarded_packets":"number","forwarded_bytes":"number","refused_malformed":"number","refused_unknown_sender":"number","refused_offline":"number","refused_not_paired":"number","refused_limited":"number"},"udp":{"datagrams_in":"number","datagrams_out":"number"},"handshakes":{"tunnel_peers":"number","cookie_replies":"number","source_limited":"number","peers_forgotten":"number"},"tls_address":"string|null","tls_fingerprint":"string|null"}"#,
        errors: &["not_running"],
    },
    CommandDoc {
        name: "rendezvous stop",
        returns: r#"{"stopped":"bool","pid":"number"}"#,
        errors: &["not_running", "timeout"],
    },
];

/// Where and how the rendezvous runs.
#[derive(Args, Debug, Clone)]
pub struct RvArgs {
    /// UDP address to listen on (port 0: any free port).
    #[arg(long, default_value = driver_mio::rendezvous::DEFAULT_LISTEN)]
    pub listen: String,
    /// Directory for its key, registry and logs (default:
    /// $PILOT_HOME/rendezvous, else ~/.pilot/rendezvous).
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Second UDP port, answering only reflect requests, from which agents
    /// classify their NAT (announced to them; nothing to configure on
    /// their side). `auto` (the default): the listen port + 1, left off
    /// when the listen port is 0 or that port is taken; `off`: none.
    #[arg(long, default_value = "auto")]
    pub reflect_port: String,
    /// The network whose addresses it hands out.
    #[arg(long, default_value_t = 0)]
    pub network: u16,
    /// How often agents should refresh their registration, in seconds.
    #[arg(long)]
    pub refresh_secs: Option<u64>,
    /// How long a registration lasts without refresh, in seconds.
    #[arg(long)]
    pub ttl_secs: Option<u64>,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives (default: $PILOT_LOG, else info).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Seconds to wait for it to come up (start only).
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
    /// Also listen for the compat carrier (TLS + WebSocket) on this TCP
    /// address, e.g. 0.0.0.0:443.
    #[arg(long)]
    pub tls_listen: Option<String>,
    /// The carrier's certificate chain (PEM; reloaded on SIGHUP). Without
    /// it, a self-signed pair kept in the home; its fingerprint is printed.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The carrier's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

fn tls_listen(a: &RvArgs) -> Result<Option<SocketAddr>, Failure> {
    a.tls_listen
        .as_deref()
        .map(|t| {
            t.parse().map_err(|_| {
                Failure::new(
                    "invalid_argument",
                    format!("{} is not a TCP listen address", super::settings::quoted(t)),
                    "use IP:PORT, e.g. 0.0.0.0:443",
                )
            })
        })
        .transpose()
}

fn server_config(a: &RvArgs, addr: SocketAddr, home: &Path) -> Result<ServerConfig, Failure> {
    let mut config = ServerConfig::new(addr, home.to_path_buf());
    config.tls_listen = tls_listen(a)?;
    config.tls_cert = a.tls_cert.clone().zip(a.tls_key.clone());
    config.network = a.network;
    config.refresh_interval = a.refresh_secs.map(Duration::from_secs);
    config.registration_ttl = a.ttl_secs.map(Duration::from_secs);
    Ok(config)
}

fn home(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(driver_mio::rendezvous::default_home)
}

/// Runs a rendezvous command.
pub fn run(c: RendezvousCommand, json: bool) -> Result<Success, Failure> {
    match c {
        RendezvousCommand::Start(a) => start(a),
        RendezvousCommand::Run(a) => foreground(a, json),
        RendezvousCommand::Stop { home: h } => stop(&home(h)),
        RendezvousCommand::Status { home: h } => status(&home(h)),
    }
}

fn listen(a: &RvArgs) -> Result<SocketAddr, Failure> {
    a.listen.parse().map_err(|_| {
        Failure::new(
            "invalid_argument",
            format!(
                "{} is not a UDP listen address",
                super::settings::quoted(&a.listen)
            ),
            "use IP:PORT, e.g. 127.0.0.1:4000 or 0.0.0.0:4000",
        )
    })
}

/// The reflect port asked for: `Ok(None)` when off.
fn reflect_port(a: &RvArgs, listen: SocketAddr) -> Result<Option<u16>, Failure> {
    driver_mio::rendezvous::reflect_port(&a.reflect_port, listen)
        .map_err(|(message, hint)| Failure::new("invalid_argument", message, hint))
}

fn server_failure(e: driver_mio::rendezvous::ServerError) -> Failure {
    Failure::new(e.code(), e.to_string(), e.hint().unwrap_or_default())
}

fn foreground(a: RvArgs, json: bool) -> Result<Success, Failure> {
    let addr = listen(&a)?;
    let home = home(a.home.clone());
    fsutil::ensure_private_dir(&home).map_err(|e| Failure::new("internal", e.to_string(), ""))?;
    super::daemon::init_logging_with(
        &home,
        true,
        a.log_level.as_deref(),
        super::daemon::LogFormat::Text,
    );
    super::detach::stop_with_parent();
    let mut config = server_config(&a, addr, &home)?;
    config.reflect_port = reflect_port(&a, addr)?;
    let mut server = Server::open(config).map_err(server_failure)?;
    let carrier = server
        .carrier_addr()
        .zip(server.carrier_fingerprint().map(str::to_string));
    let started = started(
        server.local_addr(),
        &server.public_key().to_string(),
        std::process::id(),
        &home,
        carrier.as_ref().map(|(a, f)| (*a, f.as_str())),
        server.reflect_addr().map(|a| a.port()),
    );
    // The startup line goes out at once (a parent may be waiting for it);
    // the result of the whole run is printed when it stops.
    if json {
        crate::output::say(json!({ "status": "ok", "data": started.data }));
    } else {
        crate::output::say(&started.text);
    }
    server.run().map_err(server_failure)?;
    Ok(Success::new(
        json!({ "stopped": true }),
        "Rendezvous stopped",
    ))
}

fn started(
    addr: SocketAddr,
    key: &str,
    pid: u32,
    home: &Path,
    carrier: Option<(SocketAddr, &str)>,
    reflect: Option<u16>,
) -> Success {
    // 0.0.0.0 (or ::) is where it listens, not an address another host
    // can send to: agents need one of this host's own.
    let (shown, join, whose) = if addr.ip().is_unspecified() {
        (
            format!("{addr} (every address of this host)"),
            format!("HOST:{}", addr.port()),
            " (HOST: this host's address they can reach; from the internet, its public one)",
        )
    } else {
        (addr.to_string(), addr.to_string(), "")
    };
    let reflect_text = match reflect {
        Some(p) => format!("UDP {p} (agents classify their NAT; let it through too)"),
        None => "off (agents do not classify their NAT)".into(),
    };
    let mut data = json!({ "address": addr.to_string(), "public_key": key, "pid": pid, "home": home.display().to_string(), "reflect_port": reflect });
    let mut text = format!(
        "Rendezvous running (pid {pid})\n  Address:    {shown}\n  Public key: {key}\n  Reflect:    {reflect_text}\n  Home:       {}\n\nAgents join with{whose}:\n  pilotctl daemon start --rendezvous {join} --rendezvous-key {key}",
        home.display()
    );
    if let Some((tls, fingerprint)) = carrier {
        data["tls_address"] = tls.to_string().into();
        data["tls_fingerprint"] = fingerprint.into();
        let host = if addr.ip().is_unspecified() {
            "HOST".to_string()
        } else {
            addr.ip().to_string()
        };
        text.push_str(&format!(
            "\n\nCompat carrier (TLS + WebSocket) on TCP {tls}, certificate SHA-256 {fingerprint}\nAgents without UDP join with:\n  pilotctl daemon start --rendezvous {join} --rendezvous-key {key} --transport compat --compat-url wss://{host}:{}{} --tls-pin {fingerprint}",
            tls.port(),
            driver_mio::compat::WS_PATH,
        ));
    }
    Success::new(data, text)
}

fn start(a: RvArgs) -> Result<Success, Failure> {
    let addr = listen(&a)?;
    tls_listen(&a)?;
    // Checked here too, so a bad value fails before anything is spawned.
    if !matches!(a.reflect_port.as_str(), "auto") {
        reflect_port(&a, addr)?;
    }
    let home = home(a.home.clone());
    fsutil::ensure_private_dir(&home).map_err(|e| Failure::new("internal", e.to_string(), ""))?;
    if let Ok(Some(pid)) = fsutil::running_pid(&home.join(PID_FILE)) {
        return Err(Failure::new(
            "already_exists",
            format!(
                "a rendezvous (pid {pid}) is already running with home {}",
                home.display()
            ),
            "`pilotctl rendezvous stop` first, or use another --home",
        ));
    }
    let out_path = home.join("rendezvous.out");
    let mut args: Vec<std::ffi::OsString> = vec![
        "rendezvous".into(),
        "run".into(),
        "--json".into(),
        "--listen".into(),
        a.listen.clone().into(),
        "--home".into(),
        home.clone().into_os_string(),
        "--reflect-port".into(),
        a.reflect_port.clone().into(),
    ];
    if let Some(t) = &a.tls_listen {
        args.extend(["--tls-listen".into(), t.into()]);
    }
    args.extend(["--network".into(), a.network.to_string().into()]);
    if let Some(s) = a.refresh_secs {
        args.extend(["--refresh-secs".into(), s.to_string().into()]);
    }
    if let Some(s) = a.ttl_secs {
        args.extend(["--ttl-secs".into(), s.to_string().into()]);
    }
    if let Some(l) = &a.log_level {
        args.extend(["--log-level".into(), l.into()]);
    }
    if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
        args.extend(["--tls-cert".into(), c.clone().into_os_string()]);
        args.extend(["--tls-key".into(), k.clone().into_os_string()]);
    }
    let mut child = super::detach::spawn(&args, &out_path, "rendezvous")?;
    let deadline = Instant::now() + Duration::from_secs(a.wait);
    loop {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if v["status"] == "ok" {
                    let d = &v["data"];
                    let addr: SocketAddr = d["address"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()
                        .map_err(|_| {
                            Failure::new("internal", format!("unexpected startup line: {line}"), "")
                        })?;
                    let carrier = d["tls_address"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .zip(d["tls_fingerprint"].as_str());
                    return Ok(started(
                        addr,
                        d["public_key"].as_str().unwrap_or_default(),
                        child.id(),
                        &home,
                        carrier,
                        d["reflect_port"]
                            .as_u64()
                            .and_then(|p| u16::try_from(p).ok()),
                    ));
                }
                if v["status"] == "error" {
                    return Err(Failure::new(
                        v["code"].as_str().unwrap_or("internal"),
                        v["message"]
                            .as_str()
                            .unwrap_or("the rendezvous failed to start"),
                        v["hint"].as_str().unwrap_or(""),
                    ));
                }
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            let last = text.lines().last().unwrap_or("").to_string();
            return Err(Failure::new(
                "internal",
                format!("the rendezvous exited ({status}): {last}"),
                format!("see {}", out_path.display()),
            ));
        }
        if Instant::now() > deadline {
            return Err(Failure::new(
                "timeout",
                format!("the rendezvous did not start within {} s", a.wait),
                format!("see {}", out_path.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop(home: &Path) -> Result<Success, Failure> {
    let pid_path = home.join(PID_FILE);
    let Ok(Some(pid)) = fsutil::running_pid(&pid_path) else {
        return Err(Failure::new(
            "not_running",
            format!("no rendezvous is running with home {}", home.display()),
            "start one with `pilotctl rendezvous start`",
        ));
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !fsutil::pid_alive(pid) {
            return Ok(Success::new(
                json!({ "stopped": true, "pid": pid }),
                "Rendezvous stopped",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Failure::new(
        "timeout",
        format!("the rendezvous (pid {pid}) did not stop within 10 s"),
        format!("kill it with `kill -9 {pid}`"),
    ))
}

/// `pilotctl rendezvous status`: reads the status file the running server
/// rewrites in its home (no network, nothing exposed). Without a status
/// file yet (it is written within a moment of starting), the key comes
/// from the key file.
fn status(home: &Path) -> Result<Success, Failure> {
    let internal = |e: String| Failure::new("internal", e, "");
    let Ok(Some(pid)) = fsutil::running_pid(&home.join(PID_FILE)) else {
        return Err(Failure::new(
            "not_running",
            format!("no rendezvous is running with home {}", home.display()),
            "start one with `pilotctl rendezvous start`, or name its home with --home",
        ));
    };
    let path = home.join(STATUS_FILE);
    let mut data = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| {
                Failure::new(
                    "internal",
                    format!("{} is not a status object", path.display()),
                    "it is rewritten every 2 s while the rendezvous runs; try again",
                )
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = driver_mio::rendezvous::key::load(&home.join(KEY_FILE))
                .map_err(|e| internal(e.to_string()))?
                .map(|identity| identity.public().to_string());
            json!({ "pid": pid, "public_key": key, "home": home.display().to_string() })
        }
        Err(e) => return Err(internal(format!("reading {}: {e}", path.display()))),
    };
    data["running"] = true.into();
    data["pid"] = pid.into();
    let text = status_text(&data, unix_now());
    Ok(Success::new(data, text))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` as `3h12m`, `5m03s`, `42s`.
fn duration_text(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

fn status_text(d: &Value, now: u64) -> String {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let key = s(&d["public_key"]);
    let mut t = format!("Rendezvous running (pid {})", n(&d["pid"]));
    let Some(address) = d["address"].as_str() else {
        t.push_str(&format!(
            "\n  Public key: {key}\n  Home:       {}\n  (starting: no status yet; ask again in a moment)",
            s(&d["home"])
        ));
        return t;
    };
    // The uptime as of now, not as of the last write.
    let uptime = n(&d["uptime_secs"]) + now.saturating_sub(n(&d["updated_at"]));
    let relay = &d["relay"];
    let refused = [
        "refused_not_paired",
        "refused_offline",
        "refused_limited",
        "refused_unknown_sender",
        "refused_malformed",
    ]
    .iter()
    .map(|k| n(&relay[*k]))
    .sum::<u64>();
    t.push_str(&format!(", up {}", duration_text(uptime)));
    t.push_str(&format!("\n  Address:     {address}"));
    t.push_str(&format!("\n  Public key:  {key}"));
    t.push_str(&format!(
        "\n  Reflect:     {}",
        d["reflect_port"]
            .as_u64()
            .map_or("off".into(), |p| format!("UDP {p}"))
    ));
    if let Some(tls) = d["tls_address"].as_str() {
        t.push_str(&format!(
            "\n  Carrier:     TCP {tls}, certificate SHA-256 {}",
            s(&d["tls_fingerprint"])
        ));
    }
    t.push_str(&format!("\n  Home:        {}", s(&d["home"])));
    t.push_str(&format!(
        "\n  Agents:      {} registered, {} online; {} trust pairs",
        n(&d["agents"]["registered"]),
        n(&d["agents"]["online"]),
        n(&d["trust_pairs"])
    ));
    t.push_str(&format!(
        "\n  Relay:       {} packets ({} bytes) forwarded, {refused} refused (not paired {}, offline {}, over limit {}, unknown sender {}, malformed {})",
        n(&relay["forwarded_packets"]),
        n(&relay["forwarded_bytes"]),
        n(&relay["refused_not_paired"]),
        n(&relay["refused_offline"]),
        n(&relay["refused_limited"]),
        n(&relay["refused_unknown_sender"]),
        n(&relay["refused_malformed"]),
    ));
    t.push_str(&format!(
        "\n  UDP:         {} datagrams in, {} out",
        n(&d["udp"]["datagrams_in"]),
        n(&d["udp"]["datagrams_out"])
    ));
    let hs = &d["handshakes"];
    t.push_str(&format!(
        "\n  Handshakes:  {} tunnel peers; {} cookies sent under load, {} over the per-source limit, {} unkept peers forgotten",
        n(&hs["tunnel_peers"]),
        n(&hs["cookie_replies"]),
        n(&hs["source_limited"]),
        n(&hs["peers_forgotten"]),
    ));
    t.push_str(&format!(
        "\n  (as of {} ago)",
        duration_text(now.saturating_sub(n(&d["updated_at"])))
    ));
    t
}
