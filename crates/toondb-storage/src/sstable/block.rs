//! Block framing shared by data, index, metaindex and properties blocks
//! (docs/format-table.md, "Blocks").
//!
//! Version 1: `entry* | entry offsets u32 LE * count | count u32 LE | crc32 u32 LE`
//! with each entry `key_len varint | value_len varint | key | value`.
//!
//! Version 2 separates the *contents* (what a reader searches) from the
//! *stored* form (what is in the file):
//!
//! - contents: `entry* | entry offsets u32 LE * count | count u32 LE`, each
//!   entry `key_len varint | value_len varint | meta_len varint | key | value | meta`;
//! - stored: `payload | block type u8 | crc32 u32 LE` (see [`super::compress`]),
//!   the CRC covering payload and type.
//!
//! The offsets array lets readers binary-search a block without scanning it.
//!
//! Decoding never trusts the bytes: every length and offset is bounds-checked
//! and failures come back as a short `&'static str` that the table reader
//! wraps with the table number and block offset.

use std::ops::Range;

use crate::coding::{put_varint, Reader};
use crate::error::{Error, Result};

/// Bytes after the offsets array in version 1: entry count and CRC.
pub(crate) const BLOCK_TRAILER_LEN: usize = 8;
/// Bytes after the stored payload in version 2: block type and CRC.
pub(crate) const V2_TRAILER_LEN: usize = 5;

/// Accumulates the entries of one block and frames them.
#[derive(Debug, Default)]
pub(crate) struct BlockBuilder {
    buf: Vec<u8>,
    offsets: Vec<u32>,
    /// Version 2 entry layout (a `meta_len` varint per entry).
    v2: bool,
}

impl BlockBuilder {
    /// A version-1 block builder (kept for tests that write version 1).
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A builder for version-2 block contents.
    pub(crate) fn new_v2() -> Self {
        BlockBuilder {
            v2: true,
            ..Self::default()
        }
    }

    pub(crate) fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        // Offsets and block lengths are u32 in the format; a block only grows
        // past its target by one entry, so this needs a >4 GiB entry to fail.
        let offset = u32::try_from(self.buf.len())
            .map_err(|_| Error::invalid_argument("table block would exceed 4 GiB"))?;
        self.offsets.push(offset);
        put_varint(&mut self.buf, key.len() as u64);
        put_varint(&mut self.buf, value.len() as u64);
        if self.v2 {
            // No entry metadata is defined yet: meta_len 0 (see the spec).
            put_varint(&mut self.buf, 0);
        }
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        Ok(())
    }

    /// Size of the version-2 contents if finished now.
    pub(crate) fn contents_len(&self) -> usize {
        self.buf.len() + 4 * self.offsets.len() + 4
    }

    /// Appends the version-2 contents (entries, offsets, count; no CRC) to
    /// `out` and resets the builder.
    pub(crate) fn finish_contents(&mut self, out: &mut Vec<u8>) -> Result<()> {
        u32::try_from(self.contents_len())
            .map_err(|_| Error::invalid_argument("table block would exceed 4 GiB"))?;
        out.extend_from_slice(&self.buf);
        for off in &self.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        self.buf.clear();
        self.offsets.clear();
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Entries added since the last finish: the number the next one gets.
    pub(crate) fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Where the next entry will start in the block's contents.
    pub(crate) fn next_offset(&self) -> usize {
        self.buf.len()
    }

    /// Size of the version-1 block if it were finished now.
    #[cfg(test)]
    pub(crate) fn framed_len(&self) -> usize {
        self.buf.len() + 4 * self.offsets.len() + BLOCK_TRAILER_LEN
    }

    /// Appends the framed version-1 block to `out`, resets the builder and
    /// returns the block's length.
    #[cfg(test)]
    pub(crate) fn finish_into(&mut self, out: &mut Vec<u8>) -> Result<u32> {
        let len = u32::try_from(self.framed_len())
            .map_err(|_| Error::invalid_argument("table block would exceed 4 GiB"))?;
        let start = out.len();
        out.extend_from_slice(&self.buf);
        for off in &self.offsets {
            out.extend_from_slice(&off.to_le_bytes());
        }
        // `len` fitting in u32 bounds the count too.
        out.extend_from_slice(&(self.offsets.len() as u32).to_le_bytes());
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        self.buf.clear();
        self.offsets.clear();
        Ok(len)
    }
}

/// A block whose trailer has been checked, addressed by absolute offsets
/// into the file bytes so an iterator can keep it without borrowing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockLayout {
    /// File offset of the block's first byte.
    start: usize,
    /// Length of the entries region (= start of the offsets array), relative
    /// to `start`.
    entries_end: usize,
    count: usize,
    /// Entries carry a `meta_len` varint (version 2).
    v2: bool,
}

