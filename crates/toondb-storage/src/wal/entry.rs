//! Record payloads (versions 2 to 4): a kind byte, then a write batch, a
//! sync point, a predecessor record (version 3) or a segment-synced record
//! (version 4). A sync point records how far the segment was known to be durable
//! when it was written, which is what lets replay tell damage that a power
//! cut may leave in unsynced writes (a torn tail, droppable) from damage to
//! bytes that an fsync had already made durable (corruption). The layout
//! and the replay rule are in docs/format-wal.md.

use crate::record::{begin_frame, encode_frame, finish_frame, read_frame, Frame, FRAME_HEADER_LEN};

/// Payload kind of a committed write batch.
pub const KIND_BATCH: u8 = 1;
/// Payload kind of a sync point.
pub const KIND_SYNC_POINT: u8 = 2;
/// Payload kind of a predecessor record (version 3: the first frame of a
/// segment, naming the segment before it and where that one ended).
pub const KIND_PREDECESSOR: u8 = 3;
/// Payload kind of a segment-synced record (version 4: an older segment's
/// background sync finished, written into the live segment).
pub const KIND_SEGMENT_SYNCED: u8 = 4;

/// kind (1) | segment number u64 LE (8) | synced_upto u64 LE (8).
const SYNC_POINT_PAYLOAD_LEN: usize = 17;
/// A whole sync-point frame: frame header plus payload.
pub const SYNC_POINT_FRAME_LEN: usize = FRAME_HEADER_LEN + SYNC_POINT_PAYLOAD_LEN;

/// "Every byte of segment `segment` before offset `synced_upto` had been
/// made durable (an fdatasync covering it had returned) before this frame
/// was written."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    pub segment: u64,
    pub synced_upto: u64,
}

/// "When this segment was created, segment `segment` ended at offset
/// `end` and may not have been synced yet" (version 3; `segment == 0`:
/// every earlier segment was durable whole when this one was created).
/// Written with the header and synced before anything is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Predecessor {
    pub segment: u64,
    pub end: u64,
}

/// "Every byte of the older segment `segment` before offset `end` had been
/// made durable (its background fdatasync had returned) before this frame
/// was written" (version 4). The writer writes it into the live segment
/// once the sync of a sealed segment finished, at the latest in the first
/// durable group after it, so a durable write acknowledged in a newer
/// segment always leaves a durable record that the older one was synced:
/// damage there is then a media error, never a lost unsynced tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSynced {
    pub segment: u64,
    pub end: u64,
}

/// A whole predecessor frame (same length as a sync point's).
#[cfg(test)]
pub const PREDECESSOR_FRAME_LEN: usize = SYNC_POINT_FRAME_LEN;
/// A whole segment-synced frame (same length as a sync point's).
#[cfg(test)]
pub const SEGMENT_SYNCED_FRAME_LEN: usize = SYNC_POINT_FRAME_LEN;

/// A payload of version 2 or later, decoded (which kinds a segment may
/// hold depends on its version: the reader checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The batch encoding (`WriteBatch::encode_record`), kind byte stripped.
    Batch(&'a [u8]),
    SyncPoint(SyncPoint),
    Predecessor(Predecessor),
    SegmentSynced(SegmentSynced),
}

/// Appends a sync-point frame to `out`.
pub fn encode_sync_point(point: SyncPoint, out: &mut Vec<u8>) {
    let mut payload = [0u8; SYNC_POINT_PAYLOAD_LEN];
    payload[0] = KIND_SYNC_POINT;
    payload[1..9].copy_from_slice(&point.segment.to_le_bytes());
    payload[9..].copy_from_slice(&point.synced_upto.to_le_bytes());
    encode_frame(&payload, out);
}

/// Appends a predecessor frame to `out`.
pub fn encode_predecessor(p: Predecessor, out: &mut Vec<u8>) {
    encode_two_u64(KIND_PREDECESSOR, p.segment, p.end, out);
}

/// Appends a segment-synced frame to `out`.
pub fn encode_segment_synced(s: SegmentSynced, out: &mut Vec<u8>) {
    encode_two_u64(KIND_SEGMENT_SYNCED, s.segment, s.end, out);
}

/// Appends a fixed-length (17-byte payload) frame: kind, two u64 LE.
fn encode_two_u64(kind: u8, a: u64, b: u64, out: &mut Vec<u8>) {
    let mut payload = [0u8; SYNC_POINT_PAYLOAD_LEN];
    payload[0] = kind;
    payload[1..9].copy_from_slice(&a.to_le_bytes());
    payload[9..].copy_from_slice(&b.to_le_bytes());
    encode_frame(&payload, out);
}

