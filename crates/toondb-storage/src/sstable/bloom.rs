//! The whole-table bloom filter on user keys, stored in the `filter.bloom`
//! meta block (docs/format-table.md, "Bloom filter").
//!
//! Contents: `bits[n] | probes u8`, `n >= 1`. A key sets (and is tested
//! against) `probes` bits chosen by double hashing of [`bloom_hash`]:
//! `h = bloom_hash(key)`, `delta = h.rotate_left(32)`, and for each probe
//! bit `h mod (8 n)` (bit `b` is bit `b % 8` of byte `b / 8`), then
//! `h = h + delta` (wrapping). A filter with `probes` outside 1..=30 is
//! treated as "may contain" for every key, so later encodings can use those
//! values without older readers giving wrong answers.

/// Bits per key allowed; outside this a filter is either useless or huge.
pub(crate) const MIN_BITS_PER_KEY: u32 = 1;
pub(crate) const MAX_BITS_PER_KEY: u32 = 32;
const MAX_PROBES: u8 = 30;

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
    pub(crate) fn add(&mut self, user_key: &[u8]) {
        self.hashes.push(bloom_hash(user_key));
    }

    /// The filter contents for `bits_per_key` (clamped to the sane range).
    pub(crate) fn finish(&self, bits_per_key: u32) -> Vec<u8> {
        let bpk = bits_per_key.clamp(MIN_BITS_PER_KEY, MAX_BITS_PER_KEY);
        // k = bpk * ln 2 minimises the false-positive rate.
        let probes = ((f64::from(bpk) * 0.69).round() as u8).clamp(1, MAX_PROBES);
        let bits = (self.hashes.len() as u64 * u64::from(bpk)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let nbits = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &hash in &self.hashes {
            let (mut h, delta) = (hash, hash.rotate_left(32));
            for _ in 0..probes {
                let bit = h % nbits;
                // In range: bit < 8 * bytes.
                out[(bit / 8) as usize] |= 1 << (bit % 8);
                h = h.wrapping_add(delta);
            }
        }
        out[bytes] = probes;
        out
    }
}

/// Whether `filter` (the block's contents) may contain `user_key`. False
/// only if the key was certainly not added.
pub(crate) fn may_contain(filter: &[u8], user_key: &[u8]) -> bool {
    let Some((&probes, bits)) = filter.split_last() else {
        return true;
    };
    if bits.is_empty() || !(1..=MAX_PROBES).contains(&probes) {
        return true;
    }
    let nbits = bits.len() as u64 * 8;
    let hash = bloom_hash(user_key);
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
        assert_eq!(f.len(), 12_500 + 1);
        assert_eq!(*f.last().unwrap(), 7);
        for i in 0..10_000u32 {
            assert!(may_contain(&f, format!("key{i}").as_bytes()));
        }
        let fp = (0..10_000u32)
            .filter(|i| may_contain(&f, format!("other{i}").as_bytes()))
            .count();
        // ~0.8% expected at 10 bits per key.
        assert!(fp < 200, "{fp} false positives in 10000");
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
        assert_eq!(*b.finish(1000).last().unwrap(), 22);
        assert_eq!(*b.finish(0).last().unwrap(), 1);
    }
}
