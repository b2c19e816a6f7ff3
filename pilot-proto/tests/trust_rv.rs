//! The rendezvous's trust checks, driven by raw agents that can say
//! anything a compromised or buggy client might: forged signatures,
//! requests in someone else's name, replays.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use pilot_proto::addr::{Address, Hostname};
use pilot_proto::msg::{ErrorCode, Message, Query, Register};
use pilot_proto::rendezvous::{Change, Record, Rendezvous, RendezvousConfig, TrustPair};
use pilot_proto::trust::{TrustApproval, TrustRequest};
use pilot_proto::tunnel::{TunnelConfig, Tunnels};
use pilot_proto::{Identity, PublicKey, Timestamp};

const WALL: u64 = 1_800_000_000_000_000;
const RV_ADDR: &str = "192.0.2.1:9000";

struct Raw {
    id: Identity,
    at: SocketAddr,
    tunnels: Tunnels,
    address: Address,
    inbox: Vec<Message<'static>>,
}

struct World {
    rv: Rendezvous,
    agents: Vec<Raw>,
    now: Timestamp,
}

impl World {
    fn new() -> Self {
        let mut cfg = RendezvousConfig::new(Identity::from_seed(&[1; 32]));
        cfg.wall_origin_micros = WALL;
        World {
            rv: Rendezvous::new(cfg, &[2; 32], Timestamp::ZERO),
            agents: Vec::new(),
            now: Timestamp::from_secs(1),
        }
    }

    fn rv_x(&self) -> [u8; 32] {
        self.rv.public_key().x25519().unwrap()
    }

