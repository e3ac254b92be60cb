//! Chunking: folds a table's cells (and the older chunks among them) into
//! column chunks, piece by piece, each piece one atomic, conflict-checked
//! commit.
//!
//! A piece reads the merged view (chunks + cells) of a primary-key range
//! `[start, end)` at one snapshot, and commits, as one batch: range deletes
//! of every column's cells and chunks in that range, then the new chunks
//! (a batch's range deletes hide only versions older than the batch, so
//! the new chunks stay). The commit is validated like a transaction's: if
//! any cell or chunk in the range, or the table's catalog entry, changed
//! after the snapshot, it fails with `Conflict` and the piece is read again
//! (a few times, then chunking gives up on the table until next time).
//! Readers at older snapshots keep seeing the old entries (MVCC), and a
//! crash leaves either the piece's commit or nothing of it.
//!
//! A piece starts at the first cell after the previous piece (or at the
//! old chunk spanning it) and ends at a key no old chunk spans, so chunks
//! never overlap: each holds exactly the rows from its key up to the next
//! chunk's key. Chunkings of one database run one at a time.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::batch::WriteBatch;
use crate::commit::{CommitMsg, Completion};
use crate::db::Database;
use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::iter::prefix_successor;
use crate::key::{KeyRange, Timestamp};
use crate::txn::ConflictCheck;

use super::chunk::{self, CHUNK_ROWS};
use super::merged::{keyed_range, PkBound};
use super::reader::CellReader;
use super::scan::TableScanOptions;
use super::schema::Schema;
use super::table::Table;
use super::value::{encode_pk, Value};
use super::{catalog_key, chunk_prefix, chunk_table_range, column_prefix, table_range};

/// Rows rewritten per commit, about (pieces end at existing chunk keys, so
/// cells between two chunks can make one larger).
const PIECE_ROWS: usize = 256 * 1024;
/// Value bytes rewritten per commit, about: a piece also ends (at the next
/// key no old chunk spans) once its rows hold this much, so that wide rows
/// keep its batch far below the WAL record limit (1 GiB) and its memory
/// bounded.
const PIECE_BYTES: usize = 128 << 20;
/// Value bytes per chunk (all columns of its rows), about: a chunk also
/// ends before the row that would take it past this, so that no chunk
/// value nears the 256 MiB value limit (2048 rows of 130 KiB would pass
/// it and fail the chunking, and with it every `compact()`). A row larger
/// than this gets a chunk of its own.
const CHUNK_BYTES: usize = 16 << 20;
/// Tries per piece before chunking leaves the table for another time.
const ATTEMPTS: usize = 4;

/// What one chunking did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChunkingReport {
    /// Pieces committed.
    pub pieces: usize,
    /// Rows written into chunks.
    pub rows: u64,
    /// Chunk entries written (one per column per chunk).
    pub chunks: u64,
    /// Whether a piece kept conflicting with concurrent writes, so the
    /// rest of the table was left as it was.
    pub gave_up: bool,
}

enum Piece {
    /// No cell at or after the piece's start (or, automatic, only a
    /// short open-ended tail): chunking is done for now.
    Finished,
    Done {
        end: Option<Vec<u8>>,
        rows: u64,
        chunks: u64,
    },
    Conflict,
    /// The table was dropped (or replaced) meanwhile.
    Gone,
}

impl Table {
    /// Folds this table's cells into column chunks (see chunking.rs);
    /// reads see the same rows before and after. Also run by
    /// `Database::compact` / `compact_range` for the tables in the range.
    pub fn chunk(&self, db: &Database) -> Result<ChunkingReport> {
        if db.is_closed() {
            return Err(Error::closed());
        }
        self.chunk_engine(db.engine_ref(), false, PIECE_ROWS)
    }

    /// `chunk` with pieces of about `piece_rows` rows (for tests: many
    /// pieces over few rows).
    #[doc(hidden)]
    pub fn chunk_in_pieces(&self, db: &Database, piece_rows: usize) -> Result<ChunkingReport> {
        if db.is_closed() {
            return Err(Error::closed());
        }
        self.chunk_engine(db.engine_ref(), false, piece_rows.max(1))
    }

