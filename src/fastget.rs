//! `Database#getSync`'s native half as a raw N-API callback.
//!
//! A `#[napi]` class method taking `(Either<String, &[u8]>, BufferSlice)`
//! spent about as much time in napi-rs as in the engine (perf, 200K keys):
//! the class identity check and unwrap, napi-rs's native-borrow registry (a
//! global mutex and hash map per borrowed Buffer), and for a Buffer key a
//! formatted "not a string" error from the `Either` that tried `String`
//! first. This callback does what the read needs with plain N-API calls:
//! one `napi_typeof` for the key, typed-array info for the key and the
//! output Buffer, and the engine read copying into the output.
//!
//! JS side (index.js): `native.readHandle()` returns an external holding the
//! engine handle; `readInto(handle, key, out, offset?)` returns the length
//! of the value copied into `out` at `offset` (default 0), -1 when absent,
//! for a large value in an uncompressed table the ArrayBuffer over its whole
//! mapping with the value's place in it written at `out[offset..]`
//! (values.rs `chunk_view`; index.js `viewOfChunk`), or else a Buffer of the
//! value's own: a copy when it is large or does not fit `out`. `readIfResident` is the
//! same read for `db.get()`, except that it returns -2, having read
//! nothing, when the read would wait for the device. Errors throw a JS
//! Error whose `code` is the TOONDB_* code; a panic becomes TOONDB_INTERNAL.

use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use napi::sys;
use toondb_storage::{Database, ValueRef};

/// What `readHandle()`'s external points to.
pub struct ReadHandle {
    pub db: Arc<Database>,
}

impl ExternalKind for ReadHandle {
    const TAG: u64 = u64::from_le_bytes(*b"tdbREAD\0");
}

/// A type this module hands to JS inside an external. Each external's data
/// starts with its kind's tag, so a raw function given the wrong kind of
/// external (or one from another addon) throws instead of reading one type
/// as another.
pub(crate) trait ExternalKind: Sized {
    const TAG: u64;
}

/// An external's data: the kind's tag, then the value.
#[repr(C)]
struct Tagged<T> {
    tag: u64,
    value: T,
}

unsafe extern "C" fn finalize_tagged<T: ExternalKind>(
    _env: sys::napi_env,
    data: *mut c_void,
    _hint: *mut c_void,
) {
    if !data.is_null() {
        // SAFETY: `data` came from `Box::into_raw` in `create_external::<T>`
        // and the finalizer runs once.
        drop(unsafe { Box::from_raw(data.cast::<Tagged<T>>()) });
    }
}

/// A JS external owning `value` (dropped when the external is collected).
pub(crate) fn create_external<T: ExternalKind>(
    env: sys::napi_env,
    value: T,
) -> napi::Result<sys::napi_value> {
    let data = Box::into_raw(Box::new(Tagged { tag: T::TAG, value }));
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call on the JS thread with a valid env.
    let status = unsafe {
        sys::napi_create_external(
            env,
            data.cast(),
            Some(finalize_tagged::<T>),
            ptr::null_mut(),
            &mut out,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: the external was not created, so nothing else owns `data`.
        drop(unsafe { Box::from_raw(data) });
        return Err(napi::Error::from_reason("napi_create_external failed"));
    }
    Ok(out)
}

/// A JS external owning `handle`.
pub fn create_handle(env: sys::napi_env, handle: ReadHandle) -> napi::Result<sys::napi_value> {
    create_external(env, handle)
}

/// The engine handle behind a `readHandle()` external.
///
/// # Safety
/// `v` must be a value of the current call.
pub(crate) unsafe fn handle_arg<'a>(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Option<&'a ReadHandle> {
    // SAFETY: see `external_arg`.
    unsafe { external_arg(env, v) }
}

/// The `T` behind an external [`create_external`] made, or `None` for any
/// other value, including an external of another kind.
///
/// # Safety
/// `v` must be a value of the current call. An external's data must be at
/// least 8 readable bytes: true of every external this module makes (each
/// starts with its tag), assumed of externals from elsewhere.
pub(crate) unsafe fn external_arg<'a, T: ExternalKind>(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Option<&'a T> {
    let mut data = ptr::null_mut();
    // SAFETY: a non-external argument fails with a status.
    if unsafe { sys::napi_get_value_external(env, v, &mut data) } != sys::Status::napi_ok
        || data.is_null()
    {
        return None;
    }
    // SAFETY: see the function's contract; `Tagged` is `repr(C)`, so every
    // kind's tag is its first 8 bytes, and the data outlives this call (its
    // external is a value of the call, so it is not collected).
    let tag = unsafe { data.cast::<u64>().read_unaligned() };
    if tag != T::TAG {
        return None;
    }
    // SAFETY: the tag says `create_external::<T>` made it.
    Some(unsafe { &(*data.cast::<Tagged<T>>()).value })
}

/// Reads a callback's first `N` arguments; throws TOONDB_INVALID_ARGUMENT
/// (`usage`) and returns `None` when fewer were passed.
///
/// # Safety
/// On the JS thread, inside the callback `info` belongs to.
pub(crate) unsafe fn call_args<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    usage: &str,
) -> Option<[sys::napi_value; N]> {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    // SAFETY: `argv` has room for `argc` values.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok || argc < N {
        // SAFETY: see the caller.
        unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", usage) };
        return None;
    }
    Some(argv)
}

