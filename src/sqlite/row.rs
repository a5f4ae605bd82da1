//! Legacy SQLite rows → domain types, one generic mapping per table.
//!
//! Every column of every row the store reads goes through
//! `crate::row::convert_value`, driven by the table's description in
//! `crate::tables`, so the store judges a legacy value exactly as the
//! backfill and the audit do: a timestamp in any accepted form reads, a bad
//! value fails with `Error::InvalidValue` naming table, key and column.
//! Queries select the table's columns in its described order
//! ([`select`]); each domain type then takes its cells in that order
//! ([`FromCells`]), so there is no per-query mapping code.

use rusqlite::{Connection, Params, Row};
use serde_json::Value;

use crate::convert::Raw;
use crate::error::{Error, Result};
use crate::model::*;
use crate::row::{convert_value, key_text, Cell};
use crate::tables::{self, Table};

/// The converted cells of one row, taken in the table's column order.
pub(crate) struct Cells(std::vec::IntoIter<Cell>);

// The kind of each cell is guaranteed by `convert_value` (it yields the
// variant of the column's `Kind`, and `Null` only for nullable columns), so
// a mismatch below is a programming error in a `FromCells` impl, not bad data.
const KIND: &str = "cell kind is fixed by the column description";

impl Cells {
    fn next(&mut self) -> Cell {
        self.0.next().expect("one cell per column")
    }

    fn opt_text(&mut self) -> Option<String> {
        match self.next() {
            Cell::Null => None,
            Cell::Text(s) => Some(s),
            _ => unreachable!("{KIND}"),
        }
    }

    fn text(&mut self) -> String {
        self.opt_text().expect(KIND)
    }

    fn opt_ts(&mut self) -> Option<Timestamp> {
        match self.next() {
            Cell::Null => None,
            Cell::Timestamp(t) => Some(t),
            _ => unreachable!("{KIND}"),
        }
    }

    fn ts(&mut self) -> Timestamp {
        self.opt_ts().expect(KIND)
    }

    fn opt_json(&mut self) -> Option<Value> {
        match self.next() {
            Cell::Null => None,
            Cell::Json(v) => Some(v),
            _ => unreachable!("{KIND}"),
        }
    }

    fn json(&mut self) -> Value {
        self.opt_json().expect(KIND)
    }

    fn opt_int(&mut self) -> Option<i32> {
        match self.next() {
            Cell::Null => None,
            Cell::Int(i) => Some(i),
            _ => unreachable!("{KIND}"),
        }
    }

    fn int(&mut self) -> i32 {
        self.opt_int().expect(KIND)
    }

    fn opt_bool(&mut self) -> Option<bool> {
        match self.next() {
            Cell::Null => None,
            Cell::Bool(b) => Some(b),
            _ => unreachable!("{KIND}"),
        }
    }

    fn status(&mut self) -> JobStatus {
        match self.next() {
            Cell::Status(s) => s,
            _ => unreachable!("{KIND}"),
        }
    }
}

/// A domain type built from the converted cells of one row of `TABLE`.
pub(crate) trait FromCells: Sized {
    /// The table whose rows this type holds.
    const TABLE: &'static Table;
    /// Builds the value from the cells, in the table's column order.
    fn from_cells(c: Cells) -> Self;
}

impl FromCells for User {
    const TABLE: &'static Table = &tables::USERS;
    fn from_cells(mut c: Cells) -> Self {
        User {
            id: c.text(),
            username: c.text(),
            profile_data: c.opt_json(),
            profile_picture_url: c.opt_text(),
            last_scraped: c.opt_ts(),
            created_at: c.opt_ts(),
        }
    }
}

impl FromCells for Tweet {
    const TABLE: &'static Table = &tables::TWEETS;
    fn from_cells(mut c: Cells) -> Self {
        Tweet {
            id: c.text(),
            user_id: c.text(),
            text: c.text(),
            created_at: c.ts(),
            url: c.opt_text(),
            is_reply: c.opt_bool(),
            metadata: c.opt_json(),
            created_in_db: c.opt_ts(),
        }
    }
}

