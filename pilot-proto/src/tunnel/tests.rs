use super::*;
use std::vec;

const A: &str = "192.0.2.1:1000";
const B: &str = "192.0.2.2:2000";

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tunnels(seed: u8, config: TunnelConfig) -> Tunnels {
    let secret = [seed; 32];
    Tunnels::new(config, secret, &[seed; 32], 1_700_000_000_000_000)
}

fn yes(_: &PeerKey, _: &[u8]) -> bool {
    true
}

/// Delivers every queued datagram between `a` (at A) and `b` (at B) until
/// both are quiet; returns what each side received.
fn shuttle(now: Timestamp, a: &mut Tunnels, b: &mut Tunnels) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            assert_eq!(t.destination, ep(B));
            if let Ok(Some(m)) =
                b.handle_datagram(now, SocketId::PRIMARY, ep(A), &t.payload, &mut yes)
            {
                got_b.push(m.plaintext);
            }
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            if let Ok(Some(m)) =
                a.handle_datagram(now, SocketId::PRIMARY, ep(B), &t.payload, &mut yes)
            {
                got_a.push(m.plaintext);
            }
        }
        if !moved {
            break;
        }
    }
    (got_a, got_b)
}

fn pair() -> (Tunnels, Tunnels) {
    let mut a = tunnels(1, TunnelConfig::default());
    let b = tunnels(2, TunnelConfig::default());
    a.set_endpoint(*b.public_key(), ep(B));
    (a, b)
}

#[test]
fn handshake_then_data_both_ways() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.send(now, &bk, b"first").unwrap();
    let (got_a, got_b) = shuttle(now, &mut a, &mut b);
    assert!(got_a.is_empty());
    assert_eq!(got_b, vec![b"first".to_vec()]);
    assert!(matches!(
        a.poll_event(),
        Some(TunnelEvent::Established { .. })
    ));
    assert!(matches!(
        b.poll_event(),
        Some(TunnelEvent::Established { .. })
    ));
    let ak = *a.public_key();
    assert_eq!(b.endpoint(&ak), Some(ep(A)));
    b.send(now, &ak, b"reply").unwrap();
    let (got_a, _) = shuttle(now, &mut a, &mut b);
    assert_eq!(got_a, vec![b"reply".to_vec()]);
    assert_eq!(a.handshake_hash(&bk, now), b.handshake_hash(&ak, now));
    assert!(a.handshake_hash(&bk, now).is_some());
}

#[test]
fn replayed_initiation_allocates_nothing() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.connect(now, &bk);
    let init = a.poll_transmit().unwrap();
    b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut yes)
        .unwrap();
    let resp = b.poll_transmit().unwrap();
    let indices = b.indices.len();
    assert_eq!(
        b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut yes),
        Err(DropReason::Replay)
    );
    assert_eq!(b.indices.len(), indices);
    assert!(b.poll_transmit().is_none(), "no response to a replay");
    a.handle_datagram(now, SocketId::PRIMARY, ep(B), &resp.payload, &mut yes)
        .unwrap();
}

#[test]
fn policy_refuses_unknown_peers_without_state() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    a.connect(now, &b.public_key().clone());
    let init = a.poll_transmit().unwrap();
    let r = b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut |_, _| {
        false
    });
    assert_eq!(r, Err(DropReason::NotAllowed));
    assert!(b.peers.is_empty() && b.indices.is_empty());
    assert!(b.poll_transmit().is_none());
}

