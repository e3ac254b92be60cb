//! Writes a version-2 table file from entries arriving in internal order
//! (docs/format-table.md). Data blocks are cut once their contents reach the
//! target size and stored compressed when that pays; the bloom filter, the
//! hash index, properties, metaindex, index and footer are written by
//! `finish`.

use std::cmp::Ordering;

use super::block::{put_v2_trailer, BlockBuilder, V2_TRAILER_LEN};
use super::bloom::{bloom_hash, BloomBuilder};
use super::compress::{compress_into, Compression, TYPE_NONE};
use super::footer::{encode_footer_v2, FooterV2};
use super::hash_index::HashIndexBuilder;
use super::{
    DEFAULT_BLOCK_SIZE, DEFAULT_BLOOM_BITS_PER_KEY, FOOTER_LEN, META_FILTER_BLOOM, META_INDEX_HASH,
    META_PAD, META_PROPERTIES, META_RANGEDEL, PROP_ENTRIES, PROP_LARGEST, PROP_MAX_TS, PROP_MIN_TS,
    PROP_SMALLEST, TABLE_KIND_KV, TABLE_KIND_KV_RANGEDEL,
};
use crate::error::{Error, Result};
use crate::io::WritableFile;
use crate::key::{compare_versions, encode_internal, Timestamp, ValueKind};
use crate::range_del::RangeTombstone;

/// Finished blocks are gathered and written in whole multiples of this
/// size, each write ending on a multiple of it in the file: a table costs a
/// few large writes rather than one per 4 KiB block, and 2 MiB writes at 2
/// MiB offsets let the page cache hold the table in 2 MiB folios, which the
/// kernel maps with one huge-page entry each, so reads of a cached table
/// take no TLB miss per 4 KiB page (docs/performance.md, "Tables in huge
/// pages").
pub(super) const WRITE_BUFFER: usize = 2 << 20;

/// The most of a table's length its end pad may take: 1/8. A pad makes
/// the last 2 MiB of the file (where the filter, hash index and index lie,
/// the blocks every point read touches) a whole 2 MiB folio, mapped with a
/// huge-page entry like the data before it (docs/performance.md, "The
/// table's end in huge pages"). Compaction cuts its outputs where the pad
/// is small ([`TableBuilder::ends_near_boundary`]); a flush takes what its
/// memtable gives, so its pad averages 1 MiB.
pub(super) const MAX_PAD_FRACTION: u64 = 8;

/// Compaction cuts an output once its projected end lies this close
/// before a 2 MiB boundary ([`TableBuilder::ends_near_boundary`]) ...
pub(crate) const CUT_WINDOW: u64 = 64 << 10;
/// ... but not closer than this, which the projection's error (the open
/// data block's compression, a range tombstone block) cannot cross.
pub(crate) const CUT_MARGIN: u64 = 8 << 10;

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

/// How a table is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableOptions {
    /// Target size of a data block's contents (before compression).
    pub block_size: usize,
    /// Compression of data blocks.
    pub compression: Compression,
    /// Bloom filter bits per user key; 0 writes no filter. Other values are
    /// clamped to 1..=32.
    pub bloom_bits_per_key: u32,
    /// Write the `index.hash` block that takes point reads straight to a
    /// key's entry (when every block and entry number fits its slot).
    pub hash_index: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_size: DEFAULT_BLOCK_SIZE,
            compression: Compression::default(),
            bloom_bits_per_key: DEFAULT_BLOOM_BITS_PER_KEY,
            hash_index: super::DEFAULT_HASH_INDEX,
        }
    }
}

