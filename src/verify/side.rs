//! Reading one table from either database by key range: boundary keys,
//! chunk checksums (computed inside each database), and rows.
//!
//! Both sides are driven by the same `Table` description; a key range is
//! `(lo, hi]` with either end open, in the order both databases agree on.

use rusqlite::types::Value as SqlValue;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::canonical::{pg_line_expr, SortKey};
use crate::convert::Raw;
use crate::error::Result;
use crate::model::JobStatus;
use crate::row::{Cell, OwnedRaw};
use crate::tables::{Kind, Table};

/// A key range `(lo, hi]`; `None` is open.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// Exclusive lower bound.
    pub lo: Option<SortKey>,
    /// Inclusive upper bound.
    pub hi: Option<SortKey>,
}

/// A row as SQLite holds it.
#[derive(Debug, Clone)]
pub struct LegacyRow {
    /// The key in sort order.
    pub sort: SortKey,
    /// The key as `cutover.rejects.row_key` names it.
    pub key_text: String,
    /// Every column, as stored.
    pub raws: Vec<OwnedRaw>,
}

impl LegacyRow {
    /// Borrowed values.
    pub fn raw_values(&self) -> Vec<Raw<'_>> {
        self.raws.iter().map(OwnedRaw::as_raw).collect()
    }
}

/// The key as text, for reports and `cutover.rejects.row_key`.
pub fn sort_key_text(k: &SortKey) -> String {
    match k {
        SortKey::Int(i) => i.to_string(),
        SortKey::Bytes(b) => crate::row::key_text(Raw::Text(b)),
    }
}

// ---------------------------------------------------------------- PostgreSQL

/// Whether a text key already sorts by bytes on PostgreSQL (its collation
/// is `C` or `POSIX`), so range scans need no `COLLATE "C"` and use the
/// primary-key index. Under any other collation `COLLATE "C"` keeps the
/// order SQLite uses, at the price of a scan per range.
pub async fn pg_key_sorts_by_bytes(pool: &PgPool, table: &Table) -> Result<bool> {
    if table.serial {
        return Ok(true);
    }
    let c: Option<bool> = sqlx::query_scalar(
        "SELECT CASE WHEN a.attcollation = 100 \
                     THEN d.datlocprovider = 'c' AND d.datcollate IN ('C', 'POSIX') \
                     ELSE c.collname IN ('C', 'POSIX') END \
         FROM pg_attribute a \
         JOIN pg_database d ON d.datname = current_database() \
         LEFT JOIN pg_collation c ON c.oid = a.attcollation \
         WHERE a.attrelid = $1::regclass AND a.attname = $2",
    )
    .bind(table.name)
    .bind(table.primary_key)
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    Ok(c.unwrap_or(false))
}

fn pg_key_expr(table: &Table, by_bytes: bool) -> String {
    if table.serial || by_bytes {
        table.primary_key.to_string()
    } else {
        format!("{} COLLATE \"C\"", table.primary_key)
    }
}

/// `WHERE` clause for a range on PostgreSQL, with its parameters from `$1`.
fn pg_where(table: &Table, range: &Range, by_bytes: bool) -> (String, Vec<SortKey>) {
    let k = pg_key_expr(table, by_bytes);
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    let cast = if table.serial { "bigint" } else { "text" };
    if let Some(lo) = &range.lo {
        binds.push(lo.clone());
        conds.push(format!("{k} > ${}::{cast}", binds.len()));
    }
    if let Some(hi) = &range.hi {
        binds.push(hi.clone());
        conds.push(format!("{k} <= ${}::{cast}", binds.len()));
    }
    if conds.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), binds)
    }
}

fn bind_keys<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    keys: &'q [SortKey],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    for k in keys {
        q = match k {
            SortKey::Int(i) => q.bind(*i),
            SortKey::Bytes(b) => q.bind(String::from_utf8_lossy(b).into_owned()),
        };
    }
    q
}

/// Row count on PostgreSQL.
pub async fn pg_count(pool: &PgPool, table: &Table) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {}", table.name);
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?)
}

