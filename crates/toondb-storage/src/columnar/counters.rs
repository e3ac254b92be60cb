//! Bytes read per table and column through the columnar API (keys plus
//! values of the cells returned to the reader), kept in the engine.

use std::collections::BTreeMap;

use parking_lot::Mutex;

#[derive(Default)]
pub(crate) struct ReadCounters {
    /// (table id, column id) -> (bytes, cells)
    map: Mutex<BTreeMap<(u32, u16), (u64, u64)>>,
    /// Held by a chunking (chunking.rs) so that chunkings of this database
    /// run one at a time. Kept here, beside the read counters, as this is
    /// the columnar layer's one piece of per-engine state.
    pub(crate) chunking: Mutex<()>,
    /// Rows written per table since its last automatic chunking began.
    pub(crate) written: Mutex<BTreeMap<u32, u64>>,
    /// Rows written into chunks per table since open (every chunking).
    pub(crate) chunked: Mutex<BTreeMap<u32, u64>>,
    /// Whether an automatic chunking thread is running (one at a time).
    pub(crate) chunker_busy: std::sync::atomic::AtomicBool,
    /// The last automatic chunking thread, joined at shutdown so that no
    /// thread of a closed database outlives its `close()`.
    pub(crate) chunker: Mutex<ChunkerSlot>,
    /// The catalog at the visible timestamp (catalog_cache.rs).
    pub(crate) catalog: super::catalog_cache::CatalogCache,
}

#[derive(Default)]
pub(crate) struct ChunkerSlot {
    pub(crate) handle: Option<std::thread::JoinHandle<()>>,
    /// Set by shutdown: no chunker starts after it.
    pub(crate) closed: bool,
}

impl ReadCounters {
    pub fn add(&self, table: u32, column: u16, bytes: u64, cells: u64) {
        if cells == 0 {
            return;
        }
        let mut m = self.map.lock();
        let e = m.entry((table, column)).or_default();
        e.0 += bytes;
        e.1 += cells;
    }

    pub fn get(&self, table: u32, column: u16) -> (u64, u64) {
        self.map
            .lock()
            .get(&(table, column))
            .copied()
            .unwrap_or_default()
    }
}

/// Read counters of one column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnStats {
    pub name: String,
    /// Key and value bytes of this column's cells read by gets and scans.
    pub bytes_read: u64,
    pub cells_read: u64,
}

/// Read counters and size of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TableStats {
    pub name: String,
    pub id: u32,
    /// Sum over the columns.
    pub bytes_read: u64,
    /// Rows written into column chunks by chunkings (`Table::chunk`,
    /// `compact`, automatic) since the database was opened.
    pub chunked_rows: u64,
    pub columns: Vec<ColumnStats>,
}
