//! Column chunks: many rows of one column in one LSM entry (the layout is
//! specified in docs/columnar.md, "Column chunks").
//!
//! A chunk value is
//! `format(1) encoding(1) flags(1) rows(u32 LE) [null bitmap] [min max]
//! payload crc32(u32 LE)`; the CRC covers every byte before it, so a chunk
//! damaged anywhere on its way (not only at rest, where the table file's
//! block CRCs cover it) is reported as corruption rather than decoded.

use crate::error::{Error, Result};

use super::schema::ColumnType;
use super::value::Value;

/// Rows per chunk written by chunking (the last chunk of a piece may hold
/// fewer). 2048 f64 values are 16 KiB: large enough that the per-entry
/// cost (key, index entry, merge step) vanishes, small enough that a point
/// read decodes little and that the one block a range scan reads past its
/// end (the next column's first chunk) stays small. Measured at 20K rows
/// of 5 f64 columns: 8192 rows read 340 KB for one column and 1178 KB for
/// five, 4096 263 / 1003 KB, 2048 227 / 919 KB.
pub(crate) const CHUNK_ROWS: usize = 2048;

const FORMAT: u8 = 1;

/// Fixed-width little-endian (i64, f64), one bit per row (bool), or
/// varint length + bytes per row (string, bytes).
const ENC_PLAIN: u8 = 0;
/// i64: the first value (8 bytes LE), then zigzag varint deltas.
const ENC_DELTA: u8 = 1;
/// string/bytes: entry count (varint), entries (varint length + bytes),
/// then one byte per row: the entry's index.
const ENC_DICT: u8 = 2;
/// i64 in arithmetic progression (dense sorted keys): the first value and
/// the step, 8 bytes LE each, whatever the row count.
const ENC_STEP: u8 = 3;

const FLAG_NULLS: u8 = 1;
const FLAG_MIN_MAX: u8 = 2;

/// Most distinct values a dictionary chunk holds (codes are one byte).
const DICT_MAX: usize = 256;

/// A chunk's decoded values (null rows hold a default value).
#[derive(Debug)]
pub(crate) enum ChunkValues {
    I64(Vec<i64>),
    F64(Vec<f64>),
    Bool(Vec<bool>),
    /// string or bytes (strings checked as UTF-8 when decoded)
    Var(Vec<Vec<u8>>),
}

/// One decoded chunk.
#[derive(Debug)]
pub(crate) struct Chunk {
    pub ty: ColumnType,
    pub values: ChunkValues,
    /// `None`: no row is null.
    pub present: Option<Vec<bool>>,
    /// Smallest and largest non-null value (i64, f64 by total order, bool);
    /// `None` for strings and bytes, or when every row is null.
    pub min_max: Option<(Value, Value)>,
}

impl Chunk {
    pub fn len(&self) -> usize {
        match &self.values {
            ChunkValues::I64(v) => v.len(),
            ChunkValues::F64(v) => v.len(),
            ChunkValues::Bool(v) => v.len(),
            ChunkValues::Var(v) => v.len(),
        }
    }

    fn is_null(&self, i: usize) -> bool {
        self.present.as_ref().is_some_and(|p| !p[i])
    }

    /// Row `i`'s value; a string or bytes value is moved out (each row is
    /// taken at most once by a scan), so use `value` to read one twice.
    pub fn take(&mut self, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match &mut self.values {
            ChunkValues::Var(v) => var_value(self.ty, std::mem::take(&mut v[i])),
            _ => self.value(i),
        }
    }

    pub fn value(&self, i: usize) -> Value {
        if self.is_null(i) {
            return Value::Null;
        }
        match &self.values {
            ChunkValues::I64(v) => Value::I64(v[i]),
            ChunkValues::F64(v) => Value::F64(v[i]),
            ChunkValues::Bool(v) => Value::Bool(v[i]),
            ChunkValues::Var(v) => var_value(self.ty, v[i].clone()),
        }
    }
}

/// UTF-8 was checked when the chunk was decoded.
fn var_value(ty: ColumnType, b: Vec<u8>) -> Value {
    match ty {
        ColumnType::Str => Value::Str(String::from_utf8(b).unwrap_or_default()),
        _ => Value::Bytes(b),
    }
}

