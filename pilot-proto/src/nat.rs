//! What a node can learn about its own NAT, and what that means for
//! punching a hole to a peer.
//!
//! The rendezvous answers a Reflect request (outer packet type 6, see
//! `wire`) with the address it came from, on any of its sockets. A node
//! that asks from two local sockets towards two rendezvous ports sees
//! whether its NAT keeps one public port per local socket (endpoint-
//! independent mapping) or gives each destination its own; and, when it
//! does, whether the ports follow one another with a fixed stride or look
//! random. [`classify`] turns those observations into a [`NatKind`], which
//! the node reports to the rendezvous ([`NatInfo`]) so that both sides of
//! a punch know which of them is the hard one.

use crate::codec::DecodeError;

/// How a NAT maps a local socket to public ports, as far as a node can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NatKind {
    /// Not measured (no second reflect port, or no answers).
    #[default]
    Unknown,
    /// One public port per local socket, whatever the destination (no
    /// NAT, full cone, restricted cones, most CGNATs): peers can aim at
    /// the endpoint the rendezvous reflects.
    EndpointIndependent,
    /// A new public port per destination, each `stride` after the previous
    /// one: predictable.
    Sequential {
        /// The step between consecutive allocations (1 for most).
        stride: u16,
    },
    /// A new, unpredictable public port per destination: only birthday
    /// probing reaches it, and only from an endpoint-independent peer.
    Random,
}

impl NatKind {
    /// The wire code: 0 unknown, 1 endpoint-independent, 2 sequential,
    /// 3 random.
    pub fn code(self) -> u8 {
        match self {
            NatKind::Unknown => 0,
            NatKind::EndpointIndependent => 1,
            NatKind::Sequential { .. } => 2,
            NatKind::Random => 3,
        }
    }

    /// A short name for traces and diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            NatKind::Unknown => "unknown",
            NatKind::EndpointIndependent => "endpoint-independent",
            NatKind::Sequential { .. } => "symmetric-sequential",
            NatKind::Random => "symmetric-random",
        }
    }
}

/// Whether a NAT lets in datagrams from a port its socket never sent to,
/// as far as a rendezvous with one address and two ports can tell (it
/// cannot tell an address-dependent filter from none at all: that needs a
/// second address).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Filtering {
    /// Not measured: only `pilotctl netcheck` does, and it needs a
    /// rendezvous that answers from its other port.
    #[default]
    Unknown,
    /// An answer from the rendezvous's other port came in: the NAT filters
    /// by address at most (full cone, address-restricted cone).
    AddressOrNone,
    /// Only the exact address and port a socket sent to gets in
    /// (port-restricted cone, Linux conntrack, most symmetric NATs).
    PortDependent,
}

impl Filtering {
    /// A short name for diagnostics.
    pub fn as_str(self) -> &'static str {
        match self {
            Filtering::Unknown => "unknown",
            Filtering::AddressOrNone => "address-dependent-or-none",
            Filtering::PortDependent => "port-dependent",
        }
    }
}

/// What a node tells the rendezvous about its NAT, and what the rendezvous
/// passes on to a peer in `PunchGo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatInfo {
    /// The mapping behaviour.
    pub kind: NatKind,
    /// The newest public port the node saw allocated (a sequential NAT's
    /// next ports follow it); 0 when unknown.
    pub last_port: u16,
}

/// Bytes of [`NatInfo`] on the wire: `kind u8 || stride u16 || last_port u16`.
pub const NAT_INFO_LEN: usize = 5;

impl NatInfo {
    /// Appends the 5-byte form.
    pub fn encode(&self, out: &mut alloc::vec::Vec<u8>) {
        out.push(self.kind.code());
        let stride = match self.kind {
            NatKind::Sequential { stride } => stride,
            _ => 0,
        };
        out.extend_from_slice(&stride.to_be_bytes());
        out.extend_from_slice(&self.last_port.to_be_bytes());
    }

    /// Reads the 5-byte form. Only the canonical encoding is accepted (a
    /// stride only with the sequential kind, never zero there), so every
    /// message has one encoding.
    pub fn decode(b: &[u8; NAT_INFO_LEN]) -> Result<NatInfo, DecodeError> {
        let stride = u16::from_be_bytes([b[1], b[2]]);
        let kind = match (b[0], stride) {
            (0, 0) => NatKind::Unknown,
            (1, 0) => NatKind::EndpointIndependent,
            (2, s) if s != 0 => NatKind::Sequential { stride: s },
            (3, 0) => NatKind::Random,
            _ => return Err(DecodeError::BadValue("nat kind")),
        };
        Ok(NatInfo {
            kind,
            last_port: u16::from_be_bytes([b[3], b[4]]),
        })
    }
}

/// Largest stride still called sequential: beyond it, consecutive ports
/// are too far apart for a window of guesses to cover.
pub const MAX_STRIDE: u16 = 64;

