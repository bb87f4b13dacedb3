//! The disk work of one `Ready`, run off the node task (or, when small, on
//! its thread): the snapshot install, the log transaction and the applying
//! of committed entries, in the order the core demands.

use std::sync::Arc;
use std::time::{Duration, Instant};

use graft_core::Entry;
use redb::{Database, Durability};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::error::StoreError;
use crate::storage::{Applied, StagedSnapshot, StateMachine};

/// The disk work of one `Ready`, run off the node task: one write
/// transaction with the snapshot install, the log writes and the applying.
pub(super) struct IoJob {
    pub(super) log_db: Arc<Database>,
    /// The log transaction must be fsynced.
    pub(super) durable: bool,
    /// The state machine transaction must be fsynced too.
    pub(super) sm_durable: bool,
    pub(super) staged: Option<StagedSnapshot>,
    pub(super) writes: Vec<crate::storage::LogWrite>,
    /// A copy of the state machine, which the job advances and hands back.
    pub(super) sm: StateMachine,
    pub(super) committed: Vec<Entry>,
}

/// What an [`IoJob`] did.
pub(super) struct IoDone {
    /// The advanced state machine (`None` if the task that held it died).
    pub(super) sm: Option<StateMachine>,
    /// The committed entries the job applied, handed back (not copied) for
    /// logging and membership changes.
    pub(super) committed: Vec<Entry>,
    pub(super) applied: Result<Vec<Applied>, StoreError>,
    pub(super) sm_durable: bool,
    /// The applying ran alongside the log transaction.
    pub(super) parallel: bool,
}

impl IoJob {
    /// Whether the job is small enough to run on the node's own thread,
    /// where it costs less than the two thread hand-offs of a blocking task
    /// (sequential writes: 0.77 -> 0.70 ms for a follower's append, 0.46 ->
    /// 0.38 ms on tmpfs for a leader's applying). Small means no snapshot,
    /// no state-machine fsync, at most [`INLINE_MAX`] entries to apply, and
    /// either no log write at all (on a leader, the `Ready` that answers the
    /// clients) or, on a follower, an append of at
    /// most [`INLINE_MAX`] entries without truncation or compaction. A
    /// leader never blocks its thread on an fsync: its appends to the
    /// followers are still to be written to their sockets.
    pub(super) fn runs_here(&self, follower: bool) -> bool {
        // Without an fsync the log writes can only be a compaction step
        // (a hard state is written only with a new term or vote, durably).
        let log_ok = if self.durable {
            follower && self.writes.iter().all(|w| w.is_small_append(INLINE_MAX))
        } else {
            self.writes.iter().all(|w| w.is_empty())
        };
        log_ok && self.staged.is_none() && !self.sm_durable && self.committed.len() <= INLINE_MAX
    }

    /// Runs a small job on the calling thread (see [`IoJob::runs_here`]).
    pub(super) fn run_here(self) -> IoDone {
        let IoJob { log_db, durable, writes, mut sm, committed, .. } = self;
        let t0 = Instant::now();
        let applied = write_log(&log_db, durable, &writes).and_then(|()| apply(&mut sm, false, &committed));
        report_slow(t0, durable, false, committed.len(), &writes);
        IoDone { sm: Some(sm), committed, applied, sm_durable: false, parallel: false }
    }

