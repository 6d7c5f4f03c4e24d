//! Replays every fuzz corpus file (`fuzz/corpus/<target>/*`) through the same entry points the
//! fuzzers call (`herald::fuzzing`), on stable, so inputs that once crashed Herald or reached new
//! code keep being checked by every `cargo test`. Also keeps the three lists of targets in step:
//! `herald::fuzzing::TARGETS`, `fuzz/fuzz_targets/*.rs` and `fuzz/corpus/*/`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn names_in(dir: &Path, strip: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.strip_suffix(strip)).map(str::to_owned))
        .collect()
}

#[test]
fn every_target_has_a_fuzz_binary_and_a_corpus() {
    let targets: BTreeSet<String> = herald::fuzzing::TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(names_in(&fuzz_dir().join("fuzz_targets"), ".rs"), targets, "fuzz/fuzz_targets/*.rs");
    assert_eq!(names_in(&fuzz_dir().join("corpus"), ""), targets, "fuzz/corpus/*/");
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for target in &targets {
        assert!(manifest.contains(&format!("name = \"{target}\"")), "fuzz/Cargo.toml has no [[bin]] {target}");
    }
}

#[test]
fn every_corpus_file_replays_without_a_failure() {
    let mut replayed = 0;
    for (name, target) in herald::fuzzing::TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} is empty", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // A failing file is named, so it can be run again with `cargo fuzz run <target> <file>`.
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("{name} fails on {}", file.display());
            }
            replayed += 1;
        }
    }
    println!("replayed {replayed} corpus files");
}
