//! Review of branch `warmopen` (the open's manifest switch moved onto the
//! maintenance thread). On a [`PowerLossFs`], the open's switch is held
//! for a random number of writes (a small memtable, so seals create new
//! WAL segments and queue flushes and checkpoints before the switch), then
//! released while writes go on, and the power is cut (or the process
//! killed) after a random number of file-system operations counted from
//! the start of the open: inside the open, before the switch, during it,
//! or in the first flushes after it. Sometimes two opens in a row are
//! killed before their switch. Every reopen must succeed and hold an
//! allowed prefix of the commits that includes every durable one, and a
//! power cut right after a clean reopen must lose nothing durable.

mod powerloss_support;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use toondb_storage::io::{
    Crash, FileSystem, PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook,
};
use toondb_storage::{Database, ErrorKind, Options, WriteOptions};

use powerloss_support::gates::{HoldSwitch, OnSync};
use powerloss_support::unsynced_edit::{hooked_opts, opts as edit_opts, put, KillAfterEdit};
use powerloss_support::{fresh_disk, unique_dir, Model};
use support::Rng;

fn options(fs: Arc<dyn FileSystem>) -> Options {
    Options::default()
        .memtable_size(2048)
        .wal_size_limit(1024)
        // Flushes wait for the held switch: no writer may stall for one.
        .max_immutable_memtables(256)
        .l0_slowdown_writes(1000)
        .l0_stop_writes(1000)
        .block_size(128)
        .fs(fs)
}

fn crash_kind(rng: &mut Rng) -> Crash {
    let seed = rng.next();
    match rng.below(5) {
        0 => Crash::Kill,
        1 => Crash::PowerCut(PowerCut::drop_unsynced()),
        2 => Crash::PowerCut(PowerCut::pages(seed)),
        3 => Crash::PowerCut(PowerCut::random(seed, false)),
        _ => Crash::PowerCut(PowerCut::random(seed, true)),
    }
}

/// One session: open with the switch held, `writes` writes (the switch
/// released after `release_at` of them, never if `None`), the crash armed
/// `crash_at` operations after the open starts. Returns whether the crash
/// happened (else the caller crashes the process itself).
#[allow(clippy::too_many_arguments)]
fn session(
    fs: &PowerLossFs,
    dir: &Path,
    model: &mut Model,
    rng: &mut Rng,
    next: &mut u64,
    writes: u64,
    release_at: Option<u64>,
    crash: Option<(u64, Crash)>,
    close_clean: bool,
) -> bool {
    let hold = HoldSwitch::default();
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hold.clone()));
    if let Some((at, crash)) = crash {
        fs.crash_after(at, crash);
    }
    let db = match Database::open_with(dir, options(wrapped)) {
        Ok(db) => db,
        Err(e) => {
            assert!(fs.is_down(), "open failed without a crash: {e}");
            hold.release();
            fs.disarm();
            fs.restart();
            return matches!(crash, Some((_, Crash::PowerCut(_))));
        }
    };
    for i in 0..writes {
        if release_at == Some(i) {
            hold.release();
        }
        let durable = rng.below(4) == 0;
        let (batch, commit) = put(*next);
        *next += 1;
        match db.write_with(batch, WriteOptions::sync(durable)) {
            Ok(_) => model.commit(commit, durable),
            Err(_) => {
                assert!(fs.is_down(), "a write failed without a crash");
                model.commit_maybe(commit);
                break;
            }
        }
    }
    if release_at.is_some() {
        hold.release();
        // Let the switch and the flushes it unblocks run into the crash.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        while !fs.is_down() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let fired = fs.is_down();
    let mut power_cut = fired && matches!(crash, Some((_, Crash::PowerCut(_))));
    if !fired && close_clean {
        // A close (maybe before the switch ran): everything it acknowledged
        // is durable; then the power is cut.
        hold.release();
        fs.disarm();
        if db.close().is_ok() {
            model.all_durable();
        }
        fs.power_cut(match crash_kind(rng) {
            Crash::PowerCut(cut) => cut,
            Crash::Kill => PowerCut::drop_unsynced(),
        });
        power_cut = true;
    } else if !fired {
        fs.kill();
    }
    hold.release();
    let _ = db.close();
    drop(db);
    fs.disarm();
    fs.restart();
    power_cut
}

