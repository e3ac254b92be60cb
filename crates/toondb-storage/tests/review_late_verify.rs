//! review-late: `verify` must not report OK for damage that `open` refuses.

use toondb_storage::{Database, Options};

fn manifest_path(dir: &std::path::Path) -> std::path::PathBuf {
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim())
}

/// A flipped byte in the live MANIFEST: open refuses the database, verify
/// (run on the open handle just before) says everything is fine.
#[test]
fn review_late_verify_reports_ok_for_a_corrupt_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(&src, options.clone()).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    for i in 0..200u32 {
        db.put(format!("j{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    let m = manifest_path(&src);
    let mut bytes = std::fs::read(&m).unwrap();
    let at = bytes.len() / 3; // inside the first record, valid ones follow
    bytes[at] ^= 0x55;
    std::fs::write(&m, &bytes).unwrap();

    let report = db.verify().unwrap();
    drop(db); // no close: nothing more written
    let reopened = Database::open_with(&src, options);
    let refused = reopened.is_err();
    assert!(
        !(report.ok() && refused),
        "verify said OK ({report:?}) but open refuses: {:?}",
        reopened.err()
    );
}

/// CURRENT deleted: open refuses (table files but no CURRENT), verify OK.
#[test]
fn review_late_verify_reports_ok_without_current() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(&src, options.clone()).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    std::fs::remove_file(src.join("CURRENT")).unwrap();
    let report = db.verify().unwrap();
    drop(db);
    let reopened = Database::open_with(&src, options);
    let refused = reopened.is_err();
    assert!(
        !(report.ok() && refused),
        "verify said OK ({report:?}) but open refuses: {:?}",
        reopened.err()
    );
}

/// The WAL segment the manifest names as its checkpoint is gone: open
/// refuses ("checkpoint is missing"), verify does not notice.
#[test]
fn review_late_verify_reports_ok_without_the_checkpoint_segment() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(&src, options.clone()).unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().ends_with(".wal") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let report = db.verify().unwrap();
    drop(db);
    let reopened = Database::open_with(&src, options);
    let refused = reopened.is_err();
    assert!(
        !(report.ok() && refused),
        "verify said OK ({report:?}) but open refuses: {:?}",
        reopened.err()
    );
}

/// A table file replaced by another valid table (a different key range):
/// open refuses (key range differs from the manifest), verify OK.
#[test]
fn review_late_verify_reports_ok_for_a_swapped_table_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(&src, options.clone()).unwrap();
    for i in 0..200u32 {
        db.put(format!("a{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    for i in 0..200u32 {
        db.put(format!("b{i:04}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    let mut tables: Vec<_> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".sst"))
        .collect();
    tables.sort();
    assert_eq!(tables.len(), 2, "{tables:?}");
    // A new inode under the second name (the engine's map keeps the old).
    let tmp = src.join("swap.tmp");
    std::fs::copy(&tables[0], &tmp).unwrap();
    std::fs::rename(&tmp, &tables[1]).unwrap();
    let report = db.verify().unwrap();
    drop(db);
    let reopened = Database::open_with(&src, options);
    let refused = reopened.is_err();
    assert!(
        !(report.ok() && refused),
        "verify said OK ({report:?}) but open refuses: {:?}",
        reopened.err()
    );
}

/// Guard for the fix: verify stays OK while flushes, compactions and
/// manifest rewrites run.
#[test]
fn review_late_verify_stays_ok_under_concurrent_maintenance() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .memtable_size(8 << 10)
        .block_size(256)
        .target_file_size(4 << 10)
        .level_base_bytes(16 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2);
    let db = Arc::new(Database::open_with(dir.path(), options).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                db.put(
                    format!("k{:05}", i % 3000),
                    format!("v{i}-{}", "x".repeat(50)),
                )
                .unwrap();
                i += 1;
            }
        })
    };
    // 60 verifies, and on until the writer made several flushes happen
    // (checked below; a fixed number of rounds could end before them on a
    // loaded machine).
    let started = std::time::Instant::now();
    let mut round = 0;
    while round < 60
        || (db.stats().flushes <= 3 && started.elapsed() < std::time::Duration::from_secs(120))
    {
        round += 1;
        let r = db.verify().unwrap();
        if !r.ok() {
            let mut names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| !n.ends_with(".sst"))
                .collect();
            names.sort();
            let again = db.verify().unwrap();
            panic!("{r:?}\nnames now {names:?}\nagain {again:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(db.stats().flushes > 3);
    db.close().unwrap();
}
