//! [`VersionEdit`]: one change to the manifest state, and its byte encoding.
//!
//! An encoded edit is a sequence of tagged fields, each `tag varint` followed
//! by the field's body (see docs/format-manifest.md):
//!
//! | tag | field              | body                                                    |
//! |-----|--------------------|---------------------------------------------------------|
//! | 1   | add_table          | number, level, file_size, entries (varints), smallest,  |
//! |     |                    | largest (length-prefixed), min_ts, max_ts (varints)     |
//! | 2   | remove_table       | number varint                                           |
//! | 3   | log_number         | varint                                                  |
//! | 4   | next_file_number   | varint                                                  |
//! | 5   | last_ts            | varint                                                  |
//!
//! Tags 64 and above are *extension* fields whose body is always a byte
//! string (`len varint | bytes`), so a reader can step over one it does not
//! know. The low bit says whether it may: an odd extension tag is
//! *skippable* (an unknown one is ignored), an even one is *required* (an
//! unknown one is corruption, because applying the edit without it would
//! give a wrong state). No extension tag is defined yet.
//!
//! Unknown tags below 64, unknown required extension tags, a scalar field
//! given twice, or a body that runs past the end of the payload are
//! corruption. Every edit written before extension tags existed decodes
//! exactly as before.

use crate::coding::{put_varint, Reader};
use crate::error::{Error, Result};
use crate::key::Timestamp;

const TAG_ADD_TABLE: u64 = 1;
const TAG_REMOVE_TABLE: u64 = 2;
const TAG_LOG_NUMBER: u64 = 3;
const TAG_NEXT_FILE_NUMBER: u64 = 4;
const TAG_LAST_TS: u64 = 5;
/// First extension tag: this and every higher tag has a byte-string body.
const FIRST_EXTENSION_TAG: u64 = 64;

/// Whether an extension tag may be ignored by a reader that does not know it.
fn is_skippable(tag: u64) -> bool {
    tag & 1 == 1
}

/// What the manifest knows about one table file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMeta {
    /// File number; the table lives in the file named after it.
    pub number: u64,
    /// LSM level (kept for the leveled compaction that comes later).
    pub level: u32,
    pub file_size: u64,
    /// Number of entries (versions and tombstones) in the table.
    pub entries: u64,
    /// Smallest and largest key in the table, as the table code encodes them.
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    /// Lowest and highest commit timestamp of any entry in the table.
    pub min_ts: Timestamp,
    pub max_ts: Timestamp,
}

impl TableMeta {
    /// The manifest entry of table `number` at `level`, from what its
    /// builder reported.
    pub(crate) fn from_summary(
        number: u64,
        level: u32,
        summary: crate::sstable::TableSummary,
    ) -> TableMeta {
        TableMeta {
            number,
            level,
            file_size: summary.file_size,
            entries: summary.entries,
            smallest: summary.smallest,
            largest: summary.largest,
            min_ts: summary.min_ts,
            max_ts: summary.max_ts,
        }
    }
}

/// One change to [`ManifestState`](super::ManifestState). Within an edit,
/// removals are applied before additions, so an edit may remove a table and
/// add it back (for example at another level).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionEdit {
    pub add_tables: Vec<TableMeta>,
    pub remove_tables: Vec<u64>,
    pub log_number: Option<u64>,
    pub next_file_number: Option<u64>,
    pub last_ts: Option<Timestamp>,
}

impl VersionEdit {
    /// True when the edit changes nothing (it encodes to zero bytes).
    pub fn is_empty(&self) -> bool {
        self.add_tables.is_empty()
            && self.remove_tables.is_empty()
            && self.log_number.is_none()
            && self.next_file_number.is_none()
            && self.last_ts.is_none()
    }

