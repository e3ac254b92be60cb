//! Reading a table file: `open` checks the footer, index and properties and
//! decodes the index into memory; data blocks are checked the first time they
//! are touched and then trusted (see "Checksums" in docs/format-table.md).

use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use super::block::BlockLayout;
use super::{
    decode_footer, table_file_name, TableSummary, FOOTER_LEN, PROP_ENTRIES, PROP_LARGEST,
    PROP_MAX_TS, PROP_MIN_TS, PROP_SMALLEST,
};
use crate::coding::Reader;
use crate::error::{Error, Result};
use crate::io::FileBytes;
use crate::key::{compare_versions, decode_internal, Timestamp, ValueKind, INTERNAL_SUFFIX_LEN};

/// One version read from a table, borrowed from the file's bytes.
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
    /// The decoded index block: one handle per data block, in order.
    index: Vec<BlockHandle>,
    summary: TableSummary,
    /// Bit `i` is set once data block `i` passed its CRC and consistency
    /// checks. Relaxed ordering suffices: the bytes never change, so the only
    /// cost of a stale read is checking a block twice.
    verified: Vec<AtomicU64>,
    bytes_read: AtomicU64,
}

/// Where a data block is and the last internal key in it.
#[derive(Debug, Clone)]
struct BlockHandle {
    /// Absolute range of the block's last internal key (inside the index).
    last_key: Range<usize>,
    last_ts: Timestamp,
    offset: usize,
    len: usize,
}

impl BlockHandle {
    fn last_user_key(&self) -> Range<usize> {
        self.last_key.start..self.last_key.end - INTERNAL_SUFFIX_LEN
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
    pub(crate) layout: BlockLayout,
    pub(crate) idx: usize,
    pub(crate) entry: EntryPos,
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .field("blocks", &self.index.len())
            .field("summary", &self.summary)
            .finish()
    }
}

impl Table {
    /// Validates footer, magic, version and index/properties checksums.
    pub fn open(number: u64, bytes: Arc<dyn FileBytes>) -> Result<Table> {
        let name = table_file_name(number);
        let file = bytes.bytes();
        let footer = decode_footer(file).map_err(|m| corrupt(&name, m))?;
        let meta_end = file.len() - FOOTER_LEN; // decode_footer checked the length
        let index_range = region(footer.index_offset, footer.index_len, meta_end)
            .ok_or_else(|| corrupt(&name, "index block lies outside the file"))?;
        let props_range = region(footer.props_offset, footer.props_len, meta_end)
            .ok_or_else(|| corrupt(&name, "properties block lies outside the file"))?;
        // Version 1 has no filters, but the pair must still make sense.
        if footer.filter_len != 0
            && region(footer.filter_offset, footer.filter_len, meta_end).is_none()
        {
            return Err(corrupt(&name, "filter block lies outside the file"));
        }

        let index = decode_index(file, index_range).map_err(|m| {
            corrupt(
                &name,
                format!("index block at {}: {m}", footer.index_offset),
            )
        })?;
        let summary = decode_props(file, props_range, &index)
            .map_err(|m| corrupt(&name, format!("properties at {}: {m}", footer.props_offset)))?;
        let summary = TableSummary {
            file_size: file.len() as u64,
            ..summary
        };
        let verified = (0..index.len().div_ceil(64))
            .map(|_| AtomicU64::new(0))
            .collect();
        Ok(Table {
            number,
            bytes,
            index,
            summary,
            verified,
            bytes_read: AtomicU64::new(0),
        })
    }

    /// Read back from the properties block (and the file's length).
    pub fn summary(&self) -> &TableSummary {
        &self.summary
    }

