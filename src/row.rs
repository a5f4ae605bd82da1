//! Whole legacy rows: conversion under a policy, keys, and the original image.
//!
//! The backfill, the audit and verify judge a legacy row here, so they agree
//! on what is copied, what is nulled and what is rejected. The original image
//! (`original_image`) keeps every value byte for byte, so a rejected row can
//! be restored exactly (`restore_image`).

use serde_json::{json, Map, Value};

use crate::convert::{self, Raw, RejectReason, ValueError};
use crate::model::{JobStatus, Timestamp};
use crate::tables::{Kind, Table};

/// A converted value, typed by its column's `Kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// Text.
    Text(String),
    /// Timestamp (UTC, microseconds).
    Timestamp(Timestamp),
    /// Boolean.
    Bool(bool),
    /// JSON.
    Json(Value),
    /// 32-bit integer.
    Int(i32),
    /// Job status.
    Status(JobStatus),
}

/// What to do with a bad value in a nullable column (`--on-bad-value`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Reject the whole row (default).
    #[default]
    RejectRow,
    /// Store NULL in a nullable column and record the original; a bad value
    /// in a NOT NULL column still rejects the row.
    NullAndRecord,
}

impl Policy {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::RejectRow => "reject-row",
            Policy::NullAndRecord => "null-and-record",
        }
    }

    /// Parses the flag value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reject-row" => Some(Policy::RejectRow),
            "null-and-record" => Some(Policy::NullAndRecord),
            _ => None,
        }
    }
}

/// A row that converted (possibly with values nulled under `NullAndRecord`).
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    /// One cell per column of the table, in order.
    pub cells: Vec<Cell>,
    /// Values replaced by NULL; each must be recorded in `cutover.rejects`.
    pub nulled: Vec<ValueError>,
}

/// Converts one value of `column`'s kind; NOT NULL and length are checked here too.
pub fn convert_value(
    column: &'static crate::tables::Column,
    raw: Raw<'_>,
) -> Result<Cell, ValueError> {
    let name = column.name;
    let cell = match column.kind {
        Kind::Text => convert::text(name, raw)?.map(Cell::Text),
        Kind::Timestamp => convert::timestamp(name, raw)?.map(Cell::Timestamp),
        Kind::Bool => convert::boolean(name, raw)?.map(Cell::Bool),
        Kind::Json => convert::json(name, raw)?.map(Cell::Json),
        Kind::Int => convert::integer(name, raw)?.map(Cell::Int),
        Kind::Status => convert::status(name, raw)?.map(Cell::Status),
    }
    .unwrap_or(Cell::Null);
    if cell == Cell::Null && !column.nullable {
        return Err(ValueError {
            column: name,
            reason: RejectReason::NotNull,
            detail: "NULL in a NOT NULL column".into(),
        });
    }
    if let (Cell::Text(s), Some(max)) = (&cell, column.max_len) {
        let n = s.chars().count();
        if n > max as usize {
            return Err(ValueError {
                column: name,
                reason: RejectReason::CheckViolation,
                detail: format!("{n} characters, longer than VARCHAR({max})"),
            });
        }
    }
    Ok(cell)
}

