//! The leader's compactions of the multi-version history: now and then it
//! asks the store how far the retention policy (`[history]` in the cluster
//! file) allows compacting and proposes a compaction entry, so that every
//! member compacts at the same revision.

use bytes::Bytes;
use tracing::debug;

use crate::command::{Command, WriteOp};
use crate::mvcc::compact;
use crate::storage::StateMachine;

use super::clock::now_ms;
use super::{Node, NodeError};

/// How often (in ticks) the leader looks: while a compaction's purge is
/// unfinished it writes an entry that moves it on; every
/// [`COMPACT_EVERY_TICKS`] it considers compacting.
pub(super) const EVERY_TICKS: u64 = 10;

/// How often (in ticks) the leader considers a new compaction.
const COMPACT_EVERY_TICKS: u64 = 100;

impl Node {
    /// Proposes a compaction if the retention policy calls for one and none
    /// is already on its way.
    pub(super) fn compact_history(&mut self) -> Result<(), NodeError> {
        let applied = self.sm.applied();
        if self.history_compaction.is_some_and(|i| i > applied) {
            return Ok(());
        }
        self.history_compaction = None;
        let policy = self.opts.history;
        // Compact in steps of a tenth of the history kept, so that
        // compaction entries stay rare and each purge stays small.
        let min_step = (policy.keep_revisions / 10).max(1);
        let rtx = self.sm.begin_read()?;
        let view = StateMachine::view(&rtx)?;
        let meta = view.meta();
        if meta.purged < meta.compacted {
            // Purging goes on with each applied batch; a quiet cluster
            // applies none, so give every member one.
            self.propose_clock();
            return Ok(());
        }
        if self.ticks % COMPACT_EVERY_TICKS != 0 {
            return Ok(());
        }
        let revs = rtx.open_table(crate::mvcc::REVS).map_err(crate::error::StoreError::from)?;
        let Some(target) = compact::target(&revs, meta, policy, now_ms(), min_step)? else { return Ok(()) };
        let cmd = Command { session: None, time_ms: now_ms(), op: WriteOp::Compact { revision: target } };
        let Ok(data) = postcard::to_stdvec(&cmd) else { return Ok(()) };
        // Refused when no longer the leader or during a transfer: the next
        // leader decides.
        if let Ok(index) = self.raw.propose(Bytes::from(data)) {
            debug!("{}, proposed compacting history below revision {target} at index {index}", self.id());
            self.history_compaction = Some(index);
        }
        Ok(())
    }
}
