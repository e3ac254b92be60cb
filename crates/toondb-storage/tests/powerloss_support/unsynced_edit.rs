//! Sessions around a manifest edit that is only in the page cache: a
//! flush appends its edit and the process is killed before the edit's
//! fdatasync, with the WAL segment the flush made redundant never synced
//! (session A); the next open trusts that edit (session B). Shared by
//! powerloss_open_manifest.rs, review_s31_warmopen.rs and review_revwo.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toondb_storage::io::{FileSystem, PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use super::gates::{wait_until, Gate, HoldSwitch};
use super::{fresh_disk, unique_dir, Commit, Model};

/// Session A's hook: WAL syncs past a segment's header wait for `wal`
/// (released only once the process is dead, so the sealed segment is
/// never synced), table creation waits for `flush` (so the test decides
/// what the new live segment holds before the flush runs), and the
/// process is killed right after the first manifest edit is appended.
#[derive(Clone)]
pub struct KillAfterEdit {
    pub fs: PowerLossFs,
    pub wal: Gate,
    pub flush: Gate,
}

impl KillAfterEdit {
    /// Both gates closed.
    pub fn new(fs: &PowerLossFs) -> KillAfterEdit {
        KillAfterEdit {
            fs: fs.clone(),
            wal: Gate::default(),
            flush: Gate::default(),
        }
    }
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

/// One put of 1..=150 bytes over 97 keys; `n` keeps values distinct.
pub fn put(n: u64) -> (WriteBatch, Commit) {
    let key = format!("key{:03}", n % 97).into_bytes();
    let value = format!("v{n}-{}", "x".repeat((n * 13 % 150) as usize)).into_bytes();
    let mut batch = WriteBatch::new();
    batch.put(&key, &value).unwrap();
    (batch, vec![(key, Some(value))])
}

/// A small memtable, so a few puts seal it, and no checkpoints (only
/// seals create segments); flushes may queue behind a held switch.
pub fn opts(fs: Arc<dyn FileSystem>) -> Options {
    Options::default()
        .memtable_size(2048)
        .wal_size_limit(u64::MAX)
        .max_immutable_memtables(64)
        .block_size(128)
        .fs(fs)
}

/// `opts` on `fs` with `hook` wrapped around it.
pub fn hooked_opts(fs: &PowerLossFs, hook: impl WriteHook + 'static) -> Options {
    opts(Arc::new(WrappedFs::new(fs.shared(), hook)))
}

/// WAL segments in `dir`, ascending (none once the file system is down).
pub fn segments(fs: &PowerLossFs, dir: &Path) -> Vec<PathBuf> {
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
pub fn sealed_synced(fs: &PowerLossFs, live: &Path) -> bool {
    fs.durable_contents(live).is_none_or(|d| d.len() > 16)
}

/// Session A: a few unsynced writes and a seal, then, if `after_seal`,
/// more writes (in the new live segment), then the seal's flush, killed
/// right after its manifest edit was appended. Nothing of it was synced
/// but the segments' headers, the table and the directory.
pub fn session_a(fs: &PowerLossFs, dir: &Path, model: &mut Model, after_seal: bool) {
    let hook = KillAfterEdit::new(fs);
    let db = Database::open_with(dir, hooked_opts(fs, hook.clone())).unwrap();
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

/// A fresh disk (the directory `unique_dir(name)`) after session A, and
/// the model of what session A committed.
pub fn after_session_a(name: &str, after_seal: bool) -> (PathBuf, PowerLossFs, Model) {
    let dir = unique_dir(name);
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    session_a(&fs, &dir, &mut model, after_seal);
    (dir, fs, model)
}

/// Session B, with the manifest switch held if `held` (else it runs when
/// the maintenance thread gets to it, or, before warmopen, inside the
/// open): unsynced writes until a seal, then waits for the sealed
/// segment's background sync, and cuts the power (`cut`). The reopen must
/// hold a prefix of every commit.
pub fn session_b_then_power_cut(
    fs: &PowerLossFs,
    dir: &Path,
    model: &mut Model,
    cut: PowerCut,
    held: bool,
) {
    let hold = HoldSwitch::default();
    if !held {
        hold.release();
    }
    let db = Database::open_with(dir, hooked_opts(fs, hold.clone())).unwrap();
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
    power_cut_and_settle(fs, dir, db, model, cut, || hold.release());
}

/// Cuts the power under `db` (then `release` lets what the test held run
/// into the dead disk), reopens, and checks that the reopen holds a
/// prefix of every commit. A failure shows the file-system operations
/// before the cut.
pub fn power_cut_and_settle(
    fs: &PowerLossFs,
    dir: &Path,
    db: Database,
    model: &mut Model,
    cut: PowerCut,
    release: impl FnOnce(),
) {
    let trace = fs.trace().join("\n");
    fs.power_cut(cut);
    release();
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
