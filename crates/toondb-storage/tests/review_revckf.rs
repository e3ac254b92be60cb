//! Review of branch `ckflush` (WAL checkpoints while a sealed memtable
//! waits for or is in its flush): fresh-context probes, each a test.
//!
//! The central invariant: level 0 is ordered by file number at open, so in
//! every manifest state that can ever be on disk, level-0 tables sorted by
//! number must hold strictly increasing commit-timestamp ranges (a table
//! with a higher number never holds an older write than one with a lower
//! number). `check_manifest_history` decodes every edit of the live
//! manifest (every intermediate state a power cut could leave) and checks
//! that, plus `log_number` never moving back. The workloads make sealed
//! memtables wait behind slow table syncs, so checkpoints of newer
//! memtables run while older ones wait for or are in their flush, then
//! kill or cut the power at arbitrary moments and reopen against a model
//! (with `get` cross-checked against a scan, before and after `compact`).
//!
//! Outcomes (review revckf):
//! - defect, fixed: with checkpoints off (`wal_size_limit` u64::MAX,
//!   `walSizeLimit: Infinity`) a seal still queued its tail, so every
//!   memtable was written twice and `checkpoints` counted them
//!   (`checkpoints_off_means_no_checkpoints_at_a_seal`);
//! - disproven (kept as regression tests): level-0 order or log_number
//!   broken by a kill or power cut at any point with one to five sealed
//!   memtables waiting, range deletes included; a failed table creation or
//!   manifest sync anywhere in a checkpoint chain across memtables;
//!   `Database::flush` racing load seals; manifest rewrites during a flush
//!   with a reserved number; orphans at open; clean closes with work
//!   pending; verify and backup during it; exact stats; maintenance_busy
//!   going false.

mod powerloss_support;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use toondb_storage::io::{FileSystem, PowerCut, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use powerloss_support::{fresh_disk, unique_dir, Commit, Model};
use support::wait_idle_seen;

// ---------------------------------------------------------------------
// Manifest decoding (docs/format-manifest.md), independent of the engine.
// ---------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Table {
    level: u64,
    min_ts: u64,
    max_ts: u64,
}

#[derive(Debug, Clone, Default)]
struct State {
    tables: BTreeMap<u64, Table>,
    log_number: u64,
    next_file_number: u64,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*pos).ok_or("varint runs past the end")?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".to_owned())
}

fn skip_bytes(b: &[u8], pos: &mut usize) -> Result<(), String> {
    let n = varint(b, pos)? as usize;
    *pos += n;
    if *pos > b.len() {
        return Err("byte string runs past the end".to_owned());
    }
    Ok(())
}

/// Every state of the manifest CURRENT names, one per complete edit
/// (the first is the snapshot the manifest starts with).
fn manifest_states(fs: &dyn FileSystem, dir: &Path) -> Result<(String, Vec<State>), String> {
    let current = fs.read(&dir.join("CURRENT")).map_err(|e| e.to_string())?;
    let name = std::str::from_utf8(&current)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or("CURRENT is not a name plus newline")?
        .to_owned();
    let bytes = fs.read(&dir.join(&name)).map_err(|e| e.to_string())?;
    let mut state = State::default();
    let mut states = Vec::new();
    let mut pos = 16;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > bytes.len() {
            break;
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        let mut p = 0;
        while p < payload.len() {
            match varint(payload, &mut p)? {
                1 => {
                    let n = varint(payload, &mut p)?;
                    let level = varint(payload, &mut p)?;
                    varint(payload, &mut p)?; // file size
                    varint(payload, &mut p)?; // entries
                    skip_bytes(payload, &mut p)?;
                    skip_bytes(payload, &mut p)?;
                    let min_ts = varint(payload, &mut p)?;
                    let max_ts = varint(payload, &mut p)?;
                    state.tables.insert(
                        n,
                        Table {
                            level,
                            min_ts,
                            max_ts,
                        },
                    );
                }
                2 => {
                    let n = varint(payload, &mut p)?;
                    state.tables.remove(&n);
                }
                3 => state.log_number = varint(payload, &mut p)?,
                4 => state.next_file_number = varint(payload, &mut p)?,
                5 => {
                    varint(payload, &mut p)?;
                }
                tag => return Err(format!("unknown manifest tag {tag}")),
            }
        }
        states.push(state.clone());
        pos += 8 + len;
    }
    Ok((name, states))
}

