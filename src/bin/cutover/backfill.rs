//! `cutover backfill`: copy the legacy rows into PostgreSQL.
//!
//! Resumable and idempotent; Ctrl-C stops at a committed batch. Prints a
//! closing table per source table and the reconciliation line; a table whose
//! source rows do not equal copied + rejected makes the exit code 1.
//! Refuses outside `dualwrite`/`shadow` unless `--force` (and then says so on
//! stderr), and refuses a legacy file this user cannot write (no write lock).
//! Refuses, naming them, while the legacy file holds tables or columns the
//! schema does not describe (`cutover audit` lists them) that
//! `--ignore-unknown` does not name; those named are left behind, recorded in
//! `cutover.acknowledged_drift` and printed in the summary.

use std::time::Duration;

use cutover::backfill::Policy;
use cutover::backfill::{self, BackfillOptions, BackfillSummary};

use crate::{Cli, Outcome};

/// Flags of `cutover backfill`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Rows per batch (read from a SQLite snapshot: no lock is held).
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub batch_size: usize,
    /// Only these tables (comma-separated); parents must already be copied.
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    pub tables: Option<Vec<String>>,
    /// What to do with a bad value in a nullable column.
    #[arg(long, default_value = "reject-row", value_parser = ["reject-row", "null-and-record"], value_name = "POLICY")]
    pub on_bad_value: String,
    /// Throttle: at most N source rows per second.
    #[arg(long, value_name = "N")]
    pub max_rows_per_sec: Option<u64>,
    /// Keep each table's secondary B-tree indexes in place during its copy
    /// (maintained row by row) instead of dropping them and building them
    /// again once the table is copied (the default, faster; the build
    /// blocks the dual store's copies to that table for its few seconds,
    /// which wait in the outbox meanwhile, unless PostgreSQL is authoritative).
    #[arg(long)]
    pub keep_indexes: bool,
    /// Drop the full-text GIN indexes too and build them after the copy
    /// (by default they stay, their pending lists merged during the copy:
    /// faster on the plan's tweets, where the build is single-threaded).
    #[arg(long, conflicts_with = "keep_indexes")]
    pub defer_full_text: bool,
    /// The default now (see --keep-indexes); accepted for older scripts.
    #[arg(long, hide = true, conflicts_with = "keep_indexes")]
    pub defer_indexes: bool,
    /// Statement timeout of a batch's PostgreSQL side, in seconds; a batch
    /// that exceeds it rolls back and is retried at half the size.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub statement_timeout: f64,
    /// After each round of batches, pause for this share of its time,
    /// leaving CPU and disk to the application (0 = flat out; batches hold
    /// no SQLite lock, so writers never wait for them either way).
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub writer_share: f64,
    /// After a round during which the application committed to SQLite,
    /// pause for this share of the round's time too (0 = never make room).
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub busy_share: f64,
    /// Batches loaded side by side while the application writes.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub busy_jobs: usize,
    /// Batches loaded side by side on their own PostgreSQL connections
    /// (tables whose only unique value is the key); they commit in order.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub jobs: usize,
    /// Run outside dualwrite/shadow: in `off` PostgreSQL misses the writes
    /// made meanwhile, from `live` on rows it deleted may come back.
    #[arg(long)]
    pub force: bool,
    /// Seconds to wait for PostgreSQL when it goes away mid-run (a
    /// restart) before giving up; the run then resumes from the checkpoint.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait_for_postgres: u64,
    /// Tables and columns of the legacy file the schema does not describe
    /// (`cutover audit` lists them), named to go on without them:
    /// `notes,users.nickname`. Nothing of them is copied; the run refuses
    /// while any is left unnamed.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub ignore_unknown: Vec<String>,
    #[command(flatten)]
    pub metrics: crate::metrics_flags::MetricsArgs,
}

