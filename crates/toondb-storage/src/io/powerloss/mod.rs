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

mod files;
mod machine;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use self::machine::State;
use self::state::Disk;
use super::FileSystem;

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
