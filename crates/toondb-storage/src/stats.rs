//! Engine counters and the `Stats` snapshot returned by `Database::stats`.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::key::Timestamp;
use crate::lsm::NUM_LEVELS;
use crate::wal::ReplayReport;

/// Monotonic counters updated by the engine's threads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub commits: AtomicU64,
    pub commit_groups: AtomicU64,
    pub wal_bytes_written: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub write_stalls: AtomicU64,
    pub write_slowdowns: AtomicU64,
    pub write_stall_micros: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_bytes_written: AtomicU64,
    pub checkpoints: AtomicU64,
    pub checkpoint_bytes_written: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    pub conflicts: AtomicU64,
    pub compactions: AtomicU64,
    pub trivial_moves: AtomicU64,
    pub compaction_errors: AtomicU64,
    pub compaction_bytes_read: AtomicU64,
    pub compaction_bytes_written: AtomicU64,
    /// Per output level: bytes of shallower tables compacted (or moved)
    /// into it, and bytes compactions wrote into it.
    pub level_moved_in: [AtomicU64; NUM_LEVELS],
    pub level_written: [AtomicU64; NUM_LEVELS],
    /// The read counters of tables compaction replaced, taken when they
    /// left the live set, so the totals in `Stats` never go backwards.
    pub retired_table_bytes_read: AtomicU64,
    pub retired_data_blocks_read: AtomicU64,
    pub retired_bloom_checked: AtomicU64,
    pub retired_bloom_useful: AtomicU64,
    pub retired_hash_checked: AtomicU64,
    pub retired_hash_useful: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// A point-in-time view of the engine, for monitoring and tests.
/// One level: its tables now, and what compactions into it cost since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LevelStats {
    pub tables: u64,
    pub bytes: u64,
    /// Bytes of shallower-level tables that compactions (and trivial
    /// moves) brought into this level.
    pub compacted_in: u64,
    /// Bytes compactions wrote into this level (the merged result of those
    /// tables and the overlapping tables already here).
    pub compaction_bytes_written: u64,
}

