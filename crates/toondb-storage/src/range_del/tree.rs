//! The *painting* of a sequence of range tombstones: disjoint pieces of the
//! key space, each with the timestamp of the newest tombstone over it, as
//! a persistent treap (path copying: an update allocates new nodes only on
//! the paths it changes and shares every other node with the tree it came
//! from, so older paintings stay intact for readers that hold them).
//!
//! Painting `[start, end)` with a stamp no older than any already painted
//! cuts the tree at `start` and `end`, drops what lies between and puts one
//! piece there: O(log n) expected nodes allocated. The key space between
//! pieces is uncovered.

use std::sync::Arc;

use crate::key::Timestamp;

pub(super) type Link = Option<Arc<Node>>;

#[derive(Debug)]
pub(super) struct Node {
    pub start: Arc<[u8]>,
    pub end: Arc<[u8]>,
    pub stamp: Timestamp,
    /// Treap priority: a parent's is at least its children's, which keeps
    /// the expected depth O(log n) whatever order keys arrive in.
    prio: u64,
    left: Link,
    right: Link,
}

/// Allocates nodes and counts them (the work, and an upper bound on the
/// memory, of building a set; range_del.rs reports it in `Stats`).
pub(super) struct Builder<'a> {
    pub made: &'a mut usize,
}

impl Builder<'_> {
    fn node(
        &mut self,
        start: Arc<[u8]>,
        end: Arc<[u8]>,
        stamp: Timestamp,
        prio: u64,
        left: Link,
        right: Link,
    ) -> Arc<Node> {
        *self.made += 1;
        Arc::new(Node {
            start,
            end,
            stamp,
            prio,
            left,
            right,
        })
    }

    /// `n` with new children; `n` itself when they are the same ones.
    fn with_children(&mut self, n: &Arc<Node>, left: Link, right: Link) -> Arc<Node> {
        if same(&n.left, &left) && same(&n.right, &right) {
            return n.clone();
        }
        let (start, end) = (n.start.clone(), n.end.clone());
        self.node(start, end, n.stamp, n.prio, left, right)
    }

    /// A piece with no children and a fresh priority.
    fn leaf(&mut self, start: Arc<[u8]>, end: Arc<[u8]>, stamp: Timestamp) -> Arc<Node> {
        let prio = splitmix64(*self.made as u64);
        self.node(start, end, stamp, prio, None, None)
    }

    /// The pieces of `t` below `k` and those at or above it; a piece
    /// straddling `k` is cut in two. Each half is a new leaf joined to the
    /// subtree on its side: halves with fresh priorities keep the treap
    /// random (halves sharing their parent's would pile up as chains when
    /// one wide tombstone is cut many times).
    fn split(&mut self, t: &Link, k: &Arc<[u8]>) -> (Link, Link) {
        let Some(n) = t else {
            return (None, None);
        };
        if *n.end <= **k {
            let (below, above) = self.split(&n.right, k);
            (self.with_right(n, below), above)
        } else if **k <= *n.start {
            let (below, above) = self.split(&n.left, k);
            (below, self.with_left(n, above))
        } else {
            let below = self.leaf(n.start.clone(), k.clone(), n.stamp);
            let above = self.leaf(k.clone(), n.end.clone(), n.stamp);
            (
                self.join(n.left.clone(), Some(below)),
                self.join(Some(above), n.right.clone()),
            )
        }
    }

    /// `n` with `right` (every piece above `n`'s) as its right subtree. A
    /// split hands back the fresh halves of a cut piece, whose priority may
    /// outrank `n`: then `n` and its left subtree are joined to `right`,
    /// which puts the half above `n` and keeps the heap order (attaching it
    /// below `n` regardless broke it on ~1 node in 4 under repeated cuts,
    /// and the depth grew to ~5 log2 n).
    fn with_right(&mut self, n: &Arc<Node>, right: Link) -> Link {
        if right.as_ref().is_some_and(|r| r.prio > n.prio) {
            let rest = self.with_children(n, n.left.clone(), None);
            return self.join(Some(rest), right);
        }
        Some(self.with_children(n, n.left.clone(), right))
    }

    /// The mirror of [`Builder::with_right`].
    fn with_left(&mut self, n: &Arc<Node>, left: Link) -> Link {
        if left.as_ref().is_some_and(|l| l.prio > n.prio) {
            let rest = self.with_children(n, None, n.right.clone());
            return self.join(left, Some(rest));
        }
        Some(self.with_children(n, left, n.right.clone()))
    }

    /// Joins two trees, every piece of `a` lying below every piece of `b`.
    fn join(&mut self, a: Link, b: Link) -> Link {
        match (a, b) {
            (None, x) | (x, None) => x,
            (Some(x), Some(y)) => Some(if x.prio >= y.prio {
                let right = self.join(x.right.clone(), Some(y));
                self.with_children(&x, x.left.clone(), right)
            } else {
                let left = self.join(Some(x), y.left.clone());
                self.with_children(&y, left, y.right.clone())
            }),
        }
    }

    /// `root` with `[start, end)` painted `stamp` (`start < end`; `stamp`
    /// at least every stamp in `root`).
    pub fn paint(
        &mut self,
        root: &Link,
        start: &Arc<[u8]>,
        end: &Arc<[u8]>,
        stamp: Timestamp,
    ) -> Link {
        let (below, rest) = self.split(root, start);
        let (_covered, above) = self.split(&rest, end);
        let piece = self.leaf(start.clone(), end.clone(), stamp);
        let joined = self.join(below, Some(piece));
        self.join(joined, above)
    }
}

fn same(a: &Link, b: &Link) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

/// A well-mixed priority from the allocation counter (deterministic: no
/// RNG state).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The piece of `root` holding `key`, if one does.
pub(super) fn find<'a>(root: &'a Link, key: &[u8]) -> Option<&'a Node> {
    let mut at = root.as_deref();
    while let Some(n) = at {
        at = if key < &*n.start {
            n.left.as_deref()
        } else if key >= &*n.end {
            n.right.as_deref()
        } else {
            return Some(n);
        };
    }
    None
}

/// The depth of the deepest piece (tests: the treap stays balanced).
#[cfg(test)]
pub(super) fn depth(root: &Link) -> usize {
    root.as_ref()
        .map_or(0, |n| 1 + depth(&n.left).max(depth(&n.right)))
}

/// Distinct nodes reachable from `roots` (tests: the memory all the
/// paintings of a set hold together).
#[cfg(test)]
pub(super) fn distinct_nodes<'a>(roots: impl IntoIterator<Item = &'a Link>) -> usize {
    let mut seen = std::collections::HashSet::new();
    let mut stack: Vec<&Arc<Node>> = roots.into_iter().flatten().collect();
    while let Some(n) = stack.pop() {
        if seen.insert(Arc::as_ptr(n)) {
            stack.extend(n.left.iter().chain(n.right.iter()));
        }
    }
    seen.len()
}

/// Nodes whose priority is below one of their children's (tests: the
/// treap's heap order, which its expected O(log n) depth rests on).
#[cfg(test)]
pub(super) fn heap_violations(root: &Link) -> usize {
    let Some(n) = root else {
        return 0;
    };
    let bad = [&n.left, &n.right]
        .into_iter()
        .flatten()
        .filter(|c| c.prio > n.prio)
        .count();
    bad + heap_violations(&n.left) + heap_violations(&n.right)
}
