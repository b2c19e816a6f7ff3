//! The rendezvous's address as users write it: `HOST:PORT` with a DNS
//! name, an IPv4 address or a bracketed IPv6 address, and the lookups that
//! turn a name into a UDP address.
//!
//! Lookups (`getaddrinfo` through [`ToSocketAddrs`]) block, for as long as
//! the system's resolver takes; they run on a thread of their own, bounded
//! by a timeout at start ([`lookup`]) and never waited for by the daemon's
//! event loop ([`Lookup`]).

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// How long a lookup at start may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// `HOST:PORT`: an IP address or a DNS name, and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// The host as written (an IPv6 address without brackets).
    pub host: Host,
    /// The UDP port.
    pub port: u16,
}

/// An IP address or a name to look up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An address: nothing to look up.
    Ip(IpAddr),
    /// A DNS name (or a name in the hosts file).
    Name(String),
}

impl HostPort {
    /// The name to look up, if the host is not an address.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            Host::Name(n) => Some(n),
            Host::Ip(_) => None,
        }
    }

    /// The address, if the host is one.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// The host as a URL or TLS name wants it (IPv6 without brackets).
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(n) => n.clone(),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => SocketAddr::new(*ip, self.port).fmt(f),
            Host::Name(n) => write!(f, "{n}:{}", self.port),
        }
    }
}

/// What is wrong with a `HOST:PORT` (the message never repeats the input:
/// callers quote it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl FromStr for HostPort {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort {
                host: Host::Ip(a.ip()),
                port: a.port(),
            });
        }
        let (host, port) = s.rsplit_once(':').ok_or(ParseError("no :PORT"))?;
        if host.contains(':') || host.starts_with('[') {
            return Err(ParseError(
                "not an IPv6 address with a port; write it as [ADDRESS]:PORT",
            ));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| ParseError("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(ParseError("port 0 is not a rendezvous's port"));
        }
        if host.parse::<IpAddr>().is_ok() {
            // "1.2.3.4:5" parsed above; nothing else gets here.
            return Err(ParseError("not an address"));
        }
        check_name(host)?;
        Ok(HostPort {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }
}

/// A DNS name: dot-separated labels of letters, digits, '-' and '_', each
/// 1-63 characters, 253 in all (a trailing dot allowed).
fn check_name(name: &str) -> Result<(), ParseError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(ParseError("no host before :PORT"));
    }
    if bare.len() > 253 {
        return Err(ParseError("the host name is longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(ParseError(
                "a host name's labels are 1-63 characters between dots",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ParseError(
                "a host name has only letters, digits, '-' and '.'",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(ParseError(
                "a host name's labels neither start nor end with '-'",
            ));
        }
    }
    if bare
        .split('.')
        .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ParseError("not an IPv4 address"));
    }
    Ok(())
}

/// Why a name gave no usable address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupError {
    /// The resolver found nothing (or failed): its message.
    NotFound {
        /// The name.
        name: String,
        /// What the resolver said.
        detail: String,
    },
    /// The resolver did not answer in time.
    Timeout {
        /// The name.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Only addresses of a family the local socket cannot reach.
    WrongFamily {
        /// The name.
        name: String,
        /// What it resolved to.
        found: Vec<SocketAddr>,
        /// Our socket's address.
        local: SocketAddr,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound { name, detail } => {
                write!(f, "cannot resolve the rendezvous `{name}`: {detail}")
            }
            LookupError::Timeout { name, waited } => write!(
                f,
                "looking up the rendezvous `{name}` took longer than {} s",
                waited.as_secs()
            ),
            LookupError::WrongFamily { name, found, local } => {
                let found: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                write!(
                    f,
                    "the rendezvous `{name}` has only {} addresses ({}), which a socket on {local} cannot reach",
                    if local.is_ipv4() { "IPv6" } else { "IPv4" },
                    found.join(", ")
                )
            }
        }
    }
}

impl LookupError {
    /// What to do about it.
    pub fn hint(&self) -> String {
        match self {
            LookupError::NotFound { .. } | LookupError::Timeout { .. } => {
                "check the name (and the machine's DNS or /etc/hosts), or give the rendezvous's IP address, e.g. --rendezvous 192.0.2.1:4000".into()
            }
            LookupError::WrongFamily { local, .. } => family_hint(*local).into(),
        }
    }
}

