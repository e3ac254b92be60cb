//! Point reads shared by databases, snapshots and transactions: a copy the
//! caller frees (`*_get`), or a copy into the caller's buffer (`*_get_into`,
//! no allocation).

use toondb_storage::{Database, Snapshot, Transaction};

use crate::error::{guard, Result, ToondbError, TOONDB_OK};
use crate::util::{into_buffer, put_opt, put_out};

/// What the `*_get_buf` functions return for a key that does not exist.
/// Other negative results are errors: `-1 - code` for a `TOONDB_*` code.
pub const TOONDB_ABSENT: i64 = -1;

/// Runs a `*_get_buf` body: its value length, or `-1 - code` on failure
/// (with `*err` set as `guard` does).
pub(crate) fn guard_len(err: *mut *mut ToondbError, body: impl FnOnce() -> Result<i64>) -> i64 {
    let mut out = TOONDB_ABSENT;
    let code = guard(err, || {
        out = body()?;
        Ok(())
    });
    if code == TOONDB_OK {
        out
    } else {
        -1 - i64::from(code)
    }
}

/// Anything that reads a key at some snapshot.
pub(crate) enum Source<'a> {
    Db(&'a Database),
    Snapshot(&'a Snapshot),
    Txn(&'a Transaction),
}

impl Source<'_> {
    fn get_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R> {
        match self {
            Source::Db(db) => db.get_with(key, f),
            Source::Snapshot(s) => s.get_with(key, f),
            Source::Txn(t) => t.get_with(key, f),
        }
    }

    /// `*value`/`*value_len` get an owned copy (or NULL/0 when absent) and
    /// `*found` whether the key exists.
    ///
    /// # Safety
    /// The out-pointers are valid for writes (`found` may be NULL).
    pub(crate) unsafe fn get_alloc(
        &self,
        key: &[u8],
        value: *mut *mut u8,
        value_len: *mut usize,
        found: *mut bool,
    ) -> Result<()> {
        if value.is_null() || value_len.is_null() {
            return Err(crate::error::invalid("value/value_len out-pointer is NULL"));
        }
        let got = self.get_with(key, |v| v.map(<[u8]>::to_vec))?;
        let hit = got.is_some();
        let (ptr, len) = got.map_or((std::ptr::null_mut(), 0), into_buffer);
        // SAFETY: checked non-NULL above; writable per the caller's contract.
        unsafe {
            put_out(value, ptr, "value")?;
            put_out(value_len, len, "value_len")?;
            put_opt(found, hit);
        }
        Ok(())
    }

    /// The `*_get_buf` read: copies the value into `buf` when it fits in
    /// `cap` bytes and returns its length (larger than `cap`: nothing was
    /// copied, call again with a bigger buffer), or `TOONDB_ABSENT`.
    ///
    /// # Safety
    /// `buf` is valid for `cap` bytes of writes (or NULL with `cap == 0`).
    pub(crate) unsafe fn get_buf(&self, key: &[u8], buf: *mut u8, cap: usize) -> Result<i64> {
        if buf.is_null() && cap > 0 {
            return Err(crate::error::invalid("buf is NULL but cap is not 0"));
        }
        self.get_with(key, |v| match v {
            None => TOONDB_ABSENT,
            Some(v) => {
                if v.len() <= cap && !v.is_empty() {
                    // SAFETY: `buf` holds `cap >= v.len()` writable bytes and
                    // cannot overlap the engine's memory.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, v.len()) };
                }
                // A value is at most MAX_VALUE_LEN bytes, far below i64::MAX.
                i64::try_from(v.len()).unwrap_or(i64::MAX)
            }
        })
    }

    /// Copies up to `cap` bytes of the value into `buf`; `*value_len` gets
    /// its full length (larger than `cap`: call again with a bigger buffer).
    ///
    /// # Safety
    /// `buf` is valid for `cap` bytes of writes (or NULL with `cap == 0`);
    /// the out-pointers are valid for writes (`found` may be NULL).
    pub(crate) unsafe fn get_into(
        &self,
        key: &[u8],
        buf: *mut u8,
        cap: usize,
        value_len: *mut usize,
        found: *mut bool,
    ) -> Result<()> {
        if value_len.is_null() {
            return Err(crate::error::invalid("value_len out-pointer is NULL"));
        }
        if buf.is_null() && cap > 0 {
            return Err(crate::error::invalid("buf is NULL but cap is not 0"));
        }
        let got = self.get_with(key, |v| {
            v.map(|v| {
                let n = v.len().min(cap);
                if n > 0 {
                    // SAFETY: `buf` holds `cap >= n` writable bytes and cannot
                    // overlap the engine's memory.
                    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf, n) };
                }
                v.len()
            })
        })?;
        // SAFETY: checked non-NULL above; writable per the caller's contract.
        unsafe {
            put_out(value_len, got.unwrap_or(0), "value_len")?;
            put_opt(found, got.is_some());
        }
        Ok(())
    }
}