#[test]
fn cookie_under_load_then_handshake_completes() {
    let config = TunnelConfig {
        load_threshold: 0,
        ..TunnelConfig::default()
    };
    let mut a = tunnels(1, TunnelConfig::default());
    let mut b = tunnels(2, config);
    let bk = *b.public_key();
    a.set_endpoint(bk, ep(B));
    let now = Timestamp::from_secs(1);
    a.send(now, &bk, b"hi").unwrap();
    let init = a.poll_transmit().unwrap();
    assert_eq!(
        b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut yes),
        Err(DropReason::RateLimited)
    );
    assert!(b.peers.is_empty(), "no state for an unproven source");
    let cookie = b.poll_transmit().unwrap();
    assert_eq!(cookie.destination, ep(A));
    a.handle_datagram(now, SocketId::PRIMARY, ep(B), &cookie.payload, &mut yes)
        .unwrap();
    // The retry carries mac2 and goes through.
    let later = now + Duration::from_secs(6);
    a.handle_timeout(later);
    let (_, got_b) = shuttle(later, &mut a, &mut b);
    assert_eq!(got_b, vec![b"hi".to_vec()]);
    assert_eq!(b.stats().cookie_replies, 1);
}

#[test]
fn forged_response_keeps_the_real_handshake() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.send(now, &bk, b"x").unwrap();
    let init = a.poll_transmit().unwrap();
    b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut yes)
        .unwrap();
    let resp = b.poll_transmit().unwrap();
    let mut forged = resp.payload.clone();
    forged[20] ^= 0x55;
    // mac1 no longer matches, so this is dropped before any DH.
    assert_eq!(
        a.handle_datagram(now, SocketId::PRIMARY, ep(B), &forged, &mut yes),
        Err(DropReason::BadMac)
    );
    a.handle_datagram(now, SocketId::PRIMARY, ep(B), &resp.payload, &mut yes)
        .unwrap();
    assert!(a.has_session(&bk, now));
}

#[test]
fn tampered_and_replayed_transport_dropped_session_survives() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.send(now, &bk, b"one").unwrap();
    shuttle(now, &mut a, &mut b);
    a.send(now, &bk, b"two").unwrap();
    let pkt = a.poll_transmit().unwrap().payload;
    let mut bad = pkt.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        b.handle_datagram(now, SocketId::PRIMARY, ep(A), &bad, &mut yes),
        Err(DropReason::AuthFailed)
    );
    let ok = b
        .handle_datagram(now, SocketId::PRIMARY, ep(A), &pkt, &mut yes)
        .unwrap()
        .unwrap();
    assert_eq!(ok.plaintext, b"two");
    assert_eq!(
        b.handle_datagram(now, SocketId::PRIMARY, ep(A), &pkt, &mut yes),
        Err(DropReason::Replay)
    );
    assert_eq!(
        b.stats().dropped_auth,
        0,
        "the tunnel returns drops; owners count them"
    );
}

#[test]
fn an_authenticated_packet_from_a_new_address_starts_validation_only() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    let ak = *a.public_key();
    a.send(now, &bk, b"one").unwrap();
    shuttle(now, &mut a, &mut b);
    a.send(now, &bk, b"moved").unwrap();
    let pkt = a.poll_transmit().unwrap().payload;
    let new_addr = ep("198.51.100.9:3333");
    b.handle_datagram(now, SocketId::PRIMARY, new_addr, &pkt, &mut yes)
        .unwrap();
    // A replayed or forwarded packet must not redirect b's traffic: the
    // path stays until the new address answers a challenge.
    assert_eq!(b.endpoint(&ak), Some(ep(A)));
    b.handle_timeout(now);
    let challenge = b.poll_transmit().unwrap();
    assert_eq!(challenge.destination, new_addr);
    // a answers on the path the challenge came on.
    a.handle_datagram(now, SocketId::PRIMARY, ep(B), &challenge.payload, &mut yes)
        .unwrap();
    let response = a.poll_transmit().unwrap();
    assert_eq!(response.destination, ep(B));
    let later = now + Duration::from_millis(10);
    b.handle_datagram(
        later,
        SocketId::PRIMARY,
        new_addr,
        &response.payload,
        &mut yes,
    )
    .unwrap();
    let validated = b
        .paths(&ak)
        .into_iter()
        .find(|p| p.route == Route::direct(new_addr))
        .unwrap();
    assert_eq!(validated.state, PathState::Validated);
    assert_eq!(validated.rtt, Some(Duration::from_millis(10)));
}

