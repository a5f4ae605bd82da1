//! Row images: one row of any table, read from or written to either side.
//!
//! The secondary apply of the dual store, `verify --repair` and the outbox
//! replayer all copy "the row's current image" from one database to the
//! other. They do it here, driven by `tables`, so no per-table code exists.
//! An image is the row's cells in the table's column order; reading the
//! SQLite side converts legacy values exactly as the backfill does.

use serde_json::Value;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{Postgres, Row};

use crate::convert::Raw;
use crate::error::{Error, Result};
use crate::model::{JobStatus, Timestamp};
use crate::row::{convert_value, key_text, Cell};
use crate::tables::{Kind, Table};

/// A row's cells in its table's column order.
pub type Image = Vec<Cell>;

/// A primary-key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// TEXT / VARCHAR keys.
    Text(String),
    /// SERIAL / AUTOINCREMENT keys.
    Int(i32),
}

impl Key {
    /// Parses a key as `cutover.outbox.row_key` holds it.
    pub fn parse(table: &Table, s: &str) -> Result<Key> {
        if table.serial {
            s.parse().map(Key::Int).map_err(|_| {
                Error::InvalidArgument(format!("{}: key {s:?} is not an integer", table.name))
            })
        } else {
            Ok(Key::Text(s.to_string()))
        }
    }

    /// The key of an image.
    pub fn of(table: &Table, image: &Image) -> Key {
        let i = table
            .columns
            .iter()
            .position(|c| c.name == table.primary_key)
            .unwrap_or(0);
        match &image[i] {
            Cell::Int(v) => Key::Int(*v),
            Cell::Text(s) => Key::Text(s.clone()),
            other => Key::Text(format!("{other:?}")),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Text(s) => f.write_str(s),
            Key::Int(i) => write!(f, "{i}"),
        }
    }
}

fn sqlite_key(key: &Key) -> rusqlite::types::Value {
    match key {
        Key::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Key::Int(i) => rusqlite::types::Value::Integer(*i as i64),
    }
}

/// A cell as SQLite stores it in the legacy schema's conventions.
pub fn sqlite_value(cell: &Cell) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match cell {
        Cell::Null => V::Null,
        Cell::Text(s) => V::Text(s.clone()),
        Cell::Timestamp(t) => V::Text(crate::convert::format_timestamp(t)),
        Cell::Bool(b) => V::Integer(*b as i64),
        Cell::Json(v) => V::Text(v.to_string()),
        Cell::Int(i) => V::Integer(*i as i64),
        Cell::Status(s) => V::Text(s.as_str().to_string()),
    }
}

/// Reads one row from SQLite, converting legacy values; a bad value is an
/// `InvalidValue` error naming table, key and column.
pub fn sqlite_read(
    conn: &rusqlite::Connection,
    table: &'static Table,
    key: &Key,
) -> Result<Option<Image>> {
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = ?1",
        table.column_list(),
        table.name,
        table.primary_key
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([sqlite_key(key)])?;
    match rows.next()? {
        None => Ok(None),
        Some(row) => sqlite_image(table, row).map(Some),
    }
}

/// Converts a SQLite row selected as `table.column_list()` into an image.
pub fn sqlite_image(table: &'static Table, row: &rusqlite::Row<'_>) -> Result<Image> {
    let key_idx = table
        .columns
        .iter()
        .position(|c| c.name == table.primary_key)
        .unwrap_or(0);
    let mut cells = Vec::with_capacity(table.columns.len());
    for (i, c) in table.columns.iter().enumerate() {
        let raw = Raw::from(row.get_ref(i)?);
        match convert_value(c, raw) {
            Ok(cell) => cells.push(cell),
            Err(e) => {
                let key = key_text(Raw::from(row.get_ref(key_idx)?));
                return Err(Error::InvalidValue {
                    table: table.name,
                    key,
                    column: e.column,
                    reason: e.reason,
                    detail: e.detail,
                });
            }
        }
    }
    Ok(cells)
}

/// The INSERT … ON CONFLICT DO UPDATE statement of a table, with `$n`
/// (PostgreSQL) or `?n` (SQLite) parameters in column order.
pub fn upsert_sql(table: &Table, pg: bool) -> String {
    let (params, sets) = upsert_parts(table, pg);
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}",
        table.name,
        table.column_list(),
        params,
        table.primary_key,
        sets
    )
}

/// An upsert's parameter list and `SET` list, for `upsert_sql` and
/// `pg_upsert_fenced`.
fn upsert_parts(table: &Table, pg: bool) -> (String, String) {
    let params: Vec<String> = (1..=table.columns.len())
        .map(|i| if pg { format!("${i}") } else { format!("?{i}") })
        .collect();
    let sets: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.name != table.primary_key)
        .map(|c| format!("{0} = excluded.{0}", c.name))
        .collect();
    (params.join(", "), sets.join(", "))
}

