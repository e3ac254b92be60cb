//! Crash recovery at the engine level, on real files.
//!
//! A "crash image" is a copy of the database directory taken while the
//! database is still open, after the writes were acknowledged (with the
//! default `sync: false`, acknowledged WAL bytes have reached the OS, so the
//! copy is what a process that died at that moment leaves behind). Opening
//! the copy is then a recovery, without the in-process registry ever seeing
//! the original directory as abandoned.
//!
//! Proves: a torn or bit-flipped last WAL record is dropped and reported in
//! `stats().recovery.dropped_tail` with every earlier record kept; damage to a
//! durable record in the middle of the log (one a later sync point covers,
//! as the one a clean close writes) fails the open with `Corruption`, while
//! damage among records never synced is dropped with every record after
//! it (a power cut may lose such pages in any order); a
//! recovered database keeps working and reopens cleanly; a damaged table
//! data block makes reads of exactly that block's keys fail with `Corruption`;
//! and a damaged or missing `CURRENT`/manifest fails the open with
//! `Corruption` without destroying anything.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;
use toondb_storage::{Database, ErrorKind, Options, ScanOptions};

mod support;
use support::{copy_dir, open_with_tables_held};

fn key(i: usize) -> String {
    format!("key{i:04}")
}

fn value(i: usize) -> Vec<u8> {
    // Distinct, a little irregular in length, and findable in a file.
    let mut v = format!("val-{i:04}-").into_bytes();
    v.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, 20 + i % 13));
    v
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

