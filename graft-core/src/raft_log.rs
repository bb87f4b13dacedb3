//! The log as Raft sees it: the durable part in [`Storage`], plus the
//! entries (and snapshot) not yet handed to the application for persisting.

use crate::message::{Entry, Index, SnapshotMeta, Term};
use crate::storage::{Storage, StorageError};

/// Entries and a snapshot that are not yet durable.
#[derive(Debug, Default)]
struct Unstable {
    /// A snapshot received from the leader, to be installed by the application.
    snapshot: Option<SnapshotMeta>,
    /// Whether `snapshot` was handed out in a `Ready`.
    snapshot_in_progress: bool,
    /// The index of `entries[0]` (or where it would be).
    /// Invariant: entries in storage at or after `offset` are stale and are
    /// replaced by `entries` once the application persists them.
    offset: Index,
    /// Entries not yet known durable. Invariant: `entries[i].index == offset + i`.
    entries: Vec<Entry>,
    /// Entries with index `< in_progress` were handed out in a `Ready`.
    /// Invariant: `offset <= in_progress <= offset + entries.len()`.
    in_progress: Index,
}

impl Unstable {
    fn last_index(&self) -> Option<Index> {
        if let Some(e) = self.entries.last() {
            Some(e.index)
        } else {
            self.snapshot.as_ref().map(|s| s.index)
        }
    }

    fn term(&self, index: Index) -> Option<Term> {
        if index >= self.offset {
            return self.entries.get((index - self.offset) as usize).map(|e| e.term);
        }
        match &self.snapshot {
            Some(s) if s.index == index => Some(s.term),
            _ => None,
        }
    }

    fn truncate_and_append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        let after = first.index;
        if after == self.offset + self.entries.len() as u64 {
            // The common case: a plain append.
        } else if after <= self.offset {
            // Replaces everything unstable (and the stale part of storage).
            self.offset = after;
            self.entries.clear();
        } else {
            self.entries.truncate((after - self.offset) as usize);
        }
        self.in_progress = self.in_progress.min(after).max(self.offset);
        self.entries.extend_from_slice(entries);
    }
}

/// What [`RaftLog::maybe_append`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    /// The log matches the leader's up to this index.
    Matched(Index),
    /// The log has no entry at `prev_index` with `prev_term`.
    Mismatch,
    /// The entries would overwrite this committed index; nothing was changed.
    ConflictsWithCommitted(Index),
}

/// The replicated log of one member.
#[derive(Debug)]
pub struct RaftLog<S> {
    /// The durable log, written by the application.
    pub storage: S,
    unstable: Unstable,
    /// The highest index known committed.
    /// Invariant: `applied <= committed`, and entries up to `committed` are never truncated.
    pub committed: Index,
    /// The highest index the application has applied (as of the last `advance`).
    /// Invariant: `applied <= applying <= committed`.
    pub applied: Index,
    /// The highest index handed out for applying.
    pub applying: Index,
    /// The highest index known durable and belonging to this log. Committed
    /// entries are handed out for applying only up to here.
    pub persisted: Index,
    /// The most bytes of committed entries one `Ready` hands out.
    pub max_apply_bytes: u64,
}

impl<S: Storage> RaftLog<S> {
    /// Opens the log over `storage`, with `applied` from the application.
    pub fn new(storage: S, applied: Index) -> Result<RaftLog<S>, StorageError> {
        let first = storage.first_index()?;
        let last = storage.last_index()?;
        let commit = storage.initial_state()?.hard_state.commit.max(first - 1);
        // The application may have applied past the persisted commit index
        // (commit is persisted lazily). `Raft::new` checked that `applied`
        // lies within the log (between its base and its end).
        let committed = commit.max(applied).min(last);
        Ok(RaftLog {
            storage,
            unstable: Unstable { offset: last + 1, in_progress: last + 1, ..Unstable::default() },
            committed,
            applied,
            applying: applied,
            persisted: last,
            max_apply_bytes: 16 << 20,
        })
    }

