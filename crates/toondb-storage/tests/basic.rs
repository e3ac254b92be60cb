//! End-to-end behaviour of the Rust API: reads, writes, batches, scans,
//! flush and reopen, sharing and locking.

use toondb_storage::{Database, ErrorKind, Options, ScanOptions, WriteBatch};

fn collect(db: &Database, options: ScanOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iter(options).unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn put_get_delete_survive_flush_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path()).unwrap();
        db.put("users/1", b"Alice").unwrap();
        db.put("users/2", b"Bob").unwrap();
        db.delete("users/2").unwrap();
        assert_eq!(db.get("users/1").unwrap().as_deref(), Some(&b"Alice"[..]));
        assert_eq!(db.get("users/2").unwrap(), None);
        db.flush().unwrap();
        assert_eq!(db.stats().tables, 1);
        db.put("users/3", b"Carol").unwrap();
        assert_eq!(db.get("users/1").unwrap().as_deref(), Some(&b"Alice"[..]));
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.get("users/1").unwrap().as_deref(), Some(&b"Alice"[..]));
    assert_eq!(db.get("users/2").unwrap(), None);
    assert_eq!(db.get("users/3").unwrap().as_deref(), Some(&b"Carol"[..]));
    assert_eq!(db.stats().recovery.records, 1);
    let all = collect(&db, ScanOptions::default());
    assert_eq!(all.len(), 2);
}

#[test]
fn scans_merge_memtable_and_tables_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for i in 0..100u32 {
        db.put(format!("k{i:03}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    for i in (0..100u32).step_by(2) {
        db.put(format!("k{i:03}"), format!("w{i}")).unwrap();
    }
    for i in (0..100u32).step_by(5) {
        db.delete(format!("k{i:03}")).unwrap();
    }
    let fwd = collect(&db, ScanOptions::default());
    let expected: Vec<_> = (0..100u32)
        .filter(|i| i % 5 != 0)
        .map(|i| {
            let v = if i % 2 == 0 {
                format!("w{i}")
            } else {
                format!("v{i}")
            };
            (format!("k{i:03}").into_bytes(), v.into_bytes())
        })
        .collect();
    assert_eq!(fwd, expected);
    let mut rev = collect(&db, ScanOptions::default().reverse(true));
    rev.reverse();
    assert_eq!(rev, expected);
    let ranged = collect(&db, ScanOptions::range(&b"k010"[..]..&b"k014"[..]));
    assert_eq!(
        ranged.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"k011".to_vec(), b"k012".to_vec(), b"k013".to_vec()]
    );
    let prefixed = collect(&db, ScanOptions::prefix(b"k01").limit(3));
    assert_eq!(
        prefixed.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        vec![b"k011".to_vec(), b"k012".to_vec(), b"k013".to_vec()]
    );
}

#[test]
fn batches_are_atomic_and_last_write_in_a_batch_wins() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let mut b = WriteBatch::new();
    b.put("a", "1")
        .unwrap()
        .put("b", "2")
        .unwrap()
        .put("a", "3")
        .unwrap();
    b.delete("b").unwrap();
    db.write(b).unwrap();
    assert_eq!(db.get("a").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(db.get("b").unwrap(), None);
}

#[test]
fn second_open_in_process_shares_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let a = Database::open(dir.path()).unwrap();
    let b = Database::open(dir.path()).unwrap();
    a.put("k", "v").unwrap();
    assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    a.close().unwrap();
    assert_eq!(a.get("k").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(b.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    b.close().unwrap();
    let c = Database::open(dir.path()).unwrap();
    assert_eq!(c.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn bad_input_and_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(
        db.put("", "v").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        db.put(vec![1u8; 70_000], "v").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(db.get("").unwrap_err().kind(), ErrorKind::InvalidArgument);
    let err =
        Database::open_with(dir.path(), Options::default().error_if_exists(true)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let missing = dir.path().join("nope");
    let err =
        Database::open_with(&missing, Options::default().create_if_missing(false)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    db.close().unwrap();
    assert_eq!(db.put("k", "v").unwrap_err().kind(), ErrorKind::Closed);
    db.close().unwrap();
}

#[test]
fn small_memtables_rotate_flush_and_drop_old_wal_segments() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().memtable_size(16 << 10);
    {
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..5000u32 {
            db.put(format!("key{i:06}"), vec![b'x'; 100]).unwrap();
        }
        db.flush().unwrap();
        let s = db.stats();
        // Counted as flushes: background compaction merges the tables.
        assert!(s.flushes > 5, "{s:?}");
        assert_eq!(s.immutable_memtables, 0);
        db.close().unwrap();
    }
    let wal_files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".wal")
        })
        .count();
    assert!(
        wal_files <= 2,
        "old WAL segments were not deleted: {wal_files}"
    );
    let db = Database::open_with(dir.path(), options).unwrap();
    assert_eq!(db.stats().recovery.records, 0);
    for i in (0..5000u32).step_by(97) {
        assert_eq!(db.get(format!("key{i:06}")).unwrap().unwrap().len(), 100);
    }
    assert_eq!(collect(&db, ScanOptions::default()).len(), 5000);
}
