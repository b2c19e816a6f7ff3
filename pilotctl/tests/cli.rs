//! pilotctl without a daemon: usage errors, the catalogue for agents,
//! completions.

mod common;

use common::pilotctl;

#[test]
fn usage_errors_answer_json_under_json() {
    let run = pilotctl(&["ping", "--json"], &[]);
    assert_eq!(run.error_code(), "invalid_argument");
    assert_eq!(run.code, 2);
    let v = run.json();
    assert!(v["message"].as_str().unwrap().contains("<PEER>"), "{v}");
    assert!(
        v["hint"].as_str().unwrap().contains("Usage: pilotctl ping"),
        "{v}"
    );

    // The usage is the command's, without the --json that was given.
    let run = pilotctl(&["send", "alice", "--json"], &[]);
    let hint = run.json()["hint"].as_str().unwrap().to_string();
    assert!(
        hint.contains("Usage: pilotctl send --data <DATA> <PEER> <PORT>"),
        "{hint}"
    );

    let run = pilotctl(&["ping", "x", "--count", "many", "--json"], &[]);
    assert_eq!(run.error_code(), "invalid_argument");
    assert!(run.json()["message"].as_str().unwrap().contains("many"));

    let run = pilotctl(&["frobnicate", "--json"], &[]);
    assert_eq!(run.error_code(), "invalid_argument");

    // Without --json, clap's own text on stderr, the same exit status.
    let run = pilotctl(&["ping"], &[]);
    assert_eq!(run.code, 2);
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("Usage: pilotctl ping"),
        "{}",
        run.stderr
    );
}

