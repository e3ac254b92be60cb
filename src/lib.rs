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
mod iterator;
mod table;
mod transaction;

/// Test hook: panics inside a native call, so the test suite can prove a
/// Rust panic surfaces as a TOONDB_INTERNAL error instead of aborting Node.
#[napi(catch_unwind)]
pub fn test_panic(message: String) {
    std::panic::panic_any(message);
}

/// Adds the raw-N-API hot paths (see `fastget.rs`) to the exports.
#[napi(module_exports)]
pub fn init(exports: napi::bindgen_prelude::Object, env: napi::Env) -> napi::Result<()> {
    use napi::JsValue;
    fastget::register(env.raw(), exports.raw())
}
