//! Reading a table file, version 1 or 2: `open` checks only what sits at the
//! end of the file (footer, metaindex, properties), so opening a database
//! touches a page or two per table. The index is checked and decoded the
//! first time a read needs it ([`Table::meta`]), the bloom filter and the
//! hash index the first time a point read needs them (scans never read
//! them);
//! data blocks are checked the first time they are touched and then trusted
//! (see "Checksums" in docs/format-table.md). An uncompressed data block is
//! read in place from the memory map, and so are an uncompressed filter and
//! hash index.
//!
//! The decoded index and filter stay with the open table (until the table
//! cache closes it). With a block cache ([`Table::open_cached`]) their bytes
//! are charged to it, and each decompressed data block is cached, keyed by
//! (file number, block offset); without one a compressed block is
//! decompressed on every load.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use crate::cache::BlockCache;
use crate::key_hints::KeyHints;

use super::block::{entry_at, parse_v2_stored, BlockLayout, RawEntry};
use super::bloom::{bloom_hash, may_contain_hash};
use super::compress::{decompress, TYPE_NONE};
use super::footer::{decode_footer, Footer, FooterV1, FooterV2};
use super::hash_index::{self, SlotAt};
use super::meta::{
    check_props, decode_index, decode_metaindex, decode_props, read_v2_entries, read_v2_raw,
    region, BlockHandle, Contents, Index,
};
use super::{table_file_name, TableSummary, FOOTER_LEN, TABLE_KIND_KV, TABLE_KIND_KV_RANGEDEL};
use crate::error::{Error, Result};
use crate::io::FileBytes;
use crate::key::{compare_versions, decode_internal, Timestamp, ValueKind, INTERNAL_SUFFIX_LEN};
use crate::range_del::{decode_block, RangeDelSet};

/// One version read from a table, borrowed from the file's bytes (or from
/// the decompressed block that holds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableEntry<'a> {
    pub user_key: &'a [u8],
    pub ts: Timestamp,
    pub kind: ValueKind,
    pub value: &'a [u8],
}

/// An open, immutable table file. `Send + Sync`: readers share it through an
/// `Arc`; the only mutable state is atomics.
pub struct Table {
    number: u64,
    bytes: Arc<dyn FileBytes>,
    /// Format version of the file: 1 or 2.
    version: u32,
    /// Where the index and filter are (found at open, decoded on first use).
    locations: Locations,
    /// The index and filter once a read needed them, and whether their
    /// bytes were charged to the block cache (given back on drop).
    meta: OnceLock<Meta>,
    meta_charged: OnceLock<bool>,
    /// Where decoded blocks are cached, if anywhere.
    cache: Option<Arc<BlockCache>>,
    /// Set once a data block stored compressed was seen: only then is the
    /// block cache consulted for data blocks (an uncompressed table never
    /// pays a lookup).
    saw_compressed: AtomicBool,
    /// The bloom filter once a point read needed it: scans never read it,
    /// so the device reads of a cold scan are the blocks it needs.
    filter: OnceLock<Option<Filter>>,
    /// The hash index's buckets once a point read needed them (`None`: the
    /// table has none, or one of a version this build does not know).
    hash: OnceLock<Option<HashBuckets>>,
    /// The properties, with the key range and timestamps widened to cover
    /// the range tombstones (what the manifest records).
    summary: TableSummary,
    /// The properties as stored: data entries only (checked against the
    /// index).
    data_summary: TableSummary,
    /// The `rangedel` block (kind 1 tables), checked at open.
    range_dels: Arc<RangeDelSet>,
    /// Shared with the table's handle in the LSM, so the counts survive the
    /// table being closed and reopened by the table cache.
    counters: Arc<TableCounters>,
    /// When the whole file was last found in the page cache (see
    /// [`Table::get_is_resident`]).
    resident: Residency,
}

/// How long a table whose whole file was found in the page cache is
/// trusted to still be there by reads that must not wait for the device.
pub(crate) const RESIDENT_TRUST_MS: u64 = 100;

/// Milliseconds on a monotonic clock private to this process. A read asks
/// once and passes the answer to each table's [`Table::get_is_resident`]:
/// a clock read per table probed was ~30% of a warm `await db.get`.
///
/// On Linux the coarse clock (the kernel's last tick, read from the vDSO
/// without a timestamp-counter read) serves: its few milliseconds of
/// resolution are nothing against [`RESIDENT_TRUST_MS`], and the precise
/// clock was still ~2% of a warm `await db.get` (`perf`).
pub(crate) fn clock_ms() -> u64 {
    #[cfg(target_os = "linux")]
    if let Some(ms) = coarse_clock_ms() {
        return ms;
    }
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// `CLOCK_MONOTONIC_COARSE` in milliseconds, or `None` where the kernel
/// lacks it (before 2.6.32): then every call is `None`, so [`clock_ms`]
/// never mixes the two clocks.
#[cfg(target_os = "linux")]
fn coarse_clock_ms() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes only to `ts`, a valid timespec.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0;
    ok.then(|| ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000)
}

/// [`Table::get_is_resident`]'s memory, in [`clock_ms`] milliseconds.
#[derive(Debug, Default)]
struct Residency {
    /// Until then every page of the file counts as resident.
    trusted_until: AtomicU64,
    /// The whole file is asked about again no sooner than this.
    next_full_check: AtomicU64,
}

/// Byte ranges of the lazily decoded meta blocks.
#[derive(Debug, Clone)]
struct Locations {
    index: Range<usize>,
    filter: Option<Range<usize>>,
    /// The `index.hash` block, as stored.
    hash: Option<Range<usize>>,
}

/// What a table keeps in memory once it was first read.
struct Meta {
    /// The decoded index block: one handle per data block, in order.
    index: Index,
    /// Search hints over the blocks' last user keys (key_hints.rs): they
    /// narrow the index search to the blocks whose hint equals the key's
    /// before any index key is touched (see [`Table::find_block`]).
    hints: KeyHints,
    /// Bit `i` is set once data block `i` passed its CRC and consistency
    /// checks. Relaxed ordering suffices: the bytes never change, so the only
    /// cost of a stale read is checking a block twice.
    verified: Vec<AtomicU64>,
    /// Entry `i` is set once data block `i` was verified (as above) and
    /// found stored uncompressed: a point read may then decode an entry of
    /// it in place at a byte offset from the hash index, bounded by the
    /// entries region as a loaded block's reads are, without reading the
    /// block's trailer, count or offsets (`Table::get_in_place`).
    in_place: Vec<InPlace>,
    /// Each data block's first byte in the file, 4 bytes a block (empty
    /// for a file of 4 GiB or more, whose reads take it from the handle):
    /// a hash-index read finds the entry's address here and starts loading
    /// its lines before it reads the block's [`InPlace`] state. On a tree
    /// larger than the CPU caches that state is a miss of its own, and the
    /// entry's load no longer waits for it (docs/performance.md, "Session
    /// 36").
    starts: Vec<u32>,
    /// Heap bytes this holds, charged to the block cache while the table is open.
    charge: u64,
}

