//! The C structs for open options, scan options and stats, and their
//! conversion to the engine's types. Options and stats carry a
//! `struct_size` so the structs can grow at the end without breaking
//! callers compiled against an older header.

use std::ops::Bound;

use toondb_storage::{scan_bound, Compression, Options, ScanOptions, Stats};

use crate::error::{invalid, Result};
use crate::util::opt_bytes;

/// Options for `toondb_open`. Fill with `toondb_options_init` and then
/// change fields; `struct_size` must stay as `toondb_options_init` set it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ToondbOptions {
    /// `sizeof(ToondbOptions)` as the caller was compiled (set by init).
    pub struct_size: usize,
    /// Create the directory and an empty database when none exists (default true).
    pub create_if_missing: bool,
    /// Fail with TOONDB_INVALID_ARGUMENT when a database already exists (default false).
    pub error_if_exists: bool,
    /// Default durability: true waits for fdatasync of the WAL (survives
    /// power loss), false for the OS write (survives a process crash).
    pub sync: bool,
    /// Run compactions in the background (default true).
    pub auto_compaction: bool,
    /// Memtable size in bytes at which it is flushed (default 32 MiB; 0 keeps the default).
    pub memtable_size: u64,
    /// Table data block size in bytes (default 4 KiB; 0 keeps the default).
    pub block_size: u64,
    /// 0 none (default), 1 LZ4, 2 zstd.
    pub compression: i32,
    /// Bloom filter bits per key, 0..=32 (default 10; negative keeps the default).
    pub bloom_bits_per_key: i32,
    /// Block cache bytes (decompressed blocks, decoded indexes and filters;
    /// default 32 MiB; 0 = no cache; negative keeps the default).
    pub cache_size: i64,
    /// Table files open at once (default 1000; 0 = no limit; negative keeps
    /// the default).
    pub max_open_files: i64,
    /// Give tables written from now on a hash index (point reads go from
    /// the key's hash to its entry; ~10 bytes per key): 1 yes (default), 0
    /// no, negative keeps the default. Every setting reads all tables.
    pub hash_index: i32,
    /// Size the levels from the last one up (docs/compaction.md, "Level
    /// targets"): 1 yes (default), 0 no (the static targets: fewer bytes
    /// written, more space), negative keeps the default.
    pub dynamic_level_bytes: i32,
}

impl ToondbOptions {
    pub(crate) fn defaults() -> ToondbOptions {
        let d = Options::default();
        ToondbOptions {
            struct_size: std::mem::size_of::<ToondbOptions>(),
            create_if_missing: d.create_if_missing,
            error_if_exists: d.error_if_exists,
            sync: d.sync,
            auto_compaction: d.auto_compaction,
            memtable_size: 0,
            block_size: 0,
            compression: 0,
            bloom_bits_per_key: -1,
            cache_size: -1,
            max_open_files: -1,
            hash_index: -1,
            dynamic_level_bytes: -1,
        }
    }

    pub(crate) fn to_engine(self) -> Result<Options> {
        let mut o = Options::default()
            .create_if_missing(self.create_if_missing)
            .error_if_exists(self.error_if_exists)
            .sync(self.sync)
            .auto_compaction(self.auto_compaction);
        let size = |v: u64, min: u64, name: &str| -> Result<Option<usize>> {
            match v {
                0 => Ok(None),
                v if v >= min => usize::try_from(v)
                    .map(Some)
                    .map_err(|_| invalid(format!("{name} is too large"))),
                v => Err(invalid(format!("{name} must be at least {min}, got {v}"))),
            }
        };
        if let Some(v) = size(self.memtable_size, 4096, "memtable_size")? {
            o.memtable_size = v;
        }
        if let Some(v) = size(self.block_size, 256, "block_size")? {
            o.block_size = v;
        }
        o.compression = match self.compression {
            0 => Compression::None,
            1 => Compression::Lz4,
            2 => Compression::Zstd,
            c => return Err(invalid(format!("compression must be 0, 1 or 2, got {c}"))),
        };
        match self.bloom_bits_per_key {
            b if b < 0 => {}
            b @ 0..=32 => o.bloom_bits_per_key = b as u32,
            b => {
                return Err(invalid(format!(
                    "bloom_bits_per_key must be 0..=32, got {b}"
                )))
            }
        }
        if let Ok(v) = usize::try_from(self.cache_size) {
            o.cache_size = v;
        }
        if let Ok(v) = usize::try_from(self.max_open_files) {
            o.max_open_files = v;
        }
        match self.hash_index {
            h if h < 0 => {}
            0 => o.hash_index = false,
            1 => o.hash_index = true,
            h => return Err(invalid(format!("hash_index must be 0 or 1, got {h}"))),
        }
        match self.dynamic_level_bytes {
            d if d < 0 => {}
            0 => o.dynamic_level_bytes = false,
            1 => o.dynamic_level_bytes = true,
            d => {
                return Err(invalid(format!(
                    "dynamic_level_bytes must be 0 or 1, got {d}"
                )))
            }
        }
        Ok(o)
    }
}

