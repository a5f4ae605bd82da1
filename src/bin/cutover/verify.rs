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
}

/// Runs `cutover verify`: exit 0 consistent, 1 divergent, 2 error.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let mut opts = VerifyOptions::new(
        settings.require_sqlite()?,
        settings.require_postgres()?.clone(),
    );
    opts.tables = args.tables.clone();
    opts.repair = args.repair;
    opts.chunk_rows = args.chunk_rows;
    opts.progress = !args.json;
    let report = verify(&opts).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "authoritative: {} (stage {})",
            report.authoritative, report.stage
        );
        for t in &report.tables {
            println!(
                "{:<22} sqlite {:>9}  postgres {:>9}  rejected {:>6}  missing {:>6}  extra {:>6}  field {:>6}",
                t.table, t.sqlite_rows, t.postgres_rows, t.rejected_rows, t.missing, t.extra, t.field
            );
            println!(
                "  {} source {} {} postgres {} + rejected {}{}",
                t.table,
                t.sqlite_rows,
                if t.counts_add_up { "=" } else { "!=" },
                t.postgres_rows,
                t.rejected_rows,
                if t.counts_add_up {
                    ""
                } else {
                    " (do not add up)"
                }
            );
            if let Some(p) = &t.count_problem {
                println!("  {} NOT CLEAN: {p}", t.table);
            }
            for d in &t.divergences {
                let cols = if d.columns.is_empty() {
                    String::new()
                } else {
                    format!(" columns {}", d.columns.join(","))
                };
                let detail = d
                    .detail
                    .as_deref()
                    .map(|s| format!(" ({s})"))
                    .unwrap_or_default();
                println!(
                    "  {} {}: key {:?}{cols}{detail}",
                    t.table,
                    d.kind.as_str(),
                    d.key
                );
            }
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
    Ok(if report.clean {
        Outcome::Ok
    } else {
        Outcome::CheckFailed
    })
}
