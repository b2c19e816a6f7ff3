//! The registry's store: registrations, trust pairs, waiting requests and
//! replay marks in one redb file, written once per loop turn.
//!
//! redb because it is an embedded, pure-Rust, crash-safe (copy-on-write
//! B-trees, checksummed commits) key-value store with ACID transactions:
//! each loop turn's changes land in one transaction or not at all, a crash
//! never leaves half a turn, and no server process is needed.
//!
//! Tables (keys and values are bytes, big-endian numbers):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"schema"`, `"network"` | `u32` schema version, `u16` network |
//! | `records` | Ed25519 key (32) | version `1`, address (6), flags (bit 0: public), hostname (u8 length, bytes) |
//! | `pairs` | both keys in order (64) | the signed request, then the signed approval (wire forms) |
//! | `pending` | target key, requester key (64) | the signed request (wire form) |
//! | `last_request` | requester key (32) | `issued_at` (u64) |
//!
//! Loading checks everything: a value that does not decode, a signature
//! that does not verify, or two keys claiming one address or hostname is
//! corruption, reported with the file's name, never a silent reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pilot_proto::codec::{put_short_str, Reader};
use pilot_proto::rendezvous::{Change, Record, Rendezvous, TrustPair};
use pilot_proto::trust::{TrustApproval, TrustRequest};
use pilot_proto::{Address, Hostname, PublicKey};
use redb::{Database, ReadableTable, TableDefinition};

use crate::fsutil::FileError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const PAIRS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pairs");
const PENDING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pending");
const LAST_REQUEST: TableDefinition<&[u8], &[u8]> = TableDefinition::new("last_request");

/// The schema this code writes and reads.
pub const SCHEMA: u32 = 1;

/// redb's page cache: the registry's hot set is small, and the default
/// (1 GiB) would let a large registry grow the process without need.
const CACHE_BYTES: usize = 16 << 20;

/// What a store holds, loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Registrations.
    pub records: Vec<Record>,
    /// Trust pairs.
    pub pairs: Vec<TrustPair>,
    /// Requests waiting for a decision: (target, request).
    pub pending: Vec<(PublicKey, TrustRequest)>,
    /// The newest request `issued_at` per requester.
    pub last_requests: Vec<(PublicKey, u64)>,
}

impl Snapshot {
    /// Hands everything to a fresh `Rendezvous`.
    pub fn restore_into(self, rv: &mut Rendezvous) {
        for r in self.records {
            rv.restore(r);
        }
        // Signatures were checked while loading; the core checks again.
        for p in self.pairs {
            rv.restore_pair(p);
        }
        for (target, request) in self.pending {
            rv.restore_pending(target, request);
        }
        for (requester, at) in self.last_requests {
            rv.restore_last_request(requester, at);
        }
    }
}

