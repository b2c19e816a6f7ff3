//! Streams and the built-in services with the real core in the simulator.

use std::fmt::Write as _;
use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig};
use pilot_proto::addr::{ports, SocketAddress};
use pilot_proto::node::Event;
use pilot_proto::services::dataexchange::{self, Kind, Sender, Status};
use pilot_proto::services::eventstream::{self, ClientDecoder, Incoming};
use pilot_proto::stream::{CloseReason, StreamError, StreamEvent, StreamId};
use pilot_proto::trust::{TrustState, Trusted};
use sha2::{Digest, Sha256};

const MAX: Duration = Duration::from_secs(60);

fn snapshot(name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, text);
    });
}

fn link(latency: Duration) -> LinkConfig {
    LinkConfig {
        latency,
        ..LinkConfig::default()
    }
}

/// Alice and bob, registered and trusting each other, over `link`.
fn trusted_pair(seed: u64, setup: LinkConfig) -> (Scenario, HostId, HostId) {
    trusted_pair_with(seed, setup, |_| {})
}

fn trusted_pair_with(
    seed: u64,
    setup: LinkConfig,
    configure: impl Fn(&mut pilot_proto::node::NodeConfig),
) -> (Scenario, HostId, HostId) {
    let mut s = Scenario::new(seed);
    let alice = s.add_node("alice", "198.51.100.10:4000", &configure);
    let bob = s.add_node("bob", "203.0.113.20:4000", &configure);
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(id, setup.clone());
    }
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    s.trust(alice, bob, MAX).unwrap_or_else(|e| panic!("{e}"));
    (s, alice, bob)
}

/// Deterministic bytes that a shifted or corrupted copy cannot match.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn hex(d: &[u8]) -> String {
    d.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[test]
fn small_stream_round_trip_through_echo() {
    let (mut s, alice, bob) = trusted_pair(31, link(Duration::from_millis(5)));
    let bob_addr = s.node(bob).address().unwrap();
    let id = s
        .world
        .with_host(alice, |h, now| {
            h.node_mut()
                .connect(now, SocketAddress::new(bob_addr, ports::ECHO))
        })
        .unwrap();
    s.world
        .run_until(
            |w| {
                w.events().iter().any(|(_, _, e)| {
                    matches!(
                        e,
                        HostEvent::Node(Event::Stream(StreamEvent::Connected { .. }))
                    )
                })
            },
            MAX,
        )
        .unwrap();
    let msg = b"ping over a stream";
    assert_eq!(
        s.world
            .with_host(alice, |h, now| h.node_mut().stream_write(now, id, msg))
            .unwrap(),
        msg.len()
    );
    s.world
        .with_host(alice, |h, now| h.node_mut().stream_shutdown(now, id));
    let mut back = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..10_000 {
        match s
            .world
            .with_host(alice, |h, now| h.node_mut().stream_read(now, id, &mut buf))
        {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(_) => {
                s.world.step();
            }
        }
    }
    assert_eq!(back, msg, "echo returned what we sent, then end of stream");
    snapshot("stream_echo", s.world.trace());
}

