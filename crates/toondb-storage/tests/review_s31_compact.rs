//! Review of `compact()` / `compact_range()` writing their output into the
//! first level at or below the bottom level in use whose target holds it
//! (pick.rs `manual_output_level`). With 1 KiB level targets and a ratio of
//! 2, manual compactions of random ranges send outputs to levels 2..6 while
//! other tables stay in shallower levels, automatic compactions and flushes
//! run in between, snapshots pin old versions, and point and range
//! tombstones must be dropped only where nothing older can come back. Every
//! read is checked against a `BTreeMap` model (snapshots against the model
//! as of their creation), then again after a reopen, after `verify()` and in
//! a backup.

use std::collections::BTreeMap;
use std::ops::Bound;

use toondb_storage::{Database, Options, ScanOptions, Snapshot};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Small deterministic generator (xorshift64*): seeds are reproducible
/// without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn tiny(auto: bool) -> Options {
    tiny_base(auto, 1024)
}

/// The static level targets: these tests check where `compact()` places
/// its outputs under them (the first level whose target holds them). The
/// dynamic targets (the default) put them in the bottom level; the
/// `..._dynamic_targets` model tests below run the same steps under them.
fn tiny_base(auto: bool, base: u64) -> Options {
    Options::default()
        .dynamic_level_bytes(false)
        .memtable_size(4 << 10)
        .block_size(256)
        .target_file_size(2 << 10)
        .level_base_bytes(base)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
        .auto_compaction(auto)
}

const KEYS: u64 = 600;

fn key(i: u64) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

fn value(rng: &mut Rng, i: u64, step: usize) -> Vec<u8> {
    let pad = rng.below(60) as usize;
    format!("v{i}-{step}-{}", "x".repeat(pad)).into_bytes()
}

fn scan_all(iter: toondb_storage::DbIter) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.collect::<toondb_storage::Result<Vec<_>>>().unwrap()
}

fn model_vec(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Every read path against the model: a full scan, a bounded scan and a
/// few gets (present and absent keys), at the head and in each snapshot.
fn check(db: &Database, model: &Model, snaps: &[(Snapshot, Model)], rng: &mut Rng, at: &str) {
    assert_eq!(
        scan_all(db.iter(ScanOptions::default()).unwrap()),
        model_vec(model),
        "full scan at {at}: levels {:?}",
        levels(db)
    );
    for _ in 0..8 {
        let k = key(rng.below(KEYS));
        assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "get at {at}");
    }
    for (i, (snap, m)) in snaps.iter().enumerate() {
        assert_eq!(
            scan_all(snap.iter(ScanOptions::default()).unwrap()),
            model_vec(m),
            "snapshot {i} scan at {at}: levels {:?}",
            levels(db)
        );
        for _ in 0..4 {
            let k = key(rng.below(KEYS));
            assert_eq!(
                snap.get(&k).unwrap(),
                m.get(&k).cloned(),
                "snapshot get at {at}"
            );
        }
    }
}

fn levels(db: &Database) -> Vec<(u64, u64)> {
    db.stats()
        .levels
        .iter()
        .map(|l| (l.tables, l.bytes))
        .collect()
}

/// Stats agree with themselves: per-level tables and bytes add up to the
/// totals.
fn check_stats(db: &Database, at: &str) {
    let s = db.stats();
    let tables: u64 = s.levels.iter().map(|l| l.tables).sum();
    let bytes: u64 = s.levels.iter().map(|l| l.bytes).sum();
    assert_eq!((tables, bytes), (s.tables, s.table_bytes), "stats at {at}");
    assert!(
        s.compaction_error.is_none(),
        "{at}: {:?}",
        s.compaction_error
    );
    assert!(
        s.background_error.is_none(),
        "{at}: {:?}",
        s.background_error
    );
}

fn random_bound(rng: &mut Rng) -> Bound<Vec<u8>> {
    match rng.below(5) {
        0 => Bound::Unbounded,
        1 | 2 => Bound::Included(key(rng.below(KEYS))),
        _ => Bound::Excluded(key(rng.below(KEYS))),
    }
}

/// One seeded run; returns a bit per level that held a table after some
/// step, so the caller can check the runs did exercise middle and deep
/// outputs.
fn run(seed: u64, steps: usize, auto: bool) -> u32 {
    run_with(seed, steps, auto, false)
}

