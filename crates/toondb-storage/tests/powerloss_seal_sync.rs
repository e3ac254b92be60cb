//! The sync of a sealed WAL segment runs off the commit thread (WAL format
//! version 3, docs/format-wal.md *New segments*), so a power cut can find
//! an older segment unsynced while a newer one exists. On a
//! [`PowerLossFs`], with that sync (and the flush that would make the
//! segment redundant) held back by a gate until the power is cut, this
//! proves:
//!
//! - every such image opens, and holds a prefix in commit order of the
//!   unsynced writes (the lost tail of the older segment is dropped with
//!   every newer segment, never replayed around a gap);
//! - a durable write in the newer segment waits for the older segment's
//!   sync, so after it nothing before it is lost.

mod powerloss_support;

use std::path::Path;
use std::sync::{Arc, Mutex};

use toondb_storage::io::{Crash, PowerCut, PowerLossFs, WrappedFs, WritableFile, WriteHook};
use toondb_storage::{Database, Options, WriteBatch, WriteOptions};

use powerloss_support::gates;
use powerloss_support::{
    cut_for_seed, fresh_disk, settle_then_write_and_reopen, unique_dir, Commit, Model,
};

/// Memtable size: small, so a few commits seal the memtable.
const LIMIT: u64 = 4096;

/// Holds, until released, every sync of the first WAL segment (the one
/// the first seal hands to the background) once it holds more than its
/// header, and every table creation; logs the WAL syncs that finished.
#[derive(Clone, Default)]
struct Gate {
    open: gates::Gate,
    first: Arc<Mutex<Option<String>>>,
    synced: Arc<Mutex<Vec<String>>>,
}

impl Gate {
    fn wait(&self) {
        self.open.wait();
    }

    fn release(&self) {
        self.open.release();
    }
}

impl WriteHook for Gate {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            self.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            self.first
                .lock()
                .unwrap()
                .get_or_insert_with(|| name.clone());
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
        let held = self.gate.first.lock().unwrap().as_deref() == Some(self.name.as_str());
        if held && self.inner.len() > 16 {
            self.gate.wait();
        }
    }

    fn synced(&self) {
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
        self.synced();
        Ok(())
    }
    fn append_durable(&mut self, data: &[u8]) -> toondb_storage::Result<()> {
        self.before_sync();
        self.inner.append_durable(data)?;
        self.synced();
        Ok(())
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn preallocate(&mut self, len: u64) -> toondb_storage::Result<()> {
        self.inner.preallocate(len)
    }
}

fn gated_options(fs: &PowerLossFs, gate: &Gate) -> Options {
    Options::default()
        .memtable_size(LIMIT as usize)
        .wal_size_limit(u64::MAX)
        .block_size(128)
        .fs(Arc::new(WrappedFs::new(fs.shared(), gate.clone())))
}

/// One put of 100..=199 bytes; `n` keeps keys and values distinct.
fn put(n: u64) -> (WriteBatch, Commit) {
    let key = format!("key{:03}", n % 64).into_bytes();
    let value = vec![b'a' + (n % 26) as u8; 100 + (n * 37 % 100) as usize];
    let mut batch = WriteBatch::new();
    batch.put(&key, &value).unwrap();
    (batch, vec![(key, Some(value))])
}