impl FromCells for PersonalityAnalysis {
    const TABLE: &'static Table = &tables::PERSONALITY_ANALYSIS;
    fn from_cells(mut c: Cells) -> Self {
        PersonalityAnalysis {
            id: c.text(),
            user_id: c.text(),
            traits: c.json(),
            interests: c.json(),
            communication_style: c.json(),
            analyzed_at: c.opt_ts(),
        }
    }
}

impl FromCells for FunnelProgress {
    const TABLE: &'static Table = &tables::FUNNEL_PROGRESS;
    fn from_cells(mut c: Cells) -> Self {
        FunnelProgress {
            user_id: c.text(),
            current_command_index: c.opt_int(),
            completed_commands: c.opt_json(),
            command_responses: c.opt_json(),
            last_updated: c.opt_ts(),
        }
    }
}

impl FromCells for FunnelCompletion {
    const TABLE: &'static Table = &tables::FUNNEL_COMPLETION;
    fn from_cells(mut c: Cells) -> Self {
        FunnelCompletion {
            user_id: c.text(),
            completed_at: c.opt_ts(),
            completion_data: c.opt_json(),
        }
    }
}

impl FromCells for ReferralCode {
    const TABLE: &'static Table = &tables::REFERRAL_CODES;
    fn from_cells(mut c: Cells) -> Self {
        ReferralCode {
            code: c.text(),
            owner_user_id: c.text(),
            usage_count: c.opt_int(),
            created_at: c.opt_ts(),
        }
    }
}

impl FromCells for Referral {
    const TABLE: &'static Table = &tables::REFERRAL_TRACKING;
    fn from_cells(mut c: Cells) -> Self {
        Referral {
            id: c.int(),
            referral_code: c.text(),
            referrer_user_id: c.text(),
            referred_user_id: c.text(),
            used_at: c.opt_ts(),
        }
    }
}

impl FromCells for ReferralUsage {
    const TABLE: &'static Table = &tables::REFERRAL_USAGE_LOG;
    fn from_cells(mut c: Cells) -> Self {
        ReferralUsage {
            id: c.int(),
            referral_code: c.text(),
            used_by_user_id: c.text(),
            used_at: c.opt_ts(),
        }
    }
}

impl FromCells for Job {
    const TABLE: &'static Table = &tables::ANALYSIS_QUEUE;
    fn from_cells(mut c: Cells) -> Self {
        Job {
            job_id: c.int(),
            user_id: c.text(),
            status: c.status(),
            priority: c.opt_int(),
            total_chunks: c.int(),
            processed_chunks: c.opt_int(),
            created_at: c.opt_ts(),
            started_at: c.opt_ts(),
            completed_at: c.opt_ts(),
            error: c.opt_text(),
        }
    }
}

impl FromCells for Chunk {
    const TABLE: &'static Table = &tables::ANALYSIS_CHUNKS;
    fn from_cells(mut c: Cells) -> Self {
        Chunk {
            chunk_id: c.int(),
            job_id: c.opt_int(),
            chunk_index: c.int(),
            tweet_count: c.int(),
            status: c.status(),
            started_at: c.opt_ts(),
            completed_at: c.opt_ts(),
            result: c.opt_json(),
            error: c.opt_text(),
        }
    }
}

/// `SELECT <every column in order> FROM <table> <rest>`.
pub(crate) fn select<T: FromCells>(rest: &str) -> String {
    format!(
        "SELECT {} FROM {} {rest}",
        T::TABLE.column_list(),
        T::TABLE.name
    )
}

/// Converts one row selected by [`select`]; a bad value names the row's key.
pub(crate) fn read<T: FromCells>(row: &Row<'_>) -> Result<T> {
    let table = T::TABLE;
    let mut cells = Vec::with_capacity(table.columns.len());
    for (i, column) in table.columns.iter().enumerate() {
        match convert_value(column, Raw::from(row.get_ref(i)?)) {
            Ok(cell) => cells.push(cell),
            Err(e) => {
                let pk = table
                    .columns
                    .iter()
                    .position(|c| c.name == table.primary_key)
                    .expect("primary key is a column");
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
    Ok(T::from_cells(Cells(cells.into_iter())))
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
