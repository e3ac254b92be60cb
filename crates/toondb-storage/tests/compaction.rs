//! Leveled compaction: retention under held snapshots, transactions and
//! scans; manual, ranged and automatic compactions; space reclaimed; file
//! lifecycle; I/O errors; close during compaction; backpressure that never
//! hangs.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Error, ErrorKind, Options, Result, ScanOptions};

/// Small enough that a few thousand writes fill several levels.
fn tiny() -> Options {
    Options::default()
        .memtable_size(4 << 10)
        .block_size(256)
        .target_file_size(2 << 10)
        .level_base_bytes(8 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u32, round: u32) -> Vec<u8> {
    format!("value-{i}-{round}-{}", "x".repeat((i % 7) as usize * 10)).into_bytes()
}

fn all(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn model_vec(m: &Model) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn sst_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sst"))
        .collect();
    v.sort();
    v
}

/// Waits until automatic compaction has nothing left to do: the
/// maintenance thread idle with no sealed memtable (so nothing is picked or
/// running; a level right at its target can still be picked with no
/// pending bytes), and level 0 and the pending bytes under their triggers.
fn settle(db: &Database) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s = db.stats();
        let idle = !s.maintenance_busy && s.immutable_memtables == 0;
        if idle && s.pending_compaction_bytes == 0 && s.levels[0].tables < 2 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "compaction did not settle: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A tiny deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn model_with_held_snapshots_across_compactions() {
    for seed in [1u64, 7, 42] {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Database::open_with(dir.path(), tiny()).unwrap();
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut held: Vec<(toondb_storage::Snapshot, Model)> = Vec::new();
        for step in 0..3000u32 {
            let k = key(rng.below(300) as u32);
            match rng.below(100) {
                0..=59 => {
                    let v = value(step, seed as u32);
                    db.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                60..=79 => {
                    db.delete(&k).unwrap();
                    model.remove(&k);
                }
                80..=84 => db.flush().unwrap(),
                85 => db.compact().unwrap(),
                86 => {
                    let (a, b) = (rng.below(300) as u32, rng.below(300) as u32);
                    let (lo, hi) = (key(a.min(b)), key(a.max(b)));
                    db.compact_range(Bound::Included(lo), Bound::Excluded(hi))
                        .unwrap();
                }
                87..=89 => {
                    if held.len() < 4 {
                        held.push((db.snapshot().unwrap(), model.clone()));
                    }
                }
                90..=91 => {
                    if !held.is_empty() {
                        let i = rng.below(held.len() as u64) as usize;
                        held.swap_remove(i);
                    }
                }
                92 if held.is_empty() => {
                    db.close().unwrap();
                    db = Database::open_with(dir.path(), tiny()).unwrap();
                }
                _ => {
                    assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "step {step}");
                }
            }
            if step % 250 == 0 {
                assert_eq!(all(&db), model_vec(&model), "seed {seed} step {step}");
                for (snap, expected) in &held {
                    let got = snap
                        .iter(ScanOptions::default())
                        .unwrap()
                        .collect::<Result<Vec<_>>>()
                        .unwrap();
                    assert_eq!(
                        got,
                        model_vec(expected),
                        "snapshot view, seed {seed} step {step}"
                    );
                    for probe in 0..20 {
                        let k = key(probe * 15);
                        assert_eq!(snap.get(&k).unwrap(), expected.get(&k).cloned());
                    }
                }
            }
        }
        drop(held);
        db.compact().unwrap();
        assert_eq!(all(&db), model_vec(&model));
        db.close().unwrap();
        let db = Database::open_with(dir.path(), tiny()).unwrap();
        assert_eq!(all(&db), model_vec(&model));
        // Listed once idle: a compaction the reopen starts creates files
        // before its manifest edit lists them.
        settle(&db);
        assert_eq!(sst_files(dir.path()).len() as u64, db.stats().tables);
    }
}

