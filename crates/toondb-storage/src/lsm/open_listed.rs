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
//! (docs/performance.md, "Reopen: tables opened beside the replay").

use std::path::Path;
use std::thread::{Scope, ScopedJoinHandle};

use super::table_file::TableOpener;
use crate::error::{Error, Result};
use crate::io::FileSystem;
use crate::sstable::{table_file_name, Table};
use crate::version::TableMeta;

/// Fewer tables than this open on the calling thread: a thread costs more
/// than the few opens it would take over.
const TABLES_PER_THREAD_MIN: usize = 8;
/// At most this many opening threads. Measured on 2 cores (a 1 GiB kill
/// image, 64 tables, engine-only open): 2 took a cold open from a median of
/// 22.5-27.9 ms to 16.2-20.0 ms and 4 did no better; with files cached,
/// 4 threads crowded the replay (+1.4 ms) and 2 were within noise.
const THREADS_MAX: usize = 2;

/// Opens every table in `listed` while `during` runs on the calling
/// thread, and returns both outcomes; the tables in `listed`'s order.
/// When opening fails, the error is that of the first failing table in
/// that order, whatever order the threads got to them in.
pub(crate) fn open_listed_during<R>(
    opener: &TableOpener,
    fs: &dyn FileSystem,
    dir: &Path,
    listed: &[TableMeta],
    during: impl FnOnce() -> R,
) -> (Result<Vec<Table>>, R) {
    let threads = (listed.len() / TABLES_PER_THREAD_MIN).min(THREADS_MAX);
    if threads == 0 {
        // Tables first, as before this module: a damaged table is reported
        // ahead of a damaged WAL.
        let tables = open_all(opener, fs, dir, listed);
        return (tables, during());
    }
    std::thread::scope(|scope| {
        let chunk = listed.len().div_ceil(threads);
        let workers: Vec<Worker<'_, '_>> = listed
            .chunks(chunk)
            .map(|part| Worker::start(scope, opener, fs, dir, part))
            .collect();
        let outcome = during();
        let mut tables = Vec::with_capacity(listed.len());
        let mut failed = None;
        for worker in workers {
            match worker.finish(opener, fs, dir) {
                Ok(part) if failed.is_none() => tables.extend(part),
                Ok(_) => {}
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        (failed.map_or(Ok(tables), Err), outcome)
    })
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

    fn finish(self, opener: &TableOpener, fs: &dyn FileSystem, dir: &Path) -> Result<Vec<Table>> {
        match self {
            // A panic opening a table unwinds the open, as it did when the
            // opening thread opened them all.
            Worker::Started(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Worker::NotStarted(part) => open_all(opener, fs, dir, part),
        }
    }
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
