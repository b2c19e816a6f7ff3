//! Diagnostics: `ping <peer> [--count N]` (round trips through the
//! peer's echo service, datagrams to port 7), `peers` (path, session,
//! RTT and traffic per peer), `connections` and `disconnect <id>` (the
//! agent's streams), `bench <peer> [size]` (stream throughput through the
//! peer's echo service).

use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Subcommand;
use driver_mio::ipc::api::{Event, Request};
use serde_json::json;

use super::client::{default_client, failure, request, table, text};
use super::messaging::{deadline_in, no_limit_if_zero, open_stream};
use super::CommandDoc;
use crate::output::{Failure, Success};

/// Diagnostics.
#[derive(Subcommand, Debug)]
pub enum DiagCommand {
    /// Round trips to a trusted peer through its echo service.
    Ping {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// How many echoes (0: until Ctrl-C, then the summary).
        #[arg(long, default_value_t = 4)]
        count: u32,
        /// Seconds to wait for each echo, fractions allowed (0: no limit).
        #[arg(long, default_value = "3", value_parser = super::messaging::seconds)]
        timeout: Duration,
        /// Seconds between echoes, fractions allowed (at least 0.01).
        #[arg(long, default_value = "0.2", value_parser = super::messaging::seconds)]
        interval: Duration,
    },
    /// Peers we trust or hold a session with: path, session state, RTT
    /// (of the latest handshake), traffic, last handshake.
    Peers,
    /// This agent's NAT and the rendezvous's reachability: mapping
    /// behaviour, port allocation (with its stride), the public addresses
    /// seen (the agent classifies its NAT again first, about 3 s).
    Netcheck {
        /// Report what the agent last found, without measuring again.
        #[arg(long)]
        cached: bool,
    },
    /// This agent's open streams (applications' and built-in services').
    Connections,
    /// Abort one of this agent's streams (its owner sees it closed).
    Disconnect {
        /// The stream's ID (see `pilotctl connections`).
        id: u32,
    },
    /// Stream throughput to a trusted peer through its echo service.
    Bench {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// Bytes to send (and receive back): 65536, 64K, 1M, 1G.
        #[arg(default_value = "1M")]
        size: String,
        /// Seconds without progress before giving up, fractions allowed
        /// (0: no limit).
        #[arg(long, default_value = "30", value_parser = super::messaging::seconds)]
        timeout: Duration,
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
                interval,
            } => ping(peer, count, no_limit_if_zero(timeout), interval, json),
            DiagCommand::Peers => peers(),
            DiagCommand::Connections => connections(),
            DiagCommand::Netcheck { cached } => netcheck(!cached),
            DiagCommand::Disconnect { id } => disconnect(id),
            DiagCommand::Bench {
                peer,
                size,
                timeout,
            } => bench(peer, &size, no_limit_if_zero(timeout)),
        }
    }
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "ping",
        returns: r#"{"peer":"string","sent":"number","received":"number","rtt_ms":{"min":"number","median":"number","avg":"number","max":"number"},"samples_ms":["number"]}"#,
        errors: &[
            "not_running",
            "invalid_argument",
            "not_found",
            "not_trusted",
            "timeout",
        ],
    },
    CommandDoc {
        name: "peers",
        returns: r#"[{"node":"string","node_id":"number","hostname":"string|null","trusted":"bool","path":"string","endpoint":"string|null","state":"string","rtt_ms":"number|null","last_handshake_secs":"number|null","last_seen_secs":"number|null","bytes_in":"number","bytes_out":"number","packets_in":"number","packets_out":"number"}]"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "netcheck",
        returns: r#"{"mapping":"string","stride":"number|null","state":"string","allocation":"string","last_port":"number|null","public_addresses":["string"],"rendezvous":{"address":"string","udp":"bool","reflect_address":"string|null","reflect_udp":"bool|null"},"observed":{"primary_to_main":"string|null","primary_to_reflect":"string|null","fresh_to_main":"string|null","fresh_to_reflect":"string|null"}}"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "connections",
        returns: r#"[{"id":"number","peer":"string","local_port":"number","remote_port":"number","state":"string","bytes_sent":"number","bytes_received":"number","age_secs":"number","owner":"string"}]"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "disconnect",
        returns: r#"{"stream":"number","closed":"bool"}"#,
        errors: &["not_running", "not_found", "timeout"],
    },
    CommandDoc {
        name: "bench",
        returns: r#"{"peer":"string","bytes":"number","seconds":"number","rate_mib_s":"number"}"#,
        errors: &[
            "not_running",
            "invalid_argument",
            "not_found",
            "not_trusted",
            "not_registered",
            "connection_failed",
            "timeout",
            "interrupted",
        ],
    },
];

