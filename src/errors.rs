//! Engine errors become JS `Error`s whose `code` is the stable TOONDB_* code.

use std::panic::{catch_unwind, AssertUnwindSafe, UnwindSafe};

use toondb_storage::ErrorKind;

pub type Result<T> = napi::Result<T, String>;

pub fn to_js(err: toondb_storage::Error) -> napi::Error<String> {
    napi::Error::new(err.kind().code().to_owned(), err.message().to_owned())
}

pub fn invalid_argument(message: impl Into<String>) -> napi::Error<String> {
    napi::Error::new(ErrorKind::InvalidArgument.code().to_owned(), message.into())
}

pub fn internal(message: impl Into<String>) -> napi::Error<String> {
    napi::Error::new(ErrorKind::Internal.code().to_owned(), message.into())
}

/// Runs engine work that may panic on a thread napi-rs does not guard (the
/// libuv pool), turning a panic into a TOONDB_INTERNAL error.
pub fn guard<T>(f: impl FnOnce() -> toondb_storage::Result<T> + UnwindSafe) -> Result<T> {
    match catch_unwind(f) {
        Ok(r) => r.map_err(to_js),
        Err(_) => Err(internal("the storage engine panicked")),
    }
}

/// Like `guard`, for closures that capture non-unwind-safe references whose
/// state cannot be observed half-updated after a panic (engine handles).
pub fn guard_ref<T>(f: impl FnOnce() -> toondb_storage::Result<T>) -> Result<T> {
    guard(AssertUnwindSafe(f))
}

/// Converts a napi error with the default status into one with our codes.
pub fn from_napi(err: napi::Error) -> napi::Error<String> {
    napi::Error::new(ErrorKind::Internal.code().to_owned(), err.reason.clone())
}
