//! Turning the caller's pointers into Rust references, with the NULL checks
//! the header promises. Every dereference of caller memory is here or next
//! to its one use, with its SAFETY argument.

use crate::error::{invalid, Result};

/// The caller's `(ptr, len)` buffer. NULL is accepted only with `len == 0`.
///
/// # Safety
/// A non-NULL `ptr` must be valid for reads of `len` bytes for `'a`.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if ptr.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(invalid(format!("{what} is NULL but its length is {len}")));
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An optional buffer: NULL means absent (any length).
///
/// # Safety
/// As for [`bytes`].
pub(crate) unsafe fn opt_bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes.
    Some(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A handle the caller passed in.
///
/// # Safety
/// A non-NULL `ptr` must be a live handle of type `T` from this library.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the caller promises a live handle when non-NULL.
    unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{what} handle is NULL")))
}

/// Writes `value` through an out-parameter.
///
/// # Safety
/// A non-NULL `ptr` must be valid for a write of `T`.
pub(crate) unsafe fn put_out<T>(ptr: *mut T, value: T, what: &str) -> Result<()> {
    if ptr.is_null() {
        return Err(invalid(format!("{what} out-pointer is NULL")));
    }
    // SAFETY: non-NULL and writable per the caller's contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Writes through an optional out-parameter (NULL: not wanted).
///
/// # Safety
/// As for [`put_out`].
pub(crate) unsafe fn put_opt<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: non-NULL and writable per the caller's contract.
        unsafe { ptr.write(value) };
    }
}

/// `-1` (or any negative number): the handle's default; `0`: no fsync;
/// positive: fsync.
pub(crate) fn sync_arg(sync: i32) -> Option<bool> {
    (sync >= 0).then_some(sync > 0)
}

/// Hands an owned copy of `value` to the caller as `(ptr, len)`, to be
/// freed with `toondb_buffer_free`.
pub(crate) fn into_buffer(value: Vec<u8>) -> (*mut u8, usize) {
    let boxed = value.into_boxed_slice();
    let len = boxed.len();
    (Box::into_raw(boxed).cast::<u8>(), len)
}

/// Frees a buffer the library returned (`toondb_get`, ...). `ptr` NULL is a
/// no-op. `len` must be the length returned with it.
///
/// # Safety
/// `ptr` is NULL or a buffer returned by this library with its length
/// `len`, not yet freed; it must not be used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_buffer_free(ptr: *mut u8, len: usize) {
    if ptr.is_null() {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(ptr, len);
    // SAFETY: `(ptr, len)` came from `into_buffer`'s `Box<[u8]>` and is
    // freed once.
    drop(unsafe { Box::from_raw(slice) });
}
