//! `cutover verify`: compare both databases table by table, optionally repair.
//!
//! For each table: row counts; then the key space is cut into ranges of at
//! most `chunk_rows` keys on either side, and each database computes a
//! checksum of its rows' canonical form per range (`canonical`), next to the
//! data, so agreeing ranges ship no rows. Only ranges whose checksums differ
//! are read row by row and compared on domain values (JSON semantically,
//! timestamps at microseconds): each divergent key is `missing` (on the
//! authoritative side only), `extra` (on the other side only) or `field`
//! (naming the columns). Legacy rows recorded in `cutover.rejects` as not
//! copied are accounted for, not divergence.
//!
//! SQLite is authoritative until the stage is `live`, `rampdown` or
//! `complete`. `--repair` rewrites divergent rows on the other side from
//! the authoritative side's image (upsert, or delete an extra) and verifies
//! again. Every run is recorded in `cutover.verify_runs`, whose last row
//! gates the move to `live`.

pub mod canonical;
mod diff;
mod repair;
pub mod side;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use sqlx::PgPool;

use crate::error::{Backend, Error, Result};
use crate::row::{Cell, OwnedRaw};
use crate::settings::PgSettings;
use crate::tables::{self, Table};
use canonical::SortKey;
use side::Range;

pub use diff::json_eq;

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The legacy SQLite file.
    pub sqlite_path: PathBuf,
    /// PostgreSQL.
    pub postgres: PgSettings,
    /// The application's tables (the Twitter application's by default).
    pub schema: &'static tables::Schema,
    /// Only these tables (all when `None`).
    pub tables: Option<Vec<String>>,
    /// Rewrite divergent rows from the authoritative side, then verify again.
    pub repair: bool,
    /// Most keys per checksummed range on either side.
    pub chunk_rows: i64,
    /// Where progress goes (ranges compared per table); `None`: nowhere.
    pub progress: Option<std::sync::Arc<dyn crate::progress::Progress>>,
    /// Most divergent (and rejected) keys listed per table in the report;
    /// the counts are always exact.
    pub max_listed: usize,
    /// Without `repair`: divergent rows are read again on both sides, for up
    /// to this long, and those that come to agree are lag of live writes on
    /// their way (outbox), not divergence. Zero reports the first pass as is.
    pub settle: std::time::Duration,
}

impl VerifyOptions {
    /// Defaults: every table, no repair, 1000-key ranges, 100 keys listed.
    pub fn new(sqlite_path: impl Into<PathBuf>, postgres: PgSettings) -> Self {
        Self {
            sqlite_path: sqlite_path.into(),
            postgres,
            schema: &tables::TWITTER,
            tables: None,
            repair: false,
            chunk_rows: 1000,
            progress: None,
            max_listed: 100,
            settle: std::time::Duration::from_secs(3),
        }
    }
}

/// How a key diverges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DivergenceKind {
    /// On the authoritative side only.
    Missing,
    /// On the other side only.
    Extra,
    /// On both, with different values.
    Field,
}

impl DivergenceKind {
    /// Every kind.
    pub const ALL: [DivergenceKind; 3] = [Self::Missing, Self::Extra, Self::Field];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Extra => "extra",
            Self::Field => "field",
        }
    }
}

/// One divergent row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Divergence {
    /// The primary key, as text.
    pub key: String,
    /// How it diverges.
    pub kind: DivergenceKind,
    /// The differing columns (`field` only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Why it cannot be compared or repaired, when that is the case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One table's result.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Table name.
    pub table: &'static str,
    /// Rows in SQLite.
    pub sqlite_rows: i64,
    /// Rows in PostgreSQL.
    pub postgres_rows: i64,
    /// Legacy rows absent from PostgreSQL because they were rejected.
    pub rejected_rows: u64,
    /// Ranges checksummed.
    pub chunks: u64,
    /// Ranges whose checksums differed (and were compared row by row).
    pub chunks_compared: u64,
    /// `missing` rows.
    pub missing: u64,
    /// `extra` rows.
    pub extra: u64,
    /// `field` rows.
    pub field: u64,
    /// The first divergent keys (up to `max_listed`).
    pub divergences: Vec<Divergence>,
    /// The first rejected keys (up to `max_listed`).
    pub rejected: Vec<String>,
    /// Whether `sqlite_rows = postgres_rows + rejected_rows`.
    pub counts_add_up: bool,
    /// Source rows neither in PostgreSQL, nor rejected, nor reported as
    /// divergent (signed: negative when PostgreSQL holds more than that
    /// explains); the table is not clean unless zero.
    pub unaccounted_rows: i64,
    /// Why the counts do not add up, when they do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_problem: Option<String>,
}

