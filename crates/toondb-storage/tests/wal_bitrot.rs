//! Bit rot in an older WAL segment whose background sync had finished
//! (WAL format 3 and later, docs/format-wal.md *New segments*) must never
//! be replayed as an unsynced lost tail: that rule cuts the older segment
//! and empties every newer one, which here would silently drop writes
//! acknowledged as durable after the sync. The open must fail with
//! Corruption naming the segment and offset instead.
//!
//! Setup on a [`PowerLossFs`]: a small memtable size seals the first segment
//! (A) after a few unsynced puts; table creation is held by a gate, so the
//! sealed memtable is never flushed and replay still needs A. Then a
//! durable put lands in the next segment (B): it waits for A's background
//! sync, so A is durable when it is acknowledged. The process is killed
//! (nothing written is lost), one of A's bytes rots, and the database is
//! reopened.

mod powerloss_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use toondb_storage::io::{FileSystem, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, unique_dir};

/// Memtable size: small, so a few commits seal the memtable.
const LIMIT: u64 = 4096;

/// Holds every table creation until released (the flush of the sealed
/// memtable, which would make segment A redundant), and remembers the
/// WAL segments created, in order (the first is A), and those whose
/// writer was dropped (a sealed segment's, once its sync thread is done).
#[derive(Clone, Default)]
struct HoldFlush {
    open: Arc<(Mutex<bool>, Condvar)>,
    wals: Arc<Mutex<Vec<PathBuf>>>,
    closed: Arc<Mutex<Vec<PathBuf>>>,
}

impl HoldFlush {
    fn release(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

/// Releases the held flush when dropped. Declared after the database, so
/// that a failing assertion releases the flush before the database is
/// dropped: its close waits for the maintenance thread, which would
/// otherwise wait for the flush forever (a hang instead of a failure).
struct ReleaseOnDrop(HoldFlush);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl std::ops::Deref for ReleaseOnDrop {
    type Target = HoldFlush;
    fn deref(&self) -> &HoldFlush {
        &self.0
    }
}

impl WriteHook for HoldFlush {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            let (lock, cv) = &*self.open;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            self.wals.lock().unwrap().push(path.to_path_buf());
            return Box::new(Watched {
                inner: file,
                path: path.to_path_buf(),
                closed: self.closed.clone(),
            });
        }
        file
    }
}

/// A WAL file that reports when its writer is dropped.
struct Watched {
    inner: Box<dyn WritableFile>,
    path: PathBuf,
    closed: Arc<Mutex<Vec<PathBuf>>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.closed.lock().unwrap().push(self.path.clone());
    }
}

impl WritableFile for Watched {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

/// Whether `bytes` hold a segment-synced record (WAL format 4: a 25-byte
/// frame of length 17 and kind 4) with a valid checksum.
fn holds_segment_synced(bytes: &[u8]) -> bool {
    (0..bytes.len().saturating_sub(25)).any(|at| {
        let frame = &bytes[at..at + 25];
        let crc = u32::from_le_bytes(frame[..4].try_into().unwrap());
        frame[4..8] == 17u32.to_le_bytes() && frame[8] == 4 && crc32fast::hash(&frame[4..]) == crc
    })
}

/// Waits (bounded: the test fails rather than hangs) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn put(n: u64) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch
        .put(format!("key{n:04}"), vec![b'a' + (n % 26) as u8; 150])
        .unwrap();
    batch
}

/// How the bytes of segment A rot.
#[derive(Debug, Clone, Copy)]
enum Rot {
    /// One flipped bit in A's last record: nothing valid follows it, the
    /// shape of an unfinished last append.
    FlipLastByte,
    /// A's last 200 bytes read back as zeros: the shape of a lost write
    /// (the records end "cleanly" before the end B recorded).
    ZeroTail,
}

/// A database on a fresh simulated disk whose flushes are held (bind the
/// hook after the database: see [`ReleaseOnDrop`]).
fn open_held(name: &str) -> (Database, ReleaseOnDrop, PowerLossFs, PathBuf, Options) {
    let dir = unique_dir(name);
    let fs = fresh_disk(&dir);
    let hook = HoldFlush::default();
    let options = Options::default()
        .memtable_size(LIMIT as usize)
        .wal_size_limit(u64::MAX)
        .fs(Arc::new(WrappedFs::new(fs.shared(), hook.clone())));
    let db = Database::open_with(&dir, options.clone()).unwrap();
    (db, ReleaseOnDrop(hook), fs, dir, options)
}

