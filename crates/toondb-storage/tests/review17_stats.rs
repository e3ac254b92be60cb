//! Review 17: `Stats::table_bytes_read` is documented as "bytes of table
//! data blocks read by gets and scans since open", but it is summed over
//! the tables live now, so a compaction makes it go backwards.

use toondb_storage::{Database, Options};

#[test]
fn table_bytes_read_since_open_never_goes_backwards() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), Options::default().auto_compaction(false)).unwrap();
    for i in 0..2000u32 {
        db.put(format!("key{i:05}"), vec![b'v'; 100]).unwrap();
    }
    db.flush().unwrap();
    for i in 0..2000u32 {
        assert!(db.get(format!("key{i:05}")).unwrap().is_some());
    }
    let before = db.stats().table_bytes_read;
    assert!(before > 0);
    db.compact().unwrap();
    let after = db.stats().table_bytes_read;
    assert!(
        after >= before,
        "table_bytes_read went from {before} to {after} across a compaction, with no read in between"
    );
}
