//! Identity key files: the 32-byte Ed25519 seed as 64 lower-case hex
//! digits and a newline, mode 0600.
//!
//! Hex rather than raw bytes so the file survives copy and paste and a
//! glance shows whether it is intact; the public key is derived from it,
//! never stored beside it.

use std::path::Path;

use pilot_proto::Identity;

use crate::fsutil::{self, FileError};
use crate::seed::os_seed;

/// Loads the identity in `path`, or makes a new one there if the file does
/// not exist. Returns the identity and whether it was created. A key file
/// other users can read or write is refused: the key may have leaked, and
/// only its owner can decide what to do about that.
pub fn load_or_create(path: &Path) -> Result<(Identity, bool), FileError> {
    if let Some(bytes) = fsutil::read_optional(path)? {
        return load_from(path, &bytes).map(|id| (id, false));
    }
    let seed = os_seed().map_err(|e| FileError::io(path, "cannot make a key", e))?;
    let identity = Identity::from_seed(&seed);
    fsutil::atomic_write(path, format!("{}\n", hex(&seed)).as_bytes(), 0o600)?;
    Ok((identity, true))
}

/// Loads the key at `path` if there is one; never creates it.
pub fn load(path: &Path) -> Result<Option<Identity>, FileError> {
    fsutil::read_optional(path)?
        .map(|bytes| load_from(path, &bytes))
        .transpose()
}

fn load_from(path: &Path, bytes: &[u8]) -> Result<Identity, FileError> {
    let mode = fsutil::mode_of(path)?;
    if mode & 0o077 != 0 {
        return Err(FileError::Insecure {
            path: path.to_path_buf(),
            detail: format!(
                "mode {mode:o} lets other users read or change the secret key; \
                 `chmod 600` it (and replace the key if it may have leaked)"
            ),
        });
    }
    let seed = std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| parse_hex32(s.trim()))
        .ok_or_else(|| {
            FileError::corrupt(
                path,
                "expected 64 hex digits (the Ed25519 secret seed) and a newline",
            )
        })?;
    Ok(Identity::from_seed(&seed))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rendezvous.key");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(fsutil::mode_of(&path).unwrap(), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());

        fsutil::set_mode(&path, 0o644).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");

        fsutil::atomic_write(&path, b"zz\n", 0o600).unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("rendezvous.key: corrupt"), "{err}");
    }
}
