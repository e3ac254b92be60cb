//! The flush job: write the oldest sealed memtable to a level-0 table,
//! record it in the manifest, swap it into the read state, and delete the
//! WAL segments it made redundant.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::checkpoint;
use crate::engine::{Engine, LsmState};
use crate::error::Result;
use crate::lsm::TableFile;
use crate::memtable::Memtable;
use crate::range_del::RangeTombstone;
use crate::sstable::{table_file_name, TableBuilder};
use crate::stats::Counters;
use crate::version::{Manifest, TableMeta, VersionEdit};
use crate::wal::parse_segment_name;

/// A manifest is rewritten as a fresh snapshot once its log grows past this.
const MANIFEST_REWRITE_BYTES: u64 = 4 << 20;

/// Flushes the oldest sealed memtable, if there is one, and wakes whoever
/// waits for flushes. Returns whether there was one. A failure is left for
/// the caller to turn into the background error.
pub(crate) fn flush_oldest(engine: &Engine, manifest: &mut Manifest) -> Result<bool> {
    let Some(imm) = engine.state().imms.last().cloned() else {
        return Ok(false);
    };
    flush(engine, manifest, &imm)?;
    let mut m = engine.maintenance.lock();
    m.flushed_id = m.flushed_id.max(imm.id());
    engine.flush_done.notify_all();
    Ok(true)
}

fn flush(engine: &Engine, manifest: &mut Manifest, imm: &Arc<Memtable>) -> Result<()> {
    let built = if imm.is_empty() {
        None
    } else {
        // Checkpoints keep running while the table is written (every
        // quarter of `wal_size_limit` bytes of it), so the WAL a reopen replays stays
        // bounded during a flush too (checkpoint.rs, *Order*).
        let mut between = || -> Result<()> {
            checkpoint::run_pending(engine, manifest);
            match engine.bg_error() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        };
        Some(write_table(engine, imm, &mut between)?)
    };
    if let Some(file) = &built {
        Counters::add(&engine.counters.flush_bytes_written, file.file_size());
    }
    // Checkpoints of newer memtables may have moved the checkpoint past
    // this memtable's WAL already: never move it back.
    let log_number = manifest.state().log_number.max(imm.sealed_log());
    let mut edit = VersionEdit {
        log_number: Some(log_number),
        last_ts: Some(manifest.state().last_ts.max(imm.max_ts())),
        ..VersionEdit::default()
    };
    if let Some(file) = &built {
        edit.add_tables.push(file.meta().clone());
    }
    // This memtable's checkpoint tables hold some of its writes and
    // nothing else; they go in this edit, including any made during the
    // flush. Newer memtables' stay.
    let retired = checkpoint::retire(&mut edit, &engine.state().checkpoints, imm.id());
    edit.next_file_number = Some(engine.next_file_number.load(Ordering::Relaxed));
    manifest.apply(&edit)?;
    engine.install(|s| LsmState {
        mem: s.mem.clone(),
        imms: s
            .imms
            .iter()
            .filter(|m| m.id() != imm.id())
            .cloned()
            .collect(),
        levels: match &built {
            Some(file) => s.levels.with_flushed(file.clone()),
            None => s.levels.clone(),
        },
        checkpoints: s
            .checkpoints
            .iter()
            .filter(|c| c.memtable != imm.id())
            .cloned()
            .collect(),
        compacted_ts: s.compacted_ts,
    });
    checkpoint::mark_retired(&retired);
    Counters::add(&engine.counters.flushes, 1);
    remove_obsolete_wal(engine, log_number);
    rewrite_manifest_if_large(engine, manifest)
}

/// Starts a fresh manifest once the log is long, so reopening stays fast.
pub(super) fn rewrite_manifest_if_large(engine: &Engine, manifest: &mut Manifest) -> Result<()> {
    if manifest.file_size() > MANIFEST_REWRITE_BYTES {
        let number = engine.alloc_file_number();
        let mut state = manifest.state().clone();
        state.next_file_number = engine.next_file_number.load(Ordering::Relaxed);
        *manifest = Manifest::create(engine.fs.clone(), &engine.dir, number, state)?;
    }
    Ok(())
}

/// Writes `imm` as a level-0 table (synced, directory synced) under the
/// file number reserved at its seal, calling `between` after about every
/// quarter of `wal_size_limit` bytes of keys and values. The caller counts its bytes:
/// a flush's and a checkpoint's have counters of their own.
pub(super) fn write_table(
    engine: &Engine,
    imm: &Memtable,
    between: &mut dyn FnMut() -> Result<()>,
) -> Result<Arc<TableFile>> {
    // A quarter segment's worth: a queued checkpoint waits for about that
    // much of the table to be written, not for the whole memtable.
    let interval = (engine.options.wal_size_limit / 4).max(1);
    let number = match imm.flush_number() {
        0 => engine.alloc_file_number(), // never sealed (not a flush: tests)
        n => n,
    };
    write_versions(
        engine,
        number,
        |builder| {
            let mut since = 0u64;
            for entry in imm.iter() {
                let v = entry.key();
                builder.add(v.user_key(), v.ts, v.kind, v.value())?;
                since += (v.user_key().len() + v.value().len()) as u64;
                if since >= interval {
                    since = 0;
                    between()?;
                }
            }
            Ok(())
        },
        &imm.range_dels().tombstones(),
    )
}

/// Writes level-0 table `number`: `add` adds the versions in internal-key
/// order, `tombstones` are its range tombstones; synced, with its directory
/// entry, and opened.
pub(super) fn write_versions(
    engine: &Engine,
    number: u64,
    add: impl FnOnce(&mut TableBuilder) -> Result<()>,
    tombstones: &[RangeTombstone],
) -> Result<Arc<TableFile>> {
    let path = engine.dir.join(table_file_name(number));
    let result = (|| {
        let mut builder =
            TableBuilder::with_options(engine.fs.create(&path)?, engine.options.table_options());
        add(&mut builder)?;
        for t in tombstones {
            builder.add_range_tombstone(t.clone());
        }
        let summary = builder.finish()?;
        engine.fs.sync_dir(&engine.dir)?;
        let table = engine.tables.open(number, &path)?;
        Ok((summary, table))
    })();
    let (summary, table) = match result {
        Ok(done) => done,
        Err(e) => {
            // The file is not in the manifest; it would only be garbage.
            let _ = engine.fs.remove(&path);
            return Err(e);
        }
    };
    let meta = TableMeta::from_summary(number, 0, summary);
    Ok(TableFile::new(&engine.tables, table, meta, path))
}

/// WAL segments below the manifest's log number hold only data that is
/// now in table files. Failing to delete one wastes space but loses
/// nothing (replay skips segments below the log number).
pub(super) fn remove_obsolete_wal(engine: &Engine, log_number: u64) {
    // Checked after the manifest edit that moved the checkpoint (SeqCst on
    // both sides): a `verify` that pinned after this check reads that edit.
    if engine.wal_pins.load(Ordering::SeqCst) > 0 {
        return;
    }
    let Ok(names) = engine.fs.list(&engine.dir) else {
        return;
    };
    for name in names {
        if parse_segment_name(&name).is_some_and(|n| n < log_number) {
            let _ = engine.fs.remove(&engine.dir.join(&name));
        }
    }
}
