//! Values on their way into JS: V8-owned copies, and zero-copy Buffers over
//! a value's own private mapping (engine: `ValueMap`, io/value_map.rs).
//!
//! Every Buffer made here is either a copy V8 owns (`napi_create_buffer_copy`:
//! freed by the garbage collector with the object, never on a later
//! event-loop turn as napi-rs's `Buffer::from(Vec)` externals are) or an
//! external Buffer whose finalizer drops the `ValueMap` (the `munmap`).
//!
//! Runtimes that refuse external buffers (Electron >= 21, V8 memory cage)
//! are detected once at load: then nothing is mapped and every value is
//! copied. `TOONDB_NO_EXTERNAL_BUFFERS=1` forces that path (tests).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use napi::bindgen_prelude::ToNapiValue;
use napi::sys;
use toondb_storage::{MappedChunk, ValueMap, ValueRef};

/// Whether this runtime takes external buffers (decided at load).
static EXTERNAL_OK: AtomicBool = AtomicBool::new(false);

pub fn external_buffers() -> bool {
    EXTERNAL_OK.load(Ordering::Relaxed)
}

/// napi_no_external_buffers_allowed (js_native_api_types.h).
const NO_EXTERNAL_BUFFERS: sys::napi_status = 22;

unsafe extern "C" fn no_finalize(_env: sys::napi_env, _data: *mut c_void, _hint: *mut c_void) {}

/// Tries one external buffer (over a static byte) and records
/// whether the runtime accepts it, unless the environment forbids them.
pub fn detect(env: sys::napi_env) {
    static PROBE: [u8; 1] = [0];
    let forced_off = std::env::var_os("TOONDB_NO_EXTERNAL_BUFFERS").is_some_and(|v| v != "0");
    let mut out = ptr::null_mut();
    // SAFETY: plain N-API call on the JS thread; the data is a static that
    // outlives the Buffer and is never written through it (the Buffer is
    // dropped unreachable right away).
    let status = unsafe {
        sys::napi_create_external_buffer(
            env,
            0,
            PROBE.as_ptr() as *mut c_void,
            Some(no_finalize),
            ptr::null_mut(),
            &mut out,
        )
    };
    EXTERNAL_OK.store(
        !forced_off && status == sys::Status::napi_ok,
        Ordering::Relaxed,
    );
}

/// A V8-owned copy of `bytes`.
///
/// # Safety
/// `env` is the current JS thread's env.
pub unsafe fn buffer_copy(env: sys::napi_env, bytes: &[u8]) -> napi::Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    let mut data = ptr::null_mut();
    // SAFETY: N-API copies `bytes.len()` bytes from `bytes` into a new Buffer.
    let status = unsafe {
        sys::napi_create_buffer_copy(env, bytes.len(), bytes.as_ptr().cast(), &mut data, &mut out)
    };
    if status != sys::Status::napi_ok {
        return Err(napi::Error::from_reason("napi_create_buffer_copy failed"));
    }
    Ok(out)
}

unsafe extern "C" fn drop_value_map(_env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    if !hint.is_null() {
        // SAFETY: `hint` came from `Box::into_raw` in `buffer_mapped`, and
        // N-API calls the finalizer once, after the Buffer is unreachable.
        drop(unsafe { Box::from_raw(hint.cast::<ValueMap>()) });
    }
}

