//! `Snapshot`: a consistent read-only view at one timestamp, outside any
//! transaction. It stays valid while writers overwrite and flush; release
//! it (or drop it) when done so old versions can be reclaimed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::iter::{DbIter, Scan, ScanOptions};
use crate::key::Timestamp;

pub struct Snapshot {
    engine: Arc<Engine>,
    ts: Timestamp,
    released: AtomicBool,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot").field("ts", &self.ts).finish()
    }
}

impl Snapshot {
    pub(crate) fn new(engine: Arc<Engine>) -> Snapshot {
        let ts = engine.snapshots.acquire(|| engine.visible_ts());
        Snapshot {
            engine,
            ts,
            released: AtomicBool::new(false),
        }
    }

    /// The commit timestamp this snapshot reads at.
    pub fn ts(&self) -> Timestamp {
        self.ts
    }

    fn check(&self) -> Result<()> {
        if self.released.load(Ordering::Acquire) {
            return Err(Error::new(ErrorKind::Closed, "snapshot was released"));
        }
        if self.engine.is_closed() {
            return Err(Error::closed());
        }
        Ok(())
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    pub fn get_with<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        self.check()?;
        crate::columnar::check_user_key(key.as_ref())?;
        let result = self.engine.get_at(key.as_ref(), self.ts, f)?;
        // `release` sets the flag before it unregisters the timestamp: not
        // released now means the timestamp was registered throughout the
        // read, so no compaction dropped a version it needed. Otherwise a
        // racing release (from another thread) may have, and the value
        // cannot be trusted.
        self.check()?;
        Ok(result)
    }

    pub fn scan(&self, options: ScanOptions) -> Result<Scan> {
        // The scan pins the timestamp itself, so it may outlive a release.
        // Pin first, then check: if the snapshot is not released at the
        // check, its own registration was still there when the pin was
        // taken, so the timestamp was never unregistered in between (a
        // compaction could have dropped versions only it needed).
        let ts = self.engine.snapshots.acquire(|| self.ts);
        if let Err(e) = self.check() {
            self.engine.snapshots.release(ts);
            return Err(e);
        }
        Ok(Scan::new(self.engine.clone(), self.engine.state(), ts, options).hiding_reserved())
    }

    /// For the columnar layer: a reader at this snapshot's timestamp.
    pub(crate) fn read_view(&self) -> Result<crate::columnar::CellReader> {
        let ts = self.engine.snapshots.acquire(|| self.ts);
        if let Err(e) = self.check() {
            self.engine.snapshots.release(ts);
            return Err(e);
        }
        Ok(crate::columnar::CellReader::new(
            self.engine.clone(),
            ts,
            Vec::new(),
        ))
    }

    pub fn iter(&self, options: ScanOptions) -> Result<DbIter> {
        Ok(DbIter::new(self.scan(options)?))
    }

    /// Ends the snapshot; later reads fail. Releasing twice is a no-op.
    pub fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.engine.snapshots.release(self.ts);
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.release();
    }
}