fn pg_sort_key(table: &Table, row: &PgRow, idx: usize) -> Result<SortKey> {
    Ok(if table.serial {
        SortKey::Int(i64::from(row.try_get::<i32, _>(idx)?))
    } else {
        SortKey::Bytes(row.try_get::<String, _>(idx)?.into_bytes())
    })
}

/// Every `every`-th key on PostgreSQL, in key order.
pub async fn pg_boundaries(
    pool: &PgPool,
    table: &Table,
    every: i64,
    by_bytes: bool,
) -> Result<Vec<SortKey>> {
    let sql = format!(
        "SELECT k FROM (SELECT {pk} AS k, row_number() OVER (ORDER BY {ord}) AS rn FROM {t}) s \
         WHERE rn % $1 = 0",
        pk = table.primary_key,
        ord = pg_key_expr(table, by_bytes),
        t = table.name
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(every)
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| pg_sort_key(table, r, 0)).collect()
}

/// The checksum and row count of a range, computed by PostgreSQL.
pub async fn pg_chunk(
    pool: &PgPool,
    table: &Table,
    range: &Range,
    by_bytes: bool,
) -> Result<(Option<String>, i64)> {
    let (w, binds) = pg_where(table, range, by_bytes);
    let sql = format!(
        "SELECT md5(string_agg({line}, E'\\n' ORDER BY {ord})), count(*) FROM {t}{w}",
        line = pg_line_expr(table),
        ord = pg_key_expr(table, by_bytes),
        t = table.name
    );
    let row = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql)), &binds)
        .fetch_one(pool)
        .await?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

/// The checksum and row count of every range cut by `bounds` (sorted), in
/// one scan: PostgreSQL assigns each row its range with `width_bucket` (a
/// binary search under `COLLATE "C"`), so no range costs a scan of its own
/// whatever the key's collation. Element `i` is the range
/// `(bounds[i-1], bounds[i]]`.
pub async fn pg_chunks_all(
    pool: &PgPool,
    table: &Table,
    bounds: &[SortKey],
    by_bytes: bool,
) -> Result<Vec<(Option<String>, i64)>> {
    if bounds.is_empty() {
        return Ok(vec![
            pg_chunk(pool, table, &Range::default(), by_bytes).await?,
        ]);
    }
    let (k, arr) = if table.serial {
        (table.primary_key.to_string(), "bigint[]")
    } else {
        (format!("{} COLLATE \"C\"", table.primary_key), "text[]")
    };
    // width_bucket counts the bounds <= k; a range is (lo, hi], so a key
    // equal to a bound belongs one range lower.
    let sql = format!(
        "SELECT b, md5(string_agg(line, E'\\n' ORDER BY k)), count(*) FROM ( \
           SELECT k, line, wb - CASE WHEN wb > 0 AND k = ($1::{arr})[wb] THEN 1 ELSE 0 END AS b FROM ( \
             SELECT {k} AS k, {line} AS line, width_bucket({k}, $1::{arr}) AS wb FROM {t}) s0) s \
         GROUP BY b",
        line = pg_line_expr(table),
        t = table.name
    );
    let q = sqlx::query(sqlx::AssertSqlSafe(sql));
    let q = if table.serial {
        q.bind(
            bounds
                .iter()
                .map(|b| match b {
                    SortKey::Int(i) => *i,
                    SortKey::Bytes(_) => i64::MAX,
                })
                .collect::<Vec<i64>>(),
        )
    } else {
        q.bind(
            bounds
                .iter()
                .map(|b| match b {
                    SortKey::Int(i) => i.to_string(),
                    SortKey::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                })
                .collect::<Vec<String>>(),
        )
    };
    let rows = q.fetch_all(pool).await?;
    let mut out = vec![(None, 0i64); bounds.len() + 1];
    for r in rows {
        let b: i32 = r.try_get(0)?;
        if let Some(slot) = out.get_mut(b as usize) {
            *slot = (r.try_get(1)?, r.try_get(2)?);
        }
    }
    Ok(out)
}

