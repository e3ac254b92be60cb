//! [`TableCache`]: bounds how many table files are open (memory-mapped) at
//! once. Each live table file has an [`OpenSlot`] holding its open
//! [`Table`] or nothing; a read takes the table out of the slot as an
//! `Arc`, so closing a table (emptying its slot) never pulls it from under a
//! read or an iterator: the map is released when the last of them drops.
//!
//! Recency: a logical clock advances at every open, and each use stamps
//! the slot with the clock's current value; when opening one more table
//! would exceed the bound, the open slot with the oldest stamp is emptied,
//! found by a scan of at most `max_open_files` slots (only a miss pays it,
//! next to the cost of mapping a file). That is LRU at the granularity of
//! opens: tables used since the last open are all "recent", and among the
//! others the one unused for the most opens goes first. A hit costs a read
//! lock, an `Arc` clone and a load and (rarely) a store of the stamp, no
//! read-modify-write on a shared counter beyond the hit count; with no bound
//! (0) the slots are filled at creation and never emptied.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::Result;
use crate::sstable::Table;

/// One table file's open table, if it is open.
pub(crate) struct OpenSlot {
    number: u64,
    table: RwLock<Option<Arc<Table>>>,
    last_use: AtomicU64,
}

pub(crate) struct TableCache {
    /// 0: no bound.
    max_open: usize,
    /// Slots whose table is open, when bounded.
    open: Mutex<Vec<Arc<OpenSlot>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Advanced at every open when bounded (recency stamps).
    clock: AtomicU64,
}

impl TableCache {
    pub fn new(max_open: usize) -> Arc<TableCache> {
        Arc::new(TableCache {
            max_open,
            open: Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            clock: AtomicU64::new(0),
        })
    }

    pub fn bounded(&self) -> bool {
        self.max_open > 0
    }

    /// A slot holding `table`, just opened (a flush's or compaction's
    /// output, or a table recovery opened).
    pub fn insert(&self, number: u64, table: Arc<Table>) -> Arc<OpenSlot> {
        let slot = Arc::new(OpenSlot {
            number,
            table: RwLock::new(Some(table)),
            last_use: AtomicU64::new(self.advance()),
        });
        if self.bounded() {
            self.admit(&slot);
        }
        slot
    }

    /// The open table of `slot`, opening it with `open` when it was closed.
    pub fn get(
        &self,
        slot: &Arc<OpenSlot>,
        open: impl FnOnce() -> Result<Table>,
    ) -> Result<Arc<Table>> {
        if let Some(t) = slot.table.read().as_ref() {
            self.count_hit(slot);
            return Ok(t.clone());
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let table = Arc::new(open()?);
        {
            let mut guard = slot.table.write();
            if let Some(t) = guard.as_ref() {
                // Another reader opened it meanwhile; ours is dropped unused.
                return Ok(t.clone());
            }
            *guard = Some(table.clone());
            slot.last_use.store(self.advance(), Ordering::Relaxed);
        }
        self.admit(slot);
        Ok(table)
    }

    /// The open table of `slot`, or `None` when it is closed (nothing is
    /// opened): one lock where `is_open` then `get` took two.
    pub fn get_if_open(&self, slot: &Arc<OpenSlot>) -> Option<Arc<Table>> {
        let table = slot.table.read().clone()?;
        self.count_hit(slot);
        Some(table)
    }

    /// A use of `slot`'s open table: counted, and stamped for recency.
    fn count_hit(&self, slot: &OpenSlot) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        if self.bounded() {
            // Store only on change: most hits find the stamp current, and
            // skipping the store keeps the slot's line shared.
            let now = self.clock.load(Ordering::Relaxed);
            if slot.last_use.load(Ordering::Relaxed) != now {
                slot.last_use.store(now, Ordering::Relaxed);
            }
        }
    }

    /// Advances the clock for an open and returns the new time.
    fn advance(&self) -> u64 {
        if self.bounded() {
            self.clock.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        }
    }

    /// Registers an opened slot and closes the least recently used others
    /// until at most `max_open` are open.
    pub fn admit(&self, slot: &Arc<OpenSlot>) {
        if !self.bounded() {
            return;
        }
        let mut victims = Vec::new();
        {
            let mut open = self.open.lock();
            if !open.iter().any(|s| Arc::ptr_eq(s, slot)) {
                open.push(slot.clone());
            }
            while open.len() > self.max_open {
                let (i, _) = open
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !Arc::ptr_eq(s, slot))
                    .min_by_key(|(_, s)| s.last_use.load(Ordering::Relaxed))
                    .unwrap_or((0, slot));
                let victim = open.swap_remove(i);
                victims.push(victim.table.write().take());
            }
        }
        // Unmapped here, outside the lock (readers still holding the table
        // keep it mapped until they finish).
        drop(victims);
    }

    /// Closes `slot`'s table (unmapped once no reader holds it); a later
    /// `get` reopens it. Used when the engine shuts down, so a closed
    /// database keeps no table file mapped (mapped pages also survive a
    /// `drop_caches`, which skewed the device reads of other processes).
    pub fn close(&self, slot: &Arc<OpenSlot>) {
        self.remove(slot);
        let table = slot.table.write().take();
        drop(table);
    }

    /// Forgets `slot` (its table file left the database).
    pub fn remove(&self, slot: &Arc<OpenSlot>) {
        if self.bounded() {
            self.open.lock().retain(|s| !Arc::ptr_eq(s, slot));
        }
    }

    /// Open tables now (under a bound; else `None`: every live table is).
    pub fn open_count(&self) -> Option<u64> {
        self.bounded().then(|| self.open.lock().len() as u64)
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

impl OpenSlot {
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Whether the table is open now.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.table.read().is_some()
    }
}
