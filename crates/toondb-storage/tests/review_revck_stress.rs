//! Review of the WAL checkpoint branch: writers that overwrite a small key
//! space (so an old version shadowing a newer one would show) while
//! `flush()`, `compact()` and the background rotate, checkpoint, flush and
//! compact, then a kill or a power cut at a random moment, a reopen, and
//! a second crash right after the reopen (checkpoint tables are then
//! ordinary level-0 tables next to the replayed memtable). Checked per key
//! against the acknowledged commits in timestamp order.

mod powerloss_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use toondb_storage::io::{PowerCut, PowerLossFs};
use toondb_storage::{Database, ScanOptions, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, options, reopen_after_crash, unique_dir, wait_idle};

const WRITERS: usize = 3;
const KEYS: usize = 12;

fn key(w: usize, k: usize) -> Vec<u8> {
    format!("w{w}-k{k:02}").into_bytes()
}

fn value(w: usize, i: usize) -> Vec<u8> {
    format!("w{w}-i{i:06}-{}", "v".repeat(i % 37)).into_bytes()
}

#[derive(Debug, Clone)]
struct Acked {
    key: Vec<u8>,
    value: Vec<u8>,
    sync: bool,
}

type Acks = BTreeMap<u64, Acked>;

fn write_until(
    db: &Database,
    commits: usize,
    seed: u64,
    crash: impl FnOnce(),
) -> (Acks, BTreeSet<Vec<u8>>) {
    let acked = Mutex::new(BTreeMap::new());
    let failed = Mutex::new(BTreeSet::new());
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let (acked, failed) = (&acked, &failed);
            s.spawn(move || {
                for i in 0.. {
                    let k = (i * 7 + w + seed as usize) % KEYS;
                    let key = key(w, k);
                    let value = value(w, i);
                    let sync = (i + w + seed as usize).is_multiple_of(11);
                    let mut b = WriteBatch::new();
                    b.put(&key, &value).unwrap();
                    if i % 5 == 3 {
                        // A delete of another of this writer's keys.
                        b.delete(self::key(w, (k + 1) % KEYS)).unwrap();
                    }
                    match db.write_with(b, WriteOptions::sync(sync)) {
                        Ok(ts) => {
                            acked.lock().insert(ts, Acked { key, value, sync });
                            if i % 5 == 3 {
                                acked.lock().insert(
                                    ts | (1 << 63),
                                    Acked {
                                        key: self::key(w, (k + 1) % KEYS),
                                        value: Vec::new(),
                                        sync,
                                    },
                                );
                            }
                        }
                        Err(_) => {
                            failed.lock().insert(value);
                            return;
                        }
                    }
                }
            });
        }
        let stop = &stop;
        s.spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                let r = match (n + seed) % 16 {
                    0 => db.compact(),
                    1..=3 => db.flush(),
                    _ => Ok(()),
                };
                if r.is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1 + (n + seed) % 4));
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().len() < commits && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(300));
        }
        crash();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    (acked.into_inner(), failed.into_inner())
}

/// The state after every acknowledged commit up to `upto` (a delete is
/// recorded under its commit's timestamp with the top bit set).
fn state_at(acked: &Acks, upto: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut by_ts: Vec<(u64, u8, &Acked)> = acked
        .iter()
        .map(|(&t, a)| {
            if t >> 63 == 1 {
                (t & !(1 << 63), 1, a)
            } else {
                (t, 0, a)
            }
        })
        .filter(|(t, _, _)| *t <= upto)
        .collect();
    by_ts.sort_by_key(|(t, order, _)| (*t, *order));
    let mut m = BTreeMap::new();
    for (_, _, a) in by_ts {
        if a.value.is_empty() {
            m.remove(&a.key);
        } else {
            m.insert(a.key.clone(), a.value.clone());
        }
    }
    m
}

