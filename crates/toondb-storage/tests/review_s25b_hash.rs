//! review s25b: point reads through the per-table hash index at old
//! snapshots (versions crossing blocks, >16 versions, tombstones, prefix
//! keys, the empty key), with and without bloom, compressed or not.

use std::collections::BTreeMap;
use toondb_storage::{Compression, Database, Options};

fn keys() -> Vec<Vec<u8>> {
    let mut ks: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
    ];
    for i in 0..40u32 {
        ks.push(format!("k{i:03}").into_bytes());
    }
    ks
}

#[test]
fn hash_index_reads_at_every_snapshot_match_a_model() {
    for (bs, comp, bloom, pad) in [
        (64usize, Compression::None, 10u32, 0usize),
        (64, Compression::Lz4, 0, 0),
        (64, Compression::None, 0, 200),
        (300, Compression::Zstd, 10, 500),
        (4096, Compression::None, 0, 0),
        (1 << 20, Compression::Lz4, 10, 0),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .compression(comp)
            .bloom_bits_per_key(bloom)
            .block_size(bs)
            .hash_index(true)
            .auto_compaction(false);
        let db = Database::open_with(dir.path(), options).unwrap();
        let ks = keys();
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut snaps = Vec::new();
        for round in 0..30u32 {
            for (i, k) in ks.iter().enumerate() {
                let i = i as u32;
                if (i + round).is_multiple_of(7) {
                    db.delete(k).unwrap();
                    model.remove(k);
                } else if !(i * 3 + round).is_multiple_of(4) || i.is_multiple_of(5) {
                    let mut v = format!("v{round}-{i}").into_bytes();
                    v.resize(v.len() + pad, b'x');
                    db.put(k, &v).unwrap();
                    model.insert(k.clone(), v);
                }
            }
            snaps.push((db.snapshot().unwrap(), model.clone()));
        }
        db.flush().unwrap();
        for (si, (s, m)) in snaps.iter().enumerate() {
            for k in &ks {
                assert_eq!(
                    s.get(k).unwrap(),
                    m.get(k).cloned(),
                    "bs {bs} snap {si} key {k:?}"
                );
            }
            assert_eq!(s.get(b"abcd").unwrap(), None);
            assert_eq!(s.get(b"k0").unwrap(), None);
        }
        for k in &ks {
            assert_eq!(db.get(k).unwrap(), model.get(k).cloned());
        }
        let st = db.stats();
        assert!(st.hash_index_checked > 0, "{st:?}");
        drop(snaps);
        db.close().unwrap();
    }
}
