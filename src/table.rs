//! Columnar tables for Node: conversions between JS values and the
//! engine's `Value`s and column batches. lib/table.js wraps these.

use napi::bindgen_prelude::{
    AsyncTask, BigInt, BigInt64Array, Buffer, Either4, Either5, Either6, Either8, Float64Array,
    Null, Uint8Array,
};
use toondb_storage::{
    lookup_table, ColumnBatch, ColumnDef, ColumnScan, ColumnType, Filter, ReadSource, Schema,
    Table, TableScanOptions, Value,
};

use crate::database::{BlockingTask, DbTask, NativeDatabase};
use crate::errors::{invalid_argument, to_js, Result};
use crate::transaction::{NativeSnapshot, NativeTransaction};

/// A cell from JS: number, string, bigint, boolean, null or bytes. The
/// order matters for speed: each failed variant costs a validation (and an
/// error message), so the commonest kinds come first.
pub type CellIn<'a> = Either6<f64, String, BigInt, bool, Null, &'a [u8]>;
/// A cell to JS.
pub type CellOut = Either6<Null, bool, f64, BigInt, String, Buffer>;
/// A column to JS: typed arrays for non-nullable numbers and booleans,
/// arrays (with nulls) otherwise.
pub type ColumnOut = Either8<
    Float64Array,
    BigInt64Array,
    Uint8Array,
    Vec<Option<String>>,
    Vec<Option<Buffer>>,
    Vec<Option<f64>>,
    Vec<Option<BigInt>>,
    Vec<Option<bool>>,
>;
/// A column from JS for a packed write: a typed array (Float64Array for
/// f64, BigInt64Array for i64, Uint8Array of 0/1 for bool) read without a
/// conversion per value, or an array of cells (any type, nulls).
pub type ColumnIn<'a> = Either4<Float64Array, BigInt64Array, Uint8Array, Vec<CellIn<'a>>>;
/// A primary key or filter operand from JS.
pub type KeyIn = Either5<f64, BigInt, String, bool, Buffer>;

#[napi(object)]
pub struct ColumnSpec {
    pub name: String,
    #[napi(js_name = "type")]
    pub ty: String,
    pub nullable: bool,
}

#[napi(object)]
pub struct TableInfo {
    pub name: String,
    pub id: u32,
    pub columns: Vec<ColumnSpec>,
    pub primary_key: String,
}

#[napi(object)]
pub struct TableScanArgs {
    pub columns: Option<Vec<String>>,
    pub gt: Option<KeyIn>,
    pub gte: Option<KeyIn>,
    pub lt: Option<KeyIn>,
    pub lte: Option<KeyIn>,
    pub reverse: Option<bool>,
    pub limit: Option<f64>,
    pub where_column: Option<String>,
    pub where_eq: Option<KeyIn>,
    pub where_gt: Option<KeyIn>,
    pub where_gte: Option<KeyIn>,
    pub where_lt: Option<KeyIn>,
    pub where_lte: Option<KeyIn>,
}

#[napi(object)]
pub struct ColumnStatsOut {
    pub name: String,
    pub bytes_read: f64,
    pub cells_read: f64,
}

#[napi(object)]
pub struct TableStatsOut {
    pub name: String,
    pub bytes_read: f64,
    /// Rows written into column chunks since open.
    pub chunked_rows: f64,
    pub columns: Vec<ColumnStatsOut>,
}

fn info(t: &Table) -> TableInfo {
    TableInfo {
        name: t.name().to_string(),
        id: t.id(),
        columns: t
            .schema()
            .columns
            .iter()
            .map(|c| ColumnSpec {
                name: c.name.clone(),
                ty: c.ty.name().to_string(),
                nullable: c.nullable,
            })
            .collect(),
        primary_key: t.schema().primary_key.clone(),
    }
}

fn cell_value(ty: ColumnType, cell: CellIn<'_>, row: usize, column: &str) -> Result<Value> {
    let bad = |got: &str| {
        invalid_argument(format!(
            "row {row}, column {column:?}: expected {}, got {got}",
            ty.name()
        ))
    };
    Ok(match (ty, cell) {
        (_, Either6::E(_)) => Value::Null,
        (ColumnType::Bool, Either6::D(b)) => Value::Bool(b),
        (ColumnType::F64, Either6::A(x)) => Value::F64(x),
        (ColumnType::I64, Either6::A(x)) => {
            if x.fract() != 0.0 || x.abs() > 9_007_199_254_740_991.0 {
                return Err(bad("a number that is not a safe integer (use a BigInt)"));
            }
            Value::I64(x as i64)
        }
        (ColumnType::I64, Either6::C(b)) => {
            let (v, lossless) = b.get_i64();
            if !lossless {
                return Err(bad("a BigInt outside the i64 range"));
            }
            Value::I64(v)
        }
        (ColumnType::Str, Either6::B(s)) => Value::Str(s),
        (ColumnType::Bytes, Either6::F(b)) => Value::Bytes(b.to_vec()),
        (_, Either6::D(_)) => return Err(bad("boolean")),
        (_, Either6::A(_)) => return Err(bad("number")),
        (_, Either6::C(_)) => return Err(bad("bigint")),
        (_, Either6::B(_)) => return Err(bad("string")),
        (_, Either6::F(_)) => return Err(bad("bytes")),
    })
}

