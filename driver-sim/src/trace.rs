//! The record of a run: a text trace, one line per thing that happens, and
//! counters.

use core::fmt::{self, Write as _};

use pilot_proto::Timestamp;

/// Counters for everything the world did, for assertions in tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams machines handed to the network (each `poll_transmit`).
    pub sent: u64,
    /// Datagrams handed to a machine's `handle_datagram`, copies included.
    pub delivered: u64,
    /// Datagrams put on the network with [`World::inject`](crate::World::inject).
    pub injected: u64,
    /// Extra copies a link made.
    pub duplicated: u64,
    /// Copies a link held back so that later datagrams could overtake them.
    pub reordered: u64,
    /// Copies the network threw away, by reason.
    pub dropped: Drops,
    /// Events machines emitted.
    pub events: u64,
    /// Times a machine's timer fired (`handle_timeout` calls).
    pub timer_wakeups: u64,
    /// Queue entries processed: deliveries plus timer wakeups.
    pub steps: u64,
    /// Mappings NAT boxes created (each traced once as `nat <name> map`).
    pub nat_mappings: u64,
    /// Extra sockets machines opened ([`SocketOp::Open`](crate::SocketOp)).
    pub sockets_opened: u64,
}

/// Dropped copies, one counter per reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Drops {
    /// Random loss on a link.
    pub loss: u64,
    /// Larger than a link's MTU.
    pub mtu: u64,
    /// Sent to an address no host owns.
    pub no_route: u64,
    /// Sent across a partition, or to or from an isolated host.
    pub partition: u64,
    /// Waited longer than the uplink's `queue_limit`.
    pub queue: u64,
    /// Reached a NAT's public address on a port with no live mapping.
    pub nat_no_mapping: u64,
    /// Refused by a NAT's filtering behaviour.
    pub nat_filtered: u64,
    /// Refused by a NAT that answers unsolicited datagrams with ICMP.
    pub nat_icmp: u64,
    /// Sent to the sender's own NAT's public address, which does not
    /// hairpin.
    pub nat_hairpin: u64,
    /// A NAT had no public port left for a new mapping.
    pub nat_ports: u64,
    /// Stopped by an egress firewall that lets no UDP out.
    pub udp_blocked: u64,
}

impl Drops {
    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.loss
            + self.mtu
            + self.no_route
            + self.partition
            + self.queue
            + self.nat_no_mapping
            + self.nat_filtered
            + self.nat_icmp
            + self.nat_hairpin
            + self.nat_ports
            + self.udp_blocked
    }

    pub(crate) fn count(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::Loss => &mut self.loss,
            DropReason::Mtu => &mut self.mtu,
            DropReason::NoRoute => &mut self.no_route,
            DropReason::Partition => &mut self.partition,
            DropReason::Queue => &mut self.queue,
            DropReason::NatNoMapping => &mut self.nat_no_mapping,
            DropReason::NatFiltered => &mut self.nat_filtered,
            DropReason::NatIcmp => &mut self.nat_icmp,
            DropReason::NatHairpin => &mut self.nat_hairpin,
            DropReason::NatPorts => &mut self.nat_ports,
            DropReason::UdpBlocked => &mut self.udp_blocked,
        };
        *counter += 1;
    }
}

/// Why the network threw a datagram away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    Loss,
    Mtu,
    NoRoute,
    Partition,
    Queue,
    NatNoMapping,
    NatFiltered,
    NatIcmp,
    NatHairpin,
    NatPorts,
    UdpBlocked,
}

impl DropReason {
    /// The word the trace uses: `drop(<word>)`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::Mtu => "mtu",
            DropReason::NoRoute => "no-route",
            DropReason::Partition => "partition",
            DropReason::Queue => "queue",
            DropReason::NatNoMapping => "nat-no-mapping",
            DropReason::NatFiltered => "nat-filtered",
            DropReason::NatIcmp => "nat-icmp",
            DropReason::NatHairpin => "nat-hairpin",
            DropReason::NatPorts => "nat-ports",
            DropReason::UdpBlocked => "udp-blocked",
        }
    }
}

/// The text trace. Off, it costs nothing but a branch per line, which the
/// speed bench relies on.
pub(crate) struct Trace {
    enabled: bool,
    text: String,
}

impl Trace {
    pub(crate) fn new() -> Self {
        Trace {
            enabled: true,
            text: String::new(),
        }
    }

    /// Whether lines are being kept; callers check this before doing any
    /// work (describing a payload) that only the trace needs.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn set_enabled(&mut self, enabled: bool) {
        self.enabled = enabled;
    }

    /// Appends `+<time> <line>`.
    pub(crate) fn line(&mut self, now: Timestamp, line: impl fmt::Display) {
        if !self.enabled {
            return;
        }
        // Writing into a String cannot fail.
        let _ = writeln!(self.text, "{now} {line}");
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// The last `n` lines, for the report printed when a test panics.
    pub(crate) fn tail(&self, n: usize) -> &str {
        let mut start = self.text.len();
        let body = self.text.trim_end_matches('\n');
        let mut seen = 0;
        for (i, b) in body.bytes().enumerate().rev() {
            if b != b'\n' {
                continue;
            }
            seen += 1;
            if seen == n {
                start = i + 1;
                break;
            }
        }
        if seen < n {
            start = 0;
        }
        &self.text[start..]
    }
}

/// A duration in the trace's compact form: `3.214ms`.
pub(crate) struct Millis(pub(crate) core::time::Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = crate::rng::micros(self.0);
        write!(f, "{}.{:03}ms", us / 1000, us % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        let mut t = Trace::new();
        for i in 0..5u64 {
            t.line(Timestamp::from_micros(i), format_args!("line {i}"));
        }
        assert_eq!(t.tail(2), "+0.000003s line 3\n+0.000004s line 4\n");
        assert_eq!(t.tail(10), t.as_str());
    }

    #[test]
    fn disabled_trace_stays_empty() {
        let mut t = Trace::new();
        t.set_enabled(false);
        t.line(Timestamp::ZERO, format_args!("hidden"));
        assert_eq!(t.as_str(), "");
    }

    #[test]
    fn millis_format() {
        let d = core::time::Duration::from_micros(3214);
        assert_eq!(Millis(d).to_string(), "3.214ms");
    }
}
