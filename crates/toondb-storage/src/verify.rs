//! `Database::verify`: read every block of every live table file through
//! the table reader's checks (footer, index, filter and per-block CRCs, the
//! last key of each block against the index), and every WAL segment
//! through replay's framing rules, without changing anything.
//!
//! Tables are reopened from their files for the check, so blocks that an
//! earlier read already verified (the reader checks each block once) are
//! checked again against what is on disk now. The WAL is read through a
//! file system wrapper that discards every write, so replay's repairs (cutting a
//! torn tail) are reported, not done: the newest segment may legitimately
//! end in an append that is still being written, but only at or past the
//! live writer's end; damage below it is a problem (no crash happened).

use std::path::Path;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::io::{FileBytes, FileLock, FileSystem, WritableFile};
use crate::sstable::{table_file_name, Table};
use crate::wal::{parse_segment_name, replay, SegmentRead};

/// What [`Database::verify`](crate::Database::verify) checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Table files checked, their data blocks, and their bytes.
    pub tables: u64,
    pub blocks: u64,
    pub table_bytes: u64,
    /// WAL segments read and the records in them.
    pub wal_segments: u64,
    pub wal_records: u64,
    /// The newest segment's unfinished tail, if any (normal while writes
    /// are in flight; a reopen would cut it off).
    pub wal_torn_tail: Option<String>,
    /// Every failed check, one line each; empty when all passed.
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

pub(crate) fn verify(engine: &Engine) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // The state keeps every table it lists from being deleted meanwhile.
    // Checkpoint tables are checked too: reads never use them, but the
    // next open after a crash would.
    let state = engine.state();
    for file in state
        .levels
        .all()
        .chain(state.checkpoints.iter().map(|c| &c.table))
    {
        let name = table_file_name(file.number());
        let path = engine.dir.join(&name);
        report.tables += 1;
        report.table_bytes += file.file_size();
        let table = match engine
            .fs
            .map(&path)
            .and_then(|bytes| Table::open(file.number(), bytes))
        {
            Ok(t) => t,
            Err(e) => {
                report
                    .problems
                    .push(format!("table {name}: {}", e.message()));
                continue;
            }
        };
        // Open refuses a table whose key range is not the manifest's.
        let (summary, meta) = (table.summary(), file.meta());
        if summary.smallest != meta.smallest || summary.largest != meta.largest {
            report.problems.push(format!(
                "table {name}: holds a different key range than the manifest records"
            ));
        }
        // The index and filter are checked on first use: a damaged one is
        // a problem here too.
        let blocks = match table.load_meta().and_then(|()| table.block_count()) {
            Ok(n) => n,
            Err(e) => {
                report
                    .problems
                    .push(format!("table {name}: {}", e.message()));
                continue;
            }
        };
        for block in 0..blocks {
            report.blocks += 1;
            if let Err(e) = table.load_block(block, false) {
                report
                    .problems
                    .push(format!("table {name}: {}", e.message()));
            }
        }
    }
    drop(state);

    check_manifest(engine, &mut report);

    // Taken before any segment is read: a frame starting below the live
    // writer's end was written whole, so damage there is not an append in
    // flight (nor a power cut: this process is running) but corruption.
    let live = engine.committer.lock().as_ref().map(|c| c.wal_position());
    let ro: Arc<dyn FileSystem> = Arc::new(ReadOnlyFs(engine.fs.clone()));
    let mut segments: Vec<u64> = engine
        .fs
        .list(&engine.dir)?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    segments.sort_unstable();
    let newest = segments.last().copied();
    for n in segments {
        let path = engine.dir.join(crate::wal::segment_file_name(n));
        match replay(&*ro, &engine.dir, &[n], SegmentRead::Copy, |_| Ok(())) {
            Ok(r) => {
                report.wal_segments += 1;
                report.wal_records += r.records;
                if let Some(t) = r.dropped_tail {
                    let line = format!(
                        "WAL segment {n}: {} bytes at offset {}: {}",
                        t.dropped_bytes, t.offset, t.reason
                    );
                    let written = match live {
                        Some((live_n, end)) if live_n == n => t.offset < end,
                        _ => false,
                    };
                    if written {
                        report.problems.push(format!(
                            "{line} (damage in the live segment, below its writer's end: \
                             corruption, not an unfinished append)"
                        ));
                    } else if Some(n) == newest {
                        report.wal_torn_tail = Some(line);
                    } else {
                        report.problems.push(line);
                    }
                }
            }
            // A segment that a flush made redundant may be deleted while
            // this runs; only a segment still there is a problem.
            Err(_) if !engine.fs.exists(&path) => {}
            Err(e) => report.problems.push(e.message().to_owned()),
        }
    }
    Ok(report)
}

