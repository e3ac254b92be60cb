//! Opening a database: lock the directory, load the manifest, open the
//! table files while the WAL segments the manifest does not cover replay
//! into a memtable, create the next WAL segment, and start the engine's threads;
//! the maintenance thread writes the fresh manifest and switches CURRENT
//! to it before its other work.

use std::path::Path;
use std::sync::Arc;

use crate::commit::{CommitThread, Committer, COMMIT_THREAD_NAME};
use crate::engine::{Engine, EngineParts, LsmState};
use crate::error::{Error, ErrorKind, Result};
use crate::lsm::{open_listed_during, TableOpener, TablesOpening};
use crate::maintenance::{MaintenanceThread, OpenManifest};
use crate::memtable::Memtable;
use crate::open_durability::OpenDurability;
use crate::options::Options;
use crate::sstable::parse_table_name;
use crate::version::{parse_manifest_name, Manifest, ManifestState, CURRENT_FILE_NAME};
use crate::wal::{self, parse_segment_name, WalWriter};

pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) fn open_engine(dir: &Path, options: Options) -> Result<Arc<Engine>> {
    let options = options.sanitized();
    let fs = options.fs.clone();
    if !fs.exists(dir) {
        if !options.create_if_missing {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no database at {} (createIfMissing is off)", dir.display()),
            ));
        }
        crate::io::create_dir_all_durable(&*fs, dir)?;
    }
    // Refuse before taking the lock, so a refused open leaves no LOCK file
    // in a directory that holds no database.
    if !options.create_if_missing && !fs.exists(&dir.join(CURRENT_FILE_NAME)) {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no database in {} (createIfMissing is off)", dir.display()),
        ));
    }
    // A backup that did not finish (crashed, or lost power before its
    // files were durable) leaves its marker: the directory is not a
    // database, and opening it must not create an empty one in its place.
    if fs.exists(&dir.join(crate::backup::BACKUP_MARKER)) {
        return Err(Error::invalid_argument(format!(
            "{} holds an unfinished backup ({} exists); it is not a database",
            dir.display(),
            crate::backup::BACKUP_MARKER
        )));
    }
    let lock = fs.lock(&dir.join(LOCK_FILE))?;
    let names = fs.list(dir)?;

    let loaded = Manifest::load_numbered(&*fs, dir)?;
    let fresh = loaded.is_none();
    // The manifest just read may end in an edit that a killed process
    // appended but never synced: what this open serves (the tables that
    // edit lists, replay starting at its checkpoint) is durable only once
    // that file is synced, by the switch's successor or before this
    // engine's first WAL write, whichever comes first (open_durability.rs).
    let read_manifest = loaded
        .as_ref()
        .map(|&(number, _)| dir.join(crate::version::manifest_file_name(number)));
    let open_durability = OpenDurability::new(fs.clone(), dir.to_path_buf(), read_manifest);
    let mut state = match loaded.map(|(_, state)| state) {
        Some(_) if options.error_if_exists => {
            return Err(Error::invalid_argument(format!(
                "a database already exists at {} (errorIfExists is on)",
                dir.display()
            )))
        }
        Some(state) => state,
        None if !options.create_if_missing => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no database in {} (createIfMissing is off)", dir.display()),
            ))
        }
        None => {
            // A MANIFEST without CURRENT is what a crash during the very
            // first open leaves; table files without one mean lost metadata.
            if names.iter().any(|n| parse_table_name(n).is_some()) {
                return Err(Error::corruption(format!(
                    "{} has table files but no {CURRENT_FILE_NAME}",
                    dir.display()
                )));
            }
            ManifestState {
                next_file_number: 1,
                ..ManifestState::default()
            }
        }
    };

    let mut max_file_number = state.next_file_number.saturating_sub(1);
    let mut segments = Vec::new();
    // Files the manifest makes redundant. They are deleted only after the
    // fresh manifest below is durable: the manifest just read may end in an
    // edit that reached the page cache but not the disk (a kill right after
    // the write, before its fsync), and deleting on its strength could lose
    // data to a power cut during this open.
    let mut garbage = Vec::new();
    for name in &names {
        let number = parse_segment_name(name)
            .or_else(|| parse_table_name(name))
            .or_else(|| parse_manifest_name(name));
        if let Some(n) = number {
            max_file_number = max_file_number.max(n);
        }
        match parse_segment_name(name) {
            Some(n) if n >= state.log_number => segments.push(n),
            Some(_) => garbage.push(name.clone()), // flushed already
            None => {}
        }
        if let Some(n) = parse_table_name(name) {
            if !state.tables.iter().any(|t| t.number == n) {
                // Written by a flush or compaction that crashed before its
                // manifest edit, or an input whose removal was durable but
                // whose deletion was not done yet.
                garbage.push(name.clone());
            }
        }
    }
    segments.sort_unstable();

    let opener = TableOpener::new(&options);
    let mut mem = Memtable::new(1);
    let mut last_ts = state.last_ts;
    // The replayed segments are synced in the background, not here: an
    // open after a crash would otherwise wait for up to a few memtables'
    // worth of WAL to reach the disk (a killed process leaves it in the
    // page cache). The new segment names the last of them as its
    // predecessor, and the committer syncs nothing newer before they are
    // durable, as after a seal (docs/format-wal.md, *Replay*). The
    // recovered versions stay in the mapped segments (no copy) until the
    // memtable is flushed. Replay needs nothing from the tables, so a
    // database of many tables opens them meanwhile (lsm/open_listed.rs);
    // it waits for them before it repairs the WAL (a failed open changes
    // no file).
    let replay = |tables: &TablesOpening<'_, '_>| {
        // The checkpoint segment is kept until an edit moves the checkpoint
        // past it, so it is missing only when such an edit existed and is
        // gone: a damaged final manifest record that had been acknowledged
        // (and the segments it made obsolete deleted). Opening would
        // silently lose the writes those segments held. Databases written
        // before this rule may have checkpoint 0 (never flushed), which
        // names no segment.
        if state.log_number != 0 && segments.first() != Some(&state.log_number) {
            return Err(Error::corruption(format!(
                "WAL segment {} (the manifest's checkpoint) is missing from {}: \
                 a manifest edit that moved the checkpoint may be damaged",
                crate::wal::segment_file_name(state.log_number),
                dir.display()
            )));
        }
        let mut replayed = crate::memtable::Replayed::default();
        let outcome = wal::replay_deferring_sync(
            &*fs,
            dir,
            &segments,
            |payload, segment| {
                let ts = mem.replay_record(payload, segment, &mut replayed)?;
                last_ts = last_ts.max(ts);
                Ok(())
            },
            &|| tables.wait(),
        )?;
        mem.insert_replayed(replayed);
        Ok(outcome)
    };
    let (levels, (recovery, tail)) = open_listed_during(&opener, &*fs, dir, &state.tables, replay)?;
    // Opened now, so a flush that deletes a replayed segment before its
    // background sync ran does not fail that sync. A segment that replayed
    // nothing is deleted as garbage once the new manifest is durable; it
    // is synced here instead (there is little or nothing in it to write).
    let mut unsynced = Vec::new();
    let predecessor = match tail {
        Some(tail) if !mem.is_empty() => {
            for &(n, end) in &recovery.segment_ends {
                let path = dir.join(crate::wal::segment_file_name(n));
                let file = fs.open_append(&path).map_err(|e| {
                    e.context(format_args!("opening replayed WAL segment {n} to sync it"))
                })?;
                unsynced.push((crate::wal::SegmentSynced { segment: n, end }, file));
            }
            tail
        }
        Some(_) => {
            for &n in &segments {
                crate::wal::sync_segment(&*fs, dir, n)?;
            }
            crate::wal::Predecessor { segment: 0, end: 0 }
        }
        // Nothing replayed, or replay synced every segment itself.
        None => crate::wal::Predecessor { segment: 0, end: 0 },
    };

    let mut next_file_number = max_file_number + 1;
    let wal_number = next_file_number;
    let manifest_number = next_file_number + 1;
    // Reserved for the flush table of what replay recovered (if anything):
    // below every checkpoint table of the memtables after it.
    let replayed_flush_number = next_file_number + 2;
    next_file_number += 3;
    // Its header is synced here; its name becomes durable with the manifest
    // switch's directory sync on the maintenance thread, or with a sync of
    // the directory before the first durable commit if that comes first
    // (`Engine::ensure_names_durable`). A power cut before either may lose
    // the name: the segment then held nothing acknowledged as durable.
    let wal = WalWriter::create_unlisted(&*fs, dir, wal_number, Some(predecessor))?;
    // The checkpoint names an existing segment from now on: the oldest one
    // replay still needs, or the new one (see the check above). Segments
    // that replayed nothing are not needed again.
    let replayed = if mem.is_empty() {
        garbage.extend(segments.iter().map(|&n| crate::wal::segment_file_name(n)));
        None
    } else {
        // The recovered writes become a sealed memtable that the
        // maintenance thread flushes at once; that flush moves the
        // checkpoint to the new segment and deletes the replayed ones, so
        // WAL segments do not pile up across reopens (each would be read
        // again by every later open).
        mem.seal(wal_number, replayed_flush_number);
        Some(Arc::new(mem))
    };
    state.log_number = match replayed {
        Some(_) => segments.first().copied().unwrap_or(wal_number),
        None => wal_number,
    };
    // Manifests other than the one about to be written are stale: the one
    // CURRENT named, and any a crash left behind (written before CURRENT
    // pointed at it, or removed without a directory sync and brought back
    // by a power cut).
    garbage.extend(
        names
            .iter()
            .filter(|n| parse_manifest_name(n).is_some_and(|m| m != manifest_number))
            .cloned(),
    );
    state.next_file_number = next_file_number;
    state.last_ts = last_ts;
    // Written, synced and named by CURRENT on the maintenance thread, before
    // anything else it does: those three syncs (manifest, CURRENT.tmp, the
    // directory after the rename) and the old manifest's unlink took 1-15
    // ms of every open depending on the disk's load. Until then CURRENT names the manifest just read, which
    // still describes a directory that recovers everything (nothing is
    // deleted before the switch, and every segment replay needed is still
    // there). The garbage is deleted after the switch made the state it
    // came from durable; file numbers are never reused, so a name on this
    // list can only ever mean the obsolete file.
    let manifest = if fresh {
        // A new database exists once `open` returns (a later open without
        // createIfMissing must find it), so its first manifest is written
        // and named here.
        OpenManifest::Live(Manifest::create(fs.clone(), dir, manifest_number, state)?)
    } else {
        OpenManifest::Pending {
            number: manifest_number,
            state,
        }
    };
    let garbage: Vec<_> = garbage.into_iter().map(|name| dir.join(name)).collect();

    let (commit_tx, commit_rx) = crossbeam_channel::bounded(options.commit_queue_len.max(1));
    // Sized like every later memtable (its key filter and point index),
    // not for the default rotation size.
    let first = Arc::new(Memtable::sized(2, options.memtable_size));
    let engine = Arc::new(Engine::new(EngineParts {
        dir: dir.to_path_buf(),
        tables: opener,
        options,
        state: LsmState {
            mem: first,
            imms: replayed.into_iter().collect(),
            levels,
            checkpoints: Vec::new(),
            compacted_ts: 0,
        },
        last_ts,
        next_file_number,
        flushed_id: 0,
        recovery,
        commit_tx,
        lock,
        // The new segment's name waits for the switch's directory sync,
        // and the manifest read for the switch's successor.
        open_durability,
    }));

    *engine.committer.lock() = Some(Committer::new(
        wal,
        last_ts,
        3,
        unsynced,
        engine.pending_wal_syncs.clone(),
    ));
    let commit_thread = CommitThread::new(engine.clone(), commit_rx);
    let for_maintenance = engine.clone();
    let maintainer = move || MaintenanceThread::switch_then_run(for_maintenance, manifest, garbage);
    let commit = match spawn(COMMIT_THREAD_NAME, move || commit_thread.run()) {
        Ok(t) => t,
        Err(e) => {
            drop(engine.committer.lock().take());
            return Err(e);
        }
    };
    let maintenance = match spawn("toondb-maintenance", maintainer) {
        Ok(t) => t,
        Err(e) => {
            engine.set_threads(commit, std::thread::spawn(|| {}));
            let _ = engine.shutdown();
            return Err(e);
        }
    };
    engine.set_threads(commit, maintenance);
    Ok(engine)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| Error::io(e, format_args!("starting the {name} thread")))
}