/// Pings `peer` `count` times, one second apart at most; each waits up to
/// `timeout` for its echo.
pub fn ping(
    peer: String,
    count: u32,
    timeout: Duration,
    interval: Duration,
    json_mode: bool,
) -> Result<Success, Failure> {
    if interval < Duration::from_millis(10) {
        return Err(Failure::new(
            "invalid_argument",
            format!("--interval {} s is too short", interval.as_secs_f64()),
            "use at least 0.01 (10 ms)",
        ));
    }
    // --count 0: until Ctrl-C (or SIGTERM), which ends the loop and
    // leads to the summary instead of ending the process.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    if count == 0 {
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, stop.clone());
        }
    }
    let stopped = || stop.load(std::sync::atomic::Ordering::Relaxed);
    let mut c = default_client()?;
    // Our own port for the answers: the first free one from 40000.
    let mut port = 0;
    for p in 40000..40100u16 {
        if request(
            &mut c,
            Request::Bind {
                port: p,
                force: false,
            },
        )
        .is_ok()
        {
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
    let mut paths: Vec<String> = Vec::new();
    let mut sent = 0u32;
    for seq in 0..if count == 0 { u32::MAX } else { count } {
        if stopped() {
            break;
        }
        sent += 1;
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
        let deadline = deadline_in(timeout);
        let mut rtt = None;
        let mut from_addr = String::new();
        while Instant::now() < deadline && !stopped() {
            // In slices, so that Ctrl-C is seen at once.
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            match c.next_event(left).map_err(failure)? {
                Some(Event::Datagram { data_b64, from, .. }) => {
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(data_b64)
                        .unwrap_or_default();
                    if data == payload.as_bytes() {
                        rtt = Some(start.elapsed());
                        // "ADDRESS:PORT": the peer's address.
                        from_addr = from
                            .rsplit_once(':')
                            .map_or(from.clone(), |(a, _)| a.into());
                        break;
                    }
                }
                Some(_) => {}
                None => {}
            }
        }
        match rtt {
            Some(d) => {
                // Which path the echo took: the daemon's view right after.
                let path = path_to(&mut c, &from_addr);
                if !json_mode {
                    crate::output::say(format_args!(
                        "echo from {peer}: seq={seq} time={:.2} ms path={path}",
                        d.as_secs_f64() * 1e3
                    ));
                }
                rtts.push(d);
                paths.push(path);
            }
            // Cut short by Ctrl-C: not a lost echo.
            None if stopped() => sent -= 1,
            None => {
                if !json_mode {
                    crate::output::say(format_args!(
                        "no echo from {peer}: seq={seq} (timeout {} ms)",
                        timeout.as_millis()
                    ));
                }
            }
        }
        if seq.saturating_add(1) < count || count == 0 {
            let next = start + interval;
            while !stopped() && Instant::now() < next {
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
        }
    }
    let _ = request(&mut c, Request::Unbind { port });
    if rtts.is_empty() {
        return Err(Failure::new(
            "timeout",
            no_echo(&peer, sent),
            "is the peer online, trusted (`pilotctl trust`), and running its echo service?",
        ));
    }
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    let mut sorted = ms.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    let median = median(&sorted);
    let avg = ms.iter().sum::<f64>() / ms.len() as f64;
    let loss = 100.0 * f64::from(sent - rtts.len() as u32) / f64::from(sent.max(1));
    Ok(Success::new(
        json!({
            "peer": peer, "sent": sent, "received": rtts.len(), "loss_percent": loss,
            "rtt_ms": { "min": min, "median": median, "avg": avg, "max": max }, "samples_ms": ms,
            "paths": paths,
        }),
        format!(
            "--- {peer} ping statistics ---\n{sent} sent, {} received, {loss:.0}% loss, rtt min/median/avg/max = {min:.2}/{median:.2}/{avg:.2}/{max:.2} ms",
            rtts.len()
        ),
    ))
}

/// The path (`direct`, `relay`, `none`) the daemon uses to `address`.
fn path_to(c: &mut driver_mio::client::Client, address: &str) -> String {
    request(c, Request::Peers)
        .ok()
        .and_then(|v| {
            v.as_array()?
                .iter()
                .find(|p| p["node"].as_str() == Some(address))
                .and_then(|p| p["path"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "none".into())
}

/// What a ping that got no echo at all says: "in 1 try", "in 3 tries".
fn no_echo(peer: &str, sent: u32) -> String {
    format!(
        "no echo from {peer} in {sent} {}",
        if sent == 1 { "try" } else { "tries" }
    )
}

/// The middle of sorted samples (not empty); with an even count, the
/// mean of the two in the middle.
fn median(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    match sorted.len() % 2 {
        0 if mid > 0 => (sorted[mid - 1] + sorted[mid]) / 2.0,
        _ => sorted.get(mid).copied().unwrap_or(0.0),
    }
}

/// `pilotctl peers`.
/// `pilotctl netcheck`.
pub fn netcheck(fresh: bool) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let v = request(&mut c, Request::Netcheck { fresh })?;
    let s = |path: &[&str]| {
        let mut x = &v;
        for k in path {
            x = &x[*k];
        }
        match x {
            serde_json::Value::String(t) => t.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        }
    };
    let yes_no = |path: &[&str]| match s(path).as_str() {
        "true" => "yes".to_string(),
        "false" => "no".to_string(),
        other => other.to_string(),
    };
    let mapping = match v["mapping"].as_str() {
        Some("endpoint-independent") => {
            "endpoint-independent (one public port per socket, whatever the destination)"
                .to_string()
        }
        Some("symmetric-sequential") => {
            "symmetric, sequential (a new port per destination, predictable)".to_string()
        }
        Some("symmetric-random") => {
            "symmetric, random (a new unpredictable port per destination)".to_string()
        }
        _ => format!("unknown ({})", s(&["state"]).replace('_', " ")),
    };
    let filtering = match v["filtering"].as_str() {
        Some("address-dependent-or-none") => {
            "lets in other ports of an address a socket sent to (full or address-restricted cone)"
                .to_string()
        }
        Some("port-dependent") => {
            "only the address and port a socket sent to get in (port-restricted)".to_string()
        }
        _ => "unknown (measured by a fresh netcheck only)".to_string(),
    };
    let allocation = match v["stride"].as_u64() {
        Some(stride) => format!("{} (stride {stride})", s(&["allocation"])),
        None => s(&["allocation"]),
    };
    let addresses = v["public_addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "-".into());
    let text = format!(
        "NAT mapping:      {mapping}\nNAT filtering:    {filtering}\nHairpinning:      {}\nPort allocation:  {allocation}\nPublic addresses: {addresses}\nRendezvous:       {} (UDP: {})\nReflect port:     {} (UDP: {})\nSeen by the rendezvous:\n  primary socket -> main port:    {}\n  primary socket -> reflect port: {}\n  fresh socket   -> main port:    {}\n  fresh socket   -> reflect port: {}",
        yes_no(&["hairpinning"]).replace('-', "unknown"),
        s(&["rendezvous", "address"]),
        yes_no(&["rendezvous", "udp"]),
        s(&["rendezvous", "reflect_address"]),
        yes_no(&["rendezvous", "reflect_udp"]),
        s(&["observed", "primary_to_main"]),
        s(&["observed", "primary_to_reflect"]),
        s(&["observed", "fresh_to_main"]),
        s(&["observed", "fresh_to_reflect"]),
    );
    Ok(Success::new(v, text))
}

pub fn peers() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let list = request(&mut c, Request::Peers)?;
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return Ok(Success::new(
            list,
            "No peers (ask one for trust with `pilotctl handshake <peer>`)",
        ));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            // Which path (direct, relay, none) first, as `status` shows
            // it: an endpoint alone does not say whether it is direct.
            let mut path = match r["endpoint"].as_str() {
                Some(e) => format!("{} {e}", text(r, "path")),
                None => text(r, "path"),
            };
            // What it rides on, where that is not plain UDP.
            if r["transport"] == "compat" {
                path.push_str(" (compat)");
            }
            let rtt = r["rtt_ms"]
                .as_f64()
                .map_or("-".into(), |ms| format!("{ms:.2} ms"));
            let traffic = |b: &str, p: &str| {
                format!(
                    "{} / {}",
                    human_bytes(r[b].as_u64().unwrap_or(0)),
                    r[p].as_u64().unwrap_or(0)
                )
            };
            let age = r["last_handshake_secs"]
                .as_f64()
                .map_or("-".into(), |s| format!("{s:.0} s ago"));
            vec![
                text(r, "node"),
                text(r, "hostname"),
                path,
                text(r, "state"),
                rtt,
                traffic("bytes_in", "packets_in"),
                traffic("bytes_out", "packets_out"),
                age,
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ADDRESS",
            "HOSTNAME",
            "PATH",
            "STATE",
            "RTT",
            "IN",
            "OUT",
            "HANDSHAKE",
        ],
        &cells,
        &[false, false, false, false, true, true, true, true],
    );
    out.push('\n');
    out.push_str("(IN/OUT: bytes / datagrams; RTT: of the latest handshake)");
    Ok(Success::new(list, out))
}

/// `pilotctl connections`: open streams, then the ports that wait for
/// peers.
pub fn connections() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let list = request(&mut c, Request::Connections)?;
    let rows = list.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return Ok(Success::new(list, "No open streams and no listening ports"));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let open = r["id"].is_u64();
            let peer = match (r["peer"].as_str(), r["peer_hostname"].as_str()) {
                (Some(a), Some(h)) => format!("{a} ({h})"),
                (Some(a), None) => a.to_string(),
                _ => "*".to_string(),
            };
            let owner = match r["service"].as_str() {
                Some(name) => format!("service ({name})"),
                None => text(r, "owner"),
            };
            let port = |k: &str| match r[k].as_u64() {
                Some(p) => p.to_string(),
                None => "*".to_string(),
            };
            let bytes = |k: &str| {
                if open {
                    human_bytes(r[k].as_u64().unwrap_or(0))
                } else {
                    "-".to_string()
                }
            };
            vec![
                text(r, "id"),
                peer,
                port("local_port"),
                port("remote_port"),
                text(r, "state"),
                bytes("bytes_sent"),
                bytes("bytes_received"),
                r["age_secs"]
                    .as_f64()
                    .map_or("-".to_string(), |a| format!("{a:.0} s")),
                owner,
            ]
        })
        .collect();
    let out = table(
        &[
            "ID", "PEER", "LOCAL", "REMOTE", "STATE", "SENT", "RECEIVED", "AGE", "OWNER",
        ],
        &cells,
        &[true, false, true, true, false, true, true, true, false],
    );
    Ok(Success::new(list, out))
}

