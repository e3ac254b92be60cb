//! `Table`: a handle on one table (its id and schema) with the writes and
//! point reads. Scans are in scan.rs, the catalog in catalog.rs.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use crate::batch::WriteBatch;
use crate::db::Database;
use crate::error::{Error, ErrorKind, Result};
use crate::key::{check_key, check_value};
use crate::txn::{Snapshot, Transaction};

use super::merged::RowAt;
use super::reader::CellReader;
use super::schema::Schema;
use super::value::{decode_cell, decode_pk, encode_cell, encode_pk, Value};
use super::{chunk_table_range, column_prefix, table_range};

/// Something tables can be read from: a `Database` (its current state), a
/// `Snapshot`, or a `Transaction` (its snapshot plus its own writes).
pub trait ReadSource {
    /// A reader of `table`'s cells (the catalog's, when `None`).
    #[doc(hidden)]
    fn cell_reader(&self, table: Option<&Table>) -> Result<CellReader>;

    /// The table called `name` in this source's view (`lookup_table`).
    #[doc(hidden)]
    fn table_named(&self, name: &str) -> Result<Table> {
        super::catalog::read_table(self, name)
    }
}

impl ReadSource for Database {
    fn cell_reader(&self, _table: Option<&Table>) -> Result<CellReader> {
        self.read_view()
    }

    /// From the in-memory catalog (catalog_cache.rs): the view is the
    /// visible timestamp's.
    fn table_named(&self, name: &str) -> Result<Table> {
        self.table(name)
    }
}

impl ReadSource for Snapshot {
    fn cell_reader(&self, _table: Option<&Table>) -> Result<CellReader> {
        self.read_view()
    }
}

impl ReadSource for Transaction {
    fn cell_reader(&self, table: Option<&Table>) -> Result<CellReader> {
        let (start, end) = match table {
            Some(t) => {
                // Chunks are read too: a serializable transaction records
                // their range as read (the view itself is not needed: a
                // transaction never writes chunks).
                let (cs, ce) = chunk_table_range(t.id);
                drop(self.read_view((Bound::Included(cs), Bound::Excluded(ce)))?);
                table_range(t.id)
            }
            None => super::catalog_range(),
        };
        self.read_view((Bound::Included(start), Bound::Excluded(end)))
    }
}

/// The pk-marker cell's value of a deleted row: a delete writes it (rather
/// than a tombstone) so that the row's older version in a chunk stays
/// hidden; chunking removes it. A live row's marker is empty.
const DELETED_MARKER: &[u8] = &[0];

/// Whether a pk-marker cell's value says the row exists.
pub(super) fn is_live_marker(value: &[u8]) -> bool {
    value.is_empty()
}

/// A table: name, id and schema. Cheap to clone; get one with
/// `Database::create_table` or `Database::table`.
#[derive(Debug, Clone)]
pub struct Table {
    pub(crate) name: Arc<str>,
    pub(crate) id: u32,
    pub(crate) schema: Arc<Schema>,
}

type CellGet<'a> = dyn Fn(&[u8]) -> Result<Option<Vec<u8>>> + 'a;
type Cells = Vec<(Vec<u8>, Option<Vec<u8>>)>;

impl Table {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub(crate) fn cell_key(&self, column: usize, pk: &[u8]) -> Vec<u8> {
        let mut k = column_prefix(self.id, column as u16);
        k.extend_from_slice(pk);
        k
    }

    pub(crate) fn encode_pk(&self, pk: &Value) -> Result<Vec<u8>> {
        let ty = self.schema.columns[self.schema.pk_index()].ty;
        if pk.column_type() != Some(ty) {
            return Err(Error::invalid_argument(format!(
                "primary key of table {:?} is {}, got {pk:?}",
                self.name,
                ty.name()
            )));
        }
        let mut out = Vec::with_capacity(8);
        encode_pk(pk, &mut out)?;
        Ok(out)
    }

