//! Search hints over a sorted run of keys: 8 bytes of each key right after
//! the prefix all of them share, big endian, zero-padded, in one dense
//! array. A search compares a key's hint against the array (8 bytes per
//! key, cache resident) and only compares whole keys where hints tie, so
//! a lookup touches one or two of the keys themselves instead of every
//! key on a binary search's path (each a pointer to chase, usually a cache
//! miss). Used for a table's blocks (sstable/table.rs) and a level's
//! tables (lsm/levels.rs).

/// Hints for `keys` (sorted ascending).
#[derive(Clone, Debug, Default)]
pub(crate) struct KeyHints {
    prefix: Vec<u8>,
    hints: Vec<u64>,
}

impl KeyHints {
    pub(crate) fn new<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> KeyHints {
        let mut all = keys.clone();
        let prefix = match (all.next(), all.last()) {
            (Some(a), Some(b)) => a[..common_prefix(a, b)].to_vec(),
            (Some(a), None) => a.to_vec(),
            _ => Vec::new(),
        };
        let hints = keys.map(|k| hint(k, prefix.len())).collect();
        KeyHints { prefix, hints }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.prefix.capacity() + self.hints.capacity() * 8
    }

    /// Where the first key `>= key` can be: every key before the range's
    /// start is `< key`, every key from its end on is `> key`, so the
    /// answer lies in `start..=end` and only keys in `start..end` need a
    /// whole comparison. The full range when `key` lacks the prefix.
    pub(crate) fn narrow(&self, key: &[u8]) -> std::ops::Range<usize> {
        // Most levels are empty. And no `memcmp` of an empty prefix: its
        // pointer is dangling, and glibc's AVX-512 `memcmp` does a masked
        // load from it even for 0 bytes, which an unmapped address turns
        // into a microcode assist (~100 ns; `perf` put half of an absent
        // key's read there).
        if self.hints.is_empty() {
            return 0..0;
        }
        if !self.prefix.is_empty() && !key.starts_with(&self.prefix) {
            return 0..self.hints.len();
        }
        let h = hint(key, self.prefix.len());
        let lo = self.hints.partition_point(|&x| x < h);
        let hi = lo + self.hints[lo..].partition_point(|&x| x <= h);
        lo..hi
    }
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// 8 bytes of `key` after its first `skip`, big endian, zero-padded: for
/// keys sharing those `skip` bytes, `hint(a) < hint(b)` implies `a < b`.
fn hint(key: &[u8], skip: usize) -> u64 {
    let mut b = [0u8; 8];
    let tail = key.get(skip..).unwrap_or_default();
    let n = tail.len().min(8);
    b[..n].copy_from_slice(&tail[..n]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The first key `>= probe` always lies in `narrow(probe)` or at
        /// its end, for any sorted keys and any probe.
        #[test]
        fn narrow_brackets_the_partition_point(
            mut keys in proptest::collection::vec(proptest::collection::vec(0u8..4, 0..12), 0..40),
            probe in proptest::collection::vec(0u8..4, 0..12),
        ) {
            keys.sort();
            keys.dedup();
            let hints = KeyHints::new(keys.iter().map(Vec::as_slice));
            let want = keys.partition_point(|k| k.as_slice() < probe.as_slice());
            let r = hints.narrow(&probe);
            prop_assert!(r.start <= want && want <= r.end, "{r:?} {want}");
            let got = r.start + keys[r.clone()].partition_point(|k| k.as_slice() < probe.as_slice());
            prop_assert_eq!(got, want);
        }
    }
}
