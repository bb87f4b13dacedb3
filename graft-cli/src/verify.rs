//! `verify`: runs graft-kv's linearizability workload
//! ([`graft_kv::workload`]) against the cluster, without faults, checks the
//! recorded history with [`graft_check::check`] and reports.
//!
//! The run happens on a thread of its own with its own tokio runtime: the
//! workload spawns a task per client, and dropping that runtime is what
//! stops them when the REPL abandons the command (Ctrl+C); the check, which
//! is CPU-bound, then runs there too, off the runtime that watches for
//! Ctrl+C. In order, the thread:
//!
//! 1. deletes any key already under the run's prefix (left by an interrupted
//!    run with the same seed: the checker assumes every key starts absent);
//!    failing that because the cluster does not answer ends the run
//!    (unavailable, exit 3) without starting the workload;
//! 2. runs the workload, including its final read of every key;
//! 3. deletes every key under the prefix again (best effort; also done,
//!    in the background, when the command is abandoned);
//! 4. checks the history.
//!
//! On a terminal, the calling side draws a progress bar on standard error
//! from what the thread reports in a [`Progress`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use graft_check::Verdict;
use graft_kv::protocol::Consistency;
use graft_kv::workload::{self, Recorded, WorkloadOptions};
use graft_kv::{Client, ClientError, ClientOptions};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::oneshot;

use crate::code::Code;

/// Runs longer than this move to fresh keys every [`ROTATE_EVERY`].
pub const ROTATE_AFTER: Duration = Duration::from_secs(120);

/// How often a long run moves to fresh keys.
pub const ROTATE_EVERY: Duration = Duration::from_secs(60);

/// How many keys one scan of the prefix lists while deleting them.
const DELETE_PAGE: u32 = 200;

/// A run counts as unavailable when fewer than 1 in this many operations
/// completed.
const UNAVAILABLE_RATIO: u64 = 10;

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The members to contact.
    pub endpoints: Vec<String>,
    /// How long each operation may take (the program's `--timeout`).
    pub timeout: Duration,
    /// How long the workload runs.
    pub duration: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys they share (at a time).
    pub keys: usize,
    /// The seed.
    pub seed: u64,
}

impl Plan {
    /// The workload's options: graft-kv's defaults with this plan's
    /// clients, keys, duration and operation timeout; runs longer than
    /// [`ROTATE_AFTER`] move to fresh keys every [`ROTATE_EVERY`].
    pub fn workload(&self) -> WorkloadOptions {
        let mut opts = WorkloadOptions::new(self.seed);
        opts.clients = self.clients;
        opts.keys = self.keys;
        opts.duration = self.duration;
        opts.op_timeout = self.timeout;
        if self.duration > ROTATE_AFTER {
            opts.rotate_every = Some(ROTATE_EVERY);
        }
        opts
    }
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Every key's operations have a linearization.
    Linearizable,
    /// Some key's have none: the violation, as the checker displays it
    /// (the key and a minimal set of offending operations, one per line).
    NotLinearizable(String),
    /// The checker could not decide within its limits: why.
    GaveUp(String),
    /// (Almost) no operation completed: why, with the endpoints tried.
    Unavailable(String),
}

/// What `verify` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The seed (to run the same workload again with `--seed`).
    pub seed: u64,
    /// The prefix of every key used.
    pub prefix: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys operated on.
    pub keys: usize,
    /// Every operation attempted, final reads included.
    pub operations: u64,
    /// Operations whose outcome was learnt.
    pub ok_ops: u64,
    /// Writes whose outcome is unknown (timeout, lost connection).
    pub unknown: u64,
    /// Reads that failed (left out of the check).
    pub failed_reads: u64,
    /// How long the workload ran, final reads included.
    pub elapsed: Duration,
    /// The verdict.
    pub finding: Finding,
    /// How deleting the keys afterwards went: how many were deleted, or
    /// why some may be left.
    pub cleanup: Result<usize, String>,
}

