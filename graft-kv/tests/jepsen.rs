//! Jepsen-style tests: real `graft-kv` processes on 127.0.0.1, real TCP,
//! real disks; concurrent clients doing get, put, delete and
//! compare-and-swap on a few keys while a nemesis kills, pauses and
//! partitions members (through a fault-injecting proxy in front of every
//! member, see `util/proxy.rs`), and changes membership. Afterwards the
//! faults heal, every key is read, and graft-check decides whether the whole
//! history is linearizable.
//!
//! Beside that workload, in every scenario (`util/coordination.rs`):
//! multi-key transactions checked in the store's revision order
//! (`graft_check::check_serial`), three watchers whose events must equal
//! exactly the committed writes from their start revisions, and lock
//! clients appending under a fenced lock, some stalling past their lease's
//! TTL, whose shared list must show no two holders at once and nothing
//! lost.
//!
//! The default tests run each scenario for about 25 s. The soak runs the
//! mixed scenario as long as asked:
//!
//! ```text
//! GRAFT_SOAK_SECS=1800 GRAFT_SOAK_SEED=7 cargo test --release -p graft-kv --test jepsen soak -- --ignored --nocapture
//! ```
//!
//! `GRAFT_SOAK_NEMESIS=replace` (or `kill`, `pause`, `partition`, `lossy`,
//! `membership`; default `mixed`) soaks one scenario's faults instead.
//!
//! A seed fixes the nemesis's schedule and the clients' choices; the
//! interleaving of real processes still varies from run to run.

mod util;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use graft_core::rng::Rng;
use graft_kv::workload::{self, WorkloadOptions};
use tokio_util::sync::CancellationToken;
use util::coordination::Coordination;
use util::proxy::{Faults, Proxies};
use util::{signal, Cluster};

/// What the nemesis can do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nemesis {
    /// kill -9 a random member or the leader, sometimes a majority; restart.
    Kill,
    /// SIGSTOP the leader (or another member), SIGCONT later.
    Pause,
    /// Partitions: majority/minority, isolated leader, bridge, one-way.
    Partition,
    /// Message loss and delay on every link, with partitions now and then.
    Lossy,
    /// Members removed, added, replaced while the workload runs.
    Membership,
    /// Issue 11's fault: a voter is removed and killed, and a brand-new
    /// member (new id, empty data directory) starts at its address with
    /// `--join`; soon after its promotion a majority that includes it and
    /// the leader is often killed with -9 and restarted. Mixed with kills,
    /// pauses, partitions and lossy links.
    Replace,
    /// All of the above.
    Mixed,
}

struct Harness {
    cluster: Cluster,
    proxies: Proxies,
    next_id: u64,
    /// Members paused with SIGSTOP.
    paused: Vec<u64>,
    faults: BTreeMap<&'static str, u64>,
    log: Vec<String>,
    started: Instant,
}

impl Harness {
    fn note(&mut self, kind: &'static str, what: String) {
        *self.faults.entry(kind).or_default() += 1;
        self.log.push(format!("{:>6.1}s {what}", self.started.elapsed().as_secs_f64()));
    }

    /// The addresses of the members running now.
    fn live_endpoints(&self) -> Vec<String> {
        self.cluster
            .running()
            .iter()
            .filter_map(|id| self.cluster.members.iter().find(|m| m.id == *id))
            .map(|m| m.addr.clone())
            .collect()
    }

    fn alive(&self) -> Vec<u64> {
        self.cluster.running().into_iter().filter(|id| !self.paused.contains(id)).collect()
    }

    async fn leader(&self) -> Option<u64> {
        let st = self.cluster.statuses().await;
        st.iter().filter(|s| s.role == "Leader").max_by_key(|s| s.term).map(|s| s.id)
    }

    async fn voters(&self) -> Vec<u64> {
        let st = self.cluster.statuses().await;
        match st.iter().filter(|s| s.role == "Leader").max_by_key(|s| s.term) {
            Some(l) => l.members.iter().filter(|m| m.voter).map(|m| m.id).collect(),
            None => Vec::new(),
        }
    }