/// Checks every state of the live manifest: level 0 by number holds
/// strictly increasing timestamp ranges, every table is below
/// `next_file_number`, and `log_number` never moves back (also not below
/// `floor`, the last log number seen before: from its first state in a
/// manifest not seen before, at its last state in the same one). Returns
/// the manifest's name and its last log number.
fn check_manifest_history(
    fs: &dyn FileSystem,
    dir: &Path,
    floor: (String, u64),
) -> Result<(String, u64), String> {
    let (name, states) = manifest_states(fs, dir)?;
    let same = name == floor.0;
    if same && states.last().map_or(0, |s| s.log_number) < floor.1 {
        return Err(format!(
            "{name}: log_number moved back from {} to {:?}",
            floor.1,
            states.last().map(|s| s.log_number)
        ));
    }
    let mut last_log = if same { 0 } else { floor.1 };
    for (i, s) in states.iter().enumerate() {
        if s.log_number < last_log {
            return Err(format!(
                "{name} edit {i}: log_number moved back from {last_log} to {}",
                s.log_number
            ));
        }
        last_log = s.log_number;
        let l0: Vec<(&u64, &Table)> = s.tables.iter().filter(|(_, t)| t.level == 0).collect();
        for pair in l0.windows(2) {
            let ((na, a), (nb, b)) = (pair[0], pair[1]);
            if a.max_ts >= b.min_ts {
                return Err(format!(
                    "{name} edit {i}: level-0 table {na} (ts {}..={}) is below table {nb} \
                     (ts {}..={}) but not older; level 0: {:?}",
                    a.min_ts, a.max_ts, b.min_ts, b.max_ts, l0
                ));
            }
        }
        if let Some((&n, _)) = s.tables.iter().next_back() {
            if s.next_file_number != 0 && n >= s.next_file_number {
                return Err(format!(
                    "{name} edit {i}: table {n} at or above next_file_number {}",
                    s.next_file_number
                ));
            }
        }
    }
    Ok((name, last_log))
}

// ---------------------------------------------------------------------
// Slow table syncs: sealed memtables wait, checkpoints pile up behind.
// ---------------------------------------------------------------------

#[derive(Clone)]
struct SlowTables {
    delay: Duration,
    /// Table creations that fail while > 0 (counts down; fails the one
    /// that takes it to 0 if `fail_at` is armed).
    fail_at: Arc<AtomicU64>,
    created: Arc<AtomicU64>,
    /// Manifest syncs: fail the one numbered `manifest_fail_at` (1-based).
    manifest_syncs: Arc<AtomicU64>,
    manifest_fail_at: Arc<AtomicU64>,
    fired: Arc<AtomicBool>,
}

impl SlowTables {
    fn new(delay: Duration) -> Self {
        SlowTables {
            delay,
            fail_at: Arc::new(AtomicU64::new(0)),
            created: Arc::new(AtomicU64::new(0)),
            manifest_syncs: Arc::new(AtomicU64::new(0)),
            manifest_fail_at: Arc::new(AtomicU64::new(0)),
            fired: Arc::new(AtomicBool::new(false)),
        }
    }
}

fn is_table(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sst")
}

fn is_manifest(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("MANIFEST-"))
}

impl WriteHook for SlowTables {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if is_table(path) {
            let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fail_at.load(Ordering::SeqCst) == n {
                self.fired.store(true, Ordering::SeqCst);
                return Err(toondb_storage::Error::new(
                    toondb_storage::ErrorKind::Io,
                    "injected: table creation fails",
                ));
            }
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if is_table(path) {
            Box::new(Slow {
                inner: file,
                delay: self.delay,
                manifest: None,
            })
        } else if is_manifest(path) {
            Box::new(Slow {
                inner: file,
                delay: Duration::ZERO,
                manifest: Some(self.clone()),
            })
        } else {
            file
        }
    }
}

struct Slow {
    inner: Box<dyn WritableFile>,
    delay: Duration,
    manifest: Option<SlowTables>,
}

