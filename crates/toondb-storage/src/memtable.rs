//! The memtable: a lock-free skiplist (crossbeam-skiplist) of versions keyed
//! by (user key ascending, commit timestamp descending). Only the commit
//! thread inserts; any thread reads. A version is never modified once
//! inserted, so readers need no lock. The memtable a replay fills at open
//! (sealed at once, never written) keeps its versions in a sorted array
//! instead.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

use crossbeam_skiplist::SkipMap;

use crate::batch::{RawOp, WriteBatch};
use crate::error::Result;
use crate::key::{compare_versions, KeyRange, Timestamp, ValueKind};
use crate::memfilter::MemFilter;
use crate::memindex::{Lookup, MemIndex};
use crate::range_del::{RangeDelSet, RangeTombstone};
use crate::wal::MappedSegment;

/// One version of a user key: the skiplist key. The user key and the value
/// share one allocation (half the mallocs of separate boxes, which
/// measurably limits batch throughput), or, for a version replayed at
/// open, lie in the mapped WAL segment. Ordering and equality look only at
/// (user key, timestamp).
#[derive(Debug, Clone)]
pub(crate) struct MemKey {
    bytes: VersionBytes,
    /// 32 bits, beside `kind`: a version is 64 bytes, not 72 (keys are at
    /// most `MAX_KEY_LEN`, 64 KiB).
    key_len: u32,
    /// The key's first bytes, kept inline (see [`KeyHead`]).
    head: KeyHead,
    pub ts: Timestamp,
    pub kind: ValueKind,
}

/// Where a version's key and value bytes are.
#[derive(Clone)]
enum VersionBytes {
    /// The key, then the value, in one allocation: a committed write.
    Owned(Box<[u8]>),
    /// Both inside a WAL record of a segment mapped by the open that
    /// replayed it, which the version keeps mapped. Replay used to copy
    /// every value out of the map into a fresh allocation: a malloc, a copy
    /// and the page faults of fresh memory per version, about half of a
    /// replay's time (docs/performance.md, "Reopen"). Nothing rewrites a
    /// replayed segment's records while it is mapped (`FileSystem::map`).
    InSegment {
        segment: MappedSegment,
        /// 32 bits, to keep a version at 64 bytes; a record further into
        /// a segment than 4 GiB is copied instead.
        key_at: u32,
        /// Where the value starts, counted from the key's end (the value's
        /// length prefix lies between them).
        value_gap: u32,
        value_len: u32,
    },
}

impl std::fmt::Debug for VersionBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionBytes::Owned(b) => f.debug_tuple("Owned").field(&b.len()).finish(),
            VersionBytes::InSegment {
                key_at, value_len, ..
            } => f
                .debug_struct("InSegment")
                .field("key_at", key_at)
                .field("value_len", value_len)
                .finish(),
        }
    }
}

/// A key's length as stored in a [`MemKey`]. Keys are at most
/// `MAX_KEY_LEN` (64 KiB), and a search bound one byte more.
fn key_len_of(key: &[u8]) -> u32 {
    u32::try_from(key.len()).unwrap_or(u32::MAX)
}

/// Where `inner` starts within `outer`, if it lies wholly inside it.
fn offset_in(outer: &[u8], inner: &[u8]) -> Option<usize> {
    let start = (inner.as_ptr() as usize).checked_sub(outer.as_ptr() as usize)?;
    (start.checked_add(inner.len())? <= outer.len()).then_some(start)
}

impl Ord for MemKey {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

/// The first 16 bytes of a user key, zero-padded, as two big-endian
/// numbers. Comparing heads orders keys as comparing the keys does whenever
/// the heads differ (a shorter key's padding is 0, below any byte a longer
/// key has there, or equal to it, in which case the heads tie); when they
/// tie and both keys fit in 16 bytes, the shorter key is a prefix of the
/// longer. So a skiplist comparison reads the key's heap buffer (a likely
/// cache miss, most of an insert's or a read's time in a large memtable)
/// only for keys sharing their first 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyHead(u64, u64);

const HEAD_LEN: usize = 16;

impl KeyHead {
    fn of(key: &[u8]) -> KeyHead {
        let mut b = [0u8; HEAD_LEN];
        let n = key.len().min(HEAD_LEN);
        b[..n].copy_from_slice(&key[..n]);
        let (hi, lo) = b.split_at(8);
        let word = |x: &[u8]| u64::from_be_bytes(x.try_into().unwrap_or_default());
        KeyHead(word(hi), word(lo))
    }
}

/// (user key ascending, timestamp descending), the skiplist's order, the
/// same as `compare_versions` on the full keys (see [`KeyHead`]).
fn compare(a: &(dyn Version + '_), b: &(dyn Version + '_)) -> Ordering {
    let (ha, hb) = (a.version_head(), b.version_head());
    let keys = if ha != hb {
        ha.cmp(&hb)
    } else if a.version_len() <= HEAD_LEN && b.version_len() <= HEAD_LEN {
        a.version_len().cmp(&b.version_len())
    } else {
        return compare_versions(
            a.version_key(),
            a.version_ts(),
            b.version_key(),
            b.version_ts(),
        );
    };
    keys.then_with(|| b.version_ts().cmp(&a.version_ts()))
}

impl PartialOrd for MemKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for MemKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemKey {}

/// What the skiplist orders by: (user key ascending, timestamp descending).
/// Lookups search by a borrowed [`Probe`] through `dyn Version`, so a point
/// read allocates nothing (a `MemKey` probe cost a malloc and a free per
/// memtable searched).
pub(crate) trait Version {
    fn version_key(&self) -> &[u8];
    fn version_ts(&self) -> Timestamp;
    fn version_head(&self) -> KeyHead;
    fn version_len(&self) -> usize;
}

impl Version for MemKey {
    fn version_key(&self) -> &[u8] {
        self.user_key()
    }
    fn version_ts(&self) -> Timestamp {
        self.ts
    }
    fn version_head(&self) -> KeyHead {
        self.head
    }
    fn version_len(&self) -> usize {
        self.key_len as usize
    }
}

/// A borrowed search key.
pub(crate) struct Probe<'k> {
    key: &'k [u8],
    ts: Timestamp,
    head: KeyHead,
}

impl<'k> Probe<'k> {
    pub fn new(key: &'k [u8], ts: Timestamp) -> Self {
        Probe {
            key,
            ts,
            head: KeyHead::of(key),
        }
    }
}

impl Version for Probe<'_> {
    fn version_key(&self) -> &[u8] {
        self.key
    }
    fn version_ts(&self) -> Timestamp {
        self.ts
    }
    fn version_head(&self) -> KeyHead {
        self.head
    }
    fn version_len(&self) -> usize {
        self.key.len()
    }
}

impl Ord for dyn Version + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(self, other)
    }
}

impl PartialOrd for dyn Version + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for dyn Version + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for dyn Version + '_ {}

// Consistent with `Ord for MemKey`: both compare (user key, ts) the same way.
impl<'a> Borrow<dyn Version + 'a> for MemKey {
    fn borrow(&self) -> &(dyn Version + 'a) {
        self
    }
}

