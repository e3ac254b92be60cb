//! Reading back a segment this process rotated away from: the writer knows
//! where its records end, and every frame before that end was appended
//! whole, so anything unreadable there is damage, never a torn tail. The
//! maintenance thread reads such segments to checkpoint them into tables
//! (maintenance/checkpoint.rs); recovery's rules (reader.rs) are not
//! involved.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::io::{FileBytes, FileSystem};
use crate::record::{read_frame, Frame};

use super::entry::{self, Entry};
use super::{check_header, segment_file_name, SEGMENT_HEADER_LEN, SEGMENT_VERSION_V2};

/// A rotated segment, mapped, checked up to the end its writer recorded.
pub struct SealedSegment {
    map: Arc<dyn FileBytes>,
    number: u64,
    end: usize,
}

impl SealedSegment {
    /// Maps segment `number` of `dir`, whose records end at `end`.
    pub fn open(fs: &dyn FileSystem, dir: &Path, number: u64, end: u64) -> Result<SealedSegment> {
        let map = fs.map(&dir.join(segment_file_name(number)))?;
        map.advise_sequential();
        let len = map.bytes().len();
        let segment = SealedSegment {
            number,
            end: usize::try_from(end).unwrap_or(usize::MAX),
            map,
        };
        if segment.end > len || segment.end < SEGMENT_HEADER_LEN {
            return Err(segment.damaged(len, "the file is shorter than its records"));
        }
        segment.map.will_need(0..segment.end);
        let version = check_header(segment.map.bytes()).map_err(|why| segment.damaged(0, &why))?;
        if version < SEGMENT_VERSION_V2 {
            // This build writes only newer segments; an old one cannot be live.
            return Err(segment.damaged(0, &format!("format version {version}")));
        }
        Ok(segment)
    }

    fn damaged(&self, pos: usize, why: &str) -> Error {
        Error::corruption(format!(
            "WAL segment {} (rotated, records end at {}): {why} at offset {pos}",
            self.number, self.end
        ))
    }

    /// Calls `apply(batch_payload)` for every batch record, in order, with
    /// the payload borrowed from the mapping, and returns how many there
    /// were. Sync points, predecessor and segment-synced records are
    /// skipped: they describe the log, not data.
    pub fn for_each_batch<'a>(
        &'a self,
        mut apply: impl FnMut(&'a [u8]) -> Result<()>,
    ) -> Result<u64> {
        let data = &self.map.bytes()[..self.end];
        let mut pos = SEGMENT_HEADER_LEN;
        let mut records = 0;
        while pos < data.len() {
            match read_frame(&data[pos..]) {
                Frame::Record { payload, consumed } => {
                    match entry::decode(payload) {
                        Ok(Entry::Batch(batch)) => {
                            apply(batch)?;
                            records += 1;
                        }
                        Ok(_) => {}
                        Err(why) => return Err(self.damaged(pos, &why)),
                    }
                    pos += consumed;
                }
                Frame::End => return Err(self.damaged(pos, "zeros before the end")),
                Frame::Truncated => return Err(self.damaged(pos, "a record crossing the end")),
                Frame::Bad(why) => return Err(self.damaged(pos, why)),
            }
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::io::OsFileSystem;
    use crate::wal::{begin_batch_frame, finish_batch_frame, Predecessor, WalWriter};

    const FS: &OsFileSystem = &OsFileSystem;

    /// A rotated segment as the engine writes it (predecessor record
    /// first); returns its logical end.
    fn segment_with(dir: &Path, payloads: &[&[u8]]) -> u64 {
        let previous = Predecessor {
            segment: 6,
            end: 100,
        };
        let mut wal = WalWriter::create_after(FS, dir, 7, previous).unwrap();
        for p in payloads {
            let mut frames = Vec::new();
            wal.begin_group(&mut frames);
            let start = begin_batch_frame(&mut frames);
            frames.extend_from_slice(p);
            finish_batch_frame(&mut frames, start);
            wal.append(&frames).unwrap();
        }
        wal.len()
    }

    fn read_all(dir: &Path, end: u64) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        SealedSegment::open(FS, dir, 7, end)?.for_each_batch(|b| {
            out.push(b.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn reads_every_batch_up_to_the_end_and_skips_log_records() {
        let dir = tempfile::tempdir().unwrap();
        let end = segment_with(dir.path(), &[b"one", b"two", b"three"]);
        let got = read_all(dir.path(), end).unwrap();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn damage_before_the_end_is_corruption_not_a_tail() {
        let dir = tempfile::tempdir().unwrap();
        let end = segment_with(dir.path(), &[b"one", b"two", b"three"]);
        let path = dir.path().join(segment_file_name(7));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = end as usize - 3;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_all(dir.path(), end).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes[..end as usize - 1]).unwrap();
        let err = read_all(dir.path(), end).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    }
}
