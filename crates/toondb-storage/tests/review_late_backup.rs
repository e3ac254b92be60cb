//! review-late: a destination an unfinished backup left behind must not
//! open as a valid database.

use toondb_storage::{Database, BACKUP_MARKER};

/// A backup that crashed (or lost its power) after claiming the
/// destination, before CURRENT: only the marker is there (the links and
/// files were never made durable). Opening it must not hand back a fresh,
/// empty database as if it were the backup.
#[test]
fn review_late_unfinished_backup_destination_opens_as_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let db = Database::open(&src).unwrap();
    for i in 0..100u32 {
        db.put(format!("k{i:03}"), "v").unwrap();
    }
    let dest = dir.path().join("copy");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join(BACKUP_MARKER), "").unwrap();
    let opened = Database::open(&dest);
    let count = opened
        .as_ref()
        .map(|c| c.iter(Default::default()).unwrap().count())
        .ok();
    assert!(
        opened.is_err(),
        "a destination still marked {BACKUP_MARKER} opened as a valid database with {count:?} keys"
    );
    db.close().unwrap();
}

/// Backups while writers delete heavily and a thread runs full compactions
/// (inputs deleted, tombstones dropped at the bottom): each copy holds
/// exactly the commits at or below its timestamp.
#[test]
fn review_late_backup_during_compactions_and_deletes() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use toondb_storage::{Options, Result, ScanOptions, Timestamp, WriteBatch};
    type Logged = (Timestamp, Vec<(Vec<u8>, Option<Vec<u8>>)>);
    let options = Options::default()
        .memtable_size(4 << 10)
        .block_size(256)
        .target_file_size(2 << 10)
        .level_base_bytes(8 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2);
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::open_with(dir.path().join("src"), options).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2u32)
        .map(|w| {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut log: Vec<Logged> = Vec::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let k = format!("k{:03}", (i * 17 + w * 5) % 300).into_bytes();
                    let mut b = WriteBatch::new();
                    let op = if i.is_multiple_of(2) {
                        b.delete(&k).unwrap();
                        None
                    } else {
                        let v = format!("w{w}i{i}").into_bytes();
                        b.put(&k, &v).unwrap();
                        Some(v)
                    };
                    let ts = db.write(b).unwrap();
                    log.push((ts, vec![(k, op)]));
                    i += 1;
                }
                log
            })
        })
        .collect();
    let compactor = {
        let (db, stop) = (db.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                db.compact().unwrap();
            }
        })
    };
    let mut backups = Vec::new();
    for n in 0..6 {
        std::thread::sleep(std::time::Duration::from_millis(80));
        let dest = dir.path().join(format!("b{n}"));
        let r = db.backup(&dest).unwrap();
        backups.push((dest, r));
    }
    stop.store(true, Ordering::Relaxed);
    compactor.join().unwrap();
    let log: Vec<Logged> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    db.close().unwrap();
    for (dest, r) in backups {
        let mut sorted: Vec<&Logged> = log.iter().filter(|(t, _)| *t <= r.ts).collect();
        sorted.sort_by_key(|(t, _)| *t);
        let mut m = BTreeMap::new();
        for (_, ops) in sorted {
            for (k, v) in ops {
                match v {
                    Some(v) => m.insert(k.clone(), v.clone()),
                    None => m.remove(k),
                };
            }
        }
        let exp: Vec<(Vec<u8>, Vec<u8>)> = m.into_iter().collect();
        let copy = Database::open(&dest).unwrap();
        let got: Vec<_> = copy
            .iter(ScanOptions::default())
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(got, exp, "{r:?}");
        copy.close().unwrap();
    }
}
