//! What the corpus-replay tests share: the committed corpora and a tiny
//! deterministic generator.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

/// Every file under `fuzz/corpus/<target>/`, sorted by name so the run is
/// the same everywhere. A target without a corpus directory is a mistake.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "corpus {} is empty", dir.display());
    paths.into_iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Xorshift64: deterministic, dependency-free and plenty for input spread.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn bytes(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    /// Text from `alphabet`, with an arbitrary character now and then.
    pub fn text(&mut self, alphabet: &[char], max_len: usize) -> String {
        let len = self.below(max_len + 1);
        (0..len)
            .map(|_| {
                if self.below(16) == 0 {
                    char::from_u32(self.below(0x800) as u32).unwrap_or('?')
                } else {
                    *self.pick(alphabet)
                }
            })
            .collect()
    }
}
