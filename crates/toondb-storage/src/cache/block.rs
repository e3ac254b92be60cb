//! [`BlockCache`]: a weight-bounded concurrent cache of decompressed data
//! blocks, keyed by (table file number, block offset), plus the charge of
//! the open tables' decoded indexes and filters.
//!
//! Decoded metadata (a table's index and filter) is held by its open table,
//! not as an evictable entry: an index is decoded whole, so evicting one to
//! make room for a data block and decoding it again on the next read of its
//! table made random reads of a 2 GiB database whose indexes nearly filled
//! the cache 7x slower (docs/performance.md). Its bytes are charged to the
//! cache instead ([`BlockCache::charge_meta`]): the room left for data blocks
//! shrinks by them, so data blocks plus charged metadata stay within the
//! capacity. Metadata that does not fit (at most 7/8 of the capacity is
//! given to it) is held uncharged, bounded by the table cache.
//!
//! Built on `quick_cache`, whose sharded S3-FIFO-style policy (a small
//! probationary queue, a main queue and a ghost list of recently evicted
//! keys) is scan resistant: a full scan or a compaction reading cold blocks
//! once cannot flush the index blocks and hot data blocks that every point
//! read needs, which a plain LRU would. Writing our own sharded LRU with a
//! probationary segment would have been the same idea with less testing.
//!
//! File numbers are never reused while an engine runs (the manifest's next
//! file number only grows), so an entry can never be served for the wrong
//! file; entries of a deleted table are dropped anyway
//! ([`BlockCache::forget_table`]) so they do not take space until evicted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

/// (table file number, offset of the block in the file).
pub(crate) type CacheKey = (u64, u64);

/// Bookkeeping charged per entry on top of its bytes (key, hash slot,
/// `Arc` header, queue links), so many tiny blocks cannot exceed the bound.
const ENTRY_OVERHEAD: u64 = 64;

/// A decompressed data block.
type Value = Arc<[u8]>;

/// Hashes a [`CacheKey`] (two integers written as `u64`s) with a
/// multiply-xorshift mix: a lookup is on every table probe of every read, and
/// the std default (SipHash) cost ~20 ns of it. Keys are file numbers and
/// offsets chosen by the engine, not by users, so flooding is no concern.
#[derive(Clone, Copy, Default)]
struct KeyHash;

#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(29) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        // splitmix64's finalizer: every input bit reaches the high and the
        // low bits (quick_cache takes the shard and the slot from both).
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl std::hash::BuildHasher for KeyHash {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher::default()
    }
}

#[derive(Clone)]
struct Charge;

impl Weighter<CacheKey, Value> for Charge {
    fn weight(&self, _key: &CacheKey, val: &Value) -> u64 {
        ENTRY_OVERHEAD + val.len() as u64
    }
}

/// Counts evictions (quick_cache reports them through its lifecycle hook;
/// inserts too large to admit count as evictions as well).
#[derive(Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Value> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _val: Value) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// What `Stats` reports about the block cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockCacheStats {
    /// Lookups of a compressed data block answered from the cache, and
    /// those that had to decompress it.
    pub hits: u64,
    pub misses: u64,
    /// Data blocks evicted to stay within the capacity.
    pub evictions: u64,
    /// Bytes charged now: data blocks (plus a fixed overhead each) and the
    /// charged metadata of open tables; never above `capacity`
    /// (`Options::cache_size`).
    pub bytes: u64,
    pub capacity: u64,
    /// Data blocks held now.
    pub entries: u64,
    /// Bytes of open tables' decoded indexes and filters charged to the
    /// cache (part of `bytes`), and held beyond it (not part of `bytes`:
    /// they did not fit; bounded by `max_open_files`).
    pub meta_bytes: u64,
    pub meta_overflow_bytes: u64,
}

#[derive(Default)]
struct MetaCharge {
    charged: u64,
    overflow: u64,
}

pub(crate) struct BlockCache {
    cache: Cache<CacheKey, Value, Charge, KeyHash, CountEvictions>,
    capacity: u64,
    /// Metadata bytes charged (and not), changed under the lock together
    /// with the data blocks' capacity.
    meta: Mutex<MetaCharge>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

impl BlockCache {
    /// A cache holding at most `capacity` bytes (`capacity > 0`).
    pub fn new(capacity: u64) -> Arc<BlockCache> {
        let evictions = CountEvictions::default();
        let counter = evictions.0.clone();
        // The estimate sizes the shards and the ghost list; 4 KiB is the
        // default block size. Two shards per core keep contention low;
        // quick_cache merges shards that would hold fewer than ~32 items, so
        // a tiny cache has one shard and every entry can use all of it.
        let items = (capacity / 4096).max(1) as usize;
        let options = OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(capacity)
            .shards(
                std::thread::available_parallelism()
                    .map_or(4, |n| n.get() * 2)
                    .max(1),
            )
            .build();
        let cache = match options {
            Ok(options) => Cache::with_options(options, Charge, KeyHash, evictions),
            // Only an invalid setting fails (none of ours is); fall back to
            // the plain constructor rather than fail the open.
            Err(_) => Cache::with(items, capacity, Charge, KeyHash, evictions),
        };
        Arc::new(BlockCache {
            cache,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: counter,
            meta: Mutex::new(MetaCharge::default()),
        })
    }

