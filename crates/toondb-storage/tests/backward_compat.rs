//! A database directory written by the version-1 code (table format 1,
//! manifest version 1) must open and read correctly forever after.
//!
//! `tests/fixtures/v1-db/` was produced by `generate_v1_fixture` below, run
//! at commit 9a075ae (the last commit that wrote table format 1):
//!
//! ```text
//! TOONDB_FIXTURE_OUT=tests/fixtures/v1-db \
//!   cargo test -p toondb-storage --test backward_compat -- --ignored generate_v1_fixture
//! ```
//!
//! The fixture holds two flushed v1 tables and a WAL tail that was never
//! flushed. The expected contents are recomputed here from the same
//! deterministic script, so the fixture itself is the only input.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use toondb_storage::{Compression, Database, Options, ScanOptions};

/// One step of the script: `Some(value)` puts, `None` deletes.
type Op = (Vec<u8>, Option<Vec<u8>>);

fn key(i: u32) -> Vec<u8> {
    format!("key/{i:04}").into_bytes()
}

/// Phase 1 and 2 end with a flush; phase 3 stays in the WAL only.
fn phase(n: u32) -> Vec<Op> {
    let mut ops = Vec::new();
    match n {
        1 => {
            for i in 0..200 {
                ops.push((
                    key(i),
                    Some(format!("v1-{i}-{}", "x".repeat((i % 7) as usize)).into_bytes()),
                ));
            }
        }
        2 => {
            for i in (0..200).step_by(3) {
                ops.push((key(i), Some(format!("v2-{i}").into_bytes())));
            }
            for i in (0..200).step_by(7) {
                ops.push((key(i), None));
            }
            for i in 200..300 {
                ops.push((key(i), Some(format!("v2-new-{i}").into_bytes())));
            }
        }
        _ => {
            for i in (0..300).step_by(5) {
                ops.push((key(i), Some(format!("v3-{i}").into_bytes())));
            }
            for i in (0..350).step_by(11) {
                ops.push((key(i), None));
            }
            for i in 300..350 {
                ops.push((key(i), Some(format!("v3-wal-{i}").into_bytes())));
            }
        }
    }
    ops
}

fn apply(db: &Database, ops: &[Op], model: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in ops {
        match v {
            Some(v) => {
                db.put(k, v).unwrap();
                model.insert(k.clone(), v.clone());
            }
            None => {
                db.delete(k).unwrap();
                model.remove(k);
            }
        }
    }
}

fn expected_v1() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for n in 1..=3 {
        for (k, v) in phase(n) {
            match v {
                Some(v) => model.insert(k, v),
                None => model.remove(&k),
            };
        }
    }
    model
}

fn check(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for i in 0..400 {
        let k = key(i);
        assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "key {i}");
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = db
        .iter(ScanOptions::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, want);
    let mut rev: Vec<(Vec<u8>, Vec<u8>)> = db
        .iter(ScanOptions::default().reverse(true))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rev.reverse();
    assert_eq!(rev, want);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The last 8 bytes (the format magic) of each table file, by file name.
fn table_magics(dir: &Path) -> Vec<[u8; 8]> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            bytes[bytes.len() - 8..].try_into().unwrap()
        })
        .collect()
}

/// Waits until the maintenance thread has nothing left to do.
fn wait_idle(db: &Database) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let s = db.stats();
        if !s.maintenance_busy && s.immutable_memtables == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still busy: {s:?}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-db")
}

#[test]
#[ignore = "writes the v1 fixture; run only at the commit that last wrote format 1"]
fn generate_v1_fixture() {
    let out = std::env::var("TOONDB_FIXTURE_OUT").expect("set TOONDB_FIXTURE_OUT");
    let out = Path::new(&out);
    assert!(!out.exists(), "{} exists", out.display());
    let mut model = BTreeMap::new();
    let db = Database::open_with(out, Options::default()).unwrap();
    apply(&db, &phase(1), &mut model);
    db.flush().unwrap();
    apply(&db, &phase(2), &mut model);
    db.flush().unwrap();
    apply(&db, &phase(3), &mut model);
    assert_eq!(db.stats().tables, 2);
    check(&db, &model);
    assert_eq!(model, expected_v1());
    db.close().unwrap();
}

