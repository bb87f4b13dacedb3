//! The Wing & Gong / Lowe search for a linearization of one key's
//! operations. See the crate documentation for an overview.

use std::collections::HashMap;
use std::time::Instant;

use crate::history::{Call, Operation, Outcome};
use crate::limits::GiveUpReason;
use crate::memo::{mix64, Bit, Cache, Linearized};

/// "No node" in the linked lists.
const NIL: u32 = u32::MAX;
/// The sentinel heading the list of known operations' call and return events.
const KNOWN_HEAD: u32 = 0;
/// The sentinel heading the list of unknown operations' call events.
const UNKNOWN_HEAD: u32 = 1;
/// Event nodes are numbered `FIRST_EVENT + rank`, rank being the event's
/// position in time order.
const FIRST_EVENT: u32 = 2;
/// Register state id meaning "absent" (see [`Interner`] for the others).
const ABSENT: u32 = 0;

/// How much a search may spend before giving up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    /// Most configurations the memo cache may hold.
    pub max_states: u64,
    /// Most bytes the memo cache may hold (approximately).
    pub max_cache_bytes: usize,
    /// Give up after this instant.
    pub deadline: Option<Instant>,
}

/// The result of searching one key's operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    NotLinearizable {
        /// The indices (into the searched slice, ascending) of the
        /// operations invoked before the furthest point the search reached.
        /// The search never looked at the others: with them dropped (or
        /// made optional, as optional operations invoked that late are never
        /// candidates either) it explores the same configurations and fails
        /// the same way.
        relevant: Vec<usize>,
    },
    /// The budget ran out first.
    GaveUp(GiveUpReason),
}

/// One operation as the search sees it: values interned to small ids and
/// the outcome folded into the transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Step {
    /// A read that returned this state.
    Get(u32),
    /// A put of this value (known or unknown outcome).
    Put(u32),
    /// A delete; `Some(b)` if it reported whether the key existed.
    Delete(Option<bool>),
    /// A compare-and-swap; `swapped` is `None` for an unknown outcome.
    Cas { expected: u32, new: u32, swapped: Option<bool> },
}

impl Step {
    /// The state after this step from `state`, or `None` if the step's
    /// outcome is impossible in `state`.
    fn apply(self, state: u32) -> Option<u32> {
        match self {
            Step::Get(observed) => (observed == state).then_some(state),
            Step::Put(value) => Some(value),
            Step::Delete(None) => Some(ABSENT),
            Step::Delete(Some(existed)) => ((state != ABSENT) == existed).then_some(ABSENT),
            Step::Cas { expected, new, swapped: Some(true) } => (state == expected).then_some(new),
            Step::Cas { expected, swapped: Some(false), .. } => (state != expected).then_some(state),
            Step::Cas { expected, new, swapped: None } => Some(if state == expected { new } else { state }),
        }
    }

    /// Whether this step, taken right after an unknown operation left
    /// `state`, can do anything useful: apply with an outcome the state
    /// allows, and for an unknown compare-and-swap, actually swap (one that
    /// does nothing is never worth linearizing).
    fn can_follow(self, state: u32) -> bool {
        match self {
            Step::Cas { expected, swapped: None, .. } => state == expected,
            step => step.apply(state).is_some(),
        }
    }

    /// An observer changes nothing: a read, or a compare-and-swap known to
    /// have failed.
    fn is_observer(self) -> bool {
        matches!(self, Step::Get(_) | Step::Cas { swapped: Some(false), .. })
    }

    /// A blind write is always possible and leaves a state that does not
    /// depend on the state before it.
    fn is_blind(self) -> bool {
        matches!(self, Step::Put(_) | Step::Delete(None))
    }
}

/// Maps values to small state ids.
///
/// Only values some operation can tell apart from others get their own id:
/// those a read returned or a compare-and-swap expected. Every other value
/// behaves the same in every step (no read or expectation matches it, it
/// differs from every expected value, it is present), so all of them share
/// the id `ANONYMOUS`. This merges states the search would otherwise keep
/// apart, such as the many unobserved values of writes that were
/// overwritten before anyone read them.
struct Interner<'a> {
    /// Ids of distinguishable values, from `FIRST_VALUE` on.
    ids: HashMap<&'a [u8], u32>,
}

/// The state id shared by all values no operation tells apart.
const ANONYMOUS: u32 = 1;
/// The first state id of a distinguishable value.
const FIRST_VALUE: u32 = 2;

