//! The native iterator: hands out entries in batches packed into one
//! Buffer, so a scan costs one native call per batch, not per entry.

use napi::bindgen_prelude::{Buffer, BufferSlice, JsObjectValue, Object};
use napi::Env;
use toondb_storage::{scan_bound, BatchScan, ScanOptions};

use crate::errors::{from_napi, invalid_argument, to_js, Result};

/// Scan bounds as index.js normalises them (documented in index.d.ts).
#[napi(object)]
pub struct ScanArgs {
    pub gt: Option<Buffer>,
    pub gte: Option<Buffer>,
    pub lt: Option<Buffer>,
    pub lte: Option<Buffer>,
    pub prefix: Option<Buffer>,
    pub reverse: Option<bool>,
    pub limit: Option<f64>,
    /// `false`: batches carry no key bytes (each key is empty).
    pub keys: Option<bool>,
    /// `false`: batches carry no value bytes (each value is empty).
    pub values: Option<bool>,
}

/// One batch: keys and values back to back in `data`; `ends[2i]` is where
/// key i ends and `ends[2i+1]` where its value ends. `next_batch` builds this
/// shape as a plain object (see there); the struct declares it for
/// native.d.ts.
#[napi(object)]
#[allow(dead_code)]
pub struct ScanBatch {
    pub data: Buffer,
    pub ends: Vec<u32>,
}

#[napi]
pub struct NativeIterator {
    /// `None` once closed: dropping the scan releases its pin on the read
    /// timestamp (and on the table files it reads) at once, instead of
    /// whenever the garbage collector gets to this object.
    scan: Option<Box<dyn BatchScan>>,
    keys: bool,
    values: bool,
}

/// Which parts of each entry the JS side asked for.
#[derive(Clone, Copy)]
pub struct Parts {
    pub keys: bool,
    pub values: bool,
}

impl Parts {
    pub fn of(args: &ScanArgs) -> Parts {
        Parts {
            keys: args.keys.unwrap_or(true),
            values: args.values.unwrap_or(true),
        }
    }
}

/// The engine's scan options for what index.js passes.
pub fn scan_options(args: ScanArgs) -> Result<ScanOptions> {
    let buf = |b: Option<Buffer>| b.map(|b| b.to_vec());
    let mut options = ScanOptions::default()
        .lower(scan_bound(buf(args.gte), buf(args.gt)).map_err(to_js)?)
        .upper(scan_bound(buf(args.lte), buf(args.lt)).map_err(to_js)?)
        .reverse(args.reverse.unwrap_or(false));
    if let Some(prefix) = args.prefix {
        options = options.within_prefix(&prefix);
    }
    if let Some(limit) = args.limit {
        if limit.is_nan() || limit < 0.0 {
            return Err(invalid_argument("limit must be a non-negative number"));
        }
        if limit.is_finite() {
            options.limit = Some(limit as usize);
        }
    }
    Ok(options)
}

impl NativeIterator {
    pub fn new(scan: impl BatchScan + 'static, parts: Parts) -> NativeIterator {
        NativeIterator {
            scan: Some(Box::new(scan)),
            keys: parts.keys,
            values: parts.values,
        }
    }
}

#[napi]
impl NativeIterator {
    /// Up to `max` entries (a `ScanBatch`); `null` when the scan is finished.
    ///
    /// `data` is copied into a Buffer that V8 allocates and frees itself,
    /// not handed over as an external Buffer: Node frees an external
    /// Buffer's memory in a `setImmediate` after it is collected, so a
    /// `for await` loop over a scan whose batches are all in memory (it
    /// never yields to the event loop) kept every batch it had read alive
    /// until the loop ended: reading a 1 GiB database held ~2 GiB. The copy
    /// costs well under a nanosecond per byte.
    #[napi(catch_unwind, ts_return_type = "ScanBatch | null")]
    pub fn next_batch<'env>(&mut self, env: &'env Env, max: u32) -> Result<Option<Object<'env>>> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        let entries = scan
            .next_batch(max.max(1) as usize, 4 << 20)
            .map_err(to_js)?;
        if entries.is_empty() {
            return Ok(None);
        }
        let (keys, values) = (self.keys, self.values);
        let total: usize = entries
            .iter()
            .map(|(k, v)| if keys { k.len() } else { 0 } + if values { v.len() } else { 0 })
            .sum();
        let mut data = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(entries.len() * 2);
        for (k, v) in &entries {
            if keys {
                data.extend_from_slice(k);
            }
            ends.push(data.len() as u32);
            if values {
                data.extend_from_slice(v);
            }
            ends.push(data.len() as u32);
        }
        let data = BufferSlice::copy_from(env, &data).map_err(from_napi)?;
        let mut batch = Object::new(env).map_err(from_napi)?;
        batch.set_named_property("data", &data).map_err(from_napi)?;
        batch.set_named_property("ends", ends).map_err(from_napi)?;
        Ok(Some(batch))
    }

    /// Ends the scan now; later batches are empty.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.scan = None;
    }
}
