//! Checking what users write into the settings (`config.json`): one
//! parser per setting, shared by `daemon start`, `init` and `config`, so
//! every command refuses the same things with the same hint.

use std::net::SocketAddr;

use driver_mio::daemon::agent::HOSTNAME_HINT;
use driver_mio::daemon::bridge::{BridgePolicy, PeerSet, PortSet};
use driver_mio::daemon::home::Settings;
use driver_mio::resolve::{HostPort, ParseError};
use pilot_proto::addr::Hostname;
use pilot_proto::identity::{parse_public_key, PublicKey};

use crate::output::Failure;

/// An `invalid_argument` failure.
pub fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure::new("invalid_argument", message, hint)
}

/// A file under the home that cannot be read or written.
pub fn file_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(
        "internal",
        e.to_string(),
        "fix or move the file named above; nothing was changed",
    )
}

/// User input quoted in a message: on one line, at most 60 characters
/// (a pasted file or a long line stays readable).
pub fn quoted(text: &str) -> String {
    const MAX: usize = 60;
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= MAX {
        return format!("`{one_line}`");
    }
    let head: String = one_line.chars().take(MAX - 1).collect();
    format!("`{head}…` ({} characters)", text.chars().count())
}

/// The rendezvous's address: HOST:PORT with a DNS name, an IPv4 address
/// or a bracketed IPv6 address (looked up when the daemon starts).
pub fn rendezvous(text: &str) -> Result<HostPort, Failure> {
    text.trim().parse().map_err(|e: ParseError| {
        invalid(
            format!("{} is not a rendezvous address: {e}", quoted(text)),
            "use HOST:PORT with a DNS name, an IPv4 address or [IPv6]:PORT, e.g. rendezvous.example.com:4000 or 127.0.0.1:4000",
        )
    })
}

/// The rendezvous's public key: 64 hex digits of a valid Ed25519 point.
pub fn rendezvous_key(text: &str) -> Result<PublicKey, Failure> {
    let Some(key) = parse_public_key(text.trim()) else {
        return Err(invalid(
            format!("{} is not a public key", quoted(text)),
            "expected 64 hex digits, as printed by `pilotctl rendezvous start`",
        ));
    };
    // 64 hex digits that are no Ed25519 point: a typo in a copied key,
    // not a wrong length, so the hint must not ask for 64 hex digits.
    if key.x25519().is_err() {
        return Err(invalid(
            format!(
                "{} is not a valid public key: 64 hex digits, but no Ed25519 point (a digit mistyped?)",
                quoted(text)
            ),
            "copy the key again from `pilotctl rendezvous start` or `pilotctl rendezvous status` on the rendezvous host",
        ));
    }
    Ok(key)
}

/// A hostname.
pub fn hostname(text: &str) -> Result<Hostname, Failure> {
    Hostname::new(text)
        .map_err(|e| invalid(format!("bad hostname {}: {e}", quoted(text)), HOSTNAME_HINT))
}

/// The UDP address the daemon listens on.
pub fn listen(text: &str) -> Result<SocketAddr, Failure> {
    text.trim().parse().map_err(|_| {
        invalid(
            format!("{} is not a listen address", quoted(text)),
            "e.g. 0.0.0.0:0 or 127.0.0.1:4001",
        )
    })
}

/// An email address, loosely: `local@domain`, no spaces.
pub fn email(text: &str) -> Result<String, Failure> {
    let ok = text.len() <= 254
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
        && text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if !ok {
        return Err(invalid(
            format!("{} is not an email address", quoted(text)),
            "e.g. me@example.com",
        ));
    }
    Ok(text.to_string())
}

/// A yes/no setting.
pub fn boolean(key: &str, text: &str) -> Result<bool, Failure> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(
            format!("{} is not a value for {key}", quoted(text)),
            format!("use {key}=true or {key}=false"),
        )),
    }
}

/// The local TCP ports trusted peers may reach through the bridge.
pub fn bridge_ports(text: &str) -> Result<PortSet, Failure> {
    PortSet::parse(text).map_err(|e| {
        invalid(
            format!("bridge_ports: {e}"),
            "use all, none, or ports and ranges like 80,8000-8099",
        )
    })
}

/// The trusted peers that may reach local TCP services.
pub fn bridge_peers(text: &str) -> Result<PeerSet, Failure> {
    PeerSet::parse(text).map_err(|e| {
        invalid(
            format!("bridge_peers: {e}"),
            "use all, or addresses and hostnames like 0:0000.0000.002A,agent-alpha",
        )
    })
}

/// The bridge's policy from the saved settings (unset: everything).
pub fn bridge_policy(s: &Settings) -> Result<BridgePolicy, Failure> {
    Ok(BridgePolicy {
        ports: bridge_ports(s.bridge_ports.as_deref().unwrap_or("all"))?,
        peers: bridge_peers(s.bridge_peers.as_deref().unwrap_or("all"))?,
    })
}

