//! Decoding what a table keeps in memory while open: the index (one handle
//! per data block), the properties and, in version 2, the metaindex that
//! names the meta blocks (docs/format-table.md). Everything here is checked
//! once, at open; failures are short messages the reader wraps with the
//! table's name.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

use super::block::{parse_v2_stored, BlockLayout};
use super::compress::{decompress, TYPE_NONE};
use super::{
    TableSummary, META_FILTER_BLOOM, META_INDEX_HASH, META_PROPERTIES, META_RANGEDEL, PROP_ENTRIES,
    PROP_LARGEST, PROP_MAX_TS, PROP_MIN_TS, PROP_SMALLEST,
};
use crate::coding::Reader;
use crate::key::{compare_versions, decode_internal, Timestamp, INTERNAL_SUFFIX_LEN};

/// Where a data block is and the last internal key in it.
#[derive(Debug, Clone)]
pub(crate) struct BlockHandle {
    /// Range of the block's last internal key in [`Index::keys`].
    pub(crate) last_key: Range<usize>,
    pub(crate) last_ts: Timestamp,
    pub(crate) offset: usize,
    pub(crate) len: usize,
}

impl BlockHandle {
    pub(crate) fn last_user_key(&self) -> Range<usize> {
        self.last_key.start..self.last_key.end - INTERNAL_SUFFIX_LEN
    }
}

/// The decoded index. Keys are copied out of the file so the index block
/// may itself be compressed (version 2); they are ~1% of the table.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub(crate) handles: Vec<BlockHandle>,
    pub(crate) keys: Vec<u8>,
}

/// A checked block's contents: borrowed from the file when stored
/// uncompressed, else decompressed; `layout` addresses `bytes`.
pub(crate) struct Contents<'a> {
    pub(crate) bytes: Cow<'a, [u8]>,
    pub(crate) layout: BlockLayout,
}

/// Reads the version-2 meta block at `range` (CRC always checked), as raw
/// contents (for the filter) or framed (for entry blocks).
pub(crate) fn read_v2_raw(file: &[u8], range: Range<usize>) -> Result<Cow<'_, [u8]>, String> {
    let (payload, block_type) = parse_v2_stored(file, range.start, range.len(), true)?;
    let bytes = file.get(payload).unwrap_or_default();
    if block_type == TYPE_NONE {
        Ok(Cow::Borrowed(bytes))
    } else {
        decompress(block_type, bytes).map(Cow::Owned)
    }
}

pub(crate) fn read_v2_entries(file: &[u8], range: Range<usize>) -> Result<Contents<'_>, String> {
    let bytes = read_v2_raw(file, range)?;
    let layout = BlockLayout::parse_contents(&bytes, 0, bytes.len())?;
    Ok(Contents { bytes, layout })
}

/// Decodes and checks the whole index: keys strictly ascending in internal
/// order, data blocks ascending, non-overlapping and ending at or before
/// `data_end` (the index block's offset).
pub(crate) fn decode_index(block: &Contents<'_>, data_end: usize) -> Result<Index, String> {
    let (bytes, layout) = (&block.bytes[..], &block.layout);
    let mut index = Index::default();
    index.handles.reserve(layout.count());
    let mut prev_end = 0;
    for i in 0..layout.count() {
        let raw = layout
            .entry(bytes, i)
            .map_err(|m| format!("entry {i}: {m}"))?;
        let key_bytes = bytes.get(raw.key).unwrap_or_default();
        let key =
            decode_internal(key_bytes).ok_or_else(|| format!("entry {i}: bad internal key"))?;
        let mut v = Reader::new(bytes.get(raw.value).unwrap_or_default());
        let (Some(offset), Some(len), true) = (v.u64_le(), v.u32_le(), v.is_empty()) else {
            return Err(format!("entry {i}: block handle is not 12 bytes"));
        };
        let region = region(offset, u64::from(len), data_end)
            .filter(|b| b.start >= prev_end)
            .ok_or_else(|| format!("entry {i}: data block {offset}+{len} out of place"))?;
        if let Some(prev) = index.handles.last() {
            let prev_key = index.keys.get(prev.last_user_key()).unwrap_or_default();
            if compare_versions(prev_key, prev.last_ts, key.user_key, key.ts) != Ordering::Less {
                return Err(format!("entry {i}: keys out of order"));
            }
        }
        prev_end = region.end;
        let start = index.keys.len();
        index.keys.extend_from_slice(key_bytes);
        index.handles.push(BlockHandle {
            last_key: start..index.keys.len(),
            last_ts: key.ts,
            offset: region.start,
            len: region.len(),
        });
    }
    Ok(index)
}

