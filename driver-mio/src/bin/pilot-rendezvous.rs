//! `pilot-rendezvous`: the registry and beacon agents register with.
//!
//! ```text
//! pilot-rendezvous [--listen ADDR] [--home DIR] [--network N] [--json]
//!                  [--log-level FILTER] [--refresh-secs S] [--ttl-secs S]
//!                  [--tls-listen ADDR [--tls-cert FILE --tls-key FILE]]
//! ```
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
use tracing_appender::rolling::{RollingFileAppender, Rotation};
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
    /// $PILOT_HOME, else ~/.pilot-rendezvous).
    #[arg(long)]
    home: Option<PathBuf>,
    /// The network whose addresses it hands out.
    #[arg(long, default_value_t = 0)]
    network: u16,
    /// Print the startup line (or the error) as one JSON object.
    #[arg(long)]
    json: bool,
    /// Log filter: a level (error, warn, info, debug, trace) or tracing
    /// directives (default: $RUST_LOG, else info).
    #[arg(long)]
    log_level: Option<String>,
    /// How often agents should refresh their registration, in seconds.
    #[arg(long)]
    refresh_secs: Option<u64>,
    /// How long a registration lasts without refresh, in seconds.
    #[arg(long)]
    ttl_secs: Option<u64>,
    /// A second UDP port, on the listen address, that answers Reflect
    /// requests so agents can classify their NATs (off by default).
    #[arg(long)]
    reflect_port: Option<u16>,
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

fn home_dir(args: &Args) -> Result<PathBuf, ServerError> {
    if let Some(h) = &args.home {
        return Ok(h.clone());
    }
    if let Some(h) = std::env::var_os("PILOT_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".pilot-rendezvous")),
        None => Err(ServerError::from(fsutil::FileError::Missing {
            path: PathBuf::from("$HOME"),
        })),
    }
}

fn run(args: &Args) -> Result<(), ServerError> {
    let home = home_dir(args)?;
    fsutil::ensure_private_dir(&home)?;
    init_logging(args, &home);
    let mut config = ServerConfig::new(args.listen, home.clone());
    config.network = args.network;
    config.refresh_interval = args.refresh_secs.map(Duration::from_secs);
    config.registration_ttl = args.ttl_secs.map(Duration::from_secs);
    config.reflect_port = args.reflect_port;
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
    server.run()
}

fn init_logging(args: &Args, home: &std::path::Path) {
    let filter = || match &args.log_level {
        Some(f) => EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!("pilot-rendezvous: --log-level {f:?}: {e}; using info");
            EnvFilter::new("info")
        }),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let stderr = fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter());
    // A week of daily files; the writes are rare enough to go straight to
    // the file from the loop's thread.
    let file = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix("rendezvous")
        .filename_suffix("log")
        .max_log_files(7)
        .build(home)
        .map_err(|e| eprintln!("pilot-rendezvous: no log file in {}: {e}", home.display()))
        .ok()
        .map(|appender| {
            fmt::layer()
                .with_ansi(false)
                .with_writer(appender)
                .with_filter(filter())
        });
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(file)
        .try_init();
}

fn report_error(json: bool, e: &ServerError) {
    if json {
        let mut v = serde_json::json!({
            "status": "error",
            "code": e.code(),
            "message": e.to_string(),
        });
        if let Some(h) = e.hint() {
            v["hint"] = serde_json::Value::String(h);
        }
        println!("{v}");
    }
    eprintln!("pilot-rendezvous: {e}");
    if let Some(h) = e.hint() {
        eprintln!("  hint: {h}");
    }
}
