//! Shared by the power-loss tests: a database on a [`PowerLossFs`], a model
//! of what each crash may leave, and the on-disk checks after a reopen
//! (orphaned files, manifest consistency).
//!
//! What the engine promises (docs/architecture.md, docs/format-wal.md):
//! - a commit acknowledged with `sync: true` survives a power cut, and so
//!   does every commit before it (a durable WAL append syncs the whole
//!   segment; older segments were synced when the memtable rotated);
//! - `flush()` and a clean `close()` make everything before them durable
//!   (the seal syncs the WAL; close syncs it);
//! - a commit acknowledged with `sync: false` survives a process crash; a
//!   power cut may lose it, but only together with every later commit (the
//!   survivors are a prefix in commit order) and only whole (a batch or a
//!   transaction is atomic).
//!
//! So the model keeps `base` (the state every crash must preserve) and the
//! commits acknowledged since without durability, in order. After a kill
//! the database must equal base + all of them; after a power cut it must
//! equal base + some prefix of them, and that prefix becomes the new base
//! (everything a power cut leaves is on the device, hence durable).

#![allow(dead_code)] // each test file uses a different part of this module

pub mod gates;
pub mod unsynced_edit;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use toondb_storage::io::{FileSystem, PowerCut, PowerLossFs};
use toondb_storage::{Database, Options, ScanOptions, WriteBatch};

pub type Map = BTreeMap<Vec<u8>, Vec<u8>>;
/// One committed batch: key and new value (`None`: deleted), in order.
pub type Commit = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A directory no other test in this process uses: open engines are shared
/// per path in a process-wide registry, so two simulated disks must never
/// use the same path at the same time.
pub fn unique_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    PathBuf::from(format!("/toondb-powerloss/{name}-{n}/db"))
}

/// A fresh disk holding `dir`, made durable the way an application would
/// (mkdir, then fsync every parent), so the test starts from a directory
/// that survives a power cut. The engine creating the directory itself is
/// covered separately (`engine_created_directory_survives_power_cut`).
pub fn fresh_disk(dir: &Path) -> PowerLossFs {
    let fs = PowerLossFs::new();
    fs.create_dir_all(dir).unwrap();
    let mut p = dir.to_path_buf();
    while let Some(parent) = p.parent() {
        fs.sync_dir(parent).unwrap();
        p = parent.to_path_buf();
    }
    fs
}

/// Small memtables and blocks, so memtables rotate and flush on their own,
/// and a WAL size limit of half the memtable, so the live segment is also
/// rotated and checkpointed into a table about once per memtable
/// (maintenance/checkpoint.rs).
pub fn options(fs: &PowerLossFs, memtable_size: usize) -> Options {
    Options::default()
        .memtable_size(memtable_size)
        .wal_size_limit(memtable_size as u64 / 2)
        .block_size(128)
        .fs(fs.shared())
}

