//! What every command that talks to the daemon shares: connecting,
//! one request at a time, and turning client errors into failures.

use std::path::Path;
use std::time::Duration;

use driver_mio::client::{Client, ClientError};
use driver_mio::ipc::api::Request;
use serde_json::Value;

use crate::output::Failure;
use crate::paths;

/// How long a request may take before pilotctl gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Maps a client error to a failure with a stable code.
pub fn failure(e: ClientError) -> Failure {
    match e {
        ClientError::Remote {
            code,
            message,
            hint,
        } => Failure::new(&code, message, hint),
        ClientError::NotRunning { .. } => {
            Failure::new("not_running", e.to_string(), start_hint(&paths::home(None)))
        }
        other => Failure::new(other.code(), other.to_string(), other.hint()),
    }
}

/// Connects to the daemon's socket.
pub fn connect(socket: &Path) -> Result<Client, Failure> {
    Client::connect(socket).map_err(failure)
}

/// One request, its answer's data.
pub fn request(c: &mut Client, r: Request) -> Result<Value, Failure> {
    c.request(r, REQUEST_TIMEOUT).map_err(failure)
}

/// Connects using `PILOT_HOME` / `PILOT_SOCKET`.
pub fn default_client() -> Result<Client, Failure> {
    let home = paths::home(None);
    connect(&paths::running_socket(None, &home))
}

/// The pid in a pid file, if any.
pub fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A field of a JSON answer as text for people: strings bare, null or
/// missing as `-`.
pub fn text(v: &Value, k: &str) -> String {
    match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

/// A JSON list as text, one line per row, or `empty` when there are none.
pub fn lines(list: &Value, empty: &str, row: impl Fn(&Value) -> String) -> String {
    match list.as_array() {
        Some(rows) if !rows.is_empty() => rows.iter().map(row).collect::<Vec<_>>().join("\n"),
        _ => empty.to_string(),
    }
}

/// How to start the daemon of `home`: plainly when settings with a
/// rendezvous are saved there, with the flags otherwise.
pub fn start_hint(home: &Path) -> String {
    // Not Home::open: a hint must not create the directory.
    let saved = driver_mio::daemon::home::Home::existing(home)
        .settings()
        .is_ok_and(|s| s.rendezvous.is_some() && s.rendezvous_key.is_some());
    if saved {
        "start it with `pilotctl daemon start` (it reuses the saved settings)".into()
    } else {
        "start it with `pilotctl daemon start --rendezvous HOST:PORT --rendezvous-key KEY`".into()
    }
}
