//! The key-value state machine: applies committed entries to redb tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use graft_core::{ConfChangeKind, Entry, EntryPayload, Index, NodeId, Term};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::execute::{execute, Outcome, Tables};
use super::{decode, encode, meta_record, Bootstrap, META, SESSIONS, SESSIONS_STAGING};
use crate::command::{Command, MemberContext, WriteOp};
use crate::error::StoreError;
use crate::lease::{self, LeaseClock, LeaseWriter};
use crate::mvcc::{self, compact, read::View, MvccMeta, Writer};
use crate::protocol::{ApiError, Response, SessionSeq, SnapshotTable};

/// A session is forgotten when its client has not written for this long, by
/// the leaders' clocks as recorded in the log (so every member forgets it at
/// the same entry).
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;
/// Expired sessions are swept when the applied index crosses a multiple of this.
const SESSION_SWEEP_EVERY: u64 = 1024;
/// The most answers a session keeps for writes the client has not yet
/// acknowledged; older ones are forgotten first.
const SESSION_MAX_REPLIES: usize = 4096;

/// A member as the state machine records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Where it listens.
    pub addr: String,
    /// Whether it votes.
    pub voter: bool,
    /// A learner the leader promotes to voter once it has caught up.
    #[serde(default)]
    pub promote: bool,
}

/// The state machine's own metadata, written with every applied batch.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct SmMeta {
    /// The last applied index. Invariant: moves in the same transaction as
    /// the data changes of the entries up to it.
    pub(super) applied: Index,
    /// The term of the entry at `applied`.
    pub(super) applied_term: Term,
    /// The latest leader time seen in the log, in ms since the epoch.
    pub(super) clock_ms: u64,
    /// The members, with their addresses.
    pub(super) members: BTreeMap<NodeId, MemberRecord>,
}

/// What a session remembers for one client.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Session {
    /// Every seq below this was answered and acknowledged by the client.
    ack_below: u64,
    /// Answers to writes at or above `ack_below`, by seq.
    replies: BTreeMap<u64, Result<Response, ApiError>>,
    /// Leader time of the client's latest write.
    last_active_ms: u64,
}

/// The outcome of applying one entry.
#[derive(Clone, Debug)]
pub struct Applied {
    /// The entry's index.
    pub index: Index,
    /// The entry's term.
    pub term: Term,
    /// The answer for the client that proposed it (commands only).
    pub outcome: Option<Result<Response, ApiError>>,
    /// The command, for the timestamp demo's logging.
    pub op: Option<WriteOp>,
    /// What the entry wrote, in order, for watches.
    pub events: Vec<crate::protocol::WatchEvent>,
}

pub(super) fn init(wtx: &WriteTransaction, bootstrap: &Bootstrap) -> Result<(), StoreError> {
    let members = bootstrap
        .members
        .iter()
        .map(|(id, addr)| {
            (
                *id,
                MemberRecord {
                    addr: addr.clone(),
                    voter: bootstrap.conf.voters.contains(id),
                    promote: false,
                },
            )
        })
        .collect();
    let meta = SmMeta { members, ..SmMeta::default() };
    let mut t = wtx.open_table(META)?;
    t.insert("sm", encode("sm", &meta)?.as_slice())?;
    t.insert(MvccMeta::KEY, MvccMeta::default().encode()?.as_slice())?;
    drop(t);
    Writer::open(wtx)?;
    wtx.open_table(lease::LEASES)?;
    Ok(())
}

/// The applied index recorded in a state machine's `meta` table.
pub(super) fn applied_of<M: redb::ReadableTable<&'static str, &'static [u8]>>(
    meta: &M,
) -> Result<Index, StoreError> {
    let sm: SmMeta = meta_record(meta, "sm")?;
    Ok(sm.applied)
}