/// One 10 MiB transfer losing `loss_ppm` of the packets each way (data
/// and ACKs alike), with duplication and reordering; `latency` per link
/// (RTT = 4 × latency).
fn bulk(seed: u64, loss_ppm: u32, latency: Duration) -> String {
    // At 20 % loss smoltcp (no SACK, a 1 s RTO floor, exponential backoff)
    // can stall longer than the default 3 min of peer silence; this test is
    // about integrity, so the stream waits as long as it takes.
    let patient = |c: &mut pilot_proto::node::NodeConfig| {
        c.streams.user_timeout = Duration::from_secs(3600);
        c.streams.idle_timeout = Duration::from_secs(3600);
    };
    let (mut s, alice, bob) = trusted_pair_with(seed, link(latency), patient);
    let lossy = LinkConfig {
        latency,
        jitter: latency / 10,
        loss_ppm,
        duplicate_ppm: loss_ppm / 4,
        reorder_ppm: loss_ppm / 2,
        reorder_extra: latency,
        ..LinkConfig::default()
    };
    // Every packet between them crosses alice's link once, whichever way
    // it goes: loss there is the end-to-end loss in each direction.
    s.world.set_link(alice, lossy);
    s.world.set_link(bob, link(latency));
    s.world.set_tracing(false);
    let payload = data(10 << 20, seed);
    let (got, took) = s
        .transfer(alice, bob, 5000, &payload, Duration::from_secs(24 * 3600))
        .unwrap_or_else(|e| panic!("loss {loss_ppm} ppm, latency {latency:?}: {e}"));
    let want = Sha256::digest(&payload);
    let have = Sha256::digest(&got);
    assert_eq!(got.len(), payload.len(), "seed {seed}: length");
    assert_eq!(have, want, "seed {seed}: SHA-256 of what arrived");
    let world = s.world.stats();
    let a = s.node(alice).stats();
    format!(
        "loss {:>2}% rtt {:>3} ms: {} bytes in {:.3} s, sha256 {}, link dropped {} duplicated {}, alice sent {} datagrams\n",
        loss_ppm / 10_000,
        (latency * 4).as_millis(),
        got.len(),
        took.as_secs_f64(),
        &hex(&have)[..16],
        world.dropped.loss,
        world.duplicated,
        a.datagrams_out,
    )
}

#[test]
fn ten_mib_streams_arrive_intact_under_loss() {
    let mut report = String::new();
    for latency in [Duration::from_micros(250), Duration::from_millis(25)] {
        for loss in [0, 10_000, 50_000, 200_000] {
            report.push_str(&bulk(40, loss, latency));
        }
    }
    snapshot("stream_bulk_10mib", &report);
}

#[test]
fn revocation_mid_stream_closes_both_ends() {
    let (mut s, alice, bob) = trusted_pair(32, link(Duration::from_millis(5)));
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().listen(6000))
        .unwrap();
    let tx = s
        .world
        .with_host(alice, |h, now| {
            h.node_mut()
                .connect(now, SocketAddress::new(bob_addr, 6000))
        })
        .unwrap();
    let chunk = data(64 * 1024, 1);
    for _ in 0..20 {
        let _ = s
            .world
            .with_host(alice, |h, now| h.node_mut().stream_write(now, tx, &chunk));
        s.world.run_for(Duration::from_millis(20));
    }
    let rx = s
        .node_events()
        .find_map(|(_, h, e)| match e {
            Event::Stream(StreamEvent::Incoming { id, .. }) if h == bob => Some(*id),
            _ => None,
        })
        .expect("bob accepted the stream");
    s.world
        .note("bob revokes alice in the middle of the stream");
    let alice_addr = s.node(alice).address().unwrap();
    s.world
        .with_host(bob, |h, now| h.node_mut().untrust(now, alice_addr))
        .unwrap();
    s.world.run_for(Duration::from_secs(1));
    let closed = |host: HostId, id: StreamId| {
        s.node_events().any(|(_, h, e)| {
            h == host && matches!(e, Event::Stream(StreamEvent::Closed { id: i, reason: CloseReason::Aborted }) if *i == id)
        })
    };
    assert!(closed(bob, rx), "bob's end closed");
    assert!(closed(alice, tx), "alice's end closed");
    assert!(s
        .world
        .with_host(alice, |h, now| h.node_mut().stream_write(now, tx, b"more"))
        .is_err());
}

