//! `cutover verify`.

use cutover::verify::{verify, VerifyOptions};

use crate::{Cli, Outcome};

/// Flags of `cutover verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Rewrite divergent rows from the authoritative side, then verify again.
    #[arg(long)]
    pub repair: bool,
    /// Only these tables (comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "a,b")]
    pub tables: Option<Vec<String>>,
    /// Most keys per checksummed range.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..))]
    pub chunk_rows: i64,
    /// Example keys printed per table and kind of divergence (`--json`
    /// lists up to 100 per table).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub examples: usize,
    #[command(flatten)]
    pub metrics: crate::metrics_flags::MetricsArgs,
}

/// Runs `cutover verify`: exit 0 consistent, 1 divergent, 2 error.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let metrics = args.metrics.serve()?;
    let pg = settings.require_postgres()?.clone();
    {
        let store = cutover::PgStore::connect(&pg).await?;
        cutover::pg::require_current(store.pool()).await?;
    }
    let mut opts = VerifyOptions::new(settings.require_sqlite()?, pg);
    opts.tables = args.tables.clone();
    opts.repair = args.repair;
    opts.chunk_rows = args.chunk_rows;
    if !args.json {
        opts.progress = crate::view::Bars::on_terminal();
    }
    let report = verify(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report, args.examples);
    }
    metrics.linger().await;
    Ok(if report.clean {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}

fn print_report(report: &cutover::verify::VerifyReport, examples: usize) {
    println!(
        "authoritative: {} (stage {})",
        report.authoritative, report.stage
    );
    println!(
        "{:<22} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8}  counts",
        "table", "sqlite", "postgres", "rejected", "missing", "extra", "field"
    );
    for t in &report.tables {
        println!(
            "{:<22} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8}  {}",
            t.table,
            t.sqlite_rows,
            t.postgres_rows,
            t.rejected_rows,
            t.missing,
            t.extra,
            t.field,
            if t.counts_add_up {
                "sqlite = postgres + rejected".to_string()
            } else {
                format!(
                    "sqlite {} != postgres {} + rejected {}",
                    t.sqlite_rows, t.postgres_rows, t.rejected_rows
                )
            }
        );
    }
    for t in &report.tables {
        if let Some(p) = &t.count_problem {
            println!("{}: NOT CLEAN: {p}", t.table);
        }
        for kind in ["missing", "extra", "field"] {
            let of_kind: Vec<_> = t
                .divergences
                .iter()
                .filter(|d| d.kind.as_str() == kind)
                .collect();
            let total = match kind {
                "missing" => t.missing,
                "extra" => t.extra,
                _ => t.field,
            };
            if total == 0 {
                continue;
            }
            let shown: Vec<String> = of_kind
                .iter()
                .take(examples)
                .map(|d| {
                    if d.columns.is_empty() {
                        d.key.clone()
                    } else {
                        format!("{} ({})", d.key, d.columns.join(","))
                    }
                })
                .collect();
            let more = total.saturating_sub(shown.len() as u64);
            println!(
                "{} {kind} {total}: {}{}",
                t.table,
                shown.join(", "),
                if more > 0 {
                    format!(" … and {more} more (--json lists more)")
                } else {
                    String::new()
                }
            );
        }
    }
    let source: i64 = report.tables.iter().map(|t| t.sqlite_rows).sum();
    let target: i64 = report.tables.iter().map(|t| t.postgres_rows).sum();
    if target == 0 && source > 0 {
        println!(
            "hint: PostgreSQL holds none of the {source} legacy rows: run `cutover backfill` first"
        );
    }
    if let Some(r) = &report.repair {
        println!(
            "repair: {} divergent before, {} rows written, {} deleted, {} unrepairable",
            r.divergent_before, r.rows_written, r.rows_deleted, r.unrepairable
        );
    }
    println!(
        "{}: {} divergent rows, {} rejected rows accounted for",
        if report.clean {
            "consistent"
        } else {
            "DIVERGENT"
        },
        report.divergent_rows,
        report.rejected_rows
    );
}
