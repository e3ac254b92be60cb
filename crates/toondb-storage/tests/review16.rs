//! Review of issue 16: what a resolved `close()` promises ("every
//! acknowledged write is on disk", index.d.ts; "a clean shutdown loses
//! nothing", README) must hold for every handle, not only the last one on
//! the path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, Result};

/// Remembers, per WAL segment, how many bytes were durable at its last
/// successful sync: what a power cut would leave of it.
#[derive(Clone, Default)]
struct Durable(Arc<Mutex<HashMap<PathBuf, u64>>>);

struct Tracked {
    path: PathBuf,
    inner: Box<dyn WritableFile>,
    durable: Durable,
}

impl WritableFile for Tracked {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.inner.sync_data()?;
        self.mark();
        Ok(())
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.inner.append_durable(data)?;
        self.mark();
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> Result<()> {
        self.inner.preallocate(len)
    }
}

impl Tracked {
    fn mark(&self) {
        let len = self.inner.len();
        self.durable
            .0
            .lock()
            .unwrap()
            .insert(self.path.clone(), len);
    }
}

impl WriteHook for Durable {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            Box::new(Tracked {
                path: path.to_path_buf(),
                inner: file,
                durable: self.clone(),
            })
        } else {
            file
        }
    }
}

/// Copies `dir` as a power cut right now would leave it: every WAL segment
/// cut back to its last synced length (other files are copied whole, which
/// only favours the database).
fn power_cut_image(dir: &Path, durable: &Durable) -> tempfile::TempDir {
    let out = tempfile::tempdir().unwrap();
    let synced = durable.0.lock().unwrap().clone();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "LOCK" {
            continue;
        }
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if entry.path().extension().is_some_and(|e| e == "wal") {
            let keep = synced
                .iter()
                .find(|(p, _)| p.file_name() == Some(name.as_os_str()))
                .map_or(0, |(_, n)| *n as usize);
            bytes.truncate(keep);
        }
        std::fs::write(out.path().join(&name), bytes).unwrap();
    }
    out
}

#[test]
fn a_closed_handle_s_acknowledged_writes_survive_a_power_cut_while_another_handle_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Durable::default();
    let options = Options {
        fs: Arc::new(WrappedFs::os(durable.clone())),
        ..Options::default()
    };
    // Say, the main thread's handle, open for the life of the process.
    let long_lived = Database::open_with(dir.path(), options.clone()).unwrap();
    // A worker's handle: writes, closes cleanly, reports "done".
    let worker = Database::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        worker.put(format!("w{i}"), "v").unwrap();
    }
    worker.close().expect("close reported success");
    // Power cut now: the worker's close resolved, so its writes must be there.
    let image = power_cut_image(dir.path(), &durable);
    let reopened = Database::open(image.path()).unwrap();
    let missing: Vec<String> = (0..10)
        .map(|i| format!("w{i}"))
        .filter(|k| reopened.get(k).unwrap().is_none())
        .collect();
    reopened.close().unwrap();
    long_lived.close().unwrap();
    assert!(
        missing.is_empty(),
        "close() of a non-last handle returned Ok, yet a power cut loses {missing:?}"
    );
}

/// The same check for the last handle (which passes): the image is sound.
#[test]
fn control_the_last_handle_s_close_makes_its_writes_durable() {
    let dir = tempfile::tempdir().unwrap();
    let durable = Durable::default();
    let options = Options {
        fs: Arc::new(WrappedFs::os(durable.clone())),
        ..Options::default()
    };
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..10 {
        db.put(format!("w{i}"), "v").unwrap();
    }
    db.close().unwrap();
    let image = power_cut_image(dir.path(), &durable);
    let reopened = Database::open(image.path()).unwrap();
    for i in 0..10 {
        assert!(reopened.get(format!("w{i}")).unwrap().is_some());
    }
    reopened.close().unwrap();
}