    /// Validates every row (in schema order) and encodes its cells; fails
    /// before anything is written.
    fn encode_rows(&self, rows: &[Vec<Value>]) -> Result<(Cells, Vec<Vec<u8>>)> {
        let pk_index = self.schema.pk_index();
        let mut cells = Vec::with_capacity(rows.len() * self.schema.columns.len());
        let mut pks = Vec::with_capacity(rows.len());
        let mut seen = HashSet::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            self.schema.check_row(i, row)?;
            let pk = self.encode_pk(&row[pk_index])?;
            if !seen.insert(pk.clone()) {
                return Err(Error::invalid_argument(format!(
                    "row {i}, column {:?}: primary key {:?} appears twice in this call",
                    self.schema.primary_key, row[pk_index]
                )));
            }
            for (c, (def, v)) in self.schema.columns.iter().zip(row).enumerate() {
                let key = self.cell_key(c, &pk);
                check_key(&key)
                    .map_err(|e| e.context(format_args!("row {i}, column {:?}", def.name)))?;
                let mut value = Vec::new();
                if c != pk_index {
                    encode_cell(v, def.nullable, &mut value);
                }
                check_value(&value)
                    .map_err(|e| e.context(format_args!("row {i}, column {:?}", def.name)))?;
                cells.push((key, Some(value)));
            }
            pks.push(pk);
        }
        Ok((cells, pks))
    }

    fn delete_cells(&self, pks: &[Value]) -> Result<Cells> {
        let mut cells = Vec::with_capacity(pks.len() * self.schema.columns.len());
        for pk in pks {
            let pk = self.encode_pk(pk)?;
            for c in 0..self.schema.columns.len() {
                let value = (c == self.schema.pk_index()).then(|| DELETED_MARKER.to_vec());
                cells.push((self.cell_key(c, &pk), value));
            }
        }
        Ok(cells)
    }

    /// Rows given as (column name, value) pairs, put into schema order.
    pub fn order_rows(&self, rows: &[Vec<(String, Value)>]) -> Result<Vec<Vec<Value>>> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| self.schema.order_row(i, r))
            .collect()
    }

    fn check_live(&self, source: &CellGet<'_>) -> Result<()> {
        match source(&super::catalog_key(&self.name))? {
            Some(raw) if Schema::decode(&raw)?.0 == self.id => Ok(()),
            _ => Err(Error::new(
                ErrorKind::NotFound,
                format!("table {:?} does not exist (dropped?)", self.name),
            )),
        }
    }

    /// Inserts rows (in schema order); fails with `InvalidArgument` naming
    /// the row if a primary key exists, and with `Conflict` if a concurrent
    /// commit wrote the same key. All rows or none.
    pub fn insert(&self, db: &Database, rows: &[Vec<Value>]) -> Result<()> {
        let txn = db.transaction()?;
        self.insert_in(&txn, rows)?;
        txn.commit()?;
        super::chunking::note_writes(self, db.engine_ref(), rows.len());
        Ok(())
    }

    /// `insert` as part of `txn`.
    pub fn insert_in(&self, txn: &Transaction, rows: &[Vec<Value>]) -> Result<()> {
        let (cells, pks) = self.encode_rows(rows)?;
        let reader = txn.cell_reader(Some(self))?;
        self.check_live(&|k| reader.get(k))?;
        let pk_index = self.schema.pk_index();
        for (i, pk) in pks.iter().enumerate() {
            if !matches!(self.locate_row(&reader, pk)?, RowAt::Absent) {
                return Err(Error::invalid_argument(format!(
                    "row {i}, column {:?}: primary key {:?} already exists",
                    self.schema.primary_key, rows[i][pk_index]
                )));
            }
        }
        txn.write_raw(cells)
    }

    /// Inserts or replaces whole rows (in schema order), atomically.
    pub fn upsert(&self, db: &Database, rows: &[Vec<Value>]) -> Result<()> {
        let (cells, _) = self.encode_rows(rows)?;
        self.check_live(&|k| db.read_view()?.get(k))?;
        self.write_batch(db, cells)?;
        super::chunking::note_writes(self, db.engine_ref(), rows.len());
        Ok(())
    }

    /// `upsert` as part of `txn`.
    pub fn upsert_in(&self, txn: &Transaction, rows: &[Vec<Value>]) -> Result<()> {
        let (cells, _) = self.encode_rows(rows)?;
        self.check_live(&|k| txn.cell_reader(Some(self))?.get(k))?;
        txn.write_raw(cells)
    }

    /// Deletes the rows with these primary keys (missing ones are no-ops).
    pub fn delete(&self, db: &Database, pks: &[Value]) -> Result<()> {
        let cells = self.delete_cells(pks)?;
        self.check_live(&|k| db.read_view()?.get(k))?;
        self.write_batch(db, cells)?;
        super::chunking::note_writes(self, db.engine_ref(), pks.len());
        Ok(())
    }

    /// `delete` as part of `txn`.
    pub fn delete_in(&self, txn: &Transaction, pks: &[Value]) -> Result<()> {
        let cells = self.delete_cells(pks)?;
        self.check_live(&|k| txn.cell_reader(Some(self))?.get(k))?;
        txn.write_raw(cells)
    }

    fn write_batch(&self, db: &Database, cells: Cells) -> Result<()> {
        let mut batch = WriteBatch::with_capacity(
            cells
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 4)
                .sum(),
        );
        for (k, v) in cells {
            match v {
                Some(v) => batch.put_raw(k, v)?,
                None => batch.delete_raw(k)?,
            };
        }
        db.write(batch).map(drop)
    }

    /// Column indices for `columns` (all columns when `None`).
    pub(crate) fn projection(&self, columns: Option<&[&str]>) -> Result<Vec<usize>> {
        match columns {
            None => Ok((0..self.schema.columns.len()).collect()),
            Some([]) => Err(Error::invalid_argument("columns must not be empty")),
            Some(names) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    let i = self.schema.column_index(n)?;
                    if out.contains(&i) {
                        return Err(Error::invalid_argument(format!("column {n:?} asked twice")));
                    }
                    out.push(i);
                }
                Ok(out)
            }
        }
    }

    pub(crate) fn decode(&self, column: usize, pk: &[u8], raw: &[u8]) -> Result<Value> {
        let def = &self.schema.columns[column];
        if column == self.schema.pk_index() {
            decode_pk(def.ty, pk)
        } else {
            decode_cell(def.ty, def.nullable, raw)
        }
    }

    /// The row with primary key `pk`, only the asked columns (all when
    /// `None`), in the asked order; `None` when there is no such row.
    pub fn get<S: ReadSource + ?Sized>(
        &self,
        source: &S,
        pk: &Value,
        columns: Option<&[&str]>,
    ) -> Result<Option<Vec<(String, Value)>>> {
        let cols = self.projection(columns)?;
        let pk = self.encode_pk(pk)?;
        let reader = source.cell_reader(Some(self))?;
        let pk_index = self.schema.pk_index();
        let counters = &reader.engine().columnar;
        let marker_key = self.cell_key(pk_index, &pk);
        let (chunk_row, pk_chunk_bytes) = match self.locate_row(&reader, &pk)? {
            RowAt::Absent => return Ok(None),
            RowAt::Cells => (None, 0),
            RowAt::Chunk {
                key,
                index,
                pk_chunk_bytes,
            } => (Some((key, index)), pk_chunk_bytes),
        };
        // The marker cell, and the pk chunk read to find a chunked row.
        counters.add(
            self.id,
            pk_index as u16,
            marker_key.len() as u64 + pk_chunk_bytes,
            1,
        );
        let mut out = Vec::with_capacity(cols.len());
        for c in cols {
            let name = self.schema.columns[c].name.clone();
            if c == pk_index {
                out.push((name, self.decode(c, &pk, &[])?));
                continue;
            }
            if let Some((key, index)) = &chunk_row {
                let (v, bytes) = self.chunk_value(&reader, c, key, *index)?;
                counters.add(self.id, c as u16, bytes, 1);
                out.push((name, v));
                continue;
            }
            let key = self.cell_key(c, &pk);
            let raw = reader.get(&key)?.ok_or_else(|| {
                Error::corruption(format!(
                    "table {:?}: row without column {name:?}",
                    self.name
                ))
            })?;
            counters.add(self.id, c as u16, (key.len() + raw.len()) as u64, 1);
            out.push((name, self.decode(c, &pk, &raw)?));
        }
        Ok(Some(out))
    }
}
