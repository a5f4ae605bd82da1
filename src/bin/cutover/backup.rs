//! `cutover backup`.

use std::path::PathBuf;

use crate::{Cli, Outcome};

/// Flags of `cutover backup`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The copy to create (never overwritten).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

/// Runs `cutover backup`.
pub async fn run(cli: &Cli, args: &Args) -> anyhow::Result<Outcome> {
    let settings = cli.settings()?;
    let src = settings.require_sqlite()?.to_path_buf();
    let out = args.out.clone();
    let report = tokio::task::spawn_blocking(move || cutover::backup::backup(&src, &out)).await??;
    for t in &report.tables {
        println!("{:<22} {:>9} rows", t.table, t.rows);
    }
    println!(
        "backup {} ({} pages, journal {}): integrity {} in {} ms",
        report.out.display(),
        report.pages,
        report.journal_mode,
        report.integrity,
        report.elapsed_ms
    );
    Ok(Outcome::Ok)
}
