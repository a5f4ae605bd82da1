//! Legacy SQLite rows → domain types, one generic mapping per table.
//!
//! Every column of every row the store reads goes through
//! `crate::row::convert_value`, driven by the table's description in
//! `crate::tables`, so the store judges a legacy value exactly as the
//! backfill and the audit do: a timestamp in any accepted form reads, a bad
//! value fails with `Error::InvalidValue` naming table, key and column.
//! Queries select the table's columns in its described order
//! (`decode::select`); each domain type then takes its cells by column
//! name (`decode::FromCells`, shared with `pg/row.rs`), so there is no
//! per-query mapping code.

use rusqlite::{Connection, Params, Row};

use crate::convert::Raw;
pub(crate) use crate::decode::FromCells;
use crate::decode::{select, Cells};
use crate::error::{Error, Result};
use crate::row::{convert_value, key_text};

/// Converts one row selected by [`select`]; a bad value names the row's key.
pub(crate) fn read<T: FromCells>(row: &Row<'_>) -> Result<T> {
    let table = T::TABLE;
    let mut cells = Vec::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        match convert_value(column, Raw::from(row.get_ref(i)?)) {
            Ok(cell) => cells.push(cell),
            Err(e) => {
                let pk = table.key_index();
                return Err(Error::InvalidValue {
                    table: table.name,
                    key: key_text(Raw::from(row.get_ref(pk)?)),
                    column: e.column,
                    reason: e.reason,
                    detail: e.detail,
                });
            }
        }
    }
    Ok(T::from_cells(Cells::new(table, cells)))
}

/// Every row of `T`'s table matching `rest` (a WHERE / ORDER BY clause).
pub(crate) fn all<T: FromCells>(c: &Connection, rest: &str, params: impl Params) -> Result<Vec<T>> {
    let mut stmt = c.prepare_cached(&select::<T>(rest))?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        match read(row) {
            Ok(v) => out.push(v),
            // A legacy row that cannot be converted exactly is one the
            // backfill rejects: PostgreSQL never holds it. List queries skip
            // it (loudly) so both sides answer the same set and one bad row
            // does not take down a whole timeline or search; single-row
            // reads still fail with the error naming table, key and column.
            Err(e @ Error::InvalidValue { .. }) => {
                tracing::debug!(error = %e, "legacy row skipped by a list query: it cannot be converted exactly");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The first row of `T`'s table matching `rest`, if any.
pub(crate) fn first<T: FromCells>(
    c: &Connection,
    rest: &str,
    params: impl Params,
) -> Result<Option<T>> {
    let mut stmt = c.prepare_cached(&select::<T>(rest))?;
    let mut rows = stmt.query(params)?;
    match rows.next()? {
        Some(row) => read(row).map(Some),
        None => Ok(None),
    }
}

/// The row of `T`'s table with primary key `key`.
pub(crate) fn by_key<T: FromCells>(c: &Connection, key: impl rusqlite::ToSql) -> Result<Option<T>> {
    first(
        c,
        &format!("WHERE {} = ?1", T::TABLE.primary_key),
        rusqlite::params![key],
    )
}
