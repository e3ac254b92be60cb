//! The table catalog, stored in the database itself under the reserved
//! prefix: `'C' name -> schema`, `'N' -> next table id`.

use std::ops::Bound;
use std::sync::Arc;

use crate::batch::WriteBatch;
use crate::db::Database;
use crate::error::{Error, ErrorKind, Result};
use crate::iter::ScanOptions;
use crate::options::WriteOptions;

use super::counters::{ColumnStats, TableStats};
use super::schema::Schema;
use super::table::{ReadSource, Table};
use super::{
    catalog_key, chunk_table_range, dropped_key, next_id_key, table_range, tagged, CATALOG_TAG,
    DROPPED_TAG,
};

const MAX_TABLE_NAME: usize = 255;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME {
        return Err(Error::invalid_argument(format!(
            "a table name is 1 to {MAX_TABLE_NAME} bytes"
        )));
    }
    Ok(())
}

/// The table called `name` as `source` sees it (a database, snapshot or
/// transaction); `NotFound` if there is none.
pub fn lookup_table<S: ReadSource + ?Sized>(source: &S, name: &str) -> Result<Table> {
    source.table_named(name)
}

/// `lookup_table` by a read of the catalog entry in `source`'s view.
pub(super) fn read_table<S: ReadSource + ?Sized>(source: &S, name: &str) -> Result<Table> {
    check_name(name)?;
    let raw = source
        .cell_reader(None)?
        .get(&catalog_key(name))?
        .ok_or_else(|| not_found(name))?;
    let (id, schema) = Schema::decode(&raw)?;
    Ok(Table {
        name: Arc::from(name),
        id,
        schema: Arc::new(schema),
    })
}

fn not_found(name: &str) -> Error {
    Error::new(ErrorKind::NotFound, format!("no table {name:?}"))
}

impl Database {
    /// Creates a table; `InvalidArgument` if the schema is bad or the name
    /// is taken.
    pub fn create_table(&self, name: &str, schema: Schema) -> Result<Table> {
        check_name(name)?;
        schema.validate()?;
        let txn = self.transaction()?;
        let reader = self.read_view_at_txn(&txn)?;
        if reader.get(&catalog_key(name))?.is_some() {
            return Err(Error::invalid_argument(format!(
                "table {name:?} already exists"
            )));
        }
        let id = match reader.get(&next_id_key())? {
            Some(raw) => u32::from_be_bytes(
                raw.as_slice()
                    .try_into()
                    .map_err(|_| Error::corruption("table catalog: bad next id"))?,
            ),
            None => 1,
        };
        let next = id
            .checked_add(1)
            .ok_or_else(|| Error::invalid_argument("too many tables were created"))?;
        let mut def = Vec::new();
        schema.encode(id, &mut def);
        txn.write_raw(vec![
            (catalog_key(name), Some(def)),
            (next_id_key(), Some(next.to_be_bytes().to_vec())),
        ])?;
        let write = self.engine_ref().columnar.catalog.begin_write();
        txn.commit()?;
        drop(write);
        Ok(Table {
            name: Arc::from(name),
            id,
            schema: Arc::new(schema),
        })
    }

    fn read_view_at_txn(&self, txn: &crate::txn::Transaction) -> Result<super::CellReader> {
        txn.cell_reader(None)
    }

