//! Runs parsed lines and prints their answers: the part one-shot, REPL and
//! standard-input modes share. One [`Runner`] owns the tokio runtime and the
//! one [`Executor`] (so one client and one exactly-once session) of the process.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::cli::OutputFormat;
use crate::code::{outcome_unknown, Code};
use crate::command::{Command, Parsed, UsageError};
use crate::exec::Executor;
use crate::output;
use crate::recipes;
use graft_kv::keepalive::LeaseState;
use graft_kv::protocol::WatchFilter;
use graft_kv::{WatchItem, WatchOptions};

use crate::exec::Outcome;
use crate::lease::LeaseCommand;

/// What to do after a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Go on; the line's exit code.
    Continue(Code),
    /// Stop reading: `exit`, or standard output is closed.
    Stop(Code),
}

/// Runs commands and prints their answers.
pub struct Runner {
    rt: tokio::runtime::Runtime,
    exec: Executor,
    format: OutputFormat,
}

impl Runner {
    /// A runner for the cluster at `endpoints`.
    pub fn new(endpoints: Vec<String>, timeout: Duration, format: OutputFormat) -> anyhow::Result<Runner> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Runner { rt, exec: Executor::new(endpoints, timeout), format })
    }

    /// The leader the client talks to, if known.
    pub fn leader(&self) -> Option<String> {
        self.exec.leader()
    }

    /// Runs one parsed line and prints its answer: the answer on standard
    /// output, failures as one line on standard error starting with
    /// `prefix`. With `cancel_on_ctrl_c`, Ctrl+C abandons the command.
    pub fn handle(&self, parsed: Result<Parsed, UsageError>, prefix: &str, cancel_on_ctrl_c: bool) -> Step {
        let cmd = match parsed {
            Ok(Parsed::Empty) => return Step::Continue(Code::Ok),
            Ok(Parsed::Exit) => return Step::Stop(Code::Ok),
            Ok(Parsed::Help(text)) => return self.emit(&output::render_help(self.format, &text), Code::Ok),
            Ok(Parsed::Run(cmd)) => cmd,
            Err(e) => {
                let e = anyhow::Error::new(e);
                return self.fail(None, &e, prefix);
            }
        };
        if let Command::Watch { .. } = cmd {
            return self.watch(&cmd, prefix);
        }
        if let Command::Lease(LeaseCommand::KeepAlive { id, once: false }) = cmd {
            return self.keep_alive(id, prefix);
        }
        if matches!(cmd, Command::Lock { .. } | Command::Elect { .. }) {
            return self.recipe(&cmd, prefix);
        }
        let result = if cancel_on_ctrl_c {
            self.rt.block_on(async {
                tokio::select! {
                    r = self.exec.run(&cmd) => Some(r),
                    () = ctrl_c() => None,
                }
            })
        } else {
            Some(self.rt.block_on(self.exec.run(&cmd)))
        };
        match result {
            None => {
                let unknown = if cmd.is_write() {
                    "; the write's outcome is unknown"
                } else if cmd.is_member_change() {
                    "; the membership change's outcome is unknown"
                } else if matches!(cmd, Command::Verify { .. }) {
                    "; its keys are being deleted in the background"
                } else {
                    ""
                };
                eprintln!("{prefix}cancelled{unknown}");
                Step::Continue(Code::Unavailable)
            }
            Some(Ok(outcome)) => {
                for note in output::notes(&outcome) {
                    eprintln!("{prefix}{note}");
                }
                self.emit(&output::render(self.format, &outcome), outcome.code())
            }
            Some(Err(e)) => self.fail(Some(cmd.name()), &e, prefix),
        }
    }

    /// Streams a watch's changes until Ctrl+C (exit 0), standard output
    /// closing, or the watch failing.
    fn watch(&self, cmd: &Command, prefix: &str) -> Step {
        let Command::Watch { key, prefix: is_prefix, from_revision, prev_value } = cmd else {
            return Step::Continue(Code::Ok);
        };
        let opts = WatchOptions {
            filter: WatchFilter { key: bytes::Bytes::from(key.clone()), prefix: *is_prefix },
            start_revision: *from_revision,
            prev_kv: *prev_value,
            progress_ms: 0,
        };
        self.rt.block_on(async {
            let mut w = self.exec.client().watch(opts);
            loop {
                let item = tokio::select! {
                    () = ctrl_c() => return Step::Continue(Code::Ok),
                    item = w.next() => item,
                };
                match item {
                    Some(Ok(WatchItem::Events(events))) => {
                        for e in &events {
                            if let Step::Stop(code) =
                                self.emit(&output::render_event(self.format, e, *prev_value), Code::Ok)
                            {
                                return Step::Stop(code);
                            }
                        }
                    }
                    Some(Ok(WatchItem::Progress(_))) => {}
                    Some(Err(e)) => {
                        let e = anyhow::Error::new(e).context(format!("watch {key}"));
                        return self.fail(Some("watch"), &e, prefix);
                    }
                    None => return Step::Continue(Code::Ok),
                }
            }
        })
    }

    /// Keeps a lease alive until Ctrl+C (exit 0) or the lease is found gone
    /// (exit 1), printing each renewal.
    fn keep_alive(&self, id: u64, prefix: &str) -> Step {
        self.rt.block_on(async {
            let client = self.exec.client();
            let ttl = match client.lease_ttl(id).await {
                Ok(info) => std::time::Duration::from_millis(info.ttl_ms),
                Err(e) => {
                    let e = anyhow::Error::new(e).context(format!("lease keepalive {id}"));
                    return self.fail(Some("lease keepalive"), &e, prefix);
                }
            };
            let ka = client.keep_alive(id, ttl);
            let mut renewals = ka.watch();
            loop {
                tokio::select! {
                    () = ctrl_c() => return Step::Continue(Code::Ok),
                    changed = renewals.changed() => {
                        if changed.is_err() {
                            return Step::Continue(Code::Ok);
                        }
                        let outcome = match ka.state() {
                            LeaseState::Alive { ttl_ms } => Outcome::LeaseRenewed { id, ttl_ms: Some(ttl_ms) },
                            LeaseState::Lost => {
                                let outcome = Outcome::LeaseRenewed { id, ttl_ms: None };
                                for note in output::notes(&outcome) {
                                    eprintln!("{prefix}{note}");
                                }
                                return self.emit(&output::render(self.format, &outcome), Code::NoMatch);
                            }
                            LeaseState::Pending => continue,
                        };
                        if let Step::Stop(code) = self.emit(&output::render(self.format, &outcome), Code::Ok) {
                            return Step::Stop(code);
                        }
                    }
                }
            }
        })
    }

    /// `lock` and `elect`: print what they say on standard output, exit
    /// with the command's code (`lock`) or 0 on Ctrl+C.
    fn recipe(&self, cmd: &Command, prefix: &str) -> Step {
        let say = |line: &str| {
            let _ = self.emit(format!("{line}\n").as_bytes(), Code::Ok);
        };
        let client = self.exec.client();
        let result = self.rt.block_on(async {
            match cmd {
                Command::Lock { name, ttl, command } => {
                    recipes::run_lock(client, name, *ttl, command, say, ctrl_c()).await
                }
                Command::Elect { name, value, ttl } => {
                    recipes::run_elect(client, name, value, *ttl, say, ctrl_c()).await
                }
                _ => Ok(recipes::Ended::Interrupted),
            }
        });
        match result {
            Ok(recipes::Ended::Interrupted) => Step::Continue(Code::Ok),
            Ok(recipes::Ended::Command(code)) => {
                if code != 0 {
                    eprintln!("{prefix}{}: the command exited with {code}", cmd.name());
                }
                Step::Continue(Code::from_exit(code))
            }
            Err(e) => self.fail(Some(cmd.name()), &e, prefix),
        }
    }

    fn fail(&self, command: Option<&str>, e: &anyhow::Error, prefix: &str) -> Step {
        let code = Code::of_error(e);
        let message = format!("{e:#}");
        eprintln!("{prefix}error: {message}");
        self.emit(&output::render_error(self.format, command, &message, code, outcome_unknown(e)), code)
    }

    /// Writes `bytes` to standard output and flushes, so that a program
    /// driving us line by line sees each answer at once.
    fn emit(&self, bytes: &[u8], code: Code) -> Step {
        if bytes.is_empty() {
            return Step::Continue(code);
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(bytes).and_then(|()| out.flush()) {
            Ok(()) => Step::Continue(code),
            // Whoever reads our output has gone (`| head`): stop quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Step::Stop(code),
            Err(e) => {
                eprintln!("graft-cli: error: writing standard output: {e}");
                Step::Stop(Code::Failure)
            }
        }
    }
}

/// Completes on Ctrl+C; never if the signal cannot be watched.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}
