//! Review of column chunks (issue 18): a model (BTreeMap) of a table with
//! string or extreme i64 primary keys against the table under upserts,
//! deletes, inserts, transactions (reads of their own writes), snapshots and
//! chunkings in small pieces, checked with bounds at chunk boundaries,
//! reverse, limit and filters (on the pk, on an i64 with nulls, on an f64
//! with NaN and -0); read-modify-write transactions racing a chunker (no
//! lost update); a damaged chunk is a corruption error.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use toondb_storage::{
    ColumnDef, ColumnType, Database, ErrorKind, Filter, ReadSource, Result, Schema, Table,
    TableScanOptions, Value,
};

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

fn schema(pk: ColumnType) -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", pk),
            ColumnDef::new("n", ColumnType::I64).nullable(),
            ColumnDef::new("s", ColumnType::Str),
            ColumnDef::new("f", ColumnType::F64),
        ],
        "id",
    )
}

/// Keys of one kind, in the model's order (= the table's order).
trait Keys {
    fn key(&self, rng: &mut Rng) -> Value;
}

/// Short strings over a tiny alphabet: many keys are prefixes of others;
/// "" and multi-byte characters included.
struct StrKeys;
impl Keys for StrKeys {
    fn key(&self, rng: &mut Rng) -> Value {
        let len = rng.below(4);
        let s: String = (0..len)
            .map(|_| ['a', 'b', 'ü', '\u{7f}'][rng.below(4) as usize])
            .collect();
        Value::Str(s)
    }
}

/// i64 keys clustered at the extremes and around zero.
struct I64Keys;
impl Keys for I64Keys {
    fn key(&self, rng: &mut Rng) -> Value {
        let off = rng.below(300) as i64;
        Value::I64(match rng.below(3) {
            0 => i64::MIN + off,
            1 => off - 150,
            _ => i64::MAX - off,
        })
    }
}

/// Model key: the encoded order of the table (bytes of a string; i64 with
/// the sign bit flipped, big-endian).
fn mkey(v: &Value) -> Vec<u8> {
    match v {
        Value::I64(x) => ((*x as u64) ^ (1 << 63)).to_be_bytes().to_vec(),
        Value::Str(s) => s.as_bytes().to_vec(),
        other => panic!("pk {other:?}"),
    }
}

fn row(pk: Value, version: u64, rng: &mut Rng) -> Vec<Value> {
    let n = match rng.below(5) {
        0 => Value::Null,
        1 => Value::I64(i64::MIN),
        _ => Value::I64(version as i64 % 97 - 40),
    };
    // Mostly few distinct strings (dictionary), sometimes unique ones (a
    // chunk with more than 256 distinct values).
    let s = if rng.below(3) == 0 {
        format!("wide-{version}")
    } else {
        format!("s{}", version % 5)
    };
    let f = match rng.below(6) {
        0 => f64::NAN,
        1 => -0.0,
        2 => 0.0,
        3 => -f64::NAN,
        _ => (version % 50) as f64 - 25.0,
    };
    vec![pk, n, Value::Str(s), Value::F64(f)]
}

type Model = BTreeMap<Vec<u8>, Vec<Value>>;

fn show(rows: &[Vec<Value>]) -> Vec<String> {
    rows.iter().map(|r| format!("{r:?}")).collect()
}

fn scan_rows<S: ReadSource + ?Sized>(
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

/// total order on values of one type (what the filter uses).
fn cmp(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::I64(x), Value::I64(y)) => Some(x.cmp(y)),
        (Value::F64(x), Value::F64(y)) => Some(x.total_cmp(y)),
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A random filter (and its model) on one of the columns.
fn random_filter(keys: &dyn Keys, rng: &mut Rng) -> (Filter, usize, Vec<(Value, u8)>) {
    let (col, name) = [(0, "id"), (1, "n"), (3, "f")][rng.below(3) as usize];
    let v = |rng: &mut Rng| match col {
        0 => keys.key(rng),
        1 => Value::I64(rng.below(100) as i64 - 50),
        _ => [
            Value::F64(-0.0),
            Value::F64(0.0),
            Value::F64(f64::NAN),
            Value::F64(-f64::NAN),
            Value::F64(rng.below(50) as f64 - 25.0),
        ][rng.below(5) as usize]
            .clone(),
    };
    let mut f = Filter::on(name);
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let op = rng.below(5) as u8;
        let x = v(rng);
        f = match op {
            0 => f.eq(x.clone()),
            1 => f.gt(x.clone()),
            2 => f.gte(x.clone()),
            3 => f.lt(x.clone()),
            _ => f.lte(x.clone()),
        };
        ops.retain(|(_, o)| *o != op);
        ops.push((x, op));
    }
    (f, col, ops)
}

