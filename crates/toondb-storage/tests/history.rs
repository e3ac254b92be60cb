//! A history checker for snapshot isolation, and a concurrent workload it
//! checks.
//!
//! The workload ([`record_history`]) runs several threads of short random
//! transactions over 8 keys (gets, full scans forward and reverse, puts and
//! deletes; every value written is unique, `t<id>:<n>`), some serializable,
//! some rolled back, plus a thread of plain batch writes (`db.write`) and a
//! thread reading through `db.snapshot()`. The memtable is 8 KiB and table
//! blocks 512 bytes, so reads cross memtables, sealed memtables, table files
//! and block boundaries; some snapshots are held to the end and read again
//! after a final flush. Every transaction
//! records its read timestamp, its reads and writes in program order (each
//! key read is read again before commit), and its outcome with the commit
//! timestamp. The initial values and the final state are recorded too.
//!
//! [`check`] reconstructs the committed state at every timestamp from the
//! committed writes ordered by commit timestamp, and reports:
//! - (a) dirty and aborted reads: a value read that no committed
//!   transaction wrote (`UnknownValue`), that an aborted transaction wrote
//!   (`AbortedRead`), that was overwritten inside its writer
//!   (`IntermediateRead`), or that was committed after the reader's snapshot
//!   (`FutureRead`);
//! - (b) reads not from one snapshot: a read that is not the value as of
//!   the transaction's read timestamp, or its own latest write of the key
//!   (`SnapshotViolation`);
//! - (c) non-repeatable reads: two reads of a key in one transaction that
//!   disagree with no own write in between (`NonRepeatableRead`);
//! - (d) lost updates: two committed writers of a key whose
//!   (read_ts, commit_ts] intervals overlap (`LostUpdate`), i.e. for writers
//!   A and B with A.commit_ts < B.commit_ts, A.commit_ts > B.read_ts;
//! - commit timestamps that are not unique (`DuplicateCommitTs`) or not
//!   after the read timestamp (`Malformed`);
//! - for serializable writers, a read whose key was rewritten between the
//!   read timestamp and the commit (`SerializableReadChanged`);
//! - a final state that is not the state at the final timestamp
//!   (`FinalState`).
//!
//! The `checker_*` tests run it on hand-built histories: a clean one passes
//! and each anomaly is reported. `concurrent_history_is_snapshot_isolated`
//! runs the real workload (`HISTORY_TXNS` transactions per thread, default
//! 500; `HISTORY_SEED` to replay a seed).
//!
//! To see the real-workload test fail on a broken build, run
//!
//! ```text
//! cargo test -p toondb-storage --features broken-isolation --test history
//! ```
//!
//! The `broken-isolation` feature makes the commit thread skip its conflict
//! checks, so overlapping writers of a key both commit: the test fails with
//! `LostUpdate` anomalies (and `SerializableReadChanged`), and the
//! conflict counter stays 0. The `checker_*` tests still pass there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use toondb_storage::{
    Database, ErrorKind, Isolation, Options, ScanOptions, Snapshot, Timestamp, TransactionOptions,
    WriteBatch,
};

// ---------------------------------------------------------------------------
// The history and its checker.

type Key = String;
type Value = String;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read and what it returned (`None`: absent).
    Read(Key, Option<Value>),
    /// A put (`Some`) or delete (`None`).
    Write(Key, Option<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// For a read-only transaction the timestamp is not checked.
    Committed(Timestamp),
    Aborted,
}

