//! Builder, reader and iterator checked together against a sorted-vector
//! model of the table's entries.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::error::ErrorKind;
use crate::io::{FileBytes, FileSystem, OsFileSystem};
use crate::key::{Timestamp, ValueKind};

/// One version: (user key, ts, kind, value), kept in internal order.
type Row = (Vec<u8>, Timestamp, ValueKind, Vec<u8>);

/// File bytes held in memory, so tests can damage them freely.
struct VecBytes(Vec<u8>);

impl FileBytes for VecBytes {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Sorts into internal order and drops duplicate (key, ts) pairs.
fn normalize(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    rows.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    rows
}

fn write_table(path: &Path, rows: &[Row], block_size: usize) -> TableSummary {
    write_table_with(path, rows, opts(block_size, Compression::default()))
}

fn opts(block_size: usize, compression: Compression) -> TableOptions {
    TableOptions {
        block_size,
        compression,
        ..TableOptions::default()
    }
}

const ALL_COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Lz4, Compression::Zstd];

fn write_table_with(path: &Path, rows: &[Row], options: TableOptions) -> TableSummary {
    let file = OsFileSystem.create(path).unwrap();
    let mut b = TableBuilder::with_options(file, options);
    for (k, ts, kind, v) in rows {
        b.add(k, *ts, *kind, v).unwrap();
    }
    b.finish().unwrap()
}

/// Builds a table in a temporary file and opens it through a memory map.
fn build_mapped(rows: &[Row], block_size: usize) -> (Arc<Table>, TableSummary) {
    build_mapped_with(rows, opts(block_size, Compression::default()))
}

fn build_mapped_with(rows: &[Row], options: TableOptions) -> (Arc<Table>, TableSummary) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(table_file_name(7));
    let summary = write_table_with(&path, rows, options);
    let bytes = OsFileSystem.map(&path).unwrap();
    // The mapping stays valid after the directory is removed.
    let table = Table::open(7, bytes).unwrap();
    (Arc::new(table), summary)
}

fn build_bytes(rows: &[Row], block_size: usize) -> Vec<u8> {
    build_bytes_with(rows, opts(block_size, Compression::default()))
}

fn build_bytes_with(rows: &[Row], options: TableOptions) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    write_table_with(&path, rows, options);
    OsFileSystem.read(&path).unwrap()
}

/// Opens and, like the open of old, checks the index and filter at once
/// (they are otherwise decoded on first use).
fn open_vec(bytes: Vec<u8>) -> crate::Result<Table> {
    let table = Table::open(7, Arc::new(VecBytes(bytes)))?;
    table.load_meta()?;
    Ok(table)
}

fn row(e: TableEntry<'_>) -> Row {
    (e.user_key.to_vec(), e.ts, e.kind, e.value.to_vec())
}

/// The table's point read, as an owned row.
fn got(table: &Table, key: &[u8], snap: Timestamp) -> crate::Result<Option<Row>> {
    Ok(table.get(key, snap)?.map(|g| row(g.entry())))
}

/// Where the data blocks end (the first meta block starts).
fn data_end(file: &[u8]) -> usize {
    open_vec(file.to_vec()).unwrap().data_end()
}

/// What `get(key, snap)` should return.
fn model_get<'a>(rows: &'a [Row], key: &[u8], snap: Timestamp) -> Option<&'a Row> {
    let p = rows.partition_point(|r| r.0.as_slice() < key || (r.0 == key && r.1 > snap));
    rows.get(p).filter(|r| r.0 == key)
}

/// Keys to search for: every user key, a key just after and just before
/// each, one before all and one after all.
fn probes(rows: &[Row]) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new(), vec![0xff; 3]];
    for (k, ..) in rows {
        out.push(k.clone());
        let mut after = k.clone();
        after.push(0);
        out.push(after);
        if let Some((&last, head)) = k.split_last() {
            if last > 0 {
                let mut before = head.to_vec();
                before.push(last - 1);
                before.push(0xff);
                out.push(before);
            }
        }
        let mut past = k.clone();
        past.push(0xff);
        out.push(past);
    }
    out.sort();
    out.dedup();
    out
}

/// The versions of `key` in `rows` (which are in internal order), found by
/// binary search: a linear filter per probe made the big tables' checks
/// quadratic (~640M key comparisons in `many_versions_match_model`).
fn versions_of<'a>(rows: &'a [Row], key: &[u8]) -> &'a [Row] {
    let lo = rows.partition_point(|r| r.0.as_slice() < key);
    let n = rows[lo..].partition_point(|r| r.0.as_slice() == key);
    &rows[lo..lo + n]
}

