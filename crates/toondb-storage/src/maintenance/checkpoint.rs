//! The checkpoint job: turn a WAL segment the commit thread rotated away
//! from (it reached `wal_size_limit`) into a level-0 table, move the
//! manifest's WAL checkpoint past the segment, and delete it. The memtable
//! that segment's writes went to stays live and keeps serving them.
//!
//! Why not seal the memtable instead (what the WAL bound used to do): the
//! small flushes that makes cost writers their level-0 → level-1
//! compactions and readers a probe per small table (docs/performance.md,
//! "Reopen: the WAL bound, on or off by default"). A checkpoint table is
//! never read or compacted while the process runs: the memtable holds every
//! version in it, and that memtable's flush (one table, as without the
//! bound) removes the checkpoint tables in the same manifest edit. Only a
//! reopen reads them, as ordinary level-0 tables, instead of the WAL.
//!
//! Order: a checkpoint table is the newest level-0 table in the manifest,
//! and level 0 is ordered by file number at open. So a checkpoint runs
//! only once every older memtable is flushed (their tables get lower
//! numbers), and segments are checkpointed oldest first, each edit moving
//! the manifest's checkpoint from that segment to the next; a segment that
//! cannot be checkpointed ends checkpointing for its memtable (the flush
//! covers it).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::flush::{remove_obsolete_wal, rewrite_manifest_if_large, write_versions};
use crate::batch::{RawOp, WriteBatch};
use crate::engine::{Engine, LsmState};
use crate::error::{Error, Result};
use crate::key::{Timestamp, ValueKind};
use crate::lsm::TableFile;
use crate::range_del::RangeTombstone;
use crate::stats::Counters;
use crate::version::{Manifest, VersionEdit};
use crate::wal::SealedSegment;

/// A rotated WAL segment: `memtable` took its writes, they end at `end`,
/// and `next` is the segment the commit thread went on in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointRequest {
    pub memtable: u64,
    pub segment: u64,
    pub end: u64,
    pub next: u64,
}

/// Whether `request` is for the live memtable and next in line. A request
/// whose memtable was sealed (and, since checkpoints run only with no
/// sealed memtable waiting, already flushed) is covered by that flush.
pub(crate) fn is_current(request: &CheckpointRequest, state: &LsmState) -> bool {
    request.memtable == state.mem.id()
}

/// Checkpoints `request`'s segment. `Ok(false)` when it was skipped: the
/// manifest's checkpoint is not at that segment (an earlier one of the
/// same memtable was not checkpointed), so moving past it could drop
/// writes. A failure before the manifest edit leaves the WAL as it was
/// and is only counted (`checkpoint_errors`); a failed manifest edit is a
/// background error, as for a flush (the edit may or may not be on disk).
pub(crate) fn checkpoint(
    engine: &Engine,
    manifest: &mut Manifest,
    request: CheckpointRequest,
) -> Result<bool> {
    if manifest.state().log_number != request.segment {
        return Ok(false);
    }
    let built = (|| {
        let segment = SealedSegment::open(&*engine.fs, &engine.dir, request.segment, request.end)?;
        let mut versions = Vec::new();
        let mut tombstones = Vec::new();
        let mut max_ts = 0;
        segment.for_each_batch(|payload| {
            let ts = WriteBatch::decode_record_ops(payload, |ts, op| match op {
                RawOp::Point(op) => versions.push(Version {
                    key: op.key,
                    ts,
                    order: versions.len(),
                    kind: op.kind,
                    value: op.value,
                }),
                RawOp::Range(start, end) => tombstones.push(RangeTombstone {
                    start: start.to_vec(),
                    end: end.to_vec(),
                    ts,
                }),
            })?;
            max_ts = max_ts.max(ts);
            Ok(())
        })?;
        sort_versions(&mut versions);
        tombstones.sort();
        tombstones.dedup();
        if versions.is_empty() && tombstones.is_empty() {
            return Ok((None, max_ts));
        }
        let table = write_versions(
            engine,
            |builder| {
                for v in &versions {
                    builder.add(v.key, v.ts, v.kind, v.value)?;
                }
                Ok(())
            },
            &tombstones,
        )?;
        Ok((Some(table), max_ts))
    })()
    .map_err(|e: Error| {
        e.context(format_args!(
            "checkpointing WAL segment {} into a table",
            request.segment
        ))
    });
    let (built, max_ts) = match built {
        Ok(built) => built,
        Err(e) => {
            Counters::add(&engine.counters.checkpoint_errors, 1);
            return Err(e);
        }
    };
    let mut edit = VersionEdit {
        log_number: Some(request.next),
        last_ts: Some(manifest.state().last_ts.max(max_ts)),
        ..VersionEdit::default()
    };
    if let Some(file) = &built {
        edit.add_tables.push(file.meta().clone());
    }
    edit.next_file_number = Some(engine.next_file_number.load(Ordering::Relaxed));
    if let Err(e) = manifest.apply(&edit) {
        // The table is not marked obsolete: the edit naming it may be on disk.
        let e = e.context("recording a WAL checkpoint in the manifest");
        engine.set_bg_error(e.clone());
        return Err(e);
    }
    if let Some(file) = built {
        Counters::add(&engine.counters.checkpoint_bytes_written, file.file_size());
        engine.install(|s| LsmState {
            mem: s.mem.clone(),
            imms: s.imms.clone(),
            levels: s.levels.clone(),
            checkpoints: s.checkpoints.iter().cloned().chain([file]).collect(),
            compacted_ts: s.compacted_ts,
        });
    }
    Counters::add(&engine.counters.checkpoints, 1);
    remove_obsolete_wal(engine, request.next);
    if let Err(e) = rewrite_manifest_if_large(engine, manifest) {
        let e = e.context("rewriting the manifest");
        engine.set_bg_error(e.clone());
        return Err(e);
    }
    Ok(true)
}

/// The manifest edit part of a flush of the oldest unflushed memtable:
/// the checkpoint tables (all of them hold that memtable's writes) go.
pub(super) fn retire(edit: &mut VersionEdit, checkpoints: &[Arc<TableFile>]) {
    edit.remove_tables
        .extend(checkpoints.iter().map(|t| t.number()));
}

/// One version of a segment, borrowed from its mapping.
struct Version<'a> {
    key: &'a [u8],
    ts: Timestamp,
    /// Position in the segment: of two versions of a key with one
    /// timestamp (a batch that wrote the key twice), the later one wins,
    /// as in the memtable.
    order: usize,
    kind: ValueKind,
    value: &'a [u8],
}

/// Internal-key order (key ascending, newest first), one version per
/// (key, timestamp): the later write of a batch that wrote a key twice.
fn sort_versions(versions: &mut Vec<Version<'_>>) {
    versions.sort_unstable_by(|a, b| {
        a.key
            .cmp(b.key)
            .then(b.ts.cmp(&a.ts))
            .then(b.order.cmp(&a.order))
    });
    versions.dedup_by(|later, kept| later.key == kept.key && later.ts == kept.ts);
}

/// After that edit is durable: the files go once nothing holds them.
pub(super) fn mark_retired(retired: &[Arc<TableFile>]) {
    for t in retired {
        t.mark_obsolete();
    }
}
