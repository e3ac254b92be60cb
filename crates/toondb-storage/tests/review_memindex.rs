//! Review of the memtable point index (memindex.rs): the public API against
//! a model, with snapshots, transactions (conflicts through `newest_ts`),
//! batches that write a key several times, range deletes, flushes and
//! reopens, with memtables tiny enough that their indexes give up and large
//! enough that they never do; and concurrent readers of old snapshots while
//! a writer overwrites keys across memtable rotations.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use proptest::test_runner::Config;
use toondb_storage::{
    Database, ErrorKind, Isolation, Options, Snapshot, Transaction, TransactionOptions, WriteBatch,
};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

const KEYS: u8 = 24;

/// Short keys and keys sharing a prefix longer than the skiplist's 16-byte
/// inline head.
fn key(i: u8) -> Vec<u8> {
    if i == KEYS - 1 {
        // Longer than a one-byte varint can say.
        let mut k = b"a-long-shared-prefix-of-many-bytes/".to_vec();
        k.resize(300, b'z');
        return k;
    }
    if i.is_multiple_of(2) {
        format!("k{i:02}").into_bytes()
    } else {
        format!("a-long-shared-prefix-of-many-bytes/{i:02}").into_bytes()
    }
}

#[derive(Debug, Clone)]
enum BOp {
    Put(u8, u8),
    Delete(u8),
    /// Range delete of [key(a), key(b)) by sorted key bytes.
    Range(u8, u8),
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    Batch(Vec<BOp>),
    DeleteRange(u8, u8),
    Get(u8),
    Snapshot,
    SnapGet(usize, u8),
    Begin(bool),
    TxnPut(usize, u8, u8),
    TxnDelete(usize, u8),
    TxnGet(usize, u8),
    TxnCommit(usize),
    Flush,
    Reopen,
    /// One batch of this many new keys (so small indexes fill up and give
    /// up), then a read of one of them.
    Fill(u8, u16),
}

fn value(k: u8, v: u8) -> Vec<u8> {
    // Empty values too, and some longer than a one-byte varint can say.
    let long = if v > 240 { 300 } else { 0 };
    vec![k ^ v; usize::from(v % 5) * 7 + long]
}

