//! Shrinking a non-linearizable set of operations on one key to a small
//! subset that is still not linearizable, and that still proves the whole
//! history is not.
//!
//! Linearizability is not monotone: removing a write from a linearizable
//! history can make it non-linearizable (a read loses the write it saw), so
//! plain delta debugging may "find" a violation that the removal created.
//! The shrinking therefore only makes moves that keep a linearizable set
//! linearizable; by contraposition, the final set being non-linearizable
//! implies the original is. The moves, each on one operation:
//!
//! - **remove an observer**: a read, or a compare-and-swap that failed.
//!   Dropping an operation that changes nothing keeps any linearization
//!   valid.
//! - **keep only the write** of a swap or a delete: a compare-and-swap that
//!   swapped becomes a put of its new value, a delete forgets whether it
//!   reported the key existing. Its constraint goes, its effect stays.
//! - **relax a write**: forget its outcome, making it an optional put or
//!   delete that may take effect at any time after its invocation, or
//!   never. (An optional compare-and-swap likewise becomes an optional
//!   put.) The old linearization is still an allowed one.
//! - **remove a write** `w` (in any of the forms above), provided no other
//!   operation could use the state `w` leaves: no read of it, no
//!   compare-and-swap (successful, or optional) expecting it, no failed one
//!   expecting something else, no delete reporting "existed" if it is a
//!   value, or "absent" if it is absence. Relax `w` first; then in a
//!   linearization the operations between `w` and the next blind write can
//!   only be optional compare-and-swaps that did nothing, which can be
//!   dropped, and then `w` too.
//! - additionally, when a search fails it reports the furthest point it
//!   reached; operations invoked after it were never looked at, and are
//!   dropped at once (observers removed, writes relaxed: the search of the
//!   result fails the same way).
//!
//! The order is greedy delta debugging. A long history is first cut down by
//! *forgetting* large chunks (their observers removed and writes relaxed at
//! once), which leaves fewer known operations and so makes the searches
//! cheaper. Then come removals, on chunks of halving size and then one
//! operation at a time until none works; then keeping only writes; then
//! relaxing, one operation at a time; and again from the removals until no
//! move works. Removals come before relaxations because relaxing a write
//! early can make more reads necessary to the violation.

use std::collections::HashMap;
use std::time::Instant;

use crate::history::{Call, Operation, Outcome};
use crate::search::{search, Budget, SearchOutcome};

/// What an operation (as checked) requires of the state before it, or, for
/// an optional compare-and-swap, the state its effect depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need<'a> {
    /// Exactly this state (`None` = absent).
    Eq(Option<&'a [u8]>),
    /// Any state but this one.
    Ne(Option<&'a [u8]>),
    /// Some value present.
    Present,
    /// The key absent.
    Absent,
}

fn need_of(op: &Operation) -> Option<Need<'_>> {
    match (&op.call, &op.outcome) {
        (Call::Get, Outcome::Get(observed)) => Some(Need::Eq(observed.as_deref())),
        (Call::Cas { expected, .. }, Outcome::Cas(true) | Outcome::Unknown) => {
            Some(Need::Eq(expected.as_deref()))
        }
        (Call::Cas { expected, .. }, Outcome::Cas(false)) => Some(Need::Ne(expected.as_deref())),
        (Call::Delete, Outcome::Delete { existed: Some(true) }) => Some(Need::Present),
        (Call::Delete, Outcome::Delete { existed: Some(false) }) => Some(Need::Absent),
        _ => None,
    }
}

/// Whether an operation changes nothing whatever the state: a read, or a
/// compare-and-swap known to have failed.
fn is_observer(op: &Operation) -> bool {
    matches!((&op.call, &op.outcome), (Call::Get, _) | (Call::Cas { .. }, Outcome::Cas(false)))
}

/// The state a write leaves (for a compare-and-swap, if it swaps).
fn written_by(op: &Operation) -> Option<&[u8]> {
    match &op.call {
        Call::Put(value) | Call::Cas { new: value, .. } => Some(value),
        Call::Delete | Call::Get => None,
    }
}

