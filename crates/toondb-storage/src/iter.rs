//! Range scans. A scan holds one consistent `LsmState` and a snapshot
//! timestamp, and produces entries in batches. Each batch re-positions a
//! cursor per source (memtables and tables) just past the last key it
//! returned and merges them, so no cursor has to outlive a call: this keeps
//! the skiplist borrows inside one function and costs one seek per source
//! per batch.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use crate::engine::{Engine, LsmState};
use crate::error::{Error, Result};
use crate::key::{Timestamp, ValueKind};
use crate::lsm::{TableFile, NUM_LEVELS};
use crate::memtable::MemKey;
use crate::merge::{Cursor, LevelCursor, MergeIter};
use crate::sstable::{Readahead, TableIter};

/// Which keys a scan visits, in which direction, and how many.
/// `#[non_exhaustive]`: build with `ScanOptions::default()`, `prefix`,
/// `range` and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOptions {
    pub lower: Bound<Vec<u8>>,
    pub upper: Bound<Vec<u8>>,
    pub reverse: bool,
    pub limit: Option<usize>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            reverse: false,
            limit: None,
        }
    }
}

impl ScanOptions {
    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        ScanOptions {
            lower: Bound::Included(prefix.to_vec()),
            upper: prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded),
            ..ScanOptions::default()
        }
    }

    /// The keys in `range`, e.g. `ScanOptions::range(&b"a"[..]..&b"c"[..])`.
    pub fn range<'a>(range: impl std::ops::RangeBounds<&'a [u8]>) -> Self {
        let owned = |b: Bound<&&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        ScanOptions {
            lower: owned(range.start_bound()),
            upper: owned(range.end_bound()),
            ..ScanOptions::default()
        }
    }

    /// Sets the lower bound.
    pub fn lower(mut self, lower: Bound<Vec<u8>>) -> Self {
        self.lower = lower;
        self
    }

    /// Sets the upper bound.
    pub fn upper(mut self, upper: Bound<Vec<u8>>) -> Self {
        self.upper = upper;
        self
    }

    /// Narrows the bounds to keys starting with `prefix` as well: the scan
    /// visits the intersection of its range and the prefix's. Every
    /// binding's `prefix` combined with `gt`/`gte`/`lt`/`lte` goes through
    /// here.
    pub fn within_prefix(mut self, prefix: &[u8]) -> Self {
        let p = ScanOptions::prefix(prefix);
        self.lower = tighter(self.lower, p.lower, true);
        self.upper = tighter(self.upper, p.upper, false);
        self
    }

    /// The same scan repositioned at `key` (a seek): forward, it starts at
    /// the first key >= `key`; in reverse, at the last key <= `key`; never
    /// outside the original bounds.
    pub fn starting_at(mut self, key: &[u8]) -> Self {
        if self.reverse {
            self.upper = tighter(self.upper, Bound::Included(key.to_vec()), false);
        } else {
            self.lower = tighter(self.lower, Bound::Included(key.to_vec()), true);
        }
        self
    }

    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One side of a scan from a binding's inclusive and exclusive bound
/// (`gte`/`gt`, or `lte`/`lt`): at most one may be given.
pub fn scan_bound(
    inclusive: Option<Vec<u8>>,
    exclusive: Option<Vec<u8>>,
) -> Result<Bound<Vec<u8>>> {
    match (inclusive, exclusive) {
        (Some(_), Some(_)) => Err(Error::invalid_argument(
            "give at most one of gt/gte (or lt/lte)",
        )),
        (Some(k), None) => Ok(Bound::Included(k)),
        (None, Some(k)) => Ok(Bound::Excluded(k)),
        (None, None) => Ok(Bound::Unbounded),
    }
}

/// The tighter of two bounds on the same side (`lower` says which side).
fn tighter(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>, lower: bool) -> Bound<Vec<u8>> {
    let key = |x: &Bound<Vec<u8>>| match x {
        Bound::Included(k) | Bound::Excluded(k) => Some(k.clone()),
        Bound::Unbounded => None,
    };
    match (key(&a), key(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(ka), Some(kb)) => {
            let a_wins = if lower { ka > kb } else { ka < kb };
            if a_wins || (ka == kb && matches!(a, Bound::Excluded(_))) {
                a
            } else {
                b
            }
        }
    }
}

