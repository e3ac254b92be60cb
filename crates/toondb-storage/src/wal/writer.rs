//! Appending to one WAL segment.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::io::{FileSystem, WritableFile};

use super::entry::{
    encode_predecessor, encode_sync_point, Predecessor, SyncPoint, SYNC_POINT_FRAME_LEN,
};
use super::{encode_header, segment_file_name, SEGMENT_HEADER_LEN};

/// The open, current segment of the log.
pub struct WalWriter {
    file: Box<dyn WritableFile>,
    number: u64,
    /// Set by the first failed append or sync. After a failed append the file
    /// may end in a partial record, and after a failed fsync the kernel may
    /// have dropped dirty pages it still reports as written; appending more
    /// would turn that recoverable torn tail into damage in the middle of the
    /// log, so the writer refuses all further work.
    failed: bool,
    /// End of the zero-filled space ahead of the logical end (0: none).
    preallocated_to: u64,
    /// Offset through which the last successful fdatasync made the segment
    /// durable: what the next sync point may claim.
    synced_upto: u64,
    /// Logical end right after the last [`WalWriter::sync_and_mark`]: while
    /// the segment still ends there, every byte in it is durable and a sync
    /// point already says so.
    marked_end: u64,
    /// Written as the first frame of the first group (version 3): the
    /// segment before this one and where it ended, or `segment: 0` when
    /// every earlier segment was durable before this one was created.
    /// `None` for segments that never get groups from the engine (backup,
    /// replay's repairs) and in tests of the older layout.
    predecessor: Option<Predecessor>,
}

/// Zeroed space added at a time when durable writes need it.
const PREALLOCATE_CHUNK: u64 = 1 << 20;

