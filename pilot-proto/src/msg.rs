//! Inner messages: the plaintext of transport packets.
//!
//! One kind byte, then fields (integers big-endian). An empty plaintext
//! is a keepalive and never reaches this codec. See `docs/PROTOCOL.md`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;

use crate::addr::{Address, Hostname};
use crate::codec::{put_endpoint, put_short_str, DecodeError, Reader};
use crate::identity::{Identity, PublicKey};
use crate::trust::{TrustApproval, TrustRequest};

/// Agent to rendezvous: register or refresh.
pub const KIND_REGISTER: u8 = 0x01;
/// Agent to rendezvous: look up a node.
pub const KIND_RESOLVE: u8 = 0x02;
/// Agent to rendezvous: ask a node for trust.
pub const KIND_TRUST_REQUEST: u8 = 0x03;
/// Agent to rendezvous: approve a request.
pub const KIND_TRUST_APPROVE: u8 = 0x04;
/// Agent to rendezvous: reject a request.
pub const KIND_TRUST_REJECT: u8 = 0x05;
/// Agent to rendezvous: revoke trust.
pub const KIND_TRUST_REVOKE: u8 = 0x06;
/// Agent to rendezvous: coordinate hole punching with a trusted peer.
pub const KIND_PUNCH: u8 = 0x07;
/// Agent → rendezvous: what the agent learned about its NAT.
pub const KIND_NAT_INFO: u8 = 0x08;
/// Agent to agent: an overlay IPv6 packet.
pub const KIND_DATA: u8 = 0x10;
/// Agent to agent: we no longer trust you; the session ends.
pub const KIND_REVOKE: u8 = 0x11;
/// Agent to agent or rendezvous: we are shutting down; forget our session.
pub const KIND_BYE: u8 = 0x12;
/// Rendezvous to agent: registration accepted.
pub const KIND_REGISTERED: u8 = 0x81;
/// Rendezvous to agent: lookup answer.
pub const KIND_RESOLVED: u8 = 0x82;
/// Rendezvous to agent: someone asks for trust.
pub const KIND_TRUST_REQUESTED: u8 = 0x84;
/// Rendezvous to agent: request done.
pub const KIND_ACK: u8 = 0x85;
/// Rendezvous to agent: a request of ours was approved.
pub const KIND_TRUST_APPROVED: u8 = 0x86;
/// Rendezvous to agent: a request of ours was rejected.
pub const KIND_TRUST_REJECTED: u8 = 0x87;
/// Rendezvous to agent: a peer revoked its trust in us.
pub const KIND_TRUST_REVOKED: u8 = 0x88;
/// Rendezvous to agent: probe a peer's candidates now.
pub const KIND_PUNCH_GO: u8 = 0x89;
/// Rendezvous to agent: the rendezvous's reflect port (NAT classification).
pub const KIND_REFLECT_PORT: u8 = 0x8A;
/// Rendezvous to agent: a request failed.
pub const KIND_ERROR: u8 = 0x8F;

/// The most endpoints a resolve answer or a punch message carries.
pub const MAX_ENDPOINTS: usize = 8;

/// The most LAN endpoints a registration carries.
pub const MAX_LAN_ENDPOINTS: usize = 4;

/// What a resolve looks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// A node by address.
    Address(Address),
    /// A node by hostname.
    Hostname(Hostname),
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::Address(a) => write!(f, "{a}"),
            Query::Hostname(h) => write!(f, "{h}"),
        }
    }
}

/// A registry's statement that `key` holds `address` until `not_after`
/// (wall-clock seconds), signed by the rendezvous. Agents put theirs in
/// every handshake so a peer learns the address behind a key without
/// asking anyone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// The agent's address.
    pub address: Address,
    /// The agent's Ed25519 key.
    pub key: PublicKey,
    /// Expiry, in wall-clock seconds since the Unix epoch.
    pub not_after: u64,
    /// The rendezvous's signature.
    pub signature: [u8; 64],
}

