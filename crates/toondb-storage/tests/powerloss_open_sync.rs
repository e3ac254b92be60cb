//! An open after a crash replays the WAL without syncing it: the replayed
//! segments are synced in the background, and the segment the open
//! creates names the last of them as its predecessor (docs/format-wal.md,
//! *Open*). On a [`PowerLossFs`], with those syncs (and the flush that
//! would make the segments redundant) held back by a gate, this proves:
//!
//! - the open returns without waiting for them;
//! - a durable write after the open waits for them, and they finish in
//!   order before the new segment's sync;
//! - a power cut while they are held leaves an image that opens to a
//!   prefix in commit order of the unsynced writes, before and after the
//!   open (the lost tail of a replayed segment is dropped with the newer
//!   segment, never replayed around a gap).

mod powerloss_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use toondb_storage::io::{PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, ErrorKind, Options, WriteBatch, WriteOptions};

use powerloss_support::gates;
use powerloss_support::{
    cut_for_seed, fresh_disk, settle_then_write_and_reopen, unique_dir, Commit, Model,
};

/// Holds, until released, every sync of the WAL segments named in `held`
/// and every table creation; logs the WAL syncs that finished, in order.
#[derive(Clone, Default)]
struct Gate {
    open: gates::Gate,
    /// Set: table creation is held until `release_tables` (else it
    /// follows `open`).
    tables: Option<gates::Gate>,
    /// Set: manifest creation is held until `release_manifests` (the open's
    /// manifest switch, which runs on the maintenance thread).
    manifests: Option<gates::Gate>,
    held: Arc<Mutex<BTreeSet<String>>>,
    synced: Arc<Mutex<Vec<String>>>,
}

impl Gate {
    fn holding(names: BTreeSet<String>) -> Gate {
        let gate = Gate::default();
        *gate.held.lock().unwrap() = names;
        gate
    }

    fn wait(&self) {
        self.open.wait();
    }

    fn release_manifests(&self) {
        if let Some(m) = &self.manifests {
            m.release();
        }
    }

    fn release_tables(&self) {
        if let Some(t) = &self.tables {
            t.release();
        }
    }

    fn release(&self) {
        self.open.release();
    }

    fn synced(&self) -> Vec<String> {
        self.synced.lock().unwrap().clone()
    }
}

impl WriteHook for Gate {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let (Some(m), true) = (&self.manifests, name.starts_with("MANIFEST-")) {
            m.wait();
        }
        if path.extension().is_some_and(|e| e == "sst") {
            match &self.tables {
                Some(t) => t.wait(),
                None => self.wait(),
            }
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            Box::new(GatedWal {
                inner: file,
                gate: self.clone(),
                name,
            })
        } else {
            file
        }
    }
}

struct GatedWal {
    inner: Box<dyn WritableFile>,
    gate: Gate,
    name: String,
}

impl GatedWal {
    fn before_sync(&self) {
        if self.gate.held.lock().unwrap().contains(&self.name) {
            self.gate.wait();
        }
    }

    fn after_sync(&self) {
        if self.inner.len() > 16 {
            self.gate.synced.lock().unwrap().push(self.name.clone());
        }
    }
}

impl WritableFile for GatedWal {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        self.before_sync();
        self.inner.sync_data()?;
        self.after_sync();
        Ok(())
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.before_sync();
        self.inner.append_durable(data)?;
        self.after_sync();
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

/// One put of 100..=199 bytes; `n` keeps keys and values distinct.
fn put(n: u64) -> (WriteBatch, Commit) {
    let key = format!("key{:03}", n % 64).into_bytes();
    let value = vec![b'a' + (n % 26) as u8; 100 + (n * 37 % 100) as usize];
    let mut batch = WriteBatch::new();
    batch.put(&key, &value).unwrap();
    (batch, vec![(key, Some(value))])
}

/// Options whose memtable size seals a segment every few puts, so the crash
/// image holds several segments to replay.
fn options(fs: Arc<dyn toondb_storage::io::FileSystem>, seal_at: u64) -> Options {
    Options::default()
        .memtable_size(seal_at as usize)
        .wal_size_limit(u64::MAX)
        // Flushes are held in these tests: no writer may stall for one.
        .max_immutable_memtables(64)
        .l0_slowdown_writes(1000)
        .l0_stop_writes(1000)
        .block_size(128)
        .fs(fs)
}

/// `puts` unsynced puts, then the process is killed (the page cache keeps
/// them: nothing was synced). Table creation is held, so every put is
/// still only in the WAL. Returns the WAL segments the kill left.
fn write_then_kill(fs: &PowerLossFs, dir: &Path, model: &mut Model, puts: u64) -> BTreeSet<String> {
    let hold_tables = Gate::holding(BTreeSet::new());
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), hold_tables.clone()));
    let db = Database::open_with(dir, options(wrapped, 1024)).unwrap();
    for n in 0..puts {
        let (batch, commit) = put(n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    fs.kill();
    hold_tables.release();
    let _ = db.close();
    drop(db);
    fs.restart();
    fs.shared()
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect()
}

/// Releases `gate` after `after`, and says whether it did.
fn release_later(gate: &Gate, after: Duration) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let released = Arc::new(AtomicBool::new(false));
    let thread = {
        let (gate, released) = (gate.clone(), released.clone());
        std::thread::spawn(move || {
            std::thread::sleep(after);
            released.store(true, Ordering::SeqCst);
            gate.release();
        })
    };
    (thread, released)
}

