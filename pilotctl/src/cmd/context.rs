//! `pilotctl context`: a machine-readable catalogue of every command (its
//! arguments, the shape of its `--json` answer, its error codes), built
//! from the parser's own definitions plus each group's `DOCS`; and
//! `pilotctl completions <shell>`.

use std::collections::BTreeMap;

use clap::{Arg, ArgAction, Command};
use serde_json::{json, Value};

use super::{all_docs, CommandDoc};
use crate::output::{exit_codes, Failure, Success};

/// What `context` says of itself and of `completions`.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "context",
        returns: r#"{"name":"string","version":"string","about":"string","global_args":[{"name":"string","long":"string|null","short":"string|null","help":"string","required":"bool","takes_value":"bool","positional":"bool","default":"string|null","values":["string"]}],"commands":[{"name":"string","about":"string","usage":"string","args":["object"],"returns":"object","errors":["string"]}],"errors":[{"code":"string","exit":"number"}],"output":"object"}"#,
        errors: &[],
    },
    CommandDoc {
        name: "completions",
        returns: r#"{"shell":"string","script":"string"}"#,
        errors: &["invalid_argument"],
    },
];

/// Every leaf command under `cmd`, with its full name.
pub fn leaves(cmd: &Command) -> Vec<(String, Command)> {
    let mut out = Vec::new();
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        if sub.has_subcommands() {
            for (name, leaf) in leaves(sub) {
                out.push((format!("{} {name}", sub.get_name()), leaf));
            }
        } else {
            out.push((sub.get_name().to_string(), sub.clone()));
        }
    }
    out
}

fn arg_json(a: &Arg) -> Value {
    let takes_value = !matches!(
        a.get_action(),
        ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count | ArgAction::Help
    ) && !matches!(
        a.get_action(),
        ArgAction::Version | ArgAction::HelpShort | ArgAction::HelpLong
    );
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    let default = a
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    json!({
        "name": a.get_id().as_str(),
        "long": a.get_long().map(|l| format!("--{l}")),
        "short": a.get_short().map(|s| format!("-{s}")),
        "help": a.get_help().map(|h| h.to_string()).unwrap_or_default(),
        "required": a.is_required_set(),
        "takes_value": takes_value,
        "positional": a.is_positional(),
        "default": if default.is_empty() { Value::Null } else { Value::String(default.join(",")) },
        "values": values,
    })
}

fn visible_args(cmd: &Command) -> Vec<Value> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_global_set())
        .filter(|a| {
            !matches!(
                a.get_action(),
                ArgAction::Help | ArgAction::Version | ArgAction::HelpShort | ArgAction::HelpLong
            )
        })
        .map(arg_json)
        .collect()
}

/// The catalogue, from the top-level parser definition.
pub fn catalogue(root: &Command) -> Value {
    let docs: BTreeMap<&str, CommandDoc> = all_docs().into_iter().map(|d| (d.name, d)).collect();
    let mut root = root.clone();
    root.build();
    let commands: Vec<Value> = leaves(&root)
        .into_iter()
        .map(|(name, mut c)| {
            let doc = docs.get(name.as_str());
            let returns = doc
                .and_then(|d| serde_json::from_str::<Value>(d.returns).ok())
                .unwrap_or(Value::Null);
            let mut errors: Vec<&str> = doc.map(|d| d.errors.to_vec()).unwrap_or_default();
            errors.push("internal");
            let usage = c.render_usage().to_string();
            json!({
                "name": name,
                "about": c.get_about().map(|s| s.to_string()).unwrap_or_default(),
                "usage": usage.trim_start_matches("Usage: ").to_string(),
                "args": visible_args(&c),
                "returns": returns,
                "errors": errors,
            })
        })
        .collect();
    let globals: Vec<Value> = root
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(arg_json)
        .collect();
    json!({
        "name": root.get_name(),
        "version": root.get_version().unwrap_or_default(),
        "about": root.get_about().map(|s| s.to_string()).unwrap_or_default(),
        "global_args": globals,
        "commands": commands,
        "errors": exit_codes().iter().map(|(c, e)| json!({ "code": c, "exit": e })).collect::<Vec<_>>(),
        "output": {
            "ok": {"status": "ok", "data": "<returns>"},
            "error": {"status": "error", "code": "string", "message": "string", "hint": "string"},
            "streaming": "commands that follow a stream (listen, subscribe, recv) print one JSON object per line with --json",
        },
    })
}

/// `pilotctl context`.
pub fn context(root: &Command) -> Result<Success, Failure> {
    let cat = catalogue(root);
    let mut text = String::from("Commands (`pilotctl context --json` for the full catalogue):\n");
    for c in cat["commands"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "  {:<22} {}\n",
            c["name"].as_str().unwrap_or_default(),
            c["about"].as_str().unwrap_or_default()
        ));
    }
    Ok(Success::new(cat, text))
}

/// `pilotctl completions <shell>`.
pub fn completions(
    root: &mut Command,
    shell: clap_complete::Shell,
    json: bool,
) -> Result<Success, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, root, "pilotctl", &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    if json {
        Ok(Success::new(
            json!({ "shell": shell.to_string(), "script": script }),
            "",
        ))
    } else {
        Ok(Success::new(Value::Null, script))
    }
}
