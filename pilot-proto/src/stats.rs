//! Counters: per-datagram errors are never fatal, they are counted here.

use core::fmt;

/// Why an incoming datagram was dropped. Never fatal: each is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The bytes do not parse.
    Malformed,
    /// A handshake whose mac1 is not for us.
    BadMac,
    /// A transport packet or response for no session we know.
    UnknownSession,
    /// Decryption or authentication failed (tampering, wrong key).
    AuthFailed,
    /// A counter or handshake timestamp seen before.
    Replay,
    /// Refused under load (answered with a cookie) or over a rate limit.
    RateLimited,
    /// A peer our policy does not accept.
    NotAllowed,
    /// A session past its lifetime.
    Expired,
    /// A packet whose inner addresses do not match the session's peer.
    Spoofed,
    /// A datagram to a port nobody listens on.
    PortUnreachable,
    /// An inner message that makes no sense here.
    Unexpected,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::Malformed => "malformed",
            DropReason::BadMac => "bad-mac",
            DropReason::UnknownSession => "unknown-session",
            DropReason::AuthFailed => "auth-failed",
            DropReason::Replay => "replay",
            DropReason::RateLimited => "rate-limited",
            DropReason::NotAllowed => "not-allowed",
            DropReason::Expired => "expired",
            DropReason::Spoofed => "spoofed",
            DropReason::PortUnreachable => "port-unreachable",
            DropReason::Unexpected => "unexpected",
        })
    }
}

/// Counters a state machine keeps; read them with `stats()`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed in.
    pub datagrams_in: u64,
    /// Datagrams handed out.
    pub datagrams_out: u64,
    /// Handshakes we started (retransmissions included).
    pub handshakes_sent: u64,
    /// Handshakes that produced a session.
    pub handshakes_completed: u64,
    /// Cookie replies sent instead of doing handshake work.
    pub cookie_replies: u64,
    /// Handshakes with a good cookie dropped under load because their
    /// source was over its handshake rate (also counted as rate-limited).
    pub handshakes_source_limited: u64,
    /// Peers forgotten at the end of their probation (they handshook
    /// with us and nothing kept them), or evicted to make room for newer
    /// ones on probation.
    pub peers_forgotten: u64,
    /// Trust requests refused because their requester sent too many
    /// (rendezvous).
    pub trust_requests_limited: u64,
    /// Trust requests refused because their target has too many pending
    /// (rendezvous), or pending requests dropped to make room (agent).
    pub trust_requests_dropped: u64,
    /// Overlay datagrams delivered to the application.
    pub delivered: u64,
    /// Outgoing datagrams dropped because a queue was full or timed out.
    pub send_dropped: u64,
    /// Drops, by reason.
    pub dropped_malformed: u64,
    /// See [`DropReason::BadMac`].
    pub dropped_bad_mac: u64,
    /// See [`DropReason::UnknownSession`].
    pub dropped_unknown_session: u64,
    /// See [`DropReason::AuthFailed`].
    pub dropped_auth: u64,
    /// See [`DropReason::Replay`].
    pub dropped_replay: u64,
    /// See [`DropReason::RateLimited`].
    pub dropped_rate_limited: u64,
    /// See [`DropReason::NotAllowed`].
    pub dropped_not_allowed: u64,
    /// See [`DropReason::Expired`].
    pub dropped_expired: u64,
    /// See [`DropReason::Spoofed`].
    pub dropped_spoofed: u64,
    /// See [`DropReason::PortUnreachable`].
    pub dropped_port_unreachable: u64,
    /// See [`DropReason::Unexpected`].
    pub dropped_unexpected: u64,
}

impl Stats {
    /// Counts one drop.
    pub fn drop(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::BadMac => &mut self.dropped_bad_mac,
            DropReason::UnknownSession => &mut self.dropped_unknown_session,
            DropReason::AuthFailed => &mut self.dropped_auth,
            DropReason::Replay => &mut self.dropped_replay,
            DropReason::RateLimited => &mut self.dropped_rate_limited,
            DropReason::NotAllowed => &mut self.dropped_not_allowed,
            DropReason::Expired => &mut self.dropped_expired,
            DropReason::Spoofed => &mut self.dropped_spoofed,
            DropReason::PortUnreachable => &mut self.dropped_port_unreachable,
            DropReason::Unexpected => &mut self.dropped_unexpected,
        };
        *c += 1;
    }

    /// All drops together.
    pub fn dropped(&self) -> u64 {
        self.dropped_malformed
            + self.dropped_bad_mac
            + self.dropped_unknown_session
            + self.dropped_auth
            + self.dropped_replay
            + self.dropped_rate_limited
            + self.dropped_not_allowed
            + self.dropped_expired
            + self.dropped_spoofed
            + self.dropped_port_unreachable
            + self.dropped_unexpected
    }
}
