//! A memtable's point-read index: each user key's newest version, found by
//! the key's hash in one or two cache lines instead of a skiplist search.
//!
//! Why: a random point read of a key in a large memtable walked the
//! skiplist's levels, one cache miss per level, and took about twice as
//! long as a read of the same key from a table through its hash index
//! (docs/performance.md, "The memtable's point index"). Reads of recent
//! writes, and every read while a just-filled memtable is being flushed,
//! paid that.
//!
//! Layout: a power-of-two array of 64-bit slots, open addressing with
//! linear probing. A slot is 0 (empty) or a 16-bit tag from the key's hash
//! above the 48-bit address of the key's newest [`MemKey`], which lives in
//! its skiplist node. A slot, once taken by a key, only ever names versions
//! of that key, each newer than the last; slots are never emptied.
//!
//! Safety of the addresses: the memtable never removes a version from its
//! skiplist (every insert path inserts a version no version in it equals,
//! see memtable.rs), and a skiplist frees its nodes only on removal or when
//! it is dropped, with the memtable that owns this index. So an address
//! read from a slot stays valid for as long as the reader borrows the
//! memtable.
//!
//! Visibility: the inserting thread (one at a time: the committer) sets a
//! key's slot after inserting the version into the skiplist and before the
//! engine publishes the version's timestamp, so a reader whose snapshot
//! covers a version finds that version or a newer one here. A newer one
//! (or an index that could not take every key) sends the reader to the
//! skiplist, which answers for any snapshot.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::memtable::MemKey;

/// The slot array, in pages of its own: an anonymous map, which the kernel
/// zeroes lazily, so an index costs memory only for the pages keys hash to
/// and creating one clears nothing (a heap allocation this size can come
/// back from `calloc` as memory it clears first). Unmapped with the index.
/// If the map cannot be made, the array is empty: every insert gives up
/// and every lookup says "unknown", so reads search the skiplist.
struct Slots {
    /// Keeps the pages mapped; only reached through `ptr`.
    _map: Option<memmap2::MmapMut>,
    ptr: *const AtomicU64,
    len: usize,
}

// SAFETY: the slots are atomics, shared by reference like any
// `[AtomicU64]`; the map they live in is owned here and unmapped on drop.
unsafe impl Send for Slots {}
// SAFETY: as above.
unsafe impl Sync for Slots {}

impl Slots {
    fn zeroed(n: usize) -> Slots {
        match memmap2::MmapMut::map_anon(n * 8) {
            Ok(mut map) => Slots {
                ptr: map.as_mut_ptr().cast::<AtomicU64>().cast_const(),
                _map: Some(map),
                len: n,
            },
            Err(_) => Slots {
                _map: None,
                ptr: std::ptr::null(),
                len: 0,
            },
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&AtomicU64> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `ptr` is the start of a page-aligned map of `len * 8`
        // zeroed bytes that lives as long as `self`, so slot `i` is an
        // aligned, in-bounds u64, valid as an `AtomicU64` (same layout, any
        // bits valid); it is only ever accessed through such atomics.
        Some(unsafe { &*self.ptr.add(i) })
    }
}

const ADDR_BITS: u32 = 48;
const ADDR_MASK: u64 = (1 << ADDR_BITS) - 1;
/// Probing stops being worth it past this load; an insert that would pass it
/// marks the index incomplete instead.
const MAX_LOAD_NUM: usize = 7;
const MAX_LOAD_DEN: usize = 8;

pub(crate) struct MemIndex {
    slots: Slots,
    mask: usize,
    /// Slots taken (written by the inserting thread only).
    used: AtomicU64,
    /// Set when a version could not be indexed (the index was full, or its
    /// address did not fit in 48 bits): from then on readers ignore the
    /// index and search the skiplist. Set before that version is published.
    incomplete: AtomicBool,
}

/// What the index says about a key.
pub(crate) enum Lookup<'a> {
    /// The key's newest version in the memtable.
    Newest(&'a MemKey),
    /// The memtable holds no version of the key.
    Absent,
    /// The index cannot tell (it is incomplete): search the skiplist.
    Unknown,
}

impl MemIndex {
    /// An index for a memtable that rotates at about `memtable_size` bytes:
    /// one slot per 64 bytes of it (the least a version is charged), so a
    /// memtable of small versions still fits.
    pub(crate) fn for_memtable(memtable_size: usize) -> MemIndex {
        let n = (memtable_size / 64).clamp(64, 1 << 27).next_power_of_two();
        let slots = Slots::zeroed(n);
        MemIndex {
            mask: slots.len().max(1) - 1,
            slots,
            used: AtomicU64::new(0),
            incomplete: AtomicBool::new(false),
        }
    }

