use super::*;
use std::vec;

fn samples() -> Vec<Message<'static>> {
    let rv = Identity::from_seed(&[1; 32]);
    let agent = Identity::from_seed(&[2; 32]);
    let addr = Address::new(0, 0x2A);
    let cert = Certificate::issue(&rv, addr, agent.public(), 1_800_000_000);
    let request = crate::trust::TrustRequest::new(
        &agent,
        addr,
        Query::Address(Address::new(0, 0x2B)),
        99,
        "hello",
    );
    let approval = crate::trust::TrustApproval::new(&rv, Address::new(0, 0x2B), &request);
    vec![
        Message::Register(Register::new(
            &agent,
            &[7; 32],
            9,
            true,
            Hostname::new("alice").ok(),
            &["192.168.1.20:4000".parse().unwrap()],
        )),
        Message::Register(Register::new(&agent, &[7; 32], 10, false, None, &[])),
        Message::Punch {
            peer: Address::new(0, 0x2B),
        },
        Message::PunchGo {
            peer: Address::new(0, 0x2B),
            delay_ms: 40,
            endpoints: vec![
                "203.0.113.5:40000".parse().unwrap(),
                "10.0.0.2:4000".parse().unwrap(),
            ],
            nat: crate::nat::NatInfo::default(),
        },
        Message::PunchGo {
            peer: Address::new(0, 0x2B),
            delay_ms: 0,
            endpoints: vec!["203.0.113.5:40000".parse().unwrap()],
            nat: crate::nat::NatInfo {
                kind: crate::nat::NatKind::Sequential { stride: 2 },
                last_port: 40002,
            },
        },
        Message::ReflectPort { port: 4001 },
        Message::NatInfo {
            req: 12,
            info: crate::nat::NatInfo {
                kind: crate::nat::NatKind::Random,
                last_port: 1234,
            },
        },
        Message::Resolve {
            req: 3,
            query: Query::Address(addr),
        },
        Message::Resolve {
            req: 4,
            query: Query::Hostname(Hostname::new("bob").unwrap()),
        },
        Message::Data(b"\x60packet"),
        Message::Registered(Registered {
            req: 9,
            address: addr,
            observed: "203.0.113.5:40000".parse().unwrap(),
            refresh_secs: 25,
            ttl_secs: 90,
            cert,
        }),
        Message::Resolved(Resolved {
            req: 4,
            address: addr,
            key: agent.public(),
            public: true,
            online: true,
            hostname: Hostname::new("bob").ok(),
            endpoints: vec![
                "203.0.113.5:40000".parse().unwrap(),
                "[2001:db8::5]:4000".parse().unwrap(),
            ],
        }),
        Message::TrustRequest {
            req: 5,
            request: request.clone(),
        },
        Message::TrustApprove {
            req: 6,
            approval: approval.clone(),
        },
        Message::TrustReject {
            req: 7,
            requester: addr,
            issued_at: 99,
            reason: "no thanks".into(),
        },
        Message::TrustRevoke { req: 8, peer: addr },
        Message::Revoke,
        Message::Bye,
        Message::TrustRequested {
            id: 1,
            request,
            hostname: Hostname::new("alice").ok(),
        },
        Message::Ack { req: 9 },
        Message::TrustApproved {
            id: 2,
            approval: approval.clone(),
            hostname: None,
            endpoint: None,
        },
        Message::TrustApproved {
            id: 3,
            approval,
            hostname: Hostname::new("bob").ok(),
            endpoint: Some("[2001:db8::7]:4000".parse().unwrap()),
        },
        Message::TrustRejected {
            id: 3,
            rejecter: addr,
            issued_at: 99,
            reason: String::new(),
        },
        Message::TrustRevoked { id: 4, peer: addr },
        Message::Error {
            req: 4,
            code: ErrorCode::HostnameTaken,
            message: "hostname `bob` belongs to another identity".into(),
        },
    ]
}

#[test]
fn every_message_round_trips_and_truncations_fail() {
    for m in samples() {
        let bytes = m.to_vec();
        assert_eq!(Message::decode(&bytes).as_ref(), Ok(&m));
        if matches!(m, Message::Data(_) | Message::Revoke | Message::Bye) {
            continue;
        }
        // PunchGo's nat info is optional: without it the message is whole,
        // and a byte after the endpoints starts a (truncated) nat info.
        let optional = match &m {
            Message::PunchGo { nat, .. } if *nat != crate::nat::NatInfo::default() => {
                Some(bytes.len() - crate::nat::NAT_INFO_LEN)
            }
            _ => None,
        };
        for cut in 0..bytes.len() {
            if Some(cut) == optional {
                continue;
            }
            assert!(
                Message::decode(&bytes[..cut]).is_err(),
                "{m:?} cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        if matches!(m, Message::PunchGo { .. }) && optional.is_none() {
            assert!(Message::decode(&long).is_err());
        } else {
            assert_eq!(Message::decode(&long), Err(DecodeError::TrailingBytes));
        }
    }
}

#[test]
fn register_signature_binds_session_and_fields() {
    let agent = Identity::from_seed(&[2; 32]);
    let r = Register::new(&agent, &[7; 32], 9, false, Hostname::new("alice").ok(), &[]);
    assert!(r.verify(&[7; 32]));
    assert!(!r.verify(&[8; 32]), "replayed into another session");
    let mut changed = r.clone();
    changed.public = true;
    assert!(!changed.verify(&[7; 32]));
}

#[test]
fn certificate_checks_issuer_and_expiry() {
    let rv = Identity::from_seed(&[1; 32]);
    let other = Identity::from_seed(&[3; 32]);
    let cert = Certificate::issue(&rv, Address::new(0, 0x10), other.public(), 100);
    assert!(cert.verify(&rv.public(), 100));
    assert!(!cert.verify(&rv.public(), 101));
    assert!(!cert.verify(&other.public(), 50));
    let mut forged = cert.clone();
    forged.address = Address::new(0, 0x11);
    assert!(!forged.verify(&rv.public(), 50));
}

#[test]
fn unknown_kinds_and_bad_fields_are_typed_errors() {
    assert_eq!(Message::decode(&[]), Err(DecodeError::Truncated("kind")));
    assert_eq!(
        Message::decode(&[0x55]),
        Err(DecodeError::UnknownKind(0x55))
    );
    assert_eq!(
        Message::decode(&[KIND_RESOLVE, 0, 0, 0, 1, 9]),
        Err(DecodeError::BadValue("query kind"))
    );
    let bad_host = [KIND_RESOLVE, 0, 0, 0, 1, 2, 3, b'B', b'A', b'D'];
    assert_eq!(
        Message::decode(&bad_host),
        Err(DecodeError::BadValue("hostname"))
    );
}

#[test]
fn a_reflect_port_of_zero_is_malformed() {
    assert_eq!(
        Message::decode(&[KIND_REFLECT_PORT, 0, 0]),
        Err(DecodeError::BadValue("port"))
    );
    assert_eq!(
        Message::decode(&[KIND_REFLECT_PORT, 0x0F, 0xA1]),
        Ok(Message::ReflectPort { port: 4001 })
    );
}
