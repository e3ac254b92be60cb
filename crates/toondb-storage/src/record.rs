//! Checksummed record framing shared by the WAL and the manifest log:
//! `crc32 u32 LE | len u32 LE | payload[len]`, where the CRC-32 (IEEE polynomial, via
//! crc32fast) covers the four length bytes and the payload. See docs/format-wal.md.

use crate::coding::Reader;

/// Bytes before the payload.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest payload a frame may carry (a batch of up to 1 GiB).
pub const MAX_FRAME_PAYLOAD: usize = 1 << 30;

/// Appends one framed record to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_FRAME_PAYLOAD);
    let len = (payload.len() as u32).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(payload);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(payload);
}

/// Starts a frame in place: reserves the header and returns where it begins,
/// so a caller can encode the payload straight into `out` (no extra copy)
/// and then seal it with [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    start
}

/// Fills in the header of the frame begun at `start`; everything after the
/// header up to the end of `out` is its payload.
pub fn finish_frame(out: &mut [u8], start: usize) {
    let payload_start = start + FRAME_HEADER_LEN;
    let len = ((out.len() - payload_start) as u32).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len);
    hasher.update(&out[payload_start..]);
    out[start..start + 4].copy_from_slice(&hasher.finalize().to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&len);
}

/// What sits at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A valid record; `consumed` is header + payload length.
    Record { payload: &'a [u8], consumed: usize },
    /// Nothing more: the buffer is empty or holds only zero bytes
    /// (preallocated, never written).
    End,
    /// The record runs past the end of the buffer (a torn write).
    Truncated,
    /// The record is complete but its checksum or length is wrong.
    Bad(&'static str),
}

pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.iter().all(|&b| b == 0) {
        return Frame::End;
    }
    let mut r = Reader::new(buf);
    let (Some(crc), Some(len)) = (r.u32_le(), r.u32_le()) else {
        return Frame::Truncated;
    };
    let len = len as usize;
    if len == 0 || len > MAX_FRAME_PAYLOAD {
        return Frame::Bad("impossible record length");
    }
    let Some(payload) = r.bytes(len) else {
        return Frame::Truncated;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&(len as u32).to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Frame::Bad("checksum mismatch");
    }
    Frame::Record {
        payload,
        consumed: FRAME_HEADER_LEN + len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_frames_match_encode_frame() {
        let mut a = Vec::new();
        encode_frame(b"payload", &mut a);
        let mut b = vec![9];
        let start = begin_frame(&mut b);
        b.extend_from_slice(b"payload");
        finish_frame(&mut b, start);
        assert_eq!(&b[1..], &a[..]);
    }

    #[test]
    fn round_trip_and_damage() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf);
        encode_frame(b"world!", &mut buf);
        let Frame::Record { payload, consumed } = read_frame(&buf) else {
            panic!("first record")
        };
        assert_eq!(payload, b"hello");
        assert!(matches!(
            read_frame(&buf[consumed..]),
            Frame::Record {
                payload: b"world!",
                ..
            }
        ));
        assert_eq!(read_frame(&buf[..consumed - 1]), Frame::Truncated);
        assert_eq!(read_frame(&[]), Frame::End);
        assert_eq!(read_frame(&[0; 32]), Frame::End);
        let mut flipped = buf.clone();
        flipped[10] ^= 1;
        assert_eq!(read_frame(&flipped), Frame::Bad("checksum mismatch"));
    }
}
