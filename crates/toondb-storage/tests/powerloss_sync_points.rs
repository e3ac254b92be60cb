//! WAL sync points (segment format version 2, docs/format-wal.md) at the
//! engine level, on a [`PowerLossFs`].
//!
//! Proves: with any mix of `sync: true` and `sync: false` writes, power
//! cuts that persist unsynced pages out of order (or tear the last write
//! with garbage) always leave a database that opens, holds every synced
//! write, and holds a prefix in commit order of the rest; and damage to
//! bytes that a later sync point shows were synced is still refused as
//! corruption, not dropped.

mod powerloss_support;

use std::path::{Path, PathBuf};

use toondb_storage::io::{FileSystem, PowerCut, PowerLossFs};
use toondb_storage::{Database, ErrorKind, Options, WriteBatch, WriteOptions};

use powerloss_support::{
    check_no_orphans, fresh_disk, options, power_cut_and_reopen, unique_dir, wait_idle, Commit,
    Model, Tolerate,
};

/// SplitMix64: reproducible workloads from a seed, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random batch of 1..=3 puts and deletes over a small key space, with
/// values long enough that a round of writes spans several 4 KiB pages.
fn random_commit(rng: &mut Rng) -> (WriteBatch, Commit) {
    let mut batch = WriteBatch::new();
    let mut commit = Commit::new();
    for _ in 0..1 + rng.below(3) {
        let key = format!("key{:02}", rng.below(48)).into_bytes();
        if rng.below(5) == 0 {
            batch.delete(&key).unwrap();
            commit.push((key, None));
        } else {
            let len = 1 + rng.below(300) as usize;
            let byte = b'a' + rng.below(26) as u8;
            let value = vec![byte; len];
            batch.put(&key, &value).unwrap();
            commit.push((key, Some(value)));
        }
    }
    (batch, commit)
}

/// The model test: rounds of mixed writes (about one in eight synced, then
/// a run of unsynced ones), each ended by a power cut, over many seeds. Every reopen must succeed
/// and match the model (every synced write and everything before it
/// survives; of the rest, a prefix in commit order). Memtables are small
/// enough to rotate now and then, so older segments and flushes are in
/// play too.
#[test]
fn mixed_sync_writes_survive_out_of_order_writeback() {
    const SEEDS: u64 = 32;
    const ROUNDS: u64 = 4;
    let mut unsynced_drops = 0;
    let mut lost = 0;
    for seed in 0..SEEDS {
        let dir = unique_dir("sync-points-model");
        let fs = fresh_disk(&dir);
        let opts = options(&fs, 128 << 10);
        let mut db = Database::open_with(&dir, opts.clone()).unwrap();
        let mut model = Model::default();
        let mut rng = Rng(seed);
        for round in 0..ROUNDS {
            let ctx = format!("seed {seed}, round {round}");
            // Mixed, then a run of unsynced writes long enough (several
            // pages) for out-of-order writeback to leave holes in it.
            for i in 0..160 {
                let (batch, commit) = random_commit(&mut rng);
                let sync = i < 100 && rng.below(8) == 0;
                db.write_with(batch, WriteOptions::sync(sync))
                    .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                model.commit(commit, sync);
            }
            wait_idle(&db);
            // Mostly out-of-order writeback; sometimes an in-order tear
            // that leaves garbage up to the end of its sector.
            let cut_seed = seed * ROUNDS + round;
            let cut = if round % 4 == 3 {
                PowerCut::random(cut_seed, true)
            } else {
                PowerCut::pages(cut_seed)
            };
            db = power_cut_and_reopen(&fs, db, &dir, cut, &opts)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let recovery = db.stats().recovery;
            if let Some(tail) = &recovery.dropped_tail {
                if tail.reason.contains("unsynced records after it") {
                    unsynced_drops += 1;
                }
            }
            lost += model
                .settle_power_cut(&db)
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
            wait_idle(&db);
            check_no_orphans(&fs, &dir, Tolerate::default())
                .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        }
        db.close().unwrap();
    }
    // The runs must reach the case this format exists for: damage with
    // valid records after it, dropped as an unsynced tail.
    assert!(
        unsynced_drops >= SEEDS / 2,
        "only {unsynced_drops} reopens dropped damage followed by valid records"
    );
    assert!(lost > 0, "no power cut lost an unsynced write");
}

fn newest_segment(fs: &PowerLossFs, dir: &Path) -> PathBuf {
    let mut wal: Vec<String> = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    wal.sort();
    dir.join(wal.pop().expect("no WAL segment"))
}

fn rewrite(fs: &PowerLossFs, path: &Path, bytes: &[u8]) {
    let mut file = fs.create(path).unwrap();
    file.append(bytes).unwrap();
    file.sync_data().unwrap();
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("value not found in the WAL segment")
}

/// A database whose newest WAL segment holds ten synced puts, then ten
/// unsynced ones, all of which survived a power cut (`keep_unsynced`):
/// the image a media error then damages.
fn synced_then_unsynced() -> (PowerLossFs, PathBuf, Options, Model) {
    let dir = unique_dir("sync-points-damage");
    let fs = fresh_disk(&dir);
    let opts = options(&fs, 1 << 20);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    let mut model = Model::default();
    for (i, sync) in (0..20).map(|i| (i, i < 10)) {
        let (k, v) = (
            format!("k{i:02}"),
            format!("value-{i:02}-{}", "x".repeat(40)),
        );
        db.write_with(
            {
                let mut b = WriteBatch::new();
                b.put(&k, &v).unwrap();
                b
            },
            WriteOptions::sync(sync),
        )
        .unwrap();
        model.commit(vec![(k.into_bytes(), Some(v.into_bytes()))], sync);
    }
    fs.power_cut(PowerCut::keep_unsynced());
    let _ = db.close();
    drop(db);
    fs.restart();
    (fs, dir, opts, model)
}

