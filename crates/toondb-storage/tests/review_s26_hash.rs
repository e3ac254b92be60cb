//! review s26: hash index version 2 (byte offsets, `in_place` reads of
//! verified uncompressed blocks) and point reads holding the LSM state
//! while installs replace it (written against the arc-swap Guard of
//! 00c5741, kept after its revert), through the public API.
//!
//! - many versions of keys over several tables and blocks, values mixing
//!   compressible and random bytes (so lz4/zstd tables hold both raw and
//!   compressed blocks), read at every snapshot three times (the first read
//!   of a block verifies it; later ones of a raw block decode in place), by
//!   `Snapshot::get`, `get` and `get_value` (zero-copy mapped values too),
//!   with and without a block cache, a table cache of 2 files (tables closed
//!   and reopened between reads), before and after a full compaction;
//! - a point read's borrowed value stays valid, and its table file stays on
//!   disk, while a compaction that removes the table completes during the
//!   read; the file goes once the read returns;
//! - reads racing flushes and compactions never see a wrong version.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use toondb_storage::{Compression, Database, Options, ValueRead, ValueRef};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

/// A value of one of several shapes: short, compressible, random
/// (incompressible), or large (zero-copy sized).
fn value(rng: &mut Rng, round: u32, i: usize) -> Vec<u8> {
    match rng.below(8) {
        0 => Vec::new(),
        1..=3 => {
            let mut v = format!("v{round}-{i}-").into_bytes();
            v.resize(v.len() + rng.below(300) as usize, b'x');
            v
        }
        4..=6 => {
            let n = rng.below(700) as usize;
            rng.bytes(n)
        }
        _ => {
            let n = 2000 + rng.below(3000) as usize;
            rng.bytes(n)
        }
    }
}

fn read_value(db: &Database, k: &[u8], zero_copy: bool) -> Option<Vec<u8>> {
    let how = ValueRead {
        zero_copy,
        resident_only: false,
    };
    db.get_value(k, how, |v| {
        v.map(|v| match v {
            ValueRef::Borrowed(b) => b.to_vec(),
            ValueRef::Mapped(m) => m.bytes().to_vec(),
        })
    })
    .unwrap()
    .expect("not resident-only")
}

#[test]
fn versions_over_tables_and_blocks_match_the_model_at_every_snapshot() {
    for (ci, (comp, bs, cache, bloom)) in [
        (Compression::None, 128usize, 0usize, 10u32),
        (Compression::Lz4, 128, 1 << 20, 0),
        (Compression::Zstd, 512, 0, 10),
        (Compression::Lz4, 4096, 16 << 10, 10),
        (Compression::None, 1 << 16, 1 << 20, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .compression(comp)
            .block_size(bs)
            .cache_size(cache)
            .bloom_bits_per_key(bloom)
            .hash_index(true)
            .max_open_files(2)
            .zero_copy_threshold(1024)
            .auto_compaction(false);
        let db = Database::open_with(dir.path(), options).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ci as u64);
        let nkeys = 50;
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        let mut snaps = Vec::new();
        for round in 0..24u32 {
            for i in 0..nkeys {
                // Hot keys change every round (many versions, crossing
                // blocks); others now and then.
                let hot = i % 10 == 3;
                if !hot && rng.below(3) != 0 {
                    continue;
                }
                if rng.below(6) == 0 {
                    db.delete(key(i)).unwrap();
                    model.remove(&key(i));
                } else {
                    let v = value(&mut rng, round, i);
                    db.put(key(i), &v).unwrap();
                    model.insert(key(i), v);
                }
            }
            snaps.push((db.snapshot().unwrap(), model.clone()));
            if round % 5 == 4 {
                db.flush().unwrap();
            }
        }
        db.flush().unwrap();
        let check = |phase: &str| {
            for pass in 0..3 {
                for (si, (s, m)) in snaps.iter().enumerate() {
                    for i in 0..nkeys + 2 {
                        assert_eq!(
                            s.get(key(i)).unwrap(),
                            m.get(&key(i)).cloned(),
                            "config {ci} {phase} pass {pass} snapshot {si} key {i}"
                        );
                    }
                }
                for i in 0..nkeys + 2 {
                    let want = model.get(&key(i)).cloned();
                    assert_eq!(db.get(key(i)).unwrap(), want, "config {ci} {phase} get {i}");
                    for zc in [false, true] {
                        assert_eq!(
                            read_value(&db, &key(i), zc),
                            want,
                            "config {ci} {phase} get_value(zero_copy {zc}) {i}"
                        );
                    }
                }
            }
        };
        check("flushed");
        assert!(db.stats().tables > 1);
        // One table at the bottom, still holding every version a snapshot
        // sees.
        db.compact().unwrap();
        check("compacted");
        let st = db.stats();
        assert!(st.hash_index_checked > 0, "{st:?}");
        drop(snaps);
        db.close().unwrap();
    }
}

