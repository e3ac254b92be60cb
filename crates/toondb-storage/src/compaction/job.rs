//! The merge: read the inputs through the shared merging iterator, apply
//! the retention rule, write output tables cut at the target size and at
//! key partition boundaries (partition.rs; both only between user keys, so
//! a key's versions never span two tables of one level), and hand back the
//! opened outputs. Installing them is the
//! maintenance thread's job.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use super::partition::{Cut, PartitionOf, Partitions};
use super::retention::{Decision, Retention};
use super::Compaction;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::key::Timestamp;
use crate::lsm::{Levels, TableFile, NUM_LEVELS};
use crate::merge::{Cursor, LevelCursor, MergeIter};
use crate::range_del::{self, RangeTombstone};
use crate::sstable::{table_file_name, Readahead, TableBuilder, TableIter};
use crate::version::TableMeta;

/// How often (in versions read) the job checks for cancellation.
const CANCEL_CHECK_EVERY: u64 = 1024;

pub(crate) struct JobOutput {
    pub tables: Vec<Arc<TableFile>>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// What the job needs from its caller.
pub(crate) struct JobContext<'a> {
    pub engine: &'a Engine,
    /// The levels the compaction was picked from: which tables lie below
    /// the output level (only the maintenance thread changes levels 1..,
    /// and it is running this job).
    pub levels: &'a Levels,
    /// Sorted read points (see retention.rs).
    pub points: &'a [Timestamp],
    /// True once the job should stop (engine shutdown).
    pub cancelled: &'a dyn Fn() -> bool,
    /// Called between output tables and every `CANCEL_CHECK_EVERY`
    /// versions read, so a flush waits for neither the whole compaction
    /// nor a whole output table. It may install new level-0 tables; the
    /// job's inputs and outputs are unaffected (the outputs are installed
    /// by one edit at the end, against the state current then).
    pub between_outputs: &'a mut dyn FnMut() -> Result<()>,
    /// Key partitions outputs are also cut at (see partition.rs).
    pub partition_of: PartitionOf,
}

struct Output {
    builder: TableBuilder,
    number: u64,
    path: PathBuf,
    /// Bytes of keys and values added: the cut decision.
    bytes: u64,
    /// Where this output's share of the key space starts: `None` for the
    /// first output, else just past the previous output's last key. Range
    /// tombstones are clipped to that share (see [`RangeDels`]).
    lower: Option<Vec<u8>>,
    /// The last user key added.
    last_key: Vec<u8>,
    /// About the length of the `rangedel` block `finish` will add (the
    /// pieces of the kept tombstones that start in this output's share so
    /// far, or reach into it from before), which the cut's projection
    /// must count: the tombstones are only added when the output is
    /// finished ([`RangeDels::add_share`]).
    tomb_bytes: u64,
    /// The first kept tombstone (by start) not yet counted in `tomb_bytes`.
    tomb_next: usize,
}

/// The range tombstones of a compaction's inputs that survive it, and how
/// they are split between outputs. Output `i` owns the keys from just past
/// output `i-1`'s last key up to and including its own last key (the first
/// owns everything below, the last everything above), so each tombstone
/// piece lands in exactly one output and every output's key range, widened
/// to its pieces, stays disjoint from its neighbours'. The key just past
/// `k` is `k ++ 00`, which `widen_summary` reads back as `k`.
struct RangeDels {
    kept: Vec<RangeTombstone>,
}

impl RangeDels {
    /// A tombstone is dropped when every reader sees it (no read point
    /// below its timestamp: the versions it covers in the inputs are
    /// dropped with it) and no table below the output level holds keys in
    /// its range (older versions there would come back). Otherwise it is
    /// kept.
    fn new(c: &Compaction, levels: &Levels, points: &[Timestamp]) -> RangeDels {
        let oldest_reader = points.first().copied().unwrap_or(Timestamp::MAX);
        let mut kept = Vec::new();
        for (_, tables) in &c.inputs {
            for t in tables {
                for tomb in t.range_dels().tombstones() {
                    let seen_by_all = oldest_reader >= tomb.ts;
                    let below = (c.output_level + 1..NUM_LEVELS).any(|n| {
                        !levels
                            .overlapping(n, Some(&tomb.start), Some(&tomb.end))
                            .is_empty()
                    });
                    if !seen_by_all || below {
                        kept.push(tomb.clone());
                    }
                }
            }
        }
        kept.sort();
        kept.dedup();
        RangeDels { kept }
    }

    /// The encoded length of one tombstone piece (`range_del::encode_block`:
    /// two length-prefixed keys and a timestamp); the piece that reaches
    /// past the output's last key is clipped shorter when it is finished.
    fn piece_len(t: &RangeTombstone, lower: Option<&[u8]>) -> u64 {
        let start = lower.map_or(t.start.len(), |l| l.len().max(t.start.len()));
        range_del::encoded_len(start, t.end.len()) as u64
    }