#[test]
fn data_moves_through_several_levels_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    let mut model = BTreeMap::new();
    for round in 0..3 {
        for i in 0..2000u32 {
            let i = (i * 7919) % 2000;
            db.put(key(i), value(i, round)).unwrap();
            model.insert(key(i), value(i, round));
        }
    }
    db.flush().unwrap();
    settle(&db);
    let s = db.stats();
    // Shown with --nocapture; docs/compaction.md quotes a run.
    println!(
        "levels {:?}\nflushed {} B, compaction read {} B written {} B, write amplification {:.2}, space amplification {:.2}",
        s.levels,
        s.flush_bytes_written,
        s.compaction_bytes_read,
        s.compaction_bytes_written,
        s.write_amplification(),
        s.space_amplification()
    );
    for (n, l) in s.levels.iter().enumerate() {
        println!(
            "L{n}: {} tables {} B; compacted in {} B, written {} B, pass write amplification {:.2}",
            l.tables,
            l.bytes,
            l.compacted_in,
            l.compaction_bytes_written,
            l.write_amplification()
        );
    }
    assert_eq!(
        s.levels
            .iter()
            .map(|l| l.compaction_bytes_written)
            .sum::<u64>(),
        s.compaction_bytes_written
    );
    let deep = s.levels.iter().skip(2).map(|l| l.tables).sum::<u64>();
    assert!(deep > 0, "nothing reached level 2 or below: {:?}", s.levels);
    assert!(s.compactions > 0);
    assert!(s.write_amplification() > 1.0);
    assert_eq!(all(&db), model_vec(&model));
    for i in (0..2000).step_by(37) {
        assert_eq!(db.get(key(i)).unwrap(), model.get(&key(i)).cloned());
    }
    let shape = |s: &toondb_storage::Stats| -> Vec<(u64, u64)> {
        s.levels.iter().map(|l| (l.tables, l.bytes)).collect()
    };
    let levels = shape(&s);
    db.close().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    assert_eq!(
        shape(&db.stats()),
        levels,
        "levels rebuilt from the manifest"
    );
    assert_eq!(all(&db), model_vec(&model));
    settle(&db);
    assert_eq!(sst_files(dir.path()).len() as u64, db.stats().tables);
}

#[test]
fn compaction_reclaims_overwritten_and_deleted_space() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny().auto_compaction(false)).unwrap();
    for i in 0..1000 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    let one_copy = db.stats().table_bytes;
    for round in 1..6 {
        for i in 0..1000 {
            db.put(key(i), value(i, round)).unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats().table_bytes;
    assert!(before > 4 * one_copy, "{before} vs {one_copy}");
    db.compact().unwrap();
    let s = db.stats();
    assert!(
        s.table_bytes < one_copy + one_copy / 10,
        "after compaction {} bytes, one copy is {one_copy}",
        s.table_bytes
    );
    assert!(
        s.space_amplification() <= 1.01,
        "{}",
        s.space_amplification()
    );
    for i in 0..1000 {
        db.delete(key(i)).unwrap();
    }
    db.compact().unwrap();
    let s = db.stats();
    assert_eq!((s.tables, s.table_bytes), (0, 0), "{s:?}");
    assert!(sst_files(dir.path()).is_empty());
    assert!(all(&db).is_empty());
}

#[test]
fn long_held_snapshot_and_transaction_keep_their_view() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    for i in 0..300 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    let original: Vec<_> = (0..300).map(|i| (key(i), value(i, 0))).collect();
    let snap = db.snapshot().unwrap();
    let txn = db.transaction().unwrap();
    for round in 1..15 {
        for i in 0..300 {
            if (i + round) % 3 == 0 {
                db.delete(key(i)).unwrap();
            } else {
                db.put(key(i), value(i, round)).unwrap();
            }
        }
        if round % 2 == 0 {
            db.compact().unwrap();
        } else {
            db.flush().unwrap();
        }
        let got = snap
            .iter(ScanOptions::default())
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        assert_eq!(got, original, "snapshot after round {round}");
        let got = txn
            .iter(ScanOptions::default())
            .unwrap()
            .collect::<Result<Vec<_>>>()
            .unwrap();
        assert_eq!(got, original, "transaction after round {round}");
        assert_eq!(txn.get(key(3)).unwrap(), Some(value(3, 0)));
    }
    db.compact().unwrap();
    let held = db.stats().table_bytes;
    drop(snap);
    txn.rollback().unwrap();
    db.compact().unwrap();
    let freed = db.stats().table_bytes;
    assert!(
        freed < held,
        "releasing the readers freed nothing: {freed} vs {held}"
    );
}

