//! `pilotctl status`: one screen about this agent (like `tailscale
//! status`): who it is and how it reaches the rendezvous, its trusted
//! peers with path, RTT, last seen and traffic, then the trust requests
//! pending (yours to decide), outgoing (the peer's to decide) and
//! rejected (either way, with the reason). One IPC request (`status`).

use std::time::{SystemTime, UNIX_EPOCH};

use driver_mio::ipc::api::Request;
use serde_json::Value;

use super::client::{default_client, request, text};
use super::diag::human_bytes;
use super::CommandDoc;
use crate::output::{Failure, Success};

/// What `context` says of `status`.
pub const DOCS: &[CommandDoc] = &[CommandDoc {
    name: "status",
    returns: r#"{"agent":{"address":"string|null","node_id":"number|null","hostname":"string|null","public":"bool","fingerprint":"string","rendezvous":"string","registered":"bool","public_endpoint":"string|null","transport":"string","transport_mode":"string","services":{"echo":"bool","data_exchange":"bool","event_stream":"bool"},"auto_approve":"bool","uptime_secs":"number"},"peers":[{"node":"string","node_id":"number","hostname":"string|null","path":"string","endpoint":"string|null","rtt_ms":"number|null","last_seen_secs":"number|null","bytes_in":"number","bytes_out":"number"}],"pending":[{"node":"string","node_id":"number","hostname":"string|null","fingerprint":"string","reason":"string"}],"outgoing":[{"to":"string","node_id":"number|null","reason":"string","since":"number"}],"rejected":[{"node":"string","node_id":"number","hostname":"string|null","by":"string","reason":"string","at":"number"}]}"#,
    errors: &["not_running", "timeout"],
}];

