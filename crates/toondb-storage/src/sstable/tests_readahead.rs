//! Readahead of table iterators (readahead.rs), observed through the file
//! bytes' `will_need` advice: when it starts, how the windows grow, that it
//! never asks for blocks past the scan's bound, and that it covers every
//! block the iteration reads once it has started.

use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex};

use super::readahead::{Readahead, INITIAL_WINDOW, MAX_WINDOW, READS_BEFORE_READAHEAD};
use super::*;
use crate::io::{FileBytes, FileSystem, OsFileSystem};
use crate::key::ValueKind;

/// File bytes in memory that record every readahead request.
struct Recording {
    bytes: Vec<u8>,
    advised: Mutex<Vec<Range<usize>>>,
}

impl FileBytes for Recording {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn will_need(&self, range: Range<usize>) {
        self.advised.lock().unwrap().push(range);
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:07}").into_bytes()
}

const ROWS: usize = 20_000;

/// ~20K rows of 100-byte values in 4 KiB blocks (~600 blocks, ~2.4 MB).
fn table() -> (Arc<Table>, Arc<Recording>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(table_file_name(9));
    let file = OsFileSystem.create(&path).unwrap();
    let mut b = TableBuilder::with_options(
        file,
        TableOptions {
            block_size: 4096,
            compression: Compression::None,
            ..TableOptions::default()
        },
    );
    for i in 0..ROWS {
        b.add(&key(i), 5, ValueKind::Put, &[i as u8; 100]).unwrap();
    }
    b.finish().unwrap();
    let rec = Arc::new(Recording {
        bytes: OsFileSystem.read(&path).unwrap(),
        advised: Mutex::new(Vec::new()),
    });
    let table = Table::open(9, rec.clone()).unwrap();
    (Arc::new(table), rec)
}

fn advised(rec: &Recording) -> Vec<Range<usize>> {
    rec.advised.lock().unwrap().clone()
}

/// The block holding the newest version of `k`.
fn block_of(t: &Table, k: &[u8]) -> usize {
    t.first_block_reaching(k, false).unwrap()
}

/// Checks the requests of one sequential run over blocks `first..=last`
/// (in scan order `reverse`): all inside those blocks, no byte asked for
/// twice, windows growing by doubling from the initial size up to the
/// maximum, and together covering every block after the first
/// `READS_BEFORE_READAHEAD`.
fn check_run(t: &Table, asked: &[Range<usize>], first: usize, last: usize, reverse: bool) {
    assert!(!asked.is_empty(), "a long scan asked for no readahead");
    let (lo, hi) = if reverse {
        (last, first)
    } else {
        (first, last)
    };
    let allowed = t.block_extent(lo).unwrap().start..t.block_extent(hi).unwrap().end;
    for r in asked {
        assert!(
            r.start >= allowed.start && r.end <= allowed.end,
            "asked {r:?} outside the scanned blocks {allowed:?}"
        );
    }
    let mut sorted = asked.to_vec();
    sorted.sort_by_key(|r| r.start);
    for pair in sorted.windows(2) {
        assert!(pair[0].end <= pair[1].start, "asked twice: {pair:?}");
    }
    // Whole blocks, so a window is at most one block over its size.
    let block = 4096 + 200;
    for (i, r) in asked.iter().enumerate() {
        let want = (INITIAL_WINDOW << i.min(20)).min(MAX_WINDOW);
        assert!(
            r.len() <= want + block,
            "window {i} is {} bytes, want ~{want}",
            r.len()
        );
        if i + 1 < asked.len() {
            assert!(
                r.len() + block >= want,
                "window {i} is {} bytes, want ~{want}",
                r.len()
            );
        }
    }
    assert!(
        asked.iter().any(|r| r.len() > MAX_WINDOW / 2),
        "windows never grew"
    );
    // Coverage: every block from the third one read to the last.
    let skip = READS_BEFORE_READAHEAD as usize;
    let covered = |b: usize| {
        let e = t.block_extent(b).unwrap();
        asked.iter().any(|r| r.start <= e.start && e.end <= r.end)
    };
    let blocks: Vec<usize> = if reverse {
        (last..=first - skip).rev().collect()
    } else {
        (first + skip..=last).collect()
    };
    for b in blocks {
        assert!(covered(b), "block {b} was read without readahead");
    }
}

