//! `--data` of `send`, `send-message` and `publish`: the text itself,
//! `@FILE` (the file's bytes), `-` (standard input, to its end) or
//! `@@...` (text that starts with `@`). Files and stdin are read up to
//! what the command can send, and refused beyond it with the limit named.

use std::io::{self, Read};
use std::path::Path;

use crate::output::Failure;

/// What `--data` gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Data<'a> {
    /// Text on the command line.
    Inline(&'a str),
    /// The bytes of a file or of stdin.
    Read(Vec<u8>),
}

impl Data<'_> {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Data::Inline(s) => s.as_bytes(),
            Data::Read(b) => b,
        }
    }
}

/// Human size: `65536 bytes (64 KiB)`.
fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{n} bytes ({} MiB)", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{n} bytes ({} KiB)", n >> 10),
        n => format!("{n} bytes"),
    }
}

fn too_large(what: &str, max: u64, hint: &str) -> Failure {
    Failure::new(
        "invalid_argument",
        format!(
            "{what} is larger than {}, the most this command sends",
            size(max)
        ),
        hint,
    )
}

/// Reads `--data` (`arg`) for a command that sends at most `max` bytes;
/// `hint` says what to do with more.
pub fn read<'a>(arg: &'a str, max: u64, hint: &str) -> Result<Data<'a>, Failure> {
    if arg == "-" {
        return read_limited(io::stdin().lock(), max)
            .map_err(|e| {
                Failure::new(
                    "invalid_argument",
                    format!("cannot read stdin: {e}"),
                    "pipe the data in, or give it with --data TEXT / --data @FILE",
                )
            })?
            .map(Data::Read)
            .ok_or_else(|| too_large("stdin", max, hint));
    }
    if arg.starts_with("@@") {
        return Ok(Data::Inline(&arg[1..]));
    }
    let Some(file) = arg.strip_prefix('@') else {
        return Ok(Data::Inline(arg));
    };
    let path = Path::new(file);
    let shown = crate::cmd::settings::quoted(file);
    let open = std::fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::new(
            "not_found",
            format!("--data @FILE: no file {shown}"),
            "check the path; to send text that starts with @, write @@",
        ),
        _ => Failure::new(
            "invalid_argument",
            format!("--data @FILE: cannot read {shown}: {e}"),
            "check the file's permissions",
        ),
    })?;
    if let Ok(meta) = open.metadata() {
        if meta.is_dir() {
            return Err(Failure::new(
                "invalid_argument",
                format!("--data @FILE: {shown} is a directory"),
                "name a file",
            ));
        }
        if meta.is_file() && meta.len() > max {
            return Err(too_large(
                &format!("the file {shown} ({} bytes)", meta.len()),
                max,
                hint,
            ));
        }
    }
    read_limited(open, max)
        .map_err(|e| {
            Failure::new(
                "invalid_argument",
                format!("--data @FILE: cannot read {shown}: {e}"),
                "check the file",
            )
        })?
        .map(Data::Read)
        .ok_or_else(|| too_large(&format!("the file {shown}"), max, hint))
}

/// Everything `r` gives, or `None` if that is more than `max` bytes.
fn read_limited(r: impl Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_files_and_escapes() {
        assert_eq!(read("hello", 10, "").unwrap(), Data::Inline("hello"));
        assert_eq!(read("@@me", 10, "").unwrap(), Data::Inline("@me"));
        assert_eq!(read("@", 10, "").unwrap_err().code, "not_found");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.txt");
        std::fs::write(&f, b"from a file").unwrap();
        let arg = format!("@{}", f.display());
        assert_eq!(read(&arg, 100, "").unwrap().bytes(), b"from a file");
        let e = read(&arg, 4, "send less").unwrap_err();
        assert_eq!(e.code, "invalid_argument");
        assert!(e.message.contains("larger than 4 bytes"), "{}", e.message);
        assert_eq!(e.hint, "send less");
        let missing = format!("@{}", dir.path().join("nope").display());
        let e = read(&missing, 4, "").unwrap_err();
        assert_eq!(e.code, "not_found");
        assert!(e.message.contains("no file"), "{}", e.message);
        let e = read(&format!("@{}", dir.path().display()), 4, "").unwrap_err();
        assert!(e.message.contains("directory"), "{}", e.message);
        assert_eq!(size(16 << 20), "16777216 bytes (16 MiB)");
        assert_eq!(size(65536), "65536 bytes (64 KiB)");
    }

    #[test]
    fn read_limited_stops_past_the_limit() {
        assert_eq!(
            read_limited(&b"abcd"[..], 4).unwrap(),
            Some(b"abcd".to_vec())
        );
        assert_eq!(read_limited(&b"abcde"[..], 4).unwrap(), None);
    }
}