/// Waits until no sealed memtable is waiting for the maintenance thread
/// and no WAL segment's background sync is running, so a crash between
/// steps does not land at a random point of a background flush or sync
/// (the step tests cover those points one by one), and a step that ends
/// with this makes the same file-system calls in every run.
pub fn wait_idle(db: &Database) {
    // Idle: no sealed memtable, the maintenance thread waiting for work
    // (it stays busy from a job to the one that job leads to, such as the
    // flush a reopen starts, a compaction after it, or removing obsolete
    // WAL segments) and no sealed or replayed WAL segment still being
    // synced (an open syncs what it replayed after it returned). Seen
    // twice in a row, to be safe.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut idle = 0;
    while idle < 2 {
        let s = db.stats();
        if s.background_error.is_some() {
            return;
        }
        if s.immutable_memtables == 0 && !s.maintenance_busy && s.pending_wal_syncs == 0 {
            idle += 1;
        } else {
            idle = 0;
        }
        assert!(
            Instant::now() < deadline,
            "background work did not finish: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The cut a seeded test uses for `seed`: out-of-order page writeback,
/// random survival (torn writes with garbage for even seeds), or dropping
/// every unsynced byte, in turn.
pub fn cut_for_seed(seed: u64) -> PowerCut {
    match seed % 3 {
        0 => PowerCut::pages(seed),
        1 => PowerCut::random(seed, seed.is_multiple_of(2)),
        _ => PowerCut::drop_unsynced(),
    }
}

/// After a power cut's reopen `db`: the model settles it (`what` names the
/// case in a failure), then one more commit (`write`, unsynced) and a clean
/// close, and `reopen` must find everything. Returns how many commits the
/// cut lost.
pub fn settle_then_write_and_reopen(
    db: Database,
    model: &mut Model,
    write: (WriteBatch, Commit),
    reopen: impl FnOnce() -> Database,
    what: &str,
) -> usize {
    let lost = model
        .settle_power_cut(&db)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    // Writable and consistent after the repair, across a clean reopen.
    let (batch, commit) = write;
    db.write(batch).unwrap();
    model.commit(commit, false);
    db.close().unwrap();
    model.all_durable();
    let db = reopen();
    model
        .check_all(&db)
        .unwrap_or_else(|e| panic!("{what}, after a clean reopen: {e}"));
    db.close().unwrap();
    lost
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    /// What every crash must preserve.
    base: Map,
    /// Acknowledged, not known durable, in commit order.
    pending: Vec<Commit>,
    /// Commits that failed because of a crash: they were never
    /// acknowledged, but their WAL write may have reached the OS (or the
    /// disk), so they may survive; they come after every pending commit.
    maybe: Vec<Commit>,
    /// Every key ever written (deleted keys are checked with `get` too).
    keys: BTreeSet<Vec<u8>>,
}

fn apply(map: &mut Map, commit: &Commit) {
    for (k, v) in commit {
        match v {
            Some(v) => map.insert(k.clone(), v.clone()),
            None => map.remove(k),
        };
    }
}

impl Model {
    /// Records an acknowledged commit; `durable` when it was acknowledged
    /// as synced (which covers every commit before it).
    pub fn commit(&mut self, commit: Commit, durable: bool) {
        self.keys.extend(commit.iter().map(|(k, _)| k.clone()));
        self.pending.push(commit);
        if durable {
            self.all_durable();
        }
    }

    /// Records a commit that failed because of a crash (see `maybe`).
    pub fn commit_maybe(&mut self, commit: Commit) {
        self.keys.extend(commit.iter().map(|(k, _)| k.clone()));
        self.maybe.push(commit);
    }

    /// Everything acknowledged so far is durable (flush, clean close).
    pub fn all_durable(&mut self) {
        for c in std::mem::take(&mut self.pending) {
            apply(&mut self.base, &c);
        }
    }

    /// The state with every acknowledged commit.
    pub fn current(&self) -> Map {
        self.state_after(self.pending.len())
    }

    /// The state after `n` of the pending commits, then the `maybe` ones.
    fn state_after(&self, n: usize) -> Map {
        let mut m = self.base.clone();
        for c in self.pending.iter().chain(&self.maybe).take(n) {
            apply(&mut m, c);
        }
        m
    }

    /// Matches the database against base plus the longest prefix of at
    /// least `min` of the pending-then-maybe commits; the matched ones
    /// become pending (acknowledged now: they are in the database), the
    /// rest are gone.
    fn settle(&mut self, db: &Database, min: usize) -> Result<usize, String> {
        let got = contents(db, &self.keys)?;
        let all = self.pending.len() + self.maybe.len();
        for n in (min..=all).rev() {
            if self.state_after(n) == got {
                let mut seq = std::mem::take(&mut self.pending);
                seq.append(&mut self.maybe);
                seq.truncate(n);
                self.pending = seq;
                return Ok(all - n);
            }
        }
        Err(format!(
            "the database is no allowed prefix of the {} acknowledged and {} \
             maybe-committed commits since the last durable point (at least {min}); \
             against the durable state: {}; against all acknowledged: {}",
            self.pending.len(),
            self.maybe.len(),
            diff(&self.state_after(0), &got),
            diff(&self.state_after(self.pending.len()), &got)
        ))
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// After a process crash (or a clean reopen): nothing acknowledged may
    /// be lost (a commit that failed in the crash may or may not be there).
    pub fn check_all(&mut self, db: &Database) -> Result<(), String> {
        let min = self.pending.len();
        self.settle(db, min)
            .map(drop)
            .map_err(|e| format!("after a crash that loses nothing: {e}"))
    }

    /// After a power cut: the database must hold base plus a prefix of the
    /// pending (and maybe) commits. That prefix becomes the new base (what a
    /// power cut leaves is on the device); the rest is gone for good.
    /// Returns how many commits were lost.
    pub fn settle_power_cut(&mut self, db: &Database) -> Result<usize, String> {
        let lost = self
            .settle(db, 0)
            .map_err(|e| format!("after a power cut: {e}"))?;
        self.all_durable();
        Ok(lost)
    }
}

/// The whole database by a full scan, cross-checked key by key with `get`
/// (which takes a different path through memtables and tables).
pub fn contents(db: &Database, keys: &BTreeSet<Vec<u8>>) -> Result<Map, String> {
    let mut map = Map::new();
    for item in db.iter(ScanOptions::default()).map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        map.insert(k, v);
    }
    for k in keys {
        let got = db.get(k).map_err(|e| e.to_string())?;
        if got.as_ref() != map.get(k) {
            return Err(format!(
                "get({k:?}) = {got:?} but the scan has {:?}",
                map.get(k)
            ));
        }
    }
    Ok(map)
}

fn diff(want: &Map, got: &Map) -> String {
    let mut out = Vec::new();
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing {}", show(k))),
            Some(g) if g != v => out.push(format!("{} = {g:?}, want {v:?}", show(k))),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            out.push(format!("unexpected {} (deleted or never written)", show(k)));
        }
    }
    if out.is_empty() {
        "equal".to_owned()
    } else {
        out.join("; ")
    }
}

/// The manifest state the checks need (docs/format-manifest.md, decoded
/// here independently of the engine's code).
#[derive(Debug, Default)]
pub struct ManifestView {
    pub number: u64,
    pub tables: BTreeSet<u64>,
    pub log_number: u64,
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

/// Reads CURRENT and the manifest it names, applying complete frames only.
pub fn read_manifest(fs: &PowerLossFs, dir: &Path) -> Result<ManifestView, String> {
    let current = fs.read(&dir.join("CURRENT")).map_err(|e| e.to_string())?;
    let name = std::str::from_utf8(&current)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .ok_or("CURRENT is not a name plus newline")?;
    let number: u64 = name
        .strip_prefix("MANIFEST-")
        .and_then(|n| n.parse().ok())
        .ok_or("CURRENT does not name a manifest")?;
    let bytes = fs.read(&dir.join(name)).map_err(|e| e.to_string())?;
    let mut view = ManifestView {
        number,
        ..ManifestView::default()
    };
    let mut pos = 16;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if len == 0 || pos + 8 + len > bytes.len() {
            break; // zeros or a torn append: the end
        }
        let payload = &bytes[pos + 8..pos + 8 + len];
        let crc = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap());
        if crc32(&bytes[pos + 4..pos + 8 + len]) != crc {
            return Err(format!("manifest frame at {pos} fails its checksum"));
        }
        let mut p = 0;
        while p < payload.len() {
            match varint(payload, &mut p)? {
                1 => {
                    let n = varint(payload, &mut p)?;
                    for _ in 0..3 {
                        varint(payload, &mut p)?; // level, file_size, entries
                    }
                    skip_bytes(payload, &mut p)?;
                    skip_bytes(payload, &mut p)?;
                    varint(payload, &mut p)?;
                    varint(payload, &mut p)?;
                    view.tables.insert(n);
                }
                2 => {
                    let n = varint(payload, &mut p)?;
                    view.tables.remove(&n);
                }
                3 => view.log_number = varint(payload, &mut p)?,
                4 | 5 => {
                    varint(payload, &mut p)?;
                }
                tag => return Err(format!("unknown manifest tag {tag}")),
            }
        }
        pos += 8 + len;
    }
    Ok(view)
}