    /// The table called `name`; `NotFound` if there is none.
    pub fn table(&self, name: &str) -> Result<Table> {
        check_name(name)?;
        self.cached_tables()?
            .iter()
            .find(|t| &*t.name == name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Every table, by name.
    pub fn tables(&self) -> Result<Vec<Table>> {
        Ok(self.cached_tables()?.to_vec())
    }

    /// Every table, from the in-memory catalog (catalog_cache.rs).
    fn cached_tables(&self) -> Result<Arc<Vec<Table>>> {
        self.check_open()?;
        let cache = &self.engine_ref().columnar.catalog;
        cache.tables(|| self.read_tables())
    }

    /// Every table, by name, read from the catalog entries.
    fn read_tables(&self) -> Result<Vec<Table>> {
        let prefix = tagged(CATALOG_TAG);
        let reader = self.read_view()?;
        let mut scan = reader.scan(ScanOptions::prefix(&prefix));
        let mut out = Vec::new();
        loop {
            let batch = scan.next_batch(256, usize::MAX)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in batch {
                let name = std::str::from_utf8(&k[prefix.len()..])
                    .map_err(|_| Error::corruption("table catalog: name is not UTF-8"))?;
                let (id, schema) = Schema::decode(&v)?;
                out.push(Table {
                    name: Arc::from(name),
                    id,
                    schema: Arc::new(schema),
                });
            }
        }
        Ok(out)
    }

    /// Drops a table: removes it from the catalog and adds it to the
    /// dropped-tables list (atomically), then deletes its cells, compacts
    /// its key range so the space is freed, and takes it off the list. A
    /// crash before the end leaves it on the list, and the next open
    /// finishes the job ([`Database::purge_dropped_tables`]).
    pub fn drop_table(&self, name: &str) -> Result<()> {
        let table = self.table(name)?;
        let txn = self.transaction()?;
        let reader = self.read_view_at_txn(&txn)?;
        match reader.get(&catalog_key(name))? {
            Some(raw) if Schema::decode(&raw)?.0 == table.id => {}
            _ => return Err(not_found(name)),
        }
        drop(reader);
        txn.write_raw(vec![
            (catalog_key(name), None),
            (dropped_key(table.id), Some(Vec::new())),
        ])?;
        let write = self.engine_ref().columnar.catalog.begin_write();
        txn.commit()?;
        drop(write);
        self.purge_table_cells(table.id)
    }

    /// [`Database::purge_dropped_tables`] as the open runs it. Best effort
    /// (the dropped tables are already invisible, so a failure, a full disk
    /// say, leaves them on the list for the next open instead of refusing
    /// this one), except when its own commit stopped the engine: that
    /// write (always durable, see `purge_dropped_tables`) is the first to
    /// fdatasync the manifest the open read (open_durability.rs) and the
    /// WAL segments its recovery replayed, and a failure there, in the WAL
    /// append, or a panic in the commit refuses every later write, so the
    /// open would hand out a database that cannot write. The engine's
    /// error is returned, for the open to fail with
    /// (tests/open_purge_failure.rs, tests/review_s32_openpurge.rs).
    pub(crate) fn purge_dropped_tables_at_open(&self) -> Result<()> {
        let purged = self.purge_dropped_tables();
        if purged.is_err() {
            self.engine_ref().commit_settled();
        }
        match purged {
            // The purge's write is the engine's only one yet, so a commit
            // failure is its own. A background failure (the flush of what
            // replay recovered, on a full disk say) stops the engine
            // whether or not a drop is pending, and may land while the
            // purge's write waits: the open then stays as it was before
            // this rule (tests/review_s23.rs, `drop_open`).
            Err(e) if self.engine_ref().stopped_by_commit() => {
                // The recorded error rather than the write's own: a panic
                // on the commit thread completes the write with `Closed`,
                // which would hide what happened.
                let err = self.engine_ref().bg_error().unwrap_or(e);
                Err(err.context("finishing an interrupted table drop at open"))
            }
            _ => Ok(()),
        }
    }

    /// Finishes every drop a crash interrupted: deletes the cells of each
    /// table on the dropped-tables list with a range delete that takes it
    /// off the list too (space is reclaimed by compaction). Runs at open
    /// (through [`Database::purge_dropped_tables_at_open`]); returns how
    /// many tables it purged.
    ///
    /// Its writes are durable whatever the handle's `sync` option: a
    /// durable write first waits for the background fdatasync of the WAL
    /// segments the open replayed (commit/mod.rs, `write_wal`), so a
    /// failure of the open's own recovery durability fails the open
    /// either way, instead of only with `sync` on
    /// (tests/review_s32_openpurge.rs). The cost (one synced WAL write,
    /// after a wait for a sync the open started anyway) is paid only by an
    /// open that finds a drop pending.
    pub(crate) fn purge_dropped_tables(&self) -> Result<usize> {
        let prefix = tagged(DROPPED_TAG);
        let mut ids = Vec::new();
        {
            let reader = self.read_view()?;
            let mut scan = reader.scan(ScanOptions::prefix(&prefix));
            loop {
                let batch = scan.next_batch(256, usize::MAX)?;
                if batch.is_empty() {
                    break;
                }
                for (k, _) in batch {
                    let id = k
                        .get(prefix.len()..)
                        .and_then(|b| <[u8; 4]>::try_from(b).ok())
                        .ok_or_else(|| {
                            Error::corruption("table catalog: bad dropped-table entry")
                        })?;
                    ids.push(u32::from_be_bytes(id));
                }
            }
        }
        // Only the range delete at open: cheap whatever the table's size,
        // and compaction reclaims the space in its own time.
        for &id in &ids {
            self.forget_table_cells(id, WriteOptions::sync(true))?;
        }
        Ok(ids.len())
    }

    /// Deletes every cell of the dropped table `id` (unreachable: ids are
    /// never reused) with one range delete that also takes the table off
    /// the dropped-tables list (one atomic batch, no cell is read, so the
    /// cost does not grow with the table), then compacts the range so the
    /// space is freed.
    fn purge_table_cells(&self, id: u32) -> Result<()> {
        self.forget_table_cells(id, WriteOptions::default())?;
        for (start, end) in [table_range(id), chunk_table_range(id)] {
            self.compact_range(Bound::Included(start), Bound::Excluded(end))?;
        }
        Ok(())
    }

    /// The range delete of `purge_table_cells`, without the compaction,
    /// written with `options`.
    fn forget_table_cells(&self, id: u32, options: WriteOptions) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (start, end) in [table_range(id), chunk_table_range(id)] {
            batch.delete_range_raw(&start, &end)?;
        }
        batch.delete_raw(dropped_key(id))?;
        self.write_with(batch, options).map(drop)
    }

    /// Bytes and cells read through the table API, per table and column,
    /// since the database was opened.
    pub fn table_stats(&self) -> Result<Vec<TableStats>> {
        let counters = &self.engine_ref().columnar;
        Ok(self
            .tables()?
            .into_iter()
            .map(|t| {
                let columns: Vec<ColumnStats> = t
                    .schema
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let (bytes_read, cells_read) = counters.get(t.id, i as u16);
                        ColumnStats {
                            name: c.name.clone(),
                            bytes_read,
                            cells_read,
                        }
                    })
                    .collect();
                TableStats {
                    name: t.name.to_string(),
                    id: t.id,
                    bytes_read: columns.iter().map(|c| c.bytes_read).sum(),
                    chunked_rows: counters.chunked.lock().get(&t.id).copied().unwrap_or(0),
                    columns,
                }
            })
            .collect())
    }
}
