//! Columnar tables: schemas, one LSM entry per cell, projection and filter
//! scans. See docs/columnar.md for the key layout and the guarantees.
//!
//! Every cell is stored under
//! `RESERVED_PREFIX 'D' table-id(u32 BE) column-id(u16 BE) encoded-pk`, so
//! the cells of one column are contiguous and ordered by primary key, and a
//! scan of k columns reads only those k key ranges. Tables get the WAL,
//! MVCC, transactions and compaction of the key-value store unchanged.

mod catalog;
mod catalog_cache;
mod chunk;
mod chunking;
pub(crate) use chunking::join_chunker;
mod counters;
mod merged;
mod reader;
mod scan;
mod schema;
mod table;
#[cfg(test)]
mod tests_layout;
#[cfg(test)]
mod tests_open_purge;
mod value;

pub use catalog::lookup_table;
pub(crate) use chunking::chunk_tables_in;
pub use chunking::ChunkingReport;
pub(crate) use counters::ReadCounters;
pub use counters::{ColumnStats, TableStats};
#[doc(hidden)]
pub use reader::CellReader;
pub use scan::{ColumnBatch, ColumnScan, Filter, TableScanOptions};
pub use schema::{ColumnDef, ColumnType, Schema};
pub use table::{ReadSource, Table};
pub use value::Value;

use std::ops::Bound;

use crate::error::{Error, Result};

/// Keys starting with these bytes belong to columnar tables: plain
/// `put`/`delete`/batches of such keys are `InvalidArgument`, and plain
/// scans and iterators skip them.
pub const RESERVED_PREFIX: &[u8] = b"\xff\x00\x01";
/// The key just past every reserved key.
const RESERVED_END: &[u8] = b"\xff\x00\x02";

const CATALOG_TAG: u8 = b'C';
const NEXT_ID_TAG: u8 = b'N';
const DATA_TAG: u8 = b'D';
const DROPPED_TAG: u8 = b'X';
const CHUNK_TAG: u8 = b'K';

pub(crate) fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// Where a scan that meets a reserved key resumes: just past the range
/// (forward) or just before it (reverse).
pub(crate) fn reserved_exit(reverse: bool) -> Bound<Vec<u8>> {
    if reverse {
        Bound::Excluded(RESERVED_PREFIX.to_vec())
    } else {
        Bound::Included(RESERVED_END.to_vec())
    }
}

pub(crate) fn check_user_key(key: &[u8]) -> Result<()> {
    if is_reserved(key) {
        return Err(Error::invalid_argument(
            "keys starting with bytes ff 00 01 are reserved for tables",
        ));
    }
    Ok(())
}

/// `InvalidArgument` when `[start, end)` reaches into the reserved range.
pub(crate) fn check_user_range(start: &[u8], end: &[u8]) -> Result<()> {
    if start < RESERVED_END && end > RESERVED_PREFIX {
        return Err(Error::invalid_argument(
            "the range reaches into keys ff 00 01 .., which are reserved for tables",
        ));
    }
    Ok(())
}

/// `[start, end)` without the reserved range: zero, one or two ranges.
pub(crate) fn user_ranges(start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let below_end = end.min(RESERVED_PREFIX);
    if start < below_end {
        out.push((start.to_vec(), below_end.to_vec()));
    }
    let above_start = start.max(RESERVED_END);
    if above_start < end {
        out.push((above_start.to_vec(), end.to_vec()));
    }
    out
}

fn tagged(tag: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(RESERVED_PREFIX.len() + 16);
    k.extend_from_slice(RESERVED_PREFIX);
    k.push(tag);
    k
}

fn catalog_key(name: &str) -> Vec<u8> {
    let mut k = tagged(CATALOG_TAG);
    k.extend_from_slice(name.as_bytes());
    k
}

fn next_id_key() -> Vec<u8> {
    tagged(NEXT_ID_TAG)
}