/// The key-value state machine of one member. Cloning gives a handle on the
/// same database with a copy of the in-memory metadata.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    meta: SmMeta,
    /// The multi-version store's position. Invariant: `mvcc.revision ==
    /// meta.applied`, both written with every applied batch.
    mvcc: MvccMeta,
    /// The lease clock, written with every applied batch.
    lease_clock: LeaseClock,
}

impl StateMachine {
    /// Loads the state machine, bringing one written before revisions
    /// existed to the current layout first.
    pub(super) fn load(db: Arc<Database>) -> Result<StateMachine, StoreError> {
        let rtx = db.begin_read()?;
        let table = rtx.open_table(META)?;
        let meta: SmMeta = meta_record(&table, "sm")?;
        let stored = mvcc::meta_of(&table)?;
        let lease_clock = match table.get(LeaseClock::KEY)? {
            Some(v) => decode(LeaseClock::KEY, v.value())?,
            None => LeaseClock::default(),
        };
        drop((table, rtx));
        let mvcc = match stored {
            Some(m) => m,
            None => {
                let wtx = db.begin_write()?;
                let m = mvcc::upgrade(&wtx, meta.applied)?;
                wtx.open_table(META)?.insert(MvccMeta::KEY, m.encode()?.as_slice())?;
                wtx.commit()?;
                m
            }
        };
        // The lease table came after the multi-version store.
        let rtx = db.begin_read()?;
        if matches!(rtx.open_table(lease::LEASES), Err(redb::TableError::TableDoesNotExist(_))) {
            let wtx = db.begin_write()?;
            wtx.open_table(lease::LEASES)?;
            wtx.commit()?;
        }
        drop(rtx);
        Ok(StateMachine { db, meta, mvcc, lease_clock })
    }

    /// The lease clock: the latest leader time seen, and its term.
    pub fn lease_clock(&self) -> LeaseClock {
        self.lease_clock
    }

    /// The multi-version store's position (revision and compaction point).
    pub fn mvcc(&self) -> MvccMeta {
        self.mvcc
    }

    /// The state machine's database.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// The last applied index.
    pub fn applied(&self) -> Index {
        self.meta.applied
    }

