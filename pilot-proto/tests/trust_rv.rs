//! The rendezvous's trust checks, driven by raw agents that can say
//! anything a compromised or buggy client might: forged signatures,
//! requests in someone else's name, replays.

use std::net::SocketAddr;

use pilot_proto::addr::Address;
use pilot_proto::msg::{ErrorCode, Message, Query, Register};
use pilot_proto::rendezvous::{Rendezvous, RendezvousConfig};
use pilot_proto::trust::{TrustApproval, TrustRequest};
use pilot_proto::tunnel::{TunnelConfig, Tunnels};
use pilot_proto::{Identity, Timestamp};

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
                    self.rv.handle_datagram(self.now, a.at, &t.payload);
                }
            }
            while let Some(t) = self.rv.poll_transmit() {
                moved = true;
                let a = self
                    .agents
                    .iter_mut()
                    .find(|a| a.at == t.destination)
                    .unwrap();
                if let Ok(Some(m)) =
                    a.tunnels
                        .handle_datagram(self.now, rv_at, &t.payload, &mut |_, _| true)
                {
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
        let reg = Register::new(&self.agents[i].id, &hash, 1, false, None);
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
