//! Trust: `handshake`, `pending`, `approve`, `reject`, `trust`,
//! `untrust`.

use clap::Subcommand;
use driver_mio::ipc::api::Request;
use serde_json::json;

use super::client::{default_client, request, text};
use super::CommandDoc;
use crate::output::{Failure, Success};

/// Trust commands.
#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Ask a peer (hostname or address) for trust.
    Handshake {
        /// Hostname, address or node ID.
        peer: String,
        /// Why, for whoever decides.
        reason: Option<String>,
    },
    /// Trust requests waiting for your decision.
    Pending,
    /// Approve a pending trust request.
    Approve {
        /// The requester's address, node ID or hostname.
        node: String,
    },
    /// Reject a pending trust request.
    Reject {
        /// The requester's address, node ID or hostname.
        node: String,
        /// Why.
        reason: Option<String>,
    },
    /// The peers you trust, with their key fingerprints.
    Trust,
    /// Stop trusting a peer; its sessions close on both sides.
    Untrust {
        /// The peer's address, node ID or hostname.
        node: String,
    },
}

impl TrustCommand {
    /// Runs the command.
    pub fn run(self, _json: bool) -> Result<Success, Failure> {
        match self {
            TrustCommand::Handshake { peer, reason } => handshake(peer, reason),
            TrustCommand::Pending => pending(),
            TrustCommand::Approve { node } => approve(node),
            TrustCommand::Reject { node, reason } => reject(node, reason),
            TrustCommand::Trust => trusted(),
            TrustCommand::Untrust { node } => untrust(node),
        }
    }
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "handshake",
        returns: r#"{"peer":"string","requested":"bool"}"#,
        errors: &[
            "not_running",
            "invalid_argument",
            "not_found",
            "already_exists",
            "not_registered",
            "timeout",
        ],
    },
    CommandDoc {
        name: "pending",
        returns: r#"[{"node":"string","node_id":"number","hostname":"string|null","fingerprint":"string","reason":"string"}]"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "approve",
        returns: r#"{"node":"string","trusted":"bool"}"#,
        errors: &["not_running", "invalid_argument", "not_found", "timeout"],
    },
    CommandDoc {
        name: "reject",
        returns: r#"{"node":"string","rejected":"bool"}"#,
        errors: &["not_running", "invalid_argument", "not_found", "timeout"],
    },
    CommandDoc {
        name: "trust",
        returns: r#"[{"node":"string","node_id":"number","hostname":"string|null","fingerprint":"string","public_key":"string","since":"number","connected":"bool"}]"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "untrust",
        returns: r#"{"node":"string","trusted":"bool"}"#,
        errors: &["not_running", "invalid_argument", "not_found", "timeout"],
    },
];

/// `pilotctl handshake <peer> [reason]`: ask for trust.
pub fn handshake(peer: String, reason: Option<String>) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let reason = reason.unwrap_or_default();
    request(
        &mut c,
        Request::Handshake {
            peer: peer.clone(),
            reason,
        },
    )?;
    Ok(Success::new(
        json!({ "peer": peer, "requested": true }),
        format!("Trust requested from {peer}; it is trusted once {peer} approves (see `pilotctl trust`)"),
    ))
}

/// `pilotctl pending`: requests waiting for our decision.
pub fn pending() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let list = request(&mut c, Request::Pending)?;
    let text = table(
        &list,
        "No pending trust requests",
        &["ADDRESS", "HOSTNAME", "FINGERPRINT", "REASON"],
        |r| {
            vec![
                text(r, "node"),
                text(r, "hostname"),
                text(r, "fingerprint"),
                text(r, "reason"),
            ]
        },
    );
    Ok(Success::new(list, text))
}

/// `list`'s rows under `header` (the shared layout of `peers`), or
/// `empty` when there are none.
fn table(
    list: &serde_json::Value,
    empty: &str,
    header: &[&str],
    row: impl Fn(&serde_json::Value) -> Vec<String>,
) -> String {
    match list.as_array() {
        Some(rows) if !rows.is_empty() => {
            let rows: Vec<Vec<String>> = rows.iter().map(row).collect();
            super::client::table(header, &rows, &[])
        }
        _ => empty.to_string(),
    }
}

/// The pending requester `node` names (address, node ID or hostname), as
/// `ADDRESS (HOSTNAME)` for the text answer; as typed when the list has
/// no such request (the daemon's own answer then says what is wrong).
fn requester(c: &mut driver_mio::client::Client, node: &str) -> String {
    let Ok(list) = request(c, Request::Pending) else {
        return node.to_string();
    };
    let id = node.trim().parse::<u64>().ok();
    let found = list.as_array().into_iter().flatten().find(|r| {
        r["node"] == node || r["hostname"] == node || (id.is_some() && r["node_id"].as_u64() == id)
    });
    match found {
        Some(r) => match r["hostname"].as_str() {
            Some(h) => format!("{} ({h})", text(r, "node")),
            None => text(r, "node"),
        },
        None => node.to_string(),
    }
}

/// `pilotctl approve <node>`.
pub fn approve(node: String) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let shown = requester(&mut c, &node);
    request(&mut c, Request::Approve { node: node.clone() })?;
    Ok(Success::new(
        json!({ "node": node, "trusted": true }),
        format!("Approved: {shown} is trusted"),
    ))
}

/// `pilotctl reject <node> [reason]`.
pub fn reject(node: String, reason: Option<String>) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let shown = requester(&mut c, &node);
    request(
        &mut c,
        Request::Reject {
            node: node.clone(),
            reason: reason.unwrap_or_default(),
        },
    )?;
    Ok(Success::new(
        json!({ "node": node, "rejected": true }),
        format!("Rejected the request from {shown}"),
    ))
}

/// `pilotctl trust`: the peers we trust, with their key fingerprints.
pub fn trusted() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let list = request(&mut c, Request::Trusted)?;
    let text = table(
        &list,
        "No trusted peers (ask one with `pilotctl handshake <peer>`)",
        &["ADDRESS", "HOSTNAME", "FINGERPRINT", "STATE"],
        |r| {
            vec![
                text(r, "node"),
                text(r, "hostname"),
                text(r, "fingerprint"),
                if r["connected"] == true {
                    "connected"
                } else {
                    "idle"
                }
                .to_string(),
            ]
        },
    );
    Ok(Success::new(list, text))
}

/// `pilotctl untrust <node>`.
pub fn untrust(node: String) -> Result<Success, Failure> {
    let mut c = default_client()?;
    request(&mut c, Request::Untrust { node: node.clone() })?;
    Ok(Success::new(
        json!({ "node": node, "trusted": false }),
        format!("{node} is no longer trusted; its sessions are closed"),
    ))
}
