//! Identity and discovery: `info`, `find`, `init`, `config`,
//! `set-hostname`, `clear-hostname`, `set-public`, `set-private`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use driver_mio::daemon::home::{Home, Settings};
use driver_mio::ipc::api::Request;
use serde_json::{json, Value};

use super::client::{connect, default_client, request, text};
use super::daemon::AgentArgs;
use super::settings::{self, file_failure};
use super::CommandDoc;
use crate::output::{Failure, Success};
use crate::paths;

/// Identity and discovery commands.
#[derive(Subcommand, Debug)]
pub enum IdentityCommand {
    /// This agent's address, identity and state.
    Info,
    /// Look a node up by hostname or address.
    Find {
        /// Hostname, address (0:0000.0000.002A) or node ID (42).
        peer: String,
    },
    /// Prepare PILOT_HOME (identity key and settings) without starting a
    /// daemon. Never replaces an existing identity.
    Init(AgentArgs),
    /// Show the saved settings, or change them with --set KEY=VALUE
    /// (hostname, public, bridge_ports and bridge_peers also apply live to
    /// a running daemon).
    Config {
        /// A setting to change, KEY=VALUE (repeatable; an empty VALUE
        /// unsets). Keys: rendezvous, rendezvous_key, hostname, public,
        /// listen, email, identity, bridge_ports, bridge_peers.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
    /// Register under another hostname, now and after restarts.
    SetHostname {
        /// The new hostname (lower-case letters, digits, '-').
        name: String,
    },
    /// Register without a hostname (findable by address only).
    ClearHostname,
    /// Be findable by anyone, now and after restarts.
    SetPublic,
    /// Be findable only by peers that trust you (the default).
    SetPrivate,
}

impl IdentityCommand {
    /// Runs the command.
    pub fn run(self, _json: bool) -> Result<Success, Failure> {
        match self {
            IdentityCommand::Info => info(),
            IdentityCommand::Find { peer } => find(peer),
            IdentityCommand::Init(a) => init(a),
            IdentityCommand::Config { set } => config(&set),
            IdentityCommand::SetHostname { name } => {
                settings::hostname(&name)?;
                change(Request::SetHostname {
                    hostname: Some(name),
                })
            }
            IdentityCommand::ClearHostname => change(Request::SetHostname { hostname: None }),
            IdentityCommand::SetPublic => change(Request::SetVisibility { public: true }),
            IdentityCommand::SetPrivate => change(Request::SetVisibility { public: false }),
        }
    }
}

/// What `context` says of these commands.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "info",
        returns: r#"{"address":"string|null","node_id":"number|null","hostname":"string|null","public_key":"string","fingerprint":"string","registered":"bool","registration_refused":{"code":"string","reason":"string","message":"string","hostname":"string|null"},"public_endpoint":"string|null","rendezvous":{"name":"string|null","address":"string"},"nat":{"mapping":"string","stride":"number|null","state":"string"},"peers":"number","pending":"number","streams":"number","uptime_secs":"number","datagrams_in":"number","datagrams_out":"number","dropped":"number"}"#,
        errors: &["not_running", "timeout"],
    },
    CommandDoc {
        name: "find",
        returns: r#"{"address":"string","node_id":"number","hostname":"string|null","public_key":"string","fingerprint":"string","public":"bool","online":"bool","endpoints":["string"]}"#,
        errors: &[
            "not_running",
            "invalid_argument",
            "not_found",
            "not_registered",
            "timeout",
        ],
    },
    CommandDoc {
        name: "init",
        returns: r#"{"home":"string","identity_file":"string","identity_created":"bool","public_key":"string","fingerprint":"string","settings":"object","next":"string"}"#,
        errors: &["invalid_argument"],
    },
    CommandDoc {
        name: "config",
        returns: r#"{"file":"string","settings":"object","applied_live":["string"],"next_start":["string"]}"#,
        errors: &["invalid_argument", "already_exists", "timeout"],
    },
    CommandDoc {
        name: "set-hostname",
        returns: REGISTRATION,
        errors: &[
            "invalid_argument",
            "already_exists",
            "connection_failed",
            "not_registered",
            "not_running",
            "timeout",
        ],
    },
    CommandDoc {
        name: "clear-hostname",
        returns: REGISTRATION,
        errors: &[
            "connection_failed",
            "not_registered",
            "not_running",
            "timeout",
        ],
    },
    CommandDoc {
        name: "set-public",
        returns: REGISTRATION,
        errors: &[
            "connection_failed",
            "not_registered",
            "not_running",
            "timeout",
        ],
    },
    CommandDoc {
        name: "set-private",
        returns: REGISTRATION,
        errors: &[
            "connection_failed",
            "not_registered",
            "not_running",
            "timeout",
        ],
    },
];

/// What the registration commands answer: what the agent registers now.
const REGISTRATION: &str =
    r#"{"address":"string|null","hostname":"string|null","public":"bool","pending":"bool"}"#;