fn sst_files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sst"))
        .collect();
    v.sort();
    v
}

/// The point read holds the LSM state it started with (however it holds
/// it: an Arc clone, or arc-swap's Guard in 00c5741): a compaction that replaces every table, run to completion from
/// inside the read's callback, neither frees the bytes the read lends nor
/// deletes the file they come from; both go once the read returns.
#[test]
fn a_point_read_keeps_its_tables_while_a_compaction_installs() {
    for comp in [Compression::None, Compression::Lz4] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .compression(comp)
            .block_size(256)
            .hash_index(true)
            .zero_copy_threshold(usize::MAX)
            .auto_compaction(false);
        let db = Database::open_with(dir.path(), options).unwrap();
        let big: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        for round in 0..3u8 {
            for i in 0..40 {
                let mut v = big.clone();
                v[0] = round;
                v[1] = i as u8;
                db.put(key(i), &v).unwrap();
            }
            db.flush().unwrap();
        }
        let before = sst_files(dir.path());
        assert_eq!(before.len(), 3);
        let read = ValueRead {
            zero_copy: false,
            resident_only: false,
        };
        let seen = db
            .get_value(key(17), read, |v| {
                let Some(ValueRef::Borrowed(bytes)) = v else {
                    panic!("expected a borrowed value");
                };
                assert_eq!(&bytes[..2], &[2, 17]);
                db.compact().unwrap();
                // Installed: new reads see the compacted state...
                assert_eq!(db.stats().tables, 1);
                assert_eq!(db.get(key(17)).unwrap().unwrap()[..2], [2, 17]);
                // ...while this read's tables, and their files, stay.
                let during = sst_files(dir.path());
                for f in &before {
                    assert!(during.contains(f), "{f} deleted during the read");
                }
                assert_eq!(&bytes[..2], &[2, 17]);
                assert_eq!(&bytes[2..], &big[2..]);
                bytes.to_vec()
            })
            .unwrap()
            .unwrap();
        assert_eq!(seen[..2], [2, 17]);
        let after = sst_files(dir.path());
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(!before.contains(&after[0]));
        for i in 0..40 {
            assert_eq!(db.get(key(i)).unwrap().unwrap()[..2], [2, i as u8]);
        }
        db.close().unwrap();
    }
}

