//! Column chunks: a model of the rows (a BTreeMap) against the table under
//! random upserts, deletes, inserts, chunkings, snapshots and reopens;
//! every type after chunking; transactions over chunked rows; deleted rows
//! leave the files; old cell-only databases stay readable.

use std::collections::BTreeMap;

use toondb_storage::{
    ColumnDef, ColumnType, Database, ErrorKind, Filter, Options, Result, Schema, Table,
    TableScanOptions, Value,
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

/// A small deterministic generator (no extra dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn row(pk: i64, version: u64) -> Vec<Value> {
    let v = version as i64;
    vec![
        Value::I64(pk),
        Value::I64(pk * 1_000_003 + v + (1 << 53)),
        Value::Str(format!("u{}", (pk + v) % 5)),
        match v % 7 {
            0 => Value::F64(f64::NAN),
            1 => Value::F64(-0.0),
            _ => Value::F64(pk as f64 * 0.5 - v as f64),
        },
        Value::Bool((pk + v) % 3 == 0),
        match (pk + v) % 4 {
            0 => Value::Null,
            1 => Value::Bytes(vec![]),
            _ => Value::Bytes(vec![(pk + v) as u8; ((pk + v) % 9) as usize]),
        },
    ]
}

type Model = BTreeMap<i64, Vec<Value>>;

/// Debug strings compare NaN and -0 by their representation.
fn show(rows: &[Vec<Value>]) -> Vec<String> {
    rows.iter().map(|r| format!("{r:?}")).collect()
}

fn scan_rows<S: toondb_storage::ReadSource + ?Sized>(
    t: &Table,
    src: &S,
    o: TableScanOptions,
    batch: usize,
) -> Result<Vec<Vec<Value>>> {
    let mut s = t.scan(src, o)?;
    let mut rows = Vec::new();
    loop {
        let b = s.next_batch(batch)?;
        if b.is_empty() {
            return Ok(rows);
        }
        for r in 0..b.len() {
            rows.push(b.columns.iter().map(|c| c[r].clone()).collect());
        }
    }
}

fn project(r: &[Value], cols: &[usize]) -> Vec<Value> {
    cols.iter().map(|&c| r[c].clone()).collect()
}

