//! Review (ckpt, checkpoint tables built from the mapped segment): the
//! batches whose decoding a checkpoint must get exactly right, checkpointed
//! and read back by a reopen of a kill image, against a `BTreeMap` model.

mod support;
use support::{copy_dir, wait_idle};

use std::collections::BTreeMap;

use toondb_storage::{Database, Options, ScanOptions, WriteBatch};

const MAX_KEY: usize = 64 * 1024;

fn options() -> Options {
    Options::default()
        .memtable_size(64 << 20)
        .wal_size_limit(16 << 10)
}

fn scan_all(db: &Database) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter(ScanOptions::default())
        .unwrap()
        .map(|item| item.unwrap())
        .collect()
}

fn check(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>, keys: &[Vec<u8>]) {
    let scanned = scan_all(db);
    assert_eq!(scanned.len(), model.len());
    assert!(scanned == *model, "scan differs from the model");
    for k in keys {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            model.get(k),
            "key of {} bytes",
            k.len()
        );
    }
}

/// Keys: short ones, ones sharing a 16-byte head and differing only in
/// length or trailing zeros, and maximal ones.
fn keys() -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(format!("k{i:02}").into_bytes());
    }
    let head = b"0123456789abcdef";
    for n in [15, 16, 17] {
        keys.push(
            head[..n.min(16)]
                .iter()
                .copied()
                .chain(std::iter::repeat_n(b'x', n.saturating_sub(16)))
                .collect(),
        );
    }
    keys.push([&head[..], &[0u8][..]].concat());
    keys.push([&head[..], &[0u8, 0][..]].concat());
    for last in [b'a', b'b'] {
        let mut k = vec![b'm'; MAX_KEY];
        k[MAX_KEY - 1] = last;
        keys.push(k);
    }
    keys
}

/// Review probe (passes): put + delete and delete + put of one key in a
/// batch, a key put twice, empty values, a range delete with the batch's
/// own puts inside it, maximal keys and a 1 MiB value, spread over many
/// checkpointed segments; a kill image reopens to the model, new writes
/// after the reopen win (the checkpoint's last_ts), and a second kill
/// image and a clean close reopen to it too.
#[test]
fn tricky_batches_survive_checkpoint_and_reopen() {
    let keys = keys();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for round in 0..300u64 {
        let mut batch = WriteBatch::new();
        let mut applied: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        if next(6) == 0 {
            let (a, b) = (
                &keys[next(keys.len() as u64) as usize],
                &keys[next(keys.len() as u64) as usize],
            );
            if a != b {
                let (s, e) = if a < b { (a, b) } else { (b, a) };
                batch.delete_range(s, e).unwrap();
                // Takes effect before the batch's own writes.
                let doomed: Vec<_> = model
                    .range(s.clone()..e.clone())
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    model.remove(&k);
                }
                // A put of the batch inside its own range delete.
                let inside = model_range_key(&keys, s, e);
                if let Some(k) = inside {
                    batch.put(&k, b"inside").unwrap();
                    applied.push((k, Some(b"inside".to_vec())));
                }
            }
        }
        for _ in 0..1 + next(6) {
            let k = keys[next(keys.len() as u64) as usize].clone();
            let v = if k.len() == MAX_KEY && next(10) == 0 {
                vec![round as u8; 1 << 20]
            } else {
                format!("v{round}-{}", next(1000))
                    .repeat(next(4) as usize)
                    .into_bytes()
            };
            match next(5) {
                0 => {
                    batch.put(&k, &v).unwrap();
                    batch.delete(&k).unwrap();
                    applied.push((k, None));
                }
                1 => {
                    batch.delete(&k).unwrap();
                    batch.put(&k, &v).unwrap();
                    applied.push((k, Some(v)));
                }
                2 => {
                    batch.put(&k, b"first").unwrap();
                    batch.put(&k, &v).unwrap();
                    applied.push((k, Some(v)));
                }
                3 => {
                    batch.delete(&k).unwrap();
                    applied.push((k, None));
                }
                _ => {
                    batch.put(&k, &v).unwrap();
                    applied.push((k, Some(v)));
                }
            }
        }
        // Filler so that segments rotate every few rounds.
        let filler = format!("z{:03}", next(50)).into_bytes();
        let fv = vec![b'f'; 1500];
        batch.put(&filler, &fv).unwrap();
        applied.push((filler, Some(fv)));
        db.write(batch).unwrap();
        for (k, v) in applied {
            match v {
                Some(v) => model.insert(k, v),
                None => model.remove(&k),
            };
        }
    }
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 20, "{} checkpoints", s.checkpoints);
    assert_eq!(s.flushes, 0);
    check(&db, &model, &keys);
    let image = copy_dir(dir.path());
    db.close().unwrap();

    let db = Database::open_with(image.path(), options()).unwrap();
    assert!(db.stats().levels[0].tables >= s.checkpoints);
    check(&db, &model, &keys);
    // Writes after the reopen are newer than every checkpointed version.
    for (i, k) in keys.iter().enumerate() {
        let v = format!("after{i}").into_bytes();
        db.put(k, &v).unwrap();
        model.insert(k.clone(), v);
    }
    check(&db, &model, &keys);
    wait_idle(&db);
    let image2 = copy_dir(image.path());
    db.close().unwrap();
    let db = Database::open_with(image2.path(), options()).unwrap();
    check(&db, &model, &keys);
    db.compact().unwrap();
    check(&db, &model, &keys);
    db.close().unwrap();
    let db = Database::open_with(image.path(), options()).unwrap();
    check(&db, &model, &keys);
    db.close().unwrap();
}