fn filter_matches(v: &Value, ops: &[(Value, u8)]) -> bool {
    use std::cmp::Ordering::*;
    ops.iter().all(|(x, op)| match cmp(v, x) {
        None => false,
        Some(o) => match op {
            0 => o == Equal,
            1 => o == Greater,
            2 => o != Less,
            3 => o == Less,
            _ => o != Greater,
        },
    })
}

/// Checks scans (bounds, reverse, limit, projections, filters) and gets of
/// `src` against `model`. Bounds are often keys of the model (chunk
/// boundaries included).
fn check<S: ReadSource + ?Sized>(
    t: &Table,
    src: &S,
    model: &Model,
    keys: &dyn Keys,
    rng: &mut Rng,
    what: &str,
) -> Result<()> {
    let all: Vec<Vec<Value>> = model.values().cloned().collect();
    let got = scan_rows(
        t,
        src,
        TableScanOptions::default(),
        1 + rng.below(500) as usize,
    )?;
    assert_eq!(show(&got), show(&all), "{what}: full scan");
    let existing: Vec<Value> = all.iter().map(|r| r[0].clone()).collect();
    let pick = |rng: &mut Rng| {
        if !existing.is_empty() && rng.below(2) == 0 {
            existing[rng.below(existing.len() as u64) as usize].clone()
        } else {
            keys.key(rng)
        }
    };
    for _ in 0..12 {
        let lo = (rng.below(4) != 0).then(|| (pick(rng), rng.below(2) == 0));
        let hi = (rng.below(4) != 0).then(|| (pick(rng), rng.below(2) == 0));
        let reverse = rng.below(2) == 0;
        let limit = (rng.below(3) == 0).then(|| rng.below(40) as usize);
        let cols: Vec<usize> = match rng.below(4) {
            0 => vec![0, 1, 2, 3],
            1 => vec![3],
            2 => vec![2, 0],
            _ => vec![1, 3],
        };
        let names: Vec<&str> = cols.iter().map(|&c| ["id", "n", "s", "f"][c]).collect();
        let filter = (rng.below(2) == 0).then(|| random_filter(keys, rng));
        let mut o = TableScanOptions::default().columns(&names).reverse(reverse);
        if let Some((v, inc)) = &lo {
            o = o.lower(v.clone(), *inc);
        }
        if let Some((v, inc)) = &hi {
            o = o.upper(v.clone(), *inc);
        }
        if let Some(l) = limit {
            o = o.limit(l);
        }
        if let Some((f, _, _)) = &filter {
            o = o.filter(f.clone());
        }
        let mut want: Vec<Vec<Value>> = model
            .iter()
            .filter(|(k, _)| match &lo {
                Some((v, inc)) => {
                    let b = mkey(v);
                    **k > b || (*inc && **k == b)
                }
                None => true,
            })
            .filter(|(k, _)| match &hi {
                Some((v, inc)) => {
                    let b = mkey(v);
                    **k < b || (*inc && **k == b)
                }
                None => true,
            })
            .filter(|(_, r)| match &filter {
                Some((_, c, ops)) => filter_matches(&r[*c], ops),
                None => true,
            })
            .map(|(_, r)| cols.iter().map(|&c| r[c].clone()).collect())
            .collect();
        if reverse {
            want.reverse();
        }
        if let Some(l) = limit {
            want.truncate(l);
        }
        let got = scan_rows(t, src, o, 1 + rng.below(50) as usize)?;
        assert_eq!(
            show(&got),
            show(&want),
            "{what}: lo {lo:?} hi {hi:?} rev {reverse} limit {limit:?} {names:?} filter {:?}",
            filter.as_ref().map(|f| &f.0)
        );
    }
    for _ in 0..10 {
        let pk = pick(rng);
        let got = t.get(src, &pk, None)?;
        let want = model.get(&mkey(&pk));
        assert_eq!(
            got.map(|r| format!("{:?}", r.into_iter().map(|(_, v)| v).collect::<Vec<_>>())),
            want.map(|r| format!("{r:?}")),
            "{what}: get {pk:?}"
        );
    }
    Ok(())
}