pub(crate) unsafe fn throw(env: sys::napi_env, code: &str, msg: &str) -> sys::napi_value {
    let code = CString::new(code).unwrap_or_default();
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid env and NUL-terminated strings.
    unsafe { sys::napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
    ptr::null_mut()
}

/// The bytes of a Uint8Array (Buffer) argument, or `None` if it is not one.
pub(crate) unsafe fn u8_view<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a mut [u8]> {
    let mut kind = 0;
    let mut len = 0;
    let mut data = ptr::null_mut();
    // SAFETY: plain N-API call; a non-typed-array fails with a status. The
    // ArrayBuffer and the offset are not asked for (null): each costs V8
    // calls, and `data` already includes the offset.
    let status = unsafe {
        sys::napi_get_typedarray_info(
            env,
            v,
            &mut kind,
            &mut len,
            &mut data,
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok || kind != sys::TypedarrayType::uint8_array {
        return None;
    }
    if len == 0 || data.is_null() {
        return Some(&mut []);
    }
    // SAFETY: N-API reports `len` bytes at `data`; an ArrayBuffer's backing
    // store does not move, and no JS runs while the slice is in use.
    Some(unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) })
}

/// The bytes of an ArrayBuffer argument, or of a Uint8Array (Buffer) one;
/// `None` for anything else. An ArrayBuffer costs one cheap N-API call
/// (index.js passes its read pool's): typed-array info was ~260
/// instructions per call (callgrind), a quarter of a read's N-API cost.
///
/// # Safety
/// As [`u8_view`].
pub(crate) unsafe fn out_view<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a mut [u8]> {
    let mut data = ptr::null_mut();
    let mut len = 0;
    // SAFETY: plain N-API call; a non-ArrayBuffer fails with a status.
    if unsafe { sys::napi_get_arraybuffer_info(env, v, &mut data, &mut len) }
        == sys::Status::napi_ok
    {
        if len == 0 || data.is_null() {
            return Some(&mut []);
        }
        // SAFETY: N-API reports `len` bytes at `data`; the backing store
        // does not move, and no JS runs while the slice is in use.
        return Some(unsafe { std::slice::from_raw_parts_mut(data.cast::<u8>(), len) });
    }
    // SAFETY: see the caller.
    unsafe { u8_view(env, v) }
}

/// Keys up to this many UTF-8 bytes are encoded on the stack.
pub(crate) const STACK_KEY: usize = 256;

/// A key argument's bytes: a string encoded as UTF-8 into `stack` (or
/// `heap` when longer), or a Uint8Array's own bytes; `None` for any other
/// value. `stack` is filled in only for a string, so a Buffer key does
/// not pay for zeroing it (`perf`: ~2% of a read).
///
/// # Safety
/// `v` must be a value of the current call, and no JS may run while the
/// returned bytes are in use (a Uint8Array's bytes are borrowed in place).
pub(crate) unsafe fn key_arg<'a>(
    env: sys::napi_env,
    v: sys::napi_value,
    stack: &'a mut Option<[u8; STACK_KEY + 1]>,
    heap: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    // Bytes first: most keys are Buffers, and asking for a typed array's
    // info settles those in one call (`napi_typeof` first cost a second).
    // SAFETY: see the caller.
    if let Some(bytes) = unsafe { u8_view(env, v) } {
        return Some(bytes);
    }
    let mut vtype = 0;
    // SAFETY: plain N-API call.
    unsafe { sys::napi_typeof(env, v, &mut vtype) };
    if vtype != sys::ValueType::napi_string {
        return None;
    }
    let stack = stack.insert([0; STACK_KEY + 1]);
    let mut len = 0;
    // SAFETY: `stack` has STACK_KEY + 1 bytes (room for the NUL).
    let st = unsafe {
        sys::napi_get_value_string_utf8(env, v, stack.as_mut_ptr().cast(), stack.len(), &mut len)
    };
    if st != sys::Status::napi_ok {
        return None;
    }
    // N-API stops before a character that does not fit, so only a result
    // within 4 bytes (the longest UTF-8 character) of the end can be cut.
    if len + 4 <= STACK_KEY {
        return Some(&stack[..len]);
    }
    // Possibly truncated: ask for the length, then encode it whole.
    let mut full = 0;
    // SAFETY: a null buffer asks for the length only.
    unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut full) };
    heap.clear();
    heap.resize(full + 1, 0);
    // SAFETY: `heap` has room for `full` bytes and the NUL.
    unsafe {
        sys::napi_get_value_string_utf8(env, v, heap.as_mut_ptr().cast(), heap.len(), &mut len)
    };
    heap.truncate(len);
    Some(heap)
}

