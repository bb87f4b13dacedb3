//! A deterministic simulation of a whole cluster, seeded end to end.
//!
//! Every source of nondeterminism (message delay, loss, duplication and
//! reordering; partitions; crashes and restarts; client requests; each
//! member's election randomness) is drawn from one [`Rng`] seeded by the run's
//! seed, so a seed replays exactly. The fault rates themselves are drawn per
//! seed, so seeds differ in character: some lossy, some partition-heavy, some
//! crash-heavy, some calm.
//!
//! After every step the simulation checks Raft's safety properties:
//! - election safety: at most one leader per term;
//! - a member grants at most one vote per term, even across crashes;
//! - log matching: two durable logs with an entry of the same index and term
//!   are identical up to it;
//! - leader completeness: a new leader's log holds every applied entry;
//! - state machine safety: every member applies the same entry at each
//!   index, each index once, in order;
//! - linearizable reads: a ReadIndex read covers every write acknowledged
//!   before the read began;
//! - durable terms and commit indexes never go backwards.
//!
//! The state machine is durable only now and then (per seed: with every
//! `Ready`, or one in 3, 20, or only for compaction and snapshots), as
//! graft-kv's is: a crash rolls it back and the restarted member re-applies
//! from the log, and the checks above then also cover re-application. Some
//! seeds crash a majority at once, taking the leader and the member promoted
//! last (issue 11's sequence).
//!
//! Then the faults heal, and it checks liveness: a leader is elected and
//! every acknowledged write is applied on every member within a bounded time.

mod faults;
mod ready;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use bytes::Bytes;

use crate::message::{ConfState, Entry, EntryPayload, Index, Message, NodeId, Term};
use crate::raft::Role;
use crate::raw_node::RawNode;
use crate::rng::Rng;
use crate::storage::MemStorage;

/// Simulated time units per tick (a member's tick interval varies around it).
const TICK: u64 = 10;

/// The most client writes outstanding at once (the clients are closed-loop).
const MAX_OUTSTANDING_WRITES: usize = 64;

/// What a run is made of. [`SimOptions::for_seed`] draws the fault rates.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Cluster size.
    pub nodes: usize,
    /// Time units of faults before healing.
    pub chaos_time: u64,
    /// Time units allowed after healing for the cluster to converge.
    pub heal_time: u64,
    /// Probability that a message is lost.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub dup_rate: f64,
    /// Message delay range in time units (reordering follows from it).
    pub min_delay: u64,
    /// See `min_delay`.
    pub max_delay: u64,
    /// Per time unit: probability that the partition changes.
    pub partition_rate: f64,
    /// Per time unit: probability that a member crashes.
    pub crash_rate: f64,
    /// Per Ready: probability that the member crashes part-way through it.
    pub crash_in_ready_rate: f64,
    /// Per time unit: probability that a client proposes a write.
    pub propose_rate: f64,
    /// Per time unit: probability that a client starts a read.
    pub read_rate: f64,
    /// Per time unit: probability that the leader is asked to transfer leadership.
    pub transfer_rate: f64,
    /// Member ids go up to this (members beyond `nodes` join later).
    pub max_nodes: usize,
    /// Per time unit: probability of a membership change (add a learner,
    /// promote one, remove a member).
    pub membership_rate: f64,
    /// A member compacts its log once it holds more entries than this
    /// (0: never), so lagging members catch up by snapshot.
    pub compact_threshold: u64,
    /// Per `Ready` that applies entries: probability that the state machine
    /// is made durable with it. Below 1 the state machine lags the durable
    /// log as graft-kv's does (fsynced every few seconds, before compaction,
    /// with a snapshot install): a crash rolls it back to its last durable
    /// point and the restart re-applies the rest from the log.
    pub sm_sync_rate: f64,
    /// Of the crashes, the share that take down a majority of the voters at
    /// once: the leader, the member promoted last, and others (issue 11).
    pub majority_crash_rate: f64,
    /// Asynchronous storage, as graft-kv has it, when above 0: a `Ready`'s
    /// log write becomes durable up to this many time units after the
    /// `Ready` is taken, and its applying finishes up to this many after
    /// that, each as its own event, with deliveries, ticks and proposals in
    /// between; one `Ready` is in flight at a time (graft-kv takes the next
    /// only when the last is done). A crash loses what is not yet durable,
    /// the leader's own new entries included. At 0, a `Ready` is carried out
    /// in one step (possibly crashing part-way).
    pub disk_delay: u64,
    /// Most entries per append (small caps make appends carry part of what
    /// a follower misses while the commit index is ahead).
    pub max_entries_per_msg: usize,
    /// Most bytes per append.
    pub max_bytes_per_msg: u64,
    /// The flow-control window: appends in flight per follower.
    pub max_inflight_msgs: usize,
    /// The election timeout in ticks (a tick is about 10 time units; message
    /// delays go up to 60): from barely above the heartbeat to very long.
    pub election_tick: u32,
    /// Messages on one link arrive in the order sent (as over graft-kv's
    /// one TCP connection per peer); otherwise any reordering. Seeds with
    /// the smallest message caps always have it: with reordering, a wide
    /// window of one-entry appends mostly arrives out of order, each
    /// rejection restarts the stream, and progress crawls (as it would in
    /// etcd's raft); graft-kv's transport never reorders a link.
    pub fifo_links: bool,
}