#[test]
fn handshake_retries_then_gives_up() {
    let (mut a, _b) = pair();
    let mut now = Timestamp::from_secs(1);
    let bk = *_b.public_key();
    a.send(now, &bk, b"lost").unwrap();
    let mut sent = 0;
    loop {
        while a.poll_transmit().is_some() {
            sent += 1;
        }
        if let Some(TunnelEvent::HandshakeFailed { dropped, .. }) = a.poll_event() {
            assert_eq!(dropped, 1);
            break;
        }
        let (at, timer) = a.poll_timeout().unwrap();
        assert_eq!(timer, Timer::Handshake);
        assert!(at > now);
        now = at;
        a.handle_timeout(now);
    }
    // 90 s of attempts, one every 5 to 5.33 s.
    assert!((17..=19).contains(&sent), "sent {sent}");
    assert!(a.poll_timeout().is_none());
}

#[test]
fn rekey_after_time_keeps_old_session_for_receiving() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    let ak = *a.public_key();
    a.send(now, &bk, b"one").unwrap();
    shuttle(now, &mut a, &mut b);
    let old = a.handshake_hash(&bk, now).unwrap();
    let later = now + Duration::from_secs(121);
    // This send still uses the old session, and starts a rekey.
    a.send(later, &bk, b"two").unwrap();
    let (_, got_b) = shuttle(later, &mut a, &mut b);
    assert_eq!(got_b, vec![b"two".to_vec()]);
    let new = a.handshake_hash(&bk, later).unwrap();
    assert_ne!(old, new);
    assert_eq!(b.handshake_hash(&ak, later), Some(new));
}

#[test]
fn keepalive_answers_silence() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.send(now, &bk, b"one").unwrap();
    shuttle(now, &mut a, &mut b);
    // b's owner keeps a (else a would be forgotten after its probation).
    b.keep(a.public_key());
    // b received data and sent nothing since: it owes a keepalive.
    let (at, timer) = b.poll_timeout().unwrap();
    assert_eq!(timer, Timer::Keepalive);
    assert_eq!(at, now + Duration::from_secs(10));
    b.handle_timeout(at);
    let t = b.poll_transmit().unwrap();
    assert_eq!(
        a.handle_datagram(at, SocketId::PRIMARY, ep(B), &t.payload, &mut yes),
        Ok(None)
    );
}

#[test]
fn unanswered_data_starts_a_new_handshake() {
    let (mut a, mut b) = pair();
    let now = Timestamp::from_secs(1);
    let bk = *b.public_key();
    a.send(now, &bk, b"one").unwrap();
    shuttle(now, &mut a, &mut b);
    assert!(matches!(
        a.poll_event(),
        Some(TunnelEvent::Established { .. })
    ));
    // b restarts and forgets everything.
    let mut b = tunnels(2, TunnelConfig::default());
    let t = now + Duration::from_secs(1);
    a.send(t, &bk, b"into the void").unwrap();
    let pkt = a.poll_transmit().unwrap();
    assert_eq!(
        b.handle_datagram(t, SocketId::PRIMARY, ep(A), &pkt.payload, &mut yes),
        Err(DropReason::UnknownSession)
    );
    // The path's own liveness checks run first (a challenge, then the
    // path is given up); they do not change when the handshake restarts.
    let (mut at, mut timer) = a.poll_timeout().unwrap();
    while timer == Timer::Path {
        a.handle_timeout(at);
        while a.poll_transmit().is_some() {}
        (at, timer) = a.poll_timeout().unwrap();
    }
    // Unanswered since "one" (b never even sent its keepalive).
    assert_eq!(
        (at, timer),
        (now + Duration::from_secs(15), Timer::Handshake)
    );
    a.handle_timeout(at);
    a.send(at, &bk, b"again").unwrap();
    let (_, got_b) = shuttle(at, &mut a, &mut b);
    assert_eq!(got_b, vec![b"again".to_vec()]);
}

