//! Where a compaction cuts its outputs besides the size target: at the
//! boundaries of key *partitions* (the idea of RocksDB's SST partitioner).
//!
//! A partition function, given by the caller (the columnar module: one
//! partition per column's chunks, see `columnar::output_partition`), names
//! the partition of a key, or `None` for keys that belong to none. Keys of
//! one partition are contiguous in key order, and so are all partitioned
//! keys together. A read of one partition's range then touches only files
//! holding that partition: no index block, data block or boundary block
//! of a neighbour, and no file opened only to find its first key past the
//! range (the level cursor skips such files by their manifest bounds).
//!
//! The rule, at the first key of a new partition (or the first
//! unpartitioned key after a partition):
//!
//! - from unpartitioned keys into a partition: always a new file. Since
//!   the partitioned keys form one run, this adds at most one file per
//!   compaction, and keeps ranges below the run (a table's cells and
//!   catalog) out of the partitions' files, so probing them reads nothing
//!   of the partitions;
//! - leaving partition `P`: a new file if the output holds at least
//!   `min_file` bytes, or if it began inside `P` (the previous output was
//!   cut for size in the middle of `P`: a large partition then ends its
//!   last file with its own last key), or if it holds only `P` and at
//!   least `min_alone` bytes of it (a table's primary-key chunks, a
//!   few tens of KB per million rows, would otherwise share the first
//!   column's file, and a scan of that column would read their index
//!   entries). Otherwise the output goes on (small partitions share files,
//!   so many small tables do not make a file each) but the data block
//!   ends, so the next partition's first block holds none of `P`'s keys.

/// The partition of a key: `Some(id)` for keys that belong together,
/// `None` for keys in no partition.
pub(crate) type PartitionOf = fn(&[u8]) -> Option<&[u8]>;

/// What to do before adding a key to the current output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// Add it to the current data block as usual.
    None,
    /// End the current data block first.
    Block,
    /// End the current output file first.
    File,
}

/// A partition function and the state of the outputs written so far.
pub(crate) struct Partitions {
    of: PartitionOf,
    /// Output size from which any partition boundary cuts the file.
    min_file: u64,
    /// Size from which a partition that has its output to itself keeps it.
    min_alone: u64,
    /// The partition of the last key added (`None`: none, or no key yet).
    last: Option<Vec<u8>>,
    /// Whether a key has been added yet.
    started: bool,
    /// The partition the current output began inside of (it was cut for
    /// size in the middle of it).
    continued: Option<Vec<u8>>,
    /// Whether every key of the current output is in partition `last`.
    sole: bool,
    /// Set by `cut_before`: the next key added begins an output.
    fresh: bool,
}

impl Partitions {
    /// `min_file`, `min_alone`: see the module comment; the compaction
    /// passes a sixteenth and a 1024th of its target file size (1 MiB and
    /// 16 KiB by default).
    pub fn new(of: PartitionOf, min_file: u64, min_alone: u64) -> Partitions {
        Partitions {
            of,
            min_file,
            min_alone,
            last: None,
            started: false,
            continued: None,
            sole: true,
            fresh: true,
        }
    }

    /// What to do before adding the first version of user key `key`, the
    /// current output holding `output_bytes` (`None`: no output open).
    pub fn before(&self, key: &[u8], output_bytes: Option<u64>) -> Cut {
        let Some(bytes) = output_bytes else {
            return Cut::None;
        };
        if !self.started {
            return Cut::None;
        }
        let next = (self.of)(key);
        match (self.last.as_deref(), next) {
            (a, b) if a == b => Cut::None,
            (None, Some(_)) => Cut::File,
            (Some(p), _) => {
                let alone = self.sole && bytes >= self.min_alone;
                if bytes >= self.min_file || self.continued.as_deref() == Some(p) || alone {
                    Cut::File
                } else {
                    Cut::Block
                }
            }
            // (None, None) is the first arm.
            (None, None) => Cut::None,
        }
    }