/// The registry's redb file.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `path` for `network`. A store made
    /// for another network, of another schema, or that redb cannot read is
    /// an error naming the file.
    pub fn open(path: &Path, network: u16) -> Result<Store, FileError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| db_error(path, "cannot open the store", e.into()))?;
        let store = Store {
            db,
            path: path.to_path_buf(),
        };
        store.init(network)?;
        Ok(store)
    }

    /// Where it lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, what: &'static str, e: impl Into<redb::Error>) -> FileError {
        db_error(&self.path, what, e.into())
    }

    fn init(&self, network: u16) -> Result<(), FileError> {
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.err("cannot write", e))?;
        {
            let mut meta = tx
                .open_table(META)
                .map_err(|e| self.err("cannot open table meta", e))?;
            let schema = meta
                .get("schema")
                .map_err(|e| self.err("cannot read", e))?
                .map(|v| v.value().to_vec());
            match schema {
                None => {
                    meta.insert("schema", &SCHEMA.to_be_bytes()[..])
                        .map_err(|e| self.err("cannot write", e))?;
                    meta.insert("network", &network.to_be_bytes()[..])
                        .map_err(|e| self.err("cannot write", e))?;
                }
                Some(v) => {
                    let found = <[u8; 4]>::try_from(v.as_slice())
                        .map(u32::from_be_bytes)
                        .map_err(|_| FileError::corrupt(&self.path, "schema entry"))?;
                    if found != SCHEMA {
                        return Err(FileError::corrupt(
                            &self.path,
                            format!("schema {found}, this program reads schema {SCHEMA}"),
                        ));
                    }
                    let stored = meta
                        .get("network")
                        .map_err(|e| self.err("cannot read", e))?
                        .and_then(|v| <[u8; 2]>::try_from(v.value()).ok())
                        .map(u16::from_be_bytes)
                        .ok_or_else(|| FileError::corrupt(&self.path, "network entry"))?;
                    if stored != network {
                        return Err(FileError::Insecure {
                            path: self.path.clone(),
                            detail: format!(
                                "holds the registry of network {stored}, not of network \
                                 {network}; start with --network {stored} or use another home"
                            ),
                        });
                    }
                }
            }
            // Create every table, so readers find them.
            for t in [RECORDS, PAIRS, PENDING, LAST_REQUEST] {
                tx.open_table(t)
                    .map_err(|e| self.err("cannot open table", e))?;
            }
        }
        tx.commit().map_err(|e| self.err("cannot commit", e))
    }

    /// Reads and checks everything.
    pub fn load(&self) -> Result<Snapshot, FileError> {
        let tx = self
            .db
            .begin_read()
            .map_err(|e| self.err("cannot read", e))?;
        let mut snap = Snapshot::default();
        let corrupt = |what: String| FileError::corrupt(&self.path, what);

        let table = tx
            .open_table(RECORDS)
            .map_err(|e| self.err("cannot open table records", e))?;
        let mut by_node = BTreeMap::new();
        let mut by_name = BTreeMap::new();
        for item in table.iter().map_err(|e| self.err("cannot read", e))? {
            let (k, v) = item.map_err(|e| self.err("cannot read", e))?;
            let key = key32(k.value()).ok_or_else(|| corrupt("a record key".into()))?;
            let rec = decode_record(key, v.value())
                .ok_or_else(|| corrupt(format!("the record of key {key}")))?;
            if let Some(other) = by_node.insert(rec.address.node(), key) {
                return Err(corrupt(format!(
                    "address {} held by two keys ({other} and {key})",
                    rec.address
                )));
            }
            if let Some(h) = &rec.hostname {
                if let Some(other) = by_name.insert(h.clone(), key) {
                    return Err(corrupt(format!(
                        "hostname `{h}` held by two keys ({other} and {key})"
                    )));
                }
            }
            snap.records.push(rec);
        }

        let table = tx
            .open_table(PAIRS)
            .map_err(|e| self.err("cannot open table pairs", e))?;
        for item in table.iter().map_err(|e| self.err("cannot read", e))? {
            let (_, v) = item.map_err(|e| self.err("cannot read", e))?;
            let pair = decode_pair(v.value())
                .filter(|p| {
                    p.request.verify() && p.approval.verify() && p.approval.approves(&p.request)
                })
                .ok_or_else(|| corrupt("a trust pair (does not decode or verify)".into()))?;
            snap.pairs.push(pair);
        }

        let table = tx
            .open_table(PENDING)
            .map_err(|e| self.err("cannot open table pending", e))?;
        for item in table.iter().map_err(|e| self.err("cannot read", e))? {
            let (k, v) = item.map_err(|e| self.err("cannot read", e))?;
            let target = k
                .value()
                .get(..32)
                .and_then(key32)
                .ok_or_else(|| corrupt("a pending request key".into()))?;
            let request = decode_request(v.value())
                .filter(|r| r.verify())
                .ok_or_else(|| corrupt("a pending request (does not decode or verify)".into()))?;
            snap.pending.push((target, request));
        }

        let table = tx
            .open_table(LAST_REQUEST)
            .map_err(|e| self.err("cannot open table last_request", e))?;
        for item in table.iter().map_err(|e| self.err("cannot read", e))? {
            let (k, v) = item.map_err(|e| self.err("cannot read", e))?;
            let key = key32(k.value()).ok_or_else(|| corrupt("a last_request key".into()))?;
            let at = <[u8; 8]>::try_from(v.value())
                .map(u64::from_be_bytes)
                .map_err(|_| corrupt(format!("the last request of {key}")))?;
            snap.last_requests.push((key, at));
        }
        Ok(snap)
    }

    /// Writes `changes` in one transaction (nothing if empty).
    pub fn apply(&self, changes: &[Change]) -> Result<(), FileError> {
        if changes.is_empty() {
            return Ok(());
        }
        let tx = self
            .db
            .begin_write()
            .map_err(|e| self.err("cannot write", e))?;
        {
            let open = |t| {
                tx.open_table(t)
                    .map_err(|e| self.err("cannot open table", e))
            };
            let mut records = open(RECORDS)?;
            let mut pairs = open(PAIRS)?;
            let mut pending = open(PENDING)?;
            let mut last = open(LAST_REQUEST)?;
            let w = |e: redb::StorageError| self.err("cannot write", e);
            for change in changes {
                match change {
                    Change::Record(r) => {
                        records
                            .insert(&r.key.0[..], encode_record(r).as_slice())
                            .map_err(w)?;
                    }
                    Change::Pair(p) => {
                        let k = pair_key(p.request.from_key, p.approval.approver_key);
                        let mut v = Vec::with_capacity(256);
                        p.request.encode(&mut v);
                        p.approval.encode(&mut v);
                        pairs.insert(&k[..], v.as_slice()).map_err(w)?;
                    }
                    Change::PairRemoved(a, b) => {
                        pairs.remove(&pair_key(*a, *b)[..]).map_err(w)?;
                    }
                    Change::Pending { target, request } => {
                        let k = two_keys(*target, request.from_key);
                        let mut v = Vec::with_capacity(192);
                        request.encode(&mut v);
                        pending.insert(&k[..], v.as_slice()).map_err(w)?;
                    }
                    Change::PendingRemoved { target, requester } => {
                        pending
                            .remove(&two_keys(*target, *requester)[..])
                            .map_err(w)?;
                    }
                    Change::LastRequest {
                        requester,
                        issued_at,
                    } => {
                        last.insert(&requester.0[..], &issued_at.to_be_bytes()[..])
                            .map_err(w)?;
                    }
                    other => {
                        tracing::warn!(change = ?other, "a registry change this store does not know");
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err("cannot commit", e))
    }
}

fn db_error(path: &Path, what: &'static str, e: redb::Error) -> FileError {
    match e {
        redb::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                FileError::corrupt(path, format!("not a readable registry store ({io})"))
            }
            _ => FileError::io(path, what, io),
        },
        redb::Error::DatabaseAlreadyOpen => FileError::Io {
            path: path.to_path_buf(),
            what,
            source: std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "in use by another process (is another pilot-rendezvous running with this home?)",
            ),
        },
        other => FileError::corrupt(path, other.to_string()),
    }
}

