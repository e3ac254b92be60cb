//! `Database`: the public handle. Handles opened on the same directory in
//! one process share one engine (a second engine would fail on the
//! directory lock); the engine shuts down when the last handle closes.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

use crate::batch::WriteBatch;
use crate::commit::{CommitMsg, Completion};
use crate::compaction::Policy;
use crate::engine::Engine;
use crate::error::{Error, IoResultExt, Result};
use crate::iter::{DbIter, Scan, ScanOptions};
use crate::key::Timestamp;
use crate::lsm::NUM_LEVELS;
use crate::maintenance::ManualRequest;
use crate::options::{Options, WriteOptions};
use crate::read::{Found, ValueRead, ValueRef};
use crate::recovery::open_engine;
use crate::stats::{LevelStats, Stats};
use crate::txn::{Snapshot, Transaction, TransactionOptions};

struct Registered {
    /// `None` while its first open is still recovering (`open_engine`).
    engine: Option<Arc<Engine>>,
    handles: usize,
    /// Its open is still recovering or doing its own writes
    /// (`Database::open_with`), or its last handle is still shutting it
    /// down (`close_handle`): other opens of the path wait, so none shares
    /// an engine that may yet close, or takes the directory lock before it
    /// is released. Opens and closes of other paths do not wait: this
    /// runs without the registry lock.
    changing: bool,
}

/// Removes a registry entry whose engine is `ours` (or, for `None`, the
/// placeholder of an open still recovering) when dropped, and wakes the
/// opens waiting for it: also when the open or the shutdown panics.
struct Unregister<'a> {
    dir: &'a Path,
    ours: Option<Arc<Engine>>,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        let mut open = registry().lock();
        let is_ours = open
            .get(self.dir)
            .is_some_and(|e| match (&e.engine, &self.ours) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            });
        if is_ours {
            open.remove(self.dir);
        }
        registry_changed().notify_all();
    }
}

/// Engines open in this process, by absolute directory path.
fn registry() -> &'static Mutex<HashMap<PathBuf, Registered>> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Registered>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Signalled (with the registry lock) when an entry stops `opening` or is
/// removed.
fn registry_changed() -> &'static Condvar {
    static CHANGED: Condvar = Condvar::new();
    &CHANGED
}

/// An open database. Cheap to share across threads (`Send + Sync`); all
/// methods take `&self`.
pub struct Database {
    engine: Arc<Engine>,
    closed: AtomicBool,
    /// The outcome of this handle's close, once it has run
    /// (`close_handle`).
    close_outcome: Mutex<Option<Result<()>>>,
    /// This handle's default durability (its own `Options::sync`): handles
    /// sharing an engine each keep the option they were opened with.
    sync: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("path", &self.engine.dir)
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Database {
    /// Opens (creating if missing) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(path, Options::default())
    }

