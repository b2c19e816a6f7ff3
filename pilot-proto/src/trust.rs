//! Trust: signed requests and approvals, and the state a node keeps.
//!
//! Agents are private by default. Two agents exchange data only once both
//! have signed: the requester a [`TrustRequest`], the target a
//! [`TrustApproval`] naming that request. The rendezvous relays both
//! (the requester usually cannot reach a private target yet) and records
//! the pair only with both signatures; each node pins the other's key.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::addr::{Address, Hostname};
use crate::codec::{put_short_str, DecodeError, Reader};
use crate::identity::{Identity, PublicKey};
use crate::msg::{read_query, write_query, Query};

/// The longest reason a request or rejection may carry, in bytes.
pub const MAX_REASON: usize = 255;

/// A signed request for trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustRequest {
    /// The requester's address.
    pub from: Address,
    /// The requester's identity.
    pub from_key: PublicKey,
    /// Whom it asks, as the requester named them.
    pub to: Query,
    /// Wall-clock microseconds; strictly increasing per requester, so a
    /// replayed request is recognisable.
    pub issued_at: u64,
    /// Why, for the human or agent deciding.
    pub reason: String,
    /// The requester's signature.
    pub signature: [u8; 64],
}

/// `reason`, cut to at most [`MAX_REASON`] bytes on a character boundary.
pub fn truncate_reason(reason: &str) -> String {
    crate::codec::truncate_str(reason, MAX_REASON).to_string()
}

impl TrustRequest {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"pilot trust request v1");
        m.extend_from_slice(&self.from.to_bytes());
        m.extend_from_slice(self.from_key.as_bytes());
        write_query(&mut m, &self.to);
        m.extend_from_slice(&self.issued_at.to_be_bytes());
        put_short_str(&mut m, &self.reason);
        m
    }

    /// Builds and signs a request (the reason is cut to [`MAX_REASON`]).
    pub fn new(
        identity: &Identity,
        from: Address,
        to: Query,
        issued_at: u64,
        reason: &str,
    ) -> Self {
        let mut r = TrustRequest {
            from,
            from_key: identity.public(),
            to,
            issued_at,
            reason: truncate_reason(reason),
            signature: [0; 64],
        };
        r.signature = identity.sign(&r.signed_bytes());
        r
    }

    /// True if the requester's key signed exactly this.
    pub fn verify(&self) -> bool {
        self.from_key
            .verify(&self.signed_bytes(), &self.signature)
            .is_ok()
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from.to_bytes());
        out.extend_from_slice(self.from_key.as_bytes());
        write_query(out, &self.to);
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        put_short_str(out, &self.reason);
        out.extend_from_slice(&self.signature);
    }

    /// Reads the wire form.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TrustRequest {
            from: Address::from_bytes(r.array("from")?),
            from_key: PublicKey(r.array("from key")?),
            to: read_query(r)?,
            issued_at: r.u64("issued at")?,
            reason: r.short_str("reason")?.to_string(),
            signature: r.array("signature")?,
        })
    }
}

/// A signed approval of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustApproval {
    /// The approver's address.
    pub approver: Address,
    /// The approver's identity.
    pub approver_key: PublicKey,
    /// The requester's address.
    pub requester: Address,
    /// The requester's identity, pinned by this approval.
    pub requester_key: PublicKey,
    /// `issued_at` of the request approved.
    pub request_issued_at: u64,
    /// The approver's signature.
    pub signature: [u8; 64],
}

