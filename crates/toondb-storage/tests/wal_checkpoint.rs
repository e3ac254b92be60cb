//! WAL checkpoints (maintenance/checkpoint.rs): at `wal_size_limit` the
//! live WAL segment is rotated and checkpointed into a table, without
//! sealing the memtable. These tests prove what that promises:
//!
//! - reads never consult a checkpoint table while the process runs (the
//!   memtable answers), and the memtable's flush removes them, files too;
//! - after a kill, a reopen reads them as the newest level-0 tables, so a
//!   checkpointed overwrite or delete shadows an older flushed version;
//! - a checkpoint that fails before its manifest edit loses nothing and
//!   stops nothing: the segment stays, later segments of that memtable are
//!   not checkpointed past it, and the memtable's flush covers them all.
//!
//! Power cuts and kills at every file-system step of a checkpoint are in
//! `powerloss_steps.rs`; model-based runs with checkpoints in
//! `model_powerloss.rs`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toondb_storage::io::{OsFileSystem, WrappedFs, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, ScanOptions, Stats, WriteBatch};

const LIMIT: u64 = 64 << 10;

fn key(i: usize) -> Vec<u8> {
    format!("key{:08}", i.wrapping_mul(2_654_435_761) % 100_000_000).into_bytes()
}

fn value(i: usize, gen: u8) -> Vec<u8> {
    let mut v = vec![gen; 200];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

fn options() -> Options {
    Options::default()
        .memtable_size(64 << 20)
        .wal_size_limit(LIMIT)
}

fn load(db: &Database, range: std::ops::Range<usize>, gen: u8) {
    for chunk in range.collect::<Vec<_>>().chunks(50) {
        let mut batch = WriteBatch::new();
        for &i in chunk {
            batch.put(key(i), value(i, gen)).unwrap();
        }
        db.write(batch).unwrap();
    }
}

fn wait_idle(db: &Database) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut idle = 0;
    loop {
        let s = db.stats();
        assert!(s.background_error.is_none(), "{:?}", s.background_error);
        if s.immutable_memtables == 0 && !s.maintenance_busy {
            idle += 1;
            if idle == 2 {
                return s;
            }
        } else {
            idle = 0;
        }
        assert!(Instant::now() < deadline, "the engine never went idle");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn files_ending(dir: &Path, suffix: &str) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

/// A copy of the directory while the engine is open: what a kill leaves.
fn crash_image(src: &Path) -> TempDir {
    let dst = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.path().join(entry.file_name())).unwrap();
        }
    }
    dst
}

#[test]
fn checkpoint_tables_are_not_read_and_the_flush_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    load(&db, 0..3000, 1);
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 5, "{} checkpoints", s.checkpoints);
    assert_eq!(s.checkpoint_tables, s.checkpoints);
    assert_eq!((s.flushes, s.tables, s.checkpoint_errors), (0, 0, 0));
    // The segments they hold are gone: the live one and at most one whose
    // checkpoint has not run yet (none: the engine is idle).
    assert_eq!(files_ending(dir.path(), ".wal"), 1);
    assert_eq!(files_ending(dir.path(), ".sst") as u64, s.checkpoints);
    // `verify` reads them: the next open after a crash would.
    let report = db.verify().unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.tables, s.checkpoints);

    for i in 0..3000 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    assert_eq!(db.get(b"absent").unwrap(), None);
    let read = db.stats();
    // Not one table was consulted: the memtable answered every read.
    assert_eq!((read.bloom_checked, read.data_blocks_read), (0, 0));

    db.flush().unwrap();
    let s = wait_idle(&db);
    assert_eq!((s.checkpoint_tables, s.flushes, s.tables), (0, 1, 1));
    assert_eq!(files_ending(dir.path(), ".sst"), 1);
    for i in 0..3000 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), options()).unwrap();
    for i in (0..3000).step_by(7) {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    db.close().unwrap();
}

#[test]
fn after_a_kill_checkpointed_writes_shadow_older_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    // Generation 1 in a flushed table, then generation 2 overwrites half
    // and deletes a tenth, checkpointed (not flushed) before the kill.
    load(&db, 0..2000, 1);
    db.flush().unwrap();
    load(&db, 0..1000, 2);
    let mut batch = WriteBatch::new();
    for i in 1000..1200 {
        batch.delete(key(i)).unwrap();
    }
    db.write(batch).unwrap();
    load(&db, 2000..3000, 2);
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 3, "{} checkpoints", s.checkpoints);
    let image = crash_image(dir.path());
    db.close().unwrap();

    let reopened = Database::open_with(image.path(), options()).unwrap();
    let replayed = reopened.stats().recovery.bytes;
    assert!(replayed <= LIMIT + (64 << 10), "replayed {replayed} bytes");
    let expect = |i: usize| match i {
        0..=999 => Some(value(i, 2)),
        1000..=1199 => None,
        1200..=1999 => Some(value(i, 1)),
        _ => Some(value(i, 2)),
    };
    for i in 0..3000 {
        assert_eq!(reopened.get(key(i)).unwrap(), expect(i), "key {i}");
    }
    // The same after the reopen's flush and compaction merged them.
    wait_idle(&reopened);
    reopened.compact().unwrap();
    for i in 0..3000 {
        assert_eq!(reopened.get(key(i)).unwrap(), expect(i), "key {i}");
    }
    reopened.close().unwrap();
}

