//! Locating the `graft-kv` binary under test.
//!
//! Cargo hands integration tests only the binaries of their own package
//! (`CARGO_BIN_EXE_*`, at compile time), so the harness looks for `graft-kv`
//! in the profile directory of the running test executable
//! (`target/<profile>/deps/<test>` -> `target/<profile>/graft-kv`). graft-kv's
//! own tests find it there freshly built. Other packages' tests (graft-cli's)
//! may find it missing or older than the sources of graft-kv and graft-core
//! (say, after `cargo test -p graft-cli` alone following an edit): then the
//! first test that needs it runs `cargo build --profile test -p graft-kv
//! --bin graft-kv` once. `GRAFT_KV_BIN=path` overrides all this.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The graft-kv binary (see the module's doc), built at most once per run.
pub fn graft_kv_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(locate).clone()
}

fn locate() -> PathBuf {
    if let Some(path) = std::env::var_os("GRAFT_KV_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test>: the profile directory is two up.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable sits in target/<profile>/deps")
        .to_owned();
    let bin = profile_dir.join(format!("graft-kv{}", std::env::consts::EXE_SUFFIX));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let inputs =
        ["graft-kv/src", "graft-kv/Cargo.toml", "graft-core/src", "graft-core/Cargo.toml", "Cargo.lock"]
            .map(|p| newest_mtime(&workspace.join(p)));
    if built.is_some_and(|b| inputs.iter().all(|s| s.is_none_or(|s| s <= b))) {
        return bin;
    }
    let target_dir = profile_dir.parent().expect("the profile directory sits in the target directory");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--quiet", "--profile", "test", "-p", "graft-kv", "--bin", "graft-kv"])
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .expect("run cargo to build graft-kv");
    assert!(out.status.success(), "building graft-kv failed:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// The newest modification time of `path` or any file under it.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    let mut newest = meta.modified().ok();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).ok()?.flatten() {
            newest = newest.max(newest_mtime(&entry.path()));
        }
    }
    newest
}
