//! The outbox: keys changed on the authoritative side, not yet applied to
//! the other.
//!
//! While SQLite is authoritative the entries live in the SQLite file (table
//! `_cutover_outbox`, added beside the legacy tables, which stay untouched);
//! while PostgreSQL is authoritative they live in `cutover.outbox`. An entry
//! is written in the same transaction as the change it describes, so an
//! acknowledged write always has either its copy on the other side or its
//! entry here. An entry's side tells the direction of its apply.

use crate::changes::Change;
use crate::error::{Backend, Result};
use crate::tables::Schema;

/// The SQLite outbox table (created when the dual store opens the file).
pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS _cutover_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX IF NOT EXISTS _cutover_outbox_key ON _cutover_outbox (table_name, row_key);
CREATE TABLE IF NOT EXISTS _cutover_applied (
    table_name TEXT NOT NULL,
    row_key TEXT NOT NULL,
    outbox_id INTEGER NOT NULL,
    applied_at INTEGER NOT NULL,
    PRIMARY KEY (table_name, row_key)
) WITHOUT ROWID;
";

/// How long an image read from PostgreSQL may take to reach SQLite. An apply
/// that would land later is not made (the entry stays for the replayer), so
/// a version recorded in `_cutover_applied` only has to outlive this window.
pub const APPLY_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Versions recorded in `_cutover_applied` are kept this long (seconds).
pub const APPLIED_KEEP_SECS: i64 = 180;

/// One pending entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry id (increasing in commit order on its side).
    pub id: i64,
    /// Which outbox it is in (the side that changed).
    pub side: Backend,
    /// Changed row.
    pub change: Change,
}

fn table_name(name: &str, schema: &Schema) -> &'static str {
    schema
        .by_name(name)
        .map(|t| t.name)
        .unwrap_or("unknown")
}

/// Records changes inside a SQLite transaction.
pub fn sqlite_record(conn: &rusqlite::Connection, changes: &[Change]) -> Result<()> {
    let mut stmt =
        conn.prepare_cached("INSERT INTO _cutover_outbox (table_name, row_key) VALUES (?1, ?2)")?;
    for c in changes {
        stmt.execute((c.table, &c.key))?;
    }
    Ok(())
}

/// Records changes inside a PostgreSQL transaction.
pub async fn pg_record(conn: &mut sqlx::PgConnection, changes: &[Change]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let tables: Vec<&str> = changes.iter().map(|c| c.table).collect();
    let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
    sqlx::query(
        "INSERT INTO cutover.outbox (table_name, row_key)
         SELECT * FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS u(t, k, n) ORDER BY n",
    )
    .bind(&tables)
    .bind(&keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// Number of pending SQLite entries (0 when the table does not exist yet).
pub fn sqlite_pending(conn: &rusqlite::Connection) -> Result<i64> {
    let exists: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_cutover_outbox'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(0);
    }
    Ok(conn.query_row("SELECT count(*) FROM _cutover_outbox", [], |r| r.get(0))?)
}

/// Number of pending PostgreSQL entries.
pub async fn pg_pending(pool: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM cutover.outbox")
        .fetch_one(pool)
        .await?)
}

/// The oldest `limit` SQLite entries after id `after` (tables named as
/// `schema` declares them).
pub fn sqlite_fetch(
    conn: &rusqlite::Connection,
    schema: &Schema,
    after: i64,
    limit: i64,
) -> Result<Vec<Entry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, table_name, row_key FROM _cutover_outbox WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map([after, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (id, t, k) = r?;
        out.push(Entry {
            id,
            side: Backend::Sqlite,
            change: Change::new(table_name(&t, schema), k),
        });
    }
    Ok(out)
}

/// The oldest `limit` PostgreSQL entries after id `after` (tables named
/// as `schema` declares them).
pub async fn pg_fetch(
    pool: &sqlx::PgPool,
    schema: &Schema,
    after: i64,
    limit: i64,
) -> Result<Vec<Entry>> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, table_name, row_key FROM cutover.outbox WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, t, k)| Entry {
            id,
            side: Backend::Postgres,
            change: Change::new(table_name(&t, schema), k),
        })
        .collect())
}

/// Highest PostgreSQL entry id (0 when empty).
pub async fn pg_max_id(pool: &sqlx::PgPool) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0)::bigint FROM cutover.outbox")
            .fetch_one(pool)
            .await?,
    )
}

/// Highest SQLite entry id for a key (None when nothing is pending for it).
pub fn sqlite_high_water(conn: &rusqlite::Connection, c: &Change) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(
            "SELECT max(id) FROM _cutover_outbox WHERE table_name = ?1 AND row_key = ?2",
        )?
        .query_row((c.table, &c.key), |r| r.get(0))?)
}

/// Highest PostgreSQL entry id for a key.
pub async fn pg_high_water(pool: &sqlx::PgPool, c: &Change) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT max(id) FROM cutover.outbox WHERE table_name = $1 AND row_key = $2",
    )
    .bind(c.table)
    .bind(&c.key)
    .fetch_one(pool)
    .await?)
}

/// Clears a key's SQLite entries up to `upto` (entries added later stay).
pub fn sqlite_clear(conn: &rusqlite::Connection, c: &Change, upto: i64) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM _cutover_outbox WHERE table_name = ?1 AND row_key = ?2 AND id <= ?3",
    )?
    .execute((c.table, &c.key, upto))?;
    Ok(())
}

