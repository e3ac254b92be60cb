//! Version 3: a segment sealed by the engine is synced in the background,
//! so the next segment may exist before it is durable. The next segment's
//! predecessor record says where it ended; replay drops a lost tail of it
//! (with every later segment) unless a later sync proves it was durable.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::ErrorKind;
use crate::io::OsFileSystem;
use crate::wal::entry::{self, PREDECESSOR_FRAME_LEN};

pub(super) const FS: &OsFileSystem = &OsFileSystem;

pub(super) fn payload(segment: u64, i: usize) -> Vec<u8> {
    format!("batch {segment}/{i} {}", "x".repeat(40 + i)).into_bytes()
}

pub(super) fn path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_file_name(number))
}

/// Appends one group (predecessor record if first, sync point, one batch)
/// and returns the offset of the batch frame.
pub(super) fn append_group(w: &mut WalWriter, p: &[u8]) -> u64 {
    let mut group = Vec::new();
    w.begin_group(&mut group);
    let at = w.len() + group.len() as u64;
    let start = entry::begin_batch_frame(&mut group);
    group.extend_from_slice(p);
    entry::finish_batch_frame(&mut group, start);
    w.append(&group).unwrap();
    at
}

/// Writes segments as the engine does: the first after a synced history
/// (as an open creates it), each later one created at a seal, before the
/// one it follows was synced. Returns every payload and each segment's
/// batch offsets. Nothing is synced but the headers.
pub(super) fn write_chain(dir: &Path, segments: &[(u64, usize)]) -> (Vec<Vec<u8>>, Vec<Vec<u64>>) {
    let mut all = Vec::new();
    let mut offsets = Vec::new();
    let mut prev: Option<WalWriter> = None;
    for &(number, count) in segments {
        let mut w = match prev.take() {
            None => WalWriter::create_unlisted(
                FS,
                dir,
                number,
                Some(Predecessor { segment: 0, end: 0 }),
            )
            .unwrap(),
            Some(old) => {
                let previous = Predecessor {
                    segment: old.number(),
                    end: old.len(),
                };
                WalWriter::create_after(FS, dir, number, previous).unwrap()
            }
        };
        let mut starts = Vec::new();
        for i in 0..count {
            let p = payload(number, i);
            starts.push(append_group(&mut w, &p));
            all.push(p);
        }
        offsets.push(starts);
        prev = Some(w);
    }
    (all, offsets)
}

pub(super) fn collect(dir: &Path, numbers: &[u64]) -> Result<(Vec<Vec<u8>>, ReplayReport)> {
    let mut got = Vec::new();
    let report = replay(FS, dir, numbers, SegmentRead::Map, |p| {
        got.push(p.to_vec());
        Ok(())
    })?;
    Ok((got, report))
}

pub(super) fn len_of(dir: &Path, number: u64) -> u64 {
    std::fs::metadata(path(dir, number)).unwrap().len()
}

#[test]
fn the_first_group_of_a_segment_carries_its_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, offsets) = write_chain(dir.path(), &[(3, 2), (5, 1)]);
    let first_batch = (SEGMENT_HEADER_LEN + PREDECESSOR_FRAME_LEN + SYNC_POINT_LEN) as u64;
    assert_eq!(offsets[0][0], first_batch);
    assert_eq!(offsets[1][0], first_batch);
    let bytes = std::fs::read(path(dir.path(), 5)).unwrap();
    let Frame::Record { payload, .. } = read_frame(&bytes[SEGMENT_HEADER_LEN..]) else {
        panic!("no record after the header")
    };
    let end_of_3 = len_of(dir.path(), 3);
    assert_eq!(
        entry::decode(payload),
        Ok(Entry::Predecessor(Predecessor {
            segment: 3,
            end: end_of_3
        }))
    );
    // A clean chain replays whole.
    let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(report.dropped_tail, None);
}

pub(super) const SYNC_POINT_LEN: usize = crate::wal::entry::SYNC_POINT_FRAME_LEN;