#[test]
fn untrusted_streams_never_connect() {
    let (mut s, _alice, bob) = trusted_pair(33, link(Duration::from_millis(5)));
    let bob_addr = s.node(bob).address().unwrap();
    let bob_key = s.node(bob).public_key();
    let bob_ep = s.world.addr(bob);
    let mallory = s.add_node("mallory", "203.0.113.66:4000", |c| {
        c.trust = TrustState {
            trusted: vec![Trusted {
                address: bob_addr,
                key: bob_key,
                hostname: None,
                since: 0,
            }],
            ..TrustState::default()
        };
    });
    s.run_until_registered(&[mallory], MAX).unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().listen(6000))
        .unwrap();
    let id = s
        .world
        .with_host(mallory, |h, now| {
            h.node_mut()
                .tunnels_mut()
                .set_endpoint(bob_key.x25519().unwrap(), bob_ep);
            h.node_mut()
                .connect(now, SocketAddress::new(bob_addr, 6000))
        })
        .unwrap();
    s.world.run_for(Duration::from_secs(30));
    assert!(s.node_events().any(|(_, h, e)| h == mallory
        && matches!(e, Event::Stream(StreamEvent::Closed { id: i, reason: CloseReason::TimedOut }) if *i == id)));
    assert!(!s
        .node_events()
        .any(|(_, h, e)| h == bob && matches!(e, Event::Stream(_))));
    assert!(s.node(bob).stats().dropped_not_allowed > 0);
}

