//! Range deletes (`Database::delete_range`) against a model.
//!
//! The model is a `BTreeMap` of the current contents plus, for every live
//! snapshot, a copy of the map as it was when the snapshot was taken. Random
//! sequences of puts, deletes, range deletes (alone and inside batches with
//! point writes), flushes, full compactions, snapshots taken and released,
//! and reopens run against both; every get and scan (forward, reverse,
//! bounded, prefix, through snapshots too) must agree with the model. The
//! memtable is 2 KiB, tables hold 256-byte blocks and 1 KiB target files
//! with automatic compaction on, so range tombstones are flushed, merged,
//! split between compaction outputs and dropped at the bottom while older
//! snapshots still read what they covered.
//!
//! Plus: transaction conflicts with a range delete committed after the
//! transaction's snapshot, and crash recovery (kill and power cut through
//! the engine's `PowerLossFs`) around a range delete.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::Config;
use toondb_storage::io::{Crash, FileSystem, PowerCut, PowerLossFs};
use toondb_storage::{
    Database, ErrorKind, Isolation, Options, ScanOptions, Snapshot, TransactionOptions, WriteBatch,
    WriteOptions,
};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const ALPHABET: &[u8] = b"abc\x00\xff";

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    DeleteRange(Vec<u8>, Vec<u8>),
    /// A batch: point writes plus one range delete (which takes effect
    /// before them).
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>, Vec<u8>, Vec<u8>),
    Flush,
    Compact,
    TakeSnapshot,
    ReleaseSnapshot(usize),
    Reopen,
    Get(Vec<u8>),
    Scan(ScanOptions),
    SnapshotRead(usize, ScanOptions),
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(ALPHABET), 1..=3)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..60)
}

fn bound() -> impl Strategy<Value = Bound<Vec<u8>>> {
    prop_oneof![
        2 => key().prop_map(Bound::Included),
        2 => key().prop_map(Bound::Excluded),
        1 => Just(Bound::Unbounded),
    ]
}

fn scan_options() -> impl Strategy<Value = ScanOptions> {
    let ranged = (bound(), bound(), any::<bool>()).prop_map(|(lower, upper, reverse)| {
        ScanOptions::default()
            .lower(lower)
            .upper(upper)
            .reverse(reverse)
    });
    let prefixed = (key(), any::<bool>())
        .prop_map(|(p, reverse)| ScanOptions::prefix(&p[..1]).reverse(reverse));
    prop_oneof![3 => ranged, 1 => prefixed]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (key(), value()).prop_map(|(k, v)| Op::Put(k, v)),
        6 => key().prop_map(Op::Delete),
        6 => (key(), key()).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        2 => (
            prop::collection::vec((key(), prop::option::of(value())), 1..4),
            key(),
            key()
        )
            .prop_map(|(w, a, b)| Op::Batch(w, a, b)),
        2 => Just(Op::Flush),
        2 => Just(Op::Compact),
        3 => Just(Op::TakeSnapshot),
        2 => (0usize..4).prop_map(Op::ReleaseSnapshot),
        1 => Just(Op::Reopen),
        6 => key().prop_map(Op::Get),
        4 => scan_options().prop_map(Op::Scan),
        4 => ((0usize..4), scan_options()).prop_map(|(i, o)| Op::SnapshotRead(i, o)),
    ]
}

fn options() -> Options {
    Options::default()
        .memtable_size(2048)
        .block_size(256)
        .target_file_size(1024)
        .level_base_bytes(4096)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
}

fn in_bounds(key: &[u8], o: &ScanOptions) -> bool {
    let lo = match &o.lower {
        Bound::Included(l) => key >= l.as_slice(),
        Bound::Excluded(l) => key > l.as_slice(),
        Bound::Unbounded => true,
    };
    let hi = match &o.upper {
        Bound::Included(u) => key <= u.as_slice(),
        Bound::Excluded(u) => key < u.as_slice(),
        Bound::Unbounded => true,
    };
    lo && hi
}

fn model_scan(model: &Model, o: &ScanOptions) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<_> = model
        .iter()
        .filter(|(k, _)| in_bounds(k, o))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if o.reverse {
        out.reverse();
    }
    out
}

/// Whether `[a, b)` is a range `delete_range` accepts: non-empty and clear
/// of the reserved table keys `ff 00 01 ..`.
fn valid_range(a: &[u8], b: &[u8]) -> bool {
    a < b && !(a < &b"\xff\x00\x02"[..] && b > &b"\xff\x00\x01"[..])
}