impl<'a> Interner<'a> {
    /// The interner for `ops`, also exact for any subset of them (where it
    /// may keep apart values no operation tells apart any more).
    fn new(ops: &[&'a Operation]) -> Self {
        let mut ids = HashMap::new();
        for op in ops {
            let distinguished = match (&op.call, &op.outcome) {
                (Call::Get, Outcome::Get(Some(value))) => value,
                (Call::Cas { expected: Some(value), .. }, _) => value,
                _ => continue,
            };
            let next = ids.len() as u32 + FIRST_VALUE;
            ids.entry(&distinguished[..]).or_insert(next);
        }
        Interner { ids }
    }

    fn id(&self, value: Option<&[u8]>) -> u32 {
        match value {
            None => ABSENT,
            Some(value) => self.ids.get(value).copied().unwrap_or(ANONYMOUS),
        }
    }
}

/// Translates an operation into a [`Step`].
fn step_of(op: &Operation, interner: &Interner<'_>) -> Step {
    match (&op.call, &op.outcome) {
        (Call::Get, Outcome::Get(observed)) => Step::Get(interner.id(observed.as_deref())),
        (Call::Put(value), _) => Step::Put(interner.id(Some(value))),
        (Call::Delete, Outcome::Delete { existed }) => Step::Delete(*existed),
        (Call::Delete, _) => Step::Delete(None),
        (Call::Cas { expected, new }, outcome) => Step::Cas {
            expected: interner.id(expected.as_deref()),
            new: interner.id(Some(new)),
            swapped: match outcome {
                Outcome::Cas(swapped) => Some(*swapped),
                _ => None,
            },
        },
        // An unknown read changes nothing and constrains nothing: callers
        // drop it, and if one gets here it must read whatever is there, so
        // it is modelled as a failed CAS from a value that cannot exist.
        (Call::Get, _) => Step::Cas { expected: u32::MAX, new: u32::MAX, swapped: Some(false) },
    }
}

/// How a stack frame's operation was chosen, which says what to do when it
/// is undone.
#[derive(Clone, Copy)]
enum Resume {
    /// It was the only child tried (a forced observer): undoing it means
    /// its parent failed too.
    Forced,
    /// Found walking the known candidates: go on with the next one.
    Known,
    /// Found walking the unknown candidates ranked before this frontier.
    Unknown(u32),
}

/// A stack frame: an operation linearized, the state before it, and where
/// the walk resumes when it is undone.
struct Frame {
    op: u32,
    prev_state: u32,
    resume: Resume,
}

/// Where the search is in its walk over candidates at the current
/// configuration.
#[derive(Clone, Copy)]
enum Cursor {
    /// Walking the known list from this node: calls are candidates, the
    /// first return ends the walk.
    Known(u32),
    /// Walking the unknown list from this node; only calls ranked before
    /// `frontier` (the first pending return) are candidates.
    Unknown { node: u32, frontier: u32 },
}

/// The search over one key's operations.
struct Search {
    steps: Vec<Step>,
    /// Whether operation `i` has a known outcome (so a return event).
    known: Vec<bool>,
    call_node: Vec<u32>,
    /// `NIL` for unknown operations.
    return_node: Vec<u32>,
    /// Doubly linked lists over the nodes (two sentinels, then events).
    /// Invariant: the known list holds the events of the known operations
    /// not linearized, the unknown list the calls of the unknown operations
    /// not linearized, each in time order.
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation of each event node (unused for sentinels).
    node_op: Vec<u32>,
    /// Whether each event node is a return.
    node_is_return: Vec<bool>,
    /// Each operation's bit in [`Linearized`].
    bit: Vec<Bit>,
    /// A random 64-bit value per known operation (0 for unknown ones), for
    /// incremental hashing of the known set.
    zobrist: Vec<u64>,
    /// The previous operation in invocation order with the same step and
    /// the same kind of outcome (known or unknown), or NIL. Two such twins
    /// can trade places in any linearization where the one invoked first
    /// (and, if known, returning first) goes second, so an operation is not
    /// tried while its twin before it is pending (and returns first).
    twin_before: Vec<u32>,