impl SimOptions {
    /// Options for `seed`: the cluster size and fault rates are drawn from it.
    pub fn for_seed(seed: u64) -> SimOptions {
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_fa17);
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let pick = |rng: &mut Rng, choices: &[f64]| choices[rng.range(0, choices.len() as u64) as usize];
        let max_delay = pick(&mut rng, &[2.0, 10.0, 30.0, 60.0]) as u64;
        let mut opts = SimOptions {
            nodes,
            chaos_time: 20_000,
            heal_time: 6_000,
            drop_rate: pick(&mut rng, &[0.0, 0.01, 0.05, 0.2]),
            dup_rate: pick(&mut rng, &[0.0, 0.02, 0.1]),
            min_delay: 1,
            max_delay,
            partition_rate: pick(&mut rng, &[0.0, 0.001, 0.005, 0.02]),
            crash_rate: pick(&mut rng, &[0.0, 0.0005, 0.002, 0.01]),
            crash_in_ready_rate: pick(&mut rng, &[0.0, 0.0, 0.002, 0.01]),
            propose_rate: pick(&mut rng, &[0.05, 0.2, 0.5]),
            read_rate: pick(&mut rng, &[0.02, 0.1, 0.3]),
            transfer_rate: pick(&mut rng, &[0.0, 0.0, 0.0005]),
            max_nodes: nodes + 2,
            membership_rate: pick(&mut rng, &[0.0, 0.0, 0.0005, 0.002]),
            compact_threshold: pick(&mut rng, &[0.0, 0.0, 4.0, 20.0, 200.0]) as u64,
            sm_sync_rate: pick(&mut rng, &[1.0, 0.3, 0.05, 0.0]),
            majority_crash_rate: pick(&mut rng, &[0.0, 0.1, 0.3]),
            disk_delay: pick(&mut rng, &[0.0, 0.0, 2.0, 10.0, 40.0]) as u64,
            max_entries_per_msg: pick(&mut rng, &[1.0, 4.0, 16.0, 16.0, 1024.0]) as usize,
            max_bytes_per_msg: pick(&mut rng, &[16.0, 1024.0, 1_048_576.0, 1_048_576.0]) as u64,
            max_inflight_msgs: pick(&mut rng, &[1.0, 2.0, 8.0, 8.0, 256.0]) as usize,
            election_tick: pick(&mut rng, &[3.0, 10.0, 10.0, 10.0, 40.0]) as u32,
            fifo_links: false,
        };
        opts.fifo_links = rng.chance(0.5) || opts.max_bytes_per_msg < 1024 || opts.max_entries_per_msg == 1;
        // Long election timeouts need longer to converge after healing, and
        // so do narrow pipes (a backlog of hundreds of entries then moves a
        // few at a time).
        opts.heal_time += 150 * u64::from(opts.election_tick);
        if opts.is_narrow_pipe() {
            opts.heal_time += 30_000;
        }
        opts
    }

    /// About how many entries one follower's pipe holds at once: entries
    /// per append (commands are about 16 bytes) times the appends in flight.
    fn pipe_width(&self) -> u64 {
        let bytes_per_entry = 16;
        let per_msg =
            (self.max_entries_per_msg as u64).min((self.max_bytes_per_msg / bytes_per_entry).max(1));
        per_msg * self.max_inflight_msgs as u64
    }

    /// Whether a backlog moves only a few entries per round trip.
    fn is_narrow_pipe(&self) -> bool {
        self.pipe_width() < 32
    }

    /// The extra time after healing that a backlog of `entries` needs
    /// through a narrow pipe: a round trip (two message delays and a disk
    /// write, with a tick of slack) per pipe's width of entries. Wide pipes
    /// need none beyond `heal_time`.
    fn backlog_time(&self, entries: u64) -> u64 {
        if !self.is_narrow_pipe() {
            return 0;
        }
        let round_trip = 2 * self.max_delay + 2 * self.disk_delay + TICK;
        entries * round_trip / self.pipe_width().max(1)
    }
}