    /// Starts counting an output's share from `lower`: the pieces of
    /// tombstones that begin below it and reach into it, and the index of
    /// the first that begins at or above it.
    fn share_start(&self, lower: Option<&[u8]>) -> (u64, usize) {
        let Some(lower) = lower else {
            return (0, 0);
        };
        let next = self.kept.partition_point(|t| t.start.as_slice() < lower);
        let carried = self.kept[..next]
            .iter()
            .filter(|t| t.end.as_slice() > lower)
            .map(|t| Self::piece_len(t, Some(lower)))
            .sum();
        (carried, next)
    }

    /// Counts the tombstones that begin at or before `key` (now in the
    /// output's share) into `out`.
    fn count_through(&self, out: &mut Output, key: &[u8]) {
        while let Some(t) = self.kept.get(out.tomb_next) {
            if t.start.as_slice() > key {
                break;
            }
            out.tomb_bytes += Self::piece_len(t, None);
            out.tomb_next += 1;
        }
    }

    /// Adds the pieces in `[lower, upper)` to `builder`.
    fn add_share(&self, builder: &mut TableBuilder, lower: Option<&[u8]>, upper: Option<&[u8]>) {
        for t in &self.kept {
            if let Some(piece) = t.clipped(lower, upper) {
                builder.add_range_tombstone(piece);
            }
        }
    }
}

/// The smallest key greater than `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// Runs `c`. On error every output file written so far is deleted (none is
/// in the manifest) and the inputs are untouched.
pub(crate) fn run_job(ctx: &mut JobContext<'_>, c: &Compaction) -> Result<JobOutput> {
    let mut done: Vec<Arc<TableFile>> = Vec::new();
    let mut current: Option<Output> = None;
    let result = merge_into(ctx, c, &mut done, &mut current);
    match result {
        Ok(()) => Ok(JobOutput {
            bytes_read: c.input_bytes(),
            bytes_written: done.iter().map(|t| t.file_size()).sum(),
            tables: done,
        }),
        Err(e) => {
            if let Some(out) = current {
                drop(out.builder);
                let _ = ctx.engine.fs.remove(&out.path);
            }
            for t in &done {
                t.mark_obsolete(); // deleted as `done` drops
            }
            Err(e)
        }
    }
}

/// Targets from which outputs are cut where their end pad is small. The
/// quarter overshoot the cut may wait for must span a 2 MiB boundary's
/// window: a table is about 1.0-1.1 times the key and value bytes it holds
/// (uncompressed), so below 8 MiB the next window is often out of reach
/// (at 4 MiB, outputs held 5-5.5 MiB and ended unaligned anyway).
const ALIGNED_CUT_MIN_TARGET: u64 = 8 << 20;

/// The longest end pad block a compaction output gets: what a cut where
/// `ends_near_boundary` said gives (the window and the projection's
/// margin). Any other output (the job's last, one cut for overshooting,
/// one whose range tombstones, added at `finish`, pushed it past the
/// boundary) would otherwise take up to an eighth of its length in zeros.
const END_PAD_MAX: u64 = crate::sstable::CUT_WINDOW + crate::sstable::CUT_MARGIN;

/// An output is cut once it holds `target` bytes of keys and values and,
/// for a target of at least [`ALIGNED_CUT_MIN_TARGET`], also ends just
/// before a 2 MiB boundary, so the pad that puts its end in a huge page is
/// small (docs/compaction.md, "Output tables"), or has overshot by a quarter
/// (values so large that one entry steps over the window).
fn output_full(o: &Output, target: u64) -> bool {
    if o.bytes < target {
        return false;
    }
    // The rangedel block (count, pieces, trailer) comes with `finish`.
    let tombstones = match o.tomb_bytes {
        0 => 0,
        n => n + 4 + 5,
    };
    target < ALIGNED_CUT_MIN_TARGET
        || o.bytes >= target + target / 4
        || o.builder.ends_near_boundary_with(tombstones)
}

