//! [`Levels`]: the live table files by level, immutable once built (a new
//! `Levels` is built for every flush and compaction and swapped in with the
//! rest of the LSM state).
//!
//! - Level 0 holds flushed memtables, newest first; their key ranges may
//!   overlap, so a read probes every one whose range covers the key.
//! - Levels 1.. each hold tables sorted by key with disjoint key ranges, so
//!   a read probes at most one table per level (binary search).
//!
//! For any key, versions in a higher level (smaller number) are newer than
//! versions in a lower one, and within level 0 a newer table holds newer
//! versions; so the first source that has a version at or below a read
//! timestamp holds the newest such version.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::TableFile;
use crate::error::{Error, Result};
use crate::key_hints::KeyHints;
use crate::range_del::RangeDelSet;

/// Levels 0..NUM_LEVELS; the last one is the bottom.
pub(crate) const NUM_LEVELS: usize = 7;

#[derive(Clone, Debug)]
pub(crate) struct Levels {
    levels: Vec<Vec<Arc<TableFile>>>,
    /// Per level 1.., hints over its tables' largest keys, so a point
    /// read's search of a level compares 8-byte hints instead of chasing
    /// each table's largest key on the way (entry 0, level 0, is unused).
    hints: Vec<KeyHints>,
    /// Bytes per level, kept with the tables: the commit path reads them
    /// for every group (backpressure).
    bytes: Vec<u64>,
    /// Every table's range tombstones in one fragmented set: readers apply
    /// them without probing tables one by one (range_del.rs).
    range_dels: Arc<RangeDelSet>,
    /// Level-0 probes point reads of these levels made in vain (docs/
    /// compaction.md, "Read-triggered compaction of level 0").
    l0_probes: L0ProbeCharge,
}

/// Bytes of level 0 one vain probe of a level-0 table pays for: once point
/// reads have made `level 0 bytes / L0_BYTES_PER_PROBE` of them (at least
/// [`L0_MIN_PROBES`]), level 0 is compacted into level 1 even below the
/// trigger. A vain probe costs a read 65-80 ns on the reference VM and
/// compacting a byte ~10 ns, so by then reads have spent about a ninth of
/// what rewriting level 0 costs, and would go on paying for as long as the
/// tables stay (docs/compaction.md).
pub(crate) const L0_BYTES_PER_PROBE: u64 = 64;
pub(crate) const L0_MIN_PROBES: u64 = 4096;

/// The vain level-0 probes made against one set of level-0 tables: shared
/// by every `Levels` cloned from one with the same level 0 (a memtable
/// seal, a WAL checkpoint, a compaction of deeper levels), started afresh
/// when level 0 changes (`with_flushed`, `with_changes`). On a line of its
/// own: readers of the other fields on other threads do not see it change
/// under them.
#[derive(Debug, Default, Clone)]
struct L0ProbeCharge(Arc<PaddedCount>);

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCount(AtomicU64);

impl Default for Levels {
    fn default() -> Self {
        Levels {
            levels: vec![Vec::new(); NUM_LEVELS],
            hints: vec![KeyHints::default(); NUM_LEVELS],
            bytes: vec![0; NUM_LEVELS],
            range_dels: Arc::new(RangeDelSet::default()),
            l0_probes: L0ProbeCharge::default(),
        }
    }
}

impl Levels {
    /// Builds levels from `(level, table)` pairs in any order, checking the
    /// invariants a manifest must satisfy (a known level; disjoint ranges in
    /// levels 1..). Level 0 is ordered by file number, newest first: flushes
    /// allocate numbers in order, and compaction never writes to level 0.
    pub fn build(tables: impl IntoIterator<Item = (usize, Arc<TableFile>)>) -> Result<Levels> {
        let mut out = Levels::default();
        for (level, table) in tables {
            let slot = out.levels.get_mut(level).ok_or_else(|| {
                Error::corruption(format!(
                    "table {} is at level {level}; this build has {NUM_LEVELS} levels",
                    table.number()
                ))
            })?;
            slot.push(table);
        }
        out.sort();
        for (n, level) in out.levels.iter().enumerate().skip(1) {
            for pair in level.windows(2) {
                if pair[0].largest() >= pair[1].smallest() {
                    return Err(Error::corruption(format!(
                        "tables {} and {} overlap in level {n}",
                        pair[0].number(),
                        pair[1].number()
                    )));
                }
            }
        }
        Ok(out)
    }