fn bop() -> impl Strategy<Value = BOp> {
    prop_oneof![
        6 => (0..KEYS, any::<u8>()).prop_map(|(k, v)| BOp::Put(k, v)),
        3 => (0..KEYS).prop_map(BOp::Delete),
        1 => (0..KEYS, 0..KEYS).prop_map(|(a, b)| BOp::Range(a, b)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (0..KEYS, any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        6 => (0..KEYS).prop_map(Op::Delete),
        12 => prop::collection::vec(bop(), 1..12).prop_map(Op::Batch),
        2 => (0..KEYS, 0..KEYS).prop_map(|(a, b)| Op::DeleteRange(a, b)),
        15 => (0..KEYS).prop_map(Op::Get),
        3 => Just(Op::Snapshot),
        10 => (any::<usize>(), 0..KEYS).prop_map(|(s, k)| Op::SnapGet(s, k)),
        3 => any::<bool>().prop_map(Op::Begin),
        6 => (any::<usize>(), 0..KEYS, any::<u8>()).prop_map(|(t, k, v)| Op::TxnPut(t, k, v)),
        2 => (any::<usize>(), 0..KEYS).prop_map(|(t, k)| Op::TxnDelete(t, k)),
        6 => (any::<usize>(), 0..KEYS).prop_map(|(t, k)| Op::TxnGet(t, k)),
        3 => any::<usize>().prop_map(Op::TxnCommit),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        2 => (1u8..120, any::<u16>()).prop_map(|(n, r)| Op::Fill(n, r)),
    ]
}

struct Model {
    map: Map,
    clock: u64,
    /// When each key last got a version or was covered by a range delete.
    changed: BTreeMap<Vec<u8>, u64>,
}

impl Model {
    fn range(&mut self, a: u8, b: u8) -> Option<(Vec<u8>, Vec<u8>)> {
        let (x, y) = (key(a), key(b));
        let (s, e) = if x < y { (x, y) } else { (y, x) };
        (s != e).then_some((s, e))
    }

    fn delete_range_now(&mut self, s: &[u8], e: &[u8]) {
        self.map
            .retain(|k, _| !(k.as_slice() >= s && k.as_slice() < e));
        for i in 0..KEYS {
            let k = key(i);
            if k.as_slice() >= s && k.as_slice() < e {
                self.changed.insert(k, self.clock);
            }
        }
    }

    fn write(&mut self, k: Vec<u8>, v: Option<Vec<u8>>) {
        self.changed.insert(k.clone(), self.clock);
        match v {
            Some(v) => self.map.insert(k, v),
            None => self.map.remove(&k),
        };
    }
}

struct Txn {
    txn: Transaction,
    seen: Map,
    begun: u64,
    serializable: bool,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reads: Vec<Vec<u8>>,
}

fn run(ops: &[Op], memtable_size: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        Options::default()
            .memtable_size(memtable_size)
            .block_size(256)
    };
    let mut db = Database::open_with(dir.path(), options()).unwrap();
    let mut m = Model {
        map: Map::new(),
        clock: 0,
        changed: BTreeMap::new(),
    };
    let mut snaps: Vec<(Snapshot, Map)> = Vec::new();
    let mut txns: Vec<Option<Txn>> = Vec::new();
    let mut filled = 0u32;
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Put(k, v) => {
                db.put(key(*k), value(*k, *v)).unwrap();
                m.clock += 1;
                m.write(key(*k), Some(value(*k, *v)));
            }
            Op::Delete(k) => {
                db.delete(key(*k)).unwrap();
                m.clock += 1;
                m.write(key(*k), None);
            }
            Op::DeleteRange(a, b) => {
                if let Some((s, e)) = m.range(*a, *b) {
                    db.delete_range(s.clone(), e.clone()).unwrap();
                    m.clock += 1;
                    m.delete_range_now(&s, &e);
                }
            }
            Op::Batch(ops) => {
                let mut batch = WriteBatch::new();
                m.clock += 1;
                // A batch's range deletes take effect before its point ops.
                for op in ops {
                    if let BOp::Range(a, b) = op {
                        if let Some((s, e)) = m.range(*a, *b) {
                            batch.delete_range(s.clone(), e.clone()).unwrap();
                            m.delete_range_now(&s, &e);
                        }
                    }
                }
                for op in ops {
                    match op {
                        BOp::Put(k, v) => {
                            batch.put(key(*k), value(*k, *v)).unwrap();
                            m.write(key(*k), Some(value(*k, *v)));
                        }
                        BOp::Delete(k) => {
                            batch.delete(key(*k)).unwrap();
                            m.write(key(*k), None);
                        }
                        BOp::Range(..) => {}
                    }
                }
                if batch.is_empty() {
                    m.clock -= 1;
                    continue;
                }
                db.write(batch).unwrap();
            }
            Op::Get(k) => {
                prop_assert_eq!(
                    db.get(key(*k)).unwrap(),
                    m.map.get(&key(*k)).cloned(),
                    "step {}: get {}",
                    step,
                    k
                );
            }
            Op::Snapshot => snaps.push((db.snapshot().unwrap(), m.map.clone())),
            Op::SnapGet(s, k) => {
                if snaps.is_empty() {
                    continue;
                }
                let (snap, seen) = &snaps[s % snaps.len()];
                prop_assert_eq!(
                    snap.get(key(*k)).unwrap(),
                    seen.get(&key(*k)).cloned(),
                    "step {}: snapshot get {}",
                    step,
                    k
                );
            }
            Op::Begin(serializable) => {
                let isolation = if *serializable {
                    Isolation::Serializable
                } else {
                    Isolation::Snapshot
                };
                let txn = db
                    .transaction_with(TransactionOptions::default().isolation(isolation))
                    .unwrap();
                txns.push(Some(Txn {
                    txn,
                    seen: m.map.clone(),
                    begun: m.clock,
                    serializable: *serializable,
                    writes: BTreeMap::new(),
                    reads: Vec::new(),
                }));
            }
            Op::TxnPut(t, k, _) | Op::TxnDelete(t, k) if !txns.is_empty() => {
                let n = txns.len();
                let Some(t) = txns[t % n].as_mut() else {
                    continue;
                };
                let v = match op {
                    Op::TxnPut(_, _, v) => Some(value(*k, *v)),
                    _ => None,
                };
                match &v {
                    Some(v) => t.txn.put(key(*k), v).unwrap(),
                    None => t.txn.delete(key(*k)).unwrap(),
                }
                t.writes.insert(key(*k), v);
            }
            Op::TxnGet(t, k) if !txns.is_empty() => {
                let n = txns.len();
                let Some(t) = txns[t % n].as_mut() else {
                    continue;
                };
                let want = match t.writes.get(&key(*k)) {
                    Some(v) => v.clone(),
                    None => t.seen.get(&key(*k)).cloned(),
                };
                prop_assert_eq!(
                    t.txn.get(key(*k)).unwrap(),
                    want,
                    "step {}: txn get {}",
                    step,
                    k
                );
                t.reads.push(key(*k));
            }
            Op::TxnCommit(t) if !txns.is_empty() => {
                let n = txns.len();
                let Some(t) = txns[t % n].take() else {
                    continue;
                };
                let newer = |k: &Vec<u8>| m.changed.get(k).is_some_and(|&c| c > t.begun);
                let conflict =
                    t.writes.keys().any(newer) || (t.serializable && t.reads.iter().any(newer));
                let result = t.txn.commit();
                if t.writes.is_empty() {
                    continue;
                }
                if conflict {
                    prop_assert_eq!(
                        result.as_ref().map_err(|e| e.kind()).err(),
                        Some(ErrorKind::Conflict),
                        "step {}: commit should conflict: {:?}",
                        step,
                        result
                    );
                } else {
                    prop_assert!(result.is_ok(), "step {}: commit failed: {:?}", step, result);
                    m.clock += 1;
                    for (k, v) in t.writes {
                        m.write(k, v);
                    }
                }
            }
            Op::TxnPut(..) | Op::TxnDelete(..) | Op::TxnGet(..) | Op::TxnCommit(..) => {}
            Op::Fill(n, r) => {
                let mut batch = WriteBatch::new();
                m.clock += 1;
                for _ in 0..*n {
                    let k = format!("fill/{filled:05}").into_bytes();
                    batch.put(&k, [filled as u8]).unwrap();
                    m.write(k, Some(vec![filled as u8]));
                    filled += 1;
                }
                db.write(batch).unwrap();
                let k = format!("fill/{:05}", u32::from(*r) % filled).into_bytes();
                prop_assert_eq!(db.get(&k).unwrap(), m.map.get(&k).cloned(), "step {}", step);
            }
            Op::Flush => db.flush().unwrap(),
            Op::Reopen => {
                snaps.clear();
                txns.clear();
                db.close().unwrap();
                drop(db);
                db = Database::open_with(dir.path(), options()).unwrap();
            }
        }
    }
    for i in 0..filled {
        let k = format!("fill/{i:05}").into_bytes();
        prop_assert_eq!(
            db.get(&k).unwrap(),
            m.map.get(&k).cloned(),
            "end: fill {}",
            i
        );
    }
    // Every key at the end, and every live snapshot.
    for i in 0..KEYS {
        prop_assert_eq!(
            db.get(key(i)).unwrap(),
            m.map.get(&key(i)).cloned(),
            "end: {}",
            i
        );
        for (snap, seen) in &snaps {
            prop_assert_eq!(snap.get(key(i)).unwrap(), seen.get(&key(i)).cloned());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 96, failure_persistence: None, ..Config::default() })]

    #[test]
    fn engine_matches_a_model_with_snapshots_and_transactions(
        ops in prop::collection::vec(op(), 1..160),
        size in prop::sample::select(vec![1usize << 10, 4 << 10, 64 << 10, 32 << 20]),
    ) {
        run(&ops, size)?;
    }
}

