//! The bank invariant under concurrency: money moves between accounts in
//! transactions, and no reader ever sees money created or destroyed.
//!
//! `BANK_ACCOUNTS` accounts (`acct/NNN`) start with `INITIAL` each. Writer
//! threads run random transfers (read both accounts in a transaction, move a
//! random amount if funds allow, commit; retry on `Conflict`) and record
//! every committed transfer: its commit timestamp, the amount and the two
//! balances it read. A noise thread writes unrelated keys with plain puts
//! and batches (so non-transactional commits interleave) and the memtable is
//! 8 KiB, so memtables are sealed and flushed throughout. Reader threads
//! sum all accounts, over and over, through every read path that promises
//! one consistent view: `db.snapshot()` + gets, a snapshot scan, a
//! read-only transaction + `iter`, `db.get_many` and `db.iter`. Every sum
//! must equal the total exactly.
//!
//! At the end:
//! - each account's final balance is its initial balance plus the net of
//!   the committed transfers (no update lost, nothing applied twice, a
//!   conflicted transfer applied nothing);
//! - replaying the committed transfers in commit-timestamp order, every
//!   transfer read exactly the balances left by the transfers before it
//!   (first committer wins: both keys it read are keys it wrote), and no
//!   balance ever went negative;
//! - commit timestamps are unique; `stats().conflicts` equals the conflicts
//!   the writers saw; flushes happened.
//!
//! The serializable variant also moves money with whole-table scans ("pay
//! the poorest account from the richest"), and checks that every such
//! transfer's complete scan equals the replayed state at its commit.
//!
//! Size, from the environment (defaults finish in a few seconds in debug):
//! - `BANK_SECONDS` (default 1.5): how long each variant runs;
//! - `BANK_TRANSFERS` (default unlimited): stop earlier, once this many
//!   transfers committed (all writers together);
//! - `BANK_ACCOUNTS` (20), `BANK_WRITERS` (4), `BANK_READERS` (2),
//!   `BANK_SEED` (random; printed, so a failure can be re-run);
//! - `BANK_MEMTABLE_KB` (8): there is no compaction yet, so every flush
//!   adds a table that reads must consult; a long run with a bigger
//!   memtable keeps its pace.
//!
//! A long run: `BANK_SECONDS=600 cargo test --release -p toondb-storage
//! --test bank -- --nocapture` (see scripts/README.md). To watch it fail:
//! `cargo test -p toondb-storage --features broken-isolation --test bank`
//! (the commit thread then skips its conflict checks).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use toondb_storage::{
    Database, ErrorKind, Isolation, Options, ScanOptions, Timestamp, Transaction,
    TransactionOptions, WriteBatch,
};

const INITIAL: u64 = 1_000;
const PREFIX: &[u8] = b"acct/";

