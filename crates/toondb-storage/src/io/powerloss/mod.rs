//! [`PowerLossFs`]: an in-memory [`FileSystem`] for tests that knows which
//! bytes and directory entries were made durable, and can simulate a power
//! cut or a process crash at any step.
//!
//! Test-oriented: everything lives in memory, paths must be absolute, and a
//! simulated crash makes every later call fail until [`PowerLossFs::restart`].
//!
//! The durability rules are POSIX's, taken strictly:
//! - bytes written to a file are durable only after `sync_data` of that
//!   file (`append_durable` is an append plus a sync, two steps, so a power
//!   cut between them can tear it; `truncate` is durable on return, as its
//!   contract says);
//! - a directory entry (a create, a rename, a removal, a new subdirectory)
//!   is durable only after `sync_dir` of the directory that holds it; a
//!   file's data and its name are independent (a synced file whose entry
//!   was never synced disappears, a synced entry whose data was never
//!   synced is an empty file);
//! - a power cut keeps, per file and per directory, the durable image plus
//!   a prefix of the operations issued since (none, all, or, with
//!   [`Tail::Random`], a seeded random prefix whose first lost write may be
//!   torn, optionally leaving garbage up to the end of its 512-byte sector);
//! - [`Tail::Pages`] instead persists each unsynced page of a file
//!   independently, as out-of-order writeback (or a device's volatile
//!   cache) can;
//! - a process crash ([`PowerLossFs::kill`]) loses nothing the OS was
//!   given, and makes nothing more durable either.
//!
//! Crashes can be triggered by the test ([`PowerLossFs::power_cut`],
//! [`PowerLossFs::kill`]) or armed to happen right after the n-th mutating
//! operation from now ([`PowerLossFs::crash_after`]), which is how a test
//! cuts power at every step of a flush. Counted (mutating) operations:
//! create, create_log, open_append, append, sync_data, preallocate,
//! create_dir_all, rename, remove, truncate, sync_dir, lock.
//!
//! After a crash the engine that was running sees only I/O errors (its
//! handles belong to a dead "process"); its locks are released. The test
//! closes it, calls [`PowerLossFs::restart`] and opens the database again.
//!
//! Table files are mapped by copying them: a map is a snapshot of the file,
//! which is all the engine needs from an immutable file.

mod state;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use self::state::{DirOp, Disk, FileOp, Node, ROOT};
use super::{FileBytes, FileLock, FileSystem, WritableFile};
use crate::error::{Error, ErrorKind, Result};

/// Alignment of a direct write: a durable append to a log file pads with
/// zeros to this boundary, as the OS file system's direct path does
/// (io/direct.rs), so readers meet the same zero tails here.
const BLOCK: u64 = 4096;

/// How many recent mutating operations [`PowerLossFs::trace`] keeps.
const TRACE_LEN: usize = 64;

/// What happens to the operations issued since the last sync when the
/// power is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// All of them are lost.
    Drop,
    /// All of them reached the device just in time.
    Keep,
    /// Per file and directory, a seeded random prefix survives; the first
    /// lost write of a file may be torn (a prefix of it survives).
    Random,
    /// Out-of-order writeback: each unsynced 4 KiB page of a file's writes
    /// survives or not independently (a later page without an earlier one:
    /// a hole of old bytes or zeros before it). Directories as `Random`.
    Pages,
}

/// A power cut: which unsynced operations survive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    pub seed: u64,
    pub tail: Tail,
    /// A torn write leaves random bytes up to the end of its sector.
    pub garbage: bool,
}

impl PowerCut {
    pub fn drop_unsynced() -> Self {
        PowerCut {
            seed: 0,
            tail: Tail::Drop,
            garbage: false,
        }
    }

    pub fn keep_unsynced() -> Self {
        PowerCut {
            seed: 0,
            tail: Tail::Keep,
            garbage: false,
        }
    }