impl WritableFile for Slow {
    fn append(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.inner.append(data)
    }
    fn sync_data(&mut self) -> toondb_storage::Result<()> {
        if let Some(h) = &self.manifest {
            let n = h.manifest_syncs.fetch_add(1, Ordering::SeqCst) + 1;
            if h.manifest_fail_at.load(Ordering::SeqCst) == n {
                h.fired.store(true, Ordering::SeqCst);
                return Err(toondb_storage::Error::new(
                    toondb_storage::ErrorKind::Io,
                    "injected: manifest sync fails",
                ));
            }
        }
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.inner.sync_data()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

// ---------------------------------------------------------------------
// Workload
// ---------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const KEYS: u64 = 40;

fn key(i: u64) -> Vec<u8> {
    format!("key{i:03}").into_bytes()
}

fn val(i: u64, gen: u64, len: u64) -> Vec<u8> {
    format!("v{i}-g{gen}-{}", "x".repeat(len as usize)).into_bytes()
}

fn opts_on(fs: Arc<dyn FileSystem>, memtable: usize, segments: u64) -> Options {
    Options::default()
        .memtable_size(memtable)
        .wal_size_limit((memtable as u64 / segments).max(64))
        .max_immutable_memtables(3)
        .block_size(128)
        .fs(fs)
}

/// What the workload saw while it ran.
#[derive(Default, Debug)]
struct Seen {
    /// Samples with a sealed memtable waiting and checkpoint tables.
    sealed_with_checkpoints: u64,
    /// Samples with two or more sealed memtables waiting.
    two_sealed: u64,
    explicit_flushes: u64,
}

/// One op: a batch of 1-3 puts/deletes over a small key set (so newer
/// memtables overwrite and delete what sealed ones hold), now and then a
/// durable write or an explicit flush. Returns false once a write failed.
fn step(db: &Database, model: &mut Model, rng: &mut Rng, gen: u64, seen: &mut Seen) -> bool {
    if rng.next(97) == 0 {
        // Database::flush: Tail::LeaveToFlush, racing the checkpoints.
        seen.explicit_flushes += 1;
        return match db.flush() {
            Ok(()) => {
                model.all_durable();
                true
            }
            Err(_) => false,
        };
    }
    let mut b = WriteBatch::new();
    let mut commit: Commit = Vec::new();
    if rng.next(15) == 0 {
        // A range delete over keys sealed memtables and checkpoint tables
        // hold (it takes effect before the batch's own writes).
        let lo = rng.next(KEYS);
        let hi = (lo + 1 + rng.next(8)).min(KEYS);
        b.delete_range(key(lo), key(hi)).unwrap();
        commit.extend((lo..hi).map(|i| (key(i), None)));
    }
    for _ in 0..1 + rng.next(3) {
        let i = rng.next(KEYS);
        if rng.next(5) == 0 {
            b.delete(key(i)).unwrap();
            commit.push((key(i), None));
        } else {
            let v = val(i, gen, rng.next(120));
            b.put(key(i), &v).unwrap();
            commit.push((key(i), Some(v)));
        }
    }
    let sync = rng.next(13) == 0;
    match db.write_with(b, WriteOptions::sync(sync)) {
        Ok(_) => {
            model.commit(commit, sync);
            true
        }
        Err(_) => {
            model.commit_maybe(commit);
            false
        }
    }
}

fn sample(db: &Database, seen: &mut Seen) {
    let s = db.stats();
    if s.immutable_memtables >= 1 && s.checkpoint_tables > 0 {
        seen.sealed_with_checkpoints += 1;
    }
    if s.immutable_memtables >= 2 {
        seen.two_sealed += 1;
    }
}

/// After a reopen: the model (get cross-checked with a scan), then again
/// after a full compaction.
fn check_reopened(db: &Database, model: &mut Model, power_cut: bool) -> Result<(), String> {
    if power_cut {
        model.settle_power_cut(db)?;
    } else {
        model.check_all(db)?;
    }
    db.compact().map_err(|e| e.to_string())?;
    model
        .check_all(db)
        .map_err(|e| format!("after compact: {e}"))
}

/// Kills (or cuts the power) at arbitrary points of a load whose table
/// syncs are slow, several times in a row, reopening each time.
fn crash_cycles(seed: u64, power_cut: bool, cycles: usize, max_imm: usize) -> Seen {
    let dir = unique_dir(if power_cut {
        "revckf-cut"
    } else {
        "revckf-kill"
    });
    let disk = fresh_disk(&dir);
    let hook = SlowTables::new(Duration::from_millis(2));
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), hook));
    let opts = opts_on(fs.clone(), 4 << 10, 8).max_immutable_memtables(max_imm);
    let mut rng = Rng(seed | 1);
    let mut model = Model::default();
    let mut seen = Seen::default();
    let mut db = Database::open_with(&dir, opts.clone()).unwrap();
    let mut floor = (String::new(), 0);
    let mut gen = 0;
    for cycle in 0..cycles {
        let ops = 20 + rng.next(400);
        for _ in 0..ops {
            gen += 1;
            if !step(&db, &mut model, &mut rng, gen, &mut seen) {
                break;
            }
            if gen % 8 == 0 {
                sample(&db, &mut seen);
            }
            if gen % 64 == 0 {
                // Live reads while sealed memtables wait and checkpoints
                // run: every acknowledged write, get agreeing with a scan.
                let keys = (0..KEYS).map(key).collect();
                let live = powerloss_support::contents(&db, &keys)
                    .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle} live: {e}"));
                assert!(
                    live == model.current(),
                    "seed {seed} cycle {cycle}: live reads differ from the model"
                );
            }
        }
        if power_cut {
            disk.power_cut(PowerCut::random(seed ^ cycle as u64, false));
        } else {
            disk.kill();
        }
        let _ = db.close();
        drop(db);
        disk.restart();
        floor = check_manifest_history(&*fs, &dir, floor)
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}, crash image: {e}"));
        db = Database::open_with(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: reopen failed: {e}"));
        check_reopened(&db, &mut model, power_cut)
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: {e}"));
        // The reopen's manifest starts a new history (its snapshot may
        // set log_number to the first replayed segment, never lower).
        floor = check_manifest_history(&*fs, &dir, floor)
            .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}, reopened: {e}"));
        // Garbage (a reserved flush number the crash left half written,
        // checkpoint tables the crash orphaned) is gone once the reopen's
        // own work is done, and nothing live is missing.
        if cycle % 2 == 0 {
            wait_idle_seen(&db, 3);
            powerloss_support::check_no_orphans(&disk, &dir, Default::default())
                .unwrap_or_else(|e| panic!("seed {seed} cycle {cycle}: {e}"));
        }
    }
    db.close().unwrap();
    seen
}