    /// Undoes every fault: network, pauses, crashes.
    fn heal(&mut self) {
        self.proxies.heal();
        for id in std::mem::take(&mut self.paused) {
            if let Some(pid) = self.cluster.pid(id) {
                signal(pid, libc::SIGCONT);
            }
        }
        let ids: Vec<u64> = self.cluster.members.iter().map(|m| m.id).collect();
        for id in ids {
            if self.cluster.member(id).child.is_none() && !self.removed(id) {
                self.cluster.start_member(id);
            }
        }
    }

    fn removed(&self, id: u64) -> bool {
        self.log.iter().any(|l| l.ends_with(&format!("removed member {id}")))
    }

    async fn step(&mut self, nemesis: Nemesis, rng: &mut Rng) {
        let kind = match nemesis {
            Nemesis::Mixed => [
                Nemesis::Kill,
                Nemesis::Pause,
                Nemesis::Partition,
                Nemesis::Lossy,
                Nemesis::Membership,
                Nemesis::Replace,
            ][rng.range(0, 6) as usize],
            Nemesis::Replace if rng.chance(0.5) => {
                [Nemesis::Kill, Nemesis::Pause, Nemesis::Partition, Nemesis::Lossy][rng.range(0, 4) as usize]
            }
            k => k,
        };
        let ids = self.alive();
        let pick = |rng: &mut Rng, from: &[u64]| from[rng.range(0, from.len() as u64) as usize];
        match kind {
            Nemesis::Kill => {
                let leader = self.leader().await;
                let mut victims = Vec::new();
                match rng.range(0, 4) {
                    0 | 1 => victims.extend(leader.or_else(|| ids.first().copied())),
                    2 => victims.push(pick(rng, &ids)),
                    _ => {
                        // A majority at once.
                        let mut all = ids.clone();
                        while victims.len() < ids.len() / 2 + 1 && !all.is_empty() {
                            let v = pick(rng, &all);
                            all.retain(|&x| x != v);
                            victims.push(v);
                        }
                    }
                }
                for v in &victims {
                    self.cluster.kill(*v);
                }
                self.note("kill", format!("kill -9 {victims:?} (leader was {leader:?})"));
                tokio::time::sleep(Duration::from_millis(rng.range(300, 2000))).await;
                for v in victims {
                    self.cluster.start_member(v);
                }
            }
            Nemesis::Pause => {
                let target = match self.leader().await {
                    Some(l) if rng.chance(0.7) => l,
                    _ => pick(rng, &ids),
                };
                if let Some(pid) = self.cluster.pid(target) {
                    signal(pid, libc::SIGSTOP);
                    self.paused.push(target);
                    self.note("pause", format!("SIGSTOP {target}"));
                    tokio::time::sleep(Duration::from_millis(rng.range(500, 3000))).await;
                    signal(pid, libc::SIGCONT);
                    self.paused.retain(|&p| p != target);
                    self.log.push(format!("{:>6.1}s SIGCONT {target}", self.started.elapsed().as_secs_f64()));
                }
            }
            Nemesis::Partition | Nemesis::Lossy => {
                let all: Vec<u64> = self.cluster.members.iter().map(|m| m.id).collect();
                let mut f = Faults::default();
                if kind == Nemesis::Lossy {
                    f.loss = [0.05, 0.1, 0.3][rng.range(0, 3) as usize];
                    f.delay_ms = (0, rng.range(5, 60));
                }
                if kind == Nemesis::Partition || rng.chance(0.3) {
                    let leader = self.leader().await;
                    let (desc, blocked) = partition(rng, &all, leader);
                    f.blocked = blocked;
                    self.note("partition", format!("partition: {desc}"));
                }
                if kind == Nemesis::Lossy {
                    self.note(
                        "lossy",
                        format!("loss {:.0}%, delay up to {} ms", f.loss * 100.0, f.delay_ms.1),
                    );
                }
                self.proxies.set(f);
                tokio::time::sleep(Duration::from_millis(rng.range(1000, 4000))).await;
                self.proxies.heal();
            }
            Nemesis::Membership => self.change_membership(rng).await,
            Nemesis::Replace => self.replace_member(rng).await,
            Nemesis::Mixed => unreachable!("resolved above"),
        }
        tokio::time::sleep(Duration::from_millis(rng.range(200, 1500))).await;
    }