    /// An empty index of the same size (for a copy of its memtable).
    pub(crate) fn empty_copy(&self) -> MemIndex {
        MemIndex::for_memtable(self.slots.len() * 64)
    }

    /// Bytes of slot memory mapped (committed only where keys hashed).
    pub(crate) fn bytes(&self) -> usize {
        self.slots.len() * 8
    }

    /// Whether some version could not be indexed.
    #[cfg(test)]
    pub(crate) fn is_incomplete(&self) -> bool {
        self.incomplete.load(Ordering::Acquire)
    }

    fn home(&self, hash: u64) -> usize {
        (hash >> 16) as usize & self.mask
    }

    fn tag(hash: u64) -> u64 {
        (hash & 0xffff) << ADDR_BITS
    }

    /// Records `version` (just inserted into the skiplist; `hash` is
    /// `MemFilter::hash` of its key) as its key's newest, unless the slot
    /// already names a version at least as new. Only the inserting thread
    /// calls this.
    pub(crate) fn note(&self, hash: u64, version: &MemKey) {
        if self.incomplete.load(Ordering::Relaxed) {
            return;
        }
        let addr = std::ptr::from_ref(version) as u64;
        if addr & !ADDR_MASK != 0 || addr == 0 {
            self.give_up();
            return;
        }
        let tag = Self::tag(hash);
        let key = version.user_key();
        let mut i = self.home(hash);
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            let s = slot.load(Ordering::Relaxed);
            if s == 0 {
                let used = self.used.load(Ordering::Relaxed) as usize + 1;
                if used * MAX_LOAD_DEN > self.slots.len() * MAX_LOAD_NUM {
                    self.give_up();
                    return;
                }
                self.used.store(used as u64, Ordering::Relaxed);
                slot.store(tag | addr, Ordering::Release);
                return;
            }
            if s & !ADDR_MASK == tag {
                // SAFETY: a non-empty slot holds the address of a version
                // in this memtable's skiplist, which outlives `&self` (see
                // the module's comment).
                let named = unsafe { &*((s & ADDR_MASK) as *const MemKey) };
                if named.user_key() == key {
                    if version.ts >= named.ts {
                        slot.store(tag | addr, Ordering::Release);
                    }
                    return;
                }
            }
            i = (i + 1) & self.mask;
        }
        self.give_up();
    }

    /// Turns the index off for good (it is full, or its memtable is not
    /// worth indexing): readers search the skiplist, and `note` returns at
    /// once.
    pub(crate) fn give_up(&self) {
        self.incomplete.store(true, Ordering::Release);
    }