/// Decodes one PostgreSQL row into cells (columns in the table's order).
pub fn pg_cells(table: &Table, row: &PgRow) -> Result<Vec<Cell>> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.kind {
                Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
                Kind::Status => row
                    .try_get::<Option<String>, _>(i)?
                    .map(|s| JobStatus::parse(&s).map_or(Cell::Text(s), Cell::Status)),
                Kind::Timestamp => row
                    .try_get::<Option<chrono::DateTime<chrono::Utc>>, _>(i)?
                    .map(Cell::Timestamp),
                Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
                Kind::Json => row
                    .try_get::<Option<sqlx::types::Json<serde_json::Value>>, _>(i)?
                    .map(|j| Cell::Json(j.0)),
                Kind::Int => row.try_get::<Option<i32>, _>(i)?.map(Cell::Int),
            }
            .unwrap_or(Cell::Null))
        })
        .collect()
}

/// The rows of a range on PostgreSQL, in key order, at most `limit` when set.
pub async fn pg_rows(
    pool: &PgPool,
    table: &Table,
    range: &Range,
    limit: Option<i64>,
    by_bytes: bool,
) -> Result<Vec<(SortKey, Vec<Cell>)>> {
    let (w, binds) = pg_where(table, range, by_bytes);
    let sql = format!(
        "SELECT {cols} FROM {t}{w} ORDER BY {ord}{lim}",
        cols = table.column_list(),
        t = table.name,
        ord = pg_key_expr(table, by_bytes),
        lim = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default()
    );
    let rows = bind_keys(sqlx::query(sqlx::AssertSqlSafe(sql)), &binds)
        .fetch_all(pool)
        .await?;
    let key_idx = table.key_index();
    rows.iter()
        .map(|r| Ok((pg_sort_key(table, r, key_idx)?, pg_cells(table, r)?)))
        .collect()
}

// ---------------------------------------------------------------- SQLite

fn sqlite_where(table: &Table, range: &Range) -> (String, Vec<SqlValue>) {
    let mut conds = Vec::new();
    let mut binds = Vec::new();
    for (bound, op) in [(&range.lo, ">"), (&range.hi, "<=")] {
        if let Some(k) = bound {
            binds.push(match k {
                SortKey::Int(i) => SqlValue::Integer(*i),
                SortKey::Bytes(b) => SqlValue::Text(String::from_utf8_lossy(b).into_owned()),
            });
            conds.push(format!("{} {op} ?{}", table.primary_key, binds.len()));
        }
    }
    // NULL and blob keys sort outside every text range in SQLite (and map
    // elsewhere on PostgreSQL): they are checked one by one, by rowid
    // (`sqlite_odd_rows`), never in a range.
    if !table.serial {
        conds.push(format!("typeof({}) = 'text'", table.primary_key));
    }
    if conds.is_empty() {
        (String::new(), binds)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), binds)
    }
}

/// Row count on SQLite.
pub fn sqlite_count(conn: &rusqlite::Connection, table: &Table) -> Result<i64> {
    Ok(
        conn.query_row(&format!("SELECT count(*) FROM {}", table.name), [], |r| {
            r.get(0)
        })?,
    )
}

