//! The PostgreSQL side of one batch: checks, bulk load, rejects, checkpoint.
//!
//! Everything here runs in one transaction under `SET LOCAL
//! statement_timeout`, so the batch's rows, its rejects and the checkpoint
//! that moves past them commit together or not at all: a killed run resumes
//! with no duplicate and no gap.
//!
//! Rows go straight into the table with binary `COPY`, which is only safe
//! because the checks come first: rows whose parent is missing are rejected
//! as `orphan`, rows whose key (or other unique value) is already present
//! are counted as copied and left out (a live dual write is newer than the
//! legacy copy). A concurrent write landing between the check and the
//! `COPY` makes the `COPY` fail; the caller retries the batch, and the
//! table's later batches go through a staging table with `ON CONFLICT (key)
//! DO NOTHING` (`Loading::staged`).
//!
//! The batch was read from a SQLite snapshot without holding the write
//! lock, so the application may have deleted some of its rows meanwhile,
//! and their copies may have reached PostgreSQL before the batch did: the
//! batch brings such a row back. [`settle_gone`] runs after the batch
//! commits on the rows no longer there, as a dual write's copy would: under
//! the key's copy lock, it reads SQLite again and deletes from PostgreSQL
//! what SQLite no longer holds.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use super::encode;
use super::source::{unique_columns, Batch, Source};
use crate::audit::Unknown;
use crate::convert::RejectReason;
use crate::error::{Backend, DbErrorKind, Error, Result};
use crate::rejects::{self, RejectRecord};
use crate::row::Policy;
use crate::tables::{Kind, Table};

/// What one committed batch did.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// Rows written by this batch.
    pub inserted: u64,
    /// Rows already present in PostgreSQL (counted as copied).
    pub present: u64,
    /// Rows rejected, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Values nulled under `null-and-record` in copied rows.
    pub nulled: u64,
    /// Rows a live write deleted from SQLite before the batch could reject
    /// them (neither copied nor rejected: they are no longer source rows).
    pub gone: u64,
    /// The copied rows (inserted or present): rowid, key as SQLite stored
    /// it, key as PostgreSQL holds it; checked again once the batch committed.
    pub rows: Vec<(i64, super::source::StoredKey, String)>,
}

impl Loaded {
    /// Copied rows: written now or already there.
    pub fn copied(&self) -> u64 {
        self.inserted + self.present
    }

    /// Rejected rows.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Which of `values` exist in `table.column`, compared as PostgreSQL stores them.
/// With `lock`, the rows found are locked `FOR KEY SHARE` until the batch
/// commits, as PostgreSQL's own foreign-key check would lock them.
async fn existing(
    conn: &mut PgConnection,
    table: &str,
    column: &str,
    kind: Kind,
    values: Vec<String>,
    lock: bool,
) -> Result<HashSet<String>> {
    if values.is_empty() {
        return Ok(HashSet::new());
    }
    let lock = if lock { " FOR KEY SHARE" } else { "" };
    let rows: Vec<(String,)> = if kind == Kind::Int {
        let ints: Vec<i32> = values.iter().filter_map(|v| v.parse().ok()).collect();
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {column}::text FROM {table} WHERE {column} = ANY($1::int4[]){lock}"
        )))
        .bind(ints)
        .fetch_all(conn)
        .await?
    } else {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {column}::text FROM {table} WHERE {column} = ANY($1::text[]){lock}"
        )))
        .bind(values)
        .fetch_all(conn)
        .await?
    };
    Ok(rows.into_iter().map(|(v,)| v).collect())
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let set: HashSet<String> = values.collect();
    set.into_iter().collect()
}

/// Whether the row-by-row foreign-key triggers may be skipped for `table`:
/// only for a superuser (`session_replication_role` needs it) and when the
/// table has no triggers besides the foreign keys' own.
pub(crate) async fn may_skip_fk_triggers(conn: &mut PgConnection, table: &Table) -> Result<bool> {
    let ok: bool = sqlx::query_scalar(
        "SELECT current_setting('is_superuser') = 'on'
            AND NOT EXISTS (SELECT 1 FROM pg_trigger
                            WHERE tgrelid = to_regclass($1) AND NOT tgisinternal)",
    )
    .bind(table.name)
    .fetch_one(conn)
    .await?;
    Ok(ok)
}