fn check_gets(table: &Table, rows: &[Row]) {
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "rows must be in key order"
    );
    for key in probes(rows) {
        let mut snaps = vec![0, 1, Timestamp::MAX, Timestamp::MAX - 1];
        for r in versions_of(rows, &key) {
            snaps.extend([r.1, r.1.saturating_sub(1), r.1.saturating_add(1)]);
        }
        for snap in snaps {
            let got = got(table, &key, snap).unwrap();
            assert_eq!(
                got.as_ref(),
                model_get(rows, &key, snap),
                "get({key:?}, {snap})"
            );
        }
    }
}

fn expect_at(it: &TableIter, rows: &[Row], p: Option<usize>, what: &str) {
    let want = p.and_then(|p| rows.get(p));
    assert_eq!(it.valid(), want.is_some(), "{what}");
    assert_eq!(it.entry().map(row).as_ref(), want, "{what}");
}

fn step_next(p: Option<usize>, len: usize) -> Option<usize> {
    p.map(|p| p + 1).filter(|&p| p < len)
}

fn step_prev(p: Option<usize>) -> Option<usize> {
    p.and_then(|p| p.checked_sub(1))
}

fn check_iteration(table: &Arc<Table>, rows: &[Row], steps: usize) {
    let n = rows.len();
    let mut it = TableIter::new(table.clone());
    assert!(!it.valid() && it.entry().is_none());

    // Full forward and backward walks, then one more step off each end.
    it.seek_to_first().unwrap();
    let mut seen = Vec::new();
    while let Some(e) = it.entry() {
        seen.push(row(e));
        it.next().unwrap();
    }
    assert_eq!(seen, rows);
    it.next().unwrap();
    assert!(!it.valid());

    it.seek_to_last().unwrap();
    let mut seen = Vec::new();
    while let Some(e) = it.entry() {
        seen.push(row(e));
        it.prev().unwrap();
    }
    seen.reverse();
    assert_eq!(seen, rows);
    it.prev().unwrap();
    assert!(!it.valid());

    for key in probes(rows) {
        let at_seek = Some(rows.partition_point(|r| r.0 < key)).filter(|&p| p < n);
        let at_prev = rows.partition_point(|r| r.0 <= key).checked_sub(1);
        for (start, name) in [(at_seek, "seek"), (at_prev, "seek_for_prev")] {
            let seek = |it: &mut TableIter| {
                if name == "seek" {
                    it.seek(&key)
                } else {
                    it.seek_for_prev(&key)
                }
            };
            seek(&mut it).unwrap();
            expect_at(&it, rows, start, &format!("{name}({key:?})"));
            let mut p = start;
            for s in 0..steps {
                it.next().unwrap();
                p = step_next(p, n);
                expect_at(&it, rows, p, &format!("{name}({key:?}) + {}", s + 1));
            }
            seek(&mut it).unwrap();
            let mut p = start;
            for s in 0..steps {
                it.prev().unwrap();
                p = step_prev(p);
                expect_at(&it, rows, p, &format!("{name}({key:?}) - {}", s + 1));
            }
        }
    }
}

/// Checks a table of `rows` written with each compression; returns the
/// last one (zstd).
fn check_all(rows: &[Row], block_size: usize, steps: usize) -> Arc<Table> {
    let mut last = None;
    for c in ALL_COMPRESSIONS {
        last = Some(check_all_with(rows, opts(block_size, c), steps));
    }
    last.unwrap()
}

fn check_all_with(rows: &[Row], options: TableOptions, steps: usize) -> Arc<Table> {
    let (table, summary) = build_mapped_with(rows, options);
    assert_eq!(table.format_version(), 2);
    assert_eq!(table.summary(), &summary);
    assert_eq!(summary.entries, rows.len() as u64);
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        assert_eq!(summary.smallest, first.0);
        assert_eq!(summary.largest, last.0);
        assert_eq!(summary.min_ts, rows.iter().map(|r| r.1).min().unwrap());
        assert_eq!(summary.max_ts, rows.iter().map(|r| r.1).max().unwrap());
    }
    check_gets(&table, rows);
    check_iteration(&table, rows, steps);
    table
}