#[test]
fn message_count_rekeys_and_exhaustion_never_reuses_a_counter() {
    let config = TunnelConfig {
        limits: crate::session::SessionLimits {
            rekey_after_messages: 10,
            reject_after_messages: 12,
            ..Default::default()
        },
        ..TunnelConfig::default()
    };
    let mut a = tunnels(1, config);
    let mut b = tunnels(2, config);
    let bk = *b.public_key();
    a.set_endpoint(bk, ep(B));
    let now = Timestamp::from_secs(1);
    a.send(now, &bk, b"0").unwrap();
    shuttle(now, &mut a, &mut b);
    let first = a.handshake_hash(&bk, now).unwrap();
    // Skip to just below the rekey threshold: the next send rekeys.
    a.current_session_mut(&bk).unwrap().set_send_counter(9);
    a.send(now, &bk, b"1").unwrap();
    assert_eq!(
        a.stats().handshakes_sent,
        2,
        "count threshold started a rekey"
    );
    let (_, got_b) = shuttle(now, &mut a, &mut b);
    assert_eq!(got_b, vec![b"1".to_vec()]);
    assert_ne!(a.handshake_hash(&bk, now).unwrap(), first);
    // At the hard limit nothing is sealed: the message waits for a fresh
    // session instead of reusing a nonce.
    a.current_session_mut(&bk).unwrap().set_send_counter(12);
    a.send(now, &bk, b"2").unwrap();
    let (_, got_b) = shuttle(now, &mut a, &mut b);
    assert_eq!(got_b, vec![b"2".to_vec()]);
    assert_eq!(a.stats().handshakes_sent, 3);
}

/// Per-peer counters cover every datagram of a known exchange, byte for
/// byte: initiation (144 B without a payload), response (92 B), and
/// transport packets of 32 B plus the plaintext.
#[test]
fn peer_stats_count_an_exchange_exactly() {
    let (mut a, mut b) = pair();
    let t0 = Timestamp::from_secs(1);
    let (ak, bk) = (*a.public_key(), *b.public_key());
    assert_eq!(a.peer_stats(&bk, t0).unwrap().state, SessionState::None);
    assert!(b.peer_stats(&ak, t0).is_none());

    // Initiation at t0, answered 30 ms later; the first data confirms the
    // responder's session 20 ms after that.
    a.send(t0, &bk, b"first").unwrap();
    assert_eq!(
        a.peer_stats(&bk, t0).unwrap().state,
        SessionState::Handshaking
    );
    let init = a.poll_transmit().unwrap();
    assert_eq!(init.payload.len(), 144);
    let t1 = t0 + Duration::from_millis(30);
    b.handle_datagram(t1, SocketId::PRIMARY, ep(A), &init.payload, &mut yes)
        .unwrap();
    assert_eq!(
        b.peer_stats(&ak, t1).unwrap().state,
        SessionState::Handshaking
    );
    let resp = b.poll_transmit().unwrap();
    assert_eq!(resp.payload.len(), 92);
    let t2 = t1 + Duration::from_millis(30);
    a.handle_datagram(t2, SocketId::PRIMARY, ep(B), &resp.payload, &mut yes)
        .unwrap();
    let data = a.poll_transmit().unwrap();
    assert_eq!(data.payload.len(), 32 + 5);
    let t3 = t2 + Duration::from_millis(20);
    b.handle_datagram(t3, SocketId::PRIMARY, ep(A), &data.payload, &mut yes)
        .unwrap();
    b.send(t3, &ak, b"reply!").unwrap();
    let reply = b.poll_transmit().unwrap();
    a.handle_datagram(t3, SocketId::PRIMARY, ep(B), &reply.payload, &mut yes)
        .unwrap();
    // A forged datagram counts against no peer.
    let mut forged = reply.payload.clone();
    forged[20] ^= 1;
    assert!(a
        .handle_datagram(t3, SocketId::PRIMARY, ep(B), &forged, &mut yes)
        .is_err());

    let sa = a.peer_stats(&bk, t3).unwrap();
    assert_eq!(
        sa,
        PeerStats {
            route: Some(Route::direct(ep(B))),
            path_rtt: Some(Duration::from_millis(60)),
            probes_sent: 0,
            spray_hit: None,
            endpoint: Some(ep(B)),
            state: SessionState::Established,
            rtt: Some(Duration::from_millis(60)),
            last_handshake: Some(t2),
            last_heard: Some(t3),
            packets_in: 2,
            bytes_in: 92 + 38,
            packets_out: 2,
            bytes_out: 144 + 37,
        }
    );
    let sb = b.peer_stats(&ak, t3).unwrap();
    assert_eq!(
        sb,
        PeerStats {
            route: Some(Route::direct(ep(A))),
            path_rtt: Some(Duration::from_millis(50)),
            probes_sent: 0,
            spray_hit: None,
            endpoint: Some(ep(A)),
            state: SessionState::Established,
            rtt: Some(Duration::from_millis(50)),
            last_handshake: Some(t3),
            last_heard: Some(t3),
            packets_in: 2,
            bytes_in: 144 + 37,
            packets_out: 2,
            bytes_out: 92 + 38,
        }
    );
    // A keepalive is traffic too.
    a.send(t3, &bk, &[]).unwrap();
    assert_eq!(a.poll_transmit().unwrap().payload.len(), 32);
    let sa = a.peer_stats(&bk, t3).unwrap();
    assert_eq!((sa.packets_out, sa.bytes_out), (3, 144 + 37 + 32));
}