/// Starts a batch frame in `out`: the caller appends the batch encoding,
/// then seals the frame with [`finish_batch_frame`].
pub fn begin_batch_frame(out: &mut Vec<u8>) -> usize {
    let start = begin_frame(out);
    out.push(KIND_BATCH);
    start
}

/// Seals a frame begun with [`begin_batch_frame`].
pub fn finish_batch_frame(out: &mut [u8], start: usize) {
    finish_frame(out, start);
}

/// Decodes a checksummed version-2 payload; a payload that passed its
/// checksum but breaks these rules is corruption, never a torn write.
pub fn decode(payload: &[u8]) -> Result<Entry<'_>, String> {
    match payload.split_first() {
        Some((&KIND_BATCH, body)) => Ok(Entry::Batch(body)),
        Some((&KIND_SYNC_POINT, body)) => {
            let (segment, synced_upto) = two_u64(body, "sync point")?;
            Ok(Entry::SyncPoint(SyncPoint {
                segment,
                synced_upto,
            }))
        }
        Some((&KIND_PREDECESSOR, body)) => {
            let (segment, end) = two_u64(body, "predecessor")?;
            Ok(Entry::Predecessor(Predecessor { segment, end }))
        }
        Some((&KIND_SEGMENT_SYNCED, body)) => {
            let (segment, end) = two_u64(body, "segment-synced record")?;
            Ok(Entry::SegmentSynced(SegmentSynced { segment, end }))
        }
        Some((kind, _)) => Err(format!("unknown record kind {kind}")),
        None => Err("empty payload".to_owned()),
    }
}

/// The two little-endian u64s of a fixed-length (17-byte) payload's body.
fn two_u64(body: &[u8], what: &str) -> Result<(u64, u64), String> {
    let (Ok(a), Ok(b)) = (
        body.get(..8).unwrap_or_default().try_into(),
        body.get(8..).unwrap_or_default().try_into(),
    ) else {
        return Err(format!(
            "{what} payload is {} bytes, not {SYNC_POINT_PAYLOAD_LEN}",
            body.len() + 1
        ));
    };
    Ok((u64::from_le_bytes(a), u64::from_le_bytes(b)))
}

/// The sync point with the highest claim among those found at any byte
/// offset after `bad` in a segment's bytes, with the offset it was found
/// at. Only sync points that could be genuine count: naming `segment`,
/// and claiming no more than their own offset (the writer puts a sync
/// point at the end of the log, and only bytes before it can have been
/// synced). Every other valid-looking frame is ignored: no sync point can
/// hide inside it.
///
/// Probing every offset is cheap: a sync point has a fixed length, so all
/// but the offsets holding that exact length field are rejected by one
/// comparison, and each candidate costs a 21-byte checksum.
pub fn highest_claim_after(data: &[u8], bad: usize, segment: u64) -> Option<(usize, u64)> {
    highest_fixed_from(
        data,
        bad.saturating_add(1),
        KIND_SYNC_POINT,
        |at, e| match e {
            Entry::SyncPoint(p) if p.segment == segment && p.synced_upto <= at as u64 => {
                Some(p.synced_upto)
            }
            _ => None,
        },
    )
}

/// The segment-synced record naming `segment` with the highest end among
/// those found at any byte offset of `data` (a segment newer than
/// `segment`, header included: the header cannot hold one), with the
/// offset it was found at. Probed at every offset, like
/// [`highest_claim_after`], so damage earlier in the newer segment cannot
/// hide one. Only ends past the header count (the writer records a sealed
/// segment's logical end, which holds at least its header).
pub fn highest_segment_synced(data: &[u8], segment: u64) -> Option<(usize, u64)> {
    highest_fixed_from(data, 0, KIND_SEGMENT_SYNCED, |_, e| match e {
        Entry::SegmentSynced(s) if s.segment == segment && s.end > HEADER_LEN => Some(s.end),
        _ => None,
    })
}

/// Segment header length, as the claims above count offsets.
const HEADER_LEN: u64 = super::SEGMENT_HEADER_LEN as u64;