pub struct TableBuilder {
    file: Box<dyn WritableFile>,
    options: TableOptions,
    /// File offset of the first byte of `out`.
    offset: u64,
    /// Finished blocks not yet appended to `file`.
    out: Vec<u8>,
    data: BlockBuilder,
    index: BlockBuilder,
    /// Scratch buffer for one block's contents before compression.
    contents: Vec<u8>,
    bloom: BloomBuilder,
    hash: HashIndexBuilder,
    /// Data blocks finished so far: the number of the block being filled.
    blocks: usize,
    /// Contents and stored bytes (payload and trailer) of the data blocks
    /// finished so far: the compression ratio [`TableBuilder::projected_len`]
    /// applies to the open block.
    data_contents: u64,
    data_stored: u64,
    /// Extra raw meta blocks (name, contents), for tests of readers that
    /// meet meta blocks they do not know.
    #[cfg(test)]
    extra_meta: Vec<(Vec<u8>, Vec<u8>)>,
    /// Leaves the end pad out (tests of the length it is computed from).
    #[cfg(test)]
    no_end_pad: bool,
    /// Encoded internal key of the last entry added: the order check and the
    /// index entry of the current block both need it.
    last_key: Vec<u8>,
    last_ts: Timestamp,
    entries: u64,
    smallest: Vec<u8>,
    min_ts: Timestamp,
    max_ts: Timestamp,
    /// Range tombstones for the `rangedel` block.
    range_dels: Vec<RangeTombstone>,
    /// Set once a write fails; the file then has a hole, so every later call
    /// fails instead of producing a table that looks whole.
    failed: bool,
    /// The longest end pad block (zeros and trailer) `finish` may write,
    /// besides the 1/[`MAX_PAD_FRACTION`] rule ([`TableBuilder::limit_end_pad`]).
    max_pad: u64,
}

impl TableBuilder {
    /// Starts a table in `file` with default compression and bloom filter.
    // The engine uses `with_options`; this stays for callers that only
    // choose a block size (compaction, tests).
    #[allow(dead_code)]
    pub fn new(file: Box<dyn WritableFile>, block_size: usize) -> TableBuilder {
        Self::with_options(
            file,
            TableOptions {
                block_size,
                ..TableOptions::default()
            },
        )
    }

    /// Starts a table in `file`, which should be empty: block offsets are
    /// absolute, counted from the file's current length.
    pub fn with_options(file: Box<dyn WritableFile>, options: TableOptions) -> TableBuilder {
        let offset = file.len();
        TableBuilder {
            file,
            options,
            offset,
            out: Vec::new(),
            data: BlockBuilder::new_v2(),
            index: BlockBuilder::new_v2(),
            contents: Vec::new(),
            bloom: BloomBuilder::default(),
            hash: HashIndexBuilder::default(),
            blocks: 0,
            data_contents: 0,
            data_stored: 0,
            #[cfg(test)]
            extra_meta: Vec::new(),
            #[cfg(test)]
            no_end_pad: false,
            last_key: Vec::new(),
            last_ts: 0,
            entries: 0,
            smallest: Vec::new(),
            min_ts: 0,
            max_ts: 0,
            range_dels: Vec::new(),
            failed: false,
            max_pad: u64::MAX,
        }
    }

    /// Writes an end pad only if its block (zeros and trailer) is at most
    /// `max` bytes: compaction, which cuts its outputs where the pad is
    /// small, passes what such a cut gives, so an output it could not cut
    /// there (the last one, one cut for overshooting its target, or one
    /// whose range tombstones pushed it past the boundary) is not padded
    /// by up to an eighth.
    pub(crate) fn limit_end_pad(&mut self, max: u64) {
        self.max_pad = max;
    }

    /// Adds a range tombstone (any order); written to the `rangedel` block
    /// and making this a kind 1 table.
    pub(crate) fn add_range_tombstone(&mut self, t: RangeTombstone) {
        self.range_dels.push(t);
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
        // The filter and the hash index hold user keys, once each (versions
        // arrive together, newest first: the hash index points at the
        // newest).
        let bloom = self.options.bloom_bits_per_key > 0;
        if (bloom || self.options.hash_index)
            && (self.entries == 0 || self.last_user_key() != user_key)
        {
            let hash = bloom_hash(user_key);
            if bloom {
                self.bloom.add_hash(hash);
            }
            if self.options.hash_index {
                self.hash
                    .add(hash, self.blocks, self.data.len(), self.data.next_offset());
            }
        }
        self.last_key.clear();
        encode_internal(&mut self.last_key, user_key, ts, kind);
        self.last_ts = ts;
        self.entries += 1;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        let mut result = self.data.add(&self.last_key, value);
        if result.is_ok() && self.data.contents_len() >= self.options.block_size {
            result = self.finish_data_block();
        }
        // Past the order check, a failure leaves the builder's state out of
        // step with the blocks, so it must not be used again.
        self.failed = result.is_err();
        result
    }

