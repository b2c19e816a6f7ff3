//! The gateway: remote agents mapped to local IP addresses, so that curl,
//! browsers and any TCP client reach their services.
//!
//! Each mapped agent gets an address of the gateway's subnet (the next
//! free one, or one asked for) and a TCP listener there per gateway port.
//! A connection accepted on `IP:PORT` opens an overlay stream to the
//! mapped agent's `PORT` (ports are not translated) and is handed to the
//! [`Bridge`], which joins the two inside the daemon.
//!
//! Outside 127.0.0.0/8 the address must exist on the host: the gateway
//! adds it to the loopback interface (Linux: `ip addr add IP/32 dev lo`,
//! macOS: `ifconfig lo0 alias IP`), and removes it on unmap and stop. It
//! never takes an address another interface has: its listeners would be
//! open to that interface's network.
//! Every alias added is first written to `gateway-aliases` in the home,
//! so aliases a crash left behind are removed when the daemon (or the
//! gateway) next starts. On Linux 127.0.0.0/8 is on the loopback as a
//! whole, so a subnet inside it needs no alias, and ports from 1024 no
//! root: the rootless mode.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;

use mio::net::TcpListener;
use mio::{Interest, Registry, Token};
use pilot_proto::addr::{Address, SocketAddress};
use pilot_proto::Timestamp;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::agent::Agent;
use super::bridge::Bridge;
use crate::ipc::api::{codes, Request, Response};
use crate::tokens::Tokens;

/// The subnet when none is given.
pub const DEFAULT_SUBNET: &str = "10.4.0.0/16";
/// The most ports one gateway serves.
pub const MAX_PORTS: usize = 64;
const ROOT_HINT: &str = "the daemon adds loopback aliases and binds the ports: run it as root (`sudo pilotctl daemon start`), or go rootless with a subnet inside 127.0.0.0/8 and ports from 1024 (e.g. --subnet 127.4.0.0/16 --ports 8080)";

/// An IPv4 subnet, `A.B.C.D/N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    base: u32,
    prefix: u8,
}

impl Subnet {
    /// Parses `10.4.0.0/16` (host bits must be zero, 8 <= N <= 30).
    pub fn parse(text: &str) -> Result<Subnet, String> {
        let (ip, prefix) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a subnet (A.B.C.D/N)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("`/{prefix}`: the prefix must be 8 to 30"))?;
        let base = u32::from(ip);
        let mask = u32::MAX << (32 - prefix);
        if base & !mask != 0 {
            return Err(format!(
                "`{text}` has host bits set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Subnet { base, prefix })
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - self.prefix)
    }

    /// Whether `ip` is a host address of the subnet (not the network or
    /// broadcast address).
    pub fn has_host(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip & self.mask() == self.base && ip != self.base && ip != self.base | !self.mask()
    }

    /// The host addresses, in order.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        (self.base + 1..self.base | !self.mask()).map(Ipv4Addr::from)
    }