fn initiator(seed: u8, b: &Tunnels) -> Tunnels {
    let mut a = tunnels(seed, TunnelConfig::default());
    a.set_endpoint(*b.public_key(), ep(B));
    a
}

#[test]
fn peers_nothing_keeps_are_forgotten_after_probation() {
    let mut b = tunnels(2, TunnelConfig::default());
    let bk = *b.public_key();
    let now = Timestamp::from_secs(1);
    let mut a = initiator(1, &b);
    let mut c = initiator(3, &b);
    for x in [&mut a, &mut c] {
        x.send(now, &bk, b"hello").unwrap();
        let (_, got) = shuttle(now, x, &mut b);
        assert_eq!(got, vec![b"hello".to_vec()]);
    }
    assert_eq!(b.probation_size(), 2);
    // The owner keeps c (say, it registered); a is only a handshake.
    b.keep(c.public_key());
    while b.poll_event().is_some() {}
    let end = now + TunnelConfig::default().probation;
    assert_eq!(b.poll_timeout(), Some((end, Timer::Probation)));
    b.handle_timeout(end - Duration::from_micros(1));
    assert_eq!(b.state_size().0, 2);
    b.handle_timeout(end);
    assert_eq!(
        b.poll_event(),
        Some(TunnelEvent::Forgotten {
            peer: *a.public_key()
        })
    );
    assert_eq!(b.poll_event(), None);
    // Nothing of a is left: one peer, its one session index.
    assert_eq!(b.state_size(), (1, 1));
    assert!(b.has_session(c.public_key(), end));
    assert_eq!(b.stats().peers_forgotten, 1);
    // a comes back with a new handshake and is served again.
    let later = end + Duration::from_secs(1);
    a.remove_peer(&bk);
    a.set_endpoint(bk, ep(B));
    a.send(later, &bk, b"again").unwrap();
    let (_, got) = shuttle(later, &mut a, &mut b);
    assert_eq!(got, vec![b"again".to_vec()]);
}

