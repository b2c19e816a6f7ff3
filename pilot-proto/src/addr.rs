//! Pilot addresses, virtual socket addresses, hostnames and well-known ports.
//!
//! Text forms are strict and canonical: every value has exactly one spelling
//! that parses (apart from hex case), so a displayed value always parses back
//! to itself and two spellings of one peer never look like two peers. Parsers
//! trim nothing; callers that read user input trim it first.

use alloc::string::{String, ToString};
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
        let n = self.network.to_be_bytes();
        let h = self.node.to_be_bytes();
        [n[0], n[1], h[0], h[1], h[2], h[3]]
    }
    /// The inverse of [`Address::to_bytes`].
    pub fn from_bytes(b: [u8; 6]) -> Self {
        Address {
            network: u16::from_be_bytes([b[0], b[1]]),
            node: u32::from_be_bytes([b[2], b[3], b[4], b[5]]),
        }
    }
}

/// Why an address or socket address did not parse.
///
/// Groups are numbered 1 to 3 from the colon: group 1 is the network in
/// hex, groups 2 and 3 are the node. Texts carried in variants are the
/// offending part of the input, verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddrParseError {
    /// The input is empty.
    Empty,
    /// There is no `:` after the decimal network.
    MissingColon,
    /// The decimal network is empty or has a character that is not a
    /// decimal digit (a sign included).
    NetworkNotANumber(String),
    /// The decimal network starts with `0` but is not `0` itself.
    NetworkLeadingZero(String),
    /// The decimal network is above 65535.
    NetworkOutOfRange(String),
    /// After the colon there are not exactly three `.`-separated groups.
    WrongGroupCount {
        /// How many groups there were.
        found: usize,
    },
    /// A group is not exactly four characters long.
    GroupLength {
        /// Which group, 1 to 3.
        group: u8,
        /// The group as written.
        text: String,
    },
    /// A group has a character that is not a hex digit.
    NonHexDigit {
        /// Which group, 1 to 3.
        group: u8,
        /// The group as written.
        text: String,
        /// The first offending character.
        ch: char,
    },
    /// The decimal network and the hex network (group 1) differ.
    NetworkMismatch {
        /// The network written in decimal.
        decimal: u16,
        /// The network written in hex.
        hex: u16,
    },
    /// A complete address is followed by more characters.
    TrailingGarbage(String),
    /// A socket address has no `:port` after the address.
    MissingPort,
    /// A socket address ends in `:` with no port after it.
    EmptyPort,
    /// The port has a character that is not a decimal digit.
    PortNotANumber(String),
    /// The port starts with `0` but is not `0` itself.
    PortLeadingZero(String),
    /// The port is above 65535.
    PortOutOfRange(String),
}

impl fmt::Display for AddrParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FORM: &str = "N:XXXX.YYYY.YYYY";
        match self {
            AddrParseError::Empty => write!(f, "the address is empty; expected {FORM}"),
            AddrParseError::MissingColon => {
                write!(f, "no `:` after the network; expected {FORM}")
            }
            AddrParseError::NetworkNotANumber(t) => write!(
                f,
                "network `{}` is not a decimal number from 0 to 65535",
                t.escape_debug()
            ),
            AddrParseError::NetworkLeadingZero(t) => {
                write!(f, "network `{}` has a leading zero", t.escape_debug())
            }
            AddrParseError::NetworkOutOfRange(t) => {
                write!(f, "network `{}` is larger than 65535", t.escape_debug())
            }
            AddrParseError::WrongGroupCount { found } => write!(
                f,
                "expected 3 groups of 4 hex digits after the `:`, found {found}; expected {FORM}"
            ),
            AddrParseError::GroupLength { group, text } => write!(
                f,
                "group {group} `{}` has {} characters, expected 4 hex digits",
                text.escape_debug(),
                text.chars().count()
            ),
            AddrParseError::NonHexDigit { group, text, ch } => write!(
                f,
                "group {group} `{}` has a non-hex digit `{}`",
                text.escape_debug(),
                ch.escape_debug()
            ),
            AddrParseError::NetworkMismatch { decimal, hex } => write!(
                f,
                "network {decimal} in decimal disagrees with {hex:04X} in hex \
                 (which is {hex}); they must be the same network"
            ),
            AddrParseError::TrailingGarbage(t) => {
                write!(f, "unexpected `{}` after the address", t.escape_debug())
            }
            AddrParseError::MissingPort => {
                write!(f, "no port; expected {FORM}:port")
            }
            AddrParseError::EmptyPort => write!(f, "the port after the last `:` is empty"),
            AddrParseError::PortNotANumber(t) => write!(
                f,
                "port `{}` is not a decimal number from 0 to 65535",
                t.escape_debug()
            ),
            AddrParseError::PortLeadingZero(t) => {
                write!(f, "port `{}` has a leading zero", t.escape_debug())
            }
            AddrParseError::PortOutOfRange(t) => {
                write!(f, "port `{}` is larger than 65535", t.escape_debug())
            }
        }
    }
}

