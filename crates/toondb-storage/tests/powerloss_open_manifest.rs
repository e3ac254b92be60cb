//! The manifest an open read may end in an edit that is only in the page
//! cache: a process killed after a flush appended its edit and before the
//! edit's fdatasync, with the WAL segment the flush made redundant never
//! synced. The open serves the flushed writes from the table the edit
//! lists and replays only the WAL after the edit's checkpoint, so its new
//! segment names no link to the skipped segment. Any WAL sync after that
//! open must therefore come after the edit is durable: otherwise a power
//! cut keeps the later (synced) writes and loses the skipped segment's
//! earlier ones, a hole in commit order.
//!
//! Warmopen (the manifest switch on the maintenance thread) made the
//! durable commit and the close sync that manifest first, but let the
//! engine append unsynced records before it: a seal's background sync (or
//! page writeback, `PowerCut::pages`) then made them durable while the
//! edit was not, and a power cut lost the writes before them
//! (review_revwo.rs,
//! `unsynced_writes_and_seals_before_the_switch_then_a_power_cut_reopen`).
//! These tests make that order deterministic: the flush that kills the
//! first session is held until the test decides what its live segment
//! holds, and the second session's seal sync is awaited before the cut.

mod powerloss_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use toondb_storage::io::{
    Crash, FileSystem, PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook,
};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, unique_dir, Commit, Model};

/// A gate that blocks until released.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

/// Session A's hook: WAL syncs past a segment's header wait for `wal`
/// (released only once the process is dead, so the sealed segment is
/// never synced), table creation waits for `flush` (so the test decides
/// what the new live segment holds before the flush runs), and the
/// process is killed right after the first manifest edit is appended.
#[derive(Clone)]
struct KillAfterEdit {
    fs: PowerLossFs,
    wal: Gate,
    flush: Gate,
}

struct KillFile {
    inner: Box<dyn WritableFile>,
    hook: KillAfterEdit,
    manifest: bool,
}

impl WritableFile for KillFile {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        let edit = self.manifest && !self.inner.is_empty();
        self.inner.append(data)?;
        if edit {
            self.hook.fs.kill();
        }
        Ok(())
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        if !self.manifest && self.inner.len() > 16 {
            self.hook.wal.wait();
        }
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

impl WriteHook for KillAfterEdit {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            self.flush.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let manifest = name.starts_with("MANIFEST-");
        if !manifest && !name.ends_with(".wal") {
            return file;
        }
        Box::new(KillFile {
            inner: file,
            hook: self.clone(),
            manifest,
        })
    }
}

/// Holds the open's manifest switch (warmopen: the maintenance thread
/// creates the fresh manifest) until released.
#[derive(Clone, Default)]
struct HoldSwitch(Gate);

impl WriteHook for HoldSwitch {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("MANIFEST-") {
            self.0.wait();
        }
        Ok(())
    }

    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

fn put(n: u64) -> (WriteBatch, Commit) {
    let key = format!("key{:03}", n % 97).into_bytes();
    let value = format!("v{n}-{}", "x".repeat((n * 13 % 150) as usize)).into_bytes();
    let mut batch = WriteBatch::new();
    batch.put(&key, &value).unwrap();
    (batch, vec![(key, Some(value))])
}

fn opts(fs: Arc<dyn FileSystem>) -> Options {
    Options::default()
        .memtable_size(2048)
        .wal_size_limit(u64::MAX)
        .max_immutable_memtables(64)
        .block_size(128)
        .fs(fs)
}

