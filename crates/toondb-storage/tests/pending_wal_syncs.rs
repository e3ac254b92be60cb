//! `stats().pending_wal_syncs`: the background fdatasync of a sealed WAL
//! segment, or of the segments an open replayed, counts from before it is
//! handed to its thread until it returned (failed or not), while the
//! maintenance thread may already be idle. Without it an idle-waiter
//! (tests/powerloss_steps.rs `open_settled`) returned while that sync was
//! still to come, so a step's file-system calls differed from run to run.
//!
//! The syncs are held (or failed) by a hook that acts only on the
//! background sync threads (`toondb-walsync`), so nothing else blocks.

mod powerloss_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use toondb_storage::io::{FileSystem, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, Stats, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, unique_dir};

const SYNC_THREAD: &str = "toondb-walsync";

#[derive(Clone, Default)]
struct Hook {
    /// While set, a WAL sync on a background sync thread waits.
    hold: Arc<AtomicBool>,
    /// A WAL sync on a background sync thread fails (after any hold).
    fail: Arc<AtomicBool>,
    /// Background WAL syncs that reached the hook.
    entered: Arc<AtomicUsize>,
    /// WAL segments created or opened: one more than at open means a seal.
    wals: Arc<AtomicUsize>,
}

/// Lets held syncs go when dropped, so that a failed assertion fails the
/// test instead of hanging it in the close that waits for them. Made
/// after the database, so dropped before it.
struct Release(Hook);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold.store(false, Ordering::SeqCst);
    }
}

impl WriteHook for Hook {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            self.wals.fetch_add(1, Ordering::SeqCst);
            Box::new(Wal {
                inner: file,
                hook: self.clone(),
            })
        } else {
            file
        }
    }
}

struct Wal {
    inner: Box<dyn WritableFile>,
    hook: Hook,
}

