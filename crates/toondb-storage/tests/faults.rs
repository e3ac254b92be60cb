//! Fault injection through the `FileSystem` seam: a `FaultyFs` wrapper around
//! `OsFileSystem` can be told to fail appends, syncs or creations of WAL
//! segments (`*.wal`), table files (`*.sst`) or manifests (`MANIFEST-*`).
//! A failed append first writes half of its bytes (a torn write).
//!
//! Durable WAL appends go through the real file's `append_durable` (direct
//! I/O where available); an armed sync fault lets that write happen and
//! then reports failure.
//!
//! Proves that after a failed WAL append or fsync (including the sync of
//! preallocated WAL space), a failed table write or a
//! failed manifest edit during a flush, or a failed WAL segment creation at
//! memtable rotation: the write (or `flush()`) that hit it returns
//! `ErrorKind::Io`; the engine then refuses every later write, even once the
//! disk is healthy again (continuing after a failed fsync could acknowledge
//! data the disk never got); reads keep working and never show the failed
//! write; and reopening with a healthy file system finds every write that
//! was acknowledged.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{
    Database, Error, ErrorKind, Options, Result, ScanOptions, WriteBatch, WriteOptions,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wal,
    Table,
    Manifest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Append,
    Sync,
}

const KINDS: [Kind; 3] = [Kind::Wal, Kind::Table, Kind::Manifest];
const OPS: [Op; 3] = [Op::Create, Op::Append, Op::Sync];

fn kind_of(path: &Path) -> Option<Kind> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with(".wal") {
        Some(Kind::Wal)
    } else if name.ends_with(".sst") {
        Some(Kind::Table)
    } else if name.starts_with("MANIFEST-") {
        Some(Kind::Manifest)
    } else {
        None
    }
}

/// Which operations currently fail, and how many failures were injected.
#[derive(Default)]
struct Faults {
    armed: [AtomicBool; 9],
    /// Armed faults that disarm themselves after failing once.
    once: [AtomicBool; 9],
    injected: AtomicUsize,
    /// Successful `sync_data` calls on WAL segments.
    wal_syncs: AtomicUsize,
}

impl Faults {
    fn slot(kind: Kind, op: Op) -> usize {
        let k = KINDS.iter().position(|&x| x == kind).unwrap();
        let o = OPS.iter().position(|&x| x == op).unwrap();
        k * OPS.len() + o
    }

    fn set(&self, kind: Kind, op: Op, on: bool) {
        self.armed[Self::slot(kind, op)].store(on, Ordering::SeqCst);
    }

    /// Fails the next `op` on a file of `kind` only: like an fdatasync
    /// error that the kernel reports once, after which syncs succeed again.
    fn fail_once(&self, kind: Kind, op: Op) {
        self.once[Self::slot(kind, op)].store(true, Ordering::SeqCst);
        self.set(kind, op, true);
    }

    fn heal(&self) {
        for a in &self.armed {
            a.store(false, Ordering::SeqCst);
        }
    }

    /// Err if `op` on a file of `kind` should fail now.
    fn check(&self, kind: Option<Kind>, op: Op, what: &Path) -> Result<()> {
        match kind {
            Some(kind) if self.armed[Self::slot(kind, op)].load(Ordering::SeqCst) => {
                let slot = Self::slot(kind, op);
                if self.once[slot].swap(false, Ordering::SeqCst) {
                    self.armed[slot].store(false, Ordering::SeqCst);
                }
                self.injected.fetch_add(1, Ordering::SeqCst);
                Err(Error::io(
                    std::io::Error::other(format!("injected {op:?} failure")),
                    format_args!("{op:?} {}", what.display()),
                ))
            }
            _ => Ok(()),
        }
    }

    fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

struct FaultyFs {
    faults: Arc<Faults>,
}

struct FaultyFile {
    inner: Box<dyn WritableFile>,
    path: std::path::PathBuf,
    kind: Option<Kind>,
    faults: Arc<Faults>,
}

impl WritableFile for FaultyFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        if let Err(e) = self.faults.check(self.kind, Op::Append, &self.path) {
            // A torn write: part of the data reached the file.
            self.inner.append(&data[..data.len() / 2])?;
            return Err(e);
        }
        self.inner.append(data)
    }

    fn sync_data(&mut self) -> Result<()> {
        self.faults.check(self.kind, Op::Sync, &self.path)?;
        self.inner.sync_data()?;
        if self.kind == Some(Kind::Wal) {
            self.faults.wal_syncs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Goes to the real file's durable append (direct I/O for WAL segments
    /// where available). An armed append fault tears the write as in
    /// `append`; an armed sync fault lets the write reach the disk and then
    /// reports failure, as an fsync error can.
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        if let Err(e) = self.faults.check(self.kind, Op::Append, &self.path) {
            self.inner.append(&data[..data.len() / 2])?;
            return Err(e);
        }
        if let Err(e) = self.faults.check(self.kind, Op::Sync, &self.path) {
            let _ = self.inner.append_durable(data);
            return Err(e);
        }
        self.inner.append_durable(data)
    }

    fn preallocate(&mut self, len: u64) -> Result<()> {
        self.inner.preallocate(len)
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl WriteHook for FaultyFs {
    fn before_create(&self, path: &Path) -> Result<()> {
        self.faults.check(kind_of(path), Op::Create, path)
    }

    fn wrap(&self, path: &Path, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        Box::new(FaultyFile {
            inner,
            path: path.to_path_buf(),
            kind: kind_of(path),
            faults: self.faults.clone(),
        })
    }
}

fn faulty(options: Options) -> (Options, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let fs = Arc::new(WrappedFs::os(FaultyFs {
        faults: faults.clone(),
    }));
    (options.fs(fs), faults)
}

fn key(i: usize) -> String {
    format!("key{i:05}")
}

fn value(i: usize) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i % 17)).into_bytes()
}

fn assert_io(result: Result<impl std::fmt::Debug>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.kind(), ErrorKind::Io, "{what}: {err}");
}

/// After a failure: writes of every kind are refused (with the disk healthy
/// again), `flush()` fails, and the keys below `acked` are readable.
fn assert_stopped_but_readable(db: &Database, acked: usize) {
    assert_io(db.put("after", "x"), "put after the failure");
    assert_io(db.delete(key(0)), "delete after the failure");
    let mut batch = WriteBatch::new();
    batch.put("after-batch", "x").unwrap();
    assert_io(
        db.write_with(batch, WriteOptions::sync(true)),
        "synced batch after the failure",
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let mut batch = WriteBatch::new();
    batch.put("after-submit", "x").unwrap();
    db.submit(batch, WriteOptions::default(), move |r| {
        tx.send(r).unwrap();
    });
    assert_io(rx.recv().unwrap(), "submit after the failure");
    assert!(db.flush().is_err(), "flush after the failure");
    assert!(db.stats().background_error.is_some());

    for i in 0..acked {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
    for k in ["after", "after-batch", "after-submit"] {
        assert_eq!(db.get(k).unwrap(), None, "{k}");
    }
}

/// Reopens with the real file system and checks every acknowledged key,
/// that the database takes writes again, and that they survive a reopen.
fn reopen_healthy(dir: &Path, acked: usize) -> Database {
    let options = Options::default().memtable_size(4096);
    let db = Database::open_with(dir, options.clone()).unwrap();
    for i in 0..acked {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
    let all: Vec<_> = db
        .iter(ScanOptions::prefix(b"key"))
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert!(all.len() >= acked);
    db.put("healthy", "yes").unwrap();
    db.flush().unwrap();
    db.close().unwrap();
    let db = Database::open_with(dir, options).unwrap();
    assert_eq!(db.stats().recovery.dropped_tail, None);
    assert_eq!(db.get("healthy").unwrap().as_deref(), Some(&b"yes"[..]));
    for i in 0..acked {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
    db
}

#[test]
fn failed_wal_sync_stops_writes_and_keeps_acknowledged_data() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default().sync(true));
    let db = Database::open_with(dir.path(), options).unwrap();
    const ACKED: usize = 50;
    for i in 0..ACKED {
        db.put(key(i), value(i)).unwrap();
    }
    faults.set(Kind::Wal, Op::Sync, true);
    assert_io(db.put(key(ACKED), value(ACKED)), "put whose fsync fails");
    assert_eq!(faults.injected(), 1);
    faults.heal();
    // Not acknowledged, so not visible either.
    assert_eq!(db.get(key(ACKED)).unwrap(), None);
    assert_stopped_but_readable(&db, ACKED);
    let _ = db.close();
    reopen_healthy(dir.path(), ACKED).close().unwrap();
}

/// The first durable write into a segment first writes zeroed space ahead
/// of the log and syncs it; that sync failing is a failed WAL sync like any
/// other (the earlier unsynced writes may be gone from the page cache), not
/// a preallocation that merely did not work out.
#[test]
fn failed_sync_of_preallocated_wal_space_stops_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default());
    let db = Database::open_with(dir.path(), options).unwrap();
    const ACKED: usize = 20;
    for i in 0..ACKED {
        db.put(key(i), value(i)).unwrap(); // not durable: no preallocation yet
    }
    // Only that one sync fails: a writer that carried on would sync
    // successfully next and acknowledge a write whose predecessors the
    // kernel may have dropped.
    faults.fail_once(Kind::Wal, Op::Sync);
    let mut batch = WriteBatch::new();
    batch.put(key(ACKED), value(ACKED)).unwrap();
    assert_io(
        db.write_with(batch, WriteOptions::sync(true)),
        "durable write whose preallocation sync fails",
    );
    assert_eq!(
        faults.injected(),
        1,
        "the preallocation's sync was the one that failed"
    );
    assert_eq!(db.get(key(ACKED)).unwrap(), None);
    assert_stopped_but_readable(&db, ACKED);
    let _ = db.close();
    reopen_healthy(dir.path(), ACKED).close().unwrap();
}

