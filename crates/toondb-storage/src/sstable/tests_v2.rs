//! Version-2 specifics: compression, block types, meta blocks, the bloom
//! filter, entry metadata; and version-1 files read by this code.

use super::*;

/// Rows whose values compress well (JSON-like text), so LZ4 and zstd really
/// store compressed blocks.
fn compressible_rows(n: usize) -> Vec<Row> {
    normalize(
        (0..n)
            .map(|i| {
                let v = format!(r#"{{"id":{i},"name":"user {i}","tags":["a","b"],"active":true}}"#);
                put(
                    format!("user/{i:05}").as_bytes(),
                    10 + i as u64,
                    v.as_bytes(),
                )
            })
            .collect(),
    )
}

fn stored_types(table: &Table, file: &[u8]) -> Vec<u8> {
    (0..table.block_count().unwrap())
        .map(|b| {
            let (off, len) = table.block_region(b);
            file[off + len - 5]
        })
        .collect()
}

#[test]
fn each_compression_round_trips_and_compressed_blocks_are_smaller() {
    let rows = compressible_rows(400);
    let mut sizes = Vec::new();
    for c in ALL_COMPRESSIONS {
        let table = check_all_with(&rows, opts(1024, c), 2);
        let file = build_bytes_with(&rows, opts(1024, c));
        let types = stored_types(&open_vec(file.clone()).unwrap(), &file);
        let want = match c {
            Compression::None => compress::TYPE_NONE,
            Compression::Lz4 => compress::TYPE_LZ4,
            Compression::Zstd => compress::TYPE_ZSTD,
        };
        assert!(types.iter().all(|&t| t == want), "{c:?}: {types:?}");
        sizes.push(table.summary().file_size);
    }
    assert!(
        sizes[1] < sizes[0] * 3 / 4 && sizes[2] < sizes[1],
        "{sizes:?}"
    );
}

#[test]
fn flipped_byte_in_compressed_blocks_is_corruption() {
    let rows = compressible_rows(40);
    for c in [Compression::Lz4, Compression::Zstd] {
        let file = build_bytes_with(&rows, opts(512, c));
        let end = data_end(&file);
        for i in 0..end {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let table = Arc::new(open_vec(bad).unwrap());
            let mut it = TableIter::new(table.clone());
            let mut result = it.seek_to_first();
            let mut seen = 0;
            while result.is_ok() && it.valid() {
                assert_eq!(
                    it.entry().map(row).as_ref(),
                    rows.get(seen),
                    "{c:?} byte {i}"
                );
                seen += 1;
                result = it.next();
            }
            let err = result.expect_err("scan must hit the damaged block");
            assert_eq!(err.kind(), ErrorKind::Corruption, "{c:?} byte {i}: {err}");
            for r in &rows {
                match got(&table, &r.0, r.1) {
                    Ok(g) => assert_eq!(g.as_ref(), Some(r), "{c:?} byte {i}"),
                    Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption),
                }
            }
        }
    }
}