/// The newest WAL segment (the one being written) and its number.
fn last_segment(dir: &Path) -> (PathBuf, u64) {
    let path = files_with_suffix(dir, ".wal")
        .pop()
        .expect("no WAL segment");
    let number = path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(".wal")
        .parse()
        .unwrap();
    (path, number)
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn flip_bit(path: &Path, offset: u64, mask: u8) {
    let mut data = fs::read(path).unwrap();
    data[offset as usize] ^= mask;
    fs::write(path, data).unwrap();
}

fn truncate(path: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Every commit group in a version-2 WAL segment starts with a sync-point
/// frame of this many bytes (docs/format-wal.md); the batch frame follows.
const SYNC_POINT_FRAME: u64 = 25;

/// A crash image after `n` puts, each its own commit (one WAL commit group
/// each: a sync point, then the record), with the group boundaries measured
/// from the live segment's length after each put: group `i` occupies
/// `starts[i]..starts[i + 1]`, its record `starts[i] + SYNC_POINT_FRAME..`.
struct Image {
    dir: TempDir,
    segment_number: u64,
    /// Offset where record `i` starts; `starts[n]` is the file length.
    starts: Vec<u64>,
}

fn crash_image_after_puts(n: usize) -> Image {
    image_after_puts(n, false)
}

/// Like [`crash_image_after_puts`], but the copy is taken after a clean
/// close, which syncs the segment and marks it synced with a sync point
/// after `starts[n]`: every record is durable.
fn closed_image_after_puts(n: usize) -> Image {
    image_after_puts(n, true)
}

fn image_after_puts(n: usize, closed: bool) -> Image {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open(live.path()).unwrap();
    let (segment, segment_number) = last_segment(live.path());
    let mut starts = vec![file_len(&segment)];
    for i in 0..n {
        db.put(key(i), value(i)).unwrap();
        starts.push(file_len(&segment));
    }
    assert_eq!(last_segment(live.path()).1, segment_number);
    if closed {
        db.close().unwrap();
        assert_eq!(file_len(&segment), starts[n] + SYNC_POINT_FRAME);
    }
    let dir = copy_dir(live.path());
    db.close().unwrap();
    Image {
        dir,
        segment_number,
        starts,
    }
}

/// Asserts that keys `0..present` have their values and `present..total` are absent.
fn check_keys(db: &Database, present: usize, total: usize) {
    for i in 0..total {
        let got = db.get(key(i)).unwrap();
        if i < present {
            assert_eq!(got, Some(value(i)), "{}", key(i));
        } else {
            assert_eq!(got, None, "{}", key(i));
        }
    }
    let scanned = db.iter(ScanOptions::default()).unwrap().count();
    assert_eq!(scanned, present);
}

const N: usize = 20;

#[test]
fn torn_last_record_is_dropped_at_every_kind_of_cut() {
    let image = crash_image_after_puts(N);
    let last_start = image.starts[N - 1] + SYNC_POINT_FRAME;
    let full = image.starts[N];
    let record_len = full - last_start;
    assert!(record_len > 16, "record is {record_len} bytes");
    // Inside the frame header (crc, len), right after it, mid payload, and
    // one byte short of complete.
    for cut in [1, 3, 4, 7, 8, 9, record_len / 2, record_len - 1] {
        let copy = copy_dir(image.dir.path());
        let (segment, number) = last_segment(copy.path());
        assert_eq!(number, image.segment_number);
        assert_eq!(file_len(&segment), full);
        truncate(&segment, last_start + cut);

        // Held: the background flush of the recovered records would delete
        // the replayed segment whose length is checked below.
        let (db, gate) = open_with_tables_held(copy.path());
        let recovery = db.stats().recovery;
        let tail = recovery
            .dropped_tail
            .as_ref()
            .map(|t| (t.segment, t.offset, t.dropped_bytes, t.reason.as_str()));
        assert_eq!(
            tail,
            Some((number, last_start, cut, "truncated record")),
            "cut {cut}"
        );
        assert_eq!(recovery.records, (N - 1) as u64, "cut {cut}");
        check_keys(&db, N - 1, N);
        // The torn bytes are gone from the file, not just skipped.
        assert_eq!(file_len(&segment), last_start, "cut {cut}");
        gate.release();
        db.close().unwrap();
    }
}

#[test]
fn bit_flip_in_last_record_is_dropped() {
    let image = crash_image_after_puts(N);
    let last_start = image.starts[N - 1] + SYNC_POINT_FRAME;
    let full = image.starts[N];
    // Checksum field, length field (low bit: a length one off), first and
    // last payload byte.
    for (at, mask) in [
        (last_start, 0x01),
        (last_start + 4, 0x01),
        (last_start + 4, 0x02),
        (last_start + 8, 0x80),
        (full - 1, 0x10),
    ] {
        let copy = copy_dir(image.dir.path());
        let (segment, number) = last_segment(copy.path());
        flip_bit(&segment, at, mask);

        let db = Database::open(copy.path()).unwrap();
        let tail = db
            .stats()
            .recovery
            .dropped_tail
            .unwrap_or_else(|| panic!("flip at {at} not reported"));
        assert_eq!(tail.segment, number);
        assert_eq!(tail.offset, last_start, "flip at {at}");
        assert_eq!(tail.dropped_bytes, full - last_start, "flip at {at}");
        assert!(
            ["checksum mismatch", "truncated record"].contains(&tail.reason.as_str()),
            "flip at {at}: {}",
            tail.reason
        );
        check_keys(&db, N - 1, N);
        db.close().unwrap();
    }
}

#[test]
fn bit_flip_in_middle_record_fails_open_with_corruption() {
    let image = closed_image_after_puts(N);
    // Every group (its sync point and its record), the last one too: the
    // sync point the close wrote after them claims them all.
    for victim in [0, N / 2, N - 2, N - 1] {
        let start = image.starts[victim];
        let end = image.starts[victim + 1];
        for at in [start, start + 5, start + 8, end - 1] {
            let copy = copy_dir(image.dir.path());
            let (segment, number) = last_segment(copy.path());
            flip_bit(&segment, at, 0x04);
            let before = fs::read(&segment).unwrap();

            let err = Database::open(copy.path()).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::Corruption,
                "record {victim} @{at}: {err}"
            );
            assert!(
                err.message().contains(&format!("segment {number}")),
                "{err}"
            );
            // Nothing was "repaired" away: the file is untouched and a
            // second open fails the same way.
            assert_eq!(fs::read(&segment).unwrap(), before);
            let again = Database::open(copy.path()).unwrap_err();
            assert_eq!(again.kind(), ErrorKind::Corruption);
        }
    }
}

/// Without a sync, nothing in the log says the damaged record was ever
/// durable, and a power cut can persist unsynced pages out of order (a
/// later page without an earlier one). A lost write reads back as zeros
/// from its first byte to the end of its sector: such damage among
/// unsynced records is a torn tail. The damaged group and every record
/// after it are dropped (the survivors stay a prefix in commit order), the
/// file is cut there, and the next open is clean.
#[test]
fn lost_write_in_middle_of_unsynced_records_drops_it_and_everything_after() {
    let image = crash_image_after_puts(N);
    let full = image.starts[N];
    let sector_end = |at: u64| (at / 512 + 1) * 512;
    // Victims whose sector is not the log's last, so valid records follow
    // the lost write (zeros to the end of the log would be its clean end).
    let last = (0..N)
        .rev()
        .find(|&v| sector_end(image.starts[v]) < full)
        .unwrap();
    assert!(last > N / 2, "the log spans several sectors");
    for victim in [0, N / 2, last] {
        let group = image.starts[victim];
        let copy = copy_dir(image.dir.path());
        let (segment, number) = last_segment(copy.path());
        let mut bytes = fs::read(&segment).unwrap();
        bytes[group as usize..sector_end(group) as usize].fill(0);
        fs::write(&segment, &bytes).unwrap();

        let db = Database::open(copy.path()).unwrap();
        let recovery = db.stats().recovery;
        assert_eq!(recovery.records, victim as u64, "record {victim}");
        let tail = recovery.dropped_tail.unwrap();
        assert_eq!((tail.segment, tail.offset), (number, group));
        assert_eq!(tail.dropped_bytes, full - group);
        assert!(
            tail.reason.starts_with("impossible record length"),
            "{}",
            tail.reason
        );
        check_keys(&db, victim, N);
        db.close().unwrap();
        let db = Database::open(copy.path()).unwrap();
        assert_eq!(db.stats().recovery.dropped_tail, None);
        check_keys(&db, victim, N);
        db.close().unwrap();
    }
}

/// A flipped bit is not what a lost write leaves. Followed by valid
/// records, it reads exactly like a media error in records that a final
/// `sync: true` group made durable (that group's own sync point predates
/// its sync), so it is corruption, as in version 1, and nothing is cut.
#[test]
fn bit_flip_in_middle_of_unsynced_records_is_corruption() {
    let image = crash_image_after_puts(N);
    for victim in [0, N / 2, N - 2] {
        let record = image.starts[victim] + SYNC_POINT_FRAME;
        let copy = copy_dir(image.dir.path());
        let (segment, number) = last_segment(copy.path());
        flip_bit(&segment, record + 8, 0x04);
        let before = fs::read(&segment).unwrap();

        let err = Database::open(copy.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "record {victim}: {err}");
        let msg = err.message();
        assert!(msg.contains(&format!("segment {number}")), "{msg}");
        assert!(msg.contains(&format!("offset {record}")), "{msg}");
        assert!(msg.contains("a valid record follows"), "{msg}");
        assert_eq!(fs::read(&segment).unwrap(), before, "nothing was cut");
    }
}

#[test]
fn recovered_database_keeps_working_and_reopens_cleanly() {
    let image = crash_image_after_puts(N);
    let last_start = image.starts[N - 1];
    let copy = copy_dir(image.dir.path());
    let (segment, _) = last_segment(copy.path());
    truncate(&segment, last_start + 5);

    // Table creation held: the background flush of what this open recovered
    // waits, so the crash image below still replays every record.
    let (db, gate) = open_with_tables_held(copy.path());
    assert!(db.stats().recovery.dropped_tail.is_some());
    check_keys(&db, N - 1, N);
    for i in N - 1..N + 10 {
        db.put(key(i), value(i)).unwrap();
    }
    check_keys(&db, N + 10, N + 10);

    // A crash now: the damage must not have been left mid-log.
    let second = copy_dir(copy.path());
    gate.release();
    db.close().unwrap();
    {
        let db = Database::open(second.path()).unwrap();
        let recovery = db.stats().recovery;
        assert_eq!(recovery.dropped_tail, None, "{recovery:?}");
        assert_eq!(recovery.records, (N + 10) as u64);
        check_keys(&db, N + 10, N + 10);
        db.close().unwrap();
    }

    // And a clean close and reopen.
    let db = Database::open(copy.path()).unwrap();
    assert_eq!(db.stats().recovery.dropped_tail, None);
    check_keys(&db, N + 10, N + 10);
    // Writes after two recoveries are newer than everything replayed.
    db.put(key(0), b"newest").unwrap();
    assert_eq!(db.get(key(0)).unwrap().as_deref(), Some(&b"newest"[..]));
    db.flush().unwrap();
    assert_eq!(db.get(key(0)).unwrap().as_deref(), Some(&b"newest"[..]));
    db.close().unwrap();
}

/// A crash image whose WAL spans two live segments: the first session's
/// (keys `0..10`, closed without a flush) and the second's (keys `10..20`).
fn crash_image_with_two_segments() -> (TempDir, Vec<u64>) {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open(live.path()).unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
    let (db, gate) = open_with_tables_held(live.path());
    let (segment, _) = last_segment(live.path());
    let mut starts = vec![file_len(&segment)];
    for i in 10..20 {
        db.put(key(i), value(i)).unwrap();
        starts.push(file_len(&segment));
    }
    let image = copy_dir(live.path());
    gate.release();
    db.close().unwrap();
    assert_eq!(files_with_suffix(image.path(), ".wal").len(), 2);
    (image, starts)
}

#[test]
fn torn_tail_after_an_older_live_segment_is_dropped() {
    let (image, starts) = crash_image_with_two_segments();
    let (segment, number) = last_segment(image.path());
    truncate(&segment, starts[9] + 3);
    let db = Database::open(image.path()).unwrap();
    let recovery = db.stats().recovery;
    assert_eq!(recovery.segments, 2);
    assert_eq!(recovery.records, 19);
    let tail = recovery.dropped_tail.unwrap();
    assert_eq!((tail.segment, tail.offset), (number, starts[9]));
    check_keys(&db, 19, 20);
    db.close().unwrap();
    let db = Database::open(image.path()).unwrap();
    assert_eq!(db.stats().recovery.dropped_tail, None);
    check_keys(&db, 19, 20);
    db.close().unwrap();
}

#[test]
fn damage_at_the_end_of_an_older_live_segment_is_corruption() {
    let (image, _) = crash_image_with_two_segments();
    let older = files_with_suffix(image.path(), ".wal").remove(0);
    // A torn or flipped end is only a crash artifact in the newest segment;
    // in an older one it means acknowledged records were lost.
    for damage in [0, 1] {
        let copy = copy_dir(image.path());
        let path = copy.path().join(older.file_name().unwrap());
        let len = file_len(&path);
        if damage == 0 {
            truncate(&path, len - 3);
        } else {
            flip_bit(&path, len - 1, 0x01);
        }
        let err = Database::open(copy.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}

#[test]
fn torn_header_of_the_newest_segment_is_repaired() {
    // The second session wrote nothing: its segment is header-only.
    let live = tempfile::tempdir().unwrap();
    let db = Database::open(live.path()).unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
    let (db, gate) = open_with_tables_held(live.path());
    let image = copy_dir(live.path());
    gate.release();
    db.close().unwrap();

    for len in [0, 7, 15] {
        let copy = copy_dir(image.path());
        let (segment, number) = last_segment(copy.path());
        assert_eq!(file_len(&segment), 16);
        truncate(&segment, len);
        // Held: the background flush of the recovered records would delete
        // the repaired segment, and the crash image below must replay it.
        let (db, gate) = open_with_tables_held(copy.path());
        let tail = db.stats().recovery.dropped_tail.unwrap();
        assert_eq!(tail.reason, "torn segment header");
        assert_eq!((tail.segment, tail.dropped_bytes), (number, len));
        check_keys(&db, 10, 10);
        db.put(key(10), value(10)).unwrap();
        // A crash now: the repaired segment is no longer the newest; it must
        // be a valid (empty) segment rather than mid-log damage.
        let crashed = copy_dir(copy.path());
        gate.release();
        db.close().unwrap();
        let db = Database::open(crashed.path()).unwrap();
        assert_eq!(db.stats().recovery.dropped_tail, None);
        assert!(
            db.stats().recovery.segments >= 3,
            "{:?}",
            db.stats().recovery
        );
        check_keys(&db, 11, 11);
        db.close().unwrap();
        // And after a clean close.
        let db = Database::open(copy.path()).unwrap();
        assert_eq!(db.stats().recovery.dropped_tail, None);
        check_keys(&db, 11, 11);
        db.close().unwrap();
    }
}

// ---- table files ----

fn read_varint(data: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    for shift in (0..64).step_by(7) {
        let b = data[*pos];
        *pos += 1;
        v |= ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("bad varint")
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

/// Byte ranges of the data blocks of a table file, read from its footer
/// and index block (docs/format-table.md, version 2: the index is stored
/// uncompressed, `contents | type | crc32`).
fn data_blocks(file: &[u8]) -> Vec<std::ops::Range<usize>> {
    let footer = file.len() - 64;
    assert_eq!(&file[file.len() - 8..], b"TOONSST2");
    let index_off = u64_at(file, footer) as usize;
    let index_len = u64_at(file, footer + 8) as usize;
    assert_eq!(file[index_off + index_len - 5], 0, "index block type");
    let contents_len = index_len - 5;
    let index = &file[index_off..index_off + contents_len];
    let count = u32_at(index, contents_len - 4) as usize;
    let offsets = contents_len - 4 - 4 * count;
    (0..count)
        .map(|i| {
            let mut pos = u32_at(index, offsets + 4 * i) as usize;
            let key_len = read_varint(index, &mut pos);
            let value_len = read_varint(index, &mut pos);
            let meta_len = read_varint(index, &mut pos);
            assert_eq!((value_len, meta_len), (12, 0));
            let handle = pos + key_len;
            let off = u64_at(index, handle) as usize;
            let len = u32_at(index, handle + 8) as usize;
            off..off + len
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn damaged_table_block_reads_as_corruption() {
    const KEYS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().block_size(256);
    {
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..KEYS {
            db.put(key(i), value(i)).unwrap();
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let tables = files_with_suffix(dir.path(), ".sst");
    assert_eq!(tables.len(), 1, "{tables:?}");
    let mut file = fs::read(&tables[0]).unwrap();
    let blocks = data_blocks(&file);
    assert!(blocks.len() > 10, "{} blocks", blocks.len());
    let block_of = |i: usize| {
        let at = find(&file, &value(i)).expect("value not in the table");
        blocks.iter().position(|b| b.contains(&at)).unwrap()
    };
    let victim = blocks.len() / 2;
    let victim_keys: Vec<usize> = (0..KEYS).filter(|&i| block_of(i) == victim).collect();
    assert!(!victim_keys.is_empty());
    // Flip one bit of a value in the victim block.
    let at = find(&file, &value(victim_keys[0])).unwrap() + 3;
    file[at] ^= 0x20;
    fs::write(&tables[0], &file).unwrap();

    // Data blocks are checked when read, not at open.
    let db = Database::open_with(dir.path(), options).unwrap();
    assert_eq!(
        db.stats().recovery.records,
        0,
        "keys must come from the table"
    );
    for i in 0..KEYS {
        let got = db.get(key(i));
        if victim_keys.contains(&i) {
            // Twice: a failed check must not mark the block as verified.
            for attempt in [got, db.get(key(i))] {
                let err = attempt.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corruption, "{}: {err}", key(i));
            }
        } else {
            assert_eq!(got.unwrap(), Some(value(i)), "{}", key(i));
        }
    }

    // Scans return correct entries from before the damage (entries fetched
    // in the same batch as the damaged block may be withheld), then one
    // Corruption error, then stop.
    let first_bad = victim_keys[0];
    let last_bad = *victim_keys.last().unwrap();
    for reverse in [false, true] {
        let mut good = if reverse {
            (last_bad + 1..KEYS).rev().collect::<Vec<_>>()
        } else {
            (0..first_bad).collect()
        }
        .into_iter();
        let mut it = db.iter(ScanOptions::default().reverse(reverse)).unwrap();
        let err = loop {
            match it.next().expect("scan ended without reporting the damage") {
                Ok(entry) => {
                    let i = good.next().expect("entry from the damaged block or beyond");
                    assert_eq!(entry, (key(i).into_bytes(), value(i)));
                }
                Err(err) => break err,
            }
        };
        assert_eq!(
            err.kind(),
            ErrorKind::Corruption,
            "reverse {reverse}: {err}"
        );
        assert!(it.next().is_none());
    }
    // A scan that never touches the block is fine.
    let after: Vec<_> = db
        .iter(
            ScanOptions::default().lower(std::ops::Bound::Included(key(last_bad + 1).into_bytes())),
        )
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(after.len(), KEYS - last_bad - 1);
    db.close().unwrap();
}

/// Flips each byte of a small table file in turn: the open fails with
/// Corruption (footer, index, properties) or the reads that touch the
/// damaged block do; no flip panics, hides a key or returns a wrong value.
#[test]
fn every_byte_of_a_table_is_checked() {
    const KEYS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().block_size(128);
    {
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..KEYS {
            db.put(key(i), value(i)).unwrap();
        }
        db.delete(key(3)).unwrap();
        db.flush().unwrap();
        db.close().unwrap();
    }
    let expected = |i: usize| (i != 3).then(|| value(i));
    let table = files_with_suffix(dir.path(), ".sst").remove(0);
    let pristine = fs::read(&table).unwrap();
    let started = std::time::Instant::now();
    let (mut open_failed, mut read_failed) = (0, 0);
    for at in 0..pristine.len() {
        let mut damaged = pristine.clone();
        damaged[at] ^= 0xff;
        fs::write(&table, &damaged).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = match Database::open_with(dir.path(), options.clone()) {
                Ok(db) => db,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corruption, "byte {at}: {e}");
                    return (1, 0);
                }
            };
            let mut failed = 0;
            for i in 0..KEYS {
                match db.get(key(i)) {
                    Ok(v) => assert_eq!(v, expected(i), "byte {at}: {}", key(i)),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corruption, "byte {at}: {e}");
                        failed = 1;
                    }
                }
            }
            let mut want = (0..KEYS).filter_map(|i| expected(i).map(|v| (key(i), v)));
            for item in db.iter(ScanOptions::default()).unwrap() {
                match item {
                    Ok((k, v)) => {
                        let (wk, wv) = want.next().expect("extra entry");
                        assert_eq!((k, v), (wk.into_bytes(), wv), "byte {at}");
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corruption, "byte {at}: {e}");
                        failed = 1;
                    }
                }
            }
            db.close().unwrap();
            (0, failed)
        }));
        let (o, r) = outcome.unwrap_or_else(|_| panic!("byte {at}: panicked"));
        open_failed += o;
        read_failed += r;
    }
    fs::write(&table, &pristine).unwrap();
    eprintln!(
        "{} bytes: open failed {open_failed}, reads failed {read_failed}, {:?}",
        pristine.len(),
        started.elapsed()
    );
    // Every byte is covered by some check.
    assert_eq!(open_failed + read_failed, pristine.len());
}

// ---- CURRENT and the manifest ----

/// A closed database with one table file and a little WAL data.
fn database_with_a_table() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for i in 0..10 {
        db.put(key(i), value(i)).unwrap();
    }
    db.flush().unwrap();
    for i in 10..15 {
        db.put(key(i), value(i)).unwrap();
    }
    db.close().unwrap();
    assert_eq!(files_with_suffix(dir.path(), ".sst").len(), 1);
    dir
}

