//! Review s23 of 6073875..main: memtable key heads, scan readahead, reserved
//! point reads, maintenance `busy` at open, dropped-tables list.

mod support;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use toondb_storage::{Database, ErrorKind, Options, ScanOptions, Snapshot, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn scan_all(scan: &mut dyn FnMut() -> toondb_storage::Result<Pairs>) -> Pairs {
    let mut out = Vec::new();
    loop {
        let b = scan().unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend(b);
    }
}

fn db_scan(db: &Database, o: ScanOptions, batch: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = db.scan(o).unwrap();
    scan_all(&mut || s.next_batch(batch, usize::MAX))
}

fn snap_scan(snap: &Snapshot, o: ScanOptions, batch: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut s = snap.scan(o).unwrap();
    scan_all(&mut || s.next_batch(batch, usize::MAX))
}

fn model_range(m: &Model, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.range::<Vec<u8>, _>((lo.clone(), hi.clone()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. memtable: 16-byte inline key heads must order exactly like the keys.

/// Keys around the 16-byte head: a prefix (0..=20 bytes) of one of a few
/// 20-byte patterns, then 0..=4 bytes of 00/01/fe/ff. So keys equal in
/// their first 16 bytes, keys that are prefixes of others, keys padded
/// with real zero bytes (which look like the head's padding) all occur.
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    let patterns: Vec<Vec<u8>> = vec![
        vec![0u8; 20],
        vec![0xffu8; 20],
        b"abcdefghijklmnopqrst".to_vec(),
        {
            let mut p = b"abcdefghijklmnop".to_vec();
            p.extend_from_slice(&[0, 0, 0xff, 1]);
            p
        },
        {
            let mut p = vec![0x01u8; 15];
            p.extend_from_slice(&[0, 0, 0, 0, 0]);
            p
        },
    ];
    (
        0..patterns.len(),
        0usize..=20,
        prop::collection::vec(prop::sample::select(vec![0u8, 1, 0xfe, 0xff]), 0..=4),
    )
        .prop_map(move |(p, len, tail)| {
            let mut k = patterns[p][..len].to_vec();
            k.extend(tail);
            k
        })
        .prop_filter("non-empty, not reserved", |k| {
            !k.is_empty() && !k.starts_with(b"\xff\x00\x01")
        })
}

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8),
    Del(usize),
}

fn check_view(
    label: &str,
    get: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
    scan: &dyn Fn(ScanOptions, usize) -> Vec<(Vec<u8>, Vec<u8>)>,
    model: &Model,
    pool: &[Vec<u8>],
) {
    for k in pool {
        assert_eq!(get(k), model.get(k).cloned(), "{label}: get {k:?}");
    }
    let all: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(
        scan(ScanOptions::default(), 7),
        all,
        "{label}: forward scan"
    );
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(
        scan(ScanOptions::default().reverse(true), 5),
        rev,
        "{label}: reverse scan"
    );
    // Bounded scans between pool keys, both ways.
    for (i, a) in pool.iter().enumerate().step_by(3) {
        let b = &pool[(i * 7 + 1) % pool.len()];
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        let lo = Bound::Included(lo.clone());
        let hi = Bound::Excluded(hi.clone());
        let want = model_range(model, &lo, &hi);
        let o = ScanOptions::default().lower(lo.clone()).upper(hi.clone());
        assert_eq!(scan(o.clone(), 3), want, "{label}: range {lo:?}..{hi:?}");
        let mut want_rev = want;
        want_rev.reverse();
        assert_eq!(scan(o.reverse(true), 2), want_rev, "{label}: rev range");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Puts and deletes of keys around 16 bytes, several versions each, a
    /// snapshot after every round: every snapshot's gets and scans (both
    /// ways, bounded and not) equal a sorted model, in the memtable and
    /// again after a flush.
    #[test]
    fn memtable_head_order_equals_full_key_order(
        pool in prop::collection::vec(key_strategy(), 2..40),
        rounds in prop::collection::vec(
            prop::collection::vec(
                prop_oneof![
                    3 => (0usize..1000, any::<u8>()).prop_map(|(i, v)| Op::Put(i, v)),
                    1 => (0usize..1000).prop_map(Op::Del),
                ],
                1..30,
            ),
            1..5,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), Options::default().auto_compaction(false)).unwrap();
        let mut model = Model::new();
        let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
        for ops in &rounds {
            for op in ops {
                match *op {
                    Op::Put(i, v) => {
                        let k = &pool[i % pool.len()];
                        let val = vec![v, (i % 251) as u8];
                        db.put(k, &val).unwrap();
                        model.insert(k.clone(), val);
                    }
                    Op::Del(i) => {
                        let k = &pool[i % pool.len()];
                        db.delete(k).unwrap();
                        model.remove(k);
                    }
                }
            }
            snaps.push((db.snapshot().unwrap(), model.clone()));
        }
        for phase in ["memtable", "flushed"] {
            if phase == "flushed" {
                db.flush().unwrap();
            }
            check_view(
                &format!("{phase} db"),
                &|k| db.get(k).unwrap(),
                &|o, b| db_scan(&db, o, b),
                &model,
                &pool,
            );
            let got = db.get_many(&pool).unwrap();
            let want: Vec<_> = pool.iter().map(|k| model.get(k).cloned()).collect();
            prop_assert_eq!(got, want);
            for (n, (snap, m)) in snaps.iter().enumerate() {
                check_view(
                    &format!("{phase} snapshot {n}"),
                    &|k| snap.get(k).unwrap(),
                    &|o, b| snap_scan(snap, o, b),
                    m,
                    &pool,
                );
            }
        }
        drop(snaps);
        db.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// 2. scan readahead: many small blocks, several tables and levels, random
// bounds, both directions, small batches (re-seeks) and limits.

fn rkey(i: u32) -> Vec<u8> {
    format!("r{:06}", i).into_bytes()
}

#[test]
fn readahead_scans_match_the_model_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .auto_compaction(false)
        .block_size(256)
        .target_file_size(64 << 10);
    let db = Database::open_with(dir.path(), options).unwrap();
    let mut model = Model::new();
    // Bottom: every key, compacted; then overwrites and deletes in L0
    // tables; then some in the memtable.
    let n = 6000u32;
    for round in 0..4u32 {
        let mut batch = WriteBatch::new();
        for i in 0..n {
            if round > 0 && i % (round * 3 + 1) != 0 {
                continue;
            }
            let k = rkey(i);
            if round == 2 && i % 2 == 0 {
                batch.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let v = format!("v{round}-{i}-{}", "x".repeat((i % 60) as usize)).into_bytes();
                batch.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        db.write(batch).unwrap();
        if round < 3 {
            db.flush().unwrap();
        }
        if round == 0 {
            db.compact().unwrap();
        }
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |m: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m as u64) as u32
    };
    for iter in 0..60 {
        let a = next(n + 200);
        let b = next(n + 200);
        let (a, b) = (a.min(b), a.max(b));
        let lo = match iter % 3 {
            0 => Bound::Unbounded,
            1 => Bound::Included(rkey(a)),
            _ => Bound::Excluded(rkey(a)),
        };
        let hi = match iter % 4 {
            0 => Bound::Unbounded,
            1 | 2 => Bound::Excluded(rkey(b)),
            _ => Bound::Included(rkey(b)),
        };
        let want = model_range(&model, &lo, &hi);
        for reverse in [false, true] {
            let mut want = want.clone();
            if reverse {
                want.reverse();
            }
            for batch in [1usize, 17, 1 << 20] {
                let o = ScanOptions::default()
                    .lower(lo.clone())
                    .upper(hi.clone())
                    .reverse(reverse);
                assert_eq!(
                    db_scan(&db, o.clone(), batch),
                    want,
                    "{lo:?}..{hi:?} reverse={reverse} batch={batch}"
                );
                let limit = 1 + next(300) as usize;
                let got = db_scan(&db, o.limit(limit), batch);
                assert_eq!(got[..], want[..limit.min(want.len())], "limit {limit}");
            }
        }
    }
    db.close().unwrap();
}

// ---------------------------------------------------------------------------
// 4. reserved-prefix point reads: only keys starting ff 00 01 are rejected.

#[test]
fn keys_near_the_reserved_prefix_are_readable_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let near: Vec<Vec<u8>> = vec![
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0x00, 0x00],
        vec![0xff, 0x00, 0x00, 0xff, 0xff],
        vec![0xff, 0x00, 0x02],
        vec![0xff, 0x01, 0x01],
        vec![0xfe, 0x00, 0x01],
        vec![0x00, 0xff, 0x00, 0x01],
        vec![0xff, 0xff, 0x00, 0x01],
    ];
    for k in &near {
        db.put(k, k).unwrap();
    }
    let snap = db.snapshot().unwrap();
    let txn = db.transaction().unwrap();
    for k in &near {
        assert_eq!(db.get(k).unwrap().as_deref(), Some(&k[..]), "{k:?}");
        assert_eq!(snap.get(k).unwrap().as_deref(), Some(&k[..]), "{k:?}");
        assert_eq!(txn.get(k).unwrap().as_deref(), Some(&k[..]), "{k:?}");
    }
    let many = db.get_many(&near).unwrap();
    assert!(many
        .iter()
        .zip(&near)
        .all(|(v, k)| v.as_deref() == Some(&k[..])));
    for bad in [vec![0xff, 0x00, 0x01], vec![0xff, 0x00, 0x01, b'C', b'x']] {
        for e in [
            db.get(&bad).unwrap_err(),
            snap.get(&bad).unwrap_err(),
            txn.get(&bad).unwrap_err(),
            db.get_many(&[near[0].clone(), bad.clone()]).unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
    }
    txn.rollback().ok();
    drop(snap);
    db.close().unwrap();
}

// ---------------------------------------------------------------------------
// 7. maintenance_busy starts true: it must turn false without automatic
// compaction, with and without work left by the open, and close must not
// wait on it.

fn wait_idle(db: &Database, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.stats().maintenance_busy {
        assert!(
            Instant::now() < deadline,
            "{what}: maintenance_busy never became false"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn maintenance_becomes_idle_without_auto_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default().auto_compaction(false);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    wait_idle(&db, "fresh open");
    // Leave many L0 tables (a compaction an auto-compacting open would pick).
    for t in 0..12u32 {
        for i in 0..50u32 {
            db.put(format!("k{i:04}"), format!("{t}")).unwrap();
        }
        db.flush().unwrap();
    }
    db.close().unwrap();
    let t0 = Instant::now();
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    wait_idle(&db, "reopen with L0 tables, auto compaction off");
    db.close().unwrap();
    // Close right after open, before the thread ran: must not hang.
    for _ in 0..20 {
        let db = Database::open_with(dir.path(), opts.clone()).unwrap();
        db.close().unwrap();
    }
    let db = Database::open_with(dir.path(), Options::default()).unwrap();
    wait_idle(&db, "reopen with auto compaction");
    assert_eq!(db.get("k0001").unwrap().as_deref(), Some(&b"11"[..]));
    db.close().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// 3. bloom filter read only by point lookups: damage any byte of a table's
// metadata tail; a present key never reads as absent or wrong, and whenever
// a point read reports corruption, verify does too.

#[test]
fn damaged_table_tail_never_turns_into_a_false_negative() {
    let base = tempfile::tempdir().unwrap();
    let src = base.path().join("src");
    let opts = Options::default()
        .auto_compaction(false)
        .bloom_bits_per_key(10);
    let keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| format!("bk{i:05}").into_bytes())
        .collect();
    {
        let db = Database::open_with(&src, opts.clone()).unwrap();
        for k in &keys {
            db.put(k, k).unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let sst: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert_eq!(sst.len(), 1);
    let name = sst[0].file_name().unwrap().to_owned();
    let image = std::fs::read(&sst[0]).unwrap();
    let (mut get_failed, mut verify_flagged, mut open_failed) = (0, 0, 0);
    let tail = 1600.min(image.len());
    for at in (image.len() - tail..image.len()).step_by(2) {
        let dir = base.path().join(format!("d{at}"));
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&src).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
            }
        }
        let mut damaged = image.clone();
        damaged[at] ^= 0x5a;
        std::fs::write(dir.join(&name), &damaged).unwrap();
        let db = match Database::open_with(&dir, opts.clone()) {
            Ok(db) => db,
            Err(_) => {
                open_failed += 1;
                std::fs::remove_dir_all(&dir).unwrap();
                continue;
            }
        };
        let mut failed = false;
        for k in keys.iter().step_by(7) {
            match db.get(k) {
                Ok(v) => assert_eq!(v.as_deref(), Some(&k[..]), "byte {at}: key {k:?}"),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corruption, "byte {at}: {e}");
                    failed = true;
                }
            }
        }
        for i in 0..20u32 {
            match db.get(format!("bk{:05}x", i * 13)) {
                Ok(v) => assert_eq!(v, None, "byte {at}"),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption, "byte {at}: {e}"),
            }
        }
        let report = db.verify().unwrap();
        if failed {
            get_failed += 1;
            assert!(
                !report.ok(),
                "byte {at}: a get failed but verify found nothing"
            );
        }
        if !report.ok() {
            verify_flagged += 1;
        }
        db.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!("tail {tail}: get failed {get_failed}, verify flagged {verify_flagged}, open failed {open_failed}");
    assert!(get_failed > 0);
}

// ---------------------------------------------------------------------------
// 5. dropTable's dropped-tables list: crash (power cut or kill) after every
// file-system mutation of "drop a; create a again; fill it", then again at
// a varying step of the reopen that finishes the drop; the kept table and
// plain keys are never touched, and `a` is always one whole state.

mod drop_crash {
    use super::*;
    use std::path::Path;
    use toondb_storage::io::{Crash, FileSystem, PowerCut, PowerLossFs};
    use toondb_storage::{ColumnDef, ColumnType, Schema, TableScanOptions, Value};

