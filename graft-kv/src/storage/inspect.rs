//! Offline inspection of a stopped member's data directory
//! (`graft-kv inspect`): what its log and state machine hold, without
//! changing them.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use graft_core::{ConfState, Entry, EntryPayload, HardState, Index, NodeId, SnapshotMeta};
use redb::{ReadableDatabase, ReadableTableMetadata};

use super::state_machine::{MemberRecord, SmMeta};
use super::{decode, meta_record, Identity, DB_FILE, KV, LOG, META, SESSIONS, STATE_FILE};
use crate::command::Command;
use crate::error::StoreError;

/// What a data directory holds.
#[derive(Debug)]
pub struct Inspection {
    /// Whose data it is.
    pub identity: Option<Identity>,
    /// The persisted hard state.
    pub hard_state: HardState,
    /// The log's base (the latest compaction or snapshot point).
    pub base: SnapshotMeta,
    /// Entries `base.index + 1 ..= last_index` are in the log.
    pub last_index: Index,
    /// The state machine's applied index and term.
    pub applied: (Index, graft_core::Term),
    /// The members as the state machine records them.
    pub members: BTreeMap<NodeId, MemberRecord>,
    /// Rows in the key-value table.
    pub keys: u64,
    /// Rows in the sessions table.
    pub sessions: u64,
    /// The multi-version store's position (`None`: written before revisions).
    pub mvcc: Option<crate::mvcc::MvccMeta>,
    /// Rows of past records (history).
    pub history_rows: u64,
    /// Revisions whose writes are recorded (for watch replay).
    pub revision_rows: u64,
    /// The membership entries in the log, oldest first.
    pub config_entries: Vec<Entry>,
    /// The whole log, when asked for.
    pub entries: Vec<Entry>,
    /// Whether the databases needed a crash repair (done on a copy).
    pub repaired: bool,
}

/// Reads `dir` without writing to it. A database left by a crash needs a
/// repair that a read-only open cannot do: it is then copied to a temporary
/// directory and repaired there, and `repaired` says so.
pub fn inspect(dir: &Path, with_entries: bool) -> Result<Inspection, StoreError> {
    match read(dir, with_entries) {
        Err(StoreError::Db(redb::Error::RepairAborted)) => {
            let tmp = tempfile::tempdir().map_err(|cause| StoreError::Dir { dir: dir.to_owned(), cause })?;
            for f in [DB_FILE, STATE_FILE] {
                std::fs::copy(dir.join(f), tmp.path().join(f))
                    .map_err(|cause| StoreError::Dir { dir: dir.to_owned(), cause })?;
                drop(redb::Database::create(tmp.path().join(f))?);
            }
            let mut found = read(tmp.path(), with_entries)?;
            found.repaired = true;
            Ok(found)
        }
        other => other,
    }
}

fn read(dir: &Path, with_entries: bool) -> Result<Inspection, StoreError> {
    let log_db = redb::ReadOnlyDatabase::open(dir.join(DB_FILE))?;
    let rtx = log_db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let identity = meta.get("identity")?.map(|v| decode::<Identity>("identity", v.value())).transpose()?;
    let hard_state: HardState = meta_record(&meta, "hard_state")?;
    let base: SnapshotMeta = meta_record(&meta, "log_base")?;
    let log = rtx.open_table(LOG)?;
    let mut last_index = base.index;
    let mut config_entries = Vec::new();
    let mut entries = Vec::new();
    for item in redb::ReadableTable::iter(&log)? {
        let (k, v) = item?;
        let e = super::log::decode_entry(k.value(), v.value())?;
        last_index = e.index;
        if e.is_config() {
            config_entries.push(e.clone());
        }
        if with_entries {
            entries.push(e);
        }
    }
    let sm_db = redb::ReadOnlyDatabase::open(dir.join(STATE_FILE))?;
    let rtx = sm_db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let sm: SmMeta = meta_record(&meta, "sm")?;
    let keys = rtx.open_table(KV)?.len()?;
    let sessions = rtx.open_table(SESSIONS)?.len()?;
    let mvcc = crate::mvcc::meta_of(&meta)?;
    let rows = |r: Result<u64, StoreError>| match r {
        Err(StoreError::Db(redb::Error::TableDoesNotExist(_))) => Ok(0),
        other => other,
    };
    let history_rows =
        rows(rtx.open_table(crate::mvcc::HISTORY).map_err(StoreError::from).and_then(|t| Ok(t.len()?)))?;
    let revision_rows =
        rows(rtx.open_table(crate::mvcc::REVS).map_err(StoreError::from).and_then(|t| Ok(t.len()?)))?;
    Ok(Inspection {
        identity,
        hard_state,
        base,
        last_index,
        applied: (sm.applied, sm.applied_term),
        members: sm.members,
        keys,
        sessions,
        mvcc,
        history_rows,
        revision_rows,
        config_entries,
        entries,
        repaired: false,
    })
}

fn conf(c: &ConfState) -> String {
    format!("voters {:?} learners {:?}", c.voters, c.learners)
}

/// One line for an entry.
pub fn describe(e: &Entry) -> String {
    let what = match &e.payload {
        EntryPayload::Noop => "no-op".to_owned(),
        EntryPayload::Config(c) => {
            let ctx = crate::command::MemberContext::of(&c.change);
            format!(
                "{:?} {} (addr {:?}) -> {}",
                c.change.kind,
                c.change.node,
                ctx.map(|c| c.addr).unwrap_or_default(),
                conf(&c.conf)
            )
        }
        EntryPayload::Command(d) => match postcard::from_bytes::<Command>(d) {
            Ok(c) => c.op.describe(),
            Err(e) => format!("undecodable command: {e}"),
        },
    };
    format!("{:>8} t{:<4} {what}", e.index, e.term)
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.identity {
            Some(i) => writeln!(f, "identity:    member {} of cluster {:?}", i.member, i.cluster)?,
            None => writeln!(f, "identity:    none recorded")?,
        }
        if self.repaired {
            writeln!(f, "note:        the databases needed a crash repair (done on a copy; the originals are untouched)")?;
        }
        let hs = &self.hard_state;
        writeln!(f, "hard state:  term {} vote {:?} commit {}", hs.term, hs.vote, hs.commit)?;
        writeln!(
            f,
            "log:         base {} (term {}, {}), entries {}..={}",
            self.base.index,
            self.base.term,
            conf(&self.base.conf),
            self.base.index + 1,
            self.last_index
        )?;
        writeln!(f, "applied:     {} (term {})", self.applied.0, self.applied.1)?;
        writeln!(f, "data:        {} keys, {} sessions", self.keys, self.sessions)?;
        match &self.mvcc {
            Some(m) => writeln!(
                f,
                "history:     revision {}, compacted below {} (purged below {}), {} past records, {} revisions with writes",
                m.revision, m.compacted, m.purged, self.history_rows, self.revision_rows
            )?,
            None => writeln!(f, "history:     none (written before revisions; upgraded at the next start)")?,
        }
        writeln!(f, "members:")?;
        for (id, m) in &self.members {
            writeln!(
                f,
                "  {id}: {:?} {}{}",
                m.addr,
                if m.voter { "voter" } else { "learner" },
                if m.promote { " (to promote)" } else { "" }
            )?;
        }
        writeln!(f, "membership entries in the log:")?;
        for e in &self.config_entries {
            writeln!(f, "  {}", describe(e))?;
        }
        if !self.entries.is_empty() {
            writeln!(f, "log entries:")?;
            for e in &self.entries {
                writeln!(f, "  {}", describe(e))?;
            }
        }
        Ok(())
    }
}
