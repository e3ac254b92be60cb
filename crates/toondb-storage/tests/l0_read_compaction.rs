//! Read-triggered compaction of level 0 (docs/compaction.md): tables left
//! in level 0 below its trigger are compacted into level 1 once point reads
//! have probed them in vain often enough, and not otherwise.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::wait_idle;
use toondb_storage::{Database, Options, Result, ScanOptions};

/// Vain probes it takes at least (`L0_MIN_PROBES` in lsm/levels.rs) for
/// the small level 0 these tests make.
const MIN_PROBES: u64 = 4096;

fn key(i: u32) -> Vec<u8> {
    format!("key{i:07}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 13) as usize)).into_bytes()
}

fn options(auto: bool) -> Options {
    Options::default()
        .l0_compaction_trigger(4)
        .auto_compaction(auto)
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// A database with three flushes of interleaved keys: three level-0 tables
/// (below the trigger of 4), each covering the whole key range, so every
/// read of a key probes all three unless an earlier one holds it.
fn three_l0_tables(auto: bool) -> Result<(tempfile::TempDir, Database, Model)> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options(auto))?;
    let mut model = BTreeMap::new();
    for t in 0..3u32 {
        for i in (t..3000).step_by(3) {
            db.put(key(i), value(i))?;
            model.insert(key(i), value(i));
        }
        db.flush()?;
    }
    wait_idle(&db);
    assert_eq!(l0_tables(&db), 3, "{:?}", db.stats().levels);
    Ok((dir, db, model))
}

fn l0_tables(db: &Database) -> u64 {
    db.stats().levels[0].tables
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_all(db: &Database, model: &Model) -> Result<()> {
    for (k, v) in model {
        assert_eq!(db.get(k)?.as_deref(), Some(v.as_slice()));
    }
    let scanned: Vec<(Vec<u8>, Vec<u8>)> =
        db.iter(ScanOptions::default())?.collect::<Result<_>>()?;
    let expected: Vec<(Vec<u8>, Vec<u8>)> =
        model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scanned, expected);
    Ok(())
}

#[test]
fn reads_that_probe_level_0_in_vain_get_it_compacted() -> Result<()> {
    let (dir, db, model) = three_l0_tables(true)?;
    // Absent keys inside the tables' range: every read probes all three.
    let reads = MIN_PROBES / 3 + 10;
    for i in 0..reads as u32 {
        assert_eq!(db.get(format!("key{:07}x", i % 3000))?, None);
    }
    // The work is due at once, before the thread picks it up.
    assert!(db.stats().maintenance_busy || l0_tables(&db) == 0);
    wait_for("level 0 to be compacted", || l0_tables(&db) == 0);
    let s = wait_idle(&db);
    assert_eq!(s.levels[0].tables, 0);
    // Into the base level: level 1 under the static targets, the bottom
    // (level 6) for a tree this small under the dynamic ones.
    assert!(s.levels[1..].iter().any(|l| l.tables > 0), "{:?}", s.levels);
    check_all(&db, &model)?;
    drop(db);
    let db = Database::open_with(dir.path(), options(true))?;
    assert_eq!(l0_tables(&db), 0);
    check_all(&db, &model)
}

#[test]
fn reads_of_keys_found_in_the_newest_table_charge_nothing() -> Result<()> {
    let (_dir, db, model) = three_l0_tables(true)?;
    // Keys 2, 5, 8, ... are in the newest table: found at the first probe.
    for round in 0..4 {
        for i in (2..3000u32).step_by(3) {
            assert_eq!(db.get(key(i))?, Some(value(i)), "round {round}");
        }
    }
    std::thread::sleep(Duration::from_millis(1200));
    let s = wait_idle(&db);
    assert_eq!(s.levels[0].tables, 3, "{:?}", s.levels);
    check_all(&db, &model)
}

#[test]
fn without_reads_or_with_auto_compaction_off_level_0_stays() -> Result<()> {
    for auto in [true, false] {
        let (_dir, db, model) = three_l0_tables(auto)?;
        if !auto {
            for i in 0..(MIN_PROBES as u32) * 2 {
                assert_eq!(db.get(format!("key{:07}x", i % 3000))?, None);
            }
            assert!(!db.stats().maintenance_busy);
        }
        // Longer than the thread's look-again period (500 ms), twice.
        std::thread::sleep(Duration::from_millis(1200));
        let s = wait_idle(&db);
        assert_eq!(s.levels[0].tables, 3, "auto {auto}: {:?}", s.levels);
        check_all(&db, &model)?;
    }
    Ok(())
}