#[test]
fn point_reads_and_short_iterations_ask_for_nothing() {
    let (t, rec) = table();
    for i in (0..ROWS).step_by(997) {
        assert!(t.get(&key(i), 9).unwrap().is_some());
    }
    let ra = Readahead::unbounded();
    let mut it = TableIter::new(t.clone()).with_readahead(ra.clone());
    it.seek(&key(5000)).unwrap();
    // Steps until the iterator enters the next block: two blocks read.
    let b = block_of(&t, &key(5000));
    while it.entry().is_some_and(|e| block_of(&t, e.user_key) <= b) {
        it.next().unwrap();
    }
    assert!(advised(&rec).is_empty(), "{:?}", advised(&rec));
}

#[test]
fn a_bounded_forward_scan_reads_ahead_up_to_its_bound_only() {
    let (t, rec) = table();
    let (start, end) = (key(1000), key(15_000));
    let ra = Readahead::new(Bound::Included(start.clone()), Bound::Excluded(end.clone()));
    let mut it = TableIter::new(t.clone()).with_readahead(ra);
    it.seek(&start).unwrap();
    while it.entry().is_some_and(|e| e.user_key < end.as_slice()) {
        it.next().unwrap();
    }
    let asked = advised(&rec);
    check_run(&t, &asked, block_of(&t, &start), block_of(&t, &end), false);
}

#[test]
fn a_bounded_reverse_scan_reads_ahead_down_to_its_bound_only() {
    let (t, rec) = table();
    let (low, high) = (key(3000), key(18_000));
    let ra = Readahead::new(Bound::Excluded(low.clone()), Bound::Included(high.clone()));
    let mut it = TableIter::new(t.clone()).with_readahead(ra);
    it.seek_for_prev(&high).unwrap();
    while it.entry().is_some_and(|e| e.user_key > low.as_slice()) {
        it.prev().unwrap();
    }
    let asked = advised(&rec);
    check_run(&t, &asked, block_of(&t, &high), block_of(&t, &low), true);
}

/// A scan re-seeks a new iterator at every batch (iter.rs); sharing the
/// `Readahead` keeps it one sequential run.
#[test]
fn re_seeking_at_each_batch_continues_the_run() {
    let (t, rec) = table();
    let ra = Readahead::unbounded();
    let mut resume = key(0);
    let mut first = true;
    loop {
        let mut it = TableIter::new(t.clone()).with_readahead(ra.clone());
        it.seek(&resume).unwrap();
        if !first {
            it.next().unwrap(); // past the last key consumed
        }
        first = false;
        // A batch of 50 keys (about one and a half blocks).
        let mut last = None;
        for _ in 0..50 {
            let Some(e) = it.entry() else { break };
            last = Some(e.user_key.to_vec());
            it.next().unwrap();
        }
        match last {
            Some(k) => resume = k,
            None => break,
        }
        if it.entry().is_none() {
            break;
        }
    }
    let asked = advised(&rec);
    let last_block = t.block_count().unwrap() - 1;
    check_run(&t, &asked, 0, last_block, false);
}

/// A seek elsewhere starts a new run: nothing more until it has read
/// consecutive blocks again, then from the initial window.
#[test]
fn a_seek_elsewhere_starts_over() {
    let (t, rec) = table();
    let ra = Readahead::unbounded();
    let mut it = TableIter::new(t.clone()).with_readahead(ra.clone());
    it.seek_to_first().unwrap();
    for _ in 0..2000 {
        it.next().unwrap();
    }
    let before = advised(&rec).len();
    assert!(before > 0);
    let mut it = TableIter::new(t.clone()).with_readahead(ra);
    it.seek(&key(12_000)).unwrap();
    it.next().unwrap();
    assert_eq!(
        advised(&rec).len(),
        before,
        "a fresh seek read ahead at once"
    );
    for _ in 0..200 {
        it.next().unwrap();
    }
    let asked = advised(&rec);
    let restart = &asked[before];
    assert!(restart.len() <= INITIAL_WINDOW + 4096 + 200, "{restart:?}");
    let b = block_of(&t, &key(12_000));
    assert!(restart.start >= t.block_extent(b).unwrap().start);
}
