//! A two-way iterator over every version in a table, in internal order.

use std::sync::Arc;

use super::readahead::Readahead;
use super::table::{Cursor, Table, TableEntry};
use crate::error::{Error, Result};

/// Owns an `Arc<Table>` and remembers its position as byte ranges, so it has
/// no lifetime and can live inside merging iterators.
///
/// Any error leaves the iterator unpositioned. `next`/`prev` on an
/// unpositioned iterator do nothing.
pub struct TableIter {
    table: Arc<Table>,
    pos: Option<Cursor>,
    /// Whether blocks it decompresses go into the block cache.
    fill_cache: bool,
    /// Reads ahead of sequential steps (readahead.rs), when set.
    readahead: Option<Readahead>,
}

impl TableIter {
    /// An unpositioned iterator.
    pub fn new(table: Arc<Table>) -> TableIter {
        TableIter {
            table,
            pos: None,
            fill_cache: true,
            readahead: None,
        }
    }

    /// An iterator whose reads leave the block cache as it was (it may still
    /// use blocks already cached): for compaction inputs, read once and then
    /// deleted.
    pub fn without_cache_fill(table: Arc<Table>) -> TableIter {
        TableIter {
            fill_cache: false,
            ..TableIter::new(table)
        }
    }

    /// This iterator, reading ahead as it steps through blocks, in the run
    /// kept by `readahead` (shared by the iterators of one scan).
    pub fn with_readahead(mut self, readahead: Readahead) -> TableIter {
        self.readahead = Some(readahead);
        self
    }

    pub fn seek_to_first(&mut self) -> Result<()> {
        self.pos = None;
        if self.table.block_count()? == 0 {
            return Ok(());
        }
        self.enter_block(0, false, |_| Some(0))
    }

    pub fn seek_to_last(&mut self) -> Result<()> {
        self.pos = None;
        match self.table.block_count()?.checked_sub(1) {
            None => Ok(()),
            Some(last) => self.enter_block(last, true, |count| count.checked_sub(1)),
        }
    }

    /// First entry whose user key >= key (the newest version of it comes first).
    pub fn seek(&mut self, user_key: &[u8]) -> Result<()> {
        self.pos = None;
        self.pos = self.table.find(|k, _| k < user_key, self.fill_cache)?;
        self.note_position(false)
    }

    /// Last entry whose user key <= key (in internal order, i.e. the OLDEST
    /// version of the largest user key <= key).
    pub fn seek_for_prev(&mut self, user_key: &[u8]) -> Result<()> {
        // Step back from the first entry whose user key is > key.
        self.pos = None;
        self.pos = self.table.find(|k, _| k <= user_key, self.fill_cache)?;
        if self.pos.is_some() {
            self.prev()?;
            self.note_position(true)
        } else {
            self.seek_to_last()
        }
    }

    #[cfg(test)]
    pub fn valid(&self) -> bool {
        self.pos.is_some()
    }

    pub fn entry(&self) -> Option<TableEntry<'_>> {
        let pos = self.pos.as_ref()?;
        self.table.view(&pos.buf, &pos.entry)
    }

    pub fn next(&mut self) -> Result<()> {
        let Some(cur) = self.pos.take() else {
            return Ok(());
        };
        if cur.idx + 1 < cur.layout.count() {
            self.pos = Some(
                self.table
                    .cursor(cur.block, cur.buf, cur.layout, cur.idx + 1)?,
            );
            Ok(())
        } else if cur.block + 1 < self.table.block_count()? {
            self.enter_block(cur.block + 1, false, |_| Some(0))
        } else {
            Ok(())
        }
    }

    pub fn prev(&mut self) -> Result<()> {
        let Some(cur) = self.pos.take() else {
            return Ok(());
        };
        if let Some(idx) = cur.idx.checked_sub(1) {
            self.pos = Some(self.table.cursor(cur.block, cur.buf, cur.layout, idx)?);
            Ok(())
        } else if let Some(block) = cur.block.checked_sub(1) {
            self.enter_block(block, true, |count| count.checked_sub(1))
        } else {
            Ok(())
        }
    }

    /// Tells the readahead (if any) where a seek landed.
    fn note_position(&self, reverse: bool) -> Result<()> {
        match (&self.readahead, &self.pos) {
            (Some(ra), Some(pos)) => ra.on_block(&self.table, pos.block, reverse),
            _ => Ok(()),
        }
    }

    /// Loads data block `block`, reached going forward or in `reverse`, and
    /// positions at entry `pick(count)`.
    fn enter_block(
        &mut self,
        block: usize,
        reverse: bool,
        pick: impl Fn(usize) -> Option<usize>,
    ) -> Result<()> {
        if let Some(ra) = &self.readahead {
            ra.on_block(&self.table, block, reverse)?;
        }
        let (buf, layout) = self.table.load_block(block, self.fill_cache)?;
        // load_block rejects empty data blocks, so `pick` finds an entry.
        let idx =
            pick(layout.count()).ok_or_else(|| Error::internal("table block has no entries"))?;
        self.pos = Some(self.table.cursor(block, buf, layout, idx)?);
        Ok(())
    }
}