/// Damage to a synced record is damage to acknowledged-durable data: the
/// sync points of the later groups (written after that sync completed)
/// say so, and replay refuses to open rather than drop the record and
/// everything after it. The file is left as it was.
#[test]
fn damage_before_a_sync_point_is_corruption() {
    for victim in [0, 5, 9] {
        let (fs, dir, opts, _) = synced_then_unsynced();
        let segment = newest_segment(&fs, &dir);
        let mut bytes = fs.read(&segment).unwrap();
        let at = find(&bytes, format!("value-{victim:02}-").as_bytes());
        bytes[at + 3] ^= 0x20;
        rewrite(&fs, &segment, &bytes);

        let err = Database::open_with(&dir, opts.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "record {victim}: {err}");
        assert!(err.message().contains("sync point"), "{err}");
        assert_eq!(fs.read(&segment).unwrap(), bytes, "nothing was cut");
    }
}

/// Damage to a record written after the last sync, shaped as a power cut
/// leaves it (a lost write: zeros from the first lost byte to the end of
/// its 512-byte sector), is an unsynced tail: the database opens with every
/// synced write and the records before the damaged one.
#[test]
fn damage_after_the_last_sync_point_is_a_torn_tail() {
    for victim in [10, 14, 19] {
        let (fs, dir, opts, mut model) = synced_then_unsynced();
        let segment = newest_segment(&fs, &dir);
        let mut bytes = fs.read(&segment).unwrap();
        // The lost write begins with the victim's group: its 25-byte sync
        // point, then the batch frame (8-byte frame header, kind, commit
        // timestamp, count, op kind, key length, 3-byte key, value length).
        let value = find(&bytes, format!("value-{victim:02}-").as_bytes());
        let group = value - 25 - (8 + 1 + 8 + 4 + 1 + 1 + 3 + 1);
        assert_eq!(
            &bytes[group + 4..group + 9],
            &[17, 0, 0, 0, 2],
            "a sync point"
        );
        let sector_end = (group / 512 + 1) * 512;
        bytes[group..sector_end].fill(0);
        rewrite(&fs, &segment, &bytes);

        let db = Database::open_with(&dir, opts.clone()).unwrap();
        // Zeros up to the end of the log read as its clean end; with
        // later pages surviving, as a torn tail cut at the lost write.
        let later_pages_survive = bytes[sector_end..].iter().any(|&b| b != 0);
        match db.stats().recovery.dropped_tail {
            Some(tail) => {
                assert!(later_pages_survive, "{tail:?}");
                assert_eq!(tail.offset, group as u64, "{tail:?}");
                assert!(
                    tail.reason.starts_with("impossible record length"),
                    "{tail:?}"
                );
            }
            None => assert!(!later_pages_survive, "record {victim}"),
        }
        let lost = model.settle_power_cut(&db).unwrap();
        assert_eq!(lost, 20 - victim, "record {victim}");
        db.close().unwrap();
    }
}

/// A garbled (not zeroed) byte in a record written after the last sync,
/// with valid records after it, is not what a lost write leaves: it is
/// refused as corruption, as version 1 refused it. The reader cannot tell
/// it from the same damage in records a final `sync: true` group made
/// durable (that group's own sync point was written before its sync;
/// review_s23_wal.rs). With nothing valid after it, it is a torn tail.
#[test]
fn a_garbled_record_with_valid_records_after_it_is_corruption() {
    for victim in [10, 14, 19] {
        let (fs, dir, opts, mut model) = synced_then_unsynced();
        let segment = newest_segment(&fs, &dir);
        let mut bytes = fs.read(&segment).unwrap();
        let at = find(&bytes, format!("value-{victim:02}-").as_bytes());
        bytes[at + 3] ^= 0x20;
        rewrite(&fs, &segment, &bytes);

        match Database::open_with(&dir, opts.clone()) {
            Err(err) => {
                assert!(victim < 19, "record {victim}: {err}");
                assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
                assert!(err.message().contains("a valid record follows"), "{err}");
                assert_eq!(fs.read(&segment).unwrap(), bytes, "nothing was cut");
            }
            Ok(db) => {
                assert_eq!(victim, 19, "record {victim} damage was dropped");
                let lost = model.settle_power_cut(&db).unwrap();
                assert_eq!(lost, 1);
                db.close().unwrap();
            }
        }
    }
}

/// A clean close syncs the segment and records that with a sync point, so
/// later damage to unsynced-when-written records is corruption too: after
/// the close they were durable.
#[test]
fn damage_after_a_clean_close_is_corruption() {
    let dir = unique_dir("sync-points-close");
    let fs = fresh_disk(&dir);
    let opts = options(&fs, 1 << 20);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    for i in 0..10 {
        db.put(format!("k{i}"), format!("closed-value-{i:02}"))
            .unwrap();
    }
    db.close().unwrap();
    // Nothing unsynced is left: the close made it all durable.
    fs.power_cut(PowerCut::drop_unsynced());
    fs.restart();
    let segment = newest_segment(&fs, &dir);
    let pristine = fs.read(&segment).unwrap();
    let mut bytes = pristine.clone();
    let at = find(&bytes, b"closed-value-00");
    bytes[at + 2] ^= 1;
    rewrite(&fs, &segment, &bytes);
    let err = Database::open_with(&dir, opts.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.message().contains("sync point"), "{err}");

    // Undone, the database opens with everything.
    rewrite(&fs, &segment, &pristine);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    for i in 0..10 {
        let want = format!("closed-value-{i:02}").into_bytes();
        assert_eq!(db.get(format!("k{i}")).unwrap(), Some(want));
    }
    db.close().unwrap();
}
