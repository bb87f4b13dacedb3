//! Disk use and restart time after many writes, with log compaction and
//! without. A measurement, not a default test:
//!
//! ```text
//! GRAFT_COMPACTION_WRITES=1000000 cargo test --release -p graft-kv --test compaction_cost -- --ignored --nocapture
//! ```

mod util;

use std::time::{Duration, Instant};

use util::Cluster;

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| rd.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

async fn run(label: &str, log: &str, writes: u64) -> (u64, Duration, Duration) {
    let mut cluster = Cluster::start_with(3, log);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client = cluster.client();
    let started = Instant::now();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let client = client.clone();
            tokio::spawn(async move {
                let value = vec![b'v'; 100];
                let mut i = t;
                while i < writes {
                    client.put(format!("key-{:05}", i % 10_000), value.clone()).await.expect("put");
                    i += 64;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let took = started.elapsed();
    for id in [1, 2, 3] {
        cluster.stop(id);
    }
    let disk: u64 = cluster.members.iter().map(|m| dir_size(&m.data_dir)).sum();
    // Restart everyone; time until a linearizable read succeeds.
    let restarted = Instant::now();
    for id in [1, 2, 3] {
        cluster.start_member(id);
    }
    let client = cluster.client();
    let v = client.get("key-00001").await.expect("read after restart");
    assert!(v.is_some());
    let restart = restarted.elapsed();
    println!(
        "{label:>18}: {writes} writes in {took:.1?} ({:.0}/s); disk {:.1} MiB over 3 members; restart to first read {restart:.2?}",
        writes as f64 / took.as_secs_f64(),
        disk as f64 / (1 << 20) as f64
    );
    (disk, took, restart)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored (see the file's doc)"]
async fn disk_and_restart_time_with_and_without_compaction() {
    let writes: u64 =
        std::env::var("GRAFT_COMPACTION_WRITES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    let (with_disk, _, with_restart) = run("with compaction", "", writes).await;
    let (without_disk, _, without_restart) =
        run("without compaction", "[log]\nmax_entries = 0\nmax_bytes = 0\n", writes).await;
    println!(
        "disk: {:.1}x smaller with compaction; restart: {:.1}x faster",
        without_disk as f64 / with_disk as f64,
        without_restart.as_secs_f64() / with_restart.as_secs_f64()
    );
    assert!(with_disk < without_disk);
}
