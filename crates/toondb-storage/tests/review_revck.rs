//! Review of the WAL checkpoint branch (`ckpt`): defects found by a
//! fresh-context review, each proved by a test here, and the probes that
//! found nothing (kept, since they pin down behaviour the branch promises).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toondb_storage::{Database, Options, Stats, WriteBatch};

const LIMIT: u64 = 64 << 10;

fn key(i: usize) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
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

/// A copy of the directory while the engine is open and idle: what a kill
/// leaves.
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

/// `flush_bytes_written` is "bytes of the table files those flushes wrote"
/// (index.d.ts `flushBytesWritten`), and `Stats::write_amplification` and
/// the Node `flush` event's `bytes` are computed from it. Checkpoint tables
/// are not flushes (`flushes` stays 0) and have their own counter, but
/// `write_table` counted their bytes as flushed too.
#[test]
fn checkpoint_tables_are_not_counted_as_flushed_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    load(&db, 0..3000, 1);
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 3, "{} checkpoints", s.checkpoints);
    assert!(s.checkpoint_bytes_written > 0);
    assert_eq!(s.flushes, 0);
    assert_eq!(
        s.flush_bytes_written, 0,
        "no flush ran, yet {} bytes are reported flushed (checkpoint tables: {} bytes)",
        s.flush_bytes_written, s.checkpoint_bytes_written
    );
    db.flush().unwrap();
    let s = wait_idle(&db);
    assert_eq!(s.flushes, 1);
    // One flush, one table: its bytes, nothing else.
    assert_eq!(s.flush_bytes_written, s.table_bytes);
    db.close().unwrap();
}