/// Runs `cutover backfill`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let metrics = args.metrics.serve()?;
    let sqlite = settings.require_sqlite()?.to_path_buf();
    let pg = settings.require_postgres()?.clone();
    if !sqlite.exists() {
        anyhow::bail!(
            "the SQLite file {} does not exist; pass --sqlite PATH or set SQLITE_PATH",
            sqlite.display()
        );
    }
    if !(args.statement_timeout > 0.0 && args.statement_timeout.is_finite()) {
        anyhow::bail!("--statement-timeout must be a positive number of seconds");
    }
    if !(args.writer_share >= 0.0 && args.writer_share.is_finite()) {
        anyhow::bail!("--writer-share must be a number >= 0");
    }
    let mut opts = BackfillOptions::new(sqlite, pg.clone());
    opts.writer_share = args.writer_share;
    if !(args.busy_share >= 0.0 && args.busy_share.is_finite()) {
        anyhow::bail!("--busy-share must be a number >= 0");
    }
    opts.busy_share = args.busy_share;
    opts.busy_jobs = args.busy_jobs;
    opts.batch_size = args.batch_size;
    opts.jobs = args.jobs;
    opts.tables = args.tables.clone();
    opts.policy = Policy::parse(&args.on_bad_value).expect("clap checked the value");
    opts.max_rows_per_sec = args.max_rows_per_sec;
    opts.defer_indexes = !args.keep_indexes;
    opts.defer_full_text = args.defer_full_text;
    opts.statement_timeout = Duration::from_secs_f64(args.statement_timeout);
    opts.force = args.force;
    opts.postgres_wait = std::time::Duration::from_secs(args.wait_for_postgres);
    opts.ignore_unknown = args.ignore_unknown.clone();
    opts.selected_tables()?;
    opts.progress = crate::view::Bars::on_terminal();

    {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(pg.connect_options())
            .await
            .map_err(cutover::Error::from)?;
        cutover::pg::require_current(&pool).await?;
        let stage = cutover::stage::get(&pool).await;
        pool.close().await;
        // The library refuses without --force; with it, the operator hears
        // what the override risks before the copy starts.
        if let Some(why) = backfill::stage_refusal(stage?.stage).filter(|_| args.force) {
            eprintln!("warning: --force: backfilling outside dualwrite/shadow although {why}");
        }
    }

    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::warn!("interrupted: stopping after the batch in flight");
    };
    let summary = backfill::run(opts, shutdown).await?;
    print_summary(&summary);
    if !summary.interrupted {
        metrics.linger().await;
    }
    if summary.interrupted {
        println!("interrupted: run `cutover backfill` again to resume from the checkpoint");
        return Ok(Outcome::CheckFailed);
    }
    Ok(if summary.reconciled() {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn print_summary(s: &BackfillSummary) {
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>9} {:>11}  rejected by reason",
        "table", "source", "copied", "rejected", "seconds", "rows/s"
    );
    for t in &s.tables {
        let reasons: Vec<String> = t.rejected.iter().map(|(r, n)| format!("{r}={n}")).collect();
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>9.2} {:>11.0}  {}",
            t.table,
            t.source_rows.map_or("-".to_string(), |n| n.to_string()),
            t.copied,
            t.rejected_total(),
            t.seconds,
            t.rows_per_sec(),
            if reasons.is_empty() {
                "-".to_string()
            } else {
                reasons.join(" ")
            }
        );
        if t.seconds >= 1.0 {
            println!(
                "{:<22} (reading and converting SQLite {:.1} s, loading PostgreSQL {:.1} s)",
                "", t.sqlite_seconds, t.postgres_seconds
            );
        }
        if t.already_present > 0 || t.nulled_values > 0 || t.deleted_meanwhile > 0 {
            println!(
                "{:<22} ({} already present from live writes, {} deleted by the application while their batch loaded, {} values nulled and recorded)",
                "", t.already_present, t.deleted_meanwhile, t.nulled_values
            );
        }
        if t.busy_rounds > 0 {
            println!(
                "{:<22} (made room for the application's writes after {} rounds: {:.1} s paused)",
                "", t.busy_rounds, t.room_seconds
            );
        }
    }
    for t in &s.tables {
        match t.reconciled() {
            Some(true) => println!(
                "reconciliation {}: source {} = copied {} + rejected {} (all runs): ok",
                t.table,
                t.source_rows.unwrap_or(0),
                t.total_copied,
                t.total_rejected
            ),
            Some(false) => println!(
                "reconciliation {}: source {} != copied {} + rejected {} (all runs): MISMATCH",
                t.table,
                t.source_rows.unwrap_or(0),
                t.total_copied,
                t.total_rejected
            ),
            None => println!("reconciliation {}: not read to the end", t.table),
        }
    }
    for (t, v) in &s.sequences {
        println!("sequence of {t} set to {v}");
    }
    if !s.indexes_rebuilt.is_empty() {
        println!(
            "indexes built again after the copy ({:.1} s): {}",
            s.index_seconds,
            s.indexes_rebuilt.join(", ")
        );
    }
    if !s.acknowledged_drift.is_empty() {
        let left: Vec<String> = s.acknowledged_drift.iter().map(|u| u.to_string()).collect();
        println!("left behind (--ignore-unknown): {}", left.join(", "));
    }
    if let Some(stage) = s.forced_stage {
        println!("forced: ran in stage `{stage}` (--force)");
    }
    println!(
        "reconciliation: {} ({:.1} s)",
        if s.reconciled() { "ok" } else { "FAILED" },
        s.seconds
    );
}