/// The public ports seen by the rendezvous, in the order the requests
/// left: `p1` from our primary socket to the main port (the registration),
/// `p2` from the primary socket to the second port, then `q1` and `q2`
/// from a fresh socket to the main and the second port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Primary socket, main rendezvous port.
    pub p1: Option<u16>,
    /// Primary socket, second rendezvous port.
    pub p2: Option<u16>,
    /// Fresh socket, main port.
    pub q1: Option<u16>,
    /// Fresh socket, second port.
    pub q2: Option<u16>,
}

/// Classifies a NAT from what the rendezvous reflected.
///
/// The same port towards both rendezvous ports is endpoint-independent
/// mapping. Otherwise the fresh socket's two ports give the stride, and
/// its first port must follow the primary socket's second one by a whole
/// number of strides (other hosts behind the NAT may have taken a few
/// ports in between) for the NAT to count as sequential.
pub fn classify(o: &Observations) -> NatKind {
    let (Some(p1), Some(p2)) = (o.p1, o.p2) else {
        return NatKind::Unknown;
    };
    if p1 == p2 {
        return match (o.q1, o.q2) {
            (Some(a), Some(b)) if a != b => NatKind::Random,
            _ => NatKind::EndpointIndependent,
        };
    }
    let (Some(q1), Some(q2)) = (o.q1, o.q2) else {
        // Destination-dependent, but too little seen to predict.
        return NatKind::Random;
    };
    let stride = q2.wrapping_sub(q1);
    let gap = q1.wrapping_sub(p2);
    if stride == 0 || stride > MAX_STRIDE || gap == 0 || gap > 4 * stride || gap % stride != 0 {
        return NatKind::Random;
    }
    NatKind::Sequential { stride }
}

/// The chance that birthday probing finds an open port: the hard side
/// holds `open` mappings among `range` public ports, and the easy side
/// probes `probes` distinct ports chosen at random. Each probe misses all
/// open ports with probability `1 - open / range` (ignoring that probes
/// are drawn without replacement, which only helps), so the chance of at
/// least one hit is `1 - (1 - open / range)^probes`.
pub fn birthday_success(open: u32, range: u32, probes: u32) -> f64 {
    if range == 0 {
        return 0.0;
    }
    let miss = 1.0 - f64::from(open.min(range)) / f64::from(range);
    // no_std has no powf: square and multiply.
    let mut result = 1.0;
    let mut base = miss;
    let mut n = probes;
    while n > 0 {
        if n & 1 == 1 {
            result *= base;
        }
        base *= base;
        n >>= 1;
    }
    1.0 - result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(p1: u16, p2: u16, q1: u16, q2: u16) -> Observations {
        Observations {
            p1: Some(p1),
            p2: Some(p2),
            q1: Some(q1),
            q2: Some(q2),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(&obs(4000, 4000, 4001, 4001)),
            NatKind::EndpointIndependent
        );
        assert_eq!(
            classify(&obs(20000, 20001, 20002, 20003)),
            NatKind::Sequential { stride: 1 }
        );
        // Another host took a port in between.
        assert_eq!(
            classify(&obs(20000, 20003, 20009, 20012)),
            NatKind::Sequential { stride: 3 }
        );
        assert_eq!(classify(&obs(20000, 41234, 3321, 60001)), NatKind::Random);
        assert_eq!(classify(&Observations::default()), NatKind::Unknown);
        let partial = Observations {
            p1: Some(1),
            p2: Some(2),
            ..Observations::default()
        };
        assert_eq!(classify(&partial), NatKind::Random);
    }

    #[test]
    fn info_round_trips_and_refuses_unknown_codes() {
        for kind in [
            NatKind::Unknown,
            NatKind::EndpointIndependent,
            NatKind::Sequential { stride: 2 },
            NatKind::Random,
        ] {
            let info = NatInfo {
                kind,
                last_port: 40000,
            };
            let mut v = alloc::vec::Vec::new();
            info.encode(&mut v);
            let b: [u8; NAT_INFO_LEN] = v.as_slice().try_into().unwrap();
            assert_eq!(NatInfo::decode(&b), Ok(info));
        }
        assert!(NatInfo::decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(NatInfo::decode(&[2, 0, 0, 0, 0]).is_err());
        assert!(NatInfo::decode(&[3, 0, 1, 0, 0]).is_err());
    }

    #[test]
    fn birthday_formula() {
        assert_eq!(birthday_success(256, 64512, 0), 0.0);
        let p = birthday_success(256, 64512, 1024);
        assert!((0.98..0.99).contains(&p), "{p}");
        assert!(birthday_success(256, 64512, 256) < birthday_success(256, 64512, 512));
        assert_eq!(birthday_success(10, 10, 1), 1.0);
    }
}
