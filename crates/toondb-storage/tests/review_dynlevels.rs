//! Review of `Options::dynamic_level_bytes` (branch dynlevels): model-based
//! checks that no write is lost, no stale value or deleted key comes back,
//! snapshots keep their view, writers never stall for good and compaction
//! goes idle, while level 0 compacts into a base level that is not level 1,
//! levels above the base drain downwards (a tree written under the static
//! targets reopened dynamic, and back), manual compactions go to level 6,
//! and level 0 is compacted because of reads.

mod support;

use support::Rng;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use toondb_storage::{Database, Options, Result, ScanOptions, Snapshot, Stats, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const NUM_LEVELS: usize = 7;

/// Small enough that a few thousand writes reach many levels.
fn small(dynamic: bool) -> Options {
    Options::default()
        .memtable_size(4 << 10)
        .block_size(256)
        .target_file_size(2 << 10)
        .level_base_bytes(8 << 10)
        .level_size_ratio(3)
        .l0_compaction_trigger(2)
        .dynamic_level_bytes(dynamic)
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u64, step: u64, len: u64) -> Vec<u8> {
    let mut v = format!("v{i}-{step}-").into_bytes();
    v.resize(v.len() + len as usize, b'a' + (step % 26) as u8);
    v
}

fn scan_all(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

fn snap_all(s: &Snapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

fn vec_of(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn shape(s: &Stats) -> Vec<(u64, u64)> {
    s.levels.iter().map(|l| (l.tables, l.bytes)).collect()
}

/// Full check: a scan and a point read of every key in the key space.
fn check(db: &Database, model: &Model, keys: u64, what: &str) {
    let got = scan_all(db);
    if got != vec_of(model) {
        let s = db.stats();
        let missing: Vec<_> = model
            .keys()
            .filter(|k| !got.iter().any(|(g, _)| g == *k))
            .take(5)
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let extra: Vec<_> = got
            .iter()
            .filter(|(k, _)| !model.contains_key(k))
            .take(5)
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        let wrong: Vec<_> = got
            .iter()
            .filter(|(k, v)| model.get(k).is_some_and(|m| m != v))
            .take(5)
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(&v[..v.len().min(20)]).into_owned(),
                    String::from_utf8_lossy(&model[k][..model[k].len().min(20)]).into_owned(),
                )
            })
            .collect();
        panic!(
            "{what}: scan differs from the model: missing {missing:?} extra {extra:?} \
             wrong (key, got, want) {wrong:?}; levels {:?}",
            shape(&s)
        );
    }
    for i in 0..keys {
        let k = key(i);
        assert_eq!(
            db.get(&k).unwrap(),
            model.get(&k).cloned(),
            "{what}: get {i}; levels {:?}",
            shape(&db.stats())
        );
    }
}

/// The base level `Policy::targets` computes for the shape `s` (ratio and
/// base bytes as in `small`).
fn dynamic_base(s: &Stats, base_bytes: u64, ratio: u64) -> usize {
    let largest = (1..NUM_LEVELS).map(|n| s.levels[n].bytes).max().unwrap();
    let (mut base, mut target) = (NUM_LEVELS - 1, largest);
    while base > 1 && target > base_bytes {
        base -= 1;
        target /= ratio;
    }
    base
}

/// Waits until the maintenance thread is idle with no sealed memtable, and
/// stays so (no compaction or move counted) for a while: not looping.
fn settle(db: &Database, what: &str) -> Stats {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let s = db.stats();
        if !s.maintenance_busy && s.immutable_memtables == 0 && s.pending_wal_syncs == 0 {
            std::thread::sleep(Duration::from_millis(300));
            let t = db.stats();
            if !t.maintenance_busy
                && t.immutable_memtables == 0
                && t.compactions == s.compactions
                && t.trivial_moves == s.trivial_moves
            {
                return t;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: compaction did not go idle: levels {:?} compactions {} moves {} pending {}",
            shape(&s),
            s.compactions,
            s.trivial_moves,
            s.pending_compaction_bytes
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Settled under the dynamic targets: nothing above the base, level 0 below
/// its trigger, nothing pending.
fn assert_dynamic_shape(s: &Stats, what: &str) {
    let base = dynamic_base(s, 8 << 10, 3);
    for n in 1..base {
        assert_eq!(
            s.levels[n].tables,
            0,
            "{what}: level {n} above the base {base} holds tables: {:?}",
            shape(s)
        );
    }
    assert!(s.levels[0].tables < 2, "{what}: {:?}", shape(s));
    assert_eq!(s.pending_compaction_bytes, 0, "{what}: {:?}", shape(s));
}

/// Random puts, deletes, range deletes, batches, flushes, full and ranged
/// compactions, held snapshots and reopens that toggle the policy, against
/// a BTreeMap; every so often a full scan, every key read, and every held
/// snapshot's view checked.
#[test]
fn model_with_policy_toggled_on_reopen() {
    const KEYS: u64 = 700;
    for seed in [3u64, 11, 29, 97] {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut dynamic = seed % 2 == 1;
        let mut db = Database::open_with(dir.path(), small(dynamic)).unwrap();
        let mut model = Model::new();
        let mut held: Vec<(Snapshot, Model)> = Vec::new();
        let mut max_base_seen = NUM_LEVELS;
        for step in 0..5000u64 {
            let i = rng.below(KEYS);
            let k = key(i);
            match rng.below(1000) {
                0..=449 => {
                    let v = value(i, step, rng.below(120));
                    db.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                450..=599 => {
                    db.delete(&k).unwrap();
                    model.remove(&k);
                }
                600..=619 => {
                    let j = (i + 1 + rng.below(40)).min(KEYS);
                    db.delete_range(key(i), key(j)).unwrap();
                    let doomed: Vec<Vec<u8>> = model
                        .range(key(i)..key(j))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for d in doomed {
                        model.remove(&d);
                    }
                }
                620..=669 => {
                    // A batch of sequential puts: grows the tree.
                    let mut b = WriteBatch::new();
                    for j in i..(i + 30).min(KEYS) {
                        let v = value(j, step, 40 + rng.below(80));
                        b.put(key(j), &v).unwrap();
                        model.insert(key(j), v);
                    }
                    db.write(b).unwrap();
                }
                670..=699 => db.flush().unwrap(),
                700..=704 => db.compact().unwrap(),
                705..=714 => {
                    let j = (i + rng.below(100)).min(KEYS);
                    db.compact_range(Bound::Included(key(i)), Bound::Excluded(key(j)))
                        .unwrap();
                }
                715..=734 => {
                    if held.len() < 3 {
                        held.push((db.snapshot().unwrap(), model.clone()));
                    }
                }
                735..=754 => {
                    if !held.is_empty() {
                        let n = rng.below(held.len() as u64) as usize;
                        held.swap_remove(n);
                    }
                }
                755..=764 => {
                    held.clear();
                    db.close().unwrap();
                    if rng.below(2) == 0 {
                        dynamic = !dynamic;
                    }
                    db = Database::open_with(dir.path(), small(dynamic)).unwrap();
                    check(
                        &db,
                        &model,
                        KEYS,
                        &format!("seed {seed} step {step} reopened"),
                    );
                }
                _ => {
                    assert_eq!(
                        db.get(&k).unwrap(),
                        model.get(&k).cloned(),
                        "seed {seed} step {step} get {i}; levels {:?}",
                        shape(&db.stats())
                    );
                }
            }
            if step % 250 == 0 {
                let what = format!("seed {seed} step {step} dynamic {dynamic}");
                check(&db, &model, KEYS, &what);
                for (snap, view) in &held {
                    assert_eq!(snap_all(snap), vec_of(view), "{what}: snapshot view");
                    for probe in 0..40 {
                        let k = key(probe * 17);
                        assert_eq!(snap.get(&k).unwrap(), view.get(&k).cloned(), "{what}");
                    }
                }
                if dynamic {
                    max_base_seen = max_base_seen.min(dynamic_base(&db.stats(), 8 << 10, 3));
                }
            }
        }
        let what = format!("seed {seed} end dynamic {dynamic}");
        let s = settle(&db, &what);
        if dynamic {
            assert_dynamic_shape(&s, &what);
        }
        check(&db, &model, KEYS, &what);
        for (snap, view) in &held {
            assert_eq!(snap_all(snap), vec_of(view), "{what}: snapshot view");
        }
        held.clear();
        // And once more under the other policy.
        db.close().unwrap();
        let db = Database::open_with(dir.path(), small(!dynamic)).unwrap();
        let s = settle(&db, &format!("{what}, reopened toggled"));
        if !dynamic {
            assert_dynamic_shape(&s, &format!("{what}, reopened dynamic"));
        }
        check(&db, &model, KEYS, &format!("{what}, reopened toggled"));
        println!(
            "seed {seed}: smallest base seen {max_base_seen}, final {:?}",
            shape(&s)
        );
        db.close().unwrap();
    }
}

/// A tree written under the static targets (data in levels 1..) reopened
/// with the dynamic default: every read correct at every step while levels
/// drain towards the bottom, with writes (overwrites, deletes, range
/// deletes) going on meanwhile, then idle with nothing above the base. And
/// back to static.
#[test]
fn static_tree_reopened_dynamic_drains_with_reads_correct_throughout() {
    const KEYS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = Rng(0x5eed);
    {
        let db = Database::open_with(dir.path(), small(false)).unwrap();
        for round in 0..3u64 {
            for n in 0..KEYS {
                let i = (n * 7919) % KEYS;
                if round > 0 && rng.below(5) == 0 {
                    db.delete(key(i)).unwrap();
                    model.remove(&key(i));
                } else {
                    let v = value(i, round, 30 + rng.below(40));
                    db.put(key(i), &v).unwrap();
                    model.insert(key(i), v);
                }
            }
        }
        db.delete_range(key(100), key(160)).unwrap();
        let doomed: Vec<_> = model
            .range(key(100)..key(160))
            .map(|(k, _)| k.clone())
            .collect();
        for d in doomed {
            model.remove(&d);
        }
        db.flush().unwrap();
        let s = settle(&db, "static load");
        let used: Vec<usize> = (1..NUM_LEVELS)
            .filter(|&n| s.levels[n].tables > 0)
            .collect();
        assert!(
            used.len() >= 3 && used[0] == 1,
            "the test wants a static tree in several levels from 1: {:?}",
            shape(&s)
        );
        check(&db, &model, KEYS, "static load");
        db.close().unwrap();
    }
    let db = Database::open_with(dir.path(), small(true)).unwrap();
    let before = shape(&db.stats());
    let snap = db.snapshot().unwrap();
    let snap_view = model.clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut step = 0u64;
    let mut checks = 0;
    loop {
        // A few writes of the keys the drain is moving.
        for _ in 0..20 {
            let i = rng.below(KEYS);
            match rng.below(10) {
                0..=5 => {
                    let v = value(i, 1000 + step, rng.below(60));
                    db.put(key(i), &v).unwrap();
                    model.insert(key(i), v);
                }
                6..=8 => {
                    db.delete(key(i)).unwrap();
                    model.remove(&key(i));
                }
                _ => {
                    let j = (i + 10).min(KEYS);
                    db.delete_range(key(i), key(j)).unwrap();
                    let doomed: Vec<_> = model
                        .range(key(i)..key(j))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for d in doomed {
                        model.remove(&d);
                    }
                }
            }
            step += 1;
        }
        // Reads racing the drain: a scan and sampled gets.
        assert_eq!(
            scan_all(&db),
            vec_of(&model),
            "during the drain, step {step}"
        );
        for _ in 0..50 {
            let k = key(rng.below(KEYS));
            assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "step {step}");
        }
        checks += 1;
        if checks == 3 {
            // A ranged manual compaction while levels above the base still
            // hold tables: its outputs go to level 6.
            db.compact_range(Bound::Included(key(500)), Bound::Excluded(key(900)))
                .unwrap();
            assert_eq!(
                scan_all(&db),
                vec_of(&model),
                "after compact_range mid-drain"
            );
        }
        let s = db.stats();
        let base = dynamic_base(&s, 8 << 10, 3);
        let above = (1..base).any(|n| s.levels[n].tables > 0);
        if !above && checks > 20 && !s.maintenance_busy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "levels above the base never drained: {:?}",
            shape(&s)
        );
    }
    db.flush().unwrap();
    let s = settle(&db, "after the drain");
    assert_dynamic_shape(&s, "after the drain");
    assert!(s.levels[NUM_LEVELS - 1].tables > 0, "{:?}", shape(&s));
    check(&db, &model, KEYS, "after the drain");
    assert_eq!(
        snap_all(&snap),
        vec_of(&snap_view),
        "snapshot from before the drain"
    );
    println!("static {before:?}\n-> dynamic {:?}", shape(&s));
    drop(snap);
    db.close().unwrap();
    let db = Database::open_with(dir.path(), small(true)).unwrap();
    check(&db, &model, KEYS, "reopened dynamic");
    db.close().unwrap();
    let db = Database::open_with(dir.path(), small(false)).unwrap();
    settle(&db, "back to static");
    check(&db, &model, KEYS, "back to static");
    db.close().unwrap();
}

/// Point deletes and range deletes whose level-0 tables compact into a base
/// level far below level 1, over older versions in the levels under it,
/// with a snapshot from before the deletes; ranged manual compactions of
/// part of the tree; and a reopen.
#[test]
fn tombstones_compacted_into_a_deep_base_do_not_resurrect() {
    const KEYS: u64 = 4000;
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), small(true)).unwrap();
    let mut model = Model::new();
    for n in 0..KEYS {
        let i = (n * 7919) % KEYS;
        let v = value(i, 0, 50);
        db.put(key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    db.flush().unwrap();
    let s = settle(&db, "load");
    let base = dynamic_base(&s, 8 << 10, 3);
    assert!(
        base > 1 && base < NUM_LEVELS - 1,
        "wants a base between: {:?}",
        shape(&s)
    );
    let snap = db.snapshot().unwrap();
    let snap_view = model.clone();
    let mut rng = Rng(77);
    for round in 0..6u64 {
        for _ in 0..300 {
            let i = rng.below(KEYS);
            db.delete(key(i)).unwrap();
            model.remove(&key(i));
        }
        let i = rng.below(KEYS);
        db.delete_range(key(i), key(i + 50)).unwrap();
        let doomed: Vec<_> = model
            .range(key(i)..key(i + 50))
            .map(|(k, _)| k.clone())
            .collect();
        for d in doomed {
            model.remove(&d);
        }
        db.flush().unwrap();
        check(&db, &model, KEYS, &format!("round {round}"));
        if round == 2 {
            // The snapshot goes: tombstones may now be dropped.
            assert_eq!(snap_all(&snap), vec_of(&snap_view), "snapshot view");
        }
        if round == 3 {
            let lo = rng.below(KEYS / 2);
            db.compact_range(Bound::Included(key(lo)), Bound::Excluded(key(lo + 500)))
                .unwrap();
            check(&db, &model, KEYS, "after compact_range");
        }
    }
    drop(snap);
    settle(&db, "deletes");
    check(&db, &model, KEYS, "deletes settled");
    db.compact_range(Bound::Included(key(1000)), Bound::Excluded(key(1500)))
        .unwrap();
    check(&db, &model, KEYS, "compact_range after the snapshot went");
    let s = settle(&db, "after compact_range");
    assert_dynamic_shape(&s, "after compact_range");
    db.close().unwrap();
    let db = Database::open_with(dir.path(), small(true)).unwrap();
    check(&db, &model, KEYS, "reopened");
    db.compact().unwrap();
    let s = db.stats();
    assert!(
        (0..NUM_LEVELS - 1).all(|n| s.levels[n].tables == 0),
        "compact() leaves everything in level 6: {:?}",
        shape(&s)
    );
    check(&db, &model, KEYS, "after compact");
    db.close().unwrap();
}

/// Read-triggered level-0 compaction under the dynamic targets, over a
/// tree whose base is not level 1: level 0 (older versions below it, a
/// snapshot held) goes into the base and nothing comes back stale.
#[test]
fn level_0_compacted_by_reads_into_the_base() {
    const KEYS: u64 = 4000;
    let dir = tempfile::tempdir().unwrap();
    let opts = small(true).l0_compaction_trigger(8);
    let db = Database::open_with(dir.path(), opts).unwrap();
    let mut model = Model::new();
    for i in 0..KEYS {
        let v = value(i, 0, 50);
        db.put(key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    db.compact().unwrap();
    let s = settle(&db, "load");
    assert_eq!(s.levels[0].tables, 0);
    let snap = db.snapshot().unwrap();
    let snap_view = model.clone();
    // Two level-0 tables of overwrites and deletes over the whole range.
    for t in 0..2u64 {
        for i in (t..KEYS).step_by(100) {
            if i % 3 == 0 {
                db.delete(key(i)).unwrap();
                model.remove(&key(i));
            } else {
                let v = value(i, 1 + t, 10);
                db.put(key(i), &v).unwrap();
                model.insert(key(i), v);
            }
        }
        db.flush().unwrap();
    }
    let l0 = db.stats().levels[0].tables;
    assert!((2..8).contains(&l0), "{:?}", shape(&db.stats()));
    // Reads of absent keys inside level 0's range probe both tables.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0u64;
    while db.stats().levels[0].tables > 0 {
        for _ in 0..1000 {
            let k = format!("key{:06}x", n % KEYS).into_bytes();
            assert_eq!(db.get(&k).unwrap(), None);
            n += 1;
        }
        assert!(
            Instant::now() < deadline,
            "level 0 never compacted by reads"
        );
    }
    settle(&db, "after the read-triggered compaction");
    check(&db, &model, KEYS, "after the read-triggered compaction");
    assert_eq!(snap_all(&snap), vec_of(&snap_view));
    db.close().unwrap();
}

/// Write stalls with the tightest thresholds: a static tree reopened
/// dynamic (everything above the base counts as pending) and a fresh
/// dynamic tree; writers must finish.
#[test]
fn tight_stall_thresholds_never_hang_writers() {
    const KEYS: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    {
        let db = Database::open_with(dir.path(), small(false)).unwrap();
        for n in 0..KEYS {
            let i = (n * 7919) % KEYS;
            let v = value(i, 0, 60);
            db.put(key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        db.flush().unwrap();
        settle(&db, "static load");
        db.close().unwrap();
    }
    let tight = small(true)
        .l0_slowdown_writes(2)
        .l0_stop_writes(3)
        .pending_compaction_bytes_slowdown(1)
        .pending_compaction_bytes_stop(1);
    let db = std::sync::Arc::new(Database::open_with(dir.path(), tight).unwrap());
    let s = db.stats();
    assert!(
        s.pending_compaction_bytes > 0,
        "a static tree opened dynamic has pending bytes: {:?}",
        shape(&s)
    );
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            let mut m = Model::new();
            for round in 0..2u64 {
                for n in 0..KEYS {
                    let i = (n * 104_729) % KEYS;
                    let v = value(i, 10 + round, 40);
                    db.put(key(i), &v).unwrap();
                    m.insert(key(i), v);
                }
            }
            m
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !writer.is_finished() {
        assert!(
            Instant::now() < deadline,
            "writer stalled: {:?} pending {}",
            shape(&db.stats()),
            db.stats().pending_compaction_bytes
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let written = writer.join().unwrap();
    model.extend(written);
    let s = settle(&db, "after the stalled writes");
    assert_dynamic_shape(&s, "after the stalled writes");
    check(&db, &model, KEYS, "after the stalled writes");
    assert!(s.write_stalls > 0, "the test wants stalls: {s:?}");
}
