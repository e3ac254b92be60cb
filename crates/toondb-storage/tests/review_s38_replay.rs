//! Review of session 38's replay change (d68fb11, memtable.rs
//! `replay_record` / `insert_replayed`): the key filter is set from
//! `Replayed::hashes` at `insert_replayed` instead of per record, equal
//! versions (one batch writing a key twice) are compared in full only when
//! their 16-byte key heads tie, and the gather prefetches 8 ahead.
//!
//! Every check reads the replayed memtable itself (its flush held by a
//! [`TableGate`]), where a key missing from the filter reads as absent or
//! as its older version in a table, then again after the flush and a
//! reopen:
//!
//! - keys that share a head but differ (`ab`, `ab\0`, `\0` .. 17 zero
//!   bytes, 16-byte prefixes with different tails), each written twice or
//!   three times in one batch (the last wins), across batches, deleted,
//!   re-put after a delete in the same batch, range-deleted then put;
//! - a WAL of several segments with thousands of random keys and batches
//!   of 1 to 20 writes (the gather's prefetch past both ends), against a
//!   model;
//! - a torn tail: the records before it are all found;
//! - an error mid-replay (a damaged record with valid ones after it): the
//!   open fails and changes nothing, and a repaired image recovers all.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use support::open_images::{contents, keep_tables, torn_image, with_ext};
use support::{copy_dir, wait_idle, HeldGate, Rng, TableGate};
use toondb_storage::io::WrappedFs;
use toondb_storage::{Database, ErrorKind, Options, ScanOptions, WriteBatch};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Opens `dir` with table creation held (the replayed memtable stays
/// unflushed and serves every read until the gate is released).
fn open_held(dir: &Path, options: Options) -> (Database, HeldGate) {
    let gate = TableGate::default();
    let db = Database::open_with(dir, options.fs(Arc::new(WrappedFs::os(gate.clone())))).unwrap();
    (db, HeldGate(gate))
}

/// Keys whose 16-byte heads tie (zero-padded) while the keys differ, and
/// keys just below, at and above 16 bytes.
fn shaped_keys() -> Vec<Vec<u8>> {
    let p16 = b"0123456789abcdef".to_vec();
    let with = |base: &[u8], tail: &[u8]| [base, tail].concat();
    let mut keys = vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        b"ab\0".to_vec(),
        b"ab\0\0".to_vec(),
        b"ab\x01".to_vec(),
        b"abc".to_vec(),
        vec![0],
        vec![0, 0],
        vec![0; 15],
        vec![0; 16],
        vec![0; 17],
        vec![0; 40],
        p16[..15].to_vec(),
        with(&p16[..15], b"\0"),
        p16.clone(),
        with(&p16, b"\0"),
        with(&p16, b"\0\0"),
        with(&p16, b"g"),
        with(&p16, b"-tail-one"),
        with(&p16, b"-tail-two"),
        with(&p16, b"-tail-one\0"),
        with(&p16, &[b'x'; 300]),
        with(&p16, &[b'x'; 301]),
        vec![0xff; 16],
        vec![0xff; 17],
        with(&vec![b'L'; 1000], b"1"),
        with(&vec![b'L'; 1000], b"2"),
    ];
    keys.sort();
    keys.dedup();
    keys
}

/// `key` with `~` appended, and its prefixes: neighbours a read must find
/// absent unless the model holds them.
fn neighbours(key: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![[key, b"~"].concat(), [key, b"\0\0\0"].concat()];
    for n in 1..key.len().min(18) {
        v.push(key[..n].to_vec());
    }
    v
}

/// Reads `model` back through point reads (one and many), forward and
/// reverse scans, a snapshot and a transaction; `probes` are keys whose
/// absence (or value) the model decides as well.
fn check(db: &Database, model: &Model, probes: &[Vec<u8>], what: &str) {
    for (k, v) in model {
        assert_eq!(db.get(k).unwrap().as_ref(), Some(v), "{what}: get {k:?}");
    }
    for k in probes {
        assert_eq!(
            db.get(k).unwrap().as_ref(),
            model.get(k),
            "{what}: get probe {k:?}"
        );
    }
    let keys: Vec<&Vec<u8>> = model.keys().chain(probes.iter()).collect();
    let many = db.get_many(&keys).unwrap();
    for (k, got) in keys.iter().zip(&many) {
        assert_eq!(got.as_ref(), model.get(*k), "{what}: get_many {k:?}");
    }
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let got: Vec<_> = db
        .iter(ScanOptions::default())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(got == want, "{what}: scan differs from the model");
    let mut back = want.clone();
    back.reverse();
    let got: Vec<_> = db
        .iter(ScanOptions::default().reverse(true))
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert!(got == back, "{what}: reverse scan differs from the model");
    let snap = db.snapshot().unwrap();
    let txn = db.transaction().unwrap();
    for (k, v) in model {
        assert_eq!(
            snap.get(k).unwrap().as_ref(),
            Some(v),
            "{what}: snapshot {k:?}"
        );
        assert_eq!(
            txn.get(k).unwrap().as_ref(),
            Some(v),
            "{what}: transaction {k:?}"
        );
    }
    for k in probes {
        assert_eq!(
            snap.get(k).unwrap().as_ref(),
            model.get(k),
            "{what}: snapshot probe {k:?}"
        );
    }
    snap.release();
    drop(txn);
}

