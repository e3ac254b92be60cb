//! Scans of a table that has column chunks: chunk rows merged, in primary
//! key order, with the cells written since the chunks were made.
//!
//! Every chunking commit removes the cells it folded into chunks (see
//! chunking.rs), so a cell visible at a snapshot is always newer than any
//! chunk visible there: a row's live pk-marker cell means the row is the
//! cells' (overriding a chunk row with the same key), a deleted marker hides
//! the chunk row, and a chunk row without a marker cell is read from the
//! chunks.

use std::cmp::Ordering;
use std::ops::Bound;

use crate::error::{Error, Result};
use crate::iter::{prefix_successor, ScanOptions};

use super::chunk::{self, Chunk};
use super::reader::CellReader;
use super::scan::{ColumnBatch, ColumnCursor, Filter};
use super::table::{is_live_marker, Table};
use super::value::{decode_pk, Value};
use super::{chunk_prefix, column_prefix};

/// Chunk entries read per batch of a chunk cursor (each batch re-seeks,
/// re-reading the block the last one ended in: ~1/16 more bytes).
const CHUNKS_AHEAD: usize = 16;
/// Cells read per batch of a cell cursor.
const CELLS_AHEAD: usize = 256;

/// Encoded primary-key bounds: `(pk, inclusive)`.
pub(super) type PkBound = Option<(Vec<u8>, bool)>;

/// Scan options over `prefix + pk` keys within the pk bounds.
pub(super) fn keyed_range(
    prefix: &[u8],
    lower: &PkBound,
    upper: &PkBound,
    reverse: bool,
) -> ScanOptions {
    let bound = |b: &PkBound, open: Bound<Vec<u8>>| match b {
        Some((pk, inc)) => {
            let mut k = prefix.to_vec();
            k.extend_from_slice(pk);
            if *inc {
                Bound::Included(k)
            } else {
                Bound::Excluded(k)
            }
        }
        None => open,
    };
    let end = prefix_successor(prefix).map_or(Bound::Unbounded, Bound::Excluded);
    ScanOptions::default()
        .lower(bound(lower, Bound::Included(prefix.to_vec())))
        .upper(bound(upper, end))
        .reverse(reverse)
}

/// Compares chunk pk `i` (decoded) with an encoded primary key.
fn cmp_pk(pks: &Chunk, i: usize, other: &[u8]) -> Ordering {
    match &pks.values {
        chunk::ChunkValues::I64(v) => {
            let enc = ((v[i] as u64) ^ (1 << 63)).to_be_bytes();
            enc.as_slice().cmp(other)
        }
        chunk::ChunkValues::Var(v) => v[i].as_slice().cmp(other),
        _ => Ordering::Equal,
    }
}

/// The chunk whose rows are being merged.
struct Loaded {
    /// The chunk key's primary-key part (its first row's pk).
    key: Vec<u8>,
    /// `None` when the scan needs no primary key (see `MergedScan::open`).
    pks: Option<Chunk>,
    len: usize,
    /// Per schema column: its chunk, once loaded.
    cols: Vec<Option<Chunk>>,
    /// Rows not yet visited: forward `next..len`, reverse `0..next`.
    next: usize,
    /// With a filter: min/max show that no row of this chunk matches.
    none_match: bool,
}

/// Per-column counts of bytes and cells (rows) read.
type Counts = Vec<(u64, u64)>;

pub(super) struct MergedScan {
    table: Table,
    projection: Vec<usize>,
    filter: Option<(usize, Filter)>,
    reverse: bool,
    lower: PkBound,
    upper: PkBound,
    /// The pk chunks (`None` when not needed), then one cursor per column
    /// of `chunk_cols`.
    pk_chunks: Option<ColumnCursor>,
    chunk_cols: Vec<usize>,
    col_chunks: Vec<ColumnCursor>,
    chunks_done: bool,
    current: Option<Loaded>,
    /// The pk-marker cells, then one cursor per column of `cell_cols`.
    markers: ColumnCursor,
    cell_cols: Vec<usize>,
    cells: Vec<ColumnCursor>,
    prefix_len: usize,
    counts: Counts,
}