/// Writes unsynced puts until the memtable was sealed once (its segment's
/// sync is then held by the gate), then `more` puts into the next segment
/// (well under the limit, so no second seal waits for the first).
fn seal_once_then(db: &Database, model: &mut Model, more: u64) -> u64 {
    let mut n = 0;
    // A flush that finishes before the loop looks empties the sealed list:
    // count it as the seal too, or the loop would seal again until writers
    // wait on the held sync.
    let flushes = db.stats().flushes;
    while db.stats().immutable_memtables == 0 && db.stats().flushes == flushes {
        let (batch, commit) = put(n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
        n += 1;
        assert!(n < 1000, "the memtable size never sealed the memtable");
    }
    for _ in 0..more {
        let (batch, commit) = put(n);
        db.write_with(batch, WriteOptions::sync(false)).unwrap();
        model.commit(commit, false);
        n += 1;
    }
    n
}

fn reopen(fs: &PowerLossFs, dir: &Path) -> Database {
    fs.restart();
    let plain = Options::default().block_size(128).fs(fs.shared());
    Database::open_with(dir, plain).unwrap_or_else(|e| {
        panic!(
            "reopen failed: {e}\nrecent operations:\n{}",
            fs.trace().join("\n")
        )
    })
}

/// A power cut while the older segment's sync is held: every image opens
/// and holds a prefix of the commits, and across seeds the cut does lose
/// bytes of the older segment (so the new rule, not luck, is what opened
/// them).
#[test]
fn power_cut_before_a_sealed_segment_was_synced() {
    const SEEDS: u64 = 48;
    let mut older_cut = 0;
    let mut lost_any = 0;
    for seed in 0..SEEDS {
        let dir = unique_dir("seal-sync");
        let fs = fresh_disk(&dir);
        let gate = Gate::default();
        let db = Database::open_with(&dir, gated_options(&fs, &gate)).unwrap();
        let mut model = Model::default();
        seal_once_then(&db, &mut model, seed % 12);
        let cut = cut_for_seed(seed);
        fs.power_cut(cut);
        // The held sync and flush now run against a dead disk and fail.
        gate.release();
        let _ = db.close();
        drop(db);
        let db = reopen(&fs, &dir);
        if let Some(tail) = &db.stats().recovery.dropped_tail {
            if tail.reason.contains("newer segment(s)") {
                older_cut += 1;
            }
        }
        let lost = settle_then_write_and_reopen(
            db,
            &mut model,
            put(10_000 + seed),
            || reopen(&fs, &dir),
            &format!("seed {seed}, {cut:?}"),
        );
        lost_any += u64::from(lost > 0);
    }
    assert!(
        older_cut >= SEEDS / 6,
        "only {older_cut} reopens cut an older segment and dropped the newer ones"
    );
    assert!(lost_any > 0, "no power cut lost a write");
}

/// A durable write right after a seal: it waits for the sealed segment's
/// sync (held until another thread opens the gate), the older segment's
/// sync finishes before the newer one's, and a power cut that drops every
/// unsynced byte loses nothing written before the durable write.
#[test]
fn a_durable_write_waits_for_the_sealed_segment_sync() {
    for more in [0, 3] {
        let dir = unique_dir("seal-sync-durable");
        let fs = fresh_disk(&dir);
        let gate = Gate::default();
        let db = Database::open_with(&dir, gated_options(&fs, &gate)).unwrap();
        let mut model = Model::default();
        let n = seal_once_then(&db, &mut model, more);
        let opener = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                gate.release();
            })
        };
        let (batch, commit) = put(n);
        db.write_with(batch, WriteOptions::sync(true)).unwrap();
        model.commit(commit, true);
        // Checked before the gate can have opened on its own account: only
        // waiting for the held sync lets the durable write return.
        let synced = gate.synced.lock().unwrap().clone();
        opener.join().unwrap();
        let first = gate.first.lock().unwrap().clone().unwrap();
        assert_eq!(
            synced.first(),
            Some(&first),
            "the sealed segment must be synced before the newer one: {synced:?}"
        );
        fs.power_cut(PowerCut::drop_unsynced());
        let _ = db.close();
        drop(db);
        let db = reopen(&fs, &dir);
        let lost = model.settle_power_cut(&db).unwrap();
        assert_eq!(lost, 0, "a write before the durable one was lost");
        db.close().unwrap();
    }
}

/// Holds every table creation until released (so the sealed segment stays
/// needed by replay), lets WAL syncs run, and lists the WAL segments
/// created.
#[derive(Clone, Default)]
struct HoldTables {
    open: gates::Gate,
    wals: Arc<Mutex<Vec<std::path::PathBuf>>>,
}