#[derive(Debug, Clone)]
pub struct Txn {
    pub id: u64,
    /// `None` for a plain batch write (no snapshot, no reads).
    pub read_ts: Option<Timestamp>,
    pub serializable: bool,
    pub ops: Vec<Op>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    /// Values present before the workload, written at or before `initial_ts`.
    pub initial: BTreeMap<Key, Value>,
    pub initial_ts: Timestamp,
    pub txns: Vec<Txn>,
    /// The state read after the workload, and the timestamp it was read at.
    pub final_state: Option<(Timestamp, BTreeMap<Key, Value>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anomaly {
    UnknownValue {
        txn: u64,
        key: Key,
        value: Value,
    },
    AbortedRead {
        txn: u64,
        key: Key,
        value: Value,
        writer: u64,
    },
    IntermediateRead {
        txn: u64,
        key: Key,
        value: Value,
        writer: u64,
    },
    FutureRead {
        txn: u64,
        read_ts: Timestamp,
        key: Key,
        value: Value,
        writer: u64,
        writer_commit_ts: Timestamp,
    },
    SnapshotViolation {
        txn: u64,
        read_ts: Timestamp,
        key: Key,
        got: Option<Value>,
        expected: Option<Value>,
    },
    NonRepeatableRead {
        txn: u64,
        key: Key,
        first: Option<Value>,
        second: Option<Value>,
    },
    LostUpdate {
        key: Key,
        first: u64,
        first_commit_ts: Timestamp,
        second: u64,
        second_read_ts: Timestamp,
        second_commit_ts: Timestamp,
    },
    DuplicateCommitTs {
        ts: Timestamp,
        txns: (u64, u64),
    },
    SerializableReadChanged {
        txn: u64,
        key: Key,
        read: Option<Value>,
        at_commit: Option<Value>,
    },
    FinalState {
        key: Key,
        got: Option<Value>,
        expected: Option<Value>,
    },
    Malformed {
        txn: u64,
        what: String,
    },
}

impl Anomaly {
    pub fn kind(&self) -> &'static str {
        match self {
            Anomaly::UnknownValue { .. } => "UnknownValue",
            Anomaly::AbortedRead { .. } => "AbortedRead",
            Anomaly::IntermediateRead { .. } => "IntermediateRead",
            Anomaly::FutureRead { .. } => "FutureRead",
            Anomaly::SnapshotViolation { .. } => "SnapshotViolation",
            Anomaly::NonRepeatableRead { .. } => "NonRepeatableRead",
            Anomaly::LostUpdate { .. } => "LostUpdate",
            Anomaly::DuplicateCommitTs { .. } => "DuplicateCommitTs",
            Anomaly::SerializableReadChanged { .. } => "SerializableReadChanged",
            Anomaly::FinalState { .. } => "FinalState",
            Anomaly::Malformed { .. } => "Malformed",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Where a value came from.
#[derive(Debug, Clone, Copy)]
enum Origin {
    Initial,
    /// Transaction index in `History::txns`, and whether it is that
    /// transaction's last write of the key (the one others may see).
    Txn(usize, bool),
}

struct CommittedWrite<'h> {
    ts: Timestamp,
    value: Option<&'h Value>,
    txn: usize,
}

fn committed_ts(t: &Txn) -> Option<Timestamp> {
    match t.outcome {
        Outcome::Committed(ts) => Some(ts),
        Outcome::Aborted => None,
    }
}

fn writes(t: &Txn) -> bool {
    t.ops.iter().any(|op| matches!(op, Op::Write(..)))
}

/// Each key's last write in `t` (what a commit applies).
fn final_writes(t: &Txn) -> BTreeMap<&Key, Option<&Value>> {
    let mut out = BTreeMap::new();
    for op in &t.ops {
        if let Op::Write(k, v) = op {
            out.insert(k, v.as_ref());
        }
    }
    out
}

/// Checks `h` for the anomalies listed in the module docs; empty when clean.
pub fn check(h: &History) -> Vec<Anomaly> {
    let mut out = Vec::new();

    // Committed writes per key, in commit order; who wrote every value.
    let mut by_key: BTreeMap<&Key, Vec<CommittedWrite<'_>>> = BTreeMap::new();
    let mut origin: HashMap<(&Key, &Value), Origin> = HashMap::new();
    for (k, v) in &h.initial {
        origin.insert((k, v), Origin::Initial);
    }
    let mut commit_owner: BTreeMap<Timestamp, u64> = BTreeMap::new();
    for (i, t) in h.txns.iter().enumerate() {
        let last = final_writes(t);
        for op in &t.ops {
            if let Op::Write(k, Some(v)) = op {
                let is_last = last.get(k).copied().flatten() == Some(v);
                origin.insert((k, v), Origin::Txn(i, is_last));
            }
        }
        if let Some(rt) = t.read_ts {
            if rt < h.initial_ts {
                out.push(Anomaly::Malformed {
                    txn: t.id,
                    what: format!(
                        "read ts {rt} is before the initial state at {}",
                        h.initial_ts
                    ),
                });
            }
        } else if t.ops.iter().any(|op| matches!(op, Op::Read(..))) {
            out.push(Anomaly::Malformed {
                txn: t.id,
                what: "a plain write batch with reads".into(),
            });
        }
        let (Some(ts), true) = (committed_ts(t), writes(t)) else {
            continue;
        };
        if ts <= h.initial_ts || t.read_ts.is_some_and(|rt| ts <= rt) {
            out.push(Anomaly::Malformed {
                txn: t.id,
                what: format!("commit ts {ts} is not after its read ts {:?}", t.read_ts),
            });
        }
        if let Some(other) = commit_owner.insert(ts, t.id) {
            out.push(Anomaly::DuplicateCommitTs {
                ts,
                txns: (other, t.id),
            });
        }
        for (k, v) in last {
            by_key.entry(k).or_default().push(CommittedWrite {
                ts,
                value: v,
                txn: i,
            });
        }
    }
    for list in by_key.values_mut() {
        list.sort_by_key(|w| w.ts);
    }
    let state_at = |k: &Key, ts: Timestamp| -> Option<&Value> {
        let list = by_key.get(k).map(Vec::as_slice).unwrap_or(&[]);
        let n = list.partition_point(|w| w.ts <= ts);
        match n {
            0 => h.initial.get(k),
            n => list[n - 1].value,
        }
    };

    for t in &h.txns {
        let Some(read_ts) = t.read_ts else { continue };
        let mut own: BTreeMap<&Key, Option<&Value>> = BTreeMap::new();
        let mut last_read: BTreeMap<&Key, Option<&Value>> = BTreeMap::new();
        let mut read_from_snapshot: Vec<(&Key, Option<&Value>)> = Vec::new();
        for op in &t.ops {
            match op {
                Op::Write(k, v) => {
                    own.insert(k, v.as_ref());
                    last_read.remove(k);
                }
                Op::Read(k, got) => {
                    let got = got.as_ref();
                    // (a) where the value came from.
                    if let Some(v) = got {
                        match origin.get(&(k, v)) {
                            None => out.push(Anomaly::UnknownValue {
                                txn: t.id,
                                key: k.clone(),
                                value: v.clone(),
                            }),
                            Some(Origin::Initial) => {}
                            Some(&Origin::Txn(w, is_last)) => {
                                let writer = &h.txns[w];
                                if writer.id == t.id {
                                    // Its own write; (b) decides.
                                } else if writer.outcome == Outcome::Aborted {
                                    out.push(Anomaly::AbortedRead {
                                        txn: t.id,
                                        key: k.clone(),
                                        value: v.clone(),
                                        writer: writer.id,
                                    });
                                } else if !is_last {
                                    out.push(Anomaly::IntermediateRead {
                                        txn: t.id,
                                        key: k.clone(),
                                        value: v.clone(),
                                        writer: writer.id,
                                    });
                                } else if let Some(wts) =
                                    committed_ts(writer).filter(|&wts| wts > read_ts)
                                {
                                    out.push(Anomaly::FutureRead {
                                        txn: t.id,
                                        read_ts,
                                        key: k.clone(),
                                        value: v.clone(),
                                        writer: writer.id,
                                        writer_commit_ts: wts,
                                    });
                                }
                            }
                        }
                    }
                    // (b) one snapshot, plus own writes.
                    let expected = match own.get(k) {
                        Some(&mine) => mine,
                        None => {
                            read_from_snapshot.push((k, got));
                            state_at(k, read_ts)
                        }
                    };
                    if got != expected {
                        out.push(Anomaly::SnapshotViolation {
                            txn: t.id,
                            read_ts,
                            key: k.clone(),
                            got: got.cloned(),
                            expected: expected.cloned(),
                        });
                    }
                    // (c) repeatable.
                    if let Some(&first) = last_read.get(k) {
                        if first != got {
                            out.push(Anomaly::NonRepeatableRead {
                                txn: t.id,
                                key: k.clone(),
                                first: first.cloned(),
                                second: got.cloned(),
                            });
                        }
                    }
                    last_read.insert(k, got);
                }
            }
        }
        // Serializable writers: nothing they read changed before commit.
        if let (true, Some(ts), true) = (t.serializable, committed_ts(t), writes(t)) {
            let mut reported = BTreeSet::new();
            for (k, got) in read_from_snapshot {
                if !reported.insert(k) {
                    continue;
                }
                let at_commit = state_at(k, ts.saturating_sub(1));
                if got != at_commit {
                    out.push(Anomaly::SerializableReadChanged {
                        txn: t.id,
                        key: k.clone(),
                        read: got.cloned(),
                        at_commit: at_commit.cloned(),
                    });
                }
            }
        }
    }

    // (d) first committer wins: a writer's snapshot includes the previous
    // committed write of every key it writes. Checking each writer against
    // its immediate predecessor covers all pairs, since read_ts < commit_ts.
    for (k, list) in &by_key {
        for pair in list.windows(2) {
            let (a, b) = (&h.txns[pair[0].txn], &h.txns[pair[1].txn]);
            if let Some(b_read) = b.read_ts {
                if pair[0].ts > b_read {
                    out.push(Anomaly::LostUpdate {
                        key: (*k).clone(),
                        first: a.id,
                        first_commit_ts: pair[0].ts,
                        second: b.id,
                        second_read_ts: b_read,
                        second_commit_ts: pair[1].ts,
                    });
                }
            }
        }
    }

    if let Some((ts, state)) = &h.final_state {
        let keys: BTreeSet<&Key> = by_key
            .keys()
            .copied()
            .chain(h.initial.keys())
            .chain(state.keys())
            .collect();
        for k in keys {
            let (got, expected) = (state.get(k), state_at(k, *ts));
            if got != expected {
                out.push(Anomaly::FinalState {
                    key: k.clone(),
                    got: got.cloned(),
                    expected: expected.cloned(),
                });
            }
        }
    }
    out
}

/// A readable failure: counts per kind and the first few anomalies.
fn report(anomalies: &[Anomaly]) -> String {
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for a in anomalies {
        *kinds.entry(a.kind()).or_default() += 1;
    }
    let mut s = format!(
        "{} anomalies {kinds:?}; the first of each kind:",
        anomalies.len()
    );
    for kind in kinds.keys() {
        for a in anomalies.iter().filter(|a| a.kind() == *kind).take(3) {
            s.push_str(&format!("\n  {a}"));
        }
    }
    s
}

// ---------------------------------------------------------------------------
// The checker on hand-built histories.

fn s(v: &str) -> Option<Value> {
    Some(v.to_string())
}

fn r(k: &str, v: Option<Value>) -> Op {
    Op::Read(k.to_string(), v)
}

fn w(k: &str, v: Option<Value>) -> Op {
    Op::Write(k.to_string(), v)
}

fn txn(id: u64, read_ts: Timestamp, outcome: Outcome, ops: Vec<Op>) -> Txn {
    Txn {
        id,
        read_ts: Some(read_ts),
        serializable: false,
        ops,
        outcome,
    }
}

use Outcome::{Aborted, Committed};

/// x = x0 and y = y0 at ts 1. T1 (1 → 3) writes x1; T2 (1, aborted by the
/// conflict) writes x2; T3 (3 → 4) reads x1, writes y twice; T4 (2 → 2,
/// read-only) still sees x0; T5 (4 → 5) deletes x; a batch writes y at 6.
fn clean() -> History {
    History {
        initial: [("x", "x0"), ("y", "y0")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        initial_ts: 1,
        txns: vec![
            txn(1, 1, Committed(3), vec![r("x", s("x0")), w("x", s("x1"))]),
            txn(2, 1, Aborted, vec![r("x", s("x0")), w("x", s("x2"))]),
            txn(
                3,
                3,
                Committed(4),
                vec![
                    r("x", s("x1")),
                    w("y", s("y3a")),
                    r("y", s("y3a")),
                    w("y", s("y3b")),
                    r("x", s("x1")),
                    r("y", s("y3b")),
                ],
            ),
            txn(4, 2, Committed(2), vec![r("x", s("x0")), r("y", s("y0"))]),
            txn(
                5,
                4,
                Committed(5),
                vec![r("y", s("y3b")), w("x", None), r("x", None)],
            ),
            Txn {
                id: 6,
                read_ts: None,
                serializable: false,
                ops: vec![w("y", s("y6"))],
                outcome: Committed(6),
            },
            txn(7, 6, Committed(6), vec![r("x", None), r("y", s("y6"))]),
        ],
        final_state: Some((6, [("y".to_string(), "y6".to_string())].into())),
    }
}

/// `clean()` with `edit` applied must report an anomaly of `kind`.
fn detects(kind: &str, edit: impl FnOnce(&mut History)) {
    let mut h = clean();
    edit(&mut h);
    let found = check(&h);
    assert!(
        found.iter().any(|a| a.kind() == kind),
        "expected {kind}, got {found:#?}"
    );
}

#[test]
fn checker_passes_a_clean_history() {
    let found = check(&clean());
    assert!(found.is_empty(), "{}", report(&found));
}

#[test]
fn checker_detects_aborted_and_dirty_reads() {
    // Reads the aborted T2's write.
    detects("AbortedRead", |h| h.txns[3].ops[0] = r("x", s("x2")));
    // Reads T3's first write of y, which T3 overwrote before committing.
    detects("IntermediateRead", |h| h.txns[4].ops[0] = r("y", s("y3a")));
    // Reads a value nobody wrote.
    detects("UnknownValue", |h| h.txns[3].ops[0] = r("x", s("garbage")));
    // Reads x1 (committed at 3) from a snapshot at 2.
    detects("FutureRead", |h| h.txns[3].ops[0] = r("x", s("x1")));
}

#[test]
fn checker_detects_reads_outside_the_snapshot() {
    // T3 reads at 3 but sees the older x0.
    detects("SnapshotViolation", |h| h.txns[2].ops[0] = r("x", s("x0")));
    // T5 does not see its own delete.
    detects("SnapshotViolation", |h| h.txns[4].ops[2] = r("x", s("x1")));
    // T3 does not see its own (second) write of y.
    detects("SnapshotViolation", |h| h.txns[2].ops[5] = r("y", s("y3a")));
}

#[test]
fn checker_detects_non_repeatable_reads() {
    // T4 reads x0, then x1 (committed at 3, after its snapshot at 2).
    detects("NonRepeatableRead", |h| h.txns[3].ops.push(r("x", s("x1"))));
}

#[test]
fn checker_detects_lost_updates() {
    // T2 commits too, at 5, though T1 wrote x at 3 after T2's snapshot at 1.
    detects("LostUpdate", |h| {
        h.txns[1].outcome = Committed(7);
        h.final_state = None;
    });
    // A plain batch write of y at 6 also counts as a committed writer: a
    // transaction with a snapshot at 5 that writes y cannot commit after it.
    detects("LostUpdate", |h| {
        h.txns.push(txn(8, 5, Committed(7), vec![w("y", s("y8"))]));
        h.final_state = None;
    });
}

#[test]
fn checker_detects_duplicate_and_malformed_commit_timestamps() {
    detects("DuplicateCommitTs", |h| h.txns[4].outcome = Committed(4));
    detects("Malformed", |h| h.txns[0].outcome = Committed(1));
}

#[test]
fn checker_detects_serializable_read_changes() {
    // T5 read y at 4 and committed at 5: fine. Make it serializable and
    // read x at 1 instead, with T1's x1 committed at 3 in between.
    let mut h = clean();
    h.txns[4].serializable = true;
    assert!(check(&h).is_empty());
    detects("SerializableReadChanged", |h| {
        h.txns.push(Txn {
            id: 9,
            read_ts: Some(2),
            serializable: true,
            ops: vec![r("x", s("x0")), w("z", s("z9"))],
            outcome: Committed(7),
        });
        h.final_state = None;
    });
}

#[test]
fn checker_detects_a_wrong_final_state() {
    detects("FinalState", |h| {
        h.final_state = Some((6, [("y".to_string(), "y3b".to_string())].into()))
    });
    detects("FinalState", |h| {
        h.final_state = Some((6, BTreeMap::new()));
    });
}

// ---------------------------------------------------------------------------
// The real workload.

const KEYS: usize = 8;
const TXN_THREADS: usize = 4;

fn key(i: usize) -> Key {
    format!("k{i}")
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn text(v: Vec<u8>) -> Value {
    String::from_utf8(v).expect("values are UTF-8")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

/// Every key's value, from a full scan (absent keys are `None`).
fn scan_all(
    iter: impl Iterator<Item = toondb_storage::Result<(Vec<u8>, Vec<u8>)>>,
    reverse: bool,
) -> Vec<(Key, Option<Value>)> {
    let mut seen: BTreeMap<Key, Value> = BTreeMap::new();
    let mut order = Vec::new();
    for item in iter {
        let (k, v) = item.unwrap();
        let k = text(k);
        order.push(k.clone());
        assert!(
            seen.insert(k, text(v)).is_none(),
            "a scan returned a key twice"
        );
    }
    let mut sorted = order.clone();
    sorted.sort();
    if reverse {
        sorted.reverse();
    }
    assert_eq!(order, sorted, "scan out of order (reverse: {reverse})");
    (0..KEYS)
        .map(|i| {
            let k = key(i);
            let v = seen.remove(&k);
            (k, v)
        })
        .collect()
}

struct Workload<'a> {
    db: &'a Database,
    ids: AtomicU64,
    conflicts: AtomicU64,
    txns: Mutex<Vec<Txn>>,
}

impl Workload<'_> {
    fn id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn transactions(&self, seed: u64, count: u64) {
        let mut rng = Rng(seed);
        let mut done = Vec::new();
        for _ in 0..count {
            let id = self.id();
            let serializable = rng.below(4) == 0;
            let t = self
                .db
                .transaction_with(TransactionOptions::default().isolation(if serializable {
                    Isolation::Serializable
                } else {
                    Isolation::Snapshot
                }))
                .unwrap();
            let read_ts = t.read_ts();
            let mut ops = Vec::new();
            let mut read_keys = BTreeSet::new();
            for n in 0..1 + rng.below(5) {
                let k = key(rng.below(KEYS as u64) as usize);
                match rng.below(20) {
                    0..=7 => {
                        let v = t.get(&k).unwrap().map(text);
                        read_keys.insert(k.clone());
                        ops.push(Op::Read(k, v));
                    }
                    8..=9 => {
                        let reverse = rng.below(2) == 0;
                        let it = t.iter(ScanOptions::default().reverse(reverse)).unwrap();
                        for (k, v) in scan_all(it, reverse) {
                            read_keys.insert(k.clone());
                            ops.push(Op::Read(k, v));
                        }
                    }
                    10..=17 => {
                        let v = format!("t{id}:{n}");
                        t.put(&k, &v).unwrap();
                        ops.push(Op::Write(k, Some(v)));
                    }
                    _ => {
                        t.delete(&k).unwrap();
                        ops.push(Op::Write(k, None));
                    }
                }
                std::thread::yield_now();
            }
            // Read again everything read so far.
            for k in read_keys {
                let v = t.get(&k).unwrap().map(text);
                ops.push(Op::Read(k, v));
            }
            let outcome = if rng.below(10) == 0 {
                t.rollback().unwrap();
                Outcome::Aborted
            } else {
                match t.commit() {
                    Ok(ts) => {
                        if !ops.iter().any(|op| matches!(op, Op::Write(..))) {
                            assert_eq!(ts, read_ts, "a read-only commit returns the read ts");
                        }
                        Outcome::Committed(ts)
                    }
                    Err(e) if e.kind() == ErrorKind::Conflict => {
                        self.conflicts.fetch_add(1, Ordering::Relaxed);
                        Outcome::Aborted
                    }
                    Err(e) => panic!("commit failed: {e}"),
                }
            };
            done.push(Txn {
                id,
                read_ts: Some(read_ts),
                serializable,
                ops,
                outcome,
            });
        }
        self.txns.lock().unwrap().extend(done);
    }

    /// Plain batch writes (no snapshot), and an occasional flush.
    fn batches(&self, seed: u64, count: u64) {
        let mut rng = Rng(seed);
        let mut done = Vec::new();
        for i in 0..count {
            let id = self.id();
            let mut batch = WriteBatch::new();
            let mut ops = Vec::new();
            for n in 0..1 + rng.below(2) {
                let k = key(rng.below(KEYS as u64) as usize);
                if rng.below(6) == 0 {
                    batch.delete(&k).unwrap();
                    ops.push(Op::Write(k, None));
                } else {
                    let v = format!("t{id}:{n}");
                    batch.put(&k, &v).unwrap();
                    ops.push(Op::Write(k, Some(v)));
                }
            }
            let ts = self.db.write(batch).unwrap();
            done.push(Txn {
                id,
                read_ts: None,
                serializable: false,
                ops,
                outcome: Outcome::Committed(ts),
            });
            if i % 64 == 63 {
                self.db.flush().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        self.txns.lock().unwrap().extend(done);
    }

    /// Reads through `db.snapshot()`, recorded as read-only transactions.
    /// Every 8th snapshot is kept open and returned, to be read again after
    /// the workload (and a flush) moved its versions into table files.
    fn snapshots(&self, seed: u64, count: u64) -> Vec<(Snapshot, Txn)> {
        let mut rng = Rng(seed);
        let mut done = Vec::new();
        let mut held = Vec::new();
        for i in 0..count {
            let snap = self.db.snapshot().unwrap();
            let mut ops = Vec::new();
            for _ in 0..1 + rng.below(4) {
                let k = key(rng.below(KEYS as u64) as usize);
                ops.push(Op::Read(k.clone(), snap.get(&k).unwrap().map(text)));
                std::thread::yield_now();
            }
            let it = snap.iter(ScanOptions::default()).unwrap();
            ops.extend(scan_all(it, false).into_iter().map(|(k, v)| Op::Read(k, v)));
            let txn = Txn {
                id: self.id(),
                read_ts: Some(snap.ts()),
                serializable: false,
                ops,
                outcome: Outcome::Committed(snap.ts()),
            };
            if i % 8 == 0 {
                held.push((snap, txn));
            } else {
                done.push(txn);
            }
        }
        self.txns.lock().unwrap().extend(done);
        held
    }
}

/// Runs the workload on a fresh database; returns the history and the
/// conflicts the engine reported (`stats().conflicts`) and saw.
fn record_history(seed: u64, per_thread: u64) -> (History, u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(
        dir.path(),
        Options::default()
            .memtable_size(8 << 10)
            // Small blocks: a key's versions span blocks in a table.
            .block_size(512),
    )
    .unwrap();
    // k0..k5 exist at the start; k6, k7 do not.
    let initial: BTreeMap<Key, Value> = (0..KEYS - 2)
        .map(|i| (key(i), format!("init{i}")))
        .collect();
    let mut batch = WriteBatch::new();
    for (k, v) in &initial {
        batch.put(k, v).unwrap();
    }
    let initial_ts = db.write(batch).unwrap();

    let w = Workload {
        db: &db,
        ids: AtomicU64::new(1),
        conflicts: AtomicU64::new(0),
        txns: Mutex::new(Vec::new()),
    };
    let held = std::thread::scope(|s| {
        for i in 0..TXN_THREADS as u64 {
            let w = &w;
            s.spawn(move || w.transactions(seed.wrapping_add(i), per_thread));
        }
        let w = &w;
        s.spawn(move || w.batches(seed ^ 0xba7c, per_thread / 2));
        s.spawn(move || w.snapshots(seed ^ 0x5a95, per_thread / 2))
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    });
    // The held snapshots read again, now that their versions sit in table
    // files among many newer ones: same snapshot, same values.
    db.flush().unwrap();
    let mut txns = w.txns.into_inner().unwrap();
    for (snap, mut txn) in held {
        for reverse in [false, true] {
            let it = snap.iter(ScanOptions::default().reverse(reverse)).unwrap();
            txn.ops.extend(
                scan_all(it, reverse)
                    .into_iter()
                    .map(|(k, v)| Op::Read(k, v)),
            );
        }
        for i in 0..KEYS {
            txn.ops
                .push(Op::Read(key(i), snap.get(key(i)).unwrap().map(text)));
        }
        txns.push(txn);
    }

    let final_ts = db.stats().visible_ts;
    let snap = db.snapshot().unwrap();
    assert_eq!(snap.ts(), final_ts);
    let final_state: BTreeMap<Key, Value> = snap
        .iter(ScanOptions::default())
        .unwrap()
        .map(|r| {
            let (k, v) = r.unwrap();
            (text(k), text(v))
        })
        .collect();
    drop(snap);
    let stats = db.stats();
    let history = History {
        initial,
        initial_ts,
        txns,
        final_state: Some((final_ts, final_state)),
    };
    (
        history,
        stats.conflicts,
        w.conflicts.into_inner(),
        stats.flushes,
    )
}

#[test]
fn concurrent_history_is_snapshot_isolated() {
    let seed = env_u64(
        "HISTORY_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let per_thread = env_u64("HISTORY_TXNS", 500);
    let started = std::time::Instant::now();
    let (h, engine_conflicts, seen_conflicts, flushes) = record_history(seed, per_thread);
    let committed = h
        .txns
        .iter()
        .filter(|t| matches!(t.outcome, Outcome::Committed(_)))
        .count();
    eprintln!(
        "history (HISTORY_SEED={seed}): {} txns, {committed} committed, {seen_conflicts} \
         conflicts, {} reads, {flushes} flushes, recorded in {:.2}s",
        h.txns.len(),
        h.txns
            .iter()
            .flat_map(|t| &t.ops)
            .filter(|op| matches!(op, Op::Read(..)))
            .count(),
        started.elapsed().as_secs_f64()
    );
    let anomalies = check(&h);
    assert!(
        anomalies.is_empty(),
        "HISTORY_SEED={seed}: {}",
        report(&anomalies)
    );
    assert_eq!(engine_conflicts, seen_conflicts, "stats().conflicts");
    // The workload must exercise what it checks.
    assert!(
        seen_conflicts > 0,
        "no transaction conflicted: the workload is too tame"
    );
    assert!(flushes > 0, "no memtable was flushed");
}