/// [`run`] under the static (`dynamic` false) or the dynamic level targets.
fn run_with(seed: u64, steps: usize, auto: bool, dynamic: bool) -> u32 {
    // Level targets from 1 KiB (everything ends in level 6) to 8 KiB
    // (the ~30 KiB of live data fits level 3 or 4).
    let base = 1024u64 << (seed % 4);
    let tiny = |auto| tiny_base(auto, base).dynamic_level_bytes(dynamic);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut db = Database::open_with(dir.path(), tiny(auto)).unwrap();
    let mut model = Model::new();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    let mut used = 0u32;
    for step in 0..steps {
        let at = format!("seed {seed} step {step}");
        match rng.below(100) {
            0..=54 => {
                let i = rng.below(KEYS);
                let v = value(&mut rng, i, step);
                db.put(key(i), &v).unwrap();
                model.insert(key(i), v);
            }
            55..=69 => {
                let i = rng.below(KEYS);
                db.delete(key(i)).unwrap();
                model.remove(&key(i));
            }
            70..=73 => {
                let a = rng.below(KEYS);
                let b = (a + 1 + rng.below(80)).min(KEYS);
                db.delete_range(key(a), key(b)).unwrap();
                let doomed: Vec<Vec<u8>> = model
                    .range(key(a)..key(b))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    model.remove(&k);
                }
            }
            74..=76 => {
                if snaps.len() < 3 {
                    snaps.push((db.snapshot().unwrap(), model.clone()));
                }
            }
            77..=78 => {
                if !snaps.is_empty() {
                    let i = rng.below(snaps.len() as u64) as usize;
                    let (s, _) = snaps.swap_remove(i);
                    s.release();
                }
            }
            79..=86 => {
                let (lo, hi) = (random_bound(&mut rng), random_bound(&mut rng));
                db.compact_range(lo, hi).unwrap();
                check(&db, &model, &snaps, &mut rng, &at);
                check_stats(&db, &at);
            }
            87 => {
                db.compact().unwrap();
                check(&db, &model, &snaps, &mut rng, &at);
                check_stats(&db, &at);
                let s = db.stats();
                // With no snapshot, compact() leaves tables in one level
                // only (plus nothing in level 0: memtables were flushed).
                if snaps.is_empty() && auto {
                    // Automatic compactions may run right after; only the
                    // model check above is asserted then.
                } else if snaps.is_empty() {
                    let used = s.levels.iter().filter(|l| l.tables > 0).count();
                    assert!(used <= 1, "{at}: compact() left {:?}", levels(&db));
                }
            }
            88..=91 => db.flush().unwrap(),
            92 => {
                for (s, _) in snaps.drain(..) {
                    s.release();
                }
                db.close().unwrap();
                db = Database::open_with(dir.path(), tiny(auto)).unwrap();
                check(&db, &model, &snaps, &mut rng, &at);
            }
            _ => {
                let k = key(rng.below(KEYS));
                assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "{at}");
            }
        }
        for (n, l) in db.stats().levels.iter().enumerate() {
            if l.tables > 0 {
                used |= 1 << n;
            }
        }
    }
    let at = format!("seed {seed} end");
    check(&db, &model, &snaps, &mut rng, &at);
    let report = db.verify().unwrap();
    assert!(report.ok(), "{at}: {:?}", report.problems);
    let backup_dir = tempfile::tempdir().unwrap();
    let dest = backup_dir.path().join("b");
    db.backup(&dest).unwrap();
    for (s, _) in snaps.drain(..) {
        s.release();
    }
    db.close().unwrap();
    let db = Database::open_with(dir.path(), tiny(auto)).unwrap();
    check(&db, &model, &[], &mut rng, &format!("{at} reopened"));
    // A full compact with no snapshot drops every tombstone; nothing
    // deleted comes back.
    db.compact().unwrap();
    check(&db, &model, &[], &mut rng, &format!("{at} compacted"));
    db.close().unwrap();
    let b = Database::open_with(&dest, tiny(auto)).unwrap();
    check(&b, &model, &[], &mut rng, &format!("{at} backup"));
    assert!(b.verify().unwrap().ok());
    b.close().unwrap();
    used
}

/// Every level from 1 to 6 held tables in some run.
fn levels_exercised(used: &[u32]) {
    let shown: Vec<String> = used.iter().map(|u| format!("{u:07b}")).collect();
    eprintln!("levels used per seed (bit n = level n): {shown:?}");
    let any = used.iter().fold(0, |a, u| a | u);
    assert_eq!(any & 0b111_1110, 0b111_1110, "{shown:?}");
}