/// The smallest key greater than every key starting with `prefix`, or
/// `None` when there is none (the prefix is empty or all 0xff bytes).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A scan in progress; see the module docs.
pub struct Scan {
    engine: Arc<Engine>,
    /// The tables and memtables the scan reads; dropped once the scan is
    /// finished, so a finished scan kept for a later `restarted` (an
    /// ended iterator that may still seek) pins only its timestamp, not
    /// table files compaction has replaced nor memtables flushed since.
    state: Option<Arc<LsmState>>,
    snapshot: Timestamp,
    options: ScanOptions,
    /// The last user key already consumed; the next batch starts after it.
    resume: Option<Vec<u8>>,
    /// Set after stepping over the reserved (table) key range: the next
    /// batch starts here instead of after `resume`.
    jump: Option<Bound<Vec<u8>>>,
    /// Plain scans skip the reserved key range (columnar tables).
    hide_reserved: bool,
    /// Reads ahead of the table iterators of every batch, within bounds.
    readahead: Readahead,
    returned: usize,
    done: bool,
    /// The range tombstones this scan applies (empty almost always).
    range_dels: crate::range_del::RangeDelView,
    /// The covered piece the scan is in (see `skip_covered_piece`).
    piece: Option<CoveredPiece>,
}

/// A piece of the key space that one range tombstone covers uniformly,
/// and the keys in it that have versions newer than the tombstone (`None`:
/// too many to list; the piece is then read key by key).
struct CoveredPiece {
    start: Vec<u8>,
    end: Vec<u8>,
    survivors: Option<Vec<Vec<u8>>>,
}

/// Survivors listed per covered piece before the scan gives up skipping.
const MAX_PIECE_SURVIVORS: usize = 4096;

impl Scan {
    /// `snapshot` must already be registered in the engine's live-snapshot
    /// list for this scan (`engine.snapshots.acquire`); the scan releases
    /// that registration when dropped, so compaction keeps every version
    /// the scan may still read for as long as it lives, even after the
    /// snapshot or transaction it came from is gone.
    pub(crate) fn new(
        engine: Arc<Engine>,
        state: Arc<LsmState>,
        snapshot: Timestamp,
        options: ScanOptions,
    ) -> Self {
        let range_dels = state.range_del_view(snapshot);
        let readahead = Readahead::new(options.lower.clone(), options.upper.clone());
        Scan {
            range_dels,
            piece: None,
            engine,
            state: Some(state),
            snapshot,
            options,
            resume: None,
            jump: None,
            hide_reserved: false,
            readahead,
            returned: 0,
            done: false,
        }
    }

    /// Makes this scan skip the reserved key range that holds columnar
    /// tables (`columnar::RESERVED_PREFIX`): what plain iterators use.
    pub(crate) fn hiding_reserved(mut self) -> Self {
        self.hide_reserved = true;
        self
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// A new scan with `options` reading the same data as this one: the
    /// same tables and memtables at the same timestamp (once this scan is
    /// finished, the current ones at that timestamp), whatever was written
    /// or compacted since (an iterator's `seek` without a snapshot object
    /// of its own). Fails once the database is closed.
    pub fn restarted(&self, options: ScanOptions) -> Result<Scan> {
        if self.engine.is_closed() {
            return Err(Error::closed());
        }
        // This scan's own registration keeps `snapshot` live until the new
        // one has registered too.
        let snapshot = self.engine.snapshots.acquire(|| self.snapshot);
        // A finished scan let its state go: any later state holds every
        // version at or below the registered timestamp (compaction keeps
        // what a registered reader needs), as a snapshot's scans rely on.
        let state = match &self.state {
            Some(state) => state.clone(),
            None => self.engine.state(),
        };
        let mut scan = Scan::new(self.engine.clone(), state, snapshot, options);
        scan.hide_reserved = self.hide_reserved;
        Ok(scan)
    }

    /// Up to `max_entries` visible (key, value) pairs, stopping early once
    /// `max_bytes` of keys and values are collected. An empty result means
    /// the scan is finished.
    pub fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.next_batch_into(max_entries, max_bytes, &mut out)?;
        Ok(out)
    }

    /// [`Scan::next_batch`] delivering into `sink`; returns how many entries
    /// it delivered (0: the scan is finished). The key and value of each
    /// entry pass through two buffers reused for the whole batch, so a
    /// packed sink costs no allocation per entry.
    pub fn next_batch_into(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        sink: &mut dyn EntrySink,
    ) -> Result<usize> {
        if self.engine.is_closed() {
            return Err(Error::closed());
        }
        if self.done {
            return Ok(0);
        }
        let (max_entries, max_bytes) = (max_entries.max(1), max_bytes.max(1));
        let state = match &self.state {
            Some(state) => state.clone(),
            None => self.engine.state(),
        };
        let result = self.fill_batch(&state, max_entries, max_bytes, sink);
        if self.done {
            self.state = None;
            self.piece = None;
        }
        result
    }

