//! Diagnostics: `ping <peer> [--count N]` (round trips through the
//! peer's echo service, datagrams to port 7).

use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Subcommand;
use driver_mio::ipc::api::{Event, Request};
use serde_json::json;

use super::client::{default_client, failure, request};
use super::CommandDoc;
use crate::output::{Failure, Success};

/// Diagnostics.
#[derive(Subcommand, Debug)]
pub enum DiagCommand {
    /// Round trips to a trusted peer through its echo service.
    Ping {
        /// The peer's address (or hostname).
        peer: String,
        /// How many echoes.
        #[arg(long, default_value_t = 4)]
        count: u32,
        /// Seconds to wait for each echo.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
}

impl DiagCommand {
    /// Runs the command.
    pub fn run(self, json: bool) -> Result<Success, Failure> {
        match self {
            DiagCommand::Ping {
                peer,
                count,
                timeout,
            } => ping(peer, count, Duration::from_secs(timeout), json),
        }
    }
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[CommandDoc {
    name: "ping",
    returns: r#"{"peer":"string","sent":"number","received":"number","rtt_ms":{"min":"number","median":"number","avg":"number","max":"number"},"samples_ms":["number"]}"#,
    errors: &[
        "not_running",
        "invalid_argument",
        "not_found",
        "not_trusted",
        "timeout",
    ],
}];

/// Pings `peer` `count` times, one second apart at most; each waits up to
/// `timeout` for its echo.
pub fn ping(
    peer: String,
    count: u32,
    timeout: Duration,
    json_mode: bool,
) -> Result<Success, Failure> {
    if count == 0 {
        return Err(Failure::new(
            "invalid_argument",
            "--count must be at least 1",
            "",
        ));
    }
    let mut c = default_client()?;
    // Our own port for the answers: the first free one from 40000.
    let mut port = 0;
    for p in 40000..40100u16 {
        if request(&mut c, Request::Bind { port: p }).is_ok() {
            port = p;
            break;
        }
    }
    if port == 0 {
        return Err(Failure::new(
            "internal",
            "no free local port for the answers",
            "",
        ));
    }
    let mut rtts = Vec::new();
    for seq in 0..count {
        let payload = format!("ping {seq}");
        let start = Instant::now();
        request(
            &mut c,
            Request::SendDatagram {
                peer: peer.clone(),
                port: 7,
                src_port: port,
                data_b64: base64::engine::general_purpose::STANDARD.encode(&payload),
            },
        )?;
        let deadline = start + timeout;
        let mut rtt = None;
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.next_event(left).map_err(failure)? {
                Some(Event::Datagram { data_b64, .. }) => {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(data_b64)
                        .unwrap_or_default();
                    if data == payload.as_bytes() {
                        rtt = Some(start.elapsed());
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
        match rtt {
            Some(d) => {
                if !json_mode {
                    println!(
                        "echo from {peer}: seq={seq} time={:.2} ms",
                        d.as_secs_f64() * 1e3
                    );
                }
                rtts.push(d);
            }
            None => {
                if !json_mode {
                    println!(
                        "no echo from {peer}: seq={seq} (timeout {} ms)",
                        timeout.as_millis()
                    );
                }
            }
        }
        if seq + 1 < count {
            std::thread::sleep(Duration::from_millis(200).saturating_sub(start.elapsed()));
        }
    }
    let _ = request(&mut c, Request::Unbind { port });
    if rtts.is_empty() {
        return Err(Failure::new(
            "timeout",
            format!("no echo from {peer} in {count} tries"),
            "is the peer online, trusted (`pilotctl trust`), and running its echo service?",
        ));
    }
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let mut sorted = ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let median = sorted[sorted.len() / 2];
    let avg = ms.iter().sum::<f64>() / ms.len() as f64;
    Ok(Success::new(
        json!({
            "peer": peer, "sent": count, "received": rtts.len(),
            "rtt_ms": { "min": min, "median": median, "avg": avg, "max": max }, "samples_ms": ms,
        }),
        format!(
            "--- {peer} ---\n{count} sent, {} received, rtt min/median/avg/max = {min:.2}/{median:.2}/{avg:.2}/{max:.2} ms",
            rtts.len()
        ),
    ))
}
