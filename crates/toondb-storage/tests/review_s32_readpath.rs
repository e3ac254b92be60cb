//! review s32 (read path): entry prefetch in hash-index reads, the
//! resident-only read's one-lock `table_if_open`, the coarse clock behind
//! the residency window, and the WAL writer that is unusable while a file
//! call runs (a panic inside it).

use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toondb_storage::io::{FileBytes, ValueMap, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, Result};

fn value(tag: &str, len: usize) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v.truncate(len);
    v
}

/// A resident-only read: `Some(value or None)`, or `None` for would-block.
fn if_resident(db: &Database, key: &[u8]) -> Option<Option<Vec<u8>>> {
    db.get_ref_if_resident(key, |v| v.map(|v| v.bytes().to_vec()))
        .unwrap()
}

// ---------------------------------------------------------------------
// 1. get_in_place's prefetch: tiny tables, the last entry of a table,
// values around ENTRY_PREFETCH (192 bytes), read twice (the second read of
// a verified uncompressed block decodes in place).

#[test]
fn tiny_tables_and_last_entries_read_right_through_the_in_place_path() {
    for block_size in [64usize, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default()
            .auto_compaction(false)
            .block_size(block_size)
            .compression(toondb_storage::Compression::None);
        let db = Database::open_with(dir.path(), options).unwrap();
        let sizes = [
            0usize, 1, 15, 16, 63, 64, 100, 150, 175, 191, 192, 193, 255, 1000,
        ];
        // One table per value size, holding a single key (the table's only
        // and last entry).
        for (i, &n) in sizes.iter().enumerate() {
            db.put(format!("solo{i:02}"), value("s", n)).unwrap();
            db.flush().unwrap();
        }
        // One table whose last entries have those sizes.
        for i in 0..300u32 {
            db.put(format!("many{i:05}"), value("m", 20)).unwrap();
        }
        for (i, &n) in sizes.iter().enumerate() {
            db.put(format!("manz{i:02}"), value("z", n)).unwrap();
        }
        db.flush().unwrap();
        for round in 0..3 {
            for (i, &n) in sizes.iter().enumerate() {
                for (k, tag) in [(format!("solo{i:02}"), "s"), (format!("manz{i:02}"), "z")] {
                    let want = value(tag, n);
                    assert_eq!(
                        db.get(&k).unwrap().as_deref(),
                        Some(&want[..]),
                        "{k} block {block_size} round {round}"
                    );
                    if let Some(got) = if_resident(&db, k.as_bytes()) {
                        assert_eq!(got.as_deref(), Some(&want[..]), "{k} resident-only");
                    }
                }
                // Absent keys next to them (hash misses, collisions).
                assert_eq!(db.get(format!("solo{i:02}x")).unwrap(), None);
                assert_eq!(db.get(format!("manz{i:02}x")).unwrap(), None);
            }
            assert_eq!(db.get("many00299").unwrap(), Some(value("m", 20)));
        }
        db.close().unwrap();
    }
}

// ---------------------------------------------------------------------
// 3. Resident-only reads against a table cache of 2 that keeps closing
// tables: never a wrong or missing value; stats that add up.

const ROUNDS: usize = 8;
const KEYS: usize = 120;

/// `ROUNDS` L0 tables: key `k{i}` is rewritten in every round (newest in
/// the newest table), `o{r}-{i}` only in round `r` (older tables hold the
/// answer), and in the last round every third `k` key is deleted.
fn eight_tables(dir: &Path, max_open: usize) -> Database {
    let options = Options::default()
        .auto_compaction(false)
        .max_open_files(max_open);
    let db = Database::open_with(dir, options).unwrap();
    for r in 0..ROUNDS {
        for i in 0..KEYS {
            if r == ROUNDS - 1 && i % 3 == 0 {
                db.delete(format!("k{i:04}")).unwrap();
            } else {
                db.put(format!("k{i:04}"), format!("r{r}-k{i}")).unwrap();
            }
            db.put(format!("o{r}-{i:04}"), format!("only{r}-{i}"))
                .unwrap();
        }
        db.flush().unwrap();
    }
    db
}

fn expected(key: &str) -> Option<Vec<u8>> {
    if let Some(i) = key.strip_prefix('k') {
        let i: usize = i.parse().unwrap();
        if i.is_multiple_of(3) {
            return None;
        }
        return Some(format!("r{}-k{i}", ROUNDS - 1).into_bytes());
    }
    let (r, i) = key[1..].split_once('-').unwrap();
    let (r, i): (usize, usize) = (r.parse().unwrap(), i.parse().unwrap());
    Some(format!("only{r}-{i}").into_bytes())
}