fn contents(db: &Database) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, String> {
    let mut m = BTreeMap::new();
    for item in db.iter(ScanOptions::default()).map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        m.insert(k, v);
    }
    for w in 0..WRITERS {
        for k in 0..KEYS {
            let key = key(w, k);
            let got = db.get(&key).map_err(|e| e.to_string())?;
            if got.as_ref() != m.get(&key) {
                return Err(format!(
                    "get and scan disagree on {:?}",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
    }
    Ok(m)
}

/// Checks `got` against the acknowledged commits: after a kill, all of
/// them; after a power cut, all up to some timestamp at or past the last
/// durable one. Values of commits that failed in the crash may appear.
fn check(
    acked: &Acks,
    failed: &BTreeSet<Vec<u8>>,
    got: &BTreeMap<Vec<u8>, Vec<u8>>,
    kill: bool,
) -> Result<(), String> {
    let last = acked.keys().map(|t| t & !(1 << 63)).max().unwrap_or(0);
    let durable = acked
        .iter()
        .filter(|(_, a)| a.sync)
        .map(|(t, _)| t & !(1 << 63))
        .max()
        .unwrap_or(0);
    let candidates: Vec<u64> = if kill {
        vec![last]
    } else {
        let mut c: Vec<u64> = acked
            .keys()
            .map(|t| t & !(1 << 63))
            .filter(|&t| t >= durable)
            .collect();
        c.push(durable);
        c.sort_unstable();
        c.dedup();
        c
    };
    let matches = |want: &BTreeMap<Vec<u8>, Vec<u8>>| {
        let keys: BTreeSet<&Vec<u8>> = want.keys().chain(got.keys()).collect();
        keys.into_iter().all(|k| match (want.get(k), got.get(k)) {
            (a, b) if a == b => true,
            (_, Some(v)) => failed.contains(v),
            // A failed commit may have deleted it too.
            (_, None) => !failed.is_empty(),
        })
    };
    if candidates.iter().any(|&t| matches(&state_at(acked, t))) {
        return Ok(());
    }
    let want = state_at(acked, last);
    let mut diff = Vec::new();
    for (k, v) in &want {
        if got.get(k) != Some(v) {
            diff.push(format!(
                "{}: want {}, got {:?}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(&v[..12]),
                got.get(k)
                    .map(|v| String::from_utf8_lossy(&v[..12]).into_owned())
            ));
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            diff.push(format!("{} is back", String::from_utf8_lossy(k)));
        }
    }
    Err(format!(
        "no allowed state ({} acknowledged, last durable ts {durable}, last ts {last}); against all: {}",
        acked.len(),
        diff.join("; ")
    ))
}

fn run(seed: u64, kill: bool) -> Result<(), String> {
    let dir = unique_dir("revck-stress");
    let fs: PowerLossFs = fresh_disk(&dir);
    let opts = options(
        &fs,
        if seed.is_multiple_of(3) {
            16 << 10
        } else {
            96 << 10
        },
    )
    .wal_size_limit(4096);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    let commits = 150 + (seed as usize * 131) % 1500;
    let cut = PowerCut::random(seed, seed.is_multiple_of(2));
    let (acked, failed) = write_until(&db, commits, seed, || {
        if kill {
            fs.kill();
        } else {
            fs.power_cut(cut);
        }
    });
    let st = db.stats();
    let checkpoints = st.checkpoints;
    eprintln!(
        "seed {seed} kill {kill}: {} acked, {} checkpoints, {} flushes, {} compactions",
        acked.len(),
        checkpoints,
        st.flushes,
        st.compactions
    );
    let db = reopen_after_crash(&fs, db, &dir, &opts)?;
    let got = contents(&db)?;
    check(&acked, &failed, &got, kill)
        .map_err(|e| format!("after the crash ({checkpoints} checkpoints): {e}"))?;
    // A second crash right after the reopen (the replayed memtable may be
    // unflushed, the old checkpoint tables in level 0): a kill loses nothing.
    if seed.is_multiple_of(2) {
        wait_idle(&db);
    }
    fs.kill();
    let db = reopen_after_crash(&fs, db, &dir, &opts)?;
    let again = contents(&db)?;
    if again != got {
        return Err("a kill right after the reopen changed the contents".to_owned());
    }
    wait_idle(&db);
    db.compact().map_err(|e| e.to_string())?;
    if contents(&db)? != got {
        return Err("compaction after the reopen changed the contents".to_owned());
    }
    let report = db.verify().map_err(|e| e.to_string())?;
    if !report.ok() {
        return Err(format!("verify: {:?}", report.problems));
    }
    db.close().map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn overwriting_writers_with_checkpoints_flushes_and_compactions_survive_kills() {
    let failures: Vec<String> = (0..10)
        .filter_map(|seed| run(seed, true).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn overwriting_writers_with_checkpoints_flushes_and_compactions_survive_power_cuts() {
    let failures: Vec<String> = (0..14)
        .filter_map(|seed| run(seed, false).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