#[test]
fn an_open_does_not_wait_for_the_replayed_segments_but_a_durable_write_does() {
    let dir = unique_dir("open-sync");
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    let replayed = write_then_kill(&fs, &dir, &mut model, 40);
    assert!(replayed.len() >= 2, "the kill left {replayed:?}");

    let gate = Gate::holding(replayed.clone());
    // Only a safety net: an open that waited for the held syncs returns
    // after this, and the check below fails instead of the test hanging.
    let (safety, released) = release_later(&gate, Duration::from_secs(20));
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
    let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
    assert!(
        !released.load(Ordering::SeqCst) && gate.synced().is_empty(),
        "the open waited for the replayed segments' syncs: {:?}",
        gate.synced()
    );
    model.check_all(&db).unwrap();

    // A durable write: held until the gate opens, then the replayed
    // segments are synced, oldest first, before the new one.
    let (opener, _) = release_later(&gate, Duration::from_millis(50));
    let (batch, commit) = put(1000);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    opener.join().unwrap();
    let synced = gate.synced();
    let replayed_order: Vec<String> = replayed.iter().cloned().collect();
    assert!(
        synced.len() > replayed_order.len() && synced[..replayed_order.len()] == replayed_order[..],
        "syncs {synced:?}, replayed {replayed_order:?}"
    );
    assert!(!replayed.contains(&synced[replayed_order.len()]));

    // Everything up to the durable write survives a power cut.
    fs.power_cut(PowerCut::drop_unsynced());
    let _ = db.close();
    drop(db);
    drop(safety);
    fs.restart();
    let db = Database::open_with(&dir, options(fs.shared(), 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    db.close().unwrap();
}

/// Cuts the power under `db` with seed `seed`'s cut, then `release` lets
/// what the test held run (against the dead disk, so it fails). The
/// reopen must hold a prefix of the commits, and be writable and
/// consistent across a clean reopen. Returns how many commits the cut lost.
fn cut_reopen_write_and_reopen(
    fs: &PowerLossFs,
    dir: &Path,
    db: Database,
    model: &mut Model,
    seed: u64,
    release: impl FnOnce(),
) -> usize {
    let cut = cut_for_seed(seed);
    fs.power_cut(cut);
    release();
    let _ = db.close();
    drop(db);
    fs.restart();
    let what = format!("seed {seed}, {cut:?}");
    let db = Database::open_with(dir, options(fs.shared(), 1 << 20))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", fs.trace().join("\n")));
    settle_then_write_and_reopen(
        db,
        model,
        put(10_000 + seed),
        || Database::open_with(dir, options(fs.shared(), 1 << 20)).unwrap(),
        &what,
    )
}

/// A power cut while the replayed segments' syncs are held, with unsynced
/// writes in the open's new segment: every image opens to a prefix in
/// commit order, and across seeds some cut loses bytes of a replayed
/// segment (so the predecessor rule, not luck, is what opened them).
#[test]
fn a_power_cut_before_the_replayed_segments_were_synced() {
    const SEEDS: u64 = 36;
    let mut lost_any = 0;
    for seed in 0..SEEDS {
        let dir = unique_dir("open-sync-cut");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        let replayed = write_then_kill(&fs, &dir, &mut model, 10 + seed % 20);
        let gate = Gate::holding(replayed);
        // A safety net only: an engine whose open waited for the held
        // syncs would otherwise hang here.
        let _ = release_later(&gate, Duration::from_secs(20));
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
        let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
        for n in 0..seed % 7 {
            let (batch, commit) = put(500 + n);
            db.write_with(batch, WriteOptions::sync(false)).unwrap();
            model.commit(commit, false);
        }
        // The held syncs and flush run against the dead disk and fail.
        let lost = cut_reopen_write_and_reopen(&fs, &dir, db, &mut model, seed, || gate.release());
        lost_any += u64::from(lost > 0);
    }
    assert!(lost_any > 0, "no power cut lost a write");
}

/// Bit rot in a replayed segment after the open's background sync of it
/// finished (and a durable write recorded that): the next open reports
/// Corruption instead of dropping the acknowledged durable write with a
/// "lost tail".
#[test]
fn rot_in_a_replayed_segment_after_its_background_sync_is_corruption() {
    let dir = unique_dir("open-sync-rot");
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    let replayed = write_then_kill(&fs, &dir, &mut model, 40);
    let last = replayed.iter().next_back().unwrap().clone();

    // Syncs run freely; tables stay held, so the flush does not delete
    // the replayed segments before the rot.
    let mut gate = Gate::holding(BTreeSet::new());
    gate.tables = Some(gates::Gate::default());
    gate.release();
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
    let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
    let (batch, _) = put(2000);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    fs.kill();
    gate.release_tables();
    let _ = db.close();
    drop(db);
    fs.restart();

    let path = dir.join(&last);
    let disk = fs.shared();
    let mut bytes = disk.read(&path).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
    bytes[end - 1] ^= 0x10;
    let mut file = disk.create(&path).unwrap();
    file.append(&bytes).unwrap();
    file.sync_data().unwrap();
    drop(file);
    match Database::open_with(&dir, options(fs.shared(), 1 << 20)) {
        Ok(db) => panic!(
            "the open succeeded (dropped tail: {:?}); key{:03} present: {}",
            db.stats().recovery.dropped_tail,
            2000 % 64,
            db.get(format!("key{:03}", 2000 % 64)).unwrap().is_some()
        ),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption, "{e}"),
    }
}

/// The manifest CURRENT names.
fn current(fs: &PowerLossFs, dir: &Path) -> String {
    String::from_utf8(fs.shared().read(&dir.join("CURRENT")).unwrap()).unwrap()
}

/// A gate that lets WAL syncs run and holds the open's manifest switch.
fn holding_the_switch() -> Gate {
    let mut gate = Gate::holding(BTreeSet::new());
    gate.manifests = Some(gates::Gate::default());
    gate.release();
    gate
}

/// The open returns before its manifest switch (which the maintenance
/// thread makes first thing), and a durable write acknowledged before the
/// switch survives a power cut that drops everything unsynced: the commit
/// syncs the directory itself, so the open's new WAL segment is found.
/// (Without `Engine::ensure_names_durable` in the commit path the cut
/// loses the segment's name and this fails.)
#[test]
fn a_durable_write_before_the_open_s_manifest_switch_survives_a_power_cut() {
    let dir = unique_dir("open-switch");
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    write_then_kill(&fs, &dir, &mut model, 40);
    let before = current(&fs, &dir);

    let gate = holding_the_switch();
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
    let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(current(&fs, &dir), before, "the switch ran while held");

    let (batch, commit) = put(1000);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    assert_eq!(current(&fs, &dir), before);

    fs.power_cut(PowerCut::drop_unsynced());
    gate.release_manifests();
    let _ = db.close();
    drop(db);
    fs.restart();
    let db = Database::open_with(&dir, options(fs.shared(), 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    db.close().unwrap();
}

/// Power cuts of every kind while the open's manifest switch is held, after
/// a mix of durable and unsynced writes: every image opens to a prefix in
/// commit order that includes every write acknowledged as durable, and the
/// database is writable and consistent after a clean reopen.
#[test]
fn power_cuts_before_the_open_s_manifest_switch_keep_every_durable_write() {
    const SEEDS: u64 = 24;
    for seed in 0..SEEDS {
        let dir = unique_dir("open-switch-cut");
        let fs = fresh_disk(&dir);
        let mut model = Model::default();
        write_then_kill(&fs, &dir, &mut model, 10 + seed % 20);
        let gate = holding_the_switch();
        let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
        let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
        for n in 0..1 + seed % 5 {
            let durable = (seed + n) % 3 == 0;
            let (batch, commit) = put(500 + n);
            db.write_with(batch, WriteOptions::sync(durable)).unwrap();
            model.commit(commit, durable);
        }
        cut_reopen_write_and_reopen(&fs, &dir, db, &mut model, seed, || gate.release_manifests());
    }
}

/// A kill before the open's manifest switch ran (writes after the open
/// only in the page cache), then an open that is killed again at once, then
/// a third open: nothing acknowledged is lost, and the manifest a switch
/// never finished is not left behind once the last open's switch ran.
#[test]
fn kills_before_and_right_after_a_reopen_lose_nothing() {
    let dir = unique_dir("open-switch-kill");
    let fs = fresh_disk(&dir);
    let mut model = Model::default();
    write_then_kill(&fs, &dir, &mut model, 30);

    let gate = holding_the_switch();
    let wrapped = Arc::new(WrappedFs::new(fs.shared(), gate.clone()));
    let db = Database::open_with(&dir, options(wrapped, 1 << 20)).unwrap();
    for n in 0..5 {
        let (batch, commit) = put(700 + n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
    }
    fs.kill();
    gate.release_manifests();
    let _ = db.close();
    drop(db);
    fs.restart();

    // Killed right after it returned: its switch may or may not have run.
    let db = Database::open_with(&dir, options(fs.shared(), 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    fs.kill();
    let _ = db.close();
    drop(db);
    fs.restart();

    let db = Database::open_with(&dir, options(fs.shared(), 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    let (batch, commit) = put(900);
    db.write_with(batch, WriteOptions::sync(true)).unwrap();
    model.commit(commit, true);
    fs.power_cut(PowerCut::drop_unsynced());
    let _ = db.close();
    drop(db);
    fs.restart();
    let db = Database::open_with(&dir, options(fs.shared(), 1 << 20)).unwrap();
    model.check_all(&db).unwrap();
    db.close().unwrap();
    let manifests = fs
        .shared()
        .list(&dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("MANIFEST-"))
        .count();
    assert_eq!(manifests, 1, "{:?}", fs.shared().list(&dir).unwrap());
}
