//! Review s25: `Scan::next_batch_into` (the reused key buffer, packed
//! batches), `Scan::restarted` (iterator seeks), level cursors and level-0
//! tables skipped by the scan's bounds, and compaction outputs cut at
//! partitions, against a BTreeMap model: every bound combination, reverse,
//! limit, batch sizes, range tombstones, many versions kept by snapshots.

use std::collections::BTreeMap;
use std::ops::Bound;

use toondb_storage::{Database, EntrySink, Options, PackedBatch, Scan, ScanOptions, Snapshot};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn small() -> Options {
    Options::default()
        .memtable_size(4096)
        .block_size(256)
        .target_file_size(2048)
        .level_base_bytes(8192)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
}

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

fn key(i: u64) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn bound(rng: &mut Rng, n: u64) -> Bound<Vec<u8>> {
    match rng.below(4) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(rng.below(n + 2))),
        2 => Bound::Excluded(key(rng.below(n + 2))),
        // A key between two model keys.
        _ => Bound::Included(format!("k{:04}5", rng.below(n)).into_bytes()),
    }
}

fn model_range(m: &Model, o: &ScanOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    let lo = o.lower.clone();
    let hi = o.upper.clone();
    // BTreeMap::range panics on inverted/equal-excluded ranges: filter by hand.
    let inside = |k: &Vec<u8>| {
        let a = match &lo {
            Bound::Included(l) => k >= l,
            Bound::Excluded(l) => k > l,
            Bound::Unbounded => true,
        };
        let b = match &hi {
            Bound::Included(h) => k <= h,
            Bound::Excluded(h) => k < h,
            Bound::Unbounded => true,
        };
        a && b
    };
    let mut v: Vec<_> = m
        .iter()
        .filter(|(k, _)| inside(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if o.reverse {
        v.reverse();
    }
    if let Some(l) = o.limit {
        v.truncate(l);
    }
    v
}

/// Unpacks one sealed PackedBatch.
fn unseal(sealed: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let n = u32::from_le_bytes(sealed[sealed.len() - 4..].try_into().unwrap()) as usize;
    let at = sealed.len() - 4 - 8 * n;
    let ends: Vec<usize> = (0..2 * n)
        .map(|i| {
            u32::from_le_bytes(sealed[at + 4 * i..at + 4 * i + 4].try_into().unwrap()) as usize
        })
        .collect();
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..n {
        let (ke, ve) = (ends[2 * i], ends[2 * i + 1]);
        out.push((sealed[start..ke].to_vec(), sealed[ke..ve].to_vec()));
        start = ve;
    }
    out
}

/// Drains `scan` with varying batch sizes and byte budgets, through both
/// the packed sink (one reused PackedBatch) and the Vec sink.
fn drain(scan: &mut Scan, rng: &mut Rng) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut packed = PackedBatch::new(true, true);
    for _ in 0..100_000 {
        let max = 1 + rng.below(7) as usize;
        let bytes = [1usize, 10, 30, 1 << 20][rng.below(4) as usize];
        let n = if rng.below(2) == 0 {
            packed.reset(true, true, 1 << 20);
            let n = scan.next_batch_into(max, bytes, &mut packed).unwrap();
            assert_eq!(n, packed.len());
            out.extend(unseal(packed.seal()));
            n
        } else {
            let mut v: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let n = scan
                .next_batch_into(max, bytes, &mut v as &mut dyn EntrySink)
                .unwrap();
            assert_eq!(n, v.len());
            out.extend(v);
            n
        };
        assert!(n <= max);
        if n == 0 {
            return out;
        }
    }
    panic!("scan never ended");
}

fn random_options(rng: &mut Rng, n: u64) -> ScanOptions {
    let mut o = ScanOptions::default()
        .lower(bound(rng, n))
        .upper(bound(rng, n))
        .reverse(rng.below(2) == 0);
    if rng.below(3) == 0 {
        o = o.limit(rng.below(20) as usize);
    }
    if rng.below(5) == 0 {
        o = o.within_prefix(format!("k00{}", rng.below(3)).as_bytes());
    }
    o
}

#[test]
fn scans_and_restarted_scans_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let n = 300u64;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut model = Model::new();
    // (snapshot, model at it, a scan made at the same time)
    let mut held: Vec<(Snapshot, Model, Scan, ScanOptions)> = Vec::new();
    for round in 0..60 {
        for _ in 0..60 {
            let i = rng.below(n);
            match rng.below(10) {
                0..=5 => {
                    let len = [1usize, 8, 40, 300][rng.below(4) as usize];
                    let v = vec![b'a' + (rng.below(26) as u8); len];
                    db.put(key(i), &v).unwrap();
                    model.insert(key(i), v);
                }
                6..=7 => {
                    db.delete(key(i)).unwrap();
                    model.remove(&key(i));
                }
                8 => {
                    let j = (i + 1 + rng.below(30)).min(n + 1);
                    db.delete_range(key(i), key(j)).unwrap();
                    model.retain(|k, _| !(k.as_slice() >= key(i).as_slice() && k < &key(j)));
                }
                _ => {
                    // A range delete through scan-style bounds (db.clear).
                    let lo = Bound::Excluded(key(i));
                    let hi = Bound::Included(key((i + rng.below(10)).min(n)));
                    db.delete_bounds(lo.clone(), hi.clone(), Default::default())
                        .unwrap();
                    let o = ScanOptions::default().lower(lo).upper(hi);
                    for (k, _) in model_range(&model, &o) {
                        model.remove(&k);
                    }
                }
            }
        }
        match round % 7 {
            2 => db.flush().unwrap(),
            5 => db.compact().unwrap(),
            _ => {}
        }
        for _ in 0..6 {
            let o = random_options(&mut rng, n);
            let mut scan = db.scan(o.clone()).unwrap();
            let got = drain(&mut scan, &mut rng);
            assert_eq!(got, model_range(&model, &o), "round {round}: {o:?}");
        }
        if rng.below(3) == 0 {
            let o = random_options(&mut rng, n);
            let snap = db.snapshot().unwrap();
            let mut scan = db.scan(o.clone()).unwrap();
            if rng.below(2) == 0 {
                // Finished scans restart too (an ended iterator's seek).
                assert_eq!(drain(&mut scan, &mut rng), model_range(&model, &o));
            }
            held.push((snap, model.clone(), scan, o));
            if held.len() > 4 {
                held.remove(0);
            }
        }
        // Every held scan, restarted now (after later writes, flushes and
        // compactions), still reads its own data; so does its snapshot.
        for (snap, m, scan, o) in &held {
            let mut o2 = random_options(&mut rng, n);
            o2.reverse = o.reverse;
            let mut re = scan.restarted(o2.clone()).unwrap();
            assert_eq!(
                drain(&mut re, &mut rng),
                model_range(m, &o2),
                "round {round}: restarted {o2:?}"
            );
            let mut s = snap.scan(o2.clone()).unwrap();
            assert_eq!(
                drain(&mut s, &mut rng),
                model_range(m, &o2),
                "round {round}: snapshot {o2:?}"
            );
        }
        for i in 0..n {
            if rng.below(10) == 0 {
                assert_eq!(
                    db.get(key(i)).unwrap(),
                    model.get(&key(i)).cloned(),
                    "round {round}: get {i}"
                );
            }
        }
    }
    drop(held);
    db.compact().unwrap();
    for _ in 0..30 {
        let o = random_options(&mut rng, n);
        let mut scan = db.scan(o.clone()).unwrap();
        assert_eq!(
            drain(&mut scan, &mut rng),
            model_range(&model, &o),
            "final {o:?}"
        );
    }
}

