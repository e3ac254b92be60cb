//! Review s24 (range tombstones as persistent paintings, memtable key
//! filter, cache-local table filters): attempts to lose data, break
//! isolation or misreport an outcome.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use toondb_storage::{
    Database, ErrorKind, Isolation, Options, ScanOptions, Snapshot, TransactionOptions, WriteBatch,
};

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

fn k(i: u32) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn collect(iter: toondb_storage::DbIter) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.map(|r| r.unwrap()).collect()
}

fn model_delete_range(m: &mut Model, start: &[u8], end: &[u8]) {
    m.retain(|key, _| !(key.as_slice() >= start && key.as_slice() < end));
}

/// Every key of the key space, forward and reverse scans, and a bounded
/// scan starting inside the key space, at `snap`, against `model`.
fn check_snapshot(snap: &Snapshot, model: &Model, n: u32, what: &str) {
    for i in 0..n {
        assert_eq!(
            snap.get(k(i)).unwrap(),
            model.get(&k(i)).cloned(),
            "{what}: get {i} at {}",
            snap.ts()
        );
    }
    let all: Vec<_> = model.iter().map(|(a, b)| (a.clone(), b.clone())).collect();
    assert_eq!(
        collect(snap.iter(ScanOptions::default()).unwrap()),
        all,
        "{what}: forward scan at {}",
        snap.ts()
    );
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(
        collect(snap.iter(ScanOptions::default().reverse(true)).unwrap()),
        rev,
        "{what}: reverse scan at {}",
        snap.ts()
    );
    let lo = k(n / 3);
    let hi = k(2 * n / 3);
    let mid: Vec<_> = all
        .iter()
        .filter(|(key, _)| *key >= lo && *key < hi)
        .cloned()
        .collect();
    let o = ScanOptions::default()
        .lower(Bound::Included(lo.clone()))
        .upper(Bound::Excluded(hi.clone()));
    assert_eq!(
        collect(snap.iter(o.clone()).unwrap()),
        mid,
        "{what}: bounded scan at {}",
        snap.ts()
    );
    let mut mid_rev = mid;
    mid_rev.reverse();
    assert_eq!(
        collect(snap.iter(o.reverse(true)).unwrap()),
        mid_rev,
        "{what}: bounded reverse scan at {}",
        snap.ts()
    );
}

/// Readers at every older snapshot keep exact answers while range deletes
/// land that nest, cut and re-cover each other (several per batch, some at
/// one timestamp with puts of covered keys), spread over memtables that
/// rotate, flushed tables and compaction outputs, with every snapshot held
/// throughout (compaction must keep what each needs).
#[test]
fn every_snapshot_stays_exact_under_cutting_and_nested_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let n = 240u32;
    let db = Database::open_with(dir.path(), small()).unwrap();
    let mut model = Model::new();
    for i in 0..n {
        let v = format!("v0-{i}").into_bytes();
        db.put(k(i), &v).unwrap();
        model.insert(k(i), v);
    }
    db.flush().unwrap();
    let mut snaps: Vec<(Snapshot, Model)> = vec![(db.snapshot().unwrap(), model.clone())];
    let mut seed = 0x1234_5678_9abc_def1u64;
    let mut rnd = move |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % m) as u32
    };
    for step in 0..120u32 {
        let mut batch = WriteBatch::new();
        let mut after: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut ranges = Vec::new();
        // Patterns: widening cutoff, narrowing nested, random cut, a punch.
        let kind = step % 4;
        let (a, b) = match kind {
            0 => (0, (step * 2).min(n)),
            1 => (step / 2, n - step / 2),
            2 => {
                let a = rnd(n as u64);
                (a, (a + 1 + rnd(40)).min(n))
            }
            _ => {
                let a = rnd(n as u64);
                (a, a + 1)
            }
        };
        if a < b {
            ranges.push((k(a), k(b)));
        }
        if step % 5 == 0 {
            // A second, overlapping range delete in the same batch.
            let c = rnd(n as u64);
            let d = (c + 1 + rnd(30)).min(n);
            ranges.push((k(c), k(d)));
        }
        for (s, e) in &ranges {
            batch.delete_range(s, e).unwrap();
        }
        // Puts in the same batch (same timestamp) survive its deletes,
        // and puts of other keys.
        for _ in 0..3 {
            let key = k(rnd(n as u64));
            let v = format!("v{}-{step}", key.len()).into_bytes();
            batch.put(&key, &v).unwrap();
            after.push((key, v));
        }
        if !ranges.is_empty() || !after.is_empty() {
            db.write(batch).unwrap();
        }
        for (s, e) in &ranges {
            model_delete_range(&mut model, s, e);
        }
        for (key, v) in after {
            model.insert(key, v);
        }
        if step % 3 == 0 {
            snaps.push((db.snapshot().unwrap(), model.clone()));
        }
        match step % 17 {
            5 => db.flush().unwrap(),
            11 => db
                .compact_range(Bound::Included(k(rnd(n as u64))), Bound::Unbounded)
                .unwrap(),
            16 => db.compact().unwrap(),
            _ => {}
        }
        if step % 10 == 9 {
            for (i, (snap, m)) in snaps.iter().enumerate() {
                check_snapshot(snap, m, n, &format!("step {step} snapshot {i}"));
            }
        }
    }
    db.flush().unwrap();
    db.compact().unwrap();
    for (i, (snap, m)) in snaps.iter().enumerate() {
        check_snapshot(snap, m, n, &format!("final snapshot {i}"));
    }
    let now = db.snapshot().unwrap();
    check_snapshot(&now, &model, n, "latest");
    drop(now);
    drop(snaps);
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), small()).unwrap();
    let now = db.snapshot().unwrap();
    check_snapshot(&now, &model, n, "reopened");
    drop(now);
    db.compact().unwrap();
    let now = db.snapshot().unwrap();
    check_snapshot(&now, &model, n, "reopened, compacted");
    drop(now);
    db.close().unwrap();
}