    /// Counts a lookup as a hit or a miss. Separate from the lookups
    /// because only the caller knows whether a miss was one (a data block
    /// found stored uncompressed was never a candidate).
    pub fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A decompressed data block (not counted: see [`BlockCache::count`]).
    pub fn data(&self, key: CacheKey) -> Option<Arc<[u8]>> {
        self.cache.get(&key)
    }

    pub fn insert_data(&self, key: CacheKey, block: Arc<[u8]>) {
        self.cache.insert(key, block);
    }

    /// Charges `bytes` of an open table's decoded metadata to the cache if
    /// they fit (metadata may take up to 7/8 of the capacity): the data
    /// blocks' room shrinks first (evicting), then the charge is counted, so
    /// the total never exceeds the capacity. Returns whether it was charged;
    /// either way the caller hands the same `bytes` to
    /// [`BlockCache::release_meta`] when the table closes.
    pub fn charge_meta(&self, bytes: u64) -> bool {
        let mut m = self.meta.lock();
        let charged = m.charged + bytes;
        if charged > self.capacity - self.capacity / 8 {
            m.overflow += bytes;
            return false;
        }
        self.set_data_capacity(self.capacity - charged);
        m.charged = charged;
        true
    }

    /// Gives back what [`BlockCache::charge_meta`] took.
    pub fn release_meta(&self, bytes: u64, charged: bool) {
        let mut m = self.meta.lock();
        if charged {
            m.charged = m.charged.saturating_sub(bytes);
            self.set_data_capacity(self.capacity - m.charged);
        } else {
            m.overflow = m.overflow.saturating_sub(bytes);
        }
    }

    /// quick_cache rounds each shard's share up, so pass a multiple of the
    /// shard count to keep the sum within `cap`.
    fn set_data_capacity(&self, cap: u64) {
        let shards = self.cache.num_shards().max(1) as u64;
        self.cache.set_capacity((cap / shards) * shards);
    }

    /// Drops every entry of table `number` (its file is being deleted).
    pub fn forget_table(&self, number: u64) {
        self.cache.retain(|k, _| k.0 != number);
    }

    pub fn stats(&self) -> BlockCacheStats {
        // Under the lock, so `bytes` pairs the charge with the capacity the
        // data blocks were held to.
        let meta = self.meta.lock();
        BlockCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.cache.weight() + meta.charged,
            capacity: self.capacity,
            entries: self.cache.len() as u64,
            meta_bytes: meta.charged,
            meta_overflow_bytes: meta.overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_at_most_its_capacity_and_counts() {
        let cache = BlockCache::new(16 << 10);
        for i in 0..100u64 {
            let key = (1, i * 1000);
            assert!(cache.data(key).is_none());
            cache.count(false);
            cache.insert_data(key, vec![i as u8; 1000].into());
            assert!(cache.stats().bytes <= cache.stats().capacity);
        }
        let s = cache.stats();
        assert_eq!(s.misses, 100);
        assert!(s.evictions > 0, "{s:?}");
        assert!(s.entries < 100 && s.entries > 0, "{s:?}");
        // The newest insert is resident (S3-FIFO admits into the small queue).
        let b = cache.data((1, 99_000)).expect("newest block");
        assert!(b.iter().all(|&x| x == 99));
    }

    #[test]
    fn metadata_charges_shrink_the_room_for_blocks_and_tables_are_forgotten() {
        let cache = BlockCache::new(64 << 10);
        for i in 0..40u64 {
            cache.insert_data((7, i * 2000), vec![1u8; 1900].into());
        }
        let full = cache.stats();
        assert!(
            full.bytes > 48 << 10 && full.bytes <= full.capacity,
            "{full:?}"
        );
        assert!(cache.charge_meta(40 << 10));
        let s = cache.stats();
        assert_eq!(s.meta_bytes, 40 << 10);
        assert!(
            s.bytes <= s.capacity && s.bytes - s.meta_bytes <= 24 << 10,
            "{s:?}"
        );
        assert!(s.evictions > 0);
        // Past 7/8 of the capacity metadata is held uncharged.
        assert!(!cache.charge_meta(20 << 10));
        assert_eq!(cache.stats().meta_overflow_bytes, 20 << 10);
        cache.release_meta(20 << 10, false);
        cache.release_meta(40 << 10, true);
        assert_eq!(cache.stats().meta_bytes, 0);
        cache.insert_data((8, 100), vec![4].into());
        cache.forget_table(7);
        assert!(cache.data((7, 0)).is_none());
        assert_eq!(cache.data((8, 100)).as_deref(), Some(&[4u8][..]));
        assert_eq!(cache.stats().entries, 1);
    }
}