/// What to do when a UDP socket bound at `local` cannot reach the
/// rendezvous's address family.
pub fn family_hint(local: SocketAddr) -> &'static str {
    if local.is_ipv4() {
        "listen on IPv6 too with --listen [::]:0, or give the rendezvous's IPv4 address"
    } else {
        "listen on IPv4 too with --listen [::]:0 (dual stack) or 0.0.0.0:0, or give the rendezvous's IPv6 address"
    }
}

/// Which families a UDP socket bound at `local` reaches: an IPv4 socket
/// only IPv4; an IPv6 socket on `[::]` both (dual stack, as
/// [`crate::udp`] binds it); one on a specific IPv6 address only IPv6.
pub fn reaches(local: SocketAddr, remote: &SocketAddr) -> bool {
    match local.ip() {
        IpAddr::V4(_) => remote.is_ipv4(),
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => remote.is_ipv4(),
        IpAddr::V6(_) => remote.is_ipv6(),
    }
}

/// The address to use among `found` (the resolver's order, which already
/// prefers what the host can route) for a socket bound at `local`: the
/// first the socket can reach; on a dual-stack socket IPv6 first, as the
/// resolver sorts them.
pub fn pick(
    name: &str,
    found: &[SocketAddr],
    local: SocketAddr,
) -> Result<SocketAddr, LookupError> {
    if found.is_empty() {
        return Err(LookupError::NotFound {
            name: name.into(),
            detail: "no address".into(),
        });
    }
    found
        .iter()
        .copied()
        .find(|a| reaches(local, a))
        .ok_or_else(|| LookupError::WrongFamily {
            name: name.into(),
            found: found.to_vec(),
            local,
        })
}

/// Every address `name` has (blocking).
fn addresses(name: &str, port: u16) -> Result<Vec<SocketAddr>, LookupError> {
    let mut found: Vec<SocketAddr> = (name, port)
        .to_socket_addrs()
        .map_err(|e| LookupError::NotFound {
            name: name.into(),
            detail: e.to_string(),
        })?
        .collect();
    let mut seen = Vec::new();
    found.retain(|a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    });
    Ok(found)
}