/// A Buffer over `map` without copying; the map lives until the Buffer is
/// collected. A copy when the runtime refuses external buffers after all.
///
/// V8 adds an external Buffer's length to its count of memory allocated
/// outside its heap, and past 64 MiB above the count at the last full
/// collection starts another one. A mapped value is page cache (file pages
/// the kernel can drop), not process memory, and those collections were
/// most of a zero-copy read's cost, so the length is taken straight back
/// off the count (`napi_adjust_external_memory`). It is not added back when
/// the Buffer dies (V8 subtracts it then, so the count ends lower by the
/// value's length): adding it back in the finalizer raised the count in
/// bursts after each collection and started the same collections again
/// (64 KiB values: 4.8 µs of CPU per read, against 2.5 µs without; 11 µs
/// with no adjustment at all; docs/performance.md, "Read path"). V8 only
/// compares the count with its value at the last full collection, so a
/// lower count changes nothing after that. The number of mappings stays
/// bounded by the engine (`max_live_value_maps`).
///
/// # Safety
/// `env` is the current JS thread's env.
pub unsafe fn buffer_mapped(env: sys::napi_env, map: ValueMap) -> napi::Result<sys::napi_value> {
    let mut map = Box::new(map);
    let (data, len) = (map.as_mut_ptr(), map.len());
    let hint = Box::into_raw(map);
    let mut out = ptr::null_mut();
    // SAFETY: `data` is valid and writable for `len` bytes (a private
    // mapping no other Buffer shares: writes stay in it) for as long as
    // `hint` lives, which the finalizer frees only once the Buffer is gone.
    let status = unsafe {
        sys::napi_create_external_buffer(
            env,
            len,
            data.cast(),
            Some(drop_value_map),
            hint.cast(),
            &mut out,
        )
    };
    if status == sys::Status::napi_ok {
        let mut total = 0;
        // SAFETY: plain N-API call on the JS thread; a decrease never
        // starts a collection.
        unsafe { sys::napi_adjust_external_memory(env, -(len as i64), &mut total) };
        return Ok(out);
    }
    // SAFETY: no Buffer was made, so nothing else owns `hint`.
    let map = unsafe { Box::from_raw(hint) };
    if status == NO_EXTERNAL_BUFFERS {
        EXTERNAL_OK.store(false, Ordering::Relaxed);
    }
    // SAFETY: see the caller.
    unsafe { buffer_copy(env, map.bytes()) }
}

/// What [`chunk_view`] writes at the start of `out`: the value's offset in
/// the returned ArrayBuffer, its length, and 1 when the ArrayBuffer is new
/// (JS marks it untransferable), as little-endian u32s.
pub const CHUNK_VIEW_HEADER: usize = 12;

/// A chunk's ArrayBuffer this JS thread made, held weakly, with the
/// generation that tells it apart from a later one over the same chunk.
struct ChunkBuffer {
    reference: sys::napi_ref,
    generation: u64,
}

thread_local! {
    /// Per JS thread (an env lives on one thread, and its finalizers run
    /// there): the ArrayBuffer over each mapping values were viewed from,
    /// by `MappedChunk::id`. An entry is removed by its ArrayBuffer's
    /// finalizer, which also holds the chunk, so an id here always names a
    /// live chunk.
    static CHUNK_BUFFERS: RefCell<(HashMap<usize, ChunkBuffer>, u64)> =
        RefCell::new((HashMap::new(), 0));
}

/// An ArrayBuffer's finalizer hint: the chunk it keeps mapped.
struct ChunkHold {
    chunk: MappedChunk,
    generation: u64,
}

unsafe extern "C" fn drop_chunk(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
    if hint.is_null() {
        return;
    }
    // SAFETY: `hint` came from `Box::into_raw` in `chunk_view`, and N-API
    // calls the finalizer once, after the ArrayBuffer is unreachable.
    let hold = unsafe { Box::from_raw(hint.cast::<ChunkHold>()) };
    let stale = CHUNK_BUFFERS.with(|c| {
        let mut c = c.borrow_mut();
        let mine =
            c.0.get(&hold.chunk.id())
                .is_some_and(|b| b.generation == hold.generation);
        if mine {
            c.0.remove(&hold.chunk.id()).map(|b| b.reference)
        } else {
            None
        }
    });
    if let Some(reference) = stale {
        // SAFETY: the reference was made on this env and is deleted once
        // (its entry is gone).
        unsafe { sys::napi_delete_reference(env, reference) };
    }
    drop(hold);
}