fn model_run(pk: ColumnType, keys: &dyn Keys, seed: u64) -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table("t", schema(pk))?;
    let mut rng = Rng(seed);
    let mut model = Model::new();
    let mut version = 0u64;
    let mut snaps: Vec<(toondb_storage::Snapshot, Model)> = Vec::new();
    for step in 0..150 {
        match rng.below(12) {
            0..=3 => {
                let mut rows = BTreeMap::new();
                for _ in 0..1 + rng.below(80) {
                    version += 1;
                    let k = keys.key(&mut rng);
                    rows.insert(mkey(&k), row(k, version, &mut rng));
                }
                let rows: Vec<Vec<Value>> = rows.into_values().collect();
                t.upsert(&db, &rows)?;
                for r in rows {
                    model.insert(mkey(&r[0]), r);
                }
            }
            4 => {
                let mut pks = BTreeMap::new();
                for _ in 0..rng.below(30) {
                    let k = keys.key(&mut rng);
                    pks.insert(mkey(&k), k);
                }
                let vals: Vec<Value> = pks.values().cloned().collect();
                t.delete(&db, &vals)?;
                for k in pks.keys() {
                    model.remove(k);
                }
            }
            5 => {
                version += 1;
                let k = keys.key(&mut rng);
                let r = row(k.clone(), version, &mut rng);
                let res = t.insert(&db, std::slice::from_ref(&r));
                match model.entry(mkey(&k)) {
                    std::collections::btree_map::Entry::Occupied(_) => {
                        assert_eq!(res.unwrap_err().kind(), ErrorKind::InvalidArgument)
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        res?;
                        e.insert(r);
                    }
                }
            }
            6 | 7 => {
                let r = t.chunk_in_pieces(&db, 1 + rng.below(40) as usize)?;
                assert!(!r.gave_up);
            }
            8 => {
                // A transaction: deletes, re-inserts, upserts; reads its
                // own writes over chunked rows; commits or rolls back.
                let txn = db.transaction()?;
                let mut mine = model.clone();
                for _ in 0..1 + rng.below(6) {
                    let k = keys.key(&mut rng);
                    version += 1;
                    match rng.below(3) {
                        0 => {
                            t.delete_in(&txn, std::slice::from_ref(&k))?;
                            mine.remove(&mkey(&k));
                        }
                        1 => {
                            let r = row(k.clone(), version, &mut rng);
                            let res = t.insert_in(&txn, std::slice::from_ref(&r));
                            match mine.entry(mkey(&k)) {
                                std::collections::btree_map::Entry::Occupied(_) => {
                                    assert_eq!(res.unwrap_err().kind(), ErrorKind::InvalidArgument)
                                }
                                std::collections::btree_map::Entry::Vacant(e) => {
                                    res?;
                                    e.insert(r);
                                }
                            }
                        }
                        _ => {
                            let r = row(k.clone(), version, &mut rng);
                            t.upsert_in(&txn, std::slice::from_ref(&r))?;
                            mine.insert(mkey(&k), r);
                        }
                    }
                }
                check(&t, &txn, &mine, keys, &mut rng, "txn own writes")?;
                if rng.below(3) == 0 {
                    txn.rollback()?;
                } else {
                    txn.commit()?;
                    model = mine;
                }
            }
            9 => {
                if snaps.len() < 3 {
                    snaps.push((db.snapshot()?, model.clone()));
                } else {
                    snaps.remove(0);
                }
            }
            10 => db.compact()?,
            _ => {
                // A transaction opened before a chunking reads its
                // snapshot after it.
                let txn = db.transaction()?;
                let before = model.clone();
                t.chunk_in_pieces(&db, 1 + rng.below(40) as usize)?;
                check(&t, &txn, &before, keys, &mut rng, "txn across chunking")?;
                txn.rollback()?;
            }
        }
        if step % 4 == 0 {
            check(&t, &db, &model, keys, &mut rng, &format!("db step {step}"))?;
            for (s, m) in &snaps {
                check(&t, s, m, keys, &mut rng, &format!("snapshot step {step}"))?;
            }
        }
    }
    t.chunk(&db)?;
    check(&t, &db, &model, keys, &mut rng, "end")?;
    for (s, m) in &snaps {
        check(&t, s, m, keys, &mut rng, "end snapshot")?;
    }
    Ok(())
}

#[test]
fn model_string_keys_prefixes_and_empty() -> Result<()> {
    for seed in [3u64, 99, 123457] {
        model_run(ColumnType::Str, &StrKeys, seed)?;
    }
    Ok(())
}

#[test]
fn model_i64_extreme_keys() -> Result<()> {
    for seed in [5u64, 777, 4242] {
        model_run(ColumnType::I64, &I64Keys, seed)?;
    }
    Ok(())
}

