//! `pilotctl`: the Pilot command-line tool.
//!
//! Every command answers in plain text, or with `--json` as
//! `{"status":"ok","data":...}` / `{"status":"error","code":...,
//! "message":...,"hint":...}`, and exits non-zero on error. Nothing
//! prompts.

mod cmd;
mod output;
mod paths;
mod standalone;

use clap::{CommandFactory, Parser, Subcommand};

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

/// The commands. Groups are flattened: `pilotctl handshake`, not
/// `pilotctl trust handshake`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start, stop and inspect the agent daemon.
    #[command(subcommand)]
    Daemon(cmd::daemon::DaemonCommand),
    /// Run a rendezvous (registry + beacon) for your agents.
    #[command(subcommand)]
    Rendezvous(cmd::rendezvous::RendezvousCommand),
    #[command(flatten)]
    Identity(cmd::identity::IdentityCommand),
    /// One screen: this agent, its trusted peers (path, RTT, last seen,
    /// traffic) and trust requests pending, outgoing and rejected.
    Status,
    #[command(flatten)]
    Trust(cmd::trust::TrustCommand),
    #[command(flatten)]
    Messaging(cmd::messaging::MessagingCommand),
    #[command(flatten)]
    Diag(cmd::diag::DiagCommand),
    /// Reach TCP services of remote agents at local IP addresses (curl, browsers).
    #[command(subcommand)]
    Gateway(cmd::gateway::GatewayCommand),
    /// The original's spelling of some commands (`extras gateway ...`).
    #[command(subcommand)]
    Extras(cmd::gateway::ExtrasCommand),
    /// Run Pilot end to end on this machine: a rendezvous, two agents, trust,
    /// ping, a message, a file, an event and a web page through the overlay.
    Demo(cmd::demo::DemoArgs),
    /// Every command, its arguments, JSON answer and error codes (for agents).
    Context,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Parses the command line. A usage error under `--json` is answered like
/// every other error (`invalid_argument`, exit 2); without it clap prints
/// its own message and usage.
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let json = std::env::args_os().any(|a| a == "--json");
            let informational = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if json && e.kind() == ErrorKind::DisplayVersion {
                let version = env!("CARGO_PKG_VERSION");
                let text = format!("pilotctl {version}");
                let ok = output::Success::new(serde_json::json!({ "version": version }), text);
                std::process::exit(finish(true, Ok(ok)));
            }
            let rendered = e.render().to_string();
            if json && e.kind() == ErrorKind::DisplayHelp {
                // Help asked for under --json is one object like every
                // other answer: the help text as clap would print it.
                let ok =
                    output::Success::new(serde_json::json!({ "help": rendered }), rendered.clone());
                std::process::exit(finish(true, Ok(ok)));
            }
            if !json || informational {
                e.exit();
            }
            // The message is everything before the usage, on one line.
            let message = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
                .trim_start_matches("error: ")
                .to_string();
            let usage = rendered
                .lines()
                .find(|l| l.starts_with("Usage:"))
                // clap shows the flags given among the usage's; --json
                // is what asked for this answer, not part of the usage.
                .map(|l| {
                    format!(
                        "{}; see `pilotctl context --json`",
                        l.replace(" --json", "")
                    )
                })
                .unwrap_or_else(|| "see `pilotctl --help`".into());
            std::process::exit(finish(
                true,
                Err(output::Failure::new("invalid_argument", message, usage)),
            ));
        }
    }
}

fn main() {
    if standalone::invoked_as(standalone::DAEMON) {
        standalone::daemon_main(std::env::args_os().skip(1));
    }
    let cli = parse();
    let json = cli.json;
    let until_ctrl_c = matches!(
        &cli.command,
        Command::Messaging(
            cmd::messaging::MessagingCommand::Listen { .. }
                | cmd::messaging::MessagingCommand::Recv { .. }
                | cmd::messaging::MessagingCommand::Subscribe { .. }
        ) | Command::Diag(cmd::diag::DiagCommand::Bench { .. })
    );
    if json && until_ctrl_c {
        output::answer_interrupt();
    }
    let result = match cli.command {
        Command::Daemon(c) => cmd::daemon::run(c, json),
        Command::Rendezvous(c) => cmd::rendezvous::run(c, json),
        Command::Identity(c) => c.run(json),
        Command::Status => cmd::status::status(),
        Command::Trust(c) => c.run(json),
        Command::Diag(c) => c.run(json),
        Command::Messaging(c) => c.run(json),
        Command::Gateway(c) => c.run(json),
        Command::Extras(c) => c.run(json),
        Command::Demo(a) => cmd::demo::run(a, json),
        Command::Context => cmd::context::context(&Cli::command()),
        Command::Completions { shell } => {
            cmd::context::completions(&mut Cli::command(), shell, json)
        }
    };
    std::process::exit(finish(json, result));
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::Cli;
    use crate::cmd::{all_docs, context};
    use crate::output::exit_codes;

    #[test]
    fn parser_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every command has exactly one `DOCS` entry and every entry names a
    /// command: `context` cannot drift from the parser.
    #[test]
    fn every_command_is_documented_once() {
        let mut root = Cli::command();
        root.build();
        let commands: BTreeSet<String> =
            context::leaves(&root).into_iter().map(|(n, _)| n).collect();
        let mut seen = BTreeSet::new();
        let codes: BTreeSet<&str> = exit_codes().iter().map(|(c, _)| *c).collect();
        for d in all_docs() {
            assert!(seen.insert(d.name), "`{}` documented twice", d.name);
            assert!(
                commands.contains(d.name),
                "`{}` documented but not a command",
                d.name
            );
            let shape: serde_json::Value = serde_json::from_str(d.returns)
                .unwrap_or_else(|e| panic!("`{}` returns is not JSON: {e}", d.name));
            assert!(!shape.is_null(), "`{}` has no result shape", d.name);
            for e in d.errors {
                // Every command may answer it; `context` adds it once.
                assert_ne!(*e, "internal", "`{}` lists `internal`", d.name);
                assert!(
                    codes.contains(e),
                    "`{}` names unknown error code `{e}`",
                    d.name
                );
            }
        }
        let missing: Vec<_> = commands
            .iter()
            .filter(|c| !seen.contains(c.as_str()))
            .collect();
        assert!(missing.is_empty(), "commands without DOCS: {missing:?}");
    }

    #[test]
    fn catalogue_lists_arguments() {
        let cat = context::catalogue(&Cli::command());
        let ping = cat["commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "ping")
            .expect("ping listed");
        let args = ping["args"].as_array().unwrap();
        assert!(args
            .iter()
            .any(|a| a["name"] == "peer" && a["positional"] == true && a["required"] == true));
        assert!(args
            .iter()
            .any(|a| a["long"] == "--count" && a["default"] == "4"));
        assert!(cat["global_args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["long"] == "--json"));
        assert_eq!(ping["returns"]["rtt_ms"]["median"], "number");
        assert!(ping["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "not_trusted"));
    }
}