    /// The term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.meta.applied_term
    }

    /// The membership as of the applied index.
    pub fn conf(&self) -> graft_core::ConfState {
        let mut conf = graft_core::ConfState::default();
        for (id, m) in &self.meta.members {
            if m.voter {
                conf.voters.insert(*id);
            } else {
                conf.learners.insert(*id);
            }
        }
        conf
    }

    /// The members and their addresses, as of the applied index.
    pub fn members(&self) -> &BTreeMap<NodeId, MemberRecord> {
        &self.meta.members
    }

    /// Applies committed `entries` (in order, each exactly once) inside `wtx`.
    /// Entries at or below the applied index are skipped.
    pub fn apply(&mut self, wtx: &WriteTransaction, entries: &[Entry]) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(entries.len());
        if entries.is_empty() {
            return Ok(out);
        }
        let mut kv = Writer::open(wtx)?;
        let mut leases = LeaseWriter::open(wtx, self.lease_clock)?;
        let mut sessions = wtx.open_table(SESSIONS)?;
        // Sessions touched in this batch, each read and written once.
        let mut cache: HashMap<u64, Session> = HashMap::new();
        for e in entries {
            if e.index <= self.meta.applied {
                continue;
            }
            let mut applied =
                Applied { index: e.index, term: e.term, outcome: None, op: None, events: Vec::new() };
            kv.begin(e.index);
            match &e.payload {
                EntryPayload::Noop => {}
                EntryPayload::Config(c) => {
                    let ctx = MemberContext::of(&c.change)
                        .unwrap_or(MemberContext { addr: String::new(), promote: false });
                    let node = c.change.node;
                    match c.change.kind {
                        ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                            let voter = c.change.kind == ConfChangeKind::AddVoter;
                            let rec = self.meta.members.entry(node).or_insert_with(|| MemberRecord {
                                addr: ctx.addr.clone(),
                                voter,
                                promote: false,
                            });
                            rec.voter = voter;
                            rec.promote = !voter && ctx.promote;
                            if !ctx.addr.is_empty() {
                                rec.addr = ctx.addr;
                            }
                        }
                        ConfChangeKind::Remove => {
                            self.meta.members.remove(&node);
                        }
                    }
                    // The entry carries the whole membership: nobody else is in.
                    self.meta.members.retain(|id, _| c.conf.contains(*id));
                    applied.outcome = Some(Ok(Response::Done));
                }
                EntryPayload::Command(data) => match postcard::from_bytes::<Command>(data) {
                    Ok(cmd) => {
                        self.meta.clock_ms = self.meta.clock_ms.max(cmd.time_ms);
                        leases.on_command(e.term, cmd.time_ms)?;
                        let outcome =
                            self.apply_command(&mut kv, &mut leases, &sessions, &mut cache, &cmd)?;
                        applied.outcome = Some(outcome);
                        applied.events = kv.finish(cmd.time_ms)?;
                        applied.op = Some(cmd.op);
                    }
                    Err(err) => {
                        applied.outcome =
                            Some(Err(ApiError::Internal(format!("undecodable command: {err}"))));
                    }
                },
            }
            if e.index % SESSION_SWEEP_EVERY == 0 {
                flush_sessions(&mut sessions, &mut cache)?;
                self.sweep_sessions(&mut sessions)?;
            }
            self.meta.applied = e.index;
            self.meta.applied_term = e.term;
            out.push(applied);
        }
        flush_sessions(&mut sessions, &mut cache)?;
        // History a compaction made useless goes a bounded amount at a time.
        // A batch that wrote nothing (the leader's clock entries in a quiet
        // cluster) has time for a larger share of the purge.
        let idle = out.iter().all(|a| a.events.is_empty());
        kv.purge(&mut self.mvcc, if idle { compact::IDLE_PURGE_BUDGET } else { compact::PURGE_BUDGET })?;
        drop(kv);
        drop(sessions);
        self.mvcc.revision = self.meta.applied;
        self.lease_clock = leases.clock;
        drop(leases);
        let mut meta = wtx.open_table(META)?;
        meta.insert("sm", encode("sm", &self.meta)?.as_slice())?;
        meta.insert(MvccMeta::KEY, self.mvcc.encode()?.as_slice())?;
        meta.insert(LeaseClock::KEY, encode(LeaseClock::KEY, &self.lease_clock)?.as_slice())?;
        Ok(out)
    }

    fn apply_command<'t>(
        &mut self,
        kv: &mut Writer<'t>,
        leases: &mut LeaseWriter<'t>,
        sessions: &Table<u64, &[u8]>,
        cache: &mut HashMap<u64, Session>,
        cmd: &Command,
    ) -> Outcome {
        let mut tables = Tables { kv, leases, mvcc: &mut self.mvcc };
        let Some(s) = cmd.session else { return execute(&mut tables, &cmd.op) };
        let session = match cache.entry(s.client) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let session = match sessions.get(s.client)? {
                    Some(stored) => decode("session", stored.value())?,
                    None if s.ack_below > 1 => {
                        // The client had answers before, so it had a session,
                        // and it is gone: this may be a retry of a write that
                        // was applied.
                        return Ok(Err(ApiError::SessionExpired));
                    }
                    None => Session::default(),
                };
                v.insert(session)
            }
        };
        let outcome = lookup_or_execute(session, s, || execute(&mut tables, &cmd.op))?;
        session.last_active_ms = self.meta.clock_ms;
        Ok(outcome)
    }

    fn sweep_sessions(&self, sessions: &mut Table<u64, &[u8]>) -> Result<(), StoreError> {
        let cutoff = self.meta.clock_ms.saturating_sub(SESSION_TTL_MS);
        let mut expired = Vec::new();
        for item in sessions.iter()? {
            let (k, v) = item?;
            let s: Session = decode("session", v.value())?;
            if s.last_active_ms < cutoff {
                expired.push(k.value());
            }
        }
        for k in expired {
            sessions.remove(k)?;
        }
        Ok(())
    }

    /// The metadata a snapshot carries (applied index, members, clock, the
    /// store's compaction point).
    pub fn export_meta(&self) -> Result<Bytes, StoreError> {
        let state = SnapshotState { sm: self.meta.clone(), mvcc: self.mvcc, lease_clock: self.lease_clock };
        Ok(Bytes::from(encode("snapshot state", &state)?))
    }

    /// Installs a staged snapshot inside `wtx`: the staged tables replace the
    /// live ones and the metadata replaces this state machine's. Atomic with
    /// the rest of `wtx`.
    pub fn install(&mut self, wtx: &WriteTransaction, staged: &StagedSnapshot) -> Result<(), StoreError> {
        let state: SnapshotState = decode("snapshot state", &staged.state)?;
        if state.sm.applied != staged.index || state.mvcc.revision != staged.index {
            return Err(StoreError::Corrupt {
                what: "snapshot".into(),
                message: format!(
                    "state is at {} (store at {}) but the snapshot is at {}",
                    state.sm.applied, state.mvcc.revision, staged.index
                ),
            });
        }
        // Make sure every staging table exists (a snapshot may be empty).
        wtx.open_table(mvcc::CURRENT_STAGING)?;
        wtx.open_table(mvcc::HISTORY_STAGING)?;
        wtx.open_table(mvcc::REVS_STAGING)?;
        wtx.open_table(SESSIONS_STAGING)?;
        wtx.open_table(lease::LEASES_STAGING)?;
        wtx.delete_table(lease::LEASES)?;
        wtx.rename_table(lease::LEASES_STAGING, lease::LEASES)?;
        wtx.delete_table(mvcc::CURRENT)?;
        wtx.delete_table(mvcc::HISTORY)?;
        wtx.delete_table(mvcc::REVS)?;
        wtx.delete_table(SESSIONS)?;
        wtx.rename_table(mvcc::CURRENT_STAGING, mvcc::CURRENT)?;
        wtx.rename_table(mvcc::HISTORY_STAGING, mvcc::HISTORY)?;
        wtx.rename_table(mvcc::REVS_STAGING, mvcc::REVS)?;
        wtx.rename_table(SESSIONS_STAGING, SESSIONS)?;
        let mut meta = wtx.open_table(META)?;
        meta.insert("sm", encode("sm", &state.sm)?.as_slice())?;
        meta.insert(MvccMeta::KEY, state.mvcc.encode()?.as_slice())?;
        meta.insert(LeaseClock::KEY, encode(LeaseClock::KEY, &state.lease_clock)?.as_slice())?;
        self.meta = state.sm;
        self.mvcc = state.mvcc;
        self.lease_clock = state.lease_clock;
        Ok(())
    }

    /// Opens a consistent read view of the data.
    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// The multi-version store as `rtx` sees it.
    pub fn view(rtx: &ReadTransaction) -> Result<View<'_>, StoreError> {
        let meta = mvcc::meta_of(&rtx.open_table(META)?)?
            .ok_or_else(|| StoreError::Corrupt { what: MvccMeta::KEY.into(), message: "missing".into() })?;
        Ok(View::new(rtx, meta))
    }
}

