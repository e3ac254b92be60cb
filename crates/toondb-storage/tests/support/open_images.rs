//! Crash images for the tests of an open's tables and replay (session 37:
//! tables open beside the WAL replay): each flush kept as its own level-0
//! table, files listed and read back to check that a failed open changed
//! nothing.

use std::fs;
use std::path::{Path, PathBuf};

use toondb_storage::{Database, Options};

/// Options that keep every flush as its own level-0 table.
pub fn keep_tables() -> Options {
    Options::default()
        .auto_compaction(false)
        .l0_slowdown_writes(10_000)
        .l0_stop_writes(10_000)
}

/// The files of `dir` ending in `.ext`, in name order (for table files,
/// lowest number first: the manifest's order for a database that only
/// ever flushed).
pub fn with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Every file of `dir` but the lock, with its bytes.
pub fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A crash image (the directory copied while the database is open) of
/// `tables` flushed tables of 20 keys each, then `wal` (run on the open
/// database) for what only the WAL holds.
pub fn image_with(tables: usize, wal: impl FnOnce(&Database)) -> tempfile::TempDir {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    for t in 0..tables {
        for i in 0..20u32 {
            db.put(format!("key{t:03}-{i:03}"), format!("v{t}-{i}"))
                .unwrap();
        }
        db.flush().unwrap();
    }
    wal(&db);
    let image = super::copy_dir(live.path());
    db.close().unwrap();
    image
}

/// [`image_with`] whose WAL's last record is cut in half: a torn tail
/// that replay cuts off.
pub fn torn_image(tables: usize) -> tempfile::TempDir {
    let mut cut = None;
    let image = image_with(tables, |db| {
        for i in 0..50u32 {
            db.put(format!("wal{i:03}"), vec![b'w'; 200]).unwrap();
        }
        let segment = with_ext(db.path(), "wal").pop().unwrap();
        let len = fs::metadata(&segment).unwrap().len();
        db.put("torn", vec![b't'; 4000]).unwrap();
        cut = Some((segment, len + 2000));
    });
    let (segment, len) = cut.unwrap();
    let torn = image.path().join(segment.file_name().unwrap());
    fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len)
        .unwrap();
    image
}

/// Fails the map of one table file and panics on the map of another file
/// (a later table, or a WAL segment).
pub struct FailThenPanic {
    pub fail: PathBuf,
    pub panic: PathBuf,
}

impl toondb_storage::io::WriteHook for FailThenPanic {
    fn before_map(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.file_name() == self.fail.file_name() {
            return Err(toondb_storage::Error::new(
                toondb_storage::ErrorKind::Io,
                "injected map failure",
            ));
        }
        if path.file_name() == self.panic.file_name() {
            panic!("injected: a panic mapping {path:?}");
        }
        Ok(())
    }
    fn wrap(
        &self,
        _: &Path,
        file: Box<dyn toondb_storage::io::WritableFile>,
    ) -> Box<dyn toondb_storage::io::WritableFile> {
        file
    }
}

impl FailThenPanic {
    /// Opens `dir` through this hook, catching the open's panic: the
    /// caller tells the injected failure from a panic that hid it.
    pub fn open(self, dir: &Path) -> std::thread::Result<toondb_storage::Result<()>> {
        let options =
            keep_tables().fs(std::sync::Arc::new(toondb_storage::io::WrappedFs::os(self)));
        let path = dir.to_path_buf();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            Database::open_with(&path, options).map(drop)
        }))
    }
}

/// Fails unless `after` lists the same files with the same bytes as
/// `before` (both from [`contents`]); `what` names the open in the message.
pub fn assert_same_files(before: &[(String, Vec<u8>)], after: &[(String, Vec<u8>)], what: &str) {
    let changed: Vec<_> = before
        .iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (b.0.clone(), b.1.len(), a.1.len()))
        .collect();
    assert_eq!(before.len(), after.len(), "{what} added or removed files");
    assert!(
        changed.is_empty(),
        "{what} changed files (name, len before, len after): {changed:?}"
    );
}
