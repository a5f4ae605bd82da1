//! `cutover export`: PostgreSQL → a new SQLite file in the legacy schema.
//!
//! This is the way back: the file it writes is what the old application
//! opens. Tables are written parents first (the schema's order), read from
//! PostgreSQL in keyset pages and written one SQLite transaction per page,
//! so memory stays bounded by the page. Values take the forms the SQLite
//! store writes (timestamps RFC 3339 UTC with microseconds, booleans 0/1,
//! JSON compact); serial ids are written explicitly and `sqlite_sequence`
//! is set past the highest id (or PostgreSQL's sequence, when ahead), so the
//! old application never reuses an id. The file is built as `PATH.partial`
//! and renamed into place only when complete.
//!
//! The legacy rows PostgreSQL never took (rejected by the backfill or by a
//! dual write, kept in `cutover.rejects` with their original image) are
//! restored byte for byte after each table's rows, unless
//! `without_rejects`: a rollback after `complete` loses none of them. A
//! rejected row whose key or unique value a PostgreSQL row now holds is not
//! restored (the newer row wins) and is counted apart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::settings::PgSettings;
use crate::tables::{self, Table};
use crate::verify::side::{self, legacy_value, Range};

/// Rows read from PostgreSQL (and written to SQLite) per page.
pub const PAGE_ROWS: i64 = 2000;

/// One table's export.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedTable {
    /// Table name.
    pub table: &'static str,
    /// Rows written.
    pub rows: u64,
    /// Legacy rows restored from the reject ledger.
    pub restored: u64,
    /// Rejected legacy rows not restored: a row PostgreSQL holds has their
    /// key or unique value (or their image could not be read back).
    pub not_restored: u64,
    /// `sqlite_sequence` value set (serial tables with rows or a used sequence).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

/// The result of `cutover export`.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The file written.
    pub out: PathBuf,
    /// Per table, in the order written.
    pub tables: Vec<ExportedTable>,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// `PATH.partial`, where the file is built.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Exports PostgreSQL to a new SQLite file at `out`, the rejected legacy
/// rows restored; an existing file is refused unless `force`.
pub async fn export(pg: &PgSettings, out: &Path, force: bool) -> Result<ExportReport> {
    export_with(pg, out, force, true).await
}

/// As `export`; `with_rejects` false leaves the rejected legacy rows out.
pub async fn export_with(
    pg: &PgSettings,
    out: &Path,
    force: bool,
    with_rejects: bool,
) -> Result<ExportReport> {
    export_schema(pg, out, force, with_rejects, &tables::TWITTER).await
}