    fn sort(&mut self) {
        if let Some(l0) = self.levels.first_mut() {
            l0.sort_by_key(|t| std::cmp::Reverse(t.number()));
        }
        for level in self.levels.iter_mut().skip(1) {
            level.sort_by(|a, b| a.smallest().cmp(b.smallest()));
        }
        self.bytes = self
            .levels
            .iter()
            .map(|l| l.iter().map(|t| t.file_size()).sum())
            .collect();
        self.hints = self
            .levels
            .iter()
            .enumerate()
            .map(|(n, l)| match n {
                0 => KeyHints::default(),
                _ => KeyHints::new(l.iter().map(|t| t.largest())),
            })
            .collect();
        self.collect_range_dels();
    }

    fn collect_range_dels(&mut self) {
        let sets: Vec<&RangeDelSet> = self
            .levels
            .iter()
            .flatten()
            .map(|t| &**t.range_dels())
            .filter(|s| !s.is_empty())
            .collect();
        self.range_dels = Arc::new(RangeDelSet::union(sets));
    }

    /// The range tombstones of every table.
    pub fn range_dels(&self) -> &Arc<RangeDelSet> {
        &self.range_dels
    }

    pub fn level(&self, n: usize) -> &[Arc<TableFile>] {
        self.levels.get(n).map_or(&[], Vec::as_slice)
    }

    pub fn level_bytes(&self, n: usize) -> u64 {
        self.bytes.get(n).copied().unwrap_or(0)
    }

    pub fn table_count(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        (0..NUM_LEVELS).map(|n| self.level_bytes(n)).sum()
    }

    /// Every table, level 0 newest first, then level 1, 2, … in key order.
    pub fn all(&self) -> impl Iterator<Item = &Arc<TableFile>> {
        self.levels.iter().flatten()
    }

    /// Estimated live bytes: a table counts when nothing older (a deeper
    /// level, or an older level-0 table) overlaps its key range; a table
    /// that overlaps older data is assumed to hold newer copies of keys
    /// counted there. Exact after a full compaction with no snapshots held;
    /// otherwise an estimate.
    pub fn live_bytes_estimate(&self) -> u64 {
        let older_overlaps = |n: usize, i: usize, t: &TableFile| {
            let lo = Some(t.smallest());
            let hi = Some(t.largest());
            let older_l0 = n == 0 && self.level(0).iter().skip(i + 1).any(|o| o.overlaps(lo, hi));
            older_l0
                || self
                    .levels
                    .iter()
                    .skip(n + 1)
                    .any(|l| l.iter().any(|o| o.overlaps(lo, hi)))
        };
        self.levels
            .iter()
            .enumerate()
            .flat_map(|(n, l)| l.iter().enumerate().map(move |(i, t)| (n, i, t)))
            .filter(|(n, i, t)| !older_overlaps(*n, *i, t))
            .map(|(_, _, t)| t.file_size())
            .sum()
    }

    /// The deepest level that holds a table (0 when there are none).
    pub fn deepest_nonempty(&self) -> usize {
        (0..NUM_LEVELS)
            .rev()
            .find(|&n| !self.level(n).is_empty())
            .unwrap_or(0)
    }

    /// The tables that may hold `key`, in the order a read must probe them.
    pub fn candidates<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Arc<TableFile>> {
        self.candidates_by_level(key).map(|(_, t)| t)
    }

