//! Group commit: the one place that orders writes. The `Committer` gives
//! each request of a group a commit timestamp, writes the whole group to
//! the WAL in one write, fsyncs once when any member asked for durability,
//! applies the group to the memtable, publishes the new visible timestamp,
//! and only then completes every member. The commit thread (thread.rs)
//! feeds it groups from a bounded channel; an idle engine lets a caller
//! commit on its own thread (`try_commit_inline`).

mod seal_sync;
mod thread;

use std::collections::{BTreeSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use thread::CommitThread;

/// Name of the commit thread; a stall on compaction debt only ever blocks it.
pub(crate) const COMMIT_THREAD_NAME: &str = "toondb-commit";

use crate::batch::WriteBatch;
use crate::engine::{Engine, LsmState};
use crate::error::{Error, ErrorKind, Result};
use crate::key::Timestamp;
use crate::memtable::Memtable;
use crate::stats::Counters;
use crate::txn::ConflictCheck;
use crate::wal::{
    begin_batch_frame, encode_segment_synced, finish_batch_frame, Predecessor, SegmentSynced,
    WalWriter,
};
pub(crate) use seal_sync::PendingSyncs;
use seal_sync::SealSync;

/// Commits `batch` on the calling thread when that is cheap and cannot
/// reorder anything: no request is queued or being committed, and the
/// memtable has room without sealing or slowing down. Otherwise the batch
/// comes back untouched, to be submitted. This saves the two thread hops of
/// the commit thread when the engine is idle.
///
/// `sync` asks for an fsync before returning. Only a caller that would
/// block for the result anyway (the Rust blocking API) may pass it: a
/// caller on an event loop must submit durable writes instead, so that no
/// fsync runs on its thread. A transaction's `check` is validated here just
/// as on the commit thread.
pub(crate) fn try_commit_inline(
    engine: &Engine,
    batch: WriteBatch,
    check: Option<Box<ConflictCheck>>,
    sync: bool,
) -> std::result::Result<Result<Timestamp>, (WriteBatch, Option<Box<ConflictCheck>>)> {
    let Some(mut guard) = engine.committer.try_lock() else {
        return Err((batch, check));
    };
    let Some(c) = guard.as_mut() else {
        return Err((batch, check));
    };
    // Until the open's manifest is durable, the first group syncs it
    // (open_durability.rs): an fsync that must not run on an event loop.
    if engine.queued.load(Ordering::Acquire) != 0
        || !c.has_room(engine)
        || engine.open_durability.manifest_owed()
    {
        return Err((batch, check));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let done = Completion::new(move |r| {
        let _ = tx.send(r);
    });
    let request = Request { batch, check, done };
    if catch_unwind(AssertUnwindSafe(|| c.commit(engine, vec![request], sync))).is_err() {
        // The commit's own failure (as on the commit thread, thread.rs).
        let err = Error::internal("a commit panicked");
        engine.set_commit_error(err.clone());
        return Ok(Err(err));
    }
    Ok(rx.try_recv().unwrap_or_else(|_| Err(Error::closed())))
}

/// Most requests written in one group, and most bytes, so one huge queue
/// does not delay the first member's acknowledgement without bound.
const MAX_GROUP_LEN: usize = 1024;
const MAX_GROUP_BYTES: usize = 8 << 20;
/// Largest group (in operations) whose members get an early notice: about
/// the number of memtable inserts (~0.4 µs each here) that fit in the time
/// an idle thread takes to wake up.
const NOTICE_MAX_OPS: usize = 128;
/// Background syncs of sealed WAL segments that may run at once; a seal
/// beyond that waits for the oldest.
const MAX_SEALED_SYNCS: usize = 4;
/// Delay per commit group while the flush backlog is one short of a stall.
const SLOWDOWN_DELAY: std::time::Duration = std::time::Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Debt {
    None,
    Slow,
    Stop,
}

/// How far compaction is behind, against the (sanitized) thresholds. Off
/// without automatic compaction, which is the only thing that pays it.
fn compaction_debt(engine: &Engine, state: &LsmState) -> Debt {
    let o = &engine.options;
    if !o.auto_compaction {
        return Debt::None;
    }
    let l0 = state.levels.level(0).len();
    let pending = crate::compaction::Policy::new(o).pending_bytes(&state.levels);
    let over = |limit: u64| limit != 0 && pending >= limit;
    if l0 >= o.l0_stop_writes || over(o.pending_compaction_bytes_stop) {
        Debt::Stop
    } else if l0 >= o.l0_slowdown_writes || over(o.pending_compaction_bytes_slowdown) {
        Debt::Slow
    } else {
        Debt::None
    }
}

/// A callback that is always called exactly once: by `complete`, or on drop
/// with a `Closed` error (a request still queued when the engine stopped).
pub struct Completion<T> {
    callback: Option<Box<dyn FnOnce(Result<T>) + Send>>,
    /// Called (at most once) when only quick in-memory work remains before
    /// `callback`; see `Database::submit_with_notice`.
    notice: Option<Box<dyn FnOnce() + Send>>,
}

impl<T> Completion<T> {
    pub fn new(callback: impl FnOnce(Result<T>) + Send + 'static) -> Self {
        Completion {
            callback: Some(Box::new(callback)),
            notice: None,
        }
    }

    pub fn with_notice(mut self, notice: impl FnOnce() + Send + 'static) -> Self {
        self.notice = Some(Box::new(notice));
        self
    }

    /// Tells the waiter that the outcome is moments away.
    fn notify(&mut self) {
        if let Some(notice) = self.notice.take() {
            let _ = catch_unwind(AssertUnwindSafe(notice));
        }
    }

    /// Drops the completion without calling it, for a caller that hands
    /// the outcome back as a return value instead: the callback must not
    /// also hear of it (dropping would report `Closed`).
    pub fn disarm(mut self) {
        self.callback = None;
        self.notice = None;
    }

    pub fn complete(mut self, result: Result<T>) {
        if let Some(callback) = self.callback.take() {
            // A panicking callback (a bug in the caller) must not take the
            // commit thread down with it.
            let _ = catch_unwind(AssertUnwindSafe(|| callback(result)));
        }
    }
}

impl<T> Drop for Completion<T> {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| callback(Err(Error::closed()))));
        }
    }
}