/// xorshift64*: deterministic test data without another dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `keys` user keys with 1..=4 versions each, about a fifth of them
/// tombstones, some empty values.
fn versioned_rows(seed: u64, keys: usize) -> Vec<Row> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for i in 0..keys {
        let key = format!("key{:07}", i * 3).into_bytes();
        for _ in 0..1 + rng.below(4) {
            let ts = 1 + rng.below(1000);
            let (kind, value) = if rng.below(5) == 0 {
                (ValueKind::Delete, Vec::new())
            } else {
                let len = rng.below(40) as usize;
                (
                    ValueKind::Put,
                    format!("v{i}@{ts}-").repeat(len / 8).into_bytes(),
                )
            };
            rows.push((key.clone(), ts, kind, value));
        }
    }
    normalize(rows)
}

fn put(key: &[u8], ts: Timestamp, value: &[u8]) -> Row {
    (key.to_vec(), ts, ValueKind::Put, value.to_vec())
}

fn del(key: &[u8], ts: Timestamp) -> Row {
    (key.to_vec(), ts, ValueKind::Delete, Vec::new())
}

#[test]
fn table_and_iter_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Table>();
    assert_send_sync::<TableIter>();
    fn assert_send<T: Send>() {}
    assert_send::<TableBuilder>();
}

#[test]
fn empty_table() {
    let table = check_all(&[], DEFAULT_BLOCK_SIZE, 2);
    let s = table.summary();
    assert_eq!((s.entries, s.min_ts, s.max_ts), (0, 0, 0));
    assert!(s.smallest.is_empty() && s.largest.is_empty());
    assert!(table.get(b"k", Timestamp::MAX).unwrap().is_none());
    let mut it = TableIter::new(table.clone());
    it.seek(b"").unwrap();
    assert!(!it.valid());
    it.seek_for_prev(&[0xff; 8]).unwrap();
    assert!(!it.valid());
    assert_eq!(table.bytes_read(), 0);
}

#[test]
fn single_entry_table() {
    check_all(&[put(b"only", 5, b"value")], DEFAULT_BLOCK_SIZE, 2);
    check_all(&[del(b"gone", 9)], 1, 2);
    check_all(&[put(b"k", 0, b"")], DEFAULT_BLOCK_SIZE, 2);
}

#[test]
fn many_versions_match_model() {
    // ~20K versions over ~8K keys, with tombstones.
    let rows = versioned_rows(0x5EED, 8000);
    assert!(rows.len() > 19_000, "{}", rows.len());
    // One compression only: the others are covered by the smaller tests and
    // this one is slow in debug builds.
    let table = check_all_with(&rows, opts(DEFAULT_BLOCK_SIZE, Compression::Lz4), 2);
    assert!(table.block_count().unwrap() > 50);
}

#[test]
fn small_and_odd_block_sizes() {
    let rows = versioned_rows(7, 300);
    for block_size in [0, 1, 64, 100, 4096, 1 << 20] {
        check_all(&rows, block_size, 3);
    }
}

#[test]
fn prefix_keys_order_by_user_key_first() {
    // Encoded internal keys of "a" and "a\0" do not sort bytewise in internal
    // order; the table must compare decoded keys.
    let mut rows = Vec::new();
    for (i, key) in [
        &b"\0"[..],
        b"a",
        b"a\0",
        b"a\0\0",
        b"a\xff",
        b"ab",
        b"\xff",
        b"\xff\xff",
    ]
    .into_iter()
    .enumerate()
    {
        for ts in [1, 2, 100, u64::MAX - 1, u64::MAX] {
            rows.push(put(key, ts, format!("{i}/{ts}").as_bytes()));
        }
        rows.push(del(key, 50));
    }
    let rows = normalize(rows);
    for block_size in [1, 40, 4096] {
        check_all(&rows, block_size, 4);
    }
}

#[test]
fn big_keys_and_values_span_blocks() {
    let mut rows = Vec::new();
    for (i, key_len) in [1usize, 2, 100, 4095, 4096, 5000, 65_535, 65_536]
        .into_iter()
        .enumerate()
    {
        let key = vec![b'a' + i as u8; key_len];
        rows.push(put(&key, 10, &vec![i as u8; 100_000]));
        rows.push(put(&key, 9, b""));
        rows.push(del(&key, 8));
        rows.push(put(&key, 7, &vec![7; 4097]));
    }
    let rows = normalize(rows);
    let table = check_all(&rows, DEFAULT_BLOCK_SIZE, 3);
    let big = vec![b'a' + 7; 65_536];
    let e = got(&table, &big, 9).unwrap().unwrap();
    assert_eq!((e.1, e.2, &e.3[..]), (9, ValueKind::Put, &b""[..]));
    assert_eq!(got(&table, &big, 10).unwrap().unwrap().3.len(), 100_000);
}

