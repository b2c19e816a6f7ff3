//! Where things live: `PILOT_HOME` (default `~/.pilot`) and the socket
//! (`PILOT_SOCKET`, default `$PILOT_HOME/pilot.sock`).

use std::path::PathBuf;

/// The agent's home directory.
pub fn home(flag: Option<PathBuf>) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("PILOT_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".pilot")
}

/// The daemon's IPC socket.
pub fn socket(flag: Option<PathBuf>, home: &std::path::Path) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("PILOT_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    home.join("pilot.sock")
}