/// CRC-32 (IEEE), bitwise: the tests need no dependency for a few frames.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn numbered(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix)?.parse().ok()
}

/// Which leftovers a check tolerates (known defects, reported separately
/// with their own ignored regression tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tolerate {
    /// MANIFEST files older than the live one.
    pub stale_manifests: bool,
    /// A reopen refused because the manifest's last edit was torn with
    /// garbage (checksum mismatch): the run stops there.
    pub manifest_torn_with_garbage: bool,
}

impl Tolerate {
    /// Whether a failed reopen is the known torn-manifest defect.
    pub fn is_known_reopen_failure(&self, error: &str) -> bool {
        self.manifest_torn_with_garbage
            && error.contains("TOONDB_CORRUPTION: replaying")
            && error.contains("MANIFEST-")
            && error.contains("checksum mismatch")
    }
}

/// Right after an open (before any write could seal a memtable): every
/// table file is live, every live table exists, no WAL segment is below
/// the log number, exactly one manifest (the live one), no CURRENT.tmp,
/// nothing unknown.
pub fn check_no_orphans(fs: &PowerLossFs, dir: &Path, tolerate: Tolerate) -> Result<(), String> {
    let m = read_manifest(fs, dir)?;
    let names = fs.list(dir).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for name in &names {
        if let Some(n) = numbered(name, ".sst") {
            if !m.tables.contains(&n) {
                problems.push(format!("orphaned table {name}"));
            }
        } else if let Some(n) = numbered(name, ".wal") {
            if n < m.log_number {
                problems.push(format!(
                    "obsolete WAL segment {name} (log number {})",
                    m.log_number
                ));
            }
        } else if let Some(n) = name
            .strip_prefix("MANIFEST-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if n != m.number && !(tolerate.stale_manifests && n < m.number) {
                problems.push(format!(
                    "stale manifest {name} (CURRENT names MANIFEST-{:06})",
                    m.number
                ));
            }
        } else if name != "CURRENT" && name != "LOCK" {
            problems.push(format!("stray file {name}"));
        }
    }
    for n in &m.tables {
        if !names.contains(&format!("{n:06}.sst")) {
            problems.push(format!("live table {n:06}.sst is missing"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} (directory: {names:?})", problems.join("; ")))
    }
}

/// Cuts the power under `db`, closes it (its calls now fail), and reopens.
pub fn power_cut_and_reopen(
    fs: &PowerLossFs,
    db: Database,
    dir: &Path,
    cut: PowerCut,
    opts: &Options,
) -> Result<Database, String> {
    fs.power_cut(cut);
    reopen_after_crash(fs, db, dir, opts)
}

/// Kills the process under `db` and reopens.
pub fn kill_and_reopen(
    fs: &PowerLossFs,
    db: Database,
    dir: &Path,
    opts: &Options,
) -> Result<Database, String> {
    fs.kill();
    reopen_after_crash(fs, db, dir, opts)
}

/// The crashed engine is closed (every call fails, which it must survive),
/// then a new process opens the directory.
pub fn reopen_after_crash(
    fs: &PowerLossFs,
    db: Database,
    dir: &Path,
    opts: &Options,
) -> Result<Database, String> {
    let _ = db.close();
    drop(db);
    fs.restart();
    Database::open_with(dir, opts.clone()).map_err(|e| {
        format!(
            "reopen after a crash failed: {e}\nrecent file-system operations:\n{}",
            fs.trace().join("\n")
        )
    })
}
