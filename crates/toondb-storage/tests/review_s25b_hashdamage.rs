//! review s25b: a damaged `index.hash` block is an error for a point read,
//! never a wrong "absent".

use toondb_storage::{Database, Options};

fn write(dir: &std::path::Path, hash: bool) -> std::path::PathBuf {
    let options = Options::default()
        .bloom_bits_per_key(0)
        .hash_index(hash)
        .auto_compaction(false);
    let db = Database::open_with(dir, options).unwrap();
    for i in 0..500u32 {
        db.put(format!("key/{i:05}"), format!("value {i}")).unwrap();
    }
    db.flush().unwrap();
    db.close().unwrap();
    let mut ssts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert_eq!(ssts.len(), 1);
    ssts.pop().unwrap()
}

#[test]
fn damaged_hash_block_fails_point_reads() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let with = write(a.path(), true);
    let without = write(b.path(), false);
    let x = std::fs::read(&with).unwrap();
    let y = std::fs::read(&without).unwrap();
    let first_diff = x.iter().zip(&y).position(|(p, q)| p != q).unwrap();
    // Damage a bucket byte well inside the hash block (past any pad).
    let mut bytes = x.clone();
    let at = first_diff + 200;
    bytes[at] ^= 0x5a;
    std::fs::write(&with, &bytes).unwrap();
    let db = match Database::open_with(
        a.path(),
        Options::default()
            .bloom_bits_per_key(0)
            .auto_compaction(false),
    ) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("REVIEW refused at open: {e:?}");
            return;
        }
    };
    let mut wrong = Vec::new();
    for i in 0..500u32 {
        match db.get(format!("key/{i:05}")) {
            Ok(Some(v)) => assert_eq!(v, format!("value {i}").into_bytes()),
            Ok(None) => wrong.push(i),
            Err(e) => {
                if i == 0 {
                    eprintln!(
                        "REVIEW first error: {e:?} (hash block from {first_diff}, damaged {at})"
                    );
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "keys read as absent from a damaged hash index: {wrong:?}"
    );
}
