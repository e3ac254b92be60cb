//! A file system that wraps another: the fault-injection seam.

use std::path::Path;
use std::sync::Arc;

use super::{FileBytes, FileLock, FileSystem, OsFileSystem, WritableFile};
use crate::error::Result;

/// Decides what happens to the files a [`WrappedFs`] opens for writing.
pub trait WriteHook: Send + Sync + 'static {
    /// Runs before a file is created; an error fails `create` and nothing
    /// is created.
    fn before_create(&self, path: &Path) -> Result<()> {
        let _ = path;
        Ok(())
    }

    /// Wraps a file opened for writing (by `create` or `open_append`).
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile>;

    /// Runs before a directory is synced; an error fails `sync_dir`.
    fn before_sync_dir(&self, dir: &Path) -> Result<()> {
        let _ = dir;
        Ok(())
    }

    /// Runs before a file is mapped for reading; an error fails `map`
    /// and nothing is mapped. Lets a test stall or fail the reads of a
    /// chosen file without a whole [`FileSystem`] of its own.
    fn before_map(&self, path: &Path) -> Result<()> {
        let _ = path;
        Ok(())
    }

    /// Wraps a file mapped for reading (to record or fake what its reads
    /// ask of the page cache, say).
    fn wrap_map(&self, path: &Path, bytes: Arc<dyn FileBytes>) -> Arc<dyn FileBytes> {
        let _ = path;
        bytes
    }

    /// Wraps the directory lock the file system took (to watch how many
    /// are held at once, say); an error fails `lock` and the lock taken is
    /// released.
    fn wrap_lock(&self, path: &Path, lock: Box<dyn FileLock>) -> Result<Box<dyn FileLock>> {
        let _ = path;
        Ok(lock)
    }
}

/// A file system that delegates everything to `inner` and passes every
/// file it opens for writing (and every map, directory sync and creation)
/// through a [`WriteHook`]: the seam for fault injection (failing, short
/// or lost writes and syncs) in tests, without re-implementing the rest of
/// [`FileSystem`].
pub struct WrappedFs<H> {
    inner: Arc<dyn FileSystem>,
    hook: H,
}

impl<H: WriteHook> WrappedFs<H> {
    pub fn new(inner: Arc<dyn FileSystem>, hook: H) -> Self {
        WrappedFs { inner, hook }
    }

    /// Wraps the real file system.
    pub fn os(hook: H) -> Self {
        Self::new(OsFileSystem::shared(), hook)
    }
}

impl<H: WriteHook> FileSystem for WrappedFs<H> {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        self.inner.create_dir_all(path)
    }
    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.hook.before_create(path)?;
        Ok(self.hook.wrap(path, self.inner.create(path)?))
    }
    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.hook.before_create(path)?;
        Ok(self.hook.wrap(path, self.inner.create_log(path)?))
    }
    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        Ok(self.hook.wrap(path, self.inner.open_append(path)?))
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        self.hook.before_map(path)?;
        Ok(self.hook.wrap_map(path, self.inner.map(path)?))
    }
    fn exists(&self, path: &Path) -> bool {
        self.inner.exists(path)
    }
    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        self.inner.truncate(path, len)
    }
    fn sync_dir(&self, dir: &Path) -> Result<()> {
        self.hook.before_sync_dir(dir)?;
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        self.hook.wrap_lock(path, self.inner.lock(path)?)
    }
}
