//! How pilotctl answers: plain text for people, one JSON object for
//! programs (`--json`), a stable error code, a hint, and an exit code.

use std::fmt::Display;
use std::io::{self, Write};

use serde_json::{json, Value};

/// A command's failure: stable code, message, hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// One of the documented codes (`invalid_argument`, `not_found`, ...).
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Failure {
            code: code.to_string(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// The process exit code for this failure's code.
    pub fn exit_code(&self) -> i32 {
        exit_codes()
            .iter()
            .find(|(c, _)| *c == self.code)
            .map_or(1, |(_, e)| *e)
    }
}

/// Every stable error code and the exit status it gives.
pub fn exit_codes() -> &'static [(&'static str, i32)] {
    &[
        ("internal", 1),
        ("invalid_argument", 2),
        ("not_running", 3),
        ("not_found", 4),
        ("already_exists", 5),
        ("not_trusted", 6),
        ("connection_failed", 7),
        ("timeout", 8),
        ("not_registered", 9),
        ("interrupted", 130),
    ]
}

/// A command's result: data for `--json`, text for people.
pub struct Success {
    /// The `data` of the JSON answer.
    pub data: Value,
    /// What a person reads.
    pub text: String,
    /// The command printed its own output (one JSON object per line, or
    /// raw stream bytes): nothing more is printed on success.
    printed: bool,
}

impl Success {
    /// A result with both forms.
    pub fn new(data: Value, text: impl Into<String>) -> Self {
        Success {
            data,
            text: text.into(),
            printed: false,
        }
    }

    /// A success whose output the command already printed as it went.
    pub fn printed() -> Self {
        Success {
            data: Value::Null,
            text: String::new(),
            printed: true,
        }
    }
}

/// Prints one line on stdout, flushed.
pub fn print_line(line: impl Display) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// [`print_line`] for commands: a reader that went away (`pilotctl
/// context | head`) ends the command quietly with status 141, as SIGPIPE
/// ends other tools, instead of a panic; any other failure to write is
/// said on stderr (exit 1).
pub fn say(line: impl Display) {
    if let Err(e) = print_line(line) {
        let f = stdout_failure(e);
        eprintln!("error: {}", f.message);
        std::process::exit(f.exit_code());
    }
}

/// A failure to write stdout as [`say`] treats it: a reader that went
/// away ends the command quietly (141).
pub fn stdout_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    Failure::new("internal", format!("writing stdout: {e}"), "")
}

/// Under `--json`, a command that streams until Ctrl-C (`listen`,
/// `recv`, `subscribe`, `bench`) ends on SIGINT or SIGTERM with the
/// usual error object, `interrupted` (exit 130), instead of nothing, so
/// that whatever reads its lines knows how it ended. A thread waits for
/// the signal; the lines printed before it are whole (each is written
/// under stdout's lock).
pub fn answer_interrupt() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let f = Failure::new(
                "interrupted",
                "stopped by Ctrl-C (or SIGTERM)",
                "every line before this one is complete; run it again to go on",
            );
            std::process::exit(finish(true, Err(f)));
        }
    });
}

/// Prints a result and returns the exit code.
pub fn finish(json_mode: bool, result: Result<Success, Failure>) -> i32 {
    match result {
        Ok(s) => {
            if s.printed {
                // Nothing to add.
            } else if json_mode {
                say(json!({ "status": "ok", "data": s.data }));
            } else if !s.text.is_empty() {
                say(s.text.trim_end());
            }
            0
        }
        Err(mut f) => {
            if f.hint.is_empty() {
                f.hint = default_hint(&f.code).to_string();
            }
            if json_mode {
                say(
                    json!({ "status": "error", "code": f.code, "message": f.message, "hint": f.hint }),
                );
            } else {
                eprintln!("error: {}", f.message);
                if !f.hint.is_empty() {
                    eprintln!("hint: {}", f.hint);
                }
            }
            f.exit_code()
        }
    }
}

/// What to try when a failure came without a hint of its own, so that no
/// answer carries an empty `"hint":""`.
fn default_hint(code: &str) -> &'static str {
    match code {
        "invalid_argument" => "see `pilotctl <command> --help` or `pilotctl context`",
        "not_running" => "start the daemon with `pilotctl daemon start`",
        "not_found" => {
            "check the name or address; a private agent is found by hostname only by peers that trust it, so ask it by its address; `pilotctl trust` and `pilotctl pending` list peers"
        }
        "already_exists" => "it is already there; nothing more to do",
        "not_trusted" => "ask the peer for trust with `pilotctl handshake <peer>`",
        "connection_failed" => "is something listening on that port of the peer?",
        "timeout" => "try again, or with a longer --timeout",
        "not_registered" => "wait for the daemon to register; `pilotctl daemon status` shows it",
        "interrupted" => "run it again to finish",
        _ => "see the daemon's log (pilot.log in PILOT_HOME)",
    }
}