/// The keys `config --set` knows, in the order `config` shows them.
pub const KEYS: &[&str] = &[
    "rendezvous",
    "rendezvous_key",
    "hostname",
    "public",
    "listen",
    "email",
    "identity",
    "bridge_ports",
    "bridge_peers",
];

/// Sets `key` to `value` in `settings` after checking it. An empty value
/// unsets an optional setting.
pub fn set(settings: &mut Settings, key: &str, value: &str) -> Result<(), Failure> {
    let unset = value.trim().is_empty();
    let optional =
        |parse: &dyn Fn(&str) -> Result<String, Failure>| -> Result<Option<String>, Failure> {
            if unset {
                Ok(None)
            } else {
                parse(value).map(Some)
            }
        };
    match key {
        "rendezvous" => settings.rendezvous = optional(&|v| rendezvous(v).map(|a| a.to_string()))?,
        "rendezvous_key" => {
            settings.rendezvous_key = optional(&|v| rendezvous_key(v).map(|k| k.to_string()))?
        }
        "hostname" => settings.hostname = optional(&|v| hostname(v).map(|h| h.to_string()))?,
        "public" => settings.public = boolean(key, value)?,
        "listen" => settings.listen = optional(&|v| listen(v).map(|a| a.to_string()))?,
        "email" => settings.email = optional(&email)?,
        "identity" => settings.identity = optional(&|v| Ok(v.to_string()))?,
        "bridge_ports" => {
            settings.bridge_ports = optional(&|v| bridge_ports(v).map(|p| p.to_string()))?
        }
        "bridge_peers" => {
            settings.bridge_peers = optional(&|v| bridge_peers(v).map(|p| p.to_string()))?
        }
        _ => {
            return Err(invalid(
                format!("unknown setting {}", quoted(key)),
                format!("valid keys: {}", KEYS.join(", ")),
            ))
        }
    }
    Ok(())
}

/// Splits `key=value`.
pub fn key_value(text: &str) -> Result<(&str, &str), Failure> {
    text.split_once('=')
        .map(|(k, v)| (k.trim(), v))
        .ok_or_else(|| {
            invalid(
                format!("{} is not KEY=VALUE", quoted(text)),
                format!(
                    "e.g. --set hostname=my-agent; valid keys: {}",
                    KEYS.join(", ")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_checks_each_key() {
        let mut s = Settings::default();
        set(&mut s, "hostname", "agent-alpha").unwrap();
        set(&mut s, "public", "true").unwrap();
        set(&mut s, "rendezvous", "127.0.0.1:4000").unwrap();
        set(&mut s, "email", "me@example.com").unwrap();
        assert_eq!(s.hostname.as_deref(), Some("agent-alpha"));
        assert!(s.public);
        assert_eq!(s.rendezvous.as_deref(), Some("127.0.0.1:4000"));
        set(&mut s, "rendezvous", "Rendezvous.Example.com:4000").unwrap();
        assert_eq!(s.rendezvous.as_deref(), Some("rendezvous.example.com:4000"));
        set(&mut s, "rendezvous", "[::1]:4000").unwrap();
        assert_eq!(s.rendezvous.as_deref(), Some("[::1]:4000"));
        set(&mut s, "hostname", "").unwrap();
        assert_eq!(s.hostname, None);
        for (k, v) in [
            ("hostname", "Bad_Name"),
            ("public", "yes"),
            ("rendezvous", "nowhere"),
            ("rendezvous", "::1:4000"),
            ("rendezvous", "bad name:4000"),
            ("rendezvous_key", "abcd"),
            ("listen", "x"),
            ("email", "not an email"),
            ("colour", "blue"),
            ("bridge_ports", "80-70"),
            ("bridge_peers", "Not A Peer"),
        ] {
            let e = set(&mut s, k, v).unwrap_err();
            assert_eq!(e.code, "invalid_argument", "{k}={v}");
            assert!(!e.hint.is_empty(), "{k}={v} has a hint");
        }
        let long = "x".repeat(500);
        let e = set(&mut s, "rendezvous", &long).unwrap_err();
        assert!(e.message.contains("(500 characters)"), "{}", e.message);
        assert!(e.message.len() < 200, "{}", e.message);
        for key in ["hostname", "listen", "email", "rendezvous_key"] {
            let e = set(&mut s, key, &format!("{long}\n{long}")).unwrap_err();
            assert!(e.message.len() < 300, "{key}: {}", e.message);
            assert!(!e.message.contains('\n'), "{key}: {}", e.message);
        }
        assert_eq!(quoted("short"), "`short`");
        assert!(set(&mut s, "colour", "x")
            .unwrap_err()
            .hint
            .contains("rendezvous_key"));
    }
}