/// How a decimal field went wrong; the caller knows which field it was.
enum DecimalError {
    NotANumber,
    LeadingZero,
    OutOfRange,
}

/// Parses a canonical decimal u16: digits only, no sign, no leading zero.
/// Leading zeros are refused so that every value has one spelling.
fn parse_decimal_u16(s: &str) -> Result<u16, DecimalError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecimalError::NotANumber);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(DecimalError::LeadingZero);
    }
    // Accumulate saturating so an absurdly long number is simply too big.
    let value = s.bytes().fold(0u32, |acc, b| {
        acc.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    });
    u16::try_from(value).map_err(|_| DecimalError::OutOfRange)
}

/// Parses one group of exactly four hex digits, numbered `group` in errors.
/// `last` is set for the final group, where extra characters after four
/// good hex digits read better as trailing garbage than as a bad length.
fn parse_group(group: u8, text: &str, last: bool) -> Result<u16, AddrParseError> {
    let mut chars = text.char_indices();
    let mut value: u16 = 0;
    for _ in 0..4 {
        let Some((_, ch)) = chars.next() else {
            return Err(AddrParseError::GroupLength {
                group,
                text: text.to_string(),
            });
        };
        let Some(digit) = ch.to_digit(16) else {
            // A short or long group is reported as a length problem first:
            // the shape is wrong before any digit is.
            if text.chars().count() != 4 {
                return Err(AddrParseError::GroupLength {
                    group,
                    text: text.to_string(),
                });
            }
            return Err(AddrParseError::NonHexDigit {
                group,
                text: text.to_string(),
                ch,
            });
        };
        // Four hex digits fit in 16 bits, so the shift cannot overflow.
        value = (value << 4) | digit as u16;
    }
    let Some((rest_at, _)) = chars.next() else {
        return Ok(value);
    };
    if last {
        return Err(AddrParseError::TrailingGarbage(text[rest_at..].to_string()));
    }
    Err(AddrParseError::GroupLength {
        group,
        text: text.to_string(),
    })
}

/// Parses `N` and `XXXX.YYYY.YYYY`, the parts either side of the first colon.
fn parse_parts(network: &str, groups: &str) -> Result<Address, AddrParseError> {
    let decimal = parse_decimal_u16(network).map_err(|e| {
        let t = network.to_string();
        match e {
            DecimalError::NotANumber => AddrParseError::NetworkNotANumber(t),
            DecimalError::LeadingZero => AddrParseError::NetworkLeadingZero(t),
            DecimalError::OutOfRange => AddrParseError::NetworkOutOfRange(t),
        }
    })?;
    let found = groups.split('.').count();
    let mut it = groups.split('.');
    let (Some(g1), Some(g2), Some(g3), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(AddrParseError::WrongGroupCount { found });
    };
    let hex = parse_group(1, g1, false)?;
    let hi = parse_group(2, g2, false)?;
    let lo = parse_group(3, g3, true)?;
    if hex != decimal {
        return Err(AddrParseError::NetworkMismatch { decimal, hex });
    }
    Ok(Address::new(decimal, (u32::from(hi) << 16) | u32::from(lo)))
}