/// Decodes the properties block into a summary (file_size left 0). Unknown
/// names are skipped: later writers may add properties. [`check_props`]
/// compares it with the index once that is decoded.
pub(crate) fn decode_props(block: &Contents<'_>) -> Result<TableSummary, String> {
    let (bytes, layout) = (&block.bytes[..], &block.layout);
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
            .entry(bytes, i)
            .map_err(|m| format!("entry {i}: {m}"))?;
        let (Some(name), Some(value)) = (bytes.get(raw.key), bytes.get(raw.value)) else {
            return Err(format!("entry {i} outside the block"));
        };
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
    if summary.entries > 0
        && (summary.smallest > summary.largest || summary.min_ts > summary.max_ts)
    {
        return Err("properties are inconsistent".into());
    }
    Ok(summary)
}

/// Whether the properties agree with the index.
pub(crate) fn check_props(summary: &TableSummary, index: &Index) -> Result<(), String> {
    let consistent = match index.handles.last() {
        None => summary.entries == 0,
        Some(last) => {
            summary.entries >= index.handles.len() as u64
                && summary.smallest <= summary.largest
                && summary.min_ts <= summary.max_ts
                && index.keys.get(last.last_user_key()) == Some(&summary.largest[..])
        }
    };
    if !consistent {
        return Err("properties disagree with the index".into());
    }
    Ok(())
}

/// The meta blocks this reader knows, located through the metaindex.
#[derive(Debug)]
pub(crate) struct MetaIndex {
    pub(crate) properties: Range<usize>,
    pub(crate) filter_bloom: Option<Range<usize>>,
    pub(crate) index_hash: Option<Range<usize>>,
    pub(crate) range_del: Option<Range<usize>>,
}

/// Decodes the metaindex: names strictly ascending, each value a 12-byte
/// handle inside `[0, meta_end)`. Unknown names are ignored (later versions
/// add meta blocks without a format break); `properties` is required.
pub(crate) fn decode_metaindex(block: &Contents<'_>, meta_end: usize) -> Result<MetaIndex, String> {
    let (bytes, layout) = (&block.bytes[..], &block.layout);
    let mut properties = None;
    let mut filter_bloom = None;
    let mut index_hash = None;
    let mut range_del = None;
    let mut prev: Option<&[u8]> = None;
    for i in 0..layout.count() {
        let raw = layout
            .entry(bytes, i)
            .map_err(|m| format!("entry {i}: {m}"))?;
        let (Some(name), Some(value)) = (bytes.get(raw.key), bytes.get(raw.value)) else {
            return Err(format!("entry {i} outside the block"));
        };
        if prev.is_some_and(|p| p >= name) {
            return Err(format!("entry {i}: names out of order"));
        }
        prev = Some(name);
        let mut v = Reader::new(value);
        let (Some(offset), Some(len), true) = (v.u64_le(), v.u32_le(), v.is_empty()) else {
            return Err(format!("entry {i}: block handle is not 12 bytes"));
        };
        let range = region(offset, u64::from(len), meta_end).ok_or_else(|| {
            format!(
                "meta block {} at {offset}+{len} lies outside the file",
                name.escape_ascii()
            )
        })?;
        if name == META_PROPERTIES {
            properties = Some(range);
        } else if name == META_FILTER_BLOOM {
            filter_bloom = Some(range);
        } else if name == META_INDEX_HASH {
            index_hash = Some(range);
        } else if name == META_RANGEDEL {
            range_del = Some(range);
        }
    }
    Ok(MetaIndex {
        properties: properties.ok_or("meta block properties missing")?,
        filter_bloom,
        index_hash,
        range_del,
    })
}

/// `offset..offset + len` if it is non-empty and ends at or before `end`.
pub(crate) fn region(offset: u64, len: u64, end: usize) -> Option<Range<usize>> {
    let start = usize::try_from(offset).ok()?;
    let stop = start.checked_add(usize::try_from(len).ok()?)?;
    (len > 0 && stop <= end).then_some(start..stop)
}