/// Kills at arbitrary points while sealed memtables wait behind slow
/// table syncs: every acknowledged write is back, `get` agrees with a
/// scan (level-0 order), before and after `compact`, and every manifest
/// state the run wrote keeps level 0 in timestamp order with
/// `log_number` monotonic.
#[test]
fn kills_while_sealed_memtables_wait_reopen_to_the_model() {
    let mut total = Seen::default();
    for seed in 1..=6u64 {
        let seen = crash_cycles(seed * 0x9e37_79b9, false, 6, 3);
        total.sealed_with_checkpoints += seen.sealed_with_checkpoints;
        total.two_sealed += seen.two_sealed;
        total.explicit_flushes += seen.explicit_flushes;
    }
    eprintln!("{total:?}");
    // The states this is about were reached (sampled, so a lower bound).
    assert!(total.sealed_with_checkpoints > 10, "{total:?}");
    assert!(total.two_sealed > 0, "{total:?}");
}

/// One sealed memtable at most (every seal waits for the previous flush),
/// and five.
#[test]
fn kills_with_one_and_with_five_sealed_memtables_allowed() {
    for seed in 1..=3u64 {
        crash_cycles(seed * 0x51ed_2701, false, 5, 1);
        let seen = crash_cycles(seed * 0x6c8e_9cf5, seed % 2 == 0, 5, 5);
        eprintln!("five: {seen:?}");
    }
}

/// The same with power cuts that tear unsynced data at random: the
/// database is the durable state plus a prefix of the rest.
#[test]
fn power_cuts_while_sealed_memtables_wait_reopen_to_a_prefix() {
    for seed in 1..=6u64 {
        crash_cycles(seed * 0x2545_f491, true, 6, 3);
    }
}

/// Which fault a `fault_run` injects.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The n-th table file creation fails (a checkpoint's: counted and
    /// skipped; a flush's: a background error; a compaction's: retried).
    Table(u64),
    /// The n-th manifest sync fails (a background error: the edit may or
    /// may not be on disk).
    ManifestSync(u64),
}

/// A load with slow table syncs and one injected fault, then a clean
/// close and a reopen without faults: nothing acknowledged is lost, get
/// agrees with a scan, every manifest state keeps level 0 in order.
/// Returns whether the fault fired and whether it stopped writes.
fn fault_run(seed: u64, fault: Fault) -> (bool, bool) {
    let dir = unique_dir("revckf-fault");
    let disk = fresh_disk(&dir);
    let hook = SlowTables::new(Duration::from_millis(1));
    match fault {
        Fault::Table(n) => hook.fail_at.store(n, Ordering::SeqCst),
        Fault::ManifestSync(n) => hook.manifest_fail_at.store(n, Ordering::SeqCst),
    }
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), hook.clone()));
    let opts = opts_on(fs.clone(), 4 << 10, 8);
    let mut rng = Rng(seed | 1);
    let mut model = Model::default();
    let mut seen = Seen::default();
    let db = match Database::open_with(&dir, opts.clone()) {
        Ok(db) => db,
        Err(_) => return (true, true), // the open's own manifest sync
    };
    let mut stopped = false;
    for gen in 1..=400 {
        if !step(&db, &mut model, &mut rng, gen, &mut seen) {
            stopped = true;
            break;
        }
    }
    let s = db.stats();
    let fired = hook.fired.load(Ordering::SeqCst);
    if fired && s.background_error.is_none() {
        // Only a checkpoint's or a compaction's table may fail quietly.
        assert!(
            s.checkpoint_errors + s.compaction_errors >= 1,
            "{fault:?}: a fault with no error counted: {s:?}"
        );
    }
    if !fired {
        assert_eq!(s.checkpoint_errors, 0, "{fault:?}");
    }
    stopped |= s.background_error.is_some();
    let _ = db.close();
    drop(db);
    // The same disk, no crash: everything acknowledged must be there.
    let clean = SlowTables::new(Duration::ZERO);
    let fs2: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), clean));
    check_manifest_history(&*fs2, &dir, (String::new(), 0))
        .unwrap_or_else(|e| panic!("{fault:?} seed {seed}: before reopen: {e}"));
    let opts2 = opts_on(fs2.clone(), 4 << 10, 8);
    let db = Database::open_with(&dir, opts2)
        .unwrap_or_else(|e| panic!("{fault:?} seed {seed}: reopen failed: {e}"));
    check_reopened(&db, &mut model, false).unwrap_or_else(|e| panic!("{fault:?} seed {seed}: {e}"));
    check_manifest_history(&*fs2, &dir, (String::new(), 0))
        .unwrap_or_else(|e| panic!("{fault:?} seed {seed}: after reopen: {e}"));
    db.close().unwrap();
    (fired, stopped)
}

