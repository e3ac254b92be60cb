//! The write-ahead log: numbered segment files of checksummed records, each
//! record one committed `WriteBatch`. Writing is [`WalWriter`]; recovery is
//! [`replay`]. The byte format and the recovery rules are specified in
//! docs/format-wal.md.

mod entry;
mod reader;
mod sealed;
mod writer;

pub use entry::{
    begin_batch_frame, encode_segment_synced, finish_batch_frame, Predecessor, SegmentSynced,
};

pub(crate) use reader::sync_segment;
// The engine's open path is the user of these; until it is wired in they
// would be reported as unused.
#[allow(unused_imports)]
pub use reader::{replay, DroppedTail, ReplayReport, SegmentRead};
pub(crate) use reader::{replay_deferring_sync, MappedSegment};
pub(crate) use sealed::SealedSegment;
pub use writer::WalWriter;

const SEGMENT_SUFFIX: &str = ".wal";

/// Identifies a WAL segment; the trailing NUL keeps it out of text tools' way.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TOONWAL\0";
/// Bumped on any incompatible change to the segment or record layout.
/// Version 2 added the payload kind byte and sync points (entry.rs).
/// Version 3 adds the predecessor record after the header: the segment
/// before it may not have been synced when it was created (the sync at a
/// memtable seal runs off the commit thread). Version 4 adds the
/// segment-synced record: once that background sync finished, the live
/// segment says so, which lets replay call damage in the older segment
/// corruption instead of a lost unsynced tail. The writer writes version
/// 4, replay reads all four.
pub const SEGMENT_VERSION: u32 = 4;
/// Segments that may follow an unsynced predecessor (predecessor record),
/// but never record that its sync finished.
pub const SEGMENT_VERSION_V3: u32 = 3;
/// Segments whose predecessor was synced whole before they were created;
/// sync points, no predecessor record.
pub const SEGMENT_VERSION_V2: u32 = 2;
/// Segments written before sync points existed: a payload is a bare batch,
/// and replay keeps the stricter rule for damage (reader.rs).
pub const SEGMENT_VERSION_V1: u32 = 1;
/// magic (8) | version u32 LE (4) | CRC-32 of the first 12 bytes u32 LE (4).
pub const SEGMENT_HEADER_LEN: usize = 16;

/// `000042.wal`; numbers wider than six digits are written in full.
pub fn segment_file_name(number: u64) -> String {
    format!("{number:06}{SEGMENT_SUFFIX}")
}

/// The inverse of [`segment_file_name`]. Only the canonical spelling is
/// accepted (`42.wal` or `0000042.wal` are not segments), so a stray file can
/// never be mistaken for one and two names never map to the same number.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = digits.parse().ok()?;
    (segment_file_name(number) == name).then_some(number)
}

fn encode_header() -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    let crc = crc32fast::hash(&header[..12]);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Validates a segment header and returns its format version, or says
/// what is wrong with it.
fn check_header(data: &[u8]) -> std::result::Result<u32, String> {
    let Some(header) = data.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!(
            "file is {} bytes, shorter than the {SEGMENT_HEADER_LEN}-byte header",
            data.len()
        ));
    };
    if header[..8] != SEGMENT_MAGIC {
        return Err("bad magic".to_owned());
    }
    let stored_crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if crc32fast::hash(&header[..12]) != stored_crc {
        return Err("header checksum mismatch".to_owned());
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if !matches!(
        version,
        SEGMENT_VERSION_V1 | SEGMENT_VERSION_V2 | SEGMENT_VERSION_V3 | SEGMENT_VERSION
    ) {
        return Err(format!("unsupported format version {version}"));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        for n in [0u64, 1, 42, 999_999, 1_000_000, u64::MAX] {
            assert_eq!(parse_segment_name(&segment_file_name(n)), Some(n));
        }
        assert_eq!(segment_file_name(7), "000007.wal");
        assert_eq!(segment_file_name(1_234_567), "1234567.wal");
        for junk in [
            "7.wal",
            "0000007.wal",
            "000007.sst",
            "000007.wal.tmp",
            ".wal",
            "+00007.wal",
            "00000a.wal",
            "99999999999999999999999.wal",
        ] {
            assert_eq!(parse_segment_name(junk), None, "{junk}");
        }
    }

    #[test]
    fn header_checks() {
        let header = encode_header();
        assert_eq!(check_header(&header), Ok(SEGMENT_VERSION));
        assert!(check_header(&header[..15]).is_err());
        let mut bad = header;
        bad[0] ^= 1;
        assert_eq!(check_header(&bad), Err("bad magic".to_owned()));
        let mut bad = header;
        bad[13] ^= 1;
        assert_eq!(
            check_header(&bad),
            Err("header checksum mismatch".to_owned())
        );
        let with_version = |v: u32| {
            let mut h = header;
            h[8..12].copy_from_slice(&v.to_le_bytes());
            let crc = crc32fast::hash(&h[..12]);
            h[12..].copy_from_slice(&crc.to_le_bytes());
            h
        };
        assert_eq!(check_header(&with_version(1)), Ok(SEGMENT_VERSION_V1));
        assert_eq!(check_header(&with_version(2)), Ok(SEGMENT_VERSION_V2));
        assert_eq!(check_header(&with_version(3)), Ok(SEGMENT_VERSION_V3));
        assert_eq!(check_header(&with_version(4)), Ok(SEGMENT_VERSION));
        for v in [0, 5] {
            assert_eq!(
                check_header(&with_version(v)),
                Err(format!("unsupported format version {v}"))
            );
        }
    }
}
