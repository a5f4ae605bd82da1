//! Secondary indexes dropped for a table's copy and built again right after.
//!
//! Loading into a table without its secondary indexes and building them once
//! is far cheaper than maintaining them row by row, above all the full-text
//! GIN index. So, by default, each table's non-unique B-tree indexes are
//! dropped before its first batch and built again as soon as its copy
//! ends, all of a table's indexes side by side, each on a connection of
//! its own with a large `maintenance_work_mem`. The GIN indexes are
//! dropped and built too with `defer_full_text`; otherwise they stay, and
//! their pending lists are merged during the copy ([`merge_pending`] beside
//! the loading, or [`merge_now`] after each round while the application
//! writes).
//!
//! While PostgreSQL is not authoritative (`off`, `dualwrite`, `shadow`) the
//! build is a plain `CREATE INDEX`: it blocks writes to that one table for
//! the build, which only the dual store's copies make, and those give up
//! after a short lock timeout and wait in the outbox for the replayer
//! (`DualConfig::copy_lock_timeout`); shadow reads are not blocked. In a
//! stage where PostgreSQL is authoritative (a forced run) the build is
//! `CONCURRENTLY`, which never blocks the application.
//!
//! Each dropped index's definition is recorded in `cutover.deferred_indexes`
//! in the same transaction as the drop, so a run killed in between builds it
//! when it resumes (any run builds every recorded index before it ends, on
//! every way out). Primary keys and unique indexes stay: the copy relies on
//! them.

use sqlx::{Connection, PgConnection};

use crate::error::Result;
use crate::settings::PgSettings;
use crate::tables::Table;

/// Drops the non-unique, non-primary B-tree indexes of `table` (and its GIN
/// indexes with `full_text`), recording each. Returns the names dropped.
pub(crate) async fn defer(
    conn: &mut PgConnection,
    table: &'static Table,
    full_text: bool,
) -> Result<Vec<String>> {
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(i.oid)
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         JOIN pg_am am ON am.oid = i.relam
         WHERE n.nspname = current_schema() AND t.relname = $1
           AND NOT x.indisunique AND NOT x.indisprimary
           AND (am.amname = 'btree' OR (am.amname = 'gin' AND $2))
         ORDER BY i.relname",
    )
    .bind(table.name)
    .bind(full_text)
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = Vec::new();
    for (index, definition) in found {
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO cutover.deferred_indexes (index_name, table_name, definition)
             VALUES ($1, $2, $3) ON CONFLICT (index_name) DO NOTHING",
        )
        .bind(&index)
        .bind(table.name)
        .bind(&definition)
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX IF EXISTS \"{index}\""
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(index = %index, table = table.name, "secondary index dropped until the table is copied");
        dropped.push(index);
    }
    Ok(dropped)
}

/// How an index is built again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Build {
    /// `CREATE INDEX`: blocks writes to the table while it runs.
    Plain,
    /// `CREATE INDEX CONCURRENTLY`: blocks nothing, takes longer.
    Concurrently,
}

/// Builds every recorded index of `table` (of every table when `None`,
/// also those a killed run left dropped), side by side, each on a
/// connection of its own. Returns the names built.
pub(crate) async fn rebuild(
    settings: &PgSettings,
    conn: &mut PgConnection,
    table: Option<&str>,
    build: Build,
) -> Result<Vec<String>> {
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT index_name, definition FROM cutover.deferred_indexes
         WHERE $1::text IS NULL OR table_name = $1
         ORDER BY (definition LIKE '% USING gin %') DESC, index_name",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let builds = recorded.into_iter().map(|(index, definition)| async move {
        let mut c = PgConnection::connect_with(&settings.connect_options()).await?;
        let r = build_one(&mut c, &index, &definition, build).await;
        let _ = c.close().await;
        r.map(|()| index)
    });
    let mut built = Vec::new();
    let mut first_error = None;
    for r in futures_util::future::join_all(builds).await {
        match r {
            Ok(index) => built.push(index),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(built),
    }
}