/// `target` as a UDP address for a socket bound at `local`: an address
/// as it is, a name looked up on a thread of its own, waiting at most
/// `timeout`.
pub fn lookup(
    target: &HostPort,
    local: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, LookupError> {
    let Some(name) = target.name() else {
        return Ok(target.addr().expect("an IP host"));
    };
    let (tx, rx) = mpsc::channel();
    let (n, port) = (name.to_string(), target.port);
    let spawned = std::thread::Builder::new()
        .name("pilot-lookup".into())
        .spawn(move || {
            let _ = tx.send(addresses(&n, port));
        });
    if let Err(e) = spawned {
        return Err(LookupError::NotFound {
            name: name.into(),
            detail: format!("cannot start a lookup: {e}"),
        });
    }
    match rx.recv_timeout(timeout) {
        Ok(found) => pick(name, &found?, local),
        Err(_) => Err(LookupError::Timeout {
            name: name.into(),
            waited: timeout,
        }),
    }
}

/// A lookup thread's answer: every address found.
type Found = Result<Vec<SocketAddr>, LookupError>;

/// A lookup in the background for an event loop: started, then polled
/// each turn; the waker wakes the loop when the answer is in. At most one
/// runs at a time, and one the resolver never answers is given up after
/// [`LOOKUP_TIMEOUT`] so that the next can start.
pub struct Lookup {
    target: HostPort,
    waker: Arc<mio::Waker>,
    running: Option<(mpsc::Receiver<Found>, std::time::Instant)>,
}

impl Lookup {
    /// Lookups of `target` (a name), waking the loop through `waker`.
    pub fn new(target: HostPort, waker: Arc<mio::Waker>) -> Self {
        Lookup {
            target,
            waker,
            running: None,
        }
    }

    /// What is looked up.
    pub fn target(&self) -> &HostPort {
        &self.target
    }

    /// Starts a lookup unless one is running. False if none could start.
    pub fn start(&mut self) -> bool {
        if self.running.is_some() {
            return true;
        }
        let Some(name) = self.target.name() else {
            return false;
        };
        let (tx, rx) = mpsc::channel();
        let (n, port, waker) = (name.to_string(), self.target.port, self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("pilot-lookup".into())
            .spawn(move || {
                let _ = tx.send(addresses(&n, port));
                let _ = waker.wake();
            });
        if spawned.is_ok() {
            self.running = Some((rx, std::time::Instant::now()));
        }
        spawned.is_ok()
    }

    /// The finished lookup's answer for a socket bound at `local`, if one
    /// finished (or timed out) since the last call.
    pub fn poll(&mut self, local: SocketAddr) -> Option<Result<SocketAddr, LookupError>> {
        let (rx, started) = self.running.as_ref()?;
        let name = self.target.name().unwrap_or_default().to_string();
        let answer = match rx.try_recv() {
            Ok(found) => found.and_then(|f| pick(&name, &f, local)),
            Err(mpsc::TryRecvError::Empty) if started.elapsed() < LOOKUP_TIMEOUT => return None,
            Err(mpsc::TryRecvError::Empty) => Err(LookupError::Timeout {
                name,
                waited: LOOKUP_TIMEOUT,
            }),
            Err(mpsc::TryRecvError::Disconnected) => Err(LookupError::NotFound {
                name,
                detail: "the lookup failed".into(),
            }),
        };
        self.running = None;
        Some(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> Result<HostPort, ParseError> {
        s.parse()
    }

    #[test]
    fn addresses_and_names_parse() {
        assert_eq!(
            hp("127.0.0.1:4000").unwrap().addr(),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            hp("[::1]:4000").unwrap().addr(),
            Some("[::1]:4000".parse().unwrap())
        );
        let n = hp("Rendezvous.Example.com:4000").unwrap();
        assert_eq!(n.name(), Some("rendezvous.example.com"));
        assert_eq!(n.to_string(), "rendezvous.example.com:4000");
        assert_eq!(hp("localhost:14000").unwrap().name(), Some("localhost"));
        assert_eq!(hp(" rv-1.internal.:9 ").unwrap().port, 9);
        assert_eq!(hp("[::1]:4000").unwrap().to_string(), "[::1]:4000");
        assert_eq!(hp("[::1]:4000").unwrap().host_text(), "::1");
    }

    #[test]
    fn bad_addresses_say_why() {
        for bad in [
            "nowhere",
            ":4000",
            "host:",
            "host:0",
            "host:70000",
            "host:http",
            "::1:4000",
            "[::1:4000",
            "a..b:4000",
            "-a.b:4000",
            "a b:4000",
            "é.example:4000",
            "1.2.3:4000",
            "300.1.1.1:4000",
        ] {
            assert!(hp(bad).is_err(), "{bad}");
        }
        let long = format!("{}.example:4000", "a".repeat(64));
        assert!(hp(&long).is_err());
    }

    #[test]
    fn the_family_the_socket_reaches_is_chosen() {
        let v4: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let any6: SocketAddr = "[::]:0".parse().unwrap();
        let one6: SocketAddr = "[::1]:0".parse().unwrap();
        assert_eq!(pick("n", &[v6, v4], any4), Ok(v4));
        assert_eq!(pick("n", &[v6, v4], any6), Ok(v6));
        assert_eq!(pick("n", &[v4, v6], any6), Ok(v4));
        assert_eq!(pick("n", &[v4, v6], one6), Ok(v6));
        let e = pick("n", &[v6], any4).unwrap_err();
        assert!(matches!(e, LookupError::WrongFamily { .. }));
        assert!(e.to_string().contains("only IPv6"), "{e}");
        assert!(e.hint().contains("[::]:0"));
        assert!(pick("n", &[], any4).is_err());
    }

    #[test]
    fn localhost_resolves_to_loopback() {
        let t = hp("localhost:4000").unwrap();
        let a = lookup(&t, "0.0.0.0:0".parse().unwrap(), LOOKUP_TIMEOUT).unwrap();
        assert!(a.ip().is_loopback() && a.is_ipv4(), "{a}");
        assert_eq!(a.port(), 4000);
        let ip = hp("127.0.0.1:9").unwrap();
        assert_eq!(
            lookup(&ip, "0.0.0.0:0".parse().unwrap(), LOOKUP_TIMEOUT).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
    }
}
