//! `pilot-daemon`: `pilotctl daemon start --foreground` under its own
//! name. The `pilot-daemon` binary runs this program with `argv[0]` set
//! to `pilot-daemon`; it parses the flags of `daemon start` (same
//! defaults, environment and saved settings) and speaks as
//! `pilot-daemon` in its help, version and errors.
//!
//! The original's users run `pilot-daemon -transport=compat -socket
//! /shared/pilot.sock -public` (Go's single-dash flags): a single-dash
//! word that names a long option is read as that option.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser};

use crate::cmd::daemon::{DaemonCommand, StartArgs};
use crate::output::{finish, Failure, Success};

/// The name the standalone daemon answers to.
pub const DAEMON: &str = "pilot-daemon";

/// Pilot's agent daemon, in the foreground (for systemd, launchd or a
/// container). The same as `pilotctl daemon start --foreground`; Go-style
/// `-flag=value` and `-flag value` work too.
#[derive(Parser, Debug)]
#[command(name = "pilot-daemon", version)]
struct DaemonCli {
    /// Answer errors with one JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    start: StartArgs,
}

/// True if this process was started as `name` (its `argv[0]`).
pub fn invoked_as(name: &str) -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f == std::ffi::OsStr::new(name))
        })
        .unwrap_or(false)
}

/// `-flag`, `-flag=value` → `--flag`, `--flag=value` where `flag` is one
/// of `longs`; everything else (single letters like `-h`, values, words
/// after `--`) is left as it is.
pub fn go_style(args: Vec<OsString>, longs: &[&str]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        let rewritten = match arg.to_str() {
            _ if rest => None,
            Some("--") => {
                rest = true;
                None
            }
            Some(s) if s.len() > 2 && s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split_once('=').map_or(&s[1..], |(n, _)| n);
                longs
                    .contains(&name)
                    .then(|| OsString::from(format!("-{s}")))
            }
            _ => None,
        };
        out.push(rewritten.unwrap_or(arg));
    }
    out
}

/// The long options `command` takes, with help and version.
fn longs(command: &clap::Command) -> Vec<String> {
    command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .chain(["help".to_string(), "version".to_string()])
        .collect()
}

/// The command line as `pilot-daemon`: hidden what makes no sense there.
fn daemon_command() -> clap::Command {
    DaemonCli::command()
        .mut_arg("foreground", |a| a.hide(true))
        .mut_arg("wait", |a| a.hide(true))
}

/// Runs `pilot-daemon` with `args` (without `argv[0]`); never returns.
pub fn daemon_main(args: impl Iterator<Item = OsString>) -> ! {
    let command = daemon_command();
    let names = longs(&command);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let argv = std::iter::once(OsString::from(DAEMON)).chain(go_style(args.collect(), &names));
    let parsed = command
        .try_get_matches_from(argv)
        .and_then(|mut m| DaemonCli::from_arg_matches_mut(&mut m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let json = cli.json;
    let mut start = cli.start;
    start.foreground = true;
    let result: Result<Success, Failure> =
        crate::cmd::daemon::run(DaemonCommand::Start(Box::new(start)), json);
    std::process::exit(finish(json, result));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        let names = longs(&daemon_command());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        go_style(args.iter().map(OsString::from).collect(), &names)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_style_flags_become_long_options() {
        assert_eq!(
            rewrite(&[
                "-transport=compat",
                "-socket",
                "/shared/pilot.sock",
                "-public"
            ]),
            [
                "--transport=compat",
                "--socket",
                "/shared/pilot.sock",
                "--public"
            ]
        );
        assert_eq!(
            rewrite(&["-rendezvous-key", "ab", "-h", "--listen", "-x", "-nope=1"]),
            ["--rendezvous-key", "ab", "-h", "--listen", "-x", "-nope=1"]
        );
        assert_eq!(
            rewrite(&["--", "-public", "-help"]),
            ["--", "-public", "-help"]
        );
        assert_eq!(rewrite(&["-help", "-version"]), ["--help", "--version"]);
    }

    #[test]
    fn go_style_command_lines_parse_as_daemon_start() {
        let names = longs(&daemon_command());
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let args = [
            DAEMON,
            "-transport=compat",
            "-socket",
            "/shared/pilot.sock",
            "-public",
            "-rendezvous=rv.example.com:4000",
        ];
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        let argv = go_style(argv, &names);
        let mut m = daemon_command().try_get_matches_from(argv).unwrap();
        let cli = DaemonCli::from_arg_matches_mut(&mut m).unwrap();
        assert_eq!(cli.start.transport.as_deref(), Some("compat"));
        assert_eq!(
            cli.start.home.socket.as_deref(),
            Some(std::path::Path::new("/shared/pilot.sock"))
        );
        assert!(cli.start.agent.public);
        assert_eq!(
            cli.start.agent.rendezvous.as_deref(),
            Some("rv.example.com:4000")
        );
    }

    #[test]
    fn help_names_pilot_daemon() {
        let help = daemon_command().render_long_help().to_string();
        assert!(help.contains("Usage: pilot-daemon"), "{help}");
        assert!(!help.contains("pilotctl daemon start ["), "{help}");
        assert!(
            !help
                .lines()
                .any(|l| l.trim_start().starts_with("--foreground")),
            "{help}"
        );
    }
}
