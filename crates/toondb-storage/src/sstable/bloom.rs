//! The whole-table bloom filter on user keys, stored in the `filter.bloom`
//! meta block (docs/format-table.md, "Bloom filter").
//!
//! Contents: `bits[n] | probes u8`, `n >= 1`, in one of two encodings told
//! apart by the last byte:
//!
//! - **classic** (`probes` in 1..=30): a key sets (and is tested against)
//!   `probes` bits chosen by double hashing of [`bloom_hash`]:
//!   `h = bloom_hash(key)`, `delta = h.rotate_left(32)`, and for each probe
//!   bit `h mod (8 n)` (bit `b` is bit `b % 8` of byte `b / 8`), then
//!   `h = h + delta` (wrapping). Each probe is a cache miss of its own in a
//!   filter larger than the CPU's caches.
//! - **cache-local** (`64 + probes`, `probes` in 1..=30; `n` a multiple of
//!   64): all of a key's bits lie in one 64-byte block, so a lookup costs
//!   one cache miss (two if the block straddles lines). Written since
//!   format-table "cache-local filter"; older readers see a last byte
//!   outside 1..=30 and treat the filter as "may contain" for every key
//!   (correct, only unfiltered).
//!
//! A filter whose last byte is neither is treated as "may contain" for
//! every key, so later encodings can use those values without older
//! readers giving wrong answers.

/// Bits per key allowed; outside this a filter is either useless or huge.
pub(crate) const MIN_BITS_PER_KEY: u32 = 1;
pub(crate) const MAX_BITS_PER_KEY: u32 = 32;
const MAX_PROBES: u8 = 30;
/// Added to `probes` in the last byte of a cache-local filter.
const CACHE_LOCAL: u8 = 64;
/// Bytes per block of a cache-local filter (one cache line).
const BLOCK_BYTES: usize = 64;

/// FNV-1a 64 of the key, then the MurmurHash3 64-bit finalizer (FNV alone
/// mixes the last bytes poorly). Part of the format: never change it.
pub(crate) fn bloom_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Collects key hashes while a table is written.
#[derive(Debug, Default)]
pub(crate) struct BloomBuilder {
    hashes: Vec<u64>,
}

impl BloomBuilder {
    /// Adds a user key; callers skip repeats of the previous key (versions).
    #[cfg(test)]
    pub(crate) fn add(&mut self, user_key: &[u8]) {
        self.add_hash(bloom_hash(user_key));
    }

    /// Adds a user key by its [`bloom_hash`] (the builder computes it once
    /// for the filter and the hash index).
    pub(crate) fn add_hash(&mut self, hash: u64) {
        self.hashes.push(hash);
    }

    /// Blocks of the filter [`BloomBuilder::finish`] would make now.
    fn blocks(&self, bits_per_key: u32) -> usize {
        let bpk = bits_per_key.clamp(MIN_BITS_PER_KEY, MAX_BITS_PER_KEY);
        let bits = (self.hashes.len() as u64 * u64::from(bpk)).max(512);
        bits.div_ceil(8 * BLOCK_BYTES as u64) as usize
    }

    /// The stored length (contents and trailer) of the filter
    /// [`BloomBuilder::finish`] would make now.
    pub(crate) fn finished_len(&self, bits_per_key: u32) -> usize {
        self.blocks(bits_per_key) * BLOCK_BYTES + 1 + super::block::V2_TRAILER_LEN
    }

    /// The filter contents for `bits_per_key` (clamped to the sane range),
    /// in the cache-local encoding.
    pub(crate) fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let bpk = bits_per_key.clamp(MIN_BITS_PER_KEY, MAX_BITS_PER_KEY);
        let probes = probes_for(bpk);
        let blocks = self.blocks(bits_per_key);
        let mut out = vec![0u8; blocks * BLOCK_BYTES + 1];
        for &hash in &self.hashes {
            let base = block_of(hash, blocks) * BLOCK_BYTES;
            for bit in block_bits(hash, probes) {
                // In range: base + 63 < blocks * BLOCK_BYTES.
                out[base + bit / 8] |= 1 << (bit % 8);
            }
        }
        out[blocks * BLOCK_BYTES] = CACHE_LOCAL + probes;
        out
    }

    /// The filter in the classic encoding (what builds before the
    /// cache-local one wrote; kept to test that they stay readable).
    #[cfg(test)]
    pub(crate) fn finish_classic(&self, bits_per_key: u32) -> Vec<u8> {
        let bpk = bits_per_key.clamp(MIN_BITS_PER_KEY, MAX_BITS_PER_KEY);
        let probes = probes_for(bpk);
        let bits = (self.hashes.len() as u64 * u64::from(bpk)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let nbits = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &hash in &self.hashes {
            let (mut h, delta) = (hash, hash.rotate_left(32));
            for _ in 0..probes {
                let bit = h % nbits;
                out[(bit / 8) as usize] |= 1 << (bit % 8);
                h = h.wrapping_add(delta);
            }
        }
        out[bytes] = probes;
        out
    }
}

