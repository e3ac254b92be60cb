//! Writes a table file from entries arriving in internal order
//! (docs/format-table.md). Data blocks are cut once they reach the target
//! size; the index, properties block and footer are written by `finish`.

use std::cmp::Ordering;

use super::block::BlockBuilder;
use super::{
    encode_footer, Footer, PROP_ENTRIES, PROP_LARGEST, PROP_MAX_TS, PROP_MIN_TS, PROP_SMALLEST,
};
use crate::error::{Error, Result};
use crate::io::WritableFile;
use crate::key::{compare_versions, encode_internal, Timestamp, ValueKind};

/// Finished blocks are gathered up to this size before one `append`, so
/// writing a table costs a few large writes rather than one per 4 KiB block.
const WRITE_BUFFER: usize = 256 * 1024;

/// What the manifest records about a finished table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub entries: u64,
    pub file_size: u64,
    /// Smallest user key (empty when `entries == 0`).
    pub smallest: Vec<u8>,
    /// Largest user key (empty when `entries == 0`).
    pub largest: Vec<u8>,
    /// Oldest timestamp of any entry (0 when `entries == 0`).
    pub min_ts: Timestamp,
    /// Newest timestamp of any entry (0 when `entries == 0`).
    pub max_ts: Timestamp,
}

pub struct TableBuilder {
    file: Box<dyn WritableFile>,
    block_size: usize,
    /// File offset of the first byte of `out`.
    offset: u64,
    /// Finished blocks not yet appended to `file`.
    out: Vec<u8>,
    data: BlockBuilder,
    index: BlockBuilder,
    /// Encoded internal key of the last entry added: the order check and the
    /// index entry of the current block both need it.
    last_key: Vec<u8>,
    last_ts: Timestamp,
    entries: u64,
    smallest: Vec<u8>,
    min_ts: Timestamp,
    max_ts: Timestamp,
    /// Set once a write fails; the file then has a hole, so every later call
    /// fails instead of producing a table that looks whole.
    failed: bool,
}

impl TableBuilder {
    /// Starts a table in `file`, which should be empty: block offsets are
    /// absolute, counted from the file's current length.
    pub fn new(file: Box<dyn WritableFile>, block_size: usize) -> TableBuilder {
        let offset = file.len();
        TableBuilder {
            file,
            block_size,
            offset,
            out: Vec::new(),
            data: BlockBuilder::new(),
            index: BlockBuilder::new(),
            last_key: Vec::new(),
            last_ts: 0,
            entries: 0,
            smallest: Vec::new(),
            min_ts: 0,
            max_ts: 0,
            failed: false,
        }
    }

    /// Entries must arrive in internal order (user key asc, ts desc), each
    /// (key, ts) once; out-of-order input is Err(invalid_argument) (it would
    /// be a bug).
    pub fn add(
        &mut self,
        user_key: &[u8],
        ts: Timestamp,
        kind: ValueKind,
        value: &[u8],
    ) -> Result<()> {
        self.check_usable()?;
        if self.entries > 0 {
            let last_user_key = self.last_user_key();
            if compare_versions(last_user_key, self.last_ts, user_key, ts) != Ordering::Less {
                return Err(Error::invalid_argument(format!(
                    "table entries out of order: {:?}@{} after {:?}@{}",
                    Escaped(user_key),
                    ts,
                    Escaped(last_user_key),
                    self.last_ts
                )));
            }
        } else {
            self.smallest = user_key.to_vec();
            self.min_ts = ts;
            self.max_ts = ts;
        }
        self.last_key.clear();
        encode_internal(&mut self.last_key, user_key, ts, kind);
        self.last_ts = ts;
        self.entries += 1;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        let mut result = self.data.add(&self.last_key, value);
        if result.is_ok() && self.data.framed_len() >= self.block_size {
            result = self.finish_data_block();
        }
        // Past the order check, a failure leaves the builder's state out of
        // step with the blocks, so it must not be used again.
        self.failed = result.is_err();
        result
    }

    /// Writes the rest, fdatasyncs the file, returns what the manifest records.
    pub fn finish(mut self) -> Result<TableSummary> {
        self.check_usable()?;
        if !self.data.is_empty() {
            self.finish_data_block()?;
        }
        let (index_offset, index_len) = self.finish_block(Which::Index)?;

        let largest = self.last_user_key().to_vec();
        let mut props = BlockBuilder::new();
        // Names in ascending byte order (see the spec).
        props.add(PROP_ENTRIES, &self.entries.to_le_bytes())?;
        props.add(PROP_LARGEST, &largest)?;
        props.add(PROP_MAX_TS, &self.max_ts.to_le_bytes())?;
        props.add(PROP_MIN_TS, &self.min_ts.to_le_bytes())?;
        props.add(PROP_SMALLEST, &self.smallest)?;
        let props_offset = self.offset + self.out.len() as u64;
        let props_len = props.finish_into(&mut self.out)?;

        encode_footer(
            &Footer {
                index_offset,
                index_len: u64::from(index_len),
                props_offset,
                props_len: u64::from(props_len),
                filter_offset: 0,
                filter_len: 0,
            },
            &mut self.out,
        );
        self.flush()?;
        self.file.sync_data()?;
        Ok(TableSummary {
            entries: self.entries,
            file_size: self.file.len(),
            smallest: std::mem::take(&mut self.smallest),
            largest,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        })
    }

    fn last_user_key(&self) -> &[u8] {
        let n = self
            .last_key
            .len()
            .saturating_sub(crate::key::INTERNAL_SUFFIX_LEN);
        self.last_key.get(..n).unwrap_or_default()
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::internal("table builder used after a failed write"));
        }
        Ok(())
    }

    fn finish_data_block(&mut self) -> Result<()> {
        let (offset, len) = self.finish_block(Which::Data)?;
        let mut handle = [0u8; 12];
        handle[..8].copy_from_slice(&offset.to_le_bytes());
        handle[8..].copy_from_slice(&len.to_le_bytes());
        self.index.add(&self.last_key, &handle)?;
        if self.out.len() >= WRITE_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    /// Frames the data or index block into `out`; returns its (offset, len).
    fn finish_block(&mut self, which: Which) -> Result<(u64, u32)> {
        let offset = self.offset + self.out.len() as u64;
        let block = match which {
            Which::Data => &mut self.data,
            Which::Index => &mut self.index,
        };
        let len = block.finish_into(&mut self.out)?;
        Ok((offset, len))
    }

    fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.append(&self.out) {
            self.failed = true;
            return Err(e);
        }
        self.offset += self.out.len() as u64;
        self.out.clear();
        Ok(())
    }
}

enum Which {
    Data,
    Index,
}

/// Shows a key in an error message: printable ASCII as is, the rest escaped,
/// cut short so a 64 KiB key does not flood the log.
struct Escaped<'a>(&'a [u8]);

impl std::fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = self.0.get(..64).unwrap_or(self.0);
        write!(f, "\"{}", shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        write!(f, "\"")
    }
}