/// A failed table creation at every point of a load where checkpoints,
/// flushes (with checkpoints inside them) and compactions interleave
/// across memtables: a checkpoint's failure is counted and loses nothing
/// (the chain across the next memtable waits for the flush), a flush's
/// stops writes and loses nothing.
#[test]
fn a_failed_table_creation_anywhere_in_a_checkpoint_chain_loses_nothing() {
    let (mut fired, mut quiet) = (0, 0);
    for n in 1..=60 {
        let (f, stopped) = fault_run(0x5151 + n, Fault::Table(n));
        fired += u64::from(f);
        quiet += u64::from(f && !stopped);
    }
    eprintln!("fired {fired}, quiet {quiet}");
    assert!(fired >= 50 && quiet >= 10, "fired {fired}, quiet {quiet}");
}

/// A failed manifest sync at every point of the same load.
#[test]
fn a_failed_manifest_sync_anywhere_in_a_checkpoint_chain_loses_nothing() {
    let mut fired = 0;
    for n in 1..=60 {
        fired += u64::from(fault_run(0xabc + n, Fault::ManifestSync(n)).0);
    }
    assert!(fired >= 50, "fired {fired}");
}

/// Counts table creations.
#[derive(Clone, Default)]
struct CountTables(Arc<AtomicU64>);

impl WriteHook for CountTables {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if is_table(path) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if is_table(path) {
            Box::new(Slow {
                inner: file,
                delay: Duration::from_millis(1),
                manifest: None,
            })
        } else {
            file
        }
    }
}

