//! Options for opening a database and for individual writes.

use std::fmt;
use std::sync::Arc;

use crate::io::{FileSystem, OsFileSystem};
use crate::sstable::Compression;

/// How a database is opened. `Options::default()` is what `Database::open` uses.
#[derive(Clone)]
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
    /// Commit requests that may queue for the commit thread before
    /// submitters wait (default 4096).
    pub commit_queue_len: usize,
    /// The file system; tests inject faults through it.
    pub fs: Arc<dyn FileSystem>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create_if_missing: true,
            error_if_exists: false,
            sync: false,
            memtable_size: 32 << 20,
            max_immutable_memtables: 3,
            block_size: crate::sstable::DEFAULT_BLOCK_SIZE,
            compression: Compression::default(),
            bloom_bits_per_key: crate::sstable::DEFAULT_BLOOM_BITS_PER_KEY,
            commit_queue_len: 4096,
            fs: OsFileSystem::shared(),
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
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("block_size", &self.block_size)
            .field("compression", &self.compression)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("commit_queue_len", &self.commit_queue_len)
            .finish_non_exhaustive()
    }
}

/// Per-write options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Overrides the database's `sync` option for this write.
    pub sync: Option<bool>,
}

impl WriteOptions {
    pub fn sync(sync: bool) -> Self {
        WriteOptions { sync: Some(sync) }
    }
}
