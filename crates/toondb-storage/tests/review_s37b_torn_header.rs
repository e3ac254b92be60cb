//! Review of 04cddf1: the torn-header rewrite (WalWriter::create on the
//! last segment) waits for the tables, so a failed open leaves the stub;
//! and a panic in the replay does not hide a failing table in the second
//! thread's share. Both pass at 04cddf1 (kept as coverage).

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::copy_dir;
use support::open_images::{contents, image_with, keep_tables, with_ext, FailThenPanic};
use toondb_storage::{Database, ErrorKind};

/// A stub segment after the last: a torn creation the replay rewrites.
/// A crash image of `tables` tables and one put only the WAL holds.
fn image(tables: usize) -> tempfile::TempDir {
    image_with(tables, |db| db.put("wal", "w").unwrap())
}

fn add_torn_stub(dir: &Path) -> PathBuf {
    let last = with_ext(dir, "wal").pop().unwrap();
    let n: u64 = last.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let stub = dir.join(format!("{:06}.wal", n + 1000));
    fs::write(&stub, [0u8; 5]).unwrap();
    stub
}

#[test]
fn a_failed_open_leaves_a_torn_last_header_as_it_was() {
    for tables in [3, 20] {
        let image = image(tables);
        let stub = add_torn_stub(image.path());
        {
            let copy = copy_dir(image.path());
            let db = Database::open_with(copy.path(), keep_tables()).unwrap();
            let dropped = db.stats().recovery.dropped_tail.clone();
            assert!(dropped.is_some(), "the stub is not a torn header");
            db.close().unwrap();
        }
        let gone = with_ext(image.path(), "sst")[tables - 1].clone();
        fs::remove_file(&gone).unwrap();
        let before = contents(image.path());
        let err = Database::open_with(image.path(), keep_tables()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        assert!(err.to_string().contains(&*gone.to_string_lossy()), "{err}");
        assert_eq!(
            before,
            contents(image.path()),
            "{tables} tables: files changed"
        );
        assert_eq!(fs::read(&stub).unwrap().len(), 5);
    }
}

#[test]
fn a_panic_in_the_replay_does_not_hide_a_table_failing_in_the_second_share() {
    let image = image(20);
    let listed = with_ext(image.path(), "sst");
    let wal = with_ext(image.path(), "wal").remove(0);
    let hook = FailThenPanic {
        fail: listed[17].clone(),
        panic: wal,
    };
    let outcome = hook.open(image.path());
    match outcome {
        Ok(Err(e)) => assert!(e.to_string().contains("injected map failure"), "{e}"),
        Ok(Ok(())) => panic!("opened over a failing table"),
        Err(_) => panic!("the replay's panic hid the failing table"),
    }
}