pub(crate) enum CommitMsg {
    Write {
        batch: WriteBatch,
        sync: bool,
        /// Present for transactions: validated before a timestamp is given.
        check: Option<Box<ConflictCheck>>,
        done: Completion<Timestamp>,
    },
    /// Seal the active memtable (if it holds anything) so it gets flushed;
    /// completes with the id of the newest memtable that must be flushed.
    Seal { done: Completion<u64> },
}

impl CommitMsg {
    fn is_durable(&self) -> bool {
        matches!(self, CommitMsg::Write { sync: true, .. })
    }

    fn bytes(&self) -> usize {
        match self {
            CommitMsg::Write { batch, .. } => batch.byte_size(),
            CommitMsg::Seal { .. } => 0,
        }
    }
}

/// The state only one committer may touch at a time: the WAL writer, the
/// timestamp counter and the encoding buffer. It lives behind a mutex in
/// the engine so that, besides the commit thread, a caller may commit a
/// cheap write itself when nothing is queued (see `try_commit_inline`).
///
/// It holds no handle to the engine (the engine owns it): every method
/// that needs the engine is handed it by the caller, so the two form no
/// reference cycle.
pub(crate) struct Committer {
    wal: WalWriter,
    /// Sealed segments whose background sync may still run, oldest first.
    sealed_syncs: VecDeque<SealSync>,
    /// The engine's count of segments those syncs have not finished
    /// (`Stats::pending_wal_syncs`).
    pending_syncs: PendingSyncs,
    /// Sealed segments whose sync finished but that the live segment does
    /// not say so yet (segment-synced records, written with the next group).
    synced_unrecorded: Vec<SegmentSynced>,
    /// The first background sync that failed: from then on the live
    /// segment is never synced or marked (rule 1: its sync would prove
    /// the older segment durable, and replay would call a power cut's
    /// loss there corruption).
    sync_failed: Option<Error>,
    last_ts: Timestamp,
    next_memtable_id: u64,
    frames: Vec<u8>,
}

