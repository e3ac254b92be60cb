//! Opening the tables a manifest lists, when a database opens.
//!
//! Each must exist and hold the key range the manifest records. Opening
//! one reads its inode and the end of the file (footer, metaindex,
//! properties, range tombstones); from a cold page cache those are a few
//! device reads per table, and done one table after the other they were
//! the part of a cold reopen that grew with the database (a 1 GiB database
//! has ~60 tables). So a database with many tables opens them on a few
//! threads, each waiting on its own reads, while the opening thread
//! replays the WAL, which needs nothing from the tables
//! (docs/performance.md, "Session 37").
//!
//! What the open reports is what it reported when it opened the tables
//! and built the levels first and replayed after: the first damaged table
//! in the manifest's order, or levels the tables cannot form, ahead of
//! anything the replay met; and a failed open changes no file, so the
//! replay waits for the levels ([`TablesOpening::wait`]) before it repairs
//! the WAL (cuts a torn tail, rewrites a torn header, empties segments).

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::Path;
use std::thread::{Scope, ScopedJoinHandle};

use super::table_file::{TableFile, TableOpener};
use super::Levels;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::sstable::{table_file_name, Table};
use crate::version::TableMeta;

/// Fewer tables than this open on the calling thread: a thread costs more
/// than the few opens it would take over.
const TABLES_PER_THREAD_MIN: usize = 8;
/// At most this many opening threads (one per `TABLES_PER_THREAD_MIN`
/// tables). Measured on 2 cores (a 1 GiB kill image, 64 tables,
/// engine-only open): 2 took a cold open from a median of 22.5-27.9 ms to
/// 16.2-20.0 ms and 4 did no better; with files cached, 4 threads crowded
/// the replay (+1.4 ms) and 2 were within noise.
const THREADS_MAX: usize = 2;

/// Opens every table in `listed` and builds the levels they form while
/// `during` runs on the calling thread (`during` calls
/// [`TablesOpening::wait`] before it changes any file). Returns the levels
/// and what `during` returned; a failing table's error (the first in
/// `listed`'s order) or the levels' wins over whatever `during` returned
/// or how it ended, as does a panic opening a table listed before any
/// failing one.
pub(crate) fn open_listed_during<T>(
    opener: &TableOpener,
    fs: &dyn FileSystem,
    dir: &Path,
    listed: &[TableMeta],
    during: impl FnOnce(&TablesOpening<'_, '_>) -> Result<T>,
) -> Result<(Levels, T)> {
    let threads = (listed.len() / TABLES_PER_THREAD_MIN).min(THREADS_MAX);
    if threads == 0 {
        let tables = open_all(opener, fs, dir, listed)?;
        let levels = into_levels(opener, dir, listed, tables)?;
        let opened = TablesOpening {
            state: RefCell::new(Opening::Done(Joined::Opened)),
            opener,
            fs,
            dir,
            listed,
        };
        return Ok((levels, during(&opened)?));
    }
    std::thread::scope(|scope| {
        let chunk = listed.len().div_ceil(threads);
        let workers = listed
            .chunks(chunk)
            .map(|part| Worker::start(scope, opener, fs, dir, part))
            .collect();
        let opening = TablesOpening {
            state: RefCell::new(Opening::Running(workers, Vec::new())),
            opener,
            fs,
            dir,
            listed,
        };
        // Caught so that a table listed before it can still be reported;
        // re-raised otherwise. Nothing `during` built survives a panic.
        let outcome = catch_unwind(AssertUnwindSafe(|| during(&opening)));
        opening.join();
        match opening.state.into_inner() {
            Opening::Done(Joined::Failed(e)) => Err(e),
            Opening::Done(Joined::Panicked(panic)) => resume_unwind(panic),
            Opening::Done(Joined::Opened) | Opening::Running(..) => Err(Error::internal(
                "the table-opening threads were joined without an outcome",
            )),
            Opening::Levels(levels) => match outcome {
                Ok(during) => Ok((levels, during?)),
                Err(panic) => resume_unwind(panic),
            },
        }
    })
}

/// The tables being opened beside the replay.
pub(crate) struct TablesOpening<'scope, 'env> {
    state: RefCell<Opening<'scope, 'env>>,
    opener: &'env TableOpener,
    fs: &'env dyn FileSystem,
    dir: &'env Path,
    listed: &'env [TableMeta],
}

enum Opening<'scope, 'env> {
    /// The threads, and the tables their joins have brought in so far.
    Running(Vec<Worker<'scope, 'env>>, Vec<Table>),
    /// Every table opened and the levels built (kept until the caller
    /// takes them).
    Levels(Levels),
    Done(Joined),
}