#[cfg(test)]
thread_local! {
    /// Tests: tables whose index is decoded on this thread keep no
    /// [`Meta::starts`], as for a file of 4 GiB or more.
    pub(crate) static NO_BLOCK_STARTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What a point read decoding an entry in place needs of one data block
/// besides its start ([`Meta::starts`]): 8 bytes, so eight blocks share a
/// cache line. The read touches this instead of the block's 40-byte
/// handle, whose array (plus the separate flags) missed the caches twice
/// per read on a 1M-key database (`perf`, docs/performance.md "Point
/// reads, session 29").
struct InPlace {
    /// 0 until the block is known to be verified and stored uncompressed;
    /// then its stored length (high 32 bits) and the length of its entries
    /// region plus one (low 32 bits). A block whose lengths do not fit
    /// stays 0 and is always loaded.
    state: AtomicU64,
}

impl InPlace {
    fn pack(stored_len: usize, entries_len: usize) -> Option<u64> {
        let stored = u32::try_from(stored_len).ok()?;
        let entries = u32::try_from(entries_len.checked_add(1)?).ok()?;
        Some(u64::from(stored) << 32 | u64::from(entries))
    }

    /// `(stored length, entries region length)` once set.
    fn get(&self) -> Option<(usize, usize)> {
        let state = self.state.load(AtomicOrdering::Relaxed);
        let entries = (state & 0xffff_ffff) as usize;
        (entries != 0).then(|| ((state >> 32) as usize, entries - 1))
    }
}

/// How many bytes from an entry's start a hash-index read prefetches
/// before decoding it: three lines hold the header, a 16-byte key and a
/// 100-byte value wherever the entry starts in its first line.
const ENTRY_PREFETCH: usize = 192;

/// Asks the CPU to start loading the cache lines of `bytes[range]` (a
/// value the caller is about to copy out): its lines past the entry's
/// first then arrive while the read finishes its bookkeeping, instead of
/// one after another inside the copy. A hint only; out of range does
/// nothing.
#[inline]
fn prefetch(bytes: &[u8], range: Range<usize>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(v) = bytes.get(range) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const LINE: usize = 64;
        // A few lines at most: a large value is copied at memory speed
        // anyway, and prefetching it all would evict what the read needs.
        for off in (0..v.len().min(4 * LINE)).step_by(LINE) {
            // SAFETY: `_mm_prefetch` never faults, and the pointer is in
            // bounds of `v`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().add(off).cast()) };
        }
        if let Some(last) = v.len().checked_sub(1) {
            // SAFETY: as above; `last` is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(v.as_ptr().add(last).cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, range);
}

/// An uncompressed filter is read in place from the file; a compressed one
/// is decompressed once.
enum Filter {
    Mapped(Range<usize>),
    Owned(Vec<u8>),
}

/// The hash index's bucket array: read in place from the file when stored
/// uncompressed (the writer aligns it to 64-byte file offsets), else
/// decompressed once.
enum HashBuckets {
    /// The buckets' file range and the slot encoding's version.
    Mapped(Range<usize>, u8),
    Owned(Vec<u8>, u8),
}

/// Walking more versions than this from the one the hash index names (a
/// read at an old snapshot of a key with many versions) switches to the
/// binary search, which finds the right one in O(log n).
const MAX_VERSION_WALK: usize = 16;

/// Read counters of one table, for the engine's statistics.
#[derive(Debug, Default)]
pub struct TableCounters {
    /// Bytes of data blocks loaded (stored length, cache hits included).
    pub bytes_read: AtomicU64,
    /// Data blocks loaded (point lookups and iterators).
    pub data_block_reads: AtomicU64,
    /// Point lookups that consulted the bloom filter.
    pub bloom_checked: AtomicU64,
    /// Lookups the filter answered "absent", saving a data block read.
    pub bloom_useful: AtomicU64,
    /// Point lookups that consulted the hash index (the filter let them pass).
    pub hash_checked: AtomicU64,
    /// Lookups the hash index answered "absent" without a data block read.
    pub hash_useful: AtomicU64,
}

/// Where the entries of a loaded data block live: in place in the file
/// (uncompressed) or in a buffer holding the decompressed contents.
#[derive(Debug, Clone)]
pub(crate) enum BlockBuf {
    Mapped,
    Owned(Arc<[u8]>),
}

/// A version found by [`Table::get`]; it holds the decompressed block when
/// there is one, so the entry can borrow from it.
#[derive(Debug)]
pub struct TableGet<'a> {
    table: &'a Table,
    buf: BlockBuf,
    pos: EntryPos,
}

impl TableGet<'_> {
    /// The value in a private mapping of its own (zero-copy values,
    /// io/value_map.rs): only for a value read in place from the file (an
    /// uncompressed block) when the file system can map it.
    pub(crate) fn map_value(&self) -> Option<crate::io::ValueMap> {
        match self.buf {
            BlockBuf::Mapped => self.table.bytes.map_value(self.pos.value.clone()),
            BlockBuf::Owned(_) => None,
        }
    }

    pub fn entry(&self) -> TableEntry<'_> {
        // `pos` came from `buf` of this table, so the ranges are in bounds;
        // the fallback only guards against a bug.
        self.table.view(&self.buf, &self.pos).unwrap_or(TableEntry {
            user_key: &[],
            ts: self.pos.ts,
            kind: self.pos.kind,
            value: &[],
        })
    }
}

/// Absolute byte ranges and decoded suffix of one data entry, so iterators
/// can remember a position without borrowing the table.
#[derive(Debug, Clone)]
pub(crate) struct EntryPos {
    user_key: Range<usize>,
    value: Range<usize>,
    ts: Timestamp,
    kind: ValueKind,
}

/// A position in the table: data block number, its layout, entry number.
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    pub(crate) block: usize,
    pub(crate) buf: BlockBuf,
    pub(crate) layout: BlockLayout,
    pub(crate) idx: usize,
    pub(crate) entry: EntryPos,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .field("version", &self.version)
            .field("blocks", &self.meta.get().map(|m| m.index.handles.len()))
            .field("summary", &self.summary)
            .finish()
    }
}

impl Table {
    /// Validates footer, magic, version, metaindex and properties; the
    /// index and filter are checked when first needed ([`Table::meta`]).
    pub fn open(number: u64, bytes: Arc<dyn FileBytes>) -> Result<Table> {
        Table::open_cached(number, bytes, None, Arc::default())
    }

    /// [`Table::open`], decoded blocks kept in `cache` (if any) and reads
    /// counted in `counters`.
    pub(crate) fn open_cached(
        number: u64,
        bytes: Arc<dyn FileBytes>,
        cache: Option<Arc<BlockCache>>,
        counters: Arc<TableCounters>,
    ) -> Result<Table> {
        let name = table_file_name(number);
        let file = bytes.bytes();
        let footer = decode_footer(file).map_err(|m| corrupt(&name, m))?;
        let meta_end = file.len() - FOOTER_LEN; // decode_footer checked the length
        let (version, locations, summary, tombstones) = match footer {
            Footer::V1(f) => {
                let (locations, summary) =
                    open_v1(file, &f, meta_end).map_err(|m| corrupt(&name, m))?;
                (1, locations, summary, Vec::new())
            }
            Footer::V2(f) => {
                let (locations, summary, tombstones) =
                    open_v2(file, &f, meta_end).map_err(|m| corrupt(&name, m))?;
                (2, locations, summary, tombstones)
            }
        };
        let data_summary = TableSummary {
            file_size: file.len() as u64,
            ..summary
        };
        let mut summary = data_summary.clone();
        crate::range_del::widen_summary(&mut summary, &tombstones);
        Ok(Table {
            number,
            bytes,
            version,
            locations,
            meta: OnceLock::new(),
            meta_charged: OnceLock::new(),
            cache,
            saw_compressed: AtomicBool::new(false),
            filter: OnceLock::new(),
            hash: OnceLock::new(),
            summary,
            data_summary,
            range_dels: Arc::new(RangeDelSet::new(tombstones)),
            counters,
            resident: Residency::default(),
        })
    }

