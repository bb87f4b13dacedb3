//! The task that owns the Raft node: it alone touches the [`RawNode`], the
//! log store and the state machine, so none of them needs a lock.
//!
//! Each turn of its loop takes a tick, a batch of inputs (peer messages,
//! client requests, snapshot reports) or the end of a disk job, then carries
//! out every `Ready` the core has, in the order the core demands:
//! 1. the leader's messages go out at once (they do not wait for the disk);
//! 2. the disk job: a snapshot install (state machine first, durably), one
//!    log transaction (entries, hard state, compaction; fsynced when Raft
//!    needs it durable) in `graft.redb`, and the applying of committed
//!    entries in one transaction of the other database, `state.redb`
//!    (fsynced only every `state_fsync_ms`). The two databases are written
//!    by separate blocking threads when both have sizable work: the
//!    committed entries are already durable in this member's log. A small
//!    job runs on the node's own thread instead;
//! 3. the messages that promise what the log transaction persisted (votes,
//!    acknowledgements) go out as soon as it is durable;
//! 4. once the job is done: answers to the clients whose writes applied,
//!    the reads whose index is now applied, and `advance`.
//!
//! While a job runs, the loop keeps stepping messages and taking requests;
//! the next `Ready` waits for it.
//!
//! # Layout
//! - this file: the task's state and its loop (ticks, inputs, disk jobs);
//! - [`ready`]: the two halves of carrying out a `Ready`;
//! - [`disk`]: the disk work of a `Ready` (log transaction, applying);
//! - [`requests`]: client requests (writes, reads, status, transfers);
//! - [`membership`]: membership changes, learner promotion, peers;
//! - [`snapshots`]: snapshot sending and log compaction;
//! - [`history`]: the leader's compactions of the multi-version history;
//! - [`leases`]: the leader's lease clock and expiry, and lease reads;
//! - [`clock`]: wall-clock helpers.
//!
//! Where new replicated features go: the multi-version store, watches and
//! leases are their own modules (beside `storage::state_machine`), fed by the
//! apply step with the committed entries and what applying them did; the
//! loop below and the `Ready` handling stay as they are.

mod clock;
mod disk;
mod history;
mod leases;
mod membership;
mod ready;
mod requests;
mod snapshots;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use graft_core::{Index, Message, NodeId, RawNode, Role, Term};
use redb::Database;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::command::{Command, WriteOp};
use crate::error::StoreError;
use crate::mailbox::{NodeInput, Responder};
use crate::members::AddressBook;
use crate::protocol::{ApiError, Request};
use crate::storage::{RaftLogStore, StagedSnapshot, StateMachine};
use crate::transport::Transport;

use clock::now_ms;
use disk::{task_died, IoDone};

pub use clock::humantime_now;

/// Why the node task stopped with an error. All of these are fatal: the
/// member's durable state is intact, but it must restart.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The disk failed (including a full disk). Nothing acknowledged was lost:
    /// acknowledgements are only sent after their transaction commits.
    #[error("storage failed, stopping this member: {0}")]
    Store(StoreError),
    /// The Raft core reported an error.
    #[error("raft: {0}")]
    Raft(graft_core::Error),
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> NodeError {
        NodeError::Store(e)
    }
}

impl From<graft_core::Error> for NodeError {
    fn from(e: graft_core::Error) -> NodeError {
        NodeError::Raft(e)
    }
}

/// Options for the node task.
pub struct NodeOptions {
    /// The cluster id.
    pub cluster: String,
    /// Raft tick length.
    pub tick: Duration,
    /// Election timeout in ticks (for transfer timeouts).
    pub election_ticks: u32,
    /// Run the timestamp demo: the leader appends the time every 500 ms.
    pub demo: bool,
    /// Fault injection for tests: abort the process instead of sending the
    /// answer to the n-th applied write proposed here (so the write is
    /// committed but its client never hears). From the environment variable
    /// `GRAFT_FAULT_CRASH_BEFORE_REPLY`.
    pub crash_before_reply: Option<u64>,
    /// When to compact the log.
    pub log: crate::config::LogLimits,
    /// How much history of past revisions to keep (the leader proposes
    /// compactions past it).
    pub history: crate::mvcc::compact::Retention,
    /// The node's own input queue (snapshot senders report into it).
    pub inputs: mpsc::Sender<NodeInput>,
    /// Where applied changes go for watches.
    pub watches: Arc<crate::watch::WatchHub>,
}

