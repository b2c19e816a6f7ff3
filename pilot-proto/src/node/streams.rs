//! Streams on the node, and the built-in services that run on them: echo
//! (port 7), data exchange (1001) and the event stream (1002).

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::{CommandError, Event, Node};
use crate::addr::{ports, Address, SocketAddress};
use crate::io::Timer;
use crate::msg::KIND_DATA;
use crate::services::dataexchange::{Kind, Receiver, ReceiverConfig};
use crate::services::eventstream::{Broker, BrokerConfig};
use crate::stream::{StreamEvent, StreamId, StreamInfo, Streams};
use crate::time::Timestamp;

/// Which built-in services a node offers, and their limits.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Echo on port 7 (streams and datagrams), used by ping and bench.
    pub echo: bool,
    /// Data exchange on port 1001.
    pub data_exchange: bool,
    /// Limits for each data exchange connection.
    pub data_exchange_limits: ReceiverConfig,
    /// The event stream on port 1002.
    pub event_stream: bool,
    /// Limits of the event stream broker.
    pub event_stream_limits: BrokerConfig,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            echo: true,
            data_exchange: true,
            data_exchange_limits: ReceiverConfig::default(),
            event_stream: true,
            event_stream_limits: BrokerConfig::default(),
        }
    }
}

/// What arrived through the data exchange service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The sender.
    pub from: Address,
    /// The sender's id for it (already acknowledged).
    pub id: u32,
    /// Text, JSON, binary or file.
    pub kind: Kind,
    /// For files, a name already checked to be one safe path component.
    pub name: Option<String>,
    /// The data.
    pub payload: Vec<u8>,
}

/// Bytes a service may owe one stream before it stops reading from it, so
/// a peer that writes without reading cannot make us buffer without end.
const SERVICE_BACKLOG: usize = 1 << 20;

enum Service {
    Echo,
    DataExchange(Box<Receiver>),
    EventStream,
}

pub(super) struct ServiceConn {
    service: Service,
    peer: Address,
    out: VecDeque<u8>,
    /// The peer finished sending.
    eof: bool,
}

/// The stream-side state of a node.
pub(super) struct StreamState {
    pub(super) streams: Streams,
    services: BTreeMap<StreamId, ServiceConn>,
    broker: Broker<u32>,
}

impl StreamState {
    pub(super) fn new(streams: Streams, config: &ServiceConfig) -> Self {
        let mut s = StreamState {
            streams,
            services: BTreeMap::new(),
            broker: Broker::new(config.event_stream_limits),
        };
        for (on, port) in [
            (config.echo, ports::ECHO),
            (config.data_exchange, ports::DATA_EXCHANGE),
            (config.event_stream, ports::EVENT_STREAM),
        ] {
            if on {
                // A fresh stack has every port free.
                let _ = s.streams.listen(port);
            }
        }
        s
    }
}

impl Node {
    fn streams_mut(&mut self) -> Result<&mut Streams, CommandError> {
        self.streams
            .as_mut()
            .map(|s| &mut s.streams)
            .ok_or(CommandError::NotRegistered)
    }

    /// Accepts streams on `port` (`Event::Stream(Incoming)` for each).
    pub fn listen(&mut self, port: u16) -> Result<(), CommandError> {
        self.streams_mut()?
            .listen(port)
            .map_err(CommandError::Stream)
    }

    /// Accepts streams to every port from now on (`StreamConfig::accept_any`),
    /// or only to listened ones again; also after a re-registration.
    pub fn set_accept_any(&mut self, on: bool) {
        self.config.streams.accept_any = on;
        if let Ok(s) = self.streams_mut() {
            s.set_accept_any(on);
        }
    }

    /// Stops accepting streams on `port`.
    pub fn unlisten(&mut self, port: u16) {
        if let Ok(s) = self.streams_mut() {
            s.unlisten(port);
        }
    }

    /// Opens a stream to `dst`, a trusted peer's port. Writes wait until
    /// `Event::Stream(Connected)`.
    pub fn connect(
        &mut self,
        now: Timestamp,
        dst: SocketAddress,
    ) -> Result<StreamId, CommandError> {
        self.now = now;
        self.not_me(dst.addr)?;
        if !self.trusted.contains_key(&dst.addr) {
            return Err(CommandError::NotTrusted);
        }
        let id = self
            .streams_mut()?
            .connect(now, dst)
            .map_err(CommandError::Stream)?;
        self.pump_streams(now);
        Ok(id)
    }

    /// Writes to a stream; returns how much it took (less means
    /// backpressure: wait for `Writable`).
    pub fn stream_write(
        &mut self,
        now: Timestamp,
        id: StreamId,
        data: &[u8],
    ) -> Result<usize, CommandError> {
        self.now = now;
        let n = self
            .streams_mut()?
            .write(now, id, data)
            .map_err(CommandError::Stream)?;
        self.pump_streams(now);
        Ok(n)
    }

