//! review s25b: an open's garbage (stray table, stale manifests, replayed
//! segments) deleted by the maintenance thread never takes a live file,
//! across quick reopens of the same directory in one process.

use toondb_storage::{Database, Options};

#[test]
fn quick_reopens_with_strays_keep_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options::default().auto_compaction(false);
    let mut n = 0u32;
    for round in 0..12u32 {
        let db = Database::open_with(dir.path(), opts()).unwrap();
        for i in 0..n {
            assert_eq!(
                db.get(format!("k{i:05}")).unwrap(),
                Some(format!("v{i}").into_bytes()),
                "round {round} key {i}"
            );
        }
        for _ in 0..50 {
            db.put(format!("k{n:05}"), format!("v{n}")).unwrap();
            n += 1;
        }
        if round % 2 == 0 {
            db.flush().unwrap();
        }
        // A stray table with a number above everything (a crashed job's).
        let sst = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.extension().is_some_and(|e| e == "sst")
                    && p.file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<u32>().ok())
                        .is_some_and(|n| n < 900)
            });
        db.close().unwrap();
        if let Some(sst) = sst {
            std::fs::copy(
                &sst,
                dir.path().join(format!("{:06}.sst", 900 + round * 10)),
            )
            .unwrap();
        }
    }
    let db = Database::open_with(dir.path(), opts()).unwrap();
    for i in 0..n {
        assert_eq!(
            db.get(format!("k{i:05}")).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
    }
    db.close().unwrap();
}
