//! `--defer-indexes`: drop secondary indexes before the copy, rebuild after.
//!
//! Loading into a table without its secondary B-tree indexes and building
//! them once at the end is cheaper than maintaining them row by row. A GIN
//! (full-text) index is the exception unless asked for (`--defer-full-text`):
//! during the copy it takes rows through its pending list, merged in big
//! sorted runs, while a `CONCURRENTLY` rebuild of it runs single-threaded
//! and, on 1M of the plan's tweets, took ~52 s to save ~39 s of copy. Each
//! dropped index's definition is recorded in `cutover.deferred_indexes` in the same
//! transaction as the drop, so a run killed in between rebuilds it when it
//! resumes. Indexes are rebuilt with `CREATE INDEX CONCURRENTLY`, which does
//! not block the application's writes (and cannot run inside a transaction).
//! Primary keys and unique indexes stay: the copy relies on them.

use sqlx::{Connection, PgConnection};

use crate::error::Result;
use crate::tables::Table;

/// Drops the non-unique, non-primary B-tree indexes of `tables` (and their
/// GIN indexes with `full_text`), recording each. Returns the names dropped.
pub(crate) async fn defer(
    conn: &mut PgConnection,
    tables: &[&'static Table],
    full_text: bool,
) -> Result<Vec<String>> {
    let names: Vec<String> = tables.iter().map(|t| t.name.to_string()).collect();
    let found: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT i.relname::text, t.relname::text, pg_get_indexdef(i.oid)
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         JOIN pg_am am ON am.oid = i.relam
         WHERE n.nspname = current_schema() AND t.relname = ANY($1)
           AND NOT x.indisunique AND NOT x.indisprimary
           AND (am.amname = 'btree' OR (am.amname = 'gin' AND $2))
         ORDER BY i.relname",
    )
    .bind(names)
    .bind(full_text)
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = Vec::new();
    for (index, table, definition) in found {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO cutover.deferred_indexes (index_name, table_name, definition)
             VALUES ($1, $2, $3) ON CONFLICT (index_name) DO NOTHING",
        )
        .bind(&index)
        .bind(&table)
        .bind(&definition)
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS \"{index}\""
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(index = %index, table = %table, "secondary index dropped until the copy ends");
        dropped.push(index);
    }
    Ok(dropped)
}

/// Rebuilds every recorded index (also those a killed run left dropped).
/// Returns the names rebuilt.
pub(crate) async fn rebuild(conn: &mut PgConnection) -> Result<Vec<String>> {
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT index_name, definition FROM cutover.deferred_indexes ORDER BY index_name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut rebuilt = Vec::new();
    if !recorded.is_empty() {
        // Index builds sort in memory up to maintenance_work_mem; the 64 MB
        // default makes a GIN build over a large table spill and crawl.
        // Raised for this session only, never lowered.
        sqlx::query(
            "SELECT set_config('maintenance_work_mem', '1GB', false)
             WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('1GB')",
        )
        .execute(&mut *conn)
        .await?;
    }
    for (index, definition) in recorded {
        // A CONCURRENTLY build interrupted half-way leaves an invalid index behind.
        let valid: Option<bool> = sqlx::query_scalar(
            "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             JOIN pg_namespace n ON n.oid = i.relnamespace
             WHERE n.nspname = current_schema() AND i.relname = $1",
        )
        .bind(&index)
        .fetch_optional(&mut *conn)
        .await?;
        if valid == Some(false) {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP INDEX CONCURRENTLY IF EXISTS \"{index}\""
            )))
            .execute(&mut *conn)
            .await?;
        }
        if valid != Some(true) {
            let started = std::time::Instant::now();
            let create = definition.replacen("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1);
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut *conn)
                .await?;
            tracing::info!(index = %index, seconds = started.elapsed().as_secs_f64(), "index rebuilt");
        }
        sqlx::query("DELETE FROM cutover.deferred_indexes WHERE index_name = $1")
            .bind(&index)
            .execute(&mut *conn)
            .await?;
        rebuilt.push(index);
    }
    Ok(rebuilt)
}