#[test]
fn out_of_order_add_is_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let mut b = TableBuilder::new(OsFileSystem.create(&path).unwrap(), 64);
    b.add(b"b", 5, ValueKind::Put, b"x").unwrap();
    for (key, ts) in [(&b"a"[..], 9), (b"b", 5), (b"b", 6), (b"", 1)] {
        let err = b.add(key, ts, ValueKind::Put, b"y").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{key:?}@{ts}");
    }
    // A rejected entry changes nothing: the builder carries on.
    b.add(b"b", 4, ValueKind::Delete, b"").unwrap();
    b.add(b"c", 9, ValueKind::Put, b"z").unwrap();
    let summary = b.finish().unwrap();
    assert_eq!(summary.entries, 3);
    assert_eq!((summary.min_ts, summary.max_ts), (4, 9));
    let table = Table::open(1, OsFileSystem.map(&path).unwrap()).unwrap();
    assert_eq!(got(&table, b"b", 4).unwrap().unwrap().2, ValueKind::Delete);
    assert_eq!(
        table.summary().file_size,
        std::fs::metadata(&path).unwrap().len()
    );
}

#[test]
fn data_blocks_are_verified_once_and_counted() {
    let rows = versioned_rows(3, 200);
    let (table, _) = build_mapped(&rows, 256);
    assert!(table.block_count().unwrap() > 3);
    assert_eq!(table.bytes_read(), 0);
    assert!(!table.block_verified(0));
    let first = &rows[0];
    got(&table, &first.0, Timestamp::MAX).unwrap().unwrap();
    let one_block = table.bytes_read();
    assert!(one_block > 0);
    assert!(table.block_verified(0) && !table.block_verified(1));
    got(&table, &first.0, Timestamp::MAX).unwrap().unwrap();
    assert_eq!(table.bytes_read(), 2 * one_block);

    // A full scan reads every data block once: all bytes before the index.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    write_table(&path, &rows, 256);
    let file = OsFileSystem.read(&path).unwrap();
    let table = Arc::new(Table::open(3, OsFileSystem.map(&path).unwrap()).unwrap());
    let mut it = TableIter::new(table.clone());
    it.seek_to_first().unwrap();
    while it.valid() {
        it.next().unwrap();
    }
    assert_eq!(table.bytes_read(), data_end(&file) as u64);
    assert!((0..table.block_count().unwrap()).all(|b| table.block_verified(b)));
}

#[test]
fn concurrent_readers_share_a_table() {
    let rows = Arc::new(versioned_rows(11, 2000));
    let (table, _) = build_mapped(&rows, 512);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (table, rows) = (table.clone(), rows.clone());
            std::thread::spawn(move || {
                for r in rows.iter().skip(t).step_by(3) {
                    let got = got(&table, &r.0, r.1).unwrap();
                    assert_eq!(got.as_ref(), Some(r));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Rows for the damage tests: a few blocks, small enough to flip every byte.
fn damage_rows() -> Vec<Row> {
    normalize(vec![
        put(b"apple", 3, b"red"),
        put(b"apple", 1, b"green"),
        del(b"banana", 7),
        put(b"banana", 2, b"yellow"),
        put(b"cherry", 4, b""),
        put(b"date", 9, b"brown"),
        del(b"date", 5),
        put(b"elderberry", 6, b"purple"),
        put(b"fig", 8, b"figgy"),
        put(b"grape", 2, b"vine"),
    ])
}

#[test]
fn flipped_data_byte_is_corruption() {
    let rows = damage_rows();
    let file = build_bytes(&rows, 64);
    let data_end = data_end(&file);
    assert!(data_end > 64);
    for i in 0..data_end {
        for flip in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[i] ^= flip;
            // The index is intact, so the table opens.
            let table = Arc::new(open_vec(bad.clone()).unwrap());

            // Scanning forward returns correct entries until the damaged
            // block, then Corruption.
            let mut it = TableIter::new(table.clone());
            let mut result = it.seek_to_first();
            let mut seen = 0;
            while result.is_ok() && it.valid() {
                assert_eq!(it.entry().map(row).as_ref(), rows.get(seen), "byte {i}");
                seen += 1;
                result = it.next();
            }
            let err = result.expect_err("scan must hit the damaged block");
            assert_eq!(err.kind(), ErrorKind::Corruption, "byte {i}: {err}");
            assert!(err.message().contains("000007.sst"), "{err}");
            assert!(!it.valid() && it.entry().is_none());

            // Same backwards, on a fresh table (nothing verified yet).
            let table = Arc::new(open_vec(bad.clone()).unwrap());
            let mut it = TableIter::new(table.clone());
            let mut result = it.seek_to_last();
            while result.is_ok() && it.valid() {
                result = it.prev();
            }
            assert_eq!(result.unwrap_err().kind(), ErrorKind::Corruption);

            // Point reads: right answers or Corruption, and some Corruption.
            let table = open_vec(bad).unwrap();
            let mut errors = 0;
            for r in &rows {
                match got(&table, &r.0, r.1) {
                    Ok(got) => assert_eq!(got.as_ref(), Some(r), "byte {i}"),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Corruption);
                        errors += 1;
                    }
                }
            }
            assert!(errors > 0, "byte {i}");
        }
    }
}

#[test]
fn flipped_metadata_byte_fails_open() {
    let file = build_bytes(&damage_rows(), 64);
    assert!(open_vec(file.clone()).is_ok());
    for i in data_end(&file)..file.len() {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = file.clone();
            bad[i] ^= flip;
            let err = open_vec(bad).expect_err("damaged metadata must not open");
            assert_eq!(err.kind(), ErrorKind::Corruption, "byte {i}: {err}");
        }
    }
}