impl MemKey {
    /// A search key (no value).
    pub fn new(user_key: &[u8], ts: Timestamp) -> Self {
        Self::version(user_key, ts, ValueKind::Put, &[])
    }

    pub fn version(user_key: &[u8], ts: Timestamp, kind: ValueKind, value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(user_key.len() + value.len());
        bytes.extend_from_slice(user_key);
        bytes.extend_from_slice(value);
        MemKey {
            bytes: VersionBytes::Owned(bytes.into_boxed_slice()),
            key_len: key_len_of(user_key),
            head: KeyHead::of(user_key),
            ts,
            kind,
        }
    }

    /// A version whose `user_key` and `value` are slices of `segment`'s
    /// bytes, kept there (no copy); copied as [`MemKey::version`] does
    /// when they are not inside it.
    pub fn in_segment(
        segment: &MappedSegment,
        user_key: &[u8],
        ts: Timestamp,
        kind: ValueKind,
        value: &[u8],
    ) -> Self {
        let bytes = segment.bytes();
        let spans = offset_in(bytes, user_key).and_then(|key_at| {
            let short_key_at = u32::try_from(key_at).ok()?;
            if value.is_empty() {
                return Some((short_key_at, 0, 0));
            }
            let value_at = offset_in(bytes, value)?;
            let gap = value_at.checked_sub(key_at + user_key.len())?;
            Some((
                short_key_at,
                u32::try_from(gap).ok()?,
                u32::try_from(value.len()).ok()?,
            ))
        });
        let Some((key_at, value_gap, value_len)) = spans else {
            return Self::version(user_key, ts, kind, value);
        };
        MemKey {
            bytes: VersionBytes::InSegment {
                segment: segment.clone(),
                key_at,
                value_gap,
                value_len,
            },
            key_len: key_len_of(user_key),
            head: KeyHead::of(user_key),
            ts,
            kind,
        }
    }

    pub fn user_key(&self) -> &[u8] {
        match &self.bytes {
            VersionBytes::Owned(b) => b.get(..self.key_len as usize),
            VersionBytes::InSegment {
                segment, key_at, ..
            } => {
                let at = *key_at as usize;
                segment.bytes().get(at..at + self.key_len as usize)
            }
        }
        .unwrap_or_default()
    }

    pub fn value(&self) -> &[u8] {
        match &self.bytes {
            VersionBytes::Owned(b) => b.get(self.key_len as usize..),
            VersionBytes::InSegment {
                segment,
                key_at,
                value_gap,
                value_len,
            } => {
                let at = *key_at as usize + self.key_len as usize + *value_gap as usize;
                segment.bytes().get(at..at + *value_len as usize)
            }
        }
        .unwrap_or_default()
    }
}

/// The versions [`Memtable::replay_record`] gathered (`None` once
/// inserted) and their keys' filter hashes, for
/// [`Memtable::insert_replayed`].
#[derive(Default)]
pub(crate) struct Replayed {
    versions: Vec<Option<MemKey>>,
    /// Set in the key filter by `insert_replayed`, not by `replay_record`:
    /// there, each key's filter word was a cache miss (the record's values
    /// streaming through the caches evict the filter), about a fifth of a
    /// replay of 1 KiB values (docs/performance.md, "Session 38").
    hashes: Vec<u64>,
}

/// How many versions ahead [`Memtable::insert_replayed`] prefetches while
/// gathering them in key order (each is a random line of the batch order).
const GATHER_AHEAD: usize = 8;

/// Per-entry bookkeeping the skiplist adds beyond key and value bytes; an
/// estimate, used only to decide when to rotate.
const ENTRY_OVERHEAD: usize = 64;

/// Operations [`Memtable::apply`]'s reused list keeps room for between
/// batches: 1 MiB.
const APPLY_ORDER_KEPT: usize = 1 << 16;

pub(crate) struct Memtable {
    map: SkipMap<MemKey, ()>,
    /// The versions a replay recovered, in internal order, when it found
    /// the memtable empty; `map` then stays empty (a replayed memtable is
    /// sealed at open and never written). Inserting them into `map` took
    /// about a third of a replay's time, sorted as they already were
    /// (docs/performance.md, "Session 37").
    sorted: Box<[MemKey]>,
    /// Every user key in `map`: point reads of other keys skip the search.
    filter: MemFilter,
    /// Each user key's newest version in `map`, by hash: point reads of
    /// keys it holds skip the search too (memindex.rs). Its addresses point
    /// into `map`'s nodes, so no version is ever removed from `map`.
    index: MemIndex,
    /// [`Memtable::apply`]'s (offset, hash) of each operation of the batch
    /// it is inserting, kept for the next batch (up to
    /// [`APPLY_ORDER_KEPT`] operations).
    apply_order: parking_lot::Mutex<Vec<(usize, u64)>>,
    /// Set before the first version is inserted (like the filter's bits,
    /// see memfilter.rs): an empty memtable answers a read at once.
    has_versions: std::sync::atomic::AtomicBool,
    approximate_bytes: AtomicUsize,
    /// Sequence number of this memtable; `Database::flush` waits on it.
    id: u64,
    /// Set when the memtable is sealed: the first WAL segment that holds
    /// none of its writes (the manifest's `log_number` once it is flushed).
    sealed_log: AtomicU64,
    /// Set with `sealed_log`: the file number its flush table will have,
    /// taken at the seal so that it is below every checkpoint table of a
    /// newer memtable (level 0 is ordered by file number at open;
    /// maintenance/checkpoint.rs, *Order*).
    flush_number: AtomicU64,
    max_ts: AtomicU64,
    /// Range tombstones committed to this memtable. Replaced on every range
    /// delete by the one inserting thread with a set that shares all but
    /// O(log n) of its storage with the old one (range_del.rs); readers
    /// clone the `Arc`.
    range_dels: parking_lot::RwLock<Arc<RangeDelSet>>,
    /// Whether `range_dels` is non-empty: point reads check this flag, not
    /// the lock, so a memtable without range deletes costs them one load.
    has_range_dels: std::sync::atomic::AtomicBool,
    /// Whether versions lie in mapped WAL segments (replay at open):
    /// [`Memtable::without_segments`] copies them out at close.
    in_segment: bool,
}

/// The filter size of a memtable made without a size (recovery, tests): the
/// default rotation threshold.
const DEFAULT_FILTER_FOR: usize = 32 << 20;

impl Memtable {
    pub fn new(id: u64) -> Self {
        Self::sized(id, DEFAULT_FILTER_FOR)
    }

