//! Gates that hold the engine's file operations until a test lets them
//! run, so a crash lands at a chosen point instead of a random one.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use toondb_storage::io::{WritableFile, WriteHook};

/// A gate that blocks until released; clones share it.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn release(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }

    pub fn wait(&self) {
        let (lock, cv) = &*self.0;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }
}

/// Holds manifest creation (the open's switch to a fresh manifest, which
/// runs on the maintenance thread) until released.
#[derive(Clone, Default)]
pub struct HoldSwitch(pub Gate);

impl HoldSwitch {
    pub fn release(&self) {
        self.0.release();
    }
}

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

/// A file that runs `before` ahead of every `sync_data` (and, if
/// `durable_appends`, every `append_durable`): an error from it is
/// returned instead of syncing. Everything else goes to the inner file.
/// The hooks' one-off behaviours (hold, fail, cut the power at a sync) are
/// closures over this, not each a copy of the whole trait.
pub struct OnSync<F> {
    inner: Box<dyn WritableFile>,
    before: F,
    durable_appends: bool,
}

impl<F> OnSync<F>
where
    F: Fn(&dyn WritableFile) -> toondb_storage::Result<()> + Send + 'static,
{
    /// `before` runs ahead of `sync_data` only.
    pub fn boxed(inner: Box<dyn WritableFile>, before: F) -> Box<dyn WritableFile> {
        Box::new(OnSync {
            inner,
            before,
            durable_appends: false,
        })
    }

    /// `before` runs ahead of `sync_data` and `append_durable`.
    pub fn boxed_with_durable_appends(
        inner: Box<dyn WritableFile>,
        before: F,
    ) -> Box<dyn WritableFile> {
        Box::new(OnSync {
            inner,
            before,
            durable_appends: true,
        })
    }
}

impl<F> WritableFile for OnSync<F>
where
    F: Fn(&dyn WritableFile) -> toondb_storage::Result<()> + Send,
{
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        (self.before)(&*self.inner)?;
        self.inner.sync_data()
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        if self.durable_appends {
            (self.before)(&*self.inner)?;
        }
        self.inner.append_durable(data)
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

/// Waits until `done` holds; fails after 20 s instead of hanging.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}