    /// Ends the current data block (if it holds anything), so the next
    /// entry starts a new one: a writer that knows where reads will start
    /// (compaction, at a key partition's boundary) keeps a block from
    /// holding keys of both sides.
    pub(crate) fn end_block(&mut self) -> Result<()> {
        self.check_usable()?;
        if self.data.is_empty() {
            return Ok(());
        }
        let result = self.finish_data_block();
        self.failed = result.is_err();
        result
    }

    /// Writes the rest, fdatasyncs the file, returns what the manifest records.
    pub fn finish(mut self) -> Result<TableSummary> {
        self.check_usable()?;
        if !self.data.is_empty() {
            self.finish_data_block()?;
        }
        // Meta blocks: (name, handle), listed by name in the metaindex.
        let mut metas: Vec<(Vec<u8>, [u8; 12])> = Vec::new();
        if self.options.bloom_bits_per_key > 0 {
            let filter = self.bloom.finish(self.options.bloom_bits_per_key);
            let handle = self.write_stored(&filter, Compression::None)?;
            metas.push((META_FILTER_BLOOM.to_vec(), handle));
        }
        if self.options.hash_index {
            // Its buckets are aligned to the file offset the block starts at.
            if let Some(contents) = self.hash.finish(self.offset + self.out.len() as u64) {
                let handle = self.write_stored(&contents, Compression::None)?;
                metas.push((META_INDEX_HASH.to_vec(), handle));
            }
        }
        let mut range_dels = std::mem::take(&mut self.range_dels);
        range_dels.sort();
        range_dels.dedup();
        if !range_dels.is_empty() {
            let mut block = Vec::new();
            crate::range_del::encode_block(&range_dels, &mut block);
            let handle = self.write_stored(&block, Compression::None)?;
            metas.push((META_RANGEDEL.to_vec(), handle));
        }
        #[cfg(test)]
        for (name, contents) in std::mem::take(&mut self.extra_meta) {
            let handle = self.write_stored(&contents, Compression::None)?;
            metas.push((name, handle));
        }
        let largest = self.last_user_key().to_vec();
        let mut props = BlockBuilder::new_v2();
        // Names in ascending byte order (see the spec).
        props.add(PROP_ENTRIES, &self.entries.to_le_bytes())?;
        props.add(PROP_LARGEST, &largest)?;
        props.add(PROP_MAX_TS, &self.max_ts.to_le_bytes())?;
        props.add(PROP_MIN_TS, &self.min_ts.to_le_bytes())?;
        props.add(PROP_SMALLEST, &self.smallest)?;
        let handle = self.write_entries(&mut props, Compression::None)?;
        metas.push((META_PROPERTIES.to_vec(), handle));
        if let Some(zeros) = self.end_pad(&metas)? {
            let handle = self.write_stored(&vec![0u8; zeros], Compression::None)?;
            metas.push((META_PAD.to_vec(), handle));
        }
        metas.sort();
        let mut meta = BlockBuilder::new_v2();
        for (name, handle) in &metas {
            meta.add(name, handle)?;
        }
        let (metaindex_offset, metaindex_len) =
            split(self.write_entries(&mut meta, Compression::None)?);
        let mut index = std::mem::take(&mut self.index);
        let (index_offset, index_len) = split(self.write_entries(&mut index, Compression::None)?);
        encode_footer_v2(
            &FooterV2 {
                index_offset,
                index_len,
                metaindex_offset,
                metaindex_len,
                kind: if range_dels.is_empty() {
                    TABLE_KIND_KV
                } else {
                    TABLE_KIND_KV_RANGEDEL
                },
            },
            &mut self.out,
        );
        self.flush()?;
        self.file.sync_data()?;
        let mut summary = TableSummary {
            entries: self.entries,
            file_size: self.file.len(),
            smallest: std::mem::take(&mut self.smallest),
            largest,
            min_ts: self.min_ts,
            max_ts: self.max_ts,
        };
        crate::range_del::widen_summary(&mut summary, &range_dels);
        Ok(summary)
    }

