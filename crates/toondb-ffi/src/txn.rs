//! Transactions and snapshots.

use std::sync::Arc;

use toondb_storage::{Isolation, Snapshot, Transaction, TransactionOptions};

use crate::db::{db_ref, ToondbDb};
use crate::error::{guard, guard_value, invalid, ToondbError};
use crate::read::{guard_len, Source};
use crate::util::{bytes, handle, put_opt, put_out, sync_arg};

/// Snapshot isolation: a commit fails with TOONDB_CONFLICT when another
/// transaction committed a write to one of its keys after it began.
pub const TOONDB_ISOLATION_SNAPSHOT: i32 = 0;
/// Serializable (optimistic): also fails when a key or range it read was
/// written after it began.
pub const TOONDB_ISOLATION_SERIALIZABLE: i32 = 1;
/// `sync` argument: use the database's default durability.
pub const TOONDB_SYNC_DEFAULT: i32 = -1;

/// A transaction: reads at the snapshot taken when it began plus its own
/// writes. Thread-safe (calls are serialised inside). After commit or
/// rollback every call but `toondb_txn_free` fails with TOONDB_CLOSED.
pub struct ToondbTxn {
    pub(crate) txn: Arc<Transaction>,
}

/// A consistent read-only view of the database. Thread-safe.
pub struct ToondbSnapshot {
    pub(crate) snap: Arc<Snapshot>,
}

/// Begins a transaction. `isolation` is a `TOONDB_ISOLATION_*` constant;
/// `sync` is the commit's durability as for `toondb_put`. `*out` gets the
/// handle: finish it with `toondb_txn_commit` or `toondb_txn_rollback` and
/// free it with `toondb_txn_free`.
///
/// # Safety
/// `db` is NULL or live; `out` is valid for a write; `err` is NULL or valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_begin(
    db: *const ToondbDb,
    isolation: i32,
    sync: i32,
    out: *mut *mut ToondbTxn,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let db = unsafe { db_ref(db) }?;
        let isolation = match isolation {
            TOONDB_ISOLATION_SNAPSHOT => Isolation::Snapshot,
            TOONDB_ISOLATION_SERIALIZABLE => Isolation::Serializable,
            i => return Err(invalid(format!("isolation must be 0 or 1, got {i}"))),
        };
        if out.is_null() {
            return Err(invalid("out-pointer is NULL"));
        }
        let options = TransactionOptions::default()
            .isolation(isolation)
            .sync(sync_arg(sync));
        let txn = Arc::new(db.transaction_with(options)?);
        // SAFETY: checked non-NULL.
        unsafe { put_out(out, Box::into_raw(Box::new(ToondbTxn { txn })), "out") }
    })
}

/// # Safety
/// `txn` is NULL or a live handle.
pub(crate) unsafe fn txn_ref<'a>(
    txn: *const ToondbTxn,
) -> crate::error::Result<&'a Arc<Transaction>> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { handle(txn, "transaction") }?.txn)
}

/// Reads `key`: the transaction's own write if it made one, else its
/// snapshot. Ownership as for `toondb_get`.
///
/// # Safety
/// As for `toondb_get`.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_get(
    txn: *const ToondbTxn,
    key: *const u8,
    key_len: usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    found: *mut bool,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        unsafe {
            Source::Txn(txn_ref(txn)?).get_alloc(
                bytes(key, key_len, "key")?,
                value,
                value_len,
                found,
            )
        }
    })
}

/// Reads `key` (the transaction's own write if it made one, else its
/// snapshot) into the caller's buffer; returns as `toondb_get_buf` does.
///
/// # Safety
/// As for `toondb_get_buf`, with a live `txn`.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_get_buf(
    txn: *const ToondbTxn,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    err: *mut *mut ToondbError,
) -> i64 {
    guard_len(err, || {
        // SAFETY: forwarded contract.
        unsafe { Source::Txn(txn_ref(txn)?).get_buf(bytes(key, key_len, "key")?, buf, cap) }
    })
}

/// Buffers a put (applied at commit).
///
/// # Safety
/// `key`/`value` are valid for their lengths; `err` is NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_put(
    txn: *const ToondbTxn,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (txn, key, value) = unsafe {
            (
                txn_ref(txn)?,
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        txn.put(key, value)
    })
}

