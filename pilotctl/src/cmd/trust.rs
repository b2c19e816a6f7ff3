//! Trust and discovery: `handshake`, `pending`, `approve`, `reject`,
//! `trust`, `untrust`, `find`.

use driver_mio::ipc::api::Request;
use serde_json::{json, Value};

use super::info::{default_client, request};
use crate::output::{Failure, Success};

fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

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
    let rows = list.as_array().cloned().unwrap_or_default();
    let text = if rows.is_empty() {
        "No pending trust requests".to_string()
    } else {
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {:<20} {}  {}",
                    text(r, "node"),
                    text(r, "hostname"),
                    text(r, "fingerprint"),
                    text(r, "reason")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(Success::new(list, text))
}

/// `pilotctl approve <node>`.
pub fn approve(node: String) -> Result<Success, Failure> {
    let mut c = default_client()?;
    request(&mut c, Request::Approve { node: node.clone() })?;
    Ok(Success::new(
        json!({ "node": node, "trusted": true }),
        format!("Approved: {node} is trusted"),
    ))
}

/// `pilotctl reject <node> [reason]`.
pub fn reject(node: String, reason: Option<String>) -> Result<Success, Failure> {
    let mut c = default_client()?;
    request(
        &mut c,
        Request::Reject {
            node: node.clone(),
            reason: reason.unwrap_or_default(),
        },
    )?;
    Ok(Success::new(
        json!({ "node": node, "rejected": true }),
        format!("Rejected the request from {node}"),
    ))
}

/// `pilotctl trust`: the peers we trust, with their key fingerprints.
pub fn trusted() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let list = request(&mut c, Request::Trusted)?;
    let rows = list.as_array().cloned().unwrap_or_default();
    let text = if rows.is_empty() {
        "No trusted peers (ask one with `pilotctl handshake <peer>`)".to_string()
    } else {
        rows.iter()
            .map(|r| {
                format!(
                    "{}  {:<20} {}  {}",
                    text(r, "node"),
                    text(r, "hostname"),
                    text(r, "fingerprint"),
                    if r["connected"] == true {
                        "connected"
                    } else {
                        "idle"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
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

/// `pilotctl find <hostname|address>`.
pub fn find(peer: String) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let v = request(&mut c, Request::Resolve { peer })?;
    let text = format!(
        "Address:     {}\nHostname:    {}\nFingerprint: {}\nPublic:      {}\nOnline:      {}",
        text(&v, "address"),
        text(&v, "hostname"),
        text(&v, "fingerprint"),
        text(&v, "public"),
        text(&v, "online")
    );
    Ok(Success::new(v, text))
}