/// Writes an image to SQLite (insert or replace every column).
pub fn sqlite_upsert(conn: &rusqlite::Connection, table: &Table, image: &Image) -> Result<()> {
    let mut stmt = conn.prepare_cached(&upsert_sql(table, false))?;
    let values: Vec<rusqlite::types::Value> = image.iter().map(sqlite_value).collect();
    stmt.execute(rusqlite::params_from_iter(values))?;
    Ok(())
}

/// Deletes a row from SQLite; true when it existed.
pub fn sqlite_delete(conn: &rusqlite::Connection, table: &Table, key: &Key) -> Result<bool> {
    let sql = format!(
        "DELETE FROM {} WHERE {} = ?1",
        table.name, table.primary_key
    );
    Ok(conn.prepare_cached(&sql)?.execute([sqlite_key(key)])? > 0)
}

fn pg_select_list(table: &Table) -> String {
    table
        .columns
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn bind_key<'q>(
    q: Query<'q, Postgres, PgArguments>,
    key: &Key,
) -> Query<'q, Postgres, PgArguments> {
    match key {
        Key::Text(s) => q.bind(s.clone()),
        Key::Int(i) => q.bind(*i),
    }
}

/// Binds a cell typed by its column kind (NULLs keep the column's type), on
/// any sqlx query kind.
macro_rules! bind_typed_cell {
    ($q:expr, $kind:expr, $cell:expr) => {
        match ($kind, $cell) {
            (_, Cell::Text(s)) => $q.bind(s.clone()),
            (_, Cell::Timestamp(t)) => $q.bind(*t),
            (_, Cell::Bool(b)) => $q.bind(*b),
            (_, Cell::Json(v)) => $q.bind(v.clone()),
            (_, Cell::Int(i)) => $q.bind(*i),
            (_, Cell::Status(s)) => $q.bind(s.as_str()),
            (Kind::Text | Kind::Status, Cell::Null) => $q.bind(None::<String>),
            (Kind::Timestamp, Cell::Null) => $q.bind(None::<Timestamp>),
            (Kind::Bool, Cell::Null) => $q.bind(None::<bool>),
            (Kind::Json, Cell::Null) => $q.bind(None::<Value>),
            (Kind::Int, Cell::Null) => $q.bind(None::<i32>),
        }
    };
}

/// Binds a cell typed by its column kind (NULLs keep the column's type).
pub fn bind_cell<'q>(
    q: Query<'q, Postgres, PgArguments>,
    kind: Kind,
    cell: &Cell,
) -> Query<'q, Postgres, PgArguments> {
    bind_typed_cell!(q, kind, cell)
}

fn bind_cell_scalar<'q>(
    q: sqlx::query::QueryScalar<'q, Postgres, i64, PgArguments>,
    kind: Kind,
    cell: &Cell,
) -> sqlx::query::QueryScalar<'q, Postgres, i64, PgArguments> {
    bind_typed_cell!(q, kind, cell)
}

/// Decodes a PostgreSQL row selected in the table's column order.
pub fn pg_image(table: &'static Table, row: &sqlx::postgres::PgRow) -> Result<Image> {
    let mut cells = Vec::with_capacity(table.columns.len());
    for (i, c) in table.columns.iter().enumerate() {
        let cell = match c.kind {
            Kind::Text => row.try_get::<Option<String>, _>(i)?.map(Cell::Text),
            Kind::Timestamp => row.try_get::<Option<Timestamp>, _>(i)?.map(Cell::Timestamp),
            Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Cell::Bool),
            Kind::Json => row.try_get::<Option<Value>, _>(i)?.map(Cell::Json),
            Kind::Int => row.try_get::<Option<i32>, _>(i)?.map(Cell::Int),
            Kind::Status => match row.try_get::<Option<String>, _>(i)? {
                None => None,
                Some(s) => Some(Cell::Status(JobStatus::parse(&s).ok_or_else(|| {
                    Error::InvalidValue {
                        table: table.name,
                        key: pg_key_text(table, row),
                        column: c.name,
                        reason: crate::convert::RejectReason::CheckViolation,
                        detail: format!(
                            "{s:?} is not one of pending, processing, completed, failed"
                        ),
                    }
                })?)),
            },
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(cells)
}

/// The key of a PostgreSQL row selected in the table's column order, as
/// text (for an error that names the row).
fn pg_key_text(table: &Table, row: &sqlx::postgres::PgRow) -> String {
    let i = table.key_index();
    match table.key_column().kind {
        Kind::Int => row.try_get::<i32, _>(i).map(|k| k.to_string()),
        _ => row.try_get::<String, _>(i),
    }
    .unwrap_or_default()
}

/// Reads one row from PostgreSQL.
pub async fn pg_read<'e, E>(exec: E, table: &'static Table, key: &Key) -> Result<Option<Image>>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = $1",
        pg_select_list(table),
        table.name,
        table.primary_key
    );
    let q = bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key);
    match q.fetch_optional(exec).await? {
        None => Ok(None),
        Some(row) => pg_image(table, &row).map(Some),
    }
}