impl VerifyReport {
    /// The exit code: 0 linearizable, 1 not, 3 unavailable, 4 gave up.
    pub fn code(&self) -> Code {
        match self.finding {
            Finding::Linearizable => Code::Ok,
            Finding::NotLinearizable(_) => Code::NoMatch,
            Finding::Unavailable(_) => Code::Unavailable,
            Finding::GaveUp(_) => Code::Failure,
        }
    }
}

/// The report for a recorded run and the checker's verdict on it. A
/// violation is reported whatever else happened; otherwise a run in which
/// fewer than 1 in [`UNAVAILABLE_RATIO`] operations completed (none, when
/// the cluster cannot be reached) counts as unavailable.
pub fn summarize(
    plan: &Plan,
    recorded: &Recorded,
    verdict: &Verdict,
    elapsed: Duration,
    cleanup: Result<usize, String>,
) -> VerifyReport {
    let operations = recorded.ok + recorded.unknown + recorded.failed_reads;
    let keys: BTreeSet<&Bytes> = recorded.history.operations().iter().map(|op| &op.key).collect();
    let finding = match verdict {
        Verdict::NotLinearizable(violation) => Finding::NotLinearizable(violation.to_string()),
        _ if recorded.ok == 0 || recorded.ok * UNAVAILABLE_RATIO < operations => {
            let done = if recorded.ok == 0 {
                format!("no operation completed in {}", seconds(elapsed))
            } else {
                format!("only {} of {operations} operations completed in {}", recorded.ok, seconds(elapsed))
            };
            Finding::Unavailable(format!("cluster unavailable: {done}; tried {}", plan.endpoints.join(", ")))
        }
        Verdict::GaveUp { .. } => Finding::GaveUp(verdict.to_string()),
        Verdict::Linearizable => Finding::Linearizable,
    };
    VerifyReport {
        seed: plan.seed,
        prefix: plan.workload().prefix,
        clients: plan.clients,
        keys: keys.len(),
        operations,
        ok_ops: recorded.ok,
        unknown: recorded.unknown,
        failed_reads: recorded.failed_reads,
        elapsed,
        finding,
        cleanup,
    }
}

/// A duration as seconds with one decimal: `30.0s`.
pub fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Runs `plan` and reports; with `show_progress`, draws a progress bar on
/// standard error meanwhile. Dropping the future abandons the run: its
/// clients stop, and its keys are deleted in the background.
pub async fn run(plan: Plan, show_progress: bool) -> anyhow::Result<VerifyReport> {
    let progress = Arc::new(Progress::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (done_tx, mut done_rx) = oneshot::channel();
    let bar = Bar::new(show_progress, &plan);
    let worker_progress = progress.clone();
    let worker_plan = plan.clone();
    std::thread::Builder::new()
        .name("graft-verify".into())
        .spawn(move || {
            let result = work(&worker_plan, &worker_progress, stop_rx);
            let _ = done_tx.send(result);
        })
        .context("verify: cannot start a thread")?;
    let result = loop {
        tokio::select! {
            r = &mut done_rx => break r,
            () = tokio::time::sleep(Duration::from_millis(100)), if bar.is_shown() => {
                bar.update(&progress, plan.duration);
            }
        }
    };
    // Kept until here: dropping it (with this future) tells the thread to stop.
    drop(stop_tx);
    drop(bar);
    result.unwrap_or_else(|_| Err(anyhow!("verify: the run stopped unexpectedly")))
}

/// The thread's side of [`run`]. `stop` resolves (with an error) when the
/// caller gives up.
fn work(plan: &Plan, progress: &Progress, mut stop: oneshot::Receiver<()>) -> anyhow::Result<VerifyReport> {
    let opts = plan.workload();
    let ran = {
        let rt = runtime()?;
        let ran = rt.block_on(async {
            tokio::select! {
                r = prepare_and_run(plan, &opts, progress) => Some(r),
                _ = &mut stop => None,
            }
        });
        // Dropping the runtime stops the clients of an abandoned run.
        drop(rt);
        ran
    };
    let Some(ran) = ran else {
        // Nobody waits for the report; delete the keys all the same.
        let _ = runtime()?.block_on(delete_prefix(plan, &opts));
        return Err(anyhow!("verify: cancelled"));
    };
    let (recorded, elapsed) = match ran {
        Ok(r) => r,
        Err(Prepare { error, elapsed }) => {
            if Code::of_error(&error) != Code::Unavailable {
                return Err(error.context(format!("verify: deleting the keys under {}", opts.prefix)));
            }
            let mut report = summarize(plan, &Recorded::default(), &Verdict::Linearizable, elapsed, Ok(0));
            report.finding = Finding::Unavailable(format!("{error:#}"));
            return Ok(report);
        }
    };
    progress.set(Phase::Cleaning);
    let cleanup = runtime()?.block_on(delete_prefix(plan, &opts)).map_err(|e| e.to_string());
    if stopped(&mut stop) {
        return Err(anyhow!("verify: cancelled"));
    }
    progress.ops.store(recorded.history.len() as u64, Ordering::Relaxed);
    progress.set(Phase::Checking);
    let verdict = graft_check::check(&recorded.history);
    Ok(summarize(plan, &recorded, &verdict, elapsed, cleanup))
}

/// Whether the caller gave up.
fn stopped(stop: &mut oneshot::Receiver<()>) -> bool {
    !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty))
}