    fn fill_batch(
        &mut self,
        state: &Arc<LsmState>,
        max_entries: usize,
        max_bytes: usize,
        sink: &mut dyn EntrySink,
    ) -> Result<usize> {
        let mut delivered = 0usize;
        let mut bytes = 0usize;
        let mut key = Vec::new();
        let mut value = Vec::new();
        loop {
            let mut merged = self.open_merge(state)?;
            // The last key this pass consumed (delivered or found hidden).
            let mut last: Option<Vec<u8>> = None;
            let mut jumped = false;
            while delivered < max_entries && bytes < max_bytes {
                if self.options.limit.is_some_and(|l| self.returned >= l) {
                    self.done = true;
                    break;
                }
                match merged.current() {
                    Some(v) => {
                        key.clear();
                        key.extend_from_slice(v.key);
                    }
                    None => {
                        self.done = true;
                        break;
                    }
                }
                if self.past_end(&key) {
                    self.done = true;
                    break;
                }
                if self.hide_reserved && crate::columnar::is_reserved(&key) {
                    // Step over the whole reserved range with one re-seek.
                    self.jump = Some(crate::columnar::reserved_exit(self.options.reverse));
                    self.resume = None;
                    jumped = true;
                    break;
                }
                if let Some(exit) = self.skip_covered_piece(state, &key)? {
                    // Step over a range-deleted piece with one re-seek.
                    self.jump = Some(exit);
                    self.resume = None;
                    jumped = true;
                    break;
                }
                if self.consume_group(&mut merged, &key, &mut value)? {
                    bytes += key.len() + value.len();
                    sink.push(&key, &value);
                    delivered += 1;
                    self.returned += 1;
                }
                // Keep the consumed key; its buffer becomes next key's.
                let spare = last.replace(std::mem::take(&mut key));
                key = spare.unwrap_or_default();
            }
            if !jumped {
                if last.is_some() {
                    self.resume = last;
                    self.jump = None;
                }
                return Ok(delivered);
            }
            if self.done || delivered >= max_entries || bytes >= max_bytes {
                return Ok(delivered);
            }
        }
    }

    /// Consumes every version of `key` and reports whether one is visible
    /// at the snapshot, leaving its value in `value`.
    fn consume_group(
        &self,
        merged: &mut MergeIter<'_>,
        key: &[u8],
        value: &mut Vec<u8>,
    ) -> Result<bool> {
        let reverse = self.options.reverse;
        let mut chosen: Option<(Timestamp, ValueKind)> = None;
        while let Some(v) = merged.current() {
            if v.key != key {
                break;
            }
            // Forward, versions come newest first, so the first visible one
            // wins; in reverse they come oldest first, so the last one does.
            if v.ts <= self.snapshot && (reverse || chosen.is_none()) {
                chosen = Some((v.ts, v.kind));
                if v.kind == ValueKind::Put {
                    value.clear();
                    value.extend_from_slice(v.value);
                }
            }
            merged.advance()?;
        }
        Ok(match chosen {
            Some((ts, ValueKind::Put)) => {
                self.range_dels.is_empty() || !self.range_dels.hides(key, ts)
            }
            _ => false,
        })
    }

    /// Where to resume when `key` lies in a piece of the key space that a
    /// range tombstone this scan sees covers: every version there older
    /// than the tombstone is hidden, so the scan jumps to the next key in
    /// the piece that has a newer version (listed once per piece), or past
    /// the piece, instead of reading every covered version. A cleared range
    /// thus reads in time independent of its size, before compaction
    /// reclaims it. `None`: read `key` as usual.
    fn skip_covered_piece(
        &mut self,
        state: &LsmState,
        key: &[u8],
    ) -> Result<Option<Bound<Vec<u8>>>> {
        if self.range_dels.is_empty() {
            return Ok(None);
        }
        let inside = |p: &CoveredPiece| p.start.as_slice() <= key && key < p.end.as_slice();
        if !self.piece.as_ref().is_some_and(inside) {
            let Some((start, end, ts)) = self.range_dels.covering_piece(key) else {
                self.piece = None;
                return Ok(None);
            };
            let range = (Bound::Included(start.clone()), Bound::Excluded(end.clone()));
            let survivors = state.keys_with_newer_versions(&range, ts - 1, MAX_PIECE_SURVIVORS)?;
            self.piece = Some(CoveredPiece {
                start,
                end,
                survivors,
            });
        }
        let Some(piece) = &self.piece else {
            return Ok(None);
        };
        let Some(survivors) = &piece.survivors else {
            return Ok(None);
        };
        let at = survivors.partition_point(|s| s.as_slice() < key);
        if survivors.get(at).is_some_and(|s| s.as_slice() == key) {
            return Ok(None);
        }
        Ok(Some(if self.options.reverse {
            match at.checked_sub(1).and_then(|i| survivors.get(i)) {
                Some(prev) => Bound::Included(prev.clone()),
                None => Bound::Excluded(piece.start.clone()),
            }
        } else {
            match survivors.get(at) {
                Some(next) => Bound::Included(next.clone()),
                None => Bound::Included(piece.end.clone()),
            }
        }))
    }

