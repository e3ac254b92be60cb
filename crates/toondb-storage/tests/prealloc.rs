//! Synced writes preallocate zero-filled WAL space. A crash image of such a
//! segment (records, then zeros) must replay every record with no dropped
//! tail, and a torn record just before the zeros must be dropped.

use std::fs;
use std::path::Path;

use toondb_storage::{Database, Options, WriteOptions};

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn newest_wal(dir: &Path) -> std::path::PathBuf {
    let mut wals: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    wals.sort();
    wals.pop().unwrap()
}

#[test]
fn zero_filled_tail_is_a_clean_end_and_torn_records_before_it_are_dropped() {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), Options::default()).unwrap();
    for i in 0..50u32 {
        db.write_with(
            {
                let mut b = toondb_storage::WriteBatch::new();
                b.put(format!("k{i:03}"), format!("v{i}")).unwrap();
                b
            },
            WriteOptions::sync(true),
        )
        .unwrap();
    }
    let wal = newest_wal(live.path());
    let logical = fs::read(&wal).unwrap();
    let data_end = logical.iter().rposition(|&b| b != 0).unwrap() + 1;
    assert!(
        logical.len() >= data_end + 512 * 1024,
        "synced writes should have preallocated zeroed space ({} bytes, data ends at {data_end})",
        logical.len()
    );

    // Crash image as is: records then zeros.
    let image = tempfile::tempdir().unwrap();
    copy_dir(live.path(), image.path());
    {
        let db2 = Database::open(image.path()).unwrap();
        assert_eq!(db2.stats().recovery.dropped_tail, None);
        for i in 0..50u32 {
            assert!(db2.get(format!("k{i:03}")).unwrap().is_some(), "k{i:03}");
        }
    }

    // Crash image with the last record half written, zeros after it.
    let torn = tempfile::tempdir().unwrap();
    copy_dir(live.path(), torn.path());
    let torn_wal = torn.path().join(wal.file_name().unwrap());
    let mut bytes = fs::read(&torn_wal).unwrap();
    for b in &mut bytes[data_end - 6..data_end] {
        *b = 0;
    }
    fs::write(&torn_wal, &bytes).unwrap();
    let db3 = Database::open(torn.path()).unwrap();
    assert!(db3.stats().recovery.dropped_tail.is_some());
    assert!(db3.get("k048").unwrap().is_some());
    assert!(
        db3.get("k049").unwrap().is_none(),
        "the torn last record is dropped"
    );
    db.close().unwrap();
}