/// Checks full scans, bounded/reverse/limited/projected/filtered scans and
/// point reads of `src` against `model`.
fn check<S: toondb_storage::ReadSource + ?Sized>(
    t: &Table,
    src: &S,
    model: &Model,
    rng: &mut Rng,
) -> Result<()> {
    let all: Vec<Vec<Value>> = model.values().cloned().collect();
    assert_eq!(
        show(&scan_rows(
            t,
            src,
            TableScanOptions::default(),
            1 + rng.below(700) as usize
        )?),
        show(&all)
    );
    // Unbounded, without the pk (chunks read without their pk chunks when
    // no newer cell is there to merge).
    let reverse = rng.below(2) == 0;
    let mut want: Vec<Vec<Value>> = all.iter().map(|r| project(r, &[3, 2])).collect();
    if reverse {
        want.reverse();
    }
    let got = scan_rows(
        t,
        src,
        TableScanOptions::default()
            .columns(&["amount", "user"])
            .reverse(reverse),
        1 + rng.below(3000) as usize,
    )?;
    assert_eq!(show(&got), show(&want), "unbounded, reverse {reverse}");
    for _ in 0..4 {
        let lo = rng.below(3000) as i64 - 100;
        let hi = lo + rng.below(2500) as i64;
        let (lo_inc, hi_inc) = (rng.below(2) == 0, rng.below(2) == 0);
        let reverse = rng.below(2) == 0;
        let limit = (rng.below(3) == 0).then(|| rng.below(300) as usize);
        let names = [["amount", "id"], ["payload", "user"], ["ok", "ts"]][rng.below(3) as usize];
        let cols: Vec<usize> = names
            .iter()
            .map(|n| t.schema().column_index(n).unwrap())
            .collect();
        let mut o = TableScanOptions::default()
            .columns(&names)
            .lower(Value::I64(lo), lo_inc)
            .upper(Value::I64(hi), hi_inc)
            .reverse(reverse);
        if let Some(l) = limit {
            o = o.limit(l);
        }
        let mut want: Vec<Vec<Value>> = model
            .range(lo..=hi)
            .filter(|(k, _)| (lo_inc || **k != lo) && (hi_inc || **k != hi))
            .map(|(_, r)| project(r, &cols))
            .collect();
        if reverse {
            want.reverse();
        }
        if let Some(l) = limit {
            want.truncate(l);
        }
        let got = scan_rows(t, src, o, 1 + rng.below(300) as usize)?;
        assert_eq!(
            show(&got),
            show(&want),
            "{lo}..{hi} rev {reverse} {names:?}"
        );
    }
    // A filter on one column (rows fetched only where it matches).
    let bound = rng.below(1500) as f64;
    let want: Vec<Vec<Value>> = model
        .values()
        .filter(|r| matches!(r[3], Value::F64(x) if x.total_cmp(&bound).is_ge()))
        .map(|r| project(r, &[0, 5]))
        .collect();
    let got = scan_rows(
        t,
        src,
        TableScanOptions::default()
            .columns(&["id", "payload"])
            .filter(Filter::on("amount").gte(Value::F64(bound))),
        97,
    )?;
    assert_eq!(show(&got), show(&want));
    let want_ts: Vec<Vec<Value>> = model
        .values()
        .filter(|r| r[4] == Value::Bool(true))
        .map(|r| project(r, &[1]))
        .collect();
    let got = scan_rows(
        t,
        src,
        TableScanOptions::default()
            .columns(&["ts"])
            .filter(Filter::on("ok").eq(Value::Bool(true))),
        500,
    )?;
    assert_eq!(show(&got), show(&want_ts));
    for _ in 0..20 {
        let pk = rng.below(2200) as i64;
        let got = t.get(src, &Value::I64(pk), None)?;
        let want = model.get(&pk);
        assert_eq!(
            got.map(|r| format!("{:?}", r.into_iter().map(|(_, v)| v).collect::<Vec<_>>())),
            want.map(|r| format!("{r:?}")),
            "get {pk}"
        );
    }
    Ok(())
}

