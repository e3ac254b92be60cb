//! Zero-copy values: a value's bytes in a private, writable, copy-on-write
//! mapping of its table file, handed to a caller that keeps it for as long
//! as it likes (the Node binding wraps it in an external Buffer).
//!
//! Why private mappings of their own, rather than a pointer into the
//! table's shared read-only map:
//! - a page of a read-only map faults (SIGSEGV) when written, and a JS
//!   Buffer can always be written;
//! - a write into a private map copies the touched page into that map only,
//!   so it never reaches the file, and the engine's own reads (through the
//!   shared read-only map) never see it.
//!
//! Two [`ValueMap`]s must not alias either, or a write into one would show
//! in the other (a "re-read"). So a private map of the whole file (a
//! *chunk*) hands out each value's range at most once: a second read of the
//! same value gets a fresh chunk. Values of one chunk are disjoint byte
//! ranges; a write into one copies its page, whose other bytes are the
//! file's, so a neighbour sharing the page reads the same bytes as before.
//! One `mmap` then serves every distinct value read from a table, and the
//! `munmap` happens when the last value of a chunk is dropped; a chunk (and
//! the file's pages: it holds its own reference to the file) outlives the
//! table, so a value stays readable after compaction deleted the file.
//! docs/performance.md ("Read path") measures where this beats a copy.

use std::collections::HashSet;
use std::fs::File;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

/// Chunks (private mappings) alive in this process; tests check that
/// dropping the last value of each unmaps it (no mapping leaks).
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// How many value mappings (chunks) exist right now in this process.
pub fn live_value_maps() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// At most this many chunks live at once; past it values are copied. Every
/// chunk is a kernel mapping, and a process has a fixed number of them
/// (`vm.max_map_count`, 65530 by default) shared with the allocator and the
/// JS heap: a JS loop that keeps re-reading one value without yielding
/// holds a chunk per read until the Buffers' finalizers run, and ran Node
/// out of mappings (a crash inside V8) before this bound. A quarter of the
/// system's limit, read once.
pub fn max_live_value_maps() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(65530)
            / 4
    })
}

/// A private copy-on-write mapping of a whole table file.
struct Chunk {
    /// Keeps the mapping; only read through `base`.
    _map: memmap2::MmapMut,
    /// Start of the mapping, taken from the `MmapMut` while it was owned
    /// mutably, so writes through it are allowed.
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory that lives as long as the chunk;
// `ValueMap`s of one chunk address disjoint ranges (handed out once each,
// see `ValueMaps::map`), so no two owners write the same bytes.
unsafe impl Send for Chunk {}
// SAFETY: as above; shared access only reads through `base`.
unsafe impl Sync for Chunk {}

impl Drop for Chunk {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Per open table file: the chunk values are handed out from, and which
/// value ranges (by start offset) it already gave out. Held weakly: a chunk
/// is unmapped as soon as its last value is dropped, so the table itself
/// holds no mapping.
pub(crate) struct ValueMaps {
    file: File,
    len: usize,
    current: Mutex<Option<(Weak<Chunk>, HashSet<usize>)>>,
}

impl ValueMaps {
    pub(crate) fn new(file: File, len: usize) -> ValueMaps {
        ValueMaps {
            file,
            len,
            current: Mutex::new(None),
        }
    }

    /// `range` of the file in a private mapping no other `ValueMap`
    /// shares; `None` when the OS refuses or too many chunks are alive, in
    /// which case the caller copies instead.
    pub(crate) fn map(&self, range: Range<usize>) -> Option<ValueMap> {
        if range.is_empty() || range.end > self.len {
            return None;
        }
        let mut current = self.current.lock();
        let alive = current.as_mut().and_then(|(weak, handed)| {
            let chunk = weak.upgrade()?;
            (!handed.contains(&range.start)).then_some((chunk, handed))
        });
        let chunk = match alive {
            Some((chunk, handed)) => {
                handed.insert(range.start);
                chunk
            }
            None => {
                let chunk = self.new_chunk()?;
                *current = Some((Arc::downgrade(&chunk), HashSet::from([range.start])));
                chunk
            }
        };
        Some(ValueMap {
            chunk,
            offset: range.start,
            len: range.len(),
        })
    }

    fn new_chunk(&self) -> Option<Arc<Chunk>> {
        // Claim a slot first, so racing readers cannot pass the bound.
        if LIVE.fetch_add(1, Ordering::Relaxed) >= max_live_value_maps() {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // SAFETY: table files are written once, synced, and never modified
        // or truncated while mapped (only unlinked, which keeps the pages
        // readable through this map). The map is private, so writes through
        // it never reach the file.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .len(self.len)
                .map_copy(&self.file)
        };
        let Ok(mut map) = map else {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        // Values are read at random: no read-around of each page fault.
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        let base = NonNull::new(map.as_mut_ptr())?;
        let len = map.len();
        Some(Arc::new(Chunk {
            _map: map,
            base,
            len,
        }))
    }
}

/// One value's bytes in a private copy-on-write mapping of its table file,
/// shared with no other `ValueMap`. Writing through
/// [`ValueMap::as_mut_ptr`] changes only these bytes of this mapping.
pub struct ValueMap {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl ValueMap {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value's bytes as they are in this mapping.
    pub fn bytes(&self) -> &[u8] {
        debug_assert!(self.offset + self.len <= self.chunk.len);
        // SAFETY: `offset..offset + len` lies inside the chunk (checked by
        // `ValueMaps::map`), which lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.chunk.base.as_ptr().add(self.offset), self.len) }
    }

    /// Start of the value: stable for the life of the `ValueMap` (moving it
    /// does not move the mapping), writable for `len()` bytes, and no other
    /// `ValueMap` addresses them.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        // SAFETY: in bounds, as in `bytes`.
        unsafe { self.chunk.base.as_ptr().add(self.offset) }
    }
}

impl ValueMap {
    /// Length of the whole private mapping the value was handed out of.
    pub fn chunk_len(&self) -> usize {
        self.chunk.len
    }

    /// The whole private mapping this value was handed out of, and where
    /// in it the value starts. A caller may expose the chunk to code that
    /// views each value it hands out (the Node binding returns views of one
    /// ArrayBuffer per chunk instead of one external Buffer per value); the
    /// chunk never hands a range out twice, so two values still never
    /// share bytes.
    pub fn into_chunk(self) -> (MappedChunk, usize) {
        (MappedChunk(self.chunk), self.offset)
    }
}

/// A whole private mapping of a table file that values are handed out of
/// ([`ValueMap::into_chunk`]); it stays mapped while any `MappedChunk` or
/// `ValueMap` of it lives.
pub struct MappedChunk(Arc<Chunk>);

impl MappedChunk {
    /// Identifies the mapping among those alive: two `MappedChunk`s with
    /// the same id are the same mapping (an id can be reused only after
    /// every holder of its chunk is gone).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// Start of the mapping: writable for `len()` bytes for as long as this
    /// `MappedChunk` lives. Writes are private to this mapping; code that
    /// exposes it must write only inside the ranges of values it was given
    /// (each handed out once), or a later value of the chunk shows them.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        self.0.base.as_ptr()
    }
}

impl std::fmt::Debug for MappedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedChunk")
            .field("len", &self.0.len)
            .finish()
    }
}

impl std::fmt::Debug for ValueMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueMap")
            .field("offset", &self.offset)
            .field("len", &self.len)
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
        // Up to 16 MiB of pages per call (a whole-table check is one or two).
        let mut vec = [0u8; 4096];
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