    /// Appends the encoding of the edit to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for t in &self.add_tables {
            put_varint(out, TAG_ADD_TABLE);
            put_varint(out, t.number);
            put_varint(out, u64::from(t.level));
            put_varint(out, t.file_size);
            put_varint(out, t.entries);
            put_varint(out, t.smallest.len() as u64);
            out.extend_from_slice(&t.smallest);
            put_varint(out, t.largest.len() as u64);
            out.extend_from_slice(&t.largest);
            put_varint(out, t.min_ts);
            put_varint(out, t.max_ts);
        }
        for &n in &self.remove_tables {
            put_varint(out, TAG_REMOVE_TABLE);
            put_varint(out, n);
        }
        for (tag, value) in [
            (TAG_LOG_NUMBER, self.log_number),
            (TAG_NEXT_FILE_NUMBER, self.next_file_number),
            (TAG_LAST_TS, self.last_ts),
        ] {
            if let Some(v) = value {
                put_varint(out, tag);
                put_varint(out, v);
            }
        }
    }

    pub fn encoded(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes one whole edit; the payload must contain nothing else.
    pub fn decode(payload: &[u8]) -> Result<VersionEdit> {
        let mut r = Reader::new(payload);
        let mut edit = VersionEdit::default();
        while !r.is_empty() {
            let at = payload.len() - r.remaining();
            let tag = r
                .varint()
                .ok_or_else(|| corrupt(at, "truncated field tag"))?;
            match tag {
                TAG_ADD_TABLE => {
                    let table = decode_table(&mut r)
                        .ok_or_else(|| corrupt(at, "add_table field is truncated or malformed"))?;
                    edit.add_tables.push(table);
                }
                TAG_REMOVE_TABLE => {
                    let n = r
                        .varint()
                        .ok_or_else(|| corrupt(at, "truncated remove_table field"))?;
                    edit.remove_tables.push(n);
                }
                TAG_LOG_NUMBER => set_once(&mut edit.log_number, &mut r, at, "log_number")?,
                TAG_NEXT_FILE_NUMBER => {
                    set_once(&mut edit.next_file_number, &mut r, at, "next_file_number")?;
                }
                TAG_LAST_TS => set_once(&mut edit.last_ts, &mut r, at, "last_ts")?,
                ext if ext >= FIRST_EXTENSION_TAG => {
                    r.length_prefixed().ok_or_else(|| {
                        corrupt(at, format_args!("extension field {ext} is truncated"))
                    })?;
                    if !is_skippable(ext) {
                        return Err(corrupt(
                            at,
                            format_args!(
                                "unknown required extension field {ext} (written by a newer version?)"
                            ),
                        ));
                    }
                    // Dropped, not kept: a rewritten manifest loses it, so
                    // skippable fields may only carry what is safe to lose.
                }
                other => {
                    return Err(corrupt(
                        at,
                        format_args!(
                            "unknown field tag {other} (written by a newer format version?)"
                        ),
                    ))
                }
            }
        }
        Ok(edit)
    }
}

fn decode_table(r: &mut Reader<'_>) -> Option<TableMeta> {
    let number = r.varint()?;
    let level = u32::try_from(r.varint()?).ok()?;
    let file_size = r.varint()?;
    let entries = r.varint()?;
    let smallest = r.length_prefixed()?.to_vec();
    let largest = r.length_prefixed()?.to_vec();
    let min_ts = r.varint()?;
    let max_ts = r.varint()?;
    Some(TableMeta {
        number,
        level,
        file_size,
        entries,
        smallest,
        largest,
        min_ts,
        max_ts,
    })
}

fn set_once(slot: &mut Option<u64>, r: &mut Reader<'_>, at: usize, name: &str) -> Result<()> {
    let v = r
        .varint()
        .ok_or_else(|| corrupt(at, format_args!("truncated {name} field")))?;
    if slot.replace(v).is_some() {
        return Err(corrupt(
            at,
            format_args!("{name} appears twice in one edit"),
        ));
    }
    Ok(())
}

