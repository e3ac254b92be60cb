//! The open's purge of interrupted drops (`purge_dropped_tables_at_open`)
//! when it fails without stopping the engine: the open stays best effort,
//! as documented (docs/columnar.md, `dropTable`). The failure that stops
//! the engine is in tests/open_purge_failure.rs (it needs a fault on the
//! manifest's fdatasync).

use crate::batch::WriteBatch;
use crate::{Database, ErrorKind};

use super::{tagged, DROPPED_TAG};

/// A dropped-tables entry whose id is not four bytes: the purge's scan
/// refuses it as corruption before writing anything.
fn bad_entry() -> Vec<u8> {
    let mut key = tagged(DROPPED_TAG);
    key.extend_from_slice(&[1, 2, 3]);
    key
}

#[test]
fn a_purge_failure_that_leaves_the_engine_running_does_not_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let mut batch = WriteBatch::new();
    batch.put_raw(bad_entry(), []).unwrap();
    batch.put("kept", "yes").unwrap();
    db.write(batch).unwrap();
    db.close().unwrap();
    drop(db);

    let db = Database::open(dir.path()).unwrap();
    // The purge did fail, and the engine kept running.
    let err = db.purge_dropped_tables().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(db.engine_ref().bg_error().is_none());
    assert_eq!(db.get("kept").unwrap().as_deref(), Some(&b"yes"[..]));
    db.put("after", "1").unwrap();
    // Left on the list for a later open.
    let reader = db.read_view().unwrap();
    assert!(reader.get(&bad_entry()).unwrap().is_some());
    drop(reader);
    db.close().unwrap();
    drop(db);

    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.get("after").unwrap().as_deref(), Some(&b"1"[..]));
    db.close().unwrap();
}