/// Writers on three threads and a fourth calling `Database::flush` (its
/// seal leaves the tail to the flush) while seals during the load queue
/// theirs: the engine goes idle (maintenance_busy not stuck), the stats
/// add up exactly (every table created is a checkpoint's or a flush's;
/// with compaction off, the level tables are the flushes' bytes; the
/// files on disk are the level and checkpoint tables), and a kill image
/// reopens to every thread's last writes, before and after compact.
#[test]
fn explicit_flushes_racing_load_seals_and_checkpoints() {
    let dir = unique_dir("revckf-race");
    let disk = fresh_disk(&dir);
    let count = CountTables::default();
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), count.clone()));
    let opts = opts_on(fs.clone(), 8 << 10, 8).auto_compaction(false);
    let db = Database::open_with(&dir, opts.clone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = std::thread::scope(|s| {
        let flusher = {
            let (db, stop) = (&db, stop.clone());
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    db.flush().unwrap();
                    n += 1;
                    std::thread::sleep(Duration::from_millis(3));
                }
                n
            })
        };
        let writers: Vec<_> = (0..3u64)
            .map(|t| {
                let db = &db;
                s.spawn(move || {
                    let mut rng = Rng(0x1234_5678 + t);
                    for gen in 0..1500u64 {
                        let i = rng.next(30);
                        let k = format!("t{t}-{i:02}").into_bytes();
                        let mut b = WriteBatch::new();
                        if gen % 11 == 3 {
                            b.delete(&k).unwrap();
                        } else {
                            b.put(&k, val(i, gen, rng.next(90))).unwrap();
                        }
                        db.write_with(b, WriteOptions::sync(gen % 97 == 0)).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        flusher.join().unwrap()
    });
    // The model: each thread's own keys, replayed deterministically.
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for t in 0..3u64 {
        let mut rng = Rng(0x1234_5678 + t);
        for gen in 0..1500u64 {
            let i = rng.next(30);
            let k = format!("t{t}-{i:02}").into_bytes();
            if gen % 11 == 3 {
                model.remove(&k);
            } else {
                model.insert(k, val(i, gen, rng.next(90)));
            }
        }
    }
    let s = wait_idle_seen(&db, 3);
    assert!(flushes > 5 && s.flushes > 5, "{flushes} flush calls, {s:?}");
    assert!(s.checkpoints > 10, "{s:?}");
    assert_eq!(s.checkpoint_errors, 0);
    assert_eq!(
        count.0.load(Ordering::SeqCst),
        s.checkpoints + s.flushes,
        "every table is a checkpoint's or a flush's: {s:?}"
    );
    assert_eq!(s.table_bytes, s.flush_bytes_written, "{s:?}");
    let ssts = disk
        .list(&dir)
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(".sst"))
        .count() as u64;
    assert_eq!(ssts, s.tables + s.checkpoint_tables, "{s:?}");
    let check = |db: &Database, what: &str| {
        let got: BTreeMap<_, _> = db
            .iter(Default::default())
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert!(got == model, "{what}: the scan differs from the model");
        for t in 0..3u64 {
            for i in 0..30u64 {
                let k = format!("t{t}-{i:02}").into_bytes();
                assert_eq!(db.get(&k).unwrap().as_ref(), model.get(&k), "{what}");
            }
        }
    };
    check(&db, "live");
    disk.kill();
    let _ = db.close();
    drop(db);
    disk.restart();
    check_manifest_history(&*fs, &dir, (String::new(), 0)).unwrap();
    let db = Database::open_with(&dir, opts).unwrap();
    check(&db, "reopened");
    db.compact().unwrap();
    check(&db, "compacted");
    db.close().unwrap();
}

/// Keys of 40 KiB: every table's manifest entry is ~80 KiB, so the
/// manifest passes its 4 MiB rewrite size within a few dozen edits and is
/// rewritten by checkpoints that run inside a flush holding a reserved
/// number (`rewrite_manifest_if_large` in the flush's `between`). Kills at
/// arbitrary points: the rewritten manifest's snapshot and edits keep
/// level 0 in order, the reserved number stays below next_file_number,
/// no orphans once the reopen settles, and the model is intact.
#[test]
fn manifest_rewrites_while_a_flush_with_a_reserved_number_runs() {
    let dir = unique_dir("revckf-rewrite");
    let disk = fresh_disk(&dir);
    let hook = SlowTables::new(Duration::from_millis(3));
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), hook));
    let opts = Options::default()
        .memtable_size(800 << 10)
        .wal_size_limit(100 << 10)
        .max_immutable_memtables(3)
        .fs(fs.clone());
    let big_key = |i: u64| {
        let mut k = format!("{i:02}").into_bytes();
        k.resize(40 << 10, b'k' + (i % 3) as u8);
        k
    };
    let mut rng = Rng(0x7777);
    let mut model = Model::default();
    let mut db = Database::open_with(&dir, opts.clone()).unwrap();
    let mut floor = (String::new(), 0);
    let mut manifests = std::collections::BTreeSet::new();
    let mut gen = 0;
    for cycle in 0..4 {
        for _ in 0..300 + rng.next(200) {
            gen += 1;
            let i = rng.next(12);
            let mut b = WriteBatch::new();
            let commit: Commit = if rng.next(6) == 0 {
                b.delete(big_key(i)).unwrap();
                vec![(big_key(i), None)]
            } else {
                let v = val(i, gen, 50);
                b.put(big_key(i), &v).unwrap();
                vec![(big_key(i), Some(v))]
            };
            match db.write_with(b, WriteOptions::sync(false)) {
                Ok(_) => model.commit(commit, false),
                Err(e) => panic!("cycle {cycle}: {e}"),
            }
            if let Ok((name, _)) = manifest_states(&*fs, &dir) {
                manifests.insert(name);
            }
        }
        disk.kill();
        let _ = db.close();
        drop(db);
        disk.restart();
        floor = check_manifest_history(&*fs, &dir, floor)
            .unwrap_or_else(|e| panic!("cycle {cycle}, crash image: {e}"));
        db = Database::open_with(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        check_reopened(&db, &mut model, false).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        floor = check_manifest_history(&*fs, &dir, floor)
            .unwrap_or_else(|e| panic!("cycle {cycle}, reopened: {e}"));
        wait_idle_seen(&db, 3);
        powerloss_support::check_no_orphans(&disk, &dir, Default::default())
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
    }
    db.close().unwrap();
    eprintln!("manifests: {manifests:?}");
    // Opens make 5 manifests; the rest are rewrites during the load.
    assert!(manifests.len() > 6, "{manifests:?}");
}