    /// Reads from a stream: `Ok(0)` at end of stream,
    /// `Err(Stream(WouldBlock))` when nothing is buffered yet.
    pub fn stream_read(
        &mut self,
        now: Timestamp,
        id: StreamId,
        buf: &mut [u8],
    ) -> Result<usize, CommandError> {
        self.now = now;
        let n = self
            .streams_mut()?
            .read(now, id, buf)
            .map_err(CommandError::Stream)?;
        // Reading opens the receive window: the peer may send more.
        self.pump_streams(now);
        Ok(n)
    }

    /// Half-closes a stream: we send no more, we still read.
    pub fn stream_shutdown(&mut self, now: Timestamp, id: StreamId) {
        if let Ok(s) = self.streams_mut() {
            s.shutdown(now, id);
        }
        self.pump_streams(now);
    }

    /// Closes a stream gracefully.
    pub fn stream_close(&mut self, now: Timestamp, id: StreamId) {
        if let Ok(s) = self.streams_mut() {
            s.close(now, id);
        }
        self.pump_streams(now);
    }

    /// Resets a stream.
    pub fn stream_abort(&mut self, now: Timestamp, id: StreamId) {
        if let Ok(s) = self.streams_mut() {
            s.abort(now, id);
        }
        self.pump_streams(now);
    }

    /// One stream's state and counters.
    pub fn stream_info(&self, id: StreamId) -> Option<StreamInfo> {
        self.streams.as_ref().and_then(|s| s.streams.info(id))
    }

    /// Counters of the stream layer (packets, SYNs refused or dropped).
    pub fn stream_stats(&self) -> crate::stream::StreamStats {
        self.streams
            .as_ref()
            .map(|s| s.streams.stats())
            .unwrap_or_default()
    }

    /// Every stream, services' included.
    pub fn stream_infos(&self) -> Vec<StreamInfo> {
        self.streams
            .as_ref()
            .map(|s| s.streams.streams().collect())
            .unwrap_or_default()
    }

    /// Publishes an event to every subscriber of our event stream.
    pub fn publish(
        &mut self,
        now: Timestamp,
        topic: &str,
        data: &[u8],
    ) -> Result<usize, CommandError> {
        let Some(s) = self.streams.as_mut() else {
            return Err(CommandError::NotRegistered);
        };
        let n = s
            .broker
            .publish(topic, data)
            .map_err(|_| CommandError::InvalidArgument)?;
        route_broker_output(s);
        self.flush_all_services(now);
        self.pump_streams(now);
        Ok(n)
    }

    pub(super) fn start_streams(&mut self, now: Timestamp, address: Address) {
        if self
            .streams
            .as_ref()
            .is_some_and(|s| s.streams.local() == address)
        {
            return;
        }
        let streams = Streams::new(self.config.streams, address, &self.stream_seed, now);
        self.streams = Some(StreamState::new(streams, &self.config.services));
    }

    /// An authenticated TCP packet from a trusted peer.
    pub(super) fn on_stream_packet(&mut self, now: Timestamp, packet: &[u8]) {
        if let Some(s) = self.streams.as_mut() {
            s.streams.handle_packet(now, packet);
        }
        self.pump_streams(now);
    }

    /// Closes every stream with `peer` (trust revoked).
    pub(super) fn abort_streams_with(&mut self, now: Timestamp, peer: Address) {
        if let Some(s) = self.streams.as_mut() {
            s.streams.abort_peer(now, peer);
        }
        self.pump_streams(now);
    }

    pub(super) fn stream_deadline(&self) -> Option<(Timestamp, Timer)> {
        self.streams
            .as_ref()
            .and_then(|s| s.streams.poll_timeout())
            .map(|t| (t, Timer::Stream))
    }

    pub(super) fn stream_timers(&mut self, now: Timestamp) {
        if let Some(s) = self.streams.as_mut() {
            s.streams.handle_timeout(now);
        }
        self.pump_streams(now);
    }

    /// Moves everything the stream stack produced: events to services or
    /// the application, packets into tunnels. Service writes produce more
    /// packets, so it loops until quiet.
    pub(super) fn pump_streams(&mut self, now: Timestamp) {
        loop {
            let Some(s) = self.streams.as_mut() else {
                return;
            };
            let mut events = Vec::new();
            while let Some(e) = s.streams.poll_event() {
                events.push(e);
            }
            let mut packets = Vec::new();
            while let Some(p) = s.streams.poll_packet() {
                packets.push(p);
            }
            if events.is_empty() && packets.is_empty() {
                return;
            }
            for (dst, packet) in packets {
                self.send_stream_packet(now, dst, packet);
            }
            for e in events {
                self.on_stream_event(now, e);
            }
        }
    }

    fn send_stream_packet(&mut self, now: Timestamp, dst: Address, packet: Vec<u8>) {
        if !self.trusted.contains_key(&dst) {
            self.tunnels.stats_mut().send_dropped += 1;
            return;
        }
        let mut msg = Vec::with_capacity(1 + packet.len());
        msg.push(KIND_DATA);
        msg.extend_from_slice(&packet);
        // TCP retransmits what a full queue drops.
        let _ = self.send_to_peer(now, dst, msg);
    }