impl FromStr for Address {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AddrParseError::Empty);
        }
        let Some((network, rest)) = s.split_once(':') else {
            return Err(AddrParseError::MissingColon);
        };
        // A second colon means something (a port, usually) follows the
        // address; say so rather than blaming the last group's length.
        if let Some(at) = rest.find(':') {
            parse_parts(network, &rest[..at])?;
            return Err(AddrParseError::TrailingGarbage(rest[at..].to_string()));
        }
        parse_parts(network, rest)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:04X}.{:04X}.{:04X}",
            self.network,
            self.network,
            self.node >> 16,
            self.node & 0xFFFF
        )
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
    /// Parses `N:XXXX.YYYY.YYYY:port`; the port is decimal without leading
    /// zeros, like the network.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(AddrParseError::Empty);
        }
        let Some((network, rest)) = s.split_once(':') else {
            return Err(AddrParseError::MissingColon);
        };
        // The port follows the second colon; any later colon is part of
        // the port text and makes it not a number.
        let Some((groups, port)) = rest.split_once(':') else {
            // Report a broken address before a missing port: it is the
            // first thing wrong, reading left to right.
            parse_parts(network, rest)?;
            return Err(AddrParseError::MissingPort);
        };
        let addr = parse_parts(network, groups)?;
        if port.is_empty() {
            return Err(AddrParseError::EmptyPort);
        }
        let port = parse_decimal_u16(port).map_err(|e| {
            let t = port.to_string();
            match e {
                DecimalError::NotANumber => AddrParseError::PortNotANumber(t),
                DecimalError::LeadingZero => AddrParseError::PortLeadingZero(t),
                DecimalError::OutOfRange => AddrParseError::PortOutOfRange(t),
            }
        })?;
        Ok(SocketAddress { addr, port })
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.addr, self.port)
    }
}

/// A validated hostname.
///
/// The rules are those of a DNS label, tightened so that a name has one
/// spelling and cannot be mistaken for anything else:
///
/// - 1 to [`Hostname::MAX_LEN`] bytes;
/// - only lower-case ASCII letters, digits and `-` (upper case is refused
///   rather than folded, so the stored name is exactly what was typed);
/// - starts with a letter (so it is never a number, and never an address:
///   addresses start with a digit and contain `:`, which is refused too);
/// - does not end with `-`;
/// - has no `--` anywhere (reserved in DNS for encodings such as `xn--`,
///   and easy to misread).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Hostname(String);

/// Why a hostname was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostnameError {
    /// The hostname is empty.
    Empty,
    /// The hostname is longer than [`Hostname::MAX_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// An upper-case ASCII letter: hostnames are lower case.
    UpperCase {
        /// The letter.
        ch: char,
        /// Its byte offset in the hostname.
        index: usize,
    },
    /// A character other than a lower-case letter, digit or `-`.
    InvalidChar {
        /// The character.
        ch: char,
        /// Its byte offset in the hostname.
        index: usize,
    },
    /// The first character is a digit or `-`.
    StartsWithNonLetter {
        /// The first character.
        ch: char,
    },
    /// The last character is `-`.
    EndsWithHyphen,
    /// Two `-` in a row.
    DoubleHyphen {
        /// Byte offset of the first of the two.
        index: usize,
    },
}

impl fmt::Display for HostnameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostnameError::Empty => f.write_str("the hostname is empty"),
            HostnameError::TooLong { len } => write!(
                f,
                "the hostname is {len} bytes long, the limit is {}",
                Hostname::MAX_LEN
            ),
            HostnameError::UpperCase { ch, index } => write!(
                f,
                "upper-case letter `{ch}` at position {index}: hostnames are lower case \
                 (use `{}`)",
                ch.to_ascii_lowercase()
            ),
            HostnameError::InvalidChar { ch, index } => write!(
                f,
                "character `{}` at position {index} is not allowed: hostnames use only \
                 lower-case letters, digits and `-`",
                ch.escape_debug()
            ),
            HostnameError::StartsWithNonLetter { ch } => write!(
                f,
                "the hostname starts with `{}`: it must start with a letter",
                ch.escape_debug()
            ),
            HostnameError::EndsWithHyphen => f.write_str("the hostname must not end with `-`"),
            HostnameError::DoubleHyphen { index } => write!(
                f,
                "`--` at position {index}: the hostname must not contain two hyphens in a row"
            ),
        }
    }
}

impl Hostname {
    /// The longest hostname accepted, in bytes.
    pub const MAX_LEN: usize = 63;