    /// A memtable expected to rotate at about `memtable_size` bytes (what
    /// its key filter is sized for).
    pub fn sized(id: u64, memtable_size: usize) -> Self {
        Memtable {
            map: SkipMap::new(),
            sorted: Box::default(),
            filter: MemFilter::for_memtable(memtable_size),
            index: MemIndex::for_memtable(memtable_size),
            apply_order: parking_lot::Mutex::new(Vec::new()),
            has_versions: std::sync::atomic::AtomicBool::new(false),
            approximate_bytes: AtomicUsize::new(0),
            id,
            sealed_log: AtomicU64::new(0),
            flush_number: AtomicU64::new(0),
            max_ts: AtomicU64::new(0),
            range_dels: parking_lot::RwLock::new(Arc::new(RangeDelSet::default())),
            has_range_dels: std::sync::atomic::AtomicBool::new(false),
            in_segment: false,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn approximate_bytes(&self) -> usize {
        self.approximate_bytes.load(AtomicOrdering::Relaxed)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.len() + self.sorted.len()
    }

    /// True when the memtable holds no version and no range tombstone.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && self.sorted.is_empty() && !self.has_range_dels()
    }

    pub fn has_range_dels(&self) -> bool {
        self.has_range_dels.load(AtomicOrdering::Acquire)
    }

    /// The range tombstones committed to this memtable so far.
    pub fn range_dels(&self) -> Arc<RangeDelSet> {
        self.range_dels.read().clone()
    }

    pub fn max_ts(&self) -> Timestamp {
        self.max_ts.load(AtomicOrdering::Acquire)
    }

    /// Seals the memtable: `next_log` is the first WAL segment that holds
    /// none of its writes, `flush_number` the file number reserved for its
    /// flush table.
    pub fn seal(&self, next_log: u64, flush_number: u64) {
        self.flush_number
            .store(flush_number, AtomicOrdering::Release);
        self.sealed_log.store(next_log, AtomicOrdering::Release);
    }

    /// The file number reserved for this memtable's flush table (0 until
    /// it is sealed).
    pub fn flush_number(&self) -> u64 {
        self.flush_number.load(AtomicOrdering::Acquire)
    }

    pub fn sealed_log(&self) -> u64 {
        self.sealed_log.load(AtomicOrdering::Acquire)
    }

    /// Inserts every operation of `batch` as a version at `ts`. A key that
    /// appears twice in one batch keeps its last operation: the operations
    /// are inserted last first, and an earlier one of a key already
    /// inserted at `ts` is skipped. (Replacing the equal entry instead would
    /// remove a version from the skiplist, which the point index forbids;
    /// see memindex.rs.)
    pub fn apply(&self, batch: &WriteBatch, ts: Timestamp) {
        let mut added = self.apply_range_deletes(batch, ts);
        // Hashed (and their index slots prefetched) first: a slot is a
        // random line of a large array, and its miss would otherwise come
        // on top of each insert's skiplist search. The (offset, hash) list
        // is reused: a fresh one per batch was a large allocation, which
        // made glibc consolidate its free lists each time (7% of a
        // `db.batch` load's CPU).
        let mut order = self.apply_order.lock();
        order.clear();
        for (at, op) in batch.iter_with_offsets() {
            let hash = self.note_key(op.key);
            self.index.prefetch(hash);
            order.push((at, hash));
        }
        for &(at, hash) in order.iter().rev() {
            let Some(op) = batch.op_at(at) else {
                continue;
            };
            added += op.key.len() + op.value.len() + ENTRY_OVERHEAD;
            self.insert_new(MemKey::version(op.key, ts, op.kind, op.value), Some(hash));
        }
        // A list an unusually large batch grew is not kept for the rest of
        // the memtable's life (16 bytes an operation); such a batch pays
        // for its allocation many times over anyway.
        if order.capacity() > APPLY_ORDER_KEPT {
            *order = Vec::new();
        }
        drop(order);
        self.approximate_bytes
            .fetch_add(added, AtomicOrdering::Relaxed);
        self.max_ts.fetch_max(ts, AtomicOrdering::AcqRel);
    }

    /// Inserts `version` (its key already noted: `hash` is what
    /// [`Memtable::note_key`] returned) unless an equal one (same key and
    /// timestamp) is in the map already, and records it in the index (with
    /// a hash). The one way versions enter the map, so none is ever
    /// replaced.
    fn insert_new(&self, version: MemKey, hash: Option<u64>) {
        let entry = self.map.get_or_insert(version, ());
        if let Some(hash) = hash {
            self.index.note(hash, entry.key());
        }
    }

    /// [`Memtable::replay_record`] of a decoded batch, copying its bytes:
    /// for tests that check other paths against replay.
    #[cfg(test)]
    pub fn apply_deferred(&self, batch: &WriteBatch, ts: Timestamp, pending: &mut Vec<MemKey>) {
        let mut added = self.apply_range_deletes(batch, ts);
        pending.reserve(batch.len());
        for op in batch.iter() {
            added += op.key.len() + op.value.len() + ENTRY_OVERHEAD;
            pending.push(MemKey::version(op.key, ts, op.kind, op.value));
        }
        self.approximate_bytes
            .fetch_add(added, AtomicOrdering::Relaxed);
        self.max_ts.fetch_max(ts, AtomicOrdering::AcqRel);
    }

    /// Replay's [`Memtable::apply`] of a WAL record's payload, by the
    /// memtable's only user (replay at open, before anything can read it):
    /// range deletes are applied at once, the point versions and their
    /// keys' filter hashes gathered into `replayed`, for
    /// [`Memtable::insert_replayed`] to set in the filter and insert in key
    /// order later. When
    /// `segment` (the mapped segment the payload lies in) is given, the
    /// versions keep their keys and values there instead of copies.
    /// Returns the record's commit timestamp. On an error (a malformed
    /// record) some of its versions may already be gathered: the caller
    /// discards the memtable.
    ///
    /// Why deferred: inserting a WAL's versions in commit order (random
    /// keys) made each skiplist insert a walk of cache misses, the largest
    /// part of an open's replay (docs/performance.md, "Reopen"); in key
    /// order every insert walks the nodes the previous one just touched.
    /// The keys are hashed here, while the record's bytes are in the cache;
    /// their filter words are written later, all together, because here
    /// each was a cache miss ([`Replayed::hashes`]).
    pub fn replay_record(
        &mut self,
        payload: &[u8],
        segment: Option<&MappedSegment>,
        replayed: &mut Replayed,
    ) -> Result<Timestamp> {
        let mut added = 0;
        let mut ranges = Vec::new();
        let Replayed { versions, hashes } = replayed;
        let ts = WriteBatch::decode_record_ops(payload, |ts, op| match op {
            RawOp::Point(op) => {
                added += op.key.len() + op.value.len() + ENTRY_OVERHEAD;
                hashes.push(MemFilter::hash(op.key));
                versions.push(Some(match segment {
                    Some(segment) => MemKey::in_segment(segment, op.key, ts, op.kind, op.value),
                    None => MemKey::version(op.key, ts, op.kind, op.value),
                }));
            }
            RawOp::Range(start, end) => ranges.push(RangeTombstone {
                start: start.to_vec(),
                end: end.to_vec(),
                ts,
            }),
        })?;
        added += self.publish_range_deletes(ranges);
        *self.approximate_bytes.get_mut() += added;
        let max_ts = self.max_ts.get_mut();
        *max_ts = (*max_ts).max(ts);
        Ok(ts)
    }

    /// Inserts what [`Memtable::replay_record`] gathered, in key order.
    /// The order must be stable: a batch that writes one key twice gives
    /// both versions the same (key, timestamp), and the later one must win,
    /// as it does when [`Memtable::apply`] inserts them in batch order (an
    /// insert replaces an equal entry), so versions that compare equal are
    /// ordered by their position in `replayed`.
    ///
    /// Sorted as (key head, position) pairs, not in place: a version is 64
    /// bytes, and a stable sort of 10K of them moved ~11 MB through a
    /// scratch buffer of fresh memory; the pairs are 24 bytes, and two
    /// versions are compared in full only when their heads tie.
    pub fn insert_replayed(&mut self, replayed: Replayed) {
        let Replayed {
            mut versions,
            hashes,
        } = replayed;
        // All at once: the filter stays in the cache for the whole loop.
        for hash in hashes {
            self.filter.insert_exclusive(hash);
        }
        if versions.is_empty() {
            return;
        }
        // The point index is left out: indexing every replayed version (a random slot
        // of a 4 MiB array each, its pages first touched here) tripled a
        // warm reopen's time, and a replayed memtable is only read until
        // its flush; its reads search its sorted versions.
        *self.has_versions.get_mut() = true;
        self.index.give_up();
        self.in_segment |= versions
            .iter()
            .flatten()
            .any(|v| matches!(v.bytes, VersionBytes::InSegment { .. }));
        let mut order: Vec<(KeyHead, u32)> = versions
            .iter()
            .zip(0u32..)
            .filter_map(|(v, i)| Some((v.as_ref()?.head, i)))
            .collect();
        let version = |i: u32| versions.get(i as usize).and_then(Option::as_ref);
        order.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| version(a.1).cmp(&version(b.1)))
                .then(a.1.cmp(&b.1))
        });
        // Versions that compare equal are adjacent now, the last written
        // last, and only it is inserted: inserting the others too made the
        // skiplist replace them, and a replaced entry is freed only when
        // the epoch collector gets to it, which kept its mapped segment
        // (and, once the flush deleted it, the file's disk space) alive
        // for as long as that took (tests/review_revrf.rs).
        // Different heads are different keys: the versions (random lines
        // of `versions`) are compared only when the heads tie.
        let keep: Vec<u32> = order
            .iter()
            .zip(order.iter().skip(1).map(Some).chain([None]))
            .filter(|(a, next)| {
                next.is_none_or(|b| {
                    a.0 != b.0 || version(a.1).cmp(&version(b.1)) != Ordering::Equal
                })
            })
            .map(|(a, _)| a.1)
            .collect();
        drop(order);
        let kept = keep.iter().enumerate().filter_map(|(n, &i)| {
            if let Some(ahead) = keep
                .get(n + GATHER_AHEAD)
                .and_then(|&j| versions.get(j as usize))
            {
                crate::prefetch::prefetch_value(ahead);
            }
            versions.get_mut(i as usize).and_then(Option::take)
        });
        if self.map.is_empty() && self.sorted.is_empty() {
            self.sorted = kept.collect();
        } else {
            // Not what an open does (it replays into a new memtable), but
            // versions are never kept in both places: reads search `sorted`
            // alone when it holds any.
            let earlier = std::mem::take(&mut self.sorted).into_vec();
            for version in earlier.into_iter().chain(kept) {
                self.insert_new(version, None);
            }
        }
    }

    /// A copy of this memtable whose versions own their bytes, when some
    /// lie in mapped WAL segments (`None` otherwise). A closed engine
    /// swaps it in for a replayed memtable it never flushed, so it keeps no
    /// segment mapped or open while its handle lives on (a JS handle lives
    /// until a GC; tests/review_revrf.rs), as it keeps no table mapped.
    pub fn without_segments(&self) -> Option<Memtable> {
        if !self.in_segment {
            return None;
        }
        let mut copy = Memtable {
            map: SkipMap::new(),
            sorted: Box::default(),
            filter: self.filter.copy(),
            index: self.index.empty_copy(),
            apply_order: parking_lot::Mutex::new(Vec::new()),
            has_versions: std::sync::atomic::AtomicBool::new(
                self.has_versions.load(AtomicOrdering::Acquire),
            ),
            approximate_bytes: AtomicUsize::new(self.approximate_bytes()),
            id: self.id,
            sealed_log: AtomicU64::new(self.sealed_log()),
            flush_number: AtomicU64::new(self.flush_number()),
            max_ts: AtomicU64::new(self.max_ts()),
            range_dels: parking_lot::RwLock::new(self.range_dels()),
            has_range_dels: std::sync::atomic::AtomicBool::new(self.has_range_dels()),
            in_segment: false,
        };
        let owned = |v: &MemKey| MemKey::version(v.user_key(), v.ts, v.kind, v.value());
        copy.sorted = self.sorted.iter().map(owned).collect();
        if !copy.sorted.is_empty() {
            // The point index knows none of them: reads must search.
            copy.index.give_up();
        }
        for entry in self.map.iter() {
            let v = entry.key();
            let hash = copy.note_key(v.user_key());
            copy.insert_new(owned(v), Some(hash));
        }
        Some(copy)
    }

    /// Inserts what [`Memtable::apply_deferred`] gathered, sorted first
    /// (stably, as [`Memtable::insert_replayed`] does).
    #[cfg(test)]
    pub fn insert_pending(&self, mut pending: Vec<MemKey>) {
        pending.sort();
        // Last first, as `apply` does: of equal versions the last one wins.
        for version in pending.into_iter().rev() {
            let hash = self.note_key(version.user_key());
            self.insert_new(version, Some(hash));
        }
    }

    /// Records `key` in the key filter and marks the memtable non-empty;
    /// returns the key's [`MemFilter::hash`]. Every insert into `map` calls
    /// this first, so any reader that can find the version also sees both
    /// (see memfilter.rs); a key left out would be a version point reads
    /// cannot see.
    fn note_key(&self, key: &[u8]) -> u64 {
        // Stored once: a store per insert would take the line from every
        // reader's cache each time.
        if !self.has_versions.load(AtomicOrdering::Relaxed) {
            self.has_versions.store(true, AtomicOrdering::Relaxed);
        }
        let hash = MemFilter::hash(key);
        self.filter.insert(hash);
        hash
    }

    /// Publishes the batch's range deletes; returns their charged bytes.
    fn apply_range_deletes(&self, batch: &WriteBatch, ts: Timestamp) -> usize {
        if !batch.has_range_deletes() {
            return 0;
        }
        let more: Vec<_> = batch
            .range_deletes()
            .map(|(start, end)| RangeTombstone {
                start: start.to_vec(),
                end: end.to_vec(),
                ts,
            })
            .collect();
        self.publish_range_deletes(more)
    }

    /// Adds range tombstones; returns their charged bytes. Published
    /// before the visible timestamp moves past theirs, like point versions.
    fn publish_range_deletes(&self, more: Vec<RangeTombstone>) -> usize {
        if more.is_empty() {
            return 0;
        }
        let added = more
            .iter()
            .map(|t| t.start.len() + t.end.len() + ENTRY_OVERHEAD)
            .sum();
        let mut guard = self.range_dels.write();
        *guard = Arc::new(guard.with(more));
        self.has_range_dels.store(true, AtomicOrdering::Release);
        added
    }

    /// Bytes of address space the point index maps: one slot of 8 bytes
    /// per 64 bytes of the rotation size, committed by the kernel only for
    /// the pages keys hash to.
    pub fn index_bytes(&self) -> usize {
        self.index.bytes()
    }

    /// The newest version of `key` with a timestamp <= `snapshot`.
    #[cfg(test)]
    pub fn get(&self, key: &[u8], snapshot: Timestamp) -> Option<(Timestamp, ValueKind, Vec<u8>)> {
        self.get_ref(key, snapshot, |_, _, _| ())?;
        let probe = Probe::new(key, snapshot);
        let k = self.first_at_or_after(&probe)?;
        Some((k.key().ts, k.key().kind, k.key().value().to_vec()))
    }

    /// Like `get`, but lends the version to `f` instead of copying it.
    /// Returns `None` (without calling `f`) when this memtable has no
    /// version of `key` at or below `snapshot`.
    #[cfg(test)]
    pub fn get_ref<R>(
        &self,
        key: &[u8],
        snapshot: Timestamp,
        f: impl FnOnce(Timestamp, ValueKind, &[u8]) -> R,
    ) -> Option<R> {
        self.get_ref_hashed(key, MemFilter::hash(key), snapshot, f)
    }

    /// Whether the point index gave up (tests).
    #[cfg(test)]
    pub fn index_is_incomplete(&self) -> bool {
        self.index.is_incomplete()
    }

    /// `get_ref` with the key's [`MemFilter::hash`] already computed (a
    /// read probes several memtables with one hash).
    pub fn get_ref_hashed<R>(
        &self,
        key: &[u8],
        hash: u64,
        snapshot: Timestamp,
        f: impl FnOnce(Timestamp, ValueKind, &[u8]) -> R,
    ) -> Option<R> {
        // An empty memtable (the usual state right after open or a flush)
        // answers without touching its filter (a cache miss of its own).
        if !self.has_versions.load(AtomicOrdering::Relaxed) || !self.filter.may_contain(hash) {
            return None;
        }
        match self.index.find(key, hash) {
            Lookup::Newest(v) if v.ts <= snapshot => return Some(f(v.ts, v.kind, v.value())),
            Lookup::Absent => return None,
            // Newer than the snapshot (an older version may be visible),
            // or the index is incomplete: search.
            Lookup::Newest(_) | Lookup::Unknown => {}
        }
        let probe = Probe::new(key, snapshot);
        let entry = self.first_at_or_after(&probe)?;
        let version = entry.key();
        if version.user_key() != key {
            return None;
        }
        Some(f(version.ts, version.kind, version.value()))
    }

    /// Timestamp of the newest version of `key`, if any.
    pub fn newest_ts(&self, key: &[u8]) -> Option<Timestamp> {
        let hash = MemFilter::hash(key);
        if !self.filter.may_contain(hash) {
            return None;
        }
        match self.index.find(key, hash) {
            Lookup::Newest(v) => return Some(v.ts),
            Lookup::Absent => return None,
            Lookup::Unknown => {}
        }
        let probe = Probe::new(key, Timestamp::MAX);
        let entry = self.first_at_or_after(&probe)?;
        (entry.key().user_key() == key).then_some(entry.key().ts)
    }

    /// The first version at or after `probe` in internal order.
    fn first_at_or_after(&self, probe: &Probe<'_>) -> Option<VersionEntry<'_>> {
        if self.sorted.is_empty() {
            let entry = self
                .map
                .lower_bound(Bound::Included(probe as &dyn Version))?;
            return Some(VersionEntry(Lent::Node(entry)));
        }
        let at = self
            .sorted
            .partition_point(|v| compare(v, probe) == Ordering::Less);
        self.sorted.get(at).map(|v| VersionEntry(Lent::Sorted(v)))
    }

    /// Calls `f` with the key of every version newer than `since` in
    /// `range`, in key order, until `f` returns false; returns false then.
    pub fn each_newer(
        &self,
        range: &KeyRange,
        since: Timestamp,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> bool {
        let lower = match &range.0 {
            Bound::Included(k) => Bound::Included(MemKey::new(k, Timestamp::MAX)),
            Bound::Excluded(k) => Bound::Excluded(MemKey::new(k, 0)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let upper = match &range.1 {
            Bound::Included(k) => Bound::Included(MemKey::new(k, 0)),
            Bound::Excluded(k) => Bound::Excluded(MemKey::new(k, Timestamp::MAX)),
            Bound::Unbounded => Bound::Unbounded,
        };
        for e in self.range(lower, upper) {
            if e.key().ts > since && !f(e.key().user_key()) {
                return false;
            }
        }
        true
    }

    /// Versions in internal order between the bounds (see `read.rs` for how
    /// user-key bounds become version bounds).
    pub fn range(&self, lower: Bound<MemKey>, upper: Bound<MemKey>) -> VersionRange<'_> {
        if self.sorted.is_empty() {
            return VersionRange(Versions::Nodes(self.map.range((lower, upper))));
        }
        let before = |bound: &MemKey, inclusive: bool| {
            self.sorted.partition_point(|v| match v.cmp(bound) {
                Ordering::Less => true,
                Ordering::Equal => inclusive,
                Ordering::Greater => false,
            })
        };
        let start = match &lower {
            Bound::Included(k) => before(k, false),
            Bound::Excluded(k) => before(k, true),
            Bound::Unbounded => 0,
        };
        let end = match &upper {
            Bound::Included(k) => before(k, true),
            Bound::Excluded(k) => before(k, false),
            Bound::Unbounded => self.sorted.len(),
        };
        let slice = self.sorted.get(start..end.max(start)).unwrap_or_default();
        VersionRange(Versions::Sorted(slice.iter()))
    }

    /// All versions in internal order (for flushing to a table file).
    pub fn iter(&self) -> VersionRange<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }
}

/// A version a memtable iterator lends: its skiplist entry without the
/// entry's `remove`, or a replayed version. No version may leave a
/// memtable's skiplist while the memtable lives (the point index holds
/// addresses into its nodes, memindex.rs), so nothing outside this module
/// gets a way to remove one.
pub(crate) struct VersionEntry<'a>(Lent<'a>);

