//! The merge: read the inputs through the shared merging iterator, apply
//! the retention rule, write output tables cut at the target size (only
//! between user keys, so a key's versions never span two tables of one
//! level), and hand back the opened outputs. Installing them is the
//! maintenance thread's job.

use std::ops::Bound;
use std::path::PathBuf;
use std::sync::Arc;

use super::retention::{Decision, Retention};
use super::Compaction;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::key::Timestamp;
use crate::lsm::{Levels, TableFile};
use crate::merge::{Cursor, LevelCursor, MergeIter};
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
    /// Called between output tables, so a flush does not wait for the
    /// whole compaction.
    pub between_outputs: &'a mut dyn FnMut() -> Result<()>,
}

struct Output {
    builder: TableBuilder,
    number: u64,
    path: PathBuf,
    /// Bytes of keys and values added: the cut decision.
    bytes: u64,
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
    let mut last_key: Vec<u8> = Vec::new();
    let mut seen = 0u64;
    while let Some(v) = merged.current() {
        seen += 1;
        if seen.is_multiple_of(CANCEL_CHECK_EVERY) && (ctx.cancelled)() {
            return Err(Error::new(
                ErrorKind::Closed,
                "compaction cancelled: closing",
            ));
        }
        let keep = match retention.decide(v.key, v.ts, v.kind) {
            Decision::Keep => true,
            Decision::Drop => false,
            Decision::DropIfBottom => ctx.levels.covered_below(c.output_level, v.key),
        };
        if keep {
            let new_key = last_key.as_slice() != v.key;
            if new_key && current.as_ref().is_some_and(|o| o.bytes >= target) {
                if let Some(out) = current.take() {
                    done.push(finish(engine, out, c.output_level)?);
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
                Some(out) => out,
                None => current.insert(start(engine)?),
            };
            out.builder.add(v.key, v.ts, v.kind, v.value)?;
            out.bytes += (v.key.len() + v.value.len()) as u64 + 16;
            if new_key {
                last_key.clear();
                last_key.extend_from_slice(v.key);
            }
        }
        merged.advance()?;
    }
    if let Some(out) = current.take() {
        done.push(finish(engine, out, c.output_level)?);
    }
    if !done.is_empty() {
        engine.fs.sync_dir(&engine.dir)?;
    }
    Ok(())
}

fn start(engine: &Engine) -> Result<Output> {
    let number = engine.alloc_file_number();
    let path = engine.dir.join(table_file_name(number));
    let file = engine.fs.create(&path)?;
    Ok(Output {
        builder: TableBuilder::with_options(file, engine.options.table_options()),
        number,
        path,
        bytes: 0,
    })
}

fn finish(engine: &Engine, out: Output, level: usize) -> Result<Arc<TableFile>> {
    let Output {
        builder,
        number,
        path,
        ..
    } = out;
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