    /// Validates `s` as a hostname (see [`Hostname`] for the rules).
    ///
    /// Characters are checked before the shape, so a name with a bad
    /// character is reported for that character wherever it is.
    pub fn new(s: &str) -> Result<Hostname, HostnameError> {
        if s.is_empty() {
            return Err(HostnameError::Empty);
        }
        // Checked first so that a huge input costs nothing more.
        if s.len() > Self::MAX_LEN {
            return Err(HostnameError::TooLong { len: s.len() });
        }
        for (index, ch) in s.char_indices() {
            if ch.is_ascii_uppercase() {
                return Err(HostnameError::UpperCase { ch, index });
            }
            if !(ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-') {
                return Err(HostnameError::InvalidChar { ch, index });
            }
        }
        // From here on every character is ASCII, so bytes are characters.
        let bytes = s.as_bytes();
        if !bytes[0].is_ascii_lowercase() {
            return Err(HostnameError::StartsWithNonLetter {
                ch: char::from(bytes[0]),
            });
        }
        if bytes[bytes.len() - 1] == b'-' {
            return Err(HostnameError::EndsWithHyphen);
        }
        if let Some(index) = s.find("--") {
            return Err(HostnameError::DoubleHyphen { index });
        }
        Ok(Hostname(s.to_string()))
    }
    /// The hostname as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Hostname {
    type Err = HostnameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Hostname::new(s)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A peer named either way a user may name one: by address or by hostname.
///
/// The two forms cannot overlap (a hostname has no `:` and starts with a
/// letter; an address starts with a digit), so parsing is unambiguous.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum PeerRef {
    /// A peer named by its address.
    Address(Address),
    /// A peer named by its hostname, to be resolved through the registry.
    Hostname(Hostname),
}

/// Why a text is neither an address nor a hostname. Both reasons are kept
/// so that a caller can show the one that fits what the user meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRefError {
    /// Why it is not an address.
    pub address: AddrParseError,
    /// Why it is not a hostname.
    pub hostname: HostnameError,
}

impl PeerRefError {
    /// Whether the text was more likely meant as an address than as a
    /// hostname: it starts with a digit or has a `:` or `.`, which no
    /// hostname may. Lets a caller lead with the reason that fits.
    pub fn meant_address(&self) -> bool {
        match self.hostname {
            HostnameError::StartsWithNonLetter { ch } => ch.is_ascii_digit(),
            HostnameError::InvalidChar { ch, .. } => ch == ':' || ch == '.',
            _ => false,
        }
    }
}

impl fmt::Display for PeerRefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.meant_address() {
            return write!(
                f,
                "not a valid address: {} (nor a hostname: {})",
                self.address, self.hostname
            );
        }
        write!(
            f,
            "not a valid hostname: {} (nor an address: {})",
            self.hostname, self.address
        )
    }
}

impl PeerRef {
    /// Parses an address (`N:XXXX.YYYY.YYYY`) or, failing that, a hostname.
    pub fn parse(s: &str) -> Result<PeerRef, PeerRefError> {
        let address = match s.parse::<Address>() {
            Ok(a) => return Ok(PeerRef::Address(a)),
            Err(e) => e,
        };
        match Hostname::new(s) {
            Ok(h) => Ok(PeerRef::Hostname(h)),
            Err(hostname) => Err(PeerRefError { address, hostname }),
        }
    }

    /// Parses as [`PeerRef::parse`] does, and also a bare node ID (decimal,
    /// as `node_id` shows it), taken as that node of `network`. The forms
    /// cannot overlap: a hostname starts with a letter and an address has
    /// a `:`, so a run of digits is neither.
    pub fn parse_in(s: &str, network: u16) -> Result<PeerRef, PeerRefError> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(node) = s.parse::<u32>() {
                return Ok(PeerRef::Address(Address::new(network, node)));
            }
        }
        PeerRef::parse(s)
    }
}

impl FromStr for PeerRef {
    type Err = PeerRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerRef::parse(s)
    }
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Address(a) => a.fmt(f),
            PeerRef::Hostname(h) => h.fmt(f),
        }
    }
}

impl From<Address> for PeerRef {
    fn from(a: Address) -> Self {
        PeerRef::Address(a)
    }
}

impl From<Hostname> for PeerRef {
    fn from(h: Hostname) -> Self {
        PeerRef::Hostname(h)
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    /// A tiny deterministic generator: the tests need spread, not quality.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn addr(s: &str) -> Result<Address, AddrParseError> {
        s.parse()
    }
    fn sock(s: &str) -> Result<SocketAddress, AddrParseError> {
        s.parse()
    }
    fn s(t: &str) -> String {
        t.to_string()
    }

    #[test]
    fn display_examples() {
        assert_eq!(Address::new(0, 0x2A).to_string(), "0:0000.0000.002A");
        assert_eq!(Address::new(1, 0x0001_0005).to_string(), "1:0001.0001.0005");
        assert_eq!(
            Address::new(65535, u32::MAX).to_string(),
            "65535:FFFF.FFFF.FFFF"
        );
        assert_eq!(
            SocketAddress::new(Address::new(10, 0xABCD_EF01), 1000).to_string(),
            "10:000A.ABCD.EF01:1000"
        );
    }

