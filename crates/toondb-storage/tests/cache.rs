//! The block cache (`Options::cache_size`) and the table cache
//! (`Options::max_open_files`): reads agree with a model while a tiny cache
//! and at most two open tables churn under concurrent reads, scans, flushes
//! and compactions; compressed tables read correctly through the cache; the
//! cache never holds more than its capacity; the counters move.
//!
//! The concurrent test's model: every write of key `k` is its next version
//! `n` (a delete when `n % 5 == 0`, else a put of `value(k, n)`, which
//! embeds `n`). The writer announces a key's version before the write and
//! publishes it after the write returned; a reader notes the published
//! version before its read and the announced one after it, and what it read
//! must be one of the versions in between.

// Options are set by assignment, which works whether or not `Options` is
// `#[non_exhaustive]`.
#![allow(clippy::field_reassign_with_default)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use toondb_storage::{Compression, Database, Options, ScanOptions, Stats};

const KEYS: usize = 600;

fn key(i: usize) -> Vec<u8> {
    format!("key{i:05}").into_bytes()
}

/// Version `n` of key `i`: 8 bytes of `n`, then filler of a length that
/// varies with both: compressible for its first 16 bytes, pseudo-random
/// after, so that even compressed the live data spans more tables than
/// may be open (with all-compressible filler, zstd sometimes packed a
/// run's final state into two 8 KiB tables and the test's precondition
/// failed).
fn value(i: usize, n: u64) -> Vec<u8> {
    let mut v = n.to_be_bytes().to_vec();
    let len = (i * 7 + n as usize * 13) % 150;
    let mut x = (i as u64) << 32 ^ n ^ 0x9e37_79b9_7f4a_7c15;
    v.extend((0..len).map(|j| {
        if j < 16 {
            b"abcdefgh"[(j + i) % 8]
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }
    }));
    v
}

fn is_delete(n: u64) -> bool {
    n.is_multiple_of(5)
}

/// Checks that `got` is what version `n` (in `lo..=hi`) of key `i` holds.
fn check_read(i: usize, got: Option<&[u8]>, lo: u64, hi: u64) -> Result<(), String> {
    match got {
        None => {
            if (lo..=hi).any(is_delete) {
                Ok(())
            } else {
                Err(format!(
                    "key {i}: absent, but versions {lo}..={hi} are all puts"
                ))
            }
        }
        Some(v) => {
            let n = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| format!("key {i}: short value {v:?}"))?;
            if n < lo || n > hi || is_delete(n) {
                return Err(format!("key {i}: read version {n}, expected {lo}..={hi}"));
            }
            if v != value(i, n).as_slice() {
                return Err(format!("key {i}: version {n} has the wrong bytes"));
            }
            Ok(())
        }
    }
}

fn churn_options(compression: Compression, cache_size: usize) -> Options {
    let mut o = Options::default();
    o.memtable_size = 8 << 10;
    o.block_size = 256;
    o.compression = compression;
    o.cache_size = cache_size;
    o.max_open_files = 2;
    o.target_file_size = 8 << 10;
    o.level_base_bytes = 32 << 10;
    o.l0_compaction_trigger = 2;
    o
}

fn assert_bounded(s: &Stats) {
    assert!(
        s.block_cache.bytes <= s.block_cache.capacity,
        "cache holds {} of {} bytes",
        s.block_cache.bytes,
        s.block_cache.capacity
    );
}

