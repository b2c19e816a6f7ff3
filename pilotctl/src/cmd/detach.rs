//! Starting pilotctl itself in the background (daemon, rendezvous).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::output::Failure;

/// Runs `pilotctl <args>` detached from this terminal (its own process
/// group, no stdin), with stdout and stderr going to `out`.
pub fn spawn(args: &[OsString], out: &Path, what: &str) -> Result<Child, Failure> {
    let file_failure =
        |e: std::io::Error| Failure::new("internal", format!("{}: {e}", out.display()), "");
    let stdout = std::fs::File::create(out).map_err(file_failure)?;
    let stderr = stdout.try_clone().map_err(file_failure)?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::new("internal", format!("cannot find pilotctl: {e}"), ""))?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .spawn()
        .map_err(|e| Failure::new("internal", format!("cannot start the {what}: {e}"), ""))
}

/// Names the read end of a pipe whose write end a parent (the demo)
/// holds. A daemon or rendezvous run with it stops (SIGTERM to itself,
/// the clean way) once the pipe closes, that is once the parent is gone,
/// even by SIGKILL, when the parent can no longer clean up.
pub const PARENT_PIPE: &str = "PILOT_PARENT_PIPE";

/// A pipe to hand to children through [`PARENT_PIPE`]: the read end is
/// inherited, the write end is not (it closes only when this process
/// ends).
pub fn parent_pipe() -> Option<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).ok()?;
    fcntl(read.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).ok()?;
    Some((read, write))
}

/// If started under [`PARENT_PIPE`], stops this process when the parent
/// holding the pipe goes away.
pub fn stop_with_parent() {
    use nix::sys::stat::{fstat, SFlag};
    let Some(fd) = std::env::var(PARENT_PIPE)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // Only a pipe: a stray variable must not make us read another file.
    let is_pipe = fstat(fd)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    if !is_pipe {
        return;
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break,
                Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGTERM);
    });
}
