//! The shared engine behind every `Database` handle of one directory: the
//! current LSM state, the visible timestamp, the channels and condition
//! variables that connect the commit and maintenance threads, and counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::{ArcSwap, Guard};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex, RwLock};

use crate::commit::{CommitMsg, Committer};
use crate::error::{Error, Result};
use crate::io::{FileLock, FileSystem};
use crate::key::Timestamp;
use crate::lsm::{Levels, TableOpener};
use crate::maintenance::MaintenanceState;
use crate::memtable::Memtable;
use crate::open_durability::OpenDurability;
use crate::options::Options;
use crate::stats::Counters;
use crate::txn::snapshots::SnapshotList;
use crate::wal::ReplayReport;

/// One consistent view of where data lives. Replaced whole (copy on write)
/// by the commit thread (seal) and the maintenance thread (flush), so a
/// reader holding an `Arc<LsmState>` never sees a half-moved memtable.
pub(crate) struct LsmState {
    pub mem: Arc<Memtable>,
    /// Sealed memtables waiting to be flushed, newest first.
    pub imms: Vec<Arc<Memtable>>,
    /// Table files by level.
    pub levels: Levels,
    /// Checkpoint tables (maintenance/checkpoint.rs): level-0 tables in the
    /// manifest, oldest first, each holding a WAL segment of an unflushed
    /// memtable (sealed or live), which holds all of it too. So reads and
    /// compaction never look at them; they exist so that the segments could
    /// be deleted and a reopen replays less. A memtable's flush removes its
    /// own.
    pub checkpoints: Vec<crate::maintenance::CheckpointTable>,
    /// The newest read timestamp any compaction whose output is in `levels`
    /// retained versions for. A reader at an older timestamp that was not
    /// registered when that compaction started may miss versions, so
    /// unregistered readers (plain gets) take a newer timestamp (see
    /// `Engine::read_view`).
    pub compacted_ts: Timestamp,
}

pub(crate) struct Engine {
    pub dir: PathBuf,
    pub options: Options,
    pub fs: Arc<dyn FileSystem>,
    /// Opens table files through the block cache and the table cache.
    pub tables: TableOpener,
    /// The current LSM state. Readers load it without locking; installs
    /// replace it under `install_lock`.
    state: ArcSwap<LsmState>,
    install_lock: Mutex<()>,
    /// Every commit with a timestamp <= this is fully applied to the memtable.
    visible_ts: AtomicU64,
    pub next_file_number: AtomicU64,
    /// `None` once shutdown began; senders hold the read lock while sending
    /// so no request can slip in behind the shutdown.
    commit_tx: RwLock<Option<Sender<CommitMsg>>>,
    /// Set when shutdown begins, just before `commit_tx` is taken: what
    /// [`Engine::is_closed`] reads. Every read checks it, and a plain load
    /// costs nothing, where taking `commit_tx`'s read lock was two locked
    /// instructions per read (1.7% of a cached `getSync`, `perf`).
    closing: AtomicBool,
    /// Requests sent to the commit thread and not yet fully committed.
    pub queued: AtomicUsize,
    /// The commit state; `None` once the commit thread has stopped.
    pub committer: Mutex<Option<Committer>>,
    /// WAL segments (sealed, or replayed by the open) whose background
    /// sync has not finished (`Stats::pending_wal_syncs`); the committer
    /// counts them, their sync threads uncount them.
    pub pending_wal_syncs: crate::commit::PendingSyncs,
    /// The first unrecoverable background failure (a failed WAL write or
    /// fsync, a failed flush). Once set, writes fail with it: continuing
    /// after a failed fsync could acknowledge data the disk never got.
    bg_error: Mutex<Option<Error>>,
    /// Whether `bg_error` came from a commit's own work (its WAL append,
    /// the fdatasync of the open's manifest or of older WAL segments
    /// before it, a seal, a panic while committing), not from a flush, a
    /// compaction, a close's WAL sync or the open's manifest switch. While
    /// an open's own write is the only writer (`Database::open_with`),
    /// this tells whether that write is what stopped the engine.
    stopped_by_commit: AtomicBool,
    pub maintenance: Mutex<MaintenanceState>,
    /// Signalled when there is work for the maintenance thread (a sealed
    /// memtable, a manual compaction) or it should stop.
    pub work_ready: Condvar,
    /// Signalled when a flush or compaction finishes or fails (stalled
    /// writers, `flush()`).
    pub flush_done: Condvar,
    pub counters: Counters,
    /// Bytes read per columnar table and column (`Database::table_stats`).
    pub columnar: crate::columnar::ReadCounters,
    /// Live snapshots and transactions, by read timestamp.
    pub snapshots: SnapshotList,
    pub recovery: ReplayReport,
    /// While non-zero, flushes leave the WAL segments they made redundant
    /// in place (the next flush, or the next open, deletes them):
    /// `verify` pins the segments so that the checkpoint segment the
    /// manifest names cannot vanish while it checks (see verify.rs).
    pub wal_pins: AtomicUsize,
    /// What the open relied on and left to its manifest switch on the
    /// maintenance thread (open_durability.rs).
    pub open_durability: OpenDurability,
    commit_thread: Mutex<Option<JoinHandle<()>>>,
    maintenance_thread: Mutex<Option<JoinHandle<()>>>,
    lock: Mutex<Option<Box<dyn FileLock>>>,
}

