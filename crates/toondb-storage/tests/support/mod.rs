//! Helpers shared by integration tests (each test file that uses them says
//! `mod support;`; not every file uses every helper).
#![allow(dead_code)]

pub mod open_images;
pub mod pending_drop;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use tempfile::TempDir;
use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, Stats};

/// Holds every table file creation until released: a flush (or an open's
/// flush of what it recovered) waits, so the memtable keeps serving reads
/// and a crash image taken meanwhile still has its WAL segments.
#[derive(Clone, Default)]
pub struct TableGate(Arc<(Mutex<bool>, Condvar)>);

impl TableGate {
    pub fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

impl WriteHook for TableGate {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            let mut open = self.0 .0.lock().unwrap();
            while !*open {
                open = self.0 .1.wait(open).unwrap();
            }
        }
        Ok(())
    }

    fn wrap(&self, _: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

/// A file whose appends (plain and durable) first run `before`, given the
/// inner file and the data: an error from it is returned instead of
/// appending. Syncs and the rest go to the inner file. Fault hooks that
/// fail, panic or tear appends are closures over this, not each a copy of
/// the whole trait (powerloss_support's `OnSync` does the same for syncs).
/// `preallocate` is left at the trait's no-op, as in the copies this
/// replaced, so the files look as they did to the tests written with them.
pub struct OnAppend<F> {
    inner: Box<dyn WritableFile>,
    before: F,
}

impl<F> OnAppend<F>
where
    F: FnMut(&mut dyn WritableFile, &[u8]) -> toondb_storage::Result<()> + Send + 'static,
{
    pub fn boxed(inner: Box<dyn WritableFile>, before: F) -> Box<dyn WritableFile> {
        Box::new(OnAppend { inner, before })
    }
}

impl<F> WritableFile for OnAppend<F>
where
    F: FnMut(&mut dyn WritableFile, &[u8]) -> toondb_storage::Result<()> + Send,
{
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        (self.before)(&mut *self.inner, data)?;
        self.inner.append(data)
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        (self.before)(&mut *self.inner, data)?;
        self.inner.append_durable(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// A test's hold on a [`TableGate`]: released when dropped too, so a test
/// that fails (unwinds) while holding it does not hang in the database's
/// drop, which waits for a maintenance thread stuck at the gate. Bind it
/// after the database (`let (db, gate) = ...`), so it drops first.
pub struct HeldGate(pub TableGate);

impl HeldGate {
    pub fn release(&self) {
        self.0.release();
    }
}

impl Drop for HeldGate {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Opens `dir` with table creation held by a new gate.
pub fn open_with_tables_held(dir: &Path) -> (Database, HeldGate) {
    let gate = TableGate::default();
    let options = Options::default().fs(Arc::new(WrappedFs::os(gate.clone())));
    (Database::open_with(dir, options).unwrap(), HeldGate(gate))
}

/// Copies every file of `src` into a new temporary directory. A file the
/// engine deletes while this runs (obsolete, so a crash image may or may
/// not hold it) is skipped instead of failing the copy.
pub fn copy_dir(src: &Path) -> TempDir {
    let dst = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            match fs::copy(entry.path(), dst.path().join(entry.file_name())) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copying {:?}: {e}", entry.path()),
            }
        }
    }
    dst
}

/// Waits until no memtable waits for a flush, the maintenance thread is
/// idle and no WAL segment's background sync runs, seen twice in a row;
/// fails on a background error or after 60 s.
pub fn wait_idle(db: &Database) -> Stats {
    wait_idle_seen(db, 2)
}

/// `wait_idle`, but idle must be seen `times` in a row (more for a test
/// whose maintenance jobs lead to further jobs with short gaps between).
pub fn wait_idle_seen(db: &Database, times: u32) -> Stats {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut idle = 0;
    loop {
        let s = db.stats();
        assert!(s.background_error.is_none(), "{:?}", s.background_error);
        if s.immutable_memtables == 0 && !s.maintenance_busy && s.pending_wal_syncs == 0 {
            idle += 1;
            if idle == times {
                return s;
            }
        } else {
            idle = 0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never went idle: {s:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A small deterministic generator (xorshift64) for test workloads.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