impl MergedScan {
    /// `None` when the table has no chunks visible to `reader` (the cells
    /// are then the whole table and the plain cell scan reads them).
    pub(super) fn open(
        table: &Table,
        reader: &CellReader,
        projection: Vec<usize>,
        filter: Option<(usize, Filter)>,
        lower: PkBound,
        upper: PkBound,
        reverse: bool,
    ) -> Result<Option<MergedScan>> {
        let pk_index = table.schema.pk_index();
        let pk_prefix = chunk_prefix(table.id, pk_index as u16);
        // Columns read row by row (and chunk by chunk): every asked one, or
        // with a filter only the filter column (the others are fetched
        // for matching rows only).
        let eager: Vec<usize> = match &filter {
            Some((c, _)) => vec![*c],
            None => projection.clone(),
        }
        .into_iter()
        .filter(|&c| c != pk_index)
        .collect();
        // Without bounds, a pk in the output or filter, and newer cells to
        // merge, rows need no key: the pk chunks are not read, so a scan of
        // one column reads that column's chunks only. (After chunking no
        // table file holds a cell of the table, so this probe opens none.)
        let no_cells = {
            let markers = column_prefix(table.id, pk_index as u16);
            let mut probe = reader.scan(keyed_range(&markers, &lower, &upper, false).limit(1));
            probe.next_batch(1, usize::MAX)?.is_empty()
        };
        let keyless = no_cells
            && lower.is_none()
            && upper.is_none()
            && !eager.is_empty()
            && !projection.contains(&pk_index)
            && filter.as_ref().is_none_or(|(c, _)| *c != pk_index);
        // Chunks starting after an exclusive upper bound hold no row in
        // range; one starting at it is read and its rows dropped.
        let chunk_upper: PkBound = upper.as_ref().map(|(pk, _)| (pk.clone(), true));
        let chunk_cursor = |column: usize, start: &PkBound| {
            let opts = keyed_range(
                &chunk_prefix(table.id, column as u16),
                start,
                &chunk_upper,
                reverse,
            );
            ColumnCursor::new(column, reader.scan(opts), false)
        };
        // Whether the table has chunks (else `None`), and where they start.
        // Keyless, the first eager column's cursor is the probe (every
        // chunked column has a chunk at every chunk key, so it has chunks
        // exactly when the pk column does); its first entries are kept,
        // so the probe reads nothing the scan would not read anyway.
        let mut first_cursor = None;
        let start: PkBound = match (&lower, eager.first()) {
            (None, Some(&c)) if keyless => {
                let mut cursor = chunk_cursor(c, &None);
                cursor.fill(CHUNKS_AHEAD)?;
                if cursor.buffered.is_empty() {
                    return Ok(None);
                }
                first_cursor = Some(cursor);
                None
            }
            (None, _) => {
                let mut probe =
                    reader.scan(keyed_range(&pk_prefix, &lower, &upper, false).limit(1));
                if probe.next_batch(1, usize::MAX)?.is_empty() {
                    return Ok(None);
                }
                None
            }
            // The chunk holding the lower bound starts at or before it.
            (Some((pk, _)), _) => {
                let upto: PkBound = Some((pk.clone(), true));
                let mut probe = reader.scan(keyed_range(&pk_prefix, &None, &upto, true).limit(1));
                match probe.next_batch(1, usize::MAX)?.into_iter().next() {
                    Some((k, _)) => Some((k[pk_prefix.len()..].to_vec(), true)),
                    None => {
                        let mut probe =
                            reader.scan(keyed_range(&pk_prefix, &lower, &upper, false).limit(1));
                        if probe.next_batch(1, usize::MAX)?.is_empty() {
                            return Ok(None);
                        }
                        None
                    }
                }
            }
        };
        let cell_cursor = |column: usize| {
            let opts = keyed_range(
                &column_prefix(table.id, column as u16),
                &lower,
                &upper,
                reverse,
            );
            ColumnCursor::new(column, reader.scan(opts), column == pk_index)
        };
        let markers = ColumnCursor::new(
            pk_index,
            reader.scan(keyed_range(
                &column_prefix(table.id, pk_index as u16),
                &lower,
                &upper,
                reverse,
            )),
            false,
        );
        let mut col_chunks = Vec::with_capacity(eager.len());
        for &c in &eager {
            col_chunks.push(match first_cursor.take() {
                Some(cursor) => cursor,
                None => chunk_cursor(c, &start),
            });
        }
        Ok(Some(MergedScan {
            table: table.clone(),
            filter,
            reverse,
            pk_chunks: (!keyless).then(|| chunk_cursor(pk_index, &start)),
            col_chunks,
            chunk_cols: eager.clone(),
            chunks_done: false,
            current: None,
            markers,
            cells: eager.iter().map(|&c| cell_cursor(c)).collect(),
            cell_cols: eager,
            prefix_len: column_prefix(table.id, 0).len(),
            counts: vec![(0, 0); table.schema.columns.len()],
            projection,
            lower,
            upper,
        }))
    }

