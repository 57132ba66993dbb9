//! Replays fuzz/corpus through the checks the fuzz targets make, so what fuzzing found (and the
//! seeds) stays covered on stable, in CI, without a fuzzer.

use std::path::{Path, PathBuf};

use crate::checks;

/// Runs `check` on every file in fuzz/corpus/`target`; returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    files.sort();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
            eprintln!("fuzz corpus file {} fails its check", path.display());
            std::panic::resume_unwind(panic);
        }
    }
    files.len()
}

#[test]
fn fuzz_corpus_parse() {
    assert!(replay("parse", checks::parse_frame) >= 500);
}

#[test]
fn fuzz_corpus_framing() {
    assert!(replay("framing", checks::framing) >= 70);
}

#[test]
fn fuzz_corpus_kmsg() {
    assert!(replay("kmsg", checks::kmsg_record) >= 8);
}

#[test]
fn fuzz_corpus_config() {
    assert!(replay("config", checks::config) >= 6);
}
