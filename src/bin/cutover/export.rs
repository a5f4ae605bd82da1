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
}

/// Runs `cutover export`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let report =
        cutover::export::export(settings.require_postgres()?, &args.out, args.force).await?;
    for t in &report.tables {
        println!("{:<22} {:>9} rows", t.table, t.rows);
    }
    println!(
        "exported to {} in {} ms",
        report.out.display(),
        report.elapsed_ms
    );
    Ok(Outcome::Ok)
}
