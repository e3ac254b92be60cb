//! Column chunks and crashes: a process killed at any file-system step of
//! a chunking and the compaction after it (every mutation from step N on
//! fails and has no effect) reopens with exactly the rows it had: the
//! chunking's commit is there whole or not at all. (Kill file system as in
//! review17_kill.rs.)

mod powerloss_support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use toondb_storage::io::{FileBytes, FileLock, FileSystem, OsFileSystem, WritableFile};
use toondb_storage::{
    ColumnDef, ColumnType, Database, Error, ErrorKind, Options, Result, Schema, TableScanOptions,
    Value,
};

// Returns once no background work is left, or it failed (a kill).
use powerloss_support::wait_idle;

struct Kill {
    inner: Arc<dyn FileSystem>,
    steps: AtomicU64,
    at: u64,
    dead: AtomicBool,
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
}

impl WritableFile for KillFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.fs.step()?;
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.fs.step()?;
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.fs.step()?;
        self.inner.append_durable(data)
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
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
        }))
    }
    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.0.step()?;
        let f = self.0.inner.create_log(path)?;
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
        }))
    }
    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.0.step()?;
        let f = self.0.inner.open_append(path)?;
        Ok(Box::new(KillFile {
            inner: f,
            fs: self.0.clone(),
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
        self.0.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> Result<()> {
        self.0.step()?;
        self.0.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        self.0.step()?;
        self.0.inner.truncate(path, len)
    }
    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.0.step()?;
        self.0.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        self.0.inner.lock(path)
    }
}

fn schema() -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("x", ColumnType::F64),
            ColumnDef::new("s", ColumnType::Str).nullable(),
        ],
        "id",
    )
}

fn row(i: i64) -> Vec<Value> {
    vec![
        Value::I64(i),
        Value::F64(i as f64 / 3.0),
        if i % 5 == 0 {
            Value::Null
        } else {
            Value::Str(format!("s{}", i % 11))
        },
    ]
}

/// `row(-i)` for a rewritten row `i`: other values, its pk put back.
fn fixup(r: Vec<Value>) -> Vec<Value> {
    match r[0] {
        Value::I64(k) if k < 0 => {
            let mut r = r;
            r[0] = Value::I64(-k);
            r
        }
        _ => r,
    }
}

fn setup(dir: &Path) -> Result<()> {
    let db = Database::open(dir)?;
    let t = db.create_table("t", schema())?;
    t.upsert(&db, &(0..5000).map(row).collect::<Vec<_>>())?;
    t.chunk(&db)?;
    t.upsert(&db, &(100..200).map(|i| fixup(row(-i))).collect::<Vec<_>>())?;
    let gone: Vec<Value> = (0..5000).filter(|i| i % 7 == 0).map(Value::I64).collect();
    t.delete(&db, &gone)?;
    db.close()
}

fn rows(dir: &Path) -> Result<Vec<String>> {
    let db = Database::open(dir)?;
    let t = db.table("t")?;
    let mut s = t.scan(&db, TableScanOptions::default())?;
    let mut out = Vec::new();
    loop {
        let b = s.next_batch(1000)?;
        if b.is_empty() {
            break;
        }
        for r in 0..b.len() {
            let row: Vec<Value> = b.columns.iter().map(|c| c[r].clone()).collect();
            out.push(format!("{row:?}"));
        }
    }
    // Point reads agree with the scan.
    for pk in [0i64, 1, 150, 2047, 2048, 4999] {
        let got = t.get(&db, &Value::I64(pk), None)?;
        assert_eq!(got.is_some(), pk % 7 != 0, "get {pk}");
    }
    db.close()?;
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn chunk_and_compact(dir: &Path, at: u64) -> (u64, Result<()>) {
    let kill = Arc::new(Kill {
        inner: Arc::new(OsFileSystem),
        steps: AtomicU64::new(0),
        at,
        dead: AtomicBool::new(false),
    });
    let options = Options::default().fs(Arc::new(KillFs(kill.clone())));
    let result = (|| {
        let db = Database::open_with(dir, options)?;
        // Background work (the open's manifest switch and the sync of the
        // WAL it replayed, flushes) is let finish before the next step and
        // before the close, so every run takes the same file-system steps
        // in the same order: the kill at step N of the counted run then
        // always fires. (Left to run alongside, a background sync could
        // still be in flight at the close, and a run counted one step
        // fewer now and then under load.)
        wait_idle(&db);
        let t = db.table("t")?;
        t.chunk(&db)?;
        db.compact()?;
        wait_idle(&db);
        db.close()
    })();
    (kill.steps.load(Ordering::SeqCst), result)
}

#[test]
fn a_kill_at_any_step_of_chunking_keeps_the_rows() {
    let base = tempfile::tempdir().unwrap();
    setup(base.path()).unwrap();
    let want: Vec<String> = (0..5000i64)
        .filter(|i| i % 7 != 0)
        .map(|i| {
            let r = if (100..200).contains(&i) {
                fixup(row(-i))
            } else {
                row(i)
            };
            format!("{r:?}")
        })
        .collect();
    assert_eq!(rows(base.path()).unwrap(), want);
    // How many steps a whole run takes.
    let probe = tempfile::tempdir().unwrap();
    copy_dir(base.path(), probe.path());
    let (total, result) = chunk_and_compact(probe.path(), u64::MAX);
    result.unwrap();
    assert_eq!(rows(probe.path()).unwrap(), want);
    assert!(total > 5, "{total} steps");
    let stride = (total / 40).max(1);
    let mut at = 0;
    while at <= total {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let (_, result) = chunk_and_compact(dir.path(), at);
        assert!(result.is_err() || at >= total, "step {at} of {total}");
        assert_eq!(
            rows(dir.path()).unwrap(),
            want,
            "killed at step {at} of {total}"
        );
        at += stride;
    }
}