#[test]
fn model_random_writes_chunking_snapshots_reopen() -> Result<()> {
    for seed in [7u64, 1234567] {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open(dir.path())?;
        let mut t = db.create_table("events", schema())?;
        let mut model = Model::new();
        let mut rng = Rng(seed);
        let mut version = 0;
        // Snapshots with what the model was when they were taken.
        let mut snaps: Vec<(toondb_storage::Snapshot, Model)> = Vec::new();
        for step in 0..60 {
            match rng.below(10) {
                0..=3 => {
                    let n = 1 + rng.below(600);
                    let start = rng.below(2000) as i64;
                    let rows: Vec<Vec<Value>> = (0..n as i64)
                        .map(|i| {
                            version += 1;
                            row(start + i * (1 + (seed as i64 % 3)), version)
                        })
                        .filter(|r| matches!(r[0], Value::I64(k) if k < 2200))
                        .collect();
                    let mut seen = std::collections::HashSet::new();
                    let rows: Vec<_> = rows
                        .into_iter()
                        .filter(|r| seen.insert(format!("{:?}", r[0])))
                        .collect();
                    t.upsert(&db, &rows)?;
                    for r in rows {
                        if let Value::I64(k) = r[0] {
                            model.insert(k, r);
                        }
                    }
                }
                4 | 5 => {
                    let pks: Vec<i64> = (0..rng.below(300))
                        .map(|_| rng.below(2200) as i64)
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let vals: Vec<Value> = pks.iter().map(|&k| Value::I64(k)).collect();
                    t.delete(&db, &vals)?;
                    for k in pks {
                        model.remove(&k);
                    }
                }
                6 => {
                    // Insert: fails on an existing row (chunked or not),
                    // applying nothing.
                    let k = rng.below(2200) as i64;
                    version += 1;
                    let r = row(k, version);
                    let res = t.insert(&db, std::slice::from_ref(&r));
                    match model.entry(k) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            assert_eq!(res.unwrap_err().kind(), ErrorKind::InvalidArgument)
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            res?;
                            e.insert(r);
                        }
                    }
                }
                7 => match rng.below(3) {
                    0 => {
                        t.chunk(&db)?;
                    }
                    // Many pieces: cuts between and inside old chunks.
                    1 => {
                        let r = t.chunk_in_pieces(&db, 1 + rng.below(700) as usize)?;
                        assert!(!r.gave_up);
                    }
                    _ => db.compact()?,
                },
                8 => {
                    if snaps.len() < 3 {
                        snaps.push((db.snapshot()?, model.clone()));
                    } else {
                        snaps.remove(0);
                    }
                }
                _ => {
                    if rng.below(3) == 0 {
                        snaps.clear();
                        db.close()?;
                        db = Database::open(dir.path())?;
                        t = db.table("events")?;
                    }
                }
            }
            if step % 3 == 0 {
                check(&t, &db, &model, &mut rng)?;
                for (s, m) in &snaps {
                    check(&t, s, m, &mut rng)?;
                }
            }
        }
        t.chunk(&db)?;
        // Every cell is folded now: scans without the pk read no pk chunk.
        check(&t, &db, &model, &mut rng)?;
        let before = db.table_stats()?[0].columns[0].bytes_read;
        scan_rows(
            &t,
            &db,
            TableScanOptions::default().columns(&["amount"]),
            500,
        )?;
        assert_eq!(db.table_stats()?[0].columns[0].bytes_read, before);
        for (s, m) in &snaps {
            check(&t, s, m, &mut rng)?;
        }
    }
    Ok(())
}

#[test]
fn every_type_round_trips_after_chunking() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    let edge = vec![
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
            Value::I64(i64::MIN),
            Value::Str("ünïcode".into()),
            Value::F64(-0.0),
            Value::Bool(false),
            Value::Null,
        ],
        vec![
            Value::I64(0),
            Value::I64(-((1 << 53) + 3)),
            Value::Str("x".repeat(3000)),
            Value::F64(f64::from_bits(0x7ff8_0000_0000_1234)),
            Value::Bool(false),
            Value::Bytes(vec![0, 255, 0]),
        ],
    ];
    t.insert(&db, &edge)?;
    let mut rows: Vec<Vec<Value>> = (1..5000).map(|i| row(i, 3)).collect();
    rows.retain(|r| r[0] != Value::I64(0));
    t.upsert(&db, &rows)?;
    let report = t.chunk(&db)?;
    assert!(report.rows >= 5002 && report.chunks > 0, "{report:?}");
    let mut want: Vec<Vec<Value>> = edge.clone();
    want.extend(rows);
    want.sort_by_key(|r| match r[0] {
        Value::I64(k) => k,
        _ => 0,
    });
    let got = scan_rows(&t, &db, TableScanOptions::default(), 1000)?;
    assert_eq!(show(&got), show(&want));
    for r in &edge {
        let got = t.get(&db, &r[0], None)?.unwrap();
        let bits = |v: &Value| match v {
            Value::F64(x) => x.to_bits(),
            _ => 0,
        };
        assert_eq!(bits(&got[3].1), bits(&r[3]), "f64 bits survive");
        assert_eq!(
            format!("{:?}", got.iter().map(|c| &c.1).collect::<Vec<_>>()),
            format!("{:?}", r.iter().collect::<Vec<_>>())
        );
    }
    // Chunked: the cells are gone, so a second chunking has nothing to do.
    assert_eq!(t.chunk(&db)?.pieces, 0);
    Ok(())
}