    /// Inside 127.0.0.0/8: no alias needed (Linux routes all of it to lo).
    pub fn is_loopback(&self) -> bool {
        Ipv4Addr::from(self.base).is_loopback()
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

struct Mapping {
    peer: Address,
    /// We added the alias (and remove it).
    alias: bool,
    listeners: Vec<(Token, TcpListener, u16)>,
}

struct Running {
    subnet: Subnet,
    ports: Vec<u16>,
    maps: BTreeMap<Ipv4Addr, Mapping>,
}

/// The gateway of one daemon: stopped, or running with its mappings.
pub struct Gateway {
    registry: Registry,
    record: PathBuf,
    running: Option<Running>,
}

fn error(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Response {
    Response::Error {
        code: code.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

fn not_running() -> Response {
    error(
        codes::NOT_FOUND,
        "no gateway is running",
        "start one with `pilotctl gateway start [--subnet CIDR] [--ports LIST] [ADDR...]`",
    )
}

/// Runs an alias command; `Err` with what it printed.
fn run_alias(args: &[&str]) -> Result<(), String> {
    let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        ("ifconfig", args.to_vec())
    } else {
        ("ip", args.to_vec())
    };
    match Command::new(program).args(&args).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("cannot run `{program}`: {e}")),
    }
}

fn alias_add(ip: Ipv4Addr) -> Result<(), String> {
    let ip = ip.to_string();
    if cfg!(target_os = "macos") {
        run_alias(&["lo0", "alias", &ip])
    } else {
        run_alias(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
    }
}

fn alias_del(ip: Ipv4Addr) -> Result<(), String> {
    let ip = ip.to_string();
    if cfg!(target_os = "macos") {
        run_alias(&["lo0", "-alias", &ip])
    } else {
        run_alias(&["addr", "del", &format!("{ip}/32"), "dev", "lo"])
    }
}

/// Whether an address is configured on this host already.
fn is_local(ip: Ipv4Addr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The host's IPv4 addresses on interfaces other than the loopback: a
/// gateway listener there would be open to that interface's network, so
/// the gateway never takes one (an address already on the loopback, added
/// by hand, say, it uses as it is).
fn outside_addresses() -> Vec<Ipv4Addr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| {
            !a.flags
                .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
        })
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect()
}

impl Gateway {
    /// A stopped gateway keeping its record of aliases at `record`;
    /// aliases a crash left behind are removed now.
    pub fn new(registry: Registry, record: PathBuf) -> Self {
        let g = Gateway {
            registry,
            record,
            running: None,
        };
        g.clean_leftovers();
        g
    }

    fn recorded(&self) -> Vec<Ipv4Addr> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn write_record(&self, ips: &[Ipv4Addr]) {
        let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        if let Err(e) = crate::fsutil::atomic_write(&self.record, text.as_bytes(), 0o600) {
            warn!(error = %e, "writing the gateway's alias record");
        }
    }

    /// The aliases this gateway holds now.
    fn held(&self) -> Vec<Ipv4Addr> {
        self.running
            .iter()
            .flat_map(|r| r.maps.iter())
            .filter(|(_, m)| m.alias)
            .map(|(ip, _)| *ip)
            .collect()
    }

    /// Removes aliases recorded by an earlier run that are not ours now.
    fn clean_leftovers(&self) {
        let held = self.held();
        let recorded = self.recorded();
        if recorded.is_empty() {
            return;
        }
        let mut kept = held.clone();
        for ip in recorded.into_iter().filter(|ip| !held.contains(ip)) {
            if !is_local(ip) {
                continue;
            }
            match alias_del(ip) {
                Ok(()) => info!(%ip, "removed a loopback alias left by an earlier gateway"),
                Err(e) => {
                    warn!(%ip, error = %e, "cannot remove a leftover loopback alias");
                    kept.push(ip);
                }
            }
        }
        self.write_record(&kept);
    }

    /// Whether `token` is one of the gateway's listeners.
    pub fn owns(&self, token: Token) -> bool {
        self.listener(token).is_some()
    }

    fn listener(&self, token: Token) -> Option<(&TcpListener, Address, u16)> {
        self.running.as_ref()?.maps.values().find_map(|m| {
            m.listeners
                .iter()
                .find(|(t, _, _)| *t == token)
                .map(|(_, l, port)| (l, m.peer, *port))
        })
    }

    /// A listener is readable: accept its connections and open a stream
    /// for each toward the mapped agent. Without trust (or any other
    /// reason the stream cannot open) the connection is reset at once.
    pub fn accept(
        &mut self,
        agent: &mut Agent,
        bridge: &mut Bridge,
        tokens: &mut Tokens,
        now: Timestamp,
        token: Token,
    ) {
        let Some((listener, peer, port)) = self.listener(token) else {
            return;
        };
        loop {
            let tcp = match listener.accept() {
                Ok((tcp, _)) => tcp,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!(error = %e, "gateway accept");
                    return;
                }
            };
            match agent.bridge_connect(now, SocketAddress::new(peer, port)) {
                Ok(stream) => {
                    if let Err(e) = bridge.adopt_outgoing(tokens, stream, tcp) {
                        warn!(error = %e, "cannot register a gateway connection");
                        agent.node.stream_abort(now, stream);
                    }
                }
                Err(e) => {
                    info!(%peer, port, error = %e, "gateway connection refused");
                    super::bridge::reset_now(tcp);
                }
            }
        }
    }

    /// Handles a gateway request.
    pub fn request(&mut self, agent: &Agent, tokens: &mut Tokens, req: Request) -> Response {
        match req {
            Request::GatewayStart {
                subnet,
                ports,
                peers,
            } => self.start(agent, tokens, subnet.as_deref(), ports, peers),
            Request::GatewayMap { peer, local_ip } => {
                match self.map(agent, tokens, &peer, local_ip.as_deref()) {
                    Ok(v) => Response::Ok { data: v },
                    Err(e) => e,
                }
            }
            Request::GatewayUnmap { local_ip } => self.unmap(tokens, &local_ip),
            Request::GatewayList => match &self.running {
                Some(_) => Response::Ok { data: self.state() },
                None => not_running(),
            },
            Request::GatewayStop => match self.stop(tokens) {
                Some(removed) => Response::Ok {
                    data: json!({ "stopped": true, "removed": removed }),
                },
                None => not_running(),
            },
            _ => error(codes::INTERNAL, "not a gateway request", ""),
        }
    }

    /// What the gateway is: pid, subnet, ports and mappings.
    pub fn state(&self) -> Value {
        let Some(r) = &self.running else {
            return Value::Null;
        };
        json!({
            "pid": std::process::id(),
            "subnet": r.subnet.to_string(),
            "ports": r.ports,
            "mappings": r.maps.iter().map(|(ip, m)| json!({
                "local_ip": ip.to_string(),
                "pilot_addr": m.peer.to_string(),
            })).collect::<Vec<_>>(),
        })
    }

    fn start(
        &mut self,
        agent: &Agent,
        tokens: &mut Tokens,
        subnet: Option<&str>,
        mut ports: Vec<u16>,
        peers: Vec<String>,
    ) -> Response {
        if self.running.is_some() {
            return error(
                codes::ALREADY_EXISTS,
                "the gateway is already running",
                "add agents with `pilotctl gateway map ADDR`, or `pilotctl gateway stop` first",
            );
        }
        let subnet = match Subnet::parse(subnet.unwrap_or(DEFAULT_SUBNET)) {
            Ok(s) => s,
            Err(e) => {
                return error(
                    codes::INVALID_ARGUMENT,
                    e,
                    "e.g. --subnet 10.4.0.0/16, or 127.4.0.0/16 for the rootless mode",
                )
            }
        };
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() || ports.contains(&0) || ports.len() > MAX_PORTS {
            return error(
                codes::INVALID_ARGUMENT,
                format!("the gateway needs 1 to {MAX_PORTS} ports from 1-65535"),
                "e.g. --ports 80,8080",
            );
        }
        self.running = Some(Running {
            subnet,
            ports,
            maps: BTreeMap::new(),
        });
        self.clean_leftovers();
        for peer in &peers {
            if let Err(e) = self.map(agent, tokens, peer, None) {
                self.stop(tokens);
                return e;
            }
        }
        info!(%subnet, "gateway started");
        Response::Ok { data: self.state() }
    }

    fn map(
        &mut self,
        agent: &Agent,
        tokens: &mut Tokens,
        peer: &str,
        local_ip: Option<&str>,
    ) -> Result<Value, Response> {
        let Some(r) = &self.running else {
            return Err(not_running());
        };
        let address = agent.peer_address(peer)?;
        if agent.node.address() == Some(address) {
            return Err(super::agent::command_error(
                &pilot_proto::node::CommandError::IsSelf,
            ));
        }
        if !agent.node.trusted().any(|t| t.address == address) {
            return Err(error(
                codes::NOT_TRUSTED,
                format!("no trust with {peer}: the gateway reaches only trusted agents"),
                format!("run `pilotctl handshake {peer}` and wait for the peer to approve"),
            ));
        }
        if let Some((ip, _)) = r.maps.iter().find(|(_, m)| m.peer == address) {
            return Err(error(
                codes::ALREADY_EXISTS,
                format!("{address} is already mapped to {ip}"),
                "see `pilotctl gateway list`",
            ));
        }
        let ip = match local_ip {
            Some(text) => {
                let ip: Ipv4Addr = text.trim().parse().map_err(|_| {
                    error(
                        codes::INVALID_ARGUMENT,
                        format!("`{text}` is not an IPv4 address"),
                        format!("pick one of the gateway's subnet {}", r.subnet),
                    )
                })?;
                if !r.subnet.has_host(ip) {
                    return Err(error(
                        codes::INVALID_ARGUMENT,
                        format!(
                            "{ip} is not a host address of the gateway's subnet {}",
                            r.subnet
                        ),
                        "pick one inside it, or leave it out to get the next free one",
                    ));
                }
                if r.maps.contains_key(&ip) {
                    return Err(error(
                        codes::ALREADY_EXISTS,
                        format!("{ip} is already mapped"),
                        "unmap it first, or leave the address out to get the next free one",
                    ));
                }
                if !r.subnet.is_loopback() && outside_addresses().contains(&ip) {
                    return Err(error(
                        codes::ALREADY_EXISTS,
                        format!(
                            "{ip} is an address of a network interface of this host: the gateway's ports there would be open to its network"
                        ),
                        "pick a free address of the subnet, or leave it out to get the next free one",
                    ));
                }
                ip
            }
            None => {
                let taken = if r.subnet.is_loopback() {
                    Vec::new()
                } else {
                    outside_addresses()
                };
                r.subnet
                    .hosts()
                    .find(|ip| !r.maps.contains_key(ip) && !taken.contains(ip))
                    .ok_or_else(|| {
                        error(
                            codes::ALREADY_EXISTS,
                            format!("every address of {} is mapped", r.subnet),
                            "unmap one, or start the gateway with a larger --subnet",
                        )
                    })?
            }
        };
        let loopback = r.subnet.is_loopback() && cfg!(target_os = "linux");
        let ports = r.ports.clone();
        let mut alias = false;
        if !loopback && !is_local(ip) {
            let mut record = self.recorded();
            record.push(ip);
            self.write_record(&record);
            if let Err(e) = alias_add(ip) {
                self.forget_alias(ip);
                return Err(error(
                    codes::INTERNAL,
                    format!("cannot add the loopback alias {ip}: {e}"),
                    ROOT_HINT,
                ));
            }
            alias = true;
        }
        let mut mapping = Mapping {
            peer: address,
            alias,
            listeners: Vec::new(),
        };
        for port in ports {
            match self.listen(tokens, ip, port) {
                Ok(l) => mapping.listeners.push(l),
                Err(e) => {
                    self.release(tokens, ip, mapping);
                    return Err(e);
                }
            }
        }
        info!(%ip, peer = %address, "gateway mapping added");
        if let Some(r) = self.running.as_mut() {
            r.maps.insert(ip, mapping);
        }
        Ok(json!({
            "local_ip": ip.to_string(),
            "pilot_addr": address.to_string(),
            "ports": self.running.as_ref().map(|r| r.ports.clone()),
        }))
    }

    fn listen(
        &mut self,
        tokens: &mut Tokens,
        ip: Ipv4Addr,
        port: u16,
    ) -> Result<(Token, TcpListener, u16), Response> {
        let addr = SocketAddr::new(IpAddr::V4(ip), port);
        let mut l = TcpListener::bind(addr).map_err(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => error(
                codes::INTERNAL,
                format!("cannot listen on {addr}: permission denied (ports below 1024 need root)"),
                ROOT_HINT,
            ),
            io::ErrorKind::AddrInUse => error(
                codes::ALREADY_EXISTS,
                format!("cannot listen on {addr}: something else uses it"),
                "stop it, or map the agent to another address",
            ),
            _ => error(
                codes::INTERNAL,
                format!("cannot listen on {addr}: {e}"),
                ROOT_HINT,
            ),
        })?;
        let token = tokens.take();
        if let Err(e) = self.registry.register(&mut l, token, Interest::READABLE) {
            return Err(error(
                codes::INTERNAL,
                format!("cannot watch {addr}: {e}"),
                "",
            ));
        }
        Ok((token, l, port))
    }

