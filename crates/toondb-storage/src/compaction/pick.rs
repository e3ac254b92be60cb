//! Choosing work: scores per level, the automatic pick, and the manual
//! (compact everything or a range to the bottom) pick.

use std::sync::Arc;

use crate::lsm::{Levels, TableFile, NUM_LEVELS};
use crate::options::Options;

/// One unit of compaction work.
#[derive(Debug, Clone)]
pub(crate) struct Compaction {
    /// Input tables by level (level 0 newest first, others in key order).
    pub inputs: Vec<(usize, Vec<Arc<TableFile>>)>,
    pub output_level: usize,
    /// Picked by `Database::compact`/`compact_range` (never a trivial move:
    /// the caller wants garbage dropped, not tables relabelled).
    pub manual: bool,
}

impl Compaction {
    pub fn input_tables(&self) -> impl Iterator<Item = &Arc<TableFile>> {
        self.inputs.iter().flat_map(|(_, t)| t.iter())
    }

    pub fn input_numbers(&self) -> Vec<u64> {
        self.input_tables().map(|t| t.number()).collect()
    }

    pub fn input_bytes(&self) -> u64 {
        self.input_tables().map(|t| t.file_size()).sum()
    }

    /// One table and nothing in the output level overlapping it: the
    /// table can change level by a manifest edit alone. Not for a table
    /// with range tombstones: rewriting it is what lets compaction drop
    /// them (and the versions they hide) once nothing older lies below.
    pub fn is_trivial_move(&self) -> bool {
        !self.manual
            && self.input_tables().count() == 1
            && self.input_tables().all(|t| t.range_dels().is_empty())
    }
}

/// The most a level above the base scores ([`Policy::score`]).
pub(crate) const DRAIN_SCORE_MAX: f64 = 2.0;

/// The thresholds of docs/compaction.md, from `Options`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub l0_trigger: usize,
    pub base_bytes: u64,
    pub ratio: u64,
    /// Targets sized from the bottom up (`Options::dynamic_level_bytes`).
    pub dynamic: bool,
}

/// Where level 0 compacts to and what each level 1.. may hold, for one
/// state of the tree ([`Policy::targets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Targets {
    /// The level level 0 compacts into when nothing lies above it.
    pub base: usize,
    /// Per level: its target in bytes; 0 for a level above `base` (to be
    /// emptied downwards), `u64::MAX` for the bottom (no target).
    pub bytes: [u64; NUM_LEVELS],
}

impl Policy {
    pub fn new(options: &Options) -> Policy {
        Policy {
            l0_trigger: options.l0_compaction_trigger.max(1),
            base_bytes: options.level_base_bytes.max(1),
            ratio: options.level_size_ratio.max(2),
            dynamic: options.dynamic_level_bytes,
        }
    }

    /// Target size of level `n` >= 1 under the static policy.
    pub fn level_target(&self, n: usize) -> u64 {
        let mut target = self.base_bytes;
        for _ in 1..n {
            target = target.saturating_mul(self.ratio);
        }
        target
    }

    /// The levels' targets for `levels` (docs/compaction.md, "Level
    /// targets"). Static: level n targets `base_bytes × ratio^(n-1)` and
    /// level 0 compacts into level 1. Dynamic: the bottom level (the last)
    /// has no target; each level above it targets a `ratio`-th of the
    /// largest level's bytes per step up, and the base (where level 0
    /// compacts to) is the deepest level whose target is at most
    /// `base_bytes`, or the bottom while the whole tree is that small.
    /// Levels above the base target 0, so whatever they hold (a tree
    /// written under the static policy, or one that shrank) moves down.
    pub fn targets(&self, levels: &Levels) -> Targets {
        let bottom = NUM_LEVELS - 1;
        let mut bytes = [0u64; NUM_LEVELS];
        bytes[bottom] = u64::MAX;
        if !self.dynamic {
            for (n, t) in bytes.iter_mut().enumerate().take(bottom).skip(1) {
                *t = self.level_target(n);
            }
            return Targets { base: 1, bytes };
        }
        let largest = (1..NUM_LEVELS)
            .map(|n| levels.level_bytes(n))
            .max()
            .unwrap_or(0);
        let (mut base, mut target) = (bottom, largest);
        while base > 1 && target > self.base_bytes {
            base -= 1;
            target /= self.ratio;
        }
        let mut t = target.max(1);
        for slot in bytes.iter_mut().take(bottom).skip(base) {
            *slot = t;
            t = t.saturating_mul(self.ratio);
        }
        Targets { base, bytes }
    }

