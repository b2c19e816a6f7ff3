//! `pilot-rendezvous`: the registry and beacon agents register with.
//!
//! ```text
//! pilot-rendezvous [--listen ADDR] [--home DIR] [--network N] [--json]
//!                  [--log-level FILTER] [--refresh-secs S] [--ttl-secs S]
//!                  [--reflect-port auto|off|PORT]
//!                  [--tls-listen ADDR [--tls-cert FILE --tls-key FILE]]
//! ```
//!
//! The same rendezvous as `pilotctl rendezvous run`: the same defaults
//! (UDP 0.0.0.0:4000, reflect port auto), the same home
//! (`$PILOT_HOME/rendezvous`, else `~/.pilot/rendezvous`), the same log
//! file (`pilot.log` in the home) and filter variable (`PILOT_LOG`), so
//! either can take over from the other (under systemd, say) with the key
//! and registry agents know.
//!
//! Prints where it listens and the public key agents must pin, then serves
//! until SIGTERM or SIGINT. Exit status 0 after a clean stop, 1 if it
//! could not start or had to stop (the message names the file or socket).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use driver_mio::fsutil;
use driver_mio::rendezvous::{Server, ServerConfig, ServerError, DEFAULT_LISTEN};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Pilot's rendezvous: hands out addresses, reflects public endpoints,
/// relays trust requests.
#[derive(Parser, Debug)]
#[command(name = "pilot-rendezvous", version)]
struct Args {
    /// UDP address to listen on (port 0: any free port; `[::]:PORT` for
    /// dual-stack IPv6 and IPv4).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the key, the registry and the logs (default:
    /// $PILOT_HOME/rendezvous, else ~/.pilot/rendezvous).
    #[arg(long)]
    home: Option<PathBuf>,
    /// The network whose addresses it hands out.
    #[arg(long, default_value_t = 0)]
    network: u16,
    /// Print the startup line (or the error) as one JSON object.
    #[arg(long)]
    json: bool,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives (default: $PILOT_LOG, else info).
    #[arg(long)]
    log_level: Option<String>,
    /// How often agents should refresh their registration, in seconds.
    #[arg(long)]
    refresh_secs: Option<u64>,
    /// How long a registration lasts without refresh, in seconds.
    #[arg(long)]
    ttl_secs: Option<u64>,
    /// Second UDP port, answering only reflect requests, from which agents
    /// classify their NAT (announced to them; nothing to configure on
    /// their side). `auto` (the default): the listen port + 1, left off
    /// when the listen port is 0 or that port is taken; `off`: none.
    #[arg(long, default_value = "auto")]
    reflect_port: String,
    /// Also listen for the compat carrier (TLS + WebSocket) on this TCP
    /// address, e.g. 0.0.0.0:443.
    #[arg(long)]
    tls_listen: Option<SocketAddr>,
    /// The carrier's certificate chain (PEM; reloaded on SIGHUP). Without
    /// it, a self-signed pair kept in the home; its fingerprint is printed.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The carrier's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_error(args.json, &e);
            ExitCode::FAILURE
        }
    }
}

fn home_dir(args: &Args) -> PathBuf {
    args.home
        .clone()
        .unwrap_or_else(driver_mio::rendezvous::default_home)
}

/// Why it could not run: a code for `--json`, a message, a hint.
struct Failed {
    code: &'static str,
    message: String,
    hint: Option<String>,
}

impl From<ServerError> for Failed {
    fn from(e: ServerError) -> Self {
        Failed {
            code: e.code(),
            message: e.to_string(),
            hint: e.hint(),
        }
    }
}

impl From<driver_mio::fsutil::FileError> for Failed {
    fn from(e: driver_mio::fsutil::FileError) -> Self {
        ServerError::from(e).into()
    }
}

fn run(args: &Args) -> Result<(), Failed> {
    let home = home_dir(args);
    fsutil::ensure_private_dir(&home)?;
    init_logging(args, &home);
    let mut config = ServerConfig::new(args.listen, home.clone());
    config.network = args.network;
    config.refresh_interval = args.refresh_secs.map(Duration::from_secs);
    config.registration_ttl = args.ttl_secs.map(Duration::from_secs);
    config.reflect_port = driver_mio::rendezvous::reflect_port(&args.reflect_port, args.listen)
        .map_err(|(message, hint)| Failed {
            code: "invalid_argument",
            message,
            hint: Some(hint.into()),
        })?;
    config.tls_listen = args.tls_listen;
    config.tls_cert = args.tls_cert.clone().zip(args.tls_key.clone());
    let mut server = Server::open(config)?;
    let address = server.local_addr();
    let key = server.public_key();
    let carrier = server.carrier_addr().map(|a| a.to_string());
    let fingerprint = server.carrier_fingerprint().map(str::to_string);
    let line = if args.json {
        serde_json::json!({
            "status": "ok",
            "data": {
                "address": address.to_string(),
                "public_key": key.to_string(),
                "pid": std::process::id(),
                "home": home.display().to_string(),
                "tls_address": carrier,
                "tls_fingerprint": fingerprint,
            }
        })
        .to_string()
    } else {
        let mut text = format!(
            "Rendezvous listening on {address}\n  Public key: {key}\n  Home: {}",
            home.display()
        );
        if let (Some(c), Some(f)) = (&carrier, &fingerprint) {
            text.push_str(&format!(
                "\n  Compat carrier: TCP {c}, path {}\n  TLS certificate SHA-256 (for --tls-pin): {f}",
                driver_mio::compat::WS_PATH
            ));
        }
        text
    };
    let mut out = std::io::stdout().lock();
    // Whoever started us waits for this line: flush it even into a pipe.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    drop(out);
    Ok(server.run()?)
}

fn init_logging(args: &Args, home: &std::path::Path) {
    let filter = || match &args.log_level {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("pilot-rendezvous: --log-level {f:?}: {e}; using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_env("PILOT_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let stderr = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter());
    // `pilot.log` in the home, as `pilotctl rendezvous run` writes it
    // (rotated at start once over 8 MiB, three old files kept).
    let log = home.join("pilot.log");
    fsutil::rotate_log(&log, 8 << 20, 3);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| eprintln!("pilot-rendezvous: no log file {}: {e}", log.display()))
        .ok()
        .map(|f| {
            fmt::layer()
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .with_filter(filter())
        });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

fn report_error(json: bool, e: &Failed) {
    if json {
        let mut v = serde_json::json!({
            "status": "error",
            "code": e.code,
            "message": e.message,
        });
        if let Some(h) = &e.hint {
            v["hint"] = serde_json::Value::String(h.clone());
        }
        println!("{v}");
    }
    eprintln!("pilot-rendezvous: {}", e.message);
    if let Some(h) = &e.hint {
        eprintln!("  hint: {h}");
    }
}
