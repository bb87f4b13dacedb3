//! The search's memory: which operations a configuration has linearized
//! ([`Linearized`]), and the cache of configurations already explored
//! ([`Cache`]), with Lowe's pruning of configurations another one dominates.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// "No group" in the cache's chains.
const NIL: u32 = u32::MAX;

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// SplitMix64's finalizer: a bijective mix of 64 bits.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The linearized operations of a configuration.
///
/// Known operations are numbered in the order of their returns, so every
/// known operation numbered below the first pending one is linearized: the
/// known set is all ones below word `low`, and only the words from `low` to
/// `high` (the last with a bit set), the span of the operations pending
/// concurrently, need storing. Unknown operations are numbered in the
/// order of their calls.
pub(crate) struct Linearized {
    known: Vec<u64>,
    unknown: Vec<u64>,
    /// Invariant: every word of `known` before `low` is all ones, and word
    /// `low` is not (or `low == known.len()`).
    low: usize,
    /// Invariant: every word of `known` after `high` is zero (`high` may be
    /// below `low`).
    high: usize,
}

impl Linearized {
    pub(crate) fn new(known: usize, unknown: usize) -> Self {
        Linearized {
            known: vec![0; known.div_ceil(64)],
            unknown: vec![0; unknown.div_ceil(64)],
            low: 0,
            high: 0,
        }
    }

    pub(crate) fn contains(&self, bit: Bit) -> bool {
        match bit {
            Bit::Known(i) => self.known[i / 64] & (1 << (i % 64)) != 0,
            Bit::Unknown(i) => self.unknown[i / 64] & (1 << (i % 64)) != 0,
        }
    }

    pub(crate) fn insert(&mut self, bit: Bit) {
        match bit {
            Bit::Known(i) => {
                let w = i / 64;
                self.known[w] |= 1 << (i % 64);
                self.high = self.high.max(w);
                while self.low < self.known.len() && self.known[self.low] == u64::MAX {
                    self.low += 1;
                }
            }
            Bit::Unknown(i) => self.unknown[i / 64] |= 1 << (i % 64),
        }
    }

    pub(crate) fn remove(&mut self, bit: Bit) {
        match bit {
            Bit::Known(i) => {
                let w = i / 64;
                self.known[w] &= !(1 << (i % 64));
                self.low = self.low.min(w);
                while self.high > 0 && self.known[self.high] == 0 {
                    self.high -= 1;
                }
            }
            Bit::Unknown(i) => self.unknown[i / 64] &= !(1 << (i % 64)),
        }
    }

    /// The known words that are not implied by `low`.
    pub(crate) fn known_span(&self) -> &[u64] {
        if self.known.is_empty() || self.high < self.low {
            &[]
        } else {
            &self.known[self.low..=self.high]
        }
    }
}

/// An operation's bit in [`Linearized`].
#[derive(Clone, Copy)]
pub(crate) enum Bit {
    Known(usize),
    Unknown(usize),
}

/// The memo cache of configurations already explored.
///
/// A configuration is (known operations linearized, unknown operations
/// linearized, register state). A configuration is pruned if one with the
/// same known set and state and a *subset* of its unknown operations was
/// explored: that one has at least the same futures, since unknown
/// operations are optional and never block anything.
///
/// Configurations are grouped by (known set, state); the map goes from the
/// hash of that pair to the newest group with that hash (groups with equal
/// hashes are chained), and each group chains the unknown sets seen with
/// it. Sets live in two arenas.
pub(crate) struct Cache {
    /// Words of an unknown set.
    unknown_words: usize,
    /// Hash of (known set, state) to the newest group with that hash.
    heads: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    /// The known spans ([`Linearized::known_span`]) of the groups.
    known_arena: Vec<u64>,
    groups: Vec<Group>,
    /// Entry `e`'s unknown set is `unknown_arena[e * unknown_words..][..unknown_words]`.
    unknown_arena: Vec<u64>,
    /// Each entry's previous entry in the same group (or NIL).
    entries: Vec<u32>,
}