    fn past_end(&self, key: &[u8]) -> bool {
        if self.options.reverse {
            match &self.options.lower {
                Bound::Included(l) => key < l.as_slice(),
                Bound::Excluded(l) => key <= l.as_slice(),
                Bound::Unbounded => false,
            }
        } else {
            match &self.options.upper {
                Bound::Included(u) => key > u.as_slice(),
                Bound::Excluded(u) => key >= u.as_slice(),
                Bound::Unbounded => false,
            }
        }
    }

    /// Where this batch starts: just past the last consumed key, or at the
    /// scan's own starting bound.
    fn start_bound(&self) -> Bound<&[u8]> {
        match &self.jump {
            Some(Bound::Included(k)) => return Bound::Included(k),
            Some(Bound::Excluded(k)) => return Bound::Excluded(k),
            _ => {}
        }
        if let Some(k) = &self.resume {
            return Bound::Excluded(k);
        }
        let b = if self.options.reverse {
            &self.options.upper
        } else {
            &self.options.lower
        };
        match b {
            Bound::Included(k) => Bound::Included(k),
            Bound::Excluded(k) => Bound::Excluded(k),
            Bound::Unbounded => Bound::Unbounded,
        }
    }

    fn open_merge<'s>(&self, state: &'s LsmState) -> Result<MergeIter<'s>> {
        let reverse = self.options.reverse;
        let start = self.start_bound();
        // Timestamps are >= 1, so (k, u64::MAX) sorts before every version of
        // k and (k, 0) after every version of k.
        let (lower, upper) = match (reverse, start) {
            (_, Bound::Unbounded) => (Bound::Unbounded, Bound::Unbounded),
            (false, Bound::Included(k)) => {
                (Bound::Included(MemKey::new(k, u64::MAX)), Bound::Unbounded)
            }
            (false, Bound::Excluded(k)) => (Bound::Excluded(MemKey::new(k, 0)), Bound::Unbounded),
            (true, Bound::Included(k)) => (Bound::Unbounded, Bound::Included(MemKey::new(k, 0))),
            (true, Bound::Excluded(k)) => {
                (Bound::Unbounded, Bound::Excluded(MemKey::new(k, u64::MAX)))
            }
        };
        let levels = &state.levels;
        let mut cursors =
            Vec::with_capacity(1 + state.imms.len() + levels.level(0).len() + NUM_LEVELS);
        for mem in std::iter::once(&state.mem).chain(state.imms.iter()) {
            cursors.push(Cursor::mem(
                mem.range(lower.clone(), upper.clone()),
                reverse,
            ));
        }
        let (lo, hi) = (as_ref(&self.options.lower), as_ref(&self.options.upper));
        let end = if reverse { lo } else { hi };
        for file in levels.level(0) {
            // A table outside the scan's range is not opened: its index and
            // first block would be read for nothing.
            if !range_meets(file, lo, hi) {
                continue;
            }
            let it = TableIter::new(file.table()?).with_readahead(self.readahead.clone());
            let mut c = Cursor::Table(it);
            c.seek(start, reverse)?;
            cursors.push(c);
        }
        for n in 1..NUM_LEVELS {
            if levels.level(n).is_empty() {
                continue;
            }
            let level = LevelCursor::new(levels.level(n))
                .with_readahead(self.readahead.clone())
                .with_end(end);
            let mut c = Cursor::Level(level);
            c.seek(start, reverse)?;
            cursors.push(c);
        }
        Ok(MergeIter::new(cursors, reverse))
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