/// Unsynced puts until the memtable was sealed once (A); returns the
/// next put number.
fn seal_a(db: &Database) -> u64 {
    let mut n = 0;
    while db.stats().immutable_memtables == 0 {
        db.write_with(put(n), WriteOptions::sync(false)).unwrap();
        n += 1;
        assert!(n < 1000, "the memtable size never sealed the memtable");
    }
    n
}

/// Kills the process under `db` (releasing the held flush, which then
/// fails), rots segment A as `rot` says, and reopens.
fn kill_rot_reopen(
    db: Database,
    hook: &HoldFlush,
    fs: &PowerLossFs,
    dir: &Path,
    rot: Rot,
) -> toondb_storage::Result<Database> {
    fs.kill();
    hook.release();
    let _ = db.close();
    drop(db);
    rot_and_reopen(hook, fs, dir, rot)
}

/// After a crash: rots segment A as `rot` says, and reopens.
fn rot_and_reopen(
    hook: &HoldFlush,
    fs: &PowerLossFs,
    dir: &Path,
    rot: Rot,
) -> toondb_storage::Result<Database> {
    fs.restart();

    let a = hook.wals.lock().unwrap()[0].clone();
    let mut bytes = fs.read(&a).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    match rot {
        Rot::FlipLastByte => bytes[end - 1] ^= 0x10,
        Rot::ZeroTail => bytes[end - 200..end].fill(0),
    }
    let mut file = fs.create(&a).unwrap();
    file.append(&bytes).unwrap();
    file.sync_data().unwrap();
    drop(file);
    Database::open_with(dir, Options::default().fs(fs.shared()))
}

/// Asserts the reopen failed with Corruption naming a WAL segment and an
/// offset; on success, says which acknowledged keys it lost.
fn assert_corruption(opened: toondb_storage::Result<Database>, acknowledged: &[String], ctx: &str) {
    match opened {
        Ok(db) => {
            let lost: Vec<_> = acknowledged
                .iter()
                .filter(|k| db.get(k.as_bytes()).unwrap().is_none())
                .collect();
            panic!(
                "{ctx}: the open succeeded (dropped tail: {:?}) and lost acknowledged \
                 writes {lost:?}",
                db.stats().recovery.dropped_tail
            );
        }
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Corruption, "{ctx}: {e}");
            assert!(e.message().contains("WAL segment"), "{ctx}: {e}");
            assert!(e.message().contains("at offset"), "{ctx}: {e}");
        }
    }
}

/// Seals A with unsynced puts, then writes `unsynced_after` unsynced puts
/// and one durable put into B, kills the process, rots A, and returns the
/// reopen's result with the keys acknowledged after the seal.
fn durable_write_after_sealed_sync_then_rot(
    rot: Rot,
    unsynced_after: u64,
) -> (toondb_storage::Result<Database>, Vec<String>, PowerLossFs) {
    let (db, hook, fs, dir, _) = open_held("wal-bitrot");
    let mut n = seal_a(&db);
    let mut after_seal = Vec::new();
    for _ in 0..unsynced_after {
        db.write_with(put(n), WriteOptions::sync(false)).unwrap();
        after_seal.push(format!("key{n:04}"));
        n += 1;
    }
    // Waits for A's background sync (rule 1), then syncs B.
    db.write_with(put(n), WriteOptions::sync(true)).unwrap();
    after_seal.push(format!("key{n:04}"));
    assert_eq!(db.stats().flushes, 0, "the flush must still be held");
    let opened = kill_rot_reopen(db, &hook, &fs, &dir, rot);
    (opened, after_seal, fs)
}

#[test]
fn rot_in_an_older_segment_synced_before_a_durable_write_is_corruption() {
    for rot in [Rot::FlipLastByte, Rot::ZeroTail] {
        for unsynced_after in [0, 3] {
            let (opened, acknowledged, _fs) =
                durable_write_after_sealed_sync_then_rot(rot, unsynced_after);
            assert_corruption(
                opened,
                &acknowledged,
                &format!("{rot:?}, {unsynced_after} unsynced"),
            );
        }
    }
}