fn key_of(n: usize) -> String {
    let i = n % KEYS;
    match (n / KEYS) % (ROUNDS + 1) {
        0 => format!("k{i:04}"),
        r => format!("o{}-{i:04}", r - 1),
    }
}

#[test]
fn resident_only_reads_with_tables_closing_underneath_never_answer_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(eight_tables(dir.path(), 2));
    let answered = Arc::new(AtomicUsize::new(0));
    let blocked = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // Two threads as `await db.get` does: resident-only, else a blocking
    // read (the libuv pool's).
    for t in 0..2usize {
        let (db, answered, blocked) = (db.clone(), answered.clone(), blocked.clone());
        threads.push(std::thread::spawn(move || {
            for n in 0..4000usize {
                let key = key_of(n * 7 + t * 13);
                match if_resident(&db, key.as_bytes()) {
                    Some(got) => {
                        assert_eq!(got, expected(&key), "resident-only read of {key}");
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        blocked.fetch_add(1, Ordering::Relaxed);
                        assert_eq!(db.get(&key).unwrap(), expected(&key), "fallback {key}");
                    }
                }
            }
        }));
    }
    // One thread of blocking reads all over, opening (and so closing)
    // tables meanwhile.
    {
        let (db, stop) = (db.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                let key = key_of(n * 31);
                assert_eq!(db.get(&key).unwrap(), expected(&key), "blocking {key}");
                n += 1;
            }
        }));
    }
    let churn = threads.pop().unwrap();
    for t in threads {
        t.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    eprintln!(
        "REVIEW resident-only answered {} would-block {}",
        answered.load(Ordering::Relaxed),
        blocked.load(Ordering::Relaxed)
    );
    assert!(answered.load(Ordering::Relaxed) > 0);
    assert!(blocked.load(Ordering::Relaxed) > 0);
    let s = db.stats();
    assert!(s.table_cache_hits > 0 && s.table_cache_misses > 0, "{s:?}");
}

/// A resident-only read that meets a closed table opens nothing and
/// counts nothing for it; the blocking read then counts one miss; after it
/// the resident-only read of the same key answers with hits only.
#[test]
fn resident_only_reads_count_table_cache_uses_sensibly() {
    let dir = tempfile::tempdir().unwrap();
    let db = eight_tables(dir.path(), 2);
    // Touch the two oldest round-only tables: after these the newest
    // tables (every `k` key's first candidate) are closed.
    assert_eq!(db.get("o0-0001").unwrap(), expected("o0-0001"));
    assert_eq!(db.get("o1-0001").unwrap(), expected("o1-0001"));
    let before = db.stats();
    let first = if_resident(&db, b"k0001");
    let after = db.stats();
    assert_eq!(first, None, "the newest table is closed: would-block");
    assert_eq!(
        (after.table_cache_hits, after.table_cache_misses),
        (before.table_cache_hits, before.table_cache_misses),
        "a would-block at a closed first candidate counts nothing"
    );
    assert_eq!(db.get("k0001").unwrap(), expected("k0001"));
    let opened = db.stats();
    assert_eq!(opened.table_cache_misses, after.table_cache_misses + 1);
    assert_eq!(opened.table_cache_hits, after.table_cache_hits);
    let again = if_resident(&db, b"k0001");
    let last = db.stats();
    assert_eq!(again, Some(expected("k0001")));
    assert_eq!(last.table_cache_misses, opened.table_cache_misses);
    assert_eq!(last.table_cache_hits, opened.table_cache_hits + 1);
    // The blocking read of a key whose only version is in the oldest table
    // goes through every newer candidate: a closed one is a miss each.
    let before = db.stats();
    assert_eq!(db.get("o0-0002").unwrap(), expected("o0-0002"));
    let after = db.stats();
    let uses = (after.table_cache_hits + after.table_cache_misses)
        - (before.table_cache_hits + before.table_cache_misses);
    assert!(uses >= 1 && uses <= ROUNDS as u64, "{uses} table uses");
    db.close().unwrap();
}

// ---------------------------------------------------------------------
// 4. The residency window on the coarse clock: a table found resident is
// trusted for RESIDENT_TRUST_MS (100 ms), then asked again.

/// Maps files through the OS, with a switch that makes every mapping say
/// its pages are not in memory (as after the kernel evicted them).
struct ColdSwitchFs {
    cold: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
}

struct Switchable {
    inner: Arc<dyn FileBytes>,
    cold: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
}

impl FileBytes for Switchable {
    fn bytes(&self) -> &[u8] {
        self.inner.bytes()
    }
    fn will_need(&self, range: Range<usize>) {
        self.inner.will_need(range)
    }
    fn advise_sequential(&self) {
        self.inner.advise_sequential()
    }
    fn is_resident(&self, range: Range<usize>) -> bool {
        self.asked.fetch_add(1, Ordering::Relaxed);
        !self.cold.load(Ordering::Relaxed) && self.inner.is_resident(range)
    }
    fn map_value(&self, range: Range<usize>) -> Option<ValueMap> {
        self.inner.map_value(range)
    }
}