#[test]
fn truncated_file_fails_open() {
    for (rows, c) in [
        (Vec::new(), Compression::None),
        (damage_rows(), Compression::None),
        (damage_rows(), Compression::Zstd),
    ] {
        let file = build_bytes_with(&rows, opts(64, c));
        for len in 0..file.len() {
            let err = open_vec(file[..len].to_vec()).expect_err("truncated");
            assert_eq!(err.kind(), ErrorKind::Corruption, "len {len}: {err}");
        }
        // Bytes appended after the footer hide the magic too.
        let mut longer = file.clone();
        longer.push(0);
        assert_eq!(open_vec(longer).unwrap_err().kind(), ErrorKind::Corruption);
    }
}

#[test]
fn unknown_version_fails_open() {
    let mut file = build_bytes(&damage_rows(), 64);
    let footer = file.len() - FOOTER_LEN;
    file[footer + 48..footer + 52].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32fast::hash(&file[footer..footer + 52]);
    file[footer + 52..footer + 56].copy_from_slice(&crc.to_le_bytes());
    let err = open_vec(file).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("version 3"), "{err}");
}

#[test]
fn model_built_from_btreemap_agrees() {
    // Cross-check the sorted-vector model itself against a BTreeMap keyed by
    // (key, Reverse(ts)), the natural encoding of internal order.
    use std::cmp::Reverse;
    let rows = versioned_rows(99, 500);
    let map: BTreeMap<_, _> = rows
        .iter()
        .map(|r| ((r.0.clone(), Reverse(r.1)), (r.2, r.3.clone())))
        .collect();
    let from_map: Vec<Row> = map
        .into_iter()
        .map(|((k, Reverse(ts)), (kind, v))| (k, ts, kind, v))
        .collect();
    assert_eq!(from_map, rows);
}

fn arb_rows() -> impl Strategy<Value = Vec<Row>> {
    // A tiny key alphabet makes shared prefixes and many versions likely.
    let key = prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 0xff]), 1..4);
    let kind = prop_oneof![Just(ValueKind::Put), Just(ValueKind::Delete)];
    let value = prop::collection::vec(any::<u8>(), 0..12);
    prop::collection::vec((key, 0u64..20, kind, value), 0..120).prop_map(normalize)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_tables_match_model(rows in arb_rows(), block_size in 0usize..300) {
        check_all(&rows, block_size, 3);
    }
}

#[path = "tests_v2.rs"]
mod v2;

#[path = "tests_hash.rs"]
mod hash;

#[path = "tests_review_s26.rs"]
mod review_s26;

#[path = "tests_end_pad.rs"]
mod end_pad;

#[path = "tests_review_endpad.rs"]
mod review_endpad;

#[path = "tests_review_starts.rs"]
mod review_starts;