#[test]
fn random_compact_ranges_agree_with_a_model_without_automatic_compaction() {
    let mut used = Vec::new();
    for seed in 1..=8u64 {
        used.push(run(seed, 2500, false));
    }
    levels_exercised(&used);
}

#[test]
fn random_compact_ranges_agree_with_a_model_dynamic_targets() {
    for seed in 201..=206u64 {
        run_with(seed, 2500, true, true);
        run_with(seed + 100, 1500, false, true);
    }
}

#[test]
fn random_compact_ranges_agree_with_a_model_with_automatic_compaction() {
    let mut used = Vec::new();
    for seed in 101..=108u64 {
        used.push(run(seed, 2500, true));
    }
    levels_exercised(&used);
}

/// A writer thread (the only one that writes, so it owns the model) puts,
/// deletes and range-deletes while the test thread runs `compact_range`
/// over random ranges and a reader thread holds snapshots across those
/// compactions, reading each one twice: a snapshot's view must not change
/// while outputs land in levels below tables that stay where they are.
/// Then the final state must match the model, and again after a reopen.
#[test]
fn compact_ranges_racing_writes_flushes_and_snapshots() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    for seed in [7u64, 8] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open_with(dir.path(), tiny(true)).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(seed * 31 + 1);
                let mut model = Model::new();
                for step in 0..6000usize {
                    let i = rng.below(KEYS);
                    match rng.below(20) {
                        0..=13 => {
                            let v = value(&mut rng, i, step);
                            db.put(key(i), &v).unwrap();
                            model.insert(key(i), v);
                        }
                        14..=18 => {
                            db.delete(key(i)).unwrap();
                            model.remove(&key(i));
                        }
                        _ => {
                            let b = (i + 1 + rng.below(40)).min(KEYS);
                            db.delete_range(key(i), key(b)).unwrap();
                            let doomed: Vec<Vec<u8>> = model
                                .range(key(i)..key(b))
                                .map(|(k, _)| k.clone())
                                .collect();
                            for k in doomed {
                                model.remove(&k);
                            }
                        }
                    }
                }
                model
            })
        };
        let reader = {
            let db = db.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) && rounds < 200 {
                    let snap = db.snapshot().unwrap();
                    let first = scan_all(snap.iter(ScanOptions::default()).unwrap());
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let second = scan_all(snap.iter(ScanOptions::default()).unwrap());
                    assert_eq!(first, second, "a snapshot's view changed");
                    for (k, v) in first.iter().step_by(17) {
                        assert_eq!(snap.get(k).unwrap().as_ref(), Some(v));
                    }
                    snap.release();
                    rounds += 1;
                }
            })
        };
        let mut rng = Rng(seed * 77 + 5);
        while !writer.is_finished() {
            let (lo, hi) = (random_bound(&mut rng), random_bound(&mut rng));
            db.compact_range(lo, hi).unwrap();
        }
        let model = writer.join().unwrap();
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let at = format!("race seed {seed}");
        check(&db, &model, &[], &mut rng, &at);
        check_stats(&db, &at);
        db.compact_range(Bound::Included(key(100)), Bound::Excluded(key(300)))
            .unwrap();
        check(&db, &model, &[], &mut rng, &at);
        db.close().unwrap();
        drop(db);
        let db = Database::open_with(dir.path(), tiny(true)).unwrap();
        check(&db, &model, &[], &mut rng, &format!("{at} reopened"));
        assert!(db.verify().unwrap().ok());
        db.close().unwrap();
    }
}

