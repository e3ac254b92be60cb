//! `CellReader`: reads cells at one pinned timestamp, merged with a
//! transaction's own writes (if any). Owns everything it needs, so column
//! scans can outlive the call that made them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::Result;
use crate::iter::{BatchScan, Scan, ScanOptions};
use crate::key::Timestamp;
use crate::txn::TxnScan;

/// Internal: how tables read cells (see `ReadSource`).
pub struct CellReader {
    engine: Arc<Engine>,
    /// Registered in the live-snapshot list by the creator; released on drop.
    ts: Timestamp,
    own: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl CellReader {
    pub(crate) fn new(
        engine: Arc<Engine>,
        ts: Timestamp,
        own: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) -> Self {
        CellReader {
            engine,
            ts,
            own: own.into_iter().collect(),
        }
    }

    /// A reader at the engine's visible timestamp.
    pub(crate) fn at_visible(engine: &Arc<Engine>) -> Result<CellReader> {
        if engine.is_closed() {
            return Err(crate::error::Error::closed());
        }
        let ts = engine.snapshots.acquire(|| engine.visible_ts());
        Ok(CellReader::new(engine.clone(), ts, Vec::new()))
    }

    /// The timestamp this reader reads at.
    pub(crate) fn ts(&self) -> Timestamp {
        self.ts
    }

    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if self.engine.is_closed() {
            return Err(crate::error::Error::closed());
        }
        if let Some(v) = self.own.get(key) {
            return Ok(v.clone());
        }
        self.engine.get_at(key, self.ts, |v| v.map(<[u8]>::to_vec))
    }

    /// A scan of the cells in `options`' range (own writes merged in).
    pub(crate) fn scan(&self, options: ScanOptions) -> Box<dyn BatchScan> {
        let pinned = self.engine.snapshots.acquire(|| self.ts);
        let limit = options.limit;
        let reverse = options.reverse;
        let range = (options.lower.clone(), options.upper.clone());
        let base = Scan::new(
            self.engine.clone(),
            self.engine.state(),
            pinned,
            ScanOptions {
                limit: if self.own.is_empty() { limit } else { None },
                ..options
            },
        );
        if self.own.is_empty() {
            return Box::new(base);
        }
        let mut own: Vec<_> = self
            .own
            .iter()
            .filter(|(k, _)| crate::read::range_contains(&range, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            own.reverse();
        }
        Box::new(TxnScan::new(base, own, reverse, limit))
    }
}

impl Drop for CellReader {
    fn drop(&mut self) {
        self.engine.snapshots.release(self.ts);
    }
}
