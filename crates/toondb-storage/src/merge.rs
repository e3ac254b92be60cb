//! The one k-way merge of versions from several sources (memtables, single
//! tables, whole sorted levels), in internal order forward (user key
//! ascending, newest version first) or exactly reversed. Range scans
//! (iter.rs) and compaction (compaction/job.rs) both read through it.
//!
//! Sources are few (the memtables, the level-0 tables, one cursor per
//! deeper level), so picking the smallest current version is a linear
//! scan over them rather than a heap.

use std::cmp::Ordering;
use std::ops::Bound;
use std::sync::Arc;

use crate::error::Result;
use crate::key::{compare_versions, Timestamp, ValueKind};
use crate::lsm::TableFile;
use crate::memtable::{VersionEntry, VersionRange};
use crate::sstable::{Readahead, TableIter};

type MemRange<'a> = VersionRange<'a>;

/// One version, borrowed from its source.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Version<'s> {
    pub key: &'s [u8],
    pub ts: Timestamp,
    pub kind: ValueKind,
    pub value: &'s [u8],
}

/// A position in one source.
pub(crate) enum Cursor<'a> {
    Mem {
        range: MemRange<'a>,
        current: Option<VersionEntry<'a>>,
    },
    Table(TableIter),
    /// A sorted level with disjoint tables, walked as one run: only the
    /// table under the cursor is open.
    Level(LevelCursor<'a>),
}

impl<'a> Cursor<'a> {
    /// A memtable cursor over `range`, positioned at its first entry in
    /// scan order.
    pub fn mem(range: MemRange<'a>, reverse: bool) -> Cursor<'a> {
        let mut c = Cursor::Mem {
            range,
            current: None,
        };
        c.step_mem(reverse);
        c
    }

    fn step_mem(&mut self, reverse: bool) {
        if let Cursor::Mem { range, current } = self {
            *current = if reverse {
                range.next_back()
            } else {
                range.next()
            };
        }
    }

    pub fn current(&self) -> Option<Version<'_>> {
        match self {
            Cursor::Mem { current, .. } => current.as_ref().map(|e| {
                let v = e.key();
                Version {
                    key: v.user_key(),
                    ts: v.ts,
                    kind: v.kind,
                    value: v.value(),
                }
            }),
            Cursor::Table(it) => table_version(it),
            Cursor::Level(l) => l.iter.as_ref().and_then(table_version),
        }
    }

    pub fn advance(&mut self, reverse: bool) -> Result<()> {
        match self {
            Cursor::Mem { .. } => {
                self.step_mem(reverse);
                Ok(())
            }
            Cursor::Table(it) if reverse => it.prev(),
            Cursor::Table(it) => it.next(),
            Cursor::Level(l) => l.advance(reverse),
        }
    }

    /// Positions a table or level cursor at the first version at or past
    /// `start` in scan order (memtable cursors are positioned by their
    /// range when made).
    pub fn seek(&mut self, start: Bound<&[u8]>, reverse: bool) -> Result<()> {
        match self {
            Cursor::Mem { .. } => return Ok(()),
            Cursor::Table(it) => seek_table(it, start, reverse)?,
            Cursor::Level(l) => l.seek(start, reverse)?,
        }
        if let Bound::Excluded(k) = start {
            while self.current().is_some_and(|v| v.key == k) {
                self.advance(reverse)?;
            }
        }
        Ok(())
    }
}

fn table_version(it: &TableIter) -> Option<Version<'_>> {
    it.entry().map(|e| Version {
        key: e.user_key,
        ts: e.ts,
        kind: e.kind,
        value: e.value,
    })
}

fn seek_table(it: &mut TableIter, start: Bound<&[u8]>, reverse: bool) -> Result<()> {
    match (reverse, start) {
        (false, Bound::Unbounded) => it.seek_to_first(),
        (true, Bound::Unbounded) => it.seek_to_last(),
        (false, Bound::Included(k) | Bound::Excluded(k)) => it.seek(k),
        (true, Bound::Included(k) | Bound::Excluded(k)) => it.seek_for_prev(k),
    }
}

/// Walks the tables of one sorted level as one sequence.
pub(crate) struct LevelCursor<'a> {
    tables: &'a [Arc<TableFile>],
    /// Index in `tables` of the open table.
    idx: usize,
    iter: Option<TableIter>,
    fill_cache: bool,
    /// Given to every table iterator it opens.
    readahead: Option<Readahead>,
    /// Where the reader stops, in user keys: a table lying wholly past it
    /// (in scan order) is never opened, by the manifest's key range alone.
    end: Bound<Vec<u8>>,
}

