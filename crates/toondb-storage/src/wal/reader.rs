//! Recovery: replaying segments and deciding which damage is a torn tail
//! (a crash mid-append, safe to drop) and which is corruption (must fail).

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::record::{read_frame, Frame, FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD};

use super::{check_header, segment_file_name, WalWriter, SEGMENT_HEADER_LEN};

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Segments replayed.
    pub segments: usize,
    /// Records passed to `apply`.
    pub records: u64,
    /// Framed size (8-byte frame header + payload) of those records; segment
    /// headers and zero padding are not counted.
    pub bytes: u64,
    /// The torn end of the last segment, if there was one; it has been cut off
    /// (or, for a torn segment header, the header rewritten).
    pub dropped_tail: Option<DroppedTail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedTail {
    pub segment: u64,
    /// File offset (counting the segment header) where the dropped bytes began.
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// Replays segments `numbers` (ascending) from `dir`, calling
/// `apply(payload)` for every valid record in order. If `apply` returns Err,
/// stop and return that error.
pub fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    numbers: &[u64],
    mut apply: impl FnMut(&[u8]) -> Result<()>,
) -> Result<ReplayReport> {
    if numbers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::invalid_argument(format!(
            "WAL segments to replay must be strictly ascending, got {numbers:?}"
        )));
    }
    let mut report = ReplayReport::default();
    for (i, &number) in numbers.iter().enumerate() {
        let is_last = i + 1 == numbers.len();
        replay_segment(fs, dir, number, is_last, &mut apply, &mut report)?;
        sync_segment(fs, dir, number)?;
        report.segments += 1;
    }
    Ok(report)
}

