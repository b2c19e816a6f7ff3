//! The compat carrier: the datagrams an agent exchanges with its
//! rendezvous, carried over one outbound TCP connection as TLS +
//! WebSocket (port 443 by default), optionally through an HTTP CONNECT
//! proxy, for places that block UDP.
//!
//! One WebSocket binary message carries exactly one datagram, both ways.
//! Nothing else is added: the datagrams are the same Noise-encrypted
//! packets a UDP agent sends, so the agent still authenticates the
//! rendezvous by its pinned key, and a TLS-intercepting proxy can neither
//! read nor forge anything. TLS only gets the bytes through.
//!
//! Head-of-line blocking: TCP delivers in order, so one lost segment
//! delays every datagram behind it. The carrier never makes it worse: it
//! keeps no queue of its own beyond a small bounded write buffer, and a
//! datagram that does not fit is dropped and counted, exactly as a full
//! UDP socket buffer would drop it; the overlay's own streams retransmit.
//! So a slow carrier shows up to the overlay as loss, which its
//! congestion control already answers, instead of as growing delay.
//!
//! The modules: [`tls`] (certificates, trust, pinning), [`server`] (the
//! rendezvous's listener), [`client`] (the daemon's connection, with
//! reconnects), [`proxy`] (HTTPS_PROXY and NO_PROXY, HTTP CONNECT).

pub mod client;
pub mod proxy;
pub mod server;
pub mod tls;
mod tlsio;

use std::fmt;
use std::str::FromStr;

use tungstenite::protocol::WebSocketConfig;

/// The HTTP path of the WebSocket upgrade. Anything else is refused with
/// 404, so the port can be shared behind a path-routing front end.
pub const WS_PATH: &str = "/pilot/v1/carrier";

/// The port the carrier uses unless told otherwise.
pub const DEFAULT_PORT: u16 = 443;

/// The largest message taken: well above the largest datagram the core
/// sends (about 1.3 KB), far below anything that costs memory.
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Bytes of encoded messages a connection may hold waiting for the
/// socket; past it, datagrams are dropped and counted.
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// The WebSocket limits both ends use: small frames, small buffers.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// How a daemon reaches the rendezvous.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// UDP: direct paths between agents, the relay as the floor.
    #[default]
    Udp,
    /// Everything over one TLS + WebSocket connection to the rendezvous.
    Compat,
    /// UDP first; compat when the rendezvous does not answer over UDP.
    Auto,
}

impl Transport {
    /// The name used by flags, `PILOT_TRANSPORT` and the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Compat => "compat",
            Transport::Auto => "auto",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Transport::Udp),
            "compat" => Ok(Transport::Compat),
            "auto" => Ok(Transport::Auto),
            _ => Err(format!("unknown transport {s:?}: use udp, compat or auto")),
        }
    }
}

/// Where the carrier connects: `wss://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarrierUrl {
    /// Host name or IP literal (brackets removed), also the TLS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// HTTP path of the upgrade.
    pub path: String,
}

impl CarrierUrl {
    /// The default for a rendezvous host: port 443, the fixed path.
    pub fn for_host(host: &str) -> Self {
        CarrierUrl {
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port: DEFAULT_PORT,
            path: WS_PATH.into(),
        }
    }

    /// `host:port` as a CONNECT target and `Host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for CarrierUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wss://{}{}", self.authority(), self.path)
    }
}

impl FromStr for CarrierUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("wss://")
            .ok_or_else(|| format!("{s:?} is not a wss:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, WS_PATH),
        };
        if authority.contains('@') {
            return Err("the carrier URL takes no credentials".into());
        }
        let (host, port) = split_host_port(authority, DEFAULT_PORT)?;
        Ok(CarrierUrl {
            host,
            port,
            path: path.into(),
        })
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into host and port.
pub(crate) fn split_host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    let bad = || format!("{authority:?} is not HOST[:PORT]");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if after.is_empty() => default,
            None => return Err(bad()),
        };
        return Ok((host.into(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            let port = p.parse().map_err(|_| bad())?;
            if h.is_empty() {
                return Err(bad());
            }
            Ok((h.into(), port))
        }
        _ if authority.is_empty() => Err(bad()),
        _ => Ok((authority.into(), default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u: CarrierUrl = "wss://rv.example:8443/x/y".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("rv.example", 8443, "/x/y")
        );
        let u: CarrierUrl = "wss://[::1]".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 443, WS_PATH)
        );
        assert_eq!(u.to_string(), format!("wss://[::1]:443{WS_PATH}"));
        assert!("https://a".parse::<CarrierUrl>().is_err());
        assert!("wss://u:p@a".parse::<CarrierUrl>().is_err());
        assert!("wss://a:x".parse::<CarrierUrl>().is_err());
        assert_eq!("Auto".parse::<Transport>(), Ok(Transport::Auto));
        assert!("tcp".parse::<Transport>().is_err());
    }
}
