//! The maintenance thread: the one scheduler of background work. Its jobs,
//! in priority order: checkpoint a rotated WAL segment (checkpoint.rs;
//! they also run between a flush's and a compaction's outputs); flush the
//! oldest sealed memtable; run a manual compaction
//! (`Database::compact`); run the automatic compaction with the highest
//! score. It owns the manifest, so every change to the set of
//! tables is one synced manifest edit made here, followed by one swap of
//! the read state.
//!
//! Failures: a failed flush or manifest edit is a background error (writes
//! stop; reads go on). A compaction that fails while writing its outputs
//! changes nothing: its outputs are deleted, the error is kept for
//! `stats()` and for writers stalled on compaction debt, and automatic
//! compaction retries with exponential backoff (see docs/compaction.md).

mod checkpoint;
mod flush;

use std::collections::VecDeque;
use std::ops::Bound;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::compaction::job::JobContext;
use crate::compaction::{manual_output_level, pick_manual, run_job, Compaction, Policy};
use crate::engine::{Engine, LsmState};
use crate::error::{Error, ErrorKind, Result};
use crate::lsm::{TableFile, NUM_LEVELS};
use crate::stats::Counters;
use crate::version::{Manifest, ManifestState, VersionEdit};

pub(crate) use checkpoint::{CheckpointRequest, CheckpointTable};
pub(crate) use flush::flush_oldest;

/// First delay before an automatic compaction is retried after a failure;
/// it doubles per consecutive failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long after an open automatic compaction waits before it starts.
/// An open often leaves compaction debt (a load that outran compaction, the
/// flush of what the open replayed), and a compaction started at once reads
/// its inputs while the application makes its first reads: engine-only,
/// open + first read of a 1 GiB database with nothing to replay took
/// 45-52 ms cold with it and 24-27 ms without (docs/performance.md,
/// "Reopen"). Flushes and manual compactions do not wait.
const OPEN_COMPACTION_GRACE: Duration = Duration::from_millis(200);

/// How often an idle maintenance thread looks whether point reads have
/// paid for compacting level 0 below its trigger (`Policy::pick_l0_by_reads`).
const L0_READ_CHARGE_POLL: Duration = Duration::from_millis(500);
const L0_READ_CHARGE_POLL_MAX: Duration = Duration::from_secs(8);

/// The manifest an open hands to the maintenance thread.
pub(crate) enum OpenManifest {
    /// Written and named by CURRENT before the open returned (a new
    /// database: it must exist once `open` returns).
    Live(Manifest),
    /// The fresh manifest snapshot the open computed, for this thread to
    /// write and switch CURRENT to before anything else, so that the open
    /// returns without waiting for those syncs.
    Pending { number: u64, state: ManifestState },
}

/// A `Database::compact_range` waiting for the maintenance thread.
pub(crate) struct ManualRequest {
    pub lower: Bound<Vec<u8>>,
    pub upper: Bound<Vec<u8>>,
    pub done: Sender<Result<()>>,
}

/// State shared with the maintenance thread, guarded by one mutex so that
/// waits on its condition variables cannot miss a wake-up.
#[derive(Default)]
pub(crate) struct MaintenanceState {
    pub shutdown: bool,
    /// Set by the thread as it exits; no request is accepted after it.
    pub stopped: bool,
    /// Id of the newest memtable whose contents are in a table file.
    pub flushed_id: u64,
    pub manual: VecDeque<ManualRequest>,
    /// Rotated WAL segments to checkpoint, oldest first.
    pub checkpoints: VecDeque<CheckpointRequest>,
    /// The last compaction failure, cleared by the next success. Writers
    /// stalled on compaction debt fail with it instead of waiting.
    pub compaction_error: Option<Error>,
    /// After a failed compaction, automatic compactions wait until then
    /// (backoff). Shared, not the thread's own: `stats()` must not report a
    /// level 0 due by reads as busy while the thread is only backing off,
    /// or waiting for idle would last as long as the failures do.
    pub retry_at: Option<Instant>,
    /// The thread is running a job or about to pick one (false only while
    /// it waits for work). Starts true: a new engine's thread has not looked
    /// for work yet.
    pub busy: bool,
}

