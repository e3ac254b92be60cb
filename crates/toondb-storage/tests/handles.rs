//! Handles on one directory share one engine however the path is spelled.
//!
//! `Database::open` documents that a second open of a directory this process
//! already has open returns a handle on the same engine (a second engine
//! would fail on the directory lock). Proves that this holds for relative,
//! `.`-containing and trailing-slash spellings, and (currently failing, see
//! `same_directory_via_dotdot_or_symlink_shares_the_engine`) for spellings
//! with `..` or through a symlink.

use std::path::{Path, PathBuf};

use toondb_storage::Database;

/// Opens `first`, then every path in `others`, and checks they all share one
/// engine: a write through any handle is visible through every other.
fn assert_shared(first: &Path, others: &[PathBuf]) {
    let a = Database::open(first).unwrap();
    let mut handles = Vec::new();
    for p in others {
        let h = Database::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
        handles.push(h);
    }
    for (i, h) in handles.iter().enumerate() {
        h.put(format!("k{i}"), "v").unwrap();
        assert_eq!(a.get(format!("k{i}")).unwrap().as_deref(), Some(&b"v"[..]));
    }
    for h in &handles {
        h.close().unwrap();
    }
    a.close().unwrap();
    // The engine shut down with the last handle: the directory reopens.
    Database::open(first).unwrap().close().unwrap();
}

#[test]
fn same_directory_spelled_differently_shares_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let mut slash = db.clone().into_os_string();
    slash.push("/");
    assert_shared(
        &db,
        &[
            PathBuf::from(slash),
            dir.path().join(".").join("db"),
            dir.path().join("db").join("."),
        ],
    );
}

/// Fails today: the registry of open engines (`db.rs`, `registry()` keyed
/// by `std::path::absolute(path)`) does not resolve `..` or symlinks, so the
/// second open starts a second engine, which fails with `Locked`.
#[test]
fn same_directory_via_dotdot_or_symlink_shares_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    std::fs::create_dir(&db).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&db, &link).unwrap();
    assert_shared(&db, &[dir.path().join("sub").join("..").join("db"), link]);
}

/// Table files mapped by this process under `dir` (Linux: /proc/self/maps).
#[cfg(target_os = "linux")]
fn mapped_tables(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()) && l.ends_with(".sst"))
        .count()
}

/// A closed database keeps no table file mapped, though its handle lives
/// on (a JS object may wait for a GC): mapped pages would also survive
/// `echo 3 > /proc/sys/vm/drop_caches`, so another process's "cold" reads
/// of the files would find them in memory.
#[cfg(target_os = "linux")]
#[test]
fn close_unmaps_every_table_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for i in 0..1000u32 {
        db.put(format!("k{i:05}"), [7u8; 100]).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let n = db.iter(Default::default()).unwrap().count();
    assert_eq!(n, 1000);
    assert!(mapped_tables(dir.path()) > 0);
    db.close().unwrap();
    assert_eq!(mapped_tables(dir.path()), 0);
    drop(db);
}
