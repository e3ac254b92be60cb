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
//! The order that keeps replay's rule sound: no sync that can make records
//! of a newer segment durable (a durable write, a preallocation, a close;
//! only its header is synced earlier, at its creation) runs before this
//! sync has finished, so a newer segment that shows a completed sync
//! proves that every older one was durable. [`SealSync::finish`] is how the
//! committer waits for it (for all of them: a few may run at once).
//!
//! Once a sync has finished, the committer records that in the live
//! segment (a segment-synced record, WAL format 4) no later than in the
//! next durable group, so that replay never mistakes later damage to the
//! synced segment (bit rot) for a lost unsynced tail and drops the newer
//! segments' acknowledged writes with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::io::WritableFile;
use crate::wal::{SegmentSynced, WalWriter};

/// A sealed segment being synced (or the segments an open replayed).
pub(crate) struct SealSync {
    number: u64,
    /// Each segment synced and its logical end when it was sealed (or
    /// replayed): what the sync covers, oldest first.
    covers: Vec<SegmentSynced>,
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
    /// A segment holding only its header is synced but not named in a
    /// segment-synced record (replay refuses one that claims no more than
    /// a header). Such a segment is sealed when a rotation's commit group
    /// wrote nothing (every member failed validation) and a flush seals the
    /// memtable right after.
    ///
    /// `pending` counts the segment until the sync has returned and the
    /// file is closed.
    pub fn start(mut wal: WalWriter, pending: &PendingSyncs) -> SealSync {
        let number = wal.number();
        let covers = [SegmentSynced {
            segment: number,
            end: wal.len(),
        }]
        .into_iter()
        .filter(claims_records)
        .collect();
        let mut counted = pending.add(1);
        Self::spawn(number, covers, move || {
            let result = wal.sync();
            drop(wal);
            counted.done(1);
            result
        })
    }

    /// Starts syncing the segments an open replayed, oldest first, on a
    /// thread of their own: the open does not wait for them, and the
    /// segment it created names the last of them as its predecessor
    /// (recovery.rs). The files were opened by the caller, so a flush that
    /// deletes a replayed segment meanwhile does not fail the sync. Each
    /// comes with where its records end, which the live segment records
    /// once the sync finished (segments holding no record are not named:
    /// a segment-synced record claims more than a header).
    ///
    /// `pending` counts each segment until its sync has returned and its
    /// file is closed (all that are left once one fails).
    pub fn start_replayed(
        segments: Vec<(SegmentSynced, Box<dyn WritableFile>)>,
        pending: &PendingSyncs,
    ) -> SealSync {
        let number = segments.last().map_or(0, |(s, _)| s.segment);
        let covers = segments
            .iter()
            .map(|(s, _)| *s)
            .filter(claims_records)
            .collect();
        let mut counted = pending.add(segments.len() as u64);
        Self::spawn(number, covers, move || {
            for (s, mut file) in segments {
                let result = file.sync_data();
                drop(file);
                // A failure leaves the rest of `segments` unsynced; the
                // guard's drop stops counting them.
                result.map_err(|e| {
                    e.context(format_args!("syncing replayed WAL segment {}", s.segment))
                })?;
                counted.done(1);
            }
            Ok(())
        })
    }

    fn spawn(
        number: u64,
        covers: Vec<SegmentSynced>,
        sync: impl FnOnce() -> Result<()> + Send + 'static,
    ) -> SealSync {
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
        SealSync {
            number,
            covers,
            outcome,
        }
    }

    /// Whether the sync has already finished successfully, without
    /// waiting for it (a failed one is left for [`SealSync::finish`] to
    /// report, where the committer already handles that error).
    pub fn finished_ok(&mut self) -> bool {
        if let Outcome::Running(handle) = &self.outcome {
            if !handle.is_finished() {
                return false;
            }
            let done = std::mem::replace(&mut self.outcome, Outcome::Done(Ok(())));
            self.outcome = Outcome::Done(join(self.number, done));
        }
        matches!(self.outcome, Outcome::Done(Ok(())))
    }

    /// Waits for the sync; its error (the segment may have lost
    /// acknowledged writes) is the caller's to make a background error.
    /// On success, what the live segment should record.
    pub fn finish(self) -> Result<Vec<SegmentSynced>> {
        join(self.number, self.outcome).map(|()| self.covers)
    }
}

/// How many WAL segments a background sync has been started for and not
/// finished (`Stats::pending_wal_syncs`): counted before the work is handed
/// to its thread, so there is no moment at which it is queued but not
/// counted, and no longer counted once the sync returned, whether it
/// succeeded or not (a failure is the committer's to report, when it
/// collects the outcome: `SealSync::finish`). Shared by the committer and
/// the sync threads; the stats read it without taking any lock.
#[derive(Clone, Debug, Default)]
pub(crate) struct PendingSyncs(Arc<AtomicU64>);

impl PendingSyncs {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Counts `n` segments until the returned guard says they are done or
    /// is dropped (also when the sync's thread could not be started, or
    /// the sync panicked: a stuck count would hang whoever waits for it).
    fn add(&self, n: u64) -> Counted {
        self.0.fetch_add(n, Ordering::SeqCst);
        Counted {
            pending: self.clone(),
            left: n,
        }
    }
}

/// Segments a sync thread still has to sync, in the count of
/// [`PendingSyncs`] until done or dropped.
struct Counted {
    pending: PendingSyncs,
    left: u64,
}

impl Counted {
    fn done(&mut self, n: u64) {
        let n = n.min(self.left);
        self.left -= n;
        self.pending.0.fetch_sub(n, Ordering::SeqCst);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let left = self.left;
        self.done(left);
    }
}

/// Whether a segment-synced record may name `s`: replay accepts only ends
/// past the header (a record claiming just a header says nothing, and the
/// format refuses it: docs/format-wal.md, *Segment-synced records*).
fn claims_records(s: &SegmentSynced) -> bool {
    s.end > crate::wal::SEGMENT_HEADER_LEN as u64
}

/// The outcome of segment `number`'s sync, waiting for it if it runs.
fn join(number: u64, outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Done(r) => r,
        Outcome::Running(handle) => handle.join().unwrap_or_else(|_| {
            Err(Error::internal(format!(
                "the sync of sealed WAL segment {number} panicked"
            )))
        }),
    }
}