struct Request {
    batch: WriteBatch,
    check: Option<Box<ConflictCheck>>,
    done: Completion<Timestamp>,
}

struct Pending {
    batch: WriteBatch,
    ts: Timestamp,
    done: Completion<Timestamp>,
}

impl Committer {
    /// A committer whose first segment follows segments an open replayed
    /// without syncing them (`replayed`, oldest first, opened for the
    /// sync): they are synced in the background, and nothing in the new
    /// segment is synced before that finished, as after a seal. Every
    /// background sync is counted in `pending_syncs` while it runs.
    pub fn new(
        wal: WalWriter,
        last_ts: Timestamp,
        next_memtable_id: u64,
        replayed: Vec<(SegmentSynced, Box<dyn crate::io::WritableFile>)>,
        pending_syncs: PendingSyncs,
    ) -> Self {
        let mut sealed_syncs = VecDeque::new();
        if !replayed.is_empty() {
            sealed_syncs.push_back(SealSync::start_replayed(replayed, &pending_syncs));
        }
        Committer {
            wal,
            sealed_syncs,
            pending_syncs,
            synced_unrecorded: Vec::new(),
            sync_failed: None,
            last_ts,
            next_memtable_id,
            frames: Vec::with_capacity(64 << 10),
        }
    }

    /// The live WAL segment's number and logical end: every frame that
    /// starts below that end was written whole (`Database::verify`).
    pub(crate) fn wal_position(&self) -> (u64, u64) {
        (self.wal.number(), self.wal.len())
    }

    /// fdatasync of the current WAL segment, recorded in it by a sync point:
    /// what a handle that closes while others stay open needs (see
    /// `Engine::sync_wal`, and `WalWriter::sync_and_mark` for why the mark).
    pub(crate) fn sync_wal(&mut self, engine: &Engine) -> Result<()> {
        self.sync_and_mark(engine)?;
        Counters::add(&engine.counters.wal_syncs, 1);
        Ok(())
    }

    /// Every segment durable, the live one marked so (close), including
    /// which sealed segments' syncs finished: close promises that they
    /// are durable, so damage found in them later must be corruption.
    pub(crate) fn sync_and_mark(&mut self, engine: &Engine) -> Result<()> {
        // An older segment's sync failed (reported already, by the write
        // or seal that waited for it): its records may be lost, so the
        // live segment must not say it is durable (tests/review_revwal.rs,
        // `a_close_after_a_failed_replayed_sync_does_not_mark_the_live_segment`).
        if let Some(e) = &self.sync_failed {
            return Err(e.clone());
        }
        // Before the append below: no record goes into the WAL while the
        // manifest the open read may still be only in the page cache
        // (open_durability.rs).
        engine.ensure_names_durable()?;
        self.finish_sealed_sync()?;
        if !self.synced_unrecorded.is_empty() {
            self.frames.clear();
            self.wal.begin_group(&mut self.frames);
            self.record_finished_syncs();
            self.wal.append(&self.frames)?;
        }
        self.wal.sync_and_mark()
    }

    /// Waits for the background syncs of every sealed segment. Called
    /// before anything syncs the live segment: a newer segment must never
    /// be durable while an older one may not be (seal_sync.rs).
    fn finish_sealed_sync(&mut self) -> Result<()> {
        self.finish_sealed_syncs_down_to(0)
    }