#[test]
fn a_scan_keeps_its_view_and_its_files_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny().auto_compaction(false)).unwrap();
    for i in 0..500 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    let old_files = sst_files(dir.path());
    assert!(!old_files.is_empty());
    let live_before = db.stats().live_snapshots;
    let mut it = db.iter(ScanOptions::default()).unwrap();
    assert_eq!(
        db.stats().live_snapshots,
        live_before + 1,
        "the scan is pinned"
    );
    let first = it.next().unwrap().unwrap();
    assert_eq!(first, (key(0), value(0, 0)));
    for round in 1..4 {
        for i in 0..500 {
            db.put(key(i), value(i, round)).unwrap();
        }
        db.compact().unwrap();
    }
    let now = sst_files(dir.path());
    for f in &old_files {
        assert!(now.contains(f), "{f} was deleted while a scan used it");
    }
    let rest: Vec<_> = it.by_ref().collect::<Result<Vec<_>>>().unwrap();
    let expected: Vec<_> = (1..500).map(|i| (key(i), value(i, 0))).collect();
    assert_eq!(rest, expected);
    drop(it);
    assert_eq!(db.stats().live_snapshots, live_before);
    let now = sst_files(dir.path());
    for f in &old_files {
        assert!(!now.contains(f), "{f} outlived the last reader");
    }
    assert_eq!(now.len() as u64, db.stats().tables);
}

#[test]
fn a_scan_from_a_released_snapshot_stays_correct() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    for i in 0..200 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    let snap = db.snapshot().unwrap();
    let it = snap.iter(ScanOptions::default()).unwrap();
    snap.release();
    drop(snap);
    assert_eq!(
        db.stats().live_snapshots,
        1,
        "the scan still pins its timestamp"
    );
    for round in 1..4 {
        for i in 0..200 {
            db.put(key(i), value(i, round)).unwrap();
        }
        db.compact().unwrap();
    }
    let got: Vec<_> = it.collect::<Result<Vec<_>>>().unwrap();
    let expected: Vec<_> = (0..200).map(|i| (key(i), value(i, 0))).collect();
    assert_eq!(got, expected);
    assert_eq!(db.stats().live_snapshots, 0);
}

/// Fails table-file creation or syncs while armed.
#[derive(Default)]
struct TableFaults {
    fail_create: AtomicBool,
    fail_sync: AtomicBool,
    /// Fail syncs of table files larger than 8 KiB only.
    fail_big_sync: AtomicBool,
    injected: AtomicUsize,
}

struct FaultHook(Arc<TableFaults>);
struct FaultFile {
    inner: Box<dyn WritableFile>,
    faults: Arc<TableFaults>,
}

fn injected() -> Error {
    Error::io(std::io::Error::other("injected"), "table write")
}

impl WritableFile for FaultFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        let big = self.inner.len() > 8 << 10;
        if self.faults.fail_sync.load(Ordering::SeqCst)
            || (big && self.faults.fail_big_sync.load(Ordering::SeqCst))
        {
            self.faults.injected.fetch_add(1, Ordering::SeqCst);
            return Err(injected());
        }
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl WriteHook for FaultHook {
    fn before_create(&self, path: &Path) -> Result<()> {
        let sst = path.extension().is_some_and(|e| e == "sst");
        if sst && self.0.fail_create.load(Ordering::SeqCst) {
            self.0.injected.fetch_add(1, Ordering::SeqCst);
            return Err(injected());
        }
        Ok(())
    }
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "sst") {
            Box::new(FaultFile {
                inner: file,
                faults: self.0.clone(),
            })
        } else {
            file
        }
    }
}

#[test]
fn a_failed_compaction_leaves_the_database_readable_and_usable() {
    for fail_sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(TableFaults::default());
        let options = tiny()
            .auto_compaction(false)
            .fs(Arc::new(WrappedFs::os(FaultHook(faults.clone()))));
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        let mut model = BTreeMap::new();
        for round in 0..3 {
            for i in 0..400 {
                db.put(key(i), value(i, round)).unwrap();
                model.insert(key(i), value(i, round));
            }
            db.flush().unwrap();
        }
        let files = sst_files(dir.path());
        if fail_sync {
            faults.fail_sync.store(true, Ordering::SeqCst);
        } else {
            faults.fail_create.store(true, Ordering::SeqCst);
        }
        let err = db.compact().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(faults.injected.load(Ordering::SeqCst) > 0);
        let s = db.stats();
        assert_eq!(s.compaction_errors, 1);
        assert!(s.compaction_error.is_some());
        assert_eq!(
            s.background_error, None,
            "a failed compaction stops nothing"
        );
        assert_eq!(sst_files(dir.path()), files, "partial outputs were deleted");
        assert_eq!(all(&db), model_vec(&model));
        // Writes still work, and compaction works once the disk does.
        db.put(b"after", b"1").unwrap();
        model.insert(b"after".to_vec(), b"1".to_vec());
        faults.fail_sync.store(false, Ordering::SeqCst);
        faults.fail_create.store(false, Ordering::SeqCst);
        db.compact().unwrap();
        let s = db.stats();
        assert_eq!(s.compaction_error, None);
        assert_eq!(s.levels[0].tables, 0);
        assert_eq!(all(&db), model_vec(&model));
        db.close().unwrap();
        let db = Database::open_with(dir.path(), options).unwrap();
        assert_eq!(all(&db), model_vec(&model));
    }
}

