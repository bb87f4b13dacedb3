//! The read-only view of durable state that Raft needs, and an in-memory
//! implementation of it.
//!
//! Raft never writes through this trait: the application persists what
//! [`crate::Ready`] hands it, then tells the core with [`crate::RawNode::advance`].

use crate::message::{ConfState, Entry, HardState, Index, SnapshotMeta, Term};

/// Why a storage read failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The entry was compacted into a snapshot and is gone from the log.
    #[error("log entry {0} is compacted")]
    Compacted(Index),
    /// The entry is beyond the end of the log.
    #[error("log entry {0} is unavailable")]
    Unavailable(Index),
    /// The underlying store failed.
    #[error("storage failure: {0}")]
    Io(Box<dyn std::error::Error + Send + Sync>),
}

/// The durable state a member starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitialState {
    /// The persisted term, vote and commit index.
    pub hard_state: HardState,
    /// The membership of the latest snapshot (or the bootstrap membership if
    /// there is no snapshot). Membership entries in the log after it are
    /// found by the core itself.
    pub conf: ConfState,
}

/// Read access to a member's durable log and state.
///
/// Indices passed in are always `>= first_index() - 1` for `term` and
/// `>= first_index()` for `entries` unless the call is meant to discover
/// compaction, in which case the answer is [`StorageError::Compacted`].
pub trait Storage {
    /// The hard state and base membership to start from.
    fn initial_state(&self) -> Result<InitialState, StorageError>;

    /// Entries `[lo, hi)`, stopping early (but always returning at least one
    /// entry when `lo < hi`) once their total [`Entry::size`] would pass `max_bytes`.
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError>;

    /// The term of the entry at `index`. `term(first_index() - 1)` is the term
    /// of the latest snapshot (0 for an empty log).
    fn term(&self, index: Index) -> Result<Term, StorageError>;

    /// The index of the first entry still in the log (`snapshot index + 1`).
    fn first_index(&self) -> Result<Index, StorageError>;

    /// The index of the last entry in the log (the snapshot index if empty).
    fn last_index(&self) -> Result<Index, StorageError>;

    /// The latest snapshot, to send to a follower that needs entries older
    /// than `first_index()`. The application transfers the data itself.
    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError>;
}

/// An in-memory [`Storage`]: for tests, the simulation, and as the reference
/// implementation of the contract.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    snapshot: SnapshotMeta,
    /// Entries after the snapshot. Invariant: `entries[i].index == snapshot.index + 1 + i`.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// An empty log whose initial membership is `conf`.
    pub fn new_with_conf(conf: ConfState) -> MemStorage {
        MemStorage { snapshot: SnapshotMeta { index: 0, term: 0, conf }, ..MemStorage::default() }
    }

    /// Records the hard state.
    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    /// The recorded hard state.
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Appends `entries`, first removing every existing entry at or after
    /// `entries[0].index`. Entries already compacted are skipped.
    ///
    /// Fails if the entries would leave a gap after the current last index.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let offset = self.snapshot.index + 1;
        let last = self.snapshot.index + self.entries.len() as u64;
        if first.index > last + 1 {
            return Err(StorageError::Unavailable(last + 1));
        }
        let skip = offset.saturating_sub(first.index) as usize;
        let entries = entries.get(skip..).unwrap_or(&[]);
        let Some(first) = entries.first() else { return Ok(()) };
        self.entries.truncate((first.index - offset) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Replaces the whole log with a snapshot: everything the log held is
    /// discarded, and the log continues at `meta.index + 1`.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta) {
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.snapshot = meta;
    }

    /// Discards entries up to and including `index` (which must be applied),
    /// recording `conf` as the membership at `index`.
    pub fn compact(&mut self, index: Index, conf: ConfState) -> Result<(), StorageError> {
        if index <= self.snapshot.index {
            return Ok(());
        }
        let term = self.term(index)?;
        let drop = (index - self.snapshot.index) as usize;
        self.entries.drain(..drop);
        self.snapshot = SnapshotMeta { index, term, conf };
        Ok(())
    }

    fn last(&self) -> Index {
        self.snapshot.index + self.entries.len() as u64
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> Result<InitialState, StorageError> {
        Ok(InitialState { hard_state: self.hard_state, conf: self.snapshot.conf.clone() })
    }

    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo <= self.snapshot.index {
            return Err(StorageError::Compacted(lo));
        }
        if hi > self.last() + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let base = self.snapshot.index + 1;
        let slice = &self.entries[(lo - base) as usize..(hi - base) as usize];
        Ok(limit_size(slice, max_bytes).to_vec())
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index < self.snapshot.index {
            return Err(StorageError::Compacted(index));
        }
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        match self.entries.get((index - self.snapshot.index - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(StorageError::Unavailable(index)),
        }
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.snapshot.index + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.last())
    }

    fn snapshot_meta(&self) -> Result<SnapshotMeta, StorageError> {
        Ok(self.snapshot.clone())
    }
}

/// The longest prefix of `entries` whose total size stays within `max_bytes`,
/// but never fewer than one entry.
pub fn limit_size(entries: &[Entry], max_bytes: u64) -> &[Entry] {
    let mut total = 0u64;
    for (i, e) in entries.iter().enumerate() {
        total += e.size();
        if total > max_bytes && i > 0 {
            return &entries[..i];
        }
    }
    entries
}
