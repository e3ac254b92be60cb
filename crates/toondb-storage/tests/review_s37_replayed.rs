//! Review of session 37's replayed memtable (memtable.rs, `sorted`): the
//! versions a replay recovers are kept in a sorted array instead of the
//! skiplist. Against a `BTreeMap` model, through the public API, on crash
//! images of many tables (opened on threads, lsm/open_listed.rs) plus a WAL
//! of puts, deletes, range deletes, batches writing a key twice and keys
//! that share 16+ byte prefixes or are prefixes of each other:
//!
//! - point reads and bounded scans (inclusive, exclusive, reverse, limit)
//!   of the replayed memtable (its flush held) read the model;
//! - a snapshot taken at open keeps reading the model while new writes
//!   land in the active memtable, and the database reads the new model;
//! - serializable transactions over ranges of replayed keys conflict with
//!   a newer write and only then;
//! - a backup taken while the replayed memtable is unflushed holds the
//!   model at its timestamp;
//! - after the held flush and a reopen nothing is lost or resurrected.

mod support;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use support::{copy_dir, wait_idle, Rng};
use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{
    Database, ErrorKind, Isolation, Options, ScanOptions, TransactionOptions, WriteBatch,
};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Holds the creation of table files in one directory (the database's,
/// not a backup's) until released.
#[derive(Clone)]
struct DirGate {
    dir: PathBuf,
    open: Arc<(Mutex<bool>, Condvar)>,
}

impl DirGate {
    fn new(dir: &Path) -> DirGate {
        DirGate {
            dir: dir.canonicalize().unwrap(),
            open: Arc::default(),
        }
    }
    fn release(&self) {
        *self.open.0.lock().unwrap() = true;
        self.open.1.notify_all();
    }
}

impl WriteHook for DirGate {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        let parent = path.parent().and_then(|p| p.canonicalize().ok());
        if path.extension().is_some_and(|e| e == "sst") && parent.as_deref() == Some(&*self.dir) {
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
        }
        Ok(())
    }
    fn wrap(&self, _: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

/// Releases the gate when dropped (a failing test must not hang).
struct Held(DirGate);
impl Drop for Held {
    fn drop(&mut self) {
        self.0.release();
    }
}

fn keep_tables() -> Options {
    Options::default()
        .auto_compaction(false)
        .l0_slowdown_writes(10_000)
        .l0_stop_writes(10_000)
}

const KEYS: u64 = 90;

/// Keys sharing long prefixes, short keys, and keys that are prefixes of
/// other keys (`k05`, `k05\0`, `k05a`).
fn key_named(i: u64) -> Vec<u8> {
    match i % 3 {
        0 => format!("shared/prefix/long/{:03}", i / 3).into_bytes(),
        1 => format!("k{:02}", i / 3 % 10).into_bytes(),
        _ => {
            let mut k = format!("k{:02}", i / 3 % 10).into_bytes();
            if i.is_multiple_of(2) {
                k.push(0);
            } else {
                k.push(b'a' + (i / 30) as u8);
            }
            k
        }
    }
}

fn all_keys() -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = (0..KEYS).map(key_named).collect();
    keys.sort();
    keys.dedup();
    keys
}

fn value(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = [0usize, 3, 40, 700][rng.below(4) as usize];
    let mut v = format!("{tag}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (tag % 26) as u8);
    v
}

fn random_ops(db: &Database, rng: &mut Rng, model: &mut Model, ops: usize, tag0: u64) {
    let key = |rng: &mut Rng| key_named(rng.below(KEYS));
    for n in 0..ops as u64 {
        let tag = tag0 + n;
        match rng.below(10) {
            0..=3 => {
                let (k, v) = (key(rng), value(rng, tag));
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
            4 => {
                let k = key(rng);
                db.delete(&k).unwrap();
                model.remove(&k);
            }
            5 => {
                let (a, b) = (key(rng), key(rng));
                if a < b && rng.below(3) == 0 {
                    db.delete_range(&a, &b).unwrap();
                    model.retain(|k, _| !(a <= *k && *k < b));
                }
            }
            _ => {
                let mut batch = WriteBatch::new();
                for j in 0..1 + rng.below(8) {
                    // Often the same key twice: the last write wins.
                    let k = if j > 0 && rng.below(3) == 0 {
                        key_named(rng.below(4) * 3)
                    } else {
                        key(rng)
                    };
                    if rng.below(4) == 0 {
                        batch.delete(&k).unwrap();
                        model.remove(&k);
                    } else {
                        let v = value(rng, tag * 100 + j);
                        batch.put(&k, &v).unwrap();
                        model.insert(k, v);
                    }
                }
                db.write(batch).unwrap();
            }
        }
    }
}

fn random_bound(rng: &mut Rng, keys: &[Vec<u8>]) -> Bound<Vec<u8>> {
    let k = keys[rng.below(keys.len() as u64) as usize].clone();
    let k = if rng.below(4) == 0 {
        // Absent: between keys.
        let mut k = k;
        k.push(b'~');
        k
    } else {
        k
    };
    match rng.below(3) {
        0 => Bound::Included(k),
        1 => Bound::Excluded(k),
        _ => Bound::Unbounded,
    }
}

fn in_bounds(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    (match lo {
        Bound::Included(l) => k >= &l[..],
        Bound::Excluded(l) => k > &l[..],
        Bound::Unbounded => true,
    }) && (match hi {
        Bound::Included(h) => k <= &h[..],
        Bound::Excluded(h) => k < &h[..],
        Bound::Unbounded => true,
    })
}

type Reader<'a> = dyn Fn(&[u8]) -> Option<Vec<u8>> + 'a;
type Scanner<'a> = dyn Fn(ScanOptions) -> Vec<(Vec<u8>, Vec<u8>)> + 'a;

fn check_reader(get: &Reader<'_>, scan: &Scanner<'_>, model: &Model, rng: &mut Rng, what: &str) {
    let keys = all_keys();
    for k in &keys {
        assert_eq!(get(k).as_ref(), model.get(k), "{what}: get {k:?}");
        let mut absent = k.clone();
        absent.push(b'~');
        assert_eq!(get(&absent), None, "{what}: get {absent:?}");
    }
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(scan(ScanOptions::default()), want, "{what}: scan");
    let mut back = want.clone();
    back.reverse();
    assert_eq!(
        scan(ScanOptions::default().reverse(true)),
        back,
        "{what}: reverse scan"
    );
    for _ in 0..60 {
        let (lo, hi) = (random_bound(rng, &keys), random_bound(rng, &keys));
        let reverse = rng.below(2) == 0;
        let limit = (rng.below(3) == 0).then(|| 1 + rng.below(5) as usize);
        let mut want: Vec<_> = model
            .iter()
            .filter(|(k, _)| in_bounds(&lo, &hi, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if reverse {
            want.reverse();
        }
        if let Some(n) = limit {
            want.truncate(n);
        }
        let mut options = ScanOptions::default()
            .lower(lo.clone())
            .upper(hi.clone())
            .reverse(reverse);
        if let Some(n) = limit {
            options = options.limit(n);
        }
        assert_eq!(
            scan(options),
            want,
            "{what}: scan {lo:?}..{hi:?} reverse {reverse} limit {limit:?}"
        );
    }
}

fn check_db(db: &Database, model: &Model, rng: &mut Rng, what: &str) {
    check_reader(
        &|k| db.get(k).unwrap(),
        &|o| db.iter(o).unwrap().map(|e| e.unwrap()).collect(),
        model,
        rng,
        what,
    );
}

/// A crash image: `tables` flushed tables, then `wal_ops` operations only
/// the WAL holds.
fn crash_image(seed: u64, tables: usize, wal_ops: usize) -> (tempfile::TempDir, Model) {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    let mut rng = Rng(seed | 1);
    let mut model = Model::new();
    for t in 0..tables {
        random_ops(&db, &mut rng, &mut model, 30, t as u64 * 1000);
        db.flush().unwrap();
    }
    random_ops(&db, &mut rng, &mut model, wal_ops, 1_000_000);
    let image = copy_dir(live.path());
    db.close().unwrap();
    (image, model)
}

#[test]
fn replayed_memtable_reads_snapshots_transactions_backup_and_flush_match_the_model() {
    for (seed, tables) in [(1u64, 0usize), (2, 3), (3, 9), (4, 20)] {
        let (image, model) = crash_image(seed, tables, 500);
        let mut rng = Rng(seed * 7 + 1);
        let gate = DirGate::new(image.path());
        let db = Database::open_with(
            image.path(),
            keep_tables().fs(Arc::new(WrappedFs::os(gate.clone()))),
        )
        .unwrap();
        let held = Held(gate);
        assert!(db.stats().recovery.records > 0, "seed {seed}");
        check_db(&db, &model, &mut rng, &format!("seed {seed}, replayed"));

        // A snapshot at open, then writes into the active memtable.
        let snap = db.snapshot().unwrap();
        // A serializable transaction reading a range of replayed keys,
        // which nothing writes: it commits.
        let calm = db
            .transaction_with(TransactionOptions::default().isolation(Isolation::Serializable))
            .unwrap();
        let calm_seen: Vec<_> = calm
            .iter(ScanOptions::range(&b"shared/"[..]..&b"shared0"[..]))
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        // One whose range a later write lands in: it conflicts.
        let hit = db
            .transaction_with(TransactionOptions::default().isolation(Isolation::Serializable))
            .unwrap();
        let _ = hit
            .iter(ScanOptions::range(&b"k0"[..]..&b"k1"[..]))
            .unwrap()
            .count();
        let mut model2 = model.clone();
        random_ops(&db, &mut rng, &mut model2, 200, 2_000_000);
        let newer = b"k05\x01".to_vec();
        db.put(&newer, "late").unwrap();
        model2.insert(newer, b"late".to_vec());
        // Calm's range read: put outside it, and a key only it writes.
        calm.put("zz-calm", "c").unwrap();
        let calm_range_touched = model2
            .keys()
            .chain(model.keys())
            .any(|k| k.starts_with(b"shared/") && model.get(k) != model2.get(k));
        let calm_outcome = calm.commit();
        if calm_range_touched {
            assert_eq!(
                calm_outcome.unwrap_err().kind(),
                ErrorKind::Conflict,
                "seed {seed}"
            );
        } else {
            calm_outcome.unwrap();
            model2.insert(b"zz-calm".to_vec(), b"c".to_vec());
        }
        let want_seen: Vec<_> = model
            .range(b"shared/".to_vec()..b"shared0".to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(calm_seen, want_seen, "seed {seed}: the transaction's scan");
        hit.put("zz-hit", "h").unwrap();
        assert_eq!(
            hit.commit().unwrap_err().kind(),
            ErrorKind::Conflict,
            "seed {seed}"
        );

        check_reader(
            &|k| snap.get(k).unwrap(),
            &|o| snap.iter(o).unwrap().map(|e| e.unwrap()).collect(),
            &model,
            &mut rng,
            &format!("seed {seed}, snapshot at open"),
        );
        check_db(
            &db,
            &model2,
            &mut rng,
            &format!("seed {seed}, after writes"),
        );

        // A backup while the replayed memtable is unflushed.
        let backup_parent = tempfile::tempdir().unwrap();
        let backup_dir = backup_parent.path().join("b");
        db.backup(&backup_dir).unwrap();
        {
            let b = Database::open_with(&backup_dir, keep_tables()).unwrap();
            check_db(&b, &model2, &mut rng, &format!("seed {seed}, backup"));
            b.close().unwrap();
        }

        // The held flush, then a reopen.
        held.0.release();
        db.flush().unwrap();
        wait_idle(&db);
        check_db(&db, &model2, &mut rng, &format!("seed {seed}, flushed"));
        check_reader(
            &|k| snap.get(k).unwrap(),
            &|o| snap.iter(o).unwrap().map(|e| e.unwrap()).collect(),
            &model,
            &mut rng,
            &format!("seed {seed}, snapshot after the flush"),
        );
        snap.release();
        db.close().unwrap();
        drop(held);
        for round in 0..2 {
            let db = Database::open_with(image.path(), keep_tables()).unwrap();
            check_db(
                &db,
                &model2,
                &mut rng,
                &format!("seed {seed}, reopen {round}"),
            );
            db.close().unwrap();
        }
    }
}

/// Crash images taken one after another while the database runs (each a
/// prefix of the history), each opened and checked against the model at
/// that point, then reopened after its replayed memtable was flushed.
#[test]
fn crash_images_along_a_history_recover_their_model() {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    let mut rng = Rng(77);
    let mut model = Model::new();
    let mut images = Vec::new();
    for round in 0..8u64 {
        random_ops(&db, &mut rng, &mut model, 120, round * 10_000);
        if round % 3 == 2 {
            db.flush().unwrap();
        }
        images.push((copy_dir(live.path()), model.clone()));
    }
    db.close().unwrap();
    for (i, (image, model)) in images.iter().enumerate() {
        let db = Database::open_with(image.path(), keep_tables()).unwrap();
        check_db(&db, model, &mut rng, &format!("image {i}"));
        wait_idle(&db);
        db.close().unwrap();
        let db = Database::open_with(image.path(), keep_tables()).unwrap();
        assert_eq!(db.stats().recovery.records, 0, "image {i}");
        check_db(&db, model, &mut rng, &format!("image {i}, reopened"));
        db.close().unwrap();
    }
}
