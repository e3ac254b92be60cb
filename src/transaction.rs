//! Native `Transaction` and `Snapshot` classes. Dropping one (explicitly
//! or when the JS object is garbage-collected) releases its read timestamp.

use std::sync::Arc;

use napi::bindgen_prelude::BufferSlice;
use toondb_storage::{Snapshot, Transaction};

use crate::completion::Completions;
use crate::convert::{as_bytes, Bytes};
use crate::errors::{to_js, Result};
use crate::iterator::{scan_options, NativeIterator, Parts, ScanArgs};
use crate::values::{JsValueOut, OwnedValue};

/// Copies a value into the caller's scratch buffer: its length, or -1 when
/// absent; a length above `out.length` means "retry with a larger buffer".
pub fn copy_into(value: Option<&[u8]>, out: &mut [u8]) -> i64 {
    match value {
        None => -1,
        Some(v) => {
            if let Some(dst) = out.get_mut(..v.len()) {
                dst.copy_from_slice(v);
            }
            v.len() as i64
        }
    }
}

#[napi]
pub struct NativeTransaction {
    pub(crate) txn: Transaction,
    completions: Arc<Completions>,
}

impl NativeTransaction {
    pub fn new(txn: Transaction, completions: Arc<Completions>) -> Self {
        NativeTransaction { txn, completions }
    }
}

#[napi]
impl NativeTransaction {
    #[napi(getter)]
    pub fn read_ts(&self) -> f64 {
        self.txn.read_ts() as f64
    }

    #[napi(getter)]
    pub fn active(&self) -> bool {
        self.txn.is_active()
    }

    #[napi(catch_unwind)]
    pub fn get_into(&self, key: Bytes, mut out: BufferSlice) -> Result<i64> {
        self.txn
            .get_with(as_bytes(&key), |v| copy_into(v, &mut out))
            .map_err(to_js)
    }

    #[napi(catch_unwind, ts_return_type = "Buffer | null")]
    pub fn get(&self, key: Bytes) -> Result<JsValueOut> {
        self.txn
            .get_with(as_bytes(&key), |v| {
                JsValueOut(v.map(|v| OwnedValue::Copied(v.to_vec())))
            })
            .map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn put(&self, key: Bytes, value: Bytes) -> Result<()> {
        self.txn
            .put(as_bytes(&key), as_bytes(&value))
            .map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn del(&self, key: Bytes) -> Result<()> {
        self.txn.delete(as_bytes(&key)).map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn iterator(&self, args: ScanArgs) -> Result<NativeIterator> {
        let parts = Parts::of(&args);
        let scan = self.txn.scan(scan_options(args)?).map_err(to_js)?;
        Ok(NativeIterator::new(scan, parts))
    }

    /// Commits. Returns `true` when the commit finished on this thread
    /// (throwing if it failed, e.g. TOONDB_CONFLICT); `false` when it went
    /// to the commit thread and its outcome reaches the database's `settle`
    /// callback under `id`.
    #[napi(catch_unwind)]
    pub fn commit(&self, id: u32) -> Result<bool> {
        match self.txn.commit_inline_or(self.completions.callback(id)) {
            Some(result) => result.map(|_| true).map_err(to_js),
            None => Ok(false),
        }
    }

    #[napi(catch_unwind)]
    pub fn rollback(&self) -> Result<()> {
        self.txn.rollback().map_err(to_js)
    }
}

#[napi]
pub struct NativeSnapshot {
    pub(crate) snapshot: Snapshot,
}

impl NativeSnapshot {
    pub fn new(snapshot: Snapshot) -> Self {
        NativeSnapshot { snapshot }
    }
}

#[napi]
impl NativeSnapshot {
    #[napi(getter)]
    pub fn ts(&self) -> f64 {
        self.snapshot.ts() as f64
    }

    #[napi(catch_unwind)]
    pub fn get_into(&self, key: Bytes, mut out: BufferSlice) -> Result<i64> {
        self.snapshot
            .get_with(as_bytes(&key), |v| copy_into(v, &mut out))
            .map_err(to_js)
    }

    #[napi(catch_unwind, ts_return_type = "Buffer | null")]
    pub fn get(&self, key: Bytes) -> Result<JsValueOut> {
        self.snapshot
            .get_with(as_bytes(&key), |v| {
                JsValueOut(v.map(|v| OwnedValue::Copied(v.to_vec())))
            })
            .map_err(to_js)
    }

    #[napi(catch_unwind)]
    pub fn iterator(&self, args: ScanArgs) -> Result<NativeIterator> {
        let parts = Parts::of(&args);
        let scan = self.snapshot.scan(scan_options(args)?).map_err(to_js)?;
        Ok(NativeIterator::new(scan, parts))
    }

    #[napi(catch_unwind)]
    pub fn release(&self) {
        self.snapshot.release();
    }
}
