//! Review s23: the one-call reads toondb_get_buf / snapshot / txn and
//! toondb_get_many, through the C ABI from Rust.
#![allow(clippy::undocumented_unsafe_blocks)]

use std::ffi::CString;
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use toondb::*;

struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new() -> TempDir {
        use std::sync::atomic::AtomicU64;
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "review-s23-ffi-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        TempDir(p)
    }
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Db(*mut ToondbDb);
unsafe impl Send for Db {}
unsafe impl Sync for Db {}

fn open(dir: &std::path::Path) -> Db {
    let path = CString::new(dir.to_str().unwrap()).unwrap();
    let mut db = null_mut();
    let rc = unsafe { toondb_open(path.as_ptr(), null(), &mut db, null_mut()) };
    assert_eq!(rc, TOONDB_OK);
    Db(db)
}

fn put(db: &Db, k: &[u8], v: &[u8]) {
    let rc = unsafe {
        toondb_put(
            db.0,
            k.as_ptr(),
            k.len(),
            v.as_ptr(),
            v.len(),
            0,
            null_mut(),
        )
    };
    assert_eq!(rc, TOONDB_OK);
}

fn code_of(err: *mut ToondbError) -> i32 {
    assert!(!err.is_null());
    let c = unsafe { toondb_error_code(err) };
    unsafe { toondb_error_free(err) };
    c
}

#[test]
fn get_buf_lengths_and_errors() {
    let dir = TempDir::new();
    let db = open(dir.path());
    put(&db, b"k", b"hello world");
    put(&db, b"e", b"");
    let mut buf = [0xaau8; 32];
    let mut err = null_mut();
    // Too small: the length, nothing copied.
    let n = unsafe { toondb_get_buf(db.0, b"k".as_ptr(), 1, buf.as_mut_ptr(), 5, &mut err) };
    assert_eq!(n, 11);
    assert!(err.is_null());
    assert!(buf.iter().all(|&b| b == 0xaa));
    // Exact fit.
    let n = unsafe { toondb_get_buf(db.0, b"k".as_ptr(), 1, buf.as_mut_ptr(), 11, &mut err) };
    assert_eq!(n, 11);
    assert_eq!(&buf[..11], b"hello world");
    assert_eq!(buf[11], 0xaa);
    // Empty value vs absent, NULL buffer with cap 0.
    let n = unsafe { toondb_get_buf(db.0, b"e".as_ptr(), 1, null_mut(), 0, &mut err) };
    assert_eq!(n, 0);
    let n = unsafe { toondb_get_buf(db.0, b"zz".as_ptr(), 2, null_mut(), 0, &mut err) };
    assert_eq!(n, TOONDB_ABSENT);
    assert!(err.is_null());
    // Reserved key: an error, below -1, not ABSENT.
    let n = unsafe { toondb_get_buf(db.0, b"\xff\x00\x01C".as_ptr(), 4, null_mut(), 0, &mut err) };
    assert_eq!(n, -1 - i64::from(TOONDB_INVALID_ARGUMENT));
    assert_eq!(code_of(err), TOONDB_INVALID_ARGUMENT);
    // Snapshot reads the old value after an overwrite.
    let mut snap = null_mut();
    assert_eq!(
        unsafe { toondb_snapshot(db.0, &mut snap, null_mut()) },
        TOONDB_OK
    );
    put(&db, b"k", b"new");
    let mut err = null_mut();
    let n =
        unsafe { toondb_snapshot_get_buf(snap, b"k".as_ptr(), 1, buf.as_mut_ptr(), 32, &mut err) };
    assert_eq!(n, 11);
    assert_eq!(&buf[..11], b"hello world");
    unsafe { toondb_snapshot_free(snap) };
    // Closed: an error.
    assert_eq!(unsafe { toondb_close(db.0, null_mut()) }, TOONDB_OK);
    let mut err = null_mut();
    let n = unsafe { toondb_get_buf(db.0, b"k".as_ptr(), 1, buf.as_mut_ptr(), 32, &mut err) };
    assert_eq!(n, -1 - i64::from(TOONDB_CLOSED));
    assert_eq!(code_of(err), TOONDB_CLOSED);
    unsafe { toondb_db_free(db.0) };
}