    /// Bytes and cells read per column since the last call.
    pub(super) fn take_counts(&mut self) -> Counts {
        let n = self.counts.len();
        std::mem::replace(&mut self.counts, vec![(0, 0); n])
    }

    /// Appends up to `want` rows to `batch`; `false` when the scan is done.
    pub(super) fn fill(
        &mut self,
        reader: &CellReader,
        want: usize,
        batch: &mut ColumnBatch,
    ) -> Result<bool> {
        while batch.len() < want {
            if self.filter.is_none() && self.chunk_run(want - batch.len(), batch)? {
                continue;
            }
            if !self.next_row(reader, batch)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Without a filter and once no cell is left to merge: appends up to
    /// `n` rows of the current chunk at once (the per-row merge steps cost
    /// more than the values). `false` when that does not apply.
    fn chunk_run(&mut self, n: usize, batch: &mut ColumnBatch) -> Result<bool> {
        let Some(i) = self.chunk_row()? else {
            return Ok(false);
        };
        self.markers.refill(CELLS_AHEAD)?;
        if !self.markers.buffered.is_empty() {
            return Ok(false);
        }
        let Some(cur) = self.current.as_ref() else {
            return Ok(false);
        };
        let (lo, hi) = if self.reverse {
            (i + 1 - n.min(i + 1), i + 1)
        } else {
            (i, i + n.min(cur.len - i))
        };
        if self.lower.is_some() || self.upper.is_some() {
            // Rows are in key order: if the far end is in bounds, all are.
            let far = if self.reverse { lo } else { hi - 1 };
            let Some(pks) = &cur.pks else {
                return Ok(false);
            };
            if self.in_bounds(pks, far) != (false, false) {
                return Ok(false);
            }
        }
        let pk_index = self.table.schema.pk_index();
        let Some(cur) = self.current.as_mut() else {
            return Ok(false);
        };
        let reverse = self.reverse;
        let order = move |k: usize| if reverse { hi - 1 - k } else { lo + k };
        for (slot, &c) in self.projection.iter().enumerate() {
            let out = &mut batch.columns[slot];
            out.reserve(hi - lo);
            if c == pk_index {
                let Some(pks) = &cur.pks else {
                    return Err(Error::internal("chunk run without pk chunk"));
                };
                out.extend((0..hi - lo).map(|k| pks.value(order(k))));
            } else {
                let chunk = cur.cols[c]
                    .as_mut()
                    .ok_or_else(|| self.table.missing_chunk(c))?;
                out.extend((0..hi - lo).map(|k| chunk.take(order(k))));
            }
        }
        cur.next = if reverse { lo } else { hi };
        Ok(true)
    }

    fn in_bounds(&self, pks: &Chunk, i: usize) -> (bool, bool) {
        let below = match &self.lower {
            Some((pk, inc)) => match cmp_pk(pks, i, pk) {
                Ordering::Less => true,
                Ordering::Equal => !inc,
                Ordering::Greater => false,
            },
            None => false,
        };
        let above = match &self.upper {
            Some((pk, inc)) => match cmp_pk(pks, i, pk) {
                Ordering::Greater => true,
                Ordering::Equal => !inc,
                Ordering::Less => false,
            },
            None => false,
        };
        (below, above)
    }

    /// Makes `current` point at a chunk row within the bounds (its index
    /// is returned), loading chunks as needed; `None` once no chunk row is
    /// left.
    fn chunk_row(&mut self) -> Result<Option<usize>> {
        loop {
            if let Some(cur) = &self.current {
                let len = cur.len;
                let i = if self.reverse {
                    cur.next.checked_sub(1)
                } else {
                    (cur.next < len).then_some(cur.next)
                };
                if let Some(i) = i {
                    let (below, above) = match &cur.pks {
                        Some(pks) => self.in_bounds(pks, i),
                        None => (false, false),
                    };
                    let outside_ahead = if self.reverse { below } else { above };
                    if outside_ahead {
                        self.chunks_done = true;
                        self.current = None;
                        return Ok(None);
                    }
                    if below || above {
                        self.advance_chunk_row();
                        continue;
                    }
                    return Ok(Some(i));
                }
            }
            self.current = None;
            if self.chunks_done || !self.load_chunk()? {
                self.chunks_done = true;
                return Ok(None);
            }
        }
    }

    fn advance_chunk_row(&mut self) {
        if let Some(cur) = &mut self.current {
            if self.reverse {
                cur.next = cur.next.saturating_sub(1);
            } else {
                cur.next += 1;
            }
        }
    }

    /// Reads the next chunk of the pk column and of every eager column
    /// (they share chunk keys); `false` at the end.
    fn load_chunk(&mut self) -> Result<bool> {
        let p = self.prefix_len;
        let schema = &self.table.schema;
        let pk_index = schema.pk_index();
        // The chunk key: the pk chunk's, or (keyless) the first column's.
        let mut pks = None;
        let mut suffix = None;
        if let Some(cursor) = &mut self.pk_chunks {
            cursor.refill(CHUNKS_AHEAD)?;
            let Some((key, raw)) = cursor.pop() else {
                return Ok(false);
            };
            let chunk = chunk::decode(schema.columns[pk_index].ty, &raw)?;
            self.counts[pk_index].0 += (key.len() + raw.len()) as u64;
            self.counts[pk_index].1 += chunk.len() as u64;
            suffix = Some(key.get(p..).unwrap_or_default().to_vec());
            pks = Some(chunk);
        }
        let mut len = pks.as_ref().map(Chunk::len);
        let mut cols: Vec<Option<Chunk>> = (0..schema.columns.len()).map(|_| None).collect();
        for (cur, &c) in self.col_chunks.iter_mut().zip(&self.chunk_cols) {
            cur.refill(CHUNKS_AHEAD)?;
            let Some((k, raw)) = cur.pop() else {
                if suffix.is_none() {
                    return Ok(false);
                }
                return Err(self.table.missing_chunk(c));
            };
            let key_suffix = k.get(p..).unwrap_or_default();
            match &suffix {
                Some(s) if s.as_slice() != key_suffix => return Err(self.table.missing_chunk(c)),
                Some(_) => {}
                None => suffix = Some(key_suffix.to_vec()),
            }
            let chunk = chunk::decode(schema.columns[c].ty, &raw)?;
            if *len.get_or_insert(chunk.len()) != chunk.len() {
                return Err(self.table.missing_chunk(c));
            }
            self.counts[c].0 += (k.len() + raw.len()) as u64;
            self.counts[c].1 += chunk.len() as u64;
            cols[c] = Some(chunk);
        }
        let none_match = match &self.filter {
            Some((fc, f)) if *fc != pk_index => cols[*fc]
                .as_ref()
                .and_then(|ch| ch.min_max.as_ref())
                .is_some_and(|(lo, hi)| !f.may_match_range(lo, hi)),
            _ => false,
        };
        let len = len.unwrap_or_default();
        let next = if self.reverse { len } else { 0 };
        self.current = Some(Loaded {
            key: suffix.unwrap_or_default(),
            pks,
            len,
            cols,
            next,
            none_match,
        });
        Ok(true)
    }

    /// Appends the next row to `batch` (or skips a row the filter or a
    /// deletion removes); `false` when no row is left.
    fn next_row(&mut self, reader: &CellReader, batch: &mut ColumnBatch) -> Result<bool> {
        let ci = self.chunk_row()?;
        self.markers.refill(CELLS_AHEAD)?;
        let marker_pk = self
            .markers
            .buffered
            .front()
            .map(|(k, _)| k.get(self.prefix_len..).unwrap_or_default().to_vec());
        let order = match (&ci, &marker_pk, &self.current) {
            (None, None, _) => return Ok(false),
            (Some(i), Some(m), Some(cur)) => {
                let Some(pks) = &cur.pks else {
                    return Err(Error::internal("merged scan without pk chunks met a cell"));
                };
                let o = cmp_pk(pks, *i, m);
                if self.reverse {
                    o.reverse()
                } else {
                    o
                }
            }
            (Some(_), _, _) => Ordering::Less,
            (None, _, _) => Ordering::Greater,
        };
        if order == Ordering::Less {
            let i = ci.unwrap_or_default();
            self.emit_chunk_row(reader, i, batch)?;
            self.advance_chunk_row();
            return Ok(true);
        }
        if order == Ordering::Equal {
            // The cell (live or a deletion) is newer than the chunk row.
            self.advance_chunk_row();
        }
        let Some((key, value)) = self.markers.pop() else {
            return Ok(false);
        };
        // Counted under the pk column, as the cell-only scan counts them.
        let pk_index = self.table.schema.pk_index();
        self.counts[pk_index].0 += (key.len() + value.len()) as u64;
        self.counts[pk_index].1 += 1;
        if is_live_marker(&value) {
            let pk = key.get(self.prefix_len..).unwrap_or_default().to_vec();
            self.emit_cell_row(reader, &pk, batch)?;
        }
        Ok(true)
    }

    fn emit_chunk_row(
        &mut self,
        reader: &CellReader,
        i: usize,
        batch: &mut ColumnBatch,
    ) -> Result<()> {
        let pk_index = self.table.schema.pk_index();
        let Some(cur) = self.current.as_mut() else {
            return Ok(());
        };
        if let Some((fc, f)) = &self.filter {
            if cur.none_match {
                return Ok(());
            }
            let v = if *fc == pk_index {
                cur.pks.as_ref().map_or(Value::Null, |p| p.value(i))
            } else {
                cur.cols[*fc]
                    .as_ref()
                    .map(|c| c.value(i))
                    .unwrap_or(Value::Null)
            };
            if !f.matches(&v) {
                return Ok(());
            }
        }
        for (slot, &c) in self.projection.iter().enumerate() {
            let v = if c == pk_index {
                cur.pks.as_ref().map_or(Value::Null, |p| p.value(i))
            } else {
                if cur.cols[c].is_none() {
                    let mut k = chunk_prefix(self.table.id, c as u16);
                    k.extend_from_slice(&cur.key);
                    let raw = reader.get(&k)?.ok_or_else(|| self.table.missing_chunk(c))?;
                    let chunk = chunk::decode(self.table.schema.columns[c].ty, &raw)?;
                    if chunk.len() != cur.len {
                        return Err(self.table.missing_chunk(c));
                    }
                    self.counts[c].0 += (k.len() + raw.len()) as u64;
                    self.counts[c].1 += chunk.len() as u64;
                    cur.cols[c] = Some(chunk);
                }
                match cur.cols[c].as_mut() {
                    Some(ch) => ch.take(i),
                    None => return Err(self.table.missing_chunk(c)),
                }
            };
            batch.columns[slot].push(v);
        }
        Ok(())
    }

    fn emit_cell_row(
        &mut self,
        reader: &CellReader,
        pk: &[u8],
        batch: &mut ColumnBatch,
    ) -> Result<()> {
        let schema = &self.table.schema;
        let pk_index = schema.pk_index();
        let mut eager: Vec<(usize, Value)> = Vec::with_capacity(self.cells.len());
        for (cur, &c) in self.cells.iter_mut().zip(&self.cell_cols) {
            cur.refill(CELLS_AHEAD)?;
            let (k, raw) = cur
                .pop()
                .filter(|(k, _)| k.get(self.prefix_len..) == Some(pk))
                .ok_or_else(|| {
                    Error::corruption(format!(
                        "table {:?}: columns disagree on primary keys",
                        self.table.name
                    ))
                })?;
            self.counts[c].0 += (k.len() + raw.len()) as u64;
            self.counts[c].1 += 1;
            eager.push((c, self.table.decode(c, pk, &raw)?));
        }
        if let Some((fc, f)) = &self.filter {
            let v = if *fc == pk_index {
                decode_pk(schema.columns[pk_index].ty, pk)?
            } else {
                eager
                    .iter()
                    .find(|(c, _)| c == fc)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Null)
            };
            if !f.matches(&v) {
                return Ok(());
            }
        }
        for (slot, &c) in self.projection.iter().enumerate() {
            let v = if c == pk_index {
                decode_pk(schema.columns[pk_index].ty, pk)?
            } else if let Some(pos) = eager.iter().position(|(e, _)| *e == c) {
                std::mem::replace(&mut eager[pos].1, Value::Null)
            } else {
                let key = self.table.cell_key(c, pk);
                let raw = reader.get(&key)?.ok_or_else(|| {
                    Error::corruption(format!("table {:?}: row without a column", self.table.name))
                })?;
                self.counts[c].0 += (key.len() + raw.len()) as u64;
                self.counts[c].1 += 1;
                self.table.decode(c, pk, &raw)?
            };
            batch.columns[slot].push(v);
        }
        Ok(())
    }
}

/// Where a row with a given primary key lives, at one reader's view.
pub(super) enum RowAt {
    Absent,
    /// In cells (its live pk marker).
    Cells,
    /// Row `index` of the chunks keyed by `key` (the chunk's first pk);
    /// `pk_chunk_bytes`: the pk chunk entry read to find it (key plus
    /// value), for `stats()`.
    Chunk {
        key: Vec<u8>,
        index: usize,
        pk_chunk_bytes: u64,
    },
}

impl Table {
    fn missing_chunk(&self, column: usize) -> Error {
        Error::corruption(format!(
            "table {:?}: the chunk of column {:?} is missing or does not match its pk chunk",
            self.name, self.schema.columns[column].name
        ))
    }