/// A safety or liveness violation, with where it happened.
#[derive(Debug)]
pub struct SimFailure {
    /// The seed that reproduces it.
    pub seed: u64,
    /// The step (time unit) at which it was detected.
    pub step: u64,
    /// What went wrong.
    pub what: String,
    /// The last events before it, oldest first.
    pub recent: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {} failed at step {}: {}", self.seed, self.step, self.what)?;
        writeln!(f, "last events:")?;
        for e in &self.recent {
            writeln!(f, "  {e}")?;
        }
        write!(f, "replay: GRAFT_SIM_SEED={} cargo test -p graft-core --test sim -- --nocapture", self.seed)
    }
}

/// What a successful run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// A hash of every event, in order: equal for equal seeds.
    pub trace_hash: u64,
    /// Steps simulated.
    pub steps: u64,
    /// Writes acknowledged to clients.
    pub acked_writes: u64,
    /// Reads served.
    pub reads: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Crashes injected (whole-member and part-way through a Ready).
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Elections won.
    pub leaders: u64,
    /// Snapshots installed.
    pub snapshots: u64,
    /// Membership changes committed... proposed and accepted by a leader.
    pub conf_changes: u64,
    /// Of those, accepted while a partition was in force.
    pub conf_changes_partitioned: u64,
    /// Snapshot transfers whose stream broke (data lost, or delivered but
    /// reported failed: cut after the last byte, before the acknowledgement).
    pub snapshots_cut: u64,
    /// Appends whose commit index was ahead of the last entry they carried
    /// (a follower learning of commitment beyond what it holds).
    pub partial_appends: u64,
    /// Entries members discarded from their logs (divergent suffixes of
    /// old terms replaced by the leader's).
    pub truncated_entries: u64,
    /// The longest suffix one member discarded at once.
    pub longest_truncation: u64,
}

/// One member's durable state machine: which entries it applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StateMachine {
    /// Invariant: every index up to here was applied exactly once, in order
    /// (or came with a snapshot).
    applied: Index,
    /// A hash of everything applied, in order: the state itself.
    chain: u64,
}

/// The second half of a `Ready` whose disk work is in progress.
struct DiskJob {
    hard_state: Option<crate::HardState>,
    entries: Vec<Entry>,
    persisted_messages: Vec<Message>,
    committed: Vec<Entry>,
    read_states: Vec<crate::ReadState>,
    /// When the log write is durable; `None` once it is.
    log_at: Option<u64>,
    /// When the applying is done (not before the log write).
    done_at: u64,
}

struct SimNode {
    id: NodeId,
    /// `None` while crashed.
    raw: Option<RawNode<MemStorage>>,
    /// The durable log while crashed (while up, it is the node's storage).
    disk: Option<MemStorage>,
    /// With asynchronous storage, the log as durable while up (the node's
    /// storage is then its view, written when a `Ready` is taken, as
    /// graft-kv's is); a crash keeps this one. `None` with synchronous
    /// storage.
    durable: Option<MemStorage>,
    /// The `Ready` whose disk work is in progress (asynchronous storage).
    job: Option<DiskJob>,
    /// The term of every entry this member has counted as committed (as its
    /// `Ready`s reported the commit index): none may ever be replaced by an
    /// entry of another term, whatever crashes lose.
    committed_terms: BTreeMap<Index, Term>,
    /// The state machine as applied (volatile past `sm_durable`).
    sm: StateMachine,
    /// The state machine as a crash leaves it. Invariant:
    /// `sm_durable.applied <= sm.applied`, and the log is never compacted
    /// past `sm_durable.applied`.
    sm_durable: StateMachine,
    /// Per member: how many time units its ticks are apart.
    tick_every: u64,
    next_tick: u64,
    restart_at: Option<u64>,
    incarnation: u64,
    /// Prefix hashes of the durable log: `prefix[i]` covers entries `1..=i`.
    prefix: Vec<u64>,
    last_commit: Index,
    last_term: Term,
    /// Snapshot data received and not yet installed, by index.
    staged: BTreeMap<Index, StateMachine>,
    /// Has been started at least once.
    started: bool,
}