impl WriteHook for ColdSwitchFs {
    fn wrap(&self, _path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        file
    }
    fn wrap_map(&self, _path: &Path, bytes: Arc<dyn FileBytes>) -> Arc<dyn FileBytes> {
        Arc::new(Switchable {
            inner: bytes,
            cold: self.cold.clone(),
            asked: self.asked.clone(),
        })
    }
}

#[test]
fn the_residency_window_ends_and_an_evicted_table_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let cold = Arc::new(AtomicBool::new(false));
    let asked = Arc::new(AtomicU64::new(0));
    let fs = WrappedFs::os(ColdSwitchFs {
        cold: cold.clone(),
        asked: asked.clone(),
    });
    let options = Options::default().auto_compaction(false).fs(Arc::new(fs));
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..2000u32 {
        db.put(format!("key{i:06}"), value("v", 100)).unwrap();
    }
    db.flush().unwrap();
    for attempt in 0..5 {
        // Warm: found resident (the whole-file check starts the window).
        cold.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            if_resident(&db, b"key000100"),
            Some(Some(value("v", 100))),
            "attempt {attempt}: warm"
        );
        // "Evicted"; past the window the read must ask and say would-block.
        cold.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(120));
        let asked_before = asked.load(Ordering::Relaxed);
        assert_eq!(
            if_resident(&db, b"key001500"),
            None,
            "attempt {attempt}: 120 ms after eviction the read still trusted the table"
        );
        assert!(asked.load(Ordering::Relaxed) > asked_before);
        // And it stays would-block (no window is started by a cold check).
        for _ in 0..20 {
            assert_eq!(if_resident(&db, b"key000007"), None);
        }
        // The blocking read answers.
        assert_eq!(db.get("key000007").unwrap(), Some(value("v", 100)));
    }
    db.close().unwrap();
}

// ---------------------------------------------------------------------
// 5. The WAL writer, unusable while a file call runs: a panic inside a WAL
// append leaves the writer unusable; the database reports it, closes
// without hanging, and reopens with every acknowledged write. A normal
// close still syncs and marks the segment.

/// Wraps WAL segments (`*.wal`) so that, while armed, an append writes
/// half its bytes and panics (or, with `durable`, an `append_durable`).
#[derive(Clone, Default)]
struct PanicHook {
    armed: Arc<AtomicBool>,
    panics: Arc<AtomicUsize>,
}

struct PanicFile {
    inner: Box<dyn WritableFile>,
    hook: PanicHook,
}

impl PanicFile {
    fn maybe_panic(&mut self, data: &[u8]) -> Result<()> {
        if self.hook.armed.swap(false, Ordering::SeqCst) {
            self.inner.append(&data[..data.len() / 2])?;
            self.hook.panics.fetch_add(1, Ordering::SeqCst);
            panic!("injected: a panic inside a WAL append after a short write");
        }
        Ok(())
    }
}

impl WritableFile for PanicFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        self.maybe_panic(data)?;
        self.inner.append(data)
    }
    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.maybe_panic(data)?;
        self.inner.append_durable(data)
    }
    fn sync_data(&mut self) -> Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> Result<()> {
        self.inner.preallocate(len)
    }
}

impl WriteHook for PanicHook {
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            Box::new(PanicFile {
                inner: file,
                hook: self.clone(),
            })
        } else {
            file
        }
    }
}

fn wal_panic_then_close(sync: bool) {
    let dir = tempfile::tempdir().unwrap();
    let hook = PanicHook::default();
    let options = Options::default()
        .auto_compaction(false)
        .sync(sync)
        .fs(Arc::new(WrappedFs::os(hook.clone())));
    let db = Database::open_with(dir.path(), options).unwrap();
    for i in 0..50u32 {
        db.put(format!("a{i:03}"), value("a", 300)).unwrap();
    }
    hook.armed.store(true, Ordering::SeqCst);
    let failed = db.put("panicked", value("p", 300));
    assert_eq!(
        hook.panics.load(Ordering::SeqCst),
        1,
        "the injected panic ran"
    );
    assert!(
        failed.is_err(),
        "a write whose WAL append panicked succeeded"
    );
    // Later writes fail (the writer is unusable), reads still answer.
    assert!(db.put("after", b"x").is_err());
    assert_eq!(db.get("a007").unwrap(), Some(value("a", 300)));
    // Close reports the failure, without hanging or panicking.
    let closed = db.close();
    eprintln!("REVIEW close after a WAL panic (sync {sync}): {closed:?}");
    assert!(
        closed.is_err(),
        "close after a panicked WAL append reported success"
    );
    drop(db);
    // Reopen without the hook: every acknowledged write is there.
    let db = Database::open_with(dir.path(), Options::default().auto_compaction(false))
        .expect("reopen after a panicked WAL append");
    for i in 0..50u32 {
        assert_eq!(db.get(format!("a{i:03}")).unwrap(), Some(value("a", 300)));
    }
    assert_eq!(db.get("after").unwrap(), None);
    eprintln!(
        "REVIEW the panicked write after reopen: {:?}",
        db.get("panicked").unwrap().map(|v| v.len())
    );
    // Writable again.
    db.put("later", b"y").unwrap();
    db.close().unwrap();
}