fn key32(b: &[u8]) -> Option<PublicKey> {
    <[u8; 32]>::try_from(b).ok().map(PublicKey)
}

fn two_keys(a: PublicKey, b: PublicKey) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&a.0);
    k[32..].copy_from_slice(&b.0);
    k
}

fn pair_key(a: PublicKey, b: PublicKey) -> [u8; 64] {
    if a <= b {
        two_keys(a, b)
    } else {
        two_keys(b, a)
    }
}

fn encode_record(r: &Record) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + r.hostname.as_ref().map_or(0, |h| h.as_str().len()));
    v.push(1);
    v.extend_from_slice(&r.address.to_bytes());
    v.push(u8::from(r.public));
    put_short_str(&mut v, r.hostname.as_ref().map_or("", |h| h.as_str()));
    v
}

fn decode_record(key: PublicKey, v: &[u8]) -> Option<Record> {
    let mut r = Reader::new(v);
    if r.u8("version").ok()? != 1 {
        return None;
    }
    let address = Address::from_bytes(r.array("address").ok()?);
    let flags = r.u8("flags").ok()?;
    if flags > 1 {
        return None;
    }
    let name = r.short_str("hostname").ok()?;
    let hostname = if name.is_empty() {
        None
    } else {
        Some(Hostname::new(name).ok()?)
    };
    r.finish().ok()?;
    Some(Record {
        address,
        key,
        hostname,
        public: flags == 1,
        endpoint: None,
        expires: None,
    })
}

