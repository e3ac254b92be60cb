//! Scan readahead through the engine's file-system seam: a file system
//! whose mapped files record every `will_need` request shows that a bounded
//! scan asks for no more than the blocks it reads (never past its bounds),
//! and that point reads and short scans ask for nothing.

use std::ops::{Bound, Range};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use toondb_storage::io::{FileBytes, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Compression, Database, Options, ScanOptions, WriteBatch};

type Requests = Arc<Mutex<Vec<(PathBuf, Range<usize>)>>>;

/// The OS file system, with mapped files that record readahead requests
/// (and still pass them on).
struct RecordingFs {
    requests: Requests,
}

struct RecordingBytes {
    inner: Arc<dyn FileBytes>,
    path: PathBuf,
    requests: Requests,
}

impl FileBytes for RecordingBytes {
    fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }
    fn will_need(&self, range: Range<usize>) {
        self.requests
            .lock()
            .unwrap()
            .push((self.path.clone(), range.clone()));
        self.inner.will_need(range);
    }
}

impl WriteHook for RecordingFs {
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
    fn wrap_map(&self, path: &Path, bytes: Arc<dyn FileBytes>) -> Arc<dyn FileBytes> {
        Arc::new(RecordingBytes {
            inner: bytes,
            path: path.to_path_buf(),
            requests: self.requests.clone(),
        })
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:08}").into_bytes()
}

const KEYS: u32 = 40_000;

/// A database of 40K keys with 100-byte values, compacted into tables and
/// reopened (no background compaction), on the recording file system.
fn database(dir: &Path, compression: Compression) -> (Database, Requests) {
    let requests = Requests::default();
    let options = Options::default()
        .auto_compaction(false)
        .compression(compression)
        .fs(Arc::new(WrappedFs::os(RecordingFs {
            requests: requests.clone(),
        })));
    let db = Database::open_with(dir, options.clone()).unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut batch = WriteBatch::new();
        for &i in chunk {
            batch.put(key(i), vec![(i % 251) as u8; 100]).unwrap();
        }
        db.write(batch).unwrap();
    }
    db.flush().unwrap();
    db.compact().unwrap();
    db.close().unwrap();
    let db = Database::open_with(dir, options).unwrap();
    requests.lock().unwrap().clear();
    (db, requests)
}

fn asked(requests: &Requests) -> u64 {
    let r = requests.lock().unwrap();
    for (path, _) in r.iter() {
        assert!(path.to_string_lossy().ends_with(".sst"), "{path:?}");
    }
    r.iter().map(|(_, r)| r.len() as u64).sum()
}

/// Scans in batches of `batch` entries (each batch re-seeks the tables).
fn scan_all(db: &Database, options: ScanOptions, batch: usize) -> usize {
    let mut scan = db.scan(options).unwrap();
    let mut n = 0;
    loop {
        let batch = scan.next_batch(batch, usize::MAX).unwrap();
        if batch.is_empty() {
            return n;
        }
        n += batch.len();
    }
}

/// A bounded scan, either way: the readahead asks for most of the blocks
/// the scan reads and for nothing it does not read (so never past the
/// bounds): its requests add up to at most the scan's table bytes read.
/// (In one batch, since every batch re-seeks and loads its first block
/// again, which the engine counts again.)
#[test]
fn a_bounded_scan_reads_ahead_only_within_its_bounds() {
    for compression in [Compression::None, Compression::Lz4] {
        for reverse in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (db, requests) = database(dir.path(), compression);
            let read0 = db.stats().table_bytes_read;
            let options = ScanOptions::default()
                .lower(Bound::Included(key(10_000)))
                .upper(Bound::Excluded(key(30_000)))
                .reverse(reverse);
            assert_eq!(scan_all(&db, options, 1 << 20), 20_000);
            let read = db.stats().table_bytes_read - read0;
            let asked = asked(&requests);
            assert!(
                asked <= read,
                "{compression:?} reverse={reverse}: asked for {asked} bytes, read {read}"
            );
            assert!(
                asked * 10 >= read * 9,
                "{compression:?} reverse={reverse}: asked for {asked} of {read} bytes read"
            );
            db.close().unwrap();
        }
    }
}

/// In small batches (a re-seek each), the scan is still one sequential
/// run: most of its blocks are read ahead, and nothing past the bounds.
#[test]
fn a_scan_in_small_batches_is_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let (db, requests) = database(dir.path(), Compression::Lz4);
    let options = ScanOptions::default()
        .lower(Bound::Included(key(10_000)))
        .upper(Bound::Excluded(key(30_000)));
    assert_eq!(scan_all(&db, options.clone(), 1 << 20), 20_000);
    let whole = asked(&requests);
    requests.lock().unwrap().clear();
    assert_eq!(scan_all(&db, options, 100), 20_000);
    let batched = asked(&requests);
    assert!(batched <= whole, "batched {batched} > one batch {whole}");
    assert!(batched * 10 >= whole * 9, "batched {batched} of {whole}");
    db.close().unwrap();
}

#[test]
fn point_reads_and_short_scans_ask_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (db, requests) = database(dir.path(), Compression::Lz4);
    for i in (0..KEYS).step_by(101) {
        assert!(db.get(key(i)).unwrap().is_some());
    }
    let short = ScanOptions::default()
        .lower(Bound::Included(key(20_000)))
        .limit(10);
    assert_eq!(scan_all(&db, short, 128), 10);
    assert_eq!(asked(&requests), 0);
    // A whole scan does read ahead.
    assert_eq!(scan_all(&db, ScanOptions::default(), 128), KEYS as usize);
    assert!(asked(&requests) > 0);
    db.close().unwrap();
}