/// How an operation takes part in a candidate set: the forms, from the
/// strongest to the weakest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Form {
    /// As recorded.
    Recorded,
    /// Only its write, with a known outcome: a swap taken as a put of its
    /// new value, a delete whose report of existence is ignored.
    WriteOnly,
    /// Its write as an optional operation (unknown outcome).
    Optional,
    /// Left out.
    Removed,
}

/// A kind of move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Forget operations: remove observers and relax writes. Used first,
    /// on large chunks, to shed most of a long history cheaply (it leaves
    /// fewer known operations, so the searches get easier, unlike mere
    /// removals of observers, which leave writes less constrained).
    Forget,
    /// Remove observers, and writes nothing else could use.
    Remove,
    /// Keep only the write of swaps and deletes with a constraint; make
    /// optional compare-and-swaps optional puts.
    WriteOnly,
    /// Relax writes.
    Relax,
}

/// The counts of each kind of [`Need`] among a set of operations, to tell
/// quickly whether any of them could use a given state.
#[derive(Default)]
struct Needs<'a> {
    eq: HashMap<Option<&'a [u8]>, usize>,
    ne: HashMap<Option<&'a [u8]>, usize>,
    ne_total: usize,
    present: usize,
    absent: usize,
}

impl<'a> Needs<'a> {
    fn add(&mut self, need: Need<'a>) {
        match need {
            Need::Eq(x) => *self.eq.entry(x).or_insert(0) += 1,
            Need::Ne(x) => {
                *self.ne.entry(x).or_insert(0) += 1;
                self.ne_total += 1;
            }
            Need::Present => self.present += 1,
            Need::Absent => self.absent += 1,
        }
    }

    /// Whether an operation other than the one with need `own` could use
    /// `state`.
    fn usable(&self, state: Option<&[u8]>, own: Option<Need<'_>>) -> bool {
        let own_is = |need: Need<'_>| usize::from(own == Some(need));
        let eq = self.eq.get(&state).copied().unwrap_or(0) - own_is(Need::Eq(state));
        let own_ne_other = usize::from(matches!(own, Some(Need::Ne(x)) if x != state));
        let ne = self.ne_total - self.ne.get(&state).copied().unwrap_or(0) - own_ne_other;
        let kind = if state.is_some() {
            self.present - own_is(Need::Present)
        } else {
            self.absent - own_is(Need::Absent)
        };
        eq > 0 || ne > 0 || kind > 0
    }
}

/// The state of a minimization of one key's operations.
struct Minimizer<'a, 'i> {
    /// The key's operations, sorted by invocation.
    all: &'a [&'a Operation],
    /// Each operation's [`Form::WriteOnly`] form, if it has one.
    write_only: Vec<Option<Operation>>,
    /// Each operation's [`Form::Optional`] form, if it has one.
    optional: Vec<Option<Operation>>,
    initial: Option<&'i [u8]>,
    budget: Budget,
    /// Configurations the searches may still explore in all.
    states_left: u64,
    /// Set when a search could not decide since it was last cleared: then a
    /// rejected move proves nothing.
    inconclusive: bool,
}

