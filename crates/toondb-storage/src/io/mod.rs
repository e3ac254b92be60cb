//! The file-system seam. Every byte the engine reads or writes goes through
//! [`FileSystem`], so tests can swap in an implementation that fails, tears
//! or drops writes (fault injection) without touching engine code, and
//! [`PowerLossFs`] simulates power cuts and process crashes in memory.

mod direct;
mod os;
mod powerloss;
mod value_map;
mod wrapped;

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::error::Result;

pub use os::OsFileSystem;
pub use powerloss::{Crash, PowerCut, PowerLossFs, Tail};
pub(crate) use value_map::is_resident;
pub use value_map::{live_value_maps, max_live_value_maps, MappedChunk, ValueMap};
pub use wrapped::{WrappedFs, WriteHook};

/// A file opened for appending (WAL segments, table files, manifests).
pub trait WritableFile: Send {
    /// Appends `data`; on return it has reached the OS (survives a process
    /// crash, not a power cut).
    fn append(&mut self, data: &[u8]) -> Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync_data(&mut self) -> Result<()>;
    /// Appends `data` and makes everything appended so far durable: by
    /// default `append` then `sync_data`. A log file from
    /// [`FileSystem::create_log`] may instead do it in one direct,
    /// synchronous write (direct.rs), which can leave up to a block of zero
    /// bytes after the logical end; only formats that read trailing zeros as
    /// the end (the WAL) may use such files.
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.append(data)?;
        self.sync_data()
    }
    /// Bytes appended so far (the logical end), including any that were
    /// there before opening; preallocated space is not counted.
    fn len(&self) -> u64;
    /// Writes `len` zero bytes after the logical end, without moving it;
    /// a `sync_data` afterwards makes them durable. Later appends overwrite
    /// the zeros, so a sync after an append need not also persist a new
    /// file size, which makes fdatasync measurably cheaper
    /// (docs/format-wal.md). Optional.
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
    /// Advice that `range` of the bytes will be read soon, so the file
    /// system may start reading it from the device now (readahead of table
    /// scans, sstable/readahead.rs). Must not block on the reads; ranges
    /// past the end are ignored. The default does nothing (in-memory files).
    fn will_need(&self, range: Range<usize>) {
        let _ = range;
    }
    /// Advice that the whole file will be read once, front to back (WAL
    /// replay): undoes the random-access advice maps get by default, so a
    /// page fault maps its neighbours too (fault-around) instead of one
    /// 4 KiB page. The default does nothing (in-memory files).
    fn advise_sequential(&self) {}
    /// Whether reading `range` cannot wait for the device (its pages are
    /// in memory). The default says yes (in-memory files).
    fn is_resident(&self, range: Range<usize>) -> bool {
        let _ = range;
        true
    }
    /// `range` in a private, writable mapping of its own that outlives this
    /// file (zero-copy values, io/value_map.rs); `None` when the file
    /// system cannot map it, and the caller copies. The default: `None`.
    fn map_value(&self, range: Range<usize>) -> Option<ValueMap> {
        let _ = range;
        None
    }
}

/// A held directory lock; dropping it releases the lock.
pub trait FileLock: Send + Sync {}

/// Everything the engine needs from a file system.
pub trait FileSystem: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// Creates (or truncates) a file for appending.
    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>>;
    /// Creates (or truncates) a log file for appending: like `create`, but
    /// the file may end in zero bytes past its logical end (see
    /// [`WritableFile::append_durable`]). Defaults to `create`.
    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        self.create(path)
    }
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
    /// Makes `to` a new hard link to the file `from` (backups). Fails with
    /// the OS error when `to` exists or linking is not possible (another
    /// device, a file system without links); the default says unsupported,
    /// which makes callers copy instead.
    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        let _ = (from, to);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
    /// Creates a new, empty file for appending, failing if `path` exists
    /// (claiming a backup destination; copying a file without overwriting
    /// anything). The default checks then creates, which is not atomic;
    /// the OS file system uses `O_CREAT | O_EXCL`.
    fn create_new(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        if self.exists(path) {
            return Err(crate::error::Error::io(
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
                format_args!("creating {}", path.display()),
            ));
        }
        self.create(path)
    }
    /// Takes an exclusive, advisory, process-level lock on `path`, creating
    /// it; fails with [`ErrorKind::Locked`] when another process holds it.
    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>>;
}

/// Creates `path` and any missing parents, then syncs the directory that
/// holds each one it created, so that a power cut cannot take the new
/// database directory (and every file later synced inside it) away.
pub(crate) fn create_dir_all_durable(fs: &dyn FileSystem, path: &Path) -> Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || fs.exists(p) {
            break;
        }
        missing.push(p);
        at = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(path)?;
    // Outermost first: each new entry is durable before the one inside it.
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        fs.sync_dir(parent)?;
    }
    Ok(())
}