fn manifest_path(dir: &Path) -> PathBuf {
    let current = fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim_end())
}

/// Damages a copy of `dir` with `damage`, checks the open fails with
/// Corruption and leaves every file in place, then undoes the damage and
/// checks the data is intact.
fn check_open_fails(dir: &Path, damage: impl FnOnce(&Path), undo: impl FnOnce(&Path)) {
    let copy = copy_dir(dir);
    damage(copy.path());
    let listing = |p: &Path| {
        let mut names: Vec<_> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = listing(copy.path());
    let err = Database::open(copy.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert_eq!(listing(copy.path()), before, "a failed open changed files");
    undo(copy.path());
    let db = Database::open(copy.path()).unwrap();
    check_keys(&db, 15, 15);
    db.close().unwrap();
}

#[test]
fn current_naming_a_missing_manifest_is_corruption() {
    let dir = database_with_a_table();
    let real = fs::read(dir.path().join("CURRENT")).unwrap();
    let restore = |p: &Path| fs::write(p.join("CURRENT"), &real).unwrap();
    check_open_fails(
        dir.path(),
        |p| fs::write(p.join("CURRENT"), "MANIFEST-999999\n").unwrap(),
        restore,
    );
    // The manifest CURRENT names was deleted.
    let manifest = manifest_path(dir.path());
    let name = manifest.file_name().unwrap().to_owned();
    let saved = fs::read(&manifest).unwrap();
    check_open_fails(
        dir.path(),
        |p| fs::remove_file(p.join(&name)).unwrap(),
        |p| fs::write(p.join(&name), &saved).unwrap(),
    );
}

#[test]
fn torn_current_is_corruption() {
    let dir = database_with_a_table();
    let real = fs::read(dir.path().join("CURRENT")).unwrap();
    for len in [0, 5, real.len() - 1] {
        check_open_fails(
            dir.path(),
            |p| fs::write(p.join("CURRENT"), &real[..len]).unwrap(),
            |p| fs::write(p.join("CURRENT"), &real).unwrap(),
        );
    }
}

#[test]
fn missing_current_with_tables_present_is_corruption() {
    let dir = database_with_a_table();
    let real = fs::read(dir.path().join("CURRENT")).unwrap();
    check_open_fails(
        dir.path(),
        |p| fs::remove_file(p.join("CURRENT")).unwrap(),
        |p| fs::write(p.join("CURRENT"), &real).unwrap(),
    );
}

#[test]
fn torn_manifest_is_corruption() {
    let dir = database_with_a_table();
    let manifest = manifest_path(dir.path());
    let name = manifest.file_name().unwrap().to_owned();
    let saved = fs::read(&manifest).unwrap();
    // The first record (the snapshot the open wrote) ends here; a torn
    // *later* edit is a legitimately unacknowledged append, so only cuts that
    // leave no complete edit at all must fail.
    let first_end = 16 + 8 + u32_at(&saved, 20) as usize;
    assert!(
        first_end < saved.len(),
        "expected a flush edit after the snapshot"
    );
    // Empty, a torn header, header only, and cuts inside the snapshot record.
    for len in [0, 9, 16, 20, 24, first_end - 1] {
        check_open_fails(
            dir.path(),
            |p| truncate(&p.join(&name), len as u64),
            |p| fs::write(p.join(&name), &saved).unwrap(),
        );
    }
}
