//! The simulated disk's own rules: what survives a power cut, a kill, and
//! what a torn write looks like.

use std::path::{Path, PathBuf};

use super::*;
use crate::error::ErrorKind;
use crate::io::FileSystem;

fn setup() -> (PowerLossFs, PathBuf) {
    let fs = PowerLossFs::new();
    let dir = PathBuf::from("/db");
    fs.create_dir_all(&dir).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    (fs, dir)
}

fn cut(fs: &PowerLossFs, cut: PowerCut) {
    fs.power_cut(cut);
    fs.restart();
}

fn read(fs: &PowerLossFs, path: &Path) -> Option<Vec<u8>> {
    fs.exists(path).then(|| fs.read(path).unwrap())
}

#[test]
fn synced_bytes_survive_and_unsynced_bytes_do_not() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"durable").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    f.append(b" lost").unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"durable lost");
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"durable");
}

#[test]
fn keep_unsynced_keeps_everything_the_os_had() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"all of it").unwrap();
    cut(&fs, PowerCut::keep_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"all of it");
}

#[test]
fn a_synced_file_whose_entry_was_not_synced_disappears() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"data").unwrap();
    f.sync_data().unwrap();
    cut(&fs, PowerCut::drop_unsynced());
    assert!(!fs.exists(&path));
    assert!(fs.list(&dir).unwrap().is_empty());
}

#[test]
fn a_synced_entry_whose_data_was_not_synced_is_empty() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"data").unwrap();
    fs.sync_dir(&dir).unwrap();
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"");
}

#[test]
fn an_unsynced_rename_reverts_and_a_synced_one_stays() {
    let (fs, dir) = setup();
    let (a, b) = (dir.join("CURRENT.tmp"), dir.join("CURRENT"));
    for (name, content) in [(&b, &b"old"[..]), (&a, &b"new"[..])] {
        let mut f = fs.create(name).unwrap();
        f.append(content).unwrap();
        f.sync_data().unwrap();
    }
    fs.sync_dir(&dir).unwrap();
    fs.rename(&a, &b).unwrap();
    assert_eq!(read(&fs, &b).unwrap(), b"new");
    assert!(!fs.exists(&a));
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &b).unwrap(), b"old");
    assert_eq!(read(&fs, &a).unwrap(), b"new");

    fs.rename(&a, &b).unwrap();
    fs.sync_dir(&dir).unwrap();
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &b).unwrap(), b"new");
    assert!(!fs.exists(&a));
}

#[test]
fn an_unsynced_remove_reappears_and_a_synced_one_does_not() {
    let (fs, dir) = setup();
    let path = dir.join("old.wal");
    let mut f = fs.create(&path).unwrap();
    f.append(b"segment").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    drop(f);
    fs.remove(&path).unwrap();
    assert!(!fs.exists(&path));
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"segment");

    fs.remove(&path).unwrap();
    fs.sync_dir(&dir).unwrap();
    cut(&fs, PowerCut::keep_unsynced());
    assert!(!fs.exists(&path));
}

#[test]
fn an_unsynced_new_directory_disappears_with_everything_in_it() {
    let fs = PowerLossFs::new();
    let dir = PathBuf::from("/parent/db");
    fs.create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"x").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap(); // the file's entry, but not "db" in "parent"
    cut(&fs, PowerCut::drop_unsynced());
    assert!(fs.exists(Path::new("/")));
    assert!(!fs.exists(&dir));
    assert!(!fs.exists(Path::new("/parent")));
}

#[test]
fn recreating_a_file_truncates_it_only_until_synced() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"first").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    let _g = fs.create(&path).unwrap();
    assert_eq!(fs.read(&path).unwrap(), b"");
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"first");
}

#[test]
fn truncate_is_durable_on_return() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"keep|drop").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.truncate(&path, 4).unwrap();
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"keep");
}

#[test]
fn durable_appends_to_log_files_pad_to_a_block_with_zeros() {
    let (fs, dir) = setup();
    let path = dir.join("000001.wal");
    let mut f = fs.create_log(&path).unwrap();
    f.append_durable(b"frame").unwrap();
    assert_eq!(f.len(), 5);
    fs.sync_dir(&dir).unwrap();
    cut(&fs, PowerCut::drop_unsynced());
    let bytes = read(&fs, &path).unwrap();
    assert_eq!(bytes.len(), 4096);
    assert_eq!(&bytes[..5], b"frame");
    assert!(bytes[5..].iter().all(|&b| b == 0));

    // A plain file's durable append ends exactly at its logical end.
    let plain = dir.join("t.sst");
    let mut f = fs.create(&plain).unwrap();
    f.append_durable(b"footer").unwrap();
    assert_eq!(fs.read(&plain).unwrap(), b"footer");
}

#[test]
fn preallocated_zeros_are_durable_only_after_a_sync() {
    let (fs, dir) = setup();
    let path = dir.join("000001.wal");
    let mut f = fs.create_log(&path).unwrap();
    f.append(b"hdr").unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(&dir).unwrap();
    f.preallocate(100).unwrap();
    assert_eq!(f.len(), 3);
    assert_eq!(fs.read(&path).unwrap().len(), 103);
    cut(&fs, PowerCut::drop_unsynced());
    assert_eq!(read(&fs, &path).unwrap(), b"hdr");
}