#[test]
fn failed_wal_sync_fails_every_member_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default());
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    faults.set(Kind::Wal, Op::Sync, true);
    // Queue many writes at once so the commit thread groups them; only some
    // ask for a sync, but one fsync covers (and so fails) the whole group,
    // and every later group is refused.
    let (tx, rx) = std::sync::mpsc::channel();
    for i in 10..60 {
        let mut batch = WriteBatch::new();
        batch.put(key(i), value(i)).unwrap();
        let tx = tx.clone();
        db.submit(batch, WriteOptions::sync(i % 5 == 3), move |r| {
            tx.send((i, r)).unwrap();
        });
    }
    drop(tx);
    let mut acked = Vec::new();
    for (i, r) in rx {
        match r {
            Ok(_) => acked.push(i),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Io, "{e}"),
        }
    }
    faults.heal();
    // The first synced write (13) fails, and nothing after it can succeed.
    assert!(acked.iter().all(|&i| i < 13), "{acked:?}");
    for &i in &acked {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)));
    }
    assert_stopped_but_readable(&db, 10);
    let _ = db.close();
    let db = reopen_healthy(dir.path(), 10);
    for &i in &acked {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i)));
    }
    db.close().unwrap();
}

#[test]
fn failed_wal_append_stops_writes_and_torn_record_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default());
    let db = Database::open_with(dir.path(), options).unwrap();
    const ACKED: usize = 30;
    for i in 0..ACKED {
        db.put(key(i), value(i)).unwrap();
    }
    faults.set(Kind::Wal, Op::Append, true);
    assert_io(db.put(key(ACKED), value(ACKED)), "put whose append fails");
    faults.heal();
    assert_eq!(db.get(key(ACKED)).unwrap(), None);
    assert_stopped_but_readable(&db, ACKED);
    let _ = db.close();

    // Half the record reached the file: recovery drops it as a torn tail.
    let db = Database::open(dir.path()).unwrap();
    let tail = db.stats().recovery.dropped_tail.expect("torn record");
    assert_eq!(tail.reason, "truncated record");
    assert_eq!(db.get(key(ACKED)).unwrap(), None);
    db.close().unwrap();
    reopen_healthy(dir.path(), ACKED).close().unwrap();
}

#[test]
fn failed_table_write_during_flush_keeps_data_in_the_wal() {
    for op in [Op::Create, Op::Append, Op::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let (options, faults) = faulty(Options::default().block_size(256));
        let db = Database::open_with(dir.path(), options).unwrap();
        const ACKED: usize = 300;
        for i in 0..ACKED {
            db.put(key(i), value(i)).unwrap();
        }
        faults.set(Kind::Table, op, true);
        let err = db.flush().expect_err("flush with a failing table file");
        assert_eq!(err.kind(), ErrorKind::Io, "{op:?}: {err}");
        assert!(faults.injected() >= 1, "{op:?}");
        faults.heal();
        // The sealed memtable stays readable until the engine closes.
        assert_stopped_but_readable(&db, ACKED);
        assert_eq!(db.stats().tables, 0, "{op:?}");
        let _ = db.close();
        let tables = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(".sst")
            })
            .count();
        assert_eq!(tables, 0, "{op:?}: half-written table left behind");
        reopen_healthy(dir.path(), ACKED).close().unwrap();
    }
}