/// What every batch of one table is loaded with.
pub(crate) struct Loading<'a> {
    /// The source the batches were read from (for reject images).
    pub source: &'a Source,
    /// The table.
    pub table: &'static Table,
    /// What to do with a bad value.
    pub policy: Policy,
    /// `statement_timeout` of a batch's transaction.
    pub statement_timeout: Duration,
    /// Skip PostgreSQL's per-row foreign-key triggers (see `load_batch`).
    pub skip_fk_triggers: bool,
    /// Load through a staging table, `ON CONFLICT (key) DO NOTHING`: a live
    /// write that lands between the checks and the load keeps its row.
    pub staged: bool,
    /// The application copies its own writes (`dualwrite`/`shadow`): a row
    /// whose parent PostgreSQL lacks but SQLite holds (and the ledger does
    /// not) fails the batch with `MissingParent` instead of being rejected,
    /// for the caller to retry once the parent's copy landed.
    pub wait_for_parents: bool,
}

/// Loads `batch` (rows after rowid `after`, read from `source`) and moves
/// the checkpoint to `batch.last_rowid`, in one transaction.
///
/// With `skip_fk_triggers`, the `COPY` runs under `session_replication_role
/// = replica`, which skips PostgreSQL's per-row foreign-key checks: the
/// orphan check above already found every parent and locked it `FOR KEY
/// SHARE` until commit, which is what those checks would do, row by row.
pub(crate) async fn load_batch(
    conn: &mut PgConnection,
    load: &Loading<'_>,
    after: i64,
    batch: Batch,
    order: Order,
) -> Result<Loaded> {
    let Order { before, done } = order;
    let mut tx = conn.begin().await?;
    let out = load_in(&mut tx, load, after, batch, before).await;
    if out.is_ok() {
        crate::failpoint::gate("backfill.before_commit").await;
    }
    let committed = match out {
        Ok(out) => tx.commit().await.map(|()| out).map_err(Error::from),
        Err(e) => {
            // Rolled back now, not when the connection is next used: its
            // locks must not outlive the batch.
            let _ = tx.rollback().await;
            Err(e)
        }
    };
    let _ = done.send(committed.is_ok());
    committed
}

/// Where a batch stands among the batches loaded beside it: it commits only
/// once the batch before it did (`before` answers true), and tells the one
/// after it how it ended (`done`; dropped unsent, it says "failed").
pub(crate) struct Order {
    /// The previous batch's outcome; None for the first of a round.
    pub before: Option<tokio::sync::oneshot::Receiver<bool>>,
    /// This batch's outcome.
    pub done: tokio::sync::oneshot::Sender<bool>,
}

/// The batch after rowid `after` cannot commit: the one before it did not.
fn out_of_order(table: &Table, after: i64) -> Error {
    Error::Database {
        backend: Backend::Postgres,
        kind: DbErrorKind::Other,
        message: format!(
            "{}: batch after rowid {after} rolled back: the batch before it did not commit",
            table.name
        ),
    }
}

