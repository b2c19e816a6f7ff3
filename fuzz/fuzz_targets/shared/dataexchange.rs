//! The data exchange decoding checks, shared by the fuzz target
//! `dataexchange_decode` and `pilot-proto/tests/services_corpus.rs` (which
//! replays the corpus in every `cargo test`): one copy, so the two cannot
//! drift apart. Each check holds for any input, valid or not.
#![allow(dead_code)]

use pilot_proto::services::dataexchange::{
    self, safe_file_name, Ack, Budget, Kind, Message, Received, Receiver, ReceiverConfig, Sender,
    Status,
};
use pilot_proto::services::json;

pub const DE_CONFIG: ReceiverConfig = ReceiverConfig {
    max_message: 64,
    quota: Budget {
        bytes: 256,
        messages: 8,
    },
};

pub type DeOutcome = (Vec<Received>, Vec<u8>, Option<String>);

pub fn receive(data: &[u8], chunk: usize) -> DeOutcome {
    let mut rx = Receiver::new(DE_CONFIG);
    let (mut items, mut acks, mut error) = (Vec::new(), Vec::new(), None);
    for piece in data.chunks(chunk) {
        let result = rx.on_bytes(piece);
        while let Some(item) = rx.poll_received() {
            items.push(item);
        }
        while let Some(bytes) = rx.poll_transmit() {
            acks.extend(bytes);
        }
        if let Err(e) = result {
            error = Some(e.to_string());
            break;
        }
    }
    (items, acks, error)
}

pub fn check_dataexchange(data: &[u8]) {
    use dataexchange::Frame;
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out).expect("a decoded frame encodes");
        assert_eq!(&out[4..], data);
    }

    let whole = receive(data, data.len().max(1));
    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 7);
    assert_eq!(receive(data, step), whole);
    let (items, acks, _) = whole;
    let mut total = 0;
    for item in &items {
        assert!(item.payload.len() <= DE_CONFIG.max_message as usize);
        total += item.payload.len() as u64;
        match item.kind {
            Kind::Text => assert!(std::str::from_utf8(&item.payload).is_ok()),
            Kind::Json => {
                let text = std::str::from_utf8(&item.payload).expect("JSON is UTF-8");
                assert_eq!(json::validate(text), Ok(()));
            }
            _ => {}
        }
        match (&item.name, item.kind) {
            (Some(name), Kind::File) => assert!(safe_file_name(name).is_ok()),
            (None, Kind::File) => panic!("a file without a name"),
            (Some(_), _) => panic!("a name on a non-file"),
            (None, _) => {}
        }
    }
    assert!(total <= DE_CONFIG.quota.bytes && items.len() as u64 <= DE_CONFIG.quota.messages);
    // Acks parse as acks, one per message; the ok ones are exactly the
    // accepted ids.
    let mut ok_ids = Vec::new();
    let mut rest = &acks[..];
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        let Ok(Frame::Ack(Ack { id, status })) = Frame::decode(&rest[4..4 + len]) else {
            panic!("receiver wrote something other than an ack");
        };
        if status == Status::Ok {
            ok_ids.push(id);
        }
        rest = &rest[4 + len..];
    }
    assert_eq!(ok_ids, items.iter().map(|r| r.id).collect::<Vec<_>>());

    let mut sender = Sender::new();
    for id in 0..4 {
        let _ = sender.send_with_id(id, &Message::Text(""), &mut Vec::new());
    }
    if sender.on_bytes(data).is_ok() {
        while let Some(ack) = sender.poll_ack() {
            assert!(ack.id < 4);
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = json::validate(text);
        if let Ok(name) = safe_file_name(text) {
            assert!(!name.contains(['/', '\\', '\0']) && name != "." && name != "..");
        }
    }
}
