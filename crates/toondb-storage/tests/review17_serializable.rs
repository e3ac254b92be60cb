//! Review 17: serializable range reads stay validated across compactions
//! that drop versions and tombstones.

use std::ops::Bound;

use toondb_storage::{Database, ErrorKind, Isolation, Options, ScanOptions, TransactionOptions};

#[test]
fn range_conflicts_survive_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path(),
        Options::default()
            .memtable_size(4 << 10)
            .l0_compaction_trigger(2),
    )
    .unwrap();
    for i in 0..200u32 {
        db.put(format!("a{i:03}"), b"x").unwrap();
    }
    db.compact().unwrap();
    let ser = TransactionOptions::default().isolation(Isolation::Serializable);
    // 1: a key in the range is deleted by someone else, then compacted.
    let t = db.transaction_with(ser).unwrap();
    let n = t
        .iter(ScanOptions::range(&b"a050"[..]..&b"a060"[..]))
        .unwrap()
        .count();
    assert_eq!(n, 10);
    db.delete("a055").unwrap();
    db.compact().unwrap();
    t.put("z", b"1").unwrap();
    assert_eq!(
        t.commit().unwrap_err().kind(),
        ErrorKind::Conflict,
        "deleted key in read range"
    );
    // 2: a key inserted into the range and deleted again, then compacted.
    let t = db.transaction_with(ser).unwrap();
    let _ = t
        .iter(ScanOptions::range(&b"a100"[..]..&b"a110"[..]))
        .unwrap()
        .count();
    db.put("a105x", b"new").unwrap();
    db.delete("a105x").unwrap();
    db.compact().unwrap();
    db.compact_range(Bound::Unbounded, Bound::Unbounded)
        .unwrap();
    t.put("z", b"2").unwrap();
    assert_eq!(
        t.commit().unwrap_err().kind(),
        ErrorKind::Conflict,
        "insert+delete in read range"
    );
    // 3: a point read of an absent key, then inserted and deleted.
    let t = db.transaction_with(ser).unwrap();
    assert_eq!(t.get("b1").unwrap(), None);
    db.put("b1", b"v").unwrap();
    db.delete("b1").unwrap();
    db.compact().unwrap();
    t.put("z", b"3").unwrap();
    assert_eq!(
        t.commit().unwrap_err().kind(),
        ErrorKind::Conflict,
        "point read of a key written since"
    );
}
