//! Version 4: once the background sync of a sealed segment finished, a
//! later segment records it (a segment-synced record). Damage at or
//! before the recorded end is then corruption (those bytes were durable),
//! never a lost unsynced tail that takes the later segments' acknowledged
//! writes with it; damage past it, or with no such record, keeps the
//! version-3 rule (docs/format-wal.md, *Replay*).

use super::tests_v3::{
    append_group, collect, len_of, path, payload, set_version, write_chain, FS, SYNC_POINT_LEN,
};
use super::*;
use crate::error::ErrorKind;
use crate::wal::entry::{self, SegmentSynced, SEGMENT_SYNCED_FRAME_LEN};

/// Appends a group of its own holding a segment-synced record (the engine
/// adds them to whatever group it writes next; their place in the group
/// does not matter to replay).
fn append_synced(w: &mut WalWriter, segment: u64, end: u64) {
    let mut group = Vec::new();
    w.begin_group(&mut group);
    entry::encode_segment_synced(SegmentSynced { segment, end }, &mut group);
    w.append(&group).unwrap();
}

/// Segment 3 with `count` groups, then segment 5 created at a seal after
/// it, holding one batch. Returns every payload, segment 3's batch
/// offsets and 5's writer.
fn sealed_pair(dir: &Path, count: usize) -> (Vec<Vec<u8>>, Vec<u64>, WalWriter) {
    let (mut all, offsets) = write_chain(dir, &[(3, count)]);
    let previous = Predecessor {
        segment: 3,
        end: len_of(dir, 3),
    };
    let mut w5 = WalWriter::create_after(FS, dir, 5, previous).unwrap();
    let p = payload(5, 0);
    append_group(&mut w5, &p);
    all.push(p);
    (all, offsets[0].clone(), w5)
}

/// Flips one bit of segment `number`'s byte at `at`.
fn flip(dir: &Path, number: u64, at: u64) {
    let mut bytes = std::fs::read(path(dir, number)).unwrap();
    bytes[at as usize] ^= 0x04;
    std::fs::write(path(dir, number), bytes).unwrap();
}

#[test]
fn damage_a_recorded_sync_covers_is_corruption_not_a_lost_tail() {
    for recorded in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (all, offsets, mut w5) = sealed_pair(dir.path(), 4);
        let end_of_3 = len_of(dir.path(), 3);
        if recorded {
            append_synced(&mut w5, 3, end_of_3);
        }
        // Bit rot in the last record: nothing valid follows it, the shape
        // of an unfinished last append.
        flip(dir.path(), 3, end_of_3 - 2);
        let len_of_5 = len_of(dir.path(), 5);
        let last = offsets[3];
        if !recorded {
            // Without the record the version-3 rule applies: a lost tail,
            // dropped with every newer segment.
            let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
            assert_eq!(got, all[..3].to_vec());
            let tail = report.dropped_tail.unwrap();
            assert_eq!((tail.segment, tail.offset), (3, last));
            assert!(tail.reason.contains("newer segment(s)"), "{}", tail.reason);
            continue;
        }
        let err = collect(dir.path(), &[3, 5]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        let msg = err.message();
        assert!(
            msg.contains(&format!(
                "WAL segment 3: checksum mismatch at offset {last}"
            )),
            "{msg}"
        );
        assert!(msg.contains("segment 5 records at offset"), "{msg}");
        assert!(msg.contains(&format!("through offset {end_of_3}")), "{msg}");
        // Nothing was cut or emptied.
        assert_eq!(len_of(dir.path(), 3), end_of_3);
        assert_eq!(len_of(dir.path(), 5), len_of_5);
    }
}

#[test]
fn a_lost_end_a_recorded_sync_covers_is_corruption() {
    // The last group of segment 3 reads back as zeros, or the file is
    // shorter: alone, a clean end before the end 5 recorded (a lost
    // write); with the sync recorded, damage to durable bytes.
    for shorten in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (_, offsets, mut w5) = sealed_pair(dir.path(), 4);
        let end_of_3 = len_of(dir.path(), 3);
        append_synced(&mut w5, 3, end_of_3);
        let from = offsets[3] - SYNC_POINT_LEN as u64;
        if shorten {
            FS.truncate(&path(dir.path(), 3), from).unwrap();
        } else {
            let mut bytes = std::fs::read(path(dir.path(), 3)).unwrap();
            bytes[from as usize..].fill(0);
            std::fs::write(path(dir.path(), 3), &bytes).unwrap();
        }
        let err = collect(dir.path(), &[3, 5]).unwrap_err();
        assert_eq!(
            err.kind(),
            ErrorKind::Corruption,
            "shorten {shorten}: {err}"
        );
        let msg = err.message();
        assert!(msg.contains("WAL segment 3: records end early"), "{msg}");
        assert!(msg.contains(&format!("at offset {from}")), "{msg}");
        assert!(msg.contains("segment 5 records at offset"), "{msg}");
    }
}