    /// How urgently level `n` needs compaction; >= 1 means it does. The
    /// bottom level is never compacted automatically (it has no target).
    /// A level above the base (target 0) that holds tables scores between
    /// 1 and [`DRAIN_SCORE_MAX`]: always due, but level 0 at twice its
    /// trigger goes first, so a large tree written under the static
    /// targets drains down without holding writers at `l0_stop_writes`
    /// until it is done.
    pub fn score(&self, levels: &Levels, targets: &Targets, n: usize) -> f64 {
        if n == 0 {
            levels.level(0).len() as f64 / self.l0_trigger as f64
        } else if n + 1 < NUM_LEVELS {
            let bytes = levels.level_bytes(n);
            match targets.bytes[n] {
                0 if bytes > 0 => {
                    1.0 + (bytes as f64 / self.base_bytes as f64).min(DRAIN_SCORE_MAX - 1.0)
                }
                target => bytes as f64 / target.max(1) as f64,
            }
        } else {
            0.0
        }
    }

    /// Estimated bytes compaction must still rewrite to bring every level
    /// under its threshold: all of level 0 once it reaches the trigger,
    /// plus every level's excess over its target.
    pub fn pending_bytes(&self, levels: &Levels) -> u64 {
        let targets = self.targets(levels);
        let mut pending = 0u64;
        if levels.level(0).len() >= self.l0_trigger {
            pending = pending.saturating_add(levels.level_bytes(0));
        }
        for n in 1..NUM_LEVELS - 1 {
            pending =
                pending.saturating_add(levels.level_bytes(n).saturating_sub(targets.bytes[n]));
        }
        pending
    }

    /// Where level 0 compacts to: the base, or the first level above it
    /// that holds tables (their versions are older than level 0's, so
    /// level 0 must not pass them).
    pub(crate) fn l0_output(levels: &Levels, targets: &Targets) -> usize {
        (1..targets.base)
            .find(|&n| !levels.level(n).is_empty())
            .unwrap_or(targets.base)
    }