pub(crate) struct EngineParts {
    pub dir: PathBuf,
    pub tables: TableOpener,
    pub options: Options,
    pub state: LsmState,
    pub last_ts: Timestamp,
    pub next_file_number: u64,
    pub flushed_id: u64,
    pub recovery: ReplayReport,
    pub commit_tx: Sender<CommitMsg>,
    pub lock: Box<dyn FileLock>,
    /// See `Engine::open_durability`.
    pub open_durability: OpenDurability,
}

impl Engine {
    pub fn new(parts: EngineParts) -> Engine {
        Engine {
            fs: parts.options.fs.clone(),
            tables: parts.tables,
            dir: parts.dir,
            options: parts.options,
            state: ArcSwap::from_pointee(parts.state),
            install_lock: Mutex::new(()),
            visible_ts: AtomicU64::new(parts.last_ts),
            next_file_number: AtomicU64::new(parts.next_file_number),
            commit_tx: RwLock::new(Some(parts.commit_tx)),
            closing: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            committer: Mutex::new(None),
            pending_wal_syncs: crate::commit::PendingSyncs::default(),
            bg_error: Mutex::new(None),
            stopped_by_commit: AtomicBool::new(false),
            maintenance: Mutex::new(MaintenanceState {
                flushed_id: parts.flushed_id,
                // Busy until the thread first finds nothing to do: an open
                // may leave it a flush or a compaction it has not picked yet.
                busy: true,
                ..MaintenanceState::default()
            }),
            work_ready: Condvar::new(),
            flush_done: Condvar::new(),
            counters: Counters::default(),
            columnar: crate::columnar::ReadCounters::default(),
            snapshots: SnapshotList::default(),
            recovery: parts.recovery,
            wal_pins: AtomicUsize::new(0),
            open_durability: parts.open_durability,
            commit_thread: Mutex::new(None),
            maintenance_thread: Mutex::new(None),
            lock: Mutex::new(Some(parts.lock)),
        }
    }

    /// Makes what the open relied on durable, if the open's manifest
    /// switch has not done it yet (open_durability.rs). Called before a
    /// commit is acknowledged as durable: after a power cut, its WAL
    /// segment must still be found, and every write before it too
    /// (tests/review_revwo.rs).
    pub fn ensure_names_durable(&self) -> Result<()> {
        self.open_durability.ensure_all()
    }

    /// The open's manifest switch ended in a directory sync.
    pub fn names_synced(&self) {
        self.open_durability.switched();
    }

    pub fn set_threads(&self, commit: JoinHandle<()>, maintenance: JoinHandle<()>) {
        *self.commit_thread.lock() = Some(commit);
        *self.maintenance_thread.lock() = Some(maintenance);
    }