/// Seeks (restarted scans) to exactly each table's smallest and largest
/// key and just around them, forward and reverse, inclusive and exclusive
/// ends, with many versions of boundary keys held by snapshots.
#[test]
fn seeks_to_table_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small().auto_compaction(false)).unwrap();
    let mut model = Model::new();
    let mut snaps = Vec::new();
    for round in 0..6u64 {
        for i in 0..200u64 {
            let v = format!("v{round}-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes();
            db.put(key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        snaps.push((db.snapshot().unwrap(), model.clone()));
        db.flush().unwrap();
    }
    db.compact().unwrap();
    let base = db.scan(ScanOptions::default()).unwrap();
    // Every key as a bound point, and the points between keys.
    let mut points: Vec<Vec<u8>> = (0..201).map(key).collect();
    points.extend((0..200).map(|i| format!("k{i:04}\0").into_bytes()));
    for p in &points {
        for (lo_incl, hi_incl) in [(true, true), (true, false), (false, true), (false, false)] {
            for reverse in [false, true] {
                let lower = if lo_incl {
                    Bound::Included(p.clone())
                } else {
                    Bound::Excluded(p.clone())
                };
                let o = ScanOptions::default()
                    .lower(lower)
                    .reverse(reverse)
                    .limit(3);
                let mut s = base.restarted(o.clone()).unwrap();
                assert_eq!(
                    s.next_batch(10, 1 << 20).unwrap(),
                    model_range(&model, &o),
                    "{o:?}"
                );
                let upper = if hi_incl {
                    Bound::Included(p.clone())
                } else {
                    Bound::Excluded(p.clone())
                };
                let o = ScanOptions::default()
                    .upper(upper)
                    .reverse(reverse)
                    .limit(3);
                let mut s = base.restarted(o.clone()).unwrap();
                assert_eq!(
                    s.next_batch(10, 1 << 20).unwrap(),
                    model_range(&model, &o),
                    "{o:?}"
                );
                // Exactly one key.
                let o = ScanOptions::default()
                    .lower(Bound::Included(p.clone()))
                    .upper(Bound::Included(p.clone()))
                    .reverse(reverse);
                for (snap, m) in &snaps {
                    let mut s = snap.scan(o.clone()).unwrap();
                    assert_eq!(
                        s.next_batch(10, 1 << 20).unwrap(),
                        model_range(m, &o),
                        "{o:?} at {}",
                        snap.ts()
                    );
                }
            }
        }
    }
}

fn sst_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        })
        .count()
}

