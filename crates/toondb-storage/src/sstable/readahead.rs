//! Readahead for table iterators, bounded to what the iteration will read.
//!
//! Table files are memory-mapped with `MADV_RANDOM` (io/os.rs) so that a
//! point read faults in only the pages it touches. A cold scan then faults
//! one page at a time, each a synchronous device read. So, as an iterator
//! walks a table's data blocks one after another, it asks the file system
//! to start reading the blocks ahead of it ([`crate::io::FileBytes::will_need`],
//! `MADV_WILLNEED` on the mapping), like RocksDB's iterator auto-readahead:
//!
//! - nothing until the iteration has read [`READS_BEFORE_READAHEAD`]
//!   consecutive blocks of the table (a seek and a few steps never pay);
//! - then a window of [`INITIAL_WINDOW`] bytes from the current block,
//!   doubling with each window up to [`MAX_WINDOW`]; the next window is
//!   asked for when the iterator reaches the middle of the last one, so the
//!   device works while the scan decodes;
//! - never past the last block that can hold a key inside the scan's bounds
//!   (forward: the first block whose last key reaches the upper bound;
//!   reverse: the first block whose last key reaches the lower bound), found
//!   in the table's index. So the device reads of a scan are the blocks it
//!   reads, rounded to pages, plus at most one window when it stops early
//!   (a `limit`).
//!
//! A scan re-seeks its iterators at every batch (iter.rs), so the state
//! lives in a [`Readahead`] the scan shares with every iterator it makes, per
//! table: a seek that lands on the block last read, or the one after it, is
//! a step of the same sequential run. The advice is only advice: getting it
//! wrong costs time, never correctness.

use std::collections::HashMap;
use std::ops::{Bound, Range};
use std::sync::{Arc, Mutex};

use super::table::Table;
use crate::error::Result;

/// Blocks read one after another before readahead starts.
pub const READS_BEFORE_READAHEAD: u32 = 2;
/// The first window, in bytes.
pub const INITIAL_WINDOW: usize = 8 << 10;
/// The largest window, in bytes.
pub const MAX_WINDOW: usize = 1 << 20;

/// The readahead state of one scan (or any iteration), shared by the table
/// iterators it creates. Cloning shares it.
#[derive(Clone)]
pub struct Readahead {
    shared: Arc<Shared>,
}

struct Shared {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// Per table file number.
    tables: Mutex<HashMap<u64, Run>>,
}

/// The sequential run over one table.
#[derive(Debug, Default)]
struct Run {
    /// The block read last and whether the iteration goes in reverse.
    last: Option<(usize, bool)>,
    /// Consecutive blocks read in this direction.
    reads: u32,
    /// Size of the next window, in bytes.
    window: usize,
    /// The first block in scan order not asked for yet in this run (`None`
    /// before the first window).
    frontier: Option<usize>,
    /// Set once a window reached the limit: nothing left to ask for.
    complete: bool,
    /// The block at which the next window is asked for.
    trigger: usize,
    /// The last block (in the direction of the run) that can hold a key in
    /// bounds, found once per table and direction.
    limit_fwd: Option<usize>,
    limit_rev: Option<usize>,
}

