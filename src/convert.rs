//! JS keys and values (string, Buffer or Uint8Array) as bytes.

use napi::bindgen_prelude::Either;

/// A key or value argument: a JS string (UTF-8 encoded) or bytes.
pub type Bytes<'a> = Either<String, &'a [u8]>;

pub fn as_bytes<'b>(v: &'b Bytes<'_>) -> &'b [u8] {
    match v {
        Either::A(s) => s.as_bytes(),
        Either::B(b) => b,
    }
}
