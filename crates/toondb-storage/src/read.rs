//! Point reads: the active memtable, sealed memtables newest first, then
//! level-0 tables newest first, then at most one table per deeper level. The first version at or below the snapshot
//! timestamp decides; a tombstone means "absent".

use std::ops::Bound;

use crate::engine::LsmState;
use crate::error::Result;
use crate::io::ValueMap;
use crate::key::{KeyRange, Timestamp, ValueKind};
use crate::memfilter::MemFilter;
use crate::range_del::{RangeDelSet, RangeDelView};
use crate::sstable::{bloom_hash, TableGet, TableIter};
use std::sync::Arc;

/// A value as [`Database::get_ref`](crate::Database::get_ref) lends it.
#[derive(Debug)]
pub enum ValueRef<'a> {
    /// Borrowed from a memtable, a decompressed block or the table's map,
    /// for the duration of the callback.
    Borrowed(&'a [u8]),
    /// A private copy-on-write mapping of the value's file pages, owned by
    /// the caller: valid after the table is compacted away, and writing
    /// into it changes neither the file nor any other read.
    Mapped(ValueMap),
}

impl ValueRef<'_> {
    pub fn bytes(&self) -> &[u8] {
        match self {
            ValueRef::Borrowed(b) => b,
            ValueRef::Mapped(m) => m.bytes(),
        }
    }
}

/// How [`Database::get_value`](crate::Database::get_value) reads.
#[derive(Debug, Clone, Copy)]
pub struct ValueRead {
    /// Map large table values ([`ValueRef::Mapped`]) rather than lend
    /// them (default true). A caller that will copy anyway (a runtime
    /// without external buffers) turns it off and saves the `mmap`.
    pub zero_copy: bool,
    /// Stop with `Ok(None)` rather than wait for the device (default false).
    pub resident_only: bool,
}

impl Default for ValueRead {
    fn default() -> Self {
        ValueRead {
            zero_copy: true,
            resident_only: false,
        }
    }
}

/// Where a point read found the visible value.
pub(crate) enum Found<'a> {
    /// In a memtable (or a table block the caller cannot map).
    Bytes(&'a [u8]),
    /// In a table: the bytes, and the lookup that can map them
    /// (zero-copy values, [`TableGet::map_value`]).
    Table(&'a [u8], &'a TableGet<'a>),
}

impl<'a> Found<'a> {
    pub(crate) fn bytes(&self) -> &'a [u8] {
        match *self {
            Found::Bytes(b) | Found::Table(b, _) => b,
        }
    }
}

impl LsmState {
    /// Calls `f` with the value of `key` visible at `snapshot` (or `None`)
    /// without copying it, and returns what `f` returns.
    pub(crate) fn get_with<R>(
        &self,
        key: &[u8],
        snapshot: Timestamp,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        let read = self.get_found(key, snapshot, false, |v| f(v.map(|v| v.bytes())))?;
        read.ok_or_else(|| crate::error::Error::internal("an inline read reported would-block"))
    }

    /// The point read behind every get: calls `f` with where the visible
    /// value of `key` is (or `None`). With `resident_only`, a read that
    /// would have to wait for the device (a closed table, or index, filter
    /// or data pages not in memory: `Table::get_is_resident`) stops before
    /// touching it and returns `Ok(None)` without calling `f`.
    pub(crate) fn get_found<R>(
        &self,
        key: &[u8],
        snapshot: Timestamp,
        resident_only: bool,
        f: impl FnOnce(Option<Found<'_>>) -> R,
    ) -> Result<Option<R>> {
        // `f` runs once, in whichever source holds the version; the Option
        // lets each memtable probe borrow it without consuming it on a miss.
        let mut f = Some(f);
        // The newest range tombstone over `key` this reader sees, looked up
        // only when the state holds any (a `None` costs nothing).
        let deleted_at = self.range_deleted_at(key, snapshot);
        let hash = MemFilter::hash(key);
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            let hit = mem.get_ref_hashed(key, hash, snapshot, |ts, kind, value| {
                let kind = if deleted_at.is_some_and(|t| t > ts) {
                    ValueKind::Delete
                } else {
                    kind
                };
                f.take().map(|f| f(visible(kind, value).map(Found::Bytes)))
            });
            if let Some(result) = hit.flatten() {
                return Ok(Some(result));
            }
        }
        let Some(f) = f else {
            return Err(crate::error::Error::internal(
                "read callback consumed twice",
            ));
        };
        // The tables' key hash (filters and hash indexes), computed once.
        let mut table_hash = None;
        let mut now = None;
        // Level-0 tables probed without finding the key: charged when the
        // read ends (lsm/levels.rs, `charge_l0_probes`).
        let mut l0_vain = 0;
        for (in_l0, file) in self.levels.candidates_by_level(key) {
            let table = if resident_only {
                match file.table_if_open() {
                    Some(table) => table,
                    None => return Ok(None), // opening reads the file's footer
                }
            } else {
                file.table()?
            };
            let hash = *table_hash.get_or_insert_with(|| bloom_hash(key));
            if resident_only
                && !table.get_is_resident(
                    key,
                    hash,
                    snapshot,
                    *now.get_or_insert_with(crate::sstable::clock_ms),
                )?
            {
                return Ok(None);
            }
            if let Some(found) = table.get_with_hash(key, hash, snapshot)? {
                self.levels.charge_l0_probes(l0_vain);
                let entry = found.entry();
                if deleted_at.is_some_and(|t| t > entry.ts) {
                    return Ok(Some(f(None)));
                }
                let value = visible(entry.kind, entry.value);
                return Ok(Some(f(value.map(|v| Found::Table(v, &found)))));
            }
            l0_vain += u64::from(in_l0);
        }
        self.levels.charge_l0_probes(l0_vain);
        Ok(Some(f(None)))
    }

