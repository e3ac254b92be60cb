//! Table files: immutable, sorted, checksummed runs of versions, read through
//! a memory map. The byte format is specified in docs/format-table.md.
//! Version 2 (written by this code):
//!
//! `data block* | filter.bloom | index.hash | properties | metaindex | index | footer (64 bytes)`
//!
//! every block stored as `payload | type u8 | crc32` so blocks can be
//! compressed and new block kinds added without a format break. Version 1
//! files (no block types, no metaindex) are still read.
//!
//! - [`block`]: the framing every block shares (entries, offsets, count, trailer).
//! - [`compress`]: block types and per-block LZ4 / zstd compression.
//! - [`bloom`]: the whole-table bloom filter on user keys.
//! - [`hash_index`]: the whole-table hash index that takes a point read
//!   straight to a key's entry.
//! - [`footer`]: the fixed-size footer of both versions.
//! - [`meta`]: decoding the index, metaindex and properties at open.
//! - [`builder`]: [`TableBuilder`] writes a version-2 table from sorted entries.
//! - [`table`]: [`Table`] opens either version and answers point reads.
//! - [`iter`]: [`TableIter`] walks it both ways.
//! - [`readahead`]: [`Readahead`] reads ahead of an iterator's sequential
//!   steps, bounded to the blocks its scan can need.

mod block;
mod bloom;
mod builder;
mod compress;
mod footer;
mod hash_index;
mod iter;
mod meta;
mod readahead;
mod table;

// Used by the db layer once it is wired in; until then only tests use them.
/// The key hash tables' filters and hash indexes share ([`Table::get_with_hash`]).
pub(crate) use bloom::bloom_hash;
#[allow(unused_imports)]
pub use builder::{TableBuilder, TableOptions, TableSummary};
pub(crate) use builder::{CUT_MARGIN, CUT_WINDOW};
pub use compress::Compression;
#[allow(unused_imports)]
pub use iter::TableIter;
pub use readahead::Readahead;
pub(crate) use table::clock_ms;
#[allow(unused_imports)]
pub use table::{Table, TableCounters, TableEntry, TableGet};

/// Target size of a data block unless the caller chooses another.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// Bits per key of the bloom filter unless the caller chooses another
/// (about 1% false positives).
pub const DEFAULT_BLOOM_BITS_PER_KEY: u32 = 10;

/// Whether tables get a hash index (`index.hash`) unless the caller
/// chooses otherwise.
pub const DEFAULT_HASH_INDEX: bool = true;

/// The format version this code writes; it reads 1 and 2.
pub const FORMAT_VERSION: u32 = 2;
/// Fixed size of the footer at the end of the file (both versions).
pub const FOOTER_LEN: usize = 64;

/// Table kinds (version-2 footer byte 32). Only key-value tables exist yet;
/// columnar tables will get their own kind.
pub const TABLE_KIND_KV: u8 = 0;
/// A key-value table that also holds range tombstones (a `rangedel` meta
/// block). A kind of its own so that a build that predates range deletes
/// refuses the table instead of ignoring the block and showing deleted
/// keys.
pub const TABLE_KIND_KV_RANGEDEL: u8 = 1;

/// Meta block names in the metaindex (version 2), in ascending byte order.
const META_FILTER_BLOOM: &[u8] = b"filter.bloom";
const META_INDEX_HASH: &[u8] = b"index.hash";
const META_PROPERTIES: &[u8] = b"properties";
const META_RANGEDEL: &[u8] = b"rangedel";
/// Zeros that make the file end on a 2 MiB boundary (docs/format-table.md,
/// "End pad"); readers never read it.
const META_PAD: &[u8] = b"pad";

// Property names in the properties block, in the ascending byte order the
// builder writes them.
const PROP_ENTRIES: &[u8] = b"entries";
const PROP_LARGEST: &[u8] = b"largest";
const PROP_MAX_TS: &[u8] = b"max_ts";
const PROP_MIN_TS: &[u8] = b"min_ts";
const PROP_SMALLEST: &[u8] = b"smallest";

/// File name of table `number`: `000042.sst`.
pub fn table_file_name(number: u64) -> String {
    format!("{number:06}.sst")
}

/// The number in a table file name, accepting only the exact form
/// [`table_file_name`] produces (so `42.sst` or `0000042.sst` are strays).
pub fn parse_table_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".sst")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = digits.parse().ok()?;
    (table_file_name(number) == name).then_some(number)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_readahead;

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn table_file_names_round_trip() {
        assert_eq!(table_file_name(42), "000042.sst");
        assert_eq!(table_file_name(12_345_678), "12345678.sst");
        for n in [0, 1, 42, 999_999, 1_000_000, u64::MAX] {
            assert_eq!(parse_table_name(&table_file_name(n)), Some(n));
        }
        for bad in [
            "42.sst",
            "0000042.sst",
            "000042.log",
            ".sst",
            "00004a.sst",
            "+00042.sst",
            "000042.sst.tmp",
            "99999999999999999999999.sst",
        ] {
            assert_eq!(parse_table_name(bad), None, "{bad}");
        }
    }
}
