//! Replays the public cacophony vectors for `Noise_IK_25519_ChaChaPoly_SHA256`
//! through `pilot_proto::noise`, byte for byte.
//!
//! The vector file is plain JSON of objects, arrays and strings; a tiny
//! reader below keeps the crate free of a JSON dev-dependency.

use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use pilot_proto::noise::{x25519_public, Initiator, Responder, Split, PROTOCOL_NAME};

const VECTORS: &str = "../testdata/noise/noise-ik-25519-chachapoly-sha256.json";

#[test]
fn cacophony_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(VECTORS);
    let text = std::fs::read_to_string(&path).expect("read vector file");
    let root = Json::parse(&text);
    let vectors = root.get("vectors").array();
    assert!(!vectors.is_empty());
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.get("protocol_name").str().as_bytes(), PROTOCOL_NAME);
        run_vector(i, &Vector::from_json(v));
    }
}

struct Vector {
    init_prologue: Vec<u8>,
    init_static: [u8; 32],
    init_ephemeral: [u8; 32],
    init_remote_static: [u8; 32],
    resp_prologue: Vec<u8>,
    resp_static: [u8; 32],
    resp_ephemeral: [u8; 32],
    handshake_hash: Vec<u8>,
    /// (payload, ciphertext) pairs, alternating initiator then responder.
    messages: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Vector {
    fn from_json(v: &Json) -> Self {
        let bytes = |name: &str| hex(v.get(name).str());
        let key = |name: &str| -> [u8; 32] { bytes(name).try_into().expect("32-byte key") };
        Vector {
            init_prologue: bytes("init_prologue"),
            init_static: key("init_static"),
            init_ephemeral: key("init_ephemeral"),
            init_remote_static: key("init_remote_static"),
            resp_prologue: bytes("resp_prologue"),
            resp_static: key("resp_static"),
            resp_ephemeral: key("resp_ephemeral"),
            handshake_hash: bytes("handshake_hash"),
            messages: v
                .get("messages")
                .array()
                .iter()
                .map(|m| (hex(m.get("payload").str()), hex(m.get("ciphertext").str())))
                .collect(),
        }
    }
}

fn run_vector(index: usize, v: &Vector) {
    assert_eq!(v.init_remote_static, x25519_public(&v.resp_static));
    assert!(v.messages.len() >= 2, "vector {index} lacks a handshake");

    let (payload1, cipher1) = &v.messages[0];
    let mut msg1 = Vec::new();
    let initiator = Initiator::start(
        &v.init_prologue,
        &v.init_static,
        &v.init_remote_static,
        &v.init_ephemeral,
        payload1,
        &mut msg1,
    )
    .expect("write message 1");
    assert_eq!(&msg1, cipher1, "vector {index} message 1");

    let mut got1 = Vec::new();
    let responder =
        Responder::read(&v.resp_prologue, &v.resp_static, &msg1, &mut got1).expect("read 1");
    assert_eq!(&got1, payload1);
    assert_eq!(responder.remote_static(), &x25519_public(&v.init_static));

    let (payload2, cipher2) = &v.messages[1];
    let mut msg2 = Vec::new();
    let resp_split = responder
        .reply(&v.resp_ephemeral, payload2, &mut msg2)
        .expect("write message 2");
    assert_eq!(&msg2, cipher2, "vector {index} message 2");

    let mut got2 = Vec::new();
    let init_split = initiator.finish(&msg2, &mut got2).expect("read 2");
    assert_eq!(&got2, payload2);

    assert_same_split(&init_split, &resp_split);
    assert_eq!(&init_split.handshake_hash[..], &v.handshake_hash[..]);
    check_transport(index, &init_split, &v.messages[2..]);
}

fn assert_same_split(a: &Split, b: &Split) {
    assert_eq!(a.initiator_to_responder, b.initiator_to_responder);
    assert_eq!(a.responder_to_initiator, b.responder_to_initiator);
    assert_eq!(a.handshake_hash, b.handshake_hash);
}

/// Transport messages alternate, initiator first; each direction counts its
/// own nonces from zero.
fn check_transport(index: usize, split: &Split, messages: &[(Vec<u8>, Vec<u8>)]) {
    assert!(
        !messages.is_empty(),
        "vector {index} has no transport messages"
    );
    let mut to_responder = Transport::new(&split.initiator_to_responder);
    let mut to_initiator = Transport::new(&split.responder_to_initiator);
    for (i, (payload, ciphertext)) in messages.iter().enumerate() {
        let (sender, receiver_key) = if i % 2 == 0 {
            (&mut to_responder, &split.initiator_to_responder)
        } else {
            (&mut to_initiator, &split.responder_to_initiator)
        };
        let nonce = sender.nonce;
        assert_eq!(
            &sender.seal(payload),
            ciphertext,
            "vector {index} transport {i}"
        );
        assert_eq!(&open(receiver_key, nonce, ciphertext), payload);
    }
}

struct Transport {
    cipher: ChaCha20Poly1305,
    nonce: u64,
}

impl Transport {
    fn new(key: &[u8; 32]) -> Self {
        Transport {
            cipher: ChaCha20Poly1305::new(key.into()),
            nonce: 0,
        }
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let out = self
            .cipher
            .encrypt(&nonce(self.nonce), plaintext)
            .expect("encrypt");
        self.nonce += 1;
        out
    }
}

fn open(key: &[u8; 32], counter: u64, ciphertext: &[u8]) -> Vec<u8> {
    ChaCha20Poly1305::new(key.into())
        .decrypt(&nonce(counter), ciphertext)
        .expect("decrypt")
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(bytes)
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    s.as_bytes()
        .chunks(2)
        .map(|pair| (nibble(pair[0]) << 4) | nibble(pair[1]))
        .collect()
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("bad hex digit {:?}", c as char),
    }
}

