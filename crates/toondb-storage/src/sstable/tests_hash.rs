//! The hash index (`index.hash`): point reads through it agree with the
//! same table read without it and with a BTreeMap model; tables without it
//! (older files, unfit tables, unknown versions) read the old way; damage
//! is reported, never answered wrongly; counters; residency.

use std::cmp::Reverse;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use super::*;
use crate::sstable::bloom::bloom_hash;
use crate::sstable::hash_index;

type Model = BTreeMap<(Vec<u8>, Reverse<Timestamp>), (ValueKind, Vec<u8>)>;

fn model_of(rows: &[Row]) -> Model {
    rows.iter()
        .map(|(k, ts, kind, v)| ((k.clone(), Reverse(*ts)), (*kind, v.clone())))
        .collect()
}

/// The newest version of `key` at or below `snap`, from the BTreeMap.
fn btree_get(model: &Model, key: &[u8], snap: Timestamp) -> Option<Row> {
    model
        .range((key.to_vec(), Reverse(snap))..)
        .next()
        .filter(|((k, _), _)| k == key)
        .map(|((k, Reverse(ts)), (kind, v))| (k.clone(), *ts, *kind, v.clone()))
}

fn with_hash(block_size: usize, compression: Compression, hash_index: bool) -> TableOptions {
    TableOptions {
        hash_index,
        ..opts(block_size, compression)
    }
}

/// A table whose hash index has version-1 slots (entry numbers), as
/// builds before version 2 wrote them.
fn build_version_1(rows: &[Row], options: TableOptions) -> Arc<Table> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(table_file_name(7));
    let mut b = TableBuilder::with_options(OsFileSystem.create(&path).unwrap(), options);
    b.hash_index_version_1();
    for (k, ts, kind, v) in rows {
        b.add(k, *ts, *kind, v).unwrap();
    }
    b.finish().unwrap();
    Arc::new(Table::open(7, OsFileSystem.map(&path).unwrap()).unwrap())
}

/// Every probe key at many snapshots, each read twice (the first read of a
/// block verifies it; later ones of an uncompressed block decode the entry
/// in place): the table with a hash index, the same rows with a version-1
/// hash index, the rows written without one, and the BTreeMap agree.
fn check_against_unhashed(rows: &[Row], block_size: usize, compression: Compression) -> bool {
    let (hashed, _) = build_mapped_with(rows, with_hash(block_size, compression, true));
    let v1 = build_version_1(rows, with_hash(block_size, compression, true));
    let (plain, _) = build_mapped_with(rows, with_hash(block_size, compression, false));
    assert!(!plain.has_hash_index());
    assert!(
        rows.windows(2).all(|w| w[0].0 <= w[1].0),
        "rows must be in key order"
    );
    let model = model_of(rows);
    let mut timestamps: Vec<Timestamp> = rows.iter().map(|r| r.1).collect();
    timestamps.sort_unstable();
    timestamps.dedup();
    for key in probes(rows) {
        let mut snaps = vec![0, 1, Timestamp::MAX];
        for &ts in timestamps
            .iter()
            .step_by(timestamps.len().div_ceil(12).max(1))
        {
            snaps.extend([ts.saturating_sub(1), ts, ts + 1]);
        }
        for r in versions_of(rows, &key) {
            snaps.extend([r.1, r.1.saturating_sub(1), r.1.saturating_add(1)]);
        }
        for snap in snaps {
            let want = btree_get(&model, &key, snap);
            for round in 0..2 {
                let a = got(&hashed, &key, snap).unwrap();
                let o = got(&v1, &key, snap).unwrap();
                assert_eq!(
                    a,
                    want,
                    "hashed get({:?}, {snap}) #{round}",
                    key.escape_ascii()
                );
                assert_eq!(
                    o,
                    want,
                    "version 1 get({:?}, {snap}) #{round}",
                    key.escape_ascii()
                );
            }
            let b = got(&plain, &key, snap).unwrap();
            assert_eq!(b, want, "plain get({:?}, {snap})", key.escape_ascii());
        }
    }
    hashed.has_hash_index()
}

/// Random keys (empty, short, long), 1..=6 versions each, a fifth of
/// them tombstones.
fn random_rows(seed: u64, keys: usize) -> Vec<Row> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for _ in 0..keys {
        let key: Vec<u8> = match rng.below(10) {
            0 => Vec::new(),
            1 => vec![b'L'; 200 + rng.below(3000) as usize],
            2 => vec![0xff; 1 + rng.below(3) as usize],
            _ => format!("k{}", rng.below(keys as u64 * 4)).into_bytes(),
        };
        for _ in 0..1 + rng.below(6) {
            let ts = 1 + rng.below(300);
            if rng.below(5) == 0 {
                rows.push(del(&key, ts));
            } else {
                let v = vec![b'v'; rng.below(50) as usize];
                rows.push(put(&key, ts, &v));
            }
        }
    }
    normalize(rows)
}

