//! Column scans: the asked columns' key ranges read side by side (rows
//! zipped by primary key), or, with a filter, the filter column's range
//! read first and the other asked columns fetched only for matching rows.

use std::cmp::Ordering;
use std::collections::VecDeque;

use crate::error::{Error, Result};
use crate::iter::BatchScan;

use super::column_prefix;
use super::merged::{keyed_range, MergedScan, PkBound};
use super::reader::CellReader;
use super::table::{is_live_marker, ReadSource, Table};
use super::value::Value;

/// A condition on one column; a row matches when every given bound holds.
/// Nulls never match.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Filter {
    pub column: String,
    pub eq: Option<Value>,
    pub gt: Option<Value>,
    pub gte: Option<Value>,
    pub lt: Option<Value>,
    pub lte: Option<Value>,
}

impl Filter {
    pub fn on(column: impl Into<String>) -> Self {
        Filter {
            column: column.into(),
            ..Filter::default()
        }
    }
    pub fn eq(mut self, v: Value) -> Self {
        self.eq = Some(v);
        self
    }
    pub fn gt(mut self, v: Value) -> Self {
        self.gt = Some(v);
        self
    }
    pub fn gte(mut self, v: Value) -> Self {
        self.gte = Some(v);
        self
    }
    pub fn lt(mut self, v: Value) -> Self {
        self.lt = Some(v);
        self
    }
    pub fn lte(mut self, v: Value) -> Self {
        self.lte = Some(v);
        self
    }

    fn bounds(&self) -> impl Iterator<Item = (&Value, OrderTest)> {
        let ops: [(Option<&Value>, OrderTest); 5] = [
            (self.eq.as_ref(), |o| o == Ordering::Equal),
            (self.gt.as_ref(), |o| o == Ordering::Greater),
            (self.gte.as_ref(), |o| o != Ordering::Less),
            (self.lt.as_ref(), |o| o == Ordering::Less),
            (self.lte.as_ref(), |o| o != Ordering::Greater),
        ];
        ops.into_iter().filter_map(|(v, f)| v.map(|v| (v, f)))
    }

    pub(super) fn matches(&self, v: &Value) -> bool {
        self.bounds()
            .all(|(bound, ok)| compare(v, bound).is_some_and(ok))
    }

    /// Whether some value in `[lo, hi]` (a chunk's min and max) may match;
    /// `false` only when none can.
    pub(super) fn may_match_range(&self, lo: &Value, hi: &Value) -> bool {
        let le = |a: &Value, b: &Value| compare(a, b).is_some_and(|o| o != Ordering::Greater);
        let lt = |a: &Value, b: &Value| compare(a, b) == Some(Ordering::Less);
        [
            self.eq.as_ref().map(|v| le(lo, v) && le(v, hi)),
            self.gt.as_ref().map(|v| lt(v, hi)),
            self.gte.as_ref().map(|v| le(v, hi)),
            self.lt.as_ref().map(|v| lt(lo, v)),
            self.lte.as_ref().map(|v| le(lo, v)),
        ]
        .into_iter()
        .all(|ok| ok != Some(false))
    }
}

type OrderTest = fn(Ordering) -> bool;

/// Same-type comparison; `None` for null or mixed types (NaN compares by
/// IEEE total order, so it is above every number).
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    Some(match (a, b) {
        (Value::I64(x), Value::I64(y)) => x.cmp(y),
        (Value::F64(x), Value::F64(y)) => x.total_cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        _ => return None,
    })
}

/// What a table scan reads.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TableScanOptions {
    /// Column names, in output order; all columns when `None`.
    pub columns: Option<Vec<String>>,
    /// Primary-key bounds.
    pub lower: Option<(Value, bool)>,
    pub upper: Option<(Value, bool)>,
    pub reverse: bool,
    pub limit: Option<usize>,
    pub filter: Option<Filter>,
}

impl TableScanOptions {
    pub fn columns(mut self, names: &[&str]) -> Self {
        self.columns = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }
    /// Primary key >= `v` (or > when `inclusive` is false).
    pub fn lower(mut self, v: Value, inclusive: bool) -> Self {
        self.lower = Some((v, inclusive));
        self
    }
    pub fn upper(mut self, v: Value, inclusive: bool) -> Self {
        self.upper = Some((v, inclusive));
        self
    }
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

/// One key range's cursor (a column's cells or chunks): its scan and the
/// entries read ahead.
pub(super) struct ColumnCursor {
    column: usize,
    scan: Box<dyn BatchScan>,
    pub(super) buffered: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// Pk-marker cursors of the plain cell scan step over deleted-row
    /// markers (which exist to hide chunk rows).
    skip_deleted: bool,
    bytes: u64,
    cells: u64,
}

impl ColumnCursor {
    pub(super) fn new(column: usize, scan: Box<dyn BatchScan>, skip_deleted: bool) -> Self {
        ColumnCursor {
            column,
            scan,
            buffered: VecDeque::new(),
            skip_deleted,
            bytes: 0,
            cells: 0,
        }
    }