/// A serializable transaction conflicts with a range delete committed
/// after its snapshot over a key or range it read or a key it writes,
/// whether the tombstone is still in a memtable or already in a table;
/// one committed before its snapshot, or elsewhere, does not.
#[test]
fn range_deletes_after_the_snapshot_conflict_wherever_they_live() {
    for flush_between in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), small()).unwrap();
        for i in 0..100 {
            db.put(k(i), b"x").unwrap();
        }
        db.delete_range(k(0), k(5)).unwrap(); // before every snapshot
        let ser = TransactionOptions::default().isolation(Isolation::Serializable);
        let range_reader = db.transaction_with(ser).unwrap();
        let o = ScanOptions::default()
            .lower(Bound::Included(k(10)))
            .upper(Bound::Excluded(k(20)));
        assert_eq!(collect(range_reader.iter(o).unwrap()).len(), 10);
        range_reader.put(k(90), b"r").unwrap();
        let point_reader = db.transaction_with(ser).unwrap();
        assert_eq!(point_reader.get(k(30)).unwrap(), Some(b"x".to_vec()));
        point_reader.put(k(91), b"p").unwrap();
        let writer = db.transaction().unwrap();
        writer.put(k(40), b"w").unwrap();
        let bystander = db.transaction_with(ser).unwrap();
        assert_eq!(bystander.get(k(60)).unwrap(), Some(b"x".to_vec()));
        assert_eq!(bystander.get(k(2)).unwrap(), None);
        bystander.put(k(92), b"b").unwrap();
        // Touches 19 (read range), 30 (point read), 40 (write) but not 60
        // nor the range before every snapshot.
        db.delete_range(k(19), k(20)).unwrap();
        db.delete_range(k(30), k(31)).unwrap();
        db.delete_range(k(35), k(45)).unwrap();
        if flush_between {
            db.flush().unwrap();
            db.compact().unwrap();
        }
        let what = format!("flushed: {flush_between}");
        assert_eq!(
            range_reader.commit().unwrap_err().kind(),
            ErrorKind::Conflict,
            "{what}"
        );
        assert_eq!(
            point_reader.commit().unwrap_err().kind(),
            ErrorKind::Conflict,
            "{what}"
        );
        assert_eq!(
            writer.commit().unwrap_err().kind(),
            ErrorKind::Conflict,
            "{what}"
        );
        bystander.commit().unwrap();
        assert_eq!(db.get(k(92)).unwrap(), Some(b"b".to_vec()));
        assert_eq!(db.get(k(90)).unwrap(), Some(b"x".to_vec()));
        assert_eq!(db.get(k(40)).unwrap(), None);
        db.close().unwrap();
    }
}

