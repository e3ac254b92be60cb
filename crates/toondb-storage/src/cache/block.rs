//! [`BlockCache`]: a weight-bounded concurrent cache of decoded table
//! blocks, keyed by (table file number, block offset).
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

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

/// (table file number, offset of the block in the file).
pub(crate) type CacheKey = (u64, u64);

/// Bookkeeping charged per entry on top of its bytes (key, hash slot,
/// `Arc` header, queue links), so many tiny blocks cannot exceed the bound.
const ENTRY_OVERHEAD: u64 = 64;

#[derive(Clone)]
enum Value {
    /// A decompressed data block.
    Data(Arc<[u8]>),
    /// A table's decoded index and filter (the sstable layer's own type),
    /// with the bytes it holds.
    Meta(Arc<dyn Any + Send + Sync>, u64),
}

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
        ENTRY_OVERHEAD
            + match val {
                Value::Data(b) => b.len() as u64,
                Value::Meta(_, bytes) => *bytes,
            }
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
    /// Lookups answered from the cache, and lookups that had to decode
    /// (decompress a data block, or decode an index and filter).
    pub hits: u64,
    pub misses: u64,
    /// Entries evicted to stay within the capacity.
    pub evictions: u64,
    /// Bytes held now (entries' bytes plus a fixed overhead per entry), and
    /// the bound (`Options::cache_size`).
    pub bytes: u64,
    pub capacity: u64,
    /// Entries held now.
    pub entries: u64,
}

pub(crate) struct BlockCache {
    cache: Cache<CacheKey, Value, Charge, KeyHash, CountEvictions>,
    capacity: u64,
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
        match self.cache.get(&key) {
            Some(Value::Data(b)) => Some(b),
            _ => None,
        }
    }

    pub fn insert_data(&self, key: CacheKey, block: Arc<[u8]>) {
        self.cache.insert(key, Value::Data(block));
    }

    /// A table's decoded metadata of type `T` (not counted).
    pub fn meta<T: Any + Send + Sync>(&self, key: CacheKey) -> Option<Arc<T>> {
        match self.cache.get(&key) {
            Some(Value::Meta(m, _)) => m.downcast::<T>().ok(),
            _ => None,
        }
    }

    /// The metadata if cached, without counting or touching its recency
    /// (for error messages).
    pub fn peek_meta<T: Any + Send + Sync>(&self, key: CacheKey) -> Option<Arc<T>> {
        match self.cache.peek(&key) {
            Some(Value::Meta(m, _)) => m.downcast::<T>().ok(),
            _ => None,
        }
    }

    pub fn insert_meta<T: Any + Send + Sync>(&self, key: CacheKey, meta: Arc<T>, bytes: u64) {
        self.cache.insert(key, Value::Meta(meta, bytes));
    }

    /// Whether an entry of `bytes` can be admitted at all: an entry larger
    /// than a shard's share of the capacity would be rejected on insert.
    pub fn admits(&self, bytes: u64) -> bool {
        bytes + ENTRY_OVERHEAD <= self.cache.shard_capacity()
    }

    /// Drops every entry of table `number` (its file is being deleted).
    pub fn forget_table(&self, number: u64) {
        self.cache.retain(|k, _| k.0 != number);
    }

    pub fn stats(&self) -> BlockCacheStats {
        BlockCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            bytes: self.cache.weight(),
            capacity: self.capacity,
            entries: self.cache.len() as u64,
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
    fn meta_round_trips_by_type_and_tables_are_forgotten() {
        let cache = BlockCache::new(1 << 20);
        cache.insert_meta((7, 0), Arc::new(42u32), 4);
        cache.insert_data((7, 100), vec![1, 2, 3].into());
        cache.insert_data((8, 100), vec![4].into());
        assert_eq!(cache.meta::<u32>((7, 0)).as_deref(), Some(&42));
        assert!(cache.meta::<u64>((7, 0)).is_none(), "wrong type is a miss");
        assert!(cache.peek_meta::<u32>((7, 0)).is_some());
        cache.forget_table(7);
        assert!(cache.data((7, 100)).is_none());
        assert!(cache.meta::<u32>((7, 0)).is_none());
        assert_eq!(cache.data((8, 100)).as_deref(), Some(&[4u8][..]));
    }
}