/// `pilotctl info`.
pub fn info() -> Result<Success, Failure> {
    let mut c = default_client()?;
    let info = request(&mut c, Request::Info)?;
    let field = |k: &str| text(&info, k);
    let nat = &info["nat"];
    let nat_text = match (nat["mapping"].as_str(), nat["stride"].as_u64()) {
        (Some(m), Some(stride)) => format!("{m} (stride {stride})"),
        (Some("unknown") | None, _) => format!(
            "unknown ({})",
            nat["state"].as_str().unwrap_or("-").replace('_', " ")
        ),
        (Some(m), None) => m.to_string(),
    };
    // The rendezvous by the name given, and the address it resolved to.
    let rv = &info["rendezvous"];
    let rv_text = match (rv["name"].as_str(), rv["address"].as_str()) {
        (Some(name), Some(addr)) => format!("{name} ({addr})"),
        (None, Some(addr)) => addr.to_string(),
        _ => "-".into(),
    };
    // The transport asked for, what carries the traffic now when that
    // differs (auto), and the compat carrier's state with its last error.
    let t = &info["transport"];
    let mut transport_text = text(t, "mode");
    if t["active"] != t["mode"] {
        transport_text.push_str(&format!(" (active: {})", text(t, "active")));
    }
    match (
        t["carrier_connected"].as_bool(),
        t["carrier_error"].as_str(),
    ) {
        (Some(true), _) => transport_text.push_str(", carrier connected"),
        (Some(false), Some(e)) => transport_text.push_str(&format!(", carrier down: {e}")),
        (Some(false), None) => transport_text.push_str(", carrier not connected"),
        (None, _) => {}
    }
    let text = format!(
        "Address:     {}\nHostname:    {}\nPublic key:  {}\nFingerprint: {}\nRendezvous:  {rv_text}\nTransport:   {transport_text}\nRegistered:  {}\nEndpoint:    {}\nNAT:         {nat_text}\nBridge:      ports {}, peers {}\nPeers:       {}\nPending:     {}\nUptime:      {} s",
        field("address"),
        field("hostname"),
        field("public_key"),
        field("fingerprint"),
        field("registered"),
        field("public_endpoint"),
        text(&info["bridge"], "ports"),
        text(&info["bridge"], "peers"),
        field("peers"),
        field("pending"),
        field("uptime_secs"),
    );
    Ok(Success::new(info, text))
}

/// `pilotctl find <hostname|address>`.
pub fn find(peer: String) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let v = request(&mut c, Request::Resolve { peer })?;
    let text = format!(
        "Address:     {}\nHostname:    {}\nFingerprint: {}\nPublic:      {}\nOnline:      {}",
        text(&v, "address"),
        text(&v, "hostname"),
        text(&v, "fingerprint"),
        text(&v, "public"),
        text(&v, "online")
    );
    Ok(Success::new(v, text))
}

/// The identity file a home uses: the saved setting, else `identity.key`.
fn identity_file(home: &Home, saved: &Settings) -> PathBuf {
    saved
        .identity
        .as_ref()
        .map(PathBuf::from)
        .unwrap_or_else(|| home.path("identity.key"))
}

/// `pilotctl init`: the home, an identity, the settings; no daemon.
pub fn init(a: AgentArgs) -> Result<Success, Failure> {
    let given = [
        ("rendezvous", a.rendezvous()),
        ("rendezvous_key", a.rendezvous_key()),
        ("hostname", a.hostname.clone()),
        (
            "public",
            if a.private {
                Some("false".to_string())
            } else {
                a.public.then(|| "true".to_string())
            },
        ),
        ("email", a.email.clone()),
    ];
    let wanted: Vec<(&str, &str)> = given
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    // Everything is checked before anything is written.
    let mut check = Settings::default();
    for (k, v) in &wanted {
        settings::set(&mut check, k, v)?;
    }
    let dir = paths::home(None);
    let home = Home::open(&dir).map_err(file_failure)?;
    let saved = home.settings().map_err(file_failure)?;
    let key_path = identity_file(&home, &saved);
    let created = !key_path.exists();
    let identity = home.identity(Some(&key_path)).map_err(file_failure)?;
    let saved = home
        .update_settings(|s| {
            for (k, v) in &wanted {
                // Checked above; cannot fail.
                let _ = settings::set(s, k, v);
            }
        })
        .map_err(file_failure)?;
    let public_key = identity.public();
    let next = if saved.rendezvous.is_some() && saved.rendezvous_key.is_some() {
        "pilotctl daemon start".to_string()
    } else {
        "pilotctl daemon start --rendezvous HOST:PORT --rendezvous-key KEY".to_string()
    };
    let text = format!(
        "{} {}\n  Identity:    {} ({})\n  Public key:  {public_key}\n  Fingerprint: {}\n  Settings:    {}\nNext: {next}",
        if created { "Initialized" } else { "Already initialized:" },
        dir.display(),
        key_path.display(),
        if created { "created" } else { "kept the existing identity" },
        public_key.fingerprint(),
        home.path("config.json").display(),
    );
    Ok(Success::new(
        json!({
            "home": dir.display().to_string(),
            "identity_file": key_path.display().to_string(),
            "identity_created": created,
            "public_key": public_key.to_string(),
            "fingerprint": public_key.fingerprint().to_string(),
            "settings": saved,
            "next": next,
        }),
        text,
    ))
}