    pub fn state(&self) -> Arc<LsmState> {
        self.state.load_full()
    }

    /// Runs `f` on the current state while no install can replace it.
    pub fn with_state<R>(&self, f: impl FnOnce(&Arc<LsmState>) -> R) -> R {
        let _installs = self.install_lock.lock();
        f(&self.state.load_full())
    }

    /// Replaces the LSM state through `edit`, which builds the new one.
    pub fn install(&self, edit: impl FnOnce(&LsmState) -> LsmState) {
        let _installs = self.install_lock.lock();
        let next = edit(&self.state.load());
        self.state.store(Arc::new(next));
    }

    /// A timestamp and a state to read at, for a reader that is not in the
    /// live-snapshot registry (plain gets). The timestamp is taken first, so
    /// the state holds every commit at or below it; if a compaction that
    /// started after the timestamp was taken is already installed, it may
    /// have dropped versions only that timestamp needed, so take a fresh
    /// pair (the visible timestamp is then at least that compaction's).
    pub fn read_view(&self) -> (Timestamp, Arc<LsmState>) {
        let (ts, state) = self.read_view_guard();
        (ts, Guard::into_inner(state))
    }

    /// [`Engine::read_view`] for a read that ends before the caller returns
    /// (a point read): the state is borrowed, not cloned, so loading it
    /// writes to no shared cache line.
    pub fn read_view_guard(&self) -> (Timestamp, Guard<Arc<LsmState>>) {
        loop {
            let ts = self.visible_ts();
            let state = self.state.load();
            if state.compacted_ts <= ts {
                return (ts, state);
            }
        }
    }

    pub fn visible_ts(&self) -> Timestamp {
        self.visible_ts.load(Ordering::Acquire)
    }

    /// Lends the value of `key` at timestamp `ts` to `f`. Any state read
    /// now holds every version at or below an already-visible `ts`.
    pub fn get_at<R>(
        &self,
        key: &[u8],
        ts: Timestamp,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        crate::key::check_key(key)?;
        self.state().get_with(key, ts, f)
    }

    pub fn publish_ts(&self, ts: Timestamp) {
        self.visible_ts.store(ts, Ordering::Release);
    }

    pub fn alloc_file_number(&self) -> u64 {
        self.next_file_number.fetch_add(1, Ordering::Relaxed)
    }

    pub fn bg_error(&self) -> Option<Error> {
        self.bg_error.lock().clone()
    }

    /// Records the first background failure and wakes everyone who waits on
    /// background progress so they can report it.
    pub fn set_bg_error(&self, err: Error) {
        self.record_bg_error(err);
    }

    /// [`Engine::set_bg_error`] for a failure of a commit's own work.
    pub fn set_commit_error(&self, err: Error) {
        if self.record_bg_error(err) {
            self.stopped_by_commit.store(true, Ordering::Release);
        }
    }

    /// See `stopped_by_commit`. After a failed write, ask only once
    /// [`Engine::commit_settled`] returned: a panic on the commit thread
    /// completes the write (with `Closed`, while unwinding) before the
    /// thread records the panic.
    pub fn stopped_by_commit(&self) -> bool {
        self.stopped_by_commit.load(Ordering::Acquire)
    }

    /// Returns once the commit thread is between groups: it records a
    /// group's panic while still holding the committer, so whatever a
    /// failed write's group did to the engine's error is recorded by then.
    pub fn commit_settled(&self) {
        drop(self.committer.lock());
    }

    /// Whether `err` is the one recorded (the first).
    fn record_bg_error(&self, err: Error) -> bool {
        let first = {
            let mut slot = self.bg_error.lock();
            let first = slot.is_none();
            if first {
                *slot = Some(err);
            }
            first
        };
        let _guard = self.maintenance.lock();
        self.flush_done.notify_all();
        self.work_ready.notify_all();
        first
    }