/// A finished scan kept for a later `restarted` (an iterator that reached
/// its end and may still seek) pins its timestamp only: the table files
/// compaction replaced since are deleted, and a restart still reads the
/// scan's data.
#[test]
fn a_finished_scan_pins_no_table_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small().auto_compaction(false)).unwrap();
    let mut first = Model::new();
    for i in 0..300u64 {
        let v = format!("first-{i}").into_bytes();
        db.put(key(i), &v).unwrap();
        first.insert(key(i), v);
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let mut scan = db.scan(ScanOptions::default()).unwrap();
    let mut rng = Rng(7);
    assert_eq!(
        drain(&mut scan, &mut rng),
        model_range(&first, &ScanOptions::default())
    );
    assert!(scan.is_done());
    for round in 0..3 {
        for i in 0..300u64 {
            db.put(key(i), format!("later-{round}-{i}")).unwrap();
        }
        db.delete_range(key(10), key(20)).unwrap();
        db.flush().unwrap();
        db.compact().unwrap();
    }
    assert_eq!(
        sst_files(dir.path()) as u64,
        db.stats().tables,
        "table files compaction replaced are still on disk: the finished scan pins them"
    );
    // The scan's data is still what a restart reads (its timestamp is pinned).
    for o in [
        ScanOptions::default()
            .lower(Bound::Included(key(5)))
            .limit(20),
        ScanOptions::default().reverse(true),
    ] {
        let mut re = scan.restarted(o.clone()).unwrap();
        assert_eq!(drain(&mut re, &mut rng), model_range(&first, &o));
    }
    drop(scan);
    assert_eq!(db.stats().live_snapshots, 0);
}