    /// Moves packets until quiet; decodes what agents receive.
    fn pump(&mut self) {
        let rv_at: SocketAddr = RV_ADDR.parse().unwrap();
        for _ in 0..50 {
            let mut moved = false;
            for a in self.agents.iter_mut() {
                while let Some(t) = a.tunnels.poll_transmit() {
                    moved = true;
                    self.rv.handle_datagram(
                        self.now,
                        pilot_proto::SocketId::PRIMARY,
                        a.at,
                        &t.payload,
                    );
                }
            }
            while let Some(t) = self.rv.poll_transmit() {
                moved = true;
                let a = self
                    .agents
                    .iter_mut()
                    .find(|a| a.at == t.destination)
                    .unwrap();
                if let Ok(Some(m)) = a.tunnels.handle_datagram(
                    self.now,
                    pilot_proto::SocketId::PRIMARY,
                    rv_at,
                    &t.payload,
                    &mut |_, _| true,
                ) {
                    let msg = Message::decode(&m.plaintext).unwrap();
                    let owned: Message<'static> = match msg {
                        Message::Data(_) => continue,
                        other => leak_owned(other),
                    };
                    a.inbox.push(owned);
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn send(&mut self, i: usize, msg: Message<'_>) {
        let x = self.rv_x();
        let now = self.now;
        self.agents[i].tunnels.send(now, &x, &msg.to_vec()).unwrap();
        self.pump();
    }

    fn add(&mut self, seed: u8, at: &str) -> usize {
        self.add_named(seed, at, None, false)
    }

    /// An agent registered under `hostname`, public or private.
    fn add_named(&mut self, seed: u8, at: &str, hostname: Option<&str>, public: bool) -> usize {
        let id = Identity::from_seed(&[seed; 32]);
        let mut tunnels = Tunnels::new(
            TunnelConfig::default(),
            id.x25519_secret(),
            &[seed; 32],
            WALL,
        );
        tunnels.set_endpoint(self.rv_x(), RV_ADDR.parse().unwrap());
        self.agents.push(Raw {
            id,
            at: at.parse().unwrap(),
            tunnels,
            address: Address::UNSPECIFIED,
            inbox: Vec::new(),
        });
        let i = self.agents.len() - 1;
        let x = self.rv_x();
        let now = self.now;
        self.agents[i].tunnels.connect(now, &x);
        self.pump();
        let hash = self.agents[i].tunnels.handshake_hash(&x, now).unwrap();
        let hostname = hostname.map(|h| Hostname::new(h).unwrap());
        let reg = Register::new(&self.agents[i].id, &hash, 1, public, hostname, &[]);
        self.send(i, Message::Register(reg));
        let address = self.agents[i]
            .inbox
            .iter()
            .find_map(|m| match m {
                Message::Registered(r) => Some(r.address),
                _ => None,
            })
            .unwrap();
        self.agents[i].address = address;
        i
    }

    fn last_error(&self, i: usize, req: u32) -> Option<ErrorCode> {
        self.agents[i].inbox.iter().rev().find_map(|m| match m {
            Message::Error { req: r, code, .. } if *r == req => Some(*code),
            _ => None,
        })
    }

    fn acked(&self, i: usize, req: u32) -> bool {
        self.agents[i]
            .inbox
            .iter()
            .any(|m| matches!(m, Message::Ack { req: r } if *r == req))
    }
}

/// Messages decoded from a plaintext we own; only `Data` borrows, and it is
/// skipped above.
fn leak_owned(m: Message<'_>) -> Message<'static> {
    Message::decode(Box::leak(m.to_vec().into_boxed_slice())).unwrap()
}

#[test]
fn the_registry_refuses_forged_wrong_key_and_replayed_requests() {
    let mut w = World::new();
    let alice = w.add(10, "198.51.100.1:1000");
    let bob = w.add(11, "198.51.100.2:1000");
    let mallory = w.add(12, "198.51.100.3:1000");
    let (alice_addr, bob_addr) = (w.agents[alice].address, w.agents[bob].address);

    // Mallory asks bob in alice's name, signing with her own key.
    let alice_id = w.agents[alice].id.clone();
    let mallory_id = w.agents[mallory].id.clone();
    let mut in_alices_name =
        TrustRequest::new(&mallory_id, alice_addr, Query::Address(bob_addr), 5, "hi");
    in_alices_name.from_key = alice_id.public();
    w.send(
        mallory,
        Message::TrustRequest {
            req: 2,
            request: in_alices_name,
        },
    );
    assert_eq!(w.last_error(mallory, 2), Some(ErrorCode::BadSignature));

    // Alice's real request, submitted by mallory: not her session's key.
    let real = TrustRequest::new(
        &alice_id,
        alice_addr,
        Query::Address(bob_addr),
        WALL + 10,
        "hi",
    );
    w.send(
        mallory,
        Message::TrustRequest {
            req: 3,
            request: real.clone(),
        },
    );
    assert_eq!(w.last_error(mallory, 3), Some(ErrorCode::BadSignature));
    assert!(!w.agents[bob]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::TrustRequested { .. })));

    // Alice submits it: delivered to bob at once, acknowledged.
    w.send(
        alice,
        Message::TrustRequest {
            req: 4,
            request: real.clone(),
        },
    );
    assert!(w.acked(alice, 4));
    assert!(w.agents[bob]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::TrustRequested { request, .. } if *request == real)));

    // A forged approval: signed by mallory in bob's name.
    let bob_id = w.agents[bob].id.clone();
    let mut forged = TrustApproval::new(&mallory_id, bob_addr, &real);
    forged.approver_key = bob_id.public();
    w.send(
        mallory,
        Message::TrustApprove {
            req: 5,
            approval: forged,
        },
    );
    assert_eq!(w.last_error(mallory, 5), Some(ErrorCode::BadSignature));
    // Mallory approving for herself: there is no request to her.
    let hers = TrustApproval::new(&mallory_id, w.agents[mallory].address, &real);
    w.send(
        mallory,
        Message::TrustApprove {
            req: 6,
            approval: hers,
        },
    );
    assert_eq!(w.last_error(mallory, 6), Some(ErrorCode::NotFound));
    assert!(!w.rv.is_pair(alice_id.public(), mallory_id.public()));

