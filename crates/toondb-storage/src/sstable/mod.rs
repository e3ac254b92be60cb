//! Table files: immutable, sorted, checksummed runs of versions, read through
//! a memory map. The byte format is specified in docs/format-table.md:
//!
//! `data block* | index block | properties block | footer (64 bytes)`
//!
//! - [`block`]: the framing every block shares (entries, offsets, count, CRC).
//! - [`builder`]: [`TableBuilder`] writes a table from sorted entries.
//! - [`table`]: [`Table`] opens one and answers point reads.
//! - [`iter`]: [`TableIter`] walks it both ways.

mod block;
mod builder;
mod iter;
mod table;

// Used by the db layer once it is wired in; until then only tests use them.
#[allow(unused_imports)]
pub use builder::{TableBuilder, TableSummary};
#[allow(unused_imports)]
pub use iter::TableIter;
#[allow(unused_imports)]
pub use table::{Table, TableEntry};

use crate::coding::Reader;

/// Target size of a data block unless the caller chooses another.
pub const DEFAULT_BLOCK_SIZE: usize = 4096;

/// The only format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Last eight bytes of every table file.
pub const TABLE_MAGIC: &[u8; 8] = b"TOONSST1";
/// Fixed size of the footer at the end of the file.
pub const FOOTER_LEN: usize = 64;
/// Bytes of the footer covered by its CRC (everything before the CRC).
const FOOTER_CRC_COVERS: usize = 52;

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

/// Where the index, properties and (future) filter blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Footer {
    index_offset: u64,
    index_len: u64,
    props_offset: u64,
    props_len: u64,
    /// Reserved for bloom filters; (0, 0) in version 1 files.
    filter_offset: u64,
    filter_len: u64,
}

fn encode_footer(f: &Footer, out: &mut Vec<u8>) {
    let start = out.len();
    for v in [
        f.index_offset,
        f.index_len,
        f.props_offset,
        f.props_len,
        f.filter_offset,
        f.filter_len,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(TABLE_MAGIC);
}

/// Reads the footer at the end of `file`, checking length, magic, CRC and
/// version in that order (so a truncated file reports as such, not as a
/// checksum error).
fn decode_footer(file: &[u8]) -> Result<Footer, String> {
    let start = file.len().checked_sub(FOOTER_LEN).ok_or_else(|| {
        format!(
            "file is {} bytes, shorter than the {FOOTER_LEN}-byte footer (truncated?)",
            file.len()
        )
    })?;
    let footer = file.get(start..).unwrap_or_default();
    let mut r = Reader::new(footer);
    let mut field = || r.u64_le().ok_or("footer too short");
    let f = Footer {
        index_offset: field()?,
        index_len: field()?,
        props_offset: field()?,
        props_len: field()?,
        filter_offset: field()?,
        filter_len: field()?,
    };
    let (Some(version), Some(crc), Some(magic)) = (r.u32_le(), r.u32_le(), r.bytes(8)) else {
        return Err("footer too short".into());
    };
    if magic != TABLE_MAGIC {
        return Err("bad magic at the end of the file (not a table, or truncated)".into());
    }
    if crc32fast::hash(footer.get(..FOOTER_CRC_COVERS).unwrap_or_default()) != crc {
        return Err("footer checksum mismatch".into());
    }
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (this build reads {FORMAT_VERSION})"
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests;

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

    #[test]
    fn footer_round_trip_and_layout() {
        let f = Footer {
            index_offset: 1,
            index_len: 2,
            props_offset: 3,
            props_len: 4,
            filter_offset: 0,
            filter_len: 0,
        };
        let mut out = vec![9; 5];
        encode_footer(&f, &mut out);
        assert_eq!(out.len(), 5 + FOOTER_LEN);
        assert_eq!(&out[out.len() - 8..], TABLE_MAGIC);
        assert_eq!(decode_footer(&out), Ok(f));
        assert!(decode_footer(&out[1..]).is_ok());
        assert!(decode_footer(&out[6..]).is_err());
    }
}
