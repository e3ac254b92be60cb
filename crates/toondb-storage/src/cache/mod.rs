//! The two caches in front of table files (docs/performance.md, "Block
//! cache and table cache"):
//!
//! - [`BlockCache`]: what the memory maps cannot serve in place, bounded by
//!   `Options::cache_size` — decompressed data blocks of LZ4/zstd tables and
//!   each table's decoded index and filter. Uncompressed data blocks are
//!   read straight from the map (the OS page cache holds those).
//! - [`TableCache`]: which table files are open (mapped), bounded by
//!   `Options::max_open_files`, least recently used closed first.

mod block;
mod tables;

pub(crate) use block::BlockCache;
pub use block::BlockCacheStats;
pub(crate) use tables::{OpenSlot, TableCache};