/// A clean close while a sealed memtable waits for its flush and newer
/// memtables' segments are checkpoint tables, then a reopen: everything is
/// there and level 0 is in order.
#[test]
fn clean_closes_with_flushes_and_checkpoints_pending() {
    let dir = unique_dir("revckf-close");
    let disk = fresh_disk(&dir);
    let hook = SlowTables::new(Duration::from_millis(4));
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), hook));
    let opts = opts_on(fs.clone(), 4 << 10, 8);
    let mut rng = Rng(0xc105e);
    let mut model = Model::default();
    let mut seen = Seen::default();
    let mut pending_at_close = 0;
    let mut floor = (String::new(), 0);
    let mut gen = 0;
    for cycle in 0..12 {
        let db = Database::open_with(&dir, opts.clone()).unwrap();
        check_reopened(&db, &mut model, false).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        for _ in 0..50 + rng.next(250) {
            gen += 1;
            assert!(step(&db, &mut model, &mut rng, gen, &mut seen));
        }
        let s = db.stats();
        if s.immutable_memtables > 0 && s.checkpoint_tables > 0 {
            pending_at_close += 1;
        }
        db.close().unwrap();
        drop(db);
        model.all_durable();
        floor = check_manifest_history(&*fs, &dir, floor)
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
    }
    eprintln!("closes with work pending: {pending_at_close} of 12");
    assert!(pending_at_close >= 2, "{pending_at_close}");
}

/// `wal_size_limit = u64::MAX` turns WAL checkpoints off (options.rs;
/// index.d.ts: `walSizeLimit: Infinity`): the memtable size bounds the
/// WAL. A seal during a load queued its tail for a checkpoint regardless,
/// so with checkpoints off every memtable was written twice (its whole
/// WAL as a checkpoint table, then its flush), the flush waited behind
/// that checkpoint, and `stats().checkpoints` counted them.
#[test]
fn checkpoints_off_means_no_checkpoints_at_a_seal() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::default()
        .memtable_size(64 << 10)
        .wal_size_limit(u64::MAX)
        .auto_compaction(false);
    let db = Database::open_with(dir.path(), opts.clone()).unwrap();
    for i in 0..4000u64 {
        let mut b = WriteBatch::new();
        b.put(key(i), val(i, 1, 100)).unwrap();
        db.write(b).unwrap();
    }
    let s = wait_idle_seen(&db, 3);
    assert!(s.flushes >= 4, "{s:?}");
    assert_eq!(
        (
            s.checkpoints,
            s.checkpoint_bytes_written,
            s.checkpoint_tables
        ),
        (0, 0, 0),
        "checkpoints ran with walSizeLimit off: {s:?}"
    );
    db.close().unwrap();
    let db = Database::open_with(dir.path(), opts).unwrap();
    for i in (0..4000u64).step_by(37) {
        assert_eq!(db.get(key(i)).unwrap(), Some(val(i, 1, 100)));
    }
    db.close().unwrap();
}

/// `verify` on another thread and backups between writes while sealed
/// memtables wait behind slow table syncs and checkpoints run during
/// their flushes: every verify is clean, and every backup opens to
/// exactly what was acknowledged before it (level-0 order in the backup
/// too), before and after its own compaction.
#[test]
fn verify_and_backup_while_checkpoints_run_behind_flushes() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("db");
    let hook = SlowTables::new(Duration::from_millis(2));
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::os(hook));
    let opts = opts_on(fs, 4 << 10, 8);
    let db = Database::open_with(&dir, opts).unwrap();
    let stop = AtomicBool::new(false);
    let mut model = Model::default();
    let mut seen = Seen::default();
    let mut rng = Rng(0xbac0);
    let mut backups = 0;
    std::thread::scope(|s| {
        let verifier = s.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let report = db.verify().unwrap();
                assert!(report.ok(), "{:?}", report.problems);
                n += 1;
            }
            n
        });
        for gen in 1..=1200u64 {
            assert!(step(&db, &mut model, &mut rng, gen, &mut seen));
            if gen % 8 == 0 {
                sample(&db, &mut seen);
            }
            if gen % 150 == 0 {
                let dest = root.path().join(format!("backup{gen}"));
                db.backup(&dest).unwrap();
                backups += 1;
                let copy = Database::open_with(&dest, Options::default()).unwrap();
                check_manifest_history(
                    &toondb_storage::io::OsFileSystem,
                    &dest,
                    Default::default(),
                )
                .unwrap();
                let mut m = model.clone();
                m.check_all(&copy)
                    .unwrap_or_else(|e| panic!("backup at {gen}: {e}"));
                copy.compact().unwrap();
                m.check_all(&copy)
                    .unwrap_or_else(|e| panic!("backup at {gen}, compacted: {e}"));
                copy.close().unwrap();
            }
        }
        stop.store(true, Ordering::SeqCst);
        assert!(verifier.join().unwrap() > 0);
    });
    assert_eq!(backups, 8);
    assert!(seen.sealed_with_checkpoints > 5, "{seen:?}");
    db.close().unwrap();
}

