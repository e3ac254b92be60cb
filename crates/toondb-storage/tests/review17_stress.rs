//! Review 17: randomized concurrent check of snapshot/transaction views
//! against a timestamped history while compactions run constantly.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toondb_storage::{Compression, Database, Options, Result, ScanOptions};

fn tiny() -> Options {
    Options::default()
        .memtable_size(4 << 10)
        .block_size(256)
        .target_file_size(2 << 10)
        .level_base_bytes(
            std::env::var("R17_BASE")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(8 << 10),
        )
        .level_size_ratio(2)
        .l0_compaction_trigger(
            std::env::var("R17_TRIGGER")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        )
        .compression(Compression::Lz4)
}

fn key(i: u64) -> Vec<u8> {
    format!("k{i:04}").into_bytes()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type History = Vec<(u64, Vec<u8>, Option<Vec<u8>>)>;

fn model_at(h: &History, ts: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = BTreeMap::new();
    for (t, k, v) in h {
        if *t > ts {
            break;
        }
        match v {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    m
}

fn in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let a = match lo {
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
        Bound::Unbounded => true,
    };
    let b = match hi {
        Bound::Included(u) => k <= u.as_slice(),
        Bound::Excluded(u) => k < u.as_slice(),
        Bound::Unbounded => true,
    };
    a && b
}

fn bound(r: &mut Rng) -> Bound<Vec<u8>> {
    match r.below(3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(r.below(220))),
        _ => Bound::Excluded(key(r.below(220))),
    }
}

#[test]
fn views_match_history_under_constant_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path(), tiny()).unwrap());
    let hist: Arc<Mutex<History>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    {
        let (db, hist, stop) = (db.clone(), hist.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = Rng(0x1234_5678_9abc_def1);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let k = key(r.below(200));
                let mut h = hist.lock().unwrap();
                if r.below(4) == 0 {
                    let mut b = toondb_storage::WriteBatch::new();
                    b.delete(&k).unwrap();
                    let ts = db.write(b).unwrap();
                    h.push((ts, k, None));
                } else {
                    let v = format!("v{n}-{}", "x".repeat((n % 50) as usize)).into_bytes();
                    let mut b = toondb_storage::WriteBatch::new();
                    b.put(&k, &v).unwrap();
                    let ts = db.write(b).unwrap();
                    h.push((ts, k, Some(v)));
                }
            }
        }));
    }
    {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = Rng(77);
            while !stop.load(Ordering::Relaxed) {
                match r.below(3) {
                    0 => db.compact().unwrap(),
                    1 => {
                        let (lo, hi) = (bound(&mut r), bound(&mut r));
                        db.compact_range(lo, hi).unwrap()
                    }
                    _ => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }
    for seed in 0..2u64 {
        let (db, hist, stop) = (db.clone(), hist.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut r = Rng(seed * 1000 + 99);
            while !stop.load(Ordering::Relaxed) {
                let snap = db.snapshot().unwrap();
                let ts = snap.ts();
                let txn = db.transaction().unwrap();
                let tts = txn.read_ts();
                // Let compactions run under the views.
                std::thread::sleep(Duration::from_millis(r.below(20)));
                let (m, mt) = {
                    let h = hist.lock().unwrap();
                    (model_at(&h, ts), model_at(&h, tts))
                };
                for _ in 0..30 {
                    let k = key(r.below(220));
                    assert_eq!(
                        snap.get(&k).unwrap(),
                        m.get(&k).cloned(),
                        "snapshot get {ts}"
                    );
                    assert_eq!(txn.get(&k).unwrap(), mt.get(&k).cloned(), "txn get {tts}");
                }
                let (lo, hi) = (bound(&mut r), bound(&mut r));
                let reverse = r.below(2) == 0;
                let got: Vec<(Vec<u8>, Vec<u8>)> = snap
                    .iter(
                        ScanOptions::default()
                            .lower(lo.clone())
                            .upper(hi.clone())
                            .reverse(reverse),
                    )
                    .unwrap()
                    .collect::<Result<_>>()
                    .unwrap();
                let mut want: Vec<(Vec<u8>, Vec<u8>)> = m
                    .iter()
                    .filter(|(k, _)| in_range(k, &lo, &hi))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                if reverse {
                    want.reverse();
                }
                assert_eq!(got, want, "scan at {ts} {lo:?} {hi:?} rev {reverse}");
                drop(txn);
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let h = hist.lock().unwrap().clone();
    let want = model_at(&h, u64::MAX);
    let got: BTreeMap<_, _> = db
        .iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(got, want);
    println!("{:?}", db.stats().compactions);
    let db = Arc::try_unwrap(db).ok().unwrap();
    db.close().unwrap();
    drop(db);
    let db = Database::open_with(dir.path(), tiny()).unwrap();
    let got: BTreeMap<_, _> = db
        .iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(got, want, "after reopen");
}
