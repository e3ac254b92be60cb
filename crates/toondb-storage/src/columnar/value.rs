//! Cell values: the in-memory `Value`, the stored cell encoding and the
//! order-preserving primary-key encoding.

use crate::error::{Error, Result};

use super::schema::ColumnType;

/// One cell's value (`#[non_exhaustive]`: a new column type brings a new
/// variant, so match with a wildcard arm).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// The type this value has (`None` for null).
    pub fn column_type(&self) -> Option<ColumnType> {
        Some(match self {
            Value::Null => return None,
            Value::I64(_) => ColumnType::I64,
            Value::F64(_) => ColumnType::F64,
            Value::Bool(_) => ColumnType::Bool,
            Value::Str(_) => ColumnType::Str,
            Value::Bytes(_) => ColumnType::Bytes,
        })
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_string())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}

const NULL_TAG: u8 = 0;
const PRESENT_TAG: u8 = 1;

/// Appends the stored form of a non-null `v`: i64 and f64 as 8 bytes
/// little-endian (f64 by bit pattern, so NaN payloads and -0 survive),
/// bool as one byte, strings and bytes raw. Nullable columns put a tag
/// byte first (0 null, 1 present).
pub(crate) fn encode_cell(v: &Value, nullable: bool, out: &mut Vec<u8>) {
    if nullable {
        out.push(if v.is_null() { NULL_TAG } else { PRESENT_TAG });
    }
    match v {
        Value::Null => {}
        Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        Value::Bytes(b) => out.extend_from_slice(b),
    }
}

pub(crate) fn decode_cell(ty: ColumnType, nullable: bool, mut raw: &[u8]) -> Result<Value> {
    if nullable {
        match raw.split_first() {
            Some((&NULL_TAG, _)) => return Ok(Value::Null),
            Some((&PRESENT_TAG, rest)) => raw = rest,
            _ => return Err(Error::corruption("columnar cell has a bad null tag")),
        }
    }
    let fixed8 = |raw: &[u8]| -> Result<[u8; 8]> {
        raw.try_into()
            .map_err(|_| Error::corruption(format!("columnar cell is {} bytes, not 8", raw.len())))
    };
    Ok(match ty {
        ColumnType::I64 => Value::I64(i64::from_le_bytes(fixed8(raw)?)),
        ColumnType::F64 => Value::F64(f64::from_bits(u64::from_le_bytes(fixed8(raw)?))),
        ColumnType::Bool => match raw {
            [b] => Value::Bool(*b != 0),
            _ => return Err(Error::corruption("columnar bool cell is not 1 byte")),
        },
        ColumnType::Str => Value::Str(
            String::from_utf8(raw.to_vec())
                .map_err(|_| Error::corruption("columnar string cell is not UTF-8"))?,
        ),
        ColumnType::Bytes => Value::Bytes(raw.to_vec()),
    })
}

/// Order-preserving key form of a primary key: i64 as big-endian with the
/// sign bit flipped; strings as their UTF-8 bytes (the last key part, so
/// no terminator is needed).
pub(crate) fn encode_pk(v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match v {
        Value::I64(x) => out.extend_from_slice(&((*x as u64) ^ (1 << 63)).to_be_bytes()),
        Value::Str(s) => out.extend_from_slice(s.as_bytes()),
        other => {
            return Err(Error::invalid_argument(format!(
                "primary key must be i64 or string, got {other:?}"
            )))
        }
    }
    Ok(())
}

pub(crate) fn decode_pk(ty: ColumnType, raw: &[u8]) -> Result<Value> {
    match ty {
        ColumnType::I64 => {
            let b: [u8; 8] = raw
                .try_into()
                .map_err(|_| Error::corruption("columnar i64 key is not 8 bytes"))?;
            Ok(Value::I64((u64::from_be_bytes(b) ^ (1 << 63)) as i64))
        }
        ColumnType::Str => Ok(Value::Str(
            String::from_utf8(raw.to_vec())
                .map_err(|_| Error::corruption("columnar string key is not UTF-8"))?,
        )),
        _ => Err(Error::corruption("columnar primary key of a bad type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pk_order_is_numeric_order() {
        let xs = [i64::MIN, -5, -1, 0, 1, 1 << 53, i64::MAX];
        let enc: Vec<Vec<u8>> = xs
            .iter()
            .map(|x| {
                let mut o = Vec::new();
                encode_pk(&Value::I64(*x), &mut o).unwrap();
                o
            })
            .collect();
        assert!(enc.windows(2).all(|w| w[0] < w[1]));
        for (x, e) in xs.iter().zip(&enc) {
            assert_eq!(decode_pk(ColumnType::I64, e).unwrap(), Value::I64(*x));
        }
    }

    #[test]
    fn cells_round_trip() {
        for (ty, v) in [
            (ColumnType::F64, Value::F64(-0.0)),
            (ColumnType::I64, Value::I64(i64::MIN)),
            (ColumnType::Str, Value::Str(String::new())),
            (ColumnType::Bytes, Value::Bytes(vec![])),
            (ColumnType::Bool, Value::Bool(true)),
        ] {
            for nullable in [false, true] {
                let mut o = Vec::new();
                encode_cell(&v, nullable, &mut o);
                let back = decode_cell(ty, nullable, &o).unwrap();
                assert_eq!(format!("{back:?}"), format!("{v:?}"));
            }
        }
        let mut o = Vec::new();
        encode_cell(&Value::Null, true, &mut o);
        assert_eq!(decode_cell(ColumnType::I64, true, &o).unwrap(), Value::Null);
        assert!(decode_cell(ColumnType::I64, false, b"abc").is_err());
    }
}
