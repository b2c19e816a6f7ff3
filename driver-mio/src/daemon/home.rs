//! What the daemon keeps under `PILOT_HOME`: its identity, trust state,
//! settings, inbox and received files. Every write is atomic; a corrupt
//! or truncated file is an error naming the file, never a silent reset.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pilot_proto::identity::Identity;
use pilot_proto::node::Delivered;
use pilot_proto::services::dataexchange::{safe_file_name, Kind};
use pilot_proto::trust::TrustState;
use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FileError};

/// The files of one daemon.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

/// Settings the daemon was last started with, so `daemon start` without
/// flags starts the same agent again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The rendezvous's address as given: `HOST:PORT` with a DNS name
    /// or an IP address.
    pub rendezvous: Option<String>,
    /// The rendezvous's public key (hex).
    pub rendezvous_key: Option<String>,
    /// Our hostname.
    pub hostname: Option<String>,
    /// Findable by anyone.
    #[serde(default)]
    pub public: bool,
    /// The UDP address to listen on.
    pub listen: Option<String>,
    /// The owner's email, for the record.
    pub email: Option<String>,
    /// Where the identity key lives, if not in the home.
    #[serde(default)]
    pub identity: Option<String>,
    /// Approve every trust request.
    #[serde(default)]
    pub auto_approve: bool,
    /// The built-in services are off.
    #[serde(default)]
    pub no_services: bool,
    /// The log filter (`--log-level`).
    #[serde(default)]
    pub log_level: Option<String>,
    /// The log format (`text` or `json`).
    #[serde(default)]
    pub log_format: Option<String>,
    /// Which local TCP ports trusted peers may reach through the bridge
    /// (`all`, `none`, `80,8000-8099`; unset: all).
    #[serde(default)]
    pub bridge_ports: Option<String>,
    /// Which trusted peers may (`all`, or addresses and hostnames).
    #[serde(default)]
    pub bridge_peers: Option<String>,
    /// `udp`, `compat` or `auto` (unset: udp).
    #[serde(default)]
    pub transport: Option<String>,
    /// The compat carrier's `wss://` URL (unset: the rendezvous host, 443).
    #[serde(default)]
    pub compat_url: Option<String>,
    /// A CA file the carrier's certificate must chain to.
    #[serde(default)]
    pub tls_ca: Option<String>,
    /// The carrier certificate's SHA-256 (not a secret).
    #[serde(default)]
    pub tls_pin: Option<String>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Home {
    /// The home at `dir`, created (mode 0700) if missing.
    pub fn open(dir: &Path) -> Result<Self, FileError> {
        fsutil::ensure_private_dir(dir)?;
        Ok(Home {
            dir: dir.to_path_buf(),
        })
    }

    /// The home at `dir` as it is, creating nothing: for reading what may
    /// be there (a missing file reads as defaults).
    pub fn existing(dir: &Path) -> Self {
        Home {
            dir: dir.to_path_buf(),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the home.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The identity at `path` (default `<home>/identity.key`), created on
    /// first use (mode 0600).
    pub fn identity(&self, path: Option<&Path>) -> Result<Identity, FileError> {
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.path("identity.key"));
        if !path.exists() {
            let seed = crate::seed::os_seed()
                .map_err(|e| FileError::io(&path, "creating an identity", e))?;
            fsutil::atomic_write(&path, format!("{}\n", hex(&seed)).as_bytes(), 0o600)?;
            return Ok(Identity::from_seed(&seed));
        }
        let bytes = fsutil::read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        let seed = pilot_proto::identity::parse_hex32(&text)
            .ok_or_else(|| FileError::corrupt(&path, "expected 64 hex digits (an Ed25519 seed)"))?;
        Ok(Identity::from_seed(&seed))
    }

    /// The trust state saved last, or an empty one on first start.
    pub fn trust(&self) -> Result<TrustState, FileError> {
        let path = self.path("trust.state");
        if !path.exists() {
            return Ok(TrustState::default());
        }
        let bytes = fsutil::read(&path)?;
        TrustState::decode(&bytes).map_err(|e| FileError::corrupt(&path, e.to_string()))
    }

    /// Saves the trust state atomically.
    pub fn save_trust(&self, state: &TrustState) -> Result<(), FileError> {
        fsutil::atomic_write(&self.path("trust.state"), &state.encode(), 0o600)
    }

    /// The settings saved last (defaults on first start).
    pub fn settings(&self) -> Result<Settings, FileError> {
        let path = self.path("config.json");
        if !path.exists() {
            return Ok(Settings::default());
        }
        let bytes = fsutil::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| FileError::corrupt(&path, e.to_string()))
    }

    /// Saves the settings atomically.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), FileError> {
        let mut bytes = serde_json::to_vec_pretty(settings).unwrap_or_default();
        bytes.push(b'\n');
        fsutil::atomic_write(&self.path("config.json"), &bytes, 0o600)
    }

    /// Reads the settings, lets `change` edit them, and saves them if it
    /// changed anything. Returns the settings as saved.
    pub fn update_settings(
        &self,
        change: impl FnOnce(&mut Settings),
    ) -> Result<Settings, FileError> {
        let before = self.settings()?;
        let mut after = before.clone();
        change(&mut after);
        if after != before {
            self.save_settings(&after)?;
        }
        Ok(after)
    }

    /// Stores a message in `inbox/` or a file in `received/`; returns the
    /// path written. File names were checked by the core; a name already
    /// taken gets a numeric suffix, never an overwrite.
    pub fn deliver(&self, m: &Delivered, wall_secs: u64) -> Result<PathBuf, FileError> {
        if m.kind == Kind::File {
            let dir = self.path("received");
            fsutil::ensure_private_dir(&dir)?;
            let name = m
                .name
                .as_deref()
                .and_then(|n| safe_file_name(n).ok())
                .unwrap_or("file");
            let path = unused(&dir, |n| match n {
                0 => name.to_string(),
                n => format!("{name}.{n}"),
            });
            fsutil::atomic_write(&path, &m.payload, 0o600)?;
            // Who sent it and when, beside it in a hidden directory (the
            // file itself stays exactly what was sent). Best effort: the
            // file is what matters, and `received` shows `-` without it.
            if let Some(file) = path.file_name() {
                let meta_dir = dir.join(RECEIVED_META);
                let record = serde_json::json!({
                    "from": m.from.to_string(),
                    "received_at": wall_secs,
                    "size": m.payload.len(),
                });
                let mut meta = file.to_os_string();
                meta.push(".json");
                let written = fsutil::ensure_private_dir(&meta_dir).and_then(|()| {
                    fsutil::atomic_write(&meta_dir.join(meta), record.to_string().as_bytes(), 0o600)
                });
                if let Err(e) = written {
                    tracing::warn!(error = %e, path = %path.display(), "cannot record who sent a received file");
                }
            }
            return Ok(path);
        }
        let dir = self.path("inbox");
        fsutil::ensure_private_dir(&dir)?;
        let from = m.from.to_string().replace([':', '.'], "-");
        // Senders number messages per connection, so their ids repeat
        // (every `send-message` is a message 1): the inbox numbers what
        // it holds itself, one more than the highest number there.
        let id = next_inbox_id(&dir);
        let path = unused(&dir, |n| match n {
            0 => format!("{wall_secs}-{from}-{id}.json"),
            n => format!("{wall_secs}-{from}-{id}.{n}.json"),
        });
        let data = match m.kind {
            Kind::Text | Kind::Json => {
                serde_json::Value::String(String::from_utf8_lossy(&m.payload).into_owned())
            }
            _ => serde_json::Value::String(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &m.payload,
            )),
        };
        let record = serde_json::json!({
            "from": m.from.to_string(),
            "id": id,
            "sender_id": m.id,
            "kind": format!("{:?}", m.kind).to_lowercase(),
            "received_at": wall_secs,
            "data": data,
        });
        let mut bytes = serde_json::to_vec(&record).unwrap_or_default();
        bytes.push(b'\n');
        fsutil::atomic_write(&path, &bytes, 0o600)?;
        Ok(path)
    }
}

