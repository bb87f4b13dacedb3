//! A tiny deterministic in-memory network of `RawNode<MemStorage>` for the
//! paper tests: messages go through one FIFO queue, links can be cut, and
//! every `Ready` is carried out in the order `raw_node.rs` documents.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use graft_core::{
    ConfState, Config, Entry, EntryPayload, HardState, Index, MemStorage, Message, MessageBody, NodeId,
    RawNode, ReadState, Role, Term,
};

pub type Node = RawNode<MemStorage>;

/// A config for `id` with the library defaults plus `tweak`.
pub fn config(id: NodeId, tweak: &dyn Fn(&mut Config)) -> Config {
    let mut c = Config::new(id);
    tweak(&mut c);
    c
}

/// Plain Raft as in the paper: no PreVote, no CheckQuorum.
pub fn plain(c: &mut Config) {
    c.pre_vote = false;
    c.check_quorum = false;
}

/// The library defaults (PreVote and CheckQuorum on).
pub fn defaults(_: &mut Config) {}

/// An entry with an empty command payload.
pub fn ent(index: Index, term: Term) -> Entry {
    Entry { term, index, payload: EntryPayload::Command(Bytes::new()) }
}

/// Entries 1.. with the given terms.
pub fn ents(terms: &[Term]) -> Vec<Entry> {
    terms.iter().enumerate().map(|(i, &t)| ent(i as u64 + 1, t)).collect()
}

/// A durable store holding membership `voters`, a log with `terms`
/// (index 1..) and hard state `term` (no vote, commit 0).
pub fn storage(voters: &[NodeId], terms: &[Term], term: Term) -> MemStorage {
    let mut s = MemStorage::new_with_conf(ConfState::with_voters(voters.iter().copied()));
    s.append(&ents(terms)).unwrap();
    s.set_hard_state(HardState { term, vote: None, commit: 0 });
    s
}

/// `(index, term)` of every entry in `node`'s log (durable and unstable).
pub fn log_of(node: &Node) -> Vec<(Index, Term)> {
    let log = &node.raft().log;
    let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
    log.entries(first, last + 1, u64::MAX).unwrap().iter().map(|e| (e.index, e.term)).collect()
}

/// The full entries of `node`'s log.
pub fn entries_of(node: &Node) -> Vec<Entry> {
    let log = &node.raft().log;
    let (first, last) = (log.first_index().unwrap(), log.last_index().unwrap());
    log.entries(first, last + 1, u64::MAX).unwrap()
}

pub fn is_append(m: &Message) -> bool {
    matches!(m.body, MessageBody::Append { .. })
}

pub fn append_entries(m: &Message) -> Option<&[Entry]> {
    match &m.body {
        MessageBody::Append { entries, .. } => Some(entries),
        _ => None,
    }
}

pub fn is_heartbeat(m: &Message) -> bool {
    matches!(m.body, MessageBody::Heartbeat { .. })
}

pub fn is_heartbeat_resp(m: &Message) -> bool {
    matches!(m.body, MessageBody::HeartbeatResponse { .. })
}

/// One step's worth of output of a lone node (for unit-style tests).
#[derive(Debug, Default)]
pub struct Out {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub persisted_messages: Vec<Message>,
    pub committed: Vec<Entry>,
    pub reads: Vec<ReadState>,
}

impl Out {
    /// Every message, whatever its ordering constraint.
    pub fn all(&self) -> Vec<Message> {
        self.messages.iter().chain(self.persisted_messages.iter()).cloned().collect()
    }
}

/// Carries out every pending `Ready` of a lone node and returns what it produced.
pub fn drain(node: &mut Node) -> Out {
    let mut out = Out::default();
    while node.has_ready() {
        let rd = node.ready().unwrap();
        out.messages.extend(rd.messages);
        let store = node.storage_mut();
        if let Some(s) = rd.snapshot {
            store.apply_snapshot(s);
        }
        store.append(&rd.entries).unwrap();
        if let Some(hs) = rd.hard_state {
            store.set_hard_state(hs);
            out.hard_state = Some(hs);
        }
        out.entries.extend(rd.entries);
        out.persisted_messages.extend(rd.persisted_messages);
        out.committed.extend(rd.committed_entries);
        out.reads.extend(rd.read_states);
        node.advance().unwrap();
    }
    out
}

