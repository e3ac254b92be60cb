//! A bounded scan never reads a block of a table file whose key range
//! (from the manifest) lies wholly past its bound: the level cursor does
//! not open the next file of a level to find its first key out of range
//! (merge.rs `LevelCursor::with_end`), nor a scan a level-0 file outside
//! its range (iter.rs). Checked by the files' block-read counters.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::lsm::TableFile;
use crate::{Database, Options, ScanOptions};

fn key(i: u32) -> Vec<u8> {
    format!("k{i:06}").into_bytes()
}

fn reads(f: &TableFile) -> u64 {
    f.counters().data_block_reads.load(Ordering::Relaxed)
}

fn options() -> Options {
    Options {
        auto_compaction: false,
        target_file_size: 32 << 10,
        ..Options::default()
    }
}

fn scan_keys(db: &Database, options: ScanOptions) -> Vec<Vec<u8>> {
    db.iter(options).unwrap().map(|r| r.unwrap().0).collect()
}

#[test]
fn a_scan_ending_at_a_file_boundary_reads_nothing_of_the_next_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    for i in 0..4000 {
        db.put(key(i), [b'v'; 100]).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let level: Vec<Arc<TableFile>> = db.engine_ref().state().levels.all().cloned().collect();
    assert!(level.len() >= 4, "{} files", level.len());
    let (a, b) = (&level[1], &level[2]);
    // Forward, up to just before b's first key (either bound kind).
    for upper in [
        Bound::Excluded(b.smallest().to_vec()),
        Bound::Included(a.largest().to_vec()),
    ] {
        let before = reads(b);
        let got = scan_keys(
            &db,
            ScanOptions::default()
                .lower(Bound::Included(a.smallest().to_vec()))
                .upper(upper),
        );
        assert_eq!(got.first().map(Vec::as_slice), Some(a.smallest()));
        assert_eq!(got.last().map(Vec::as_slice), Some(a.largest()));
        assert_eq!(reads(b), before, "file {} was read", b.number());
    }
    // Reverse, down to just after a's last key.
    for lower in [
        Bound::Excluded(a.largest().to_vec()),
        Bound::Included(b.smallest().to_vec()),
    ] {
        let before = reads(a);
        let got = scan_keys(
            &db,
            ScanOptions::default()
                .lower(lower)
                .upper(Bound::Included(b.largest().to_vec()))
                .reverse(true),
        );
        assert_eq!(got.first().map(Vec::as_slice), Some(b.largest()));
        assert_eq!(got.last().map(Vec::as_slice), Some(b.smallest()));
        assert_eq!(reads(a), before, "file {} was read", a.number());
    }
    // An empty range between two files reads no block at all.
    let mut between = a.largest().to_vec();
    between.push(0);
    let total: u64 = level.iter().map(|f| reads(f)).sum();
    let got = scan_keys(
        &db,
        ScanOptions::default()
            .lower(Bound::Included(between))
            .upper(Bound::Excluded(b.smallest().to_vec())),
    );
    assert!(got.is_empty());
    assert_eq!(level.iter().map(|f| reads(f)).sum::<u64>(), total);
    // Unbounded scans and point reads still see every key.
    assert_eq!(scan_keys(&db, ScanOptions::default()).len(), 4000);
    assert_eq!(
        scan_keys(&db, ScanOptions::default().reverse(true)).len(),
        4000
    );
    for i in (0..4000).step_by(37) {
        assert!(db.get(key(i)).unwrap().is_some());
    }
}

#[test]
fn a_scan_opens_no_level0_file_outside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    // Three level-0 files with disjoint ranges.
    for part in 0..3u32 {
        for i in 0..200 {
            db.put(key(part * 1000 + i), b"v").unwrap();
        }
        db.flush().unwrap();
    }
    let l0: Vec<Arc<TableFile>> = db.engine_ref().state().levels.level(0).to_vec();
    assert_eq!(l0.len(), 3);
    let before: Vec<u64> = l0.iter().map(|f| reads(f)).collect();
    let got = scan_keys(
        &db,
        ScanOptions::default()
            .lower(Bound::Included(key(1000)))
            .upper(Bound::Excluded(key(1200))),
    );
    assert_eq!(got.len(), 200);
    let read: Vec<bool> = l0.iter().zip(&before).map(|(f, b)| reads(f) > *b).collect();
    assert_eq!(read.iter().filter(|r| **r).count(), 1, "{read:?}");
}
