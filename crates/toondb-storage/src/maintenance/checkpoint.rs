//! The checkpoint job: turn a WAL segment the commit thread rotated away
//! from (it reached `wal_size_limit`) into a level-0 table, move the
//! manifest's WAL checkpoint past the segment, and delete it. The memtable
//! that segment's writes went to stays live and keeps serving them.
//!
//! Why not seal the memtable instead (what the WAL bound used to do): the
//! small flushes that makes cost writers their level-0 → level-1
//! compactions and readers a probe per small table (docs/performance.md,
//! "Reopen: the WAL bound, on or off by default"). A checkpoint table is
//! never read or compacted while the process runs: the memtable holds every
//! version in it, and that memtable's flush (one table, as without the
//! bound) removes the checkpoint tables in the same manifest edit. Only a
//! reopen reads them, as ordinary level-0 tables, instead of the WAL.
//!
//! Order: level 0 is ordered by file number at open, so among the tables
//! that can be in the manifest together, a newer write must be in a table
//! with a higher number. Segments are checkpointed oldest first, each edit
//! moving the manifest's checkpoint (`log_number`) from that segment to
//! the next, so checkpoint tables are numbered in the order of the
//! segments they hold. A sealed memtable's flush table takes the number
//! reserved at its seal (`Memtable::flush_number`), before any segment of
//! a newer memtable was checkpointed, so it is below their tables; its own
//! checkpoint tables, whatever their numbers, leave the manifest in the
//! edit that adds the flush table. That is what lets checkpoints run while
//! a sealed memtable waits for its flush, or during it: the seal queues
//! its last segment too (the tail), so the checkpoint can move past the
//! sealed memtable's WAL and on to the newer memtable's segments. A
//! segment that cannot be checkpointed ends checkpointing until the flush
//! of its memtable covers it: the newer memtable's requests wait for that
//! flush (its edit moves the checkpoint to their first segment), and a
//! request of the same memtable after the gap is dropped.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::flush::{remove_obsolete_wal, rewrite_manifest_if_large, write_versions};
use crate::batch::{RawOp, WriteBatch};
use crate::engine::{Engine, LsmState};
use crate::error::{Error, Result};
use crate::key::{Timestamp, ValueKind};
use crate::lsm::TableFile;
use crate::range_del::RangeTombstone;
use crate::stats::Counters;
use crate::version::{Manifest, VersionEdit};
use crate::wal::SealedSegment;

/// A rotated WAL segment: `memtable` took its writes, they end at `end`,
/// and `next` is the segment the commit thread went on in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CheckpointRequest {
    pub memtable: u64,
    pub segment: u64,
    pub end: u64,
    pub next: u64,
}

/// A checkpoint table and the memtable whose writes it holds (that
/// memtable's flush removes it).
#[derive(Clone)]
pub(crate) struct CheckpointTable {
    pub memtable: u64,
    pub table: Arc<TableFile>,
}

/// The next checkpoint to run, if one may run now. `log_number` is the
/// manifest's checkpoint. Requests whose memtable was flushed since, or
/// whose segment a flush already moved the checkpoint past, are dropped:
/// that flush covered them. A request further on than the checkpoint waits
/// while an older memtable is still unflushed (a segment of it was not
/// checkpointed, e.g. replayed at open or failed: its flush moves the
/// checkpoint on); with none, a checkpoint of its own memtable failed, and
/// `checkpoint` skips it.
pub(crate) fn next_request(
    queue: &mut VecDeque<CheckpointRequest>,
    state: &LsmState,
    log_number: u64,
) -> Option<CheckpointRequest> {
    while let Some(request) = queue.front() {
        let live = request.memtable == state.mem.id()
            || state.imms.iter().any(|m| m.id() == request.memtable);
        if !live || request.segment < log_number {
            queue.pop_front();
            continue;
        }
        let older_unflushed = state.imms.iter().any(|m| m.id() < request.memtable);
        if request.segment > log_number && older_unflushed {
            return None;
        }
        return queue.pop_front();
    }
    None
}