/// Readers holding snapshots (and transactions) of every age read each
/// key's value as of their timestamp, while one writer overwrites a few keys
/// in batches that write a key several times, with deletes, across many
/// memtable rotations (small memtables whose indexes give up), checkpoints
/// of rotated WAL segments and flushes.
#[test]
fn old_snapshots_read_their_versions_while_keys_are_overwritten() {
    for size in [2usize << 10, 64 << 10, 32 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Database::open_with(
                dir.path(),
                Options::default()
                    .memtable_size(size)
                    // Checkpoint tables of rotated WAL segments too.
                    .wal_size_limit(8 << 10),
            )
            .unwrap(),
        );
        // Commit timestamp -> the whole map after that commit.
        let history: Arc<Mutex<Vec<(u64, Map)>>> = Arc::new(Mutex::new(vec![(0, Map::new())]));
        let done = Arc::new(AtomicBool::new(false));
        const ROUNDS: u32 = 3000;
        let writer = {
            let (db, history, done) = (db.clone(), history.clone(), done.clone());
            std::thread::spawn(move || {
                let mut map = Map::new();
                for n in 0..ROUNDS {
                    let mut b = WriteBatch::new();
                    let k = key((n % 7) as u8);
                    b.put(&k, format!("first{n}")).unwrap();
                    b.put(key((n % 5) as u8 + 10), format!("other{n}")).unwrap();
                    if n % 3 == 0 {
                        b.delete(&k).unwrap();
                    } else {
                        b.put(&k, format!("last{n}")).unwrap();
                    }
                    // New keys, so small indexes fill up.
                    b.put(format!("fill{n}"), b"x").unwrap();
                    let ts = db.write(b).unwrap();
                    map.insert(key((n % 5) as u8 + 10), format!("other{n}").into_bytes());
                    if n % 3 == 0 {
                        map.remove(&k);
                    } else {
                        map.insert(k, format!("last{n}").into_bytes());
                    }
                    map.insert(format!("fill{n}").into_bytes(), b"x".to_vec());
                    history.lock().unwrap().push((ts, map.clone()));
                    if n % 500 == 499 {
                        db.flush().unwrap();
                    }
                }
                done.store(true, Ordering::Release);
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (db, history, done) = (db.clone(), history.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut held: Vec<Snapshot> = Vec::new();
                    let mut checks = 0u64;
                    let mut i = 0u64;
                    while !done.load(Ordering::Acquire) || i < 50 {
                        i += 1;
                        if held.len() < 8 {
                            held.push(db.snapshot().unwrap());
                        } else {
                            held.remove((i as usize) % held.len());
                        }
                        let txn = db.transaction().unwrap();
                        for snap in &held {
                            let ts = snap.ts();
                            // The writer records a commit after it returns:
                            // wait until the history covers `ts`.
                            let want = loop {
                                let h = history.lock().unwrap();
                                if h.last().unwrap().0 >= ts {
                                    let at = h.partition_point(|(t, _)| *t <= ts);
                                    break h[at - 1].1.clone();
                                }
                                drop(h);
                                std::thread::yield_now();
                            };
                            for j in (0..16).map(|j| (j + r) as u8) {
                                let k = key(j);
                                assert_eq!(
                                    snap.get(&k).unwrap(),
                                    want.get(&k).cloned(),
                                    "size {size} key {j} at {ts}"
                                );
                                checks += 1;
                            }
                        }
                        let ts = txn.read_ts();
                        let want = loop {
                            let h = history.lock().unwrap();
                            if h.last().unwrap().0 >= ts {
                                let at = h.partition_point(|(t, _)| *t <= ts);
                                break h[at - 1].1.clone();
                            }
                            drop(h);
                            std::thread::yield_now();
                        };
                        for j in 0..16u8 {
                            assert_eq!(txn.get(key(j)).unwrap(), want.get(&key(j)).cloned());
                        }
                    }
                    checks
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}

/// A replayed memtable (index disabled) is read through the skiplist
/// after a reopen, and at close it is copied into one that owns its bytes
/// (`Memtable::without_segments`, whose index is rebuilt). A snapshot taken
/// before the close reads every key right before it, and fails after it
/// (the public API never returns an answer read from the copy: `Snapshot`
/// checks `is_closed` after the read; the copy's reads are covered by
/// memtable.rs's `replayed_records_match_applying_in_order`). Keys written
/// several times and deleted.
#[test]
fn reads_through_the_copy_a_close_swaps_in_agree() {
    for size in [1usize << 10, 32 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let options = || Options::default().memtable_size(size);
        let mut map = Map::new();
        {
            // Large memtable first: everything stays in the WAL.
            let db = Database::open_with(dir.path(), Options::default()).unwrap();
            for n in 0..400u32 {
                let mut b = WriteBatch::new();
                let k = format!("key/{:03}", n % 150);
                b.put(&k, format!("v{n}")).unwrap();
                if n % 4 == 0 {
                    b.delete(&k).unwrap();
                    map.remove(k.as_bytes());
                } else {
                    map.insert(k.clone().into_bytes(), format!("v{n}").into_bytes());
                }
                db.write(b).unwrap();
            }
            db.close().unwrap();
        }
        let db = Database::open_with(dir.path(), options()).unwrap();
        let snap = db.snapshot().unwrap();
        let check = |snap: &Snapshot, closed: bool| {
            for i in 0..150 {
                let k = format!("key/{i:03}").into_bytes();
                match snap.get(&k) {
                    Ok(v) => assert_eq!(v, map.get(&k).cloned(), "{i} closed {closed}"),
                    Err(e) => assert!(closed, "{e}"),
                }
            }
        };
        check(&snap, false);
        db.close().unwrap();
        check(&snap, true);
    }
}

/// Huge batches (the reused `apply_order` list grows), each writing every
/// key several times with a delete among them, then small batches into the
/// same memtable: the last write of each key in each batch wins, with an
/// index that holds every key and with one that gives up.
#[test]
fn huge_batches_keep_the_last_write_of_each_key() {
    for size in [64usize << 10, 32 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open_with(dir.path(), Options::default().memtable_size(size)).unwrap();
        const N: u32 = 20_000;
        let mut b = WriteBatch::new();
        for round in 0..4u32 {
            for i in 0..N {
                let k = format!("big/{i:06}");
                if round == 2 && i % 3 == 0 {
                    b.delete(&k).unwrap();
                } else {
                    b.put(&k, format!("{round}")).unwrap();
                }
            }
        }
        // Last round deletes every 5th key.
        for i in (0..N).step_by(5) {
            b.delete(format!("big/{i:06}")).unwrap();
        }
        db.write(b).unwrap();
        let snap = db.snapshot().unwrap();
        let mut small = WriteBatch::new();
        small.put("big/000001", "small").unwrap();
        small.delete("big/000002").unwrap();
        small.put("big/000002", "again").unwrap();
        db.write(small).unwrap();
        for i in 0..N {
            let k = format!("big/{i:06}");
            let want = (i % 5 != 0).then(|| b"3".to_vec());
            assert_eq!(snap.get(&k).unwrap(), want, "{k} size {size}");
            let now = match i {
                1 => Some(b"small".to_vec()),
                2 => Some(b"again".to_vec()),
                _ => want,
            };
            assert_eq!(db.get(&k).unwrap(), now, "{k} size {size}");
        }
    }
}

/// Lost updates are what a wrong `newest_ts` would let through: threads
/// increment a few counters in transactions (retrying on conflict) while
/// another thread fills memtables with new keys (small ones rotate and
/// their indexes give up); every successful increment must be counted.
#[test]
fn concurrent_increments_are_never_lost() {
    for size in [1usize << 10, 32 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(
            Database::open_with(dir.path(), Options::default().memtable_size(size)).unwrap(),
        );
        const COUNTERS: u32 = 3;
        const PER_THREAD: u32 = 400;
        let stop = Arc::new(AtomicBool::new(false));
        let filler = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    db.put(format!("fill/{n}"), b"x").unwrap();
                    n += 1;
                }
            })
        };
        let workers: Vec<_> = (0..3u32)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let mut done = 0;
                    let mut i = 0u32;
                    while done < PER_THREAD {
                        i += 1;
                        let k = format!("counter/{}", (i + w) % COUNTERS);
                        let serializable = i.is_multiple_of(2);
                        let options = TransactionOptions::default().isolation(if serializable {
                            Isolation::Serializable
                        } else {
                            Isolation::Snapshot
                        });
                        let txn = db.transaction_with(options).unwrap();
                        let v = txn
                            .get(&k)
                            .unwrap()
                            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()));
                        txn.put(&k, (v + 1).to_le_bytes()).unwrap();
                        match txn.commit() {
                            Ok(_) => done += 1,
                            Err(e) if e.kind() == ErrorKind::Conflict => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        filler.join().unwrap();
        let total: u64 = (0..COUNTERS)
            .map(|c| {
                db.get(format!("counter/{c}"))
                    .unwrap()
                    .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
            })
            .sum();
        assert_eq!(total, u64::from(3 * PER_THREAD), "size {size}");
    }
}
