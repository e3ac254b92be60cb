//! Zero-copy values: a private, writable, copy-on-write mapping of the file
//! pages that hold one value, handed to a caller that keeps it for as long
//! as it likes (the Node binding wraps it in an external Buffer).
//!
//! Why a mapping of its own per value, rather than a pointer into the
//! table's shared read-only map:
//! - a page of a read-only map faults (SIGSEGV) when written, and a JS
//!   Buffer can always be written;
//! - one private writable map of the whole table would keep a write from
//!   reaching the file, but every later read through that map (a copying
//!   get, a scan, another zero-copy get) would see the written bytes.
//!
//! A fresh `MAP_PRIVATE` map per value keeps both promises: a write copies
//! the page into this map only, so neither the file nor any other reader
//! sees it. The map holds its own reference to the file (the kernel keeps
//! the inode), so it stays readable after compaction unlinks the table and
//! the table is closed. Its cost is an `mmap` per read and a `munmap` when
//! it is dropped; docs/performance.md ("Read path") measures where that
//! beats a copy.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Value maps alive in this process (tests check that dropping the last
/// holder unmaps: no mapping leaks).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many [`ValueMap`]s exist right now in this process.
pub fn live_value_maps() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// One value's bytes in a private copy-on-write mapping of its table file.
/// Writing through [`ValueMap::as_mut_ptr`] changes only this mapping.
pub struct ValueMap {
    map: memmap2::MmapMut,
}

impl ValueMap {
    /// Maps `range` of `file` privately; `None` when the OS refuses (for
    /// example past the process's mapping limit), in which case the caller
    /// copies instead.
    pub(crate) fn new(file: &File, range: Range<usize>) -> Option<ValueMap> {
        if range.is_empty() {
            return None;
        }
        // SAFETY: table files are written once, synced, and never modified
        // or truncated while mapped (only unlinked, which keeps the pages
        // readable through this map). The map is private, so writes through
        // it never reach the file. memmap2 aligns the offset to a page and
        // hands back a pointer to `range.start`.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(range.start as u64)
                .len(range.len())
                .map_copy(file)
        }
        .ok()?;
        LIVE.fetch_add(1, Ordering::Relaxed);
        Some(ValueMap { map })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The value's bytes as they are in this mapping.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Start of the value: stable for the life of the `ValueMap` (moving it
    /// does not move the mapping), writable for `len()` bytes.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map.as_mut_ptr()
    }
}

impl Drop for ValueMap {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ValueMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueMap")
            .field("len", &self.len())
            .finish()
    }
}

/// Page size, for residency checks.
#[cfg(target_os = "linux")]
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
}

/// Whether every page of `bytes[range]` (a memory map starting at `base`)
/// is in the page cache, so reading it cannot wait for the device
/// (`mincore`). Where that cannot be asked, answers true: reads are then
/// always served inline, as before.
pub(crate) fn is_resident(base: &[u8], range: Range<usize>) -> bool {
    #[cfg(target_os = "linux")]
    {
        let end = range.end.min(base.len());
        if range.start >= end {
            return true;
        }
        let page = page_size();
        let first = range.start / page * page;
        let pages = (end - first).div_ceil(page);
        let mut vec = [0u8; 64];
        let mut done = 0;
        while done < pages {
            let n = (pages - done).min(vec.len());
            // SAFETY: the range lies inside the mapping `base` (checked
            // above); `first + done * page` is page-aligned because the
            // mapping starts on a page; `vec` has room for `n` entries.
            let rc = unsafe {
                libc::mincore(
                    base.as_ptr().add(first + done * page) as *mut libc::c_void,
                    n * page,
                    vec.as_mut_ptr(),
                )
            };
            if rc != 0 {
                // Unknown: say resident, the read proceeds inline as it
                // always did.
                return true;
            }
            if vec[..n].iter().any(|b| b & 1 == 0) {
                return false;
            }
            done += n;
        }
        true
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (base, range);
        true
    }
}
