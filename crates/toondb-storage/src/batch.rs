//! `WriteBatch`: an ordered list of puts and deletes applied atomically.
//!
//! The batch keeps its operations pre-encoded in one buffer (`rep`), the same
//! bytes that go into its WAL record, so committing a batch of 1000 puts
//! costs one allocation, not 2000. Layout of `rep`, repeated per op:
//! `kind u8 | key_len varint | key | (put only) value_len varint | value`,
//! or, for a range delete (kind 2, [`RANGE_DELETE_TAG`]),
//! `2 | start_len varint | start | end_len varint | end`
//! (docs/format-wal.md).
//!
//! A batch's range deletes hide versions *older* than the batch's commit
//! timestamp, so they take effect before the batch's own puts and deletes,
//! whatever the order they were added in.

use crate::coding::{put_varint, Reader};
use crate::error::{Error, Result};
use crate::key::{check_key, check_value, Timestamp, ValueKind};
use crate::record::MAX_FRAME_PAYLOAD;

/// Bytes before `rep` in a batch's WAL record: commit ts and count.
const RECORD_HEADER_LEN: usize = 12;

/// The op kind byte of a range delete in `rep` (0 and 1 are `ValueKind`).
pub const RANGE_DELETE_TAG: u8 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
    /// How many of `count` are range deletes.
    range_deletes: u32,
}