/// The memtable key filter never hides a committed write: readers on other
/// threads look up every key whose write has returned while the writer
/// keeps writing through many memtable rotations (flushes in the
/// background), and a transaction that read a key conflicts with a later
/// write of it wherever that write is.
#[test]
fn memtable_filter_never_hides_a_returned_write() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path(), small()).unwrap());
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let total = 3000u64;
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (db, done, stop) = (db.clone(), done.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 + r;
                let mut checked = 0u64;
                while !stop.load(Ordering::Acquire) {
                    let upto = done.load(Ordering::Acquire);
                    if upto == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // The newest key half the time: most likely in the
                    // active memtable, just inserted.
                    let i = if seed & 1 == 0 { upto - 1 } else { seed % upto };
                    let key = format!("m{i:08}");
                    assert_eq!(
                        db.get(&key).unwrap(),
                        Some(i.to_le_bytes().to_vec()),
                        "{key} written and acknowledged, read back absent"
                    );
                    checked += 1;
                }
                checked
            })
        })
        .collect();
    for i in 0..total {
        db.put(format!("m{i:08}"), i.to_le_bytes()).unwrap();
        done.store(i + 1, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(db.stats().flushes > 0, "memtables rotated and flushed");
    // Conflicts through `newest_ts`: the conflicting write in the active
    // memtable, or sealed behind a rotation.
    for (n, rotate) in [false, true].into_iter().enumerate() {
        let key = format!("c{n}");
        db.put(&key, b"0").unwrap();
        let t = db.transaction().unwrap();
        assert_eq!(t.get(&key).unwrap(), Some(b"0".to_vec()));
        db.put(&key, b"1").unwrap();
        if rotate {
            for i in 0..200u32 {
                db.put(format!("fill{i:05}"), [7u8; 64]).unwrap();
            }
        }
        t.put(&key, b"t").unwrap();
        assert_eq!(
            t.commit().unwrap_err().kind(),
            ErrorKind::Conflict,
            "rotate {rotate}"
        );
        assert_eq!(db.get(&key).unwrap(), Some(b"1".to_vec()));
    }
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
}

/// Recovery replays the WAL through `Memtable::new` (a filter sized for the
/// default memtable, not this database's) and then keeps writing into a
/// memtable sized from the options: every key replayed or written after is
/// found, and conflicts are still detected against replayed versions.
#[test]
fn memtable_filter_after_replay() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().memtable_size(64 << 20);
    {
        let db = Database::open_with(dir.path(), opts()).unwrap();
        for i in 0..5000u32 {
            db.put(format!("r{i:06}"), i.to_le_bytes()).unwrap();
        }
        let mut b = WriteBatch::new();
        b.delete_range("r000100", "r000200").unwrap();
        b.put("r000150", b"same batch").unwrap();
        db.write(b).unwrap();
        db.close().unwrap();
    }
    let db = Database::open_with(dir.path(), opts()).unwrap();
    let t = db.transaction().unwrap();
    for i in 0..5000u32 {
        let want = match i {
            150 => Some(b"same batch".to_vec()),
            100..200 => None,
            _ => Some(i.to_le_bytes().to_vec()),
        };
        assert_eq!(db.get(format!("r{i:06}")).unwrap(), want, "r{i:06}");
    }
    db.put("r000007", b"after").unwrap();
    t.put("r000007", b"t").unwrap();
    assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
    let t = db.transaction().unwrap();
    db.put("r000008", b"after").unwrap();
    t.put("r000150", b"t").unwrap();
    t.commit().unwrap();
    assert_eq!(db.get("r000150").unwrap(), Some(b"t".to_vec()));
    db.close().unwrap();
}

/// The unbounded clear (its end key is 64 KiB of ff plus a 00) repeated
/// with writes between, across flushes, compactions with snapshots held,
/// and reopen.
#[test]
fn repeated_unbounded_clears() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    let mut model = Model::new();
    for round in 0..12u32 {
        for i in 0..40u32 {
            if (i + round) % 3 != 0 {
                let v = format!("r{round}").into_bytes();
                db.put(k(i), &v).unwrap();
                model.insert(k(i), v);
            }
        }
        if round % 4 == 1 {
            snaps.push((db.snapshot().unwrap(), model.clone()));
        }
        if round % 2 == 0 {
            let ts = db
                .delete_bounds(Bound::Unbounded, Bound::Unbounded, Default::default())
                .unwrap();
            assert!(ts.is_some());
            model.clear();
            // A put right after the clear survives it.
            db.put(k(1), b"after clear").unwrap();
            model.insert(k(1), b"after clear".to_vec());
        }
        match round % 3 {
            0 => db.flush().unwrap(),
            1 => db.compact().unwrap(),
            _ => {}
        }
    }
    for (i, (snap, m)) in snaps.iter().enumerate() {
        check_snapshot(snap, m, 40, &format!("clear snapshot {i}"));
    }
    let now = db.snapshot().unwrap();
    check_snapshot(&now, &model, 40, "latest");
    drop(now);
    drop(snaps);
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), small()).unwrap();
    db.compact().unwrap();
    let now = db.snapshot().unwrap();
    check_snapshot(&now, &model, 40, "reopened");
    drop(now);
    db.close().unwrap();
}