/// The second half of a `Ready` whose disk work is in progress.
struct InFlight {
    persisted_messages: Vec<Message>,
    read_states: Vec<graft_core::ReadState>,
    entries: u64,
    durable: bool,
    /// A snapshot being installed, and who to tell.
    snapshot: Option<(Index, oneshot::Sender<()>)>,
}

/// The node task's state.
pub struct Node {
    raw: RawNode<RaftLogStore>,
    sm: StateMachine,
    db: Arc<Database>,
    transport: Transport,
    opts: NodeOptions,
    /// Where members listen, as the log names them at append time (see
    /// [`AddressBook`]): for the transport, leader hints and status.
    addrs: AddressBook,
    /// Writes proposed here, by log index: answered when that index applies.
    pending_writes: HashMap<Index, (Term, Responder)>,
    /// Linearizable reads waiting for leadership confirmation, by ctx.
    pending_reads: HashMap<u64, (Request, Responder)>,
    /// Confirmed reads waiting for the applied index to reach theirs.
    ready_reads: Vec<(Index, Request, Responder)>,
    next_ctx: u64,
    /// A leadership transfer in progress: target, who asked, ticks left.
    transfer: Option<(NodeId, Responder, u32)>,
    last_note: Instant,
    last_status_log: Instant,
    /// A received snapshot waiting for Raft to install it.
    staged: Option<(StagedSnapshot, oneshot::Sender<()>)>,
    /// Peers a snapshot is being streamed to.
    sending: std::collections::HashSet<NodeId>,
    ticks: u64,
    metrics: crate::protocol::Metrics,
    /// The `Ready` whose disk work is in progress.
    in_flight: Option<InFlight>,
    /// The applied index the state machine holds durably.
    sm_durable_index: Index,
    /// When the state machine was last made durable.
    sm_synced: Instant,
    /// Compaction is held back until the state machine is made durable.
    compaction_waits: bool,
    /// The index of the history compaction this leader proposed last, until
    /// it is applied.
    history_compaction: Option<Index>,
    /// When the leader started confirming its leadership to revoke expired
    /// leases, until it proposes (or gives up after 2 s).
    lease_check: Option<Instant>,
}