/// What a snapshot's `state` carries.
#[derive(Serialize, Deserialize)]
struct SnapshotState {
    sm: SmMeta,
    mvcc: MvccMeta,
    lease_clock: LeaseClock,
}

/// Writes the sessions touched in a batch back to their table.
fn flush_sessions(
    sessions: &mut Table<u64, &[u8]>,
    cache: &mut HashMap<u64, Session>,
) -> Result<(), StoreError> {
    for (client, session) in cache.drain() {
        sessions.insert(client, encode("session", &session)?.as_slice())?;
    }
    Ok(())
}

/// Answers a write from the session if it was applied before; otherwise runs
/// `exec` and remembers its answer.
fn lookup_or_execute(
    session: &mut Session,
    s: SessionSeq,
    exec: impl FnOnce() -> Result<Result<Response, ApiError>, StoreError>,
) -> Result<Result<Response, ApiError>, StoreError> {
    if s.ack_below > session.ack_below {
        session.ack_below = s.ack_below;
        session.replies = session.replies.split_off(&s.ack_below);
    }
    if s.seq < session.ack_below {
        return Ok(Err(ApiError::Invalid(format!(
            "write {} of client {:x} was already acknowledged; it is not applied again",
            s.seq, s.client
        ))));
    }
    if let Some(prev) = session.replies.get(&s.seq) {
        return Ok(prev.clone());
    }
    let outcome = exec()?;
    session.replies.insert(s.seq, outcome.clone());
    while session.replies.len() > SESSION_MAX_REPLIES {
        session.replies.pop_first();
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(seq: u64, ack_below: u64) -> SessionSeq {
        SessionSeq { client: 9, seq, ack_below }
    }

    #[test]
    fn a_retried_write_gets_the_first_answer_and_is_not_run_again() {
        let mut s = Session::default();
        let mut runs = 0;
        let first = lookup_or_execute(&mut s, seq(1, 1), || {
            runs += 1;
            Ok(Ok(Response::Put { revision: 5 }))
        })
        .unwrap();
        let again = lookup_or_execute(&mut s, seq(1, 1), || {
            runs += 1;
            Ok(Ok(Response::Put { revision: 6 }))
        })
        .unwrap();
        assert_eq!(first, again);
        assert_eq!(runs, 1);
    }

    #[test]
    fn acknowledged_answers_are_forgotten_and_not_replayed() {
        let mut s = Session::default();
        lookup_or_execute(&mut s, seq(1, 1), || Ok(Ok(Response::Done))).unwrap().unwrap();
        lookup_or_execute(&mut s, seq(2, 2), || Ok(Ok(Response::Done))).unwrap().unwrap();
        assert!(!s.replies.contains_key(&1));
        let stale = lookup_or_execute(&mut s, seq(1, 2), || panic!("must not run")).unwrap();
        assert!(matches!(stale, Err(ApiError::Invalid(_))));
    }
}

/// A snapshot received whole and staged, waiting for Raft to install it.
#[derive(Clone, Debug)]
pub struct StagedSnapshot {
    /// The index it covers.
    pub index: Index,
    /// The state machine metadata it carries.
    pub state: Bytes,
}

/// Clears the staging tables for a new incoming snapshot.
pub fn stage_begin(db: &Database) -> Result<(), StoreError> {
    let mut wtx = db.begin_write()?;
    // Staged rows are only useful once whole; a crash clears them anyway.
    wtx.set_durability(redb::Durability::None)?;
    wtx.delete_table(mvcc::CURRENT_STAGING)?;
    wtx.delete_table(mvcc::HISTORY_STAGING)?;
    wtx.delete_table(mvcc::REVS_STAGING)?;
    wtx.delete_table(SESSIONS_STAGING)?;
    wtx.delete_table(lease::LEASES_STAGING)?;
    wtx.commit()?;
    Ok(())
}

/// An 8-byte big-endian number at the end of a snapshot row's key.
fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let tail: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: format!("snapshot {what} key"),
        message: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(tail))
}