#[test]
fn failed_manifest_edit_during_flush_loses_nothing() {
    // Append: the edit is torn and ignored at open, so the WAL is replayed.
    // Sync: the edit is complete on disk, so the table is used at open.
    for op in [Op::Append, Op::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let (options, faults) = faulty(Options::default());
        let db = Database::open_with(dir.path(), options).unwrap();
        const ACKED: usize = 200;
        for i in 0..ACKED {
            db.put(key(i), value(i)).unwrap();
        }
        faults.set(Kind::Manifest, op, true);
        let err = db.flush().expect_err("flush with a failing manifest");
        assert_eq!(err.kind(), ErrorKind::Io, "{op:?}: {err}");
        faults.heal();
        assert_stopped_but_readable(&db, ACKED);
        let _ = db.close();
        let db = Database::open(dir.path()).unwrap();
        let s = db.stats();
        let (tables, replayed) = match op {
            Op::Sync => (1, 0),
            _ => (0, ACKED as u64),
        };
        // The open hands what it replayed to a background flush, which may
        // already have added its table.
        assert_eq!(s.recovery.records, replayed, "{op:?}");
        assert!(
            s.tables == tables || (replayed > 0 && s.tables == tables + 1),
            "{op:?}: {} tables",
            s.tables
        );
        db.close().unwrap();
        reopen_healthy(dir.path(), ACKED).close().unwrap();
    }
}

#[test]
fn failed_wal_rotation_stops_writes_and_keeps_acknowledged_data() {
    // Create: the new segment cannot be created. Sync: the old segment's
    // fsync before switching fails (writes themselves do not sync here).
    for op in [Op::Create, Op::Sync] {
        let dir = tempfile::tempdir().unwrap();
        let (options, faults) = faulty(Options::default().memtable_size(4096));
        let db = Database::open_with(dir.path(), options).unwrap();
        let mut acked = 0;
        let mut failed = false;
        for i in 0..10_000 {
            if i == 5 {
                faults.set(Kind::Wal, op, true);
            }
            match db.put(key(i), value(i)) {
                Ok(()) => acked = i + 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Io, "{op:?}: {e}");
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "{op:?}: no write failed");
        assert!(
            acked > 20,
            "{op:?}: failed before the first rotation ({acked})"
        );
        faults.heal();
        assert_stopped_but_readable(&db, acked);
        let _ = db.close();
        reopen_healthy(dir.path(), acked).close().unwrap();
    }
}

#[test]
fn failed_open_leaves_the_database_recoverable() {
    for kind in [Kind::Wal, Kind::Manifest] {
        for op in OPS {
            let dir = tempfile::tempdir().unwrap();
            {
                let db = Database::open(dir.path()).unwrap();
                for i in 0..100 {
                    db.put(key(i), value(i)).unwrap();
                }
                db.flush().unwrap();
                for i in 100..150 {
                    db.put(key(i), value(i)).unwrap();
                }
                db.close().unwrap();
            }
            let (options, faults) = faulty(Options::default());
            faults.set(kind, op, true);
            // Twice: a failed open must not make the next one worse. A
            // failing manifest fails the switch the maintenance thread makes
            // after the open returned: a background error the close reports.
            for _ in 0..2 {
                let err = Database::open_with(dir.path(), options.clone())
                    .and_then(|db| db.close())
                    .expect_err("open with a failing file system");
                assert_eq!(err.kind(), ErrorKind::Io, "{kind:?} {op:?}: {err}");
            }
            assert!(faults.injected() >= 2, "{kind:?} {op:?}");
            reopen_healthy(dir.path(), 150).close().unwrap();
        }
    }
}

/// A failed flush (a table write) leaves the WAL healthy and the only copy
/// of the sealed writes: `close()` must still sync it, and must report the
/// failure instead of claiming a clean shutdown.
#[test]
fn close_syncs_the_wal_and_reports_an_earlier_flush_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default());
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..20 {
        db.put(key(i), value(i)).unwrap();
    }
    faults.set(Kind::Table, Op::Create, true);
    assert_io(db.flush(), "flush with table creation failing");
    faults.heal();
    let syncs_before_close = faults.wal_syncs.load(Ordering::SeqCst);
    assert_io(db.close(), "close after a failed flush");
    assert!(
        faults.wal_syncs.load(Ordering::SeqCst) > syncs_before_close,
        "close did not sync the WAL after an unrelated background error"
    );
    reopen_healthy(dir.path(), 20).close().unwrap();
}

/// A failed final WAL sync is returned by `close()`, not only stored.
#[test]
fn close_reports_a_failed_final_wal_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (options, faults) = faulty(Options::default());
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..20 {
        db.put(key(i), value(i)).unwrap();
    }
    faults.set(Kind::Wal, Op::Sync, true);
    assert_io(db.close(), "close whose final WAL sync fails");
    assert!(faults.injected() > 0);
    // The bytes did reach the OS; a healthy reopen finds them.
    reopen_healthy(dir.path(), 20).close().unwrap();
}
