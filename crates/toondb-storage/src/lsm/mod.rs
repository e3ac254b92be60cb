//! The current shape of the LSM tree: which table files are live and at
//! which level ([`Levels`]), and the handle that owns one table file's
//! lifetime ([`TableFile`]).

mod levels;
mod open_listed;
mod table_file;

pub(crate) use levels::{Levels, NUM_LEVELS};
pub(crate) use open_listed::{open_listed_during, TablesOpening};
pub(crate) use table_file::{TableFile, TableOpener};

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;
    use std::sync::Arc;

    use super::TableFile;
    use crate::io::OsFileSystem;
    use crate::key::ValueKind;
    use crate::sstable::{table_file_name, TableBuilder};
    use crate::version::TableMeta;

    /// A table file in `dir` holding `keys` (one put each, at `ts`).
    pub fn table(dir: &Path, number: u64, level: u32, keys: &[&str], ts: u64) -> Arc<TableFile> {
        let fs = OsFileSystem::shared();
        let path = dir.join(table_file_name(number));
        let mut b = TableBuilder::new(fs.create(&path).unwrap(), 256);
        for k in keys {
            b.add(k.as_bytes(), ts, ValueKind::Put, k.as_bytes())
                .unwrap();
        }
        let s = b.finish().unwrap();
        let opener = super::TableOpener::new(&crate::Options {
            fs: fs.clone(),
            ..crate::Options::default()
        });
        let table = opener.open(number, &path).unwrap();
        let meta = TableMeta::from_summary(number, level, s);
        TableFile::new(&opener, table, meta, path)
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Bound;

    use super::testutil::table;
    use super::*;
    use crate::compaction::{manual_output_level, pick_manual, Compaction, Policy};
    use crate::error::ErrorKind;
    use crate::merge::{Cursor, LevelCursor, MergeIter};

    /// With `max_open_files` 2, opening a third table closes the least
    /// recently used one; a closed table reopens on its next read, and a
    /// reader's `Arc` keeps a closed table usable.
    #[test]
    fn the_table_cache_closes_the_least_recently_used_table() {
        use crate::sstable::{table_file_name, TableBuilder};
        use crate::version::TableMeta;
        let dir = tempfile::tempdir().unwrap();
        let opener = TableOpener::new(&crate::Options {
            max_open_files: 2,
            ..crate::Options::default()
        });
        let files: Vec<_> = (1..=3u64)
            .map(|number| {
                let path = dir.path().join(table_file_name(number));
                let mut b = TableBuilder::new(
                    crate::io::OsFileSystem::shared().create(&path).unwrap(),
                    256,
                );
                let k = format!("k{number}");
                b.add(k.as_bytes(), 1, crate::key::ValueKind::Put, b"v")
                    .unwrap();
                let s = b.finish().unwrap();
                let table = opener.open(number, &path).unwrap();
                TableFile::new(&opener, table, TableMeta::from_summary(number, 1, s), path)
            })
            .collect();
        let open = || files.iter().map(|f| f.is_open()).collect::<Vec<_>>();
        assert_eq!(
            open(),
            [false, true, true],
            "the first was closed by the third"
        );
        let held = files[2].table().unwrap(); // 3 is now the most recent
        files[0].table().unwrap(); // reopens 1, closes 2 (the least recent)
        assert_eq!(open(), [true, false, true]);
        files[1].table().unwrap(); // reopens 2, closes 3 (older than 1)
        assert_eq!(open(), [true, true, false]);
        assert!(
            held.get(b"k3", 1).unwrap().is_some(),
            "a held table stays usable"
        );
        assert_eq!(opener.table_cache().open_count(), Some(2));
        assert_eq!(opener.table_cache().misses(), 2);
        drop(files);
        assert_eq!(opener.table_cache().open_count(), Some(0));
    }

    /// A level's search by hints finds the same table as a plain binary
    /// search, for tables whose keys share a long prefix and tie on their
    /// hints (they differ only past the hint's 8 bytes), for probes inside,
    /// between, before and after the tables, and probes without the prefix.
    #[test]
    fn level_search_by_hints_matches_a_plain_search() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = |i: usize| format!("shared/prefix/01234567{i:04}");
        let mut tables = Vec::new();
        for t in 0..24usize {
            let (lo, hi) = (key(t * 10), key(t * 10 + 5));
            tables.push((1, table(d, t as u64 + 1, 1, &[lo.as_str(), hi.as_str()], 1)));
        }
        // A second level whose keys differ inside the hint.
        for t in 0..9usize {
            let (lo, hi) = (format!("shared/p{t}a"), format!("shared/p{t}m"));
            tables.push((
                2,
                table(d, t as u64 + 100, 2, &[lo.as_str(), hi.as_str()], 1),
            ));
        }
        let levels = Levels::build(tables).unwrap();
        let plain = |n: usize, k: &[u8]| {
            let l = levels.level(n);
            let i = l.partition_point(|t| t.largest() < k);
            l.get(i).filter(|t| t.smallest() <= k).map(|t| t.number())
        };
        let mut probes: Vec<Vec<u8>> = (0..260).map(|i| key(i).into_bytes()).collect();
        probes.extend((0..10).map(|t| format!("shared/p{t}").into_bytes()));
        probes.extend((0..10).map(|t| format!("shared/p{t}c").into_bytes()));
        probes.extend((0..10).map(|t| format!("shared/p{t}z").into_bytes()));
        for k in [
            "",
            "a",
            "shared",
            "shared/",
            "shared/prefix",
            "zzz",
            "shared/prefix/01234567",
        ] {
            probes.push(k.as_bytes().to_vec());
        }
        for k in &probes {
            let want: Vec<u64> = [plain(1, k), plain(2, k)].into_iter().flatten().collect();
            let got: Vec<u64> = levels.candidates(k).map(|t| t.number()).collect();
            assert_eq!(got, want, "probe {:?}", String::from_utf8_lossy(k));
            assert_eq!(levels.covered_below(0, k), !want.is_empty());
        }
        // Still right after a change rebuilds the level.
        let next = levels.with_changes(&[3, 4, 101], &[]);
        for k in &probes {
            let l = next.level(1);
            let i = l.partition_point(|t| t.largest() < k.as_slice());
            let want = l
                .get(i)
                .filter(|t| t.smallest() <= k.as_slice())
                .map(|t| t.number());
            let got = next.candidates(k).map(|t| t.number()).find(|&n| n < 100);
            assert_eq!(got, want);
        }
    }

    /// The vain-probe charge: counted up to the budget (level 0 bytes / 64,
    /// at least 4096), due from there; shared with `Levels` built from this
    /// one with the same level 0, zero again where level 0 changed; never
    /// due with level 0 empty.
    #[test]
    fn level_0_read_charge_is_per_levels_and_stops_at_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let levels = Levels::build(vec![
            (0, table(d, 10, 0, &["b", "m"], 9)),
            (1, table(d, 3, 1, &["k", "z"], 2)),
        ])
        .unwrap();
        let budget =
            (levels.level_bytes(0) / levels::L0_BYTES_PER_PROBE).max(levels::L0_MIN_PROBES);
        assert!(!levels.l0_due_by_reads());
        levels.charge_l0_probes(0);
        assert_eq!(levels.l0_vain_probes(), 0);
        levels.charge_l0_probes(budget - 1);
        assert!(!levels.l0_due_by_reads());
        levels.charge_l0_probes(1);
        assert!(levels.l0_due_by_reads());
        levels.charge_l0_probes(5);
        assert_eq!(levels.l0_vain_probes(), budget, "no counting once due");
        // Level 0 unchanged (a seal's or a checkpoint's clone, a compaction
        // of deeper levels): the same count.
        assert_eq!(levels.clone().l0_vain_probes(), budget);
        let deeper = levels.with_changes(&[3], &[]);
        assert!(deeper.l0_due_by_reads());
        deeper.charge_l0_probes(1);
        assert_eq!(levels.l0_vain_probes(), budget, "shared, and still full");
        // Level 0 changed: from zero.
        let flushed = levels.with_flushed(table(d, 12, 0, &["c", "d"], 11));
        assert_eq!(flushed.l0_vain_probes(), 0);
        assert!(!flushed.l0_due_by_reads());
        flushed.charge_l0_probes(7);
        assert_eq!(levels.l0_vain_probes(), budget, "not shared after a change");
        let empty = levels.with_changes(&[10], &[]);
        assert_eq!(empty.l0_vain_probes(), 0);
        empty.charge_l0_probes(u64::MAX / 2);
        assert!(!empty.l0_due_by_reads(), "nothing to compact");
    }

    #[test]
    fn levels_lookup_order_and_invariants() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let levels = Levels::build(vec![
            (0, table(d, 10, 0, &["b", "m"], 9)),
            (0, table(d, 11, 0, &["a", "c"], 10)),
            (1, table(d, 3, 1, &["k", "z"], 2)),
            (1, table(d, 2, 1, &["a", "f"], 1)),
            (2, table(d, 1, 2, &["c", "d"], 1)),
        ])
        .unwrap();
        let l0: Vec<u64> = levels.level(0).iter().map(|t| t.number()).collect();
        assert_eq!(l0, vec![11, 10], "level 0 newest first");
        let l1: Vec<u64> = levels.level(1).iter().map(|t| t.number()).collect();
        assert_eq!(l1, vec![2, 3], "level 1 in key order");
        let probe = |k: &str| -> Vec<u64> {
            levels
                .candidates(k.as_bytes())
                .map(|t| t.number())
                .collect()
        };
        assert_eq!(probe("c"), vec![11, 10, 2, 1]);
        assert_eq!(probe("g"), vec![10]);
        assert_eq!(probe("z"), vec![3]);
        assert!(levels.covered_below(1, b"c"));
        assert!(!levels.covered_below(1, b"e"));
        assert_eq!(levels.deepest_nonempty(), 2);

        let err = Levels::build(vec![
            (1, table(d, 20, 1, &["a", "f"], 1)),
            (1, table(d, 21, 1, &["f", "g"], 1)),
        ])
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        let err = Levels::build(vec![(NUM_LEVELS, table(d, 22, 9, &["a"], 1))]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }

    #[test]
    fn level_cursor_walks_tables_both_ways_and_seeks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let tables = vec![
            table(d, 1, 1, &["a", "b"], 1),
            table(d, 2, 1, &["d", "e"], 1),
            table(d, 3, 1, &["g"], 1),
        ];
        let collect = |start: Bound<&[u8]>, reverse: bool| -> Vec<String> {
            let mut c = Cursor::Level(LevelCursor::new(&tables));
            c.seek(start, reverse).unwrap();
            let mut m = MergeIter::new(vec![c], reverse);
            let mut out = Vec::new();
            while let Some(v) = m.current() {
                out.push(String::from_utf8(v.key.to_vec()).unwrap());
                m.advance().unwrap();
            }
            out
        };
        assert_eq!(collect(Bound::Unbounded, false), ["a", "b", "d", "e", "g"]);
        assert_eq!(collect(Bound::Unbounded, true), ["g", "e", "d", "b", "a"]);
        assert_eq!(collect(Bound::Included(b"c"), false), ["d", "e", "g"]);
        assert_eq!(collect(Bound::Excluded(b"b"), false), ["d", "e", "g"]);
        assert_eq!(collect(Bound::Excluded(b"d"), true), ["b", "a"]);
        assert_eq!(collect(Bound::Included(b"f"), true), ["e", "d", "b", "a"]);
        assert!(collect(Bound::Excluded(b"g"), false).is_empty());
    }

    #[test]
    fn picks_by_score_with_trivial_moves_and_manual_spans() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let policy = Policy {
            l0_trigger: 2,
            base_bytes: 1 << 30,
            ratio: 10,
            dynamic: false,
        };
        let levels = Levels::build(vec![
            (0, table(d, 5, 0, &["a", "c"], 5)),
            (1, table(d, 2, 1, &["x", "y"], 1)),
        ])
        .unwrap();
        assert!(policy.pick(&levels, &[]).is_none(), "one level-0 table");
        assert_eq!(policy.pending_bytes(&levels), 0);

        let levels = levels.with_flushed(table(d, 6, 0, &["b", "d"], 6));
        let c = policy.pick(&levels, &[]).unwrap();
        assert_eq!((c.output_level, c.input_numbers()), (1, vec![6, 5]));
        assert!(!c.is_trivial_move());
        assert!(policy.pending_bytes(&levels) > 0);

        // A lone level-1 table over its target with nothing below: a move.
        let tiny = Policy {
            base_bytes: 1,
            ..policy
        };
        let levels = Levels::build(vec![(1, table(d, 7, 1, &["a"], 1))]).unwrap();
        let c = tiny.pick(&levels, &[]).unwrap();
        assert!(c.is_trivial_move());
        assert_eq!(c.output_level, 2);

        // Manual: the span grows to cover every overlapping table.
        let levels = Levels::build(vec![
            (1, table(d, 8, 1, &["c", "h"], 1)),
            (1, table(d, 9, 1, &["p", "q"], 1)),
            (2, table(d, 10, 2, &["a", "d"], 1)),
            (2, table(d, 11, 2, &["g", "k"], 1)),
            (2, table(d, 12, 2, &["r", "s"], 1)),
        ])
        .unwrap();
        let c = pick_manual(&levels, Some(b"e"), Some(b"f")).unwrap();
        let mut n = c.input_numbers();
        n.sort_unstable();
        assert_eq!((c.output_level, n), (2, vec![8, 10, 11]));
        assert!(pick_manual(&levels, Some(b"t"), None).is_none());

        // The merge runs at the bottom level in use; its outputs go to the
        // first level whose target holds them with what stays there
        // (targets here: level n holds 100 * 10^(n-1) bytes).
        let small = Policy {
            base_bytes: 100,
            ..policy
        };
        let all = pick_manual(&levels, None, None).unwrap();
        assert_eq!(all.output_level, 2, "the merge runs at the bottom level");
        let place = |c: &Compaction, bytes: u64| manual_output_level(&small, &levels, c, bytes);
        assert_eq!(place(&all, 100 * 10), 2, "fits level 2");
        assert_eq!(place(&all, 100 * 10 + 1), 3);
        assert_eq!(place(&all, 100 * 10_000), 5);
        assert_eq!(place(&all, u64::MAX), NUM_LEVELS - 1);
        // The bottom level's tables outside the range stay and count: a
        // range whose outputs alone fit still goes deeper when they do not.
        let part = pick_manual(&levels, Some(b"e"), Some(b"f")).unwrap();
        let staying = levels.level(2)[2].file_size();
        assert!(staying > 0 && staying < 1000);
        assert_eq!(place(&part, 1000 - staying), 2);
        assert_eq!(place(&part, 1000 - staying + 1), 3);
        // With room in the bottom level, it stays there.
        assert_eq!(
            manual_output_level(&policy, &levels, &all, all.input_bytes()),
            2
        );
    }

    /// Dynamic level targets: the bottom first, the base (where level 0
    /// goes) moving up as the tree grows, and whatever lies above the base
    /// moving down.
    #[test]
    fn dynamic_targets_start_at_the_bottom() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bottom = NUM_LEVELS - 1;
        let policy = Policy {
            l0_trigger: 2,
            base_bytes: 1 << 30,
            ratio: 10,
            dynamic: true,
        };
        // Small tree: level 0 compacts straight into the bottom, and no
        // level above it may hold anything.
        let l0 = Levels::build(vec![
            (0, table(d, 1, 0, &["a", "c"], 1)),
            (0, table(d, 2, 0, &["b", "d"], 2)),
        ])
        .unwrap();
        let t = policy.targets(&l0);
        assert_eq!(t.base, bottom);
        assert!(t.bytes[1..bottom].iter().all(|&b| b == 0));
        assert_eq!(t.bytes[bottom], u64::MAX);
        let c = policy.pick(&l0, &[]).unwrap();
        assert_eq!((c.output_level, c.input_numbers()), (bottom, vec![2, 1]));

        // A bottom larger than base_bytes: the base moves up one level per
        // ratio, its target the bottom's bytes divided down.
        let big = table(d, 3, bottom as u32, &["a", "b", "c", "d", "e"], 1);
        let s = big.file_size();
        let levels = Levels::build(vec![(bottom, big.clone())]).unwrap();
        let grown = Policy {
            base_bytes: s / 10,
            ratio: 4,
            ..policy
        };
        let t = grown.targets(&levels);
        let (base, base_target) = if s / 4 <= s / 10 {
            (bottom - 1, s / 4)
        } else {
            (bottom - 2, s / 16)
        };
        assert_eq!((t.base, t.bytes[base]), (base, base_target.max(1)));
        assert!(t.bytes[1..base].iter().all(|&b| b == 0));
        for n in base..bottom - 1 {
            assert_eq!(t.bytes[n + 1], t.bytes[n] * 4);
        }
        assert!(
            grown.pick(&levels, &[]).is_none(),
            "the bottom has no target"
        );

        // A table above the base (a tree written under the static policy)
        // moves down, and level 0 stops at it rather than passing it.
        let levels = Levels::build(vec![
            (0, table(d, 4, 0, &["a", "z"], 9)),
            (0, table(d, 5, 0, &["b", "y"], 8)),
            (2, table(d, 6, 2, &["c", "x"], 3)),
            (bottom, big),
        ])
        .unwrap();
        let c = grown.pick(&levels, &[]).unwrap();
        assert_eq!((c.output_level, c.input_numbers()), (3, vec![6]));
        assert!(c.is_trivial_move());
        let c = grown.pick_l0_by_reads(&levels).is_none();
        assert!(c, "level 0 is not due by reads here");
        let l0_only = Policy {
            l0_trigger: 1,
            ..grown
        };
        let levels_l0 = Levels::build(vec![
            (0, table(d, 7, 0, &["a", "z"], 9)),
            (2, table(d, 8, 2, &["c", "x"], 3)),
        ])
        .unwrap();
        // Level 0 (score 1) against level 2 (score = bytes / 0 target):
        // level 2 goes first; level 0 alone would go into level 2.
        assert_eq!(l0_only.pick(&levels_l0, &[]).unwrap().output_level, 3);
        let targets = l0_only.targets(&levels_l0);
        assert_eq!(Policy::l0_output(&levels_l0, &targets), 2);
        assert!(l0_only.pending_bytes(&levels_l0) >= levels_l0.level_bytes(2));
        // Level 0 at more than twice its trigger goes before a level that
        // drains (its score is at most 2), and into that level, not past it.
        let busy_l0 = Levels::build(vec![
            (0, table(d, 9, 0, &["a", "z"], 12)),
            (0, table(d, 10, 0, &["b", "y"], 11)),
            (0, table(d, 11, 0, &["c", "w"], 10)),
            (2, table(d, 12, 2, &["c", "x"], 3)),
            (
                bottom,
                table(d, 13, bottom as u32, &["a", "b", "c", "d", "e"], 1),
            ),
        ])
        .unwrap();
        let c = l0_only.pick(&busy_l0, &[]).unwrap();
        assert_eq!(
            (c.output_level, c.input_numbers()),
            (2, vec![11, 10, 9, 12])
        );
    }
}