    /// The level with the highest score >= 1 and the tables to merge from
    /// it. `pointers[n]` is the largest key of the last table compacted out
    /// of level n, so successive compactions of a level walk its key space
    /// round-robin.
    pub fn pick(&self, levels: &Levels, pointers: &[Vec<u8>]) -> Option<Compaction> {
        let targets = self.targets(levels);
        let (level, score) = (0..NUM_LEVELS - 1)
            .map(|n| (n, self.score(levels, &targets, n)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if score < 1.0 {
            return None;
        }
        Self::compaction_of(levels, &targets, level, pointers)
    }

    /// All of level 0 into level 1 when point reads have paid for it
    /// (`Levels::l0_due_by_reads`), though it is below its trigger: the
    /// tables a bulk load or a write burst leaves there would otherwise be
    /// probed by every read for as long as no more writes come (docs/
    /// compaction.md, "Read-triggered compaction of level 0").
    pub fn pick_l0_by_reads(&self, levels: &Levels) -> Option<Compaction> {
        if levels.level(0).is_empty() || !levels.l0_due_by_reads() {
            return None;
        }
        Self::compaction_of(levels, &self.targets(levels), 0, &[])
    }

    fn compaction_of(
        levels: &Levels,
        targets: &Targets,
        level: usize,
        pointers: &[Vec<u8>],
    ) -> Option<Compaction> {
        let output_level = if level == 0 {
            Self::l0_output(levels, targets)
        } else {
            level + 1
        };
        let picked: Vec<Arc<TableFile>> = if level == 0 {
            levels.level(0).to_vec()
        } else {
            let tables = levels.level(level);
            let after = pointers.get(level).map_or(&[][..], Vec::as_slice);
            let next = tables
                .iter()
                .find(|t| t.smallest() > after)
                .or_else(|| tables.first())?;
            vec![next.clone()]
        };
        let lo = picked.iter().map(|t| t.smallest()).min()?.to_vec();
        let hi = picked.iter().map(|t| t.largest()).max()?.to_vec();
        let below = levels.overlapping(output_level, Some(&lo), Some(&hi));
        let mut inputs = vec![(level, picked)];
        if !below.is_empty() {
            inputs.push((output_level, below));
        }
        Some(Compaction {
            inputs,
            output_level,
            manual: false,
        })
    }
}

/// Everything in `[lo, hi]` (`None` = unbounded), from every level, merged
/// into one level: the bottom level in use (at least level 1), or a deeper
/// one when the output would push that level over its target
/// ([`manual_output_level`], once the merge is done). All of level 0 goes when any of it overlaps
/// (its tables overlap each other in time order), and the key span grows
/// until no table outside the inputs overlaps it, so no table left in any
/// level holds keys of the outputs.
pub(crate) fn pick_manual(
    levels: &Levels,
    lo: Option<&[u8]>,
    hi: Option<&[u8]>,
) -> Option<Compaction> {
    let mut span: (Option<Vec<u8>>, Option<Vec<u8>>) =
        (lo.map(<[u8]>::to_vec), hi.map(<[u8]>::to_vec));
    let mut chosen: Vec<Vec<Arc<TableFile>>> = vec![Vec::new(); NUM_LEVELS];
    loop {
        let mut grew = false;
        for (n, slot) in chosen.iter_mut().enumerate() {
            let found: Vec<Arc<TableFile>> = if n == 0 {
                let l0 = levels.level(0);
                if l0
                    .iter()
                    .any(|t| t.overlaps(span.0.as_deref(), span.1.as_deref()))
                {
                    l0.to_vec()
                } else {
                    Vec::new()
                }
            } else {
                levels.overlapping(n, span.0.as_deref(), span.1.as_deref())
            };
            if found.len() != slot.len() {
                grew = true;
                *slot = found;
            }
        }
        let tables: Vec<&Arc<TableFile>> = chosen.iter().flatten().collect();
        let new_lo = tables.iter().map(|t| t.smallest()).min();
        let new_hi = tables.iter().map(|t| t.largest()).max();
        if let (Some(l), Some(cur)) = (new_lo, span.0.as_deref()) {
            if l < cur {
                span.0 = Some(l.to_vec());
                grew = true;
            }
        }
        if let (Some(h), Some(cur)) = (new_hi, span.1.as_deref()) {
            if h > cur {
                span.1 = Some(h.to_vec());
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    let inputs: Vec<(usize, Vec<Arc<TableFile>>)> = chosen
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .collect();
    if inputs.is_empty() {
        return None;
    }
    // The bottom level in use for the merge itself (nothing lies below
    // it, so what the merge drops is the same at any level from there
    // down); the level the outputs go to is chosen from their real size
    // when the merge is done ([`manual_output_level`]).
    Some(Compaction {
        inputs,
        output_level: levels.deepest_nonempty().max(1),
        manual: true,
    })
}

/// The level a manual compaction's outputs (`output_bytes` in all) go to:
/// the bottom level in use (at least level 1), or the first deeper level
/// whose target holds what that level would hold afterwards (its tables
/// outside the inputs plus the outputs). Writing to the bottom level alone
/// would leave it over its target after a `compact()` of a large tree, and
/// the automatic compactions would at once rewrite most of it a level
/// down, spreading the keys over two levels that every read probes (1M
/// keys, 145 MB: levels [0, 7, 1] right after `compact()`, then
/// [0, 3, 5]). Chosen from the outputs, not the inputs: garbage the merge
/// dropped must not push live data deeper than it needs (compaction never
/// moves tables up). Going deeper is safe: nothing lies below the bottom
/// level in use, and no table left in a shallower level overlaps the
/// outputs.
pub(crate) fn manual_output_level(
    policy: &Policy,
    levels: &Levels,
    c: &Compaction,
    output_bytes: u64,
) -> usize {
    if policy.dynamic {
        // The bottom has no target: everything compacted goes there, and
        // the targets above it follow from its size.
        return NUM_LEVELS - 1;
    }
    let bottom = levels.deepest_nonempty().max(1);
    let moving: u64 = c
        .inputs
        .iter()
        .filter(|(level, _)| *level == bottom)
        .flat_map(|(_, t)| t.iter())
        .map(|t| t.file_size())
        .sum();
    let mut level = bottom;
    // The bottom level in use keeps its tables outside the range; a deeper
    // one is empty.
    let mut resident = levels.level_bytes(bottom).saturating_sub(moving);
    while level + 1 < NUM_LEVELS
        && resident.saturating_add(output_bytes) > policy.level_target(level)
    {
        level += 1;
        resident = 0;
    }
    level
}
