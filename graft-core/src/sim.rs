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

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::fmt;

use bytes::Bytes;

use crate::config::Config;
use crate::message::{
    ConfChange, ConfChangeKind, ConfState, Entry, EntryPayload, Index, Message, MessageBody, NodeId, Term,
};
use crate::raft::Role;
use crate::raw_node::RawNode;
use crate::rng::Rng;
use crate::storage::MemStorage;

/// Simulated time units per tick (a member's tick interval varies around it).
const TICK: u64 = 10;

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
}

impl SimOptions {
    /// Options for `seed`: the cluster size and fault rates are drawn from it.
    pub fn for_seed(seed: u64) -> SimOptions {
        let mut rng = Rng::new(seed ^ 0x005e_ed0f_fa17);
        let nodes = if rng.chance(0.5) { 3 } else { 5 };
        let pick = |rng: &mut Rng, choices: &[f64]| choices[rng.range(0, choices.len() as u64) as usize];
        let max_delay = pick(&mut rng, &[2.0, 10.0, 30.0, 60.0]) as u64;
        SimOptions {
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
        }
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

struct SimNode {
    id: NodeId,
    /// `None` while crashed.
    raw: Option<RawNode<MemStorage>>,
    /// The durable log while crashed (while up, it is the node's storage).
    disk: Option<MemStorage>,
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
        let deadline = self.now + self.opts.heal_time;
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
                     (highest acknowledged write {}, final write {:?}): {}",
                    self.opts.heal_time,
                    self.max_acked,
                    final_write,
                    states.join(", ")
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

    fn heal(&mut self) {
        self.healing = true;
        self.blocked.clear();
        self.opts.drop_rate = 0.0;
        self.opts.dup_rate = 0.0;
        self.opts.max_delay = self.opts.max_delay.min(10);
        for n in &mut self.nodes {
            if n.raw.is_none() && n.started {
                n.restart_at = Some(self.now);
            }
        }
        self.event("heal".into());
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
        // Ready processing.
        for i in 0..self.nodes.len() {
            self.process_ready(i)?;
        }
        Ok(())
    }

    /// Asks the leader for a random single-member change.
    fn change_membership(&mut self) {
        let Some(l) = self.leader() else { return };
        let Some(conf) = self.nodes[l].raw.as_ref().map(|r| r.conf().clone()) else { return };
        let learners: Vec<NodeId> = conf.learners.iter().copied().collect();
        let members: Vec<NodeId> = conf.members().collect();
        let outside: Vec<NodeId> = self.nodes.iter().map(|n| n.id).filter(|id| !conf.contains(*id)).collect();
        let (kind, node) = match self.rng.range(0, 3) {
            0 if !outside.is_empty() => {
                (ConfChangeKind::AddLearner, outside[self.rng.range(0, outside.len() as u64) as usize])
            }
            1 if !learners.is_empty() => {
                (ConfChangeKind::AddVoter, learners[self.rng.range(0, learners.len() as u64) as usize])
            }
            2 => (ConfChangeKind::Remove, members[self.rng.range(0, members.len() as u64) as usize]),
            _ => return,
        };
        let cc = ConfChange { kind, node, context: Bytes::new() };
        let Some(raw) = self.nodes[l].raw.as_mut() else { return };
        let result = raw.propose_conf_change(cc);
        let accepted = result.is_ok();
        self.event(format!("conf change {kind:?} {node} at {}: {result:?}", l + 1));
        if accepted {
            self.report.conf_changes += 1;
            if kind == ConfChangeKind::AddVoter {
                self.last_promoted = Some(node);
            }
            // A member joining for the first time starts empty.
            let n = &mut self.nodes[(node - 1) as usize];
            if kind == ConfChangeKind::AddLearner && !n.started {
                n.started = true;
                n.disk = Some(MemStorage::new_with_conf(ConfState::default()));
                n.restart_at = Some(self.now);
            }
        }
    }

    fn inject_faults(&mut self) {
        let n = self.nodes.len() as u64;
        if self.now >= self.partition_until && !self.blocked.is_empty() {
            self.blocked.clear();
            self.event("partition healed".into());
        }
        if self.rng.chance(self.opts.partition_rate) {
            self.partition();
        }
        if self.rng.chance(self.opts.crash_rate) && self.rng.chance(self.opts.majority_crash_rate) {
            self.crash_majority();
        } else if self.rng.chance(self.opts.crash_rate) {
            // Crash the leader half of the time.
            let victim = match self.leader() {
                Some(l) if self.rng.chance(0.5) => l,
                _ => self.rng.range(0, n) as usize,
            };
            if self.nodes[victim].raw.is_some() {
                self.crash(victim);
                let down = self.rng.range(TICK, 40 * TICK);
                self.nodes[victim].restart_at = Some(self.now + down);
            }
        }
    }

    fn partition(&mut self) {
        let ids: Vec<NodeId> = (1..=self.nodes.len() as u64).collect();
        let mut shuffled = ids.clone();
        for i in (1..shuffled.len()).rev() {
            let j = self.rng.range(0, i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
        self.blocked.clear();
        let kind = self.rng.range(0, 5);
        let leader = self.leader().map(|l| l as u64 + 1);
        let cut = |blocked: &mut BTreeSet<(NodeId, NodeId)>, a: &[NodeId], b: &[NodeId], both: bool| {
            for &x in a {
                for &y in b {
                    blocked.insert((x, y));
                    if both {
                        blocked.insert((y, x));
                    }
                }
            }
        };
        let desc = match kind {
            0 => {
                // Majority / minority.
                let k = self.rng.range(1, ids.len() as u64 / 2 + 1) as usize;
                cut(&mut self.blocked, &shuffled[..k], &shuffled[k..], true);
                format!("split {:?} | {:?}", &shuffled[..k], &shuffled[k..])
            }
            1 => {
                // Isolate the leader (or anyone).
                let x = leader.unwrap_or(shuffled[0]);
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&i| i != x).collect();
                cut(&mut self.blocked, &[x], &rest, true);
                format!("isolate {x}")
            }
            2 => {
                // One-way: a member can send but not receive (or the reverse).
                let x = shuffled[0];
                let rest: Vec<NodeId> = ids.iter().copied().filter(|&i| i != x).collect();
                if self.rng.chance(0.5) {
                    cut(&mut self.blocked, &rest, &[x], false);
                    format!("{x} deaf")
                } else {
                    cut(&mut self.blocked, &[x], &rest, false);
                    format!("{x} mute")
                }
            }
            3 => {
                // A bridge: two halves that only one member connects.
                let bridge = shuffled[0];
                let half = (ids.len() - 1) / 2;
                let (a, b) = shuffled[1..].split_at(half);
                cut(&mut self.blocked, a, b, true);
                format!("bridge {bridge} between {a:?} and {b:?}")
            }
            _ => {
                // Random one-way links.
                for &x in &ids {
                    for &y in &ids {
                        if x != y && self.rng.chance(0.3) {
                            self.blocked.insert((x, y));
                        }
                    }
                }
                format!("random links {:?}", self.blocked)
            }
        };
        self.partition_until = self.now + self.rng.range(20 * TICK, 150 * TICK);
        self.report.partitions += 1;
        self.event(format!("partition: {desc}"));
    }

    /// Crashes a majority of the leader's voters at once: the leader, the
    /// member promoted last (issue 11: a newcomer killed soon after its
    /// promotion, with the old leader), then others at random.
    fn crash_majority(&mut self) {
        let Some(l) = self.leader() else { return };
        let Some(voters) = self.nodes[l].raw.as_ref().map(|r| r.conf().voters.clone()) else { return };
        let mut victims: Vec<NodeId> = vec![l as u64 + 1];
        if let Some(p) = self.last_promoted.filter(|p| voters.contains(p) && !victims.contains(p)) {
            victims.push(p);
        }
        let mut rest: Vec<NodeId> = voters.iter().copied().filter(|v| !victims.contains(v)).collect();
        while victims.len() < voters.len() / 2 + 1 && !rest.is_empty() {
            victims.push(rest.remove(self.rng.range(0, rest.len() as u64) as usize));
        }
        self.event(format!("majority crash {victims:?} of voters {voters:?}"));
        for v in victims {
            let i = (v - 1) as usize;
            if self.nodes[i].raw.is_some() {
                self.crash(i);
                let down = self.rng.range(TICK, 40 * TICK);
                self.nodes[i].restart_at = Some(self.now + down);
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(raw) = node.raw.take() {
            node.disk = Some(raw.storage().clone());
        }
        // What was applied since the state machine was last made durable is
        // lost; the log still holds it.
        node.sm = node.sm_durable.clone();
        let id = node.id;
        // Outstanding requests on the member are lost with it.
        self.proposals.retain(|(n, _), _| *n != id);
        self.reads.retain(|_, r| r.node != id);
        self.report.crashes += 1;
        self.event(format!("crash {id}"));
    }

    fn restart(&mut self, i: usize) -> Check {
        let node = &mut self.nodes[i];
        node.restart_at = None;
        let Some(disk) = node.disk.take() else { return Ok(()) };
        node.incarnation += 1;
        let mut cfg = Config::new(node.id);
        cfg.applied = node.sm.applied;
        cfg.seed = self.seed.wrapping_mul(31).wrapping_add(node.id * 1_000_003 + node.incarnation);
        cfg.max_entries_per_msg = 16;
        cfg.max_inflight_msgs = 8;
        let raw = RawNode::new(cfg, disk).map_err(|e| format!("restart of {}: {e}", node.id))?;
        node.raw = Some(raw);
        node.next_tick = self.now + node.tick_every;
        let id = node.id;
        self.event(format!("start {id}"));
        Ok(())
    }

    fn send(&mut self, m: Message) -> Check {
        // A member grants at most one vote per term, crash or not.
        if let MessageBody::VoteResponse { pre_vote: false, granted: true } = m.body {
            if let Some(prev) = self.votes.insert((m.from, m.term), m.to) {
                if prev != m.to {
                    return Err(format!(
                        "member {} voted for both {prev} and {} in term {}",
                        m.from, m.to, m.term
                    ));
                }
            }
        }
        let mut m = m;
        let mut data = None;
        if let MessageBody::Snapshot { meta } = &mut m.body {
            // As graft-kv does: send the state machine as it is now, which
            // is at or after the log's base that the core named.
            let sender = &self.nodes[(m.from - 1) as usize];
            let Some(raw) = sender.raw.as_ref() else { return Ok(()) };
            let applied = sender.sm.applied;
            let Some(term) = raw.log_term(applied) else {
                return Err(format!("{} cannot find the term of its applied index {applied}", m.from));
            };
            *meta = crate::SnapshotMeta { index: applied, term, conf: raw.conf_at(applied) };
            data = Some(sender.sm.clone());
        }
        let lost = self.blocked.contains(&(m.from, m.to)) || self.rng.chance(self.opts.drop_rate);
        if data.is_some() {
            let at = self.now + self.rng.range(self.opts.min_delay, self.opts.max_delay + 1);
            self.snapshot_reports.push((at, m.from, m.to, !lost));
        }
        if lost {
            return Ok(());
        }
        let copies = if self.rng.chance(self.opts.dup_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let at = self.now + self.rng.range(self.opts.min_delay, self.opts.max_delay + 1);
            self.net_seq += 1;
            let key = self.net_seq as usize;
            self.net_msgs.insert(key, (m.clone(), data.clone()));
            self.net.push(Reverse((at, self.net_seq, key)));
        }
        Ok(())
    }

    fn deliver(&mut self, m: Message, data: Option<StateMachine>) -> Check {
        let i = (m.to - 1) as usize;
        let Some(node) = self.nodes.get_mut(i) else { return Ok(()) };
        if let (Some(data), true) = (data, node.raw.is_some()) {
            // The data arrives whole before the message is stepped.
            node.staged.insert(data.applied, data);
        }
        let Some(raw) = node.raw.as_mut() else { return Ok(()) };
        let desc = format!("{} -> {} t{} {}", m.from, m.to, m.term, m.body.kind());
        raw.step(m).map_err(|e| format!("step on {}: {e}", i + 1))?;
        self.report.delivered += 1;
        self.event(desc);
        Ok(())
    }

    fn client_write(&mut self) {
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

    /// Carries out one Ready of member `i`, possibly crashing part-way.
    fn process_ready(&mut self, i: usize) -> Check {
        let id = self.nodes[i].id;
        let Some(raw) = self.nodes[i].raw.as_mut() else { return Ok(()) };
        if !raw.has_ready() {
            return Ok(());
        }
        let rd = raw.ready().map_err(|e| format!("ready on {id}: {e}"))?;
        // Where (if anywhere) this member crashes: 0 before anything, 1 after
        // sending `messages`, 2 after persisting, 3 after sending the rest,
        // 4 after applying.
        let crash_at = if !self.healing && self.rng.chance(self.opts.crash_in_ready_rate) {
            Some(self.rng.range(0, 5))
        } else {
            None
        };

        if let Some(ss) = rd.soft_state {
            let term = self.nodes[i].raw.as_ref().map_or(0, |r| r.term());
            self.event(format!("{id} is {:?} in term {term}", ss.role));
            if ss.role == Role::Leader {
                self.on_new_leader(i, term)?;
            }
            if ss.role != Role::Leader {
                // Reads in flight on a deposed leader are never answered.
                self.reads.retain(|_, r| r.node != id);
            }
        }
        if crash_at == Some(0) {
            return self.crash_now(i);
        }
        for m in rd.messages {
            self.send(m)?;
        }
        if crash_at == Some(1) {
            return self.crash_now(i);
        }
        if let Some(meta) = &rd.snapshot {
            self.install_snapshot(i, meta)?;
        }
        self.persist(i, rd.hard_state, &rd.entries)?;
        if crash_at == Some(2) {
            return self.crash_now(i);
        }
        for m in rd.persisted_messages {
            self.send(m)?;
        }
        if crash_at == Some(3) {
            return self.crash_now(i);
        }
        self.apply(i, &rd.committed_entries)?;
        for rs in rd.read_states {
            if let Some(read) = self.reads.remove(&rs.ctx) {
                if rs.index < read.must_cover {
                    return Err(format!(
                        "read r{} on {id} has index {} but a write at index {} was acknowledged before it began",
                        rs.ctx, rs.index, read.must_cover
                    ));
                }
                self.report.reads += 1;
                self.event(format!("read r{} served at index {}", rs.ctx, rs.index));
            }
        }
        if crash_at == Some(4) {
            return self.crash_now(i);
        }
        if let Some(raw) = self.nodes[i].raw.as_mut() {
            raw.advance().map_err(|e| format!("advance on {id}: {e}"))?;
        }
        self.maybe_compact(i)
    }

    /// Installs the staged snapshot data, as graft-kv does: state machine and
    /// log base together.
    fn install_snapshot(&mut self, i: usize, meta: &crate::SnapshotMeta) -> Check {
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(data) = node.staged.remove(&meta.index) else {
            return Err(format!("{id} was told to install snapshot {} without having its data", meta.index));
        };
        node.staged.clear();
        // State machine safety across snapshots: the data is exactly the
        // state every member reached at that index.
        match self.applied.get(meta.index as usize) {
            Some(&(term, _, chain)) if term == meta.term && chain == data.chain => {}
            other => {
                return Err(format!(
                    "snapshot {} (term {}) installed on {id} does not match the applied history {other:?}",
                    meta.index, meta.term
                ))
            }
        }
        let Some(raw) = node.raw.as_mut() else { return Ok(()) };
        raw.storage_mut().apply_snapshot(meta.clone());
        // graft-kv installs a snapshot durably.
        node.sm_durable = data.clone();
        node.sm = data;
        let base = self.log_prefix.get(&(meta.index, meta.term)).copied().unwrap_or(FNV_OFFSET);
        node.prefix = vec![0; meta.index as usize];
        node.prefix.push(base);
        node.last_commit = node.last_commit.max(meta.index);
        // Writes proposed here and overtaken by the snapshot: outcome unknown.
        self.proposals.retain(|(n, idx), _| *n != id || *idx > meta.index);
        self.report.snapshots += 1;
        self.event(format!("{id} installed snapshot {} term {}", meta.index, meta.term));
        Ok(())
    }

    /// Compacts the log once it is over the threshold, keeping a random tail.
    fn maybe_compact(&mut self, i: usize) -> Check {
        let threshold = self.opts.compact_threshold;
        if threshold == 0 {
            return Ok(());
        }
        let keep = self.rng.range(0, threshold / 2 + 1);
        let node = &mut self.nodes[i];
        let Some(raw) = node.raw.as_mut() else { return Ok(()) };
        let st = raw.status();
        let upto = node.sm.applied.saturating_sub(keep);
        if st.last_index + 1 - st.first_index <= threshold || upto < st.first_index {
            return Ok(());
        }
        // Never past what the state machine holds durably, or a crash would
        // leave it behind the log's base: as graft-kv does, it is made
        // durable first.
        if node.sm_durable.applied < upto {
            node.sm_durable = node.sm.clone();
        }
        let conf = raw.conf_at(upto);
        raw.storage_mut().compact(upto, conf).map_err(|e| format!("compact on {}: {e}", node.id))?;
        raw.on_compacted(upto);
        Ok(())
    }

    fn crash_now(&mut self, i: usize) -> Check {
        let down = self.rng.range(TICK, 20 * TICK);
        self.crash(i);
        self.nodes[i].restart_at = Some(self.now + down);
        Ok(())
    }

    fn on_new_leader(&mut self, i: usize, term: Term) -> Check {
        let id = self.nodes[i].id;
        if let Some(other) = self.leaders.insert(term, id) {
            if other != id {
                return Err(format!("election safety: both {other} and {id} lead term {term}"));
            }
        }
        self.report.leaders += 1;
        // Leader completeness: every applied (hence committed) entry is in
        // the new leader's log.
        let Some(raw) = self.nodes[i].raw.as_ref() else { return Ok(()) };
        let last_applied = self.applied.len() as u64 - 1;
        // An index below the leader's log base is covered by its snapshot,
        // which was checked when installed (or by its own applying).
        if last_applied > 0 && last_applied + 1 >= raw.status().first_index {
            let want = self.applied[last_applied as usize].0;
            let have = raw.log_term(last_applied);
            if have != Some(want) {
                return Err(format!(
                    "leader completeness: new leader {id} of term {term} has term {have:?} at committed index \
                     {last_applied}, expected {want}"
                ));
            }
        }
        Ok(())
    }

    fn persist(&mut self, i: usize, hs: Option<crate::HardState>, entries: &[Entry]) -> Check {
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(raw) = node.raw.as_mut() else { return Ok(()) };
        let store = raw.storage_mut();
        store.append(entries).map_err(|e| format!("append on {id}: {e}"))?;
        if let Some(hs) = hs {
            if hs.term < node.last_term {
                return Err(format!("durable term of {id} went back from {} to {}", node.last_term, hs.term));
            }
            if hs.commit < node.last_commit {
                return Err(format!(
                    "durable commit of {id} went back from {} to {}",
                    node.last_commit, hs.commit
                ));
            }
            node.last_term = hs.term;
            node.last_commit = hs.commit;
            store.set_hard_state(hs);
        }
        // Log matching, checked on every durable entry.
        for e in entries {
            node.prefix.truncate(e.index as usize);
            let prev = *node.prefix.last().unwrap_or(&FNV_OFFSET);
            let h = fnv(prev, &entry_hash(e).to_le_bytes());
            node.prefix.push(h);
            match self.log_prefix.get(&(e.index, e.term)) {
                Some(&other) if other != h => {
                    return Err(format!(
                        "log matching: {id} has entry {} of term {} with a different prefix than another member",
                        e.index, e.term
                    ));
                }
                Some(_) => {}
                None => {
                    self.log_prefix.insert((e.index, e.term), h);
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, i: usize, entries: &[Entry]) -> Check {
        let id = self.nodes[i].id;
        for e in entries {
            let sm = &mut self.nodes[i].sm;
            if e.index != sm.applied + 1 {
                return Err(format!("{id} applied index {} after {}: not in order", e.index, sm.applied));
            }
            let h = entry_hash(e);
            sm.applied = e.index;
            sm.chain = fnv(sm.chain, &h.to_le_bytes());
            let chain = sm.chain;
            let idx = e.index as usize;
            if idx < self.applied.len() {
                if self.applied[idx] != (e.term, h, chain) {
                    return Err(format!(
                        "state machine safety: {id} applied {:?} at index {} (term {}), another member applied \
                         a different entry (term {})",
                        e.payload, e.index, e.term, self.applied[idx].0
                    ));
                }
            } else {
                self.applied.push((e.term, h, chain));
            }

            if let Some(p) = self.proposals.remove(&(id, e.index)) {
                if p.term == e.term {
                    self.max_acked = self.max_acked.max(e.index);
                    self.report.acked_writes += 1;
                    let waited = self.now - p.invoked;
                    self.event(format!("ack index {} on {id} after {waited}", e.index));
                }
            }
        }
        if !entries.is_empty() && self.rng.chance(self.opts.sm_sync_rate) {
            self.nodes[i].sm_durable = self.nodes[i].sm.clone();
        }
        Ok(())
    }
}

/// Runs the simulation for `seed` with the options drawn from it.
pub fn run_seed(seed: u64) -> Result<SimReport, SimFailure> {
    Sim::new(seed, SimOptions::for_seed(seed)).run()
}