/// `readInto(handle, key, out)`.
pub unsafe extern "C" fn get_into(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut argc = 4usize;
    let mut argv = [ptr::null_mut(); 4];
    // Null for `readInto`, non-null for `readIfResident` (see `register`).
    let mut mode = ptr::null_mut();
    // SAFETY: `argv` has room for `argc` values.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            &mut mode,
        )
    };
    if status != sys::Status::napi_ok || argc < 3 {
        return unsafe {
            throw(
                env,
                "TOONDB_INVALID_ARGUMENT",
                "readInto(handle, key, out, offset?)",
            )
        };
    }
    // SAFETY: `argv[0]` is a value of this call.
    let Some(handle) = (unsafe { handle_arg(env, argv[0]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a read handle") };
    };

    let mut stack = None;
    let mut heap = Vec::new();
    // SAFETY: `argv[1]` is a value of this call; no JS runs while `key` is used.
    let Some(key) = (unsafe { key_arg(env, argv[1], &mut stack, &mut heap) }) else {
        return unsafe {
            throw(
                env,
                "TOONDB_INVALID_ARGUMENT",
                "key must be a string, Buffer or Uint8Array",
            )
        };
    };
    let Some(out) = (unsafe { out_view(env, argv[2]) }) else {
        return unsafe {
            throw(
                env,
                "TOONDB_INVALID_ARGUMENT",
                "out must be an ArrayBuffer or a Buffer",
            )
        };
    };
    // The value goes to `out[offset..]` (index.js's read pool); no offset: 0.
    let offset = if argc >= 4 {
        let mut off = 0u32;
        // SAFETY: plain N-API call; a non-number fails with a status.
        if unsafe { sys::napi_get_value_uint32(env, argv[3], &mut off) } != sys::Status::napi_ok {
            return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "offset must be a number") };
        }
        off as usize
    } else {
        0
    };
    let Some(out) = out.get_mut(offset..) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "offset past the end of out") };
    };
    let how = crate::values::value_read(!mode.is_null());
    let result = catch_unwind(AssertUnwindSafe(|| {
        handle.db.get_value(key, how, |v| reply(env, v, out))
    }));
    let reply = match result {
        Ok(Ok(Some(Ok(r)))) => r,
        Ok(Ok(None)) => Reply::Len(WOULD_BLOCK),
        Ok(Ok(Some(Err(e)))) => return unsafe { throw(env, "TOONDB_INTERNAL", &e.reason) },
        Ok(Err(e)) => return unsafe { throw(env, e.kind().code(), e.message()) },
        Err(_) => return unsafe { throw(env, "TOONDB_INTERNAL", "the storage engine panicked") },
    };
    match reply {
        Reply::Value(v) => v,
        Reply::Len(n) => {
            let mut ret = ptr::null_mut();
            // SAFETY: plain N-API calls. An int32 is a small integer to V8
            // (no double to check and convert, as for an int64).
            match i32::try_from(n) {
                Ok(n) => unsafe { sys::napi_create_int32(env, n, &mut ret) },
                Err(_) => unsafe { sys::napi_create_int64(env, n, &mut ret) },
            };
            ret
        }
    }
}