fn decode_request(v: &[u8]) -> Option<TrustRequest> {
    let mut r = Reader::new(v);
    let req = TrustRequest::decode(&mut r).ok()?;
    r.finish().ok()?;
    Some(req)
}

fn decode_pair(v: &[u8]) -> Option<TrustPair> {
    let mut r = Reader::new(v);
    let request = TrustRequest::decode(&mut r).ok()?;
    let approval = TrustApproval::decode(&mut r).ok()?;
    r.finish().ok()?;
    Some(TrustPair { request, approval })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilot_proto::msg::Query;
    use pilot_proto::Identity;

    fn record(seed: u8, node: u32, name: Option<&str>) -> Record {
        Record {
            address: Address::new(0, node),
            key: Identity::from_seed(&[seed; 32]).public(),
            hostname: name.map(|n| Hostname::new(n).unwrap()),
            public: seed.is_multiple_of(2),
            endpoint: None,
            expires: None,
        }
    }

    #[test]
    fn changes_round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let (a, b) = (Identity::from_seed(&[1; 32]), Identity::from_seed(&[2; 32]));
        let (aa, ba) = (Address::new(0, 0x10), Address::new(0, 0x11));
        let req = TrustRequest::new(&a, aa, Query::Address(ba), 7, "hi");
        let approval = TrustApproval::new(&b, ba, &req);
        let waiting = TrustRequest::new(&b, ba, Query::Address(aa), 9, "back");
        {
            let store = Store::open(&path, 0).unwrap();
            store
                .apply(&[
                    Change::Record(record(1, 0x10, Some("alice"))),
                    Change::Record(record(2, 0x11, None)),
                    Change::Pair(TrustPair {
                        request: req.clone(),
                        approval: approval.clone(),
                    }),
                    Change::Pending {
                        target: a.public(),
                        request: waiting.clone(),
                    },
                    Change::LastRequest {
                        requester: a.public(),
                        issued_at: 7,
                    },
                ])
                .unwrap();
            store
                .apply(&[Change::Record(record(1, 0x10, Some("alice2")))])
                .unwrap();
        }
        let store = Store::open(&path, 0).unwrap();
        let snap = store.load().unwrap();
        let mut want = vec![record(1, 0x10, Some("alice2")), record(2, 0x11, None)];
        want.sort_by_key(|r| r.key);
        assert_eq!(snap.records, want);
        assert_eq!(snap.records.len(), 2);
        assert_eq!(snap.pairs.len(), 1);
        assert_eq!(snap.pending, vec![(a.public(), waiting.clone())]);
        assert_eq!(snap.last_requests, vec![(a.public(), 7)]);
        store
            .apply(&[
                Change::PairRemoved(a.public(), b.public()),
                Change::PendingRemoved {
                    target: a.public(),
                    requester: b.public(),
                },
            ])
            .unwrap();
        let snap = store.load().unwrap();
        assert!(snap.pairs.is_empty() && snap.pending.is_empty());
        drop(store);
        let err = Store::open(&path, 7).unwrap_err();
        assert!(err.to_string().contains("network 0"), "{err}");
    }

    #[test]
    fn garbage_is_reported_as_corrupt_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Store::open(&path, 0).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("registry.redb"), "{text}");
        assert!(matches!(err, FileError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn a_second_process_cannot_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.redb");
        let _first = Store::open(&path, 0).unwrap();
        let err = Store::open(&path, 0).unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
    }
}