/// Runs a client stream: writes `request`, collects replies until `done`
/// says it has what it waits for.
fn client(
    s: &mut Scenario,
    from: HostId,
    to: SocketAddress,
    request: &[u8],
    mut done: impl FnMut(&[u8]) -> bool,
) -> (StreamId, Vec<u8>) {
    let id = s
        .world
        .with_host(from, |h, now| h.node_mut().connect(now, to))
        .unwrap();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = s.world.now() + MAX;
    while s.world.now() < deadline {
        if sent < request.len() {
            sent += s
                .world
                .with_host(from, |h, now| {
                    h.node_mut().stream_write(now, id, &request[sent..])
                })
                .unwrap_or(0);
        }
        loop {
            match s
                .world
                .with_host(from, |h, now| h.node_mut().stream_read(now, id, &mut buf))
            {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(pilot_proto::node::CommandError::Stream(StreamError::WouldBlock)) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        if done(&got) {
            return (id, got);
        }
        if !s.world.step() {
            break;
        }
    }
    panic!("client did not get its answer; got {} bytes", got.len());
}

#[test]
fn data_exchange_delivers_messages_and_files_with_acks() {
    let (mut s, alice, bob) = trusted_pair(34, link(Duration::from_millis(5)));
    let bob_addr = s.node(bob).address().unwrap();
    let alice_addr = s.node(alice).address().unwrap();
    let mut sender = Sender::new();
    let mut req = Vec::new();
    let file = data(200_000, 7);
    let messages = [
        dataexchange::Message::Text("hello bob"),
        dataexchange::Message::Json(r#"{"task":"summarise","items":[1,2,3]}"#),
        dataexchange::Message::Binary(&[0, 1, 2, 255]),
        dataexchange::Message::File {
            name: "report.pdf",
            data: &file,
        },
    ];
    let ids: Vec<u32> = messages
        .iter()
        .map(|m| sender.send(m, &mut req).unwrap())
        .collect();
    // A hostile name cannot even be encoded by an honest sender; write the
    // frame by hand as a malicious one would.
    let evil_id = 999u32;
    let mut evil = vec![dataexchange::KIND_FILE];
    evil.extend_from_slice(&evil_id.to_be_bytes());
    evil.push(7);
    evil.extend_from_slice(b"../evil");
    evil.extend_from_slice(b"payload");
    pilot_proto::services::framing::write_frame(&mut req, &evil).unwrap();
    let (_, acks) = client(
        &mut s,
        alice,
        SocketAddress::new(bob_addr, ports::DATA_EXCHANGE),
        &req,
        |got| got.len() >= 5 * 10,
    );
    let mut reader = pilot_proto::services::framing::FrameReader::new(1 << 20);
    let mut rest: &[u8] = &acks;
    let mut statuses = Vec::new();
    while let Ok(Some(pilot_proto::services::framing::Item::Frame(f))) = reader.read(&mut rest) {
        if let Ok(dataexchange::Frame::Ack(a)) = dataexchange::Frame::decode(&f) {
            statuses.push((a.id, a.status));
        }
    }
    let mut want: Vec<(u32, Status)> = ids.iter().map(|i| (*i, Status::Ok)).collect();
    want.push((evil_id, Status::BadName));
    assert_eq!(statuses, want);
    let got: Vec<_> = s
        .node_events()
        .filter(|(_, h, _)| *h == bob)
        .filter_map(|(_, _, e)| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), 4, "the bad name delivered nothing");
    assert!(got.iter().all(|m| m.from == alice_addr));
    assert_eq!(
        (got[0].kind, got[0].payload.as_slice()),
        (Kind::Text, &b"hello bob"[..])
    );
    assert_eq!(got[1].kind, Kind::Json);
    assert_eq!(got[3].name.as_deref(), Some("report.pdf"));
    assert_eq!(Sha256::digest(&got[3].payload), Sha256::digest(&file));
}

#[test]
fn pub_sub_fans_out_to_subscribers_and_wildcards() {
    let mut s = Scenario::new(35);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    let carol = s.add_node("carol", "203.0.113.30:4000", |_| {});
    s.run_until_registered(&[alice, bob, carol], MAX).unwrap();
    s.trust(alice, bob, MAX).unwrap();
    s.trust(carol, bob, MAX).unwrap();
    let broker = SocketAddress::new(s.node(bob).address().unwrap(), ports::EVENT_STREAM);
    let subscribe = |pattern: &str| {
        let mut b = Vec::new();
        eventstream::encode_subscribe(&mut b, pattern).unwrap();
        b
    };
    let replies = |n: usize| {
        move |got: &[u8]| {
            let mut d = ClientDecoder::default();
            let _ = d.on_bytes(got);
            std::iter::from_fn(|| d.poll()).count() >= n
        }
    };
    let (a_id, _) = client(&mut s, alice, broker, &subscribe("tasks.new"), replies(1));
    let (c_id, _) = client(&mut s, carol, broker, &subscribe("tasks.*"), replies(1));
    let mut publish = Vec::new();
    eventstream::encode_publish(&mut publish, "tasks.new", b"summarise report.pdf").unwrap();
    eventstream::encode_publish(&mut publish, "tasks.done", b"translated").unwrap();
    eventstream::encode_publish(&mut publish, "other", b"nobody listens").unwrap();
    let _ = s.world.with_host(alice, |h, now| {
        h.node_mut().stream_write(now, a_id, &publish)
    });
    // Bob's own application publishes too.
    let _ = s.world.with_host(bob, |h, now| {
        h.node_mut().publish(now, "tasks.new", b"from bob")
    });
    s.world.run_for(Duration::from_secs(1));
    let events_on = |s: &mut Scenario, host: HostId, id: StreamId| {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = s
            .world
            .with_host(host, |h, now| h.node_mut().stream_read(now, id, &mut buf))
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        let mut d = ClientDecoder::default();
        let _ = d.on_bytes(&got);
        std::iter::from_fn(|| d.poll())
            .filter_map(|i| match i {
                Incoming::Event { topic, data } => Some((topic, String::from_utf8(data).unwrap())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let a = events_on(&mut s, alice, a_id);
    let c = events_on(&mut s, carol, c_id);
    // Bob's own publication and alice's race; each subscriber gets every
    // matching event exactly once.
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    let pair = |t: &str, d: &str| (t.to_string(), d.to_string());
    assert_eq!(
        sorted(a),
        vec![
            pair("tasks.new", "from bob"),
            pair("tasks.new", "summarise report.pdf")
        ]
    );
    assert_eq!(
        sorted(c),
        vec![
            pair("tasks.done", "translated"),
            pair("tasks.new", "from bob"),
            pair("tasks.new", "summarise report.pdf")
        ]
    );
}
