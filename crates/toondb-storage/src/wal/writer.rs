//! Appending to one WAL segment.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::io::{FileSystem, WritableFile};

use super::{encode_header, segment_file_name};

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
}

/// Zeroed space added at a time when durable writes need it.
const PREALLOCATE_CHUNK: u64 = 1 << 20;

impl WalWriter {
    /// Creates segment `number` in `dir` (truncating any existing file),
    /// writes and syncs the header, and syncs `dir` so the new file's name is
    /// durable.
    pub fn create(fs: &dyn FileSystem, dir: &Path, number: u64) -> Result<WalWriter> {
        let path = dir.join(segment_file_name(number));
        let mut file = fs.create_log(&path)?;
        // The header is durable before any record can be appended, which is
        // what lets replay call a short header a torn creation rather than
        // corruption.
        file.append(&encode_header())?;
        file.sync_data()?;
        fs.sync_dir(dir)?;
        Ok(WalWriter {
            file,
            number,
            failed: false,
            preallocated_to: 0,
        })
    }

    /// Appends already-framed bytes (one or more frames built with
    /// `encode_frame`) in ONE write call; on return they reached the OS.
    pub fn append(&mut self, framed: &[u8]) -> Result<()> {
        self.check_usable()?;
        if framed.is_empty() {
            return Ok(());
        }
        let result = self.file.append(framed);
        self.failed = result.is_err();
        result.map_err(|e| e.context(format_args!("appending to WAL segment {}", self.number)))
    }

    /// Appends already-framed bytes and makes the whole segment durable,
    /// in one direct write when the file system allows (io/direct.rs).
    pub fn append_durable(&mut self, framed: &[u8]) -> Result<()> {
        self.check_usable()?;
        let result = self.file.append_durable(framed);
        self.failed = result.is_err();
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
        let result = self.file.sync_data();
        self.failed = result.is_err();
        result.map_err(|e| e.context(format_args!("syncing WAL segment {}", self.number)))
    }

    /// Bytes in the segment including the header (the logical end, not
    /// preallocated space).
    pub fn len(&self) -> u64 {
        self.file.len()
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
    use crate::wal::{replay, SEGMENT_HEADER_LEN};

    /// Delegates to the real file system, but every file it creates accepts
    /// only `budget` bytes: the append that crosses the budget writes the part
    /// that fits (a short write) and then fails.
    struct FailingFs {
        budget: u64,
    }

    struct FailingFile {
        inner: Box<dyn WritableFile>,
        budget: u64,
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
            })
        }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(payload, &mut out);
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
        let report = replay(&OsFileSystem, dir.path(), &[3], |_| Ok(())).unwrap();
        assert_eq!(report.records, 0);
        assert_eq!(report.dropped_tail, None);
    }

    #[test]
    fn append_failure_is_io_error_and_poisons_writer() {
        let dir = tempfile::tempdir().unwrap();
        let record = framed(b"a record of some length");
        // Room for the header, two whole records and half of a third.
        let budget = (SEGMENT_HEADER_LEN + 2 * record.len() + record.len() / 2) as u64;
        let fs = WrappedFs::os(FailingFs { budget });
        let mut w = WalWriter::create(&fs, dir.path(), 1).unwrap();
        w.append(&record).unwrap();
        w.append(&record).unwrap();
        let err = w.append(&record).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io);
        assert!(err.message().contains("WAL segment 1"), "{err}");
        // Later calls must not stack records behind the partial one.
        assert_eq!(w.append(&record).unwrap_err().kind(), ErrorKind::Io);
        assert_eq!(w.sync().unwrap_err().kind(), ErrorKind::Io);

        // The short write is a torn tail for recovery: two records survive.
        let mut seen = 0;
        let report = replay(&OsFileSystem, dir.path(), &[1], |_| {
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 2);
        let tail = report.dropped_tail.unwrap();
        assert_eq!(tail.offset, (SEGMENT_HEADER_LEN + 2 * record.len()) as u64);
        assert_eq!(tail.dropped_bytes, (record.len() / 2) as u64);
        assert_eq!(tail.reason, "truncated record");
    }

    #[test]
    fn header_write_failure_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let fs = WrappedFs::os(FailingFs { budget: 5 });
        let err = WalWriter::create(&fs, dir.path(), 1).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Io);
    }
}