    /// The `pad` block's contents length (zeros) that makes the file end on
    /// a [`WRITE_BUFFER`] boundary, given the meta blocks written so far;
    /// `None` for a table shorter than one boundary or a pad over
    /// 1/[`MAX_PAD_FRACTION`] of it. Only the metaindex (whose length does
    /// not depend on the handles in it), the index and the footer follow.
    fn end_pad(&self, metas: &[(Vec<u8>, [u8; 12])]) -> Result<Option<usize>> {
        #[cfg(test)]
        if self.no_end_pad {
            return Ok(None);
        }
        let mut names: Vec<&[u8]> = metas.iter().map(|(n, _)| n.as_slice()).collect();
        names.push(META_PAD);
        names.sort();
        let mut metaindex = BlockBuilder::new_v2();
        for name in names {
            metaindex.add(name, &[0u8; 12])?;
        }
        let rest = metaindex.contents_len() + self.index.contents_len() + 2 * V2_TRAILER_LEN;
        let at = self.offset + self.out.len() as u64;
        Ok(end_pad_len(at, (rest + FOOTER_LEN) as u64)
            .filter(|&zeros| (zeros + V2_TRAILER_LEN) as u64 <= self.max_pad))
    }

    /// The file's length if the table were finished now, without an end
    /// pad: exact for what is written, estimated (within a few KiB) for
    /// the open data block and the meta blocks.
    pub(crate) fn projected_len(&self) -> u64 {
        let mut len = self.offset + self.out.len() as u64;
        if !self.data.is_empty() {
            // Stored as the finished blocks were, on average (compressed
            // blocks of 64 KiB would otherwise be overestimated by tens of
            // KiB, past the cut window).
            let contents = self.data.contents_len() as u64;
            let stored = match (self.options.compression, self.data_contents) {
                (Compression::None, _) | (_, 0) => contents,
                _ => (contents * self.data_stored).div_ceil(self.data_contents),
            };
            len += stored.min(contents) + V2_TRAILER_LEN as u64;
        }
        if self.options.bloom_bits_per_key > 0 {
            len += self.bloom.finished_len(self.options.bloom_bits_per_key) as u64;
        }
        if self.options.hash_index {
            len += self.hash.finished_len() as u64;
        }
        if !self.range_dels.is_empty() {
            // The count, and per tombstone two length-prefixed keys and a
            // timestamp (`range_del::encode_block`; duplicates, dropped
            // at finish, are counted).
            let tombstones: usize = self
                .range_dels
                .iter()
                .map(|t| crate::range_del::encoded_len(t.start.len(), t.end.len()))
                .sum();
            len += (4 + tombstones + V2_TRAILER_LEN) as u64;
        }
        // Index: one entry per block, about a key and a handle each (the
        // open block's only if there is one); then properties (which hold
        // the smallest and the largest user key, the last one added, which
        // may be far longer), metaindex and footer (a few hundred bytes).
        let index_entry = match self.data.is_empty() {
            true => 0,
            false => (self.last_key.len() + 16) as u64,
        };
        len + self.index.contents_len() as u64
            + index_entry
            + (self.smallest.len() + self.last_user_key().len()) as u64
            + 512
            + FOOTER_LEN as u64
    }

    /// Whether the table, finished now, would end just before a 2 MiB
    /// boundary, so its end pad would be small: compaction cuts its outputs
    /// there once they reach their target size.
    #[cfg(test)]
    pub(crate) fn ends_near_boundary(&self) -> bool {
        self.ends_near_boundary_with(0)
    }

    /// [`TableBuilder::ends_near_boundary`] for a table that will also get
    /// `extra` bytes of blocks not added yet (compaction adds an output's
    /// range tombstones only when it finishes it).
    pub(crate) fn ends_near_boundary_with(&self, extra: u64) -> bool {
        let len = self.projected_len() + extra;
        let short = (WRITE_BUFFER as u64 - len % WRITE_BUFFER as u64) % WRITE_BUFFER as u64;
        (CUT_MARGIN..=CUT_WINDOW).contains(&short)
    }

    /// Finishes without an end pad (tests only).
    #[cfg(test)]
    pub(crate) fn without_end_pad(&mut self) {
        self.no_end_pad = true;
    }

    /// Adds a raw meta block named `name` to the table (tests only).
    #[cfg(test)]
    pub(crate) fn add_meta_block(&mut self, name: &[u8], contents: &[u8]) {
        self.extra_meta.push((name.to_vec(), contents.to_vec()));
    }

