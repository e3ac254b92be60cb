//! End-to-end: a database written with each table compression and filter
//! setting reads back the same, across flushes and reopen, and settings can
//! change between opens (every table records how its blocks are stored).

use std::collections::BTreeMap;

use toondb_storage::{Compression, Database, Options, ScanOptions};

fn value(i: u32, round: u32) -> Vec<u8> {
    format!(r#"{{"id":{i},"round":{round},"name":"user {i}","active":true}}"#).into_bytes()
}

fn check(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for i in 0..1200u32 {
        let k = format!("user/{i:05}").into_bytes();
        assert_eq!(db.get(&k).unwrap(), model.get(&k).cloned(), "{i}");
    }
    let all: Vec<(Vec<u8>, Vec<u8>)> = db
        .iter(ScanOptions::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, want);
}

#[test]
fn every_compression_and_filter_setting_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    let settings = [
        (Compression::None, 10),
        (Compression::Lz4, 10),
        (Compression::Zstd, 0),
        (Compression::Lz4, 0),
        (Compression::Zstd, 1000),
    ];
    for (round, (compression, bloom_bits_per_key)) in settings.into_iter().enumerate() {
        let round = round as u32;
        let options = Options::default()
            .compression(compression)
            .bloom_bits_per_key(bloom_bits_per_key)
            .block_size(1024)
            // Every table written so far stays as written (the count below).
            .auto_compaction(false);
        let db = Database::open_with(dir.path(), options).unwrap();
        check(&db, &model);
        for i in (round..1000).step_by(3) {
            let k = format!("user/{i:05}").into_bytes();
            db.put(&k, value(i, round)).unwrap();
            model.insert(k, value(i, round));
        }
        for i in (round * 7..1000).step_by(11) {
            let k = format!("user/{i:05}").into_bytes();
            db.delete(&k).unwrap();
            model.remove(&k);
        }
        db.flush().unwrap();
        assert_eq!(db.stats().tables, u64::from(round) + 1);
        check(&db, &model);
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    check(&db, &model);
}

#[test]
fn absent_keys_skip_tables_through_the_bloom_filter() {
    let dir = tempfile::tempdir().unwrap();
    // (bloom bits, hash index): the hash index, when there, answers for
    // absent keys in the filter's place (docs/format-table.md, "Hash index").
    for (bloom_bits_per_key, hash_index) in [(10, false), (0, false), (0, true)] {
        let options = Options::default()
            .bloom_bits_per_key(bloom_bits_per_key)
            .hash_index(hash_index);
        let db = Database::open_with(
            dir.path()
                .join(format!("{bloom_bits_per_key}-{hash_index}")),
            options,
        )
        .unwrap();
        for i in 0..2000u32 {
            db.put(format!("user/{:05}", 2 * i), value(i, 0)).unwrap();
        }
        db.flush().unwrap();
        let before = db.stats().table_bytes_read;
        // Absent keys inside the table's key range.
        for i in 0..2000u32 {
            assert_eq!(db.get(format!("user/{:05}", 2 * i + 1)).unwrap(), None);
        }
        let read = db.stats().table_bytes_read - before;
        let stats = db.stats();
        if hash_index {
            // ~0.01% false matches: a block or two at most.
            assert!(read <= 2 * 4096, "{read} bytes read with a hash index");
            assert!(stats.hash_index_useful >= 1998, "{stats:?}");
            assert_eq!(stats.bloom_checked, 0);
        } else if bloom_bits_per_key > 0 {
            // ~1% false positives: a few dozen 4 KiB blocks at most.
            assert!(read < 60 * 4096, "{read} bytes read with a filter");
            assert_eq!(stats.hash_index_checked, 0);
        } else {
            assert!(read >= 2000 * 1024, "{read} bytes read without a filter");
        }
    }
}