/// Read-modify-write transactions (increment `n` of a few rows) racing a
/// thread that keeps chunking the table: every committed increment must
/// be in the final values (no lost update), and the chunker must not
/// resurrect or drop rows.
#[test]
fn increments_racing_the_chunker_lose_nothing() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path())?);
    let t = db.create_table("t", schema(ColumnType::I64))?;
    let rows: Vec<Vec<Value>> = (0..3000)
        .map(|i| {
            vec![
                Value::I64(i),
                Value::I64(0),
                Value::Str("x".into()),
                Value::F64(0.0),
            ]
        })
        .collect();
    t.upsert(&db, &rows)?;
    t.chunk(&db)?;
    let stop = Arc::new(AtomicBool::new(false));
    let chunker = {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let mut pieces = 0;
            while !stop.load(Ordering::Acquire) {
                pieces += t.chunk_in_pieces(&db, 500)?.pieces as u64;
            }
            Ok(pieces)
        })
    };
    let mut rng = Rng(11);
    let mut want = vec![0i64; 3000];
    let mut conflicts = 0;
    for _ in 0..400 {
        let k = rng.below(3000) as i64 / 7 * 7;
        let k2 = (k + 1000) % 3000;
        let txn = db.transaction()?;
        let apply = || -> Result<()> {
            for key in [k, k2] {
                let cur = t.get(&txn, &Value::I64(key), Some(&["n"]))?.expect("row");
                let Value::I64(n) = cur[0].1 else {
                    panic!("{cur:?}")
                };
                t.upsert_in(
                    &txn,
                    &[vec![
                        Value::I64(key),
                        Value::I64(n + 1),
                        Value::Str("x".into()),
                        Value::F64(0.0),
                    ]],
                )?;
            }
            Ok(())
        };
        apply()?;
        match txn.commit() {
            Ok(_) => {
                want[k as usize] += 1;
                want[k2 as usize] += 1;
            }
            Err(e) if e.kind() == ErrorKind::Conflict => conflicts += 1,
            Err(e) => return Err(e),
        }
        // Some deletes and re-inserts of rows nobody increments.
        if rng.below(4) == 0 {
            let d = rng.below(3000) as i64 / 7 * 7 + 3;
            if d < 3000 {
                t.delete(&db, &[Value::I64(d)])?;
                t.insert(
                    &db,
                    &[vec![
                        Value::I64(d),
                        Value::I64(0),
                        Value::Str("x".into()),
                        Value::F64(0.0),
                    ]],
                )?;
            }
        }
    }
    stop.store(true, Ordering::Release);
    let pieces = chunker.join().unwrap()?;
    t.chunk(&db)?;
    let got = scan_rows(
        &t,
        &*db,
        TableScanOptions::default().columns(&["id", "n"]),
        1000,
    )?;
    assert_eq!(got.len(), 3000);
    for r in got {
        let (Value::I64(k), Value::I64(n)) = (&r[0], &r[1]) else {
            panic!("{r:?}")
        };
        assert_eq!(
            *n, want[*k as usize],
            "row {k} (conflicts {conflicts}, pieces {pieces})"
        );
    }
    Ok(())
}