/// A handle closing while another stays open promises that everything
/// acknowledged is durable, A's unsynced writes included: it waits for A's
/// sync, records it in B (unless a group already did) and marks B synced.
/// (The seal happens as a commit starts, so B holds that commit's group
/// here; see the next test for a B that holds only its header.)
#[test]
fn rot_in_an_older_segment_after_a_handle_close_is_corruption() {
    for rot in [Rot::FlipLastByte, Rot::ZeroTail] {
        let (db, hook, fs, dir, options) = open_held("wal-bitrot-close");
        let n = seal_a(&db);
        let acknowledged: Vec<String> = (0..n).map(|i| format!("key{i:04}")).collect();
        Database::open_with(&dir, options).unwrap().close().unwrap();
        let opened = kill_rot_reopen(db, &hook, &fs, &dir, rot);
        assert_corruption(opened, &acknowledged, &format!("{rot:?}"));
    }
}

/// A flush seals A without writing into B (its table creation is held, so
/// A stays needed); then a handle closes while another stays open. B held
/// only its header, so the close wrote no sync point into it, and nothing
/// recorded that A, whose writes the close promised durable, was synced:
/// bit rot at A's end was dropped as a lost tail. Now the close records
/// A's finished sync in a group of its own.
#[test]
fn rot_after_a_flush_seal_and_a_handle_close_with_an_empty_newer_segment() {
    for rot in [Rot::FlipLastByte, Rot::ZeroTail] {
        let (db, hook, fs, dir, options) = open_held("wal-bitrot-flush");
        let acknowledged: Vec<String> = (0..12).map(|i| format!("key{i:04}")).collect();
        for n in 0..12 {
            db.write_with(put(n), WriteOptions::sync(false)).unwrap();
        }
        assert_eq!(hook.wals.lock().unwrap().len(), 1, "no seal yet");
        let opened = std::thread::scope(|scope| {
            // A failure in here must release the flush before the scope
            // waits for the flusher.
            let _release = ReleaseOnDrop(hook.clone());
            // Seals A, waits for its sync, then waits for the held flush
            // (which fails once the process is killed).
            let flusher = scope.spawn(|| db.flush());
            wait_until("the flush sealed A", || {
                hook.wals.lock().unwrap().len() >= 2
            });
            // Runs under the committer's lock, after the seal (and its
            // wait for A's sync) finished.
            Database::open_with(&dir, options).unwrap().close().unwrap();
            fs.kill();
            hook.release();
            let _ = db.close(); // wakes the flusher: the engine is closed
            assert!(flusher.join().unwrap().is_err());
            rot_and_reopen(&hook, &fs, &dir, rot)
        });
        drop(db);
        assert_corruption(opened, &acknowledged, &format!("{rot:?}"));
    }
}

/// Only unsynced writes follow A's finished sync: the committer notices
/// the finished sync without waiting and records it in the next group it
/// writes, so bit rot in A is corruption rather than a lost tail that
/// would drop those acknowledged writes (they survive a process crash).
#[test]
fn rot_after_unsynced_writes_that_followed_the_sync_is_corruption() {
    let (db, hook, fs, dir, _) = open_held("wal-bitrot-unsynced");
    let first = seal_a(&db);
    let (a, b) = {
        let wals = hook.wals.lock().unwrap();
        (wals[0].clone(), wals[1].clone())
    };
    // A's writer is dropped by its sync thread right after the sync; the
    // thread then only has to exit, so a few groups see it finished.
    wait_until("A's sync thread dropped its writer", || {
        hook.closed.lock().unwrap().contains(&a)
    });
    // At most 8 puts: B stays well under the memtable size, so no second seal
    // waits for the held flush (that would hang instead of failing).
    let mut acknowledged = Vec::new();
    for (attempt, n) in (first..first + 8).enumerate() {
        // Backs off (5 ms .. 640 ms, 1.3 s in all) for a slow machine.
        std::thread::sleep(std::time::Duration::from_millis(5 << attempt));
        db.write_with(put(n), WriteOptions::sync(false)).unwrap();
        acknowledged.push(format!("key{n:04}"));
        if holds_segment_synced(&fs.read(&b).unwrap()) {
            break;
        }
    }
    assert!(
        holds_segment_synced(&fs.read(&b).unwrap()),
        "no unsynced group recorded A's finished sync"
    );
    let opened = kill_rot_reopen(db, &hook, &fs, &dir, Rot::FlipLastByte);
    assert_corruption(opened, &acknowledged, "unsynced writes after the sync");
}
