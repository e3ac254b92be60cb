//! A memtable's bloom filter on user keys, so a point read of a key the
//! memtable does not hold skips the skiplist search.
//!
//! Without it every read pays a full skiplist descent in the active memtable
//! (and in each sealed one) before it reaches the tables: about 20% of a
//! random `getSync` over 200K keys (perf), most of it cache misses on
//! random nodes. A blocked filter costs one cache line per probe.
//!
//! In memory only (never written to disk), so its layout is free to change.
//! Blocked bloom: a key's bits all lie in one 64-byte block, chosen by the
//! high half of its hash; [`PROBES`] bits in the block come from the low
//! half. Sized from the memtable's rotation threshold: one block per
//! [`BYTES_PER_BLOCK`] bytes of memtable, so about 12 bits per key for a
//! 16-byte key with a 100-byte value (one entry is ~180 bytes with the
//! skiplist's overhead); a memtable that outgrows its size only raises the
//! false-positive rate.
//!
//! Concurrency: one thread inserts (the commit thread, or recovery), any
//! thread reads. The inserting thread sets a key's bits (`fetch_or`) before
//! it inserts the version into the skiplist, so any reader that can find the
//! version (through the skiplist's release/acquire links, or because the
//! version's timestamp is visible) also sees the bits.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sstable::bloom_hash;

/// Bits set per key. With ~12 bits per key, 6 probes in a 512-bit block
/// give a false-positive rate around 1%.
const PROBES: u32 = 6;
/// Memtable bytes per 64-byte filter block (1/64 of the memtable's size).
const BYTES_PER_BLOCK: usize = 4096;
const WORDS_PER_BLOCK: usize = 8;

pub(crate) struct MemFilter {
    words: Box<[AtomicU64]>,
    /// The number of blocks, a power of two, minus one.
    block_mask: u64,
}

impl MemFilter {
    /// A filter for a memtable rotated at about `memtable_size` bytes.
    pub(crate) fn for_memtable(memtable_size: usize) -> MemFilter {
        let blocks = (memtable_size / BYTES_PER_BLOCK)
            .clamp(1, 1 << 20)
            .next_power_of_two();
        MemFilter {
            words: (0..blocks * WORDS_PER_BLOCK)
                .map(|_| AtomicU64::new(0))
                .collect(),
            block_mask: blocks as u64 - 1,
        }
    }

    /// The hash both `insert` and `may_contain` take: the table filters'
    /// hash, so a read can compute it once for every source.
    pub(crate) fn hash(key: &[u8]) -> u64 {
        bloom_hash(key)
    }

    /// Records a key (by its [`MemFilter::hash`]).
    pub(crate) fn insert(&self, hash: u64) {
        let base = self.block(hash);
        for (word, bit) in Self::bits(hash) {
            if let Some(w) = self.words.get(base + word) {
                w.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }

    /// False only if no key with this hash was inserted.
    pub(crate) fn may_contain(&self, hash: u64) -> bool {
        let base = self.block(hash);
        Self::bits(hash).all(|(word, bit)| {
            self.words
                .get(base + word)
                .is_none_or(|w| w.load(Ordering::Relaxed) & bit != 0)
        })
    }

    /// Bytes of memory the filter holds.
    #[allow(dead_code)] // tests
    pub(crate) fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn block(&self, hash: u64) -> usize {
        ((hash >> 32) & self.block_mask) as usize * WORDS_PER_BLOCK
    }

    /// (word within the block, bit mask) of each probe: 9 bits of the
    /// low half per probe (3 for the word, 6 for the bit).
    fn bits(hash: u64) -> impl Iterator<Item = (usize, u64)> {
        let low = hash as u32;
        // A second, odd stride mixes in the high half so keys sharing a low
        // half differ in their bits too.
        let step = ((hash >> 32) as u32) | 1;
        (0..PROBES).map(move |i| {
            let x = low.wrapping_add(i.wrapping_mul(step)).rotate_left(i * 9);
            (((x >> 6) & 7) as usize, 1u64 << (x & 63))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserted_keys_are_always_found() {
        let f = MemFilter::for_memtable(1 << 20);
        for i in 0..20_000u32 {
            f.insert(MemFilter::hash(format!("key{i:013}").as_bytes()));
        }
        for i in 0..20_000u32 {
            assert!(f.may_contain(MemFilter::hash(format!("key{i:013}").as_bytes())));
        }
    }

    #[test]
    fn absent_keys_are_mostly_ruled_out_at_the_sized_load() {
        // 1 MiB memtable of ~180-byte entries: ~5.8K keys.
        let f = MemFilter::for_memtable(1 << 20);
        assert_eq!(f.bytes(), (1 << 20) / 64);
        for i in 0..5_800u32 {
            f.insert(MemFilter::hash(format!("key{:013}", 2 * i).as_bytes()));
        }
        let false_positives = (0..100_000u32)
            .filter(|i| f.may_contain(MemFilter::hash(format!("absent{i:010}").as_bytes())))
            .count();
        assert!(false_positives < 3_000, "{false_positives} of 100000");
    }

    #[test]
    fn a_tiny_memtable_still_gets_a_working_filter() {
        let f = MemFilter::for_memtable(0);
        f.insert(MemFilter::hash(b"a"));
        assert!(f.may_contain(MemFilter::hash(b"a")));
        assert_eq!(f.bytes(), 64);
    }
}
