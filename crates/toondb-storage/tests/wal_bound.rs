//! `Options::wal_size_limit` bounds the WAL an open must replay after a
//! crash, whatever `memtable_size` is: once the live segment reaches the
//! limit the commit thread moves on to a new one and the old one is
//! checkpointed into a table and deleted, so a crash image taken when the
//! engine is idle holds at most the limit plus one commit group of WAL.
//! The memtable is not sealed for it (no flush, no table the reads see).
//! The control shows the same load without the limit replaying all of it,
//! so the bound is the option's doing.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toondb_storage::{Database, Options, Stats, WriteBatch};

const BATCHES: usize = 40;
const PER_BATCH: usize = 100;
const VALUE_LEN: usize = 1000;
const LIMIT: u64 = 256 << 10;

fn key(i: usize) -> String {
    format!("key{i:013}")
}

fn value(i: usize) -> Vec<u8> {
    let mut v = vec![(i % 251) as u8; VALUE_LEN];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    v
}

/// A copy of the directory's files: what a process kill leaves, since the
/// copy is taken with the engine still open (the last segment unsynced).
fn copy_dir(src: &Path) -> TempDir {
    let dst = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.path().join(entry.file_name())).unwrap();
        }
    }
    dst
}

fn wait_idle(db: &Database) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut idle = 0;
    while idle < 2 {
        let s = db.stats();
        assert!(s.background_error.is_none(), "{:?}", s.background_error);
        if s.immutable_memtables == 0 && !s.maintenance_busy {
            idle += 1;
        } else {
            idle = 0;
        }
        assert!(Instant::now() < deadline, "the engine never went idle");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Loads ~4 MB in batches into a database with a 64 MiB memtable, takes a
/// crash image once the engine is idle, and opens the image. Returns the
/// loading engine's stats and the WAL bytes the reopen replayed.
fn load_kill_reopen(options: Options) -> (Stats, u64) {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), options.memtable_size(64 << 20)).unwrap();
    for b in 0..BATCHES {
        let mut batch = WriteBatch::new();
        for i in b * PER_BATCH..(b + 1) * PER_BATCH {
            batch.put(key(i), value(i)).unwrap();
        }
        db.write(batch).unwrap();
    }
    wait_idle(&db);
    let stats = db.stats();
    let image = copy_dir(live.path());
    db.close().unwrap();

    let reopened = Database::open(image.path()).unwrap();
    let replayed = reopened.stats().recovery.bytes;
    for i in 0..BATCHES * PER_BATCH {
        assert_eq!(reopened.get(key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
    // The checkpoint tables are ordinary level-0 tables to the reopen.
    let tables = reopened.stats().levels[0].tables;
    assert!(tables >= stats.checkpoint_tables, "{tables} level-0 tables");
    reopened.close().unwrap();
    (stats, replayed)
}

#[test]
fn wal_size_limit_bounds_what_a_reopen_replays() {
    let one_batch = (PER_BATCH * (VALUE_LEN + 64)) as u64;
    let (stats, replayed) = load_kill_reopen(Options::default().wal_size_limit(LIMIT));
    let loaded = (BATCHES * PER_BATCH * VALUE_LEN) as u64;
    let checkpoints = stats.checkpoints;
    assert!(
        checkpoints >= loaded / (LIMIT + one_batch),
        "{checkpoints} checkpoints for {loaded} bytes with a {LIMIT}-byte WAL limit"
    );
    assert_eq!(stats.checkpoint_tables, checkpoints);
    assert_eq!(stats.checkpoint_errors, 0);
    // The memtable was never sealed: reads see one memtable and no table.
    assert_eq!((stats.flushes, stats.tables), (0, 0));
    assert!(
        replayed <= LIMIT + one_batch,
        "replayed {replayed} bytes, limit {LIMIT} + one batch {one_batch}"
    );
}

#[test]
fn without_the_limit_the_memtable_size_bounds_the_replay() {
    let off = Options::default().wal_size_limit(u64::MAX);
    let (stats, replayed) = load_kill_reopen(off);
    let loaded = (BATCHES * PER_BATCH * VALUE_LEN) as u64;
    assert_eq!((stats.flushes, stats.checkpoints), (0, 0));
    assert!(replayed >= loaded, "replayed {replayed} of {loaded} bytes");
}
