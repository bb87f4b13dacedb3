//! Key ranges with etcd's conventions: a single key, `[start, end)`, every
//! key from `start` on, or a prefix (the range up to the prefix's
//! successor).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::kv::{ApiError, MAX_KEY};

/// Which keys a range covers, as etcd's `key` / `range_end` pair:
/// - `end` empty: the single key `start`;
/// - `end` = `[0]`: every key at or after `start` (with `start` = `[0]`
///   too: every key);
/// - otherwise: keys in `[start, end)`; none if `end <= start`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// The first key.
    pub start: Bytes,
    /// The end, as above.
    pub end: Bytes,
}

impl KeyRange {
    /// The single key `key`.
    pub fn key(key: impl Into<Bytes>) -> KeyRange {
        KeyRange { start: key.into(), end: Bytes::new() }
    }

    /// Every key starting with `prefix` (every key for an empty prefix).
    pub fn prefix(prefix: impl Into<Bytes>) -> KeyRange {
        let start: Bytes = prefix.into();
        let end = prefix_end(&start);
        KeyRange { start, end }
    }

    /// Whether it covers one key only.
    pub fn is_single(&self) -> bool {
        self.end.is_empty()
    }

    /// Whether it runs to the last key.
    fn is_open(&self) -> bool {
        self.end.as_ref() == [0]
    }

    /// Where a scan starts: `[0]` as a start of an open range means the
    /// very first key.
    pub fn scan_start(&self) -> &[u8] {
        if self.is_open() && self.start.as_ref() == [0] {
            &[]
        } else {
            &self.start
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        if self.is_single() {
            return key == self.start.as_ref();
        }
        key >= self.scan_start() && (self.is_open() || key < self.end.as_ref())
    }

    /// Whether, scanning in key order, `key` and everything after it are
    /// past the range.
    pub fn is_past(&self, key: &[u8]) -> bool {
        if self.is_single() {
            return key > self.start.as_ref();
        }
        !self.is_open() && key >= self.end.as_ref()
    }

    /// Whether two ranges share a key (conservatively: open-ended and
    /// single-key cases exactly, `[a, b)` ranges by their bounds).
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_single() {
            return other.contains(&self.start);
        }
        if other.is_single() {
            return self.contains(&other.start);
        }
        let (a0, b0) = (self.scan_start(), other.scan_start());
        let before = |end: &Bytes, open: bool, start: &[u8]| !open && end.as_ref() <= start;
        !(before(&self.end, self.is_open(), b0) || before(&other.end, other.is_open(), a0))
    }

    /// Refuses keys over the size limit.
    pub fn check(&self) -> Result<(), ApiError> {
        for k in [&self.start, &self.end] {
            if k.len() > MAX_KEY {
                return Err(ApiError::KeyTooLarge { size: k.len(), max: MAX_KEY });
            }
        }
        Ok(())
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with
/// its last byte below 0xff incremented and what follows dropped; `[0]`
/// (to the last key) if there is none (an empty prefix, or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(&[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: &str, end: &[u8]) -> KeyRange {
        KeyRange { start: Bytes::copy_from_slice(start.as_bytes()), end: Bytes::copy_from_slice(end) }
    }

    #[test]
    fn single_keys_half_open_ranges_open_ranges_and_prefixes() {
        let single = KeyRange::key("b");
        assert!(single.contains(b"b") && !single.contains(b"ba") && !single.contains(b"a"));
        let half = r("b", b"d");
        assert!(half.contains(b"b") && half.contains(b"czz") && !half.contains(b"d") && !half.contains(b"a"));
        assert!(half.is_past(b"d") && !half.is_past(b"c"));
        let from = r("b", &[0]);
        assert!(from.contains(b"zzz") && !from.contains(b"a") && !from.is_past(b"\xff\xff"));
        let all = KeyRange { start: Bytes::from_static(&[0]), end: Bytes::from_static(&[0]) };
        assert!(all.contains(b"") && all.contains(b"a") && all.scan_start().is_empty());
        let p = KeyRange::prefix("ab");
        assert_eq!(p.end.as_ref(), b"ac");
        assert!(p.contains(b"ab") && p.contains(b"ab\xff") && !p.contains(b"ac") && !p.contains(b"aa"));
        assert_eq!(prefix_end(b"a\xff").as_ref(), b"b");
        assert_eq!(prefix_end(b"\xff\xff").as_ref(), [0]);
        assert_eq!(prefix_end(b"").as_ref(), [0]);
        let empty = r("d", b"b");
        assert!(!empty.contains(b"c") && !empty.contains(b"d"));
    }

    #[test]
    fn overlaps() {
        assert!(r("a", b"c").overlaps(&KeyRange::key("b")));
        assert!(!r("a", b"c").overlaps(&KeyRange::key("c")));
        assert!(r("a", b"c").overlaps(&r("b", b"d")));
        assert!(!r("a", b"c").overlaps(&r("c", b"d")));
        assert!(r("a", b"c").overlaps(&r("b", &[0])));
        assert!(!r("d", &[0]).overlaps(&r("a", b"d")));
        assert!(KeyRange::prefix("").overlaps(&KeyRange::key("x")));
    }
}
