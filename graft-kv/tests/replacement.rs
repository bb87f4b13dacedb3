//! Issue 11's sequence, between real processes: replace a member (remove
//! it, kill it, start a brand-new member with a new id and an empty data
//! directory at its address with `--join`), then kill -9 a majority that
//! includes the old leader and the newcomer, restart them, and check that
//! every acknowledged write is still there and that writes go on.
//!
//! The delay between the newcomer's promotion and the majority kill is
//! swept, so that the kill lands before, during and after its first
//! state-machine fsync. `GRAFT_REPLACE_DELAYS_MS=0,50,...` overrides the
//! sweep.

mod util;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use graft_kv::protocol::Consistency;
use graft_kv::{Client, ClientOptions};
use util::Cluster;

/// Waits until the leader reports member `id` as a voter.
async fn wait_voter(cluster: &Cluster, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = cluster.statuses().await;
        if st.iter().any(|s| s.role == "Leader" && s.members.iter().any(|m| m.id == id && m.voter)) {
            return;
        }
        assert!(Instant::now() < deadline, "member {id} did not become a voter\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writers that put increasing values to a few keys and record what was
/// acknowledged.
struct Writers {
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// key -> the last acknowledged value (each writer owns its keys, so
    /// the last acknowledged value is the one that must be read back).
    acked: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Writers {
    fn start(cluster: &Cluster, n: usize) -> Writers {
        let stop = tokio_util::sync::CancellationToken::new();
        let acked = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        for w in 0..n {
            let client = Client::new(ClientOptions {
                endpoints: cluster.endpoints(),
                timeout: Duration::from_millis(1500),
            });
            let (stop, acked) = (stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.is_cancelled() {
                    i += 1;
                    let key = format!("w{w}-k{}", i % 4);
                    if client.put(key.clone(), i.to_string()).await.is_ok() {
                        acked.lock().unwrap().insert(key, i);
                    }
                }
            }));
        }
        Writers { stop, tasks, acked }
    }

    async fn finish(self) -> BTreeMap<String, u64> {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("writer task");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Every acknowledged write (the last one of each key) reads back.
async fn check_acked(cluster: &Cluster, acked: &BTreeMap<String, u64>, what: &str) {
    let client = cluster.client();
    for (key, want) in acked {
        let got = client
            .get(key.clone())
            .await
            .unwrap_or_else(|e| panic!("{what}: get {key}: {e}\n{}", cluster.logs()));
        let got = got.map(|v| String::from_utf8_lossy(&v.value).into_owned());
        assert_eq!(
            got.as_deref(),
            Some(want.to_string().as_str()),
            "{what}: acknowledged write {key}={want} lost\n{}",
            cluster.logs()
        );
    }
}

async fn replace_then_kill_a_majority(delay: Duration) {
    let mut cluster = Cluster::start(5);
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let writers = Writers::start(&cluster, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Replace a follower that is not the leader (3, or 2 if 3 leads).
    let old = if leader == 3 { 2 } else { 3 };
    let admin = cluster.client();
    admin.remove_member(old).await.expect("remove");
    cluster.kill(old);
    let addr = cluster.member(old).addr.clone();
    cluster.join_member_at(6, leader, true, addr, None);
    wait_voter(&cluster, 6).await;
    tokio::time::sleep(delay).await;
    // A majority of the five voters: the leader, the newcomer and one more.
    let other = [1, 2, 3, 4, 5].into_iter().find(|&i| i != leader && i != old).unwrap_or(5);
    for id in [leader, 6, other] {
        cluster.kill(id);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for id in [leader, 6, other] {
        cluster.start_member(id);
    }
    // The cluster serves again, with the writers still writing.
    cluster.wait_leader(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = writers.finish().await;
    assert!(!acked.is_empty(), "no write was acknowledged");
    check_acked(&cluster, &acked, &format!("delay {delay:?}")).await;
    // New writes go through, from a new client and the same old ones.
    cluster.client().put("after", "x").await.expect("a write after the restart");
}

fn delays() -> Vec<Duration> {
    match std::env::var("GRAFT_REPLACE_DELAYS_MS") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).map(Duration::from_millis).collect(),
        Err(_) => [0, 100, 600, 2000, 5500].into_iter().map(Duration::from_millis).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_replacement_then_a_majority_kill() {
    for d in delays() {
        eprintln!("replacement then majority kill, delay {d:?}");
        replace_then_kill_a_majority(d).await;
    }
}

/// A client whose session the cluster does not know (its first write never
/// reached the log, or its session expired) must not be refused forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_session_is_unknown_writes_again() {
    let mut cluster = Cluster::start(3);
    cluster.wait_leader(Duration::from_secs(20)).await;
    let client =
        Client::new(ClientOptions { endpoints: cluster.endpoints(), timeout: Duration::from_millis(800) });
    // Every member down: the first write never reaches a log.
    for id in 1..=3 {
        cluster.kill(id);
    }
    let first = client.put("k", "1").await;
    assert!(first.is_err(), "a write with no member up must fail: {first:?}");
    for id in 1..=3 {
        cluster.start_member(id);
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    while Instant::now() < deadline {
        match client.put("k", "2").await {
            Ok(_) => {
                let v = client.get_with("k", Consistency::Linearizable).await.expect("get");
                assert_eq!(v.map(|v| v.value), Some("2".into()));
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("the client never wrote again: {last:?}\n{}", cluster.logs());
}

/// Regression (issue 11): a member that restarts with its state machine
/// behind its log (the state machine is fsynced every few seconds, the log
/// at once) knows every member its log names, at its address. Before, it
/// took addresses from the state machine only: it could not reach a member
/// added after its last state-machine fsync, told others an empty address
/// for it, and a restarting joiner that asked it added itself once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_state_machine_lags_knows_the_members_its_log_names() {
    // The state machine is never fsynced while running: after kill -9 it
    // holds nothing applied, whatever the machine's speed.
    let mut cluster = Cluster::start_with(3, "[log]\nstate_fsync_ms = 3600000\n");
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    cluster.join_member(4, leader, true);
    wait_voter(&cluster, 4).await;
    let addr4 = cluster.member(4).addr.clone();
    for id in 1..=4 {
        cluster.kill(id);
    }
    // Member 1 alone: no quorum, so nothing is committed or applied again.
    cluster.start_member(1);
    let addr1 = cluster.member(1).addr.clone();
    let one = Client::new(ClientOptions { endpoints: vec![addr1.clone()], timeout: Duration::from_secs(2) });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(s) = one.status_of(&addr1).await {
            break s;
        }
        assert!(Instant::now() < deadline, "member 1 did not answer\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.applied, 0, "the state machine lags the log (the test's premise)");
    let four = status.members.iter().find(|m| m.id == 4).expect("member 4 is in member 1's configuration");
    assert_eq!(four.addr, addr4, "member 1 knows member 4's address from its log\n{}", cluster.logs());
    // Member 4 restarts with its --join command: asked, member 1 answers
    // that it is in already, so nothing is proposed.
    cluster.start_member(4);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(&cluster.member(4).log_file).unwrap_or_default();
        if log.contains("member 4 is already in the cluster") {
            break;
        }
        assert!(Instant::now() < deadline, "member 4 did not find itself in the cluster\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // With a quorum back, every member applies again and serves.
    cluster.start_member(2);
    cluster.wait_leader(Duration::from_secs(20)).await;
    cluster.client().put("after", "restart").await.expect("a write with 1, 2 and 4");
}
