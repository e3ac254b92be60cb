//! The simulated machine around the disk: which "process" is alive (a
//! crash bumps the generation, so handles and locks of the dead process
//! stop working), held locks, the count of mutating operations (an armed
//! crash fires after the n-th), and a trace of recent operations.

use std::collections::{HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use super::state::{DirOp, Disk, FileOp, Node};
use super::{Crash, TRACE_LEN};
use crate::error::{Error, ErrorKind, Result};

pub(super) struct State {
    pub(super) disk: Disk,
    /// Bumped by every crash; handles and locks of older generations are dead.
    pub(super) generation: u64,
    /// Set by a crash, cleared by `restart`: the crashed process's
    /// remaining calls fail.
    pub(super) down: bool,
    /// Held locks, by normalized path.
    pub(super) locks: HashSet<PathBuf>,
    pub(super) mutations: u64,
    pub(super) armed: Option<(u64, Crash)>,
    pub(super) trace: VecDeque<String>,
    pub(super) crashes: u64,
}

impl State {
    pub(super) fn check_up(&self) -> Result<()> {
        if self.down {
            return Err(down_error());
        }
        Ok(())
    }

    pub(super) fn check_handle(&self, generation: u64) -> Result<()> {
        if self.down || generation != self.generation {
            return Err(down_error());
        }
        Ok(())
    }

    /// Counts a mutating operation that just happened, and fires an armed
    /// crash when its turn has come.
    pub(super) fn counted(&mut self, what: impl FnOnce() -> String) {
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

    pub(super) fn crash(&mut self, crash: Crash) {
        if let Crash::PowerCut(cut) = crash {
            self.disk.power_cut(&cut);
        }
        self.generation += 1;
        self.down = true;
        self.locks.clear();
        self.crashes += 1;
        self.trace.push_back(format!("-- {crash:?} --"));
    }

    pub(super) fn parent_of(&self, path: &Path) -> Result<(u64, String)> {
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

    pub(super) fn file_of(&self, path: &Path) -> Result<u64> {
        match self.disk.lookup(&components(path)?) {
            Some(Node::File(id)) => Ok(id),
            Some(Node::Dir(_)) => Err(invalid(path, "is a directory")),
            None => Err(not_found(path)),
        }
    }

    pub(super) fn dir_of(&self, path: &Path) -> Result<u64> {
        match self.disk.lookup(&components(path)?) {
            Some(Node::Dir(id)) => Ok(id),
            Some(Node::File(_)) => Err(invalid(path, "is not a directory")),
            None => Err(not_found(path)),
        }
    }

    pub(super) fn dir_op(&mut self, dir: u64, op: DirOp) {
        if let Some(d) = self.disk.dirs.get_mut(&dir) {
            d.apply(op);
        }
    }

    pub(super) fn file_op(&mut self, inode: u64, op: FileOp) -> Result<()> {
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
    pub(super) fn create(&mut self, path: &Path) -> Result<(u64, u64)> {
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

pub(super) fn down_error() -> Error {
    Error::new(
        ErrorKind::Io,
        "simulated crash: this process's file system is gone",
    )
}

pub(super) fn not_found(path: &Path) -> Error {
    Error::io(
        std::io::Error::from(std::io::ErrorKind::NotFound),
        format_args!("power-loss fs: {}", path.display()),
    )
}

pub(super) fn invalid(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        format!("power-loss fs: {} {why}", path.display()),
    )
}

/// The names below the root that `path` (absolute) spells, with `.` and
/// `..` resolved lexically.
pub(super) fn components(path: &Path) -> Result<Vec<String>> {
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

pub(super) fn normalized(path: &Path) -> Result<PathBuf> {
    let mut p = PathBuf::from("/");
    p.extend(components(path)?);
    Ok(p)
}