#[test]
fn writers_stalled_on_failing_compaction_get_the_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let faults = Arc::new(TableFaults::default());
    let db = Arc::new(
        Database::open_with(
            dir.path(),
            tiny()
                .l0_compaction_trigger(2)
                .l0_slowdown_writes(2)
                .l0_stop_writes(3)
                .target_file_size(1 << 20)
                .fs(Arc::new(WrappedFs::os(FaultHook(faults.clone())))),
        )
        .unwrap(),
    );
    db.put(b"before", b"1").unwrap();
    db.flush().unwrap();
    // Flushed tables (one 4 KiB memtable) stay small; compaction outputs
    // of several of them do not: only compactions fail.
    faults.fail_big_sync.store(true, Ordering::SeqCst);
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..100_000u32 {
                if let Err(e) = db.put(key(i), value(i, 0)) {
                    return Some(e);
                }
            }
            None
        })
    };
    let err = join_within(writer, Duration::from_secs(20)).expect("writes never failed");
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let s = db.stats();
    assert_eq!(s.background_error, None, "{s:?}");
    assert!(s.compaction_error.is_some() && s.compaction_errors > 0);
    assert_eq!(db.get(b"before").unwrap(), Some(b"1".to_vec()));

    // Once the disk heals, the retried compaction ends the stall.
    faults.fail_big_sync.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.put(b"after", b"2").is_err() {
        assert!(std::time::Instant::now() < deadline, "writes never resumed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(db.get(b"after").unwrap(), Some(b"2".to_vec()));
    let closer = {
        let db = db.clone();
        std::thread::spawn(move || db.close())
    };
    join_within(closer, Duration::from_secs(20)).unwrap();
}

fn join_within<T: Send + 'static>(t: std::thread::JoinHandle<T>, limit: Duration) -> T {
    let deadline = std::time::Instant::now() + limit;
    while !t.is_finished() {
        assert!(std::time::Instant::now() < deadline, "hung");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.join().unwrap()
}

#[test]
fn inconsistent_thresholds_do_not_stall_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(
        Database::open_with(
            dir.path(),
            tiny()
                .l0_compaction_trigger(8)
                .l0_slowdown_writes(4)
                .l0_stop_writes(1)
                .pending_compaction_bytes_slowdown(1 << 20)
                .pending_compaction_bytes_stop(1),
        )
        .unwrap(),
    );
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            for i in 0..5000u32 {
                db.put(key(i % 1000), value(i, 1)).unwrap();
            }
        })
    };
    join_within(writer, Duration::from_secs(20));
    db.close().unwrap();
}

#[test]
fn close_during_compaction_installs_nothing_half_done() {
    let dir = tempfile::tempdir().unwrap();
    let options = tiny().auto_compaction(false);
    let db = Arc::new(Database::open_with(dir.path(), options.clone()).unwrap());
    let mut model = BTreeMap::new();
    for round in 0..4 {
        for i in 0..3000u32 {
            db.put(key(i), value(i, round)).unwrap();
            model.insert(key(i), value(i, round));
        }
        db.flush().unwrap();
    }
    let before = sst_files(dir.path()).len();
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || db.compact())
    };
    // Close once the compaction is writing outputs (was a 5 ms sleep, which
    // on a loaded machine could close before it started or after it ended).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sst_files(dir.path()).len() <= before && !compactor.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "compaction never started"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    db.close().unwrap();
    match join_within(compactor, Duration::from_secs(20)) {
        Ok(()) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
    }
    assert_eq!(db.compact().unwrap_err().kind(), ErrorKind::Closed);
    drop(db);
    let db = Database::open_with(dir.path(), options).unwrap();
    assert_eq!(all(&db), model_vec(&model));
    assert_eq!(sst_files(dir.path()).len() as u64, db.stats().tables);
}