    /// Waits for the oldest background syncs until at most `left` run.
    fn finish_sealed_syncs_down_to(&mut self, left: usize) -> Result<()> {
        while self.sealed_syncs.len() > left {
            if let Some(s) = self.sealed_syncs.pop_front() {
                match s.finish() {
                    Ok(synced) => self.synced_unrecorded.extend(synced),
                    Err(e) => {
                        self.sync_failed.get_or_insert_with(|| e.clone());
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Collects the oldest background syncs that already finished, without
    /// waiting, so that even an unsynced group records them.
    fn collect_finished_syncs(&mut self) {
        while let Some(s) = self.sealed_syncs.front_mut() {
            if !s.finished_ok() {
                break;
            }
            if let Some(Ok(synced)) = self.sealed_syncs.pop_front().map(SealSync::finish) {
                self.synced_unrecorded.extend(synced);
            }
        }
    }

    /// Appends a segment-synced record to the group being written for
    /// every sealed segment whose sync finished since the last group
    /// (docs/format-wal.md, *Segment-synced records*).
    fn record_finished_syncs(&mut self) {
        for synced in self.synced_unrecorded.drain(..) {
            encode_segment_synced(synced, &mut self.frames);
        }
    }

    fn process(&mut self, engine: &Engine, group: Vec<CommitMsg>) {
        let mut writes = Vec::with_capacity(group.len());
        let mut sync = false;
        for msg in group {
            match msg {
                CommitMsg::Write {
                    batch,
                    sync: s,
                    check,
                    done,
                } => {
                    sync |= s;
                    writes.push(Request { batch, check, done });
                }
                CommitMsg::Seal { done } => {
                    // Writes queued before the seal belong to the old memtable.
                    self.commit(
                        engine,
                        std::mem::take(&mut writes),
                        std::mem::take(&mut sync),
                    );
                    let result = self.seal_for_flush(engine);
                    done.complete(result);
                }
            }
        }
        self.commit(engine, writes, sync);
    }

    fn commit(&mut self, engine: &Engine, writes: Vec<Request>, sync: bool) {
        if writes.is_empty() {
            return;
        }
        if let Some(err) = engine.bg_error() {
            for r in writes {
                r.done.complete(Err(err.clone()));
            }
            return;
        }
        if let Err(err) = self.compaction_backpressure(engine) {
            // Not a background error: writes resume once compaction catches up.
            for r in writes {
                r.done.complete(Err(err.clone()));
            }
            return;
        }
        if let Err(err) = self.make_room(engine) {
            engine.set_commit_error(err.clone());
            for r in writes {
                r.done.complete(Err(err.clone()));
            }
            return;
        }
        let writes = self.validate(engine, writes);
        if writes.is_empty() {
            return;
        }
        let pending = self.encode(writes);
        if let Err(err) = self.write_wal(engine, sync) {
            // The WAL may now end in a partial record and the OS may have
            // dropped dirty pages; acknowledging anything more would risk
            // acknowledging lost data, so the engine stops taking writes.
            engine.set_commit_error(err.clone());
            for p in pending {
                p.done.complete(Err(err.clone()));
            }
            return;
        }
        // What remains (memtable inserts, publishing) is quick and in
        // memory: let waiters start waking up now, in parallel with it,
        // unless the group is big enough for the inserts to outlast a
        // wake-up.
        let mut pending = pending;
        if pending.iter().map(|p| p.batch.len()).sum::<usize>() <= NOTICE_MAX_OPS {
            for p in &mut pending {
                p.done.notify();
            }
        }
        let state = engine.state();
        for p in &pending {
            state.mem.apply(&p.batch, p.ts);
        }
        engine.publish_ts(self.last_ts);
        let c = &engine.counters;
        Counters::add(&c.commits, pending.len() as u64);
        Counters::add(&c.commit_groups, 1);
        for p in pending {
            p.done.complete(Ok(p.ts));
        }
    }

    /// Whether a write can be committed right now without sealing the
    /// memtable, slowing down or stalling.
    fn has_room(&self, engine: &Engine) -> bool {
        let state = engine.state();
        let limit = engine.options.max_immutable_memtables.max(1);
        let backlog = limit >= 2 && state.imms.len() + 1 >= limit;
        !(self.memtable_full(engine, &state) || self.segment_full(engine) || backlog)
            && compaction_debt(engine, &state) == Debt::None
    }

    /// Slows a group down (1 ms) or stops it while compaction is behind:
    /// too many level-0 tables or too many pending compaction bytes (see
    /// docs/compaction.md). A stop ends when compaction catches up; if the
    /// last compaction failed, or the engine failed or is closing, the group
    /// fails with that error instead, so a stall is never permanent.
    fn compaction_backpressure(&self, engine: &Engine) -> Result<()> {
        let engine = &engine;
        // An inline commit runs on its caller's thread (possibly Node's
        // event loop) and passed `has_room`, which rules out any debt, a
        // moment ago; if a flush raised the debt since, letting this one
        // group through beats blocking that thread.
        if std::thread::current().name() != Some(COMMIT_THREAD_NAME) {
            return Ok(());
        }
        match compaction_debt(engine, &engine.state()) {
            Debt::None => return Ok(()),
            Debt::Slow => {
                Counters::add(&engine.counters.write_slowdowns, 1);
                std::thread::sleep(SLOWDOWN_DELAY);
                return Ok(());
            }
            Debt::Stop => {}
        }
        let started = Instant::now();
        Counters::add(&engine.counters.write_stalls, 1);
        let mut m = engine.maintenance.lock();
        let result = loop {
            if compaction_debt(engine, &engine.state()) != Debt::Stop {
                break Ok(());
            }
            if let Some(err) = engine.bg_error() {
                break Err(err);
            }
            if m.stopped {
                break Err(Error::closed());
            }
            if let Some(err) = &m.compaction_error {
                break Err(err
                    .clone()
                    .context("writes are stopped until compaction catches up, and it failed"));
            }
            // Woken by every compaction; the timeout is only a safety net.
            engine
                .flush_done
                .wait_for(&mut m, std::time::Duration::from_millis(100));
        };
        Counters::add(
            &engine.counters.write_stall_micros,
            started.elapsed().as_micros() as u64,
        );
        result
    }

    /// Fails the transactions that conflict (first committer wins) and
    /// returns the requests that may commit, in order. Members earlier in
    /// the group are not in the memtable yet, so their keys are collected
    /// as the group is walked.
    fn validate(&self, engine: &Engine, writes: Vec<Request>) -> Vec<Request> {
        if cfg!(feature = "broken-isolation") || writes.iter().all(|r| r.check.is_none()) {
            return writes;
        }
        let state = engine.state();
        let mut group_keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut group_ranges: Vec<crate::range_del::RangeTombstone> = Vec::new();
        let mut accepted = Vec::with_capacity(writes.len());
        for r in writes {
            if let Some(check) = &r.check {
                match check.conflicts(&state, &group_keys, &group_ranges, &r.batch) {
                    Ok(false) => {}
                    Ok(true) => {
                        Counters::add(&engine.counters.conflicts, 1);
                        r.done.complete(Err(Error::new(
                            ErrorKind::Conflict,
                            "transaction conflict: a key it wrote or read was committed by another writer after its snapshot; retry it",
                        )));
                        continue;
                    }
                    Err(e) => {
                        r.done.complete(Err(e));
                        continue;
                    }
                }
            }
            group_keys.extend(r.batch.iter().map(|op| op.key.to_vec()));
            group_ranges.extend(r.batch.range_deletes().map(|(start, end)| {
                crate::range_del::RangeTombstone {
                    start: start.to_vec(),
                    end: end.to_vec(),
                    ts: 0,
                }
            }));
            accepted.push(r);
        }
        accepted
    }

    /// Assigns timestamps in arrival order and frames every batch into one
    /// buffer behind the group's sync point, so the group costs one write
    /// system call.
    fn encode(&mut self, writes: Vec<Request>) -> Vec<Pending> {
        self.frames.clear();
        self.wal.begin_group(&mut self.frames);
        let mut pending = Vec::with_capacity(writes.len());
        for Request { batch, done, .. } in writes {
            self.last_ts += 1;
            let start = begin_batch_frame(&mut self.frames);
            batch.encode_record(self.last_ts, &mut self.frames);
            finish_batch_frame(&mut self.frames, start);
            pending.push(Pending {
                batch,
                ts: self.last_ts,
                done,
            });
        }
        pending
    }

    fn write_wal(&mut self, engine: &Engine, sync: bool) -> Result<()> {
        // A durable group waits for every older segment's sync (so that
        // it is the first sync of this segment), and then records them in
        // its own write: its acknowledgement makes that record durable, so
        // replay can never drop this group for damage in those segments.
        if sync {
            if let Some(e) = &self.sync_failed {
                return Err(e.clone());
            }
            self.finish_sealed_sync()?;
        } else {
            self.collect_finished_syncs();
        }
        self.record_finished_syncs();
        if sync {
            engine.ensure_names_durable()?;
            self.wal.preallocate_for(self.frames.len() as u64)?;
            self.wal.append_durable(&self.frames)?;
            Counters::add(&engine.counters.wal_syncs, 1);
        } else {
            // Even unsynced, these records may reach the disk (writeback)
            // and survive a power cut that loses the writes the open's
            // manifest accounts for without having made them durable
            // (open_durability.rs). A no-op once the open's switch ran.
            engine.open_durability.ensure_manifest()?;
            self.wal.append(&self.frames)?;
        }
        Counters::add(&engine.counters.wal_bytes_written, self.frames.len() as u64);
        Ok(())
    }

    /// Seals the memtable when it is full, first waiting (a write stall)
    /// while too many sealed memtables are still waiting for flush.
    ///
    /// Before the stall comes a slowdown: with all but one of the allowed
    /// sealed memtables waiting, each group is delayed a little, which
    /// spreads the wait over many writes instead of one long stop.
    fn make_room(&mut self, engine: &Engine) -> Result<()> {
        let state = engine.state();
        let limit = engine.options.max_immutable_memtables.max(1);
        if limit >= 2 && state.imms.len() + 1 >= limit {
            Counters::add(&engine.counters.write_slowdowns, 1);
            std::thread::sleep(SLOWDOWN_DELAY);
        }
        if self.memtable_full(engine, &state) {
            self.seal(engine, Tail::Checkpoint)
        } else if self.segment_full(engine) {
            self.rotate(engine, state.mem.id())
        } else {
            Ok(())
        }
    }

    /// Whether the memtable must be sealed: it reached its size.
    fn memtable_full(&self, engine: &Engine, state: &LsmState) -> bool {
        state.mem.approximate_bytes() >= engine.options.memtable_size
    }

    /// Whether the live WAL segment reached the WAL size limit: it is then
    /// rotated and checkpointed, which bounds what a reopen replays.
    fn segment_full(&self, engine: &Engine) -> bool {
        self.wal.len() >= engine.options.wal_size_limit
    }

    fn seal_for_flush(&mut self, engine: &Engine) -> Result<u64> {
        if let Some(err) = engine.bg_error() {
            return Err(err);
        }
        let state = engine.state();
        if state.mem.is_empty() {
            // Nothing new: wait only for what is already sealed.
            return Ok(state.imms.first().map_or(0, |m| m.id()));
        }
        let id = state.mem.id();
        // An explicit flush waits for the old segment's sync here: the
        // caller blocks for the flush anyway, and this keeps its file
        // operations in one order (no sync finishing after it returned).
        // A seal's failure is the commit path's own, as when `make_room`
        // seals (`Engine::stopped_by_commit`).
        self.seal(engine, Tail::LeaveToFlush)
            .and_then(|()| self.finish_sealed_sync())
            .inspect_err(|e| engine.set_commit_error(e.clone()))?;
        Ok(id)
    }

    /// Seals the live memtable: its writes end in the current WAL segment
    /// (the tail), a fresh memtable and segment take the next ones, and a
    /// file number is reserved for the sealed memtable's flush table, below
    /// every checkpoint table of the fresh one (maintenance/checkpoint.rs,
    /// *Order*).
    fn seal(&mut self, engine: &Engine, tail: Tail) -> Result<()> {
        self.wait_for_flush_capacity(engine)?;
        let sealed = engine.state().mem.id();
        let (old, number) = self.switch_segment(engine)?;
        let flush_number = engine.alloc_file_number();
        // Queued before the seal is installed, so that the maintenance
        // thread never sees the sealed memtable without its tail's request
        // and starts its flush first (checkpoints go first: a flush runs
        // the ones queued later as it goes). Only when segments rotate
        // within a memtable (`wal_size_limit` below `memtable_size`): with
        // checkpoints off (u64::MAX) or a memtable no larger than the
        // limit, the tail is the whole memtable, and checkpointing it
        // would write every memtable twice (tests/review_revckf.rs).
        let rotates = engine.options.wal_size_limit < engine.options.memtable_size as u64;
        if matches!(tail, Tail::Checkpoint) && rotates {
            engine.request_checkpoint(crate::maintenance::CheckpointRequest {
                memtable: sealed,
                segment: old.segment,
                end: old.end,
                next: number,
            });
        }
        let fresh = Arc::new(Memtable::sized(
            self.next_memtable_id,
            engine.options.memtable_size,
        ));
        self.next_memtable_id += 1;
        engine.install(|s| {
            s.mem.seal(number, flush_number);
            let mut imms = Vec::with_capacity(s.imms.len() + 1);
            imms.push(s.mem.clone());
            imms.extend(s.imms.iter().cloned());
            LsmState {
                mem: fresh,
                imms,
                levels: s.levels.clone(),
                checkpoints: s.checkpoints.clone(),
                compacted_ts: s.compacted_ts,
            }
        });
        engine.wake_maintenance();
        Ok(())
    }

    /// Moves the live memtable's writes on to a new WAL segment and has the
    /// maintenance thread checkpoint the old one into a table, after which
    /// the old segment is deleted: a reopen then replays at most about
    /// `wal_size_limit` per unflushed memtable, while the memtable, and so
    /// what reads and compaction see, stays as it was (a seal would have
    /// made small level-0 tables of it: docs/performance.md, "Reopen").
    fn rotate(&mut self, engine: &Engine, memtable: u64) -> Result<()> {
        let (old, next) = self.switch_segment(engine)?;
        engine.request_checkpoint(crate::maintenance::CheckpointRequest {
            memtable,
            segment: old.segment,
            end: old.end,
            next,
        });
        Ok(())
    }

    /// Starts a new live WAL segment; the old one is synced in the
    /// background. Returns where the old one ended and the new one's number.
    fn switch_segment(&mut self, engine: &Engine) -> Result<(Predecessor, u64)> {
        // The old segment is synced in the background, not here: that sync
        // took a memtable's worth of disk writes on the commit path. The
        // new segment's first group records where the old one ended, so
        // replay can tell a lost tail of it from damage (docs/format-wal.md,
        // *New segments*). Waiting for the previous seal's sync here cost
        // `fillbatch` when a seal came every ~20 ms (as long as a 4 MiB
        // sync takes); a few may run at once.
        self.finish_sealed_syncs_down_to(MAX_SEALED_SYNCS - 1)?;
        let previous = Predecessor {
            segment: self.wal.number(),
            end: self.wal.len(),
        };
        let number = engine.alloc_file_number();
        let wal = WalWriter::create_after(&*engine.fs, &engine.dir, number, previous)?;
        let old = std::mem::replace(&mut self.wal, wal);
        self.sealed_syncs
            .push_back(SealSync::start(old, &self.pending_syncs));
        Ok((previous, number))
    }

    fn wait_for_flush_capacity(&self, engine: &Engine) -> Result<()> {
        let limit = engine.options.max_immutable_memtables.max(1);
        let mut m = engine.maintenance.lock();
        if engine.state().imms.len() < limit {
            return Ok(());
        }
        let started = Instant::now();
        Counters::add(&engine.counters.write_stalls, 1);
        while engine.state().imms.len() >= limit {
            if let Some(err) = engine.bg_error() {
                return Err(err);
            }
            if m.shutdown {
                return Err(Error::closed());
            }
            engine.flush_done.wait(&mut m);
        }
        Counters::add(
            &engine.counters.write_stall_micros,
            started.elapsed().as_micros() as u64,
        );
        Ok(())
    }
}

/// What becomes of a sealed memtable's last WAL segment.
#[derive(Clone, Copy)]
enum Tail {
    /// Checkpointed like a rotated segment, so the WAL checkpoint can move
    /// on to the next memtable's segments before this one's flush is done
    /// (a seal during a load).
    Checkpoint,
    /// Left to the flush (`Database::flush`, whose caller waits for the
    /// flush anyway: a checkpoint first would only delay it).
    LeaveToFlush,
}