impl TableReport {
    /// Divergent rows of this table.
    pub fn divergent_rows(&self) -> u64 {
        self.missing + self.extra + self.field
    }

    /// No divergent row and every source row accounted for.
    pub fn clean(&self) -> bool {
        self.divergent_rows() == 0 && self.unaccounted_rows == 0
    }

    /// Checks source = PostgreSQL + rejected, allowing for the rows already
    /// reported as on one side only.
    fn check_counts(&mut self, authority: Backend) {
        let (source_only, pg_only) = match authority {
            Backend::Sqlite => (self.missing, self.extra),
            Backend::Postgres => (self.extra, self.missing),
        };
        let rejected = self.rejected_rows as i64;
        self.counts_add_up = self.sqlite_rows == self.postgres_rows + rejected;
        self.unaccounted_rows = self.sqlite_rows
            - (self.postgres_rows + rejected + source_only as i64 - pg_only as i64);
        self.count_problem = (self.unaccounted_rows != 0).then(|| {
            format!(
                "source {} != postgres {} + rejected {} ({} reported on SQLite only, {} on PostgreSQL only): {} rows not accounted for",
                self.sqlite_rows,
                self.postgres_rows,
                rejected,
                source_only,
                pg_only,
                self.unaccounted_rows
            )
        });
    }
}

/// What `--repair` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Divergent rows found before the repair.
    pub divergent_before: u64,
    /// Rows written (upserted) on the non-authoritative side.
    pub rows_written: u64,
    /// Rows deleted on the non-authoritative side.
    pub rows_deleted: u64,
    /// Divergent rows that could not be rewritten (the authoritative value
    /// does not convert, or the key is NULL or not UTF-8); they stay
    /// divergent.
    pub unrepairable: u64,
}

/// The result of `cutover verify`.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The stage read from `cutover.state`.
    pub stage: String,
    /// `sqlite` or `postgres`.
    pub authoritative: &'static str,
    /// Per table, in copy order.
    pub tables: Vec<TableReport>,
    /// Divergent rows over all tables (after the repair, when repairing).
    pub divergent_rows: u64,
    /// Rejected rows accounted for over all tables.
    pub rejected_rows: u64,
    /// True when no row diverges and every table's counts add up.
    pub clean: bool,
    /// Present when `--repair` ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repair: Option<RepairReport>,
    /// The `cutover.verify_runs` id of this run.
    pub run_id: Option<i64>,
    /// Wall time of the whole run.
    pub elapsed_ms: u64,
}

/// A rewrite that would remove one divergence.
#[derive(Debug, Clone)]
pub(crate) enum Fix {
    /// Upsert the authoritative row image (cells in column order).
    Upsert(&'static Table, Vec<Cell>),
    /// Delete a row (its key as SQLite stores it, or as PostgreSQL does).
    Delete(&'static Table, OwnedRaw),
}

/// Runs `cutover verify` (and the repair, when asked).
pub async fn verify(opts: &VerifyOptions) -> Result<VerifyReport> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let selected = opts.schema.select(opts.tables.as_deref())?;
    crate::pg::preflight(&opts.postgres).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(opts.postgres.connect_options())
        .await?;
    crate::pg::require_current(&pool).await?;
    let stage: String = sqlx::query_scalar("SELECT stage FROM cutover.state")
        .fetch_one(&pool)
        .await?;
    let authority = if matches!(stage.as_str(), "live" | "rampdown" | "complete") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    let sqlite = open_sqlite(opts).await?;

    let (mut tables_out, fixes) = pass(opts, &pool, &sqlite, &selected, authority).await?;
    if !opts.repair && !opts.settle.is_zero() {
        settle(opts.schema, &mut tables_out, &pool, &sqlite, opts.settle).await;
    }
    recount(opts, &mut tables_out, &pool, &sqlite, authority).await?;
    let mut repair_report = None;
    if opts.repair {
        let before: u64 = tables_out.iter().map(TableReport::divergent_rows).sum();
        let mut rr = RepairReport {
            divergent_before: before,
            ..Default::default()
        };
        if before > 0 {
            let (written, deleted) =
                repair::apply(opts.schema, &pool, &sqlite, authority, &fixes).await?;
            rr.rows_written = written;
            rr.rows_deleted = deleted;
            rr.unrepairable = before.saturating_sub(fixes.len() as u64);
            tables_out = pass(opts, &pool, &sqlite, &selected, authority).await?.0;
            recount(opts, &mut tables_out, &pool, &sqlite, authority).await?;
        }
        repair_report = Some(rr);
    }

    let divergent_rows: u64 = tables_out.iter().map(TableReport::divergent_rows).sum();
    let rejected_rows: u64 = tables_out.iter().map(|t| t.rejected_rows).sum();
    for t in &tables_out {
        divergence_gauges(t);
    }
    let tables_out_clean = tables_out.iter().all(TableReport::clean);
    let mut report = VerifyReport {
        stage,
        authoritative: authority.as_str(),
        tables: tables_out,
        divergent_rows,
        rejected_rows,
        clean: tables_out_clean,
        repair: repair_report,
        run_id: None,
        elapsed_ms: started.elapsed().as_millis() as u64,
    };
    let json = serde_json::to_value(&report).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO cutover.verify_runs (started_at, finished_at, divergent_rows, clean, report, all_tables) \
         VALUES ($1, now(), $2, $3, $4, $5) RETURNING id",
    )
    .bind(started_at)
    .bind(divergent_rows as i64)
    .bind(report.clean)
    .bind(sqlx::types::Json(json))
    .bind(selected.len() == opts.schema.tables.len())
    .fetch_one(&pool)
    .await?;
    report.run_id = Some(id);
    pool.close().await;
    Ok(report)
}

