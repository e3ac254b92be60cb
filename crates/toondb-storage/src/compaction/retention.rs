//! What a compaction may drop.
//!
//! The *read points* are every live read timestamp (snapshots, transactions,
//! pinned scans) plus the visible timestamp, taken together under the
//! registry lock. A reader at `r` sees the newest version with `ts <= r`.
//! Versions of one key arrive newest first; a version at `ts` whose next
//! newer version is at `newer` is the one some reader sees iff a read point
//! lies in `[ts, newer)`. Versions newer than every read point are kept
//! (future readers see them). Everything else is invisible to every reader
//! now and later (new readers start at or above the visible timestamp), so
//! it is dropped.
//!
//! A kept tombstone with no read point below it hides nothing anyone can
//! see: it may be dropped too, but only where no older version of the key
//! can exist outside the compaction (no deeper table covers the key), or
//! that older version would come back to life. The caller checks that.

use crate::key::{Timestamp, ValueKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Keep,
    Drop,
    /// A tombstone that may be dropped if nothing below the output level
    /// covers its key.
    DropIfBottom,
}

pub(crate) struct Retention<'a> {
    /// Sorted ascending, no duplicates.
    points: &'a [Timestamp],
    key: Vec<u8>,
    /// Timestamp of the previous (newer) version of `key`.
    newer: Option<Timestamp>,
}

impl<'a> Retention<'a> {
    pub fn new(points: &'a [Timestamp]) -> Self {
        Retention {
            points,
            key: Vec::new(),
            newer: None,
        }
    }

    /// Decides for the next version in internal order.
    #[cfg(test)]
    pub fn decide(&mut self, key: &[u8], ts: Timestamp, kind: ValueKind) -> Decision {
        self.decide_covered(key, ts, kind, None)
    }

    /// `decide` for a version that a range tombstone at `covered_at`
    /// (the oldest one over the key newer than `ts`) deletes: readers at or
    /// above `covered_at` no longer see it, exactly as if the key had a
    /// newer version there.
    pub fn decide_covered(
        &mut self,
        key: &[u8],
        ts: Timestamp,
        kind: ValueKind,
        covered_at: Option<Timestamp>,
    ) -> Decision {
        let newer = if self.newer.is_some() && self.key == key {
            self.newer
        } else {
            self.key.clear();
            self.key.extend_from_slice(key);
            None
        };
        let newer = match (newer, covered_at) {
            (Some(n), Some(c)) => Some(n.min(c)),
            (n, c) => n.or(c),
        };
        self.newer = Some(ts);
        let idx = self.points.partition_point(|&r| r < ts);
        let Some(&reader) = self.points.get(idx) else {
            return Decision::Keep; // newer than every read point
        };
        if newer.is_some_and(|n| reader >= n) {
            return Decision::Drop; // no read point in [ts, newer)
        }
        if kind == ValueKind::Delete && idx == 0 {
            return Decision::DropIfBottom;
        }
        Decision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Decision::*;
    use ValueKind::{Delete, Put};

    fn run(points: &[Timestamp], versions: &[(&str, Timestamp, ValueKind)]) -> Vec<Decision> {
        let mut r = Retention::new(points);
        versions
            .iter()
            .map(|&(k, ts, kind)| r.decide(k.as_bytes(), ts, kind))
            .collect()
    }

    #[test]
    fn keeps_newest_per_stripe() {
        // Readers at 5 and 9 (visible); versions 10, 8, 7, 4, 2.
        let d = run(
            &[5, 9],
            &[
                ("a", 10, Put),
                ("a", 8, Put),
                ("a", 7, Put),
                ("a", 4, Put),
                ("a", 2, Put),
            ],
        );
        assert_eq!(d, vec![Keep, Keep, Drop, Keep, Drop]);
    }

    #[test]
    fn a_new_key_starts_fresh() {
        let d = run(&[9], &[("a", 3, Put), ("a", 2, Put), ("b", 1, Put)]);
        assert_eq!(d, vec![Keep, Drop, Keep]);
    }

    #[test]
    fn tombstones_droppable_only_without_older_readers() {
        assert_eq!(
            run(&[9], &[("a", 5, Delete), ("a", 3, Put)]),
            vec![DropIfBottom, Drop]
        );
        // A reader at 4 still sees the put at 3 under the tombstone at 5.
        assert_eq!(
            run(&[4, 9], &[("a", 5, Delete), ("a", 3, Put)]),
            vec![Keep, Keep]
        );
        // Newer than every read point: kept as is.
        assert_eq!(run(&[4], &[("a", 5, Delete)]), vec![Keep]);
    }

    /// With a range tombstone at `t` over the key: every read point sees
    /// the same before and after dropping, where a reader at `p >= t` sees
    /// nothing older than `t`.
    #[test]
    fn range_tombstones_match_the_definition() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..3000 {
            let mut ts: Vec<Timestamp> = (0..1 + next(6)).map(|_| 1 + next(20)).collect();
            ts.sort_unstable_by(|a, b| b.cmp(a));
            ts.dedup();
            let tomb = 1 + next(22);
            let versions: Vec<(Timestamp, ValueKind)> = ts
                .iter()
                .map(|&t| (t, if next(3) == 0 { Delete } else { Put }))
                .collect();
            let mut points: Vec<Timestamp> = (0..next(4)).map(|_| 1 + next(22)).collect();
            points.push(ts[0].max(tomb) + next(3));
            points.sort_unstable();
            points.dedup();
            let mut r = Retention::new(&points);
            let kept: Vec<(Timestamp, ValueKind)> = versions
                .iter()
                .filter(|&&(t, k)| {
                    let cover = (tomb > t).then_some(tomb);
                    r.decide_covered(b"k", t, k, cover) == Keep
                })
                .copied()
                .collect();
            let read = |set: &[(Timestamp, ValueKind)], at: Timestamp| match set
                .iter()
                .find(|(t, _)| *t <= at)
            {
                Some((t, Put)) if !(tomb <= at && *t < tomb) => Some(*t),
                _ => None,
            };
            for &p in &points {
                assert_eq!(
                    read(&versions, p),
                    read(&kept, p),
                    "{versions:?} tomb {tomb} {points:?}"
                );
            }
        }
    }

