//! The key-value state machine: applies committed entries to redb tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use graft_core::{ConfChangeKind, Entry, EntryPayload, Index, NodeId, Term};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{decode, encode, meta_record, Bootstrap, KV, KV_STAGING, META, SESSIONS, SESSIONS_STAGING};
use crate::command::{Command, MemberContext, WriteOp};
use crate::error::StoreError;
use crate::protocol::{ApiError, Expect, Response, SessionSeq, Versioned};

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
    wtx.open_table(META)?.insert("sm", encode("sm", &meta)?.as_slice())?;
    Ok(())
}

fn encode_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(value);
    out
}

fn decode_value(bytes: &[u8]) -> Result<Versioned, StoreError> {
    let head: [u8; 8] = bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        StoreError::Corrupt { what: "value".into(), message: "shorter than its version".into() }
    })?;
    Ok(Versioned { version: u64::from_be_bytes(head), value: Bytes::copy_from_slice(&bytes[8..]) })
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
}

impl StateMachine {
    pub(super) fn load(db: Arc<Database>) -> Result<StateMachine, StoreError> {
        let meta = meta_record(&db.begin_read()?.open_table(META)?, "sm")?;
        Ok(StateMachine { db, meta })
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
        let mut kv = wtx.open_table(KV)?;
        let mut sessions = wtx.open_table(SESSIONS)?;
        // Sessions touched in this batch, each read and written once.
        let mut cache: HashMap<u64, Session> = HashMap::new();
        for e in entries {
            if e.index <= self.meta.applied {
                continue;
            }
            let mut applied = Applied { index: e.index, term: e.term, outcome: None, op: None };
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
                        let outcome = self.apply_command(&mut kv, &sessions, &mut cache, e.index, &cmd)?;
                        applied.outcome = Some(outcome);
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
        drop(kv);
        drop(sessions);
        wtx.open_table(META)?.insert("sm", encode("sm", &self.meta)?.as_slice())?;
        Ok(out)
    }

    fn apply_command(
        &mut self,
        kv: &mut Table<&[u8], &[u8]>,
        sessions: &Table<u64, &[u8]>,
        cache: &mut HashMap<u64, Session>,
        index: Index,
        cmd: &Command,
    ) -> Result<Result<Response, ApiError>, StoreError> {
        let Some(s) = cmd.session else { return execute(kv, index, &cmd.op) };
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
        let outcome = lookup_or_execute(session, s, || execute(kv, index, &cmd.op))?;
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

    /// The metadata a snapshot carries (applied index, members, clock).
    pub fn export_meta(&self) -> Result<Bytes, StoreError> {
        Ok(Bytes::from(encode("sm", &self.meta)?))
    }

    /// Installs a staged snapshot inside `wtx`: the staged tables replace the
    /// live ones and the metadata replaces this state machine's. Atomic with
    /// the rest of `wtx`.
    pub fn install(&mut self, wtx: &WriteTransaction, staged: &StagedSnapshot) -> Result<(), StoreError> {
        let meta: SmMeta = decode("snapshot state", &staged.state)?;
        if meta.applied != staged.index {
            return Err(StoreError::Corrupt {
                what: "snapshot".into(),
                message: format!("state is at {} but the snapshot is at {}", meta.applied, staged.index),
            });
        }
        // Make sure both staging tables exist (a snapshot may be empty).
        wtx.open_table(KV_STAGING)?;
        wtx.open_table(SESSIONS_STAGING)?;
        wtx.delete_table(KV)?;
        wtx.delete_table(SESSIONS)?;
        wtx.rename_table(KV_STAGING, KV)?;
        wtx.rename_table(SESSIONS_STAGING, SESSIONS)?;
        wtx.open_table(META)?.insert("sm", encode("sm", &meta)?.as_slice())?;
        self.meta = meta;
        Ok(())
    }

    /// Opens a consistent read view of the data.
    pub fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Reads `key` in `rtx`.
    pub fn get(rtx: &ReadTransaction, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let kv = rtx.open_table(KV)?;
        kv.get(key)?.map(|v| decode_value(v.value())).transpose()
    }

    /// Reads up to `limit` keys starting with `prefix`, in key order.
    pub fn scan(
        rtx: &ReadTransaction,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Bytes, Versioned)>, StoreError> {
        let kv = rtx.open_table(KV)?;
        let mut out = Vec::new();
        for item in kv.range::<&[u8]>(prefix..)? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((Bytes::copy_from_slice(k.value()), decode_value(v.value())?));
        }
        Ok(out)
    }
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

fn execute(
    kv: &mut Table<&[u8], &[u8]>,
    index: Index,
    op: &WriteOp,
) -> Result<Result<Response, ApiError>, StoreError> {
    let current = |kv: &Table<&[u8], &[u8]>, key: &[u8]| -> Result<Option<Versioned>, StoreError> {
        kv.get(key)?.map(|v| decode_value(v.value())).transpose()
    };
    Ok(Ok(match op {
        WriteOp::Put { key, value } => {
            kv.insert(key.as_ref(), encode_value(index, value).as_slice())?;
            Response::Put { version: index }
        }
        WriteOp::Delete { key } => {
            let previous = kv.remove(key.as_ref())?.map(|v| decode_value(v.value())).transpose()?;
            Response::Delete { previous: previous.map(|p| p.version) }
        }
        WriteOp::Cas { key, expect, value } => {
            let cur = current(kv, key)?;
            let matches = match expect {
                Expect::Value(want) => cur.as_ref().map(|c| &c.value) == want.as_ref(),
                Expect::Version(v) => cur.as_ref().map_or(0, |c| c.version) == *v,
            };
            if matches {
                kv.insert(key.as_ref(), encode_value(index, value).as_slice())?;
                Response::Cas {
                    swapped: true,
                    current: Some(Versioned { value: value.clone(), version: index }),
                }
            } else {
                Response::Cas { swapped: false, current: cur }
            }
        }
        WriteOp::Note(_) => Response::Done,
    }))
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
            Ok(Ok(Response::Put { version: 5 }))
        })
        .unwrap();
        let again = lookup_or_execute(&mut s, seq(1, 1), || {
            runs += 1;
            Ok(Ok(Response::Put { version: 6 }))
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
    wtx.delete_table(KV_STAGING)?;
    wtx.delete_table(SESSIONS_STAGING)?;
    wtx.commit()?;
    Ok(())
}

/// Adds received rows to a staging table.
pub fn stage_rows(
    db: &Database,
    table: crate::protocol::SnapshotTable,
    rows: &[(Bytes, Bytes)],
) -> Result<(), StoreError> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(redb::Durability::None)?;
    match table {
        crate::protocol::SnapshotTable::Kv => {
            let mut t = wtx.open_table(KV_STAGING)?;
            for (k, v) in rows {
                t.insert(k.as_ref(), v.as_ref())?;
            }
        }
        crate::protocol::SnapshotTable::Sessions => {
            let mut t = wtx.open_table(SESSIONS_STAGING)?;
            for (k, v) in rows {
                let key: [u8; 8] = k.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    what: "snapshot session key".into(),
                    message: format!("{} bytes, expected 8", k.len()),
                })?;
                t.insert(u64::from_be_bytes(key), v.as_ref())?;
            }
        }
    }
    wtx.commit()?;
    Ok(())
}