fn model_delete_range(model: &mut Model, start: &[u8], end: &[u8]) {
    model.retain(|k, _| !(k.as_slice() >= start && k.as_slice() < end));
}

fn collect(iter: toondb_storage::DbIter) -> Vec<(Vec<u8>, Vec<u8>)> {
    iter.map(|r| r.unwrap()).collect()
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut db = Database::open_with(dir.path(), options()).unwrap();
    let mut model = Model::new();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v) => {
                db.put(k, v).unwrap();
                model.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                db.delete(k).unwrap();
                model.remove(k);
            }
            Op::DeleteRange(a, b) => {
                let r = db.delete_range(a, b);
                if valid_range(a, b) {
                    r.unwrap();
                    model_delete_range(&mut model, a, b);
                } else {
                    prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
                }
            }
            Op::Batch(writes, a, b) => {
                let mut batch = WriteBatch::new();
                for (k, v) in writes {
                    match v {
                        Some(v) => batch.put(k, v).unwrap(),
                        None => batch.delete(k).unwrap(),
                    };
                }
                if valid_range(a, b) {
                    batch.delete_range(a, b).unwrap();
                    model_delete_range(&mut model, a, b);
                }
                for (k, v) in writes {
                    match v {
                        Some(v) => model.insert(k.clone(), v.clone()),
                        None => model.remove(k),
                    };
                }
                db.write(batch).unwrap();
            }
            Op::Flush => db.flush().unwrap(),
            Op::Compact => db.compact().unwrap(),
            Op::TakeSnapshot => {
                if snaps.len() < 4 {
                    snaps.push((db.snapshot().unwrap(), model.clone()));
                }
            }
            Op::ReleaseSnapshot(i) => {
                if *i < snaps.len() {
                    snaps.remove(*i);
                }
            }
            Op::Reopen => {
                snaps.clear();
                db.close().unwrap();
                drop(db);
                db = Database::open_with(dir.path(), options()).unwrap();
            }
            Op::Get(k) => {
                prop_assert_eq!(db.get(k).unwrap(), model.get(k).cloned(), "step {}", step);
            }
            Op::Scan(o) => {
                let got = collect(db.iter(o.clone()).unwrap());
                prop_assert_eq!(got, model_scan(&model, o), "step {} {:?}", step, o);
            }
            Op::SnapshotRead(i, o) => {
                if let Some((snap, old)) = snaps.get(*i) {
                    let got = collect(snap.iter(o.clone()).unwrap());
                    prop_assert_eq!(got, model_scan(old, o), "step {} snapshot {}", step, i);
                    for k in old.keys().chain(model.keys()).take(8) {
                        prop_assert_eq!(snap.get(k).unwrap(), old.get(k).cloned());
                    }
                }
            }
        }
    }
    // Everything, both ways, and every key the model ever held.
    let all = ScanOptions::default();
    prop_assert_eq!(
        collect(db.iter(all.clone()).unwrap()),
        model_scan(&model, &all)
    );
    let rev = ScanOptions::default().reverse(true);
    prop_assert_eq!(
        collect(db.iter(rev.clone()).unwrap()),
        model_scan(&model, &rev)
    );
    for (snap, old) in &snaps {
        prop_assert_eq!(
            collect(snap.iter(all.clone()).unwrap()),
            model_scan(old, &all)
        );
    }
    snaps.clear();
    // Once nothing old is pinned, a full compaction leaves no tombstone
    // behind and still agrees with the model.
    db.compact().unwrap();
    prop_assert_eq!(
        collect(db.iter(all.clone()).unwrap()),
        model_scan(&model, &all)
    );
    db.close().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    prop_assert_eq!(
        collect(db.iter(all.clone()).unwrap()),
        model_scan(&model, &all)
    );
    db.close().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    })]
    #[test]
    fn range_deletes_match_the_model(ops in prop::collection::vec(op(), 1..160)) {
        run(&ops)?;
    }
}