/// k = bits per key × ln 2 minimises the false-positive rate.
fn probes_for(bits_per_key: u32) -> u8 {
    ((f64::from(bits_per_key) * 0.69).round() as u8).clamp(1, MAX_PROBES)
}

/// The block a key's bits lie in: the high half of its hash scaled to the
/// block count (multiply-shift, no division).
fn block_of(hash: u64, blocks: usize) -> usize {
    (((hash >> 32) * blocks as u64) >> 32) as usize
}

/// The bit positions (0..512) of a key within its block: `h` = the low half
/// of its hash; each probe multiplies `h` by `0x9e3779b9` (wrapping u32)
/// and takes its top 9 bits (the multiply-shift RocksDB's cache-local
/// filter uses; plain double hashing in 512 bits repeats patterns).
fn block_bits(hash: u64, probes: u8) -> impl Iterator<Item = usize> {
    let mut h = hash as u32;
    (0..probes).map(move |_| {
        h = h.wrapping_mul(0x9e37_79b9);
        (h >> 23) as usize
    })
}

/// Whether `filter` (the block's contents) may contain `user_key`. False
/// only if the key was certainly not added.
#[cfg(test)]
pub(crate) fn may_contain(filter: &[u8], user_key: &[u8]) -> bool {
    may_contain_hash(filter, bloom_hash(user_key))
}

/// [`may_contain`] for a key whose [`bloom_hash`] the caller computed (once
/// for all the tables and the hash indexes a read probes).
pub(crate) fn may_contain_hash(filter: &[u8], hash: u64) -> bool {
    let Some((&last, bits)) = filter.split_last() else {
        return true;
    };
    if bits.is_empty() {
        return true;
    }
    if (CACHE_LOCAL + 1..=CACHE_LOCAL + MAX_PROBES).contains(&last) {
        return may_contain_cache_local(bits, last - CACHE_LOCAL, hash);
    }
    let probes = last;
    if !(1..=MAX_PROBES).contains(&probes) {
        return true;
    }
    let nbits = bits.len() as u64 * 8;
    let (mut h, delta) = (hash, hash.rotate_left(32));
    for _ in 0..probes {
        let bit = h % nbits;
        if bits
            .get((bit / 8) as usize)
            .is_some_and(|b| b & (1 << (bit % 8)) == 0)
        {
            return false;
        }
        h = h.wrapping_add(delta);
    }
    true
}