/// Asserts the live database reads the model (the image is taken from it).
fn live_matches(db: &Database, model: &Model, probes: &[Vec<u8>]) {
    check(db, model, probes, "live, before the crash image");
}

/// The shaped keys in a table (old values a missing filter bit would let
/// a read fall through to), then a WAL of same-batch duplicates, deletes,
/// re-puts and range deletes over them.
fn shaped_image() -> (tempfile::TempDir, Model, Vec<Vec<u8>>) {
    let keys = shaped_keys();
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    let mut model = Model::new();
    // In a table: what a read falls through to if the memtable says absent.
    for (i, k) in keys.iter().enumerate() {
        let v = format!("table-{i}").into_bytes();
        db.put(k, &v).unwrap();
        model.insert(k.clone(), v);
    }
    // "table-only" keys: never in the WAL, read from the table throughout.
    db.put("table-only", "t").unwrap();
    model.insert(b"table-only".to_vec(), b"t".to_vec());
    db.flush().unwrap();

    // One batch writes every shaped key twice, not adjacently in batch
    // order: all the versions of one timestamp whose heads tie sort
    // together, and of each (key, ts) only the last must survive.
    let mut batch = WriteBatch::new();
    for round in 0..2 {
        for (i, k) in keys.iter().enumerate() {
            let v = format!("dup{round}-{i}").into_bytes();
            batch.put(k, &v).unwrap();
            model.insert(k.clone(), v);
        }
    }
    db.write(batch).unwrap();

    // Three writes of each, in reverse key order, some ending in a delete,
    // some in a put after a delete.
    let mut batch = WriteBatch::new();
    for (i, k) in keys.iter().enumerate().rev() {
        match i % 4 {
            0 => {
                batch.put(k, format!("tri-a-{i}")).unwrap();
                batch.put(k, format!("tri-b-{i}")).unwrap();
                batch.put(k, format!("tri-c-{i}")).unwrap();
                model.insert(k.clone(), format!("tri-c-{i}").into_bytes());
            }
            1 => {
                batch.put(k, format!("gone-{i}")).unwrap();
                batch.delete(k).unwrap();
                model.remove(k);
            }
            2 => {
                batch.delete(k).unwrap();
                batch.put(k, format!("back-{i}")).unwrap();
                model.insert(k.clone(), format!("back-{i}").into_bytes());
            }
            _ => {}
        }
    }
    db.write(batch).unwrap();

    // Across batches (each its own timestamp): the newest wins.
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 4 == 3) {
        for n in 0..3 {
            let v = format!("cross{n}-{i}").into_bytes();
            db.put(k, &v).unwrap();
            model.insert(k.clone(), v);
        }
    }

    // A range delete over the zero keys with one of them put again in the
    // same batch (the range applies before the batch's own writes), then
    // another put back in a later batch.
    let mut batch = WriteBatch::new();
    batch.delete_range([0u8], [0u8; 30]).unwrap();
    batch.put([0u8; 16], "after-range-same-batch").unwrap();
    batch.put([0u8; 16], "after-range-same-batch-2").unwrap();
    model.retain(|k, _| !(k[..] >= [0u8][..] && k[..] < [0u8; 30][..]));
    model.insert(vec![0; 16], b"after-range-same-batch-2".to_vec());
    db.write(batch).unwrap();
    db.put([0u8; 17], "after-range").unwrap();
    model.insert(vec![0; 17], b"after-range".to_vec());
    // 40 zero bytes sort after the range's end: untouched by it.
    db.delete_range(b"abc", b"abd").unwrap();
    model.remove(&b"abc"[..]);

    let mut probes: Vec<Vec<u8>> = keys.iter().flat_map(|k| neighbours(k)).collect();
    probes.extend(keys.iter().cloned());
    probes.sort();
    probes.dedup();
    live_matches(&db, &model, &probes);
    let image = copy_dir(live.path());
    db.close().unwrap();
    (image, model, probes)
}

