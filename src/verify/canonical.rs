//! The canonical row form both databases compute, byte for byte.
//!
//! A row's canonical line is its columns' canonical fields joined by tabs; a
//! chunk's checksum is the MD5 of its lines, ordered by key, joined by
//! newlines. PostgreSQL computes it in SQL ([`pg_line_expr`]); SQLite computes
//! it inside SQLite through two functions registered here
//! (`cutover_canon`, `cutover_md5`) that convert legacy values with
//! `row::convert_value`, so every legacy timestamp form lands on the same
//! epoch microseconds PostgreSQL's `timestamptz` prints.
//!
//! Fields: NULL is `\N`; a value that does not convert is `\!` (so its chunk
//! never matches and the row-level diff judges it); text and JSON escape
//! `\`, tab and newline; timestamps are epoch microseconds; booleans are
//! `true`/`false`; JSON is rendered as PostgreSQL prints `jsonb`.
//!
//! The checksum only decides which chunks need a closer look: a chunk whose
//! JSON PostgreSQL happens to print differently (say `1.50` stored verbatim)
//! is compared row by row on domain values, so a rendering gap costs time,
//! never correctness.

use std::fmt::Write as _;

use md5::{Digest, Md5};
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use serde_json::Value;

use crate::convert::Raw;
use crate::row::{convert_value, Cell};
use crate::tables::{Kind, Table};

/// The field of a NULL.
pub const NULL_FIELD: &str = "\\N";
/// The field of a value that does not convert.
pub const INVALID_FIELD: &str = "\\!";

fn escape_into(out: &mut String, s: &str) {
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Appends one cell's canonical field.
pub fn push_field(out: &mut String, cell: &Cell) {
    match cell {
        Cell::Null => out.push_str(NULL_FIELD),
        Cell::Text(s) => escape_into(out, s),
        Cell::Status(s) => escape_into(out, s.as_str()),
        Cell::Timestamp(t) => {
            let _ = write!(out, "{}", t.timestamp_micros());
        }
        Cell::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Json(v) => escape_into(out, &jsonb_text(v)),
    }
}

/// The canonical line of a converted row (cells in column order).
pub fn line(cells: &[Cell]) -> String {
    let mut out = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        push_field(&mut out, c);
    }
    out
}

/// The MD5 (lower-case hex) of lines joined by newlines; `None` for no lines,
/// as PostgreSQL's `md5(string_agg(...))` over no rows is NULL.
pub fn chunk_hash<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut h = Md5::new();
    let mut any = false;
    for l in lines {
        if any {
            h.update(b"\n");
        }
        h.update(l.as_bytes());
        any = true;
    }
    any.then(|| {
        h.finalize()
            .iter()
            .fold(String::with_capacity(32), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    })
}

/// The SQL expression of one column's canonical field on PostgreSQL.
fn pg_field_expr(name: &str, kind: Kind) -> String {
    let escape =
        |e: String| format!(r"replace(replace(replace({e}, '\', '\\'), E'\t', '\t'), E'\n', '\n')");
    let value = match kind {
        Kind::Text | Kind::Status => escape(format!("{name}::text")),
        Kind::Json => escape(format!("{name}::text")),
        Kind::Int => format!("{name}::text"),
        Kind::Bool => format!("{name}::text"),
        // Exact integer arithmetic: extract() of whole seconds, plus the
        // microseconds of the seconds field (never a float multiplication).
        Kind::Timestamp => format!(
            "((extract(epoch from date_trunc('second', {name})))::bigint * 1000000 \
             + (extract(microseconds from {name}))::bigint % 1000000)::text"
        ),
    };
    format!(r"coalesce({value}, '\N')")
}

/// The SQL expression of a row's canonical line on PostgreSQL.
pub fn pg_line_expr(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| pg_field_expr(c.name, c.kind))
        .collect::<Vec<_>>()
        .join(" || E'\\t' || ")
}

/// Renders a JSON value exactly as PostgreSQL prints the `jsonb` it is stored
/// as: object keys ordered by (byte length, bytes), `", "` and `": "`
/// separators, numbers as `numeric` prints them.
pub fn jsonb_text(v: &Value) -> String {
    let mut out = String::new();
    render(&mut out, v);
    out
}

fn render(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&numeric_text(&n.to_string())),
        Value::String(s) => render_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render(out, x);
            }
            out.push(']');
        }
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort_by(|a, b| {
                a.len()
                    .cmp(&b.len())
                    .then_with(|| a.as_bytes().cmp(b.as_bytes()))
            });
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_string(out, k);
                out.push_str(": ");
                render(out, &o[k]);
            }
            out.push('}');
        }
    }
}

