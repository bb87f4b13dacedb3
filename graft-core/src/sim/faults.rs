//! The faults the simulation injects: partitions, crashes (single, part-way
//! through a `Ready`, or of a majority at once), restarts, membership
//! changes, and the healing that ends them.

use std::collections::BTreeSet;

use bytes::Bytes;

use crate::config::Config;
use crate::message::{ConfChange, ConfChangeKind, ConfState, NodeId};
use crate::raw_node::RawNode;
use crate::storage::MemStorage;

use super::{Check, Sim, TICK};

impl Sim {
    /// Asks the leader for a random single-member change.
    pub(super) fn change_membership(&mut self) {
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
            if !self.blocked.is_empty() {
                self.report.conf_changes_partitioned += 1;
            }
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

    pub(super) fn inject_faults(&mut self) {
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

    pub(super) fn partition(&mut self) {
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
    pub(super) fn crash_majority(&mut self) {
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

    pub(super) fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(raw) = node.raw.take() {
            // With asynchronous storage, what was not yet durable is lost.
            node.disk = Some(node.durable.take().unwrap_or_else(|| raw.storage().clone()));
        }
        node.job = None;
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

    pub(super) fn restart(&mut self, i: usize) -> Check {
        let node = &mut self.nodes[i];
        node.restart_at = None;
        let Some(disk) = node.disk.take() else { return Ok(()) };
        node.incarnation += 1;
        let mut cfg = Config::new(node.id);
        cfg.applied = node.sm.applied;
        cfg.seed = self.seed.wrapping_mul(31).wrapping_add(node.id * 1_000_003 + node.incarnation);
        cfg.max_entries_per_msg = self.opts.max_entries_per_msg;
        cfg.max_bytes_per_msg = self.opts.max_bytes_per_msg;
        cfg.max_inflight_msgs = self.opts.max_inflight_msgs;
        cfg.election_tick = self.opts.election_tick;
        node.durable = (self.opts.disk_delay > 0).then(|| disk.clone());
        let raw = RawNode::new(cfg, disk).map_err(|e| format!("restart of {}: {e}", node.id))?;
        node.raw = Some(raw);
        node.next_tick = self.now + node.tick_every;
        let id = node.id;
        self.event(format!("start {id}"));
        Ok(())
    }

    pub(super) fn crash_now(&mut self, i: usize) -> Check {
        let down = self.rng.range(TICK, 20 * TICK);
        self.crash(i);
        self.nodes[i].restart_at = Some(self.now + down);
        Ok(())
    }

    pub(super) fn heal(&mut self) {
        self.healing = true;
        self.blocked.clear();
        self.opts.drop_rate = 0.0;
        self.opts.dup_rate = 0.0;
        self.opts.max_delay = self.opts.max_delay.min(10);
        // A disk slower than the election timeout is a fault too: no vote
        // becomes durable before the next election starts. Healing makes it
        // fast enough (still asynchronous).
        if self.opts.disk_delay > 0 {
            self.opts.disk_delay =
                self.opts.disk_delay.min(u64::from(self.opts.election_tick) * TICK / 4).max(1);
        }
        for n in &mut self.nodes {
            if n.raw.is_none() && n.started {
                n.restart_at = Some(self.now);
            }
        }
        self.event("heal".into());
    }
}
