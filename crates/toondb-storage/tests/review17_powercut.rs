//! Review 17: a power cut at any file-system step: every mutation after
//! step N fails, then everything not made durable is dropped (unsynced
//! file tails, directory entries created or renamed since the last
//! directory sync). Writes are durable (`sync: true`), so every
//! acknowledged write must survive the reopen, and no deleted key may come
//! back.
#![allow(clippy::type_complexity)] // test-local tuples

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use toondb_storage::io::{FileBytes, FileLock, FileSystem, OsFileSystem, WritableFile};
use toondb_storage::{Database, Error, ErrorKind, Options, Result, ScanOptions};

struct Kill {
    inner: Arc<dyn FileSystem>,
    steps: AtomicU64,
    at: u64,
    dead: AtomicBool,
    /// path -> (synced length, directory entry durable)
    files: Mutex<HashMap<PathBuf, (u64, bool)>>,
    /// Renamed-over targets and their previous contents, until a dir sync.
    renames: Mutex<Vec<(PathBuf, PathBuf, Option<Vec<u8>>)>>,
}

impl Kill {
    fn new(at: u64) -> Kill {
        Kill {
            inner: OsFileSystem::shared(),
            steps: AtomicU64::new(0),
            at,
            dead: AtomicBool::new(false),
            files: Mutex::new(HashMap::new()),
            renames: Mutex::new(Vec::new()),
        }
    }
    fn synced(&self, path: &Path, len: u64) {
        if let Some(e) = self.files.lock().unwrap().get_mut(path) {
            e.0 = len;
        }
    }
    /// What survives the power cut.
    fn power_cut(&self) {
        for (from, to, old) in self.renames.lock().unwrap().drain(..).rev() {
            match old {
                Some(bytes) => std::fs::write(&to, bytes).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&to);
                }
            }
            let _ = from;
        }
        for (path, (synced, durable)) in self.files.lock().unwrap().iter() {
            if !path.exists() {
                continue;
            }
            if !*durable {
                std::fs::remove_file(path).unwrap();
            } else {
                let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                if f.metadata().unwrap().len() > *synced {
                    f.set_len(*synced).unwrap();
                }
            }
        }
    }
}

impl Kill {
    fn step(&self) -> Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Io, "killed"));
        }
        let n = self.steps.fetch_add(1, Ordering::SeqCst);
        if n >= self.at {
            self.dead.store(true, Ordering::SeqCst);
            return Err(Error::new(ErrorKind::Io, "killed"));
        }
        Ok(())
    }
}

struct KillFile {
    inner: Box<dyn WritableFile>,
    fs: Arc<Kill>,
    path: PathBuf,
}

impl WritableFile for KillFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.fs.step()?;
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.fs.step()?;
        self.inner.sync_data()?;
        self.fs.synced(&self.path, self.inner.len());
        Ok(())
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.fs.step()?;
        self.inner.append_durable(data)?;
        self.fs.synced(&self.path, self.inner.len());
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> Result<()> {
        self.fs.step()?;
        self.inner.preallocate(len)
    }
}

struct KillFs(Arc<Kill>);

impl FileSystem for KillFs {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.0.step()?;
        self.0.inner.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.0.step()?;
        let f = self.0.inner.create(path)?;
        self.0
            .files
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (0, false));
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.0.step()?;
        let f = self.0.inner.create_log(path)?;
        self.0
            .files
            .lock()
            .unwrap()
            .insert(path.to_path_buf(), (0, false));
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.0.step()?;
        let f = self.0.inner.open_append(path)?;
        let len = f.len();
        self.0
            .files
            .lock()
            .unwrap()
            .entry(path.to_path_buf())
            .or_insert((len, true));
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
            path: path.to_path_buf(),
        }))
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.0.inner.read(path)
    }
    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        self.0.inner.map(path)
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.inner.exists(path)
    }
    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.0.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.0.step()?;
        let old = std::fs::read(to).ok();
        self.0.inner.rename(from, to)?;
        self.0
            .renames
            .lock()
            .unwrap()
            .push((from.to_path_buf(), to.to_path_buf(), old));
        let mut files = self.0.files.lock().unwrap();
        let moved = files.remove(from).unwrap_or((0, true));
        files.insert(to.to_path_buf(), (moved.0, true));
        Ok(())
    }
    fn remove(&self, path: &Path) -> Result<()> {
        self.0.step()?;
        self.0.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        self.0.step()?;
        self.0.inner.truncate(path, len)?;
        self.0.synced(path, len);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.0.step()?;
        self.0.inner.sync_dir(dir)?;
        for e in self.0.files.lock().unwrap().values_mut() {
            e.1 = true;
        }
        self.0.renames.lock().unwrap().clear();
        Ok(())
    }
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        self.0.inner.lock(path)
    }
}

