//! Online backup (`Database::backup`) and `Database::verify`.
//!
//! - A backup taken while threads write holds exactly the commits at or
//!   below the timestamp it reports, nothing newer, nothing missing.
//! - A backup never changes a source file: its table files are hard links,
//!   and writing to and compacting the opened copy leaves every byte of the
//!   source as it was.
//! - The destination must be new or empty; two backups racing for one
//!   destination leave exactly one valid copy and the source untouched.
//! - `verify` reads every table block through its checksum and catches a
//!   flipped byte.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, Result, ScanOptions, Timestamp, WriteBatch};

fn tiny() -> Options {
    Options::default()
        .memtable_size(8 << 10)
        .block_size(256)
        .target_file_size(4 << 10)
        .level_base_bytes(16 << 10)
        .level_size_ratio(2)
        .l0_compaction_trigger(2)
}

fn all(db: &Database) -> Vec<(Vec<u8>, Vec<u8>)> {
    db.iter(ScanOptions::default())
        .unwrap()
        .collect::<Result<Vec<_>>>()
        .unwrap()
}

/// Every file in `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// A logged write: its commit timestamp and its operations (value `None` =
/// delete).
type Logged = (Timestamp, Vec<(Vec<u8>, Option<Vec<u8>>)>);

fn state_at(log: &[Logged], ts: Timestamp) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut sorted: Vec<&Logged> = log.iter().filter(|(t, _)| *t <= ts).collect();
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
    m.into_iter().collect()
}

#[test]
fn backup_under_concurrent_writes_holds_exactly_one_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let db = Arc::new(Database::open_with(&src, tiny()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4u32)
        .map(|w| {
            let db = db.clone();
            let stop = stop.clone();
            let written = written.clone();
            std::thread::spawn(move || {
                let mut log: Vec<Logged> = Vec::new();
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    // Two keys per batch, shared with the other writers, so
                    // a torn batch or a mixed timestamp shows.
                    let a = format!("k{:04}", (i * 7 + w) % 500).into_bytes();
                    let b = format!("k{:04}", (i * 13 + w * 3) % 500).into_bytes();
                    let v = format!("w{w}-i{i}-{}", "x".repeat((i % 5) as usize * 20));
                    let mut batch = WriteBatch::new();
                    let mut ops = Vec::new();
                    batch.put(&a, v.as_bytes()).unwrap();
                    ops.push((a.clone(), Some(v.clone().into_bytes())));
                    if i.is_multiple_of(4) {
                        batch.delete(&b).unwrap();
                        ops.push((b, None));
                    } else if b != a {
                        batch.put(&b, v.as_bytes()).unwrap();
                        ops.push((b, Some(v.into_bytes())));
                    }
                    let ts = db.write(batch).unwrap();
                    log.push((ts, ops));
                    written.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                log
            })
        })
        .collect();
    let mut backups = Vec::new();
    for n in 0..4u64 {
        // Spaced by the writers' progress, not by time: 400 more writes
        // before each backup (so the counts asserted below always hold).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while written.load(Ordering::Relaxed) < (n + 1) * 400 {
            assert!(std::time::Instant::now() < deadline, "writers stalled");
            std::thread::sleep(Duration::from_millis(5));
        }
        let dest = dir.path().join(format!("backup{n}"));
        let report = db.backup(&dest).unwrap();
        backups.push((dest, report));
    }
    stop.store(true, Ordering::Relaxed);
    let log: Vec<Logged> = writers
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(log.len() > 1000, "writers made progress: {}", log.len());
    let stats = db.stats();
    assert!(stats.flushes > 0, "memtables were flushed during the test");
    db.close().unwrap();

    for (dest, report) in backups {
        assert!(!dest.join(toondb_storage::BACKUP_MARKER).exists());
        let copy = Database::open(&dest).unwrap();
        assert_eq!(copy.stats().visible_ts, report.ts, "{report:?}");
        let expected = state_at(&log, report.ts);
        assert_eq!(
            all(&copy),
            expected,
            "backup at ts {} ({report:?})",
            report.ts
        );
        assert!(copy.verify().unwrap().ok());
        // New commits in the copy get newer timestamps.
        let ts = copy.write({
            let mut b = WriteBatch::new();
            b.put("after", "x").unwrap();
            b
        });
        assert!(ts.unwrap() > report.ts);
        copy.close().unwrap();
    }
}

