//! What an open relied on without making it durable itself: the manifest
//! switch (fresh manifest, CURRENT, directory sync) runs on the
//! maintenance thread after `open` returns (docs/architecture.md, *Open*).
//!
//! Two things wait for that switch:
//! - the manifest the open read. Its last edit may be only in the page
//!   cache (a process killed between a flush's edit append and its
//!   fdatasync), yet the open serves the tables that edit lists and
//!   replayed only the WAL after its checkpoint. The segment the edit made
//!   redundant may never have been synced either, and nothing in the WAL
//!   this engine writes links back to it (its new segment names only the
//!   segments replay read as its predecessors). So this engine appends no
//!   record to the WAL before that manifest is durable: even unsynced, a
//!   record can reach the disk by writeback (or by a later segment sync),
//!   and a power cut would then keep it and lose the earlier writes of the
//!   skipped segment with the edit, a hole in commit order
//!   (tests/powerloss_open_manifest.rs).
//! - the directory entry of the WAL segment the open created: a record in
//!   it is durable only once its name is.
//!
//! Whichever comes first, the switch or a write that needs them, makes
//! them durable; the flags say what is still owed. Callers that race may
//! both sync (harmless); a flag is cleared only after its sync succeeded,
//! so whoever sees it clear knows the sync is done.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::Result;
use crate::io::FileSystem;

pub(crate) struct OpenDurability {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    /// The manifest the open read (`None` for a new database, whose first
    /// manifest the open wrote and named itself).
    read_manifest: Option<PathBuf>,
    manifest_unsynced: AtomicBool,
    dir_unsynced: AtomicBool,
}

impl OpenDurability {
    pub fn new(fs: Arc<dyn FileSystem>, dir: PathBuf, read_manifest: Option<PathBuf>) -> Self {
        let owed = read_manifest.is_some();
        OpenDurability {
            fs,
            dir,
            read_manifest,
            manifest_unsynced: AtomicBool::new(owed),
            dir_unsynced: AtomicBool::new(owed),
        }
    }

    /// Makes the manifest the open read durable. Called before every WAL
    /// group is appended (an atomic load once done).
    pub fn ensure_manifest(&self) -> Result<()> {
        if !self.manifest_unsynced.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(path) = &self.read_manifest {
            match self.fs.open_append(path) {
                Ok(mut file) => file.sync_data(),
                // Only a successful switch removes it, after its successor
                // and CURRENT were durable.
                Err(_) if !self.fs.exists(path) => Ok(()),
                Err(e) => Err(e),
            }
            .map_err(|e| e.context(format_args!("syncing {}, read by the open", path.display())))?;
        }
        self.manifest_unsynced.store(false, Ordering::Release);
        Ok(())
    }

    /// Whether [`ensure_manifest`](Self::ensure_manifest) would sync.
    pub fn manifest_owed(&self) -> bool {
        self.manifest_unsynced.load(Ordering::Acquire)
    }

    /// [`ensure_manifest`](Self::ensure_manifest), then the directory
    /// entries of the files the open created. Called before a durable
    /// commit and a close.
    pub fn ensure_all(&self) -> Result<()> {
        self.ensure_manifest()?;
        if self.dir_unsynced.load(Ordering::Acquire) {
            self.fs.sync_dir(&self.dir).map_err(|e| {
                e.context("syncing the directory of the WAL segment the open created")
            })?;
            self.dir_unsynced.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// The open's manifest switch finished (its successor manifest,
    /// CURRENT and the directory are durable).
    pub fn switched(&self) {
        self.manifest_unsynced.store(false, Ordering::Release);
        self.dir_unsynced.store(false, Ordering::Release);
    }
}