    /// Out-of-order page writeback (see [`Tail::Pages`]).
    pub fn pages(seed: u64) -> Self {
        PowerCut {
            seed,
            tail: Tail::Pages,
            garbage: false,
        }
    }

    pub fn random(seed: u64, garbage: bool) -> Self {
        PowerCut {
            seed,
            tail: Tail::Random,
            garbage,
        }
    }
}

/// A simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crash {
    /// Power loss: only what was made durable survives (see [`PowerCut`]).
    PowerCut(PowerCut),
    /// Process crash (SIGKILL): everything handed to the OS survives.
    Kill,
}

struct State {
    disk: Disk,
    /// Bumped by every crash; handles and locks of older generations are dead.
    generation: u64,
    /// Set by a crash, cleared by `restart`: the crashed process's
    /// remaining calls fail.
    down: bool,
    /// Held locks, by normalized path.
    locks: HashSet<PathBuf>,
    mutations: u64,
    armed: Option<(u64, Crash)>,
    trace: VecDeque<String>,
    crashes: u64,
}

impl State {
    fn check_up(&self) -> Result<()> {
        if self.down {
            return Err(down_error());
        }
        Ok(())
    }

    fn check_handle(&self, generation: u64) -> Result<()> {
        if self.down || generation != self.generation {
            return Err(down_error());
        }
        Ok(())
    }

    /// Counts a mutating operation that just happened, and fires an armed
    /// crash when its turn has come.
    fn counted(&mut self, what: impl FnOnce() -> String) {
        self.mutations += 1;
        if self.trace.len() == TRACE_LEN {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("#{} {}", self.mutations, what()));
        if let Some((at, crash)) = self.armed {
            if self.mutations >= at {
                self.armed = None;
                self.crash(crash);
            }
        }
    }

    fn crash(&mut self, crash: Crash) {
        if let Crash::PowerCut(cut) = crash {
            self.disk.power_cut(&cut);
        }
        self.generation += 1;
        self.down = true;
        self.locks.clear();
        self.crashes += 1;
        self.trace.push_back(format!("-- {crash:?} --"));
    }

    fn parent_of(&self, path: &Path) -> Result<(u64, String)> {
        let mut parts = components(path)?;
        let Some(name) = parts.pop() else {
            return Err(invalid(path, "names the root"));
        };
        match self.disk.lookup(&parts) {
            Some(Node::Dir(id)) => Ok((id, name)),
            Some(Node::File(_)) => Err(invalid(path, "has a file as its parent")),
            None => Err(not_found(path)),
        }
    }