/// `close()` while the automatic chunker is rewriting a table: close
/// returns (no hang, no error), nothing written is lost, and the old
/// chunker (still running on the closed engine) writes nothing into the
/// reopened database.
#[test]
fn close_while_the_chunker_runs_loses_nothing() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let two = Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("v", ColumnType::I64),
        ],
        "id",
    );
    let n = 270_000i64;
    let mut want: BTreeMap<i64, i64> = BTreeMap::new();
    for round in 0..3 {
        let db = Database::open(dir.path())?;
        let t = match db.table("m") {
            Ok(t) => t,
            Err(_) => db.create_table("m", two.clone())?,
        };
        // Enough rows through `upsert` to start the chunker.
        for start in (0..n).step_by(30_000) {
            let rows: Vec<Vec<Value>> = (start..(start + 30_000).min(n))
                .map(|i| vec![Value::I64(i), Value::I64(i * 10 + round)])
                .collect();
            t.upsert(&db, &rows)?;
            for i in start..(start + 30_000).min(n) {
                want.insert(i, i * 10 + round);
            }
        }
        // Writes beside the chunker, then close while it runs.
        for k in (0..n).step_by(997) {
            if k % 2 == 0 {
                t.delete(&db, &[Value::I64(k)])?;
                want.remove(&k);
            } else {
                t.upsert(&db, &[vec![Value::I64(k), Value::I64(-k - round)]])?;
                want.insert(k, -k - round);
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(db.close());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("close() hung while the chunker ran")?;
    }
    // Let any chunker still running on a closed engine finish its piece.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let db = Database::open(dir.path())?;
    let t = db.table("m")?;
    let got = scan_rows(&t, &db, TableScanOptions::default(), 100_000)?;
    let want_rows: Vec<Vec<Value>> = want
        .iter()
        .map(|(k, v)| vec![Value::I64(*k), Value::I64(*v)])
        .collect();
    assert_eq!(got.len(), want_rows.len());
    assert!(got == want_rows, "rows differ after close while chunking");
    db.compact()?;
    let got = scan_rows(&t, &db, TableScanOptions::default(), 100_000)?;
    assert!(got == want_rows, "rows differ after compact");
    Ok(())
}

/// `stats()` counts the chunk bytes a read reads, per column
/// (docs/columnar.md): a get of a chunked row reads the pk chunk holding
/// the key (to find the row), so the pk column's counter must grow by at
/// least that chunk's size, which a scan of the pk column counts.
#[test]
fn get_of_a_chunked_row_counts_the_pk_chunk_it_reads() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "s",
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::Str),
                ColumnDef::new("v", ColumnType::I64),
            ],
            "id",
        ),
    )?;
    let rows: Vec<Vec<Value>> = (0..1000)
        .map(|i| {
            vec![
                Value::Str(format!("key-{i:06}-{}", "x".repeat(20))),
                Value::I64(i),
            ]
        })
        .collect();
    t.upsert(&db, &rows)?;
    t.chunk(&db)?;
    let pk_bytes = || -> Result<u64> { Ok(db.table_stats()?[0].columns[0].bytes_read) };
    let before = pk_bytes()?;
    let ids = scan_rows(&t, &db, TableScanOptions::default().columns(&["id"]), 5000)?;
    assert_eq!(ids.len(), 1000);
    let chunk_bytes = pk_bytes()? - before;
    assert!(
        chunk_bytes > 30_000,
        "one pk chunk of ~1000 long keys: {chunk_bytes}"
    );
    let before = pk_bytes()?;
    let got = t.get(&db, &rows[500][0], Some(&["v"]))?.expect("row");
    assert_eq!(got[0].1, Value::I64(500));
    let counted = pk_bytes()? - before;
    assert!(
        counted >= chunk_bytes,
        "get read the {chunk_bytes}-byte pk chunk but counted {counted} bytes for the pk column"
    );
    Ok(())
}

/// Blind upserts and deletes (no transaction) racing a chunker in small
/// pieces and compactions, while a snapshot taken at the start is read
/// again and again: the final rows are exactly the writer's, and the
/// snapshot keeps reading exactly what it saw.
#[test]
fn blind_writes_and_a_snapshot_racing_the_chunker() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path())?);
    let t = db.create_table("t", schema(ColumnType::I64))?;
    let mk = |k: i64, v: i64| {
        vec![
            Value::I64(k),
            if v % 3 == 0 {
                Value::Null
            } else {
                Value::I64(v)
            },
            Value::Str(format!("s{}", v % 300)),
            Value::F64(v as f64),
        ]
    };
    let mut model: BTreeMap<i64, i64> = (0..4000).map(|k| (k, k)).collect();
    let rows: Vec<Vec<Value>> = model.iter().map(|(k, v)| mk(*k, *v)).collect();
    t.upsert(&db, &rows)?;
    t.chunk_in_pieces(&db, 700)?;
    let snap = db.snapshot()?;
    let snap_rows = show(&scan_rows(&t, &snap, TableScanOptions::default(), 4096)?);
    let stop = Arc::new(AtomicBool::new(false));
    let chunker = {
        let (db, t, stop) = (db.clone(), t.clone(), stop.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                t.chunk_in_pieces(&db, 300 + i % 900)?;
                i += 1;
                if i % 5 == 0 {
                    db.compact()?;
                }
            }
            Ok(())
        })
    };
    let mut rng = Rng(2024);
    for round in 0..300i64 {
        let mut batch = BTreeMap::new();
        for _ in 0..1 + rng.below(20) {
            batch.insert(
                rng.below(4500) as i64,
                10_000 + round * 100 + rng.below(100) as i64,
            );
        }
        if rng.below(3) == 0 {
            let pks: Vec<Value> = batch.keys().map(|&k| Value::I64(k)).collect();
            t.delete(&db, &pks)?;
            for k in batch.keys() {
                model.remove(k);
            }
        } else {
            let rows: Vec<Vec<Value>> = batch.iter().map(|(k, v)| mk(*k, *v)).collect();
            t.upsert(&db, &rows)?;
            model.extend(batch);
        }
        if round % 50 == 0 {
            let again = show(&scan_rows(&t, &snap, TableScanOptions::default(), 999)?);
            assert!(again == snap_rows, "snapshot changed at round {round}");
        }
    }
    stop.store(true, Ordering::Release);
    chunker.join().unwrap()?;
    let want: Vec<Vec<Value>> = model.iter().map(|(k, v)| mk(*k, *v)).collect();
    let got = scan_rows(&t, &*db, TableScanOptions::default(), 1000)?;
    assert_eq!(show(&got), show(&want));
    t.chunk(&db)?;
    let got = scan_rows(&t, &*db, TableScanOptions::default().reverse(true), 333)?;
    let mut rev = want.clone();
    rev.reverse();
    assert_eq!(show(&got), show(&rev));
    let again = show(&scan_rows(&t, &snap, TableScanOptions::default(), 4096)?);
    assert!(again == snap_rows, "snapshot changed at the end");
    Ok(())
}