    // Bob rejects; alice replays the very same signed request: refused.
    w.send(
        bob,
        Message::TrustReject {
            req: 7,
            requester: alice_addr,
            issued_at: real.issued_at,
            reason: "no".into(),
        },
    );
    assert!(w.agents[alice]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::TrustRejected { .. })));
    w.send(
        alice,
        Message::TrustRequest {
            req: 8,
            request: real.clone(),
        },
    );
    assert_eq!(w.last_error(alice, 8), Some(ErrorCode::BadRequest));

    // A fresh request and bob's approval make the pair, with both
    // signatures on record.
    let again = TrustRequest::new(
        &alice_id,
        alice_addr,
        Query::Address(bob_addr),
        WALL + 20,
        "please",
    );
    w.send(
        alice,
        Message::TrustRequest {
            req: 9,
            request: again.clone(),
        },
    );
    let approval = TrustApproval::new(&bob_id, bob_addr, &again);
    w.send(
        bob,
        Message::TrustApprove {
            req: 10,
            approval: approval.clone(),
        },
    );
    assert!(w.acked(bob, 10));
    assert!(w.rv.is_pair(alice_id.public(), bob_id.public()));
    let pair = w.rv.pairs().next().unwrap();
    assert_eq!((&pair.request, &pair.approval), (&again, &approval));
    assert!(w.agents[alice]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::TrustApproved { approval: a, .. } if *a == approval)));
}

/// What a driver's store would hold: the changes applied in order.
#[derive(Default, Debug, PartialEq)]
struct Store {
    records: BTreeMap<[u8; 32], (Address, Option<String>, bool)>,
    pairs: BTreeMap<([u8; 32], [u8; 32]), (TrustRequest, TrustApproval)>,
    pending: BTreeMap<([u8; 32], [u8; 32]), TrustRequest>,
    last: BTreeMap<[u8; 32], u64>,
}

impl Store {
    fn apply(&mut self, rv: &mut Rendezvous) -> usize {
        let mut n = 0;
        while let Some(c) = rv.poll_change() {
            n += 1;
            match c {
                Change::Record(r) => {
                    let h = r.hostname.map(|h| h.as_str().to_string());
                    self.records.insert(r.key.0, (r.address, h, r.public));
                }
                Change::Pair(p) => {
                    let (a, b) = (p.request.from_key.0, p.approval.approver_key.0);
                    let k = if a <= b { (a, b) } else { (b, a) };
                    self.pairs.insert(k, (p.request, p.approval));
                }
                Change::PairRemoved(a, b) => {
                    self.pairs.remove(&(a.0, b.0));
                }
                Change::Pending { target, request } => {
                    self.pending.insert((target.0, request.from_key.0), request);
                }
                Change::PendingRemoved { target, requester } => {
                    self.pending.remove(&(target.0, requester.0));
                }
                Change::LastRequest {
                    requester,
                    issued_at,
                } => {
                    self.last.insert(requester.0, issued_at);
                }
                other => panic!("unexpected change {other:?}"),
            }
        }
        n
    }

    /// What a rendezvous holds, read through its inspection API.
    fn of(rv: &Rendezvous) -> Store {
        let mut s = Store::default();
        for r in rv.records() {
            let h = r.hostname.as_ref().map(|h| h.as_str().to_string());
            s.records.insert(r.key.0, (r.address, h, r.public));
        }
        for p in rv.pairs() {
            let (a, b) = (p.request.from_key.0, p.approval.approver_key.0);
            let k = if a <= b { (a, b) } else { (b, a) };
            s.pairs.insert(k, (p.request.clone(), p.approval.clone()));
        }
        for (t, r) in rv.pending_requests() {
            s.pending.insert((t.0, r.from_key.0), r.clone());
        }
        for (k, v) in rv.last_requests() {
            s.last.insert(k.0, v);
        }
        s
    }

    fn restore_into(&self, rv: &mut Rendezvous) {
        for (key, (address, hostname, public)) in &self.records {
            rv.restore(Record {
                address: *address,
                key: PublicKey(*key),
                hostname: hostname.as_deref().map(|h| Hostname::new(h).unwrap()),
                public: *public,
                endpoint: None,
                expires: None,
            });
        }
        for (request, approval) in self.pairs.values() {
            assert!(rv.restore_pair(TrustPair {
                request: request.clone(),
                approval: approval.clone(),
            }));
        }
        for ((target, _), request) in &self.pending {
            assert!(rv.restore_pending(PublicKey(*target), request.clone()));
        }
        for (k, v) in &self.last {
            rv.restore_last_request(PublicKey(*k), *v);
        }
    }
}

