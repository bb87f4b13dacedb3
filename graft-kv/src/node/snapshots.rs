//! Snapshots and compaction on the node: streaming the state machine to a
//! follower behind the log's base, and dropping applied entries once the
//! log passes its limits (never past what the state machine holds durably).

use graft_core::Message;
use tracing::debug;

use crate::error::StoreError;
use crate::snapshot;

use super::{Node, NodeError};

impl Node {
    /// Starts streaming a snapshot of the state machine as it is now (at
    /// or after the log base the core named) to the message's target.
    pub(super) fn start_snapshot(&mut self, m: Message) -> Result<(), NodeError> {
        let to = m.to;
        if self.sending.contains(&to) {
            return Ok(());
        }
        let Some(addr) = self.addr_of(to) else {
            self.raw.report_snapshot(to, false);
            return Ok(());
        };
        let index = self.sm.applied();
        let meta =
            graft_core::SnapshotMeta { index, term: self.sm.applied_term(), conf: self.raw.conf_at(index) };
        let out = snapshot::Outgoing {
            rtx: self.sm.begin_read()?,
            meta,
            state: self.sm.export_meta()?,
            term: m.term,
        };
        self.sending.insert(to);
        let (cluster, me, inputs) = (self.opts.cluster.clone(), self.id(), self.opts.inputs.clone());
        tokio::spawn(snapshot::send(cluster, me, to, addr, out, inputs));
        Ok(())
    }

    /// Once the log passes the configured size, drops applied entries but
    /// the newest few from the in-memory log and returns the database writes,
    /// which travel in the next log transaction. Only entries the state
    /// machine holds durably go (`sm_durable_index`), so a crash never
    /// leaves it behind the log's base.
    pub(super) fn stage_compaction(&mut self) -> Result<Option<crate::storage::LogWrite>, NodeError> {
        let limits = self.opts.log;
        let log = self.raw.storage();
        let over = (limits.max_entries > 0 && log.len() > limits.max_entries)
            || (limits.max_bytes > 0 && log.bytes() > limits.max_bytes);
        if !over {
            return Ok(None);
        }
        // At most this many entries go per transaction, so that compaction
        // never stalls the node: a long log shrinks over a few batches.
        const MAX_COMPACT_PER_BATCH: u64 = 4096;
        let wanted = self.sm.applied().saturating_sub(limits.retain_entries);
        // Never past what the state machine holds durably: after a crash it
        // re-applies from there, out of the log. Only when that blocks all
        // progress is the state machine made durable for compaction's sake
        // (once per compaction, not once per batch: that fsync is costly).
        let upto = wanted.min(self.sm_durable_index).min(log.base().index + MAX_COMPACT_PER_BATCH);
        if upto <= log.base().index {
            if wanted > self.sm_durable_index {
                self.compaction_waits = true;
            }
            return Ok(None);
        }
        let term = graft_core::Storage::term(log, upto)
            .map_err(|e| StoreError::Corrupt { what: "compaction".into(), message: e.to_string() })?;
        let conf = self.raw.conf_at(upto);
        let w = self.raw.storage_mut().stage_compact(upto, term, conf);
        self.raw.on_compacted(upto);
        debug!("{}, compacting the log up to {upto}", self.id());
        Ok(Some(w))
    }
}
