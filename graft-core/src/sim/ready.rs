//! Carrying out a member's `Ready` as graft-kv does, with the safety checks
//! that run on every message, durable entry and applied entry: election
//! safety, one vote per term, log matching, leader completeness, state
//! machine safety (across crashes, re-application and snapshots), and
//! linearizable reads.

use std::cmp::Reverse;

use crate::message::{Entry, Message, MessageBody, Term};
use crate::raft::Role;

use super::{entry_hash, fnv, Check, DiskJob, Sim, StateMachine, FNV_OFFSET};

/// The chance that a snapshot stream that delivered its data still breaks
/// before the sender learns so (the sender reports a failure).
const SNAPSHOT_CUT_AFTER_DELIVERY: f64 = 0.125;

impl Sim {
    pub(super) fn send(&mut self, m: Message) -> Check {
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
        let cut = self.blocked.contains(&(m.from, m.to));
        if cut {
            // As graft-kv's transport does when a peer's connection breaks.
            if let Some(raw) = self.nodes.get_mut((m.from - 1) as usize).and_then(|n| n.raw.as_mut()) {
                raw.report_unreachable(m.to);
            }
        }
        let lost = cut || self.rng.chance(self.opts.drop_rate);
        if data.is_some() {
            let at = self.now + self.rng.range(self.opts.min_delay, self.opts.max_delay + 1);
            // A stream cut mid-way loses the data; one cut after its last
            // byte, before the acknowledgement, delivers it and still
            // reports a failure.
            let ok = !lost && !self.rng.chance(SNAPSHOT_CUT_AFTER_DELIVERY);
            if !ok {
                self.report.snapshots_cut += 1;
            }
            self.snapshot_reports.push((at, m.from, m.to, ok));
        }
        if let MessageBody::Append { prev_index, entries, commit, .. } = &m.body {
            if *commit > prev_index + entries.len() as u64 {
                self.report.partial_appends += 1;
            }
        }
        if lost {
            return Ok(());
        }
        let copies = if self.rng.chance(self.opts.dup_rate) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = self.now + self.rng.range(self.opts.min_delay, self.opts.max_delay + 1);
            if self.opts.fifo_links {
                // As over one TCP connection: never before an earlier message
                // on the same link (deliveries at one time keep send order).
                let last = self.link_last.entry((m.from, m.to)).or_insert(0);
                at = at.max(*last);
                *last = at;
            }
            self.net_seq += 1;
            let key = self.net_seq as usize;
            self.net_msgs.insert(key, (m.clone(), data.clone()));
            self.net.push(Reverse((at, self.net_seq, key)));
        }
        Ok(())
    }

    pub(super) fn deliver(&mut self, m: Message, data: Option<StateMachine>) -> Check {
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

    /// Asynchronous storage: the first half of a `Ready`, as graft-kv's
    /// node does it: role changes, the leader's messages, the entries and
    /// hard state written to the view; the log write and the applying are
    /// left to finish later ([`Sim::progress_job`]).
    fn start_job(&mut self, i: usize, rd: crate::Ready) -> Check {
        let id = self.nodes[i].id;
        self.on_soft_state(i, rd.soft_state)?;
        for m in rd.messages {
            self.send(m)?;
        }
        self.write_view(i, rd.hard_state, &rd.entries)?;
        let log_at = self.now + self.rng.range(0, self.opts.disk_delay + 1);
        let done_at = log_at + self.rng.range(0, self.opts.disk_delay / 2 + 1);
        self.nodes[i].job = Some(DiskJob {
            hard_state: rd.hard_state,
            entries: rd.entries,
            persisted_messages: rd.persisted_messages,
            committed: rd.committed_entries,
            read_states: rd.read_states,
            log_at: Some(log_at),
            done_at,
        });
        self.event(format!("{id} disk job: durable at {log_at}, done at {done_at}"));
        Ok(())
    }

    /// Asynchronous storage: finishes what is due of member `i`'s disk job:
    /// the log write becomes durable and the messages that waited for it go
    /// out; then the applying is done, the reads served, and the `Ready`
    /// advanced.
    pub(super) fn progress_job(&mut self, i: usize) -> Check {
        let id = self.nodes[i].id;
        let Some(job) = self.nodes[i].job.as_mut() else { return Ok(()) };
        if job.log_at.is_some_and(|t| t <= self.now) {
            job.log_at = None;
            let (hs, entries, msgs) = (
                job.hard_state,
                std::mem::take(&mut job.entries),
                std::mem::take(&mut job.persisted_messages),
            );
            self.persist(i, hs, &entries)?;
            self.event(format!("{id} disk job durable"));
            for m in msgs {
                self.send(m)?;
            }
        }
        let Some(job) = self.nodes[i].job.as_ref() else { return Ok(()) };
        if job.log_at.is_some() || job.done_at > self.now {
            return Ok(());
        }
        let Some(job) = self.nodes[i].job.take() else { return Ok(()) };
        self.apply(i, &job.committed)?;
        self.serve_reads(i, job.read_states)?;
        if let Some(raw) = self.nodes[i].raw.as_mut() {
            raw.advance().map_err(|e| format!("advance on {id}: {e}"))?;
        }
        self.maybe_compact(i)
    }

    /// Role changes: checks a new leader, drops a deposed one's reads.
    fn on_soft_state(&mut self, i: usize, ss: Option<crate::raw_node::SoftState>) -> Check {
        let id = self.nodes[i].id;
        if let Some(ss) = ss {
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
        Ok(())
    }

    /// Serves the reads whose index is now applied, checking each covers
    /// every write acknowledged before it began.
    fn serve_reads(&mut self, i: usize, read_states: Vec<crate::ReadState>) -> Check {
        let id = self.nodes[i].id;
        for rs in read_states {
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
        Ok(())
    }

    /// Carries out one Ready of member `i`, possibly crashing part-way
    /// (synchronous storage), or starts its disk work (asynchronous storage).
    pub(super) fn process_ready(&mut self, i: usize) -> Check {
        let id = self.nodes[i].id;
        if self.nodes[i].job.is_some() {
            // graft-kv takes the next Ready only when the last one is done.
            return Ok(());
        }
        let Some(raw) = self.nodes[i].raw.as_mut() else { return Ok(()) };
        if !raw.has_ready() {
            return Ok(());
        }
        let rd = raw.ready().map_err(|e| format!("ready on {id}: {e}"))?;
        if self.opts.disk_delay > 0 && rd.snapshot.is_none() {
            return self.start_job(i, rd);
        }
        // Where (if anywhere) this member crashes: 0 before anything, 1 after
        // sending `messages`, 2 after persisting, 3 after sending the rest,
        // 4 after applying.
        let crash_at = if !self.healing && self.rng.chance(self.opts.crash_in_ready_rate) {
            Some(self.rng.range(0, 5))
        } else {
            None
        };

        self.on_soft_state(i, rd.soft_state)?;
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
        if self.nodes[i].durable.is_some() {
            // Asynchronous storage, carried out at once (a snapshot install):
            // the view first, then the durable log.
            self.write_view(i, rd.hard_state, &rd.entries)?;
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
        self.serve_reads(i, rd.read_states)?;
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
    pub(super) fn install_snapshot(&mut self, i: usize, meta: &crate::SnapshotMeta) -> Check {
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
        if let Some(d) = node.durable.as_mut() {
            d.apply_snapshot(meta.clone());
        }
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
    pub(super) fn maybe_compact(&mut self, i: usize) -> Check {
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
        if let Some(d) = node.durable.as_mut() {
            d.compact(upto, conf.clone()).map_err(|e| format!("durable compact on {}: {e}", node.id))?;
        }
        raw.storage_mut().compact(upto, conf).map_err(|e| format!("compact on {}: {e}", node.id))?;
        raw.on_compacted(upto);
        Ok(())
    }

    pub(super) fn on_new_leader(&mut self, i: usize, term: Term) -> Check {
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

    /// Writes the entries and hard state of a `Ready` into the member's
    /// storage as the core sees it (graft-kv's in-memory view), checking
    /// that no entry the member has counted as committed is ever replaced by
    /// one of another term.
    pub(super) fn write_view(&mut self, i: usize, hs: Option<crate::HardState>, entries: &[Entry]) -> Check {
        let node = &mut self.nodes[i];
        let id = node.id;
        let Some(raw) = node.raw.as_mut() else { return Ok(()) };
        for e in entries {
            if let Some(&t) = node.committed_terms.get(&e.index) {
                if t != e.term {
                    return Err(format!(
                        "{id} replaces entry {} of term {t}, which it counted as committed, with one of term {}",
                        e.index, e.term
                    ));
                }
            }
        }
        // A divergent suffix this append replaces, if any.
        let last = crate::Storage::last_index(raw.storage()).unwrap_or(0);
        let conflict = entries.iter().find(|e| {
            e.index <= last && crate::Storage::term(raw.storage(), e.index).is_ok_and(|t| t != e.term)
        });
        if let Some(e) = conflict {
            let discarded = last - e.index + 1;
            self.report.truncated_entries += discarded;
            self.report.longest_truncation = self.report.longest_truncation.max(discarded);
        }
        let store = raw.storage_mut();
        store.append(entries).map_err(|e| format!("append on {id}: {e}"))?;
        if let Some(hs) = hs {
            store.set_hard_state(hs);
            // Remember what the commit index now covers.
            let from = node.committed_terms.last_key_value().map_or(1, |(i, _)| i + 1);
            for index in from..=hs.commit {
                if let Ok(t) = crate::Storage::term(raw.storage(), index) {
                    node.committed_terms.insert(index, t);
                }
            }
        }
        Ok(())
    }

    /// Makes a `Ready`'s entries and hard state durable, with the checks on
    /// durable state: terms and commit indexes never go back, log matching.
    pub(super) fn persist(&mut self, i: usize, hs: Option<crate::HardState>, entries: &[Entry]) -> Check {
        if self.nodes[i].durable.is_none() {
            // Synchronous storage: the view is the durable log.
            self.write_view(i, hs, entries)?;
        }
        let node = &mut self.nodes[i];
        let id = node.id;
        if node.raw.is_none() {
            return Ok(());
        }
        if let Some(d) = node.durable.as_mut() {
            d.append(entries).map_err(|e| format!("durable append on {id}: {e}"))?;
            if let Some(hs) = hs {
                d.set_hard_state(hs);
            }
        }
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

    pub(super) fn apply(&mut self, i: usize, entries: &[Entry]) -> Check {
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