impl TrustApproval {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(128);
        m.extend_from_slice(b"pilot trust approve v1");
        m.extend_from_slice(&self.approver.to_bytes());
        m.extend_from_slice(self.approver_key.as_bytes());
        m.extend_from_slice(&self.requester.to_bytes());
        m.extend_from_slice(self.requester_key.as_bytes());
        m.extend_from_slice(&self.request_issued_at.to_be_bytes());
        m
    }

    /// Approves `request` as `identity`, holder of `approver`.
    pub fn new(identity: &Identity, approver: Address, request: &TrustRequest) -> Self {
        let mut a = TrustApproval {
            approver,
            approver_key: identity.public(),
            requester: request.from,
            requester_key: request.from_key,
            request_issued_at: request.issued_at,
            signature: [0; 64],
        };
        a.signature = identity.sign(&a.signed_bytes());
        a
    }

    /// True if the approver's key signed exactly this.
    pub fn verify(&self) -> bool {
        self.approver_key
            .verify(&self.signed_bytes(), &self.signature)
            .is_ok()
    }

    /// True if this approves `request`.
    pub fn approves(&self, request: &TrustRequest) -> bool {
        self.requester == request.from
            && self.requester_key == request.from_key
            && self.request_issued_at == request.issued_at
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.approver.to_bytes());
        out.extend_from_slice(self.approver_key.as_bytes());
        out.extend_from_slice(&self.requester.to_bytes());
        out.extend_from_slice(self.requester_key.as_bytes());
        out.extend_from_slice(&self.request_issued_at.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    /// Reads the wire form.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(TrustApproval {
            approver: Address::from_bytes(r.array("approver")?),
            approver_key: PublicKey(r.array("approver key")?),
            requester: Address::from_bytes(r.array("requester")?),
            requester_key: PublicKey(r.array("requester key")?),
            request_issued_at: r.u64("issued at")?,
            signature: r.array("signature")?,
        })
    }
}

/// A peer we trust, and the signatures that made it so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trusted {
    /// The peer's address.
    pub address: Address,
    /// The peer's key, pinned: a later key for this address needs a new
    /// approval.
    pub key: PublicKey,
    /// Its hostname when trust was granted.
    pub hostname: Option<Hostname>,
    /// Wall-clock seconds when trust was granted.
    pub since: u64,
}

/// A request waiting for our decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The request.
    pub request: TrustRequest,
    /// The requester's hostname, as the rendezvous knows it.
    pub hostname: Option<Hostname>,
}

/// A request we sent and await an answer to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The request.
    pub request: TrustRequest,
}

/// A trust request that was turned down: one of ours a peer rejected, or
/// one we rejected. Kept so that both sides can see what happened and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The other side: the peer that rejected us, or the requester we
    /// rejected.
    pub peer: Address,
    /// Its hostname, when known.
    pub hostname: Option<Hostname>,
    /// True if the peer rejected our request; false if we rejected its.
    pub by_peer: bool,
    /// The reason the rejecter gave.
    pub reason: String,
    /// Wall-clock seconds of the rejection.
    pub at: u64,
}

/// Rejections kept (the newest); older ones are forgotten.
pub const MAX_REJECTED: usize = 32;

/// Our unanswered requests kept (the newest); older ones are forgotten.
pub const MAX_OUTGOING: usize = 64;

/// What a node must persist about trust, and gets back after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustState {
    /// Peers we trust.
    pub trusted: Vec<Trusted>,
    /// Requests waiting for our decision.
    pub pending: Vec<Pending>,
    /// Requests we sent and that are not answered yet.
    pub outgoing: Vec<Outgoing>,
    /// The newest `issued_at` we used, so requests stay strictly
    /// increasing across restarts.
    pub last_issued_at: u64,
    /// Rejected requests, ours and others', oldest first (at most
    /// [`MAX_REJECTED`]).
    pub rejected: Vec<Rejected>,
}

/// Version 1: trusted, pending, outgoing.
const STATE_MAGIC_V1: &[u8; 8] = b"PLTRST01";
/// Version 2: version 1, then the rejected requests.
const STATE_MAGIC: &[u8; 8] = b"PLTRST02";

fn put_hostname(out: &mut Vec<u8>, h: &Option<Hostname>) {
    put_short_str(out, h.as_ref().map(|h| h.as_str()).unwrap_or(""));
}

