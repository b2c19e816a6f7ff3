//! Pilot addresses, virtual socket addresses, hostnames and well-known ports.
//!
//! STUB: the API below is fixed; bodies are being written.

use alloc::string::String;
use core::fmt;
use core::str::FromStr;

/// A 48-bit Pilot address: 16-bit network, 32-bit node.
///
/// Text form `N:XXXX.YYYY.YYYY`: the network in decimal, then the network
/// again as four hex digits, then the node as two groups of four hex digits
/// (upper case when displayed, either case when parsed).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Address {
    network: u16,
    node: u32,
}

impl Address {
    /// Node 0 of network 0: no address.
    pub const UNSPECIFIED: Address = Address::new(0, 0);
    /// The all-ones node ID: every node of a network.
    pub const BROADCAST_NODE: u32 = u32::MAX;
    /// Node IDs `1..FIRST_ALLOCATABLE` are reserved for infrastructure.
    pub const FIRST_ALLOCATABLE: u32 = 0x10;

    /// Builds an address.
    pub const fn new(network: u16, node: u32) -> Self {
        Address { network, node }
    }
    /// The network ID.
    pub const fn network(self) -> u16 {
        self.network
    }
    /// The node ID.
    pub const fn node(self) -> u32 {
        self.node
    }
    /// True for node 0.
    pub const fn is_unspecified(self) -> bool {
        self.node == 0
    }
    /// True for the all-ones node ID.
    pub const fn is_broadcast(self) -> bool {
        self.node == Self::BROADCAST_NODE
    }
    /// True for node IDs reserved for infrastructure (`1..0x10`).
    pub const fn is_reserved(self) -> bool {
        self.node != 0 && self.node < Self::FIRST_ALLOCATABLE
    }
    /// Six bytes: network then node, big-endian.
    pub fn to_bytes(self) -> [u8; 6] {
        todo!()
    }
    /// The inverse of [`Address::to_bytes`].
    pub fn from_bytes(b: [u8; 6]) -> Self {
        let _ = b;
        todo!()
    }
}

/// Why an address or socket address did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrParseError {
    /// Placeholder until the parser lands.
    Invalid,
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid address")
    }
}

impl FromStr for Address {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = f;
        todo!()
    }
}

/// An address and a 16-bit virtual port: `N:XXXX.YYYY.YYYY:port`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct SocketAddress {
    /// The agent.
    pub addr: Address,
    /// The virtual port.
    pub port: u16,
}

impl SocketAddress {
    /// Builds a socket address.
    pub const fn new(addr: Address, port: u16) -> Self {
        SocketAddress { addr, port }
    }
}

impl FromStr for SocketAddress {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let _ = s;
        todo!()
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A validated hostname.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Hostname(String);

/// Why a hostname was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostnameError {
    /// Placeholder until validation lands.
    Invalid,
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid hostname")
    }
}

impl Hostname {
    /// The longest hostname accepted, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Validates `s` as a hostname.
    pub fn new(s: &str) -> Result<Hostname, HostnameError> {
        let _ = s;
        todo!()
    }
    /// The hostname as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Well-known virtual ports.
pub mod ports {
    /// Echo (ping, bench).
    pub const ECHO: u16 = 7;
    /// Standard I/O streams (`pilotctl connect`).
    pub const STDIO: u16 = 1000;
    /// Data exchange: typed messages and files.
    pub const DATA_EXCHANGE: u16 = 1001;
    /// Event stream: publish/subscribe.
    pub const EVENT_STREAM: u16 = 1002;
}
