//! The Raft log and hard state in redb, behind [`graft_core::Storage`].

use std::collections::VecDeque;
use std::sync::Arc;

use graft_core::{
    ConfState, Entry, EntryPayload, HardState, Index, InitialState, SnapshotMeta, Storage, Term,
};
use redb::{Database, ReadableDatabase, WriteTransaction};

use super::{decode, encode, meta_record, LOG, META};
use crate::error::StoreError;

/// How many of the newest entries are kept in memory, so that replicating
/// recent entries to followers does not read the database.
const CACHE_ENTRIES: usize = 8192;

pub(super) fn init(wtx: &WriteTransaction, conf: &ConfState) -> Result<(), StoreError> {
    let mut meta = wtx.open_table(META)?;
    let base = SnapshotMeta { index: 0, term: 0, conf: conf.clone() };
    meta.insert("log_base", encode("log_base", &base)?.as_slice())?;
    meta.insert("hard_state", encode("hard_state", &HardState::default())?.as_slice())?;
    Ok(())
}

fn encode_entry(e: &Entry) -> Result<Vec<u8>, StoreError> {
    let mut out = e.term.to_le_bytes().to_vec();
    let payload = postcard::to_stdvec(&e.payload).map_err(|err| StoreError::Corrupt {
        what: format!("log entry {}", e.index),
        message: err.to_string(),
    })?;
    out.extend_from_slice(&payload);
    Ok(out)
}

fn decode_term(index: Index, bytes: &[u8]) -> Result<Term, StoreError> {
    let head: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        StoreError::Corrupt { what: format!("log entry {index}"), message: "shorter than its term".into() }
    })?;
    Ok(Term::from_le_bytes(head))
}

pub(super) fn decode_entry(index: Index, bytes: &[u8]) -> Result<Entry, StoreError> {
    let term = decode_term(index, bytes)?;
    let payload: EntryPayload = decode(&format!("log entry {index}"), &bytes[8..])?;
    Ok(Entry { term, index, payload })
}

/// Database writes prepared by [`RaftLogStore`]'s `stage` methods, applied
/// in order: removals, the new base, the entries, the hard state.
#[derive(Debug, Default)]
pub struct LogWrite {
    /// Entries to delete, inclusive.
    remove: Option<(Index, Index)>,
    /// A new log base (compaction or snapshot).
    base: Option<SnapshotMeta>,
    /// Entries to insert.
    entries: Vec<Entry>,
    /// The hard state to record.
    hard_state: Option<HardState>,
}

impl LogWrite {
    /// A short description for diagnostics.
    pub fn summary(&self) -> String {
        format!(
            "remove {:?}, {} entries, base {:?}",
            self.remove,
            self.entries.len(),
            self.base.as_ref().map(|b| b.index)
        )
    }

    /// Whether it appends at most `max` entries (and perhaps a hard state),
    /// with no removal (truncation or compaction) and no new base.
    pub fn is_small_append(&self, max: usize) -> bool {
        self.remove.is_none() && self.base.is_none() && self.entries.len() <= max
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.remove.is_none() && self.base.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }

    /// Writes everything into `wtx`.
    pub fn apply(&self, wtx: &WriteTransaction) -> Result<(), StoreError> {
        if self.remove.is_some() || !self.entries.is_empty() {
            let mut log = wtx.open_table(LOG)?;
            if let Some((from, to)) = self.remove {
                // One scan with batched removals: several times cheaper
                // than a root-to-leaf descent per entry.
                log.retain_in(from..=to, |_, _| false)?;
            }
            for e in &self.entries {
                log.insert(e.index, encode_entry(e)?.as_slice())?;
            }
        }
        if self.base.is_some() || self.hard_state.is_some() {
            let mut meta = wtx.open_table(META)?;
            if let Some(base) = &self.base {
                meta.insert("log_base", encode("log_base", base)?.as_slice())?;
            }
            if let Some(hs) = &self.hard_state {
                meta.insert("hard_state", encode("hard_state", hs)?.as_slice())?;
            }
        }
        Ok(())
    }
}