/// Reads CURRENT and the manifest it names the way open does, so damage
/// that open would refuse is a problem here too: no CURRENT, a damaged
/// manifest. A manifest rewrite racing with the read (CURRENT switched, the
/// old file removed) goes away on a re-read, so a problem counts only when
/// every attempt finds one.
///
/// The manifest's checkpoint WAL segment must exist, as open requires. A
/// flush moves the checkpoint (a synced manifest edit) and only then
/// deletes the segments below it, unless `verify` has pinned the WAL
/// (`Engine::wal_pins`, checked by the flush after its edit): with the pin
/// held, the checkpoint a manifest read names stays on disk until the pin
/// is released, so a missing one is damage, not a race. (Were the pin ever
/// bypassed, a second manifest read that names a newer checkpoint means
/// the check is simply repeated.)
fn check_manifest(engine: &Engine, report: &mut VerifyReport) {
    let _pin = WalPin::new(engine);
    let current = engine.dir.join(crate::version::CURRENT_FILE_NAME);
    let mut problem = String::new();
    for _ in 0..5 {
        problem = match crate::version::Manifest::load(&*engine.fs, &engine.dir) {
            Ok(Some(state)) => match missing_checkpoint(engine, state.log_number) {
                Ok(None) => return,
                Ok(Some(line)) => line,
                Err(e) => e.message().to_owned(),
            },
            Ok(None) => format!(
                "{} is missing: the database cannot be opened",
                current.display()
            ),
            Err(e) => e.message().to_owned(),
        };
        std::thread::yield_now();
    }
    report.problems.push(problem);
}

/// Keeps flushes from deleting WAL segments while it lives.
struct WalPin<'a>(&'a Engine);

impl<'a> WalPin<'a> {
    fn new(engine: &'a Engine) -> Self {
        engine
            .wal_pins
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        WalPin(engine)
    }
}

impl Drop for WalPin<'_> {
    fn drop(&mut self) {
        self.0
            .wal_pins
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `Some(problem)` when the segment `log_number` names is missing and a
/// re-read of the manifest still names it (see [`check_manifest`]).
fn missing_checkpoint(engine: &Engine, log_number: u64) -> Result<Option<String>> {
    // Checkpoint 0 (written before checkpoints named a segment) names none.
    if log_number == 0 {
        return Ok(None);
    }
    let name = crate::wal::segment_file_name(log_number);
    if engine.fs.exists(&engine.dir.join(&name)) {
        return Ok(None);
    }
    let again = crate::version::Manifest::load(&*engine.fs, &engine.dir)?;
    if again.map(|s| s.log_number) != Some(log_number) {
        // The checkpoint moved meanwhile: the caller looks again.
        return Ok(Some(format!(
            "the checkpoint moved past {name} during the check"
        )));
    }
    Ok(Some(format!(
        "WAL segment {name} (the manifest's checkpoint) is missing: the database cannot be opened"
    )))
}

/// Reads through to the real file system; every write is discarded.
struct ReadOnlyFs(Arc<dyn FileSystem>);

struct NullFile;

impl WritableFile for NullFile {
    fn append(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn sync_data(&mut self) -> Result<()> {
        Ok(())
    }
    fn len(&self) -> u64 {
        0
    }
}

impl FileSystem for ReadOnlyFs {
    fn create_dir_all(&self, _path: &Path) -> Result<()> {
        Ok(())
    }
    fn create(&self, _path: &Path) -> Result<Box<dyn WritableFile>> {
        Ok(Box::new(NullFile))
    }
    fn open_append(&self, _path: &Path) -> Result<Box<dyn WritableFile>> {
        Ok(Box::new(NullFile))
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.0.read(path)
    }
    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        self.0.map(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.exists(path)
    }
    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.0.list(dir)
    }
    fn rename(&self, _from: &Path, _to: &Path) -> Result<()> {
        Ok(())
    }
    fn remove(&self, _path: &Path) -> Result<()> {
        Ok(())
    }
    fn truncate(&self, _path: &Path, _len: u64) -> Result<()> {
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> Result<()> {
        Ok(())
    }
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        Err(Error::invalid_argument(format!(
            "verify does not lock {}",
            path.display()
        )))
    }
}