fn tiny() -> Options {
    Options::default()
        .memtable_size(2 << 10)
        .block_size(256)
        .target_file_size(1 << 10)
        .level_base_bytes(4 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
        .sync(true)
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

/// Returns the model of acknowledged writes and the one write whose outcome
/// is unknown (key, value) if the kill hit it.
fn workload(
    db: &Database,
    seed: u64,
) -> (
    BTreeMap<Vec<u8>, Vec<u8>>,
    Option<(Vec<u8>, Option<Vec<u8>>)>,
) {
    let mut model = BTreeMap::new();
    let mut x = seed | 1;
    for step in 0..500u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % 120);
        let r = match x % 20 {
            0..=12 => {
                let v = format!("v{step}-{}", "y".repeat((step % 30) as usize)).into_bytes();
                match db.put(&k, &v) {
                    Ok(()) => {
                        model.insert(k, v);
                        Ok(())
                    }
                    Err(e) => return (model, Some((k, Some(v)))).tap(e),
                }
            }
            13..=17 => match db.delete(&k) {
                Ok(()) => {
                    model.remove(&k);
                    Ok(())
                }
                Err(e) => return (model, Some((k, None))).tap(e),
            },
            18 => db.compact(),
            _ => db.compact_range(
                Bound::Included(key(x % 60)),
                Bound::Excluded(key(x % 60 + 30)),
            ),
        };
        if r.is_err() {
            return (model, None);
        }
    }
    (model, None)
}

trait Tap: Sized {
    fn tap(self, _e: Error) -> Self {
        self
    }
}
impl<T> Tap for T {}

#[test]
fn power_cut_at_every_step_loses_nothing_acknowledged() {
    // First, count the steps of a full run.
    let total = {
        let dir = tempfile::tempdir().unwrap();
        let kill = Arc::new(Kill::new(u64::MAX));
        let db =
            Database::open_with(dir.path(), tiny().fs(Arc::new(KillFs(kill.clone())))).unwrap();
        workload(&db, 99);
        db.close().unwrap();
        kill.steps.load(Ordering::SeqCst)
    };
    let stride: u64 = std::env::var("R17_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or((total / 25).max(1));
    eprintln!("total steps {total}");
    let mut at: u64 = std::env::var("R17_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    while at < total {
        let dir = tempfile::tempdir().unwrap();
        let kill = Arc::new(Kill::new(at));
        let (model, unknown) =
            match Database::open_with(dir.path(), tiny().fs(Arc::new(KillFs(kill.clone())))) {
                Ok(db) => {
                    let r = workload(&db, 99);
                    let _ = db.close();
                    drop(db);
                    r
                }
                Err(_) => (BTreeMap::new(), None),
            };
        kill.power_cut();
        let db = Database::open_with(dir.path(), tiny())
            .unwrap_or_else(|e| panic!("reopen after power cut at step {at}/{total}: {e}"));
        let got: BTreeMap<Vec<u8>, Vec<u8>> = db
            .iter(ScanOptions::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        let mut want = model.clone();
        if got != want {
            if let Some((k, v)) = &unknown {
                match v {
                    Some(v) => {
                        want.insert(k.clone(), v.clone());
                    }
                    None => {
                        want.remove(k);
                    }
                }
            }
        }
        if got != want {
            let lost: Vec<_> = model
                .keys()
                .filter(|k| got.get(*k) != model.get(*k))
                .map(|k| String::from_utf8_lossy(k).to_string())
                .collect();
            let back: Vec<_> = got
                .keys()
                .filter(|k| !model.contains_key(*k))
                .map(|k| String::from_utf8_lossy(k).to_string())
                .collect();
            panic!("power cut at step {at}/{total}: differs; wrong/lost {lost:?} resurrected {back:?} unknown {unknown:?}");
        }
        // Nothing may change after a second reopen.
        db.close().unwrap();
        drop(db);
        at += stride;
    }
}
