//! The database handle: open, close, point reads and writes, batches,
//! flush, compaction and stats.

use std::ffi::{c_char, CStr};
use std::sync::Mutex;

use toondb_storage::{Database, WriteBatch, WriteOptions};

use crate::error::{guard, guard_value, invalid, Result, ToondbError};
use crate::options::{range_bound, read_options, ToondbOptions, ToondbStats};
use crate::read::Source;
use crate::util::{bytes, handle, opt_bytes, put_out, sync_arg};

/// An open database. Thread-safe: every function taking a `ToondbDb *` may
/// be called from several threads at once, except `toondb_db_free`.
pub struct ToondbDb {
    pub(crate) db: Database,
}

/// A write batch being built. Thread-safe (calls on one batch are
/// serialised); applied atomically by `toondb_write`.
pub struct ToondbBatch {
    batch: Mutex<WriteBatch>,
}

/// # Safety
/// `db` is NULL or a live `ToondbDb`.
pub(crate) unsafe fn db_ref<'a>(db: *const ToondbDb) -> Result<&'a Database> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { handle(db, "database") }?.db)
}

/// Opens (creating if missing, unless the options say otherwise) the
/// database in directory `path` (NUL-terminated UTF-8). `options` may be
/// NULL for the defaults. On success `*out` is a new handle: close it with
/// `toondb_close` and free it with `toondb_db_free`. Opening a directory this
/// process already has open shares its engine; another process holding it
/// gives TOONDB_LOCKED.
///
/// # Safety
/// `path` is NULL or NUL-terminated; `options` is NULL or initialised by
/// `toondb_options_init`; `out` is valid for a write; `err` is NULL or valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_open(
    path: *const c_char,
    options: *const ToondbOptions,
    out: *mut *mut ToondbDb,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        if path.is_null() {
            return Err(invalid("path is NULL"));
        }
        if out.is_null() {
            return Err(invalid("out-pointer is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated per the contract.
        let path = unsafe { CStr::from_ptr(path) }
            .to_str()
            .map_err(|_| invalid("path is not valid UTF-8"))?;
        // SAFETY: forwarded contract.
        let options = unsafe { read_options(options) }?.to_engine()?;
        let db = Database::open_with(path, options)?;
        let ptr = Box::into_raw(Box::new(ToondbDb { db }));
        // SAFETY: `out` checked non-NULL.
        unsafe { put_out(out, ptr, "out") }
    })
}

/// Closes the database: waits for queued writes and syncs the WAL. The
/// handle stays allocated; every later call on it (and on its transactions,
/// snapshots and iterators, once no other handle keeps the engine open)
/// fails with TOONDB_CLOSED. Closing twice is a no-op.
///
/// # Safety
/// `db` is NULL or a live handle; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_close(db: *mut ToondbDb, err: *mut *mut ToondbError) -> i32 {
    // SAFETY: forwarded contract.
    guard(err, || unsafe { db_ref(db) }?.close())
}

/// Frees the handle, closing it first if needed (without reporting a close
/// error: call `toondb_close` to see one). NULL is a no-op. Transactions,
/// snapshots and iterators made from it stay valid to call and free. No
/// other thread may be using `db` during or after this call.
///
/// # Safety
/// `db` is NULL or a live handle, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_db_free(db: *mut ToondbDb) {
    if db.is_null() {
        return;
    }
    guard_value((), || {
        // SAFETY: came from `Box::into_raw` in `toondb_open`; freed once.
        drop(unsafe { Box::from_raw(db) });
    });
}

/// Reads `key`. On success `*found` says whether it exists and `*value`,
/// `*value_len` hold a copy of its value (NULL, 0 when absent) that the
/// caller frees with `toondb_buffer_free(value, value_len)`. `found` may be
/// NULL.
///
/// # Safety
/// `key` is valid for `key_len` bytes; the out-pointers are valid for
/// writes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_get(
    db: *const ToondbDb,
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
            Source::Db(db_ref(db)?).get_alloc(bytes(key, key_len, "key")?, value, value_len, found)
        }
    })
}

/// Reads `key` into the caller's buffer, without allocating: copies up to
/// `cap` bytes into `buf` and sets `*value_len` to the value's full length
/// (when it is larger than `cap`, only a prefix was copied: call again
/// with a buffer of `*value_len` bytes). `*found` says whether the key
/// exists (`found` may be NULL).
///
/// # Safety
/// `key` is valid for `key_len` bytes, `buf` for `cap` bytes of writes
/// (NULL with cap 0); the out-pointers are valid for writes.
#[no_mangle]
pub unsafe extern "C" fn toondb_get_into(
    db: *const ToondbDb,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    value_len: *mut usize,
    found: *mut bool,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        unsafe {
            Source::Db(db_ref(db)?).get_into(
                bytes(key, key_len, "key")?,
                buf,
                cap,
                value_len,
                found,
            )
        }
    })
}