fn get_many(db: &Db, keys: &[&[u8]], buf: &mut [u8], cap: usize) -> (i32, Vec<i64>, usize) {
    let joined: Vec<u8> = keys.concat();
    let lens: Vec<u32> = keys.iter().map(|k| k.len() as u32).collect();
    let mut vl = vec![-7i64; keys.len()];
    let mut needed = usize::MAX;
    let mut err = null_mut();
    let rc = unsafe {
        toondb_get_many(
            db.0,
            joined.as_ptr(),
            lens.as_ptr(),
            keys.len(),
            buf.as_mut_ptr(),
            cap,
            vl.as_mut_ptr(),
            &mut needed,
            &mut err,
        )
    };
    if !err.is_null() {
        unsafe { toondb_error_free(err) };
    }
    (rc, vl, needed)
}

#[test]
fn get_many_lengths_and_packing() {
    let dir = TempDir::new();
    let db = open(dir.path());
    put(&db, b"a", b"AAAA");
    put(&db, b"b", b"");
    put(&db, b"c", b"CCCCCCCC");
    let keys: [&[u8]; 4] = [b"a", b"missing", b"b", b"c"];
    let mut buf = vec![0u8; 64];
    let (rc, vl, needed) = get_many(&db, &keys, &mut buf, 64);
    assert_eq!(rc, TOONDB_OK);
    assert_eq!(vl, vec![4, -1, 0, 8]);
    assert_eq!(needed, 12);
    assert_eq!(&buf[..12], b"AAAACCCCCCCC");
    // A reserved key fails the whole call.
    let bad: [&[u8]; 2] = [b"a", b"\xff\x00\x01C"];
    let (rc, _, _) = get_many(&db, &bad, &mut buf, 64);
    assert_eq!(rc, TOONDB_INVALID_ARGUMENT);
    unsafe { toondb_db_free(db.0) };
}

/// The header: when `*needed > cap` the buffer's contents are unspecified
/// and a retry with `*needed` bytes gets every value. (It used to promise
/// "nothing was copied", which the one-pass copy did not keep.)
#[test]
fn get_many_too_small_reports_the_total_and_a_retry_gets_everything() {
    let dir = TempDir::new();
    let db = open(dir.path());
    put(&db, b"a", b"AAAA");
    put(&db, b"c", b"CCCCCCCC");
    let keys: [&[u8]; 2] = [b"a", b"c"];
    let mut buf = vec![0x55u8; 8];
    let (rc, vl, needed) = get_many(&db, &keys, &mut buf, 8);
    assert_eq!(rc, TOONDB_OK);
    assert_eq!(vl, vec![4, 8]);
    assert_eq!(needed, 12);
    let mut buf = vec![0x55u8; needed];
    let (rc, vl, again) = get_many(&db, &keys, &mut buf, needed);
    assert_eq!((rc, again), (TOONDB_OK, 12));
    assert_eq!(vl, vec![4, 8]);
    assert_eq!(buf, b"AAAACCCCCCCC".to_vec());
    unsafe { toondb_db_free(db.0) };
}

/// Every key rewritten together per round: one get_many sees one round.
#[test]
fn get_many_reads_one_snapshot() {
    let dir = TempDir::new();
    let db = Arc::new(open(dir.path()));
    let keys: Vec<Vec<u8>> = (0..50).map(|i| format!("k{i:03}").into_bytes()).collect();
    let wkeys = keys.clone();
    let write_round = move |db: &Db, r: u64| {
        let batch = toondb_batch_new();
        for k in &wkeys {
            let v = r.to_be_bytes();
            let rc = unsafe {
                toondb_batch_put(batch, k.as_ptr(), k.len(), v.as_ptr(), v.len(), null_mut())
            };
            assert_eq!(rc, TOONDB_OK);
        }
        assert_eq!(
            unsafe { toondb_write(db.0, batch, 0, null_mut()) },
            TOONDB_OK
        );
        unsafe { toondb_batch_free(batch) };
    };
    write_round(&db, 0);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop, write_round) = (db.clone(), stop.clone(), write_round.clone());
        std::thread::spawn(move || {
            let mut r = 1;
            while !stop.load(Ordering::Relaxed) {
                write_round(&db, r);
                r += 1;
            }
        })
    };
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let mut buf = vec![0u8; 8 * keys.len()];
    for _ in 0..300 {
        let cap = buf.len();
        let (rc, vl, needed) = get_many(&db, &refs, &mut buf, cap);
        assert_eq!(rc, TOONDB_OK);
        assert!(vl.iter().all(|&l| l == 8));
        assert_eq!(needed, cap);
        let first = &buf[..8];
        assert!(
            buf.chunks(8).all(|c| c == first),
            "values from different rounds"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    unsafe { toondb_db_free(db.0) };
}
