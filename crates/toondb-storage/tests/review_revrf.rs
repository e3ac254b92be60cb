//! Review of branch replayfast (replayed versions kept in the mapped WAL
//! segment, `VersionBytes::InSegment`): what could unmap, truncate or
//! rewrite a segment while a memtable's versions still point into it.
//!
//! - A closed handle whose replayed memtable was never flushed (its flush
//!   failed) stays alive with an iterator; a second open of the same
//!   directory in the same process replays the same segments, flushes and
//!   deletes them: the old iterator still reads the model (no SIGBUS, no
//!   garbage).
//! - A closed database keeps no WAL segment mapped or open (the rule
//!   tests/handles.rs states for table files: a handle object may outlive
//!   its close until a JS GC).
//! - A replay spanning several segments (small memtables, WAL bound on)
//!   with a torn tail on the last: the replayed memtable reads back the
//!   model before and after its flush; a snapshot taken before the flush
//!   reads the same after it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, ScanOptions, WriteBatch};

mod support;
use support::{HeldGate, Rng, TableGate};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const KEYS: u64 = 150;

fn key_named(i: u64) -> Vec<u8> {
    if i.is_multiple_of(3) {
        format!("a/shared/sixteen+/{i:04}").into_bytes()
    } else if i % 3 == 1 {
        format!("k{i:04}").into_bytes()
    } else {
        // Empty-ish and binary keys too.
        let mut k = vec![0u8; (i % 5) as usize];
        k.extend_from_slice(&i.to_be_bytes());
        k
    }
}

fn value(rng: &mut Rng, tag: u64) -> Vec<u8> {
    let len = [0usize, 0, 1, 9, 200, 3000][rng.below(6) as usize];
    if len == 0 {
        return Vec::new();
    }
    let mut v = format!("{tag}:").into_bytes();
    v.resize(len.max(v.len()), b'a' + (tag % 26) as u8);
    v
}

/// Random puts (empty values included), deletes, range deletes, batches
/// writing one key several times, transactions; mirrored in the model.
fn random_history(db: &Database, seed: u64, ops: usize) -> Model {
    let mut rng = Rng(seed | 1);
    let mut model = Model::new();
    let key = |rng: &mut Rng| key_named(rng.below(KEYS));
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
                if a < b && !a.is_empty() {
                    db.delete_range(&a, &b).unwrap();
                    model.retain(|k, _| !(a <= *k && *k < b));
                }
            }
            6 | 7 => {
                let mut batch = WriteBatch::new();
                let k0 = key(&mut rng);
                for j in 0..1 + rng.below(8) {
                    // Often the same key again: the last write wins.
                    let k = if rng.below(2) == 0 {
                        k0.clone()
                    } else {
                        key(&mut rng)
                    };
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
                for j in 0..1 + rng.below(4) {
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

fn copy_dir(src: &Path) -> TempDir {
    let dst = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.path().join(entry.file_name())).unwrap();
        }
    }
    dst
}

fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn check(db: &Database, model: &Model, what: &str) {
    for i in 0..KEYS {
        let k = key_named(i);
        assert_eq!(db.get(&k).unwrap().as_ref(), model.get(&k), "{what}: {k:?}");
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
        assert!(Instant::now() < deadline, "no flush");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Fails every table file creation while `fail` is set: the open's flush
/// of what it replayed fails, and the replayed memtable stays.
#[derive(Clone, Default)]
struct FailTables(Arc<AtomicBool>);

impl WriteHook for FailTables {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if self.0.load(Ordering::SeqCst) && path.extension().is_some_and(|e| e == "sst") {
            return Err(toondb_storage::Error::io(
                std::io::Error::other("injected: no table files"),
                "creating a table",
            ));
        }
        Ok(())
    }
    fn wrap(&self, _: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

/// A crash image of a database that wrote `ops` random operations.
fn crash_image(seed: u64, ops: usize, options: Options) -> (TempDir, Model) {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), options).unwrap();
    let model = random_history(&db, seed, ops);
    let image = copy_dir(live.path());
    db.close().unwrap();
    (image, model)
}

fn drain(scan: &mut toondb_storage::Scan, into: &mut Vec<(Vec<u8>, Vec<u8>)>) {
    loop {
        let more = scan.next_batch(1, usize::MAX).unwrap();
        if more.is_empty() {
            break;
        }
        into.extend(more);
    }
}

/// Handle A replays a crash image; its flush fails, so its memtable keeps
/// the segments mapped; A is closed with a scan still open. Handle B (same
/// process, same directory) replays the same segments, flushes and deletes
/// them. A's scan reads on: the model, or an error, never garbage.
#[test]
fn old_handle_scan_reads_its_mapped_segments_after_a_new_open_deletes_them() {
    for seed in [3u64, 17, 2024] {
        let (image, model) = crash_image(seed, 500, Options::default());
        let fail = FailTables::default();
        fail.0.store(true, Ordering::SeqCst);
        let a = Database::open_with(
            image.path(),
            Options::default().fs(Arc::new(WrappedFs::os(fail.clone()))),
        )
        .unwrap();
        assert!(a.stats().recovery.records > 0);
        check(&a, &model, "A, replayed");
        let mut scan = a.scan(ScanOptions::default()).unwrap();
        let mut got = scan.next_batch(1, usize::MAX).unwrap();
        let _ = a.close(); // reports the failed flush
        let segments = wal_segments(image.path());

        let b = Database::open(image.path()).unwrap();
        assert!(b.stats().recovery.records > 0);
        // From 0, not from a count read now: the open's flush may already
        // have finished (counters start at the open).
        wait_for_flush(&b, 0);
        for s in &segments {
            assert!(!s.exists(), "seed {seed}: {s:?} not deleted by B's flush");
        }
        check(&b, &model, "B, after its flush");

        // A's scan reads the versions from the (now deleted) segments.
        let mut rest = Vec::new();
        loop {
            match scan.next_batch(1, usize::MAX) {
                Ok(more) if more.is_empty() => break,
                Ok(more) => rest.extend(more),
                Err(e) => {
                    rest.clear();
                    got.clear();
                    eprintln!("seed {seed}: A's scan after close: {e}");
                    break;
                }
            }
        }
        if !got.is_empty() || !rest.is_empty() {
            got.extend(rest);
            let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(got, want, "seed {seed}: A's scan across B's flush");
        }
        drop(scan);
        drop(a);
        b.close().unwrap();
    }
}

/// WAL segments of `dir` mapped by this process (Linux: /proc/self/maps),
/// and open descriptors on them (/proc/self/fd); with `deleted_only`, only
/// of segments that were deleted.
#[cfg(target_os = "linux")]
fn wal_maps_and_fds_of(dir: &Path, deleted_only: bool) -> (usize, usize) {
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_str().unwrap().to_owned();
    let wanted = |l: &str| {
        l.contains(&dir)
            && (l.ends_with(".wal (deleted)") || (!deleted_only && l.ends_with(".wal")))
    };
    let maps = fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| wanted(l))
        .count();
    let fds = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|p| wanted(&p.to_string_lossy()))
        .count();
    (maps, fds)
}

#[cfg(target_os = "linux")]
fn wal_maps_and_fds(dir: &Path) -> (usize, usize) {
    wal_maps_and_fds_of(dir, false)
}

