//! `WriteBatch`: an ordered list of puts and deletes applied atomically.
//!
//! The batch keeps its operations pre-encoded in one buffer (`rep`), the same
//! bytes that go into its WAL record, so committing a batch of 1000 puts
//! costs one allocation, not 2000. Layout of `rep`, repeated per op:
//! `kind u8 | key_len varint | key | (put only) value_len varint | value`.

use crate::coding::{put_varint, Reader};
use crate::error::{Error, Result};
use crate::key::{check_key, check_value, Timestamp, ValueKind};
use crate::record::MAX_FRAME_PAYLOAD;

/// Bytes before `rep` in a batch's WAL record: commit ts and count.
const RECORD_HEADER_LEN: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
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
    }

    pub fn iter(&self) -> BatchIter<'_> {
        BatchIter {
            reader: Reader::new(&self.rep),
            left: self.count,
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
        let bad = |what: &str| Error::corruption(format!("malformed batch record: {what}"));
        let mut r = Reader::new(payload);
        let ts = r.u64_le().ok_or_else(|| bad("short header"))?;
        let count = r.u32_le().ok_or_else(|| bad("short header"))?;
        let batch = WriteBatch {
            rep: r.rest().to_vec(),
            count,
        };
        let mut seen = 0u32;
        let mut ops = BatchIter {
            reader: Reader::new(&batch.rep),
            left: u32::MAX,
        };
        while !ops.reader.is_empty() {
            ops.next_op().ok_or_else(|| bad("bad operation"))?;
            seen = seen.checked_add(1).ok_or_else(|| bad("too many ops"))?;
        }
        if seen != count {
            return Err(bad("operation count mismatch"));
        }
        Ok((ts, batch))
    }
}

pub struct BatchIter<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> BatchIter<'a> {
    fn next_op(&mut self) -> Option<BatchOp<'a>> {
        let kind = ValueKind::from_u8(self.reader.u8()?)?;
        let key = self.reader.length_prefixed()?;
        let value = match kind {
            ValueKind::Put => self.reader.length_prefixed()?,
            ValueKind::Delete => &[],
        };
        Some(BatchOp { kind, key, value })
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = BatchOp<'a>;

    fn next(&mut self) -> Option<BatchOp<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // Batches are validated on construction and on decode, so a failure
        // here would mean a bug; ending the iteration is the safe response.
        self.next_op()
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
    fn rejects_bad_keys() {
        let mut b = WriteBatch::new();
        assert!(b.put("", "v").is_err());
        assert!(b.delete("").is_err());
        assert!(b.is_empty());
    }
}