/// `pilotctl disconnect <id>`.
pub fn disconnect(id: u32) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let v = request(&mut c, Request::Disconnect { stream: id })?;
    Ok(Success::new(v, format!("Stream {id} closed")))
}

/// Parses a byte count: digits with an optional binary suffix (`K`, `M`,
/// `G`, also as `KiB`, `MB`...), case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, Failure> {
    let bad = || {
        Failure::new(
            "invalid_argument",
            format!("`{s}` is not a size"),
            "sizes look like 65536, 64K, 1M or 1G (binary multiples), at least 1 byte",
        )
    };
    let t = s.trim().to_ascii_uppercase();
    let t = t
        .strip_suffix("IB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(&t);
    let (digits, shift) = match t.as_bytes().last() {
        Some(b'K') => (&t[..t.len() - 1], 10),
        Some(b'M') => (&t[..t.len() - 1], 20),
        Some(b'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    match n.checked_mul(1 << shift) {
        Some(v) if v > 0 && v <= 1 << 40 => Ok(v),
        _ => Err(bad()),
    }
}

/// Bytes for people: `512 B`, `64.0 KiB`, `1.5 MiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The bytes bench sends, over and over: the echo must return them at
/// the same offsets.
const BENCH_CHUNK: usize = 64 * 1024;

/// `pilotctl bench <peer> [size]`: writes `size` bytes to the peer's echo
/// service while reading the echo; the rate counts the bytes echoed.
pub fn bench(peer: String, size: &str, stall: Duration) -> Result<Success, Failure> {
    let total = parse_size(size)?;
    let mut c = default_client()?;
    let stream = open_stream(&mut c, &peer, 7, stall)?;
    c.set_timeout(stall);
    // No progress for `stall`: the peer stopped taking or echoing data.
    let stalled = |e| match e {
        driver_mio::client::ClientError::Timeout(_) => Failure::new(
            "timeout",
            format!("no progress with {peer} for {} s", stall.as_secs()),
            "is the peer still online and trusted? see `pilotctl peers`",
        ),
        e => failure(e),
    };
    let pattern: Vec<u8> = (0..BENCH_CHUNK).map(|i| (i % 251) as u8).collect();
    let mut progress = Progress::new(total);
    let start = Instant::now();
    let (mut sent, mut received) = (0u64, 0u64);
    let mut shut = false;
    while received < total {
        if sent < total {
            let n = (total - sent).min(BENCH_CHUNK as u64) as usize;
            c.write_stream(stream, &pattern[..n]).map_err(stalled)?;
            sent += n as u64;
        }
        if sent == total && !shut {
            c.shutdown_stream(stream).map_err(stalled)?;
            shut = true;
        }
        // Take what has come back; wait only once everything is sent.
        let wait = if sent < total { Duration::ZERO } else { stall };
        loop {
            match c.read_stream(stream, wait) {
                Ok(Some(bytes)) => {
                    check_echo(&pattern, received, &bytes)?;
                    received += bytes.len() as u64;
                    progress.show(received, start);
                    if sent < total {
                        continue;
                    }
                    break;
                }
                Ok(None) if received < total => {
                    return Err(Failure::new(
                        "connection_failed",
                        format!("{peer}'s echo ended after {received} of {total} bytes"),
                        "the stream was closed or reset; see `pilotctl peers`",
                    ))
                }
                Ok(None) => break,
                Err(driver_mio::client::ClientError::Timeout(_)) if sent < total => break,
                Err(e) => return Err(stalled(e)),
            }
        }
    }
    let elapsed = start.elapsed();
    progress.done();
    let _ = c.close_stream(stream);
    let secs = elapsed.as_secs_f64();
    let rate = total as f64 / (1 << 20) as f64 / secs;
    Ok(Success::new(
        json!({ "peer": peer, "bytes": total, "seconds": secs, "rate_mib_s": rate }),
        format!(
            "{} to {peer} and back through its echo in {secs:.3} s: {rate:.1} MiB/s",
            human_bytes(total)
        ),
    ))
}

/// Checks echoed bytes that start at stream offset `at`.
fn check_echo(pattern: &[u8], at: u64, bytes: &[u8]) -> Result<(), Failure> {
    let mut off = (at % pattern.len() as u64) as usize;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rest.len().min(pattern.len() - off);
        if rest[..n] != pattern[off..off + n] {
            return Err(Failure::new(
                "internal",
                format!("the echo differs from what was sent near byte {at}"),
                "",
            ));
        }
        rest = &rest[n..];
        off = 0;
    }
    Ok(())
}

