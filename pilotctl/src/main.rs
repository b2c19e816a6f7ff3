//! `pilotctl`: the Pilot command-line tool.
//!
//! Every command answers in plain text, or with `--json` as
//! `{"status":"ok","data":...}` / `{"status":"error","code":...,
//! "message":...,"hint":...}`, and exits non-zero on error. Nothing
//! prompts.

mod cmd;
mod output;
mod paths;

use clap::{Parser, Subcommand};

use output::finish;

/// Pilot: encrypted peer-to-peer networking for AI agents.
#[derive(Parser, Debug)]
#[command(name = "pilotctl", version, about, propagate_version = true)]
pub struct Cli {
    /// Answer with one JSON object instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start, stop and inspect the agent daemon.
    #[command(subcommand)]
    Daemon(cmd::daemon::DaemonCommand),
    /// Run a rendezvous (registry + beacon) for your agents.
    #[command(subcommand)]
    Rendezvous(cmd::rendezvous::RendezvousCommand),
    /// This agent's address, identity and state.
    Info,
    /// Look a node up by hostname or address.
    Find {
        /// Hostname or address (0:0000.0000.002A).
        peer: String,
    },
    /// Ask a peer (hostname or address) for trust.
    Handshake {
        /// Hostname or address.
        peer: String,
        /// Why, for whoever decides.
        reason: Option<String>,
    },
    /// Trust requests waiting for your decision.
    Pending,
    /// Approve a pending trust request.
    Approve {
        /// The requester's address (or hostname).
        node: String,
    },
    /// Reject a pending trust request.
    Reject {
        /// The requester's address (or hostname).
        node: String,
        /// Why.
        reason: Option<String>,
    },
    /// The peers you trust, with their key fingerprints.
    Trust,
    /// Stop trusting a peer; its sessions close on both sides.
    Untrust {
        /// The peer's address (or hostname).
        node: String,
    },
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

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        Command::Daemon(c) => cmd::daemon::run(c, json),
        Command::Rendezvous(c) => cmd::rendezvous::run(c, json),
        Command::Info => cmd::info::run(),
        Command::Find { peer } => cmd::trust::find(peer),
        Command::Handshake { peer, reason } => cmd::trust::handshake(peer, reason),
        Command::Pending => cmd::trust::pending(),
        Command::Approve { node } => cmd::trust::approve(node),
        Command::Reject { node, reason } => cmd::trust::reject(node, reason),
        Command::Trust => cmd::trust::trusted(),
        Command::Untrust { node } => cmd::trust::untrust(node),
        Command::Ping {
            peer,
            count,
            timeout,
        } => cmd::ping::run(peer, count, std::time::Duration::from_secs(timeout), json),
    };
    std::process::exit(finish(json, result));
}