    /// Records that an output was finished before `key` (for any reason),
    /// so the next one begins with `key`.
    pub fn cut_before(&mut self, key: &[u8]) {
        let next = (self.of)(key);
        self.continued = match (self.last.as_deref(), next) {
            (Some(p), Some(n)) if p == n && self.started => Some(p.to_vec()),
            _ => None,
        };
        self.fresh = true;
    }

    /// Records that `key` was added.
    pub fn added(&mut self, key: &[u8]) {
        let next = (self.of)(key);
        if self.fresh {
            self.sole = true;
        } else if self.last.as_deref() != next {
            self.sole = false;
        }
        self.fresh = false;
        if !self.started || self.last.as_deref() != next {
            self.last = next.map(<[u8]>::to_vec);
        }
        self.started = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys "p<id>..." are in partition `<id>` (one byte); others in none.
    fn by_first_letter(key: &[u8]) -> Option<&[u8]> {
        (key.first() == Some(&b'p')).then(|| key.get(..2)).flatten()
    }

    /// Feeds `keys` (each `(key, bytes)`) through the rule with a size
    /// target, returning the outputs as lists of keys and the block cuts.
    fn outputs(keys: &[(&str, u64)], target: u64, min_file: u64) -> (Vec<Vec<String>>, usize) {
        outputs_with(keys, target, min_file, u64::MAX)
    }

    fn outputs_with(
        keys: &[(&str, u64)],
        target: u64,
        min_file: u64,
        min_alone: u64,
    ) -> (Vec<Vec<String>>, usize) {
        let mut p = Partitions::new(by_first_letter, min_file, min_alone);
        let mut files: Vec<Vec<String>> = Vec::new();
        let mut bytes: Option<u64> = None;
        let mut blocks = 0;
        for (k, n) in keys {
            let key = k.as_bytes();
            let size_cut = bytes.is_some_and(|b| b >= target);
            let cut = p.before(key, bytes);
            if size_cut || cut == Cut::File {
                p.cut_before(key);
                bytes = None;
            } else if cut == Cut::Block {
                blocks += 1;
            }
            if bytes.is_none() {
                files.push(Vec::new());
            }
            if let Some(f) = files.last_mut() {
                f.push(k.to_string());
            }
            *bytes.get_or_insert(0) += n;
            p.added(key);
        }
        (files, blocks)
    }

    #[test]
    fn large_partitions_get_files_of_their_own() {
        // Partition a is 3 keys of 40 bytes, b 2 keys; target 100, min 10.
        let keys = [
            ("c", 1),
            ("pa1", 40),
            ("pa2", 40),
            ("pa3", 40),
            ("pb1", 40),
            ("pb2", 40),
            ("x", 1),
        ];
        let (files, _) = outputs(&keys, 100, 10);
        assert_eq!(
            files,
            vec![
                vec!["c"],
                vec!["pa1", "pa2", "pa3"],
                vec!["pb1", "pb2"],
                vec!["x"]
            ]
        );
    }

    #[test]
    fn a_size_cut_inside_a_partition_ends_its_tail_alone() {
        // Partition a spans two outputs; its small tail is not shared with b.
        let keys = [("pa1", 60), ("pa2", 60), ("pa3", 5), ("pb1", 5), ("pb2", 5)];
        let (files, _) = outputs(&keys, 100, 1000);
        assert_eq!(
            files,
            vec![vec!["pa1", "pa2"], vec!["pa3"], vec!["pb1", "pb2"]]
        );
    }

    #[test]
    fn small_partitions_share_a_file_with_block_cuts() {
        let keys = [
            ("pa1", 5),
            ("pb1", 5),
            ("pc1", 5),
            ("pc2", 5),
            ("pd1", 5),
            ("y", 5),
        ];
        let (files, blocks) = outputs(&keys, 1000, 100);
        assert_eq!(files.len(), 1);
        // a|b, b|c, c|d, d|y
        assert_eq!(blocks, 4);
    }

    #[test]
    fn unpartitioned_keys_before_the_partitions_are_cut_off() {
        let keys = [("a", 5), ("b", 5), ("pa1", 5), ("pb1", 5), ("z", 5)];
        let (files, _) = outputs(&keys, 1000, 100);
        assert_eq!(files, vec![vec!["a", "b"], vec!["pa1", "pb1", "z"]]);
    }

    #[test]
    fn a_partition_alone_in_its_output_keeps_it_from_min_alone() {
        // a (30 bytes) has its output to itself: b starts a new file; b
        // (25) too: c starts a new one; c (5, under min_alone) shares with d.
        let keys = [("pa1", 30), ("pb1", 25), ("pc1", 5), ("pd1", 5)];
        let (files, _) = outputs_with(&keys, 1000, 500, 20);
        assert_eq!(files, vec![vec!["pa1"], vec!["pb1"], vec!["pc1", "pd1"]]);
        // Under min_alone, a shares its output with b.
        let (files, _) = outputs_with(&keys, 1000, 500, 40);
        assert_eq!(files, vec![vec!["pa1", "pb1", "pc1", "pd1"]]);
        // A partition that joined another's output does not cut it later.
        let keys = [("pa1", 5), ("pb1", 50), ("pc1", 5)];
        let (files, _) = outputs_with(&keys, 1000, 500, 20);
        assert_eq!(files, vec![vec!["pa1", "pb1", "pc1"]]);
    }

    /// review s25b: random key sequences through the harness against an
    /// independent reading of the module doc's rule.
    #[test]
    fn review_s25b_rule_matches_an_independent_model() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..3000 {
            // Unpartitioned, then a run of partitions, then unpartitioned.
            let mut keys: Vec<(String, u64)> = Vec::new();
            for i in 0..rnd(3) {
                keys.push((format!("a{i}"), 1 + rnd(30)));
            }
            let parts = rnd(5);
            for p in 0..parts {
                for i in 0..rnd(6) {
                    keys.push((format!("p{}{i:02}", (b'a' + p as u8) as char), 1 + rnd(30)));
                }
            }
            for i in 0..rnd(3) {
                keys.push((format!("z{i}"), 1 + rnd(30)));
            }
            let target = 20 + rnd(80);
            let min_file = 1 + rnd(60);
            let min_alone = 1 + rnd(60);
            let refs: Vec<(&str, u64)> = keys.iter().map(|(k, n)| (k.as_str(), *n)).collect();
            let (files, _) = outputs_with(&refs, target, min_file, min_alone);
            // Model.
            let part = |k: &str| by_first_letter(k.as_bytes()).map(<[u8]>::to_vec);
            let mut want: Vec<Vec<String>> = Vec::new();
            let mut bytes: Option<u64> = None;
            let mut parts_in: Vec<Option<Vec<u8>>> = Vec::new();
            let mut began_inside: Option<Vec<u8>> = None;
            let mut prev: Option<Option<Vec<u8>>> = None;
            for (k, n) in &keys {
                let next = part(k);
                let mut cut = false;
                if let (Some(b), Some(last)) = (bytes, prev.clone()) {
                    if b >= target {
                        cut = true;
                        began_inside = match (&last, &next) {
                            (Some(p), Some(q)) if p == q => Some(p.clone()),
                            _ => None,
                        };
                    } else if last != next {
                        cut = match &last {
                            None => true,
                            Some(p) => {
                                b >= min_file
                                    || began_inside.as_ref() == Some(p)
                                    || (parts_in.iter().all(|x| x.as_ref() == Some(p))
                                        && b >= min_alone)
                            }
                        };
                        if cut {
                            began_inside = None;
                        }
                    }
                }
                if cut || bytes.is_none() {
                    want.push(Vec::new());
                    parts_in.clear();
                    bytes = Some(0);
                }
                want.last_mut().unwrap().push(k.clone());
                parts_in.push(next.clone());
                *bytes.as_mut().unwrap() += n;
                prev = Some(next);
            }
            assert_eq!(
                files, want,
                "keys {keys:?} target {target} min_file {min_file} min_alone {min_alone}"
            );
        }
    }
}