/// Reads every key and a full scan; both must equal `model` (key index →
/// final version) exactly.
fn check_final(db: &Database, model: &[u64]) {
    let mut expected = BTreeMap::new();
    for (i, &n) in model.iter().enumerate() {
        let got = db.get(key(i)).unwrap();
        if n == 0 || is_delete(n) {
            assert_eq!(got, None, "key {i} at version {n}");
        } else {
            assert_eq!(got, Some(value(i, n)), "key {i} at version {n}");
            expected.insert(key(i), value(i, n));
        }
    }
    let scanned: BTreeMap<Vec<u8>, Vec<u8>> = db
        .iter(ScanOptions::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(scanned.len(), expected.len());
    assert!(scanned == expected, "a full scan differs from the model");
}

fn run_churn(compression: Compression, cache_size: usize, duration: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let options = churn_options(compression, cache_size);
    let db = Arc::new(Database::open_with(dir.path(), options.clone()).unwrap());
    let versions: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let announced: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + duration;

    let writer = {
        let (db, versions, stop) = (db.clone(), versions.clone(), stop.clone());
        let announced = announced.clone();
        thread::spawn(move || {
            let mut x = 0x9e37_79b9_7f4a_7c15u64;
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x % KEYS as u64) as usize;
                let n = versions[i].load(Ordering::Relaxed) + 1;
                announced[i].store(n, Ordering::Release);
                if is_delete(n) {
                    db.delete(key(i)).unwrap();
                } else {
                    db.put(key(i), value(i, n)).unwrap();
                }
                versions[i].store(n, Ordering::Release);
                writes += 1;
            }
            writes
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (db, versions, stop) = (db.clone(), versions.clone(), stop.clone());
            let announced = announced.clone();
            thread::spawn(move || {
                let mut reads = 0u64;
                let mut i = r * 37;
                while !stop.load(Ordering::Relaxed) {
                    i = (i + 101) % KEYS;
                    let lo = versions[i].load(Ordering::Acquire);
                    let got = db.get(key(i)).unwrap();
                    let hi = announced[i].load(Ordering::Acquire);
                    check_read(i, got.as_deref(), lo, hi).unwrap();
                    reads += 1;
                    if reads.is_multiple_of(500) {
                        assert_bounded(&db.stats());
                    }
                }
                reads
            })
        })
        .collect();
    let scanner = {
        let (db, stop) = (db.clone(), stop.clone());
        thread::spawn(move || {
            let mut scans = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut last: Option<Vec<u8>> = None;
                for entry in db.iter(ScanOptions::default()).unwrap() {
                    let (k, v) = entry.unwrap();
                    assert!(last.as_ref().is_none_or(|l| *l < k), "scan out of order");
                    let i: usize = std::str::from_utf8(&k[3..]).unwrap().parse().unwrap();
                    let n = u64::from_be_bytes(v[..8].try_into().unwrap());
                    assert_eq!(v, value(i, n), "key {i}: scanned version {n} is wrong");
                    last = Some(k);
                }
                scans += 1;
            }
            scans
        })
    };
    // Flushes and manual compactions on top of the background ones.
    let mut round = 0;
    while Instant::now() < deadline {
        thread::sleep(Duration::from_millis(40));
        if round % 4 == 3 {
            db.compact().unwrap();
        } else {
            db.flush().unwrap();
        }
        round += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    let scans = scanner.join().unwrap();
    assert!(
        writes > 1000 && reads > 1000 && scans > 0,
        "{writes} {reads} {scans}"
    );

    let model: Vec<u64> = versions.iter().map(|v| v.load(Ordering::Relaxed)).collect();
    check_final(&db, &model);
    db.flush().unwrap();
    // Background compaction settles first, so the tables open at the end
    // are ones the reads below opened (their indexes decoded and charged),
    // not a compaction output nothing has read yet (which the meta
    // assertion below would miss: it did once, on an idle machine).
    let settle = Instant::now() + Duration::from_secs(60);
    let mut idle = 0;
    while idle < 2 {
        let s = db.stats();
        idle = if s.maintenance_busy || s.immutable_memtables > 0 {
            0
        } else {
            idle + 1
        };
        assert!(Instant::now() < settle, "compaction did not settle: {s:?}");
        thread::sleep(Duration::from_millis(5));
    }
    check_final(&db, &model);

    let s = db.stats();
    assert_bounded(&s);
    assert!(
        s.tables > 2,
        "the test needs more tables than may be open: {s:?}"
    );
    assert!(s.open_tables <= 2, "{} tables open", s.open_tables);
    assert!(s.table_cache_misses > 0 && s.table_cache_hits > 0, "{s:?}");
    assert!(s.block_cache.capacity == cache_size as u64);
    assert!(
        s.block_cache.meta_bytes + s.block_cache.meta_overflow_bytes > 0,
        "open tables' indexes are accounted: {s:?}"
    );
    if compression != Compression::None {
        assert!(s.block_cache.misses > 0 && s.block_cache.hits > 0, "{s:?}");
        assert!(
            s.block_cache.evictions > 0,
            "a tiny cache must evict: {s:?}"
        );
    }

    // Every table is reopened from scratch after a reopen.
    drop(db);
    let db = Database::open_with(dir.path(), options).unwrap();
    check_final(&db, &model);
    let s = db.stats();
    assert!(s.open_tables <= 2);
    assert_bounded(&s);
}

