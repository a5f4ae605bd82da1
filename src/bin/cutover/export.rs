//! `cutover export`.

use std::path::PathBuf;

use crate::{Cli, Outcome};

/// Flags of `cutover export`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SQLite file to create.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Leave out the legacy rows PostgreSQL never took (by default they are
    /// restored from the reject ledger, byte for byte).
    #[arg(long)]
    pub without_rejects: bool,
}

/// Runs `cutover export`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let report = cutover::export::export_with(
        settings.require_postgres()?,
        &args.out,
        args.force,
        !args.without_rejects,
    )
    .await?;
    for t in &report.tables {
        let mut line = format!("{:<22} {:>9} rows", t.table, t.rows);
        if t.restored > 0 || t.not_restored > 0 {
            line.push_str(&format!(", {} rejected legacy rows restored", t.restored));
        }
        if t.not_restored > 0 {
            line.push_str(&format!(
                ", {} not restored (PostgreSQL holds their key or unique value)",
                t.not_restored
            ));
        }
        println!("{line}");
    }
    if args.without_rejects {
        println!("rejected legacy rows left out (--without-rejects)");
    }
    println!(
        "exported to {} in {} ms",
        report.out.display(),
        report.elapsed_ms
    );
    Ok(Outcome::Ok)
}