    /// The index of the first entry available (after the latest snapshot).
    pub fn first_index(&self) -> Result<Index, StorageError> {
        match &self.unstable.snapshot {
            Some(s) => Ok(s.index + 1),
            None => self.storage.first_index(),
        }
    }

    /// The index of the last entry.
    pub fn last_index(&self) -> Result<Index, StorageError> {
        match self.unstable.last_index() {
            Some(i) => Ok(i),
            None => self.storage.last_index(),
        }
    }

    /// The term of the entry at `index`.
    pub fn term(&self, index: Index) -> Result<Term, StorageError> {
        let first = self.first_index()?;
        if index + 1 < first {
            return Err(StorageError::Compacted(index));
        }
        if index > self.last_index()? {
            return Err(StorageError::Unavailable(index));
        }
        if let Some(t) = self.unstable.term(index) {
            return Ok(t);
        }
        self.storage.term(index)
    }

    /// The term of the last entry.
    pub fn last_term(&self) -> Result<Term, StorageError> {
        self.term(self.last_index()?)
    }

    /// The term at `index`, or 0 if the entry is compacted or missing.
    pub fn term_or_zero(&self, index: Index) -> Result<Term, StorageError> {
        match self.term(index) {
            Ok(t) => Ok(t),
            Err(StorageError::Compacted(_) | StorageError::Unavailable(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Whether the log holds an entry at `index` with `term`.
    pub fn match_term(&self, index: Index, term: Term) -> Result<bool, StorageError> {
        match self.term(index) {
            Ok(t) => Ok(t == term),
            Err(StorageError::Compacted(_) | StorageError::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Entries `[lo, hi)` within `max_bytes` (at least one when `lo < hi`).
    pub fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, StorageError> {
        if lo >= hi {
            return Ok(Vec::new());
        }
        let first = self.first_index()?;
        if lo < first {
            return Err(StorageError::Compacted(lo));
        }
        let last = self.last_index()?;
        if hi > last + 1 {
            return Err(StorageError::Unavailable(hi - 1));
        }
        let offset = self.unstable.offset;
        let mut out = Vec::new();
        if lo < offset {
            out = self.storage.entries(lo, hi.min(offset), max_bytes)?;
            // Storage stopped early (size limit): do not look further.
            if (out.len() as u64) < hi.min(offset) - lo {
                return Ok(out);
            }
        }
        if hi > offset {
            let from = (lo.max(offset) - offset) as usize;
            let to = (hi - offset) as usize;
            let mut size: u64 = out.iter().map(Entry::size).sum();
            for e in &self.unstable.entries[from..to] {
                size += e.size();
                if size > max_bytes && !out.is_empty() {
                    break;
                }
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    /// Whether a candidate whose log ends at (`last_index`, `last_term`) is at
    /// least as up to date as this log (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> Result<bool, StorageError> {
        let my_term = self.last_term()?;
        Ok(last_term > my_term || (last_term == my_term && last_index >= self.last_index()?))
    }

    /// Appends entries as the leader. Returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Index, StorageError> {
        if let Some(first) = entries.first() {
            self.truncate_to(first.index);
            self.unstable.truncate_and_append(entries);
        }
        self.last_index()
    }

    fn truncate_to(&mut self, after: Index) {
        self.persisted = self.persisted.min(after.saturating_sub(1));
    }

    /// The index of the first entry of `entries` that conflicts with the log
    /// (same index, other term) or is new; 0 if the log already holds them all.
    pub fn find_conflict(&self, entries: &[Entry]) -> Result<Index, StorageError> {
        for e in entries {
            if !self.match_term(e.index, e.term)? {
                return Ok(e.index);
            }
        }
        Ok(0)
    }

    /// The largest index `<= index` whose term is `<= term`, and that term.
    /// Used for fast backtracking on both sides of a rejected append.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> Result<(Index, Term), StorageError> {
        let mut i = index.min(self.last_index()?);
        loop {
            match self.term(i) {
                Ok(t) if t > term => i -= 1,
                Ok(t) => return Ok((i, t)),
                // Compacted entries are committed, so they match the leader.
                Err(StorageError::Compacted(_) | StorageError::Unavailable(_)) => return Ok((i, 0)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Follower side of AppendEntries: if the log matches at
    /// (`prev_index`, `prev_term`), append `entries` (dropping a conflicting
    /// suffix) and advance the commit index. Returns the index of the last
    /// entry now known to match the leader, or `None` if the log does not match.
    ///
    /// Entries that conflict with a committed entry are refused
    /// ([`AppendOutcome::ConflictsWithCommitted`]): no correct leader sends them.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: &[Entry],
    ) -> Result<AppendOutcome, StorageError> {
        if !self.match_term(prev_index, prev_term)? {
            return Ok(AppendOutcome::Mismatch);
        }
        let last_new = prev_index + entries.len() as u64;
        let conflict = self.find_conflict(entries)?;
        if conflict != 0 {
            if conflict <= self.committed {
                return Ok(AppendOutcome::ConflictsWithCommitted(conflict));
            }
            let start = (conflict - prev_index - 1) as usize;
            self.append(&entries[start..])?;
        }
        self.commit_to(commit.min(last_new));
        Ok(AppendOutcome::Matched(last_new))
    }

    /// Raises the commit index to `index` (never lowers it, never past the log).
    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            if let Ok(last) = self.last_index() {
                self.committed = index.min(last).max(self.committed);
            }
        }
    }

    /// Leader side: commit `index` if its entry is of `term` (§5.4.2: only
    /// entries of the leader's current term are committed by counting).
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> Result<bool, StorageError> {
        if index > self.committed && self.term_or_zero(index)? == term {
            self.commit_to(index);
            return Ok(true);
        }
        Ok(false)
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn restore(&mut self, meta: SnapshotMeta) {
        self.committed = meta.index;
        self.persisted = self.persisted.min(meta.index);
        self.unstable.offset = meta.index + 1;
        self.unstable.in_progress = meta.index + 1;
        self.unstable.entries.clear();
        self.unstable.snapshot = Some(meta);
        self.unstable.snapshot_in_progress = false;
    }

    /// The pending snapshot not yet handed out.
    pub fn next_snapshot(&self) -> Option<&SnapshotMeta> {
        self.unstable.snapshot.as_ref().filter(|_| !self.unstable.snapshot_in_progress)
    }

    /// Whether there are entries to hand out for persisting.
    pub fn has_next_unstable(&self) -> bool {
        self.unstable.in_progress < self.unstable.offset + self.unstable.entries.len() as u64
    }

    /// The entries to hand out for persisting.
    pub fn next_unstable(&self) -> &[Entry] {
        let from = (self.unstable.in_progress - self.unstable.offset) as usize;
        &self.unstable.entries[from..]
    }

    /// Marks everything unstable as handed out.
    pub fn accept_unstable(&mut self) -> Option<(Index, Term)> {
        self.unstable.snapshot_in_progress = self.unstable.snapshot.is_some();
        self.unstable.in_progress = self.unstable.offset + self.unstable.entries.len() as u64;
        self.unstable.entries.last().map(|e| (e.index, e.term))
    }

    /// The application made entries up to (`index`, `term`) durable.
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if self.unstable.term(index) != Some(term) || index < self.unstable.offset {
            return;
        }
        let n = (index + 1 - self.unstable.offset) as usize;
        self.unstable.entries.drain(..n);
        self.unstable.offset = index + 1;
        self.unstable.in_progress = self.unstable.in_progress.max(self.unstable.offset);
        self.persisted = self.persisted.max(index);
    }

    /// The application installed the snapshot at `index`.
    pub fn stable_snapshot_to(&mut self, index: Index) {
        if self.unstable.snapshot.as_ref().is_some_and(|s| s.index == index) {
            self.unstable.snapshot = None;
            self.unstable.snapshot_in_progress = false;
            self.persisted = self.persisted.max(index);
            self.applied = self.applied.max(index);
            self.applying = self.applying.max(index);
        }
    }

    /// Whether committed entries are waiting to be handed out for applying.
    pub fn has_next_committed(&self) -> bool {
        self.unstable.snapshot.is_none() && self.applying < self.committed.min(self.persisted)
    }

    /// The committed entries to hand out for applying.
    pub fn next_committed(&self) -> Result<Vec<Entry>, StorageError> {
        if !self.has_next_committed() {
            return Ok(Vec::new());
        }
        let hi = self.committed.min(self.persisted);
        self.entries(self.applying + 1, hi + 1, self.max_apply_bytes)
    }

    /// A pending snapshot (handed out or not) is not yet installed.
    pub fn has_pending_snapshot(&self) -> bool {
        self.unstable.snapshot.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ConfState, EntryPayload};
    use crate::storage::MemStorage;

    fn ent(index: Index, term: Term) -> Entry {
        Entry { index, term, payload: EntryPayload::Noop }
    }

    fn log_with(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut s = MemStorage::new_with_conf(ConfState::with_voters([1]));
        let ents: Vec<Entry> = terms.iter().enumerate().map(|(i, &t)| ent(i as u64 + 1, t)).collect();
        s.append(&ents).unwrap();
        RaftLog::new(s, 0).unwrap()
    }

    #[test]
    fn find_conflict_by_term_skips_whole_terms() {
        let log = log_with(&[1, 1, 2, 2, 2, 5, 5]);
        assert_eq!(log.find_conflict_by_term(7, 4).unwrap(), (5, 2));
        assert_eq!(log.find_conflict_by_term(7, 1).unwrap(), (2, 1));
        assert_eq!(log.find_conflict_by_term(7, 0).unwrap(), (0, 0));
        assert_eq!(log.find_conflict_by_term(10, 9).unwrap(), (7, 5));
    }

    #[test]
    fn follower_truncates_a_conflicting_suffix() {
        let mut log = log_with(&[1, 1, 2, 2]);
        let got = log.maybe_append(2, 1, 0, &[ent(3, 3), ent(4, 3), ent(5, 3)]).unwrap();
        assert_eq!(got, AppendOutcome::Matched(5));
        assert_eq!(log.term(3).unwrap(), 3);
        assert_eq!(log.last_index().unwrap(), 5);
        assert_eq!(log.persisted, 2, "the replaced entries are no longer durable");
        assert_eq!(log.next_unstable().len(), 3);
    }

    #[test]
    fn follower_ignores_entries_it_already_has() {
        let mut log = log_with(&[1, 1, 2, 2]);
        // An old, shorter append must not truncate anything.
        let got = log.maybe_append(1, 1, 0, &[ent(2, 1)]).unwrap();
        assert_eq!(got, AppendOutcome::Matched(2));
        assert_eq!(log.last_index().unwrap(), 4);
        assert!(!log.has_next_unstable());
    }

    #[test]
    fn follower_rejects_a_gap() {
        let mut log = log_with(&[1, 1]);
        assert_eq!(log.maybe_append(5, 1, 0, &[ent(6, 1)]).unwrap(), AppendOutcome::Mismatch);
    }

    #[test]
    fn a_conflict_with_a_committed_entry_is_an_error() {
        let mut log = log_with(&[1, 1, 2]);
        log.commit_to(3);
        assert_eq!(
            log.maybe_append(2, 1, 3, &[ent(3, 3)]).unwrap(),
            AppendOutcome::ConflictsWithCommitted(3)
        );
        assert_eq!(log.term(3).unwrap(), 2);
    }

    #[test]
    fn commit_never_passes_the_log_or_goes_back() {
        let mut log = log_with(&[1, 1]);
        log.commit_to(9);
        assert_eq!(log.committed, 2);
        log.commit_to(1);
        assert_eq!(log.committed, 2);
    }

    #[test]
    fn stable_to_ignores_a_replaced_entry() {
        let mut log = log_with(&[1]);
        log.append(&[ent(2, 2), ent(3, 2)]).unwrap();
        log.accept_unstable();
        log.maybe_append(1, 1, 0, &[ent(2, 3)]).unwrap();
        log.stable_to(3, 2);
        assert_eq!(log.persisted, 1);
        assert_eq!(log.next_unstable().len(), 1, "the replacement is handed out again");
    }

    #[test]
    fn a_conflicting_append_replaces_unpersisted_entries_from_its_index() {
        let mut log = log_with(&[1]);
        log.append(&[ent(2, 1)]).unwrap();
        // The only unpersisted entry is replaced.
        assert_eq!(log.maybe_append(1, 1, 0, &[ent(2, 2)]).unwrap(), AppendOutcome::Matched(2));
        assert_eq!((log.last_index().unwrap(), log.term(2).unwrap()), (2, 2));
        assert_eq!(log.next_unstable().iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(2, 2)]);
        // A conflict in the middle of the unpersisted entries drops those after it.
        log.append(&[ent(3, 2), ent(4, 2)]).unwrap();
        assert_eq!(log.maybe_append(2, 2, 0, &[ent(3, 3)]).unwrap(), AppendOutcome::Matched(3));
        assert_eq!((log.last_index().unwrap(), log.term(3).unwrap()), (3, 3));
        let unstable: Vec<(Index, Term)> = log.next_unstable().iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(unstable, vec![(2, 2), (3, 3)]);
    }

    fn cmd(index: Index, term: Term, len: usize) -> Entry {
        Entry { index, term, payload: EntryPayload::Command(vec![0; len].into()) }
    }

    fn indexes(entries: Vec<Entry>) -> Vec<Index> {
        entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn entries_span_the_durable_and_unpersisted_log_within_the_size_limit() {
        let mut log = log_with(&[1, 1]);
        log.append(&[ent(3, 1), ent(4, 1), ent(5, 1)]).unwrap();
        let size = ent(1, 1).size();
        assert_eq!(indexes(log.entries(1, 6, u64::MAX).unwrap()), vec![1, 2, 3, 4, 5]);
        assert_eq!(indexes(log.entries(2, 5, u64::MAX).unwrap()), vec![2, 3, 4]);
        // Entries up to the limit exactly; past it, the last one is left out.
        assert_eq!(indexes(log.entries(1, 6, 3 * size).unwrap()), vec![1, 2, 3]);
        assert_eq!(indexes(log.entries(1, 6, 3 * size - 1).unwrap()), vec![1, 2]);
        assert_eq!(indexes(log.entries(3, 6, 2 * size).unwrap()), vec![3, 4]);
        // At least one entry, however small the limit.
        assert_eq!(indexes(log.entries(3, 6, 0).unwrap()), vec![3]);
        assert_eq!(indexes(log.entries(1, 6, 0).unwrap()), vec![1]);
        // Past the end: the error names the highest index asked for.
        assert!(matches!(log.entries(4, 9, u64::MAX), Err(StorageError::Unavailable(8))));
    }

    #[test]
    fn entries_stop_where_storage_stopped_for_the_size_limit() {
        // Durable: a small entry, then a large one; unpersisted: a small one.
        let mut s = MemStorage::new_with_conf(ConfState::with_voters([1]));
        s.append(&[ent(1, 1), cmd(2, 1, 100)]).unwrap();
        let mut log = RaftLog::new(s, 0).unwrap();
        log.append(&[ent(3, 1)]).unwrap();
        let limit = ent(1, 1).size() + ent(3, 1).size();
        assert_eq!(indexes(log.entries(1, 4, limit).unwrap()), vec![1], "no gap where entry 2 did not fit");
    }

    #[test]
    fn a_received_snapshot_is_pending_until_installed() {
        let mut log = log_with(&[1]);
        assert!(!log.has_pending_snapshot());
        log.restore(SnapshotMeta { index: 5, term: 2, conf: ConfState::with_voters([1]) });
        assert!(log.has_pending_snapshot());
        assert_eq!(log.next_snapshot().map(|s| s.index), Some(5));
        log.accept_unstable();
        assert!(log.next_snapshot().is_none(), "handed out");
        assert!(log.has_pending_snapshot(), "handed out, not installed yet");
        log.stable_snapshot_to(5);
        assert!(!log.has_pending_snapshot());
    }
}