/// The directory inside `received/` that says who sent each file and
/// when: `.meta/NAME.json` for `NAME`.
pub const RECEIVED_META: &str = ".meta";

/// One more than the highest message number in the inbox's file names
/// (`SECS-FROM-ID.json`), 1 for an empty one.
fn next_inbox_id(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            let stem = stem.split('.').next()?;
            stem.rsplit('-').next()?.parse::<u64>().ok()
        })
        .max()
        .map_or(1, |m| m.saturating_add(1))
}

/// The first path in `dir` named `name(0)`, `name(1)`, ... that is not
/// taken: what arrives is never written over what arrived before.
fn unused(dir: &Path, name: impl Fn(u32) -> String) -> PathBuf {
    let mut n = 0;
    loop {
        let path = dir.join(name(n));
        if !path.exists() {
            return path;
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pilot_proto::addr::Address;

    fn delivered(kind: Kind, name: Option<&str>, payload: &[u8]) -> Delivered {
        Delivered {
            from: Address::new(0, 0x10),
            id: 1,
            kind,
            name: name.map(str::to_string),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn same_second_same_id_keeps_both() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(&dir.path().join("home")).unwrap();
        let a = home
            .deliver(&delivered(Kind::Text, None, b"one"), 7)
            .unwrap();
        let b = home
            .deliver(&delivered(Kind::Text, None, b"two"), 7)
            .unwrap();
        assert_ne!(a, b);
        let mut texts: Vec<String> = [&a, &b]
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                v["data"].as_str().unwrap().to_string()
            })
            .collect();
        texts.sort();
        assert_eq!(texts, ["one", "two"]);
        // The same sender id twice: two inbox ids.
        let ids: Vec<u64> = [&a, &b]
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
                v["id"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(ids, [1, 2]);

        let f1 = home
            .deliver(&delivered(Kind::File, Some("r.txt"), b"1"), 7)
            .unwrap();
        let f2 = home
            .deliver(&delivered(Kind::File, Some("r.txt"), b"2"), 7)
            .unwrap();
        assert_eq!(f1.file_name().unwrap(), "r.txt");
        assert_eq!(f2.file_name().unwrap(), "r.txt.1");
        assert_eq!(std::fs::read(f2).unwrap(), b"2");
        // Each file's sender and time, beside it.
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(home.path("received").join(".meta/r.txt.1.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            meta,
            serde_json::json!({"from": "0:0000.0000.0010", "received_at": 7, "size": 1})
        );
    }
}
