//! Bit rot in an older WAL segment whose background sync had finished
//! (WAL format 3 and later, docs/format-wal.md *New segments*) must never
//! be replayed as an unsynced lost tail: that rule cuts the older segment
//! and empties every newer one, which here would silently drop writes
//! acknowledged as durable after the sync. The open must fail with
//! Corruption naming the segment and offset instead.
//!
//! Setup on a [`PowerLossFs`]: a small WAL bound seals the first segment
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

/// WAL bound: small, so a few commits seal the memtable.
const LIMIT: u64 = 4096;

/// Holds every table creation until released (the flush of the sealed
/// memtable, which would make segment A redundant), and remembers the
/// WAL segments created, in order (the first is A).
#[derive(Clone, Default)]
struct HoldFlush {
    open: Arc<(Mutex<bool>, Condvar)>,
    wals: Arc<Mutex<Vec<PathBuf>>>,
}

impl HoldFlush {
    fn release(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
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
        }
        file
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

/// A database on a fresh simulated disk whose flushes are held.
fn open_held(name: &str) -> (Database, HoldFlush, PowerLossFs, PathBuf, Options) {
    let dir = unique_dir(name);
    let fs = fresh_disk(&dir);
    let hook = HoldFlush::default();
    let options = Options::default()
        .memtable_size(1 << 20)
        .wal_size_limit(LIMIT)
        .fs(Arc::new(WrappedFs::new(fs.shared(), hook.clone())));
    let db = Database::open_with(&dir, options.clone()).unwrap();
    (db, hook, fs, dir, options)
}

/// Unsynced puts until the memtable was sealed once (A); returns the
/// next put number.
fn seal_a(db: &Database) -> u64 {
    let mut n = 0;
    while db.stats().immutable_memtables == 0 {
        db.write_with(put(n), WriteOptions::sync(false)).unwrap();
        n += 1;
        assert!(n < 1000, "the WAL limit never sealed the memtable");
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
/// here; a B holding only its header at close is covered by reading:
/// `Committer::sync_and_mark` writes the pending records in a group of
/// their own.)
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
