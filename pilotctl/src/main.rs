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
}

fn main() {
    let cli = Cli::parse();
    let json = cli.json;
    let result = match cli.command {
        Command::Daemon(c) => cmd::daemon::run(c, json),
        Command::Rendezvous(c) => cmd::rendezvous::run(c, json),
        Command::Info => cmd::info::run(),
    };
    std::process::exit(finish(json, result));
}