/// A writer keeps putting, deleting and range-deleting over a small key
/// space (memtables rotate, flushes and compactions run all the time) while
/// readers hold snapshots: at one snapshot, forward and reverse scans and a
/// point read of every key agree, and agree again after more churn (a
/// compaction meanwhile must keep what the snapshot sees).
#[test]
fn snapshots_agree_with_themselves_under_churn() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path(), small()).unwrap());
    let n = 200u32;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seed = 0xdead_beef_1234_5678u64;
            let mut ops = 0u64;
            while !stop.load(Ordering::Acquire) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let a = (seed >> 8) as u32 % n;
                match seed % 10 {
                    0 => {
                        let b = (a + 1 + (seed >> 40) as u32 % 50).min(n);
                        db.delete_range(k(a), k(b)).unwrap();
                    }
                    1 => db.delete(k(a)).unwrap(),
                    2 => {
                        let mut batch = WriteBatch::new();
                        batch.delete_range(k(a), k((a + 20).min(n))).unwrap();
                        batch.put(k(a), format!("b{ops}")).unwrap();
                        db.write(batch).unwrap();
                    }
                    _ => db.put(k(a), format!("v{ops}-{}", "x".repeat(30))).unwrap(),
                }
                ops += 1;
            }
            ops
        })
    };
    let read_all = |snap: &Snapshot| -> (Model, Model, Model) {
        let fwd: Model = collect(snap.iter(ScanOptions::default()).unwrap())
            .into_iter()
            .collect();
        let rev: Model = collect(snap.iter(ScanOptions::default().reverse(true)).unwrap())
            .into_iter()
            .collect();
        let gets: Model = (0..n)
            .filter_map(|i| snap.get(k(i)).unwrap().map(|v| (k(i), v)))
            .collect();
        (fwd, rev, gets)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(6);
    let mut rounds = 0;
    while std::time::Instant::now() < deadline {
        let snap = db.snapshot().unwrap();
        let (fwd, rev, gets) = read_all(&snap);
        assert_eq!(fwd, rev, "forward vs reverse at {}", snap.ts());
        assert_eq!(fwd, gets, "scan vs gets at {}", snap.ts());
        std::thread::sleep(std::time::Duration::from_millis(30));
        if rounds % 5 == 0 {
            db.compact_range(Bound::Included(k(50)), Bound::Excluded(k(150)))
                .unwrap();
        }
        let (fwd2, rev2, gets2) = read_all(&snap);
        assert_eq!(fwd, fwd2, "scan changed at {}", snap.ts());
        assert_eq!(rev, rev2, "reverse scan changed at {}", snap.ts());
        assert_eq!(gets, gets2, "gets changed at {}", snap.ts());
        rounds += 1;
    }
    stop.store(true, Ordering::Release);
    assert!(writer.join().unwrap() > 100);
    let stats = db.stats();
    assert!(stats.flushes > 0);
    Arc::try_unwrap(db).ok().unwrap().close().unwrap();
}