/// One operation of a batch, borrowed from its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchOp<'a> {
    pub kind: ValueKind,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(bytes: usize) -> Self {
        WriteBatch {
            rep: Vec::with_capacity(bytes),
            count: 0,
            range_deletes: 0,
        }
    }

    /// Adds a put. Keys in the reserved range (columnar tables,
    /// `columnar::RESERVED_PREFIX`) are `InvalidArgument`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<&mut Self> {
        crate::columnar::check_user_key(key.as_ref())?;
        self.put_raw(key, value)
    }

    /// `put` without the reserved-range check (the columnar layer).
    pub(crate) fn put_raw(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<&mut Self> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_key(key)?;
        check_value(value)?;
        self.check_room(key, value)?;
        self.bump()?;
        self.rep.push(ValueKind::Put as u8);
        put_varint(&mut self.rep, key.len() as u64);
        self.rep.extend_from_slice(key);
        put_varint(&mut self.rep, value.len() as u64);
        self.rep.extend_from_slice(value);
        Ok(self)
    }

    /// Adds a delete; reserved keys are `InvalidArgument` as for `put`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        crate::columnar::check_user_key(key.as_ref())?;
        self.delete_raw(key)
    }

    /// `delete` without the reserved-range check (the columnar layer).
    pub(crate) fn delete_raw(&mut self, key: impl AsRef<[u8]>) -> Result<&mut Self> {
        let key = key.as_ref();
        check_key(key)?;
        self.check_room(key, &[])?;
        self.bump()?;
        self.rep.push(ValueKind::Delete as u8);
        put_varint(&mut self.rep, key.len() as u64);
        self.rep.extend_from_slice(key);
        Ok(self)
    }

    /// Adds a range delete: every key in `[start, end)` that exists when
    /// the batch commits is deleted (versions older than the commit stay
    /// readable from older snapshots). Takes effect before this batch's
    /// own puts and deletes. `start >= end` is an empty range and is
    /// `InvalidArgument`, as is a range that reaches into the reserved key
    /// range (`columnar::RESERVED_PREFIX`).
    pub fn delete_range(
        &mut self,
        start: impl AsRef<[u8]>,
        end: impl AsRef<[u8]>,
    ) -> Result<&mut Self> {
        let (start, end) = (start.as_ref(), end.as_ref());
        crate::columnar::check_user_range(start, end)?;
        self.delete_range_raw(start, end)
    }

    /// `delete_range` without the reserved-range check.
    pub(crate) fn delete_range_raw(&mut self, start: &[u8], end: &[u8]) -> Result<&mut Self> {
        check_key(start)?;
        // An exclusive end may be one byte longer than a key: the successor
        // `k ++ 00` of the longest key `k` (an inclusive bound made exclusive).
        if end.len() > crate::key::MAX_KEY_LEN + 1 {
            return Err(Error::invalid_argument(
                "delete_range end is longer than a key plus one byte",
            ));
        }
        if start >= end {
            return Err(Error::invalid_argument("delete_range needs start < end"));
        }
        self.check_room(start, end)?;
        self.bump()?;
        self.range_deletes += 1;
        self.rep.push(RANGE_DELETE_TAG);
        put_varint(&mut self.rep, start.len() as u64);
        self.rep.extend_from_slice(start);
        put_varint(&mut self.rep, end.len() as u64);
        self.rep.extend_from_slice(end);
        Ok(self)
    }

    /// Whether the batch holds a range delete.
    pub fn has_range_deletes(&self) -> bool {
        self.range_deletes > 0
    }

    /// The batch's range deletes as `(start, end)`, in the order added.
    pub fn range_deletes(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut ops = RawOps {
            reader: Reader::new(&self.rep),
        };
        std::iter::from_fn(move || loop {
            match ops.next_raw()? {
                RawOp::Range(s, e) => return Some((s, e)),
                RawOp::Point(_) => continue,
            }
        })
        .take(self.range_deletes as usize)
    }

    /// Keeps the WAL record of this batch (header plus `rep`) within one
    /// frame, which replay can read back: a larger record would be written
    /// and acknowledged, then rejected at the next open.
    fn check_room(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let op = 1 + 10 + key.len() + 10 + value.len();
        if RECORD_HEADER_LEN + self.rep.len() + op > MAX_FRAME_PAYLOAD {
            return Err(Error::invalid_argument(format!(
                "batch would exceed {MAX_FRAME_PAYLOAD} bytes; split it into smaller batches"
            )));
        }
        Ok(())
    }

    fn bump(&mut self) -> Result<()> {
        self.count = self
            .count
            .checked_add(1)
            .ok_or_else(|| Error::invalid_argument("batch has too many operations"))?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes (what the batch adds to the WAL, roughly).
    pub fn byte_size(&self) -> usize {
        self.rep.len()
    }

    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
        self.range_deletes = 0;
    }

    /// The batch's puts and deletes (range deletes: [`Self::range_deletes`]).
    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            ops: RawOps {
                reader: Reader::new(&self.rep),
            },
            left: self.count - self.range_deletes,
            len: self.rep.len(),
        }
    }

    /// [`WriteBatch::iter`], each operation with the byte offset it starts
    /// at in the batch's encoding ([`WriteBatch::op_at`] decodes it again).
    pub(crate) fn iter_with_offsets(&self) -> impl Iterator<Item = (usize, BatchOp<'_>)> {
        let mut it = self.iter();
        std::iter::from_fn(move || it.next_at())
    }

    /// The operation starting `offset` bytes into the batch's encoding (an
    /// offset [`WriteBatch::iter_with_offsets`] gave).
    pub(crate) fn op_at(&self, offset: usize) -> Option<BatchOp<'_>> {
        let mut ops = RawOps {
            reader: Reader::new(self.rep.get(offset..)?),
        };
        match ops.next_raw()? {
            RawOp::Point(op) => Some(op),
            RawOp::Range(..) => None,
        }
    }

    /// Appends the WAL record payload for this batch committed at `ts`:
    /// `commit_ts u64 LE | count u32 LE | rep`.
    pub fn encode_record(&self, ts: Timestamp, out: &mut Vec<u8>) {
        out.extend_from_slice(&ts.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.rep);
    }

    /// Parses a WAL record payload back into its timestamp and batch,
    /// validating every operation so replay never trusts a malformed record.
    pub fn decode_record(payload: &[u8]) -> Result<(Timestamp, WriteBatch)> {
        let mut batch = WriteBatch::new();
        let ts = Self::decode_record_into(payload, &mut batch)?;
        Ok((ts, batch))
    }

    /// [`WriteBatch::decode_record`] into `batch`, replacing what it held
    /// and reusing its buffer: replay decodes thousands of records, and a
    /// fresh buffer per record cost a page fault per 4 KiB of WAL.
    pub fn decode_record_into(payload: &[u8], batch: &mut WriteBatch) -> Result<Timestamp> {
        let bad = |what: &str| Error::corruption(format!("malformed batch record: {what}"));
        let mut r = Reader::new(payload);
        let ts = r.u64_le().ok_or_else(|| bad("short header"))?;
        let count = r.u32_le().ok_or_else(|| bad("short header"))?;
        // Empty until the record proved valid: a failed decode leaves no
        // half-trusted batch behind.
        batch.count = 0;
        batch.range_deletes = 0;
        batch.rep.clear();
        batch.rep.extend_from_slice(r.rest());
        let mut seen = 0u32;
        let mut ranges = 0u32;
        let mut ops = RawOps {
            reader: Reader::new(&batch.rep),
        };
        while !ops.reader.is_empty() {
            if let RawOp::Range(s, e) = ops.next_raw().ok_or_else(|| bad("bad operation"))? {
                if s >= e || s.is_empty() {
                    return Err(bad("empty range delete"));
                }
                ranges += 1;
            }
            seen = seen.checked_add(1).ok_or_else(|| bad("too many ops"))?;
        }
        if seen != count {
            return Err(bad("operation count mismatch"));
        }
        batch.count = count;
        batch.range_deletes = ranges;
        Ok(ts)
    }

    /// Calls `each(commit_ts, op)` for every operation of a WAL record
    /// payload, borrowed from it (no copy), in batch order, and returns the
    /// commit timestamp. Validated as [`WriteBatch::decode_record_into`] does,
    /// but as it goes: on an error some operations were already passed.
    pub(crate) fn decode_record_ops<'a>(
        payload: &'a [u8],
        mut each: impl FnMut(Timestamp, RawOp<'a>),
    ) -> Result<Timestamp> {
        let bad = |what: &str| Error::corruption(format!("malformed batch record: {what}"));
        let mut r = Reader::new(payload);
        let ts = r.u64_le().ok_or_else(|| bad("short header"))?;
        let count = r.u32_le().ok_or_else(|| bad("short header"))?;
        let mut ops = RawOps {
            reader: Reader::new(r.rest()),
        };
        let mut seen = 0u32;
        while !ops.reader.is_empty() {
            let op = ops.next_raw().ok_or_else(|| bad("bad operation"))?;
            if let RawOp::Range(s, e) = op {
                if s >= e || s.is_empty() {
                    return Err(bad("empty range delete"));
                }
            }
            seen = seen.checked_add(1).ok_or_else(|| bad("too many ops"))?;
            each(ts, op);
        }
        if seen != count {
            return Err(bad("operation count mismatch"));
        }
        Ok(ts)
    }
}

