//! `Database::submit_with_notice`: the early notice comes before the outcome,
//! at most once, only for a write that reached the WAL, and only when little
//! work remains (small groups); the outcome itself is unaffected.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use toondb_storage::{Database, WriteBatch, WriteOptions};

#[derive(Debug, PartialEq)]
enum Event {
    Notice(usize),
    Done(usize, bool),
}

fn batch_of(prefix: &str, n: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in 0..n {
        b.put(format!("{prefix}{i:05}"), b"v").unwrap();
    }
    b
}

fn submit(db: &Database, id: usize, batch: WriteBatch, sync: bool, tx: &mpsc::Sender<Event>) {
    let (t1, t2) = (tx.clone(), tx.clone());
    db.submit_with_notice(
        batch,
        WriteOptions::sync(sync),
        move || t1.send(Event::Notice(id)).unwrap(),
        move |r| t2.send(Event::Done(id, r.is_ok())).unwrap(),
    );
}

#[test]
fn notice_precedes_the_outcome_of_small_writes_and_the_write_is_visible_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    let (tx, rx) = mpsc::channel();
    for (id, sync) in [(0, true), (1, false), (2, true)] {
        submit(&db, id, batch_of(&format!("w{id}-"), 10), sync, &tx);
        assert_eq!(rx.recv().unwrap(), Event::Notice(id));
        assert_eq!(rx.recv().unwrap(), Event::Done(id, true));
        assert_eq!(
            db.get(format!("w{id}-00009")).unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }
}

#[test]
fn big_groups_get_no_notice_but_still_complete() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let (tx, rx) = mpsc::channel();
    submit(&db, 0, batch_of("big-", 1000), true, &tx);
    assert_eq!(rx.recv().unwrap(), Event::Done(0, true));
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_write_to_a_closed_database_fails_without_notice() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    db.close().unwrap();
    let (tx, rx) = mpsc::channel();
    submit(&db, 0, batch_of("x", 1), true, &tx);
    assert_eq!(rx.recv().unwrap(), Event::Done(0, false));
    assert!(rx.try_recv().is_err());
}

#[test]
fn concurrent_submitters_get_one_notice_per_write_before_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open(dir.path()).unwrap());
    let notices = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (db, notices) = (db.clone(), notices.clone());
            std::thread::spawn(move || {
                for i in 0..200 {
                    let (tx, rx) = mpsc::channel();
                    let noticed = Arc::new(AtomicUsize::new(0));
                    let (n1, n2) = (noticed.clone(), notices.clone());
                    db.submit_with_notice(
                        batch_of(&format!("t{t}-{i}-"), 3),
                        WriteOptions::sync(i % 4 == 0),
                        move || {
                            n1.fetch_add(1, Ordering::SeqCst);
                            n2.fetch_add(1, Ordering::SeqCst);
                        },
                        move |r| {
                            tx.send((r.is_ok(), noticed.load(Ordering::SeqCst)))
                                .unwrap()
                        },
                    );
                    let (ok, noticed_before_done) = rx.recv().unwrap();
                    assert!(ok);
                    assert_eq!(noticed_before_done, 1, "one notice, before the outcome");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Groups of these small writes stay under the notice limit.
    assert_eq!(notices.load(Ordering::SeqCst), 800);
}