/// Runs `f`, which blocks on the disk, without stalling the runtime's other
/// tasks where the runtime allows it.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Node {
    /// A node task over an opened store.
    pub fn new(
        raw: RawNode<RaftLogStore>,
        sm: StateMachine,
        db: Arc<Database>,
        transport: Transport,
        opts: NodeOptions,
        addrs: AddressBook,
    ) -> Node {
        let sm_applied = sm.applied();
        Node {
            raw,
            sm,
            db,
            transport,
            opts,
            addrs,
            pending_writes: HashMap::new(),
            pending_reads: HashMap::new(),
            ready_reads: Vec::new(),
            next_ctx: 1,
            transfer: None,
            last_note: Instant::now(),
            last_status_log: Instant::now(),
            staged: None,
            sending: std::collections::HashSet::new(),
            ticks: 0,
            metrics: crate::protocol::Metrics::default(),
            in_flight: None,
            sm_durable_index: sm_applied,
            sm_synced: Instant::now(),
            compaction_waits: false,
            history_compaction: None,
            lease_check: None,
        }
    }

    fn id(&self) -> NodeId {
        self.raw.id()
    }

    fn size(&self) -> Index {
        self.raw.status().last_index
    }

    /// Logs the member's state the way the original project did.
    fn log_state(&self) {
        info!("{}, {:?} term: {}, size={}", self.id(), self.raw.role(), self.raw.term(), self.size());
    }

    /// Runs until `shutdown` fires or the node fails.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<NodeInput>,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        self.log_state();
        self.sync_peers();
        let mut ticker = tokio::time::interval(self.opts.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The disk work of the `Ready` in progress: the node keeps stepping
        // messages and taking requests while it runs.
        let mut io: Option<tokio::task::JoinHandle<IoDone>> = None;
        // Fires when the log part of that disk work is durable.
        let mut log_done: Option<oneshot::Receiver<()>> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = async {
                    match log_done.as_mut() {
                        Some(rx) => rx.await,
                        None => std::future::pending().await,
                    }
                }, if log_done.is_some() => {
                    log_done = None;
                    if r.is_ok() {
                        self.send_persisted_messages();
                    }
                }
                done = async {
                    match io.as_mut() {
                        Some(job) => job.await,
                        None => std::future::pending().await,
                    }
                }, if io.is_some() => {
                    io = None;
                    log_done = None;
                    let done = done.map_err(task_died)?;
                    self.finish_ready(Some(done))?;
                }
                _ = ticker.tick() => self.on_tick()?,
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    self.handle(input)?;
                    // Take whatever else is waiting, so that it is persisted
                    // and sent together.
                    for _ in 0..4096 {
                        match rx.try_recv() {
                            Ok(input) => self.handle(input)?,
                            Err(_) => break,
                        }
                    }
                }
            }
            while io.is_none() && self.raw.has_ready() {
                let rd = self.raw.ready()?;
                if let Some(job) = self.start_ready(rd)? {
                    if job.runs_here(self.raw.role() == Role::Follower) {
                        if job.durable {
                            // Let the other tasks (the peers' writers above
                            // all) send what is queued before this thread
                            // blocks on the fsync.
                            tokio::task::yield_now().await;
                        }
                        let done = job.run_here();
                        self.finish_ready(Some(done))?;
                        continue;
                    }
                    // Only a `Ready` with messages that wait for its log
                    // needs to hear when the log part is done.
                    let tx = match self.in_flight.as_ref().is_some_and(|f| !f.persisted_messages.is_empty()) {
                        true => {
                            let (tx, rx) = oneshot::channel();
                            log_done = Some(rx);
                            Some(tx)
                        }
                        false => None,
                    };
                    io = Some(job.start(tx));
                }
            }
            if io.is_none() {
                // Raft declined a received snapshot (it was stale): let the
                // receiver go on.
                if let Some((_, done)) = self.staged.take() {
                    let _ = done.send(());
                }
            }
        }
        // Finish the transaction in progress, then make everything applied
        // so far durable before closing.
        if let Some(job) = io.take() {
            if let Ok(done) = job.await {
                done.applied?;
            }
        }
        blocking(|| -> Result<(), StoreError> {
            for db in [&self.db, self.sm.db()] {
                let wtx = db.begin_write()?;
                wtx.commit()?;
            }
            Ok(())
        })?;
        info!("{}, stopped", self.id());
        Ok(())
    }

    fn on_tick(&mut self) -> Result<(), NodeError> {
        self.raw.tick()?;
        self.ticks += 1;
        if self.ticks % 5 == 0 && self.raw.role() == Role::Leader {
            self.promote_caught_up_learner();
        }
        if self.ticks % history::EVERY_TICKS == 0 && self.raw.role() == Role::Leader {
            self.compact_history()?;
        }
        if self.ticks % leases::EVERY_TICKS == 0 {
            self.tend_leases()?;
        }
        if let Some((to, _, left)) = &mut self.transfer {
            let to = *to;
            *left = left.saturating_sub(1);
            if *left == 0 {
                if let Some((_, responder, _)) = self.transfer.take() {
                    responder.send(Err(ApiError::Unavailable(format!(
                        "leadership transfer to {to} did not complete in time"
                    ))));
                }
            }
        }
        if self.opts.demo {
            if self.raw.role() == Role::Leader && self.last_note.elapsed() >= Duration::from_millis(500) {
                self.last_note = Instant::now();
                let stamp = humantime_now();
                let cmd = Command { session: None, time_ms: now_ms(), op: WriteOp::Note(stamp) };
                if let Ok(data) = postcard::to_stdvec(&cmd) {
                    let _ = self.raw.propose(Bytes::from(data));
                }
            }
            if self.last_status_log.elapsed() >= Duration::from_secs(1) {
                self.last_status_log = Instant::now();
                self.log_state();
            }
        }
        Ok(())
    }

    fn handle(&mut self, input: NodeInput) -> Result<(), NodeError> {
        match input {
            NodeInput::Raft(m) => self.raw.step(m)?,
            NodeInput::Unreachable(id) => self.raw.report_unreachable(id),
            NodeInput::ExpireLeases(ids) => self.expire_leases(ids),
            NodeInput::Client(req, responder) => self.handle_request(req, responder)?,
            NodeInput::SnapshotSent { to, ok } => {
                self.sending.remove(&to);
                self.raw.report_snapshot(to, ok);
            }
            NodeInput::SnapshotReceived(m, staged, done) => {
                if let Some((_, old)) = self.staged.replace((staged, done)) {
                    let _ = old.send(());
                }
                self.raw.step(m)?;
            }
        }
        Ok(())
    }
}