/// Readers on several threads (point reads of keys whose value is fixed,
/// snapshot reads of keys that change) while a writer flushes and compacts
/// over and over: every answer is the right version.
#[test]
fn point_reads_racing_installs_see_the_right_versions() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default()
        .block_size(256)
        .memtable_size(16 << 10)
        .hash_index(true)
        .compression(Compression::Lz4)
        .auto_compaction(true)
        .l0_compaction_trigger(2);
    let db = Arc::new(Database::open_with(dir.path(), options).unwrap());
    let fixed = |i: usize| format!("fixed-{i}-").repeat(1 + i % 7).into_bytes();
    for i in 0..200 {
        db.put(format!("f{i:03}"), fixed(i)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for t in 0..3usize {
        let (db, stop) = (db.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut rng = Rng(77 + t as u64);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) || n < 2000 {
                let i = rng.below(200) as usize;
                let k = format!("f{i:03}");
                assert_eq!(db.get(&k).unwrap().as_deref(), Some(&fixed(i)[..]), "{k}");
                // A snapshot of the counter keys: every c key holds the
                // same round at one snapshot (written in one batch).
                let s = db.snapshot().unwrap();
                let a = s.get(b"c000").unwrap();
                for j in [1usize, 5, 9] {
                    assert_eq!(
                        s.get(format!("c{j:03}")).unwrap(),
                        a,
                        "c{j:03} at one snapshot"
                    );
                }
                n += 1;
            }
            n
        }));
    }
    // Read counters summed over live and retired tables never go back,
    // whatever the installs do.
    let mut last = [0u64; 5];
    for round in 0..400u32 {
        let st = db.stats();
        let now = [
            st.table_bytes_read,
            st.data_blocks_read,
            st.bloom_checked,
            st.hash_index_checked,
            st.hash_index_useful,
        ];
        for (n, (a, b)) in last.iter().zip(now.iter()).enumerate() {
            assert!(b >= a, "stats counter {n} went from {a} to {b}");
        }
        last = now;
        let mut batch = toondb_storage::WriteBatch::new();
        for j in 0..10usize {
            // The same value for every c key of a round (200 bytes).
            let mut v = format!("round{round}").into_bytes();
            v.resize(200, b'.');
            batch.put(format!("c{j:03}"), &v).unwrap();
        }
        // Filler that fills memtables and tables.
        for j in 0..5 {
            batch
                .put(format!("z{round:05}-{j}"), vec![b'z'; 300])
                .unwrap();
        }
        db.write(batch).unwrap();
        if round % 50 == 49 {
            db.compact().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 2000);
    }
    let st = db.stats();
    assert!(
        st.hash_index_checked > 0 && st.data_blocks_read >= last[1],
        "{st:?}"
    );
    db.close().unwrap();
}

/// The final state of tests/fixtures/hash-v1-db/<compression>, from the
/// script that wrote it (tests/fixtures/hash-v1-db-generator.rs).
fn hash_v1_fixture_model() -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..40u32 {
        for i in 0..60u32 {
            let r = next();
            if i % 9 != 4 && r % 3 != 0 {
                continue;
            }
            let k = format!("key{i:03}").into_bytes();
            if r % 11 == 0 {
                model.remove(&k);
            } else {
                let n = (r >> 8) % 120;
                let v: Vec<u8> = if r % 2 == 0 {
                    (0..n).map(|j| (next() >> (j % 8)) as u8).collect()
                } else {
                    format!("r{round}-{i}-{}", "x".repeat(n as usize)).into_bytes()
                };
                model.insert(k, v);
            }
        }
    }
    model
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A database the previous build wrote (version-1 hash index slots) opens
/// and reads right through them, takes new tables (version-2 slots) on
/// top, and reads right after compacting both kinds into one.
#[test]
fn a_database_of_the_previous_build_reads_and_compacts() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hash-v1-db");
    let model = hash_v1_fixture_model();
    for (sub, comp) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("db");
        copy_dir(&root.join(sub), &dir);
        let options = Options::default()
            .compression(comp)
            .block_size(200)
            .hash_index(true)
            .auto_compaction(false);
        let db = Database::open_with(&dir, options).unwrap();
        let mut model = model.clone();
        let check = |db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>, what: &str| {
            for _ in 0..2 {
                for i in 0..62 {
                    assert_eq!(
                        db.get(key(i)).unwrap(),
                        model.get(&key(i)).cloned(),
                        "{sub} {what} key {i}"
                    );
                }
            }
        };
        check(&db, &model, "as written");
        assert!(db.stats().hash_index_checked > 0);
        let before = db.snapshot().unwrap();
        let old_model = model.clone();
        for i in (0..60).step_by(4) {
            let v = format!("new{i}").into_bytes();
            db.put(key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        db.delete(key(7)).unwrap();
        model.remove(&key(7));
        db.flush().unwrap();
        check(&db, &model, "new table on top");
        db.compact().unwrap();
        assert_eq!(db.stats().tables, 1);
        check(&db, &model, "compacted");
        for i in 0..62 {
            assert_eq!(
                before.get(key(i)).unwrap(),
                old_model.get(&key(i)).cloned(),
                "{sub} old snapshot key {i}"
            );
        }
        drop(before);
        db.close().unwrap();
    }
}