    /// Newest version of `user_key` with ts <= `snapshot` (a Delete entry is
    /// returned as such; the caller interprets tombstones). Binary search the
    /// index, then the block.
    pub fn get(&self, user_key: &[u8], snapshot: Timestamp) -> Result<Option<TableEntry<'_>>> {
        // The first entry at or after (user_key, snapshot) in internal order
        // is the newest version with ts <= snapshot, if it is of user_key.
        let found =
            self.find(|k, ts| compare_versions(k, ts, user_key, snapshot) == Ordering::Less)?;
        let Some(cursor) = found else {
            return Ok(None);
        };
        let entry = self
            .view(&cursor.entry)
            .ok_or_else(|| self.block_error(cursor.block, "entry outside the file"))?;
        Ok((entry.user_key == user_key).then_some(entry))
    }

    /// Bytes of table data read so far through get/iter: each time a data
    /// block is loaded its whole length is added, verified before or not.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(AtomicOrdering::Relaxed)
    }

    /// Whether data block `block` has passed its checks (for tests).
    #[cfg(test)]
    pub(crate) fn block_verified(&self, block: usize) -> bool {
        self.verified
            .get(block / 64)
            .is_some_and(|w| w.load(AtomicOrdering::Relaxed) & (1 << (block % 64)) != 0)
    }

    pub(crate) fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Positions at the first entry for which `before(user_key, ts)` is false;
    /// `before` must hold on a prefix of the table in internal order. `None`
    /// when it holds for every entry.
    pub(crate) fn find(&self, before: impl Fn(&[u8], Timestamp) -> bool) -> Result<Option<Cursor>> {
        let file = self.bytes.bytes();
        // Every entry of a block is <= its last key, so the first block whose
        // last key is not `before` holds the first entry that is not.
        let block = partition(self.index.len(), |i| {
            let h = self.handle(i)?;
            let key = file
                .get(h.last_user_key())
                .ok_or_else(|| self.block_error(i, "index key outside the file"))?;
            Ok(before(key, h.last_ts))
        })?;
        if block == self.index.len() {
            return Ok(None);
        }
        let layout = self.load_block(block)?;
        let idx = partition(layout.count(), |j| {
            let e = self.entry_pos(block, &layout, j)?;
            let key = file
                .get(e.user_key)
                .ok_or_else(|| self.block_error(block, "entry outside the file"))?;
            Ok(before(key, e.ts))
        })?;
        if idx == layout.count() {
            // The block's last key is not `before` but no entry of it is:
            // only possible if the block disagrees with the index.
            return Err(self.block_error(block, "entries disagree with the index"));
        }
        self.cursor(block, layout, idx).map(Some)
    }

    pub(crate) fn cursor(&self, block: usize, layout: BlockLayout, idx: usize) -> Result<Cursor> {
        let entry = self.entry_pos(block, &layout, idx)?;
        Ok(Cursor {
            block,
            layout,
            idx,
            entry,
        })
    }

    /// The entry's bytes; `None` only if `pos` did not come from this table.
    pub(crate) fn view(&self, pos: &EntryPos) -> Option<TableEntry<'_>> {
        let file = self.bytes.bytes();
        Some(TableEntry {
            user_key: file.get(pos.user_key.clone())?,
            ts: pos.ts,
            kind: pos.kind,
            value: file.get(pos.value.clone())?,
        })
    }

    /// Checks and frames data block `block`, verifying its CRC and its last
    /// key against the index the first time only, and counts it as read.
    pub(crate) fn load_block(&self, block: usize) -> Result<BlockLayout> {
        let h = self.handle(block)?;
        let (word, bit) = (block / 64, 1u64 << (block % 64));
        let flags = self
            .verified
            .get(word)
            .ok_or_else(|| Error::internal("table block bitmap too short"))?;
        let verified = flags.load(AtomicOrdering::Relaxed) & bit != 0;
        let file = self.bytes.bytes();
        let layout = BlockLayout::parse(file, h.offset, h.len, !verified)
            .map_err(|m| self.block_error(block, m))?;
        if !verified {
            // A CRC-clean block can still disagree with the index (a writer
            // bug); checking the last key once keeps searches consistent.
            let last = layout
                .count()
                .checked_sub(1)
                .ok_or_else(|| self.block_error(block, "data block has no entries"))?;
            let raw = layout
                .entry(file, last)
                .map_err(|m| self.block_error(block, m))?;
            if file.get(raw.key) != file.get(h.last_key.clone()) {
                return Err(self.block_error(block, "last key differs from the index"));
            }
            flags.fetch_or(bit, AtomicOrdering::Relaxed);
        }
        self.bytes_read
            .fetch_add(h.len as u64, AtomicOrdering::Relaxed);
        Ok(layout)
    }

    fn entry_pos(&self, block: usize, layout: &BlockLayout, idx: usize) -> Result<EntryPos> {
        let file = self.bytes.bytes();
        let raw = layout
            .entry(file, idx)
            .map_err(|m| self.block_error(block, format!("entry {idx}: {m}")))?;
        let key = file
            .get(raw.key.clone())
            .and_then(decode_internal)
            .ok_or_else(|| self.block_error(block, format!("entry {idx}: bad internal key")))?;
        Ok(EntryPos {
            user_key: raw.key.start..raw.key.end - INTERNAL_SUFFIX_LEN,
            value: raw.value,
            ts: key.ts,
            kind: key.kind,
        })
    }

    fn handle(&self, block: usize) -> Result<&BlockHandle> {
        self.index
            .get(block)
            .ok_or_else(|| Error::internal(format!("table block {block} out of range")))
    }

    fn block_error(&self, block: usize, msg: impl fmt::Display) -> Error {
        let offset = self.index.get(block).map_or(0, |h| h.offset);
        corrupt(
            &table_file_name(self.number),
            format!("data block {block} at offset {offset}: {msg}"),
        )
    }
}