#[test]
fn automatic_compaction_bounds_level_zero_and_reports_stats() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    for round in 0..5 {
        for i in 0..1500u32 {
            db.put(key(i), value(i, round)).unwrap();
        }
    }
    db.flush().unwrap();
    settle(&db);
    let s = db.stats();
    assert!(s.levels[0].tables < 2, "{:?}", s.levels);
    assert_eq!(s.levels.iter().map(|l| l.tables).sum::<u64>(), s.tables);
    assert_eq!(s.levels.iter().map(|l| l.bytes).sum::<u64>(), s.table_bytes);
    assert!(s.compaction_bytes_read > 0 && s.compaction_bytes_written > 0);
    assert!(s.live_bytes_estimate > 0 && s.live_bytes_estimate <= s.table_bytes);
    assert!(s.space_amplification() >= 1.0);
}

#[test]
fn reads_racing_compactions_never_go_back_in_time() {
    // Writers bump per-key counters; readers check that a plain get never
    // sees a key vanish or its counter go backwards while compactions (with
    // no snapshot held) drop old versions underneath them.
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path(), tiny()).unwrap());
    const KEYS: u32 = 50;
    for i in 0..KEYS {
        db.put(key(i), 0u64.to_be_bytes()).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..KEYS {
                    db.put(key(i), n.to_be_bytes()).unwrap();
                }
                n += 1;
            }
        }));
    }
    {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                db.compact().unwrap();
            }
        }));
    }
    for _ in 0..2 {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut seen = vec![0u64; KEYS as usize];
            while !stop.load(Ordering::Relaxed) {
                for i in 0..KEYS {
                    let v = db.get(key(i)).unwrap().expect("a key vanished");
                    let n = u64::from_be_bytes(v.try_into().unwrap());
                    assert!(n >= seen[i as usize], "key {i} went back: {n}");
                    seen[i as usize] = n;
                }
            }
        }));
    }
    // At least 3 s, and until several compactions ran under the readers
    // (a fixed 3 s could see none on a loaded machine).
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) || db.stats().compactions < 5 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "compactions stalled: {:?}",
            db.stats()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(db.stats().compactions >= 5);
}

/// Fails the creation of manifest files while armed.
struct FailManifest(Arc<AtomicBool>);

impl WriteHook for FailManifest {
    fn before_create(&self, path: &Path) -> Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("MANIFEST-") && self.0.load(Ordering::SeqCst) {
            return Err(injected());
        }
        Ok(())
    }
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

#[test]
fn unlisted_table_files_are_deleted_only_once_the_new_manifest_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let fail = Arc::new(AtomicBool::new(false));
    // The listings below compare files; a background compaction after the
    // reopen would change them.
    let options = tiny()
        .fs(Arc::new(WrappedFs::os(FailManifest(fail.clone()))))
        .auto_compaction(false);
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    for i in 0..500 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    db.close().unwrap();
    drop(db);
    let listed = sst_files(dir.path());
    let stray = dir.path().join("999999.sst");
    std::fs::write(&stray, b"left by a crashed compaction").unwrap();

    // The manifest switch fails: nothing may be deleted. The switch runs on
    // the maintenance thread after the open returned (docs/architecture.md,
    // "Recovery (open)"), so its failure is a background error the close
    // reports, and the close has waited for the thread.
    fail.store(true, Ordering::SeqCst);
    let failed = Database::open_with(dir.path(), options.clone()).and_then(|db| db.close());
    assert!(failed.is_err());
    assert!(
        stray.exists(),
        "deleted on the strength of an unsynced manifest"
    );

    fail.store(false, Ordering::SeqCst);
    let db = Database::open_with(dir.path(), options).unwrap();
    // The maintenance thread deletes an open's obsolete files, off the
    // open's path: give it a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stray.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!stray.exists());
    assert_eq!(sst_files(dir.path()), listed, "listed tables are kept");
    let expected: Vec<_> = (0..500).map(|i| (key(i), value(i, 0))).collect();
    assert_eq!(all(&db), expected);
}