async fn build_one(
    conn: &mut PgConnection,
    index: &str,
    definition: &str,
    build: Build,
) -> Result<()> {
    raise_maintenance_work_mem(&mut *conn).await?;
    // An interrupted CONCURRENTLY build leaves an invalid index behind.
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT x.indisvalid FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = i.relnamespace
         WHERE n.nspname = current_schema() AND i.relname = $1",
    )
    .bind(index)
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
        let create = match build {
            Build::Plain => definition.to_string(),
            Build::Concurrently => {
                definition.replacen("CREATE INDEX ", "CREATE INDEX CONCURRENTLY ", 1)
            }
        };
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut *conn)
            .await?;
        tracing::info!(index = %index, seconds = started.elapsed().as_secs_f64(), concurrently = build == Build::Concurrently, "index built");
    }
    sqlx::query("DELETE FROM cutover.deferred_indexes WHERE index_name = $1")
        .bind(index)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The oids of `table`'s GIN indexes.
pub(crate) async fn gin_indexes(conn: &mut PgConnection, table: &Table) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT x.indexrelid::bigint FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_am a ON a.oid = i.relam
         JOIN pg_class t ON t.oid = x.indrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema() AND t.relname = $1 AND a.amname = 'gin'",
    )
    .bind(table.name)
    .fetch_all(conn)
    .await?)
}

/// What the connection merging a table's GIN pending lists does
/// ([`merge_pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merging {
    /// Merge beside the loading connections.
    Beside,
    /// Wait: while the application writes, the copy merges after each
    /// round itself ([`merge_now`]), so that it does one thing at a time.
    Held,
    /// The table is done.
    Stop,
}

/// Merges the pending lists of `table`'s GIN indexes into the indexes, on a
/// connection of its own, while `state` is [`Merging::Beside`], until it
/// turns [`Merging::Stop`].
///
/// A GIN index in place during a copy takes each row's entries in its
/// pending list (the batches set a 1 GB limit, so they never merge it
/// themselves), computed by the loading connections side by side; merging
/// the list into the index is the single-threaded part, and here it runs
/// beside the loading instead of after it (or inside a batch, which would
/// hold up the batches committed after it). Returns at once for a table
/// with no GIN index.
pub(crate) async fn merge_pending(
    settings: PgSettings,
    table: &'static Table,
    mut state: tokio::sync::watch::Receiver<Merging>,
) -> Result<()> {
    let mut conn = PgConnection::connect_with(&settings.connect_options()).await?;
    let gin = gin_indexes(&mut conn, table).await?;
    if gin.is_empty() {
        let _ = conn.close().await;
        return Ok(());
    }
    loop {
        let now = *state.borrow_and_update();
        match now {
            Merging::Stop => break,
            Merging::Held => {
                if state.changed().await.is_err() {
                    break;
                }
            }
            Merging::Beside => {
                if merge_now(&mut conn, &gin).await? == 0 {
                    tokio::select! {
                        _ = state.changed() => {}
                        _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {}
                    }
                }
            }
        }
    }
    let _ = conn.close().await;
    Ok(())
}

/// Merges the pending lists of the GIN indexes `gin` (oids) once; returns
/// the pages merged. The merge sorts in `maintenance_work_mem`, raised to
/// 1 GB for the session.
pub(crate) async fn merge_now(conn: &mut PgConnection, gin: &[i64]) -> Result<i64> {
    raise_maintenance_work_mem(&mut *conn).await?;
    let mut merged = 0i64;
    for &oid in gin {
        let pages: i64 = sqlx::query_scalar("SELECT gin_clean_pending_list($1::oid::regclass)")
            .bind(oid)
            .fetch_one(&mut *conn)
            .await?;
        merged += pages;
    }
    Ok(merged)
}

/// Index builds and GIN merges sort in memory up to `maintenance_work_mem`;
/// the 64 MB default makes a GIN build over a large table spill and crawl.
/// Raised to 1 GB for this session only, never lowered.
async fn raise_maintenance_work_mem(conn: &mut PgConnection) -> Result<()> {
    sqlx::query(
        "SELECT set_config('maintenance_work_mem', '1GB', false)
         WHERE pg_size_bytes(current_setting('maintenance_work_mem')) < pg_size_bytes('1GB')",
    )
    .execute(conn)
    .await?;
    Ok(())
}
