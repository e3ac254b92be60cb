//! toondb-storage: an embedded, transactional key-value storage engine.
//!
//! A write-ahead log for durability, MVCC versions keyed by commit timestamp,
//! a skiplist memtable and sorted, checksummed table files read through
//! memory maps. See docs/architecture.md for the layers and threads.
//!
//! ```no_run
//! # fn main() -> toondb_storage::Result<()> {
//! let db = toondb_storage::Database::open("./my_data")?;
//! db.put("users/1", b"Alice")?;
//! assert_eq!(db.get("users/1")?.as_deref(), Some(&b"Alice"[..]));
//! db.close()?;
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod batch;
mod coding;
pub mod error;
pub mod io;
pub mod key;
mod record;
#[allow(dead_code)] // wired into db.rs by the foundation work in progress
pub(crate) mod sstable;
#[allow(dead_code)]
pub(crate) mod version;
#[allow(dead_code)]
pub(crate) mod wal;

pub use batch::{BatchOp, WriteBatch};
pub use error::{Error, ErrorKind, Result};
pub use key::{Timestamp, ValueKind};
