//! Review of session 37's open (lsm/open_listed.rs): the tables a manifest
//! lists open beside the WAL replay.
//!
//! Before the change a damaged or missing table failed the open before the
//! WAL was touched, and before the directory listing was checked against
//! the manifest's checkpoint. These tests pin what the change's own docs
//! promise (tests/open_many_tables.rs: "a failed open changes no file";
//! open_listed.rs: "a damaged table is reported ahead of a damaged WAL"):
//!
//! - a failed open over a damaged table leaves a torn WAL tail as it was
//!   (replay cuts it; the change runs replay even when a table failed, on
//!   the opening thread after the tables when there are fewer than 8, and
//!   beside them otherwise);
//! - a missing table is reported ahead of a missing checkpoint segment;
//! - a table whose open fails is reported, not a panic in a file the old
//!   open never reached (a later table in another thread's share, or the
//!   WAL replayed after the tables on the opening thread).
//!
//! All pass at c9819e2 (before the change) and fail at 3752de6.

mod support;

use std::fs;

use support::copy_dir;
use support::open_images::{
    assert_same_files, contents, keep_tables, torn_image, with_ext, FailThenPanic,
};
use toondb_storage::{Database, ErrorKind};

fn failed_open_changes_no_file(tables: usize) {
    let image = torn_image(tables);
    // The torn tail is real: an undamaged copy's open cuts it.
    {
        let copy = copy_dir(image.path());
        let db = Database::open_with(copy.path(), keep_tables()).unwrap();
        assert!(db.stats().recovery.dropped_tail.is_some());
        db.close().unwrap();
    }
    let listed = with_ext(image.path(), "sst");
    assert_eq!(listed.len(), tables);
    let gone = listed[tables / 2].clone();
    fs::remove_file(&gone).unwrap();
    let before = contents(image.path());
    let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains(&*gone.to_string_lossy()), "{err}");
    let after = contents(image.path());
    assert_same_files(&before, &after, &format!("a failed open ({tables} tables)"));
}

#[test]
fn a_failed_open_over_a_missing_table_leaves_the_torn_wal_as_it_was_few_tables() {
    failed_open_changes_no_file(3);
}

#[test]
fn a_failed_open_over_a_missing_table_leaves_the_torn_wal_as_it_was_many_tables() {
    failed_open_changes_no_file(20);
}

#[test]
fn a_missing_table_is_reported_ahead_of_a_missing_checkpoint_segment() {
    let live = tempfile::tempdir().unwrap();
    let db = Database::open_with(live.path(), keep_tables()).unwrap();
    for t in 0..3u32 {
        for i in 0..20u32 {
            db.put(format!("key{t:03}-{i:03}"), "v").unwrap();
        }
        db.flush().unwrap();
    }
    db.put("wal", "w").unwrap();
    let image = copy_dir(live.path());
    db.close().unwrap();
    let gone = with_ext(image.path(), "sst")[1].clone();
    fs::remove_file(&gone).unwrap();
    // Every WAL segment gone too (so the checkpoint's).
    for wal in with_ext(image.path(), "wal") {
        fs::remove_file(wal).unwrap();
    }
    let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(
        err.to_string().contains(&*gone.to_string_lossy()),
        "the missing table is not the error reported: {err}"
    );
}

/// A crash image of `tables` tables and a WAL; then an open whose map of
/// `fail` fails and whose map of `panic` panics. The open used to stop at
/// the first failing table (tables opened one by one, before the WAL was
/// read); now it returns that error only if nothing it would never have
/// touched panics.
fn fail_then_panic(tables: usize, fail_at: usize, panic_at: Option<usize>) {
    let image = torn_image(tables);
    let listed = with_ext(image.path(), "sst");
    let wal = with_ext(image.path(), "wal").remove(0);
    let fail = listed[fail_at].clone();
    let panic = panic_at.map_or(wal, |i| listed[i].clone());
    let hook = FailThenPanic {
        fail: fail.clone(),
        panic,
    };
    let outcome = hook.open(image.path());
    match outcome {
        Ok(Err(e)) => assert!(e.to_string().contains("injected map failure"), "{e}"),
        Ok(Ok(())) => panic!("the open succeeded over a failing table"),
        Err(_) => panic!(
            "the open panicked ({tables} tables) instead of reporting the first listed \
             table's failure ({fail:?}), which comes first in manifest order"
        ),
    }
}

#[test]
fn a_failing_table_is_reported_not_a_panic_in_a_later_table() {
    fail_then_panic(20, 2, Some(15));
}

#[test]
fn a_failing_table_is_reported_not_a_panic_in_the_wal() {
    fail_then_panic(3, 1, None);
}