    // The current configuration.
    /// The operations linearized (the ops of `frames`).
    linearized: Linearized,
    /// The xor of `zobrist` over the linearized operations.
    hash: u64,
    /// The register's state after the linearized operations.
    state: u32,
    /// Known operations not linearized yet.
    remaining_known: usize,
    /// The linearized operations, in order.
    frames: Vec<Frame>,
    /// Configurations explored.
    cache: Cache,
    /// The furthest frontier (rank of the first pending return) the search
    /// backtracked from.
    max_frontier: u32,
    /// While walking unknown candidates: the steps of the candidates that
    /// are not blind writes, which alone may follow an unknown operation.
    followers: Vec<Step>,
}

impl Search {
    fn new(ops: &[&Operation], steps: Vec<Step>, initial: u32) -> Self {
        let n = ops.len();
        let known: Vec<bool> = ops.iter().map(|op| !op.is_unknown()).collect();
        // Events in time order; at equal times calls come first, so
        // touching intervals count as concurrent.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * n);
        for (i, op) in ops.iter().enumerate() {
            events.push((op.invoke, false, i as u32));
            if known[i] {
                events.push((op.complete.expect("known outcomes have a completion time"), true, i as u32));
            }
        }
        events.sort_unstable();
        let nodes = FIRST_EVENT as usize + events.len();
        let known_count = known.iter().filter(|&&k| k).count();
        // Known operations numbered by return, unknown ones by call.
        let mut bit = vec![Bit::Unknown(0); n];
        let (mut known_bits, mut unknown_bits) = (0, 0);
        for &(_, is_return, op) in &events {
            if is_return {
                bit[op as usize] = Bit::Known(known_bits);
                known_bits += 1;
            } else if !known[op as usize] {
                bit[op as usize] = Bit::Unknown(unknown_bits);
                unknown_bits += 1;
            }
        }
        let zobrist = bit
            .iter()
            .map(|b| match b {
                Bit::Known(i) => mix64(*i as u64 ^ 0x5851_f42d_4c95_7f2d),
                Bit::Unknown(_) => 0,
            })
            .collect();
        let mut search = Search {
            steps,
            call_node: vec![NIL; n],
            return_node: vec![NIL; n],
            next: vec![NIL; nodes],
            prev: vec![NIL; nodes],
            node_op: vec![NIL; nodes],
            node_is_return: vec![false; nodes],
            bit,
            zobrist,
            twin_before: vec![NIL; n],
            linearized: Linearized::new(known_count, n - known_count),
            hash: 0,
            state: initial,
            remaining_known: known_count,
            frames: Vec::new(),
            cache: Cache::new((n - known_count).div_ceil(64)),
            max_frontier: 0,
            followers: Vec::new(),
            known,
        };
        let mut last_twin: HashMap<(Step, bool), u32> = HashMap::new();
        let mut tails = [KNOWN_HEAD, UNKNOWN_HEAD];
        for (rank, &(_, is_return, op)) in events.iter().enumerate() {
            if !is_return {
                let key = (search.steps[op as usize], search.known[op as usize]);
                search.twin_before[op as usize] = last_twin.insert(key, op).unwrap_or(NIL);
            }
            let node = FIRST_EVENT + rank as u32;
            search.node_op[node as usize] = op;
            search.node_is_return[node as usize] = is_return;
            if is_return {
                search.return_node[op as usize] = node;
            } else {
                search.call_node[op as usize] = node;
            }
            let list = usize::from(!search.known[op as usize]);
            let tail = tails[list];
            search.next[tail as usize] = node;
            search.prev[node as usize] = tail;
            tails[list] = node;
        }
        search
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    /// Undoes `unlink(node)`; must be called in the reverse order of the
    /// unlinks (the node keeps its own pointers while out of the list).
    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    fn rank(node: u32) -> u32 {
        node - FIRST_EVENT
    }

    /// Whether `op`'s twin before it (see `twin_before`) is pending and,
    /// for known operations, returns no later than `op`: then `op` need not
    /// be tried now, as the twin can take its place.
    fn has_twin_before(&self, op: u32) -> bool {
        let twin = self.twin_before[op as usize];
        twin != NIL
            && !self.is_linearized(twin)
            && (!self.known[op as usize] || self.return_node[twin as usize] <= self.return_node[op as usize])
    }

    fn is_linearized(&self, op: u32) -> bool {
        self.linearized.contains(self.bit[op as usize])
    }

    /// Linearizes `op` next, leaving `new_state`, unless that configuration
    /// (or one dominating it) was explored already: then returns false and
    /// changes nothing.
    fn push(
        &mut self,
        op: u32,
        new_state: u32,
        resume: Resume,
        budget: &Budget,
    ) -> Result<bool, GiveUpReason> {
        self.linearized.insert(self.bit[op as usize]);
        let new_hash = self.hash ^ self.zobrist[op as usize];
        if !self.cache.insert(new_hash ^ mix64(u64::from(new_state)), new_state, &self.linearized) {
            self.linearized.remove(self.bit[op as usize]);
            return Ok(false);
        }
        if self.cache.len() as u64 > budget.max_states {
            return Err(GiveUpReason::StateLimit { states: self.cache.len() as u64 });
        }
        if self.cache.len() % 256 == 0 && self.cache.bytes() > budget.max_cache_bytes {
            return Err(GiveUpReason::MemoryLimit { bytes: self.cache.bytes() });
        }
        self.frames.push(Frame { op, prev_state: self.state, resume });
        self.unlink(self.call_node[op as usize]);
        let ret = self.return_node[op as usize];
        if ret != NIL {
            self.unlink(ret);
            self.remaining_known -= 1;
        }
        self.hash = new_hash;
        self.state = new_state;
        Ok(true)
    }

    /// Undoes linearized operations until one whose walk can go on, and
    /// returns where it goes on; `None` if the stack ran out (no
    /// linearization).
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let Frame { op, prev_state, resume } = self.frames.pop()?;
            let ret = self.return_node[op as usize];
            if ret != NIL {
                self.relink(ret);
                self.remaining_known += 1;
            }
            let call = self.call_node[op as usize];
            self.relink(call);
            self.linearized.remove(self.bit[op as usize]);
            self.hash ^= self.zobrist[op as usize];
            self.state = prev_state;
            let after = self.next[call as usize];
            match resume {
                Resume::Forced => continue,
                Resume::Known => return Some(Cursor::Known(after)),
                Resume::Unknown(frontier) => {
                    self.collect_followers(frontier);
                    return Some(Cursor::Unknown { node: after, frontier });
                }
            }
        }
    }

