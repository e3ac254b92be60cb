//! The manifest an open read may end in an edit that is only in the page
//! cache: a process killed after a flush appended its edit and before the
//! edit's fdatasync, with the WAL segment the flush made redundant never
//! synced. The open serves the flushed writes from the table the edit
//! lists and replays only the WAL after the edit's checkpoint, so its new
//! segment names no link to the skipped segment. Any WAL sync after that
//! open must therefore come after the edit is durable: otherwise a power
//! cut keeps the later (synced) writes and loses the skipped segment's
//! earlier ones, a hole in commit order.
//!
//! Warmopen (the manifest switch on the maintenance thread) made the
//! durable commit and the close sync that manifest first, but let the
//! engine append unsynced records before it: a seal's background sync (or
//! page writeback, `PowerCut::pages`) then made them durable while the
//! edit was not, and a power cut lost the writes before them
//! (review_revwo.rs,
//! `unsynced_writes_and_seals_before_the_switch_then_a_power_cut_reopen`).
//! These tests make that order deterministic: the flush that kills the
//! first session is held until the test decides what its live segment
//! holds, and the second session's seal sync is awaited before the cut.

mod powerloss_support;

use std::path::Path;

use toondb_storage::io::{Crash, PowerCut, WritableFile, WriteHook};
use toondb_storage::{Database, WriteOptions};

use powerloss_support::gates::{wait_until, Gate, HoldSwitch, OnSync};
use powerloss_support::unsynced_edit::{
    after_session_a, hooked_opts, opts, power_cut_and_settle, put, sealed_synced, segments,
    session_b_then_power_cut,
};

/// Session A, then session B (switch held if `held`) and its power cut,
/// for each of two cuts.
fn session_a_then_b(name: &str, after_seal: bool, held: bool) {
    for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
        let (dir, fs, mut model) = after_session_a(name, after_seal);
        session_b_then_power_cut(&fs, &dir, &mut model, cut, held);
    }
}

/// The failure review_revwo.rs saw: session A's new live segment holds no
/// record (nothing links the skipped segment to what follows), session B
/// seals its segment and that segment is synced in the background while
/// the manifest edit is still only in the page cache.
#[test]
fn a_seal_sync_after_an_open_that_trusted_an_unsynced_edit() {
    session_a_then_b("open-manifest-empty", false, true);
}

/// The same with writes in session A's new live segment: session B
/// replays them and syncs that segment in the background too. (This one
/// passed before the fix as well: the segment's first record names where
/// the skipped segment ended, so replay sees that segment's lost tail and
/// drops everything after it, a prefix.)
#[test]
fn a_replayed_segment_sync_after_an_open_that_trusted_an_unsynced_edit() {
    session_a_then_b("open-manifest-replayed", true, true);
}

/// Session B without holding the switch (it races with the writes on
/// warmopen; it is inside the open before warmopen): the same outcome.
#[test]
fn a_seal_sync_after_an_open_whose_switch_is_not_held() {
    for after_seal in [false, true] {
        session_a_then_b("open-manifest-free", after_seal, false);
    }
}

/// A power cut at every step of the open after session A and of its
/// first writes and seal (the switch not held): every reopen holds a
/// prefix of the commits.
#[test]
fn power_cuts_at_every_step_of_an_open_after_an_unsynced_edit() {
    for after_seal in [false, true] {
        for at in 1..=50u64 {
            for cut in [PowerCut::drop_unsynced(), PowerCut::pages(at)] {
                let what = format!("after_seal {after_seal}, cut {cut:?} after {at} ops");
                let (dir, fs, mut model) = after_session_a("open-manifest-steps", after_seal);
                fs.crash_after(at, Crash::PowerCut(cut));
                if let Ok(db) = Database::open_with(&dir, opts(fs.shared())) {
                    let live = segments(&fs, &dir).pop().unwrap_or_default();
                    let mut n = 5000;
                    while !fs.is_down() && segments(&fs, &dir).last() == Some(&live) && n < 5300 {
                        let (batch, commit) = put(n);
                        n += 1;
                        match db.write_with(batch, WriteOptions::sync(false)) {
                            Ok(_) => model.commit(commit, false),
                            Err(_) => model.commit_maybe(commit),
                        }
                    }
                    wait_until("the seal's sync or the cut", || {
                        fs.is_down() || sealed_synced(&fs, &live)
                    });
                    if !fs.is_down() {
                        fs.power_cut(cut);
                    }
                    let _ = db.close();
                } else {
                    assert!(fs.is_down(), "{what}: the open failed without a crash");
                }
                let trace = fs.trace().join("\n");
                fs.disarm();
                fs.restart();
                let db = Database::open_with(&dir, opts(fs.shared()))
                    .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}\n{trace}"));
                model
                    .settle_power_cut(&db)
                    .unwrap_or_else(|e| panic!("{what}: {e}\n{trace}"));
                db.close().unwrap();
            }
        }
    }
}

/// Holds the manifest switch and every sync of a WAL segment past its
/// header until released: the open's background syncs cannot run before
/// the test kills the process.
#[derive(Clone, Default)]
struct HoldSyncs(Gate);

impl WriteHook for HoldSyncs {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        HoldSwitch(self.0.clone()).before_create(path)
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_none_or(|e| e != "wal") {
            return file;
        }
        let gate = self.0.clone();
        OnSync::boxed(file, move |file| {
            if file.len() > 16 {
                gate.wait();
            }
            Ok(())
        })
    }
}

/// The syncs replay runs inside the open: after session A, an open (B)
/// writes to its new segment and an open (C) creates one and writes
/// nothing, both killed before their switch and before any WAL sync of
/// theirs ran. The next open (D) replays B's segment followed by C's empty
/// one, which makes replay sync them during the open; a power cut right
/// after must not keep B's writes without session A's. (B's first write
/// made the manifest it read durable.)
#[test]
fn a_replay_sync_in_the_open_after_opens_that_trusted_an_unsynced_edit() {
    for cut in [PowerCut::drop_unsynced(), PowerCut::pages(3)] {
        let (dir, fs, mut model) = after_session_a("open-manifest-replay-sync", false);
        let mut n = 5000;
        for writes in [5, 0] {
            let hold = HoldSyncs::default();
            let db = Database::open_with(&dir, hooked_opts(&fs, hold.clone())).unwrap();
            model.check_all(&db).unwrap();
            for _ in 0..writes {
                let (batch, commit) = put(n);
                n += 1;
                db.write_with(batch, WriteOptions::sync(false)).unwrap();
                model.commit(commit, false);
            }
            fs.kill();
            hold.0.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        let hold = HoldSwitch::default();
        let db = Database::open_with(&dir, hooked_opts(&fs, hold.clone())).unwrap();
        model.check_all(&db).unwrap();
        power_cut_and_settle(&fs, &dir, db, &mut model, cut, || hold.release());
    }
}
