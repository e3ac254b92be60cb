//! Per-block compression (docs/format-table.md, "Stored blocks"). A version-2
//! block is stored as `payload | type u8 | crc32`; the type says how the
//! payload encodes the block's contents:
//!
//! - `0` none: the payload is the contents;
//! - `1` LZ4 block format, `2` zstd frame: the payload is
//!   `contents_len varint | compressed bytes`.
//!
//! Other types are reserved; a reader meets them only in a file written by a
//! newer version and reports corruption ("unsupported block type"). A block
//! is stored compressed only when that saves at least 1/8 of its size, as
//! LevelDB and RocksDB do: below that, decompressing on every read costs more
//! than the bytes saved.

use crate::coding::{put_varint, Reader};

/// Compression of table data blocks (a per-database option).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Compression {
    /// Blocks are stored as is (the default: with no block cache yet, every
    /// point read of a compressed block decompresses it again, which halved
    /// point-read throughput with LZ4; see docs/performance.md, "Table
    /// compression").
    #[default]
    None,
    /// LZ4 (the `lz4_flex` crate): fast to decompress, moderate ratio.
    Lz4,
    /// zstd level 3 (the `zstd` crate): better ratio, slower to decompress.
    Zstd,
}

pub(crate) const TYPE_NONE: u8 = 0;
pub(crate) const TYPE_LZ4: u8 = 1;
pub(crate) const TYPE_ZSTD: u8 = 2;

/// zstd's default level: a good ratio at LZ4-like compression speed for
/// 4 KiB blocks.
const ZSTD_LEVEL: i32 = 3;

/// Contents above this are rejected before allocating: block offsets are u32.
const MAX_CONTENTS_LEN: u64 = u32::MAX as u64;

impl Compression {
    fn block_type(self) -> u8 {
        match self {
            Compression::None => TYPE_NONE,
            Compression::Lz4 => TYPE_LZ4,
            Compression::Zstd => TYPE_ZSTD,
        }
    }
}

/// Appends the payload for `contents` to `out` and returns its block type:
/// compressed when that saves at least 1/8, else the contents as they are.
pub(crate) fn compress_into(compression: Compression, contents: &[u8], out: &mut Vec<u8>) -> u8 {
    let start = out.len();
    let compressed = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            put_varint(out, contents.len() as u64);
            Some(lz4_flex::block::compress(contents))
        }
        // A failure here can only be an allocation problem inside zstd; the
        // block is then simply stored uncompressed.
        Compression::Zstd => {
            put_varint(out, contents.len() as u64);
            zstd::bulk::compress(contents, ZSTD_LEVEL).ok()
        }
    };
    if let Some(c) = compressed {
        let stored = (out.len() - start) + c.len();
        if stored <= contents.len() - contents.len() / 8 {
            out.extend_from_slice(&c);
            return compression.block_type();
        }
    }
    out.truncate(start);
    out.extend_from_slice(contents);
    TYPE_NONE
}

/// The contents of a compressed payload. `block_type` is not `TYPE_NONE`
/// (the caller reads those in place).
pub(crate) fn decompress(block_type: u8, payload: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader::new(payload);
    let len = r
        .varint()
        .filter(|&n| n <= MAX_CONTENTS_LEN)
        .ok_or("bad uncompressed length in compressed block")?;
    let len = usize::try_from(len).map_err(|_| "uncompressed block too large")?;
    let data = r.rest();
    let out = match block_type {
        TYPE_LZ4 => lz4_flex::block::decompress(data, len)
            .map_err(|e| format!("lz4 block does not decompress: {e}"))?,
        TYPE_ZSTD => zstd::bulk::decompress(data, len)
            .map_err(|e| format!("zstd block does not decompress: {e}"))?,
        other => {
            return Err(format!(
                "unsupported block type {other} (written by a newer version?)"
            ))
        }
    };
    if out.len() != len {
        return Err(format!(
            "block decompressed to {} bytes, expected {len}",
            out.len()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_blocks_round_trip_and_shrink() {
        let contents: Vec<u8> = b"{\"name\":\"user\",\"n\":1}".repeat(100);
        for c in [Compression::Lz4, Compression::Zstd] {
            let mut out = vec![7];
            let t = compress_into(c, &contents, &mut out);
            assert_eq!(t, c.block_type());
            assert!(out.len() < contents.len() / 2);
            assert_eq!(decompress(t, &out[1..]).unwrap(), contents);
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_as_is() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let contents: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for c in [Compression::None, Compression::Lz4, Compression::Zstd] {
            let mut out = Vec::new();
            assert_eq!(compress_into(c, &contents, &mut out), TYPE_NONE);
            assert_eq!(out, contents);
        }
    }

    #[test]
    fn bad_payloads_are_errors() {
        assert!(decompress(9, &[1, 0]).unwrap_err().contains("unsupported"));
        assert!(decompress(TYPE_LZ4, &[]).is_err());
        assert!(decompress(TYPE_LZ4, &[100, 1, 2, 3]).is_err());
        assert!(decompress(TYPE_ZSTD, &[100, 1, 2, 3]).is_err());
        assert!(decompress(TYPE_ZSTD, &[0xff; 11]).is_err());
    }
}
