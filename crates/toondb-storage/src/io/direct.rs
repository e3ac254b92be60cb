//! Durable appends in one system call, with direct I/O (Linux).
//!
//! A buffered append followed by fdatasync costs two system calls and a
//! trip through the page cache's writeback. Writing the same bytes through
//! a second descriptor opened `O_DIRECT | O_DSYNC` makes them durable in
//! one call: on this machine a small durable append into zeroed space went
//! from ~100 to ~86 µs (docs/performance.md).
//!
//! Direct I/O writes whole, aligned blocks, so a durable append rewrites
//! the file's last partial block: the bytes already there (kept in `tail`)
//! followed by the new ones, then zeros up to the block boundary. The zeros
//! land where the file is zero anyway (preallocated space or past its end;
//! replay reads trailing zeros as the end of the log). Rewriting a block
//! that holds earlier, acknowledged records with the same bytes is what the
//! page cache's writeback does too, so it adds no new way to lose them.
//!
//! Two rules keep this correct and cheap:
//! - The direct path is taken only when everything before the logical end
//!   is already durable; otherwise the buffered append + fdatasync runs, so
//!   earlier buffered bytes become durable too.
//! - A direct write drops the block's page from the page cache. The next
//!   buffered append rewrites that 4096-byte page whole (tail, data, zeros)
//!   so the kernel does not have to read it back from disk first (on
//!   kernels with larger pages it still may: slower, not wrong).
//!
//! Only WAL segments get this (`FileSystem::create_log`): the zeros after
//! the logical end would corrupt a format that keeps a footer at its end.

use std::fs::File;
use std::io;
use std::path::Path;

/// The alignment direct I/O needs: 4096 suits every common device (this
/// one has 512-byte logical blocks).
pub(super) const BLOCK: u64 = 4096;

/// Larger durable appends take the buffered path: the fsync is amortized
/// over many bytes already, and the aligned copy would cost more.
const MAX_DIRECT_BYTES: usize = 1 << 20;

/// What a durable append through [`DirectAppender::write_durable`] did.
pub(super) enum Outcome {
    /// The bytes are written and durable.
    Done,
    /// Direct I/O is not possible for this write (the device refused its
    /// alignment, or it is large): nothing was written; use the buffered
    /// path.
    Declined,
}

/// The state a log file created by this process keeps for direct durable
/// appends: the direct descriptor and the bytes of its last partial block.
pub(super) struct DirectAppender {
    /// `None` once direct I/O turned out to be unavailable.
    file: Option<File>,
    /// The file's bytes from the last block boundary at or before its
    /// logical end up to that end (less than one block).
    tail: Vec<u8>,
    /// Set by a direct write: the tail block's page is not in the page
    /// cache, so the next buffered append should rewrite it whole.
    tail_page_dropped: bool,
    /// Aligned staging for direct writes, and the page a buffered append
    /// rewrites; at most `MAX_DIRECT_BYTES` plus two blocks.
    scratch: Vec<u8>,
    #[cfg(test)]
    direct_writes: u64,
}

/// What a buffered append must write after a direct write dropped the tail
/// page: `head` at `offset` (one whole block: the old tail, the first bytes
/// of the data, zeros if the data ends inside it), then the data from
/// `rest_from` on at `offset + BLOCK`.
pub(super) struct PageRewrite<'a> {
    pub offset: u64,
    pub head: &'a [u8],
    pub rest_from: usize,
}

impl DirectAppender {
    /// Opens the direct descriptor of `path`, a file that was just created
    /// (so it is empty). `None` when direct I/O is not available there, or
    /// when opening it fails for any reason: the buffered path then serves.
    pub fn open(path: &Path) -> Option<Self> {
        let file = open_direct(path).ok()?;
        Some(DirectAppender {
            file: Some(file),
            tail: Vec::with_capacity(BLOCK as usize),
            tail_page_dropped: false,
            scratch: Vec::new(),
            #[cfg(test)]
            direct_writes: 0,
        })
    }

    /// For a buffered append of `data` at logical end `len`: the whole-page
    /// rewrite to do instead, when a direct write dropped the tail page.
    pub fn page_rewrite(&mut self, len: u64, data: &[u8]) -> Option<PageRewrite<'_>> {
        if !self.tail_page_dropped {
            return None;
        }
        let block = BLOCK as usize;
        let rest_from = data.len().min(block - self.tail.len());
        self.scratch.clear();
        self.scratch.extend_from_slice(&self.tail);
        self.scratch.extend_from_slice(&data[..rest_from]);
        self.scratch.resize(block, 0);
        Some(PageRewrite {
            offset: len - self.tail.len() as u64,
            head: &self.scratch,
            rest_from,
        })
    }

    /// Records that `data` was appended (by either path) at logical end
    /// `len`; `direct` tells which path.
    pub fn appended(&mut self, len: u64, data: &[u8], direct: bool) {
        let new_len = len + data.len() as u64;
        let keep = (new_len % BLOCK) as usize;
        if data.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&data[data.len() - keep..]);
        } else {
            self.tail.extend_from_slice(data);
        }
        debug_assert_eq!(self.tail.len(), keep);
        self.tail_page_dropped = direct;
    }

    /// Writes `data` at logical end `len` and makes it durable in one
    /// direct, synchronous write. The caller guarantees that every byte
    /// before `len` is already durable.
    pub fn write_durable(&mut self, len: u64, data: &[u8]) -> io::Result<Outcome> {
        if data.len() > MAX_DIRECT_BYTES {
            return Ok(Outcome::Declined);
        }
        let Some(file) = &self.file else {
            return Ok(Outcome::Declined);
        };
        let start = len - self.tail.len() as u64;
        let total = self.tail.len() + data.len();
        let padded = round_up(total as u64) as usize;
        let buf = aligned(&mut self.scratch, padded);
        buf[..self.tail.len()].copy_from_slice(&self.tail);
        buf[self.tail.len()..total].copy_from_slice(data);
        buf[total..].fill(0);
        match write_all_at(file, buf, start) {
            Ok(()) => {
                #[cfg(test)]
                {
                    self.direct_writes += 1;
                }
                Ok(Outcome::Done)
            }
            // An alignment the device does not accept is refused before
            // anything is written; fall back for good.
            Err(e) if is_unsupported(&e) => {
                self.file = None;
                Ok(Outcome::Declined)
            }
            Err(e) => Err(e),
        }
    }

    /// Durable appends that went through the direct descriptor.
    #[cfg(test)]
    pub fn direct_writes(&self) -> u64 {
        self.direct_writes
    }
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// `len` bytes of `scratch`, starting at a block-aligned address.
fn aligned(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let align = BLOCK as usize;
    if scratch.len() < len + align {
        scratch.resize(len + align, 0);
    }
    let offset = scratch.as_ptr().align_offset(align);
    &mut scratch[offset..offset + len]
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
        .open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(target_os = "linux")]
fn is_unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP))
        || e.kind() == io::ErrorKind::Unsupported
}

#[cfg(not(target_os = "linux"))]
fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
}

#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
}

#[cfg(not(unix))]
fn write_all_at(_file: &File, _buf: &[u8], _offset: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
