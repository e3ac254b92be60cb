//! The native iterator: hands out entries in batches packed into one
//! Buffer, so a scan costs one native call per batch, not per entry.

use std::cell::RefCell;

use napi::bindgen_prelude::{Buffer, BufferSlice};
use napi::Env;
use toondb_storage::{scan_bound, BatchScan, PackedBatch, ScanOptions};

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

/// Batches are at most 4 MiB plus one entry; a buffer that grew past this
/// for one large value is not kept for the rest of the scan.
const KEEP_BATCH_BYTES: usize = 8 << 20;

#[napi]
pub struct NativeIterator {
    /// `None` once closed: dropping the scan releases its pin on the read
    /// timestamp (and on the table files it reads) at once, instead of
    /// whenever the garbage collector gets to this object.
    scan: Option<Box<dyn BatchScan>>,
    keys: bool,
    values: bool,
}

thread_local! {
    /// Where every iterator on this JS thread packs its batch before the
    /// batch is copied into a Buffer: a scan per call to `iterator()` (a
    /// range read of 100 entries) otherwise grew a fresh buffer each time,
    /// and the page faults of its new memory were ~8% of such a scan.
    static PACKED: RefCell<PackedBatch> = RefCell::new(PackedBatch::default());
}

/// Up to `max` entries of `scan` packed in one V8-owned Buffer (see
/// `NativeIterator::next_batch`); `None` when the scan is finished.
pub fn next_packed<'env>(
    env: &'env Env,
    scan: &mut dyn BatchScan,
    keys: bool,
    values: bool,
    max: u32,
) -> Result<Option<BufferSlice<'env>>> {
    PACKED.with_borrow_mut(|packed| {
        packed.reset(keys, values, KEEP_BATCH_BYTES);
        let count = scan
            .next_batch_into(max.max(1) as usize, 4 << 20, packed)
            .map_err(to_js)?;
        if count == 0 {
            return Ok(None);
        }
        BufferSlice::copy_from(env, packed.seal())
            .map(Some)
            .map_err(from_napi)
    })
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
    let bounds = RawBounds {
        gt: args.gt.as_deref(),
        gte: args.gte.as_deref(),
        lt: args.lt.as_deref(),
        lte: args.lte.as_deref(),
        prefix: args.prefix.as_deref(),
    };
    scan_options_from(&bounds, args.reverse.unwrap_or(false), args.limit)
}

/// Scan bounds as byte slices (`undefined` ones `None`).
#[derive(Default)]
pub struct RawBounds<'a> {
    pub gt: Option<&'a [u8]>,
    pub gte: Option<&'a [u8]>,
    pub lt: Option<&'a [u8]>,
    pub lte: Option<&'a [u8]>,
    pub prefix: Option<&'a [u8]>,
}

/// [`scan_options`] from bounds given as slices.
pub fn scan_options_from(
    bounds: &RawBounds<'_>,
    reverse: bool,
    limit: Option<f64>,
) -> Result<ScanOptions> {
    let owned = |b: Option<&[u8]>| b.map(<[u8]>::to_vec);
    let mut options = ScanOptions::default()
        .lower(scan_bound(owned(bounds.gte), owned(bounds.gt)).map_err(to_js)?)
        .upper(scan_bound(owned(bounds.lte), owned(bounds.lt)).map_err(to_js)?)
        .reverse(reverse);
    if let Some(prefix) = bounds.prefix {
        options = options.within_prefix(prefix);
    }
    if let Some(limit) = limit {
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
    /// Up to `max` entries packed in one Buffer (`PackedBatch::seal`: keys
    /// and values back to back, padding to 4 bytes, then `ends` and the
    /// count as little-endian u32s); `null` when the scan is finished. One
    /// Buffer and no JS value per entry: building `ends` as a JS array cost
    /// a napi call per element (~6% of a 100-entry scan's profile).
    ///
    /// The Buffer is copied into memory V8 allocates and frees itself, not
    /// handed over as an external Buffer: Node frees an external Buffer's
    /// memory in a `setImmediate` after it is collected, so a `for await`
    /// loop over a scan whose batches are all in memory (it never yields to
    /// the event loop) kept every batch it had read alive until the loop
    /// ended: reading a 1 GiB database held ~2 GiB. The copy costs well
    /// under a nanosecond per byte.
    #[napi(catch_unwind, ts_return_type = "Buffer | null")]
    pub fn next_batch<'env>(
        &mut self,
        env: &'env Env,
        max: u32,
    ) -> Result<Option<BufferSlice<'env>>> {
        let Some(scan) = self.scan.as_mut() else {
            return Ok(None);
        };
        let (keys, values) = (self.keys, self.values);
        next_packed(env, scan.as_mut(), keys, values, max)
    }

    /// Ends the scan now; later batches are empty.
    #[napi(catch_unwind)]
    pub fn close(&mut self) {
        self.scan = None;
    }
}