/// Chunking packs 2048 rows per chunk whatever their size: rows of a
/// bytes column that are each well within the value limit (256 MiB) add
/// up to a chunk value over it, and then `compact()` (which chunks every
/// table first) fails, and keeps failing, for the whole database.
#[test]
fn compact_with_large_rows_does_not_fail() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "blobs",
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::I64),
                ColumnDef::new("body", ColumnType::Bytes),
            ],
            "id",
        ),
    )?;
    const MIB: usize = 1 << 20;
    for i in 0..3i64 {
        let body = vec![i as u8 + 1; 90 * MIB];
        t.upsert(&db, &[vec![Value::I64(i), Value::Bytes(body)]])?;
    }
    db.compact()?;
    for i in 0..3i64 {
        let got = t.get(&db, &Value::I64(i), Some(&["body"]))?.expect("row");
        let Value::Bytes(b) = &got[0].1 else {
            panic!("not bytes")
        };
        assert!(b.len() == 90 * MIB && b.iter().all(|&x| x == i as u8 + 1));
    }
    Ok(())
}

/// `drop_table` while a chunking of that table runs piece by piece: the
/// chunking stops (it never writes chunks of a dropped table), and a new
/// table of the same name sees none of the old rows, before and after
/// reopen.
#[test]
fn drop_table_while_chunking_runs() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Arc::new(Database::open(dir.path())?);
        for round in 0..3 {
            let t = db.create_table("t", schema(ColumnType::I64))?;
            let rows: Vec<Vec<Value>> = (0..20_000)
                .map(|i| {
                    vec![
                        Value::I64(i),
                        Value::I64(i),
                        Value::Str("old".into()),
                        Value::F64(1.0),
                    ]
                })
                .collect();
            t.upsert(&db, &rows)?;
            let chunker = {
                let (db, t) = (db.clone(), t.clone());
                std::thread::spawn(move || t.chunk_in_pieces(&db, 500 + round * 300))
            };
            std::thread::sleep(std::time::Duration::from_millis(20 + 40 * round as u64));
            db.drop_table("t")?;
            let report = chunker.join().unwrap();
            // Either outcome of the race is fine, as long as it is not an
            // error other than the table being gone.
            if let Err(e) = &report {
                assert_eq!(e.kind(), ErrorKind::NotFound, "{e:?}");
            }
            assert!(
                t.get(&*db, &Value::I64(5), None).is_err()
                    || t.get(&*db, &Value::I64(5), None)?.is_none()
            );
        }
        let t = db.create_table("t", schema(ColumnType::I64))?;
        t.upsert(
            &db,
            &[vec![
                Value::I64(7),
                Value::I64(70),
                Value::Str("new".into()),
                Value::F64(2.0),
            ]],
        )?;
        let got = scan_rows(&t, &*db, TableScanOptions::default(), 100)?;
        assert_eq!(got.len(), 1, "{:?}", &got[..got.len().min(3)]);
        t.chunk(&db)?;
        assert_eq!(
            scan_rows(&t, &*db, TableScanOptions::default(), 100)?.len(),
            1
        );
        db.close()?;
    }
    let db = Database::open(dir.path())?;
    let t = db.table("t")?;
    let got = scan_rows(&t, &db, TableScanOptions::default(), 100)?;
    assert_eq!(got.len(), 1);
    db.compact()?;
    assert_eq!(
        scan_rows(&t, &db, TableScanOptions::default(), 100)?.len(),
        1
    );
    Ok(())
}

