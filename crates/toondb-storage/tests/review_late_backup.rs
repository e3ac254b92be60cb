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