#[test]
fn string_keys_and_updates_over_chunks() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "s",
        Schema::new(
            vec![
                ColumnDef::new("k", ColumnType::Str),
                ColumnDef::new("n", ColumnType::I64).nullable(),
            ],
            "k",
        ),
    )?;
    let rows: Vec<Vec<Value>> = (0..3000)
        .map(|i| vec![Value::Str(format!("key{i:05}")), Value::I64(i)])
        .collect();
    t.upsert(&db, &rows)?;
    t.chunk(&db)?;
    t.upsert(&db, &[vec![Value::Str("key00007".into()), Value::Null]])?;
    t.delete(&db, &[Value::Str("key00008".into())])?;
    t.upsert(&db, &[vec![Value::Str("a".into()), Value::I64(-1)]])?;
    let got = scan_rows(
        &t,
        &db,
        TableScanOptions::default()
            .upper(Value::Str("key00010".into()), false)
            .reverse(true),
        4,
    )?;
    let keys: Vec<String> = got
        .iter()
        .map(|r| match &r[0] {
            Value::Str(s) => s.clone(),
            _ => String::new(),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "key00009", "key00007", "key00006", "key00005", "key00004", "key00003", "key00002",
            "key00001", "key00000", "a"
        ]
    );
    assert_eq!(got[1][1], Value::Null);
    assert!(t.get(&db, &Value::Str("key00008".into()), None)?.is_none());
    Ok(())
}

#[test]
fn transactions_over_chunked_rows() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("events", schema())?;
    let rows: Vec<Vec<Value>> = (0..3000).map(|i| row(i, 1)).collect();
    t.upsert(&db, &rows)?;
    t.chunk(&db)?;

    // Rolled back whole: table writes and keys.
    let txn = db.transaction()?;
    t.delete_in(&txn, &[Value::I64(5)])?;
    t.upsert_in(&txn, &[row(6, 9)])?;
    txn.put("k", "v")?;
    // The transaction sees its own writes over the chunks.
    assert!(t.get(&txn, &Value::I64(5), None)?.is_none());
    let ids = scan_rows(
        &t,
        &txn,
        TableScanOptions::default()
            .columns(&["id"])
            .lower(Value::I64(4), true)
            .limit(3),
        2,
    )?;
    assert_eq!(
        show(&ids),
        show(&[
            vec![Value::I64(4)],
            vec![Value::I64(6)],
            vec![Value::I64(7)]
        ])
    );
    assert_eq!(
        format!("{:?}", t.get(&txn, &Value::I64(6), Some(&["ts"]))?),
        format!("{:?}", Some(vec![("ts".to_string(), row(6, 9)[1].clone())]))
    );
    // Insert sees chunked rows.
    assert_eq!(
        t.insert_in(&txn, &[row(7, 2)]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    txn.rollback()?;
    assert!(t.get(&db, &Value::I64(5), None)?.is_some());
    assert_eq!(db.get("k")?, None);
    assert_eq!(
        scan_rows(&t, &db, TableScanOptions::default(), 5000)?.len(),
        3000
    );

    // A chunking committed after a transaction's snapshot rewrote the
    // range the transaction writes: the transaction conflicts (as with any
    // other writer of those keys) and a retry succeeds.
    let txn = db.transaction()?;
    t.delete_in(&txn, &[Value::I64(10)])?;
    t.upsert(&db, &[row(11, 5)])?;
    assert_eq!(t.chunk(&db)?.pieces, 1);
    assert_eq!(txn.commit().unwrap_err().kind(), ErrorKind::Conflict);
    assert!(t.get(&db, &Value::I64(10), None)?.is_some());
    let txn = db.transaction()?;
    t.delete_in(&txn, &[Value::I64(10)])?;
    txn.commit()?;
    assert!(t.get(&db, &Value::I64(10), None)?.is_none());
    // The other way round: a write committed after a chunking's snapshot
    // makes the chunking retry, and nothing is lost.
    t.upsert(&db, &[row(12, 8)])?;
    let snap = db.snapshot()?;
    t.chunk(&db)?;
    assert!(t.get(&snap, &Value::I64(10), None)?.is_none());
    assert!(t.get(&db, &Value::I64(10), None)?.is_none());
    assert_eq!(
        format!("{:?}", t.get(&db, &Value::I64(11), None)?.unwrap()[1].1),
        format!("{:?}", row(11, 5)[1])
    );
    Ok(())
}

#[test]
fn compaction_drops_deleted_chunked_rows() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default())?;
    let t = db.create_table("events", schema())?;
    let rows: Vec<Vec<Value>> = (0..20_000).map(|i| row(i, i as u64)).collect();
    t.upsert(&db, &rows)?;
    db.compact()?;
    let full = db.stats().table_bytes;
    let pks: Vec<Value> = (0..20_000)
        .filter(|i| i % 10 != 0)
        .map(Value::I64)
        .collect();
    t.delete(&db, &pks)?;
    db.compact()?;
    let after = db.stats().table_bytes;
    assert!(after * 4 < full, "table bytes {full} -> {after}");
    assert_eq!(
        scan_rows(&t, &db, TableScanOptions::default(), 999)?.len(),
        2000
    );
    // Dropping a chunked table frees its chunks.
    db.drop_table("events")?;
    db.compact()?;
    assert!(
        db.stats().table_bytes < after / 4,
        "{}",
        db.stats().table_bytes
    );
    Ok(())
}