/// The highest value `claim` returns for a valid fixed-length frame of
/// `kind` starting at an offset in `from ..`, and that offset.
fn highest_fixed_from(
    data: &[u8],
    from: usize,
    kind: u8,
    claim: impl Fn(usize, Entry<'_>) -> Option<u64>,
) -> Option<(usize, u64)> {
    let last_start = data.len().checked_sub(SYNC_POINT_FRAME_LEN)?;
    let want_len = (SYNC_POINT_PAYLOAD_LEN as u32).to_le_bytes();
    let mut best: Option<(usize, u64)> = None;
    for at in from..=last_start {
        if data[at + 4..at + 8] != want_len || data[at + FRAME_HEADER_LEN] != kind {
            continue;
        }
        let Frame::Record { payload, .. } = read_frame(&data[at..at + SYNC_POINT_FRAME_LEN]) else {
            continue;
        };
        let Some(value) = decode(payload).ok().and_then(|e| claim(at, e)) else {
            continue;
        };
        if best.is_none_or(|(_, b)| value > b) {
            best = Some((at, value));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(segment: u64, synced_upto: u64) -> SyncPoint {
        SyncPoint {
            segment,
            synced_upto,
        }
    }

    #[test]
    fn sync_point_round_trips_at_its_fixed_length() {
        let mut out = Vec::new();
        encode_sync_point(point(7, 4096), &mut out);
        assert_eq!(out.len(), SYNC_POINT_FRAME_LEN);
        let Frame::Record { payload, consumed } = read_frame(&out) else {
            panic!("not a record")
        };
        assert_eq!(consumed, SYNC_POINT_FRAME_LEN);
        assert_eq!(decode(payload), Ok(Entry::SyncPoint(point(7, 4096))));
    }

    #[test]
    fn predecessor_round_trips_at_its_fixed_length() {
        let mut out = Vec::new();
        let p = Predecessor {
            segment: 12,
            end: 4 << 20,
        };
        encode_predecessor(p, &mut out);
        assert_eq!(out.len(), PREDECESSOR_FRAME_LEN);
        let Frame::Record { payload, .. } = read_frame(&out) else {
            panic!("not a record")
        };
        assert_eq!(decode(payload), Ok(Entry::Predecessor(p)));
        assert!(decode(&payload[..10]).is_err());
    }

    #[test]
    fn batch_frames_carry_the_kind_byte() {
        let mut out = vec![0xAA];
        let start = begin_batch_frame(&mut out);
        out.extend_from_slice(b"batch bytes");
        finish_batch_frame(&mut out, start);
        let Frame::Record { payload, .. } = read_frame(&out[1..]) else {
            panic!("not a record")
        };
        assert_eq!(decode(payload), Ok(Entry::Batch(b"batch bytes")));
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        assert!(decode(&[]).is_err());
        assert_eq!(decode(&[9, 1, 2]), Err("unknown record kind 9".to_owned()));
        assert!(decode(&[KIND_SYNC_POINT, 1, 2, 3]).is_err());
        let mut long = vec![KIND_SYNC_POINT];
        long.extend_from_slice(&[0; 17]);
        assert!(decode(&long).is_err());
        // A batch may be empty as far as this layer knows; the batch
        // decoder judges its body.
        assert_eq!(decode(&[KIND_BATCH]), Ok(Entry::Batch(&[])));
    }

    #[test]
    fn highest_claim_after_finds_only_genuine_sync_points() {
        let mut data = vec![0x11u8; 100];
        assert_eq!(highest_claim_after(&data, 0, 3), None);
        encode_sync_point(point(3, 40), &mut data); // at 100
        data.extend_from_slice(&[0x22; 13]);
        encode_sync_point(point(3, 90), &mut data); // at 138
        encode_sync_point(point(4, 150), &mut data); // another segment's
        encode_sync_point(point(3, 10_000), &mut data); // beyond its own offset
        assert_eq!(highest_claim_after(&data, 0, 3), Some((138, 90)));
        assert_eq!(highest_claim_after(&data, 138, 3), None);
        assert_eq!(highest_claim_after(&data, 137, 3), Some((138, 90)));
        assert_eq!(highest_claim_after(&data, 0, 4), Some((163, 150)));
        assert_eq!(highest_claim_after(&[], 0, 3), None);
    }

    #[test]
    fn highest_claim_after_stays_cheap_on_large_inputs() {
        // Every offset holds the sync-point length and kind: each is a
        // candidate, yet the scan is linear with a small constant.
        let mut data = Vec::new();
        while data.len() < (4 << 20) {
            data.extend_from_slice(&[0, 0, 0, 0, 17, 0, 0, 0, KIND_SYNC_POINT]);
        }
        assert_eq!(highest_claim_after(&data, 0, 1), None);
    }
}