    /// [`Levels::candidates`], each with whether it is in level 0.
    pub fn candidates_by_level<'a>(
        &'a self,
        key: &'a [u8],
    ) -> impl Iterator<Item = (bool, &'a Arc<TableFile>)> {
        let l0 = self
            .level(0)
            .iter()
            .filter(move |t| t.contains(key))
            .map(|t| (true, t));
        let rest = self
            .levels
            .iter()
            .zip(&self.hints)
            .skip(1)
            .filter_map(move |(level, hints)| find_in_level(level, hints, key))
            .map(|t| (false, t));
        l0.chain(rest)
    }

    /// How many vain level-0 probes make level 0 due for compaction
    /// ([`L0_BYTES_PER_PROBE`]); `u64::MAX` with level 0 empty.
    fn l0_probe_budget(&self) -> u64 {
        if self.level(0).is_empty() {
            return u64::MAX;
        }
        (self.level_bytes(0) / L0_BYTES_PER_PROBE).max(L0_MIN_PROBES)
    }

    /// Counts `n` level-0 probes a point read made in vain. Stops counting
    /// once level 0 is due, so the shared counter is written only until
    /// then.
    pub fn charge_l0_probes(&self, n: u64) {
        if n > 0 && self.l0_probes.0 .0.load(Ordering::Relaxed) < self.l0_probe_budget() {
            self.l0_probes.0 .0.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Whether point reads have paid for compacting level 0 (below its
    /// trigger) into level 1.
    pub fn l0_due_by_reads(&self) -> bool {
        self.l0_probes.0 .0.load(Ordering::Relaxed) >= self.l0_probe_budget()
    }

    /// Vain level-0 probes counted so far.
    pub fn l0_vain_probes(&self) -> u64 {
        self.l0_probes.0 .0.load(Ordering::Relaxed)
    }

    /// Whether any table in a level deeper than `level` covers `key`.
    pub fn covered_below(&self, level: usize, key: &[u8]) -> bool {
        self.levels
            .iter()
            .zip(&self.hints)
            .skip(level + 1)
            .any(|(l, hints)| find_in_level(l, hints, key).is_some())
    }

    /// Tables of level `n` (n >= 1) whose range meets `[lo, hi]`.
    pub fn overlapping(
        &self,
        n: usize,
        lo: Option<&[u8]>,
        hi: Option<&[u8]>,
    ) -> Vec<Arc<TableFile>> {
        self.level(n)
            .iter()
            .filter(|t| t.overlaps(lo, hi))
            .cloned()
            .collect()
    }

    /// A new `Levels` with `table` as the newest level-0 table.
    pub fn with_flushed(&self, table: Arc<TableFile>) -> Levels {
        let mut next = self.clone();
        if let (Some(l0), Some(bytes)) = (next.levels.first_mut(), next.bytes.first_mut()) {
            *bytes += table.file_size();
            l0.insert(0, table);
        }
        next.l0_probes = L0ProbeCharge::default();
        next.collect_range_dels();
        next
    }

    /// A new `Levels` without the tables numbered in `removed` and with
    /// `added` at their levels.
    pub fn with_changes(&self, removed: &[u64], added: &[(usize, Arc<TableFile>)]) -> Levels {
        let mut next = self.clone();
        for level in &mut next.levels {
            level.retain(|t| !removed.contains(&t.number()));
        }
        for (n, t) in added {
            if let Some(level) = next.levels.get_mut(*n) {
                level.push(t.clone());
            }
        }
        if next.level(0).len() != self.level(0).len() || added.iter().any(|(n, _)| *n == 0) {
            next.l0_probes = L0ProbeCharge::default();
        }
        next.sort();
        next
    }
}

/// The one table of a sorted, disjoint level whose range covers `key`;
/// `hints` are the level's (over its tables' largest keys).
fn find_in_level<'a>(
    level: &'a [Arc<TableFile>],
    hints: &KeyHints,
    key: &[u8],
) -> Option<&'a Arc<TableFile>> {
    let r = hints.narrow(key);
    let idx = match level.get(r.clone()) {
        Some(tied) => r.start + tied.partition_point(|t| t.largest() < key),
        // Hints out of step with the level would be a bug; search it all.
        None => level.partition_point(|t| t.largest() < key),
    };
    level.get(idx).filter(|t| t.smallest() <= key)
}