/// Fills `options` with the defaults (and `struct_size`). NULL is a no-op.
///
/// # Safety
/// `options` is NULL or valid for a write of `ToondbOptions`.
#[no_mangle]
pub unsafe extern "C" fn toondb_options_init(options: *mut ToondbOptions) {
    // SAFETY: per the contract, non-NULL is writable.
    unsafe { crate::util::put_opt(options, ToondbOptions::defaults()) };
}

/// Reads the caller's options: the fields its `struct_size` covers, the
/// defaults for any it does not know.
///
/// # Safety
/// `ptr` is NULL or points to `struct_size` readable bytes laid out as a
/// (possibly older, shorter) `ToondbOptions`.
pub(crate) unsafe fn read_options(ptr: *const ToondbOptions) -> Result<ToondbOptions> {
    let mut out = ToondbOptions::defaults();
    if ptr.is_null() {
        return Ok(out);
    }
    // SAFETY: non-NULL; `struct_size` is the first field of every version.
    let size = unsafe { ptr.cast::<usize>().read_unaligned() };
    if size < std::mem::size_of::<usize>() {
        return Err(invalid(
            "ToondbOptions.struct_size is not set (call toondb_options_init)",
        ));
    }
    let n = size.min(std::mem::size_of::<ToondbOptions>());
    // SAFETY: the caller promises `size` readable bytes; we copy at most
    // that many into a fully initialised struct of the current layout (bool
    // fields hold 0 or 1 as C's `bool` does).
    unsafe {
        std::ptr::copy_nonoverlapping(
            ptr.cast::<u8>(),
            (&mut out as *mut ToondbOptions).cast::<u8>(),
            n,
        )
    };
    out.struct_size = std::mem::size_of::<ToondbOptions>();
    Ok(out)
}

/// Bounds and direction of an iterator. Zero-initialise it (`= {0}`) for a
/// forward scan of everything; a NULL bound pointer means "no such bound"
/// (an empty bound is a non-NULL pointer with length 0).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ToondbScanOptions {
    /// Keys > gt (at most one of gt/gte).
    pub gt: *const u8,
    pub gt_len: usize,
    /// Keys >= gte.
    pub gte: *const u8,
    pub gte_len: usize,
    /// Keys < lt (at most one of lt/lte).
    pub lt: *const u8,
    pub lt_len: usize,
    /// Keys <= lte.
    pub lte: *const u8,
    pub lte_len: usize,
    /// Only keys starting with prefix (combined with the bounds above).
    pub prefix: *const u8,
    pub prefix_len: usize,
    /// Largest key first.
    pub reverse: bool,
    /// At most this many entries (counted again after each seek); 0 = no limit.
    pub limit: u64,
}