enum Job {
    Flush,
    Checkpoint(CheckpointRequest),
    Manual(ManualRequest),
    Auto(Compaction),
}

pub(crate) struct MaintenanceThread {
    engine: Arc<Engine>,
    manifest: Manifest,
    policy: Policy,
    /// Per level, the largest key of the last table compacted out of it.
    pointers: Vec<Vec<u8>>,
    failures: u32,
    /// Until then (`OPEN_COMPACTION_GRACE` after the open) automatic
    /// compaction is held back.
    grace_until: Option<Instant>,
    /// Files the open found obsolete (flushed WAL segments, stale
    /// manifests, tables a crashed job left), deleted by this thread first
    /// thing: unlinking them took tens of milliseconds of an open on a busy
    /// disk, and nothing the first read needs depends on them.
    garbage: Vec<PathBuf>,
    /// The vain level-0 probes seen at the last look and the wait before
    /// the next one (`L0_READ_CHARGE_POLL`, doubled up to
    /// `L0_READ_CHARGE_POLL_MAX` while no read adds to the count).
    l0_look: (u64, Duration),
}

impl MaintenanceThread {
    pub fn new(engine: Arc<Engine>, manifest: Manifest) -> Self {
        let policy = Policy::new(&engine.options);
        MaintenanceThread {
            engine,
            manifest,
            policy,
            pointers: vec![Vec::new(); NUM_LEVELS],
            failures: 0,
            grace_until: Some(Instant::now() + OPEN_COMPACTION_GRACE),
            garbage: Vec::new(),
            l0_look: (0, L0_READ_CHARGE_POLL),
        }
    }

    /// Files to delete when the thread starts; they must be obsolete in
    /// the state the (already durable) manifest records.
    pub fn with_garbage(mut self, garbage: Vec<PathBuf>) -> Self {
        self.garbage = garbage;
        self
    }

    /// The thread's body after an open: first the manifest switch the open
    /// left to it (docs/architecture.md, *Open*), then the garbage the open
    /// found, then jobs. Until the switch is durable, CURRENT still names
    /// the manifest the open read, whose checkpoint segment and every
    /// segment after it are still on disk (nothing is deleted before the
    /// switch), so a power cut meanwhile recovers as if the open had not
    /// happened, plus whatever was made durable in the new segment.
    pub fn switch_then_run(engine: Arc<Engine>, manifest: OpenManifest, garbage: Vec<PathBuf>) {
        let created = match manifest {
            OpenManifest::Live(manifest) => Ok(manifest),
            OpenManifest::Pending { number, state } => catch_unwind(AssertUnwindSafe(|| {
                Manifest::create(engine.fs.clone(), &engine.dir, number, state)
            }))
            .unwrap_or_else(|_| Err(Error::internal("the manifest switch panicked"))),
        };
        match created {
            Ok(manifest) => {
                // `Manifest::create` ends with a directory sync.
                engine.names_synced();
                MaintenanceThread::new(engine, manifest)
                    .with_garbage(garbage)
                    .run();
            }
            Err(e) => {
                // Writes stop; the directory still opens as it was before
                // this open (plus the new segment's acknowledged writes).
                engine.set_bg_error(e.context("switching to the manifest written at open"));
                Self::stopped(&engine);
            }
        }
    }

    pub fn run(mut self) {
        // A failed delete only wastes space (the next open retries it).
        for path in std::mem::take(&mut self.garbage) {
            let _ = self.engine.fs.remove(&path);
        }
        while let Some(job) = self.next_job() {
            let outcome = catch_unwind(AssertUnwindSafe(|| self.run_job(job)));
            if outcome.is_err() {
                self.engine
                    .set_bg_error(Error::internal("the maintenance thread panicked"));
            }
        }
        Self::stopped(&self.engine);
    }

