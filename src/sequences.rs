//! Id generators of the serial tables on both sides: PostgreSQL's
//! sequences and SQLite's `sqlite_sequence`. One rule everywhere (backfill,
//! repair, export, a flip or a return): a generator moves past the highest
//! id either side holds or handed out, and never moves back.

use sqlx::PgConnection;

use crate::error::Result;
use crate::sqlite::SqliteStore;
use crate::tables::{self, Table};

/// Moves `table`'s PostgreSQL sequence past its highest id, its last value
/// and `floor` (an id used elsewhere, e.g. SQLite's highest); never back.
/// Returns the highest id the sequence now counts as used (0 for a table
/// without a sequence).
pub(crate) async fn pg_raise(conn: &mut PgConnection, table: &Table, floor: i64) -> Result<i64> {
    let seq: Option<String> = sqlx::query_scalar("SELECT pg_get_serial_sequence($1, $2)")
        .bind(table.name)
        .bind(table.primary_key)
        .fetch_one(&mut *conn)
        .await?;
    let Some(seq) = seq else { return Ok(0) };
    let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT setval('{seq}', GREATEST($1::bigint, m, s, 1), GREATEST($1::bigint, m, s) > 0)
         FROM (SELECT COALESCE(max({pk}), 0)::bigint AS m FROM {t}) a,
              (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END AS s FROM {seq}) b",
        pk = table.primary_key,
        t = table.name,
    )))
    .bind(floor)
    .fetch_one(conn)
    .await?;
    Ok(v)
}

/// The highest id PostgreSQL holds or handed out for `table` (None when
/// it holds none and its sequence was never used).
pub(crate) async fn pg_top(pool: &sqlx::PgPool, table: &Table) -> Result<Option<i64>> {
    let sql = format!(
        "SELECT GREATEST((SELECT max({pk})::bigint FROM {t}), \
         pg_sequence_last_value(pg_get_serial_sequence('{t}', '{pk}')::regclass))",
        t = table.name,
        pk = table.primary_key
    );
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?)
}

/// The highest id SQLite holds or handed out for `table`.
pub(crate) fn sqlite_top(conn: &rusqlite::Connection, table: &Table) -> Result<i64> {
    let held: i64 = conn.query_row(
        &format!(
            "SELECT coalesce(max({}), 0) FROM {}",
            table.primary_key, table.name
        ),
        [],
        |r| r.get(0),
    )?;
    // No sqlite_sequence table at all when no table uses AUTOINCREMENT.
    let handed: i64 = conn
        .query_row(
            "SELECT coalesce(max(seq), 0) FROM sqlite_sequence WHERE name = ?1",
            [table.name],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(held.max(handed))
}

/// Moves `table`'s SQLite generator to at least `top`; never back.
pub(crate) fn sqlite_raise(conn: &rusqlite::Connection, table: &Table, top: i64) -> Result<()> {
    let n = conn.execute(
        "UPDATE sqlite_sequence SET seq = max(seq, ?2) WHERE name = ?1",
        (table.name, top),
    )?;
    if n == 0 {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES (?1, ?2)",
            (table.name, top),
        )?;
    }
    Ok(())
}

/// How far SQLite's generators skip when it stands in for PostgreSQL: the
/// write that found PostgreSQL gone (every write holds SQLite's lock, so
/// there is at most one) may have committed rows there with ids SQLite
/// never saw; none writes this many rows of one table.
pub(crate) const FALLBACK_ID_GAP: i64 = 1000;

/// Moves every serial table's (of `schema`) SQLite generator `gap` past the highest id
/// SQLite knows.
pub(crate) fn sqlite_skip(
    conn: &rusqlite::Connection,
    schema: &tables::Schema,
    gap: i64,
) -> Result<()> {
    for t in schema.tables.iter().filter(|t| t.serial) {
        let top = sqlite_top(conn, t)?;
        sqlite_raise(conn, t, top + gap)?;
    }
    Ok(())
}

/// Moves both sides' generators of every serial table past the highest id
/// either side holds, so whichever side becomes authoritative never hands
/// out a used id. Runs inside SQLite's write lock when the caller holds it
/// (a flip): one call per side and table.
pub(crate) async fn align(sqlite: &SqliteStore, pool: &sqlx::PgPool) -> Result<()> {
    let serial: Vec<&'static Table> = sqlite
        .schema()
        .tables
        .iter()
        .copied()
        .filter(|t| t.serial)
        .collect();
    let s = serial.clone();
    let sqlite_tops: Vec<i64> = sqlite
        .locked(move |conn| s.iter().map(|t| sqlite_top(conn, t)).collect())
        .await?;
    let mut conn = pool.acquire().await?;
    let mut tops = Vec::with_capacity(serial.len());
    for (t, floor) in serial.iter().zip(sqlite_tops) {
        tops.push(pg_raise(&mut conn, t, floor).await?);
    }
    drop(conn);
    sqlite
        .locked(move |conn| -> Result<()> {
            for (t, top) in serial.iter().zip(&tops) {
                sqlite_raise(conn, t, *top)?;
            }
            Ok(())
        })
        .await
}