#[test]
fn probation_is_bounded_and_the_oldest_go_first() {
    let config = TunnelConfig {
        max_probation: 3,
        ..TunnelConfig::default()
    };
    let mut b = tunnels(2, config);
    let bk = *b.public_key();
    let mut keys = Vec::new();
    for i in 0..5u8 {
        let now = Timestamp::from_secs(1) + Duration::from_millis(u64::from(i));
        let mut a = initiator(10 + i, &b);
        a.send(now, &bk, b"x").unwrap();
        shuttle(now, &mut a, &mut b);
        keys.push(*a.public_key());
        assert!(b.probation_size() <= 3);
        assert!(b.state_size().0 <= 3);
    }
    let forgotten: Vec<_> = std::iter::from_fn(|| b.poll_event())
        .filter_map(|e| match e {
            TunnelEvent::Forgotten { peer } => Some(peer),
            _ => None,
        })
        .collect();
    assert_eq!(forgotten, keys[..2].to_vec());
    for k in &keys[2..] {
        assert!(b.on_probation(k));
    }
}

/// Probation switched off by configuration (`max_probation: usize::MAX`,
/// as the flood bench does for its "defences off" case): no overflow.
#[test]
fn an_unbounded_probation_table_does_not_overflow() {
    let config = TunnelConfig {
        max_probation: usize::MAX,
        ..TunnelConfig::default()
    };
    let mut b = tunnels(2, config);
    let bk = *b.public_key();
    for i in 0..3u8 {
        let now = Timestamp::from_secs(1) + Duration::from_millis(u64::from(i));
        let mut a = initiator(10 + i, &b);
        a.send(now, &bk, b"x").unwrap();
        shuttle(now, &mut a, &mut b);
    }
    assert_eq!(b.probation_size(), 3);
}

#[test]
fn a_cookie_reply_makes_the_initiator_retry_at_once() {
    let config = TunnelConfig {
        load_threshold: 0,
        ..TunnelConfig::default()
    };
    let mut a = tunnels(1, TunnelConfig::default());
    let mut b = tunnels(2, config);
    let bk = *b.public_key();
    a.set_endpoint(bk, ep(B));
    let now = Timestamp::from_secs(1);
    a.send(now, &bk, b"hi").unwrap();
    let init = a.poll_transmit().unwrap();
    assert_eq!(
        b.handle_datagram(now, SocketId::PRIMARY, ep(A), &init.payload, &mut yes),
        Err(DropReason::RateLimited)
    );
    let cookie = b.poll_transmit().unwrap();
    a.handle_datagram(now, SocketId::PRIMARY, ep(B), &cookie.payload, &mut yes)
        .unwrap();
    // No waiting for the retransmission timer: the retry with mac2 is
    // already out, and it gets through.
    let (_, got_b) = shuttle(now, &mut a, &mut b);
    assert_eq!(got_b, vec![b"hi".to_vec()]);
    assert_eq!(a.stats().handshakes_sent, 2);

    // Only once per attempt: a second cookie reply (forged ones too)
    // waits for the timer.
    let mut c = tunnels(3, TunnelConfig::default());
    c.set_endpoint(bk, ep(B));
    let t = now + Duration::from_secs(1);
    c.send(t, &bk, b"x").unwrap();
    let init = c.poll_transmit().unwrap();
    let _ = b.handle_datagram(t, SocketId::PRIMARY, ep(A), &init.payload, &mut yes);
    let reply = b.poll_transmit().unwrap();
    c.handle_datagram(t, SocketId::PRIMARY, ep(B), &reply.payload, &mut yes)
        .unwrap();
    let retry = c.poll_transmit().unwrap();
    assert_eq!(c.stats().handshakes_sent, 2);
    // The retry seen from elsewhere (its cookie is not for that address)
    // gets a cookie reply bound to it; it moves nothing at once.
    let elsewhere = ep("192.0.2.9:9000");
    let _ = b.handle_datagram(t, SocketId::PRIMARY, elsewhere, &retry.payload, &mut yes);
    let reply = b.poll_transmit().unwrap();
    c.handle_datagram(t, SocketId::PRIMARY, ep(B), &reply.payload, &mut yes)
        .unwrap();
    assert!(c.poll_transmit().is_none());
    assert_eq!(c.stats().handshakes_sent, 2);
}