/// WAL segments in `dir`, ascending (none once the file system is down).
fn segments(fs: &PowerLossFs, dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = fs
        .shared()
        .list(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// Whether sealed segment `live` is durable past its header, or gone (a
/// flush, once the switch ran, made it redundant and deleted it).
fn sealed_synced(fs: &PowerLossFs, live: &Path) -> bool {
    fs.durable_contents(live).is_none_or(|d| d.len() > 16)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Session A: a few unsynced writes and a seal, then, if `after_seal`,
/// more writes (in the new live segment), then the seal's flush, killed
/// right after its manifest edit was appended. Nothing of it was synced
/// but the segments' headers, the table and the directory.
fn session_a(fs: &PowerLossFs, dir: &Path, model: &mut Model, after_seal: bool) {
    let hook = KillAfterEdit {
        fs: fs.clone(),
        wal: Gate::default(),
        flush: Gate::default(),
    };
    let db = Database::open_with(
        dir,
        opts(Arc::new(WrappedFs::new(fs.shared(), hook.clone()))),
    )
    .unwrap();
    let start = segments(fs, dir).len();
    let mut n = 0;
    let mut write = |model: &mut Model| {
        let (batch, commit) = put(n);
        n += 1;
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    };
    if after_seal {
        // A write that finds the memtable full seals it first and goes to
        // the new segment.
        while segments(fs, dir).len() == start {
            write(model);
        }
        write(model);
        hook.flush.release();
        wait_until("the flush's manifest edit", || fs.is_down());
        hook.wal.release();
    } else {
        for _ in 0..5 {
            write(model);
        }
        // A flush seals without a write: the new segment holds no record.
        // It waits for the old segment's sync, released once the process
        // is dead (so that sync fails).
        std::thread::scope(|s| {
            let flushing = s.spawn(|| db.flush());
            hook.flush.release();
            wait_until("the flush's manifest edit", || fs.is_down());
            hook.wal.release();
            assert!(flushing.join().unwrap().is_err());
        });
    }
    let _ = db.close();
    drop(db);
    fs.restart();
    let live = segments(fs, dir).pop().unwrap();
    let len = fs.shared().read(&live).unwrap().len();
    assert_eq!(
        len > 16,
        after_seal,
        "{}: {len} bytes (after_seal {after_seal})",
        live.display()
    );
}

/// Session B, with the manifest switch held if `held` (else it runs when
/// the maintenance thread gets to it, or, before warmopen, inside the
/// open): unsynced writes until a seal, then waits for the sealed
/// segment's background sync, and cuts the power (`cut`). The reopen must
/// hold a prefix of every commit.
fn session_b_then_power_cut(
    fs: &PowerLossFs,
    dir: &Path,
    model: &mut Model,
    cut: PowerCut,
    held: bool,
) {
    let hold = HoldSwitch::default();
    if !held {
        hold.0.release();
    }
    let db = Database::open_with(
        dir,
        opts(Arc::new(WrappedFs::new(fs.shared(), hold.clone()))),
    )
    .unwrap();
    model.check_all(&db).unwrap();
    // The open's segment (the newest); a seal creates a newer one. (The
    // count of segments is no sign: the switch deletes replayed ones.)
    let live = segments(fs, dir).pop().unwrap();
    let mut n = 5000;
    while segments(fs, dir).last() == Some(&live) {
        assert!(n < 15_000, "no seal");
        let (batch, commit) = put(n);
        n += 1;
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    // The open's segment was sealed; its sync runs in the background.
    wait_until("the sealed segment's background sync", || {
        sealed_synced(fs, &live)
    });
    let trace = fs.trace().join("\n");
    fs.power_cut(cut);
    hold.0.release();
    let _ = db.close();
    drop(db);
    fs.restart();
    let db = Database::open_with(dir, opts(fs.shared()))
        .unwrap_or_else(|e| panic!("{cut:?}: reopen failed: {e}\n{trace}"));
    model
        .settle_power_cut(&db)
        .unwrap_or_else(|e| panic!("{cut:?}: {e}\nbefore the cut:\n{trace}"));
    db.close().unwrap();
}

/// The failure review_revwo.rs saw: session A's new live segment holds no
/// record (nothing links the skipped segment to what follows), session B
/// seals its segment and that segment is synced in the background while
/// the manifest edit is still only in the page cache.
#[test]
fn a_seal_sync_after_an_open_that_trusted_an_unsynced_edit() {
    for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
        let dir = unique_dir("open-manifest-empty");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, false);
        session_b_then_power_cut(&fs, &dir, &mut model, cut, true);
    }
}

/// The same with writes in session A's new live segment: session B
/// replays them and syncs that segment in the background too. (This one
/// passed before the fix as well: the segment's first record names where
/// the skipped segment ended, so replay sees that segment's lost tail and
/// drops everything after it, a prefix.)
#[test]
fn a_replayed_segment_sync_after_an_open_that_trusted_an_unsynced_edit() {
    for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
        let dir = unique_dir("open-manifest-replayed");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, true);
        session_b_then_power_cut(&fs, &dir, &mut model, cut, true);
    }
}

/// Session B without holding the switch (it races with the writes on
/// warmopen; it is inside the open before warmopen): the same outcome.
#[test]
fn a_seal_sync_after_an_open_whose_switch_is_not_held() {
    for after_seal in [false, true] {
        for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
            let dir = unique_dir("open-manifest-free");
            let fs = fresh_disk(&dir);
            let mut model = Model::default();
            session_a(&fs, &dir, &mut model, after_seal);
            session_b_then_power_cut(&fs, &dir, &mut model, cut, false);
        }
    }
}