/// Of a batch's orphans, the first whose parent SQLite holds and the reject
/// ledger does not: a parent the application wrote after its table was
/// copied, whose own copy has not landed yet (it will: every write made in
/// `dualwrite`/`shadow` is copied). Rejecting its child would record a
/// reject for a row that reaches PostgreSQL anyway.
async fn parent_in_flight(
    tx: &mut PgConnection,
    source: &Source,
    table: &'static Table,
    rows: &[super::source::SourceRow],
    orphans: &[(usize, &'static str, String)],
) -> Result<Option<Error>> {
    // The orphans' parents are looked up together: in SQLite in one call
    // (a cached statement per foreign key), then in the reject ledger in
    // one query (a dirty file has thousands of orphans, children of
    // rejected rows).
    let mut wanted: Vec<(usize, usize, String)> = Vec::new();
    for (n, column, _) in orphans {
        let Some(i) = table.foreign_keys.iter().position(|f| f.column == *column) else {
            continue;
        };
        if let Some(parent) = rows[*n].parents[i].clone() {
            wanted.push((*n, i, parent));
        }
    }
    if wanted.is_empty() {
        return Ok(None);
    }
    let lookups: Vec<(usize, String)> = wanted.iter().map(|(_, i, p)| (*i, p.clone())).collect();
    let in_sqlite: Vec<bool> = source
        .with_conn(move |c| {
            let mut found = Vec::with_capacity(lookups.len());
            for (i, p) in lookups {
                let fk = table.foreign_keys[i];
                // A foreign key's column has its parent key's type.
                let int = table.column(fk.column).is_some_and(|c| c.kind == Kind::Int);
                let sql = format!(
                    "SELECT EXISTS (SELECT 1 FROM \"{}\" WHERE \"{}\" = ?1)",
                    fk.parent_table, fk.parent_column
                );
                let mut st = c.prepare_cached(&sql)?;
                let f: bool = match p.parse::<i64>() {
                    Ok(v) if int => st.query_row([v], |r| r.get(0))?,
                    _ => st.query_row([&p], |r| r.get(0))?,
                };
                found.push(f);
            }
            Ok(found)
        })
        .await?;
    let present: Vec<(&str, &str)> = wanted
        .iter()
        .zip(&in_sqlite)
        .filter(|(_, f)| **f)
        .map(|((_, i, p), _)| (table.foreign_keys[*i].parent_table, p.as_str()))
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let rejected = rejects::recorded(&mut *tx, &present).await?;
    for ((n, i, parent), f) in wanted.iter().zip(&in_sqlite) {
        let fk = table.foreign_keys[*i];
        if !*f || rejected.contains(&(fk.parent_table.to_string(), parent.clone())) {
            continue;
        }
        return Ok(Some(Error::MissingParent {
            table: table.name,
            key: format!("rowid {}", rows[*n].rowid),
            column: fk.column,
            parent_table: fk.parent_table,
            parent_key: parent.clone(),
        }));
    }
    Ok(None)
}

async fn load_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    load: &Loading<'_>,
    after: i64,
    batch: Batch,
    before: Option<tokio::sync::oneshot::Receiver<bool>>,
) -> Result<Loaded> {
    let Loading {
        source,
        table,
        policy,
        statement_timeout,
        skip_fk_triggers,
        staged,
        wait_for_parents,
    } = *load;
    // synchronous_commit off is safe here: the checkpoint commits with the
    // rows, so a batch lost in a server crash is simply copied again.
    // (session_replication_role is only named when it is set: a role that
    // is not a superuser may not even set it to its default.)
    // A large GIN pending list lets the full-text index take a batch's rows
    // in a few big sorted merges instead of many small ones (1M tweets from
    // `cutover generate`: 23,067 rows/s against 18,007–18,850 with the 4 MB
    // default); the list is merged when the table is done
    // (`resume_autovacuum`).
    sqlx::query(if skip_fk_triggers {
        "SELECT set_config('statement_timeout', $1, true),
                set_config('synchronous_commit', 'off', true),
                set_config('gin_pending_list_limit', '1GB', true),
                set_config('work_mem', '512MB', true),
                set_config('session_replication_role', 'replica', true)"
    } else {
        "SELECT set_config('statement_timeout', $1, true),
                set_config('synchronous_commit', 'off', true),
                set_config('gin_pending_list_limit', '1GB', true),
                set_config('work_mem', '512MB', true)"
    })
    .bind(format!("{}ms", statement_timeout.as_millis().max(1)))
    .execute(&mut **tx)
    .await?;

    let Batch {
        rows,
        mut rejects,
        buf,
        last_rowid,
        ..
    } = batch;
    let mut out = Loaded::default();
    let mut dropped = vec![false; rows.len()];

    // Orphans: a parent that is not in PostgreSQL (rejected, or never there).
    let mut orphans: Vec<(usize, &'static str, String)> = Vec::new();
    for (i, fk) in table.foreign_keys.iter().enumerate() {
        let kind = table.column(fk.column).map_or(Kind::Text, |c| c.kind);
        let wanted = distinct(rows.iter().filter_map(|r| r.parents[i].clone()));
        let found = existing(tx, fk.parent_table, fk.parent_column, kind, wanted, true).await?;
        for (n, r) in rows.iter().enumerate() {
            if dropped[n] {
                continue;
            }
            if let Some(p) = &r.parents[i] {
                if !found.contains(p) {
                    dropped[n] = true;
                    orphans.push((
                        n,
                        fk.column,
                        format!(
                            "{}.{} = {p:?} does not exist in PostgreSQL (rejected or never present)",
                            fk.parent_table, fk.parent_column
                        ),
                    ));
                }
            }
        }
    }
    if wait_for_parents && !orphans.is_empty() {
        if let Some(e) = parent_in_flight(tx, source, table, &rows, &orphans).await? {
            return Err(e);
        }
    }
    if !orphans.is_empty() {
        let mut images = images_by_rowid(
            source,
            table,
            orphans.iter().map(|(n, ..)| rows[*n].rowid).collect(),
        )
        .await?;
        for (n, column, detail) in orphans {
            let Some((key, image)) = images.remove(&rows[n].rowid) else {
                // Deleted by the application since the batch read it.
                out.gone += 1;
                continue;
            };
            let rowid = rows[n].rowid;
            rejects.push(RejectRecord {
                table: table.name.to_string(),
                row_key: key,
                source_rowid: Some(rowid),
                column: column.to_string(),
                reason: RejectReason::Orphan,
                detail,
                policy,
                row_copied: false,
                original: image,
            });
        }
    }

    // Already present, by primary key only: a live write got there first
    // and is newer. Another unique value PostgreSQL holds under another key
    // is a clash, not the same row: rejected as `unique_violation`.
    let mut clashes = Vec::new();
    let mut present = Vec::new();
    for (i, col) in unique_columns(table).into_iter().enumerate() {
        let kind = table.column(col).map_or(Kind::Text, |c| c.kind);
        let wanted = distinct(
            rows.iter()
                .zip(&dropped)
                .filter(|(_, d)| !**d)
                .filter_map(|(r, _)| r.uniques[i].clone()),
        );
        let found = existing(tx, table.name, col, kind, wanted, false).await?;
        if found.is_empty() {
            continue;
        }
        for (n, r) in rows.iter().enumerate() {
            if let Some(v) = r.uniques[i].as_ref().filter(|v| found.contains(*v)) {
                if dropped[n] {
                    continue;
                }
                dropped[n] = true;
                if i == 0 {
                    out.present += 1;
                    present.push(n);
                } else {
                    clashes.push((
                        n,
                        col,
                        format!(
                            "{}.{col} = {v:?} is held in PostgreSQL by another {} (a different row)",
                            table.name, table.primary_key
                        ),
                    ));
                }
            }
        }
    }
    if !clashes.is_empty() {
        let mut images = images_by_rowid(
            source,
            table,
            clashes.iter().map(|(n, ..)| rows[*n].rowid).collect(),
        )
        .await?;
        for (n, column, detail) in clashes {
            let Some((key, image)) = images.remove(&rows[n].rowid) else {
                out.gone += 1;
                continue;
            };
            let rowid = rows[n].rowid;
            rejects.push(RejectRecord {
                table: table.name.to_string(),
                row_key: key,
                source_rowid: Some(rowid),
                column: column.to_string(),
                reason: RejectReason::UniqueViolation,
                detail,
                policy,
                row_copied: false,
                original: image,
            });
        }
    }

    let kept: Vec<usize> = (0..rows.len()).filter(|&n| !dropped[n]).collect();
    if !kept.is_empty() {
        let mut data = Vec::with_capacity(buf.len() + encode::HEADER.len() + 2);
        data.extend_from_slice(encode::HEADER);
        if kept.len() == rows.len() {
            data.extend_from_slice(&buf);
        } else {
            for &n in &kept {
                data.extend_from_slice(&buf[rows[n].range.clone()]);
            }
        }
        data.extend_from_slice(encode::TRAILER);
        if staged {
            let stage = format!("cutover_stage_{}", table.name);
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {}) ON COMMIT DELETE ROWS",
                table.name
            )))
            .execute(&mut **tx)
            .await?;
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY {stage} ({}) FROM STDIN (FORMAT binary)",
                    table.column_list()
                ))
                .await?;
            copy.send(data).await?;
            let staged_rows = copy.finish().await?;
            out.inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO {t} ({c}) SELECT {c} FROM {stage} ON CONFLICT ({k}) DO NOTHING",
                t = table.name,
                c = table.column_list(),
                k = table.primary_key
            )))
            .execute(&mut **tx)
            .await?
            .rows_affected();
            // Rows a live write put there since the checks: present.
            out.present += staged_rows - out.inserted;
        } else {
            let mut copy = tx
                .copy_in_raw(&format!(
                    "COPY {} ({}) FROM STDIN (FORMAT binary)",
                    table.name,
                    table.column_list()
                ))
                .await?;
            copy.send(data).await?;
            out.inserted = copy.finish().await?;
        }
    }

    for &n in &kept {
        out.nulled += rows[n].nulled.len() as u64;
    }
    let mut copied: Vec<usize> = kept.iter().copied().chain(present).collect();
    copied.sort_unstable();
    out.rows = copied
        .iter()
        .map(|&n| {
            let r = &rows[n];
            (
                r.rowid,
                r.stored_key.clone(),
                r.uniques[0].clone().unwrap_or_default(),
            )
        })
        .collect();
    for r in &rejects {
        *out.rejected.entry(r.reason).or_default() += 1;
    }
    let mut records = rejects;
    for n in kept {
        records.extend(rows[n].nulled.iter().cloned());
    }
    rejects::insert(tx, &records).await?;

    if let Some(before) = before {
        if before.await != Ok(true) {
            return Err(out_of_order(table, after));
        }
    }
    if let Some(last) = last_rowid {
        // The row exists (`checkpoint` creates it before the first batch).
        let moved = sqlx::query(
            "UPDATE cutover.checkpoints SET
                 last_key = $2,
                 rows_copied = rows_copied + $3,
                 rows_rejected = rows_rejected + $4,
                 updated_at = now()
             WHERE table_name = $1 AND COALESCE(last_key, '0') = $5",
        )
        .bind(table.name)
        .bind(last.to_string())
        .bind(out.copied() as i64)
        .bind(out.rejected_total() as i64)
        .bind(after.to_string())
        .execute(&mut **tx)
        .await?;
        // Batches load side by side but commit in order (above); and the
        // checkpoint only moves on from where the batch before left it, so
        // no gap can ever be committed.
        if moved.rows_affected() == 0 {
            return Err(out_of_order(table, after));
        }
    }
    Ok(out)
}

