//! `pilot-daemon`: the agent daemon as a program of its own, for service
//! managers (systemd, launchd, a container's entry point). It is
//! `pilotctl daemon start --foreground` under its own name (pilotctl run
//! with `argv[0]` `pilot-daemon`): the same flags, defaults, saved
//! settings and environment (`PILOT_HOME`, `PILOT_SOCKET`,
//! `PILOT_RENDEZVOUS`, `PILOT_RENDEZVOUS_KEY`, `PILOT_TRANSPORT`,
//! `PILOT_LOG`), and the original's Go-style spellings
//! (`-transport=compat -socket /shared/pilot.sock -public`).

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let pilotctl = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("pilotctl"),
        Err(e) => {
            eprintln!("pilot-daemon: cannot find myself: {e}");
            return ExitCode::FAILURE;
        }
    };
    // exec only returns on failure.
    let err = Command::new(&pilotctl)
        .arg0("pilot-daemon")
        .args(std::env::args_os().skip(1))
        .exec();
    eprintln!("pilot-daemon: cannot run {}: {err}", pilotctl.display());
    eprintln!("hint: pilot-daemon and pilotctl are installed side by side");
    ExitCode::FAILURE
}
