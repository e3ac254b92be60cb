//! Range tombstones (`Database::delete_range`): "every version of every key
//! in `[start, end)` older than `ts` is deleted".
//!
//! A tombstone committed at `T` hides a version at `ts` of a covered key
//! iff `ts < T` and the reader's snapshot is `>= T`; readers older than `T`
//! do not see it (MVCC). Tombstones live in the memtable they were
//! committed to, then in the `rangedel` block of the table that memtable
//! was flushed to (docs/format-table.md), then in compaction outputs,
//! clipped to each output's key range, until compaction proves nothing
//! they cover is left (docs/compaction.md).
//!
//! Readers do not look tombstones up table by table: every table's
//! tombstones and every memtable's are kept as a [`RangeDelSet`], a
//! *fragmented* form (RocksDB's `FragmentedRangeTombstoneList`): the key
//! space cut at every tombstone boundary into disjoint pieces, each with
//! the timestamps of the tombstones covering it, newest first. A lookup is
//! one binary search. Range deletes are rare and compaction drops them, so
//! these sets are small; a database that never deletes a range pays one
//! `is_empty` check per read.

use std::ops::Bound;

use crate::coding::{put_varint, Reader};
use crate::key::{KeyRange, Timestamp};

/// One range tombstone: versions of keys in `[start, end)` older than `ts`
/// are deleted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RangeTombstone {
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub ts: Timestamp,
}

impl RangeTombstone {
    pub fn covers(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && key < self.end.as_slice()
    }

    /// Whether `[start, end)` meets the user-key `range`.
    pub fn overlaps(&self, range: &KeyRange) -> bool {
        let below_end = match &range.0 {
            Bound::Included(l) => l.as_slice() < self.end.as_slice(),
            Bound::Excluded(l) => l.as_slice() < self.end.as_slice(),
            Bound::Unbounded => true,
        };
        let above_start = match &range.1 {
            Bound::Included(u) => u.as_slice() >= self.start.as_slice(),
            Bound::Excluded(u) => u.as_slice() > self.start.as_slice(),
            Bound::Unbounded => true,
        };
        below_end && above_start
    }

    /// The part of this tombstone inside `[lo, hi)` (`None` = unbounded),
    /// or `None` when that part is empty.
    pub fn clipped(&self, lo: Option<&[u8]>, hi: Option<&[u8]>) -> Option<RangeTombstone> {
        let start = match lo {
            Some(lo) if lo > self.start.as_slice() => lo,
            _ => &self.start,
        };
        let end = match hi {
            Some(hi) if hi < self.end.as_slice() => hi,
            _ => &self.end,
        };
        (start < end).then(|| RangeTombstone {
            start: start.to_vec(),
            end: end.to_vec(),
            ts: self.ts,
        })
    }
}

/// One disjoint piece of the key space and the timestamps of the
/// tombstones covering it, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fragment {
    start: Vec<u8>,
    end: Vec<u8>,
    stamps: Vec<Timestamp>,
}

/// An immutable, fragmented set of tombstones; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeDelSet {
    /// The tombstones as given (for flushing, conflict checks, stats).
    tombstones: Vec<RangeTombstone>,
    /// Sorted by `start`, disjoint.
    fragments: Vec<Fragment>,
}

impl RangeDelSet {
    pub fn new(mut tombstones: Vec<RangeTombstone>) -> RangeDelSet {
        tombstones.retain(|t| t.start < t.end);
        tombstones.sort();
        tombstones.dedup();
        let fragments = fragment(&tombstones);
        RangeDelSet {
            tombstones,
            fragments,
        }
    }