/// The Raft log and hard state of one member.
///
/// Reads come from memory where possible (every entry's term, the newest
/// entries in full); writes go into the caller's write transaction, so they
/// commit atomically with whatever else the caller writes.
pub struct RaftLogStore {
    db: Arc<Database>,
    hard_state: HardState,
    /// The log's base: the latest snapshot or compaction point.
    base: SnapshotMeta,
    /// `terms[i]` is the term of entry `base.index + 1 + i`; its length is the
    /// number of entries in the log.
    terms: VecDeque<Term>,
    /// `sizes[i]` is the stored size of the same entry. Invariant: same
    /// length as `terms`, and `total_bytes` is its sum.
    sizes: VecDeque<u32>,
    total_bytes: u64,
    /// The newest entries. Invariant: contiguous, and the last one is the
    /// log's last entry (or it is empty).
    cache: VecDeque<Entry>,
}

impl RaftLogStore {
    /// Loads the log store of an opened database.
    pub fn load(db: Arc<Database>) -> Result<RaftLogStore, StoreError> {
        let rtx = db.begin_read()?;
        let meta = rtx.open_table(META)?;
        let hard_state: HardState = meta_record(&meta, "hard_state")?;
        let base: SnapshotMeta = meta_record(&meta, "log_base")?;
        let log = rtx.open_table(LOG)?;
        let mut terms = VecDeque::new();
        let mut sizes = VecDeque::new();
        for (expect, item) in (base.index + 1..).zip(log.range(base.index + 1..)?) {
            let (k, v) = item?;
            let index = k.value();
            if index != expect {
                return Err(StoreError::Corrupt {
                    what: "log".into(),
                    message: format!("entry {expect} is missing (found {index})"),
                });
            }
            terms.push_back(decode_term(index, v.value())?);
            sizes.push_back(v.value().len() as u32);
        }
        let total_bytes = sizes.iter().map(|&s| u64::from(s)).sum();
        let mut store = RaftLogStore {
            db: db.clone(),
            hard_state,
            base,
            terms,
            sizes,
            total_bytes,
            cache: VecDeque::new(),
        };
        // Warm the cache with the newest entries.
        let last = store.last();
        let lo = (last + 1).saturating_sub(CACHE_ENTRIES as u64).max(store.base.index + 1);
        if lo <= last {
            for item in log.range(lo..=last)? {
                let (k, v) = item?;
                store.cache.push_back(decode_entry(k.value(), v.value())?);
            }
        }
        Ok(store)
    }

    fn last(&self) -> Index {
        self.base.index + self.terms.len() as u64
    }

    /// The hard state as persisted.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// The log's base (latest snapshot or compaction point).
    pub fn base(&self) -> &SnapshotMeta {
        &self.base
    }

    /// The number of entries in the log.
    pub fn len(&self) -> u64 {
        self.terms.len() as u64
    }