/// Same-batch duplicates of keys whose heads tie, deletes, re-puts and
/// range deletes: the replayed memtable (flush held), then after its
/// flush, then after a reopen, read exactly what the live database did.
/// Fails if a replayed key's filter bit is missing (reads fall through to
/// the table's `table-N`), if the duplicate drop keeps the first of equal
/// versions, or if it treats different keys with equal heads as equal.
#[test]
fn replayed_shaped_keys_read_the_model_before_and_after_the_flush() {
    let (image, model, probes) = shaped_image();
    {
        let (db, gate) = open_held(image.path(), keep_tables());
        let s = db.stats();
        assert!(s.recovery.records >= 10, "{:?}", s.recovery);
        assert_eq!(
            s.immutable_memtables, 1,
            "the replayed memtable is held unflushed"
        );
        check(&db, &model, &probes, "replayed, flush held");
        gate.release();
        wait_idle(&db);
        assert_eq!(db.stats().immutable_memtables, 0);
        check(&db, &model, &probes, "replayed, flushed");
        db.close().unwrap();
    }
    let db = Database::open_with(image.path(), keep_tables()).unwrap();
    assert_eq!(db.stats().recovery.records, 0);
    check(&db, &model, &probes, "reopened after the flush");
    db.close().unwrap();
}

/// A key made of one of a few long shared prefixes, a number, and a tail
/// that is empty, NULs, or letters: many keys tie on their 16-byte heads.
fn random_key(rng: &mut Rng) -> Vec<u8> {
    const PREFIXES: [&[u8]; 5] = [
        b"",
        b"u",
        b"user/0000000000/",
        b"user/0000000000/x",
        b"\0\0\0\0",
    ];
    let mut k = PREFIXES[rng.below(PREFIXES.len() as u64) as usize].to_vec();
    k.extend_from_slice(format!("{}", rng.below(400)).as_bytes());
    match rng.below(4) {
        0 => {}
        1 => k.extend(std::iter::repeat_n(0u8, 1 + rng.below(20) as usize)),
        2 => k.extend(std::iter::repeat_n(b'q', 1 + rng.below(20) as usize)),
        _ => k.push(b'a' + rng.below(3) as u8),
    }
    k
}

/// Thousands of random writes in batches of 1 to 20 (often one key twice
/// or three times in a batch), over several WAL segments whose memtables
/// are sealed but held unflushed when the image is taken: one replay
/// gathers them all into one memtable.
#[test]
fn a_replay_of_several_segments_with_duplicates_reads_the_model() {
    let live = tempfile::tempdir().unwrap();
    let gate = TableGate::default();
    let live_options = keep_tables()
        .memtable_size(256 << 10)
        .max_immutable_memtables(8)
        .fs(Arc::new(WrappedFs::os(gate.clone())));
    let db = Database::open_with(live.path(), live_options).unwrap();
    let held = HeldGate(gate);
    let mut rng = Rng(0x5eed_0038);
    let mut model = Model::new();
    let mut probes = Vec::new();
    let mut n = 0u64;
    while with_ext(live.path(), "wal").len() < 4 {
        let mut batch = WriteBatch::new();
        let mut last: Vec<Vec<u8>> = Vec::new();
        for _ in 0..1 + rng.below(20) {
            n += 1;
            let k = match (last.is_empty(), rng.below(3)) {
                (false, 0) => last[rng.below(last.len() as u64) as usize].clone(),
                _ => random_key(&mut rng),
            };
            last.push(k.clone());
            if rng.below(6) == 0 {
                batch.delete(&k).unwrap();
                model.remove(&k);
            } else {
                let len = [1usize, 10, 100, 1000][rng.below(4) as usize];
                let mut v = format!("{n}:").into_bytes();
                v.resize(len.max(v.len()), b'v');
                batch.put(&k, &v).unwrap();
                model.insert(k.clone(), v);
            }
            probes.push([&k[..], b"~"].concat());
        }
        db.write(batch).unwrap();
        assert!(n < 400_000, "the WAL never reached 4 segments");
    }
    assert_eq!(db.stats().tables, 0, "flushes are held");
    probes.sort();
    probes.dedup();
    probes.retain(|k| !model.contains_key(k));
    live_matches(&db, &model, &probes);
    let image = copy_dir(live.path());
    held.release();
    db.close().unwrap();
    drop(held);

    let segments = with_ext(image.path(), "wal").len();
    assert!(segments >= 4, "{segments} segments");
    {
        let (db, gate) = open_held(image.path(), keep_tables());
        let s = db.stats();
        assert!(s.recovery.segment_ends.len() >= 4, "{:?}", s.recovery);
        assert_eq!(s.immutable_memtables, 1);
        check(&db, &model, &probes, "replayed, flush held");
        gate.release();
        wait_idle(&db);
        check(&db, &model, &probes, "replayed, flushed");
        db.close().unwrap();
    }
    let db = Database::open_with(image.path(), keep_tables()).unwrap();
    check(&db, &model, &probes, "reopened after the flush");
    db.close().unwrap();
}

