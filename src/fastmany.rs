//! `Database#getMany`'s native half as a raw N-API callback,
//! `readMany(handle, keys)`, reading every key from one snapshot.
//!
//! napi-rs's `Vec<Bytes>` argument cost a borrow-registry entry per key
//! Buffer, and a result array of Buffers cost a `napi_create_buffer_copy`
//! (~1.2 µs, NAPI-NOTES) and a `napi_set_element` per value. Here keys are
//! read straight from the array, and when every value is small (and not
//! zero-copy) the answer is one packed Buffer that index.js slices into
//! per-value Buffers:
//!
//! ```text
//! values back to back | zero padding to 4 bytes | end u32 × n | n u32
//! ```
//!
//! u32s little-endian; `end[i]` is where value i ends (it starts where the
//! last present value before it ended, or at 0), `u32::MAX` when key i is
//! absent. Otherwise (a large or zero-copy value, or more than
//! `PACK_MAX_BYTES` in all) the answer is an array of `Buffer | null` as
//! before. `null` instead of either when a read would wait for the device:
//! index.js then runs `getManyAsync` on the libuv pool.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use napi::sys;
use toondb_storage::ValueRef;

use crate::fastget::{call_args, handle_arg, throw, u8_view, DIRECT_COPY_MIN};
use crate::values::{value_read, OwnedValue};

/// `end` of an absent key.
const ABSENT: u32 = u32::MAX;
/// Packed answers stay below this (one retained value keeps the whole
/// packed Buffer alive, so it must not be large).
const PACK_MAX_BYTES: usize = 1 << 20;

/// Where a key's bytes are while the keys are gathered.
enum KeySpan {
    /// A Uint8Array's bytes, borrowed in place.
    Js(*const u8, usize),
    /// A string's UTF-8, in the arena.
    Arena(usize, usize),
}

#[derive(Default)]
struct Scratch {
    arena: Vec<u8>,
    spans: Vec<KeySpan>,
    packed: Vec<u8>,
    ends: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// `readMany(handle, keys)`.
pub unsafe extern "C" fn read_many(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: on the JS thread in a callback.
    let Some(argv) = (unsafe { call_args::<2>(env, info, "readMany(handle, keys)") }) else {
        return ptr::null_mut();
    };
    // SAFETY: `argv[0]` is a value of this call.
    let Some(handle) = (unsafe { handle_arg(env, argv[0]) }) else {
        return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "not a read handle") };
    };
    // The elements first, before any key's bytes are borrowed: reading an
    // element can run JS (an accessor on the array), which could detach an
    // earlier key's ArrayBuffer or call readMany again (SCRATCH is then
    // borrowed: a panic here aborts the process).
    // SAFETY: on the JS thread, a value of this call.
    let elements = match unsafe { array_elements(env, argv[1]) } {
        Ok(elements) => elements,
        Err(None) => {
            let mut pending = false;
            // SAFETY: plain N-API call.
            unsafe { sys::napi_is_exception_pending(env, &mut pending) };
            if pending {
                return ptr::null_mut(); // a getter threw: that error
            }
            return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", "keys could not be read") };
        }
        Err(Some(msg)) => return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", &msg) },
    };
    let Ok(answer) = SCRATCH.try_with(|cell| {
        let Ok(mut guard) = cell.try_borrow_mut() else {
            // Only reachable if something above re-enters; never panic.
            return read_with(env, handle, &elements, &mut Scratch::default());
        };
        read_with(env, handle, &elements, &mut guard)
    }) else {
        return unsafe { throw(env, "TOONDB_INTERNAL", "thread-local scratch unavailable") };
    };
    answer
}

/// `readMany`'s work once the key elements are gathered (no JS runs here).
fn read_with(
    env: sys::napi_env,
    handle: &crate::fastget::ReadHandle,
    elements: &[sys::napi_value],
    scratch: &mut Scratch,
) -> sys::napi_value {
    {
        // SAFETY: on the JS thread, values of this call.
        match unsafe { read_keys(env, elements, scratch) } {
            Ok(()) => {}
            Err(msg) => return unsafe { throw(env, "TOONDB_INVALID_ARGUMENT", &msg) },
        }
        let Scratch {
            arena,
            spans,
            packed,
            ends,
        } = scratch;
        let keys: Vec<&[u8]> = spans
            .iter()
            .map(|s| match *s {
                // SAFETY: a Uint8Array's bytes stay put and unchanged while
                // no JS runs, which holds until this callback returns.
                KeySpan::Js(p, len) if len > 0 => unsafe { std::slice::from_raw_parts(p, len) },
                KeySpan::Js(..) => &[][..],
                KeySpan::Arena(a, b) => &arena[a..b],
            })
            .collect();
        packed.clear();
        ends.clear();
        let mut large: Vec<(usize, OwnedValue)> = Vec::new();
        let read = catch_unwind(AssertUnwindSafe(|| {
            handle
                .db
                .get_many_values(&keys, value_read(true), |i, v| match v {
                    None => ends.push(ABSENT),
                    Some(ValueRef::Borrowed(b))
                        if b.len() < DIRECT_COPY_MIN
                            && packed.len() + b.len() <= PACK_MAX_BYTES =>
                    {
                        packed.extend_from_slice(b);
                        ends.push(packed.len() as u32);
                    }
                    Some(v) => {
                        large.push((i, OwnedValue::of(v)));
                        ends.push(ABSENT);
                    }
                })
        }));
        let complete = match read {
            Ok(Ok(complete)) => complete,
            Ok(Err(e)) => return unsafe { throw(env, e.kind().code(), e.message()) },
            Err(_) => {
                return unsafe { throw(env, "TOONDB_INTERNAL", "the storage engine panicked") }
            }
        };
        let answer = if !complete {
            null(env)
        } else if large.is_empty() {
            // SAFETY: on the JS thread with its env.
            unsafe { packed_answer(env, packed, ends) }
        } else {
            // SAFETY: on the JS thread with its env.
            unsafe { array_answer(env, packed, ends, large) }
        };
        let answer = answer.unwrap_or_else(|e| unsafe { throw(env, "TOONDB_INTERNAL", &e.reason) });
        if packed.capacity() > 2 * PACK_MAX_BYTES {
            *packed = Vec::new();
        }
        answer
    }
}

