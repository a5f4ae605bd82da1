//! The authority: (epoch, stage, steady | fallback), one row on each side.
//!
//! SQLite's row (`_cutover_authority`) is the one every write reads inside
//! SQLite's write lock, so no two processes ever write under different
//! authorities: a process whose routing is older than the row follows it
//! before it writes. PostgreSQL's row (`cutover.authority`) fences what runs
//! outside the lock: a copy to PostgreSQL made under epoch e writes only
//! while that row still says e (`image::pg_upsert_fenced` reads it FOR
//! SHARE in the copy's own statement, so a flip's update waits for it). Both rows change only under the lock (a
//! flip, a fallback, its return), PostgreSQL's first.

use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::error::{Backend, Result};
use crate::stage::Stage;

/// One side's authority row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Authority {
    /// Bumped by every flip, fallback and return.
    pub epoch: i64,
    /// The stage.
    pub stage: Stage,
    /// SQLite stands in for an unreachable PostgreSQL.
    pub fallback: bool,
}

impl Authority {
    /// The side whose answer the caller gets and that writes go to first.
    pub fn authoritative(&self) -> Backend {
        if self.fallback {
            Backend::Sqlite
        } else {
            self.stage.authoritative()
        }
    }

    /// The side writes are copied to.
    pub fn secondary(&self) -> Option<Backend> {
        if self.fallback {
            Some(Backend::Postgres)
        } else {
            self.stage.secondary()
        }
    }
}

/// The SQLite authority table (created beside the outbox).
pub const SQLITE_DDL: &str = "CREATE TABLE IF NOT EXISTS _cutover_authority (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL,
    stage TEXT NOT NULL,
    fallback INTEGER NOT NULL DEFAULT 0
);";

/// Reads SQLite's row (None before the dual store first opened the file).
pub fn sqlite_read(conn: &rusqlite::Connection) -> Result<Option<Authority>> {
    let row: Option<(i64, String, bool)> = conn
        .prepare_cached("SELECT epoch, stage, fallback FROM _cutover_authority WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.map(|(epoch, stage, fallback)| Authority {
        epoch,
        stage: Stage::parse(&stage).unwrap_or(Stage::Off),
        fallback,
    }))
}

/// Writes SQLite's row (inside the lock).
pub fn sqlite_write(conn: &rusqlite::Connection, a: &Authority) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO _cutover_authority (id, epoch, stage, fallback) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch, stage = excluded.stage, fallback = excluded.fallback",
    )?
    .execute((a.epoch, a.stage.as_str(), a.fallback))?;
    Ok(())
}

/// Reads PostgreSQL's row.
pub async fn pg_read<'e, E>(exec: E) -> Result<Authority>
where
    E: sqlx::PgExecutor<'e>,
{
    let (epoch, stage, fallback): (i64, String, bool) =
        sqlx::query_as("SELECT epoch, stage, fallback FROM cutover.authority")
            .fetch_one(exec)
            .await?;
    Ok(Authority {
        epoch,
        stage: Stage::parse(&stage).unwrap_or(Stage::Off),
        fallback,
    })
}

/// Writes PostgreSQL's row.
pub async fn pg_write<'e, E>(exec: E, a: &Authority) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query(
        "UPDATE cutover.authority SET epoch = $1, stage = $2, fallback = $3, changed_at = now()",
    )
    .bind(a.epoch)
    .bind(a.stage.as_str())
    .bind(a.fallback)
    .execute(exec)
    .await?;
    Ok(())
}

/// When a process opens the dual store: SQLite's row, created from
/// PostgreSQL's on first use; unless SQLite is in a fallback (PostgreSQL's
/// row is then behind on purpose), both rows are made to agree, at the
/// higher of their epochs.
pub async fn init(sqlite: &crate::SqliteStore, pg: &crate::PgStore) -> Result<Authority> {
    // Most opens find the rows agreeing: nothing to write, no lock.
    let sa = sqlite.read(sqlite_read).await?;
    match (sa, pg_read(pg.pool()).await) {
        (Some(a), Err(_)) => return Ok(a),
        (Some(a), Ok(p)) if a.fallback || a == p => return Ok(a),
        _ => {}
    }
    // SQLite's row moves only under the order lock, exclusive (which tells
    // every process to read it again), and SQLite's write lock; judged
    // again there.
    let _order = sqlite.order_exclusive().await?;
    let held = sqlite.lock().await?;
    let sa = held.call(|c| sqlite_read(c)).await?;
    let pa = pg_read(pg.pool()).await;
    let a = match (sa, pa) {
        (Some(a), Err(_)) => a,
        (Some(a), Ok(p)) if a.fallback || a == p => a,
        (Some(a), Ok(p)) => {
            let a = Authority {
                epoch: a.epoch.max(p.epoch),
                ..a
            };
            pg_write(pg.pool(), &a).await?;
            held.call(move |c| sqlite_write(c, &a)).await?;
            a
        }
        (None, Ok(p)) => {
            let a = Authority {
                fallback: false,
                ..p
            };
            pg_write(pg.pool(), &a).await?;
            held.call(move |c| sqlite_write(c, &a)).await?;
            a
        }
        (None, Err(e)) => return Err(e),
    };
    held.commit().await?;
    Ok(a)
}

/// Records a row both sides changed across a fallback in
/// `cutover.conflicts` (created with the authority, migration 0007), with
/// both images.
pub(crate) async fn record_conflict(
    pool: &sqlx::PgPool,
    table: &str,
    key: &str,
    postgres_image: Option<serde_json::Value>,
    sqlite_image: Option<serde_json::Value>,
    detail: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO cutover.conflicts (table_name, row_key, postgres_image, sqlite_image, detail)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(table)
    .bind(key)
    .bind(postgres_image)
    .bind(sqlite_image)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}
