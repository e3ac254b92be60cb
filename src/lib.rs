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
mod iterator;
mod transaction;
