//! [`TableFile`]: an open table plus what the manifest records about it,
//! and the rule for deleting its file.
//!
//! A table that compaction replaced is *marked obsolete* only after the
//! manifest edit removing it is durable. Its file is deleted when the last
//! `Arc<TableFile>` drops, i.e. when no LSM state, scan, snapshot read or
//! compaction still holds it. (On Linux a mapping stays valid after unlink,
//! but deleting late keeps the rule simple and portable, and it means a
//! reader never races the deletion at all.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::io::FileSystem;
use crate::sstable::Table;
use crate::version::TableMeta;

pub(crate) struct TableFile {
    table: Arc<Table>,
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
            .field("number", &self.meta.number)
            .field("obsolete", &self.obsolete.load(Ordering::Relaxed))
            .finish()
    }
}

impl TableFile {
    pub fn new(
        table: Table,
        meta: TableMeta,
        path: PathBuf,
        fs: Arc<dyn FileSystem>,
    ) -> Arc<TableFile> {
        Arc::new(TableFile {
            table: Arc::new(table),
            meta,
            path,
            fs,
            obsolete: AtomicBool::new(false),
        })
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
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
        if self.obsolete.load(Ordering::Acquire) {
            // Failing to delete wastes space but loses nothing: the file is
            // not in the manifest, and the next open deletes it.
            let _ = self.fs.remove(&self.path);
        }
    }
}