#[derive(Clone, Debug)]
struct Proposal {
    term: Term,
    invoked: u64,
}

#[derive(Clone, Debug)]
struct PendingRead {
    node: NodeId,
    /// The highest log index of any write acknowledged before the read began.
    must_cover: Index,
}

/// The simulated cluster.
pub struct Sim {
    seed: u64,
    opts: SimOptions,
    rng: Rng,
    now: u64,
    nodes: Vec<SimNode>,
    /// In-flight messages by delivery time (then send order).
    net: BinaryHeap<Reverse<(u64, u64, usize)>>,
    net_msgs: HashMap<usize, (Message, Option<StateMachine>)>,
    net_seq: u64,
    /// With FIFO links: the latest delivery time on each link.
    link_last: HashMap<(NodeId, NodeId), u64>,
    /// Directed links that drop everything: (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    partition_until: u64,
    healing: bool,
    // Checker state.
    leaders: BTreeMap<Term, NodeId>,
    votes: BTreeMap<(NodeId, Term), NodeId>,
    /// (index, term) -> prefix hash, across every member's durable log.
    log_prefix: HashMap<(Index, Term), u64>,
    /// index -> (term, payload hash, chain hash up to it) of every applied entry.
    applied: Vec<(Term, u64, u64)>,
    /// Snapshot sends to report: (when, leader, follower, delivered).
    snapshot_reports: Vec<(u64, NodeId, NodeId, bool)>,
    proposals: BTreeMap<(NodeId, Index), Proposal>,
    max_acked: Index,
    reads: BTreeMap<u64, PendingRead>,
    next_read: u64,
    next_cmd: u64,
    trace: u64,
    recent: std::collections::VecDeque<String>,
    report: SimReport,
    /// The member most recently made a voter (a majority crash takes it).
    last_promoted: Option<NodeId>,
}

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn entry_hash(e: &Entry) -> u64 {
    let h = fnv(FNV_OFFSET, &e.term.to_le_bytes());
    match &e.payload {
        EntryPayload::Noop => fnv(h, b"noop"),
        EntryPayload::Command(d) => fnv(fnv(h, b"cmd"), d),
        EntryPayload::Config(c) => fnv(fnv(h, b"conf"), format!("{:?}", c.conf).as_bytes()),
    }
}

type Check = Result<(), String>;

impl Sim {
    /// A cluster for `seed` with `opts`.
    pub fn new(seed: u64, opts: SimOptions) -> Sim {
        let mut rng = Rng::new(seed);
        let voters: Vec<NodeId> = (1..=opts.nodes as u64).collect();
        let nodes = (1..=opts.max_nodes.max(opts.nodes) as u64)
            .map(|id| {
                let tick_every = rng.range(TICK - 1, TICK + 2);
                let initial = voters.contains(&id);
                SimNode {
                    id,
                    raw: None,
                    disk: initial
                        .then(|| MemStorage::new_with_conf(ConfState::with_voters(voters.iter().copied()))),
                    durable: None,
                    job: None,
                    committed_terms: BTreeMap::new(),
                    sm: StateMachine { applied: 0, chain: FNV_OFFSET },
                    sm_durable: StateMachine { applied: 0, chain: FNV_OFFSET },
                    tick_every,
                    next_tick: rng.range(0, tick_every),
                    restart_at: initial.then_some(0),
                    incarnation: 0,
                    prefix: vec![FNV_OFFSET],
                    last_commit: 0,
                    last_term: 0,
                    staged: BTreeMap::new(),
                    started: initial,
                }
            })
            .collect();
        Sim {
            seed,
            opts,
            rng,
            now: 0,
            nodes,
            net: BinaryHeap::new(),
            net_msgs: HashMap::new(),
            net_seq: 0,
            link_last: HashMap::new(),
            blocked: BTreeSet::new(),
            partition_until: 0,
            healing: false,
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            log_prefix: HashMap::new(),
            applied: vec![(0, 0, FNV_OFFSET)],
            snapshot_reports: Vec::new(),
            proposals: BTreeMap::new(),
            max_acked: 0,
            reads: BTreeMap::new(),
            next_read: 1,
            next_cmd: 1,
            trace: FNV_OFFSET,
            recent: std::collections::VecDeque::new(),
            report: SimReport::default(),
            last_promoted: None,
        }
    }