#[test]
fn a_record_in_any_later_segment_counts() {
    // Segment 3's sync finished only after 7 was created (a few syncs run
    // at once): 7 records it, 5 does not.
    let dir = tempfile::tempdir().unwrap();
    let (_, offsets) = write_chain(dir.path(), &[(3, 3), (5, 2)]);
    let end_of_3 = len_of(dir.path(), 3);
    let previous = Predecessor {
        segment: 5,
        end: len_of(dir.path(), 5),
    };
    let mut w7 = WalWriter::create_after(FS, dir.path(), 7, previous).unwrap();
    append_group(&mut w7, b"in seven");
    append_synced(&mut w7, 3, end_of_3);
    FS.truncate(&path(dir.path(), 3), offsets[0][2] + 3)
        .unwrap();
    let err = collect(dir.path(), &[3, 5, 7]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(
        err.message().contains("segment 7 records at offset"),
        "{err}"
    );
}

#[test]
fn damage_past_the_recorded_end_keeps_the_lost_tail_rule() {
    // A record claiming less than the damaged offset says nothing about
    // the damaged bytes: the version-3 rule applies (lost tail, dropped
    // with every newer segment). At the recorded end itself it is
    // corruption ("at or before").
    for (claim_at_damage, corrupt) in [(false, false), (true, true)] {
        let dir = tempfile::tempdir().unwrap();
        let (all, offsets, mut w5) = sealed_pair(dir.path(), 4);
        let last = offsets[3];
        let claim = if claim_at_damage {
            last
        } else {
            last - SYNC_POINT_LEN as u64
        };
        append_synced(&mut w5, 3, claim);
        flip(dir.path(), 3, len_of(dir.path(), 3) - 2);
        let result = collect(dir.path(), &[3, 5]);
        if corrupt {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            assert!(err.message().contains(&format!("offset {last}")), "{err}");
        } else {
            let (got, report) = result.unwrap();
            assert_eq!(got, all[..3].to_vec());
            assert_eq!(report.dropped_tail.unwrap().offset, last);
            assert_eq!(len_of(dir.path(), 5), SEGMENT_HEADER_LEN as u64);
        }
    }
}

#[test]
fn a_record_behind_damage_in_the_later_segment_still_counts() {
    // The search probes every offset of the later segments: damage in 5
    // before its record does not hide it.
    let dir = tempfile::tempdir().unwrap();
    let (_, offsets, mut w5) = sealed_pair(dir.path(), 2);
    let end_of_3 = len_of(dir.path(), 3);
    let before = w5.len();
    append_synced(&mut w5, 3, end_of_3);
    flip(dir.path(), 5, before - 3); // 5's first batch
    FS.truncate(&path(dir.path(), 3), offsets[1] + 4).unwrap();
    let err = collect(dir.path(), &[3, 5]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.message().starts_with("WAL segment 3:"), "{err}");
    assert!(err.message().contains("segment 5 records"), "{err}");
}

#[test]
fn an_intact_log_with_records_replays_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (all, _, mut w5) = sealed_pair(dir.path(), 3);
    append_synced(&mut w5, 3, len_of(dir.path(), 3));
    let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
    assert_eq!(got, all, "a segment-synced record is not a batch");
    assert_eq!(report.dropped_tail, None);
    assert_eq!(report.records, all.len() as u64);
}

#[test]
fn segment_synced_records_that_cannot_be_genuine_are_corruption() {
    // Naming itself or a newer segment, or an end inside the header: not
    // what the writer writes. In a version-3 segment: a kind it never had.
    let cases: [(u64, u64, u32); 4] = [
        (5, 100, SEGMENT_VERSION),
        (9, 100, SEGMENT_VERSION),
        (3, SEGMENT_HEADER_LEN as u64, SEGMENT_VERSION),
        (3, 100, SEGMENT_VERSION_V3),
    ];
    for (segment, end, version) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, mut w5) = sealed_pair(dir.path(), 2);
        append_synced(&mut w5, segment, end);
        drop(w5);
        if version != SEGMENT_VERSION {
            set_version(dir.path(), 3, version);
            set_version(dir.path(), 5, version);
        }
        let err = collect(dir.path(), &[3, 5]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{segment} {end}: {err}");
        assert!(
            err.message().contains("segment-synced record at offset"),
            "{err}"
        );
    }
}

#[test]
fn format_3_chains_keep_their_rule() {
    // Written by the previous build: no segment-synced records, so a lost
    // tail of an older segment is dropped with the newer ones, as before.
    let dir = tempfile::tempdir().unwrap();
    let (all, offsets) = write_chain(dir.path(), &[(3, 3), (5, 2)]);
    set_version(dir.path(), 3, SEGMENT_VERSION_V3);
    set_version(dir.path(), 5, SEGMENT_VERSION_V3);
    let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
    assert_eq!((got, report.dropped_tail), (all.clone(), None));
    FS.truncate(&path(dir.path(), 3), offsets[0][2] + 2)
        .unwrap();
    let (got, report) = collect(dir.path(), &[3, 5]).unwrap();
    assert_eq!(got, all[..2].to_vec());
    assert_eq!(report.dropped_tail.unwrap().offset, offsets[0][2]);
}

#[test]
fn the_frame_has_the_sync_point_length() {
    let mut out = Vec::new();
    entry::encode_segment_synced(
        SegmentSynced {
            segment: 3,
            end: 99,
        },
        &mut out,
    );
    assert_eq!(out.len(), SEGMENT_SYNCED_FRAME_LEN);
    let Frame::Record { payload, .. } = read_frame(&out) else {
        panic!("not a record")
    };
    assert_eq!(
        entry::decode(payload),
        Ok(Entry::SegmentSynced(SegmentSynced {
            segment: 3,
            end: 99
        }))
    );
}