    /// Removes a voter, adds a fresh member, or replaces one (remove, then
    /// add), keeping between 3 and 5 voters.
    async fn change_membership(&mut self, rng: &mut Rng) {
        let client = self.cluster.client();
        let voters = self.voters().await;
        if voters.is_empty() {
            return;
        }
        let remove = voters.len() > 3 && (voters.len() >= 5 || rng.chance(0.5));
        if remove {
            let victim = voters[rng.range(0, voters.len() as u64) as usize];
            match client.remove_member(victim).await {
                Ok(()) => {
                    self.note("membership", format!("removed member {victim}"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    self.cluster.kill(victim);
                }
                Err(e) => self.log.push(format!("remove {victim} refused: {e}")),
            }
        } else {
            let id = self.next_id;
            self.next_id += 1;
            let through = voters[0];
            let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy port");
            let addr = proxy.local_addr().expect("addr").to_string();
            let listen = format!("127.0.0.1:{}", util::free_ports(1)[0]);
            self.proxies.add_route(id, proxy, listen.clone());
            self.cluster.join_member_at(id, through, true, addr, Some(listen));
            self.note("membership", format!("added member {id}"));
            // Let it catch up and be promoted before the next change.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && !self.voters().await.contains(&id) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Harness {
    /// Issue 11's sequence: remove a voter, kill it, start a brand-new member
    /// at its address; then, more often than not, kill -9 a majority of the
    /// voters including the newcomer and the leader soon after its promotion
    /// (after 0 to 3 s), and restart them (the newcomer with its `--join`
    /// command and its data directory).
    async fn replace_member(&mut self, rng: &mut Rng) {
        let client = self.cluster.client();
        let voters = self.voters().await;
        let leader = self.leader().await;
        if voters.len() < 3 {
            return;
        }
        // A follower, as in the incident; now and then the leader itself.
        let followers: Vec<u64> = voters.iter().copied().filter(|&v| Some(v) != leader).collect();
        let victim = match leader {
            Some(l) if rng.chance(0.2) || followers.is_empty() => l,
            _ => followers[rng.range(0, followers.len() as u64) as usize],
        };
        if let Err(e) = client.remove_member(victim).await {
            self.log.push(format!("remove {victim} refused: {e}"));
            return;
        }
        self.note("membership", format!("removed member {victim}"));
        self.cluster.kill(victim);
        let old = self.cluster.member(victim);
        let (addr, listen) = (old.addr.clone(), old.listen.clone());
        let id = self.next_id;
        self.next_id += 1;
        self.proxies.hand_over(victim, id);
        let through = voters.iter().copied().find(|&v| v != victim).unwrap_or(victim);
        self.cluster.join_member_at(id, through, true, addr.clone(), listen);
        self.note("replace", format!("replaced member {victim} by {id} at {addr}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !self.voters().await.contains(&id) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !rng.chance(0.7) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.range(0, 3000))).await;
        let voters = self.voters().await;
        let leader = self.leader().await;
        let running = self.cluster.running();
        let mut victims: Vec<u64> = [Some(id), leader].into_iter().flatten().collect();
        victims.dedup();
        let mut rest: Vec<u64> =
            voters.iter().copied().filter(|v| !victims.contains(v) && running.contains(v)).collect();
        while victims.len() < voters.len() / 2 + 1 && !rest.is_empty() {
            victims.push(rest.remove(rng.range(0, rest.len() as u64) as usize));
        }
        victims.retain(|v| running.contains(v));
        for v in &victims {
            self.cluster.kill(*v);
        }
        self.note(
            "kill",
            format!("kill -9 majority {victims:?} of voters {voters:?} (newcomer {id}, leader {leader:?})"),
        );
        tokio::time::sleep(Duration::from_millis(rng.range(200, 2000))).await;
        for v in victims {
            self.cluster.start_member(v);
        }
    }
}

/// A random partition of `all`: (description, blocked directed links).
fn partition(
    rng: &mut Rng,
    all: &[u64],
    leader: Option<u64>,
) -> (String, std::collections::BTreeSet<(u64, u64)>) {
    let mut ids = all.to_vec();
    for i in (1..ids.len()).rev() {
        let j = rng.range(0, i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    let mut blocked = std::collections::BTreeSet::new();
    let mut cut = |a: &[u64], b: &[u64], both: bool| {
        for &x in a {
            for &y in b {
                blocked.insert((x, y));
                if both {
                    blocked.insert((y, x));
                }
            }
        }
    };
    let desc = match rng.range(0, 4) {
        0 => {
            let k = rng.range(1, ids.len() as u64 / 2 + 1) as usize;
            cut(&ids[..k], &ids[k..], true);
            format!("{:?} | {:?}", &ids[..k], &ids[k..])
        }
        1 => {
            let x = leader.unwrap_or(ids[0]);
            let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != x).collect();
            cut(&[x], &rest, true);
            format!("leader {x} isolated")
        }
        2 => {
            let bridge = ids[0];
            let half = (ids.len() - 1) / 2;
            let (a, b) = ids[1..].split_at(half);
            cut(a, b, true);
            format!("bridge {bridge} between {a:?} and {b:?}")
        }
        _ => {
            let x = leader.unwrap_or(ids[0]);
            let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != x).collect();
            if rng.chance(0.5) {
                cut(&[x], &rest, false);
                format!("{x} cannot send (one-way)")
            } else {
                cut(&rest, &[x], false);
                format!("{x} cannot receive (one-way)")
            }
        }
    };
    (desc, blocked)
}

/// Runs `nemesis` against a fresh proxied cluster for `secs` of workload,
/// then heals, reads every key and checks the history.
async fn jepsen(nemesis: Nemesis, seed: u64, secs: u64, members: u64) {
    let (cluster, routes) = Cluster::configure_proxied(
        members,
        // No automatic compaction: the watch checks replay from the start.
        "[log]\nmax_entries = 500\nretain_entries = 50\n[history]\nkeep_revisions = 0\nkeep_seconds = 0\n",
    );
    let proxies = Proxies::start(routes);
    let mut cluster = cluster;
    for id in 1..=members {
        cluster.start_member(id);
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    let endpoints = cluster.endpoints();
    let harness = Arc::new(tokio::sync::Mutex::new(Harness {
        cluster,
        proxies,
        next_id: members + 1,
        paused: Vec::new(),
        faults: BTreeMap::new(),
        log: Vec::new(),
        started: Instant::now(),
    }));
    let mut opts = WorkloadOptions::new(seed);
    opts.duration = Duration::from_secs(secs);
    opts.clients = 5;
    opts.keys = 5;
    if secs > 120 {
        opts.rotate_every = Some(Duration::from_secs(60));
    }
    // Transactions, watchers and locks run beside the workload.
    let coordination =
        Coordination::start(endpoints.clone(), &opts.prefix, seed, Instant::now() + opts.duration).await;
    // The nemesis runs until the workload ends.
    let stop = CancellationToken::new();
    let nemesis_task = {
        let (h, stop) = (harness.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rng = Rng::new(seed ^ 0x006e_656d_6573_6973);
            tokio::time::sleep(Duration::from_secs(1)).await;
            while !stop.is_cancelled() {
                h.lock().await.step(nemesis, &mut rng).await;
            }
        })
    };
    let recorded = {
        let (h, stop) = (harness.clone(), stop.clone());
        workload::run(endpoints, &opts, Duration::from_secs(60), move || async move {
            stop.cancel();
            let _ = nemesis_task.await;
            let mut h = h.lock().await;
            let t = h.started.elapsed();
            h.log.push(format!("{t:>6.1?} workload over, nemesis stopped; healing"));
            h.heal();
            h.cluster.wait_leader(Duration::from_secs(60)).await;
            let t = h.started.elapsed();
            h.log.push(format!("{t:>6.1?} healed; final reads"));
            // Read from the members there are now.
            Some(h.live_endpoints())
        })
        .await
    };
    let h = harness.lock().await;
    let recorded_at = h.started.elapsed();
    let coordination = coordination.finish(h.live_endpoints()).await;
    if std::env::var("GRAFT_JEPSEN_VERBOSE").is_ok() {
        println!("{}", h.log.join("\n"));
    }
    let checking = Instant::now();
    let verdict = graft_check::check(&recorded.history);
    println!(
        "{nemesis:?}: workload, healing and final reads took {recorded_at:.1?}; the check {:.1?}",
        checking.elapsed()
    );
    let faults: u64 = h.faults.values().sum();
    println!(
        "{nemesis:?} seed {seed}: {} operations ({} ok, {} writes with unknown outcome, {} failed reads), \
         {faults} faults {:?}, proxy {:?}: {verdict}",
        recorded.history.len(),
        recorded.ok,
        recorded.unknown,
        recorded.failed_reads,
        h.faults,
        h.proxies.stats()
    );
    if !verdict.is_linearizable() {
        panic!(
            "{nemesis:?} seed {seed}: {verdict}\nfaults:\n{}\nreplay the schedule: {}\n{}",
            h.log.join("\n"),
            format_args!("GRAFT_JEPSEN_SEED={seed} cargo test -p graft-kv --test jepsen -- --nocapture"),
            h.cluster.logs()
        );
    }
    match coordination {
        Ok(lines) => println!("{}", lines.join("\n")),
        Err(e) => panic!(
            "{nemesis:?} seed {seed}: {e}\nfaults:\n{}\nreplay the schedule: {}\n{}",
            h.log.join("\n"),
            format_args!("GRAFT_JEPSEN_SEED={seed} cargo test -p graft-kv --test jepsen -- --nocapture"),
            h.cluster.logs()
        ),
    }
    assert!(faults > 0, "the nemesis injected nothing");
    assert_eq!(recorded.final_reads_failed, 0, "every key is read once the faults heal");
    assert!(recorded.ok > 100, "too few operations completed: {}", recorded.ok);
    // The final reads are in the checked history, so the final state is one
    // the acknowledged operations allow. Every member must hold that same
    // state once it has applied what the leader committed.
    every_member_holds_the_final_state(&h.cluster, &opts.key_names()).await;
}

/// Reads every key linearizably, then from each running member's own state
/// once it has applied the leader's commit index: they must all agree.
async fn every_member_holds_the_final_state(cluster: &Cluster, keys: &[bytes::Bytes]) {
    use graft_kv::protocol::Consistency;
    let client = cluster.client();
    let mut want = Vec::new();
    for k in keys {
        want.push(client.get(k.clone()).await.expect("final linearizable read").map(|v| v.value));
    }
    let commit = cluster
        .statuses()
        .await
        .iter()
        .filter(|s| s.role == "Leader")
        .max_by_key(|s| s.term)
        .map(|s| s.commit)
        .expect("a leader after healing");
    cluster.wait_applied(commit, Duration::from_secs(60)).await;
    for id in cluster.running() {
        let member = cluster.client_at(id);
        for (k, want) in keys.iter().zip(&want) {
            let got =
                member.get_with(k.clone(), Consistency::Stale).await.expect("stale read").map(|v| v.value);
            assert_eq!(
                &got,
                want,
                "member {id} holds {k:?} = {got:?}, the cluster {want:?}\n{}",
                cluster.logs()
            );
        }
    }
    println!("final state: {} keys, identical on members {:?}", keys.len(), cluster.running());
}

fn seed() -> u64 {
    std::env::var("GRAFT_JEPSEN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_millis() as u64 % 1_000_000
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_of_members_the_leader_and_majorities() {
    jepsen(Nemesis::Kill, seed(), 25, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pauses_of_the_leader() {
    jepsen(Nemesis::Pause, seed(), 25, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_majority_minority_isolated_leader_bridge_one_way() {
    jepsen(Nemesis::Partition, seed(), 25, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_loss_and_delay() {
    jepsen(Nemesis::Lossy, seed(), 25, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_under_load() {
    jepsen(Nemesis::Membership, seed(), 25, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacements_at_the_same_address_and_majority_kills() {
    jepsen(Nemesis::Replace, seed(), 25, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak: run with --ignored, GRAFT_SOAK_SECS and GRAFT_SOAK_SEED"]
async fn soak() {
    let secs = std::env::var("GRAFT_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(1800);
    let seed = std::env::var("GRAFT_SOAK_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(seed);
    let nemesis = match std::env::var("GRAFT_SOAK_NEMESIS").as_deref() {
        Ok("kill") => Nemesis::Kill,
        Ok("pause") => Nemesis::Pause,
        Ok("partition") => Nemesis::Partition,
        Ok("lossy") => Nemesis::Lossy,
        Ok("membership") => Nemesis::Membership,
        Ok("replace") => Nemesis::Replace,
        Ok("mixed") | Err(_) => Nemesis::Mixed,
        Ok(other) => panic!(
            "GRAFT_SOAK_NEMESIS={other}: expected kill, pause, partition, lossy, membership, replace or mixed"
        ),
    };
    jepsen(nemesis, seed, secs, 5).await;
}