impl<'a> Minimizer<'a, '_> {
    /// Operation `i` in form `form`, unless removed.
    fn op(&self, i: usize, form: Form) -> Option<&Operation> {
        match form {
            Form::Recorded => Some(self.all[i]),
            Form::WriteOnly => self.write_only[i].as_ref(),
            Form::Optional => self.optional[i].as_ref(),
            Form::Removed => None,
        }
    }

    /// The operations of a configuration, as checked, with their indices.
    fn ops(&self, config: &[Form]) -> (Vec<&Operation>, Vec<usize>) {
        let mut ops = Vec::new();
        let mut indices = Vec::new();
        for (i, &form) in config.iter().enumerate() {
            if let Some(op) = self.op(i, form) {
                ops.push(op);
                indices.push(i);
            }
        }
        (ops, indices)
    }

    fn needs(&self, config: &[Form]) -> Needs<'_> {
        let mut needs = Needs::default();
        for (i, &form) in config.iter().enumerate() {
            if let Some(need) = self.op(i, form).and_then(need_of) {
                needs.add(need);
            }
        }
        needs
    }

    fn out_of_budget(&self) -> bool {
        self.states_left == 0 || self.budget.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The weaker form operation `i` may move to with a move of this kind,
    /// if any. `needs` are those of the whole configuration.
    fn weaker(&self, config: &[Form], needs: &Needs<'_>, i: usize, mode: Mode) -> Option<Form> {
        let form = config[i];
        let op = self.op(i, form)?;
        match mode {
            Mode::Remove | Mode::Forget if is_observer(op) => Some(Form::Removed),
            Mode::Forget
                if form < Form::Optional && (!op.is_unknown() || matches!(op.call, Call::Cas { .. })) =>
            {
                self.optional[i].is_some().then_some(Form::Optional)
            }
            Mode::Remove => (!needs.usable(written_by(op), need_of(op))).then_some(Form::Removed),
            Mode::WriteOnly if form == Form::Recorded && self.write_only[i].is_some() => {
                Some(Form::WriteOnly)
            }
            Mode::WriteOnly
                if form == Form::Recorded && op.is_unknown() && matches!(op.call, Call::Cas { .. }) =>
            {
                Some(Form::Optional)
            }
            Mode::Relax if form < Form::Optional && !op.is_unknown() && need_of(op).is_none() => {
                self.optional[i].is_some().then_some(Form::Optional)
            }
            _ => None,
        }
    }

    /// Searches a configuration; if it is not linearizable, returns it with
    /// the operations the failed search never looked at dropped (see
    /// [`Minimizer::cut`]).
    fn refute(&mut self, config: &[Form]) -> Option<Vec<Form>> {
        if self.out_of_budget() {
            self.inconclusive = true;
            return None;
        }
        let (ops, indices) = self.ops(config);
        let budget = Budget { max_states: self.budget.max_states.min(self.states_left), ..self.budget };
        let (outcome, states) = search(&ops, self.initial, &budget);
        self.states_left = self.states_left.saturating_sub(states.max(1));
        match outcome {
            SearchOutcome::Linearizable => None,
            SearchOutcome::NotLinearizable { relevant } => Some(self.cut(config, &indices, &relevant)),
            SearchOutcome::GaveUp(_) => {
                self.inconclusive = true;
                None
            }
        }
    }

    /// Greedy delta debugging with moves of one kind: on chunks of halving
    /// size from `first_chunk` (0 = half the set) down to `last_chunk`, and
    /// if that is 1, on single operations until no move works. Returns
    /// whether anything changed and whether the last round was conclusive,
    /// or `None` if the budget ran out.
    fn pass(
        &mut self,
        config: &mut Vec<Form>,
        mode: Mode,
        first_chunk: usize,
        last_chunk: usize,
    ) -> Option<(bool, bool)> {
        let mut chunk = if first_chunk == 0 { alive(config).len() / 2 } else { first_chunk }.max(1);
        let mut changed_at_all = false;
        loop {
            self.inconclusive = false;
            let mut changed = false;
            let mut i = 0;
            loop {
                let members = alive(config);
                if i >= members.len() {
                    break;
                }
                if self.out_of_budget() {
                    return None;
                }
                let end = (i + chunk).min(members.len());
                let needs = self.needs(config);
                let mut candidate = config.clone();
                for &j in &members[i..end] {
                    if let Some(weaker) = self.weaker(config, &needs, j, mode) {
                        candidate[j] = weaker;
                    }
                }
                if candidate == *config {
                    i += chunk;
                    continue;
                }
                match self.refute(&candidate) {
                    Some(smaller) => {
                        // Go on from the same operation: it may be weakened
                        // further.
                        let first = members[i];
                        *config = smaller;
                        i = alive(config).partition_point(|&j| j < first);
                        changed = true;
                    }
                    None => i += chunk,
                }
            }
            changed_at_all |= changed;
            if chunk > last_chunk {
                chunk = (chunk / 2).min(alive(config).len() / 2).max(last_chunk);
            } else if !changed || last_chunk > 1 {
                return Some((changed_at_all, !self.inconclusive));
            }
        }
    }
}

/// Sets larger than this are first shrunk with [`Mode::Forget`]...
const FORGET_ABOVE: usize = 64;
/// ... on chunks no smaller than this.
const FORGET_CHUNK: usize = 8;

/// Alive (not removed) operations of a configuration.
fn alive(config: &[Form]) -> Vec<usize> {
    (0..config.len()).filter(|&i| config[i] != Form::Removed).collect()
}