    /// The union of several sets.
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a RangeDelSet>) -> RangeDelSet {
        let all: Vec<RangeTombstone> = sets
            .into_iter()
            .flat_map(|s| s.tombstones.iter().cloned())
            .collect();
        RangeDelSet::new(all)
    }

    pub fn is_empty(&self) -> bool {
        self.tombstones.is_empty()
    }

    pub fn tombstones(&self) -> &[RangeTombstone] {
        &self.tombstones
    }

    fn fragment_for(&self, key: &[u8]) -> Option<&Fragment> {
        let idx = self
            .fragments
            .partition_point(|f| f.start.as_slice() <= key);
        let f = self.fragments.get(idx.checked_sub(1)?)?;
        (key < f.end.as_slice()).then_some(f)
    }

    /// The newest tombstone covering `key` that a reader at `snapshot`
    /// sees (timestamp `<= snapshot`).
    pub fn max_covering(&self, key: &[u8], snapshot: Timestamp) -> Option<Timestamp> {
        if self.is_empty() {
            return None;
        }
        let f = self.fragment_for(key)?;
        f.stamps.iter().copied().find(|&t| t <= snapshot)
    }

    /// The oldest tombstone covering `key` newer than `ts`: the first
    /// commit that hides a version of `key` at `ts`.
    pub fn min_covering_above(&self, key: &[u8], ts: Timestamp) -> Option<Timestamp> {
        if self.is_empty() {
            return None;
        }
        let f = self.fragment_for(key)?;
        f.stamps.iter().rev().copied().find(|&t| t > ts)
    }

    /// The piece of the key space around `key` that the newest tombstone a
    /// reader at `snapshot` sees covers uniformly: `(start, end, ts)`.
    pub fn covering_piece(
        &self,
        key: &[u8],
        snapshot: Timestamp,
    ) -> Option<(&[u8], &[u8], Timestamp)> {
        if self.is_empty() {
            return None;
        }
        let f = self.fragment_for(key)?;
        let ts = f.stamps.iter().copied().find(|&t| t <= snapshot)?;
        Some((&f.start, &f.end, ts))
    }

    /// Whether a tombstone newer than `since` covers `key`.
    pub fn covers_newer(&self, key: &[u8], since: Timestamp) -> bool {
        self.max_covering(key, Timestamp::MAX)
            .is_some_and(|t| t > since)
    }

    /// Whether a tombstone newer than `since` meets `range`.
    pub fn any_newer_overlapping(&self, range: &KeyRange, since: Timestamp) -> bool {
        self.tombstones
            .iter()
            .any(|t| t.ts > since && t.overlaps(range))
    }
}

/// Cuts the key space at every boundary and lists the covering stamps of
/// each piece (a sweep over the boundaries; tombstones are sorted by
/// start).
fn fragment(tombstones: &[RangeTombstone]) -> Vec<Fragment> {
    let mut bounds: Vec<&[u8]> = tombstones
        .iter()
        .flat_map(|t| [t.start.as_slice(), t.end.as_slice()])
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut out: Vec<Fragment> = Vec::new();
    let mut active: Vec<&RangeTombstone> = Vec::new();
    let mut next = 0;
    for pair in bounds.windows(2) {
        let (lo, hi) = (pair[0], pair[1]);
        active.retain(|t| t.end.as_slice() > lo);
        while let Some(t) = tombstones.get(next).filter(|t| t.start.as_slice() <= lo) {
            active.push(t);
            next += 1;
        }
        if active.is_empty() {
            continue;
        }
        let mut stamps: Vec<Timestamp> = active.iter().map(|t| t.ts).collect();
        stamps.sort_unstable_by(|a, b| b.cmp(a));
        stamps.dedup();
        out.push(Fragment {
            start: lo.to_vec(),
            end: hi.to_vec(),
            stamps,
        });
    }
    out
}

/// Widens a table's key range and timestamps to cover its tombstones, so
/// that compaction picks every table a tombstone may affect and the
/// manifest's max timestamp accounts for it. The exclusive end `k ++ 00`
/// (how compaction clips a tombstone just past an output's last key `k`)
/// counts as its predecessor `k`, exactly; any other exclusive end stands
/// in as an inclusive bound: one key too wide, never too narrow.
pub(crate) fn widen_summary(
    summary: &mut crate::sstable::TableSummary,
    tombstones: &[RangeTombstone],
) {
    for (i, t) in tombstones.iter().enumerate() {
        let first = summary.entries == 0 && i == 0;
        if first || t.start < summary.smallest {
            summary.smallest = t.start.clone();
        }
        let last = match t.end.split_last() {
            Some((0, before)) => before,
            _ => t.end.as_slice(),
        };
        if first || last > summary.largest.as_slice() {
            summary.largest = last.to_vec();
        }
        if first || t.ts < summary.min_ts {
            summary.min_ts = t.ts;
        }
        if first || t.ts > summary.max_ts {
            summary.max_ts = t.ts;
        }
    }
}

/// Encodes tombstones as the contents of a table's `rangedel` block:
/// `count u32 LE`, then per tombstone `start_len varint | start | end_len
/// varint | end | ts u64 LE` (docs/format-table.md).
pub(crate) fn encode_block(tombstones: &[RangeTombstone], out: &mut Vec<u8>) {
    out.extend_from_slice(&(tombstones.len() as u32).to_le_bytes());
    for t in tombstones {
        put_varint(out, t.start.len() as u64);
        out.extend_from_slice(&t.start);
        put_varint(out, t.end.len() as u64);
        out.extend_from_slice(&t.end);
        out.extend_from_slice(&t.ts.to_le_bytes());
    }
}