    #[test]
    fn parse_accepts_either_case() {
        let a = Address::new(43981, 0xDEAD_BEEF);
        assert_eq!(addr("43981:ABCD.DEAD.BEEF"), Ok(a));
        assert_eq!(addr("43981:abcd.dead.beef"), Ok(a));
        assert_eq!(addr("43981:aBcD.DeAd.bEeF"), Ok(a));
    }

    #[test]
    fn edge_values() {
        let max = Address::new(65535, 0xFFFF_FFFF);
        assert_eq!(addr("65535:FFFF.FFFF.FFFF"), Ok(max));
        assert_eq!(max.to_bytes(), [0xFF; 6]);
        assert!(max.is_broadcast());
        assert!(!max.is_reserved());
        assert!(!max.is_unspecified());

        assert_eq!(addr("0:0000.0000.0000"), Ok(Address::UNSPECIFIED));
        assert!(Address::UNSPECIFIED.is_unspecified());
        assert!(!Address::UNSPECIFIED.is_reserved());
        assert!(!Address::UNSPECIFIED.is_broadcast());
        // Node 0 is unspecified in any network.
        assert!(Address::new(7, 0).is_unspecified());

        assert!(Address::new(1, 1).is_reserved());
        assert!(Address::new(1, Address::FIRST_ALLOCATABLE - 1).is_reserved());
        assert!(!Address::new(1, Address::FIRST_ALLOCATABLE).is_reserved());
        assert!(!Address::new(1, Address::FIRST_ALLOCATABLE).is_unspecified());
    }

