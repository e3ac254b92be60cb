//! `Stats::memtable_index_bytes`: the point indexes of the active memtable
//! and of the sealed ones waiting for their flush, 8 bytes a slot, one slot
//! per 64 bytes of `memtable_size` (rounded up to a power of two).

use toondb_storage::{Database, Options};

const MEMTABLE: usize = 1 << 20;
const ONE_INDEX: u64 = (MEMTABLE / 64 * 8) as u64;

#[test]
fn memtable_index_bytes_count_every_memtable() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().memtable_size(MEMTABLE);
    let db = Database::open_with(dir.path(), options.clone()).unwrap();
    assert_eq!(db.stats().memtable_index_bytes, ONE_INDEX);
    // Several rotations; every sample is one state, so its sealed
    // memtables and its index bytes agree.
    for i in 0..40_000u32 {
        db.put(format!("key{i:06}"), vec![b'v'; 100]).unwrap();
        if i % 500 == 0 {
            let s = db.stats();
            assert_eq!(
                s.memtable_index_bytes,
                ONE_INDEX * (1 + s.immutable_memtables),
                "{s:?}"
            );
        }
    }
    db.flush().unwrap();
    assert_eq!(db.stats().memtable_index_bytes, ONE_INDEX);
    db.close().unwrap();
    // After a reopen the first memtable is sized by the options too.
    let db = Database::open_with(dir.path(), options.memtable_size(4 * MEMTABLE)).unwrap();
    assert_eq!(db.stats().memtable_index_bytes, 4 * ONE_INDEX);
    db.close().unwrap();
}
