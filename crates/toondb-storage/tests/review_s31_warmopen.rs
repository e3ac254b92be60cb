//! Session 31 review of warmopen (d63e595 + b31d7db): paths around the
//! rule that no WAL record is appended before the manifest the open read
//! is durable. Helpers are copied from powerloss_open_manifest.rs (test
//! crates cannot share them without a support module, and that file's
//! session helpers are private to it).
#![allow(dead_code)]

mod powerloss_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use toondb_storage::io::{FileSystem, PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook};
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

/// The cuts each scenario is run with: the fixed ones and a few seeds of
/// out-of-order page writeback and random survival (bounded: 2 cores).
fn cuts() -> Vec<PowerCut> {
    let mut cuts = vec![PowerCut::drop_unsynced(), PowerCut::keep_unsynced()];
    for seed in 1..=6 {
        cuts.push(PowerCut::pages(seed));
        cuts.push(PowerCut::random(seed, seed % 2 == 0));
    }
    cuts
}

/// The manifest CURRENT names (the one the next open reads).
fn current_manifest(fs: &PowerLossFs, dir: &Path) -> PathBuf {
    let current = fs.shared().read(&dir.join("CURRENT")).unwrap();
    let name = String::from_utf8(current).unwrap();
    dir.join(name.trim())
}

/// Session B's hook: holds the switch like `HoldSwitch`, and fails every
/// fdatasync of `manifest` (the one the open read), counting them.
#[derive(Clone)]
struct FailReadManifestSync {
    hold: Gate,
    manifest: PathBuf,
    attempts: Arc<Mutex<u32>>,
}

struct FailSyncFile {
    inner: Box<dyn WritableFile>,
    attempts: Arc<Mutex<u32>>,
}