    /// The index and filter, checked and decoded on first use (and charged
    /// to the block cache, if there is one). A damaged block is reported on
    /// every call (nothing is kept then).
    fn meta(&self) -> Result<&Meta> {
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let meta = self
            .decode_meta()
            .map_err(|m| corrupt(&table_file_name(self.number), m))?;
        let charge = meta.charge;
        // Another thread may have won the race with an identical value;
        // only the winner charges the cache.
        if self.meta.set(meta).is_ok() {
            if let Some(cache) = &self.cache {
                let _ = self.meta_charged.set(cache.charge_meta(charge));
            }
        }
        self.meta
            .get()
            .ok_or_else(|| Error::internal("table metadata vanished"))
    }

    fn decode_meta(&self) -> Result<Meta, String> {
        let file = self.bytes.bytes();
        let range = self.locations.index.clone();
        let index = if self.version == 1 {
            BlockLayout::parse(file, range.start, range.len(), true)
                .map_err(String::from)
                .and_then(|layout| {
                    decode_index(
                        &Contents {
                            bytes: Cow::Borrowed(file),
                            layout,
                        },
                        range.start,
                    )
                })
        } else {
            read_v2_entries(file, range.clone()).and_then(|b| decode_index(&b, range.start))
        }
        .map_err(|m| format!("index block at {}: {m}", range.start))?;
        check_props(&self.data_summary, &index)?;
        let bitmap = || -> Vec<AtomicU64> {
            (0..index.handles.len().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        let verified = bitmap();
        let in_place: Vec<InPlace> = index
            .handles
            .iter()
            .map(|_| InPlace {
                state: AtomicU64::new(0),
            })
            .collect();
        let mut starts = Vec::with_capacity(index.handles.len());
        for h in &index.handles {
            let Ok(start) = u32::try_from(h.offset) else {
                starts = Vec::new();
                break;
            };
            starts.push(start);
        }
        #[cfg(test)]
        let starts = if NO_BLOCK_STARTS.with(std::cell::Cell::get) {
            Vec::new()
        } else {
            starts
        };
        let hints = KeyHints::new(
            index
                .handles
                .iter()
                .map(|h| index.keys.get(h.last_user_key()).unwrap_or_default()),
        );
        let charge = (std::mem::size_of::<Meta>()
            + index.handles.capacity() * std::mem::size_of::<BlockHandle>()
            + index.keys.capacity()
            + hints.heap_bytes()
            + verified.capacity() * 8
            + in_place.capacity() * std::mem::size_of::<InPlace>()
            + starts.capacity() * 4) as u64;
        Ok(Meta {
            index,
            hints,
            verified,
            in_place,
            starts,
            charge,
        })
    }

    /// The `filter.bloom` contents (version 2), CRC-checked.
    fn decode_filter(&self) -> Result<Option<Filter>, String> {
        let file = self.bytes.bytes();
        let Some(range) = &self.locations.filter else {
            return Ok(None);
        };
        match read_v2_raw(file, range.clone()) {
            Ok(Cow::Borrowed(b)) => Ok(Some(Filter::Mapped(offset_in(file, b)))),
            Ok(Cow::Owned(v)) => Ok(Some(Filter::Owned(v))),
            Err(m) => Err(format!("filter.bloom at {}: {m}", range.start)),
        }
    }

    /// The `index.hash` buckets (version 2), CRC-checked and framed;
    /// `None` without the block or for a version this build does not know.
    fn decode_hash(&self) -> Result<Option<HashBuckets>, String> {
        let file = self.bytes.bytes();
        let Some(range) = &self.locations.hash else {
            return Ok(None);
        };
        let at = |m: String| format!("index.hash at {}: {m}", range.start);
        let contents = read_v2_raw(file, range.clone()).map_err(at)?;
        let Some(layout) = hash_index::parse(&contents).map_err(at)? else {
            return Ok(None);
        };
        Ok(Some(match contents {
            Cow::Borrowed(b) => {
                let start = offset_in(file, b).start;
                HashBuckets::Mapped(
                    start + layout.buckets.start..start + layout.buckets.end,
                    layout.version,
                )
            }
            Cow::Owned(v) => HashBuckets::Owned(
                v.get(layout.buckets).unwrap_or_default().to_vec(),
                layout.version,
            ),
        }))
    }

    /// The hash index's buckets and slot version, checked on the first
    /// point read. A damaged block is reported on every call (nothing is
    /// kept then).
    fn hash_buckets(&self) -> Result<Option<(&[u8], u8)>> {
        let hash = match self.hash.get() {
            Some(h) => h,
            None => {
                let h = self
                    .decode_hash()
                    .map_err(|m| corrupt(&table_file_name(self.number), m))?;
                // Another thread may have won the race with an identical value.
                let _ = self.hash.set(h);
                self.hash
                    .get()
                    .ok_or_else(|| Error::internal("table hash index vanished"))?
            }
        };
        Ok(match hash {
            None => None,
            Some(HashBuckets::Mapped(r, v)) => self.bytes.bytes().get(r.clone()).map(|b| (b, *v)),
            Some(HashBuckets::Owned(b, v)) => Some((b.as_slice(), *v)),
        })
    }

    /// Checks and decodes the index, filter and hash index now (tests and
    /// tools that want open-time errors).
    #[allow(dead_code)]
    pub(crate) fn load_meta(&self) -> Result<()> {
        self.meta()?;
        self.filter_bytes()?;
        self.hash_buckets().map(drop)
    }

    /// The bloom filter, checked and decoded on the first point read. A
    /// damaged filter is reported on every call (nothing is cached then).
    fn filter_bytes(&self) -> Result<Option<&[u8]>> {
        let filter = match self.filter.get() {
            Some(f) => f,
            None => {
                let f = self
                    .decode_filter()
                    .map_err(|m| corrupt(&table_file_name(self.number), m))?;
                // Another thread may have won the race with an identical value.
                let _ = self.filter.set(f);
                self.filter
                    .get()
                    .ok_or_else(|| Error::internal("table filter vanished"))?
            }
        };
        Ok(match filter {
            None => None,
            Some(Filter::Mapped(r)) => self.bytes.bytes().get(r.clone()),
            Some(Filter::Owned(v)) => Some(v),
        })
    }

    /// Format version of the file (1 or 2).
    #[allow(dead_code)] // for tests and tools; the engine reads both alike
    pub fn format_version(&self) -> u32 {
        self.version
    }

    /// Tests: whether the decoded index keeps the blocks' starts.
    #[cfg(test)]
    pub(crate) fn keeps_block_starts(&self) -> Result<bool> {
        Ok(!self.meta()?.starts.is_empty())
    }

    /// Data block reads and bloom filter use so far (summed into `Stats`
    /// through the table's handle, which shares them).
    #[allow(dead_code)] // tests and tools
    pub fn counters(&self) -> &TableCounters {
        &self.counters
    }

    /// Read back from the properties block (and the file's length).
    /// Newest timestamp of any data entry (range tombstones not counted).
    pub(crate) fn data_max_ts(&self) -> Timestamp {
        self.data_summary.max_ts
    }

    /// The range tombstones this table holds (none for kind 0 tables).
    pub(crate) fn range_dels(&self) -> &Arc<RangeDelSet> {
        &self.range_dels
    }

    pub fn summary(&self) -> &TableSummary {
        &self.summary
    }

    /// Newest version of `user_key` with ts <= `snapshot` (a Delete entry is
    /// returned as such; the caller interprets tombstones). Binary search the
    /// index, then the block.
    ///
    /// The bloom filter, when the table has one, is consulted first: a key
    /// it rules out costs no data block read. (It is an eighth the size of
    /// the hash index, so it stays in the CPU caches where the hash index
    /// does not: probing it first made absent keys faster and present ones
    /// no slower, docs/performance.md "Hash index".) Then a table with a
    /// hash index goes from the key's hash to the entry of its newest
    /// version ([`Table::get_hashed`]), which also catches the filter's
    /// false positives without a data block read.
    pub fn get(&self, user_key: &[u8], snapshot: Timestamp) -> Result<Option<TableGet<'_>>> {
        self.get_with_hash(user_key, bloom_hash(user_key), snapshot)
    }

    /// [`Table::get`] with the key's [`bloom_hash`] computed by the caller,
    /// once for every table a read probes (it feeds both the filter and the
    /// hash index).
    pub(crate) fn get_with_hash(
        &self,
        user_key: &[u8],
        hash: u64,
        snapshot: Timestamp,
    ) -> Result<Option<TableGet<'_>>> {
        // The index first, so a damaged one fails every read, even of keys
        // the filter rules out.
        let meta = self.meta()?;
        if let Some(filter) = self.filter_bytes()? {
            self.counters
                .bloom_checked
                .fetch_add(1, AtomicOrdering::Relaxed);
            if !may_contain_hash(filter, hash) {
                self.counters
                    .bloom_useful
                    .fetch_add(1, AtomicOrdering::Relaxed);
                return Ok(None);
            }
        }
        if let Some((buckets, version)) = self.hash_buckets()? {
            return self.get_hashed(meta, buckets, version, user_key, hash, snapshot);
        }
        self.get_searched(meta, user_key, snapshot)
    }