async fn open_sqlite(opts: &VerifyOptions) -> Result<tokio_rusqlite::Connection> {
    if !opts.sqlite_path.exists() {
        return Err(Error::Config(format!(
            "the SQLite file {} does not exist",
            opts.sqlite_path.display()
        )));
    }
    let conn = tokio_rusqlite::Connection::open(&opts.sqlite_path).await?;
    let schema = opts.schema;
    conn.call(move |c| -> Result<()> {
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        canonical::register(c, schema)?;
        Ok(())
    })
    .await?;
    Ok(conn)
}

/// Tables whose counts did not add up are counted again (a live write
/// between the counts and the scan, or a divergence settled since, moves
/// them) and checked again: up to `settle` long, as a write copied between
/// the two sides' counts can make one recount miss again under traffic.
/// With PostgreSQL authoritative a write holds the order lock, shared,
/// until its rows landed in SQLite, and under steady traffic some write is
/// always between the two sides: after a first recount that misses, each
/// recount takes the order lock exclusively for the length of its counts,
/// as a flip does (writers wait that long; none is between the sides).
async fn recount(
    opts: &VerifyOptions,
    tables_out: &mut [TableReport],
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    authority: Backend,
) -> Result<()> {
    let (schema, deadline) = (opts.schema, Instant::now() + opts.settle);
    let mut order = None;
    let mut missed = false;
    loop {
        let still = if authority == Backend::Postgres && missed {
            let lock = match &order {
                Some(l) => l,
                None => order.insert(crate::sqlite::order::OrderLock::for_path(
                    &opts.sqlite_path,
                )?),
            };
            Some(lock.exclusive().await?)
        } else {
            None
        };
        missed = true;
        for t in tables_out.iter_mut().filter(|t| t.unaccounted_rows != 0) {
            let Some(table) = schema.by_name(t.table) else {
                continue;
            };
            t.sqlite_rows = sqlite.call(move |c| side::sqlite_count(c, table)).await?;
            t.postgres_rows = side::pg_count(pool, table).await?;
            t.check_counts(authority);
        }
        drop(still);
        if tables_out.iter().all(|t| t.unaccounted_rows == 0) || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Rejects with a source rowid: (rowid, row key) → whether the row was
/// copied. Rows whose key is NULL (or a blob) are matched by rowid.
async fn rejects_by_rowid(pool: &PgPool, table: &Table) -> Result<HashMap<(i64, String), bool>> {
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT source_rowid, row_key, bool_and(row_copied) FROM cutover.rejects \
         WHERE table_name = $1 AND source_rowid IS NOT NULL GROUP BY source_rowid, row_key",
    )
    .bind(table.name)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(r, k, c)| ((r, k), c)).collect())
}

/// Rejects of a table: row key → whether the row was copied (with NULLs).
async fn rejects(pool: &PgPool, table: &Table) -> Result<HashMap<String, bool>> {
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT row_key, bool_and(row_copied) FROM cutover.rejects WHERE table_name = $1 GROUP BY row_key",
    )
    .bind(table.name)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Sets `cutover_verify_divergent_rows` of one table.
