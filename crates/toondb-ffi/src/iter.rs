//! Iterators over a database, snapshot or transaction: bounds, prefix,
//! reverse, limit and seek. Entries are fetched from the engine in batches.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use toondb_storage::{BatchScan, ScanOptions, Snapshot, Transaction};

use crate::db::{db_ref, ToondbDb};
use crate::error::{guard, guard_value, invalid, Result, ToondbError};
use crate::options::{read_scan, ToondbScanOptions};
use crate::txn::{snap_ref, txn_ref, ToondbSnapshot, ToondbTxn};
use crate::util::{bytes, handle, put_opt, put_out};

const BATCH_ENTRIES: usize = 256;
const BATCH_BYTES: usize = 1 << 20;

/// What an iterator reads; a seek scans it again from the new position.
enum IterSource {
    Snapshot(Arc<Snapshot>),
    Txn(Arc<Transaction>),
}

impl IterSource {
    fn scan(&self, options: ScanOptions) -> Result<Box<dyn BatchScan>> {
        Ok(match self {
            IterSource::Snapshot(s) => Box::new(s.scan(options)?),
            IterSource::Txn(t) => Box::new(t.scan(options)?),
        })
    }
}

struct IterState {
    /// `None` once closed, so the snapshot it pins is let go at once.
    source: Option<IterSource>,
    options: ScanOptions,
    scan: Box<dyn BatchScan>,
    buffer: VecDeque<(Vec<u8>, Vec<u8>)>,
    current: Option<(Vec<u8>, Vec<u8>)>,
    closed: bool,
}

/// An iterator. It may be used from any thread; calls on one iterator are
/// serialised, and the key and value it lends are valid only until the
/// next call on it from any thread.
pub struct ToondbIter {
    state: Mutex<IterState>,
}

fn new_iter(source: IterSource, options: ScanOptions, out: *mut *mut ToondbIter) -> Result<()> {
    if out.is_null() {
        return Err(invalid("out-pointer is NULL"));
    }
    let scan = source.scan(options.clone())?;
    let it = ToondbIter {
        state: Mutex::new(IterState {
            source: Some(source),
            options,
            scan,
            buffer: VecDeque::new(),
            current: None,
            closed: false,
        }),
    };
    // SAFETY: checked non-NULL; writable per the callers' contracts.
    unsafe { put_out(out, Box::into_raw(Box::new(it)), "out") }
}

/// Iterates the database as of now (a snapshot taken here; later writes are
/// not seen). `options` may be NULL (everything, forward). Free the
/// iterator with `toondb_iter_free`; it stays valid after the database
/// handle is freed (calls then fail with TOONDB_CLOSED once the engine is
/// closed).
///
/// # Safety
/// `options` is NULL or valid (bounds valid for their lengths, copied
/// here); `out` is valid for a write; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_iter(
    db: *const ToondbDb,
    options: *const ToondbScanOptions,
    out: *mut *mut ToondbIter,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (db, options) = unsafe { (db_ref(db)?, read_scan(options)?) };
        new_iter(IterSource::Snapshot(Arc::new(db.snapshot()?)), options, out)
    })
}

/// Iterates a snapshot. As for `toondb_iter`; a seek after the snapshot is
/// released fails with TOONDB_CLOSED.
///
/// # Safety
/// As for `toondb_iter`.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot_iter(
    snap: *const ToondbSnapshot,
    options: *const ToondbScanOptions,
    out: *mut *mut ToondbIter,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (snap, options) = unsafe { (snap_ref(snap)?, read_scan(options)?) };
        new_iter(IterSource::Snapshot(snap.clone()), options, out)
    })
}

/// Iterates a transaction's snapshot merged with its own writes as they
/// are now (and again at each seek). As for `toondb_iter`.
///
/// # Safety
/// As for `toondb_iter`.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_iter(
    txn: *const ToondbTxn,
    options: *const ToondbScanOptions,
    out: *mut *mut ToondbIter,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (txn, options) = unsafe { (txn_ref(txn)?, read_scan(options)?) };
        new_iter(IterSource::Txn(txn.clone()), options, out)
    })
}