    /// The stored size of the log's entries, in bytes.
    pub fn bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether the log holds no entries.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Records `entries` (replacing any at or after the first one's index)
    /// and `hard_state` in the in-memory view now, and returns the database
    /// writes that make them durable, to be applied in a write transaction
    /// (possibly on another thread). The core never reads an index from
    /// storage before it learns that index is durable, so updating the view
    /// first is safe. If the writes then fail, the view is wrong: the caller
    /// must stop using this store (graft-kv exits).
    pub fn stage(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    ) -> Result<LogWrite, StoreError> {
        let mut w = LogWrite::default();
        if let Some(first) = entries.first() {
            let from = first.index;
            if from <= self.base.index || from > self.last() + 1 {
                return Err(StoreError::Corrupt {
                    what: "append".into(),
                    message: format!(
                        "entries from {from} do not fit a log of {}..={}",
                        self.base.index + 1,
                        self.last()
                    ),
                });
            }
            let last = self.last();
            if from <= last {
                w.remove = Some((from, last));
            }
            let keep = (from - self.base.index - 1) as usize;
            self.terms.truncate(keep);
            for s in self.sizes.drain(keep..) {
                self.total_bytes -= u64::from(s);
            }
            for e in &entries {
                let size = e.size() + 8;
                self.terms.push_back(e.term);
                self.sizes.push_back(size as u32);
                self.total_bytes += size;
            }
            while self.cache.back().is_some_and(|e| e.index >= from) {
                self.cache.pop_back();
            }
            if self.cache.back().is_some_and(|e| e.index + 1 != from) {
                self.cache.clear();
            }
            self.cache.extend(entries.iter().cloned());
            while self.cache.len() > CACHE_ENTRIES {
                self.cache.pop_front();
            }
            w.entries = entries;
        }
        if let Some(hs) = hard_state {
            w.hard_state = Some(hs);
            self.hard_state = hs;
        }
        Ok(w)
    }

    /// Like [`RaftLogStore::stage`], written into `wtx` at once.
    pub fn write(
        &mut self,
        wtx: &WriteTransaction,
        entries: &[Entry],
        hard_state: Option<HardState>,
    ) -> Result<(), StoreError> {
        self.stage(entries.to_vec(), hard_state)?.apply(wtx)
    }

    /// Drops entries up to and including `index` from the view, recording
    /// (`index`, `term`, `conf`) as the new base; returns the database
    /// writes. `index` must be applied and durable.
    pub fn stage_compact(&mut self, index: Index, term: Term, conf: ConfState) -> LogWrite {
        let mut w = LogWrite::default();
        if index <= self.base.index || index > self.last() {
            return w;
        }
        w.remove = Some((self.base.index + 1, index));
        let base = SnapshotMeta { index, term, conf };
        w.base = Some(base.clone());
        let drop = (index - self.base.index) as usize;
        self.terms.drain(..drop);
        for s in self.sizes.drain(..drop) {
            self.total_bytes -= u64::from(s);
        }
        while self.cache.front().is_some_and(|e| e.index <= index) {
            self.cache.pop_front();
        }
        self.base = base;
        w
    }

    /// Like [`RaftLogStore::stage_compact`], written into `wtx` at once.
    pub fn compact(
        &mut self,
        wtx: &WriteTransaction,
        index: Index,
        term: Term,
        conf: ConfState,
    ) -> Result<(), StoreError> {
        self.stage_compact(index, term, conf).apply(wtx)
    }

    /// Replaces the whole log with an installed snapshot's base (in the view
    /// now; the returned writes make it durable).
    pub fn stage_reset(&mut self, meta: SnapshotMeta) -> LogWrite {
        let mut w = LogWrite::default();
        if self.last() > self.base.index {
            w.remove = Some((self.base.index + 1, self.last()));
        }
        w.base = Some(meta.clone());
        self.terms.clear();
        self.sizes.clear();
        self.total_bytes = 0;
        self.cache.clear();
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.base = meta;
        w
    }

    /// Like [`RaftLogStore::stage_reset`], written into `wtx` at once.
    pub fn reset_to(&mut self, wtx: &WriteTransaction, meta: SnapshotMeta) -> Result<(), StoreError> {
        self.stage_reset(meta).apply(wtx)
    }

    fn read_entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StoreError> {
        let rtx = self.db.begin_read()?;
        let log = rtx.open_table(LOG)?;
        let mut out = Vec::new();
        let mut size = 0;
        for item in log.range(lo..hi)? {
            let (k, v) = item?;
            let e = decode_entry(k.value(), v.value())?;
            size += e.size();
            if size > max_bytes && !out.is_empty() {
                break;
            }
            out.push(e);
        }
        Ok(out)
    }
}

impl Storage for RaftLogStore {
    fn initial_state(&self) -> Result<InitialState, graft_core::StorageError> {
        Ok(InitialState { hard_state: self.hard_state, conf: self.base.conf.clone() })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, graft_core::StorageError> {
        if lo <= self.base.index {
            return Err(graft_core::StorageError::Compacted(lo));
        }
        if hi > self.last() + 1 {
            return Err(graft_core::StorageError::Unavailable(hi - 1));
        }
        if lo >= hi {
            return Ok(Vec::new());
        }
        if let Some(first) = self.cache.front() {
            if lo >= first.index {
                let from = (lo - first.index) as usize;
                let to = (hi - first.index) as usize;
                let slice: Vec<Entry> = self.cache.range(from..to).cloned().collect();
                return Ok(graft_core::storage::limit_size(&slice, max_bytes).to_vec());
            }
        }
        Ok(self.read_entries(lo, hi, max_bytes)?)
    }

    fn term(&self, index: Index) -> Result<Term, graft_core::StorageError> {
        if index < self.base.index {
            return Err(graft_core::StorageError::Compacted(index));
        }
        if index == self.base.index {
            return Ok(self.base.term);
        }
        self.terms
            .get((index - self.base.index - 1) as usize)
            .copied()
            .ok_or(graft_core::StorageError::Unavailable(index))
    }

    fn first_index(&self) -> Result<Index, graft_core::StorageError> {
        Ok(self.base.index + 1)
    }

    fn last_index(&self) -> Result<Index, graft_core::StorageError> {
        Ok(self.last())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, graft_core::StorageError> {
        Ok(self.base.clone())
    }
}