impl Readahead {
    /// Readahead for an iteration over keys within `lower..upper`.
    pub fn new(lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Readahead {
        Readahead {
            shared: Arc::new(Shared {
                lower,
                upper,
                tables: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Readahead for an iteration over whole tables (compaction, backups).
    pub fn unbounded() -> Readahead {
        Readahead::new(Bound::Unbounded, Bound::Unbounded)
    }

    /// Called when an iterator is about to read data block `block` of
    /// `table` (or has just positioned in it by a seek), going forward or in
    /// `reverse`: may ask the file system to read ahead.
    pub(crate) fn on_block(&self, table: &Table, block: usize, reverse: bool) -> Result<()> {
        // A poisoned lock only means another iterator of the scan panicked;
        // the state is advice, so keep using it.
        let mut tables = self.shared.tables.lock().unwrap_or_else(|e| e.into_inner());
        let run = tables.entry(table.number()).or_default();
        match run.last {
            // The block last read, or the one before it: a batch re-seeking
            // to the last key it consumed, which the merge had stepped past
            // (iter.rs). Nothing new is read.
            Some((b, r)) if r == reverse && (b == block || Some(block) == step(b, !reverse)) => {
                return Ok(())
            }
            Some((b, r)) if r == reverse && Some(block) == step(b, reverse) => run.reads += 1,
            _ => run.restart(),
        }
        run.last = Some((block, reverse));
        if run.reads <= READS_BEFORE_READAHEAD || run.complete {
            return Ok(());
        }
        let limit = self.limit(run, table, reverse)?;
        let from = match run.frontier {
            // Past (or never in) the advised blocks: start at this one.
            None => block,
            Some(f) if ahead_or_at(block, f, reverse) => block,
            // Reached the middle of the last window: ask for the next one.
            Some(f) if ahead_or_at(block, run.trigger, reverse) => f,
            Some(_) => return Ok(()),
        };
        if !ahead_or_at(limit, from, reverse) {
            return Ok(());
        }
        let blocks = window(table, from, run.window, limit, reverse)?;
        if let Some(bytes) = table.block_span(blocks.clone())? {
            table.will_need(bytes);
        }
        // The trigger is the middle of the new window in scan order.
        let half = blocks.len() / 2;
        if reverse {
            run.complete = blocks.start == limit;
            run.frontier = blocks.start.checked_sub(1);
            run.trigger = blocks.end - 1 - half;
        } else {
            run.complete = blocks.end - 1 == limit;
            run.frontier = Some(blocks.end);
            run.trigger = blocks.start + half;
        }
        run.window = (run.window * 2).min(MAX_WINDOW);
        Ok(())
    }

    /// The last block in scan order that can hold a key within bounds.
    fn limit(&self, run: &mut Run, table: &Table, reverse: bool) -> Result<usize> {
        let cached = if reverse {
            &mut run.limit_rev
        } else {
            &mut run.limit_fwd
        };
        if let Some(l) = *cached {
            return Ok(l);
        }
        let count = table.block_count()?;
        let limit = if reverse {
            match &self.shared.lower {
                Bound::Unbounded => 0,
                // The first block whose last key is >= the bound holds the
                // smallest keys in range.
                Bound::Included(k) | Bound::Excluded(k) => table.first_block_reaching(k, false)?,
            }
        } else {
            match &self.shared.upper {
                Bound::Unbounded => count.saturating_sub(1),
                // The first block whose last key reaches past the bound holds
                // the largest keys in range (for an included bound, all
                // versions of it).
                Bound::Included(k) => table.first_block_reaching(k, true)?,
                Bound::Excluded(k) => table.first_block_reaching(k, false)?,
            }
            .min(count.saturating_sub(1))
        };
        *cached = Some(limit);
        Ok(limit)
    }
}

impl Run {
    /// Starts a new run at the current block (a seek elsewhere, or a change
    /// of direction); the limits stay, they depend only on the bounds.
    fn restart(&mut self) {
        self.reads = 1;
        self.window = INITIAL_WINDOW;
        self.frontier = None;
        self.complete = false;
        self.trigger = 0;
    }
}

/// The block after `b` in scan order.
fn step(b: usize, reverse: bool) -> Option<usize> {
    if reverse {
        b.checked_sub(1)
    } else {
        b.checked_add(1)
    }
}

/// Whether `a` is at `b` or further along in scan order.
fn ahead_or_at(a: usize, b: usize, reverse: bool) -> bool {
    if reverse {
        a <= b
    } else {
        a >= b
    }
}

/// The blocks (in file order) of a window of about `bytes` starting at
/// block `from` and going in scan order, whole blocks, not past `limit`.
fn window(
    table: &Table,
    from: usize,
    bytes: usize,
    limit: usize,
    reverse: bool,
) -> Result<Range<usize>> {
    let extent = table.block_extent(from)?;
    Ok(if reverse {
        let first = table
            .block_at_offset(extent.end.saturating_sub(bytes))?
            .max(limit);
        first..from + 1
    } else {
        let last = table
            .block_at_offset(extent.start.saturating_add(bytes).saturating_sub(1))?
            .min(limit);
        from..last + 1
    })
}