    fn file_of(&self, path: &Path) -> Result<u64> {
        match self.disk.lookup(&components(path)?) {
            Some(Node::File(id)) => Ok(id),
            Some(Node::Dir(_)) => Err(invalid(path, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    fn dir_of(&self, path: &Path) -> Result<u64> {
        match self.disk.lookup(&components(path)?) {
            Some(Node::Dir(id)) => Ok(id),
            Some(Node::File(_)) => Err(invalid(path, "is not a directory")),
            None => Err(not_found(path)),
        }
    }

    fn dir_op(&mut self, dir: u64, op: DirOp) {
        if let Some(d) = self.disk.dirs.get_mut(&dir) {
            d.apply(op);
        }
    }

    fn file_op(&mut self, inode: u64, op: FileOp) -> Result<()> {
        match self.disk.inodes.get_mut(&inode) {
            Some(i) => {
                i.apply(op);
                Ok(())
            }
            None => Err(Error::internal(
                "power-loss fs: a live handle lost its inode",
            )),
        }
    }

    /// Creates the file at `path`, or truncates it (not durably) if it
    /// exists. Returns the inode and the generation a handle must carry
    /// (taken before the operation is counted, which may crash).
    fn create(&mut self, path: &Path) -> Result<(u64, u64)> {
        self.check_up()?;
        let generation = self.generation;
        let (dir, name) = self.parent_of(path)?;
        let existing = self
            .disk
            .dirs
            .get(&dir)
            .and_then(|d| d.live.get(&name).copied());
        let inode = match existing {
            Some(Node::File(id)) => {
                self.file_op(id, FileOp::SetLen(0))?;
                id
            }
            Some(Node::Dir(_)) => return Err(invalid(path, "is a directory")),
            None => {
                let id = self.disk.new_inode();
                self.dir_op(dir, DirOp::Insert(name, Node::File(id)));
                id
            }
        };
        self.counted(|| format!("create {}", path.display()));
        Ok((inode, generation))
    }
}

fn down_error() -> Error {
    Error::new(
        ErrorKind::Io,
        "simulated crash: this process's file system is gone",
    )
}

fn not_found(path: &Path) -> Error {
    Error::io(
        std::io::Error::from(std::io::ErrorKind::NotFound),
        format_args!("power-loss fs: {}", path.display()),
    )
}

fn invalid(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("power-loss fs: {} {why}", path.display()),
    )
}

/// The names below the root that `path` (absolute) spells, with `.` and
/// `..` resolved lexically.
fn components(path: &Path) -> Result<Vec<String>> {
    if !path.is_absolute() {
        return Err(invalid(path, "is not absolute"));
    }
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => match name.to_str() {
                Some(s) => out.push(s.to_owned()),
                None => return Err(invalid(path, "is not UTF-8")),
            },
        }
    }
    Ok(out)
}

fn normalized(path: &Path) -> Result<PathBuf> {
    let mut p = PathBuf::from("/");
    p.extend(components(path)?);
    Ok(p)
}

/// An in-memory file system that simulates power loss; see the module
/// documentation. Clones share one disk.
#[derive(Clone)]
pub struct PowerLossFs {
    state: Arc<Mutex<State>>,
}

impl Default for PowerLossFs {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PowerLossFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.state.lock();
        f.debug_struct("PowerLossFs")
            .field("mutations", &s.mutations)
            .field("crashes", &s.crashes)
            .field("down", &s.down)
            .finish_non_exhaustive()
    }
}

impl PowerLossFs {
    /// An empty disk holding only the root directory.
    pub fn new() -> Self {
        PowerLossFs {
            state: Arc::new(Mutex::new(State {
                disk: Disk::new(),
                generation: 0,
                down: false,
                locks: HashSet::new(),
                mutations: 0,
                armed: None,
                trace: VecDeque::new(),
                crashes: 0,
            })),
        }
    }

    /// This file system as `Options::fs` wants it (sharing this disk).
    pub fn shared(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.clone())
    }

    /// Cuts the power now. Until [`restart`](Self::restart), every call fails.
    pub fn power_cut(&self, cut: PowerCut) {
        self.state.lock().crash(Crash::PowerCut(cut));
    }

    /// Kills the process now (nothing written is lost). Until
    /// [`restart`](Self::restart), every call fails.
    pub fn kill(&self) {
        self.state.lock().crash(Crash::Kill);
    }

    /// Arms `crash` to happen right after the `n`-th mutating operation
    /// from now (`n >= 1`); the operation itself completes. Replaces any
    /// armed crash.
    pub fn crash_after(&self, n: u64, crash: Crash) {
        let mut s = self.state.lock();
        s.armed = Some((s.mutations + n.max(1), crash));
    }

    /// Disarms a crash armed by [`crash_after`](Self::crash_after).
    pub fn disarm(&self) {
        self.state.lock().armed = None;
    }

    /// A new process starts: calls work again (handles from before the
    /// crash stay dead).
    pub fn restart(&self) {
        self.state.lock().down = false;
    }

    /// Whether a crash happened and [`restart`](Self::restart) was not called yet.
    pub fn is_down(&self) -> bool {
        self.state.lock().down
    }

    /// Crashes so far (armed or direct).
    pub fn crashes(&self) -> u64 {
        self.state.lock().crashes
    }

    /// Mutating operations so far.
    pub fn mutations(&self) -> u64 {
        self.state.lock().mutations
    }

    /// The most recent mutating operations (and crashes), oldest first:
    /// what a failing test prints.
    pub fn trace(&self) -> Vec<String> {
        self.state.lock().trace.iter().cloned().collect()
    }

    /// The durable contents of the file at `path` (what a power cut that
    /// drops every unsynced operation would leave), if its entry is live.
    pub fn durable_contents(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let id = s.file_of(path).ok()?;
        s.disk.inodes.get(&id).map(|i| i.durable.clone())
    }
}

