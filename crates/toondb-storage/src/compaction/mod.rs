//! Leveled compaction: which tables to merge ([`pick`]), which versions a
//! merge may drop ([`retention`]), and the merge itself ([`job`]), whose
//! outputs are cut at the size target and at key partitions
//! ([`partition`]). The
//! maintenance thread schedules and installs; see docs/compaction.md.

pub(crate) mod job;
pub(crate) mod partition;
pub(crate) mod pick;
pub(crate) mod retention;

pub(crate) use job::run_job;
pub(crate) use pick::{manual_output_level, pick_manual, Compaction, Policy};
