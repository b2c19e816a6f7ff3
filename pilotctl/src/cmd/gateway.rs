//! `pilotctl gateway start|map|unmap|list|stop` (also as
//! `pilotctl extras gateway ...`, as the original's docs write it): remote
//! agents mapped to local IP addresses, so that curl and browsers reach
//! their TCP services. The daemon does the work (aliases, listeners, the
//! bridging of each connection); these commands only ask it.

use clap::Subcommand;
use driver_mio::ipc::api::Request;
use serde_json::Value;

use super::client::{default_client, lines, request, text};
use super::settings::invalid;
use super::CommandDoc;
use crate::output::{Failure, Success};

/// The gateway's commands.
#[derive(Subcommand, Debug)]
pub enum GatewayCommand {
    /// Start the gateway: each agent gets the next free address of the
    /// subnet, with a TCP listener per port that reaches the same port on
    /// the agent.
    Start {
        /// The local subnet (inside 127.0.0.0/8: rootless on Linux).
        #[arg(long, default_value = driver_mio::daemon::gateway::DEFAULT_SUBNET)]
        subnet: String,
        /// The ports to serve, comma-separated.
        #[arg(long, default_value = "80")]
        ports: String,
        /// Agents to map (addresses or hostnames of trusted peers).
        peers: Vec<String>,
    },
    /// Map one more agent to a local address (the next free one by default).
    Map {
        /// The agent's address (or hostname).
        peer: String,
        /// The local address (inside the gateway's subnet).
        local_ip: Option<String>,
    },
    /// Remove a mapping (and its loopback alias).
    Unmap {
        /// The local address.
        local_ip: String,
    },
    /// The gateway's subnet, ports and mappings.
    List,
    /// Stop the gateway: every mapping and loopback alias goes.
    Stop,
}

/// `pilotctl extras ...`: the original's spelling of some commands.
#[derive(Subcommand, Debug)]
pub enum ExtrasCommand {
    /// The gateway (the same as `pilotctl gateway`).
    #[command(subcommand)]
    Gateway(GatewayCommand),
}

const STATE: &str = r#"{"pid":"number","subnet":"string","ports":["number"],"mappings":[{"local_ip":"string","pilot_addr":"string"}]}"#;
const MAPPED: &str = r#"{"local_ip":"string","pilot_addr":"string","ports":["number"]}"#;
const UNMAPPED: &str = r#"{"local_ip":"string","pilot_addr":"string"}"#;
const STOPPED: &str = r#"{"stopped":"bool","removed":["string"]}"#;

macro_rules! gateway_docs {
    ($($prefix:literal),*) => {
        &[$(
            CommandDoc {
                name: concat!($prefix, "gateway start"),
                returns: STATE,
                errors: &["not_running", "invalid_argument", "not_found", "not_trusted", "already_exists"],
            },
            CommandDoc {
                name: concat!($prefix, "gateway map"),
                returns: MAPPED,
                errors: &["not_running", "invalid_argument", "not_found", "not_trusted", "already_exists"],
            },
            CommandDoc {
                name: concat!($prefix, "gateway unmap"),
                returns: UNMAPPED,
                errors: &["not_running", "invalid_argument", "not_found"],
            },
            CommandDoc {
                name: concat!($prefix, "gateway list"),
                returns: STATE,
                errors: &["not_running", "not_found"],
            },
            CommandDoc {
                name: concat!($prefix, "gateway stop"),
                returns: STOPPED,
                errors: &["not_running", "not_found"],
            },
        )*]
    };
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = gateway_docs!("", "extras ");

/// Parses `80,8080`.
pub fn ports(text: &str) -> Result<Vec<u16>, Failure> {
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    invalid(
                        format!("`{}` is not a port", p.trim()),
                        "--ports takes ports from 1-65535, comma-separated: --ports 80,8080",
                    )
                })
        })
        .collect()
}

/// The gateway's state as text.
fn state_text(v: &Value) -> String {
    let ports: Vec<String> = v["ports"]
        .as_array()
        .map(|a| a.iter().map(|p| p.to_string()).collect())
        .unwrap_or_default();
    format!(
        "Gateway running (pid {})\n  Subnet: {}\n  Ports:  {}\n{}",
        text(v, "pid"),
        text(v, "subnet"),
        ports.join(","),
        lines(&v["mappings"], "  (no mappings)", |m| format!(
            "  {} -> {}",
            text(m, "local_ip"),
            text(m, "pilot_addr")
        ))
    )
}

impl ExtrasCommand {
    /// Runs the command.
    pub fn run(self, json: bool) -> Result<Success, Failure> {
        match self {
            ExtrasCommand::Gateway(g) => g.run(json),
        }
    }
}

impl GatewayCommand {
    /// Runs the command.
    pub fn run(self, _json: bool) -> Result<Success, Failure> {
        let mut c = default_client()?;
        match self {
            GatewayCommand::Start {
                subnet,
                ports: list,
                peers,
            } => {
                let req = Request::GatewayStart {
                    subnet: Some(subnet),
                    ports: ports(&list)?,
                    peers,
                };
                let v = request(&mut c, req)?;
                let t = state_text(&v);
                Ok(Success::new(v, t))
            }
            GatewayCommand::Map { peer, local_ip } => {
                let v = request(&mut c, Request::GatewayMap { peer, local_ip })?;
                let t = format!("{} -> {}", text(&v, "local_ip"), text(&v, "pilot_addr"));
                Ok(Success::new(v, t))
            }
            GatewayCommand::Unmap { local_ip } => {
                let v = request(&mut c, Request::GatewayUnmap { local_ip })?;
                let t = format!(
                    "unmapped {} ({})",
                    text(&v, "local_ip"),
                    text(&v, "pilot_addr")
                );
                Ok(Success::new(v, t))
            }
            GatewayCommand::List => {
                let v = request(&mut c, Request::GatewayList)?;
                let t = state_text(&v);
                Ok(Success::new(v, t))
            }
            GatewayCommand::Stop => {
                let v = request(&mut c, Request::GatewayStop)?;
                Ok(Success::new(v, "gateway stopped"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_or_say_which_one_is_wrong() {
        assert_eq!(ports("80").unwrap(), [80]);
        assert_eq!(ports(" 80 , 8080").unwrap(), [80, 8080]);
        for (bad, named) in [
            ("", "``"),
            ("0", "`0`"),
            ("65536", "`65536`"),
            ("80,,81", "``"),
            ("80-90", "`80-90`"),
            ("http", "`http`"),
        ] {
            let e = ports(bad).unwrap_err();
            assert_eq!(e.code, "invalid_argument", "{bad}");
            assert!(e.message.contains(named), "{bad}: {}", e.message);
        }
    }
}
