//! graft-check: a linearizability checker for histories recorded against a
//! key-value store.
//!
//! A test harness records, for every client request, what was asked, when
//! it was invoked, when (and whether) it completed and what came back, in a
//! [`History`]. [`check()`] then decides whether some total order of the
//! operations is consistent with both the real-time order of the requests
//! and the sequential semantics of the store: whether the history is
//! *linearizable*.
//!
//! ```
//! use graft_check::{check, Call, History, Operation, Outcome, Verdict};
//!
//! let mut history = History::new();
//! // Client 1 writes "a" between t=0 and t=10; client 2 then reads nothing.
//! history.push(Operation::new(1, "k", Call::Put("a".into()), Outcome::Put, 0, 10))?;
//! history.push(Operation::new(2, "k", Call::Get, Outcome::Get(None), 20, 30))?;
//! let verdict = check(&history);
//! let Verdict::NotLinearizable(violation) = &verdict else { panic!("{verdict}") };
//! assert_eq!(violation.operations.len(), 2);
//! println!("{violation}");
//! # Ok::<(), graft_check::HistoryError>(())
//! ```
//!
//! # The model
//!
//! Each key is an independent register holding an optional byte string
//! (`None` = absent), starting absent unless [`History::set_initial`] says
//! otherwise. The operations are [`Call::Get`], [`Call::Put`],
//! [`Call::Delete`] and [`Call::Cas`] (compare-and-swap, whose expected
//! value may be "absent"). Because keys are independent, a history is
//! linearizable if and only if each key's sub-history is (linearizability is
//! local), so each key is checked on its own.
//!
//! Every operation has an invocation time and, if the client learnt the
//! outcome, a completion time; an operation with a known outcome must take
//! effect exactly once, at some instant between the two. An operation with
//! an [`Outcome::Unknown`] (timeout, lost connection) may take effect at any
//! instant after its invocation, or never: it is *optional* and has no
//! completion time. Unknown reads are dropped, having no effect. Intervals
//! that merely touch (one completes at the time the other is invoked) count
//! as concurrent.
//!
//! # Multi-key transactions
//!
//! [`check_serial`] checks histories of multi-key transactions, where keys
//! are not independent, against the order the store's revisions give
//! (see the `serial` module's docs): linear time, exact for that order.
//!
//! # The algorithm
//!
//! The search is Wing & Gong's, with Lowe's memoization ("Testing for
//! linearizability", 2017), as in porcupine and knossos:
//!
//! - The call and return events of the key's known-outcome operations are
//!   put in a doubly linked list in time order. An operation may be
//!   linearized next if its call comes before the first return still in the
//!   list (the *frontier*): every operation that completed earlier has
//!   already been linearized.
//! - The search tries candidates in list order. Linearizing one applies it
//!   to the register (failing if its outcome is impossible in the current
//!   state), lifts its events out of the list, pushes it on a stack and
//!   starts again from the head. When no candidate works, it pops the last
//!   operation, puts its events back and tries the next candidate after
//!   it. It succeeds when every known-outcome operation is linearized, and
//!   fails when it must backtrack from an empty stack.
//! - A cache of configurations already explored, (set of linearized
//!   operations, register state), prunes the search: the future of a
//!   configuration does not depend on how it was reached. Sets are bitsets
//!   hashed incrementally (one random word per operation, xor-ed in).
//!   Known operations are numbered by return time, so the set is all ones
//!   up to the frontier, and only the span of concurrently pending
//!   operations after it is stored.
//! - A budget ([`Limits`]) bounds the states remembered, their memory and
//!   the wall-clock time; past it the check returns [`Verdict::GaveUp`].
//!
//! Pruning rules make the search practical on long, concurrent histories.
//! Each only skips configurations that a configuration the search does
//! explore dominates (has every successful continuation they have), so
//! the search stays exact:
//!
//! - **Value abstraction**: only values some operation can tell apart (a
//!   read returned one, a compare-and-swap expected one) get their own
//!   state; all others, typically values overwritten before anyone read
//!   them, share one state.
//! - **Forced observers**: a read (or failed compare-and-swap) among the
//!   candidates whose result holds in the current state is linearized at
//!   once, as the only child: it changes nothing, so any continuation can
//!   be rearranged to start with it.
//! - **Twins**: of two operations with the same effect and outcome kind,
//!   the one invoked later (and, if both are known, returning later) is
//!   not tried while the other is pending: they can trade places.
//! - **Unknown operations** have no return event and live in a second list.
//!   They are tried after the known candidates, only if invoked before the
//!   frontier, and only if some candidate could use the state they leave
//!   (one that is not a blind write, i.e. a put or a delete reporting
//!   nothing): an unknown operation followed directly by a blind write
//!   had no visible effect, and the configuration without it dominates. The
//!   cache also prunes a configuration when one with the same known set and
//!   state but a subset of its unknown operations was explored, as unknown
//!   operations are optional.
//!
//! # Minimization
//!
//! When a key is not linearizable, its operations are shrunk to a small
//! subset that is still not linearizable, by greedy delta debugging. As
//! linearizability is not monotone (removing a write can make a read
//! impossible), only moves that keep a linearizable set linearizable are
//! made, so that the result still proves the history is not linearizable:
//! removing reads and failed compare-and-swaps, weakening a successful
//! compare-and-swap to a put of its new value or a delete to one reporting
//! nothing ([`Usage::WriteOnly`]), making a write optional
//! ([`Usage::Optional`]), and removing a write no remaining operation could
//! observe. The result is reported as a [`Violation`], whose `Display`
//! lists its operations one per line.

#![warn(missing_docs)]

mod check;
mod history;
mod limits;
mod memo;
mod minimize;
mod search;
mod serial;

pub use check::{check, check_with, Usage, Verdict, Violation};
pub use history::{Call, History, HistoryError, Key, Operation, Outcome, Value};
pub use limits::{GiveUpReason, Limits};
pub use serial::{
    check_serial, CmpOp, Committed, Compare, Record, SerialCall, SerialOp, SerialOutcome, SerialReport, Step,
    StepResult, Target,
};
