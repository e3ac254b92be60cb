//! Options for opening a database and for individual writes.

use std::fmt;
use std::sync::Arc;

use crate::io::{FileSystem, OsFileSystem};
use crate::sstable::Compression;

/// How a database is opened. `Options::default()` is what `Database::open` uses.
///
/// `#[non_exhaustive]`, so adding an option is not a breaking change: from
/// outside this crate, start from `Options::default()` and set fields with
/// the chainable setters (one per field, named after it) or by assigning to
/// the fields of a `let mut` binding:
///
/// ```
/// use toondb_storage::Options;
/// let options = Options::default().memtable_size(8 << 10).sync(true);
/// let mut other = Options::default();
/// other.auto_compaction = false;
/// # let _ = (options, other);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Create the directory and an empty database when none exists (default true).
    pub create_if_missing: bool,
    /// Fail with `InvalidArgument` when a database already exists (default false).
    pub error_if_exists: bool,
    /// Default durability of writes: `true` resolves a write only after the
    /// WAL is fdatasynced (survives power loss); `false` after the WAL write
    /// reached the OS (survives a process crash). Default false.
    pub sync: bool,
    /// Memtable size at which it is sealed and flushed to a table file. It
    /// also bounds the WAL that a reopen must replay (default 32 MiB).
    pub memtable_size: usize,
    /// WAL segment size at which the commit thread moves on to a new
    /// segment and the maintenance thread checkpoints the old one into a
    /// table and deletes it, so a reopen after a crash replays about this
    /// much (plus one commit group, and a segment whose checkpoint was
    /// still running) whatever the memtable size, also while a sealed
    /// memtable waits for its flush, as long as the maintenance thread
    /// keeps up (checkpoints run before and during flushes). The
    /// memtable is not sealed by it: reads and compaction see the same
    /// memtables and tables as without it (checkpoint tables are read only
    /// by the next open). Default [`DEFAULT_WAL_SIZE_LIMIT`] (4 MiB);
    /// at least 4 KiB; `u64::MAX` turns it off (the memtable size then
    /// bounds the WAL). docs/performance.md, "Reopen: WAL checkpoints".
    pub wal_size_limit: u64,
    /// Sealed memtables waiting for flush before writers stall (default 3);
    /// with one fewer waiting, writes are slowed down first.
    pub max_immutable_memtables: usize,
    /// Target size of a table data block (default 4 KiB), before compression.
    pub block_size: usize,
    /// Compression of table data blocks (default none until a block cache
    /// exists; see docs/performance.md, "Table compression"). Applies to tables written from now on; tables
    /// already written keep theirs and every setting reads all of them.
    pub compression: Compression,
    /// Bloom filter bits per user key in each table (default 10, about 1%
    /// false positives); 0 writes no filter. Clamped to 1..=32 otherwise.
    pub bloom_bits_per_key: u32,
    /// Give each table a hash index (default true): a point read goes from
    /// the key's hash straight to its entry, and the index rules out the
    /// absent keys the bloom filter lets through, for ~10 bytes per key. Applies to
    /// tables written from now on; every setting reads all tables. See
    /// docs/format-table.md, "Hash index".
    pub hash_index: bool,
    /// Commit requests that may queue for the commit thread before
    /// submitters wait (default 4096).
    pub commit_queue_len: usize,
    /// Run compactions picked by score on the maintenance thread (default
    /// true). Off, only `Database::compact`/`compact_range` compact, and the
    /// level-0 and pending-bytes write stalls are not applied (nothing
    /// would end them).
    pub auto_compaction: bool,
    /// Level-0 table count at which level 0 is compacted into the base
    /// level (level 1 with the static targets; see `dynamic_level_bytes`)
    /// (default 4). See docs/compaction.md.
    pub l0_compaction_trigger: usize,
    /// Level-0 table count at which each commit group is delayed 1 ms
    /// (default 20).
    pub l0_slowdown_writes: usize,
    /// Level-0 table count at which writers stop until compaction catches
    /// up (default 36).
    pub l0_stop_writes: usize,
    /// Estimated bytes compaction still has to rewrite at which commit
    /// groups are delayed (default 64 GiB; 0 turns it off).
    pub pending_compaction_bytes_slowdown: u64,
    /// Estimated pending compaction bytes at which writers stop (default
    /// 256 GiB; 0 turns it off).
    pub pending_compaction_bytes_stop: u64,
    /// Size at which compaction cuts an output table (default 16 MiB).
    pub target_file_size: u64,
    /// The base level's target (default 64 MiB): with `dynamic_level_bytes`
    /// the most the base level (where level 0 compacts to) targets before
    /// the base moves up a level; with the static targets, level 1's, and
    /// level n+1 targets `level_size_ratio` times level n.
    pub level_base_bytes: u64,
    /// Size ratio between adjacent levels (default 10).
    pub level_size_ratio: u64,
    /// Size the levels from the bottom up (default true; RocksDB's
    /// `level_compaction_dynamic_level_bytes`): the last level holds most
    /// of the data and each level above it a `level_size_ratio`-th of the
    /// next, level 0 compacts into the shallowest level needed, and levels
    /// above that are emptied downwards. `false`: level 1 targets
    /// `level_base_bytes` and each deeper level `level_size_ratio` times
    /// more (docs/compaction.md, "Level targets").
    pub dynamic_level_bytes: bool,
    /// The file system; tests inject faults through it.
    pub fs: Arc<dyn FileSystem>,
    /// Bytes of decoded table data held in memory (default 32 MiB): the
    /// decompressed data blocks of compressed tables, and the decoded index
    /// and filter of each open table (charged while it is open, up to 7/8 of
    /// this). Uncompressed data blocks are read from the memory maps (the OS
    /// page cache) and take none of it. 0: no cache (a compressed block is
    /// decompressed on every read). See docs/performance.md, "Block cache
    /// and table cache".
    pub cache_size: usize,
    /// Table files open (memory-mapped) at once, at most (default 1000);
    /// others are opened on demand and the least recently used is closed.
    /// 0: no bound.
    pub max_open_files: usize,
    /// Values of at least this many bytes, found in an uncompressed table
    /// block, are returned by [`Database::get_ref`](crate::Database::get_ref)
    /// as a private mapping of their own instead of a borrowed slice
    /// (zero-copy values, io/value_map.rs). Default 16 KiB, the smallest
    /// size where a mapped read measured cheaper than a copy into Node even
    /// when every page of the value is then read (docs/performance.md,
    /// "Read path"); `usize::MAX`: never.
    pub zero_copy_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            sync: false,
            memtable_size: 32 << 20,
            wal_size_limit: DEFAULT_WAL_SIZE_LIMIT,
            max_immutable_memtables: 3,
            block_size: crate::sstable::DEFAULT_BLOCK_SIZE,
            compression: Compression::default(),
            bloom_bits_per_key: crate::sstable::DEFAULT_BLOOM_BITS_PER_KEY,
            hash_index: crate::sstable::DEFAULT_HASH_INDEX,
            commit_queue_len: 4096,
            auto_compaction: true,
            l0_compaction_trigger: 4,
            l0_slowdown_writes: 20,
            l0_stop_writes: 36,
            pending_compaction_bytes_slowdown: 64 << 30,
            pending_compaction_bytes_stop: 256 << 30,
            target_file_size: 16 << 20,
            level_base_bytes: 64 << 20,
            level_size_ratio: 10,
            dynamic_level_bytes: true,
            fs: OsFileSystem::shared(),
            cache_size: 32 << 20,
            max_open_files: 1000,
            zero_copy_threshold: DEFAULT_ZERO_COPY_THRESHOLD,
        }
    }
}