    /// `chunk` given the engine (the automatic chunking thread has no
    /// `Database` handle).
    /// `automatic`: leave a short open-ended tail (fewer than `PIECE_ROWS`
    /// rows at the table's end) as cells, so that appends running beside
    /// the chunker do not make it conflict over and over.
    fn chunk_engine(
        &self,
        engine: &Arc<Engine>,
        automatic: bool,
        piece_rows: usize,
    ) -> Result<ChunkingReport> {
        let _one_at_a_time = engine.columnar.chunking.lock();
        let mut report = ChunkingReport::default();
        // Stable while the lock is held: only chunking writes chunks, and a
        // piece replaces old chunks only inside its own range, which later
        // pieces do not meet.
        let spans = self.chunk_spans(&CellReader::at_visible(engine)?)?;
        let mut start: Option<Vec<u8>> = None;
        loop {
            let mut attempt = 0;
            let end = loop {
                attempt += 1;
                match self.chunk_piece(engine, &spans, &start, automatic, piece_rows)? {
                    Piece::Done { end, rows, chunks } => {
                        if chunks > 0 || rows > 0 {
                            *engine.columnar.chunked.lock().entry(self.id).or_default() += rows;
                        }
                        report.pieces += 1;
                        report.rows += rows;
                        report.chunks += chunks;
                        break end;
                    }
                    Piece::Finished => return Ok(report),
                    Piece::Conflict if attempt < ATTEMPTS => {}
                    Piece::Conflict => {
                        report.gave_up = true;
                        return Ok(report);
                    }
                    Piece::Gone => return Ok(report),
                }
            };
            match end {
                Some(e) => start = Some(e),
                None => return Ok(report),
            }
        }
    }

    /// Every chunk's first and last primary key (encoded), in order.
    fn chunk_spans(&self, reader: &CellReader) -> Result<Spans> {
        let pk_index = self.schema.pk_index();
        let ty = self.schema.columns[pk_index].ty;
        let prefix = chunk_prefix(self.id, pk_index as u16);
        let mut scan = reader.scan(keyed_range(&prefix, &None, &None, false));
        let mut out = Vec::new();
        loop {
            let batch = scan.next_batch(64, usize::MAX)?;
            if batch.is_empty() {
                return Ok(Spans(out));
            }
            for (k, v) in batch {
                let pks = chunk::decode(ty, &v)?;
                let mut last = Vec::new();
                if pks.len() > 0 {
                    encode_pk(&pks.value(pks.len() - 1), &mut last)?;
                }
                out.push((k[prefix.len()..].to_vec(), last));
            }
        }
    }

    /// Rewrites one piece: from the first cell at or after `start` (or the
    /// start of the old chunk holding it) for about `PIECE_ROWS` rows, up
    /// to a key no old chunk spans (see `Spans::safe_cut`).
    fn chunk_piece(
        &self,
        engine: &Arc<Engine>,
        spans: &Spans,
        start: &Option<Vec<u8>>,
        automatic: bool,
        piece_rows: usize,
    ) -> Result<Piece> {
        let reader = CellReader::at_visible(engine)?;
        let read_ts = reader.ts();
        let catalog = catalog_key(&self.name);
        match reader.get(&catalog)? {
            Some(raw) if Schema::decode(&raw)?.0 == self.id => {}
            _ => return Ok(Piece::Gone),
        }
        let n_cols = self.schema.columns.len();
        let pk_index = self.schema.pk_index();
        // Nothing to fold before the first cell: the piece starts there (or
        // at the start of the old chunk spanning it).
        let first_cell = {
            let markers = column_prefix(self.id, pk_index as u16);
            let from: PkBound = start.clone().map(|s| (s, true));
            let mut probe = reader.scan(keyed_range(&markers, &from, &None, false).limit(1));
            match probe.next_batch(1, usize::MAX)?.into_iter().next() {
                Some((k, _)) => k[markers.len()..].to_vec(),
                None => return Ok(Piece::Finished),
            }
        };
        let start = Some(spans.piece_start(&first_cell));
        let mut scan = self
            .scan_reader(
                reader,
                (0..n_cols).collect(),
                None,
                start.clone().map(|s| (s, true)),
                None,
                &TableScanOptions::default(),
            )?
            .uncounted();
        let mut cols: Vec<Vec<Value>> = vec![Vec::new(); n_cols];
        // Per row kept: its values' size (for the chunk byte budget).
        let mut row_bytes: Vec<usize> = Vec::new();
        let mut piece_bytes = 0;
        let mut end = None;
        'read: loop {
            let batch = scan.next_batch(CHUNK_ROWS)?;
            if batch.is_empty() {
                break;
            }
            for (col, values) in cols.iter_mut().zip(batch.columns) {
                col.extend(values);
            }
            while row_bytes.len() < cols[pk_index].len() {
                let next = row_bytes.len();
                // Never at row 0: a piece holds at least one row.
                if next >= piece_rows || piece_bytes >= PIECE_BYTES {
                    let mut pk = Vec::with_capacity(8);
                    encode_pk(&cols[pk_index][next], &mut pk)?;
                    if spans.safe_cut(&pk) {
                        for col in &mut cols {
                            col.truncate(next);
                        }
                        end = Some(pk);
                        break 'read;
                    }
                }
                let size: usize = cols.iter().map(|c| value_bytes(&c[next])).sum();
                row_bytes.push(size);
                piece_bytes += size;
            }
        }
        let rows = cols[pk_index].len();
        if automatic && end.is_none() && rows < piece_rows {
            return Ok(Piece::Finished);
        }
        let mut batch = WriteBatch::new();
        let mut read_ranges: Vec<KeyRange> = Vec::with_capacity(n_cols * 2);
        for c in 0..n_cols {
            for prefix in [
                column_prefix(self.id, c as u16),
                chunk_prefix(self.id, c as u16),
            ] {
                let from = [prefix.as_slice(), start.as_deref().unwrap_or_default()].concat();
                // (`start` is always set here; the range still begins at a
                // chunk start or a key no chunk spans.)
                let to = match &end {
                    Some(e) => [prefix.as_slice(), e].concat(),
                    None => prefix_successor(&prefix)
                        .ok_or_else(|| Error::internal("table key prefix has no successor"))?,
                };
                batch.delete_range_raw(&from, &to)?;
                read_ranges.push((Bound::Included(from), Bound::Excluded(to)));
            }
        }
        let mut chunks = 0;
        let mut first = 0;
        while first < rows {
            // Up to CHUNK_ROWS rows and about CHUNK_BYTES (at least a row).
            let mut last = first + 1;
            let mut bytes = row_bytes[first];
            while last < rows && last - first < CHUNK_ROWS && bytes + row_bytes[last] <= CHUNK_BYTES
            {
                bytes += row_bytes[last];
                last += 1;
            }
            let mut key_pk = Vec::with_capacity(8);
            encode_pk(&cols[pk_index][first], &mut key_pk)?;
            for (c, def) in self.schema.columns.iter().enumerate() {
                let mut key = chunk_prefix(self.id, c as u16);
                key.extend_from_slice(&key_pk);
                batch.put_raw(key, chunk::encode(def.ty, &cols[c][first..last]))?;
                chunks += 1;
            }
            first = last;
        }
        let check = ConflictCheck {
            read_ts,
            read_keys: vec![catalog],
            read_ranges,
        };
        // `scan` keeps the read timestamp pinned until the commit is
        // validated.
        let result = commit_checked(engine, batch, check);
        drop(scan);
        match result {
            Ok(_) => Ok(Piece::Done {
                end,
                rows: rows as u64,
                chunks,
            }),
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(Piece::Conflict),
            Err(e) => Err(e),
        }
    }
}

