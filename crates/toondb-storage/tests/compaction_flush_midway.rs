//! A compaction lets a sealed memtable's flush in while it is still
//! writing an output table (every 1024 versions it reads), not only
//! between outputs: a sealed memtable's WAL is what a reopen after a crash
//! replays, and a memtable fills in seconds during a load. (WAL checkpoints
//! run between outputs the same way: tests/wal_checkpoint.rs.)
//!
//! Deterministic: the compaction's only output is held by a gate after a
//! few appends; meanwhile writes seal a memtable; once released, the
//! flush's table must be created before the output is finished (synced).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

#[derive(Default)]
struct Shared {
    /// Table files created after `armed`, in order.
    events: Mutex<Vec<String>>,
    armed: Mutex<bool>,
    /// The held output: its name once chosen.
    held: Mutex<Option<String>>,
    /// Set when the held output is waiting; cleared by `release`.
    waiting: Mutex<bool>,
    released: Mutex<bool>,
    cv: Condvar,
    appends: AtomicUsize,
}

#[derive(Clone, Default)]
struct Hook(Arc<Shared>);

impl WriteHook for Hook {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_none_or(|e| e != "sst") || !*self.0.armed.lock().unwrap() {
            return file;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        self.0.events.lock().unwrap().push(format!("create {name}"));
        let held = {
            let mut h = self.0.held.lock().unwrap();
            h.get_or_insert_with(|| name.clone()) == &name
        };
        Box::new(Sst {
            inner: file,
            shared: self.0.clone(),
            name,
            held,
        })
    }
}

struct Sst {
    inner: Box<dyn WritableFile>,
    shared: Arc<Shared>,
    name: String,
    held: bool,
}

impl WritableFile for Sst {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        // The second append: the table builder writes 2 MiB at a time, so
        // this is mid-output (the output is ~8 MB, below).
        if self.held && self.shared.appends.fetch_add(1, Ordering::SeqCst) == 1 {
            *self.shared.waiting.lock().unwrap() = true;
            self.shared.cv.notify_all();
            let mut released = self.shared.released.lock().unwrap();
            while !*released {
                released = self.shared.cv.wait(released).unwrap();
            }
        }
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.inner.sync_data()?;
        let event = format!("sync {}", self.name);
        self.shared.events.lock().unwrap().push(event);
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_sealed_memtable_is_flushed_while_a_compaction_output_is_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Hook::default();
    let options = Options::default()
        .auto_compaction(false)
        .memtable_size(64 << 10)
        .wal_size_limit(u64::MAX)
        .block_size(256)
        .target_file_size(1 << 30)
        .fs(Arc::new(WrappedFs::os(hook.clone())));
    let db = Arc::new(Database::open_with(dir.path(), options).unwrap());
    // ~20,000 versions in level 0 (several flushes), so the compaction
    // reads many times 1024 versions into its one output (~8 MB: several
    // of the table builder's 2 MiB writes).
    for b in 0..40 {
        let mut batch = WriteBatch::new();
        for i in 0..500 {
            batch
                .put(format!("key{:06}", (i * 40 + b) % 20_000), [b as u8; 400])
                .unwrap();
        }
        db.write(batch).unwrap();
    }
    db.flush().unwrap();
    assert!(db.stats().levels[0].tables >= 2);

    *hook.0.armed.lock().unwrap() = true;
    let compacting = {
        let db = db.clone();
        std::thread::spawn(move || db.compact())
    };
    wait_for("the compaction output to be held", || {
        *hook.0.waiting.lock().unwrap()
    });
    let flushes = db.stats().flushes;
    // Writes that seal a (small) memtable while the output is held.
    // A flush that finishes before the loop looks (what this test proves
    // can happen) empties the sealed list: it counts as the seal too.
    let mut n = 0;
    while db.stats().immutable_memtables == 0 && db.stats().flushes == flushes {
        let mut batch = WriteBatch::new();
        batch.put(format!("new{n:06}"), [7u8; 1000]).unwrap();
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        n += 1;
        assert!(n < 10_000, "no seal");
    }
    *hook.0.released.lock().unwrap() = true;
    hook.0.cv.notify_all();
    compacting.join().unwrap().unwrap();
    wait_for("the flush", || db.stats().flushes > flushes);

    let events = hook.0.events.lock().unwrap().clone();
    let output = hook.0.held.lock().unwrap().clone().unwrap();
    let output_synced = events
        .iter()
        .position(|e| *e == format!("sync {output}"))
        .expect("the output was synced");
    let flush_created = events
        .iter()
        .position(|e| e.starts_with("create ") && *e != format!("create {output}"))
        .expect("a flush created a table");
    assert!(
        flush_created < output_synced,
        "the flush waited for the compaction output: {events:?}"
    );
    for i in 0..20_000 {
        assert!(db.get(format!("key{i:06}")).unwrap().is_some());
    }
}
