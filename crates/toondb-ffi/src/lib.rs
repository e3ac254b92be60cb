//! toondb-ffi: the C ABI over the toondb-storage engine. The header is
//! `include/toondb.h`, generated from this crate by cbindgen and checked in
//! (tests/header.rs fails when it is stale); docs/ffi.md has the rules.
//!
//! Conventions of every function:
//! - Fallible functions return a status, `TOONDB_OK` (0) or a `TOONDB_*`
//!   error code, and take a last `ToondbError **err` that may be NULL; on
//!   failure a non-NULL `err` receives an error the caller frees with
//!   `toondb_error_free` (`*err` is overwritten, not freed: free an error
//!   before passing the same variable again).
//! - Every buffer the library returns has a free function
//!   (`toondb_buffer_free`), every handle a free function; lent pointers
//!   (iterator entries, error messages) say how long they stay valid.
//! - A NULL handle or buffer gives TOONDB_INVALID_ARGUMENT; a closed
//!   handle TOONDB_CLOSED. Only a freed handle may not be used.
//! - No Rust panic crosses the boundary: it becomes TOONDB_INTERNAL.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod db;
mod error;
mod iter;
mod options;
mod read;
mod txn;
mod util;

pub use db::*;
pub use error::*;
pub use iter::*;
pub use options::*;
pub use read::TOONDB_ABSENT;
pub use txn::*;
pub use util::toondb_buffer_free;

use std::ffi::c_char;

/// Version of this ABI: bumped when a function or struct changes
/// incompatibly (additions at the end of a sized struct and new functions
/// do not bump it).
pub const TOONDB_ABI_VERSION: u32 = 1;

/// The ABI version the library was built with (`TOONDB_ABI_VERSION`);
/// compare it with the header's at startup.
#[no_mangle]
pub extern "C" fn toondb_abi_version() -> u32 {
    TOONDB_ABI_VERSION
}

/// The library's version string, e.g. "0.1.0". Static: never free it.
#[no_mangle]
pub extern "C" fn toondb_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Test hook: panics inside the library, so tests can see a panic come
/// back as TOONDB_INTERNAL instead of unwinding into the caller.
///
/// # Safety
/// `err` is NULL or valid for a write.
#[no_mangle]
#[expect(clippy::panic, reason = "the test hook's whole job is to panic")]
pub unsafe extern "C" fn toondb_debug_panic(err: *mut *mut ToondbError) -> i32 {
    error::guard(err, || -> error::Result<()> {
        std::panic::panic_any("toondb_debug_panic was called".to_owned())
    })
}
