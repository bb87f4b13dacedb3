//! The task that owns the Raft node: it alone touches the [`RawNode`], the
//! log store and the state machine, so none of them needs a lock.
//!
//! Each turn of its loop takes a tick or a batch of inputs (peer messages,
//! client requests), then carries out every `Ready` in the order the core
//! demands:
//! 1. send the leader's messages (they do not wait for the disk);
//! 2. one redb write transaction: the new entries, the hard state, and the
//!    committed entries applied to the key-value tables with the applied
//!    index; committed with an fsync when it holds anything Raft needs durable;
//! 3. send the messages that promise what step 2 persisted (votes, acks);
//! 4. answer the clients whose writes were applied, and serve the reads
//!    whose index is now applied;
//! 5. `advance`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use graft_core::{Entry, EntryPayload, Index, Message, MessageBody, NodeId, RawNode, Ready, Role, Term};
use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::command::{Command, MemberContext, WriteOp};
use crate::error::StoreError;
use crate::members::AddressBook;
use crate::protocol::{
    ApiError, ClientResponse, Consistency, LeaderHint, MemberInfo, MemberStatus, Request, Response,
};
use crate::snapshot;
use crate::storage::{Applied, RaftLogStore, StagedSnapshot, StateMachine};
use crate::transport::Transport;

/// Where an answer goes.
pub enum Responder {
    /// A client connection, matched by request id.
    Conn {
        /// The request id.
        id: u64,
        /// The connection's response queue.
        tx: mpsc::UnboundedSender<ClientResponse>,
        /// Holds one of the connection's in-flight slots until answered.
        permit: Option<OwnedSemaphorePermit>,
    },
    /// An in-process caller.
    Once(oneshot::Sender<Result<Response, ApiError>>),
}