/// A lone node built from `storage` with `tweak`ed config.
pub fn node(id: NodeId, storage: MemStorage, tweak: &dyn Fn(&mut Config)) -> Node {
    RawNode::new(config(id, tweak), storage).unwrap()
}

pub struct Network {
    pub nodes: BTreeMap<NodeId, Node>,
    pub configs: BTreeMap<NodeId, Config>,
    /// Messages in flight, delivered in FIFO order.
    pub queue: VecDeque<Message>,
    /// Cut directed links `(from, to)`: messages on them are lost.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Every message handed to a receiver, in order.
    pub delivered: Vec<Message>,
    /// Every message any node sent, in order.
    pub sent: Vec<Message>,
    /// Entries each node applied, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    /// Read states each node released.
    pub reads: BTreeMap<NodeId, Vec<ReadState>>,
    /// The members seen as leader in each term.
    pub leaders: BTreeMap<Term, BTreeSet<NodeId>>,
    /// Each durable hard state each node wrote, in order.
    pub hard_states: BTreeMap<NodeId, Vec<HardState>>,
}

impl Network {
    /// A fresh cluster of `voters`, every member configured with `tweak`.
    pub fn new(voters: &[NodeId], tweak: &dyn Fn(&mut Config)) -> Network {
        let stores = voters.iter().map(|&id| (id, storage(voters, &[], 0))).collect();
        Network::from_storages(stores, tweak)
    }

    /// A cluster whose members start from the given durable states.
    pub fn from_storages(stores: Vec<(NodeId, MemStorage)>, tweak: &dyn Fn(&mut Config)) -> Network {
        let mut net = Network {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            delivered: Vec::new(),
            sent: Vec::new(),
            applied: BTreeMap::new(),
            reads: BTreeMap::new(),
            leaders: BTreeMap::new(),
            hard_states: BTreeMap::new(),
        };
        for (id, s) in stores {
            net.add_node(id, s, tweak);
        }
        net
    }