fn may_contain_cache_local(bits: &[u8], probes: u8, hash: u64) -> bool {
    if !bits.len().is_multiple_of(BLOCK_BYTES) {
        return true;
    }
    let base = block_of(hash, bits.len() / BLOCK_BYTES) * BLOCK_BYTES;
    let Some(block) = bits.get(base..base + BLOCK_BYTES) else {
        return true;
    };
    block_bits(hash, probes).all(|bit| block[bit / 8] & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(format!("key{i}").as_bytes());
        }
        let f = b.finish(10);
        // 100,000 bits rounded up to 196 blocks of 512, then the probes byte.
        assert_eq!(f.len(), 196 * 64 + 1);
        assert_eq!(*f.last().unwrap(), 64 + 7);
        for i in 0..10_000u32 {
            assert!(may_contain(&f, format!("key{i}").as_bytes()));
        }
        let fp = (0..10_000u32)
            .filter(|i| may_contain(&f, format!("other{i}").as_bytes()))
            .count();
        // ~1% expected at 10 bits per key (cache-local).
        assert!(fp < 200, "{fp} false positives in 10000");
    }

    #[test]
    fn classic_filters_written_by_earlier_builds_still_filter() {
        let mut b = BloomBuilder::default();
        for i in 0..10_000u32 {
            b.add(format!("key{i}").as_bytes());
        }
        let f = b.finish_classic(10);
        assert_eq!(f.len(), 12_500 + 1);
        assert_eq!(*f.last().unwrap(), 7);
        for i in 0..10_000u32 {
            assert!(may_contain(&f, format!("key{i}").as_bytes()));
        }
        let fp = (0..10_000u32)
            .filter(|i| may_contain(&f, format!("other{i}").as_bytes()))
            .count();
        assert!(fp < 200, "{fp} false positives in 10000");
    }

    #[test]
    fn cache_local_bits_follow_the_spec() {
        // Computed from docs/format-table.md with a few lines of Python:
        // bloom_hash("key/0001") = 0x3ded6935abe8ec9d; one block (a filter
        // for one key has 512 bits); h = 0xabe8ec9d; 7 probes, each
        // h = h * 0x9e3779b9 mod 2^32, bit h >> 23.
        let mut b = BloomBuilder::default();
        b.add(b"key/0001");
        let f = b.finish(10);
        assert_eq!(f.len(), 65);
        let set: Vec<usize> = (0..512)
            .filter(|&i| f[i / 8] & (1 << (i % 8)) != 0)
            .collect();
        assert_eq!(set, vec![29, 71, 190, 196, 343, 346, 369]);
    }

    #[test]
    fn a_cache_local_filter_of_a_bad_length_says_maybe() {
        let mut f = vec![0u8; 63];
        f.push(64 + 7);
        assert!(may_contain(&f, b"k"));
        let mut f = vec![0u8; 64];
        f.push(64 + 7);
        assert!(!may_contain(&f, b"k"));
        // 64 + 31 and above: not an encoding this build knows.
        let mut f = vec![0u8; 64];
        f.push(64 + 31);
        assert!(may_contain(&f, b"k"));
    }

    #[test]
    fn hash_is_stable() {
        // The hash is part of the file format; these values were computed
        // independently (a few lines of Python following the spec).
        assert_eq!(bloom_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(bloom_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(bloom_hash(b"key/0001"), 0x3ded_6935_abe8_ec9d);
    }

    #[test]
    fn odd_filters_say_maybe() {
        assert!(may_contain(&[], b"k"));
        assert!(may_contain(&[7], b"k"));
        assert!(may_contain(&[0, 0, 0, 0, 0, 0, 0, 0, 31], b"k"));
        assert!(may_contain(&[0, 0, 0, 0, 0, 0, 0, 0, 0], b"k"));
        assert!(!may_contain(&[0, 0, 0, 0, 0, 0, 0, 0, 3], b"k"));
        // Empty table: a filter with no keys rejects everything.
        let f = BloomBuilder::default().finish(10);
        assert!(!may_contain(&f, b"k"));
        // Bits per key is clamped.
        let mut b = BloomBuilder::default();
        b.add(b"k");
        assert_eq!(*b.finish(1000).last().unwrap(), 64 + 22);
        assert_eq!(*b.finish(0).last().unwrap(), 64 + 1);
    }

    /// Review s24: the block index stays inside the filter for any hash at
    /// any block count a table can have (a u32 of blocks is a 256 GiB
    /// filter), and a large filter (2M keys, many blocks) has no false
    /// negatives in either encoding, read side by side as a database with
    /// old and new tables does.
    #[test]
    fn block_index_in_range_and_large_filters_of_both_encodings() {
        for blocks in [1usize, 2, 3, 1000, (1 << 31) + 7, u32::MAX as usize] {
            for hash in [
                0u64,
                1,
                u64::MAX,
                0xffff_ffff_0000_0000,
                0x8000_0000_0000_0000,
            ] {
                assert!(block_of(hash, blocks) < blocks, "{hash:x} of {blocks}");
            }
        }
        let mut b = BloomBuilder::default();
        let n = 2_000_000u32;
        for i in 0..n {
            b.add(&i.to_be_bytes());
        }
        let local = b.finish(10);
        let classic = b.finish_classic(10);
        assert_eq!(*local.last().unwrap(), 64 + 7);
        assert_eq!(*classic.last().unwrap(), 7);
        for i in 0..n {
            let key = i.to_be_bytes();
            assert!(may_contain(&local, &key), "cache-local lost {i}");
            assert!(may_contain(&classic, &key), "classic lost {i}");
        }
        // Absent keys: about 1% either way.
        let fp = |f: &[u8]| {
            (n..n + 100_000)
                .filter(|i| may_contain(f, &i.to_be_bytes()))
                .count()
        };
        assert!(fp(&local) < 2_000, "{}", fp(&local));
        assert!(fp(&classic) < 2_000, "{}", fp(&classic));
    }
}