/// Runs every checkpoint that may run now (between a flush's or a
/// compaction's outputs, and before a flush). Failures are counted or are
/// a background error already (see [`checkpoint`]).
pub(crate) fn run_pending(engine: &Engine, manifest: &mut Manifest) {
    loop {
        let log_number = manifest.state().log_number;
        let next = next_request(
            &mut engine.maintenance.lock().checkpoints,
            &engine.state(),
            log_number,
        );
        let Some(request) = next else { break };
        if checkpoint(engine, manifest, request).is_err() && engine.bg_error().is_some() {
            break;
        }
    }
}

/// Checkpoints `request`'s segment. `Ok(false)` when it was skipped: the
/// manifest's checkpoint is not at that segment (an earlier one of the
/// same memtable was not checkpointed), so moving past it could drop
/// writes. A failure before the manifest edit leaves the WAL as it was
/// and is only counted (`checkpoint_errors`); a failed manifest edit is a
/// background error, as for a flush (the edit may or may not be on disk).
pub(crate) fn checkpoint(
    engine: &Engine,
    manifest: &mut Manifest,
    request: CheckpointRequest,
) -> Result<bool> {
    if manifest.state().log_number != request.segment {
        return Ok(false);
    }
    let built = (|| {
        let segment = SealedSegment::open(&*engine.fs, &engine.dir, request.segment, request.end)?;
        let mut gathered = Gathered::default();
        segment.for_each_batch(|payload| gathered.add_record(payload))?;
        gathered.finish();
        let Gathered {
            versions,
            tombstones,
            max_ts,
        } = gathered;
        if versions.is_empty() && tombstones.is_empty() {
            return Ok((None, max_ts));
        }
        let table = write_versions(
            engine,
            engine.alloc_file_number(),
            |builder| {
                for v in &versions {
                    builder.add(v.key, v.ts, v.kind, v.value)?;
                }
                Ok(())
            },
            &tombstones,
        )?;
        Ok((Some(table), max_ts))
    })()
    .map_err(|e: Error| {
        e.context(format_args!(
            "checkpointing WAL segment {} into a table",
            request.segment
        ))
    });
    let (built, max_ts) = match built {
        Ok(built) => built,
        Err(e) => {
            Counters::add(&engine.counters.checkpoint_errors, 1);
            return Err(e);
        }
    };
    let mut edit = VersionEdit {
        log_number: Some(request.next),
        last_ts: Some(manifest.state().last_ts.max(max_ts)),
        ..VersionEdit::default()
    };
    if let Some(file) = &built {
        edit.add_tables.push(file.meta().clone());
    }
    edit.next_file_number = Some(engine.next_file_number.load(Ordering::Relaxed));
    if let Err(e) = manifest.apply(&edit) {
        // The table is not marked obsolete: the edit naming it may be on disk.
        let e = e.context("recording a WAL checkpoint in the manifest");
        engine.set_bg_error(e.clone());
        return Err(e);
    }
    if let Some(file) = built {
        Counters::add(&engine.counters.checkpoint_bytes_written, file.file_size());
        engine.install(|s| LsmState {
            mem: s.mem.clone(),
            imms: s.imms.clone(),
            levels: s.levels.clone(),
            checkpoints: s
                .checkpoints
                .iter()
                .cloned()
                .chain([CheckpointTable {
                    memtable: request.memtable,
                    table: file,
                }])
                .collect(),
            compacted_ts: s.compacted_ts,
        });
    }
    Counters::add(&engine.counters.checkpoints, 1);
    remove_obsolete_wal(engine, request.next);
    if let Err(e) = rewrite_manifest_if_large(engine, manifest) {
        let e = e.context("rewriting the manifest");
        engine.set_bg_error(e.clone());
        return Err(e);
    }
    Ok(true)
}

/// The manifest edit part of the flush of `memtable`: its checkpoint
/// tables go (those of newer memtables stay). Returns them, for
/// [`mark_retired`] once the edit is durable.
pub(super) fn retire(
    edit: &mut VersionEdit,
    checkpoints: &[CheckpointTable],
    memtable: u64,
) -> Vec<Arc<TableFile>> {
    let retired: Vec<_> = checkpoints
        .iter()
        .filter(|c| c.memtable == memtable)
        .map(|c| c.table.clone())
        .collect();
    edit.remove_tables
        .extend(retired.iter().map(|t| t.number()));
    retired
}