/// Absolute byte ranges of one entry's key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawEntry {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

impl BlockLayout {
    /// Checks the block `file[start..start + len]`: the CRC when `verify`
    /// (callers skip it for blocks they have verified before), then that the
    /// count and offsets array fit.
    pub(crate) fn parse(
        file: &[u8],
        start: usize,
        len: usize,
        verify: bool,
    ) -> Result<BlockLayout, &'static str> {
        let block = start
            .checked_add(len)
            .and_then(|end| file.get(start..end))
            .ok_or("block extends past the end of the file")?;
        let body_len = len
            .checked_sub(BLOCK_TRAILER_LEN)
            .ok_or("block is shorter than its trailer")?;
        let mut trailer = Reader::new(block.get(body_len..).unwrap_or_default());
        let (Some(count), Some(crc)) = (trailer.u32_le(), trailer.u32_le()) else {
            return Err("block is shorter than its trailer");
        };
        if verify {
            let covered = block.get(..len - 4).unwrap_or_default();
            if crc32fast::hash(covered) != crc {
                return Err("block checksum mismatch");
            }
        }
        let count = count as usize;
        let entries_end = count
            .checked_mul(4)
            .and_then(|offsets_len| body_len.checked_sub(offsets_len))
            .ok_or("block entry count does not fit in the block")?;
        Ok(BlockLayout {
            start,
            entries_end,
            count,
            v2: false,
        })
    }

    /// Frames version-2 contents `bytes[start..start + len]` (already
    /// checksummed and decompressed): checks that the count and offsets fit.
    pub(crate) fn parse_contents(
        bytes: &[u8],
        start: usize,
        len: usize,
    ) -> Result<BlockLayout, &'static str> {
        let block = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or("block extends past the end of the file")?;
        let body_len = len
            .checked_sub(4)
            .ok_or("block is shorter than its entry count")?;
        let count = Reader::new(block.get(body_len..).unwrap_or_default())
            .u32_le()
            .ok_or("block is shorter than its entry count")? as usize;
        let entries_end = count
            .checked_mul(4)
            .and_then(|offsets_len| body_len.checked_sub(offsets_len))
            .ok_or("block entry count does not fit in the block")?;
        Ok(BlockLayout {
            start,
            entries_end,
            count,
            v2: true,
        })
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The key of entry `i`, for a search: only the key's own framing is
    /// checked (cheaper than [`BlockLayout::entry`], which a search calls
    /// once, on the entry it lands on). Within the entries region, so a
    /// damaged offset or length is an error, never a read outside the block.
    pub(crate) fn key<'f>(&self, file: &'f [u8], i: usize) -> Result<&'f [u8], &'static str> {
        let (_, mut r, key_len, _, _) = self.header(file, i)?;
        let key_len = usize::try_from(key_len).map_err(|_| "entry key too long")?;
        r.bytes(key_len).ok_or("entry key runs past the entries")
    }

    /// Entry `i`'s start in `file`, a reader over the entries region
    /// positioned after its header, and the header's key, value and
    /// metadata lengths (metadata 0 in version 1).
    fn header<'f>(
        &self,
        file: &'f [u8],
        i: usize,
    ) -> Result<(usize, Reader<'f>, u64, u64, u64), &'static str> {
        if i >= self.count {
            return Err("entry index past the block's entry count");
        }
        // In range: parse() checked entries_end + 4 * count <= block length.
        let slot = self.start + self.entries_end + 4 * i;
        let offset = file
            .get(slot..slot + 4)
            .and_then(|b| Reader::new(b).u32_le())
            .ok_or("entry offset past the end of the block")? as usize;
        let entry_start = self.start + offset;
        let region = file
            .get(entry_start..self.start + self.entries_end)
            .ok_or("entry offset past the end of the entries")?;
        let mut r = Reader::new(region);
        let key_len = r.varint().ok_or("bad entry key length")?;
        let value_len = r.varint().ok_or("bad entry value length")?;
        let meta_len = if self.v2 {
            r.varint().ok_or("bad entry metadata length")?
        } else {
            0
        };
        Ok((entry_start, r, key_len, value_len, meta_len))
    }

    /// Locates entry `i`. Only its framing is checked; what the key means is
    /// up to the caller.
    pub(crate) fn entry(&self, file: &[u8], i: usize) -> Result<RawEntry, &'static str> {
        let (entry_start, ..) = self.header(file, i)?;
        entry_at(file, entry_start, self.entries_end(), self.v2).map(|(entry, _)| entry)
    }

    /// Where the entries region ends in the bytes the layout addresses (the
    /// offsets array starts there).
    pub(crate) fn entries_end(&self) -> usize {
        self.start + self.entries_end
    }

    /// Where the block's contents start in the bytes the layout addresses.
    pub(crate) fn start(&self) -> usize {
        self.start
    }
}