/// Data in level 1 only outside the range, a range compacted past an empty
/// level 2 into level 3: a later delete (point and range) of keys in that
/// range, held by a snapshot, must survive compactions of level 1 and of
/// the range until the snapshot goes, and never bring old values back.
#[test]
fn an_empty_level_between_shallow_tables_and_a_deep_output() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny(false)).unwrap();
    let mut model = Model::new();
    let mut rng = Rng(3);
    // A few small keys far left, compacted into level 1 (under 1 KiB).
    for i in 0..5u64 {
        db.put(key(i), b"left").unwrap();
        model.insert(key(i), b"left".to_vec());
    }
    db.compact().unwrap();
    let s = levels(&db);
    assert!(s[1].0 > 0 && s[2..].iter().all(|l| l.0 == 0), "{s:?}");
    // Then ~5 KiB on the right, compacted alone: over level 1's and 2's
    // targets (1 and 2 KiB), so it goes to level 3 or deeper while the
    // left stays in level 1.
    for i in 300..400u64 {
        let v = value(&mut rng, i, 0);
        let v = [v.as_slice(), &[b'y'; 40]].concat();
        db.put(key(i), &v).unwrap();
        model.insert(key(i), v);
    }
    db.compact_range(Bound::Included(key(300)), Bound::Unbounded)
        .unwrap();
    let s = levels(&db);
    let deep = (3..s.len()).find(|&n| s[n].0 > 0);
    assert!(
        s[1].0 > 0 && s[2].0 == 0 && deep.is_some(),
        "expected level 1 and a level >= 3 with level 2 empty: {s:?}"
    );
    check(&db, &model, &[], &mut rng, "after deep compaction");
    // Deletes over the deep range, a snapshot before them.
    let before = db.snapshot().unwrap();
    let before_model = model.clone();
    db.delete(key(310)).unwrap();
    model.remove(&key(310));
    db.delete_range(key(320), key(350)).unwrap();
    for i in 320..350 {
        model.remove(&key(i));
    }
    // Compact the left (level 1 → stays shallow) and the deleted range,
    // with the snapshot held: the tombstones must stay.
    db.compact_range(Bound::Unbounded, Bound::Included(key(10)))
        .unwrap();
    db.compact_range(Bound::Included(key(305)), Bound::Included(key(355)))
        .unwrap();
    let snaps = vec![(before, before_model)];
    check(&db, &model, &snaps, &mut rng, "snapshot held");
    for (s, _) in snaps {
        s.release();
    }
    // Without it, the tombstones go and nothing comes back.
    db.compact_range(Bound::Included(key(305)), Bound::Included(key(355)))
        .unwrap();
    check(&db, &model, &[], &mut rng, "snapshot released");
    assert_eq!(db.stats().range_tombstones, 0, "{:?}", levels(&db));
    db.compact().unwrap();
    check(&db, &model, &[], &mut rng, "compacted");
    db.close().unwrap();
    let db = Database::open_with(dir.path(), tiny(false)).unwrap();
    check(&db, &model, &[], &mut rng, "reopened");
    db.close().unwrap();
}

/// What `stats()` says about a `compact()` that writes a level below the
/// bottom one in use: the output level's `compacted_in` grows by every
/// input byte (all of them come from shallower levels now, the old bottom
/// level's included), its `compaction_bytes_written` by what it holds, no
/// other level's counters move, and nothing is left pending.
#[test]
fn stats_of_a_compact_into_a_deeper_level() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny(false)).unwrap();
    let mut rng = Rng(11);
    for round in 0..2usize {
        for i in 0..30u64 {
            let v = value(&mut rng, i, round);
            db.put(key(i), v).unwrap();
        }
        db.flush().unwrap();
    }
    // First into a level of its own (level 1 is empty: bottom = 1).
    db.compact().unwrap();
    let mid = db.stats();
    let first = (1..mid.levels.len())
        .find(|&n| mid.levels[n].tables > 0)
        .unwrap();
    assert!(first >= 2, "{:?}", levels(&db));
    // More data on top, in level 0 (overlapping the first keys), then a
    // compact() that must go deeper than `first`.
    for round in 3..6usize {
        for i in 0..60u64 {
            let v = value(&mut rng, i, round);
            db.put(key(i + 20), v).unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    let input: u64 = before.levels.iter().map(|l| l.bytes).sum();
    db.compact().unwrap();
    let after = db.stats();
    let out = (1..after.levels.len())
        .find(|&n| after.levels[n].tables > 0)
        .unwrap();
    assert!(out > first, "{:?}", levels(&db));
    assert_eq!(
        after.levels.iter().filter(|l| l.tables > 0).count(),
        1,
        "{:?}",
        levels(&db)
    );
    for n in 0..after.levels.len() {
        let (b, a) = (&before.levels[n], &after.levels[n]);
        if n == out {
            assert_eq!(a.compacted_in - b.compacted_in, input, "level {n}");
            assert_eq!(
                a.compaction_bytes_written - b.compaction_bytes_written,
                a.bytes,
                "level {n}"
            );
        } else {
            assert_eq!(
                (a.compacted_in, a.compaction_bytes_written),
                (b.compacted_in, b.compaction_bytes_written),
                "level {n}"
            );
        }
    }
    assert_eq!(after.pending_compaction_bytes, 0);
    assert_eq!(after.compactions, before.compactions + 1);
    db.close().unwrap();
}
