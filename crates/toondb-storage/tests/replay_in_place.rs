//! Replay at open builds the recovered memtable over the mapped WAL
//! segments (no copy of keys and values, `Memtable::replay_record`).
//!
//! Proves, against a `BTreeMap` model: a crash image holding a random mix
//! of puts, overwrites (also of one key twice in one batch), deletes, range
//! deletes and transactions, with keys that share their first 16 bytes (so
//! comparisons read the full keys from the segment), reads back exactly
//! the model from the recovered memtable (table creation held, so nothing
//! was flushed yet); a scan opened on the recovered memtable reads its
//! values after the flush has deleted the replayed segments; what the
//! flush wrote reads back as the model after a clean reopen; and a torn
//! last record, cut off the mapped segment by replay, leaves the records
//! before it readable.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use toondb_storage::{Database, ScanOptions, WriteBatch};

mod support;
use support::{copy_dir, open_with_tables_held, Rng};

fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn key(rng: &mut Rng) -> Vec<u8> {
    key_named(rng.below(KEYS))
}

const KEYS: u64 = 120;

fn key_named(i: u64) -> Vec<u8> {
    if i.is_multiple_of(2) {
        format!("shared/prefix/long/{i:03}").into_bytes()
    } else {
        format!("k{i:03}").into_bytes()
    }
}

fn value(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = [0usize, 1, 7, 100, 1000, 5000][rng.below(6) as usize];
    let mut v = format!("{tag}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (tag % 26) as u8);
    v
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Writes `ops` random operations to `db`, mirrored in the returned model.
fn random_history(db: &Database, seed: u64, ops: usize) -> Model {
    let mut rng = Rng(seed | 1);
    let mut model = Model::new();
    for tag in 0..ops as u64 {
        match rng.below(10) {
            0..=3 => {
                let (k, v) = (key(&mut rng), value(&mut rng, tag));
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
            4 => {
                let k = key(&mut rng);
                db.delete(&k).unwrap();
                model.remove(&k);
            }
            5 => {
                let (a, b) = (key(&mut rng), key(&mut rng));
                if a < b {
                    db.delete_range(&a, &b).unwrap();
                    model.retain(|k, _| !(a <= *k && *k < b));
                }
            }
            6 | 7 => {
                // A batch that may write one key several times: the last
                // operation on it wins.
                let mut batch = WriteBatch::new();
                for j in 0..1 + rng.below(12) {
                    let k = key(&mut rng);
                    if rng.below(4) == 0 {
                        batch.delete(&k).unwrap();
                        model.remove(&k);
                    } else {
                        let v = value(&mut rng, tag * 100 + j);
                        batch.put(&k, &v).unwrap();
                        model.insert(k, v);
                    }
                }
                db.write(batch).unwrap();
            }
            _ => {
                let txn = db.transaction().unwrap();
                let mut staged = Vec::new();
                for j in 0..1 + rng.below(5) {
                    let k = key(&mut rng);
                    if rng.below(3) == 0 {
                        txn.delete(&k).unwrap();
                        staged.push((k, None));
                    } else {
                        let v = value(&mut rng, tag * 100 + j);
                        txn.put(&k, &v).unwrap();
                        staged.push((k, Some(v)));
                    }
                }
                txn.commit().unwrap();
                for (k, v) in staged {
                    match v {
                        Some(v) => model.insert(k, v),
                        None => model.remove(&k),
                    };
                }
            }
        }
    }
    model
}

fn check(db: &Database, model: &Model, what: &str) {
    for i in 0..KEYS {
        let k = key_named(i);
        assert_eq!(
            db.get(&k).unwrap().as_ref(),
            model.get(&k),
            "{what}: {}",
            String::from_utf8_lossy(&k)
        );
    }
    let scanned: Vec<_> = db
        .iter(ScanOptions::default())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scanned, want, "{what}: scan");
}

fn wait_for_flush(db: &Database, flushes_before: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.stats().flushes == flushes_before || db.stats().maintenance_busy {
        assert!(
            Instant::now() < deadline,
            "the recovered memtable was not flushed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn replayed_memtable_matches_the_model_before_and_after_its_flush() {
    for seed in [1u64, 7, 42, 1234, 99_991] {
        let live = tempfile::tempdir().unwrap();
        let db = Database::open(live.path()).unwrap();
        let model = random_history(&db, seed, 400);
        let image = copy_dir(live.path());
        db.close().unwrap();

        let (db, gate) = open_with_tables_held(image.path());
        assert!(
            db.stats().recovery.records > 0,
            "seed {seed}: nothing replayed"
        );
        check(&db, &model, &format!("seed {seed}, replayed memtable"));

        // A scan started on the replayed memtable, read after its flush
        // deleted the segments its versions lie in.
        // One entry at a time, so the scan reads the memtable after the
        // flush rather than buffering it before.
        let mut scan = db.scan(ScanOptions::default()).unwrap();
        let mut rest = scan.next_batch(1, usize::MAX).unwrap();
        let flushes = db.stats().flushes;
        gate.release();
        wait_for_flush(&db, flushes);
        let segments_left = wal_segments(image.path());
        assert_eq!(segments_left.len(), 1, "seed {seed}: {segments_left:?}");
        loop {
            let more = scan.next_batch(1, usize::MAX).unwrap();
            if more.is_empty() {
                break;
            }
            rest.extend(more);
        }
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(rest, want, "seed {seed}: scan across the flush");
        check(&db, &model, &format!("seed {seed}, after the flush"));
        db.close().unwrap();

        let db = Database::open(image.path()).unwrap();
        assert_eq!(db.stats().recovery.records, 0, "seed {seed}");
        check(&db, &model, &format!("seed {seed}, reopened"));
        db.close().unwrap();
    }
}

#[test]
fn records_before_a_torn_tail_read_back_after_the_cut() {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open(live.path()).unwrap();
    let mut model = Model::new();
    for i in 0..200u32 {
        let (k, v) = (format!("key{i:05}"), vec![b'v'; 300 + i as usize]);
        db.put(&k, &v).unwrap();
        model.insert(k.into_bytes(), v);
    }
    let segment = wal_segments(live.path()).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    db.put("torn", vec![b't'; 4000]).unwrap();
    let image = copy_dir(live.path());
    db.close().unwrap();
    // Cut the last record in half: replay drops it and truncates the file
    // under the map that holds the recovered versions.
    let torn = image.path().join(segment.file_name().unwrap());
    fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len + 2000)
        .unwrap();
    let (db, gate) = open_with_tables_held(image.path());
    assert!(db.stats().recovery.dropped_tail.is_some());
    assert!(fs::metadata(&torn).unwrap().len() <= len + 2000);
    check_keys(&db, &model);
    gate.release();
    db.close().unwrap();
}

fn check_keys(db: &Database, model: &Model) {
    for (k, v) in model {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v));
    }
    assert_eq!(db.get("torn").unwrap(), None);
    assert_eq!(
        db.iter(ScanOptions::default()).unwrap().count(),
        model.len()
    );
}
