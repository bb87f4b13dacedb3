//! The workspace's source files, for the checks on the code's shape
//! (`tests/import_cycles.rs`, `tests/file_sizes.rs`).

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every crate of the workspace: its directory and its `src` directory.
pub fn crates() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root()) {
        for krate in entries.flatten() {
            let dir = krate.path();
            if dir.join("Cargo.toml").exists() && dir.join("src").is_dir() {
                out.push((dir.clone(), dir.join("src")));
            }
        }
    }
    out.sort();
    out
}

/// Every `.rs` file under `dir`, recursively.
pub fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect(dir, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}