/// Adds received rows to a staging table.
pub fn stage_rows(db: &Database, table: SnapshotTable, rows: &[(Bytes, Bytes)]) -> Result<(), StoreError> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(redb::Durability::None)?;
    match table {
        SnapshotTable::Kv => {
            let mut t = wtx.open_table(mvcc::CURRENT_STAGING)?;
            for (k, v) in rows {
                t.insert(k.as_ref(), v.as_ref())?;
            }
        }
        SnapshotTable::History => {
            let mut t = wtx.open_table(mvcc::HISTORY_STAGING)?;
            for (k, v) in rows {
                let split = k.len().checked_sub(8).ok_or_else(|| StoreError::Corrupt {
                    what: "snapshot history key".into(),
                    message: format!("{} bytes, expected at least 8", k.len()),
                })?;
                let rev = be_u64(&k[split..], "history")?;
                t.insert((&k[..split], rev), v.as_ref())?;
            }
        }
        SnapshotTable::Leases => {
            let mut t = wtx.open_table(lease::LEASES_STAGING)?;
            for (k, v) in rows {
                t.insert(k.as_ref(), v.as_ref())?;
            }
        }
        SnapshotTable::Revs => {
            let mut t = wtx.open_table(mvcc::REVS_STAGING)?;
            for (k, v) in rows {
                t.insert(be_u64(k, "revision")?, v.as_ref())?;
            }
        }
        SnapshotTable::Sessions => {
            let mut t = wtx.open_table(SESSIONS_STAGING)?;
            for (k, v) in rows {
                t.insert(be_u64(k, "session")?, v.as_ref())?;
            }
        }
    }
    wtx.commit()?;
    Ok(())
}