/// Images of batch rows by rowid (rows deleted since are absent).
async fn images_by_rowid(
    source: &Source,
    table: &'static Table,
    rowids: Vec<i64>,
) -> Result<std::collections::HashMap<i64, (String, serde_json::Value)>> {
    Ok(source
        .images(table, rowids)
        .await?
        .into_iter()
        .map(|(rowid, key, image)| (rowid, (key, image)))
        .collect())
}

/// Settles the keys of a committed batch's rows that a live write deleted
/// (or re-keyed) after the batch read them: each key's copy lock is taken
/// (the lock every dual write's copy of that key takes, see
/// `crate::image::pg_lock_copy`), SQLite is read again, and the keys SQLite
/// no longer holds are deleted from PostgreSQL, where the batch may have
/// brought them back. A copy of a later write to the same key waits for
/// this transaction and then reads SQLite itself, so nothing newer is
/// deleted. The checkpoint's copied total drops by the rows gone (they are
/// no longer source rows). Returns how many keys SQLite no longer holds.
pub(crate) async fn settle_gone(
    conn: &mut PgConnection,
    source: &Source,
    table: &'static Table,
    mut keys: Vec<String>,
) -> Result<u64> {
    if keys.is_empty() {
        return Ok(0);
    }
    keys.sort();
    keys.dedup();
    let mut attempt = 0;
    loop {
        match settle_once(conn, source, table, &keys).await {
            // A parent whose children's deletes are still on their way to
            // PostgreSQL: they land within moments; then it goes too.
            Err(e) if e.db_kind() == Some(DbErrorKind::ForeignKeyViolation) && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return Err(Error::Database {
                    backend: Backend::Postgres,
                    kind: e.db_kind().unwrap_or(DbErrorKind::Other),
                    message: format!(
                        "{}: removing rows the application deleted while their batch loaded ({} keys): {e}",
                        table.name,
                        keys.len()
                    ),
                })
            }
            Ok(n) => return Ok(n),
        }
    }
}