fn read_hostname(r: &mut Reader<'_>) -> Result<Option<Hostname>, DecodeError> {
    let s = r.short_str("hostname")?;
    if s.is_empty() {
        return Ok(None);
    }
    Hostname::new(s)
        .map(Some)
        .map_err(|_| DecodeError::BadValue("hostname"))
}

fn count(r: &mut Reader<'_>, field: &'static str) -> Result<usize, DecodeError> {
    count_min(r, field, 40)
}

fn count_min(r: &mut Reader<'_>, field: &'static str, min: usize) -> Result<usize, DecodeError> {
    let n = r.u32(field)? as usize;
    // Every record is at least `min` bytes: a count larger than what is
    // left is corruption, not a reason to reserve memory.
    if n > r.remaining() / min {
        return Err(DecodeError::BadValue(field));
    }
    Ok(n)
}

impl TrustState {
    /// The persisted form: a magic, then counted records.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        out.extend_from_slice(&self.last_issued_at.to_be_bytes());
        out.extend_from_slice(&(self.trusted.len() as u32).to_be_bytes());
        for t in &self.trusted {
            out.extend_from_slice(&t.address.to_bytes());
            out.extend_from_slice(t.key.as_bytes());
            put_hostname(&mut out, &t.hostname);
            out.extend_from_slice(&t.since.to_be_bytes());
        }
        out.extend_from_slice(&(self.pending.len() as u32).to_be_bytes());
        for p in &self.pending {
            p.request.encode(&mut out);
            put_hostname(&mut out, &p.hostname);
        }
        out.extend_from_slice(&(self.outgoing.len() as u32).to_be_bytes());
        for o in &self.outgoing {
            o.request.encode(&mut out);
        }
        out.extend_from_slice(&(self.rejected.len() as u32).to_be_bytes());
        for j in &self.rejected {
            out.extend_from_slice(&j.peer.to_bytes());
            out.push(u8::from(j.by_peer));
            put_hostname(&mut out, &j.hostname);
            put_short_str(&mut out, &j.reason);
            out.extend_from_slice(&j.at.to_be_bytes());
        }
        out
    }

    /// Reads the persisted form, this version's or version 1's (written
    /// before rejections were kept). Corrupt or truncated input is an
    /// error, never a silent reset.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        let magic = r.bytes(8, "magic")?;
        let v2 = magic == STATE_MAGIC;
        if !v2 && magic != STATE_MAGIC_V1 {
            return Err(DecodeError::BadValue("magic"));
        }
        let last_issued_at = r.u64("last issued at")?;
        let mut state = TrustState {
            last_issued_at,
            ..TrustState::default()
        };
        for _ in 0..count(&mut r, "trusted count")? {
            state.trusted.push(Trusted {
                address: Address::from_bytes(r.array("address")?),
                key: PublicKey(r.array("key")?),
                hostname: read_hostname(&mut r)?,
                since: r.u64("since")?,
            });
        }
        for _ in 0..count(&mut r, "pending count")? {
            state.pending.push(Pending {
                request: TrustRequest::decode(&mut r)?,
                hostname: read_hostname(&mut r)?,
            });
        }
        for _ in 0..count(&mut r, "outgoing count")? {
            state.outgoing.push(Outgoing {
                request: TrustRequest::decode(&mut r)?,
            });
        }
        if v2 {
            // Address, flag, two lengths, time.
            for _ in 0..count_min(&mut r, "rejected count", 17)? {
                let peer = Address::from_bytes(r.array("peer")?);
                let by_peer = match r.u8("rejected by")? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue("rejected by")),
                };
                state.rejected.push(Rejected {
                    peer,
                    by_peer,
                    hostname: read_hostname(&mut r)?,
                    reason: r.short_str("reason")?.to_string(),
                    at: r.u64("rejected at")?,
                });
            }
        }
        r.finish()?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Identity, Identity) {
        (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]))
    }

    #[test]
    fn request_and_approval_sign_and_verify() {
        let (a, b) = ids();
        let (aa, ba) = (Address::new(0, 0x10), Address::new(0, 0x11));
        let req = TrustRequest::new(&a, aa, Query::Address(ba), 5, "let's talk");
        assert!(req.verify());
        let mut forged = req.clone();
        forged.reason = "other".into();
        assert!(!forged.verify());
        let mut wrong_key = req.clone();
        wrong_key.from_key = b.public();
        assert!(!wrong_key.verify(), "a request signed by the wrong key");
        let ok = TrustApproval::new(&b, ba, &req);
        assert!(ok.verify() && ok.approves(&req));
        let mut later = req.clone();
        later.issued_at = 6;
        assert!(!ok.approves(&later));
        let mut forged = ok.clone();
        forged.approver_key = a.public();
        assert!(!forged.verify(), "an approval signed by someone else");
    }

    #[test]
    fn state_round_trips_and_refuses_corruption() {
        let (a, b) = ids();
        let req = TrustRequest::new(
            &a,
            Address::new(0, 0x10),
            Query::Hostname(Hostname::new("bob").unwrap()),
            9,
            "hi",
        );
        let state = TrustState {
            trusted: alloc::vec![Trusted {
                address: Address::new(0, 0x11),
                key: b.public(),
                hostname: Hostname::new("bob").ok(),
                since: 1_800_000_000,
            }],
            pending: alloc::vec![Pending {
                request: req.clone(),
                hostname: None,
            }],
            outgoing: alloc::vec![Outgoing { request: req }],
            last_issued_at: 9,
            rejected: alloc::vec![Rejected {
                peer: Address::new(0, 0x12),
                hostname: Hostname::new("carol").ok(),
                by_peer: true,
                reason: "not now".into(),
                at: 1_800_000_001,
            }],
        };
        let bytes = state.encode();
        assert_eq!(TrustState::decode(&bytes), Ok(state));
        for cut in 0..bytes.len() {
            assert!(TrustState::decode(&bytes[..cut]).is_err());
        }
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert_eq!(
            TrustState::decode(&bad),
            Err(DecodeError::BadValue("magic"))
        );
        assert_eq!(
            TrustState::decode(&TrustState::default().encode()),
            Ok(TrustState::default())
        );
        let mut bad_flag = bytes.clone();
        let flag_at = bytes.len() - (8 + 1 + 7 + 1 + 5 + 1);
        bad_flag[flag_at] = 2;
        assert_eq!(
            TrustState::decode(&bad_flag),
            Err(DecodeError::BadValue("rejected by"))
        );
    }

    /// A file written before rejections were kept (version 1: no
    /// rejected section) still loads, with none.
    #[test]
    fn version_1_state_still_loads() {
        let (a, b) = ids();
        let req = TrustRequest::new(
            &a,
            Address::new(0, 0x10),
            Query::Address(Address::new(0, 0x11)),
            9,
            "hi",
        );
        let state = TrustState {
            trusted: alloc::vec![Trusted {
                address: Address::new(0, 0x11),
                key: b.public(),
                hostname: None,
                since: 1_800_000_000,
            }],
            pending: alloc::vec![],
            outgoing: alloc::vec![Outgoing { request: req }],
            last_issued_at: 9,
            rejected: alloc::vec![],
        };
        let mut v1 = state.encode();
        // Version 1 is version 2 without the rejected count at the end.
        v1[..8].copy_from_slice(STATE_MAGIC_V1);
        v1.truncate(v1.len() - 4);
        assert_eq!(TrustState::decode(&v1), Ok(state));
        let mut v1_with_more = v1.clone();
        v1_with_more.extend_from_slice(&[0, 0, 0, 0]);
        assert!(TrustState::decode(&v1_with_more).is_err());
    }
}