/// A serializable read of the keys above `k` (an exclusive lower bound)
/// does not meet a range delete ending at `k ++ 00` (an inclusive upper
/// bound `k`, what `delete_bounds`/`clear({lte})` writes): no key lies in
/// both, so the commit must not fail with a conflict. Before the fix,
/// `overlaps` took `Excluded(l)` as "keys >= l" for the tombstone's end.
#[test]
fn exclusive_read_bound_does_not_meet_a_delete_ending_just_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small()).unwrap();
    for i in 0..30 {
        db.put(k(i), b"x").unwrap();
    }
    for flush in [false, true] {
        let ser = TransactionOptions::default().isolation(Isolation::Serializable);
        let t = db.transaction_with(ser).unwrap();
        let o = ScanOptions::default()
            .lower(Bound::Excluded(k(10)))
            .upper(Bound::Excluded(k(20)));
        assert_eq!(collect(t.iter(o).unwrap()).len(), 9);
        t.put(k(25), b"t").unwrap();
        // Deletes k0005..=k0010: the tombstone ends at k0010 ++ 00.
        db.delete_bounds(
            Bound::Included(k(5)),
            Bound::Included(k(10)),
            Default::default(),
        )
        .unwrap();
        if flush {
            db.flush().unwrap();
        }
        t.commit()
            .unwrap_or_else(|e| panic!("flushed {flush}: spurious {:?}", e.kind()));
        // A range delete that does reach past k0010 still conflicts.
        let t = db.transaction_with(ser).unwrap();
        let o = ScanOptions::default()
            .lower(Bound::Excluded(k(10)))
            .upper(Bound::Excluded(k(20)));
        assert_eq!(collect(t.iter(o).unwrap()).len(), 9);
        t.put(k(26), b"t").unwrap();
        let mut end = k(10);
        end.extend_from_slice(&[0, 0]);
        db.delete_range(k(5), &end).unwrap();
        if flush {
            db.flush().unwrap();
        }
        assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
    }
    db.close().unwrap();
}

/// Tables without a filter, with cache-local filters at different bits per
/// key, and one holding only range tombstones (an empty filter), read
/// side by side: every key written is found, deleted ones are not.
#[test]
fn tables_with_mixed_filters_and_a_tombstone_only_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    for (round, bits) in [0u32, 10, 1, 32].into_iter().enumerate() {
        let db = Database::open_with(
            dir.path(),
            Options::default()
                .bloom_bits_per_key(bits)
                .auto_compaction(false),
        )
        .unwrap();
        for i in 0..500u32 {
            let key = format!("f{:05}", i * 4 + round as u32);
            db.put(&key, key.as_bytes()).unwrap();
            model.insert(key.clone().into_bytes(), key.into_bytes());
        }
        db.flush().unwrap();
        if round == 2 {
            // A flush of nothing but a range delete: a table with 0 keys.
            db.delete_range("f00100", "f00200").unwrap();
            model_delete_range(&mut model, b"f00100", b"f00200");
            db.flush().unwrap();
        }
        db.close().unwrap();
    }
    let db = Database::open_with(dir.path(), Options::default().auto_compaction(false)).unwrap();
    assert!(db.stats().levels.iter().map(|l| l.tables).sum::<u64>() >= 5);
    for i in 0..2100u32 {
        let key = format!("f{i:05}");
        assert_eq!(
            db.get(&key).unwrap(),
            model.get(key.as_bytes()).cloned(),
            "{key}"
        );
    }
    db.compact().unwrap();
    for i in 0..2100u32 {
        let key = format!("f{i:05}");
        assert_eq!(
            db.get(&key).unwrap(),
            model.get(key.as_bytes()).cloned(),
            "{key} compacted"
        );
    }
    db.close().unwrap();
}

/// A backup taken while range tombstones sit in a memtable (nested and
/// cutting ones, read from the persistent set by `tombstones()`) and in
/// tables opens to the same contents.
#[test]
fn backup_carries_memtable_and_table_tombstones() {
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("copy");
    let db = Database::open_with(dir.path(), small()).unwrap();
    let mut model = Model::new();
    for i in 0..300u32 {
        db.put(k(i), b"v").unwrap();
        model.insert(k(i), b"v".to_vec());
    }
    db.delete_range(k(10), k(50)).unwrap();
    model_delete_range(&mut model, &k(10), &k(50));
    db.flush().unwrap();
    for (a, b) in [(100, 200), (120, 180), (140, 160), (60, 70), (0, 5)] {
        db.delete_range(k(a), k(b)).unwrap();
        model_delete_range(&mut model, &k(a), &k(b));
    }
    db.put(k(150), b"back").unwrap();
    model.insert(k(150), b"back".to_vec());
    db.backup(&dest).unwrap();
    db.close().unwrap();
    let copy = Database::open_with(&dest, small()).unwrap();
    let snap = copy.snapshot().unwrap();
    check_snapshot(&snap, &model, 300, "backup");
    drop(snap);
    copy.compact().unwrap();
    let snap = copy.snapshot().unwrap();
    check_snapshot(&snap, &model, 300, "backup compacted");
    drop(snap);
    copy.close().unwrap();
}