    /// Makes sure `n` entries are buffered, unless the range ends first.
    pub(super) fn fill(&mut self, n: usize) -> Result<()> {
        while self.buffered.len() < n && !self.scan.is_done() {
            let batch = self.scan.next_batch(n - self.buffered.len(), usize::MAX)?;
            if batch.is_empty() {
                break;
            }
            if self.skip_deleted {
                self.buffered
                    .extend(batch.into_iter().filter(|(_, v)| is_live_marker(v)));
            } else {
                self.buffered.extend(batch);
            }
        }
        Ok(())
    }

    /// Reads `n` entries ahead once none is buffered. Every batch of a
    /// scan re-seeks its table iterators (re-reading the block it left
    /// off in), so a cursor read entry by entry must not ask one by one.
    pub(super) fn refill(&mut self, n: usize) -> Result<()> {
        if self.buffered.is_empty() {
            self.fill(n)?;
        }
        Ok(())
    }

    /// The next entry as (full key, value); the primary key is
    /// `key[prefix_len..]`.
    pub(super) fn pop(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (k, v) = self.buffered.pop_front()?;
        self.bytes += (k.len() + v.len()) as u64;
        self.cells += 1;
        Some((k, v))
    }
}

/// A batch of rows, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ColumnBatch {
    /// The asked column names, in the asked order.
    pub names: Vec<String>,
    /// `columns[i]` holds `names[i]`'s values, one per row.
    pub columns: Vec<Vec<Value>>,
}

impl ColumnBatch {
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, Vec::len)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A scan in progress over a table; read with `next_batch` until it
/// returns an empty batch. It holds its snapshot (and, from a transaction,
/// the transaction's writes as they were when it began).
pub struct ColumnScan {
    table: Table,
    reader: CellReader,
    projection: Vec<usize>,
    cursors: Vec<ColumnCursor>,
    /// With a filter: the filter column (cursor 0) and its condition.
    filter: Option<(usize, Filter)>,
    /// When the table has chunks: the scan merging them with the cells
    /// (`cursors` is then empty).
    merged: Option<MergedScan>,
    prefix_len: usize,
    remaining: Option<usize>,
    done: bool,
    /// Whether reads count in `stats().tableReads` (not chunking's).
    counted: bool,
}

impl Table {
    /// Scans the table (see `TableScanOptions`).
    pub fn scan<S: ReadSource + ?Sized>(
        &self,
        source: &S,
        options: TableScanOptions,
    ) -> Result<ColumnScan> {
        let names: Option<Vec<&str>> = options
            .columns
            .as_ref()
            .map(|c| c.iter().map(String::as_str).collect());
        let projection = self.projection(names.as_deref())?;
        let filter = match &options.filter {
            Some(f) => Some((self.schema.column_index(&f.column)?, f.clone())),
            None => None,
        };
        let lower = match &options.lower {
            Some((v, inc)) => Some((self.encode_pk(v)?, *inc)),
            None => None,
        };
        let upper = match &options.upper {
            Some((v, inc)) => Some((self.encode_pk(v)?, *inc)),
            None => None,
        };
        let reader = source.cell_reader(Some(self))?;
        self.scan_reader(reader, projection, filter, lower, upper, &options)
    }

    /// `scan` at `reader`'s view, options already resolved.
    pub(super) fn scan_reader(
        &self,
        reader: CellReader,
        projection: Vec<usize>,
        filter: Option<(usize, Filter)>,
        lower: PkBound,
        upper: PkBound,
        options: &TableScanOptions,
    ) -> Result<ColumnScan> {
        let merged = MergedScan::open(
            self,
            &reader,
            projection.clone(),
            filter.clone(),
            lower.clone(),
            upper.clone(),
            options.reverse,
        )?;
        if merged.is_some() {
            return Ok(ColumnScan {
                table: self.clone(),
                reader,
                projection,
                cursors: Vec::new(),
                filter,
                merged,
                prefix_len: column_prefix(self.id, 0).len(),
                remaining: options.limit,
                done: false,
                counted: true,
            });
        }
        // Filter: read the filter column; otherwise all asked columns.
        let scanned: Vec<usize> = match &filter {
            Some((c, _)) => vec![*c],
            None => projection.clone(),
        };
        let pk_index = self.schema.pk_index();
        let cursors = scanned
            .into_iter()
            .map(|column| {
                let prefix = column_prefix(self.id, column as u16);
                let opts = keyed_range(&prefix, &lower, &upper, options.reverse);
                ColumnCursor::new(column, reader.scan(opts), column == pk_index)
            })
            .collect();
        Ok(ColumnScan {
            table: self.clone(),
            reader,
            projection,
            cursors,
            filter,
            merged: None,
            prefix_len: column_prefix(self.id, 0).len(),
            remaining: options.limit,
            done: false,
            counted: true,
        })
    }
}