impl WritableFile for Wal {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        if std::thread::current().name() == Some(SYNC_THREAD) {
            self.hook.entered.fetch_add(1, Ordering::SeqCst);
            while self.hook.hold.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            if self.hook.fail.load(Ordering::SeqCst) {
                return Err(toondb_storage::Error::internal("injected WAL sync failure"));
            }
        }
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

fn options(fs: &PowerLossFs, hook: &Hook, memtable_size: usize) -> Options {
    Options::default()
        .memtable_size(memtable_size)
        .wal_size_limit(u64::MAX)
        .block_size(128)
        .fs(Arc::new(WrappedFs::new(fs.shared(), hook.clone())))
}

fn put(db: &Database, n: u64, sync: bool) -> toondb_storage::Result<u64> {
    let mut batch = WriteBatch::new();
    batch
        .put(format!("key{:04}", n % 500), vec![b'v'; 100])
        .unwrap();
    db.write_with(batch, WriteOptions::sync(sync))
}

fn wait_for(what: &str, db: &Database, done: impl Fn(&Stats) -> bool) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = db.stats();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {s:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// What the idle-waiters looked at before `pending_wal_syncs`.
fn maintenance_idle(s: &Stats) -> bool {
    s.immutable_memtables == 0 && !s.maintenance_busy
}

/// A database whose last writes are only in the page cache (a kill): 50
/// records in WAL segments for the next open to replay. Returns how many
/// segments there are.
fn killed_with_unsynced_wal(dir: &Path, fs: &PowerLossFs, hook: &Hook) -> u64 {
    let db = Database::open_with(dir, options(fs, hook, 1 << 20)).unwrap();
    for n in 0..50 {
        put(&db, n, false).unwrap();
    }
    fs.kill();
    let _ = db.close();
    drop(db);
    fs.restart();
    let wals = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .count();
    assert!(wals >= 1);
    wals as u64
}

/// The segments an open replayed are synced after the open returned: they
/// count until that sync returns, also once the maintenance thread has
/// flushed what they held and gone idle.
#[test]
fn replayed_segments_count_until_their_background_sync_returns() {
    let dir = unique_dir("pending-replayed");
    let fs = fresh_disk(&dir);
    let hook = Hook::default();
    let wals = killed_with_unsynced_wal(&dir, &fs, &hook);

    hook.hold.store(true, Ordering::SeqCst);
    let db = Database::open_with(&dir, options(&fs, &hook, 1 << 20)).unwrap();
    let release = Release(hook.clone());
    assert_eq!(db.stats().recovery.records, 50);
    // Counted from the open's return on, before the thread got anywhere.
    let s = db.stats();
    assert_eq!(s.pending_wal_syncs, wals, "{s:?}");
    while hook.entered.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The maintenance thread flushes the replayed memtable and goes idle
    // while the sync is held: `maintenance_busy` does not cover it.
    let s = wait_for("maintenance idle", &db, maintenance_idle);
    assert_eq!(
        s.pending_wal_syncs, wals,
        "idle while a sync is held: {s:?}"
    );
    std::thread::sleep(Duration::from_millis(50));
    let s = db.stats();
    assert_eq!(s.pending_wal_syncs, wals, "{s:?}");

    drop(release);
    let s = wait_for("the sync's return", &db, |s| s.pending_wal_syncs == 0);
    assert!(s.background_error.is_none(), "{s:?}");
    put(&db, 1000, true).unwrap();
    db.close().unwrap();
}

/// A sealed segment counts while its background sync is held, and not
/// once it returned.
#[test]
fn a_sealed_segment_counts_until_its_background_sync_returns() {
    let dir = unique_dir("pending-sealed");
    let fs = fresh_disk(&dir);
    let hook = Hook::default();
    let db = Database::open_with(&dir, options(&fs, &hook, 4096)).unwrap();
    let release = Release(hook.clone());
    assert_eq!(db.stats().pending_wal_syncs, 0);
    hook.hold.store(true, Ordering::SeqCst);
    // Unsynced writes until the first seal started a new segment (and
    // handed the old one to a sync thread, counted before that).
    let wals_at_open = hook.wals.load(Ordering::SeqCst);
    let mut n = 0;
    while hook.wals.load(Ordering::SeqCst) == wals_at_open {
        put(&db, n, false).unwrap();
        n += 1;
        assert!(n < 1000, "the memtable never sealed");
    }
    let s = db.stats();
    assert_eq!(s.pending_wal_syncs, 1, "{s:?}");
    while hook.entered.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let s = wait_for("maintenance idle", &db, maintenance_idle);
    assert_eq!(s.pending_wal_syncs, 1, "idle while a sync is held: {s:?}");

    drop(release);
    let s = wait_for("the sync's return", &db, |s| s.pending_wal_syncs == 0);
    assert!(s.background_error.is_none(), "{s:?}");
    put(&db, n, true).unwrap();
    db.close().unwrap();
}

/// A failed background sync counts no more once it returned (a waiter
/// must not hang on it), and the engine's handling of the failure is
/// unchanged: the next durable write fails, and so does the close.
#[test]
fn a_failed_background_sync_stops_counting_and_still_fails_the_next_durable_write() {
    // Sealed.
    let dir = unique_dir("pending-sealed-fail");
    let fs = fresh_disk(&dir);
    let hook = Hook::default();
    hook.fail.store(true, Ordering::SeqCst);
    let db = Database::open_with(&dir, options(&fs, &hook, 4096)).unwrap();
    let mut n = 0;
    while hook.entered.load(Ordering::SeqCst) == 0 {
        put(&db, n, false).unwrap();
        n += 1;
        assert!(n < 1000, "the memtable never sealed");
    }
    wait_for("the failed sync's return", &db, |s| {
        s.pending_wal_syncs == 0
    });
    assert!(
        put(&db, n, true).is_err(),
        "a durable write after a failed sync"
    );
    assert!(db.stats().background_error.is_some());
    assert!(db.close().is_err());
    drop(db);

    // Replayed.
    let dir = unique_dir("pending-replayed-fail");
    let fs = fresh_disk(&dir);
    let hook = Hook::default();
    killed_with_unsynced_wal(&dir, &fs, &hook);
    hook.fail.store(true, Ordering::SeqCst);
    let db = Database::open_with(&dir, options(&fs, &hook, 1 << 20)).unwrap();
    wait_for("the failed sync's return", &db, |s| {
        s.pending_wal_syncs == 0
    });
    assert!(
        put(&db, 1000, true).is_err(),
        "a durable write after a failed sync"
    );
    assert!(db.stats().background_error.is_some());
    assert!(db.close().is_err());
}
