//! [`TableFile`]: an open table plus what the manifest records about it,
//! and the rule for deleting its file.
//!
//! A table that compaction replaced is *marked obsolete* only after the
//! manifest edit removing it is durable. Its file is deleted when the last
//! `Arc<TableFile>` drops, i.e. when no LSM state, scan, snapshot read or
//! compaction still holds it. (On Linux a mapping stays valid after unlink,
//! but deleting late keeps the rule simple and portable, and it means a
//! reader never races the deletion at all.)
//!
//! The table itself (its memory map and decoded metadata) may be closed by
//! the table cache while the `TableFile` stays live; [`TableFile::table`]
//! reopens it on demand.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cache::{BlockCache, OpenSlot, TableCache};
use crate::error::Result;
use crate::io::FileSystem;
use crate::options::Options;
use crate::sstable::{Table, TableCounters};
use crate::version::TableMeta;

/// Opens table files for the engine, with its block cache and table cache.
#[derive(Clone)]
pub(crate) struct TableOpener {
    fs: Arc<dyn FileSystem>,
    tables: Arc<TableCache>,
    blocks: Option<Arc<BlockCache>>,
}

impl TableOpener {
    pub fn new(options: &Options) -> TableOpener {
        TableOpener {
            fs: options.fs.clone(),
            tables: TableCache::new(options.max_open_files),
            blocks: (options.cache_size > 0).then(|| BlockCache::new(options.cache_size as u64)),
        }
    }

    /// Maps and opens table `number` at `path` (footer, metaindex and
    /// properties only; see [`Table::open`]).
    pub fn open(&self, number: u64, path: &std::path::Path) -> Result<Table> {
        self.reopen(number, path, Arc::default())
    }

    fn reopen(
        &self,
        number: u64,
        path: &std::path::Path,
        counters: Arc<TableCounters>,
    ) -> Result<Table> {
        Table::open_cached(number, self.fs.map(path)?, self.blocks.clone(), counters)
    }

    pub fn block_cache(&self) -> Option<&Arc<BlockCache>> {
        self.blocks.as_ref()
    }

    pub fn table_cache(&self) -> &Arc<TableCache> {
        &self.tables
    }
}

pub(crate) struct TableFile {
    slot: Arc<OpenSlot>,
    opener: TableOpener,
    /// Read counters, kept here so they outlive the table being closed.
    counters: Arc<TableCounters>,
    /// The table's range tombstones and the newest timestamp of its data
    /// entries, read at open and kept here: readers and compaction need
    /// them for every table, open in the table cache or not.
    range_dels: Arc<crate::range_del::RangeDelSet>,
    data_max_ts: crate::key::Timestamp,
    /// As recorded in the manifest; `meta.level` is the level the table was
    /// opened or written at (a trivial move changes the level in [`Levels`],
    /// not here).
    meta: TableMeta,
    path: PathBuf,
    fs: Arc<dyn FileSystem>,
    obsolete: AtomicBool,
}

impl std::fmt::Debug for TableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFile")
            .field("number", &self.slot.number())
            .field("obsolete", &self.obsolete.load(Ordering::Relaxed))
            .finish()
    }
}

impl TableFile {
    /// `table` was just opened by `opener` (or at least from `path`).
    pub fn new(
        opener: &TableOpener,
        table: Table,
        meta: TableMeta,
        path: PathBuf,
    ) -> Arc<TableFile> {
        let counters = table.shared_counters().clone();
        let range_dels = table.range_dels().clone();
        let data_max_ts = table.data_max_ts();
        Arc::new(TableFile {
            range_dels,
            data_max_ts,
            slot: opener.tables.insert(meta.number, Arc::new(table)),
            opener: opener.clone(),
            counters,
            meta,
            path,
            fs: opener.fs.clone(),
            obsolete: AtomicBool::new(false),
        })
    }

    /// The open table, reopened if the table cache closed it. The `Arc`
    /// keeps it open for as long as the caller holds it.
    pub fn table(&self) -> Result<Arc<Table>> {
        self.opener.tables.get(&self.slot, || {
            self.opener
                .reopen(self.meta.number, &self.path, self.counters.clone())
        })
    }

    /// The table's range tombstones (empty for most tables).
    pub fn range_dels(&self) -> &Arc<crate::range_del::RangeDelSet> {
        &self.range_dels
    }

    /// Newest timestamp of any data entry (range tombstones not counted).
    pub fn data_max_ts(&self) -> crate::key::Timestamp {
        self.data_max_ts
    }

    /// Read counters of the table (whether it is open or not).
    pub fn counters(&self) -> &TableCounters {
        &self.counters
    }

    /// Closes the open table (readers holding it keep it until they
    /// finish; a later `table()` reopens it).
    pub fn close_table(&self) {
        self.opener.tables.close(&self.slot);
    }

    /// The table if it is open now, without opening it (a read that may
    /// not wait for the device skips a closed one: reopening reads its
    /// footer).
    pub fn table_if_open(&self) -> Option<Arc<Table>> {
        self.opener.tables.get_if_open(&self.slot)
    }

    /// Whether the table is open now, without counting a use (tests of
    /// the table cache's recency order).
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.slot.is_open()
    }

    pub fn meta(&self) -> &TableMeta {
        &self.meta
    }

    pub fn number(&self) -> u64 {
        self.meta.number
    }

    pub fn file_size(&self) -> u64 {
        self.meta.file_size
    }

    pub fn smallest(&self) -> &[u8] {
        &self.meta.smallest
    }

    pub fn largest(&self) -> &[u8] {
        &self.meta.largest
    }

    pub fn max_ts(&self) -> u64 {
        self.meta.max_ts
    }

    /// Whether `key` lies within the table's key range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.smallest() && key <= self.largest()
    }

    /// Whether the table's key range meets `[lo, hi]` (`None` = unbounded).
    pub fn overlaps(&self, lo: Option<&[u8]>, hi: Option<&[u8]>) -> bool {
        lo.is_none_or(|lo| self.largest() >= lo) && hi.is_none_or(|hi| self.smallest() <= hi)
    }

    /// The file is deleted once the last handle drops. Call only after the
    /// manifest edit that removes the table is durable (or for a file the
    /// manifest never listed).
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, Ordering::Release);
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        self.opener.tables.remove(&self.slot);
        if self.obsolete.load(Ordering::Acquire) {
            // The file number is never reused, so its cached blocks could
            // never be served again: free their space now.
            if let Some(blocks) = &self.opener.blocks {
                blocks.forget_table(self.meta.number);
            }
            // Failing to delete wastes space but loses nothing: the file is
            // not in the manifest, and the next open deletes it.
            let _ = self.fs.remove(&self.path);
        }
    }
}
