//! [`ManifestState`]: what the manifest describes once all edits are applied.

use std::collections::HashSet;

use super::edit::VersionEdit;
use super::TableMeta;
use crate::error::{Error, Result};
use crate::key::Timestamp;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Live tables in the order they were added (oldest first). Level is kept
    /// for the leveled compaction that comes later.
    pub tables: Vec<TableMeta>,
    /// WAL segments with a number below this hold nothing that is not in tables.
    pub log_number: u64,
    pub next_file_number: u64,
    /// Highest commit timestamp known to be in tables (WAL replay may raise it).
    pub last_ts: Timestamp,
}

impl ManifestState {
    /// Applies `edit`: first its removals, then its additions (appended to
    /// `tables` in the edit's order), then the scalar fields it sets.
    ///
    /// Removing a table that is not live, removing one twice, or adding a
    /// number that is live (and not removed by the same edit) or added twice
    /// is corruption. On error the state is unchanged.
    pub fn apply(&mut self, edit: &VersionEdit) -> Result<()> {
        self.check(edit)?;
        self.apply_checked(edit);
        Ok(())
    }

    /// The checks of [`apply`](Self::apply), without changing anything.
    pub(crate) fn check(&self, edit: &VersionEdit) -> Result<()> {
        if edit.add_tables.is_empty() && edit.remove_tables.is_empty() {
            return Ok(());
        }
        let mut live: HashSet<u64> = self.tables.iter().map(|t| t.number).collect();
        if live.len() != self.tables.len() {
            return Err(Error::corruption(
                "manifest state lists the same table number twice",
            ));
        }
        for &n in &edit.remove_tables {
            if !live.remove(&n) {
                return Err(Error::corruption(format!(
                    "version edit removes table {n}, which is not live{}",
                    if edit.remove_tables.iter().filter(|&&m| m == n).count() > 1 {
                        " (it is removed twice in the edit)"
                    } else {
                        ""
                    }
                )));
            }
        }
        for t in &edit.add_tables {
            if !live.insert(t.number) {
                return Err(Error::corruption(format!(
                    "version edit adds table {}, which is already live",
                    t.number
                )));
            }
        }
        Ok(())
    }

    /// Applies an edit that passed [`check`](Self::check).
    pub(crate) fn apply_checked(&mut self, edit: &VersionEdit) {
        if !edit.remove_tables.is_empty() {
            let removed: HashSet<u64> = edit.remove_tables.iter().copied().collect();
            self.tables.retain(|t| !removed.contains(&t.number));
        }
        self.tables.extend(edit.add_tables.iter().cloned());
        if let Some(n) = edit.log_number {
            self.log_number = n;
        }
        if let Some(n) = edit.next_file_number {
            self.next_file_number = n;
        }
        if let Some(ts) = edit.last_ts {
            self.last_ts = ts;
        }
    }

    /// One edit that rebuilds this state when applied to an empty one.
    pub fn snapshot_edit(&self) -> VersionEdit {
        VersionEdit {
            add_tables: self.tables.clone(),
            remove_tables: Vec::new(),
            log_number: Some(self.log_number),
            next_file_number: Some(self.next_file_number),
            last_ts: Some(self.last_ts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn table(number: u64) -> TableMeta {
        TableMeta {
            number,
            level: 0,
            file_size: 100 + number,
            entries: number,
            smallest: format!("k{number}").into_bytes(),
            largest: format!("k{number}z").into_bytes(),
            min_ts: number,
            max_ts: number + 1,
        }
    }

    #[test]
    fn state_apply_adds_removes_and_sets() {
        let mut s = ManifestState::default();
        s.apply(&VersionEdit {
            add_tables: vec![table(3), table(1)],
            log_number: Some(2),
            next_file_number: Some(4),
            last_ts: Some(10),
            ..Default::default()
        })
        .unwrap();
        s.apply(&VersionEdit {
            add_tables: vec![table(5)],
            remove_tables: vec![3],
            next_file_number: Some(6),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.tables, vec![table(1), table(5)]);
        assert_eq!((s.log_number, s.next_file_number, s.last_ts), (2, 6, 10));

        // Remove and re-add in one edit (a move to another level).
        let moved = TableMeta {
            level: 1,
            ..table(1)
        };
        s.apply(&VersionEdit {
            add_tables: vec![moved.clone()],
            remove_tables: vec![1],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.tables, vec![table(5), moved]);
    }

    #[test]
    fn state_apply_rejects_unknown_removal_and_duplicates() {
        let mut s = ManifestState::default();
        s.apply(&VersionEdit {
            add_tables: vec![table(1), table(2)],
            ..Default::default()
        })
        .unwrap();
        let before = s.clone();
        let bad = [
            VersionEdit {
                remove_tables: vec![9],
                ..Default::default()
            },
            VersionEdit {
                remove_tables: vec![1, 1],
                ..Default::default()
            },
            VersionEdit {
                add_tables: vec![table(2)],
                ..Default::default()
            },
            VersionEdit {
                add_tables: vec![table(3), table(3)],
                ..Default::default()
            },
            // Valid parts before the bad one must not be applied either.
            VersionEdit {
                add_tables: vec![table(4)],
                remove_tables: vec![1, 7],
                log_number: Some(99),
                ..Default::default()
            },
        ];
        for edit in &bad {
            let err = s.apply(edit).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "{edit:?}");
            assert_eq!(s, before, "state changed by rejected {edit:?}");
        }
    }

    #[test]
    fn state_snapshot_edit_rebuilds_state() {
        let s = ManifestState {
            tables: vec![table(4), table(2)],
            log_number: 3,
            next_file_number: 8,
            last_ts: 77,
        };
        let mut rebuilt = ManifestState::default();
        rebuilt.apply(&s.snapshot_edit()).unwrap();
        assert_eq!(rebuilt, s);
    }
}
