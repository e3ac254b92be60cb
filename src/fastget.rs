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
//! engine handle; `readInto(handle, key, out)` returns the value's length,
//! -1 when absent, or a length above `out.length` (nothing copied: retry
//! with a larger buffer). Errors throw a JS Error whose `code` is the
//! TOONDB_* code; a panic becomes TOONDB_INTERNAL.

use std::ffi::{c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;

use napi::sys;
use toondb_storage::Database;

use crate::transaction::copy_into;

/// What `readHandle()`'s external points to.
pub struct ReadHandle {
    pub db: Arc<Database>,
}

unsafe extern "C" fn finalize_handle(_env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
    if !data.is_null() {
        // SAFETY: `data` came from `Box::into_raw` in `create_handle` and the
        // finalizer runs once.
        drop(unsafe { Box::from_raw(data.cast::<ReadHandle>()) });
    }
}

/// A JS external owning `handle` (dropped when the external is collected).
pub fn create_handle(env: sys::napi_env, handle: ReadHandle) -> napi::Result<sys::napi_value> {
    let data = Box::into_raw(Box::new(handle));
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call on the JS thread with a valid env.
    let status = unsafe {
        sys::napi_create_external(
            env,
            data.cast(),
            Some(finalize_handle),
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

unsafe fn throw(env: sys::napi_env, code: &str, msg: &str) -> sys::napi_value {
    let code = CString::new(code).unwrap_or_default();
    let msg = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: valid env and NUL-terminated strings.
    unsafe { sys::napi_throw_error(env, code.as_ptr(), msg.as_ptr()) };
    ptr::null_mut()
}

/// The bytes of a Uint8Array (Buffer) argument, or `None` if it is not one.
unsafe fn u8_view<'a>(env: sys::napi_env, v: sys::napi_value) -> Option<&'a mut [u8]> {
    let mut kind = 0;
    let mut len = 0;
    let mut data = ptr::null_mut();
    let mut ab = ptr::null_mut();
    let mut off = 0;
    // SAFETY: plain N-API call; a non-typed-array fails with a status.
    let status = unsafe {
        sys::napi_get_typedarray_info(env, v, &mut kind, &mut len, &mut data, &mut ab, &mut off)
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

/// Keys up to this many UTF-8 bytes are encoded on the stack.
const STACK_KEY: usize = 256;

/// `readInto(handle, key, out)`.
pub unsafe extern "C" fn get_into(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    let mut argc = 3usize;
    let mut argv = [ptr::null_mut(); 3];
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
    if status != sys::Status::napi_ok || argc < 3 {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "readInto(handle, key, out)") };
    }
    let mut data = ptr::null_mut();
    // SAFETY: a non-external argument fails with a status.
    if unsafe { sys::napi_get_value_external(env, argv[0], &mut data) } != sys::Status::napi_ok
        || data.is_null()
    {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a read handle") };
    }
    // SAFETY: every external passed here was made by `create_handle` (index.js
    // keeps the handle private) and lives while JS can pass it.
    let handle = unsafe { &*data.cast::<ReadHandle>() };

    let mut vtype = 0;
    // SAFETY: plain N-API call.
    unsafe { sys::napi_typeof(env, argv[1], &mut vtype) };
    let mut stack = [0u8; STACK_KEY + 1];
    let heap;
    let key: &[u8] = if vtype == sys::ValueType::napi_string {
        let mut len = 0;
        // SAFETY: `stack` has STACK_KEY + 1 bytes (room for the NUL).
        let st = unsafe {
            sys::napi_get_value_string_utf8(
                env,
                argv[1],
                stack.as_mut_ptr().cast(),
                stack.len(),
                &mut len,
            )
        };
        if st != sys::Status::napi_ok {
            return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "bad string key") };
        }
        // N-API stops before a character that does not fit, so only a result
        // within 4 bytes (the longest UTF-8 character) of the end can be cut.
        if len + 4 <= STACK_KEY {
            &stack[..len]
        } else {
            // Possibly truncated: ask for the length, then encode it whole.
            let mut full = 0;
            // SAFETY: a null buffer asks for the length only.
            unsafe { sys::napi_get_value_string_utf8(env, argv[1], ptr::null_mut(), 0, &mut full) };
            let mut v = vec![0u8; full + 1];
            // SAFETY: `v` has room for `full` bytes and the NUL.
            unsafe {
                sys::napi_get_value_string_utf8(
                    env,
                    argv[1],
                    v.as_mut_ptr().cast(),
                    v.len(),
                    &mut len,
                )
            };
            v.truncate(len);
            heap = v;
            &heap
        }
    } else {
        match unsafe { u8_view(env, argv[1]) } {
            Some(k) => k,
            None => {
                return unsafe {
                    throw(
                        env,
                        "TOONDB_INVALID_ARGUMENT",
                        "key must be a string, Buffer or Uint8Array",
                    )
                }
            }
        }
    };
    let Some(out) = (unsafe { u8_view(env, argv[2]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "out must be a Buffer") };
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        handle.db.get_with(key, |v| copy_into(v, out))
    }));
    let n = match result {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => return unsafe { throw(env, e.kind().code(), e.message()) },
        Err(_) => return unsafe { throw(env, "TOONDB_INTERNAL", "the storage engine panicked") },
    };
    let mut ret = ptr::null_mut();
    // SAFETY: plain N-API call.
    unsafe { sys::napi_create_int64(env, n, &mut ret) };
    ret
}

/// Adds `readInto` to the module's exports.
pub fn register(env: sys::napi_env, exports: sys::napi_value) -> napi::Result<()> {
    let name = c"readInto";
    let mut f = ptr::null_mut();
    // SAFETY: plain N-API calls during module initialization.
    unsafe {
        if sys::napi_create_function(
            env,
            name.as_ptr(),
            8,
            Some(get_into),
            ptr::null_mut(),
            &mut f,
        ) != sys::Status::napi_ok
            || sys::napi_set_named_property(env, exports, name.as_ptr(), f) != sys::Status::napi_ok
        {
            return Err(napi::Error::from_reason("registering readInto failed"));
        }
    }
    Ok(())
}