#[test]
fn transactions_conflict_and_read_correctly_across_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    for i in 0..100 {
        db.put(key(i), value(i, 0)).unwrap();
    }
    db.compact().unwrap();
    // Written by someone else after the snapshot, then compacted away into
    // the bottom level: still a conflict.
    let txn = db.transaction().unwrap();
    assert_eq!(txn.get(key(5)).unwrap(), Some(value(5, 0)));
    db.put(key(5), value(5, 1)).unwrap();
    db.put(key(5), value(5, 2)).unwrap();
    db.delete(key(6)).unwrap();
    db.compact().unwrap();
    assert_eq!(txn.get(key(5)).unwrap(), Some(value(5, 0)));
    assert_eq!(txn.get(key(6)).unwrap(), Some(value(6, 0)));
    txn.put(key(5), b"mine").unwrap();
    assert_eq!(txn.commit().unwrap_err().kind(), ErrorKind::Conflict);
    // A deleted key whose tombstone a held transaction still needs.
    let txn = db.transaction().unwrap();
    db.delete(key(7)).unwrap();
    db.compact().unwrap();
    txn.put(key(7), b"mine").unwrap();
    assert_eq!(txn.commit().unwrap_err().kind(), ErrorKind::Conflict);
    // No concurrent writer: commits fine after compactions.
    let txn = db.transaction().unwrap();
    db.compact().unwrap();
    txn.put(key(8), b"mine").unwrap();
    txn.commit().unwrap();
    assert_eq!(db.get(key(8)).unwrap(), Some(b"mine".to_vec()));
    assert_eq!(db.get(key(6)).unwrap(), None);
    assert_eq!(db.get(key(5)).unwrap(), Some(value(5, 2)));
    // An inverted range compacts nothing and is not an error.
    db.compact_range(Bound::Included(key(9)), Bound::Included(key(1)))
        .unwrap();
}

#[test]
fn a_flush_does_not_wait_for_a_long_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(OutputGate::default());
    let db = Arc::new(
        Database::open_with(
            dir.path(),
            tiny()
                .auto_compaction(false)
                .memtable_size(64 << 10)
                .target_file_size(1024)
                .fs(Arc::new(WrappedFs::os(GateHook(gate.clone())))),
        )
        .unwrap(),
    );
    for round in 0..2 {
        for i in 0..6_000u32 {
            db.put(key(i), value(i, round)).unwrap();
        }
    }
    db.flush().unwrap();
    // Held between two outputs (the second table file it creates), the
    // compaction cannot finish while the flush below runs: the outcome no
    // longer depends on which thread the machine runs first.
    gate.arm(2);
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || db.compact())
    };
    gate.wait_held(2);
    db.put(b"during", b"1").unwrap();
    let flusher = {
        let db = db.clone();
        std::thread::spawn(move || db.flush())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.stats().immutable_memtables == 0 {
        assert!(std::time::Instant::now() < deadline, "flush never sealed");
        std::thread::sleep(Duration::from_millis(1));
    }
    // Let that output finish; the flush runs before the next one (table
    // file 3), and the one after it (4) is held again.
    gate.hold(4);
    join_within(flusher, Duration::from_secs(20)).unwrap();
    assert!(
        !compactor.is_finished(),
        "the compaction ended although it was held"
    );
    gate.wait_held(4);
    gate.release();
    join_within(compactor, Duration::from_secs(60)).unwrap();
    assert_eq!(db.get(b"during").unwrap(), Some(b"1".to_vec()));
    assert_eq!(db.get(key(7)).unwrap(), Some(value(7, 1)));
    let s = db.stats();
    assert_eq!(
        s.levels[0].tables, 1,
        "the flushed table, beside the compaction's outputs"
    );
}

/// Counts table-file creations once armed and holds the one numbered
/// `hold` (1-based) until told otherwise: stops a compaction between two
/// of its outputs.
#[derive(Default)]
struct OutputGate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    armed: bool,
    created: usize,
    hold: Option<usize>,
}

impl OutputGate {
    fn arm(&self, hold: usize) {
        let mut st = self.state.lock().unwrap();
        (st.armed, st.created, st.hold) = (true, 0, Some(hold));
    }
    fn hold(&self, n: usize) {
        self.state.lock().unwrap().hold = Some(n);
        self.changed.notify_all();
    }
    fn release(&self) {
        self.state.lock().unwrap().hold = None;
        self.changed.notify_all();
    }
    /// Waits until creation `n` is being held.
    fn wait_held(&self, n: usize) {
        let st = self.state.lock().unwrap();
        let (_st, timeout) = self
            .changed
            .wait_timeout_while(st, Duration::from_secs(20), |st| {
                !(st.created == n && st.hold == Some(n))
            })
            .unwrap();
        assert!(!timeout.timed_out(), "table file {n} was never created");
    }
}