    /// [`Table::get`] by binary search: the index, then the block.
    fn get_searched(
        &self,
        meta: &Meta,
        user_key: &[u8],
        snapshot: Timestamp,
    ) -> Result<Option<TableGet<'_>>> {
        // The first entry at or after (user_key, snapshot) in internal order
        // is the newest version with ts <= snapshot, if it is of user_key.
        let found = self.find_with(
            meta,
            |k, ts| compare_versions(k, ts, user_key, snapshot) == Ordering::Less,
            Some(user_key),
            true,
        )?;
        let Some(cursor) = found else {
            return Ok(None);
        };
        let entry = self
            .view(&cursor.buf, &cursor.entry)
            .ok_or_else(|| self.block_error(cursor.block, "entry outside the file"))?;
        if entry.user_key != user_key {
            return Ok(None);
        }
        Ok(Some(TableGet {
            table: self,
            buf: cursor.buf,
            pos: cursor.entry,
        }))
    }

    /// [`Table::get`] through the hash index: each slot whose fingerprint
    /// matches names the block and entry of some key's newest version; the
    /// first whose key is `user_key` is where its versions start (newest
    /// first), and the answer is the first of them with ts <= `snapshot`.
    /// No match: the key is not in the table, and no data block was read.
    fn get_hashed<'a>(
        &'a self,
        meta: &Meta,
        buckets: &[u8],
        version: u8,
        user_key: &[u8],
        hash: u64,
        snapshot: Timestamp,
    ) -> Result<Option<TableGet<'a>>> {
        self.counters
            .hash_checked
            .fetch_add(1, AtomicOrdering::Relaxed);
        let mut read_a_block = false;
        for slot in hash_index::probe(buckets, version, hash) {
            read_a_block = true;
            let block = slot.block as usize;
            if block >= meta.index.handles.len() {
                return Err(corrupt(
                    &table_file_name(self.number),
                    format!(
                        "index.hash names data block {block} of {}",
                        meta.index.handles.len()
                    ),
                ));
            }
            let (buf, walk) = match slot.at {
                SlotAt::Search => return self.get_searched(meta, user_key, snapshot),
                SlotAt::Offset(offset) => {
                    let offset = offset as usize;
                    match self.get_in_place(meta, block, offset, user_key, snapshot)? {
                        Some(walk) => (BlockBuf::Mapped, walk),
                        None => {
                            let (buf, layout) = self.load_block_with(meta, block, true)?;
                            let bytes = self.buf_bytes(&buf);
                            let walk =
                                self.walk_from(block, bytes, &layout, offset, user_key, snapshot)?;
                            (buf, walk)
                        }
                    }
                }
                SlotAt::Entry(idx) => {
                    let (buf, layout) = self.load_block_with(meta, block, true)?;
                    let bytes = self.buf_bytes(&buf);
                    let walk = self.walk_versions(
                        block,
                        bytes,
                        &layout,
                        usize::from(idx),
                        user_key,
                        snapshot,
                    )?;
                    (buf, walk)
                }
            };
            return match walk {
                Walk::OtherKey => continue, // a fingerprint collision
                Walk::NoVersion => Ok(None),
                Walk::Search => self.get_searched(meta, user_key, snapshot),
                Walk::Found(pos) => Ok(Some(TableGet {
                    table: self,
                    buf,
                    pos,
                })),
            };
        }
        if !read_a_block {
            self.counters
                .hash_useful
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
        Ok(None)
    }

    /// A version-2 slot's fast path: when data block `block` was verified
    /// before and is stored uncompressed, the entry `offset` bytes into it
    /// is decoded in place from the map, so the read touches the bucket and
    /// the entry, not the block's trailer, count or offsets. `None` when the
    /// block is not known to be such, or when the entry is `user_key`'s but
    /// newer than `snapshot` (the caller then loads the block and walks its
    /// older versions).
    fn get_in_place(
        &self,
        meta: &Meta,
        block: usize,
        offset: usize,
        user_key: &[u8],
        snapshot: Timestamp,
    ) -> Result<Option<Walk>> {
        let file = self.bytes.bytes();
        let start = match meta.starts.get(block) {
            Some(&start) => start as usize,
            None => match meta.index.handles.get(block) {
                Some(h) => h.offset,
                None => return Ok(None),
            },
        };
        let at = start + offset;
        // All of a small entry's lines at once, and before the block's state
        // is known: decoding the header and key first and only then touching
        // the value took one miss after the other (docs/performance.md,
        // "Prefetching the entry"), and so did reading the state first. A
        // hint only: for a block not readable in place they load for nothing.
        prefetch(file, at..(at + ENTRY_PREFETCH).min(file.len()));
        let Some(slot) = meta.in_place.get(block) else {
            return Ok(None);
        };
        let Some((stored_len, entries_len)) = slot.get() else {
            return Ok(None);
        };
        // Verified and stored uncompressed: the contents start at the
        // block's first byte, and the entries region is as noted then (an
        // offset past it is corruption here too, as for a loaded block).
        let entries_end = start + entries_len;
        let (pos, _) = self.entry_pos_at(block, file, at, entries_end)?;
        let walk = if file.get(pos.user_key.clone()) != Some(user_key) {
            Walk::OtherKey
        } else if pos.ts <= snapshot {
            prefetch(file, pos.value.clone());
            Walk::Found(pos)
        } else {
            // The caller loads the block (and counts it) to walk on.
            return Ok(None);
        };
        self.count_block_read(stored_len);
        Ok(Some(walk))
    }

    /// Counts a data block as read (its whole stored length), loaded or
    /// decoded in place.
    fn count_block_read(&self, stored_len: usize) {
        self.counters
            .bytes_read
            .fetch_add(stored_len as u64, AtomicOrdering::Relaxed);
        self.counters
            .data_block_reads
            .fetch_add(1, AtomicOrdering::Relaxed);
    }

    /// [`Table::walk_versions`] for a version-2 slot: from the entry
    /// `offset` bytes into a loaded block's contents, stepping entry by
    /// entry (they lie back to back).
    fn walk_from(
        &self,
        block: usize,
        bytes: &[u8],
        layout: &BlockLayout,
        offset: usize,
        user_key: &[u8],
        snapshot: Timestamp,
    ) -> Result<Walk> {
        let end = layout.entries_end();
        let (mut pos, mut next) = self.entry_pos_at(block, bytes, layout.start() + offset, end)?;
        if bytes.get(pos.user_key.clone()) != Some(user_key) {
            return Ok(Walk::OtherKey);
        }
        let mut steps = 0;
        while pos.ts > snapshot {
            steps += 1;
            // Older versions may continue in the next block, or be many:
            // the binary search handles both.
            if next >= end || steps > MAX_VERSION_WALK {
                return Ok(Walk::Search);
            }
            let (p, n) = self.entry_pos_at(block, bytes, next, end)?;
            if bytes.get(p.user_key.clone()) != Some(user_key) {
                return Ok(Walk::NoVersion);
            }
            (pos, next) = (p, n);
        }
        Ok(Walk::Found(pos))
    }

    /// From entry `idx` of a loaded block, which a version-1 slot names as
    /// the newest version of some key: whether that key is `user_key`, and
    /// then which of its versions (walking forward) is the newest with
    /// ts <= `snapshot`.
    fn walk_versions(
        &self,
        block: usize,
        bytes: &[u8],
        layout: &BlockLayout,
        mut idx: usize,
        user_key: &[u8],
        snapshot: Timestamp,
    ) -> Result<Walk> {
        let key_at = |j: usize| {
            let raw = layout.key(bytes, j).map_err(|m| {
                self.block_error(block, format!("entry {j} (from index.hash): {m}"))
            })?;
            decode_internal(raw)
                .ok_or_else(|| self.block_error(block, format!("entry {j}: bad internal key")))
        };
        let first = key_at(idx)?;
        if first.user_key != user_key {
            return Ok(Walk::OtherKey);
        }
        let mut ts = first.ts;
        let mut steps = 0;
        while ts > snapshot {
            idx += 1;
            steps += 1;
            // Older versions may continue in the next block, or be many:
            // the binary search handles both.
            if idx == layout.count() || steps > MAX_VERSION_WALK {
                return Ok(Walk::Search);
            }
            let k = key_at(idx)?;
            if k.user_key != user_key {
                return Ok(Walk::NoVersion);
            }
            ts = k.ts;
        }
        Ok(Walk::Found(self.entry_pos(block, bytes, layout, idx)?))
    }

    /// Whether [`Table::get`] of `user_key` would find everything it reads
    /// in memory (decoded index and filter, the block cache, file pages in
    /// the page cache: `FileBytes::is_resident`), so it cannot wait for the
    /// device. Reads nothing that is not resident; decodes the index and
    /// filter only when their pages are.
    ///
    /// A `mincore` per read measured ~25% of a warm `await db.get`, so a
    /// table whose whole file was found resident is trusted for
    /// [`RESIDENT_TRUST_MS`] without asking again (a page the kernel evicts
    /// within that window costs one read on the caller's thread, as every
    /// read did before); other tables are asked about the pages this read
    /// touches, and about the whole file at most once per window.
    pub(crate) fn get_is_resident(
        &self,
        user_key: &[u8],
        hash: u64,
        snapshot: Timestamp,
        now: u64,
    ) -> Result<bool> {
        if now < self.resident.trusted_until.load(AtomicOrdering::Relaxed) {
            return Ok(true);
        }
        if now >= self.resident.next_full_check.load(AtomicOrdering::Relaxed) {
            self.resident
                .next_full_check
                .store(now + RESIDENT_TRUST_MS, AtomicOrdering::Relaxed);
            if self.bytes.is_resident(0..self.bytes.bytes().len()) {
                self.resident
                    .trusted_until
                    .store(now + RESIDENT_TRUST_MS, AtomicOrdering::Relaxed);
                return Ok(true);
            }
        }
        if self.meta.get().is_none() && !self.bytes.is_resident(self.locations.index.clone()) {
            return Ok(false);
        }
        let meta = self.meta()?;
        if self.filter.get().is_none() {
            if let Some(r) = &self.locations.filter {
                if !self.bytes.is_resident(r.clone()) {
                    return Ok(false);
                }
            }
        }
        if let Some(Filter::Mapped(r)) = self.filter.get().and_then(Option::as_ref) {
            if !self.bytes.is_resident(r.clone()) {
                return Ok(false);
            }
        }
        if let Some(filter) = self.filter_bytes()? {
            if !may_contain_hash(filter, hash) {
                return Ok(true);
            }
        }
        if self.hash.get().is_none() {
            if let Some(r) = &self.locations.hash {
                if !self.bytes.is_resident(r.clone()) {
                    return Ok(false);
                }
            }
        }
        if let Some((buckets, version)) = self.hash_buckets()? {
            if let Some(HashBuckets::Mapped(r, _)) = self.hash.get().and_then(Option::as_ref) {
                let span = hash_index::probe_span(r.len(), hash);
                if !self
                    .bytes
                    .is_resident(r.start + span.start..r.start + span.end)
                {
                    return Ok(false);
                }
            }
            // Every block a matching fingerprint sends the read to. (Older
            // versions continued in the next block are read without asking.)
            for slot in hash_index::probe(buckets, version, hash) {
                match meta.index.handles.get(slot.block as usize) {
                    Some(h) if !self.block_is_resident(h) => return Ok(false),
                    Some(_) => {}
                    None => return Ok(true), // the read reports the damage
                }
            }
            return Ok(true);
        }
        let before = |k: &[u8], ts| compare_versions(k, ts, user_key, snapshot) == Ordering::Less;
        let block = self.find_block(meta, &before, Some(user_key))?;
        let Some(h) = meta.index.handles.get(block) else {
            return Ok(true); // past the last block: nothing to read
        };
        Ok(self.block_is_resident(h))
    }

    /// Whether loading the data block `h` reads only memory: it is in the
    /// block cache, or its pages are in the page cache.
    fn block_is_resident(&self, h: &BlockHandle) -> bool {
        if self.saw_compressed.load(AtomicOrdering::Relaxed) {
            if let Some(cache) = &self.cache {
                if cache.data((self.number, h.offset as u64)).is_some() {
                    return true;
                }
            }
        }
        self.bytes.is_resident(h.offset..h.offset + h.len)
    }

    /// Bytes of table data read so far through get/iter: each time a data
    /// block is loaded its whole length is added, verified before or not.
    #[allow(dead_code)] // tests and tools
    pub fn bytes_read(&self) -> u64 {
        self.counters.bytes_read.load(AtomicOrdering::Relaxed)
    }

    /// The counters, shared (see [`Table::open_cached`]).
    pub(crate) fn shared_counters(&self) -> &Arc<TableCounters> {
        &self.counters
    }

    /// Whether data block `block` has passed its checks (for tests).
    #[cfg(test)]
    pub(crate) fn block_verified(&self, block: usize) -> bool {
        self.meta()
            .unwrap()
            .verified
            .get(block / 64)
            .is_some_and(|w| w.load(AtomicOrdering::Relaxed) & (1 << (block % 64)) != 0)
    }

    /// (offset, stored length) of data block `block`, for tests.
    #[cfg(test)]
    pub(crate) fn block_region(&self, block: usize) -> (usize, usize) {
        let h = &self.meta().unwrap().index.handles[block];
        (h.offset, h.len)
    }

    /// Byte ranges of the index and filter blocks, for tests.
    #[cfg(test)]
    pub(crate) fn meta_regions(&self) -> (Range<usize>, Option<Range<usize>>) {
        (self.locations.index.clone(), self.locations.filter.clone())
    }

    /// Whether the index and filter were decoded yet, for tests.
    #[cfg(test)]
    pub(crate) fn meta_loaded(&self) -> bool {
        self.meta.get().is_some()
    }

    /// The data block a point read of `user_key`'s newest version reads,
    /// by the index search, for tests.
    #[cfg(test)]
    pub(crate) fn block_holding(&self, user_key: &[u8]) -> usize {
        let meta = self.meta().unwrap();
        self.find_block(meta, &|k: &[u8], _| k < user_key, Some(user_key))
            .unwrap()
    }

    /// Whether the table has a hash index this build reads, for tests.
    #[cfg(test)]
    pub(crate) fn has_hash_index(&self) -> bool {
        self.hash_buckets().unwrap().is_some()
    }

    /// Byte range of the `index.hash` block as stored, for tests.
    #[cfg(test)]
    pub(crate) fn hash_region(&self) -> Option<Range<usize>> {
        self.locations.hash.clone()
    }

    /// Whether the table has a bloom filter, for tests.
    #[cfg(test)]
    pub(crate) fn has_filter(&self) -> bool {
        self.filter_bytes().unwrap().is_some()
    }

    /// Every meta block the metaindex lists, known to this build or not, as
    /// (name, stored length), for tests.
    #[cfg(test)]
    pub(crate) fn meta_blocks(&self) -> Vec<(String, usize)> {
        let file = self.bytes.bytes();
        let Ok(Footer::V2(f)) = decode_footer(file) else {
            return Vec::new();
        };
        let range = f.metaindex_offset as usize..(f.metaindex_offset + f.metaindex_len) as usize;
        let block = read_v2_entries(file, range).unwrap();
        (0..block.layout.count())
            .map(|i| {
                let e = block.layout.entry(&block.bytes, i).unwrap();
                let name = String::from_utf8_lossy(&block.bytes[e.key]).into_owned();
                let value = &block.bytes[e.value];
                let len = u32::from_le_bytes(value[8..12].try_into().unwrap()) as usize;
                (name, len)
            })
            .collect()
    }

    /// The names of [`Table::meta_blocks`], for tests.
    #[cfg(test)]
    pub(crate) fn meta_block_names(&self) -> Vec<String> {
        self.meta_blocks().into_iter().map(|(n, _)| n).collect()
    }

    /// The stored length of the meta block `name`, for tests.
    #[cfg(test)]
    pub(crate) fn meta_block_len(&self, name: &str) -> Option<usize> {
        self.meta_blocks()
            .into_iter()
            .find_map(|(n, len)| (n == name).then_some(len))
    }

    /// End of the last data block (0 without blocks), for tests.
    #[cfg(test)]
    pub(crate) fn data_end(&self) -> usize {
        let meta = self.meta().unwrap();
        meta.index.handles.last().map_or(0, |h| h.offset + h.len)
    }

    /// The table's file number.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Byte range in the file of data block `block` (as stored).
    pub(crate) fn block_extent(&self, block: usize) -> Result<Range<usize>> {
        let h = self
            .meta()?
            .index
            .handles
            .get(block)
            .ok_or_else(|| Error::internal(format!("table block {block} out of range")))?;
        Ok(h.offset..h.offset + h.len)
    }

    /// Byte range from the start of the first to the end of the last of
    /// `blocks` (data blocks are contiguous); `None` when it is empty.
    pub(crate) fn block_span(&self, blocks: Range<usize>) -> Result<Option<Range<usize>>> {
        if blocks.is_empty() {
            return Ok(None);
        }
        let start = self.block_extent(blocks.start)?.start;
        let end = self.block_extent(blocks.end - 1)?.end;
        Ok(Some(start..end))
    }

    /// The data block holding file offset `offset`: the last one when the
    /// offset lies past the data (0 without blocks).
    pub(crate) fn block_at_offset(&self, offset: usize) -> Result<usize> {
        let handles = &self.meta()?.index.handles;
        let i = handles.partition_point(|h| h.offset + h.len <= offset);
        Ok(i.min(handles.len().saturating_sub(1)))
    }

    /// The first data block whose last user key is >= `key` (> `key` when
    /// `past`), or the block count: for a scan bounded by `key`, the block
    /// with the bound's end of the range.
    pub(crate) fn first_block_reaching(&self, key: &[u8], past: bool) -> Result<usize> {
        let meta = self.meta()?;
        self.find_block(
            meta,
            &|k: &[u8], _| if past { k <= key } else { k < key },
            None,
        )
    }

    /// Asks the file system to start reading `bytes` of the file
    /// (readahead); advice only.
    pub(crate) fn will_need(&self, bytes: Range<usize>) {
        self.bytes.will_need(bytes);
    }

    pub(crate) fn block_count(&self) -> Result<usize> {
        Ok(self.meta()?.index.handles.len())
    }

    /// Positions at the first entry for which `before(user_key, ts)` is false;
    /// `before` must hold on a prefix of the table in internal order. `None`
    /// when it holds for every entry. `fill`: whether a block decompressed
    /// here goes into the block cache (see [`Table::load_block`]).
    pub(crate) fn find(
        &self,
        before: impl Fn(&[u8], Timestamp) -> bool,
        fill: bool,
    ) -> Result<Option<Cursor>> {
        // Every entry of a block is <= its last key, so the first block whose
        // last key is not `before` holds the first entry that is not.
        let meta = self.meta()?;
        self.find_with(meta, before, None, fill)
    }

    /// [`Table::find`] with the metadata already at hand; `key` is the user
    /// key `before` compares with in a point read, which lets the index
    /// search use the hints.
    fn find_with(
        &self,
        meta: &Meta,
        before: impl Fn(&[u8], Timestamp) -> bool,
        key: Option<&[u8]>,
        fill: bool,
    ) -> Result<Option<Cursor>> {
        let count = meta.index.handles.len();
        let block = self.find_block(meta, &before, key)?;
        if block == count {
            return Ok(None);
        }
        let (buf, layout) = self.load_block_with(meta, block, fill)?;
        let bytes = self.buf_bytes(&buf);
        let idx = partition(layout.count(), |j| {
            let raw = layout
                .key(bytes, j)
                .map_err(|m| self.block_error(block, format!("entry {j}: {m}")))?;
            let key = decode_internal(raw)
                .ok_or_else(|| self.block_error(block, format!("entry {j}: bad internal key")))?;
            Ok(before(key.user_key, key.ts))
        })?;
        if idx == layout.count() {
            // The block's last key is not `before` but no entry of it is:
            // only possible if the block disagrees with the index.
            return Err(self.block_error(block, "entries disagree with the index"));
        }
        self.cursor(block, buf, layout, idx).map(Some)
    }

    /// The first block whose last key is not `before`, or the block count.
    /// Every index key shares the first `prefix_len` bytes, so for a `key`
    /// with that prefix, a block whose hint is below the key's has a smaller
    /// last user key (`before` holds) and one whose hint is above has a
    /// larger one (it does not): only the blocks with an equal hint need
    /// their index keys compared.
    fn find_block(
        &self,
        meta: &Meta,
        before: &impl Fn(&[u8], Timestamp) -> bool,
        key: Option<&[u8]>,
    ) -> Result<usize> {
        let index = &meta.index;
        let (lo, hi) = match key {
            Some(key) => {
                let r = meta.hints.narrow(key);
                (r.start, r.end)
            }
            None => (0, index.handles.len()),
        };
        let found = partition(hi - lo, |j| {
            let i = lo + j;
            let h = index
                .handles
                .get(i)
                .ok_or_else(|| Error::internal(format!("table block {i} out of range")))?;
            let key = index
                .keys
                .get(h.last_user_key())
                .ok_or_else(|| self.block_error(i, "index key out of range"))?;
            Ok(before(key, h.last_ts))
        })?;
        Ok(lo + found)
    }

    pub(crate) fn cursor(
        &self,
        block: usize,
        buf: BlockBuf,
        layout: BlockLayout,
        idx: usize,
    ) -> Result<Cursor> {
        let entry = self.entry_pos(block, self.buf_bytes(&buf), &layout, idx)?;
        Ok(Cursor {
            block,
            buf,
            layout,
            idx,
            entry,
        })
    }

    /// The bytes a loaded block's layout addresses.
    fn buf_bytes<'a>(&'a self, buf: &'a BlockBuf) -> &'a [u8] {
        match buf {
            BlockBuf::Mapped => self.bytes.bytes(),
            BlockBuf::Owned(b) => b,
        }
    }

    /// The entry's bytes; `None` only if `pos` did not come from `buf`.
    pub(crate) fn view<'a>(&'a self, buf: &'a BlockBuf, pos: &EntryPos) -> Option<TableEntry<'a>> {
        let file = self.buf_bytes(buf);
        Some(TableEntry {
            user_key: file.get(pos.user_key.clone())?,
            ts: pos.ts,
            kind: pos.kind,
            value: file.get(pos.value.clone())?,
        })
    }

    /// Checks and frames data block `block` (decompressing it if needed),
    /// verifying its CRC and its last key against the index the first time
    /// only, and counts it as read.
    ///
    /// `fill`: whether a block decompressed here is put into the block cache
    /// (and counted as a cache miss). Reads that touch each block once and
    /// whose table is about to go (compaction inputs) pass false, so they
    /// neither evict what point reads need nor count; a cached block is used
    /// either way.
    pub(crate) fn load_block(&self, block: usize, fill: bool) -> Result<(BlockBuf, BlockLayout)> {
        let meta = self.meta()?;
        self.load_block_with(meta, block, fill)
    }

    fn load_block_with(
        &self,
        meta: &Meta,
        block: usize,
        fill: bool,
    ) -> Result<(BlockBuf, BlockLayout)> {
        let h = meta
            .index
            .handles
            .get(block)
            .ok_or_else(|| Error::internal(format!("table block {block} out of range")))?;
        let (word, bit) = (block / 64, 1u64 << (block % 64));
        let flags = meta
            .verified
            .get(word)
            .ok_or_else(|| Error::internal("table block bitmap too short"))?;
        let verified = flags.load(AtomicOrdering::Relaxed) & bit != 0;
        let file = self.bytes.bytes();
        let cache = self
            .cache
            .as_ref()
            .filter(|_| self.saw_compressed.load(AtomicOrdering::Relaxed));
        let cached = cache.and_then(|c| c.data((self.number, h.offset as u64)));
        let (buf, layout) = if let Some(contents) = cached {
            // Only CRC-checked bytes are ever decompressed into the cache,
            // so a hit needs no check of the stored block.
            if let Some(c) = cache.filter(|_| fill) {
                c.count(true);
            }
            let layout = BlockLayout::parse_contents(&contents, 0, contents.len())
                .map_err(|m| self.block_error(block, m))?;
            (BlockBuf::Owned(contents), layout)
        } else if self.version == 1 {
            let layout = BlockLayout::parse(file, h.offset, h.len, !verified)
                .map_err(|m| self.block_error(block, m))?;
            (BlockBuf::Mapped, layout)
        } else {
            let (payload, block_type) = parse_v2_stored(file, h.offset, h.len, !verified)
                .map_err(|m| self.block_error(block, m))?;
            if block_type == TYPE_NONE {
                let layout = BlockLayout::parse_contents(file, payload.start, payload.len())
                    .map_err(|m| self.block_error(block, m))?;
                (BlockBuf::Mapped, layout)
            } else {
                let contents: Arc<[u8]> =
                    decompress(block_type, file.get(payload).unwrap_or_default())
                        .map_err(|m| self.block_error(block, m))?
                        .into();
                let layout = BlockLayout::parse_contents(&contents, 0, contents.len())
                    .map_err(|m| self.block_error(block, m))?;
                if let Some(c) = self.cache.as_ref().filter(|_| fill) {
                    c.count(false);
                    c.insert_data((self.number, h.offset as u64), contents.clone());
                    self.saw_compressed.store(true, AtomicOrdering::Relaxed);
                }
                (BlockBuf::Owned(contents), layout)
            }
        };
        if !verified {
            // A CRC-clean block can still disagree with the index (a writer
            // bug); checking the last key once keeps searches consistent.
            let bytes = self.buf_bytes(&buf);
            let last = layout
                .count()
                .checked_sub(1)
                .ok_or_else(|| self.block_error(block, "data block has no entries"))?;
            let raw = layout
                .entry(bytes, last)
                .map_err(|m| self.block_error(block, m))?;
            if bytes.get(raw.key) != meta.index.keys.get(h.last_key.clone()) {
                return Err(self.block_error(block, "last key differs from the index"));
            }
            flags.fetch_or(bit, AtomicOrdering::Relaxed);
            if self.version != 1 && matches!(buf, BlockBuf::Mapped) {
                // A version-2 block read in place is stored uncompressed,
                // its contents starting at the block's first byte.
                let state = InPlace::pack(h.len, layout.entries_end() - layout.start());
                if let (Some(slot), Some(state), true) =
                    (meta.in_place.get(block), state, layout.start() == h.offset)
                {
                    slot.state.store(state, AtomicOrdering::Relaxed);
                }
            }
        }
        self.count_block_read(h.len);
        Ok((buf, layout))
    }

    fn entry_pos(
        &self,
        block: usize,
        file: &[u8],
        layout: &BlockLayout,
        idx: usize,
    ) -> Result<EntryPos> {
        let raw = layout
            .entry(file, idx)
            .map_err(|m| self.block_error(block, format!("entry {idx}: {m}")))?;
        Self::decode_entry_pos(file, raw)
            .ok_or_else(|| self.block_error(block, format!("entry {idx}: bad internal key")))
    }

    /// The entry starting at byte `at` of `file` (a data block's bytes),
    /// framed within `..end`, and where the next one starts.
    fn entry_pos_at(
        &self,
        block: usize,
        file: &[u8],
        at: usize,
        end: usize,
    ) -> Result<(EntryPos, usize)> {
        let (raw, next) = entry_at(file, at, end, true).map_err(|m| {
            self.block_error(block, format!("entry at {at} (from index.hash): {m}"))
        })?;
        let pos = Self::decode_entry_pos(file, raw)
            .ok_or_else(|| self.block_error(block, format!("entry at {at}: bad internal key")))?;
        Ok((pos, next))
    }

    fn decode_entry_pos(file: &[u8], raw: RawEntry) -> Option<EntryPos> {
        let key = file.get(raw.key.clone()).and_then(decode_internal)?;
        Some(EntryPos {
            user_key: raw.key.start..raw.key.end - INTERNAL_SUFFIX_LEN,
            value: raw.value,
            ts: key.ts,
            kind: key.kind,
        })
    }

    fn block_error(&self, block: usize, msg: impl fmt::Display) -> Error {
        let offset = self
            .meta
            .get()
            .and_then(|m| m.index.handles.get(block).map(|h| h.offset))
            .unwrap_or(0);
        corrupt(
            &table_file_name(self.number),
            format!("data block {block} at offset {offset}: {msg}"),
        )
    }
}