fn corrupt(at: usize, what: impl std::fmt::Display) -> Error {
    Error::corruption(format!("version edit, byte {at}: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coding::put_varint;
    use crate::error::ErrorKind;

    fn table(number: u64) -> TableMeta {
        TableMeta {
            number,
            level: 0,
            file_size: 4096,
            entries: 10,
            smallest: b"a".to_vec(),
            largest: b"z".to_vec(),
            min_ts: 1,
            max_ts: 9,
        }
    }

    #[test]
    fn edit_round_trip() {
        let edits = [
            VersionEdit::default(),
            VersionEdit {
                add_tables: vec![
                    table(7),
                    TableMeta {
                        number: u64::MAX,
                        level: u32::MAX,
                        file_size: u64::MAX,
                        entries: 0,
                        smallest: Vec::new(),
                        largest: Vec::new(),
                        min_ts: 0,
                        max_ts: u64::MAX,
                    },
                    TableMeta {
                        smallest: vec![0; 70_000],
                        largest: vec![0xff; 3],
                        ..table(0)
                    },
                ],
                remove_tables: vec![0, 1, u64::MAX],
                log_number: Some(0),
                next_file_number: Some(u64::MAX),
                last_ts: Some(128),
            },
            VersionEdit {
                last_ts: Some(u64::MAX),
                ..Default::default()
            },
            VersionEdit {
                remove_tables: vec![3],
                ..Default::default()
            },
        ];
        for edit in edits {
            let bytes = edit.encoded();
            assert_eq!(bytes.is_empty(), edit.is_empty());
            assert_eq!(VersionEdit::decode(&bytes).unwrap(), edit);
        }
    }

    #[test]
    fn edit_decode_rejects_truncation_everywhere() {
        let edit = VersionEdit {
            add_tables: vec![table(5)],
            remove_tables: vec![300],
            log_number: Some(4),
            next_file_number: Some(9),
            last_ts: Some(1000),
        };
        let bytes = edit.encoded();
        // Every strict prefix either is a whole number of fields (and then
        // decodes to a different edit) or fails; none may panic.
        for cut in 0..bytes.len() {
            match VersionEdit::decode(&bytes[..cut]) {
                Ok(decoded) => assert_ne!(decoded, edit),
                Err(e) => assert_eq!(e.kind(), ErrorKind::Corruption),
            }
        }
        // Cutting inside the add_table field must fail.
        let err = VersionEdit::decode(&bytes[..6]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("add_table"), "{}", err.message());
    }

    #[test]
    fn documented_example_decodes() {
        // docs/format-manifest.md: "remove table 5, set log_number to 6".
        let edit = VersionEdit {
            remove_tables: vec![5],
            log_number: Some(6),
            ..Default::default()
        };
        assert_eq!(edit.encoded(), [0x02, 0x05, 0x03, 0x06]);
        assert_eq!(
            VersionEdit::decode(&[0x02, 0x05, 0x03, 0x06]).unwrap(),
            edit
        );
    }

    fn extension(tag: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_varint(&mut out, tag);
        put_varint(&mut out, body.len() as u64);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn unknown_skippable_extension_fields_are_skipped() {
        let known = VersionEdit {
            add_tables: vec![table(5)],
            remove_tables: vec![3],
            log_number: Some(4),
            next_file_number: Some(9),
            last_ts: Some(1000),
        };
        // Skippable fields before, between and after the known ones, with
        // empty, small and large bodies and multi-byte tags.
        let mut bytes = extension(65, b"");
        bytes.extend(known.encoded());
        bytes.extend(extension(129, &[0xff; 300]));
        bytes.extend(extension(u64::MAX, b"x"));
        assert_eq!(VersionEdit::decode(&bytes).unwrap(), known);
        // An edit of skippable fields only decodes to "no change".
        assert!(VersionEdit::decode(&extension(67, b"hint"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unknown_required_extension_fields_are_corruption() {
        for tag in [64, 66, 1000, u64::MAX - 1] {
            let mut bytes = VersionEdit {
                log_number: Some(1),
                ..Default::default()
            }
            .encoded();
            bytes.extend(extension(tag, b"body"));
            let err = VersionEdit::decode(&bytes).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption);
            assert!(err.message().contains("required extension field"), "{err}");
        }
        // A skippable field whose body runs past the payload.
        let bytes = extension(65, b"body");
        for cut in 1..bytes.len() {
            let err = VersionEdit::decode(&bytes[..cut]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corruption, "cut {cut}");
        }
        // Tags below 64 other than 1..=5 have no known body length.
        for tag in [0, 6, 63] {
            let bytes = extension(tag, b"");
            let err = VersionEdit::decode(&bytes).unwrap_err();
            assert!(err.message().contains("unknown field tag"), "{err}");
        }
    }

    #[test]
    fn edit_decode_rejects_unknown_tag_and_duplicates() {
        let mut bytes = Vec::new();
        put_varint(&mut bytes, 6);
        put_varint(&mut bytes, 1);
        let err = VersionEdit::decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("unknown field tag 6"));

        let mut bytes = Vec::new();
        for _ in 0..2 {
            put_varint(&mut bytes, TAG_LOG_NUMBER);
            put_varint(&mut bytes, 3);
        }
        let err = VersionEdit::decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
        assert!(err.message().contains("twice"));

        // A level that does not fit in u32.
        let mut bytes = Vec::new();
        put_varint(&mut bytes, TAG_ADD_TABLE);
        put_varint(&mut bytes, 1);
        put_varint(&mut bytes, u64::from(u32::MAX) + 1);
        let err = VersionEdit::decode(&bytes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corruption);
    }
}