/// One version of a segment, borrowed from its mapping.
struct Version<'a> {
    key: &'a [u8],
    ts: Timestamp,
    /// Position in the segment: of two versions of a key with one
    /// timestamp (a batch that wrote the key twice), the later one wins,
    /// as in the memtable.
    order: usize,
    kind: ValueKind,
    value: &'a [u8],
}

/// What a segment's batch records hold, as a table is written: versions
/// (borrowed from the records) and range tombstones, and the largest
/// commit timestamp.
#[derive(Default)]
struct Gathered<'a> {
    versions: Vec<Version<'a>>,
    tombstones: Vec<RangeTombstone>,
    max_ts: Timestamp,
}

impl<'a> Gathered<'a> {
    /// Adds one batch record's operations.
    fn add_record(&mut self, payload: &'a [u8]) -> Result<()> {
        let (versions, tombstones) = (&mut self.versions, &mut self.tombstones);
        let ts = WriteBatch::decode_record_ops(payload, |ts, op| match op {
            RawOp::Point(op) => versions.push(Version {
                key: op.key,
                ts,
                order: versions.len(),
                kind: op.kind,
                value: op.value,
            }),
            RawOp::Range(start, end) => tombstones.push(RangeTombstone {
                start: start.to_vec(),
                end: end.to_vec(),
                ts,
            }),
        })?;
        self.max_ts = self.max_ts.max(ts);
        Ok(())
    }

    /// Internal-key order (key ascending, newest first), one version per
    /// (key, timestamp): the later write of a batch that wrote a key
    /// twice, as in the memtable. Tombstones sorted, without repeats.
    fn finish(&mut self) {
        self.versions.sort_unstable_by(|a, b| {
            a.key
                .cmp(b.key)
                .then(b.ts.cmp(&a.ts))
                .then(b.order.cmp(&a.order))
        });
        self.versions
            .dedup_by(|later, kept| later.key == kept.key && later.ts == kept.ts);
        self.tombstones.sort();
        self.tombstones.dedup();
    }
}