    pub fn is_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Hands a request to the commit thread. When the engine is closed the
    /// request is dropped, which completes it with a `Closed` error.
    pub fn send_commit(&self, msg: CommitMsg) {
        let guard = self.commit_tx.read();
        if let Some(tx) = guard.as_ref() {
            self.queued.fetch_add(1, Ordering::AcqRel);
            if tx.send(msg).is_err() {
                // The commit thread is gone; the dropped message completed
                // itself with `Closed`.
                self.queued.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Asks the maintenance thread to checkpoint a WAL segment the commit
    /// thread rotated away from.
    pub fn request_checkpoint(&self, request: crate::maintenance::CheckpointRequest) {
        let mut m = self.maintenance.lock();
        m.checkpoints.push_back(request);
        Self::mark_busy(&mut m);
        self.work_ready.notify_one();
    }

    /// Wakes the maintenance thread after a memtable was sealed.
    pub fn wake_maintenance(&self) {
        let mut m = self.maintenance.lock();
        Self::mark_busy(&mut m);
        self.work_ready.notify_one();
    }

    /// Work was just queued: the thread is busy from now on, not only once
    /// it wakes (`stats().maintenance_busy`; a loaded machine can take
    /// milliseconds to wake it, and a test that waited for "idle" then saw
    /// a checkpoint still to come). It clears the flag itself when it
    /// finds nothing to do.
    fn mark_busy(m: &mut MaintenanceState) {
        if !m.shutdown && !m.stopped {
            m.busy = true;
        }
    }

    /// Makes every write acknowledged so far durable without stopping the
    /// engine (a handle closing while others stay open), and reports the
    /// background error if there is one, as `shutdown` does.
    pub fn sync_wal(&self) -> Result<()> {
        if let Some(c) = self.committer.lock().as_mut() {
            if let Err(e) = c.sync_wal(self) {
                let e = e.context("syncing the WAL at close");
                self.set_bg_error(e.clone());
                return Err(e);
            }
        }
        match self.bg_error() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Stops accepting writes, lets the commit thread finish what is queued
    /// (and sync the WAL), stops the maintenance thread after its current
    /// flush, and releases the directory lock. Fails with the background
    /// error, if there is one (the final WAL sync's included): a clean
    /// return means every acknowledged write is on disk.
    pub fn shutdown(&self) -> Result<()> {
        self.closing.store(true, Ordering::Release);
        drop(self.commit_tx.write().take());
        let mut panicked = false;
        // The commit thread goes first: a write stalled on a full set of
        // sealed memtables needs the maintenance thread to drain its queue.
        if let Some(t) = self.commit_thread.lock().take() {
            panicked |= t.join().is_err();
        }
        panicked |= crate::columnar::join_chunker(self);
        {
            let mut m = self.maintenance.lock();
            m.shutdown = true;
            self.work_ready.notify_all();
            self.flush_done.notify_all();
        }
        if let Some(t) = self.maintenance_thread.lock().take() {
            panicked |= t.join().is_err();
        }
        // No WAL segment either: a replayed memtable that was never
        // flushed (its flush failed, or the close came first) holds its
        // versions in the mapped segments; readers still holding it keep
        // it, the state gets a copy that owns its bytes.
        self.install(|s| {
            let own = |m: &Arc<Memtable>| m.without_segments().map_or_else(|| m.clone(), Arc::new);
            LsmState {
                mem: own(&s.mem),
                imms: s.imms.iter().map(own).collect(),
                levels: s.levels.clone(),
                checkpoints: s.checkpoints.clone(),
                compacted_ts: s.compacted_ts,
            }
        });
        // No table file stays mapped by a closed engine (a handle object
        // may outlive its close for a long time, e.g. until a JS GC).
        let state = self.state();
        for t in state
            .levels
            .all()
            .chain(state.checkpoints.iter().map(|c| &c.table))
        {
            t.close_table();
        }
        drop(self.lock.lock().take());
        if panicked {
            return Err(Error::internal("a background thread panicked"));
        }
        match self.bg_error() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}
