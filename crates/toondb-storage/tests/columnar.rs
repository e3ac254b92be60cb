//! Columnar tables: round trips of every type, schema errors, projection,
//! filters, transactions (atomic with key-value writes), reopen, compaction
//! of deleted rows, drop, the reserved key range and per-column counters.

use std::ops::Bound;

use toondb_storage::{
    ColumnDef, ColumnType, Database, ErrorKind, Filter, Options, Result, ScanOptions, Schema,
    Table, TableScanOptions, Value, WriteBatch,
};

fn schema() -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("ts", ColumnType::I64),
            ColumnDef::new("user", ColumnType::Str),
            ColumnDef::new("amount", ColumnType::F64),
            ColumnDef::new("ok", ColumnType::Bool),
            ColumnDef::new("payload", ColumnType::Bytes).nullable(),
        ],
        "id",
    )
}

fn row(i: i64) -> Vec<Value> {
    vec![
        Value::I64(i),
        Value::I64(1_000 + i),
        Value::Str(format!("u{}", i % 3)),
        Value::F64(i as f64 * 1.5),
        Value::Bool(i % 2 == 0),
        if i % 4 == 0 {
            Value::Null
        } else {
            Value::Bytes(vec![i as u8; 3])
        },
    ]
}

fn scan_all(t: &Table, db: &Database, o: TableScanOptions) -> Result<Vec<Vec<Value>>> {
    let mut s = t.scan(db, o)?;
    let mut rows = Vec::new();
    loop {
        let b = s.next_batch(7)?;
        if b.is_empty() {
            return Ok(rows);
        }
        for r in 0..b.len() {
            rows.push(b.columns.iter().map(|c| c[r].clone()).collect());
        }
    }
}

#[test]
fn every_type_round_trips() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    let rows = vec![
        vec![
            Value::I64(i64::MAX),
            Value::I64((1 << 53) + 1),
            Value::Str(String::new()),
            Value::F64(f64::NAN),
            Value::Bool(true),
            Value::Bytes(vec![]),
        ],
        vec![
            Value::I64(i64::MIN),
            Value::I64(-1),
            Value::Str("ünïcode".into()),
            Value::F64(-0.0),
            Value::Bool(false),
            Value::Null,
        ],
    ];
    t.insert(&db, &rows)?;
    let got = t.get(&db, &Value::I64(i64::MAX), None)?.unwrap();
    assert_eq!(got[1].1, Value::I64((1 << 53) + 1));
    assert_eq!(got[2].1, Value::Str(String::new()));
    assert!(matches!(got[3].1, Value::F64(x) if x.is_nan()));
    assert_eq!(got[5].1, Value::Bytes(vec![]));
    let got = t.get(&db, &Value::I64(i64::MIN), None)?.unwrap();
    assert!(matches!(got[3].1, Value::F64(x) if x == 0.0 && x.is_sign_negative()));
    assert_eq!(got[5].1, Value::Null);
    // Scan order is primary-key order, negative first.
    let all = scan_all(&t, &db, TableScanOptions::default())?;
    assert_eq!(all[0][0], Value::I64(i64::MIN));
    assert_eq!(all[1][0], Value::I64(i64::MAX));
    assert_eq!(t.get(&db, &Value::I64(5), None)?, None);
    // String primary keys.
    let s = db.create_table(
        "kv",
        Schema::new(
            vec![
                ColumnDef::new("k", ColumnType::Str),
                ColumnDef::new("v", ColumnType::F64),
            ],
            "k",
        ),
    )?;
    s.upsert(
        &db,
        &[
            vec!["b".into(), 2.0.into()],
            vec!["a".into(), 1.0.into()],
            vec!["".into(), 0.5.into()],
        ],
    )?;
    let keys: Vec<Value> = scan_all(&s, &db, TableScanOptions::default().columns(&["k"]))?
        .into_iter()
        .map(|mut r| r.remove(0))
        .collect();
    assert_eq!(keys, vec!["".into(), "a".into(), "b".into()]);
    Ok(())
}