/// Settings as lines of `key  value` for people.
fn settings_text(file: &Path, s: &Settings) -> String {
    let v = serde_json::to_value(s).unwrap_or(Value::Null);
    let mut out = format!("Settings ({})", file.display());
    for k in settings::KEYS {
        out.push_str(&format!("\n  {k:<15} {}", text(&v, k)));
    }
    out
}

/// `pilotctl config [--set KEY=VALUE ...]`.
pub fn config(set: &[String]) -> Result<Success, Failure> {
    let dir = paths::home(None);
    let file = dir.join("config.json");
    let mut changed = Settings::default();
    let mut pairs = Vec::new();
    for item in set {
        let (k, v) = settings::key_value(item)?;
        settings::set(&mut changed, k, v)?;
        pairs.push((k, v));
    }
    if pairs.is_empty() {
        let saved = if dir.exists() {
            Home::open(&dir)
                .and_then(|h| h.settings())
                .map_err(file_failure)?
        } else {
            Settings::default()
        };
        return Ok(Success::new(
            json!({ "file": file.display().to_string(), "settings": saved, "applied_live": [], "next_start": [] }),
            settings_text(&file, &saved),
        ));
    }
    // Hostname and visibility change live where a daemon runs; it saves
    // them itself before answering. The bridge policy changes live too,
    // and is saved below with the rest.
    let mut live = Vec::new();
    let mut later = Vec::new();
    let mut daemon = connect(&paths::running_socket(None, &dir)).ok();
    for (k, _) in &pairs {
        let req = match *k {
            "hostname" => Some(Request::SetHostname {
                hostname: changed.hostname.clone(),
            }),
            "public" => Some(Request::SetVisibility {
                public: changed.public,
            }),
            // Unset is the default, `all`.
            "bridge_ports" => Some(Request::SetBridge {
                ports: Some(changed.bridge_ports.clone().unwrap_or_else(|| "all".into())),
                peers: None,
            }),
            "bridge_peers" => Some(Request::SetBridge {
                ports: None,
                peers: Some(changed.bridge_peers.clone().unwrap_or_else(|| "all".into())),
            }),
            _ => None,
        };
        match (req, daemon.as_mut()) {
            (Some(r), Some(c)) => {
                request(c, r)?;
                live.push(k.to_string());
            }
            _ => later.push(k.to_string()),
        }
    }
    let home = Home::open(&dir).map_err(file_failure)?;
    let saved = home
        .update_settings(|s| {
            for (k, v) in &pairs {
                // Checked above; cannot fail.
                let _ = settings::set(s, k, v);
            }
        })
        .map_err(file_failure)?;
    let mut text = settings_text(&file, &saved);
    if !live.is_empty() {
        text.push_str(&format!("\nApplied now: {}", live.join(", ")));
    }
    if !later.is_empty() {
        text.push_str(&format!(
            "\nApplies at the next `pilotctl daemon start`: {}",
            later.join(", ")
        ));
    }
    Ok(Success::new(
        json!({ "file": file.display().to_string(), "settings": saved, "applied_live": live, "next_start": later }),
        text,
    ))
}

/// `set-hostname`, `clear-hostname`, `set-public`, `set-private`: a live
/// change the daemon answers once the rendezvous accepted it, or as saved
/// and pending while the rendezvous does not answer.
fn change(req: Request) -> Result<Success, Failure> {
    let mut c = default_client().map_err(|f| match f.code.as_str() {
        "not_running" => Failure::new(
            &f.code,
            f.message,
            "start it with `pilotctl daemon start`; to change only what the next start uses: `pilotctl config --set hostname=NAME` or `--set public=true|false`",
        ),
        _ => f,
    })?;
    let v = request(&mut c, req)?;
    let hostname = v.get("hostname").and_then(Value::as_str);
    let public = v.get("public").and_then(Value::as_bool).unwrap_or(false);
    let pending = v.get("pending").and_then(Value::as_bool).unwrap_or(false);
    let text = format!(
        "{} {} {}, {}\n{}",
        text(&v, "address"),
        if pending {
            "will be registered"
        } else {
            "is now registered"
        },
        hostname.map_or("without a hostname".to_string(), |h| format!("as {h}")),
        if public {
            "public: anyone can find it"
        } else {
            "private: only trusted peers can find it"
        },
        if pending {
            "(saved: the rendezvous does not answer now; the daemon registers it as soon as it does, and a restart keeps it)"
        } else {
            "(saved: a restart keeps it)"
        },
    );
    Ok(Success::new(v, text))
}