#[test]
fn a_panic_inside_a_wal_append_fails_the_write_and_close_and_loses_nothing_acknowledged() {
    wal_panic_then_close(false);
}

#[test]
fn a_panic_inside_a_durable_wal_append_fails_the_write_and_close_and_loses_nothing_acknowledged() {
    wal_panic_then_close(true);
}

/// A normal close marks the live segment: damage in it afterwards is
/// reported as corruption, not dropped as an unsynced torn tail.
#[test]
fn a_normal_close_still_marks_the_segment_synced() {
    for sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().auto_compaction(false).sync(sync);
        let db = Database::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..50u32 {
            db.put(format!("a{i:03}"), value("a", 300)).unwrap();
        }
        db.close().unwrap();
        let mut logs: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        logs.sort();
        let last = logs.pop().expect("a WAL segment");
        let mut bytes = std::fs::read(&last).unwrap();
        assert!(
            bytes.len() > 5000,
            "{} bytes in {}",
            bytes.len(),
            last.display()
        );
        // A byte in a record's value, well inside the records (a durable
        // writer's segment also holds preallocated zeros past its end).
        let at = 3000;
        bytes[at] ^= 0x20;
        std::fs::write(&last, &bytes).unwrap();
        match Database::open_with(dir.path(), options) {
            Err(e) => assert_eq!(
                e.kind(),
                toondb_storage::ErrorKind::Corruption,
                "sync {sync}: {e}"
            ),
            Ok(db) => {
                // Not refused: then nothing may be silently missing.
                let missing: Vec<u32> = (0..50u32)
                    .filter(|i| db.get(format!("a{i:03}")).unwrap().is_none())
                    .collect();
                panic!(
                    "sync {sync}: damage after a normal close was accepted; missing {missing:?}"
                );
            }
        }
    }
}

/// The same on the commit thread: writers on several threads (so requests
/// queue and the commit thread groups them), a panic inside one group's
/// WAL append. Every write that returned `Ok` is there after a reopen;
/// close reports the failure and does not hang.
#[test]
fn a_panic_inside_a_wal_append_on_the_commit_thread_loses_nothing_acknowledged() {
    for sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let hook = PanicHook::default();
        let options = Options::default()
            .auto_compaction(false)
            .sync(sync)
            .fs(Arc::new(WrappedFs::os(hook.clone())));
        let db = Arc::new(Database::open_with(dir.path(), options).unwrap());
        let go = Arc::new(std::sync::Barrier::new(5));
        let mut threads = Vec::new();
        for t in 0..4u32 {
            let (db, go) = (db.clone(), go.clone());
            threads.push(std::thread::spawn(move || {
                go.wait();
                let mut acked = Vec::new();
                for i in 0..300u32 {
                    let k = format!("t{t}-{i:04}");
                    if db.put(&k, value(&k, 200)).is_ok() {
                        acked.push(k);
                    }
                }
                acked
            }));
        }
        go.wait();
        std::thread::sleep(Duration::from_millis(5));
        hook.armed.store(true, Ordering::SeqCst);
        let acked: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let panicked = hook.panics.load(Ordering::SeqCst);
        let closed = db.close();
        eprintln!(
            "REVIEW sync {sync}: panics {panicked}, acked {}, close {closed:?}",
            acked.len()
        );
        if panicked == 1 {
            assert!(
                closed.is_err(),
                "close after a panicked WAL append reported success"
            );
        }
        drop(db);
        let db = Database::open_with(dir.path(), Options::default().auto_compaction(false))
            .expect("reopen after a panicked WAL append");
        let missing: Vec<&String> = acked
            .iter()
            .filter(|k| db.get(k).unwrap().as_deref() != Some(&value(k, 200)[..]))
            .collect();
        assert!(
            missing.is_empty(),
            "sync {sync}: acknowledged writes lost: {missing:?}"
        );
        db.close().unwrap();
    }
}