/// A power cut at every step of the open after session A and of its
/// first writes and seal (the switch not held): every reopen holds a
/// prefix of the commits.
#[test]
fn power_cuts_at_every_step_of_an_open_after_an_unsynced_edit() {
    for after_seal in [false, true] {
        for at in 1..=50u64 {
            for cut in [PowerCut::drop_unsynced(), PowerCut::pages(at)] {
                let what = format!("after_seal {after_seal}, cut {cut:?} after {at} ops");
                let dir = unique_dir("open-manifest-steps");
                let fs = fresh_disk(&dir);
                let mut model = Model::default();
                session_a(&fs, &dir, &mut model, after_seal);
                fs.crash_after(at, Crash::PowerCut(cut));
                if let Ok(db) = Database::open_with(&dir, opts(fs.shared())) {
                    let live = segments(&fs, &dir).pop().unwrap_or_default();
                    let mut n = 5000;
                    while !fs.is_down() && segments(&fs, &dir).last() == Some(&live) && n < 5300 {
                        let (batch, commit) = put(n);
                        n += 1;
                        match db.write_with(batch, WriteOptions::sync(false)) {
                            Ok(_) => model.commit(commit, false),
                            Err(_) => model.commit_maybe(commit),
                        }
                    }
                    wait_until("the seal's sync or the cut", || {
                        fs.is_down() || sealed_synced(&fs, &live)
                    });
                    if !fs.is_down() {
                        fs.power_cut(cut);
                    }
                    let _ = db.close();
                } else {
                    assert!(fs.is_down(), "{what}: the open failed without a crash");
                }
                let trace = fs.trace().join("\n");
                fs.disarm();
                fs.restart();
                let db = Database::open_with(&dir, opts(fs.shared()))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}\n{trace}"));
                model
                    .settle_power_cut(&db)
                    .unwrap_or_else(|e| panic!("{what}: {e}\n{trace}"));
                db.close().unwrap();
            }
        }
    }
}

/// Holds the manifest switch and every sync of a WAL segment past its
/// header until released: the open's background syncs cannot run before
/// the test kills the process.
#[derive(Clone, Default)]
struct HoldSyncs(Gate);

struct HeldFile {
    inner: Box<dyn WritableFile>,
    gate: Gate,
}

impl WritableFile for HeldFile {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        if self.inner.len() > 16 {
            self.gate.wait();
        }
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

impl WriteHook for HoldSyncs {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        HoldSwitch(self.0.clone()).before_create(path)
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_none_or(|e| e != "wal") {
            return file;
        }
        Box::new(HeldFile {
            inner: file,
            gate: self.0.clone(),
        })
    }
}

/// The syncs replay runs inside the open: after session A, an open (B)
/// writes to its new segment and an open (C) creates one and writes
/// nothing, both killed before their switch and before any WAL sync of
/// theirs ran. The next open (D) replays B's segment followed by C's empty
/// one, which makes replay sync them during the open; a power cut right
/// after must not keep B's writes without session A's. (B's first write
/// made the manifest it read durable.)
#[test]
fn a_replay_sync_in_the_open_after_opens_that_trusted_an_unsynced_edit() {
    for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
        let dir = unique_dir("open-manifest-replay-sync");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, false);
        let mut n = 5000;
        for writes in [5, 0] {
            let hold = HoldSyncs::default();
            let db = Database::open_with(
                &dir,
                opts(Arc::new(WrappedFs::new(fs.shared(), hold.clone()))),
            )
            .unwrap();
            model.check_all(&db).unwrap();
            for _ in 0..writes {
                let (batch, commit) = put(n);
                n += 1;
                db.write_with(batch, WriteOptions::sync(false)).unwrap();
                model.commit(commit, false);
            }
            fs.kill();
            hold.0.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        let hold = HoldSwitch::default();
        let db = Database::open_with(
            &dir,
            opts(Arc::new(WrappedFs::new(fs.shared(), hold.clone()))),
        )
        .unwrap();
        model.check_all(&db).unwrap();
        let trace = fs.trace().join("\n");
        fs.power_cut(cut);
        hold.0.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let db = Database::open_with(&dir, opts(fs.shared()))
            .unwrap_or_else(|e| panic!("{cut:?}: reopen failed: {e}\n{trace}"));
        model
            .settle_power_cut(&db)
            .unwrap_or_else(|e| panic!("{cut:?}: {e}\nbefore the cut:\n{trace}"));
        db.close().unwrap();
    }
}