/// One of `keys` in `[s, e)`, if any.
fn model_range_key(keys: &[Vec<u8>], s: &[u8], e: &[u8]) -> Option<Vec<u8>> {
    keys.iter()
        .find(|k| k.as_slice() >= s && k.as_slice() < e)
        .cloned()
}

/// Review probe (passes): with a WAL limit of one byte every commit group
/// has a segment of its own, so checkpoints make tables holding one batch:
/// one of only a range delete (a table with no point entry), one of a
/// delete only, one of an empty value. A kill image reopens to the model,
/// before and after a full compaction.
#[test]
fn one_batch_checkpoint_tables_reopen_to_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || options().wal_size_limit(1);
    let db = Database::open_with(dir.path(), opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for c in b'a'..=b'z' {
        db.put([c], [c]).unwrap();
        model.insert(vec![c], vec![c]);
    }
    db.flush().unwrap();
    wait_idle(&db);
    for c in b'a'..=b'z' {
        db.put([c, c], [c]).unwrap();
        model.insert(vec![c, c], vec![c]);
    }
    let mut batch = WriteBatch::new();
    batch.delete_range(b"c", b"x").unwrap();
    db.write(batch).unwrap();
    model.retain(|k, _| !(k.as_slice() >= &b"c"[..] && k.as_slice() < &b"x"[..]));
    db.delete(b"b").unwrap();
    model.remove(&b"b"[..]);
    db.put(b"q", b"").unwrap();
    model.insert(b"q".to_vec(), Vec::new());
    let mut batch = WriteBatch::new();
    batch.delete_range(b"y", b"yy\0").unwrap();
    db.write(batch).unwrap();
    model.remove(&b"y"[..]);
    model.remove(&b"yy"[..]);
    let s = wait_idle(&db);
    assert!(s.checkpoints >= 28, "{} checkpoints", s.checkpoints);
    let keys: Vec<Vec<u8>> = (b'a'..=b'z').flat_map(|c| [vec![c], vec![c, c]]).collect();
    check(&db, &model, &keys);
    let image = copy_dir(dir.path());
    db.close().unwrap();
    let db = Database::open_with(image.path(), opts()).unwrap();
    check(&db, &model, &keys);
    db.compact().unwrap();
    check(&db, &model, &keys);
    db.close().unwrap();
}
