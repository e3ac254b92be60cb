//! Review of WAL format 4 (segment-synced records) and of the open that
//! no longer syncs the segments it replayed (docs/format-wal.md, *New
//! segments*, *Replay*): power cuts and kills at points of the open that
//! the feature tests do not reach.

mod powerloss_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use toondb_storage::io::{PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, unique_dir, Commit, Model};

/// A gate with a safety release: a test whose engine waits on it where it
/// should not fails an assertion instead of hanging.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !*open {
            let now = std::time::Instant::now();
            if now >= deadline {
                return;
            }
            open = cv.wait_timeout(open, deadline - now).unwrap().0;
        }
    }

    fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

/// Holds table creation (so the flush of a replayed memtable does not
/// delete the replayed segments) until released; and, when `kill_at_mark`
/// is set, kills the process right before the fdatasync that follows a
/// 25-byte WAL append (the close's durable mark, `sync_and_mark`).
#[derive(Clone)]
struct Hook {
    fs: Arc<PowerLossFs>,
    tables: Gate,
    kill_at_mark: Arc<AtomicBool>,
    /// Syncs of WAL segments with the given number are held until `syncs`
    /// opens (0: none).
    hold_sync_of: Arc<AtomicU64>,
    /// Background syncs of these segments are held too.
    hold_set: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    /// Background syncs of these segments fail.
    fail_set: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    syncs: Gate,
}

impl Hook {
    fn new(fs: &Arc<PowerLossFs>) -> Hook {
        Hook {
            fs: fs.clone(),
            tables: Gate::default(),
            kill_at_mark: Arc::default(),
            hold_sync_of: Arc::default(),
            hold_set: Arc::default(),
            fail_set: Arc::default(),
            syncs: Gate::default(),
        }
    }
}

impl WriteHook for Hook {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        // A backup's tables (under a `backup` directory) are not held.
        if path.extension().is_some_and(|e| e == "sst")
            && !path.to_string_lossy().contains("/backup/")
        {
            self.tables.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            let number = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Box::new(HookedWal {
                inner: file,
                hook: self.clone(),
                last_append: 0,
                number,
            })
        } else {
            file
        }
    }
}

struct HookedWal {
    inner: Box<dyn WritableFile>,
    hook: Hook,
    last_append: usize,
    number: u64,
}

impl HookedWal {
    fn before_sync(&self) {
        if self.hook.kill_at_mark.load(Ordering::SeqCst) && self.last_append == 25 {
            self.hook.fs.kill();
        }
        // Only the background sync thread is held: a sync the open does
        // itself must not wait (it would only make the test slow).
        if (self.hook.hold_sync_of.load(Ordering::SeqCst) == self.number
            || self.hook.hold_set.lock().unwrap().contains(&self.number))
            && std::thread::current().name() == Some("toondb-walsync")
        {
            self.hook.syncs.wait();
        }
    }
}

impl WritableFile for HookedWal {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.last_append = data.len();
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.before_sync();
        if std::thread::current().name() == Some("toondb-walsync")
            && self.hook.fail_set.lock().unwrap().contains(&self.number)
        {
            return Err(toondb_storage::Error::new(
                toondb_storage::ErrorKind::Io,
                "injected sync failure",
            ));
        }
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.last_append = data.len();
        self.before_sync();
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

fn put(n: u64) -> (WriteBatch, Commit) {
    let key = format!("key{:03}", n % 64).into_bytes();
    let value = vec![b'a' + (n % 26) as u8; 100 + (n * 37 % 100) as usize];
    let mut batch = WriteBatch::new();
    batch.put(&key, &value).unwrap();
    (batch, vec![(key, Some(value))])
}

fn options(fs: Arc<dyn toondb_storage::io::FileSystem>) -> Options {
    Options::default()
        .memtable_size(1 << 20)
        .max_immutable_memtables(64)
        .l0_slowdown_writes(1000)
        .l0_stop_writes(1000)
        .block_size(128)
        .fs(fs)
}

fn wal_segments(fs: &PowerLossFs, dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs
        .shared()
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    v.sort();
    v
}

/// A close killed between the append of its durable mark and the
/// fdatasync that makes the mark durable leaves a segment that *looks*
/// closed cleanly (it ends in a sync point claiming every byte before it)
/// while its last 25 bytes are only in the page cache. The next open
/// takes the "closed cleanly" path (`replay_deferring_sync`: nothing to
/// sync, predecessor `segment = 0`) and syncs nothing, so the new segment
/// tells replay that the old one was durable whole. A power cut before
/// the flush of the replayed memtable then tears the mark, and the next
/// open refuses the damage in a "synced" non-last segment as corruption:
/// the database, holding a write acknowledged as durable after the
/// reopen, cannot be opened.
#[test]
fn a_close_killed_before_its_mark_was_synced_then_a_power_cut() {
    let mut failures = Vec::new();
    for seed in 0..24u64 {
        let dir = unique_dir("revwal-mark");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();

        // Process 1: unsynced writes and one durable one, then a close
        // killed right before the mark's fdatasync.
        let hook = Hook::new(&fs);
        hook.tables.release();
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped)).unwrap();
        for n in 0..5 + seed % 5 {
            let (batch, commit) = put(n);
            db.write_with(batch, WriteOptions::sync(n == 2)).unwrap();
            model.commit(commit, n == 2);
        }
        hook.kill_at_mark.store(true, Ordering::SeqCst);
        assert!(db.close().is_err(), "the close was not killed");
        drop(db);
        assert!(fs.is_down());
        fs.restart();
        // Everything before the mark was synced by the close's first
        // fdatasync: every write is durable now.
        model.all_durable();