/// Reads every row of a table from a read transaction in chunks of about
/// `chunk_bytes`, handing each chunk to `emit` (which returns false to stop):
/// a snapshot streams with bounded memory. Returns the number of rows read.
pub fn export_rows(
    rtx: &ReadTransaction,
    table: crate::protocol::SnapshotTable,
    chunk_bytes: usize,
    mut emit: impl FnMut(Vec<(Bytes, Bytes)>) -> bool,
) -> Result<u64, StoreError> {
    let mut count = 0u64;
    let mut chunk = Vec::new();
    let mut size = 0usize;
    let mut rows: Box<dyn Iterator<Item = Result<(Bytes, Bytes), StoreError>>> = match table {
        crate::protocol::SnapshotTable::Kv => {
            let t = rtx.open_table(KV)?;
            Box::new(t.range::<&[u8]>(..)?.map(|item| {
                let (k, v) = item?;
                Ok((Bytes::copy_from_slice(k.value()), Bytes::copy_from_slice(v.value())))
            }))
        }
        crate::protocol::SnapshotTable::Sessions => {
            let t = rtx.open_table(SESSIONS)?;
            Box::new(t.range::<u64>(..)?.map(|item| {
                let (k, v) = item?;
                Ok((Bytes::copy_from_slice(&k.value().to_be_bytes()), Bytes::copy_from_slice(v.value())))
            }))
        }
    };
    for row in &mut rows {
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