impl WalWriter {
    /// Creates segment `number` in `dir` (truncating any existing file),
    /// writes and syncs the header, and syncs `dir` so the new file's name is
    /// durable.
    pub fn create(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<WalWriter> {
        let wal = Self::create_unlisted(fs, dir, number, None)?;
        fs.sync_dir(dir)?;
        Ok(wal)
    }

    /// [`WalWriter::create`] for the segment that follows segment
    /// `previous.segment` at a memtable seal, which may not be synced yet
    /// (its sync runs in the background): the first group appended here
    /// records `previous` so that replay can tell whether that segment lost
    /// bytes (docs/format-wal.md, *New segments*).
    pub fn create_after(
        fs: &dyn FileSystem,
        dir: &Path,
        number: u64,
        previous: Predecessor,
    ) -> Result<WalWriter> {
        let wal = Self::create_unlisted(fs, dir, number, Some(previous))?;
        fs.sync_dir(dir)?;
        Ok(wal)
    }

    /// [`WalWriter::create`] without the directory sync: the new name is not
    /// yet durable. Only for a caller that syncs `dir` itself before
    /// anything is appended (an open: its manifest switch ends with a
    /// directory sync, and it returns only after that).
    pub fn create_unlisted(
        fs: &dyn FileSystem,
        dir: &Path,
        number: u64,
        predecessor: Option<Predecessor>,
    ) -> Result<WalWriter> {
        let path = dir.join(segment_file_name(number));
        let mut file = fs.create_log(&path)?;
        // The header is durable before any record can be appended, which is
        // what lets replay call a short header a torn creation rather than
        // corruption.
        file.append(&encode_header())?;
        file.sync_data()?;
        Ok(WalWriter {
            file,
            number,
            failed: false,
            preallocated_to: 0,
            synced_upto: SEGMENT_HEADER_LEN as u64,
            marked_end: SEGMENT_HEADER_LEN as u64,
            predecessor,
        })
    }

    /// Starts a commit group in `out`: a sync point saying how far this
    /// segment is durable now. Every group written with [`append`] or
    /// [`append_durable`] must begin with one, so that any later group that
    /// survives a power cut tells replay which damage lies before a
    /// completed sync (docs/format-wal.md, *Replay*). A sync that completes
    /// after this call only makes the claim conservative.
    ///
    /// [`append`]: WalWriter::append
    /// [`append_durable`]: WalWriter::append_durable
    pub fn begin_group(&self, out: &mut Vec<u8>) {
        if let Some(p) = self.predecessor {
            if self.file.len() == SEGMENT_HEADER_LEN as u64 {
                encode_predecessor(p, out);
            }
        }
        let point = SyncPoint {
            segment: self.number,
            synced_upto: self.synced_upto,
        };
        encode_sync_point(point, out);
    }

    /// Appends already-framed bytes (one or more frames built with
    /// `encode_frame`) in ONE write call; on return they reached the OS.
    pub fn append(&mut self, framed: &[u8]) -> Result<()> {
        self.check_usable()?;
        if framed.is_empty() {
            return Ok(());
        }
        // Failed until the call returns: one that panics (a file-system
        // bug) may have left a partial record, and a later sync point must
        // not claim the segment past it.
        self.failed = true;
        let result = self.file.append(framed);
        self.failed = result.is_err();
        result.map_err(|e| e.context(format_args!("appending to WAL segment {}", self.number)))
    }

    /// Appends already-framed bytes and makes the whole segment durable,
    /// in one direct write when the file system allows (io/direct.rs).
    pub fn append_durable(&mut self, framed: &[u8]) -> Result<()> {
        self.check_usable()?;
        self.failed = true; // as in `append`, until the call returns
        let result = self.file.append_durable(framed);
        self.failed = result.is_err();
        if result.is_ok() {
            self.synced_upto = self.file.len();
        }
        result.map_err(|e| {
            e.context(format_args!(
                "durably appending to WAL segment {}",
                self.number
            ))
        })
    }

    /// Makes sure `upcoming` bytes can be appended into zero-filled,
    /// already-durable space, so the fdatasync after them does not have to
    /// persist a larger file size too (on this machine that took a small
    /// synced write from ~120 to ~85 µs). Only worth it for synced writes.
    /// Failing to write the zeros only costs the speed-up; failing to sync
    /// them is a failed sync like any other (earlier unsynced frames may be
    /// lost), so it poisons the writer.
    pub fn preallocate_for(&mut self, upcoming: u64) -> Result<()> {
        let end = self.file.len() + upcoming;
        if self.failed || end <= self.preallocated_to {
            return Ok(());
        }
        let extra = upcoming.max(PREALLOCATE_CHUNK);
        match self.file.preallocate(extra) {
            Ok(()) => {
                self.sync()?;
                self.preallocated_to = self.file.len() + extra;
            }
            Err(_) => self.preallocated_to = u64::MAX, // stop trying
        }
        Ok(())
    }

    /// fdatasync.
    pub fn sync(&mut self) -> Result<()> {
        self.check_usable()?;
        self.failed = true; // as in `append`, until the call returns
        let result = self.file.sync_data();
        self.failed = result.is_err();
        if result.is_ok() {
            self.synced_upto = self.file.len();
        }
        result.map_err(|e| e.context(format_args!("syncing WAL segment {}", self.number)))
    }

    /// Makes the segment durable and records that in it: fdatasync, then a
    /// durable sync point claiming every byte before it. Used where the
    /// engine promises that everything acknowledged is on disk (close)
    /// while this segment stays the last one: without the sync point, later
    /// damage to those bytes with nothing valid claiming them would read
    /// as an unsynced torn tail and be dropped instead of reported. A
    /// segment already ending in such a sync point, or holding no records,
    /// is only synced.
    pub fn sync_and_mark(&mut self) -> Result<()> {
        self.sync()?;
        let len = self.file.len();
        if len == self.marked_end || len <= SEGMENT_HEADER_LEN as u64 {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(SYNC_POINT_FRAME_LEN);
        self.begin_group(&mut frame);
        // A plain write and sync, not `append_durable`: a direct write
        // would pad the file with zeros to a block boundary, and a closed
        // segment ending exactly at its last frame is simpler to inspect.
        self.append(&frame)?;
        self.sync()?;
        self.marked_end = self.file.len();
        Ok(())
    }

    /// Bytes in the segment including the header (the logical end, not
    /// preallocated space).
    pub fn len(&self) -> u64 {
        self.file.len()
    }

    /// This segment's number.
    pub fn number(&self) -> u64 {
        self.number
    }

    fn check_usable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "WAL segment {} is unusable after an earlier write or sync failure",
                    self.number
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;
    use crate::io::{OsFileSystem, WrappedFs, WriteHook};
    use crate::record::encode_frame;
    use crate::wal::entry::SYNC_POINT_FRAME_LEN;
    use crate::wal::{replay, SegmentRead, SEGMENT_HEADER_LEN};

    /// Delegates to the real file system, but every file it creates accepts
    /// only `budget` bytes: the append that crosses the budget writes the part
    /// that fits (a short write) and then fails.
    struct FailingFs {
        budget: u64,
        /// Panic after the short write instead of failing.
        panic: bool,
    }

    struct FailingFile {
        inner: Box<dyn WritableFile>,
        budget: u64,
        panic: bool,
    }

    impl WritableFile for FailingFile {
        fn append(&mut self, data: &[u8]) -> Result<()> {
            let fits = usize::try_from(self.budget).unwrap_or(usize::MAX);
            if data.len() <= fits {
                self.budget -= data.len() as u64;
                return self.inner.append(data);
            }
            self.inner.append(&data[..fits])?;
            self.budget = 0;
            assert!(!self.panic, "injected: a panic after a short write");
            Err(Error::io(
                io::Error::other("injected: no space left"),
                "writing",
            ))
        }
        fn sync_data(&mut self) -> Result<()> {
            self.inner.sync_data()
        }
        fn len(&self) -> u64 {
            self.inner.len()
        }
    }

    impl WriteHook for FailingFs {
        fn wrap(&self, _path: &Path, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
            Box::new(FailingFile {
                inner,
                budget: self.budget,
                panic: self.panic,
            })
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
        out
    }

    /// A commit group as the engine writes it: a sync point, then one batch.
    fn group(w: &WalWriter, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        w.begin_group(&mut out);
        let start = crate::wal::begin_batch_frame(&mut out);
        out.extend_from_slice(payload);
        crate::wal::finish_batch_frame(&mut out, start);
        out
    }

    fn segment_path(dir: &Path, number: u64) -> PathBuf {
        dir.join(segment_file_name(number))
    }

    #[test]
    fn create_writes_header_and_tracks_len() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(&OsFileSystem, dir.path(), 9).unwrap();
        assert_eq!(w.len(), SEGMENT_HEADER_LEN as u64);
        let mut two = framed(b"one");
        two.extend_from_slice(&framed(b"two"));
        w.append(&two).unwrap();
        w.append(&[]).unwrap();
        w.sync().unwrap();
        assert_eq!(w.len(), (SEGMENT_HEADER_LEN + two.len()) as u64);
        let on_disk = std::fs::read(segment_path(dir.path(), 9)).unwrap();
        assert_eq!(&on_disk[..SEGMENT_HEADER_LEN], &encode_header());
        assert_eq!(on_disk.len() as u64, w.len());
    }

    #[test]
    fn create_truncates_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(segment_path(dir.path(), 3), vec![0xAB; 100]).unwrap();
        let w = WalWriter::create(&OsFileSystem, dir.path(), 3).unwrap();
        assert_eq!(w.len(), SEGMENT_HEADER_LEN as u64);
        let report = replay(&OsFileSystem, dir.path(), &[3], SegmentRead::Copy, |_| {
            Ok(())
        })
        .unwrap();
        assert_eq!(report.records, 0);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn append_failure_is_io_error_and_poisons_writer() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"a record of some length";
        // No sync happens, so every group's sync point claims the same
        // offset and all groups have one length.
        let probe = WalWriter::create(&OsFileSystem, dir.path(), 99).unwrap();
        let record = group(&probe, payload);
        // Room for the header, two whole groups and half of a third (its
        // sync point and part of its batch frame).
        let half = record.len() / 2;
        assert!(half > SYNC_POINT_FRAME_LEN);
        let budget = (SEGMENT_HEADER_LEN + 2 * record.len() + half) as u64;
        let fs = WrappedFs::os(FailingFs {
            budget,
            panic: false,
        });
        let mut w = WalWriter::create(&fs, dir.path(), 99).unwrap();
        w.append(&group(&w, payload)).unwrap();
        w.append(&group(&w, payload)).unwrap();
        let err = w.append(&group(&w, payload)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("WAL segment 99"), "{err}");
        // Later calls must not stack records behind the partial one.
        assert_eq!(w.append(&record).unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(w.sync().unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(w.sync_and_mark().unwrap_err().kind(), ErrorKind::Io);

        // The short write is a torn tail for recovery: two records survive.
        let mut seen = 0;
        let report = replay(&OsFileSystem, dir.path(), &[99], SegmentRead::Copy, |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2);
        let tail = report.dropped_tail.unwrap();
        let torn_batch = SEGMENT_HEADER_LEN + 2 * record.len() + SYNC_POINT_FRAME_LEN;
        assert_eq!(tail.offset, torn_batch as u64);
        assert_eq!(tail.dropped_bytes, (half - SYNC_POINT_FRAME_LEN) as u64);
        assert_eq!(tail.reason, "truncated record");
    }

    #[test]
    fn sync_points_claim_what_was_synced_when_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(&OsFileSystem, dir.path(), 5).unwrap();
        let claim = |w: &WalWriter| {
            let mut out = Vec::new();
            w.begin_group(&mut out);
            out[FRAME_CLAIM..].to_vec()
        };
        let header = (SEGMENT_HEADER_LEN as u64).to_le_bytes().to_vec();
        assert_eq!(claim(&w), header);
        w.append(&group(&w, b"one")).unwrap();
        assert_eq!(claim(&w), header, "an unsynced append claims nothing");
        w.sync().unwrap();
        assert_eq!(claim(&w), w.len().to_le_bytes());
        w.append_durable(&group(&w, b"two")).unwrap();
        assert_eq!(claim(&w), w.len().to_le_bytes());
        w.append(&group(&w, b"three")).unwrap();
        assert_ne!(claim(&w), w.len().to_le_bytes());

        // Close: synced, then a durable sync point claiming everything.
        let before = w.len();
        w.sync_and_mark().unwrap();
        assert_eq!(w.len(), before + SYNC_POINT_FRAME_LEN as u64);
        let on_disk = std::fs::read(segment_path(dir.path(), 5)).unwrap();
        let mark = &on_disk[before as usize..w.len() as usize];
        assert_eq!(&mark[FRAME_CLAIM..], before.to_le_bytes());
        // Nothing new since: no second sync point.
        w.sync_and_mark().unwrap();
        assert_eq!(w.len(), before + SYNC_POINT_FRAME_LEN as u64);
        let report = replay(&OsFileSystem, dir.path(), &[5], SegmentRead::Copy, |_| {
            Ok(())
        })
        .unwrap();
        assert_eq!((report.records, report.dropped_tail), (3, None));
    }

    /// Where a sync point frame holds its `synced_upto` field.
    const FRAME_CLAIM: usize = SYNC_POINT_FRAME_LEN - 8;

    #[test]
    fn an_empty_segment_gets_no_sync_point_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(&OsFileSystem, dir.path(), 6).unwrap();
        w.sync_and_mark().unwrap();
        assert_eq!(w.len(), SEGMENT_HEADER_LEN as u64);
    }

    #[test]
    fn header_write_failure_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = WrappedFs::os(FailingFs {
            budget: 5,
            panic: false,
        });
        let err = WalWriter::create(&fs, dir.path(), 1).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Io);
    }

    /// An append that panics after a short write (a file-system bug) leaves
    /// the writer as unusable as one that failed: a sync point written
    /// after it would claim the segment past a partial record.
    #[test]
    fn a_panic_inside_append_makes_the_writer_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let payload = b"a record of some length";
        let probe = WalWriter::create(&OsFileSystem, dir.path(), 7).unwrap();
        let record = group(&probe, payload);
        let budget = (SEGMENT_HEADER_LEN + record.len() + record.len() / 2) as u64;
        let fs = WrappedFs::os(FailingFs {
            budget,
            panic: true,
        });
        let mut w = WalWriter::create(&fs, dir.path(), 7).unwrap();
        w.append(&group(&w, payload)).unwrap();
        let next = group(&w, payload);
        let panicked =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.append(&next))).is_err();
        assert!(panicked, "the injected panic did not happen");
        assert_eq!(w.sync().unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(w.sync_and_mark().unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(w.append(&record).unwrap_err().kind(), ErrorKind::Io);
    }
}
