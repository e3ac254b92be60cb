//! review s26: version-2 hash index slots whose byte offset is wrong
//! (a writer bug: the block's CRC is right) must be reported the same way
//! on every read, whether the block is loaded (first read, `walk_from`) or
//! decoded in place (later reads of a verified uncompressed block,
//! `get_in_place`). docs/format-table.md: "an offset past its block's
//! entries (version 2) is corruption".

use super::*;
use crate::sstable::hash_index;

/// Rewrites the `index.hash` block's contents through `f` and fixes its CRC.
fn rewrite_hash_block(file: &mut [u8], region: std::ops::Range<usize>, f: impl FnOnce(&mut [u8])) {
    let payload = region.start..region.end - 5;
    f(&mut file[payload.clone()]);
    let crc = crc32fast::hash(&file[payload.start..region.end - 4]);
    file[region.end - 4..region.end].copy_from_slice(&crc.to_le_bytes());
}

/// What a read answered, comparable across reads.
fn outcome(table: &Table, key: &[u8]) -> Result<Option<Row>, ErrorKind> {
    got(table, key, Timestamp::MAX).map_err(|e| e.kind())
}

#[test]
fn offsets_past_the_entries_are_corruption_on_every_read() {
    let rows = damage_rows();
    // One uncompressed block, no bloom filter (every key reaches the hash
    // index).
    let options = TableOptions {
        bloom_bits_per_key: 0,
        ..opts(1 << 16, Compression::None)
    };
    let file = build_bytes_with(&rows, options);
    let t = open_vec(file.clone()).unwrap();
    assert_eq!(t.block_count().unwrap(), 1);
    let (off, len) = t.block_region(0);
    let payload_len = len - 5;
    let count = u32::from_le_bytes(
        file[off + payload_len - 4..off + payload_len]
            .try_into()
            .unwrap(),
    ) as usize;
    assert_eq!(count, rows.len());
    let entries_end = payload_len - 4 - 4 * count;
    let region = t.hash_region().unwrap();
    let mut keys: Vec<Vec<u8>> = rows.iter().map(|r| r.0.clone()).collect();
    keys.dedup();
    let mut wrong = Vec::new();
    for at in entries_end..payload_len {
        let mut bad = file.clone();
        rewrite_hash_block(&mut bad, region.clone(), |c| {
            let buckets = hash_index::parse(c).unwrap().unwrap().buckets;
            for slot in c[buckets].chunks_exact_mut(8) {
                if slot[..2] != [0, 0] {
                    slot[2..5].copy_from_slice(&(at as u32).to_le_bytes()[..3]);
                }
            }
        });
        let table = open_vec(bad).unwrap();
        // The first read loads (and verifies) the block; the others of
        // this uncompressed block decode in place.
        for round in 0..2 {
            for k in &keys {
                let o = outcome(&table, k);
                if o != Err(ErrorKind::Corruption) {
                    wrong.push(format!(
                        "offset {at} (entries end at {entries_end}), round {round}, key {:?}: {o:?}",
                        k.escape_ascii().to_string()
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Tables the previous build wrote (tests/fixtures/hash-v1-db: commit
/// 1be548a, version-1 slots, raw and lz4 blocks of 200 bytes, keys with
/// many versions crossing blocks) read through their hash index by this
/// one: every key at every snapshot, twice, agrees with the table's own
/// entries (read by the iterator, which does not use the hash index).
#[test]
fn tables_of_the_previous_build_read_through_version_1_slots() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hash-v1-db");
    let mut tables = 0;
    for sub in ["none", "lz4"] {
        let mut names: Vec<_> = std::fs::read_dir(root.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sst"))
            .collect();
        names.sort();
        for path in names {
            let bytes = std::fs::read(&path).unwrap();
            let table = Arc::new(open_vec(bytes.clone()).unwrap());
            assert!(table.has_hash_index(), "{path:?}");
            let region = table.hash_region().unwrap();
            // The version byte ends the block's payload (before its
            // 5-byte trailer).
            assert_eq!(bytes[region.end - 6], 1, "{path:?}: version-1 slots");
            let mut rows = Vec::new();
            let mut it = TableIter::new(table.clone());
            it.seek_to_first().unwrap();
            while let Some(e) = it.entry() {
                rows.push(row(e));
                it.next().unwrap();
            }
            assert!(rows.len() > 20, "{path:?}");
            let mut stamps: Vec<Timestamp> = rows.iter().map(|r| r.1).collect();
            stamps.sort_unstable();
            stamps.dedup();
            for key in probes(&rows) {
                let mut snaps = vec![0, Timestamp::MAX];
                for &ts in &stamps {
                    snaps.extend([ts - 1, ts]);
                }
                for snap in snaps {
                    for round in 0..2 {
                        assert_eq!(
                            got(&table, &key, snap).unwrap().as_ref(),
                            model_get(&rows, &key, snap),
                            "{path:?} {:?} at {snap}, read {round}",
                            key.escape_ascii().to_string()
                        );
                    }
                }
            }
            assert!(
                table
                    .counters()
                    .hash_checked
                    .load(std::sync::atomic::Ordering::Relaxed)
                    > 0
            );
            tables += 1;
        }
    }
    assert_eq!(tables, 8);
}

/// A point read at a snapshot older than the key's newest version reads
/// one data block: it is counted once (`data_block_reads`, `bytes_read`),
/// whether the block is loaded or its newest entry is first looked at in
/// place.
#[test]
fn a_read_at_an_old_snapshot_counts_its_block_once() {
    use std::sync::atomic::Ordering::Relaxed;
    let rows = normalize(vec![
        put(b"k", 5, b"new"),
        put(b"k", 2, b"old"),
        put(b"z", 1, b"zz"),
    ]);
    let options = TableOptions {
        hash_index: true,
        ..opts(4096, Compression::None)
    };
    let (table, _) = build_mapped_with(&rows, options);
    assert!(table.has_hash_index());
    assert_eq!(table.block_count().unwrap(), 1);
    let (_, len) = table.block_region(0);
    let c = table.counters();
    for n in 1..=3u64 {
        assert_eq!(got(&table, b"k", 3).unwrap().unwrap().3, b"old");
        assert_eq!(c.data_block_reads.load(Relaxed), n, "read {n}");
        assert_eq!(c.bytes_read.load(Relaxed), n * len as u64, "read {n}");
    }
    // At the newest version: still one each.
    assert_eq!(got(&table, b"k", 9).unwrap().unwrap().3, b"new");
    assert_eq!(c.data_block_reads.load(Relaxed), 4);
}