/// PostgreSQL's `escape_json`.
fn render_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

pub use crate::convert::numeric_text;

/// The canonical line of a legacy row as SQLite holds it (values in column
/// order); a value that does not convert becomes [`INVALID_FIELD`].
pub fn legacy_line(table: &'static Table, raws: &[Raw<'_>]) -> String {
    let mut out = String::new();
    for (i, (c, raw)) in table.columns.iter().zip(raws).enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match convert_value(c, *raw) {
            Ok(cell) => push_field(&mut out, &cell),
            Err(_) => out.push_str(INVALID_FIELD),
        }
    }
    out
}

/// A key in the order both databases sort it: integers numerically, text by
/// bytes (PostgreSQL `COLLATE "C"`, SQLite `BINARY`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SortKey {
    /// An integer key.
    Int(i64),
    /// A text (or blob) key, by bytes.
    Bytes(Vec<u8>),
}

impl SortKey {
    /// The key of a SQLite value.
    pub fn from_raw(raw: Raw<'_>) -> SortKey {
        match raw {
            Raw::Integer(i) => SortKey::Int(i),
            Raw::Text(b) | Raw::Blob(b) => SortKey::Bytes(b.to_vec()),
            Raw::Real(f) => SortKey::Bytes(format!("{f:?}").into_bytes()),
            Raw::Null => SortKey::Bytes(Vec::new()),
        }
    }
}

/// `cutover_md5(key, line)`: the chunk checksum, ordered by key inside the
/// aggregate so it never depends on the order SQLite feeds rows in.
struct Md5Agg;

impl Aggregate<Vec<(SortKey, String)>, Option<String>> for Md5Agg {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<(SortKey, String)>> {
        Ok(Vec::new())
    }

    fn step(
        &self,
        ctx: &mut Context<'_>,
        acc: &mut Vec<(SortKey, String)>,
    ) -> rusqlite::Result<()> {
        let key = SortKey::from_raw(Raw::from(ctx.get_raw(0)));
        let line: String = ctx.get(1)?;
        acc.push((key, line));
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<Vec<(SortKey, String)>>,
    ) -> rusqlite::Result<Option<String>> {
        let mut acc = acc.unwrap_or_default();
        acc.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(chunk_hash(acc.iter().map(|(_, l)| l.as_str())))
    }
}

/// Registers `cutover_canon(table, col...)` and `cutover_md5(key, line)` on
/// a SQLite connection.
pub fn register(
    conn: &rusqlite::Connection,
    schema: &'static crate::tables::Schema,
) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("cutover_canon", -1, flags, |ctx| {
        let name: String = ctx.get(0)?;
        let table = schema.by_name(&name).ok_or_else(|| {
            rusqlite::Error::UserFunctionError(
                format!("cutover_canon: unknown table {name}").into(),
            )
        })?;
        if ctx.len() != table.columns.len() + 1 {
            return Err(rusqlite::Error::UserFunctionError(
                format!("cutover_canon: {name} has {} columns", table.columns.len()).into(),
            ));
        }
        let raws: Vec<Raw<'_>> = (1..ctx.len()).map(|i| Raw::from(ctx.get_raw(i))).collect();
        Ok(legacy_line(table, &raws))
    })?;
    conn.create_aggregate_function("cutover_md5", 2, flags, Md5Agg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numeric_forms() {
        for (text, want) in [
            ("1", "1"),
            ("1.0", "1.0"),
            ("1.50", "1.50"),
            ("-0.0", "0.0"),
            ("1e3", "1000"),
            ("1.5e1", "15"),
            ("1.25e1", "12.5"),
            ("1e-7", "0.0000001"),
            ("-1.5e-3", "-0.0015"),
            ("123.456", "123.456"),
            ("0.001", "0.001"),
        ] {
            assert_eq!(numeric_text(text), want, "{text}");
        }
    }

    #[test]
    fn jsonb_key_order_and_spacing() {
        let v = json!({"bb": 1, "a": [1, {"z": null, "yy": true}], "c": "x\ny\u{1}\"é"});
        assert_eq!(
            jsonb_text(&v),
            "{\"a\": [1, {\"z\": null, \"yy\": true}], \"c\": \"x\\ny\\u0001\\\"é\", \"bb\": 1}"
        );
    }
}