fn rows_in(t: &Table, rows: Vec<Vec<CellIn<'_>>>) -> Result<Vec<Vec<Value>>> {
    let cols = &t.schema().columns;
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| {
            if row.len() != cols.len() {
                return Err(invalid_argument(format!(
                    "row {i}: {} values for {} columns",
                    row.len(),
                    cols.len()
                )));
            }
            row.into_iter()
                .zip(cols)
                .map(|(cell, c)| cell_value(c.ty, cell, i, &c.name))
                .collect()
        })
        .collect()
}

/// Rows from whole columns in schema order (a packed write); every column
/// holds the same number of values.
fn rows_from_columns(t: &Table, columns: Vec<ColumnIn<'_>>) -> Result<Vec<Vec<Value>>> {
    let defs = &t.schema().columns;
    if columns.len() != defs.len() {
        return Err(invalid_argument(format!(
            "{} columns given for {} in the table",
            columns.len(),
            defs.len()
        )));
    }
    let len = |c: &ColumnIn<'_>| match c {
        Either4::A(a) => a.len(),
        Either4::B(a) => a.len(),
        Either4::C(a) => a.len(),
        Either4::D(a) => a.len(),
    };
    let n = columns.first().map_or(0, len);
    let mut rows: Vec<Vec<Value>> = (0..n).map(|_| Vec::with_capacity(defs.len())).collect();
    for (column, def) in columns.into_iter().zip(defs) {
        if len(&column) != n {
            return Err(invalid_argument(format!(
                "column {:?}: {} values, but the first column has {n}",
                def.name,
                len(&column)
            )));
        }
        let wrong = |got: &str| {
            invalid_argument(format!(
                "column {:?}: expected {} values, got a {got}",
                def.name,
                def.ty.name()
            ))
        };
        match (def.ty, column) {
            (ColumnType::F64, Either4::A(a)) => {
                for (row, &x) in rows.iter_mut().zip(a.iter()) {
                    row.push(Value::F64(x));
                }
            }
            (ColumnType::I64, Either4::B(a)) => {
                for (row, &x) in rows.iter_mut().zip(a.iter()) {
                    row.push(Value::I64(x));
                }
            }
            (ColumnType::Bool, Either4::C(a)) => {
                for (i, (row, &x)) in rows.iter_mut().zip(a.iter()).enumerate() {
                    if x > 1 {
                        return Err(invalid_argument(format!(
                            "row {i}, column {:?}: expected 0 or 1, got {x}",
                            def.name
                        )));
                    }
                    row.push(Value::Bool(x == 1));
                }
            }
            (ty, Either4::D(cells)) => {
                for (i, (row, cell)) in rows.iter_mut().zip(cells).enumerate() {
                    row.push(cell_value(ty, cell, i, &def.name)?);
                }
            }
            (_, Either4::A(_)) => return Err(wrong("Float64Array")),
            (_, Either4::B(_)) => return Err(wrong("BigInt64Array")),
            (_, Either4::C(_)) => return Err(wrong("Uint8Array")),
        }
    }
    Ok(rows)
}

fn key_value(t: &Table, column: &str, k: KeyIn) -> Result<Value> {
    let ty = t.schema().columns[t.schema().column_index(column).map_err(to_js)?].ty;
    Ok(match (ty, k) {
        (ColumnType::I64, Either5::A(x))
            if x.fract() == 0.0 && x.abs() <= 9_007_199_254_740_991.0 =>
        {
            Value::I64(x as i64)
        }
        (_, Either5::A(x)) => Value::F64(x),
        (_, Either5::B(b)) => {
            let (v, lossless) = b.get_i64();
            if !lossless {
                return Err(invalid_argument(format!(
                    "column {column:?}: BigInt outside the i64 range"
                )));
            }
            Value::I64(v)
        }
        (_, Either5::C(s)) => Value::Str(s),
        (_, Either5::D(b)) => Value::Bool(b),
        (_, Either5::E(b)) => Value::Bytes(b.to_vec()),
    })
}

