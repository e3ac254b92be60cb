//! Where compaction puts a chunked table's columns (compaction/partition.rs
//! with `output_partition`), and what a column scan then reads: each large
//! column in table files of its own, small tables sharing files, and a
//! scan of some columns reading no block of a file holding only others.

use std::sync::Arc;

use crate::lsm::TableFile;
use crate::{ColumnDef, ColumnType, Database, Options, Schema, TableScanOptions, Value};

use super::output_partition;

/// No background flush or compaction racing the assertions; a small target
/// so a column spans several files.
fn options() -> Options {
    Options {
        auto_compaction: false,
        target_file_size: 128 << 10,
        ..Options::default()
    }
}

fn schema(columns: &[&str]) -> Schema {
    let mut defs = vec![ColumnDef::new("id", ColumnType::I64)];
    defs.extend(columns.iter().map(|c| ColumnDef::new(*c, ColumnType::F64)));
    Schema::new(defs, "id")
}

fn files(db: &Database) -> Vec<Arc<TableFile>> {
    db.engine_ref().state().levels.all().cloned().collect()
}

/// Loads `rows` rows of columns `a`, `b`, `c` (f64, equal width) and
/// compacts (which chunks the table first).
fn wide_table(dir: &std::path::Path, rows: i64) -> Database {
    let db = Database::open_with(dir, options()).unwrap();
    let t = db.create_table("wide", schema(&["a", "b", "c"])).unwrap();
    for start in (0..rows).step_by(10_000) {
        let batch: Vec<Vec<Value>> = (start..(start + 10_000).min(rows))
            .map(|i| {
                let v = (i * 7919 % 10_007) as f64;
                vec![
                    Value::I64(i),
                    Value::F64(v),
                    Value::F64(v + 1.0),
                    Value::F64(v + 2.0),
                ]
            })
            .collect();
        t.upsert(&db, &batch).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    db
}

fn scan_bytes(db: &Database, columns: &[&str]) -> u64 {
    let t = db.table("wide").unwrap();
    let before = db.stats().table_bytes_read;
    let mut scan = t
        .scan(
            db,
            TableScanOptions {
                columns: Some(columns.iter().map(|c| c.to_string()).collect()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut rows = 0;
    loop {
        let b = scan.next_batch(4096).unwrap();
        if b.is_empty() {
            break;
        }
        rows += b.len();
    }
    assert_eq!(rows, 60_000);
    db.stats().table_bytes_read - before
}

#[test]
fn each_large_column_gets_files_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = wide_table(dir.path(), 60_000);
    let t = db.table("wide").unwrap();
    let pk_part = super::chunk_prefix(t.id, 0);
    let first_col = super::chunk_prefix(t.id, 1);
    let mut per_column = std::collections::BTreeMap::<Vec<u8>, usize>::new();
    for f in files(&db) {
        let lo = output_partition(f.smallest());
        let hi = output_partition(f.largest());
        if hi.is_some() {
            assert!(lo.is_some(), "a file holds both chunks and keys below them");
        }
        if let (Some(lo), Some(hi)) = (lo, hi) {
            // The pk chunks (a few KB, over min_alone) have a file of their
            // own too: a column scan reads none of their index entries.
            assert!(lo == hi, "file {} holds chunks of two columns", f.number());
            *per_column.entry(hi.to_vec()).or_default() += 1;
        }
    }
    assert_eq!(
        per_column.remove(pk_part.as_slice()),
        Some(1),
        "{per_column:?}"
    );
    // Each 480 KB column spans several 128 KiB files, all its own.
    assert_eq!(per_column.len(), 3, "{per_column:?}");
    assert!(per_column.contains_key(first_col.as_slice()));
    assert!(per_column.values().all(|&n| n >= 3), "{per_column:?}");
}

#[test]
fn a_column_scan_reads_only_its_columns_files() {
    let dir = tempfile::tempdir().unwrap();
    let db = wide_table(dir.path(), 60_000);
    let t = db.table("wide").unwrap();
    let b = super::chunk_prefix(t.id, 2);
    let reads = |db: &Database| -> Vec<(Option<Vec<u8>>, u64)> {
        files(db)
            .iter()
            .map(|f| {
                let part = output_partition(f.largest()).map(<[u8]>::to_vec);
                (
                    part,
                    f.counters()
                        .data_block_reads
                        .load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .collect()
    };
    let before = reads(&db);
    let one = scan_bytes(&db, &["b"]);
    let after = reads(&db);
    for ((part, n0), (_, n1)) in before.iter().zip(&after) {
        if part.as_deref() == Some(b.as_slice()) {
            assert!(n1 > n0, "column b's files are read");
        } else {
            assert_eq!(n0, n1, "a file not holding column b was read ({part:?})");
        }
    }
    // So three columns of equal width read at least three times the bytes
    // of one: nothing is paid once per scan.
    let three = scan_bytes(&db, &["a", "b", "c"]);
    assert!(
        one > 0 && 3 * one <= three,
        "1 column {one} B, 3 columns {three} B"
    );
}

#[test]
fn small_tables_share_files() {
    let dir = tempfile::tempdir().unwrap();
    // The default target (16 MiB): a column boundary cuts a file only
    // once it holds 1 MiB (`target / 16`).
    let mut o = options();
    o.target_file_size = Options::default().target_file_size;
    let db = Database::open_with(dir.path(), o).unwrap();
    for n in 0..30 {
        let t = db
            .create_table(&format!("small{n}"), schema(&["a", "b", "c"]))
            .unwrap();
        let rows: Vec<Vec<Value>> = (0..50)
            .map(|i| {
                vec![
                    Value::I64(i),
                    Value::F64(1.0),
                    Value::F64(2.0),
                    Value::F64(3.0),
                ]
            })
            .collect();
        t.upsert(&db, &rows).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    let all = files(&db);
    let chunk_files = all
        .iter()
        .filter(|f| {
            output_partition(f.largest()).is_some() || output_partition(f.smallest()).is_some()
        })
        .count();
    // 120 column partitions, a few KB in all: one file (plus the catalog's
    // and the keys after the chunks), not one per column.
    assert_eq!(chunk_files, 1, "{} files", all.len());
    assert!(all.len() <= 3, "{} files", all.len());
    for n in 0..30 {
        let t = db.table(&format!("small{n}")).unwrap();
        let mut scan = t.scan(&db, TableScanOptions::default()).unwrap();
        assert_eq!(scan.next_batch(1000).unwrap().len(), 50);
    }
}