/// About the bytes `v` takes in a chunk.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Str(s) => s.len() + 5,
        Value::Bytes(b) => b.len() + 5,
        _ => 8,
    }
}

/// Commits `batch` if `check` passes (as a transaction's commit is).
/// Not synced: losing it in a crash leaves the cells it would replace.
fn commit_checked(
    engine: &Arc<Engine>,
    batch: WriteBatch,
    check: ConflictCheck,
) -> Result<Timestamp> {
    let check = Box::new(check);
    let (batch, check) = match crate::commit::try_commit_inline(engine, batch, Some(check), false) {
        Ok(result) => return result,
        Err((batch, check)) => (batch, check.unwrap_or_default()),
    };
    let (tx, rx) = crossbeam_channel::bounded(1);
    engine.send_commit(CommitMsg::Write {
        batch,
        sync: false,
        check: Some(check),
        done: Completion::new(move |r| {
            let _ = tx.send(r);
        }),
    });
    rx.recv().unwrap_or_else(|_| Err(Error::closed()))
}

/// The old chunks' `(first pk, last pk)`, in key order (chunks never
/// overlap).
struct Spans(Vec<(Vec<u8>, Vec<u8>)>);

impl Spans {
    /// The chunk whose first key is the greatest at or below `pk`.
    fn at_or_before(&self, pk: &[u8]) -> Option<&(Vec<u8>, Vec<u8>)> {
        let i = self.0.partition_point(|(first, _)| first.as_slice() <= pk);
        i.checked_sub(1).map(|i| &self.0[i])
    }

    /// Whether a piece may end just before `pk` without cutting an old
    /// chunk: no chunk has rows both below and at-or-above it.
    fn safe_cut(&self, pk: &[u8]) -> bool {
        match self.at_or_before(pk) {
            None => true,
            Some((first, last)) => first.as_slice() == pk || last.as_slice() < pk,
        }
    }

    /// Where a piece whose first cell is `pk` starts: the old chunk
    /// spanning `pk`, if any, is rewritten with it.
    fn piece_start(&self, pk: &[u8]) -> Vec<u8> {
        match self.at_or_before(pk) {
            Some((first, last)) if last.as_slice() >= pk => first.clone(),
            _ => pk.to_vec(),
        }
    }
}

/// Rows written to a table (through `Table` writes on a database) after
/// which a background thread chunks it, when automatic compaction is on.
const AUTO_CHUNK_ROWS: u64 = PIECE_ROWS as u64;

