//! The real file system: std::fs, memmap2 and flock.

use std::fs::{self, File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::direct::{DirectAppender, Outcome, BLOCK};
use super::{FileBytes, FileLock, FileSystem, WritableFile};
use crate::error::{Error, ErrorKind, IoResultExt, Result};

/// The real file system (std::fs, memmap2, flock).
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileSystem;

impl OsFileSystem {
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(OsFileSystem)
    }
}

struct OsWritableFile {
    file: File,
    path: PathBuf,
    len: u64,
    /// Every byte before this offset is durable.
    durable_len: u64,
    /// Set by a failed sync or durable write. After a failed fdatasync
    /// Linux may drop the dirty pages it could not write and report success
    /// to the next fdatasync, so every later sync fails instead: nothing
    /// appended before or after can be called durable any more.
    sync_failed: bool,
    /// Present for log files (`create_log`) whose file system takes direct
    /// I/O: their durable appends skip the page cache (see direct.rs).
    direct: Option<DirectAppender>,
}

impl OsWritableFile {
    fn new(file: File, path: &Path, len: u64, direct: Option<DirectAppender>) -> Self {
        OsWritableFile {
            file,
            path: path.to_path_buf(),
            len,
            durable_len: 0,
            sync_failed: false,
            direct,
        }
    }

    fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        write_all_at(&self.file, data, offset).ctx(format_args!("writing {}", self.path.display()))
    }

    fn check_syncable(&self) -> Result<()> {
        if self.sync_failed {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "an earlier sync of {} failed, so nothing written to it can be made durable",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Records the outcome of a sync or durable write.
    fn note_sync<T>(&mut self, result: Result<T>) -> Result<T> {
        self.sync_failed |= result.is_err();
        result
    }
}

impl WritableFile for OsWritableFile {
    fn append(&mut self, data: &[u8]) -> Result<()> {
        let rewrite = self
            .direct
            .as_mut()
            .and_then(|d| d.page_rewrite(self.len, data));
        match rewrite {
            Some(r) => {
                write_all_at(&self.file, r.head, r.offset)
                    .and_then(|()| {
                        let rest = &data[r.rest_from..];
                        if rest.is_empty() {
                            return Ok(());
                        }
                        write_all_at(&self.file, rest, r.offset + BLOCK)
                    })
                    .ctx(format_args!("writing {}", self.path.display()))?;
            }
            None => self.write_at(data, self.len)?,
        }
        if let Some(direct) = self.direct.as_mut() {
            direct.appended(self.len, data, false);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    fn append_durable(&mut self, data: &[u8]) -> Result<()> {
        self.check_syncable()?;
        if let Some(direct) = self.direct.as_mut() {
            if self.durable_len == self.len {
                let outcome = direct
                    .write_durable(self.len, data)
                    .ctx(format_args!("writing {}", self.path.display()));
                if let Outcome::Done = self.note_sync(outcome)? {
                    if let Some(direct) = self.direct.as_mut() {
                        direct.appended(self.len, data, true);
                    }
                    self.len += data.len() as u64;
                    self.durable_len = self.len;
                    return Ok(());
                }
            }
        }
        self.append(data)?;
        self.sync_data()
    }

    fn sync_data(&mut self) -> Result<()> {
        self.check_syncable()?;
        let result = self
            .file
            .sync_data()
            .ctx(format_args!("syncing {}", self.path.display()));
        self.note_sync(result)?;
        self.durable_len = self.len;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn preallocate(&mut self, len: u64) -> Result<()> {
        const CHUNK: usize = 64 << 10;
        let zeros = vec![0u8; CHUNK];
        let mut written = 0u64;
        while written < len {
            let n = (len - written).min(CHUNK as u64) as usize;
            self.write_at(&zeros[..n], self.len + written)
                .map_err(|e| e.context("preallocating"))?;
            written += n as u64;
        }
        Ok(())
    }
}

#[cfg(unix)]
fn write_all_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(data)
}

struct MappedFile {
    // Empty files cannot be mapped; they are represented by `None`.
    map: Option<memmap2::Mmap>,
    /// Private mappings for zero-copy values (`map_value`); holds the file
    /// open, so they can be made even after it was unlinked.
    values: Option<super::value_map::ValueMaps>,
}

impl FileBytes for MappedFile {
    fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// `MADV_WILLNEED` on the mapped range: the kernel starts reading the
    /// range's pages into the page cache and returns without waiting, even
    /// though the mapping is `MADV_RANDOM` (which only turns off the
    /// read-around of page faults).
    fn will_need(&self, range: Range<usize>) {
        let Some(map) = &self.map else { return };
        let end = range.end.min(map.len());
        if range.start >= end {
            return;
        }
        // Advisory only: a failure changes nothing but speed.
        #[cfg(unix)]
        let _ = map.advise_range(memmap2::Advice::WillNeed, range.start, end - range.start);
    }

    fn advise_sequential(&self) {
        if let Some(map) = &self.map {
            // Advisory only, like will_need.
            let _ = map.advise(memmap2::Advice::Sequential);
        }
    }

    fn is_resident(&self, range: Range<usize>) -> bool {
        super::is_resident(self.bytes(), range)
    }

    fn map_value(&self, range: Range<usize>) -> Option<super::ValueMap> {
        self.values.as_ref()?.map(range)
    }
}

struct OsFileLock {
    _file: File,
}

impl FileLock for OsFileLock {}

impl FileSystem for OsFileSystem {
    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).ctx(format_args!("creating directory {}", path.display()))
    }

    fn create(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = File::create(path).ctx(format_args!("creating {}", path.display()))?;
        Ok(Box::new(OsWritableFile::new(file, path, 0, None)))
    }

    fn create_log(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = File::create(path).ctx(format_args!("creating {}", path.display()))?;
        let direct = DirectAppender::open(path);
        Ok(Box::new(OsWritableFile::new(file, path, 0, direct)))
    }

    fn create_new(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .ctx(format_args!("creating {}", path.display()))?;
        Ok(Box::new(OsWritableFile::new(file, path, 0, None)))
    }

    fn hard_link(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        fs::hard_link(from, to)
    }

    fn open_append(&self, path: &Path) -> Result<Box<dyn WritableFile>> {
        // Not O_APPEND: every write is positional (at the logical end, or
        // preallocated space past it), which O_APPEND would override.
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx(format_args!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(format_args!("reading metadata of {}", path.display()))?
            .len();
        Ok(Box::new(OsWritableFile::new(file, path, len, None)))
    }

    fn read(&self, path: &Path) -> Result<Vec<u8>> {
        fs::read(path).ctx(format_args!("reading {}", path.display()))
    }

    fn map(&self, path: &Path) -> Result<Arc<dyn FileBytes>> {
        let file = File::open(path).ctx(format_args!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(format_args!("reading metadata of {}", path.display()))?
            .len();
        if len == 0 {
            return Ok(Arc::new(MappedFile {
                map: None,
                values: None,
            }));
        }
        // SAFETY: table files are written once, synced, and never modified or
        // truncated while mapped (they are only deleted, which keeps the
        // mapping valid until it is dropped). WAL segments are mapped by
        // replay at open, which holds the directory lock and truncates a
        // torn tail only past the last record it replayed (the recovered
        // memtable keeps those records mapped until it is flushed; nothing
        // writes to a replayed segment again, the open appends to a new
        // one, and the pages before the cut stay inside the file), and by a
        // checkpoint, which maps a rotated segment that no writer appends to
        // any more and only deletion (after the checkpoint) touches.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.ctx(format_args!("mapping {}", path.display()))?;
        // Point reads touch a block or two per table: without this advice a
        // cold page fault reads ahead up to the device's readahead window
        // (8 MiB on this VM), which made a cold open read megabytes per table
        // for the few pages at its end. Advisory only: failure changes nothing.
        let _ = map.advise(memmap2::Advice::Random);
        Ok(Arc::new(MappedFile {
            values: Some(super::value_map::ValueMaps::new(file, map.len())),
            map: Some(map),
        }))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir).ctx(format_args!("listing {}", dir.display()))? {
            let entry = entry.ctx(format_args!("listing {}", dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).ctx(format_args!(
            "renaming {} to {}",
            from.display(),
            to.display()
        ))
    }

    fn remove(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).ctx(format_args!("removing {}", path.display()))
    }

    fn truncate(&self, path: &Path, len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx(format_args!("opening {}", path.display()))?;
        file.set_len(len)
            .ctx(format_args!("truncating {}", path.display()))?;
        file.sync_all()
            .ctx(format_args!("syncing {}", path.display()))
    }

    fn sync_dir(&self, dir: &Path) -> Result<()> {
        let d = File::open(dir).ctx(format_args!("opening directory {}", dir.display()))?;
        d.sync_all()
            .ctx(format_args!("syncing directory {}", dir.display()))
    }

    fn lock(&self, path: &Path) -> Result<Box<dyn FileLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(format_args!("opening lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsFileLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Err(Error::new(
                ErrorKind::Locked,
                format!(
                    "{} is locked by another process (or another open that does not share this engine)",
                    path.display()
                ),
            )),
            Err(fs::TryLockError::Error(e)) => {
                Err(Error::io(e, format_args!("locking {}", path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Append(Vec<u8>),
        AppendDurable(Vec<u8>),
        Sync,
        Preallocate(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Lengths straddle the 4 KiB block size, so appends start and end
        // anywhere in a block and sometimes span several.
        let bytes = (1usize..9000).prop_flat_map(|n| proptest::collection::vec(1u8..=255, n));
        prop_oneof![
            3 => bytes.clone().prop_map(Op::Append),
            4 => bytes.prop_map(Op::AppendDurable),
            1 => Just(Op::Sync),
            1 => (1u64..20_000).prop_map(Op::Preallocate),
        ]
    }

    /// What the file must hold: the logical bytes, then only zeros.
    fn check_contents(path: &Path, expected: &[u8]) {
        let on_disk = fs::read(path).unwrap();
        assert!(
            on_disk.len() >= expected.len(),
            "file is shorter than its logical length"
        );
        assert!(
            on_disk[..expected.len()] == *expected,
            "logical bytes differ"
        );
        assert!(
            on_disk[expected.len()..].iter().all(|&b| b == 0),
            "non-zero bytes past the logical end"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any mix of buffered appends, durable (direct) appends, syncs and
        /// preallocation leaves exactly the appended bytes, then zeros.
        #[test]
        fn mixed_appends_keep_the_logical_bytes_in_order(ops in proptest::collection::vec(op(), 1..40)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let mut file = OsFileSystem.create_log(&path).unwrap();
            let mut expected = Vec::new();
            for op in ops {
                match op {
                    Op::Append(d) => { file.append(&d).unwrap(); expected.extend_from_slice(&d); }
                    Op::AppendDurable(d) => { file.append_durable(&d).unwrap(); expected.extend_from_slice(&d); }
                    Op::Sync => file.sync_data().unwrap(),
                    Op::Preallocate(n) => { file.preallocate(n).unwrap(); file.sync_data().unwrap(); }
                }
                prop_assert_eq!(file.len(), expected.len() as u64);
                check_contents(&path, &expected);
            }
        }
    }

    fn log_file(path: &Path) -> OsWritableFile {
        let file = File::create(path).unwrap();
        OsWritableFile::new(file, path, 0, DirectAppender::open(path))
    }

    /// After a failed sync nothing may be reported durable again, even if
    /// a later fdatasync would return success.
    #[test]
    fn a_failed_sync_fails_every_later_sync_and_durable_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut file = log_file(&path);
        file.append_durable(b"durable").unwrap();
        let failed: Result<()> = Err(Error::new(ErrorKind::Io, "injected: fdatasync failed"));
        assert!(file.note_sync(failed).is_err());
        file.append(b" buffered").unwrap();
        for attempt in [file.sync_data(), file.append_durable(b" more")] {
            let err = attempt.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Io);
            assert!(err.message().contains("earlier sync"), "{err}");
        }
        assert_eq!(file.durable_len, b"durable".len() as u64);
    }

    /// Plain files (tables, manifests) never get zeros past their end.
    #[test]
    fn plain_files_end_exactly_at_their_last_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("table");
        let mut file = OsFileSystem.create(&path).unwrap();
        file.append(b"block").unwrap();
        file.append_durable(b"footer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"blockfooter");
    }

    #[cfg(target_os = "linux")]
    fn supports_direct_io(dir: &Path) -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.join("probe"))
            .is_ok()
    }

    /// Where the file system supports it, back-to-back durable appends go
    /// through the direct descriptor, and a buffered append after them
    /// still lands in the right place.
    #[cfg(target_os = "linux")]
    #[test]
    fn durable_appends_use_direct_io_where_available() {
        let dir = tempfile::tempdir().unwrap();
        if !supports_direct_io(dir.path()) {
            eprintln!("skipped: {} has no O_DIRECT", dir.path().display());
            return;
        }
        let path = dir.path().join("wal");
        let mut file = log_file(&path);
        assert!(file.direct.is_some());
        let mut expected = Vec::new();
        file.append(b"header").unwrap();
        file.sync_data().unwrap();
        expected.extend_from_slice(b"header");
        for i in 0..100u32 {
            let record = format!("record {i}: {}", "x".repeat(i as usize * 7));
            file.append_durable(record.as_bytes()).unwrap();
            expected.extend_from_slice(record.as_bytes());
        }
        assert_eq!(file.direct.as_ref().unwrap().direct_writes(), 100);
        file.append(b"buffered after direct").unwrap();
        expected.extend_from_slice(b"buffered after direct");
        file.sync_data().unwrap();
        check_contents(&path, &expected);
    }

    /// A durable append after unsynced buffered bytes must make those
    /// durable too, so it takes the buffered path (append + fdatasync).
    #[test]
    fn durable_append_after_unsynced_bytes_takes_the_buffered_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut file = log_file(&path);
        file.append(b"not yet durable").unwrap();
        file.append_durable(b" and now durable").unwrap();
        if let Some(direct) = &file.direct {
            assert_eq!(direct.direct_writes(), 0);
        }
        assert_eq!(file.durable_len, file.len);
        check_contents(&path, b"not yet durable and now durable");
    }
}