    /// Against the definition, by brute force: after dropping, every read
    /// point (and any timestamp above the newest) sees exactly what it saw
    /// before, and nothing kept is invisible to all of them.
    #[test]
    fn matches_the_definition_on_random_histories() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2000 {
            let mut ts: Vec<Timestamp> = (0..1 + next(6)).map(|_| 1 + next(20)).collect();
            ts.sort_unstable_by(|a, b| b.cmp(a));
            ts.dedup();
            let versions: Vec<(Timestamp, ValueKind)> = ts
                .iter()
                .map(|&t| (t, if next(3) == 0 { Delete } else { Put }))
                .collect();
            let mut points: Vec<Timestamp> = (0..next(4)).map(|_| 1 + next(20)).collect();
            points.push(ts[0] + next(3)); // the visible timestamp
            points.sort_unstable();
            points.dedup();
            let mut r = Retention::new(&points);
            let decisions: Vec<Decision> = versions
                .iter()
                .map(|&(t, k)| r.decide(b"k", t, k))
                .collect();
            let kept: Vec<(Timestamp, ValueKind)> = versions
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| **d != Drop)
                .map(|(v, _)| *v)
                .collect();
            // Tombstones at the bottom (nothing older outside) may go too.
            let bottom: Vec<(Timestamp, ValueKind)> = versions
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| **d == Keep)
                .map(|(v, _)| *v)
                .collect();
            // What a reader at `at` sees: the timestamp of a live put.
            let read = |set: &[(Timestamp, ValueKind)], at: Timestamp| match set
                .iter()
                .find(|(t, _)| *t <= at)
            {
                Some((t, Put)) => Some(*t),
                _ => None,
            };
            for &p in &points {
                assert_eq!(
                    read(&versions, p),
                    read(&kept, p),
                    "{versions:?} {points:?}"
                );
                assert_eq!(
                    read(&versions, p),
                    read(&bottom, p),
                    "{versions:?} {points:?}"
                );
            }
            for (v, d) in versions.iter().zip(&decisions) {
                if *d != Drop {
                    let seen = points
                        .iter()
                        .any(|&p| versions.iter().find(|(t, _)| *t <= p).map(|x| x.0) == Some(v.0));
                    assert!(
                        seen,
                        "kept {v:?} that no read point sees: {versions:?} {points:?}"
                    );
                }
            }
        }
    }
}