/// The entry that starts at `entry_start` in `file`, framed within
/// `file[..region_end]`: its key and value ranges and where the next entry
/// starts. `region_end` is an entries region's end, or, for a block read
/// without its layout (the hash index's byte offsets), the end of its
/// payload: a damaged offset then reads other bytes of the same block,
/// never bytes outside it. Only the framing is checked.
pub(crate) fn entry_at(
    file: &[u8],
    entry_start: usize,
    region_end: usize,
    v2: bool,
) -> Result<(RawEntry, usize), &'static str> {
    let region = file
        .get(entry_start..region_end)
        .ok_or("entry offset past the end of the entries")?;
    let mut r = Reader::new(region);
    let key_len = r.varint().ok_or("bad entry key length")?;
    let value_len = r.varint().ok_or("bad entry value length")?;
    let meta_len = if v2 {
        r.varint().ok_or("bad entry metadata length")?
    } else {
        0
    };
    let header = region.len() - r.remaining();
    let key_len = usize::try_from(key_len).map_err(|_| "entry key too long")?;
    let value_len = usize::try_from(value_len).map_err(|_| "entry value too long")?;
    let meta_len = usize::try_from(meta_len).map_err(|_| "entry metadata too long")?;
    r.bytes(key_len).ok_or("entry key runs past the entries")?;
    r.bytes(value_len)
        .ok_or("entry value runs past the entries")?;
    let meta = r
        .bytes(meta_len)
        .ok_or("entry metadata runs past the entries")?;
    check_entry_meta(meta)?;
    // No overflow: every range lies inside `region`, a slice in memory.
    let key_start = entry_start + header;
    let value_start = key_start + key_len;
    let end = region_end - r.remaining();
    Ok((
        RawEntry {
            key: key_start..value_start,
            value: value_start..value_start + value_len,
        },
        end,
    ))
}

/// Checks an entry's metadata (version 2): a sequence of
/// `tag varint | len varint | bytes[len]` fields. No tag is defined yet, so
/// every field is unknown to this reader: an odd tag is advisory and skipped,
/// an even tag changes what the entry means (e.g. a future expiry time) and
/// must not be ignored, so it is an error.
fn check_entry_meta(meta: &[u8]) -> Result<(), &'static str> {
    let mut r = Reader::new(meta);
    while !r.is_empty() {
        let tag = r.varint().ok_or("bad entry metadata tag")?;
        r.length_prefixed()
            .ok_or("entry metadata field runs past the entry")?;
        if tag % 2 == 0 {
            return Err("entry metadata has a required field this build does not support");
        }
    }
    Ok(())
}

/// Splits a stored version-2 block `file[start..start + len]` into its
/// payload range and block type, checking the CRC when `verify`.
pub(crate) fn parse_v2_stored(
    file: &[u8],
    start: usize,
    len: usize,
    verify: bool,
) -> Result<(Range<usize>, u8), &'static str> {
    let block = start
        .checked_add(len)
        .and_then(|end| file.get(start..end))
        .ok_or("block extends past the end of the file")?;
    let payload_len = len
        .checked_sub(V2_TRAILER_LEN)
        .ok_or("block is shorter than its trailer")?;
    let mut trailer = Reader::new(block.get(payload_len..).unwrap_or_default());
    let (Some(block_type), Some(crc)) = (trailer.u8(), trailer.u32_le()) else {
        return Err("block is shorter than its trailer");
    };
    if verify && crc32fast::hash(block.get(..payload_len + 1).unwrap_or_default()) != crc {
        return Err("block checksum mismatch");
    }
    Ok((start..start + payload_len, block_type))
}