/// The configurations of a [`Cache`] with one known set and state.
struct Group {
    state: u32,
    /// [`Linearized::low`].
    low: u32,
    /// Where the known span starts in the arena, and its length.
    span_start: u32,
    span_len: u32,
    /// The previous group with the same hash, or NIL.
    older: u32,
    /// The newest entry of the group.
    newest: u32,
}

impl Cache {
    pub(crate) fn new(unknown_words: usize) -> Self {
        Cache {
            unknown_words,
            heads: HashMap::default(),
            known_arena: Vec::new(),
            groups: Vec::new(),
            unknown_arena: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Records the configuration; false if it (or one that dominates it)
    /// was already there.
    pub(crate) fn insert(&mut self, hash: u64, state: u32, set: &Linearized) -> bool {
        let span = set.known_span();
        let new_group = self.groups.len() as u32;
        let head = self.heads.entry(hash).or_insert(NIL);
        let mut g = *head;
        while g != NIL {
            let group = &self.groups[g as usize];
            let start = group.span_start as usize;
            if group.state == state
                && group.low as usize == set.low
                && self.known_arena[start..start + group.span_len as usize] == *span
            {
                break;
            }
            g = group.older;
        }
        if g == NIL {
            self.groups.push(Group {
                state,
                low: set.low as u32,
                span_start: self.known_arena.len() as u32,
                span_len: span.len() as u32,
                older: *head,
                newest: NIL,
            });
            *head = new_group;
            self.known_arena.extend_from_slice(span);
            g = new_group;
        } else {
            let mut e = self.groups[g as usize].newest;
            while e != NIL {
                let start = e as usize * self.unknown_words;
                let seen = &self.unknown_arena[start..start + self.unknown_words];
                if seen.iter().zip(&set.unknown).all(|(a, b)| a & !b == 0) {
                    return false;
                }
                e = self.entries[e as usize];
            }
        }
        let group = &mut self.groups[g as usize];
        self.entries.push(group.newest);
        group.newest = self.entries.len() as u32 - 1;
        self.unknown_arena.extend_from_slice(&set.unknown);
        true
    }

    /// Configurations recorded.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Approximate memory held.
    pub(crate) fn bytes(&self) -> usize {
        (self.known_arena.capacity() + self.unknown_arena.capacity()) * 8
            + self.groups.capacity() * std::mem::size_of::<Group>()
            + self.entries.capacity() * 4
            + self.heads.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linearized_keeps_a_canonical_span() {
        let mut set = Linearized::new(200, 3);
        for i in 0..64 {
            set.insert(Bit::Known(i));
        }
        assert_eq!((set.low, set.known_span()), (1, &[][..]));
        set.insert(Bit::Known(130));
        assert_eq!(set.known_span(), &[0, 1 << 2][..]);
        set.remove(Bit::Known(5));
        assert_eq!(set.low, 0);
        assert_eq!(set.known_span().len(), 3);
        set.remove(Bit::Known(130));
        set.insert(Bit::Known(5));
        assert_eq!((set.low, set.known_span()), (1, &[][..]));
        set.insert(Bit::Unknown(2));
        assert!(set.contains(Bit::Unknown(2)) && !set.contains(Bit::Unknown(1)));
    }

    #[test]
    fn cache_prunes_dominated_configurations() {
        let mut cache = Cache::new(1);
        let mut set = Linearized::new(3, 3);
        set.insert(Bit::Known(0));
        set.insert(Bit::Unknown(1));
        assert!(cache.insert(7, 1, &set));
        assert!(!cache.insert(7, 1, &set), "the same configuration");
        set.insert(Bit::Unknown(2));
        assert!(!cache.insert(7, 1, &set), "more optional operations used: dominated");
        assert!(cache.insert(7, 2, &set), "another state");
        set.remove(Bit::Unknown(1));
        assert!(cache.insert(7, 1, &set), "not a superset of {{1}}");
        set.remove(Bit::Unknown(2));
        assert!(cache.insert(7, 1, &set), "the empty set dominates, but is new");
        assert_eq!(cache.len(), 4);
    }
}
