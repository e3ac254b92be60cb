//! A columnar table drop left pending, as a crash after its catalog commit
//! leaves it (the dropped-tables list the next open purges), and the checks
//! around finishing it. Shared by the tests of that purge, which each used
//! to carry their own copy of the WAL fault and the setup.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toondb_storage::io::{WrappedFs, WritableFile, WriteHook};
use toondb_storage::{
    ColumnDef, ColumnType, Database, Error, ErrorKind, Options, Result, Schema, Value,
};

use super::OnAppend;

/// WAL appends allowed before every later one fails (negative: no limit).
/// Failing the WAL after the catalog commit stops a drop where a crash
/// would, without killing the process.
#[derive(Clone)]
pub struct WalBudget(pub Arc<AtomicI64>);

impl WalBudget {
    pub fn unlimited() -> Self {
        WalBudget(Arc::new(AtomicI64::new(-1)))
    }

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

impl WriteHook for WalBudget {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            let budget = self.clone();
            OnAppend::boxed(file, move |_, _| budget.take())
        } else {
            file
        }
    }
}

/// Opens `dir` with an unlimited [`WalBudget`], for
/// [`drop_interrupted_after_commit`] to limit later.
pub fn open_with_wal_budget(dir: &Path) -> (Database, WalBudget) {
    let budget = WalBudget::unlimited();
    let options = Options::default().fs(Arc::new(WrappedFs::os(budget.clone())));
    (Database::open_with(dir, options).unwrap(), budget)
}

/// Drops `table` letting only its catalog commit reach the WAL: the cell
/// deletes after it fail, so the drop fails with an I/O error and stays
/// pending for the next open to finish. Every later WAL write of `db`
/// fails too.
pub fn drop_interrupted_after_commit(db: &Database, budget: &WalBudget, table: &str) {
    budget.0.store(1, Ordering::SeqCst);
    let err = db.drop_table(table).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
}

/// The tables these tests drop and keep: an `I64` key `id` and a `Bytes`
/// column `v`.
pub fn schema() -> Schema {
    Schema::new(
        vec![
            ColumnDef::new("id", ColumnType::I64),
            ColumnDef::new("v", ColumnType::Bytes),
        ],
        "id",
    )
}

/// `n` pseudo-random bytes (xorshift seeded by `seed`): incompressible, so
/// cells a purge failed to delete show in `table_bytes` (column chunks
/// would store repeated values as a dictionary).
pub fn noise(seed: u64, n: usize) -> Vec<u8> {
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

/// Bytes in table files once everything is flushed and compacted.
pub fn settled_bytes(db: &Database) -> u64 {
    db.flush().unwrap();
    db.compact().unwrap();
    // Bounded, so a maintenance thread that never goes idle fails the test
    // instead of hanging it.
    for _ in 0..3000 {
        let s = db.stats();
        if !s.maintenance_busy && s.immutable_memtables == 0 {
            return db.stats().table_bytes;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("maintenance never went idle");
}

/// Opens `dir`, which must fail, and returns the error: a database
/// returned instead fails the test, with the outcome of its first write
/// (where the user would have learnt of the fault).
pub fn open_must_fail(dir: &Path, options: Options) -> Error {
    match Database::open_with(dir, options) {
        Ok(db) => {
            let first = db.put(b"x", b"1");
            let _ = db.close();
            panic!("the open returned a database; its first write: {first:?}");
        }
        Err(e) => e,
    }
}

/// `err` is an open's failure to finish an interrupted drop, caused by
/// the fault whose message is `cause`.
pub fn assert_purge_error(err: &Error, cause: &str) {
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("finishing an interrupted table drop at open") && msg.contains(cause),
        "{msg}"
    );
}

/// The drop of table `blobs` is finished, and everything else is there:
/// key `kept` and every row of table `kept` (`kept_rows`). Then the
/// database must take a write (key `after`), which a stopped engine
/// refuses.
pub fn check_intact(db: &Database, kept_rows: Vec<Vec<Value>>) {
    assert_eq!(db.table("blobs").unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(db.get(b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
    let kept = db.table("kept").unwrap();
    for row in kept_rows {
        let got = kept.get(db, &row[0], None).unwrap();
        let got = got.map(|cells| cells.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
        assert_eq!(got.as_ref(), Some(&row), "row {:?}", row[0]);
    }
    db.put(b"after", b"1").unwrap();
}
