//! review of b3a0f0d/cb41afe (`Meta::starts`, 8-byte `InPlace`, prefetch
//! before the state check in `Table::get_in_place`):
//! - the in-place decode takes its start from `starts` (or, without them,
//!   from the handle) for the very block whose state was noted, on tables
//!   mixing compressed and stored blocks, at every snapshot;
//! - the in-place path is really taken (the blocks' count words are
//!   damaged after they were verified: only a read that does not load the
//!   block can still answer);
//! - hash-slot offsets past the block, at or past the end of the file, on
//!   stored and compressed tables: the early prefetch never faults, every
//!   read reports corruption;
//! - the Meta charge counts the starts and is given back whole.

use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::Ordering::Relaxed;

use super::*;
use crate::cache::BlockCache;
use crate::sstable::hash_index;

/// Sets `NO_BLOCK_STARTS` on this thread until dropped (also on a panic,
/// so a failing test does not leak the hook into the next test run on the
/// same thread, e.g. with `--test-threads=1`).
struct NoStarts;

impl NoStarts {
    fn set(on: bool) -> Option<NoStarts> {
        on.then(|| {
            super::table::NO_BLOCK_STARTS.with(|c| c.set(true));
            NoStarts
        })
    }
}

impl Drop for NoStarts {
    fn drop(&mut self) {
        super::table::NO_BLOCK_STARTS.with(|c| c.set(false));
    }
}

/// Keys whose values alternate, a few keys at a time, between compressible
/// text and incompressible bytes, so an lz4 table mixes compressed and
/// stored blocks; 1..=3 versions each, some tombstones.
fn mixed_rows(seed: u64, keys: usize) -> Vec<Row> {
    let mut rng = Rng(seed);
    let mut rows = Vec::new();
    for i in 0..keys {
        let key = format!("key{i:05}").into_bytes();
        let random = (i / 6) % 2 == 0;
        for v in 0..1 + rng.below(3) {
            let ts = 10 * (v + 1) + rng.below(5);
            if rng.below(7) == 0 {
                rows.push(del(&key, ts));
                continue;
            }
            let len = 10 + rng.below(90) as usize;
            let value: Vec<u8> = if random {
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                vec![b'a' + (i % 26) as u8; len]
            };
            rows.push(put(&key, ts, &value));
        }
    }
    normalize(rows)
}

fn hashed(block_size: usize, compression: Compression) -> TableOptions {
    TableOptions {
        hash_index: true,
        bloom_bits_per_key: 0,
        ..opts(block_size, compression)
    }
}

/// The snapshots worth reading `key` at: 0, MAX and each version's ts, one
/// below and one above.
fn snaps_of(rows: &[Row], key: &[u8]) -> Vec<Timestamp> {
    let mut s = vec![0, Timestamp::MAX];
    for r in rows.iter().filter(|r| r.0 == key) {
        s.extend([r.1 - 1, r.1, r.1 + 1]);
    }
    s
}

/// Stored type byte and count-word position of each data block.
fn blocks_of(table: &Table, file: &[u8]) -> Vec<(usize, usize, u8)> {
    (0..table.block_count().unwrap())
        .map(|b| {
            let (off, len) = table.block_region(b);
            (off, len, file[off + len - 5])
        })
        .collect()
}

fn check(compression: Compression, no_starts: bool) {
    let rows = mixed_rows(11, 600);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(table_file_name(7));
    write_table_with(&path, &rows, hashed(256, compression));
    let bytes = OsFileSystem.map(&path).unwrap();
    let table = Table::open(7, bytes).unwrap();
    {
        let _hook = NoStarts::set(no_starts);
        assert_eq!(table.keeps_block_starts().unwrap(), !no_starts);
    }
    assert!(table.has_hash_index());
    let file = std::fs::read(&path).unwrap();
    let blocks = blocks_of(&table, &file);
    assert!(blocks.len() > 20, "{} blocks", blocks.len());
    let stored = blocks.iter().filter(|b| b.2 == 0).count();
    assert!(stored > 0, "no stored block");
    if compression != Compression::None {
        assert!(stored < blocks.len(), "no compressed block");
    }
    let mut keys: Vec<Vec<u8>> = rows.iter().map(|r| r.0.clone()).collect();
    keys.dedup();
    let mut probes = probes(&rows);
    probes.push(b"key".to_vec());
    // Two rounds over every key at every snapshot: the first verifies each
    // block (and notes the stored ones' state), the second decodes stored
    // blocks' newest versions in place.
    for round in 0..2 {
        for key in &probes {
            for snap in snaps_of(&rows, key) {
                assert_eq!(
                    got(&table, key, snap).unwrap().as_ref(),
                    model_get(&rows, key, snap),
                    "{compression:?} no_starts={no_starts} round {round}: {:?} at {snap}",
                    key.escape_ascii().to_string()
                );
            }
        }
    }
    for b in 0..blocks.len() {
        assert!(table.block_verified(b));
    }
    // Damage every stored block's entry count (the last 4 bytes of its
    // payload) in the mapped file: loading such a block now fails, while a
    // decode in place (which reads only the entries region noted at
    // verification) does not touch it.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for &(off, len, ty) in &blocks {
        if ty == 0 {
            f.seek(SeekFrom::Start((off + len - 9) as u64)).unwrap();
            f.write_all(&[0xff; 4]).unwrap();
        }
    }
    f.sync_all().unwrap();
    drop(f);
    let reads_before = table.counters().data_block_reads.load(Relaxed);
    let mut in_place = 0;
    let mut damaged_loads = 0;
    for key in &keys {
        let block = table.block_holding(key);
        let newest = rows.iter().find(|r| &r.0 == key).unwrap().1;
        for snap in snaps_of(&rows, key) {
            let r = got(&table, key, snap);
            let want = model_get(&rows, key, snap);
            if blocks[block].2 != 0 {
                // Compressed: loaded (undamaged) as before; older versions
                // may continue into a damaged stored block.
                if snap >= newest {
                    assert_eq!(r.unwrap().as_ref(), want, "compressed block {block}");
                }
            } else if snap >= newest {
                // The newest version, from the bucket straight to the entry.
                assert_eq!(
                    r.unwrap().as_ref(),
                    want,
                    "{compression:?} no_starts={no_starts}: {:?} at {snap} in place (block {block})",
                    key.escape_ascii().to_string()
                );
                in_place += 1;
            } else {
                // Older than the newest: the block is loaded, and its count
                // is now damaged (proof that the reads above did not load).
                assert_eq!(
                    r.unwrap_err().kind(),
                    ErrorKind::Corruption,
                    "{:?} at {snap}",
                    key.escape_ascii().to_string()
                );
                damaged_loads += 1;
            }
        }
    }
    assert!(in_place > 100, "{in_place} in-place reads");
    assert!(damaged_loads > 0);
    assert!(table.counters().data_block_reads.load(Relaxed) > reads_before);
}

