//! Point reads: the active memtable, sealed memtables newest first, then
//! table files newest first. The first version at or below the snapshot
//! timestamp decides; a tombstone means "absent".

use crate::engine::LsmState;
use crate::error::Result;
use crate::key::{Timestamp, ValueKind};

impl LsmState {
    /// Calls `f` with the value of `key` visible at `snapshot` (or `None`)
    /// without copying it, and returns what `f` returns.
    pub(crate) fn get_with<R>(
        &self,
        key: &[u8],
        snapshot: Timestamp,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        // `f` runs once, in whichever source holds the version; the Option
        // lets each memtable probe borrow it without consuming it on a miss.
        let mut f = Some(f);
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            let hit = mem.get_ref(key, snapshot, |kind, value| {
                f.take().map(|f| f(visible(kind, value)))
            });
            if let Some(result) = hit.flatten() {
                return Ok(result);
            }
        }
        let Some(f) = f else {
            return Err(crate::error::Error::internal(
                "read callback consumed twice",
            ));
        };
        for table in &self.tables {
            let summary = table.summary();
            if key < summary.smallest.as_slice() || key > summary.largest.as_slice() {
                continue;
            }
            if let Some(entry) = table.get(key, snapshot)? {
                return Ok(f(visible(entry.kind, entry.value)));
            }
        }
        Ok(f(None))
    }
}

fn visible(kind: ValueKind, value: &[u8]) -> Option<&[u8]> {
    match kind {
        ValueKind::Put => Some(value),
        ValueKind::Delete => None,
    }
}