/// A closed database whose replayed memtable was not flushed (here its
/// flush failed; also an open closed before the maintenance thread took the
/// flush up) must not keep the replayed WAL segments mapped and open while
/// its handle object lives on (tests/handles.rs states this rule for table
/// files; a Node handle lives until a GC).
#[cfg(target_os = "linux")]
#[test]
fn closed_database_keeps_no_wal_segment_mapped() {
    let (image, model) = crash_image(5, 300, Options::default());
    let fail = FailTables::default();
    fail.0.store(true, Ordering::SeqCst);
    let db = Database::open_with(
        image.path(),
        Options::default().fs(Arc::new(WrappedFs::os(fail.clone()))),
    )
    .unwrap();
    check(&db, &model, "replayed");
    let _ = db.close();
    assert_eq!(
        wal_maps_and_fds(image.path()),
        (0, 0),
        "WAL segment maps and descriptors of a closed database"
    );
    drop(db);
    assert_eq!(wal_maps_and_fds(image.path()), (0, 0));
}

/// Small memtables and the WAL bound make the crash image hold several
/// segments (and sealed memtables, checkpoint tables); its last record is
/// torn. The replayed memtable reads the model (minus the torn record)
/// before its flush; a snapshot and a scan taken before the flush read the
/// same after it; a clean reopen reads the model too.
#[test]
fn replay_of_many_segments_with_a_torn_tail_matches_the_model() {
    for seed in [11u64, 77, 31337] {
        let options = Options::default()
            .memtable_size(64 << 10)
            .wal_size_limit(16 << 10)
            .auto_compaction(false);
        let live = tempfile::tempdir().unwrap();
        // Flushes and checkpoints held: sealed memtables and their
        // segments pile up, and nothing is deleted while the image is
        // copied (a consistent crash image).
        let live_gate = TableGate::default();
        let live_held = HeldGate(live_gate.clone());
        let db = Database::open_with(
            live.path(),
            options
                .clone()
                .max_immutable_memtables(64)
                .fs(Arc::new(WrappedFs::os(live_gate.clone()))),
        )
        .unwrap();
        let model = random_history(&db, seed, 1500);
        let last = wal_segments(live.path()).pop().unwrap();
        let len = fs::metadata(&last).unwrap().len();
        db.put("torn-record", vec![b't'; 5000]).unwrap();
        let image = copy_dir(live.path());
        assert!(wal_segments(image.path()).len() > 3, "seed {seed}");
        drop(live_held);
        db.close().unwrap();
        let torn = image.path().join(last.file_name().unwrap());
        let cut = fs::metadata(&torn).unwrap().len() > len;
        if cut {
            fs::OpenOptions::new()
                .write(true)
                .open(&torn)
                .unwrap()
                .set_len(len + 2500)
                .unwrap();
        }

        let gate = TableGate::default();
        let held = HeldGate(gate.clone());
        let db = Database::open_with(
            image.path(),
            options.clone().fs(Arc::new(WrappedFs::os(gate.clone()))),
        )
        .unwrap();
        let rec = db.stats().recovery;
        assert!(rec.records > 0, "seed {seed}");
        assert!(rec.segments > 3, "seed {seed}: {rec:?}");
        assert_eq!(rec.dropped_tail.is_some(), cut, "seed {seed}: {rec:?}");
        assert_eq!(db.get("torn-record").unwrap(), None, "seed {seed}");
        check(&db, &model, &format!("seed {seed}, replayed"));
        let snap = db.snapshot().unwrap();
        let mut scan = db.scan(ScanOptions::default()).unwrap();
        let mut got = scan.next_batch(1, usize::MAX).unwrap();
        let flushes = db.stats().flushes;
        held.0.release();
        wait_for_flush(&db, flushes);
        drain(&mut scan, &mut got);
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, want, "seed {seed}: scan across the flush");
        for i in 0..KEYS {
            let k = key_named(i);
            assert_eq!(
                snap.get(&k).unwrap().as_ref(),
                model.get(&k),
                "seed {seed}: snapshot"
            );
        }
        drop(snap);
        check(&db, &model, &format!("seed {seed}, flushed"));
        db.close().unwrap();
        drop(held);
        let db = Database::open_with(image.path(), options).unwrap();
        check(&db, &model, &format!("seed {seed}, reopened"));
        db.close().unwrap();
    }
}