#[test]
fn tiny_caches_agree_with_the_model_under_concurrent_reads_flushes_and_compactions_lz4() {
    run_churn(Compression::Lz4, 12 << 10, Duration::from_secs(4));
}

#[test]
fn tiny_caches_agree_with_the_model_under_concurrent_reads_flushes_and_compactions_zstd() {
    run_churn(Compression::Zstd, 4 << 10, Duration::from_secs(3));
}

#[test]
fn tiny_caches_agree_with_the_model_uncompressed() {
    // Only indexes and filters are cached; data blocks come from the maps.
    run_churn(Compression::None, 8 << 10, Duration::from_secs(2));
}

fn load(db: &Database, n: usize) {
    for i in 0..n {
        db.put(key(i), value(i, 1)).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
}

#[test]
fn compressed_tables_read_through_the_cache_and_hit_on_the_second_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default();
    o.compression = Compression::Lz4;
    o.cache_size = 8 << 20;
    let db = Database::open_with(dir.path(), o).unwrap();
    load(&db, 20_000);
    let before = db.stats().block_cache;
    for i in 0..20_000 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    let first = db.stats().block_cache;
    assert!(first.misses > before.misses, "{first:?}");
    for i in 0..20_000 {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    let second = db.stats().block_cache;
    // Everything fits: the second pass decompresses nothing.
    assert_eq!(second.misses, first.misses, "{second:?}");
    assert!(second.hits >= first.hits + 20_000, "{second:?}");
    assert_eq!(second.evictions, 0);
    assert!(second.bytes > 0 && second.bytes <= second.capacity);
}

#[test]
fn no_cache_reads_compressed_tables_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default();
    o.compression = Compression::Zstd;
    o.cache_size = 0;
    o.max_open_files = 1;
    let db = Database::open_with(dir.path(), o).unwrap();
    load(&db, 5_000);
    for i in (0..5_000).rev() {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    let s = db.stats();
    assert_eq!(s.block_cache, Default::default());
    assert!(s.open_tables <= 1);
}

#[test]
fn an_iterator_keeps_its_table_open_while_the_table_cache_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default();
    o.max_open_files = 1;
    o.auto_compaction = false;
    o.compression = Compression::Lz4;
    o.cache_size = 64 << 10;
    let db = Database::open_with(dir.path(), o).unwrap();
    // Three tables with disjoint key ranges.
    for t in 0..3 {
        for i in t * 1000..(t + 1) * 1000 {
            db.put(key(i), value(i, 1)).unwrap();
        }
        db.flush().unwrap();
    }
    assert_eq!(db.stats().tables, 3);
    let mut it = db.iter(ScanOptions::default()).unwrap();
    let mut seen = 0;
    while seen < 3000 {
        let (k, v) = it.next().unwrap().unwrap();
        assert_eq!(k, key(seen));
        assert_eq!(v, value(seen, 1));
        seen += 1;
        if seen % 100 == 0 {
            // Reads of other tables close the iterator's table under it.
            for j in [2999 - seen % 3000, seen / 2, 1500] {
                assert_eq!(db.get(key(j)).unwrap(), Some(value(j, 1)));
            }
            assert!(db.stats().open_tables <= 1);
        }
    }
    assert!(it.next().is_none());
    assert!(db.stats().table_cache_misses > 10);
}

#[test]
fn compaction_reads_neither_fill_nor_count_in_the_block_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Options::default();
    o.compression = Compression::Lz4;
    o.cache_size = 8 << 20;
    o.auto_compaction = false;
    let db = Database::open_with(dir.path(), o).unwrap();
    for t in 0..4 {
        for i in (t..20_000).step_by(4) {
            db.put(key(i), value(i, 1)).unwrap();
        }
        db.flush().unwrap();
    }
    let before = db.stats();
    assert_eq!(before.tables, 4);
    db.compact().unwrap();
    let after = db.stats();
    // Hundreds of compressed blocks were read, none through the cache.
    assert!(after.compaction_bytes_read > 500_000, "{after:?}");
    assert!(
        after.block_cache.misses == before.block_cache.misses,
        "{:?} -> {:?}",
        before.block_cache,
        after.block_cache
    );
    assert!(
        after.block_cache.bytes - after.block_cache.meta_bytes < 16 << 10,
        "{:?}",
        after.block_cache
    );
    for i in (0..20_000).step_by(97) {
        assert_eq!(db.get(key(i)).unwrap(), Some(value(i, 1)));
    }
    assert!(db.stats().block_cache.misses > after.block_cache.misses);
}
