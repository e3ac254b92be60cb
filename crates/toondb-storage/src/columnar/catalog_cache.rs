//! The catalog as of the latest commit, kept in memory, so that looking a
//! table up by name on a database (every table call from a binding, whose
//! handles hold a name; `stats().tableReads`) reads no table file. Reads
//! at a snapshot or in a transaction read the catalog as before (their
//! view may be older).
//!
//! The catalog changes only through `create_table` and `drop_table`
//! (plain writes to the reserved range are refused), and each brackets
//! its commit with [`CatalogCache::begin_write`]. A load is kept only if
//! no such write was in progress or began while it ran, so a kept copy
//! always equals the catalog at the visible timestamp until the next write
//! begins (which makes it stale by bumping the generation).

use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::Result;

use super::table::Table;

#[derive(Default)]
pub(crate) struct CatalogCache {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped when a catalog write begins and when it ends.
    generation: u64,
    /// Catalog writes in progress.
    writers: u32,
    /// Every table, by name, loaded at `generation`.
    tables: Option<(u64, Arc<Vec<Table>>)>,
}

/// Held across a catalog write's commit; ends it when dropped (error or
/// not).
pub(crate) struct WriteGuard<'a> {
    cache: &'a CatalogCache,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.cache.state.lock();
        s.generation += 1;
        s.writers -= 1;
        s.tables = None;
    }
}

impl CatalogCache {
    /// Marks a catalog write in progress until the guard drops.
    pub fn begin_write(&self) -> WriteGuard<'_> {
        let mut s = self.state.lock();
        s.generation += 1;
        s.writers += 1;
        s.tables = None;
        WriteGuard { cache: self }
    }

    /// Every table at the visible timestamp: the kept copy, or `load`'s
    /// (kept if no catalog write overlapped it).
    pub fn tables(&self, load: impl FnOnce() -> Result<Vec<Table>>) -> Result<Arc<Vec<Table>>> {
        let generation = {
            let s = self.state.lock();
            if s.writers == 0 {
                if let Some((g, tables)) = &s.tables {
                    if *g == s.generation {
                        return Ok(tables.clone());
                    }
                }
            }
            (s.writers == 0).then_some(s.generation)
        };
        let tables = Arc::new(load()?);
        let mut s = self.state.lock();
        if generation.is_some_and(|g| g == s.generation && s.writers == 0) {
            s.tables = Some((s.generation, tables.clone()));
        }
        Ok(tables)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_overlapping_a_write_is_not_kept() {
        let cache = CatalogCache::default();
        let loads = std::cell::Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok(Vec::new())
        };
        cache.tables(load).unwrap();
        cache.tables(load).unwrap();
        assert_eq!(loads.get(), 1, "the second call uses the kept copy");
        {
            let _w = cache.begin_write();
            cache.tables(load).unwrap();
            cache.tables(load).unwrap();
            assert_eq!(loads.get(), 3, "nothing is kept while a write runs");
        }
        cache.tables(load).unwrap();
        cache.tables(load).unwrap();
        assert_eq!(loads.get(), 4);
        // A write beginning during a load: that load is not kept.
        drop(cache.begin_write());
        cache
            .tables(|| {
                drop(cache.begin_write());
                load()
            })
            .unwrap();
        assert_eq!(loads.get(), 5);
        cache.tables(load).unwrap();
        cache.tables(load).unwrap();
        assert_eq!(loads.get(), 6);
    }
}