/// Writes `key` = `value`. `sync`: -1 the database's default, 0 no fsync,
/// 1 wait for fsync. Returns once committed (and durable if asked).
///
/// # Safety
/// `key`/`value` are valid for their lengths; `err` is NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn toondb_put(
    db: *const ToondbDb,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    sync: i32,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (db, key, value) = unsafe {
            (
                db_ref(db)?,
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        let mut batch = WriteBatch::new();
        batch.put(key, value)?;
        db.write_with(batch, WriteOptions::with_sync(sync_arg(sync)))
            .map(drop)
    })
}

/// Deletes `key` (no error when absent). `sync` as for `toondb_put`.
///
/// # Safety
/// `key` is valid for `key_len` bytes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_delete(
    db: *const ToondbDb,
    key: *const u8,
    key_len: usize,
    sync: i32,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (db, key) = unsafe { (db_ref(db)?, bytes(key, key_len, "key")?) };
        let mut batch = WriteBatch::new();
        batch.delete(key)?;
        db.write_with(batch, WriteOptions::with_sync(sync_arg(sync)))
            .map(drop)
    })
}

/// Deletes every key in `[start, end)` with one range tombstone: no key is
/// read, so the cost does not depend on how many keys the range holds.
/// Snapshots and transactions opened before keep seeing the keys. An empty
/// range (`start >= end`) or one reaching into the reserved table keys
/// (`ff 00 01 ..`) is `TOONDB_INVALID_ARGUMENT`. `sync` as for `toondb_put`.
///
/// # Safety
/// `start` is valid for `start_len` bytes, `end` for `end_len` bytes; `err`
/// is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_delete_range(
    db: *const ToondbDb,
    start: *const u8,
    start_len: usize,
    end: *const u8,
    end_len: usize,
    sync: i32,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (db, start, end) = unsafe {
            (
                db_ref(db)?,
                bytes(start, start_len, "start")?,
                bytes(end, end_len, "end")?,
            )
        };
        let mut batch = WriteBatch::new();
        batch.delete_range(start, end)?;
        db.write_with(batch, WriteOptions::with_sync(sync_arg(sync)))
            .map(drop)
    })
}

/// A new, empty write batch; free it with `toondb_batch_free`. Never NULL.
#[no_mangle]
pub extern "C" fn toondb_batch_new() -> *mut ToondbBatch {
    Box::into_raw(Box::new(ToondbBatch {
        batch: Mutex::new(WriteBatch::new()),
    }))
}

/// # Safety
/// `batch` is NULL or a live batch.
unsafe fn with_batch<R>(
    batch: *const ToondbBatch,
    f: impl FnOnce(&mut WriteBatch) -> Result<R>,
) -> Result<R> {
    // SAFETY: forwarded contract.
    let b = unsafe { handle(batch, "batch") }?;
    let mut guard = b
        .batch
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut guard)
}

/// Adds a put to the batch (copied; the buffers may be reused at once).
///
/// # Safety
/// `key`/`value` are valid for their lengths; `err` is NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn toondb_batch_put(
    batch: *mut ToondbBatch,
    key: *const u8,
    key_len: usize,
    value: *const u8,
    value_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (key, value) = unsafe {
            (
                bytes(key, key_len, "key")?,
                bytes(value, value_len, "value")?,
            )
        };
        // SAFETY: forwarded contract.
        unsafe { with_batch(batch, |b| b.put(key, value).map(drop)) }
    })
}

/// Adds a delete to the batch.
///
/// # Safety
/// `key` is valid for `key_len` bytes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_batch_delete(
    batch: *mut ToondbBatch,
    key: *const u8,
    key_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        // SAFETY: forwarded contract.
        unsafe { with_batch(batch, |b| b.delete(key).map(drop)) }
    })
}

/// Operations in the batch (0 for NULL).
///
/// # Safety
/// `batch` is NULL or a live batch.
#[no_mangle]
pub unsafe extern "C" fn toondb_batch_count(batch: *const ToondbBatch) -> usize {
    guard_value(0, || {
        // SAFETY: forwarded contract.
        let count = unsafe { with_batch(batch, |b| Ok(b.len())) };
        count.unwrap_or(0)
    })
}

/// Empties the batch for reuse. NULL is a no-op.
///
/// # Safety
/// `batch` is NULL or a live batch.
#[no_mangle]
pub unsafe extern "C" fn toondb_batch_clear(batch: *mut ToondbBatch) {
    guard_value((), || {
        let clear = |b: &mut WriteBatch| {
            b.clear();
            Ok(())
        };
        // SAFETY: forwarded contract.
        let _ = unsafe { with_batch(batch, clear) };
    });
}

/// Frees a batch. NULL is a no-op.
///
/// # Safety
/// `batch` is NULL or a live batch, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_batch_free(batch: *mut ToondbBatch) {
    if !batch.is_null() {
        // SAFETY: came from `Box::into_raw` in `toondb_batch_new`; freed once.
        guard_value((), || drop(unsafe { Box::from_raw(batch) }));
    }
}

/// Applies the batch atomically (all or nothing). The batch is emptied
/// whether or not the write succeeds, and stays owned by the caller (reuse
/// it or free it). `sync` as for `toondb_put`.
///
/// # Safety
/// `db`/`batch` are NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_write(
    db: *const ToondbDb,
    batch: *mut ToondbBatch,
    sync: i32,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let db = unsafe { db_ref(db) }?;
        // SAFETY: forwarded contract.
        let taken = unsafe { with_batch(batch, |b| Ok(std::mem::take(b))) }?;
        db.write_with(taken, WriteOptions::with_sync(sync_arg(sync)))
            .map(drop)
    })
}