/// Over many seeds, `Tail::Random` produces every outcome: the unsynced
/// appends lost, kept, and torn (with and without garbage), and a torn
/// write never changes bytes before its offset or past its sector.
#[test]
fn random_tails_keep_a_prefix_and_tear_the_first_lost_write() {
    let (mut lost, mut kept, mut torn, mut junk) = (0, 0, 0, 0);
    for seed in 0..400 {
        let garbage = seed % 2 == 0;
        let (fs, dir) = setup();
        let path = dir.join("f");
        let mut f = fs.create(&path).unwrap();
        f.append(b"synced|").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        let first = [b'a'; 100];
        let second = [b'b'; 1000];
        f.append(&first).unwrap();
        f.append(&second).unwrap();
        cut(&fs, PowerCut::random(seed, garbage));
        let bytes = read(&fs, &path).unwrap();
        assert_eq!(&bytes[..7], b"synced|", "seed {seed}");
        let tail = &bytes[7..];
        // Expected: a prefix of a* b*, except junk after the torn point.
        let clean = tail
            .iter()
            .enumerate()
            .take_while(|&(i, &b)| b == if i < 100 { b'a' } else { b'b' })
            .count();
        if tail.is_empty() {
            lost += 1;
        } else if tail.len() == 1100 && clean == 1100 {
            kept += 1;
        } else if clean == tail.len() {
            torn += 1;
        } else {
            assert!(garbage, "seed {seed}: junk without garbage");
            // The junk ends at the end of the sector it started in, or at
            // the end of the torn write, whichever comes first.
            let start = 7 + clean as u64;
            let sector_end = (start / 512 + 1) * 512;
            let write_end = if clean < 100 { 107 } else { 1107 };
            assert_eq!(
                bytes.len() as u64,
                sector_end.min(write_end).max(start),
                "seed {seed}"
            );
            junk += 1;
        }
    }
    assert!(
        lost > 0 && kept > 0 && torn > 0 && junk > 0,
        "{lost} {kept} {torn} {junk}"
    );
}

#[test]
fn one_seed_gives_one_outcome() {
    let image = |seed| {
        let (fs, dir) = setup();
        let mut f = fs.create(&dir.join("f")).unwrap();
        fs.sync_dir(&dir).unwrap();
        for i in 0..20u8 {
            f.append(&[i; 333]).unwrap();
        }
        cut(&fs, PowerCut::random(seed, true));
        fs.read(&dir.join("f")).unwrap()
    };
    for seed in 0..20 {
        assert_eq!(image(seed), image(seed));
    }
}

#[test]
fn a_kill_keeps_everything_but_makes_nothing_durable() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"written").unwrap();
    fs.kill();
    assert!(
        f.append(b"after").is_err(),
        "the dead process's handle works"
    );
    assert!(fs.list(&dir).is_err(), "calls work before restart");
    fs.restart();
    assert!(f.sync_data().is_err(), "an old handle revived");
    assert_eq!(read(&fs, &path).unwrap(), b"written");
    cut(&fs, PowerCut::drop_unsynced());
    assert!(!fs.exists(&path));
}

#[test]
fn locks_conflict_until_released_or_crashed() {
    let (fs, dir) = setup();
    let path = dir.join("LOCK");
    let lock = fs.lock(&path).unwrap();
    assert_eq!(fs.lock(&path).err().unwrap().kind(), ErrorKind::Locked);
    drop(lock);
    let held = fs.lock(&path).unwrap();
    fs.kill();
    fs.restart();
    let new_owner = fs.lock(&path).unwrap();
    // The dead process's lock object going away must not free the path.
    drop(held);
    assert_eq!(fs.lock(&path).err().unwrap().kind(), ErrorKind::Locked);
    drop(new_owner);
}

#[test]
fn an_armed_crash_fires_right_after_the_nth_mutation() {
    let (fs, dir) = setup();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    fs.sync_dir(&dir).unwrap();
    fs.crash_after(2, Crash::PowerCut(PowerCut::keep_unsynced()));
    f.append(b"one").unwrap();
    f.append(b"two").unwrap(); // completes, then the power goes
    assert!(fs.is_down());
    assert!(f.append(b"three").is_err());
    fs.restart();
    assert_eq!(read(&fs, &path).unwrap(), b"onetwo");
    assert!(fs.trace().iter().any(|t| t.contains("PowerCut")));
}

#[test]
fn a_handle_created_by_the_crashing_operation_is_dead() {
    let (fs, dir) = setup();
    fs.crash_after(1, Crash::Kill);
    let mut f = fs.create(&dir.join("f")).unwrap();
    fs.restart();
    assert!(f.append(b"x").is_err());
}

/// `Tail::Pages` keeps each unsynced page independently: over many seeds,
/// a later page survives without an earlier one, and synced bytes are
/// never touched.
#[test]
fn pages_survive_independently() {
    let mut hole_then_data = 0;
    for seed in 0..64 {
        let (fs, dir) = setup();
        let path = dir.join("f");
        let mut f = fs.create(&path).unwrap();
        f.append(&[1u8; 100]).unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        f.append(&[2u8; 3 * 4096]).unwrap();
        cut(&fs, PowerCut::pages(seed));
        let bytes = read(&fs, &path).unwrap();
        assert!(bytes[..100].iter().all(|&b| b == 1), "seed {seed}");
        let pages: Vec<bool> = bytes[100..].chunks(4096).map(|c| c.contains(&2)).collect();
        if pages.windows(2).any(|w| !w[0] && w[1]) {
            hole_then_data += 1;
        }
    }
    assert!(hole_then_data > 0);
}