fn corrupt(name: &str, msg: impl fmt::Display) -> Error {
    Error::corruption(format!("table {name}: {msg}"))
}

/// `offset..offset + len` if it is non-empty and ends at or before `end`.
fn region(offset: u64, len: u64, end: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let stop = start.checked_add(usize::try_from(len).ok()?)?;
    (len > 0 && stop <= end).then_some(start..stop)
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

/// Decodes and checks the whole index: keys strictly ascending in internal
/// order, data blocks ascending, non-overlapping and before the index.
fn decode_index(file: &[u8], range: Range<usize>) -> Result<Vec<BlockHandle>, String> {
    let layout = BlockLayout::parse(file, range.start, range.len(), true)?;
    let mut index: Vec<BlockHandle> = Vec::with_capacity(layout.count());
    let mut data_end = 0;
    for i in 0..layout.count() {
        let raw = layout
            .entry(file, i)
            .map_err(|m| format!("entry {i}: {m}"))?;
        let key = file
            .get(raw.key.clone())
            .and_then(decode_internal)
            .ok_or_else(|| format!("entry {i}: bad internal key"))?;
        let mut v = Reader::new(file.get(raw.value).unwrap_or_default());
        let (Some(offset), Some(len), true) = (v.u64_le(), v.u32_le(), v.is_empty()) else {
            return Err(format!("entry {i}: block handle is not 12 bytes"));
        };
        let block = region(offset, u64::from(len), range.start)
            .filter(|b| b.start >= data_end)
            .ok_or_else(|| format!("entry {i}: data block {offset}+{len} out of place"))?;
        if let Some(prev) = index.last() {
            let prev_key = file.get(prev.last_user_key()).unwrap_or_default();
            if compare_versions(prev_key, prev.last_ts, key.user_key, key.ts) != Ordering::Less {
                return Err(format!("entry {i}: keys out of order"));
            }
        }
        data_end = block.end;
        index.push(BlockHandle {
            last_key: raw.key,
            last_ts: key.ts,
            offset: block.start,
            len: block.len(),
        });
    }
    Ok(index)
}

/// Decodes the properties block into a summary (file_size left 0) and checks
/// it against the index.
fn decode_props(
    file: &[u8],
    range: Range<usize>,
    index: &[BlockHandle],
) -> Result<TableSummary, String> {
    let layout = BlockLayout::parse(file, range.start, range.len(), true)?;
    let mut found: [Option<&[u8]>; 5] = [None; 5];
    let names = [
        PROP_ENTRIES,
        PROP_LARGEST,
        PROP_MAX_TS,
        PROP_MIN_TS,
        PROP_SMALLEST,
    ];
    for i in 0..layout.count() {
        let raw = layout
            .entry(file, i)
            .map_err(|m| format!("entry {i}: {m}"))?;
        let (Some(name), Some(value)) = (file.get(raw.key), file.get(raw.value)) else {
            return Err(format!("entry {i} outside the file"));
        };
        // Unknown names are skipped: later versions may add properties.
        if let Some(slot) = names.iter().position(|n| *n == name) {
            if found[slot].replace(value).is_some() {
                return Err(format!("property {} appears twice", name.escape_ascii()));
            }
        }
    }
    let mut get = |slot: usize| {
        found[slot]
            .take()
            .ok_or_else(|| format!("property {} missing", names[slot].escape_ascii()))
    };
    let fixed = |v: &[u8], what: &str| {
        v.try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| format!("property {what} is not 8 bytes"))
    };
    let summary = TableSummary {
        entries: fixed(get(0)?, "entries")?,
        largest: get(1)?.to_vec(),
        max_ts: fixed(get(2)?, "max_ts")?,
        min_ts: fixed(get(3)?, "min_ts")?,
        smallest: get(4)?.to_vec(),
        file_size: 0,
    };
    let consistent = match index.last() {
        None => summary.entries == 0,
        Some(last) => {
            summary.entries >= index.len() as u64
                && summary.smallest <= summary.largest
                && summary.min_ts <= summary.max_ts
                && file.get(last.last_user_key()) == Some(&summary.largest[..])
        }
    };
    if !consistent {
        return Err("properties disagree with the index".into());
    }
    Ok(summary)
}