/// The engine's scan options for the caller's struct (NULL: everything).
///
/// # Safety
/// `ptr` is NULL or a valid `ToondbScanOptions` whose non-NULL bound
/// pointers are valid for their lengths.
pub(crate) unsafe fn read_scan(ptr: *const ToondbScanOptions) -> Result<ScanOptions> {
    // SAFETY: per the contract, non-NULL is a valid struct.
    let Some(s) = (unsafe { ptr.as_ref() }) else {
        return Ok(ScanOptions::default());
    };
    let owned = |p: *const u8, n: usize| {
        // SAFETY: bound pointers are valid for their lengths per the contract.
        unsafe { opt_bytes(p, n) }.map(<[u8]>::to_vec)
    };
    let mut o = ScanOptions::default()
        .lower(scan_bound(owned(s.gte, s.gte_len), owned(s.gt, s.gt_len))?)
        .upper(scan_bound(owned(s.lte, s.lte_len), owned(s.lt, s.lt_len))?)
        .reverse(s.reverse);
    // SAFETY: as above.
    if let Some(p) = unsafe { opt_bytes(s.prefix, s.prefix_len) } {
        o = o.within_prefix(p);
    }
    if s.limit > 0 {
        o = o.limit(usize::try_from(s.limit).unwrap_or(usize::MAX));
    }
    Ok(o)
}

/// Bounds for `toondb_compact_range`: NULL is unbounded.
pub(crate) fn range_bound(key: Option<&[u8]>, inclusive: bool) -> Bound<Vec<u8>> {
    match key {
        None => Bound::Unbounded,
        Some(k) if inclusive => Bound::Included(k.to_vec()),
        Some(k) => Bound::Excluded(k.to_vec()),
    }
}

/// Levels reported in `ToondbStats`.
pub const TOONDB_STATS_LEVELS: usize = 8;

/// A snapshot of the engine's counters (see the Rust `Stats` docs). Set
/// `struct_size = sizeof(ToondbStats)` before `toondb_stats`; the library
/// writes only that many bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ToondbStats {
    pub struct_size: usize,
    pub visible_ts: u64,
    pub memtable_bytes: u64,
    pub immutable_memtables: u64,
    pub tables: u64,
    pub table_bytes: u64,
    pub pending_compaction_bytes: u64,
    pub compactions: u64,
    pub trivial_moves: u64,
    pub compaction_errors: u64,
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    pub live_bytes_estimate: u64,
    pub table_bytes_read: u64,
    pub data_blocks_read: u64,
    pub bloom_checked: u64,
    pub bloom_useful: u64,
    pub commits: u64,
    pub commit_groups: u64,
    pub wal_bytes_written: u64,
    pub wal_syncs: u64,
    pub write_slowdowns: u64,
    pub write_stalls: u64,
    pub write_stall_micros: u64,
    pub flushes: u64,
    pub flush_bytes_written: u64,
    pub conflicts: u64,
    pub live_snapshots: u64,
    /// 0 when no snapshot is live.
    pub oldest_snapshot_ts: u64,
    pub recovered_records: u64,
    /// 1 when a background error stopped writes.
    pub background_error: u64,
    /// Levels in use in the arrays below (at most TOONDB_STATS_LEVELS).
    pub level_count: u64,
    pub level_tables: [u64; TOONDB_STATS_LEVELS],
    pub level_bytes: [u64; TOONDB_STATS_LEVELS],
    /// Block cache: lookups served and missed, evictions, bytes held now and
    /// the capacity (`cache_size`).
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    pub block_cache_evictions: u64,
    pub block_cache_bytes: u64,
    pub block_cache_capacity: u64,
    /// Table files open now; table lookups that found it open or opened it.
    pub open_tables: u64,
    pub table_cache_hits: u64,
    pub table_cache_misses: u64,
    /// Point lookups that consulted a table's hash index (its filter let
    /// them pass), and those it answered "absent" without a data block.
    pub hash_index_checked: u64,
    pub hash_index_useful: u64,
    /// WAL segments checkpointed into tables since open (`wal_size_limit`),
    /// their bytes, checkpoints that failed before changing anything, and
    /// checkpoint tables on disk now (not read while the engine runs).
    pub checkpoints: u64,
    pub checkpoint_bytes_written: u64,
    pub checkpoint_errors: u64,
    pub checkpoint_tables: u64,
    /// 1 while a flush or compaction is running or queued. With this 0,
    /// `pending_wal_syncs` 0 and no immutable memtable, no background work
    /// is left (what a test or tool waits for before it looks at files).
    pub maintenance_busy: u64,
    /// WAL segments whose background sync (a sealed segment, or one
    /// replayed at open) has not returned yet.
    pub pending_wal_syncs: u64,
    /// Address space the memtables' point indexes map (8 bytes per 64 of
    /// `memtable_size` each), committed page by page as keys are written.
    pub memtable_index_bytes: u64,
}