    /// Starts loading the home slot of `hash` (a hint, for an insert about
    /// to be made).
    pub(crate) fn prefetch(&self, hash: u64) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(self.home(hash)) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: `_mm_prefetch` never faults; the pointer is to a slot
            // of this index.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(slot.as_ptr().cast_const().cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The newest version of `key` (whose `MemFilter::hash` is `hash`).
    pub(crate) fn find(&self, key: &[u8], hash: u64) -> Lookup<'_> {
        if self.incomplete.load(Ordering::Acquire) {
            return Lookup::Unknown;
        }
        let tag = Self::tag(hash);
        let mut i = self.home(hash);
        for _ in 0..self.slots.len() {
            let Some(slot) = self.slots.get(i) else {
                break;
            };
            let s = slot.load(Ordering::Acquire);
            if s == 0 {
                return Lookup::Absent;
            }
            if s & !ADDR_MASK == tag {
                // SAFETY: as in `note`; the Acquire load pairs with the
                // Release store that published the address, after the
                // version was fully written into the skiplist.
                let named = unsafe { &*((s & ADDR_MASK) as *const MemKey) };
                if named.user_key() == key {
                    return Lookup::Newest(named);
                }
            }
            i = (i + 1) & self.mask;
        }
        Lookup::Unknown
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::batch::WriteBatch;
    use crate::key::{Timestamp, ValueKind};
    use crate::memtable::Memtable;

    type Answer = Option<(Timestamp, ValueKind, Vec<u8>)>;

    fn read(m: &Memtable, key: &[u8], snapshot: Timestamp) -> Answer {
        m.get_ref(key, snapshot, |ts, kind, v| (ts, kind, v.to_vec()))
    }