#[test]
fn context_lists_every_command_with_shape_and_errors() {
    let run = pilotctl(&["context", "--json"], &[]);
    let data = run.data();
    let commands = data["commands"].as_array().expect("commands");
    let help = pilotctl(&["--help"], &[]);
    assert_eq!(help.code, 0);
    // Every top-level command in --help appears in the catalogue.
    let listed = help
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect::<Vec<_>>();
    assert!(listed.len() >= 10, "{}", help.stdout);
    for name in listed {
        assert!(
            commands
                .iter()
                .any(|c| c["name"].as_str().unwrap().split(' ').next() == Some(name)),
            "`{name}` missing from context"
        );
    }
    for c in commands {
        assert!(!c["returns"].is_null(), "{c}");
        assert!(c["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "internal"));
        assert!(c["usage"].as_str().unwrap().starts_with("pilotctl "), "{c}");
    }
    let codes: Vec<&str> = data["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    for want in [
        "invalid_argument",
        "not_found",
        "already_exists",
        "not_running",
        "not_trusted",
        "connection_failed",
        "timeout",
        "internal",
    ] {
        assert!(codes.contains(&want), "{want} not in {codes:?}");
    }
    // The text form is a readable list.
    let text = pilotctl(&["context"], &[]);
    assert_eq!(text.code, 0);
    assert!(text.stdout.contains("handshake"));
}

#[test]
fn completions_are_scripts_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef pilotctl"),
        ("fish", "complete -c pilotctl"),
    ] {
        let run = pilotctl(&["completions", shell], &[]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: no {marker}");
        assert!(
            run.stdout.contains("handshake"),
            "{shell} script lacks commands"
        );
    }
    let run = pilotctl(&["completions", "tcsh", "--json"], &[]);
    assert_eq!(run.error_code(), "invalid_argument");
}

/// `pilotctl context | head`: a reader that went away ends pilotctl
/// quietly (status 141, as SIGPIPE ends other tools), not with a panic.
#[test]
fn a_closed_stdout_ends_quietly() {
    for args in [
        &["context"][..],
        &["context", "--json"],
        &["completions", "bash"],
    ] {
        // The read end is closed before pilotctl starts: every write fails.
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = std::process::Command::new(common::PILOTCTL)
            .args(args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .expect("run pilotctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// Port 0 is no port: a usage error, before any daemon is asked (the
/// daemon answered `internal` for streams and took it for datagrams).
#[test]
fn port_zero_is_a_usage_error() {
    for args in [
        &["recv", "0"][..],
        &["listen", "0"],
        &["send", "bob", "0", "--data", "x"],
        &["send", "bob", "0", "--data", "x", "--datagram"],
        &["connect", "bob", "0", "--message", "x"],
    ] {
        let mut args = args.to_vec();
        args.push("--json");
        let run = pilotctl(&args, &[("PILOT_HOME", "/nonexistent")]);
        assert_eq!(run.error_code(), "invalid_argument", "{args:?}");
        assert_eq!(run.code, 2);
        assert!(
            run.json()["message"]
                .as_str()
                .unwrap()
                .contains("1..=65535"),
            "{}",
            run.stdout
        );
    }
    // 65535 is a port.
    let run = pilotctl(
        &["listen", "65535", "--json"],
        &[("PILOT_HOME", "/nonexistent")],
    );
    assert_eq!(run.error_code(), "not_running");
}

/// Without HOME (a service, `env -i`), the home is the user's home from
/// the password database, not `./.pilot` in whatever directory pilotctl
/// runs in (which gave each directory its own identity).
#[test]
fn without_home_the_home_is_the_users_not_the_current_directory() {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .expect("a passwd entry");
    let cwd = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::PILOTCTL)
        .args(["info", "--json"])
        .current_dir(cwd.path())
        .env_clear()
        .output()
        .expect("run pilotctl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if v["status"] == "error" {
        let message = v["message"].as_str().unwrap();
        let expected = user.dir.join(".pilot").join("pilot.sock");
        assert!(message.contains(&*expected.to_string_lossy()), "{message}");
    }
    assert!(!cwd.path().join(".pilot").exists());
}

/// PILOT_HOME naming a file: no daemon there (`not_running`), not an
/// `internal` error with a hint about the socket's owner.
#[test]
fn a_home_that_is_a_file_has_no_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let run = pilotctl(
        &["info", "--json"],
        &[("PILOT_HOME", file.to_str().unwrap())],
    );
    assert_eq!(run.error_code(), "not_running", "{}", run.stdout);
}

#[test]
fn version_under_json_status_check_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("h");
    let home = home.to_str().unwrap();
    // --json --version answers JSON like every other command.
    let v = pilotctl(&["--json", "--version"], &[]);
    assert_eq!(v.code, 0);
    assert_eq!(v.data()["version"], env!("CARGO_PKG_VERSION"));
    // So does --help, for the tool and for a command: one object, the
    // help text in it, nothing else on stdout.
    for args in [
        &["--help", "--json"][..],
        &["gateway", "start", "--help", "--json"],
    ] {
        let h = pilotctl(args, &[]);
        assert_eq!(h.code, 0, "{args:?}");
        assert_eq!(h.stdout.lines().count(), 1, "{args:?}: {}", h.stdout);
        let text = h.data()["help"].as_str().unwrap().to_string();
        assert!(text.contains("Usage: pilotctl"), "{args:?}: {text}");
    }
    // status --check: only the exit status, nothing on stderr.
    let c = pilotctl(&["daemon", "status", "--check", "--home", home], &[]);
    assert_eq!(c.code, 3);
    assert_eq!((c.stdout.as_str(), c.stderr.as_str()), ("", ""));
    let c = pilotctl(
        &["daemon", "status", "--check", "--home", home, "--json"],
        &[],
    );
    assert_eq!(c.error_code(), "not_running");
    assert_eq!(c.stderr, "");
    // Every error carries a hint that says something.
    for args in [
        &["daemon", "status", "--check", "--home", home, "--json"][..],
        &["daemon", "status", "--home", home, "--json"][..],
        &["ping", "0:0000.0000.0010", "--json"][..],
    ] {
        let r = pilotctl(args, &[("PILOT_HOME", home)]);
        let hint = r.json()["hint"].as_str().unwrap_or_default().to_string();
        assert!(!hint.is_empty(), "{args:?}: {}", r.stdout);
    }
}

/// The `.rs` files under `dir`, recursively.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read source dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literal at the start of `text` (after white space), if any.
fn literal(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

/// Issue 10, item 14: every error code a command can emit is in the
/// README's table and in `context`. The codes are read from the source:
/// the `codes` constants used, the literal codes of `Failure::new`, and
/// any literal a `fn code` returns (the rendezvous's `corrupt_file`,
/// `io_error`, `already_running`... were such literals).
#[test]
fn every_error_code_any_command_can_emit_is_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let mut documented: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split_once("` | "))
        .filter(|(_, rest)| {
            rest.split(' ')
                .next()
                .is_some_and(|e| e.parse::<u8>().is_ok())
        })
        .map(|(code, _)| code.to_string())
        .collect();
    documented.sort();
    let context = pilotctl(&["context", "--json"], &[]).data();
    let mut listed: Vec<String> = context["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(documented, listed, "README table vs context");
    for c in context["commands"].as_array().unwrap() {
        for e in c["errors"].as_array().unwrap() {
            assert!(
                listed.contains(&e.as_str().unwrap().to_string()),
                "{} lists {e}",
                c["name"]
            );
        }
    }

    let api = std::fs::read_to_string(root.join("driver-mio/src/ipc/api.rs")).unwrap();
    let module = api.split("pub mod codes {").nth(1).expect("codes module");
    let constants: Vec<(String, String)> = module
        .split('}')
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            Some((
                name.trim().to_string(),
                literal(rest.split_once('=')?.1)?.to_string(),
            ))
        })
        .collect();
    assert!(constants.len() >= 9, "{constants:?}");

    let mut files = Vec::new();
    sources(&root.join("pilotctl/src"), &mut files);
    sources(&root.join("driver-mio/src"), &mut files);
    let mut emitted: Vec<(String, String)> = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.display().to_string();
        for (i, _) in text.match_indices("codes::") {
            let rest = &text[i + 7..];
            let ident: String = rest
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                .collect();
            if ident.is_empty() {
                continue;
            }
            let value = constants
                .iter()
                .find(|(n, _)| *n == ident)
                .unwrap_or_else(|| panic!("{name}: codes::{ident} is no code"));
            emitted.push((name.clone(), value.1.clone()));
        }
        for (i, _) in text.match_indices("Failure::new(") {
            if let Some(code) = literal(&text[i + 13..]) {
                emitted.push((name.clone(), code.to_string()));
            }
        }
        for (i, _) in text.match_indices("fn code(") {
            let body = &text[i..];
            let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
            for part in body.split('"').skip(1).step_by(2) {
                if !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    emitted.push((name.clone(), part.to_string()));
                }
            }
        }
    }
    assert!(emitted.len() > 50, "the scan found too little: {emitted:?}");
    let undocumented: Vec<_> = emitted
        .iter()
        .filter(|(_, code)| !documented.contains(code))
        .collect();
    assert!(
        undocumented.is_empty(),
        "codes emitted but not in the README's table: {undocumented:?}"
    );
}