#[test]
fn in_place_reads_take_the_verified_blocks_start_with_starts() {
    check(Compression::None, false);
    check(Compression::Lz4, false);
}

#[test]
fn in_place_reads_take_the_verified_blocks_start_without_starts() {
    check(Compression::None, true);
    check(Compression::Lz4, true);
}

/// Rewrites the `index.hash` block's contents through `f` and fixes its CRC.
fn rewrite_hash_block(file: &mut [u8], region: std::ops::Range<usize>, f: impl FnOnce(&mut [u8])) {
    let payload = region.start..region.end - 5;
    f(&mut file[payload.clone()]);
    let crc = crc32fast::hash(&file[payload.start..region.end - 4]);
    file[region.end - 4..region.end].copy_from_slice(&crc.to_le_bytes());
}

/// Slots whose byte offset (24 bits) lies past their block: near, at and
/// past the end of the file, and the largest non-sentinel offset. The
/// prefetch now runs before the state check and is bounded by the file
/// (no longer by the entries region): no read may fault or answer; each
/// is corruption, on the first read (block loaded) and later ones
/// (stored: decoded in place; compressed: loaded again).
#[test]
fn slot_offsets_past_the_block_or_the_file_are_corruption() {
    let rows = normalize(
        (0..40u32)
            .map(|i| put(format!("k{i:03}").as_bytes(), 5, &[b'x'; 30]))
            .collect(),
    );
    // The block's contents length (the same stored or compressed): a
    // compressed block's slot offset is into its contents, so only offsets
    // past them are damage there.
    let contents_len = {
        let t = open_vec(build_bytes_with(&rows, hashed(1 << 16, Compression::None))).unwrap();
        assert_eq!(t.block_count().unwrap(), 1);
        t.block_region(0).1 - 5
    };
    let mut wrong = Vec::new();
    let mut tried = 0;
    for compression in [Compression::None, Compression::Lz4] {
        for no_starts in [false, true] {
            let file = build_bytes_with(&rows, hashed(1 << 16, compression));
            let len = file.len();
            let t = open_vec(file.clone()).unwrap();
            let region = t.hash_region().unwrap();
            assert_eq!(t.block_count().unwrap(), 1);
            let (off, stored_len) = t.block_region(0);
            assert_eq!(
                file[off + stored_len - 5] == 0,
                compression == Compression::None
            );
            let mut offsets: Vec<usize> = [len - 200, len - 100, len - 1, len, len + 1, len + 300]
                .iter()
                .map(|at| at - off)
                .chain([contents_len, contents_len + 5000, (1 << 24) - 2])
                .filter(|&o| o >= contents_len - 4)
                .collect();
            offsets.dedup();
            for offset in offsets {
                {
                    tried += 1;
                    let mut bad = file.clone();
                    rewrite_hash_block(&mut bad, region.clone(), |c| {
                        let buckets = hash_index::parse(c).unwrap().unwrap().buckets;
                        for slot in c[buckets].chunks_exact_mut(8) {
                            if slot[..2] != [0, 0] {
                                slot[2..5].copy_from_slice(&(offset as u32).to_le_bytes()[..3]);
                            }
                        }
                    });
                    let table = Table::open(7, Arc::new(VecBytes(bad))).unwrap();
                    {
                        let _hook = NoStarts::set(no_starts);
                        assert_eq!(table.keeps_block_starts().unwrap(), !no_starts);
                    }
                    for round in 0..3 {
                        for r in &rows {
                            let o = got(&table, &r.0, Timestamp::MAX).map_err(|e| e.kind());
                            if o != Err(ErrorKind::Corruption) {
                                wrong.push(format!(
                                    "{compression:?} no_starts={no_starts} offset {offset} \
                                     (file {len}), round {round}, {:?}: {o:?}",
                                    r.0.escape_ascii().to_string()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(tried >= 20, "{tried} offsets tried");
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The Meta charge counts the starts (4 bytes a block, or more by the
/// Vec's spare capacity) and nothing else differs; the same charge is given
/// back when the table closes.
#[test]
fn meta_charge_counts_the_starts_and_is_given_back() {
    let rows = mixed_rows(3, 800);
    let file = build_bytes_with(&rows, hashed(128, Compression::None));
    let cache = BlockCache::new(256 << 20);
    let mut charged = Vec::new();
    for no_starts in [false, true] {
        let table = Table::open_cached(
            7,
            Arc::new(VecBytes(file.clone())),
            Some(cache.clone()),
            Arc::default(),
        )
        .unwrap();
        assert_eq!(cache.stats().meta_bytes, 0);
        {
            let _hook = NoStarts::set(no_starts);
            assert_eq!(table.keeps_block_starts().unwrap(), !no_starts);
        }
        let blocks = table.block_count().unwrap() as u64;
        assert!(blocks > 100);
        charged.push((cache.stats().meta_bytes, blocks));
        // Reads do not change the charge.
        for r in rows.iter().step_by(7) {
            got(&table, &r.0, Timestamp::MAX).unwrap();
        }
        assert_eq!(cache.stats().meta_bytes, charged.last().unwrap().0);
        drop(table);
        assert_eq!(cache.stats().meta_bytes, 0, "charge not given back");
    }
    let [(with, blocks), (without, _)] = charged[..] else {
        unreachable!()
    };
    let diff = with - without;
    assert!(
        (4 * blocks..=8 * blocks).contains(&diff),
        "starts charged {diff} bytes for {blocks} blocks"
    );
}

/// On a table of many stored blocks, every slot's offset is moved to byte
/// `k` past its own block's entries region (into the block's offsets
/// array and count): each read is corruption, the first (block loaded)
/// and later ones (decoded in place, bounded by `start + entries_len`).
/// An `entries_end` taken from another block's start (e.g. the next one)
/// would let the in-place decode read the trailer as entries; the
/// single-block test in tests_review_s26.rs cannot tell the bases apart.
#[test]
fn offsets_past_each_blocks_entries_are_corruption_on_many_blocks() {
    let rows = mixed_rows(5, 300);
    let file = build_bytes_with(&rows, hashed(256, Compression::None));
    let t = open_vec(file.clone()).unwrap();
    let region = t.hash_region().unwrap();
    let blocks = t.block_count().unwrap();
    assert!(blocks > 10);
    // Per block: where its entries end, relative to its first byte, and
    // how many trailer bytes (offsets array and count) follow.
    let tails: Vec<(usize, usize)> = (0..blocks)
        .map(|b| {
            let (off, len) = t.block_region(b);
            assert_eq!(file[off + len - 5], 0, "stored");
            let payload_len = len - 5;
            let count = u32::from_le_bytes(
                file[off + payload_len - 4..off + payload_len]
                    .try_into()
                    .unwrap(),
            ) as usize;
            let entries_end = payload_len - 4 - 4 * count;
            (entries_end, payload_len - entries_end)
        })
        .collect();
    let min_tail = tails.iter().map(|t| t.1).min().unwrap();
    let mut keys: Vec<Vec<u8>> = rows.iter().map(|r| r.0.clone()).collect();
    keys.dedup();
    let mut wrong = Vec::new();
    for no_starts in [false, true] {
        for k in 0..min_tail {
            let mut bad = file.clone();
            rewrite_hash_block(&mut bad, region.clone(), |c| {
                let buckets = hash_index::parse(c).unwrap().unwrap().buckets;
                for slot in c[buckets].chunks_exact_mut(8) {
                    if slot[..2] != [0, 0] {
                        let mut b = [0u8; 4];
                        b[..3].copy_from_slice(&slot[5..8]);
                        let block = u32::from_le_bytes(b) as usize;
                        let offset = tails[block].0 + k;
                        slot[2..5].copy_from_slice(&(offset as u32).to_le_bytes()[..3]);
                    }
                }
            });
            let table = Table::open(7, Arc::new(VecBytes(bad))).unwrap();
            {
                let _hook = NoStarts::set(no_starts);
                assert_eq!(table.keeps_block_starts().unwrap(), !no_starts);
            }
            for round in 0..2 {
                for key in &keys {
                    let o = got(&table, key, Timestamp::MAX).map_err(|e| e.kind());
                    if o != Err(ErrorKind::Corruption) {
                        wrong.push(format!(
                            "no_starts={no_starts} k={k} round {round} {:?}: {o:?}",
                            key.escape_ascii().to_string()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