/// One seed's rows in every block size, with and without compression.
fn hash_index_reads_match_for_seed(seed: u64) {
    let rows = random_rows(seed, 300);
    for block_size in [0usize, 64, 512, 4096, 1 << 20] {
        for c in [Compression::None, Compression::Lz4] {
            assert!(
                check_against_unhashed(&rows, block_size, c),
                "seed {seed} block {block_size}: no hash index written"
            );
        }
    }
}

/// Without the blocks' starts (a file of 4 GiB or more keeps none), a read
/// decoding an entry in place takes its block's start from the handle:
/// the same answers as the model, on the second read of each block too.
#[test]
fn reads_without_block_starts_match_the_model() {
    let rows = random_rows(5, 400);
    super::table::NO_BLOCK_STARTS.with(|c| c.set(true));
    let (table, _) = build_mapped_with(&rows, with_hash(512, Compression::None, true));
    let kept = table.keeps_block_starts();
    let agreed = check_against_unhashed(&rows, 512, Compression::None);
    super::table::NO_BLOCK_STARTS.with(|c| c.set(false));
    assert!(!kept.unwrap(), "the hook left the starts in place");
    assert!(agreed, "no hash index written");
    let (table, _) = build_mapped_with(&rows, with_hash(512, Compression::None, true));
    assert!(table.keeps_block_starts().unwrap());
}

// Seeds 1..=4, one test each so the test harness runs them in parallel
// (this was the lib suite's longest test, ~36 s alone at opt-level 1,
// most of it decompressing the one-block tables on every read).
#[test]
fn hash_index_reads_match_the_model_and_the_unhashed_table_seed_1() {
    hash_index_reads_match_for_seed(1);
}

#[test]
fn hash_index_reads_match_the_model_and_the_unhashed_table_seed_2() {
    hash_index_reads_match_for_seed(2);
}

#[test]
fn hash_index_reads_match_the_model_and_the_unhashed_table_seed_3() {
    hash_index_reads_match_for_seed(3);
}

#[test]
fn hash_index_reads_match_the_model_and_the_unhashed_table_seed_4() {
    hash_index_reads_match_for_seed(4);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A tiny key alphabet: shared prefixes, the empty key, many versions.
    #[test]
    fn random_hashed_tables_match_the_model(rows in arb_rows(), block_size in 0usize..300) {
        prop_assert!(check_against_unhashed(&rows, block_size, Compression::None));
    }
}

/// Many versions of one key spread over several blocks: reads at old
/// snapshots walk forward from the newest, and past a block end (or a long
/// walk) fall back to the binary search.
#[test]
fn many_versions_across_blocks() {
    let mut rows = vec![put(b"a", 1, b"a1"), put(b"z", 1, b"z1")];
    for ts in 1..=200u64 {
        if ts % 7 == 0 {
            rows.push(del(b"m", ts));
        } else {
            rows.push(put(b"m", ts, format!("m{ts}").as_bytes()));
        }
    }
    let rows = normalize(rows);
    for block_size in [0usize, 32, 200, 100_000] {
        assert!(check_against_unhashed(&rows, block_size, Compression::None));
    }
}