/// As `export_with`, for another application's tables: the new file gets
/// `schema.sqlite_ddl`, then its tables' rows, parents first.
pub async fn export_schema(
    pg: &PgSettings,
    out: &Path,
    force: bool,
    with_rejects: bool,
    schema: &'static tables::Schema,
) -> Result<ExportReport> {
    let started = Instant::now();
    if out.exists() && !force {
        return Err(Error::InvalidArgument(format!(
            "{} already exists; choose another path or pass --force to replace it",
            out.display()
        )));
    }
    crate::pg::preflight(pg).await?;
    let partial = partial_path(out);
    // A partial file is a previous run that did not finish: never trusted.
    for p in [
        partial.clone(),
        PathBuf::from(format!("{}-journal", partial.display())),
    ] {
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::Io {
                context: format!("removing the stale {}", p.display()),
                source: e,
            })?;
        }
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pg.connect_options())
        .await?;
    crate::pg::require_current(&pool).await?;
    let conn = tokio_rusqlite::Connection::open(&partial).await?;
    conn.call(move |c| -> Result<()> {
        c.execute_batch(schema.sqlite_ddl)?;
        Ok(())
    })
    .await?;

    let mut report = Vec::new();
    for &table in schema.tables {
        let rows = export_table(&pool, &conn, table).await?;
        let (restored, not_restored) = if with_rejects {
            restore_rejects(&pool, &conn, table).await?
        } else {
            (0, 0)
        };
        let sequence = if table.serial {
            set_sequence(&pool, &conn, table).await?
        } else {
            None
        };
        tracing::info!(table = table.name, rows, "exported");
        report.push(ExportedTable {
            table: table.name,
            rows,
            restored,
            not_restored,
            sequence,
        });
    }
    pool.close().await;
    conn.close().await.map_err(|e| Error::Database {
        backend: crate::Backend::Sqlite,
        kind: crate::DbErrorKind::Other,
        message: format!("closing {}: {e}", partial.display()),
    })?;
    // A replaced file's leftover WAL would be replayed into the new file.
    for suffix in ["-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", out.display()));
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::Io {
                context: format!("removing {} of the file being replaced", p.display()),
                source: e,
            })?;
        }
    }
    std::fs::rename(&partial, out).map_err(|e| Error::Io {
        context: format!("renaming {} to {}", partial.display(), out.display()),
        source: e,
    })?;
    Ok(ExportReport {
        out: out.to_path_buf(),
        tables: report,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

async fn export_table(
    pool: &sqlx::PgPool,
    conn: &tokio_rusqlite::Connection,
    table: &'static Table,
) -> Result<u64> {
    let mut range = Range::default();
    let mut total = 0u64;
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.name,
        table.column_list(),
        (1..=table.columns.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let by_bytes = side::pg_key_sorts_by_bytes(pool, table).await?;
    loop {
        let page = side::pg_rows(pool, table, &range, Some(PAGE_ROWS), by_bytes).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        range.lo = Some(last.clone());
        let n = page.len();
        let values: Vec<Vec<rusqlite::types::Value>> = page
            .iter()
            .map(|(_, cells)| cells.iter().map(legacy_value).collect())
            .collect();
        let sql = sql.clone();
        conn.call(move |c| -> Result<()> {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(&sql)?;
                for row in values {
                    stmt.execute(rusqlite::params_from_iter(row))?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
        total += n as u64;
        if (n as i64) < PAGE_ROWS {
            break;
        }
    }
    Ok(total)
}

/// Starts the exported file's generator past every id PostgreSQL used.
async fn set_sequence(
    pool: &sqlx::PgPool,
    conn: &tokio_rusqlite::Connection,
    table: &'static Table,
) -> Result<Option<i64>> {
    let Some(top) = crate::sequences::pg_top(pool, table).await? else {
        return Ok(None);
    };
    conn.call(move |c| crate::sequences::sqlite_raise(c, table, top))
        .await?;
    Ok(Some(top))
}

/// Restores `table`'s legacy rows PostgreSQL never took, from their images
/// in the reject ledger (one per source row). Returns (restored, not
/// restored).
async fn restore_rejects(
    pool: &sqlx::PgPool,
    conn: &tokio_rusqlite::Connection,
    table: &'static Table,
) -> Result<(u64, u64)> {
    let entries = {
        let mut c = pool.acquire().await?;
        crate::rejects::list(&mut c, table.name).await?
    };
    let mut seen = std::collections::HashSet::new();
    let mut rows = Vec::new();
    let mut unreadable = 0u64;
    for e in entries.into_iter().filter(|e| !e.row_copied) {
        // A row rejected for several columns has one entry per column.
        let source_row = match e.source_rowid {
            Some(r) => format!("rowid:{r}"),
            None => format!("key:{}", e.row_key),
        };
        if !seen.insert(source_row) {
            continue;
        }
        match crate::row::restore_image(table, &e.original) {
            Some(raws) => rows.push(raws),
            None => {
                tracing::warn!(table = table.name, key = %e.row_key, "reject entry without a readable original image; not restored");
                unreadable += 1;
            }
        }
    }
    if rows.is_empty() {
        return Ok((0, unreadable));
    }
    let columns = table.column_list();
    let name = table.name;
    let (restored, clashed) = conn
        .call(move |c| -> Result<(u64, u64)> {
            // Legacy rows went in without foreign-key checks (an orphan is
            // one of the reasons a row was rejected).
            c.execute_batch("PRAGMA foreign_keys = OFF")?;
            let tx = c.transaction()?;
            let (mut restored, mut clashed) = (0u64, 0u64);
            for raws in &rows {
                // Text is bound as bytes and cast back, so text that is not
                // UTF-8 comes back byte for byte.
                let placeholders: Vec<String> = raws
                    .iter()
                    .enumerate()
                    .map(|(i, r)| match r {
                        crate::row::OwnedRaw::Text(_) => format!("CAST(?{} AS TEXT)", i + 1),
                        _ => format!("?{}", i + 1),
                    })
                    .collect();
                let sql = format!(
                    "INSERT OR IGNORE INTO {name} ({columns}) VALUES ({})",
                    placeholders.join(", ")
                );
                let values: Vec<rusqlite::types::Value> = raws
                    .iter()
                    .map(|r| match r {
                        crate::row::OwnedRaw::Null => rusqlite::types::Value::Null,
                        crate::row::OwnedRaw::Integer(i) => rusqlite::types::Value::Integer(*i),
                        crate::row::OwnedRaw::Real(f) => rusqlite::types::Value::Real(*f),
                        crate::row::OwnedRaw::Text(b) | crate::row::OwnedRaw::Blob(b) => {
                            rusqlite::types::Value::Blob(b.clone())
                        }
                    })
                    .collect();
                let n = tx.execute(&sql, rusqlite::params_from_iter(values))?;
                if n == 1 {
                    restored += 1;
                } else {
                    clashed += 1;
                }
            }
            tx.commit()?;
            Ok((restored, clashed))
        })
        .await?;
    if clashed > 0 {
        tracing::warn!(table = name, rows = clashed, "rejected legacy rows not restored: rows PostgreSQL holds have their key or unique value");
    }
    Ok((restored, clashed + unreadable))
}