/// The entry saying table `table_id` was dropped and its cells may remain:
/// written with the catalog deletion, removed once the cells are deleted.
fn dropped_key(table_id: u32) -> Vec<u8> {
    let mut k = tagged(DROPPED_TAG);
    k.extend_from_slice(&table_id.to_be_bytes());
    k
}

/// The prefix of every cell of one column of one table.
fn column_prefix(table_id: u32, column_id: u16) -> Vec<u8> {
    let mut k = tagged(DATA_TAG);
    k.extend_from_slice(&table_id.to_be_bytes());
    k.extend_from_slice(&column_id.to_be_bytes());
    k
}

/// The prefix of every chunk of one column of one table; a chunk's key
/// is this prefix plus the encoded primary key of its first row.
fn chunk_prefix(table_id: u32, column_id: u16) -> Vec<u8> {
    let mut k = tagged(CHUNK_TAG);
    k.extend_from_slice(&table_id.to_be_bytes());
    k.extend_from_slice(&column_id.to_be_bytes());
    k
}

/// The compaction partition of `key` (compaction/partition.rs): the
/// chunks of one column of one table form a partition, so a large
/// column's chunks get table files of their own and a scan of some
/// columns opens no file (nor block) holding only other columns. Cells,
/// the catalog and key-value data are in no partition.
pub(crate) fn output_partition(key: &[u8]) -> Option<&[u8]> {
    const LEN: usize = RESERVED_PREFIX.len() + 1 + 4 + 2; // tag, table id, column
    let prefix = key.get(..LEN)?;
    (prefix.starts_with(RESERVED_PREFIX) && prefix[RESERVED_PREFIX.len()] == CHUNK_TAG)
        .then_some(prefix)
}

/// The key range holding every chunk of a table: `[start, end)`.
fn chunk_table_range(table_id: u32) -> (Vec<u8>, Vec<u8>) {
    tag_table_range(CHUNK_TAG, table_id)
}

/// The key range of the catalog: `[start, end)`.
fn catalog_range() -> (Vec<u8>, Vec<u8>) {
    (tagged(CATALOG_TAG), tagged(CATALOG_TAG + 1))
}

/// The key range holding every cell of a table: `[start, end)`.
fn table_range(table_id: u32) -> (Vec<u8>, Vec<u8>) {
    tag_table_range(DATA_TAG, table_id)
}

fn tag_table_range(tag: u8, table_id: u32) -> (Vec<u8>, Vec<u8>) {
    let mut start = tagged(tag);
    start.extend_from_slice(&table_id.to_be_bytes());
    let mut end = tagged(tag);
    end.extend_from_slice(&(u64::from(table_id) + 1).to_be_bytes()[4..]);
    if table_id == u32::MAX {
        end = tagged(tag + 1);
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_nest() {
        let (s, e) = table_range(7);
        let c = column_prefix(7, 3);
        assert!(s <= c && c < e);
        assert!(is_reserved(&c) && is_reserved(&catalog_key("x")));
        assert!(c.as_slice() < RESERVED_END);
        let (_, e) = table_range(u32::MAX);
        assert!(column_prefix(u32::MAX, u16::MAX).as_slice() < e.as_slice());
        assert!(!is_reserved(b"\xff\x00"));
        let (s, e) = chunk_table_range(7);
        let c = chunk_prefix(7, 3);
        assert!(s <= c && c < e && c.as_slice() < RESERVED_END);
        assert!(e <= chunk_prefix(8, 0));
    }

    #[test]
    fn output_partitions_are_chunk_columns() {
        let mut k = chunk_prefix(7, 3);
        assert_eq!(output_partition(&k), Some(k.as_slice()));
        k.extend_from_slice(b"pk");
        assert_eq!(output_partition(&k), Some(&k[..10]));
        assert_ne!(output_partition(&k), output_partition(&chunk_prefix(7, 4)));
        assert_eq!(output_partition(&column_prefix(7, 3)), None);
        assert_eq!(output_partition(&catalog_key("x")), None);
        assert_eq!(output_partition(b"user key"), None);
        assert_eq!(output_partition(&chunk_prefix(7, 3)[..9]), None);
    }
}