/// Encoded length of a certificate.
pub const CERT_LEN: usize = 6 + 32 + 8 + 64;

impl Certificate {
    fn signed_bytes(address: Address, key: &PublicKey, not_after: u64) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(b"pilot cert v1");
        m.extend_from_slice(&address.to_bytes());
        m.extend_from_slice(key.as_bytes());
        m.extend_from_slice(&not_after.to_be_bytes());
        m
    }

    /// Issues a certificate signed by `issuer`.
    pub fn issue(issuer: &Identity, address: Address, key: PublicKey, not_after: u64) -> Self {
        let signature = issuer.sign(&Self::signed_bytes(address, &key, not_after));
        Certificate {
            address,
            key,
            not_after,
            signature,
        }
    }

    /// Checks the signature against the pinned rendezvous key, and the
    /// expiry against `now_secs`.
    pub fn verify(&self, issuer: &PublicKey, now_secs: u64) -> bool {
        now_secs <= self.not_after
            && issuer
                .verify(
                    &Self::signed_bytes(self.address, &self.key, self.not_after),
                    &self.signature,
                )
                .is_ok()
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.address.to_bytes());
        out.extend_from_slice(self.key.as_bytes());
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// Reads the wire form.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Certificate {
            address: Address::from_bytes(r.array("cert address")?),
            key: PublicKey(r.array("cert key")?),
            not_after: r.u64("cert expiry")?,
            signature: r.array("cert signature")?,
        })
    }
}

/// Why the rendezvous refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request made no sense.
    BadRequest,
    /// Another identity holds this hostname.
    HostnameTaken,
    /// No such node (or it is private to you).
    NotFound,
    /// The hostname breaks the rules.
    InvalidHostname,
    /// A signature did not verify.
    BadSignature,
    /// Too many requests; slow down.
    RateLimited,
    /// The registry is full.
    Full,
    /// Register first.
    NotRegistered,
    /// The identity key does not match the session's key.
    KeyMismatch,
    /// A code this version does not know.
    Other(u8),
}

impl ErrorCode {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            ErrorCode::BadRequest => 1,
            ErrorCode::HostnameTaken => 2,
            ErrorCode::NotFound => 3,
            ErrorCode::InvalidHostname => 4,
            ErrorCode::BadSignature => 5,
            ErrorCode::RateLimited => 6,
            ErrorCode::Full => 7,
            ErrorCode::NotRegistered => 8,
            ErrorCode::KeyMismatch => 9,
            ErrorCode::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u8(c: u8) -> Self {
        match c {
            1 => ErrorCode::BadRequest,
            2 => ErrorCode::HostnameTaken,
            3 => ErrorCode::NotFound,
            4 => ErrorCode::InvalidHostname,
            5 => ErrorCode::BadSignature,
            6 => ErrorCode::RateLimited,
            7 => ErrorCode::Full,
            8 => ErrorCode::NotRegistered,
            9 => ErrorCode::KeyMismatch,
            c => ErrorCode::Other(c),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::BadRequest => f.write_str("bad request"),
            ErrorCode::HostnameTaken => f.write_str("hostname taken"),
            ErrorCode::NotFound => f.write_str("not found"),
            ErrorCode::InvalidHostname => f.write_str("invalid hostname"),
            ErrorCode::BadSignature => f.write_str("bad signature"),
            ErrorCode::RateLimited => f.write_str("rate limited"),
            ErrorCode::Full => f.write_str("registry full"),
            ErrorCode::NotRegistered => f.write_str("not registered"),
            ErrorCode::KeyMismatch => f.write_str("identity key does not match session"),
            ErrorCode::Other(c) => write!(f, "error {c}"),
        }
    }
}