    /// Opens with explicit options. When this process already has the
    /// directory open, the new handle shares that engine: its own `sync`
    /// still governs the writes made through it, while the engine's other
    /// options (sizes, thresholds) stay those of the first open, and
    /// `error_if_exists` is honoured.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Database> {
        // The registry key must name the directory, however it is spelled
        // (`..`, symlinks), so it is created first when that is allowed; a
        // path that still does not exist cannot be open.
        if options.create_if_missing && !options.fs.exists(path.as_ref()) {
            crate::io::create_dir_all_durable(&*options.fs, path.as_ref())?;
        }
        let dir = match std::fs::canonicalize(path.as_ref()) {
            Ok(dir) => dir,
            Err(_) => std::path::absolute(path.as_ref())
                .ctx(format_args!("resolving {}", path.as_ref().display()))?,
        };
        let mut open = registry().lock();
        while let Some(entry) = open.get_mut(&dir) {
            // Another open or the last close of this path is still running
            // (see `Registered::changing`): share its engine only once it
            // stands, or open afresh once it is gone.
            if entry.changing {
                registry_changed().wait(&mut open);
                continue;
            }
            let Some(engine) = entry.engine.clone() else {
                return Err(Error::internal(
                    "a registered database has no engine and no open running",
                ));
            };
            if options.error_if_exists {
                return Err(Error::invalid_argument(format!(
                    "a database already exists at {} (errorIfExists is on)",
                    dir.display()
                )));
            }
            entry.handles += 1;
            return Ok(Database::handle(engine, options.sync));
        }
        let sync = options.sync;
        // Registered before the recovery but marked `changing`: the
        // recovery and the open's own writes run without the registry lock
        // (a recovery can replay a large WAL, a write may stall behind
        // compaction, and the lock also serves every other path's opens and
        // closes), and a concurrent open of this path waits for them rather
        // than taking the directory lock itself.
        open.insert(
            dir.clone(),
            Registered {
                engine: None,
                handles: 0,
                changing: true,
            },
        );
        drop(open);
        let placeholder = Unregister {
            dir: &dir,
            ours: None,
        };
        let engine = open_engine(&dir, options)?;
        let registered = match registry().lock().get_mut(&dir) {
            Some(entry) => {
                entry.engine = Some(engine.clone());
                entry.handles = 1;
                true
            }
            None => false,
        };
        if !registered {
            // Only this open removes its placeholder. Shut down without the
            // registry lock, which every other path's opens need.
            let _ = engine.shutdown();
            return Err(Error::internal("an opening database left the registry"));
        }
        std::mem::forget(placeholder);
        let db = Database::handle(engine, sync);
        // Table drops a crash interrupted (columnar/catalog.rs), finished
        // with one range delete each, written durably whatever `sync` says.
        // Best effort (a failure leaves them on the list for the next
        // open), unless that write's own commit stopped the engine: it is
        // the first to fdatasync the manifest the open read and the WAL
        // segments the open replayed, so their failure (or a failed WAL
        // append, or a panic in the commit) fails the open rather than hand
        // out a database that can no longer write. Closing this handle, the
        // only one, unregisters the engine and releases the directory lock,
        // so a later open of the path starts afresh.
        if let Err(e) = db.purge_dropped_tables_at_open() {
            // The close fails with the same stopped-engine error, which
            // `e` already carries with the open's context.
            let _ = db.close();
            return Err(e);
        }
        if let Some(entry) = registry().lock().get_mut(&dir) {
            entry.changing = false;
        }
        registry_changed().notify_all();
        Ok(db)
    }

    fn handle(engine: Arc<Engine>, sync: bool) -> Database {
        Database {
            engine,
            closed: AtomicBool::new(false),
            close_outcome: Mutex::new(None),
            sync,
        }
    }

    pub fn path(&self) -> &Path {
        &self.engine.dir
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.engine.is_closed() {
            return Err(Error::closed());
        }
        Ok(())
    }

    /// The value of `key`, or `None`. Keys in the reserved range of
    /// columnar tables (`columnar::RESERVED_PREFIX`) are `InvalidArgument`,
    /// as for writes (and here, `get_with`, `get_many`, and on snapshots
    /// and transactions).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// Lends the value of `key` to `f` without copying it out of the engine.
    pub fn get_with<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        self.check_open()?;
        crate::key::check_key(key.as_ref())?;
        crate::columnar::check_user_key(key.as_ref())?;
        let (ts, state) = self.engine.read_view();
        state.get_with(key.as_ref(), ts, f)
    }

    /// Lends the value of `key` to `f`: values of at least
    /// [`Options::zero_copy_threshold`] bytes that sit in an uncompressed
    /// table block come as a [`ValueRef::Mapped`] the caller may keep (and
    /// write into) for as long as it likes; everything else is borrowed.
    pub fn get_ref<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<ValueRef<'_>>) -> R,
    ) -> Result<R> {
        let read = self.get_value(key, ValueRead::default(), f)?;
        read.ok_or_else(|| Error::internal("an inline read reported would-block"))
    }

    /// [`Database::get_ref`] only if it cannot wait for the device: every
    /// table block, index and filter page it needs is in memory (the block
    /// cache, or file pages the page cache holds). `Ok(None)` (and `f` not
    /// called) when it would have to read from the device; the caller can
    /// then run `get_ref` on a thread that may block.
    pub fn get_ref_if_resident<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<ValueRef<'_>>) -> R,
    ) -> Result<Option<R>> {
        let how = ValueRead {
            resident_only: true,
            ..ValueRead::default()
        };
        self.get_value(key, how, f)
    }

    /// The point read behind [`Database::get_ref`] and
    /// [`Database::get_ref_if_resident`], chosen by `how`; `Ok(None)` only
    /// with `how.resident_only`, when the read would wait for the device.
    pub fn get_value<R>(
        &self,
        key: impl AsRef<[u8]>,
        how: ValueRead,
        f: impl FnOnce(Option<ValueRef<'_>>) -> R,
    ) -> Result<Option<R>> {
        self.check_open()?;
        let (ts, state) = self.engine.read_view_guard();
        self.value_at(&state, ts, key.as_ref(), how, f)
    }

    /// Several [`Database::get_value`]s from one snapshot: `f(i, value)`
    /// for each key in order. `Ok(false)` (with `how.resident_only`) as
    /// soon as one would wait for the device; the calls made so far stand.
    pub fn get_many_values<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        how: ValueRead,
        mut f: impl FnMut(usize, Option<ValueRef<'_>>),
    ) -> Result<bool> {
        self.check_open()?;
        let (ts, state) = self.engine.read_view_guard();
        for (i, k) in keys.iter().enumerate() {
            if self
                .value_at(&state, ts, k.as_ref(), how, |v| f(i, v))?
                .is_none()
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn value_at<R>(
        &self,
        state: &crate::engine::LsmState,
        ts: Timestamp,
        key: &[u8],
        how: ValueRead,
        f: impl FnOnce(Option<ValueRef<'_>>) -> R,
    ) -> Result<Option<R>> {
        crate::key::check_key(key)?;
        crate::columnar::check_user_key(key)?;
        let threshold = if how.zero_copy {
            self.engine.options.zero_copy_threshold
        } else {
            usize::MAX
        };
        state.get_found(key, ts, how.resident_only, |found| {
            f(found.map(|found| match found {
                Found::Table(bytes, get) if bytes.len() >= threshold => get
                    .map_value()
                    .map_or(ValueRef::Borrowed(bytes), ValueRef::Mapped),
                other => ValueRef::Borrowed(other.bytes()),
            }))
        })
    }

    /// Values of several keys read from one snapshot.
    pub fn get_many<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Vec<u8>>>> {
        self.check_open()?;
        // The timestamp first: a state read after it holds every commit at
        // or below it (the commit thread applies before it publishes).
        let (snapshot, state) = self.engine.read_view();
        keys.iter()
            .map(|k| {
                crate::key::check_key(k.as_ref())?;
                crate::columnar::check_user_key(k.as_ref())?;
                state.get_with(k.as_ref(), snapshot, |v| v.map(<[u8]>::to_vec))
            })
            .collect()
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.put(key, value)?;
        self.write(batch).map(drop)
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.delete(key)?;
        self.write(batch).map(drop)
    }

    /// Deletes every key in `[start, end)` with one range tombstone: no key
    /// is read, so the cost does not depend on how many keys the range
    /// holds. Snapshots and transactions older than the commit still see
    /// the keys; compaction reclaims the space later. Returns the commit
    /// timestamp. `start >= end` and ranges that reach into the reserved
    /// table keys are `InvalidArgument`.
    pub fn delete_range(
        &self,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) -> Result<Timestamp> {
        let mut batch = WriteBatch::new();
        batch.delete_range(start, end)?;
        self.write(batch)
    }

    /// A range delete from scan-style bounds (what a binding's `clear`
    /// passes: `gte`/`gt` and `lte`/`lt`, either side unbounded), skipping
    /// the reserved table keys as scans do. Returns the commit timestamp,
    /// or `None` when the range is empty.
    pub fn delete_bounds(
        &self,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        options: WriteOptions,
    ) -> Result<Option<Timestamp>> {
        self.check_open()?;
        let mut batch = WriteBatch::new();
        for (s, e) in range_delete_spans(lower, upper) {
            batch.delete_range_raw(&s, &e)?;
        }
        if batch.is_empty() {
            return Ok(None);
        }
        self.write_with(batch, options).map(Some)
    }

    /// Applies `batch` atomically with the database's default durability;
    /// returns its commit timestamp.
    pub fn write(&self, batch: WriteBatch) -> Result<Timestamp> {
        self.write_with(batch, WriteOptions::default())
    }

    /// Applies `batch` atomically and waits until it is committed (and
    /// durable, when `sync` is on).
    ///
    /// When the engine is idle the write is committed on this thread,
    /// fsync included: the caller blocks either way, and this saves two
    /// thread hand-offs per durable write.
    pub fn write_with(&self, batch: WriteBatch, options: WriteOptions) -> Result<Timestamp> {
        self.check_open()?;
        let sync = options.sync.unwrap_or(self.sync);
        let batch = match crate::commit::try_commit_inline(&self.engine, batch, None, sync) {
            Ok(result) => return result,
            Err((batch, _)) => batch,
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.submit(batch, options, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Commits `batch` on the calling thread if that is cheap and cannot
    /// reorder anything (no fsync needed, nothing queued for the commit
    /// thread, room in the memtable); otherwise returns it untouched for
    /// [`Database::submit`]. Same atomicity and durability as `submit`.
    pub fn try_write_inline(
        &self,
        batch: WriteBatch,
        options: WriteOptions,
    ) -> std::result::Result<Result<Timestamp>, WriteBatch> {
        if let Err(e) = self.check_open() {
            return Ok(Err(e));
        }
        if options.sync.unwrap_or(self.sync) {
            return Err(batch);
        }
        crate::commit::try_commit_inline(&self.engine, batch, None, false)
            .map_err(|(batch, _)| batch)
    }

    /// Hands `batch` to the commit thread and returns at once; `done` is
    /// called exactly once, from the commit thread (or from this call when
    /// the database is closed), with the commit timestamp or the error.
    /// This is what lets an async caller wait without parking a thread.
    ///
    /// `done` runs on the commit thread while it holds the commit lock: it
    /// must be quick and must not block on this database (a blocking write
    /// would wait for itself) nor close a handle (closing syncs the WAL
    /// under the commit lock, or joins the commit thread). Hand the result to another thread or an event loop.
    pub fn submit(
        &self,
        batch: WriteBatch,
        options: WriteOptions,
        done: impl FnOnce(Result<Timestamp>) + Send + 'static,
    ) {
        self.submit_completion(batch, options, Completion::new(done));
    }

    /// Like `submit`, and `notice` may be called first, from the commit
    /// thread, once the write is in the WAL (and durable, if asked) and only
    /// memtable inserts remain before `done`: an event loop that takes tens
    /// of microseconds to wake can start waking then, and `done` is usually
    /// called before it is awake. `notice` is a hint; it may not be called.
    pub fn submit_with_notice(
        &self,
        batch: WriteBatch,
        options: WriteOptions,
        notice: impl FnOnce() + Send + 'static,
        done: impl FnOnce(Result<Timestamp>) + Send + 'static,
    ) {
        self.submit_completion(batch, options, Completion::new(done).with_notice(notice));
    }

    fn submit_completion(
        &self,
        batch: WriteBatch,
        options: WriteOptions,
        done: Completion<Timestamp>,
    ) {
        if let Err(e) = self.check_open() {
            return done.complete(Err(e));
        }
        let sync = options.sync.unwrap_or(self.sync);
        self.engine.send_commit(CommitMsg::Write {
            batch,
            sync,
            check: None,
            done,
        });
    }

    /// Begins a snapshot-isolation transaction.
    pub fn transaction(&self) -> Result<Transaction> {
        self.transaction_with(TransactionOptions::default())
    }

    pub fn transaction_with(&self, options: TransactionOptions) -> Result<Transaction> {
        self.check_open()?;
        let options = TransactionOptions {
            sync: Some(options.sync.unwrap_or(self.sync)),
            ..options
        };
        Ok(Transaction::begin(self.engine.clone(), options))
    }

    /// A consistent read-only view of the database as of now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.check_open()?;
        Ok(Snapshot::new(self.engine.clone()))
    }

    /// A scan over the current state (a consistent snapshot of it).
    pub fn scan(&self, options: ScanOptions) -> Result<Scan> {
        self.check_open()?;
        let snapshot = self.engine.snapshots.acquire(|| self.engine.visible_ts());
        Ok(
            Scan::new(self.engine.clone(), self.engine.state(), snapshot, options)
                .hiding_reserved(),
        )
    }

    /// For the columnar layer: a reader at the visible timestamp.
    pub(crate) fn read_view(&self) -> Result<crate::columnar::CellReader> {
        self.check_open()?;
        let ts = self.engine.snapshots.acquire(|| self.engine.visible_ts());
        Ok(crate::columnar::CellReader::new(
            self.engine.clone(),
            ts,
            Vec::new(),
        ))
    }

    pub(crate) fn engine_ref(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Iterates `(key, value)` pairs in key order (see [`ScanOptions`]).
    pub fn iter(&self, options: ScanOptions) -> Result<DbIter> {
        Ok(DbIter::new(self.scan(options)?))
    }

    /// Writes everything in memtables to table files and waits for it.
    pub fn flush(&self) -> Result<()> {
        self.check_open()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.engine.send_commit(CommitMsg::Seal {
            done: Completion::new(move |r| {
                let _ = tx.send(r);
            }),
        });
        let target = rx.recv().unwrap_or_else(|_| Err(Error::closed()))?;
        let engine = &self.engine;
        let mut m = engine.maintenance.lock();
        while m.flushed_id < target {
            if let Some(err) = engine.bg_error() {
                return Err(err);
            }
            if m.shutdown {
                return Err(Error::closed());
            }
            engine.flush_done.wait(&mut m);
        }
        Ok(())
    }

    /// Compacts every table into one level (the bottom, level 6, with
    /// `dynamic_level_bytes`; with the static targets the bottom level in
    /// use, or the first deeper one whose size target holds the result),
    /// dropping every
    /// version no live snapshot, transaction or scan can see, and every
    /// tombstone with nothing left below it. Memtables are flushed first.
    /// Returns once the result is installed (or with the error that
    /// prevented it; the database is then unchanged).
    pub fn compact(&self) -> Result<()> {
        self.compact_range(Bound::Unbounded, Bound::Unbounded)
    }

    /// Like [`compact`](Self::compact), for the tables holding keys in
    /// `lower..upper` (bounds as in [`ScanOptions`]). Tables overlapping the
    /// range are compacted whole, so keys just outside it may be compacted
    /// too.
    pub fn compact_range(&self, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Result<()> {
        self.check_open()?;
        // Columnar tables in the range fold their cells into column chunks
        // first (docs/columnar.md), so this compaction drops the cells.
        crate::columnar::chunk_tables_in(self, &lower, &upper)?;
        self.flush()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        {
            let mut m = self.engine.maintenance.lock();
            if m.shutdown || m.stopped {
                return Err(self.engine.bg_error().unwrap_or_else(Error::closed));
            }
            m.manual.push_back(ManualRequest {
                lower,
                upper,
                done: tx,
            });
            self.engine.work_ready.notify_all();
        }
        // The thread answers every request it takes, and fails those still
        // queued when it stops; a dropped sender means it is gone.
        rx.recv().unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Writes a consistent copy of the database into `dest` while writes
    /// continue: exactly the commits at or below one commit timestamp (the
    /// report's `ts`). Table files are hard-linked where the file system
    /// allows (copied otherwise), memtable contents are written as new
    /// tables. `dest` must not exist or be an empty directory; a second
    /// backup into the same destination at the same time fails without
    /// touching it. See `backup.rs` for the steps.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::BackupReport> {
        self.check_open()?;
        crate::backup::backup(&self.engine, dest.as_ref())
    }

    /// Reads every block of every live table file and every WAL record
    /// through their checksums, changing nothing; problems are listed in
    /// the report (an error return is an I/O failure of the check itself).
    pub fn verify(&self) -> Result<crate::VerifyReport> {
        self.check_open()?;
        crate::verify::verify(&self.engine)
    }

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn stats(&self) -> Stats {
        let engine = &self.engine;
        let state = engine.state();
        let reads = engine.with_state(|state| {
            let c = &engine.counters;
            [
                retired(&c.retired_table_bytes_read)
                    + state
                        .levels
                        .all()
                        .map(|t| {
                            t.counters()
                                .bytes_read
                                .load(std::sync::atomic::Ordering::Relaxed)
                        })
                        .sum::<u64>(),
                retired(&c.retired_data_blocks_read)
                    + table_counter(state, |c| &c.data_block_reads),
                retired(&c.retired_bloom_checked) + table_counter(state, |c| &c.bloom_checked),
                retired(&c.retired_bloom_useful) + table_counter(state, |c| &c.bloom_useful),
                retired(&c.retired_hash_checked) + table_counter(state, |c| &c.hash_checked),
                retired(&c.retired_hash_useful) + table_counter(state, |c| &c.hash_useful),
            ]
        });
        let maintenance = engine.maintenance.lock();
        let mut s = Stats {
            visible_ts: engine.visible_ts(),
            memtable_bytes: state.mem.approximate_bytes() as u64,
            immutable_memtables: state.imms.len() as u64,
            memtable_index_bytes: std::iter::once(&state.mem)
                .chain(state.imms.iter())
                .map(|m| m.index_bytes() as u64)
                .sum(),
            tables: state.levels.table_count() as u64,
            checkpoint_tables: state.checkpoints.len() as u64,
            table_bytes: state.levels.total_bytes(),
            table_bytes_read: reads[0],
            data_blocks_read: reads[1],
            bloom_checked: reads[2],
            bloom_useful: reads[3],
            hash_index_checked: reads[4],
            hash_index_useful: reads[5],
            levels: (0..NUM_LEVELS)
                .map(|n| {
                    let c = &engine.counters;
                    let load = |a: &[std::sync::atomic::AtomicU64; NUM_LEVELS]| {
                        a[n].load(std::sync::atomic::Ordering::Relaxed)
                    };
                    LevelStats {
                        tables: state.levels.level(n).len() as u64,
                        bytes: state.levels.level_bytes(n),
                        compacted_in: load(&c.level_moved_in),
                        compaction_bytes_written: load(&c.level_written),
                    }
                })
                .collect(),
            pending_compaction_bytes: Policy::new(&engine.options).pending_bytes(&state.levels),
            live_bytes_estimate: state.levels.live_bytes_estimate(),
            compaction_error: maintenance.compaction_error.as_ref().map(|e| e.to_string()),
            // Due by reads and not yet picked up (the thread looks every
            // L0_READ_CHARGE_POLL) is busy too: the work is there. Not
            // while a failed compaction backs off: idle, as for a due
            // trigger compaction, with `compaction_error` saying why.
            maintenance_busy: maintenance.busy
                || (engine.options.auto_compaction
                    && !maintenance.stopped
                    && maintenance
                        .retry_at
                        .is_none_or(|t| std::time::Instant::now() >= t)
                    && !state.levels.level(0).is_empty()
                    && state.levels.l0_due_by_reads()),
            pending_wal_syncs: engine.pending_wal_syncs.get(),
            recovery: engine.recovery.clone(),
            background_error: engine.bg_error().map(|e| e.to_string()),
            range_tombstones: state.range_del_sets().map(|s| s.len() as u64).sum(),
            range_del_tree_nodes: state.range_del_sets().map(|s| s.tree_nodes() as u64).sum(),
            live_snapshots: engine.snapshots.count() as u64,
            oldest_snapshot_ts: engine.snapshots.oldest(),
            ..Stats::default()
        };
        drop(maintenance);
        engine.counters.fill(&mut s);
        let opener = &engine.tables;
        if let Some(cache) = opener.block_cache() {
            s.block_cache = cache.stats();
        }
        let tables = opener.table_cache();
        s.open_tables = tables.open_count().unwrap_or(s.tables);
        s.table_cache_hits = tables.hits();
        s.table_cache_misses = tables.misses();
        s
    }

    /// Closes this handle. The engine stops (after finishing queued writes
    /// and syncing the WAL) when the last handle on the directory closes;
    /// an earlier handle's close syncs the WAL too.
    /// Closing again returns the first close's outcome, once it is known.
    pub fn close(&self) -> Result<()> {
        self.close_handle(true)
    }

    /// `sync_if_not_last`: whether closing a handle that is not the last
    /// one syncs the WAL (an explicit close does; a drop does not).
    fn close_handle(&self, sync_if_not_last: bool) -> Result<()> {
        // Held through the close: a second close of this handle (the Node
        // binding's `close()` runs on the libuv pool, and JS may close
        // again meanwhile) waits for the first and reports its outcome,
        // never an early or a wrong `Ok`.
        let mut outcome = self.close_outcome.lock();
        if let Some(done) = &*outcome {
            return done.clone();
        }
        let result = self.close_once(sync_if_not_last);
        *outcome = Some(result.clone());
        result
    }

    fn close_once(&self, sync_if_not_last: bool) -> Result<()> {
        // Set first: new calls on this handle fail as closed at once.
        self.closed.store(true, Ordering::Release);
        let mut open = registry().lock();
        let last = match open.get_mut(&self.engine.dir) {
            Some(entry)
                if entry
                    .engine
                    .as_ref()
                    .is_some_and(|e| Arc::ptr_eq(e, &self.engine)) =>
            {
                entry.handles -= 1;
                if entry.handles == 0 {
                    // An open of the path waits until the shutdown has
                    // released the directory lock; other paths do not
                    // (a shutdown waits for a running compaction).
                    entry.changing = true;
                }
                entry.handles == 0
            }
            _ => false,
        };
        drop(open);
        if last {
            let _unregister = Unregister {
                dir: &self.engine.dir,
                ours: Some(self.engine.clone()),
            };
            return self.engine.shutdown();
        }
        if !sync_if_not_last {
            return Ok(());
        }
        // Other handles keep the engine running, but this close still
        // promises that what it acknowledged is on disk.
        self.engine.sync_wal()
    }

    pub fn is_closed(&self) -> bool {
        self.check_open().is_err()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = self.close_handle(false);
    }
}

fn retired(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// One of the per-table counters, summed over the live tables.
fn table_counter(
    state: &crate::engine::LsmState,
    pick: impl Fn(&crate::sstable::TableCounters) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    state
        .levels
        .all()
        .map(|t| pick(t.counters()).load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// The `[start, end)` ranges a range delete over scan-style bounds covers:
/// none when the bounds are empty, else one or two (around the reserved
/// table keys, which plain scans and clears never touch). Depends on the
/// bounds only, never on the data, so a binding may queue the ranges
/// behind writes not committed yet. An unbounded upper side ends just past
/// the largest possible key (`ff` x `MAX_KEY_LEN`, then `00`).
pub fn range_delete_spans(lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let successor = |mut k: Vec<u8>| {
        k.push(0);
        k
    };
    let start = match lower {
        Bound::Included(k) => k,
        // A key of the maximum length has no longer keys after it: the next
        // key is the prefix successor (none when it is all ff bytes).
        Bound::Excluded(k) if k.len() >= crate::key::MAX_KEY_LEN => {
            match crate::iter::prefix_successor(&k) {
                Some(next) => next,
                None => return Vec::new(),
            }
        }
        Bound::Excluded(k) => successor(k),
        // The smallest key: keys are never empty.
        Bound::Unbounded => vec![0],
    };
    let end = match upper {
        Bound::Included(k) => successor(k),
        Bound::Excluded(k) => k,
        Bound::Unbounded => successor(vec![0xff; crate::key::MAX_KEY_LEN]),
    };
    if start.is_empty() || start >= end || start.len() > crate::key::MAX_KEY_LEN {
        return Vec::new();
    }
    crate::columnar::user_ranges(&start, &end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No reference cycle keeps a closed engine alive (the committer holds
    /// no handle to the engine; the threads' handles end with them).
    #[test]
    fn the_engine_is_freed_when_the_last_handle_closes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let other = Database::open(dir.path()).unwrap();
        db.put("k", "v").unwrap();
        let txn = db.transaction().unwrap();
        txn.put("t", "1").unwrap();
        txn.commit().unwrap();
        drop(txn);
        db.flush().unwrap();
        db.compact().unwrap();
        let weak = Arc::downgrade(db.engine());
        db.close().unwrap();
        drop(db);
        assert!(weak.upgrade().is_some(), "another handle is still open");
        other.close().unwrap();
        drop(other);
        assert!(
            weak.upgrade().is_none(),
            "the engine outlived its last handle"
        );
    }
}