    fn schema() -> Schema {
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::I64),
                ColumnDef::new("v", ColumnType::Bytes),
            ],
            "id",
        )
    }

    fn rows(ids: std::ops::Range<i64>, byte: u8, len: usize) -> Vec<Vec<Value>> {
        // Incompressible values, so leaked cells show in table_bytes.
        ids.map(|i| {
            let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ byte as u64;
            let v = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            vec![Value::I64(i), Value::Bytes(v)]
        })
        .collect()
    }

    type Rows = Vec<(i64, Vec<u8>)>;

    fn content(db: &Database, name: &str) -> Option<(u32, Rows)> {
        let t = match db.table(name) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => panic!("table {name}: {e}"),
        };
        let mut scan = t.scan(db, TableScanOptions::default()).unwrap();
        let mut out = Vec::new();
        loop {
            let b = scan.next_batch(512).unwrap();
            if b.is_empty() {
                break;
            }
            for (id, v) in b.columns[0].iter().zip(&b.columns[1]) {
                match (id, v) {
                    (Value::I64(i), Value::Bytes(v)) => out.push((*i, v.clone())),
                    other => panic!("{other:?}"),
                }
            }
        }
        Some((t.id(), out))
    }

    fn as_rows(r: &[Vec<Value>]) -> Rows {
        r.iter()
            .map(|row| match (&row[0], &row[1]) {
                (Value::I64(i), Value::Bytes(v)) => (*i, v.clone()),
                _ => unreachable!(),
            })
            .collect()
    }

    fn fresh(dir: &Path) -> PowerLossFs {
        let fs = PowerLossFs::new();
        fs.create_dir_all(dir).unwrap();
        let mut p = dir.to_path_buf();
        while let Some(parent) = p.parent() {
            fs.sync_dir(parent).unwrap();
            p = parent.to_path_buf();
        }
        fs
    }

    fn opts(fs: &PowerLossFs, sync: bool) -> Options {
        Options::default()
            .sync(sync)
            .memtable_size(64 << 10)
            .block_size(512)
            .fs(fs.shared())
    }

    fn settle(db: &Database) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = db.stats();
            if s.background_error.is_some() || (!s.maintenance_busy && s.immutable_memtables == 0) {
                return;
            }
            assert!(Instant::now() < deadline, "not idle: {s:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn settled_bytes(db: &Database) -> u64 {
        db.flush().unwrap();
        db.compact().unwrap();
        settle(db);
        db.stats().table_bytes
    }

    struct Setup {
        fs: PowerLossFs,
        db: Database,
        a1: Rows,
        a_id: u32,
        b: Rows,
        a3: Vec<Vec<Value>>,
    }

    fn setup(dir: &Path, sync: bool) -> Setup {
        let fs = fresh(dir);
        let db = Database::open_with(dir, opts(&fs, sync)).unwrap();
        let a = db.create_table("a", schema()).unwrap();
        let a1 = rows(0..600, 1, 100);
        a.upsert(&db, &a1).unwrap();
        let b = db.create_table("b", schema()).unwrap();
        let brows = rows(0..300, 2, 50);
        b.upsert(&db, &brows).unwrap();
        db.put("kept", "yes").unwrap();
        db.flush().unwrap();
        settle(&db);
        Setup {
            fs,
            db,
            a1: as_rows(&a1),
            a_id: a.id(),
            b: as_rows(&brows),
            a3: rows(1000..1200, 3, 30),
        }
    }

    /// The steps under test; stops at the first error (a crash).
    fn region(db: &Database, a3: &[Vec<Value>]) -> toondb_storage::Result<()> {
        db.drop_table("a")?;
        let a = db.create_table("a", schema())?;
        a.upsert(db, a3)?;
        Ok(())
    }

    fn open_retrying(fs: &PowerLossFs, dir: &Path, sync: bool) -> Database {
        for _ in 0..3 {
            fs.restart();
            match Database::open_with(dir, opts(fs, sync)) {
                Ok(db) => return db,
                Err(e) if fs.is_down() => {
                    let _ = e;
                    continue;
                }
                Err(e) => panic!("reopen failed: {e}\n{}", fs.trace().join("\n")),
            }
        }
        panic!("reopen kept crashing");
    }

    fn check(s: &Setup, db: &Database, what: &str) {
        assert_eq!(
            db.get("kept").unwrap().as_deref(),
            Some(&b"yes"[..]),
            "{what}"
        );
        let (_, b) = content(db, "b").unwrap_or_else(|| panic!("{what}: table b lost"));
        assert!(
            b == s.b,
            "{what}: table b has {} rows, not its {}",
            b.len(),
            s.b.len()
        );
        match content(db, "a") {
            None => {}
            Some((id, rows)) if id == s.a_id => {
                assert!(
                    rows == s.a1,
                    "{what}: old a has {} rows of {}",
                    rows.len(),
                    s.a1.len()
                )
            }
            Some((_, rows)) => {
                let a3 = as_rows(&s.a3);
                assert!(
                    rows.is_empty() || rows == a3,
                    "{what}: new a has {} rows (want 0 or {}); first {:?}",
                    rows.len(),
                    a3.len(),
                    rows.first()
                );
            }
        }
    }

    #[test]
    fn drop_table_crash_at_every_step_keeps_other_tables_whole() {
        crash_every_step(true);
    }

    /// The same without fsync per commit (power cuts lose unsynced commits).
    #[test]
    fn drop_table_crash_at_every_step_without_sync() {
        crash_every_step(false);
    }

    fn crash_every_step(sync: bool) {
        // The registry of open databases is per process and keyed by path:
        // one path per test.
        let dir = std::path::PathBuf::from(format!("/review-s23/drop-{sync}/db"));
        let dir = dir.as_path();
        // The region's length, without a crash.
        let s = setup(dir, sync);
        let m0 = s.fs.mutations();
        region(&s.db, &s.a3).unwrap();
        settle(&s.db);
        let steps = s.fs.mutations() - m0;
        check(&s, &s.db, "no crash");
        let clean = settled_bytes(&s.db);
        s.db.close().unwrap();
        eprintln!("region: {steps} mutations, {clean} table bytes after it");
        let stride = (steps / 250).max(1);
        let mut n = 1;
        let mut runs = 0;
        while n <= steps + 2 {
            for (ci, crash) in [Crash::Kill, Crash::PowerCut(PowerCut::drop_unsynced())]
                .into_iter()
                .enumerate()
            {
                let s = setup(dir, sync);
                s.fs.crash_after(n, crash);
                let _ = region(&s.db, &s.a3);
                settle(&s.db);
                let _ = s.db.close();
                // The reopen (which finishes an interrupted drop) crashes too.
                s.fs.restart();
                let m = (n * 7 + ci as u64 * 3) % 40 + 1;
                s.fs.crash_after(m, Crash::PowerCut(PowerCut::drop_unsynced()));
                if let Ok(db) = Database::open_with(dir, opts(&s.fs, sync)) {
                    settle(&db);
                    let _ = db.close();
                }
                s.fs.disarm();
                let db = open_retrying(&s.fs, dir, sync);
                settle(&db);
                check(
                    &s,
                    &db,
                    &format!("crash {crash:?} after {n}, reopen crash after {m}"),
                );
                // The list is done: one more reopen changes nothing.
                db.close().unwrap();
                let db = open_retrying(&s.fs, dir, sync);
                check(&s, &db, &format!("crash after {n}, second reopen"));
                // Once the old `a` is gone, its cells are gone too (no leak).
                if content(&db, "a").is_none_or(|(id, _)| id != s.a_id) {
                    let bytes = settled_bytes(&db);
                    assert!(
                        bytes <= clean + 20_000,
                        "crash after {n}: {bytes} table bytes, {clean} after a clean run"
                    );
                }
                db.close().unwrap();
                runs += 1;
            }
            n += stride;
        }
        eprintln!("{runs} crash runs");
    }
}