/// Version 1: a block with more entries than a slot's 16-bit entry number
/// can name: the table is written without a hash index and read the old
/// way. Version 2 names entries by byte offset and keeps its index.
#[test]
fn too_many_entries_in_a_block_means_no_version_1_hash_index() {
    let rows: Vec<Row> = (0..70_000u32)
        .map(|i| put(&i.to_be_bytes(), 1, b""))
        .collect();
    let table = build_version_1(&rows, with_hash(4 << 20, Compression::None, true));
    assert_eq!(table.block_count().unwrap(), 1);
    assert!(!table.has_hash_index());
    assert!(table.hash_region().is_none());
    for i in (0..70_000u32).step_by(997) {
        assert_eq!(
            got(&table, &i.to_be_bytes(), 5).unwrap().as_ref(),
            Some(&rows[i as usize])
        );
    }
    assert!(got(&table, &[1, 2, 3], 5).unwrap().is_none());
    // One fewer than the limit still fits.
    let rows: Vec<Row> = (0..65_536u32)
        .map(|i| put(&i.to_be_bytes(), 1, b""))
        .collect();
    let table = build_version_1(&rows, with_hash(4 << 20, Compression::None, true));
    assert_eq!(table.block_count().unwrap(), 1);
    assert!(table.has_hash_index());
    for i in (0..65_536u32).step_by(991).chain([65_535]) {
        assert_eq!(
            got(&table, &i.to_be_bytes(), 5).unwrap().as_ref(),
            Some(&rows[i as usize])
        );
    }
    // Version 2: the 70,000-entry block keeps its hash index.
    let rows: Vec<Row> = (0..70_000u32)
        .map(|i| put(&i.to_be_bytes(), 1, b""))
        .collect();
    let (table, _) = build_mapped_with(&rows, with_hash(4 << 20, Compression::None, true));
    assert_eq!(table.block_count().unwrap(), 1);
    assert!(table.has_hash_index());
    for round in 0..2 {
        for i in (0..70_000u32).step_by(997).chain([69_999]) {
            assert_eq!(
                got(&table, &i.to_be_bytes(), 5).unwrap().as_ref(),
                Some(&rows[i as usize]),
                "{round} {i}"
            );
        }
    }
}

/// Version 2: entries that start 16 MiB or more into their block (huge
/// values in one big block) get the "search the block" offset; their reads,
/// and reads of the entries before them, still answer right, as do reads
/// at old snapshots of keys whose versions straddle that point.
#[test]
fn entries_past_16_mib_into_a_block_are_searched() {
    let big = vec![7u8; 3 << 20];
    let mut rows = Vec::new();
    for i in 0..8u32 {
        let key = format!("key{i}").into_bytes();
        rows.push(put(&key, 9, &big));
        rows.push(put(&key, 5, format!("old{i}").as_bytes()));
    }
    let rows = normalize(rows);
    let (table, _) = build_mapped_with(&rows, with_hash(64 << 20, Compression::None, true));
    assert_eq!(table.block_count().unwrap(), 1);
    assert!(table.has_hash_index());
    let model = model_of(&rows);
    for round in 0..2 {
        for i in 0..9u32 {
            let key = format!("key{i}").into_bytes();
            for snap in [4, 5, 8, 9, Timestamp::MAX] {
                assert_eq!(
                    got(&table, &key, snap).unwrap(),
                    btree_get(&model, &key, snap),
                    "{round} key{i} at {snap}"
                );
            }
        }
    }
}

/// A key whose fingerprint equals `key`'s (searched by brute force): in a
/// one-bucket table both land in bucket 0.
fn fingerprint_twin(key: &[u8]) -> Vec<u8> {
    let fp = |h: u64| (h as u16).max(1);
    let want = fp(bloom_hash(key));
    (0u32..)
        .map(|i| format!("twin{i}").into_bytes())
        .find(|k| fp(bloom_hash(k)) == want && k.as_slice() != key)
        .unwrap()
}

/// A fingerprint match that is another key costs a data block read and
/// then goes on to the next slot: the answer stays right.
#[test]
fn fingerprint_collisions_read_on() {
    let twin = fingerprint_twin(b"apple");
    let rows = normalize(vec![put(b"apple", 5, b"red"), put(b"apple", 2, b"green")]);
    // No bloom filter, which would rule the twin out first.
    let options = TableOptions {
        bloom_bits_per_key: 0,
        ..opts(4096, Compression::None)
    };
    let (table, _) = build_mapped_with(&rows, options);
    assert!(table.has_hash_index() && !table.has_filter());
    assert!(got(&table, &twin, 9).unwrap().is_none());
    let c = table.counters();
    assert_eq!(c.data_block_reads.load(AtomicOrdering::Relaxed), 1);
    // Not "useful": a data block was read.
    assert_eq!(c.hash_useful.load(AtomicOrdering::Relaxed), 0);
    assert_eq!(c.hash_checked.load(AtomicOrdering::Relaxed), 1);
    // Both keys in one table: each finds its own entry.
    let both = normalize(vec![
        put(b"apple", 5, b"red"),
        put(b"apple", 2, b"green"),
        put(&twin, 7, b"twin"),
        del(&twin, 3),
    ]);
    for block_size in [0, 4096] {
        assert!(check_against_unhashed(&both, block_size, Compression::None));
    }
}