/// After that edit is durable: the files go once nothing holds them.
pub(super) fn mark_retired(retired: &[Arc<TableFile>]) {
    for t in retired {
        t.mark_obsolete();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memtable::Memtable;

    /// What a checkpoint gathers from `records`: versions, tombstones, the
    /// largest commit timestamp.
    type Gathered = (
        Vec<(Vec<u8>, Timestamp, ValueKind, Vec<u8>)>,
        Vec<RangeTombstone>,
        Timestamp,
    );

    fn gathered(records: &[Vec<u8>]) -> Result<Gathered> {
        let mut g = super::Gathered::default();
        for payload in records {
            g.add_record(payload)?;
        }
        g.finish();
        let versions = g
            .versions
            .iter()
            .map(|v| (v.key.to_vec(), v.ts, v.kind, v.value.to_vec()))
            .collect();
        Ok((versions, g.tombstones, g.max_ts))
    }

    /// What replaying the records into a memtable and flushing it writes.
    fn replayed(records: &[Vec<u8>]) -> Result<Gathered> {
        let mem = Memtable::sized(0, 1 << 20);
        let mut pending = Vec::new();
        let mut batch = WriteBatch::new();
        for payload in records {
            let ts = WriteBatch::decode_record_into(payload, &mut batch)?;
            mem.apply_deferred(&batch, ts, &mut pending);
        }
        mem.insert_pending(pending);
        let versions = mem
            .iter()
            .map(|e| {
                let v = e.key();
                (v.user_key().to_vec(), v.ts, v.kind, v.value().to_vec())
            })
            .collect();
        Ok((versions, mem.range_dels().tombstones(), mem.max_ts()))
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Keys that share long prefixes (the memtable compares 16-byte heads
    /// first), differ only in length or in trailing zeros, and are at the
    /// size limit.
    fn key(rng: &mut Rng) -> Vec<u8> {
        let head = b"0123456789abcdef0123";
        match rng.next(6) {
            0 => head[..1 + rng.next(head.len() as u64) as usize].to_vec(),
            1 => {
                let mut k = head[..1 + rng.next(17) as usize].to_vec();
                k.extend(std::iter::repeat_n(0u8, rng.next(3) as usize));
                k
            }
            2 => {
                let mut k = vec![b'm'; crate::key::MAX_KEY_LEN];
                let last = k.len() - 1 - rng.next(2) as usize;
                k[last] = b'a' + rng.next(3) as u8;
                k
            }
            _ => format!("k{}", rng.next(12)).into_bytes(),
        }
    }

    fn random_records(rng: &mut Rng, first_ts: Timestamp) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        for i in 0..1 + rng.next(12) {
            let mut batch = WriteBatch::new();
            for _ in 0..rng.next(8) {
                let k = key(rng);
                match rng.next(7) {
                    0 | 1 => drop(batch.delete(&k).unwrap()),
                    2 => {
                        let e = key(rng);
                        let (s, e) = if k < e { (k, e) } else { (e, k) };
                        if s < e {
                            batch.delete_range(&s, &e).unwrap();
                        }
                    }
                    3 => drop(batch.put(&k, b"").unwrap()),
                    _ => {
                        let v = vec![b'v' + rng.next(5) as u8; rng.next(40) as usize];
                        batch.put(&k, &v).unwrap();
                        // A key written twice in a batch: put then delete,
                        // put then put.
                        match rng.next(4) {
                            0 => drop(batch.delete(&k).unwrap()),
                            1 => drop(batch.put(&k, i.to_le_bytes()).unwrap()),
                            _ => {}
                        }
                    }
                }
            }
            let mut payload = Vec::new();
            batch.encode_record(first_ts + i, &mut payload);
            records.push(payload);
        }
        records
    }

    /// Review probe: the checkpoint's gathering of a segment holds exactly
    /// what a memtable replay and flush would, for random batches with
    /// keys written twice, put + delete of one key, empty values, range
    /// deletes over the batch's own keys, empty batches and maximal keys.
    #[test]
    fn gathering_a_segment_matches_a_memtable_replay() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..300 {
            let records = random_records(&mut rng, 1 + round * 100);
            let (a, b) = (gathered(&records).unwrap(), replayed(&records).unwrap());
            assert_eq!(a.0.len(), b.0.len(), "round {round}");
            assert!(a == b, "round {round}: gathered and replayed differ");
        }
    }

    /// Review probe: decode_record_ops accepts and refuses exactly the
    /// payloads decode_record_into does (truncations, flipped bytes,
    /// appended bytes of valid records).
    #[test]
    fn gathering_validates_as_replay_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut refused = 0;
        for round in 0..400u64 {
            let records = random_records(&mut rng, 1);
            for payload in records {
                let mut bad = payload.clone();
                match rng.next(4) {
                    0 => bad.truncate(rng.next(bad.len() as u64 + 1) as usize),
                    1 => {
                        let i = rng.next(bad.len() as u64) as usize;
                        bad[i] ^= 1 << rng.next(8);
                    }
                    2 => bad.push(rng.next(256) as u8),
                    _ => {
                        let i = 8 + rng.next(4) as usize;
                        bad[i] = bad[i].wrapping_add(1);
                    }
                }
                let ops = WriteBatch::decode_record_ops(&bad, |_, _| {});
                let into = WriteBatch::decode_record_into(&bad, &mut WriteBatch::new());
                assert_eq!(
                    ops.as_ref().ok(),
                    into.as_ref().ok(),
                    "round {round}: {ops:?} vs {into:?}"
                );
                refused += usize::from(into.is_err());
                assert_eq!(
                    WriteBatch::decode_record_ops(&payload, |_, _| {}).ok(),
                    WriteBatch::decode_record_into(&payload, &mut WriteBatch::new()).ok()
                );
            }
        }
        assert!(refused > 100, "{refused} refused");
    }
}