// ---------------------------------------------------------------------------
// 5b. The open that finishes an interrupted drop must not make the database
// unopenable when the clean-up cannot run (the device is full: the state a
// drop is most likely to be interrupted in). Without a pending drop the
// same open succeeds and every committed key reads back.

mod drop_open {
    use super::*;
    use crate::support::pending_drop::schema;
    use crate::support::OnAppend;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    use std::sync::Arc;
    use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
    use toondb_storage::{Error, Result, Value};

    /// WAL appends left before they fail (negative: no limit), and whether
    /// table-file appends fail ("no space").
    #[derive(Clone, Default)]
    struct Faults {
        wal_left: Arc<AtomicI64>,
        sst_full: Arc<AtomicBool>,
    }

    impl Faults {
        /// Fails an append to a WAL segment (`wal`) or a table file, as
        /// the device would.
        fn check(&self, wal: bool) -> Result<()> {
            if wal {
                let left = self.wal_left.load(Ordering::SeqCst);
                if left == 0 {
                    return Err(Error::new(ErrorKind::Io, "injected: no space (wal)"));
                }
                if left > 0 {
                    self.wal_left.fetch_sub(1, Ordering::SeqCst);
                }
            } else if self.sst_full.load(Ordering::SeqCst) {
                return Err(Error::new(ErrorKind::Io, "injected: no space (table)"));
            }
            Ok(())
        }
    }

