//! Status codes, the error object handed to the caller, and the guard every
//! exported function runs its body in (no panic crosses the boundary).

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use toondb_storage::{Error, ErrorKind};

/// Success.
pub const TOONDB_OK: i32 = 0;
/// The caller passed something the engine cannot accept (including a NULL
/// handle or buffer).
pub const TOONDB_INVALID_ARGUMENT: i32 = 1;
/// The database, transaction, snapshot or iterator is closed.
pub const TOONDB_CLOSED: i32 = 2;
/// A file failed its checksum or structural checks.
pub const TOONDB_CORRUPTION: i32 = 3;
/// Another process holds the database directory.
pub const TOONDB_LOCKED: i32 = 4;
/// The operating system reported an I/O failure.
pub const TOONDB_IO: i32 = 5;
/// A transaction lost a race with a concurrent commit; retry it.
pub const TOONDB_CONFLICT: i32 = 6;
/// A lookup that must find something did not.
pub const TOONDB_NOT_FOUND: i32 = 7;
/// A bug in the library (a Rust panic was caught at the boundary).
pub const TOONDB_INTERNAL: i32 = 8;

// The numbers are defined once, by the engine's `ErrorKind`; they are
// spelled out above only so cbindgen can write them into the header, and
// the build fails if one ever differs.
const _: () = assert!(TOONDB_INVALID_ARGUMENT == ErrorKind::InvalidArgument.numeric_code());
const _: () = assert!(TOONDB_CLOSED == ErrorKind::Closed.numeric_code());
const _: () = assert!(TOONDB_CORRUPTION == ErrorKind::Corruption.numeric_code());
const _: () = assert!(TOONDB_LOCKED == ErrorKind::Locked.numeric_code());
const _: () = assert!(TOONDB_IO == ErrorKind::Io.numeric_code());
const _: () = assert!(TOONDB_CONFLICT == ErrorKind::Conflict.numeric_code());
const _: () = assert!(TOONDB_NOT_FOUND == ErrorKind::NotFound.numeric_code());
const _: () = assert!(TOONDB_INTERNAL == ErrorKind::Internal.numeric_code());

/// An error: a numeric code (one of the `TOONDB_*` constants) and a
/// message. Created by the library, owned by the caller, freed with
/// `toondb_error_free`.
pub struct ToondbError {
    code: i32,
    message: CString,
}

impl ToondbError {
    fn from_engine(err: &Error) -> ToondbError {
        let message = err.message().replace('\0', "\\0");
        ToondbError {
            code: err.kind().numeric_code(),
            // No interior NUL after the replace; fall back to empty anyway.
            message: CString::new(message).unwrap_or_default(),
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(message: impl Into<String>) -> Error {
    Error::invalid_argument(message)
}

/// Runs `body`, turning its error or panic into a status code, and hands
/// the error object to the caller through `err` when `err` is not NULL.
pub(crate) fn guard(err: *mut *mut ToondbError, body: impl FnOnce() -> Result<()>) -> i32 {
    let outcome = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return TOONDB_OK,
        Ok(Err(e)) => e,
        Err(_) => Error::internal("the storage engine panicked (a bug; please report it)"),
    };
    let code = outcome.kind().numeric_code();
    if !err.is_null() {
        let boxed = Box::into_raw(Box::new(ToondbError::from_engine(&outcome)));
        // SAFETY: `err` is not NULL and, per the header, points to a writable
        // `ToondbError *`; an error already there is the caller's to free.
        unsafe { *err = boxed };
    }
    code
}

/// Like `guard` for functions that return a value instead of a status:
/// `fallback` when the body panics.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// The numeric code of `err` (a `TOONDB_*` constant); `TOONDB_INVALID_ARGUMENT`
/// for a NULL `err`.
///
/// # Safety
/// `err` is NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn toondb_error_code(err: *const ToondbError) -> i32 {
    // SAFETY: per the contract above, a non-NULL `err` is a live error.
    match unsafe { err.as_ref() } {
        Some(e) => e.code,
        None => TOONDB_INVALID_ARGUMENT,
    }
}

/// The message of `err`, NUL-terminated UTF-8. Borrowed: valid until
/// `toondb_error_free(err)`; never NULL (an empty string for a NULL `err`).
///
/// # Safety
/// `err` is NULL or an error from this library not yet freed.
#[no_mangle]
pub unsafe extern "C" fn toondb_error_message(err: *const ToondbError) -> *const c_char {
    // SAFETY: per the contract above, a non-NULL `err` is a live error.
    match unsafe { err.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => c"".as_ptr(),
    }
}

/// Frees an error. NULL is a no-op.
///
/// # Safety
/// `err` is NULL or an error from this library not yet freed; it must not be
/// used afterwards.
#[no_mangle]
pub unsafe extern "C" fn toondb_error_free(err: *mut ToondbError) {
    if !err.is_null() {
        // SAFETY: `err` came from `Box::into_raw` in `guard` and is freed once.
        drop(unsafe { Box::from_raw(err) });
    }
}

/// The stable name of a code: "TOONDB_CONFLICT" for `TOONDB_CONFLICT`, the
/// same string as the Node binding's `err.code` and Python's
/// `ToondbError.code`; "TOONDB_OK" for 0 and "TOONDB_UNKNOWN" for a number
/// this version does not know. Static: never free it.
#[no_mangle]
pub extern "C" fn toondb_code_name(code: i32) -> *const c_char {
    // The names are the engine's (`ErrorKind::code_c`), not a copy.
    let name: &'static std::ffi::CStr = match ErrorKind::from_numeric_code(code) {
        _ if code == TOONDB_OK => c"TOONDB_OK",
        Some(kind) => kind.code_c(),
        None => c"TOONDB_UNKNOWN",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_match_the_engine() {
        for kind in ErrorKind::ALL {
            let name = toondb_code_name(kind.numeric_code());
            // SAFETY: toondb_code_name returns a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(name) };
            assert_eq!(name.to_str().ok(), Some(kind.code()));
        }
    }
}