    /// Starts the job on blocking threads. The log transaction and the
    /// applying touch different databases, so when both have work they run
    /// at once: the committed entries are already durable in this member's
    /// log (the core hands them out only up to the persisted index), so
    /// applying them never depends on this job's log transaction.
    ///
    /// `log_done`, if given, fires once the log transaction is committed
    /// (the applying may still run), so that the messages that depend on it
    /// can go out at once.
    pub(super) fn start(self, log_done: Option<oneshot::Sender<()>>) -> tokio::task::JoinHandle<IoDone> {
        let IoJob { log_db, durable, sm_durable, staged, writes, mut sm, committed } = self;
        let log_work = writes.iter().any(|w| !w.is_empty());
        // A second thread pays off only for a sizable batch to apply or a
        // state-machine fsync; for a few entries the hand-offs cost more
        // than they save (measured: +0.07 ms per sequential write).
        let sm_work = committed.len() >= PARALLEL_APPLY_MIN || sm_durable;
        if staged.is_some() || !log_work || !sm_work {
            // One thread. A snapshot goes into the state machine first,
            // durably, then the log: a crash between the two leaves the
            // state machine ahead of the log, which the next start repairs
            // (`storage::open`).
            return tokio::task::spawn_blocking(move || {
                let t0 = Instant::now();
                let applied = install_snapshot(&mut sm, staged.as_ref())
                    .and_then(|()| write_log(&log_db, durable, &writes))
                    .and_then(|()| {
                        if let Some(tx) = log_done {
                            let _ = tx.send(());
                        }
                        apply(&mut sm, sm_durable, &committed)
                    });
                report_slow(t0, durable, sm_durable, committed.len(), &writes);
                IoDone { sm: Some(sm), committed, applied, sm_durable, parallel: false }
            });
        }
        tokio::task::spawn(async move {
            let t0 = Instant::now();
            let n = committed.len();
            let log = tokio::task::spawn_blocking(move || {
                let r = write_log(&log_db, durable, &writes);
                if let (Ok(()), Some(tx)) = (&r, log_done) {
                    let _ = tx.send(());
                }
                (r, writes)
            });
            let app = tokio::task::spawn_blocking(move || {
                let r = apply(&mut sm, sm_durable, &committed);
                (sm, committed, r)
            });
            let (log, app) = tokio::join!(log, app);
            let (sm, committed, applied) = match app {
                Ok((sm, committed, applied)) => (Some(sm), committed, applied),
                // The task that held the state machine died with it.
                Err(e) => (None, Vec::new(), Err(task_died(e))),
            };
            let (log, writes) = match log {
                Ok((r, writes)) => (r, writes),
                Err(e) => (Err(task_died(e)), Vec::new()),
            };
            report_slow(t0, durable, sm_durable, n, &writes);
            IoDone { sm, committed, applied: log.and(applied), sm_durable, parallel: true }
        })
    }
}

/// The most entries a job run on the node's own thread may apply, or (on a
/// follower) append; more go to a blocking thread.
const INLINE_MAX: usize = 8;

/// The fewest committed entries for which applying runs on its own thread,
/// alongside the log transaction.
const PARALLEL_APPLY_MIN: usize = 16;

/// A disk that stalls shows here first (and then as elections).
fn report_slow(
    t0: Instant,
    durable: bool,
    sm_durable: bool,
    applied: usize,
    writes: &[crate::storage::LogWrite],
) {
    let took = t0.elapsed();
    if took <= Duration::from_millis(8) {
        return;
    }
    let msg = format!(
        "slow disk work: {took:?} (log fsync {durable}, state fsync {sm_durable}, {applied} entries applied, log writes {:?})",
        writes.iter().map(|w| w.summary()).collect::<Vec<_>>()
    );
    if took > Duration::from_millis(500) {
        warn!("{msg}");
    } else {
        debug!("{msg}");
    }
}

/// A disk task that panicked: the member stops with this error.
pub(super) fn task_died(e: tokio::task::JoinError) -> StoreError {
    StoreError::Corrupt { what: "disk task".into(), message: e.to_string() }
}

/// Installs a received snapshot into the state machine, durably.
fn install_snapshot(sm: &mut StateMachine, staged: Option<&StagedSnapshot>) -> Result<(), StoreError> {
    if let Some(staged) = staged {
        let wtx = sm.db().begin_write()?;
        sm.install(&wtx, staged)?;
        wtx.commit()?;
    }
    Ok(())
}

/// One log transaction, fsynced when `durable`.
fn write_log(
    log_db: &Database,
    durable: bool,
    writes: &[crate::storage::LogWrite],
) -> Result<(), StoreError> {
    if writes.iter().all(|w| w.is_empty()) {
        return Ok(());
    }
    let mut wtx = log_db.begin_write()?;
    if !durable {
        // Nothing Raft needs durable (a compaction step): see `start_ready`.
        wtx.set_durability(Durability::None)?;
    }
    for w in writes {
        w.apply(&wtx)?;
    }
    wtx.commit()?;
    Ok(())
}

/// Applies committed entries in one state-machine transaction, fsynced when
/// `durable`.
fn apply(sm: &mut StateMachine, durable: bool, committed: &[Entry]) -> Result<Vec<Applied>, StoreError> {
    if committed.is_empty() && !durable {
        return Ok(Vec::new());
    }
    let mut wtx = sm.db().begin_write()?;
    if !durable {
        // Applying need not be durable at once: the entries are, in the log,
        // and a restart re-applies from the durable applied index.
        wtx.set_durability(Durability::None)?;
    }
    let applied = sm.apply(&wtx, committed)?;
    wtx.commit()?;
    Ok(applied)
}
