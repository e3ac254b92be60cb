//! The database handle: open, close, point reads and writes, batches,
//! flush, compaction and stats.

use std::ffi::{c_char, CStr};
use std::sync::Mutex;

use toondb_storage::{Database, WriteBatch, WriteOptions};

use crate::error::{guard, guard_value, invalid, Result, ToondbError};
use crate::options::{range_bound, read_options, ToondbOptions, ToondbStats};
use crate::read::{guard_len, Source, TOONDB_ABSENT};
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

/// Reads `key` into the caller's buffer in one call, without allocating:
/// the fastest point read. Returns the value's length, having copied it to
/// `buf` when it fits in `cap` bytes (when it is longer, nothing was
/// copied: call again with a buffer of at least that length); or
/// `TOONDB_ABSENT` (-1) when the key does not exist; or, on failure,
/// `-1 - code` for the `TOONDB_*` error code (so always below -1), with
/// `*err` set as for any other function.
///
/// # Safety
/// `key` is valid for `key_len` bytes, `buf` for `cap` bytes of writes
/// (NULL with cap 0); `err` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn toondb_get_buf(
    db: *const ToondbDb,
    key: *const u8,
    key_len: usize,
    buf: *mut u8,
    cap: usize,
    err: *mut *mut ToondbError,
) -> i64 {
    guard_len(err, || {
        // SAFETY: forwarded contract.
        unsafe { Source::Db(db_ref(db)?).get_buf(bytes(key, key_len, "key")?, buf, cap) }
    })
}

/// Reads `count` keys at one snapshot, in one call. The keys are
/// `key_lens[0]`, `key_lens[1]`, ... bytes of `keys`, back to back. On
/// success `value_lens[i]` is the length of key i's value or
/// `TOONDB_ABSENT` (-1), `*needed` the total length of the values found,
/// and when `*needed <= cap` the values are in `buf`, back to back in key
/// order (absent keys take no room). When `*needed > cap` the contents of
/// `buf` are unspecified (the values that fit before the total passed `cap`
/// may have been copied): call again with a buffer of at least `*needed`
/// bytes (that call reads at a new snapshot). A bad key fails the whole
/// call.
///
/// # Safety
/// `keys` is valid for the sum of `key_lens` bytes, `key_lens` for `count`
/// reads, `value_lens` for `count` writes, `buf` for `cap` bytes of writes
/// (NULL with cap 0), `needed` for a write; `err` is NULL or valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn toondb_get_many(
    db: *const ToondbDb,
    keys: *const u8,
    key_lens: *const u32,
    count: usize,
    buf: *mut u8,
    cap: usize,
    value_lens: *mut i64,
    needed: *mut usize,
    err: *mut *mut ToondbError,
) -> i32 {
    guard(err, || {
        // SAFETY: forwarded contract.
        let db = unsafe { db_ref(db) }?;
        if count > 0 && (key_lens.is_null() || value_lens.is_null()) {
            return Err(invalid("key_lens or value_lens is NULL"));
        }
        if needed.is_null() {
            return Err(invalid("needed out-pointer is NULL"));
        }
        if buf.is_null() && cap > 0 {
            return Err(invalid("buf is NULL but cap is not 0"));
        }
        let (key_lens, value_lens): (&[u32], &mut [i64]) = if count == 0 {
            (&[], &mut [])
        } else {
            // SAFETY: non-NULL and valid for `count` elements per the
            // contract; the caller's arrays cannot overlap each other.
            unsafe {
                (
                    std::slice::from_raw_parts(key_lens, count),
                    std::slice::from_raw_parts_mut(value_lens, count),
                )
            }
        };
        let total_keys = key_lens
            .iter()
            .try_fold(0usize, |sum, &n| sum.checked_add(n as usize))
            .ok_or_else(|| invalid("key_lens overflow"))?;
        // SAFETY: forwarded contract.
        let keys = unsafe { bytes(keys, total_keys, "keys") }?;
        // One snapshot for every key, so the values are consistent.
        let snap = db.snapshot()?;
        let mut at_key = 0usize;
        let mut total = 0usize;
        for (&key_len, out) in key_lens.iter().zip(value_lens.iter_mut()) {
            let key = &keys[at_key..at_key + key_len as usize];
            at_key += key_len as usize;
            *out = snap.get_with(key, |v| match v {
                None => TOONDB_ABSENT,
                Some(v) => {
                    let end = total.saturating_add(v.len());
                    if end <= cap && !v.is_empty() {
                        // SAFETY: `buf` holds `cap >= end` writable bytes,
                        // disjoint from the engine's memory.
                        unsafe {
                            std::ptr::copy_nonoverlapping(v.as_ptr(), buf.add(total), v.len())
                        };
                    }
                    total = end;
                    i64::try_from(v.len()).unwrap_or(i64::MAX)
                }
            })?;
        }
        snap.release();
        // SAFETY: checked non-NULL above.
        unsafe { put_out(needed, total, "needed") }
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