/// A range tombstone that outlives several compactions while a snapshot
/// older than it is held: the snapshot keeps reading the old keys, new
/// readers never see them, and after the snapshot goes a compaction
/// reclaims the space (the keys are gone from the table files).
#[test]
fn snapshot_older_than_the_range_delete_keeps_its_view_through_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), options()).unwrap();
    for i in 0..400u32 {
        db.put(format!("k{i:04}"), vec![7u8; 32]).unwrap();
    }
    db.flush().unwrap();
    let old = db.snapshot().unwrap();
    db.delete_range("k0100", "k0300").unwrap();
    db.put("k0150", "new").unwrap();
    for _ in 0..2 {
        db.flush().unwrap();
        db.compact().unwrap();
        assert_eq!(old.get("k0200").unwrap(), Some(vec![7u8; 32]));
        assert_eq!(old.iter(ScanOptions::default()).unwrap().count(), 400);
        assert_eq!(db.get("k0200").unwrap(), None);
        assert_eq!(db.get("k0150").unwrap(), Some(b"new".to_vec()));
        assert_eq!(db.get("k0300").unwrap(), Some(vec![7u8; 32]));
        assert_eq!(db.iter(ScanOptions::default()).unwrap().count(), 201);
    }
    let before = db.stats().table_bytes;
    drop(old);
    db.compact().unwrap();
    assert!(
        db.stats().table_bytes < before / 2,
        "compaction dropped the covered keys"
    );
    assert_eq!(db.iter(ScanOptions::default()).unwrap().count(), 201);
    db.close().unwrap();
}

#[test]
fn transactions_conflict_with_a_later_range_delete() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.put("m", "1").unwrap();
    for isolation in [Isolation::Snapshot, Isolation::Serializable] {
        let opts = TransactionOptions::default().isolation(isolation);
        // Wrote a key the range delete covers.
        let t = db.transaction_with(opts).unwrap();
        t.put("c", "x").unwrap();
        db.delete_range("a", "e").unwrap();
        assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
        // Writes outside the range commit.
        let t = db.transaction_with(opts).unwrap();
        t.put("z", "x").unwrap();
        db.delete_range("a", "e").unwrap();
        t.commit().unwrap();
    }
    // Serializable: a point read and a range read of cleared keys conflict.
    let opts = TransactionOptions::default().isolation(Isolation::Serializable);
    let t = db.transaction_with(opts).unwrap();
    assert_eq!(t.get("m").unwrap(), Some(b"1".to_vec()));
    t.put("out", "x").unwrap();
    db.delete_range("l", "n").unwrap();
    assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
    let t = db.transaction_with(opts).unwrap();
    let _ = t.iter(ScanOptions::prefix(b"q")).unwrap().count();
    t.put("out", "y").unwrap();
    db.delete_range("q1", "q2").unwrap();
    assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
    // ... also when the range delete is flushed into a table first.
    let t = db.transaction_with(opts).unwrap();
    let _ = t.get("s").unwrap();
    t.put("out", "z").unwrap();
    db.delete_range("r", "t").unwrap();
    db.flush().unwrap();
    assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
    // A transaction reads through a range delete older than its snapshot.
    db.put("w1", "1").unwrap();
    db.delete_range("w", "x").unwrap();
    let t = db.transaction().unwrap();
    assert_eq!(t.get("w1").unwrap(), None);
    db.close().unwrap();
}

#[test]
fn delete_bounds_skips_reserved_keys_and_handles_open_ends() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for k in ["a", "b", "c", "\u{7f}z"] {
        db.put(k, "v").unwrap();
    }
    db.put(b"\xff\xff", "v").unwrap();
    let none = db
        .delete_bounds(
            Bound::Excluded(b"c".to_vec()),
            Bound::Excluded(b"c".to_vec()),
            WriteOptions::default(),
        )
        .unwrap();
    assert!(none.is_none());
    db.delete_bounds(
        Bound::Excluded(b"a".to_vec()),
        Bound::Included(b"b".to_vec()),
        WriteOptions::default(),
    )
    .unwrap()
    .unwrap();
    let keys = |db: &Database| -> Vec<Vec<u8>> {
        db.iter(ScanOptions::default())
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect()
    };
    assert_eq!(
        keys(&db),
        vec![
            b"a".to_vec(),
            b"c".to_vec(),
            b"\x7fz".to_vec(),
            b"\xff\xff".to_vec()
        ]
    );
    db.delete_bounds(Bound::Unbounded, Bound::Unbounded, WriteOptions::default())
        .unwrap()
        .unwrap();
    assert!(keys(&db).is_empty());
    assert!(
        db.delete_range(b"\xff", b"\xff\x01").is_err(),
        "reaches into reserved keys"
    );
    db.close().unwrap();
}

fn powerloss_options(fs: &PowerLossFs) -> Options {
    options().fs(Arc::new(fs.clone())).memtable_size(4096)
}