/// Fails table creation while armed.
#[derive(Clone, Default)]
struct FailTables(Arc<AtomicBool>);

impl WriteHook for FailTables {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if self.0.load(Ordering::SeqCst) && path.extension().is_some_and(|e| e == "sst") {
            return Err(toondb_storage::Error::new(
                ErrorKind::Io,
                "injected: no table files now",
            ));
        }
        Ok(())
    }

    fn wrap(
        &self,
        _path: &Path,
        file: Box<dyn toondb_storage::io::WritableFile>,
    ) -> Box<dyn toondb_storage::io::WritableFile> {
        file
    }
}

#[test]
fn a_failed_checkpoint_keeps_the_wal_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fail = FailTables::default();
    let fs = Arc::new(WrappedFs::new(Arc::new(OsFileSystem), fail.clone()));
    let db = Database::open_with(dir.path(), options().fs(fs)).unwrap();
    load(&db, 0..1000, 1);
    let before = wait_idle(&db);
    assert!(before.checkpoints >= 1);
    fail.0.store(true, Ordering::SeqCst);
    load(&db, 1000..2000, 1);
    let s = wait_idle(&db);
    assert_eq!(
        s.checkpoints, before.checkpoints,
        "no checkpoint while tables fail"
    );
    assert!(s.checkpoint_errors >= 1);
    assert!(s.background_error.is_none());
    // The first failed segment stays, and so does every later one (none
    // is checkpointed past it).
    let segments = files_ending(dir.path(), ".wal");
    assert!(segments >= 3, "{segments} WAL segments");
    fail.0.store(false, Ordering::SeqCst);
    load(&db, 2000..2500, 1);
    let s = wait_idle(&db);
    assert_eq!(s.checkpoints, before.checkpoints, "skipped past the gap");
    // A kill now replays the segments the checkpoints did not cover.
    let image = crash_image(dir.path());
    db.flush().unwrap();
    let s = wait_idle(&db);
    assert_eq!((s.checkpoint_tables, s.tables), (0, 1));
    assert_eq!(files_ending(dir.path(), ".wal"), 1);
    for i in 0..2500 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)), "key {i}");
    }
    db.close().unwrap();

    let reopened = Database::open_with(image.path(), options()).unwrap();
    for i in 0..2500 {
        assert_eq!(reopened.get(key(i)).unwrap(), Some(value(i, 1)), "key {i}");
    }
    reopened.close().unwrap();
}

/// Everything the database holds, by a full scan.
fn scan_all(db: &Database) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter(ScanOptions::default())
        .unwrap()
        .map(|item| item.unwrap())
        .collect()
}

/// Random batches (puts, deletes, a key written twice in one batch, range
/// deletes) checkpointed many times over, against a `BTreeMap`: the live
/// engine, a kill image of it reopened, and that reopen after a full
/// compaction all hold exactly the model. A checkpoint table is built
/// from the WAL, not from the memtable, so this checks that the two say
/// the same thing.
#[test]
fn checkpoints_agree_with_a_model_across_kills() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options().wal_size_limit(16 << 10)).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let k = |i: u64| format!("k{i:04}").into_bytes();
    for round in 0..400u64 {
        let mut batch = WriteBatch::new();
        let mut applied: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        if round % 17 == 5 {
            let lo = next(500);
            let hi = lo + 1 + next(40);
            batch.delete_range(k(lo), k(hi)).unwrap();
            // Range deletes take effect before the batch's own writes.
            let doomed: Vec<_> = model.range(k(lo)..k(hi)).map(|(k, _)| k.clone()).collect();
            for key in doomed {
                model.remove(&key);
            }
        }
        for _ in 0..1 + next(30) {
            let key = k(next(500));
            if next(5) == 0 {
                batch.delete(&key).unwrap();
                applied.push((key, None));
            } else {
                let value = format!("v{round}-{}", next(1 << 20)).repeat(1 + next(8) as usize);
                batch.put(&key, value.as_bytes()).unwrap();
                applied.push((key, Some(value.into_bytes())));
            }
        }
        // Batches write a key twice now and then: the later write wins.
        if let Some((key, _)) = applied.first().cloned() {
            if round % 3 == 0 {
                let value = format!("twice{round}").into_bytes();
                batch.put(&key, &value).unwrap();
                applied.push((key, Some(value)));
            }
        }
        db.write(batch).unwrap();
        for (key, value) in applied {
            match value {
                Some(v) => model.insert(key, v),
                None => model.remove(&key),
            };
        }
    }
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 5, "{} checkpoints", s.checkpoints);
    assert_eq!(s.flushes, 0);
    assert_eq!(scan_all(&db), model);
    let image = crash_image(dir.path());
    db.close().unwrap();

    let reopened = Database::open_with(image.path(), options()).unwrap();
    assert!(reopened.stats().levels[0].tables >= s.checkpoints);
    assert_eq!(scan_all(&reopened), model);
    for key in model.keys().take(50) {
        assert_eq!(reopened.get(key).unwrap().as_ref(), model.get(key));
    }
    reopened.compact().unwrap();
    assert_eq!(scan_all(&reopened), model);
    reopened.close().unwrap();
}