    /// Adds (or replaces) member `id`.
    pub fn add_node(&mut self, id: NodeId, s: MemStorage, tweak: &dyn Fn(&mut Config)) {
        let cfg = config(id, tweak);
        self.nodes.insert(id, RawNode::new(cfg.clone(), s).unwrap());
        self.configs.insert(id, cfg);
        self.applied.entry(id).or_default();
        self.reads.entry(id).or_default();
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[&id]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).unwrap()
    }

    pub fn term(&self, id: NodeId) -> Term {
        self.node(id).term()
    }

    pub fn role(&self, id: NodeId) -> Role {
        self.node(id).role()
    }

    pub fn commit(&self, id: NodeId) -> Index {
        self.node(id).status().hard_state.commit
    }

    pub fn log(&self, id: NodeId) -> Vec<(Index, Term)> {
        log_of(self.node(id))
    }

    /// The members that currently believe they lead.
    pub fn current_leaders(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.role() == Role::Leader).map(|(&id, _)| id).collect()
    }

    /// Carries out `id`'s pending `Ready`s, queueing its messages.
    pub fn handle_ready(&mut self, id: NodeId) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        while node.has_ready() {
            let rd = node.ready().unwrap();
            if node.role() == Role::Leader && self.leaders.entry(node.term()).or_default().insert(id) {
                // Leader Completeness (§5.4): every applied entry is in the new leader's log.
                for (other, applied) in &self.applied {
                    for e in applied {
                        assert_eq!(
                            node.log_term(e.index),
                            Some(e.term),
                            "leader {id} of term {} lacks entry {} applied by {other}",
                            node.term(),
                            e.index
                        );
                    }
                }
            }
            // 1. messages that need nothing durable.
            self.sent.extend(rd.messages.iter().cloned());
            self.queue.extend(rd.messages);
            // 2. persist snapshot, entries, hard state.
            let store = node.storage_mut();
            if let Some(s) = rd.snapshot {
                store.apply_snapshot(s);
            }
            store.append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                let prev = store.hard_state();
                assert!(hs.term >= prev.term, "node {id}: durable term went back: {prev:?} -> {hs:?}");
                assert!(hs.commit >= prev.commit, "node {id}: durable commit went back: {prev:?} -> {hs:?}");
                if hs.term == prev.term && prev.vote.is_some() {
                    assert_eq!(hs.vote, prev.vote, "node {id} changed its vote within term {}", hs.term);
                }
                store.set_hard_state(hs);
                self.hard_states.entry(id).or_default().push(hs);
            }
            // 3. messages that promise what was just persisted.
            self.sent.extend(rd.persisted_messages.iter().cloned());
            self.queue.extend(rd.persisted_messages);
            // 4. apply, in order.
            let applied = self.applied.entry(id).or_default();
            for e in rd.committed_entries {
                let expected = applied.last().map_or(node.status().first_index, |l| l.index + 1);
                assert_eq!(e.index, expected, "node {id} applied out of order");
                applied.push(e);
            }
            self.reads.entry(id).or_default().extend(rd.read_states);
            // 5. advance.
            node.advance().unwrap();
        }
    }

    pub fn handle_all(&mut self) {
        for id in self.ids() {
            self.handle_ready(id);
        }
    }

    fn lost(&self, m: &Message) -> bool {
        self.cut.contains(&(m.from, m.to)) || !self.nodes.contains_key(&m.to)
    }

    /// Steps `m` into its receiver at once (unless the link is cut) and
    /// carries out the receiver's `Ready`.
    pub fn step(&mut self, m: Message) {
        if self.lost(&m) {
            return;
        }
        let to = m.to;
        self.delivered.push(m.clone());
        self.nodes.get_mut(&to).unwrap().step(m).unwrap();
        self.handle_ready(to);
    }

    /// Delivers queued messages for which `pred` holds, and those they cause,
    /// until none is left; the others stay queued (held), in order. Messages
    /// on cut links are lost. Returns how many were delivered.
    pub fn deliver_while(&mut self, mut pred: impl FnMut(&Message) -> bool) -> usize {
        self.handle_all();
        let mut held = VecDeque::new();
        let mut n = 0;
        while let Some(m) = self.queue.pop_front() {
            if self.lost(&m) {
                continue;
            }
            if !pred(&m) {
                held.push_back(m);
                continue;
            }
            n += 1;
            assert!(n < 200_000, "the network does not quiesce");
            self.step(m);
        }
        self.queue = held;
        self.assert_log_matching();
        self.assert_applied_consistent();
        n
    }

    /// Log Matching (§5.3): two logs holding an entry with the same index
    /// and term are identical up to it.
    pub fn assert_log_matching(&self) {
        let logs: Vec<(NodeId, Vec<(Index, Term)>)> =
            self.ids().into_iter().map(|id| (id, self.log(id))).collect();
        for (a, la) in &logs {
            for (b, lb) in &logs {
                if a >= b {
                    continue;
                }
                // The last index where both have the same term: everything before must agree.
                let common = la.iter().zip(lb.iter()).rposition(|(x, y)| x == y);
                if let Some(k) = common {
                    assert_eq!(la[..=k], lb[..=k], "logs of {a} and {b} break Log Matching");
                }
            }
        }
    }

    /// Delivers everything until the network is quiet.
    pub fn deliver_all(&mut self) -> usize {
        self.deliver_while(|_| true)
    }

    /// Drops queued messages for which `pred` holds.
    pub fn discard(&mut self, pred: impl Fn(&Message) -> bool) {
        self.queue.retain(|m| !pred(m));
    }

    /// Cuts both directions between `a` and `b`.
    pub fn cut_link(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts every link of `id`.
    pub fn isolate(&mut self, id: NodeId) {
        for other in self.ids() {
            if other != id {
                self.cut_link(id, other);
            }
        }
    }

    /// Heals every link.
    pub fn recover(&mut self) {
        self.cut.clear();
    }

    /// Ticks `id` once and carries out its `Ready` (messages stay queued).
    pub fn tick(&mut self, id: NodeId) {
        self.node_mut(id).tick().unwrap();
        self.handle_ready(id);
    }

    /// Ticks every member once, then delivers everything.
    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
        self.deliver_all();
    }

    /// `id` campaigns; everything is delivered.
    pub fn campaign(&mut self, id: NodeId) {
        self.node_mut(id).campaign().unwrap();
        self.deliver_all();
    }

    /// `id` campaigns and must win; everything is delivered.
    pub fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        assert_eq!(self.role(id), Role::Leader, "node {id} did not win its election");
    }

    /// Proposes `data` on `id` (which must accept it); nothing is delivered.
    pub fn propose(&mut self, id: NodeId, data: &str) -> Index {
        let i = self.node_mut(id).propose(Bytes::from(data.to_owned())).unwrap();
        self.handle_ready(id);
        i
    }

    /// Crash-restarts `id` from its durable storage (its state machine keeps
    /// what it applied).
    pub fn restart(&mut self, id: NodeId) {
        let storage = self.node(id).storage().clone();
        let mut cfg = self.configs[&id].clone();
        cfg.applied = self.applied[&id].last().map_or(0, |e| e.index);
        self.nodes.insert(id, RawNode::new(cfg, storage).unwrap());
    }

    /// Commands applied by `id`, as strings.
    pub fn applied_commands(&self, id: NodeId) -> Vec<String> {
        self.applied[&id]
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Command(d) => Some(String::from_utf8_lossy(d).into_owned()),
                _ => None,
            })
            .collect()
    }

    /// Election safety over the whole history: at most one leader per term.
    pub fn assert_election_safety(&self) {
        for (term, ls) in &self.leaders {
            assert!(ls.len() <= 1, "term {term} had leaders {ls:?}");
        }
    }

    /// State machine safety: every two members applied the same entry at
    /// each index they both applied, each index once and in order (a
    /// member's list starts after the snapshot it installed, if any).
    pub fn assert_applied_consistent(&self) {
        for (a, la) in &self.applied {
            for w in la.windows(2) {
                assert_eq!(w[1].index, w[0].index + 1, "node {a} applied a gap or a repeat");
            }
            for (b, lb) in &self.applied {
                // A member that installed a snapshot starts applying after
                // it: compare the indexes both applied.
                let Some(b0) = lb.first().map(|e| e.index) else { continue };
                for x in la.iter().filter(|x| x.index >= b0) {
                    if let Some(y) = lb.get((x.index - b0) as usize) {
                        assert_eq!(x, y, "nodes {a} and {b} applied different entries");
                    }
                }
            }
        }
    }

    /// Messages of kind `pred` sent by `from` to `to` so far.
    pub fn sent_count(&self, from: NodeId, to: NodeId, pred: impl Fn(&Message) -> bool) -> usize {
        self.sent.iter().filter(|m| m.from == from && m.to == to && pred(m)).count()
    }
}

/// Ticks the leader `id` through one heartbeat interval and delivers everything.
pub fn heartbeat(net: &mut Network, id: NodeId) {
    heartbeat_holding(net, id, |_| true);
}

/// Ticks leader `id` through one heartbeat interval and delivers what `pred` allows.
pub fn heartbeat_holding(net: &mut Network, id: NodeId, pred: impl FnMut(&Message) -> bool) {
    for _ in 0..net.configs[&id].heartbeat_tick {
        net.tick(id);
    }
    net.deliver_while(pred);
}
