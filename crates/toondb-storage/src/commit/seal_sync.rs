//! The fdatasync of a sealed WAL segment, run off the commit thread.
//!
//! A seal used to sync the old segment on the commit thread before it
//! created the next one, so every seal stalled writers for as long as the
//! disk took to write up to a memtable's worth of WAL (~20 ms for 4 MiB
//! here). Now the old segment is handed to a short-lived thread and the
//! next segment records where the old one ended (its predecessor record),
//! which is what lets replay treat a lost tail of a segment that was never
//! synced as unsynced data (docs/format-wal.md, *New segments*).
//!
//! The order that keeps replay's rule sound: nothing in a newer segment is
//! synced (a durable write, a preallocation, a close) before this sync
//! has finished, so a newer segment that shows a completed sync proves
//! that every older one was durable. [`SealSync::finish`] is how the
//! committer waits for it (for all of them: a few may run at once).

use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::io::WritableFile;
use crate::wal::WalWriter;

/// A sealed segment being synced.
pub(crate) struct SealSync {
    number: u64,
    outcome: Outcome,
}

enum Outcome {
    Running(JoinHandle<Result<()>>),
    /// The thread could not be started: the segment was not synced, and
    /// `finish` reports that (the engine then stops taking writes).
    Done(Result<()>),
}

impl SealSync {
    /// Starts syncing `wal` (then closing it) on a thread of its own.
    pub fn start(mut wal: WalWriter) -> SealSync {
        let number = wal.number();
        Self::spawn(number, move || wal.sync())
    }

    /// Starts syncing the segments an open replayed, oldest first, on a
    /// thread of their own: the open does not wait for them, and the
    /// segment it created names the last of them as its predecessor
    /// (recovery.rs). The files were opened by the caller, so a flush that
    /// deletes a replayed segment meanwhile does not fail the sync.
    pub fn start_replayed(segments: Vec<(u64, Box<dyn WritableFile>)>) -> SealSync {
        let number = segments.last().map_or(0, |(n, _)| *n);
        Self::spawn(number, move || {
            for (n, mut file) in segments {
                file.sync_data()
                    .map_err(|e| e.context(format_args!("syncing replayed WAL segment {n}")))?;
            }
            Ok(())
        })
    }

    fn spawn(number: u64, sync: impl FnOnce() -> Result<()> + Send + 'static) -> SealSync {
        // The closure owns what it syncs; if the spawn fails it is dropped
        // with the closure unsynced, and that failure is this sync's error.
        let spawned = std::thread::Builder::new()
            .name("toondb-walsync".to_owned())
            .spawn(sync);
        let outcome = match spawned {
            Ok(handle) => Outcome::Running(handle),
            Err(e) => Outcome::Done(Err(Error::io(
                e,
                format_args!("starting the sync of WAL segment {number}"),
            ))),
        };
        SealSync { number, outcome }
    }

    /// Waits for the sync; its error (the segment may have lost
    /// acknowledged writes) is the caller's to make a background error.
    pub fn finish(self) -> Result<()> {
        match self.outcome {
            Outcome::Done(r) => r,
            Outcome::Running(handle) => handle.join().unwrap_or_else(|_| {
                Err(Error::internal(format!(
                    "the sync of sealed WAL segment {} panicked",
                    self.number
                )))
            }),
        }
    }
}