/// Encodes `values` (all of one column of type `ty`, nulls allowed) as a
/// chunk, choosing the smallest encoding that applies.
pub(crate) fn encode(ty: ColumnType, values: &[Value]) -> Vec<u8> {
    let n = values.len();
    let has_nulls = values.iter().any(Value::is_null);
    let mut flags = 0;
    let mut head = Vec::new();
    if has_nulls {
        flags |= FLAG_NULLS;
        let mut bits = vec![0u8; n.div_ceil(8)];
        for (i, v) in values.iter().enumerate() {
            if !v.is_null() {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        head.extend_from_slice(&bits);
    }
    if let Some((lo, hi)) = min_max(ty, values) {
        flags |= FLAG_MIN_MAX;
        head.extend_from_slice(&lo.to_le_bytes());
        head.extend_from_slice(&hi.to_le_bytes());
    }
    let (encoding, payload) = match ty {
        ColumnType::I64 => {
            let xs: Vec<i64> = values
                .iter()
                .map(|v| if let Value::I64(x) = v { *x } else { 0 })
                .collect();
            let delta = encode_delta(&xs);
            if let Some(step) = encode_step(&xs) {
                (ENC_STEP, step)
            } else if delta.len() < xs.len() * 8 {
                (ENC_DELTA, delta)
            } else {
                (ENC_PLAIN, xs.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
        }
        ColumnType::F64 => (
            ENC_PLAIN,
            values
                .iter()
                .flat_map(|v| {
                    let x = if let Value::F64(x) = v { *x } else { 0.0 };
                    x.to_bits().to_le_bytes()
                })
                .collect(),
        ),
        ColumnType::Bool => {
            let mut bits = vec![0u8; n.div_ceil(8)];
            for (i, v) in values.iter().enumerate() {
                if matches!(v, Value::Bool(true)) {
                    bits[i / 8] |= 1 << (i % 8);
                }
            }
            (ENC_PLAIN, bits)
        }
        ColumnType::Str | ColumnType::Bytes => {
            let raw: Vec<&[u8]> = values
                .iter()
                .map(|v| match v {
                    Value::Str(s) => s.as_bytes(),
                    Value::Bytes(b) => b.as_slice(),
                    _ => &[],
                })
                .collect();
            let plain = encode_var_plain(&raw);
            match encode_dict(&raw) {
                Some(dict) if dict.len() < plain.len() => (ENC_DICT, dict),
                _ => (ENC_PLAIN, plain),
            }
        }
    };
    let mut out = Vec::with_capacity(7 + head.len() + payload.len() + 4);
    out.push(FORMAT);
    out.push(encoding);
    out.push(flags);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Min and max of the non-null values as 8-byte words (i64 as is, f64 by
/// its bits, bool 0/1); `None` for variable-width types or all-null.
fn min_max(ty: ColumnType, values: &[Value]) -> Option<(u64, u64)> {
    match ty {
        ColumnType::I64 => {
            let it = values.iter().filter_map(|v| match v {
                Value::I64(x) => Some(*x),
                _ => None,
            });
            let lo = it.clone().min()?;
            let hi = it.max()?;
            Some((lo as u64, hi as u64))
        }
        ColumnType::F64 => {
            let it = values.iter().filter_map(|v| match v {
                Value::F64(x) => Some(*x),
                _ => None,
            });
            let lo = it.clone().min_by(f64::total_cmp)?;
            let hi = it.max_by(f64::total_cmp)?;
            Some((lo.to_bits(), hi.to_bits()))
        }
        ColumnType::Bool => {
            let it = values.iter().filter_map(|v| match v {
                Value::Bool(b) => Some(u64::from(*b)),
                _ => None,
            });
            Some((it.clone().min()?, it.max()?))
        }
        _ => None,
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn encode_delta(xs: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(xs.len() * 2 + 8);
    let Some(first) = xs.first() else {
        return out;
    };
    out.extend_from_slice(&first.to_le_bytes());
    for w in xs.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        put_varint(&mut out, ((d << 1) ^ (d >> 63)) as u64);
    }
    out
}

/// `Some` when `xs` (at least two) is an arithmetic progression.
fn encode_step(xs: &[i64]) -> Option<Vec<u8>> {
    let (&first, &second) = (xs.first()?, xs.get(1)?);
    let step = second.wrapping_sub(first);
    let mut x = first;
    for &v in &xs[1..] {
        x = x.wrapping_add(step);
        if v != x {
            return None;
        }
    }
    Some([first.to_le_bytes(), step.to_le_bytes()].concat())
}

fn encode_var_plain(raw: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.iter().map(|r| r.len() + 1).sum());
    for r in raw {
        put_varint(&mut out, r.len() as u64);
        out.extend_from_slice(r);
    }
    out
}

/// `None` when there are more than `DICT_MAX` distinct values.
fn encode_dict(raw: &[&[u8]]) -> Option<Vec<u8>> {
    let mut entries: Vec<&[u8]> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let mut codes = Vec::with_capacity(raw.len());
    for r in raw {
        let code = match index.get(r) {
            Some(&c) => c,
            None => {
                if entries.len() == DICT_MAX {
                    return None;
                }
                let c = entries.len() as u8;
                entries.push(r);
                index.insert(*r, c);
                c
            }
        };
        codes.push(code);
    }
    let mut out = Vec::new();
    put_varint(&mut out, entries.len() as u64);
    for e in &entries {
        put_varint(&mut out, e.len() as u64);
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&codes);
    Some(out)
}

fn bad(what: &str) -> Error {
    Error::corruption(format!("column chunk: {what}"))
}

/// A bounds-checked reader over a chunk's bytes.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().map_err(|_| bad("truncated"))?;
        Ok(u64::from_le_bytes(b))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }

    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint()?).map_err(|_| bad("length"))
    }
}

pub(crate) fn decode(ty: ColumnType, raw: &[u8]) -> Result<Chunk> {
    if raw.len() < 11 {
        return Err(bad("truncated"));
    }
    let (body, crc) = raw.split_at(raw.len() - 4);
    let crc = u32::from_le_bytes(crc.try_into().map_err(|_| bad("truncated"))?);
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch"));
    }
    let mut c = Cursor(body);
    if c.u8()? != FORMAT {
        return Err(bad("unknown format"));
    }
    let encoding = c.u8()?;
    let flags = c.u8()?;
    let n = u32::from_le_bytes(c.take(4)?.try_into().map_err(|_| bad("truncated"))?) as usize;
    let present = if flags & FLAG_NULLS != 0 {
        let bits = c.take(n.div_ceil(8))?;
        Some((0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
    } else {
        None
    };
    let min_max = if flags & FLAG_MIN_MAX != 0 {
        let (lo, hi) = (c.u64()?, c.u64()?);
        match ty {
            ColumnType::I64 => Some((Value::I64(lo as i64), Value::I64(hi as i64))),
            ColumnType::F64 => Some((
                Value::F64(f64::from_bits(lo)),
                Value::F64(f64::from_bits(hi)),
            )),
            ColumnType::Bool => Some((Value::Bool(lo != 0), Value::Bool(hi != 0))),
            _ => None,
        }
    } else {
        None
    };
    let values = match (ty, encoding) {
        (ColumnType::I64, ENC_PLAIN) => {
            let b = c.take(n.checked_mul(8).ok_or_else(|| bad("row count"))?)?;
            ChunkValues::I64(
                b.chunks_exact(8)
                    .map(|w| i64::from_le_bytes(w.try_into().unwrap_or_default()))
                    .collect(),
            )
        }
        (ColumnType::I64, ENC_DELTA) => {
            let mut xs = Vec::with_capacity(n);
            if n > 0 {
                let mut x = c.u64()? as i64;
                xs.push(x);
                for _ in 1..n {
                    let z = c.varint()?;
                    let d = ((z >> 1) as i64) ^ -((z & 1) as i64);
                    x = x.wrapping_add(d);
                    xs.push(x);
                }
            }
            ChunkValues::I64(xs)
        }
        (ColumnType::I64, ENC_STEP) => {
            let (first, step) = (c.u64()? as i64, c.u64()? as i64);
            let mut x = first;
            let mut xs = Vec::with_capacity(n);
            for _ in 0..n {
                xs.push(x);
                x = x.wrapping_add(step);
            }
            ChunkValues::I64(xs)
        }
        (ColumnType::F64, ENC_PLAIN) => {
            let b = c.take(n.checked_mul(8).ok_or_else(|| bad("row count"))?)?;
            ChunkValues::F64(
                b.chunks_exact(8)
                    .map(|w| f64::from_bits(u64::from_le_bytes(w.try_into().unwrap_or_default())))
                    .collect(),
            )
        }
        (ColumnType::Bool, ENC_PLAIN) => {
            let bits = c.take(n.div_ceil(8))?;
            ChunkValues::Bool((0..n).map(|i| bits[i / 8] & (1 << (i % 8)) != 0).collect())
        }
        (ColumnType::Str | ColumnType::Bytes, ENC_PLAIN) => {
            let mut vs = Vec::with_capacity(n);
            for _ in 0..n {
                let len = c.len()?;
                vs.push(c.take(len)?.to_vec());
            }
            ChunkValues::Var(vs)
        }
        (ColumnType::Str | ColumnType::Bytes, ENC_DICT) => {
            let count = c.len()?;
            if count > DICT_MAX {
                return Err(bad("dictionary too large"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                let len = c.len()?;
                entries.push(c.take(len)?);
            }
            let codes = c.take(n)?;
            let mut vs = Vec::with_capacity(n);
            for &code in codes {
                vs.push(
                    entries
                        .get(code as usize)
                        .ok_or_else(|| bad("dictionary code out of range"))?
                        .to_vec(),
                );
            }
            ChunkValues::Var(vs)
        }
        _ => return Err(bad("unknown encoding for the column type")),
    };
    if !c.0.is_empty() {
        return Err(bad("trailing bytes"));
    }
    if ty == ColumnType::Str {
        if let ChunkValues::Var(vs) = &values {
            if vs.iter().any(|v| std::str::from_utf8(v).is_err()) {
                return Err(bad("string is not UTF-8"));
            }
        }
    }
    Ok(Chunk {
        ty,
        values,
        present,
        min_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(ty: ColumnType, values: Vec<Value>) -> Vec<u8> {
        let raw = encode(ty, &values);
        let mut chunk = decode(ty, &raw).unwrap();
        assert_eq!(chunk.len(), values.len());
        for (i, v) in values.iter().enumerate() {
            assert_eq!(format!("{:?}", chunk.value(i)), format!("{v:?}"));
            assert_eq!(format!("{:?}", chunk.take(i)), format!("{v:?}"));
        }
        raw
    }

    #[test]
    fn every_type_and_encoding_round_trips() {
        let sorted: Vec<Value> = (0..1000).map(|i| Value::I64(i * i - 7)).collect();
        let raw = round_trip(ColumnType::I64, sorted);
        assert_eq!(raw[1], ENC_DELTA);
        assert!(raw.len() < 2100, "delta: {} bytes", raw.len());
        let dense: Vec<Value> = (0..1000).map(|i| Value::I64(i * 3 - 7)).collect();
        let raw = round_trip(ColumnType::I64, dense);
        assert_eq!((raw[1], raw.len()), (ENC_STEP, 7 + 16 + 16 + 4));
        let wrapping = vec![Value::I64(i64::MAX - 1), Value::I64(i64::MAX)];
        round_trip(ColumnType::I64, wrapping);
        let wild = vec![
            Value::I64(i64::MIN),
            Value::I64(i64::MAX),
            Value::I64(0),
            Value::I64((1 << 53) + 1),
            Value::I64(-1),
        ];
        round_trip(ColumnType::I64, wild);
        round_trip(
            ColumnType::F64,
            vec![
                Value::F64(f64::NAN),
                Value::F64(-0.0),
                Value::F64(f64::INFINITY),
                Value::Null,
            ],
        );
        round_trip(
            ColumnType::Bool,
            (0..19).map(|i| Value::Bool(i % 3 == 0)).collect(),
        );
        let few: Vec<Value> = (0..500)
            .map(|i| Value::Str(format!("user-{}", i % 7)))
            .collect();
        let raw = round_trip(ColumnType::Str, few);
        assert_eq!(raw[1], ENC_DICT);
        let many: Vec<Value> = (0..500)
            .map(|i| {
                if i % 5 == 0 {
                    Value::Null
                } else {
                    Value::Bytes(vec![i as u8; i % 4])
                }
            })
            .collect();
        round_trip(ColumnType::Bytes, many);
        let distinct: Vec<Value> = (0..300).map(|i| Value::Str(format!("{i}ü"))).collect();
        let raw = round_trip(ColumnType::Str, distinct);
        assert_eq!(raw[1], ENC_PLAIN);
        round_trip(ColumnType::Str, vec![Value::Str(String::new())]);
        round_trip(ColumnType::I64, vec![]);
    }

    #[test]
    fn min_max_and_damage() {
        let raw = encode(
            ColumnType::F64,
            &[Value::F64(2.0), Value::Null, Value::F64(-1.5)],
        );
        let c = decode(ColumnType::F64, &raw).unwrap();
        assert_eq!(c.min_max, Some((Value::F64(-1.5), Value::F64(2.0))));
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x10;
            assert!(decode(ColumnType::F64, &bad).is_err(), "byte {i}");
        }
        assert!(decode(ColumnType::F64, &raw[..raw.len() - 1]).is_err());
        assert!(decode(ColumnType::Bool, &raw).is_err());
    }
}
