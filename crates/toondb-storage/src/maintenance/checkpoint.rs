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

use super::flush::{remove_obsolete_wal, rewrite_manifest_if_large, write_table};
use crate::batch::WriteBatch;
use crate::engine::{Engine, LsmState};
use crate::error::Result;
use crate::lsm::TableFile;
use crate::memtable::Memtable;
use crate::stats::Counters;
use crate::version::{Manifest, VersionEdit};

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
    let expected = engine
        .options
        .wal_size_limit
        .min(engine.options.memtable_size as u64);
    let mem = Memtable::sized(0, expected as usize);
    let mut pending = Vec::new();
    let mut batch = WriteBatch::new();
    let built = (|| {
        crate::wal::read_sealed(
            &*engine.fs,
            &engine.dir,
            request.segment,
            request.end,
            |payload| {
                let ts = WriteBatch::decode_record_into(payload, &mut batch)?;
                mem.apply_deferred(&batch, ts, &mut pending);
                Ok(())
            },
        )?;
        mem.insert_pending(std::mem::take(&mut pending));
        if mem.is_empty() {
            return Ok(None);
        }
        write_table(engine, &mem).map(Some)
    })()
    .map_err(|e| {
        e.context(format_args!(
            "checkpointing WAL segment {} into a table",
            request.segment
        ))
    });
    let built = match built {
        Ok(built) => built,
        Err(e) => {
            Counters::add(&engine.counters.checkpoint_errors, 1);
            return Err(e);
        }
    };
    let mut edit = VersionEdit {
        log_number: Some(request.next),
        last_ts: Some(manifest.state().last_ts.max(mem.max_ts())),
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

/// After that edit is durable: the files go once nothing holds them.
pub(super) fn mark_retired(retired: &[Arc<TableFile>]) {
    for t in retired {
        t.mark_obsolete();
    }
}