/// Writes an image to PostgreSQL (insert or replace every column; serial ids explicit).
pub async fn pg_upsert<'e, E>(exec: E, table: &'static Table, image: &Image) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = upsert_sql(table, true);
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (c, cell) in table.columns.iter().zip(image) {
        q = bind_cell(q, c.kind, cell);
    }
    q.execute(exec).await?;
    Ok(())
}

/// Class of the PostgreSQL advisory locks that order copies of one key
/// (`pg_advisory_xact_lock(class, hashtext('table:key'))`): every copy of a
/// row from SQLite to PostgreSQL takes it before it reads SQLite, and so
/// does the backfill before it deletes a row it may have brought back.
pub const COPY_LOCK_CLASS: i32 = 0x6375;

/// Takes the copy lock of `table`'s row `key` (its text form) until the
/// transaction ends; then, with `lock_timeout`, sets the transaction's
/// `lock_timeout` (after the copy lock is held: waiting for another copy
/// of the same key is not what it bounds).
pub async fn pg_lock_copy<'e, E>(
    exec: E,
    table: &str,
    key: &str,
    lock_timeout: Option<std::time::Duration>,
) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    let lock = format!("{table}:{key}");
    match lock_timeout {
        None => {
            sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                .bind(COPY_LOCK_CLASS)
                .bind(lock)
                .execute(exec)
                .await?;
        }
        // The subquery (kept apart by OFFSET 0) takes the lock first.
        Some(t) => {
            sqlx::query(
                "SELECT set_config('lock_timeout', $3, true)
                 FROM (SELECT pg_advisory_xact_lock($1, hashtext($2)) OFFSET 0) l",
            )
            .bind(COPY_LOCK_CLASS)
            .bind(lock)
            .bind(format!("{}ms", t.as_millis().max(1)))
            .execute(exec)
            .await?;
        }
    }
    Ok(())
}

/// As `pg_lock_copy`, for several keys (`(table, key)`) in one statement,
/// in the order of their names (`settle_gone` takes a table's keys in that
/// order too), so two transactions taking several never wait for each other
/// in a cycle. Every wait for a lock in the transaction, these included,
/// ends after `lock_timeout`.
pub async fn pg_lock_copies<'a, 'e, E>(
    exec: E,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
    lock_timeout: std::time::Duration,
) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    let mut locks: Vec<String> = keys.into_iter().map(|(t, k)| format!("{t}:{k}")).collect();
    locks.sort();
    locks.dedup();
    // The settings' subquery first (kept apart by OFFSET 0), then the
    // locks, one row at a time in the array's order.
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock($1, hashtext(l.name)))
         FROM (SELECT set_config('lock_timeout', $3, true) OFFSET 0) s,
              LATERAL (SELECT name FROM unnest($2::text[]) WITH ORDINALITY AS u(name, i)
                       WHERE s.set_config IS NOT NULL ORDER BY i OFFSET 0) l",
    )
    .bind(COPY_LOCK_CLASS)
    .bind(locks)
    .bind(format!("{}ms", lock_timeout.as_millis().max(1)))
    .execute(exec)
    .await?;
    Ok(())
}

/// Deletes a row from PostgreSQL; true when it existed.
pub async fn pg_delete<'e, E>(exec: E, table: &'static Table, key: &Key) -> Result<bool>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = format!(
        "DELETE FROM {} WHERE {} = $1",
        table.name, table.primary_key
    );
    let q = bind_key(sqlx::query(sqlx::AssertSqlSafe(sql)), key);
    Ok(q.execute(exec).await?.rows_affected() > 0)
}

/// The fence of a copy made outside SQLite's lock, as the first CTE of its
/// statement: PostgreSQL's authority row, read FOR SHARE (a flip's update
/// of it waits for the statement's transaction), only while it still says
/// the copy's epoch.
fn fence_cte(epoch_param: usize) -> String {
    format!(
        "WITH f AS (SELECT epoch FROM cutover.authority WHERE epoch = ${epoch_param} FOR SHARE)"
    )
}