struct GateHook(Arc<OutputGate>);

impl WriteHook for GateHook {
    fn before_create(&self, path: &Path) -> Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            let gate = &self.0;
            let mut st = gate.state.lock().unwrap();
            if st.armed {
                st.created += 1;
                let n = st.created;
                gate.changed.notify_all();
                while st.hold == Some(n) {
                    st = gate.changed.wait(st).unwrap();
                }
            }
        }
        Ok(())
    }
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

/// A rough cost check, not run by default:
/// `cargo test --release -p toondb-storage --test compaction -- --ignored --nocapture`
#[test]
#[ignore]
fn fill_with_and_without_compaction() {
    for auto in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(
            dir.path(),
            Options::default()
                .auto_compaction(auto)
                .memtable_size(1 << 20)
                .target_file_size(1 << 20)
                .level_base_bytes(4 << 20),
        )
        .unwrap();
        let started = std::time::Instant::now();
        let n = 400_000u32;
        let mut batch = toondb_storage::WriteBatch::new();
        for i in 0..n {
            // Random-ish order over 200K keys, so half the writes overwrite.
            let k = (i.wrapping_mul(2_654_435_761)) % 200_000;
            batch.put(key(k), [b'v'; 100]).unwrap();
            if batch.len() == 1000 {
                db.write(std::mem::take(&mut batch)).unwrap();
            }
        }
        db.flush().unwrap();
        let write = started.elapsed();
        if auto {
            settle(&db);
        }
        let settled = started.elapsed();
        let s = db.stats();
        println!(
            "auto_compaction={auto}: {n} puts in {:.2}s ({:.0}/s), settled {:.2}s; tables {} ({} B), W-Amp {:.2}, S-Amp {:.2}, stalls {} ({} ms), slowdowns {}",
            write.as_secs_f64(),
            n as f64 / write.as_secs_f64(),
            settled.as_secs_f64(),
            s.tables,
            s.table_bytes,
            s.write_amplification(),
            s.space_amplification(),
            s.write_stalls,
            s.write_stall_micros / 1000,
            s.write_slowdowns
        );
        for (i, l) in s.levels.iter().enumerate() {
            if l.tables > 0 || l.compacted_in > 0 {
                println!(
                    "  L{i}: {} tables {} B, pass W-Amp {:.2}",
                    l.tables,
                    l.bytes,
                    l.write_amplification()
                );
            }
        }
    }
}

/// `stats().maintenance_busy` is documented as false only while the
/// maintenance thread has nothing to do; tests and callers wait for idle by
/// it. Right after an open that leaves a compaction to run, it must not read
/// false before the thread has even looked for work (it used to start out
/// false, so a wait for idle could return before that compaction began).
#[test]
fn maintenance_reads_busy_from_open_until_it_has_nothing_left_to_do() {
    for attempt in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        {
            // Level 0 past the trigger, left by a session that did not compact.
            let db = Database::open_with(dir.path(), tiny().auto_compaction(false)).unwrap();
            for round in 0..4 {
                for i in 0..50 {
                    db.put(key(i), value(i, round)).unwrap();
                }
                db.flush().unwrap();
            }
            assert!(db.stats().levels[0].tables >= 4);
            db.close().unwrap();
        }
        let db = Database::open_with(dir.path(), tiny()).unwrap();
        let s = db.stats();
        // Not busy means the thread found nothing left to do, so the
        // compaction the open left it has run (the counters are read after
        // the flag).
        assert!(
            s.maintenance_busy || s.compactions + s.trivial_moves > 0,
            "attempt {attempt}: idle reported before level 0 ({} tables) was compacted",
            s.levels[0].tables
        );
        db.close().unwrap();
    }
}