#[test]
fn a_torn_end_of_an_unsynced_older_segment_drops_it_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (all, offsets) = write_chain(dir.path(), &[(3, 5), (5, 4), (7, 2)]);
    let cut = offsets[0][4] + 3;
    FS.truncate(&path(dir.path(), 3), cut).unwrap();
    let (got, report) = collect(dir.path(), &[3, 5, 7]).unwrap();
    assert_eq!(got, all[..4].to_vec(), "a prefix: segment 3's first four");
    let tail = report.dropped_tail.unwrap();
    assert_eq!((tail.segment, tail.offset), (3, offsets[0][4]));
    assert!(
        tail.reason.contains("2 newer segment(s)"),
        "{}",
        tail.reason
    );
    assert_eq!(report.segments, 3);
    // The later segments are empty now (not gone: a checkpoint may name
    // one), and segment 3 ends at the cut: a second replay is clean.
    for n in [5, 7] {
        assert_eq!(len_of(dir.path(), n), SEGMENT_HEADER_LEN as u64);
    }
    let (again, report) = collect(dir.path(), &[3, 5, 7]).unwrap();
    assert_eq!(again, all[..4].to_vec());
    assert_eq!(report.dropped_tail, None);
}

#[test]
fn a_lost_end_of_an_unsynced_older_segment_is_found_by_its_recorded_end() {
    // A power cut lost the last page of segment 3: it reads back as zeros
    // (or the file is shorter), which alone looks like a clean end; the
    // next segment's predecessor record says more was there.
    for shorten in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (all, offsets) = write_chain(dir.path(), &[(3, 5), (5, 4)]);
        let from = offsets[0][3] - SYNC_POINT_LEN as u64; // segment 3's 4th group
        let len = len_of(dir.path(), 3);
        if shorten {
            FS.truncate(&path(dir.path(), 3), from).unwrap();
        } else {
            let mut bytes = std::fs::read(path(dir.path(), 3)).unwrap();
            bytes[from as usize..].fill(0);
            std::fs::write(path(dir.path(), 3), &bytes).unwrap();
        }
        let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
        assert_eq!(got, all[..3].to_vec(), "shorten {shorten}");
        let tail = report.dropped_tail.unwrap();
        assert_eq!((tail.segment, tail.offset), (3, from));
        assert!(tail.reason.contains("lost write"), "{}", tail.reason);
        assert!(tail.reason.contains(&len.to_string()), "{}", tail.reason);
        assert_eq!(len_of(dir.path(), 5), SEGMENT_HEADER_LEN as u64);
    }
}

