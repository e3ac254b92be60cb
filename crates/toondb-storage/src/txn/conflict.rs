//! Conflict detection, run by the commit thread before a transaction gets
//! its commit timestamp. First committer wins: a transaction conflicts when
//! a key it writes (and, when serializable, a key or range it read) has a
//! version committed after its read timestamp. Earlier members of the same
//! commit group are not in the memtable yet, so their keys are checked from
//! `group_keys`, and their range deletes from `group_ranges`: a range
//! delete committed after the read timestamp changes every key it covers,
//! whether or not the key existed (a write of it conflicts; a serializable
//! read of it, or of a range meeting it, does too).

use std::collections::BTreeSet;

use crate::batch::WriteBatch;
use crate::engine::LsmState;
use crate::error::Result;
use crate::key::{KeyRange, Timestamp};
use crate::range_del::RangeTombstone;
use crate::read::range_contains;

/// What a transaction's commit must be validated against.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConflictCheck {
    pub read_ts: Timestamp,
    /// Point reads (serializable only).
    pub read_keys: Vec<Vec<u8>>,
    /// Range reads (serializable only).
    pub read_ranges: Vec<KeyRange>,
}

impl ConflictCheck {
    /// `true` when committing `batch` now would break isolation.
    pub fn conflicts(
        &self,
        state: &LsmState,
        group_keys: &BTreeSet<Vec<u8>>,
        group_ranges: &[RangeTombstone],
        batch: &WriteBatch,
    ) -> Result<bool> {
        let since = self.read_ts;
        let written = batch.iter().map(|op| op.key);
        for key in written.chain(self.read_keys.iter().map(Vec::as_slice)) {
            if group_keys.contains(key)
                || group_ranges.iter().any(|r| r.covers(key))
                || state.has_newer_version(key, since)?
            {
                return Ok(true);
            }
        }
        for range in &self.read_ranges {
            // A linear pass: BTreeSet::range panics on inverted bounds,
            // which a caller's range may legitimately have (it is empty).
            if group_keys.iter().any(|k| range_contains(range, k))
                || group_ranges.iter().any(|r| r.overlaps(range))
                || state.has_newer_in_range(range, since)?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
