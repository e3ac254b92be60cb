//! toondb-storage: an embedded, transactional key-value storage engine.
//!
//! A write-ahead log for durability, MVCC versions keyed by commit timestamp,
//! a skiplist memtable and sorted, checksummed table files read through
//! memory maps. See docs/architecture.md for the layers and threads.
//!
//! ```no_run
//! # fn main() -> toondb_storage::Result<()> {
//! let db = toondb_storage::Database::open("./my_data")?;
//! db.put("users/1", b"Alice")?;
//! assert_eq!(db.get("users/1")?.as_deref(), Some(&b"Alice"[..]));
//! db.close()?;
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod backup;
pub mod batch;
mod cache;
mod coding;
pub mod columnar;
mod commit;
mod compaction;
mod db;
mod engine;
pub mod error;
pub mod io;
mod iter;
mod key;
mod key_hints;
mod lsm;
mod maintenance;
mod memfilter;
mod memindex;
mod memtable;
mod merge;
mod open_durability;
mod options;
mod prefetch;
mod range_del;
mod read;
mod record;
mod recovery;
mod sstable;
mod stats;
#[cfg(test)]
mod tests_scan_bounds;
mod txn;
mod verify;
mod version;
mod wal;

pub use backup::{BackupReport, BACKUP_MARKER};
pub use batch::{BatchOp, WriteBatch};
pub use cache::BlockCacheStats;
pub use columnar::{
    lookup_table, ChunkingReport, ColumnBatch, ColumnDef, ColumnScan, ColumnStats, ColumnType,
    Filter, ReadSource, Schema, Table, TableScanOptions, TableStats, Value,
};
pub use db::{range_delete_spans, Database};
pub use error::{Error, ErrorKind, Result};
pub use io::{live_value_maps, max_live_value_maps, MappedChunk, ValueMap};
pub use iter::{
    prefix_successor, scan_bound, BatchScan, DbIter, EntrySink, PackedBatch, Scan, ScanOptions,
};
pub use key::{Timestamp, ValueKind, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use options::{Options, WriteOptions, DEFAULT_WAL_SIZE_LIMIT, DEFAULT_ZERO_COPY_THRESHOLD};
pub use read::{ValueRead, ValueRef};
pub use sstable::Compression;
pub use stats::{LevelStats, Stats};
pub use txn::{Isolation, Snapshot, Transaction, TransactionOptions, TxnScan};
pub use verify::VerifyReport;
pub use wal::{DroppedTail, ReplayReport};
