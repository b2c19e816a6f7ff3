//! Replays the committed fuzz corpora of the built-in services, plus
//! deterministic pseudo-random and mutated inputs, through the same checks
//! as the fuzz targets `dataexchange_decode` and `eventstream_decode`, so
//! that `cargo test` on stable guards what the fuzzers found.
//!
//! Each `check_*` mirrors its fuzz target in `fuzz/fuzz_targets/`; keep the
//! two in step. Each check must hold for any input, valid or not.

mod common;

use common::{corpus, Rng};
use pilot_proto::services::dataexchange::{self, Ack, Message, Status};
use pilot_proto::services::eventstream::{self};

#[path = "../../fuzz/fuzz_targets/shared/dataexchange.rs"]
mod dx;
#[path = "../../fuzz/fuzz_targets/shared/eventstream.rs"]
mod es;

use dx::{check_dataexchange, receive};
use es::{broker, check_eventstream};

/// Pseudo-random inputs generated per target, on top of the corpus.
const GENERATED: usize = 4_000;

/// The edits that find bugs in framed streams: bit flips, a clobbered
/// byte, truncation, appended garbage, a spliced-in length prefix.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    match rng.below(6) {
        0 => {}
        1 | 2 => {
            for _ in 0..=rng.below(3) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
        }
        3 if !input.is_empty() => {
            let at = rng.below(input.len());
            input[at] = rng.next() as u8;
        }
        4 => input.truncate(rng.below(input.len() + 1)),
        _ => {
            let at = rng.below(input.len() + 1);
            let len = (rng.next() as u32 >> rng.below(32)).to_be_bytes();
            input.splice(at..at, len);
        }
    }
}

const JSON_CHARS: &[char] = &[
    '{', '}', '[', ']', ',', ':', '"', '"', '\\', 'u', 'e', 'E', '.', '-', '+', '0', '1', '9', 't',
    'r', 'n', 'l', 'f', 'a', 's', ' ', '\n',
];

const NAME_CHARS: &[char] = &[
    'a', 'b', 'z', 'A', '0', '.', '.', '/', '\\', ' ', ':', '*', '-', '_', 'c', 'o', 'n', 'é', '\0',
];

/// A few valid JSON texts to mutate, since random text rarely parses.
const JSON_SEEDS: &[&str] = &[
    r#"{"a":[1,2.5e-3,true,false,null],"b":{"c":"d\u00e9\n"}}"#,
    "[[[[]]],{}]",
    "-0.5E+10",
    r#""\"\\\/\b\f\n\r\t""#,
];

/// A stream of valid message frames with random content and ids.
fn random_messages(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(4) {
        let id = rng.below(6) as u32;
        let max_len = if rng.below(4) == 0 { 400 } else { 40 };
        let data = rng.bytes(max_len);
        let text = rng.text(JSON_CHARS, 30);
        let name = rng.text(NAME_CHARS, 12);
        let message = match rng.below(5) {
            0 => Message::Text(&text),
            1 => Message::Json(JSON_SEEDS[rng.below(JSON_SEEDS.len())]),
            2 => Message::Binary(&data),
            _ => Message::File {
                name: &name,
                data: &data,
            },
        };
        // Unchecked encoding, so bad names reach the receiver too.
        let _ = dataexchange::Frame::Message { id, message }.encode(&mut out);
    }
    if rng.below(4) == 0 {
        let status = Status::from_u8(rng.below(9) as u8);
        dataexchange::encode_ack(&mut out, Ack { id: 1, status });
    }
    out
}

#[test]
fn dataexchange_decode() {
    let seeds = corpus("dataexchange_decode");
    for input in &seeds {
        check_dataexchange(input);
    }
    let mut rng = Rng(0xDA7A_0000_0000_1001);
    let mut accepted = 0;
    for i in 0..GENERATED {
        let mut input = match i % 6 {
            0 => rng.pick(&seeds).clone(),
            1 => rng.text(JSON_CHARS, 40).into_bytes(),
            2 => {
                let mut json = JSON_SEEDS[rng.below(JSON_SEEDS.len())].as_bytes().to_vec();
                mutate(&mut rng, &mut json);
                json
            }
            3 => rng.text(NAME_CHARS, 16).into_bytes(),
            _ => random_messages(&mut rng),
        };
        if i % 6 > 3 {
            mutate(&mut rng, &mut input);
        }
        accepted += receive(&input, input.len().max(1)).0.len();
        check_dataexchange(&input);
    }
    for _ in 0..GENERATED / 10 {
        check_dataexchange(&rng.bytes(600));
    }
    // The generator must reach the accepting path, or the invariants on
    // received messages test nothing.
    assert!(
        accepted > 500,
        "only {accepted} generated messages accepted"
    );
}

const TOPIC_CHARS: &[char] = &['a', 'b', 'x', 'y', '.', '.', '*', '*', '-', '_', ' ', '0'];

/// A stream of client requests (and now and then a broker frame) with
/// random topics and patterns, valid or not.
fn random_requests(rng: &mut Rng) -> Vec<u8> {
    use eventstream::{Code, Frame, Op};
    let mut out = Vec::new();
    for _ in 0..=rng.below(6) {
        let text = rng.text(TOPIC_CHARS, 10);
        let max_len = if rng.below(5) == 0 { 200 } else { 20 };
        let data = rng.bytes(max_len);
        let frame = match rng.below(9) {
            0..=2 => Frame::Subscribe { pattern: &text },
            3 => Frame::Unsubscribe { pattern: &text },
            4..=6 => Frame::Publish {
                topic: &text,
                data: &data,
            },
            7 => Frame::Event {
                topic: &text,
                data: &data,
            },
            _ => Frame::Reply {
                op: Op::Subscribe,
                code: Code::from_u8(rng.below(6) as u8),
                subject: &text,
            },
        };
        let _ = frame.encode(&mut out);
    }
    out
}

#[test]
fn eventstream_decode() {
    let seeds = corpus("eventstream_decode");
    for input in &seeds {
        check_eventstream(input);
    }
    let mut rng = Rng(0xE7E7_0000_0000_1002);
    let (mut delivered, mut subscribed) = (0, 0);
    for i in 0..GENERATED {
        let mut input = match i % 5 {
            0 => rng.pick(&seeds).clone(),
            1 => rng.text(TOPIC_CHARS, 12).into_bytes(),
            _ => random_requests(&mut rng),
        };
        if i % 5 != 1 {
            mutate(&mut rng, &mut input);
        }
        let (out, _, subs) = broker(&input, input.len().max(1));
        delivered += out.get(&2).map_or(0, |b| b.len());
        subscribed += subs.saturating_sub(2);
        check_eventstream(&input);
    }
    for _ in 0..GENERATED / 10 {
        check_eventstream(&rng.bytes(300));
    }
    assert!(
        delivered > 10_000,
        "only {delivered} event bytes fanned out"
    );
    assert!(subscribed > 100, "only {subscribed} subscriptions survived");
}