/// A registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// Request ID, echoed in the answer.
    pub req: u32,
    /// The agent's Ed25519 identity.
    pub key: PublicKey,
    /// Findable by anyone (otherwise private).
    pub public: bool,
    /// Requested hostname, if any.
    pub hostname: Option<Hostname>,
    /// The agent's own (LAN) endpoints, which peers on the same network
    /// try as direct candidates (at most [`MAX_LAN_ENDPOINTS`]).
    pub lan: Vec<SocketAddr>,
    /// Signature by `key` over [`Register::signed_bytes`].
    pub signature: [u8; 64],
}

impl Register {
    /// What the signature covers: the session's handshake hash binds it to
    /// this session, so a captured request cannot be replayed elsewhere.
    pub fn signed_bytes(
        handshake_hash: &[u8; 32],
        req: u32,
        key: &PublicKey,
        public: bool,
        hostname: Option<&Hostname>,
        lan: &[SocketAddr],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"pilot register v2");
        m.extend_from_slice(handshake_hash);
        m.extend_from_slice(&req.to_be_bytes());
        m.extend_from_slice(key.as_bytes());
        m.push(public as u8);
        put_short_str(&mut m, hostname.map(|h| h.as_str()).unwrap_or(""));
        put_endpoints(&mut m, lan, MAX_LAN_ENDPOINTS);
        m
    }

    /// Builds a signed request.
    pub fn new(
        identity: &Identity,
        handshake_hash: &[u8; 32],
        req: u32,
        public: bool,
        hostname: Option<Hostname>,
        lan: &[SocketAddr],
    ) -> Self {
        let key = identity.public();
        let lan = lan[..lan.len().min(MAX_LAN_ENDPOINTS)].to_vec();
        let signature = identity.sign(&Self::signed_bytes(
            handshake_hash,
            req,
            &key,
            public,
            hostname.as_ref(),
            &lan,
        ));
        Register {
            req,
            key,
            public,
            hostname,
            lan,
            signature,
        }
    }

    /// Checks the signature for the session with `handshake_hash`.
    pub fn verify(&self, handshake_hash: &[u8; 32]) -> bool {
        let m = Self::signed_bytes(
            handshake_hash,
            self.req,
            &self.key,
            self.public,
            self.hostname.as_ref(),
            &self.lan,
        );
        self.key.verify(&m, &self.signature).is_ok()
    }
}

/// A registration answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The request answered.
    pub req: u32,
    /// The agent's address (stable for its identity).
    pub address: Address,
    /// The agent's public endpoint as the rendezvous sees it.
    pub observed: SocketAddr,
    /// Refresh this often (seconds).
    pub refresh_secs: u16,
    /// The registration lapses after this long without refresh (seconds).
    pub ttl_secs: u16,
    /// The agent's certificate.
    pub cert: Certificate,
}

/// A lookup answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The request answered.
    pub req: u32,
    /// The node's address.
    pub address: Address,
    /// The node's Ed25519 identity.
    pub key: PublicKey,
    /// Public visibility.
    pub public: bool,
    /// Registered and fresh right now.
    pub online: bool,
    /// Its hostname, if any.
    pub hostname: Option<Hostname>,
    /// Where to reach it (empty when offline).
    pub endpoints: Vec<SocketAddr>,
}

