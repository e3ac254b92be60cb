//! `Transaction`: reads at the snapshot taken at begin plus its own
//! buffered writes; `commit` hands the writes to the commit thread, which
//! applies them atomically or fails them with `Conflict`.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::batch::WriteBatch;
use crate::commit::{CommitMsg, Completion};
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::iter::{DbIter, Scan, ScanOptions};
use crate::key::{check_key, check_value, KeyRange, Timestamp};
use crate::read::range_contains;
use crate::txn::{ConflictCheck, TxnScan};

/// How a transaction is validated at commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Isolation {
    /// Snapshot isolation: reads see the snapshot taken at begin; a commit
    /// fails if another transaction committed a write to one of the same
    /// keys after that snapshot (first committer wins). Write skew is
    /// possible.
    #[default]
    Snapshot,
    /// Serializable (optimistic): additionally fails if any key or range
    /// the transaction read was written after its snapshot.
    Serializable,
}

/// Build with `TransactionOptions::default()` and the setters (or set the
/// fields): the struct is `#[non_exhaustive]` so options can be added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionOptions {
    pub isolation: Isolation,
    /// Durability of the commit; `None` uses the database's `sync` option.
    pub sync: Option<bool>,
}

impl TransactionOptions {
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    pub fn sync(mut self, sync: Option<bool>) -> Self {
        self.sync = sync;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Committed,
    RolledBack,
}

/// Keeps the read timestamp registered (see `SnapshotList`) until dropped.
struct ReadTsGuard {
    engine: Arc<Engine>,
    ts: Timestamp,
}

impl Drop for ReadTsGuard {
    fn drop(&mut self) {
        self.engine.snapshots.release(self.ts);
    }
}

struct TxnState {
    status: Status,
    /// Buffered writes; `None` is a delete.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    read_keys: Vec<Vec<u8>>,
    read_ranges: Vec<KeyRange>,
    guard: Option<ReadTsGuard>,
}

pub struct Transaction {
    engine: Arc<Engine>,
    read_ts: Timestamp,
    options: TransactionOptions,
    state: Mutex<TxnState>,
}

impl std::fmt::Debug for Transaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transaction")
            .field("read_ts", &self.read_ts)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Transaction {
    pub(crate) fn begin(engine: Arc<Engine>, options: TransactionOptions) -> Transaction {
        let read_ts = engine.snapshots.acquire(|| engine.visible_ts());
        Transaction {
            state: Mutex::new(TxnState {
                status: Status::Active,
                writes: BTreeMap::new(),
                read_keys: Vec::new(),
                read_ranges: Vec::new(),
                guard: Some(ReadTsGuard {
                    engine: engine.clone(),
                    ts: read_ts,
                }),
            }),
            engine,
            read_ts,
            options,
        }
    }

    /// The snapshot timestamp this transaction reads at.
    pub fn read_ts(&self) -> Timestamp {
        self.read_ts
    }

    pub fn isolation(&self) -> Isolation {
        self.options.isolation
    }

    fn serializable(&self) -> bool {
        self.options.isolation == Isolation::Serializable
    }

    fn active(&self) -> Result<MutexGuard<'_, TxnState>> {
        let st = self.state.lock();
        match st.status {
            Status::Active if self.engine.is_closed() => Err(Error::closed()),
            Status::Active => Ok(st),
            Status::Committed => Err(Error::new(
                ErrorKind::Closed,
                "transaction was already committed",
            )),
            Status::RolledBack => Err(Error::new(
                ErrorKind::Closed,
                "transaction was already rolled back",
            )),
        }
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.get_with(key, |v| v.map(<[u8]>::to_vec))
    }

