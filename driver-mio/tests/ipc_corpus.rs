//! Replays the committed corpus of the `ipc_frame` fuzz target, plus
//! deterministic pseudo-random and mutated inputs, through the target's own
//! checks (`fuzz/fuzz_targets/shared/ipc_frame.rs`, included below), so
//! that `cargo test` on stable guards what the fuzzer found.

use std::fs;
use std::path::PathBuf;

#[path = "../../fuzz/fuzz_targets/shared/ipc_frame.rs"]
mod ipc_frame;

/// Pseudo-random inputs on top of the corpus.
const GENERATED: usize = 4_000;

/// Every file under `fuzz/corpus/ipc_frame/`, sorted by name so the run is
/// the same everywhere.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ipc_frame");
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "corpus {} is empty", dir.display());
    paths
        .into_iter()
        .map(|p| (p.display().to_string(), fs::read(&p).unwrap()))
        .collect()
}

/// Xorshift64: deterministic, dependency-free and plenty for input spread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The edits that find bugs in framed streams: bit flips, a clobbered
/// byte, truncation, a spliced-in length prefix, two inputs joined.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    match rng.below(6) {
        0 | 1 => {
            for _ in 0..=rng.below(3) {
                if input.is_empty() {
                    break;
                }
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
        }
        2 if !input.is_empty() => {
            let at = rng.below(input.len());
            input[at] = rng.next() as u8;
        }
        3 => input.truncate(rng.below(input.len() + 1)),
        4 => {
            let at = rng.below(input.len() + 1);
            let len = (rng.next() as u32 >> rng.below(32)).to_be_bytes();
            input.splice(at..at, len);
        }
        _ => input.extend_from_slice(other),
    }
}

#[test]
fn corpus_replays_clean() {
    for (name, input) in corpus() {
        let result = std::panic::catch_unwind(|| ipc_frame::check(&input));
        assert!(result.is_ok(), "corpus input {name} fails the checks");
    }
}

#[test]
fn mutated_corpus_and_random_inputs_pass() {
    let corpus: Vec<Vec<u8>> = corpus().into_iter().map(|(_, b)| b).collect();
    let mut rng = Rng(0x1bc_f4a3_9e21_d00d);
    for i in 0..GENERATED {
        let mut input = if i % 4 == 0 {
            let len = rng.below(64);
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            corpus[rng.below(corpus.len())].clone()
        };
        let other = &corpus[rng.below(corpus.len())];
        for _ in 0..=rng.below(3) {
            mutate(&mut rng, &mut input, other);
        }
        let result = std::panic::catch_unwind(|| ipc_frame::check(&input));
        assert!(result.is_ok(), "generated input {i} fails: {input:?}");
    }
}