/// Absent keys are answered by the hash index without a data block read
/// (it replaces the bloom filter, which point reads then skip); present
/// keys read one block each.
#[test]
fn hash_index_counters_and_absent_keys() {
    let rows: Vec<Row> = (0..20_000u32)
        .map(|i| put(format!("key{:08}", 2 * i).as_bytes(), 5, b"value"))
        .collect();
    let (table, _) = build_mapped(&rows, 4096);
    assert!(table.has_hash_index() && table.has_filter());
    let c = table.counters();
    let load = |a: &AtomicU64| a.load(AtomicOrdering::Relaxed);
    for i in 0..20_000u32 {
        let key = format!("key{:08}", 2 * i + 1);
        assert!(got(&table, key.as_bytes(), Timestamp::MAX)
            .unwrap()
            .is_none());
    }
    let absent_reads = load(&c.data_block_reads);
    let passed_filter = load(&c.hash_checked);
    assert_eq!(load(&c.bloom_checked), 20_000);
    assert_eq!(load(&c.bloom_useful) + passed_filter, 20_000);
    // ~1% false positives of the filter reach the hash index...
    assert!((20..=600).contains(&passed_filter), "{passed_filter}");
    // ...which rules out nearly all of them (~8 slots looked at, a 1/65535
    // false match each).
    assert_eq!(load(&c.hash_useful) + absent_reads, passed_filter);
    assert!(
        absent_reads <= 3,
        "{absent_reads} blocks read for 20000 absent keys"
    );
    for r in &rows {
        assert_eq!(got(&table, &r.0, Timestamp::MAX).unwrap().as_ref(), Some(r));
    }
    assert_eq!(load(&c.data_block_reads), absent_reads + 20_000);
    assert_eq!(load(&c.hash_checked), passed_filter + 20_000);
    assert_eq!(load(&c.bloom_checked), 40_000);
}