type Rows<'a> = Box<dyn Iterator<Item = Result<(Bytes, Bytes), StoreError>> + 'a>;

/// Reads every row of a table from a read transaction in chunks of about
/// `chunk_bytes`, handing each chunk to `emit` (which returns false to stop):
/// a snapshot streams with bounded memory. Returns the number of rows read.
pub fn export_rows(
    rtx: &ReadTransaction,
    table: SnapshotTable,
    chunk_bytes: usize,
    mut emit: impl FnMut(Vec<(Bytes, Bytes)>) -> bool,
) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut chunk = Vec::new();
    let mut size = 0usize;
    let copy = |b: &[u8]| Bytes::copy_from_slice(b);
    let rows: Rows<'_> = match table {
        SnapshotTable::Kv => {
            let t = rtx.open_table(mvcc::CURRENT)?;
            Box::new(t.range::<&[u8]>(..)?.map(move |item| {
                let (k, v) = item?;
                Ok((copy(k.value()), copy(v.value())))
            }))
        }
        SnapshotTable::Leases => {
            let t = rtx.open_table(lease::LEASES)?;
            Box::new(t.range::<&[u8]>(..)?.map(move |item| {
                let (k, v) = item?;
                Ok((copy(k.value()), copy(v.value())))
            }))
        }
        SnapshotTable::History => {
            let t = rtx.open_table(mvcc::HISTORY)?;
            Box::new(t.range::<(&[u8], u64)>(..)?.map(move |item| {
                let (k, v) = item?;
                let (key, rev) = k.value();
                let mut full = key.to_vec();
                full.extend_from_slice(&rev.to_be_bytes());
                Ok((Bytes::from(full), copy(v.value())))
            }))
        }
        SnapshotTable::Revs => {
            let t = rtx.open_table(mvcc::REVS)?;
            Box::new(t.range::<u64>(..)?.map(move |item| {
                let (k, v) = item?;
                Ok((copy(&k.value().to_be_bytes()), copy(v.value())))
            }))
        }
        SnapshotTable::Sessions => {
            let t = rtx.open_table(SESSIONS)?;
            Box::new(t.range::<u64>(..)?.map(move |item| {
                let (k, v) = item?;
                Ok((copy(&k.value().to_be_bytes()), copy(v.value())))
            }))
        }
    };
    for row in rows {
        let (k, v) = row?;
        count += 1;
        size += k.len() + v.len() + 8;
        chunk.push((k, v));
        if size >= chunk_bytes {
            size = 0;
            if !emit(std::mem::take(&mut chunk)) {
                return Ok(count);
            }
        }
    }
    if !chunk.is_empty() {
        emit(chunk);
    }
    Ok(count)
}