/// A failure to clear the prefix before the run, and how long it took.
struct Prepare {
    error: anyhow::Error,
    elapsed: Duration,
}

/// Clears the prefix, then runs the workload; returns what it recorded and
/// how long it ran.
async fn prepare_and_run(
    plan: &Plan,
    opts: &WorkloadOptions,
    progress: &Progress,
) -> Result<(Recorded, Duration), Prepare> {
    let start = Instant::now();
    delete_prefix(plan, opts)
        .await
        .map_err(|e| Prepare { error: anyhow::Error::new(e), elapsed: start.elapsed() })?;
    let start = Instant::now();
    progress.start(start);
    let final_reads = || {
        progress.set(Phase::FinalReads);
        std::future::ready(None)
    };
    let recorded = workload::run(plan.endpoints.clone(), opts, plan.timeout, final_reads).await;
    Ok((recorded, start.elapsed()))
}

/// Deletes every key under the run's prefix with a client of its own;
/// returns how many it deleted. Stops at the first failure.
async fn delete_prefix(plan: &Plan, opts: &WorkloadOptions) -> Result<usize, ClientError> {
    let client = Client::new(ClientOptions { endpoints: plan.endpoints.clone(), timeout: plan.timeout });
    let prefix = Bytes::from(opts.prefix.clone());
    // Each round deletes what one scan lists; enough rounds for every key
    // the workload may use, and a few more.
    let rounds = opts.key_count() / DELETE_PAGE as usize + 3;
    let mut deleted = 0;
    for _ in 0..rounds {
        let items = client.scan(prefix.clone(), DELETE_PAGE, Consistency::Linearizable).await?;
        if items.is_empty() {
            break;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (key, _) in items {
            let client = client.clone();
            tasks.spawn(async move { client.delete(key).await });
        }
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(_)) => deleted += 1,
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {}
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
    }
    Ok(deleted)
}

/// A runtime for the thread.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("verify: cannot start a runtime")
}

/// What the run is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Deleting leftover keys, connecting.
    Preparing = 0,
    /// The clients are running.
    Running = 1,
    /// The final read of every key.
    FinalReads = 2,
    /// Deleting the keys.
    Cleaning = 3,
    /// Checking the history.
    Checking = 4,
}

/// What the thread tells the progress bar.
#[derive(Debug, Default)]
struct Progress {
    phase: AtomicU8,
    /// When the clients started.
    started: Mutex<Option<Instant>>,
    /// Operations to check.
    ops: AtomicU64,
}