        // Process 2: the open; the flush of the replayed memtable is held
        // (it would delete the replayed segment); one durable write.
        let hook = Hook::new(&fs);
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped)).unwrap();
        model.check_all(&db).unwrap();
        let (batch, commit) = put(100 + seed);
        db.write_with(batch, WriteOptions::sync(true)).unwrap();
        model.commit(commit, true);

        fs.power_cut(PowerCut::random(seed, seed % 2 == 0));
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        match Database::open_with(&dir, options(fs.shared())) {
            Ok(db) => {
                model
                    .check_all(&db)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                db.close().unwrap();
            }
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "the reopen failed after a durable write was acknowledged:\n{}",
        failures.join("\n")
    );
}

/// Kills the process at its next directory sync once armed.
#[derive(Clone)]
struct KillAtDirSync {
    hook: Hook,
    armed: Arc<AtomicBool>,
}

impl WriteHook for KillAtDirSync {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        self.hook.before_create(path)
    }
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        self.hook.wrap(path, file)
    }
    fn before_sync_dir(&self, _dir: &Path) -> toondb_storage::Result<()> {
        if self.armed.load(Ordering::SeqCst) {
            self.hook.fs.kill();
        }
        Ok(())
    }
}

/// A process killed in a seal, after the new segment's header was written
/// and before any group reached it, leaves `[A, L]`: A holds unsynced
/// writes, L only a header. The open replays both without syncing them
/// and its segment N names L (end 16) as its predecessor; nothing records
/// where A ended (L, A's successor, has no predecessor record, so replay
/// reads A as "may be unsynced, end unknown"). A power cut before the
/// background sync then may shorten A cleanly (its lost pages or size read
/// as its end) while N's unsynced writes, made after all of A's, survive:
/// replay applies N after a hole in A, which is not a prefix in commit
/// order. (Before replaysync, replay synced A before N existed.)
#[test]
fn a_kill_inside_a_seal_then_a_power_cut_before_the_replayed_sync() {
    let mut failures = Vec::new();
    for seed in 0..24u64 {
        let dir = unique_dir("revwal-empty-last");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();

        // Process 1: unsynced writes into A, then killed inside the seal
        // that creates L (at its directory sync, after the header's sync).
        let hook = Hook::new(&fs);
        let killer = KillAtDirSync {
            hook: hook.clone(),
            armed: Arc::default(),
        };
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), killer.clone()));
        let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
        killer.armed.store(true, Ordering::SeqCst);
        let mut n = 0;
        loop {
            let (batch, commit) = put(n);
            n += 1;
            match db.write_with(batch, WriteOptions::sync(false)) {
                Ok(_) => model.commit(commit, false),
                Err(_) => {
                    model.commit_maybe(commit);
                    break;
                }
            }
            assert!(n < 100, "no seal happened");
        }
        assert!(fs.is_down());
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let segments = wal_segments(&fs, &dir);
        assert_eq!(segments.len(), 2, "{segments:?}");
        let a: u64 = segments[0].trim_end_matches(".wal").parse().unwrap();

        // Process 2: the open, A's background sync and the flush held;
        // unsynced writes into N; a power cut.
        let hook = Hook::new(&fs);
        hook.hold_sync_of.store(a, Ordering::SeqCst);
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped)).unwrap();
        model.check_all(&db).unwrap();
        for m in 0..3 {
            let (batch, commit) = put(200 + m);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        fs.power_cut(PowerCut::random(seed, false));
        hook.syncs.release();
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        match Database::open_with(&dir, options(fs.shared())) {
            Ok(db) => {
                if let Err(e) = model.settle_power_cut(&db) {
                    failures.push(format!("seed {seed}: {e}"));
                }
                db.close().unwrap();
            }
            Err(e) => failures.push(format!("seed {seed}: open: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn segment_numbers(fs: &PowerLossFs, dir: &Path) -> std::collections::BTreeSet<u64> {
    wal_segments(fs, dir)
        .iter()
        .map(|n| n.trim_end_matches(".wal").parse().unwrap())
        .collect()
}

/// Kill, open (the replayed segments' background sync held), unsynced
/// writes across seals, kill again, open again (again held), more writes,
/// then a power cut (or, on odd seeds, the syncs released, a durable write
/// and then the power cut), then an open (held again) whose replay may
/// cut a torn tail, writes and a second power cut: every image opens to a
/// prefix in commit order that keeps everything acknowledged as durable.
#[test]
fn kill_open_kill_open_then_a_power_cut() {
    let mut failures = Vec::new();
    let mut lost_any = 0;
    for seed in 0..80u64 {
        let dir = unique_dir("revwal-chain");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();
        let mut n = 0u64;
        for round in 0..4u64 {
            let hook = Hook::new(&fs);
            // Every replayed segment's sync held, or (odd) only the
            // newest's, so that the older ones are synced before the cut.
            let mut held = segment_numbers(&fs, &dir);
            if (seed + round) % 2 == 1 {
                held = held.iter().next_back().copied().into_iter().collect();
            }
            *hook.hold_set.lock().unwrap() = held;
            let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
            let db = match Database::open_with(&dir, options(wrapped).memtable_size(1024)) {
                Ok(db) => db,
                Err(e) => {
                    failures.push(format!("seed {seed} round {round}: open: {e}"));
                    break;
                }
            };
            // After a power cut (round 3 follows one): a prefix, and
            // replay may have cut a torn tail that is then replayed again.
            let checked = if round == 3 {
                model.settle_power_cut(&db).map(|lost| {
                    lost_any += u64::from(lost > 0);
                })
            } else {
                model.check_all(&db)
            };
            if let Err(e) = checked {
                failures.push(format!("seed {seed} round {round}: {e}"));
            }
            // Few enough seals that none waits for a held sync.
            // In the first round (nothing replayed, nothing held) some
            // writes are durable, so replayed segments hold preallocated
            // and direct-write zero padding after synced groups, which
            // later unsynced groups overwrite.
            for _ in 0..(3 + (seed + round) % 9) {
                let (batch, commit) = put(n);
                let durable = round == 0 && n % 4 == 1;
                n += 1;
                db.write_with(batch, WriteOptions::sync(durable)).unwrap();
                model.commit(commit, durable);
            }
            if round < 2 {
                fs.kill();
            } else {
                if seed % 2 == 1 && round == 2 {
                    hook.syncs.release();
                    let (batch, commit) = put(n);
                    n += 1;
                    db.write_with(batch, WriteOptions::sync(true)).unwrap();
                    model.commit(commit, true);
                    let (batch, commit) = put(n);
                    n += 1;
                    db.write_with(batch, WriteOptions::sync(false)).unwrap();
                    model.commit(commit, false);
                }
                let cut = match (seed + round) % 3 {
                    0 => PowerCut::pages(seed),
                    1 => PowerCut::random(seed, seed % 4 == 1),
                    _ => PowerCut::random(seed, false),
                };
                fs.power_cut(cut);
            }
            hook.syncs.release();
            hook.tables.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        match Database::open_with(&dir, options(fs.shared())) {
            Ok(db) => {
                match model.settle_power_cut(&db) {
                    Ok(lost) => lost_any += u64::from(lost > 0),
                    Err(e) => failures.push(format!("seed {seed}: {e}")),
                }
                db.close().unwrap();
            }
            Err(e) => failures.push(format!("seed {seed}: open: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(lost_any > 5, "only {lost_any} power cuts lost a write");
}

/// The background sync of the replayed segments fails: no later durable
/// write is acknowledged, and neither is the close.
#[test]
fn a_failed_sync_of_the_replayed_segments_fails_durable_writes_and_close() {
    let dir = unique_dir("revwal-syncfail");
    let fs = Arc::new(fresh_disk(&dir));
    let hook = Hook::new(&fs);
    hook.tables.release();
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
    for n in 0..20 {
        db.write_with(put(n).0, WriteOptions::sync(false)).unwrap();
    }
    fs.kill();
    let _ = db.close();
    drop(db);
    fs.restart();

    let hook = Hook::new(&fs);
    hook.tables.release();
    *hook.fail_set.lock().unwrap() = segment_numbers(&fs, &dir);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped)).unwrap();
    let _ = db.write_with(put(100).0, WriteOptions::sync(false));
    assert!(
        db.write_with(put(101).0, WriteOptions::sync(true)).is_err(),
        "a durable write was acknowledged after the replayed segments' sync failed"
    );
    assert!(db.write_with(put(102).0, WriteOptions::sync(true)).is_err());
    assert!(db.close().is_err(), "the close reported success");
}

/// The flush of the replayed memtable finishes (the checkpoint moves to
/// the open's segment N, whose predecessor record names a replayed segment
/// that is now deleted) while the replayed segments' background sync is
/// still held; unsynced writes follow; a power cut. Then the same with the
/// syncs released and a close racing them: everything is durable.
#[test]
fn flush_of_the_replayed_memtable_before_its_segments_were_synced() {
    for seed in 0..12u64 {
        let dir = unique_dir("revwal-flushfirst");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();
        let hook = Hook::new(&fs);
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
        for n in 0..20 {
            let (batch, commit) = put(n);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        fs.kill();
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let replayed = segment_numbers(&fs, &dir);

        let hook = Hook::new(&fs);
        hook.tables.release();
        *hook.hold_set.lock().unwrap() = replayed.clone();
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped)).unwrap();
        // The flush deletes the replayed segments once its edit is durable.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while segment_numbers(&fs, &dir)
            .iter()
            .any(|n| replayed.contains(n))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the flush did not finish"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The flushed writes are durable (a table file and a synced edit).
        model.all_durable();
        for n in 0..seed % 5 {
            let (batch, commit) = put(300 + n);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        if seed % 2 == 0 {
            fs.power_cut(PowerCut::random(seed, true));
            hook.syncs.release();
            let _ = db.close();
        } else {
            // A close racing the held sync: it waits for it, then marks.
            let releaser = {
                let gate = hook.syncs.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    gate.release();
                })
            };
            db.close().unwrap();
            releaser.join().unwrap();
            model.all_durable();
            fs.power_cut(PowerCut::random(seed, true));
        }
        drop(db);
        fs.restart();
        let db = Database::open_with(&dir, options(fs.shared()))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        model
            .settle_power_cut(&db)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        db.close().unwrap();
    }
}

/// Rewrites segment `name`'s header as version 3 (versions 3 and 4 differ
/// only in segment-synced records, which these segments do not hold),
/// keeping its durable state (the rewrite is synced).
fn make_v3(fs: &PowerLossFs, dir: &Path, name: &str) {
    let path = dir.join(name);
    let disk = fs.shared();
    let mut bytes = disk.read(&path).unwrap();
    assert_eq!(&bytes[8..12], &4u32.to_le_bytes());
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&bytes[..12]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    let mut file = disk.create(&path).unwrap();
    file.append(&bytes).unwrap();
    file.sync_data().unwrap();
}

/// An upgrade: segments written by the previous build (version 3, killed
/// with unsynced writes and sealed segments' syncs not run), opened by
/// this one (the replayed sync held), unsynced writes into the version-4
/// segment, killed, opened again, then a power cut: a prefix.
#[test]
fn version_3_segments_from_a_killed_process_then_version_4_then_a_power_cut() {
    let mut lost_any = 0;
    for seed in 0..24u64 {
        let dir = unique_dir("revwal-v3");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();
        let mut n = 0;
        // "Previous build": every background sync held, so no segment
        // holds a segment-synced record; fewer than four seals.
        let hook = Hook::new(&fs);
        *hook.hold_set.lock().unwrap() = (0..1000).collect();
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
        for _ in 0..6 + seed % 10 {
            let (batch, commit) = put(n);
            n += 1;
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        fs.kill();
        hook.syncs.release();
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let old = wal_segments(&fs, &dir);
        for name in &old {
            make_v3(&fs, &dir, name);
        }
        for round in 0..2 {
            let hook = Hook::new(&fs);
            *hook.hold_set.lock().unwrap() = segment_numbers(&fs, &dir);
            let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
            let db = Database::open_with(&dir, options(wrapped).memtable_size(1024))
                .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e}"));
            model.check_all(&db).unwrap();
            for _ in 0..1 + seed % 4 {
                let (batch, commit) = put(n);
                n += 1;
                db.write_with(batch, WriteOptions::sync(false)).unwrap();
                model.commit(commit, false);
            }
            if round == 0 {
                fs.kill();
            } else {
                fs.power_cut(if seed % 2 == 0 {
                    PowerCut::random(seed, seed % 4 == 0)
                } else {
                    PowerCut::pages(seed)
                });
            }
            hook.syncs.release();
            hook.tables.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        let db = Database::open_with(&dir, options(fs.shared()))
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        lost_any += u64::from(
            model
                .settle_power_cut(&db)
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"))
                > 0,
        );
        db.close().unwrap();
    }
    assert!(lost_any > 3, "only {lost_any} power cuts lost a write");
}

/// The background sync of the replayed segments fails, a durable write
/// reports it (and stops the engine), and the close that follows still
/// syncs the open's segment and appends its durable mark: a sync point
/// claiming the whole live segment while an older segment's sync failed,
/// which rule 1 forbids. A power cut then loses the replayed segments'
/// unsynced tail (their sync never succeeded), and replay finds a later
/// sync point proving the damaged segment "durable": Corruption, though
/// only writes never acknowledged as durable were lost.
#[test]
fn a_close_after_a_failed_replayed_sync_does_not_mark_the_live_segment() {
    let mut failures = Vec::new();
    for seed in 0..8u64 {
        let dir = unique_dir("revwal-syncfail-close");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();
        let hook = Hook::new(&fs);
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
        for n in 0..10 + seed {
            let (batch, commit) = put(n);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        fs.kill();
        hook.tables.release();
        let _ = db.close();
        drop(db);
        fs.restart();

        // Tables held: the flush must not make the replayed writes durable.
        let hook = Hook::new(&fs);
        *hook.fail_set.lock().unwrap() = segment_numbers(&fs, &dir);
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
        let db = Database::open_with(&dir, options(wrapped)).unwrap();
        for n in 0..3 {
            let (batch, commit) = put(100 + n);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        let (batch, commit) = put(200);
        assert!(db.write_with(batch, WriteOptions::sync(true)).is_err());
        model.commit_maybe(commit);
        hook.tables.release();
        assert!(db.close().is_err());
        drop(db);
        fs.power_cut(PowerCut::drop_unsynced());
        fs.restart();
        match Database::open_with(&dir, options(fs.shared())) {
            Ok(db) => {
                if let Err(e) = model.settle_power_cut(&db) {
                    failures.push(format!("seed {seed}: {e}"));
                }
                db.close().unwrap();
            }
            Err(e) => failures.push(format!("seed {seed}: open: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `Database::verify` while the replayed segments' sync is held (and the
/// flush that would delete them), and after it finished and recorded
/// them: no problem reported either way, every replayed record counted.
#[test]
fn verify_while_and_after_the_replayed_segments_are_synced() {
    let dir = unique_dir("revwal-verify");
    let fs = Arc::new(fresh_disk(&dir));
    let hook = Hook::new(&fs);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
    for n in 0..20 {
        db.write_with(put(n).0, WriteOptions::sync(false)).unwrap();
    }
    fs.kill();
    hook.tables.release();
    let _ = db.close();
    drop(db);
    fs.restart();

    let hook = Hook::new(&fs);
    *hook.hold_set.lock().unwrap() = segment_numbers(&fs, &dir);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped)).unwrap();
    db.write_with(put(100).0, WriteOptions::sync(false))
        .unwrap();
    let report = db.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.wal_records >= 21, "{report:?}");
    hook.syncs.release();
    db.write_with(put(101).0, WriteOptions::sync(true)).unwrap();
    let report = db.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert!(report.wal_records >= 22, "{report:?}");
    hook.tables.release();
    db.close().unwrap();
    let db = Database::open_with(&dir, options(fs.shared())).unwrap();
    let report = db.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    db.close().unwrap();
}

/// Bit rot in a replayed segment whose background sync finished and was
/// recorded (the flush is held so it is still there): verify reports it.
#[test]
fn verify_reports_rot_in_a_synced_replayed_segment() {
    let dir = unique_dir("revwal-verify-rot");
    let fs = Arc::new(fresh_disk(&dir));
    let hook = Hook::new(&fs);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
    for n in 0..20 {
        db.write_with(put(n).0, WriteOptions::sync(false)).unwrap();
    }
    fs.kill();
    hook.tables.release();
    let _ = db.close();
    drop(db);
    fs.restart();
    let replayed = segment_numbers(&fs, &dir);
    let hook = Hook::new(&fs);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped)).unwrap();
    db.write_with(put(102).0, WriteOptions::sync(true)).unwrap();
    let first = *replayed.iter().next().unwrap();
    let path = dir.join(format!("{first:06}.wal"));
    let disk = fs.shared();
    let mut bytes = disk.read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 1] ^= 0x10;
    let mut file = disk.create(&path).unwrap();
    file.append(&bytes).unwrap();
    file.sync_data().unwrap();
    drop(file);
    let report = db.verify().unwrap();
    assert!(!report.problems.is_empty(), "{report:?}");
    hook.tables.release();
    let _ = db.close();
}

/// A backup taken while the replayed segments' sync (and the flush of the
/// replayed memtable) is held, then a power cut: the backup (complete,
/// hence durable) opens with every write it was taken after; the source
/// opens to a prefix.
#[test]
fn backup_while_the_replayed_segments_are_unsynced_then_a_power_cut() {
    let dir = unique_dir("revwal-backup");
    let dest = dir.parent().unwrap().join("backup");
    let fs = Arc::new(fresh_disk(&dir));
    let mut model = Model::default();
    let hook = Hook::new(&fs);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
    for n in 0..20 {
        let (batch, commit) = put(n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    fs.kill();
    hook.tables.release();
    let _ = db.close();
    drop(db);
    fs.restart();

    let hook = Hook::new(&fs);
    *hook.hold_set.lock().unwrap() = segment_numbers(&fs, &dir);
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
    let db = Database::open_with(&dir, options(wrapped)).unwrap();
    for n in 0..3 {
        let (batch, commit) = put(100 + n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    db.backup(&dest).unwrap();
    let mut backup_model = model.clone();
    backup_model.all_durable();
    fs.power_cut(PowerCut::drop_unsynced());
    hook.syncs.release();
    hook.tables.release();
    let _ = db.close();
    drop(db);
    fs.restart();
    let b = Database::open_with(&dest, options(fs.shared())).unwrap();
    backup_model.check_all(&b).unwrap();
    b.close().unwrap();
    let db = Database::open_with(&dir, options(fs.shared())).unwrap();
    model.settle_power_cut(&db).unwrap();
    db.close().unwrap();
}

/// The same hole by a more common path: an open after a kill (its
/// replayed segments' sync not run yet) is killed again before any write
/// reaches its segment N, so N holds only a header and the next open
/// replays `[.., L, N]` with nothing recording where L ended. That open's
/// writes, then a power cut before its background sync: a prefix.
#[test]
fn an_idle_open_killed_then_reopened_then_a_power_cut() {
    let mut failures = Vec::new();
    for seed in 0..24u64 {
        let dir = unique_dir("revwal-idle-open");
        let fs = Arc::new(fresh_disk(&dir));
        let mut model = Model::default();
        let mut n = 0;
        for round in 0..3 {
            let hook = Hook::new(&fs);
            *hook.hold_set.lock().unwrap() = segment_numbers(&fs, &dir);
            let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
            let db = Database::open_with(&dir, options(wrapped).memtable_size(1024)).unwrap();
            model.check_all(&db).unwrap();
            // Round 1 is the idle open.
            let puts = if round == 1 { 0 } else { 4 + seed % 5 };
            for _ in 0..puts {
                let (batch, commit) = put(n);
                n += 1;
                db.write_with(batch, WriteOptions::sync(false)).unwrap();
                model.commit(commit, false);
            }
            if round < 2 {
                fs.kill();
            } else {
                fs.power_cut(PowerCut::random(seed, false));
            }
            hook.syncs.release();
            hook.tables.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        match Database::open_with(&dir, options(fs.shared())) {
            Ok(db) => {
                if let Err(e) = model.settle_power_cut(&db) {
                    failures.push(format!("seed {seed}: {e}"));
                }
                db.close().unwrap();
            }
            Err(e) => failures.push(format!("seed {seed}: open: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