// ---- cells fixture script (shared by the generator and the check) ----

/// One step of the script that made `tests/fixtures/cells-db`.
enum FixtureOp {
    Upsert(&'static str, Vec<Vec<Value>>),
    Delete(&'static str, Vec<Value>),
    Flush,
}

fn fixture_schema(pk: ColumnType) -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", pk),
            ColumnDef::new("n", ColumnType::I64).nullable(),
            ColumnDef::new("s", ColumnType::Str),
            ColumnDef::new("f", ColumnType::F64),
        ],
        "id",
    )
}

fn fixture_row(pk: Value, i: i64, version: i64) -> Vec<Value> {
    vec![
        pk,
        if i % 5 == 0 {
            Value::Null
        } else {
            Value::I64(i * 10 + version)
        },
        Value::Str(format!("s{}-{version}", i % 4)),
        Value::F64(i as f64 / 4.0 - version as f64),
    ]
}

/// Table "ev" (i64 keys) and "sk" (string keys, "" included): upserts,
/// deletes (written as tombstones by the builds before chunks), updates,
/// re-inserts of deleted keys; two flushes, then a WAL tail.
fn fixture_ops() -> Vec<FixtureOp> {
    use FixtureOp::*;
    let ev = |ids: std::ops::Range<i64>, v: i64| -> Vec<Vec<Value>> {
        ids.map(|i| fixture_row(Value::I64(i - 300), i, v))
            .collect()
    };
    let sk = |ids: std::ops::Range<i64>, v: i64| -> Vec<Vec<Value>> {
        ids.map(|i| {
            let k = if i == 0 {
                String::new()
            } else {
                format!("k{i}")
            };
            fixture_row(Value::Str(k), i, v)
        })
        .collect()
    };
    vec![
        Upsert("ev", ev(0..250, 1)),
        Upsert("sk", sk(0..120, 1)),
        Flush,
        Delete(
            "ev",
            (0..250).step_by(7).map(|i| Value::I64(i - 300)).collect(),
        ),
        Delete(
            "sk",
            vec![
                Value::Str(String::new()),
                Value::Str("k1".into()),
                Value::Str("k10".into()),
            ],
        ),
        Upsert("ev", ev(100..200, 2)),
        Flush,
        Delete("ev", (150..160).map(|i| Value::I64(i - 300)).collect()),
        Upsert("ev", ev(1000..1010, 3)),
        Upsert("sk", sk(10..11, 3)),
    ]
}

/// `tests/fixtures/cells-db` was written by the build before column chunks
/// (dd2c1f8: cells only, deleted rows as tombstones on every cell, two
/// flushed tables and a WAL tail) running `fixture_ops`, by
/// `tests/fixtures/cells-db-generator.rs` (how: see its header). This build reads it, inserts deleted keys again,
/// chunks it (compact) and reads the same rows, before and after reopen.
#[test]
fn a_database_from_the_build_before_chunks_reads_and_chunks() -> Result<()> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cells-db");
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let mut models: BTreeMap<&str, Model> = BTreeMap::new();
    for op in fixture_ops() {
        match op {
            FixtureOp::Upsert(t, rows) => {
                let m = models.entry(t).or_default();
                for r in rows {
                    m.insert(mkey(&r[0]), r);
                }
            }
            FixtureOp::Delete(t, pks) => {
                let m = models.entry(t).or_default();
                for k in pks {
                    m.remove(&mkey(&k));
                }
            }
            FixtureOp::Flush => {}
        }
    }
    let keys: [(&str, &dyn Keys); 2] = [("ev", &I64Keys), ("sk", &StrKeys)];
    let mut rng = Rng(77);
    let check_all =
        |db: &Database, models: &BTreeMap<&str, Model>, rng: &mut Rng, what: &str| -> Result<()> {
            for (name, k) in keys {
                let t = db.table(name)?;
                check(&t, db, &models[name], k, rng, &format!("{what} {name}"))?;
            }
            Ok(())
        };
    let db = Database::open(dir.path())?;
    for (name, pk) in [("ev", ColumnType::I64), ("sk", ColumnType::Str)] {
        assert_eq!(
            format!("{:?}", db.table(name)?.schema()),
            format!("{:?}", fixture_schema(pk))
        );
    }
    check_all(&db, &models, &mut rng, "as written")?;
    // Deleted keys (tombstones) can be inserted again; live ones cannot.
    let ev = db.table("ev")?;
    let sk = db.table("sk")?;
    let again = fixture_row(Value::I64(7 - 300), 7, 9);
    ev.insert(&db, std::slice::from_ref(&again))?;
    models.get_mut("ev").unwrap().insert(mkey(&again[0]), again);
    let again = fixture_row(Value::Str(String::new()), 0, 9);
    sk.insert(&db, std::slice::from_ref(&again))?;
    models.get_mut("sk").unwrap().insert(mkey(&again[0]), again);
    let live = fixture_row(Value::Str("k2".into()), 2, 9);
    assert_eq!(
        sk.insert(&db, &[live]).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    ev.delete(&db, &[Value::I64(1 - 300)])?;
    models
        .get_mut("ev")
        .unwrap()
        .remove(&mkey(&Value::I64(1 - 300)));
    check_all(&db, &models, &mut rng, "after writes")?;
    db.compact()?;
    assert!(db.table_stats()?.iter().all(|s| s.chunked_rows > 0));
    check_all(&db, &models, &mut rng, "chunked")?;
    db.close()?;
    let db = Database::open(dir.path())?;
    check_all(&db, &models, &mut rng, "reopened")?;
    Ok(())
}

