//! `close()` waits for the automatic chunking thread: no thread of a closed
//! database outlives the call (its own test binary, so no other test's
//! chunker is running in this process).

use toondb_storage::{ColumnDef, ColumnType, Database, Result, Schema, Value};

fn chunker_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .is_ok_and(|name| name.trim() == "toondb-chunker")
                })
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[cfg(target_os = "linux")]
fn close_waits_for_the_automatic_chunker() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open(dir.path())?;
    let t = db.create_table(
        "m",
        Schema::new(
            vec![
                ColumnDef::new("id", ColumnType::I64),
                ColumnDef::new("v", ColumnType::F64),
            ],
            "id",
        ),
    )?;
    // Enough rows to start the chunker (it starts after 256K table rows).
    let n = 340_000i64;
    let mut started = false;
    for start in (0..n).step_by(20_000) {
        let rows: Vec<Vec<Value>> = (start..start + 20_000)
            .map(|i| vec![Value::I64(i), Value::F64(i as f64)])
            .collect();
        t.upsert(&db, &rows)?;
        started |= chunker_threads() > 0;
    }
    // Close while it runs (chunking a piece of 256K rows takes a while).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !started && std::time::Instant::now() < deadline {
        started = chunker_threads() > 0;
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(started, "the automatic chunker never started");
    db.close()?;
    assert_eq!(chunker_threads(), 0, "a chunker thread outlived close()");
    // The data is whole after a reopen whatever the chunker got to do.
    let db = Database::open(dir.path())?;
    let t = db.table("m")?;
    for i in [0, 1, 137_000, n - 1] {
        let row = t.get(&db, &Value::I64(i), None)?.expect("row");
        assert_eq!(row[1].1, Value::F64(i as f64));
    }
    Ok(())
}