/// Whether `t`'s key range (from the manifest) meets `[lo, hi]`.
fn range_meets(t: &TableFile, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> bool {
    let above_lo = match lo {
        Bound::Included(l) => t.largest() >= l,
        Bound::Excluded(l) => t.largest() > l,
        Bound::Unbounded => true,
    };
    let below_hi = match hi {
        Bound::Included(h) => t.smallest() <= h,
        Bound::Excluded(h) => t.smallest() < h,
        Bound::Unbounded => true,
    };
    above_lo && below_hi
}

impl Drop for Scan {
    fn drop(&mut self) {
        self.engine.snapshots.release(self.snapshot);
    }
}

/// Where a scan delivers the entries of a batch.
pub trait EntrySink {
    fn push(&mut self, key: &[u8], value: &[u8]);
}

impl EntrySink for Vec<(Vec<u8>, Vec<u8>)> {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        Vec::push(self, (key.to_vec(), value.to_vec()));
    }
}

/// A batch packed into one byte buffer: keys and values back to back in
/// `data()`, `ends()[2i]` where key i ends and `ends()[2i + 1]` where its
/// value ends. Keys or values can be left out (`keys`/`values` false: each
/// is then empty), so a scan of keys copies no value bytes. Reused across
/// batches ([`PackedBatch::clear`]) it allocates only when a batch
/// outgrows the last one.
#[derive(Debug, Default, Clone)]
pub struct PackedBatch {
    data: Vec<u8>,
    ends: Vec<u32>,
    keys: bool,
    values: bool,
}

impl PackedBatch {
    pub fn new(keys: bool, values: bool) -> Self {
        PackedBatch {
            data: Vec::new(),
            ends: Vec::new(),
            keys,
            values,
        }
    }

    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Empties the batch for the next one, choosing which parts it keeps,
    /// and gives back the memory of a batch that grew past `max_bytes` (one
    /// huge value should not stay allocated).
    pub fn reset(&mut self, keys: bool, values: bool, max_bytes: usize) {
        self.clear();
        self.keys = keys;
        self.values = values;
        if self.data.capacity() > max_bytes {
            self.data = Vec::new();
        }
        if self.ends.capacity() * 4 > max_bytes {
            self.ends = Vec::new();
        }
    }

    /// Entries in the batch.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn ends(&self) -> &[u32] {
        &self.ends
    }

    /// The whole batch as one byte string, for handing across a language
    /// boundary in one copy: `data()`, zero padding to a multiple of 4
    /// bytes, `ends()` as little-endian u32s, then the entry count as a
    /// little-endian u32. Appends to the batch's own buffer, so call
    /// [`PackedBatch::clear`] before reusing it.
    pub fn seal(&mut self) -> &[u8] {
        let padded = self.data.len().next_multiple_of(4);
        self.data
            .reserve(padded - self.data.len() + 4 * (self.ends.len() + 1));
        self.data.resize(padded, 0);
        for end in &self.ends {
            self.data.extend_from_slice(&end.to_le_bytes());
        }
        self.data
            .extend_from_slice(&(self.len() as u32).to_le_bytes());
        &self.data
    }
}

impl EntrySink for PackedBatch {
    fn push(&mut self, key: &[u8], value: &[u8]) {
        // Offsets are u32: a batch stops at its byte budget (the binding
        // asks for 4 MiB) plus at most one entry, far below 4 GiB.
        if self.keys {
            self.data.extend_from_slice(key);
        }
        self.ends.push(self.data.len() as u32);
        if self.values {
            self.data.extend_from_slice(value);
        }
        self.ends.push(self.data.len() as u32);
    }
}

/// Anything that yields scan results in batches: a database or snapshot
/// `Scan`, or a transaction's `TxnScan`.
pub trait BatchScan: Send {
    /// Up to `max_entries` (key, value) pairs, stopping early once
    /// `max_bytes` are collected; empty when the scan is finished.
    fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    fn is_done(&self) -> bool;

    /// The same batch delivered into `sink`; returns how many entries (0:
    /// finished).
    fn next_batch_into(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        sink: &mut dyn EntrySink,
    ) -> Result<usize> {
        let batch = self.next_batch(max_entries, max_bytes)?;
        for (k, v) in &batch {
            sink.push(k, v);
        }
        Ok(batch.len())
    }
}

impl BatchScan for Scan {
    fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Scan::next_batch(self, max_entries, max_bytes)
    }

    fn is_done(&self) -> bool {
        Scan::is_done(self)
    }

    fn next_batch_into(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
        sink: &mut dyn EntrySink,
    ) -> Result<usize> {
        Scan::next_batch_into(self, max_entries, max_bytes, sink)
    }
}