/// `compact()` of a tree larger than the bottom level's target writes every
/// table into one level deep enough to hold them, so the automatic
/// compactions afterwards find nothing to do and a point read probes one
/// table (before, the output went to the bottom level in use, overflowed
/// it, and was at once rewritten half a level down).
#[test]
fn compact_writes_one_level_that_automatic_compaction_leaves_alone() {
    let dir = tempfile::tempdir().unwrap();
    // The static targets' placement (the dynamic ones put every output in
    // the bottom level: the test after this one).
    let opts = tiny()
        .level_size_ratio(4)
        .target_file_size(8 << 10)
        .dynamic_level_bytes(false);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    let model = load_scattered(&db, 6000);
    db.compact().unwrap();
    let after = support_levels(&db);
    let used: Vec<usize> = (0..after.len()).filter(|&n| after[n].0 > 0).collect();
    assert_eq!(
        used.len(),
        1,
        "compact() left tables in several levels: {after:?}"
    );
    let level = used[0];
    let bytes = after[level].1;
    // The level is the first (from 1) whose target holds the data.
    let target = |n: usize| (8u64 << 10) * 4u64.pow(n as u32 - 1);
    assert!(bytes <= target(level), "{after:?}");
    assert!(level == 1 || bytes > target(level - 1), "{after:?}");
    assert!(
        level > 1,
        "the test wants data larger than level 1's target"
    );
    settle(&db);
    assert_eq!(
        support_levels(&db),
        after,
        "automatic compaction moved tables"
    );
    assert_eq!(all(&db), model_vec(&model));
    db.close().unwrap();
}

/// With the dynamic targets (the default), `compact()` writes every table
/// into the bottom level, which has no target, so automatic compaction
/// leaves it alone; and a tree loaded without `compact()` settles with
/// most of its bytes there.
#[test]
fn dynamic_targets_compact_into_the_bottom_and_keep_most_bytes_there() {
    let dir = tempfile::tempdir().unwrap();
    let opts = tiny().level_size_ratio(4).target_file_size(8 << 10);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    let model = load_scattered(&db, 6000);
    settle(&db);
    let loaded = support_levels(&db);
    let total: u64 = loaded.iter().map(|l| l.1).sum();
    let bottom = loaded.len() - 1;
    assert!(
        loaded[bottom].1 * 2 > total,
        "most bytes in the bottom level: {loaded:?}"
    );
    assert_eq!(all(&db), model_vec(&model));
    db.compact().unwrap();
    let after = support_levels(&db);
    let used: Vec<usize> = (0..after.len()).filter(|&n| after[n].0 > 0).collect();
    assert_eq!(used, vec![bottom], "{after:?}");
    settle(&db);
    assert_eq!(
        support_levels(&db),
        after,
        "automatic compaction moved tables"
    );
    assert_eq!(all(&db), model_vec(&model));
    db.close().unwrap();
}

/// Puts keys 0..n in a scattered order (7919 is prime to n); the model.
fn load_scattered(db: &Database, n: u32) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    for i in 0..n {
        let i = (i * 7919) % n;
        db.put(key(i), value(i, 0)).unwrap();
        model.insert(key(i), value(i, 0));
    }
    model
}

fn support_levels(db: &Database) -> Vec<(u64, u64)> {
    db.stats()
        .levels
        .iter()
        .map(|l| (l.tables, l.bytes))
        .collect()
}

/// The level is chosen from what the merge keeps, not from what it reads:
/// a tree of mostly overwritten versions compacts into the bottom level in
/// use when the live data fits there, however large the garbage was
/// (compaction never moves tables up, so too deep would be for good).
#[test]
fn compact_of_mostly_garbage_stays_at_the_bottom_level_in_use() {
    let dir = tempfile::tempdir().unwrap();
    // Automatic compaction off, so the garbage is still there to read.
    // The static targets' placement (the dynamic ones: the bottom level).
    let opts = tiny()
        .level_size_ratio(4)
        .auto_compaction(false)
        .dynamic_level_bytes(false);
    let db = Database::open_with(dir.path(), opts).unwrap();
    for round in 0..60u32 {
        for i in 0..20u32 {
            db.put(key(i), value(i, round)).unwrap();
        }
        db.flush().unwrap();
    }
    let before = support_levels(&db);
    let total: u64 = before.iter().map(|l| l.1).sum();
    let bottom = (1..before.len())
        .rev()
        .find(|&n| before[n].0 > 0)
        .unwrap_or(1);
    db.compact().unwrap();
    let after = support_levels(&db);
    let used: Vec<usize> = (0..after.len()).filter(|&n| after[n].0 > 0).collect();
    assert_eq!(used, vec![bottom], "before {before:?}, after {after:?}");
    assert!(
        after[bottom].1 * 10 < total,
        "the test wants mostly garbage: {before:?} {after:?}"
    );
    for i in 0..20u32 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 59)));
    }
    db.close().unwrap();
}