/// Any inner message.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message<'a> {
    /// See [`Register`].
    Register(Register),
    /// Look a node up.
    Resolve {
        /// Request ID.
        req: u32,
        /// What to find.
        query: Query,
    },
    /// An overlay IPv6 packet.
    Data(&'a [u8]),
    /// See [`Registered`].
    Registered(Registered),
    /// See [`Resolved`].
    Resolved(Resolved),
    /// Ask for trust (relayed by the rendezvous).
    TrustRequest {
        /// Request ID.
        req: u32,
        /// The signed request.
        request: TrustRequest,
    },
    /// Approve a request.
    TrustApprove {
        /// Request ID.
        req: u32,
        /// The signed approval.
        approval: TrustApproval,
    },
    /// Reject a request.
    TrustReject {
        /// Request ID.
        req: u32,
        /// The requester.
        requester: Address,
        /// `issued_at` of the request rejected.
        issued_at: u64,
        /// Why.
        reason: String,
    },
    /// Revoke trust in a peer.
    TrustRevoke {
        /// Request ID.
        req: u32,
        /// The peer.
        peer: Address,
    },
    /// Ask the rendezvous to coordinate hole punching with a trusted
    /// peer: both sides get [`Message::PunchGo`].
    Punch {
        /// The peer.
        peer: Address,
    },
    /// Probe `peer`'s candidates, starting `delay_ms` after this message
    /// arrived (so both sides start together, each on its own clock).
    PunchGo {
        /// The peer.
        peer: Address,
        /// Wait this long after arrival before the first probe.
        delay_ms: u16,
        /// The peer's candidates: its public endpoint as the rendezvous
        /// sees it, then its LAN endpoints.
        endpoints: Vec<SocketAddr>,
        /// What the peer reported about its NAT (unknown when it did not,
        /// or when an older rendezvous left the field out).
        nat: crate::nat::NatInfo,
    },
    /// What the agent learned about its NAT, kept with its registration
    /// and passed to peers in [`Message::PunchGo`]; acknowledged with
    /// [`Message::Ack`].
    NatInfo {
        /// Request ID.
        req: u32,
        /// The classification.
        info: crate::nat::NatInfo,
    },
    /// Rendezvous to agent, after every `Registered` when the rendezvous
    /// has a second reflect port (§8.2): the port, on the rendezvous's
    /// address. Older agents drop the unknown kind and go on unclassified.
    ReflectPort {
        /// The reflect port (never 0).
        port: u16,
    },
    /// Agent to agent: trust revoked, the session ends.
    Revoke,
    /// We are shutting down: drop our session (trust and registration
    /// stay; the rendezvous marks us offline).
    Bye,
    /// Someone asks us for trust.
    TrustRequested {
        /// Push ID: acknowledge it with [`Message::Ack`].
        id: u32,
        /// The signed request.
        request: TrustRequest,
        /// The requester's hostname.
        hostname: Option<Hostname>,
    },
    /// A request succeeded.
    Ack {
        /// The request.
        req: u32,
    },
    /// A request of ours was approved.
    TrustApproved {
        /// Push ID: acknowledge it with [`Message::Ack`].
        id: u32,
        /// The signed approval.
        approval: TrustApproval,
        /// The approver's hostname.
        hostname: Option<Hostname>,
        /// Where the approver is reachable, if online: saves the requester
        /// a lookup before its first packet.
        endpoint: Option<SocketAddr>,
    },
    /// A request of ours was rejected.
    TrustRejected {
        /// Push ID: acknowledge it with [`Message::Ack`].
        id: u32,
        /// Who rejected it.
        rejecter: Address,
        /// `issued_at` of our request.
        issued_at: u64,
        /// Why.
        reason: String,
    },
    /// A peer revoked its trust in us.
    TrustRevoked {
        /// Push ID: acknowledge it with [`Message::Ack`].
        id: u32,
        /// The peer.
        peer: Address,
    },
    /// A request failed.
    Error {
        /// The request that failed.
        req: u32,
        /// Why.
        code: ErrorCode,
        /// Detail for humans.
        message: String,
    },
}

/// Reads a query: kind 1 and an address, or kind 2 and a hostname.
pub fn read_query(r: &mut Reader<'_>) -> Result<Query, DecodeError> {
    match r.u8("query kind")? {
        1 => Ok(Query::Address(Address::from_bytes(r.array("address")?))),
        2 => match hostname_field(r, "hostname")? {
            Some(h) => Ok(Query::Hostname(h)),
            None => Err(DecodeError::BadValue("hostname")),
        },
        _ => Err(DecodeError::BadValue("query kind")),
    }
}

/// Appends a query (see [`read_query`]).
pub fn write_query(out: &mut Vec<u8>, q: &Query) {
    match q {
        Query::Address(a) => {
            out.push(1);
            out.extend_from_slice(&a.to_bytes());
        }
        Query::Hostname(h) => {
            out.push(2);
            put_short_str(out, h.as_str());
        }
    }
}

