//! A persistent append-only sequence: pushing onto a `Log` returns a new
//! `Log` and leaves the old one (still held by readers) unchanged.
//!
//! Items live in immutable shared chunks whose lengths are distinct powers
//! of two, longest first, like the digits of a binary counter: a push adds
//! a chunk of one item and merges equal-length tail chunks. An item is
//! copied once per merge it takes part in, so a push costs O(log n)
//! amortised (over a lineage of pushes onto the newest log), a clone
//! copies O(log n) chunk pointers, and a lookup visits O(log n) chunks.
//! A `Vec` cloned on every push would cost O(n) per push instead.

use std::sync::Arc;

#[derive(Debug, Clone)]
pub(super) struct Log<T> {
    chunks: Vec<Arc<[T]>>,
    len: usize,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T: Clone> Log<T> {
    /// This log with `item` appended.
    pub fn push(&self, item: T) -> Log<T> {
        let mut chunks = self.chunks.clone();
        let mut tail = vec![item];
        while let Some(last) = chunks.last().filter(|c| c.len() <= tail.len()) {
            let mut merged = Vec::with_capacity(last.len() + tail.len());
            merged.extend_from_slice(last);
            merged.append(&mut tail);
            tail = merged;
            chunks.pop();
        }
        chunks.push(tail.into());
        Log {
            chunks,
            len: self.len + 1,
        }
    }
}

impl<T> Log<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, mut index: usize) -> Option<&T> {
        for chunk in &self.chunks {
            match chunk.get(index) {
                Some(item) => return Some(item),
                None => index -= chunk.len(),
            }
        }
        None
    }

    pub fn last(&self) -> Option<&T> {
        self.chunks.last().and_then(|c| c.last())
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The index of the first item for which `pred` is false, `pred` being
    /// true on a prefix of the log (like `slice::partition_point`).
    pub fn partition_point(&self, pred: impl Fn(&T) -> bool) -> usize {
        let mut before = 0;
        for chunk in &self.chunks {
            match chunk.last() {
                Some(last) if pred(last) => before += chunk.len(),
                _ => return before + chunk.partition_point(&pred),
            }
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_leave_older_logs_unchanged() {
        let mut logs = vec![Log::default()];
        for i in 0..100u32 {
            let next = logs.last().unwrap().push(i);
            logs.push(next);
        }
        for (n, log) in logs.iter().enumerate() {
            assert_eq!(log.len(), n);
            let items: Vec<u32> = log.iter().copied().collect();
            assert_eq!(items, (0..n as u32).collect::<Vec<_>>());
            assert_eq!(log.last().copied(), n.checked_sub(1).map(|i| i as u32));
            for i in 0..=n {
                assert_eq!(log.get(i).copied(), (i < n).then_some(i as u32));
                assert_eq!(log.partition_point(|&x| (x as usize) < i), i);
            }
            // Chunk lengths are distinct powers of two: O(log n) of them.
            assert_eq!(log.chunks.len(), n.count_ones() as usize);
        }
    }
}