/// Applies `count` operations atomically from flat arrays, in one call:
/// `kinds[i]` is 1 for a put, 0 for a delete; `lens[2i]` and `lens[2i+1]`
/// are the key and value lengths of operation i (value length 0 for a
/// delete); `data` holds key0, value0, key1, value1, ... back to back.
/// `sync` as for `toondb_put`.
///
/// # Safety
/// `kinds` is valid for `count` bytes, `lens` for `2 * count` values, `data`
/// for `data_len` bytes; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_write_flat(
    db: *const ToondbDb,
    kinds: *const u8,
    lens: *const u32,
    count: usize,
    data: *const u8,
    data_len: usize,
    sync: i32,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        let pairs = count
            .checked_mul(2)
            .ok_or_else(|| invalid("count is too large"))?;
        // SAFETY: forwarded contract.
        let (db, kinds, data) = unsafe {
            (
                db_ref(db)?,
                bytes(kinds, count, "kinds")?,
                bytes(data, data_len, "data")?,
            )
        };
        if lens.is_null() && count > 0 {
            return Err(invalid("lens is NULL"));
        }
        let lens: &[u32] = if count == 0 {
            &[]
        } else {
            // SAFETY: non-NULL and valid for `2 * count` values per the contract.
            unsafe { std::slice::from_raw_parts(lens, pairs) }
        };
        let mut batch = WriteBatch::with_capacity(data.len() + count * 4);
        let mut at = 0usize;
        let mut take = |n: u32| -> Result<&[u8]> {
            let end = at
                .checked_add(n as usize)
                .filter(|&e| e <= data.len())
                .ok_or_else(|| invalid("lens run past the end of data"))?;
            let s = &data[at..end];
            at = end;
            Ok(s)
        };
        for (i, kind) in kinds.iter().enumerate() {
            let key = take(lens[2 * i])?;
            let value = take(lens[2 * i + 1])?;
            match kind {
                1 => batch.put(key, value)?,
                0 => batch.delete(key)?,
                k => return Err(invalid(format!("kinds[{i}] is {k}; 1 is put, 0 delete"))),
            };
        }
        if at != data.len() {
            return Err(invalid("data is longer than lens say"));
        }
        db.write_with(batch, WriteOptions::with_sync(sync_arg(sync)))
            .map(drop)
    })
}

/// Writes every memtable to table files and waits for it.
///
/// # Safety
/// `db` is NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_flush(db: *const ToondbDb, err: *mut *mut ToondbError) -> i32 {
    // SAFETY: forwarded contract.
    guard(err, || unsafe { db_ref(db) }?.flush())
}

/// Compacts every table into the bottom level, dropping versions no live
/// snapshot can see; waits for it.
///
/// # Safety
/// `db` is NULL or live; `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_compact(db: *const ToondbDb, err: *mut *mut ToondbError) -> i32 {
    // SAFETY: forwarded contract.
    guard(err, || unsafe { db_ref(db) }?.compact())
}

/// Compacts the tables holding keys in [lower, upper); a NULL bound is
/// unbounded (an empty bound is a non-NULL pointer with length 0).
///
/// # Safety
/// Non-NULL bounds are valid for their lengths; `err` is NULL or valid for
/// a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_compact_range(
    db: *const ToondbDb,
    lower: *const u8,
    lower_len: usize,
    upper: *const u8,
    upper_len: usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let (db, lo, hi) = unsafe {
            (
                db_ref(db)?,
                opt_bytes(lower, lower_len),
                opt_bytes(upper, upper_len),
            )
        };
        db.compact_range(range_bound(lo, true), range_bound(hi, false))
    })
}

/// Fills `*out` with the engine's counters. Set `out->struct_size =
/// sizeof(ToondbStats)` first; only that many bytes are written.
///
/// # Safety
/// `out` is valid for `out->struct_size` bytes of reads and writes; `err`
/// is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_stats(
    db: *const ToondbDb,
    out: *mut ToondbStats,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let db = unsafe { db_ref(db) }?;
        if out.is_null() {
            return Err(invalid("stats out-pointer is NULL"));
        }
        // SAFETY: non-NULL; `struct_size` is the first field.
        let size = unsafe { out.cast::<usize>().read_unaligned() };
        if size < std::mem::size_of::<usize>() {
            return Err(invalid("ToondbStats.struct_size is not set"));
        }
        if db.is_closed() {
            return Err(toondb_storage::Error::closed());
        }
        let mut stats = ToondbStats::from_engine(&db.stats());
        stats.struct_size = size.min(std::mem::size_of::<ToondbStats>());
        // SAFETY: the caller promises `size` writable bytes; we write at
        // most that many, from a fully initialised struct.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&stats as *const ToondbStats).cast::<u8>(),
                out.cast::<u8>(),
                stats.struct_size,
            )
        };
        Ok(())
    })
}