/// Just enough JSON for the vector files: numbers and literals are never
/// read, so they are skipped over.
#[derive(Debug)]
enum Json {
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    Str(String),
    Other,
}

impl Json {
    fn parse(text: &str) -> Json {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let value = p.value();
        p.skip_ws();
        assert_eq!(p.i, p.s.len(), "trailing data in JSON");
        value
    }

    fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(fields) => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("missing key {key}")),
            _ => panic!("not an object looking up {key}"),
        }
    }

    fn array(&self) -> &[Json] {
        match self {
            Json::Array(items) => items,
            _ => panic!("not an array"),
        }
    }

    fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> u8 {
        self.skip_ws();
        *self.s.get(self.i).expect("unexpected end of JSON")
    }

    fn expect(&mut self, c: u8) {
        assert_eq!(self.peek(), c, "at byte {}", self.i);
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        match self.peek() {
            b'{' => self.object(),
            b'[' => self.array(),
            b'"' => Json::Str(self.string()),
            _ => self.other(),
        }
    }

    fn object(&mut self) -> Json {
        self.expect(b'{');
        let mut fields = Vec::new();
        if self.peek() == b'}' {
            self.i += 1;
            return Json::Object(fields);
        }
        loop {
            let key = self.string();
            self.expect(b':');
            fields.push((key, self.value()));
            if self.peek() == b'}' {
                self.i += 1;
                return Json::Object(fields);
            }
            self.expect(b',');
        }
    }

    fn array(&mut self) -> Json {
        self.expect(b'[');
        let mut items = Vec::new();
        if self.peek() == b']' {
            self.i += 1;
            return Json::Array(items);
        }
        loop {
            items.push(self.value());
            if self.peek() == b']' {
                self.i += 1;
                return Json::Array(items);
            }
            self.expect(b',');
        }
    }

    fn string(&mut self) -> String {
        self.expect(b'"');
        let mut out = Vec::new();
        loop {
            let c = self.s[self.i];
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).expect("UTF-8 string"),
                b'\\' => {
                    let e = self.s[self.i];
                    self.i += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'"' | b'\\' | b'/' => e,
                        _ => panic!("unsupported escape \\{}", e as char),
                    });
                }
                _ => out.push(c),
            }
        }
    }

    fn other(&mut self) -> Json {
        let start = self.i;
        while self.i < self.s.len() && !b",}] \t\r\n".contains(&self.s[self.i]) {
            self.i += 1;
        }
        assert!(self.i > start, "unexpected byte at {start}");
        Json::Other
    }
}