    fn key(i: u8) -> Vec<u8> {
        // Some keys share their first 16 bytes (the skiplist's inline head).
        if i.is_multiple_of(2) {
            format!("k{i:02}").into_bytes()
        } else {
            format!("a-long-shared-prefix-{i:02}").into_bytes()
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Point reads through the index answer as the model does, at
        /// every snapshot: batches that write a key several times (the last
        /// write wins), deletes, reads of older snapshots than a key's
        /// newest version, and an index too small for the keys (it gives
        /// up, and reads search the skiplist).
        #[test]
        fn reads_match_a_model_at_every_snapshot(
            batches in prop::collection::vec(
                prop::collection::vec((0u8..40, prop::option::of(0u8..4)), 1..6), 1..60),
            small in any::<bool>(),
        ) {
            let m = Memtable::sized(1, if small { 4 << 10 } else { 1 << 20 });
            let mut model: BTreeMap<(Vec<u8>, Timestamp), Option<Vec<u8>>> = BTreeMap::new();
            for (ts, ops) in (1u64..).zip(&batches) {
                let mut b = WriteBatch::new();
                for (k, v) in ops {
                    let value = v.map(|v| vec![v; usize::from(v) * 3]);
                    match &value {
                        Some(v) => b.put(key(*k), v).unwrap(),
                        None => b.delete(key(*k)).unwrap(),
                    };
                    model.insert((key(*k), ts), value);
                }
                m.apply(&b, ts);
            }
            let last = batches.len() as u64;
            for k in 0u8..42 {
                let k = key(k);
                for snapshot in 0..=last + 1 {
                    let want: Answer = model
                        .range((k.clone(), 0)..=(k.clone(), snapshot))
                        .next_back()
                        .map(|((_, ts), v)| match v {
                            Some(v) => (*ts, ValueKind::Put, v.clone()),
                            None => (*ts, ValueKind::Delete, Vec::new()),
                        });
                    prop_assert_eq!(read(&m, &k, snapshot), want, "{:?} at {}", k, snapshot);
                }
                let newest = model.range((k.clone(), 0)..=(k.clone(), u64::MAX)).next_back();
                prop_assert_eq!(m.newest_ts(&k), newest.map(|((_, ts), _)| *ts));
            }
        }
    }

    /// Readers at the newest published timestamp always get the newest
    /// version of a key that is being overwritten all the while (the
    /// index's slot moves from version to version under them), with a big
    /// index and with one that fills up and gives up midway.
    #[test]
    fn readers_see_the_newest_published_version_of_overwritten_keys() {
        for size in [1 << 20, 8 << 10] {
            let m = Arc::new(Memtable::sized(1, size));
            let published = Arc::new(AtomicU64::new(0));
            const LAST: u64 = 20_000;
            const KEYS: u64 = 50;
            let writer = {
                let (m, published) = (m.clone(), published.clone());
                std::thread::spawn(move || {
                    for ts in 1..=LAST {
                        let mut b = WriteBatch::new();
                        // Distinct keys too, so the small index fills up.
                        b.put(format!("k{}", ts % KEYS), ts.to_le_bytes()).unwrap();
                        if ts % 7 == 0 {
                            b.put(format!("fill{ts}"), b"x").unwrap();
                        }
                        m.apply(&b, ts);
                        published.store(ts, Ordering::Release);
                    }
                })
            };
            let readers: Vec<_> = (0..2u64)
                .map(|r| {
                    let (m, published) = (m.clone(), published.clone());
                    std::thread::spawn(move || {
                        let mut checked = 0u64;
                        loop {
                            let upto = published.load(Ordering::Acquire);
                            for j in [r, upto % KEYS, (upto + 17) % KEYS] {
                                // The newest ts <= upto written to key j.
                                let Some(want) = (0..KEYS)
                                    .map(|d| upto.wrapping_sub(d))
                                    .find(|t| (1..=upto).contains(t) && t % KEYS == j)
                                else {
                                    continue;
                                };
                                let got = read(&m, format!("k{j}").as_bytes(), upto);
                                assert_eq!(
                                    got,
                                    Some((want, ValueKind::Put, want.to_le_bytes().to_vec())),
                                    "k{j} at {upto}"
                                );
                                checked += 1;
                            }
                            if upto == LAST {
                                return checked;
                            }
                        }
                    })
                })
                .collect();
            writer.join().unwrap();
            for r in readers {
                assert!(r.join().unwrap() > 0);
            }
        }
    }

    /// Keys whose hashes collide entirely (same home slot, same tag) each
    /// find their own version, an absent one finds none, and a newer
    /// version of one moves only its own slot.
    #[test]
    fn colliding_keys_are_told_apart_by_their_bytes() {
        use crate::memtable::MemKey;
        let index = MemIndex::for_memtable(1 << 20);
        let hash = 0x1234_5678_9abc_def0;
        let a1 = MemKey::version(b"a", 1, ValueKind::Put, b"1");
        let b2 = MemKey::version(b"b", 2, ValueKind::Put, b"2");
        let a3 = MemKey::version(b"a", 3, ValueKind::Put, b"3");
        let stale = MemKey::version(b"b", 1, ValueKind::Put, b"old");
        index.note(hash, &a1);
        index.note(hash, &b2);
        index.note(hash, &a3);
        // An older version noted late (replay order) does not win.
        index.note(hash, &stale);
        let named = |k: &[u8]| match index.find(k, hash) {
            Lookup::Newest(v) => Some((v.ts, v.value().to_vec())),
            Lookup::Absent => None,
            Lookup::Unknown => panic!("complete index"),
        };
        assert_eq!(named(b"a"), Some((3, b"3".to_vec())));
        assert_eq!(named(b"b"), Some((2, b"2".to_vec())));
        assert_eq!(named(b"c"), None);
        assert_eq!(index.used.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_full_index_gives_up_and_says_so() {
        let index = MemIndex::for_memtable(0);
        assert_eq!(index.bytes(), 64 * 8);
        let m = Memtable::sized(1, 0);
        for i in 0..100u64 {
            let mut b = WriteBatch::new();
            b.put(format!("key{i}"), b"v").unwrap();
            m.apply(&b, i + 1);
        }
        // 64 slots hold at most 56 keys; every key still reads back.
        for i in 0..100u64 {
            assert_eq!(
                read(&m, format!("key{i}").as_bytes(), 100).map(|a| a.0),
                Some(i + 1)
            );
        }
        assert!(m.index_is_incomplete());
    }

    #[test]
    fn one_slot_per_64_bytes_of_memtable() {
        assert_eq!(MemIndex::for_memtable(32 << 20).bytes(), 4 << 20);
        assert_eq!(MemIndex::for_memtable(1 << 20).bytes(), 128 << 10);
    }
}
