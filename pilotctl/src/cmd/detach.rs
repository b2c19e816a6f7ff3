//! Starting pilotctl itself in the background (daemon, rendezvous).

use std::ffi::OsString;
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