/// A session of `writes` unsynced writes (keys from `next` on), then the
/// process is killed: they are left in the page cache, for the next open
/// to replay.
fn write_then_kill(fs: &PowerLossFs, dir: &Path, model: &mut Model, next: &mut u64, writes: u64) {
    let db = Database::open_with(dir, options(fs.shared())).unwrap();
    for _ in 0..writes {
        let (batch, commit) = put(*next);
        *next += 1;
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    fs.kill();
    let _ = db.close();
    drop(db);
    fs.restart();
}

fn check_reopen(fs: &PowerLossFs, dir: &Path, model: &mut Model, power_cut: bool, what: &str) {
    let db = Database::open_with(dir, options(fs.shared()))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}\n{}", fs.trace().join("\n")));
    if power_cut {
        model
            .settle_power_cut(&db)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", fs.trace().join("\n")));
    } else {
        model
            .check_all(&db)
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", fs.trace().join("\n")));
    }
    // What the reopen acknowledged (it serves it) survives a power cut
    // once a durable write follows.
    let (batch, commit) = put(1_000_000);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    let before = fs.shared().list(dir).unwrap();
    let trace_before = fs.trace().join("\n");
    fs.power_cut(PowerCut::drop_unsynced());
    let _ = db.close();
    drop(db);
    fs.restart();
    let db = Database::open_with(dir, options(fs.shared()))
        .unwrap_or_else(|e| panic!("{what}: second reopen failed: {e}"));
    model.check_all(&db).unwrap_or_else(|e| {
        panic!(
            "{what}, after a power cut following a durable write: {e}\nbefore the cut: {before:?}\n{trace_before}\nafter: {:?}",
            fs.shared().list(dir).unwrap()
        )
    });
    db.close().unwrap();
    model.all_durable();
}

#[test]
fn crashes_around_a_held_manifest_switch_keep_every_durable_write() {
    let seeds: u64 = std::env::var("REVWO_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let first: u64 = std::env::var("REVWO_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    for seed in first..first + seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let dir = unique_dir("revwo");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        let mut next = 0u64;
        // A first session leaves WAL to replay (killed, nothing synced),
        // sometimes killed right after a flush's manifest edit was appended
        // and before it was synced.
        if rng.below(3) == 0 {
            next = kill_after_an_unsynced_flush_edit(&fs, &dir, &mut model, next);
        } else {
            let writes = 20 + rng.below(40);
            write_then_kill(&fs, &dir, &mut model, &mut next, writes);
        }
        // Commits that failed in that kill may or may not be there: look
        // (an open killed before its switch), so the model knows before
        // later sessions commit after them.
        {
            let hold = HoldSwitch::default();
            let wrapped = Arc::new(WrappedFs::new(fs.shared(), hold.clone()));
            let db = Database::open_with(&dir, options(wrapped)).unwrap();
            model.check_all(&db).unwrap();
            fs.kill();
            hold.release();
            let _ = db.close();
            drop(db);
            fs.restart();
        }
        // Sometimes an open killed before its switch first (writes only in
        // the page cache), so the next open replays its segments too.
        let twice = rng.below(3) == 0;
        if twice {
            let writes = rng.below(30);
            session(
                &fs, &dir, &mut model, &mut rng, &mut next, writes, None, None, false,
            );
        }
        let writes = 5 + rng.below(40);
        let release_at = if rng.below(4) == 0 {
            None
        } else {
            Some(rng.below(writes + 1))
        };
        let crash = crash_kind(&mut rng);
        let at = 1 + rng.below(120);
        let close_clean = rng.below(3) == 0;
        let fired = session(
            &fs,
            &dir,
            &mut model,
            &mut rng,
            &mut next,
            writes,
            release_at,
            Some((at, crash)),
            close_clean,
        );
        let power_cut = fired;
        let what = format!(
            "seed {seed} (twice {twice}, writes {writes}, release at {release_at:?}, crash {crash:?} after {at} ops, close {close_clean})"
        );
        check_reopen(&fs, &dir, &mut model, power_cut, &what);
    }
}

/// Sanity: the error kind a crashed engine reports is I/O.
#[test]
fn a_crashed_write_is_an_io_error() {
    let dir = unique_dir("revwo-io");
    let fs = fresh_disk(&dir);
    let db = Database::open_with(&dir, options(fs.shared())).unwrap();
    fs.kill();
    let (batch, _) = put(1);
    let err = db.write_with(batch, WriteOptions::sync(true)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    let _ = db.close();
}

/// Where the open's manifest switch is made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SwitchFault {
    CreateManifest,
    SyncManifest,
    CreateCurrentTmp,
    SyncCurrentTmp,
    SyncDir,
}

