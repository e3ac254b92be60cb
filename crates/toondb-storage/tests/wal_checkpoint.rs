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

mod support;
use support::{copy_dir, wait_idle};

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toondb_storage::io::{OsFileSystem, WrappedFs, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, ScanOptions, WriteBatch};

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
    let image = copy_dir(dir.path());
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
    let image = copy_dir(dir.path());
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
    let image = copy_dir(dir.path());
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

/// Holds a flush table while it is written: its first large append (a
/// checkpoint table of one small segment never makes one), and then its
/// first append after another table was created meanwhile (a checkpoint
/// that ran during the flush).
#[derive(Default)]
struct FlushGate {
    /// Which hold the flush is in (1 or 2), 0 when it is not held.
    held: std::sync::Mutex<u32>,
    /// Holds released so far.
    released: std::sync::Mutex<u32>,
    cv: std::sync::Condvar,
    /// Tables created since the first hold was released.
    created_since: std::sync::atomic::AtomicUsize,
    /// The held flush table's name.
    flush_table: std::sync::Mutex<Option<String>>,
}

#[derive(Clone, Default)]
struct FlushHook(Arc<FlushGate>);

impl FlushHook {
    fn wait_held(&self, hold: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut held = self.0.held.lock().unwrap();
        while *held != hold {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            held = self.0.cv.wait_timeout(held, left).unwrap().0;
        }
        true
    }

    fn release(&self, hold: u32) {
        let mut released = self.0.released.lock().unwrap();
        *released = (*released).max(hold);
        self.0.cv.notify_all();
    }
}

/// Whatever the test does, the flush is not left waiting for it.
struct ReleaseOnDrop(FlushHook);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release(2);
    }
}

impl WriteHook for FlushHook {
    fn wrap(
        &self,
        path: &Path,
        file: Box<dyn toondb_storage::io::WritableFile>,
    ) -> Box<dyn toondb_storage::io::WritableFile> {
        if path.extension().is_none_or(|e| e != "sst") {
            return file;
        }
        if *self.0.released.lock().unwrap() >= 1 {
            self.0.created_since.fetch_add(1, Ordering::SeqCst);
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        Box::new(GatedTable {
            inner: file,
            gate: self.0.clone(),
            name,
        })
    }
}

struct GatedTable {
    inner: Box<dyn toondb_storage::io::WritableFile>,
    gate: Arc<FlushGate>,
    name: String,
}

impl GatedTable {
    fn hold(&self, hold: u32) {
        *self.gate.held.lock().unwrap() = hold;
        self.gate.cv.notify_all();
        let mut released = self.gate.released.lock().unwrap();
        while *released < hold {
            released = self.gate.cv.wait(released).unwrap();
        }
        drop(released);
        *self.gate.held.lock().unwrap() = 0;
    }
}

impl toondb_storage::io::WritableFile for GatedTable {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        let released = *self.gate.released.lock().unwrap();
        let is_flush = {
            let mut f = self.gate.flush_table.lock().unwrap();
            if f.is_none() && released == 0 && data.len() >= 200 << 10 {
                *f = Some(self.name.clone());
            }
            f.as_deref() == Some(self.name.as_str())
        };
        if is_flush && released == 0 {
            self.hold(1);
        } else if is_flush && released == 1 && self.gate.created_since.load(Ordering::SeqCst) > 0 {
            self.hold(2);
        }
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// Issue 21: a kill right after a seal replayed the sealed memtable's WAL
/// too, because no checkpoint ran until its flush was done. Now its last
/// segment is checkpointed and the newer memtable's segments are
/// checkpointed while the flush waits and while it runs, so a kill image
/// taken in the middle of that flush replays at most the live segment and
/// one batch, and reopens to exactly the model, including overwrites and
/// deletes of keys that are only in the sealed memtable (and its
/// checkpoint tables).
#[test]
fn checkpoints_run_while_a_sealed_memtable_waits_for_its_flush() {
    let dir = tempfile::tempdir().unwrap();
    let hook = FlushHook::default();
    let _release = ReleaseOnDrop(hook.clone());
    let fs = Arc::new(WrappedFs::new(Arc::new(OsFileSystem), hook.clone()));
    // 8 MiB: the flush's table is several of the builder's 2 MiB writes,
    // so a checkpoint can land between two of them.
    let opts = Options::default()
        .memtable_size(8 << 20)
        .wal_size_limit(LIMIT)
        .fs(fs);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    // Generation 1 until the memtable is sealed (its flush is then held).
    let mut n = 0;
    while db.stats().immutable_memtables == 0 {
        load(&db, n..n + 50, 1);
        for i in n..n + 50 {
            model.insert(key(i), value(i, 1));
        }
        n += 50;
        assert!(n < 100_000, "no seal");
    }
    assert!(hook.wait_held(1), "the flush was never held");
    let before = db.stats();
    assert_eq!(before.immutable_memtables, 1);
    // Generation 2 while the flush waits: overwrites and deletes of keys
    // only the sealed memtable holds, and new keys, over several segments.
    load(&db, 0..1000, 2);
    let mut batch = WriteBatch::new();
    for i in 1000..1200 {
        batch.delete(key(i)).unwrap();
        model.remove(&key(i));
    }
    db.write(batch).unwrap();
    load(&db, n..n + 1500, 2);
    for i in (0..1000).chain(n..n + 1500) {
        model.insert(key(i), value(i, 2));
    }
    let pending = files_ending(dir.path(), ".wal") - 1;
    assert!(pending >= 4, "{pending} segments to checkpoint");
    hook.release(1);
    assert!(
        hook.wait_held(2),
        "no checkpoint ran during the flush: {:?}",
        db.stats()
    );
    let during = db.stats();
    assert_eq!(
        (during.immutable_memtables, during.flushes),
        (1, before.flushes)
    );
    assert!(
        during.checkpoints >= before.checkpoints + pending as u64,
        "{} checkpoints before, {} now, {pending} segments",
        before.checkpoints,
        during.checkpoints
    );
    assert_eq!(files_ending(dir.path(), ".wal"), 1);
    assert_eq!(scan_all(&db), model);
    let image = copy_dir(dir.path());

    hook.release(2);
    let s = wait_idle(&db);
    assert_eq!(s.flushes, before.flushes + 1);
    // The sealed memtable's checkpoint tables went with its flush; the
    // newer memtable's stay until its own.
    assert!(s.checkpoint_tables >= pending as u64, "{s:?}");
    assert!(
        s.checkpoint_tables <= (s.checkpoints - before.checkpoints),
        "{s:?}"
    );
    assert_eq!(scan_all(&db), model);
    let report = db.verify().unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    db.close().unwrap();
    drop(db);

    for path in [image.path(), dir.path()] {
        let reopened = Database::open_with(path, options()).unwrap();
        let replayed = reopened.stats().recovery.bytes;
        assert!(replayed <= LIMIT + (16 << 10), "replayed {replayed} bytes");
        assert_eq!(scan_all(&reopened), model, "{}", path.display());
        for i in (0..n + 1500).step_by(97) {
            assert_eq!(reopened.get(key(i)).unwrap().as_ref(), model.get(&key(i)));
        }
        wait_idle(&reopened);
        reopened.compact().unwrap();
        assert_eq!(scan_all(&reopened), model, "{} compacted", path.display());
        reopened.close().unwrap();
    }
}
