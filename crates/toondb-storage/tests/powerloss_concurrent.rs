//! Concurrent writers (group commit, inline commits, `sync` on and off)
//! while the power is cut, or the process killed, at a random moment.
//!
//! Each writer commits its own keys, so what survived is visible key by
//! key, and each acknowledged commit's timestamp gives the commit order.
//! After a power cut: every commit acknowledged as durable survived, and
//! the acknowledged commits that survived are exactly those up to some
//! timestamp (no holes). Commits that failed because of the crash may or
//! may not have survived (their WAL write may have reached the disk).
//! After a kill: every acknowledged commit survived.

mod powerloss_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use toondb_storage::io::{PowerCut, PowerLossFs};
use toondb_storage::{Database, ScanOptions, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, options, reopen_after_crash, unique_dir};

const WRITERS: usize = 4;

#[derive(Debug)]
struct Acked {
    key: Vec<u8>,
    sync: bool,
}

fn value(w: usize, i: usize) -> Vec<u8> {
    format!("writer {w} commit {i} {}", "v".repeat(i % 13)).into_bytes()
}

/// Runs the writers until `crash` (called once `commits` commits were
/// acknowledged, or after a minute if they stall) stops them;
/// returns the acknowledged commits by timestamp and every key attempted.
/// Counting commits rather than sleeping keeps the test meaningful on a
/// loaded machine.
fn write_until_crash(
    db: &Database,
    commits: usize,
    crash: impl FnOnce(),
) -> (BTreeMap<u64, Acked>, Vec<Vec<u8>>) {
    let acked = Mutex::new(BTreeMap::new());
    let attempted = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (acked, attempted) = (&acked, &attempted);
            s.spawn(move || {
                for i in 0.. {
                    let key = format!("w{w}-{i:06}").into_bytes();
                    let value = value(w, i);
                    let sync = (i + w) % 3 == 0;
                    let mut b = WriteBatch::new();
                    b.put(&key, &value).unwrap();
                    attempted.lock().push(key.clone());
                    match db.write_with(b, WriteOptions::sync(sync)) {
                        Ok(ts) => {
                            let old = acked.lock().insert(ts, Acked { key, sync });
                            assert!(old.is_none(), "timestamp {ts} given twice");
                        }
                        Err(_) => return, // the crash
                    }
                }
            });
        }
        // Only a guard against a hang: the crash comes after `commits`
        // commits, and a loaded machine may need more than a few seconds.
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().len() < commits && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
        crash();
    });
    (acked.into_inner(), attempted.into_inner())
}

fn contents(db: &Database) -> BTreeMap<Vec<u8>, Vec<u8>> {
    db.iter(ScanOptions::default())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn run(seed: u64, kill: bool) -> Result<(), String> {
    let dir = unique_dir("concurrent");
    let fs: PowerLossFs = fresh_disk(&dir);
    // Small memtables: rotations and flushes run during the writes.
    let opts = options(&fs, 8 << 10);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    let commits = 50 + (seed as usize * 97) % 400;
    let (acked, attempted) = write_until_crash(&db, commits, || {
        if kill {
            fs.kill();
        } else {
            fs.power_cut(PowerCut::random(seed, seed.is_multiple_of(2)));
        }
    });
    if acked.len() < 20 {
        return Err(format!("only {} commits before the crash", acked.len()));
    }
    let db = reopen_after_crash(&fs, db, &dir, &opts)?;
    let got = contents(&db);
    eprintln!(
        "seed {seed}: {} acknowledged, {} survived, {} tables",
        acked.len(),
        got.len(),
        db.stats().tables
    );
    db.close().unwrap();

    // Nothing appears that was never attempted; values are whole.
    for (k, v) in &got {
        if !attempted.contains(k) {
            return Err(format!(
                "{:?} was never written",
                String::from_utf8_lossy(k)
            ));
        }
        let (w, i) = parse(k);
        if *v != value(w, i) {
            return Err(format!(
                "{:?} has a wrong value",
                String::from_utf8_lossy(k)
            ));
        }
    }
    let survived = |a: &Acked| got.contains_key(&a.key);
    if kill {
        if let Some((ts, a)) = acked.iter().find(|(_, a)| !survived(a)) {
            return Err(format!(
                "kill lost acknowledged commit ts {ts} ({:?})",
                String::from_utf8_lossy(&a.key)
            ));
        }
        return Ok(());
    }
    let last_durable = acked
        .iter()
        .filter(|(_, a)| a.sync)
        .map(|(ts, _)| *ts)
        .max();
    let last_survivor = acked
        .iter()
        .filter(|(_, a)| survived(a))
        .map(|(ts, _)| *ts)
        .max();
    if let Some(d) = last_durable {
        if last_survivor < Some(d) {
            return Err(format!(
                "durable commit ts {d} lost (last surviving acknowledged commit: {last_survivor:?})"
            ));
        }
    }
    if let Some(t) = last_survivor {
        if let Some((ts, a)) = acked.range(..=t).find(|(_, a)| !survived(a)) {
            return Err(format!(
                "hole: acknowledged commit ts {ts} ({:?}) lost but ts {t} survived",
                String::from_utf8_lossy(&a.key)
            ));
        }
    }
    Ok(())
}

fn parse(key: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(key).unwrap();
    let (w, i) = s.trim_start_matches('w').split_once('-').unwrap();
    (w.parse().unwrap(), i.parse().unwrap())
}

#[test]
fn concurrent_writers_survive_power_cuts() {
    let failures: Vec<String> = (0..12)
        .filter_map(|seed| run(seed, false).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn concurrent_writers_survive_kills() {
    let failures: Vec<String> = (0..6)
        .filter_map(|seed| run(seed, true).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