    fn unmap(&mut self, tokens: &mut Tokens, text: &str) -> Response {
        let Some(r) = self.running.as_mut() else {
            return not_running();
        };
        let Some(ip) = text.trim().parse::<Ipv4Addr>().ok() else {
            return error(
                codes::INVALID_ARGUMENT,
                format!("`{text}` is not an IPv4 address"),
                "see `pilotctl gateway list`",
            );
        };
        let Some(m) = r.maps.remove(&ip) else {
            return error(
                codes::NOT_FOUND,
                format!("{ip} is not mapped"),
                "see `pilotctl gateway list`",
            );
        };
        let peer = m.peer;
        self.release(tokens, ip, m);
        info!(%ip, %peer, "gateway mapping removed");
        Response::Ok {
            data: json!({ "local_ip": ip.to_string(), "pilot_addr": peer.to_string() }),
        }
    }

    /// Closes a mapping's listeners and removes its alias (off the record
    /// only once it is gone). Connections already bridged go on until they
    /// end.
    fn release(&mut self, tokens: &mut Tokens, ip: Ipv4Addr, m: Mapping) {
        for (token, mut l, _) in m.listeners {
            let _ = self.registry.deregister(&mut l);
            tokens.give_back(token);
        }
        if m.alias {
            match alias_del(ip) {
                Ok(()) => self.forget_alias(ip),
                // Kept on record: the next start tries again.
                Err(e) => warn!(%ip, error = %e, "cannot remove the loopback alias"),
            }
        }
    }