/// A file opened for writing through [`PowerLossFs`].
struct PowerLossFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
    path: PathBuf,
    /// Logical end: where the next append goes.
    len: u64,
    /// Created by `create_log`: durable appends pad to a block with zeros.
    log: bool,
}

impl PowerLossFile {
    fn write(&mut self, offset: u64, data: &[u8], what: &str) -> Result<()> {
        let mut s = self.state.lock();
        s.check_handle(self.generation)?;
        s.file_op(
            self.inode,
            FileOp::Write {
                offset,
                data: data.to_vec(),
            },
        )?;
        let path = &self.path;
        s.counted(|| {
            format!(
                "{what} {} bytes at {offset} to {}",
                data.len(),
                path.display()
            )
        });
        Ok(())
    }
}

impl WritableFile for PowerLossFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.write(self.len, data, "append")?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> Result<()> {
        let mut s = self.state.lock();
        s.check_handle(self.generation)?;
        match s.disk.inodes.get_mut(&self.inode) {
            Some(inode) => inode.sync(),
            None => {
                return Err(Error::internal(
                    "power-loss fs: a live handle lost its inode",
                ))
            }
        }
        let path = &self.path;
        s.counted(|| format!("sync_data {}", path.display()));
        Ok(())
    }

    /// Two steps (a write, then a sync), so a crash can fall between them
    /// and tear the write, as a power cut during a direct `O_DSYNC` write
    /// can. A log file's write is padded with zeros to the next block, as
    /// the direct path pads (the zeros land where the file holds zeros).
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        let end = self.len + data.len() as u64;
        let mut padded = data.to_vec();
        if self.log {
            let block_end = end.div_ceil(BLOCK) * BLOCK;
            padded.resize(padded.len() + (block_end - end) as usize, 0);
        }
        self.write(self.len, &padded, "durable append")?;
        self.len = end;
        self.sync_data()
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn preallocate(&mut self, len: u64) -> Result<()> {
        let zeros = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.write(self.len, &zeros, "preallocate")
    }
}

struct MappedCopy(Vec<u8>);

impl FileBytes for MappedCopy {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

struct PowerLossLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    generation: u64,
}

impl FileLock for PowerLossLock {}

impl Drop for PowerLossLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        // A crash already released the locks of the dead process; a new
        // process may hold this path by now.
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

impl PowerLossFs {
    fn open_file(
        &self,
        path: &Path,
        (inode, generation): (u64, u64),
        len: u64,
        log: bool,
    ) -> Box<dyn WritableFile> {
        Box::new(PowerLossFile {
            state: self.state.clone(),
            inode,
            generation,
            path: path.to_path_buf(),
            len,
            log,
        })
    }
}