/// Reads a count byte and that many endpoints (at most `max`).
fn read_endpoints(r: &mut Reader<'_>, max: usize) -> Result<Vec<SocketAddr>, DecodeError> {
    let count = r.u8("endpoint count")? as usize;
    if count > max {
        return Err(DecodeError::BadValue("endpoint count"));
    }
    let mut endpoints = Vec::with_capacity(count);
    for _ in 0..count {
        endpoints.push(r.endpoint("endpoint")?);
    }
    Ok(endpoints)
}

/// Appends a count byte and the first `max` endpoints.
fn put_endpoints(out: &mut Vec<u8>, endpoints: &[SocketAddr], max: usize) {
    let n = endpoints.len().min(max);
    out.push(n as u8);
    for ep in &endpoints[..n] {
        put_endpoint(out, *ep);
    }
}

fn hostname_field(
    r: &mut Reader<'_>,
    field: &'static str,
) -> Result<Option<Hostname>, DecodeError> {
    let s = r.short_str(field)?;
    if s.is_empty() {
        return Ok(None);
    }
    Hostname::new(s)
        .map(Some)
        .map_err(|_| DecodeError::BadValue(field))
}

impl<'a> Message<'a> {
    /// Decodes a plaintext. Never panics.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let kind = r.u8("kind")?;
        let msg = match kind {
            KIND_REGISTER => {
                let req = r.u32("req")?;
                let key = PublicKey(r.array("key")?);
                let flags = r.u8("flags")?;
                if flags > 1 {
                    return Err(DecodeError::BadValue("flags"));
                }
                let hostname = hostname_field(&mut r, "hostname")?;
                let lan = read_endpoints(&mut r, MAX_LAN_ENDPOINTS)?;
                let signature = r.array("signature")?;
                Message::Register(Register {
                    req,
                    key,
                    public: flags & 1 == 1,
                    hostname,
                    lan,
                    signature,
                })
            }
            KIND_RESOLVE => Message::Resolve {
                req: r.u32("req")?,
                query: read_query(&mut r)?,
            },
            KIND_TRUST_REQUEST => Message::TrustRequest {
                req: r.u32("req")?,
                request: TrustRequest::decode(&mut r)?,
            },
            KIND_TRUST_APPROVE => Message::TrustApprove {
                req: r.u32("req")?,
                approval: TrustApproval::decode(&mut r)?,
            },
            KIND_TRUST_REJECT => Message::TrustReject {
                req: r.u32("req")?,
                requester: Address::from_bytes(r.array("requester")?),
                issued_at: r.u64("issued at")?,
                reason: r.short_str("reason")?.to_string(),
            },
            KIND_TRUST_REVOKE => Message::TrustRevoke {
                req: r.u32("req")?,
                peer: Address::from_bytes(r.array("peer")?),
            },
            KIND_PUNCH => Message::Punch {
                peer: Address::from_bytes(r.array("peer")?),
            },
            KIND_PUNCH_GO => Message::PunchGo {
                peer: Address::from_bytes(r.array("peer")?),
                delay_ms: r.u16("delay")?,
                endpoints: read_endpoints(&mut r, MAX_ENDPOINTS)?,
                nat: if r.remaining() == 0 {
                    crate::nat::NatInfo::default()
                } else {
                    // Present only when known (one encoding per message).
                    let nat = crate::nat::NatInfo::decode(&r.array("nat")?)?;
                    if nat == crate::nat::NatInfo::default() {
                        return Err(DecodeError::BadValue("nat"));
                    }
                    nat
                },
            },
            KIND_NAT_INFO => Message::NatInfo {
                req: r.u32("req")?,
                info: crate::nat::NatInfo::decode(&r.array("nat")?)?,
            },
            KIND_REFLECT_PORT => match r.u16("port")? {
                0 => return Err(DecodeError::BadValue("port")),
                port => Message::ReflectPort { port },
            },
            KIND_REVOKE => Message::Revoke,
            KIND_BYE => Message::Bye,
            KIND_TRUST_REQUESTED => Message::TrustRequested {
                id: r.u32("id")?,
                request: TrustRequest::decode(&mut r)?,
                hostname: hostname_field(&mut r, "hostname")?,
            },
            KIND_ACK => Message::Ack { req: r.u32("req")? },
            KIND_TRUST_APPROVED => Message::TrustApproved {
                id: r.u32("id")?,
                approval: TrustApproval::decode(&mut r)?,
                hostname: hostname_field(&mut r, "hostname")?,
                endpoint: match r.u8("endpoint flag")? {
                    0 => None,
                    1 => Some(r.endpoint("endpoint")?),
                    _ => return Err(DecodeError::BadValue("endpoint flag")),
                },
            },
            KIND_TRUST_REJECTED => Message::TrustRejected {
                id: r.u32("id")?,
                rejecter: Address::from_bytes(r.array("rejecter")?),
                issued_at: r.u64("issued at")?,
                reason: r.short_str("reason")?.to_string(),
            },
            KIND_TRUST_REVOKED => Message::TrustRevoked {
                id: r.u32("id")?,
                peer: Address::from_bytes(r.array("peer")?),
            },
            KIND_DATA => Message::Data(r.rest()),
            KIND_REGISTERED => Message::Registered(Registered {
                req: r.u32("req")?,
                address: Address::from_bytes(r.array("address")?),
                observed: r.endpoint("observed")?,
                refresh_secs: r.u16("refresh")?,
                ttl_secs: r.u16("ttl")?,
                cert: Certificate::decode(&mut r)?,
            }),
            KIND_RESOLVED => {
                let req = r.u32("req")?;
                let address = Address::from_bytes(r.array("address")?);
                let key = PublicKey(r.array("key")?);
                let flags = r.u8("flags")?;
                if flags > 3 {
                    return Err(DecodeError::BadValue("flags"));
                }
                let hostname = hostname_field(&mut r, "hostname")?;
                let endpoints = read_endpoints(&mut r, MAX_ENDPOINTS)?;
                Message::Resolved(Resolved {
                    req,
                    address,
                    key,
                    public: flags & 1 == 1,
                    online: flags & 2 == 2,
                    hostname,
                    endpoints,
                })
            }
            KIND_ERROR => Message::Error {
                req: r.u32("req")?,
                code: ErrorCode::from_u8(r.u8("code")?),
                message: r.short_str("message")?.to_string(),
            },
            other => return Err(DecodeError::UnknownKind(other)),
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Register(m) => {
                out.push(KIND_REGISTER);
                out.extend_from_slice(&m.req.to_be_bytes());
                out.extend_from_slice(m.key.as_bytes());
                out.push(m.public as u8);
                put_short_str(out, m.hostname.as_ref().map(|h| h.as_str()).unwrap_or(""));
                put_endpoints(out, &m.lan, MAX_LAN_ENDPOINTS);
                out.extend_from_slice(&m.signature);
            }
            Message::Resolve { req, query } => {
                out.push(KIND_RESOLVE);
                out.extend_from_slice(&req.to_be_bytes());
                write_query(out, query);
            }
            Message::TrustRequest { req, request } => {
                out.push(KIND_TRUST_REQUEST);
                out.extend_from_slice(&req.to_be_bytes());
                request.encode(out);
            }
            Message::TrustApprove { req, approval } => {
                out.push(KIND_TRUST_APPROVE);
                out.extend_from_slice(&req.to_be_bytes());
                approval.encode(out);
            }
            Message::TrustReject {
                req,
                requester,
                issued_at,
                reason,
            } => {
                out.push(KIND_TRUST_REJECT);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&requester.to_bytes());
                out.extend_from_slice(&issued_at.to_be_bytes());
                put_short_str(out, reason);
            }
            Message::TrustRevoke { req, peer } => {
                out.push(KIND_TRUST_REVOKE);
                out.extend_from_slice(&req.to_be_bytes());
                out.extend_from_slice(&peer.to_bytes());
            }
            Message::Punch { peer } => {
                out.push(KIND_PUNCH);
                out.extend_from_slice(&peer.to_bytes());
            }
            Message::PunchGo {
                peer,
                delay_ms,
                endpoints,
                nat,
            } => {
                out.push(KIND_PUNCH_GO);
                out.extend_from_slice(&peer.to_bytes());
                out.extend_from_slice(&delay_ms.to_be_bytes());
                put_endpoints(out, endpoints, MAX_ENDPOINTS);
                // Left out when unknown, so older agents read it unchanged.
                if *nat != crate::nat::NatInfo::default() {
                    nat.encode(out);
                }
            }
            Message::NatInfo { req, info } => {
                out.push(KIND_NAT_INFO);
                out.extend_from_slice(&req.to_be_bytes());
                info.encode(out);
            }
            Message::ReflectPort { port } => {
                out.push(KIND_REFLECT_PORT);
                out.extend_from_slice(&port.to_be_bytes());
            }
            Message::Revoke => out.push(KIND_REVOKE),
            Message::Bye => out.push(KIND_BYE),
            Message::TrustRequested {
                id,
                request,
                hostname,
            } => {
                out.push(KIND_TRUST_REQUESTED);
                out.extend_from_slice(&id.to_be_bytes());
                request.encode(out);
                put_short_str(out, hostname.as_ref().map(|h| h.as_str()).unwrap_or(""));
            }
            Message::Ack { req } => {
                out.push(KIND_ACK);
                out.extend_from_slice(&req.to_be_bytes());
            }
            Message::TrustApproved {
                id,
                approval,
                hostname,
                endpoint,
            } => {
                out.push(KIND_TRUST_APPROVED);
                out.extend_from_slice(&id.to_be_bytes());
                approval.encode(out);
                put_short_str(out, hostname.as_ref().map(|h| h.as_str()).unwrap_or(""));
                match endpoint {
                    None => out.push(0),
                    Some(ep) => {
                        out.push(1);
                        put_endpoint(out, *ep);
                    }
                }
            }
            Message::TrustRejected {
                id,
                rejecter,
                issued_at,
                reason,
            } => {
                out.push(KIND_TRUST_REJECTED);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&rejecter.to_bytes());
                out.extend_from_slice(&issued_at.to_be_bytes());
                put_short_str(out, reason);
            }
            Message::TrustRevoked { id, peer } => {
                out.push(KIND_TRUST_REVOKED);
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&peer.to_bytes());
            }
            Message::Data(packet) => {
                out.push(KIND_DATA);
                out.extend_from_slice(packet);
            }
            Message::Registered(m) => {
                out.push(KIND_REGISTERED);
                out.extend_from_slice(&m.req.to_be_bytes());
                out.extend_from_slice(&m.address.to_bytes());
                put_endpoint(out, m.observed);
                out.extend_from_slice(&m.refresh_secs.to_be_bytes());
                out.extend_from_slice(&m.ttl_secs.to_be_bytes());
                m.cert.encode(out);
            }
            Message::Resolved(m) => {
                out.push(KIND_RESOLVED);
                out.extend_from_slice(&m.req.to_be_bytes());
                out.extend_from_slice(&m.address.to_bytes());
                out.extend_from_slice(m.key.as_bytes());
                out.push(m.public as u8 | (m.online as u8) << 1);
                put_short_str(out, m.hostname.as_ref().map(|h| h.as_str()).unwrap_or(""));
                put_endpoints(out, &m.endpoints, MAX_ENDPOINTS);
            }
            Message::Error { req, code, message } => {
                out.push(KIND_ERROR);
                out.extend_from_slice(&req.to_be_bytes());
                out.push(code.to_u8());
                put_short_str(out, message);
            }
        }
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

#[cfg(test)]
mod tests;
