//! Review doubt (branch openpurge): `Database::open` finishes table drops a
//! crash interrupted with one write each (columnar/catalog.rs). Since
//! warmopen, the first WAL group an open's engine appends first fdatasyncs
//! the manifest the open read (open_durability.rs), and a failure there
//! stops the engine for good. The open used to ignore the purge's error,
//! so it returned a database that could no longer write, and the user
//! learnt of it at their first write. Now such an open fails, closes its
//! engine, and a later open of the same path (fault gone) finishes the drop.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::pending_drop::{
    assert_purge_error, drop_interrupted_after_commit, noise, open_must_fail, open_with_wal_budget,
    schema, settled_bytes,
};
use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Error, ErrorKind, Options, Result, Value};

/// Fails every fdatasync of `manifest` (the one the open reads), counting
/// them, and holds the open's manifest switch until the first of them was
/// tried: the switch would otherwise make that manifest durable itself (by
/// its successor) and the purge's write would not sync it.
#[derive(Clone)]
struct FailReadManifestSync {
    manifest: PathBuf,
    /// Sync attempts so far, and the condition the switch waits on.
    tried: Arc<(Mutex<u32>, Condvar)>,
    /// How long the first failing sync takes (room for a concurrent open
    /// to arrive while the failing one is still in its purge).
    linger: Duration,
}

impl FailReadManifestSync {
    fn new(dir: &Path, linger: Duration) -> Self {
        FailReadManifestSync {
            manifest: current_manifest(dir),
            tried: Arc::default(),
            linger,
        }
    }

    /// Waits (bounded) until a sync was tried.
    fn wait_tried(&self) {
        let (lock, cv) = &*self.tried;
        let tried = lock.lock().unwrap();
        let _ = cv
            .wait_timeout_while(tried, Duration::from_secs(10), |n| *n == 0)
            .unwrap();
    }

    fn attempts(&self) -> u32 {
        *self.tried.0.lock().unwrap()
    }
}

struct FailSyncFile {
    inner: Box<dyn WritableFile>,
    tried: Arc<(Mutex<u32>, Condvar)>,
    linger: Duration,
}

impl WritableFile for FailSyncFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        let first = {
            let mut n = self.tried.0.lock().unwrap();
            *n += 1;
            *n == 1
        };
        self.tried.1.notify_all();
        if first {
            std::thread::sleep(self.linger);
        }
        Err(Error::new(
            ErrorKind::Io,
            "injected: manifest fdatasync failed",
        ))
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl WriteHook for FailReadManifestSync {
    fn before_create(&self, path: &Path) -> Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("MANIFEST-") {
            // Bounded: if nothing ever syncs the read manifest (the open
            // wrote nothing), the switch runs anyway and the test's
            // assertions report it.
            self.wait_tried();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path != self.manifest {
            return file;
        }
        Box::new(FailSyncFile {
            inner: file,
            tried: self.tried.clone(),
            linger: self.linger,
        })
    }
}

fn rows(ids: std::ops::Range<i64>, len: usize) -> Vec<Vec<Value>> {
    ids.map(|i| vec![Value::I64(i), Value::Bytes(noise(i as u64, len))])
        .collect()
}

/// The manifest CURRENT names (the one the next open reads).
fn current_manifest(dir: &Path) -> PathBuf {
    let name = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(name.trim())
}

const KEPT_ROWS: i64 = 200;

/// A database with table `kept` (rows 0..KEPT_ROWS), plain key `kept`,
/// and a drop of table `blobs` that stopped after its catalog commit (the
/// WAL failed every write after it). Returns the settled table bytes
/// before the drop.
fn leave_a_pending_drop(dir: &Path) -> u64 {
    let (db, budget) = open_with_wal_budget(dir);
    let blobs = db.create_table("blobs", schema()).unwrap();
    for chunk in rows(0..1000, 400).chunks(250) {
        blobs.upsert(&db, chunk).unwrap();
    }
    let kept = db.create_table("kept", schema()).unwrap();
    kept.upsert(&db, &rows(0..KEPT_ROWS, 50)).unwrap();
    db.put(b"kept", b"yes").unwrap();
    let full = settled_bytes(&db);
    assert!(full > 300_000, "{full}");
    drop_interrupted_after_commit(&db, &budget, "blobs");
    let _ = db.close();
    full
}

/// Everything but the dropped table is there, and the database writes.
fn check_intact(db: &Database) {
    support::pending_drop::check_intact(db, rows(0..KEPT_ROWS, 50));
}

/// Opens with `hook`, which must fail the open the right way.
fn open_with_the_fault(dir: &Path, hook: &FailReadManifestSync) -> Error {
    let options = Options::default().fs(Arc::new(WrappedFs::os(hook.clone())));
    let err = open_must_fail(dir, options);
    assert!(hook.attempts() >= 1, "the read manifest was never synced");
    assert_purge_error(&err, "injected: manifest fdatasync failed");
    err
}

/// The doubt, proven (before the fix the open returned Ok and the first
/// write failed with the manifest sync's error) and the fix: the open
/// fails with that error, its engine is closed and unregistered, and the
/// next open of the same path finishes the drop with everything else intact.
#[test]
fn a_failed_manifest_sync_in_the_open_purge_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let full = leave_a_pending_drop(dir.path());

    let hook = FailReadManifestSync::new(dir.path(), Duration::ZERO);
    open_with_the_fault(dir.path(), &hook);

    // Fault gone: the same process opens the path again (the failed open's
    // engine left the registry and released the lock), and this open
    // finishes the drop.
    let db = Database::open(dir.path()).unwrap();
    check_intact(&db);
    let after = settled_bytes(&db);
    assert!(
        after * 5 < full,
        "the dropped table's cells were not deleted: {after} of {full} bytes remain"
    );
    db.close().unwrap();
    drop(db);

    let db = Database::open(dir.path()).unwrap();
    check_intact(&db);
    assert_eq!(db.get(b"after").unwrap().as_deref(), Some(&b"1"[..]));
    db.close().unwrap();
}

/// Without a pending drop the open writes nothing, so the same fault
/// stays unnoticed until the first write (the engine's rule since
/// warmopen, tests/review_s31_warmopen.rs): the open itself succeeds.
#[test]
fn control_without_a_pending_drop_the_same_fault_does_not_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.put(b"kept", b"yes").unwrap();
    db.close().unwrap();
    drop(db);

    let hook = FailReadManifestSync::new(dir.path(), Duration::ZERO);
    let options = Options::default().fs(Arc::new(WrappedFs::os(hook.clone())));
    let db = Database::open_with(dir.path(), options).unwrap();
    assert_eq!(db.get(b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
    assert!(db.put(b"x", b"1").is_err());
    assert!(hook.attempts() >= 1);
    let _ = db.close();
}

/// A second open of the path that arrives while the failing open is still
/// in its purge does not share that engine (whose writes are dead and which
/// the failing open then closes): it waits, then opens the directory
/// afresh (no fault on its file system) and finishes the drop itself.
#[test]
fn a_concurrent_open_waits_for_the_failing_open_and_then_opens_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let full = leave_a_pending_drop(dir.path());
    let hook = FailReadManifestSync::new(dir.path(), Duration::from_millis(200));
    let second = std::thread::scope(|s| {
        let second = s.spawn(|| {
            hook.wait_tried();
            Database::open(dir.path())
        });
        open_with_the_fault(dir.path(), &hook);
        second.join().unwrap()
    });
    let db = second.unwrap();
    check_intact(&db);
    assert!(settled_bytes(&db) * 5 < full);
    db.close().unwrap();
}