#[test]
fn a_completed_sync_of_a_later_segment_makes_older_damage_corruption() {
    // The writer syncs a newer segment only after every older one was
    // synced, so a sync point in segment 5 claiming records means segment
    // 3 was durable: damage in it is a media error, never a lost write.
    let dir = tempfile::tempdir().unwrap();
    let (_, offsets) = write_chain(dir.path(), &[(3, 3)]);
    let end_of_3 = len_of(dir.path(), 3);
    let mut w = WalWriter::create_after(
        FS,
        dir.path(),
        5,
        Predecessor {
            segment: 3,
            end: end_of_3,
        },
    )
    .unwrap();
    append_group(&mut w, b"first");
    w.sync().unwrap();
    append_group(&mut w, b"second"); // its sync point claims the first
    FS.truncate(&path(dir.path(), 3), offsets[0][2] + 3)
        .unwrap();
    let err = collect(dir.path(), &[3, 5]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(
        err.message().contains("segments are synced in order"),
        "{err}"
    );
    assert_eq!(
        len_of(dir.path(), 3),
        offsets[0][2] + 3,
        "must not truncate"
    );
}

#[test]
fn a_segment_whose_successor_says_it_was_synced_keeps_the_strict_rule() {
    // An open creates its segment after replay synced every older one:
    // predecessor "none", so damage before it is corruption, as in v2.
    let dir = tempfile::tempdir().unwrap();
    let (_, offsets) = write_chain(dir.path(), &[(3, 3)]);
    let mut w =
        WalWriter::create_unlisted(FS, dir.path(), 5, Some(Predecessor { segment: 0, end: 0 }))
            .unwrap();
    append_group(&mut w, b"after an open");
    FS.truncate(&path(dir.path(), 3), offsets[0][2] + 3)
        .unwrap();
    let err = collect(dir.path(), &[3, 5]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("not the last segment"), "{err}");
}

#[test]
fn records_past_the_recorded_end_or_a_wrong_predecessor_are_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = write_chain(dir.path(), &[(3, 2)]);
    let end_of_3 = len_of(dir.path(), 3);
    let mut w5 = WalWriter::create_after(
        FS,
        dir.path(),
        5,
        Predecessor {
            segment: 3,
            end: end_of_3 - 1,
        },
    )
    .unwrap();
    append_group(&mut w5, b"x");
    let err = collect(dir.path(), &[3, 5]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("says this segment ended"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    write_chain(dir.path(), &[(3, 2)]);
    let mut w5 = WalWriter::create_after(
        FS,
        dir.path(),
        5,
        Predecessor {
            segment: 2,
            end: 99,
        },
    )
    .unwrap();
    append_group(&mut w5, b"x");
    let err = collect(dir.path(), &[3, 5]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("names segment 2"), "{err}");
}

#[test]
fn a_predecessor_record_anywhere_but_first_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = write_chain(dir.path(), &[(3, 2)]);
    let mut bytes = std::fs::read(path(dir.path(), 3)).unwrap();
    entry::encode_predecessor(Predecessor { segment: 1, end: 1 }, &mut bytes);
    std::fs::write(path(dir.path(), 3), &bytes).unwrap();
    let err = collect(dir.path(), &[3]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(
        err.message().contains("predecessor record at offset"),
        "{err}"
    );
}

#[test]
fn an_empty_successor_leaves_the_older_segment_droppable() {
    // A seal created segment 5 and the power went before its first group
    // reached the disk: nothing says where 3 ended, and nothing of 5 can
    // follow a gap in 3.
    let dir = tempfile::tempdir().unwrap();
    let (all, offsets) = write_chain(dir.path(), &[(3, 4), (5, 0)]);
    FS.truncate(&path(dir.path(), 3), offsets[0][3] + 3)
        .unwrap();
    let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
    assert_eq!(got, all[..3].to_vec());
    assert_eq!(report.dropped_tail.unwrap().offset, offsets[0][3]);
}

/// Rewrites segment `number`'s header as format `version` (what an older
/// build wrote: no predecessor record, synced whole before the next).
pub(super) fn set_version(dir: &Path, number: u64, version: u32) {
    let p = path(dir, number);
    let mut data = std::fs::read(&p).unwrap();
    data[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&data[..12]);
    data[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&p, data).unwrap();
}

/// Writes `count` groups into a new segment without a predecessor record.
fn write_plain(dir: &Path, number: u64, count: usize) -> Vec<Vec<u8>> {
    let mut w = WalWriter::create_unlisted(FS, dir, number, None).unwrap();
    let mut all = Vec::new();
    for i in 0..count {
        let p = payload(number, i);
        append_group(&mut w, &p);
        all.push(p);
    }
    w.sync().unwrap();
    all
}

#[test]
fn format_2_segments_then_format_3_after_an_upgrade() {
    // An older build left 3 and 5 (format 2); the upgraded build's open
    // created 7 (format 3, "every earlier segment durable") and sealed it
    // into 9 before 7 was synced.
    let dir = tempfile::tempdir().unwrap();
    let mut all = write_plain(dir.path(), 3, 3);
    all.extend(write_plain(dir.path(), 5, 2));
    set_version(dir.path(), 3, crate::wal::SEGMENT_VERSION_V2);
    set_version(dir.path(), 5, crate::wal::SEGMENT_VERSION_V2);
    let (chain, offsets) = write_chain(dir.path(), &[(7, 3), (9, 2)]);
    all.extend(chain.clone());
    let (got, report) = collect(dir.path(), &[3, 5, 7, 9]).unwrap();
    assert_eq!(got, all);
    assert_eq!(report.dropped_tail, None);

    // 7 lost its end (never synced): 7 is cut there and 9 is dropped; the
    // format-2 segments are untouched.
    FS.truncate(&path(dir.path(), 7), offsets[0][2] + 5)
        .unwrap();
    let (got, report) = collect(dir.path(), &[3, 5, 7, 9]).unwrap();
    assert_eq!(got, all[..5 + 2].to_vec());
    let tail = report.dropped_tail.unwrap();
    assert_eq!((tail.segment, tail.offset), (7, offsets[0][2]));

    // Damage in a format-2 segment that is not the last stays corruption:
    // the older build synced it whole before creating the next one.
    let p = path(dir.path(), 5);
    let mut data = std::fs::read(&p).unwrap();
    let at = data.len() - 3;
    data[at] ^= 0xff;
    std::fs::write(&p, data).unwrap();
    let err = collect(dir.path(), &[3, 5, 7, 9]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
}
