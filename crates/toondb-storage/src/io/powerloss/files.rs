//! The engine-facing side: [`FileSystem`] for [`PowerLossFs`], its
//! writable files, maps (copies) and locks.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::machine::{components, invalid, normalized, not_found, State};
use super::state::{DirOp, FileOp, Node, ROOT};
use super::{PowerLossFs, BLOCK};
use crate::error::{Error, ErrorKind, Result};
use crate::io::{FileBytes, FileLock, FileSystem, WritableFile};

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