/// A range delete committed durably survives a power cut; one that was
/// never synced is either wholly there or wholly absent (with everything
/// committed after it), and the database opens either way. Repeated with
/// the tombstone in the WAL only, flushed, and mid-compaction.
#[test]
fn range_delete_survives_power_cuts_and_kills() {
    for (case, flush_after, cut_kind) in [
        (0, false, "power"),
        (1, true, "power"),
        (2, false, "kill"),
        (3, true, "kill"),
        (4, false, "pages"),
    ] {
        let dir = std::path::PathBuf::from(format!("/rangedel-crash-{case}/db"));
        let fs = PowerLossFs::new();
        fs.create_dir_all(&dir).unwrap();
        let mut p = dir.clone();
        while let Some(parent) = p.parent() {
            fs.sync_dir(parent).unwrap();
            p = parent.to_path_buf();
        }
        let db = Database::open_with(&dir, powerloss_options(&fs)).unwrap();
        for i in 0..300u32 {
            db.put(format!("k{i:03}"), [1u8; 40]).unwrap();
        }
        db.flush().unwrap();
        db.write_with(
            {
                let mut b = WriteBatch::new();
                b.delete_range("k100", "k200").unwrap();
                b
            },
            WriteOptions::sync(true),
        )
        .unwrap();
        // Not synced: may be lost, but only as a whole.
        let mut b = WriteBatch::new();
        b.delete_range("k000", "k050").unwrap();
        b.put("k010", "after").unwrap();
        db.write(b).unwrap();
        if flush_after {
            db.flush().unwrap();
            db.compact().unwrap();
        }
        match cut_kind {
            "power" => fs.power_cut(PowerCut::drop_unsynced()),
            "pages" => fs.power_cut(PowerCut::pages(case)),
            _ => fs.kill(),
        }
        drop(db);
        fs.restart();
        let db = Database::open_with(&dir, powerloss_options(&fs)).unwrap();
        for i in 100..200u32 {
            assert_eq!(
                db.get(format!("k{i:03}")).unwrap(),
                None,
                "case {case}: k{i}"
            );
        }
        assert!(db.get("k200").unwrap().is_some(), "case {case}");
        assert!(db.get("k099").unwrap().is_some(), "case {case}");
        let second = db.get("k010").unwrap();
        let k020 = db.get("k020").unwrap();
        match second.as_deref() {
            Some(b"after") => assert_eq!(k020, None, "case {case}: the batch is atomic"),
            Some(_) => assert!(k020.is_some(), "case {case}: the batch is atomic"),
            None => panic!("case {case}: k010 lost"),
        }
        if cut_kind == "kill" || flush_after {
            assert_eq!(second.as_deref(), Some(&b"after"[..]), "case {case}");
        }
        db.compact().unwrap();
        assert!(db.verify().unwrap().problems.is_empty());
        db.close().unwrap();
    }
}

/// A crash at every mutating file operation of the flush and compactions
/// that carry a durable range tombstone into tables and through merges (and
/// drop it at the bottom): after any of them the database opens with the
/// range deleted and every other key intact.
#[test]
fn crash_at_every_step_of_flushing_and_compacting_a_range_tombstone() {
    let mut n = 1;
    let mut clean_runs = 0;
    while clean_runs < 2 && n < 400 {
        for crash in [Crash::Kill, Crash::PowerCut(PowerCut::random(n, true))] {
            let dir = std::path::PathBuf::from(format!("/rangedel-steps-{n}/db"));
            let fs = PowerLossFs::new();
            fs.create_dir_all(&dir).unwrap();
            let mut p = dir.clone();
            while let Some(parent) = p.parent() {
                fs.sync_dir(parent).unwrap();
                p = parent.to_path_buf();
            }
            let opts = powerloss_options(&fs).auto_compaction(false);
            let db = Database::open_with(&dir, opts.clone()).unwrap();
            for i in 0..200u32 {
                db.put(format!("k{i:03}"), [2u8; 30]).unwrap();
            }
            db.flush().unwrap();
            let mut b = WriteBatch::new();
            b.delete_range("k050", "k150").unwrap();
            db.write_with(b, WriteOptions::sync(true)).unwrap();
            fs.crash_after(n, crash);
            let finished = db.flush().and_then(|()| db.compact()).is_ok() && !fs.is_down();
            fs.disarm();
            if !fs.is_down() {
                fs.kill();
            }
            drop(db);
            fs.restart();
            let db = Database::open_with(&dir, opts).unwrap();
            for i in 0..200u32 {
                let got = db.get(format!("k{i:03}")).unwrap();
                assert_eq!(
                    got.is_none(),
                    (50..150).contains(&i),
                    "step {n} {crash:?}: k{i:03}"
                );
            }
            assert_eq!(db.iter(ScanOptions::default()).unwrap().count(), 100);
            db.compact().unwrap();
            assert_eq!(
                db.iter(ScanOptions::default().reverse(true))
                    .unwrap()
                    .count(),
                100
            );
            db.close().unwrap();
            if finished {
                clean_runs += 1;
            }
        }
        n += 1;
    }
    assert!(
        n > 5,
        "the crash points covered the flush and the compaction"
    );
}