impl ToondbStats {
    pub(crate) fn from_engine(s: &Stats) -> ToondbStats {
        let mut out = ToondbStats {
            struct_size: std::mem::size_of::<ToondbStats>(),
            visible_ts: s.visible_ts,
            memtable_bytes: s.memtable_bytes,
            immutable_memtables: s.immutable_memtables,
            tables: s.tables,
            table_bytes: s.table_bytes,
            pending_compaction_bytes: s.pending_compaction_bytes,
            compactions: s.compactions,
            trivial_moves: s.trivial_moves,
            compaction_errors: s.compaction_errors,
            compaction_bytes_read: s.compaction_bytes_read,
            compaction_bytes_written: s.compaction_bytes_written,
            live_bytes_estimate: s.live_bytes_estimate,
            table_bytes_read: s.table_bytes_read,
            data_blocks_read: s.data_blocks_read,
            bloom_checked: s.bloom_checked,
            bloom_useful: s.bloom_useful,
            commits: s.commits,
            commit_groups: s.commit_groups,
            wal_bytes_written: s.wal_bytes_written,
            wal_syncs: s.wal_syncs,
            write_slowdowns: s.write_slowdowns,
            write_stalls: s.write_stalls,
            write_stall_micros: s.write_stall_micros,
            flushes: s.flushes,
            flush_bytes_written: s.flush_bytes_written,
            conflicts: s.conflicts,
            live_snapshots: s.live_snapshots,
            oldest_snapshot_ts: s.oldest_snapshot_ts.unwrap_or(0),
            recovered_records: s.recovery.records,
            background_error: u64::from(s.background_error.is_some()),
            level_count: s.levels.len().min(TOONDB_STATS_LEVELS) as u64,
            block_cache_hits: s.block_cache.hits,
            block_cache_misses: s.block_cache.misses,
            block_cache_evictions: s.block_cache.evictions,
            block_cache_bytes: s.block_cache.bytes,
            block_cache_capacity: s.block_cache.capacity,
            open_tables: s.open_tables,
            table_cache_hits: s.table_cache_hits,
            table_cache_misses: s.table_cache_misses,
            hash_index_checked: s.hash_index_checked,
            hash_index_useful: s.hash_index_useful,
            checkpoints: s.checkpoints,
            checkpoint_bytes_written: s.checkpoint_bytes_written,
            checkpoint_errors: s.checkpoint_errors,
            checkpoint_tables: s.checkpoint_tables,
            maintenance_busy: u64::from(s.maintenance_busy),
            pending_wal_syncs: s.pending_wal_syncs,
            memtable_index_bytes: s.memtable_index_bytes,
            ..ToondbStats::default()
        };
        for (i, l) in s.levels.iter().take(TOONDB_STATS_LEVELS).enumerate() {
            out.level_tables[i] = l.tables;
            out.level_bytes[i] = l.bytes;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_carry_the_background_work_fields() {
        let mut s = Stats::default();
        s.maintenance_busy = true;
        s.pending_wal_syncs = 3;
        s.checkpoint_tables = 2;
        s.memtable_index_bytes = 4 << 20;
        let out = ToondbStats::from_engine(&s);
        assert_eq!(out.memtable_index_bytes, 4 << 20);
        assert_eq!(out.maintenance_busy, 1);
        assert_eq!(out.pending_wal_syncs, 3);
        assert_eq!(out.checkpoint_tables, 2);
        assert_eq!(out.struct_size, std::mem::size_of::<ToondbStats>());
        let idle = ToondbStats::from_engine(&Stats::default());
        assert_eq!((idle.maintenance_busy, idle.pending_wal_syncs), (0, 0));
    }
}