/// A replay of one to ten versions (fewer than the prefetch distance, and
/// just past it), each a single batch: every key is found.
#[test]
fn small_replays_around_the_prefetch_distance_find_every_key() {
    for count in 1..=10usize {
        let live = tempfile::tempdir().unwrap();
        let db = Database::open_with(live.path(), keep_tables()).unwrap();
        let mut model = Model::new();
        let mut batch = WriteBatch::new();
        for i in 0..count {
            // Descending, so key order is the reverse of batch order.
            let k = format!("0123456789abcdef{}", count - i).into_bytes();
            batch.put(&k, format!("first-{i}")).unwrap();
            batch.put(&k, format!("v{i}")).unwrap();
            model.insert(k, format!("v{i}").into_bytes());
        }
        db.write(batch).unwrap();
        let image = copy_dir(live.path());
        db.close().unwrap();
        let (db, gate) = open_held(image.path(), keep_tables());
        assert_eq!(db.stats().immutable_memtables, 1);
        check(
            &db,
            &model,
            &[b"0123456789abcdef".to_vec()],
            &format!("{count} keys"),
        );
        gate.release();
        wait_idle(&db);
        check(&db, &model, &[], &format!("{count} keys, flushed"));
        db.close().unwrap();
    }
}

/// A torn last record: replay cuts it, and the memtable built from the
/// records before it finds each of their keys.
#[test]
fn a_torn_tail_leaves_every_earlier_key_readable() {
    let image = torn_image(2);
    let mut model = Model::new();
    for t in 0..2 {
        for i in 0..20u32 {
            model.insert(
                format!("key{t:03}-{i:03}").into_bytes(),
                format!("v{t}-{i}").into_bytes(),
            );
        }
    }
    for i in 0..50u32 {
        model.insert(format!("wal{i:03}").into_bytes(), vec![b'w'; 200]);
    }
    let (db, gate) = open_held(image.path(), keep_tables());
    let s = db.stats();
    assert!(s.recovery.dropped_tail.is_some(), "{:?}", s.recovery);
    assert_eq!(s.recovery.records, 50, "{:?}", s.recovery);
    check(&db, &model, &[b"torn".to_vec()], "torn tail, flush held");
    gate.release();
    wait_idle(&db);
    check(&db, &model, &[b"torn".to_vec()], "torn tail, flushed");
    db.close().unwrap();
}

/// A damaged record followed by valid ones (not a torn tail): the open
/// fails with corruption, changes no file, and the image with the byte
/// restored then recovers every write.
#[test]
fn an_error_mid_replay_fails_the_open_and_changes_nothing() {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    let mut model = Model::new();
    for i in 0..40u32 {
        let k = format!("0123456789abcdef/{i:02}").into_bytes();
        let v = vec![b'a' + (i % 26) as u8; 300];
        db.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    let image = copy_dir(live.path());
    db.close().unwrap();
    let segment = with_ext(image.path(), "wal").pop().unwrap();
    let good = fs::read(&segment).unwrap();
    // Inside a value about a third of the way in: a valid record follows.
    let at = good.len() / 3;
    let mut bad = good.clone();
    bad[at] ^= 0x55;
    fs::write(&segment, &bad).unwrap();
    let before = contents(image.path());
    let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(
        contents(image.path()) == before,
        "a failed open changed files"
    );
    fs::write(&segment, &good).unwrap();
    let (db, gate) = open_held(image.path(), keep_tables());
    check(&db, &model, &[], "repaired image, flush held");
    gate.release();
    wait_idle(&db);
    db.close().unwrap();
}