/// `stats()` per column counts the cells a scan reads: once a table has
/// chunks, a scan merges them with the pk-marker cells of the rows written
/// since, and those marker cells must still count (as they do in a table
/// without chunks), not vanish from the pk column's counter.
#[test]
fn merged_scan_counts_the_marker_cells_it_reads() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let two = Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("v", ColumnType::I64),
        ],
        "id",
    );
    let rows = |from: i64, n: i64| -> Vec<Vec<Value>> {
        (from..from + n)
            .map(|i| vec![Value::I64(i), Value::I64(i)])
            .collect()
    };
    let pk_bytes = |name: &str| -> Result<u64> {
        let stats = db.table_stats()?;
        Ok(stats
            .iter()
            .find(|s| s.name == name)
            .expect("table")
            .columns[0]
            .bytes_read)
    };
    // Cells only: a scan of the pk column reads 1000 marker cells.
    let plain = db.create_table("plain", two.clone())?;
    plain.upsert(&db, &rows(0, 1000))?;
    let before = pk_bytes("plain")?;
    assert_eq!(
        scan_rows(
            &plain,
            &db,
            TableScanOptions::default().columns(&["id"]),
            500
        )?
        .len(),
        1000
    );
    let cells_only = pk_bytes("plain")? - before;
    assert!(cells_only >= 1000 * 8, "{cells_only}");
    // The same 1000 rows as cells beside a small chunk.
    let mixed = db.create_table("mixed", two)?;
    mixed.upsert(&db, &rows(100_000, 3))?;
    mixed.chunk(&db)?;
    mixed.upsert(&db, &rows(0, 1000))?;
    let before = pk_bytes("mixed")?;
    assert_eq!(
        scan_rows(
            &mixed,
            &db,
            TableScanOptions::default().columns(&["id"]),
            500
        )?
        .len(),
        1003
    );
    let merged = pk_bytes("mixed")? - before;
    assert!(
        merged >= cells_only,
        "the merged scan read the same 1000 marker cells (plus a pk chunk) but counted {merged} bytes, against {cells_only} without chunks"
    );
    Ok(())
}

/// A value so close to the 256 MiB value limit that no chunk can hold it
/// (a chunk adds a header, a length and a CRC) cannot be chunked; that
/// must not make `compact()` fail for the whole database: the row stays
/// in cells and the compaction runs.
#[test]
fn compact_with_a_value_at_the_limit_does_not_fail() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "blobs",
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::I64),
                ColumnDef::new("body", ColumnType::Bytes),
            ],
            "id",
        ),
    )?;
    let limit = 256 << 20;
    t.upsert(
        &db,
        &[
            vec![Value::I64(1), Value::Bytes(vec![7; limit - 4])],
            vec![Value::I64(2), Value::Bytes(vec![8; 10])],
        ],
    )?;
    t.delete(&db, &[Value::I64(2)])?;
    db.compact()?;
    let got = t.get(&db, &Value::I64(1), Some(&["body"]))?.expect("row");
    assert!(matches!(&got[0].1, Value::Bytes(b) if b.len() == limit - 4 && b[0] == 7));
    assert!(t.get(&db, &Value::I64(2), None)?.is_none());
    Ok(())
}