    /// Own writes first, then the snapshot.
    pub fn get_with<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        let key = key.as_ref();
        check_key(key)?;
        crate::columnar::check_user_key(key)?;
        let mut st = self.active()?;
        if let Some(own) = st.writes.get(key) {
            return Ok(f(own.as_deref()));
        }
        if self.serializable() {
            st.read_keys.push(key.to_vec());
        }
        drop(st);
        let result = self.engine.get_at(key, self.read_ts, f)?;
        // A commit or rollback racing this read (from another thread) may
        // have unregistered the read timestamp, letting a compaction drop a
        // version the read needed; still active now means it was registered
        // throughout, so the value is the snapshot's.
        drop(self.active()?);
        Ok(result)
    }

    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_key(key)?;
        crate::columnar::check_user_key(key)?;
        check_value(value)?;
        self.active()?
            .writes
            .insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        check_key(key)?;
        crate::columnar::check_user_key(key)?;
        self.active()?.writes.insert(key.to_vec(), None);
        Ok(())
    }

    /// Buffers already-checked writes (the columnar layer: reserved keys
    /// allowed), all under one lock: all of them or none.
    pub(crate) fn write_raw(&self, cells: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut st = self.active()?;
        for (k, v) in cells {
            st.writes.insert(k, v);
        }
        Ok(())
    }

    /// For the columnar layer: this transaction's own writes in `range`
    /// (in key order), its read timestamp pinned once more for the caller
    /// (who must release it), and, when serializable, the range recorded as
    /// read.
    pub(crate) fn read_view(&self, range: KeyRange) -> Result<crate::columnar::CellReader> {
        let mut st = self.active()?;
        let own = st
            .writes
            .iter()
            .filter(|(k, _)| range_contains(&range, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.serializable() {
            st.read_ranges.push(range);
        }
        let pinned = self.engine.snapshots.acquire(|| self.read_ts);
        drop(st);
        Ok(crate::columnar::CellReader::new(
            self.engine.clone(),
            pinned,
            own,
        ))
    }

    /// A scan of the snapshot merged with this transaction's writes as they
    /// are now (writes made after this call are not seen by it).
    pub fn scan(&self, options: ScanOptions) -> Result<TxnScan> {
        let mut st = self.active()?;
        let range: KeyRange = (options.lower.clone(), options.upper.clone());
        let mut own: Vec<(Vec<u8>, Option<Vec<u8>>)> = st
            .writes
            .iter()
            .filter(|(k, _)| range_contains(&range, k) && !crate::columnar::is_reserved(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if options.reverse {
            own.reverse();
        }
        if self.serializable() {
            st.read_ranges.push(range);
        }
        // The scan pins the read timestamp itself, so it may outlive the
        // transaction. Pinned while the transaction is active (its state
        // lock held), so the timestamp is never unregistered in between.
        let pinned = self.engine.snapshots.acquire(|| self.read_ts);
        drop(st);
        let limit = options.limit;
        let base = Scan::new(
            self.engine.clone(),
            self.engine.state(),
            pinned,
            ScanOptions {
                limit: None,
                ..options.clone()
            },
        )
        .hiding_reserved();
        Ok(TxnScan::new(base, own, options.reverse, limit))
    }

    pub fn iter(&self, options: ScanOptions) -> Result<DbIter> {
        Ok(DbIter::from_txn(self.scan(options)?))
    }

    /// Commits and waits; returns the commit timestamp (the read timestamp
    /// for a transaction that wrote nothing).
    ///
    /// When the engine is idle the commit runs on this thread, fsync
    /// included (the caller blocks either way).
    pub fn commit(&self) -> Result<Timestamp> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if let Some(result) = self.commit_here_or(
            true,
            Completion::new(move |r| {
                let _ = tx.send(r);
            }),
        ) {
            return result;
        }
        rx.recv().unwrap_or_else(|_| Err(Error::closed()))
    }

    /// Starts the commit; `done` is called exactly once, from the commit
    /// thread or from this call. After this call the transaction is
    /// finished whatever the outcome: retry a conflict with a new one.
    pub fn commit_with(&self, done: impl FnOnce(Result<Timestamp>) + Send + 'static) {
        let done = Completion::new(done);
        match self.prepare_commit() {
            Prepared::Done(result) => done.complete(result),
            Prepared::Submit(commit) => self.submit(commit, done),
        }
    }

    /// Like `commit_with`, but when the commit can be finished on this
    /// thread (nothing to write, a failure found up front, or an idle engine
    /// and no fsync needed) returns its result instead and never calls
    /// `done`; `None` means `done` will be called.
    /// An fsync never runs on the caller's thread: a durable commit is
    /// always handed to the commit thread.
    pub fn commit_inline_or(
        &self,
        done: impl FnOnce(Result<Timestamp>) + Send + 'static,
    ) -> Option<Result<Timestamp>> {
        self.commit_here_or(false, Completion::new(done))
    }

    /// `commit_inline_or`, where `may_sync` lets a durable commit run (and
    /// fsync) on this thread too.
    fn commit_here_or(
        &self,
        may_sync: bool,
        done: Completion<Timestamp>,
    ) -> Option<Result<Timestamp>> {
        let commit = match self.prepare_commit() {
            Prepared::Done(result) => {
                done.disarm();
                return Some(result);
            }
            Prepared::Submit(commit) => commit,
        };
        if commit.sync && !may_sync {
            self.submit(commit, done);
            return None;
        }
        let PreparedCommit {
            batch,
            check,
            guard,
            sync,
        } = commit;
        match crate::commit::try_commit_inline(&self.engine, batch, Some(check), sync) {
            Ok(result) => {
                drop(guard);
                done.disarm();
                Some(result)
            }
            Err((batch, check)) => {
                let check = check.unwrap_or_default();
                let commit = PreparedCommit {
                    batch,
                    check,
                    guard,
                    sync,
                };
                self.submit(commit, done);
                None
            }
        }
    }

    /// Ends the transaction and turns its writes into a batch to commit.
    fn prepare_commit(&self) -> Prepared {
        let mut st = match self.active() {
            Ok(st) => st,
            Err(e) => return Prepared::Done(Err(e)),
        };
        st.status = Status::Committed;
        let guard = st.guard.take();
        let writes = std::mem::take(&mut st.writes);
        let check = Box::new(ConflictCheck {
            read_ts: self.read_ts,
            read_keys: std::mem::take(&mut st.read_keys),
            read_ranges: std::mem::take(&mut st.read_ranges),
        });
        drop(st);
        if writes.is_empty() {
            // Read-only: nothing to validate, never conflicts.
            return Prepared::Done(Ok(self.read_ts));
        }
        match batch_of(writes) {
            Ok(batch) => Prepared::Submit(PreparedCommit {
                batch,
                check,
                guard,
                sync: self.options.sync.unwrap_or(self.engine.options.sync),
            }),
            Err(e) => Prepared::Done(Err(e)),
        }
    }

    fn submit(&self, commit: PreparedCommit, done: Completion<Timestamp>) {
        let PreparedCommit {
            batch,
            check,
            guard,
            sync,
        } = commit;
        // The read timestamp stays registered until the commit thread has
        // validated against it.
        let done = Completion::new(move |r| {
            drop(guard);
            done.complete(r);
        });
        self.engine.send_commit(CommitMsg::Write {
            batch,
            sync,
            check: Some(check),
            done,
        });
    }

    /// Discards the buffered writes. Later use of the transaction fails.
    pub fn rollback(&self) -> Result<()> {
        let mut st = self.active()?;
        st.status = Status::RolledBack;
        st.writes.clear();
        st.guard = None;
        Ok(())
    }

    /// Whether the transaction can still be used.
    pub fn is_active(&self) -> bool {
        self.state.lock().status == Status::Active
    }
}

struct PreparedCommit {
    batch: WriteBatch,
    check: Box<ConflictCheck>,
    guard: Option<ReadTsGuard>,
    sync: bool,
}

enum Prepared {
    Done(Result<Timestamp>),
    Submit(PreparedCommit),
}

fn batch_of(writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<WriteBatch> {
    let bytes: usize = writes
        .iter()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len) + 12)
        .sum();
    let mut batch = WriteBatch::with_capacity(bytes);
    for (key, value) in &writes {
        match value {
            Some(v) => batch.put_raw(key, v)?,
            None => batch.delete_raw(key)?,
        };
    }
    Ok(batch)
}