/// As `pg_upsert`, in one statement that writes only while PostgreSQL's
/// authority row says `epoch` (see `authority::pg_fence`); false when the
/// epoch moved and nothing was written.
pub async fn pg_upsert_fenced<'e, E>(
    exec: E,
    table: &'static Table,
    image: &Image,
    epoch: i64,
) -> Result<bool>
where
    E: sqlx::PgExecutor<'e>,
{
    let n = table.columns.len();
    let (params, sets) = upsert_parts(table, true);
    let sql = format!(
        "{}, u AS (INSERT INTO {} ({}) SELECT {} FROM f ON CONFLICT ({}) DO UPDATE SET {} RETURNING 1) \
         SELECT count(*) FROM f",
        fence_cte(n + 1),
        table.name,
        table.column_list(),
        params,
        table.primary_key,
        sets
    );
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    for (c, cell) in table.columns.iter().zip(image) {
        q = bind_cell_scalar(q, c.kind, cell);
    }
    Ok(q.bind(epoch).fetch_one(exec).await? > 0)
}

/// As `pg_delete`, fenced like `pg_upsert_fenced`; false when the epoch
/// moved and nothing was deleted.
pub async fn pg_delete_fenced<'e, E>(
    exec: E,
    table: &'static Table,
    key: &Key,
    epoch: i64,
) -> Result<bool>
where
    E: sqlx::PgExecutor<'e>,
{
    let sql = format!(
        "{}, d AS (DELETE FROM {} WHERE {} = $1 AND EXISTS (SELECT 1 FROM f) RETURNING 1) \
         SELECT count(*) FROM f",
        fence_cte(2),
        table.name,
        table.primary_key
    );
    let q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    let q = match key {
        Key::Text(s) => q.bind(s.clone()),
        Key::Int(i) => q.bind(*i),
    };
    Ok(q.bind(epoch).fetch_one(exec).await? > 0)
}

/// An image as a JSON object, column name → value (JSON values nested as
/// they are, so a JSON `null` stays apart from SQL NULL as `{"json": null}`).
pub fn to_json(table: &Table, image: &Image) -> Value {
    let mut obj = serde_json::Map::new();
    for (c, cell) in table.columns.iter().zip(image) {
        let v = match cell {
            Cell::Null => Value::Null,
            Cell::Text(s) => Value::String(s.clone()),
            Cell::Timestamp(t) => Value::String(crate::convert::format_timestamp(t)),
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Json(v) => serde_json::json!({ "json": v }),
            Cell::Int(i) => Value::from(*i),
            Cell::Status(s) => Value::String(s.as_str().to_string()),
        };
        obj.insert(c.name.to_string(), v);
    }
    Value::Object(obj)
}

/// An image from a row as `to_jsonb` renders it, with the JSON columns that
/// hold SQL NULL (`to_jsonb` renders them as JSON `null`, like a JSON
/// `null` value); None when a value does not have the shape its column's
/// kind gives `to_jsonb` (the caller then reads the row with its types).
pub fn image_from_jsonb(table: &Table, row: &Value, sql_nulls: &[String]) -> Option<Image> {
    let obj = row.as_object()?;
    let mut cells = Vec::with_capacity(table.columns.len());
    for c in table.columns {
        let v = obj.get(c.name)?;
        let cell = match (c.kind, v) {
            (Kind::Json, Value::Null) if sql_nulls.iter().any(|n| n == c.name) => Cell::Null,
            (Kind::Json, Value::Null) => Cell::Json(Value::Null),
            (_, Value::Null) => Cell::Null,
            (Kind::Text, Value::String(s)) => Cell::Text(s.clone()),
            (Kind::Timestamp, Value::String(s)) => Cell::Timestamp(
                chrono::DateTime::parse_from_rfc3339(s)
                    .ok()?
                    .with_timezone(&chrono::Utc),
            ),
            (Kind::Bool, Value::Bool(b)) => Cell::Bool(*b),
            (Kind::Json, v) => Cell::Json(v.clone()),
            (Kind::Int, Value::Number(n)) => Cell::Int(i32::try_from(n.as_i64()?).ok()?),
            (Kind::Status, Value::String(s)) => Cell::Status(JobStatus::parse(s)?),
            _ => return None,
        };
        cells.push(cell);
    }
    Some(cells)
}

#[cfg(test)]
mod tests {
    /// Migration 0006 must attach the capture trigger to every table of
    /// `tables::ALL`, naming its key column.
    #[test]
    fn capture_covers_every_table() {
        let migration = include_str!("../migrations/postgres/0006_capture_notes_changes.sql");
        for t in crate::tables::ALL {
            let entry = format!("('{}', '{}')", t.name, t.primary_key);
            assert!(migration.contains(&entry), "migration 0006 lacks {entry}");
        }
    }
}