    /// The rank of the first pending return (`u32::MAX` if none).
    fn frontier(&self) -> u32 {
        let mut node = self.next[KNOWN_HEAD as usize];
        while node != NIL && !self.node_is_return[node as usize] {
            node = self.next[node as usize];
        }
        if node == NIL {
            u32::MAX
        } else {
            Self::rank(node)
        }
    }

    /// A candidate that is an observer (a read or a failed compare-and-swap)
    /// whose outcome holds in the current state, if any.
    ///
    /// Linearizing it next loses nothing: it changes no state and every
    /// operation that had to precede it has been linearized, so any
    /// linearization of the rest can be rearranged to start with it. It is
    /// then the only child tried.
    fn forced(&self) -> Option<u32> {
        let mut node = self.next[KNOWN_HEAD as usize];
        while node != NIL && !self.node_is_return[node as usize] {
            let op = self.node_op[node as usize];
            let step = self.steps[op as usize];
            if step.is_observer() && step.apply(self.state).is_some() {
                return Some(op);
            }
            node = self.next[node as usize];
        }
        None
    }

    /// Collects into `followers` the steps of the candidates at the current
    /// configuration (whose first pending return has rank `frontier`) that
    /// are not blind writes.
    fn collect_followers(&mut self, frontier: u32) {
        self.followers.clear();
        let mut node = self.next[KNOWN_HEAD as usize];
        while node != NIL && !self.node_is_return[node as usize] {
            let step = self.steps[self.node_op[node as usize] as usize];
            if !step.is_blind() {
                self.followers.push(step);
            }
            node = self.next[node as usize];
        }
        let mut node = self.next[UNKNOWN_HEAD as usize];
        while node != NIL && Self::rank(node) < frontier {
            let step = self.steps[self.node_op[node as usize] as usize];
            if !step.is_blind() {
                self.followers.push(step);
            }
            node = self.next[node as usize];
        }
    }

    /// Records a failure at the current configuration, whose frontier is
    /// `frontier`, and backtracks. `Err` carries the final result if the
    /// stack ran out.
    fn fail(&mut self, frontier: u32) -> Result<Cursor, Option<u32>> {
        self.max_frontier = self.max_frontier.max(frontier);
        self.backtrack().ok_or(Some(self.max_frontier))
    }