#[test]
fn schema_errors_name_row_and_column_and_apply_nothing() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    let err = |r: Result<()>| r.unwrap_err();
    let mut bad = vec![row(1), row(2)];
    bad[1][3] = Value::Str("x".into());
    let e = err(t.insert(&db, &bad));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(
        e.message().contains("row 1") && e.message().contains("amount"),
        "{e}"
    );
    let mut bad = vec![row(1), row(2)];
    bad[1][2] = Value::Null;
    let e = err(t.upsert(&db, &bad));
    assert!(
        e.message().contains("row 1")
            && e.message().contains("user")
            && e.message().contains("null"),
        "{e}"
    );
    // Missing and extra columns, by name.
    let named = |i: i64| -> Vec<(String, Value)> {
        schema()
            .columns
            .iter()
            .map(|c| c.name.clone())
            .zip(row(i))
            .collect()
    };
    let mut missing = vec![named(1)];
    missing[0].retain(|(n, _)| n != "ts");
    let e = t.order_rows(&missing).unwrap_err();
    assert!(
        e.message().contains("row 0") && e.message().contains("\"ts\": missing"),
        "{e}"
    );
    let mut extra = vec![named(1), named(2)];
    extra[1].push(("nope".into(), Value::I64(1)));
    let e = t.order_rows(&extra).unwrap_err();
    assert!(
        e.message().contains("row 1") && e.message().contains("nope"),
        "{e}"
    );
    assert!(scan_all(&t, &db, TableScanOptions::default())?.is_empty());
    // Insert on an existing key fails whole.
    t.insert(&db, &[row(1)])?;
    let e = err(t.insert(&db, &[row(2), row(1)]));
    assert!(
        e.message().contains("row 1") && e.message().contains("already exists"),
        "{e}"
    );
    assert_eq!(scan_all(&t, &db, TableScanOptions::default())?.len(), 1);
    let e = err(t.insert(&db, &[row(3), row(3)]));
    assert!(e.message().contains("twice"), "{e}");
    // Bad schemas and names.
    for s in [
        Schema::new(vec![ColumnDef::new("a", ColumnType::F64)], "a"),
        Schema::new(vec![ColumnDef::new("a", ColumnType::I64)], "b"),
        Schema::new(vec![ColumnDef::new("a", ColumnType::I64).nullable()], "a"),
        Schema::new(
            vec![
                ColumnDef::new("a", ColumnType::I64),
                ColumnDef::new("a", ColumnType::I64),
            ],
            "a",
        ),
    ] {
        assert_eq!(
            db.create_table("x", s).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
    assert_eq!(
        db.create_table("events", schema()).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(db.table("missing").unwrap_err().kind(), ErrorKind::NotFound);
    Ok(())
}

#[test]
fn projection_filter_bounds_reverse_limit() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    t.upsert(&db, &(0..100).map(row).collect::<Vec<_>>())?;
    let mut s = t.scan(&db, TableScanOptions::default().columns(&["amount", "id"]))?;
    assert_eq!(s.columns(), vec!["amount", "id"]);
    let b = s.next_batch(1000)?;
    assert_eq!(b.names, vec!["amount", "id"]);
    assert_eq!(b.len(), 100);
    assert_eq!(b.columns[0][10], Value::F64(15.0));
    assert_eq!(b.columns[1][10], Value::I64(10));
    let got = scan_all(
        &t,
        &db,
        TableScanOptions::default()
            .columns(&["id"])
            .lower(Value::I64(10), false)
            .upper(Value::I64(20), true)
            .reverse(true)
            .limit(3),
    )?;
    assert_eq!(
        got,
        vec![
            vec![Value::I64(20)],
            vec![Value::I64(19)],
            vec![Value::I64(18)]
        ]
    );
    // Filter on amount >= 120 (ids 80..99), reading user only for matches.
    let before = db.table_stats()?;
    let got = scan_all(
        &t,
        &db,
        TableScanOptions::default()
            .columns(&["id", "user"])
            .filter(Filter::on("amount").gte(Value::F64(120.0))),
    )?;
    assert_eq!(got.len(), 20);
    assert_eq!(got[0], vec![Value::I64(80), Value::Str("u2".into())]);
    let after = db.table_stats()?;
    let col = |s: &Vec<toondb_storage::TableStats>, n: &str| {
        s[0].columns
            .iter()
            .find(|c| c.name == n)
            .unwrap()
            .cells_read
    };
    assert_eq!(col(&after, "amount") - col(&before, "amount"), 100);
    assert_eq!(col(&after, "user") - col(&before, "user"), 20);
    assert_eq!(col(&after, "payload"), col(&before, "payload"));
    // Nulls never match a filter; eq works on bools.
    let got = scan_all(
        &t,
        &db,
        TableScanOptions::default()
            .columns(&["id"])
            .filter(Filter::on("ok").eq(Value::Bool(true)))
            .limit(2),
    )?;
    assert_eq!(got, vec![vec![Value::I64(0)], vec![Value::I64(2)]]);
    assert_eq!(
        t.get(&db, &Value::I64(7), Some(&["ok", "ts"]))?,
        Some(vec![
            ("ok".into(), Value::Bool(false)),
            ("ts".into(), Value::I64(1007))
        ])
    );
    assert_eq!(
        t.scan(&db, TableScanOptions::default().columns(&["nope"]))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::InvalidArgument
    );
    Ok(())
}

#[test]
fn projection_reads_only_the_asked_columns_bytes() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let cols: Vec<ColumnDef> = std::iter::once(ColumnDef::new("id", ColumnType::I64))
        .chain((0..5).map(|i| ColumnDef::new(format!("c{i}"), ColumnType::F64)))
        .collect();
    let t = db.create_table("wide", Schema::new(cols, "id"))?;
    let rows: Vec<Vec<Value>> = (0..20_000)
        .map(|i| {
            std::iter::once(Value::I64(i))
                .chain((0..5).map(|c| Value::F64((i * c) as f64)))
                .collect()
        })
        .collect();
    for chunk in rows.chunks(5000) {
        t.upsert(&db, chunk)?;
    }
    db.flush()?;
    db.compact()?;
    let measure = |cols: &[&str]| -> Result<u64> {
        let before = db.stats().table_bytes_read;
        let got = scan_all(&t, &db, TableScanOptions::default().columns(cols))?;
        assert_eq!(got.len(), 20_000);
        Ok(db.stats().table_bytes_read - before)
    };
    let one = measure(&["c0"])?;
    let five = measure(&["c0", "c1", "c2", "c3", "c4"])?;
    assert!(
        one * 4 < five,
        "1 column read {one} bytes, 5 columns {five}"
    );
    Ok(())
}