impl FileSystem for PowerLossFs {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.check_up()?;
        let parts = components(path)?;
        let mut dir = ROOT;
        let mut created = false;
        for name in parts {
            let entry = s
                .disk
                .dirs
                .get(&dir)
                .and_then(|d| d.live.get(&name).copied());
            dir = match entry {
                Some(Node::Dir(id)) => id,
                Some(Node::File(_)) => return Err(invalid(path, "crosses a file")),
                None => {
                    let id = s.disk.new_dir();
                    s.dir_op(dir, DirOp::Insert(name, Node::Dir(id)));
                    created = true;
                    id
                }
            };
        }
        if created {
            s.counted(|| format!("create_dir_all {}", path.display()));
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let created = self.state.lock().create(path)?;
        Ok(self.open_file(path, created, 0, false))
    }

    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let created = self.state.lock().create(path)?;
        Ok(self.open_file(path, created, 0, true))
    }

    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let (opened, len) = {
            let mut s = self.state.lock();
            s.check_up()?;
            let generation = s.generation;
            let id = s.file_of(path)?;
            let len = s.disk.inodes.get(&id).map_or(0, |i| i.live.len() as u64);
            s.counted(|| format!("open_append {}", path.display()));
            ((id, generation), len)
        };
        Ok(self.open_file(path, opened, len, false))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        let s = self.state.lock();
        s.check_up()?;
        let id = s.file_of(path)?;
        Ok(s.disk
            .inodes
            .get(&id)
            .map(|i| i.live.clone())
            .unwrap_or_default())
    }

    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        Ok(Arc::new(MappedCopy(self.read(path)?)))
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        !s.down && components(path).is_ok_and(|c| s.disk.lookup(&c).is_some())
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let s = self.state.lock();
        s.check_up()?;
        let id = s.dir_of(dir)?;
        Ok(s.disk
            .dirs
            .get(&id)
            .map(|d| d.live.keys().cloned().collect())
            .unwrap_or_default())
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.check_up()?;
        let (from_dir, from_name) = s.parent_of(from)?;
        let (to_dir, to_name) = s.parent_of(to)?;
        let node = match s.disk.lookup(&components(from)?) {
            Some(node @ Node::File(_)) => node,
            Some(Node::Dir(_)) => return Err(invalid(from, "is a directory (not supported)")),
            None => return Err(not_found(from)),
        };
        if matches!(s.disk.lookup(&components(to)?), Some(Node::Dir(_))) {
            return Err(invalid(to, "is a directory"));
        }
        if from_dir == to_dir {
            s.dir_op(
                from_dir,
                DirOp::Rename {
                    from: from_name,
                    to: to_name,
                },
            );
        } else {
            // Two directories, two independent entries (durable separately).
            s.dir_op(to_dir, DirOp::Insert(to_name, node));
            s.dir_op(from_dir, DirOp::Remove(from_name));
        }
        s.counted(|| format!("rename {} -> {}", from.display(), to.display()));
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.check_up()?;
        s.file_of(path)?;
        let (dir, name) = s.parent_of(path)?;
        s.dir_op(dir, DirOp::Remove(name));
        s.counted(|| format!("remove {}", path.display()));
        Ok(())
    }

    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        let mut s = self.state.lock();
        s.check_up()?;
        let id = s.file_of(path)?;
        s.file_op(id, FileOp::SetLen(len))?;
        // Durable on return, as the trait promises (the OS version syncs).
        if let Some(inode) = s.disk.inodes.get_mut(&id) {
            inode.sync();
        }
        s.counted(|| format!("truncate {} to {len}", path.display()));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let mut s = self.state.lock();
        s.check_up()?;
        let id = s.dir_of(dir)?;
        if let Some(d) = s.disk.dirs.get_mut(&id) {
            d.sync();
        }
        s.counted(|| format!("sync_dir {}", dir.display()));
        Ok(())
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        let key = normalized(path)?;
        let generation = {
            let mut s = self.state.lock();
            s.check_up()?;
            if s.locks.contains(&key) {
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!("{} is locked by another process", path.display()),
                ));
            }
            // Like flock on a file opened with O_CREAT: the file appears
            // (not durably) if it was missing; its contents are untouched.
            if s.disk.lookup(&components(path)?).is_none() {
                let (dir, name) = s.parent_of(path)?;
                let id = s.disk.new_inode();
                s.dir_op(dir, DirOp::Insert(name, Node::File(id)));
            }
            s.locks.insert(key.clone());
            let generation = s.generation;
            s.counted(|| format!("lock {}", path.display()));
            generation
        };
        Ok(Box::new(PowerLossLock {
            state: self.state.clone(),
            path: key,
            generation,
        }))
    }
}
