//! Files the daemon and the rendezvous keep: atomic writes, private
//! directories, pid files, and errors that name the file.
//!
//! Every write of state goes through [`atomic_write`]: a crash leaves
//! either the old file or the new one, never a torn one.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::{getuid, Pid};

/// Something wrong with a file, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file does not exist.
    #[error("{}: does not exist", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The OS refused access.
    #[error("{}: permission denied ({source})", path.display())]
    Permission {
        /// The file.
        path: PathBuf,
        /// The OS's error.
        source: io::Error,
    },
    /// The content is not what it should be.
    #[error("{}: corrupt: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Ownership or mode would let other users read or change it.
    #[error("{}: insecure: {detail}", path.display())]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Any other I/O error.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The OS's error.
        source: io::Error,
    },
}

impl FileError {
    /// Classifies an I/O error met while doing `what` to `path`.
    pub fn io(path: &Path, what: &'static str, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => FileError::Missing { path },
            io::ErrorKind::PermissionDenied => FileError::Permission { path, source },
            _ => FileError::Io { path, what, source },
        }
    }

    /// `path` holds something that does not parse.
    pub fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        FileError::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Missing { path }
            | FileError::Permission { path, .. }
            | FileError::Corrupt { path, .. }
            | FileError::Insecure { path, .. }
            | FileError::Io { path, .. } => path,
        }
    }

    /// True if the file does not exist.
    pub fn is_missing(&self) -> bool {
        matches!(self, FileError::Missing { .. })
    }
}

/// Replaces `path` with `bytes` atomically: writes a temporary file in the
/// same directory with permissions `mode`, syncs it, renames it over
/// `path`, then syncs the directory so the rename itself is durable.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| FileError::Io {
            path: path.to_path_buf(),
            what: "cannot write",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        })?;
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_new(&tmp, bytes, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| FileError::io(path, "cannot replace", e)))
        .and_then(|()| sync_dir(dir));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| FileError::io(tmp, "cannot create", e))?;
    // The umask may have removed bits asked for; set exactly `mode`.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| FileError::io(tmp, "cannot set permissions", e))?;
    file.write_all(bytes)
        .map_err(|e| FileError::io(tmp, "cannot write", e))?;
    file.sync_all()
        .map_err(|e| FileError::io(tmp, "cannot sync", e))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Syncs a directory, so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FileError::io(dir, "cannot sync directory", e))
}

/// Makes sure `path` is a directory only its owner can use (mode 0700),
/// creating it (and its parents) if needed. A directory of ours that
/// others could read or write is tightened, with a warning; one owned by
/// someone else is refused.
pub fn ensure_private_dir(path: &Path) -> Result<(), FileError> {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| FileError::io(path, "cannot create directory", e))?;
            // `mode` is filtered by the umask; make it exactly 0700.
            return set_mode(path, 0o700);
        }
        Err(e) => return Err(FileError::io(path, "cannot inspect", e)),
        Ok(meta) if !meta.is_dir() => {
            return Err(FileError::Insecure {
                path: path.to_path_buf(),
                detail: "exists and is not a directory".into(),
            })
        }
        Ok(meta) => {
            let me = getuid().as_raw();
            if meta.uid() != me {
                return Err(FileError::Insecure {
                    path: path.to_path_buf(),
                    detail: format!(
                        "owned by user {}, not by this user ({me}); use a directory of your own",
                        meta.uid()
                    ),
                });
            }
            let mode = meta.mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{mode:o}"),
                    "directory open to other users: set to 0700"
                );
                set_mode(path, 0o700)?;
            }
        }
    }
    Ok(())
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), FileError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| FileError::io(path, "cannot set permissions", e))
}

/// The permission bits of `path`.
pub fn mode_of(path: &Path) -> Result<u32, FileError> {
    fs::metadata(path)
        .map(|m| m.mode() & 0o7777)
        .map_err(|e| FileError::io(path, "cannot inspect", e))
}

/// Reads a whole file.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(|e| FileError::io(path, "cannot read", e))
}

/// Reads a whole file, or `None` if it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `pid` (decimal and a newline) to `path`, atomically, mode 0644.
pub fn write_pid(path: &Path, pid: u32) -> Result<(), FileError> {
    atomic_write(path, format!("{pid}\n").as_bytes(), 0o644)
}

/// The pid in a pid file, `None` if there is no pid file.
pub fn read_pid(path: &Path) -> Result<Option<u32>, FileError> {
    let Some(bytes) = read_optional(path)? else {
        return Ok(None);
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| FileError::corrupt(path, "a pid file must hold a decimal number"))?;
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|pid| *pid > 0)
        .map(Some)
        .ok_or_else(|| {
            FileError::corrupt(
                path,
                format!("a pid file must hold a process ID, not {:?}", text.trim()),
            )
        })
}

/// True if a process with this ID exists (possibly another user's).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    let exists = match kill(Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(Errno::EPERM) => true,
        Err(_) => false,
    };
    // A killed process whose parent has not reaped it (a daemon reparented
    // to an init that does not reap, in a container) still answers
    // kill(0); it is dead all the same.
    exists && !is_zombie(raw)
}