/// Snapshots taken at many points keep reading exactly the state of their
/// point while later writes seal memtables, checkpoint their segments
/// (tails included) and flush them with reserved numbers, and compaction
/// runs.
#[test]
fn snapshots_stay_put_across_seals_checkpoints_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let hook = SlowTables::new(Duration::from_millis(1));
    let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::os(hook));
    let db = Database::open_with(dir.path(), opts_on(fs, 4 << 10, 8)).unwrap();
    let mut model = Model::default();
    let mut seen = Seen::default();
    let mut rng = Rng(0x5a95);
    let mut snaps = Vec::new();
    for gen in 1..=1500u64 {
        assert!(step(&db, &mut model, &mut rng, gen, &mut seen));
        if gen % 8 == 0 {
            sample(&db, &mut seen);
        }
        if gen % 100 == 0 {
            snaps.push((db.snapshot().unwrap(), model.current()));
        }
        if gen % 250 == 0 {
            for (snap, want) in &snaps {
                for i in 0..KEYS {
                    assert_eq!(
                        snap.get(key(i)).unwrap().as_ref(),
                        want.get(&key(i)),
                        "gen {gen}"
                    );
                }
            }
        }
    }
    db.compact().unwrap();
    for (snap, want) in &snaps {
        for i in 0..KEYS {
            assert_eq!(snap.get(key(i)).unwrap().as_ref(), want.get(&key(i)));
        }
    }
    assert!(seen.sealed_with_checkpoints > 5, "{seen:?}");
    drop(snaps);
    db.close().unwrap();
}

/// A crash armed at the n-th file-system mutation of a load, for n across
/// the whole load (every kind of step of seals, tail checkpoints,
/// checkpoints inside flushes, reserved-number flushes, compactions and
/// manifest edits is hit at some n), alternating kills and random power
/// cuts: the reopen holds an allowed state, level 0 in order in every
/// manifest state, and `get` agrees with a scan before and after compact.
#[test]
fn a_crash_at_the_nth_mutation_of_a_load_with_checkpoints_behind_flushes() {
    use toondb_storage::io::Crash;
    let mut crashed = 0;
    for (round, n) in (40..4000u64).step_by(53).enumerate() {
        let dir = unique_dir("revckf-nth");
        let disk = fresh_disk(&dir);
        let hook = SlowTables::new(Duration::from_millis(1));
        let fs: Arc<dyn FileSystem> = Arc::new(WrappedFs::new(disk.shared(), hook));
        let opts = opts_on(fs.clone(), 4 << 10, 8);
        let mut db = Database::open_with(&dir, opts.clone()).unwrap();
        let power_cut = round % 2 == 1;
        let crash = if power_cut {
            Crash::PowerCut(PowerCut::random(n, false))
        } else {
            Crash::Kill
        };
        disk.crash_after(n, crash);
        let mut rng = Rng(n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut model = Model::default();
        let mut seen = Seen::default();
        for gen in 1..=500 {
            if !step(&db, &mut model, &mut rng, gen, &mut seen) {
                break;
            }
        }
        // Let the background work run into the crash too.
        let deadline = std::time::Instant::now() + Duration::from_millis(300);
        while !disk.is_down() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if !disk.is_down() {
            disk.disarm();
            disk.kill();
        } else {
            crashed += 1;
        }
        let _ = db.close();
        drop(db);
        disk.restart();
        let what = format!("n {n} ({})", if power_cut { "power cut" } else { "kill" });
        check_manifest_history(&*fs, &dir, Default::default())
            .unwrap_or_else(|e| panic!("{what}: crash image: {e}"));
        db = Database::open_with(&dir, opts.clone())
            .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}\n{}", disk.trace().join("\n")));
        check_reopened(&db, &mut model, power_cut).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_manifest_history(&*fs, &dir, Default::default())
            .unwrap_or_else(|e| panic!("{what}: reopened: {e}"));
        db.close().unwrap();
    }
    assert!(crashed > 40, "{crashed} armed crashes fired");
}
