//! Node.js binding for toondb-storage: conversions between JS values and
//! the engine's Rust API, and nothing else. Storage logic lives in
//! crates/toondb-storage; JS conveniences live in index.js.
#![deny(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
extern crate napi_derive;

mod completion;
mod convert;
mod database;
mod errors;
mod fastget;
mod fastmany;
mod fastscan;
mod iterator;
mod table;
mod transaction;
mod values;

/// Test hook: panics inside a native call, so the test suite can prove a
/// Rust panic surfaces as a TOONDB_INTERNAL error instead of aborting Node.
#[napi(catch_unwind)]
pub fn test_panic(message: String) {
    std::panic::panic_any(message);
}

/// Value maps (zero-copy values) alive in this process: a test checks the
/// Buffers' finalizers unmap them.
#[napi]
pub fn live_value_maps() -> f64 {
    toondb_storage::live_value_maps() as f64
}

/// Whether values may be returned as external (zero-copy) Buffers here:
/// false in runtimes that refuse them (Electron's memory cage) or with
/// `TOONDB_NO_EXTERNAL_BUFFERS=1`.
#[napi]
pub fn external_buffers() -> bool {
    values::external_buffers()
}

/// Adds the raw-N-API hot paths (see `fastget.rs`) to the exports.
#[napi(module_exports)]
pub fn init(exports: napi::bindgen_prelude::Object, env: napi::Env) -> napi::Result<()> {
    use napi::JsValue;
    fastget::register(env.raw(), exports.raw())
}