/// Rewrites data block `block`'s type byte and fixes its CRC.
fn set_block_type(file: &mut [u8], table: &Table, block: usize, block_type: u8) {
    let (off, len) = table.block_region(block);
    file[off + len - 5] = block_type;
    let crc = crc32fast::hash(&file[off..off + len - 4]);
    file[off + len - 4..off + len].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn unknown_block_type_is_corruption_not_panic() {
    let rows = damage_rows();
    let file = build_bytes_with(&rows, opts(64, Compression::None));
    let table = open_vec(file.clone()).unwrap();
    for block_type in [3u8, 9, 0xff] {
        let mut bad = file.clone();
        set_block_type(&mut bad, &table, 0, block_type);
        let table = Arc::new(open_vec(bad).unwrap());
        let err = got(&table, &rows[0].0, rows[0].1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(
            err.message()
                .contains(&format!("unsupported block type {block_type}")),
            "{err}"
        );
        let mut it = TableIter::new(table);
        assert_eq!(
            it.seek_to_first().unwrap_err().kind(),
            ErrorKind::Corruption
        );
    }
    // A raw block labelled compressed (CRC fixed up) does not decompress.
    for block_type in [compress::TYPE_LZ4, compress::TYPE_ZSTD] {
        let mut bad = file.clone();
        set_block_type(&mut bad, &table, 0, block_type);
        let table = open_vec(bad).unwrap();
        let err = got(&table, &rows[0].0, rows[0].1).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}

#[test]
fn unknown_table_kind_fails_open() {
    let relabel = |kind: u8| {
        let mut file = build_bytes(&damage_rows(), 64);
        let footer = file.len() - FOOTER_LEN;
        file[footer + 32] = kind;
        let crc = crc32fast::hash(&file[footer..footer + 52]);
        file[footer + 52..footer + 56].copy_from_slice(&crc.to_le_bytes());
        open_vec(file).unwrap_err()
    };
    let err = relabel(2);
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("unsupported table kind 2"), "{err}");
    // Kind 1 (range tombstones) promises a rangedel block.
    let err = relabel(1);
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("rangedel"), "{err}");
}

/// A kind 1 table: the tombstones come back from the `rangedel` block, the
/// summary's key range and timestamps cover them (the data properties stay
/// as they are), a table of tombstones only works, and a flipped byte in
/// the block fails open.
#[test]
fn range_tombstones_round_trip_and_widen_the_summary() {
    use crate::range_del::RangeTombstone;
    let t = |s: &str, e: &[u8], ts| RangeTombstone {
        start: s.as_bytes().to_vec(),
        end: e.to_vec(),
        ts,
    };
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, rows: &[Row], tombs: &[RangeTombstone]| {
        let path = dir.path().join(name);
        let mut b = TableBuilder::with_options(
            OsFileSystem.create(&path).unwrap(),
            opts(256, Compression::None),
        );
        for (k, ts, kind, v) in rows {
            b.add(k, *ts, *kind, v).unwrap();
        }
        for x in tombs.iter().rev() {
            b.add_range_tombstone(x.clone());
        }
        (b.finish().unwrap(), OsFileSystem.read(&path).unwrap())
    };
    let rows = vec![
        (b"m".to_vec(), 5, ValueKind::Put, b"v".to_vec()),
        (b"n".to_vec(), 6, ValueKind::Put, b"w".to_vec()),
    ];
    let tombs = vec![t("c", b"e", 9), t("k", b"z\x00", 2)];
    let (summary, bytes) = build("a.sst", &rows, &tombs);
    assert_eq!(
        (summary.smallest.as_slice(), summary.largest.as_slice()),
        (&b"c"[..], &b"z"[..])
    );
    assert_eq!((summary.min_ts, summary.max_ts, summary.entries), (2, 9, 2));
    let table = open_vec(bytes.clone()).unwrap();
    assert_eq!(table.range_dels().tombstones(), &tombs[..]);
    assert_eq!(table.summary().smallest, summary.smallest);
    assert_eq!(table.summary().largest, summary.largest);
    assert_eq!(table.data_max_ts(), 6);
    assert_eq!(got(&table, b"m", 9).unwrap().unwrap().3, b"v");
    // Tombstones only.
    let (only, only_bytes) = build("b.sst", &[], &tombs[..1]);
    assert_eq!(
        (
            only.entries,
            only.smallest.as_slice(),
            only.largest.as_slice()
        ),
        (0, &b"c"[..], &b"e"[..])
    );
    let table = open_vec(only_bytes).unwrap();
    assert!(got(&table, b"d", 9).unwrap().is_none());
    assert_eq!(table.range_dels().tombstones().len(), 1);
    // A flipped byte in the rangedel block (it precedes the properties).
    let at = bytes.windows(4).position(|w| w == b"\x01c\x01e").unwrap();
    let mut bad = bytes.clone();
    bad[at + 1] ^= 1;
    let err = open_vec(bad).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(err.message().contains("rangedel"), "{err}");
}

#[test]
fn unknown_meta_blocks_are_ignored() {
    let rows = versioned_rows(5, 100);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.sst");
    let mut b = TableBuilder::with_options(
        OsFileSystem.create(&path).unwrap(),
        opts(256, Compression::Lz4),
    );
    for (k, ts, kind, v) in &rows {
        b.add(k, *ts, *kind, v).unwrap();
    }
    // Before, between and after the known names.
    b.add_meta_block(b"column.region.0", &[1, 2, 3]);
    b.add_meta_block(b"a.future.thing", b"");
    b.add_meta_block(b"zzz", &[0xff; 100]);
    b.finish().unwrap();
    let table = Arc::new(Table::open(1, OsFileSystem.map(&path).unwrap()).unwrap());
    check_gets(&table, &rows);
    check_iteration(&table, &rows, 1);
    assert!(table.has_filter());
}

#[test]
fn bloom_filter_skips_data_blocks_for_absent_keys() {
    let rows: Vec<Row> = (0..4000u32)
        .map(|i| put(format!("key{:06}", 2 * i).as_bytes(), 5, b"value"))
        .collect();
    // Without a hash index, which would answer in the filter's place.
    let options = TableOptions {
        hash_index: false,
        ..opts(512, Compression::default())
    };
    let (table, _) = build_mapped_with(&rows, options);
    let c = table.counters();
    let reads = |c: &TableCounters| {
        c.data_block_reads
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    // Absent keys inside the table's key range: the filter rules out nearly
    // all of them (about 1% false positives at 10 bits per key).
    for i in 0..4000u32 {
        let key = format!("key{:06}", 2 * i + 1);
        assert!(got(&table, key.as_bytes(), Timestamp::MAX)
            .unwrap()
            .is_none());
    }
    let absent_reads = reads(c);
    let useful = c.bloom_useful.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        c.bloom_checked.load(std::sync::atomic::Ordering::Relaxed),
        4000
    );
    assert!(
        absent_reads <= 80,
        "{absent_reads} data block reads for 4000 absent keys"
    );
    assert_eq!(useful + absent_reads, 4000);
    // Present keys are never ruled out: one block read each.
    for r in &rows {
        assert_eq!(got(&table, &r.0, Timestamp::MAX).unwrap().as_ref(), Some(r));
    }
    assert_eq!(reads(c), absent_reads + 4000);
    assert_eq!(
        c.bloom_useful.load(std::sync::atomic::Ordering::Relaxed),
        useful
    );
}

#[test]
fn tables_without_a_filter_read_blocks_for_absent_keys() {
    let rows: Vec<Row> = (0..100u32)
        .map(|i| put(format!("key{:06}", 2 * i).as_bytes(), 5, b"value"))
        .collect();
    let options = TableOptions {
        bloom_bits_per_key: 0,
        hash_index: false,
        ..opts(512, Compression::None)
    };
    let (table, _) = build_mapped_with(&rows, options);
    assert!(!table.has_filter());
    assert!(got(&table, b"key000001", Timestamp::MAX).unwrap().is_none());
    let c = table.counters();
    assert_eq!(
        c.data_block_reads
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(
        c.bloom_checked.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

fn fixture_table(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1-db")
        .join(name);
    std::fs::read(path).unwrap()
}

#[test]
fn version_1_tables_are_read() {
    for name in ["000004.sst", "000006.sst"] {
        let file = fixture_table(name);
        assert_eq!(&file[file.len() - 8..], b"TOONSST1");
        let table = Arc::new(open_vec(file.clone()).unwrap());
        assert_eq!(table.format_version(), 1);
        assert!(!table.has_filter());
        let mut rows = Vec::new();
        let mut it = TableIter::new(table.clone());
        it.seek_to_first().unwrap();
        while let Some(e) = it.entry() {
            rows.push(row(e));
            it.next().unwrap();
        }
        assert_eq!(rows.len() as u64, table.summary().entries);
        assert!(rows.len() > 100);
        check_gets(&table, &rows);
        check_iteration(&table, &rows, 1);
        // Damage anywhere is still detected the version-1 way.
        for i in (0..file.len()).step_by(7) {
            let mut bad = file.clone();
            bad[i] ^= 0x01;
            let Ok(table) = open_vec(bad) else { continue };
            let table = Arc::new(table);
            let mut it = TableIter::new(table);
            let mut result = it.seek_to_first();
            while result.is_ok() && it.valid() {
                result = it.next();
            }
            assert_eq!(
                result.unwrap_err().kind(),
                ErrorKind::Corruption,
                "{name} byte {i}"
            );
        }
    }
}

fn arb_options() -> impl Strategy<Value = TableOptions> {
    (
        0usize..300,
        prop::sample::select(ALL_COMPRESSIONS.to_vec()),
        prop::sample::select(vec![0u32, 1, 4, 10, 40]),
        any::<bool>(),
    )
        .prop_map(
            |(block_size, compression, bloom_bits_per_key, hash_index)| TableOptions {
                block_size,
                compression,
                bloom_bits_per_key,
                hash_index,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Builder then reader against a BTreeMap of random versions, with
    /// random block size, compression and filter size.
    #[test]
    fn random_tables_match_btreemap(
        entries in prop::collection::btree_map(
            (prop::collection::vec(any::<u8>(), 0..6), 0u64..30),
            (any::<bool>(), prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0]), 0..60)),
            0..150,
        ),
        options in arb_options(),
    ) {
        let rows = normalize(
            entries
                .into_iter()
                .map(|((k, ts), (put, v))| {
                    let kind = if put { ValueKind::Put } else { ValueKind::Delete };
                    (k, ts, kind, v)
                })
                .collect(),
        );
        check_all_with(&rows, options, 2);
    }
}

/// The measurement behind the default compression (docs/performance.md,
/// "Table compression"). Run in release:
/// `cargo test --release -p toondb-storage --lib measure_compression -- --ignored --nocapture`
#[test]
#[ignore = "measurement, not a test; run in release"]
fn measure_compression() {
    use std::time::Instant;
    const N: usize = 200_000;
    let mut rng = Rng(0x00C0_FFEE);
    let json: Vec<Row> = (0..N)
        .map(|i| {
            let mut v = format!(
                r#"{{"id":{i},"name":"user {i}","email":"user{i}@example.com","active":{},"score":{}}}"#,
                i % 3 == 0,
                rng.below(100_000)
            );
            v.truncate(100);
            while v.len() < 100 {
                v.push(' ');
            }
            put(format!("key{:013}", i * 7).as_bytes(), 1, v.as_bytes())
        })
        .collect();
    let random: Vec<Row> = json
        .iter()
        .map(|r| {
            let v: Vec<u8> = (0..100).map(|_| rng.next() as u8).collect();
            (r.0.clone(), r.1, r.2, v)
        })
        .collect();
    let probes: Vec<usize> = (0..N).map(|_| rng.below(N as u64) as usize).collect();
    for (name, rows) in [("json", &json), ("random", &random)] {
        let raw: usize = rows.iter().map(|r| r.0.len() + r.3.len()).sum();
        for c in ALL_COMPRESSIONS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("t.sst");
            let t = Instant::now();
            let summary = write_table_with(&path, rows, opts(DEFAULT_BLOCK_SIZE, c));
            let build = t.elapsed();
            let table = Table::open(1, OsFileSystem.map(&path).unwrap()).unwrap();
            // Warm the page cache and the verified bits, then time.
            for r in rows.iter() {
                table.get(&r.0, Timestamp::MAX).unwrap();
            }
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                let mut sum = 0usize;
                for &p in &probes {
                    let g = table.get(&rows[p].0, Timestamp::MAX).unwrap().unwrap();
                    sum += g.entry().value.len();
                }
                assert_eq!(sum, N * 100);
                best = best.min(t.elapsed().as_secs_f64());
            }
            let t = Instant::now();
            let mut it = TableIter::new(Arc::new(table));
            it.seek_to_first().unwrap();
            let mut n = 0;
            while it.valid() {
                n += 1;
                it.next().unwrap();
            }
            assert_eq!(n, N);
            let scan = t.elapsed();
            println!(
                "{name:6} {c:5?}: file {:>9} bytes ({:.2} of raw {raw}), build {:>6.1} ms, \
                 point reads {:>5.0} K/s, scan {:>6.1} ms",
                summary.file_size,
                summary.file_size as f64 / raw as f64,
                build.as_secs_f64() * 1e3,
                N as f64 / best / 1e3,
                scan.as_secs_f64() * 1e3,
            );
        }
    }
}

/// Open reads only the end of the file; the index is checked on the first
/// read and the filter on the first point read, which report their damage
/// as corruption (and keep reporting it), while an undamaged table reads
/// normally. Iterators do not read the filter. (Without a hash index: a
/// table with one reads that instead of the filter, see tests_hash.rs.)
#[test]
fn index_and_filter_are_checked_on_first_read_not_at_open() {
    let rows = damage_rows();
    let file = build_bytes_with(
        &rows,
        TableOptions {
            hash_index: false,
            ..opts(64, Compression::None)
        },
    );
    let table = Table::open(7, Arc::new(VecBytes(file.clone()))).unwrap();
    assert!(!table.meta_loaded(), "open decoded the index");
    let (user_key, ts, _, value) = rows[0].clone();
    let got = table.get(&user_key, ts).unwrap().unwrap();
    assert_eq!(got.entry().value, &value[..]);
    assert!(table.meta_loaded());

    let (index, filter) = Table::open(7, Arc::new(VecBytes(file.clone())))
        .unwrap()
        .meta_regions();
    let filter = filter.expect("the table has a bloom filter");
    for at in [index.start + 1, index.end - 2, filter.start, filter.end - 1] {
        let mut bad = file.clone();
        bad[at] ^= 0x40;
        let table = Table::open(7, Arc::new(VecBytes(bad)))
            .expect("open does not read the index or filter");
        for _ in 0..2 {
            let err = table.get(&user_key, ts).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "byte {at}: {err}");
        }
        let mut it = TableIter::new(Arc::new(table));
        if index.contains(&at) {
            let err = it.seek_to_first().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "byte {at}: {err}");
        } else {
            // Iterators never read the filter (so a cold scan reads only
            // the blocks it needs): a damaged one does not stop a scan.
            it.seek_to_first().unwrap();
            let mut n = 0;
            while it.entry().is_some() {
                n += 1;
                it.next().unwrap();
            }
            assert_eq!(n, rows.len(), "byte {at}");
        }
    }
}