fn merge_into(
    ctx: &mut JobContext<'_>,
    c: &Compaction,
    done: &mut Vec<Arc<TableFile>>,
    current: &mut Option<Output>,
) -> Result<()> {
    let engine = ctx.engine;
    let target = engine.options.target_file_size.max(1);
    let mut cursors = Vec::new();
    // Inputs are read whole, in order: read ahead of them (the table maps
    // are MADV_RANDOM, so a cold input would otherwise fault page by page).
    let readahead = Readahead::unbounded();
    for (level, tables) in &c.inputs {
        if *level == 0 {
            for t in tables {
                let it =
                    TableIter::without_cache_fill(t.table()?).with_readahead(readahead.clone());
                cursors.push(Cursor::Table(it));
            }
        } else {
            let level = LevelCursor::without_cache_fill(tables).with_readahead(readahead.clone());
            cursors.push(Cursor::Level(level));
        }
    }
    for cursor in &mut cursors {
        cursor.seek(Bound::Unbounded, false)?;
    }
    let mut merged = MergeIter::new(cursors, false);
    let mut retention = Retention::new(ctx.points);
    // Every table's tombstones may hide input versions (each one stays in
    // the manifest at least as long as older versions in its range exist);
    // only the inputs' own tombstones are rewritten by this job.
    let cover = ctx.levels.range_dels().clone();
    let range_dels = RangeDels::new(c, ctx.levels, ctx.points);
    let mut partitions = Partitions::new(ctx.partition_of, target / 16, target / 1024);
    let mut next_lower: Option<Vec<u8>> = None;
    let mut last_key: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    while let Some(v) = merged.current() {
        seen += 1;
        if seen.is_multiple_of(CANCEL_CHECK_EVERY) {
            if (ctx.cancelled)() {
                return Err(Error::new(
                    ErrorKind::Closed,
                    "compaction cancelled: closing",
                ));
            }
            // A sealed memtable is flushed without waiting for the output
            // to fill (16 MiB of writes): its WAL is what a reopen after a
            // crash replays (docs/performance.md, "Reopen").
            (ctx.between_outputs)()?;
        }
        let covered_at = cover.min_covering_above(v.key, v.ts);
        let keep = match retention.decide_covered(v.key, v.ts, v.kind, covered_at) {
            Decision::Keep => true,
            Decision::Drop => false,
            Decision::DropIfBottom => ctx.levels.covered_below(c.output_level, v.key),
        };
        if keep {
            let new_key = last_key.as_slice() != v.key;
            let cut = match new_key {
                true => partitions.before(v.key, current.as_ref().map(|o| o.bytes)),
                false => Cut::None,
            };
            let full = current.as_ref().is_some_and(|o| output_full(o, target));
            if new_key && (full || cut == Cut::File) {
                partitions.cut_before(v.key);
                if let Some(out) = current.take() {
                    let upper = successor(&out.last_key);
                    done.push(finish(
                        engine,
                        out,
                        c.output_level,
                        &range_dels,
                        Some(&upper),
                    )?);
                    next_lower = Some(upper);
                }
                if (ctx.cancelled)() {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "compaction cancelled: closing",
                    ));
                }
                (ctx.between_outputs)()?;
            }
            let out = match current {
                Some(out) => {
                    if cut == Cut::Block {
                        out.builder.end_block()?;
                    }
                    out
                }
                None => current.insert(start(engine, next_lower.take(), &range_dels)?),
            };
            out.builder.add(v.key, v.ts, v.kind, v.value)?;
            if new_key {
                range_dels.count_through(out, v.key);
            }
            if new_key {
                partitions.added(v.key);
            }
            if new_key {
                out.last_key.clear();
                out.last_key.extend_from_slice(v.key);
            }
            out.bytes += (v.key.len() + v.value.len()) as u64 + 16;
            if new_key {
                last_key.clear();
                last_key.extend_from_slice(v.key);
            }
        }
        merged.advance()?;
    }
    // Tombstones that outlive the job with no version kept: one output of
    // tombstones only.
    if done.is_empty() && current.is_none() && !range_dels.kept.is_empty() {
        *current = Some(start(engine, None, &range_dels)?);
    }
    if let Some(out) = current.take() {
        done.push(finish(engine, out, c.output_level, &range_dels, None)?);
    }
    if !done.is_empty() {
        engine.fs.sync_dir(&engine.dir)?;
    }
    Ok(())
}

fn start(engine: &Engine, lower: Option<Vec<u8>>, range_dels: &RangeDels) -> Result<Output> {
    let (tomb_bytes, tomb_next) = range_dels.share_start(lower.as_deref());
    let number = engine.alloc_file_number();
    let path = engine.dir.join(table_file_name(number));
    let file = engine.fs.create(&path)?;
    let mut builder = TableBuilder::with_options(file, engine.options.table_options());
    // Only the small pad of a cut near a 2 MiB boundary (see `output_full`).
    builder.limit_end_pad(END_PAD_MAX);
    Ok(Output {
        builder,
        number,
        path,
        bytes: 0,
        lower,
        last_key: Vec::new(),
        tomb_bytes,
        tomb_next,
    })
}

fn finish(
    engine: &Engine,
    out: Output,
    level: usize,
    range_dels: &RangeDels,
    upper: Option<&[u8]>,
) -> Result<Arc<TableFile>> {
    let Output {
        mut builder,
        number,
        path,
        lower,
        ..
    } = out;
    range_dels.add_share(&mut builder, lower.as_deref(), upper);
    let opened = builder
        .finish()
        .and_then(|summary| Ok((summary, engine.tables.open(number, &path)?)));
    let (summary, table) = match opened {
        Ok(v) => v,
        Err(e) => {
            let _ = engine.fs.remove(&path);
            return Err(e.context(format_args!("writing compaction output {}", path.display())));
        }
    };
    let meta = TableMeta::from_summary(number, level as u32, summary);
    Ok(TableFile::new(&engine.tables, table, meta, path))
}