/// One encoded operation of `rep`.
pub(crate) enum RawOp<'a> {
    Point(BatchOp<'a>),
    Range(&'a [u8], &'a [u8]),
}

struct RawOps<'a> {
    reader: Reader<'a>,
}

impl<'a> RawOps<'a> {
    fn next_raw(&mut self) -> Option<RawOp<'a>> {
        let tag = self.reader.u8()?;
        let key = self.reader.length_prefixed()?;
        if tag == RANGE_DELETE_TAG {
            let end = self.reader.length_prefixed()?;
            return Some(RawOp::Range(key, end));
        }
        let kind = ValueKind::from_u8(tag)?;
        let value = match kind {
            ValueKind::Put => self.reader.length_prefixed()?,
            ValueKind::Delete => &[],
        };
        Some(RawOp::Point(BatchOp { kind, key, value }))
    }
}

/// The puts and deletes of a batch, in order (range deletes skipped).
pub struct BatchIter<'a> {
    ops: RawOps<'a>,
    left: u32,
    /// The encoding's whole length (an operation's offset is this minus
    /// what is left to read).
    len: usize,
}

impl<'a> BatchIter<'a> {
    /// The next operation and the offset it starts at in the batch's
    /// encoding.
    fn next_at(&mut self) -> Option<(usize, BatchOp<'a>)> {
        if self.left == 0 {
            return None;
        }
        // Batches are validated on construction and on decode, so a failure
        // here would mean a bug; ending the iteration is the safe response.
        loop {
            let at = self.len - self.ops.reader.remaining();
            match self.ops.next_raw()? {
                RawOp::Point(op) => {
                    self.left -= 1;
                    return Some((at, op));
                }
                RawOp::Range(..) => continue,
            }
        }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = BatchOp<'a>;

    fn next(&mut self) -> Option<BatchOp<'a>> {
        self.next_at().map(|(_, op)| op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let mut b = WriteBatch::new();
        b.put("a", "1")
            .unwrap()
            .delete("b")
            .unwrap()
            .put("c", "")
            .unwrap();
        let mut rec = Vec::new();
        b.encode_record(7, &mut rec);
        let (ts, back) = WriteBatch::decode_record(&rec).unwrap();
        assert_eq!(ts, 7);
        assert_eq!(back, b);
        let ops: Vec<_> = back.iter().collect();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[1].kind, ValueKind::Delete);
        assert_eq!(ops[2].value, b"");
    }

    #[test]
    fn malformed_records_are_corruption() {
        let mut b = WriteBatch::new();
        b.put("key", "value").unwrap();
        let mut rec = Vec::new();
        b.encode_record(1, &mut rec);
        for cut in 0..rec.len() {
            assert!(WriteBatch::decode_record(&rec[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn a_batch_never_outgrows_one_wal_record() {
        let big = vec![7u8; crate::key::MAX_VALUE_LEN];
        let mut b = WriteBatch::new();
        for i in 0..3 {
            b.put(format!("k{i}"), &big).unwrap();
        }
        let err = b.put("k3", &big).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::InvalidArgument);
        assert_eq!(b.len(), 3, "the rejected op is not added");
        assert!(b.byte_size() + RECORD_HEADER_LEN <= MAX_FRAME_PAYLOAD);
    }

    #[test]
    fn range_deletes_round_trip_beside_point_ops() {
        let mut b = WriteBatch::new();
        b.put("a", "1").unwrap();
        b.delete_range("b", "d").unwrap();
        b.delete("e").unwrap();
        assert!(b.delete_range("x", "x").is_err());
        assert!(b.delete_range("y", "x").is_err());
        assert_eq!(b.len(), 3);
        let mut rec = Vec::new();
        b.encode_record(4, &mut rec);
        let (_, back) = WriteBatch::decode_record(&rec).unwrap();
        assert_eq!(back, b);
        let points: Vec<_> = back.iter().map(|o| o.key.to_vec()).collect();
        assert_eq!(points, vec![b"a".to_vec(), b"e".to_vec()]);
        let ranges: Vec<_> = back.range_deletes().collect();
        assert_eq!(ranges, vec![(&b"b"[..], &b"d"[..])]);
        for cut in 0..rec.len() {
            assert!(WriteBatch::decode_record(&rec[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn rejects_bad_keys() {
        let mut b = WriteBatch::new();
        assert!(b.put("", "v").is_err());
        assert!(b.delete("").is_err());
        assert!(b.is_empty());
    }
}