/// True if `/proc` says the process is a zombie (Linux; false elsewhere).
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself
    // contain spaces and parentheses: take the last ')'.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Removes the temporary files [`atomic_write`] left in `dir` when its
/// writer died before the rename (`.NAME.tmp.<pid>.<n>`), and returns how
/// many. Only those whose writer is gone: no process holds a lock that
/// keeps others from writing here (`pilotctl` saves settings into the
/// daemon's home while it runs), so a temporary file of a live process
/// may be a write in progress. Our own pid's are kept for the same
/// reason (another thread may be writing); a recycled pid leaves a file
/// for a later start. A missing directory has nothing to clean.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let me = std::process::id();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_writer) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            continue;
        }
        if entry.file_type().is_ok_and(|t| t.is_file()) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The writer's pid if `name` is one of [`atomic_write`]'s temporary
/// files: `.` NAME `.tmp.` PID `.` N.
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (rest, n) = rest.rsplit_once('.')?;
    let (rest, pid) = rest.rsplit_once('.')?;
    let base = rest.strip_suffix(".tmp")?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if base.is_empty() || !digits(n) || !digits(pid) {
        return None;
    }
    pid.parse().ok()
}

/// The pid in `path` if that process is still running; `None` if there is
/// no pid file or it is stale (left by a process that died).
pub fn running_pid(path: &Path) -> Result<Option<u32>, FileError> {
    Ok(read_pid(path)?.filter(|pid| pid_alive(*pid)))
}

/// The agent's home: `$PILOT_HOME`, else `.pilot` in the user's home.
pub fn pilot_home() -> PathBuf {
    if let Some(p) = std::env::var_os("PILOT_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    user_home().join(".pilot")
}

/// `$HOME`; without it (a service, `env -i`), the user's home directory
/// in the password database, not the current directory: `./.pilot` gave
/// each directory pilotctl ran in its own identity.
pub fn user_home() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    nix::unistd::User::from_uid(getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// `log` becomes `log.1` (and `log.1` `log.2`, ...) once it exceeds
/// `max` bytes, keeping `keep` old files.
pub fn rotate_log(log: &Path, max: u64, keep: u32) {
    if fs::metadata(log).map(|m| m.len()).unwrap_or(0) <= max {
        return;
    }
    let name = |i: u32| PathBuf::from(format!("{}.{i}", log.display()));
    for i in (1..keep).rev() {
        let _ = fs::rename(name(i), name(i + 1));
    }
    let _ = fs::rename(log, name(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temps_of_dead_writers_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = child.id();
        let me = std::process::id();
        let names = [
            format!(".trust.state.tmp.{dead}.3"),
            format!(".config.json.tmp.{dead}.0"),
            format!(".trust.state.tmp.{me}.1"),
            ".trust.state.tmp.1.7".to_string(),
            ".trust.state.tmp.x.1".to_string(),
            "trust.state".to_string(),
        ];
        for n in &names {
            fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 2);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = names[2..].to_vec();
        want.sort();
        assert_eq!(left, want);
        assert_eq!(remove_stale_temps(&dir.path().join("missing")), 0);
    }

    #[test]
    fn atomic_write_replaces_with_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        atomic_write(&path, b"one", 0o600).unwrap();
        atomic_write(&path, b"two", 0o600).unwrap();
        assert_eq!(read(&path).unwrap(), b"two");
        assert_eq!(mode_of(&path).unwrap(), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files are gone");
        let err = atomic_write(&dir.path().join("no/such/dir/f"), b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }

    #[test]
    fn read_errors_name_the_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.key");
        let err = read(&path).unwrap_err();
        assert!(err.is_missing());
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains("missing.key: does not exist"));
        assert_eq!(read_optional(&path).unwrap(), None);
        let err = FileError::corrupt(&path, "bad magic");
        assert!(err.to_string().ends_with("missing.key: corrupt: bad magic"));
    }

    #[test]
    fn private_dirs_are_created_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("a/b/home");
        ensure_private_dir(&home).unwrap();
        assert_eq!(mode_of(&home).unwrap(), 0o700);
        set_mode(&home, 0o777).unwrap();
        ensure_private_dir(&home).unwrap();
        assert_eq!(mode_of(&home).unwrap(), 0o700);
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = ensure_private_dir(&file).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn pid_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pid");
        assert_eq!(read_pid(&path).unwrap(), None);
        write_pid(&path, std::process::id()).unwrap();
        assert_eq!(read_pid(&path).unwrap(), Some(std::process::id()));
        assert_eq!(running_pid(&path).unwrap(), Some(std::process::id()));
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
        // A child that has exited and been reaped is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        assert!(!pid_alive(gone));
        fs::write(&path, b"not a pid").unwrap();
        let err = read_pid(&path).unwrap_err();
        assert!(matches!(err, FileError::Corrupt { .. }), "{err}");
    }
}