#[test]
fn transaction_writes_tables_and_keys_atomically() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    let txn = db.transaction()?;
    t.insert_in(&txn, &[row(1), row(2)])?;
    txn.put("plain", b"v")?;
    // The transaction sees its own rows; others do not.
    let b = t
        .scan(&txn, TableScanOptions::default().columns(&["id"]))?
        .next_batch(10)?;
    assert_eq!(b.len(), 2);
    assert!(t.get(&db, &Value::I64(1), None)?.is_none());
    txn.rollback()?;
    assert!(t.get(&db, &Value::I64(1), None)?.is_none());
    assert_eq!(db.get("plain")?, None);

    let txn = db.transaction()?;
    t.insert_in(&txn, &[row(1)])?;
    t.delete_in(&txn, &[Value::I64(1)])?;
    t.upsert_in(&txn, &[row(2)])?;
    txn.put("plain", b"v")?;
    let snap = db.snapshot()?;
    txn.commit()?;
    assert!(t.get(&db, &Value::I64(1), None)?.is_none());
    assert!(t.get(&db, &Value::I64(2), None)?.is_some());
    assert_eq!(db.get("plain")?.as_deref(), Some(&b"v"[..]));
    // The snapshot from before the commit sees nothing of it.
    assert!(t.get(&snap, &Value::I64(2), None)?.is_none());
    assert!(t
        .scan(&snap, TableScanOptions::default())?
        .next_batch(10)?
        .is_empty());

    // Two transactions inserting the same key: the second conflicts.
    let a = db.transaction()?;
    let b = db.transaction()?;
    t.insert_in(&a, &[row(9)])?;
    t.insert_in(&b, &[row(9)])?;
    a.commit()?;
    assert_eq!(b.commit().unwrap_err().kind(), ErrorKind::Conflict);
    Ok(())
}