/// Damage anywhere in the hash index block is caught by its CRC on the
/// first point read that gets past the bloom filter (and every later one):
/// never a wrong answer. Scans do not read it.
#[test]
fn damaged_hash_index_is_corruption() {
    let rows = damage_rows();
    let file = build_bytes(&rows, 64);
    let region = Table::open(7, Arc::new(VecBytes(file.clone())))
        .unwrap()
        .hash_region()
        .expect("a hash index");
    for at in region.clone() {
        for flip in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[at] ^= flip;
            let table = Table::open(7, Arc::new(VecBytes(bad))).expect("open does not read it");
            // The filter rules this one out before the hash index is read.
            assert!(table.get(b"absent", Timestamp::MAX).unwrap().is_none());
            for r in rows.iter().take(3) {
                for _ in 0..2 {
                    let err = table.get(&r.0, Timestamp::MAX).unwrap_err();
                    assert_eq!(err.kind(), ErrorKind::Corruption, "byte {at}: {err}");
                    assert!(err.to_string().contains("index.hash"), "{err}");
                }
            }
            assert_eq!(table.load_meta().unwrap_err().kind(), ErrorKind::Corruption);
            let table = Arc::new(table);
            let mut it = TableIter::new(table);
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

/// Rewrites the `index.hash` block's contents through `f` and fixes its
/// CRC, as a writer would have produced it.
fn rewrite_hash_block(file: &mut [u8], region: Range<usize>, f: impl FnOnce(&mut [u8])) {
    let payload = region.start..region.end - 5;
    f(&mut file[payload.clone()]);
    let crc = crc32fast::hash(&file[payload.start..region.end - 4]);
    file[region.end - 4..region.end].copy_from_slice(&crc.to_le_bytes());
}

/// A hash index of a later version is ignored (read the old way, with the
/// bloom filter); one that passes its CRC but names a block or entry the
/// table lacks is reported, not followed out of bounds.
#[test]
fn unknown_versions_are_ignored_and_bad_slots_reported() {
    let rows = damage_rows();
    let file = build_bytes(&rows, 64);
    let region = Table::open(7, Arc::new(VecBytes(file.clone())))
        .unwrap()
        .hash_region()
        .unwrap();
    let mut later = file.clone();
    rewrite_hash_block(&mut later, region.clone(), |c| {
        let n = c.len();
        c[n - 1] = 3;
    });
    let table = open_vec(later).unwrap();
    assert!(!table.has_hash_index());
    check_gets(&table, &rows);
    assert_eq!(
        table.counters().hash_checked.load(AtomicOrdering::Relaxed),
        0
    );
    assert!(table.counters().bloom_checked.load(AtomicOrdering::Relaxed) > 0);

    // Every occupied slot pointing at a block or an entry that is not
    // there: version 2 (block in bytes 5..8, byte offset in 2..5; 0xfffffe
    // is past any block here), then the same for a version-1 table (block
    // in 4..8, entry number in 2..4).
    let v1_file = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sst");
        let mut b = TableBuilder::with_options(
            OsFileSystem.create(&path).unwrap(),
            opts(64, Compression::default()),
        );
        b.hash_index_version_1();
        for (k, ts, kind, v) in &rows {
            b.add(k, *ts, *kind, v).unwrap();
        }
        b.finish().unwrap();
        OsFileSystem.read(&path).unwrap()
    };
    let v1_region = Table::open(7, Arc::new(VecBytes(v1_file.clone())))
        .unwrap()
        .hash_region()
        .unwrap();
    for (file, region, field, value) in [
        (&file, &region, 5..8, vec![0x0f, 0x27, 0]),
        (&file, &region, 2..5, vec![0xfe, 0xff, 0xff]),
        (&v1_file, &v1_region, 4..8, 9_999u32.to_le_bytes().to_vec()),
        (&v1_file, &v1_region, 2..4, vec![0xff, 0xff]),
    ] {
        let mut bad = file.clone();
        rewrite_hash_block(&mut bad, region.clone(), |c| {
            let buckets = hash_index::parse(c).unwrap().unwrap().buckets;
            for slot in c[buckets].chunks_exact_mut(8) {
                if slot[..2] != [0, 0] {
                    slot[field.clone()].copy_from_slice(&value);
                }
            }
        });
        let table = open_vec(bad).unwrap();
        // Twice: the second read of a block that passed its checks takes
        // the in-place path for version 2.
        for _ in 0..2 {
            for r in &rows {
                let err = table.get(&r.0, Timestamp::MAX).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
            }
        }
    }
}

/// Tables written before the hash index (the cells-db fixture: format 2,
/// no `index.hash`) read as before.
#[test]
fn tables_written_before_the_hash_index_still_read() {
    for name in ["000004.sst", "000006.sst"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/cells-db")
            .join(name);
        let table = Arc::new(open_vec(std::fs::read(path).unwrap()).unwrap());
        assert_eq!(table.format_version(), 2);
        assert!(table.hash_region().is_none() && !table.has_hash_index());
        let mut rows = Vec::new();
        let mut it = TableIter::new(table.clone());
        it.seek_to_first().unwrap();
        while let Some(e) = it.entry() {
            rows.push(row(e));
            it.next().unwrap();
        }
        assert!(!rows.is_empty());
        check_gets(&table, &rows);
    }
}

/// File bytes whose pages are resident except one range.
struct PartlyResident {
    bytes: Vec<u8>,
    cold: Range<usize>,
}

impl FileBytes for PartlyResident {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    fn is_resident(&self, range: Range<usize>) -> bool {
        range.end <= self.cold.start || range.start >= self.cold.end
    }
}

/// `get_is_resident` through the hash index asks about the buckets and the
/// block the slot names: a key in a cold block would wait, one in a warm
/// block or absent would not; a cold hash index is not decoded.
#[test]
fn residency_follows_the_hash_index() {
    let rows: Vec<Row> = (0..2000u32)
        .map(|i| put(format!("key{:06}", 2 * i).as_bytes(), 5, b"value"))
        .collect();
    let file = build_bytes(&rows, 512);
    let layout = open_vec(file.clone()).unwrap();
    let (off, len) = layout.block_region(3);
    let table = Table::open(
        7,
        Arc::new(PartlyResident {
            bytes: file.clone(),
            cold: off..off + len,
        }),
    )
    .unwrap();
    let mut cold_keys = 0;
    for r in &rows {
        let resident = table
            .get_is_resident(&r.0, bloom_hash(&r.0), 5, super::table::clock_ms())
            .unwrap();
        let in_cold_block = layout.block_holding(&r.0) == 3;
        assert_eq!(resident, !in_cold_block, "{:?}", r.0.escape_ascii());
        cold_keys += usize::from(in_cold_block);
    }
    assert!(cold_keys > 0);
    assert!(table.has_hash_index());
    for i in 0..2000u32 {
        let key = format!("key{:06}", 2 * i + 1);
        assert!(table
            .get_is_resident(
                key.as_bytes(),
                bloom_hash(key.as_bytes()),
                5,
                super::table::clock_ms()
            )
            .unwrap());
    }
    // A cold hash index block: not decoded, a read that passes the filter
    // would wait.
    let table = Table::open(
        7,
        Arc::new(PartlyResident {
            bytes: file,
            cold: layout.hash_region().unwrap(),
        }),
    )
    .unwrap();
    // (A present key passes the filter; an absent one it rules out never
    // needs the hash index.)
    assert!(!table
        .get_is_resident(
            b"key000000",
            bloom_hash(b"key000000"),
            5,
            super::table::clock_ms()
        )
        .unwrap());
}
