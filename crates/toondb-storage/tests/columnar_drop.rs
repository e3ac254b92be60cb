//! `drop_table` interrupted after its catalog commit (the WAL fails every
//! write after it, as a crash would stop them): the table is gone at once,
//! and the next open deletes its cells (the dropped-tables list), so their
//! space is freed instead of leaking forever.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{
    ColumnDef, ColumnType, Database, Error, ErrorKind, Options, Result, Schema, Value,
};

/// WAL appends allowed before every later one fails (negative: no limit).
#[derive(Clone, Default)]
struct WalBudget(Arc<AtomicI64>);

impl WalBudget {
    fn take(&self) -> Result<()> {
        let left = self.0.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(Error::new(ErrorKind::Io, "injected: WAL write failed"));
        }
        self.0.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

struct BudgetedWal {
    inner: Box<dyn WritableFile>,
    budget: WalBudget,
}

impl WritableFile for BudgetedWal {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.budget.take()?;
        self.inner.append(data)
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.budget.take()?;
        self.inner.append_durable(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

impl WriteHook for WalBudget {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            Box::new(BudgetedWal {
                inner: file,
                budget: self.clone(),
            })
        } else {
            file
        }
    }
}

fn schema() -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("v", ColumnType::Bytes),
        ],
        "id",
    )
}

/// `n` pseudo-random bytes (xorshift seeded by `seed`).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn wait_idle(db: &Database) {
    while db.stats().maintenance_busy || db.stats().immutable_memtables > 0 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Bytes in table files once everything is flushed and compacted.
fn settled_bytes(db: &Database) -> u64 {
    db.flush().unwrap();
    db.compact().unwrap();
    wait_idle(db);
    db.stats().table_bytes
}

#[test]
fn a_drop_interrupted_after_its_catalog_commit_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let budget = WalBudget(Arc::new(AtomicI64::new(-1)));
    let options = Options::default().fs(Arc::new(WrappedFs::os(budget.clone())));
    let db = Database::open_with(dir.path(), options).unwrap();
    let t = db.create_table("blobs", schema()).unwrap();
    let rows: Vec<Vec<Value>> = (0..4000)
        // Distinct, incompressible values: column chunks would store 256
        // distinct ones as a dictionary, and this test needs the bytes.
        .map(|i| vec![Value::I64(i), Value::Bytes(noise(i as u64, 500))])
        .collect();
    for chunk in rows.chunks(500) {
        t.upsert(&db, chunk).unwrap();
    }
    db.put(b"kept", b"yes").unwrap();
    let full = settled_bytes(&db);
    assert!(full > 1_000_000, "{full}");

    // The catalog commit is the one WAL write allowed; the cell deletes
    // after it fail.
    budget.0.store(1, Ordering::SeqCst);
    let err = db.drop_table("blobs").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(db.table("blobs").unwrap_err().kind(), ErrorKind::NotFound);
    let _ = db.close();
    drop(db);

    // Reopened on a healthy file system: the drop is finished.
    let db = Database::open(dir.path()).unwrap();
    assert_eq!(db.table("blobs").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(db.get(b"kept").unwrap(), Some(b"yes".to_vec()));
    let after = settled_bytes(&db);
    assert!(
        after * 20 < full,
        "the dropped table's cells were not deleted: {after} of {full} bytes remain"
    );
    // A new table of the same name is empty (it gets a new id).
    let t = db.create_table("blobs", schema()).unwrap();
    assert!(t.get(&db, &Value::I64(1), None).unwrap().is_none());
    db.close().unwrap();
    drop(db);

    // The list is empty now: another open has nothing to do and keeps the
    // new table.
    let db = Database::open(dir.path()).unwrap();
    assert!(db.table("blobs").is_ok());
    assert!(settled_bytes(&db) * 20 < full);
    db.close().unwrap();
}
