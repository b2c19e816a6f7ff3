//! `pilotctl`: the Pilot command-line tool.
use clap::Parser;

/// Pilot: encrypted peer-to-peer networking for AI agents.
#[derive(Parser)]
#[command(name = "pilotctl", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
