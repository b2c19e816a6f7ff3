//! Where things live: `PILOT_HOME` (default `~/.pilot`; without `HOME`,
//! the user's home directory from the password database) and the socket
//! (`PILOT_SOCKET`, default `$PILOT_HOME/pilot.sock`).

use std::path::PathBuf;

/// The agent's home directory.
pub fn home(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(driver_mio::fsutil::pilot_home)
}

/// The socket of the daemon running with `home`: as [`socket`], but a
/// daemon started with a socket elsewhere (`PILOT_SOCKET`, `--socket`)
/// wrote it down in its home, so the home alone finds it.
pub fn running_socket(flag: Option<PathBuf>, home: &std::path::Path) -> PathBuf {
    if flag.is_some() || std::env::var_os("PILOT_SOCKET").is_some_and(|p| !p.is_empty()) {
        return socket(flag, home);
    }
    let note = home.join(driver_mio::daemon::run::SOCKET_NOTE);
    match std::fs::read(note) {
        Ok(bytes) if !bytes.is_empty() => {
            PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(bytes))
        }
        _ => socket(None, home),
    }
}

/// The daemon's IPC socket, for a daemon about to start.
pub fn socket(flag: Option<PathBuf>, home: &std::path::Path) -> PathBuf {
    if let Some(p) = flag {
        return p;
    }
    if let Some(p) = std::env::var_os("PILOT_SOCKET").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    home.join("pilot.sock")
}