    fn on_stream_event(&mut self, now: Timestamp, e: StreamEvent) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        match e {
            StreamEvent::Incoming { id, port, from } => {
                let service = match port {
                    ports::ECHO if self.config.services.echo => Some(Service::Echo),
                    ports::DATA_EXCHANGE if self.config.services.data_exchange => {
                        let limits = self.config.services.data_exchange_limits;
                        Some(Service::DataExchange(Box::new(Receiver::new(limits))))
                    }
                    ports::EVENT_STREAM if self.config.services.event_stream => {
                        if s.broker.connect(id.0).is_err() {
                            s.streams.abort(now, id);
                            return;
                        }
                        Some(Service::EventStream)
                    }
                    _ => None,
                };
                match service {
                    Some(service) => {
                        s.services.insert(
                            id,
                            ServiceConn {
                                service,
                                peer: from.addr,
                                out: VecDeque::new(),
                                eof: false,
                            },
                        );
                    }
                    None => self.events.push_back(Event::Stream(e)),
                }
            }
            StreamEvent::Readable { id } | StreamEvent::Finished { id }
                if s.services.contains_key(&id) =>
            {
                self.serve(now, id);
            }
            StreamEvent::Writable { id } if s.services.contains_key(&id) => {
                self.flush_service(now, id);
                // Reading may have paused for a full backlog.
                self.serve(now, id);
            }
            StreamEvent::Closed { id, .. } if s.services.contains_key(&id) => {
                if let Some(conn) = s.services.remove(&id) {
                    if let Service::EventStream = conn.service {
                        s.broker.disconnect(id.0);
                    }
                }
            }
            other => self.events.push_back(Event::Stream(other)),
        }
    }

    /// Reads what a service stream has and answers it.
    fn serve(&mut self, now: Timestamp, id: StreamId) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let Some(s) = self.streams.as_mut() else {
                return;
            };
            let Some(conn) = s.services.get_mut(&id) else {
                return;
            };
            if conn.out.len() >= SERVICE_BACKLOG || conn.eof {
                break;
            }
            let n = match s.streams.read(now, id, &mut buf) {
                Ok(0) => {
                    conn.eof = true;
                    break;
                }
                Ok(n) => n,
                Err(_) => break,
            };
            let bytes = &buf[..n];
            let peer = conn.peer;
            let ok = match &mut conn.service {
                Service::Echo => {
                    conn.out.extend(bytes);
                    true
                }
                Service::DataExchange(rx) => {
                    let ok = rx.on_bytes(bytes).is_ok();
                    while let Some(ack) = rx.poll_transmit() {
                        conn.out.extend(ack);
                    }
                    while let Some(m) = rx.poll_received() {
                        self.events.push_back(Event::Message(Delivered {
                            from: peer,
                            id: m.id,
                            kind: m.kind,
                            name: m.name,
                            payload: m.payload,
                        }));
                    }
                    ok
                }
                Service::EventStream => {
                    let ok = s.broker.on_bytes(id.0, bytes).is_ok();
                    route_broker_output(s);
                    ok
                }
            };
            if !ok {
                // A peer that breaks the protocol loses the stream; what
                // was answered so far still goes out first.
                self.flush_service(now, id);
                if let Some(s) = self.streams.as_mut() {
                    s.streams.close(now, id);
                }
                return;
            }
        }
        self.flush_service(now, id);
        self.flush_all_services(now);
    }

    /// Writes what a service owes a stream, as far as the window allows;
    /// half-closes once the peer finished and everything is out.
    fn flush_service(&mut self, now: Timestamp, id: StreamId) {
        let Some(s) = self.streams.as_mut() else {
            return;
        };
        let Some(conn) = s.services.get_mut(&id) else {
            return;
        };
        while !conn.out.is_empty() {
            let (head, _) = conn.out.as_slices();
            match s.streams.write(now, id, head) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    conn.out.drain(..n);
                }
            }
        }
        if conn.eof && conn.out.is_empty() {
            s.streams.shutdown(now, id);
        }
    }

    /// Event stream fan-out writes to other streams than the one read.
    fn flush_all_services(&mut self, now: Timestamp) {
        let ids: Vec<StreamId> = match self.streams.as_ref() {
            Some(s) => s
                .services
                .iter()
                .filter(|(_, c)| !c.out.is_empty())
                .map(|(id, _)| *id)
                .collect(),
            None => return,
        };
        for id in ids {
            self.flush_service(now, id);
        }
    }
}

/// Queues the broker's output on the streams it is for.
fn route_broker_output(s: &mut StreamState) {
    while let Some((conn, bytes)) = s.broker.poll_transmit() {
        if let Some(c) = s.services.get_mut(&StreamId(conn)) {
            c.out.extend(bytes);
        }
    }
}
