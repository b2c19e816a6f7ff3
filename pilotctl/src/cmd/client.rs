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

/// Lays out rows under a header, each column as wide as its widest cell
/// (counters grow; fixed widths broke the columns), two spaces apart.
/// `right[i]` aligns column `i` to the right (numbers); the last column
/// is never padded.
pub fn table(head: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .chain([head[i].chars().count()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            let last = i + 1 == head.len();
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if !last {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out
    };
    let mut lines = vec![line(&mut head.iter().copied())];
    for r in rows {
        lines.push(line(&mut r.iter().map(String::as_str)));
    }
    lines.join("\n")
}

#[cfg(test)]
mod table_tests {
    use super::table;

    #[test]
    fn columns_fit_their_widest_cell() {
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "x".to_string()],
            vec![
                "long name".to_string(),
                "123456789012".to_string(),
                "y".to_string(),
            ],
        ];
        let t = table(&["NAME", "N", "LAST"], &rows, &[false, true, false]);
        assert_eq!(
            t,
            "NAME                  N  LAST\n\
             a                     1  x\n\
             long name  123456789012  y"
        );
    }
}
