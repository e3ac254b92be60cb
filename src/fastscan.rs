//! Database iterators' native half as raw N-API callbacks.
//!
//! A 100-entry range read cost ~27 µs before it read anything: napi-rs's
//! class machinery for a snapshot object and an iterator object (wrap,
//! references, class identity checks, finalizers) and an options object
//! read property by property. Here a scan is one JS external, created from
//! positional arguments:
//!
//! - `scanOpen(handle, gt, gte, lt, lte, prefix, reverse, limit, keys,
//!   values)`: a scan of the database as it is now (bounds are Buffers or
//!   `undefined`);
//! - `scanNext(scan, max)`: up to `max` entries packed in one Buffer
//!   (`NativeIterator::next_batch`'s layout), `null` at the end;
//! - `scanSeek(scan, gt, gte, lt, lte, prefix, reverse, limit)`: replaces
//!   the scan with one over new bounds that reads the same data (same
//!   tables, same timestamp: `Scan::restarted`), so a database iterator
//!   needs no snapshot object for `seek`;
//! - `scanClose(scan)`: drops the scan now (unpinning its timestamp and
//!   files) instead of when the external is collected.
//!
//! Errors throw a JS Error whose `code` is the TOONDB_* code; a panic
//! becomes TOONDB_INTERNAL.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use napi::sys;
use toondb_storage::Scan;

use crate::fastget::{
    call_args, create_external, external_arg, handle_arg, throw, u8_view, ExternalKind,
};
use crate::iterator::{next_packed, scan_options_from, RawBounds};

/// What a scan external points to.
struct RawScan {
    /// `None` once closed.
    scan: RefCell<Option<Scan>>,
    keys: bool,
    values: bool,
}

impl ExternalKind for RawScan {
    const TAG: u64 = u64::from_le_bytes(*b"tdbSCAN\0");
}

fn type_of(env: sys::napi_env, v: sys::napi_value) -> sys::napi_valuetype {
    let mut t = 0;
    // SAFETY: plain N-API call.
    unsafe { sys::napi_typeof(env, v, &mut t) };
    t
}

fn is_absent(env: sys::napi_env, v: sys::napi_value) -> bool {
    let t = type_of(env, v);
    t == sys::ValueType::napi_undefined || t == sys::ValueType::napi_null
}

/// A bound: `undefined`/`null`, or a Uint8Array's bytes.
///
/// # Safety
/// `v` is a value of the current call; no JS runs while the bytes are used.
unsafe fn bound<'a>(env: sys::napi_env, v: sys::napi_value) -> Result<Option<&'a [u8]>, ()> {
    if is_absent(env, v) {
        return Ok(None);
    }
    // SAFETY: see the caller.
    unsafe { u8_view(env, v) }.map(|b| Some(&*b)).ok_or(())
}

fn flag(env: sys::napi_env, v: sys::napi_value, default: bool) -> bool {
    let mut b = default;
    if type_of(env, v) == sys::ValueType::napi_boolean {
        // SAFETY: plain N-API call on a boolean.
        unsafe { sys::napi_get_value_bool(env, v, &mut b) };
    }
    b
}

fn number(env: sys::napi_env, v: sys::napi_value) -> Option<f64> {
    if type_of(env, v) != sys::ValueType::napi_number {
        return None;
    }
    let mut n = 0.0;
    // SAFETY: plain N-API call on a number.
    unsafe { sys::napi_get_value_double(env, v, &mut n) };
    Some(n)
}

/// Scan options from `argv[0..7]` = gt, gte, lt, lte, prefix, reverse,
/// limit.
///
/// # Safety
/// Values of the current call.
unsafe fn options(
    env: sys::napi_env,
    argv: &[sys::napi_value],
) -> Result<toondb_storage::ScanOptions, (String, String)> {
    let bad = |what: &str| {
        (
            "TOONDB_INVALID_ARGUMENT".to_string(),
            format!("{what} must be a Buffer"),
        )
    };
    // SAFETY: see the caller.
    let b = |i: usize, what: &str| unsafe { bound(env, argv[i]) }.map_err(|()| bad(what));
    let bounds = RawBounds {
        gt: b(0, "gt")?,
        gte: b(1, "gte")?,
        lt: b(2, "lt")?,
        lte: b(3, "lte")?,
        prefix: b(4, "prefix")?,
    };
    let reverse = flag(env, argv[5], false);
    let limit = number(env, argv[6]);
    scan_options_from(&bounds, reverse, limit).map_err(|e| (e.status.clone(), e.reason.clone()))
}