/// A scan over a range-deleted piece that holds no newer version steps
/// over it with one re-seek instead of reading every covered version: the
/// data blocks it reads do not grow with the number of cleared keys.
#[test]
fn scans_step_over_cleared_ranges() {
    let blocks_to_scan = |n: u32| -> u64 {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(
            dir.path(),
            Options::default().auto_compaction(false).block_size(256),
        )
        .unwrap();
        for i in 0..n {
            db.put(format!("k{i:06}"), [3u8; 40]).unwrap();
        }
        db.put("z", "kept").unwrap();
        db.flush().unwrap();
        db.delete_range("k", "l").unwrap();
        db.put("k000005", "rewritten").unwrap(); // a newer version in the range
        let before = db.stats().data_blocks_read;
        let got: Vec<_> = db
            .iter(ScanOptions::default())
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(got, vec![b"k000005".to_vec(), b"z".to_vec()]);
        let rev: Vec<_> = db
            .iter(ScanOptions::default().reverse(true))
            .unwrap()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(rev, vec![b"z".to_vec(), b"k000005".to_vec()]);
        let read = db.stats().data_blocks_read - before;
        db.close().unwrap();
        read
    };
    let small = blocks_to_scan(100);
    let large = blocks_to_scan(20_000);
    assert!(
        large <= small + 8,
        "blocks read: {small} for 100 cleared keys, {large} for 20000"
    );
}

#[test]
fn range_delete_spans_from_scan_bounds() {
    use toondb_storage::{range_delete_spans, MAX_KEY_LEN};
    let inc = |k: &[u8]| Bound::Included(k.to_vec());
    let exc = |k: &[u8]| Bound::Excluded(k.to_vec());
    assert_eq!(
        range_delete_spans(inc(b"a"), inc(b"c")),
        vec![(b"a".to_vec(), b"c\x00".to_vec())]
    );
    assert_eq!(
        range_delete_spans(exc(b"a"), exc(b"c")),
        vec![(b"a\x00".to_vec(), b"c".to_vec())]
    );
    assert!(range_delete_spans(exc(b"c"), exc(b"c")).is_empty());
    assert!(range_delete_spans(inc(b"d"), exc(b"c")).is_empty());
    // Everything: around the reserved table keys, up to past the largest key.
    let mut past_all = vec![0xff; MAX_KEY_LEN];
    past_all.push(0);
    assert_eq!(
        range_delete_spans(Bound::Unbounded, Bound::Unbounded),
        vec![
            (vec![0], b"\xff\x00\x01".to_vec()),
            (b"\xff\x00\x02".to_vec(), past_all)
        ]
    );
    // After a key of the maximum length comes its prefix successor.
    let mut longest = vec![b'a'; MAX_KEY_LEN];
    let spans = range_delete_spans(exc(&longest), exc(b"c"));
    longest.truncate(MAX_KEY_LEN - 1);
    longest.push(b'b');
    assert_eq!(spans, vec![(longest, b"c".to_vec())]);
    assert!(range_delete_spans(exc(&vec![0xff; MAX_KEY_LEN]), Bound::Unbounded).is_empty());
}