#[test]
fn tables_survive_reopen_and_drop_removes_data() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Database::open(dir.path())?;
        let t = db.create_table("events", schema())?;
        t.upsert(&db, &[row(1), row(2)])?;
        db.create_table("other", schema())?;
        db.close()?;
    }
    let db = Database::open(dir.path())?;
    let names: Vec<String> = db.tables()?.iter().map(|t| t.name().to_string()).collect();
    assert_eq!(names, vec!["events", "other"]);
    let t = db.table("events")?;
    assert_eq!(t.schema(), &schema());
    assert_eq!(
        t.get(&db, &Value::I64(2), Some(&["ts"]))?,
        Some(vec![("ts".into(), Value::I64(1002))])
    );
    db.drop_table("events")?;
    assert_eq!(db.table("events").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        t.upsert(&db, &[row(3)]).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // A new table of the same name starts empty.
    let t2 = db.create_table("events", schema())?;
    assert!(t2.id() != t.id());
    assert!(t2
        .scan(&db, TableScanOptions::default())?
        .next_batch(10)?
        .is_empty());
    Ok(())
}

#[test]
fn compaction_drops_deleted_rows() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default())?;
    let t = db.create_table("events", schema())?;
    let rows: Vec<Vec<Value>> = (0..20_000).map(row).collect();
    for c in rows.chunks(4000) {
        t.upsert(&db, c)?;
    }
    db.flush()?;
    db.compact()?;
    let full = db.stats().table_bytes;
    let pks: Vec<Value> = (0..20_000)
        .filter(|i| i % 10 != 0)
        .map(Value::I64)
        .collect();
    t.delete(&db, &pks)?;
    db.flush()?;
    db.compact()?;
    let after = db.stats().table_bytes;
    assert!(after * 4 < full, "table bytes {full} -> {after}");
    assert_eq!(
        scan_all(&t, &db, TableScanOptions::default().columns(&["id"]))?.len(),
        2000
    );
    Ok(())
}