impl WriteHook for HoldTables {
    fn before_create(&self, path: &Path) -> toondb_storage::Result<()> {
        if path.extension().is_some_and(|e| e == "sst") {
            self.open.wait();
        }
        Ok(())
    }

    fn wrap(&self, path: &Path, file: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        if path.extension().is_some_and(|e| e == "wal") {
            self.wals.lock().unwrap().push(path.to_path_buf());
        }
        file
    }
}

impl HoldTables {
    fn release(&self) {
        self.open.release();
    }
}

/// Releases the held tables when dropped: bound after the database, so a
/// failing assertion releases them before the database's drop waits for
/// the maintenance thread (a failure, not a hang).
struct ReleaseTables(HoldTables);

impl Drop for ReleaseTables {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Whether `bytes` hold a segment-synced record (WAL format 4, kind 4)
/// with a valid checksum: the record that the older segment's sync
/// finished.
fn holds_segment_synced(bytes: &[u8]) -> bool {
    (0..bytes.len().saturating_sub(25)).any(|at| {
        let frame = &bytes[at..at + 25];
        let crc = u32::from_le_bytes(frame[..4].try_into().unwrap());
        frame[4..8] == 17u32.to_le_bytes() && frame[8] == 4 && crc32fast::hash(&frame[4..]) == crc
    })
}

/// Power cuts at each step around the segment-synced record: the older
/// segment's sync runs freely (only the flush is held), then unsynced and
/// durable writes go to the newer segment, the first of its groups after
/// the sync finished carrying the record, and the power goes after the
/// `k`-th file operation from there. Every image opens to a prefix in
/// commit order holding every acknowledged durable write: a surviving
/// record never makes a power cut's damage read as corruption (it only
/// says what was durable), and losing it only leaves the version-3 rule.
#[test]
fn power_cut_around_the_segment_synced_record() {
    const SEEDS: u64 = 48;
    let mut with_record = 0;
    for seed in 0..SEEDS {
        let dir = unique_dir("seal-sync-record");
        let fs = fresh_disk(&dir);
        let hold = HoldTables::default();
        let options = Options::default()
            .memtable_size(LIMIT as usize)
            .wal_size_limit(u64::MAX)
            .block_size(128)
            .fs(Arc::new(WrappedFs::new(fs.shared(), hold.clone())));
        let db = Database::open_with(&dir, options).unwrap();
        let _release = ReleaseTables(hold.clone());
        let mut model = Model::default();
        let first = seal_once_then(&db, &mut model, seed % 3);
        let cut = cut_for_seed(seed);
        fs.crash_after(1 + (seed / 3) % 10, Crash::PowerCut(cut));
        for (i, n) in (first..first + 8).enumerate() {
            let (batch, commit) = put(n);
            let sync = i % 3 == 1;
            match db.write_with(batch, WriteOptions::sync(sync)) {
                Ok(_) => model.commit(commit, sync),
                Err(_) => {
                    model.commit_maybe(commit);
                    break;
                }
            }
        }
        if !fs.is_down() {
            fs.power_cut(cut);
        }
        fs.disarm();
        hold.release();
        let _ = db.close();
        drop(db);
        let newer = hold.wals.lock().unwrap()[1..].to_vec();
        let kept = newer.iter().any(|p| {
            fs.durable_contents(p)
                .as_deref()
                .is_some_and(holds_segment_synced)
        });
        with_record += u64::from(kept);
        let db = reopen(&fs, &dir);
        settle_then_write_and_reopen(
            db,
            &mut model,
            put(10_000 + seed),
            || reopen(&fs, &dir),
            &format!("seed {seed}, {cut:?}"),
        );
    }
    assert!(
        with_record > 0 && with_record < SEEDS,
        "{with_record} of {SEEDS} images kept a segment-synced record: the cuts must land \
         on both sides of it"
    );
}
