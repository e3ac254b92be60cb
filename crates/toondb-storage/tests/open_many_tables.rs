//! Opening a database of many tables: they open on a few threads while the
//! WAL replays (lsm/open_listed.rs). Every write survives, whichever way
//! they opened; a damaged or missing table is reported as the first one
//! the manifest lists, every time, and a failed open changes no file.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use support::open_images::{keep_tables, with_ext};
use support::{copy_dir, Rng};
use toondb_storage::{Database, ErrorKind};

fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// A crash image (the directory copied while the database is open) of
/// `tables` flushed tables over overlapping keys, then unflushed puts and
/// deletes that only the WAL holds; and what every key must read.
fn image(tables: usize, seed: u64) -> (tempfile::TempDir, BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), keep_tables()).unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(seed);
    for t in 0..tables {
        for _ in 0..40 {
            let k = key(rng.below(600));
            let v = format!("t{t}-{}", rng.next()).into_bytes();
            db.put(&k, &v).unwrap();
            model.insert(k, Some(v));
        }
        db.flush().unwrap();
    }
    for n in 0..300 {
        let k = key(rng.below(700));
        if n % 5 == 0 {
            db.delete(&k).unwrap();
            model.insert(k, None);
        } else {
            let v = format!("wal-{}", rng.next()).into_bytes();
            db.put(&k, &v).unwrap();
            model.insert(k, Some(v));
        }
    }
    let copy = copy_dir(dir.path());
    db.close().unwrap();
    (copy, model)
}

/// The table files of `dir`, lowest number first: the manifest's order for
/// a database that only ever flushed.
fn tables_in(dir: &Path) -> Vec<PathBuf> {
    with_ext(dir, "sst")
}

fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    files.sort();
    files
}

fn open_error(dir: &Path) -> toondb_storage::Error {
    Database::open_with(dir, keep_tables()).unwrap_err()
}

#[test]
fn every_write_survives_an_open_of_many_tables_or_few() {
    // 7 tables open on the opening thread, 24 and 40 on two threads.
    for (tables, seed) in [(7, 1), (24, 2), (40, 3)] {
        let (image, model) = image(tables, seed);
        assert_eq!(tables_in(image.path()).len(), tables);
        // The first open replays the WAL (and flushes what it replayed
        // into one more table); the second opens the tables only.
        for round in 0..2 {
            let db = Database::open_with(image.path(), keep_tables()).unwrap();
            let stats = db.stats();
            if round == 0 {
                assert!(
                    stats.recovery.records > 0,
                    "the image holds a WAL to replay"
                );
            }
            assert!(stats.levels[0].tables as usize >= tables);
            for (k, want) in &model {
                let got = db.get(k).unwrap();
                assert_eq!(
                    got.as_deref(),
                    want.as_deref(),
                    "key {k:?}, {tables} tables"
                );
            }
            // Keys never written read as absent.
            for i in 700..720 {
                assert_eq!(db.get(key(i)).unwrap(), None);
            }
            db.close().unwrap();
        }
    }
}

#[test]
fn a_missing_table_among_many_is_corruption_and_changes_nothing() {
    let (image, model) = image(24, 4);
    let tables = tables_in(image.path());
    // One in each thread's share, and the last.
    for victim in [3, 17, 23] {
        let copy = copy_dir(image.path());
        let path = copy.path().join(tables[victim].file_name().unwrap());
        fs::remove_file(&path).unwrap();
        let before = listing(copy.path());
        let err = open_error(copy.path());
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        assert!(
            err.to_string()
                .contains("listed in the manifest but missing")
                && err.to_string().contains(&*path.to_string_lossy()),
            "{err}"
        );
        assert_eq!(listing(copy.path()), before, "a failed open changed files");
    }
    // Undamaged, it opens with everything.
    let db = Database::open_with(image.path(), keep_tables()).unwrap();
    for (k, want) in &model {
        assert_eq!(db.get(k).unwrap().as_deref(), want.as_deref());
    }
    db.close().unwrap();
}

#[test]
fn of_two_damaged_tables_the_first_listed_is_reported_every_time() {
    let (image, _) = image(24, 5);
    let tables = tables_in(image.path());
    // A table cut short in the second thread's share, and a missing one
    // in the first's: the missing one is listed first.
    let copy = copy_dir(image.path());
    let cut = copy.path().join(tables[20].file_name().unwrap());
    let len = fs::metadata(&cut).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&cut).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let gone = copy.path().join(tables[6].file_name().unwrap());
    fs::remove_file(&gone).unwrap();
    for _ in 0..8 {
        let err = open_error(copy.path());
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        assert!(
            err.to_string().contains(&*gone.to_string_lossy()),
            "not the first listed: {err}"
        );
    }
    // With the missing one back, the cut one is reported.
    fs::copy(image.path().join(tables[6].file_name().unwrap()), &gone).unwrap();
    let err = open_error(copy.path());
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains(&*cut.to_string_lossy()), "{err}");
}

#[test]
fn a_damaged_table_is_reported_before_a_damaged_wal_with_many_tables() {
    let (image, _) = image(24, 6);
    let tables = tables_in(image.path());
    let copy = copy_dir(image.path());
    let gone = copy.path().join(tables[12].file_name().unwrap());
    fs::remove_file(&gone).unwrap();
    // Damage a WAL segment's header too (what replay reads first).
    let wal = fs::read_dir(copy.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .min()
        .expect("the image has a WAL segment");
    let mut bytes = fs::read(&wal).unwrap();
    for b in bytes.iter_mut().take(8) {
        *b ^= 0xff;
    }
    fs::write(&wal, bytes).unwrap();
    let err = open_error(copy.path());
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains(&*gone.to_string_lossy()), "{err}");
}
