//! Review of 04cddf1 (session 37's open): a failed open changes no file.
//!
//! Before c57f988 the open built the levels (`Levels::build`, which refuses
//! a table at a level this build does not have, or overlapping tables in a
//! level above 0) right after opening the tables, before the WAL was read.
//! Since c57f988 it builds them after `open_listed_during` returned, that
//! is after the replay ran and, past `TablesOpening::wait`, cut the WAL's
//! torn tail: an open that fails there has already changed the WAL.
//!
//! Passes before c57f988 (6e9c6bc's order); fails at 04cddf1.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::copy_dir;
use toondb_storage::{Database, ErrorKind, Options};

fn keep_tables() -> Options {
    Options::default()
        .auto_compaction(false)
        .l0_slowdown_writes(10_000)
        .l0_stop_writes(10_000)
}

fn with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "LOCK")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// A crash image of `tables` flushed tables and a WAL whose last record is
/// cut in half (tests/review_s37_open.rs).
fn torn_image(tables: usize) -> tempfile::TempDir {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    for t in 0..tables {
        for i in 0..20u32 {
            db.put(format!("key{t:03}-{i:03}"), format!("v{t}-{i}"))
                .unwrap();
        }
        db.flush().unwrap();
    }
    for i in 0..50u32 {
        db.put(format!("wal{i:03}"), vec![b'w'; 200]).unwrap();
    }
    let segment = with_ext(live.path(), "wal").pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    db.put("torn", vec![b't'; 4000]).unwrap();
    let image = copy_dir(live.path());
    db.close().unwrap();
    let torn = image.path().join(segment.file_name().unwrap());
    fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len + 2000)
        .unwrap();
    image
}

fn varint(b: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = b[*pos];
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

/// Rewrites, in the manifest CURRENT names, the level of every table added
/// at level 0 to `level` (one byte, so frames keep their length), and
/// fixes the frames' CRCs. Returns how many fields were changed.
fn move_tables_to_level(dir: &Path, level: u8) -> usize {
    let current = fs::read_to_string(dir.join("CURRENT")).unwrap();
    let path = dir.join(current.trim_end());
    let mut m = fs::read(&path).unwrap();
    let mut pos = 16;
    let mut changed = 0;
    while pos + 8 <= m.len() {
        let len = u32::from_le_bytes(m[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > m.len() {
            break;
        }
        let start = pos + 8;
        let end = start + len;
        let mut p = start;
        while p < end {
            match varint(&m, &mut p) {
                1 => {
                    varint(&m, &mut p); // number
                    if m[p] == 0 {
                        m[p] = level;
                        changed += 1;
                    }
                    varint(&m, &mut p); // level
                    varint(&m, &mut p); // file_size
                    varint(&m, &mut p); // entries
                    let n = varint(&m, &mut p) as usize;
                    p += n;
                    let n = varint(&m, &mut p) as usize;
                    p += n;
                    varint(&m, &mut p);
                    varint(&m, &mut p);
                }
                2..=5 => {
                    varint(&m, &mut p);
                }
                t => panic!("unexpected manifest tag {t}"),
            }
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&m[pos + 4..end]);
        let crc = h.finalize();
        m[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
    fs::write(&path, &m).unwrap();
    changed
}

fn bad_level_open_changes_no_file(tables: usize) {
    let image = torn_image(tables);
    {
        let copy = copy_dir(image.path());
        let db = Database::open_with(copy.path(), keep_tables()).unwrap();
        assert!(db.stats().recovery.dropped_tail.is_some());
        db.close().unwrap();
    }
    assert!(move_tables_to_level(image.path(), 9) >= tables);
    let before = contents(image.path());
    let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains("at level 9"), "{err}");
    let after = contents(image.path());
    let changed: Vec<_> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| (b.0.clone(), b.1.len(), a.1.len()))
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "a failed open added or removed files"
    );
    assert!(
        changed.is_empty(),
        "an open that failed building the levels ({tables} tables) changed files \
         (name, len before, len after): {changed:?}"
    );
}

#[test]
fn an_open_failing_on_the_levels_leaves_the_torn_wal_as_it_was_few_tables() {
    bad_level_open_changes_no_file(3);
}

#[test]
fn an_open_failing_on_the_levels_leaves_the_torn_wal_as_it_was_many_tables() {
    bad_level_open_changes_no_file(20);
}

/// Before c57f988 the levels were built before the checkpoint segment was
/// looked for: a table at a level this build lacks was the error reported.
/// Now the replay's checkpoint check runs first and its error wins.
#[test]
fn a_bad_table_level_is_reported_ahead_of_a_missing_checkpoint_segment() {
    for tables in [3, 20] {
        let image = torn_image(tables);
        assert!(move_tables_to_level(image.path(), 9) >= tables);
        for wal in with_ext(image.path(), "wal") {
            fs::remove_file(wal).unwrap();
        }
        let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        assert!(
            err.to_string().contains("at level 9"),
            "{tables} tables: the table's level is not the error reported: {err}"
        );
    }
}
