//! Transactions and snapshots: MVCC reads at a fixed timestamp, buffered
//! writes, and the conflict checks the commit thread runs (see
//! docs/transactions.md).

mod conflict;
mod snapshot;
pub(crate) mod snapshots;
mod transaction;
mod txn_scan;

pub(crate) use conflict::ConflictCheck;
pub use snapshot::Snapshot;
pub use transaction::{Isolation, Transaction, TransactionOptions};
pub use txn_scan::TxnScan;