const SWITCH_FAULTS: [SwitchFault; 5] = [
    SwitchFault::CreateManifest,
    SwitchFault::SyncManifest,
    SwitchFault::CreateCurrentTmp,
    SwitchFault::SyncCurrentTmp,
    SwitchFault::SyncDir,
];

/// Holds the switch, then fails it once at `fault`.
#[derive(Clone)]
struct FailSwitch {
    hold: HoldSwitch,
    fault: SwitchFault,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl FailSwitch {
    fn fire(&self, at: SwitchFault) -> toondb_storage::Result<()> {
        if self.fault == at && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(toondb_storage::Error::new(
                ErrorKind::Io,
                format!("injected: {at:?}"),
            ));
        }
        Ok(())
    }
}

impl WriteHook for FailSwitch {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        self.hold.before_create(path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("MANIFEST-") {
            self.fire(SwitchFault::CreateManifest)?;
        }
        if name == "CURRENT.tmp" {
            self.fire(SwitchFault::CreateCurrentTmp)?;
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let on_sync = if name.starts_with("MANIFEST-") {
            SwitchFault::SyncManifest
        } else if name == "CURRENT.tmp" {
            SwitchFault::SyncCurrentTmp
        } else {
            return file;
        };
        let hook = self.clone();
        OnSync::boxed_with_durable_appends(file, move |_| hook.fire(on_sync))
    }

    fn before_sync_dir(&self, _dir: &Path) -> toondb_storage::Result<()> {
        self.fire(SwitchFault::SyncDir)
    }
}

fn wait_for_background_error(db: &Database) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(e) = db.stats().background_error {
            return e;
        }
        assert!(std::time::Instant::now() < deadline, "no background error");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// The open's manifest switch fails at each of its steps, after writes
/// (durable and not, with seals) were acknowledged while it was held: the
/// failure becomes a background error, later writes of both kinds and the
/// close report it, CURRENT names a complete manifest, and a reopen (after
/// a kill, or after a power cut) holds every acknowledged (durable) write.
#[test]
fn a_failed_manifest_switch_stops_writes_and_loses_nothing() {
    for fault in SWITCH_FAULTS {
        for power_cut in [false, true] {
            let what = format!("{fault:?}, power cut {power_cut}");
            let dir = unique_dir("revwo-fail");
            let fs = fresh_disk(&dir);
            let mut model = Model::default();
            let mut next = 0u64;
            write_then_kill(&fs, &dir, &mut model, &mut next, 30);
            let hook = FailSwitch {
                hold: HoldSwitch::default(),
                fault,
                armed: Arc::default(),
            };
            let wrapped = Arc::new(WrappedFs::new(fs.shared(), hook.clone()));
            let db = Database::open_with(&dir, options(wrapped)).unwrap();
            model.check_all(&db).unwrap();
            for i in 0..40 {
                let durable = i % 7 == 3;
                let (batch, commit) = put(next);
                next += 1;
                db.write_with(batch, WriteOptions::sync(durable)).unwrap();
                model.commit(commit, durable);
            }
            hook.armed.store(true, std::sync::atomic::Ordering::SeqCst);
            hook.hold.release();
            let bg = wait_for_background_error(&db);
            assert!(bg.contains("injected"), "{what}: {bg}");
            assert!(!hook.armed.load(std::sync::atomic::Ordering::SeqCst));
            for durable in [false, true] {
                let (batch, commit) = put(next);
                next += 1;
                let r = db.write_with(batch, WriteOptions::sync(durable));
                assert!(r.is_err(), "{what}: a write after a failed switch: {r:?}");
                model.commit_maybe(commit);
            }
            assert!(db.flush().is_err(), "{what}: flush after a failed switch");
            let closed = db.close();
            assert!(closed.is_err(), "{what}: close after a failed switch");
            drop(db);
            // CURRENT names a complete manifest.
            let current = fs.shared().read(&dir.join("CURRENT")).unwrap();
            let name = String::from_utf8(current).unwrap();
            assert!(
                fs.shared().exists(&dir.join(name.trim_end())),
                "{what}: CURRENT names {name:?}, missing"
            );
            if power_cut {
                fs.power_cut(PowerCut::drop_unsynced());
                fs.restart();
            }
            let db = Database::open_with(&dir, options(fs.shared()))
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
            if power_cut {
                model.settle_power_cut(&db)
            } else {
                model.check_all(&db).map(|()| 0)
            }
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            db.close().unwrap();
        }
    }
}

/// Session A of the tests below: unsynced writes until a seal and its
/// flush; the process killed right after the flush's manifest edit was
/// appended, the sealed segment never synced.
fn kill_after_an_unsynced_flush_edit(
    fs: &PowerLossFs,
    dir: &Path,
    model: &mut Model,
    first: u64,
) -> u64 {
    // Every WAL sync past a segment's header is held (a sealed segment's
    // background sync never runs; released once the process is dead, so
    // it fails); table creation is not.
    let hook = KillAfterEdit::new(fs);
    hook.flush.release();
    let db = Database::open_with(dir, hooked_opts(fs, hook.clone())).unwrap();
    let mut n = first;
    while !fs.is_down() {
        assert!(n < first + 10_000, "no flush edit");
        let (batch, commit) = put(n);
        n += 1;
        match db.write_with(batch, WriteOptions::sync(false)) {
            Ok(_) => model.commit(commit, false),
            Err(_) => model.commit_maybe(commit),
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    hook.wal.release();
    let _ = db.close();
    drop(db);
    fs.restart();
    n
}

/// A fresh disk (the directory `unique_dir(name)`) after
/// `kill_after_an_unsynced_flush_edit`, and the next open, with its switch
/// held, which must find every write.
fn held_open_after_the_kill(name: &str) -> (PathBuf, PowerLossFs, Model, HoldSwitch, Database) {
    let dir = unique_dir(name);
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    kill_after_an_unsynced_flush_edit(&fs, &dir, &mut model, 0);
    let hold = HoldSwitch::default();
    let db = Database::open_with(&dir, hooked_opts(&fs, hold.clone())).unwrap();
    model.check_all(&db).unwrap();
    (dir, fs, model, hold, db)
}

fn wal_count(fs: &PowerLossFs, dir: &Path) -> usize {
    fs.shared()
        .list(dir)
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".wal"))
        .count()
}

/// After the same kill, the next open (switch held) takes only unsynced
/// writes, enough for seals whose background syncs complete (a newer
/// segment records them), and then the power is cut. Nothing was durable
/// since the kill, so any prefix may survive, but the directory must open:
/// the open relied on the unsynced edit's checkpoint when it started
/// syncing segments, so the segment below that checkpoint (never synced)
/// may lose its tail under a newer segment that records a finished sync.
#[test]
fn unsynced_writes_and_seals_before_the_switch_then_a_power_cut_reopen() {
    for cut in [
        PowerCut::drop_unsynced(),
        PowerCut::keep_unsynced(),
        PowerCut::random(7, false),
        PowerCut::pages(3),
    ] {
        let (dir, fs, mut model, hold, db) = held_open_after_the_kill("revwo-edit-seal");
        let start = wal_count(&fs, &dir);
        let mut n = 5000;
        while wal_count(&fs, &dir) < start + 2 {
            let (batch, commit) = put(n);
            n += 1;
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        // Let the seals' background syncs finish, then more groups record them.
        std::thread::sleep(std::time::Duration::from_millis(50));
        for _ in 0..5 {
            let (batch, commit) = put(n);
            n += 1;
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        fs.power_cut(cut);
        hold.release();
        let _ = db.close();
        drop(db);
        fs.restart();
        let db = Database::open_with(&dir, edit_opts(fs.shared())).unwrap_or_else(|e| {
            panic!(
                "{cut:?}: the directory does not reopen: {e}\n{}",
                fs.trace().join("\n")
            )
        });
        model
            .settle_power_cut(&db)
            .unwrap_or_else(|e| panic!("{cut:?}: {e}"));
        db.close().unwrap();
    }
}

/// A flush's manifest edit was appended but not synced when the process
/// was killed, and the sealed WAL segment it made redundant was never
/// synced either. The next open reads the edit (the page cache has it),
/// serves the flushed writes from the table it lists, and starts replay
/// after the segment. A durable write acknowledged before that open's
/// manifest switch promises every earlier write too; a power cut then must
/// not lose the flushed writes (the edit that lists their table must be
/// durable by then), nor leave the durable write without them.
#[test]
fn a_durable_write_before_the_switch_makes_the_manifest_the_open_read_durable() {
    // Session B: the switch held, every write is there (a kill loses
    // nothing), then one durable write and a power cut.
    let (dir, fs, mut model, hold, db) = held_open_after_the_kill("revwo-edit");
    let (batch, commit) = put(1_000_000);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    fs.power_cut(PowerCut::drop_unsynced());
    hold.release();
    let _ = db.close();
    drop(db);
    fs.restart();

    let db = Database::open_with(&dir, edit_opts(fs.shared())).unwrap();
    model
        .check_all(&db)
        .unwrap_or_else(|e| panic!("a write acknowledged before a durable one was lost: {e}"));
    db.close().unwrap();
}
