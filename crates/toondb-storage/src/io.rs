//! The file-system seam. Every byte the engine reads or writes goes through
//! [`FileSystem`], so tests can swap in an implementation that fails, tears
//! or drops writes (fault injection) without touching engine code.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, IoResultExt, Result};

/// A file opened for appending (WAL segments, table files, manifests).
pub trait WritableFile: Send {
    /// Appends `data`; on return it has reached the OS (survives a process
    /// crash, not a power cut).
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync_data(&mut self) -> Result<()>;
    /// Bytes appended so far (the logical end), including any that were
    /// there before opening; preallocated space is not counted.
    fn len(&self) -> u64;
    /// Writes `len` zero bytes after the logical end, without moving it,
    /// and makes them durable. Later appends overwrite the zeros, so a sync
    /// after an append need not also persist a new file size, which makes
    /// fdatasync measurably cheaper (docs/format-wal.md). Optional.
    fn preallocate(&mut self, len: u64) -> Result<()> {
        let _ = len;
        Ok(())
    }
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The read-only contents of a whole file, usually a memory map.
pub trait FileBytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

/// A held directory lock; dropping it releases the lock.
pub trait FileLock: Send + Sync {}

/// Everything the engine needs from a file system.
pub trait FileSystem: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Creates (or truncates) a file for appending.
    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>>;
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>>;
    /// Reads a whole file into memory.
    fn read(&self, path: &Path) -> Result<Vec<u8>>;
    /// Maps a whole (immutable) file read-only.
    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>>;
    fn exists(&self, path: &Path) -> bool;
    /// Names (not paths) of the entries of a directory.
    fn list(&self, dir: &Path) -> Result<Vec<String>>;
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    fn remove(&self, path: &Path) -> Result<()>;
    /// Cuts a file to `len` bytes and makes the new length durable.
    fn truncate(&self, path: &Path, len: u64) -> Result<()>;
    /// Makes renames and creations in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> Result<()>;
    /// Takes an exclusive, advisory, process-level lock on `path`, creating
    /// it; fails with [`ErrorKind::Locked`] when another process holds it.
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>>;
}

/// The real file system (std::fs, memmap2, flock).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileSystem;

impl OsFileSystem {
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(OsFileSystem)
    }
}

struct OsWritableFile {
    file: File,
    path: PathBuf,
    len: u64,
}

impl WritableFile for OsWritableFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .ctx(format_args!("writing {}", self.path.display()))?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(format_args!("syncing {}", self.path.display()))
    }

    fn len(&self) -> u64 {
        self.len
    }

    #[cfg(unix)]
    fn preallocate(&mut self, len: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        const CHUNK: usize = 64 << 10;
        let zeros = vec![0u8; CHUNK];
        let mut written = 0u64;
        while written < len {
            let n = (len - written).min(CHUNK as u64) as usize;
            self.file
                .write_all_at(&zeros[..n], self.len + written)
                .ctx(format_args!("preallocating {}", self.path.display()))?;
            written += n as u64;
        }
        self.sync_data()
    }
}

struct MappedFile {
    // Empty files cannot be mapped; they are represented by `None`.
    map: Option<memmap2::Mmap>,
}

impl FileBytes for MappedFile {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

struct OsFileLock {
    _file: File,
}

impl FileLock for OsFileLock {}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).ctx(format_args!("creating directory {}", path.display()))
    }

    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = File::create(path).ctx(format_args!("creating {}", path.display()))?;
        Ok(Box::new(OsWritableFile {
            file,
            path: path.to_path_buf(),
            len: 0,
        }))
    }

    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .ctx(format_args!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(format_args!("reading metadata of {}", path.display()))?
            .len();
        Ok(Box::new(OsWritableFile {
            file,
            path: path.to_path_buf(),
            len,
        }))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        fs::read(path).ctx(format_args!("reading {}", path.display()))
    }

    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        let file = File::open(path).ctx(format_args!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(format_args!("reading metadata of {}", path.display()))?
            .len();
        if len == 0 {
            return Ok(Arc::new(MappedFile { map: None }));
        }
        // SAFETY: table files are written once, synced, and never modified or
        // truncated while mapped (they are only deleted, which keeps the
        // mapping valid until it is dropped).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.ctx(format_args!("mapping {}", path.display()))?;
        Ok(Arc::new(MappedFile { map: Some(map) }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).ctx(format_args!("listing {}", dir.display()))? {
            let entry = entry.ctx(format_args!("listing {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).ctx(format_args!(
            "renaming {} to {}",
            from.display(),
            to.display()
        ))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).ctx(format_args!("removing {}", path.display()))
    }

    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx(format_args!("opening {}", path.display()))?;
        file.set_len(len)
            .ctx(format_args!("truncating {}", path.display()))?;
        file.sync_all()
            .ctx(format_args!("syncing {}", path.display()))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = File::open(dir).ctx(format_args!("opening directory {}", dir.display()))?;
        d.sync_all()
            .ctx(format_args!("syncing directory {}", dir.display()))
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(format_args!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsFileLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{} is locked by another process (or another open that does not share this engine)",
                    path.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => {
                Err(Error::io(e, format_args!("locking {}", path.display())))
            }
        }
    }
}

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
}

/// A file system that delegates everything to `inner` and passes every
/// file it opens for writing through a [`WriteHook`]: the seam for fault
/// injection (failing, short or lost writes and syncs) in tests, without
/// re-implementing the rest of [`FileSystem`].
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
    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        Ok(self.hook.wrap(path, self.inner.open_append(path)?))
    }
    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        self.inner.map(path)
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
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        self.inner.lock(path)
    }
}