    impl WriteHook for Faults {
        fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "wal" || ext == "sst" {
                let (faults, wal) = (self.clone(), ext == "wal");
                OnAppend::boxed(file, move |_, _| faults.check(wal))
            } else {
                file
            }
        }
    }

    fn build(dir: &Path, faults: &Faults, interrupt_a_drop: bool) {
        faults.wal_left.store(-1, Ordering::SeqCst);
        faults.sst_full.store(false, Ordering::SeqCst);
        let opts = Options::default().fs(Arc::new(WrappedFs::os(faults.clone())));
        let db = Database::open_with(dir, opts).unwrap();
        let t = db.create_table("t", schema()).unwrap();
        let rows: Vec<Vec<Value>> = (0..500)
            .map(|i| vec![Value::I64(i), Value::Bytes(vec![i as u8; 100])])
            .collect();
        t.upsert(&db, &rows).unwrap();
        db.put("kept", "yes").unwrap();
        db.flush().unwrap();
        if !interrupt_a_drop {
            // Like the drop's catalog commit: a WAL record the reopen
            // replays and must flush (which fails on the full device).
            db.put("tail", "1").unwrap();
        }
        if interrupt_a_drop {
            // The catalog commit is the last WAL write that succeeds.
            faults.wal_left.store(1, Ordering::SeqCst);
            assert!(db.drop_table("t").is_err());
        }
        let _ = db.close();
    }

    fn reopen_with_a_full_device(dir: &Path, faults: &Faults) -> Result<Database> {
        faults.wal_left.store(-1, Ordering::SeqCst);
        faults.sst_full.store(true, Ordering::SeqCst);
        let opts = Options::default().fs(Arc::new(WrappedFs::os(faults.clone())));
        Database::open_with(dir, opts)
    }

    #[test]
    fn control_without_a_pending_drop_the_open_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        build(dir.path(), &faults, false);
        let db = reopen_with_a_full_device(dir.path(), &faults).unwrap();
        assert_eq!(db.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(db.get("tail").unwrap().as_deref(), Some(&b"1"[..]));
        let _ = db.close();
    }

    // Found failing by review: Database::open ran the whole purge (cell
    // deletes + compact_range) and returned its error, so a database with
    // an interrupted drop could not be opened on a full device. The open's
    // clean-up is now one range delete, best effort.
    #[test]
    fn a_pending_drop_does_not_make_the_open_fail() {
        let dir = tempfile::tempdir().unwrap();
        let faults = Faults::default();
        build(dir.path(), &faults, true);
        let db = reopen_with_a_full_device(dir.path(), &faults)
            .unwrap_or_else(|e| panic!("open failed because of the drop clean-up: {e}"));
        assert_eq!(db.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
        assert_eq!(db.table("t").unwrap_err().kind(), ErrorKind::NotFound);
        let _ = db.close();
        // Space again: the next open finishes the drop.
        faults.sst_full.store(false, Ordering::SeqCst);
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
        db.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// 5c. Measurement (ignored; run by hand): how long an open takes when it
// finishes an interrupted drop of a ~20 MB table, against a plain reopen.

#[test]
#[ignore]
fn measure_open_with_a_pending_drop() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use support::pending_drop::{open_with_wal_budget, schema, WalBudget};
    use toondb_storage::io::WrappedFs;
    use toondb_storage::Value;

    let dir = tempfile::tempdir().unwrap();
    let (db, budget) = open_with_wal_budget(dir.path());
    let t = db.create_table("big", schema()).unwrap();
    let mut x = 1u64;
    for chunk in 0..40 {
        let rows: Vec<Vec<Value>> = (0..1000)
            .map(|i| {
                let v = (0..500)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect();
                vec![Value::I64(chunk * 1000 + i), Value::Bytes(v)]
            })
            .collect();
        t.upsert(&db, &rows).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let bytes = db.stats().table_bytes;
    let _ = db.close();
    drop(db);
    let t0 = Instant::now();
    let db = Database::open(dir.path()).unwrap();
    let plain = t0.elapsed();
    let budget2 = WalBudget::unlimited();
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(
        dir.path(),
        Options::default().fs(Arc::new(WrappedFs::os(budget2.clone()))),
    )
    .unwrap();
    budget2.0.store(1, Ordering::SeqCst);
    assert!(db.drop_table("big").is_err());
    let _ = db.close();
    drop(db);
    let t0 = Instant::now();
    let db = Database::open(dir.path()).unwrap();
    let pending = t0.elapsed();
    assert_eq!(db.table("big").unwrap_err().kind(), ErrorKind::NotFound);
    eprintln!("{bytes} table bytes: plain reopen {plain:?}, reopen finishing the drop {pending:?}");
    let _ = budget;
    db.close().unwrap();
}