/// One chainable setter per field: `Options::default().sync(true)`.
macro_rules! setters {
    ($($name:ident: $ty:ty,)*) => {
        impl Options {
            $(
                #[doc = concat!("Sets [`Options::", stringify!($name), "`].")]
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    create_if_missing: bool,
    error_if_exists: bool,
    sync: bool,
    memtable_size: usize,
    wal_size_limit: u64,
    max_immutable_memtables: usize,
    block_size: usize,
    compression: Compression,
    bloom_bits_per_key: u32,
    hash_index: bool,
    commit_queue_len: usize,
    auto_compaction: bool,
    l0_compaction_trigger: usize,
    l0_slowdown_writes: usize,
    l0_stop_writes: usize,
    pending_compaction_bytes_slowdown: u64,
    pending_compaction_bytes_stop: u64,
    target_file_size: u64,
    level_base_bytes: u64,
    level_size_ratio: u64,
    dynamic_level_bytes: bool,
    fs: Arc<dyn FileSystem>,
    cache_size: usize,
    max_open_files: usize,
    zero_copy_threshold: usize,
}

/// See [`Options::wal_size_limit`].
pub const DEFAULT_WAL_SIZE_LIMIT: u64 = 4 << 20;

/// See [`Options::zero_copy_threshold`].
pub const DEFAULT_ZERO_COPY_THRESHOLD: usize = 16 << 10;

impl Options {
    /// How table files are written (flushes and compactions alike).
    pub(crate) fn table_options(&self) -> crate::sstable::TableOptions {
        crate::sstable::TableOptions {
            block_size: self.block_size,
            compression: self.compression,
            bloom_bits_per_key: self.bloom_bits_per_key,
            hash_index: self.hash_index,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("create_if_missing", &self.create_if_missing)
            .field("error_if_exists", &self.error_if_exists)
            .field("sync", &self.sync)
            .field("memtable_size", &self.memtable_size)
            .field("wal_size_limit", &self.wal_size_limit)
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("block_size", &self.block_size)
            .field("compression", &self.compression)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("hash_index", &self.hash_index)
            .field("commit_queue_len", &self.commit_queue_len)
            .field("auto_compaction", &self.auto_compaction)
            .field("l0_compaction_trigger", &self.l0_compaction_trigger)
            .field("l0_slowdown_writes", &self.l0_slowdown_writes)
            .field("l0_stop_writes", &self.l0_stop_writes)
            .field(
                "pending_compaction_bytes_slowdown",
                &self.pending_compaction_bytes_slowdown,
            )
            .field(
                "pending_compaction_bytes_stop",
                &self.pending_compaction_bytes_stop,
            )
            .field("target_file_size", &self.target_file_size)
            .field("level_base_bytes", &self.level_base_bytes)
            .field("level_size_ratio", &self.level_size_ratio)
            .field("dynamic_level_bytes", &self.dynamic_level_bytes)
            .field("cache_size", &self.cache_size)
            .field("max_open_files", &self.max_open_files)
            .field("zero_copy_threshold", &self.zero_copy_threshold)
            .finish_non_exhaustive()
    }
}

/// Per-write options (`#[non_exhaustive]`: build with
/// `WriteOptions::default()` or `WriteOptions::sync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Overrides the database's `sync` option for this write.
    pub sync: Option<bool>,
}

impl WriteOptions {
    pub fn sync(sync: bool) -> Self {
        WriteOptions { sync: Some(sync) }
    }

    /// `sync` as an override (`None` keeps the database's default).
    pub fn with_sync(sync: Option<bool>) -> Self {
        WriteOptions { sync }
    }
}

impl Options {
    /// The same options with inconsistent compaction thresholds made
    /// consistent, so no setting can stall writers forever: trigger >= 1,
    /// slowdown >= trigger, stop >= slowdown (for level-0 counts and for
    /// pending bytes), ratio >= 2, sizes >= 1 KiB. Applied at open.
    pub(crate) fn sanitized(mut self) -> Options {
        self.l0_compaction_trigger = self.l0_compaction_trigger.max(1);
        self.l0_slowdown_writes = self.l0_slowdown_writes.max(self.l0_compaction_trigger);
        self.l0_stop_writes = self.l0_stop_writes.max(self.l0_slowdown_writes);
        if self.pending_compaction_bytes_stop != 0 {
            self.pending_compaction_bytes_stop = self
                .pending_compaction_bytes_stop
                .max(self.pending_compaction_bytes_slowdown);
        }
        self.level_size_ratio = self.level_size_ratio.max(2);
        self.target_file_size = self.target_file_size.max(1024);
        self.level_base_bytes = self.level_base_bytes.max(1024);
        self
    }
}