/// The index search hints: keys sharing a long prefix, many blocks whose
/// hints tie (keys that differ only past the 8 hinted bytes), keys shorter
/// than the shared prefix, versions of one key spread over blocks, and
/// probes inside and outside the prefix.
#[test]
fn index_hints_agree_with_the_model() {
    let mut rows = Vec::new();
    for i in 0..300u64 {
        // Same 8 bytes after the shared prefix for runs of 50 keys.
        let key = format!("tenant/0042/users/{:08}/{:06}", i / 50, i);
        rows.push(put(key.as_bytes(), 5 + i % 3, b"v"));
        rows.push(put(key.as_bytes(), 2, b"old"));
    }
    for ts in 1..40 {
        rows.push(put(b"tenant/0042/users/", ts, b"short"));
    }
    rows.push(put(b"tenant/0042/u", 9, b"shorter"));
    let rows = normalize(rows);
    let table = check_all_with(&rows, opts(128, Compression::None), 3);
    for probe in [
        &b"tenant/0042/users/0000000"[..],
        b"tenant/0042/users/00000009/999999",
        b"tenant/0042/v",
        b"tenant/0041/zzzz",
        b"tenant",
        b"a",
        b"z",
    ] {
        for snap in [0, 3, Timestamp::MAX] {
            let want = model_get(&rows, probe, snap).cloned();
            let got = table.get(probe, snap).unwrap().map(|g| row(g.entry()));
            assert_eq!(got, want, "{}", probe.escape_ascii());
        }
    }
}