impl Minimizer<'_, '_> {
    /// `config` with every operation not in `relevant` (positions into
    /// `indices`, the configuration's operations) dropped: observers
    /// removed, writes relaxed.
    ///
    /// The failed search never looked at those operations (all invoked
    /// after the furthest point it reached), and optional ones invoked that
    /// late would never be candidates either, so the search of the result
    /// fails the same way. Relaxing rather than removing the writes keeps
    /// the result a proof: removing a write could leave a read invoked
    /// before that point, but linearized after, without its value.
    fn cut(&self, config: &[Form], indices: &[usize], relevant: &[usize]) -> Vec<Form> {
        let mut out = config.to_vec();
        let mut keep = vec![false; config.len()];
        for &r in relevant {
            keep[indices[r]] = true;
        }
        for &i in indices {
            if keep[i] {
                continue;
            }
            let Some(op) = self.op(i, config[i]) else { continue };
            if is_observer(op) {
                out[i] = Form::Removed;
            } else if config[i] < Form::Optional && !op.is_unknown() && self.optional[i].is_some() {
                out[i] = Form::Optional;
            }
        }
        out
    }
}

/// The [`Form::WriteOnly`] form of an operation, if it differs from the
/// recorded one.
pub(crate) fn write_only_form(op: &Operation) -> Option<Operation> {
    match (&op.call, &op.outcome) {
        (Call::Cas { new, .. }, Outcome::Cas(true)) => {
            Some(Operation { call: Call::Put(new.clone()), outcome: Outcome::Put, ..op.clone() })
        }
        (Call::Delete, Outcome::Delete { existed: Some(_) }) => {
            Some(Operation { outcome: Outcome::Delete { existed: None }, ..op.clone() })
        }
        _ => None,
    }
}

/// The [`Form::Optional`] form of a write: an optional put or delete.
pub(crate) fn optional_form(op: &Operation) -> Option<Operation> {
    let call = match (&op.call, &op.outcome) {
        (Call::Put(value), _) => Call::Put(value.clone()),
        (Call::Cas { new, .. }, Outcome::Cas(true) | Outcome::Unknown) => Call::Put(new.clone()),
        (Call::Delete, _) => Call::Delete,
        _ => return None,
    };
    Some(Operation { call, outcome: Outcome::Unknown, complete: None, ..op.clone() })
}

/// The result of [`minimize`].
pub(crate) struct Minimized {
    /// Each operation's form in the shrunk set (`Removed` if not in it).
    pub forms: Vec<Form>,
    /// Whether the set is proven 1-minimal: no single move keeps it
    /// non-linearizable.
    pub minimal: bool,
}

/// Shrinks `ops` (one key's operations, sorted by invocation, not
/// linearizable, the failed search having needed only those at positions
/// `relevant`).
pub(crate) fn minimize(
    ops: &[&Operation],
    relevant: Vec<usize>,
    initial: Option<&[u8]>,
    budget: Budget,
    total_states: u64,
) -> Minimized {
    let mut m = Minimizer {
        all: ops,
        write_only: ops.iter().map(|op| write_only_form(op)).collect(),
        optional: ops.iter().map(|op| optional_form(op)).collect(),
        initial,
        budget,
        states_left: total_states,
        inconclusive: false,
    };
    let all_indices: Vec<usize> = (0..ops.len()).collect();
    let mut config = m.cut(&vec![Form::Recorded; ops.len()], &all_indices, &relevant);
    // A long history: forget most of it first.
    if alive(&config).len() > FORGET_ABOVE && m.pass(&mut config, Mode::Forget, 0, FORGET_CHUNK).is_none() {
        return Minimized { forms: config, minimal: false };
    }
    let minimal = loop {
        let Some((_, removals_settled)) = m.pass(&mut config, Mode::Remove, 0, 1) else { break false };
        let Some((changed, write_only_settled)) = m.pass(&mut config, Mode::WriteOnly, 0, 1) else {
            break false;
        };
        if changed {
            continue;
        }
        // Relaxing adds optional operations, which make searches costlier:
        // one at a time.
        let Some((changed, relax_settled)) = m.pass(&mut config, Mode::Relax, 1, 1) else { break false };
        if !changed {
            break removals_settled && write_only_settled && relax_settled;
        }
    };
    Minimized { forms: config, minimal }
}