/// A one-line progress display on stderr, only when it is a terminal.
struct Progress {
    total: u64,
    on: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        Progress {
            total,
            on: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, done: u64, start: Instant) {
        if !self.on
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
        {
            return;
        }
        self.last = Some(Instant::now());
        let secs = start.elapsed().as_secs_f64().max(1e-6);
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\r{:>3}% {} of {}, {:.1} MiB/s ",
            done * 100 / self.total,
            human_bytes(done),
            human_bytes(self.total),
            done as f64 / (1 << 20) as f64 / secs
        );
        let _ = err.flush();
    }

    fn done(&self) {
        if self.on && self.last.is_some() {
            // Clear the line for the result.
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(super::median(&[1.0, 3.0]), 2.0);
        assert_eq!(super::median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(super::median(&[1.0, 2.0, 4.0, 10.0]), 3.0);
        assert_eq!(super::median(&[5.0]), 5.0);
    }

    #[test]
    fn one_try_is_not_one_tries() {
        assert_eq!(super::no_echo("bob", 1), "no echo from bob in 1 try");
        assert_eq!(super::no_echo("bob", 3), "no echo from bob in 3 tries");
    }

    use super::{check_echo, human_bytes, parse_size};

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536").unwrap(), 65536);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("256k").unwrap(), 256 << 10);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("2MB").unwrap(), 2 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        for bad in ["", "0", "K", "1T", "-1", "1.5M", "lots", "2000G"] {
            let e = parse_size(bad).unwrap_err();
            assert_eq!(e.code, "invalid_argument", "{bad:?}");
        }
    }

    #[test]
    fn echo_is_checked_at_its_offset() {
        let pattern: Vec<u8> = (0..10u8).collect();
        assert!(check_echo(&pattern, 8, &[8, 9, 0, 1, 2]).is_ok());
        assert!(check_echo(&pattern, 8, &[8, 9, 1]).is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }
}
