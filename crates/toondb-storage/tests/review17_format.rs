//! Review 17: format v2 edge cases through the public API.

use std::collections::BTreeMap;

use toondb_storage::{Compression, Database, Options, Result, ScanOptions};

fn check(options: Options, label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    let mut model = BTreeMap::new();
    let mut keys: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"\x00".to_vec(),
        b"\xff".to_vec(),
        b"\xff\xff".to_vec(),
    ];
    for i in 0..300u32 {
        keys.push(format!("p{}", "p".repeat((i % 40) as usize)).into_bytes());
        keys.push(format!("key/{i}").into_bytes());
    }
    for round in 0..3u32 {
        for (i, k) in keys.iter().enumerate() {
            if (i as u32 + round).is_multiple_of(5) {
                db.delete(k).unwrap();
                model.remove(k);
                continue;
            }
            let v = match i % 4 {
                0 => vec![],
                1 => vec![b'z'; 70_000 + round as usize],
                2 => (0..300u32).map(|j| (j * 7 + i as u32) as u8).collect(),
                _ => format!("v{round}").into_bytes(),
            };
            db.put(k, &v).unwrap();
            model.insert(k.clone(), v);
        }
        db.flush().unwrap();
    }
    let verify = |db: &Database, when: &str| {
        for k in &keys {
            assert_eq!(
                db.get(k).unwrap(),
                model.get(k).cloned(),
                "{label} {when} {k:?}"
            );
        }
        for k in [b"b".to_vec(), b"key/".to_vec(), b"a\x00\x00".to_vec()] {
            assert_eq!(db.get(&k).unwrap(), None, "{label} {when}");
        }
        let got: BTreeMap<_, _> = db
            .iter(ScanOptions::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert!(got == model, "{label} {when}: scan differs");
    };
    verify(&db, "flushed");
    db.compact().unwrap();
    verify(&db, "compacted");
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), options).unwrap();
    verify(&db, "reopened");
}

#[test]
fn odd_table_options_read_back() {
    for (block_size, compression, bloom) in [
        (1, Compression::Zstd, 1),
        (1, Compression::Lz4, 32),
        (64, Compression::None, 0),
        (8, Compression::Lz4, 7),
        (1 << 20, Compression::Zstd, 10),
    ] {
        check(
            Options::default()
                .block_size(block_size)
                .compression(compression)
                .bloom_bits_per_key(bloom)
                .memtable_size(64 << 10)
                .target_file_size(4 << 10),
            &format!("{block_size}/{compression:?}/{bloom}"),
        );
    }
}