fn cell_out(v: Value) -> CellOut {
    match v {
        Value::Null => Either6::A(Null),
        Value::Bool(b) => Either6::B(b),
        Value::F64(x) => Either6::C(x),
        Value::I64(x) => Either6::D(BigInt::from(x)),
        Value::Str(s) => Either6::E(s),
        Value::Bytes(b) => Either6::F(Buffer::from(b)),
        // A value of a column type this binding does not know yet reads as
        // null, as `column_out` does for it.
        _ => Either6::A(Null),
    }
}

fn column_out(def: &ColumnDef, values: Vec<Value>) -> ColumnOut {
    if !def.nullable {
        match def.ty {
            ColumnType::F64 => {
                return Either8::A(Float64Array::new(
                    values
                        .into_iter()
                        .map(|v| if let Value::F64(x) = v { x } else { f64::NAN })
                        .collect(),
                ))
            }
            ColumnType::I64 => {
                return Either8::B(BigInt64Array::new(
                    values
                        .into_iter()
                        .map(|v| if let Value::I64(x) = v { x } else { 0 })
                        .collect(),
                ))
            }
            ColumnType::Bool => {
                return Either8::C(Uint8Array::new(
                    values
                        .into_iter()
                        .map(|v| u8::from(matches!(v, Value::Bool(true))))
                        .collect(),
                ))
            }
            _ => {}
        }
    }
    match def.ty {
        ColumnType::F64 => Either8::F(
            values
                .into_iter()
                .map(|v| if let Value::F64(x) = v { Some(x) } else { None })
                .collect(),
        ),
        ColumnType::I64 => Either8::G(
            values
                .into_iter()
                .map(|v| {
                    if let Value::I64(x) = v {
                        Some(BigInt::from(x))
                    } else {
                        None
                    }
                })
                .collect(),
        ),
        ColumnType::Bool => Either8::H(
            values
                .into_iter()
                .map(|v| {
                    if let Value::Bool(x) = v {
                        Some(x)
                    } else {
                        None
                    }
                })
                .collect(),
        ),
        ColumnType::Bytes => Either8::E(
            values
                .into_iter()
                .map(|v| {
                    if let Value::Bytes(x) = v {
                        Some(Buffer::from(x))
                    } else {
                        None
                    }
                })
                .collect(),
        ),
        _ => Either8::D(
            values
                .into_iter()
                .map(|v| if let Value::Str(x) = v { Some(x) } else { None })
                .collect(),
        ),
    }
}