    /// Where the row with encoded primary key `pk` is, if anywhere.
    pub(super) fn locate_row(&self, reader: &CellReader, pk: &[u8]) -> Result<RowAt> {
        let pk_index = self.schema.pk_index();
        match reader.get(&self.cell_key(pk_index, pk))? {
            Some(v) if is_live_marker(&v) => return Ok(RowAt::Cells),
            Some(_) => return Ok(RowAt::Absent),
            None => {}
        }
        let prefix = chunk_prefix(self.id, pk_index as u16);
        let upto: PkBound = Some((pk.to_vec(), true));
        let mut probe = reader.scan(keyed_range(&prefix, &None, &upto, true).limit(1));
        let Some((key, raw)) = probe.next_batch(1, usize::MAX)?.into_iter().next() else {
            return Ok(RowAt::Absent);
        };
        let pks = chunk::decode(self.schema.columns[pk_index].ty, &raw)?;
        let (mut lo, mut hi) = (0, pks.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match cmp_pk(&pks, mid, pk) {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => {
                    return Ok(RowAt::Chunk {
                        key: key[prefix.len()..].to_vec(),
                        index: mid,
                        pk_chunk_bytes: (key.len() + raw.len()) as u64,
                    })
                }
            }
        }
        Ok(RowAt::Absent)
    }

    /// Column `c` of chunk row `index` (see `RowAt::Chunk`).
    pub(super) fn chunk_value(
        &self,
        reader: &CellReader,
        c: usize,
        key: &[u8],
        index: usize,
    ) -> Result<(Value, u64)> {
        let mut k = chunk_prefix(self.id, c as u16);
        k.extend_from_slice(key);
        let raw = reader.get(&k)?.ok_or_else(|| self.missing_chunk(c))?;
        let chunk = chunk::decode(self.schema.columns[c].ty, &raw)?;
        if index >= chunk.len() {
            return Err(self.missing_chunk(c));
        }
        Ok((chunk.value(index), (k.len() + raw.len()) as u64))
    }
}