/// Plain scans step over the reserved (table) key range with one jump and
/// over range-deleted pieces with others; with keys on both sides of the
/// reserved range, range deletes next to it, small batches, both
/// directions, restarts, in memtables and tables.
#[test]
fn jumps_over_reserved_keys_and_range_deleted_pieces() {
    use toondb_storage::{ColumnDef, ColumnType, Schema, Value};
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let t = db
        .create_table(
            "t",
            Schema::new(
                vec![
                    ColumnDef::new("id", ColumnType::I64),
                    ColumnDef::new("v", ColumnType::I64),
                ],
                "id",
            ),
        )
        .unwrap();
    let rows: Vec<Vec<Value>> = (0..500)
        .map(|i| vec![Value::I64(i), Value::I64(i * 2)])
        .collect();
    t.upsert(&db, &rows).unwrap();
    let mut model = Model::new();
    let user_keys: Vec<Vec<u8>> = (0..60u8)
        .flat_map(|i| {
            [
                vec![0xfe, i],
                vec![0xff, 0x00, 0x00, i],
                vec![0xff, 0x00, 0x02, i],
                vec![0xff, 0x01, i],
                vec![0xff, 0xff, i],
            ]
        })
        .collect();
    for (n, k) in user_keys.iter().enumerate() {
        let v = format!("v{n}").into_bytes();
        db.put(k, &v).unwrap();
        model.insert(k.clone(), v);
    }
    let mut rng = Rng(99);
    for round in 0..4 {
        // Range deletes right below and right above the reserved range.
        let below = (
            vec![0xff, 0x00, 0x00, 10 * round],
            vec![0xff, 0x00, 0x00, 10 * round + 25],
        );
        let above = (
            vec![0xff, 0x00, 0x02, 5 * round],
            vec![0xff, 0x01, 7 * round],
        );
        for (s, e) in [&below, &above] {
            db.delete_range(s, e).unwrap();
            model.retain(|k, _| !(k >= s && k < e));
        }
        // A clear over everything above 0xfe (skips the reserved keys).
        if round == 3 {
            let lo = Bound::Included(vec![0xfe, 50]);
            let hi = Bound::Excluded(vec![0xff, 0x00, 0x00, 50]);
            db.delete_bounds(lo.clone(), hi.clone(), Default::default())
                .unwrap();
            let o = ScanOptions::default().lower(lo).upper(hi);
            for (k, _) in model_range(&model, &o) {
                model.remove(&k);
            }
        }
        match round {
            1 => db.flush().unwrap(),
            2 => db.compact().unwrap(),
            _ => {}
        }
        let base = db.scan(ScanOptions::default()).unwrap();
        for _ in 0..30 {
            let pick =
                |rng: &mut Rng| user_keys[rng.below(user_keys.len() as u64) as usize].clone();
            let mut o = ScanOptions::default().reverse(rng.below(2) == 0);
            if rng.below(2) == 0 {
                o = o.lower(Bound::Included(pick(&mut rng)));
            }
            if rng.below(2) == 0 {
                o = o.upper(Bound::Excluded(pick(&mut rng)));
            }
            if rng.below(3) == 0 {
                o = o.limit(rng.below(50) as usize);
            }
            let mut s = db.scan(o.clone()).unwrap();
            assert_eq!(
                drain(&mut s, &mut rng),
                model_range(&model, &o),
                "round {round} {o:?}"
            );
            let mut s = base.restarted(o.clone()).unwrap();
            assert_eq!(
                drain(&mut s, &mut rng),
                model_range(&model, &o),
                "round {round} restarted {o:?}"
            );
        }
    }
    // The table is intact.
    let row = t.get(&db, &Value::I64(77), None).unwrap().unwrap();
    assert_eq!(row[1].1, Value::I64(154));
}