/// Counts `rows` written to `table`; past `AUTO_CHUNK_ROWS` (and with
/// automatic compaction on) starts a thread that chunks the table, unless
/// one is running (the rows then count towards the next one). Its errors
/// are dropped: a conflict or a closed database leaves the cells for the
/// next chunking, and a write failure is the engine's background error.
pub(crate) fn note_writes(table: &Table, engine: &Arc<Engine>, rows: usize) {
    if !engine.options.auto_compaction || rows == 0 {
        return;
    }
    let state = &engine.columnar;
    {
        let mut written = state.written.lock();
        let n = written.entry(table.id).or_default();
        *n += rows as u64;
        if *n < AUTO_CHUNK_ROWS || state.chunker_busy.swap(true, Ordering::AcqRel) {
            return;
        }
        *n = 0;
    }
    // Held from the closed check until the handle is stored, so a thread
    // is never started after shutdown joined the last one, and a newer
    // handle is never overwritten by an older one.
    let mut slot = state.chunker.lock();
    if slot.closed {
        state.chunker_busy.store(false, Ordering::Release);
        return;
    }
    let (engine2, table) = (engine.clone(), table.clone());
    let spawned = std::thread::Builder::new()
        .name("toondb-chunker".into())
        .spawn(move || {
            let _ = table.chunk_engine(&engine2, true, PIECE_ROWS);
            engine2
                .columnar
                .chunker_busy
                .store(false, Ordering::Release);
        });
    match spawned {
        // The previous thread has finished (`chunker_busy` was false).
        Ok(handle) => drop(slot.handle.replace(handle)),
        Err(_) => state.chunker_busy.store(false, Ordering::Release),
    }
}

/// Waits for the automatic chunking thread, if one runs, and lets no new
/// one start: at shutdown, once commits are refused, so it ends at its
/// next commit at the latest. Returns whether it panicked.
pub(crate) fn join_chunker(engine: &Engine) -> bool {
    let handle = {
        let mut slot = engine.columnar.chunker.lock();
        slot.closed = true;
        slot.handle.take()
    };
    handle.is_some_and(|h| h.join().is_err())
}

/// Whether `[start, end)` meets the range `lower..upper`.
fn meets(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>, start: &[u8], end: &[u8]) -> bool {
    let above_lower = match lower {
        Bound::Included(l) | Bound::Excluded(l) => l.as_slice() < end,
        Bound::Unbounded => true,
    };
    let below_upper = match upper {
        Bound::Included(u) => start <= u.as_slice(),
        Bound::Excluded(u) => start < u.as_slice(),
        Bound::Unbounded => true,
    };
    above_lower && below_upper
}

/// Chunks every table with cells or chunks in `lower..upper` (the hook of
/// `Database::compact_range`, run before the compaction so that it drops
/// the folded cells). A table that cannot be chunked (`InvalidArgument`:
/// a value too close to the value limit for a chunk) is left as it is.
pub(crate) fn chunk_tables_in(
    db: &Database,
    lower: &Bound<Vec<u8>>,
    upper: &Bound<Vec<u8>>,
) -> Result<()> {
    if !meets(lower, upper, super::RESERVED_PREFIX, super::RESERVED_END) {
        return Ok(());
    }
    for t in db.tables()? {
        let (s, e) = table_range(t.id);
        let (cs, ce) = chunk_table_range(t.id);
        if meets(lower, upper, &s, &e) || meets(lower, upper, &cs, &ce) {
            match t.chunk(db) {
                // A row no chunk can hold (a value within a chunk's few
                // bytes of overhead of the value limit): the rest of this
                // table stays in cells, and the compaction still runs.
                Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
                other => {
                    other?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_never_cut_an_old_chunk() {
        let k = |s: &str| s.as_bytes().to_vec();
        let spans = Spans(vec![(k("b"), k("d")), (k("f"), k("f")), (k("h"), k("k"))]);
        for (pk, safe) in [
            ("a", true),
            ("b", true),
            ("c", false),
            ("d", false),
            ("e", true),
            ("f", true),
            ("g", true),
            ("i", false),
            ("k", false),
            ("l", true),
        ] {
            assert_eq!(spans.safe_cut(pk.as_bytes()), safe, "{pk}");
        }
        assert_eq!(spans.piece_start(b"c"), k("b"));
        assert_eq!(spans.piece_start(b"e"), k("e"));
        assert_eq!(spans.piece_start(b"j"), k("h"));
        assert_eq!(spans.piece_start(b"a"), k("a"));
        assert!(meets(
            &Bound::Unbounded,
            &Bound::Excluded(k("c")),
            b"b",
            b"z"
        ));
        assert!(!meets(
            &Bound::Included(k("z")),
            &Bound::Unbounded,
            b"b",
            b"z"
        ));
    }
}