impl Responder {
    /// Sends the answer (dropped silently if the asker is gone).
    pub fn send(self, result: Result<Response, ApiError>) {
        match self {
            Responder::Conn { id, tx, permit } => {
                let _ = tx.send(ClientResponse { id, result });
                drop(permit);
            }
            Responder::Once(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// What the node task is told.
pub enum NodeInput {
    /// A Raft message from a peer.
    Raft(Message),
    /// A client request.
    Client(Request, Responder),
    /// The transport lost its connection to a peer.
    Unreachable(NodeId),
    /// A snapshot stream to a peer ended.
    SnapshotSent {
        /// The peer.
        to: NodeId,
        /// Whether the peer staged it whole.
        ok: bool,
    },
    /// A snapshot arrived whole and is staged: step the message; the sender
    /// is told when the staged data was installed or declined.
    SnapshotReceived(Message, StagedSnapshot, oneshot::Sender<()>),
}

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
    /// The node's own input queue (snapshot senders report into it).
    pub inputs: mpsc::Sender<NodeInput>,
}

/// The disk work of one `Ready`, run off the node task: one write
/// transaction with the snapshot install, the log writes and the applying.
pub struct IoJob {
    log_db: Arc<Database>,
    /// The log transaction must be fsynced.
    durable: bool,
    /// The state machine transaction must be fsynced too.
    sm_durable: bool,
    staged: Option<StagedSnapshot>,
    writes: Vec<crate::storage::LogWrite>,
    /// A copy of the state machine, which the job advances and hands back.
    sm: StateMachine,
    committed: Vec<Entry>,
}

/// What an [`IoJob`] did.
pub struct IoDone {
    /// The advanced state machine (`None` if the task that held it died).
    sm: Option<StateMachine>,
    /// The committed entries the job applied, handed back (not copied) for
    /// logging and membership changes.
    committed: Vec<Entry>,
    applied: Result<Vec<Applied>, StoreError>,
    sm_durable: bool,
    /// The applying ran alongside the log transaction.
    parallel: bool,
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
    fn runs_here(&self, follower: bool) -> bool {
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
    fn run_here(self) -> IoDone {
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
    fn start(self, log_done: Option<oneshot::Sender<()>>) -> tokio::task::JoinHandle<IoDone> {
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
fn task_died(e: tokio::task::JoinError) -> StoreError {
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
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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

    fn leader_hint(&self) -> Option<LeaderHint> {
        let id = self.raw.leader()?;
        let addr = self.addr_of(id)?;
        Some(LeaderHint { id, addr })
    }

    fn not_leader(&self) -> ApiError {
        ApiError::NotLeader { leader: self.leader_hint() }
    }

    fn handle(&mut self, input: NodeInput) -> Result<(), NodeError> {
        match input {
            NodeInput::Raft(m) => self.raw.step(m)?,
            NodeInput::Unreachable(id) => self.raw.report_unreachable(id),
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

    fn addr_of(&self, id: NodeId) -> Option<String> {
        self.addrs.get(id).map(str::to_owned)
    }

    /// Starts streaming a snapshot of the state machine as it is now (at
    /// or after the log base the core named) to the message's target.
    fn start_snapshot(&mut self, m: Message) -> Result<(), NodeError> {
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
    fn stage_compaction(&mut self) -> Result<Option<crate::storage::LogWrite>, NodeError> {
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

    /// On the leader: makes a learner that asked for it a voter once it has
    /// caught up with the commit index.
    fn promote_caught_up_learner(&mut self) {
        let st = self.raw.status();
        let candidate = st.progress.iter().find(|(id, p)| {
            st.conf.learners.contains(id)
                && self.sm.members().get(id).is_some_and(|m| m.promote)
                && p.recent_active
                && p.matched + 16 >= st.hard_state.commit
        });
        if let Some((id, _)) = candidate {
            let cc = graft_core::ConfChange {
                kind: graft_core::ConfChangeKind::AddVoter,
                node: *id,
                context: Bytes::new(),
            };
            match self.raw.propose_conf_change(cc) {
                Ok(index) => info!("{}, promoting learner {id} to voter (entry {index})", self.id()),
                Err(e) => debug!("{}, cannot promote learner {id} yet: {e}", self.id()),
            }
        }
    }

    /// Proposes a membership change for a client.
    fn propose_member_change(&mut self, req: Request, responder: Responder) -> Result<(), NodeError> {
        use graft_core::ConfChangeKind;
        let (kind, node, ctx) = match req {
            Request::AddMember { id, addr, promote } => {
                let kind = if self.raw.conf().voters.contains(&id) {
                    ConfChangeKind::AddVoter
                } else {
                    ConfChangeKind::AddLearner
                };
                (kind, id, Some(MemberContext { addr, promote }))
            }
            Request::PromoteMember { id } => (ConfChangeKind::AddVoter, id, None),
            Request::RemoveMember { id } => (ConfChangeKind::Remove, id, None),
            _ => {
                responder.send(Err(ApiError::Invalid("not a membership change".into())));
                return Ok(());
            }
        };
        let context = match ctx.map(|c| postcard::to_stdvec(&c)).transpose() {
            Ok(c) => Bytes::from(c.unwrap_or_default()),
            Err(e) => {
                responder.send(Err(ApiError::Internal(e.to_string())));
                return Ok(());
            }
        };
        match self.raw.propose_conf_change(graft_core::ConfChange { kind, node, context }) {
            Ok(index) => {
                info!("{}, proposed {kind:?} {node} at index {index}", self.id());
                self.pending_writes.insert(index, (self.raw.term(), responder));
            }
            Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
            Err(graft_core::Error::TransferInProgress) => {
                responder.send(Err(ApiError::NotLeader { leader: None }))
            }
            Err(graft_core::Error::ConfChange(
                e @ (graft_core::ConfChangeError::Pending(_) | graft_core::ConfChangeError::LeaderNotReady),
            )) => {
                responder.send(Err(ApiError::Unavailable(format!("membership change refused for now: {e}"))))
            }
            Err(graft_core::Error::ConfChange(e)) => {
                responder.send(Err(ApiError::Invalid(format!("membership change refused: {e}"))))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Points the transport at the members of the configuration (as of the
    /// log's end) and those the state machine still records (a removed
    /// member hears until its removal applies), at their newest addresses.
    fn sync_peers(&mut self) {
        let mut members: BTreeSet<NodeId> = self.raw.conf().members().collect();
        members.extend(self.sm.members().keys());
        for id in self.transport.peer_ids() {
            if !members.contains(&id) {
                self.transport.remove_peer(id);
            }
        }
        for id in members {
            if let Some(addr) = self.addrs.get(id) {
                self.transport.set_peer(id, addr.to_owned());
            }
        }
    }

    fn handle_request(&mut self, req: Request, responder: Responder) -> Result<(), NodeError> {
        if let Err(e) = req.validate() {
            responder.send(Err(e));
            return Ok(());
        }
        match req {
            Request::Put { .. } | Request::Delete { .. } | Request::Cas { .. } => {
                self.propose_write(req, responder)
            }
            Request::AddMember { .. } | Request::PromoteMember { .. } | Request::RemoveMember { .. } => {
                self.propose_member_change(req, responder)
            }
            Request::Get { consistency: Consistency::Stale, .. }
            | Request::Scan { consistency: Consistency::Stale, .. } => {
                let result = self.serve_reads_now(vec![(req, responder)]);
                result.map_err(NodeError::from)
            }
            Request::Get { .. } | Request::Scan { .. } => {
                let ctx = self.next_ctx;
                match self.raw.read_index(ctx) {
                    Ok(()) => {
                        self.next_ctx += 1;
                        self.pending_reads.insert(ctx, (req, responder));
                    }
                    Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
                    Err(e) => return Err(e.into()),
                }
                Ok(())
            }
            Request::Status => {
                responder.send(Ok(Response::Status(Box::new(self.status()))));
                Ok(())
            }
            Request::Metrics => {
                let mut m = self.metrics.clone();
                m.messages_dropped = self.transport.dropped();
                responder.send(Ok(Response::Metrics(m)));
                Ok(())
            }
            Request::TransferLeader { to } => {
                match self.raw.transfer_leader(to) {
                    Ok(()) if to == self.id() => responder.send(Ok(Response::Done)),
                    Ok(()) => {
                        if let Some((_, old, _)) = self.transfer.take() {
                            old.send(Err(ApiError::Unavailable("superseded by another transfer".into())));
                        }
                        self.transfer = Some((to, responder, self.opts.election_ticks * 2));
                    }
                    Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
                    Err(e @ graft_core::Error::NotAVoter(_)) => {
                        responder.send(Err(ApiError::Invalid(e.to_string())))
                    }
                    Err(e) => responder.send(Err(ApiError::Unavailable(e.to_string()))),
                }
                Ok(())
            }
        }
    }

    fn propose_write(&mut self, req: Request, responder: Responder) -> Result<(), NodeError> {
        let (session, op) = match req {
            Request::Put { key, value, session } => (session, WriteOp::Put { key, value }),
            Request::Delete { key, session } => (session, WriteOp::Delete { key }),
            Request::Cas { key, expect, value, session } => (session, WriteOp::Cas { key, expect, value }),
            _ => {
                responder.send(Err(ApiError::Invalid("not a write".into())));
                return Ok(());
            }
        };
        let cmd = Command { session, time_ms: now_ms(), op };
        let data = match postcard::to_stdvec(&cmd) {
            Ok(d) => Bytes::from(d),
            Err(e) => {
                responder.send(Err(ApiError::Internal(e.to_string())));
                return Ok(());
            }
        };
        match self.raw.propose(data) {
            Ok(index) => {
                self.pending_writes.insert(index, (self.raw.term(), responder));
            }
            // Not proposed, so certainly not applied: safe to retry anywhere.
            Err(graft_core::Error::NotLeader { .. }) => responder.send(Err(self.not_leader())),
            Err(graft_core::Error::TransferInProgress) => {
                responder.send(Err(ApiError::NotLeader { leader: None }));
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    fn status(&self) -> MemberStatus {
        let st = self.raw.status();
        let members = st
            .conf
            .members()
            .map(|id| MemberInfo {
                id,
                addr: self.addr_of(id).unwrap_or_default(),
                voter: st.conf.voters.contains(&id),
            })
            .collect();
        MemberStatus {
            id: st.id,
            cluster: self.opts.cluster.clone(),
            role: format!("{:?}", st.soft_state.role),
            term: st.hard_state.term,
            leader: st.soft_state.leader,
            commit: st.hard_state.commit,
            applied: self.sm.applied(),
            first_index: st.first_index,
            last_index: st.last_index,
            members,
        }
    }

    /// Carries out the first half of a `Ready`: role changes, the leader's
    /// messages, and the disk work, which it returns as a job to run off the
    /// node task (or `None` when there is no disk work, in which case the
    /// `Ready` is finished at once).
    fn start_ready(&mut self, rd: Ready) -> Result<Option<IoJob>, NodeError> {
        if let Some(ss) = rd.soft_state {
            self.on_soft_state(ss.role, ss.leader);
        }
        // 1. The leader's messages go out before its own disk write.
        for m in rd.messages {
            if let MessageBody::Snapshot { .. } = m.body {
                self.start_snapshot(m)?;
            } else {
                self.transport.send(m);
            }
        }
        let staged = match &rd.snapshot {
            Some(meta) => match self.staged.take() {
                Some((staged, done)) if staged.index == meta.index => Some((staged, done)),
                _ => {
                    return Err(NodeError::Store(StoreError::Corrupt {
                        what: "snapshot".into(),
                        message: format!(
                            "Raft asked to install snapshot {} that was not received",
                            meta.index
                        ),
                    }))
                }
            },
            None => None,
        };
        // 2. One transaction; an fsync only when Raft needs durability. Term
        // and vote must be durable. The commit index is volatile state (the
        // Raft paper's Figure 2): a restart begins from the larger of the
        // stored one and the durably applied index and relearns the rest
        // from the leader, and a lower one after a crash is safe. So a hard
        // state that changes only the commit index is not written at all
        // (it is written, current, with the next term or vote): that saves a
        // page in nearly every durable log commit (sequential p50 0.83 ->
        // 0.74 ms).
        let persisted = self.raw.storage().hard_state();
        let vote_changed =
            rd.hard_state.is_some_and(|hs| hs.term != persisted.term || hs.vote != persisted.vote);
        let durable = rd.snapshot.is_some() || !rd.entries.is_empty() || vote_changed;
        let mut writes = Vec::new();
        if let Some(meta) = &rd.snapshot {
            writes.push(self.raw.storage_mut().stage_reset(meta.clone()));
        }
        let hard_state = rd.hard_state.filter(|_| vote_changed);
        let appended = rd.entries.len() as u64;
        // The configuration changes as its entries are appended: so do the
        // addresses the transport uses.
        let conf_appended = rd.entries.iter().any(Entry::is_config);
        self.addrs.learn_entries(&rd.entries);
        writes.push(self.raw.storage_mut().stage(rd.entries, hard_state)?);
        if let Some(w) = self.stage_compaction()? {
            writes.push(w);
        }
        if conf_appended {
            self.sync_peers();
        }
        let needs_io = durable
            || writes.iter().any(|w| !w.is_empty())
            || !rd.committed_entries.is_empty()
            || self.compaction_waits;
        let (staged_data, staged_done) = match staged {
            Some((data, done)) => (Some(data), Some(done)),
            None => (None, None),
        };
        self.in_flight = Some(InFlight {
            persisted_messages: rd.persisted_messages,
            read_states: rd.read_states,
            entries: appended,
            durable,
            snapshot: staged_done.map(|d| (rd.snapshot.map_or(0, |m| m.index), d)),
        });
        if !needs_io {
            self.finish_ready(None)?;
            return Ok(None);
        }
        // Make the state machine durable now and then, and whenever the log
        // wants to compact past what is durably applied.
        let sm_durable = self.sm_synced.elapsed() >= Duration::from_millis(self.opts.log.state_fsync_ms)
            || self.compaction_waits;
        if sm_durable {
            self.sm_synced = Instant::now();
            self.compaction_waits = false;
        }
        Ok(Some(IoJob {
            log_db: self.db.clone(),
            durable,
            sm_durable,
            staged: staged_data,
            writes,
            sm: self.sm.clone(),
            committed: rd.committed_entries,
        }))
    }

    /// Sends the in-flight `Ready`'s messages that waited for its log
    /// transaction, which has just become durable.
    fn send_persisted_messages(&mut self) {
        if let Some(f) = &mut self.in_flight {
            for m in std::mem::take(&mut f.persisted_messages) {
                self.transport.send(m);
            }
        }
    }

    /// The second half of a `Ready`, once its disk work is done: messages
    /// that depend on it, answers, reads, `advance`.
    fn finish_ready(&mut self, done: Option<IoDone>) -> Result<(), NodeError> {
        let Some(f) = self.in_flight.take() else { return Ok(()) };
        let (mut applied, mut committed) = (Vec::new(), Vec::new());
        if let Some(done) = done {
            applied = done.applied?;
            committed = done.committed;
            if let Some(sm) = done.sm {
                self.sm = sm;
            }
            if done.sm_durable || f.snapshot.is_some() {
                self.sm_durable_index = self.sm.applied();
                self.metrics.fsyncs += 1;
            }
            if f.durable {
                self.metrics.fsyncs += 1;
            } else {
                self.metrics.lazy_commits += 1;
            }
            self.metrics.entries_persisted += f.entries;
            self.metrics.parallel_batches += u64::from(done.parallel);
            self.metrics.entries_applied += committed.len() as u64;
        }
        if let Some((index, done)) = f.snapshot {
            info!("{}, installed snapshot at index {index}", self.id());
            let _ = done.send(());
            self.addrs.learn_members(self.sm.members());
            self.sync_peers();
        }
        // 3. Messages that depend on what was just persisted (unless they
        // went out as soon as the log part was done).
        for m in f.persisted_messages {
            self.transport.send(m);
        }
        // 4. Answers.
        self.log_entries(&committed);
        if committed.iter().any(|e| e.is_config()) {
            self.sync_peers();
        }
        for a in applied {
            self.answer_write(a);
        }
        let applied_index = self.sm.applied();
        if self.pending_writes.keys().any(|&i| i <= applied_index) {
            // Entries this member proposed but that were never applied here
            // (skipped by a snapshot): the outcome is unknown.
            let stale: Vec<Index> =
                self.pending_writes.keys().copied().filter(|&i| i <= applied_index).collect();
            for i in stale {
                if let Some((_, r)) = self.pending_writes.remove(&i) {
                    r.send(Err(ApiError::Unavailable("the write's outcome is unknown".into())));
                }
            }
        }
        for rs in f.read_states {
            if let Some((req, responder)) = self.pending_reads.remove(&rs.ctx) {
                self.ready_reads.push((rs.index, req, responder));
            }
        }
        if !self.ready_reads.is_empty() {
            let (now, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.ready_reads).into_iter().partition(|(i, _, _)| *i <= applied_index);
            self.ready_reads = later;
            self.metrics.reads_answered += now.len() as u64;
            self.serve_reads_now(now.into_iter().map(|(_, q, r)| (q, r)).collect())?;
        }
        // 5.
        self.raw.advance()?;
        Ok(())
    }

    fn answer_write(&mut self, a: Applied) {
        let Some((term, responder)) = self.pending_writes.remove(&a.index) else { return };
        if term != a.term {
            // Another leader's entry took this index: ours was never
            // committed, so the client may safely retry.
            responder.send(Err(ApiError::NotLeader { leader: self.leader_hint() }));
            return;
        }
        if let Some(n) = &mut self.opts.crash_before_reply {
            *n = n.saturating_sub(1);
            if *n == 0 {
                error!(
                    "{}, GRAFT_FAULT_CRASH_BEFORE_REPLY: aborting before answering write {}",
                    self.id(),
                    a.index
                );
                std::process::abort();
            }
        }
        self.metrics.writes_answered += 1;
        match a.outcome {
            Some(outcome) => responder.send(outcome),
            None => responder.send(Err(ApiError::Internal("entry carried no command".into()))),
        }
    }

    fn log_entries(&self, entries: &[Entry]) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        for e in entries {
            let item = match &e.payload {
                EntryPayload::Noop => "no-op".to_owned(),
                EntryPayload::Config(c) => format!("{:?} {}", c.change.kind, c.change.node),
                EntryPayload::Command(d) => match postcard::from_bytes::<Command>(d) {
                    Ok(c) => c.op.describe(),
                    Err(_) => "?".to_owned(),
                },
            };
            debug!("{}, Index {}: Entry(term={}, item={})", self.id(), e.index, e.term, item);
        }
    }

    fn on_soft_state(&mut self, role: Role, leader: Option<NodeId>) {
        let id = self.id();
        match role {
            Role::PreCandidate => warn!(
                "{id}, no leader heard within the election timeout; calling an election (term {} -> {})",
                self.raw.term(),
                self.raw.term() + 1
            ),
            Role::Follower => match leader {
                Some(l) => {
                    info!("{id}, Follower term: {}, size={}, leader: {l}", self.raw.term(), self.size())
                }
                None => info!("{id}, Follower term: {}, size={}", self.raw.term(), self.size()),
            },
            _ => self.log_state(),
        }
        if role != Role::Leader {
            // Reads not yet confirmed can no longer be: the asker retries at
            // the new leader.
            let hint = self.not_leader();
            for (_, (_, r)) in self.pending_reads.drain() {
                r.send(Err(hint.clone()));
            }
        }
        if let Some((to, _, _)) = &self.transfer {
            if leader == Some(*to) {
                if let Some((_, r, _)) = self.transfer.take() {
                    r.send(Ok(Response::Done));
                }
            }
        }
    }

    /// Serves reads from the local state machine, in one read transaction.
    fn serve_reads_now(&mut self, reads: Vec<(Request, Responder)>) -> Result<(), StoreError> {
        if reads.is_empty() {
            return Ok(());
        }
        let rtx = self.sm.begin_read()?;
        for (req, responder) in reads {
            let result = match &req {
                Request::Get { key, .. } => StateMachine::get(&rtx, key).map(Response::Get),
                Request::Scan { prefix, limit, .. } => {
                    StateMachine::scan(&rtx, prefix, *limit as usize).map(Response::Scan)
                }
                _ => Ok(Response::Done),
            };
            match result {
                Ok(r) => responder.send(Ok(r)),
                Err(e) => {
                    error!("{}, read failed: {e}", self.id());
                    responder.send(Err(ApiError::Internal(e.to_string())));
                }
            }
        }
        Ok(())
    }
}

/// The current time as an RFC 3339-like UTC string (the demo's entries).
pub fn humantime_now() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z", now.subsec_millis())
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_look_like_rfc3339() {
        let t = super::humantime_now();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
    }
}