fn divergence_gauges(t: &TableReport) {
    for kind in DivergenceKind::ALL {
        let n = match kind {
            DivergenceKind::Missing => t.missing,
            DivergenceKind::Extra => t.extra,
            DivergenceKind::Field => t.field,
        };
        metrics::gauge!("cutover_verify_divergent_rows", "table" => t.table, "kind" => kind.as_str())
            .set(n as f64);
    }
}

/// One verification pass over the selected tables.
async fn pass(
    opts: &VerifyOptions,
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    selected: &[&'static Table],
    authority: Backend,
) -> Result<(Vec<TableReport>, Vec<Fix>)> {
    let mut reports = Vec::new();
    let mut fixes = Vec::new();
    for &table in selected {
        let (r, f) = verify_table(opts, pool, sqlite, table, authority).await?;
        // As each table is checked, so a scrape during a long verify sees it.
        divergence_gauges(&r);
        tracing::debug!(
            table = table.name,
            sqlite_rows = r.sqlite_rows,
            postgres_rows = r.postgres_rows,
            chunks = r.chunks,
            compared = r.chunks_compared,
            missing = r.missing,
            extra = r.extra,
            field = r.field,
            rejected = r.rejected_rows,
            "verified"
        );
        reports.push(r);
        fixes.extend(f);
    }
    Ok((reports, fixes))
}

async fn verify_table(
    opts: &VerifyOptions,
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    table: &'static Table,
    authority: Backend,
) -> Result<(TableReport, Vec<Fix>)> {
    let every = opts.chunk_rows.max(1);
    let (sqlite_rows, mut bounds) = sqlite
        .call(move |c| -> Result<(i64, Vec<SortKey>)> {
            Ok((
                side::sqlite_count(c, table)?,
                side::sqlite_boundaries(c, table, every)?,
            ))
        })
        .await?;
    let postgres_rows = side::pg_count(pool, table).await?;
    let by_bytes = side::pg_key_sorts_by_bytes(pool, table).await?;
    bounds.extend(side::pg_boundaries(pool, table, every, by_bytes).await?);
    bounds.sort();
    bounds.dedup();
    let pg_hashes = side::pg_chunks_all(pool, table, &bounds, by_bytes).await?;
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for b in bounds {
        ranges.push(Range {
            lo: lo.clone(),
            hi: Some(b.clone()),
        });
        lo = Some(b);
    }
    ranges.push(Range { lo, hi: None });

    let rejects = rejects(pool, table).await?;
    let mut report = TableReport {
        table: table.name,
        sqlite_rows,
        postgres_rows,
        rejected_rows: 0,
        chunks: ranges.len() as u64,
        chunks_compared: 0,
        missing: 0,
        extra: 0,
        field: 0,
        divergences: Vec::new(),
        rejected: Vec::new(),
        counts_add_up: false,
        unaccounted_rows: 0,
        count_problem: None,
    };
    let mut fixes = Vec::new();
    let skip = odd_rows(
        opts,
        pool,
        sqlite,
        table,
        authority,
        &rejects,
        &mut report,
        &mut fixes,
    )
    .await?;
    let pb = opts.progress.as_deref();
    if let Some(p) = pb {
        p.start(table.name, "ranges", ranges.len() as u64);
    }
    for (range, (p_hash, p_count)) in ranges.into_iter().zip(pg_hashes) {
        let r = range.clone();
        let (s_hash, s_count) = sqlite
            .call(move |c| side::sqlite_chunk(c, table, &r))
            .await?;
        if let Some(p) = pb {
            p.advance(table.name, 1, None);
        }
        if s_hash == p_hash && s_count == p_count {
            continue;
        }
        report.chunks_compared += 1;
        let r = range.clone();
        let legacy = sqlite
            .call(move |c| side::sqlite_rows(c, table, &r))
            .await?;
        let target = side::pg_rows(pool, table, &range, None, by_bytes).await?;
        diff::diff_rows(
            table,
            legacy,
            target,
            &rejects,
            &skip,
            authority,
            opts.max_listed,
            &mut report,
            &mut fixes,
        );
        if let Some(p) = pb {
            p.advance(
                table.name,
                0,
                Some(&format!("{} divergent", report.divergent_rows())),
            );
        }
    }
    if let Some(p) = pb {
        p.finish(table.name, true);
    }
    report.check_counts(authority);
    Ok((report, fixes))
}

/// Checks the rows whose key is NULL or a blob, which no range holds: each
/// must be rejected (its ledger entry matched by rowid), or, for a blob key
/// that converts, agree with PostgreSQL's row of that key. Returns those
/// PostgreSQL keys, checked here, for the range comparison to leave alone.
#[allow(clippy::too_many_arguments)]
async fn odd_rows(
    opts: &VerifyOptions,
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    table: &'static Table,
    authority: Backend,
    rejects: &HashMap<String, bool>,
    report: &mut TableReport,
    fixes: &mut Vec<Fix>,
) -> Result<BTreeSet<SortKey>> {
    let mut skip = BTreeSet::new();
    let odd = sqlite
        .call(move |c| side::sqlite_odd_rows(c, table))
        .await?;
    if odd.is_empty() {
        return Ok(skip);
    }
    let by_rowid = rejects_by_rowid(pool, table).await?;
    let key_idx = table.key_index();
    let pk = table.primary_key;
    for (rowid, l) in odd {
        let null = matches!(l.raws[key_idx], OwnedRaw::Null);
        let ledger_key = if null {
            format!("NULL#rowid={rowid}")
        } else {
            l.key_text.clone()
        };
        if by_rowid.get(&(rowid, ledger_key.clone())) == Some(&false) {
            report.rejected_rows += 1;
            if report.rejected.len() < opts.max_listed {
                report.rejected.push(ledger_key);
            }
            continue;
        }
        let converted = if null {
            Err("the key is NULL, which PostgreSQL cannot hold".to_string())
        } else {
            match crate::convert::text(pk, l.raws[key_idx].as_raw()) {
                Ok(Some(k)) => Ok(k),
                Ok(None) => Err("the key is NULL".to_string()),
                Err(e) => Err(format!("the blob key does not convert: {e}")),
            }
        };
        match converted {
            Ok(k) => {
                skip.insert(SortKey::Bytes(k.clone().into_bytes()));
                let target = side::pg_row_by_key(pool, table, &k).await?;
                diff::diff_rows(
                    table,
                    vec![l],
                    target.into_iter().collect(),
                    rejects,
                    &BTreeSet::new(),
                    authority,
                    opts.max_listed,
                    report,
                    fixes,
                );
            }
            Err(why) => diff::record(
                report,
                Divergence {
                    key: ledger_key,
                    kind: if authority == Backend::Sqlite {
                        DivergenceKind::Missing
                    } else {
                        DivergenceKind::Extra
                    },
                    columns: Vec::new(),
                    detail: Some(format!(
                        "SQLite rowid {rowid}: {why}, and no entry in cutover.rejects accounts for it"
                    )),
                },
                opts.max_listed,
            ),
        }
    }
    Ok(skip)
}

/// Re-reads the listed divergent rows on both sides until they agree or
/// `limit` passes; rows that agree are dropped from the report. Only tables
/// whose every divergent key is listed are settled, so counts stay exact.
async fn settle(
    schema: &tables::Schema,
    tables_out: &mut [TableReport],
    pool: &PgPool,
    sqlite: &tokio_rusqlite::Connection,
    limit: std::time::Duration,
) {
    use crate::image::{self, Key};
    let deadline = Instant::now() + limit;
    loop {
        let mut left = 0u64;
        for t in tables_out.iter_mut() {
            if t.divergent_rows() == 0 || t.divergences.len() as u64 != t.divergent_rows() {
                left += t.divergent_rows();
                continue;
            }
            let Some(table) = schema.by_name(t.table) else {
                continue;
            };
            let mut keep = Vec::new();
            for d in std::mem::take(&mut t.divergences) {
                let agreed = match Key::parse(table, &d.key) {
                    Ok(key) => {
                        let k = key.clone();
                        let a = sqlite.call(move |c| image::sqlite_read(c, table, &k)).await;
                        let b = image::pg_read(pool, table, &key).await;
                        matches!((a, b), (Ok(a), Ok(b)) if a == b)
                    }
                    Err(_) => false,
                };
                if agreed {
                    match d.kind {
                        DivergenceKind::Missing => t.missing -= 1,
                        DivergenceKind::Extra => t.extra -= 1,
                        DivergenceKind::Field => t.field -= 1,
                    }
                } else {
                    keep.push(d);
                }
            }
            t.divergences = keep;
            left += t.divergent_rows();
        }
        if left == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