    /// Takes `ip` off the record of aliases (it is gone, or never came).
    fn forget_alias(&self, ip: Ipv4Addr) {
        let rest: Vec<Ipv4Addr> = self.recorded().into_iter().filter(|r| *r != ip).collect();
        self.write_record(&rest);
    }

    /// Stops the gateway: every mapping goes. `None` if it was not
    /// running; else the addresses unmapped.
    pub fn stop(&mut self, tokens: &mut Tokens) -> Option<Vec<String>> {
        let r = self.running.as_mut()?;
        let maps = std::mem::take(&mut r.maps);
        let ips: Vec<String> = maps.keys().map(|ip| ip.to_string()).collect();
        for (ip, m) in maps {
            self.release(tokens, ip, m);
        }
        self.running = None;
        info!("gateway stopped");
        Some(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_strictly_and_list_their_hosts() {
        let s = Subnet::parse("10.4.0.0/16").unwrap();
        assert_eq!(s.to_string(), "10.4.0.0/16");
        assert!(!s.is_loopback());
        let first: Vec<Ipv4Addr> = s.hosts().take(2).collect();
        assert_eq!(
            first,
            [Ipv4Addr::new(10, 4, 0, 1), Ipv4Addr::new(10, 4, 0, 2)]
        );
        assert!(s.has_host(Ipv4Addr::new(10, 4, 255, 254)));
        for not in [[10, 4, 0, 0], [10, 4, 255, 255], [10, 5, 0, 1]] {
            assert!(!s.has_host(Ipv4Addr::from(not)), "{not:?}");
        }
        let tiny = Subnet::parse("127.4.0.0/30").unwrap();
        assert!(tiny.is_loopback());
        assert_eq!(tiny.hosts().count(), 2);
        let e = Subnet::parse("10.4.0.1/16").unwrap_err();
        assert!(e.contains("10.4.0.0/16"), "{e}");
        for bad in [
            "",
            "/",
            "10.4.0.0",
            "10.4.0.0/",
            "10.4.0.0/7",
            "10.4.0.0/31",
            "10.4.0.0/99999",
            "10.4.0.0/-1",
            "::1/64",
            "10.4.0/16",
            "x/16",
            "10.4.0.0/16/1",
        ] {
            assert!(Subnet::parse(bad).is_err(), "{bad:?}");
        }
    }
}