/// The elements of `array` (reading them may run JS: getters). `Err(None)`
/// when an exception is pending.
///
/// # Safety
/// On the JS thread; `array` is a value of the current call.
unsafe fn array_elements(
    env: sys::napi_env,
    array: sys::napi_value,
) -> Result<Vec<sys::napi_value>, Option<String>> {
    let mut is_array = false;
    // SAFETY: plain N-API calls.
    unsafe { sys::napi_is_array(env, array, &mut is_array) };
    if !is_array {
        return Err(Some("keys must be an array".into()));
    }
    let mut n = 0u32;
    // SAFETY: plain N-API call on an array.
    unsafe { sys::napi_get_array_length(env, array, &mut n) };
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n {
        let mut v = ptr::null_mut();
        // SAFETY: plain N-API call.
        if unsafe { sys::napi_get_element(env, array, i, &mut v) } != sys::Status::napi_ok {
            return Err(None);
        }
        out.push(v);
    }
    Ok(out)
}

/// Gathers the keys (`elements`, already read from the array) into
/// `scratch.spans` (strings encoded into `scratch.arena`). Runs no JS, so
/// the Uint8Arrays' bytes stay put until the read is done.
///
/// # Safety
/// On the JS thread; `elements` are values of the current call.
unsafe fn read_keys(
    env: sys::napi_env,
    elements: &[sys::napi_value],
    scratch: &mut Scratch,
) -> Result<(), String> {
    scratch.arena.clear();
    scratch.spans.clear();
    for (i, &v) in elements.iter().enumerate() {
        let mut vtype = 0;
        // SAFETY: plain N-API call (runs no JS).
        unsafe { sys::napi_typeof(env, v, &mut vtype) };
        if vtype == sys::ValueType::napi_string {
            let mut len = 0;
            // SAFETY: a null buffer asks for the length only.
            unsafe { sys::napi_get_value_string_utf8(env, v, ptr::null_mut(), 0, &mut len) };
            let start = scratch.arena.len();
            scratch.arena.resize(start + len + 1, 0);
            let mut written = 0;
            // SAFETY: the arena has room for `len` bytes and the NUL.
            unsafe {
                sys::napi_get_value_string_utf8(
                    env,
                    v,
                    scratch.arena[start..].as_mut_ptr().cast(),
                    len + 1,
                    &mut written,
                )
            };
            scratch.arena.truncate(start + written);
            scratch.spans.push(KeySpan::Arena(start, start + written));
        } else {
            // SAFETY: see the caller; the bytes are only read.
            match unsafe { u8_view(env, v) } {
                Some(k) => scratch.spans.push(KeySpan::Js(k.as_ptr(), k.len())),
                None => return Err(format!("keys[{i}] must be a string, Buffer or Uint8Array")),
            }
        }
    }
    Ok(())
}

fn null(env: sys::napi_env) -> napi::Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call.
    unsafe { sys::napi_get_null(env, &mut out) };
    Ok(out)
}

/// The packed Buffer (layout in the module docs).
///
/// # Safety
/// On the JS thread with its env.
unsafe fn packed_answer(
    env: sys::napi_env,
    packed: &mut Vec<u8>,
    ends: &[u32],
) -> napi::Result<sys::napi_value> {
    let padded = packed.len().next_multiple_of(4);
    packed.resize(padded, 0);
    for end in ends {
        packed.extend_from_slice(&end.to_le_bytes());
    }
    packed.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    // SAFETY: see the caller.
    unsafe { crate::values::buffer_copy(env, packed) }
}

/// An array of `Buffer | null`: packed values copied out one by one, the
/// large ones as `get` returns them.
///
/// # Safety
/// On the JS thread with its env.
unsafe fn array_answer(
    env: sys::napi_env,
    packed: &[u8],
    ends: &[u32],
    large: Vec<(usize, OwnedValue)>,
) -> napi::Result<sys::napi_value> {
    let mut array = ptr::null_mut();
    // SAFETY: plain N-API call.
    unsafe { sys::napi_create_array_with_length(env, ends.len(), &mut array) };
    let mut large = large.into_iter().peekable();
    let mut start = 0usize;
    for (i, &end) in ends.iter().enumerate() {
        let value = match large.next_if(|(at, _)| *at == i) {
            // SAFETY: see the caller.
            Some((_, owned)) => unsafe { crate::values::owned_to_js(env, owned) }?,
            None if end == ABSENT => null(env)?,
            None => {
                let end = end as usize;
                // SAFETY: see the caller.
                let v = unsafe { crate::values::buffer_copy(env, &packed[start..end]) }?;
                start = end;
                v
            }
        };
        // SAFETY: plain N-API call; `array` is live.
        unsafe { sys::napi_set_element(env, array, i as u32, value) };
    }
    Ok(array)
}