impl ColumnScan {
    /// The same scan, not counted in the per-column read counters.
    pub(super) fn uncounted(mut self) -> Self {
        self.counted = false;
        self
    }

    /// The asked column names, in order.
    pub fn columns(&self) -> Vec<String> {
        self.projection
            .iter()
            .map(|&c| self.table.schema.columns[c].name.clone())
            .collect()
    }

    /// Up to `max_rows` rows; an empty batch when the scan is finished.
    pub fn next_batch(&mut self, max_rows: usize) -> Result<ColumnBatch> {
        let mut batch = ColumnBatch {
            names: self.columns(),
            columns: vec![Vec::new(); self.projection.len()],
        };
        if self.done || self.remaining == Some(0) {
            // (`limit: 0` used to return one row.)
            self.done = true;
            return Ok(batch);
        }
        let want = self.remaining.map_or(max_rows, |r| r.min(max_rows)).max(1);
        let result = if let Some(m) = &mut self.merged {
            m.fill(&self.reader, want, &mut batch).map(|more| {
                if !more {
                    self.done = true;
                }
            })
        } else if self.filter.is_some() {
            self.filtered(want, &mut batch)
        } else {
            self.zipped(want, &mut batch)
        };
        self.flush_counters();
        result?;
        if let Some(r) = &mut self.remaining {
            *r -= batch.len().min(*r);
            if *r == 0 {
                self.done = true;
            }
        }
        Ok(batch)
    }

    /// No filter: every asked column's cursor moves one cell per row.
    fn zipped(&mut self, want: usize, batch: &mut ColumnBatch) -> Result<()> {
        for c in &mut self.cursors {
            c.fill(want)?;
        }
        let n = self.cursors[0].buffered.len();
        if n == 0 {
            self.done = true;
        }
        let p = self.prefix_len;
        for _ in 0..n {
            let mut first: Option<Vec<u8>> = None;
            for (i, cur) in self.cursors.iter_mut().enumerate() {
                let (key, raw) = cur.pop().ok_or_else(|| {
                    Error::corruption(format!(
                        "table {:?}: columns disagree on row count",
                        self.table.name
                    ))
                })?;
                let pk = key.get(p..).unwrap_or_default();
                match &first {
                    Some(f) if f.get(p..).unwrap_or_default() != pk => {
                        return Err(Error::corruption(format!(
                            "table {:?}: columns disagree on primary keys",
                            self.table.name
                        )))
                    }
                    _ => {}
                }
                batch.columns[i].push(self.table.decode(cur.column, pk, &raw)?);
                if first.is_none() {
                    first = Some(key);
                }
            }
        }
        Ok(())
    }

    /// Filter: read the filter column; fetch the other asked columns only
    /// for matching rows.
    fn filtered(&mut self, want: usize, batch: &mut ColumnBatch) -> Result<()> {
        let Some((fcol, filter)) = self.filter.clone() else {
            return Ok(());
        };
        let mut fetched = vec![(0u64, 0u64); self.projection.len()];
        while batch.len() < want {
            let cur = &mut self.cursors[0];
            cur.fill(want.max(256))?;
            let Some((key, raw)) = cur.pop() else {
                self.done = true;
                break;
            };
            let pk = key.get(self.prefix_len..).unwrap_or_default();
            let value = self.table.decode(fcol, pk, &raw)?;
            if !filter.matches(&value) {
                continue;
            }
            for (i, &c) in self.projection.iter().enumerate() {
                if c == fcol {
                    batch.columns[i].push(value.clone());
                } else if c == self.table.schema.pk_index() {
                    batch.columns[i].push(self.table.decode(c, pk, &[])?);
                } else {
                    let key = self.table.cell_key(c, pk);
                    let raw = self.reader.get(&key)?.ok_or_else(|| {
                        Error::corruption(format!(
                            "table {:?}: row without a column",
                            self.table.name
                        ))
                    })?;
                    fetched[i].0 += (key.len() + raw.len()) as u64;
                    fetched[i].1 += 1;
                    batch.columns[i].push(self.table.decode(c, pk, &raw)?);
                }
            }
        }
        let counters = &self.reader.engine().columnar;
        for (i, &c) in self.projection.iter().enumerate() {
            counters.add(self.table.id, c as u16, fetched[i].0, fetched[i].1);
        }
        Ok(())
    }

    fn flush_counters(&mut self) {
        if !self.counted {
            if let Some(m) = &mut self.merged {
                m.take_counts();
            }
            for c in &mut self.cursors {
                c.bytes = 0;
                c.cells = 0;
            }
            return;
        }
        let counters = &self.reader.engine().columnar;
        if let Some(m) = &mut self.merged {
            for (c, (bytes, cells)) in m.take_counts().into_iter().enumerate() {
                counters.add(self.table.id, c as u16, bytes, cells);
            }
        }
        for c in &mut self.cursors {
            counters.add(self.table.id, c.column as u16, c.bytes, c.cells);
            c.bytes = 0;
            c.cells = 0;
        }
    }
}
