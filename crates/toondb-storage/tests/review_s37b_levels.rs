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
use std::path::Path;

use support::copy_dir;
use support::open_images::{assert_same_files, contents, keep_tables, torn_image, with_ext};
use toondb_storage::{Database, ErrorKind};

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
    assert_same_files(
        &before,
        &after,
        &format!("an open that failed building the levels ({tables} tables)"),
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