#[test]
fn backup_never_modifies_source_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // A background compaction could delete linked source tables before the
    // source is listed below (the copy is compacted manually instead).
    let no_auto = tiny().auto_compaction(false);
    let db = Database::open_with(&src, no_auto).unwrap();
    for i in 0..3000u32 {
        db.put(format!("k{i:05}"), format!("v{i}-{}", "y".repeat(40)))
            .unwrap();
    }
    db.compact().unwrap();
    for i in 0..200u32 {
        db.put(format!("k{i:05}"), "in-memtable").unwrap();
    }
    let before_contents = all(&db);
    let dest = dir.path().join("copy");
    let report = db.backup(&dest).unwrap();
    assert!(report.tables_linked > 0, "{report:?}");
    assert!(
        report.tables_written > 0,
        "the memtable became a table: {report:?}"
    );
    db.close().unwrap();
    let before = files(&src);

    // Linked: same inode, so the test below is about shared bytes.
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let linked = before
            .keys()
            .filter(|n| n.ends_with(".sst") && dest.join(n).exists())
            .filter(|n| {
                std::fs::metadata(src.join(n)).unwrap().ino()
                    == std::fs::metadata(dest.join(n)).unwrap().ino()
            })
            .count();
        assert_eq!(linked as u64, report.tables_linked);
    }

    let copy = Database::open_with(&dest, tiny()).unwrap();
    assert_eq!(all(&copy), before_contents);
    for i in 0..3000u32 {
        if i % 3 == 0 {
            copy.delete(format!("k{i:05}")).unwrap();
        } else {
            copy.put(format!("k{i:05}"), "rewritten").unwrap();
        }
    }
    copy.compact().unwrap();
    copy.close().unwrap();
    // Reopen and compact again (recovery deletes and rewrites files).
    let copy = Database::open_with(&dest, tiny()).unwrap();
    copy.compact().unwrap();
    copy.close().unwrap();

    let after = files(&src);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "source file {name} changed");
    }
    let db = Database::open(&src).unwrap();
    assert_eq!(all(&db), before_contents);
    db.close().unwrap();
}