/// After the open's flush of what it replayed has deleted the replayed
/// segments, no map or descriptor of them is left: their disk space is
/// given back (a version a batch wrote twice is replaced in the skiplist,
/// and a replaced entry is freed only when the epoch collector gets to it).
#[cfg(target_os = "linux")]
#[test]
fn flushed_replay_leaves_no_deleted_segment_mapped() {
    for seed in [5u64, 6, 7] {
        let (image, model) = crash_image(seed, 300, Options::default());
        let db = Database::open(image.path()).unwrap();
        assert!(db.stats().recovery.records > 0);
        // From 0: the open's flush may already have finished.
        wait_for_flush(&db, 0);
        check(&db, &model, "flushed");
        assert_eq!(wal_segments(image.path()).len(), 1);
        // The replayed segments' background sync (commit/seal_sync.rs)
        // holds descriptors until it finishes: give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while wal_maps_and_fds_of(image.path(), true) != (0, 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            wal_maps_and_fds_of(image.path(), true),
            (0, 0),
            "seed {seed}: maps and descriptors of deleted WAL segments"
        );
        db.close().unwrap();
    }
}

/// More writes over the same keys (deletes, puts, batches writing one key
/// three times), mirrored in `model`.
fn more_history(db: &Database, seed: u64, ops: usize, model: &mut Model) {
    let mut rng = Rng(seed | 1);
    for tag in 0..ops as u64 {
        let k = key_named(rng.below(KEYS));
        match rng.below(4) {
            0 => {
                db.delete(&k).unwrap();
                model.remove(&k);
            }
            1 => {
                let mut batch = WriteBatch::new();
                batch.put(&k, b"first").unwrap();
                batch.delete(&k).unwrap();
                let v = value(&mut rng, tag + 1_000_000);
                batch.put(&k, &v).unwrap();
                db.write(batch).unwrap();
                model.insert(k, v);
            }
            _ => {
                let v = value(&mut rng, tag + 1_000_000);
                db.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
    }
}

/// Reader threads check every key against the model while the replayed
/// memtable is flushed and its segments deleted under them; writes after
/// the open (before and after the flush) read back as the model too.
#[test]
fn readers_across_the_flush_of_a_replayed_memtable_see_the_model() {
    for seed in [8u64, 88] {
        let (image, mut model) = crash_image(seed, 800, Options::default());
        let gate = TableGate::default();
        let held = HeldGate(gate.clone());
        let db = Arc::new(
            Database::open_with(
                image.path(),
                Options::default().fs(Arc::new(WrappedFs::os(gate))),
            )
            .unwrap(),
        );
        assert!(db.stats().recovery.records > 0);
        more_history(&db, seed + 1, 200, &mut model);
        check(
            &db,
            &model,
            "written after the open, replayed memtable held",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let frozen = Arc::new(model.clone());
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (db, stop, model) = (db.clone(), stop.clone(), frozen.clone());
                std::thread::spawn(move || {
                    let mut rounds = 0u64;
                    while !stop.load(Ordering::SeqCst) || rounds < 3 {
                        if r == 0 {
                            for i in 0..KEYS {
                                let k = key_named(i);
                                assert_eq!(db.get(&k).unwrap().as_ref(), model.get(&k));
                            }
                        } else {
                            let got: Vec<_> = db
                                .iter(ScanOptions::default())
                                .unwrap()
                                .map(|e| e.unwrap())
                                .collect();
                            let want: Vec<_> =
                                model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                            assert_eq!(got, want);
                        }
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(30));
        let flushes = db.stats().flushes;
        drop(held);
        wait_for_flush(&db, flushes);
        std::thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        more_history(&db, seed + 2, 200, &mut model);
        check(&db, &model, "after the flush");
        db.close().unwrap();
        drop(db);
        let db = Database::open(image.path()).unwrap();
        check(&db, &model, "reopened");
        db.close().unwrap();
    }
}