    /// Runs the search. `Ok(None)` if a linearization exists;
    /// `Ok(Some(frontier))` if none does, with the furthest frontier rank
    /// the search backtracked from.
    fn run(&mut self, budget: &Budget) -> Result<Option<u32>, GiveUpReason> {
        if self.remaining_known == 0 {
            return Ok(None);
        }
        // `None`: a configuration just entered, no candidate tried yet.
        let mut cursor: Option<Cursor> = None;
        let mut iterations = 0u64;
        loop {
            iterations += 1;
            if iterations % 1024 == 0 && budget.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(GiveUpReason::TimeLimit);
            }
            let current = match cursor {
                Some(current) => current,
                None => match self.forced() {
                    Some(op) => {
                        if self.push(op, self.state, Resume::Forced, budget)? {
                            if self.remaining_known == 0 {
                                return Ok(None);
                            }
                        } else {
                            match self.fail(self.frontier()) {
                                Ok(next) => cursor = Some(next),
                                Err(result) => return Ok(result),
                            }
                        }
                        continue;
                    }
                    None => Cursor::Known(self.next[KNOWN_HEAD as usize]),
                },
            };
            // The candidate at the cursor, how it was found, and where the
            // walk goes on without it.
            let (node, resume, after) = match current {
                Cursor::Known(node) if node != NIL && !self.node_is_return[node as usize] => {
                    (node, Resume::Known, Cursor::Known(self.next[node as usize]))
                }
                Cursor::Known(node) => {
                    // The first pending return: known candidates are
                    // exhausted, try the unknown ones invoked before it.
                    let frontier = if node == NIL { u32::MAX } else { Self::rank(node) };
                    self.collect_followers(frontier);
                    cursor = Some(Cursor::Unknown { node: self.next[UNKNOWN_HEAD as usize], frontier });
                    continue;
                }
                Cursor::Unknown { node, frontier } if node != NIL && Self::rank(node) < frontier => (
                    node,
                    Resume::Unknown(frontier),
                    Cursor::Unknown { node: self.next[node as usize], frontier },
                ),
                Cursor::Unknown { frontier, .. } => {
                    // Every candidate failed.
                    match self.fail(frontier) {
                        Ok(next) => cursor = Some(next),
                        Err(result) => return Ok(result),
                    }
                    continue;
                }
            };
            cursor = Some(after);
            let op = self.node_op[node as usize];
            let step = self.steps[op as usize];
            if self.has_twin_before(op) {
                continue;
            }
            // An unknown operation immediately followed by a blind write
            // had no visible effect: the same configuration minus that
            // operation is reached by applying the write directly, and it
            // dominates this one (it has one more optional operation left).
            if step.is_blind() && self.frames.last().is_some_and(|top| !self.known[top.op as usize]) {
                continue;
            }
            let Some(new_state) = step.apply(self.state) else { continue };
            // An unknown operation is only worth linearizing now if some
            // candidate could follow it: not a blind write (see above), so
            // one whose outcome depends on the state. Otherwise this is a
            // dead end, skipped without filling the cache.
            if matches!(resume, Resume::Unknown(_))
                && !self.followers.iter().any(|follower| follower.can_follow(new_state))
            {
                continue;
            }
            if self.push(op, new_state, resume, budget)? {
                if self.remaining_known == 0 {
                    return Ok(None);
                }
                cursor = None;
            }
        }
    }
}

/// Searches for a linearization of `ops` (all on one key) from `initial`.
/// Also returns how many configurations it explored.
pub(crate) fn search(ops: &[&Operation], initial: Option<&[u8]>, budget: &Budget) -> (SearchOutcome, u64) {
    let values = Interner::new(ops);
    let initial = values.id(initial);
    let steps = ops.iter().map(|op| step_of(op, &values)).collect();
    let mut search = Search::new(ops, steps, initial);
    let outcome = match search.run(budget) {
        Ok(None) => SearchOutcome::Linearizable,
        Ok(Some(frontier)) => {
            // Every configuration explored had a frontier at most this one
            // (each was backtracked from), and every choice depends only on
            // candidates, all invoked before their configuration's frontier.
            let relevant = (0..ops.len()).filter(|&i| Search::rank(search.call_node[i]) < frontier).collect();
            SearchOutcome::NotLinearizable { relevant }
        }
        Err(reason) => SearchOutcome::GaveUp(reason),
    };
    (outcome, search.cache.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_nobody_tells_apart_share_a_state() {
        let ops = [
            Operation::new(1, "k", Call::Put("a".into()), Outcome::Put, 0, 1),
            Operation::new(1, "k", Call::Put("b".into()), Outcome::Put, 0, 1),
            Operation::new(1, "k", Call::Get, Outcome::Get(Some("c".into())), 0, 1),
            Operation::new(
                1,
                "k",
                Call::Cas { expected: Some("d".into()), new: "e".into() },
                Outcome::Cas(true),
                0,
                1,
            ),
        ];
        let refs: Vec<&Operation> = ops.iter().collect();
        let values = Interner::new(&refs);
        assert_eq!(values.id(Some(b"a")), ANONYMOUS);
        assert_eq!(values.id(Some(b"e")), ANONYMOUS);
        assert!(values.id(Some(b"c")) >= FIRST_VALUE);
        assert!(values.id(Some(b"d")) >= FIRST_VALUE);
        assert_ne!(values.id(Some(b"c")), values.id(Some(b"d")));
        assert_eq!(values.id(None), ABSENT);
    }
}
