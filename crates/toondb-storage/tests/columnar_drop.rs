//! `drop_table` interrupted after its catalog commit (the WAL fails every
//! write after it, as a crash would stop them): the table is gone at once,
//! and the next open deletes its cells (the dropped-tables list), so their
//! space is freed instead of leaking forever.

mod support;

use support::pending_drop::{
    drop_interrupted_after_commit, noise, open_with_wal_budget, schema, settled_bytes,
};
use toondb_storage::{Database, ErrorKind, Value};

#[test]
fn a_drop_interrupted_after_its_catalog_commit_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (db, budget) = open_with_wal_budget(dir.path());
    let t = db.create_table("blobs", schema()).unwrap();
    let rows: Vec<Vec<Value>> = (0..4000)
        // Distinct, incompressible values: column chunks would store 256
        // distinct ones as a dictionary, and this test needs the bytes.
        .map(|i| vec![Value::I64(i), Value::Bytes(noise(i as u64, 500))])
        .collect();
    for chunk in rows.chunks(500) {
        t.upsert(&db, chunk).unwrap();
    }
    db.put(b"kept", b"yes").unwrap();
    let full = settled_bytes(&db);
    assert!(full > 1_000_000, "{full}");

    // The catalog commit is the one WAL write allowed; the cell deletes
    // after it fail.
    drop_interrupted_after_commit(&db, &budget, "blobs");
    assert_eq!(db.table("blobs").unwrap_err().kind(), ErrorKind::NotFound);
    let _ = db.close();
    drop(db);

    // Reopened on a healthy file system: the drop is finished.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.table("blobs").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(db.get(b"kept").unwrap(), Some(b"yes".to_vec()));
    let after = settled_bytes(&db);
    assert!(
        after * 20 < full,
        "the dropped table's cells were not deleted: {after} of {full} bytes remain"
    );
    // A new table of the same name is empty (it gets a new id).
    let t = db.create_table("blobs", schema()).unwrap();
    assert!(t.get(&db, &Value::I64(1), None).unwrap().is_none());
    db.close().unwrap();
    drop(db);

    // The list is empty now: another open has nothing to do and keeps the
    // new table.
    let db = Database::open(dir.path()).unwrap();
    assert!(db.table("blobs").is_ok());
    assert!(settled_bytes(&db) * 20 < full);
    db.close().unwrap();
}