    /// Marks the thread gone and fails what waits for it.
    fn stopped(engine: &Engine) {
        let mut m = engine.maintenance.lock();
        m.stopped = true;
        // A request queued between `next_job` giving up and here marked
        // the thread busy (`Engine::mark_busy`); it will never run it.
        m.busy = false;
        let err = engine.bg_error().unwrap_or_else(Error::closed);
        for req in m.manual.drain(..) {
            let _ = req.done.send(Err(err.clone()));
        }
        engine.flush_done.notify_all();
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Flush => {
                if let Err(err) = flush_oldest(&self.engine, &mut self.manifest) {
                    // Writes stop (see Engine::bg_error); the sealed memtable
                    // stays readable and its WAL segments stay on disk, so
                    // nothing acknowledged is lost.
                    self.engine.set_bg_error(err.context("flushing a memtable"));
                }
            }
            Job::Checkpoint(request) => {
                // Counted, or a background error already: the segment stays
                // and later requests of its memtable are skipped.
                let _ = checkpoint::checkpoint(&self.engine, &mut self.manifest, request);
            }
            Job::Manual(req) => {
                let result = self.run_manual(&req);
                let _ = req.done.send(result);
            }
            Job::Auto(c) => {
                let _ = self.run_compaction(c);
            }
        }
    }

    /// Waits for work; `None` at shutdown or after a background error.
    fn next_job(&mut self) -> Option<Job> {
        let engine = self.engine.clone();
        let mut m = engine.maintenance.lock();
        // Busy until this finds nothing to do; a job that finishes comes
        // straight back here, so `busy` never reads false between a job
        // and the one it leads to (stats: `maintenance_busy`).
        loop {
            // Also after a timed wait ran out, which nothing marked.
            m.busy = true;
            if m.shutdown || engine.bg_error().is_some() {
                m.busy = false;
                return None;
            }
            let state = engine.state();
            // Checkpoints first: each is at most about `wal_size_limit`
            // of work, and a flush runs the ones queued meanwhile as it
            // goes (checkpoint.rs, *Order*).
            let log_number = self.manifest.state().log_number;
            if let Some(request) = checkpoint::next_request(&mut m.checkpoints, &state, log_number)
            {
                return Some(Job::Checkpoint(request));
            }
            if !state.imms.is_empty() {
                return Some(Job::Flush);
            }
            if let Some(req) = m.manual.pop_front() {
                return Some(Job::Manual(req));
            }
            let now = Instant::now();
            let waiting = m.retry_at.is_some_and(|t| now < t);
            if engine.options.auto_compaction && !waiting {
                let picked = self
                    .policy
                    .pick(&state.levels, &self.pointers)
                    .or_else(|| self.policy.pick_l0_by_reads(&state.levels));
                if let Some(c) = picked {
                    match self.grace_until.filter(|&t| now < t) {
                        Some(t) => {
                            // Still busy (`stats().maintenance_busy`): a
                            // compaction is due, only held back.
                            engine.work_ready.wait_until(&mut m, t);
                            continue;
                        }
                        None => return Some(Job::Auto(c)),
                    }
                }
            }
            m.busy = false;
            // Level 0 below its trigger may yet be paid for by reads, which
            // do not wake this thread: look again now and then.
            let reads_may_pay = engine.options.auto_compaction
                && !state.levels.level(0).is_empty()
                && !state.levels.l0_due_by_reads();
            let until = match m.retry_at {
                Some(t) if waiting => Some(t),
                _ if reads_may_pay => Some(now + self.next_l0_look(&state.levels)),
                _ => None,
            };
            match until {
                Some(t) => {
                    engine.work_ready.wait_until(&mut m, t);
                }
                None => engine.work_ready.wait(&mut m),
            }
        }
    }

    /// How long to wait before looking at level 0's read charge again: a
    /// database nobody reads wakes this thread ever more rarely.
    fn next_l0_look(&mut self, levels: &crate::lsm::Levels) -> Duration {
        let count = levels.l0_vain_probes();
        let (last, wait) = self.l0_look;
        let wait = if count == last {
            (wait * 2).min(L0_READ_CHARGE_POLL_MAX)
        } else {
            L0_READ_CHARGE_POLL
        };
        self.l0_look = (count, wait);
        wait
    }

    /// Compacts everything in the request's range into the bottom level.
    fn run_manual(&mut self, req: &ManualRequest) -> Result<()> {
        let bound = |b: &Bound<Vec<u8>>| match b {
            Bound::Included(k) | Bound::Excluded(k) => Some(k.clone()),
            Bound::Unbounded => None,
        };
        let (lo, hi) = (bound(&req.lower), bound(&req.upper));
        if let (Some(l), Some(h)) = (&lo, &hi) {
            if l > h {
                return Ok(()); // an empty range
            }
        }
        let levels = self.engine.state().levels.clone();
        match pick_manual(&levels, lo.as_deref(), hi.as_deref()) {
            Some(c) => self.run_compaction(c),
            None => Ok(()),
        }
    }

    /// Runs and installs one compaction. Errors are recorded (stats,
    /// stalled writers, backoff) before they are returned.
    fn run_compaction(&mut self, c: Compaction) -> Result<()> {
        let result = self.compact(&c);
        let mut m = self.engine.maintenance.lock();
        match &result {
            Ok(()) => {
                m.compaction_error = None;
                self.failures = 0;
                m.retry_at = None;
            }
            Err(e) if e.kind() == ErrorKind::Closed => {}
            Err(e) => {
                Counters::add(&self.engine.counters.compaction_errors, 1);
                m.compaction_error = Some(e.clone());
                self.failures = self.failures.saturating_add(1);
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << self.failures.min(10))
                    .min(MAX_BACKOFF);
                m.retry_at = Some(Instant::now() + backoff);
            }
        }
        // Stalled writers re-check the level-0 count and pending bytes.
        self.engine.flush_done.notify_all();
        result
    }

    fn compact(&mut self, c: &Compaction) -> Result<()> {
        let engine = self.engine.clone();
        if let Some(last) = c.inputs.first() {
            if let Some(max) = last.1.iter().map(|t| t.largest()).max() {
                if let Some(p) = self.pointers.get_mut(last.0) {
                    *p = max.to_vec();
                }
            }
        }
        if c.is_trivial_move() {
            return self.install(c, Vec::new(), 0);
        }
        let levels = engine.state().levels.clone();
        let (points, visible) = {
            let mut visible = 0;
            let points = engine.snapshots.read_points(|| {
                visible = engine.visible_ts();
                visible
            });
            (points, visible)
        };
        let cancelled = || engine.maintenance.lock().shutdown;
        let manifest = &mut self.manifest;
        let mut between = || -> Result<()> {
            // Flushes come first even in the middle of a compaction, and
            // checkpoints too (they bound the WAL a reopen replays). A
            // flush failure is a background error, and it stops this job
            // too.
            while flush_oldest(&engine, manifest)
                .inspect_err(|e| engine.set_bg_error(e.clone().context("flushing a memtable")))?
            {
            }
            checkpoint::run_pending(&engine, manifest);
            match engine.bg_error() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        };
        let mut ctx = JobContext {
            engine: &engine,
            levels: &levels,
            points: &points,
            cancelled: &cancelled,
            between_outputs: &mut between,
            partition_of: crate::columnar::output_partition,
        };
        let out = run_job(&mut ctx, c).map_err(|e| {
            if e.kind() == ErrorKind::Closed {
                e
            } else {
                e.context(format_args!(
                    "compacting {} tables into level {}",
                    c.input_numbers().len(),
                    c.output_level
                ))
            }
        })?;
        Counters::add(&engine.counters.compaction_bytes_read, out.bytes_read);
        Counters::add(&engine.counters.compaction_bytes_written, out.bytes_written);
        if c.manual {
            // Only this thread changes levels 1 and deeper, so the state now
            // is the one the merge started from, plus level-0 flushes.
            let written = out.tables.iter().map(|t| t.file_size()).sum();
            let levels = engine.state().levels.clone();
            let placed = Compaction {
                output_level: manual_output_level(&self.policy, &levels, c, written),
                ..c.clone()
            };
            return self.install(&placed, out.tables, visible);
        }
        self.install(c, out.tables, visible)
    }

    /// One synced manifest edit (outputs added, inputs removed; a trivial
    /// move re-adds its input at the new level), then one swap of the read
    /// state, then the inputs are marked obsolete: their files go when the
    /// last reader drops them.
    fn install(
        &mut self,
        c: &Compaction,
        outputs: Vec<Arc<TableFile>>,
        visible: u64,
    ) -> Result<()> {
        let engine = &self.engine;
        let removed = c.input_numbers();
        let added: Vec<(usize, Arc<TableFile>)> = if c.is_trivial_move() {
            c.input_tables()
                .map(|t| (c.output_level, t.clone()))
                .collect()
        } else {
            outputs
                .iter()
                .map(|t| (c.output_level, t.clone()))
                .collect()
        };
        let edit = VersionEdit {
            add_tables: added
                .iter()
                .map(|(level, t)| {
                    let mut meta = t.meta().clone();
                    meta.level = *level as u32;
                    meta
                })
                .collect(),
            remove_tables: removed.clone(),
            next_file_number: Some(engine.next_file_number.load(Ordering::Relaxed)),
            ..VersionEdit::default()
        };
        if let Err(e) = self.manifest.apply(&edit) {
            // The edit may or may not be on disk, so every file it names
            // must stay (outputs are not marked obsolete), and this manifest
            // takes no more edits: a background error, like a failed flush.
            let e = e.context("recording a compaction in the manifest");
            engine.set_bg_error(e.clone());
            return Err(e);
        }
        engine.install(|s| {
            // Under the state lock, so `stats()` sees a replaced table's
            // reads either in the live set or in the retired totals.
            if !c.is_trivial_move() {
                for t in c.input_tables() {
                    retire_read_counters(engine, t.counters());
                }
            }
            LsmState {
                mem: s.mem.clone(),
                imms: s.imms.clone(),
                levels: s.levels.with_changes(&removed, &added),
                checkpoints: s.checkpoints.clone(),
                compacted_ts: s.compacted_ts.max(visible),
            }
        });
        let moved_in: u64 = c
            .inputs
            .iter()
            .filter(|(level, _)| *level < c.output_level)
            .flat_map(|(_, tables)| tables.iter().map(|t| t.file_size()))
            .sum();
        let written: u64 = outputs.iter().map(|t| t.file_size()).sum();
        if let (Some(m), Some(w)) = (
            engine.counters.level_moved_in.get(c.output_level),
            engine.counters.level_written.get(c.output_level),
        ) {
            Counters::add(m, moved_in);
            Counters::add(w, written);
        }
        if c.is_trivial_move() {
            Counters::add(&engine.counters.trivial_moves, 1);
        } else {
            Counters::add(&engine.counters.compactions, 1);
            for t in c.input_tables() {
                t.mark_obsolete();
            }
        }
        // The compaction is installed; failing to start a fresh manifest
        // from here on is a background error but does not undo it.
        if let Err(e) = flush::rewrite_manifest_if_large(engine, &mut self.manifest) {
            engine.set_bg_error(e.context("rewriting the manifest"));
        }
        Ok(())
    }
}

/// Keeps a replaced table's read counters in the engine's totals.
fn retire_read_counters(engine: &Engine, t: &crate::sstable::TableCounters) {
    use std::sync::atomic::Ordering::Relaxed;
    let c = &engine.counters;
    Counters::add(&c.retired_table_bytes_read, t.bytes_read.load(Relaxed));
    Counters::add(
        &c.retired_data_blocks_read,
        t.data_block_reads.load(Relaxed),
    );
    Counters::add(&c.retired_bloom_checked, t.bloom_checked.load(Relaxed));
    Counters::add(&c.retired_bloom_useful, t.bloom_useful.load(Relaxed));
    Counters::add(&c.retired_hash_checked, t.hash_checked.load(Relaxed));
    Counters::add(&c.retired_hash_useful, t.hash_useful.load(Relaxed));
}