/// `pilotctl status`.
pub fn status() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let data = request(&mut c, Request::Status)?;
    let text = render(&data, unix_now());
    Ok(Success::new(data, text))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` as a short age: `12s`, `5m`, `3h`, `2d`.
fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// A wall-clock time (unix seconds) as an age from `now`.
fn ago(at: &Value, now: u64) -> String {
    at.as_u64().map_or("-".into(), |t| {
        format!("{} ago", age(now.saturating_sub(t) as f64))
    })
}

/// A reason in quotes, or `(no reason)`.
fn reason(v: &Value) -> String {
    match v["reason"].as_str() {
        Some(r) if !r.is_empty() => format!("{r:?}"),
        _ => "(no reason)".into(),
    }
}

fn on_off(b: &Value) -> &'static str {
    if b == true {
        "on"
    } else {
        "off"
    }
}

/// The text form; `now` in unix seconds (for the ages of requests).
fn render(d: &Value, now: u64) -> String {
    let a = &d["agent"];
    let mut out = String::new();
    let services = &a["services"];
    let all_services = ["echo", "data_exchange", "event_stream"];
    let running: Vec<&str> = all_services
        .iter()
        .copied()
        .filter(|s| services[*s] == true)
        .collect();
    let services = match running.len() {
        3 => "on".to_string(),
        0 => "off".to_string(),
        _ => running.join(","),
    };
    out.push_str(&format!(
        "{}  {}  {}\n",
        a["address"].as_str().unwrap_or("(no address yet)"),
        text(a, "hostname"),
        if a["public"] == true {
            "public"
        } else {
            "private"
        },
    ));
    out.push_str(&format!(
        "  rendezvous {} ({}), transport {}, services {}, auto-approve {}\n",
        text(a, "rendezvous"),
        if a["registered"] == true {
            "registered"
        } else {
            "NOT registered: retrying; see pilot.log"
        },
        text(a, "transport"),
        services,
        on_off(&a["auto_approve"]),
    ));

    let rows = |k: &str| d[k].as_array().cloned().unwrap_or_default();
    let peers = rows("peers");
    out.push_str("\nPeers:\n");
    if peers.is_empty() {
        out.push_str("  none (ask one with `pilotctl handshake <peer>`)\n");
    } else {
        out.push_str(&format!(
            "  {:<16} {:<17} {:<22} {:>9} {:>9} {:>10} {:>10}\n",
            "HOSTNAME", "ADDRESS", "PATH", "RTT", "SEEN", "IN", "OUT"
        ));
        for p in &peers {
            let path = match (p["path"].as_str(), p["endpoint"].as_str()) {
                (Some("direct"), Some(e)) => format!("direct {e}"),
                (Some(path), _) => path.to_string(),
                _ => "-".into(),
            };
            let rtt = p["rtt_ms"]
                .as_f64()
                .map_or("-".into(), |ms| format!("{ms:.2} ms"));
            let seen = p["last_seen_secs"]
                .as_f64()
                .map_or("never".into(), |s| format!("{} ago", age(s)));
            let bytes = |k: &str| human_bytes(p[k].as_u64().unwrap_or(0));
            out.push_str(&format!(
                "  {:<16} {:<17} {:<22} {:>9} {:>9} {:>10} {:>10}\n",
                text(p, "hostname"),
                text(p, "node"),
                path,
                rtt,
                seen,
                bytes("bytes_in"),
                bytes("bytes_out"),
            ));
        }
    }

    let pending = rows("pending");
    if !pending.is_empty() {
        out.push_str("\nPending (yours to approve or reject):\n");
        for p in &pending {
            out.push_str(&format!(
                "  {:<16} {:<17} {}  {}  (pilotctl approve {} | pilotctl reject {})\n",
                text(p, "hostname"),
                text(p, "node"),
                text(p, "fingerprint"),
                reason(p),
                text(p, "node_id"),
                text(p, "node_id"),
            ));
        }
    }
    let outgoing = rows("outgoing");
    if !outgoing.is_empty() {
        out.push_str("\nOutgoing (waiting for the peer to approve):\n");
        for o in &outgoing {
            out.push_str(&format!(
                "  {:<34} {}  sent {}\n",
                text(o, "to"),
                reason(o),
                ago(&o["since"], now),
            ));
        }
    }
    let rejected = rows("rejected");
    if !rejected.is_empty() {
        out.push_str("\nRejected:\n");
        for r in &rejected {
            let who = if r["by"] == "peer" {
                "rejected your request"
            } else {
                "you rejected its request"
            };
            out.push_str(&format!(
                "  {:<16} {:<17} {who}: {}  {}\n",
                text(r, "hostname"),
                text(r, "node"),
                reason(r),
                ago(&r["at"], now),
            ));
        }
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_shows_every_section() {
        let d = json!({
            "agent": {"address": "0:0000.0000.0010", "hostname": "alice", "public": false,
                "rendezvous": "127.0.0.1:4000", "registered": true, "transport": "udp",
                "services": {"echo": true, "data_exchange": true, "event_stream": true},
                "auto_approve": false},
            "peers": [{"node": "0:0000.0000.0011", "hostname": "bob", "path": "direct",
                "endpoint": "127.0.0.1:5000", "rtt_ms": 0.4, "last_seen_secs": 2.0,
                "bytes_in": 2048, "bytes_out": 10}],
            "pending": [{"node": "0:0000.0000.0012", "node_id": 18, "hostname": "carol",
                "fingerprint": "sha256:ab", "reason": "let me in"}],
            "outgoing": [{"to": "0:0000.0000.0013", "node_id": 19, "reason": "", "since": 940}],
            "rejected": [{"node": "0:0000.0000.0014", "node_id": 20, "hostname": "dave",
                "by": "peer", "reason": "not now", "at": 700}],
        });
        let t = render(&d, 1000);
        assert!(t.starts_with("0:0000.0000.0010  alice  private\n"), "{t}");
        assert!(t.contains("rendezvous 127.0.0.1:4000 (registered), transport udp, services on, auto-approve off"), "{t}");
        assert!(
            t.contains("bob")
                && t.contains("direct 127.0.0.1:5000")
                && t.contains("0.40 ms")
                && t.contains("2s ago")
                && t.contains("2.0 KiB"),
            "{t}"
        );
        assert!(
            t.contains("carol") && t.contains("\"let me in\"") && t.contains("pilotctl approve 18"),
            "{t}"
        );
        assert!(
            t.contains("0:0000.0000.0013")
                && t.contains("(no reason)")
                && t.contains("sent 1m ago"),
            "{t}"
        );
        assert!(
            t.contains("dave")
                && t.contains("rejected your request: \"not now\"")
                && t.contains("5m ago"),
            "{t}"
        );
    }

    #[test]
    fn ages_read_short() {
        assert_eq!(age(5.0), "5s");
        assert_eq!(age(125.0), "2m");
        assert_eq!(age(7300.0), "2h");
        assert_eq!(age(200_000.0), "2d");
        assert_eq!(age(-1.0), "0s");
    }
}