enum Joined {
    /// Every table opened and the levels built, and the caller has them
    /// (the inline path).
    Opened,
    Failed(Error),
    Panicked(Box<dyn Any + Send>),
}

impl TablesOpening<'_, '_> {
    /// Waits until every table is open and the levels are built: `Ok` if
    /// they are, an error otherwise (never the one the open reports, which
    /// is the tables' or the levels').
    pub(crate) fn wait(&self) -> Result<()> {
        self.join();
        match &*self.state.borrow() {
            Opening::Levels(_) | Opening::Done(Joined::Opened) => Ok(()),
            _ => Err(Error::internal("a table failed to open")),
        }
    }

    /// Joins every thread, in `listed`'s order: the first failing table's
    /// error, or a panic in a share before it, is the outcome; later
    /// shares' errors and panics are dropped. Then builds the levels.
    fn join(&self) {
        let (opener, fs, dir) = (self.opener, self.fs, self.dir);
        let mut state = self.state.borrow_mut();
        let Opening::Running(workers, tables) = &mut *state else {
            return;
        };
        let mut outcome = None;
        for worker in std::mem::take(workers) {
            match worker.finish(opener, fs, dir) {
                Ok(Ok(part)) => tables.extend(part),
                Ok(Err(e)) => {
                    outcome.get_or_insert(Joined::Failed(e));
                }
                Err(panic) => {
                    outcome.get_or_insert(Joined::Panicked(panic));
                }
            }
        }
        *state = match outcome {
            Some(joined) => Opening::Done(joined),
            None => match into_levels(opener, dir, self.listed, std::mem::take(tables)) {
                Ok(levels) => Opening::Levels(levels),
                Err(e) => Opening::Done(Joined::Failed(e)),
            },
        };
    }
}

/// One thread's share of the tables, or the share itself when its thread
/// could not be started (the caller then opens it).
enum Worker<'scope, 'env> {
    Started(ScopedJoinHandle<'scope, Result<Vec<Table>>>),
    NotStarted(&'env [TableMeta]),
}

impl<'scope, 'env> Worker<'scope, 'env> {
    fn start(
        scope: &'scope Scope<'scope, 'env>,
        opener: &'env TableOpener,
        fs: &'env dyn FileSystem,
        dir: &'env Path,
        part: &'env [TableMeta],
    ) -> Worker<'scope, 'env> {
        std::thread::Builder::new()
            .name("toondb-open".to_owned())
            .spawn_scoped(scope, move || open_all(opener, fs, dir, part))
            .map_or(Worker::NotStarted(part), Worker::Started)
    }

    /// The share's tables, or the first failing one's error; `Err` if
    /// opening one panicked.
    fn finish(
        self,
        opener: &TableOpener,
        fs: &dyn FileSystem,
        dir: &Path,
    ) -> std::thread::Result<Result<Vec<Table>>> {
        match self {
            Worker::Started(handle) => handle.join(),
            Worker::NotStarted(part) => {
                catch_unwind(AssertUnwindSafe(|| open_all(opener, fs, dir, part)))
            }
        }
    }
}

/// The levels `tables` (opened from `listed`, in its order) form.
fn into_levels(
    opener: &TableOpener,
    dir: &Path,
    listed: &[TableMeta],
    tables: Vec<Table>,
) -> Result<Levels> {
    let files = tables.into_iter().zip(listed).map(|(table, meta)| {
        let path = dir.join(table_file_name(meta.number));
        let file = TableFile::new(opener, table, meta.clone(), path);
        (meta.level as usize, file)
    });
    Levels::build(files)
}

fn open_all(
    opener: &TableOpener,
    fs: &dyn FileSystem,
    dir: &Path,
    listed: &[TableMeta],
) -> Result<Vec<Table>> {
    listed
        .iter()
        .map(|meta| open_one(opener, fs, dir, meta))
        .collect()
}

/// Table `meta.number`, checked against what the manifest records of it.
fn open_one(
    opener: &TableOpener,
    fs: &dyn FileSystem,
    dir: &Path,
    meta: &TableMeta,
) -> Result<Table> {
    let path = dir.join(table_file_name(meta.number));
    if !fs.exists(&path) {
        return Err(Error::corruption(format!(
            "table {} is listed in the manifest but missing",
            path.display()
        )));
    }
    let table = opener
        .open(meta.number, &path)
        .map_err(|e| e.context(format_args!("opening table {}", path.display())))?;
    // Levels are ordered by the manifest's key ranges; a file that
    // disagrees would be searched in the wrong place.
    let summary = table.summary();
    if summary.smallest != meta.smallest || summary.largest != meta.largest {
        return Err(Error::corruption(format!(
            "table {} holds a different key range than the manifest records",
            path.display()
        )));
    }
    Ok(table)
}
