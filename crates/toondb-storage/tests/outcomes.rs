//! Outcomes are reported exactly as they happened: each handle's own
//! durability option governs its writes, a commit whose result is returned
//! does not also report through its callback, an acknowledged manifest edit
//! that was damaged later is not silently rolled back, and a new database
//! directory is durable in its parent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, Result};

#[test]
fn a_second_handles_sync_option_governs_its_own_writes() {
    let dir = tempfile::tempdir().unwrap();
    let relaxed = Database::open(dir.path()).unwrap();
    let durable = Database::open_with(dir.path(), Options::default().sync(true)).unwrap();
    let before = durable.stats().wal_syncs;
    durable.put("d", "1").unwrap();
    let after = durable.stats().wal_syncs;
    assert!(after > before, "a sync handle's put was not synced");
    relaxed.put("r", "1").unwrap();
    assert_eq!(relaxed.stats().wal_syncs, after, "a relaxed handle synced");
    // Transactions follow their handle's option too.
    let txn = durable.transaction().unwrap();
    txn.put("t", "1").unwrap();
    txn.commit().unwrap();
    assert!(
        durable.stats().wal_syncs > after,
        "a sync handle's commit was not synced"
    );
    relaxed.close().unwrap();
    durable.close().unwrap();
}

#[test]
fn commit_inline_or_does_not_call_done_when_it_returns_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move |_: Result<u64>| {
            calls.fetch_add(1, Ordering::SeqCst);
        }
    };
    // An idle engine and no fsync: committed right here.
    let txn = db.transaction().unwrap();
    txn.put("a", "1").unwrap();
    let result = txn.commit_inline_or(counted(&calls));
    assert!(matches!(result, Some(Ok(_))), "{result:?}");
    // Read-only: nothing to commit.
    let txn = db.transaction().unwrap();
    assert!(txn.get("a").unwrap().is_some());
    assert!(txn.commit_inline_or(counted(&calls)).is_some());
    // Already finished: the error is returned.
    let txn = db.transaction().unwrap();
    txn.rollback().unwrap();
    assert!(matches!(
        txn.commit_inline_or(counted(&calls)),
        Some(Err(_))
    ));
    db.close().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0, "done was called as well");
}

/// The last manifest record of a database that flushed is the flush's edit.
/// If it is damaged after it was acknowledged (the WAL segments it made
/// obsolete are gone), treating it as a torn append would silently drop
/// every write of that flush: the open must report corruption instead.
#[test]
fn damaged_last_edit_of_a_completed_flush_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path()).unwrap();
    for i in 0..100 {
        db.put(format!("k{i:03}"), "v").unwrap();
    }
    db.flush().unwrap();
    db.close().unwrap();
    let manifest = only_manifest(dir.path());
    let mut bytes = std::fs::read(&manifest).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&manifest, &bytes).unwrap();
    let err = Database::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.message().contains("checkpoint"), "{err}");
}

/// A database that was opened and closed without a flush reopens after any
/// number of opens (the checkpoint always names an existing segment).
#[test]
fn checkpoint_names_an_existing_segment_across_reopens() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let db = Database::open(dir.path()).unwrap();
        db.put(format!("r{round}"), "v").unwrap();
        if round == 2 {
            db.flush().unwrap();
        }
        db.close().unwrap();
    }
    let db = Database::open(dir.path()).unwrap();
    for round in 0..4 {
        assert!(db.get(format!("r{round}")).unwrap().is_some());
    }
    db.close().unwrap();
}

fn only_manifest(dir: &Path) -> PathBuf {
    let current = std::fs::read_to_string(dir.join("CURRENT")).unwrap();
    dir.join(current.trim_end())
}

struct RecordDirSyncs(Arc<Mutex<Vec<PathBuf>>>);

impl WriteHook for RecordDirSyncs {
    fn wrap(&self, _: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }

    fn before_sync_dir(&self, dir: &Path) -> Result<()> {
        self.0.lock().unwrap().push(dir.to_path_buf());
        Ok(())
    }
}

#[test]
fn creating_a_database_directory_syncs_its_parents() {
    let root = tempfile::tempdir().unwrap();
    let root_path = root.path().canonicalize().unwrap();
    let synced = Arc::new(Mutex::new(Vec::new()));
    let fs = Arc::new(WrappedFs::os(RecordDirSyncs(synced.clone())));
    let path = root_path.join("a").join("b").join("db");
    let db = Database::open_with(&path, Options::default().fs(fs)).unwrap();
    db.close().unwrap();
    let synced = synced.lock().unwrap().clone();
    for parent in [
        root_path.clone(),
        root_path.join("a"),
        root_path.join("a/b"),
    ] {
        assert!(
            synced.contains(&parent),
            "{} was not synced after creating a directory in it: {synced:?}",
            parent.display()
        );
    }
}
