//! Link options of the `llmrouter` binary, on Linux with glibc.
//!
//! Relative relocations are packed (`-z pack-relative-relocs`, DT_RELR: glibc 2.36 and
//! binutils 2.38 on, as in Debian bookworm, the image's base). A position-independent Rust
//! binary has one relocation per pointer in its read-only data (vtables, tables of strings):
//! 3 MB of `.rela.dyn` entries, every one read by the loader at start, so resident in every
//! process; packed, they take 31 KB. Measured: `llmrouter all` idle 25.2 → 20.0 MB RSS, the
//! same in every role. The binary stays position-independent (ASLR). A linker that does not
//! know the option warns and ignores it, and ld leaves it off against a glibc without DT_RELR.
//!
//! The functions that run when a process starts and serves (`hot-symbols.txt.gz`, written by
//! `hot-symbols.sh`) are laid out together at the start of the code in release builds on
//! x86_64, where rustc links with its own lld (`--symbol-ordering-file`): a process then maps
//! ~4.8 MB of code pages instead of the ~9.4 MB of 64 KB fault-around windows its scattered
//! functions fell in (gateway, router, worker: 15–17 → 10–12 MB RSS). A name the list has and
//! the binary does not (renamed since the list was made) is skipped without a warning. The
//! release profile carries no debug info so that the names do not depend on where the
//! repository is built (see the workspace's Cargo.toml).
#![allow(clippy::print_stdout)]

use std::io::Read;
use std::path::PathBuf;

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    if var("PROFILE") == "release" && var("CARGO_CFG_TARGET_ARCH") == "x86_64" && var("LLMR_NO_SYMBOL_ORDER").is_empty()
    {
        order_symbols(&var("OUT_DIR"));
    }
    println!("cargo:rerun-if-env-changed=LLMR_NO_SYMBOL_ORDER");
}

/// Unpacks the list into OUT_DIR and hands it to the linker (lld: rustc's default linker on
/// x86_64-unknown-linux-gnu; set LLMR_NO_SYMBOL_ORDER=1 when linking with GNU ld).
fn order_symbols(out_dir: &str) {
    println!("cargo:rerun-if-changed=hot-symbols.txt.gz");
    let Ok(packed) = std::fs::read("hot-symbols.txt.gz") else {
        return;
    };
    let mut list = Vec::new();
    if flate2::read::GzDecoder::new(&packed[..])
        .read_to_end(&mut list)
        .is_err()
    {
        println!("cargo:warning=hot-symbols.txt.gz does not unpack; the code is laid out as compiled");
        return;
    }
    let path = PathBuf::from(out_dir).join("hot-symbols.txt");
    if std::fs::write(&path, list).is_ok() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            path.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
