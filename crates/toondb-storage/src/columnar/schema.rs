//! Table schemas: column types, validation of schemas and rows, and the
//! catalog encoding of a table definition.

use crate::error::{Error, Result};

use super::value::Value;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ColumnType {
    I64,
    F64,
    Bool,
    Str,
    Bytes,
}

impl ColumnType {
    /// The name used by the bindings: `i64`, `f64`, `bool`, `string`, `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::I64 => "i64",
            ColumnType::F64 => "f64",
            ColumnType::Bool => "bool",
            ColumnType::Str => "string",
            ColumnType::Bytes => "bytes",
        }
    }

    pub fn parse(name: &str) -> Result<ColumnType> {
        Ok(match name {
            "i64" => ColumnType::I64,
            "f64" => ColumnType::F64,
            "bool" => ColumnType::Bool,
            "string" => ColumnType::Str,
            "bytes" => ColumnType::Bytes,
            other => {
                return Err(Error::invalid_argument(format!(
                    "unknown column type {other:?} (i64, f64, bool, string or bytes)"
                )))
            }
        })
    }

    fn code(self) -> u8 {
        match self {
            ColumnType::I64 => 1,
            ColumnType::F64 => 2,
            ColumnType::Bool => 3,
            ColumnType::Str => 4,
            ColumnType::Bytes => 5,
        }
    }

    fn from_code(c: u8) -> Result<ColumnType> {
        Ok(match c {
            1 => ColumnType::I64,
            2 => ColumnType::F64,
            3 => ColumnType::Bool,
            4 => ColumnType::Str,
            5 => ColumnType::Bytes,
            _ => return Err(Error::corruption("table catalog: unknown column type")),
        })
    }
}

/// One column of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        ColumnDef {
            name: name.into(),
            ty,
            nullable: false,
        }
    }

    pub fn nullable(mut self) -> Self {
        self.nullable = true;
        self
    }
}

/// A table's columns (in this order) and its primary key column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub columns: Vec<ColumnDef>,
    pub primary_key: String,
}

const MAX_COLUMNS: usize = 4096;
const MAX_NAME: usize = 255;
const FORMAT: u8 = 1;

impl Schema {
    pub fn new(columns: Vec<ColumnDef>, primary_key: impl Into<String>) -> Self {
        Schema {
            columns,
            primary_key: primary_key.into(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.columns.is_empty() || self.columns.len() > MAX_COLUMNS {
            return Err(Error::invalid_argument(format!(
                "a table has 1 to {MAX_COLUMNS} columns, got {}",
                self.columns.len()
            )));
        }
        for (i, c) in self.columns.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > MAX_NAME {
                return Err(Error::invalid_argument(format!(
                    "column {i}: a name is 1 to {MAX_NAME} bytes"
                )));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::invalid_argument(format!(
                    "column {:?} is declared twice",
                    c.name
                )));
            }
        }
        let pk = self.pk_def().ok_or_else(|| {
            Error::invalid_argument(format!(
                "primary key {:?} is not a column",
                self.primary_key
            ))
        })?;
        if !matches!(pk.ty, ColumnType::I64 | ColumnType::Str) {
            return Err(Error::invalid_argument(format!(
                "primary key {:?} must be i64 or string, not {}",
                pk.name,
                pk.ty.name()
            )));
        }
        if pk.nullable {
            return Err(Error::invalid_argument(format!(
                "primary key {:?} cannot be nullable",
                pk.name
            )));
        }
        Ok(())
    }

    pub(crate) fn pk_index(&self) -> usize {
        self.columns
            .iter()
            .position(|c| c.name == self.primary_key)
            .unwrap_or(0)
    }

    fn pk_def(&self) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == self.primary_key)
    }

    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| Error::invalid_argument(format!("no column {name:?} in this table")))
    }

    /// Checks one row given in schema order.
    pub(crate) fn check_row(&self, row_index: usize, values: &[Value]) -> Result<()> {
        if values.len() != self.columns.len() {
            return Err(Error::invalid_argument(format!(
                "row {row_index}: {} values for {} columns",
                values.len(),
                self.columns.len()
            )));
        }
        for (c, v) in self.columns.iter().zip(values) {
            match v.column_type() {
                None if !c.nullable => {
                    return Err(Error::invalid_argument(format!(
                        "row {row_index}, column {:?}: null in a non-nullable column",
                        c.name
                    )))
                }
                Some(t) if t != c.ty => {
                    return Err(Error::invalid_argument(format!(
                        "row {row_index}, column {:?}: expected {}, got {}",
                        c.name,
                        c.ty.name(),
                        t.name()
                    )))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Puts a row given as (name, value) pairs into schema order, checking
    /// for missing, extra and mistyped columns.
    pub(crate) fn order_row(
        &self,
        row_index: usize,
        row: &[(String, Value)],
    ) -> Result<Vec<Value>> {
        let mut out: Vec<Option<Value>> = vec![None; self.columns.len()];
        for (name, v) in row {
            let i = self
                .columns
                .iter()
                .position(|c| &c.name == name)
                .ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "row {row_index}, column {name:?}: no such column"
                    ))
                })?;
            if out[i].is_some() {
                return Err(Error::invalid_argument(format!(
                    "row {row_index}, column {name:?}: given twice"
                )));
            }
            out[i] = Some(v.clone());
        }
        let values = out
            .into_iter()
            .zip(&self.columns)
            .map(|(v, c)| {
                v.ok_or_else(|| {
                    Error::invalid_argument(format!(
                        "row {row_index}, column {:?}: missing",
                        c.name
                    ))
                })
            })
            .collect::<Result<Vec<Value>>>()?;
        self.check_row(row_index, &values)?;
        Ok(values)
    }

    pub(crate) fn encode(&self, id: u32, out: &mut Vec<u8>) {
        out.push(FORMAT);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&(self.pk_index() as u16).to_be_bytes());
        out.extend_from_slice(&(self.columns.len() as u16).to_be_bytes());
        for c in &self.columns {
            out.push(c.ty.code());
            out.push(u8::from(c.nullable));
            out.push(c.name.len() as u8);
            out.extend_from_slice(c.name.as_bytes());
        }
    }

    pub(crate) fn decode(raw: &[u8]) -> Result<(u32, Schema)> {
        let bad = || Error::corruption("table catalog entry is malformed");
        let mut r = Reader(raw);
        if r.take(1).ok_or_else(bad)?[0] != FORMAT {
            return Err(Error::corruption(
                "table catalog entry has an unknown format",
            ));
        }
        let id = u32::from_be_bytes(r.take(4).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let pk = u16::from_be_bytes(r.take(2).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let n = u16::from_be_bytes(r.take(2).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let mut columns = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let h = r.take(3).ok_or_else(bad)?;
            let (ty, nullable, len) = (ColumnType::from_code(h[0])?, h[1] != 0, h[2] as usize);
            let name = std::str::from_utf8(r.take(len).ok_or_else(bad)?).map_err(|_| bad())?;
            columns.push(ColumnDef {
                name: name.to_string(),
                ty,
                nullable,
            });
        }
        let primary_key = columns.get(pk as usize).ok_or_else(bad)?.name.clone();
        Ok((
            id,
            Schema {
                columns,
                primary_key,
            },
        ))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
}
