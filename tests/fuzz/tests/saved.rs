//! Every saved input of every fuzz target, run on each `just test`: the seeds in `corpus/`
//! and the crashes a fuzz run found, kept in `regressions/` once fixed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn every_saved_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in llmr_fuzz::TARGETS {
        let seeds = inputs(&root.join("corpus").join(name));
        assert!(seeds.len() >= 3, "{name}: at least three seeds in corpus/{name}");
        for file in seeds.iter().chain(&inputs(&root.join("regressions").join(name))) {
            let data = std::fs::read(file).unwrap();
            let run = std::panic::catch_unwind(|| target(&data));
            assert!(run.is_ok(), "{name} panicked on {}", file.display());
        }
    }
}

#[test]
fn every_target_has_a_libfuzzer_entry() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for (name, _) in llmr_fuzz::TARGETS {
        let source = std::fs::read_to_string(root.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz/fuzz_targets/{name}.rs: {e}"));
        assert!(
            source.contains(&format!("llmr_fuzz::{name}(")),
            "{name}.rs calls llmr_fuzz::{name}"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "{name} is a [[bin]] of fuzz/Cargo.toml"
        );
    }
}
