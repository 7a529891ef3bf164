//! Every fuzz target (src/fuzz.rs) on each seed of its corpus in fuzz/corpus/, then on
//! mutations of them, on every test run and with stable Rust. Blind mutations find less than
//! libFuzzer, which follows coverage: `scripts/fuzz` runs that, on demand and before a
//! release. An input that makes a target panic is saved in target/fuzz-found/NAME/, and
//! every later run tries it first.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Per target. At about 20 µs an input in a debug build, a few seconds for all seven.
const MUTATIONS: usize = 20_000;
/// Longer inputs find nothing the limits of the parsers do not already bound.
const MAX_LEN: usize = 16 * 1024;

#[test]
fn every_target_survives_its_corpus_and_mutations_of_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A new seed each run, so that runs add up; what fails is saved, not the seed.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Rng(seed | 1);
    for (name, target) in banshare::fuzz::TARGETS {
        let mut corpus = inputs(&root.join("fuzz/corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seed");
        corpus.extend(inputs(&root.join("target/fuzz-found").join(name)));
        for input in &corpus {
            run(root, name, target, input);
        }
        for _ in 0..MUTATIONS {
            let input = mutate(&corpus, &mut rng);
            run(root, name, target, &input);
        }
    }
}

fn inputs(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    paths.iter().map(|p| fs::read(p).unwrap()).collect()
}

fn run(root: &Path, name: &str, target: banshare::fuzz::Target, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
        let dir = root.join("target/fuzz-found").join(name);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{:016x}", fnv1a(input)));
        fs::write(&path, input).unwrap();
        panic!("the {name} target panicked (above) on {}", path.display());
    }
}

/// A seed changed one to four times: bits flipped, bytes set to ones parsers care about,
/// inserted, removed or repeated, the tail cut, or another seed spliced in.
fn mutate(corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    const SPECIAL: &[u8] = b"\x00\xff \n\r\t0019:./=\"[]#,;-";
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if at < data.len() => data[at] ^= 1 << rng.below(8),
            1 if at < data.len() => data[at] = SPECIAL[rng.below(SPECIAL.len())],
            2 => data.insert(at, SPECIAL[rng.below(SPECIAL.len())]),
            3 => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let end = (at + rng.below(64)).min(data.len());
                let piece = data[at..end].to_vec();
                data.splice(at..at, piece);
            }
            5 => data.truncate(at),
            _ => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                data.splice(at.., other[from..].iter().copied());
            }
        }
    }
    data.truncate(MAX_LEN);
    data
}

/// xorshift64*: enough to pick mutations, and no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize % n.max(1)
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}