/// Every `every`-th key on SQLite, in key order; keys that PostgreSQL could
/// not hold (not UTF-8) are skipped, as they can never be range bounds there.
pub fn sqlite_boundaries(
    conn: &rusqlite::Connection,
    table: &Table,
    every: i64,
) -> Result<Vec<SortKey>> {
    let sql = format!(
        "SELECT k FROM (SELECT {pk} AS k, row_number() OVER (ORDER BY {pk}) AS rn FROM {t}) \
         WHERE rn % ?1 = 0",
        pk = table.primary_key,
        t = table.name
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([every])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        match Raw::from(r.get_ref(0)?) {
            Raw::Integer(i) if table.serial => out.push(SortKey::Int(i)),
            Raw::Text(b) if !table.serial && std::str::from_utf8(b).is_ok() => {
                out.push(SortKey::Bytes(b.to_vec()))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The checksum and row count of a range, computed inside SQLite.
pub fn sqlite_chunk(
    conn: &rusqlite::Connection,
    table: &Table,
    range: &Range,
) -> Result<(Option<String>, i64)> {
    let (w, binds) = sqlite_where(table, range);
    let sql = format!(
        "SELECT cutover_md5({pk}, cutover_canon('{t}', {cols})), count(*) FROM {t}{w}",
        pk = table.primary_key,
        t = table.name,
        cols = table.column_list()
    );
    Ok(
        conn.query_row(&sql, rusqlite::params_from_iter(binds), |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?,
    )
}

fn owned(v: rusqlite::types::ValueRef<'_>) -> OwnedRaw {
    match Raw::from(v) {
        Raw::Null => OwnedRaw::Null,
        Raw::Integer(i) => OwnedRaw::Integer(i),
        Raw::Real(f) => OwnedRaw::Real(f),
        Raw::Text(b) => OwnedRaw::Text(b.to_vec()),
        Raw::Blob(b) => OwnedRaw::Blob(b.to_vec()),
    }
}

/// The rows of a range on SQLite, in key order.
pub fn sqlite_rows(
    conn: &rusqlite::Connection,
    table: &Table,
    range: &Range,
) -> Result<Vec<LegacyRow>> {
    let (w, binds) = sqlite_where(table, range);
    let sql = format!(
        "SELECT {cols} FROM {t}{w} ORDER BY {pk}",
        cols = table.column_list(),
        t = table.name,
        pk = table.primary_key
    );
    let key_idx = table.key_index();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(binds))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let raws: Vec<OwnedRaw> = (0..table.columns.len())
            .map(|i| r.get_ref(i).map(owned))
            .collect::<rusqlite::Result<_>>()?;
        let key = raws[key_idx].as_raw();
        out.push(LegacyRow {
            sort: SortKey::from_raw(key),
            key_text: crate::row::key_text(key),
            raws,
        });
    }
    Ok(out)
}

/// Rows whose key is NULL or a blob (tables with a TEXT key only), with
/// their rowid, in rowid order: range scans leave them out, they are
/// checked one by one.
pub fn sqlite_odd_rows(
    conn: &rusqlite::Connection,
    table: &Table,
) -> Result<Vec<(i64, LegacyRow)>> {
    if table.serial {
        return Ok(Vec::new());
    }
    // Every blob sorts at or after X'' and nothing else does: both terms
    // can use the key's index.
    let sql = format!(
        "SELECT rowid, {cols} FROM {t} WHERE {pk} IS NULL OR {pk} >= X'' ORDER BY rowid",
        cols = table.column_list(),
        t = table.name,
        pk = table.primary_key
    );
    let key_idx = table.key_index();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let rowid: i64 = r.get(0)?;
        let raws: Vec<OwnedRaw> = (0..table.columns.len())
            .map(|i| r.get_ref(i + 1).map(owned))
            .collect::<rusqlite::Result<_>>()?;
        let key = raws[key_idx].as_raw();
        out.push((
            rowid,
            LegacyRow {
                sort: SortKey::from_raw(key),
                key_text: crate::row::key_text(key),
                raws,
            },
        ));
    }
    Ok(out)
}

/// The row of one key on PostgreSQL, if any.
pub async fn pg_row_by_key(
    pool: &PgPool,
    table: &Table,
    key: &str,
) -> Result<Option<(SortKey, Vec<Cell>)>> {
    let sql = format!(
        "SELECT {cols} FROM {t} WHERE {pk} = $1",
        cols = table.column_list(),
        t = table.name,
        pk = table.primary_key
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(pool)
        .await?;
    let key_idx = table.key_index();
    row.map(|r| Ok((pg_sort_key(table, &r, key_idx)?, pg_cells(table, &r)?)))
        .transpose()
}

/// A converted cell as the legacy application stores it: timestamps as
/// RFC 3339 UTC with microseconds, booleans 0/1, JSON as compact text.
pub fn legacy_value(cell: &Cell) -> SqlValue {
    match cell {
        Cell::Null => SqlValue::Null,
        Cell::Text(s) => SqlValue::Text(s.clone()),
        Cell::Status(s) => SqlValue::Text(s.as_str().to_string()),
        Cell::Timestamp(t) => SqlValue::Text(crate::convert::format_timestamp(t)),
        Cell::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Cell::Json(v) => SqlValue::Text(v.to_string()),
        Cell::Int(i) => SqlValue::Integer(i64::from(*i)),
    }
}