impl LevelStats {
    /// Bytes written per byte brought in from above: the write
    /// amplification of the pass into this level (0 if none ran).
    pub fn write_amplification(&self) -> f64 {
        if self.compacted_in == 0 {
            return 0.0;
        }
        self.compaction_bytes_written as f64 / self.compacted_in as f64
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Newest commit timestamp visible to new readers.
    pub visible_ts: Timestamp,
    /// Bytes (estimated) in the active memtable.
    pub memtable_bytes: u64,
    /// Sealed memtables waiting to be flushed.
    pub immutable_memtables: u64,
    /// Address space the memtables' point indexes map (active and sealed):
    /// one 8-byte slot per 64 bytes of `memtable_size` each, 4 MiB for the
    /// default 32 MiB. The kernel commits it page by page as keys hash
    /// there, so it becomes resident as a memtable fills.
    pub memtable_index_bytes: u64,
    /// Live table files and their total size.
    pub tables: u64,
    pub table_bytes: u64,
    /// Per level (index = level, 0 first): tables and bytes.
    pub levels: Vec<LevelStats>,
    /// Estimated bytes compaction still has to rewrite to bring every level
    /// under its threshold (docs/compaction.md); writes slow down and stop
    /// on it.
    pub pending_compaction_bytes: u64,
    /// Compactions that merged tables, and trivial moves (a table moved
    /// one level down by a manifest edit alone), since open.
    pub compactions: u64,
    pub trivial_moves: u64,
    /// Compactions that failed (their outputs were deleted; the database
    /// was unchanged), and the last failure while it is unresolved.
    pub compaction_errors: u64,
    pub compaction_error: Option<String>,
    /// Table bytes read and written by compactions since open.
    pub compaction_bytes_read: u64,
    pub compaction_bytes_written: u64,
    /// Estimated bytes of live data in tables: the tables whose key range
    /// no older table overlaps (overlapping ones are assumed to hold newer
    /// copies of keys already counted). Exact after `compact()` with no
    /// snapshot held.
    pub live_bytes_estimate: u64,
    /// The maintenance thread is flushing or compacting, or has such work
    /// due (false only while it has nothing to do; point reads can make a
    /// compaction of level 0 due, docs/compaction.md): with no sealed
    /// memtables, false means every table file in the directory is in the
    /// manifest.
    pub maintenance_busy: bool,
    /// WAL segments whose fdatasync runs in the background and has not
    /// returned yet: a segment the commit thread moved on from (a memtable
    /// seal or a WAL rotation), or the segments an open replayed (synced
    /// after the open returned). Counted from before the sync is handed to
    /// its thread until it returned, whether it succeeded or not: a failed
    /// one counts no more, and the commit that next waits for it (a
    /// durable write, a close, a seal with several in flight) fails with
    /// its error, which stops writes (`background_error`). Not part of
    /// `maintenance_busy` (no flush or compaction); with this 0,
    /// `maintenance_busy` false and no sealed memtable, no background work
    /// that writes or syncs files is left.
    pub pending_wal_syncs: u64,
    /// Bytes of table data blocks read since open: by gets, scans,
    /// transaction conflict checks and compaction inputs.
    pub table_bytes_read: u64,
    /// Data blocks loaded, point lookups that consulted a table's bloom
    /// filter, and those the filter answered "absent" (a data block read
    /// saved), since open. Like `table_bytes_read`, they include the reads
    /// of transaction conflict checks and of compaction inputs; reads of a
    /// table after compaction replaced it (by an older iterator) are not
    /// counted.
    pub data_blocks_read: u64,
    pub bloom_checked: u64,
    pub bloom_useful: u64,
    /// Point lookups that consulted a table's hash index (those its bloom
    /// filter let through), and those it answered "absent" without reading
    /// a data block, since open; counted like `bloom_checked`.
    pub hash_index_checked: u64,
    pub hash_index_useful: u64,
    /// Commits applied, and the groups they were written in (one WAL write each).
    pub commits: u64,
    pub commit_groups: u64,
    pub wal_bytes_written: u64,
    /// fdatasync calls on the WAL; `wal_syncs / commits` is fsyncs per commit.
    pub wal_syncs: u64,
    /// Commit groups delayed (1 ms each) because the flush backlog was one
    /// memtable short of a stall.
    pub write_slowdowns: u64,
    /// Times writers waited for a flush, and for how long in total.
    pub write_stalls: u64,
    pub write_stall_micros: u64,
    /// Memtables flushed to table files since open.
    pub flushes: u64,
    pub flush_bytes_written: u64,
    /// WAL segments checkpointed into tables since open (each rotated at
    /// `Options::wal_size_limit`, or the last segment of a memtable sealed
    /// when full), the bytes of those tables, and the
    /// checkpoints that failed before their manifest edit (the segment
    /// then stays until its memtable's flush; nothing is lost).
    pub checkpoints: u64,
    pub checkpoint_bytes_written: u64,
    pub checkpoint_errors: u64,
    /// Checkpoint tables now on disk (the WAL of unflushed memtables, the
    /// live one and sealed ones waiting for their flush, in table form,
    /// for the next open; not read while this one runs).
    pub checkpoint_tables: u64,
    /// Transaction commits rejected with `Conflict`.
    pub conflicts: u64,
    /// Range tombstones that reads apply (the memtables' and the tables'),
    /// and the tree nodes allocated to index them (range_del.rs): about
    /// one per tombstone when each new one covers the older ones (the
    /// "expire everything below a cutoff" pattern), O(log n) per tombstone
    /// that cuts an older one; a measure of the work and memory range
    /// deletes cost, not of their count alone.
    pub range_tombstones: u64,
    pub range_del_tree_nodes: u64,
    /// Live snapshots and transactions, and the oldest read timestamp
    /// among them (a long-lived one pins old versions: a leak shows here).
    pub live_snapshots: u64,
    pub oldest_snapshot_ts: Option<Timestamp>,
    /// What the WAL replay at open found.
    pub recovery: ReplayReport,
    /// The background error that stopped writes, if any.
    pub background_error: Option<String>,
    /// The block cache (`Options::cache_size`; all zero without one).
    pub block_cache: crate::BlockCacheStats,
    /// Table files open (mapped) now, and lookups of a table that found it
    /// open or had to open it (`Options::max_open_files`).
    pub open_tables: u64,
    pub table_cache_hits: u64,
    pub table_cache_misses: u64,
}

impl Counters {
    pub fn fill(&self, s: &mut Stats) {
        s.commits = get(&self.commits);
        s.commit_groups = get(&self.commit_groups);
        s.wal_bytes_written = get(&self.wal_bytes_written);
        s.wal_syncs = get(&self.wal_syncs);
        s.write_stalls = get(&self.write_stalls);
        s.write_slowdowns = get(&self.write_slowdowns);
        s.write_stall_micros = get(&self.write_stall_micros);
        s.flushes = get(&self.flushes);
        s.flush_bytes_written = get(&self.flush_bytes_written);
        s.checkpoints = get(&self.checkpoints);
        s.checkpoint_bytes_written = get(&self.checkpoint_bytes_written);
        s.checkpoint_errors = get(&self.checkpoint_errors);
        s.conflicts = get(&self.conflicts);
        s.compactions = get(&self.compactions);
        s.trivial_moves = get(&self.trivial_moves);
        s.compaction_errors = get(&self.compaction_errors);
        s.compaction_bytes_read = get(&self.compaction_bytes_read);
        s.compaction_bytes_written = get(&self.compaction_bytes_written);
    }
}

impl Stats {
    /// Table bytes written (flushes plus compactions) per byte flushed:
    /// how many times, on average, compaction has rewritten each flushed
    /// byte, plus one. The WAL adds about one more write of every byte
    /// (`wal_bytes_written`). 0 before the first flush.
    pub fn write_amplification(&self) -> f64 {
        if self.flush_bytes_written == 0 {
            return 0.0;
        }
        (self.flush_bytes_written + self.compaction_bytes_written) as f64
            / self.flush_bytes_written as f64
    }

    /// Table bytes per estimated live byte (1.0 = no garbage; 0 with no
    /// tables).
    pub fn space_amplification(&self) -> f64 {
        if self.live_bytes_estimate == 0 {
            return 0.0;
        }
        self.table_bytes as f64 / self.live_bytes_estimate as f64
    }
}