impl WritableFile for FailSyncFile {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        *self.attempts.lock().unwrap() += 1;
        Err(toondb_storage::Error::new(
            toondb_storage::ErrorKind::Io,
            "injected: manifest fdatasync failed",
        ))
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

impl WriteHook for FailReadManifestSync {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("MANIFEST-") {
            self.hold.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path != self.manifest {
            return file;
        }
        Box::new(FailSyncFile {
            inner: file,
            attempts: self.attempts.clone(),
        })
    }
}

/// The error path of the fix: the read manifest's fdatasync fails before
/// the first WAL group. The write must fail (not be acknowledged), writes
/// after it must be refused (not retried into a sync that may now
/// "succeed" on pages the kernel dropped), no record of them may reach
/// the WAL, and the directory must reopen with a prefix of session A
/// after a power cut (and with all of it after a plain kill).
#[test]
fn a_failed_read_manifest_sync_fails_the_first_write_and_stops_writes() {
    for cut in std::iter::once(None).chain(cuts().into_iter().map(Some)) {
        let dir = unique_dir("s31-failed-manifest-sync");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, false);
        let hook = FailReadManifestSync {
            hold: Gate::default(),
            manifest: current_manifest(&fs, &dir),
            attempts: Arc::default(),
        };
        let db = Database::open_with(
            &dir,
            opts(Arc::new(WrappedFs::new(fs.shared(), hook.clone()))),
        )
        .unwrap();
        model.check_all(&db).unwrap();
        let live = segments(&fs, &dir).pop().unwrap();
        let header = fs.shared().read(&live).unwrap().len();
        for (i, sync) in [false, false, true, false].into_iter().enumerate() {
            let (batch, commit) = put(9000 + i as u64);
            let got = db.write_with(batch, WriteOptions::sync(sync));
            assert!(
                got.is_err(),
                "{cut:?}: write {i} (sync {sync}) acknowledged"
            );
            // Failed: may or may not be there after a crash (it is not, as
            // checked below, but the model only forbids a hole).
            model.commit_maybe(commit);
        }
        assert_eq!(
            fs.shared().read(&live).unwrap().len(),
            header,
            "{cut:?}: a record reached the WAL without the read manifest being synced"
        );
        assert!(
            *hook.attempts.lock().unwrap() >= 1,
            "{cut:?}: no sync tried"
        );
        assert!(db.flush().is_err(), "{cut:?}: flush after the failure");
        match cut {
            Some(cut) => fs.power_cut(cut),
            None => fs.kill(),
        }
        hook.hold.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let db = Database::open_with(&dir, opts(fs.shared()))
            .unwrap_or_else(|e| panic!("{cut:?}: reopen failed: {e}"));
        match cut {
            Some(_) => {
                model
                    .settle_power_cut(&db)
                    .unwrap_or_else(|e| panic!("{cut:?}: {e}"));
            }
            None => model.check_all(&db).unwrap_or_else(|e| panic!("kill: {e}")),
        }
        db.close().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The same failure, but the switch is let run after it (no kill): the
/// engine stays stopped, close reports the error, and a plain reopen in
/// the same process finds every write of session A (its unsynced ones are
/// still in the page cache) and accepts writes.
#[test]
fn a_failed_read_manifest_sync_then_the_switch_then_close_and_reopen() {
    let dir = unique_dir("s31-failed-manifest-sync-switch");
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    session_a(&fs, &dir, &mut model, false);
    let hook = FailReadManifestSync {
        hold: Gate::default(),
        manifest: current_manifest(&fs, &dir),
        attempts: Arc::default(),
    };
    let db = Database::open_with(
        &dir,
        opts(Arc::new(WrappedFs::new(fs.shared(), hook.clone()))),
    )
    .unwrap();
    let (batch, commit) = put(9000);
    assert!(db.write_with(batch, WriteOptions::sync(false)).is_err());
    model.commit_maybe(commit);
    hook.hold.release();
    assert!(
        db.close().is_err(),
        "close after a failed write reported success"
    );
    drop(db);
    let db = Database::open_with(&dir, opts(fs.shared())).unwrap();
    model.check_all(&db).unwrap();
    let (batch, commit) = put(9001);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    db.close().unwrap();
    fs.power_cut(PowerCut::drop_unsynced());
    fs.restart();
    let db = Database::open_with(&dir, opts(fs.shared())).unwrap();
    model.settle_power_cut(&db).unwrap();
    db.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two opens in a row trust session A's unsynced edit: the first (B0) is
/// killed with its switch still held and nothing appended, so it synced
/// nothing of the read manifest; the second (C) then writes unsynced
/// records until a seal, its sealed segment is synced in the background,
/// and the power is cut. (B0's own new segment is replayed by C.)
#[test]
fn a_second_open_after_an_open_killed_before_its_switch() {
    for (cut, b0_writes) in cuts().into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let dir = unique_dir("s31-two-opens");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, false);
        let hold = HoldSwitch::default();
        let db = Database::open_with(
            &dir,
            opts(Arc::new(WrappedFs::new(fs.shared(), hold.clone()))),
        )
        .unwrap();
        if b0_writes {
            for n in 7000..7003 {
                let (batch, commit) = put(n);
                db.write_with(batch, WriteOptions::sync(false)).unwrap();
                model.commit(commit, false);
            }
        }
        fs.kill();
        hold.0.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        session_b_then_power_cut(&fs, &dir, &mut model, cut, true);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Session B0 is killed inside its switch, after CURRENT was renamed to
/// the fresh manifest and before the directory sync that makes the
/// rename (and the fresh manifest's name) durable. The next open (C)
/// reads the fresh manifest through CURRENT from the page cache; its
/// "read manifest" sync covers only that file's data, not the rename.
#[test]
fn an_open_after_an_open_killed_between_its_current_rename_and_dir_sync() {
    for (cut, held) in cuts().into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let dir = unique_dir("s31-rename-unsynced");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        session_a(&fs, &dir, &mut model, false);
        let before = current_manifest(&fs, &dir);
        let hook = KillOnDirSyncAfterSwitch {
            fs: fs.clone(),
            dir: dir.clone(),
            before: before.clone(),
        };
        let db =
            Database::open_with(&dir, opts(Arc::new(WrappedFs::new(fs.shared(), hook)))).unwrap();
        wait_until("the kill in the switch", || fs.is_down());
        let _ = db.close();
        drop(db);
        fs.restart();
        assert_ne!(
            current_manifest(&fs, &dir),
            before,
            "CURRENT was not renamed before the kill"
        );
        session_b_then_power_cut(&fs, &dir, &mut model, cut, held);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Kills the process at the first directory sync after CURRENT (in the
/// page cache) names a manifest other than `before`.
#[derive(Clone)]
struct KillOnDirSyncAfterSwitch {
    fs: PowerLossFs,
    dir: PathBuf,
    before: PathBuf,
}

impl WriteHook for KillOnDirSyncAfterSwitch {
    fn before_sync_dir(&self, _dir: &Path) -> toondb_storage::Result<()> {
        if !self.fs.is_down() && current_manifest(&self.fs, &self.dir) != self.before {
            self.fs.kill();
        }
        Ok(())
    }

    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

/// Cuts the power at the first fdatasync of `manifest` (the one the open
/// read), instead of doing it. Holds the switch like `HoldSwitch`.
#[derive(Clone)]
struct CutAtReadManifestSync {
    fs: PowerLossFs,
    hold: Gate,
    manifest: PathBuf,
    cut: PowerCut,
}

struct CutAtSyncFile {
    inner: Box<dyn WritableFile>,
    hook: CutAtReadManifestSync,
}

impl WritableFile for CutAtSyncFile {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        if !self.hook.fs.is_down() {
            self.hook.fs.power_cut(self.hook.cut);
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

impl WriteHook for CutAtReadManifestSync {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("MANIFEST-") {
            self.hold.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path != self.manifest {
            return file;
        }
        Box::new(CutAtSyncFile {
            inner: file,
            hook: self.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum FirstAct {
    UnsyncedWrite,
    SyncedWrite,
    Close,
}

/// A power cut at the moment the open's first act (a write, or a close)
/// syncs the read manifest, after the replayed segments' background syncs
/// finished (their "synced" record is then appended by that act first:
/// `Committer::sync_and_mark` appends it before `ensure_names_durable`).
/// The directory must reopen with a prefix.
#[test]
fn a_power_cut_at_the_read_manifest_sync_of_the_first_act() {
    for act in [
        FirstAct::UnsyncedWrite,
        FirstAct::SyncedWrite,
        FirstAct::Close,
    ] {
        for after_seal in [false, true] {
            for cut in cuts() {
                let dir = unique_dir("s31-cut-at-manifest-sync");
                let fs = fresh_disk(&dir);
                let mut model = Model::default();
                session_a(&fs, &dir, &mut model, after_seal);
                // A's live segment, which the open replays (its older one
                // is before the edit's checkpoint and never synced).
                let replayed: Vec<PathBuf> = segments(&fs, &dir).pop().into_iter().collect();
                let hook = CutAtReadManifestSync {
                    fs: fs.clone(),
                    hold: Gate::default(),
                    manifest: current_manifest(&fs, &dir),
                    cut,
                };
                let db = Database::open_with(
                    &dir,
                    opts(Arc::new(WrappedFs::new(fs.shared(), hook.clone()))),
                )
                .unwrap();
                model.check_all(&db).unwrap();
                // The replayed segments' background syncs.
                wait_until("the replayed segments' syncs", || {
                    replayed.iter().all(|p| {
                        let now = fs.shared().read(p).map(|b| b.len()).unwrap_or(0);
                        fs.durable_contents(p).is_none_or(|d| d.len() >= now)
                    })
                });
                let what = format!("{act:?} after_seal {after_seal} {cut:?}");
                match act {
                    // The close joins the maintenance thread, held at the
                    // switch until the cut.
                    FirstAct::Close => std::thread::scope(|s| {
                        let closing = s.spawn(|| db.close());
                        wait_until("the cut in the close", || fs.is_down());
                        hook.hold.release();
                        let _ = closing.join().unwrap();
                    }),
                    FirstAct::UnsyncedWrite | FirstAct::SyncedWrite => {
                        let sync = matches!(act, FirstAct::SyncedWrite);
                        let (batch, commit) = put(8000);
                        match db.write_with(batch, WriteOptions::sync(sync)) {
                            Ok(_) => model.commit(commit, sync),
                            Err(_) => model.commit_maybe(commit),
                        }
                    }
                }
                assert!(fs.is_down(), "{what}: the read manifest was not synced");
                hook.hold.release();
                let _ = db.close();
                drop(db);
                fs.restart();
                let db = Database::open_with(&dir, opts(fs.shared()))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
                model
                    .settle_power_cut(&db)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                db.close().unwrap();
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
}
