//! Identity and discovery: `info`, `find`.

use clap::Subcommand;
use driver_mio::ipc::api::Request;

use super::client::{default_client, request, text};
use super::CommandDoc;
use crate::output::{Failure, Success};

/// Identity and discovery commands.
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// This agent's address, identity and state.
    Info,
    /// Look a node up by hostname or address.
    Find {
        /// Hostname or address (0:0000.0000.002A).
        peer: String,
    },
}

impl IdentityCommand {
    /// Runs the command.
    pub fn run(self, _json: bool) -> Result<Success, Failure> {
        match self {
            IdentityCommand::Info => info(),
            IdentityCommand::Find { peer } => find(peer),
        }
    }
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "info",
        returns: r#"{"address":"string|null","node_id":"number|null","hostname":"string|null","public_key":"string","fingerprint":"string","registered":"bool","public_endpoint":"string|null","peers":"number","pending":"number","streams":"number","uptime_secs":"number","datagrams_in":"number","datagrams_out":"number","dropped":"number"}"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "find",
        returns: r#"{"address":"string","node_id":"number","hostname":"string|null","public_key":"string","fingerprint":"string","public":"bool","online":"bool","endpoints":["string"]}"#,
        errors: &[
            "not_running",
            "invalid_argument",
            "not_found",
            "not_registered",
            "timeout",
        ],
    },
];

/// `pilotctl info`.
pub fn info() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let info = request(&mut c, Request::Info)?;
    let field = |k: &str| text(&info, k);
    let text = format!(
        "Address:     {}\nHostname:    {}\nPublic key:  {}\nFingerprint: {}\nRegistered:  {}\nEndpoint:    {}\nPeers:       {}\nPending:     {}\nUptime:      {} s",
        field("address"),
        field("hostname"),
        field("public_key"),
        field("fingerprint"),
        field("registered"),
        field("public_endpoint"),
        field("peers"),
        field("pending"),
        field("uptime_secs"),
    );
    Ok(Success::new(info, text))
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