/// Runs `f`, turning an engine error into a thrown JS Error and a panic
/// into TOONDB_INTERNAL.
fn guarded(
    env: sys::napi_env,
    f: impl FnOnce() -> Result<sys::napi_value, (String, String)>,
) -> sys::napi_value {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err((code, msg))) => unsafe { throw(env, &code, &msg) },
        Err(_) => unsafe { throw(env, "TOONDB_INTERNAL", "the storage engine panicked") },
    }
}

fn engine_err(e: toondb_storage::Error) -> (String, String) {
    (e.kind().code().to_string(), e.message().to_string())
}

fn undefined(env: sys::napi_env) -> sys::napi_value {
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call.
    unsafe { sys::napi_get_undefined(env, &mut out) };
    out
}

/// The scan behind a scan external.
///
/// # Safety
/// `v` is a value of the current call.
unsafe fn scan_arg<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a RawScan> {
    // SAFETY: see `external_arg`.
    unsafe { external_arg(env, v) }
}

/// `scanOpen(handle, gt, gte, lt, lte, prefix, reverse, limit, keys, values)`.
pub unsafe extern "C" fn scan_open(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: on the JS thread in a callback.
    let Some(argv) = (unsafe { call_args::<10>(env, info, "scanOpen(handle, ...)") }) else {
        return ptr::null_mut();
    };
    // SAFETY: a value of this call.
    let Some(handle) = (unsafe { handle_arg(env, argv[0]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a read handle") };
    };
    guarded(env, || {
        // SAFETY: values of this call.
        let options = unsafe { options(env, &argv[1..8]) }?;
        let scan = handle.db.scan(options).map_err(engine_err)?;
        let scan = RawScan {
            scan: RefCell::new(Some(scan)),
            keys: flag(env, argv[8], true),
            values: flag(env, argv[9], true),
        };
        create_external(env, scan).map_err(|e| ("TOONDB_INTERNAL".into(), e.reason))
    })
}

/// `scanNext(scan, max)`.
pub unsafe extern "C" fn scan_next(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: on the JS thread in a callback.
    let Some(argv) = (unsafe { call_args::<2>(env, info, "scanNext(scan, max)") }) else {
        return ptr::null_mut();
    };
    // SAFETY: a value of this call.
    let Some(raw) = (unsafe { scan_arg(env, argv[0]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a scan") };
    };
    let max = number(env, argv[1])
        .unwrap_or(1.0)
        .clamp(1.0, u32::MAX as f64) as u32;
    guarded(env, || {
        let mut slot = raw.scan.borrow_mut();
        let Some(scan) = slot.as_mut() else {
            let mut null = ptr::null_mut();
            // SAFETY: plain N-API call.
            unsafe { sys::napi_get_null(env, &mut null) };
            return Ok(null);
        };
        // SAFETY: a callback's env on its own thread.
        let napi_env = napi::Env::from_raw(env);
        match next_packed(&napi_env, scan, raw.keys, raw.values, max) {
            Ok(Some(buf)) => Ok(napi::JsValue::raw(&buf)),
            Ok(None) => {
                let mut null = ptr::null_mut();
                // SAFETY: plain N-API call.
                unsafe { sys::napi_get_null(env, &mut null) };
                Ok(null)
            }
            Err(e) => Err((e.status.clone(), e.reason.clone())),
        }
    })
}

/// `scanSeek(scan, gt, gte, lt, lte, prefix, reverse, limit)`.
pub unsafe extern "C" fn scan_seek(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: on the JS thread in a callback.
    let Some(argv) = (unsafe { call_args::<8>(env, info, "scanSeek(scan, ...)") }) else {
        return ptr::null_mut();
    };
    // SAFETY: a value of this call.
    let Some(raw) = (unsafe { scan_arg(env, argv[0]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a scan") };
    };
    guarded(env, || {
        // SAFETY: values of this call.
        let options = unsafe { options(env, &argv[1..8]) }?;
        let mut slot = raw.scan.borrow_mut();
        let Some(scan) = slot.as_ref() else {
            return Err(("TOONDB_CLOSED".into(), "iterator is closed".into()));
        };
        let restarted = scan.restarted(options).map_err(engine_err)?;
        *slot = Some(restarted);
        Ok(undefined(env))
    })
}

/// `scanClose(scan)`.
pub unsafe extern "C" fn scan_close(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: on the JS thread in a callback.
    let Some(argv) = (unsafe { call_args::<1>(env, info, "scanClose(scan)") }) else {
        return ptr::null_mut();
    };
    // SAFETY: a value of this call.
    if let Some(raw) = unsafe { scan_arg(env, argv[0]) } {
        guarded(env, || {
            let old = raw.scan.borrow_mut().take();
            drop(old);
            Ok(undefined(env))
        });
    }
    undefined(env)
}