impl Drop for Table {
    /// The table is closed (the table cache closed it, or its file is
    /// gone): its metadata's charge leaves the block cache.
    fn drop(&mut self) {
        if let (Some(cache), Some(meta), Some(&charged)) =
            (&self.cache, self.meta.get(), self.meta_charged.get())
        {
            cache.release_meta(meta.charge, charged);
        }
    }
}

fn corrupt(name: &str, msg: impl fmt::Display) -> Error {
    Error::corruption(format!("table {name}: {msg}"))
}

/// Where [`Table::walk_versions`] ended.
enum Walk {
    /// The slot's entry is another key's (their fingerprints collide).
    OtherKey,
    /// The key is here, but every version of it is newer than the snapshot.
    NoVersion,
    /// The walk left the block or went on too long: search instead.
    Search,
    /// The answer.
    Found(EntryPos),
}

/// The first `i` in `0..n` for which `before(i)` is false (binary search;
/// `before` must be true on a prefix), or `n`.
fn partition(n: usize, mut before: impl FnMut(usize) -> Result<bool>) -> Result<usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid)? {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// Version 1: the index and properties blocks are named by the footer and
/// framed with their own CRC; there is no filter.
fn open_v1(
    file: &[u8],
    f: &FooterV1,
    meta_end: usize,
) -> Result<(Locations, TableSummary), String> {
    let index_range =
        region(f.index_offset, f.index_len, meta_end).ok_or("index block lies outside the file")?;
    let props_range = region(f.props_offset, f.props_len, meta_end)
        .ok_or("properties block lies outside the file")?;
    // Version 1 has no filters, but the pair must still make sense.
    if f.filter_len != 0 && region(f.filter_offset, f.filter_len, meta_end).is_none() {
        return Err("filter block lies outside the file".into());
    }
    let summary = BlockLayout::parse(file, props_range.start, props_range.len(), true)
        .map_err(String::from)
        .and_then(|layout| {
            decode_props(&Contents {
                bytes: Cow::Borrowed(file),
                layout,
            })
        })
        .map_err(|m| format!("properties at {}: {m}", f.props_offset))?;
    let locations = Locations {
        index: index_range,
        filter: None,
        hash: None,
    };
    Ok((locations, summary))
}

/// Version 2: the footer names the index and the metaindex; the metaindex
/// names the properties and the (optional) bloom filter.
fn open_v2(
    file: &[u8],
    f: &FooterV2,
    meta_end: usize,
) -> Result<
    (
        Locations,
        TableSummary,
        Vec<crate::range_del::RangeTombstone>,
    ),
    String,
> {
    if f.kind != TABLE_KIND_KV && f.kind != TABLE_KIND_KV_RANGEDEL {
        return Err(format!(
            "unsupported table kind {} (this build reads key-value tables, kinds {TABLE_KIND_KV} and {TABLE_KIND_KV_RANGEDEL})",
            f.kind
        ));
    }
    let index_range =
        region(f.index_offset, f.index_len, meta_end).ok_or("index block lies outside the file")?;
    let metaindex_range = region(f.metaindex_offset, f.metaindex_len, meta_end)
        .ok_or("metaindex block lies outside the file")?;
    let meta = read_v2_entries(file, metaindex_range)
        .and_then(|b| decode_metaindex(&b, meta_end))
        .map_err(|m| format!("metaindex at {}: {m}", f.metaindex_offset))?;
    let summary = read_v2_entries(file, meta.properties.clone())
        .and_then(|b| decode_props(&b))
        .map_err(|m| format!("properties at {}: {m}", meta.properties.start))?;
    // Only kind 1 promises range tombstones; a kind 0 table carries none.
    let tombstones = match (f.kind, &meta.range_del) {
        (TABLE_KIND_KV_RANGEDEL, Some(range)) => read_v2_raw(file, range.clone())
            .and_then(|b| decode_block(&b))
            .map_err(|m| format!("rangedel at {}: {m}", range.start))?,
        (TABLE_KIND_KV_RANGEDEL, None) => {
            return Err("a kind 1 table without its rangedel block".into())
        }
        _ => Vec::new(),
    };
    let locations = Locations {
        index: index_range,
        filter: meta.filter_bloom,
        hash: meta.index_hash,
    };
    Ok((locations, summary, tombstones))
}

/// The range of `inner` (a subslice of `file`) within `file`.
fn offset_in(file: &[u8], inner: &[u8]) -> Range<usize> {
    let start = (inner.as_ptr() as usize).saturating_sub(file.as_ptr() as usize);
    start..start + inner.len()
}