/// A zero-copy value as a view of one ArrayBuffer over its whole chunk
/// (the private mapping it was handed out of): the ArrayBuffer is made
/// once per chunk, and each value read from it costs JS a Buffer view
/// instead of an external Buffer and a finalizer of its own (64 KiB values:
/// most of a zero-copy read's cost; docs/performance.md, "Zero-copy values
/// as views of one mapping"). Returns the ArrayBuffer and writes
/// [`CHUNK_VIEW_HEADER`] into `out`; `None` hands the value back when it
/// cannot be viewed this way (`out` too small, a chunk past u32 offsets),
/// for an external Buffer of its own.
///
/// The chunk never hands a value's range out twice, so views of different
/// reads never share bytes: writing into a returned Buffer changes only
/// that Buffer (and never the file). As with Node's pooled Buffers, the
/// `.buffer` a view exposes is larger than the value.
///
/// # Safety
/// `env` is the current JS thread's env.
pub unsafe fn chunk_view(
    env: sys::napi_env,
    map: ValueMap,
    out: &mut [u8],
) -> Result<napi::Result<sys::napi_value>, ValueMap> {
    if out.len() < CHUNK_VIEW_HEADER || u32::try_from(map.chunk_len()).is_err() {
        return Err(map);
    }
    let len = map.len();
    let (chunk, offset) = map.into_chunk();
    let header = |out: &mut [u8], new: u32| {
        out[0..4].copy_from_slice(&(offset as u32).to_le_bytes());
        out[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        out[8..12].copy_from_slice(&new.to_le_bytes());
    };
    let known = CHUNK_BUFFERS.with(|c| c.borrow().0.get(&chunk.id()).map(|b| b.reference));
    if let Some(reference) = known {
        let mut ab = ptr::null_mut();
        // SAFETY: a reference of this env; a collected ArrayBuffer gives null.
        let status = unsafe { sys::napi_get_reference_value(env, reference, &mut ab) };
        if status == sys::Status::napi_ok && !ab.is_null() {
            let (mut data, mut ab_len) = (ptr::null_mut(), 0);
            // SAFETY: plain N-API call on an ArrayBuffer of this env.
            unsafe { sys::napi_get_arraybuffer_info(env, ab, &mut data, &mut ab_len) };
            if data.cast::<u8>() == chunk.as_mut_ptr() && ab_len == chunk.len() {
                header(out, 0);
                return Ok(Ok(ab));
            }
            // Detached (ArrayBuffer#transfer ignores markAsUntransferable;
            // its emptied views keep it reachable): a view of it would
            // throw, and a new ArrayBuffer over the chunk would share bytes
            // with whatever took the old one's contents. Copy the value.
            // SAFETY: `offset..offset + len` lies in the chunk (it was
            // handed out of it), which `chunk` keeps mapped.
            let bytes = unsafe { std::slice::from_raw_parts(chunk.as_mut_ptr().add(offset), len) };
            // SAFETY: see the caller.
            return Ok(unsafe { buffer_copy(env, bytes) });
        }
    }
    let (ptr, chunk_len, id) = (chunk.as_mut_ptr(), chunk.len(), chunk.id());
    let generation = CHUNK_BUFFERS.with(|c| {
        let mut c = c.borrow_mut();
        c.1 += 1;
        c.1
    });
    let hint = Box::into_raw(Box::new(ChunkHold { chunk, generation }));
    let mut ab = ptr::null_mut();
    // SAFETY: `ptr` is valid and writable for `chunk_len` bytes (a private
    // mapping: writes stay in it) for as long as `hint` lives, which the
    // finalizer frees only once the ArrayBuffer is gone.
    let status = unsafe {
        sys::napi_create_external_arraybuffer(
            env,
            ptr.cast(),
            chunk_len,
            Some(drop_chunk),
            hint.cast(),
            &mut ab,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: no ArrayBuffer was made, so nothing else owns `hint`.
        let hold = unsafe { Box::from_raw(hint) };
        if status == NO_EXTERNAL_BUFFERS {
            EXTERNAL_OK.store(false, Ordering::Relaxed);
        }
        // SAFETY: `offset..offset + len` lies in the chunk (it was handed
        // out of it), which `hold` keeps mapped.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.add(offset), len) };
        // SAFETY: see the caller.
        let copy = unsafe { buffer_copy(env, bytes) };
        drop(hold);
        return Ok(copy);
    }
    let mut reference = ptr::null_mut();
    // SAFETY: plain N-API call; a weak reference (count 0).
    if unsafe { sys::napi_create_reference(env, ab, 0, &mut reference) } == sys::Status::napi_ok {
        let old = CHUNK_BUFFERS.with(|c| {
            c.borrow_mut().0.insert(
                id,
                ChunkBuffer {
                    reference,
                    generation,
                },
            )
        });
        if let Some(old) = old {
            // SAFETY: the replaced entry's reference (its ArrayBuffer was
            // collected; its finalizer no longer finds it) is deleted once.
            unsafe { sys::napi_delete_reference(env, old.reference) };
        }
    }
    let mut total = 0;
    // SAFETY: plain N-API call on the JS thread (see `buffer_mapped`).
    unsafe { sys::napi_adjust_external_memory(env, -(chunk_len as i64), &mut total) };
    header(out, 1);
    Ok(Ok(ab))
}

/// `null`, or a Buffer with the value (zero-copy for a mapped one).
///
/// # Safety
/// `env` is the current JS thread's env.
pub unsafe fn value_to_js(
    env: sys::napi_env,
    value: Option<ValueRef<'_>>,
) -> napi::Result<sys::napi_value> {
    match value {
        None => {
            let mut out = ptr::null_mut();
            // SAFETY: plain N-API call.
            unsafe { sys::napi_get_null(env, &mut out) };
            Ok(out)
        }
        // SAFETY: see the caller.
        Some(ValueRef::Borrowed(b)) => unsafe { buffer_copy(env, b) },
        // SAFETY: see the caller.
        Some(ValueRef::Mapped(m)) => unsafe { buffer_mapped(env, m) },
    }
}

/// A value read off the JS thread, kept until it can be made a Buffer.
pub enum OwnedValue {
    Copied(Vec<u8>),
    Mapped(ValueMap),
}

impl OwnedValue {
    pub fn of(value: ValueRef<'_>) -> OwnedValue {
        match value {
            ValueRef::Borrowed(b) => OwnedValue::Copied(b.to_vec()),
            ValueRef::Mapped(m) => OwnedValue::Mapped(m),
        }
    }
}

/// An owned value as a Buffer (a copy, or zero-copy over its mapping).
///
/// # Safety
/// On the JS thread with its env.
pub unsafe fn owned_to_js(env: sys::napi_env, value: OwnedValue) -> napi::Result<sys::napi_value> {
    // SAFETY: see the caller.
    unsafe {
        match value {
            OwnedValue::Copied(v) => buffer_copy(env, &v),
            OwnedValue::Mapped(m) => buffer_mapped(env, m),
        }
    }
}

/// `null` or a Buffer, as an AsyncTask's or method's result.
pub struct JsValueOut(pub Option<OwnedValue>);

impl ToNapiValue for JsValueOut {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        // SAFETY: napi-rs converts results on the JS thread.
        unsafe {
            match val.0 {
                None => value_to_js(env, None),
                Some(owned) => owned_to_js(env, owned),
            }
        }
    }
}

/// How a read that produces JS values asks the engine.
pub fn value_read(resident_only: bool) -> toondb_storage::ValueRead {
    toondb_storage::ValueRead {
        zero_copy: external_buffers(),
        resident_only,
    }
}
