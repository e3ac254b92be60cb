//! Concurrent writers, readers and flushes on one engine.
//!
//! Writers own disjoint key pairs `w{i}/a`, `w{i}/b` and repeatedly commit
//! one batch that sets both to the same counter value (one writer instead
//! alternates between putting both and deleting both). Half the writers use
//! the blocking `Database::write` on one handle, the others pipeline
//! `Database::submit` on a second handle of the same directory (which shares
//! the engine). Reader threads scan (forward, reverse, by prefix, in tiny
//! batches) and read pairs with `get`, while a flusher thread calls
//! `flush()`; the memtable is 8 KiB, so memtables also rotate and flush on
//! their own throughout. Every third write asks for an fsync.
//!
//! Proves: a batch is atomic to readers (every scan sees `a == b`, both
//! present or both absent), a reader never sees a writer's counter go back
//! (scans and gets observe commits in order), writes submitted from one
//! thread commit in submission order, and at the end (and after a reopen)
//! every acknowledged write is present.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use toondb_storage::{Database, Options, ScanOptions, WriteBatch, WriteOptions};

const WRITERS: usize = 4;
/// Writer that alternates put-both / delete-both.
const TOGGLER: usize = WRITERS - 1;
const ROUNDS: u64 = 1000;
const WINDOW: usize = 16;

fn key(writer: usize, half: &str) -> Vec<u8> {
    format!("w{writer}/{half}").into_bytes()
}

fn encode(writer: usize, counter: u64) -> Vec<u8> {
    let mut v = counter.to_be_bytes().to_vec();
    v.extend(std::iter::repeat_n(writer as u8, 48));
    v
}

fn decode(v: &[u8]) -> u64 {
    u64::from_be_bytes(v[..8].try_into().unwrap())
}

fn batch_for(writer: usize, counter: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    if writer == TOGGLER && counter % 2 == 1 {
        b.delete(key(writer, "a")).unwrap();
        b.delete(key(writer, "b")).unwrap();
    } else {
        b.put(key(writer, "a"), encode(writer, counter)).unwrap();
        b.put(key(writer, "b"), encode(writer, counter)).unwrap();
    }
    b
}

/// What a finished writer's keys must hold.
fn expected(writer: usize, last: u64) -> Option<Vec<u8>> {
    (writer != TOGGLER || last.is_multiple_of(2)).then(|| encode(writer, last))
}

/// Every third write is durable, so synced and unsynced appends (and the
/// WAL's direct and buffered paths, io/direct.rs) interleave in one log.
fn durability(counter: u64) -> WriteOptions {
    WriteOptions::sync(counter.is_multiple_of(3))
}

/// Blocking writes; returns the last acknowledged counter.
fn write_blocking(db: &Database, writer: usize, acked: &AtomicU64) {
    let mut last_ts = 0;
    for c in 1..=ROUNDS {
        let ts = db.write_with(batch_for(writer, c), durability(c)).unwrap();
        assert!(ts > last_ts, "writer {writer}: timestamps went back");
        last_ts = ts;
        acked.store(c, Ordering::SeqCst);
    }
}

/// Up to WINDOW submits in flight; completions must arrive in order.
fn write_pipelined(db: &Database, writer: usize, acked: &AtomicU64) {
    let (tx, rx) = mpsc::channel();
    let mut in_flight = 0;
    let mut next_done = 1;
    let mut last_ts = 0;
    let mut complete = |(c, r): (u64, toondb_storage::Result<u64>)| {
        let ts = r.unwrap();
        assert_eq!(c, next_done, "writer {writer}: completions out of order");
        assert!(
            ts > last_ts,
            "writer {writer}: commits out of submission order"
        );
        next_done += 1;
        last_ts = ts;
        acked.store(c, Ordering::SeqCst);
    };
    for c in 1..=ROUNDS {
        if in_flight == WINDOW {
            complete(rx.recv().unwrap());
            in_flight -= 1;
        }
        let tx = tx.clone();
        db.submit(batch_for(writer, c), durability(c), move |r| {
            let _ = tx.send((c, r));
        });
        in_flight += 1;
    }
    for _ in 0..in_flight {
        complete(rx.recv().unwrap());
    }
}

/// Per-writer counters a reader has seen; they must never decrease.
struct Seen {
    last: [u64; WRITERS],
}

impl Seen {
    fn observe(&mut self, writer: usize, counter: u64, how: &str) {
        assert!(
            counter >= self.last[writer],
            "{how}: writer {writer} went back from {} to {counter}",
            self.last[writer]
        );
        self.last[writer] = counter;
    }
}

/// Checks one scan result: every pair present is equal, toggled pairs are
/// both present or both absent, non-toggling writers' pairs never vanish
/// once seen.
fn check_scan(
    entries: &[(Vec<u8>, Vec<u8>)],
    writers: std::ops::Range<usize>,
    seen: &mut Seen,
    how: &str,
) {
    let map: BTreeMap<&[u8], &[u8]> = entries
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    assert_eq!(map.len(), entries.len(), "{how}: duplicate keys");
    for w in writers {
        let a = map.get(key(w, "a").as_slice()).copied();
        let b = map.get(key(w, "b").as_slice()).copied();
        assert_eq!(a, b, "{how}: writer {w} half-applied batch");
        match a {
            Some(v) => seen.observe(w, decode(v), how),
            None => assert!(
                w == TOGGLER || seen.last[w] == 0,
                "{how}: writer {w}'s keys vanished"
            ),
        }
    }
}

