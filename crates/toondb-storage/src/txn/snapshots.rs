//! The registry of live read timestamps (snapshots, transactions and
//! scans). It makes a leak visible in stats, and it is what compaction
//! consults before dropping a version some reader can still see.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::key::Timestamp;

#[derive(Debug, Default)]
pub(crate) struct SnapshotList {
    live: Mutex<BTreeMap<Timestamp, usize>>,
}

impl SnapshotList {
    /// Registers a reader at the timestamp `now()` returns. Taking the
    /// timestamp under the registry lock means a pruning pass that reads
    /// the oldest live timestamp can never miss a reader about to register
    /// at an older one.
    pub fn acquire(&self, now: impl FnOnce() -> Timestamp) -> Timestamp {
        let mut live = self.live.lock();
        let ts = now();
        *live.entry(ts).or_default() += 1;
        ts
    }

    pub fn release(&self, ts: Timestamp) {
        let mut live = self.live.lock();
        if let Some(n) = live.get_mut(&ts) {
            *n -= 1;
            if *n == 0 {
                live.remove(&ts);
            }
        }
    }

    /// Every live read timestamp plus `now()` (the visible timestamp),
    /// sorted and without duplicates: the timestamps compaction must keep a
    /// version for. Taken under the registry lock, so a reader registering
    /// later gets a timestamp at or above `now()`.
    pub fn read_points(&self, now: impl FnOnce() -> Timestamp) -> Vec<Timestamp> {
        let live = self.live.lock();
        let visible = now();
        let mut points: Vec<Timestamp> = live.keys().copied().collect();
        if points.last().is_none_or(|&last| last < visible) {
            points.push(visible);
        }
        points
    }

    pub fn oldest(&self) -> Option<Timestamp> {
        self.live.lock().keys().next().copied()
    }

    pub fn count(&self) -> usize {
        self.live.lock().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_oldest() {
        let list = SnapshotList::default();
        let a = list.acquire(|| 5);
        let b = list.acquire(|| 5);
        let c = list.acquire(|| 9);
        assert_eq!((list.oldest(), list.count()), (Some(5), 3));
        list.release(a);
        assert_eq!(list.oldest(), Some(5));
        list.release(b);
        assert_eq!(list.oldest(), Some(9));
        list.release(c);
        assert_eq!((list.oldest(), list.count()), (None, 0));
    }
}