impl<'a> LevelCursor<'a> {
    /// An unpositioned cursor; `tables` must be sorted and disjoint.
    pub fn new(tables: &'a [Arc<TableFile>]) -> LevelCursor<'a> {
        LevelCursor {
            tables,
            idx: 0,
            iter: None,
            fill_cache: true,
            readahead: None,
            end: Bound::Unbounded,
        }
    }

    /// A cursor whose reads do not fill the block cache (compaction inputs;
    /// see [`TableIter::without_cache_fill`]).
    pub fn without_cache_fill(tables: &'a [Arc<TableFile>]) -> LevelCursor<'a> {
        LevelCursor {
            fill_cache: false,
            ..LevelCursor::new(tables)
        }
    }

    /// This cursor, its table iterators reading ahead in `readahead`'s runs.
    pub fn with_readahead(mut self, readahead: Readahead) -> LevelCursor<'a> {
        self.readahead = Some(readahead);
        self
    }

    /// This cursor, stopping at `end`: the upper bound of a forward scan,
    /// the lower bound of a reverse one. Reading a table costs its index
    /// and a data block before its first key is known; a scan whose range
    /// ends just before a table boundary would otherwise pay that for a
    /// table it then discards (each probe of an empty range, each column
    /// range of a columnar scan).
    pub fn with_end(mut self, end: Bound<&[u8]>) -> LevelCursor<'a> {
        self.end = end.map(<[u8]>::to_vec);
        self
    }

    /// Whether every key of `t` lies past `end` in scan order.
    fn past_end(&self, t: &TableFile, reverse: bool) -> bool {
        match (&self.end, reverse) {
            (Bound::Unbounded, _) => false,
            (Bound::Included(e), false) => t.smallest() > e.as_slice(),
            (Bound::Excluded(e), false) => t.smallest() >= e.as_slice(),
            (Bound::Included(e), true) => t.largest() < e.as_slice(),
            (Bound::Excluded(e), true) => t.largest() <= e.as_slice(),
        }
    }

    /// Opens table `idx` (none past either end of the level, or past
    /// `end`: the cursor is then exhausted).
    fn open(&mut self, idx: usize, reverse: bool) -> Result<Option<&mut TableIter>> {
        self.idx = idx;
        let tables = self.tables;
        let table = tables.get(idx).filter(|t| !self.past_end(t, reverse));
        self.iter = match table {
            Some(t) => {
                let table = t.table()?;
                let it = if self.fill_cache {
                    TableIter::new(table)
                } else {
                    TableIter::without_cache_fill(table)
                };
                Some(match &self.readahead {
                    Some(ra) => it.with_readahead(ra.clone()),
                    None => it,
                })
            }
            None => None,
        };
        Ok(self.iter.as_mut())
    }

    fn seek(&mut self, start: Bound<&[u8]>, reverse: bool) -> Result<()> {
        let idx = match (reverse, start) {
            (false, Bound::Unbounded) => 0,
            (false, Bound::Included(k) | Bound::Excluded(k)) => {
                self.tables.partition_point(|t| t.largest() < k)
            }
            (true, Bound::Unbounded) => self.tables.len().wrapping_sub(1),
            (true, Bound::Included(k) | Bound::Excluded(k)) => self
                .tables
                .partition_point(|t| t.smallest() <= k)
                .wrapping_sub(1),
        };
        if let Some(it) = self.open(idx, reverse)? {
            seek_table(it, start, reverse)?;
        }
        self.skip_exhausted(reverse)
    }

    fn advance(&mut self, reverse: bool) -> Result<()> {
        if let Some(it) = self.iter.as_mut() {
            if reverse {
                it.prev()?;
            } else {
                it.next()?;
            }
        }
        self.skip_exhausted(reverse)
    }

    /// Moves on to the neighbouring table while the open one is used up.
    fn skip_exhausted(&mut self, reverse: bool) -> Result<()> {
        while self.iter.as_ref().is_some_and(|it| it.entry().is_none()) {
            let next = if reverse {
                self.idx.wrapping_sub(1)
            } else {
                self.idx + 1
            };
            match self.open(next, reverse)? {
                Some(it) if reverse => it.seek_to_last()?,
                Some(it) => it.seek_to_first()?,
                None => {}
            }
        }
        Ok(())
    }
}

/// A merge of cursors in scan order.
pub(crate) struct MergeIter<'a> {
    cursors: Vec<Cursor<'a>>,
    reverse: bool,
    /// The cursor holding the next version (recomputed on every advance).
    next: Option<usize>,
}

impl<'a> MergeIter<'a> {
    /// `cursors` must already be positioned.
    pub fn new(cursors: Vec<Cursor<'a>>, reverse: bool) -> MergeIter<'a> {
        let mut m = MergeIter {
            cursors,
            reverse,
            next: None,
        };
        m.next = m.pick();
        m
    }

    /// The cursor whose current version comes first in scan order.
    fn pick(&self) -> Option<usize> {
        let want = if self.reverse {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        let mut best: Option<(usize, Version<'_>)> = None;
        for (i, c) in self.cursors.iter().enumerate() {
            let Some(v) = c.current() else { continue };
            let better = match &best {
                None => true,
                Some((_, b)) => compare_versions(v.key, v.ts, b.key, b.ts) == want,
            };
            if better {
                best = Some((i, v));
            }
        }
        best.map(|(i, _)| i)
    }

    /// The next version in scan order without consuming it.
    pub fn current(&self) -> Option<Version<'_>> {
        self.cursors.get(self.next?)?.current()
    }

    /// Consumes the version `current` returns.
    pub fn advance(&mut self) -> Result<()> {
        if let Some(c) = self.next.and_then(|i| self.cursors.get_mut(i)) {
            let result = c.advance(self.reverse);
            // Recomputed even after an error, so `current` never points at
            // a cursor that moved.
            self.next = self.pick();
            result?;
        }
        Ok(())
    }
}
