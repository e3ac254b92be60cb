//! Point reads: the active memtable, sealed memtables newest first, then
//! level-0 tables newest first, then at most one table per deeper level. The first version at or below the snapshot
//! timestamp decides; a tombstone means "absent".

use std::ops::Bound;

use crate::engine::LsmState;
use crate::error::Result;
use crate::key::{KeyRange, Timestamp, ValueKind};
use crate::sstable::TableIter;

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
        for file in self.levels.candidates(key) {
            let table = file.table()?;
            if let Some(found) = table.get(key, snapshot)? {
                let entry = found.entry();
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

/// Newest-version queries used by the commit thread's conflict checks. A
/// source whose newest timestamp is at or below `since` cannot hold a newer
/// version, so old tables are skipped without a lookup.
impl LsmState {
    /// Whether any version of `key` is newer than `since`.
    pub(crate) fn has_newer_version(&self, key: &[u8], since: Timestamp) -> Result<bool> {
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            if mem.max_ts() <= since {
                continue;
            }
            if let Some(ts) = mem.newest_ts(key) {
                return Ok(ts > since);
            }
        }
        // Probed newest first, so the first table with a version has the
        // newest one; a table with only old versions cannot hide a newer
        // one further down.
        for file in self.levels.candidates(key) {
            if file.max_ts() <= since {
                continue;
            }
            let table = file.table()?;
            if let Some(found) = table.get(key, Timestamp::MAX)? {
                return Ok(found.entry().ts > since);
            }
        }
        Ok(false)
    }

    /// Whether any key in `range` has a version newer than `since`.
    pub(crate) fn has_newer_in_range(&self, range: &KeyRange, since: Timestamp) -> Result<bool> {
        let in_range = |k: &[u8]| range_contains(range, k);
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            if mem.max_ts() > since && mem.any_newer(range, since) {
                return Ok(true);
            }
        }
        for file in self.levels.all() {
            if file.max_ts() <= since {
                continue;
            }
            let mut it = TableIter::new(file.table()?);
            match &range.0 {
                Bound::Included(k) | Bound::Excluded(k) => it.seek(k)?,
                Bound::Unbounded => it.seek_to_first()?,
            }
            while let Some(e) = it.entry() {
                if past_upper(range, e.user_key) {
                    break;
                }
                if in_range(e.user_key) && e.ts > since {
                    return Ok(true);
                }
                it.next()?;
            }
        }
        Ok(false)
    }
}

pub(crate) fn range_contains(range: &KeyRange, key: &[u8]) -> bool {
    let above = match &range.0 {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    };
    above && !past_upper(range, key)
}

fn past_upper(range: &KeyRange, key: &[u8]) -> bool {
    match &range.1 {
        Bound::Included(u) => key > u.as_slice(),
        Bound::Excluded(u) => key >= u.as_slice(),
        Bound::Unbounded => false,
    }
}