/// Buffers a delete (applied at commit).
///
/// # Safety
/// `key` is valid for `key_len` bytes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_delete(
    txn: *const ToondbTxn,
    key: *const u8,
    key_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (txn, key) = unsafe { (txn_ref(txn)?, bytes(key, key_len, "key")?) };
        txn.delete(key)
    })
}

/// Commits and waits: all the writes or none. TOONDB_CONFLICT means another
/// commit won; begin a new transaction to retry. `*commit_ts` (may be
/// NULL) gets the commit timestamp. The transaction is finished whatever
/// the outcome.
///
/// # Safety
/// `txn` is NULL or live; `commit_ts` and `err` are NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_commit(
    txn: *const ToondbTxn,
    commit_ts: *mut u64,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let ts = unsafe { txn_ref(txn) }?.commit()?;
        // SAFETY: forwarded contract (NULL allowed).
        unsafe { put_opt(commit_ts, ts) };
        Ok(())
    })
}

/// Discards the buffered writes and ends the transaction.
///
/// # Safety
/// `txn` is NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_rollback(
    txn: *const ToondbTxn,
    err: *mut *mut ToondbError,
) -> i32 {
    // SAFETY: forwarded contract.
    guard(err, || unsafe { txn_ref(txn) }?.rollback())
}

/// Frees the handle, rolling back a transaction still active. NULL is a
/// no-op. Iterators made from it stay valid.
///
/// # Safety
/// `txn` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_txn_free(txn: *mut ToondbTxn) {
    if !txn.is_null() {
        guard_value((), || {
            // SAFETY: came from `Box::into_raw` in `toondb_txn_begin`; freed once.
            let t = unsafe { Box::from_raw(txn) };
            if t.txn.is_active() {
                let _ = t.txn.rollback();
            }
        });
    }
}

/// Takes a snapshot of the database as of now. Release it with
/// `toondb_snapshot_release` (old versions are kept while it lives) and
/// free it with `toondb_snapshot_free`.
///
/// # Safety
/// `db` is NULL or live; `out` is valid for a write; `err` is NULL or valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot(
    db: *const ToondbDb,
    out: *mut *mut ToondbSnapshot,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let db = unsafe { db_ref(db) }?;
        if out.is_null() {
            return Err(invalid("out-pointer is NULL"));
        }
        let snap = Arc::new(db.snapshot()?);
        // SAFETY: checked non-NULL.
        unsafe { put_out(out, Box::into_raw(Box::new(ToondbSnapshot { snap })), "out") }
    })
}

/// # Safety
/// `snap` is NULL or a live handle.
pub(crate) unsafe fn snap_ref<'a>(
    snap: *const ToondbSnapshot,
) -> crate::error::Result<&'a Arc<Snapshot>> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { handle(snap, "snapshot") }?.snap)
}

/// Reads `key` as of the snapshot. Ownership as for `toondb_get`.
///
/// # Safety
/// As for `toondb_get`.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot_get(
    snap: *const ToondbSnapshot,
    key: *const u8,
    key_len: usize,
    value: *mut *mut u8,
    value_len: *mut usize,
    found: *mut bool,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        unsafe {
            Source::Snapshot(snap_ref(snap)?).get_alloc(
                bytes(key, key_len, "key")?,
                value,
                value_len,
                found,
            )
        }
    })
}

/// Reads `key` as of the snapshot into the caller's buffer; returns as
/// `toondb_get_buf` does.
///
/// # Safety
/// As for `toondb_get_buf`, with a live `snap`.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot_get_buf(
    snap: *const ToondbSnapshot,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    err: *mut *mut ToondbError,
) -> i64 {
    guard_len(err, || {
        // SAFETY: forwarded contract.
        unsafe { Source::Snapshot(snap_ref(snap)?).get_buf(bytes(key, key_len, "key")?, buf, cap) }
    })
}

/// Ends the snapshot: later reads through it fail with TOONDB_CLOSED
/// (iterators already made keep working). Releasing twice is a no-op.
///
/// # Safety
/// `snap` is NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot_release(
    snap: *const ToondbSnapshot,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        unsafe { snap_ref(snap) }?.release();
        Ok(())
    })
}

/// Frees the handle (releasing the snapshot). NULL is a no-op.
///
/// # Safety
/// `snap` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_snapshot_free(snap: *mut ToondbSnapshot) {
    if !snap.is_null() {
        // SAFETY: came from `Box::into_raw` in `toondb_snapshot`; freed once.
        guard_value((), || drop(unsafe { Box::from_raw(snap) }));
    }
}
