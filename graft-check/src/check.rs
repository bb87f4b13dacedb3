//! The entry points, their limits, and the verdict they return.

use std::fmt;
use std::time::Instant;

use crate::history::{Call, DisplayBytes, DisplayInterval, DisplayValue, History, Key, Operation, Value};
use crate::limits::{GiveUpReason, Limits};
use crate::minimize::{minimize, optional_form, write_only_form, Form};
use crate::search::{search, Budget, SearchOutcome};

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's operations have a linearization.
    Linearizable,
    /// Some key's operations have none. When several keys do, the first in
    /// byte order is reported.
    NotLinearizable(Violation),
    /// No key was shown non-linearizable, but at least one could not be
    /// decided within the [`Limits`]; the first such key is reported.
    GaveUp {
        /// The key whose search gave up.
        key: Key,
        /// Which limit stopped it.
        reason: GiveUpReason,
    },
}

impl Verdict {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// The violation, if the verdict is [`Verdict::NotLinearizable`].
    pub fn violation(&self) -> Option<&Violation> {
        match self {
            Verdict::NotLinearizable(violation) => Some(violation),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable(violation) => violation.fmt(f),
            Verdict::GaveUp { key, reason } => {
                write!(f, "gave up checking key {}: {reason}", DisplayBytes(key))
            }
        }
    }
}

/// How a [`Violation`] uses one of its operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// As recorded.
    Recorded,
    /// Only for its write, with a known outcome: a compare-and-swap that
    /// swapped taken as a put of its new value, or a delete whose report of
    /// whether the key existed is ignored.
    WriteOnly,
    /// Only as a write with unknown outcome, which may have taken effect at
    /// any time after its invocation, or never: a put, a delete, or (for a
    /// compare-and-swap) a put of its new value.
    Optional,
}

/// A set of operations on one key that has no linearization, in a form
/// that proves the whole history has none.
///
/// Some operations may be used in a weakened form ([`Usage`]): the
/// weakenings only ever allow more linearizations, so if the weakened set
/// has none, neither has the history. [`Violation::history`] is the set as
/// checked. Its [`Display`](fmt::Display) is a readable report, one line
/// per operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The key.
    pub key: Key,
    /// The key's value before any operation (`None` = absent).
    pub initial: Option<Value>,
    /// The offending operations as recorded, sorted by invocation time.
    pub operations: Vec<Operation>,
    /// How each of `operations` is used (same length).
    pub usage: Vec<Usage>,
    /// How many operations the history has on this key (unknown-outcome
    /// reads excluded).
    pub key_operations: usize,
    /// Whether minimization finished: then no single operation can be
    /// removed or weakened further without the set becoming linearizable
    /// or ceasing to prove that the history is not (see the crate
    /// documentation for the rules). False if the [`Limits`] cut it short:
    /// the set is then still a violation, but maybe not a minimal one.
    pub minimal: bool,
}

impl Violation {
    /// The violating operations as checked (each in the form its
    /// [`Usage`] says), with the key's initial value: a history with no
    /// linearization.
    pub fn history(&self) -> History {
        let mut history = History::new();
        for (op, usage) in self.operations.iter().zip(&self.usage) {
            let op = match usage {
                Usage::Recorded => None,
                Usage::WriteOnly => write_only_form(op),
                Usage::Optional => optional_form(op),
            }
            .unwrap_or_else(|| op.clone());
            history.push(op).expect("operations of a valid history");
        }
        history.set_initial(self.key.clone(), self.initial.clone());
        history
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "key {} is not linearizable (initial value: {})",
            DisplayBytes(&self.key),
            DisplayValue(self.initial.as_deref())
        )?;
        let size = if self.minimal { "a minimal set" } else { "a set (minimization stopped early)" };
        writeln!(
            f,
            "{size} of {} of its {} operations with no linearization, by invocation time:",
            self.operations.len(),
            self.key_operations
        )?;
        let marker = |usage: &Usage| match usage {
            Usage::Recorded => "",
            Usage::WriteOnly => " +",
            Usage::Optional => " *",
        };
        let rows: Vec<[String; 4]> = self
            .operations
            .iter()
            .zip(&self.usage)
            .map(|(op, usage)| {
                [
                    format!("client {}", op.client),
                    op.call.to_string(),
                    format!("-> {}{}", op.outcome, marker(usage)),
                    DisplayInterval(op).to_string(),
                ]
            })
            .collect();
        let mut widths = [0usize; 3];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for [client, call, result, interval] in &rows {
            writeln!(
                f,
                "  {client:<w0$}  {call:<w1$}  {result:<w2$}  {interval}",
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            )?;
        }
        if self.usage.contains(&Usage::WriteOnly) {
            writeln!(
                f,
                "(+ write only: still no linearization if what this operation observed is ignored \
                 (a swap taken as a put of its new value, a delete's report of existence ignored))"
            )?;
        }
        if self.usage.contains(&Usage::Optional) {
            writeln!(
                f,
                "(* optional: still no linearization if this write took effect at any time after \
                 its invocation, or never)"
            )?;
        }
        Ok(())
    }
}

/// Checks a history with the default [`Limits`].
pub fn check(history: &History) -> Verdict {
    check_with(history, &Limits::default())
}

/// Checks whether `history` is linearizable with respect to a key-value
/// store whose keys are independent registers, within `limits`.
///
/// Keys are checked one at a time in byte order. The first key found not
/// linearizable is minimized and reported; if none is but some key's search
/// gave up, the first such key is reported.
pub fn check_with(history: &History, limits: &Limits) -> Verdict {
    let deadline = limits.time_limit.map(|limit| Instant::now() + limit);
    let budget = Budget { max_states: limits.max_states, max_cache_bytes: limits.max_cache_bytes, deadline };
    let mut gave_up = None;
    for (key, mut ops) in history.by_key() {
        // Sorted by invocation, so that minimization's chunks are spans of
        // time and the report needs no further sorting.
        ops.sort_by_key(|op| op.invoke);
        let initial = history.initial(key).map(|v| &v[..]);
        let (outcome, states) = search(&ops, initial, &budget);
        match outcome {
            SearchOutcome::Linearizable => {}
            SearchOutcome::NotLinearizable { relevant } => {
                // Subsets may need more states than the whole to be
                // refuted (fewer observations prune less), but not many
                // times more in practice.
                let max_states = limits.minimize_max_states.max(states.saturating_mul(2));
                let minimize_budget = Budget { max_states, ..budget };
                let minimized =
                    minimize(&ops, relevant, initial, minimize_budget, limits.minimize_total_states);
                let mut operations = Vec::new();
                let mut usage = Vec::new();
                for (op, form) in ops.iter().zip(&minimized.forms) {
                    usage.push(match form {
                        Form::Recorded => Usage::Recorded,
                        Form::WriteOnly => Usage::WriteOnly,
                        Form::Optional if op.is_unknown() && !matches!(op.call, Call::Cas { .. }) => {
                            Usage::Recorded
                        }
                        Form::Optional => Usage::Optional,
                        Form::Removed => continue,
                    });
                    operations.push((*op).clone());
                }
                return Verdict::NotLinearizable(Violation {
                    key: key.clone(),
                    initial: history.initial(key).cloned(),
                    operations,
                    usage,
                    key_operations: ops.len(),
                    minimal: minimized.minimal,
                });
            }
            SearchOutcome::GaveUp(reason) => {
                gave_up.get_or_insert_with(|| (key.clone(), reason));
            }
        }
    }
    match gave_up {
        Some((key, reason)) => Verdict::GaveUp { key, reason },
        None => Verdict::Linearizable,
    }
}