#[test]
fn v1_fixture_opens_reads_and_takes_new_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    copy_dir(&fixture_dir(), &dir);
    let mut model = expected_v1();
    // New tables are written compressed, so one database mixes v1 tables,
    // uncompressed reads and LZ4 blocks.
    let options = Options::default()
        .compression(Compression::Lz4)
        // The v1 tables stay as they are (a compaction would rewrite them).
        .auto_compaction(false);
    assert_eq!(table_magics(&dir), vec![*b"TOONSST1"; 2]);
    {
        let db = Database::open_with(&dir, options.clone()).unwrap();
        // The fixture's two v1 tables, and soon a v2 one: open hands the
        // records it replayed to a background flush.
        assert!(db.stats().tables >= 2, "the fixture's two v1 tables");
        assert!(
            db.stats().recovery.records > 0,
            "phase 3 is replayed from the WAL"
        );
        check(&db, &model);
        // New writes over the old data, then a flush: a newer-format table
        // now sits next to the v1 ones.
        let mut more = Vec::new();
        for i in (0..400).step_by(4) {
            more.push((key(i), Some(format!("v4-{i}").into_bytes())));
        }
        for i in (1..400).step_by(13) {
            more.push((key(i), None));
        }
        apply(&db, &more, &mut model);
        db.flush().unwrap();
        assert_eq!(db.stats().tables, 4);
        check(&db, &model);
        db.close().unwrap();
    }
    assert_eq!(
        table_magics(&dir),
        vec![*b"TOONSST1", *b"TOONSST1", *b"TOONSST2", *b"TOONSST2"]
    );
    let db = Database::open_with(&dir, options).unwrap();
    assert_eq!(db.stats().tables, 4);
    check(&db, &model);
    db.close().unwrap();
}

/// The v1 tables compacted into v2 ones, automatically and manually, with a
/// snapshot held (from review 17).
#[test]
fn v1_fixture_compacts_into_v2_and_keeps_every_view() {
    for trigger in [1usize, 2, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        copy_dir(&fixture_dir(), &dir);
        let mut model = expected_v1();
        let options = Options::default()
            .compression(Compression::Zstd)
            .l0_compaction_trigger(trigger)
            .target_file_size(2 << 10)
            .level_base_bytes(4 << 10)
            .level_size_ratio(2)
            .block_size(512);
        {
            let db = Database::open_with(&dir, options.clone()).unwrap();
            check(&db, &model);
            let snap = db.snapshot().unwrap();
            let at_open = model.clone();
            db.flush().unwrap();
            // Whatever automatic compaction the flush leads to has run (was
            // a 200 ms sleep: on a loaded machine, maybe none had).
            wait_idle(&db);
            // Three level-0 tables (two v1, one flushed): past triggers 1 and 2.
            let s = db.stats();
            assert!(trigger > 3 || s.compactions > 0, "trigger {trigger}: {s:?}");
            check(&db, &model);
            let mut more = Vec::new();
            for i in (0..400).step_by(3) {
                more.push((key(i), Some(format!("v5-{i}").into_bytes())));
            }
            for i in (0..400).step_by(17) {
                more.push((key(i), None));
            }
            apply(&db, &more, &mut model);
            db.compact_range(Bound::Included(key(50)), Bound::Excluded(key(120)))
                .unwrap();
            check(&db, &model);
            for (k, v) in &at_open {
                assert_eq!(
                    snap.get(k).unwrap().as_ref(),
                    Some(v),
                    "snapshot, trigger {trigger}"
                );
            }
            for i in 0..400 {
                if !at_open.contains_key(&key(i)) {
                    assert_eq!(
                        snap.get(key(i)).unwrap(),
                        None,
                        "snapshot, trigger {trigger}, key {i}"
                    );
                }
            }
            drop(snap);
            db.compact().unwrap();
            check(&db, &model);
            db.close().unwrap();
        }
        assert!(
            !table_magics(&dir).contains(b"TOONSST1"),
            "v1 tables remain after compact()"
        );
        let db = Database::open_with(&dir, options).unwrap();
        check(&db, &model);
        db.close().unwrap();
    }
}

/// The fixture's WAL segment is format version 1 (bare batch payloads, no
/// sync points). It replays whole, the segment the open creates after it
/// is the current version (4 since it records finished background syncs of
/// sealed segments; 3 since the seal's sync moved off the commit thread; 2
/// before), and version 1's stricter rule still holds for it: damage
/// followed by a valid record is corruption, never dropped as a tail.
#[test]
fn v1_wal_segment_replays_and_keeps_the_v1_damage_rule() {
    let wal_version = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        u32::from_le_bytes(bytes[8..12].try_into().unwrap())
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("db");
    copy_dir(&fixture_dir(), &dir);
    let v1_segment = dir.join("000005.wal");
    assert_eq!(wal_version(&v1_segment), 1);
    let options = Options::default().auto_compaction(false);
    {
        let db = Database::open_with(&dir, options.clone()).unwrap();
        let recovery = db.stats().recovery;
        assert_eq!(recovery.records, phase(3).len() as u64);
        assert_eq!(recovery.dropped_tail, None);
        check(&db, &expected_v1());
        db.close().unwrap();
    }
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let newest = segments.last().unwrap();
    assert_ne!(newest, &v1_segment);
    assert_eq!(wal_version(newest), 4);

    // A fresh copy with one record in the middle of the v1 segment damaged.
    let damaged = tmp.path().join("damaged");
    copy_dir(&fixture_dir(), &damaged);
    let path = damaged.join("000005.wal");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"v3-100")
        .expect("a phase-3 value in the WAL");
    bytes[at + 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let err = Database::open_with(&damaged, options).unwrap_err();
    assert_eq!(err.kind(), toondb_storage::ErrorKind::Corruption, "{err}");
    assert!(err.message().contains("a valid record follows"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was cut");
}
