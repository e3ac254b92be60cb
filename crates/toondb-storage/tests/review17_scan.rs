//! Review 17: scans resumed in tiny batches across many level tables, both
//! directions, with tombstones and held snapshots, against a model.

use std::collections::BTreeMap;
use std::ops::Bound;

use toondb_storage::{Database, Options, ScanOptions};

fn key(i: u64) -> Vec<u8> {
    format!("k{i:05}").into_bytes()
}

#[test]
fn tiny_batches_across_level_tables_match_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path(),
        Options::default()
            .memtable_size(2 << 10)
            .block_size(128)
            .target_file_size(1 << 10)
            .level_base_bytes(4 << 10)
            .level_size_ratio(2)
            .l0_compaction_trigger(2),
    )
    .unwrap();
    let mut model = BTreeMap::new();
    let mut x = 0x9e37_79b9u64;
    let mut snaps = Vec::new();
    for step in 0..6000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = key(x % 400);
        if x.is_multiple_of(3) {
            db.delete(&k).unwrap();
            model.remove(&k);
        } else {
            let v = format!("v{step}").into_bytes();
            db.put(&k, &v).unwrap();
            model.insert(k, v);
        }
        if step % 1500 == 0 {
            snaps.push((db.snapshot().unwrap(), model.clone()));
        }
        if step % 2000 == 1999 {
            db.compact_range(
                Bound::Included(key(x % 200)),
                Bound::Excluded(key(x % 200 + 100)),
            )
            .unwrap();
        }
    }
    let s = db.stats();
    eprintln!(
        "levels {:?}",
        s.levels.iter().map(|l| l.tables).collect::<Vec<_>>()
    );
    let check = |scan: &mut dyn FnMut(ScanOptions) -> toondb_storage::Scan,
                 m: &BTreeMap<Vec<u8>, Vec<u8>>,
                 what: &str| {
        for (lo, hi) in [
            (Bound::Unbounded, Bound::Unbounded),
            (Bound::Included(key(37)), Bound::Excluded(key(311))),
            (Bound::Excluded(key(100)), Bound::Included(key(250))),
        ] {
            for reverse in [false, true] {
                for batch in [1usize, 2, 7] {
                    let mut options = ScanOptions::default().lower(lo.clone()).upper(hi.clone());
                    options.reverse = reverse;
                    let mut sc = scan(options);
                    let mut got = Vec::new();
                    loop {
                        let b = sc.next_batch(batch, usize::MAX).unwrap();
                        if b.is_empty() {
                            break;
                        }
                        got.extend(b);
                    }
                    let mut want: Vec<_> = m
                        .range((lo.clone(), hi.clone()))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if reverse {
                        want.reverse();
                    }
                    assert!(
                        got == want,
                        "{what} {lo:?} {hi:?} rev {reverse} batch {batch}: got {} want {}",
                        got.len(),
                        want.len()
                    );
                }
            }
        }
    };
    check(&mut |o| db.scan(o).unwrap(), &model, "db");
    for (i, (snap, m)) in snaps.iter().enumerate() {
        check(&mut |o| snap.scan(o).unwrap(), m, &format!("snapshot {i}"));
    }
}
