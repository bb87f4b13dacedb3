//! Membership: single-server changes, taking effect when their entry is
//! appended (the configuration history lets a truncation undo them), and
//! the configuration at any index of the log.

use crate::error::{ConfChangeError, Error};
use crate::message::{ConfChange, ConfChangeKind, ConfState, ConfigEntry, Entry, EntryPayload, Index};
use crate::progress::Progress;
use crate::quorum;
use crate::storage::{Storage, StorageError};

use super::{Raft, Role};

impl<S: Storage> Raft<S> {
    /// Proposes a membership change. Returns the index of its entry.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<Index, Error> {
        self.check_can_propose()?;
        if self.pending_conf_index > self.log.committed {
            return Err(ConfChangeError::Pending(self.pending_conf_index).into());
        }
        // The single-server change fix: commit an entry of this term first.
        if self.log.term_or_zero(self.log.committed)? != self.term {
            return Err(ConfChangeError::LeaderNotReady.into());
        }
        let conf = self.changed_conf(&cc)?;
        self.check_live_quorum(&conf)?;
        let index = self.append_entries(vec![EntryPayload::Config(ConfigEntry { change: cc, conf })])?;
        Ok(index)
    }

    /// The membership after `cc`, or why it is refused.
    pub fn changed_conf(&self, cc: &ConfChange) -> Result<ConfState, ConfChangeError> {
        if cc.node == 0 {
            return Err(ConfChangeError::ZeroId);
        }
        let mut conf = self.conf.clone();
        let changed = match cc.kind {
            ConfChangeKind::AddVoter => conf.learners.remove(&cc.node) | conf.voters.insert(cc.node),
            ConfChangeKind::AddLearner => conf.voters.remove(&cc.node) | conf.learners.insert(cc.node),
            ConfChangeKind::Remove => conf.voters.remove(&cc.node) | conf.learners.remove(&cc.node),
        };
        // The same role again only makes sense to update the context (graft-kv:
        // a member's new address); the membership itself stays as it is.
        if !changed && (cc.context.is_empty() || cc.kind == ConfChangeKind::Remove) {
            return Err(ConfChangeError::NoOp(cc.node));
        }
        if conf.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        Ok(conf)
    }

    /// Refuses a membership whose voters heard from within the last
    /// election timeout would not form a majority.
    pub(super) fn check_live_quorum(&self, conf: &ConfState) -> Result<(), ConfChangeError> {
        let window = u64::from(self.cfg.election_tick);
        let heard = |p: &Progress| p.last_heard.is_some_and(|t| self.ticks.saturating_sub(t) <= window);
        let live =
            conf.voters.iter().filter(|&&v| v == self.id || self.progress.get(&v).is_some_and(heard)).count();
        let needed = quorum::majority(conf.voters.len());
        if live < needed {
            return Err(ConfChangeError::NoLiveQuorum { live, needed });
        }
        Ok(())
    }

    /// Brings the membership in line with the log after `entries` were
    /// appended (possibly truncating others): configuration entries no
    /// longer in the log stop counting, new ones take effect now.
    pub(super) fn sync_conf_history(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let before = self.conf_history.len();
        let mut kept = Vec::with_capacity(before);
        for (i, t, c) in std::mem::take(&mut self.conf_history) {
            if self.log.match_term(i, t)? {
                kept.push((i, t, c));
            }
        }
        let mut changed = kept.len() != before;
        for e in entries {
            let EntryPayload::Config(c) = &e.payload else { continue };
            if kept.iter().any(|(i, _, _)| *i == e.index) || !self.log.match_term(e.index, e.term)? {
                continue;
            }
            kept.push((e.index, e.term, c.conf.clone()));
            changed = true;
            if self.role == Role::Leader {
                self.pending_conf_index = self.pending_conf_index.max(e.index);
            }
        }
        kept.sort_by_key(|(i, _, _)| *i);
        self.conf_history = kept;
        if changed {
            let conf = self.conf_history.last().map_or_else(|| self.base_conf.clone(), |(_, _, c)| c.clone());
            self.set_conf(conf);
        }
        Ok(())
    }

    pub(super) fn set_conf(&mut self, conf: ConfState) {
        if self.role == Role::Leader {
            let last = self.log.last_index().unwrap_or(0);
            for id in conf.members() {
                if id != self.id && !self.progress.contains_key(&id) {
                    let mut p = Progress::new(last + 1, self.cfg.max_inflight_msgs);
                    p.recent_active = true;
                    self.progress.insert(id, p);
                }
            }
            self.progress.retain(|id, _| conf.contains(*id));
            if self.lead_transferee.is_some_and(|t| !conf.voters.contains(&t)) {
                self.lead_transferee = None;
            }
        }
        self.conf = conf;
    }

    /// The membership in effect at `index` (which must be at or after the
    /// log's base): for the application's snapshots.
    pub fn conf_at(&self, index: Index) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _, _)| *i <= index)
            .map_or_else(|| self.base_conf.clone(), |(_, _, c)| c.clone())
    }

    /// Forgets configuration history the log compacted away, keeping the
    /// membership in effect at `index` as the base.
    pub fn on_compacted(&mut self, index: Index) {
        self.base_conf = self.conf_at(index);
        self.conf_history.retain(|(i, _, _)| *i > index);
    }
}