/// Appends the stored form of a version-2 block: `payload | type | crc32`.
pub(crate) fn put_v2_trailer(out: &mut Vec<u8>, payload_start: usize, block_type: u8) {
    out.push(block_type);
    let crc = crc32fast::hash(out.get(payload_start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut b = BlockBuilder::new();
        for (k, v) in entries {
            b.add(k, v).unwrap();
        }
        let expected = b.framed_len();
        let mut out = vec![0xAA; 3]; // blocks need not start at offset 0
        let len = b.finish_into(&mut out).unwrap();
        assert_eq!(len as usize, expected);
        assert_eq!(out.len(), 3 + expected);
        assert!(b.is_empty());
        out
    }

    #[test]
    fn block_round_trip() {
        let entries: &[(&[u8], &[u8])] = &[(b"a", b""), (b"bb", b"value"), (&[7; 300], &[9; 200])];
        let file = build(entries);
        let layout = BlockLayout::parse(&file, 3, file.len() - 3, true).unwrap();
        assert_eq!(layout.count(), 3);
        for (i, (k, v)) in entries.iter().enumerate() {
            let e = layout.entry(&file, i).unwrap();
            assert_eq!(&file[e.key], *k);
            assert_eq!(&file[e.value], *v);
        }
        assert!(layout.entry(&file, 3).is_err());
    }

    #[test]
    fn empty_block_round_trip() {
        let file = build(&[]);
        let layout = BlockLayout::parse(&file, 3, file.len() - 3, true).unwrap();
        assert_eq!(layout.count(), 0);
    }

    #[test]
    fn block_damage_is_an_error() {
        let file = build(&[(b"key", b"value"), (b"key2", b"value2")]);
        for i in 3..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            assert!(
                BlockLayout::parse(&bad, 3, bad.len() - 3, true).is_err(),
                "byte {i}"
            );
        }
        for len in 0..file.len() - 3 {
            assert!(BlockLayout::parse(&file[..3 + len], 3, len, true).is_err());
        }
        assert!(BlockLayout::parse(&file, 3, file.len(), true).is_err());
        assert!(BlockLayout::parse(&file, usize::MAX, 10, true).is_err());
    }

    /// Version-2 contents with one entry `k` -> `v` carrying `meta`.
    fn v2_entry_with_meta(meta: &[u8]) -> Vec<u8> {
        let mut out = vec![1, 1, meta.len() as u8, b'k', b'v'];
        out.extend_from_slice(meta);
        out.extend_from_slice(&0u32.to_le_bytes()); // offset of entry 0
        out.extend_from_slice(&1u32.to_le_bytes()); // count
        out
    }

    #[test]
    fn v2_contents_round_trip_with_empty_metadata() {
        let mut b = BlockBuilder::new_v2();
        b.add(b"k", b"v").unwrap();
        let mut out = Vec::new();
        b.finish_contents(&mut out).unwrap();
        assert_eq!(out, v2_entry_with_meta(&[]));
        let layout = BlockLayout::parse_contents(&out, 0, out.len()).unwrap();
        let e = layout.entry(&out, 0).unwrap();
        assert_eq!((&out[e.key], &out[e.value]), (&b"k"[..], &b"v"[..]));
    }

    #[test]
    fn entry_metadata_skippable_fields_are_ignored_required_ones_refused() {
        // Odd tag 1 (advisory) with a 2-byte body, then odd tag 3, empty.
        let ok = v2_entry_with_meta(&[1, 2, 0xaa, 0xbb, 3, 0]);
        let layout = BlockLayout::parse_contents(&ok, 0, ok.len()).unwrap();
        let e = layout.entry(&ok, 0).unwrap();
        assert_eq!((&ok[e.key], &ok[e.value]), (&b"k"[..], &b"v"[..]));
        // Even tag 2 (e.g. a future expiry time) must be understood.
        let required = v2_entry_with_meta(&[1, 0, 2, 1, 9]);
        let layout = BlockLayout::parse_contents(&required, 0, required.len()).unwrap();
        assert!(layout.entry(&required, 0).unwrap_err().contains("required"));
        // A field running past the metadata is malformed.
        let bad = v2_entry_with_meta(&[1, 5, 0]);
        let layout = BlockLayout::parse_contents(&bad, 0, bad.len()).unwrap();
        assert!(layout.entry(&bad, 0).is_err());
    }

    #[test]
    fn v2_stored_trailer_checks_crc_and_reports_type() {
        let mut out = vec![0xAA, 1, 2, 3];
        put_v2_trailer(&mut out, 1, 7);
        assert_eq!(parse_v2_stored(&out, 1, out.len() - 1, true), Ok((1..4, 7)));
        for i in 1..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            assert!(
                parse_v2_stored(&bad, 1, bad.len() - 1, true).is_err(),
                "byte {i}"
            );
        }
        for len in 0..V2_TRAILER_LEN {
            assert!(parse_v2_stored(&out, 1, len, true).is_err());
        }
    }

    #[test]
    fn unverified_garbage_does_not_panic() {
        // Without the CRC, structural checks alone must keep decoding safe.
        let mut file = build(&[(b"key", b"value"), (b"key2", b"value2")]);
        let n = file.len();
        for i in 0..n {
            for x in [0x01u8, 0x80, 0xFF] {
                file[i] ^= x;
                if let Ok(layout) = BlockLayout::parse(&file, 3, n - 3, false) {
                    for j in 0..layout.count().min(4) {
                        let _ = layout.entry(&file, j);
                    }
                }
                file[i] ^= x;
            }
        }
    }
}