    /// Every range-tombstone set of this state: memtables', then the
    /// tables' (one set for all of them).
    pub(crate) fn range_del_sets(&self) -> impl Iterator<Item = Arc<RangeDelSet>> + '_ {
        std::iter::once(&self.mem)
            .chain(self.imms.iter())
            .filter(|m| m.has_range_dels())
            .map(|m| m.range_dels())
            .chain(std::iter::once(self.levels.range_dels().clone()))
    }

    /// The commit timestamp of the newest range delete over `key` that a
    /// reader at `snapshot` sees.
    fn range_deleted_at(&self, key: &[u8], snapshot: Timestamp) -> Option<Timestamp> {
        let mut newest = self.levels.range_dels().max_covering(key, snapshot);
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            if mem.has_range_dels() {
                newest = newest.max(mem.range_dels().max_covering(key, snapshot));
            }
        }
        newest
    }

    /// The range tombstones a scan at `snapshot` applies.
    pub(crate) fn range_del_view(&self, snapshot: Timestamp) -> RangeDelView {
        RangeDelView::new(self.range_del_sets(), snapshot)
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
        // A range delete after `since` over `key` changed it too.
        if self.range_del_sets().any(|s| s.covers_newer(key, since)) {
            return Ok(true);
        }
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
        if self
            .range_del_sets()
            .any(|s| s.any_newer_overlapping(range, since))
        {
            return Ok(true);
        }
        self.has_newer_version_in_range(range, since)
    }

    /// Whether any key in `range` has a version (not a range tombstone)
    /// newer than `since`.
    pub(crate) fn has_newer_version_in_range(
        &self,
        range: &KeyRange,
        since: Timestamp,
    ) -> Result<bool> {
        Ok(!self.each_newer_version(range, since, |_| false)?)
    }

    /// The keys in `range` with a version newer than `since`, sorted and
    /// without duplicates; `None` once there are more than `cap`.
    pub(crate) fn keys_with_newer_versions(
        &self,
        range: &KeyRange,
        since: Timestamp,
        cap: usize,
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let complete = self.each_newer_version(range, since, |k| {
            if keys.last().map(Vec::as_slice) != Some(k) {
                keys.push(k.to_vec());
            }
            keys.len() <= cap
        })?;
        if !complete {
            return Ok(None);
        }
        keys.sort_unstable();
        keys.dedup();
        Ok(Some(keys))
    }

    /// Calls `f` with the key of every version (not range tombstone) newer
    /// than `since` in `range`, source by source, until `f` returns false;
    /// returns whether every call returned true. Sources whose newest
    /// version is at or below `since` are skipped unread.
    fn each_newer_version(
        &self,
        range: &KeyRange,
        since: Timestamp,
        mut f: impl FnMut(&[u8]) -> bool,
    ) -> Result<bool> {
        let in_range = |k: &[u8]| range_contains(range, k);
        for mem in std::iter::once(&self.mem).chain(self.imms.iter()) {
            if mem.max_ts() > since && !mem.each_newer(range, since, &mut f) {
                return Ok(false);
            }
        }
        for file in self.levels.all() {
            // Data only: a table's own range tombstones are not versions.
            if file.data_max_ts() <= since {
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
                if in_range(e.user_key) && e.ts > since && !f(e.user_key) {
                    return Ok(false);
                }
                it.next()?;
            }
        }
        Ok(true)
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