/// # Safety
/// `it` is NULL or a live iterator.
unsafe fn with_iter<R>(
    it: *const ToondbIter,
    f: impl FnOnce(&mut IterState) -> Result<R>,
) -> Result<R> {
    // SAFETY: forwarded contract.
    let it = unsafe { handle(it, "iterator") }?;
    let mut st = it
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if st.closed {
        return Err(toondb_storage::Error::new(
            toondb_storage::ErrorKind::Closed,
            "iterator was closed",
        ));
    }
    f(&mut st)
}

/// Moves to the next entry. On success `*valid` says whether there is one;
/// if so `*key`/`*key_len` and `*value`/`*value_len` point at it, lent by
/// the iterator until the next call on it (copy them to keep them; never
/// free them). `value`/`value_len` may be NULL to skip the value.
///
/// # Safety
/// `it` is NULL or live; `valid`, `key`, `key_len` are valid for writes;
/// `value`/`value_len` NULL or valid for writes; `err` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn toondb_iter_next(
    it: *const ToondbIter,
    valid: *mut bool,
    key: *mut *const u8,
    key_len: *mut usize,
    value: *mut *const u8,
    value_len: *mut usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        if valid.is_null() || key.is_null() || key_len.is_null() {
            return Err(invalid("valid/key/key_len out-pointer is NULL"));
        }
        // SAFETY: forwarded contract.
        unsafe {
            with_iter(it, |st| {
                if st.buffer.is_empty() && !st.scan.is_done() {
                    let batch = st.scan.next_batch(BATCH_ENTRIES, BATCH_BYTES)?;
                    st.buffer.extend(batch);
                }
                st.current = st.buffer.pop_front();
                let (k, v): (&[u8], &[u8]) = match &st.current {
                    Some((k, v)) => (k, v),
                    None => (&[], &[]),
                };
                // SAFETY: out-pointers checked non-NULL above (value ones may
                // be NULL: skipped). The lent pointers stay valid while
                // `current` is unchanged, i.e. until the next call.
                put_out(valid, st.current.is_some(), "valid")?;
                put_out(key, k.as_ptr(), "key")?;
                put_out(key_len, k.len(), "key_len")?;
                put_opt(value, v.as_ptr());
                put_opt(value_len, v.len());
                Ok(())
            })
        }
    })
}

/// Repositions the iterator: the next `toondb_iter_next` returns the first
/// key >= `key` (the last key <= `key` in reverse), within the original
/// bounds, read at the same snapshot. The limit counts again from here.
///
/// # Safety
/// `key` is valid for `key_len` bytes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_iter_seek(
    it: *const ToondbIter,
    key: *const u8,
    key_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        // SAFETY: forwarded contract.
        unsafe {
            with_iter(it, |st| {
                let options = st.options.clone().starting_at(key);
                let source = st
                    .source
                    .as_ref()
                    .ok_or_else(toondb_storage::Error::closed)?;
                st.scan = source.scan(options)?;
                st.buffer.clear();
                st.current = None;
                Ok(())
            })
        }
    })
}

/// Ends the iteration early and lets go of its snapshot; later calls fail
/// with TOONDB_CLOSED. Closing twice is a no-op.
///
/// # Safety
/// `it` is NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_iter_close(
    it: *const ToondbIter,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let it = unsafe { handle(it, "iterator") }?;
        let mut st = it
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !st.closed {
            st.closed = true;
            st.buffer = VecDeque::new();
            st.current = None;
            // Drop the engine scan and the source (their pinned snapshot) now.
            st.scan = Box::new(Finished);
            st.source = None;
        }
        Ok(())
    })
}

/// Frees the iterator (closing it). NULL is a no-op.
///
/// # Safety
/// `it` is NULL or a live iterator, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_iter_free(it: *mut ToondbIter) {
    if !it.is_null() {
        // SAFETY: came from `Box::into_raw` in `new_iter`; freed once.
        guard_value((), || drop(unsafe { Box::from_raw(it) }));
    }
}

/// An exhausted scan, standing in for a closed iterator's.
struct Finished;

impl BatchScan for Finished {
    fn next_batch(&mut self, _: usize, _: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(Vec::new())
    }

    fn is_done(&self) -> bool {
        true
    }
}
