//! review-late: plain scans around the reserved (columnar) key range.

use std::collections::BTreeMap;
use std::ops::Bound;

use toondb_storage::{
    ColumnDef, ColumnType, Database, Options, Result, ScanOptions, Schema, Value,
};

fn edge_keys() -> Vec<Vec<u8>> {
    vec![
        b"a".to_vec(),
        b"\xfe\xff".to_vec(),
        b"\xff".to_vec(),
        b"\xff\x00".to_vec(),
        b"\xff\x00\x00".to_vec(),
        b"\xff\x00\x00\xff".to_vec(),
        b"\xff\x00\x00\xff\xff\xff".to_vec(),
        b"\xff\x00\x02".to_vec(),
        b"\xff\x00\x02\x00".to_vec(),
        b"\xff\x01".to_vec(),
        b"\xff\xff".to_vec(),
        b"\xff\xff\xff".to_vec(),
    ]
}

fn bounds() -> Vec<Bound<Vec<u8>>> {
    let mut v = vec![Bound::Unbounded];
    let mut pts: Vec<Vec<u8>> = edge_keys();
    pts.extend([
        b"\xff\x00\x01".to_vec(),
        b"\xff\x00\x01D".to_vec(),
        b"\xff\x00\x01\xff".to_vec(),
        b"\xff\x00\x01\xff\xff\xff\xff".to_vec(),
    ]);
    for p in pts {
        v.push(Bound::Included(p.clone()));
        v.push(Bound::Excluded(p));
    }
    v
}

fn in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    (match lo {
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
        Bound::Unbounded => true,
    }) && (match hi {
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
        Bound::Unbounded => true,
    })
}

fn setup(db: &Database, flush_between: bool) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let t = db
        .create_table(
            "t",
            Schema::new(
                vec![
                    ColumnDef::new("id", ColumnType::I64),
                    ColumnDef::new("x", ColumnType::I64),
                ],
                "id",
            ),
        )
        .unwrap();
    let rows: Vec<Vec<Value>> = (0..300i64)
        .map(|i| vec![Value::I64(i), Value::I64(i * 2)])
        .collect();
    t.insert(db, &rows).unwrap();
    let mut model = BTreeMap::new();
    for (i, k) in edge_keys().into_iter().enumerate() {
        let v = format!("v{i}").into_bytes();
        db.put(&k, &v).unwrap();
        model.insert(k, v);
        if flush_between && i % 4 == 0 {
            db.flush().unwrap();
        }
    }
    model
}

fn check(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for lo in bounds() {
        for hi in bounds() {
            for reverse in [false, true] {
                let mut expected: Vec<(Vec<u8>, Vec<u8>)> = model
                    .iter()
                    .filter(|(k, _)| in_range(k, &lo, &hi))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    expected.reverse();
                }
                for limit in [None, Some(1), Some(2), Some(5)] {
                    let mut o = ScanOptions::default()
                        .lower(lo.clone())
                        .upper(hi.clone())
                        .reverse(reverse);
                    if let Some(l) = limit {
                        o = o.limit(l);
                    }
                    let exp: Vec<_> = match limit {
                        Some(l) => expected.iter().take(l).cloned().collect(),
                        None => expected.clone(),
                    };
                    for batch in [1usize, 2, 3, 1000] {
                        let mut s = db.scan(o.clone()).unwrap();
                        let mut got = Vec::new();
                        loop {
                            let b = s.next_batch(batch, 1 << 20).unwrap();
                            if b.is_empty() {
                                break;
                            }
                            got.extend(b);
                        }
                        assert_eq!(
                            got, exp,
                            "db scan {lo:?}..{hi:?} rev={reverse} limit={limit:?} batch={batch}"
                        );
                    }
                    let txn = db.transaction().unwrap();
                    let got: Vec<_> = txn.iter(o.clone()).unwrap().collect::<Result<_>>().unwrap();
                    assert_eq!(
                        got, exp,
                        "txn scan {lo:?}..{hi:?} rev={reverse} limit={limit:?}"
                    );
                    txn.rollback().unwrap();
                }
            }
        }
    }
}

#[test]
fn review_late_plain_scans_around_reserved_range_memtable() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    let model = setup(&db, false);
    check(&db, &model);
}

#[test]
fn review_late_plain_scans_around_reserved_range_tables() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(dir.path(), options).unwrap();
    let model = setup(&db, true);
    db.flush().unwrap();
    check(&db, &model);
    db.compact().unwrap();
    check(&db, &model);
}

/// A transaction's own writes around the reserved range, merged with the
/// snapshot, with deletes of stored keys.
#[test]
fn review_late_txn_scan_own_writes_around_reserved_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    let mut model = setup(&db, false);
    let txn = db.transaction().unwrap();
    for k in [
        b"\xff\x00\x00\xfe".to_vec(),
        b"\xff\x00\x02\x01".to_vec(),
        b"\xff\x00".to_vec(),
    ] {
        txn.put(&k, b"own").unwrap();
        model.insert(k, b"own".to_vec());
    }
    txn.delete(b"\xff\x00\x02").unwrap();
    model.remove(&b"\xff\x00\x02"[..]);
    for reverse in [false, true] {
        for limit in [None, Some(1), Some(3), Some(7)] {
            let mut o = ScanOptions::default().reverse(reverse);
            if let Some(l) = limit {
                o = o.limit(l);
            }
            let mut exp: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            if reverse {
                exp.reverse();
            }
            if let Some(l) = limit {
                exp.truncate(l);
            }
            for batch in [1usize, 2, 1000] {
                let mut s = txn.scan(o.clone()).unwrap();
                let mut got = Vec::new();
                loop {
                    let b = s.next_batch(batch, 1 << 20).unwrap();
                    if b.is_empty() {
                        break;
                    }
                    got.extend(b);
                }
                assert_eq!(got, exp, "rev={reverse} limit={limit:?} batch={batch}");
            }
        }
    }
    txn.commit().unwrap();
    let got: Vec<_> = db
        .iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    let exp: Vec<_> = model.into_iter().collect();
    assert_eq!(got, exp);
}