#[test]
fn chunked_table_survives_reopen_and_chunks_are_smaller() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let cells_only;
    {
        let db = Database::open(dir.path())?;
        let t = db.create_table("events", schema())?;
        t.upsert(&db, &(0..10_000).map(|i| row(i, 2)).collect::<Vec<_>>())?;
        db.flush()?;
        cells_only = db.stats().table_bytes;
        db.compact()?;
        assert!(
            db.stats().table_bytes * 2 < cells_only,
            "{} vs {cells_only}",
            db.stats().table_bytes
        );
        db.close()?;
    }
    let db = Database::open(dir.path())?;
    let t = db.table("events")?;
    let got = scan_rows(&t, &db, TableScanOptions::default(), 4096)?;
    assert_eq!(
        show(&got),
        show(&(0..10_000).map(|i| row(i, 2)).collect::<Vec<_>>())
    );
    Ok(())
}

#[test]
fn enough_written_rows_are_chunked_in_the_background() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "m",
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::I64),
                ColumnDef::new("v", ColumnType::F64),
            ],
            "id",
        ),
    )?;
    let n = 300_000i64;
    for start in (0..n).step_by(10_000) {
        let rows: Vec<Vec<Value>> = (start..start + 10_000)
            .map(|i| vec![Value::I64(i), Value::F64(i as f64)])
            .collect();
        t.upsert(&db, &rows)?;
        // Reads stay right while the chunker runs beside the writes.
        if start % 50_000 == 0 {
            let got = t.get(&db, &Value::I64(start / 2), None)?.unwrap();
            assert_eq!(got[1].1, Value::F64((start / 2) as f64));
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while db.table_stats()?[0].chunked_rows == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no automatic chunking"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let got = scan_rows(&t, &db, TableScanOptions::default().columns(&["v"]), 65_536)?;
    assert_eq!(got.len(), n as usize);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r[0] == Value::F64(i as f64)));
    // Without automatic compaction nothing runs in the background.
    let dir2 = tempfile::tempdir().unwrap();
    let mut options = Options::default();
    options.auto_compaction = false;
    let db2 = Database::open_with(dir2.path(), options)?;
    let t2 = db2.create_table("m", t.schema().clone())?;
    for start in (0..n).step_by(50_000) {
        let rows: Vec<Vec<Value>> = (start..start + 50_000)
            .map(|i| vec![Value::I64(i), Value::F64(0.5)])
            .collect();
        t2.upsert(&db2, &rows)?;
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(db2.table_stats()?[0].chunked_rows, 0);
    Ok(())
}