/// What `readInto` returns when the read would wait for the device
/// (`readIfResident` only).
const WOULD_BLOCK: i64 = -2;

/// Values from this many bytes are returned as a Buffer of their own
/// (one copy) instead of through the scratch buffer and JS's
/// `Buffer.from(subarray)` (two copies, but no Buffer made in native code,
/// and small ones come from Node's pool). Measured CPU per getSync, best of
/// 5 (docs/performance.md, "Read path"): scratch 0.9 / 1.6 / 2.6 / 3.3 µs
/// at 100 B / 1 / 4 / 16 KiB, one copy 1.8 / 1.8 / 2.4 / 3.2 µs.
pub(crate) const DIRECT_COPY_MIN: usize = 4 << 10;

enum Reply {
    /// -1 absent, -2 would block, else the length copied into `out`.
    Len(i64),
    /// A Buffer (zero-copy or a copy of its own).
    Value(sys::napi_value),
}

/// Turns the engine's answer into what `readInto` returns.
fn reply(env: sys::napi_env, value: Option<ValueRef<'_>>, out: &mut [u8]) -> napi::Result<Reply> {
    match value {
        None => Ok(Reply::Len(-1)),
        Some(ValueRef::Borrowed(v)) if v.len() < DIRECT_COPY_MIN && v.len() <= out.len() => {
            out[..v.len()].copy_from_slice(v);
            Ok(Reply::Len(v.len() as i64))
        }
        // SAFETY: on the JS thread with its env.
        Some(ValueRef::Mapped(m)) => match unsafe { crate::values::chunk_view(env, m, out) } {
            Ok(view) => view.map(Reply::Value),
            // SAFETY: as above.
            Err(m) => unsafe { crate::values::buffer_mapped(env, m) }.map(Reply::Value),
        },
        // SAFETY: on the JS thread with its env.
        Some(v) => unsafe { crate::values::value_to_js(env, Some(v)) }.map(Reply::Value),
    }
}

/// Adds `readInto` and `readIfResident` to the module's exports (one
/// callback; the function's data pointer says which), and decides whether
/// values may be returned as external Buffers (values.rs).
pub fn register(env: sys::napi_env, exports: sys::napi_value) -> napi::Result<()> {
    crate::values::detect(env);
    static RESIDENT: u8 = 1;
    // (name, callback, data): `readInto` and `readIfResident` share one
    // callback, told apart by a null or non-null data pointer.
    let resident: *mut std::ffi::c_void = (&RESIDENT as *const u8).cast_mut().cast();
    let functions: [(&std::ffi::CStr, sys::napi_callback, *mut std::ffi::c_void); 7] = [
        (c"readInto", Some(get_into), ptr::null_mut()),
        (c"readIfResident", Some(get_into), resident),
        (
            c"readMany",
            Some(crate::fastmany::read_many),
            ptr::null_mut(),
        ),
        (
            c"scanOpen",
            Some(crate::fastscan::scan_open),
            ptr::null_mut(),
        ),
        (
            c"scanNext",
            Some(crate::fastscan::scan_next),
            ptr::null_mut(),
        ),
        (
            c"scanSeek",
            Some(crate::fastscan::scan_seek),
            ptr::null_mut(),
        ),
        (
            c"scanClose",
            Some(crate::fastscan::scan_close),
            ptr::null_mut(),
        ),
    ];
    for (name, callback, data) in functions {
        let mut f = ptr::null_mut();
        // SAFETY: plain N-API calls during module initialization; `data`
        // is null or a static that is only compared with null.
        unsafe {
            if sys::napi_create_function(
                env,
                name.as_ptr(),
                NAPI_AUTO_LENGTH,
                callback,
                data,
                &mut f,
            ) != sys::Status::napi_ok
                || sys::napi_set_named_property(env, exports, name.as_ptr(), f)
                    != sys::Status::napi_ok
            {
                return Err(napi::Error::from_reason(format!(
                    "registering {} failed",
                    name.to_string_lossy()
                )));
            }
        }
    }
    Ok(())
}

/// `napi_create_function`'s "the name is NUL-terminated".
const NAPI_AUTO_LENGTH: isize = -1;
