//! `graft-kv inspect`: what a stopped member's data directory holds, read
//! without changing it (a crashed one through a repaired copy).

mod util;

use std::process::Command;
use std::time::Duration;

use util::{file_digest, graft_kv_bin, Cluster};

fn inspect(dir: &std::path::Path, entries: bool) -> (bool, String, String) {
    let mut cmd = Command::new(graft_kv_bin());
    cmd.arg("inspect").arg("--data-dir").arg(dir);
    if entries {
        cmd.arg("--entries");
    }
    let out = cmd.output().expect("run graft-kv inspect");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_reports_a_stopped_and_a_crashed_member_without_changing_them() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    for i in 0..3 {
        client.put(format!("k{i}"), "v").await.expect("put");
    }
    let last = client.put("k0", "again").await.expect("put");
    cluster.wait_applied(last, Duration::from_secs(20)).await;
    // A clean stop: everything applied is durable.
    cluster.stop(1);
    let dir = cluster.member(1).data_dir.clone();
    let (ok, out, err) = inspect(&dir, true);
    assert!(ok, "{err}");
    assert!(out.contains("member 1 of cluster \"test-cluster\""), "{out}");
    assert!(out.contains(&format!("applied:     {last} ")), "{out}");
    assert!(out.contains("data:        3 keys, 1 sessions"), "{out}");
    assert!(out.contains("put b\"k0\" (5 bytes)"), "--entries lists the writes\n{out}");
    assert!(!out.contains("crash repair"), "{out}");
    // kill -9: the copy is repaired, the files stay as they were.
    cluster.kill(2);
    let dir = cluster.member(2).data_dir.clone();
    let before = (file_digest(&dir.join("graft.redb")), file_digest(&dir.join("state.redb")));
    let (ok, out, err) = inspect(&dir, false);
    assert!(ok, "{err}");
    assert!(out.contains("member 2 of cluster"), "{out}");
    assert!(out.contains("entries 1..="), "{out}");
    let after = (file_digest(&dir.join("graft.redb")), file_digest(&dir.join("state.redb")));
    assert_eq!(before, after, "inspect changed the data directory");
}

#[test]
fn inspect_of_a_directory_without_data_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ok, out, err) = inspect(dir.path(), false);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.starts_with("graft-kv: error: cannot inspect"), "{err}");
}