impl BatchScan for crate::txn::TxnScan {
    fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        crate::txn::TxnScan::next_batch(self, max_entries, max_bytes)
    }

    fn is_done(&self) -> bool {
        crate::txn::TxnScan::is_done(self)
    }
}

/// A Rust iterator over a scan, fetching entries in batches.
pub struct DbIter {
    scan: Box<dyn BatchScan>,
    buffer: VecDeque<(Vec<u8>, Vec<u8>)>,
    failed: bool,
}

const ITER_BATCH: usize = 256;
const ITER_BATCH_BYTES: usize = 1 << 20;

impl DbIter {
    pub(crate) fn new(scan: Scan) -> Self {
        Self::boxed(Box::new(scan))
    }

    pub(crate) fn from_txn(scan: crate::txn::TxnScan) -> Self {
        Self::boxed(Box::new(scan))
    }

    fn boxed(scan: Box<dyn BatchScan>) -> Self {
        DbIter {
            scan,
            buffer: VecDeque::new(),
            failed: false,
        }
    }
}

impl Iterator for DbIter {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.failed && !self.scan.is_done() {
            match self.scan.next_batch(ITER_BATCH, ITER_BATCH_BYTES) {
                Ok(batch) => self.buffer.extend(batch),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
        self.buffer.pop_front().map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_batch_layout() {
        let mut b = PackedBatch::new(true, true);
        b.push(b"ab", b"xyz");
        b.push(b"", b"");
        b.push(b"c", b"");
        assert_eq!(b.len(), 3);
        assert_eq!(b.data(), b"abxyzc");
        assert_eq!(b.ends(), &[2, 5, 5, 5, 6, 6]);
        let sealed = b.seal().to_vec();
        let mut want = b"abxyzc\0\0".to_vec();
        for x in [2u32, 5, 5, 5, 6, 6, 3] {
            want.extend_from_slice(&x.to_le_bytes());
        }
        assert_eq!(sealed, want);

        // Keys only, then values only: the other part is empty.
        b.reset(true, false, 1 << 20);
        assert!(b.is_empty());
        b.push(b"k1", b"value");
        assert_eq!((b.data(), b.ends()), (&b"k1"[..], &[2u32, 2][..]));
        b.reset(false, true, 1 << 20);
        b.push(b"k1", b"value");
        assert_eq!((b.data(), b.ends()), (&b"value"[..], &[0u32, 5][..]));

        // A batch that grew past the limit gives its memory back.
        b.push(&[0; 4096], &[1; 4096]);
        b.reset(true, true, 1024);
        assert_eq!(b.data.capacity(), 0);
    }

    #[test]
    fn prefix_successor_cases() {
        assert_eq!(prefix_successor(b"abc"), Some(b"abd".to_vec()));
        assert_eq!(prefix_successor(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff"), None);
        assert_eq!(prefix_successor(b""), None);
    }

    #[test]
    fn prefix_intersects_bounds() {
        let o = ScanOptions::default()
            .lower(Bound::Excluded(b"users/5".to_vec()))
            .upper(Bound::Included(b"zzz".to_vec()))
            .within_prefix(b"users/");
        assert_eq!(o.lower, Bound::Excluded(b"users/5".to_vec()));
        assert_eq!(o.upper, Bound::Excluded(b"users0".to_vec()));
        let o = ScanOptions::default()
            .lower(Bound::Included(b"a".to_vec()))
            .within_prefix(b"b");
        assert_eq!(o.lower, Bound::Included(b"b".to_vec()));
        let o = ScanOptions::default()
            .upper(Bound::Excluded(b"b".to_vec()))
            .within_prefix(b"b");
        assert_eq!(o.upper, Bound::Excluded(b"b".to_vec()));
        assert!(scan_bound(Some(b"a".to_vec()), Some(b"b".to_vec())).is_err());
        let o = ScanOptions::prefix(b"k").starting_at(b"k5");
        assert_eq!(o.lower, Bound::Included(b"k5".to_vec()));
        let o = ScanOptions::prefix(b"k").starting_at(b"a");
        assert_eq!(o.lower, Bound::Included(b"k".to_vec()));
        let o = ScanOptions::prefix(b"k").reverse(true).starting_at(b"k5");
        assert_eq!(o.upper, Bound::Included(b"k5".to_vec()));
        assert_eq!(scan_bound(None, None).unwrap(), Bound::Unbounded);
    }
}