impl Progress {
    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Preparing,
            1 => Phase::Running,
            2 => Phase::FinalReads,
            3 => Phase::Cleaning,
            _ => Phase::Checking,
        }
    }

    fn start(&self, at: Instant) {
        if let Ok(mut started) = self.started.lock() {
            *started = Some(at);
        }
        self.set(Phase::Running);
    }

    fn started(&self) -> Option<Instant> {
        self.started.lock().ok().and_then(|s| *s)
    }
}

/// The progress bar on standard error, if shown; cleared when dropped (so
/// also when the command is abandoned).
struct Bar(Option<ProgressBar>);

impl Bar {
    fn new(show: bool, plan: &Plan) -> Bar {
        if !show {
            return Bar(None);
        }
        let bar = ProgressBar::new(plan.duration.as_millis().max(1) as u64);
        let style = ProgressStyle::with_template("{spinner} verify, seed {prefix}: [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(plan.seed.to_string());
        bar.set_message("connecting");
        Bar(Some(bar))
    }

    fn is_shown(&self) -> bool {
        self.0.is_some()
    }

    fn update(&self, progress: &Progress, duration: Duration) {
        let Some(bar) = &self.0 else { return };
        let message = match progress.phase() {
            Phase::Preparing => "connecting".to_owned(),
            Phase::Running => {
                let ran = progress.started().map_or(Duration::ZERO, |s| s.elapsed()).min(duration);
                bar.set_position(ran.as_millis() as u64);
                format!("{}s / {}s", ran.as_secs(), duration.as_secs())
            }
            Phase::FinalReads => {
                bar.set_position(duration.as_millis() as u64);
                "reading every key".to_owned()
            }
            Phase::Cleaning => "deleting the keys".to_owned(),
            Phase::Checking => format!("checking {} operations", progress.ops.load(Ordering::Relaxed)),
        };
        bar.set_message(message);
        bar.tick();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use graft_check::{Call, History, Operation, Outcome};

    fn plan() -> Plan {
        Plan {
            endpoints: vec!["a:1".into(), "b:2".into()],
            timeout: Duration::from_secs(5),
            duration: Duration::from_secs(30),
            clients: 5,
            keys: 5,
            seed: 42,
        }
    }

    #[test]
    fn workload_options() {
        let opts = plan().workload();
        assert_eq!((opts.clients, opts.keys, opts.seed), (5, 5, 42));
        assert_eq!((opts.duration, opts.op_timeout), (Duration::from_secs(30), Duration::from_secs(5)));
        assert_eq!(opts.prefix, "graft-verify/000000000000002a/");
        assert_eq!(opts.rotate_every, None);
        assert!(opts.key_names().iter().all(|k| k.starts_with(b"graft-verify/000000000000002a/")));
        let at_limit = Plan { duration: ROTATE_AFTER, ..plan() }.workload();
        assert_eq!(at_limit.rotate_every, None);
        let long = Plan { duration: Duration::from_secs(300), clients: 2, keys: 3, ..plan() }.workload();
        assert_eq!(long.rotate_every, Some(Duration::from_secs(60)));
        assert_eq!((long.clients, long.keys), (2, 3));
        assert_eq!(long.key_names().len(), 3 * 6);
    }

    fn recorded(ops: Vec<Operation>, unknown: u64, failed_reads: u64) -> Recorded {
        let ok = ops.iter().filter(|op| !op.is_unknown()).count() as u64;
        let history = History::from_operations(ops).expect("a valid history");
        Recorded { history, ok, unknown, failed_reads, final_reads_failed: 0 }
    }

    fn put(client: u64, key: &str, value: &str, invoke: u64, complete: u64) -> Operation {
        Operation::new(
            client,
            key.to_owned(),
            Call::Put(value.to_owned().into()),
            Outcome::Put,
            invoke,
            complete,
        )
    }

    fn get(client: u64, key: &str, value: Option<&str>, invoke: u64, complete: u64) -> Operation {
        let outcome = Outcome::Get(value.map(|v| Bytes::from(v.to_owned())));
        Operation::new(client, key.to_owned(), Call::Get, outcome, invoke, complete)
    }

    #[test]
    fn a_linearizable_run() {
        let ops = vec![
            put(1, "k1", "a", 0, 10),
            get(2, "k1", Some("a"), 20, 30),
            get(0, "k2", None, 40, 50),
            Operation::unknown(3, "k1", Call::Put("b".into()), 5),
        ];
        let r = recorded(ops, 1, 2);
        let verdict = graft_check::check(&r.history);
        let report = summarize(&plan(), &r, &verdict, Duration::from_millis(1500), Ok(2));
        assert_eq!(report.finding, Finding::Linearizable);
        assert_eq!((report.operations, report.ok_ops, report.unknown, report.failed_reads), (6, 3, 1, 2));
        assert_eq!((report.keys, report.seed, report.clients), (2, 42, 5));
        assert_eq!(report.code(), Code::Ok);
    }

    /// A put of "a" completed, then a later read found nothing.
    pub(crate) fn not_linearizable() -> VerifyReport {
        let ops = vec![put(1, "graft-verify/k", "a", 0, 10), get(2, "graft-verify/k", None, 20, 30)];
        let r = recorded(ops, 0, 0);
        let verdict = graft_check::check(&r.history);
        summarize(&plan(), &r, &verdict, Duration::from_secs(30), Ok(1))
    }

    #[test]
    fn a_violation_exits_1_with_the_checkers_report() {
        let report = not_linearizable();
        assert_eq!(report.code(), Code::NoMatch);
        let Finding::NotLinearizable(text) = &report.finding else { panic!("{report:?}") };
        assert!(text.contains("not linearizable") && text.contains("client 1") && text.contains("client 2"));
        // Even if most operations failed, a violation is what counts.
        let ops = vec![put(1, "k", "a", 0, 10), get(2, "k", None, 20, 30)];
        let r = recorded(ops, 100, 0);
        let report = summarize(&plan(), &r, &graft_check::check(&r.history), Duration::from_secs(1), Ok(0));
        assert!(matches!(report.finding, Finding::NotLinearizable(_)), "{report:?}");
    }

    #[test]
    fn no_completed_operation_is_unavailable() {
        let r = recorded(vec![Operation::unknown(1, "k", Call::Delete, 0)], 1, 9);
        let report = summarize(&plan(), &r, &graft_check::check(&r.history), Duration::from_secs(1), Ok(0));
        assert_eq!(
            report.finding,
            Finding::Unavailable(
                "cluster unavailable: no operation completed in 1.0s; tried a:1, b:2".into()
            )
        );
        assert_eq!((report.code(), report.operations), (Code::Unavailable, 10));
        // Fewer than 1 in 10 completed: unavailable too; 1 in 10 is not.
        let r = recorded(vec![get(1, "k", None, 0, 1)], 10, 0);
        let report = summarize(&plan(), &r, &Verdict::Linearizable, Duration::from_secs(2), Ok(0));
        assert_eq!(
            report.finding,
            Finding::Unavailable(
                "cluster unavailable: only 1 of 11 operations completed in 2.0s; tried a:1, b:2".into()
            )
        );
        let r = recorded(vec![get(1, "k", None, 0, 1)], 9, 0);
        let report = summarize(&plan(), &r, &Verdict::Linearizable, Duration::from_secs(2), Ok(0));
        assert_eq!(report.finding, Finding::Linearizable);
    }

    #[test]
    fn giving_up_exits_4() {
        let r = recorded(vec![get(1, "k", None, 0, 1)], 0, 0);
        let verdict = Verdict::GaveUp { key: "k".into(), reason: graft_check::GiveUpReason::TimeLimit };
        let report = summarize(&plan(), &r, &verdict, Duration::from_secs(2), Ok(0));
        assert_eq!(report.finding, Finding::GaveUp("gave up checking key \"k\": time limit reached".into()));
        assert_eq!(report.code(), Code::Failure);
    }

    #[test]
    fn seeds_differ() {
        assert_ne!(graft_kv::client::random_u64(), graft_kv::client::random_u64());
        assert_eq!(seconds(Duration::from_millis(29_960)), "30.0s");
    }
}
