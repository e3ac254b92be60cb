//! Zero-copy values (`Database::get_ref`) and reads that must not wait for
//! the device (`Database::get_ref_if_resident`).

use std::path::Path;
use std::sync::Mutex;

use toondb_storage::{live_value_maps, Compression, Database, Options, ValueRef};

/// `live_value_maps` counts the whole process: tests that map run one at a
/// time so each sees only its own maps.
static MAPS: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    MAPS.lock().unwrap_or_else(|e| e.into_inner())
}

fn value(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn opts() -> Options {
    Options::default()
        .auto_compaction(false)
        .zero_copy_threshold(4096)
}

/// The owned mapping a read returned, or a panic saying what it got.
fn mapped(db: &Database, key: &str) -> toondb_storage::ValueMap {
    db.get_ref(key, |v| match v {
        Some(ValueRef::Mapped(m)) => m,
        Some(ValueRef::Borrowed(_)) => panic!("{key}: borrowed, expected a mapping"),
        None => panic!("{key}: absent"),
    })
    .unwrap()
}

fn is_borrowed(db: &Database, key: &str) -> bool {
    db.get_ref(key, |v| matches!(v, Some(ValueRef::Borrowed(_))))
        .unwrap()
}

fn table_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sst"))
        .collect();
    v.sort();
    v
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn large_table_values_are_mapped_small_memtable_and_compressed_ones_borrowed() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts()).unwrap();
    db.put("big", value(1, 20_000)).unwrap();
    db.put("small", value(2, 100)).unwrap();
    // In the memtable: always borrowed.
    assert!(is_borrowed(&db, "big"));
    db.flush().unwrap();
    let before = live_value_maps();
    let m = mapped(&db, "big");
    assert_eq!(m.bytes(), value(1, 20_000).as_slice());
    assert_eq!(live_value_maps(), before + 1);
    assert!(is_borrowed(&db, "small"));
    drop(m);
    assert_eq!(live_value_maps(), before, "dropping the value unmaps it");
    db.close().unwrap();

    // A compressed table: the value is decompressed, so it is borrowed.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts().compression(Compression::Lz4)).unwrap();
    db.put("big", value(3, 20_000)).unwrap();
    db.flush().unwrap();
    assert!(is_borrowed(&db, "big"));
    assert_eq!(db.get("big").unwrap().unwrap(), value(3, 20_000));

    // usize::MAX: never mapped.
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts().zero_copy_threshold(usize::MAX)).unwrap();
    db.put("big", value(4, 20_000)).unwrap();
    db.flush().unwrap();
    assert!(is_borrowed(&db, "big"));
}

#[test]
fn writing_into_a_mapped_value_changes_no_read_and_not_the_file() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts()).unwrap();
    let original = value(7, 50_000);
    db.put("k", &original).unwrap();
    db.flush().unwrap();
    let mut m = mapped(&db, "k");
    let scribble = vec![0xA5u8; m.len()];
    // SAFETY: the mapping is private and writable for `len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(scribble.as_ptr(), m.as_mut_ptr(), m.len()) };
    assert_eq!(
        m.bytes(),
        scribble.as_slice(),
        "the write landed in the mapping"
    );
    // A copying read, another mapped read and a scan see the stored bytes.
    assert_eq!(db.get("k").unwrap().unwrap(), original);
    assert_eq!(mapped(&db, "k").bytes(), original.as_slice());
    let scanned: Vec<_> = db
        .iter(Default::default())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(scanned[0].1, original);
    // The file holds the original and not the scribble.
    let files = table_files(dir.path());
    assert_eq!(files.len(), 1);
    let on_disk = std::fs::read(&files[0]).unwrap();
    assert!(contains(&on_disk, &original));
    assert!(!contains(&on_disk, &scribble[..4096]));
    drop(m);
    db.close().unwrap();
    let db = Database::open_with(dir.path(), opts()).unwrap();
    assert_eq!(db.get("k").unwrap().unwrap(), original);
}

#[test]
fn a_mapped_value_outlives_the_table_compaction_deleted() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts().max_open_files(1)).unwrap();
    let original = value(9, 100_000);
    db.put("k", &original).unwrap();
    db.flush().unwrap();
    let old_files = table_files(dir.path());
    let base = live_value_maps();
    let held: Vec<_> = (0..10).map(|_| mapped(&db, "k")).collect();
    assert_eq!(live_value_maps(), base + 10);
    // Overwrite, flush, compact: the old table is dropped and unlinked.
    db.put("k", value(10, 100_000)).unwrap();
    db.put("other", b"x").unwrap();
    db.flush().unwrap();
    db.compact().unwrap();
    let now = table_files(dir.path());
    for f in &old_files {
        assert!(!now.contains(f), "{} still exists", f.display());
    }
    for m in &held {
        assert_eq!(m.bytes(), original.as_slice());
    }
    assert_eq!(db.get("k").unwrap().unwrap(), value(10, 100_000));
    db.close().unwrap();
    // Still readable with the database closed.
    assert_eq!(held[3].bytes(), original.as_slice());
    drop(held);
    assert_eq!(live_value_maps(), base);
}

