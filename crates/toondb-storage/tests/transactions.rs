//! Transactions: snapshot reads, own writes, first-committer-wins, write
//! skew under snapshot isolation vs serializable, snapshots that stay put.

use toondb_storage::{Database, ErrorKind, Isolation, Options, ScanOptions, TransactionOptions};

fn open(dir: &std::path::Path) -> Database {
    Database::open_with(dir, Options::default().memtable_size(8 << 10)).unwrap()
}

fn serializable() -> TransactionOptions {
    TransactionOptions::default().isolation(Isolation::Serializable)
}

#[test]
fn reads_come_from_the_snapshot_plus_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put("a", "1").unwrap();
    db.put("b", "1").unwrap();
    let txn = db.transaction().unwrap();
    db.put("a", "2").unwrap(); // after the snapshot
    assert_eq!(txn.get("a").unwrap().as_deref(), Some(&b"1"[..]));
    txn.put("c", "3").unwrap();
    txn.delete("b").unwrap();
    assert_eq!(txn.get("c").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(txn.get("b").unwrap(), None);
    let seen: Vec<_> = txn
        .iter(ScanOptions::default())
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        seen,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"3".to_vec())
        ]
    );
    let rev: Vec<_> = txn
        .iter(ScanOptions::default().reverse(true).limit(1))
        .unwrap()
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(rev, vec![b"c".to_vec()]);
    assert_eq!(db.get("c").unwrap(), None, "not visible before commit");
    txn.commit().unwrap();
    assert_eq!(db.get("c").unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(db.get("b").unwrap(), None);
    assert_eq!(txn.get("a").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(txn.commit().unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn first_committer_wins_and_the_loser_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put("x", "0").unwrap();
    let t1 = db.transaction().unwrap();
    let t2 = db.transaction().unwrap();
    t1.put("x", "1").unwrap();
    t2.put("x", "2").unwrap();
    t2.put("y", "2").unwrap();
    t1.commit().unwrap();
    assert_eq!(t2.commit().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(db.get("x").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(db.get("y").unwrap(), None);
    // A plain put also counts as a committed writer.
    let t3 = db.transaction().unwrap();
    t3.put("x", "3").unwrap();
    db.put("x", "4").unwrap();
    assert_eq!(t3.commit().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(db.stats().conflicts, 2);
}

#[test]
fn read_only_transactions_never_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put("k", "v").unwrap();
    let t = db.transaction_with(serializable()).unwrap();
    assert!(t.get("k").unwrap().is_some());
    db.put("k", "w").unwrap();
    t.commit().unwrap();
}

/// Two doctors on call, each goes off call if the other is on: under
/// snapshot isolation both commit (write skew); serializable rejects one.
fn write_skew(options: TransactionOptions) -> (bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put("oncall/alice", "1").unwrap();
    db.put("oncall/bob", "1").unwrap();
    let a = db.transaction_with(options).unwrap();
    let b = db.transaction_with(options).unwrap();
    let on_call = |t: &toondb_storage::Transaction| {
        t.iter(ScanOptions::prefix(b"oncall/"))
            .unwrap()
            .filter(|r| r.as_ref().unwrap().1 == b"1")
            .count()
    };
    assert_eq!(on_call(&a), 2);
    assert_eq!(on_call(&b), 2);
    a.put("oncall/alice", "0").unwrap();
    b.put("oncall/bob", "0").unwrap();
    (a.commit().is_ok(), b.commit().is_ok())
}

#[test]
fn write_skew_commits_under_snapshot_isolation() {
    assert_eq!(write_skew(TransactionOptions::default()), (true, true));
}

#[test]
fn write_skew_is_rejected_under_serializable() {
    assert_eq!(write_skew(serializable()), (true, false));
}

#[test]
fn serializable_point_reads_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let t = db.transaction_with(serializable()).unwrap();
    assert_eq!(t.get("flag").unwrap(), None);
    db.put("flag", "set").unwrap();
    t.put("other", "x").unwrap();
    assert_eq!(t.commit().unwrap_err().kind(), ErrorKind::Conflict);
}

#[test]
fn a_snapshot_keeps_its_view_while_writers_overwrite_and_flush() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    for i in 0..200u32 {
        db.put(format!("k{i:04}"), "old").unwrap();
    }
    let snap = db.snapshot().unwrap();
    assert_eq!(db.stats().live_snapshots, 1);
    assert_eq!(db.stats().oldest_snapshot_ts, Some(snap.ts()));
    for round in 0..5 {
        for i in 0..200u32 {
            db.put(format!("k{i:04}"), format!("new{round}")).unwrap();
        }
        db.delete("k0007").unwrap();
        db.flush().unwrap();
        let all: Vec<_> = snap
            .iter(ScanOptions::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(all.len(), 200);
        assert!(all.iter().all(|(_, v)| v == b"old"));
        assert_eq!(snap.get("k0007").unwrap().as_deref(), Some(&b"old"[..]));
    }
    // Five flushes; a background compaction may already have merged them,
    // which the snapshot must survive just the same.
    assert!(db.stats().flushes >= 5);
    snap.release();
    assert_eq!(snap.get("k0001").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(db.stats().live_snapshots, 0);
    let t = db.transaction().unwrap();
    assert_eq!(db.stats().live_snapshots, 1);
    drop(t);
    assert_eq!(
        db.stats().live_snapshots,
        0,
        "a dropped transaction releases its snapshot"
    );
}

#[test]
fn rollback_discards_and_ends_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let t = db.transaction().unwrap();
    t.put("k", "v").unwrap();
    t.rollback().unwrap();
    assert_eq!(db.get("k").unwrap(), None);
    assert_eq!(t.put("k", "v").unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(db.stats().live_snapshots, 0);
}

#[test]
fn conflicts_within_one_commit_group_are_caught() {
    // Many transactions racing on one counter: every successful commit
    // must be counted exactly once.
    let dir = tempfile::tempdir().unwrap();
    let db = std::sync::Arc::new(open(dir.path()));
    db.put("counter", 0u64.to_le_bytes()).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut committed = 0u64;
                for _ in 0..200 {
                    loop {
                        let t = db.transaction().unwrap();
                        let v = t.get("counter").unwrap().unwrap();
                        let n = u64::from_le_bytes(v.try_into().unwrap());
                        t.put("counter", (n + 1).to_le_bytes()).unwrap();
                        match t.commit() {
                            Ok(_) => break,
                            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict),
                        }
                    }
                    committed += 1;
                }
                committed
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let v = db.get("counter").unwrap().unwrap();
    assert_eq!(u64::from_le_bytes(v.try_into().unwrap()), total);
    assert_eq!(total, 800);
}