    #[test]
    fn bytes_are_big_endian() {
        let a = Address::new(0x0102, 0x0304_0506);
        assert_eq!(a.to_bytes(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(Address::from_bytes([1, 2, 3, 4, 5, 6]), a);
    }

    #[test]
    fn random_round_trips() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for i in 0..20_000 {
            let r = rng.next();
            let a = Address::new(r as u16, (r >> 16) as u32);
            assert_eq!(Address::from_bytes(a.to_bytes()), a);
            let text = a.to_string();
            assert_eq!(addr(&text), Ok(a), "{text}");
            assert_eq!(addr(&text.to_lowercase()), Ok(a), "{text}");
            let sa = SocketAddress::new(a, (r >> 48) as u16);
            assert_eq!(sock(&sa.to_string()), Ok(sa));
            assert_eq!(PeerRef::parse(&text), Ok(PeerRef::Address(a)));
            // Every network width, small ones included, must round trip.
            let small = Address::new((i % 70) as u16, i);
            assert_eq!(addr(&small.to_string()), Ok(small));
        }
    }

    #[test]
    fn address_errors() {
        use AddrParseError as E;
        let cases: &[(&str, AddrParseError)] = &[
            ("", E::Empty),
            ("00000000002A", E::MissingColon),
            (":0000.0000.002A", E::NetworkNotANumber(s(""))),
            ("+1:0001.0000.002A", E::NetworkNotANumber(s("+1"))),
            ("-1:0001.0000.002A", E::NetworkNotANumber(s("-1"))),
            (" 1:0001.0000.002A", E::NetworkNotANumber(s(" 1"))),
            ("x:0001.0000.002A", E::NetworkNotANumber(s("x"))),
            ("01:0001.0000.002A", E::NetworkLeadingZero(s("01"))),
            ("00:0000.0000.002A", E::NetworkLeadingZero(s("00"))),
            ("65536:0000.0000.002A", E::NetworkOutOfRange(s("65536"))),
            (
                "99999999999999999999999:0000.0000.002A",
                E::NetworkOutOfRange(s("99999999999999999999999")),
            ),
            ("0:", E::WrongGroupCount { found: 1 }),
            ("0:0000.002A", E::WrongGroupCount { found: 2 }),
            ("0:0000.0000.0000.002A", E::WrongGroupCount { found: 4 }),
            ("0:0000.0000.002A.", E::WrongGroupCount { found: 4 }),
            (
                "0:000.0000.002A",
                E::GroupLength {
                    group: 1,
                    text: s("000"),
                },
            ),
            (
                "0:0000.00000.002A",
                E::GroupLength {
                    group: 2,
                    text: s("00000"),
                },
            ),
            (
                "0:0000.0000.",
                E::GroupLength {
                    group: 3,
                    text: s(""),
                },
            ),
            (
                "0:0000.0000.02A",
                E::GroupLength {
                    group: 3,
                    text: s("02A"),
                },
            ),
            (
                "0:0000.0000.00zA1",
                E::GroupLength {
                    group: 3,
                    text: s("00zA1"),
                },
            ),
            (
                "0:0000.00G0.002A",
                E::NonHexDigit {
                    group: 2,
                    text: s("00G0"),
                    ch: 'G',
                },
            ),
            (
                "0:x000.0000.002A",
                E::NonHexDigit {
                    group: 1,
                    text: s("x000"),
                    ch: 'x',
                },
            ),
            (
                "0:0000.0000.002é",
                E::NonHexDigit {
                    group: 3,
                    text: s("002é"),
                    ch: 'é',
                },
            ),
            (
                "1:0000.0000.002A",
                E::NetworkMismatch { decimal: 1, hex: 0 },
            ),
            (
                "10:0010.0000.002A",
                E::NetworkMismatch {
                    decimal: 10,
                    hex: 16,
                },
            ),
            ("0:0000.0000.002A ", E::TrailingGarbage(s(" "))),
            ("0:0000.0000.002Axyz", E::TrailingGarbage(s("xyz"))),
            ("0:0000.0000.002A:7", E::TrailingGarbage(s(":7"))),
        ];
        for (input, want) in cases {
            assert_eq!(addr(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn socket_address_errors() {
        use AddrParseError as E;
        let a = Address::new(0, 0x2A);
        assert_eq!(sock("0:0000.0000.002A:0"), Ok(SocketAddress::new(a, 0)));
        assert_eq!(
            sock("0:0000.0000.002A:65535"),
            Ok(SocketAddress::new(a, 65535))
        );
        let cases: &[(&str, AddrParseError)] = &[
            ("", E::Empty),
            ("0", E::MissingColon),
            ("0:0000.0000.002A", E::MissingPort),
            ("0:0000.0000.002A:", E::EmptyPort),
            ("0:0000.0000.002A:x", E::PortNotANumber(s("x"))),
            ("0:0000.0000.002A:+7", E::PortNotANumber(s("+7"))),
            ("0:0000.0000.002A:7:7", E::PortNotANumber(s("7:7"))),
            ("0:0000.0000.002A:07", E::PortLeadingZero(s("07"))),
            ("0:0000.0000.002A:65536", E::PortOutOfRange(s("65536"))),
            // The address is checked before the port, with or without one.
            (
                "0:0000.0000.02A",
                E::GroupLength {
                    group: 3,
                    text: s("02A"),
                },
            ),
            (
                "0:0000.0000.02A:7",
                E::GroupLength {
                    group: 3,
                    text: s("02A"),
                },
            ),
            (
                "1:0000.0000.002A:7",
                E::NetworkMismatch { decimal: 1, hex: 0 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(sock(input).as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn error_messages_read_as_sentences() {
        let e = addr("0:0000.00G0.002A").unwrap_err();
        assert_eq!(e.to_string(), "group 2 `00G0` has a non-hex digit `G`");
        let e = addr("1:0000.0000.002A").unwrap_err();
        assert!(e.to_string().contains("disagrees"), "{e}");
        let e = addr("0:0000.0000.002A\n").unwrap_err();
        assert_eq!(e.to_string(), "unexpected `\\n` after the address");
        let e = sock("0:0000.0000.002A:70000").unwrap_err();
        assert_eq!(e.to_string(), "port `70000` is larger than 65535");
        // Every variant has a non-empty message.
        for input in [
            "",
            "0",
            "01:",
            "+:",
            "70000:",
            "0:",
            "0:0.0.0",
            "0:0000.0000.00:0",
        ] {
            assert!(!addr(input).unwrap_err().to_string().is_empty());
        }
    }

    #[test]
    fn hostname_accepts() {
        for ok in ["a", "alice", "agent-7", "a1-b2-c3", "x0", "abcdef"] {
            assert_eq!(Hostname::new(ok).map(|h| h.as_str().to_string()), Ok(s(ok)));
        }
        let longest = "a".repeat(Hostname::MAX_LEN);
        assert!(Hostname::new(&longest).is_ok());
        assert_eq!("bob".parse::<Hostname>().unwrap().to_string(), "bob");
    }

    #[test]
    fn hostname_errors() {
        use HostnameError as E;
        let long = "a".repeat(Hostname::MAX_LEN + 1);
        let cases: &[(&str, HostnameError)] = &[
            ("", E::Empty),
            (&long, E::TooLong { len: 64 }),
            ("Alice", E::UpperCase { ch: 'A', index: 0 }),
            ("aLice", E::UpperCase { ch: 'L', index: 1 }),
            ("a_b", E::InvalidChar { ch: '_', index: 1 }),
            ("a.b", E::InvalidChar { ch: '.', index: 1 }),
            ("a b", E::InvalidChar { ch: ' ', index: 1 }),
            (" a", E::InvalidChar { ch: ' ', index: 0 }),
            ("café", E::InvalidChar { ch: 'é', index: 3 }),
            ("0:0000.0000.002A", E::InvalidChar { ch: ':', index: 1 }),
            ("7", E::StartsWithNonLetter { ch: '7' }),
            ("1abc", E::StartsWithNonLetter { ch: '1' }),
            ("-abc", E::StartsWithNonLetter { ch: '-' }),
            ("abc-", E::EndsWithHyphen),
            ("a-", E::EndsWithHyphen),
            ("xn--abc", E::DoubleHyphen { index: 2 }),
            ("a---b", E::DoubleHyphen { index: 1 }),
        ];
        for (input, want) in cases {
            assert_eq!(Hostname::new(input).as_ref(), Err(want), "{input:?}");
            assert!(!want.to_string().is_empty());
        }
        // A long string with a bad character is still reported as too long:
        // the length check comes first and is O(1).
        let long_bad = format!("{}A", "a".repeat(70));
        assert_eq!(Hostname::new(&long_bad), Err(E::TooLong { len: 71 }));
        assert_eq!(
            E::UpperCase { ch: 'A', index: 0 }.to_string(),
            "upper-case letter `A` at position 0: hostnames are lower case (use `a`)"
        );
    }

    #[test]
    fn no_address_is_a_hostname() {
        let mut rng = XorShift(12345);
        for _ in 0..2_000 {
            let r = rng.next();
            let text = Address::new(r as u16, (r >> 16) as u32).to_string();
            assert!(Hostname::new(&text).is_err());
            assert!(Hostname::new(&text.to_lowercase()).is_err());
        }
    }

    #[test]
    fn peer_ref() {
        let a = Address::new(1, 0x0001_0005);
        assert_eq!(PeerRef::parse("1:0001.0001.0005"), Ok(PeerRef::Address(a)));
        assert_eq!(
            PeerRef::parse("alice"),
            Ok(PeerRef::Hostname(Hostname::new("alice").unwrap()))
        );
        assert_eq!("alice".parse::<PeerRef>().unwrap().to_string(), "alice");
        assert_eq!(PeerRef::from(a).to_string(), "1:0001.0001.0005");

        let e = PeerRef::parse("1:0001.0001.005").unwrap_err();
        assert!(e.meant_address());
        assert_eq!(
            e.address,
            AddrParseError::GroupLength {
                group: 3,
                text: s("005")
            }
        );
        assert_eq!(e.hostname, HostnameError::InvalidChar { ch: ':', index: 1 });
        assert!(
            e.to_string().starts_with("not a valid address: group 3"),
            "{e}"
        );

        // A node ID, as `node_id` shows it, names a node of the network
        // given; nothing else changes.
        assert_eq!(
            PeerRef::parse_in("16", 1),
            Ok(PeerRef::Address(Address::new(1, 16)))
        );
        assert_eq!(PeerRef::parse_in("1:0001.0001.0005", 7), Ok(a.into()));
        assert!(PeerRef::parse_in("alice", 1).is_ok());
        assert!(PeerRef::parse("16").is_err());
        for bad in ["", "99999999999", "-1", "1x"] {
            assert!(PeerRef::parse_in(bad, 1).is_err(), "{bad}");
        }

        let e = PeerRef::parse("Alice").unwrap_err();
        assert!(!e.meant_address());
        assert_eq!(e.address, AddrParseError::MissingColon);
        assert!(
            e.to_string()
                .starts_with("not a valid hostname: upper-case"),
            "{e}"
        );

        let e = PeerRef::parse("").unwrap_err();
        assert_eq!(e.address, AddrParseError::Empty);
        assert_eq!(e.hostname, HostnameError::Empty);
    }
}