enum Lent<'a> {
    Node(crossbeam_skiplist::map::Entry<'a, MemKey, ()>),
    Sorted(&'a MemKey),
}

impl VersionEntry<'_> {
    pub fn key(&self) -> &MemKey {
        match &self.0 {
            Lent::Node(entry) => entry.key(),
            Lent::Sorted(version) => version,
        }
    }
}

type MapRange<'a> =
    crossbeam_skiplist::map::Range<'a, MemKey, (Bound<MemKey>, Bound<MemKey>), MemKey, ()>;

/// [`Memtable::range`]'s versions, as [`VersionEntry`]s.
pub(crate) struct VersionRange<'a>(Versions<'a>);

enum Versions<'a> {
    Nodes(MapRange<'a>),
    Sorted(std::slice::Iter<'a, MemKey>),
}

impl<'a> Iterator for VersionRange<'a> {
    type Item = VersionEntry<'a>;

    fn next(&mut self) -> Option<VersionEntry<'a>> {
        Some(VersionEntry(match &mut self.0 {
            Versions::Nodes(range) => Lent::Node(range.next()?),
            Versions::Sorted(versions) => Lent::Sorted(versions.next()?),
        }))
    }
}

impl<'a> DoubleEndedIterator for VersionRange<'a> {
    fn next_back(&mut self) -> Option<VersionEntry<'a>> {
        Some(VersionEntry(match &mut self.0 {
            Versions::Nodes(range) => Lent::Node(range.next_back()?),
            Versions::Sorted(versions) => Lent::Sorted(versions.next_back()?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ops: &[(&str, Option<&str>)]) -> WriteBatch {
        let mut b = WriteBatch::new();
        for (k, v) in ops {
            match v {
                Some(v) => b.put(k, v).unwrap(),
                None => b.delete(k).unwrap(),
            };
        }
        b
    }

    /// The reused (offset, hash) list keeps room for ordinary batches only:
    /// after a batch larger than [`APPLY_ORDER_KEPT`] operations its room
    /// is given back, and every version of both batches reads.
    #[test]
    fn a_huge_batch_does_not_keep_its_apply_list() {
        let mem = Memtable::new(1);
        mem.apply(&batch(&[("a", Some("1")), ("b", Some("2"))]), 1);
        let kept = mem.apply_order.lock().capacity();
        assert!((2..=APPLY_ORDER_KEPT).contains(&kept), "{kept}");
        let mut huge = WriteBatch::new();
        for i in 0..APPLY_ORDER_KEPT + 1 {
            huge.put(format!("k{i:06}"), "v").unwrap();
        }
        mem.apply(&huge, 2);
        assert_eq!(mem.apply_order.lock().capacity(), 0);
        assert_eq!(mem.get(b"a", 2), Some((1, ValueKind::Put, b"1".to_vec())));
        assert_eq!(
            mem.get(format!("k{APPLY_ORDER_KEPT:06}").as_bytes(), 2),
            Some((2, ValueKind::Put, b"v".to_vec()))
        );
    }

    /// Replay's deferred, sorted inserts give the same memtable as applying
    /// the batches in order, including a batch that writes one key several
    /// times (its versions share a timestamp: the last one must win).
    #[test]
    fn deferred_sorted_inserts_match_applying_in_order() {
        // Large enough that the sort is not a small-slice insertion sort.
        let mut many = WriteBatch::new();
        for i in 0..300 {
            many.put(format!("k{}", i % 3), format!("v{i}")).unwrap();
        }
        let batches = [
            batch(&[("k1", Some("a")), ("k0", Some("b")), ("k1", Some("c"))]),
            batch(&[
                ("k2", Some("d")),
                ("k1", None),
                ("k2", Some("e")),
                ("k2", Some("f")),
            ]),
            batch(&[("k0", Some("g")), ("k0", None), ("k0", Some("h"))]),
            many,
        ];
        let direct = Memtable::new(1);
        let deferred = Memtable::new(2);
        let mut pending = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let ts = i as u64 + 1;
            direct.apply(b, ts);
            deferred.apply_deferred(b, ts, &mut pending);
        }
        // Many equal keys among the pending versions: an unstable sort
        // would be free to reorder them.
        deferred.insert_pending(pending);
        for key in ["k0", "k1", "k2", "k3"] {
            for ts in 0..=5 {
                assert_eq!(
                    deferred.get(key.as_bytes(), ts),
                    direct.get(key.as_bytes(), ts),
                    "{key} at {ts}"
                );
            }
        }
        assert_eq!(deferred.get(b"k2", 2).unwrap().2, b"f");
        assert_eq!(deferred.get(b"k0", 3).unwrap().2, b"h");
        assert_eq!(deferred.get(b"k2", 4).unwrap().2, b"v299");
        assert_eq!(deferred.approximate_bytes(), direct.approximate_bytes());
        assert_eq!(deferred.max_ts(), direct.max_ts());
    }

    struct InMemory(Vec<u8>);

    impl crate::io::FileBytes for InMemory {
        fn bytes(&self) -> &[u8] {
            &self.0
        }
    }

    /// Replay's path (records decoded in place, keys noted as they are
    /// read, versions inserted in key order at the end) gives the same
    /// memtable as applying the batches in order, with the versions built
    /// over the segment's bytes or copied; a batch writing one key several
    /// times keeps its last write, and range deletes are kept.
    #[test]
    fn replayed_records_match_applying_in_order() {
        let mut many = WriteBatch::new();
        for i in 0..300 {
            // Keys longer than the 16-byte head, so heads tie.
            many.put(format!("a-long-shared-prefix/{}", i % 7), format!("v{i}"))
                .unwrap();
        }
        let mut ranged = batch(&[("k1", Some("r")), ("k9", None)]);
        ranged.delete_range("k2", "k3").unwrap();
        let batches = [
            batch(&[("k1", Some("a")), ("k0", Some("b")), ("k1", Some("c"))]),
            batch(&[("k2", Some("d")), ("k1", None), ("k2", Some("e"))]),
            many,
            ranged,
            batch(&[("k0", Some("g")), ("k0", None), ("k0", Some("h"))]),
        ];
        let mut segment = Vec::new();
        let mut spans = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let start = segment.len();
            b.encode_record(i as u64 + 1, &mut segment);
            spans.push(start..segment.len());
        }
        let segment: MappedSegment = Arc::new(InMemory(segment));
        let direct = Memtable::new(1);
        for (i, b) in batches.iter().enumerate() {
            direct.apply(b, i as u64 + 1);
        }
        for mapped in [true, false] {
            let mut replayed_mem = Memtable::new(2);
            let mut replayed = Replayed::default();
            for span in &spans {
                let payload = &segment.bytes()[span.clone()];
                let from = mapped.then_some(&segment);
                replayed_mem
                    .replay_record(payload, from, &mut replayed)
                    .unwrap();
            }
            let in_segment = replayed
                .versions
                .iter()
                .flatten()
                .filter(|v| matches!(v.bytes, VersionBytes::InSegment { .. }))
                .count();
            // Every version but the deletes (no value to point at) when
            // mapped, none otherwise.
            assert_eq!(in_segment > 300, mapped);
            replayed_mem.insert_replayed(replayed);
            let keys = (0..7)
                .map(|i| format!("a-long-shared-prefix/{i}"))
                .chain((0..10).map(|i| format!("k{i}")));
            for key in keys {
                for ts in 0..=6 {
                    assert_eq!(
                        replayed_mem.get(key.as_bytes(), ts),
                        direct.get(key.as_bytes(), ts),
                        "{key} at {ts}, mapped {mapped}"
                    );
                }
            }
            let all = |m: &Memtable| {
                m.iter()
                    .map(|e| {
                        let k = e.key();
                        (k.user_key().to_vec(), k.ts, k.kind, k.value().to_vec())
                    })
                    .collect::<Vec<_>>()
            };
            assert_eq!(all(&replayed_mem), all(&direct));
            assert_eq!(replayed_mem.get(b"k0", 5).unwrap().2, b"h");
            assert_eq!(replayed_mem.range_dels().len(), 1);
            assert_eq!(replayed_mem.approximate_bytes(), direct.approximate_bytes());
            assert_eq!(replayed_mem.max_ts(), direct.max_ts());
            assert!(replayed_mem.newest_ts(b"k1").is_some());
            // Review (revrf): the copy a closed engine swaps in owns its
            // bytes and reads the same.
            let copy = replayed_mem.without_segments();
            assert_eq!(copy.is_some(), mapped);
            if let Some(copy) = copy {
                assert!(copy
                    .iter()
                    .all(|e| matches!(e.key().bytes, VersionBytes::Owned(_))));
                assert_eq!(all(&copy), all(&direct));
                for key in (0..10).map(|i| format!("k{i}")) {
                    for ts in 0..=6 {
                        assert_eq!(copy.get(key.as_bytes(), ts), direct.get(key.as_bytes(), ts));
                    }
                }
                assert_eq!(copy.range_dels().len(), 1);
                assert_eq!(copy.approximate_bytes(), direct.approximate_bytes());
                assert_eq!(
                    (copy.max_ts(), copy.id()),
                    (direct.max_ts(), replayed_mem.id())
                );
                assert!(copy.without_segments().is_none());
            }
        }
    }

    /// Review (revrf): versions over a real map of a segment larger than
    /// 4 GiB (a sparse file). A key that starts past 4 GiB is copied; one
    /// that starts below it with its value past it stays in the segment;
    /// both read back their exact bytes.
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn versions_past_4_gib_into_a_segment_read_back_exactly() {
        use crate::io::{FileSystem, OsFileSystem};
        use std::io::{Seek, SeekFrom, Write};
        const G4: u64 = 1 << 32;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("000001.wal");
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(G4 + (64 << 10)).unwrap();
        // Below 4 GiB: key "straddle" 3 bytes before the boundary, then a
        // 1-byte length prefix, then the value past the boundary.
        let low = G4 - 3;
        f.seek(SeekFrom::Start(low)).unwrap();
        f.write_all(b"straddle\x05value").unwrap();
        let high = G4 + 100;
        f.seek(SeekFrom::Start(high)).unwrap();
        f.write_all(b"farkey\x08farvalue").unwrap();
        drop(f);
        let segment: MappedSegment = OsFileSystem.map(&path).unwrap();
        let bytes = segment.bytes();
        let at = |o: u64, n: usize| &bytes[o as usize..o as usize + n];
        let v = MemKey::in_segment(&segment, at(low, 8), 1, ValueKind::Put, at(low + 9, 5));
        assert!(matches!(v.bytes, VersionBytes::InSegment { .. }));
        assert_eq!((v.user_key(), v.value()), (&b"straddle"[..], &b"value"[..]));
        let far = MemKey::in_segment(&segment, at(high, 6), 2, ValueKind::Put, at(high + 7, 8));
        assert!(matches!(far.bytes, VersionBytes::Owned(_)));
        assert_eq!(
            (far.user_key(), far.value()),
            (&b"farkey"[..], &b"farvalue"[..])
        );
        let del = MemKey::in_segment(&segment, at(high, 6), 3, ValueKind::Delete, &[]);
        assert_eq!((del.user_key(), del.value()), (&b"farkey"[..], &b""[..]));
        let empty = MemKey::in_segment(&segment, at(high, 6), 4, ValueKind::Put, at(high + 7, 0));
        assert_eq!(
            (empty.user_key(), empty.value()),
            (&b"farkey"[..], &b""[..])
        );
    }

    #[test]
    fn a_version_is_64_bytes() {
        assert_eq!(std::mem::size_of::<MemKey>(), 64);
    }

    /// A version is built over the segment only when its key and value lie
    /// inside it; otherwise (or for a delete's empty value) it is copied or
    /// points at no value.
    #[test]
    fn in_segment_versions_fall_back_to_a_copy_outside_the_segment() {
        let segment: MappedSegment = Arc::new(InMemory(b"..key..value..".to_vec()));
        let bytes = segment.bytes();
        let (key, value) = (&bytes[2..5], &bytes[7..12]);
        let v = MemKey::in_segment(&segment, key, 3, ValueKind::Put, value);
        assert!(matches!(v.bytes, VersionBytes::InSegment { .. }));
        assert_eq!((v.user_key(), v.value()), (&b"key"[..], &b"value"[..]));
        let d = MemKey::in_segment(&segment, key, 4, ValueKind::Delete, &[]);
        assert!(matches!(d.bytes, VersionBytes::InSegment { .. }));
        assert_eq!((d.user_key(), d.value()), (&b"key"[..], &b""[..]));
        let elsewhere = b"other".to_vec();
        let c = MemKey::in_segment(&segment, &elsewhere, 5, ValueKind::Put, value);
        assert!(matches!(c.bytes, VersionBytes::Owned(_)));
        assert_eq!((c.user_key(), c.value()), (&b"other"[..], &b"value"[..]));
        // A value before its key (never in a record) is copied too.
        let backwards = MemKey::in_segment(&segment, value, 6, ValueKind::Put, key);
        assert!(matches!(backwards.bytes, VersionBytes::Owned(_)));
        assert_eq!(backwards.value(), b"key");
    }

    #[test]
    fn reads_see_only_versions_at_or_before_the_snapshot() {
        let m = Memtable::new(1);
        m.apply(&batch(&[("a", Some("1"))]), 1);
        m.apply(&batch(&[("a", Some("2")), ("b", Some("x"))]), 2);
        m.apply(&batch(&[("a", None)]), 3);
        assert!(m.get(b"a", 0).is_none());
        assert_eq!(m.get(b"a", 1).unwrap().2, b"1");
        assert_eq!(m.get(b"a", 2).unwrap().2, b"2");
        assert_eq!(m.get(b"a", 3).unwrap().1, ValueKind::Delete);
        assert!(m.get(b"aa", 3).is_none());
        assert!(m.get(b"", 3).is_none());
        assert_eq!(m.max_ts(), 3);
    }

    /// The filter is set before a version becomes reachable: a reader that
    /// sees a commit's timestamp published finds every key of it, while the
    /// writer keeps inserting (the engine publishes its visible timestamp
    /// the same way, after `apply`).
    #[test]
    fn readers_never_miss_a_published_key_while_the_writer_inserts() {
        let m = Arc::new(Memtable::sized(1, 64 << 10));
        let published = Arc::new(AtomicU64::new(0));
        let writer = {
            let (m, published) = (m.clone(), published.clone());
            std::thread::spawn(move || {
                for ts in 1..=3000u64 {
                    m.apply(&batch(&[(&format!("k{ts}"), Some("v"))]), ts);
                    published.store(ts, AtomicOrdering::Release);
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (m, published) = (m.clone(), published.clone());
                std::thread::spawn(move || {
                    let mut checked = 0;
                    loop {
                        let upto = published.load(AtomicOrdering::Acquire);
                        // The newest published key, and an older one.
                        for ts in [upto, upto / 2 + r] {
                            if (1..=upto).contains(&ts) {
                                let key = format!("k{ts}");
                                assert!(m.get(key.as_bytes(), upto).is_some(), "{key} at {upto}");
                                assert_eq!(m.newest_ts(key.as_bytes()), Some(ts));
                                checked += 1;
                            }
                        }
                        if upto == 3000 {
                            return checked;
                        }
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        // A 64 KiB memtable's filter is 1 KiB: far past its sized load
        // (3000 keys), it still answers correctly, only less selectively.
        assert!(m.get(b"absent", 3000).is_none());
    }

    #[test]
    fn last_write_in_a_batch_wins() {
        let m = Memtable::new(1);
        m.apply(&batch(&[("k", Some("1")), ("k", Some("2"))]), 5);
        assert_eq!(m.get(b"k", 5).unwrap().2, b"2");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn head_comparison_orders_like_the_full_keys() {
        // Keys made of few distinct bytes (0 included), with lengths around
        // the 16-byte head, so ties, prefixes and padding all occur.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for _ in 0..400 {
            let len = (next() % 22) as usize;
            keys.push(
                (0..len)
                    .map(|_| [0u8, 1, 0xff][(next() % 3) as usize])
                    .collect(),
            );
        }
        for a in &keys {
            for b in &keys {
                for (ta, tb) in [(1, 1), (1, 2), (2, 1)] {
                    let (x, y) = (MemKey::new(a, ta), MemKey::new(b, tb));
                    let want = compare_versions(a, ta, b, tb);
                    assert_eq!(x.cmp(&y), want, "{a:?}@{ta} vs {b:?}@{tb}");
                    let probe = Probe::new(a, ta);
                    let probe: &dyn Version = &probe;
                    assert_eq!(
                        probe.cmp(y.borrow()),
                        want,
                        "probe {a:?}@{ta} vs {b:?}@{tb}"
                    );
                }
            }
        }
    }

    /// A replayed memtable (versions in a sorted array) answers every
    /// range, forward and backward, every `each_newer` and every point
    /// read as a memtable that applied the same batches (skiplist).
    #[test]
    fn replayed_ranges_match_the_skiplist() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let key = |i: u64| format!("k{i:03}");
        let batches: Vec<WriteBatch> = (0..40)
            .map(|_| {
                let mut b = WriteBatch::new();
                for _ in 0..1 + next(6) {
                    let k = key(next(60));
                    if next(4) == 0 {
                        b.delete(&k).unwrap();
                    } else {
                        b.put(&k, format!("v{}", next(1000))).unwrap();
                    }
                }
                b
            })
            .collect();
        let direct = Memtable::new(1);
        let mut replayed_mem = Memtable::new(2);
        let mut replayed = Replayed::default();
        for (i, b) in batches.iter().enumerate() {
            let ts = i as u64 + 1;
            direct.apply(b, ts);
            let mut record = Vec::new();
            b.encode_record(ts, &mut record);
            replayed_mem
                .replay_record(&record, None, &mut replayed)
                .unwrap();
        }
        replayed_mem.insert_replayed(replayed);
        assert!(!replayed_mem.sorted.is_empty() && replayed_mem.map.is_empty());
        assert_eq!(replayed_mem.len(), direct.len());
        let versions = |r: VersionRange<'_>, back: bool| {
            let v: Vec<_> = if back {
                r.rev()
                    .map(|e| (e.key().user_key().to_vec(), e.key().ts))
                    .collect()
            } else {
                r.map(|e| (e.key().user_key().to_vec(), e.key().ts))
                    .collect()
            };
            v
        };
        for _ in 0..2000 {
            // Bounds on keys present and absent, at timestamps inside and
            // outside the versions', including empty and inverted ranges.
            let mut bound = || {
                let k = MemKey::new(key(next(64)).as_bytes(), next(45));
                match next(3) {
                    0 => Bound::Included(k),
                    1 => Bound::Excluded(k),
                    _ => Bound::Unbounded,
                }
            };
            let (lower, upper) = (bound(), bound());
            let back = next(2) == 0;
            let copy = |b: &Bound<MemKey>| match b {
                Bound::Included(k) => Bound::Included(MemKey::new(k.user_key(), k.ts)),
                Bound::Excluded(k) => Bound::Excluded(MemKey::new(k.user_key(), k.ts)),
                Bound::Unbounded => Bound::Unbounded,
            };
            assert_eq!(
                versions(replayed_mem.range(copy(&lower), copy(&upper)), back),
                versions(direct.range(lower, upper), back)
            );
        }
        for lo in 0..62 {
            let range: KeyRange = (
                Bound::Included(key(lo).into_bytes()),
                Bound::Excluded(key(lo + next(5)).into_bytes()),
            );
            let since = next(42);
            let newer = |m: &Memtable| {
                let mut keys = Vec::new();
                m.each_newer(&range, since, |k| {
                    keys.push(k.to_vec());
                    true
                });
                keys
            };
            assert_eq!(newer(&replayed_mem), newer(&direct));
        }
        for i in 0..64 {
            for ts in 0..=42 {
                let k = key(i);
                assert_eq!(
                    replayed_mem.get(k.as_bytes(), ts),
                    direct.get(k.as_bytes(), ts)
                );
            }
            assert_eq!(
                replayed_mem.newest_ts(key(i).as_bytes()),
                direct.newest_ts(key(i).as_bytes())
            );
        }
        assert_eq!(
            versions(replayed_mem.iter(), true),
            versions(direct.iter(), true)
        );
    }

    /// A second replay into the same memtable (no open does that) keeps
    /// every version readable: versions are never split between the
    /// sorted array and the skiplist.
    #[test]
    fn a_second_replay_into_one_memtable_keeps_every_version() {
        let mut mem = Memtable::new(1);
        for (ts, b) in [
            (1, batch(&[("a", Some("1")), ("c", Some("3"))])),
            (2, batch(&[("b", Some("2")), ("a", Some("4"))])),
        ] {
            let mut replayed = Replayed::default();
            let mut record = Vec::new();
            b.encode_record(ts, &mut record);
            mem.replay_record(&record, None, &mut replayed).unwrap();
            mem.insert_replayed(replayed);
        }
        assert!(mem.sorted.is_empty());
        assert_eq!(mem.len(), 4);
        assert_eq!(mem.get(b"a", 9).unwrap().2, b"4");
        assert_eq!(mem.get(b"a", 1).unwrap().2, b"1");
        assert_eq!(mem.get(b"c", 9).unwrap().2, b"3");
        assert_eq!(mem.get(b"b", 9).unwrap().2, b"2");
    }
}