/// Makes a replayed segment durable. A process that was killed may have
/// left `sync: false` records in the OS page cache only; what replay read
/// is about to be served and built upon (a newer segment follows it), so a
/// power cut must not tear it afterwards: a torn segment that is no longer
/// the last is corruption, and losing it under later durable commits would
/// leave a hole in commit order (tests/model_powerloss.rs,
/// `kill_then_power_cut_tears_a_replayed_segment`). One fdatasync per
/// replayed segment per open, before any newer segment exists.
fn sync_segment(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<()> {
    let path = dir.join(segment_file_name(number));
    fs.open_append(&path)
        .and_then(|mut file| file.sync_data())
        .map_err(|e| e.context(format_args!("syncing replayed WAL segment {number}")))
}

fn replay_segment(
    fs: &dyn FileSystem,
    dir: &Path,
    number: u64,
    is_last: bool,
    apply: &mut impl FnMut(&[u8]) -> Result<()>,
    report: &mut ReplayReport,
) -> Result<()> {
    let path = dir.join(segment_file_name(number));
    if !fs.exists(&path) {
        return Err(Error::corruption(format!(
            "WAL segment {number} ({}) is missing",
            path.display()
        )));
    }
    let data = fs.read(&path)?;

    if is_last && is_torn_creation(&data) {
        // The writer syncs the header before appending anything, so a short
        // last segment is a crash during its creation and holds no records.
        // So is a last segment whose header is damaged but which holds
        // nothing after it: a power cut can persist the file's size before
        // its data, leaving the header's sector garbage or zeros.
        // Rewriting the header (rather than leaving the stub, or truncating it
        // to zero bytes) matters: the engine opens a newer segment after
        // recovery, and a headerless file that is no longer last would be
        // corruption on the next replay.
        WalWriter::create(fs, dir, number)?;
        report.dropped_tail = Some(DroppedTail {
            segment: number,
            offset: 0,
            dropped_bytes: data.len() as u64,
            reason: "torn segment header".to_owned(),
        });
        return Ok(());
    }
    check_header(&data).map_err(|why| {
        Error::corruption(format!(
            "WAL segment {number}: bad header at offset 0: {why}"
        ))
    })?;

    let mut pos = SEGMENT_HEADER_LEN;
    loop {
        let reason = match read_frame(&data[pos..]) {
            Frame::Record { payload, consumed } => {
                apply(payload)?;
                report.records += 1;
                report.bytes += consumed as u64;
                pos += consumed;
                continue;
            }
            Frame::End => return Ok(()),
            Frame::Truncated => "truncated record",
            Frame::Bad(why) => why,
        };
        let later = find_record_after(&data, pos);
        if is_last && later == Later::Nothing {
            // Nothing valid follows, so these bytes are the unfinished last
            // append. Cut them off so segments written after recovery do not
            // leave this damage in the middle of the log.
            fs.truncate(&path, pos as u64)?;
            report.dropped_tail = Some(DroppedTail {
                segment: number,
                offset: pos as u64,
                dropped_bytes: (data.len() - pos) as u64,
                reason: reason.to_owned(),
            });
            return Ok(());
        }
        let why_fatal = match later {
            Later::RecordAt(at) => format!("a valid record follows at offset {at}"),
            Later::Unknown => {
                "too much data follows it to rule out a valid record after it".to_owned()
            }
            Later::Nothing => "it is not the last segment".to_owned(),
        };
        return Err(Error::corruption(format!(
            "WAL segment {number}: {reason} at offset {pos} ({why_fatal})"
        )));
    }
}

/// Whether a segment's bytes are what a crash during its creation leaves:
/// shorter than a header, or an invalid header followed only by zeros (so
/// no record was ever appended: records follow a durable, valid header).
fn is_torn_creation(data: &[u8]) -> bool {
    match data.get(SEGMENT_HEADER_LEN..) {
        None => true,
        Some(rest) => check_header(data).is_err() && rest.iter().all(|&b| b == 0),
    }
}

/// The first offset after `bad` at which a valid record starts, if any.
///
/// Probes every byte offset, so that damage anywhere (a flipped length, a
/// zeroed block) cannot hide a committed record behind it. Only runs on the
/// error path. The length pre-check skips offsets that cannot hold a record
/// without calling `read_frame`, whose all-zero scan would make long zero runs
/// quadratic.
fn find_record_after(data: &[u8], bad: usize) -> Later {
    let Some(start) = bad.checked_add(1) else {
        return Later::Nothing;
    };
    let Some(last_start) = data.len().checked_sub(FRAME_HEADER_LEN + 1) else {
        return Later::Nothing;
    };
    let mut budget = SCAN_CHECKSUM_BUDGET;
    for at in start..=last_start {
        let len_bytes = [data[at + 4], data[at + 5], data[at + 6], data[at + 7]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let fits = len <= data.len() - at - FRAME_HEADER_LEN;
        if len == 0 || len > MAX_FRAME_PAYLOAD || !fits {
            continue;
        }
        // Random bytes after damage early in a large segment look like
        // plausible lengths at many offsets; checksumming each could take
        // hours. Past the budget the answer is "cannot tell", which is
        // treated as corruption, never as a droppable tail.
        budget = match budget.checked_sub(len) {
            Some(left) => left,
            None => return Later::Unknown,
        };
        if matches!(read_frame(&data[at..]), Frame::Record { .. }) {
            return Later::RecordAt(at);
        }
    }
    Later::Nothing
}

/// What follows a bad record in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Later {
    Nothing,
    RecordAt(usize),
    /// The scan gave up (see `SCAN_CHECKSUM_BUDGET`).
    Unknown,
}

/// Bytes the search for a record after damage may checksum in total.
const SCAN_CHECKSUM_BUDGET: usize = 4 << 30;

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::error::ErrorKind;
    use crate::io::OsFileSystem;
    use crate::record::encode_frame;

    const FS: &OsFileSystem = &OsFileSystem;

    fn payload(segment: u64, i: usize) -> Vec<u8> {
        // Varying lengths, including ones long enough to hold small
        // little-endian integers that look like plausible frame lengths.
        let mut p = format!("seg{segment}-rec{i}-").into_bytes();
        p.extend((0..(i * 7) % 300).map(|j| (j % 251) as u8));
        p
    }

    /// Writes segments with the given record counts; returns all payloads in
    /// order and, per segment, the file offset where each record starts.
    fn write_log(dir: &Path, segments: &[(u64, usize)]) -> (Vec<Vec<u8>>, Vec<Vec<u64>>) {
        let mut all = Vec::new();
        let mut offsets = Vec::new();
        for &(number, count) in segments {
            let mut w = WalWriter::create(FS, dir, number).unwrap();
            let mut starts = Vec::new();
            for i in 0..count {
                let p = payload(number, i);
                let mut framed = Vec::new();
                encode_frame(&p, &mut framed);
                starts.push(w.len());
                w.append(&framed).unwrap();
                all.push(p);
            }
            w.sync().unwrap();
            offsets.push(starts);
        }
        (all, offsets)
    }

    fn collect(dir: &Path, numbers: &[u64]) -> Result<(Vec<Vec<u8>>, ReplayReport)> {
        let mut got = Vec::new();
        let report = replay(FS, dir, numbers, |p| {
            got.push(p.to_vec());
            Ok(())
        })?;
        Ok((got, report))
    }

    fn path(dir: &Path, number: u64) -> PathBuf {
        dir.join(segment_file_name(number))
    }

    fn flip_byte(dir: &Path, number: u64, offset: u64) {
        let p = path(dir, number);
        let mut data = std::fs::read(&p).unwrap();
        data[offset as usize] ^= 0x10;
        std::fs::write(&p, data).unwrap();
    }

    fn file_len(dir: &Path, number: u64) -> u64 {
        std::fs::metadata(path(dir, number)).unwrap().len()
    }

    #[test]
    fn empty_segment_list_gives_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let (got, report) = collect(dir.path(), &[]).unwrap();
        assert!(got.is_empty());
        assert_eq!(report, ReplayReport::default());
    }

    #[test]
    fn round_trip_many_records_over_several_segments() {
        let dir = tempfile::tempdir().unwrap();
        let layout = [(3, 200), (4, 0), (7, 1), (12, 500)];
        let (written, _) = write_log(dir.path(), &layout);
        let (got, report) = collect(dir.path(), &[3, 4, 7, 12]).unwrap();
        assert_eq!(got, written);
        assert_eq!(report.segments, 4);
        assert_eq!(report.records, 701);
        let framed: u64 = written
            .iter()
            .map(|p| (p.len() + FRAME_HEADER_LEN) as u64)
            .sum();
        assert_eq!(report.bytes, framed);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn segments_must_be_strictly_ascending() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 1), (2, 1)]);
        for bad in [&[2u64, 1][..], &[1, 1]] {
            let err = collect(dir.path(), bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn truncated_last_record_at_every_cut_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (written, offsets) = write_log(dir.path(), &[(1, 5), (2, 40)]);
        let full = file_len(dir.path(), 2);
        let last_start = *offsets[1].last().unwrap();
        let pristine = std::fs::read(path(dir.path(), 2)).unwrap();
        for cut in last_start + 1..full {
            std::fs::write(path(dir.path(), 2), &pristine[..cut as usize]).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written[..written.len() - 1], "cut {cut}");
            assert_eq!(
                report.dropped_tail,
                Some(DroppedTail {
                    segment: 2,
                    offset: last_start,
                    dropped_bytes: cut - last_start,
                    reason: "truncated record".to_owned(),
                }),
                "cut {cut}"
            );
            assert_eq!(file_len(dir.path(), 2), last_start, "cut {cut}");

            let (again, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(again, got, "cut {cut}");
            assert_eq!(report.dropped_tail, None, "cut {cut}");
        }
    }

    #[test]
    fn bit_flip_in_last_record_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (written, offsets) = write_log(dir.path(), &[(5, 10)]);
        let last_start = offsets[0][9];
        let full = file_len(dir.path(), 5);
        // A payload byte: the checksum catches it.
        flip_byte(dir.path(), 5, full - 1);
        let (got, report) = collect(dir.path(), &[5]).unwrap();
        assert_eq!(got, written[..9]);
        let tail = report.dropped_tail.unwrap();
        assert_eq!((tail.segment, tail.offset), (5, last_start));
        assert_eq!(tail.dropped_bytes, full - last_start);
        assert_eq!(tail.reason, "checksum mismatch");
        assert_eq!(file_len(dir.path(), 5), last_start);
        assert_eq!(collect(dir.path(), &[5]).unwrap().1.dropped_tail, None);
    }

    #[test]
    fn bit_flip_in_middle_record_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log(dir.path(), &[(1, 3), (2, 10)]);
        let victim = offsets[1][4];
        let before = file_len(dir.path(), 2);
        // Payload, checksum and length-field damage must all be caught.
        for at in [victim + FRAME_HEADER_LEN as u64, victim, victim + 6] {
            flip_byte(dir.path(), 2, at);
            let mut applied = 0;
            let err = replay(FS, dir.path(), &[1, 2], |_| {
                applied += 1;
                Ok(())
            })
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(err.message().contains("segment 2"), "{err}");
            assert!(err.message().contains(&format!("offset {victim}")), "{err}");
            assert_eq!(applied, 3 + 4);
            assert_eq!(file_len(dir.path(), 2), before, "must not truncate");
            flip_byte(dir.path(), 2, at);
        }
    }

    #[test]
    fn valid_record_after_zeroed_gap_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log(dir.path(), &[(1, 6)]);
        let p = path(dir.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        // A lost block: records 2..4 read back as zeros, record 5 survives.
        let (from, to) = (offsets[0][2] as usize, offsets[0][5] as usize);
        data[from..to].fill(0);
        std::fs::write(&p, data).unwrap();
        let err = collect(dir.path(), &[1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains(&format!("offset {to}")), "{err}");
    }

    #[test]
    fn damage_in_non_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets) = write_log(dir.path(), &[(1, 4), (2, 4), (3, 4)]);
        let pristine = std::fs::read(path(dir.path(), 2)).unwrap();

        // Torn end of segment 2: fine if it were last, fatal when it is not.
        let cut = offsets[1][3] as usize + 3;
        std::fs::write(path(dir.path(), 2), &pristine[..cut]).unwrap();
        let err = collect(dir.path(), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("segment 2"), "{err}");
        assert_eq!(file_len(dir.path(), 2), cut as u64, "must not truncate");

        std::fs::write(path(dir.path(), 2), &pristine).unwrap();
        flip_byte(dir.path(), 2, offsets[1][3] + 9);
        let err = collect(dir.path(), &[1, 2, 3]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn zero_filled_tail_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log(dir.path(), &[(1, 3), (2, 3)]);
        for number in [1, 2] {
            let p = path(dir.path(), number);
            let mut data = std::fs::read(&p).unwrap();
            data.resize(data.len() + 4096, 0);
            std::fs::write(&p, data).unwrap();
        }
        let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
        assert_eq!(got, written);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn header_only_segment_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 0)]);
        let (got, report) = collect(dir.path(), &[1]).unwrap();
        assert!(got.is_empty());
        assert_eq!(report.segments, 1);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn bad_header_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 2), (2, 2)]);
        // Magic, version (checksum then fails too) and checksum bytes.
        for (number, at) in [(1, 0), (2, 0), (2, 9), (2, 14)] {
            flip_byte(dir.path(), number, at);
            let err = collect(dir.path(), &[1, 2]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(
                err.message().contains(&format!("segment {number}")),
                "{err}"
            );
            assert!(err.message().contains("header"), "{err}");
            flip_byte(dir.path(), number, at);
        }
        assert!(collect(dir.path(), &[1, 2]).is_ok());
    }

    /// A power cut can persist a new segment's size before its header:
    /// garbage or zeros where the header should be, nothing after it.
    #[test]
    fn damaged_header_with_nothing_after_in_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log(dir.path(), &[(1, 3), (2, 0)]);
        let garbage: Vec<u8> = (0..SEGMENT_HEADER_LEN as u8)
            .map(|b| b.wrapping_mul(37))
            .collect();
        for (bytes, zeros_after) in [(garbage.clone(), 0), (vec![0; 16], 4080), (garbage, 100)] {
            let mut file = bytes.clone();
            file.resize(file.len() + zeros_after, 0);
            std::fs::write(path(dir.path(), 2), &file).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written);
            let tail = report.dropped_tail.unwrap();
            assert_eq!((tail.segment, tail.offset), (2, 0));
            assert_eq!(tail.reason, "torn segment header");
            assert_eq!(file_len(dir.path(), 2), SEGMENT_HEADER_LEN as u64);
        }
        // Not last, or with a byte after the header: corruption.
        let mut file = vec![0xEEu8; SEGMENT_HEADER_LEN];
        std::fs::write(path(dir.path(), 1), &file).unwrap();
        assert!(collect(dir.path(), &[1, 2]).is_err());
        write_log(dir.path(), &[(1, 3), (2, 0)]);
        file.push(1);
        std::fs::write(path(dir.path(), 2), &file).unwrap();
        assert!(collect(dir.path(), &[1, 2]).is_err());
    }

    #[test]
    fn short_header_in_non_last_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 0), (2, 2)]);
        std::fs::write(path(dir.path(), 1), b"TOONWAL").unwrap();
        let err = collect(dir.path(), &[1, 2]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn torn_header_in_last_segment_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let (written, _) = write_log(dir.path(), &[(1, 3), (2, 0)]);
        let header = std::fs::read(path(dir.path(), 2)).unwrap();
        for cut in 0..SEGMENT_HEADER_LEN {
            std::fs::write(path(dir.path(), 2), &header[..cut]).unwrap();
            let (got, report) = collect(dir.path(), &[1, 2]).unwrap();
            assert_eq!(got, written);
            let tail = report.dropped_tail.unwrap();
            assert_eq!((tail.segment, tail.offset), (2, 0));
            assert_eq!(tail.dropped_bytes, cut as u64);
            assert_eq!(tail.reason, "torn segment header");
            assert_eq!(std::fs::read(path(dir.path(), 2)).unwrap(), header);
            // No longer last once the engine opens a new segment: still clean.
            write_log(dir.path(), &[(3, 1)]);
            let (_, report) = collect(dir.path(), &[1, 2, 3]).unwrap();
            assert_eq!(report.dropped_tail, None);
        }
    }

    #[test]
    fn missing_segment_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 2), (3, 2)]);
        for numbers in [&[1u64, 2, 3][..], &[1, 3, 4]] {
            let err = collect(dir.path(), numbers).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
            assert!(err.message().contains("missing"), "{err}");
        }
    }

    #[test]
    fn apply_error_stops_replay() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[(1, 10)]);
        let mut calls = 0;
        let err = replay(FS, dir.path(), &[1], |_| {
            calls += 1;
            if calls == 4 {
                return Err(Error::internal("memtable full"));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(calls, 4);
        assert_eq!(err.kind(), ErrorKind::Internal);
        assert_eq!(err.message(), "memtable full");
    }

    #[test]
    fn find_record_after_probes_every_offset() {
        let mut data = vec![0xEEu8; 37];
        assert_eq!(find_record_after(&data, 0), Later::Nothing);
        encode_frame(b"x", &mut data);
        assert_eq!(find_record_after(&data, 0), Later::RecordAt(37));
        assert_eq!(find_record_after(&data, 37), Later::Nothing);
        assert_eq!(find_record_after(&[], 0), Later::Nothing);
        // Long zero runs stay cheap (no quadratic all-zero scans).
        let zeros = vec![0u8; 8 << 20];
        assert_eq!(find_record_after(&zeros, 0), Later::Nothing);
    }

    #[test]
    fn find_record_after_gives_up_on_huge_plausible_garbage() {
        // Every offset claims a 1 MiB record that fits: checksumming them
        // all would cost terabytes; the scan must stop and say "unknown".
        let mut data = Vec::new();
        while data.len() < (64 << 20) {
            data.extend_from_slice(&[0x55, 0x55, 0x55, 0x55, 0x00, 0x00, 0x10, 0x00]);
        }
        assert_eq!(find_record_after(&data, 0), Later::Unknown);
    }
}