async fn settle_once(
    conn: &mut PgConnection,
    source: &Source,
    table: &'static Table,
    keys: &[String],
) -> Result<u64> {
    let mut tx = conn.begin().await?;
    for k in keys {
        crate::image::pg_lock_copy(&mut *tx, table.name, k, None).await?;
    }
    let parsed: Vec<crate::image::Key> = keys
        .iter()
        .map(|k| crate::image::Key::parse(table, k))
        .collect::<Result<_>>()?;
    let absent: Vec<crate::image::Key> = source
        .with_conn(move |c| -> Result<Vec<crate::image::Key>> {
            let mut out = Vec::new();
            for k in parsed {
                if crate::image::sqlite_read(c, table, &k)?.is_none() {
                    out.push(k);
                }
            }
            Ok(out)
        })
        .await?;
    for k in &absent {
        if crate::image::pg_delete(&mut *tx, table, k).await? {
            tracing::info!(table = table.name, key = %k, "row deleted by the application while its batch loaded: removed from PostgreSQL again");
        }
    }
    // Every row the batch counted and that is no longer there stops being
    // a source row: deleted, or deleted and written again under a new rowid
    // (which a later batch reads and counts).
    sqlx::query(
        "UPDATE cutover.checkpoints SET rows_copied = rows_copied - $2, updated_at = now()
         WHERE table_name = $1",
    )
    .bind(table.name)
    .bind(keys.len() as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(absent.len() as u64)
}

/// PostgreSQL's estimate of the rows `table` holds (0 when never counted).
pub(crate) async fn estimated_rows(conn: &mut PgConnection, table: &Table) -> Result<f64> {
    let n: Option<f32> = sqlx::query_scalar(
        "SELECT reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relname = $1",
    )
    .bind(table.name)
    .fetch_optional(conn)
    .await?;
    Ok(n.map_or(0.0, |n| f64::from(n.max(0.0))))
}

/// Switches off the vacuums that inserts trigger on `table` while the
/// backfill loads it; automatic ANALYZE stays on, so plans follow the
/// table's growth. (DML is not blocked: the setting takes a SHARE UPDATE
/// EXCLUSIVE lock.)
pub(crate) async fn pause_autovacuum(conn: &mut PgConnection, table: &Table) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {} SET (autovacuum_vacuum_insert_threshold = -1)",
        table.name
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Switches insert-triggered vacuums back on for `table`, merges the
/// pending lists of its GIN indexes (searches would scan them row by row)
/// and refreshes its statistics.
pub(crate) async fn resume_autovacuum(conn: &mut PgConnection, table: &Table) -> Result<()> {
    let gin = super::indexes::gin_indexes(&mut *conn, table).await?;
    if !gin.is_empty() {
        super::indexes::merge_now(&mut *conn, &gin).await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {} RESET (autovacuum_vacuum_insert_threshold)",
        table.name
    )))
    .execute(&mut *conn)
    .await?;
    // The columns by name: ANALYZE then leaves out the statistics of
    // expression indexes (the full-text index's to_tsvector over a sample:
    // seconds on a large table), which the next automatic ANALYZE gathers.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ANALYZE {} ({})",
        table.name,
        table.column_list()
    )))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// A table's checkpoint: the last rowid copied and the running totals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Checkpoint {
    /// Rowid to continue after.
    pub last_rowid: i64,
    /// Rows copied so far, over every run.
    pub copied: u64,
    /// Rows rejected so far, over every run.
    pub rejected: u64,
}