/// Evicts `path`'s pages from the page cache (clean pages, not mapped by
/// anyone once the database is closed).
#[cfg(target_os = "linux")]
fn evict(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: a valid descriptor; advice only.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

#[cfg(target_os = "linux")]
#[test]
fn a_read_that_would_wait_for_the_device_says_so_and_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().auto_compaction(false);
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    let keys: Vec<String> = (0..4000).map(|i| format!("key{i:06}")).collect();
    for k in &keys {
        db.put(k, value(k.len() as u8, 1000)).unwrap();
    }
    db.flush().unwrap();
    db.put("in-memtable", b"m").unwrap();
    // Warm: everything was just written, so it is resident.
    let got = db
        .get_ref_if_resident(&keys[2000], |v| v.map(|v| v.bytes().to_vec()))
        .unwrap();
    assert_eq!(got, Some(Some(value(9, 1000))));
    db.close().unwrap();

    for f in table_files(dir.path()) {
        evict(&f);
    }
    let db = Database::open_with(dir.path(), options).unwrap();
    // The memtable (recovered from the WAL) answers without the device.
    let got = db
        .get_ref_if_resident("in-memtable", |v| v.map(|v| v.bytes().to_vec()))
        .unwrap();
    assert_eq!(got, Some(Some(b"m".to_vec())));
    let reads = db.stats().data_blocks_read;
    let cold = db.get_ref_if_resident(&keys[1234], |_| ()).unwrap();
    assert_eq!(cold, None, "a cold table block must report would-block");
    assert_eq!(db.stats().data_blocks_read, reads, "and read no data block");
    // The blocking read loads it; after that it is resident.
    assert_eq!(db.get(&keys[1234]).unwrap(), Some(value(9, 1000)));
    let warm = db
        .get_ref_if_resident(&keys[1234], |v| v.map(|v| v.bytes().to_vec()))
        .unwrap();
    assert_eq!(warm, Some(Some(value(9, 1000))));
}

/// Values handed out from one chunk never alias: a second read of the same
/// value gets a mapping of its own, and a write into one value leaves the
/// neighbours that share its pages as stored.
#[test]
fn mapped_values_never_alias_and_share_a_mapping_only_when_disjoint() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts().zero_copy_threshold(1000)).unwrap();
    // 3000-byte values: most 4 KiB pages hold parts of two values.
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:03}")).collect();
    for (i, k) in keys.iter().enumerate() {
        db.put(k, value(i as u8, 3000)).unwrap();
    }
    db.flush().unwrap();
    let base = live_value_maps();
    let mut all: Vec<_> = keys.iter().map(|k| mapped(&db, k)).collect();
    assert_eq!(
        live_value_maps(),
        base + 1,
        "distinct values share one mapping"
    );
    let mut again = mapped(&db, &keys[5]);
    assert_eq!(
        live_value_maps(),
        base + 2,
        "a second read of a value maps anew"
    );
    for m in all.iter_mut().chain(std::iter::once(&mut again)) {
        let len = m.len();
        // SAFETY: writable for `len` bytes, and no other ValueMap has them.
        unsafe { std::ptr::write_bytes(m.as_mut_ptr(), 0xEE, len) };
    }
    // Every mapping saw only its own write; the engine sees none.
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(all[i].bytes(), vec![0xEE; 3000].as_slice());
        assert_eq!(db.get(k).unwrap().unwrap(), value(i as u8, 3000));
    }
    let fresh = mapped(&db, &keys[7]);
    assert_eq!(
        fresh.bytes(),
        value(7, 3000).as_slice(),
        "a new read is unchanged"
    );
    drop((all, again, fresh));
    assert_eq!(
        live_value_maps(),
        base,
        "all mappings gone with their values"
    );
}

/// What the Node binding's chunk views (src/values.rs `chunk_view`) rely on:
/// `into_chunk` gives the mapping the value came out of and its offset; the
/// chunk keeps the mapping alive once the `ValueMap` is gone; values of one
/// chunk have the same id and disjoint ranges; a value read again while the
/// chunk lives (even when no `ValueMap` of it is left, only the chunk) comes
/// out of another chunk; and an id names one live mapping only.
#[test]
fn chunks_keep_their_mapping_and_never_hand_out_a_range_twice() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::open_with(dir.path(), opts()).unwrap();
    for i in 0..4u8 {
        db.put(format!("k{i}"), value(i, 20_000)).unwrap();
    }
    db.flush().unwrap();
    let base = live_value_maps();
    let (c0, off0) = mapped(&db, "k0").into_chunk();
    let (c1, off1) = mapped(&db, "k1").into_chunk();
    assert_eq!(live_value_maps(), base + 1);
    assert_eq!(c0.id(), c1.id(), "values of one table share the chunk");
    assert!(
        off0 + 20_000 <= off1 || off1 + 20_000 <= off0,
        "disjoint ranges"
    );
    assert!(off0 + 20_000 <= c0.len() && off1 + 20_000 <= c0.len());
    // SAFETY: the chunk is mapped for `len()` bytes while `c0` lives.
    let at = |c: &toondb_storage::MappedChunk, off: usize| unsafe {
        std::slice::from_raw_parts(c.as_mut_ptr().add(off), 20_000)
    };
    assert_eq!(at(&c0, off0), value(0, 20_000).as_slice());
    assert_eq!(at(&c1, off1), value(1, 20_000).as_slice());
    // Write into k0's range, as a JS view of it may.
    // SAFETY: k0's range was handed out once, to `c0`'s value.
    unsafe { std::ptr::write_bytes(c0.as_mut_ptr().add(off0), 0x77, 20_000) };
    drop(c1);
    // Only the chunk is left (no ValueMap): k0 again must not come out of
    // it, or the new read would see the write above.
    let (again, off_again) = mapped(&db, "k0").into_chunk();
    assert_ne!(again.id(), c0.id(), "a re-read comes out of a new chunk");
    assert_eq!(at(&again, off_again), value(0, 20_000).as_slice());
    assert_eq!(live_value_maps(), base + 2);
    // k2 comes out of the newest chunk (the table's current one).
    let (c2, _) = mapped(&db, "k2").into_chunk();
    assert_eq!(c2.id(), again.id());
    drop(c0);
    assert_eq!(
        live_value_maps(),
        base + 1,
        "the old chunk is unmapped with its last holder"
    );
    drop((again, c2));
    assert_eq!(live_value_maps(), base);
}
