//! PostgreSQL rows → domain types, through the table's description: a row
//! selected as the table's columns (`{cols}` in the store's query texts,
//! `decode::query_text`) becomes `Cell`s by column kind
//! (`image::pg_image`), from which each domain type takes its fields by
//! name (`decode::FromCells`, shared with `sqlite/row.rs`).

use sqlx::postgres::PgRow;

use crate::decode::{Cells, FromCells};
use crate::error::Result;

/// Decodes one row selected as `T`'s columns, in the table's order.
pub(super) fn decode<T: FromCells>(r: &PgRow) -> Result<T> {
    let cells = crate::image::pg_image(T::TABLE, r)?;
    Ok(T::from_cells(Cells::new(T::TABLE, cells)))
}

/// Decodes every row.
pub(super) fn all<T: FromCells>(rows: &[PgRow]) -> Result<Vec<T>> {
    rows.iter().map(decode).collect()
}