/// Decodes a `rangedel` block; every tombstone must be non-empty and have a
/// commit timestamp.
pub(crate) fn decode_block(bytes: &[u8]) -> Result<Vec<RangeTombstone>, String> {
    let mut r = Reader::new(bytes);
    let count = r.u32_le().ok_or("rangedel block too short")?;
    let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 11));
    for i in 0..count {
        let bad = || format!("rangedel entry {i} is malformed");
        let start = r.length_prefixed().ok_or_else(bad)?;
        let end = r.length_prefixed().ok_or_else(bad)?;
        let ts = r.u64_le().ok_or_else(bad)?;
        if start.is_empty() || start >= end || ts == 0 {
            return Err(bad());
        }
        out.push(RangeTombstone {
            start: start.to_vec(),
            end: end.to_vec(),
            ts,
        });
    }
    if !r.is_empty() {
        return Err("rangedel block has trailing bytes".into());
    }
    Ok(out)
}

/// The tombstones a reader at one snapshot must apply: the sets of the
/// memtables and the levels of one `LsmState`, only the non-empty ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct RangeDelView {
    sets: Vec<std::sync::Arc<RangeDelSet>>,
    snapshot: Timestamp,
}

impl RangeDelView {
    pub fn new(
        sets: impl IntoIterator<Item = std::sync::Arc<RangeDelSet>>,
        snapshot: Timestamp,
    ) -> Self {
        RangeDelView {
            sets: sets.into_iter().filter(|s| !s.is_empty()).collect(),
            snapshot,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// The newest tombstone over `key` this reader sees, with the piece of
    /// the key space it covers uniformly (`start..end`): every version in
    /// that piece older than the timestamp is hidden.
    pub fn covering_piece(&self, key: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Timestamp)> {
        self.sets
            .iter()
            .filter_map(|s| s.covering_piece(key, self.snapshot))
            .max_by_key(|(_, _, t)| *t)
            .map(|(s, e, t)| (s.to_vec(), e.to_vec(), t))
    }

    /// Whether a version of `key` at `ts` is deleted by a tombstone this
    /// reader sees.
    pub fn hides(&self, key: &[u8], ts: Timestamp) -> bool {
        self.sets
            .iter()
            .any(|s| s.max_covering(key, self.snapshot).is_some_and(|t| t > ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str, e: &str, ts: Timestamp) -> RangeTombstone {
        RangeTombstone {
            start: s.into(),
            end: e.into(),
            ts,
        }
    }

    #[test]
    fn fragments_answer_like_the_raw_list() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..500 {
            let raw: Vec<RangeTombstone> = (0..next(6))
                .map(|_| {
                    let a = next(10) as u8;
                    let b = next(10) as u8;
                    RangeTombstone {
                        start: vec![b'a' + a.min(b)],
                        end: vec![b'a' + a.max(b)],
                        ts: 1 + next(20),
                    }
                })
                .collect();
            let set = RangeDelSet::new(raw.clone());
            for k in 0..12u8 {
                let key = [b'a' + k];
                for at in 0..22 {
                    let want = raw
                        .iter()
                        .filter(|t| t.covers(&key) && t.ts <= at)
                        .map(|t| t.ts)
                        .max();
                    assert_eq!(set.max_covering(&key, at), want, "{raw:?} {key:?}@{at}");
                    let want = raw
                        .iter()
                        .filter(|t| t.covers(&key) && t.ts > at)
                        .map(|t| t.ts)
                        .min();
                    assert_eq!(set.min_covering_above(&key, at), want);
                }
            }
        }
    }

    #[test]
    fn block_round_trip_and_damage() {
        let list = vec![t("a", "c", 3), t("b", "z", 9)];
        let mut buf = Vec::new();
        encode_block(&list, &mut buf);
        assert_eq!(decode_block(&buf).unwrap(), list);
        for cut in 0..buf.len() {
            assert!(decode_block(&buf[..cut]).is_err(), "cut {cut}");
        }
        let mut empty_range = Vec::new();
        encode_block(&[t("b", "b", 1)], &mut empty_range);
        assert!(decode_block(&empty_range).is_err());
    }

    #[test]
    fn clipping_and_overlap() {
        let x = t("b", "f", 4);
        assert_eq!(x.clipped(Some(b"c"), None), Some(t("c", "f", 4)));
        assert_eq!(x.clipped(None, Some(b"d")), Some(t("b", "d", 4)));
        assert_eq!(x.clipped(Some(b"f"), None), None);
        let r = |l: Bound<&str>, u: Bound<&str>| -> KeyRange {
            let o = |b: Bound<&str>| match b {
                Bound::Included(k) => Bound::Included(k.as_bytes().to_vec()),
                Bound::Excluded(k) => Bound::Excluded(k.as_bytes().to_vec()),
                Bound::Unbounded => Bound::Unbounded,
            };
            (o(l), o(u))
        };
        assert!(x.overlaps(&r(Bound::Included("a"), Bound::Included("b"))));
        assert!(!x.overlaps(&r(Bound::Included("a"), Bound::Excluded("b"))));
        assert!(!x.overlaps(&r(Bound::Included("f"), Bound::Unbounded)));
        assert!(x.overlaps(&r(Bound::Excluded("e"), Bound::Unbounded)));
    }
}