    fn event(&mut self, s: String) {
        self.trace = fnv(self.trace, s.as_bytes());
        if self.recent.len() == 40 {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("[{}] {s}", self.now));
    }

    fn fail(&self, what: String) -> SimFailure {
        SimFailure { seed: self.seed, step: self.now, what, recent: self.recent.iter().cloned().collect() }
    }

    /// Runs the whole simulation: chaos, then healing and the liveness check.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        while self.now < self.opts.chaos_time {
            self.step().map_err(|e| self.fail(e))?;
        }
        self.heal();
        // A narrow pipe moves a long log slowly, but at a bounded pace.
        let backlog = self.nodes.iter().filter_map(|n| n.raw.as_ref()).map(|r| r.status().last_index).max();
        let heal_time = self.opts.heal_time + self.opts.backlog_time(backlog.unwrap_or(0));
        let deadline = self.now + heal_time;
        let mut final_write: Option<(NodeId, Index)> = None;
        let mut proposed_at = 0;
        loop {
            self.step().map_err(|e| self.fail(e))?;
            // Once there is a leader, one more write pushes every earlier
            // entry through. Propose it again if it was lost (its proposer
            // crashed or was deposed before it committed).
            let lost = final_write.is_some_and(|(n, i)| {
                self.max_acked < i
                    && (!self.proposals.contains_key(&(n, i))
                        || (self.leader() != Some((n - 1) as usize) && self.now - proposed_at > 30 * TICK))
            });
            if final_write.is_none() || lost {
                if let Some(l) = self.leader() {
                    let data = Bytes::from(format!("final-{}", self.seed));
                    if let Some(raw) = self.nodes[l].raw.as_mut() {
                        if let Ok(index) = raw.propose(data) {
                            let term = raw.term();
                            self.proposals
                                .insert((l as u64 + 1, index), Proposal { term, invoked: self.now });
                            final_write = Some((l as u64 + 1, index));
                            proposed_at = self.now;
                        }
                    }
                }
            }
            if self.converged(final_write) {
                break;
            }
            if self.now >= deadline {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| match &n.raw {
                        Some(r) => {
                            let st = r.status();
                            format!(
                                "{}:{:?}/t{}/applied {}/log {}..={} (last term {:?})/voters {:?} learners {:?}",
                                n.id,
                                r.role(),
                                r.term(),
                                n.sm.applied,
                                st.first_index,
                                st.last_index,
                                r.log_term(st.last_index),
                                st.conf.voters,
                                st.conf.learners
                            )
                        }
                        None => format!("{}:down", n.id),
                    })
                    .collect();
                return Err(self.fail(format!(
                    "liveness: {} time units after healing, the cluster has not converged \
                     (highest acknowledged write {}, final write {:?}): {}; options {:?}",
                    heal_time,
                    self.max_acked,
                    final_write,
                    states.join(", "),
                    self.opts
                )));
            }
        }
        self.report.trace_hash = self.trace;
        self.report.steps = self.now;
        Ok(self.report)
    }

    fn converged(&self, final_write: Option<(NodeId, Index)>) -> bool {
        let Some((_, index)) = final_write else { return false };
        let Some(l) = self.leader() else { return false };
        let Some(conf) = self.nodes[l].raw.as_ref().map(|r| r.conf().clone()) else { return false };
        let acked_final = self.max_acked >= index;
        acked_final
            && conf.members().all(|id| {
                let n = &self.nodes[(id - 1) as usize];
                n.raw.is_some() && n.sm.applied >= self.max_acked
            })
    }

    fn leader(&self) -> Option<usize> {
        let mut best: Option<(Term, usize)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(r) = &n.raw {
                if r.role() == Role::Leader && best.is_none_or(|(t, _)| r.term() > t) {
                    best = Some((r.term(), i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// One time unit.
    fn step(&mut self) -> Check {
        self.now += 1;
        if !self.healing {
            self.inject_faults();
        }
        // Restarts.
        for i in 0..self.nodes.len() {
            if self.nodes[i].restart_at.is_some_and(|t| t <= self.now) {
                self.restart(i)?;
            }
        }
        // Deliveries.
        while let Some(Reverse((at, _, key))) = self.net.peek().copied() {
            if at > self.now {
                break;
            }
            self.net.pop();
            if let Some((m, data)) = self.net_msgs.remove(&key) {
                self.deliver(m, data)?;
            }
        }
        // The leaders learn how their snapshot sends went.
        let due: Vec<(u64, NodeId, NodeId, bool)> =
            self.snapshot_reports.iter().copied().filter(|r| r.0 <= self.now).collect();
        self.snapshot_reports.retain(|r| r.0 > self.now);
        for (_, leader, to, ok) in due {
            if let Some(raw) = self.nodes[(leader - 1) as usize].raw.as_mut() {
                raw.report_snapshot(to, ok);
            }
        }
        // Ticks.
        for i in 0..self.nodes.len() {
            if self.nodes[i].raw.is_some() && self.nodes[i].next_tick <= self.now {
                self.nodes[i].next_tick = self.now + self.nodes[i].tick_every;
                if let Some(raw) = self.nodes[i].raw.as_mut() {
                    raw.tick().map_err(|e| format!("tick on {}: {e}", i + 1))?;
                }
            }
        }
        // Clients.
        // After healing, only the final write is proposed, so that "every
        // acknowledged write is applied everywhere" has a fixed target.
        if self.rng.chance(self.opts.propose_rate) && !self.healing {
            self.client_write();
        }
        if self.rng.chance(self.opts.read_rate) {
            self.client_read();
        }
        if !self.healing && self.rng.chance(self.opts.transfer_rate) {
            if let Some(l) = self.leader() {
                let to = self.rng.range(1, self.nodes.len() as u64 + 1);
                if let Some(raw) = self.nodes[l].raw.as_mut() {
                    let _ = raw.transfer_leader(to);
                }
                self.event(format!("transfer {} -> {to}", l + 1));
            }
        }
        if !self.healing && self.rng.chance(self.opts.membership_rate) {
            self.change_membership();
        }
        // Disk work finishing, then Ready processing.
        for i in 0..self.nodes.len() {
            self.progress_job(i)?;
            self.process_ready(i)?;
        }
        Ok(())
    }

    fn client_write(&mut self) {
        // Clients wait for their answers, as graft_kv::Client's callers do:
        // at most this many writes are outstanding at once, so a narrow
        // pipe is not buried under an unbounded backlog.
        if self.proposals.len() >= MAX_OUTSTANDING_WRITES {
            return;
        }
        // Clients mostly find the leader; sometimes they ask anyone.
        let target = match self.leader() {
            Some(l) if self.rng.chance(0.9) => l,
            _ => self.rng.range(0, self.nodes.len() as u64) as usize,
        };
        let id = self.next_cmd;
        self.next_cmd += 1;
        let Some(raw) = self.nodes[target].raw.as_mut() else { return };
        if let Ok(index) = raw.propose(Bytes::from(format!("w{id}"))) {
            let term = raw.term();
            self.proposals.insert((target as u64 + 1, index), Proposal { term, invoked: self.now });
            self.event(format!("propose w{id} at {} index {index} term {term}", target + 1));
        }
    }

    fn client_read(&mut self) {
        let target = match self.leader() {
            Some(l) if self.rng.chance(0.9) => l,
            _ => self.rng.range(0, self.nodes.len() as u64) as usize,
        };
        let ctx = self.next_read;
        let must_cover = self.max_acked;
        let Some(raw) = self.nodes[target].raw.as_mut() else { return };
        if raw.read_index(ctx).is_ok() {
            self.next_read += 1;
            self.reads.insert(ctx, PendingRead { node: target as u64 + 1, must_cover });
            self.event(format!("read r{ctx} at {}", target + 1));
        }
    }
}

/// Runs the simulation for `seed` with the options drawn from it.
pub fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    Sim::new(seed, SimOptions::for_seed(seed)).run()
}