#[test]
fn reserved_keys_are_rejected_and_hidden() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    t.upsert(&db, &[row(1)])?;
    db.put(b"\xff", b"1")?;
    db.put(b"\xff\x00", b"2")?;
    db.put(b"\xff\x00\x02", b"3")?;
    db.put(b"a", b"0")?;
    let reserved = b"\xff\x00\x01x";
    assert_eq!(
        db.put(reserved, b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        db.delete(reserved).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        WriteBatch::new().put(reserved, b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let txn = db.transaction()?;
    assert_eq!(
        txn.put(reserved, b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    t.upsert_in(&txn, &[row(2)])?;
    let want: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"\xff".to_vec(),
        b"\xff\x00".to_vec(),
        b"\xff\x00\x02".to_vec(),
    ];
    assert_eq!(keys(Box::new(db.iter(ScanOptions::default())?)), want);
    assert_eq!(keys(Box::new(txn.iter(ScanOptions::default())?)), want);
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(
        keys(Box::new(db.iter(ScanOptions::default().reverse(true))?)),
        rev
    );
    assert_eq!(
        keys(Box::new(
            db.snapshot()?.iter(ScanOptions::default().reverse(true))?
        )),
        rev
    );
    let bounded = ScanOptions::default().lower(Bound::Included(b"\xff\x00".to_vec()));
    assert_eq!(
        keys(Box::new(db.iter(bounded.limit(2))?)),
        want[2..].to_vec()
    );
    // Small batches across the jump.
    let mut s = db.scan(ScanOptions::default())?;
    let mut n = 0;
    loop {
        let b = s.next_batch(1, usize::MAX)?;
        if b.is_empty() {
            break;
        }
        n += b.len();
    }
    assert_eq!(n, 4);
    Ok(())
}

/// Point reads of a key in the reserved range fail like writes do (they
/// would otherwise return a raw cell or catalog entry); keys just outside
/// it read normally.
#[test]
fn plain_point_reads_of_reserved_keys_are_rejected() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    t.upsert(&db, &[row(1)])?;
    db.put(b"\xff\x00", b"below")?;
    db.put(b"\xff\x00\x02", b"above")?;
    // The catalog entry of "events" exists under the reserved prefix.
    let catalog = b"\xff\x00\x01Cevents".to_vec();
    let invalid = |r: Result<Option<Vec<u8>>>| {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        assert!(e.message().contains("reserved"), "{e}");
    };
    for key in [catalog.clone(), b"\xff\x00\x01".to_vec()] {
        invalid(db.get(&key));
        invalid(db.get_with(&key, |v| v.map(<[u8]>::to_vec)));
        let many = db.get_many(&[b"\xff\x00".to_vec(), key.clone()]);
        assert_eq!(many.unwrap_err().kind(), ErrorKind::InvalidArgument);
        invalid(db.snapshot()?.get(&key));
        let txn = db.transaction()?;
        t.upsert_in(&txn, &[row(2)])?;
        invalid(txn.get(&key));
        txn.rollback()?;
    }
    assert_eq!(db.get(b"\xff\x00")?, Some(b"below".to_vec()));
    assert_eq!(db.get(b"\xff\x00\x02")?, Some(b"above".to_vec()));
    assert_eq!(
        db.snapshot()?.get(b"\xff\x00\x02")?,
        Some(b"above".to_vec())
    );
    // The table itself still reads its cells.
    assert!(t.get(&db, &Value::I64(1), None)?.is_some());
    Ok(())
}

fn keys(it: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>>) -> Vec<Vec<u8>> {
    it.map(|r| r.unwrap().0).collect()
}

#[test]
fn transaction_scans_see_own_writes_and_serializable_scans_conflict() -> Result<()> {
    use toondb_storage::{Isolation, TransactionOptions};
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    t.upsert(&db, &(0..10).map(row).collect::<Vec<_>>())?;
    let txn = db.transaction()?;
    t.delete_in(&txn, &[Value::I64(9)])?;
    t.upsert_in(&txn, &[row(20)])?;
    let mut s = t.scan(
        &txn,
        TableScanOptions::default()
            .columns(&["id", "ts"])
            .filter(Filter::on("amount").gte(Value::F64(10.0))),
    )?;
    let b = s.next_batch(100)?;
    // amount = 1.5 * id >= 10: ids 7, 8 (9 deleted), 20 (own write).
    assert_eq!(
        b.columns[0],
        vec![Value::I64(7), Value::I64(8), Value::I64(20)]
    );
    assert_eq!(b.columns[1][2], Value::I64(1020));
    drop(s);
    txn.rollback()?;

    // A serializable transaction that scanned the table conflicts with a
    // concurrent write to it.
    let txn =
        db.transaction_with(TransactionOptions::default().isolation(Isolation::Serializable))?;
    t.scan(&txn, TableScanOptions::default().columns(&["amount"]))?
        .next_batch(100)?;
    txn.put("summary", b"x")?;
    t.upsert(&db, &[row(3)])?;
    assert_eq!(txn.commit().unwrap_err().kind(), ErrorKind::Conflict);
    Ok(())
}
