//! The multi-version history on real processes: the leader compacts it by
//! the retention policy, so that a write-heavy load keeps it (and the
//! state database) bounded, and reads below the compaction point are
//! refused with the oldest revision left.
//!
//! `GRAFT_SOAK_HISTORY_WRITES=1000000` runs the figure (1M writes
//! to 1,000 keys) instead of the default 20,000 writes to 100 keys.

mod util;

use std::sync::Arc;
use std::time::{Duration, Instant};

use graft_kv::protocol::{ApiError, Consistency};
use graft_kv::ClientError;
use util::Cluster;

const KEEP: u64 = 1000;

fn file_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_compaction_keeps_history_and_disk_bounded() {
    let writes: u64 =
        std::env::var("GRAFT_SOAK_HISTORY_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let keys: u64 = if writes >= 1_000_000 { 1000 } else { 100 };
    let config = format!("[history]\nkeep_revisions = {KEEP}\nkeep_seconds = 0\n");
    let mut cluster = Cluster::start_with(3, &config);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = Arc::new(cluster.client());
    let state_file = cluster.member(1).data_dir.join(graft_kv::storage::STATE_FILE);
    let started = Instant::now();
    let mut sizes = Vec::new();
    let mut last = 0;
    let tasks = 64;
    for quarter in 0..4 {
        let mut handles = Vec::new();
        for t in 0..tasks {
            let client = client.clone();
            let per_task = writes / 4 / tasks;
            handles.push(tokio::spawn(async move {
                let mut last = 0;
                for i in 0..per_task {
                    let n = (quarter * writes / 4 + t * per_task + i) % keys;
                    last = last.max(client.put(format!("k{n:04}"), format!("v{i}")).await.expect("put"));
                }
                last
            }));
        }
        for h in handles {
            last = last.max(h.await.expect("writer"));
        }
        sizes.push(file_size(&state_file));
    }
    let took = started.elapsed();
    // The leader compacts within a few seconds of the history passing the
    // limit (it looks every second, in steps of a tenth of the limit).
    let deadline = Instant::now() + Duration::from_secs(30);
    let compacted = loop {
        let st = cluster.statuses().await;
        let least = st.iter().map(|s| s.compacted).min().unwrap_or(0);
        if least + KEEP + KEEP / 10 >= last || Instant::now() > deadline {
            break least;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        compacted + KEEP + KEEP / 10 >= last,
        "history compacted to {compacted} with the last write at {last} (keep {KEEP})"
    );
    // Below the point: refused, naming the oldest revision; at it: answered.
    match client.get_at("k0001", Consistency::Linearizable, compacted - 1).await {
        Err(ClientError::Api(ApiError::Compacted { requested, oldest })) => {
            assert_eq!((requested, oldest), (compacted - 1, compacted))
        }
        other => panic!("expected a compacted error, got {other:?}"),
    }
    let (_, at) =
        client.get_at("k0001", Consistency::Linearizable, compacted).await.expect("read at the point");
    assert_eq!(at, compacted);

    // On disk: each member holds about the history kept, not every write.
    // The purge of the last compaction goes on in the batches the leader's
    // compactor makes it write (one a second while it is unfinished).
    let last_applied = last;
    cluster.wait_applied(last_applied, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in [1, 2, 3] {
        cluster.stop(id);
        let found =
            graft_kv::storage::inspect::inspect(&cluster.member(id).data_dir, false).expect("inspect");
        let m = found.mvcc.expect("a store with revisions");
        let span = m.revision - m.compacted;
        assert!(
            found.history_rows <= span + keys + 1 && found.revision_rows <= span + 1,
            "member {id}: {} past records and {} revision rows for {span} revisions kept ({keys} keys)",
            found.history_rows,
            found.revision_rows
        );
        assert_eq!(m.purged, m.compacted, "member {id} finished purging");
    }
    println!(
        "{writes} writes to {keys} keys in {took:?}; state.redb after each quarter: {sizes:?} bytes; \
         compacted to {compacted} of {last}"
    );
    // The database stops growing once the history is at its limit.
    assert!(sizes[3] <= 2 * sizes[1] + (1 << 20), "state.redb kept growing: {sizes:?}");
}