fn scan_all(db: &Database, options: ScanOptions, batch: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut scan = db.scan(options).unwrap();
    let mut out = Vec::new();
    loop {
        let b = scan.next_batch(batch, usize::MAX).unwrap();
        if b.is_empty() {
            return out;
        }
        out.extend(b);
    }
}

fn reader(db: &Database, stop: &AtomicBool, seed: usize, done: &AtomicU64) -> u64 {
    let mut seen = Seen { last: [0; WRITERS] };
    let mut rounds = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let n = rounds as usize + seed;
        // Whole-range scans, forward and reverse, in batches of 1..=3 or 256.
        let batch = if n.is_multiple_of(4) { 256 } else { n % 3 + 1 };
        let reverse = n % 2 == 1;
        let mut entries = scan_all(db, ScanOptions::default().reverse(reverse), batch);
        if reverse {
            entries.reverse();
        }
        assert!(
            entries.windows(2).all(|w| w[0].0 < w[1].0),
            "scan out of order"
        );
        check_scan(
            &entries,
            0..WRITERS,
            &mut seen,
            &format!("scan reverse={reverse} batch={batch}"),
        );

        // One writer's pair by prefix.
        let w = n % WRITERS;
        let entries = scan_all(db, ScanOptions::prefix(&key(w, "")), 1);
        assert!(entries.len() == 2 || entries.is_empty(), "{entries:?}");
        check_scan(&entries, w..w + 1, &mut seen, "prefix scan");

        // Two gets are two snapshots: the later one may be newer, never older.
        let a = db.get(key(w, "a")).unwrap();
        let b = db.get(key(w, "b")).unwrap();
        if w != TOGGLER {
            match (a, b) {
                (Some(a), Some(b)) => {
                    seen.observe(w, decode(&a), "get a");
                    seen.observe(w, decode(&b), "get b (after get a)");
                }
                (Some(_), None) => panic!("writer {w}: b vanished after a was read"),
                (None, b) => {
                    assert_eq!(seen.last[w], 0, "writer {w}: a vanished");
                    if let Some(b) = b {
                        seen.observe(w, decode(&b), "get b");
                    }
                }
            }
        }
        rounds += 1;
        done.store(rounds, Ordering::SeqCst);
    }
    rounds
}

#[test]
fn batches_are_atomic_under_concurrent_writes_reads_and_flushes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().memtable_size(8 << 10);
    let db = Arc::new(Database::open_with(dir.path(), options.clone()).unwrap());
    // A second handle shares the engine.
    let db2 = Arc::new(Database::open(dir.path()).unwrap());
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (db, acked) = (
                if w.is_multiple_of(2) { &db } else { &db2 }.clone(),
                acked.clone(),
            );
            thread::spawn(move || {
                if w.is_multiple_of(2) {
                    write_blocking(&db, w, &acked[w]);
                } else {
                    write_pipelined(&db, w, &acked[w]);
                }
            })
        })
        .collect();
    let reader_rounds: Arc<Vec<AtomicU64>> = Arc::new((0..2).map(|_| AtomicU64::new(0)).collect());
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (db, stop, rounds) = (
                if r == 0 { &db } else { &db2 }.clone(),
                stop.clone(),
                reader_rounds.clone(),
            );
            thread::spawn(move || reader(&db, &stop, r, &rounds[r]))
        })
        .collect();
    let flusher = {
        let (db, stop) = (db.clone(), stop.clone());
        thread::spawn(move || {
            let mut flushes = 0;
            while !stop.load(Ordering::SeqCst) {
                db.flush().unwrap();
                flushes += 1;
                thread::sleep(Duration::from_millis(50));
            }
            flushes
        })
    };

    for w in writers {
        w.join().unwrap();
    }
    // Each reader finishes a round before the stop (on a loaded machine a
    // reader thread may not have been scheduled before the writers ended).
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader_rounds.iter().any(|r| r.load(Ordering::SeqCst) == 0) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::SeqCst);
    let reads: Vec<u64> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let explicit_flushes = flusher.join().unwrap();
    let stats = db.stats();
    eprintln!(
        "{:?}: reader rounds {reads:?}, explicit flushes {explicit_flushes}, {stats:?}",
        started.elapsed()
    );
    assert!(reads.iter().all(|&r| r > 0), "a reader never ran");
    assert!(stats.flushes > 3, "memtables did not flush: {stats:?}");
    assert_eq!(stats.background_error, None);

    let check = |db: &Database| {
        for w in 0..WRITERS {
            assert_eq!(acked[w].load(Ordering::SeqCst), ROUNDS);
            let want = expected(w, ROUNDS);
            assert_eq!(db.get(key(w, "a")).unwrap(), want, "writer {w}");
            assert_eq!(db.get(key(w, "b")).unwrap(), want, "writer {w}");
        }
        let all = scan_all(db, ScanOptions::default(), 256);
        let mut seen = Seen { last: [0; WRITERS] };
        check_scan(&all, 0..WRITERS, &mut seen, "final scan");
    };
    check(&db);
    check(&db2);
    db.close().unwrap();
    db2.close().unwrap();
    let db = Database::open_with(dir.path(), options).unwrap();
    assert_eq!(db.stats().recovery.dropped_tail, None);
    check(&db);
    db.close().unwrap();
}