/// Reads `table`'s checkpoint (zeroes when it has none), creating its row
/// (batches only ever update it).
pub(crate) async fn checkpoint(conn: &mut PgConnection, table: &Table) -> Result<Checkpoint> {
    sqlx::query("INSERT INTO cutover.checkpoints (table_name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(table.name)
        .execute(&mut *conn)
        .await?;
    let row: Option<(Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT last_key, rows_copied, rows_rejected FROM cutover.checkpoints WHERE table_name = $1",
    )
    .bind(table.name)
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Checkpoint::default(),
        Some((key, copied, rejected)) => Checkpoint {
            last_rowid: key.and_then(|k| k.parse().ok()).unwrap_or(0),
            copied: copied as u64,
            rejected: rejected as u64,
        },
    })
}

/// Marks `table` as having been read to its end once.
pub(crate) async fn mark_completed(conn: &mut PgConnection, table: &Table) -> Result<()> {
    sqlx::query(
        "INSERT INTO cutover.checkpoints (table_name, completed, completed_at)
         VALUES ($1, TRUE, now())
         ON CONFLICT (table_name) DO UPDATE SET completed = TRUE,
             completed_at = COALESCE(cutover.checkpoints.completed_at, now()), updated_at = now()",
    )
    .bind(table.name)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the operator's acknowledgement of tables and columns left behind
/// (`--ignore-unknown`), with the counts this run saw.
pub(crate) async fn record_acknowledged(
    conn: &mut PgConnection,
    unknown: &[Unknown],
) -> Result<()> {
    for u in unknown {
        sqlx::query(
            "INSERT INTO cutover.acknowledged_drift (name, kind, rows, non_null)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, rows = EXCLUDED.rows,
                 non_null = EXCLUDED.non_null, acknowledged_at = now()",
        )
        .bind(&u.name)
        .bind(u.kind)
        .bind(u.rows as i64)
        .bind(u.non_null.map(|n| n as i64))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Records the one row after rowid `after` (`rowid`) that PostgreSQL
/// refused on its own (a batch of one) as a `refused` reject with
/// PostgreSQL's message, and moves the checkpoint past it, in one
/// transaction.
pub(crate) async fn reject_refused(
    conn: &mut PgConnection,
    source: &Source,
    table: &'static Table,
    policy: Policy,
    after: i64,
    rowid: i64,
    message: &str,
) -> Result<()> {
    let images = source.images(table, vec![rowid]).await?;
    let Some((rowid, key, image)) = images.into_iter().next() else {
        return Err(Error::InvalidArgument(format!(
            "{}: row rowid {rowid} refused by PostgreSQL is gone from SQLite; run the backfill again",
            table.name
        )));
    };
    let mut tx = conn.begin().await?;
    rejects::insert(
        &mut tx,
        &[RejectRecord {
            table: table.name.to_string(),
            row_key: key,
            source_rowid: Some(rowid),
            column: String::new(),
            reason: RejectReason::Refused,
            detail: format!("PostgreSQL refused the row: {message}"),
            policy,
            row_copied: false,
            original: image,
        }],
    )
    .await?;
    let moved = sqlx::query(
        "UPDATE cutover.checkpoints SET last_key = $2, rows_rejected = rows_rejected + 1, updated_at = now()
         WHERE table_name = $1 AND COALESCE(last_key, '0') = $3",
    )
    .bind(table.name)
    .bind(rowid.to_string())
    .bind(after.to_string())
    .execute(&mut *tx)
    .await?;
    if moved.rows_affected() == 0 {
        return Err(out_of_order(table, after));
    }
    tx.commit().await?;
    Ok(())
}