    /// Writes the hash index with version-1 slots, as builds before
    /// version 2 did (tests of reading their tables; call before `add`).
    #[cfg(test)]
    pub(crate) fn hash_index_version_1(&mut self) {
        self.hash = HashIndexBuilder::version_1();
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
        let mut data = std::mem::take(&mut self.data);
        let contents = data.contents_len() as u64;
        let handle = self.write_entries(&mut data, self.options.compression);
        self.data = data;
        let handle = handle?;
        self.data_contents += contents;
        // The handle's length is the stored block: payload and trailer.
        self.data_stored += split(handle).1 - V2_TRAILER_LEN as u64;
        self.index.add(&self.last_key, &handle)?;
        self.blocks += 1;
        if self.out.len() >= WRITE_BUFFER {
            self.flush_aligned()?;
        }
        Ok(())
    }

    /// Writes what `out` holds up to the last [`WRITE_BUFFER`] boundary of
    /// the file and keeps the rest, so every write ends on a boundary.
    fn flush_aligned(&mut self) -> Result<()> {
        let end = self.offset + self.out.len() as u64;
        let boundary = end - end % WRITE_BUFFER as u64;
        if boundary <= self.offset {
            return Ok(());
        }
        let n = (boundary - self.offset) as usize;
        if let Err(e) = self.file.append(&self.out[..n]) {
            self.failed = true;
            return Err(e);
        }
        self.offset = boundary;
        self.out.drain(..n);
        Ok(())
    }

    /// Finishes `block`'s contents and stores them into `out`; returns the
    /// 12-byte handle of the stored block.
    fn write_entries(
        &mut self,
        block: &mut BlockBuilder,
        compression: Compression,
    ) -> Result<[u8; 12]> {
        let mut contents = std::mem::take(&mut self.contents);
        contents.clear();
        block.finish_contents(&mut contents)?;
        let handle = self.write_stored(&contents, compression);
        self.contents = contents;
        handle
    }

    /// Appends `payload | type | crc32` for `contents` to `out` and returns
    /// the block's handle: offset u64, stored length u32.
    fn write_stored(&mut self, contents: &[u8], compression: Compression) -> Result<[u8; 12]> {
        let offset = self.offset + self.out.len() as u64;
        let start = self.out.len();
        let block_type = match compression {
            Compression::None => {
                self.out.extend_from_slice(contents);
                TYPE_NONE
            }
            c => compress_into(c, contents, &mut self.out),
        };
        put_v2_trailer(&mut self.out, start, block_type);
        // Handles hold u32 lengths; only a filter for billions of keys or a
        // multi-GiB entry gets here.
        let len = u32::try_from(self.out.len() - start)
            .map_err(|_| Error::invalid_argument("table block would exceed 4 GiB"))?;
        let mut handle = [0u8; 12];
        handle[..8].copy_from_slice(&offset.to_le_bytes());
        handle[8..].copy_from_slice(&len.to_le_bytes());
        Ok(handle)
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

/// Zeros for a `pad` block placed at file offset `at`, followed by `rest`
/// bytes, so the file ends on a [`WRITE_BUFFER`] boundary (see
/// [`MAX_PAD_FRACTION`]).
pub(super) fn end_pad_len(at: u64, rest: u64) -> Option<usize> {
    let align = WRITE_BUFFER as u64;
    let unpadded = at + rest;
    if unpadded < align {
        return None;
    }
    let zeros = (align - (unpadded + V2_TRAILER_LEN as u64) % align) % align;
    let padded = unpadded + zeros + V2_TRAILER_LEN as u64;
    ((zeros + V2_TRAILER_LEN as u64) * MAX_PAD_FRACTION <= padded).then_some(zeros as usize)
}

/// A 12-byte handle as (offset, length) for the footer.
fn split(handle: [u8; 12]) -> (u64, u64) {
    let mut offset = [0u8; 8];
    let mut len = [0u8; 4];
    offset.copy_from_slice(&handle[..8]);
    len.copy_from_slice(&handle[8..]);
    (
        u64::from_le_bytes(offset),
        u64::from(u32::from_le_bytes(len)),
    )
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