/// Converts a legacy row (values in the table's column order) under `policy`.
/// `Err` holds every problem that rejects the row (the first is the reason recorded).
pub fn convert_row(
    table: &'static Table,
    raws: &[Raw<'_>],
    policy: Policy,
) -> Result<Converted, Vec<ValueError>> {
    debug_assert_eq!(raws.len(), table.columns.len());
    let mut cells = Vec::with_capacity(raws.len());
    let mut nulled = Vec::new();
    let mut fatal = Vec::new();
    for (column, raw) in table.columns.iter().zip(raws) {
        match convert_value(column, *raw) {
            Ok(c) => cells.push(c),
            Err(e) => {
                let key_like = column.name == table.primary_key
                    || table.foreign_keys.iter().any(|f| f.column == column.name);
                if policy == Policy::NullAndRecord
                    && column.nullable
                    && !key_like
                    && e.reason != RejectReason::NotNull
                {
                    nulled.push(e);
                    cells.push(Cell::Null);
                } else {
                    fatal.push(e);
                    cells.push(Cell::Null);
                }
            }
        }
    }
    if fatal.is_empty() {
        Ok(Converted { cells, nulled })
    } else {
        Err(fatal)
    }
}

/// The primary key as text, as `cutover.rejects.row_key` and verify name it.
/// Text that is not printable UTF-8 is escaped (the image keeps the bytes).
pub fn key_text(raw: Raw<'_>) -> String {
    match raw {
        Raw::Null => "NULL".into(),
        Raw::Integer(i) => i.to_string(),
        Raw::Real(f) => format!("{f:?}"),
        Raw::Text(b) | Raw::Blob(b) => match std::str::from_utf8(b) {
            Ok(s) if !s.contains('\0') => s.to_string(),
            _ => b
                .iter()
                .flat_map(|&c| std::ascii::escape_default(c))
                .map(char::from)
                .collect(),
        },
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The row exactly as SQLite holds it, as JSON: per column its `typeof` and
/// value; text that is not UTF-8 or holds NUL, and blobs, as hex.
pub fn original_image(table: &Table, raws: &[Raw<'_>]) -> Value {
    let mut m = Map::new();
    for (c, raw) in table.columns.iter().zip(raws) {
        let v = match raw {
            Raw::Null => json!({"type": "null"}),
            Raw::Integer(i) => json!({"type": "integer", "value": i}),
            Raw::Real(f) if f.is_finite() => json!({"type": "real", "value": f}),
            Raw::Real(f) => json!({"type": "real", "bits": f.to_bits().to_string()}),
            Raw::Text(b) => match std::str::from_utf8(b) {
                Ok(s) if !s.contains('\0') => json!({"type": "text", "value": s}),
                _ => json!({"type": "text", "hex": hex(b)}),
            },
            Raw::Blob(b) => json!({"type": "blob", "hex": hex(b)}),
        };
        m.insert(c.name.to_string(), v);
    }
    Value::Object(m)
}

/// An owned SQLite value, restored from an image.
#[derive(Debug, Clone, PartialEq)]
pub enum OwnedRaw {
    /// NULL.
    Null,
    /// Integer.
    Integer(i64),
    /// Real.
    Real(f64),
    /// Text bytes (maybe not UTF-8).
    Text(Vec<u8>),
    /// Blob.
    Blob(Vec<u8>),
}

impl OwnedRaw {
    /// Borrows as a `Raw`.
    pub fn as_raw(&self) -> Raw<'_> {
        match self {
            OwnedRaw::Null => Raw::Null,
            OwnedRaw::Integer(i) => Raw::Integer(*i),
            OwnedRaw::Real(f) => Raw::Real(*f),
            OwnedRaw::Text(b) => Raw::Text(b),
            OwnedRaw::Blob(b) => Raw::Blob(b),
        }
    }
}

/// Inverse of `original_image`: the values in the table's column order.
pub fn restore_image(table: &Table, image: &Value) -> Option<Vec<OwnedRaw>> {
    table
        .columns
        .iter()
        .map(|c| {
            let v = image.get(c.name)?;
            Some(match v.get("type")?.as_str()? {
                "null" => OwnedRaw::Null,
                "integer" => OwnedRaw::Integer(v.get("value")?.as_i64()?),
                "real" => match v.get("value") {
                    Some(x) => OwnedRaw::Real(x.as_f64()?),
                    None => OwnedRaw::Real(f64::from_bits(v.get("bits")?.as_str()?.parse().ok()?)),
                },
                "text" => match v.get("value") {
                    Some(s) => OwnedRaw::Text(s.as_str()?.as_bytes().to_vec()),
                    None => OwnedRaw::Text(unhex(v.get("hex")?.as_str()?)?),
                },
                "blob" => OwnedRaw::Blob(unhex(v.get("hex")?.as_str()?)?),
                _ => return None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::TWEETS;

    #[test]
    fn image_round_trips_bytes() {
        let raws = [
            Raw::Text(b"t1"),
            Raw::Text(b"u\xff1"),
            Raw::Text(b"a\0b"),
            Raw::Integer(1_700_000_000_000),
            Raw::Null,
            Raw::Text(b"true"),
            Raw::Blob(b"\x00\x01"),
            Raw::Real(1.5),
        ];
        let img = original_image(&TWEETS, &raws);
        let back = restore_image(&TWEETS, &img).unwrap();
        let back: Vec<Raw<'_>> = back.iter().map(OwnedRaw::as_raw).collect();
        assert_eq!(back, raws);
    }

    #[test]
    fn policy_nulls_only_nullable_columns() {
        let raws = [
            Raw::Text(b"t1"),
            Raw::Text(b"u1"),
            Raw::Text(b"hello"),
            Raw::Text(b"2020-01-01 00:00:00"),
            Raw::Null,
            Raw::Text(b"maybe"),
            Raw::Text(b"{"),
            Raw::Null,
        ];
        let errs = convert_row(&TWEETS, &raws, Policy::RejectRow).unwrap_err();
        assert_eq!(errs.len(), 2);
        let ok = convert_row(&TWEETS, &raws, Policy::NullAndRecord).unwrap();
        assert_eq!(ok.nulled.len(), 2);
        assert_eq!(ok.cells[5], Cell::Null);
        let mut bad_ts = raws;
        bad_ts[3] = Raw::Text(b"never");
        let errs = convert_row(&TWEETS, &bad_ts, Policy::NullAndRecord).unwrap_err();
        assert_eq!(errs[0].reason, RejectReason::InvalidTimestamp);
    }
}
