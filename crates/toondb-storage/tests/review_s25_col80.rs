//! Review s25 (col80 merge): compaction outputs cut at column-chunk
//! partitions, level cursors skipping files past a scan's end, keyless
//! column scans, and the in-memory catalog, against a model with
//! snapshots held across chunking and compaction.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use toondb_storage::{
    ColumnDef, ColumnType, Database, ErrorKind, Options, ReadSource, Schema, Table,
    TableScanOptions, Value,
};

type Row = (f64, Vec<u8>);
type Model = BTreeMap<i64, Row>;

fn schema() -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("a", ColumnType::F64),
            ColumnDef::new("b", ColumnType::Bytes),
        ],
        "id",
    )
}

fn small() -> Options {
    Options::default()
        .memtable_size(64 << 10)
        .block_size(1024)
        .target_file_size(16 << 10)
        .level_base_bytes(64 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn scan_all<S: ReadSource + ?Sized>(t: &Table, src: &S, opts: TableScanOptions) -> Vec<Vec<Value>> {
    let mut scan = t.scan(src, opts).unwrap();
    let mut rows = Vec::new();
    loop {
        let b = scan.next_batch(1 + rows.len() % 97).unwrap();
        if b.is_empty() {
            return rows;
        }
        for i in 0..b.len() {
            rows.push(b.columns.iter().map(|c| c[i].clone()).collect());
        }
    }
}

fn check<S: ReadSource + ?Sized>(t: &Table, src: &S, model: &Model, rng: &mut Rng, what: &str) {
    let all: Vec<Vec<Value>> = model
        .iter()
        .map(|(id, (a, b))| vec![Value::I64(*id), Value::F64(*a), Value::Bytes(b.clone())])
        .collect();
    assert_eq!(
        scan_all(t, src, TableScanOptions::default()),
        all,
        "{what}: all"
    );
    // One column, no bounds: the keyless path.
    let a: Vec<Vec<Value>> = model.values().map(|(a, _)| vec![Value::F64(*a)]).collect();
    assert_eq!(
        scan_all(t, src, TableScanOptions::default().columns(&["a"])),
        a,
        "{what}: column a"
    );
    let b: Vec<Vec<Value>> = model
        .values()
        .rev()
        .map(|(_, b)| vec![Value::Bytes(b.clone())])
        .collect();
    assert_eq!(
        scan_all(
            t,
            src,
            TableScanOptions::default().columns(&["b"]).reverse(true)
        ),
        b,
        "{what}: column b reverse"
    );
    for _ in 0..4 {
        let lo = rng.below(3200) as i64;
        let hi = lo + rng.below(800) as i64;
        let (li, hi_i) = (rng.below(2) == 0, rng.below(2) == 0);
        let reverse = rng.below(2) == 0;
        let want: Vec<Vec<Value>> = {
            let mut v: Vec<_> = model
                .iter()
                .filter(|(id, _)| {
                    (if li { **id >= lo } else { **id > lo })
                        && (if hi_i { **id <= hi } else { **id < hi })
                })
                .map(|(id, (a, _))| vec![Value::F64(*a), Value::I64(*id)])
                .collect();
            if reverse {
                v.reverse();
            }
            v
        };
        let opts = TableScanOptions::default()
            .columns(&["a", "id"])
            .lower(Value::I64(lo), li)
            .upper(Value::I64(hi), hi_i)
            .reverse(reverse);
        assert_eq!(
            scan_all(t, src, opts),
            want,
            "{what}: {lo} {li} {hi} {hi_i} {reverse}"
        );
    }
    for _ in 0..20 {
        let id = rng.below(3200) as i64;
        let got = t.get(src, &Value::I64(id), Some(&["b"])).unwrap();
        assert_eq!(
            got.map(|r| r[0].1.clone()),
            model.get(&id).map(|(_, b)| Value::Bytes(b.clone())),
            "{what}: get {id}"
        );
    }
}

#[test]
fn chunked_tables_keep_every_version_snapshots_see() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let t = db.create_table("m", schema()).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut model = Model::new();
    let mut held = Vec::new();
    for round in 0..14 {
        let mut rows = Vec::new();
        for _ in 0..700 {
            let id = rng.below(3000) as i64;
            let a = (round * 10_000 + id) as f64;
            let b = vec![(id % 251) as u8; (rng.below(4) * 40) as usize];
            model.insert(id, (a, b.clone()));
            rows.push(vec![Value::I64(id), Value::F64(a), Value::Bytes(b)]);
        }
        // Later rows of one batch win, as in the model.
        let mut dedup: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
        for r in rows {
            if let Value::I64(id) = r[0] {
                dedup.insert(id, r);
            }
        }
        t.upsert(&db, &dedup.into_values().collect::<Vec<_>>())
            .unwrap();
        let dels: Vec<Value> = (0..40)
            .map(|_| Value::I64(rng.below(3000) as i64))
            .collect();
        for d in &dels {
            if let Value::I64(id) = d {
                model.remove(id);
            }
        }
        t.delete(&db, &dels).unwrap();
        if round % 3 == 1 {
            held.push((db.snapshot().unwrap(), model.clone()));
            if held.len() > 3 {
                held.remove(0);
            }
        }
        match round % 4 {
            0 => t.chunk(&db).map(|_| ()).unwrap(),
            1 => db.compact().unwrap(),
            2 => db.flush().unwrap(),
            _ => {}
        }
        check(&t, &db, &model, &mut rng, &format!("round {round}"));
        for (snap, m) in &held {
            let ts = snap.ts();
            check(
                &t,
                snap,
                m,
                &mut rng,
                &format!("round {round} snapshot {ts}"),
            );
        }
    }
    drop(held);
    db.compact().unwrap();
    check(&t, &db, &model, &mut rng, "final");
    db.close().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let t = db.table("m").unwrap();
    check(&t, &db, &model, &mut rng, "reopened");
}

/// Drop and re-create a table of the same name while other threads look it
/// up: once `create_table` returns, every lookup finds the new table (its
/// id), never the dropped one; a snapshot still reads the catalog at its
/// own timestamp.
#[test]
fn catalog_cache_never_serves_a_dropped_table() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Database::open_with(dir.path(), Options::default().auto_compaction(false)).unwrap(),
    );
    let t0 = db.create_table("x", schema()).unwrap();
    t0.upsert(
        &db,
        &[vec![
            Value::I64(1),
            Value::F64(1.0),
            Value::Bytes(b"one".to_vec()),
        ]],
    )
    .unwrap();
    let snap = db.snapshot().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match db.table("x") {
                        Ok(t) => {
                            let _ = t.get(&*db, &Value::I64(1), None);
                        }
                        Err(e) => assert_eq!(e.kind(), ErrorKind::NotFound),
                    }
                    let _ = db.tables().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut last_id = t0.id();
    for i in 0..150 {
        db.drop_table("x").unwrap();
        assert_eq!(
            db.table("x").unwrap_err().kind(),
            ErrorKind::NotFound,
            "after drop {i}"
        );
        assert!(db.tables().unwrap().iter().all(|t| t.name() != "x"));
        let t = db.create_table("x", schema()).unwrap();
        assert_ne!(t.id(), last_id);
        last_id = t.id();
        assert_eq!(db.table("x").unwrap().id(), t.id(), "after create {i}");
        assert_eq!(
            toondb_storage::lookup_table(&*db, "x").unwrap().id(),
            t.id()
        );
        t.upsert(
            &db,
            &[vec![
                Value::I64(1),
                Value::F64(i as f64),
                Value::Bytes(vec![]),
            ]],
        )
        .unwrap();
        let row = db
            .table("x")
            .unwrap()
            .get(&*db, &Value::I64(1), Some(&["a"]))
            .unwrap();
        assert_eq!(row.map(|r| r[0].1.clone()), Some(Value::F64(i as f64)));
        // The snapshot's own catalog: the first table, its row.
        let old = toondb_storage::lookup_table(&snap, "x").unwrap();
        assert_eq!(old.id(), t0.id());
        let row = old.get(&snap, &Value::I64(1), Some(&["b"])).unwrap();
        assert_eq!(
            row.map(|r| r[0].1.clone()),
            Some(Value::Bytes(b"one".to_vec()))
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

/// Table files of `dir` mapped by this process.
fn mapped_tables(dir: &std::path::Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let dir = dir.to_string_lossy().to_string();
    maps.lines()
        .filter(|l| l.contains(&dir) && l.contains(".sst"))
        .count()
}

/// Scans (key-value and table) alive across close: no crash, TOONDB_CLOSED
/// or correct rows, and once they are dropped the closed engine keeps no
/// table file mapped.
#[test]
#[cfg(target_os = "linux")]
fn scans_alive_across_close_leave_no_table_mapped() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small().auto_compaction(false)).unwrap();
    let t = db.create_table("m", schema()).unwrap();
    let rows: Vec<Vec<Value>> = (0..3000)
        .map(|i| {
            vec![
                Value::I64(i),
                Value::F64(i as f64),
                Value::Bytes(vec![1; 30]),
            ]
        })
        .collect();
    t.upsert(&db, &rows).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), [7u8; 40]).unwrap();
    }
    db.compact().unwrap();
    let mut kv = db.scan(toondb_storage::ScanOptions::default()).unwrap();
    assert_eq!(kv.next_batch(10, 1 << 20).unwrap().len(), 10);
    let mut cols = t
        .scan(&db, TableScanOptions::default().columns(&["a"]))
        .unwrap();
    assert_eq!(cols.next_batch(10).unwrap().len(), 10);
    let snap = db.snapshot().unwrap();
    assert!(mapped_tables(dir.path()) > 0);
    db.close().unwrap();
    assert_eq!(mapped_tables(dir.path()), 0, "right after close");
    assert_eq!(
        kv.next_batch(1000, 1 << 20).unwrap_err().kind(),
        ErrorKind::Closed
    );
    // A table scan: an error, or rows; never a crash.
    let mut read = 10;
    loop {
        match cols.next_batch(500) {
            Ok(b) if b.is_empty() => break,
            Ok(b) => read += b.len(),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Closed);
                break;
            }
        }
    }
    let _ = snap.get("k00001");
    let _ = t.get(&snap, &Value::I64(5), None);
    drop((kv, cols, snap));
    assert_eq!(
        mapped_tables(dir.path()),
        0,
        "a closed engine keeps table files mapped (read {read} rows after close)"
    );
}