#[test]
fn backup_destination_must_be_new_or_empty_and_is_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let db = Arc::new(Database::open_with(&src, tiny()).unwrap());
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    db.put("last", "1").unwrap();
    let expected = all(&db);

    // An existing empty directory is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    db.backup(&empty).unwrap();

    // A non-empty one, one being written by another backup, and the
    // database itself are refused, and left as they were.
    let full = dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("keep.txt"), "mine").unwrap();
    let err = db.backup(&full).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert_eq!(files(&full).len(), 1);
    let err = db.backup(&empty).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    let claimed = dir.path().join("claimed");
    std::fs::create_dir(&claimed).unwrap();
    std::fs::write(claimed.join(toondb_storage::BACKUP_MARKER), "").unwrap();
    let err = db.backup(&claimed).unwrap_err();
    assert!(err.to_string().contains("another backup"), "{err}");
    assert_eq!(files(&claimed).len(), 1);
    assert!(db.backup(&src).is_err());
    assert!(db.backup(src.join("inside")).is_err());

    // Two backups racing for one destination: exactly one succeeds.
    for round in 0..5 {
        let dest = dir.path().join(format!("race{round}"));
        let results: Vec<_> = (0..2)
            .map(|_| {
                let db = db.clone();
                let dest = dest.clone();
                std::thread::spawn(move || db.backup(&dest))
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        let copy = Database::open(&dest).unwrap();
        assert_eq!(all(&copy), expected);
        copy.close().unwrap();
    }
    let copy = Database::open(&empty).unwrap();
    assert_eq!(all(&copy), expected);
    copy.close().unwrap();
    let db = Arc::try_unwrap(db).unwrap();
    assert_eq!(all(&db), expected);
    assert!(db.verify().unwrap().ok());
    db.close().unwrap();
}

/// A file system without hard links (the trait's default): backup copies.
struct NoLinks;

impl WriteHook for NoLinks {
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

#[test]
fn backup_copies_when_links_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let options = tiny().fs(Arc::new(WrappedFs::os(NoLinks)));
    let db = Database::open_with(&src, options).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    let dest = dir.path().join("copy");
    let report = db.backup(&dest).unwrap();
    assert_eq!(report.tables_linked, 0);
    assert!(report.tables_copied > 0, "{report:?}");
    let expected = all(&db);
    db.close().unwrap();
    let copy = Database::open(&dest).unwrap();
    assert_eq!(all(&copy), expected);
    copy.close().unwrap();
}

/// Fails creating files whose path contains `fail-here` (a backup
/// destination), once the table files are in place: the manifest.
struct FailInDest;

impl WriteHook for FailInDest {
    fn before_create(&self, path: &Path) -> Result<()> {
        let p = path.to_string_lossy();
        if p.contains("fail-here") && p.contains("MANIFEST") {
            return Err(toondb_storage::Error::new(ErrorKind::Io, "injected"));
        }
        Ok(())
    }
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
}

#[test]
fn a_failed_backup_leaves_the_destination_empty_and_the_source_intact() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let options = tiny().fs(Arc::new(WrappedFs::os(FailInDest)));
    let db = Database::open_with(&src, options).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("v{i}")).unwrap();
    }
    db.flush().unwrap();
    db.put("memtable", "1").unwrap();
    let expected = all(&db);
    let dest = dir.path().join("fail-here");
    let err = db.backup(&dest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert!(
        std::fs::read_dir(&dest).unwrap().next().is_none(),
        "left behind: {:?}",
        files(&dest).keys().collect::<Vec<_>>()
    );
    // The destination is usable again, the source unchanged and working.
    assert_eq!(all(&db), expected);
    db.put("after", "2").unwrap();
    let ok_dest = dir.path().join("ok");
    db.backup(&ok_dest).unwrap();
    db.close().unwrap();
    let db = Database::open(&src).unwrap();
    assert!(db.verify().unwrap().ok());
    db.close().unwrap();
    let copy = Database::open(&ok_dest).unwrap();
    assert_eq!(copy.get("after").unwrap().as_deref(), Some(&b"2"[..]));
    copy.close().unwrap();
}

#[test]
fn verify_reads_every_block_and_catches_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("db");
    // No background compaction: the table picked from the listing below
    // must stay live while it is damaged and verified.
    let options = tiny().auto_compaction(false);
    let db = Database::open_with(&src, options).unwrap();
    for i in 0..2000u32 {
        db.put(format!("k{i:05}"), format!("v{i}-{}", "z".repeat(30)))
            .unwrap();
    }
    db.compact().unwrap();
    db.put("in-wal", "1").unwrap();
    let report = db.verify().unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(
        report.tables > 0 && report.blocks > report.tables,
        "{report:?}"
    );
    assert!(report.wal_records >= 1, "{report:?}");
    // Read everything so every block is marked verified in memory: verify
    // must check the file again anyway.
    assert_eq!(all(&db).len(), 2001);

    let sst = files(&src)
        .into_keys()
        .find(|n| n.ends_with(".sst"))
        .unwrap();
    let path = src.join(&sst);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0x40;
    // Rewrite in place (same inode, as a disk error would).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&bytes)
        })
        .unwrap();
    let report = db.verify().unwrap();
    assert!(!report.ok(), "{report:?}");
    assert!(
        report.problems.iter().any(|p| p.contains(&sst)),
        "{report:?}"
    );
    db.close().unwrap();
}