fn scan_options(t: &Table, a: TableScanArgs) -> Result<TableScanOptions> {
    let pk = t.schema().primary_key.clone();
    let mut o = TableScanOptions::default().reverse(a.reverse.unwrap_or(false));
    if let Some(c) = &a.columns {
        o = o.columns(&c.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(k) = a.gte {
        o = o.lower(key_value(t, &pk, k)?, true);
    } else if let Some(k) = a.gt {
        o = o.lower(key_value(t, &pk, k)?, false);
    }
    if let Some(k) = a.lte {
        o = o.upper(key_value(t, &pk, k)?, true);
    } else if let Some(k) = a.lt {
        o = o.upper(key_value(t, &pk, k)?, false);
    }
    if let Some(l) = a.limit {
        if !(l >= 0.0 && l.fract() == 0.0) {
            return Err(invalid_argument("limit must be a non-negative integer"));
        }
        o = o.limit(l as usize);
    }
    if let Some(col) = a.where_column {
        let mut f = Filter::on(col.clone());
        for (k, set) in [
            (a.where_eq, Filter::eq as fn(Filter, Value) -> Filter),
            (a.where_gt, Filter::gt),
            (a.where_gte, Filter::gte),
            (a.where_lt, Filter::lt),
            (a.where_lte, Filter::lte),
        ] {
            if let Some(k) = k {
                f = set(f, key_value(t, &col, k)?);
            }
        }
        o = o.filter(f);
    }
    Ok(o)
}

/// A table scan in progress; `next(maxRows)` returns the asked columns
/// (an empty first column means the scan is finished).
#[napi]
pub struct NativeTableScan {
    scan: ColumnScan,
    defs: Vec<ColumnDef>,
}

#[napi]
impl NativeTableScan {
    #[napi(getter)]
    pub fn columns(&self) -> Vec<String> {
        self.scan.columns()
    }

    #[napi(catch_unwind)]
    pub fn next(&mut self, max_rows: u32) -> Result<Vec<ColumnOut>> {
        let ColumnBatch { columns, .. } = self
            .scan
            .next_batch(max_rows.max(1) as usize)
            .map_err(to_js)?;
        Ok(columns
            .into_iter()
            .zip(&self.defs)
            .map(|(values, def)| column_out(def, values))
            .collect())
    }
}

fn open_scan<S: ReadSource + ?Sized>(
    src: &S,
    name: &str,
    args: TableScanArgs,
) -> Result<NativeTableScan> {
    let t = lookup_table(src, name).map_err(to_js)?;
    let o = scan_options(&t, args)?;
    let scan = t.scan(src, o).map_err(to_js)?;
    let defs = scan
        .columns()
        .iter()
        .filter_map(|n| t.schema().columns.iter().find(|c| &c.name == n).cloned())
        .collect();
    Ok(NativeTableScan { scan, defs })
}

fn get_row<S: ReadSource + ?Sized>(
    src: &S,
    name: &str,
    pk: KeyIn,
    columns: Option<Vec<String>>,
) -> Result<Option<Vec<CellOut>>> {
    let t = lookup_table(src, name).map_err(to_js)?;
    let pk = key_value(&t, &t.schema().primary_key.clone(), pk)?;
    let cols: Option<Vec<&str>> = columns
        .as_ref()
        .map(|c| c.iter().map(String::as_str).collect());
    let row = t.get(src, &pk, cols.as_deref()).map_err(to_js)?;
    Ok(row.map(|r| r.into_iter().map(|(_, v)| cell_out(v)).collect()))
}

fn pks_in(t: &Table, pks: Vec<KeyIn>) -> Result<Vec<Value>> {
    let pk = t.schema().primary_key.clone();
    pks.into_iter().map(|k| key_value(t, &pk, k)).collect()
}

#[napi]
impl NativeDatabase {
    #[napi(catch_unwind)]
    pub fn table_create(
        &self,
        name: String,
        columns: Vec<ColumnSpec>,
        primary_key: String,
    ) -> Result<AsyncTask<DbTask>> {
        let mut defs = Vec::with_capacity(columns.len());
        for c in columns {
            let ty = ColumnType::parse(&c.ty)
                .map_err(|e| to_js(e.context(format_args!("column {:?}", c.name))))?;
            let mut d = ColumnDef::new(c.name, ty);
            d.nullable = c.nullable;
            defs.push(d);
        }
        let schema = Schema::new(defs, primary_key);
        let db = self.db.clone();
        Ok(AsyncTask::new(BlockingTask(Box::new(move || {
            db.create_table(&name, schema.clone()).map(drop)
        }))))
    }

    #[napi(catch_unwind)]
    pub fn table_drop(&self, name: String) -> AsyncTask<DbTask> {
        let db = self.db.clone();
        AsyncTask::new(BlockingTask(Box::new(move || db.drop_table(&name))))
    }

    #[napi(catch_unwind)]
    pub fn table_info(&self, name: String) -> Result<TableInfo> {
        Ok(info(&self.db.table(&name).map_err(to_js)?))
    }

    #[napi(catch_unwind)]
    pub fn table_list(&self) -> Result<Vec<TableInfo>> {
        Ok(self.db.tables().map_err(to_js)?.iter().map(info).collect())
    }

    #[napi(catch_unwind)]
    pub fn table_stats(&self) -> Result<Vec<TableStatsOut>> {
        Ok(self
            .db
            .table_stats()
            .map_err(to_js)?
            .into_iter()
            .map(|t| TableStatsOut {
                name: t.name,
                bytes_read: t.bytes_read as f64,
                chunked_rows: t.chunked_rows as f64,
                columns: t
                    .columns
                    .into_iter()
                    .map(|c| ColumnStatsOut {
                        name: c.name,
                        bytes_read: c.bytes_read as f64,
                        cells_read: c.cells_read as f64,
                    })
                    .collect(),
            })
            .collect())
    }

    /// `op` is "insert" or "upsert"; rows are values in schema order.
    #[napi(catch_unwind)]
    pub fn table_write(
        &self,
        name: String,
        op: String,
        rows: Vec<Vec<CellIn>>,
    ) -> Result<AsyncTask<DbTask>> {
        let t = self.db.table(&name).map_err(to_js)?;
        let rows = rows_in(&t, rows)?;
        self.write_rows(t, &op, rows)
    }

    /// `table_write` with the rows given as whole columns in schema order.
    #[napi(catch_unwind)]
    pub fn table_write_columns(
        &self,
        name: String,
        op: String,
        columns: Vec<ColumnIn>,
    ) -> Result<AsyncTask<DbTask>> {
        let t = self.db.table(&name).map_err(to_js)?;
        let rows = rows_from_columns(&t, columns)?;
        self.write_rows(t, &op, rows)
    }

    #[napi(catch_unwind)]
    pub fn table_delete(&self, name: String, pks: Vec<KeyIn>) -> Result<AsyncTask<DbTask>> {
        let t = self.db.table(&name).map_err(to_js)?;
        let pks = pks_in(&t, pks)?;
        let db = self.db.clone();
        Ok(AsyncTask::new(BlockingTask(Box::new(move || {
            t.delete(&db, &pks)
        }))))
    }

    #[napi(catch_unwind)]
    pub fn table_get(
        &self,
        name: String,
        pk: KeyIn,
        columns: Option<Vec<String>>,
    ) -> Result<Option<Vec<CellOut>>> {
        get_row(&*self.db, &name, pk, columns)
    }

    #[napi(catch_unwind)]
    pub fn table_scan(&self, name: String, args: TableScanArgs) -> Result<NativeTableScan> {
        open_scan(&*self.db, &name, args)
    }
}

impl NativeDatabase {
    /// The insert or upsert of `table_write` and `table_write_columns`, on
    /// the thread pool.
    fn write_rows(&self, t: Table, op: &str, rows: Vec<Vec<Value>>) -> Result<AsyncTask<DbTask>> {
        let insert = match op {
            "insert" => true,
            "upsert" => false,
            _ => return Err(invalid_argument("op must be insert or upsert")),
        };
        let db = self.db.clone();
        Ok(AsyncTask::new(BlockingTask(Box::new(move || {
            if insert {
                t.insert(&db, &rows)
            } else {
                t.upsert(&db, &rows)
            }
        }))))
    }
}

#[napi]
impl NativeTransaction {
    #[napi(catch_unwind)]
    pub fn table_info(&self, name: String) -> Result<TableInfo> {
        Ok(info(&lookup_table(&self.txn, &name).map_err(to_js)?))
    }

    #[napi(catch_unwind)]
    pub fn table_write(&self, name: String, op: String, rows: Vec<Vec<CellIn>>) -> Result<()> {
        let t = lookup_table(&self.txn, &name).map_err(to_js)?;
        let rows = rows_in(&t, rows)?;
        match op.as_str() {
            "insert" => t.insert_in(&self.txn, &rows),
            "upsert" => t.upsert_in(&self.txn, &rows),
            _ => return Err(invalid_argument("op must be insert or upsert")),
        }
        .map_err(to_js)
    }

    /// `table_write` with the rows given as whole columns in schema order.
    #[napi(catch_unwind)]
    pub fn table_write_columns(
        &self,
        name: String,
        op: String,
        columns: Vec<ColumnIn>,
    ) -> Result<()> {
        let t = lookup_table(&self.txn, &name).map_err(to_js)?;
        let rows = rows_from_columns(&t, columns)?;
        match op.as_str() {
            "insert" => t.insert_in(&self.txn, &rows),
            "upsert" => t.upsert_in(&self.txn, &rows),
            _ => return Err(invalid_argument("op must be insert or upsert")),
        }
        .map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn table_delete(&self, name: String, pks: Vec<KeyIn>) -> Result<()> {
        let t = lookup_table(&self.txn, &name).map_err(to_js)?;
        let pks = pks_in(&t, pks)?;
        t.delete_in(&self.txn, &pks).map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn table_get(
        &self,
        name: String,
        pk: KeyIn,
        columns: Option<Vec<String>>,
    ) -> Result<Option<Vec<CellOut>>> {
        get_row(&self.txn, &name, pk, columns)
    }

    #[napi(catch_unwind)]
    pub fn table_scan(&self, name: String, args: TableScanArgs) -> Result<NativeTableScan> {
        open_scan(&self.txn, &name, args)
    }
}

#[napi]
impl NativeSnapshot {
    #[napi(catch_unwind)]
    pub fn table_info(&self, name: String) -> Result<TableInfo> {
        Ok(info(&lookup_table(&self.snapshot, &name).map_err(to_js)?))
    }

    #[napi(catch_unwind)]
    pub fn table_get(
        &self,
        name: String,
        pk: KeyIn,
        columns: Option<Vec<String>>,
    ) -> Result<Option<Vec<CellOut>>> {
        get_row(&self.snapshot, &name, pk, columns)
    }

    #[napi(catch_unwind)]
    pub fn table_scan(&self, name: String, args: TableScanArgs) -> Result<NativeTableScan> {
        open_scan(&self.snapshot, &name, args)
    }
}