struct Config {
    seconds: f64,
    transfers: Option<u64>,
    accounts: usize,
    writers: usize,
    readers: usize,
    seed: u64,
    memtable_kb: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

impl Config {
    fn from_env() -> Config {
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let c = Config {
            seconds: env_or("BANK_SECONDS", 1.5),
            transfers: std::env::var("BANK_TRANSFERS")
                .ok()
                .map(|v| v.parse().expect("BANK_TRANSFERS must be a number")),
            accounts: env_or("BANK_ACCOUNTS", 20usize),
            writers: env_or("BANK_WRITERS", 4usize),
            readers: env_or("BANK_READERS", 2usize),
            seed: env_or("BANK_SEED", clock),
            memtable_kb: env_or("BANK_MEMTABLE_KB", 8usize),
        };
        assert!(c.accounts >= 2 && c.writers >= 1);
        c
    }
}

/// splitmix64: small, seedable, good enough to pick accounts.
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

fn key(i: usize) -> Vec<u8> {
    format!("acct/{i:03}").into_bytes()
}

fn decode(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a balance: {:?}", String::from_utf8_lossy(v)))
}

fn encode(n: u64) -> Vec<u8> {
    n.to_string().into_bytes()
}

fn balance(t: &Transaction, i: usize) -> u64 {
    decode(&t.get(key(i)).unwrap().expect("account is missing"))
}

/// One committed transfer, as the writer saw it.
#[derive(Debug, Clone)]
struct Transfer {
    commit_ts: Timestamp,
    from: usize,
    to: usize,
    amount: u64,
    /// The balances of `from` and `to` the transaction read.
    read: (u64, u64),
    /// For scan-based transfers: every balance the scan returned.
    scanned: Option<Vec<u64>>,
}

#[derive(Debug, Default)]
struct WriterReport {
    transfers: Vec<Transfer>,
    conflicts: u64,
    insufficient: u64,
}

#[derive(Debug, Default)]
struct ReaderReport {
    sums: u64,
}

fn open(dir: &std::path::Path) -> Database {
    open_kb(dir, 8)
}

fn open_kb(dir: &std::path::Path, memtable_kb: usize) -> Database {
    Database::open_with(dir, Options::default().memtable_size(memtable_kb << 10)).unwrap()
}

fn scan_balances(t: &Transaction, n: usize) -> Vec<u64> {
    let all: Vec<(Vec<u8>, Vec<u8>)> = t
        .iter(ScanOptions::prefix(PREFIX))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(all.len(), n, "a scan saw {} accounts", all.len());
    all.iter()
        .enumerate()
        .map(|(i, (k, v))| {
            assert_eq!(k, &key(i), "scan out of order");
            decode(v)
        })
        .collect()
}

/// One transfer attempt: `Ok(Some(_))` committed, `Ok(None)` not enough
/// money (committed read-only), `Err(())` lost a conflict.
fn attempt(
    db: &Database,
    options: TransactionOptions,
    rng: &mut Rng,
    n: usize,
    by_scan: bool,
) -> Result<Option<Transfer>, ()> {
    let t = db.transaction_with(options).unwrap();
    let (from, to, scanned) = if by_scan {
        let all = scan_balances(&t, n);
        let richest = (0..n).max_by_key(|&i| (all[i], i)).unwrap();
        let poorest = (0..n).min_by_key(|&i| (all[i], i)).unwrap();
        if richest == poorest {
            t.rollback().unwrap();
            return Ok(None);
        }
        (richest, poorest, Some(all))
    } else {
        let from = rng.below(n as u64) as usize;
        let to = (from + 1 + rng.below(n as u64 - 1) as usize) % n;
        (from, to, None)
    };
    let read = (balance(&t, from), balance(&t, to));
    if let Some(all) = &scanned {
        assert_eq!(read, (all[from], all[to]), "get disagrees with scan");
    }
    let amount = 1 + rng.below(INITIAL / 4);
    if read.0 < amount {
        // A read-only commit never conflicts and returns the read ts.
        let read_ts = t.read_ts();
        assert_eq!(t.commit().unwrap(), read_ts);
        return Ok(None);
    }
    t.put(key(from), encode(read.0 - amount)).unwrap();
    t.put(key(to), encode(read.1 + amount)).unwrap();
    // Own writes are visible before commit.
    assert_eq!(balance(&t, from), read.0 - amount);
    match t.commit() {
        Ok(commit_ts) => {
            assert!(commit_ts > t.read_ts());
            Ok(Some(Transfer {
                commit_ts,
                from,
                to,
                amount,
                read,
                scanned,
            }))
        }
        Err(e) if e.kind() == ErrorKind::Conflict => Err(()),
        Err(e) => panic!("commit failed: {e}"),
    }
}

fn writer(
    db: &Database,
    options: TransactionOptions,
    cfg: &Config,
    seed: u64,
    stop: &AtomicBool,
    committed: &AtomicU64,
) -> WriterReport {
    let mut rng = Rng(seed);
    let mut report = WriterReport::default();
    let serializable = options.isolation == Isolation::Serializable;
    while !stop.load(Ordering::Relaxed) {
        let by_scan = serializable && rng.below(16) == 0;
        loop {
            match attempt(db, options, &mut rng, cfg.accounts, by_scan) {
                Ok(Some(t)) => {
                    report.transfers.push(t);
                    let done = committed.fetch_add(1, Ordering::Relaxed) + 1;
                    if cfg.transfers.is_some_and(|limit| done >= limit) {
                        stop.store(true, Ordering::Relaxed);
                    }
                    break;
                }
                Ok(None) => {
                    report.insufficient += 1;
                    break;
                }
                Err(()) => {
                    report.conflicts += 1;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
        }
    }
    report
}

fn check_sum(what: &str, balances: impl IntoIterator<Item = u64>, n: usize, total: u64) {
    let mut count = 0;
    let mut sum = 0;
    for b in balances {
        count += 1;
        sum += b;
    }
    assert_eq!(count, n, "{what}: saw {count} accounts");
    assert_eq!(sum, total, "{what}: the sum of all balances changed");
}

fn reader(
    db: &Database,
    cfg: &Config,
    id: usize,
    stop: &AtomicBool,
    sums_done: &AtomicU64,
) -> ReaderReport {
    let n = cfg.accounts;
    let total = INITIAL * n as u64;
    let keys: Vec<Vec<u8>> = (0..n).map(key).collect();
    let mut report = ReaderReport::default();
    let mut round = id;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        match round % 5 {
            0 => {
                let snap = db.snapshot().unwrap();
                let first: Vec<u64> = keys
                    .iter()
                    .map(|k| decode(&snap.get(k).unwrap().expect("account is missing")))
                    .collect();
                check_sum("snapshot gets", first.iter().copied(), n, total);
                // Still the same view after writers moved on.
                std::thread::yield_now();
                let again = snap.get(&keys[round % n]).unwrap().unwrap();
                assert_eq!(
                    decode(&again),
                    first[round % n],
                    "a snapshot re-read changed"
                );
                snap.release();
            }
            1 => {
                let snap = db.snapshot().unwrap();
                let scanned = snap
                    .iter(ScanOptions::prefix(PREFIX).reverse(round.is_multiple_of(2)))
                    .unwrap()
                    .map(|r| decode(&r.unwrap().1));
                check_sum("snapshot scan", scanned, n, total);
            }
            2 => {
                let t = db.transaction().unwrap();
                check_sum("read-only txn scan", scan_balances(&t, n), n, total);
                let gets = (0..n).map(|i| balance(&t, i));
                check_sum("read-only txn gets", gets, n, total);
                assert_eq!(t.commit().unwrap(), t.read_ts());
            }
            3 => {
                let all = db.get_many(&keys).unwrap();
                let balances = all.iter().map(|v| decode(v.as_ref().expect("missing")));
                check_sum("db.get_many", balances, n, total);
            }
            _ => {
                let scanned = db
                    .iter(ScanOptions::prefix(PREFIX))
                    .unwrap()
                    .map(|r| decode(&r.unwrap().1));
                check_sum("db.iter", scanned, n, total);
            }
        }
        report.sums += 1;
        sums_done.fetch_add(1, Ordering::Relaxed);
    }
    report
}

/// Unrelated plain puts and batches, so memtables fill and flush and the
/// commit groups mix transactions with non-transactional writes.
fn noise(db: &Database, stop: &AtomicBool) -> u64 {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if i.is_multiple_of(3) {
            let mut b = WriteBatch::new();
            b.put(format!("noise/{:02}", i % 50), [b'n'; 100]).unwrap();
            b.delete(format!("noise/{:02}", (i + 7) % 50)).unwrap();
            db.write(b).unwrap();
        } else {
            db.put(format!("noise/{:02}", i % 50), [b'p'; 100]).unwrap();
        }
        if i.is_multiple_of(100) {
            db.flush().unwrap();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    i
}

/// Joins a thread; a panic in it fails the test with its own message.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn run(isolation: Isolation) {
    let cfg = Config::from_env();
    let n = cfg.accounts;
    let total = INITIAL * n as u64;
    eprintln!(
        "bank {isolation:?}: {n} accounts, {} writers, {} readers, {}s, transfers {:?}, \
         memtable {} KiB, BANK_SEED={}",
        cfg.writers, cfg.readers, cfg.seconds, cfg.transfers, cfg.memtable_kb, cfg.seed
    );
    let dir = tempfile::tempdir().unwrap();
    let db = open_kb(dir.path(), cfg.memtable_kb);
    let mut setup = WriteBatch::new();
    for i in 0..n {
        setup.put(key(i), encode(INITIAL)).unwrap();
    }
    db.write(setup).unwrap();
    let options = TransactionOptions::default().isolation(isolation);

    let stop = AtomicBool::new(false);
    let committed = AtomicU64::new(0);
    let sums_done = AtomicU64::new(0);
    let threads = cfg.writers + cfg.readers + 1;
    let start = Barrier::new(threads + 1);
    let started = Instant::now();
    let (writers, readers, noise_writes) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..cfg.writers)
            .map(|w| {
                let (db, cfg, stop, committed, start) = (&db, &cfg, &stop, &committed, &start);
                s.spawn(move || {
                    start.wait();
                    writer(db, options, cfg, cfg.seed ^ (w as u64 + 1), stop, committed)
                })
            })
            .collect();
        let readers: Vec<_> = (0..cfg.readers)
            .map(|r| {
                let (db, cfg, stop, start, sums_done) = (&db, &cfg, &stop, &start, &sums_done);
                s.spawn(move || {
                    start.wait();
                    reader(db, cfg, r, stop, sums_done)
                })
            })
            .collect();
        let noise = s.spawn(|| {
            start.wait();
            noise(&db, &stop)
        });
        start.wait();
        let deadline = started + Duration::from_secs_f64(cfg.seconds);
        // Past the deadline, run on until the run did what the checks below
        // expect (a transfer, a reader's sum, a flush): on a loaded machine
        // the threads may get little of the time.
        let progressed = || {
            committed.load(Ordering::Relaxed) > 0
                && (cfg.readers == 0 || sums_done.load(Ordering::Relaxed) > 0)
                && db.stats().flushes > 0
        };
        let mut last_report = Instant::now();
        while !stop.load(Ordering::Relaxed) && (Instant::now() < deadline || !progressed()) {
            if Instant::now() > deadline + Duration::from_secs(120) {
                break; // the checks below say what never happened
            }
            std::thread::sleep(Duration::from_millis(20));
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                let st = db.stats();
                eprintln!(
                    "  {:>6.0}s: {} transfers, {} conflicts, {} flushes, {} tables",
                    started.elapsed().as_secs_f64(),
                    committed.load(Ordering::Relaxed),
                    st.conflicts,
                    st.flushes,
                    st.tables
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        let writers: Vec<WriterReport> = writers.into_iter().map(join).collect();
        let readers: Vec<ReaderReport> = readers.into_iter().map(join).collect();
        (writers, readers, join(noise))
    });
    let elapsed = started.elapsed();

    // Final balances are the initial ones plus the net of every committed
    // transfer.
    let mut expected = vec![INITIAL as i64; n];
    for t in writers.iter().flat_map(|w| &w.transfers) {
        expected[t.from] -= t.amount as i64;
        expected[t.to] += t.amount as i64;
    }
    let actual: Vec<i64> = (0..n)
        .map(|i| decode(&db.get(key(i)).unwrap().unwrap()) as i64)
        .collect();
    assert_eq!(
        actual, expected,
        "final balances differ from initial balances plus committed transfers"
    );
    assert_eq!(actual.iter().sum::<i64>(), total as i64);

    // Replayed in commit order, each transfer read what the ones before it
    // left: an update lost to a concurrent writer shows up right here.
    let mut log: Vec<&Transfer> = writers.iter().flat_map(|w| &w.transfers).collect();
    log.sort_by_key(|t| t.commit_ts);
    for pair in log.windows(2) {
        assert_ne!(
            pair[0].commit_ts, pair[1].commit_ts,
            "two commits got the same timestamp"
        );
    }
    let mut state = vec![INITIAL; n];
    for t in &log {
        assert_eq!(
            t.read,
            (state[t.from], state[t.to]),
            "lost update: the transfer committed at ts {} (acct {} -> {}, {}) read balances \
             that another transfer had already overwritten when it committed",
            t.commit_ts,
            t.from,
            t.to,
            t.amount
        );
        if let Some(all) = &t.scanned {
            assert_eq!(
                all, &state,
                "serializable scan at commit ts {} read a stale table",
                t.commit_ts
            );
        }
        assert!(state[t.from] >= t.amount, "overdraft at ts {}", t.commit_ts);
        state[t.from] -= t.amount;
        state[t.to] += t.amount;
    }
    assert_eq!(state.iter().map(|&b| b as i64).collect::<Vec<_>>(), actual);

    let stats = db.stats();
    let conflicts: u64 = writers.iter().map(|w| w.conflicts).sum();
    let insufficient: u64 = writers.iter().map(|w| w.insufficient).sum();
    let sums: u64 = readers.iter().map(|r| r.sums).sum();
    let by_scan = log.iter().filter(|t| t.scanned.is_some()).count();
    eprintln!(
        "bank {isolation:?}: {} transfers ({by_scan} by scan, {insufficient} refused) in {:.1}s, \
         {conflicts} conflicts, {sums} consistent sums, {noise_writes} noise writes, \
         {} flushes, {} tables, {} commits in {} groups",
        log.len(),
        elapsed.as_secs_f64(),
        stats.flushes,
        stats.tables,
        stats.commits,
        stats.commit_groups
    );
    assert_eq!(stats.conflicts, conflicts, "stats().conflicts");
    assert!(!log.is_empty(), "no transfer committed");
    assert!(sums > 0 || cfg.readers == 0, "readers never finished a sum");
    assert!(stats.flushes > 0, "the run never flushed a memtable");
    assert_eq!(stats.live_snapshots, 0, "a snapshot leaked");
    db.close().unwrap();

    // And it all survives a reopen (WAL + tables).
    let db = open_kb(dir.path(), cfg.memtable_kb);
    let reopened: Vec<i64> = (0..n)
        .map(|i| decode(&db.get(key(i)).unwrap().unwrap()) as i64)
        .collect();
    assert_eq!(reopened, expected, "balances after reopen");
}

#[test]
fn bank_snapshot_isolation() {
    run(Isolation::Snapshot);
}

#[test]
fn bank_serializable() {
    run(Isolation::Serializable);
}

/// The bookkeeping itself: a transfer that loses a conflict applies
/// nothing, and the winner's balances are what the replay expects.
#[test]
fn a_conflicted_transfer_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    db.put(key(0), encode(100)).unwrap();
    db.put(key(1), encode(100)).unwrap();
    let a = db.transaction().unwrap();
    let b = db.transaction().unwrap();
    for (t, amount) in [(&a, 10), (&b, 20)] {
        let (x, y) = (balance(t, 0), balance(t, 1));
        t.put(key(0), encode(x - amount)).unwrap();
        t.put(key(1), encode(y + amount)).unwrap();
    }
    let ts = a.commit().unwrap();
    assert_eq!(b.commit().unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(db.get(key(0)).unwrap(), Some(encode(90)));
    assert_eq!(db.get(key(1)).unwrap(), Some(encode(110)));
    assert_eq!(db.stats().visible_ts, ts);
}