/// Clears a key's PostgreSQL entries up to `upto`.
pub async fn pg_clear(pool: &sqlx::PgPool, c: &Change, upto: i64) -> Result<()> {
    sqlx::query("DELETE FROM cutover.outbox WHERE table_name = $1 AND row_key = $2 AND id <= $3")
        .bind(c.table)
        .bind(&c.key)
        .bind(upto)
        .execute(pool)
        .await?;
    Ok(())
}

/// The highest PostgreSQL outbox id whose image SQLite holds for a key, when
/// recorded within the last `APPLIED_KEEP_SECS`. Ids grow in commit order
/// for one key (the row lock orders the writes that take them), so an image
/// of a lower id is older and must not overwrite it, whichever process
/// applies it.
pub fn sqlite_applied(conn: &rusqlite::Connection, c: &Change) -> Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached(
            "SELECT outbox_id FROM _cutover_applied WHERE table_name = ?1 AND row_key = ?2",
        )?
        .query_row((c.table, &c.key), |r| r.get(0))
        .optional()?)
}

/// Records that SQLite holds the image of PostgreSQL outbox id `id` for a key.
pub fn sqlite_mark_applied(conn: &rusqlite::Connection, c: &Change, id: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _cutover_applied (table_name, row_key, outbox_id, applied_at)
         VALUES (?1, ?2, ?3, CAST(strftime('%s', 'now') AS INTEGER))
         ON CONFLICT (table_name, row_key) DO UPDATE SET
             outbox_id = max(outbox_id, excluded.outbox_id), applied_at = excluded.applied_at",
    )?
    .execute((c.table, &c.key, id))?;
    Ok(())
}

/// Forgets versions older than `APPLIED_KEEP_SECS` (no apply can still be
/// holding an image older than them: see `APPLY_WINDOW`).
pub fn sqlite_prune_applied(conn: &rusqlite::Connection) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM _cutover_applied WHERE applied_at < CAST(strftime('%s', 'now') AS INTEGER) - ?1",
        [APPLIED_KEEP_SECS],
    )?)
}

/// Clears many keys' PostgreSQL entries, each up to its own id, in one statement.
pub async fn pg_clear_many(pool: &sqlx::PgPool, upto: &[(Change, i64)]) -> Result<u64> {
    if upto.is_empty() {
        return Ok(0);
    }
    let tables: Vec<&str> = upto.iter().map(|(c, _)| c.table).collect();
    let keys: Vec<&str> = upto.iter().map(|(c, _)| c.key.as_str()).collect();
    let ids: Vec<i64> = upto.iter().map(|(_, id)| *id).collect();
    // A clear lost in a crash only makes the replayer apply the image again,
    // which changes nothing: it need not wait for the WAL flush.
    let mut tx = pool
        // Each key is found through the (table_name, row_key) index,
        // whatever the planner guesses of the list's size.
        .begin_with(
            "BEGIN; SET LOCAL synchronous_commit = off; \
             SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off",
        )
        .await?;
    // Several processes clear the same entries (each applied them: its
    // own write's landing, its replayer, a flip's drain), each in its own
    // order: deleting them outright, two clears would wait for each other,
    // crosswise, until the deadlock check (1 s) cancels one, under a
    // flip's lock. Entries another clear holds are left to it: it deletes
    // them, or, rolled back, leaves them to be applied again, which changes
    // nothing.
    let done = sqlx::query(
        "DELETE FROM cutover.outbox WHERE id IN (
           SELECT o.id FROM cutover.outbox o
           JOIN UNNEST($1::text[], $2::text[], $3::bigint[]) AS d(t, k, upto)
             ON o.table_name = d.t AND o.row_key = d.k AND o.id <= d.upto
           FOR UPDATE OF o SKIP LOCKED)",
    )
    .bind(&tables)
    .bind(&keys)
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

/// The highest SQLite outbox id (0 when empty).
pub fn sqlite_max_id(conn: &rusqlite::Connection) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT coalesce(max(id), 0) FROM _cutover_outbox",
        [],
        |r| r.get(0),
    )?)
}

/// Whether any SQLite outbox entry names one of `tables`.
pub fn sqlite_any_in_tables(conn: &rusqlite::Connection, tables: &[&str]) -> Result<bool> {
    let mut st =
        conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM _cutover_outbox WHERE table_name = ?1)")?;
    for t in tables {
        if st.query_row([t], |r| r.get::<_, bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether any SQLite outbox entry names one of the (table, key) pairs.
pub fn sqlite_any_for_keys(conn: &rusqlite::Connection, keys: &[(String, String)]) -> Result<bool> {
    let mut st = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM _cutover_outbox WHERE table_name = ?1 AND row_key = ?2)",
    )?;
    for (t, k) in keys {
        if st.query_row((t, k), |r| r.get::<_, bool>(0))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether any PostgreSQL outbox entry names one of the (table, key) pairs.
pub async fn pg_any_for_keys(pool: &sqlx::PgPool, keys: &[(String, String)]) -> Result<bool> {
    let (tables, keys): (Vec<&str>, Vec<&str>) =
        keys.iter().map(|(t, k)| (t.as_str(), k.as_str())).unzip();
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM UNNEST($1::text[], $2::text[]) AS u(t, k)
         JOIN cutover.outbox o ON o.table_name = u.t AND o.row_key = u.k)",
    )
    .bind(&tables)
    .bind(&keys)
    .fetch_one(pool)
    .await?)
}

/// Every key with PostgreSQL outbox entries, with its highest entry id.
pub async fn pg_pending_keys(pool: &sqlx::PgPool) -> Result<Vec<(String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT table_name, row_key, max(id) FROM cutover.outbox GROUP BY table_name, row_key",
    )
    .fetch_all(pool)
    .await?)
}