#[test]
fn registry_state_survives_a_restart_through_its_changes() {
    let mut w = World::new();
    let alice = w.add(10, "198.51.100.1:1000");
    let bob = w.add(11, "198.51.100.2:1000");
    let carol = w.add(12, "198.51.100.3:1000");
    let mut store = Store::default();
    assert_eq!(store.apply(&mut w.rv), 3, "three new registrations");
    assert_eq!(w.rv.poll_change(), None);

    // Alice takes a hostname and goes public: one record change, however
    // often it is sent; a refresh that changes nothing changes nothing.
    let x = w.rv_x();
    let hash = w.agents[alice].tunnels.handshake_hash(&x, w.now).unwrap();
    let id = w.agents[alice].id.clone();
    for req in [2, 3] {
        let reg = Register::new(&id, &hash, req, true, Hostname::new("alice").ok(), &[]);
        w.send(alice, Message::Register(reg));
    }
    assert_eq!(store.apply(&mut w.rv), 1);
    let reg = Register::new(&id, &hash, 4, true, Hostname::new("alice").ok(), &[]);
    w.send(alice, Message::Register(reg));
    assert_eq!(store.apply(&mut w.rv), 0);

    // Alice and bob become a pair; carol's request to bob waits; a
    // revoked pair is removed.
    let (alice_addr, bob_addr) = (w.agents[alice].address, w.agents[bob].address);
    let (alice_id, bob_id) = (w.agents[alice].id.clone(), w.agents[bob].id.clone());
    let carol_id = w.agents[carol].id.clone();
    let carol_addr = w.agents[carol].address;
    let ask = TrustRequest::new(
        &alice_id,
        alice_addr,
        Query::Address(bob_addr),
        WALL + 1,
        "",
    );
    w.send(
        alice,
        Message::TrustRequest {
            req: 5,
            request: ask.clone(),
        },
    );
    let yes = TrustApproval::new(&bob_id, bob_addr, &ask);
    w.send(
        bob,
        Message::TrustApprove {
            req: 6,
            approval: yes,
        },
    );
    let to_carol = TrustRequest::new(
        &alice_id,
        alice_addr,
        Query::Address(carol_addr),
        WALL + 2,
        "",
    );
    w.send(
        alice,
        Message::TrustRequest {
            req: 7,
            request: to_carol.clone(),
        },
    );
    let yes = TrustApproval::new(&carol_id, carol_addr, &to_carol);
    w.send(
        carol,
        Message::TrustApprove {
            req: 8,
            approval: yes,
        },
    );
    assert!(w.rv.is_pair(alice_id.public(), carol_id.public()));
    w.send(
        carol,
        Message::TrustRevoke {
            req: 9,
            peer: alice_addr,
        },
    );
    let old = TrustRequest::new(
        &carol_id,
        carol_addr,
        Query::Address(bob_addr),
        WALL + 3,
        "",
    );
    let waits = TrustRequest::new(
        &carol_id,
        carol_addr,
        Query::Address(bob_addr),
        WALL + 4,
        "",
    );
    w.send(
        carol,
        Message::TrustRequest {
            req: 10,
            request: old.clone(),
        },
    );
    w.send(
        carol,
        Message::TrustRequest {
            req: 11,
            request: waits.clone(),
        },
    );
    store.apply(&mut w.rv);
    assert_eq!(store, Store::of(&w.rv), "the changes describe the state");
    assert_eq!(store.pairs.len(), 1);
    assert_eq!(store.pending.len(), 1);

    // A new rendezvous restored from the store holds the same state.
    let mut cfg = RendezvousConfig::new(Identity::from_seed(&[1; 32]));
    cfg.wall_origin_micros = WALL;
    w.rv = Rendezvous::new(cfg, &[3; 32], Timestamp::ZERO);
    store.restore_into(&mut w.rv);
    assert_eq!(Store::of(&w.rv), store);
    assert_eq!(w.rv.poll_change(), None, "restoring is not a change");
    assert_eq!(w.rv.online(), 0, "restored registrations are offline");

    // The agents come back (new sessions) with the same addresses; a new
    // agent gets a fresh one.
    w.agents.clear();
    let alice = w.add(10, "198.51.100.1:1000");
    let bob = w.add(11, "198.51.100.2:1000");
    let carol = w.add(12, "198.51.100.3:1000");
    let dave = w.add(13, "198.51.100.4:1000");
    assert_eq!(w.agents[alice].address, alice_addr);
    assert_eq!(w.agents[bob].address, bob_addr);
    assert_eq!(w.agents[carol].address, carol_addr);
    assert!(![alice_addr, bob_addr, carol_addr].contains(&w.agents[dave].address));

    // Replays stay refused, the waiting request can still be approved.
    w.send(
        carol,
        Message::TrustRequest {
            req: 12,
            request: old,
        },
    );
    assert_eq!(w.last_error(carol, 12), Some(ErrorCode::BadRequest));
    w.send(
        carol,
        Message::TrustRequest {
            req: 13,
            request: waits.clone(),
        },
    );
    assert!(
        w.acked(carol, 13),
        "a retransmission of the waiting request"
    );
    let yes = TrustApproval::new(&bob_id, bob_addr, &waits);
    w.send(
        bob,
        Message::TrustApprove {
            req: 14,
            approval: yes,
        },
    );
    assert!(w.acked(bob, 14));
    assert!(w.rv.is_pair(carol_id.public(), bob_id.public()));
    assert!(w.rv.is_pair(alice_id.public(), bob_id.public()));
}

