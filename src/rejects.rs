//! `cutover.rejects`: legacy rows (or values) that could not be copied exactly.
//!
//! The backfill records here every row it rejects and, under
//! `null-and-record`, every value it replaced by NULL (docs/DESIGN.md §5). Each entry
//! keeps the whole source row as `crate::row::original_image`, so the row can
//! be restored byte for byte with `crate::row::restore_image`; verify and the
//! audit read the ledger back through [`list`] and [`counts`].

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::PgConnection;

use crate::convert::RejectReason;
use crate::error::Result;
use crate::row::Policy;

/// One entry of `cutover.rejects`.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectRecord {
    /// Source table.
    pub table: String,
    /// The primary key as text (`crate::row::key_text`); a NULL key is
    /// written `NULL#rowid=N` so two NULL-keyed rows stay apart.
    pub row_key: String,
    /// The SQLite rowid of the source row.
    pub source_rowid: Option<i64>,
    /// The column at fault (the foreign-key column for an orphan).
    pub column: String,
    /// Classification.
    pub reason: RejectReason,
    /// What was wrong, with the offending value escaped.
    pub detail: String,
    /// The policy in force when the entry was recorded.
    pub policy: Policy,
    /// True when the row was copied with this value nulled.
    pub row_copied: bool,
    /// The source row as `crate::row::original_image` made it.
    pub original: Value,
}

/// Inserts entries in one statement. An entry already recorded for the same
/// source row (table and rowid; table and key when there is no rowid) and
/// column is left as it is (a rerun records nothing twice).
/// Returns how many were new.
pub async fn insert(conn: &mut PgConnection, records: &[RejectRecord]) -> Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    let mut tables = Vec::with_capacity(records.len());
    let mut keys = Vec::with_capacity(records.len());
    let mut rowids = Vec::with_capacity(records.len());
    let mut columns = Vec::with_capacity(records.len());
    let mut reasons = Vec::with_capacity(records.len());
    let mut details = Vec::with_capacity(records.len());
    let mut policies = Vec::with_capacity(records.len());
    let mut copied = Vec::with_capacity(records.len());
    let mut originals = Vec::with_capacity(records.len());
    for r in records {
        tables.push(r.table.clone());
        keys.push(r.row_key.clone());
        rowids.push(r.source_rowid);
        columns.push(r.column.clone());
        reasons.push(r.reason.as_str().to_string());
        details.push(r.detail.clone());
        policies.push(r.policy.as_str().to_string());
        copied.push(r.row_copied);
        originals.push(r.original.to_string());
    }
    let done = sqlx::query(
        "INSERT INTO cutover.rejects
             (table_name, row_key, source_rowid, column_name, reason, detail, policy, row_copied, original)
         SELECT t, k, r, c, reason, d, p, rc, o::jsonb
         FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::bool[], $9::text[]) AS x(t, k, r, c, reason, d, p, rc, o)
         ON CONFLICT DO NOTHING",
    )
    .bind(tables)
    .bind(keys)
    .bind(rowids)
    .bind(columns)
    .bind(reasons)
    .bind(details)
    .bind(policies)
    .bind(copied)
    .bind(originals)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Every entry recorded for `table`, in the order they were recorded.
pub async fn list(conn: &mut PgConnection, table: &str) -> Result<Vec<RejectRecord>> {
    type Row = (
        String,
        String,
        Option<i64>,
        Option<String>,
        String,
        Option<String>,
        String,
        bool,
        Value,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT table_name, row_key, source_rowid, column_name, reason, detail, policy,
                row_copied, original
         FROM cutover.rejects WHERE table_name = $1 ORDER BY id",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, k, rowid, c, reason, d, p, rc, o)| RejectRecord {
            table: t,
            row_key: k,
            source_rowid: rowid,
            column: c.unwrap_or_default(),
            // The CHECK constraint only admits known reasons.
            reason: RejectReason::parse(&reason).unwrap_or(RejectReason::CheckViolation),
            detail: d.unwrap_or_default(),
            policy: Policy::parse(&p).unwrap_or_default(),
            row_copied: rc,
            original: o,
        })
        .collect())
}

/// Rows of `table` rejected (not copied), by reason: one per source row,
/// counted by the first reason recorded for it.
pub async fn counts(conn: &mut PgConnection, table: &str) -> Result<BTreeMap<RejectReason, u64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT reason, count(*) FROM (
             SELECT DISTINCT ON (row_key, source_rowid) reason
             FROM cutover.rejects WHERE table_name = $1 AND NOT row_copied
             ORDER BY row_key, source_rowid, id) r
         GROUP BY reason",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(r, n)| Some((RejectReason::parse(&r)?, n as u64)))
        .collect())
}

/// Which of the (table, key) pairs have an entry in `cutover.rejects`.
pub async fn recorded<'c, E>(
    exec: E,
    keys: &[(&str, &str)],
) -> Result<std::collections::HashSet<(String, String)>>
where
    E: sqlx::PgExecutor<'c>,
{
    let (tables, keys): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT u.t, u.k FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
         JOIN cutover.rejects r ON r.table_name = u.t AND r.row_key = u.k",
    )
    .bind(&tables)
    .bind(&keys)
    .fetch_all(exec)
    .await?;
    Ok(found.into_iter().collect())
}

/// How many of the (table, key) pairs have an entry in `cutover.rejects`
/// (each pair counted once).
pub async fn count_recorded<'c, E>(exec: E, keys: &[(&str, &str)]) -> Result<i64>
where
    E: sqlx::PgExecutor<'c>,
{
    Ok(recorded(exec, keys).await?.len() as i64)
}
