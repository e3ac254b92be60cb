//! The simulated disk behind [`super::PowerLossFs`]: files (inodes) and
//! directories, each with a *durable* image (what the device holds) and the
//! operations issued since the last sync (what only the page cache holds).
//! A power cut rebuilds everything from the durable image plus a prefix of
//! the pending operations.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{PowerCut, Tail};

/// Sector size used when a torn write leaves garbage: devices write whole
/// sectors, so a write cut short can leave one sector half new, half junk.
const SECTOR: u64 = 512;

pub(super) const ROOT: u64 = 0;

/// One write-side operation on a file's contents, not yet synced.
#[derive(Debug, Clone)]
pub(super) enum FileOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl FileOp {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            FileOp::Write { offset, data } => write_at(bytes, *offset, data),
            FileOp::SetLen(len) => bytes.resize(to_usize(*len), 0),
        }
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn write_at(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = to_usize(offset);
    let end = start.saturating_add(data.len());
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

#[derive(Debug, Default)]
pub(super) struct Inode {
    /// The contents the device holds.
    pub durable: Vec<u8>,
    /// The contents a reader sees (durable + pending).
    pub live: Vec<u8>,
    /// Operations since the last sync, in issue order.
    pub pending: Vec<FileOp>,
}

impl Inode {
    pub fn apply(&mut self, op: FileOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }

    pub fn sync(&mut self) {
        self.durable.clone_from(&self.live);
        self.pending.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    File(u64),
    Dir(u64),
}

/// One change to a directory's entries, not yet made durable by `sync_dir`.
#[derive(Debug, Clone)]
pub(super) enum DirOp {
    Insert(String, Node),
    Remove(String),
    /// A rename inside one directory: atomic, as on a journaling file system.
    Rename {
        from: String,
        to: String,
    },
}

impl DirOp {
    fn apply(&self, entries: &mut BTreeMap<String, Node>) {
        match self {
            DirOp::Insert(name, node) => {
                entries.insert(name.clone(), *node);
            }
            DirOp::Remove(name) => {
                entries.remove(name);
            }
            DirOp::Rename { from, to } => {
                if let Some(node) = entries.remove(from) {
                    entries.insert(to.clone(), node);
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Dir {
    pub durable: BTreeMap<String, Node>,
    pub live: BTreeMap<String, Node>,
    pub pending: Vec<DirOp>,
}

impl Dir {
    pub fn apply(&mut self, op: DirOp) {
        op.apply(&mut self.live);
        self.pending.push(op);
    }

    pub fn sync(&mut self) {
        self.durable.clone_from(&self.live);
        self.pending.clear();
    }
}

/// The disk: every inode and directory, by id. Ids are never reused, so a
/// stale handle can never write into a file created later.
#[derive(Debug)]
pub(super) struct Disk {
    pub inodes: HashMap<u64, Inode>,
    pub dirs: HashMap<u64, Dir>,
    next_id: u64,
}

impl Disk {
    pub fn new() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(ROOT, Dir::default());
        Disk {
            inodes: HashMap::new(),
            dirs,
            next_id: ROOT + 1,
        }
    }

    pub fn new_inode(&mut self) -> u64 {
        let id = self.alloc_id();
        self.inodes.insert(id, Inode::default());
        id
    }

    pub fn new_dir(&mut self) -> u64 {
        let id = self.alloc_id();
        self.dirs.insert(id, Dir::default());
        id
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// The node at `components` (names below the root), in the live tree.
    pub fn lookup(&self, components: &[String]) -> Option<Node> {
        let mut node = Node::Dir(ROOT);
        for name in components {
            let Node::Dir(id) = node else {
                return None;
            };
            node = *self.dirs.get(&id)?.live.get(name)?;
        }
        Some(node)
    }

    /// Replaces the whole disk with what a power cut leaves: per file and
    /// directory, the durable image plus a prefix of the pending operations
    /// chosen by `cut` (the last kept write possibly torn). Everything not
    /// reachable from the root afterwards is gone.
    pub fn power_cut(&mut self, cut: &PowerCut) {
        let mut rng = SplitMix64(cut.seed);
        // Sorted so one seed always gives one outcome.
        let mut dir_ids: Vec<u64> = self.dirs.keys().copied().collect();
        dir_ids.sort_unstable();
        for id in dir_ids {
            if let Some(dir) = self.dirs.get_mut(&id) {
                // Directory entries are journaled in order: at most a prefix.
                let tail = match cut.tail {
                    Tail::Pages => Tail::Random,
                    t => t,
                };
                let keep = kept_ops(tail, dir.pending.len(), &mut rng);
                let mut entries = std::mem::take(&mut dir.durable);
                for op in &dir.pending[..keep] {
                    op.apply(&mut entries);
                }
                dir.live.clone_from(&entries);
                dir.durable = entries;
                dir.pending.clear();
            }
        }
        let mut inode_ids: Vec<u64> = self.inodes.keys().copied().collect();
        inode_ids.sort_unstable();
        for id in inode_ids {
            if let Some(inode) = self.inodes.get_mut(&id) {
                let n = inode.pending.len();
                let keep = kept_ops(cut.tail, n, &mut rng);
                let mut bytes = std::mem::take(&mut inode.durable);
                if cut.tail == Tail::Pages {
                    bytes = pages_image(bytes, &inode.pending, &mut rng);
                }
                for op in &inode.pending[..keep] {
                    op.apply(&mut bytes);
                }
                // The first lost operation may have been half-written.
                if keep < n && cut.tail == Tail::Random && rng.below(2) == 0 {
                    if let FileOp::Write { offset, data } = &inode.pending[keep] {
                        tear(&mut bytes, *offset, data, cut.garbage, &mut rng);
                    }
                }
                inode.live.clone_from(&bytes);
                inode.durable = bytes;
                inode.pending.clear();
            }
        }
        self.collect_garbage();
    }

    /// Directories and files reachable from the root in the live tree.
    fn reachable(&self) -> (HashSet<u64>, HashSet<u64>) {
        let mut dirs = HashSet::new();
        let mut files = HashSet::new();
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if !dirs.insert(id) {
                continue;
            }
            let Some(dir) = self.dirs.get(&id) else {
                continue;
            };
            for node in dir.live.values() {
                match *node {
                    Node::Dir(d) => stack.push(d),
                    Node::File(f) => {
                        files.insert(f);
                    }
                }
            }
        }
        (dirs, files)
    }

    fn collect_garbage(&mut self) {
        let (dirs, files) = self.reachable();
        self.dirs.retain(|id, _| dirs.contains(id));
        self.inodes.retain(|id, _| files.contains(id));
    }
}

/// How many of `n` pending operations survive whole, in order. (With
/// `Tail::Pages`, files get none whole: their pages are chosen one by one
/// by `pages_image`; directories get a random prefix.)
fn kept_ops(tail: Tail, n: usize, rng: &mut SplitMix64) -> usize {
    match tail {
        Tail::Drop => 0,
        Tail::Keep => n,
        Tail::Random => rng.below(n as u64 + 1) as usize,
        Tail::Pages => 0,
    }
}

/// Out-of-order writeback. The page cache writes a dirty page whole, with
/// whatever it held at that moment, and pages reach the device in any
/// order. So each page touched by a pending write ends up as it was after
/// some random number of the pending operations (0: as durable, all: as
/// live), independently of the other pages; the file's size is that after
/// another random number of them. Bytes inside the size that no chosen
/// page version covers read as zeros.
fn pages_image(durable: Vec<u8>, pending: &[FileOp], rng: &mut SplitMix64) -> Vec<u8> {
    const PAGE: u64 = 4096;
    let n = pending.len() as u64;
    let mut pages: BTreeMap<u64, u64> = BTreeMap::new(); // page -> ops kept
    for op in pending {
        if let FileOp::Write { offset, data } = op {
            let end = offset + data.len() as u64;
            for page in offset / PAGE..end.div_ceil(PAGE) {
                pages.entry(page).or_insert_with(|| rng.below(n + 1));
            }
        }
    }
    let size_after = rng.below(n + 1);
    let mut version = durable.clone();
    let mut out = durable;
    let mut final_len = version.len();
    for k in 0..=n {
        if k == size_after {
            final_len = version.len();
        }
        for (&page, _) in pages.iter().filter(|&(_, &kp)| kp == k) {
            let from = to_usize(page * PAGE);
            let to = to_usize((page + 1) * PAGE);
            if out.len() < to {
                out.resize(to, 0);
            }
            for (i, b) in out[from..to].iter_mut().enumerate() {
                *b = version.get(from + i).copied().unwrap_or(0);
            }
        }
        if let Some(op) = pending.get(to_usize(k)) {
            op.apply(&mut version);
        }
    }
    out.resize(final_len, 0);
    out
}

/// Writes a random prefix of `data` at `offset`, then (with `garbage`) junk
/// up to the end of the sector the prefix ends in, never past the write.
fn tear(bytes: &mut Vec<u8>, offset: u64, data: &[u8], garbage: bool, rng: &mut SplitMix64) {
    let len = data.len() as u64;
    if len == 0 {
        return;
    }
    let kept = rng.below(len);
    write_at(bytes, offset, &data[..to_usize(kept)]);
    if !garbage {
        return;
    }
    let start = offset + kept;
    let sector_end = (start / SECTOR + 1) * SECTOR;
    let end = sector_end.min(offset + len);
    let junk: Vec<u8> = (start..end).map(|_| rng.next() as u8).collect();
    write_at(bytes, start, &junk);
}

/// A small seeded generator (SplitMix64): crash outcomes must be
/// reproducible from a seed, and the engine has no `rand` dependency.
pub(super) struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for test outcomes; 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}