/// Issue 10, item 8: by hostname, a private agent is as missing as a name
/// nobody holds (same code, same words), so that trust requests cannot
/// probe for private hostnames or reach them; by address they still do,
/// and a public agent is reached by hostname.
#[test]
fn a_private_hostname_is_as_missing_as_an_unknown_one_for_trust_requests() {
    let mut w = World::new();
    let asker = w.add(20, "198.51.100.20:1000");
    let hidden = w.add_named(21, "198.51.100.21:1000", Some("hidden"), false);
    let open = w.add_named(22, "198.51.100.22:1000", Some("open"), true);
    let asker_id = w.agents[asker].id.clone();
    let from = w.agents[asker].address;
    let mut issued = WALL;
    let mut ask = |w: &mut World, req: u32, to: Query| {
        issued += 1;
        let request = TrustRequest::new(&asker_id, from, to, issued, "hi");
        w.send(asker, Message::TrustRequest { req, request });
    };
    let error_text = |w: &World, req: u32| {
        w.agents[asker].inbox.iter().find_map(|m| match m {
            Message::Error {
                req: r,
                code,
                message,
            } if *r == req => Some((
                *code,
                message.replace("hidden", "NAME").replace("nobody", "NAME"),
            )),
            _ => None,
        })
    };
    let requested = |w: &World, i: usize| {
        w.agents[i]
            .inbox
            .iter()
            .any(|m| matches!(m, Message::TrustRequested { .. }))
    };

    ask(&mut w, 2, Query::Hostname(Hostname::new("hidden").unwrap()));
    ask(&mut w, 3, Query::Hostname(Hostname::new("nobody").unwrap()));
    let private = error_text(&w, 2).expect("refused");
    assert_eq!(private.0, ErrorCode::NotFound);
    assert_eq!(Some(private), error_text(&w, 3));
    assert!(!requested(&w, hidden));

    let hidden_addr = w.agents[hidden].address;
    ask(&mut w, 4, Query::Address(hidden_addr));
    assert!(w.acked(asker, 4));
    assert!(requested(&w, hidden));

    ask(&mut w, 5, Query::Hostname(Hostname::new("open").unwrap()));
    assert!(w.acked(asker, 5));
    assert!(requested(&w, open));
}