/// Writers, a range deleter, snapshot takers and background flushes and
/// compactions at once. Every write's and range delete's commit timestamp
/// is recorded; afterwards every snapshot taken during the run must read,
/// for every key, exactly the newest write at or below its timestamp unless
/// a range delete over the key came after that write (and at or below the
/// snapshot). Compaction runs while the snapshots are held, so it must keep
/// what they see and drop only what none of them can.
#[test]
fn concurrent_writes_range_deletes_snapshots_and_compaction_agree() {
    use std::sync::Mutex;
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path(), options()).unwrap());
    /// (key, commit ts, value) of every put.
    type Writes = Vec<(Vec<u8>, u64, Vec<u8>)>;
    /// (start, end, commit ts) of every range delete.
    type Ranges = Vec<(Vec<u8>, Vec<u8>, u64)>;
    let writes: Arc<Mutex<Writes>> = Arc::default();
    let ranges: Arc<Mutex<Ranges>> = Arc::default();
    let key = |i: u64| format!("k{:03}", i % 120).into_bytes();
    let mut threads = Vec::new();
    for w in 0..2u64 {
        let (db, writes) = (db.clone(), writes.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..1500u64 {
                let k = key(i * 7 + w * 13);
                let v = format!("w{w}-{i}").into_bytes();
                let mut b = WriteBatch::new();
                b.put(&k, &v).unwrap();
                let ts = db.write(b).unwrap();
                writes.lock().unwrap().push((k, ts, v));
            }
        }));
    }
    {
        let (db, ranges) = (db.clone(), ranges.clone());
        threads.push(std::thread::spawn(move || {
            for i in 0..60u64 {
                let a = key(i * 37);
                let b = key(i * 37 + 1 + i % 30);
                if a < b {
                    let ts = db.delete_range(&a, &b).unwrap();
                    ranges.lock().unwrap().push((a, b, ts));
                }
                if i % 10 == 0 {
                    db.flush().unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }));
    }
    let mut snaps = Vec::new();
    for _ in 0..25 {
        snaps.push(db.snapshot().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(4));
    }
    for t in threads {
        t.join().unwrap();
    }
    db.compact().unwrap();
    snaps.push(db.snapshot().unwrap());
    let writes = writes.lock().unwrap();
    let ranges = ranges.lock().unwrap();
    for snap in &snaps {
        let at = snap.ts();
        let mut want: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for i in 0..120u64 {
            let k = key(i);
            let newest = writes
                .iter()
                .filter(|(wk, ts, _)| *wk == k && *ts <= at)
                .max_by_key(|(_, ts, _)| *ts);
            if let Some((_, ts, v)) = newest {
                let deleted = ranges.iter().any(|(a, b, rts)| {
                    a.as_slice() <= k.as_slice()
                        && k.as_slice() < b.as_slice()
                        && ts < rts
                        && *rts <= at
                });
                if !deleted {
                    want.insert(k, v.clone());
                }
            }
        }
        let got: BTreeMap<Vec<u8>, Vec<u8>> = snap
            .iter(ScanOptions::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(got, want, "snapshot at {at}");
        for (k, v) in &want {
            assert_eq!(snap.get(k).unwrap().as_ref(), Some(v));
        }
    }
    drop(snaps);
    db.compact().unwrap();
}

/// A range tombstone compacted out of level 0 while the keys it deletes
/// sit at the bottom level must be kept (it reaches them only later); were
/// it dropped as soon as every reader saw it, the keys would come back.
#[test]
fn a_tombstone_with_older_keys_below_is_kept_through_partial_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .l0_compaction_trigger(1)
        .level_base_bytes(4096)
        .level_size_ratio(10);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    let idle_after = |db: &Database, compactions: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while db.stats().compactions + db.stats().trivial_moves <= compactions
            || db.stats().maintenance_busy
        {
            assert!(std::time::Instant::now() < deadline, "no compaction ran");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    for i in 0..300u32 {
        db.put(format!("k{i:03}"), [5u8; 50]).unwrap();
    }
    let before = db.stats().compactions + db.stats().trivial_moves;
    // Over level 1's 4 KiB target, so compact() writes level 2 (it used to
    // write level 1 and leave the move down to automatic compaction).
    db.compact().unwrap();
    idle_after(&db, before);
    let s = db.stats();
    assert!(
        s.levels[1].tables == 0 && s.levels[2..].iter().any(|l| l.tables > 0),
        "the keys sit below level 1: {s:?}"
    );
    let before = s.compactions + s.trivial_moves;
    db.delete_range("k100", "k200").unwrap();
    db.flush().unwrap();
    // The automatic compaction takes the tombstone's table out of level 0
    // into level 1, above the keys it deletes.
    idle_after(&db, before);
    assert_eq!(db.stats().levels[0].tables, 0, "{:?}", db.stats());
    let live = |db: &Database| db.iter(ScanOptions::default()).unwrap().count();
    assert_eq!(live(&db), 200);
    assert_eq!(db.get("k150").unwrap(), None);
    db.close().unwrap();
    let db = Database::open_with(dir.path(), opts).unwrap();
    assert_eq!(live(&db), 200);
    assert_eq!(db.get("k150").unwrap(), None);
    db.compact().unwrap();
    assert_eq!(live(&db), 200);
    db.close().unwrap();
}
